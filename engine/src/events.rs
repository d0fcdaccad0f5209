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
//! Embedded events are not durable: a handler sees the changes committed while it is
//! registered, and closing the database drops what is still queued or retrying.

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
}

impl Event {
    pub(crate) fn created(item: Item) -> Event {
        Event {
            name: EventName::Created,
            item,
            previous: None,
            expired: false,
        }
    }

    pub(crate) fn updated(item: Item, previous: Item) -> Event {
        Event {
            name: EventName::Updated,
            item,
            previous: Some(previous),
            expired: false,
        }
    }

    pub(crate) fn deleted(item: Item, expired: bool) -> Event {
        Event {
            name: EventName::Deleted,
            previous: Some(item.clone()),
            item,
            expired,
        }
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
        Value::Object(m)
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

struct Registered {
    id: HandlerId,
    filters: Filters,
    handler: Handler,
}

/// An event on its way, to every matching handler or (a replayed dead letter) to one.
pub(crate) struct Delivery {
    event: Event,
    only: Option<HandlerId>,
}

impl Delivery {
    /// A dead letter delivered again, to the handler it failed in.
    pub fn retry(letter: &DeadLetter) -> Delivery {
        Delivery {
            event: letter.event.clone(),
            only: Some(letter.handler),
        }
    }
}

/// The handlers and the dead letters, shared by every shard.
pub(crate) struct Hub {
    /// Whether any handler is registered: shards build no events otherwise.
    active: AtomicBool,
    /// In registration order.
    handlers: RwLock<Vec<Arc<Registered>>>,
    next_id: AtomicU64,
    dead: Mutex<Vec<DeadLetter>>,
    retry: Retry,
}

impl Hub {
    pub fn new(retry: Retry) -> Hub {
        Hub {
            active: AtomicBool::new(false),
            handlers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            dead: Mutex::new(Vec::new()),
            retry,
        }
    }

    /// Whether shards should make events.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn register<F, Fut, E>(&self, filters: Filters, handler: F) -> HandlerId
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        let id = HandlerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let handler: Handler = Box::new(move |event| {
            let run = handler(event);
            async move { run.await.map_err(|e| e.to_string()) }.boxed_local()
        });
        let mut handlers = self.handlers.write().unwrap_or_else(|p| p.into_inner());
        handlers.push(Arc::new(Registered {
            id,
            filters,
            handler,
        }));
        self.active.store(true, Ordering::Release);
        id
    }

    /// Removes a handler; false if it was not registered.
    pub fn unregister(&self, id: HandlerId) -> bool {
        let mut handlers = self.handlers.write().unwrap_or_else(|p| p.into_inner());
        let before = handlers.len();
        handlers.retain(|h| h.id != id);
        self.active.store(!handlers.is_empty(), Ordering::Release);
        handlers.len() != before
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the dead letters of `handler` (all of them: `None`) off the list.
    pub fn take_dead_letters(&self, handler: Option<HandlerId>) -> Vec<DeadLetter> {
        let mut all = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let (chosen, kept) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|d| handler.is_none_or(|h| h == d.handler));
        *all = kept;
        chosen
    }
}

/// One shard's lanes: namespace (`""` for simple keys) to the events waiting in it.
/// A lane's task runs while its queue has events and removes the lane when it empties.
#[derive(Default)]
pub(crate) struct Lanes(Rc<RefCell<HashMap<String, Lane>>>);

/// The events waiting in one namespace's lane.
type Lane = Rc<RefCell<VecDeque<Delivery>>>;

impl Lanes {
    /// Queues a committed change's event on its namespace's lane (on the calling
    /// shard's executor).
    pub fn publish(&self, hub: &Arc<Hub>, event: Event) {
        self.deliver(hub, Delivery { event, only: None });
    }

    /// Queues a delivery, starting its lane's task if the lane was idle.
    pub fn deliver(&self, hub: &Arc<Hub>, delivery: Delivery) {
        let mut all = self.0.borrow_mut();
        let namespace = delivery.event.namespace().unwrap_or_default();
        if let Some(queue) = all.get(namespace) {
            queue.borrow_mut().push_back(delivery);
            return;
        }
        let lane = namespace.to_owned();
        let queue = Rc::new(RefCell::new(VecDeque::from([delivery])));
        all.insert(lane.clone(), queue.clone());
        let lanes = self.0.clone();
        ampd_rt::spawn(run_lane(hub.clone(), lanes, lane, queue)).detach();
    }
}

/// Delivers one namespace's events in order until its queue is empty, then ends (the
/// next event of the namespace starts a new lane).
async fn run_lane(
    hub: Arc<Hub>,
    lanes: Rc<RefCell<HashMap<String, Lane>>>,
    lane: String,
    queue: Lane,
) {
    loop {
        let next = queue.borrow_mut().pop_front();
        let Some(delivery) = next else {
            lanes.borrow_mut().remove(&lane);
            return;
        };
        deliver(&hub, delivery).await;
    }
}

/// Runs one event through its handlers, in registration order, each retried until it
/// succeeds or is dead-lettered.
async fn deliver(hub: &Hub, delivery: Delivery) {
    let handlers = hub
        .handlers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let event = &delivery.event;
    let chosen = handlers.iter().filter(|h| {
        delivery.only.is_none_or(|id| id == h.id) && h.filters.matches(event.name, event.item.key())
    });
    for h in chosen {
        let mut delay = hub.retry.first;
        let mut first_failure = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A panic, whether in the call or in the future it returns, is a failure
            // like any other: the thread and the other lanes go on.
            let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (h.handler)(event.clone())
            }));
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
                hub.dead
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(DeadLetter {
                        handler: h.id,
                        event: event.clone(),
                        error,
                        attempts,
                    });
                break;
            }
            ampd_rt::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(hub.retry.max);
        }
    }
}
