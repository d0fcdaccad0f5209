//! Durability costs, on a real data directory (under cargo's target tmp dir):
//! - `set` with `fsync always` from 1 writer (sequential) and from 64 concurrent
//!   writers (tasks on one tokio thread): median and p99 latency, throughput, and the
//!   WAL records per `fdatasync` that group commit achieves;
//! - recovery: the time to open a data directory holding 1 M items of ~100-byte values
//!   (written with `fsync never`, closed cleanly), replaying the whole WAL; then the
//!   time to snapshot them and to open again from the snapshot.
//!
//! Run with `cargo bench -p ampd-benches --bench durable_set`; without `--bench` it runs
//! a short round on small numbers.

// See shard_ops.rs: cross-thread frees, mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ampd_benches::{is_bench_run, key, preload, value};
use ampd_engine::{Config, Db, FsyncPolicy, SetOptions};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("durable-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &Path, shards: usize, fsync: FsyncPolicy) -> Db {
    Db::open(Config {
        shards,
        pin: true,
        data_dir: Some(dir.to_owned()),
        fsync,
        // Snapshots only when the bench asks for one.
        snapshot_wal_bytes: u64::MAX,
        ..Config::default()
    })
    .expect("the engine opens")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn report(what: &str, mut latencies: Vec<Duration>, secs: f64, per_fsync: f64) {
    latencies.sort_unstable();
    println!(
        "{what:<28} {:>8.0} ops/s  p50 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}  {per_fsync:.1} writes/fsync",
        latencies.len() as f64 / secs,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}

fn one_writer(db: &Db, window: Duration) {
    let (r0, s0) = db.wal_counters();
    let v = value(1);
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < window {
        let t = Instant::now();
        futures::executor::block_on(db.set(&key(i % 10_000), v.clone(), &SetOptions::default()))
            .expect("set");
        latencies.push(t.elapsed());
        i += 1;
    }
    let (r1, s1) = db.wal_counters();
    let per_fsync = (r1 - r0) as f64 / (s1 - s0).max(1) as f64;
    report(
        "set, fsync always, 1 writer",
        latencies,
        started.elapsed().as_secs_f64(),
        per_fsync,
    );
}

fn many_writers(db: &Db, writers: u64, window: Duration) {
    let (r0, s0) = db.wal_counters();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let v = Rc::new(value(2));
    let end = Instant::now() + window;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (db, v) = (db.clone(), v.clone());
            local.spawn_local(async move {
                let mut latencies = Vec::new();
                let mut i = w;
                while Instant::now() < end {
                    let t = Instant::now();
                    db.set(&key(i % 100_000), (*v).clone(), &SetOptions::default())
                        .await
                        .expect("set");
                    latencies.push(t.elapsed());
                    i += writers;
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(local.run_until(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("a writer finishes"));
        }
        all
    }));
    let secs = started.elapsed().as_secs_f64();
    let (r1, s1) = db.wal_counters();
    let per_fsync = (r1 - r0) as f64 / (s1 - s0).max(1) as f64;
    report(
        &format!("set, fsync always, {writers} writers"),
        latencies,
        secs,
        per_fsync,
    );
}

fn main() {
    let bench = is_bench_run();
    let window = if bench {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(100)
    };
    let recovery_items = if bench { 1_000_000 } else { 5_000 };
    for shards in [1, 2] {
        let d = dir(&format!("always-{shards}"));
        let db = open(&d, shards, FsyncPolicy::Always);
        println!("{shards} shard(s):");
        one_writer(&db, window);
        many_writers(&db, 64, window);
        drop(db);
        let _ = std::fs::remove_dir_all(&d);
    }
    let d = dir("recovery");
    {
        let db = open(&d, 2, FsyncPolicy::Never);
        preload(&db, recovery_items);
    }
    let bytes: u64 = walk_size(&d);
    let started = Instant::now();
    let db = open(&d, 2, FsyncPolicy::Always);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(db.stored_item_count() as u64, recovery_items);
    println!(
        "recovery: {recovery_items} items, {:.0} MiB of WAL, opened in {secs:.2} s ({:.0} items/s)",
        bytes as f64 / (1 << 20) as f64,
        recovery_items as f64 / secs
    );
    let started = Instant::now();
    let written = futures::executor::block_on(db.snapshot()).expect("snapshot");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "snapshot: {written} items in {secs:.2} s ({:.0} items/s), WAL it covers removed",
        written as f64 / secs
    );
    drop(db);
    let bytes = walk_size(&d);
    let started = Instant::now();
    let db = open(&d, 2, FsyncPolicy::Always);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(db.stored_item_count() as u64, recovery_items);
    println!(
        "recovery from the snapshot: {recovery_items} items, {:.0} MiB on disk, opened in {secs:.2} s",
        bytes as f64 / (1 << 20) as f64
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&d);
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_size(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}
