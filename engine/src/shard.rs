//! A shard: the items of the namespaces that hash to it, their label index and their
//! expiry index, and the one thread (an `ampd-rt` runtime) that writes them.
//!
//! # Why a lock-free skiplist inside a single-owner shard
//! Every write of a shard is applied by its own executor, one after the other, so
//! writes need no locks and a namespace's changes have one order (which events and the
//! WAL build on). Reads, though, are most of the traffic, and a hop to the owning
//! thread would cost a cross-core wake-up per read. The crossbeam skiplist lets any
//! thread read a consistent entry without a lock while the owner writes, so a read is
//! served on the thread where it arrives. Writers on other threads reach the owner
//! through the [`Inbox`]: they push onto a lock-free queue and the owner drains
//! everything queued at once, so a burst of writes costs one wake-up, not one per
//! write. Writers on the owner's own executor skip the inbox and apply in place.
//!
//! Without a WAL (the embedded cache) an application thread skips the inbox too: it
//! takes the shard's write lock ([`WriteState`]) and applies its own write, so an
//! awaited `set` costs what applying it costs instead of two thread wake-ups
//! (measured 1.8 µs per `add` against 13–40 µs through the inbox, ARCHITECTURE.md).
//! The executor takes the same lock for its own writes, so a shard's writes still
//! have one order and each op is atomic. While any event handler exists writes go
//! through the executor again: events are published on its lanes, in commit order.
//!
//! Exact-key reads do not walk the skiplist: at 1 M items a skiplist lookup chases ~20
//! levels of pointers (3.6 µs measured, see ARCHITECTURE.md), so each shard also keeps
//! a lock-free hash index (papaya) from store key to item. Both indexes (and the label
//! index) point at one [`Slot`] per key; updating an existing key swaps the item in its
//! slot and leaves every index alone, so only new keys, removals and label changes pay
//! for a skiplist insert. The hash index and the skiplist hold the slot itself
//! ([`Indexed`]: found by its store key, which only the slot keeps), so an item's key
//! is stored once for both and an index entry is one pointer.
//!
//! The expiry index is only ever touched by the owner, so it is a plain `BTreeSet` in
//! [`ShardLocal`]; the reaper task walks it in slices on the same executor.
//!
//! # Durability
//! With a data directory the owner also holds the shard's log: each batch is staged,
//! written to the WAL in one write (and, under `fsync always`, one `fdatasync`), and
//! only then installed and answered; the writer starts the shard's snapshots and drops
//! the segments they cover. Before the shard serves, `recover` loads the newest
//! snapshot and replays the WAL after it on this executor.

use crate::error::OpenError;
use crate::events::{Delivery, Durable, Event, HandlerId, Hub, Lanes};
use crate::evict::{self, Eviction, Evictor};
use crate::item::{now_ms, Indexed, Item, Slot};
use crate::key::{self, Key};
use crate::storage::Storage;
use crate::wal::log::{Log, LogConfig};
use crate::wal::record::{ChangeRef, Entry, EntryRef};
use crate::write::{self, AddRequest, SetRequest};
use ampd_wire::events::Filters;
use ampd_wire::limits::LABEL_COUNT;
use ampd_wire::{Error, ErrorCode};
use crossbeam_queue::SegQueue;
use crossbeam_skiplist::{SkipMap, SkipSet};
use futures::channel::oneshot;
use futures::task::AtomicWaker;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How often the reaper looks for expired items. Reads hide expired items at once;
/// the reaper only frees them, within a second of expiry (SPEC.md).
const REAP_INTERVAL: Duration = Duration::from_millis(250);
/// Items the reaper removes before it yields to the writes waiting behind it.
const REAP_SLICE_MAX: usize = 256;
/// Ops the writer applies before it answers them and looks at its other tasks.
const BATCH_OPS_MAX: usize = 1024;

/// An entry of a label index: ordered by label, then label value, then item key, so a
/// label query is one range scan and its order is (label value, key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LabelKey {
    pub label: u8,
    /// Store key of the label value.
    pub value: Box<[u8]>,
    /// The item's key text (not its store key: results order by the key as the user
    /// sees it, whatever its namespace).
    pub key: Box<[u8]>,
}

/// One write inside an [`Op`].
#[expect(
    clippy::large_enum_variant,
    reason = "writes travel in a Vec filled once and drained once: boxing the large \
              variant would cost an allocation per `set` and save nothing"
)]
#[derive(Debug)]
pub(crate) enum Write {
    Set(SetRequest),
    Add(AddRequest),
    Remove(Key),
}

/// What a write answers: the item as written, or whether a remove found an item.
#[derive(Debug)]
pub(crate) enum Outcome {
    Item(Item),
    Removed(bool),
}

/// What a shard's inbox carries.
pub(crate) enum Op {
    /// Writes for this shard, answered together.
    Writes {
        writes: Vec<Write>,
        reply: oneshot::Sender<Result<Vec<Outcome>, Error>>,
    },
    /// Starts a task on this shard's executor ([`crate::Db::spawn_on`]).
    Spawn(Box<dyn FnOnce() + Send>),
    /// Take a snapshot now; answered with the number of items written.
    Snapshot(oneshot::Sender<Result<u64, Error>>),
    /// Posted by the snapshot task when it has finished, so the writer wakes to drop the
    /// segments the snapshot covers and answer who asked for it.
    SnapshotDone,
    /// An event to deliver again (a replayed dead letter) on this shard's lanes.
    Deliver(Delivery),
    /// Start tracking a new durable subscription's position from the next record;
    /// answered once it is tracked.
    Track {
        id: HandlerId,
        durable: Arc<Durable>,
        filters: Filters,
        reply: oneshot::Sender<()>,
    },
    /// Stop tracking a removed durable subscription.
    Untrack(HandlerId),
    /// Expired items for the writer to remove through the WAL (the reaper's, while
    /// durable subscriptions need expiries logged): store key and the expiry it was
    /// indexed under.
    Expire(Vec<(i64, Box<[u8]>)>),
}

/// What the writer needs to make a shard durable.
#[derive(Debug, Clone)]
pub(crate) struct Durability {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// WAL bytes written since the last snapshot that trigger the next one.
    pub snapshot_wal_bytes: u64,
    /// The longest time between snapshots of a shard that is being written.
    pub snapshot_interval: Duration,
    pub log: LogConfig,
}

/// Marks an index change under way in [`Shard::changes`] for as long as it lives.
struct Changing<'a>(&'a AtomicU64);

impl<'a> Changing<'a> {
    fn start(changes: &'a AtomicU64) -> Changing<'a> {
        changes.fetch_add(1, Ordering::SeqCst);
        Changing(changes)
    }
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a finished snapshot task reports: (start sequence, items) or why it failed.
type SnapshotResult = Result<(u64, u64), String>;

/// The writer's view of snapshots.
#[derive(Default)]
struct Snapshots {
    running: bool,
    /// Set by the snapshot task when it ends.
    finished: Rc<RefCell<Option<SnapshotResult>>>,
    waiting: Vec<oneshot::Sender<Result<u64, Error>>>,
    /// `Log::appended_bytes` when the last snapshot started.
    started_at_bytes: u64,
    /// When the last snapshot started (or the writer did).
    started_at: Option<Instant>,
}

thread_local! {
    /// The shard whose executor runs on this thread, if any.
    static LOCAL: RefCell<Option<Rc<ShardLocal>>> = const { RefCell::new(None) };
}

/// The owner's half of `shard` when the calling thread is that shard's executor: its
/// writes can then be applied in place, with no hand-off and no wake-up.
pub(crate) fn local_for(shard: &Arc<Shard>) -> Option<Rc<ShardLocal>> {
    LOCAL.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|l| !l.durable && Arc::ptr_eq(&l.shared, shard))
            .cloned()
    })
}

/// Whether the calling thread is the executor of one of `shards`.
pub(crate) fn on_thread_of(shards: &[Arc<Shard>]) -> bool {
    shards.iter().any(|s| {
        LOCAL
            .try_with(|l| {
                l.borrow()
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(&l.shared, s))
            })
            .unwrap_or(false)
    })
}

/// The shared half of a shard: what readers on any thread see, and the inbox.
pub(crate) struct Shard {
    pub id: usize,
    /// The id its WAL and snapshot headers carry.
    pub disk_id: u16,
    /// Every item of the shard, by store key, for point reads.
    exact: papaya::HashMap<Indexed, (), foldhash::fast::RandomState>,
    /// The same slots in store-key order, for scans.
    pub items: SkipSet<Indexed>,
    /// Label entries; an entry whose slot now holds an item with another label value
    /// is stale for the instant of a label change and is skipped by readers.
    pub labels: SkipMap<LabelKey, Arc<Slot>>,
    /// Counts up once when an install or remove starts and once when it ends (odd:
    /// one is under way). A scan that sees the same even count before and after ran
    /// while nothing changed.
    pub changes: AtomicU64,
    /// WAL records written and `fdatasync`s done, for stats and benches.
    pub wal_records: AtomicU64,
    pub wal_syncs: AtomicU64,
    inbox: Inbox,
    /// Where the shard's committed changes go as events.
    events: Arc<Hub>,
    /// The shard's part of the memory budget, and what it holds.
    pub cache: CacheCounters,
    /// See [`WriteState`].
    state: std::sync::Mutex<WriteState>,
    /// Without a WAL: writes become visible as they are applied, on any thread.
    in_memory: bool,
}

/// A shard's budget and cache counters (`stats`).
#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    /// The shard's part of `Config::max_memory`; `u64::MAX`: no limit.
    pub budget: u64,
    /// Whether reads are counted and recorded for eviction.
    pub policy: Eviction,
    /// Bytes its items count ([`evict::cost`]).
    pub used: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// `lru`'s clock: advanced by every use.
    clock: std::sync::atomic::AtomicU32,
}

impl CacheCounters {
    /// The next tick of `lru`'s clock (`None` under other policies, which keep none).
    fn tick(&self) -> Option<u32> {
        (self.policy == Eviction::Lru).then(|| self.clock.fetch_add(1, Ordering::Relaxed))
    }
}

/// Ops queued for the owner, who takes every queued op in one go (the batch). The
/// queue is lock-free: a `Mutex<Vec>` swapped whole was measured slower, its futex
/// waits showing up on both sides under 64 concurrent callers (ARCHITECTURE.md).
struct Inbox {
    queue: SegQueue<Op>,
    waker: AtomicWaker,
    closed: AtomicBool,
}

impl Shard {
    pub fn new(
        id: usize,
        events: Arc<Hub>,
        (budget, policy): (Option<u64>, Eviction),
        in_memory: bool,
    ) -> Shard {
        let budget = budget.unwrap_or(u64::MAX);
        Shard {
            state: std::sync::Mutex::new(WriteState {
                expiry: BTreeSet::new(),
                removals: 0,
                evictor: Evictor::new(policy, budget),
            }),
            in_memory,
            events,
            cache: CacheCounters {
                budget,
                policy,
                ..CacheCounters::default()
            },
            id,
            disk_id: crate::layout::disk_id(id),
            exact: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            items: SkipSet::new(),
            labels: SkipMap::new(),
            changes: AtomicU64::new(0),
            wal_records: AtomicU64::new(0),
            wal_syncs: AtomicU64::new(0),
            inbox: Inbox {
                queue: SegQueue::new(),
                waker: AtomicWaker::new(),
                closed: AtomicBool::new(false),
            },
        }
    }

    /// Queues an op for the owner. After `close` writes are answered with an error
    /// and tasks are dropped (their callers see the shard gone).
    pub fn submit(&self, op: Op) {
        if self.inbox.closed.load(Ordering::Acquire) {
            if let Op::Writes { reply, .. } = op {
                let _ = reply.send(Err(stopped()));
            }
            return;
        }
        self.inbox.queue.push(op);
        self.inbox.waker.wake();
        if self.inbox.closed.load(Ordering::Acquire) {
            // Closed between the check and the push: the owner may already be gone.
            self.fail_queued();
        }
    }

    /// Tells the owner to stop once the queued ops are done.
    pub fn close(&self) {
        self.inbox.closed.store(true, Ordering::Release);
        self.inbox.waker.wake();
    }

    /// Answers every queued write with an error: the owner is gone.
    fn fail_queued(&self) {
        while let Some(op) = self.inbox.queue.pop() {
            if let Op::Writes { reply, .. } = op {
                let _ = reply.send(Err(stopped()));
            }
        }
    }

    /// The live item under a store key (expired items are absent). With a budget,
    /// counted as a hit or a miss, and a hit recorded for eviction.
    pub fn get(&self, store_key: &[u8], now_s: i64) -> Option<Item> {
        let counted = self.cache.budget != u64::MAX;
        let exact = self.exact.pin();
        let found = exact
            .get_key_value(store_key)
            .and_then(|(Indexed(slot), ())| {
                let item = slot.item();
                if item.is_expired(now_s) {
                    return None;
                }
                if counted {
                    slot.touch(self.cache.tick());
                }
                Some(item)
            });
        if counted {
            let counter = match found {
                Some(_) => &self.cache.hits,
                None => &self.cache.misses,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Locks the write state. A writer that panicked left it as consistent as the
    /// indexes (each install and remove is complete or not begun), so a poisoned lock
    /// is taken as it is.
    fn lock_state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `writes` on the calling thread, as the writer would apply one op: the
    /// embedded engine's write path, with no hand-off to the shard's executor and no
    /// wake-up either way. Only in memory (a WAL write waits on the shard's ring) and
    /// only while no event handler exists (events are published on the shard's lanes,
    /// in commit order): otherwise the writes come back, for the inbox. Writes of one
    /// shard are applied one op at a time under its write lock, here or on the
    /// executor, so each op is atomic and every later read sees it.
    pub fn apply_direct(
        &self,
        writes: Vec<Write>,
    ) -> Result<Result<Vec<Outcome>, Error>, Vec<Write>> {
        if !self.in_memory || self.events.active() {
            return Err(writes);
        }
        let mut writing = Writing {
            shared: self,
            state: self.lock_state(),
            lanes: None,
        };
        // Checked again under the lock: a handler registered since sees every op
        // applied after this point, and this op is applied before it, with no event.
        if self.events.active() || self.inbox.closed.load(Ordering::Acquire) {
            return Err(writes);
        }
        let mut staged = writing.stage(false);
        let out = writing.apply(writes, &mut staged, now_ms());
        if out.is_ok() {
            writing.install_all(staged, None);
        }
        Ok(out)
    }

    /// The slot of a store key, whatever its item (expired too).
    fn slot(&self, store_key: &[u8]) -> Option<Arc<Slot>> {
        let exact = self.exact.pin();
        exact
            .get_key_value(store_key)
            .map(|(Indexed(slot), ())| slot.clone())
    }

    /// Waits for queued ops and moves up to [`BATCH_OPS_MAX`] of them into `batch`;
    /// `None` once closed and drained.
    async fn next_batch(&self, batch: &mut Vec<Op>) -> Option<()> {
        poll_fn(|cx| {
            self.inbox.waker.register(cx.waker());
            while batch.len() < BATCH_OPS_MAX {
                match self.inbox.queue.pop() {
                    Some(op) => batch.push(op),
                    None => break,
                }
            }
            if !batch.is_empty() {
                Poll::Ready(Some(()))
            } else if self.inbox.closed.load(Ordering::Acquire) {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

fn stopped() -> Error {
    Error::new(ErrorCode::Internal, "the shard has stopped")
}

/// The owner's half of a shard, living on its executor.
pub(crate) struct ShardLocal {
    shared: Arc<Shard>,
    /// Whether writes go through a WAL (then they cannot be applied in place: they
    /// wait for their batch's sync).
    durable: bool,
    /// The event lanes of this shard's namespaces.
    lanes: Lanes,
}

/// What applying writes changes besides the shared indexes. Whoever applies writes
/// holds it ([`Writing`]): the shard's writer and reaper, or an application thread
/// applying its own writes to an in-memory shard ([`Shard::apply_direct`]).
pub(crate) struct WriteState {
    /// (expiry second, store key) of every item with a ttl.
    expiry: BTreeSet<(i64, Box<[u8]>)>,
    /// Slots removed from the shard so far (see [`Staged::removals`]).
    removals: u64,
    /// The eviction policy's state, with a budget that evicts.
    evictor: Option<Evictor>,
}

/// The right to apply writes to a shard: its [`WriteState`], locked, and the lanes its
/// events go to (`None` on a thread that is not the shard's: such a writer applies
/// only while no event handler exists, see [`Shard::apply_direct`]).
pub(crate) struct Writing<'a> {
    shared: &'a Shard,
    state: std::sync::MutexGuard<'a, WriteState>,
    lanes: Option<&'a Lanes>,
}

/// The writes of one batch, computed but not yet visible. With a WAL they become
/// visible only once they are durable, so no reader ever sees a write that a crash
/// could take back.
#[derive(Default)]
pub(crate) struct Staged {
    /// In order: each key's change.
    changes: Vec<Change>,
    /// Later ops of the batch see the earlier ones' staged state (a batch that waits
    /// for its WAL write); without a log each op is installed at once.
    batch: bool,
    /// [`ShardLocal::removals`] when the batch was staged: if it is the same at install,
    /// no slot left the shard meanwhile and every [`Change::slot`] is still the key's.
    removals: u64,
    /// The batch's clock (epoch seconds): what the writes took for expired.
    now_s: i64,
    /// What the batch's changes add to the shard's counted bytes, kept only when the
    /// shard has a budget (`counted`): two `evict::cost`s per change otherwise spared.
    growth: i64,
    counted: bool,
    /// Past [`STAGED_SCAN_MAX`] changes: the position in `changes` of each key's newest
    /// change, hashed by the key it points at (so no key is copied into the index).
    /// Smaller batches (nearly all unpipelined ones) find a key by scanning `changes`
    /// backwards, which costs less than hashing.
    index: hashbrown::HashTable<usize>,
    hasher: foldhash::fast::RandomState,
}

/// One staged change of one key.
pub(crate) struct Change {
    sk: Box<[u8]>,
    /// What the key becomes; `None`: removed.
    item: Option<Item>,
    /// The key's slot in the shard, when the batch's first change of the key found one:
    /// install then updates it without a second lookup. `None` for a key the batch had
    /// already changed (its slot may come or go before this change is installed).
    slot: Option<Arc<Slot>>,
    /// What the key held before this change (expired or not), for its events.
    replaced: Option<Item>,
    /// A removal to keep the shard within its budget ([`crate::evict`]).
    evicted: bool,
}

impl Change {
    /// What the change adds to the shard's counted bytes (negative: frees).
    fn growth(&self) -> i64 {
        let of = |i: &Option<Item>| i.as_ref().map_or(0, |i| evict::cost(i) as i64);
        of(&self.item) - of(&self.replaced)
    }
}

/// The WAL records a staged batch makes: one per change.
fn records_of(staged: &Staged) -> u64 {
    staged.changes.len() as u64
}

/// Changes a staged batch scans before it indexes them (see [`Staged::index`]).
const STAGED_SCAN_MAX: usize = 32;

impl Staged {
    fn hash(&self, sk: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, sk)
    }

    /// The batch's newest staged state of `sk`: `None` if the batch has not touched
    /// it, `Some(None)` if it removed it.
    fn latest(&self, sk: &[u8]) -> Option<&Option<Item>> {
        if !self.batch {
            return None;
        }
        let key_at = |at: usize| self.changes.get(at).map(|c| &*c.sk);
        let at = if self.index.is_empty() {
            self.changes.iter().rposition(|c| *c.sk == *sk)?
        } else {
            *self
                .index
                .find(self.hash(sk), |&at| key_at(at) == Some(sk))?
        };
        self.changes.get(at).map(|c| &c.item)
    }

    fn push(&mut self, change: Change) {
        if self.counted {
            self.growth += change.growth();
        }
        self.changes.push(change);
        if !self.batch || self.changes.len() <= STAGED_SCAN_MAX {
            return;
        }
        let first = if self.index.is_empty() {
            0
        } else {
            self.changes.len() - 1
        };
        for at in first..self.changes.len() {
            let Some(Change { sk, .. }) = self.changes.get(at) else {
                break;
            };
            let hash = self.hash(sk);
            let changes = &self.changes;
            let key_at = |i: usize| changes.get(i).map(|c| &*c.sk);
            match self.index.find_mut(hash, |&i| key_at(i) == Some(&**sk)) {
                Some(newest) => *newest = at,
                None => {
                    let hasher = &self.hasher;
                    let rehash = |&i: &usize| {
                        std::hash::BuildHasher::hash_one(hasher, key_at(i).unwrap_or_default())
                    };
                    self.index.insert_unique(hash, at, rehash);
                }
            }
        }
    }

    /// The WAL records of the batch, borrowed from it, one per change: after-images
    /// and tombstones, or (`with_replaced`, for durable subscriptions) changes with the
    /// items they replaced.
    fn entries(&self, with_replaced: bool) -> Vec<EntryRef<'_>> {
        self.changes
            .iter()
            .map(|c| match (&c.item, with_replaced) {
                (item, true) => EntryRef::Change(ChangeRef {
                    after: item.as_ref().map(Item::image),
                    before: c.replaced.as_ref().map(Item::image),
                    before_expired: c
                        .replaced
                        .as_ref()
                        .is_some_and(|r| r.is_expired(self.now_s)),
                    evicted: c.evicted,
                }),
                (Some(item), false) => EntryRef::Put(item.image()),
                (None, false) => EntryRef::Remove {
                    key: key::text_of(&c.sk),
                },
            })
            .collect()
    }
}

/// How the writer makes batches durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A write is acknowledged only after its batch's `fdatasync`.
    Always,
    /// Batches are written at once and synced at most this often (and when the shard
    /// goes idle); a crash may take back up to that much acknowledged time.
    Interval(Duration),
    /// Written at once, synced when the OS decides.
    Never,
}

impl ShardLocal {
    pub fn new(shared: Arc<Shard>, durable: bool) -> ShardLocal {
        let id = shared.id;
        ShardLocal {
            shared,
            durable,
            lanes: Lanes::new(id),
        }
    }

    /// The right to apply writes, on the shard's own executor (events go to its lanes).
    pub fn writing(&self) -> Writing<'_> {
        Writing {
            shared: &self.shared,
            state: self.shared.lock_state(),
            lanes: Some(&self.lanes),
        }
    }

    /// Applies ops until the shard is closed; with a log, each batch is written (and
    /// synced, per `fsync`) before any of it becomes visible or is answered.
    pub async fn run_writes<S: Storage + 'static>(
        &self,
        mut log: Option<Log<S>>,
        fsync: FsyncPolicy,
        snapshot_every: (u64, Duration),
    ) {
        let mut snapshots = Snapshots::default();
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let more = match (unsynced_since, fsync) {
                (Some(since), FsyncPolicy::Interval(every)) => {
                    let wait = every.saturating_sub(since.elapsed());
                    let next = std::pin::pin!(self.shared.next_batch(&mut batch));
                    let timer = std::pin::pin!(ampd_rt::time::sleep(wait));
                    match futures::future::select(next, timer).await {
                        futures::future::Either::Left((more, _)) => more,
                        futures::future::Either::Right(((), _)) => {
                            // Idle past the interval: make what was written durable.
                            if let Some(log) = log.as_mut() {
                                match log.sync().await {
                                    Ok(()) => {
                                        self.shared.wal_syncs.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(e) => tracing::error!("shard {}: {e}", self.shared.id),
                                }
                            }
                            unsynced_since = None;
                            continue;
                        }
                    }
                }
                _ => self.shared.next_batch(&mut batch).await,
            };
            if more.is_none() {
                break;
            }
            // Apply the whole batch, then answer it: the callers wake together and
            // queue their next writes while this thread is still awake, so the next
            // batch needs no wake-up of its own.
            // Without a log each op is installed as soon as it is applied; with one,
            // the batch is staged whole and waits for its write.
            let mut staged = self.writing().stage(true);
            let now = now_ms();
            for op in batch.drain(..) {
                match op {
                    Op::Writes { writes, reply } if log.is_none() => {
                        let mut writing = self.writing();
                        let mut single = writing.stage(false);
                        let result = writing.apply(writes, &mut single, now);
                        writing.install_all(single, None);
                        answers.push((reply, result));
                    }
                    Op::Writes { writes, reply } => {
                        answers.push((reply, self.writing().apply(writes, &mut staged, now)))
                    }
                    Op::Spawn(start) => start(),
                    Op::Snapshot(reply) => match log.as_ref() {
                        None => {
                            let _ = reply.send(Err(Error::new(
                                ErrorCode::Internal,
                                "an in-memory engine takes no snapshots",
                            )));
                        }
                        Some(log) => {
                            snapshots.waiting.push(reply);
                            self.start_snapshot(log, &mut snapshots);
                        }
                    },
                    Op::SnapshotDone => {}
                    Op::Deliver(delivery) => self.lanes.deliver(&self.shared.events, delivery),
                    Op::Track {
                        id,
                        durable,
                        filters,
                        reply,
                    } => {
                        // Without a WAL positions are not kept, but the subscription
                        // still gets its own lanes.
                        let next = log.as_ref().map_or(0, |log| log.next_seq());
                        self.lanes.track(id, durable, filters, next);
                        let _ = reply.send(());
                    }
                    Op::Untrack(id) => self.lanes.untrack(id),
                    Op::Expire(due) if log.is_none() => {
                        let mut writing = self.writing();
                        let mut single = writing.stage(false);
                        writing.expire(due, &mut single, now);
                        writing.install_all(single, None);
                    }
                    Op::Expire(due) => self.writing().expire(due, &mut staged, now),
                }
            }
            let durable = match log.as_mut() {
                Some(log) if !staged.changes.is_empty() => {
                    let sync = fsync == FsyncPolicy::Always
                        || unsynced_since.is_some_and(|since| match fsync {
                            FsyncPolicy::Interval(every) => since.elapsed() >= every,
                            _ => false,
                        });
                    let entries = staged.entries(self.shared.events.logs_changes());
                    let written = log.append(&entries, sync).await;
                    if written.is_ok() {
                        let records = entries.len() as u64;
                        self.shared
                            .wal_records
                            .fetch_add(records, Ordering::Relaxed);
                        self.shared
                            .wal_syncs
                            .fetch_add(u64::from(sync), Ordering::Relaxed);
                        unsynced_since = match (sync, fsync) {
                            (false, FsyncPolicy::Interval(_)) => {
                                unsynced_since.or(Some(Instant::now()))
                            }
                            _ => None,
                        };
                    }
                    // The batch's first record's number.
                    written.map(|last| Some(last + 1 - records_of(&staged)))
                }
                _ => Ok(None),
            };
            match durable {
                Ok(first_seq) => {
                    let n = records_of(&staged);
                    self.writing().install_all(staged, first_seq);
                    if let Some(first) = first_seq {
                        self.lanes.committed(first + n);
                    }
                }
                Err(e) => {
                    // Nothing of the batch becomes visible; the log refuses every
                    // later batch too, and reads go on from what is durable.
                    let why = format!("the write could not be made durable: {e}");
                    for (_, result) in answers.iter_mut() {
                        if result.is_ok() {
                            *result = Err(Error::new(ErrorCode::Internal, why.clone()));
                        }
                    }
                }
            }
            for (reply, result) in answers.drain(..) {
                // The caller may have stopped waiting; the write stands either way.
                let _ = reply.send(result);
            }
            if let Some(log) = log.as_mut() {
                self.tend_snapshots(log, &mut snapshots, snapshot_every)
                    .await;
            }
            ampd_rt::yield_if_needed().await;
        }
        if let Some(log) = log.as_mut() {
            // A clean close leaves everything acknowledged on disk, whatever the policy.
            if let Err(e) = log.sync().await {
                tracing::error!("shard {}: {e}", self.shared.id);
            }
        }
    }

    /// Where a snapshot starting at `s0` may cut the log: at `s0`, or before the
    /// oldest saved position of a durable subscription, unless that holds more than
    /// the backlog cap (the subscriptions behind it are reported: they will be lost
    /// at the next open).
    fn retain<S: Storage + 'static>(&self, log: &Log<S>, s0: u64) -> u64 {
        let hub = &self.shared.events;
        let Some(keep) = hub.retain_from(self.shared.id).filter(|k| *k < s0) else {
            return s0;
        };
        let held = log.bytes_between(keep, s0);
        if held <= hub.backlog_max() {
            return keep;
        }
        for (_, durable, _) in hub.durables() {
            let at = durable
                .saved
                .get(self.shared.id)
                .map_or(s0, |n| n.load(Ordering::Acquire));
            if at < s0 {
                tracing::error!(
                    "shard {}: subscription {:?} is {held} bytes of WAL behind (more than \
                     --event-backlog-max, {} bytes): its records before {s0} are dropped \
                     and it cannot resume after a restart",
                    self.shared.id,
                    durable.name,
                    hub.backlog_max()
                );
                hub.fell_behind();
            }
        }
        s0
    }

    /// Starts a snapshot from the log's next sequence number, unless one is running.
    fn start_snapshot<S: Storage + 'static>(&self, log: &Log<S>, snapshots: &mut Snapshots) {
        if snapshots.running {
            return;
        }
        snapshots.running = true;
        snapshots.started_at_bytes = log.appended_bytes();
        snapshots.started_at = Some(Instant::now());
        // Every record below `s0` is installed: batches are installed before the
        // writer looks at anything else.
        let s0 = log.next_seq();
        let storage = log.storage().clone();
        let shared = self.shared.clone();
        let finished = snapshots.finished.clone();
        // The walk and the encoding (CPU) run on a thread of their own, so the shard's
        // executor only writes the chunks; two chunks in flight bound the memory.
        let (mut to_writer, chunks) = futures::channel::mpsc::channel(1);
        let walked = shared.clone();
        let walk = std::thread::Builder::new()
            .name(format!("ampd-snapshot-{}", shared.id))
            .spawn(move || {
                let items = walked.items.iter().map(|e| e.value().0.item());
                let now_s = now_ms().div_euclid(1000);
                crate::snapshot::encode(walked.disk_id, s0, items, now_s, |chunk| {
                    futures::executor::block_on(futures::SinkExt::send(&mut to_writer, chunk))
                        .is_ok()
                });
            });
        ampd_rt::spawn(async move {
            let started = Instant::now();
            let written = match walk {
                Ok(_) => crate::snapshot::write(&storage, s0, chunks).await,
                Err(e) => Err(crate::wal::log::io_error("start the walk of", "snapshot")(
                    e,
                )),
            };
            if let Ok(count) = &written {
                tracing::info!(
                    "shard {} snapshot at sequence {s0}: {count} items in {:.1?}",
                    shared.id,
                    started.elapsed()
                );
            }
            *finished.borrow_mut() = Some(written.map(|n| (s0, n)).map_err(|e| e.to_string()));
            shared.submit(Op::SnapshotDone);
        })
        .detach();
    }

    /// After each batch: finishes a completed snapshot (drops the WAL segments it
    /// covers, answers who asked) and starts one when enough WAL has been written.
    async fn tend_snapshots<S: Storage + 'static>(
        &self,
        log: &mut Log<S>,
        snapshots: &mut Snapshots,
        (snapshot_wal_bytes, snapshot_interval): (u64, Duration),
    ) {
        let finished = snapshots.finished.borrow_mut().take();
        if let Some(result) = finished {
            snapshots.running = false;
            let answer = match result {
                Ok((s0, count)) => match log.drop_segments_before(self.retain(log, s0)).await {
                    Ok(_) => Ok(count),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = &answer {
                tracing::error!("shard {}: snapshot: {e}", self.shared.id);
            }
            for reply in snapshots.waiting.drain(..) {
                let _ =
                    reply.send(answer.clone().map_err(|e| {
                        Error::new(ErrorCode::Internal, format!("snapshot failed: {e}"))
                    }));
            }
        }
        let written = log.appended_bytes() - snapshots.started_at_bytes;
        let since = snapshots
            .started_at
            .get_or_insert_with(Instant::now)
            .elapsed();
        if written >= snapshot_wal_bytes || (written > 0 && since >= snapshot_interval) {
            self.start_snapshot(log, snapshots);
        }
    }

    /// Recovery: each durable subscription's events from its saved position on,
    /// derived again from the WAL's change records (`entries`, numbered) and queued
    /// for it before anything new is committed. A subscription whose position the log
    /// no longer holds is marked lost (it fell behind the backlog cap), and one saved
    /// past the log's end (an unsynced tail lost in a crash) resumes at the end.
    fn requeue<S: Storage>(&self, log: &Log<S>, entries: &[(u64, Entry)]) {
        let hub = &self.shared.events;
        let shard = self.shared.id;
        for (id, durable, filters) in hub.durables() {
            let saved = durable
                .next
                .get(shard)
                .map_or(0, |n| n.load(Ordering::Acquire));
            let next = saved.min(log.next_seq());
            if next < log.first_seq() {
                let why = format!(
                    "subscription {:?} lost its position: shard {shard} needs WAL records \
                     from {next} on, and the log starts at {} (it fell behind \
                     --event-backlog-max)",
                    durable.name,
                    log.first_seq()
                );
                tracing::error!("{why}");
                *durable.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                continue;
            }
            self.lanes.track(id, durable.clone(), filters.clone(), next);
            let mut queued = 0u64;
            for (seq, entry) in entries.iter().filter(|(seq, _)| *seq >= next) {
                let Entry::Change(change) = entry else {
                    continue;
                };
                let item = |image: &Option<crate::wal::record::ItemImage>| {
                    image.clone().map(Item::from_image)
                };
                let events: Vec<Event> = match (change.evicted, item(&change.before)) {
                    (true, Some(gone)) => vec![Event::evicted(gone)],
                    (_, before) => {
                        Event::of_change(item(&change.after), before, change.before_expired)
                            .collect()
                    }
                };
                let picked = events.into_iter();
                for event in picked.filter(|e| filters.matches(e.name, e.item.key())) {
                    self.lanes.publish_backlog(hub, id, event, *seq);
                    queued += 1;
                }
            }
            if queued > 0 {
                tracing::info!(
                    "shard {shard}: subscription {:?} resumes at record {next}: {queued} \
                     events queued again",
                    durable.name
                );
            }
        }
        self.lanes.committed(log.next_seq());
    }

    /// Removes expired items, a slice at a time, until the shard is closed.
    pub async fn run_reaper(&self) {
        while !self.shared.inbox.closed.load(Ordering::Acquire) {
            ampd_rt::time::sleep(REAP_INTERVAL).await;
            loop {
                let reaped = self.reap_slice(now_ms().div_euclid(1000));
                ampd_rt::yield_if_needed().await;
                if reaped < REAP_SLICE_MAX {
                    break;
                }
            }
        }
    }

    /// Removes up to [`REAP_SLICE_MAX`] due items; returns how many index entries it
    /// took. Each entry leaves the index whatever it finds, so the reaper always makes
    /// progress, and an item is removed only if it still expires at that second.
    fn reap_slice(&self, now_s: i64) -> usize {
        let mut writing = self.writing();
        let mut due = Vec::new();
        while due.len() < REAP_SLICE_MAX {
            match writing.state.expiry.first() {
                Some((at, _)) if *at <= now_s => due.extend(writing.state.expiry.pop_first()),
                _ => break,
            }
        }
        let count = due.len();
        if self.durable && self.shared.events.logs_changes() {
            // Durable subscriptions derive events from the WAL again: the writer
            // removes these through it.
            if !due.is_empty() {
                self.shared.submit(Op::Expire(due));
            }
            return count;
        }
        for (at, sk) in &due {
            let expires = self.shared.slot(sk).and_then(|s| s.item().ttl());
            if expires == Some(*at) {
                let gone = writing.remove(sk);
                if self.shared.events.active() {
                    for event in Event::of_change(None, gone, true) {
                        self.lanes.publish(&self.shared.events, event, None);
                    }
                }
            }
        }
        count
    }
}

impl Writing<'_> {
    /// Staging for writes applied now: for one op installed at once, or (`batch`) for a
    /// whole batch that becomes visible together.
    pub fn stage(&self, batch: bool) -> Staged {
        Staged {
            batch,
            removals: self.state.removals,
            counted: self.shared.cache.budget != u64::MAX,
            ..Staged::default()
        }
    }

    /// Makes a snapshot's or the log's records the shard's state (recovery).
    pub fn replay(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            match entry {
                Entry::Put(image) => {
                    let item = Item::from_image(image);
                    self.install(store_key_of(&item), item, None);
                }
                Entry::Remove { key } => {
                    self.remove(&key::store_key(key.contains(':'), &key));
                }
                Entry::Change(change) => match change.after {
                    Some(image) => self.replay(vec![Entry::Put(image)]),
                    None => {
                        if let Some(before) = change.before {
                            self.replay(vec![Entry::Remove { key: before.key }]);
                        }
                    }
                },
            }
        }
    }

    /// Applies one op's writes in order to `staged`; the first refusal stops the rest
    /// and stages nothing of the op (a refused request changes nothing).
    /// `now` (ms since the epoch) is the batch's one clock reading.
    pub fn apply(
        &mut self,
        writes: Vec<Write>,
        staged: &mut Staged,
        now: i64,
    ) -> Result<Vec<Outcome>, Error> {
        let now_s = now.div_euclid(1000);
        staged.now_s = now_s;
        let mut mine: Vec<Change> = Vec::with_capacity(writes.len());
        // What a key holds now (expired or not): this op's own writes, then the
        // batch's, then the shard's (with the key's slot, when the batch had not
        // touched the key).
        let current = |mine: &[Change], sk: &[u8]| {
            let staged = mine
                .iter()
                .rev()
                .find(|c| *c.sk == *sk)
                .map(|c| &c.item)
                .or_else(|| staged.latest(sk));
            match staged {
                Some(item) => (item.clone(), None),
                None => {
                    let slot = self.shared.slot(sk);
                    (slot.as_ref().map(|s| s.item()), slot)
                }
            }
        };
        // Of what a key holds, what a write sees: the item unless it has expired.
        fn live(held: &Option<Item>, now_s: i64) -> Option<&Item> {
            held.as_ref().filter(|i| !i.is_expired(now_s))
        }
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Set(_) | Write::Add(_) => {
                    let (sk, item, replaced, slot) = match w {
                        Write::Set(req) => {
                            let sk = req.key.store_key();
                            let (replaced, slot) = current(&mine, &sk);
                            let item = write::apply_set(live(&replaced, now_s), req, now)?;
                            (sk, Item::new(item), replaced, slot)
                        }
                        Write::Add(req) => {
                            let sk = req.key.store_key();
                            let (replaced, slot) = current(&mine, &sk);
                            let item = write::apply_add(live(&replaced, now_s), req, now)?;
                            (sk, Item::new(item), replaced, slot)
                        }
                        Write::Remove(_) => unreachable!(),
                    };
                    let change = Change {
                        sk,
                        item: Some(item.clone()),
                        slot,
                        replaced,
                        evicted: false,
                    };
                    self.make_room(&mut mine, staged, &change)?;
                    out.push(Outcome::Item(item));
                    mine.push(change);
                }
                Write::Remove(key) => {
                    let sk = key.store_key();
                    let (replaced, slot) = current(&mine, &sk);
                    out.push(Outcome::Removed(live(&replaced, now_s).is_some()));
                    // Stage a tombstone only where something (live or expired) is.
                    if replaced.is_some() {
                        mine.push(Change {
                            sk,
                            item: None,
                            slot,
                            replaced,
                            evicted: false,
                        });
                    }
                }
            }
        }
        for change in mine {
            staged.push(change);
        }
        Ok(out)
    }

    /// Stages evictions into `mine` (before `change`, a write of this op) until the
    /// shard's items, the batch's growth, this op's and `change`'s fit the budget:
    /// victims are installed items that neither the batch nor this op touches, at most
    /// [`evict::EVICTIONS_PER_WRITE_MAX`]. `memory_limit` when that does not make room
    /// (or the shard has a budget and no eviction).
    fn make_room(
        &mut self,
        mine: &mut Vec<Change>,
        staged: &Staged,
        change: &Change,
    ) -> Result<(), Error> {
        let cache = &self.shared.cache;
        if cache.budget == u64::MAX {
            return Ok(());
        }
        let used = cache.used.load(Ordering::Relaxed) as i64;
        let mut total =
            used + staged.growth + mine.iter().map(Change::growth).sum::<i64>() + change.growth();
        let budget = cache.budget as i64;
        if total <= budget {
            return Ok(());
        }
        let refuse = |total: i64| {
            let how = match cache.policy {
                Eviction::None => "eviction is off".to_owned(),
                p => format!(
                    "after evicting up to {} items ({p})",
                    evict::EVICTIONS_PER_WRITE_MAX
                ),
            };
            Error::new(
                ErrorCode::MemoryLimit,
                format!(
                    "shard {} would hold {total} bytes of items with this write, over its \
                     budget of {} bytes ({how})",
                    self.shared.id, cache.budget
                ),
            )
        };
        let Some(evictor) = self.state.evictor.as_mut() else {
            return Err(refuse(total));
        };
        for _ in 0..evict::EVICTIONS_PER_WRITE_MAX {
            // A key this batch or op changes holds a write not yet acknowledged.
            let touched = |slot: &Slot| {
                let sk = &slot.key;
                *sk == change.sk || staged.latest(sk).is_some() || mine.iter().any(|c| c.sk == *sk)
            };
            let hash = |slot: &Slot| key_hash(&slot.key);
            let Some(victim) = evictor.victim(touched, hash) else {
                break;
            };
            let item = victim.item();
            let eviction = Change {
                sk: victim.key.clone(),
                item: None,
                slot: Some(victim),
                replaced: Some(item),
                evicted: true,
            };
            total += eviction.growth();
            mine.push(eviction);
            if total <= budget {
                return Ok(());
            }
        }
        Err(refuse(total))
    }

    /// Makes a batch's staged writes visible, in order. `first_seq`: the WAL
    /// record number of its first change (one record per change), with a WAL.
    pub fn install_all(&mut self, staged: Staged, first_seq: Option<u64>) {
        // A slot found at staging is still the key's unless something removed a slot
        // since (the reaper, while the batch waited for its WAL write).
        let slots_hold = self.state.removals == staged.removals;
        let events = self.shared.events.active();
        for (i, change) in staged.changes.into_iter().enumerate() {
            let slot = change.slot.filter(|_| slots_hold);
            let installed = match change.item {
                Some(item) => Some(self.install(change.sk, item, slot)),
                None => {
                    self.remove(&change.sk);
                    None
                }
            };
            if change.evicted {
                let cache = &self.shared.cache;
                cache.evictions.fetch_add(1, Ordering::Relaxed);
                let freed = change.replaced.as_ref().map_or(0, evict::cost);
                cache.evicted_bytes.fetch_add(freed, Ordering::Relaxed);
            }
            if events {
                let seq = first_seq.map(|first| first + i as u64);
                let publish = |event| {
                    if let Some(lanes) = self.lanes {
                        lanes.publish(&self.shared.events, event, seq);
                    }
                };
                match (change.evicted, change.replaced) {
                    (true, Some(gone)) => publish(Event::evicted(gone)),
                    (_, replaced) => {
                        let expired = replaced
                            .as_ref()
                            .is_some_and(|r| r.is_expired(staged.now_s));
                        Event::of_change(installed, replaced, expired).for_each(publish);
                    }
                }
            }
        }
    }

    /// Stages the removal of the items `due` names that still expire when they were
    /// indexed to (the reaper's, handed to the writer so the WAL logs them).
    fn expire(&mut self, due: Vec<(i64, Box<[u8]>)>, staged: &mut Staged, now: i64) {
        staged.now_s = now.div_euclid(1000);
        for (at, sk) in due {
            let (held, slot) = match staged.latest(&sk) {
                Some(item) => (item.clone(), None),
                None => {
                    let slot = self.shared.slot(&sk);
                    (slot.as_ref().map(|s| s.item()), slot)
                }
            };
            if held
                .as_ref()
                .is_some_and(|i| i.ttl() == Some(at) && i.is_expired(staged.now_s))
            {
                staged.push(Change {
                    sk,
                    item: None,
                    slot,
                    replaced: held,
                    evicted: false,
                });
            }
        }
    }

    /// Makes `data` the item under `sk`. New label entries go in before the item is
    /// visible and stale ones go after, so a label query never misses an
    /// acknowledged item.
    /// `slot`, when given, is the key's slot in the shard.
    fn install(&mut self, sk: Box<[u8]>, item: Item, slot: Option<Arc<Slot>>) -> Item {
        let _changing = Changing::start(&self.shared.changes);
        let exact = self.shared.exact.pin();
        let Some(slot) = slot.or_else(|| self.shared.slot(&sk)) else {
            self.index_expiry(&item, &sk);
            let slot = Arc::new(Slot::new(&item, sk));
            let cost = evict::cost(&item);
            self.shared.cache.used.fetch_add(cost, Ordering::Relaxed);
            if let Some(tick) = self.shared.cache.tick() {
                slot.stamp(tick);
            }
            if let Some(evictor) = self.state.evictor.as_mut() {
                evictor.admit(&slot, cost, key_hash(&slot.key));
            }
            for (label, value) in labels_of(&item) {
                self.shared
                    .labels
                    .insert(label_key(label, value, &item), slot.clone());
            }
            self.shared.items.insert(Indexed(slot.clone()));
            exact.insert(Indexed(slot), ());
            return item;
        };
        let old = slot.item();
        if let Some(tick) = self.shared.cache.tick() {
            slot.stamp(tick);
        }
        let used = &self.shared.cache.used;
        used.fetch_add(evict::cost(&item), Ordering::Relaxed);
        used.fetch_sub(evict::cost(&old), Ordering::Relaxed);
        for (label, value) in labels_of(&item) {
            if old.label(usize::from(label) + 1) != Some(value) {
                self.shared
                    .labels
                    .insert(label_key(label, value, &item), slot.clone());
            }
        }
        slot.store(&item);
        for (label, value) in labels_of(&old) {
            if item.label(usize::from(label) + 1) != Some(value) {
                self.shared.labels.remove(&label_key(label, value, &old));
            }
        }
        if old.ttl() != item.ttl() {
            self.unindex_expiry(&old, &sk);
            self.index_expiry(&item, &sk);
        }
        item
    }

    /// Removes the item under `sk`; returns it, if there was one.
    fn remove(&mut self, sk: &[u8]) -> Option<Item> {
        let _changing = Changing::start(&self.shared.changes);
        let exact = self.shared.exact.pin();
        let slot = exact
            .remove_entry(sk)
            .map(|(Indexed(slot), ())| slot.clone())?;
        self.state.removals += 1;
        slot.mark_gone();
        let old = slot.item();
        self.shared
            .cache
            .used
            .fetch_sub(evict::cost(&old), Ordering::Relaxed);
        self.shared.items.remove(sk);
        for (label, value) in labels_of(&old) {
            self.shared.labels.remove(&label_key(label, value, &old));
        }
        self.unindex_expiry(&old, sk);
        Some(old)
    }

    fn index_expiry(&mut self, item: &Item, sk: &[u8]) {
        if let Some(at) = item.ttl() {
            self.state.expiry.insert((at, sk.into()));
        }
    }

    fn unindex_expiry(&mut self, old: &Item, sk: &[u8]) {
        if let Some(at) = old.ttl() {
            self.state.expiry.remove(&(at, Box::from(sk)));
        }
    }
}

fn label_key(label: u8, value: &str, item: &Item) -> LabelKey {
    LabelKey {
        label,
        value: label_store_key(value),
        key: item.key().as_bytes().into(),
    }
}

/// The body of a shard's thread: the writer (this future itself) and the reaper (a
/// task beside it), until the shard is closed. The tasks others start here
/// ([`crate::Db::spawn_on`]: the server's listeners and connections) run beside them;
/// the writer steps aside between batches ([`ampd_rt::yield_if_needed`]).
pub(crate) async fn run<S: Storage + 'static>(
    shard: Arc<Shard>,
    durability: Option<(Durability, S)>,
    ready: std::sync::mpsc::Sender<Result<(), OpenError>>,
) {
    /// However the executor ends (closed, or unwinding from a panic), the shard is
    /// marked closed and whatever is still queued is answered, so no caller waits on
    /// a shard that is gone.
    struct CloseOnExit(Arc<Shard>);
    impl Drop for CloseOnExit {
        fn drop(&mut self) {
            self.0.close();
            self.0.fail_queued();
            let _ = LOCAL.try_with(|l| l.borrow_mut().take());
        }
    }
    let _close = CloseOnExit(shard.clone());
    let local = Rc::new(ShardLocal::new(shard.clone(), durability.is_some()));
    let (log, fsync, snapshot_every) = match durability {
        None => (None, FsyncPolicy::Never, (u64::MAX, Duration::MAX)),
        Some((d, storage)) => match recover(storage, &local, &shard, &d).await {
            Ok(log) => (
                Some(log),
                d.fsync,
                (d.snapshot_wal_bytes, d.snapshot_interval),
            ),
            Err(e) => {
                let _ = ready.send(Err(OpenError::from_wal(&d.dir, e)));
                return;
            }
        },
    };
    LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
    let reaper = {
        let local = local.clone();
        ampd_rt::spawn(async move { local.run_reaper().await })
    };
    let _ = ready.send(Ok(()));
    local.run_writes(log, fsync, snapshot_every).await;
    reaper.cancel();
}

/// Recovery: the newest snapshot, then the WAL from the snapshot's start.
async fn recover<S: Storage>(
    storage: S,
    local: &ShardLocal,
    shard: &Arc<Shard>,
    d: &Durability,
) -> Result<Log<S>, crate::wal::log::WalError> {
    let started = Instant::now();
    let id = shard.disk_id;
    let (s0, from_snapshot) = match crate::snapshot::load(&storage, id).await? {
        Some((s0, entries)) => {
            let n = entries.len();
            local.writing().replay(entries);
            (s0, n)
        }
        None => (0, 0),
    };
    // Durable subscriptions may need records from before the snapshot's start.
    let hub = &shard.events;
    let keep_from = hub.retain_from(shard.id).map_or(s0, |k| k.min(s0));
    let (log, replay) = Log::open_keeping(storage, id, s0, keep_from, d.log).await?;
    local.requeue(&log, &replay.entries);
    let records = replay.entries.iter().filter(|(seq, _)| *seq >= s0).count();
    local.writing().replay(
        replay
            .entries
            .into_iter()
            .filter(|(seq, _)| *seq >= s0)
            .map(|(_, e)| e)
            .collect(),
    );
    tracing::info!(
        "shard {} recovered {from_snapshot} items from a snapshot and {records} WAL \
         records ({} items) from {} in {:.1?}{}",
        shard.id,
        shard.items.len(),
        d.dir.display(),
        started.elapsed(),
        if replay.torn_bytes > 0 {
            format!(", cut a torn tail of {} bytes", replay.torn_bytes)
        } else {
            String::new()
        }
    );
    Ok(log)
}

/// An item's store key.
fn store_key_of(item: &Item) -> Box<[u8]> {
    key::store_key(item.key().contains(':'), item.key())
}

/// A store key's hash for the eviction ghost (fixed, so the same key always meets
/// the same hash).
fn key_hash(key: &[u8]) -> u64 {
    std::hash::BuildHasher::hash_one(&foldhash::fast::FixedState::default(), key)
}

/// (label index 0..5, label value) of each label an item has.
fn labels_of(item: &Item) -> impl Iterator<Item = (u8, &str)> {
    (0..LABEL_COUNT as u8).filter_map(move |i| Some((i, item.data().labels.get(usize::from(i))?)))
}

/// Store key of a label value: the same namespace rule as keys.
pub(crate) fn label_store_key(value: &str) -> Box<[u8]> {
    key::store_key(value.contains(':'), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl::TtlChange;
    use ampd_wire::value;
    use serde_json::json;

    fn set(key: &str, v: serde_json::Value) -> Write {
        Write::Set(SetRequest {
            key: Key::parse(key).unwrap(),
            value: write::NewValue::Plain(value::encode(&v)),
            overwrite: false,
            ttl: TtlChange::Keep,
            labels: Default::default(),
        })
    }

    fn set_ttl(key: &str, v: serde_json::Value, at: i64) -> Write {
        let Write::Set(mut req) = set(key, v) else {
            unreachable!()
        };
        req.ttl = TtlChange::At(at);
        Write::Set(req)
    }

    /// A write that finds the item it replaces already expired (the reaper had not come
    /// by yet) reports that expiry first: `deleted` with `expired`, then `created`; a
    /// remove of an expired item is only its expiry.
    #[test]
    fn a_write_over_an_expired_item_reports_the_expiry_first() {
        type Seen = (
            &'static str,
            serde_json::Value,
            Option<serde_json::Value>,
            bool,
        );
        let hub = Arc::new(Hub::new(Default::default(), u64::MAX));
        let log: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let sink = log.clone();
        let filters = ampd_wire::events::Filters::parse(["*"]).unwrap();
        hub.register(filters, move |e: Event| {
            let previous = e.previous.map(|p| p.value());
            let seen = (e.name.as_str(), e.item.value(), previous, e.expired);
            sink.lock().unwrap().push(seen);
            std::future::ready(Ok::<(), String>(()))
        });
        let shared = Arc::new(Shard::new(0, hub.clone(), (None, Eviction::None), false));
        // Lanes run as tasks of the shard's executor.
        let thread = ampd_rt::thread::Builder::new().spawn(move || async move {
            let local = ShardLocal::new(shared.clone(), true);
            let settle = || async {
                for _ in 0..10 {
                    ampd_rt::yield_now().await;
                }
            };
            let mut batch = local.writing().stage(true);
            let writes = vec![
                set_ttl("ns:a", json!(1), 100),
                set_ttl("ns:b", json!(1), 100),
            ];
            local.writing().apply(writes, &mut batch, 50_000).unwrap();
            local.writing().install_all(batch, None);
            settle().await;
            // At 200 s both have expired.
            let mut batch = local.writing().stage(true);
            let writes = vec![
                set("ns:a", json!(2)),
                Write::Remove(Key::parse("ns:b").unwrap()),
            ];
            local.writing().apply(writes, &mut batch, 200_000).unwrap();
            local.writing().install_all(batch, None);
            settle().await;
        });
        thread.unwrap().join().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                ("created", json!(1), None, false),
                ("created", json!(1), None, false),
                ("deleted", json!(1), Some(json!(1)), true),
                ("created", json!(2), None, false),
                ("deleted", json!(1), Some(json!(1)), true),
            ]
        );
    }

    fn value_of(shard: &Shard, key: &str) -> Option<serde_json::Value> {
        let sk = Key::parse(key).unwrap().store_key();
        shard.get(&sk, 0).map(|i| i.value())
    }

    /// A batch finds a key's slot when it is staged and installs into it without a
    /// second lookup, unless a slot left the shard in between (the reaper runs while
    /// a batch waits for its WAL write): then the slot it found may be an orphan, and
    /// install must look the key up again, or the write would vanish.
    #[test]
    fn a_slot_removed_while_a_batch_waits_is_not_written_into() {
        let shared = Arc::new(Shard::new(
            0,
            Arc::new(Hub::new(Default::default(), u64::MAX)),
            (None, Eviction::None),
            false,
        ));
        let local = ShardLocal::new(shared.clone(), true);
        let mut first = local.writing().stage(true);
        local
            .writing()
            .apply(vec![set("a", json!(1)), set("b", json!(1))], &mut first, 0)
            .unwrap();
        local.writing().install_all(first, None);

        let mut batch = local.writing().stage(true);
        local
            .writing()
            .apply(vec![set("a", json!(2)), set("b", json!(2))], &mut batch, 0)
            .unwrap();
        // What the reaper does meanwhile.
        local
            .writing()
            .remove(&Key::parse("a").unwrap().store_key());
        local.writing().install_all(batch, None);
        assert_eq!(value_of(&shared, "a"), Some(json!(2)));
        assert_eq!(value_of(&shared, "b"), Some(json!(2)));

        // Later changes of a key in the same batch: removed, then set again.
        let mut batch = local.writing().stage(true);
        let remove = Write::Remove(Key::parse("b").unwrap());
        local
            .writing()
            .apply(vec![remove, set("b", json!(3))], &mut batch, 0)
            .unwrap();
        local.writing().install_all(batch, None);
        assert_eq!(value_of(&shared, "b"), Some(json!(3)));
        assert_eq!(shared.items.len(), 2);
    }
}
