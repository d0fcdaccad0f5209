//! The cache tier side by side with Redis at one budget (`benches/cache-vs-redis.sh`).
//!
//! The budget B is the memory Redis reports (`used_memory`) holding `room` items of
//! 100-byte values (100,000; `--quick`: 10,000), given to both: Redis `maxmemory B`
//! with `allkeys-lru` and `allkeys-lfu`, ampd `--max-memory B` with `--eviction s3fifo`
//! and `lru` (in memory, one shard). Each runs `ampd-loadgen --cache-aside` (a get, and
//! a set on a miss) over `keys` keys (10 × room) drawn from zipf(alpha), alpha 0.99,
//! 0.7 and 1.2: `requests` warm-up operations, then `requests` measured (10 M;
//! `--quick`: 500 k). Servers on core 0, the generator on core 1. Prints a row per run
//! and the targets.
//!
//! Usage: `cache-vs-redis [--quick] [--ampd BIN] [--loadgen BIN]`.

use ampd_benches::{pinned, Spawned};
use serde_json::Value;
use std::process::Command;

const AMPD_PORT: u16 = 7394;
const REDIS_PORT: u16 = 7395;

struct Settings {
    ampd: String,
    loadgen: String,
    room: u64,
    requests: u64,
}

/// A server of a run: its process and how the generator reaches it.
struct Server {
    _process: Spawned,
    port: u16,
    redis: bool,
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &REDIS_PORT.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Redis with no persistence, `maxmemory` and `policy` when given.
fn redis(limit: Option<(u64, &str)>) -> Server {
    let budget;
    let mut args = vec!["--appendonly", "no"];
    if let Some((bytes, policy)) = limit {
        budget = bytes.to_string();
        args.extend(["--maxmemory", &budget, "--maxmemory-policy", policy]);
    }
    Server {
        _process: Spawned::redis(REDIS_PORT, &args, Spawned::scratch("cache-redis")),
        port: REDIS_PORT,
        redis: true,
    }
}

/// ampd in memory, one shard, with the budget and policy.
fn ampd(s: &Settings, budget: u64, policy: &str) -> Server {
    let addr = format!("127.0.0.1:{AMPD_PORT}");
    let budget = budget.to_string();
    let args = [
        "--in-memory",
        "--shards",
        "1",
        "--addr",
        &addr,
        "--max-memory",
        &budget,
        "--eviction",
        policy,
    ];
    let process = Spawned::ampd(&s.ampd, "0", &args, Spawned::scratch("cache-ampd"))
        .unwrap_or_else(|e| panic!("ampd did not start: {e}"));
    Server {
        _process: process,
        port: AMPD_PORT,
        redis: false,
    }
}

/// The generator against `server` (pinned to core 1); its JSON result.
fn loadgen(s: &Settings, server: &Server, args: &[&str]) -> Value {
    let mut command = pinned("1", &s.loadgen);
    command
        .args(["--addr", &format!("127.0.0.1:{}", server.port)])
        .args(["--value-size", "100", "--namespaces", "0", "--json"])
        .args(args);
    if server.redis {
        command.arg("--redis");
    }
    ampd_benches::loadgen_json(command, if server.redis { "Redis" } else { "ampd" })
}

/// `used_memory` of the running Redis.
fn used_memory() -> u64 {
    redis_cli(&["info", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut s = Settings {
        ampd: "target/release/ampd".into(),
        loadgen: "target/release/ampd-loadgen".into(),
        room: 100_000,
        requests: 10_000_000,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                s.room = 10_000;
                s.requests = 500_000;
            }
            "--ampd" => s.ampd = args.next().expect("--ampd BIN"),
            "--loadgen" => s.loadgen = args.next().expect("--loadgen BIN"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let keys = 10 * s.room;

    // B: what Redis reports holding `room` items.
    let budget = {
        let server = redis(None);
        let room = s.room.to_string();
        loadgen(
            &s,
            &server,
            &[
                "--keys",
                &room,
                "--preload",
                "--max",
                "--duration",
                "100ms",
                "--warmup",
                "0s",
            ],
        );
        used_memory()
    };
    println!(
        "B = {budget} bytes (Redis used_memory holding {} items of 100-byte values); {keys} keys, \
         {} warm-up + {} measured cache-aside requests",
        s.room, s.requests, s.requests
    );
    println!("| alpha | Redis allkeys-lru | Redis allkeys-lfu | ampd s3fifo | ampd lru |");
    println!("| --- | --- | --- | --- | --- |");
    let mut targets = Vec::new();
    for alpha in ["0.99", "0.7", "1.2"] {
        let (keys, requests) = (keys.to_string(), s.requests.to_string());
        let run = |server: &Server| -> f64 {
            let result = loadgen(
                &s,
                server,
                &[
                    "--cache-aside",
                    "--dist",
                    "zipfian",
                    "--zipf-alpha",
                    alpha,
                    "--keys",
                    &keys,
                    "--max",
                    "--connections",
                    "4",
                    "--pipeline",
                    "8",
                    "--warmup-requests",
                    &requests,
                    "--requests",
                    &requests,
                ],
            );
            result["hit_ratio"].as_f64().unwrap_or(f64::NAN)
        };
        let lru = run(&redis(Some((budget, "allkeys-lru"))));
        let lfu = run(&redis(Some((budget, "allkeys-lfu"))));
        let s3fifo = run(&ampd(&s, budget, "s3fifo"));
        let ours_lru = run(&ampd(&s, budget, "lru"));
        println!("| {alpha} | {lru:.4} | {lfu:.4} | {s3fifo:.4} | {ours_lru:.4} |");
        let best = lru.max(lfu);
        let (need, floor) = if alpha == "0.99" {
            (
                (best + 0.03).max(0.80),
                "≥ 0.80 and 3 points above Redis's better",
            )
        } else {
            (best, "not below Redis's better")
        };
        targets.push(format!(
            "alpha {alpha}: s3fifo {s3fifo:.4} vs Redis's better {best:.4} (target {floor}): {}",
            if s3fifo >= need { "met" } else { "missed" }
        ));
    }
    println!("\nTargets (cache tier issue):");
    for t in targets {
        println!("- {t}");
    }
}
