//! Hit ratio of the embedded cache tier's policies on zipfian traces
//! (`cargo run --release -p ampd-benches --bin cache-ratio -- [--keys N]
//! [--requests N] [--room N]`).
//!
//! Cache-aside, as an application uses a cache: each request draws a key from a
//! zipf(alpha) distribution over `--keys` keys, `get`s it and, on a miss, `set`s it
//! (100-byte values), into an in-memory engine of one shard whose budget holds
//! `--room` such items (10% of the keys by default). The first `--requests` warm the
//! cache, the next `--requests` are measured. Rows: each policy at alpha 0.7, 0.99 and
//! 1.2, and at 0.99 with a one-pass scan of as many unrelated keys as the cache holds
//! mixed into the measured half (one scan request every 10 requests). A row prints as
//! it finishes.

use ampd_benches::{trace_key, Rng, Zipf};
use ampd_engine::evict::cost_of;
use ampd_engine::{Config, Db, Eviction, SetOptions};
use serde_json::json;
use std::time::Instant;

struct Row {
    hits: u64,
    misses: u64,
}

fn run(policy: Eviction, alpha: f64, scan: bool, keys: u64, requests: u64, room: u64) -> Row {
    let value = json!("v".repeat(98));
    let item = cost_of(&trace_key(keys - 1), &value);
    let db = Db::open(Config {
        shards: 1,
        pin: false,
        max_memory: Some(room * item),
        eviction: policy,
        ..Config::default()
    })
    .expect("engine opens");
    let zipf = Zipf::new(keys, alpha);
    // Seeded the same for every row: every policy sees the same trace.
    let mut rng = Rng::new(0x5eed);
    let options = SetOptions::default();
    let mut row = Row { hits: 0, misses: 0 };
    let mut scanned = 0u64;
    for i in 0..2 * requests {
        let measured = i >= requests;
        let name = if scan && measured && i % 10 == 0 {
            scanned += 1;
            format!("scan{scanned}")
        } else {
            trace_key(zipf.draw(&mut rng))
        };
        let hit = db.get_one(&name).expect("get").is_some();
        if !hit {
            // A full cache with nothing evictable refuses: the miss stands.
            let _ = futures::executor::block_on(db.set(&name, value.clone(), &options));
        }
        if measured {
            if hit {
                row.hits += 1;
            } else {
                row.misses += 1;
            }
        }
    }
    row
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut keys, mut requests, mut room) = (1_000_000u64, 2_000_000u64, 0u64);
    while let Some(a) = args.next() {
        let mut number = || -> u64 {
            args.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{a} takes a number"))
        };
        match a.as_str() {
            "--keys" => keys = number(),
            "--requests" => requests = number(),
            "--room" => room = number(),
            other => panic!("unknown argument {other:?}"),
        }
    }
    if room == 0 {
        room = keys / 10;
    }
    println!(
        "cache-aside, {keys} keys, room for {room} items, {requests} warm-up + {requests} measured requests"
    );
    println!("| policy | alpha | scan | hit ratio | seconds |");
    println!("| --- | --- | --- | --- | --- |");
    for (alpha, scan) in [(0.99, false), (0.7, false), (1.2, false), (0.99, true)] {
        for policy in [Eviction::S3Fifo, Eviction::Lru] {
            let started = Instant::now();
            let row = run(policy, alpha, scan, keys, requests, room);
            println!(
                "| {policy} | {alpha} | {} | {:.4} | {:.1} |",
                if scan { "yes" } else { "no" },
                row.hits as f64 / (row.hits + row.misses) as f64,
                started.elapsed().as_secs_f64()
            );
        }
    }
}
