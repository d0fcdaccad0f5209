//! Every limit of the API and the protocol, in one place.
//!
//! Names put the qualifier last (`KEY_LEN_MAX`), sizes are in bytes, and the relations
//! between them are checked at compile time.

/// A key (after trimming) or a label value is at most this many bytes of UTF-8.
pub const KEY_LEN_MAX: usize = 256;

/// Labels per item: `label1` ..= `label5`.
pub const LABEL_COUNT: usize = 5;
/// The labels' names, `label1`..`label5`: label `i` (0-based) is `LABEL_NAMES[i]`.
pub const LABEL_NAMES: [&str; LABEL_COUNT] = ["label1", "label2", "label3", "label4", "label5"];

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

/// Room for what a frame carries around each item besides its key, value and labels:
/// field names, MessagePack headers, a ttl, and in a result the item's metadata
/// (`created`, `modified`, `ttl`).
pub const ITEM_OVERHEAD_MAX: usize = 4096;

/// The largest payload of one protocol frame (the header not counted). A whole batch
/// `set` of the largest items fits, with room for each item's overhead, and so does the
/// largest page or batch `get` result; 11 MiB rounds that up. A frame header that
/// declares more is refused before any of its payload is read.
pub const FRAME_PAYLOAD_MAX: usize = 11 * 1024 * 1024;

/// Nesting of arrays and maps in one frame payload, counting the payload's own map (and
/// `items` list and item map of a batch or a page). Decoding recurses once per level; the
/// bound keeps a hostile payload from overflowing the stack of a decoding thread.
pub const PAYLOAD_DEPTH_MAX: usize = 128;

/// Nesting of arrays and objects in one stored value: what is left of
/// [`PAYLOAD_DEPTH_MAX`] inside the deepest request, a batch `set` (its map, the `items`
/// list and the item's map). A deeper value is refused before it is sent, with
/// `value_too_large`, rather than as a bad frame that closes the connection.
pub const VALUE_DEPTH_MAX: usize = PAYLOAD_DEPTH_MAX - 3;

/// An error frame carries at most this many bytes of message; a longer one is cut at a
/// character boundary.
pub const ERROR_MESSAGE_LEN_MAX: usize = 1024;

const _: () = assert!(KEY_LEN_MAX * (1 + LABEL_COUNT) < ITEM_SIZE_MAX);
const _: () = assert!(
    BATCH_ITEMS_MAX * ITEM_SIZE_MAX + BATCH_ITEMS_MAX * ITEM_OVERHEAD_MAX <= FRAME_PAYLOAD_MAX,
    "a full batch set, or a batch get of the largest items with metadata, fits a frame"
);
const _: () = assert!(
    PAGE_BYTES_MAX + QUERY_LIMIT_MAX * (ITEM_OVERHEAD_MAX + LABEL_COUNT * KEY_LEN_MAX)
        <= FRAME_PAYLOAD_MAX,
    "a full page with every item's metadata and labels fits a frame"
);
const _: () = assert!(ERROR_MESSAGE_LEN_MAX + 64 < FRAME_PAYLOAD_MAX);
const _: () = assert!(
    FRAME_PAYLOAD_MAX <= u32::MAX as usize,
    "a header's u32 holds it"
);
const _: () = assert!(
    ITEM_SIZE_MAX < PAGE_BYTES_MAX,
    "one item always fits a page"
);
const _: () = assert!(QUERY_LIMIT_DEFAULT <= QUERY_LIMIT_MAX);
