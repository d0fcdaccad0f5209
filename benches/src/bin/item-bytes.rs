//! What an item really costs in memory, against what the cache tier counts for it
//! (`evict::cost`), to keep the budget honest
//! (`cargo run --release -p ampd-benches --bin item-bytes -- [--items N]`).
//!
//! Fills an in-memory engine of one shard with N items (keys `k{i}`, 100-byte string
//! values), without and then with one label each, and prints per item: the bytes
//! allocated (counted by this binary's allocator), the growth of the resident set,
//! and what the engine counts.

use ampd_benches::allocated_by;
use ampd_engine::{Config, Db, SetOptions};
use serde_json::json;

#[global_allocator]
static GLOBAL: ampd_benches::Counted = ampd_benches::Counted;

fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn fill(items: u64, labelled: bool) {
    let db = Db::open(Config {
        shards: 1,
        pin: false,
        ..Config::default()
    })
    .expect("engine opens");
    let value = json!("v".repeat(98));
    let r0 = resident_bytes();
    let ((), allocated) = allocated_by(|| {
        for i in 0..items {
            let options = if labelled {
                SetOptions::default().label(1, format!("g{}", i % 100))
            } else {
                SetOptions::default()
            };
            futures::executor::block_on(db.set(&format!("k{i}"), value.clone(), &options))
                .expect("set");
        }
    });
    let allocated = allocated as f64 / items as f64;
    let resident = (resident_bytes() - r0) as f64 / items as f64;
    let counted = db.cache_stats()[0].used as f64 / items as f64;
    println!(
        "{} label: allocated {allocated:.0} B/item, resident {resident:.0} B/item, counted {counted:.0} B/item",
        if labelled { "one" } else { "no" }
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut items = 1_000_000u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--items" => items = args.next().and_then(|n| n.parse().ok()).expect("--items N"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    println!("{items} items, keys k{{i}}, 100-byte string values, one shard in memory");
    fill(items, false);
    fill(items, true);
}
