//! TCP on the ring: a listener with one multishot accept, and streams whose reads and
//! writes are ring requests.
//!
//! A read owns its buffer and outlives the future that asked for it: a
//! [`TcpStream::read_into`] dropped by a `select!` leaves its request in flight, and
//! the next call takes its bytes. So a connection can wait for input and for other
//! things at once without losing what arrives, and without a second request.

use crate::ring::{check, run, run_owning, Op};
use bytes::BytesMut;
use io_uring::{opcode, types};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Connections the kernel queues before `accept` takes them.
const BACKLOG: i32 = 1024;

/// A read request's buffer: the first read of a connection, and after a read that
/// filled less than a quarter of a larger buffer.
const READ_BYTES_MIN: usize = 4 * 1024;
/// The largest read buffer, reached by doubling after reads that fill it.
const READ_BYTES_MAX: usize = 64 * 1024;

/// How long [`claim`] waits for a port another listener holds.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// Makes sure no other socket listens on `addr`, waiting up to [`CLAIM_WAIT`] for one
/// that does to go, and returns the address with its port chosen (`addr`'s port may be
/// 0). Call it before the [`TcpListener::bind`]s of one server.
///
/// The listeners share their port with `SO_REUSEPORT`, which lets any socket of the
/// same user join them: a second server started on a busy port would bind without
/// error and take half its connections, and a server restarted right after a crash
/// would join the listener of the dead one, which lives on for a few milliseconds
/// while the kernel tears its ring down (measured: 5–12 ms after the process is
/// reaped) and resets the connections it queued as it closes. A socket bound without
/// `SO_REUSEPORT` cannot share the port with a listener, so binding one first tells.
pub fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let deadline = Instant::now() + CLAIM_WAIT;
    loop {
        let probe = stream_socket(addr)?;
        match probe.bind(&addr.into()) {
            Ok(()) => {
                return probe
                    .local_addr()?
                    .as_socket()
                    .ok_or_else(|| io::Error::other("the address is not an IP address"));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A TCP socket for `addr`'s family that may take a port in TIME_WAIT.
fn stream_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// A listening socket (`SO_REUSEPORT`: every runtime may listen on the same port, and
/// the kernel spreads the connections over them; [`claim`] the address first).
pub struct TcpListener {
    socket: socket2::Socket,
    accepting: Option<Op>,
}

impl TcpListener {
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = stream_socket(addr)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(TcpListener {
            socket,
            accepting: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the listener has no IP address"))
    }

    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<TcpStream> {
        loop {
            let op = match &mut self.accepting {
                Some(op) => op,
                None => {
                    let entry = opcode::AcceptMulti::new(types::Fd(self.socket.as_raw_fd()))
                        .flags(libc::SOCK_CLOEXEC)
                        .build();
                    self.accepting
                        .insert(crate::executor::core().ring.start(entry, None))
                }
            };
            match std::future::poll_fn(|cx| op.poll_next(cx)).await {
                // The kernel ended the multishot request: start another.
                None => self.accepting = None,
                Some((res, _)) => {
                    let fd = check(res)?;
                    // SAFETY: the kernel made this descriptor for us and nothing else
                    // owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                    return Ok(TcpStream::from_fd(fd));
                }
            }
        }
    }
}

/// A connected socket.
pub struct TcpStream {
    socket: socket2::Socket,
    /// The read in flight, if any (it owns a `BytesMut` buffer).
    reading: Option<Op>,
    read_bytes: usize,
    /// A read buffer to reuse.
    spare: Option<BytesMut>,
}

impl TcpStream {
    fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream {
            socket: socket2::Socket::from(fd),
            reading: None,
            read_bytes: READ_BYTES_MIN,
            spare: None,
        }
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.set_tcp_nodelay(nodelay)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the peer has no IP address"))
    }

    /// Appends what arrives to `into`: the count, 0 at the end of the stream.
    /// Cancel-safe (see the module's notes). When `into` is empty (a connection that
    /// has decoded everything it had) the read's buffer becomes `into`, uncopied.
    pub async fn read_into(&mut self, into: &mut BytesMut) -> io::Result<usize> {
        let op = match &mut self.reading {
            Some(op) => op,
            None => {
                let mut buf = self.spare.take().unwrap_or_default();
                buf.clear();
                buf.reserve(self.read_bytes);
                let entry = opcode::Recv::new(
                    types::Fd(self.socket.as_raw_fd()),
                    buf.as_mut_ptr(),
                    u32::try_from(buf.capacity()).unwrap_or(u32::MAX),
                )
                .build();
                self.reading.insert(
                    crate::executor::core()
                        .ring
                        .start(entry, Some(Box::new(buf))),
                )
            }
        };
        let res = op.result().await;
        let kept = op.take_kept::<BytesMut>();
        self.reading = None;
        let n = check(res)? as usize;
        if let Some(mut buf) = kept {
            let capacity = buf.capacity();
            // SAFETY: the kernel wrote `n` bytes (at most the capacity it was given)
            // at the start of the buffer, which was empty.
            unsafe { buf.set_len(n.min(capacity)) };
            self.read_bytes = if n == capacity {
                (self.read_bytes * 2).min(READ_BYTES_MAX)
            } else if n < self.read_bytes / 4 {
                READ_BYTES_MIN
            } else {
                self.read_bytes
            };
            if into.is_empty() {
                std::mem::swap(into, &mut *buf);
            } else {
                into.extend_from_slice(&buf);
            }
            // Kept only while small, so thousands of idle connections cost little.
            if buf.capacity() <= READ_BYTES_MIN {
                self.spare = Some(*buf);
            }
        }
        Ok(n)
    }

    /// Writes all of `bytes`; gives the buffer back (cleared) for reuse.
    pub async fn write_all(&mut self, bytes: BytesMut) -> (io::Result<()>, BytesMut) {
        let mut buf = bytes;
        let mut done = 0;
        while done < buf.len() {
            let rest = &buf[done..];
            let entry = opcode::Send::new(
                types::Fd(self.socket.as_raw_fd()),
                rest.as_ptr(),
                u32::try_from(rest.len()).unwrap_or(u32::MAX),
            )
            .flags(libc::MSG_NOSIGNAL)
            .build();
            match run_owning(entry, buf).await {
                Ok((0, mut back)) => {
                    back.clear();
                    return (Err(io::ErrorKind::WriteZero.into()), back);
                }
                Ok((n, back)) => {
                    buf = back;
                    done += n as usize;
                }
                // The connection ends, and its buffer with it.
                Err(e) => return (Err(e), BytesMut::new()),
            }
        }
        buf.clear();
        (Ok(()), buf)
    }

    /// Ends the connection: no more writes; the peer reads what was sent, then the end.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.socket.as_raw_fd());
        run(opcode::Shutdown::new(fd, libc::SHUT_WR).build())
            .await
            .map(drop)
    }
}
