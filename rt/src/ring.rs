//! The thread's io_uring and the operations in flight on it.
//!
//! An operation is a slot in a slab; its key is the submission's `user_data`. The
//! slot holds the task to wake, the completions that arrived (several for a multishot
//! request) and whatever memory the kernel may still touch ([`Op::keep`]): a buffer
//! lives in its slot, not in the future that asked, so dropping that future (a
//! `select!` that went the other way) cancels the request and the buffer stays alive
//! until the kernel's last completion for it.
//!
//! The ring is set up with `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: the kernel
//! posts completions only when this thread enters with `GETEVENTS`, so a socket
//! becoming readable while the thread runs tasks costs no interrupt, and the loop
//! collects everything in one `io_uring_enter` per turn.

use crate::executor::{core, Remote};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use std::any::Any;
use std::cell::{RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// `user_data` of the eventfd read that other threads' wakes complete.
const WAKE: u64 = u64::MAX;
/// `user_data` of cancel requests (their completions say nothing we use).
const CANCEL: u64 = u64::MAX - 1;

/// How a runtime's ring is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Submission queue entries (the completion queue gets eight times as many).
    pub entries: u32,
    /// Wait up to this long for more completions before waking (io_uring's minimum
    /// wait, kernel ≥ 6.12): fewer, larger turns, for a little latency.
    pub coalesce: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            entries: 256,
            coalesce: None,
        }
    }
}

/// Completions a coalescing wait asks for before its minimum wait ends it.
const COALESCE_WANT: usize = 64;

/// One operation's slot.
#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    /// (result, flags) of each completion not yet taken.
    completions: VecDeque<(i32, u32)>,
    /// The kernel will post no more completions for it.
    finished: bool,
    /// Its future is gone: the slot is removed at the last completion.
    orphan: bool,
    /// Memory the kernel may read or write until the last completion.
    keep: Option<Box<dyn Any>>,
}

pub(crate) struct Ring {
    uring: RefCell<IoUring>,
    slots: RefCell<Slab<Slot>>,
    remote: Arc<Remote>,
    /// Where the eventfd read puts the counter (the kernel writes it).
    wake_counter: Box<UnsafeCell<u64>>,
    min_wait_usec: Option<u32>,
}

impl Ring {
    pub(crate) fn new(config: &Config, remote: Arc<Remote>) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(config.entries.saturating_mul(8))
            .build(config.entries)?;
        let min_wait_usec = match config.coalesce {
            Some(wait) if !uring.params().is_feature_min_timeout() => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "coalescing completions for {wait:?} needs io_uring's minimum wait (Linux 6.12 or later)"
                    ),
                ));
            }
            Some(wait) => Some(u32::try_from(wait.as_micros()).unwrap_or(u32::MAX)),
            None => None,
        };
        let ring = Ring {
            uring: RefCell::new(uring),
            slots: RefCell::default(),
            remote,
            wake_counter: Box::new(UnsafeCell::new(0)),
            min_wait_usec,
        };
        ring.arm_wake();
        Ok(ring)
    }

    fn arm_wake(&self) {
        let entry = opcode::Read::new(
            types::Fd(self.remote.eventfd().as_raw_fd()),
            self.wake_counter.get().cast(),
            8,
        )
        .build()
        .user_data(WAKE);
        self.push(&entry);
    }

    /// Queues a submission, making room by submitting if the queue is full.
    fn push(&self, entry: &squeue::Entry) {
        let mut uring = self.uring.borrow_mut();
        loop {
            // SAFETY: every buffer an entry points at is owned by its slot's `keep` (or
            // by the ring itself, for the wake counter) until its last completion.
            if unsafe { uring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = uring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    // Not recoverable: the ring is gone or broken.
                    panic!("io_uring submit failed: {e}");
                }
                // The completion queue is full: take what is there to make room.
                drop(uring);
                self.reap();
                uring = self.uring.borrow_mut();
            }
        }
    }

    /// Starts an operation; `keep` lives until its last completion.
    pub(crate) fn start(&self, entry: squeue::Entry, keep: Option<Box<dyn Any>>) -> Op {
        let key = self.slots.borrow_mut().insert(Slot {
            keep,
            ..Slot::default()
        });
        self.push(&entry.user_data(key as u64));
        Op {
            key,
            _local: std::marker::PhantomData,
        }
    }

    /// Submits what is queued without waiting, when there is anything to submit or
    /// deferred completions to post.
    pub(crate) fn submit_pending(&self) {
        let mut uring = self.uring.borrow_mut();
        let (pending, taskrun) = {
            let sq = uring.submission();
            (!sq.is_empty(), sq.taskrun() || sq.cq_overflow())
        };
        if pending || taskrun {
            match uring.submit() {
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(e) => panic!("io_uring submit failed: {e}"),
            }
        }
    }

    /// Submits what is queued and sleeps until a completion (or, coalescing, until
    /// several or the minimum wait), or `timeout`.
    pub(crate) fn wait(&self, timeout: Option<Duration>) {
        let uring = self.uring.borrow();
        let ts = timeout.map(types::Timespec::from);
        let mut args = types::SubmitArgs::new();
        if let Some(ts) = &ts {
            args = args.timespec(ts);
        }
        let want = match self.min_wait_usec {
            Some(usec) => {
                args = args.min_wait_usec(usec);
                COALESCE_WANT
            }
            None => 1,
        };
        match uring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e) if retryable(&e) || e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => panic!("io_uring wait failed: {e}"),
        }
    }

    /// Takes the completions the kernel has posted and wakes their tasks.
    pub(crate) fn reap(&self) {
        let mut wake_again = false;
        {
            let mut uring = self.uring.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            for cqe in uring.completion() {
                let key = match cqe.user_data() {
                    WAKE => {
                        wake_again = true;
                        continue;
                    }
                    CANCEL => continue,
                    key => key as usize,
                };
                let Some(slot) = slots.get_mut(key) else {
                    continue;
                };
                if !cqueue::more(cqe.flags()) {
                    slot.finished = true;
                }
                if slot.orphan {
                    if slot.finished {
                        slots.remove(key);
                    }
                    continue;
                }
                slot.completions.push_back((cqe.result(), cqe.flags()));
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
        if wake_again {
            self.arm_wake();
        }
    }

    /// At the runtime's end: cancels what is in flight and waits (boundedly) for the
    /// kernel to let go of its buffers; what it still holds then is leaked, not freed.
    pub(crate) fn close(&self) {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        self.push(&entry);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.slots.borrow().iter().any(|(_, s)| !s.finished)
            && std::time::Instant::now() < deadline
        {
            self.wait(Some(Duration::from_millis(10)));
            self.reap();
        }
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if !slot.finished {
                std::mem::forget(slot.keep.take());
            }
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

/// An operation in flight (or finished, with completions to take).
pub(crate) struct Op {
    key: usize,
    /// Ops belong to their thread's ring.
    _local: std::marker::PhantomData<*const ()>,
}

impl Op {
    /// The next completion: `Ready(None)` once the kernel has posted its last one and it
    /// was taken.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(i32, u32)>> {
        let core = core();
        let mut slots = core.ring.slots.borrow_mut();
        let Some(slot) = slots.get_mut(self.key) else {
            return Poll::Ready(None);
        };
        if let Some(c) = slot.completions.pop_front() {
            return Poll::Ready(Some(c));
        }
        if slot.finished {
            return Poll::Ready(None);
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The completion of a single-shot operation.
    pub(crate) async fn result(&mut self) -> i32 {
        std::future::poll_fn(|cx| self.poll_next(cx))
            .await
            .map_or(-libc::ECANCELED, |(res, _)| res)
    }

    /// The memory handed over with the operation, back once the kernel is done with it.
    pub(crate) fn take_kept<T: 'static>(&mut self) -> Option<Box<T>> {
        let core = core();
        let mut slots = core.ring.slots.borrow_mut();
        let slot = slots.get_mut(self.key)?;
        if !slot.finished {
            return None;
        }
        slot.keep.take()?.downcast().ok()
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        // The runtime drops its tasks (and their ops) while installed; an op outliving
        // its runtime has no ring left to cancel on.
        let Some(core) = crate::executor::try_core() else {
            return;
        };
        let mut slots = core.ring.slots.borrow_mut();
        let Some(slot) = slots.get_mut(self.key) else {
            return;
        };
        if slot.finished {
            slots.remove(self.key);
            return;
        }
        slot.orphan = true;
        slot.waker = None;
        slot.completions.clear();
        drop(slots);
        let cancel = opcode::AsyncCancel::new(self.key as u64)
            .build()
            .user_data(CANCEL);
        core.ring.push(&cancel);
    }
}

/// Runs a single-shot operation that uses no memory of ours.
pub(crate) async fn run(entry: squeue::Entry) -> io::Result<u32> {
    let mut op = core().ring.start(entry, None);
    check(op.result().await)
}

/// Runs a single-shot operation on `buf`'s memory (which `entry` points into, and
/// which must not move when `buf` does: a `Vec`, a `BytesMut`); gives back the
/// result and the buffer once the kernel is done with it.
pub(crate) async fn run_owning<B: 'static>(entry: squeue::Entry, buf: B) -> io::Result<(u32, B)> {
    let mut op = core().ring.start(entry, Some(Box::new(buf)));
    let res = op.result().await;
    let buf = op
        .take_kept::<B>()
        .ok_or_else(|| io::Error::other("the ring lost an operation's buffer"))?;
    Ok((check(res)?, *buf))
}

/// A result of `-errno` as an error.
pub(crate) fn check(res: i32) -> io::Result<u32> {
    u32::try_from(res).map_err(|_| io::Error::from_raw_os_error(res.saturating_neg()))
}
