//! The embedded cache tier against moka, an in-process cache (TinyLFU admission in
//! front of LRU), on the same trace and the same budget of memory
//! (`cargo run --release -p ampd-benches --bin embedded-vs-moka -- [--quick]`).
//!
//! Cache-aside from `--threads` application threads (2): each thread draws its own
//! seeded stream of keys from zipf(`--alpha`, 0.99) over `--keys` keys (1,000,000),
//! `get`s each and, on a miss, `set`s it (100-byte values). `--warmup-requests`
//! (2,000,000) then `--requests` (4,000,000), counted over all threads; each thread's
//! stream is drawn before the run, so both caches see the same streams and drawing
//! is not timed. Reported per cache: the hit ratio of the measured requests, their
//! operations (gets and sets) per second of wall time, and nanoseconds per operation
//! per thread.
//!
//! - ampd: the engine in memory (`Db::open`), `--shards` (2), `max_memory` B, eviction
//!   `--policy` (s3fifo; or lru); reads `Db::get_one`, writes `Db::set` driven from the
//!   application thread with `block_on`.
//! - moka: `moka::sync::Cache<String, Bytes>` with `max_capacity` B and a weigher of
//!   key + value + moka's own bytes per entry beyond them, measured here (this binary
//!   counts its allocations: moka filled with as many entries as B holds, in the
//!   shape of the run's), so that both are given B bytes of allocated memory.
//!
//! B (`--budget`) is by default what `keys / 10` items (100,000) count in ampd
//! (`evict::cost_of`). `--quick`: 100,000 keys, 200,000 + 200,000 requests (B for
//! 10,000 items), a few seconds. Progress goes to stderr once a second; the table and
//! the targets (ampd's hit ratio ≥ moka's; ampd's operations per second ≥
//! half of moka's) to stdout.

use ampd_benches::{allocated_by, push_trace_key, trace_key, Rng, Zipf};
use ampd_engine::evict::cost_of;
use ampd_engine::{Config, Db, Eviction, SetOptions, Value};
use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: ampd_benches::Counted = ampd_benches::Counted;

/// Bytes of a value, in both caches (ampd: its stored encoding).
const VALUE_BYTES: usize = 100;
/// Requests a thread serves between two reports to the shared progress counters.
const PROGRESS_EVERY: u64 = 1024;

struct Settings {
    alpha: f64,
    keys: u64,
    threads: usize,
    shards: usize,
    warmup: u64,
    requests: u64,
    budget: Option<u64>,
    policy: Eviction,
}

/// What both caches offer the application.
trait Cache: Sync {
    /// Whether `key` is held.
    fn get(&self, key: &str) -> bool;
    /// Stores the value of `key`; false when the cache refused it.
    fn set(&self, key: String) -> bool;
    /// Items held now.
    fn len(&self) -> u64;
}

struct Ampd {
    db: Db,
    value: Value,
    options: SetOptions,
}

impl Ampd {
    fn open(s: &Settings, budget: Option<u64>) -> Ampd {
        let db = Db::open(Config {
            shards: s.shards,
            pin: false,
            max_memory: budget,
            eviction: if budget.is_some() {
                s.policy
            } else {
                Eviction::None
            },
            ..Config::default()
        })
        .expect("the engine opens");
        Ampd {
            db,
            value: ampd_value(),
            options: SetOptions::default(),
        }
    }
}

/// A string whose encoding is [`VALUE_BYTES`] long (2 bytes of header).
fn ampd_value() -> Value {
    json!("v".repeat(VALUE_BYTES - 2))
}

impl Cache for Ampd {
    fn get(&self, key: &str) -> bool {
        self.db.get_one(key).expect("a get succeeds").is_some()
    }

    fn set(&self, key: String) -> bool {
        // A full shard with nothing it may evict refuses (memory_limit): the miss stands.
        futures::executor::block_on(self.db.set(key, self.value.clone(), &self.options)).is_ok()
    }

    fn len(&self) -> u64 {
        self.db.stored_item_count() as u64
    }
}

struct Moka(moka::sync::Cache<String, Bytes>);

impl Moka {
    /// A cache of `budget` weighed bytes, an entry weighing its key, its value and
    /// `overhead`.
    fn new(budget: u64, overhead: u32) -> Moka {
        Moka(
            moka::sync::Cache::builder()
                .max_capacity(budget)
                .weigher(move |k: &String, v: &Bytes| (k.len() + v.len()) as u32 + overhead)
                .build(),
        )
    }
}

/// A fresh value for moka, as an application makes one per miss. A `Bytes` made from
/// a `Vec` allocates its shared header at its first clone (moka's first `get` of the
/// entry); cloned here, so that every entry has the shape whose bytes were measured.
fn moka_value() -> Bytes {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    drop(value.clone());
    value
}

impl Cache for Moka {
    fn get(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }

    fn set(&self, key: String) -> bool {
        self.0.insert(key, moka_value());
        true
    }

    fn len(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.entry_count()
    }
}

/// Mean bytes of key and value of the entries `0..n` of a trace.
fn payload_bytes(n: u64) -> f64 {
    (0..n).map(|id| trace_key(id).len()).sum::<usize>() as f64 / n as f64 + VALUE_BYTES as f64
}

/// moka's allocated bytes per entry beyond key and value: `n` entries with the keys
/// of trace ids `0..n`, in a cache weighed as the run's (half full at `n / 2` entries,
/// when moka sizes its frequency sketch) that evicts none of them.
fn moka_overhead(n: u64) -> f64 {
    let payload = payload_bytes(n);
    let moka = Moka::new((payload * n as f64) as u64 + 1024, 0);
    let ((), bytes) = allocated_by(|| {
        for id in 0..n {
            moka.set(trace_key(id));
        }
        moka.0.run_pending_tasks();
    });
    assert_eq!(moka.len(), n, "the measuring cache evicted");
    bytes as f64 / n as f64 - payload
}

/// ampd's allocated bytes per item of the same shape beyond key and value (no budget,
/// so nothing is evicted), for the reader to set beside what ampd counts.
fn ampd_overhead(s: &Settings, n: u64) -> f64 {
    let ampd = Ampd::open(s, None);
    let ((), bytes) = allocated_by(|| {
        for id in 0..n {
            assert!(ampd.set(trace_key(id)), "a set without a budget succeeds");
        }
    });
    bytes as f64 / n as f64 - payload_bytes(n)
}

/// Requests served and hits, summed over the threads as they report.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    hits: AtomicU64,
}

/// One thread's count of a phase.
#[derive(Default, Clone, Copy)]
struct Counts {
    hits: u64,
    misses: u64,
    refused: u64,
}

impl Counts {
    fn ops(&self) -> u64 {
        self.hits + 2 * self.misses
    }
}

/// Serves `ids` cache-aside, reporting to `progress` every [`PROGRESS_EVERY`] requests
/// and at the end.
fn serve(cache: &dyn Cache, ids: &[u32], progress: &Progress) -> Counts {
    let mut counts = Counts::default();
    let mut key = String::new();
    let (mut reported_done, mut reported_hits) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        push_trace_key(&mut key, u64::from(*id));
        if cache.get(&key) {
            counts.hits += 1;
        } else {
            counts.misses += 1;
            if !cache.set(key.clone()) {
                counts.refused += 1;
            }
        }
        let done = i as u64 + 1;
        if done.is_multiple_of(PROGRESS_EVERY) || done == ids.len() as u64 {
            progress
                .done
                .fetch_add(done - reported_done, Ordering::Relaxed);
            progress
                .hits
                .fetch_add(counts.hits - reported_hits, Ordering::Relaxed);
            (reported_done, reported_hits) = (done, counts.hits);
        }
    }
    counts
}

/// Prints a line a second until `total` requests are done.
fn watch(name: &str, phase: &str, progress: &Progress, total: u64) {
    let started = Instant::now();
    let mut printed = started;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let done = progress.done.load(Ordering::Relaxed);
        if done >= total {
            return;
        }
        if printed.elapsed() >= Duration::from_secs(1) {
            printed = Instant::now();
            let hits = progress.hits.load(Ordering::Relaxed);
            eprintln!(
                "{name} {phase}: {done}/{total} requests, hit ratio {:.4}, {:.0} requests/s",
                hits as f64 / done.max(1) as f64,
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
}

/// A thread's key stream: the ids of its warm-up requests, then of its measured ones.
struct Stream {
    ids: Vec<u32>,
    warmup: usize,
}

/// The streams of the run: thread `t` draws from its own seed, its share of each phase.
fn streams(s: &Settings) -> Vec<Stream> {
    let zipf = Zipf::new(s.keys, s.alpha);
    let share = |total: u64, t: usize| {
        let threads = s.threads as u64;
        (total / threads + u64::from((t as u64) < total % threads)) as usize
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.threads)
            .map(|t| {
                let zipf = &zipf;
                let (warmup, measured) = (share(s.warmup, t), share(s.requests, t));
                scope.spawn(move || {
                    let mut rng = Rng::new(0x5eed + t as u64);
                    let ids = (0..warmup + measured)
                        .map(|_| zipf.draw(&mut rng) as u32)
                        .collect();
                    Stream { ids, warmup }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a stream is drawn"))
            .collect()
    })
}

struct Row {
    name: String,
    hit_ratio: f64,
    ops_per_s: f64,
    ns_per_op: f64,
    refused: u64,
    held: u64,
}

/// Warms `cache` with every stream's warm-up part, then times the measured parts, one
/// thread per stream, started together.
fn run(name: &str, cache: &dyn Cache, streams: &[Stream], s: &Settings) -> Row {
    let progress = Progress::default();
    let barrier = Barrier::new(streams.len() + 1);
    let (counts, wall) = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|stream| {
                let (progress, barrier) = (&progress, &barrier);
                scope.spawn(move || {
                    let (warmup, measured) = stream.ids.split_at(stream.warmup);
                    serve(cache, warmup, progress);
                    barrier.wait();
                    let started = Instant::now();
                    let counts = serve(cache, measured, progress);
                    (counts, started.elapsed())
                })
            })
            .collect();
        watch(name, "warm-up", &progress, s.warmup);
        // Every thread has reported its warm-up and waits at the barrier.
        progress.done.store(0, Ordering::Relaxed);
        progress.hits.store(0, Ordering::Relaxed);
        barrier.wait();
        let started = Instant::now();
        watch(name, "measured", &progress, s.requests);
        let counts: Vec<(Counts, Duration)> = handles
            .into_iter()
            .map(|h| h.join().expect("a cache thread finishes"))
            .collect();
        (counts, started.elapsed())
    });
    let total = counts.iter().fold(Counts::default(), |a, (c, _)| Counts {
        hits: a.hits + c.hits,
        misses: a.misses + c.misses,
        refused: a.refused + c.refused,
    });
    let ns_per_op = counts
        .iter()
        .map(|(c, took)| took.as_nanos() as f64 / c.ops().max(1) as f64)
        .sum::<f64>()
        / counts.len() as f64;
    let row = Row {
        name: name.to_string(),
        hit_ratio: total.hits as f64 / (total.hits + total.misses) as f64,
        ops_per_s: total.ops() as f64 / wall.as_secs_f64(),
        ns_per_op,
        refused: total.refused,
        held: cache.len(),
    };
    eprintln!(
        "{name}: hit ratio {:.4}, {:.0} ops/s, {:.0} ns/op per thread, {:.2} s",
        row.hit_ratio,
        row.ops_per_s,
        row.ns_per_op,
        wall.as_secs_f64()
    );
    row
}

fn parse() -> Settings {
    let mut s = Settings {
        alpha: 0.99,
        keys: 1_000_000,
        threads: 2,
        shards: 2,
        warmup: 2_000_000,
        requests: 4_000_000,
        budget: None,
        policy: Eviction::S3Fifo,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} takes a value"));
        let mut number = || -> u64 {
            value()
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{a} takes a number"))
        };
        match a.as_str() {
            "--quick" => {
                s.keys = 100_000;
                s.warmup = 200_000;
                s.requests = 200_000;
            }
            "--alpha" => s.alpha = value().parse().expect("--alpha takes a number"),
            "--keys" => s.keys = number(),
            "--threads" => s.threads = number() as usize,
            "--shards" => s.shards = number() as usize,
            "--warmup-requests" => s.warmup = number(),
            "--requests" => s.requests = number(),
            "--budget" => s.budget = Some(number()),
            "--policy" => s.policy = value().parse().unwrap_or_else(|e| panic!("--policy: {e}")),
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(
        s.keys >= 10 && s.keys <= u64::from(u32::MAX),
        "--keys {} is outside 10..=2^32-1",
        s.keys
    );
    assert!(
        s.threads >= 1 && s.shards >= 1,
        "--threads and --shards are at least 1"
    );
    assert!(
        s.policy != Eviction::None,
        "--policy none would not evict: use s3fifo or lru"
    );
    s
}

fn main() {
    // A panicking cache thread would leave the others at the barrier: end the run.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let s = parse();

    let ampd_cost = cost_of(&trace_key(s.keys - 1), &ampd_value());
    let budget = s.budget.unwrap_or(ampd_cost * (s.keys / 10));
    let room = budget / ampd_cost;
    assert!(
        room >= 1,
        "--budget {budget} holds no item ({ampd_cost} bytes each)"
    );
    // Measured again at the number of entries B holds at the first measure's weight,
    // which is the number moka holds in the run (its table grows by doubling).
    let moka_entries = (budget as f64 / (payload_bytes(room) + moka_overhead(room))) as u64;
    let moka_extra = moka_overhead(moka_entries);
    let ampd_extra = ampd_overhead(&s, room);
    println!(
        "zipf({}) over {} keys, {VALUE_BYTES}-byte values, cache-aside from {} threads: \
         {} warm-up + {} measured requests",
        s.alpha, s.keys, s.threads, s.warmup, s.requests
    );
    let ampd_counted = ampd_cost - (trace_key(s.keys - 1).len() + VALUE_BYTES) as u64;
    println!(
        "B = {budget} bytes: {room} items as ampd counts them (evict::cost_of: {ampd_cost} \
         bytes per item, {ampd_counted} beyond key and value)"
    );
    println!(
        "ampd: allocates {ampd_extra:.0} bytes per item beyond key and value (measured \
         over {room} items)"
    );
    println!(
        "moka: allocates {moka_extra:.0} bytes per entry beyond key and value (measured \
         over {moka_entries} entries, what B holds at that weight); its weigher counts \
         key + value + {:.0}",
        moka_extra.ceil()
    );

    let streams = streams(&s);
    let mut rows = Vec::new();
    {
        let name = format!("ampd {} ({} shards)", s.policy, s.shards);
        let ampd = Ampd::open(&s, Some(budget));
        rows.push(run(&name, &ampd, &streams, &s));
    }
    {
        let moka = Moka::new(budget, moka_extra.ceil().max(0.0) as u32);
        rows.push(run("moka", &moka, &streams, &s));
    }

    println!();
    println!("| cache | hit ratio | ops/s | ns/op per thread | items held |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.4} | {:.0} | {:.0} | {} |",
            r.name, r.hit_ratio, r.ops_per_s, r.ns_per_op, r.held
        );
    }
    for r in rows.iter().filter(|r| r.refused > 0) {
        println!("{}: {} sets refused (memory_limit)", r.name, r.refused);
    }
    let (ours, moka) = (&rows[0], &rows[1]);
    println!("\nTargets (cache tier issue, embedded):");
    println!(
        "- hit ratio: ampd {:.4} vs moka {:.4} (target: ≥ moka's): {}",
        ours.hit_ratio,
        moka.hit_ratio,
        if ours.hit_ratio >= moka.hit_ratio {
            "met"
        } else {
            "missed"
        }
    );
    let ratio = ours.ops_per_s / moka.ops_per_s;
    println!(
        "- ops/s: ampd {:.0} vs moka {:.0}, {ratio:.2}× (target: ≥ 0.5×): {}",
        ours.ops_per_s,
        moka.ops_per_s,
        if ratio >= 0.5 { "met" } else { "missed" }
    );
}
