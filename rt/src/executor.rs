//! Tasks on one thread, woken from any thread.
//!
//! A [`Runtime`] is installed on its thread and runs one future to completion
//! ([`Runtime::block_on`]); the tasks that future and its tasks [`spawn`] run beside it
//! and are dropped with the runtime. Each turn of the loop:
//! 1. polls every task queued at the turn's start (a task woken during the turn waits
//!    for the next one, so a task that keeps waking itself cannot starve the I/O);
//! 2. moves the tasks other threads woke onto the local queue, fires the due timers and
//!    takes the ring's completions (which wake the tasks waiting on them);
//! 3. if nothing is queued, sleeps in the ring until a completion, the next timer, or
//!    a wake from another thread (the eventfd), submitting what the tasks queued in the
//!    same `io_uring_enter`; otherwise submits without waiting, and only if there is
//!    something to submit.
//!
//! A task's waker is an `Arc<Header>` made once per task. Waking queues the header at
//! most once until the task is polled again (`queued`), so a burst of wakes costs one
//! poll.

use crate::ring::{Config, Ring};
use crate::time::Timers;
use crossbeam_queue::SegQueue;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How long a turn's tasks may run before [`yield_if_needed`] asks a long task to step
/// aside for the I/O and the other tasks.
const TURN_SLICE: Duration = Duration::from_micros(500);

/// The key of the future given to `block_on` (it is not in the task slab).
const ROOT: usize = usize::MAX;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// What a waker refers to: a task of one runtime.
pub(crate) struct Header {
    key: usize,
    /// On a ready queue (local or remote) and not yet polled.
    queued: AtomicBool,
    /// The task finished: wakes are ignored, a stale queue entry is skipped.
    done: AtomicBool,
    remote: Arc<Remote>,
}

/// The part of a runtime other threads touch.
pub(crate) struct Remote {
    queue: SegQueue<Arc<Header>>,
    /// The loop is about to sleep (or sleeps) in the ring: a wake must write the eventfd.
    parked: AtomicBool,
    eventfd: OwnedFd,
}

impl Remote {
    fn notify(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd this struct owns. A
            // failure (the counter at its maximum) still leaves the eventfd readable,
            // which is all a wake needs.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    std::ptr::from_ref(&one).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }

    pub(crate) fn eventfd(&self) -> &OwnedFd {
        &self.eventfd
    }
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.done.load(Ordering::Acquire) || self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let local = CORE
            .try_with(|core| match &*core.borrow() {
                Some(core) if Arc::ptr_eq(&core.remote, &self.remote) => {
                    core.ready.borrow_mut().push_back(self.clone());
                    true
                }
                _ => false,
            })
            .unwrap_or(false);
        if !local {
            self.remote.queue.push(self.clone());
            self.remote.notify();
        }
    }
}

/// The runtime's state, reachable from its thread.
pub(crate) struct Core {
    remote: Arc<Remote>,
    ready: RefCell<VecDeque<Arc<Header>>>,
    /// Each task's future; `None` while it is being polled.
    tasks: RefCell<Slab<Option<LocalFuture>>>,
    pub(crate) ring: Ring,
    pub(crate) timers: Timers,
    turn_started: Cell<Instant>,
}

thread_local! {
    static CORE: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// The runtime of the calling thread.
///
/// # Panics
/// Outside a runtime's thread: every future of this crate must run on one.
pub(crate) fn core() -> Rc<Core> {
    CORE.with(|c| c.borrow().clone())
        .expect("an ampd-rt future polled outside an ampd-rt runtime")
}

/// The runtime of the calling thread, if it runs one.
pub(crate) fn try_core() -> Option<Rc<Core>> {
    CORE.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// Whether the calling thread runs a runtime.
fn on_runtime() -> bool {
    CORE.try_with(|c| c.borrow().is_some()).unwrap_or(false)
}

/// A runtime installed on the calling thread; dropping it drops its tasks.
pub struct Runtime {
    core: Rc<Core>,
}

impl Runtime {
    /// Sets up the ring and installs the runtime on the calling thread.
    pub fn new(config: Config) -> io::Result<Runtime> {
        if on_runtime() {
            return Err(io::Error::other(
                "this thread already runs an ampd-rt runtime",
            ));
        }
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let remote = Arc::new(Remote {
            queue: SegQueue::new(),
            parked: AtomicBool::new(false),
            eventfd,
        });
        let ring = Ring::new(&config, remote.clone())?;
        let core = Rc::new(Core {
            remote,
            ready: RefCell::default(),
            tasks: RefCell::default(),
            ring,
            timers: Timers::default(),
            turn_started: Cell::new(Instant::now()),
        });
        CORE.with(|c| *c.borrow_mut() = Some(core.clone()));
        Ok(Runtime { core })
    }

    /// Runs `future` and the tasks until `future` finishes.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let core = &self.core;
        let mut future = std::pin::pin!(future);
        let root = Arc::new(Header {
            key: ROOT,
            queued: AtomicBool::new(true),
            done: AtomicBool::new(false),
            remote: core.remote.clone(),
        });
        let root_waker = Waker::from(root.clone());
        let mut root_woken = true;
        loop {
            if root_woken {
                root_woken = false;
                root.queued.store(false, Ordering::Release);
                if let Poll::Ready(out) =
                    future.as_mut().poll(&mut Context::from_waker(&root_waker))
                {
                    root.done.store(true, Ordering::Release);
                    return out;
                }
            }
            root_woken |= core.run_ready();
            core.take_remote();
            core.timers.fire(Instant::now());
            core.ring.reap();
            if root_woken || !core.ready.borrow().is_empty() {
                core.ring.submit_pending();
                continue;
            }
            // Sleep, unless a wake from another thread slipped in (it saw `parked`
            // false and wrote no eventfd): see `Remote::notify`.
            core.remote.parked.store(true, Ordering::SeqCst);
            if !core.remote.queue.is_empty() {
                core.remote.parked.store(false, Ordering::SeqCst);
                continue;
            }
            let timeout = core
                .timers
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            core.ring.wait(timeout);
            core.remote.parked.store(false, Ordering::SeqCst);
            core.ring.reap();
            core.take_remote();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // The tasks go first, while the runtime is installed: their I/O is cancelled
        // on the ring, which then waits for the kernel to let go of their buffers.
        let tasks = std::mem::take(&mut *self.core.tasks.borrow_mut());
        drop(tasks);
        self.core.ready.borrow_mut().clear();
        while self.core.remote.queue.pop().is_some() {}
        self.core.ring.close();
        CORE.with(|c| c.borrow_mut().take());
    }
}

impl Core {
    /// Polls each task queued at the start of the call; returns whether the root was
    /// among them.
    fn run_ready(&self) -> bool {
        self.turn_started.set(Instant::now());
        let mut root = false;
        let queued = self.ready.borrow().len();
        for _ in 0..queued {
            let Some(header) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            header.queued.store(false, Ordering::Release);
            if header.key == ROOT {
                root = true;
                continue;
            }
            if header.done.load(Ordering::Acquire) {
                continue;
            }
            let taken = self
                .tasks
                .borrow_mut()
                .get_mut(header.key)
                .and_then(Option::take);
            let Some(mut future) = taken else {
                continue;
            };
            let waker = Waker::from(header.clone());
            match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(()) => {
                    header.done.store(true, Ordering::Release);
                    self.tasks.borrow_mut().remove(header.key);
                }
                Poll::Pending => {
                    if let Some(slot) = self.tasks.borrow_mut().get_mut(header.key) {
                        *slot = Some(future);
                    }
                }
            }
        }
        root
    }

    /// Moves the tasks other threads woke onto the local queue.
    fn take_remote(&self) {
        let mut ready = self.ready.borrow_mut();
        while let Some(header) = self.remote.queue.pop() {
            ready.push_back(header);
        }
    }

    fn spawn(&self, future: LocalFuture) {
        let key = self.tasks.borrow_mut().insert(Some(future));
        let header = Arc::new(Header {
            key,
            queued: AtomicBool::new(true),
            done: AtomicBool::new(false),
            remote: self.remote.clone(),
        });
        self.ready.borrow_mut().push_back(header);
    }
}

/// A spawned task's outcome, shared by the task and its [`JoinHandle`].
struct JoinState<T> {
    output: RefCell<Option<T>>,
    finished: Cell<bool>,
    cancelled: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
    /// The task's own waker, to wake it for a cancel.
    task: RefCell<Option<Waker>>,
}

/// A spawned task. Awaiting it gives its output (`None` if it was cancelled); dropping
/// it lets the task run on ([`detach`](Self::detach) says so explicitly).
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

impl<T> JoinHandle<T> {
    /// Lets the task run on by itself.
    pub fn detach(self) {}

    /// Stops the task: its future is dropped at its next turn, without being polled.
    pub fn cancel(&self) {
        self.state.cancelled.set(true);
        if let Some(w) = self.state.task.borrow_mut().take() {
            w.wake();
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.state.finished.get() {
            return Poll::Ready(self.state.output.borrow_mut().take());
        }
        *self.state.waiter.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Runs `future` as a task of the calling thread's runtime.
///
/// # Panics
/// Outside a runtime's thread.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
{
    let state = Rc::new(JoinState {
        output: RefCell::new(None),
        finished: Cell::new(false),
        cancelled: Cell::new(false),
        waiter: RefCell::new(None),
        task: RefCell::new(None),
    });
    let shared = state.clone();
    let task = async move {
        let mut future = std::pin::pin!(future);
        let output = std::future::poll_fn(|cx| {
            if shared.cancelled.get() {
                return Poll::Ready(None);
            }
            let mut task = shared.task.borrow_mut();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
            drop(task);
            future.as_mut().poll(cx).map(Some)
        })
        .await;
        *shared.output.borrow_mut() = output;
        shared.finished.set(true);
        if let Some(w) = shared.waiter.borrow_mut().take() {
            w.wake();
        }
    };
    core().spawn(Box::pin(task));
    JoinHandle { state }
}

/// Lets every other queued task and the I/O have a turn before this task goes on.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Yields if this turn's tasks have run longer than the turn's slice: a long task (a
/// large batch of writes, the reaper) calls it between its steps.
pub async fn yield_if_needed() {
    if core().turn_started.get().elapsed() > TURN_SLICE {
        yield_now().await;
    }
}
