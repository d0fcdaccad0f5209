//! What a snapshot costs the readers: point reads (`get_one` of random keys among 1 M
//! items of ~100-byte values) from one thread, timed one by one into an HDR histogram,
//! in alternating rounds without and with snapshots running back to back (the walk and
//! encoding on the snapshot thread, the writes on the shard's executor). Prints the
//! median over rounds of each percentile, the ratio busy/quiet, and the snapshot
//! throughput in items per second.
//!
//! Run with `cargo bench -p ampd-benches --bench snapshot_reads`; without `--bench` it
//! runs a short round on small numbers.

// See shard_ops.rs: cross-thread frees, mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ampd_benches::{is_bench_run, item_count, preload, random_keys};
use ampd_engine::{Config, Db, FsyncPolicy};
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PERCENTILES: [f64; 4] = [50.0, 99.0, 99.9, 99.99];

/// Reads for `how_long`; the latency percentiles in ns and the reads per second.
fn read_round(db: &Db, keys: &[String], how_long: Duration) -> (Vec<u64>, f64) {
    let mut histogram = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let started = Instant::now();
    let mut reads = 0u64;
    'outer: loop {
        for key in keys {
            let at = Instant::now();
            let item = db.get_one(key).expect("a valid key");
            histogram.saturating_record(at.elapsed().as_nanos() as u64);
            assert!(item.is_some(), "{key} was preloaded");
            reads += 1;
            if reads.is_multiple_of(1024) && started.elapsed() >= how_long {
                break 'outer;
            }
        }
    }
    let ps = PERCENTILES
        .iter()
        .map(|&p| histogram.value_at_percentile(p))
        .collect();
    (ps, reads as f64 / started.elapsed().as_secs_f64())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let bench = is_bench_run();
    let items = item_count();
    let (rounds, round_len) = if bench {
        (5, Duration::from_secs(3))
    } else {
        (1, Duration::from_millis(300))
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("snapshot-reads");
    let _ = std::fs::remove_dir_all(&dir);
    let db = Db::open(Config {
        shards: 1,
        pin: true,
        data_dir: Some(dir.clone()),
        fsync: FsyncPolicy::Never,
        snapshot_wal_bytes: u64::MAX,
        ..Config::default()
    })
    .expect("the engine opens");
    preload(&db, items);
    let keys = random_keys(items, 100_000, 7);

    let snapshotting = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let mut quiet: Vec<Vec<u64>> = Vec::new();
    let mut busy: Vec<Vec<u64>> = Vec::new();
    let mut rates = (Vec::new(), Vec::new());
    let mut snapshot_rates = Vec::new();
    std::thread::scope(|s| {
        let snapshotter = s.spawn(|| {
            let mut rates = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if !snapshotting.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let started = Instant::now();
                let n = futures::executor::block_on(db.snapshot()).expect("snapshot");
                rates.push(n as f64 / started.elapsed().as_secs_f64());
            }
            rates
        });
        // Warm the caches and the histogram code once.
        read_round(&db, &keys, round_len / 3);
        for _ in 0..rounds {
            let (ps, rate) = read_round(&db, &keys, round_len);
            quiet.push(ps);
            rates.0.push(rate);
            snapshotting.store(true, Ordering::Relaxed);
            let (ps, rate) = read_round(&db, &keys, round_len);
            snapshotting.store(false, Ordering::Relaxed);
            busy.push(ps);
            rates.1.push(rate);
        }
        stop.store(true, Ordering::Relaxed);
        snapshot_rates = snapshotter.join().expect("the snapshot thread");
    });

    println!("point reads of {items} items, 1 reader thread, {rounds} rounds of {round_len:?} each (medians)");
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "", "quiet", "snapshots", "ratio"
    );
    for (i, p) in PERCENTILES.iter().enumerate() {
        let q = median(quiet.iter().map(|r| r[i] as f64).collect());
        let b = median(busy.iter().map(|r| r[i] as f64).collect());
        println!(
            "{:<22} {:>8.2}µs {:>8.2}µs {:>9.2}x",
            format!("p{p}"),
            q / 1e3,
            b / 1e3,
            b / q
        );
    }
    let (q, b) = (median(rates.0), median(rates.1));
    println!("{:<22} {:>10.0} {:>10.0} {:>9.2}x", "reads/s", q, b, b / q);
    if !snapshot_rates.is_empty() {
        println!(
            "snapshots: {} taken, median {:.2} M items/s",
            snapshot_rates.len(),
            median(snapshot_rates) / 1e6
        );
    }
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
