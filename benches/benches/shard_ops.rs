//! Per-operation latency of the embedded engine on a preloaded data set (1 M items
//! when benchmarking, see `ampd_benches` for its shape), for 1 and 2 shards.
//!
//! Each group is named by the operation and parameterised by the shard count:
//! - `get_one`: an exact key, picked at random among existing items.
//! - `set`: update (merge) of an existing item with an object value, awaited.
//! - `set_overwrite`: the same with `overwrite`, which skips the merge.
//! - `add`: a counter, awaited.
//! - `range100`: `ns{n}:*` with `limit 100` in a random namespace (~1000 items each).
//! - `label`: `get_by_label("label1", "grp{g}")`, ~50 items at 1 M.
//!
//! A write is awaited from a plain thread (`block_on`), so its latency includes the
//! hand-off to the shard's executor and the wake-up back: what one synchronous caller
//! sees, not throughput (that is `set_throughput`).
//!
//! The engine is built once per shard count; `cargo test --benches` runs each bench
//! once on a small data set.

// Writes allocate on the caller's thread and free on the shard's (and back): glibc's
// allocator serialises such frees on an arena lock (7% of the caller's time in
// `__lll_lock_wait_private`), mimalloc does not. See ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ampd_benches::{
    item_count, label_value, open, preload, random_keys, value, Rng, LABEL_GROUPS, NAMESPACES,
};
use ampd_engine::{Db, QueryOptions, SetOptions};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::executor::block_on;
use serde_json::Number;
use std::time::Duration;

/// Keys picked at random for the point operations, cycled through.
const RANDOM_KEYS: usize = 1 << 16;
/// Counters the `add` bench spreads over.
const COUNTERS: usize = 1024;

fn shard_ops(c: &mut Criterion) {
    let items = item_count();
    for shards in [1usize, 2] {
        let db = open(shards);
        preload(&db, items);
        sanity(&db, items);
        bench_ops(c, &db, items);
        // Dropping the engine joins its executors before the next one starts.
        drop(db);
    }
}

/// Prints what the read benches return, so a wrong data set shows.
fn sanity(db: &Db, items: u64) {
    let k = ampd_benches::key(items / 2);
    let item = db
        .get_one(&k)
        .expect("get_one succeeds")
        .expect("a preloaded key is present");
    let range = db
        .get(&format!("ns{}:*", NAMESPACES / 2), &limit100())
        .expect("range succeeds")
        .to_json(false);
    let label = db
        .get_by_label("label1", &label_value(1), &QueryOptions::default())
        .expect("label query succeeds");
    eprintln!(
        "data set ({} shards): value {} bytes, range page {} items, label page {} items",
        db.shard_count(),
        item.value_bytes().len(),
        range["items"].as_array().map_or(0, Vec::len),
        label.items.len(),
    );
}

fn limit100() -> QueryOptions {
    QueryOptions {
        limit: Some(100),
        ..QueryOptions::default()
    }
}

fn bench_ops(c: &mut Criterion, db: &Db, items: u64) {
    let shards = db.shard_count();
    let keys = random_keys(items, RANDOM_KEYS, 1);
    let id = BenchmarkId::from_parameter(shards);

    c.benchmark_group("get_one")
        .bench_function(id.clone(), |b| {
            let mut n = 0;
            b.iter(|| {
                n = (n + 1) % keys.len();
                black_box(db.get_one(&keys[n]).expect("get_one succeeds"))
            })
        });

    let v = value(7);
    for (name, options) in [
        ("set", SetOptions::default()),
        ("set_overwrite", SetOptions::default().overwrite()),
    ] {
        c.benchmark_group(name).bench_function(id.clone(), |b| {
            let mut n = 0;
            b.iter(|| {
                n = (n + 1) % keys.len();
                black_box(block_on(db.set(&keys[n], v.clone(), &options)).expect("set succeeds"))
            })
        });
    }

    let counters: Vec<String> = (0..COUNTERS).map(|i| format!("ctr{i}")).collect();
    c.benchmark_group("add").bench_function(id.clone(), |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % counters.len();
            black_box(block_on(db.add(&counters[n], None, Number::from(1))).expect("add succeeds"))
        })
    });

    let mut rng = Rng::new(2);
    let patterns: Vec<String> = (0..1024)
        .map(|_| format!("ns{}:*", rng.below(NAMESPACES)))
        .collect();
    let options = limit100();
    c.benchmark_group("range100")
        .bench_function(id.clone(), |b| {
            let mut n = 0;
            b.iter(|| {
                n = (n + 1) % patterns.len();
                black_box(db.get(&patterns[n], &options).expect("range succeeds"))
            })
        });

    let labels: Vec<String> = (0..1024)
        .map(|_| label_value(rng.below(LABEL_GROUPS)))
        .collect();
    let options = QueryOptions::default();
    c.benchmark_group("label").bench_function(id, |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % labels.len();
            black_box(
                db.get_by_label("label1", &labels[n], &options)
                    .expect("label query succeeds"),
            )
        })
    });
}

criterion_group! {
    name = benches;
    // Short runs: the whole file (two 1 M preloads included) stays within minutes on
    // two cores.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = shard_ops
}
criterion_main!(benches);
