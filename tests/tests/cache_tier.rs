//! The cache tier of the embedded engine (`Config::max_memory` + `Config::eviction`):
//! `lru` against an exact LRU model on small traces, the budget held by `s3fifo`
//! under concurrent writers on several shards, evictions as `deleted` events marked
//! `evicted`, evictions that survive a restart, `none` refusing writes at the budget,
//! and stats that add up.
//!
//! Guards against a shard that passes its budget, an eviction of a write not yet
//! acknowledged (the key being written), evictions lost by recovery, and counters that
//! drift from what the shard holds.

use ampd_engine::evict::{cost_of, value_cost, ITEM_OVERHEAD};
use ampd_engine::{Config, Db, ErrorCode, Event, Eviction, SetOptions};
use proptest::prelude::*;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn open(shards: usize, max_memory: u64, eviction: Eviction, dir: Option<&std::path::Path>) -> Db {
    Db::open(Config {
        shards,
        pin: false,
        max_memory: Some(max_memory),
        eviction,
        data_dir: dir.map(|d| d.to_owned()),
        ..Config::default()
    })
    .expect("engine opens")
}

fn set(db: &Db, key: &str, value: serde_json::Value) -> Result<(), ErrorCode> {
    futures::executor::block_on(db.set(key, value, &SetOptions::default()))
        .map(drop)
        .map_err(|e| e.code())
}

/// The simple keys the shards hold, in order, read by a scan (which, unlike a `get`
/// of a key, is not a use that eviction counts).
fn resident(db: &Db) -> Vec<String> {
    match db.get("*", &ampd_engine::QueryOptions::default()).unwrap() {
        ampd_engine::Got::Page(p) => p.items.iter().map(|i| i.key().to_owned()).collect(),
        other => panic!("{other:?}"),
    }
}

/// Waits until `f` holds, for at most 10 s (a stall, not a slow machine, fails it).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A value whose item costs the same for every key of `key_len` bytes.
fn value() -> serde_json::Value {
    json!("v".repeat(40))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With room for 4 items of one cost (and so never more than `lru` samples), `lru`
    /// is exact: after every get and set, the resident keys are the model's.
    #[test]
    fn lru_keeps_what_an_exact_lru_keeps(ops in prop::collection::vec((any::<bool>(), 0..8usize), 1..80)) {
        let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        let item = cost_of("k0", &value());
        let db = open(1, 4 * item + item / 2, Eviction::Lru, None);
        let mut model: VecDeque<String> = VecDeque::new(); // most recent at the back
        for (is_set, k) in ops {
            let key = &keys[k];
            let held = model.iter().position(|m| m == key);
            if is_set {
                set(&db, key, value()).unwrap();
                if let Some(at) = held {
                    model.remove(at);
                }
                model.push_back(key.clone());
                if model.len() > 4 {
                    model.pop_front();
                }
            } else {
                let got = db.get_one(key).unwrap();
                prop_assert_eq!(got.is_some(), held.is_some(), "get {}", key);
                if let Some(at) = held {
                    let k = model.remove(at).unwrap();
                    model.push_back(k);
                }
            }
            let mut want: Vec<String> = model.iter().cloned().collect();
            want.sort();
            prop_assert_eq!(resident(&db), want);
        }
    }
}

/// Four writers on two shards fill an `s3fifo` cache far past its budget: no shard
/// ever counts more than its part, the counters add up to what is stored, and reads
/// of the hot keys mostly hit.
#[test]
fn s3fifo_holds_the_budget_under_concurrent_writers() {
    let budget = 400_000;
    let db = Arc::new(open(2, budget, Eviction::S3Fifo, None));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..3000 {
                    let key = format!("n{}:{w}-{i}", i % 7);
                    let size = 10 + (i * 37 + w * 11) % 900;
                    set(&db, &key, json!("x".repeat(size))).unwrap();
                    // A few hot keys, read often, set when missing (cache-aside).
                    let hot = format!("hot:{}", i % 5);
                    if db.get_one(&hot).unwrap().is_none() {
                        set(&db, &hot, json!(i)).unwrap();
                    }
                    for s in db.cache_stats() {
                        assert!(s.used <= s.budget.unwrap(), "{s:?}");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let stats = db.cache_stats();
    let used: u64 = stats.iter().map(|s| s.used).sum();
    assert!(used <= budget && used > budget / 2, "{stats:?}");
    assert!(stats.iter().all(|s| s.budget == Some(budget / 2)));
    let evictions: u64 = stats.iter().map(|s| s.evictions).sum();
    assert!(evictions > 1000, "{stats:?}");
    // What the shards count is what they hold.
    let mut counted = 0;
    for ns in (0..7).map(|n| format!("n{n}")).chain(["hot".to_owned()]) {
        counted += costs_under(&db, &format!("{ns}:*"));
    }
    assert_eq!(counted, used, "the counters are what the shards hold");
    let hits: u64 = stats.iter().map(|s| s.hits).sum();
    let misses: u64 = stats.iter().map(|s| s.misses).sum();
    assert!(hits > misses, "hot keys stay: {hits} hits, {misses} misses");
}

/// What the items under `pattern` count, page by page.
fn costs_under(db: &Db, pattern: &str) -> u64 {
    let options = ampd_engine::QueryOptions {
        limit: Some(1000),
        ..Default::default()
    };
    let mut page = match db.get(pattern, &options).unwrap() {
        ampd_engine::Got::Page(p) => p,
        other => panic!("{other:?}"),
    };
    let mut total = 0;
    loop {
        total += page
            .items
            .iter()
            .map(|i| cost_of(i.key(), &i.value()))
            .sum::<u64>();
        match db.next_page(&page).unwrap() {
            Some(next) => page = next,
            None => return total,
        }
    }
}

/// An eviction is a `deleted` event marked `evicted`, with the item it removed.
#[test]
fn an_eviction_is_a_deleted_event_marked_evicted() {
    let item = cost_of("k0", &value());
    let db = open(1, 2 * item + item / 2, Eviction::S3Fifo, None);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    db.on("deleted", move |e: Event| {
        sink.lock()
            .unwrap()
            .push((e.item.key().to_owned(), e.evicted, e.to_json()));
        std::future::ready(Ok::<(), String>(()))
    })
    .unwrap();
    for k in ["k0", "k1", "k2"] {
        set(&db, k, value()).unwrap();
    }
    eventually("the eviction's event", || seen.lock().unwrap().len() == 1);
    let (key, evicted, json) = seen.lock().unwrap()[0].clone();
    assert_eq!((key.as_str(), evicted), ("k0", true));
    assert_eq!(json["evicted"], json!(true));
    assert_eq!(json["previous"]["value"], value());
}

/// Evictions are logged: after a restart the evicted keys are still gone and the
/// counters start from what was recovered.
#[test]
fn evictions_survive_a_restart() {
    let dir = ampd_tests::temp_dir("cache-tier-restart");
    let item = cost_of("k00", &value());
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    let before = {
        let db = open(1, 5 * item, Eviction::S3Fifo, Some(&dir));
        for k in &keys {
            set(&db, k, value()).unwrap();
        }
        assert_eq!(db.cache_stats()[0].evictions, 15);
        resident(&db)
    };
    assert_eq!(before.len(), 5);
    let db = open(1, 5 * item, Eviction::S3Fifo, Some(&dir));
    assert_eq!(resident(&db), before);
    assert_eq!(db.cache_stats()[0].used, 5 * item);
}

/// `none` with a budget refuses the write that would pass it, and stores nothing of it.
#[test]
fn without_eviction_a_full_shard_refuses_writes() {
    let item = cost_of("k0", &value());
    let db = open(1, 2 * item, Eviction::None, None);
    set(&db, "k0", value()).unwrap();
    set(&db, "k1", value()).unwrap();
    assert_eq!(set(&db, "k2", value()), Err(ErrorCode::MemoryLimit));
    assert!(db.get_one("k2").unwrap().is_none());
    // Replacing an item with one of the same size still fits.
    set(&db, "k1", value()).unwrap();
    assert_eq!(db.cache_stats()[0].used, 2 * item);
    assert_eq!(
        item,
        ITEM_OVERHEAD + 2 * 2 + value_cost(ampd_wire::value::encode(&value()).len())
    );
}
