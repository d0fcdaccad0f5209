//! A stand-in for Redis in the tests of the loop: it answers `+OK` to every command it
//! gets and counts them, so a test can check that every request sent was answered and
//! settled exactly once, on a real socket, without a Redis server.
//!
//! Commands are counted by their `*` array headers: the generator's commands are flat
//! arrays of bulk strings, and its keys (`ns3:k42`) and values (letters) hold no `*`.
//!
//! [`Behaviour::Store`] answers as Redis does the commands a cache-aside run sends: it
//! parses each command, keeps what `SET` and `MSET` write, and answers `GET` with the
//! value or the null bulk string `$-1`.

use crate::connection::{Connection, Phase};
use crate::keys::{Dist, KeySpace, ZIPF_THETA};
use crate::mix::{Mix, Workload};
use crate::resp::{self, Redis, RespValue};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the stand-in does after the handshake's `PING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers every command until the client hangs up.
    Answer,
    /// Closes the connection.
    Close,
    /// Keeps what SET and MSET write and answers GET from it (`FakeRedis::store`); any
    /// other command gets `+OK` (`+PONG` for PING).
    Store,
}

/// What the stand-in holds in [`Behaviour::Store`], and the commands it was sent.
#[derive(Debug, Default)]
pub struct Store {
    pub items: HashMap<Vec<u8>, Vec<u8>>,
    pub gets: u64,
    pub sets: u64,
    /// GETs and SETs of each key.
    pub gets_of: HashMap<Vec<u8>, u64>,
    pub sets_of: HashMap<Vec<u8>, u64>,
}

/// A listening stand-in for `connections` connections; `join` gives the commands
/// answered, over all connections (handshakes included).
pub struct FakeRedis {
    pub addr: SocketAddr,
    /// Shared by every connection (`Behaviour::Store` only).
    pub store: Arc<Mutex<Store>>,
    server: JoinHandle<u64>,
}

impl FakeRedis {
    pub fn start(connections: usize, behaviour: Behaviour) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(Store::default()));
        let shared = store.clone();
        let server = std::thread::spawn(move || {
            let handlers: Vec<JoinHandle<u64>> = (0..connections)
                .map(|_| {
                    let (stream, _) = listener.accept().unwrap();
                    let store = shared.clone();
                    std::thread::spawn(move || match behaviour {
                        Behaviour::Store => serve_store(stream, &store),
                        _ => serve(stream, behaviour),
                    })
                })
                .collect();
            handlers.into_iter().map(|h| h.join().unwrap()).sum()
        });
        FakeRedis {
            addr,
            store,
            server,
        }
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

/// Answers each whole command as Redis would (see [`Behaviour::Store`]) until the
/// client hangs up; returns how many it answered.
fn serve_store(mut stream: std::net::TcpStream, store: &Mutex<Store>) -> u64 {
    let mut answered = 0u64;
    let mut chunk = [0u8; 64 * 1024];
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return answered,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        replies.clear();
        let mut at = 0;
        let mut store = store.lock().unwrap();
        while let Some((command, used)) = resp::decode(&buf[at..]).unwrap() {
            let RespValue::Array(Some(args)) = command else {
                panic!("a command is an array: {command:?}")
            };
            let args: Vec<&[u8]> = args
                .iter()
                .map(|a| match a {
                    RespValue::Bulk(Some(b)) => *b,
                    other => panic!("an argument is a bulk string: {other:?}"),
                })
                .collect();
            match args[0] {
                b"GET" => {
                    store.gets += 1;
                    *store.gets_of.entry(args[1].to_vec()).or_default() += 1;
                    match store.items.get(args[1]) {
                        Some(v) => {
                            replies.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                            replies.extend_from_slice(v);
                            replies.extend_from_slice(b"\r\n");
                        }
                        None => replies.extend_from_slice(b"$-1\r\n"),
                    }
                }
                b"SET" => {
                    store.sets += 1;
                    *store.sets_of.entry(args[1].to_vec()).or_default() += 1;
                    store.items.insert(args[1].to_vec(), args[2].to_vec());
                    replies.extend_from_slice(b"+OK\r\n");
                }
                b"MSET" => {
                    for pair in args[1..].chunks(2) {
                        store.items.insert(pair[0].to_vec(), pair[1].to_vec());
                    }
                    replies.extend_from_slice(b"+OK\r\n");
                }
                b"PING" => replies.extend_from_slice(b"+PONG\r\n"),
                _ => replies.extend_from_slice(b"+OK\r\n"),
            }
            answered += 1;
            at += used;
        }
        drop(store);
        buf.drain(..at);
        if stream.write_all(&replies).is_err() {
            return answered;
        }
    }
}

/// The seed of the test connections' choices (connection `i` draws `Rng::new(SEED, i)`).
pub const SEED: u64 = 7;

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
            let proto = Redis::new(keys.clone(), crate::value::ValueSource::constant("vvvv"));
            Connection::new(index, stream, proto, 1, SEED, pipeline).unwrap()
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
        workload: Workload::Mix(Mix::parse("get=3,set=1,ping=1").unwrap()),
        keys: keys.clone(),
        scan: None,
    }
}
