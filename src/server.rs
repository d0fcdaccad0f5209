//! `ampd serve`: the listeners, the limits, deadlines and shutdown.
//!
//! Every shard's executor (of the first environment's database) listens on the same
//! port (`SO_REUSEPORT`, so the kernel spreads connections over the cores) and serves
//! the connections it accepts on its own thread, one task each ([`Connection`]): reads
//! go straight to the lock-free indexes, writes to a key this shard owns apply here,
//! other writes are handed to their shard.
//!
//! Deadlines: the handshake and a partly received frame must complete within
//! `frame_timeout` of their first byte; a connection with nothing in flight and nothing
//! received for `idle_timeout` is closed. A frame that declares more than the limit or
//! does not decode gets an error frame, then the connection closes. Nothing a peer sends
//! can make the server allocate more than one frame's limit per connection.

use crate::connection::Connection;
use crate::env::Envs;
use crate::latency;
use ampd_engine::{Db, Error, ErrorCode};
use ampd_rt::net::TcpListener;
use ampd_wire::frame::{self, Opcode};
use bytes::BytesMut;
use futures::future::{Either, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The settings of `ampd serve` that the connection loop uses.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Past this much allocated memory, writes are refused with `memory_limit`.
    pub max_memory_bytes: Option<u64>,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
}

/// What every executor of the server shares.
pub struct Server {
    pub envs: Envs,
    pub limits: Limits,
    connections: AtomicUsize,
    /// Each executor's service-time histograms.
    latencies: std::sync::Mutex<Vec<latency::Shared>>,
    pub stats: Stats,
}

/// Counters of the whole server.
#[derive(Default)]
pub struct Stats {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    pub requests: AtomicU64,
    pub bad_frames: AtomicU64,
}

/// Releases a connection's place when the connection ends, however it ends.
pub struct ConnectionSlot(Arc<Server>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    pub fn new(envs: Envs, limits: Limits) -> Server {
        Server {
            envs,
            limits,
            connections: AtomicUsize::new(0),
            latencies: Default::default(),
            stats: Stats::default(),
        }
    }

    /// The answer to `stats`: the environment's counters (`command`'s), and the
    /// server's: connections, requests, bad frames, and the service time of each
    /// operation, all executors merged (see [`latency::summary`]).
    pub fn stats_json(&self, db: &Db) -> serde_json::Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut stats = match crate::command::read(db, frame::Request::Stats) {
            Ok(crate::command::Reply::Json(stats)) => stats,
            _ => serde_json::json!({}),
        };
        let all = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        let server = serde_json::json!({
            "connections": self.connections.load(Ordering::Relaxed),
            "connections_accepted": load(&self.stats.connections_accepted),
            "connections_refused": load(&self.stats.connections_refused),
            "requests": load(&self.stats.requests),
            "bad_frames": load(&self.stats.bad_frames),
            "ops": latency::summary(&all),
        });
        if let (Some(stats), serde_json::Value::Object(server)) = (stats.as_object_mut(), server) {
            stats.extend(server);
        }
        stats
    }

    /// Whether the allocations counted by the binary's allocator pass `--max-memory`
    /// (one relaxed load: the count is kept current by every allocation).
    pub fn memory_over(&self) -> bool {
        self.limits
            .max_memory_bytes
            .is_some_and(|max| crate::memory::allocated_bytes() > max)
    }
}

/// The shutdown signal every listener and connection watches.
pub type ShutdownSignal = Shared<futures::channel::oneshot::Receiver<()>>;

/// Why a connection was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its deadline passed (handshake, partial frame, or idle).
    Deadline,
    /// The server is shutting down.
    Shutdown,
}

/// What a connection shares with its executor's sweeper: its deadline, and the flag
/// the sweeper (or shutdown) raises. One sweeper per executor checks every
/// connection's deadline a few times per timeout, so a request costs no timer: a
/// connection only stores its next deadline, computed from the sweeper's clock.
#[derive(Default)]
pub struct Control {
    pub deadline: Cell<Option<Instant>>,
    stop: Cell<Option<Stop>>,
    waker: RefCell<Option<Waker>>,
}

impl Control {
    fn raise(&self, stop: Stop) {
        self.stop.set(Some(stop));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves when the sweeper or shutdown raises the flag; takes it down.
    pub fn stopped(&self) -> impl Future<Output = Stop> + '_ {
        futures::future::poll_fn(move |cx| match self.stop.take() {
            Some(stop) => Poll::Ready(stop),
            None => {
                let mut waker = self.waker.borrow_mut();
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        })
    }
}

/// One executor's connections, as the sweeper sees them, and its coarse clock.
pub struct Sweeper {
    controls: RefCell<Vec<Weak<Control>>>,
    /// The time of the last sweep: deadlines are computed from it, at the sweep's
    /// resolution, without reading the clock per request.
    pub now: Cell<Instant>,
    every: Duration,
}

impl Sweeper {
    fn new(limits: &Limits) -> Sweeper {
        let shortest = limits.frame_timeout.min(limits.idle_timeout);
        Sweeper {
            controls: RefCell::default(),
            now: Cell::new(Instant::now()),
            every: (shortest / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        }
    }

    pub fn register(&self) -> Rc<Control> {
        let control = Rc::new(Control::default());
        self.controls.borrow_mut().push(Rc::downgrade(&control));
        control
    }

    /// Raises `Deadline` on every connection whose deadline has passed, forgets the
    /// connections that ended.
    fn sweep(&self) {
        let now = Instant::now();
        self.now.set(now);
        self.controls.borrow_mut().retain(|c| match c.upgrade() {
            Some(c) => {
                if c.deadline.get().is_some_and(|d| d <= now) {
                    c.deadline.set(None);
                    c.raise(Stop::Deadline);
                }
                true
            }
            None => false,
        });
    }

    fn shut_down(&self) {
        for c in self.controls.borrow().iter().filter_map(Weak::upgrade) {
            c.raise(Stop::Shutdown);
        }
    }
}

/// Accepts and serves connections on the calling executor until `shutdown`; then lets
/// the open connections finish what they have in flight.
pub async fn listen(server: Arc<Server>, mut listener: TcpListener, shutdown: ShutdownSignal) {
    let latencies = latency::OpLatencies::shared();
    if let Ok(mut all) = server.latencies.lock() {
        all.push(latencies.clone());
    }
    let sweeper = Rc::new(Sweeper::new(&server.limits));
    let sweeping = sweeper.clone();
    let sweep_task = ampd_rt::spawn(async move {
        loop {
            ampd_rt::time::sleep(sweeping.every).await;
            sweeping.sweep();
        }
    });
    let mut connections = FuturesUnordered::new();
    loop {
        let accepted = match futures::future::select(
            std::pin::pin!(listener.accept()),
            shutdown.clone(),
        )
        .await
        {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait a little instead of spinning.
                eprintln!("ampd: accept: {e}");
                ampd_rt::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = server.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ConnectionSlot(server.clone());
        if open > server.limits.max_connections {
            server
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            let max = server.limits.max_connections;
            ampd_rt::spawn(async move {
                let error = Error::new(
                    ErrorCode::Busy,
                    format!("the server is at its connection limit ({max}); try again later"),
                );
                let mut out = BytesMut::new();
                frame::encode_error(0, Opcode::Hello as u16, &error, &mut out);
                let mut stream = stream;
                let (_, _) = stream.write_all(out).await;
                let _ = stream.shutdown().await;
                drop(slot);
            })
            .detach();
            continue;
        }
        server
            .stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        while let Some(Some(_)) = connections.next().now_or_never() {}
        connections.push(ampd_rt::spawn(Connection::serve(
            server.clone(),
            latencies.clone(),
            sweeper.clone(),
            stream,
            slot,
        )));
    }
    sweeper.shut_down();
    while connections.next().await.is_some() {}
    sweep_task.cancel();
}

/// Serves on every shard executor of `front`, all on `addr` once it is claimed
/// ([`ampd_rt::net::claim`]: no other server listens there; a port of 0 picks one). Returns the bound address and the
/// listeners' completions.
pub fn start(
    server: Arc<Server>,
    front: &Db,
    addr: SocketAddr,
    shutdown: ShutdownSignal,
) -> Result<
    (
        SocketAddr,
        Vec<impl std::future::Future<Output = Result<(), Error>>>,
    ),
    Error,
> {
    let mut bound = ampd_rt::net::claim(addr)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("cannot listen on {addr}: {e}")))?;
    let mut listeners = Vec::new();
    for shard in 0..front.shard_count() {
        let (ready, is_ready) = std::sync::mpsc::channel();
        let (server, shutdown) = (server.clone(), shutdown.clone());
        listeners.push(front.spawn_on(shard, move || async move {
            match TcpListener::bind(bound) {
                Ok(listener) => {
                    let _ = ready.send(listener.local_addr().map_err(|e| e.to_string()));
                    listen(server, listener, shutdown).await;
                }
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                }
            }
        }));
        bound = is_ready
            .recv()
            .map_err(|_| Error::new(ErrorCode::Internal, "a shard stopped while binding"))?
            .map_err(|e| {
                Error::new(ErrorCode::Internal, format!("cannot listen on {addr}: {e}"))
            })?;
    }
    Ok((bound, listeners))
}
