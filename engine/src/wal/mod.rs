//! The write-ahead log (durability issue): one append-only log per shard, in segment
//! files of records whose bodies are after-images of items.
//!
//! Landed so far: the on-disk format of a segment header and of a record
//! ([`record`]), defined once, with its checks. Still to come: the storage trait with
//! its simulated disk, the segment writer with group commit, snapshots and recovery.

pub mod record;
