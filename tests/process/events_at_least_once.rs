//! At-least-once delivery of a durable subscription across crashes (SPEC.md "Events"):
//! a writer commits numbered keys in four namespaces while `ampd on` prints the
//! subscription's events. Twice: the subscriber is killed (SIGKILL) and stays away
//! while writes go on, the server is killed and started again on the same data folder
//! and address, then the subscriber (the backlog must come from the WAL); and the
//! server is killed under a running subscriber, which reconnects by itself. A checker then holds the whole printed
//! stream to the rules:
//! - no gaps: every write the server acknowledged was printed at least once;
//! - order: within a namespace, a newly seen event never passes an acknowledged write
//!   committed before it that has not been seen yet;
//! - duplicates only of what was delivered before (a redelivery starts at or before
//!   the last acknowledged position, never at something new).
//!
//! Guards against positions saved ahead of what was handled (a gap after a crash),
//! positions not used (everything again, or nothing), a backlog queued behind newer
//! events, and a WAL that drops what the subscription still needs.

use ampd_tests::server_process::ServerProcess;
use ampd_wire::client::Client;
use ampd_wire::SetOptions;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ampd");
const NAMESPACES: u64 = 4;

fn serve(addr: &str, dir: &str) -> ServerProcess {
    ServerProcess::start(
        BIN,
        &[
            "--addr",
            addr,
            "--data-dir",
            dir,
            "--shards",
            "2",
            "--event-ack-timeout",
            "2s",
        ],
    )
}

/// A subscriber process, killed when dropped (a failing test leaves none behind).
struct Subscriber(Child);

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ampd on chk '*'`, its lines appended to `lines` (from every incarnation).
fn subscriber(addr: &str, lines: &Arc<Mutex<Vec<String>>>) -> Subscriber {
    let mut child = Command::new(BIN)
        .args(["on", "chk", "*"])
        .env("AMPD_ADDR", addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ampd on");
    let stdout = child.stdout.take().expect("stdout");
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    Subscriber(child)
}

fn kill(sub: &mut Subscriber) {
    let _ = sub.0.kill();
    let _ = sub.0.wait();
}

/// (namespace, number) of a printed event of key `nJ:I`.
fn parse(line: &str) -> (u64, u64) {
    let e: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let key = e["item"]["key"].as_str().expect("a key");
    let (ns, n) = key.split_once(':').expect("a namespaced key");
    (
        ns.trim_start_matches('n').parse().expect("namespace"),
        n.parse().expect("number"),
    )
}

#[test]
fn every_acknowledged_write_is_delivered_across_client_and_server_kills() {
    let dir = ampd_tests::temp_dir("events-at-least-once");
    let dir_arg = dir.to_str().expect("UTF-8 path").to_owned();
    let first = serve("127.0.0.1:0", &dir_arg);
    let addr = first.addr().to_owned();
    let mut server = Some(first);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut sub = subscriber(&addr, &lines);
    // The subscription exists once `on` has subscribed: wait for a marker's event.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let start = Instant::now();
    while lines.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never subscribed"
        );
        runtime.block_on(async {
            if let Ok(c) = Client::connect(addr.clone()).await {
                let _ = c.set("n0:0", json!(0), SetOptions::default()).await;
            }
        });
        std::thread::sleep(Duration::from_millis(100));
    }

    // The writer: n{i % 4}:{i} for i = 1, 2, ..., retrying each until acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked, addr) = (stop.clone(), acked.clone(), addr.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let mut client: Option<Client> = None;
                let mut i = 1u64;
                while !stop.load(Ordering::Acquire) {
                    if client.is_none() {
                        client = Client::connect(addr.clone()).await.ok();
                    }
                    let key = format!("n{}:{i}", i % NAMESPACES);
                    let done = match &client {
                        Some(c) => c.set(&key, json!(i), SetOptions::default()).await.is_ok(),
                        None => false,
                    };
                    if done {
                        acked.lock().unwrap().push(i);
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    } else {
                        client = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
    };

    let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
    let kill_server = |server: &mut Option<ServerProcess>| {
        if let Some(s) = server.take() {
            s.stop_with("KILL");
        }
    };
    for round in 0..2 {
        pause(600);
        // The subscriber dies holding events and stays away while writes go on, so
        // a backlog builds up; the server dies with it and comes back (same folder,
        // same address), and then the subscriber: the backlog comes from the WAL.
        kill(&mut sub);
        pause(500);
        kill_server(&mut server);
        server = Some(serve(&addr, &dir_arg));
        pause(300);
        sub = subscriber(&addr, &lines);
        pause(600);
        // The server dies under a running subscriber, which reconnects by itself.
        kill_server(&mut server);
        pause(100 * (round + 1));
        server = Some(serve(&addr, &dir_arg));
    }
    pause(700);
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "only {} writes in the run", acked.len());

    // Every acknowledged write delivered (the backlog drains within 30 s).
    let wanted: BTreeSet<u64> = acked.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: BTreeSet<u64> = lines.lock().unwrap().iter().map(|l| parse(l).1).collect();
        let missing: Vec<u64> = wanted.difference(&seen).copied().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged writes never delivered, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        pause(100);
    }
    kill(&mut sub);

    // Order within each namespace, duplicates only of what came before.
    let stream: Vec<(u64, u64)> = lines.lock().unwrap().iter().map(|l| parse(l)).collect();
    let mut seen: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut duplicates = 0;
    for (at, (ns, n)) in stream.iter().enumerate() {
        let mine = seen.entry(*ns).or_default();
        if mine.contains(n) {
            duplicates += 1;
            continue;
        }
        let newest = mine.last().copied();
        assert!(
            newest.is_none_or(|newest| *n > newest),
            "event {at}: n{ns}:{n} arrived after n{ns}:{newest:?}, out of commit order"
        );
        let skipped: Vec<u64> = wanted
            .range(newest.map_or(0, |newest| newest + 1)..*n)
            .filter(|i| *i % NAMESPACES == *ns)
            .copied()
            .collect();
        assert!(
            skipped.is_empty(),
            "event {at}: n{ns}:{n} arrived before acknowledged {skipped:?} of its namespace"
        );
        mine.insert(*n);
    }
    eprintln!(
        "{} writes acknowledged, {} events printed, {duplicates} of them again",
        acked.len(),
        stream.len()
    );
    drop(server);
}
