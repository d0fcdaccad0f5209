//! Keys (SPEC.md "Keys"): trimming, length, namespaces, and which keys `set` refuses
//! because `get` could not address them: those the pattern grammar
//! ([`ampd_wire::pattern`], defined once) would not read as one exact key.
//!
//! Inside the engine a key is stored under its *store key*: one tag byte, then the
//! user's key bytes. The tag keeps the global namespace (simple keys, tag `0`) apart
//! from namespaced keys (tag `1`), so `get("*")` is one contiguous range and so is every
//! `ns:` collection ("ns:" is a prefix no key of another namespace can have, because a
//! namespace ends at the first colon). UTF-8 never contains the byte `0xFF`, so
//! `prefix + [0xFF]` is an exclusive upper bound for everything that starts with
//! `prefix`.

use ampd_wire::limits::KEY_LEN_MAX;
use ampd_wire::pattern::{self, Form};
use ampd_wire::{Error, ErrorCode};

/// Tag byte of a simple key (global namespace).
pub(crate) const TAG_GLOBAL: u8 = 0;
/// Tag byte of a namespaced key.
pub(crate) const TAG_NAMESPACED: u8 = 1;
/// Greater than every byte of UTF-8 text: `prefix + [PAST_TEXT]` bounds a prefix range.
pub(crate) const PAST_TEXT: u8 = 0xFF;

/// A validated key: trimmed, 1..=256 bytes, addressable by `get`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    text: String,
    /// Byte length of the namespace when the key has one (the text before the first `:`).
    namespace_len: Option<usize>,
}

impl Key {
    /// Parses a key for writing: trims, checks its length, and refuses a key that a
    /// `get` could not address exactly (SPEC.md "Keys").
    pub fn parse(raw: &str) -> Result<Key, Error> {
        Key::parse_as(raw.into(), "key")
    }

    /// [`Key::parse`] of a key the caller hands over: kept as it is unless trimming
    /// changes it, so a key read off a frame is not copied again.
    pub fn parse_owned(raw: String) -> Result<Key, Error> {
        Key::parse_as(raw.into(), "key")
    }

    /// Parses a label value: the same rules as a key.
    pub fn parse_label(raw: &str) -> Result<Key, Error> {
        Key::parse_as(raw.into(), "label value")
    }

    fn parse_as(raw: std::borrow::Cow<'_, str>, what: &str) -> Result<Key, Error> {
        let text = check_len(&raw, what)?;
        // Readable by `get` means: the pattern grammar reads it as one exact key. SPEC.md
        // also refuses a `|` anywhere, in the namespace too.
        let parts = pattern::parse(text);
        let Form::Exact(part) = parts.form else {
            return Err(unreadable(text, what));
        };
        if text.contains('|') {
            return Err(unreadable(text, what));
        }
        if parts.namespace.is_some() && part.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidKey,
                format!("{what} {text:?} has a namespace but nothing after the colon"),
            ));
        }
        let namespace_len = parts.namespace.map(str::len);
        let text = match raw {
            std::borrow::Cow::Owned(raw) if raw.len() == text.len() => raw,
            _ => text.to_owned(),
        };
        Ok(Key {
            text,
            namespace_len,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }

    /// The namespace, or `None` for a simple key (the global namespace).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace_len.map(|n| &self.text[..n])
    }

    /// The text that picks the owning shard: the namespace, or the whole simple key.
    pub(crate) fn routing_text(&self) -> &str {
        self.namespace().unwrap_or(&self.text)
    }

    pub(crate) fn store_key(&self) -> Box<[u8]> {
        store_key(self.namespace_len.is_some(), &self.text)
    }
}

/// The refusal of a key `get` could not read back exactly.
fn unreadable(text: &str, what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidKey,
        format!(
            "{what} {text:?} could not be read back by get: it may not end in '*' or hold \
             '|', and after the namespace it may not start with '<' or '>'"
        ),
    )
}

/// Trims and checks the length of a key, a label value or a query pattern.
pub(crate) fn check_len<'a>(raw: &'a str, what: &str) -> Result<&'a str, Error> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidKey,
            format!("{what} is empty after trimming white space"),
        ));
    }
    if text.len() > KEY_LEN_MAX {
        return Err(Error::new(
            ErrorCode::KeyTooLong,
            format!("{what} is {} bytes, limit {KEY_LEN_MAX}", text.len()),
        ));
    }
    Ok(text)
}

/// The store key of a key text: tag byte, then the text.
pub(crate) fn store_key(namespaced: bool, text: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(1 + text.len());
    out.push(if namespaced {
        TAG_NAMESPACED
    } else {
        TAG_GLOBAL
    });
    out.extend_from_slice(text.as_bytes());
    out.into_boxed_slice()
}

/// The key text a store key holds (after its tag byte). Store keys are only ever made
/// by [`store_key`] from text, so they are always UTF-8 after the tag.
pub(crate) fn text_of(sk: &[u8]) -> &str {
    let text = std::str::from_utf8(sk.get(1..).unwrap_or_default());
    debug_assert!(text.is_ok(), "a store key is made from text");
    text.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_splits_namespace() {
        let k = Key::parse("  users:ann smith ").unwrap();
        assert_eq!(k.as_str(), "users:ann smith");
        assert_eq!(k.namespace(), Some("users"));
        assert_eq!(k.routing_text(), "users");
        let s = Key::parse("keyName").unwrap();
        assert_eq!(s.namespace(), None);
        assert_eq!(s.routing_text(), "keyName");
        assert_eq!(Key::parse(" keyName ").unwrap(), s);
        assert_eq!(Key::parse("a:b:c").unwrap().namespace(), Some("a"));
    }

    #[test]
    fn length_limits_count_bytes() {
        assert_eq!(Key::parse("   ").unwrap_err().code(), ErrorCode::InvalidKey);
        assert!(Key::parse(&"x".repeat(256)).is_ok());
        let e = Key::parse(&"x".repeat(257)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::KeyTooLong);
        assert_eq!(e.message(), "key is 257 bytes, limit 256");
        // 86 three-byte characters = 258 bytes.
        assert_eq!(
            Key::parse(&"€".repeat(86)).unwrap_err().code(),
            ErrorCode::KeyTooLong
        );
    }

    #[test]
    fn unaddressable_keys_are_refused() {
        for bad in [
            "a*", "ns:a*", "ns:*", "a|b", "ns:a|b", ">a", "ns:>a", "ns:<=a", "<", "ns:", "a|b:c",
        ] {
            assert_eq!(
                Key::parse(bad).unwrap_err().code(),
                ErrorCode::InvalidKey,
                "{bad}"
            );
        }
        for good in [
            "a*b", "ns:a>b", "ns:a<", "*a", "n*s:a", ":a", "a:b*c", ">a:b",
        ] {
            assert!(Key::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn store_keys_separate_namespaces() {
        let g = Key::parse("zzz").unwrap().store_key();
        let n = Key::parse("aaa:b").unwrap().store_key();
        assert!(g < n, "all simple keys sort before namespaced keys");
        assert_eq!(&n[1..], b"aaa:b");
    }
}
