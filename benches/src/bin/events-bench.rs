//! Events against the events issue's targets, on this machine (`benches/events.sh`).
//!
//! `ampd serve --shards 1 --fsync interval` pinned to core 0; `ampd-loadgen` and the
//! subscribers (Rust clients in this process, one tokio thread each) share core 1.
//! Writes are `set`s of 100-byte values over 100,000 keys in 64 namespaces, so up to
//! 64 events of a subscription are out at once (one per namespace).
//!
//! 1. **Delivery throughput**: one subscription (`*`) while the generator writes as fast
//!    as it can (closed loop, 16 connections, pipeline 8): events received per second
//!    beside the writes per second (target: at least 100,000 events/s).
//! 2. **`set` latency with subscriptions**: the generator in open loop at a fixed rate
//!    (a third of the closed-loop peak without subscriptions), with none and then with
//!    three active subscriptions: p99 and p99.9 of `set` (target: p99 within 10%).
//! 3. **Commit to handler**: one subscription at half the peak write rate; for each
//!    event, the handler's clock minus the item's `modified` time (which the shard
//!    stamps when it applies the write), in whole milliseconds, so this p99 carries up
//!    to 1 ms of rounding (target: p99 under 5 ms).
//!
//! Usage: `events-bench [--quick] [--ampd BIN] [--loadgen BIN]`. Prints one line per
//! figure and a summary; stops only what it starts.

use ampd_benches::{field, pinned, Spawned};
use ampd_wire::client::Client;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PORT: u16 = 7391;
const KEYS: &str = "100000";
const NAMESPACES: &str = "64";

struct Settings {
    ampd: String,
    loadgen: String,
    window: Duration,
}

fn start(s: &Settings) -> Spawned {
    let dir = Spawned::scratch("events");
    let addr = format!("127.0.0.1:{PORT}");
    let data = dir.to_str().expect("a UTF-8 temp path").to_owned();
    let args = [
        "--shards",
        "1",
        "--fsync",
        "interval",
        "--addr",
        &addr,
        "--data-dir",
        &data,
    ];
    Spawned::ampd(&s.ampd, "0", &args, dir).unwrap_or_else(|e| panic!("ampd did not start: {e}"))
}

/// Runs the generator against the server; its `--json` line.
fn loadgen(s: &Settings, args: &[&str]) -> Value {
    let mut command = pinned("1", &s.loadgen);
    command
        .args(["--addr", &format!("127.0.0.1:{PORT}")])
        .args([
            "--keys",
            KEYS,
            "--namespaces",
            NAMESPACES,
            "--mix",
            "set=100",
            "--json",
        ])
        .args(args);
    ampd_benches::loadgen_json(command, "ampd")
}

/// What a subscriber saw: events, and commit-to-handler latencies in ms.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    latency_ms: Mutex<Vec<i64>>,
}

/// Subscribes `name` to `*` on a thread of its own (pinned to core 1), counting events
/// and timing them; returns once the subscription is open.
fn subscribe(name: &str, seen: Arc<Seen>) {
    let name = name.to_owned();
    let (opened, open) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = Client::connect(format!("127.0.0.1:{PORT}"))
                .await
                .expect("connect");
            let on = client.on(&name, &["*"], move |event| {
                seen.events.fetch_add(1, Ordering::Relaxed);
                if let Some(at) = event["item"]["modified"].as_str().and_then(modified_ms) {
                    let now = chrono::Utc::now().timestamp_millis();
                    seen.latency_ms
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(now - at);
                }
                async { Ok(()) }
            });
            let ready = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = client.ping().await;
                let _ = opened.send(());
                std::future::pending::<()>().await
            };
            tokio::select! { _ = on => {}, _ = ready => {} }
        });
    });
    open.recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
}

fn modified_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(-1)
}

/// A fresh server with the key space written once.
fn fresh(s: &Settings) -> Spawned {
    let server = start(s);
    let preload = [
        "--preload",
        "--max",
        "--duration",
        "100ms",
        "--warmup",
        "0s",
    ];
    loadgen(s, &preload);
    server
}

/// Sets from 16 connections, pipeline 8, for the window: closed loop (`rate` `None`) or
/// open loop at `rate`.
fn writes(s: &Settings, rate: Option<&str>, warmup: &str) -> Value {
    let window = format!("{}s", s.window.as_secs());
    let mut args = vec![
        "--connections",
        "16",
        "--pipeline",
        "8",
        "--duration",
        &window,
    ];
    args.extend(["--warmup", warmup]);
    match rate {
        Some(rate) => args.extend(["--rate", rate]),
        None => args.push("--max"),
    }
    loadgen(s, &args)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut s = Settings {
        ampd: "target/release/ampd".into(),
        loadgen: "target/release/ampd-loadgen".into(),
        window: Duration::from_secs(5),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => s.window = Duration::from_secs(1),
            "--ampd" => s.ampd = args.next().expect("--ampd BIN"),
            "--loadgen" => s.loadgen = args.next().expect("--loadgen BIN"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let warmup = "1s";
    let mut summary = Vec::new();

    // 1. Throughput of one subscription while writes go on.
    let server = fresh(&s);
    let seen = Arc::new(Seen::default());
    subscribe("throughput", seen.clone());
    let before = seen.events.load(Ordering::Relaxed);
    let started = Instant::now();
    let run = writes(&s, None, warmup);
    // Events of the run's writes may still be on their way: count until they stop.
    let mut last = seen.events.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = seen.events.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let elapsed = started.elapsed().as_secs_f64() - 0.2;
    let events = (last - before) as f64;
    let written = field(&run, "achieved_rate");
    let events_rate = events / elapsed;
    println!(
        "throughput: {events_rate:.0} events/s delivered to one subscription ({events:.0} in {elapsed:.1} s) \
         while the generator wrote {written:.0} sets/s"
    );
    summary.push(format!(
        "one subscription: {events_rate:.0} events/s (target ≥ 100000): {}",
        verdict(events_rate >= 100_000.0)
    ));
    drop(server);

    // 2. set latency at a fixed rate, without and with three subscriptions.
    let server = fresh(&s);
    let peak = field(&writes(&s, None, warmup), "achieved_rate");
    let rate = format!("{:.0}", peak / 3.0);
    let quiet = writes(&s, Some(&rate), warmup);
    let subscribers: Vec<Arc<Seen>> = (0..3)
        .map(|i| {
            let seen = Arc::new(Seen::default());
            subscribe(&format!("audit-{i}"), seen.clone());
            seen
        })
        .collect();
    let busy = writes(&s, Some(&rate), warmup);
    let delivered: u64 = subscribers
        .iter()
        .map(|x| x.events.load(Ordering::Relaxed))
        .sum();
    let (p99_0, p99_3) = (field(&quiet, "p99_us"), field(&busy, "p99_us"));
    println!(
        "set at {rate}/s (a third of the {peak:.0}/s peak): p99 {p99_0:.0} µs, p99.9 {:.0} µs with no \
         subscription; p99 {p99_3:.0} µs, p99.9 {:.0} µs with three ({delivered} events delivered)",
        field(&quiet, "p999_us"),
        field(&busy, "p999_us"),
    );
    summary.push(format!(
        "set p99 with three subscriptions: {:.2}× the p99 with none (target ≤ 1.10×): {}",
        p99_3 / p99_0,
        verdict(p99_3 <= 1.10 * p99_0)
    ));
    drop(server);

    // 3. Commit to handler at half the peak write rate.
    let server = fresh(&s);
    let seen = Arc::new(Seen::default());
    subscribe("latency", seen.clone());
    let half = format!("{:.0}", peak / 2.0);
    writes(&s, Some(&half), "0s");
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = seen
        .latency_ms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    lat.sort_unstable();
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(-1),
    );
    println!(
        "commit to handler at {half} sets/s (half the peak), {} events: p50 {p50} ms, p99 {p99} ms, max {max} ms \
         (whole milliseconds)",
        lat.len()
    );
    summary.push(format!(
        "commit-to-handler p99 at half the peak write rate: {p99} ms (target < 5 ms): {}",
        verdict(p99 < 5)
    ));
    drop(server);

    println!("\nTargets (events issue):");
    for line in summary {
        println!("- {line}");
    }
}
