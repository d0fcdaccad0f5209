//! The options of the API's calls, shared by the embedded engine and the client, so a
//! program moves between the two without changing a line of its calls.

use crate::limits::LABEL_COUNT;
use crate::Value;

/// Options of a single-item `set` (SPEC.md "set").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetOptions {
    /// Return the item with its metadata.
    pub meta: bool,
    /// Replace the item whole, metadata included.
    pub overwrite: bool,
    /// `None`: not given. `Some(Value::Null)`: clear. Otherwise seconds or an ISO date.
    pub ttl: Option<Value>,
    /// `labels[n - 1]` is `labelN`. `None`: not given. `Some(None)`: clear.
    /// `Some(Some(v))`: set.
    pub labels: [Option<Option<String>>; LABEL_COUNT],
}

impl SetOptions {
    pub fn meta(mut self) -> SetOptions {
        self.meta = true;
        self
    }

    pub fn overwrite(mut self) -> SetOptions {
        self.overwrite = true;
        self
    }

    pub fn ttl(mut self, ttl: impl Into<Value>) -> SetOptions {
        self.ttl = Some(ttl.into());
        self
    }

    /// Sets label `n` (1..=5). Panics on another `n`: that is a programming error.
    pub fn label(mut self, n: usize, value: impl Into<String>) -> SetOptions {
        let slot = n.checked_sub(1).and_then(|i| self.labels.get_mut(i));
        let Some(slot) = slot else {
            panic!("there are labels 1..={LABEL_COUNT}, not {n}");
        };
        *slot = Some(Some(value.into()));
        self
    }
}

/// One item of a batch `set`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchItem {
    pub key: String,
    pub value: Value,
    /// `None` (or `Some(Value::Null)`): no ttl. A batch overwrites whole items.
    pub ttl: Option<Value>,
    /// `labels[n - 1]` is `labelN`.
    pub labels: [Option<String>; LABEL_COUNT],
}

/// Options of a multi-item `get` (SPEC.md "get").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Return items with their metadata.
    pub meta: bool,
    /// Items per page, 1..=1000; `None` means 100.
    pub limit: Option<i64>,
    /// Descending order.
    pub reverse: bool,
    /// Resume after this key (or this label cursor): the `lastKey` of the previous page.
    pub start: Option<String>,
    /// `"label1"` ..= `"label5"`: query label values instead of keys.
    pub label: Option<String>,
}
