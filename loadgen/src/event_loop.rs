//! The loop that drives connections: one thread, one `epoll`, one timer for all of its
//! connections (`--threads N` runs N of these, connection `i` on thread `i % N`).
//!
//! # A turn
//! 1. Every connection whose next send is due ([`DueQueue`]) encodes its due slots
//!    back to back into its write buffer (`Connection::fill`), and is queued again for
//!    its next slot if its window has room.
//! 2. Each connection that encoded something writes it in one `send`.
//! 3. Now and then (every [`SWEEP_INTERVAL`], and at the window's end and the drain
//!    timeout) every connection's clock conditions are checked (`Connection::tick`).
//! 4. The thread sleeps in one `epoll_pwait2` until a socket is readable (or writable,
//!    for one with bytes left over), or the first queued connection is due.
//! 5. Each readable socket is read once and its whole replies settled, with one clock
//!    reading per batch; a connection whose window had been full is queued again.
//!
//! # Why this shape (and not a task and a timer per connection)
//! The generator used to run each connection as a tokio task with its own `timerfd`.
//! At 30 k/s over 50 connections to Redis (`perf stat`, 7 s run) every request cost
//! 7.6 syscalls: a `timerfd_settime`, two `read`s of the timer, two `recv`s (one only
//! to hear `EAGAIN`), 1.6 `epoll_wait`s and a `send`, each wake-up going through
//! tokio's reactor and scheduler (1.15 s of user time). Here the timer is the timeout
//! of the one `epoll_pwait2` the loop sleeps in anyway (nanosecond resolution; the
//! thread's timer slack is set to 1 ns, since the default 50 µs slack would make every
//! send up to 50 µs late): 3.7 syscalls per request (a `send`, a `recv`, 1.65
//! `epoll_pwait2`) and 0.40 s of user time. A read that does not fill the buffer is
//! taken as all there was: level-triggered `epoll` says when more comes.
//!
//! `epoll` rather than `io_uring`: what is left is the socket work and the wake-ups
//! (below), which `io_uring` does not remove (issue 12 measured the same 11.4 µs per
//! request at 30 k/s for an `epoll` and an `io_uring` server), and `epoll` needs no new
//! dependency nor a kernel that allows `io_uring`. Spinning instead of sleeping when
//! the next slot is under 4–15 µs away was tried: no change in missed slots or lag at
//! 100 k/s, more CPU at 30 k/s.
//!
//! # Measured (2 vCPUs, Redis 7.0.15 `appendfsync everysec` on core 0, the generator
//! on core 1, 100,000 preloaded keys, 100-byte values, gets; medians of 3 interleaved
//! runs, before = the tokio/timerfd generator)
//! The machine was shared with other builds, so the 30 k/s runs put Redis and the
//! generator under `chrt -f 1` (without it both versions showed send lags of several
//! ms, other processes holding the cores); the 100 k/s runs used `nice -20` process
//! groups instead, since at ~95% of a core a FIFO task meets the kernel's real-time
//! throttling (50 ms stalls).
//!
//! `taskset -c 1 ampd-loadgen --redis --mix get=1 --duration 5s --warmup 2s
//! --server-pid PID` with:
//!
//! | load | version | loadgen CPU | send lag p99 | p50 | p99 | missed |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | `--rate 30000 --connections 50` | before | 64–74% | 16–20 µs | 30–32 µs | 74–84 µs | 0.05–0.12% |
//! | | after | 65–69% | 14–19 µs | 31 µs | 55–77 µs | 0.01–0.02% |
//! | `--rate 30000 --connections 4` | before | 66–67% | 18–19 µs | 29–31 µs | 71–77 µs | 0.02–0.13% |
//! | | after | 65–69% | 13–14 µs | 28–30 µs | 54 µs | 0.04–0.05% |
//! | `--max --connections 1 --pipeline 1` | before | 69% | – | 20–22 µs | 36–39 µs | – |
//! | | after | 64–66% | – | 19–21 µs | 33–40 µs | – |
//! | `--rate 100000 --connections 50` | before | 94% | 11 ms | 1.6 ms | 15 ms | 14.1% |
//! | | after | 95% | 1.8 ms | 0.44 ms | 4.7 ms | 1.65% |
//!
//! (Ranges: the medians of two sets of 3 runs.) At 100 k/s the old generator was
//! saturated (95–100% of its core, every request ~1 ms late: p50 0.9–1.6 ms), the new
//! one is not (p50 24–440 µs) but is near the edge, so its missed slots follow the
//! machine: 0–0.27% in quiet runs, 1–7% when other processes took core 1 or Redis
//! (under `chrt -f 1`) hit the real-time throttling. The old one's count can look
//! better than it is: late by just under 1 ms, a slot is not missed.
//!
//! What is left is the kernel's, and about what Redis's own side pays: at 30 k/s a
//! request costs the generator ~22 µs of CPU, of which `send` is 58% (on loopback it
//! also runs Redis's TCP input and wakes Redis: an IPI, 16%), the sleep in
//! `epoll_pwait2` 24% (arming the timer, switching, being woken), `recv` 7%, user code
//! ~10%; Redis spent 17–19 µs per request meanwhile. A lone connection in a closed loop
//! costs 13–15 µs per request: the difference is the wake-ups of an open loop, one
//! per slot, on both sides. `send` and `recv` alone are ~13 µs a request, 39% of this
//! core at 30 k/s, so a quarter of a core cannot be reached with one segment per
//! request; at 100 k/s, where wake-ups are shared, a request costs ~9.5 µs.

use crate::connection::{Connection, Phase, Progress, Protocol};
use crate::report::Stats;
use crate::schedule::DueQueue;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The loop checks the clock's conditions — the window's end, the drain timeout, the
/// reply watchdog — at least this often (and at the end and the drain timeout
/// themselves).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Readiness events taken per `epoll_pwait2`; more wait for the next turn.
const EVENTS_MAX: usize = 256;

/// Drives `conns` through `phase` on this thread until each is done with it (or lost):
/// what they measure goes to `stats` and `progress`. Slots never sent are counted as
/// unsent at the end (`Connection::finish`).
pub fn drive<P: Protocol>(
    conns: &mut [Connection<P>],
    phase: &Phase,
    progress: &Progress,
    stats: &Mutex<Stats>,
) {
    for c in conns.iter_mut() {
        c.begin(phase, stats);
    }
    let result = Driver::new(conns, phase, progress, stats).and_then(|mut d| d.run());
    if let Err(e) = result {
        // The loop itself failed (no epoll, say): nothing more can be measured on
        // these connections.
        for c in conns.iter_mut().filter(|c| c.lost.is_none()) {
            c.lose(format!("event loop: {e}"), stats);
        }
    }
    for c in conns.iter_mut() {
        c.finish(phase, stats);
    }
}

/// One thread's loop state for one phase.
struct Driver<'a, P> {
    conns: &'a mut [Connection<P>],
    phase: &'a Phase,
    progress: &'a Progress,
    stats: &'a Mutex<Stats>,
    epoll: Epoll,
    due: DueQueue,
    /// Whether connection `i` is still in the phase (registered with the epoll).
    live: Vec<bool>,
    live_count: usize,
    /// Whether connection `i`'s registration asks for writability too.
    out: Vec<bool>,
    /// Connections that encoded requests this turn, to write.
    dirty: Vec<usize>,
}

impl<'a, P: Protocol> Driver<'a, P> {
    fn new(
        conns: &'a mut [Connection<P>],
        phase: &'a Phase,
        progress: &'a Progress,
        stats: &'a Mutex<Stats>,
    ) -> io::Result<Self> {
        let n = conns.len();
        Ok(Driver {
            conns,
            phase,
            progress,
            stats,
            epoll: Epoll::new()?,
            due: DueQueue::new(n),
            live: vec![false; n],
            live_count: 0,
            out: vec![false; n],
            dirty: Vec::with_capacity(n),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        set_timer_slack();
        for i in 0..self.conns.len() {
            if self.conns[i].lost.is_some() {
                continue;
            }
            self.epoll.add(self.conns[i].fd(), i)?;
            self.live[i] = true;
            self.live_count += 1;
            self.queue(i);
        }
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            while let Some(i) = self.due.pop_due(now) {
                self.send(i, now);
            }
            while let Some(i) = self.dirty.pop() {
                self.flush(i)?;
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = self.next_sweep(now);
            }
            if self.live_count == 0 {
                return Ok(());
            }
            let wake = self.due.next().map_or(next_sweep, |t| t.min(next_sweep));
            let ready = self
                .epoll
                .wait(wake.saturating_duration_since(Instant::now()))?;
            for k in 0..ready {
                let (i, events) = self.epoll.event(k);
                self.ready(i, events)?;
            }
        }
    }

    /// Queues connection `i` for its next send, if it has one it has room for.
    fn queue(&mut self, i: usize) {
        if let Some(at) = self.conns[i].next_due(self.phase) {
            self.due.push(i, at);
        }
    }

    /// Connection `i` is due: it encodes what is due, to be written this turn.
    fn send(&mut self, i: usize, now: Instant) {
        if !self.live[i] {
            return;
        }
        if let Err(why) = self.conns[i].fill(self.phase, self.stats, now) {
            return self.lose(i, why);
        }
        if self.conns[i].wants_write() {
            self.dirty.push(i);
        }
        self.queue(i);
    }

    /// Writes what connection `i` has encoded, and asks for writability while bytes
    /// are left over. An `Err` is the epoll's own (fatal to the loop).
    fn flush(&mut self, i: usize) -> io::Result<()> {
        if !self.live[i] {
            return Ok(());
        }
        if let Err(why) = self.conns[i].write() {
            self.lose(i, why);
            return Ok(());
        }
        let want = self.conns[i].wants_write();
        if want != self.out[i] {
            self.epoll.modify(self.conns[i].fd(), i, want)?;
            self.out[i] = want;
        }
        Ok(())
    }

    /// Connection `i`'s socket is ready (`events` from epoll).
    fn ready(&mut self, i: usize, events: u32) -> io::Result<()> {
        if !self.live.get(i).copied().unwrap_or(false) {
            // Retired earlier in this turn.
            return Ok(());
        }
        let readable = (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32;
        if events & readable != 0 {
            if let Err(why) = self.conns[i].read(self.phase, self.progress, self.stats) {
                self.lose(i, why);
                return Ok(());
            }
        }
        if events & libc::EPOLLOUT as u32 != 0 {
            self.flush(i)?;
        }
        if self.conns[i].is_finished(self.phase) {
            self.retire(i);
        } else {
            // Replies made room: slots that waited for it are due now.
            self.queue(i);
        }
        Ok(())
    }

    /// Checks every live connection's clock conditions; retires those done.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            if !self.live[i] {
                continue;
            }
            if let Err(why) = self.conns[i].tick(self.phase, self.stats, now) {
                self.lose(i, why);
            } else if self.conns[i].is_finished(self.phase) {
                self.retire(i);
            }
        }
    }

    /// The next sweep after one at `now`: the interval, or sooner the window's end or
    /// the drain timeout, so neither waits for the interval.
    fn next_sweep(&self, now: Instant) -> Instant {
        let mut at = now + SWEEP_INTERVAL;
        if now < self.phase.end {
            at = at.min(self.phase.end);
        } else if let Some(drain_end) = self.phase.drain_end().filter(|&d| now < d) {
            at = at.min(drain_end);
        }
        at
    }

    fn lose(&mut self, i: usize, why: String) {
        self.conns[i].lose(why, self.stats);
        self.retire(i);
    }

    /// Takes connection `i` out of the phase (it may stay in the due queue: `send`
    /// skips it).
    fn retire(&mut self, i: usize) {
        if std::mem::replace(&mut self.live[i], false) {
            self.live_count -= 1;
            // Closing the epoll at the phase's end would drop the registration too;
            // removing it now keeps a finished connection from waking the loop.
            let _ = self.epoll.remove(self.conns[i].fd());
        }
    }
}

/// The timer slack of the calling thread: 1 ns (0 would mean "the default"). The
/// default, 50 µs, lets the kernel fire a sleep's timeout up to 50 µs late to merge
/// wake-ups — lateness every send would carry.
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of
    // ours. Failing leaves the default slack: sends a little later, nothing unsound.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// An epoll instance with its event buffer; each registration carries the index of its
/// connection.
struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a fresh fd
        // that nothing else owns.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: see above.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: usize, write: bool) -> io::Result<()> {
        let mut interest = libc::EPOLLIN as u32;
        if write {
            interest |= libc::EPOLLOUT as u32;
        }
        let mut event = libc::epoll_event {
            events: interest,
            u64: token as u64,
        };
        // SAFETY: `event` lives on the stack for the call; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` for readability (level-triggered), tagged `token`.
    fn add(&self, fd: RawFd, token: usize) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, false)
    }

    /// Asks for readability, and for writability too if `write`.
    fn modify(&self, fd: RawFd, token: usize, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, write)
    }

    fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, false)
    }

    /// Sleeps until something is ready or `timeout` passes; returns how many events
    /// [`Epoll::event`] holds. A signal's interruption is zero events.
    fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: the kernel writes at most `events.len()` entries into `events`, and
        // reads `timeout` from the stack; a null sigmask keeps the thread's own.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &timeout,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }

    /// Event `k` of the last wait: its connection and its readiness bits.
    fn event(&self, k: usize) -> (usize, u32) {
        let e = self.events[k];
        (e.u64 as usize, e.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Mode;
    use crate::fake_redis::{self, Behaviour, FakeRedis};
    use crate::keys::{KeySpace, Rng, ScanKeys, SCAN_FIRST};
    use crate::mix::Op;
    use std::collections::{BTreeSet, HashSet};
    use std::sync::Arc;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Measured replies and unsent slots of every op.
    fn answered_and_unsent(stats: &Stats) -> (u64, u64) {
        let ops = stats.per_op.iter().map(|s| s.ops).sum();
        let unsent = stats.per_op.iter().map(|s| s.unsent).sum();
        (ops, unsent)
    }

    #[test]
    fn an_open_loop_phase_accounts_for_every_slot_exactly_once() {
        let server = FakeRedis::start(3, Behaviour::Answer);
        let keys = fake_redis::key_space(1000);
        let mut conns = fake_redis::connections(server.addr, 3, &keys, 8);
        // 3000/s for 100 ms warm-up and 200 ms measured: 600 measured slots.
        let phase = fake_redis::phase(Mode::Open { rate: 3000.0 }, 3, 8, &keys, ms(100), ms(200));
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        assert_eq!(stats.slots, 600);
        // Each measured slot was either answered or (a busy machine) never sent.
        let (answered, unsent) = answered_and_unsent(&stats);
        assert_eq!(answered + unsent, 600);
        assert_eq!(stats.send_lag.len(), answered);
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        assert_eq!(stats.timeouts, 0);
        assert_eq!(stats.per_op[Op::Add as usize].ops, 0, "not in the mix");
        // Everything sent, warm-up included, was answered and settled once.
        let replies = progress.replies.load(std::sync::atomic::Ordering::Relaxed);
        drop(conns);
        assert_eq!(
            server.join(),
            3 + replies,
            "three handshake PINGs and the requests"
        );
    }

    #[test]
    fn a_closed_loop_phase_keeps_windows_full_and_drains_them() {
        let server = FakeRedis::start(2, Behaviour::Answer);
        let keys = fake_redis::key_space(1000);
        let mut conns = fake_redis::connections(server.addr, 2, &keys, 4);
        let phase = fake_redis::phase(Mode::Closed, 2, 4, &keys, ms(50), ms(100));
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        let (answered, unsent) = answered_and_unsent(&stats);
        assert!(answered > 0);
        assert_eq!(unsent, 0, "a closed loop has no slots");
        assert_eq!(stats.slots, 0);
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        assert!(conns.iter().all(|c| c.is_finished(&phase)));
        let replies = progress.replies.load(std::sync::atomic::Ordering::Relaxed);
        assert!(replies >= answered);
        drop(conns);
        assert_eq!(server.join(), 2 + replies);
    }

    #[test]
    fn preload_writes_every_key_once_over_all_connections() {
        let server = FakeRedis::start(2, Behaviour::Answer);
        let keys = fake_redis::key_space(103);
        let mut conns = fake_redis::connections(server.addr, 2, &keys, 2);
        let mode = Mode::Preload {
            keys: 103,
            unit: 25,
        };
        let phase = fake_redis::phase(mode, 2, 2, &keys, Duration::ZERO, Duration::ZERO);
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        assert_eq!(stats.preload_errors, 0);
        assert_eq!(
            progress
                .keys_loaded
                .load(std::sync::atomic::Ordering::Relaxed),
            103
        );
        // Five units (25, 25, 25, 25, 3 keys): an MSET each and two ZADDs a key.
        assert_eq!(
            progress.replies.load(std::sync::atomic::Ordering::Relaxed),
            5
        );
        drop(conns);
        assert_eq!(server.join(), 2 + 5 + 2 * 103);
    }

    /// A cache-aside phase (`workload` replaced) on `conns`.
    fn cache_aside(mut phase: Phase) -> Phase {
        phase.workload = crate::mix::Workload::CacheAside;
        phase
    }

    /// The distinct keys connection `index` of the fake's connections draws in its
    /// first `ops` cache-aside operations (a get draws no op, only a key).
    fn keys_drawn(keys: &KeySpace, index: u64, ops: u64, into: &mut HashSet<u64>) {
        let mut rng = Rng::new(fake_redis::SEED, index);
        into.extend((0..ops).map(|_| keys.pick(&mut rng)));
    }

    #[test]
    fn a_counted_cache_aside_phase_misses_each_key_once_and_sets_it() {
        // One connection, one request in flight: no two gets of a key overlap, so the
        // first get of each key misses, its set lands before the next get leaves, and
        // every later get hits.
        let server = FakeRedis::start(1, Behaviour::Store);
        let keys = fake_redis::key_space(100);
        let mut conns = fake_redis::connections(server.addr, 1, &keys, 1);
        let mode = Mode::Counted {
            ops: 2000,
            record: true,
        };
        let phase = cache_aside(fake_redis::phase(mode, 1, 1, &keys, ms(0), ms(0)));
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        let mut drawn = HashSet::new();
        keys_drawn(&keys, 0, 2000, &mut drawn);
        assert_eq!(drawn.len(), 100, "2000 draws over 100 keys reach them all");
        assert_eq!((stats.hits, stats.misses), (1900, 100));
        assert_eq!(stats.per_op[Op::Get as usize].ops, 2000);
        assert_eq!(stats.per_op[Op::Set as usize].ops, 100, "a set per miss");
        let errors: u64 = stats.per_op.iter().map(|s| s.errors).sum();
        assert_eq!(errors, 0);
        assert_eq!(stats.timeouts, 0);
        assert!(conns[0].is_finished(&phase));
        drop(conns);
        let store = server.store.clone();
        assert_eq!(
            server.join(),
            1 + 2000 + 100,
            "the PING, the gets, the sets"
        );
        let store = store.lock().unwrap();
        assert_eq!(
            (store.gets, store.sets, store.items.len()),
            (2000, 100, 100)
        );
        let mut name = String::new();
        for k in drawn {
            keys.key(k, &mut name);
            assert_eq!(
                store.items.get(name.as_bytes()).map(Vec::as_slice),
                Some(&b"vvvv"[..])
            );
        }
    }

    #[test]
    fn a_counted_cache_aside_warm_up_is_settled_before_the_measured_operations() {
        // Three connections, eight in flight each, 37 keys: gets of one key overlap, so
        // a key may miss more than once; the counts still add up exactly.
        let server = FakeRedis::start(3, Behaviour::Store);
        let keys = fake_redis::key_space(37);
        let mut conns = fake_redis::connections(server.addr, 3, &keys, 8);
        let counted = |ops, record| {
            let mode = Mode::Counted { ops, record };
            cache_aside(fake_redis::phase(mode, 3, 8, &keys, ms(0), ms(0)))
        };
        let progress = Progress::new();
        let warmup = Mutex::new(Stats::new());
        drive(&mut conns, &counted(40, false), &progress, &warmup);
        let warmup = warmup.into_inner().unwrap();
        assert!(warmup.lost.is_empty(), "{:?}", warmup.lost);
        assert_eq!(
            (warmup.hits, warmup.misses),
            (0, 0),
            "the warm-up is not measured"
        );
        assert!(warmup.per_op.iter().all(|s| s.ops == 0));
        // 40 over 3 connections: 14, 13, 13; every set of a miss is in by now.
        let mut drawn = HashSet::new();
        for (i, ops) in [(0, 14), (1, 13), (2, 13)] {
            keys_drawn(&keys, i, ops, &mut drawn);
        }
        let (warm_items, warm_sets) = {
            let store = server.store.lock().unwrap();
            assert_eq!(store.gets, 40);
            (store.items.len(), store.sets)
        };
        assert_eq!(warm_items, drawn.len());
        assert!(warm_sets >= warm_items as u64);

        let measured = Mutex::new(Stats::new());
        drive(&mut conns, &counted(1000, true), &progress, &measured);
        let measured = measured.into_inner().unwrap();
        assert!(measured.lost.is_empty(), "{:?}", measured.lost);
        assert_eq!(measured.hits + measured.misses, 1000);
        assert_eq!(measured.per_op[Op::Get as usize].ops, 1000);
        assert_eq!(measured.per_op[Op::Set as usize].ops, measured.misses);
        let store = server.store.lock().unwrap();
        assert_eq!(store.gets, 1040);
        assert_eq!(store.sets, warm_sets + measured.misses);
        assert_eq!(store.items.len(), 37);
        assert!(measured.misses >= (37 - warm_items) as u64);
    }

    /// Whether a key the fake was sent is a scan key (`ns{n % 10}:scan{n}`).
    fn is_scan_name(name: &[u8]) -> bool {
        name.windows(4).any(|w| w == b"scan")
    }

    /// The names of scan keys `0..n`.
    fn scan_names(keys: &KeySpace, n: u64) -> BTreeSet<Vec<u8>> {
        let mut name = String::new();
        (0..n)
            .map(|i| {
                keys.key(SCAN_FIRST + i, &mut name);
                name.clone().into_bytes()
            })
            .collect()
    }

    /// Checks that the fake was sent exactly scan keys `0..n`, each got once and set
    /// once.
    fn assert_scanned_once(store: &fake_redis::Store, keys: &KeySpace, n: u64) {
        let want = scan_names(keys, n);
        let got: BTreeSet<Vec<u8>> = store
            .gets_of
            .keys()
            .filter(|k| is_scan_name(k))
            .cloned()
            .collect();
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);
        for name in &want {
            let text = String::from_utf8_lossy(name);
            assert_eq!(store.gets_of.get(name), Some(&1), "gets of {text}");
            assert_eq!(store.sets_of.get(name), Some(&1), "sets of {text}");
            assert_eq!(
                store.items.get(name).map(Vec::as_slice),
                Some(&b"vvvv"[..]),
                "{text}"
            );
        }
    }

    #[test]
    fn a_counted_scan_every_10_takes_a_tenth_of_the_measured_gets_and_none_of_the_warm_up() {
        // Three connections, eight in flight each, 37 keys: a warm-up of 400 operations,
        // then 1000 measured with --scan-every 10 (the run's one count, as run.rs
        // shares it between phases).
        let server = FakeRedis::start(3, Behaviour::Store);
        let keys = fake_redis::key_space(37);
        let mut conns = fake_redis::connections(server.addr, 3, &keys, 8);
        let scan = Arc::new(ScanKeys::new(10));
        let counted = |ops, record| {
            let mode = Mode::Counted { ops, record };
            let mut phase = cache_aside(fake_redis::phase(mode, 3, 8, &keys, ms(0), ms(0)));
            phase.scan = Some(scan.clone());
            phase
        };
        let progress = Progress::new();
        let warmup = Mutex::new(Stats::new());
        drive(&mut conns, &counted(400, false), &progress, &warmup);
        let warmup = warmup.into_inner().unwrap();
        assert!(warmup.lost.is_empty(), "{:?}", warmup.lost);
        assert_eq!((warmup.scan_hits, warmup.scan_misses), (0, 0));
        // 400 over 3 connections: 134, 133, 133 draws, which reach every key (the seed
        // is fixed), so the measured gets of the key space all hit.
        let mut drawn = HashSet::new();
        for (i, ops) in [(0, 134), (1, 133), (2, 133)] {
            keys_drawn(&keys, i, ops, &mut drawn);
        }
        assert_eq!(drawn.len(), 37);
        let warm_sets = {
            let store = server.store.lock().unwrap();
            assert_eq!(store.gets, 400);
            assert!(
                !store.gets_of.keys().any(|k| is_scan_name(k)),
                "the warm-up scans nothing"
            );
            assert_eq!(store.items.len(), 37);
            store.sets
        };

        let measured = Mutex::new(Stats::new());
        drive(&mut conns, &counted(1000, true), &progress, &measured);
        let measured = measured.into_inner().unwrap();
        assert!(measured.lost.is_empty(), "{:?}", measured.lost);
        // Exactly 100 scan gets, every one a miss; the other 900 hit.
        assert_eq!((measured.scan_hits, measured.scan_misses), (0, 100));
        assert_eq!((measured.hits, measured.misses), (900, 100));
        assert_eq!(measured.per_op[Op::Get as usize].ops, 1000);
        assert_eq!(measured.per_op[Op::Set as usize].ops, 100, "a set per miss");
        let errors: u64 = measured.per_op.iter().map(|s| s.errors).sum();
        assert_eq!(errors, 0);
        drop(conns);
        let store = server.store.clone();
        server.join();
        let store = store.lock().unwrap();
        assert_eq!(store.gets, 1400);
        assert_eq!(store.sets, warm_sets + 100);
        assert_scanned_once(&store, &keys, 100);
        assert_eq!(store.items.len(), 37 + 100);
    }

    #[test]
    fn an_open_loop_scan_takes_every_nth_measured_operation_and_spares_the_warm_up() {
        // The warm-up is the start of the same phase here: its operations must not
        // count towards the scan (they would add scan keys beyond sent / 5).
        let server = FakeRedis::start(2, Behaviour::Store);
        let keys = fake_redis::key_space(500);
        let mut conns = fake_redis::connections(server.addr, 2, &keys, 4);
        // 2000/s, 50 ms warm-up, 200 ms measured: 400 measured slots.
        let mut phase = cache_aside(fake_redis::phase(
            Mode::Open { rate: 2000.0 },
            2,
            4,
            &keys,
            ms(50),
            ms(200),
        ));
        phase.scan = Some(Arc::new(ScanKeys::new(5)));
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        assert_eq!(stats.timeouts, 0);
        // Every measured get sent was answered; a slot never sent drew nothing.
        let gets = &stats.per_op[Op::Get as usize];
        assert_eq!(gets.ops + gets.unsent, 400);
        let scans = gets.ops / 5;
        assert!(scans > 0);
        assert_eq!((stats.scan_hits, stats.scan_misses), (0, scans));
        assert!(stats.misses >= scans);
        drop(conns);
        let store = server.store.clone();
        server.join();
        let store = store.lock().unwrap();
        assert!(store.gets > gets.ops, "the warm-up's gets went out too");
        assert_scanned_once(&store, &keys, scans);
    }

    #[test]
    fn an_open_loop_cache_aside_phase_sets_every_measured_miss() {
        let server = FakeRedis::start(2, Behaviour::Store);
        let keys = fake_redis::key_space(500);
        let mut conns = fake_redis::connections(server.addr, 2, &keys, 4);
        // 2000/s, 50 ms warm-up, 200 ms measured: 400 measured slots.
        let phase = cache_aside(fake_redis::phase(
            Mode::Open { rate: 2000.0 },
            2,
            4,
            &keys,
            ms(50),
            ms(200),
        ));
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        assert_eq!(stats.slots, 400);
        let gets = &stats.per_op[Op::Get as usize];
        // Each measured slot is a get answered (a hit or a miss) or never sent.
        assert_eq!(gets.ops + gets.unsent, 400);
        assert_eq!(stats.hits + stats.misses, gets.ops);
        assert!(stats.misses > 0);
        // A measured miss's set goes out even when the window closed before its reply.
        assert_eq!(stats.per_op[Op::Set as usize].ops, stats.misses);
        assert_eq!(
            stats.per_op[Op::Set as usize].unsent,
            0,
            "sets are not slots"
        );
        drop(conns);
        let store = server.store.clone();
        server.join();
        let store = store.lock().unwrap();
        // Warm-up misses were set too: every miss leaves a key behind, once at least.
        assert!(store.sets >= stats.misses);
        assert!(store.sets >= store.items.len() as u64);
        assert!(store.gets >= gets.ops);
    }

    #[test]
    fn connections_with_no_share_of_the_work_finish_at_once() {
        // Three connections, one preload unit and two counted operations: a connection
        // with nothing to send is done from the start instead of waiting for a send
        // that never comes (the loop used to wait for it forever).
        let server = FakeRedis::start(3, Behaviour::Store);
        let keys = fake_redis::key_space(10);
        let mut conns = fake_redis::connections(server.addr, 3, &keys, 2);
        let preload = Mode::Preload { keys: 10, unit: 25 };
        let counted = Mode::Counted {
            ops: 2,
            record: true,
        };
        let progress = Progress::new();
        for mode in [preload, counted] {
            let phase = cache_aside(fake_redis::phase(mode, 3, 2, &keys, ms(0), ms(0)));
            let stats = Mutex::new(Stats::new());
            drive(&mut conns, &phase, &progress, &stats);
            let stats = stats.into_inner().unwrap();
            assert!(stats.lost.is_empty(), "{mode:?}: {:?}", stats.lost);
            assert!(conns.iter().all(|c| c.is_finished(&phase)), "{mode:?}");
            if let Mode::Counted { .. } = mode {
                // Preloaded: both gets hit.
                assert_eq!((stats.hits, stats.misses), (2, 0));
            }
        }
        drop(conns);
        let store = server.store.clone();
        server.join();
        let store = store.lock().unwrap();
        assert_eq!((store.items.len(), store.gets, store.sets), (10, 2, 0));
    }

    #[test]
    fn a_connection_the_server_closes_is_lost_and_its_slots_unsent() {
        let server = FakeRedis::start(1, Behaviour::Close);
        let keys = fake_redis::key_space(1000);
        let mut conns = fake_redis::connections(server.addr, 1, &keys, 8);
        let phase = fake_redis::phase(Mode::Open { rate: 1000.0 }, 1, 8, &keys, ms(0), ms(100));
        let (progress, stats) = (Progress::new(), Mutex::new(Stats::new()));
        drive(&mut conns, &phase, &progress, &stats);
        let stats = stats.into_inner().unwrap();
        assert_eq!(stats.lost.len(), 1);
        assert!(
            stats.lost[0].starts_with("connection 0: ")
                && (stats.lost[0].contains("closed the connection")
                    || stats.lost[0].contains("write")
                    || stats.lost[0].contains("read")),
            "{:?}",
            stats.lost
        );
        assert!(conns[0].lost.is_some());
        assert_eq!(stats.slots, 100);
        let (answered, unsent) = answered_and_unsent(&stats);
        let lost: u64 = stats.per_op.iter().map(|s| s.lost).sum();
        assert_eq!(answered + unsent + lost, 100);
        assert!(unsent > 0, "slots after the loss were never sent");
        server.join();
    }
}
