//! The syntax of a `get` pattern (SPEC.md "Keys" and "get"), defined once: where the
//! namespace ends, and which form the part after it takes. The engine builds its
//! ranges from it and refuses a key that would not read back as [`Form::Exact`]; a
//! client uses it to know whether `get` answers one value or a page.

/// What the part after the namespace asks for. Borrowed from the pattern; no part is
/// checked for emptiness or length here (the engine does that, with its errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form<'a> {
    /// `k`: one key.
    Exact(&'a str),
    /// `pre*` (and `*`, the empty prefix).
    Prefix(&'a str),
    /// `>x`
    Greater(&'a str),
    /// `>=x`
    GreaterOrEqual(&'a str),
    /// `<x`
    Less(&'a str),
    /// `<=x`
    LessOrEqual(&'a str),
    /// `a|b`, both ends inclusive.
    Between(&'a str, &'a str),
}

/// A pattern taken apart: its namespace (`None` for simple keys: the text before the
/// first `:`) and its form. Leading and trailing white space is removed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub namespace: Option<&'a str>,
    pub form: Form<'a>,
}

/// Takes a pattern apart (see [`Parts`]).
pub fn parse(pattern: &str) -> Parts<'_> {
    let text = pattern.trim();
    let (namespace, part) = match text.split_once(':') {
        Some((ns, part)) => (Some(ns), part),
        None => (None, text),
    };
    let form = if let Some((a, b)) = part.split_once('|') {
        Form::Between(a, b)
    } else if let Some(x) = part.strip_prefix(">=") {
        Form::GreaterOrEqual(x)
    } else if let Some(x) = part.strip_prefix('>') {
        Form::Greater(x)
    } else if let Some(x) = part.strip_prefix("<=") {
        Form::LessOrEqual(x)
    } else if let Some(x) = part.strip_prefix('<') {
        Form::Less(x)
    } else if let Some(p) = part.strip_suffix('*') {
        Form::Prefix(p)
    } else {
        Form::Exact(part)
    };
    Parts { namespace, form }
}

/// Whether `get(pattern)` names one exact key (and so answers a value, not a page).
pub fn is_exact(pattern: &str) -> bool {
    matches!(parse(pattern).form, Form::Exact(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = |ns, form| Parts {
            namespace: ns,
            form,
        };
        assert_eq!(parse(" users:ann "), p(Some("users"), Form::Exact("ann")));
        assert_eq!(parse("ann"), p(None, Form::Exact("ann")));
        assert_eq!(parse("*"), p(None, Form::Prefix("")));
        assert_eq!(parse("ns:a*"), p(Some("ns"), Form::Prefix("a")));
        assert_eq!(parse("ns:>=b"), p(Some("ns"), Form::GreaterOrEqual("b")));
        assert_eq!(parse("ns:>b"), p(Some("ns"), Form::Greater("b")));
        assert_eq!(parse("<=b"), p(None, Form::LessOrEqual("b")));
        assert_eq!(parse("<b"), p(None, Form::Less("b")));
        assert_eq!(parse("ns:a|b"), p(Some("ns"), Form::Between("a", "b")));
        // The namespace ends at the first colon; the rest is the key part.
        assert_eq!(parse("a:b:c*"), p(Some("a"), Form::Prefix("b:c")));
        assert_eq!(parse("a<b:c"), p(Some("a<b"), Form::Exact("c")));
        assert!(is_exact("ns:k") && is_exact("k") && !is_exact("ns:k*") && !is_exact("a|b"));
    }
}
