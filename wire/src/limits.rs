//! Every limit of the API and the protocol, in one place.
//!
//! Names put the qualifier last (`KEY_LEN_MAX`), sizes are in bytes, and the relations
//! between them are checked at compile time.

/// A key (after trimming) or a label value is at most this many bytes of UTF-8.
pub const KEY_LEN_MAX: usize = 256;

/// Labels per item: `label1` ..= `label5`.
pub const LABEL_COUNT: usize = 5;

/// Key, encoded value and labels of one item, together.
pub const ITEM_SIZE_MAX: usize = 400 * 1024;

/// Items in one batch `set`, keys in one batch `get` or `remove`.
pub const BATCH_ITEMS_MAX: usize = 25;

/// The default and the largest `limit` of a multi-item `get`.
pub const QUERY_LIMIT_DEFAULT: usize = 100;
pub const QUERY_LIMIT_MAX: usize = 1000;

/// A page of a multi-item `get` stops before it would pass this many bytes of keys and
/// values.
pub const PAGE_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(KEY_LEN_MAX * (1 + LABEL_COUNT) < ITEM_SIZE_MAX);
const _: () = assert!(
    ITEM_SIZE_MAX < PAGE_BYTES_MAX,
    "one item always fits a page"
);
const _: () = assert!(QUERY_LIMIT_DEFAULT <= QUERY_LIMIT_MAX);
