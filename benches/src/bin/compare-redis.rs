//! The side-by-side with Redis, driven by `benches/compare-redis.sh` (which installs
//! Redis when it is missing and builds the binaries). Starts each server pinned to core
//! 0, runs `ampd-loadgen` pinned to core 1 against it, and prints one table per
//! comparison with issue 12's per-core targets under it, each beside the figure it is
//! judged on, then a closing table of every target: measured, met or missed. The
//! tables also go to `benches/results/compare-redis-<date>.md` (`-quick.md` after
//! `--quick`) with the machine's description.
//!
//! Every cell is measured the same way on both sides: the same generator, pacing,
//! histograms, key space (100,000 keys, preloaded), values (100 bytes) and connections
//! (50 unless said). For each workload:
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
//! The comparisons, in order:
//! 1. 1 shard, fsync interval vs Redis's appendfsync everysec: get-only, set-only,
//!    get-heavy 80/20, write-heavy 20/80, get and set at pipeline 16, ping; and
//!    `redis-benchmark`'s GET/SET rates on the same Redis, to show the generator drives
//!    Redis at least as hard. Targets: ops per server CPU-second at saturation, get-only
//!    ≥ 1.2× and set-only ≥ 1.3× Redis; peak at pipeline 16, GET ≥ 1.6× and SET ≥ 2×;
//!    peak without pipelining, GET and SET ≥ 1.1×; at 80% of peak, p99 < 1 ms and
//!    p99.9 < 2 ms.
//! 2. Fixed 30 k gets/s: get-only open loop at 30,000/s on that ampd, that Redis, and
//!    a second ampd started with `--coalesce 200us` on a port of its own (where the
//!    kernel refuses the option, before 6.12, the section says it is unavailable). The
//!    server CPU µs per request (server CPU seconds ÷ requests; /proc counts in 10 ms
//!    ticks), ops per server CPU-second, p50/p99/p99.9, the generator's own CPU, send
//!    lag and missed slots: each the median of the peak runs, the servers taken in turn
//!    run by run. Targets: ampd's CPU per request ≤ Redis's; with `--coalesce 200us`,
//!    ≥ 1.6× Redis's ops per CPU-second, with the latency that costs.
//! 3. fsync always vs appendfsync always: set-only at 50 connections (target: peak ≥
//!    1.3× Redis), then one client's durable set, 1 connection at pipeline 1 in a closed
//!    loop so that each set waits for its own fsync: ops/s, p50, p99, the medians of
//!    runs in turn (target: ampd's p50 ≤ Redis's).
//! 4. 2 shards, fsync interval vs the same Redis: get-only, get-heavy, write-heavy, get
//!    at pipeline 16, ping. No targets: they are per core, and here the generator shares
//!    core 1 with shard 1.
//!
//! About 18 minutes. To stay under 20 with set-only, set at pipeline 16, the 30 k
//! section and the one-client run added, the fixed-rate cells of the workloads no
//! target reads (get-heavy, write-heavy and ping, and every one of the 2-shard section)
//! measure 2 s after 1 s of warm-up, as the p99 ≤ 1 ms search's steps do, and the
//! 2-shard section runs neither set-only nor set at pipeline 16.
//!
//! Usage: `compare-redis [--quick] [--ampd BIN] [--loadgen BIN]` (`--quick`: one run per
//! figure and 1 s windows, for a smoke run). It stops only what it starts.

use ampd_benches::{field, figure, median, pinned, Spawned, Target};
use serde_json::Value;
use std::io::Write;
use std::process::Command;

const CONNECTIONS: u32 = 50;
const KEYS: u32 = 100_000;
const VALUE_SIZE: u32 = 100;
const AMPD_PORT: u16 = 7381;
const REDIS_PORT: u16 = 7382;
/// The second ampd of the fixed-rate section, with `--coalesce`.
const COALESCE_PORT: u16 = 7383;

/// Closed-loop runs per peak cell; the cell is their median.
const PEAK_RUNS: usize = 3;

/// The rate of the CPU-per-request comparison: gets a second, open loop.
const STEADY_GETS_PER_S: u32 = 30_000;
/// How long the coalescing ampd's shard may wait for more completions.
const COALESCE: &str = "200us";

struct Settings {
    ampd: String,
    loadgen: String,
    quick: bool,
    /// Runs per peak cell.
    peak_runs: usize,
    /// Measured window and warm-up of a peak or fixed-rate run, in seconds.
    window_s: u32,
    warmup_s: u32,
}

impl Settings {
    /// The window and warm-up (seconds) of each step of the p99 ≤ 1 ms search, and of
    /// the fixed-rate cells no target reads.
    fn short(&self) -> (u32, u32) {
        (self.window_s.min(2), self.warmup_s.min(1))
    }
}

/// A workload: a name, the generator's mix, the pipeline depth and the connections.
struct Workload {
    name: &'static str,
    mix: &'static str,
    pipeline: u32,
    connections: u32,
    /// A target of issue 12 reads its figures (in the 1-shard comparisons), so its
    /// fixed-rate cells get full windows too.
    targeted: bool,
}

const GET_ONLY: Workload = Workload {
    name: "get-only",
    mix: "get=100",
    pipeline: 1,
    connections: CONNECTIONS,
    targeted: true,
};
const SET_ONLY: Workload = Workload {
    name: "set-only",
    mix: "set=100",
    pipeline: 1,
    connections: CONNECTIONS,
    targeted: true,
};
const GET_HEAVY: Workload = Workload {
    name: "get-heavy 80/20",
    mix: "get=80,set=20",
    pipeline: 1,
    connections: CONNECTIONS,
    targeted: false,
};
const WRITE_HEAVY: Workload = Workload {
    name: "write-heavy 20/80",
    mix: "get=20,set=80",
    pipeline: 1,
    connections: CONNECTIONS,
    targeted: false,
};
const GET_PIPELINED: Workload = Workload {
    name: "get, pipeline 16",
    mix: "get=100",
    pipeline: 16,
    connections: CONNECTIONS,
    targeted: true,
};
const SET_PIPELINED: Workload = Workload {
    name: "set, pipeline 16",
    mix: "set=100",
    pipeline: 16,
    connections: CONNECTIONS,
    targeted: true,
};
const PING: Workload = Workload {
    name: "ping",
    mix: "ping=100",
    pipeline: 1,
    connections: CONNECTIONS,
    targeted: false,
};
/// One client's durable sets: each waits for its own fsync.
const DURABLE_SET: Workload = Workload {
    name: "set, 1 connection",
    mix: "set=100",
    pipeline: 1,
    connections: 1,
    targeted: true,
};

/// A server this run started; stopped and reaped when dropped.
struct Server {
    process: Spawned,
    name: String,
    port: u16,
    /// It speaks RESP (the generator's `--redis`).
    redis: bool,
}

impl Server {
    fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

/// Starts ampd on `port` with `shards` shards (pinned to core 0, or to cores 0 and 1)
/// and the serve options `extra`; `Err` with what it said when it will not start (as
/// `--coalesce` on a kernel before 6.12).
fn start_ampd(
    s: &Settings,
    port: u16,
    shards: u32,
    fsync: &str,
    extra: &[&str],
) -> Result<Server, String> {
    let dir = Spawned::scratch(&format!("compare-ampd-{port}-{shards}-{fsync}"));
    let cores = if shards == 1 { "0" } else { "0,1" };
    let (addr, shard_count) = (format!("127.0.0.1:{port}"), shards.to_string());
    let data = dir.to_str().expect("a UTF-8 temp path").to_owned();
    let mut args = vec![
        "--addr",
        &addr,
        "--shards",
        &shard_count,
        "--fsync",
        fsync,
        "--data-dir",
        &data,
    ];
    args.extend_from_slice(extra);
    let mut name = format!(
        "ampd ({shards} shard{}, fsync {fsync}",
        if shards == 1 { "" } else { "s" }
    );
    for option in extra {
        name += if option.starts_with("--") { ", " } else { " " };
        name += option;
    }
    name += ")";
    let process = Spawned::ampd(&s.ampd, cores, &args, dir)
        .map_err(|said| format!("{name} did not start: {said}"))?;
    Ok(Server {
        process,
        name,
        port,
        redis: false,
    })
}

fn start_redis(appendfsync: &str) -> Server {
    let dir = Spawned::scratch(&format!("compare-redis-{appendfsync}"));
    let args = ["--appendonly", "yes", "--appendfsync", appendfsync];
    Server {
        process: Spawned::redis(REDIS_PORT, &args, dir),
        name: format!("Redis (appendfsync {appendfsync})"),
        port: REDIS_PORT,
        redis: true,
    }
}

/// Runs the generator (pinned to core 1) and returns its JSON result.
fn loadgen(s: &Settings, server: &Server, args: &[String]) -> Value {
    let mut command = pinned("1", &s.loadgen);
    command
        .args(["--addr", &format!("127.0.0.1:{}", server.port)])
        .args([
            "--keys",
            &KEYS.to_string(),
            "--value-size",
            &VALUE_SIZE.to_string(),
        ])
        .args(["--server-pid", &server.pid().to_string(), "--json"])
        .args(args);
    if server.redis {
        command.arg("--redis");
    }
    ampd_benches::loadgen_json(command, &server.name)
}

fn preload(s: &Settings, server: &Server) {
    let args: Vec<String> = [
        "--preload",
        "--connections",
        &CONNECTIONS.to_string(),
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
    loadgen(s, server, &args);
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
        "--connections".into(),
        w.connections.to_string(),
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

/// Runs the generator with `args` `s.peak_runs` times against each of `servers`, the
/// servers taken in turn run by run (so the shared machine's drift falls on all of
/// them alike): each server's results, in the order of `servers`.
fn interleaved(s: &Settings, servers: &[&Server], args: &[String]) -> Vec<Vec<Value>> {
    let mut runs = vec![Vec::new(); servers.len()];
    for _ in 0..s.peak_runs {
        for (server, runs) in servers.iter().zip(&mut runs) {
            runs.push(loadgen(s, server, args));
        }
    }
    runs
}

/// The median over `runs` of a figure read from each.
fn median_of(runs: &[Value], figure: impl Fn(&Value) -> f64) -> f64 {
    median(runs.iter().map(figure).collect())
}

/// The peaks of both servers, runs taken in turn: (ops/s, ops per server CPU-s) of
/// ampd, then of Redis, each the median of `s.peak_runs`.
fn peaks(s: &Settings, ampd: &Server, redis: &Server, w: &Workload) -> [(f64, f64); 2] {
    let args = workload_args(w, &["--max".into()], s.window_s, s.warmup_s);
    let mut runs = interleaved(s, &[ampd, redis], &args)
        .into_iter()
        .map(|runs| {
            (
                median_of(&runs, |r| field(r, "achieved_rate")),
                median_of(&runs, |r| field(r, "ops_per_server_cpu_s")),
            )
        });
    let nan = (f64::NAN, f64::NAN);
    [runs.next().unwrap_or(nan), runs.next().unwrap_or(nan)]
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

/// An open-loop run of `w` at `rate`, measured for `window_s` after `warmup_s`.
fn loaded(
    s: &Settings,
    server: &Server,
    w: &Workload,
    rate: f64,
    (window_s, warmup_s): (u32, u32),
) -> Loaded {
    let mode = ["--rate".into(), format!("{}", rate.round() as u64)];
    let r = loadgen(s, server, &workload_args(w, &mode, window_s, warmup_s));
    Loaded {
        rate,
        offered: field(&r, "offered_rate"),
        achieved: field(&r, "achieved_rate"),
        missed_slots: field(&r, "missed_slots"),
        p50: field(&r, "p50_us"),
        p99: field(&r, "p99_us"),
        p999: field(&r, "p999_us"),
    }
}

fn at_1ms(s: &Settings, server: &Server, w: &Workload, start: f64) -> Result<f64, f64> {
    let mode = [
        "--find-max".into(),
        "1".into(),
        "--rate".into(),
        format!("{}", start.round() as u64),
    ];
    // Short steps: a search takes several.
    let (window_s, warmup_s) = s.short();
    let r = loadgen(s, server, &workload_args(w, &mode, window_s, warmup_s));
    r["find_max"]["max_rate"].as_f64().ok_or(start)
}

/// Measures every workload on both servers; the table's rows. `targeted`: this
/// comparison is one that issue 12's targets read (1 shard), so the fixed-rate cells
/// of the workloads they read get full windows.
fn compare(
    s: &Settings,
    ampd: &Server,
    redis: &Server,
    workloads: &[&Workload],
    targeted: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in workloads {
        let [(a_peak, a_cpu), (r_peak, r_cpu)] = peaks(s, ampd, redis, w);
        let rate = 0.5 * a_peak.min(r_peak);
        let (fixed_windows, fixed_name) = if targeted && w.targeted {
            (
                (s.window_s, s.warmup_s),
                format!("{} (fixed {rate:.0}/s)", w.name),
            )
        } else {
            let short = s.short();
            (
                short,
                format!("{} (fixed {rate:.0}/s, {} s window)", w.name, short.0),
            )
        };
        let a_fixed = loaded(s, ampd, w, rate, fixed_windows);
        let r_fixed = loaded(s, redis, w, rate, fixed_windows);
        // The search starts lower than the fixed rate, so that a server whose p99
        // passes 1 ms early still gets a figure.
        let a1 = at_1ms(s, ampd, w, rate / 2.0);
        let r1 = at_1ms(s, redis, w, rate / 2.0);
        let at_80 = loaded(s, ampd, w, 0.8 * a_peak, (s.window_s, s.warmup_s));
        eprintln!(
            "compare-redis: {}: ampd {a_peak:.0}/s, Redis {r_peak:.0}/s",
            w.name
        );
        rows.push(Row {
            name: fixed_name,
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
    /// With the fixed rate (and its window when short).
    name: String,
    workload: &'static str,
    ampd: Figures,
    redis: Figures,
    at_80: Loaded,
}

/// The row of workload `w` (measured by `compare`, which makes one per workload).
fn row<'a>(rows: &'a [Row], w: &Workload) -> &'a Row {
    rows.iter()
        .find(|r| r.workload == w.name)
        .unwrap_or_else(|| panic!("{} was not measured", w.name))
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

/// ampd's `a` against Redis's `r`, met when a ÷ r ≥ `floor`.
fn at_least(what: &str, a: f64, r: f64, floor: f64) -> Target {
    ratio(what, a, r, format!("≥ {floor}×"), |x| x >= floor)
}

/// ampd's `a` against Redis's `r`, met when a ÷ r ≤ `ceiling`.
fn at_most(what: &str, a: f64, r: f64, ceiling: f64) -> Target {
    ratio(what, a, r, format!("≤ {ceiling}×"), |x| x <= ceiling)
}

fn ratio(what: &str, a: f64, r: f64, goal: String, met: impl Fn(f64) -> bool) -> Target {
    let ratio = a / r;
    Target {
        what: what.into(),
        measured: format!("{ratio:.2}× Redis ({} / {})", figure(a), figure(r)),
        goal,
        met: ratio.is_finite().then(|| met(ratio)),
    }
}

/// ampd alone at 80% of its peak: p99 < 1 ms and p99.9 < 2 ms.
fn at_80(workload: &str, l: &Loaded) -> Target {
    Target {
        what: format!("{workload}: ampd alone, open loop at 80% of its peak"),
        measured: format!("p99 {:.0} µs, p99.9 {:.0} µs", l.p99, l.p999),
        goal: "p99 < 1000 µs, p99.9 < 2000 µs".into(),
        met: (l.p99.is_finite() && l.p999.is_finite()).then_some(l.p99 < 1000.0 && l.p999 < 2000.0),
    }
}

/// The targets read from a table, one line each, as the table's footnote.
fn target_lines(targets: &[Target]) -> String {
    let mut t = String::from("\nTargets (issue 12):\n\n");
    for target in targets {
        t += &format!(
            "- {}: {} (target {}): {}\n",
            target.what,
            target.measured,
            target.goal,
            target.verdict()
        );
    }
    t + "\n"
}

/// The closing table: every target, what was measured, met or missed.
fn summary(targets: &[Target]) -> String {
    String::from(
        "### Targets\n\nIssue 12's per-core targets as this run measured them: 1 shard on core 0, \
         fsync interval against appendfsync everysec unless said; ratios are ampd ÷ Redis.\n\n",
    ) + &ampd_benches::targets_table(targets)
}

/// The per-core targets read from the 1-shard fsync-interval comparison.
fn interval_targets(rows: &[Row]) -> Vec<Target> {
    let [get, set, get16, set16] =
        [&GET_ONLY, &SET_ONLY, &GET_PIPELINED, &SET_PIPELINED].map(|w| row(rows, w));
    let mut targets = vec![
        at_least(
            "GET ops per server CPU-s at saturation (get-only)",
            get.ampd.per_cpu_s,
            get.redis.per_cpu_s,
            1.2,
        ),
        at_least(
            "SET ops per server CPU-s at saturation (set-only)",
            set.ampd.per_cpu_s,
            set.redis.per_cpu_s,
            1.3,
        ),
        at_least(
            "GET peak ops/s, pipeline 16",
            get16.ampd.peak,
            get16.redis.peak,
            1.6,
        ),
        at_least(
            "SET peak ops/s, pipeline 16",
            set16.ampd.peak,
            set16.redis.peak,
            2.0,
        ),
        at_least(
            "GET peak ops/s, no pipelining (get-only)",
            get.ampd.peak,
            get.redis.peak,
            1.1,
        ),
        at_least(
            "SET peak ops/s, no pipelining (set-only)",
            set.ampd.peak,
            set.redis.peak,
            1.1,
        ),
    ];
    targets.extend(rows.iter().map(|r| at_80(r.workload, &r.at_80)));
    targets
}

/// One server at a fixed rate of gets: each figure the median over the runs.
struct Steady {
    name: String,
    achieved: f64,
    cpu_us_per_request: f64,
    per_cpu_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// The generator's own CPU seconds over the window of `window_s`.
    loadgen_cpu_s: f64,
    window_s: f64,
    send_lag_p99: f64,
    send_lag_max: f64,
    missed_slots: f64,
}

impl Steady {
    fn of(server: &Server, runs: &[Value]) -> Steady {
        let m = |name: &str| median_of(runs, |r| field(r, name));
        Steady {
            name: server.name.clone(),
            achieved: m("achieved_rate"),
            cpu_us_per_request: median_of(runs, |r| {
                1e6 * field(r, "server_cpu_s") / field(r, "ops")
            }),
            per_cpu_s: m("ops_per_server_cpu_s"),
            p50: m("p50_us"),
            p99: m("p99_us"),
            p999: m("p999_us"),
            loadgen_cpu_s: m("loadgen_cpu_s"),
            window_s: m("duration_s"),
            send_lag_p99: m("send_lag_p99_us"),
            send_lag_max: m("send_lag_max_us"),
            missed_slots: m("missed_slots"),
        }
    }
}

/// Get-only, open loop at [`STEADY_GETS_PER_S`], on each of `servers` in turn run by
/// run: their figures, in the order of `servers`.
fn steady(s: &Settings, servers: &[&Server]) -> Vec<Steady> {
    let mode = ["--rate".into(), STEADY_GETS_PER_S.to_string()];
    let args = workload_args(&GET_ONLY, &mode, s.window_s, s.warmup_s);
    interleaved(s, servers, &args)
        .iter()
        .zip(servers)
        .map(|(runs, server)| Steady::of(server, runs))
        .collect()
}

/// The fixed-rate section: its table and targets. `coalesced`: the figures of ampd
/// with `--coalesce`, or why it would not start.
fn steady_section(
    s: &Settings,
    ampd: &Steady,
    redis: &Steady,
    coalesced: &Result<Steady, String>,
) -> (String, Vec<Target>) {
    let mut t = format!(
        "### fixed {} k gets/s\n\nget-only, open loop at {STEADY_GETS_PER_S}/s, {CONNECTIONS} connections, \
         pipeline 1; each figure the median of {} runs taken in turn on the servers. Server CPU per \
         request: its CPU seconds over the window (from /proc, in 10 ms ticks) ÷ the requests answered \
         in it; ratios are to Redis's.\n\n\
         | server | achieved ops/s | server CPU µs per request | ops per server CPU-s | p50 µs | p99 µs | p99.9 µs | loadgen CPU s (of window) | send lag p99 / max µs | missed slots |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        STEADY_GETS_PER_S / 1000,
        s.peak_runs,
    );
    let with_ratio = |a: f64, r: f64, is_redis: bool| {
        if is_redis {
            figure(a)
        } else {
            format!("{} ({:.2}×)", figure(a), a / r)
        }
    };
    let mut line = |x: &Steady, is_redis: bool| {
        t += &format!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} ({:.0}%) | {:.0} / {:.0} | {:.0} |\n",
            x.name,
            x.achieved,
            with_ratio(x.cpu_us_per_request, redis.cpu_us_per_request, is_redis),
            with_ratio(x.per_cpu_s, redis.per_cpu_s, is_redis),
            x.p50,
            x.p99,
            x.p999,
            x.loadgen_cpu_s,
            100.0 * x.loadgen_cpu_s / x.window_s,
            x.send_lag_p99,
            x.send_lag_max,
            x.missed_slots,
        );
    };
    line(ampd, false);
    line(redis, true);
    if let Ok(c) = coalesced {
        line(c, false);
    }
    let coalesce_what = format!(
        "ops per server CPU-s at {} k gets/s, ampd --coalesce {COALESCE}",
        STEADY_GETS_PER_S / 1000
    );
    let targets = vec![
        at_most(
            &format!(
                "server CPU per request at {} k gets/s",
                STEADY_GETS_PER_S / 1000
            ),
            ampd.cpu_us_per_request,
            redis.cpu_us_per_request,
            1.0,
        ),
        match coalesced {
            Ok(c) => {
                let mut target = at_least(&coalesce_what, c.per_cpu_s, redis.per_cpu_s, 1.6);
                target.measured += &format!(
                    "; latency against ampd without it: p50 {:+.0} µs, p99 {:+.0} µs, p99.9 {:+.0} µs",
                    c.p50 - ampd.p50,
                    c.p99 - ampd.p99,
                    c.p999 - ampd.p999
                );
                target
            }
            Err(why) => {
                t += &format!("\nampd with --coalesce {COALESCE} is unavailable here: {why}\n");
                Target {
                    what: coalesce_what,
                    measured: "unavailable (the kernel or the binary refused --coalesce)".into(),
                    goal: "≥ 1.6×".into(),
                    met: None,
                }
            }
        },
    ];
    t += &target_lines(&targets);
    (t, targets)
}

/// One client's durable sets on both servers, runs taken in turn: the table and its
/// target.
fn durable_section(s: &Settings, ampd: &Server, redis: &Server) -> (String, Vec<Target>) {
    let args = workload_args(&DURABLE_SET, &["--max".into()], s.window_s, s.warmup_s);
    let runs = interleaved(s, &[ampd, redis], &args);
    let mut t = format!(
        "One client's durable set: 1 connection, pipeline 1, closed loop, so each set waits for \
         its own fsync; each figure the median of {} runs taken in turn.\n\n\
         | server | ops/s | p50 µs | p99 µs | p99.9 µs |\n| --- | --- | --- | --- | --- |\n",
        s.peak_runs
    );
    let mut p50 = Vec::new();
    for (server, runs) in [ampd, redis].iter().zip(&runs) {
        let m = |name: &str| median_of(runs, |r| field(r, name));
        p50.push(m("p50_us"));
        t += &format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            server.name,
            m("achieved_rate"),
            m("p50_us"),
            m("p99_us"),
            m("p999_us")
        );
    }
    let targets = vec![at_most(
        "one client's durable SET p50, fsync always vs appendfsync always (µs)",
        p50.first().copied().unwrap_or(f64::NAN),
        p50.get(1).copied().unwrap_or(f64::NAN),
        1.0,
    )];
    t += &target_lines(&targets);
    (t, targets)
}

/// `redis-benchmark` (pinned to core 1) for GET and SET, 50 connections, 100 bytes:
/// the requests per second it reports.
fn redis_benchmark(pipeline: u32) -> Vec<(String, f64)> {
    let out = pinned("1", "redis-benchmark")
        .args(["-p", &REDIS_PORT.to_string()])
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

fn main() {
    let mut args = std::env::args().skip(1);
    let mut s = Settings {
        ampd: "target/release/ampd".into(),
        loadgen: "target/release/ampd-loadgen".into(),
        quick: false,
        peak_runs: PEAK_RUNS,
        window_s: 4,
        warmup_s: 2,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                s.quick = true;
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
    let commit = ampd_benches::commit();
    let (short_window_s, short_warmup_s) = s.short();
    let mut report = format!(
        "## ampd vs Redis, {date}{}\n\nMachine: {}. Commit {commit}. Servers pinned to core 0 \
         (ampd with 2 shards: cores 0 and 1), `ampd-loadgen` to core 1; {CONNECTIONS} connections unless said, \
         {KEYS} keys preloaded, {VALUE_SIZE}-byte values, windows of {} s after {} s of warm-up \
         ({short_window_s} s after {short_warmup_s} s where a cell says so, and in each step of the p99 ≤ 1 ms search); \
         each peak the median of {} runs. Redis {}.\n\n",
        if s.quick { " (--quick: a smoke run, not figures to quote)" } else { "" },
        ampd_benches::machine(),
        s.window_s,
        s.warmup_s,
        s.peak_runs,
        Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
    );
    let mut targets = Vec::new();
    let start = |port, shards, fsync, extra: &[&str]| {
        start_ampd(&s, port, shards, fsync, extra).unwrap_or_else(|e| panic!("{e}"))
    };

    // 1. fsync interval (ampd) vs appendfsync everysec (Redis), 1 shard; then fixed
    // 30 k gets/s on both and on ampd with --coalesce.
    {
        let redis = start_redis("everysec");
        preload(&s, &redis);
        let bench: Vec<String> = redis_benchmark(1)
            .into_iter()
            .chain(
                redis_benchmark(16)
                    .into_iter()
                    .map(|(n, r)| (format!("{n} (pipeline 16)"), r)),
            )
            .map(|(n, r)| format!("{n}: {r:.0}/s"))
            .collect();
        let ampd = start(AMPD_PORT, 1, "interval", &[]);
        preload(&s, &ampd);
        let workloads = [
            &GET_ONLY,
            &SET_ONLY,
            &GET_HEAVY,
            &WRITE_HEAVY,
            &GET_PIPELINED,
            &SET_PIPELINED,
            &PING,
        ];
        let rows = compare(&s, &ampd, &redis, &workloads, true);
        report += &table(
            "1 shard, fsync interval vs appendfsync everysec",
            &ampd.name,
            &redis.name,
            &rows,
        );
        let section = interval_targets(&rows);
        report += &target_lines(&section);
        targets.extend(section);
        report += &format!(
            "`redis-benchmark` on the same Redis (50 connections, 100 bytes, pinned to core 1): {}. \
             The generator's peaks against Redis are in the table; it drives Redis at least as hard \
             when its get-only, set-only and pipelined peaks are at or above these.\n\n",
            bench.join(", ")
        );

        let coalescing = start_ampd(&s, COALESCE_PORT, 1, "interval", &["--coalesce", COALESCE]);
        if let Ok(c) = &coalescing {
            preload(&s, c);
        } else {
            eprintln!("compare-redis: --coalesce {COALESCE} unavailable, measured without it");
        }
        let mut servers = vec![&ampd, &redis];
        servers.extend(coalescing.as_ref().ok());
        let mut figures = steady(&s, &servers).into_iter();
        let (Some(a), Some(r)) = (figures.next(), figures.next()) else {
            unreachable!("one figure per server")
        };
        let coalesced = coalescing.map(|_| figures.next().expect("its figures"));
        eprintln!(
            "compare-redis: fixed {STEADY_GETS_PER_S}/s gets: ampd {:.1} µs, Redis {:.1} µs of CPU a request",
            a.cpu_us_per_request, r.cpu_us_per_request
        );
        let (text, section) = steady_section(&s, &a, &r, &coalesced);
        report += &text;
        targets.extend(section);
    }
    // 2. fsync always on both: writes, then one client's durable sets.
    {
        let redis = start_redis("always");
        preload(&s, &redis);
        let ampd = start(AMPD_PORT, 1, "always", &[]);
        preload(&s, &ampd);
        let rows = compare(&s, &ampd, &redis, &[&SET_ONLY], true);
        // Before the one-client runs, which fsync one record at a time.
        let stats = Command::new(&s.ampd)
            .args(["--addr", &format!("127.0.0.1:{}", ampd.port), "stats"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let per_fsync = serde_json::from_str::<Value>(&stats)
            .map(|v| field(&v, "wal_records") / field(&v, "wal_fsyncs"))
            .unwrap_or(f64::NAN);
        report += &table(
            "1 shard, fsync always vs appendfsync always",
            &ampd.name,
            &redis.name,
            &rows,
        );
        report += &format!("\nampd wrote {per_fsync:.1} WAL records per fdatasync over the runs above (group commit).\n");
        let set = row(&rows, &SET_ONLY);
        let section = vec![at_least(
            &format!(
                "SET peak ops/s at {CONNECTIONS} connections, fsync always vs appendfsync always"
            ),
            set.ampd.peak,
            set.redis.peak,
            1.3,
        )];
        report += &target_lines(&section);
        targets.extend(section);
        let (text, section) = durable_section(&s, &ampd, &redis);
        report += &text;
        targets.extend(section);
    }
    // 3. ampd with 2 shards (fsync interval) vs the same Redis.
    {
        let redis = start_redis("everysec");
        preload(&s, &redis);
        let ampd = start(AMPD_PORT, 2, "interval", &[]);
        preload(&s, &ampd);
        let workloads = [&GET_ONLY, &GET_HEAVY, &WRITE_HEAVY, &GET_PIPELINED, &PING];
        let rows = compare(&s, &ampd, &redis, &workloads, false);
        report += &table("2 shards, fsync interval vs appendfsync everysec (the generator shares core 1 with shard 1)", &ampd.name, &redis.name, &rows);
        report += "\n";
    }
    report += &summary(&targets);
    println!("{report}");
    let dir = std::path::Path::new("benches/results");
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!(
        "compare-redis-{date}{}.md",
        if s.quick { "-quick" } else { "" }
    ));
    if let Ok(mut file) = std::fs::File::create(&path) {
        let _ = file.write_all(report.as_bytes());
        eprintln!("compare-redis: written to {}", path.display());
    }
}
