//! Throughput of the embedded engine with concurrent callers, for 1 and 2 shards, on
//! the preloaded data set of `ampd_benches` (1 M items when benchmarking):
//! - `set` / `set_overwrite`: 64 tasks on one tokio current-thread runtime, each
//!   looping awaited sets (update-merge, or overwrite) over its own keys.
//! - `set_local` / `set_local_overwrite`: 64 tasks on each shard's own executor
//!   (`Db::spawn_on`), each looping awaited sets over keys its shard owns, so every
//!   write is applied in place (how the server will run its connections).
//! - `get_one`: reads are synchronous, so 1 and 2 OS threads looping `get_one` on
//!   random existing keys.
//!
//! Each figure is ops started in a fixed window after a warm-up, measured three times;
//! the line prints the median and the three runs. The target is ≥ 1 M set/s
//! per shard with concurrent callers.
//!
//! Run with `cargo bench -p ampd-benches --bench set_throughput`; without `--bench`
//! (`cargo test --benches`) it runs one short round on a small data set.

// Writes allocate on the caller's thread and free on the shard's (and back): glibc's
// allocator serialises such frees on an arena lock (7% of the caller's time in
// `__lll_lock_wait_private`), mimalloc does not. See ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ampd_benches::{is_bench_run, item_count, key, open, preload, random_keys, value};
use ampd_engine::{Db, SetOptions, Value};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent writers.
const CALLERS: u64 = 64;
/// Keys each writer cycles through.
const KEYS_PER_CALLER: u64 = 1024;

/// How long each measurement warms up and runs, and how often it is repeated.
struct Plan {
    warm_up: Duration,
    window: Duration,
    runs: usize,
}

fn main() {
    let plan = if is_bench_run() {
        Plan {
            warm_up: Duration::from_secs(1),
            window: Duration::from_secs(3),
            runs: 3,
        }
    } else {
        Plan {
            warm_up: Duration::from_millis(20),
            window: Duration::from_millis(50),
            runs: 1,
        }
    };
    let items = item_count();
    println!(
        "set_throughput: {items} items preloaded, {}s window after {}s warm-up, median of {}",
        plan.window.as_secs_f64(),
        plan.warm_up.as_secs_f64(),
        plan.runs
    );
    for shards in [1usize, 2] {
        let db = open(shards);
        preload(&db, items);
        for (name, options) in [
            ("set", SetOptions::default()),
            ("set_overwrite", SetOptions::default().overwrite()),
        ] {
            let rates = measure(&plan, || set_rate(&db, &options, items, &plan));
            report(name, shards, &format!("{CALLERS} tasks"), &rates);
        }
        for (name, options) in [
            ("set_local", SetOptions::default()),
            ("set_local_overwrite", SetOptions::default().overwrite()),
        ] {
            let rates = measure(&plan, || set_local_rate(&db, &options, items, &plan));
            report(name, shards, &format!("{CALLERS}/shard"), &rates);
        }
        for threads in [1usize, 2] {
            let rates = measure(&plan, || get_rate(&db, items, threads, &plan));
            report("get_one", shards, &format!("{threads} threads"), &rates);
        }
        drop(db);
    }
}

/// Runs `f` `plan.runs` times and returns the rates, sorted.
fn measure(plan: &Plan, mut f: impl FnMut() -> f64) -> Vec<f64> {
    let mut rates: Vec<f64> = (0..plan.runs).map(|_| f()).collect();
    rates.sort_by(f64::total_cmp);
    rates
}

fn report(op: &str, shards: usize, callers: &str, sorted_rates: &[f64]) {
    let median = sorted_rates[sorted_rates.len() / 2];
    let runs: Vec<String> = sorted_rates
        .iter()
        .map(|r| format!("{:.0}", r / 1000.0))
        .collect();
    println!(
        "{op:<14} shards={shards} {callers:<9} {:>9.0} ops/s  (runs, k ops/s: {})",
        median,
        runs.join(" ")
    );
}

/// Sets per second from [`CALLERS`] tasks on one current-thread runtime.
fn set_rate(db: &Db, options: &SetOptions, items: u64, plan: &Plan) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime starts");
    let start = Instant::now() + plan.warm_up;
    let end = start + plan.window;
    let v = Rc::new(value(7));
    let options = Rc::new(options.clone());
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            // Caller `c` owns items `c, c + 64, c + 128, ...`: distinct keys, spread
            // over namespaces and so over shards.
            let keys: Vec<String> = (0..KEYS_PER_CALLER)
                .map(|j| key((c + CALLERS * j) % items))
                .collect();
            let (db, v, options) = (db.clone(), v.clone(), options.clone());
            local.spawn_local(async move { set_loop(&db, &keys, &v, &options, start, end).await })
        })
        .collect();
    let total: u64 = runtime.block_on(local.run_until(async {
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("a caller task finishes");
        }
        total
    }));
    total as f64 / plan.window.as_secs_f64()
}

/// Sets per second from [`CALLERS`] tasks on each shard's executor, each writing keys
/// of its own shard.
fn set_local_rate(db: &Db, options: &SetOptions, items: u64, plan: &Plan) -> f64 {
    let start = Instant::now() + plan.warm_up;
    let end = start + plan.window;
    let shards = db.shard_count();
    // Keys of the data set, dealt out to the shard that owns each.
    let mut owned: Vec<Vec<String>> = vec![Vec::new(); shards];
    for i in 0..items.min(CALLERS * KEYS_PER_CALLER * shards as u64) {
        let k = key(i);
        let s = db.shard_for(&ampd_engine::Key::parse(&k).expect("a valid key"));
        owned[s].push(k);
    }
    let waits: Vec<_> = owned
        .into_iter()
        .enumerate()
        .flat_map(|(s, keys)| {
            let per_caller = keys.len().div_ceil(CALLERS as usize).max(1);
            let chunks: Vec<Vec<String>> =
                keys.chunks(per_caller).map(<[String]>::to_vec).collect();
            chunks.into_iter().map(move |chunk| (s, chunk))
        })
        .map(|(s, chunk)| {
            let (db2, options) = (db.clone(), options.clone());
            db.spawn_on(s, move || async move {
                let v = value(7);
                set_loop(&db2, &chunk, &v, &options, start, end).await
            })
        })
        .collect();
    let total: u64 = futures::executor::block_on(futures::future::join_all(waits))
        .into_iter()
        .map(|r| r.expect("a caller task finishes"))
        .sum();
    total as f64 / plan.window.as_secs_f64()
}

/// One caller: awaited sets until `end`, counting those started from `start` on.
async fn set_loop(
    db: &Db,
    keys: &[String],
    v: &Value,
    options: &SetOptions,
    start: Instant,
    end: Instant,
) -> u64 {
    let mut count = 0;
    for k in keys.iter().cycle() {
        let t = Instant::now();
        if t >= end {
            break;
        }
        db.set(k, v.clone(), options).await.expect("set succeeds");
        count += u64::from(t >= start);
    }
    count
}

/// `get_one` calls per second from `threads` OS threads.
fn get_rate(db: &Db, items: u64, threads: usize, plan: &Plan) -> f64 {
    let keys = Arc::new(random_keys(items, 1 << 16, 3));
    let start = Instant::now() + plan.warm_up;
    let end = start + plan.window;
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let keys = keys.clone();
                s.spawn(move || {
                    let mut count = 0u64;
                    let offset = t * keys.len() / threads;
                    for k in keys.iter().cycle().skip(offset) {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        std::hint::black_box(db.get_one(k).expect("get_one succeeds"));
                        count += u64::from(now >= start);
                    }
                    count
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reader thread finishes"))
            .sum()
    });
    total as f64 / plan.window.as_secs_f64()
}
