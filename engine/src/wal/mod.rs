//! The write-ahead log (durability issue): one append-only log per shard, in segment
//! files of records whose bodies are after-images of items.
//!
//! Landed so far: the on-disk format of a segment header and of a record
//! ([`record`]), defined once, with its checks; the file I/O it will go through is
//! [`crate::storage`]. Still to come: the segment writer with group commit, the
//! segment reader (torn tail vs corruption), snapshots, recovery and repair.

pub mod record;
