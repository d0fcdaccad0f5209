//! ampd's engine: the Ampt data API, embedded, on thread-per-core shards.
//!
//! # Layout
//! - [`db`]: [`Db`], the embedded API, the routing rule ([`Db::shard_for`]) and the
//!   read path (scans merged across shards); opening a data directory (recovery on
//!   every shard side by side) and repairing one.
//! - [`error`]: [`OpenError`], why a database did not open, as a type to match on.
//! - [`layout`]: the data folder: environments, shard folders, the lock, the recorded
//!   shard count.
//! - [`shard`]: one shard: its indexes, its inbox, its writer (group commit to its WAL,
//!   snapshots) and its reaper; its recovery.
//! - [`write`]: what a `set` or `add` makes of a stored item (merge, `$add`, counters).
//! - [`events`]: change events and `on` handlers (lanes per namespace, retries, dead
//!   letters).
//! - [`key`]: keys (what `set` accepts) and the store-key encoding.
//! - [`query`]: patterns (on the grammar of [`ampd_wire::pattern`]), ranges, `start`,
//!   options and label cursors.
//! - [`item`]: items and their metadata.
//! - [`ttl`]: time-to-live parsing.
//! - [`wal`]: the write-ahead log: the on-disk format, the segment reader, a shard's log.
//! - [`snapshot`]: fuzzy snapshots of a shard, in the WAL's record format.
//! - [`storage`]: the storage trait all WAL and snapshot I/O goes through, with a
//!   ring (`ampd-rt`) implementation and a simulated disk (power cuts, faults) for tests.
//! - [`failpoint`]: named fail points at each durability step (tests).
//!
//! Errors of requests are [`ampd_wire::Error`]: one type with the stable codes of
//! SPEC.md, the same in-process and over the network. Opening a database fails with a
//! typed [`OpenError`]. The library logs through `tracing` (recovery, torn tails,
//! snapshots) and never prints; the `ampd` binary installs the subscriber.

// A library logs (through `tracing`) or returns errors; only binaries print.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod db;
pub mod error;
pub mod events;
pub mod evict;
pub mod failpoint;
pub mod item;
pub mod key;
pub mod layout;
pub mod query;
mod shard;
pub mod snapshot;
pub mod storage;
pub mod subscriptions;
mod ttl;
pub mod wal;
mod write;

pub use ampd_wire::events::{EventName, Filters};
pub use ampd_wire::value::Given;
pub use ampd_wire::{BatchItem, QueryOptions, SetOptions};
pub use ampd_wire::{Error, ErrorCode, Value};
pub use db::{CacheStats, Config, Db, FsyncPolicy, Got, Page, Subscription};
pub use error::OpenError;
pub use events::{DeadLetter, Event, HandlerId, Retry};
pub use evict::Eviction;
pub use item::Item;
pub use key::Key;
pub use wal::log::{Cut, CutReason};
