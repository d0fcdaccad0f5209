//! Named subscriptions over the wire (PROTOCOL.md "Events"), one registry per
//! environment.
//!
//! A subscription is one durable subscription of the environment's database
//! (`Db::subscribe`), so it gets the engine's guarantees as they are: the changes its
//! filters pick, each namespace's in commit order and one at a time, retries with
//! backoff, dead letters, and (with a data folder) a position that survives restarts.
//! What its handler does is hand the event to one of the subscription's connections (a
//! push frame, round robin) and wait for that connection's `ack`: the ack's error, the
//! connection closing first, or no ack within the ack timeout is a failure, which the
//! engine retries, so an event unacknowledged for any reason is delivered again (at
//! least once). With no connection subscribed the handler waits for one: the events
//! queue in the subscription's lanes meanwhile. At start the registry takes over the
//! subscriptions the database kept ([`Subscriptions::resume`]).
//!
//! The handler runs on the thread of the shard that made the event; connections live
//! on the shard threads. Pushes cross by an unbounded channel per connection (bounded
//! in practice: one event per namespace and subscription is out at a time), acks by a
//! oneshot per delivery.

use ampd_engine::{Db, Error, ErrorCode, Event, HandlerId, Value};
use futures::channel::{mpsc, oneshot};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

/// The subscriptions of one environment.
pub struct Subscriptions {
    db: Db,
    ack_timeout: Duration,
    state: Mutex<State>,
    /// Held while a subscription is opened (across the database's `subscribe`), so
    /// two connections opening one name make one subscription.
    opening: futures::lock::Mutex<()>,
    next_delivery: AtomicU64,
    next_consumer: AtomicU64,
}

#[derive(Default)]
struct State {
    by_name: HashMap<String, Arc<Subscription>>,
    /// Deliveries waiting for their ack: the consumer they went to, and the handler
    /// waiting.
    waiting: HashMap<u64, (u64, oneshot::Sender<Result<(), String>>)>,
}

struct Subscription {
    filters: Vec<String>,
    /// Set once the database has opened it.
    handler: std::sync::OnceLock<HandlerId>,
    consumers: Mutex<Vec<Consumer>>,
    /// Round robin over `consumers`.
    turn: AtomicUsize,
    /// Lanes waiting for a consumer to subscribe.
    idle: Mutex<Vec<Waker>>,
}

#[derive(Clone)]
struct Consumer {
    id: u64,
    /// The id of the `subscribe` request: every push of this subscription on this
    /// connection carries it.
    request: u32,
    pushes: mpsc::UnboundedSender<Push>,
}

/// An event on its way to a connection, which frames it into its output as a push
/// answering `request` (its `subscribe`): `event` is the event already in the wire's
/// value encoding.
pub struct Push {
    pub request: u32,
    pub delivery: u64,
    pub event: Vec<u8>,
}

/// One connection's side: where its pushes arrive, and its identity for leaving.
pub struct Member {
    pub id: u64,
    pub pushes: mpsc::UnboundedReceiver<Push>,
    sender: mpsc::UnboundedSender<Push>,
}

impl Member {
    /// What a subscription keeps of the member: its id and where its pushes go.
    pub fn handle(&self) -> (u64, mpsc::UnboundedSender<Push>) {
        (self.id, self.sender.clone())
    }
}

impl Subscriptions {
    pub fn new(db: Db, ack_timeout: Duration) -> Subscriptions {
        Subscriptions {
            db,
            ack_timeout,
            state: Mutex::new(State::default()),
            opening: futures::lock::Mutex::new(()),
            next_delivery: AtomicU64::new(1),
            next_consumer: AtomicU64::new(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection's membership, made when it first subscribes.
    pub fn member(&self) -> Member {
        let (sender, pushes) = mpsc::unbounded();
        Member {
            id: self.next_consumer.fetch_add(1, Ordering::Relaxed),
            pushes,
            sender,
        }
    }

    /// Takes over the subscriptions the database kept (a restart): each gets its
    /// handler, and its events (those it had not finished with first) wait for a
    /// connection. One that lost its position is left to fail its next `subscribe`.
    pub async fn resume(self: &Arc<Self>) {
        for kept in self.db.subscriptions() {
            let (name, filters) = (kept.name, kept.filters);
            match self.open(&name, filters).await {
                Ok(_) => tracing::info!("subscription {name:?} resumed"),
                Err(e) => tracing::error!("subscription {name:?}: {}", e.message()),
            }
        }
    }

    /// `subscribe`: opens subscription `name` with `filters`, or joins it (with the
    /// same filters), for `member`'s connection, whose pushes carry `request`.
    pub async fn subscribe(
        self: Arc<Self>,
        name: String,
        filters: Vec<String>,
        member: (u64, mpsc::UnboundedSender<Push>),
        request: u32,
    ) -> Result<(), Error> {
        let sub = self.open(&name, filters).await?;
        let (id, pushes) = member;
        lock(&sub.consumers).push(Consumer {
            id,
            request,
            pushes,
        });
        for waker in lock(&sub.idle).drain(..) {
            waker.wake();
        }
        Ok(())
    }

    /// The subscription `name` of the registry, opened in the database (with its
    /// handler) if it is not there yet.
    async fn open(
        self: &Arc<Self>,
        name: &str,
        filters: Vec<String>,
    ) -> Result<Arc<Subscription>, Error> {
        let _one_at_a_time = self.opening.lock().await;
        if let Some(sub) = self.state().by_name.get(name).cloned() {
            ampd_engine::subscriptions::check_filters(name, &sub.filters, &filters)?;
            return Ok(sub);
        }
        let sub = Arc::new(Subscription {
            filters: filters.clone(),
            handler: std::sync::OnceLock::new(),
            consumers: Mutex::new(Vec::new()),
            turn: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        });
        // The handler finds its subscription by name; it is in the registry before
        // the database can call the handler.
        self.state().by_name.insert(name.to_owned(), sub.clone());
        let subs = Arc::downgrade(self);
        let key = name.to_owned();
        let handler = move |event: Event| {
            let subs = subs.clone();
            let key = key.clone();
            async move {
                let subs = subs
                    .upgrade()
                    .ok_or_else(|| "the server is stopping".to_owned())?;
                let sub = subs.state().by_name.get(&key).cloned();
                let sub = sub.ok_or_else(|| "the subscription is gone".to_owned())?;
                subs.deliver(&sub, &event).await
            }
        };
        match self.db.subscribe(name, &filters, handler).await {
            Ok(id) => {
                let _ = sub.handler.set(id);
                Ok(sub)
            }
            Err(e) => {
                self.state().by_name.remove(name);
                Err(e)
            }
        }
    }

    /// `unsubscribe`: removes subscription `name`; false if there was none.
    pub async fn unsubscribe(&self, name: &str) -> Result<bool, Error> {
        let _one_at_a_time = self.opening.lock().await;
        let removed = self.db.unsubscribe(name)?;
        let gone = self.state().by_name.remove(name);
        if let Some(sub) = gone {
            // Its waiting lanes end (their handler is gone from the database).
            for waker in lock(&sub.idle).drain(..) {
                waker.wake();
            }
        }
        Ok(removed)
    }

    /// Pushes `event` to a consumer of `sub` and waits for its ack.
    async fn deliver(&self, sub: &Subscription, event: &Event) -> Result<(), String> {
        let consumer = sub.next_consumer().await;
        let delivery = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let (done, acked) = oneshot::channel();
        self.state().waiting.insert(delivery, (consumer.id, done));
        let mut encoded = Vec::with_capacity(256);
        // Writes into a Vec cannot fail.
        let _ = event.write_msgpack(&mut encoded);
        let push = Push {
            request: consumer.request,
            delivery,
            event: encoded,
        };
        if consumer.pushes.unbounded_send(push).is_err() {
            self.state().waiting.remove(&delivery);
            return Err("the connection closed before the event was sent".into());
        }
        let timeout = std::pin::pin!(ampd_rt::time::sleep(self.ack_timeout));
        match futures::future::select(acked, timeout).await {
            futures::future::Either::Left((Ok(result), _)) => result,
            futures::future::Either::Left((Err(_), _)) => {
                Err("the connection closed before acknowledging the event".into())
            }
            futures::future::Either::Right(_) => {
                self.state().waiting.remove(&delivery);
                Err(format!("no ack within {:?}", self.ack_timeout))
            }
        }
    }

    /// `ack`: the client's word on `delivery` (ignored if nobody waits for it).
    pub fn ack(&self, member: u64, delivery: u64, error: Option<String>) {
        let mut state = self.state();
        if state
            .waiting
            .get(&delivery)
            .is_some_and(|(m, _)| *m == member)
        {
            if let Some((_, done)) = state.waiting.remove(&delivery) {
                let _ = done.send(error.map_or(Ok(()), Err));
            }
        }
    }

    /// A connection closed: it leaves every subscription, and the events it had not
    /// acknowledged fail (to be delivered again).
    pub fn leave(&self, member: u64) {
        let mut state = self.state();
        for sub in state.by_name.values() {
            lock(&sub.consumers).retain(|c| c.id != member);
        }
        // Dropping the senders fails the waiting handlers at once.
        state.waiting.retain(|_, (m, _)| *m != member);
    }
}

impl Subscriptions {
    /// `dead_letters`: subscription `name`'s dead letters, as JSON; with `replay`,
    /// delivered again.
    pub fn dead_letters(&self, name: &str, replay: bool) -> Result<Value, Error> {
        let handler = self
            .state()
            .by_name
            .get(name)
            .and_then(|s| s.handler.get().copied())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidQuery,
                    format!("no subscription named {name:?}"),
                )
            })?;
        let letters = if replay {
            self.db.replay_dead_letters(Some(handler))
        } else {
            let all = self.db.dead_letters();
            all.into_iter().filter(|d| d.handler == handler).collect()
        };
        Ok(Value::Array(
            letters
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "event": d.event.to_json(),
                        "error": d.error,
                        "attempts": d.attempts,
                    })
                })
                .collect(),
        ))
    }
}

impl Subscription {
    /// The next consumer in turn, once there is one.
    async fn next_consumer(&self) -> Consumer {
        std::future::poll_fn(|cx| {
            // Held while the waker is registered, so a consumer joining in between
            // cannot be missed.
            let consumers = lock(&self.consumers);
            let n = consumers.len();
            let turn = (n > 0).then(|| self.turn.fetch_add(1, Ordering::Relaxed) % n);
            match turn.and_then(|t| consumers.get(t)) {
                Some(c) => Poll::Ready(c.clone()),
                None => {
                    lock(&self.idle).push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
