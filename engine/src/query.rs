//! Query patterns (SPEC.md "get"): exact keys, `*` and prefixes, `>` `>=` `<` `<=`,
//! and `a|b`, each inside one namespace (or among simple keys), turned into a range of
//! store keys, and a `start` turned into a position in that range. The syntax is
//! [`ampd_wire::pattern`]'s (the client reads it too); this module adds the checks
//! and the ranges.
//!
//! The same ranges serve key queries and label queries: a label query runs the range
//! over label values instead of keys.

use crate::key::{self, PAST_TEXT, TAG_GLOBAL, TAG_NAMESPACED};
use ampd_wire::limits::{KEY_LEN_MAX, QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX};
pub(crate) use ampd_wire::pattern::Form;
use ampd_wire::pattern::{self, Parts};
pub use ampd_wire::QueryOptions;
use ampd_wire::{Error, ErrorCode};
use std::ops::Bound;

/// A pattern may hold two keys (`a|b`) and the query syntax around them.
const PATTERN_LEN_MAX: usize = 2 * KEY_LEN_MAX + 3;

/// A checked pattern: the grammar's parts ([`ampd_wire::pattern`], where the syntax
/// is defined once), with every part that must name something non-empty, and an
/// exact key within the key length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pattern<'a> {
    /// `None`: simple keys (the global namespace).
    pub namespace: Option<&'a str>,
    pub form: Form<'a>,
}

/// A range of store keys (or of label-value store keys, or of label index entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range<T = Vec<u8>> {
    pub lower: Bound<T>,
    pub upper: Bound<T>,
}

impl<'a> Pattern<'a> {
    pub fn parse(raw: &'a str) -> Result<Pattern<'a>, Error> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(invalid("the pattern is empty"));
        }
        if text.len() > PATTERN_LEN_MAX {
            return Err(Error::new(
                ErrorCode::KeyTooLong,
                format!("pattern is {} bytes, limit {PATTERN_LEN_MAX}", text.len()),
            ));
        }
        let Parts { namespace, form } = pattern::parse(text);
        let nonempty = |s: &str, what: &str| {
            if s.is_empty() {
                Err(invalid(&format!("{text:?}: {what}")))
            } else {
                Ok(())
            }
        };
        match form {
            Form::Between(a, b) => {
                nonempty(a, "nothing before '|'")?;
                nonempty(b, "nothing after '|'")?;
            }
            Form::GreaterOrEqual(x) => nonempty(x, "nothing after '>='")?,
            Form::Greater(x) => nonempty(x, "nothing after '>'")?,
            Form::LessOrEqual(x) => nonempty(x, "nothing after '<='")?,
            Form::Less(x) => nonempty(x, "nothing after '<'")?,
            Form::Prefix(_) => {}
            Form::Exact(x) => {
                nonempty(x, "nothing after the namespace colon")?;
                // An exact pattern names one key: it obeys the key's length limit.
                key::check_len(x, "key")?;
            }
        }
        Ok(Pattern { namespace, form })
    }

    /// The full key text of an exact pattern.
    pub fn exact_key(&self) -> Option<String> {
        match (self.form, self.namespace) {
            (Form::Exact(x), Some(ns)) => Some(format!("{ns}:{x}")),
            (Form::Exact(x), None) => Some(x.to_owned()),
            _ => None,
        }
    }

    /// The store key where this pattern's key space begins: the tag, and `ns:` for a
    /// namespaced pattern. Every key the pattern covers starts with it.
    fn base(&self) -> Vec<u8> {
        let mut base = Vec::with_capacity(2 + self.namespace.map_or(0, str::len));
        match self.namespace {
            Some(ns) => {
                base.push(TAG_NAMESPACED);
                base.extend_from_slice(ns.as_bytes());
                base.push(b':');
            }
            None => base.push(TAG_GLOBAL),
        }
        base
    }

    /// The range of store keys this pattern covers.
    pub fn range(&self) -> Range {
        let base = self.base();
        let at = |x: &str| [base.as_slice(), x.as_bytes()].concat();
        let end = || [base.as_slice(), &[PAST_TEXT]].concat();
        use Bound::{Excluded, Included};
        let (lower, upper) = match self.form {
            Form::Exact(x) => (Included(at(x)), Included(at(x))),
            Form::Prefix(p) => (Included(at(p)), Excluded([at(p), vec![PAST_TEXT]].concat())),
            Form::Greater(x) => (Excluded(at(x)), Excluded(end())),
            Form::GreaterOrEqual(x) => (Included(at(x)), Excluded(end())),
            Form::Less(x) => (Included(base.clone()), Excluded(at(x))),
            Form::LessOrEqual(x) => (Included(base.clone()), Included(at(x))),
            Form::Between(a, b) => (Included(at(a)), Included(at(b))),
        };
        Range { lower, upper }
    }

    /// The store key of a `start` (SPEC.md "get"): a position in this pattern's key
    /// space, so it always narrows the scan and is never silently ignored. For a
    /// namespaced pattern `ns:...`, a start that begins with `ns:` is that key and any
    /// other start is a key within `ns` (the seed's sample pages `foo:*` with
    /// `start: "foobaz"`, which continues after `foo:foobaz`); for simple keys it is a
    /// simple key, whatever it holds.
    pub fn start_key(&self, start: &str) -> Vec<u8> {
        let start = start.trim();
        let part = match self.namespace {
            Some(ns) => start
                .strip_prefix(ns)
                .and_then(|rest| rest.strip_prefix(':'))
                .unwrap_or(start),
            None => start,
        };
        [self.base().as_slice(), part.as_bytes()].concat()
    }
}

impl<T: Ord + Clone> Range<T> {
    /// Narrows the range to what comes strictly after `cursor` in scan order.
    pub fn after(mut self, cursor: T, reverse: bool) -> Range<T> {
        if reverse {
            if bound_below(&Bound::Excluded(cursor.clone()), &self.upper) {
                self.upper = Bound::Excluded(cursor);
            }
        } else if bound_above(&Bound::Excluded(cursor.clone()), &self.lower) {
            self.lower = Bound::Excluded(cursor);
        }
        self
    }

    /// Whether no value can lie in the range.
    pub fn is_empty(&self) -> bool {
        use Bound::*;
        match (&self.lower, &self.upper) {
            (Included(a), Included(b)) => a > b,
            (Included(a) | Excluded(a), Excluded(b)) | (Excluded(a), Included(b)) => a >= b,
            _ => false,
        }
    }

    pub fn as_refs(&self) -> (Bound<&T>, Bound<&T>) {
        (self.lower.as_ref(), self.upper.as_ref())
    }
}

/// Whether lower bound `a` is tighter (starts later) than lower bound `b`.
fn bound_above<T: Ord>(a: &Bound<T>, b: &Bound<T>) -> bool {
    use Bound::*;
    match (a, b) {
        (_, Unbounded) => true,
        (Unbounded, _) => false,
        (Included(x) | Excluded(x), Included(y)) => x >= y,
        (Included(x), Excluded(y)) => x > y,
        (Excluded(x), Excluded(y)) => x >= y,
    }
}

/// Whether upper bound `a` is tighter (ends sooner) than upper bound `b`.
fn bound_below<T: Ord>(a: &Bound<T>, b: &Bound<T>) -> bool {
    use Bound::*;
    match (a, b) {
        (_, Unbounded) => true,
        (Unbounded, _) => false,
        (Included(x) | Excluded(x), Included(y)) => x <= y,
        (Included(x), Excluded(y)) => x < y,
        (Excluded(x), Excluded(y)) => x <= y,
    }
}

/// The page size of `options`, checked.
pub(crate) fn checked_limit(options: &QueryOptions) -> Result<usize, Error> {
    match options.limit {
        None => Ok(QUERY_LIMIT_DEFAULT),
        Some(n) if (1..=QUERY_LIMIT_MAX as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(Error::new(
            ErrorCode::LimitOutOfRange,
            format!("limit is {n}, allowed 1..={QUERY_LIMIT_MAX}"),
        )),
    }
}

/// The label index (0-based) a query runs on, checked.
pub(crate) fn checked_label(options: &QueryOptions) -> Result<Option<usize>, Error> {
    options.label.as_deref().map(label_index).transpose()
}

/// `"label1"` ..= `"label5"` → 0..=4.
pub(crate) fn label_index(name: &str) -> Result<usize, Error> {
    ampd_wire::limits::LABEL_NAMES
        .iter()
        .position(|l| *l == name)
        .ok_or_else(|| {
            invalid(&format!(
                "label is {name:?}, expected one of label1..label5"
            ))
        })
}

/// The `lastKey` of a label query: the label value and the key, as one string that
/// `start` takes back: `<bytes of value>:<value><key>`.
pub(crate) fn label_cursor(value: &str, key: &str) -> String {
    format!("{}:{value}{key}", value.len())
}

/// Splits a label cursor back into (label value, key).
pub(crate) fn parse_label_cursor(cursor: &str) -> Result<(&str, &str), Error> {
    let bad = || {
        invalid(&format!(
            "start {cursor:?} is not a lastKey of a label query"
        ))
    };
    let (len, rest) = cursor.split_once(':').ok_or_else(bad)?;
    let len: usize = len.parse().map_err(|_| bad())?;
    if !rest.is_char_boundary(len) || len > rest.len() {
        return Err(bad());
    }
    Ok(rest.split_at(len))
}

fn invalid(what: &str) -> Error {
    Error::new(ErrorCode::InvalidQuery, format!("invalid pattern: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Bound::{Excluded, Included};

    fn form(p: &str) -> Form<'_> {
        Pattern::parse(p).unwrap().form
    }

    /// The grammar is `ampd_wire::pattern`'s (tested there); the engine adds the
    /// checks and the exact key.
    #[test]
    fn forms_and_exact_keys() {
        assert_eq!(form(" u:a|b "), Form::Between("a", "b"));
        assert_eq!(form("*"), Form::Prefix(""));
        assert_eq!(Pattern::parse("*").unwrap().namespace, None);
        assert_eq!(
            Pattern::parse("a:b:c").unwrap().exact_key().as_deref(),
            Some("a:b:c")
        );
        assert_eq!(
            Pattern::parse("k").unwrap().exact_key().as_deref(),
            Some("k")
        );
        assert_eq!(Pattern::parse("k*").unwrap().exact_key(), None);
    }

    #[test]
    fn malformed_patterns() {
        for bad in ["", "ns:", "ns:>", "ns:<=", "ns:|b", "ns:a|", "|"] {
            assert_eq!(
                Pattern::parse(bad).unwrap_err().code(),
                ErrorCode::InvalidQuery,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ranges() {
        let r = Pattern::parse("ns:a*").unwrap().range();
        assert_eq!(r.lower, Included(b"\x01ns:a".to_vec()));
        assert_eq!(r.upper, Excluded(b"\x01ns:a\xff".to_vec()));
        let r = Pattern::parse("<b").unwrap().range();
        assert_eq!(r.lower, Included(vec![0]));
        assert_eq!(r.upper, Excluded(b"\x00b".to_vec()));
    }

    #[test]
    fn a_start_is_a_key_in_the_patterns_space() {
        let ns = Pattern::parse("foo:*").unwrap();
        assert_eq!(ns.start_key("foobaz"), b"\x01foo:foobaz");
        assert_eq!(ns.start_key(" foo:foobaz "), b"\x01foo:foobaz");
        assert_eq!(ns.start_key("bar:x"), b"\x01foo:bar:x");
        let simple = Pattern::parse("a|z").unwrap();
        assert_eq!(simple.start_key("m"), b"\x00m");
        assert_eq!(simple.start_key("ns:m"), b"\x00ns:m");
    }

    #[test]
    fn start_only_narrows() {
        let r = Pattern::parse("ns:b|d").unwrap().range();
        let early = r.clone().after(b"\x01ns:a".to_vec(), false);
        assert_eq!(early.lower, Included(b"\x01ns:b".to_vec()));
        let mid = r.clone().after(b"\x01ns:c".to_vec(), false);
        assert_eq!(mid.lower, Excluded(b"\x01ns:c".to_vec()));
        let rev = r.after(b"\x01ns:c".to_vec(), true);
        assert_eq!(rev.upper, Excluded(b"\x01ns:c".to_vec()));
    }

    #[test]
    fn label_cursor_round_trip() {
        let c = label_cursor("ORDER:9:1", "user-1:ORDER_x");
        assert_eq!(
            parse_label_cursor(&c).unwrap(),
            ("ORDER:9:1", "user-1:ORDER_x")
        );
        for bad in ["", "x", "5:ab", "a:b", "1:é"] {
            assert_eq!(
                parse_label_cursor(bad).unwrap_err().code(),
                ErrorCode::InvalidQuery,
                "{bad}"
            );
        }
    }

    #[test]
    fn limits() {
        let o = |n| QueryOptions {
            limit: Some(n),
            ..Default::default()
        };
        assert_eq!(checked_limit(&o(1)).unwrap(), 1);
        assert_eq!(checked_limit(&o(1000)).unwrap(), 1000);
        for n in [0, -1, 1001] {
            assert_eq!(
                checked_limit(&o(n)).unwrap_err().code(),
                ErrorCode::LimitOutOfRange
            );
        }
        assert_eq!(checked_limit(&QueryOptions::default()).unwrap(), 100);
        assert_eq!(
            label_index("label6").unwrap_err().code(),
            ErrorCode::InvalidQuery
        );
    }
}
