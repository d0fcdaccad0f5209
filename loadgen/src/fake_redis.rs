//! A stand-in for Redis in the tests of the loop: it answers `+OK` to every command it
//! gets and counts them, so a test can check that every request sent was answered and
//! settled exactly once, on a real socket, without a Redis server.
//!
//! Commands are counted by their `*` array headers: the generator's commands are flat
//! arrays of bulk strings, and its keys (`ns3:k42`) and values (letters) hold no `*`.

use crate::connection::{Connection, Phase};
use crate::keys::{Dist, KeySpace, ZIPF_THETA};
use crate::mix::Mix;
use crate::resp::{self, Redis};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the stand-in does after the handshake's `PING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers every command until the client hangs up.
    Answer,
    /// Closes the connection.
    Close,
}

/// A listening stand-in for `connections` connections; `join` gives the commands
/// answered, over all connections (handshakes included).
pub struct FakeRedis {
    pub addr: SocketAddr,
    server: JoinHandle<u64>,
}

impl FakeRedis {
    pub fn start(connections: usize, behaviour: Behaviour) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let handlers: Vec<JoinHandle<u64>> = (0..connections)
                .map(|_| {
                    let (stream, _) = listener.accept().unwrap();
                    std::thread::spawn(move || serve(stream, behaviour))
                })
                .collect();
            handlers.into_iter().map(|h| h.join().unwrap()).sum()
        });
        FakeRedis { addr, server }
    }

    pub fn join(self) -> u64 {
        self.server.join().unwrap()
    }
}

fn serve(mut stream: std::net::TcpStream, behaviour: Behaviour) -> u64 {
    let mut answered = 0u64;
    let mut buf = [0u8; 64 * 1024];
    let mut replies = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return answered,
            Ok(n) => n,
        };
        let commands = buf[..n].iter().filter(|&&b| b == b'*').count();
        replies.clear();
        for _ in 0..commands {
            replies.extend_from_slice(b"+OK\r\n");
        }
        if stream.write_all(&replies).is_err() {
            return answered;
        }
        answered += commands as u64;
        if behaviour == Behaviour::Close {
            return answered;
        }
    }
}

/// `n` RESP connections to `addr`, handshake done.
pub fn connections(
    addr: SocketAddr,
    n: u64,
    keys: &Arc<KeySpace>,
    pipeline: usize,
) -> Vec<Connection<Redis>> {
    (0..n)
        .map(|index| {
            let stream = resp::connect(&addr.to_string(), None, Duration::from_secs(5)).unwrap();
            let proto = Redis::new(keys.clone(), "vvvv");
            Connection::new(index, stream, proto, 1, 7, pipeline).unwrap()
        })
        .collect()
}

/// A key space of `keys` keys for the tests.
pub fn key_space(keys: u64) -> Arc<KeySpace> {
    Arc::new(KeySpace::new(keys, 10, Dist::Uniform, ZIPF_THETA))
}

/// A phase starting 20 ms from now: `warmup` not recorded, then `measured`.
pub fn phase(
    mode: crate::connection::Mode,
    connections: u64,
    pipeline: usize,
    keys: &Arc<KeySpace>,
    warmup: Duration,
    measured: Duration,
) -> Phase {
    let start = Instant::now() + Duration::from_millis(20);
    Phase {
        mode,
        start,
        record_from: start + warmup,
        end: start + warmup + measured,
        connections,
        pipeline,
        mix: Mix::parse("get=3,set=1,ping=1").unwrap(),
        keys: keys.clone(),
    }
}
