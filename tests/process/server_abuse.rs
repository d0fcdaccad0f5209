//! Abuse of a running `ampd serve`, each kind while a well-behaved client keeps making
//! requests: garbage bytes; frame headers that declare `u32::MAX` bytes or the limit plus
//! one (before and after the handshake); connections that drip a byte at a time (before
//! and after the handshake); more connections than the cap; thousands of idle
//! authenticated connections; wrong, empty and other-environment tokens; a client that
//! leaves in the middle of a pipeline.
//!
//! Guards against a peer that makes the server allocate what it declares, hold a
//! connection forever, crash, or stall everybody else: after each kind of abuse the
//! abusive connections got the documented refusal (or were dropped at their deadline),
//! the well-behaved client got exactly the right answers throughout and none of them
//! later than [`PROBE_LATENCY_MAX`], the server's resident memory stayed bounded, and the
//! server never panicked.
//!
//! No assertion here compares latencies: the abusers, the probe and the server share
//! this 2-core machine (and, under `cargo test`, with the other tests of this file), so
//! a p99 moves by milliseconds with whatever else runs. The probe's percentiles, unloaded
//! and under each abuse, are printed by the `--ignored` measurement
//! [`abuse_latency_figures`]; run it alone on a quiet machine.

use ampd_tests::server_process::ServerProcess;
use ampd_wire::client::Client;
use ampd_wire::frame::{self, Hello, Request, FLAG_ERROR, HEADER_LEN, PROTOCOL_VERSION};
use ampd_wire::limits::FRAME_PAYLOAD_MAX;
use ampd_wire::{ErrorCode, SetOptions};
use bytes::BytesMut;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
/// One abusive connection per this long, in the kinds that repeat (500 a second).
const ABUSE_EVERY: Duration = Duration::from_millis(2);
/// Set-and-get rounds of the probe per measurement.
const PROBE_ROUNDS: usize = 2000;
/// The longest any one probe request may take while the server is abused. Only a stall
/// reaches it: a probe request takes 0.03-0.3 ms on a quiet machine; with two other
/// builds sharing its 2 cores the p99 was 4-7 ms and the slowest of over 100,000 requests
/// 39 ms, so this is over 10x the worst noise seen. Yet it is half the shortest deadline
/// the server keeps in this test ([`FRAME_TIMEOUT`]), so an executor blocked until an
/// abuser's deadline frees it, or the probe's request queued behind one, fails it (as a
/// 700 ms sleep in the refusal path did: the probe's first set under the token abuse).
const PROBE_LATENCY_MAX: Duration = Duration::from_millis(500);
const _: () = assert!(PROBE_LATENCY_MAX.as_millis() * 2 <= FRAME_TIMEOUT.as_millis());
/// How much the server's resident memory may grow over all the abuse: 5,000 idle
/// connections with their small buffers fit well within it; a server that allocated
/// what a header declares (4 GiB) or kept the abusers' connections would not.
const RSS_GROWTH_MAX_BYTES: u64 = 256 << 20;

/// The server under abuse, with what the test needs beyond `ServerProcess`.
struct Server {
    process: ServerProcess,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut all = vec!["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"];
        all.extend_from_slice(&["--frame-timeout", "1s"]);
        all.extend_from_slice(args);
        let process = ServerProcess::start(env!("CARGO_BIN_EXE_ampd"), &all);
        let addr = process.addr().to_owned();
        Server { process, addr }
    }

    /// The server every kind of [`ABUSES`] expects: environment `dev` without a token,
    /// `prod` with one, and room for the idle connections.
    fn start_for_abuse() -> Server {
        Server::start(&[
            "--env",
            "dev",
            "--env",
            "prod=right-token",
            "--max-connections",
            "8000",
        ])
    }

    fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("the server is alive");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Stops the server; panics if it panicked or exited badly.
    fn stop(self) {
        let stderr = self.process.stderr();
        let status = self.process.stop();
        assert!(status.success(), "exit {status:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A raw connection, for sending what no client would.
fn raw(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn hello_frame(env: Option<&str>, token: Option<&str>) -> Vec<u8> {
    let mut out = BytesMut::new();
    let hello = Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        env: env.map(str::to_owned),
        token: token.map(str::to_owned),
    });
    frame::encode_request(1, &hello, &mut out).expect("a hello encodes");
    out.to_vec()
}

/// Reads responses until the server closes the connection; returns them.
fn read_until_closed(s: &mut TcpStream) -> Vec<frame::Response> {
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut responses = Vec::new();
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
        while let Some(r) = frame::decode_response(&mut buf).expect("a valid response") {
            responses.push(r);
        }
    }
    responses
}

/// The one refusal a connection got before it was closed.
fn refusal(s: &mut TcpStream) -> ErrorCode {
    let responses = read_until_closed(s);
    let codes: Vec<_> = responses
        .into_iter()
        .filter_map(|r| r.result.err().map(|e| e.code()))
        .collect();
    assert_eq!(codes.len(), 1, "one error frame, then close: {codes:?}");
    codes[0]
}

fn handshake(s: &mut TcpStream) {
    s.write_all(&hello_frame(None, None)).expect("send hello");
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header).expect("welcome header");
    let header = frame::Header::decode(&header);
    assert_eq!(header.flags & FLAG_ERROR, 0, "welcome");
    let mut payload = vec![0u8; header.len as usize];
    s.read_exact(&mut payload).expect("welcome payload");
}

/// The well-behaved client's request times, in the order made.
struct Probe {
    latencies: Vec<Duration>,
}

/// The well-behaved client: `rounds` sets and gets, each answer checked exactly, each
/// request timed. A request not answered within [`PROBE_LATENCY_MAX`] is a panic that
/// says which one, and `during` what (so a stalled server fails the test instead of
/// hanging it).
fn probe(addr: &str, rounds: usize, during: &str) -> Probe {
    /// Runs `request`, adds its time to `latencies`; `what` names it in the panic.
    async fn timed<T>(
        latencies: &mut Vec<Duration>,
        what: impl FnOnce() -> String,
        request: impl std::future::Future<Output = T>,
    ) -> T {
        let at = Instant::now();
        let answer = tokio::time::timeout(PROBE_LATENCY_MAX, request).await;
        let answer = answer
            .unwrap_or_else(|_| panic!("{} was not answered within {PROBE_LATENCY_MAX:?}", what()));
        latencies.push(at.elapsed());
        answer
    }
    ampd_tests::block_on(async {
        let client = Client::connect(addr).await.expect("the probe connects");
        let mut latencies = Vec::with_capacity(rounds * 2);
        for i in 0..rounds {
            let key = format!("probe:{}", i % 100);
            let set = client.set(&key, json!({"i": i}), SetOptions::default().overwrite());
            let stored = timed(
                &mut latencies,
                || format!("{during}: the probe's set {i}"),
                set,
            )
            .await;
            let stored = stored.unwrap_or_else(|e| panic!("{during}: probe set {i}: {e}"));
            assert_eq!(stored, json!({"i": i}), "{during}");
            let get = client.get(&key, Default::default());
            match timed(
                &mut latencies,
                || format!("{during}: the probe's get {i}"),
                get,
            )
            .await
            {
                Ok(ampd_wire::client::Got::Value(v)) => assert_eq!(v, json!({"i": i}), "{during}"),
                other => panic!("{during}: probe get {i}: {other:?}"),
            }
        }
        Probe { latencies }
    })
}

impl Probe {
    /// The `q`-quantile (0.0 to 1.0) of the request times.
    fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let rank = ((l.len() - 1) as f64 * q).round() as usize;
        l[rank]
    }

    fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:?}, p99 {:?}, max {:?}",
            self.quantile(0.5),
            self.quantile(0.99),
            self.max()
        )
    }
}

/// The course of one kind of abuse: the abuser raises `ready` once its set-up is done
/// and the abuse itself runs (the probe measures only then), and stops at `done`;
/// `failed` when the probe failed (the abuser stops at once, so the test fails instead
/// of waiting for an abuser that waits for the probe).
#[derive(Default)]
struct Phase {
    ready: AtomicBool,
    done: AtomicBool,
    failed: AtomicBool,
}

/// Raises `done` when the probe ends, and `failed` too when it ends in a panic.
struct EndOfProbe<'a>(&'a Phase);

impl Drop for EndOfProbe<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::Relaxed);
        }
        self.0.done.store(true, Ordering::Relaxed);
    }
}

impl Phase {
    /// Runs `abuse(n)` for n = 0, 1, ... at least `min` times and until the probe is
    /// done, ready from the start, one every [`ABUSE_EVERY`]: a steady stream of
    /// abusive connections, not a flood that would take a whole core of this 2-core
    /// machine from the server and the probe (that is load, measured elsewhere).
    fn repeat(&self, min: u64, mut abuse: impl FnMut(u64)) {
        self.ready.store(true, Ordering::Relaxed);
        for n in 0.. {
            let failed = self.failed.load(Ordering::Relaxed);
            if failed || (n >= min && self.done.load(Ordering::Relaxed)) {
                break;
            }
            let started = Instant::now();
            abuse(n);
            std::thread::sleep(ABUSE_EVERY.saturating_sub(started.elapsed()));
        }
    }
}

/// One kind of abuse: `run(phase, addr)` abuses the server at `addr` over `phase`, and
/// checks what the abusive connections got.
struct Abuse {
    name: &'static str,
    run: fn(&Phase, &str),
}

/// Every kind, in the order the test runs them (the server is not restarted between
/// them, so what one leaves behind meets the next).
const ABUSES: [Abuse; 6] = [
    Abuse {
        name: "garbage bytes",
        run: garbage_bytes,
    },
    Abuse {
        name: "oversized frame headers",
        run: oversized_headers,
    },
    Abuse {
        name: "1,000 dripping connections",
        run: dripping_connections,
    },
    Abuse {
        name: "wrong, empty and other-environment tokens",
        run: refused_tokens,
    },
    Abuse {
        name: "clients that leave mid-pipeline",
        run: leaving_mid_pipeline,
    },
    Abuse {
        name: "5,000 idle authenticated connections",
        run: idle_connections,
    },
];

fn garbage_bytes(phase: &Phase, addr: &str) {
    phase.repeat(100, |i| {
        let mut s = raw(addr);
        let mut state = i + 1;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        let _ = s.write_all(&garbage);
        let code = refusal(&mut s);
        assert!(
            matches!(code, ErrorCode::BadFrame | ErrorCode::FrameTooLarge),
            "garbage got {code:?}"
        );
    });
}

fn oversized_headers(phase: &Phase, addr: &str) {
    phase.repeat(100, |i| {
        let mut s = raw(addr);
        if i % 2 == 1 {
            handshake(&mut s);
        }
        let declared = if i % 4 < 2 {
            u32::MAX
        } else {
            FRAME_PAYLOAD_MAX as u32 + 1
        };
        let header = frame::Header {
            len: declared,
            id: 7,
            kind: frame::Opcode::Set as u16,
            flags: 0,
        };
        s.write_all(&header.encode()).expect("send header");
        assert_eq!(refusal(&mut s), ErrorCode::FrameTooLarge);
    });
}

fn dripping_connections(phase: &Phase, addr: &str) {
    let hello = hello_frame(None, None);
    let mut conns: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s = raw(addr);
            if i % 2 == 1 {
                handshake(&mut s);
            }
            s
        })
        .collect();
    phase.ready.store(true, Ordering::Relaxed);
    let started = Instant::now();
    // One byte each (of a hello, or of a ping frame after the handshake), then
    // another after a pause: the deadline counts from the first byte.
    for &hello_byte in &hello[..2] {
        for (i, s) in conns.iter_mut().enumerate() {
            let byte = if i % 2 == 1 { 0 } else { hello_byte };
            let _ = s.write_all(&[byte]);
        }
        std::thread::sleep(FRAME_TIMEOUT / 2);
    }
    for s in &mut conns {
        let responses = read_until_closed(s);
        assert!(
            responses.iter().all(|r| r.result.is_ok()),
            "a dripping connection is dropped, not answered with an error"
        );
    }
    // The deadline is 1 s from the first byte, checked every 100 ms: 4 s is room for a
    // loaded machine, and far short of the 10 s the client would wait for a server that
    // never dropped them.
    let took = started.elapsed();
    assert!(
        took < FRAME_TIMEOUT * 4,
        "dripping connections were dropped after {took:?}"
    );
}

fn refused_tokens(phase: &Phase, addr: &str) {
    let refusals = [
        (Some("prod"), Some("wrong-token"), ErrorCode::Unauthorized),
        (Some("prod"), Some(""), ErrorCode::Unauthorized),
        (Some("prod"), None, ErrorCode::Unauthorized),
        (
            Some("nope"),
            Some("right-token"),
            ErrorCode::UnknownEnvironment,
        ),
    ];
    phase.repeat(200, |n| {
        let (env, token, code) = refusals[n as usize % refusals.len()];
        let mut s = raw(addr);
        s.write_all(&hello_frame(env, token)).expect("send hello");
        assert_eq!(refusal(&mut s), code, "{env:?} {token:?}");
    });
}

fn leaving_mid_pipeline(phase: &Phase, addr: &str) {
    phase.repeat(50, |round| {
        let mut s = raw(addr);
        handshake(&mut s);
        let mut out = BytesMut::new();
        for i in 0..20u32 {
            let set = Request::Set(frame::Set {
                key: format!("pipe:{round}:{i}"),
                value: json!(i).into(),
                options: SetOptions::default().overwrite(),
            });
            frame::encode_request(i + 2, &set, &mut out).expect("encode");
        }
        // Half a frame at the end, then gone.
        let cut = out.len() - 3;
        let _ = s.write_all(&out[..cut]);
        drop(s);
    });
}

fn idle_connections(phase: &Phase, addr: &str) {
    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let mut s = raw(addr);
        handshake(&mut s);
        idle.push(s);
    }
    phase.ready.store(true, Ordering::Relaxed);
    while !phase.done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still open and served.
    for s in idle.iter_mut().step_by(500) {
        let mut ping = BytesMut::new();
        frame::encode_request(99, &Request::Ping, &mut ping).expect("encode");
        s.write_all(&ping).expect("idle connection still open");
        let mut header = [0u8; HEADER_LEN];
        s.read_exact(&mut header).expect("pong");
        assert_eq!(frame::Header::decode(&header).id, 99);
    }
}

/// Runs `abuse` on another thread and the probe once the abuse is under way; returns
/// the probe's times.
fn while_abused(server: &Server, abuse: &Abuse) -> Probe {
    let phase = Phase::default();
    std::thread::scope(|s| {
        let abuser = s.spawn(|| (abuse.run)(&phase, &server.addr));
        let end = EndOfProbe(&phase);
        let started = Instant::now();
        while !phase.ready.load(Ordering::Relaxed) {
            assert!(
                !abuser.is_finished(),
                "{}: the abuser ended early",
                abuse.name
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}: never ready",
                abuse.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let loaded = probe(&server.addr, PROBE_ROUNDS, abuse.name);
        drop(end);
        abuser.join().expect("the abuse thread");
        loaded
    })
}

#[test]
fn abuse_never_reaches_the_well_behaved_client() {
    let server = Server::start_for_abuse();
    probe(&server.addr, 500, "warm-up");
    let rss_start = server.resident_bytes();
    for abuse in &ABUSES {
        // `probe` fails on a late answer; the figures are for the log only.
        let loaded = while_abused(&server, abuse);
        eprintln!("{}: probe {}", abuse.name, loaded.summary());
    }
    let rss_end = server.resident_bytes();
    eprintln!(
        "server resident memory: {} MiB at the start, {} MiB at the end",
        rss_start >> 20,
        rss_end >> 20
    );
    assert!(
        rss_end < rss_start + RSS_GROWTH_MAX_BYTES,
        "memory grew from {rss_start} to {rss_end} bytes (limit: {RSS_GROWTH_MAX_BYTES} more)"
    );
    server.stop();
}

/// The measurement behind the claim that abuse does not slow the others down: for each
/// kind, the probe unloaded (just before) and while the abuse runs, p50 and p99 and
/// their ratios. It asserts nothing about them (see the file's header); it still fails
/// on a wrong or stalled answer. Run it alone, on a machine as quiet as can be had:
///
/// `cargo test --release --test server_abuse -- --ignored --nocapture abuse_latency_figures`
///
/// `AMPD_ABUSE_KIND=token` runs only the kinds whose name holds that text, and
/// `AMPD_ABUSE_REPEAT=N` measures each kind N times; the server's pid is printed so a
/// profiler can be attached (`perf record -g -p PID`, `strace -c -f -p PID`).
#[test]
#[ignore = "a measurement that prints figures; run alone with --ignored --nocapture"]
fn abuse_latency_figures() {
    let only = std::env::var("AMPD_ABUSE_KIND").unwrap_or_default();
    let repeat: usize = std::env::var("AMPD_ABUSE_REPEAT")
        .ok()
        .map(|n| n.parse().expect("AMPD_ABUSE_REPEAT is a number"))
        .unwrap_or(1);
    let server = Server::start_for_abuse();
    println!(
        "ampd serve pid {}: 2 shards, in memory; probe {PROBE_ROUNDS} set+get rounds; one \
         abusive connection per {ABUSE_EVERY:?}; {} cores; load average {}",
        server.process.pid(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
    probe(&server.addr, 500, "warm-up");
    println!(
        "| abuse | unloaded p50 | unloaded p99 | abused p50 | abused p99 | abused max | p50 ratio | p99 ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for abuse in ABUSES.iter().filter(|a| a.name.contains(&only)) {
        for _ in 0..repeat {
            let unloaded = probe(&server.addr, PROBE_ROUNDS, "unloaded");
            let abused = while_abused(&server, abuse);
            let (u50, u99) = (unloaded.quantile(0.5), unloaded.quantile(0.99));
            let (a50, a99) = (abused.quantile(0.5), abused.quantile(0.99));
            println!(
                "| {} | {u50:.0?} | {u99:.0?} | {a50:.0?} | {a99:.0?} | {:.0?} | {:.2} | {:.2} |",
                abuse.name,
                abused.max(),
                ratio(a50, u50),
                ratio(a99, u99),
            );
        }
    }
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    server.stop();
}

#[test]
fn connections_past_the_cap_are_refused_politely() {
    let server = Server::start(&["--max-connections", "1000"]);
    let mut kept = Vec::new();
    for _ in 0..1000 {
        let mut s = raw(&server.addr);
        handshake(&mut s);
        kept.push(s);
    }
    for _ in 0..100 {
        let mut s = raw(&server.addr);
        s.write_all(&hello_frame(None, None)).expect("send hello");
        assert_eq!(refusal(&mut s), ErrorCode::Busy);
    }
    drop(kept);
    // Places free up as connections leave.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = raw(&server.addr);
        s.write_all(&hello_frame(None, None)).expect("send hello");
        let mut header = [0u8; HEADER_LEN];
        s.read_exact(&mut header).expect("an answer");
        if frame::Header::decode(&header).flags & FLAG_ERROR == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "places never freed up");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
}

#[test]
fn past_the_memory_limit_writes_are_refused_and_reads_and_removes_go_on() {
    // Start with room for about 48 MiB more than the idle server uses.
    let probe_server = Server::start(&[]);
    let idle = probe_server.resident_bytes();
    probe_server.stop();
    let limit = format!("{}", idle + (48 << 20));
    let server = Server::start(&["--max-memory", &limit]);
    ampd_tests::block_on(async {
        let client = Client::connect(&server.addr).await.expect("connect");
        let big = json!("x".repeat(256 * 1024));
        let mut stored = 0;
        let refusal = loop {
            assert!(stored < 4000, "1 GiB written and never refused");
            match client
                .set(&format!("big:{stored}"), big.clone(), SetOptions::default())
                .await
            {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
            // The server samples its memory every 10 ms.
            if stored % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(refusal.code(), ErrorCode::MemoryLimit, "{refusal}");
        assert!(stored > 0, "writes were taken below the limit");
        // Reads go on; the refused write changed nothing.
        match client
            .get("big:0", Default::default())
            .await
            .expect("a read")
        {
            ampd_wire::client::Got::Value(v) => assert_eq!(v, big),
            other => panic!("{other:?}"),
        }
        match client
            .get(&format!("big:{stored}"), Default::default())
            .await
        {
            Ok(ampd_wire::client::Got::Value(v)) => assert_eq!(v, json!(null)),
            other => panic!("{other:?}"),
        }
        // Removes are let through (they free memory), and once the memory is back
        // below the limit writes are taken again.
        for i in 0..stored {
            assert_eq!(client.remove(&format!("big:{i}")).await, Ok(true));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = client.set("small", json!(1), SetOptions::default()).await {
            assert_eq!(e.code(), ErrorCode::MemoryLimit, "{e}");
            assert!(Instant::now() < deadline, "writes never came back: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    server.stop();
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "1s"]);
    let mut s = raw(&server.addr);
    handshake(&mut s);
    let started = Instant::now();
    assert!(
        read_until_closed(&mut s).is_empty(),
        "closed without a word"
    );
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
    server.stop();
}

#[test]
fn a_peer_that_never_reads_its_answers_is_dropped() {
    let server = Server::start(&["--idle-timeout", "1s"]);
    ampd_tests::block_on(async {
        let client = Client::connect(&server.addr).await.expect("connect");
        client
            .set("big", json!("y".repeat(100 * 1024)), SetOptions::default())
            .await
            .expect("set");
    });
    let rss_before = server.resident_bytes();
    let mut s = raw(&server.addr);
    handshake(&mut s);
    // 2 GB of answers asked for, none read.
    let mut gets = BytesMut::new();
    for id in 0..20_000u32 {
        let get = Request::Get(frame::Get {
            pattern: frame::Patterns::One("big".into()),
            options: Default::default(),
        });
        frame::encode_request(id + 2, &get, &mut gets).expect("encode");
    }
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server stops reading once its answers back up, so this write stalls too;
    // what matters is that the server lets go of the connection.
    let writer = std::thread::spawn(move || {
        let _ = s.write_all(&gets);
        s
    });
    std::thread::sleep(Duration::from_secs(3));
    let rss_during = server.resident_bytes();
    assert!(
        rss_during < rss_before + (64 << 20),
        "answers piled up in memory: {rss_before} -> {rss_during} bytes"
    );
    let mut s = writer.join().expect("writer");
    // Dropped: reading now finds the end of what was sent before the server gave up.
    let mut sink = vec![0u8; 1 << 20];
    let mut drained = 0usize;
    loop {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
        assert!(
            drained < 256 << 20,
            "the server never let go: {drained} bytes of answers and counting"
        );
    }
    server.stop();
}
