//! A thread with a runtime of its own, optionally pinned to one CPU.

use crate::executor::Runtime;
use crate::ring::Config;
use std::future::Future;
use std::io;

/// Builds a runtime thread.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    cpu: Option<usize>,
    config: Config,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Runs the thread on this CPU only.
    pub fn pin_to(mut self, cpu: usize) -> Builder {
        self.cpu = Some(cpu);
        self
    }

    pub fn config(mut self, config: Config) -> Builder {
        self.config = config;
        self
    }

    /// Starts the thread: it pins itself, sets up its runtime and runs the future
    /// `make` returns until that finishes. Setup failures come back from
    /// [`Thread::join`].
    pub fn spawn<F, Fut>(self, make: F) -> io::Result<Thread<Fut::Output>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        let mut thread = std::thread::Builder::new();
        if let Some(name) = &self.name {
            thread = thread.name(name.clone());
        }
        let handle = thread.spawn(move || {
            if let Some(cpu) = self.cpu {
                pin_to(cpu)?;
            }
            let runtime = Runtime::new(self.config)?;
            Ok(runtime.block_on(make()))
        })?;
        Ok(Thread { handle })
    }
}

/// Binds the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot pin to CPU {cpu}: past the largest CPU number"),
        ));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it, and
    // sched_setaffinity reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot pin to CPU {cpu}: {e}"),
            ));
        }
    }
    Ok(())
}

/// A runtime thread.
pub struct Thread<T> {
    handle: std::thread::JoinHandle<io::Result<T>>,
}

impl<T> Thread<T> {
    /// Waits for the thread: its future's output, or why it could not run (setup
    /// failed, or it panicked).
    pub fn join(self) -> io::Result<T> {
        match self.handle.join() {
            Ok(out) => out,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Err(io::Error::other(format!("the thread panicked: {why}")))
            }
        }
    }
}
