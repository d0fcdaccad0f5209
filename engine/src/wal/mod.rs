//! The write-ahead log (durability issue): one append-only log per shard, in segment
//! files of records whose bodies are after-images of items.
//!
//! - [`record`]: the on-disk format of a segment header and of a record, defined once,
//!   with its checks.
//! - [`segment`]: the one reader of a segment's bytes (WAL segments and snapshots):
//!   header, then records in order, up to the first fault, named with its offset.
//! - [`log`]: one shard's log: batched appends (one write and one sync per batch),
//!   segment rotation, poisoning after a failed write or sync, and the reader that
//!   tells a torn tail (cut) from corruption (refused, with file and offset).
//!
//! All file I/O goes through [`crate::storage`]. Not wired into the shards yet; still
//! to come: group commit in the shard's write loop, recovery in `Db::open`, snapshots,
//! repair, and the crash-loop tests.

// The log decodes what a disk hands back after a crash: no unchecked indexing or
// unwrapping (tests may; clippy.toml); a needed exception says why.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod log;
pub mod record;
pub mod segment;
