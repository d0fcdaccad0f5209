//! A sub-millisecond sleep for the pacing loop: a Linux `timerfd` registered with
//! tokio's reactor.
//!
//! Why not `tokio::time::sleep_until`: tokio's timer wheel has a 1 ms tick and rounds
//! every deadline up to it, so a request due at 0.3 ms would leave at ~1 ms. Latency is
//! measured from the slot's time (`schedule.rs`), so that lateness would be charged to
//! the server — half a millisecond on average, ten times an in-memory server's whole
//! answer time. A timerfd fires on the kernel's high-resolution timers (tens of µs of
//! jitter), and costs one `timerfd_settime` per new deadline (skipped when the deadline
//! is unchanged) plus one `read` per expiry. Spinning would be more precise still, but
//! would burn a core the server needs on a 2-core machine.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;
use tokio::io::unix::AsyncFd;

/// A one-shot timer that can be re-armed; owned by one connection task.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
    /// The deadline armed now, if any (re-arming for the same one is skipped).
    armed: Option<Instant>,
}

impl Timer {
    /// Must be called inside a tokio runtime (the fd is registered with its reactor).
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a fresh fd
        // that nothing else owns, so OwnedFd may take it.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above; `raw` is valid and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the OwnedFd, which keeps the same open fd until both
        // are dropped together.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Timer { fd, armed: None })
    }

    /// Arms the timer for `deadline` (replacing any earlier deadline). A deadline
    /// already past fires at once.
    pub fn arm(&mut self, deadline: Instant) -> io::Result<()> {
        if self.armed == Some(deadline) {
            return Ok(());
        }
        // A relative time: Instant is CLOCK_MONOTONIC on Linux, but its epoch is not
        // exposed, and the microsecond spent between now() and settime is noise here.
        let wait = deadline.saturating_duration_since(Instant::now());
        // A zero it_value would disarm the timer; one nanosecond fires at once.
        let nanos = wait.as_nanos().max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (nanos / 1_000_000_000) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec on the stack; a null old_value is allowed.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(deadline);
        Ok(())
    }

    /// Waits until the armed deadline passes. Cancel-safe: dropped before it returns,
    /// the expiry stays pending for the next call. Without a deadline armed it waits
    /// forever (callers only poll it with one armed).
    pub async fn expired(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer on the stack.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        expirations.as_mut_ptr().cast::<libc::c_void>(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => {
                    self.armed = None;
                    return result;
                }
                // Readiness was stale (e.g. the timer was re-armed after it fired):
                // try_io cleared it; wait for the next expiry.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_at_the_deadline_with_sub_millisecond_precision() {
        let mut timer = Timer::new().unwrap();
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let deadline = Instant::now() + Duration::from_micros(300);
            timer.arm(deadline).unwrap();
            timer.expired().await.unwrap();
            let now = Instant::now();
            assert!(now >= deadline, "fired early");
            worst = worst.max(now - deadline);
        }
        // tokio's own timer would be ~700 µs late here every time; allow for a busy
        // machine but not for millisecond rounding on every one.
        assert!(
            worst < Duration::from_millis(20),
            "worst lateness {worst:?}"
        );
    }

    #[tokio::test]
    async fn rearming_earlier_replaces_the_deadline_and_past_fires_at_once() {
        let mut timer = Timer::new().unwrap();
        timer.arm(Instant::now() + Duration::from_secs(60)).unwrap();
        let soon = Instant::now() + Duration::from_millis(2);
        timer.arm(soon).unwrap();
        tokio::time::timeout(Duration::from_secs(5), timer.expired())
            .await
            .expect("the earlier deadline fired")
            .unwrap();
        assert!(Instant::now() >= soon);
        timer
            .arm(Instant::now() - Duration::from_millis(1))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), timer.expired())
            .await
            .expect("a past deadline fires at once")
            .unwrap();
    }
}
