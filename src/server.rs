//! `ampd serve`: the connection loop.
//!
//! Every shard's executor (of the first environment's database) listens on the same
//! port (`SO_REUSEPORT`, so the kernel spreads connections over the cores) and serves
//! the connections it accepts on its own thread: reads go straight to the lock-free
//! indexes, writes to a key this shard owns apply here, other writes are handed to
//! their shard. One task per connection:
//!
//! 1. decode every whole frame in the input buffer (`wire::frame`); reads are answered
//!    at once into the output buffer; writes start and join the connection's in-flight
//!    set;
//! 2. move the answers of finished writes into the output buffer;
//! 3. write the output buffer to the socket;
//! 4. wait for more input, a finished write, a deadline or shutdown.
//!
//! Requests of one connection take effect in the order they were sent: a read that
//! arrives while earlier writes of its connection are in flight waits for them (the
//! frames after it stay undecoded meanwhile), so a pipeline reads its own writes.
//! Writes do not wait for each other: each shard applies them in arrival order, and
//! their answers go out as they finish (matched by request id).
//!
//! Deadlines: the handshake and a partly received frame must complete within
//! `frame_timeout` of their first byte; a connection with nothing in flight and nothing
//! received for `idle_timeout` is closed. A frame that declares more than the limit or
//! does not decode gets an error frame, then the connection closes. Nothing a peer sends
//! can make the server allocate more than one frame's limit per connection.

use crate::command::{self, Reply};
use crate::env::Envs;
use crate::latency;
use ampd_engine::{Db, Error, ErrorCode};
use ampd_wire::frame::{self, Opcode, Request, HEADER_LEN};
use bytes::BytesMut;
use futures::future::{Either, LocalBoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Bytes read from a socket at most at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Room kept for a read when the input buffer is short of it (small, so that thousands
/// of idle connections cost little).
const READ_ROOM_MIN_BYTES: usize = 4 * 1024;
/// A buffer grown past this (by a large frame or answer) is let go once it is empty.
const BUFFER_KEEP_BYTES: usize = 64 * 1024;
/// Answers gathered before they are written out (and before more input is decoded).
const OUTPUT_FLUSH_BYTES: usize = 1 << 20;
/// Writes of one connection in flight at once; past it, decoding waits.
const IN_FLIGHT_MAX: usize = 1024;

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
    requests: AtomicU64,
    bad_frames: AtomicU64,
}

impl Stats {
    pub fn accepted(&self) -> u64 {
        self.connections_accepted.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.connections_refused.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }
}

/// Releases a connection's place when the connection ends, however it ends.
struct ConnectionSlot(Arc<Server>);

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

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Service times per operation, all executors merged (see [`latency::summary`]).
    pub fn latencies(&self) -> serde_json::Value {
        let all = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        latency::summary(&all)
    }

    /// Whether the allocations counted by the binary's allocator pass `--max-memory`
    /// (one relaxed load: the count is kept current by every allocation).
    fn memory_over(&self) -> bool {
        self.limits
            .max_memory_bytes
            .is_some_and(|max| crate::memory::allocated_bytes() > max)
    }
}

/// The process's resident set size, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The shutdown signal every listener and connection watches.
pub type ShutdownSignal = Shared<futures::channel::oneshot::Receiver<()>>;

/// Binds `addr` on the calling executor.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Why a connection was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
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
struct Control {
    deadline: Cell<Option<Instant>>,
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
    fn stopped(&self) -> impl Future<Output = Stop> + '_ {
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
struct Sweeper {
    controls: RefCell<Vec<Weak<Control>>>,
    /// The time of the last sweep: deadlines are computed from it, at the sweep's
    /// resolution, without reading the clock per request.
    now: Cell<Instant>,
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

    fn register(&self) -> Rc<Control> {
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
pub async fn listen(server: Arc<Server>, listener: TcpListener, shutdown: ShutdownSignal) {
    let latencies = latency::OpLatencies::shared();
    if let Ok(mut all) = server.latencies.lock() {
        all.push(latencies.clone());
    }
    let sweeper = Rc::new(Sweeper::new(&server.limits));
    let sweeping = sweeper.clone();
    let sweep_task = glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(sweeping.every).await;
            sweeping.sweep();
        }
    })
    .detach();
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
                glommio::timer::sleep(Duration::from_millis(50)).await;
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
            glommio::spawn_local(async move {
                let error = Error::new(
                    ErrorCode::Busy,
                    format!("the server is at its connection limit ({max}); try again later"),
                );
                let mut out = BytesMut::new();
                frame::encode_error(0, Opcode::Hello as u16, &error, &mut out);
                let mut stream = stream;
                let _ = stream.write_all(&out).await;
                let _ = stream.close().await;
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
        let task = glommio::spawn_local(serve_connection(
            server.clone(),
            latencies.clone(),
            sweeper.clone(),
            stream,
            slot,
        ));
        connections.push(task.detach());
    }
    sweeper.shut_down();
    while connections.next().await.is_some() {}
    sweep_task.cancel();
}

/// One connection: handshake, then requests until the peer leaves, a deadline passes,
/// a frame is bad, or the server shuts down.
async fn serve_connection(
    server: Arc<Server>,
    latencies: latency::Shared,
    sweeper: Rc<Sweeper>,
    mut stream: TcpStream,
    _slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    // A peer that stops reading its answers blocks our writes: after the idle timeout
    // the write fails and the connection ends.
    let _ = stream.set_write_timeout(Some(server.limits.idle_timeout));
    let control = sweeper.register();
    let mut conn = Connection {
        server,
        latencies,
        db: None,
        input: BytesMut::new(),
        output: BytesMut::new(),
        in_flight: FuturesUnordered::new(),
        closing: false,
    };
    // When the frame being received (or the handshake) started, on the sweeper's
    // clock; the handshake's from the start.
    let mut frame_started = Some(sweeper.now.get());
    let mut shutting_down = false;
    loop {
        conn.decode_all();
        while let Some(Some(answer)) = conn.in_flight.next().now_or_never() {
            conn.output.extend_from_slice(&answer);
        }
        if !conn.output.is_empty() {
            if stream.write_all(&conn.output).await.is_err() {
                return conn.finish_in_flight().await;
            }
            conn.output.clear();
        }
        for buffer in [&mut conn.input, &mut conn.output] {
            if buffer.is_empty() && buffer.capacity() > BUFFER_KEEP_BYTES {
                *buffer = BytesMut::new();
            }
        }
        if conn.closing || (shutting_down && conn.in_flight.is_empty()) {
            let _ = stream.close().await;
            return conn.finish_in_flight().await;
        }
        let waiting = conn.whole_frame().is_some();
        if waiting && !conn.blocked() && conn.in_flight.len() < IN_FLIGHT_MAX && !shutting_down {
            // Decoding paused only to write the answers out: go on.
            continue;
        }
        // The frame deadline runs while a frame (or the handshake) is partly received,
        // not while a whole frame waits for the writes before it; the idle deadline
        // while nothing is in flight.
        if conn.db.is_some() && (conn.input.is_empty() || waiting) {
            frame_started = None;
        } else if !conn.input.is_empty() {
            frame_started.get_or_insert_with(|| sweeper.now.get());
        }
        let limits = &conn.server.limits;
        control.deadline.set(match frame_started {
            Some(started) => Some(started + limits.frame_timeout),
            None if conn.in_flight.is_empty() => Some(sweeper.now.get() + limits.idle_timeout),
            None => None,
        });
        // More input is read only when the input holds no whole frame (one that waits
        // for earlier writes, or for room among the writes in flight), so the input
        // never holds more than one frame and a read's worth; and not once shutdown
        // began.
        let may_read = !shutting_down && !waiting;
        // The read goes straight into the input buffer's free room (zeroed, as safe
        // code must), which is cut back to what arrived afterwards.
        let filled = conn.input.len();
        if may_read {
            conn.input.reserve(READ_ROOM_MIN_BYTES);
            let room = (conn.input.capacity() - filled).min(READ_CHUNK_BYTES);
            conn.input.resize(filled + room, 0);
        }
        let event = {
            let in_flight = &mut conn.in_flight;
            let room = &mut conn.input[filled..];
            let read = async {
                if may_read {
                    stream.read(room).await
                } else {
                    futures::future::pending().await
                }
            };
            let finished = async {
                if in_flight.is_empty() {
                    futures::future::pending().await
                } else {
                    in_flight.next().await
                }
            };
            let (finished, read, stopped) =
                (finished.fuse(), read.fuse(), control.stopped().fuse());
            futures::pin_mut!(finished, read, stopped);
            futures::select_biased! {
                answer = finished => Event::Answer(answer),
                read = read => Event::Read(read),
                stop = stopped => Event::Stop(stop),
            }
        };
        let arrived = match event {
            Event::Read(Ok(n)) => n,
            _ => 0,
        };
        conn.input.truncate(filled + arrived);
        match event {
            Event::Answer(answer) => conn.output.extend_from_slice(&answer.unwrap_or_default()),
            // The peer left or broke the connection: its writes still stand.
            Event::Read(Ok(0) | Err(_)) => return conn.finish_in_flight().await,
            Event::Read(Ok(_)) => {}
            Event::Stop(Stop::Shutdown) => shutting_down = true,
            Event::Stop(Stop::Deadline) => {
                let _ = stream.close().await;
                return conn.finish_in_flight().await;
            }
        }
    }
}

/// What a connection woke up for.
enum Event {
    Answer(Option<BytesMut>),
    Read(std::io::Result<usize>),
    Stop(Stop),
}

/// A connection's state between socket reads.
struct Connection {
    server: Arc<Server>,
    /// This executor's service-time histograms.
    latencies: latency::Shared,
    /// The environment's database, once the handshake has admitted the client.
    db: Option<Db>,
    input: BytesMut,
    output: BytesMut,
    in_flight: FuturesUnordered<LocalBoxFuture<'static, BytesMut>>,
    /// An error frame was queued; close after writing the output.
    closing: bool,
}

impl Connection {
    /// The opcode of the next frame when all of it has arrived.
    fn whole_frame(&self) -> Option<Option<Opcode>> {
        let header = frame::Header::decode(self.input.first_chunk::<HEADER_LEN>()?);
        let whole = self.input.len() - HEADER_LEN >= header.len as usize;
        whole.then(|| Opcode::from_u16(header.kind))
    }

    /// Whether the next frame must wait for the writes in flight: it is whole, and not
    /// a write.
    fn blocked(&self) -> bool {
        !self.in_flight.is_empty()
            && self
                .whole_frame()
                .is_some_and(|op| !op.is_some_and(command::is_write))
    }

    /// Waits for the writes in flight: they stand whether or not anyone hears of them.
    async fn finish_in_flight(mut self) {
        while self.in_flight.next().await.is_some() {}
    }

    /// Decodes and starts every whole frame in the input, stopping at a read that must
    /// wait for writes in flight, and when enough answers or writes are pending (so a
    /// peer that sends without reading meets TCP's back-pressure, not our memory).
    fn decode_all(&mut self) {
        // One clock read for every request decoded here (see `latency`).
        let mut decoded_at = None;
        while !self.closing
            && !self.blocked()
            && self.output.len() < OUTPUT_FLUSH_BYTES
            && self.in_flight.len() < IN_FLIGHT_MAX
        {
            match frame::decode_request(&mut self.input) {
                Ok(None) => return,
                Ok(Some((id, request))) => {
                    let at = *decoded_at.get_or_insert_with(Instant::now);
                    self.start(id, request, at)
                }
                Err(e) => {
                    self.server.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    let (id, kind) = e.reply_to();
                    frame::encode_error(id, kind, &e.into(), &mut self.output);
                    self.closing = true;
                }
            }
        }
    }

    /// Answers or starts one request; `started` is when its input began to be decoded.
    fn start(&mut self, id: u32, request: Request, started: Instant) {
        self.server.stats.requests.fetch_add(1, Ordering::Relaxed);
        let op = request.opcode();
        let kind = op as u16;
        let Some(db) = &self.db else {
            return self.handshake(id, request);
        };
        if let Request::Hello(_) = request {
            self.closing = true;
            let e = Error::new(ErrorCode::BadFrame, "the handshake was already made");
            return frame::encode_error(id, kind, &e, &mut self.output);
        }
        if command::is_write(op) {
            // Removes free memory, so they are always let through.
            if self.server.memory_over() && !matches!(request, Request::Remove(_)) {
                let e = Error::new(
                    ErrorCode::MemoryLimit,
                    format!(
                        "the server is over its memory limit ({} bytes); reads go on, writes wait until memory is freed",
                        self.server.limits.max_memory_bytes.unwrap_or(0)
                    ),
                );
                return frame::encode_error(id, kind, &e, &mut self.output);
            }
            let db = db.clone();
            let latencies = self.latencies.clone();
            self.in_flight.push(Box::pin(async move {
                let mut out = BytesMut::new();
                encode_reply(id, kind, command::write(&db, request).await, &mut out);
                latency::record(&latencies, op, started.elapsed());
                out
            }));
        } else {
            let reply = command::read(db, Some(&self.server), request);
            encode_reply(id, kind, reply, &mut self.output);
            latency::record(&self.latencies, op, started.elapsed());
        }
    }

    fn handshake(&mut self, id: u32, request: Request) {
        let kind = request.opcode() as u16;
        let Request::Hello(hello) = request else {
            self.closing = true;
            let e = Error::new(
                ErrorCode::BadFrame,
                "the first frame must be a hello (opcode 1)",
            );
            return frame::encode_error(id, kind, &e, &mut self.output);
        };
        if hello.version != frame::PROTOCOL_VERSION {
            self.closing = true;
            let e = Error::new(
                ErrorCode::BadFrame,
                format!(
                    "protocol version {} is not spoken here; this server speaks {}",
                    hello.version,
                    frame::PROTOCOL_VERSION
                ),
            );
            return frame::encode_error(id, kind, &e, &mut self.output);
        }
        match self
            .server
            .envs
            .admit(hello.env.as_deref(), hello.token.as_deref())
        {
            Ok(env) => {
                self.db = Some(env.db.clone());
                let welcome = command::welcome();
                encode_reply(id, kind, Ok(welcome), &mut self.output);
            }
            Err(e) => {
                self.closing = true;
                frame::encode_error(id, kind, &e, &mut self.output);
            }
        }
    }
}

fn encode_reply(id: u32, kind: u16, reply: Result<Reply, Error>, out: &mut BytesMut) {
    match reply {
        Ok(reply) => {
            let start = frame::begin_ok(id, kind, out);
            reply.encode_into(out);
            start.finish(out);
        }
        Err(e) => frame::encode_error(id, kind, &e, out),
    }
}

/// Serves on every shard executor of `front`, all on `addr` (a port of 0 picks one:
/// the first executor binds it, the others join it). Returns the bound address and the
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
    let mut bound = addr;
    let mut listeners = Vec::new();
    for shard in 0..front.shard_count() {
        let (ready, is_ready) = std::sync::mpsc::channel();
        let (server, shutdown) = (server.clone(), shutdown.clone());
        listeners.push(front.spawn_on(shard, move || async move {
            match bind(bound) {
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
