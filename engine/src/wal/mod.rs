//! The write-ahead log (durability issue): one append-only log per shard, in segment
//! files of records whose bodies are after-images of items.
//!
//! - [`record`]: the on-disk format of a segment header and of a record, defined once,
//!   with its checks.
//! - [`segment`]: the one reader of a segment's bytes (WAL segments and snapshots):
//!   header, then records in order, up to the first fault, named with its offset.
//! - [`log`]: one shard's log: batched appends (one write and one sync per batch),
//!   preallocated (zero-filled) segments with the next one prepared beside the shard,
//!   segment rotation, poisoning after a failed write or sync, and the reader that
//!   tells free space (zeros after the last record) and a torn tail (cut) from
//!   corruption (refused, with file and offset).
//!
//! Each shard's writer appends its batches to its log (group commit) and recovery
//! replays it on the shard's executor before the shard serves; snapshots
//! ([`crate::snapshot`]) share the record format and the segment reader, and let old
//! segments go. All file I/O goes through [`crate::storage`].

// The log decodes what a disk hands back after a crash: no unchecked indexing or
// unwrapping (tests may; clippy.toml); a needed exception says why.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod log;
pub mod record;
pub mod segment;
