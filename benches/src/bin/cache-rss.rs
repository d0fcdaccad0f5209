//! The cache tier's resident memory under churn with mixed value sizes: issue 13's
//! target "under churn with mixed value sizes (64 B – 64 KiB) the process's RSS stays
//! within 1.15 × B + the empty server's RSS".
//!
//! The server is `ampd serve --in-memory --shards 1 --max-memory B --eviction s3fifo`,
//! pinned to core 0. Its empty RSS (`VmRSS` of `/proc/PID/status`) is read once it
//! listens and a `stats` connection is open. Then `ampd-loadgen` on core 1 churns it:
//! `--mix set=100 --value-size-range 64-64KiB` (sizes log-uniform, so every doubling
//! from 64 B to 64 KiB is as likely), uniform over keys enough for 10 × B of values,
//! closed loop (`--max`, 4 connections, 4 in flight each) for a count of sets whose
//! values add up to `--budgets` × B (4 by default, with 3% to spare; the count is
//! worked out from the range's mean size, 9,445 bytes). While it runs, a line on stderr
//! each second gives the RSS and the cache's used bytes, items and evictions. The table
//! gives the empty RSS, the limit 1.15 × B + empty, the peak RSS (`VmHWM`, which no
//! spike between two samples escapes), the highest sampled and the final RSS, what
//! the cache counts as used, and the generator's refusals (`memory_limit`: a write that
//! could not be made room for); then the target, met or missed. A run that evicted
//! nothing did not churn and makes the exit status 1.
//!
//! Run from the workspace root: `cargo build --release -p ampd -p ampd-loadgen -p
//! ampd-benches --bin ampd --bin ampd-loadgen --bin cache-rss && target/release/cache-rss`
//! (with another target folder, give `--ampd` and `--loadgen`).
//!
//! Usage: `cache-rss [--quick] [--ampd BIN] [--loadgen BIN] [--budget-mib N]
//! [--budgets N]`. Defaults: B = 256 MiB, 4 × B written (about 1 GiB, seconds to a
//! minute). `--quick`: B = 16 MiB (a smoke run, not a figure to quote). Binaries
//! default to `target/release/`. It stops only what it starts.

use ampd_benches::{field, flag_value, mib, pinned, process_bytes, Spawned, StatsProbe, Target};
use std::time::Duration;

/// The value sizes, bytes (both included).
const VALUE_SIZE_MIN: u64 = 64;
const VALUE_SIZE_MAX: u64 = 64 * 1024;
/// RSS over B, at most, beyond the empty server's RSS.
const RSS_PER_BUDGET_MAX: f64 = 1.15;
/// Values written beyond the asked bytes, so that the count of sets reaches them for
/// any draw of sizes (the sum of 100,000 sizes strays about 0.5% from its mean).
const WRITTEN_SPARE: f64 = 1.03;
/// Keys of the churn: enough for this many budgets of values.
const KEYS_PER_BUDGET: f64 = 10.0;

struct Settings {
    ampd: String,
    loadgen: String,
    budget: u64,
    /// Bytes of values written, in budgets.
    budgets: u64,
}

/// The mean of the generator's sizes: the floor of a log-uniform draw over
/// [min, max + 1), (max + 1 - min) ÷ ln((max + 1) ÷ min), less half a byte.
fn mean_value_size() -> f64 {
    let (lo, hi) = (VALUE_SIZE_MIN as f64, (VALUE_SIZE_MAX + 1) as f64);
    (hi - lo) / (hi / lo).ln() - 0.5
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut s = Settings {
        ampd: "target/release/ampd".into(),
        loadgen: "target/release/ampd-loadgen".into(),
        budget: 256 << 20,
        budgets: 4,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => s.budget = 16 << 20,
            "--ampd" => s.ampd = flag_value(&mut args, &a),
            "--loadgen" => s.loadgen = flag_value(&mut args, &a),
            "--budget-mib" => s.budget = flag_value::<u64>(&mut args, &a) << 20,
            "--budgets" => s.budgets = flag_value(&mut args, &a),
            other => {
                eprintln!(
                    "usage: cache-rss [--quick] [--ampd BIN] [--loadgen BIN] [--budget-mib N] \
                     [--budgets N] (not {other})"
                );
                std::process::exit(2);
            }
        }
    }
    let budget = s.budget as f64;
    let mean = mean_value_size();
    let sets = (s.budgets as f64 * budget * WRITTEN_SPARE / mean).ceil() as u64;
    let keys = (KEYS_PER_BUDGET * budget / mean).ceil() as u64;

    let dir = Spawned::scratch("cache-rss");
    let budget_arg = s.budget.to_string();
    let server_args = [
        "--addr",
        "127.0.0.1:0",
        "--in-memory",
        "--shards",
        "1",
        "--max-memory",
        &budget_arg,
        "--eviction",
        "s3fifo",
    ];
    let server = Spawned::ampd(&s.ampd, "0", &server_args, dir)
        .unwrap_or_else(|e| panic!("ampd did not start: {e}"));
    let pid = server.child.id();
    let rss = || process_bytes(pid, "VmRSS").unwrap_or(0) as f64;
    let probe = StatsProbe::connect(&server.addr);
    probe.stats();
    // Let what starting allocated settle before reading the empty server.
    std::thread::sleep(Duration::from_millis(200));
    let empty = rss();
    let limit = RSS_PER_BUDGET_MAX * budget + empty;
    println!(
        "## cache-rss: resident memory under churn, values of 64 B to 64 KiB\n\n\
         Machine: {}. Commit {}. ampd serve --in-memory --shards 1 --max-memory {} --eviction s3fifo, \
         core 0; ampd-loadgen core 1: {sets} sets (about {} of values, {} × B and {:.0}% to spare, \
         at a mean of {mean:.0} bytes), log-uniform {VALUE_SIZE_MIN}..{VALUE_SIZE_MAX} bytes, \
         uniform over {keys} keys, closed loop, 4 connections × 4 in flight.\n",
        ampd_benches::machine(),
        ampd_benches::commit(),
        s.budget,
        mib(sets as f64 * mean),
        s.budgets,
        (WRITTEN_SPARE - 1.0) * 100.0,
    );

    let range = format!("{VALUE_SIZE_MIN}-{VALUE_SIZE_MAX}");
    let (keys_arg, sets_arg) = (keys.to_string(), sets.to_string());
    let mut command = pinned("1", &s.loadgen);
    command
        .args(["--addr", &server.addr, "--keys", &keys_arg])
        .args(["--namespaces", "0", "--value-size-range", &range])
        .args(["--mix", "set=100", "--max", "--requests", &sets_arg])
        .args(["--connections", "4", "--pipeline", "4", "--json"]);
    let mut sampled_max = empty;
    let result =
        ampd_benches::loadgen_json_ticking(command, "churn", Duration::from_secs(1), |elapsed| {
            let now = rss();
            sampled_max = sampled_max.max(now);
            let stats = probe.stats();
            eprintln!(
                "cache-rss: {:.0} s: RSS {} (limit {}), used {} of {}, {} items, {} evictions",
                elapsed.as_secs_f64(),
                mib(now),
                mib(limit),
                mib(field(&stats["cache"], "used")),
                mib(budget),
                stats["items"],
                stats["cache"]["evictions"],
            );
        });
    let last = rss();
    sampled_max = sampled_max.max(last);
    let peak = process_bytes(pid, "VmHWM").unwrap_or(0) as f64;
    let stats = probe.stats();
    let evictions = stats["cache"]["evictions"].as_u64().unwrap_or(0);
    let over = |x: f64| format!("{} ({:.3} × B + empty)", mib(x), (x - empty) / budget);
    println!(
        "| B | empty RSS | limit (1.15 × B + empty) | peak RSS (VmHWM) | highest sampled RSS | final RSS | used at the end | sets | refused | evictions |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n\
         | {} | {} | {} | {} | {} | {} | {} | {} | {} | {evictions} |\n",
        mib(budget),
        mib(empty),
        mib(limit),
        over(peak),
        over(sampled_max),
        over(last),
        mib(field(&stats["cache"], "used")),
        result["ops"],
        result["errors"],
    );
    let targets = [Target {
        what: "peak RSS under churn, values of 64 B to 64 KiB".into(),
        measured: over(peak),
        goal: format!("≤ 1.15 × B + empty ({})", mib(limit)),
        met: (peak > 0.0).then_some(peak <= limit),
    }];
    println!(
        "Targets (issue 13, memory):\n\n{}",
        ampd_benches::targets_table(&targets)
    );
    if evictions == 0 {
        println!("Not measured as meant: nothing was evicted, so the cache never churned");
        std::process::exit(1);
    }
}
