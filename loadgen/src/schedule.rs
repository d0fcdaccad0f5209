//! Open-loop pacing: when each request of a connection is due.
//!
//! A run at `--rate R` over `C` connections has one global sequence of send slots,
//! slot `g` due at `start + g / R`, evenly spaced; connection `c` owns the slots
//! `g = c, c + C, c + 2C, ...`. So together the connections offer exactly `R` requests a
//! second, spread evenly instead of in bursts of `C`.
//!
//! Each request's latency is measured from its slot's time, not from when it was sent
//! (wrk2's answer to coordinated omission): when the server stalls and a connection's
//! pipeline is full, the slots that come due wait inside the generator, and the wait is
//! counted against the server, as a user arriving at that moment would have seen it.
//! A slot sent more than [`MISS_SLACK`] after its time is *missed* (the generator fell
//! behind: the window was full, or the generator itself was slow); slots that were
//! never sent by the end of the window are missed too and are reported as unsent.
//!
//! A loop thread drives many connections with one timer: [`DueQueue`] orders the
//! connections that may send by when their next slot is due, and the loop sleeps until
//! the first of them (`event_loop.rs`).
//!
//! Pure arithmetic on `Instant`s, so the tests can check it without a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A slot sent later than this after its time counts as missed. One millisecond is
/// well above the timer's jitter (see `timer.rs`) and well below any stall worth
/// reporting.
pub const MISS_SLACK: Duration = Duration::from_millis(1);

/// The send slots of one connection.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between two global slots: `1e9 / rate`.
    interval_ns: f64,
    /// This connection's first global slot (its index among the connections).
    first: u64,
    /// Global slots between two of this connection's (the number of connections).
    stride: u64,
    /// This connection's next slot, counted from 0.
    next: u64,
}

impl Schedule {
    /// Connection `connection` of `connections` at `rate` requests a second in total.
    pub fn new(start: Instant, rate: f64, connection: u64, connections: u64) -> Schedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate {rate}");
        assert!(connection < connections, "{connection} of {connections}");
        Schedule {
            start,
            interval_ns: 1e9 / rate,
            first: connection,
            stride: connections,
            next: 0,
        }
    }

    /// When this connection's slot `k` is due.
    pub fn time(&self, k: u64) -> Instant {
        let global = self.first + k * self.stride;
        // Rounded to the nanosecond, so slot times are exact for round rates.
        self.start + Duration::from_nanos((global as f64 * self.interval_ns).round() as u64)
    }

    /// When the next untaken slot is due.
    pub fn next_time(&self) -> Instant {
        self.time(self.next)
    }

    /// Takes the next slot if it is due by `now` and before `end`, returning its time.
    pub fn take_due(&mut self, now: Instant, end: Instant) -> Option<Instant> {
        let t = self.next_time();
        if t <= now && t < end {
            self.next += 1;
            Some(t)
        } else {
            None
        }
    }

    /// The first slot number at or after `from` whose time is not before `end`.
    fn first_at_or_after(&self, from: u64, end: Instant) -> u64 {
        // An estimate from the arithmetic, then corrected against `time` itself so
        // float rounding can never make the count disagree with `take_due`.
        let span = end.saturating_duration_since(self.start).as_nanos() as f64;
        let global = (span / self.interval_ns).ceil();
        let mut k = if global <= self.first as f64 {
            0
        } else {
            ((global - self.first as f64) / self.stride as f64).ceil() as u64
        };
        k = k.max(from);
        while k > from && self.time(k - 1) >= end {
            k -= 1;
        }
        while self.time(k) < end {
            k += 1;
        }
        k
    }

    /// The times of the slots not taken yet that are due before `end`: the slots a
    /// connection never sent when its window closed. Consumes them.
    pub fn drain_before(&mut self, end: Instant) -> impl Iterator<Item = Instant> + '_ {
        let stop = self.first_at_or_after(self.next, end);
        let from = std::mem::replace(&mut self.next, stop);
        (from..stop).map(|k| self.time(k))
    }

    /// How many of this connection's slots fall in `[from, to)`.
    pub fn slots_between(&self, from: Instant, to: Instant) -> u64 {
        let to = self.first_at_or_after(0, to);
        to.saturating_sub(self.first_at_or_after(0, from))
    }
}

/// The connections of one loop thread that may send, earliest due first; each at most
/// once. A connection is queued with the time of its next send (its next slot, or now
/// in a closed loop) while it has room in its window, and taken off when that time
/// comes: so one sleep, until [`DueQueue::next`], serves every connection, and a
/// connection whose window is full costs nothing until a reply frees it.
#[derive(Debug)]
pub struct DueQueue {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Whether connection `i` has an entry in the heap.
    queued: Vec<bool>,
}

impl DueQueue {
    /// An empty queue for connections `0..connections`.
    pub fn new(connections: usize) -> DueQueue {
        DueQueue {
            heap: BinaryHeap::with_capacity(connections),
            queued: vec![false; connections],
        }
    }

    /// Queues connection `conn` for `at`, unless it is queued already (its time then
    /// stands: a connection's next send time only changes when it sends, which takes
    /// it off the queue first). Returns whether it was queued now.
    pub fn push(&mut self, conn: usize, at: Instant) -> bool {
        if std::mem::replace(&mut self.queued[conn], true) {
            return false;
        }
        self.heap.push(Reverse((at, conn)));
        true
    }

    /// When the first queued connection is due.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the connection due first, if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let Reverse((at, conn)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.queued[conn] = false;
        Some(conn)
    }
}

/// Whether a request due at `scheduled` and sent at `sent` missed its slot.
pub fn is_missed(scheduled: Instant, sent: Instant) -> bool {
    sent.saturating_duration_since(scheduled) > MISS_SLACK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slots_interleave_evenly_across_connections() {
        let t0 = Instant::now();
        // 1000/s over 4 connections: global slots every 1 ms, each connection every 4.
        let scheds: Vec<Schedule> = (0..4).map(|c| Schedule::new(t0, 1000.0, c, 4)).collect();
        let mut times: Vec<Duration> = scheds
            .iter()
            .flat_map(|s| (0..5).map(move |k| s.time(k) - t0))
            .collect();
        times.sort();
        for (g, t) in times.iter().enumerate() {
            assert_eq!(*t, ms(g as u64), "global slot {g}");
        }
        assert_eq!(scheds[3].time(2) - t0, ms(11));
    }

    #[test]
    fn take_due_hands_out_each_slot_once_and_only_when_due() {
        let t0 = Instant::now();
        let end = t0 + ms(10);
        let mut s = Schedule::new(t0, 1000.0, 0, 1);
        // At t0 only slot 0 is due.
        assert_eq!(s.take_due(t0, end), Some(t0));
        assert_eq!(s.take_due(t0, end), None);
        // Behind by 3.5 ms: slots 1, 2, 3 all due at once, in order.
        let now = t0 + Duration::from_micros(3500);
        let due: Vec<Duration> = std::iter::from_fn(|| s.take_due(now, end))
            .map(|t| t - t0)
            .collect();
        assert_eq!(due, [ms(1), ms(2), ms(3)]);
        assert_eq!(s.next_time() - t0, ms(4));
        // Nothing at or past the end is handed out.
        let late = t0 + ms(50);
        assert_eq!(std::iter::from_fn(|| s.take_due(late, end)).count(), 6);
        assert_eq!(s.take_due(late, end), None);
    }

    #[test]
    fn unsent_slots_before_the_end_are_counted_once() {
        let t0 = Instant::now();
        let end = t0 + ms(100);
        // 2000/s over 2 connections: this one (index 1) owns slots at 0.5, 1.5, ... ms.
        let mut s = Schedule::new(t0, 2000.0, 1, 2);
        for _ in 0..10 {
            assert!(s.take_due(end, end).is_some());
        }
        let unsent: Vec<Instant> = s.drain_before(end).collect();
        assert_eq!(unsent.len(), 90);
        assert_eq!(unsent[0] - t0, Duration::from_micros(10_500));
        assert_eq!(*unsent.last().unwrap() - t0, Duration::from_micros(99_500));
        assert_eq!(s.drain_before(end).count(), 0);
        assert_eq!(s.take_due(end, end), None);
    }

    #[test]
    fn slot_counts_match_the_rate() {
        let t0 = Instant::now();
        let total: u64 = (0..3)
            .map(|c| Schedule::new(t0, 3000.0, c, 3).slots_between(t0 + ms(1000), t0 + ms(3000)))
            .sum();
        assert_eq!(total, 6000);
        // A fractional rate: 2.5/s over 1 connection for 10 s.
        let s = Schedule::new(t0, 2.5, 0, 1);
        assert_eq!(s.slots_between(t0, t0 + Duration::from_secs(10)), 25);
        assert_eq!(s.slots_between(t0 + ms(5000), t0 + ms(1000)), 0);
        // Boundaries: a slot exactly at `to` is outside, one exactly at `from` inside.
        let s = Schedule::new(t0, 1000.0, 0, 1);
        assert_eq!(s.slots_between(t0 + ms(2), t0 + ms(5)), 3);
    }

    #[test]
    fn the_due_queue_hands_out_connections_in_time_order_once_due() {
        let t0 = Instant::now();
        let mut q = DueQueue::new(4);
        assert_eq!(q.next(), None);
        assert!(q.push(2, t0 + ms(3)));
        assert!(q.push(0, t0 + ms(1)));
        assert!(q.push(3, t0 + ms(2)));
        // Queued already: the first time stands.
        assert!(!q.push(0, t0));
        assert_eq!(q.next(), Some(t0 + ms(1)));
        assert_eq!(q.pop_due(t0), None, "nothing is due before its time");
        assert_eq!(q.pop_due(t0 + ms(1)), Some(0));
        assert_eq!(q.pop_due(t0 + ms(1)), None);
        // Late: everything due comes out, earliest first.
        let late = t0 + ms(10);
        assert_eq!(
            std::iter::from_fn(|| q.pop_due(late)).collect::<Vec<_>>(),
            [3, 2]
        );
        assert_eq!(q.next(), None);
        // Taken off, a connection can be queued again.
        assert!(q.push(3, t0 + ms(4)));
        assert_eq!(q.pop_due(late), Some(3));
    }

    #[test]
    fn connections_of_one_queue_send_every_global_slot_in_order() {
        // What the loop does with the queue: pop the due connection, take its due
        // slots, queue it again for its next one. The slots come out in global order.
        let t0 = Instant::now();
        let end = t0 + ms(20);
        let mut scheds: Vec<Schedule> = (0..3).map(|c| Schedule::new(t0, 1000.0, c, 3)).collect();
        let mut q = DueQueue::new(3);
        for (c, s) in scheds.iter().enumerate() {
            q.push(c, s.next_time());
        }
        let mut sent = Vec::new();
        let mut now = t0;
        while let Some(at) = q.next() {
            now = now.max(at);
            while let Some(c) = q.pop_due(now) {
                while let Some(t) = scheds[c].take_due(now, end) {
                    sent.push((t - t0, c));
                }
                if scheds[c].next_time() < end {
                    q.push(c, scheds[c].next_time());
                }
            }
        }
        let want: Vec<(Duration, usize)> = (0..20).map(|g| (ms(g), g as usize % 3)).collect();
        assert_eq!(sent, want);
    }

    #[test]
    fn missed_means_later_than_the_slack() {
        let t0 = Instant::now();
        assert!(!is_missed(t0, t0));
        assert!(!is_missed(t0, t0 + MISS_SLACK));
        assert!(is_missed(t0, t0 + MISS_SLACK + Duration::from_nanos(1)));
        // Sent "before" its slot cannot happen, but must not count either.
        assert!(!is_missed(t0 + ms(5), t0));
    }
}
