//! Timers: a sorted map of deadlines per runtime. The loop fires the due ones each
//! turn and sleeps no longer than the earliest; a timer costs no system call.

use crate::executor::core;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A timer's place in the map: its deadline, then the order timers were made in.
type TimerKey = (Instant, u64);

#[derive(Default)]
pub(crate) struct Timers {
    map: RefCell<BTreeMap<TimerKey, Waker>>,
    next_seq: Cell<u64>,
}

impl Timers {
    fn insert(&self, at: Instant, waker: Waker) -> TimerKey {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        self.map.borrow_mut().insert((at, seq), waker);
        (at, seq)
    }

    /// Wakes every timer due by `now`.
    pub(crate) fn fire(&self, now: Instant) {
        let due = {
            let mut map = self.map.borrow_mut();
            match map.first_key_value() {
                Some(((at, _), _)) if *at <= now => {}
                _ => return,
            }
            let later = map.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *map, later)
        };
        for (_, waker) in due {
            waker.wake();
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.borrow().first_key_value().map(|((at, _), _)| *at)
    }
}

/// Resolves at its deadline ([`sleep`], [`sleep_until`]).
pub struct Sleep {
    deadline: Instant,
    key: Option<TimerKey>,
}

/// Waits for `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let core = core();
        if Instant::now() >= self.deadline {
            if let Some(key) = self.key.take() {
                core.timers.map.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        match self.key {
            Some(key) => {
                let mut map = core.timers.map.borrow_mut();
                match map.get_mut(&key) {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    Some(w) => *w = cx.waker().clone(),
                    // Fired, but polled before its deadline by the clock's reading:
                    // take a place again.
                    None => {
                        drop(map);
                        self.key = Some(core.timers.insert(self.deadline, cx.waker().clone()));
                    }
                }
            }
            None => self.key = Some(core.timers.insert(self.deadline, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(key), Some(core)) = (self.key, crate::executor::try_core()) {
            core.timers.map.borrow_mut().remove(&key);
        }
    }
}
