//! The side-by-side with Redis, driven by `benches/compare-redis.sh` (which installs
//! Redis when it is missing and builds the binaries). Starts each server pinned to core
//! 0, runs `ampd-loadgen` pinned to core 1 against it, and prints one table per
//! comparison; the tables also go to `benches/results/compare-redis-<date>.md` with the
//! machine's description.
//!
//! Every cell is measured the same way on both sides: the same generator, pacing,
//! histograms, key space (100,000 keys, preloaded), values (100 bytes) and connections
//! (50). For each workload:
//! - peak: closed loop (`--max`), the achieved ops/s, and the operations per second of
//!   server CPU time (from /proc, so the figure holds even where the client saturates);
//!   the median of [`PEAK_RUNS`] runs taken in turn on the two servers (this machine is
//!   a shared VM: one run of the same binary varies by ±15%);
//! - ops/s at p99 ≤ 1 ms: the highest stepped rate whose p99 stays under 1 ms
//!   (`--find-max 1`, starting at a quarter of the lower peak; "< X" when even that
//!   first rate X missed);
//! - p50/p99/p99.9 at a fixed rate: half of the lower of the two peaks, the same rate
//!   for both.
//!
//! Then ampd alone, open loop at 80% of its peak: p50/p99/p99.9, and the rate the
//! generator offered beside the one it achieved (a generator that cannot offer the
//! rate says so here, instead of flattering the latency).
//!
//! It also runs `redis-benchmark` against Redis and prints its GET/SET rates beside the
//! generator's, to show the generator drives Redis at least as hard.
//!
//! Usage: `compare-redis [--quick] [--ampd BIN] [--loadgen BIN]` (`--quick`: short
//! windows, for a smoke run). It stops only what it starts.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CONNECTIONS: u32 = 50;
const KEYS: u32 = 100_000;
const VALUE_SIZE: u32 = 100;
const AMPD_PORT: u16 = 7381;
const REDIS_PORT: u16 = 7382;

/// Closed-loop runs per peak cell; the cell is their median.
const PEAK_RUNS: usize = 3;

struct Settings {
    ampd: String,
    loadgen: String,
    /// Runs per peak cell.
    peak_runs: usize,
    /// Measured window and warm-up of a peak or fixed-rate run, in seconds.
    window_s: u32,
    warmup_s: u32,
}

/// A workload: a name, the generator's mix and the pipeline depth.
struct Workload {
    name: &'static str,
    mix: &'static str,
    pipeline: u32,
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "get-only",
        mix: "get=100",
        pipeline: 1,
    },
    Workload {
        name: "get-heavy 80/20",
        mix: "get=80,set=20",
        pipeline: 1,
    },
    Workload {
        name: "write-heavy 20/80",
        mix: "get=20,set=80",
        pipeline: 1,
    },
    Workload {
        name: "get, pipeline 16",
        mix: "get=100",
        pipeline: 16,
    },
    Workload {
        name: "ping",
        mix: "ping=100",
        pipeline: 1,
    },
];

/// A server this run started; killed and reaped when dropped.
struct Server {
    child: Child,
    name: String,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if let Some(dir) = &self._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ampd-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn start_ampd(s: &Settings, shards: u32, fsync: &str) -> Server {
    let dir = scratch(&format!("ampd-{shards}-{fsync}"));
    let cores = if shards == 1 { "0" } else { "0,1" };
    let mut child = Command::new("taskset")
        .args(["-c", cores, &s.ampd, "serve"])
        .args(["--addr", &format!("127.0.0.1:{AMPD_PORT}")])
        .args(["--shards", &shards.to_string(), "--fsync", fsync])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ampd starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ampd's listening line");
    assert!(line.starts_with("ampd listening on"), "ampd said {line:?}");
    Server {
        child,
        name: format!(
            "ampd ({shards} shard{}, fsync {fsync})",
            if shards == 1 { "" } else { "s" }
        ),
        _dir: Some(dir),
    }
}

fn start_redis(appendfsync: &str) -> Server {
    let dir = scratch(&format!("redis-{appendfsync}"));
    let child = Command::new("taskset")
        .args(["-c", "0", "redis-server"])
        .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
        .args(["--appendonly", "yes", "--appendfsync", appendfsync])
        .args(["--save", "", "--protected-mode", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    // Ready when it answers PING.
    for _ in 0..100 {
        let pong = Command::new("redis-cli")
            .args(["-p", &REDIS_PORT.to_string(), "ping"])
            .output();
        if pong.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        name: format!("Redis (appendfsync {appendfsync})"),
        _dir: Some(dir),
    }
}

/// Runs the generator (pinned to core 1) and returns its JSON result.
fn loadgen(s: &Settings, server: &Server, redis: bool, args: &[String]) -> Value {
    let port = if redis { REDIS_PORT } else { AMPD_PORT };
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", &s.loadgen])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--connections", &CONNECTIONS.to_string()])
        .args([
            "--keys",
            &KEYS.to_string(),
            "--value-size",
            &VALUE_SIZE.to_string(),
        ])
        .args(["--server-pid", &server.pid().to_string(), "--json"])
        .args(args);
    if redis {
        command.arg("--redis");
    }
    let out = command
        .stderr(Stdio::null())
        .output()
        .expect("the generator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{}: the generator's last line is not JSON ({e}): {stdout}",
            server.name
        )
    })
}

fn preload(s: &Settings, server: &Server, redis: bool) {
    let args: Vec<String> = [
        "--preload",
        "--mix",
        "ping=100",
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--warmup",
        "0s",
    ]
    .map(String::from)
    .to_vec();
    loadgen(s, server, redis, &args);
}

fn f(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(f64::NAN)
}

/// One workload's figures on one server.
#[derive(Clone, Copy)]
struct Figures {
    peak: f64,
    per_cpu_s: f64,
    /// The highest rate found, or (none was) the search's first rate.
    at_1ms: Result<f64, f64>,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// The generator's arguments for workload `w` in `mode` (`--max`, `--rate N`,
/// `--find-max 1 --rate N`), measured for `window_s` after `warmup_s`.
fn workload_args(w: &Workload, mode: &[String], window_s: u32, warmup_s: u32) -> Vec<String> {
    let mut args = mode.to_vec();
    args.extend([
        "--mix".into(),
        w.mix.into(),
        "--pipeline".into(),
        w.pipeline.to_string(),
        "--duration".into(),
        format!("{window_s}s"),
        "--warmup".into(),
        format!("{warmup_s}s"),
    ]);
    args
}

/// The peaks of both servers, runs taken in turn: (ops/s, ops per server CPU-s) of
/// ampd, then of Redis, each the median of `s.peak_runs`.
fn peaks(s: &Settings, ampd: &Server, redis: &Server, w: &Workload) -> [(f64, f64); 2] {
    let args = workload_args(w, &["--max".into()], s.window_s, s.warmup_s);
    let mut runs = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for _ in 0..s.peak_runs {
        for (i, (server, is_redis)) in [(ampd, false), (redis, true)].into_iter().enumerate() {
            let r = loadgen(s, server, is_redis, &args);
            runs[i].0.push(f(&r, "achieved_rate"));
            runs[i].1.push(f(&r, "ops_per_server_cpu_s"));
        }
    }
    runs.map(|(rate, per_cpu)| (median(rate), median(per_cpu)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One open-loop run at `rate`: the fixed-rate cells of both servers, and ampd alone
/// at 80% of its peak.
struct Loaded {
    rate: f64,
    offered: f64,
    achieved: f64,
    missed_slots: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn loaded(s: &Settings, server: &Server, redis: bool, w: &Workload, rate: f64) -> Loaded {
    let mode = ["--rate".into(), format!("{}", rate.round() as u64)];
    let r = loadgen(
        s,
        server,
        redis,
        &workload_args(w, &mode, s.window_s, s.warmup_s),
    );
    Loaded {
        rate,
        offered: f(&r, "offered_rate"),
        achieved: f(&r, "achieved_rate"),
        missed_slots: f(&r, "missed_slots"),
        p50: f(&r, "p50_us"),
        p99: f(&r, "p99_us"),
        p999: f(&r, "p999_us"),
    }
}

fn at_1ms(
    s: &Settings,
    server: &Server,
    redis: bool,
    w: &Workload,
    start: f64,
) -> Result<f64, f64> {
    let mode = [
        "--find-max".into(),
        "1".into(),
        "--rate".into(),
        format!("{}", start.round() as u64),
    ];
    // Short steps: a search takes several.
    let r = loadgen(s, server, redis, &workload_args(w, &mode, 2, 1));
    r["find_max"]["max_rate"].as_f64().ok_or(start)
}

/// Measures every workload on both servers; the table's rows.
fn compare(s: &Settings, ampd: &Server, redis: &Server, workloads: &[&Workload]) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in workloads {
        let [(a_peak, a_cpu), (r_peak, r_cpu)] = peaks(s, ampd, redis, w);
        let rate = 0.5 * a_peak.min(r_peak);
        let a_fixed = loaded(s, ampd, false, w, rate);
        let r_fixed = loaded(s, redis, true, w, rate);
        // The search starts lower than the fixed rate, so that a server whose p99
        // passes 1 ms early still gets a figure.
        let a1 = at_1ms(s, ampd, false, w, rate / 2.0);
        let r1 = at_1ms(s, redis, true, w, rate / 2.0);
        let at_80 = loaded(s, ampd, false, w, 0.8 * a_peak);
        eprintln!(
            "compare-redis: {}: ampd {a_peak:.0}/s, Redis {r_peak:.0}/s",
            w.name
        );
        rows.push(Row {
            name: format!("{} (fixed {:.0}/s)", w.name, rate),
            workload: w.name,
            ampd: Figures {
                peak: a_peak,
                per_cpu_s: a_cpu,
                at_1ms: a1,
                p50: a_fixed.p50,
                p99: a_fixed.p99,
                p999: a_fixed.p999,
            },
            redis: Figures {
                peak: r_peak,
                per_cpu_s: r_cpu,
                at_1ms: r1,
                p50: r_fixed.p50,
                p99: r_fixed.p99,
                p999: r_fixed.p999,
            },
            at_80,
        });
    }
    rows
}

/// One workload's line in a comparison.
struct Row {
    /// With the fixed rate.
    name: String,
    workload: &'static str,
    ampd: Figures,
    redis: Figures,
    at_80: Loaded,
}

fn table(title: &str, ampd: &str, redis: &str, rows: &[Row]) -> String {
    let mut t = format!(
        "### {title}\n\n{ampd} vs {redis}; each cell: ampd / Redis (ratio ampd÷Redis; for latency, lower is better)\n\n\
         | workload | peak ops/s | ops per server CPU-s | ops/s at p99 ≤ 1 ms | p50 µs | p99 µs | p99.9 µs |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    let cell =
        |a: f64, r: f64, digits: usize| format!("{a:.digits$} / {r:.digits$} ({:.2}×)", a / r);
    for Row {
        name,
        ampd: a,
        redis: r,
        ..
    } in rows
    {
        t += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            cell(a.peak, r.peak, 0),
            cell(a.per_cpu_s, r.per_cpu_s, 0),
            at_1ms_cell(a.at_1ms, r.at_1ms),
            cell(a.p50, r.p50, 0),
            cell(a.p99, r.p99, 0),
            cell(a.p999, r.p999, 0),
        );
    }
    t += "\nampd alone, open loop at 80% of its peak (target: p99 < 1 ms, p99.9 < 2 ms):\n\n\
          | workload | rate asked | offered / achieved ops/s | missed slots | p50 µs | p99 µs | p99.9 µs |\n\
          | --- | --- | --- | --- | --- | --- | --- |\n";
    for row in rows {
        let l = &row.at_80;
        t += &format!(
            "| {} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            row.workload, l.rate, l.offered, l.achieved, l.missed_slots, l.p50, l.p99, l.p999
        );
    }
    t
}

/// The ops/s at p99 ≤ 1 ms cell: "< X" where even the search's first rate missed.
fn at_1ms_cell(a: Result<f64, f64>, r: Result<f64, f64>) -> String {
    match (a, r) {
        (Ok(a), Ok(r)) => format!("{a:.0} / {r:.0} ({:.2}×)", a / r),
        (a, r) => {
            let side = |x: Result<f64, f64>| match x {
                Ok(v) => format!("{v:.0}"),
                Err(floor) => format!("< {floor:.0}"),
            };
            format!("{} / {}", side(a), side(r))
        }
    }
}

/// `redis-benchmark` (pinned to core 1) for GET and SET, 50 connections, 100 bytes:
/// the requests per second it reports.
fn redis_benchmark(pipeline: u32) -> Vec<(String, f64)> {
    let out = Command::new("taskset")
        .args(["-c", "1", "redis-benchmark", "-p", &REDIS_PORT.to_string()])
        .args([
            "-t", "get,set", "-n", "300000", "-c", "50", "-d", "100", "-r", "100000", "-q",
        ])
        .args(["-P", &pipeline.to_string()])
        .output()
        .expect("redis-benchmark runs");
    String::from_utf8_lossy(&out.stdout)
        .split(['\n', '\r'])
        .filter_map(|l| {
            let (name, rest) = l.split_once(": ")?;
            let rate: f64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_owned(), rate))
        })
        .collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), kernel {}", kernel.trim())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut s = Settings {
        ampd: "target/release/ampd".into(),
        loadgen: "target/release/ampd-loadgen".into(),
        peak_runs: PEAK_RUNS,
        window_s: 4,
        warmup_s: 2,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                s.peak_runs = 1;
                s.window_s = 1;
                s.warmup_s = 1;
            }
            "--ampd" => s.ampd = args.next().expect("--ampd BIN"),
            "--loadgen" => s.loadgen = args.next().expect("--loadgen BIN"),
            other => {
                eprintln!(
                    "usage: compare-redis [--quick] [--ampd BIN] [--loadgen BIN] (not {other})"
                );
                std::process::exit(2);
            }
        }
    }
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut report = format!(
        "## ampd vs Redis, {date}\n\nMachine: {}. Commit {commit}. Servers pinned to core 0 \
         (ampd with 2 shards: cores 0 and 1), `ampd-loadgen` to core 1; {CONNECTIONS} connections, \
         {KEYS} keys preloaded, {VALUE_SIZE}-byte values, windows of {} s after {} s of warm-up; each peak the median of {} runs. \
         Redis {}.\n\n",
        machine(),
        s.window_s,
        s.warmup_s,
        s.peak_runs,
        Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
    );
    let all: Vec<&Workload> = WORKLOADS.iter().collect();

    // 1. fsync interval (ampd) vs appendfsync everysec (Redis), 1 shard.
    {
        let redis = start_redis("everysec");
        preload(&s, &redis, true);
        let bench: Vec<String> = redis_benchmark(1)
            .into_iter()
            .chain(
                redis_benchmark(16)
                    .into_iter()
                    .map(|(n, r)| (format!("{n} (pipeline 16)"), r)),
            )
            .map(|(n, r)| format!("{n}: {r:.0}/s"))
            .collect();
        let ampd = start_ampd(&s, 1, "interval");
        preload(&s, &ampd, false);
        let rows = compare(&s, &ampd, &redis, &all);
        report += &table(
            "1 shard, fsync interval vs appendfsync everysec",
            &ampd.name,
            &redis.name,
            &rows,
        );
        report += &format!(
            "\n`redis-benchmark` on the same Redis (50 connections, 100 bytes, pinned to core 1): {}. \
             The generator's peaks against Redis are in the table; it drives Redis at least as hard \
             when its get-only and pipelined peaks are at or above these.\n\n",
            bench.join(", ")
        );
    }
    // 2. fsync always on both: writes.
    {
        let redis = start_redis("always");
        preload(&s, &redis, true);
        let ampd = start_ampd(&s, 1, "always");
        preload(&s, &ampd, false);
        let sets = Workload {
            name: "set-only",
            mix: "set=100",
            pipeline: 1,
        };
        let rows = compare(&s, &ampd, &redis, &[&sets]);
        let stats = Command::new(&s.ampd)
            .args(["--addr", &format!("127.0.0.1:{AMPD_PORT}"), "stats"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let per_fsync = serde_json::from_str::<Value>(&stats)
            .map(|v| f(&v, "wal_records") / f(&v, "wal_fsyncs"))
            .unwrap_or(f64::NAN);
        report += &table(
            "1 shard, fsync always vs appendfsync always",
            &ampd.name,
            &redis.name,
            &rows,
        );
        report += &format!("\nampd wrote {per_fsync:.1} WAL records per fdatasync over this run (group commit).\n\n");
    }
    // 3. ampd with 2 shards (fsync interval) vs the same Redis.
    {
        let redis = start_redis("everysec");
        preload(&s, &redis, true);
        let ampd = start_ampd(&s, 2, "interval");
        preload(&s, &ampd, false);
        let rows = compare(&s, &ampd, &redis, &all);
        report += &table("2 shards, fsync interval vs appendfsync everysec (the generator shares core 1 with shard 1)", &ampd.name, &redis.name, &rows);
    }
    println!("{report}");
    let dir = std::path::Path::new("benches/results");
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("compare-redis-{date}.md"));
    if let Ok(mut file) = std::fs::File::create(&path) {
        let _ = file.write_all(report.as_bytes());
        eprintln!("compare-redis: written to {}", path.display());
    }
}
