//! Change events (SPEC.md "Events"): their names and the filters that pick them,
//! defined once for the engine, the server and every client.
//!
//! A filter is `name`, `name:keyFilter` or `name:namespaceFilter:keyFilter`:
//! - `name` is `created`, `updated`, `deleted` or `*` (any of them);
//! - each filter part is exact, or a prefix ending in `*` (`*` alone: anything);
//! - a two-part filter matches simple keys only, a three-part one namespaced keys only;
//!   a one-part filter matches every key.
//!
//! The namespace of a key ends at its first colon (as in [`crate::pattern`]), so in
//! `created:orders:2024:*` the namespace filter is `orders` and the key filter `2024:*`.
//! A handler may subscribe with a list of filters; an event is its when any matches.

use crate::{Error, ErrorCode};
use std::fmt;

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventName {
    Created,
    Updated,
    Deleted,
}

impl EventName {
    pub const ALL: [EventName; 3] = [EventName::Created, EventName::Updated, EventName::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Created => "created",
            EventName::Updated => "updated",
            EventName::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|n| n.as_str() == text)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Exact(String),
    /// `pre*`; `*` is the empty prefix.
    Prefix(String),
}

impl Part {
    fn parse(text: &str, filter: &str, what: &str) -> Result<Part, Error> {
        if text.is_empty() {
            return Err(invalid(filter, &format!("its {what} filter is empty")));
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(invalid(
                filter,
                &format!("its {what} filter {text:?} has a '*' before the end (a part is exact or a prefix ending in '*')"),
            ));
        }
        Ok(if prefix {
            Part::Prefix(body.to_owned())
        } else {
            Part::Exact(body.to_owned())
        })
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Part::Exact(e) => text == e,
            Part::Prefix(p) => text.starts_with(p.as_str()),
        }
    }
}

/// Which keys a filter takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    /// A one-part filter: every key.
    Any,
    /// `name:keyFilter`: simple keys only.
    Simple(Part),
    /// `name:namespaceFilter:keyFilter`: namespaced keys only.
    Namespaced(Part, Part),
}

/// One parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `None`: `*`, every name.
    name: Option<EventName>,
    keys: Keys,
}

impl Filter {
    /// Parses one filter; a malformed one is `invalid_query` naming what is wrong.
    pub fn parse(text: &str) -> Result<Filter, Error> {
        let trimmed = text.trim();
        let mut parts = trimmed.splitn(3, ':');
        let name_text = parts.next().unwrap_or_default();
        let name = match name_text {
            "*" => None,
            other => Some(EventName::parse(other).ok_or_else(|| {
                invalid(
                    text,
                    &format!("{other:?} is not an event name (created, updated, deleted or *)"),
                )
            })?),
        };
        let keys = match (parts.next(), parts.next()) {
            (None, _) => Keys::Any,
            (Some(key), None) => Keys::Simple(Part::parse(key, text, "key")?),
            (Some(ns), Some(key)) => Keys::Namespaced(
                Part::parse(ns, text, "namespace")?,
                Part::parse(key, text, "key")?,
            ),
        };
        Ok(Filter { name, keys })
    }

    /// Whether an event `name` of the item under `key` passes this filter.
    pub fn matches(&self, name: EventName, key: &str) -> bool {
        if self.name.is_some_and(|n| n != name) {
            return false;
        }
        match (&self.keys, key.split_once(':')) {
            (Keys::Any, _) => true,
            (Keys::Simple(k), None) => k.matches(key),
            (Keys::Namespaced(ns, k), Some((namespace, rest))) => {
                ns.matches(namespace) && k.matches(rest)
            }
            _ => false,
        }
    }
}

/// The filters a handler subscribes with: an event passes when any of them matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters(Vec<Filter>);

impl Filters {
    /// Parses a list of filters (at least one).
    pub fn parse<S: AsRef<str>>(texts: impl IntoIterator<Item = S>) -> Result<Filters, Error> {
        let filters = texts
            .into_iter()
            .map(|t| Filter::parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if filters.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidQuery,
                "an event subscription needs at least one filter",
            ));
        }
        Ok(Filters(filters))
    }

    pub fn matches(&self, name: EventName, key: &str) -> bool {
        self.0.iter().any(|f| f.matches(name, key))
    }
}

impl TryFrom<&str> for Filters {
    type Error = Error;
    fn try_from(text: &str) -> Result<Filters, Error> {
        Filters::parse([text])
    }
}

impl TryFrom<String> for Filters {
    type Error = Error;
    fn try_from(text: String) -> Result<Filters, Error> {
        Filters::parse([text])
    }
}

impl<const N: usize> TryFrom<[&str; N]> for Filters {
    type Error = Error;
    fn try_from(texts: [&str; N]) -> Result<Filters, Error> {
        Filters::parse(texts)
    }
}

impl TryFrom<&[&str]> for Filters {
    type Error = Error;
    fn try_from(texts: &[&str]) -> Result<Filters, Error> {
        Filters::parse(texts)
    }
}

impl TryFrom<Vec<String>> for Filters {
    type Error = Error;
    fn try_from(texts: Vec<String>) -> Result<Filters, Error> {
        Filters::parse(texts)
    }
}

fn invalid(filter: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::InvalidQuery,
        format!("event filter {filter:?}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventName::*;

    fn m(filter: &str, name: EventName, key: &str) -> bool {
        Filter::parse(filter).unwrap().matches(name, key)
    }

    #[test]
    fn names() {
        assert!(m("created", Created, "k") && !m("created", Updated, "k"));
        assert!(m("*", Created, "k") && m("*", Updated, "ns:k") && m("*", Deleted, "k"));
        assert!(m("deleted", Deleted, "ns:k"));
        let list = Filters::try_from(["created", "updated"]).unwrap();
        assert!(list.matches(Created, "a") && list.matches(Updated, "a"));
        assert!(!list.matches(Deleted, "a"));
    }

    #[test]
    fn two_parts_take_simple_keys_only() {
        assert!(m("*:global-item", Created, "global-item"));
        assert!(!m("*:global-item", Created, "global-item2"));
        assert!(!m("*:global-item", Created, "ns:global-item"));
        assert!(m("created:order_*", Created, "order_17"));
        assert!(!m("created:order_*", Created, "orders:order_17"));
        assert!(!m("created:order_*", Updated, "order_17"));
        assert!(m("*:*", Deleted, "anything") && !m("*:*", Deleted, "ns:k"));
    }

    #[test]
    fn three_parts_take_namespaced_keys_only() {
        assert!(m("created:order_*:item_*", Created, "order_1:item_2"));
        assert!(!m("created:order_*:item_*", Created, "order_1:thing"));
        assert!(!m("created:order_*:item_*", Created, "shop:item_2"));
        assert!(!m("created:order_*:item_*", Created, "item_2"));
        assert!(m("*:users:ann", Updated, "users:ann"));
        assert!(!m("*:users:ann", Updated, "users:anne"));
        // The namespace ends at the key's first colon; the rest, colons and all, is
        // the key part.
        assert!(m("*:orders:2024:*", Created, "orders:2024:17"));
        assert!(!m("*:orders:*", Created, "orders"));
    }

    #[test]
    fn malformed_filters_are_invalid_queries() {
        for (filter, why) in [
            ("made", "\"made\" is not an event name"),
            ("created:", "its key filter is empty"),
            ("created::k", "its namespace filter is empty"),
            ("created:a*b", "has a '*' before the end"),
            ("*:ns:*x", "has a '*' before the end"),
        ] {
            let e = Filter::parse(filter).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidQuery, "{filter}");
            assert!(e.message().contains(why), "{filter}: {}", e.message());
            assert!(e.message().starts_with(&format!("event filter {filter:?}")));
        }
        let none: [&str; 0] = [];
        assert_eq!(
            Filters::parse(none).unwrap_err().code(),
            ErrorCode::InvalidQuery
        );
    }
}
