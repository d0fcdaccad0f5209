//! One connection, the same for ampd and Redis: decide what to send and when (open
//! loop, closed loop, a count of operations, or preload), keep up to `--pipeline`
//! requests in flight, match replies to requests, and record each latency.
//!
//! The protocol is a [`Protocol`]: it only turns a [`Request`] into bytes and bytes into
//! a [`Reply`]. Everything that is measured — pacing, the window, the clocks — is here
//! and in `event_loop.rs`, once, so ampd and Redis are measured by the same code.
//!
//! A connection does no waiting of its own: a loop thread (`event_loop.rs`) drives many
//! of them with one `epoll` and one timer, and calls in here when one is due to send
//! ([`Connection::fill`] then [`Connection::write`]), readable ([`Connection::read`]) or
//! writable again. The socket is non-blocking; bytes the socket does not take wait in
//! the write buffer for writability, so a server that stops reading can never deadlock
//! us against its replies.
//!
//! Nothing is allocated per request: keys are written into reused strings by the
//! protocol, frames into the reused write buffer, and the in-flight window is a ring
//! that keeps its capacity.
//!
//! # Cache-aside
//! With `--cache-aside` an operation is a get and, when its reply says the key is
//! missing ([`Lookup`]), a set of the key. The set cannot leave before that reply, so it
//! waits in the connection's queue of due sets, due from the reply's arrival (its
//! latency runs from there), and goes out at the next send ahead of new operations,
//! as far as the window has room: the window still bounds what is in flight, and
//! other requests in flight are not held up. A set in that queue took the place of its
//! get in the window, so the queue and the window together never pass `--pipeline`.
//!
//! With `--scan-every N` every `N`-th measured operation of the run gets a scan key
//! (`keys::ScanKeys`) instead of a key of the key space: a key no other operation
//! touches, so its get misses and its set follows as for any miss. Only its key is
//! different; it is counted with the rest (and apart as well, as a scan get).
//!
//! # One set of histograms per phase, shared
//! Every connection records into the phase's one [`Stats`] behind a mutex, locked once
//! per batch of sends or replies (uncontended: the progress line takes it once a
//! second). Histograms per connection were tried first: to stay small they had to grow
//! on demand, and the first long latency made every connection reallocate its
//! histograms at once (~0.3 ms each, in page faults), which stalled the loop for tens of
//! milliseconds at a hundred connections — a stall that then showed up as latency. The
//! shared histograms are sized once, for the whole range, before the phase starts.

use crate::keys::{is_scan, KeySpace, Rng, ScanKeys};
use crate::mix::{Op, Workload};
use crate::report::{record, Stats};
use crate::schedule::{is_missed, Schedule};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Opens a blocking TCP connection to `addr` (the first of its addresses that answers
/// within `timeout`) with Nagle off (every request is sent as soon as it is encoded)
/// and reads and writes bounded by `timeout`; each protocol then makes its own
/// handshake on it, and [`Connection::new`] makes it non-blocking.
pub fn open(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .collect();
    let mut last = format!("{addr} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(stream) => {
                let setup = stream
                    .set_nodelay(true)
                    .and_then(|()| stream.set_read_timeout(Some(timeout)))
                    .and_then(|()| stream.set_write_timeout(Some(timeout)));
                setup.map_err(|e| format!("set up the socket to {a}: {e}"))?;
                return Ok(stream);
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Reads what the (blocking) handshake stream has into `buf`: `Ok(0)` at its end. A
/// read that outlasts the stream's timeout is an error of kind `WouldBlock` or
/// `TimedOut`.
pub fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Whether an I/O error is a handshake read or write running out of time.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What to send: a measured operation on key index `key`, or a preload unit that
/// writes keys `first..end` (each with its label and, on Redis, its index entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Op { op: Op, key: u64 },
    Preload { first: u64, end: u64 },
}

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request id it answers; `None` for a protocol whose replies come in order
    /// (RESP): it answers the oldest request still open.
    pub id: Option<u32>,
    /// The refusal, if the server refused the request (`code: message`).
    pub error: Option<String>,
    /// Whether the answer is the protocol's "nothing" (ampd: `nil`; Redis: the null
    /// bulk string `$-1`), which to a get says the key is missing.
    pub missing: bool,
}

/// What a cache-aside get found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// The key is missing: the operation goes on with a set of it.
    Miss,
}

impl Lookup {
    /// What a get's reply says: `None` for a refusal, which is an error, neither a hit
    /// nor a miss.
    pub fn of(reply: &Reply) -> Option<Lookup> {
        match (&reply.error, reply.missing) {
            (Some(_), _) => None,
            (None, true) => Some(Lookup::Miss),
            (None, false) => Some(Lookup::Hit),
        }
    }
}

/// A wire protocol, as the loop needs it.
pub trait Protocol: Send + 'static {
    /// Appends `request` to `out`, tagged with `id` where the protocol carries ids, and
    /// returns how many replies it will get (a Redis preload unit is several commands).
    /// An `Err` is a bug of the generator (e.g. a frame over the limit), fatal to the
    /// connection.
    fn encode(&mut self, request: Request, id: u32, out: &mut BytesMut) -> Result<u32, String>;

    /// Decodes the reply at the front of `buf`, consuming it; `Ok(None)` while it has
    /// not all arrived. An `Err` means the stream cannot be trusted any more (the
    /// connection is dropped), including an error about the connection as a whole.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, String>;

    /// Whether replies may come out of order (then stale ones are told apart by id,
    /// and a connection survives a drain timeout).
    fn tagged(&self) -> bool;
}

/// How a phase sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Open loop at `rate` requests a second over all connections.
    Open { rate: f64 },
    /// Closed loop: each connection keeps its window full.
    Closed,
    /// Closed loop for `ops` operations over all connections (connection `i` sends
    /// its share, `ops / connections` plus one if `i < ops % connections`), recorded
    /// if `record`; the phase ends when every one is answered (`--requests`).
    Counted { ops: u64, record: bool },
    /// Write keys `0..keys` in units of `unit` keys, window full.
    Preload { keys: u64, unit: u64 },
}

impl Mode {
    /// Whether the phase ends at a time (`Phase::end`) rather than when its work is
    /// done.
    pub fn is_timed(self) -> bool {
        matches!(self, Mode::Open { .. } | Mode::Closed)
    }
}

/// Connection `index`'s share of `ops` operations over `connections`.
pub fn share(ops: u64, index: u64, connections: u64) -> u64 {
    ops / connections + u64::from(index < ops % connections)
}

/// One phase of a run, shared by every loop thread.
#[derive(Debug)]
pub struct Phase {
    pub mode: Mode,
    /// Slot 0 (open loop), or the first send (closed loop, preload).
    pub start: Instant,
    /// Replies to requests due (sent, closed loop) from here on are measured (not in
    /// a counted phase: see [`Mode::Counted`]).
    pub record_from: Instant,
    /// No request due (sent) at or after this is sent (timed phases only).
    pub end: Instant,
    pub connections: u64,
    /// Requests in flight per connection.
    pub pipeline: usize,
    pub workload: Workload,
    pub keys: Arc<KeySpace>,
    /// `--scan-every`: the run's one count of measured operations, whose every `N`-th
    /// takes a scan key.
    pub scan: Option<Arc<ScanKeys>>,
}

impl Phase {
    /// When replies still in flight stop being awaited (not in preload or a counted
    /// phase, which wait for every request; the reply watchdog still runs).
    pub fn drain_end(&self) -> Option<Instant> {
        self.mode.is_timed().then(|| self.end + DRAIN_TIMEOUT)
    }
}

/// Counters the progress line reads while a phase runs.
#[derive(Debug)]
pub struct Progress {
    /// Replies of any kind (warm-up included), for "ops in the last second".
    pub replies: AtomicU64,
    /// Refusals among measured requests.
    pub errors: AtomicU64,
    /// Keys written by preload units that have been answered.
    pub keys_loaded: AtomicU64,
    /// Refusals printed so far, across connections and phases.
    pub errors_printed: AtomicU64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            replies: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            keys_loaded: AtomicU64::new(0),
            errors_printed: AtomicU64::new(0),
        }
    }

    /// Resets the per-phase counters (not the count of printed errors).
    pub fn reset(&self) {
        self.replies.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.keys_loaded.store(0, Ordering::Relaxed);
    }
}

/// The first refusals are printed (to stderr), the rest only counted.
pub const ERRORS_PRINTED_MAX: u64 = 5;

/// After a window closes, replies still in flight are awaited this long; those that
/// do not come are counted as timeouts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with requests in flight and no reply for this long is given up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Each buffer starts this large, and the read buffer grows by this much when it runs
/// low: small enough for thousands of connections, large enough that one read takes a
/// whole batch of small replies.
const READ_CHUNK: usize = 16 * 1024;

/// The window's ring is reserved up to this many entries up front; a larger
/// `--pipeline` grows it as it fills.
const WINDOW_RESERVE_MAX: usize = 1024;

/// The phase's shared measurements; a poisoned lock (a loop thread panicked) still
/// holds sound numbers, and the panic itself is re-raised by the phase.
pub fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request in flight.
#[derive(Debug)]
struct InFlight {
    /// `None` for a preload unit.
    op: Option<Op>,
    key: u64,
    /// Keys a preload unit writes.
    keys: u64,
    /// When it was due: latency is measured from here.
    scheduled: Instant,
    /// Whether it counts (due inside the measured window).
    record: bool,
    replies_left: u32,
    done: bool,
    /// The first refusal among its replies.
    error: Option<String>,
}

/// Requests in flight, oldest first. Request ids are consecutive, so the entry of id
/// `x` is at `x - front_id`: no map. Entries answered out of order are marked done and
/// popped once everything before them is answered too.
#[derive(Debug)]
struct Window {
    entries: VecDeque<InFlight>,
    front_id: u32,
    /// Entries not done.
    open: usize,
}

impl Window {
    fn new(first_id: u32, capacity: usize) -> Window {
        Window {
            entries: VecDeque::with_capacity(capacity),
            front_id: first_id,
            open: 0,
        }
    }

    fn next_id(&self) -> u32 {
        self.front_id.wrapping_add(self.entries.len() as u32)
    }

    fn push(&mut self, entry: InFlight) -> u32 {
        // Id 0 is the server's "about the whole connection": skip it when the counter
        // wraps, with an entry that is already done.
        if self.next_id() == 0 {
            if self.entries.is_empty() {
                self.front_id = 1;
            } else {
                self.entries.push_back(placeholder());
            }
        }
        let id = self.next_id();
        self.entries.push_back(entry);
        self.open += 1;
        id
    }

    /// The oldest open request (which an in-order reply answers).
    fn oldest_open(&self) -> Option<u32> {
        let at = self.entries.iter().position(|e| !e.done)?;
        Some(self.front_id.wrapping_add(at as u32))
    }

    /// Notes one reply to request `id`; returns the request once all of its replies
    /// are in. A reply to no open request (stale, from an abandoned window) is `None`.
    fn reply(&mut self, id: u32, error: Option<String>) -> Option<InFlight> {
        let at = id.wrapping_sub(self.front_id) as usize;
        let entry = self.entries.get_mut(at)?;
        if entry.done {
            return None;
        }
        if let Some(e) = error {
            entry.error.get_or_insert(e);
        }
        entry.replies_left = entry.replies_left.saturating_sub(1);
        if entry.replies_left > 0 {
            return None;
        }
        entry.done = true;
        self.open -= 1;
        let finished = InFlight {
            error: entry.error.take(),
            ..*entry
        };
        while self.entries.front().is_some_and(|e| e.done) {
            self.entries.pop_front();
            self.front_id = self.front_id.wrapping_add(1);
        }
        Some(finished)
    }

    /// Gives up every open request: returns them, and moves past their ids so late
    /// replies to them are recognised as stale.
    fn abandon(&mut self) -> Vec<InFlight> {
        let next = self.next_id();
        let open: Vec<InFlight> = self.entries.drain(..).filter(|e| !e.done).collect();
        self.front_id = next;
        self.open = 0;
        open
    }

    /// The id the next push will get (the protocol encodes it before the push).
    fn next_id_skipping_zero(&self) -> u32 {
        // push() skips 0 (see there), so the entry gets 1.
        match self.next_id() {
            0 => 1,
            id => id,
        }
    }
}

/// The set of a key a cache-aside get found missing, waiting for room in the window.
#[derive(Debug, Clone, Copy)]
struct DueSet {
    key: u64,
    /// When the get's reply arrived: the set's latency runs from here.
    due: Instant,
    /// Whether its get was measured.
    record: bool,
}

/// A done entry that only fills the skipped id 0.
fn placeholder() -> InFlight {
    InFlight {
        op: None,
        key: 0,
        keys: 0,
        scheduled: Instant::now(),
        record: false,
        replies_left: 0,
        done: true,
        error: None,
    }
}

/// One connection: its socket, its protocol state, its window, and its course through
/// the current phase. Handed to a loop thread for each phase and back at its end.
pub struct Connection<P> {
    /// Its index among the run's connections (its share of slots and preload units).
    pub index: u64,
    stream: TcpStream,
    proto: P,
    rbuf: BytesMut,
    wbuf: BytesMut,
    window: Window,
    /// Sets of missed keys (cache-aside), oldest first, sent before new operations.
    sets: VecDeque<DueSet>,
    /// Operations of a counted phase this connection has yet to send.
    ops_left: u64,
    rng: Rng,
    /// Why the connection is gone, once it is.
    pub lost: Option<String>,
    /// This phase's slots (open loop).
    schedule: Option<Schedule>,
    /// The next preload unit (this connection takes every `connections`-th).
    next_unit: u64,
    /// When the last reply came, or the first request after a quiet spell left (the
    /// reply watchdog's clock).
    last_reply: Instant,
    /// Whether the phase may still hand this connection new requests: until the
    /// window's end (open and closed loop) or the last preload unit.
    sending: bool,
    /// Whether the window was given up at the drain timeout: late slots still waiting
    /// for room are then left unsent.
    drained: bool,
}

impl<P: Protocol> Connection<P> {
    /// A connection whose handshake is done; `first_id` is the first id after it.
    pub fn new(
        index: u64,
        stream: TcpStream,
        proto: P,
        first_id: u32,
        seed: u64,
        pipeline: usize,
    ) -> io::Result<Connection<P>> {
        stream.set_nonblocking(true)?;
        Ok(Connection {
            index,
            stream,
            proto,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            window: Window::new(first_id, pipeline.min(WINDOW_RESERVE_MAX)),
            sets: VecDeque::with_capacity(pipeline.min(WINDOW_RESERVE_MAX)),
            ops_left: 0,
            rng: Rng::new(seed, index),
            lost: None,
            schedule: None,
            next_unit: index,
            last_reply: Instant::now(),
            sending: false,
            drained: false,
        })
    }

    /// The socket, for the loop's `epoll`.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sets the connection up for `phase` and adds its slots in the measured window to
    /// the phase's offer.
    pub fn begin(&mut self, phase: &Phase, stats: &Mutex<Stats>) {
        self.schedule = match phase.mode {
            Mode::Open { rate } => Some(Schedule::new(
                phase.start,
                rate,
                self.index,
                phase.connections,
            )),
            _ => None,
        };
        if let Some(s) = &self.schedule {
            lock(stats).slots += s.slots_between(phase.record_from, phase.end);
        }
        self.next_unit = self.index;
        self.ops_left = match phase.mode {
            Mode::Counted { ops, .. } => share(ops, self.index, phase.connections),
            _ => 0,
        };
        self.sets.clear();
        self.last_reply = Instant::now();
        // A connection with no share of the work (fewer preload units or counted
        // operations than connections) is done from the start.
        self.sending = self.lost.is_none()
            && match phase.mode {
                Mode::Open { .. } | Mode::Closed => true,
                Mode::Counted { .. } => self.ops_left > 0,
                Mode::Preload { keys, unit } => self.next_unit * unit < keys,
            };
        self.drained = false;
    }

    /// Closes the connection's part of `phase`: slots due before the end that were
    /// never sent (the generator fell behind, or the connection was lost) are missed,
    /// and each enters the histograms at a lower bound of what it would have waited.
    pub fn finish(&mut self, phase: &Phase, stats: &Mutex<Stats>) {
        let Some(schedule) = &mut self.schedule else {
            return;
        };
        let mut unsent = schedule.drain_before(phase.end).peekable();
        if unsent.peek().is_none() {
            return;
        }
        let mut stats = lock(stats);
        for t in unsent {
            if t >= phase.record_from {
                let op = phase.workload.pick(&mut self.rng);
                stats.record_unsent(op, phase.end.saturating_duration_since(t));
            }
        }
    }

    /// Gives the connection up: its open requests count as lost.
    pub fn lose(&mut self, why: String, stats: &Mutex<Stats>) {
        let mut stats = lock(stats);
        for e in self.window.abandon() {
            if let (Some(op), true) = (e.op, e.record) {
                stats.per_op[op as usize].lost += 1;
            }
        }
        self.sets.clear();
        stats.lost.push(format!("connection {}: {why}", self.index));
        self.lost = Some(why);
        self.sending = false;
    }

    /// When this connection next has something to send, if it has room for it: a set
    /// of a missed key (due since its get's reply), its next slot (open loop, slots due
    /// before the end, late ones too), or the phase's start (closed loop, counted and
    /// preload: as soon as the phase runs). `None` while the window is full or nothing
    /// is left to send.
    pub fn next_due(&self, phase: &Phase) -> Option<Instant> {
        if self.lost.is_some() || self.drained || self.window.open >= phase.pipeline {
            return None;
        }
        if let Some(set) = self.sets.front() {
            return Some(set.due);
        }
        match (phase.mode, &self.schedule) {
            (Mode::Open { .. }, Some(s)) => Some(s.next_time()).filter(|&t| t < phase.end),
            (Mode::Open { .. }, None) => None,
            (Mode::Closed, _) => self.sending.then_some(phase.start),
            (Mode::Counted { .. }, _) => (self.ops_left > 0).then_some(phase.start),
            (Mode::Preload { keys, unit }, _) => {
                (self.next_unit * unit < keys).then_some(phase.start)
            }
        }
    }

    /// Whether the connection is done with the phase: lost, or nothing left to send
    /// and nothing in flight.
    pub fn is_finished(&self, phase: &Phase) -> bool {
        self.lost.is_some()
            || (!self.sending && self.window.open == 0 && self.next_due(phase).is_none())
    }

    /// The clock's part, checked now and then rather than every turn: the window's end
    /// (no more new requests), the drain timeout after it, and the reply watchdog.
    /// `Err` is why the connection is lost.
    pub fn tick(
        &mut self,
        phase: &Phase,
        stats: &Mutex<Stats>,
        now: Instant,
    ) -> Result<(), String> {
        if now >= phase.end && phase.mode.is_timed() {
            self.sending = false;
        }
        if self.window.open == 0 {
            return Ok(());
        }
        if phase.drain_end().is_some_and(|d| now >= d) {
            lock(stats).timeouts += self.window.open as u64;
            let abandoned = self.window.abandon();
            // Their gets are answered; the operations end there.
            self.sets.clear();
            if !self.proto.tagged() {
                // In-order replies can no longer be matched to requests.
                return Err(format!(
                    "{} replies missing {DRAIN_TIMEOUT:?} after the window closed",
                    abandoned.len()
                ));
            }
            // Late slots that were waiting for room are not sent after the drain
            // ([`Connection::finish`] counts them as unsent).
            self.sending = false;
            self.drained = true;
            return Ok(());
        }
        if now.duration_since(self.last_reply) >= REPLY_TIMEOUT {
            return Err(format!(
                "no reply for {REPLY_TIMEOUT:?} with {} requests in flight",
                self.window.open
            ));
        }
        Ok(())
    }

    /// Encodes what is due at `now` into the write buffer, as far as the window has
    /// room.
    pub fn fill(
        &mut self,
        phase: &Phase,
        stats: &Mutex<Stats>,
        now: Instant,
    ) -> Result<(), String> {
        if self.window.open == 0 {
            // The reply watchdog only runs while something is in flight.
            self.last_reply = now;
        }
        // Sets of missed keys first: they were due when their gets' replies came. They
        // go out after the window closes too (their operations began inside it).
        while self.window.open < phase.pipeline {
            let Some(set) = self.sets.pop_front() else {
                break;
            };
            let key = set.key;
            send_request(
                &mut self.proto,
                &mut self.window,
                &mut self.wbuf,
                Request::Op { op: Op::Set, key },
                set.due,
                set.record,
            )?;
        }
        match phase.mode {
            Mode::Open { .. } => {
                let Some(schedule) = &mut self.schedule else {
                    unreachable!("an open-loop phase has a schedule")
                };
                // Locked only if a measured slot is due, once for all of them.
                let mut guard: Option<MutexGuard<'_, Stats>> = None;
                while self.window.open < phase.pipeline {
                    let Some(due) = schedule.take_due(now, phase.end) else {
                        break;
                    };
                    let measured = due >= phase.record_from;
                    if measured {
                        let stats = guard.get_or_insert_with(|| lock(stats));
                        record(&mut stats.send_lag, now.saturating_duration_since(due));
                        if is_missed(due, now) {
                            stats.missed += 1;
                        }
                    }
                    send_op(
                        &mut self.proto,
                        &mut self.window,
                        &mut self.rng,
                        &mut self.wbuf,
                        phase,
                        due,
                        measured,
                    )?;
                }
                self.sending = now < phase.end;
            }
            Mode::Closed => {
                self.sending = now < phase.end;
                if now < phase.start || !self.sending {
                    return Ok(());
                }
                let measured = now >= phase.record_from;
                while self.window.open < phase.pipeline {
                    send_op(
                        &mut self.proto,
                        &mut self.window,
                        &mut self.rng,
                        &mut self.wbuf,
                        phase,
                        now,
                        measured,
                    )?;
                }
            }
            Mode::Counted { record, .. } => {
                if now < phase.start {
                    return Ok(());
                }
                while self.window.open < phase.pipeline && self.ops_left > 0 {
                    self.ops_left -= 1;
                    send_op(
                        &mut self.proto,
                        &mut self.window,
                        &mut self.rng,
                        &mut self.wbuf,
                        phase,
                        now,
                        record,
                    )?;
                }
                self.sending = self.ops_left > 0;
            }
            Mode::Preload { keys, unit } => {
                while self.window.open < phase.pipeline {
                    let first = self.next_unit * unit;
                    if first >= keys {
                        break;
                    }
                    let end = (first + unit).min(keys);
                    self.next_unit += phase.connections;
                    let id = self.window.next_id_skipping_zero();
                    let replies =
                        self.proto
                            .encode(Request::Preload { first, end }, id, &mut self.wbuf)?;
                    let pushed = self.window.push(InFlight {
                        op: None,
                        key: first,
                        keys: end - first,
                        scheduled: now,
                        record: false,
                        replies_left: replies,
                        done: false,
                        error: None,
                    });
                    debug_assert_eq!(pushed, id);
                }
                self.sending = self.next_unit * unit < keys;
            }
        }
        Ok(())
    }

    /// Whether bytes wait for the socket to take them.
    pub fn wants_write(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Writes what the socket takes now, in one `send` when it takes it all.
    pub fn write(&mut self) -> Result<(), String> {
        while !self.wbuf.is_empty() {
            match (&self.stream).write(&self.wbuf) {
                Ok(0) => return Err("the server stopped taking bytes".into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if self.wbuf.is_empty() {
            // Back to the front of the allocation, so it never grows.
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads what has arrived (the loop calls this when the socket is readable) and
    /// settles every whole reply in it.
    pub fn read(
        &mut self,
        phase: &Phase,
        progress: &Progress,
        stats: &Mutex<Stats>,
    ) -> Result<(), String> {
        loop {
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let room = self.rbuf.capacity() - self.rbuf.len();
            let n = recv_into(self.stream.as_raw_fd(), &mut self.rbuf);
            match n {
                Ok(0) => return Err("the server closed the connection".into()),
                // A read that did not fill the room took everything there was: the
                // next readiness says when more comes (no read just to hear EAGAIN).
                Ok(n) if n < room => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        // One clock reading for the whole batch: the replies arrived together.
        let now = Instant::now();
        let mut settled = 0u64;
        // Locked at the first measured reply, once for the batch.
        let mut guard: Option<MutexGuard<'_, Stats>> = None;
        let cache_aside = phase.workload.is_cache_aside();
        while let Some(reply) = self.proto.decode(&mut self.rbuf)? {
            let id = match reply.id {
                Some(id) => id,
                None => self.window.oldest_open().ok_or("a reply to no request")?,
            };
            // An op has one reply, so this one's lookup is the request's.
            let lookup = Lookup::of(&reply);
            let Some(done) = self.window.reply(id, reply.error) else {
                continue;
            };
            settled += 1;
            let lookup = lookup.filter(|_| cache_aside && done.op == Some(Op::Get));
            if lookup == Some(Lookup::Miss) {
                self.sets.push_back(DueSet {
                    key: done.key,
                    due: now,
                    record: done.record,
                });
                assert!(
                    self.sets.len() + self.window.open <= phase.pipeline,
                    "a due set holds its get's place in the window"
                );
            }
            if done.op.is_none() || done.record {
                let stats = guard.get_or_insert_with(|| lock(stats));
                settle(done, lookup, phase, progress, stats, now);
            }
        }
        if settled > 0 {
            self.last_reply = now;
            progress.replies.fetch_add(settled, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Appends the first request of one operation, due at `due`, to `out` and the
/// window: its op drawn from the workload, its key from the key space, or, if it is
/// measured and an `N`-th of `--scan-every N`, the next scan key (no key is drawn
/// then, as `cache-ratio` does it).
fn send_op<P: Protocol>(
    proto: &mut P,
    window: &mut Window,
    rng: &mut Rng,
    out: &mut BytesMut,
    phase: &Phase,
    due: Instant,
    record: bool,
) -> Result<(), String> {
    let op = phase.workload.pick(rng);
    let scan = match &phase.scan {
        Some(scan) if record => scan.next(),
        _ => None,
    };
    let key = scan.unwrap_or_else(|| phase.keys.pick(rng));
    send_request(proto, window, out, Request::Op { op, key }, due, record)
}

/// Appends request `request` (an op), due at `due`, to `out` and the window.
fn send_request<P: Protocol>(
    proto: &mut P,
    window: &mut Window,
    out: &mut BytesMut,
    request: Request,
    due: Instant,
    record: bool,
) -> Result<(), String> {
    let Request::Op { op, key } = request else {
        unreachable!("preload units are sent by fill")
    };
    let id = window.next_id_skipping_zero();
    let replies = proto.encode(request, id, out)?;
    let pushed = window.push(InFlight {
        op: Some(op),
        key,
        keys: 0,
        scheduled: due,
        record,
        replies_left: replies,
        done: false,
        error: None,
    });
    debug_assert_eq!(pushed, id, "the id encoded is the id of the window entry");
    Ok(())
}

/// One `recv` into the spare capacity of `buf`; returns the bytes read (0: the peer
/// closed the connection).
fn recv_into(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most `spare.len()` bytes into the spare capacity, which
    // `buf` owns and nothing else borrows while the call runs.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the first `n` bytes of the spare capacity were written by recv.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Records one finished request (`lookup`: what it found, if it was a cache-aside
/// get).
fn settle(
    done: InFlight,
    lookup: Option<Lookup>,
    phase: &Phase,
    progress: &Progress,
    stats: &mut Stats,
    now: Instant,
) {
    let Some(op) = done.op else {
        progress.keys_loaded.fetch_add(done.keys, Ordering::Relaxed);
        if let Some(e) = done.error {
            stats.preload_errors += 1;
            print_error(progress, &phase.keys, "preload", done.key, &e);
        }
        return;
    };
    let failed = done.error.is_some();
    stats.record_reply(op, now.saturating_duration_since(done.scheduled), failed);
    match lookup {
        Some(Lookup::Hit) => stats.hits += 1,
        Some(Lookup::Miss) => stats.misses += 1,
        None => {}
    }
    if is_scan(done.key) {
        match lookup {
            Some(Lookup::Hit) => stats.scan_hits += 1,
            Some(Lookup::Miss) => stats.scan_misses += 1,
            None => {}
        }
    }
    if let Some(e) = done.error {
        progress.errors.fetch_add(1, Ordering::Relaxed);
        print_error(progress, &phase.keys, op.name(), done.key, &e);
    }
}

fn print_error(progress: &Progress, keys: &KeySpace, what: &str, key: u64, error: &str) {
    let n = progress.errors_printed.fetch_add(1, Ordering::Relaxed);
    if n < ERRORS_PRINTED_MAX {
        let mut name = String::new();
        keys.key(key, &mut name);
        eprintln!("ampd-loadgen: {what} (key index {key}, {name}) refused: {error}");
        if n + 1 == ERRORS_PRINTED_MAX {
            eprintln!("ampd-loadgen: further refusals are counted, not printed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(replies: u32) -> InFlight {
        InFlight {
            op: Some(Op::Get),
            key: 0,
            keys: 0,
            scheduled: Instant::now(),
            record: true,
            replies_left: replies,
            done: false,
            error: None,
        }
    }

    #[test]
    fn window_matches_out_of_order_replies_by_id() {
        let mut w = Window::new(5, 4);
        let ids: Vec<u32> = (0..3).map(|_| w.push(entry(1))).collect();
        assert_eq!(ids, [5, 6, 7]);
        assert_eq!(w.open, 3);
        assert!(w.reply(7, None).is_some());
        assert!(w.reply(7, None).is_none(), "a second reply to 7 is stale");
        assert_eq!(w.oldest_open(), Some(5));
        assert!(w.reply(5, Some("x".into())).unwrap().error.is_some());
        assert_eq!(w.oldest_open(), Some(6));
        assert!(w.reply(6, None).is_some());
        assert_eq!(w.open, 0);
        assert!(w.entries.is_empty());
        assert_eq!(w.push(entry(1)), 8);
        assert!(
            w.reply(4, None).is_none(),
            "an id before the window is stale"
        );
        assert!(
            w.reply(100, None).is_none(),
            "an id past the window is stale"
        );
    }

    #[test]
    fn window_waits_for_every_reply_of_a_multi_reply_request() {
        let mut w = Window::new(1, 4);
        let id = w.push(entry(3));
        assert!(w.reply(id, None).is_none());
        assert!(w.reply(id, Some("first".into())).is_none());
        let done = w.reply(id, Some("second".into())).unwrap();
        assert_eq!(done.error.as_deref(), Some("first"));
        assert_eq!(w.open, 0);
    }

    #[test]
    fn window_skips_id_zero_and_forgets_abandoned_requests() {
        let mut w = Window::new(u32::MAX, 4);
        assert_eq!(w.next_id_skipping_zero(), u32::MAX);
        assert_eq!(w.push(entry(1)), u32::MAX);
        assert_eq!(w.next_id_skipping_zero(), 1);
        assert_eq!(w.push(entry(1)), 1);
        assert_eq!(w.open, 2);
        assert!(w.reply(u32::MAX, None).is_some());
        assert!(w.reply(1, None).is_some());
        assert!(w.entries.is_empty());
        let a = w.push(entry(1));
        let b = w.push(entry(1));
        assert_eq!(w.abandon().len(), 2);
        assert_eq!(w.open, 0);
        assert!(w.reply(a, None).is_none());
        assert!(w.reply(b, None).is_none());
        assert!(w.push(entry(1)) > b);
    }
}
