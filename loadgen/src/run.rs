//! A run's course: connect every connection (handshake included), preload, then the
//! measured phases — one at a fixed rate, one closed loop, a counted closed loop, or
//! the `--find-max` steps — with a progress line on stderr every second and the report
//! on stdout.
//!
//! A phase shares the connections out over `--threads` loop threads (`event_loop.rs`)
//! for its duration and takes them back at the end, with what they measured; the
//! warm-up is the start of the same phase (replies to requests due before
//! `record_from` are not recorded), so nothing pauses between warming up and
//! measuring. Counted runs (`--requests`) are the exception: their warm-up is a phase
//! of its own, every reply of it (and every set of its misses) in before the first
//! measured operation leaves, so what the warm-up wrote is settled and a hit ratio
//! comes out the same from run to run.

use crate::ampd::{self, Ampd};
use crate::connection::{lock, Connection, Mode, Phase, Progress, Protocol};
use crate::cpu::cpu_time;
use crate::event_loop;
use crate::keys::{Dist, KeySpace, ScanKeys};
use crate::mix::Workload;
use crate::report::{progress_line, CpuUse, Stats, Summary};
use crate::resp::{self, Redis};
use crate::value::Values;
use serde_json::{json, Map, Value};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which server the run speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Ampd,
    Redis,
}

/// How the measured phases load the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop at this many requests a second.
    Rate(f64),
    /// Closed loop, every window full.
    Max,
    /// Closed loop for counts of operations (`--requests`, `--warmup-requests`): the
    /// warm-up's, not measured, then the measured ones; the run ends when they are
    /// answered.
    Count { warmup: u64, measured: u64 },
    /// Open-loop steps from `start`, x[`FIND_MAX_GROWTH`] each, while p99 < the bound.
    FindMax { start: f64, p99_bound: Duration },
}

/// Each `--find-max` step offers this much more than the last.
pub const FIND_MAX_GROWTH: f64 = 1.25;
/// Steps at most (10k x 1.25^40 is 75M ops/s: far past any one server).
pub const FIND_MAX_STEPS: usize = 40;

/// A connection attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Loop threads are started this long before a phase's first slot, so every
/// connection's loop is waiting when slot 0 comes due rather than starting behind.
const PHASE_LEAD: Duration = Duration::from_millis(20);

/// Everything a run needs, checked (`main.rs`).
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub addr: String,
    pub env: Option<String>,
    pub token: Option<String>,
    pub connections: u64,
    pub pipeline: usize,
    pub load: Load,
    pub duration: Duration,
    pub warmup: Duration,
    pub keys: Arc<KeySpace>,
    pub dist: Dist,
    /// The skew of `Dist::Zipfian` (in `keys` already; here for the report).
    pub zipf_theta: f64,
    pub namespaces: u64,
    /// The values sets write.
    pub values: Values,
    pub preload: bool,
    /// `--mix`, or `--cache-aside` in its place.
    pub workload: Workload,
    /// `--scan-every`: one count for the whole run.
    pub scan: Option<Arc<ScanKeys>>,
    pub seed: u64,
    pub json: bool,
    pub server_pid: Option<u32>,
    pub threads: usize,
}

/// Runs to the end; `Err` says why the run could not be made or finished
/// (exit code 1).
pub fn run(config: Config) -> Result<(), String> {
    match config.target {
        Target::Ampd => {
            let mut conns = Vec::new();
            for index in 0..config.connections {
                let stream = ampd::connect(
                    &config.addr,
                    config.env.as_deref(),
                    config.token.as_deref(),
                    CONNECT_TIMEOUT,
                )?;
                let values = config.values.source(config.seed, index);
                let proto = Ampd::new(config.keys.clone(), values);
                conns.push(connection(&config, index, stream, proto, ampd::FIRST_ID)?);
            }
            drive(&config, conns, ampd::PRELOAD_UNIT)
        }
        Target::Redis => {
            let mut conns = Vec::new();
            for index in 0..config.connections {
                let stream = resp::connect(&config.addr, config.token.as_deref(), CONNECT_TIMEOUT)?;
                let values = config.values.source(config.seed, index);
                let proto = Redis::new(config.keys.clone(), values);
                conns.push(connection(&config, index, stream, proto, 1)?);
            }
            drive(&config, conns, resp::PRELOAD_UNIT)
        }
    }
}

fn connection<P: Protocol>(
    config: &Config,
    index: u64,
    stream: TcpStream,
    proto: P,
    first_id: u32,
) -> Result<Connection<P>, String> {
    Connection::new(index, stream, proto, first_id, config.seed, config.pipeline)
        .map_err(|e| format!("connection {index}: {e}"))
}

/// The run after connecting: preload, then the phases the load asks for.
fn drive<P: Protocol>(
    config: &Config,
    mut conns: Vec<Connection<P>>,
    preload_unit: u64,
) -> Result<(), String> {
    let progress = Progress::new();
    println!("{}", headline(config));
    if config.preload {
        let phase = phase(
            config,
            Mode::Preload {
                keys: config.keys.len(),
                unit: preload_unit,
            },
            Duration::ZERO,
        );
        let started = Instant::now();
        let (back, stats, _) = run_phase(conns, phase, &progress, "preload", None, config.threads);
        conns = back;
        let took = started.elapsed();
        let keys = config.keys.len();
        eprintln!(
            "preload: {keys} keys in {:.1} s ({:.0} keys/s), {} batches refused",
            took.as_secs_f64(),
            keys as f64 / took.as_secs_f64().max(1e-9),
            stats.preload_errors
        );
        check_lost(&stats)?;
    } else if let Workload::Mix(mix) = &config.workload {
        if mix.ops().any(|op| op.reads()) {
            eprintln!("ampd-loadgen: no --preload: reads find only what this run's sets wrote");
        }
    }

    match config.load {
        Load::Rate(rate) => {
            let (_, summary, stats) = measure(config, conns, Mode::Open { rate }, &progress, "run");
            print_report(config, &summary, Map::new());
            check_lost(&stats)
        }
        Load::Max => {
            let (_, summary, stats) = measure(config, conns, Mode::Closed, &progress, "run");
            print_report(config, &summary, Map::new());
            check_lost(&stats)
        }
        Load::Count { warmup, measured } => {
            if warmup > 0 {
                let (back, _, stats) = count(config, conns, warmup, false, &progress);
                conns = back;
                check_lost(&stats)?;
            }
            let (_, summary, stats) = count(config, conns, measured, true, &progress);
            print_report(config, &summary, Map::new());
            check_lost(&stats)
        }
        Load::FindMax { start, p99_bound } => find_max(config, conns, start, p99_bound, &progress),
    }
}

/// Steps the rate up until a step's p99 reaches the bound (or connections are lost);
/// reports the last step under it.
fn find_max<P: Protocol>(
    config: &Config,
    mut conns: Vec<Connection<P>>,
    start: f64,
    p99_bound: Duration,
    progress: &Progress,
) -> Result<(), String> {
    let bound_us = p99_bound.as_secs_f64() * 1e6;
    let mut rate = start;
    let mut best: Option<Summary> = None;
    let mut first: Option<Summary> = None;
    let mut steps = Vec::new();
    let mut lost = Ok(());
    for step in 1..=FIND_MAX_STEPS {
        let label = format!("step {step}");
        let (back, summary, stats) = measure(config, conns, Mode::Open { rate }, progress, &label);
        conns = back;
        let under = summary.all.p99 < bound_us;
        println!(
            "step {step}: offered {rate:.0} ops/s, achieved {:.0} ops/s, p99 {:.1} µs ({} {:.1} µs), {} errors, {} missed slots",
            summary.achieved_rate,
            summary.all.p99,
            if under { "under" } else { "NOT under" },
            bound_us,
            summary.errors,
            summary.missed_slots,
        );
        steps.push(json!({
            "offered_rate": rate,
            "achieved_rate": (summary.achieved_rate * 10.0).round() / 10.0,
            "p99_us": (summary.all.p99 * 10.0).round() / 10.0,
            "errors": summary.errors,
            "missed_slots": summary.missed_slots,
            "under_bound": under,
        }));
        lost = check_lost(&stats);
        first.get_or_insert_with(|| summary.clone());
        if !under || lost.is_err() {
            break;
        }
        best = Some(summary);
        rate *= FIND_MAX_GROWTH;
    }
    match &best {
        Some(b) => println!(
            "highest rate with p99 under {:.3} ms: {:.0} ops/s (achieved {:.0})",
            bound_us / 1000.0,
            b.offered_rate.unwrap_or_default(),
            b.achieved_rate
        ),
        None => println!(
            "no rate from {start:.0} ops/s kept p99 under {:.3} ms",
            bound_us / 1000.0
        ),
    }
    let mut extra = Map::new();
    extra.insert(
        "find_max".into(),
        json!({
            "p99_bound_ms": bound_us / 1000.0,
            "max_rate": best.as_ref().and_then(|b| b.offered_rate),
            "steps": steps,
        }),
    );
    // The report is the best step's, or (none under the bound) the first step's.
    if let Some(summary) = best.as_ref().or(first.as_ref()) {
        println!(
            "report of the {} step:",
            if best.is_some() {
                "highest passing"
            } else {
                "first"
            }
        );
        print_report(config, summary, extra);
    }
    lost
}

/// One measured phase: warm-up then the window, at `mode`.
fn measure<P: Protocol>(
    config: &Config,
    conns: Vec<Connection<P>>,
    mode: Mode,
    progress: &Progress,
    label: &str,
) -> (Vec<Connection<P>>, Summary, Stats) {
    let phase = phase(config, mode, config.warmup + config.duration);
    let (conns, stats, cpu) = run_phase(
        conns,
        phase,
        progress,
        label,
        config.server_pid,
        config.threads,
    );
    let offered = match mode {
        Mode::Open { rate } => Some(rate),
        _ => None,
    };
    let summary = Summary::new(&stats, &config.workload, config.duration, offered, cpu);
    (conns, summary, stats)
}

/// One counted phase: `ops` operations over all connections, window full, measured if
/// `record`; the summary's duration is the phase's, from its start to its last reply.
fn count<P: Protocol>(
    config: &Config,
    conns: Vec<Connection<P>>,
    ops: u64,
    record: bool,
    progress: &Progress,
) -> (Vec<Connection<P>>, Summary, Stats) {
    let phase = phase(config, Mode::Counted { ops, record }, Duration::ZERO);
    let start = phase.start;
    let label = if record { "run" } else { "warmup" };
    let (conns, stats, cpu) = run_phase(
        conns,
        phase,
        progress,
        label,
        config.server_pid,
        config.threads,
    );
    let took = Instant::now().saturating_duration_since(start);
    let summary = Summary::new(&stats, &config.workload, took, None, cpu);
    (conns, summary, stats)
}

fn phase(config: &Config, mode: Mode, length: Duration) -> Phase {
    let start = Instant::now() + PHASE_LEAD;
    let end = start + length;
    Phase {
        mode,
        start,
        record_from: end - config.duration.min(length),
        end,
        connections: config.connections,
        pipeline: config.pipeline,
        workload: config.workload.clone(),
        keys: config.keys.clone(),
        scan: config.scan.clone(),
    }
}

/// Runs `phase` on every connection, the connections shared out over `threads` loop
/// threads (connection `i` on thread `i % threads`), with the progress line and
/// (outside preload) the CPU readings around the measured window.
fn run_phase<P: Protocol>(
    conns: Vec<Connection<P>>,
    phase: Phase,
    progress: &Progress,
    label: &str,
    server_pid: Option<u32>,
    threads: usize,
) -> (Vec<Connection<P>>, Stats, CpuUse) {
    progress.reset();
    // Sized before the phase starts: nothing in it allocates while requests fly.
    let stats = Mutex::new(Stats::new());
    let threads = threads.clamp(1, conns.len().max(1));
    let mut shares: Vec<Vec<Connection<P>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        shares[i % threads].push(c);
    }
    // A counted phase has no window known in advance: its CPU is read around it.
    let cpu_before = matches!(phase.mode, Mode::Counted { record: true, .. })
        .then(|| CpuReading::now(server_pid));
    let (phase, stats) = (&phase, &stats);
    let (back, cpu) = std::thread::scope(|scope| {
        // Each loop holds a sender; the progress line stops when all have hung up.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let loops: Vec<_> = shares
            .into_iter()
            .map(|mut share| {
                let done = done_tx.clone();
                scope.spawn(move || {
                    event_loop::drive(&mut share, phase, progress, stats);
                    drop(done);
                    share
                })
            })
            .collect();
        drop(done_tx);
        let cpu = phase
            .mode
            .is_timed()
            .then(|| scope.spawn(move || measure_cpu(phase.record_from, phase.end, server_pid)));
        report_progress(phase, progress, stats, label, &done_rx);
        let mut back = Vec::new();
        for handle in loops {
            match handle.join() {
                Ok(share) => back.extend(share),
                // A loop thread that panicked is a bug: let it show.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let cpu = match cpu.map(|h| h.join()) {
            Some(Ok(cpu)) => cpu,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => CpuUse::default(),
        };
        (back, cpu)
    });
    let cpu = match cpu_before {
        Some(before) => CpuReading::now(server_pid).since(before),
        None => cpu,
    };
    let mut back = back;
    back.sort_by_key(|c| c.index);
    let stats = std::mem::replace(&mut *lock(stats), Stats::new());
    (back, stats, cpu)
}

/// Prints the progress line every second of the phase (stderr), until every loop
/// thread has hung up `done`.
fn report_progress(
    phase: &Phase,
    progress: &Progress,
    stats: &Mutex<Stats>,
    label: &str,
    done: &mpsc::Receiver<()>,
) {
    let mut tick = phase.start + Duration::from_secs(1);
    let mut last_replies = 0;
    loop {
        match done.recv_timeout(tick.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            // Nothing is ever sent: the loops only hang up.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        if now < tick {
            continue;
        }
        tick += Duration::from_secs(1);
        let replies = progress.replies.load(Ordering::Relaxed);
        let per_second = replies - last_replies;
        last_replies = replies;
        if let Mode::Preload { keys, .. } = phase.mode {
            eprintln!(
                "[preload {:>5.1}s] {} of {keys} keys written, {per_second} batches in the last second",
                now.duration_since(phase.start).as_secs_f64(),
                progress.keys_loaded.load(Ordering::Relaxed),
            );
            continue;
        }
        // A counted phase starts recording at its start, and its caller's label says
        // whether it is the warm-up.
        let (label, elapsed) = if now < phase.record_from {
            ("warmup", now.duration_since(phase.start))
        } else {
            (label, now.duration_since(phase.record_from))
        };
        let p99 = {
            let s = lock(stats);
            (!s.all.is_empty()).then(|| s.all.value_at_quantile(0.99))
        };
        eprintln!(
            "{}",
            progress_line(
                label,
                elapsed,
                per_second,
                progress.errors.load(Ordering::Relaxed),
                p99
            )
        );
    }
}

/// CPU time of the server and of this process between `from` and `to`, read on a
/// thread of its own so a busy loop thread cannot make it read either end late.
fn measure_cpu(from: Instant, to: Instant, server_pid: Option<u32>) -> CpuUse {
    let sleep_until =
        |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
    sleep_until(from);
    let before = CpuReading::now(server_pid);
    sleep_until(to);
    CpuReading::now(server_pid).since(before)
}

/// The CPU times of the server (with `--server-pid`) and of this process, at one
/// moment.
struct CpuReading {
    server: Option<Result<Duration, String>>,
    own: Result<Duration, String>,
}

impl CpuReading {
    fn now(server_pid: Option<u32>) -> CpuReading {
        CpuReading {
            server: server_pid.map(|p| cpu_time(Some(p))),
            own: cpu_time(None),
        }
    }

    /// What was used from `before` to this reading (a failed reading is said on
    /// stderr and left out).
    fn since(self, before: CpuReading) -> CpuUse {
        let used = |before: Result<Duration, String>, after: Result<Duration, String>| match (
            before, after,
        ) {
            (Ok(b), Ok(a)) => Some(a.saturating_sub(b).as_secs_f64()),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ampd-loadgen: cpu time: {e}");
                None
            }
        };
        CpuUse {
            server_s: match (before.server, self.server) {
                (Some(b), Some(a)) => used(b, a),
                _ => None,
            },
            loadgen_s: used(before.own, self.own),
        }
    }
}

/// A lost connection fails the run (exit 1) once its report is out.
fn check_lost(stats: &Stats) -> Result<(), String> {
    if stats.lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} connections lost: {}",
            stats.lost.len(),
            stats.lost.join("; ")
        ))
    }
}

fn headline(config: &Config) -> String {
    let target = match config.target {
        Target::Ampd => "ampd",
        Target::Redis => "redis",
    };
    let load = match config.load {
        Load::Rate(r) => format!("open loop at {r} ops/s"),
        Load::Max => "closed loop (--max)".to_owned(),
        Load::Count { warmup, measured } => format!(
            "closed loop (--max) for {measured} measured operations after {warmup} warm-up operations"
        ),
        Load::FindMax { start, p99_bound } => format!(
            "find-max from {start} ops/s x{FIND_MAX_GROWTH} while p99 < {:.3} ms",
            p99_bound.as_secs_f64() * 1000.0
        ),
    };
    let window = match config.load {
        Load::Count { .. } => String::new(),
        _ => format!(
            "; {} measured after {} warm-up",
            humantime::format_duration(config.duration),
            humantime::format_duration(config.warmup)
        ),
    };
    let scan = match &config.scan {
        Some(scan) => format!(
            ", a fresh scan key every {} measured operations",
            scan.every()
        ),
        None => String::new(),
    };
    format!(
        "ampd-loadgen: {target} at {}, {} connections x {} in flight, {} thread(s); {load}{window}; {} keys ({}, {} namespaces), {}, {}{scan}",
        config.addr,
        config.connections,
        config.pipeline,
        config.threads,
        config.keys.len(),
        dist_text(config),
        config.namespaces,
        config.values.describe(),
        config.workload,
    )
}

fn dist_name(dist: Dist) -> &'static str {
    match dist {
        Dist::Uniform => "uniform",
        Dist::Zipfian => "zipfian",
    }
}

/// The distribution for the headline, with its skew when it has one.
fn dist_text(config: &Config) -> String {
    match config.dist {
        Dist::Uniform => dist_name(config.dist).to_owned(),
        Dist::Zipfian => format!("zipfian alpha {}", config.zipf_theta),
    }
}

/// The text report, then (with `--json`) the JSON object as the last line of stdout.
fn print_report(config: &Config, summary: &Summary, extra: Map<String, Value>) {
    print!("{}", summary.text());
    if !config.json {
        return;
    }
    let mut m = Map::new();
    m.insert(
        "target".into(),
        json!(match config.target {
            Target::Ampd => "ampd",
            Target::Redis => "redis",
        }),
    );
    m.insert(
        "mode".into(),
        json!(match config.load {
            Load::Max | Load::Count { .. } => "max",
            _ => "open",
        }),
    );
    m.insert("addr".into(), json!(config.addr));
    m.insert("connections".into(), json!(config.connections));
    m.insert("pipeline".into(), json!(config.pipeline));
    m.insert("threads".into(), json!(config.threads));
    match config.load {
        Load::Count { warmup, measured } => {
            m.insert("warmup_s".into(), Value::Null);
            m.insert("requests".into(), json!(measured));
            m.insert("warmup_requests".into(), json!(warmup));
        }
        _ => {
            m.insert("warmup_s".into(), json!(config.warmup.as_secs_f64()));
        }
    }
    m.insert("keys".into(), json!(config.keys.len()));
    m.insert("namespaces".into(), json!(config.namespaces));
    // value_size is null when the sizes vary; min and max say the range either way.
    m.insert(
        "value_size".into(),
        json!(config.values.is_fixed().then(|| config.values.max())),
    );
    m.insert("value_size_min".into(), json!(config.values.min()));
    m.insert("value_size_max".into(), json!(config.values.max()));
    m.insert("dist".into(), json!(dist_name(config.dist)));
    if config.dist == Dist::Zipfian {
        m.insert("zipf_alpha".into(), json!(config.zipf_theta));
    }
    m.insert(
        "mix".into(),
        match &config.workload {
            Workload::Mix(mix) => json!(mix.to_string()),
            Workload::CacheAside => Value::Null,
        },
    );
    m.insert(
        "cache_aside".into(),
        json!(config.workload.is_cache_aside()),
    );
    m.insert(
        "scan_every".into(),
        config
            .scan
            .as_ref()
            .map_or(Value::Null, |s| json!(s.every())),
    );
    m.insert("seed".into(), json!(config.seed));
    m.insert("preload".into(), json!(config.preload));
    m.extend(summary.json());
    m.extend(extra);
    println!("{}", Value::Object(m));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_redis::{self, Behaviour, FakeRedis};

    #[test]
    fn a_phase_over_several_loop_threads_hands_every_connection_back() {
        let server = FakeRedis::start(5, Behaviour::Answer);
        let keys = fake_redis::key_space(1000);
        let conns = fake_redis::connections(server.addr, 5, &keys, 4);
        // 2500/s, 200 ms measured: 500 slots over 5 connections on 2 threads.
        let phase = fake_redis::phase(
            Mode::Open { rate: 2500.0 },
            5,
            4,
            &keys,
            Duration::from_millis(40),
            Duration::from_millis(200),
        );
        let progress = Progress::new();
        let (back, stats, cpu) = run_phase(conns, phase, &progress, "test", None, 2);
        let indices: Vec<u64> = back.iter().map(|c| c.index).collect();
        assert_eq!(indices, [0, 1, 2, 3, 4]);
        assert_eq!(stats.slots, 500);
        let answered: u64 = stats.per_op.iter().map(|s| s.ops).sum();
        let unsent: u64 = stats.per_op.iter().map(|s| s.unsent).sum();
        assert_eq!(answered + unsent, 500);
        assert!(stats.lost.is_empty(), "{:?}", stats.lost);
        assert!(cpu.loadgen_s.is_some());
        assert_eq!(cpu.server_s, None);
        let replies = progress.replies.load(Ordering::Relaxed);
        drop(back);
        assert_eq!(server.join(), 5 + replies);
    }
}
