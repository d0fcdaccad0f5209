//! [`Db`]: the embedded API. Validation happens on the caller's thread, reads run
//! there too (straight on the shards' indexes), and writes travel to the owning
//! shard's executor and back.
//!
//! [`Db::open`] lays out (or checks) the data folder ([`crate::layout`]), starts one
//! executor per shard, each recovering its own log side by side, and fails with a
//! typed [`OpenError`]; [`Db::repair`] cuts a damaged log for an operator.

use crate::error::OpenError;
use crate::events::{DeadLetter, Durable, Event, HandlerId, Hub, NOT_STARTED};
use crate::item::{now_ms, Item, Slot};
use crate::key::{Key, PAST_TEXT};
use crate::layout;
use crate::query::{self, Pattern, QueryOptions, Range};
pub use crate::shard::FsyncPolicy;
use crate::shard::{self, label_store_key, LabelKey, Op, Outcome, Shard, Write};
use crate::storage::UringStorage;
use crate::subscriptions::{self, Saver};
use crate::ttl::{self, TtlChange};
use crate::wal::log::{Cut, Log, LogConfig};
use crate::write::{self, AddRequest, LabelChange, NewValue, SetRequest};
use ampd_wire::events::Filters;
use ampd_wire::limits::{BATCH_ITEMS_MAX, LABEL_COUNT, PAGE_BYTES_MAX};
use ampd_wire::value::{self, Given, Value};
use ampd_wire::{BatchItem, Error, ErrorCode, SetOptions};
use crossbeam_skiplist::map::Entry;
use futures::channel::oneshot;
use serde_json::Number;
use std::cmp::Ordering;
use std::future::Future;
use std::iter::Peekable;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to open a [`Db`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of shards (executors); 0 means one per available core. A data directory
    /// keeps the count it was made with.
    pub shards: usize,
    /// Pin shard `i` to core `i % cores`.
    pub pin: bool,
    /// Where the WAL lives; `None` keeps everything in memory only (a cache tier).
    pub data_dir: Option<PathBuf>,
    /// When a write counts as durable (with a data directory).
    pub fsync: FsyncPolicy,
    /// A shard snapshots itself after this many WAL bytes, so recovery replays at most
    /// about that much log (with a data directory).
    pub snapshot_wal_bytes: u64,
    /// A shard that has written to its WAL snapshots itself at least this often.
    pub snapshot_interval: Duration,
    /// A WAL segment file is closed at this size and a new one started; snapshots
    /// remove whole segments.
    pub wal_segment_bytes: u64,
    /// How a failing event handler is retried before its event is dead-lettered.
    pub event_retry: crate::events::Retry,
    /// A memory budget for the items (`evict::cost`: keys, values, labels, indexes),
    /// split evenly across the shards; `None`: no limit. What happens at the budget
    /// is `eviction`'s.
    pub max_memory: Option<u64>,
    /// How a shard at its budget makes room: `S3Fifo` (recommended) or `Lru` evict,
    /// `None` refuses writes with `memory_limit` ([`crate::evict`]).
    pub eviction: crate::Eviction,
    /// WAL bytes each shard may keep, beyond what recovery needs, for durable
    /// subscriptions that have not handled them; a subscription further behind is
    /// reported and cannot resume after a restart.
    pub event_backlog_max: u64,
    /// Each shard's thread waits up to this long for more I/O completions before it
    /// wakes (io_uring's minimum wait, Linux 6.12+): fewer wake-ups and less CPU per
    /// request under moderate load, for up to this much latency. `None`: wake at once.
    pub coalesce: Option<Duration>,
    /// Tests only: shard `i` keeps its WAL and snapshots on `simulated_disks[i]`
    /// instead of in `data_dir` (which still holds the lock and the shard count), so a
    /// test can fail any I/O and cut the power.
    #[doc(hidden)]
    pub simulated_disks: Option<Vec<crate::storage::SimDisk>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            shards: 0,
            pin: true,
            data_dir: None,
            fsync: FsyncPolicy::Always,
            snapshot_wal_bytes: 256 << 20,
            snapshot_interval: Duration::from_secs(600),
            wal_segment_bytes: 64 << 20,
            coalesce: None,
            event_retry: crate::events::Retry::default(),
            event_backlog_max: 1 << 30,
            max_memory: None,
            eviction: crate::Eviction::None,
            simulated_disks: None,
        }
    }
}

/// Why shard `id`'s thread did not start, with the core it was pinned to.
fn executor_error(id: usize, pinned: Option<usize>, why: impl std::fmt::Display) -> OpenError {
    OpenError::Executor {
        shard: id,
        reason: match pinned {
            Some(core) => format!("{why} (pinned to core {core})"),
            None => why.to_string(),
        },
    }
}

/// The answer of [`Db::get`]: one item (or none) for an exact key, a page otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Item(Option<Item>),
    Page(Page),
}

impl Got {
    /// The result as the API shows it: the value (or `null`), or `{items, lastKey}`.
    pub fn to_json(&self, meta: bool) -> Value {
        match self {
            Got::Item(Some(item)) => item.to_result_json(meta),
            Got::Item(None) => Value::Null,
            Got::Page(page) => page.to_json(meta),
        }
    }
}

/// One page of a multi-item `get`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Present exactly when more items remain: pass it as `start` for the next page.
    pub last_key: Option<String>,
    pattern: String,
    options: QueryOptions,
}

impl Page {
    /// `{"items": [...], "lastKey": ...}` ([`ampd_wire::page`]), `lastKey` only when
    /// more remain.
    pub fn to_json(&self, meta: bool) -> Value {
        let items = self.items.iter().map(|i| i.to_entry_json(meta)).collect();
        ampd_wire::page::to_json(items, self.last_key.as_deref())
    }
}

/// One shard's cache counters ([`Db::cache_stats`]). Hits and misses count exact-key
/// reads while there is a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// The shard's part of the budget; `None`: no limit.
    pub budget: Option<u64>,
    /// Bytes its items count (`evict::cost`).
    pub used: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
}

/// A durable subscription as [`Db::subscriptions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub name: String,
    pub filters: Vec<String>,
    pub handler: HandlerId,
    /// Per shard: every event of a WAL record numbered below it is handled (`None`:
    /// the shard has not started, or keeps no WAL).
    pub positions: Vec<Option<u64>>,
    /// Why it cannot go on, if it lost its position.
    pub lost: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The embedded database: cheap to clone, `Send + Sync`, usable from any thread and
/// any async runtime.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Arc<Shard>>,
    /// Committed changes on their way to the `on` handlers.
    events: Arc<Hub>,
    executors: Mutex<Vec<ampd_rt::thread::Thread<()>>>,
    /// Saves the durable subscriptions' positions (with a data directory).
    saver: Mutex<Option<Saver>>,
    /// Held while a subscription is looked up and registered, so two `subscribe`s of
    /// one new name make one subscription.
    subscribing: Mutex<()>,
    /// The data directory, locked while it is open; released after the shards have
    /// stopped.
    data_dir: Option<layout::Opened>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for s in &self.shards {
            s.close();
        }
        let executors =
            std::mem::take(&mut *self.executors.lock().unwrap_or_else(|p| p.into_inner()));
        if !shard::on_thread_of(&self.shards) {
            // (Joining on a shard's own thread would wait for this very thread; the
            // closed shards end by themselves.)
            for e in executors {
                let _ = e.join();
            }
        }
        // The positions the stopped shards reached.
        if let Some(mut saver) = lock(&self.saver).take() {
            saver.stop();
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl Db {
    /// Starts the shards' executors (with a data directory: locked, its shard count
    /// checked, each shard recovered from its snapshot and WAL) and returns the
    /// handle. Dropping the last handle stops them.
    pub fn open(config: Config) -> Result<Db, OpenError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = if config.shards == 0 {
            cores
        } else {
            config.shards
        };
        if count > layout::SHARDS_MAX {
            return Err(OpenError::TooManyShards {
                asked: count,
                max: layout::SHARDS_MAX,
            });
        }
        let mut config = config;
        let opened = match &config.data_dir {
            Some(dir) => {
                let opened = layout::open(dir, count)?;
                config.data_dir = Some(opened.dir.clone());
                Some(opened)
            }
            None => None,
        };
        let events = Arc::new(Hub::new(config.event_retry, config.event_backlog_max));
        // Durable subscriptions are registered before the shards recover: each shard
        // queues their events from their saved positions on.
        if let Some(opened) = &opened {
            for saved in subscriptions::load_all(&opened.dir, count)? {
                let filters = Filters::parse(&saved.filters).map_err(|e| OpenError::Io {
                    op: "read the filters of subscription",
                    path: layout::subscriptions_dir(&opened.dir).join(&saved.name),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
                let durable = Durable::new(saved.name, saved.filters, &saved.next);
                let id = events.register_durable(filters, None, Arc::new(durable));
                // A letter whose event does not read is left out (and said so).
                let letters = saved.dead_letters.iter().filter_map(|l| {
                    let letter = l.restore(id);
                    if letter.is_none() {
                        tracing::error!("a dead letter does not read: {}", l.event);
                    }
                    letter
                });
                events.add_dead_letters(letters);
            }
        }
        let shards: Vec<Arc<Shard>> = (0..count)
            .map(|i| {
                let budget = config.max_memory.map(|m| m / count as u64);
                Arc::new(Shard::new(
                    i,
                    events.clone(),
                    (budget, config.eviction),
                    config.data_dir.is_none(),
                ))
            })
            .collect();
        // Start every shard, then wait for all of them: each recovers its own log on its
        // own executor, so recoveries run side by side.
        let mut starting = Vec::with_capacity(count);
        let mut failure = None;
        for shard in &shards {
            let (ready, started) = std::sync::mpsc::channel();
            let id = shard.id;
            let pinned = config.pin.then_some(id % cores);
            let durability = config.data_dir.as_ref().map(|dir| shard::Durability {
                dir: layout::shard_dir(dir, id),
                fsync: config.fsync,
                snapshot_wal_bytes: config.snapshot_wal_bytes,
                snapshot_interval: config.snapshot_interval,
                log: LogConfig {
                    segment_bytes_max: config.wal_segment_bytes,
                },
            });
            let simulated = config
                .simulated_disks
                .as_ref()
                .and_then(|disks| disks.get(id).cloned());
            let spawned = {
                let shard = shard.clone();
                let mut thread = ampd_rt::thread::Builder::new()
                    .name(format!("ampd-shard-{id}"))
                    .config(ampd_rt::Config {
                        coalesce: config.coalesce,
                        ..ampd_rt::Config::default()
                    });
                if let Some(core) = pinned {
                    thread = thread.pin_to(core);
                }
                thread.spawn(move || -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
                    match (durability, simulated) {
                        (Some(d), Some(disk)) => {
                            Box::pin(shard::run(shard, Some((d, disk)), ready))
                        }
                        (Some(d), None) => {
                            let files = UringStorage::new(&d.dir);
                            Box::pin(shard::run(shard, Some((d, files)), ready))
                        }
                        (None, _) => Box::pin(shard::run::<UringStorage>(shard, None, ready)),
                    }
                })
            };
            match spawned {
                Ok(handle) => starting.push((id, pinned, handle, started)),
                Err(e) => {
                    failure = Some(executor_error(id, pinned, e));
                    break;
                }
            }
        }
        // The ring and the CPU binding are set up on the new thread, after `spawn`
        // returns: each shard says when it runs (or why not).
        let mut executors = Vec::with_capacity(count);
        for (id, pinned, handle, started) in starting {
            match started.recv() {
                Ok(Ok(())) => executors.push(handle),
                // The shard ran and said why it cannot serve (recovery).
                Ok(Err(why)) => {
                    let _ = handle.join();
                    failure.get_or_insert(why);
                }
                Err(_) => {
                    let why = match handle.join() {
                        Err(e) => executor_error(id, pinned, e),
                        Ok(()) => executor_error(id, pinned, "it stopped while starting"),
                    };
                    failure.get_or_insert(why);
                }
            }
        }
        if let Some(why) = failure {
            for s in &shards {
                s.close();
            }
            for e in executors {
                let _ = e.join();
            }
            return Err(why);
        }
        let saver = match &opened {
            Some(opened) => Some(
                Saver::start(opened.dir.clone(), events.clone())
                    .map_err(|e| executor_error(0, None, format!("the positions saver: {e}")))?,
            ),
            None => None,
        };
        Ok(Db {
            inner: Arc::new(Inner {
                shards,
                events,
                executors: Mutex::new(executors),
                saver: Mutex::new(saver),
                subscribing: Mutex::new(()),
                data_dir: opened,
            }),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Repairs a data directory whose WAL `Db::open` refused as corrupt: each shard's
    /// log is cut at its first bad record (and segments after it are removed), so the
    /// directory opens with everything before the damage. Returns what was cut (each
    /// file as a path under `data_dir`); nothing when there was nothing to repair. What
    /// followed the damage is lost: run it only when asked to (`ampd repair`).
    pub fn repair(data_dir: &Path) -> Result<Vec<Cut>, OpenError> {
        let count = layout::recorded_shards(data_dir)?.ok_or_else(|| OpenError::Io {
            op: "read the shard count",
            path: data_dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no shard count recorded: not a data directory",
            ),
        })?;
        let opened = layout::open(data_dir, count)?;
        let mut cuts = Vec::new();
        for id in 0..count {
            let shard_dir = layout::shard_dir(&opened.dir, id);
            let repaired = {
                let dir = shard_dir.clone();
                ampd_rt::thread::Builder::new()
                    .name(format!("ampd-repair-{id}"))
                    .spawn(move || async move {
                        let storage = UringStorage::new(&dir);
                        let disk_id = layout::disk_id(id);
                        Log::open_repairing(storage, disk_id, 0, LogConfig::default())
                            .await
                            .map(|(_, _, cuts)| cuts)
                    })
                    .map_err(|e| executor_error(id, None, e))?
                    .join()
                    .map_err(|e| executor_error(id, None, e))?
                    .map_err(|e| OpenError::from_wal(&shard_dir, e))?
            };
            let shown = layout::shard_dir(data_dir, id);
            cuts.extend(repaired.into_iter().map(|cut| Cut {
                file: shown.join(&cut.file),
                ..cut
            }));
        }
        Ok(cuts)
    }

    /// WAL records written and `fdatasync`s done since open, over all shards: their
    /// ratio is the writes per fsync that group commit achieves.
    pub fn wal_counters(&self) -> (u64, u64) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        self.inner.shards.iter().fold((0, 0), |(r, s), shard| {
            (r + load(&shard.wal_records), s + load(&shard.wal_syncs))
        })
    }

    /// Items held in memory, including expired items the reaper has not removed yet.
    pub fn stored_item_count(&self) -> usize {
        self.inner.shards.iter().map(|s| s.items.len()).sum()
    }

    /// The shard that owns a key: by namespace, or by the whole key for a simple key.
    /// This is the one routing rule of the engine.
    pub fn shard_for(&self, key: &Key) -> usize {
        self.shard_for_text(key.routing_text())
    }

    fn shard_for_text(&self, routing_text: &str) -> usize {
        let h = xxhash_rust::xxh3::xxh3_64(routing_text.as_bytes());
        (h % self.inner.shards.len() as u64) as usize
    }

    // ---- events ----------------------------------------------------------------

    /// `on(filter, handler)`: runs `handler` for every committed change that `filter`
    /// (one filter, or a list: `"created"`, `["created", "updated:ns:*"]`) picks, from
    /// now on. Handlers of one event run in the order they were registered; the events
    /// of one namespace reach a handler in commit order, one at a time; a handler that
    /// fails is retried ([`Config::event_retry`]) and then dead-lettered. Handlers run on
    /// the thread of the shard that made the event (an `ampd-rt` runtime), so they must
    /// not block it; a handler that needs another runtime's I/O spawns it there and
    /// awaits its handle. A malformed filter is `invalid_query`.
    pub fn on<F, Fut, E>(
        &self,
        filter: impl TryInto<Filters, Error = Error>,
        handler: F,
    ) -> Result<HandlerId, Error>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        Ok(self.inner.events.register(filter.try_into()?, handler))
    }

    /// `subscribe(name, filters, handler)`: a named, durable subscription (SPEC.md
    /// "Events"). The first call with a name creates it: it receives the changes
    /// committed from then on. With a data directory it outlives the process: its
    /// position on each shard (what its handler has finished with, succeeded or
    /// dead-lettered) is saved, the WAL keeps what it has not handled (up to
    /// [`Config::event_backlog_max`]), and after a restart the same call gives it its
    /// handler again and it resumes where it stood: the events of changes it had not
    /// finished with are delivered again (at least once), in commit order per
    /// namespace, before the newer ones. Without a data directory it lives as long as
    /// the database. Delivery is as for [`Db::on`]. From the opening of the database
    /// until this call gives it its handler, a kept subscription's events wait in
    /// memory (and its backlog in the WAL): [`Db::unsubscribe`] one no longer wanted.
    ///
    /// Errors: `invalid_query` for a malformed name or filter, for filters other than
    /// the subscription's, and for a subscription that has its handler already;
    /// `internal` for one that fell behind the backlog cap and lost its position
    /// ([`Db::unsubscribe`] it and subscribe again).
    pub async fn subscribe<I, S, F, Fut, E>(
        &self,
        name: &str,
        filters: I,
        handler: F,
    ) -> Result<HandlerId, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        subscriptions::check_name(name)?;
        let texts: Vec<String> = filters.into_iter().map(|f| f.as_ref().to_owned()).collect();
        let parsed = Filters::parse(&texts)?;
        let hub = &self.inner.events;
        let (id, durable) = {
            let _one_at_a_time = lock(&self.inner.subscribing);
            match hub.durable(name) {
                Some((id, durable, has_handler)) => {
                    subscriptions::check_filters(name, &durable.filters, &texts)?;
                    if let Some(why) = durable.lost() {
                        return Err(Error::new(ErrorCode::Internal, why));
                    }
                    if has_handler || !hub.attach(id, handler) {
                        return Err(Error::new(
                            ErrorCode::InvalidQuery,
                            format!("subscription {name:?} has its handler already"),
                        ));
                    }
                    return Ok(id);
                }
                None => {
                    let shards = vec![NOT_STARTED; self.inner.shards.len()];
                    let durable = Arc::new(Durable::new(name.to_owned(), texts, &shards));
                    let handler = crate::events::boxed(handler);
                    let id = hub.register_durable(parsed.clone(), Some(handler), durable.clone());
                    (id, durable)
                }
            }
        };
        // Each shard starts its position at its next record.
        let mut tracked = Vec::with_capacity(self.inner.shards.len());
        for shard in &self.inner.shards {
            let (reply, done) = oneshot::channel();
            shard.submit(Op::Track {
                id,
                durable: durable.clone(),
                filters: parsed.clone(),
                reply,
            });
            tracked.push(done);
        }
        for done in tracked {
            done.await.map_err(|_| {
                Error::new(
                    ErrorCode::Internal,
                    "a shard stopped before the subscription started",
                )
            })?;
        }
        if let Some(opened) = &self.inner.data_dir {
            subscriptions::save_if_moved(&opened.dir, hub, id, &durable);
            if durable
                .saved
                .iter()
                .any(|n| n.load(std::sync::atomic::Ordering::Acquire) == NOT_STARTED)
            {
                hub.unregister(id);
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("subscription {name:?} could not be saved (the log says why)"),
                ));
            }
        }
        Ok(id)
    }

    /// Removes durable subscription `name`: its handler, its positions and what the
    /// WAL kept for it. False if there was none.
    pub fn unsubscribe(&self, name: &str) -> Result<bool, Error> {
        let _one_at_a_time = lock(&self.inner.subscribing);
        let Some((id, _, _)) = self.inner.events.durable(name) else {
            return Ok(false);
        };
        if let Some(opened) = &self.inner.data_dir {
            subscriptions::remove(&opened.dir, name).map_err(|e| {
                Error::new(
                    ErrorCode::Internal,
                    format!("cannot remove subscription {name:?}: {e}"),
                )
            })?;
        }
        self.inner.events.unregister(id);
        for shard in &self.inner.shards {
            shard.submit(Op::Untrack(id));
        }
        Ok(true)
    }

    /// The durable subscriptions, by name.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut all: Vec<Subscription> = self
            .inner
            .events
            .durables()
            .into_iter()
            .map(|(id, d, _)| Subscription {
                name: d.name.clone(),
                filters: d.filters.clone(),
                handler: id,
                positions: d
                    .next
                    .iter()
                    .map(|n| n.load(std::sync::atomic::Ordering::Acquire))
                    .map(|n| (n != NOT_STARTED).then_some(n))
                    .collect(),
                lost: d.lost(),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The cache tier's counters, per shard ([`Config::max_memory`]).
    pub fn cache_stats(&self) -> Vec<CacheStats> {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner
            .shards
            .iter()
            .map(|s| {
                let c = &s.cache;
                CacheStats {
                    budget: (c.budget != u64::MAX).then_some(c.budget),
                    used: c.used.load(Relaxed),
                    hits: c.hits.load(Relaxed),
                    misses: c.misses.load(Relaxed),
                    evictions: c.evictions.load(Relaxed),
                    evicted_bytes: c.evicted_bytes.load(Relaxed),
                }
            })
            .collect()
    }

    /// How many times a snapshot dropped WAL records a durable subscription still
    /// needed (it fell behind [`Config::event_backlog_max`]).
    pub fn subscriptions_fallen_behind(&self) -> u64 {
        self.inner.events.fell_behind_count()
    }

    /// Removes a handler registered by [`Db::on`], with its dead letters; false if there
    /// was none.
    pub fn off(&self, handler: HandlerId) -> bool {
        self.inner.events.unregister(handler)
    }

    /// The events handlers kept failing on past the retry horizon, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.events.dead_letters()
    }

    /// Delivers the dead letters of `handler` (every handler's: `None`) again, each to
    /// the handler it failed in; returns them.
    pub fn replay_dead_letters(&self, handler: Option<HandlerId>) -> Vec<DeadLetter> {
        let letters = self.inner.events.take_dead_letters(handler);
        for letter in &letters {
            // An item's key always parses; its namespace's shard replays it.
            if let Ok(key) = Key::parse(letter.event.item.key()) {
                let delivery = crate::events::Delivery::retry(letter);
                self.inner.shards[self.shard_for(&key)].submit(Op::Deliver(delivery));
            }
        }
        letters
    }

    // ---- writes ----------------------------------------------------------------

    /// `set(key, value, options)`: update-merge, or replace with `overwrite`.
    pub async fn set(
        &self,
        key: impl Into<String>,
        value: impl Into<Given>,
        options: &SetOptions,
    ) -> Result<Item, Error> {
        let labels = options.labels.each_ref().map(|l| match l {
            None => Ok(LabelChange::Keep),
            Some(None) => Ok(LabelChange::Clear),
            Some(Some(v)) => Key::parse_label(v).map(LabelChange::Set),
        });
        let req = set_request(
            Key::parse_owned(key.into())?,
            value.into(),
            options.overwrite,
            options.ttl.as_ref(),
            labels,
        )?;
        let shard = self.shard_for(&req.key);
        one_item(self.run(shard, vec![Write::Set(req)]).await?)
    }

    /// Batch `set` of up to 25 items; `overwrite` is required. The whole batch is
    /// validated before anything is written.
    pub async fn set_batch(
        &self,
        items: Vec<BatchItem>,
        overwrite: bool,
    ) -> Result<Vec<Item>, Error> {
        check_batch_len(items.len())?;
        if !overwrite {
            return Err(Error::new(
                ErrorCode::OverwriteRequired,
                "a batch set must pass overwrite: true",
            ));
        }
        let mut writes = Vec::with_capacity(items.len());
        for it in items {
            let labels = it.labels.map(|l| match l {
                None => Ok(LabelChange::Keep),
                Some(v) => Key::parse_label(&v).map(LabelChange::Set),
            });
            let req = set_request(
                Key::parse(&it.key)?,
                it.value.into(),
                true,
                it.ttl.as_ref(),
                labels,
            )?;
            writes.push((self.shard_for(&req.key), Write::Set(req)));
        }
        self.run_spread(writes)
            .await?
            .into_iter()
            .map(|o| one_item(vec![o]))
            .collect()
    }

    /// `add(key, n)` when `field` is `None`, `add(key, field, n)` otherwise.
    pub async fn add(&self, key: &str, field: Option<&str>, amount: Number) -> Result<Item, Error> {
        let key = Key::parse(key)?;
        let shard = self.shard_for(&key);
        let req = AddRequest {
            key,
            field: field.map(str::to_owned),
            amount,
        };
        one_item(self.run(shard, vec![Write::Add(req)]).await?)
    }

    /// `remove(key)`: whether an item was removed.
    pub async fn remove(&self, key: &str) -> Result<bool, Error> {
        let mut r = self.remove_many(&[key]).await?;
        Ok(r.pop().unwrap_or(false))
    }

    /// `remove([keys])`: for each key in order, whether an item was removed.
    pub async fn remove_many<S: AsRef<str>>(&self, keys: &[S]) -> Result<Vec<bool>, Error> {
        check_batch_len(keys.len())?;
        let mut writes = Vec::with_capacity(keys.len());
        for k in keys {
            let key = Key::parse(k.as_ref())?;
            writes.push((self.shard_for(&key), Write::Remove(key)));
        }
        Ok(self
            .run_spread(writes)
            .await?
            .into_iter()
            .map(|o| matches!(o, Outcome::Removed(true)))
            .collect())
    }

    /// Snapshots every shard now (each from its current WAL position, while writes go
    /// on) and drops the WAL segments the snapshots cover. Returns the items written.
    /// Shards also snapshot themselves every `Config::snapshot_wal_bytes` of WAL.
    pub async fn snapshot(&self) -> Result<u64, Error> {
        let waits: Vec<_> = self
            .inner
            .shards
            .iter()
            .map(|s| {
                let (reply, answer) = oneshot::channel();
                s.submit(Op::Snapshot(reply));
                answer
            })
            .collect();
        let mut total = 0;
        for answer in futures::future::join_all(waits).await {
            total += answer.map_err(|_| {
                Error::new(ErrorCode::Internal, "the shard stopped before its snapshot")
            })??;
        }
        Ok(total)
    }

    /// Runs `make()`'s future on the executor of shard `shard` (`0..shard_count()`)
    /// and resolves to its output.
    ///
    /// This is how work runs next to the data: a write that such a task makes to a key
    /// its shard owns is applied in place, with no hand-off and no wake-up (the server
    /// serves its connections this way). Panics if `shard` is out of range.
    pub fn spawn_on<F, Fut, T>(
        &self,
        shard: usize,
        make: F,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'static
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        assert!(
            shard < self.shard_count(),
            "shard {shard} out of range 0..{}",
            self.shard_count()
        );
        let (done, output) = oneshot::channel();
        self.inner.shards[shard].submit(Op::Spawn(Box::new(move || {
            ampd_rt::spawn(async move {
                // A panicking task must not take the shard's executor down with it:
                // its caller sees the task gone, the shard goes on.
                let run = std::panic::AssertUnwindSafe(async move { make().await });
                if let Ok(output) = futures::FutureExt::catch_unwind(run).await {
                    let _ = done.send(output);
                }
            })
            .detach();
        })));
        async move {
            output.await.map_err(|_| {
                Error::new(
                    ErrorCode::Internal,
                    "the shard stopped before the task finished",
                )
            })
        }
    }

    /// Sends writes to one shard and waits for its answer; on the shard's own
    /// executor, applies them in place.
    async fn run(&self, shard: usize, writes: Vec<Write>) -> Result<Vec<Outcome>, Error> {
        let target = &self.inner.shards[shard];
        if let Some(local) = shard::local_for(target) {
            let mut writing = local.writing();
            let mut staged = writing.stage(false);
            let out = writing.apply(writes, &mut staged, now_ms())?;
            // Only a shard without a WAL applies in place: no record numbers.
            writing.install_all(staged, None);
            return Ok(out);
        }
        // An application thread (not any shard's executor, which must not block on
        // another shard's lock) applies in-memory writes itself.
        let writes = if shard::on_thread_of(&self.inner.shards) {
            writes
        } else {
            match target.apply_direct(writes) {
                Ok(out) => return out,
                Err(writes) => writes,
            }
        };
        let (reply, answer) = oneshot::channel();
        target.submit(Op::Writes { writes, reply });
        answer
            .await
            .map_err(|_| Error::new(ErrorCode::Internal, "the shard stopped before answering"))?
    }

    /// Sends writes to their shards (one op per shard) and answers in request order.
    async fn run_spread(&self, writes: Vec<(usize, Write)>) -> Result<Vec<Outcome>, Error> {
        let n = writes.len();
        let mut per_shard: Vec<(Vec<usize>, Vec<Write>)> = (0..self.shard_count())
            .map(|_| Default::default())
            .collect();
        for (i, (shard, w)) in writes.into_iter().enumerate() {
            per_shard[shard].0.push(i);
            per_shard[shard].1.push(w);
        }
        let mut waits = Vec::new();
        for (shard, (order, ws)) in per_shard.into_iter().enumerate() {
            if !ws.is_empty() {
                waits.push(async move { (order, self.run(shard, ws).await) });
            }
        }
        let mut slots: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
        for (order, result) in futures::future::join_all(waits).await {
            for (i, o) in order.into_iter().zip(result?) {
                slots[i] = Some(o);
            }
        }
        slots
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| Error::new(ErrorCode::Internal, "a shard left a write unanswered"))
            })
            .collect()
    }

    // ---- reads -----------------------------------------------------------------

    /// `get(pattern, options)`: an exact key gives one item (or none); every other
    /// form, and every label query, gives a page.
    pub fn get(&self, pattern: &str, options: &QueryOptions) -> Result<Got, Error> {
        let limit = query::checked_limit(options)?;
        let label = query::checked_label(options)?;
        // A string that `set` takes as a key is one `get` reads exactly (SPEC.md: no
        // item may be unreachable): look it up without parsing a pattern first.
        if label.is_none() {
            if let Ok(key) = Key::parse(pattern) {
                return Ok(Got::Item(self.get_key(&key)));
            }
        }
        let parsed = Pattern::parse(pattern)?;
        if let (None, Some(key)) = (label, parsed.exact_key()) {
            return Ok(Got::Item(self.get_one(&key)?));
        }
        let page = match label {
            None => self.key_page(&parsed, options, limit)?,
            Some(n) => self.label_page(n, &parsed, options, limit)?,
        };
        Ok(Got::Page(Page {
            items: page.0,
            last_key: page.1,
            pattern: pattern.to_owned(),
            options: options.clone(),
        }))
    }

    /// `getByLabel(label, pattern, options)`: always a page.
    pub fn get_by_label(
        &self,
        label: &str,
        pattern: &str,
        options: &QueryOptions,
    ) -> Result<Page, Error> {
        let options = QueryOptions {
            label: Some(label.to_owned()),
            ..options.clone()
        };
        match self.get(pattern, &options)? {
            Got::Page(p) => Ok(p),
            Got::Item(_) => Err(Error::new(
                ErrorCode::Internal,
                "a label query gave one item",
            )),
        }
    }

    /// The page after `page`, or `None` when it was the last.
    pub fn next_page(&self, page: &Page) -> Result<Option<Page>, Error> {
        let Some(last) = &page.last_key else {
            return Ok(None);
        };
        let options = QueryOptions {
            start: Some(last.clone()),
            ..page.options.clone()
        };
        match self.get(&page.pattern, &options)? {
            Got::Page(p) => Ok(Some(p)),
            Got::Item(_) => Err(Error::new(
                ErrorCode::Internal,
                "a page query gave one item",
            )),
        }
    }

    /// The live item under an exact key.
    pub fn get_one(&self, key: &str) -> Result<Option<Item>, Error> {
        Ok(self.get_key(&Key::parse(key)?))
    }

    /// The live item at `key`, from its shard's hash index.
    fn get_key(&self, key: &Key) -> Option<Item> {
        let shard = &self.inner.shards[self.shard_for(key)];
        shard.get(&key.store_key(), now_s())
    }

    /// `get([keys])`: the live items of up to 25 exact keys, in request order, absent
    /// keys left out.
    pub fn get_many<S: AsRef<str>>(&self, keys: &[S]) -> Result<Vec<Item>, Error> {
        check_batch_len(keys.len())?;
        let keys = keys
            .iter()
            .map(|k| Key::parse(k.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let now = now_s();
        Ok(keys
            .iter()
            .filter_map(|k| self.inner.shards[self.shard_for(k)].get(&k.store_key(), now))
            .collect())
    }

    fn key_page(
        &self,
        pattern: &Pattern,
        options: &QueryOptions,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<String>), Error> {
        let mut range = pattern.range();
        if let Some(start) = &options.start {
            range = range.after(pattern.start_key(start), options.reverse);
        }
        if range.is_empty() {
            return Ok((Vec::new(), None));
        }
        let (lower, upper) = range.as_refs();
        let bounds = (lower.map(Vec::as_slice), upper.map(Vec::as_slice));
        let shards: Vec<&Arc<Shard>> = match &pattern.namespace {
            Some(ns) => vec![&self.inner.shards[self.shard_for_text(ns)]],
            None => self.inner.shards.iter().collect(),
        };
        let scans = shards
            .into_iter()
            .map(|s| {
                let r = s.items.range::<[u8], _>(bounds);
                directed(r.map(|e| e.value().0.item()), options.reverse)
            })
            .collect();
        let (items, more) = fill_page(scans, options.reverse, limit, |a, b| a.key().cmp(b.key()));
        let last_key = more
            .then(|| items.last().map(|i| i.key().to_owned()))
            .flatten();
        Ok((items, last_key))
    }

    fn label_page(
        &self,
        label: usize,
        pattern: &Pattern,
        options: &QueryOptions,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<String>), Error> {
        let n = label as u8;
        let entry = |value: &[u8], key: &[u8]| LabelKey {
            label: n,
            value: value.into(),
            key: key.into(),
        };
        const KEY_MIN: &[u8] = &[];
        const KEY_MAX: &[u8] = &[PAST_TEXT];
        let values = pattern.range();
        let mut range = Range {
            lower: match &values.lower {
                Bound::Included(v) => Bound::Included(entry(v, KEY_MIN)),
                Bound::Excluded(v) => Bound::Excluded(entry(v, KEY_MAX)),
                Bound::Unbounded => Bound::Included(entry(&[], KEY_MIN)),
            },
            upper: match &values.upper {
                Bound::Included(v) => Bound::Included(entry(v, KEY_MAX)),
                Bound::Excluded(v) => Bound::Excluded(entry(v, KEY_MIN)),
                Bound::Unbounded => Bound::Excluded(entry(&[PAST_TEXT], KEY_MIN)),
            },
        };
        if let Some(start) = &options.start {
            let (value, key) = query::parse_label_cursor(start)?;
            let cursor = entry(&label_store_key(value), key.as_bytes());
            range = range.after(cursor, options.reverse);
        }
        if range.is_empty() {
            return Ok((Vec::new(), None));
        }
        let changes = || -> Vec<u64> {
            let count = |s: &Arc<Shard>| s.changes.load(std::sync::atomic::Ordering::SeqCst);
            self.inner.shards.iter().map(count).collect()
        };
        let changes_before = changes();
        let bounds = range.as_refs();
        let scans = self
            .inner
            .shards
            .iter()
            .map(|s| {
                // An entry is current when its slot's item still has this label value.
                let current = move |e: Entry<'_, LabelKey, Arc<Slot>>| {
                    let item = e.value().item();
                    let value = item.label(label + 1)?;
                    (e.key().value.get(1..) == Some(value.as_bytes())).then_some(item)
                };
                let r = s.labels.range::<LabelKey, _>(bounds);
                directed(r.filter_map(current), options.reverse)
            })
            .collect();
        let n = label + 1;
        let (items, more) = fill_page(scans, options.reverse, limit, |a, b| {
            (a.label(n), a.key()).cmp(&(b.label(n), b.key()))
        });
        let last_key = more
            .then(|| {
                items
                    .last()
                    .map(|i| query::label_cursor(i.label(n).unwrap_or_default(), i.key()))
            })
            .flatten();
        // Only a label change during the scan can show an item twice: none was under
        // way at the start (even counts) and none began since (same counts).
        let quiet = changes_before.iter().all(|c| c % 2 == 0) && changes() == changes_before;
        let items = if quiet { items } else { distinct_keys(items) };
        Ok((items, last_key))
    }
}

/// The write that one item of `set` makes, validated.
fn set_request(
    key: Key,
    value: Given,
    overwrite: bool,
    ttl: Option<&Value>,
    labels: [Result<LabelChange, Error>; LABEL_COUNT],
) -> Result<SetRequest, Error> {
    let mut checked: [LabelChange; LABEL_COUNT] = Default::default();
    for (slot, l) in checked.iter_mut().zip(labels) {
        *slot = l?;
    }
    // Only a ttl needs the clock.
    let ttl = match ttl {
        None => TtlChange::Keep,
        Some(t) => ttl::resolve(Some(t), now_s())?,
    };
    let value = match value {
        // Read off a frame: checked and encoded there.
        Given::Encoded(bytes) => NewValue::Plain(bytes),
        Given::Value(v) if !v.is_object() => NewValue::Plain(value::encode(&v)),
        Given::Value(fields) if !write::has_add_fields(&fields)? => NewValue::Object {
            encoded: Some(value::encode(&fields)),
            fields,
        },
        Given::Value(fields) if overwrite => {
            // Nothing stored survives an overwrite, so `$add` counts from zero and the
            // final value is known here.
            let stored = SetRequest {
                key: key.clone(),
                value: NewValue::Object {
                    fields: fields.clone(),
                    encoded: None,
                },
                overwrite,
                ttl: TtlChange::Keep,
                labels: Default::default(),
            };
            let encoded = Some(write::apply_set(None, stored, 0)?.value.to_bytes());
            NewValue::Object { fields, encoded }
        }
        Given::Value(fields) => NewValue::Object {
            fields,
            encoded: None,
        },
    };
    if let Some(enc) = value.encoded() {
        let given = checked.iter().filter_map(|l| match l {
            LabelChange::Set(k) => Some(k.as_str()),
            _ => None,
        });
        write::check_item_size(
            key.as_str(),
            write::item_size(key.as_str(), enc.len(), given),
        )?;
    }
    Ok(SetRequest {
        key,
        value,
        overwrite,
        ttl,
        labels: checked,
    })
}

fn check_batch_len(n: usize) -> Result<(), Error> {
    if n > BATCH_ITEMS_MAX {
        return Err(Error::new(
            ErrorCode::BatchTooLarge,
            format!("batch has {n} entries, limit {BATCH_ITEMS_MAX}"),
        ));
    }
    Ok(())
}

fn one_item(outcomes: Vec<Outcome>) -> Result<Item, Error> {
    match outcomes.into_iter().next() {
        Some(Outcome::Item(item)) => Ok(item),
        _ => Err(Error::new(
            ErrorCode::Internal,
            "a write answered without its item",
        )),
    }
}

fn now_s() -> i64 {
    now_ms().div_euclid(1000)
}

/// A scan in the order the query asks for.
fn directed<'a, T>(
    scan: impl DoubleEndedIterator<Item = T> + 'a,
    reverse: bool,
) -> Box<dyn Iterator<Item = T> + 'a> {
    if reverse {
        Box::new(scan.rev())
    } else {
        Box::new(scan)
    }
}

/// A label scan can meet one item twice, when its label value changes while the scan
/// runs (the entry for the new value goes in before the old one leaves): keep the first.
fn distinct_keys(mut items: Vec<Item>) -> Vec<Item> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_unstable_by(|a, b| items[*a].key().cmp(items[*b].key()));
    if order
        .windows(2)
        .any(|w| items[w[0]].key() == items[w[1]].key())
    {
        let mut seen = std::collections::HashSet::new();
        items.retain(|i| seen.insert(i.key().to_owned()));
    }
    items
}

/// Merges per-shard scans (each already in scan order) into one page: live items in
/// order until `limit` items or `PAGE_BYTES_MAX` bytes. Returns the page and whether a
/// live item remains after it.
fn fill_page<'a>(
    scans: Vec<Box<dyn Iterator<Item = Item> + 'a>>,
    reverse: bool,
    limit: usize,
    cmp: impl Fn(&Item, &Item) -> Ordering,
) -> (Vec<Item>, bool) {
    let now = now_s();
    let mut scans: Vec<Peekable<_>> = scans
        .into_iter()
        .map(|s| s.filter(move |i: &Item| !i.is_expired(now)).peekable())
        .collect();
    let mut items = Vec::new();
    let mut bytes = 0;
    loop {
        let mut best: Option<(usize, &Item)> = None;
        for (i, s) in scans.iter_mut().enumerate() {
            if let Some(item) = s.peek() {
                let better = match best {
                    None => true,
                    Some((_, b)) => {
                        let o = cmp(item, b);
                        if reverse {
                            o == Ordering::Greater
                        } else {
                            o == Ordering::Less
                        }
                    }
                };
                if better {
                    best = Some((i, item));
                }
            }
        }
        let Some((i, item)) = best else {
            return (items, false);
        };
        let size = item.page_bytes();
        if items.len() == limit || (!items.is_empty() && bytes + size > PAGE_BYTES_MAX) {
            return (items, true);
        }
        bytes += size;
        if let Some(item) = scans[i].next() {
            items.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}

    /// The handle and its write futures cross threads: tokio's multi-threaded runtime
    /// (and any other) may move them.
    #[test]
    fn handle_is_send_sync_and_futures_are_send() {
        let db = Db::open(Config {
            shards: 1,
            pin: false,
            ..Config::default()
        })
        .expect("engine opens");
        send_sync(&db);
        send(db.set("k", json!(1), &SetOptions::default()));
        send(db.set_batch(Vec::new(), true));
        send(db.add("k", None, Number::from(1)));
        send(db.remove("k"));
        send(db.remove_many(&["k"]));
    }

    #[test]
    fn more_shards_than_the_limit_are_refused_before_any_starts() {
        let asked = layout::SHARDS_MAX + 1;
        match Db::open(Config {
            shards: asked,
            pin: false,
            ..Config::default()
        }) {
            Err(OpenError::TooManyShards { asked: a, max }) => {
                assert_eq!((a, max), (asked, layout::SHARDS_MAX));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn distinct_keys_keeps_the_first_of_each_key() {
        let item = |key: &str, label: &str| {
            Item::new(crate::item::ItemData {
                key: key.into(),
                value: value::encode(&json!(1)).into(),
                created_ms: 0,
                modified_ms: 0,
                expires_s: crate::item::Expiry::NONE,
                labels: crate::item::Labels::new([Some(label.into()), None, None, None, None]),
            })
        };
        let page = vec![
            item("b", "a"),
            item("a", "b"),
            item("b", "z"),
            item("c", "z"),
        ];
        let got: Vec<(String, Option<String>)> = distinct_keys(page)
            .iter()
            .map(|i| (i.key().to_owned(), i.label(1).map(str::to_owned)))
            .collect();
        let want =
            [("b", "a"), ("a", "b"), ("c", "z")].map(|(k, l)| (k.to_owned(), Some(l.to_owned())));
        assert_eq!(got, want);
    }

    #[test]
    fn routing_is_by_namespace_and_stable() {
        let db = Db::open(Config {
            shards: 4,
            pin: false,
            ..Config::default()
        })
        .expect("engine opens");
        let shard = |k: &str| db.shard_for(&Key::parse(k).expect("valid key"));
        assert_eq!(shard("users:a"), shard("users:zzz"));
        assert_eq!(shard("users:a"), shard("users"));
        // xxh3 of the routing text modulo the shard count, pinned: a change of the rule
        // would look for existing data on the wrong shard's log, so it must be noticed.
        const PINNED: [usize; 8] = [3, 3, 3, 2, 0, 2, 3, 2];
        let spread: Vec<usize> = ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .map(|k| shard(k))
            .collect();
        assert_eq!(spread, PINNED);
        assert!(spread.iter().any(|s| *s != spread[0]), "simple keys spread");
    }
}
