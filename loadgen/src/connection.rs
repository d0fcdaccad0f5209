//! One connection's loop, the same for ampd and Redis: decide what to send and when
//! (open loop, closed loop or preload), keep up to `--pipeline` requests in flight,
//! match replies to requests, and record each latency.
//!
//! The protocol is a [`Protocol`]: it only turns a [`Request`] into bytes and bytes into
//! a [`Reply`]. Everything that is measured — pacing, the window, the clocks — is here,
//! once, so ampd and Redis are measured by the same code.
//!
//! # The loop
//! One task owns the socket, its buffers and a timer. Each turn it
//! 1. takes every slot that is due (open loop) or fills the window (closed loop,
//!    preload), encoding the requests back to back into one write buffer;
//! 2. writes what the socket takes (non-blocking; the rest waits for writability, so a
//!    server that stops reading can never deadlock us against its replies);
//! 3. sleeps until the socket is readable, writable (if bytes wait), or the next slot
//!    or the window's end comes due (`timer.rs`), whichever is first;
//! 4. decodes every whole reply that arrived, taking one clock reading for the batch.
//!
//! Nothing is allocated per request: keys are written into reused strings by the
//! protocol, frames into the reused write buffer, and the in-flight window is a ring
//! that keeps its capacity.
//!
//! # One set of histograms per phase, shared
//! Every connection records into the phase's one [`Stats`] behind a mutex, locked once
//! per batch of replies (uncontended with the default single worker thread). Histograms
//! per connection were tried first: to stay small they had to grow on demand, and the
//! first long latency made every connection reallocate its histograms at once (~0.3 ms
//! each, in page faults), which stalled the loop for tens of milliseconds at a hundred
//! connections — a stall that then showed up as latency. The shared histograms are
//! sized once, for the whole range, before the phase starts.

use crate::keys::{KeySpace, Rng};
use crate::mix::{Mix, Op};
use crate::report::{record, Stats};
use crate::schedule::{is_missed, Schedule};
use crate::timer::Timer;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Opens a TCP connection to `addr` with Nagle off (every request is sent as soon as it
/// is encoded); each protocol then makes its own handshake on it.
pub async fn open(addr: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    Ok(stream)
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
    /// Write keys `0..keys` in units of `unit` keys, window full.
    Preload { keys: u64, unit: u64 },
}

/// One phase of a run, shared by every connection's task.
#[derive(Debug)]
pub struct Phase {
    pub mode: Mode,
    /// Slot 0 (open loop), or the first send (closed loop).
    pub start: Instant,
    /// Replies to requests due (sent, closed loop) from here on are measured.
    pub record_from: Instant,
    /// No request due (sent) at or after this is sent.
    pub end: Instant,
    pub connections: u64,
    /// Requests in flight per connection.
    pub pipeline: usize,
    pub mix: Mix,
    pub keys: Arc<KeySpace>,
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

/// The phase's shared measurements; a poisoned lock (a connection task panicked) still
/// holds sound numbers, and the panic itself is re-raised by the phase.
fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
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

/// One connection: its socket, its protocol state and its window. Moved into a task
/// for each phase and handed back at the end of it.
pub struct Connection<P> {
    /// Its index among the run's connections (its share of slots and preload units).
    pub index: u64,
    stream: TcpStream,
    proto: P,
    rbuf: BytesMut,
    wbuf: BytesMut,
    window: Window,
    rng: Rng,
    timer: Timer,
    /// Why the connection is gone, once it is.
    pub lost: Option<String>,
}

/// A connection's state for one phase.
struct Run {
    schedule: Option<Schedule>,
    /// The next preload unit (this connection takes every `connections`-th).
    next_unit: u64,
    /// When the last reply came (the reply watchdog's clock).
    last_reply: Instant,
}

impl<P: Protocol> Connection<P> {
    /// A connection whose handshake is done; `first_id` is the first id after it.
    /// Must be called inside the runtime (the timer registers with its reactor).
    pub fn new(
        index: u64,
        stream: TcpStream,
        proto: P,
        first_id: u32,
        seed: u64,
        pipeline: usize,
    ) -> io::Result<Connection<P>> {
        Ok(Connection {
            index,
            stream,
            proto,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            window: Window::new(first_id, pipeline.min(WINDOW_RESERVE_MAX)),
            rng: Rng::new(seed, index),
            timer: Timer::new()?,
            lost: None,
        })
    }

    /// Runs one phase to its end (and its replies' drain), recording into `stats`;
    /// returns the connection.
    pub async fn run(
        mut self,
        phase: Arc<Phase>,
        progress: Arc<Progress>,
        stats: Arc<Mutex<Stats>>,
    ) -> Self {
        let mut run = Run {
            schedule: match phase.mode {
                Mode::Open { rate } => Some(Schedule::new(
                    phase.start,
                    rate,
                    self.index,
                    phase.connections,
                )),
                _ => None,
            },
            next_unit: self.index,
            last_reply: Instant::now(),
        };
        if let Some(s) = &run.schedule {
            lock(&stats).slots += s.slots_between(phase.record_from, phase.end);
        }
        if self.lost.is_none() {
            if let Err(why) = self.turns(&phase, &progress, &stats, &mut run).await {
                self.lose(why, &mut lock(&stats));
            }
        }
        // Slots due before the end that were never sent: the generator fell behind
        // (or the connection was lost). Each is missed, and enters the histograms at a
        // lower bound of what it would have waited.
        if let Some(schedule) = &mut run.schedule {
            let mut stats = lock(&stats);
            for t in schedule.drain_before(phase.end) {
                if t >= phase.record_from {
                    let op = phase.mix.pick(&mut self.rng);
                    stats.record_unsent(op, phase.end.saturating_duration_since(t));
                }
            }
        }
        self
    }

    fn lose(&mut self, why: String, stats: &mut Stats) {
        for e in self.window.abandon() {
            if let (Some(op), true) = (e.op, e.record) {
                stats.per_op[op as usize].lost += 1;
            }
        }
        stats.lost.push(format!("connection {}: {why}", self.index));
        self.lost = Some(why);
    }

    /// The loop of the module comment; returns when the phase is over, or why the
    /// connection was lost.
    async fn turns(
        &mut self,
        phase: &Phase,
        progress: &Progress,
        stats: &Mutex<Stats>,
        run: &mut Run,
    ) -> Result<(), String> {
        loop {
            let now = Instant::now();
            if self.window.open == 0 {
                // The reply watchdog only runs while something is in flight.
                run.last_reply = now;
            }
            let sending = self.fill(phase, stats, run, now)?;
            self.write()?;
            if !sending && self.window.open == 0 {
                return Ok(());
            }
            let drain_end = phase.end + DRAIN_TIMEOUT;
            if !sending && !matches!(phase.mode, Mode::Preload { .. }) && now >= drain_end {
                lock(stats).timeouts += self.window.open as u64;
                let abandoned = self.window.abandon();
                if !self.proto.tagged() {
                    // In-order replies can no longer be matched to requests.
                    return Err(format!(
                        "{} replies missing {DRAIN_TIMEOUT:?} after the window closed",
                        abandoned.len()
                    ));
                }
                return Ok(());
            }
            if self.window.open > 0 && now.duration_since(run.last_reply) >= REPLY_TIMEOUT {
                return Err(format!(
                    "no reply for {REPLY_TIMEOUT:?} with {} requests in flight",
                    self.window.open
                ));
            }
            let deadline = self.deadline(phase, run, now, sending);
            if deadline <= now {
                continue;
            }
            self.timer
                .arm(deadline)
                .map_err(|e| format!("timer: {e}"))?;
            let wants_write = !self.wbuf.is_empty();
            let readable = tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    ready.map_err(|e| format!("read: {e}"))?;
                    true
                }
                ready = self.stream.writable(), if wants_write => {
                    ready.map_err(|e| format!("write: {e}"))?;
                    false
                }
                fired = self.timer.expired() => {
                    fired.map_err(|e| format!("timer: {e}"))?;
                    false
                }
            };
            if readable {
                self.read(phase, progress, stats, run)?;
            }
        }
    }

    /// When the loop must wake up even if the socket stays quiet.
    fn deadline(&self, phase: &Phase, run: &Run, now: Instant, sending: bool) -> Instant {
        let mut deadline = match (phase.mode, &run.schedule) {
            // Preload has no clock, only the reply watchdog (constant between replies,
            // so the timer is not re-armed every turn).
            (Mode::Preload { .. }, _) => run.last_reply + REPLY_TIMEOUT,
            (Mode::Open { .. }, Some(s)) if sending && self.window.open < phase.pipeline => {
                s.next_time().min(phase.end)
            }
            (Mode::Closed, _) if sending && now < phase.start => phase.start,
            _ if sending => phase.end,
            _ => phase.end + DRAIN_TIMEOUT,
        };
        if self.window.open > 0 {
            deadline = deadline.min(run.last_reply + REPLY_TIMEOUT);
        }
        deadline
    }

    /// Encodes what is due; returns whether the phase still has requests to send.
    fn fill(
        &mut self,
        phase: &Phase,
        stats: &Mutex<Stats>,
        run: &mut Run,
        now: Instant,
    ) -> Result<bool, String> {
        match phase.mode {
            Mode::Open { .. } => {
                let Some(schedule) = &mut run.schedule else {
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
                    self.send_op(phase, due, measured)?;
                }
                Ok(now < phase.end)
            }
            Mode::Closed => {
                if now < phase.start || now >= phase.end {
                    return Ok(now < phase.end);
                }
                let measured = now >= phase.record_from;
                while self.window.open < phase.pipeline {
                    self.send_op(phase, now, measured)?;
                }
                Ok(true)
            }
            Mode::Preload { keys, unit } => {
                while self.window.open < phase.pipeline {
                    let first = run.next_unit * unit;
                    if first >= keys {
                        break;
                    }
                    let end = (first + unit).min(keys);
                    run.next_unit += phase.connections;
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
                Ok(run.next_unit * unit < keys)
            }
        }
    }

    fn send_op(&mut self, phase: &Phase, due: Instant, record: bool) -> Result<(), String> {
        let op = phase.mix.pick(&mut self.rng);
        let key = phase.keys.pick(&mut self.rng);
        let id = self.window.next_id_skipping_zero();
        let replies = self
            .proto
            .encode(Request::Op { op, key }, id, &mut self.wbuf)?;
        let pushed = self.window.push(InFlight {
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

    /// Writes what the socket takes now.
    fn write(&mut self) -> Result<(), String> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err("the server stopped taking bytes".into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// Reads what has arrived and settles every whole reply in it.
    fn read(
        &mut self,
        phase: &Phase,
        progress: &Progress,
        stats: &Mutex<Stats>,
        run: &mut Run,
    ) -> Result<(), String> {
        loop {
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        // One clock reading for the whole batch: the replies arrived together.
        let now = Instant::now();
        let mut settled = 0u64;
        // Locked at the first measured reply, once for the batch.
        let mut guard: Option<MutexGuard<'_, Stats>> = None;
        while let Some(reply) = self.proto.decode(&mut self.rbuf)? {
            let id = match reply.id {
                Some(id) => id,
                None => self.window.oldest_open().ok_or("a reply to no request")?,
            };
            let Some(done) = self.window.reply(id, reply.error) else {
                continue;
            };
            settled += 1;
            if done.op.is_none() || done.record {
                let stats = guard.get_or_insert_with(|| lock(stats));
                settle(done, phase, progress, stats, now);
            }
        }
        if settled > 0 {
            run.last_reply = now;
            progress.replies.fetch_add(settled, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Records one finished request.
fn settle(done: InFlight, phase: &Phase, progress: &Progress, stats: &mut Stats, now: Instant) {
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
