//! Change events in the embedded engine (SPEC.md "Events"): `db.on(filter, handler)`.
//!
//! # Where events come from
//! A shard makes an item's events when it installs the change, after the change is
//! committed (with a WAL: written and, per the fsync policy, synced), so an event exists
//! exactly when its change does: `created`, `updated` with the item it replaced,
//! `deleted` with the item as it was, and a `deleted` with `expired` when an item's ttl
//! passes (from the reaper, or from the write that finds the item expired first). A
//! shard builds no event while no handler is registered.
//!
//! # How they are delivered
//! On the shard that made them: a shard's namespaces are its own, so each keeps the
//! lanes of its namespaces ([`Lanes`], one per namespace, simple keys sharing one) and
//! runs them as tasks on its own executor. A lane takes its events one at a time
//! through the handlers whose filters match, in the order they were registered; lanes
//! of different namespaces run side by side (interleaved on one shard, in parallel
//! across shards). Events never leave their core on the way to a handler, and a
//! server's subscription pushes to a connection on the same thread without a wake-up
//! across cores. (A first cut ran every lane on one `ampd-events` thread: each event
//! then cost two wake-ups across threads, and three subscriptions took a `set`'s p99
//! from 1.4 ms to 21 ms under load.) Handlers run on a shard's thread, so they must not
//! block it: await, never sleep or spin.

//! # Failures
//! A handler that returns an error (or panics) is retried, after the first delay,
//! doubling up to the longest delay, until the retry horizon has passed since its first
//! failure; then the event moves to the dead-letter list for that handler and the lane
//! goes on. While a handler retries, the later events of its namespace wait; other
//! namespaces do not. Dead letters can be listed and replayed.
//!
//! # Durable subscriptions
//! A handler registered with `on` sees the changes committed while it is registered,
//! and closing the database drops what is still queued or retrying. A named
//! subscription (`Db::subscribe`) of a database with a data folder is durable: while
//! one exists, shards log each change with what it replaced
//! ([`crate::wal::record::Entry::Change`]), each event carries its record's sequence
//! number, and each shard keeps, per subscription, the sequence numbers it has
//! published and the handler has not finished with ([`Track`]). Every record numbered
//! below the smallest of them (or below the shard's next record, when none is
//! pending) is handled: that is the subscription's position on the shard
//! ([`Durable::next`]), saved to disk by the database and kept in the WAL by the
//! snapshots. After a restart, recovery derives the events from the position on
//! again from the WAL and queues them before anything new is committed; they wait for
//! the subscription's handler to be attached. Its dead letters are saved with its
//! position ([`crate::subscriptions`]) and outlive restarts too.

use crate::item::Item;
use ampd_wire::events::{EventName, Filters};
use ampd_wire::Value;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// One change of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: EventName,
    /// The item as written; for `deleted`, the item as it was when removed.
    pub item: Item,
    /// The item before the change: for `updated` and `deleted`.
    pub previous: Option<Item>,
    /// A `deleted` because the item's ttl passed.
    pub expired: bool,
    /// A `deleted` because the cache tier needed the room ([`crate::evict`]).
    pub evicted: bool,
}

impl Event {
    pub(crate) fn created(item: Item) -> Event {
        Event {
            name: EventName::Created,
            item,
            previous: None,
            expired: false,
            evicted: false,
        }
    }

    pub(crate) fn updated(item: Item, previous: Item) -> Event {
        Event {
            name: EventName::Updated,
            item,
            previous: Some(previous),
            expired: false,
            evicted: false,
        }
    }

    pub(crate) fn deleted(item: Item, expired: bool) -> Event {
        Event {
            name: EventName::Deleted,
            previous: Some(item.clone()),
            item,
            expired,
            evicted: false,
        }
    }

    /// The `deleted` of an item the cache tier evicted.
    pub(crate) fn evicted(item: Item) -> Event {
        Event {
            evicted: true,
            ..Event::deleted(item, false)
        }
    }

    /// The events of one committed change of a key: from what it held (`replaced`,
    /// which had `replaced_expired`) to `item` (`None`: nothing). A `deleted` with
    /// `expired` comes first when what it replaced had expired (a write found it
    /// before the reaper did, or the reaper removed it), then `created`, `updated`
    /// or `deleted`.
    pub(crate) fn of_change(
        item: Option<Item>,
        replaced: Option<Item>,
        replaced_expired: bool,
    ) -> impl Iterator<Item = Event> {
        let (expiry, previous) = match replaced {
            Some(old) if replaced_expired => (Some(Event::deleted(old, true)), None),
            other => (None, other),
        };
        let change = match (item, previous) {
            (Some(item), None) => Some(Event::created(item)),
            (Some(item), Some(previous)) => Some(Event::updated(item, previous)),
            (None, Some(previous)) => Some(Event::deleted(previous, false)),
            (None, None) => None,
        };
        expiry.into_iter().chain(change)
    }

    /// The item's namespace; `None` for a simple key.
    pub fn namespace(&self) -> Option<&str> {
        self.item.key().split_once(':').map(|(ns, _)| ns)
    }

    /// `{"name", "item", "previous"?, "expired"?: true}`, items with their metadata.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), Value::from(self.name.as_str()));
        m.insert("item".into(), self.item.to_meta_json());
        if let Some(p) = &self.previous {
            m.insert("previous".into(), p.to_meta_json());
        }
        if self.expired {
            m.insert("expired".into(), Value::Bool(true));
        }
        if self.evicted {
            m.insert("evicted".into(), Value::Bool(true));
        }
        Value::Object(m)
    }
}

impl Event {
    /// The event [`Event::to_json`] shows; `None` if the JSON is not one.
    pub(crate) fn from_json(v: &Value) -> Option<Event> {
        Some(Event {
            name: EventName::parse(v.get("name")?.as_str()?)?,
            item: Item::from_meta_json(v.get("item")?)?,
            previous: match v.get("previous") {
                Some(p) => Some(Item::from_meta_json(p)?),
                None => None,
            },
            expired: v.get("expired").and_then(Value::as_bool).unwrap_or(false),
            evicted: v.get("evicted").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// [`Event::to_json`] written straight in the wire's value encoding (MessagePack),
    /// the items as [`Item::write_meta`] writes them.
    pub fn write_msgpack<W: std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        let len = 2
            + usize::from(self.previous.is_some())
            + usize::from(self.expired)
            + usize::from(self.evicted);
        rmp::encode::write_map_len(w, len as u32)?;
        rmp::encode::write_str(w, "name")?;
        rmp::encode::write_str(w, self.name.as_str())?;
        rmp::encode::write_str(w, "item")?;
        self.item.write_meta(w)?;
        if let Some(p) = &self.previous {
            rmp::encode::write_str(w, "previous")?;
            p.write_meta(w)?;
        }
        if self.expired {
            rmp::encode::write_str(w, "expired")?;
            rmp::encode::write_bool(w, true)?;
        }
        if self.evicted {
            rmp::encode::write_str(w, "evicted")?;
            rmp::encode::write_bool(w, true)?;
        }
        Ok(())
    }
}

/// How a failing handler is retried (SPEC.md: 1 s doubling to 5 min, for 24 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The delay before the first retry.
    pub first: Duration,
    /// The longest delay between retries.
    pub max: Duration,
    /// How long after its first failure an event is retried before it is dead-lettered.
    pub give_up_after: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
            give_up_after: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A registered handler, for `off` and the dead-letter list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerId(u64);

/// An event a handler kept failing on past the retry horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub handler: HandlerId,
    pub event: Event,
    /// The last failure.
    pub error: String,
    pub attempts: u32,
}

type Handler = Box<dyn Fn(Event) -> LocalBoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Makes a [`Handler`] of an async function.
pub(crate) fn boxed<F, Fut, E>(handler: F) -> Handler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + 'static,
    E: std::fmt::Display,
{
    Box::new(move |event| {
        let run = handler(event);
        async move { run.await.map_err(|e| e.to_string()) }.boxed_local()
    })
}

struct Registered {
    id: HandlerId,
    filters: Filters,
    /// `None` until a durable subscription found on disk is given its handler: its
    /// events wait meanwhile.
    handler: Mutex<Option<Arc<Handler>>>,
    /// Lanes waiting for the handler.
    waiting: Mutex<Vec<std::task::Waker>>,
    durable: Option<Arc<Durable>>,
}

impl Registered {
    /// The handler, once there is one.
    async fn handler(&self) -> Arc<Handler> {
        std::future::poll_fn(|cx| {
            // Held while the waker is registered, so an attach in between is seen.
            let handler = lock(&self.handler);
            match &*handler {
                Some(h) => std::task::Poll::Ready(h.clone()),
                None => {
                    lock(&self.waiting).push(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A durable subscription's state shared by its shards, the database and the saver.
pub(crate) struct Durable {
    pub name: String,
    /// The filters as given (saved with the positions).
    pub filters: Vec<String>,
    /// Per shard: every event numbered below it is handled (acknowledged, or
    /// dead-lettered); [`NOT_STARTED`] until the shard tracks the subscription.
    pub next: Vec<AtomicU64>,
    /// Per shard: `next` as last saved to disk. Snapshots keep the WAL from it on.
    pub saved: Vec<AtomicU64>,
    /// Why the subscription cannot go on: the WAL no longer holds its position.
    pub lost: Mutex<Option<String>>,
    /// [`Hub::dead_changes`] when its dead letters were last saved.
    pub dead_saved: AtomicU64,
}

/// A shard's position before the shard has started tracking a subscription.
pub(crate) const NOT_STARTED: u64 = u64::MAX;

impl Durable {
    pub fn new(name: String, filters: Vec<String>, next: &[u64]) -> Durable {
        Durable {
            name,
            filters,
            next: next.iter().map(|n| AtomicU64::new(*n)).collect(),
            saved: next.iter().map(|n| AtomicU64::new(*n)).collect(),
            lost: Mutex::new(None),
            dead_saved: AtomicU64::new(0),
        }
    }

    pub fn lost(&self) -> Option<String> {
        lock(&self.lost).clone()
    }
}

/// An event on its way, to every matching handler or (a replayed dead letter, a
/// durable subscription's backlog) to one.
pub(crate) struct Delivery {
    event: Event,
    only: Option<HandlerId>,
    /// The sequence number of the event's WAL record, when the shard has a WAL.
    seq: Option<u64>,
}

impl Delivery {
    /// A dead letter delivered again, to the handler it failed in (its position is
    /// already handled).
    pub fn retry(letter: &DeadLetter) -> Delivery {
        Delivery {
            event: letter.event.clone(),
            only: Some(letter.handler),
            seq: None,
        }
    }
}

/// The handlers and the dead letters, shared by every shard.
pub(crate) struct Hub {
    /// Whether any handler is registered: shards build no events otherwise.
    active: AtomicBool,
    /// Durable subscriptions registered: while there are any, shards with a WAL log
    /// changes with what they replaced.
    durable: std::sync::atomic::AtomicUsize,
    /// `on` handlers registered: while there are none, events go only to the
    /// durable subscriptions' lanes.
    plain: std::sync::atomic::AtomicUsize,
    /// In registration order.
    handlers: RwLock<Vec<Arc<Registered>>>,
    next_id: AtomicU64,
    dead: Mutex<Vec<DeadLetter>>,
    retry: Retry,
    /// WAL bytes a shard keeps before a snapshot's start for durable subscriptions.
    backlog_max: u64,
    /// Times a snapshot dropped records a durable subscription still needed.
    fell_behind: AtomicU64,
    /// Counts changes of the dead-letter list (the saver saves them when it moved).
    dead_changes: AtomicU64,
}

impl Hub {
    pub fn new(retry: Retry, backlog_max: u64) -> Hub {
        Hub {
            active: AtomicBool::new(false),
            durable: std::sync::atomic::AtomicUsize::new(0),
            plain: std::sync::atomic::AtomicUsize::new(0),
            handlers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            dead: Mutex::new(Vec::new()),
            retry,
            backlog_max,
            fell_behind: AtomicU64::new(0),
            dead_changes: AtomicU64::new(0),
        }
    }

    pub fn backlog_max(&self) -> u64 {
        self.backlog_max
    }

    /// A snapshot dropped records a durable subscription still needed.
    pub fn fell_behind(&self) {
        self.fell_behind.fetch_add(1, Ordering::Relaxed);
    }

    /// How often snapshots dropped records durable subscriptions still needed.
    pub fn fell_behind_count(&self) -> u64 {
        self.fell_behind.load(Ordering::Relaxed)
    }

    /// Whether shards should make events.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether any `on` handler is registered.
    pub fn has_plain(&self) -> bool {
        self.plain.load(Ordering::Acquire) > 0
    }

    /// Whether shards with a WAL should log changes with what they replaced.
    pub fn logs_changes(&self) -> bool {
        self.durable.load(Ordering::Acquire) > 0
    }

    pub fn register<F, Fut, E>(&self, filters: Filters, handler: F) -> HandlerId
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        self.plain.fetch_add(1, Ordering::AcqRel);
        self.add(filters, Some(boxed(handler)), None)
    }

    /// Registers a durable subscription, with its handler or (found on disk at open)
    /// without one yet.
    pub(crate) fn register_durable(
        &self,
        filters: Filters,
        handler: Option<Handler>,
        durable: Arc<Durable>,
    ) -> HandlerId {
        self.durable.fetch_add(1, Ordering::AcqRel);
        self.add(filters, handler, Some(durable))
    }

    fn add(
        &self,
        filters: Filters,
        handler: Option<Handler>,
        durable: Option<Arc<Durable>>,
    ) -> HandlerId {
        let id = HandlerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut handlers = self.handlers.write().unwrap_or_else(|p| p.into_inner());
        handlers.push(Arc::new(Registered {
            id,
            filters,
            handler: Mutex::new(handler.map(Arc::new)),
            waiting: Mutex::new(Vec::new()),
            durable,
        }));
        self.active.store(true, Ordering::Release);
        id
    }

    /// Gives a durable subscription registered without a handler its handler; false
    /// if it has one already.
    pub fn attach<F, Fut, E>(&self, id: HandlerId, handler: F) -> bool
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        let handlers = self.handlers.read().unwrap_or_else(|p| p.into_inner());
        let Some(h) = handlers.iter().find(|h| h.id == id) else {
            return false;
        };
        let mut slot = lock(&h.handler);
        if slot.is_some() {
            return false;
        }
        *slot = Some(Arc::new(boxed(handler)));
        drop(slot);
        for waker in lock(&h.waiting).drain(..) {
            waker.wake();
        }
        true
    }

    /// The durable subscription named `name`: its handler id, state, filters and
    /// whether it has its handler.
    pub fn durable(&self, name: &str) -> Option<(HandlerId, Arc<Durable>, bool)> {
        let handlers = self.handlers.read().unwrap_or_else(|p| p.into_inner());
        handlers.iter().find_map(|h| {
            let d = h.durable.as_ref().filter(|d| d.name == name)?;
            Some((h.id, d.clone(), lock(&h.handler).is_some()))
        })
    }

    /// Every durable subscription, with its handler id and filters.
    pub fn durables(&self) -> Vec<(HandlerId, Arc<Durable>, Filters)> {
        let handlers = self.handlers.read().unwrap_or_else(|p| p.into_inner());
        handlers
            .iter()
            .filter_map(|h| Some((h.id, h.durable.clone()?, h.filters.clone())))
            .collect()
    }

    /// The oldest WAL record shard `shard` must keep for the durable subscriptions
    /// (their saved positions); `None` when none needs any.
    pub fn retain_from(&self, shard: usize) -> Option<u64> {
        self.durables()
            .iter()
            .filter_map(|(_, d, _)| d.saved.get(shard)?.load(Ordering::Acquire).into())
            .filter(|n| *n != NOT_STARTED)
            .min()
    }

    /// Removes a handler (or a durable subscription) and its dead letters; false if it
    /// was not registered.
    pub fn unregister(&self, id: HandlerId) -> bool {
        let mut handlers = self.handlers.write().unwrap_or_else(|p| p.into_inner());
        let before = handlers.len();
        if let Some(h) = handlers.iter().find(|h| h.id == id) {
            let count = if h.durable.is_some() {
                &self.durable
            } else {
                &self.plain
            };
            count.fetch_sub(1, Ordering::AcqRel);
        }
        handlers.retain(|h| h.id != id);
        // Its dead letters go with it.
        lock(&self.dead).retain(|d| d.handler != id);
        self.dead_changes.fetch_add(1, Ordering::AcqRel);
        self.active.store(!handlers.is_empty(), Ordering::Release);
        handlers.len() != before
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds dead letters (a failed event, or ones saved before a restart).
    pub fn add_dead_letters(&self, letters: impl IntoIterator<Item = DeadLetter>) {
        lock(&self.dead).extend(letters);
        self.dead_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times the dead-letter list has changed.
    pub fn dead_changes(&self) -> u64 {
        self.dead_changes.load(Ordering::Acquire)
    }

    /// Takes the dead letters of `handler` (all of them: `None`) off the list.
    pub fn take_dead_letters(&self, handler: Option<HandlerId>) -> Vec<DeadLetter> {
        let mut all = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let (chosen, kept) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|d| handler.is_none_or(|h| h == d.handler));
        *all = kept;
        self.dead_changes.fetch_add(1, Ordering::AcqRel);
        chosen
    }
}

/// One shard's lanes, each a namespace's (`""` for simple keys) events waiting for
/// the `on` handlers (together, in registration order) or for one durable
/// subscription: subscriptions are independent, so one whose consumer is slow, gone
/// or failing holds back only itself. A lane's task runs while its queue has events
/// and removes the lane when it empties. With them, the shard's positions of its
/// durable subscriptions.
pub(crate) struct Lanes {
    lanes: Rc<RefCell<LaneMap>>,
    track: Rc<Track>,
}

/// Whose lanes (`None`: the `on` handlers'), then each namespace's.
type LaneMap = HashMap<Option<HandlerId>, HashMap<String, Lane>>;

/// The events waiting in one namespace's lane.
type Lane = Rc<RefCell<VecDeque<Delivery>>>;

/// A shard's positions of its durable subscriptions: per subscription, how many
/// handler runs each published sequence number still waits for.
pub(crate) struct Track {
    shard: usize,
    /// The sequence number the shard's next record gets.
    next_seq: std::cell::Cell<u64>,
    pending: RefCell<HashMap<HandlerId, Pending>>,
}

struct Pending {
    durable: Arc<Durable>,
    filters: Filters,
    seqs: std::collections::BTreeMap<u64, u32>,
}

impl Track {
    /// Publishes the subscription's position: below its oldest pending event, or the
    /// shard's next record when nothing is pending.
    fn publish_position(&self, p: &Pending) {
        let next = p
            .seqs
            .first_key_value()
            .map_or(self.next_seq.get(), |(seq, _)| *seq);
        if let Some(at) = p.durable.next.get(self.shard) {
            at.store(next, Ordering::Release);
        }
    }

    /// A handler run of `seq` finished (acknowledged or dead-lettered).
    fn done(&self, id: HandlerId, seq: u64) {
        let mut pending = self.pending.borrow_mut();
        let Some(p) = pending.get_mut(&id) else {
            return;
        };
        if let std::collections::btree_map::Entry::Occupied(mut waits) = p.seqs.entry(seq) {
            *waits.get_mut() -= 1;
            if *waits.get() == 0 {
                waits.remove();
            }
        }
        self.publish_position(p);
    }
}

impl Lanes {
    pub fn new(shard: usize) -> Lanes {
        Lanes {
            lanes: Rc::default(),
            track: Rc::new(Track {
                shard,
                next_seq: std::cell::Cell::new(0),
                pending: RefCell::new(HashMap::new()),
            }),
        }
    }

    /// Starts tracking durable subscription `id` on this shard from sequence number
    /// `next` (every record below it is handled).
    pub fn track(&self, id: HandlerId, durable: Arc<Durable>, filters: Filters, next: u64) {
        if let Some(at) = durable.next.get(self.track.shard) {
            at.store(next, Ordering::Release);
        }
        self.track.pending.borrow_mut().insert(
            id,
            Pending {
                durable,
                filters,
                seqs: Default::default(),
            },
        );
    }

    /// Stops tracking a removed subscription.
    pub fn untrack(&self, id: HandlerId) {
        self.track.pending.borrow_mut().remove(&id);
    }

    /// The shard committed records up to `next_seq` (exclusive): subscriptions with
    /// nothing pending are handled up to there.
    pub fn committed(&self, next_seq: u64) {
        self.track.next_seq.set(next_seq);
        for p in self.track.pending.borrow().values() {
            if p.seqs.is_empty() {
                self.track.publish_position(p);
            }
        }
    }

    /// Queues a committed change's event (its WAL record `seq`, with a WAL) on its
    /// namespace's lanes (on the calling shard's executor): the `on` handlers' and
    /// each matching durable subscription's.
    pub fn publish(&self, hub: &Arc<Hub>, event: Event, seq: Option<u64>) {
        let mut chosen = Vec::new();
        for (id, p) in self.track.pending.borrow_mut().iter_mut() {
            if p.filters.matches(event.name, event.item.key()) {
                if let Some(seq) = seq {
                    *p.seqs.entry(seq).or_default() += 1;
                }
                chosen.push(*id);
            }
        }
        for id in chosen {
            let delivery = Delivery {
                event: event.clone(),
                only: Some(id),
                seq,
            };
            self.deliver(hub, delivery);
        }
        if hub.has_plain() {
            self.deliver(
                hub,
                Delivery {
                    event,
                    only: None,
                    seq,
                },
            );
        }
    }

    /// Queues event `seq` of a durable subscription's backlog (derived from the WAL
    /// again at recovery) for its handler alone.
    pub fn publish_backlog(&self, hub: &Arc<Hub>, id: HandlerId, event: Event, seq: u64) {
        if let Some(p) = self.track.pending.borrow_mut().get_mut(&id) {
            *p.seqs.entry(seq).or_default() += 1;
        }
        self.deliver(
            hub,
            Delivery {
                event,
                only: Some(id),
                seq: Some(seq),
            },
        );
    }

    /// Queues a delivery, starting its lane's task if the lane was idle.
    pub fn deliver(&self, hub: &Arc<Hub>, delivery: Delivery) {
        let mut all = self.lanes.borrow_mut();
        let namespace = delivery.event.namespace().unwrap_or_default();
        // A dead letter of an `on` handler goes back to the handlers' lane.
        let whose = delivery
            .only
            .filter(|id| self.track.pending.borrow().contains_key(id));
        let theirs = all.entry(whose).or_default();
        if let Some(queue) = theirs.get(namespace) {
            queue.borrow_mut().push_back(delivery);
            return;
        }
        let lane = (whose, namespace.to_owned());
        let queue = Rc::new(RefCell::new(VecDeque::from([delivery])));
        theirs.insert(lane.1.clone(), queue.clone());
        let lanes = self.lanes.clone();
        let track = self.track.clone();
        ampd_rt::spawn(run_lane(hub.clone(), lanes, track, lane, queue)).detach();
    }
}

/// Delivers one namespace's events in order until its queue is empty, then ends (the
/// next event of the namespace starts a new lane).
async fn run_lane(
    hub: Arc<Hub>,
    lanes: Rc<RefCell<LaneMap>>,
    track: Rc<Track>,
    lane: (Option<HandlerId>, String),
    queue: Lane,
) {
    loop {
        let next = queue.borrow_mut().pop_front();
        let Some(delivery) = next else {
            if let Some(theirs) = lanes.borrow_mut().get_mut(&lane.0) {
                theirs.remove(&lane.1);
            }
            return;
        };
        deliver(&hub, &track, delivery).await;
    }
}

/// Runs one event through its handlers, in registration order, each retried until it
/// succeeds or is dead-lettered.
async fn deliver(hub: &Hub, track: &Track, delivery: Delivery) {
    let handlers = hub
        .handlers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let event = &delivery.event;
    let chosen = handlers.iter().filter(|h| {
        let whose = match delivery.only {
            Some(id) => id == h.id,
            None => h.durable.is_none(),
        };
        whose && h.filters.matches(event.name, event.item.key())
    });
    for h in chosen {
        let handler = h.handler().await;
        run_handler(hub, h, &handler, event).await;
        if let (Some(_), Some(seq)) = (&h.durable, delivery.seq) {
            track.done(h.id, seq);
        }
    }
}

/// Runs `handler` (`h`'s) on `event` until it succeeds or is dead-lettered.
async fn run_handler(hub: &Hub, h: &Registered, handler: &Handler, event: &Event) {
    {
        let mut delay = hub.retry.first;
        let mut first_failure = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A panic, whether in the call or in the future it returns, is a failure
            // like any other: the thread and the other lanes go on.
            let call =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(event.clone())));
            let outcome = match call {
                Ok(run) => std::panic::AssertUnwindSafe(run).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            let error = match outcome {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e,
                Err(_) => "the handler panicked".to_owned(),
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let left = hub.retry.give_up_after.saturating_sub(since.elapsed());
            if left.is_zero() {
                tracing::warn!(
                    "event {} of {:?}: handler {:?} failed {attempts} times over {:?}, \
                     dead-lettered: {error}",
                    event.name,
                    event.item.key(),
                    h.id,
                    hub.retry.give_up_after
                );
                hub.add_dead_letters([DeadLetter {
                    handler: h.id,
                    event: event.clone(),
                    error,
                    attempts,
                }]);
                break;
            }
            ampd_rt::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(hub.retry.max);
        }
    }
}
