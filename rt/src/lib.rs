//! ampd's per-core runtime: one thread, one io_uring, the tasks on it.
//!
//! Each shard of the engine runs on a thread of its own ([`thread::Builder`]); on that
//! thread one loop ([`executor`]) polls the thread's tasks and drives one io_uring
//! ([`ring`]): the sockets ([`net`]), the files ([`fs`]) and the timers ([`time`]) are
//! all requests on that ring, so a turn of the loop costs at most one `io_uring_enter`,
//! which submits what the tasks queued and waits for what comes next.
//!
//! # Why not glommio
//! ampd ran on glommio 0.9 until it was measured against Redis (ARCHITECTURE.md,
//! "The runtime"): glommio's rings are set up without `COOP_TASKRUN`/`DEFER_TASKRUN`,
//! and each turn of its reactor rebuilds timers, flushes three rings, issues a
//! `membarrier` and a second `io_uring_enter` before sleeping, and its sockets make
//! direct `recv`/`send` syscalls plus a `POLL_ADD` after a short read. That cost about
//! twice Redis's CPU per request. This runtime keeps only what ampd uses: tasks that
//! stay on their thread, wakes from any thread (an eventfd read on the ring), timers in
//! a sorted map, and the ring set up with `SINGLE_ISSUER | DEFER_TASKRUN` so completions
//! are posted only when the loop asks for them.
//!
//! # Wakes from other threads
//! A shard's writer is woken by connections on every other shard, and a connection by
//! the shard that applied its write. A waker used on another thread queues its task on
//! the owner's lock-free queue and, only if the owner is asleep, writes its eventfd: one
//! syscall per sleep, not per wake.

pub mod executor;
pub mod fs;
pub mod net;
mod ring;
pub mod thread;
pub mod time;

pub use executor::{spawn, yield_if_needed, yield_now, JoinHandle};
pub use ring::Config;
