//! `ampd-loadgen`: an open-loop load generator for ampd (and, with `--redis`, for
//! Redis, measured by the same code), in the manner of wrk2.
//!
//! Requests leave on a fixed schedule (`--rate`), and each latency runs from the
//! request's *scheduled* time, so a server stall cannot hide behind a generator that
//! politely waited for it (coordinated omission). `--max` is the closed-loop
//! alternative for peak throughput; `--find-max` steps the rate up to the highest one
//! whose p99 stays under a bound. `--requests N` runs the closed loop for a count of
//! operations instead of a time, so counts (a hit ratio) come out the same every run.
//!
//! What an operation sends is drawn from `--mix`, or, with `--cache-aside`, is a get
//! of the key followed, when the key is missing, by a set of it (hits, misses and the
//! hit ratio are reported). `--scan-every N` mixes a one-pass scan into the measured
//! operations of a cache-aside run, for scan resistance: every `N`-th of them, over
//! all connections together, gets a key never used before (`scan{n}`, outside the key
//! space) instead of one from `--dist`; it misses, is set, and counts like any other.
//!
//! # How it works
//! Every connection is opened and handshaken first (blocking sockets, then made
//! non-blocking). A phase (preload, warm-up plus measured window, each `--find-max`
//! step) shares the connections out over `--threads` loop threads, one by default.
//! Each loop thread drives all of its connections with one `epoll` and one timer: the
//! connections that may send sit in a queue ordered by their next slot, and the thread
//! sleeps in one `epoll_pwait2` until a socket has replies or the first slot comes due
//! (nanosecond timeout, timer slack 1 ns). When it wakes, every due connection encodes
//! its due requests back to back and writes them in one `send`; every readable socket
//! is read once and its replies settled with one clock reading. So a request costs a
//! `send`, its reply a `recv`, and the wake-ups are shared whenever events fall due
//! together — no per-request timer, no task scheduler. Latency runs from the slot's
//! time to the reply's arrival in the loop; how late the send left is reported apart
//! (send lag), and slots sent more than 1 ms late are counted as missed, so a
//! generator that cannot keep up says so instead of blaming the server.
//! `event_loop.rs` has the measurements that chose this shape.
//!
//! # Layout
//! - `main` (this file): the command line, its checks, exit codes.
//! - `run`: a run's course — connect, preload, the measured phases, `--find-max` —
//!   the loop threads of each phase, and the progress line.
//! - `event_loop`: the thread that drives its share of the connections with one
//!   `epoll` and one timer.
//! - `connection`: one connection, the same for both servers: what is due, the
//!   in-flight window, matching replies, recording latencies.
//! - `schedule`: open-loop slot times, missed slots, and the queue of connections by
//!   due time (pure arithmetic).
//! - `ampd`: the ampd handshake and each operation as a wire frame.
//! - `resp`: RESP2 frames and each operation as Redis commands.
//! - `keys`: the key space, names derived from a key index, the zipfian generator.
//! - `value`: the values sets write, of one size or of sizes log-uniform in a range.
//! - `mix`: the operations, their weighted mix, and the cache-aside workload.
//! - `report`: histograms merged per operation, the text and JSON reports.
//! - `cpu`: CPU time of the server and of ourselves from `/proc`.
//!
//! # Exit codes
//! 0: the run finished (refusals are counted, not failures). 1: no connection could be
//! made, or one was lost during the run. 2: bad arguments.

// Nothing a peer or a user sends may panic the process: errors are returned.
#![deny(clippy::unwrap_used)]

mod ampd;
mod connection;
mod cpu;
mod event_loop;
#[cfg(test)]
mod fake_redis;
mod keys;
mod mix;
mod report;
mod resp;
mod run;
mod schedule;
mod value;

use clap::{CommandFactory, Parser};
use keys::{Dist, KeySpace, KEYS_MAX, ZIPF_THETA};
use mix::{Mix, Workload, MIX_DEFAULT};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use value::Values;

/// Open-loop load generator for ampd (and Redis): fixed-rate requests, latency from
/// each request's scheduled time (wrk2-style), HDR histograms per operation.
///
/// Values are JSON strings of --value-size bytes (Redis: the same bytes), or with
/// --value-size-range MIN-MAX of sizes drawn log-uniform between the two. Keys are
/// `ns{i % N}:k{i}` (N = --namespaces; 0 gives simple keys `k{i}`); `set` also writes
/// label1 = `ns{i % N}:g{i % 100}`; `add` increments the counter `ns{i % N}:c{i}`;
/// `range` reads `ns{i % N}:>=k{i}` with limit 10; `label` reads the keys whose label1
/// is the key's, limit 10. See loadgen/src/resp.rs for the Redis commands.
///
/// With --cache-aside each operation is a get of its key and, when the server says the
/// key is missing (ampd: nil; Redis: a null bulk string), a set of it, as the set op
/// writes it; hits, misses and the hit ratio count measured operations, while ops, the
/// rates and the latency table count requests (the gets and the sets).
/// With --scan-every, some measured operations are on fresh scan keys instead, named
/// as key j is but with `scan{j}` for `k{j}`, j = 0, 1, 2, ...
///
/// A slot sent more than 1 ms after its time, or never sent before the window closed,
/// is a missed slot; unsent slots enter the histograms at (window end - slot time).
/// Exit status: 0 the run finished (refusals are counted), 1 no connection or a
/// connection lost, 2 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "ampd-loadgen", version)]
struct Args {
    /// The server's address, host:port.
    #[arg(long, default_value = ampd_wire::frame::ADDR_DEFAULT)]
    addr: String,
    /// The ampd environment (ignored with --redis).
    #[arg(long)]
    env: Option<String>,
    /// The environment's token (with --redis: sent as AUTH).
    #[arg(long)]
    token: Option<String>,
    /// Connections (driven together by the loop threads).
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Requests in flight per connection, at most.
    #[arg(long, default_value_t = 8)]
    pipeline: usize,
    /// Open loop: requests per second over all connections (with --find-max: the first
    /// step's rate, default 10000).
    #[arg(long, conflicts_with = "max")]
    rate: Option<f64>,
    /// Closed loop: each connection keeps --pipeline requests in flight, for peak
    /// throughput (latency then runs from each send; nothing is offered beyond it).
    #[arg(long, conflicts_with = "find_max")]
    max: bool,
    /// Measured time (humantime: 10s, 1m, 500ms); with --find-max, per step.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Time at the same load before measuring, discarded (each --find-max step has its
    /// own).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Measure N operations instead of --duration: closed loop only (with --max, not
    /// --rate or --find-max), the N shared out over the connections; the run ends when
    /// all are answered.
    #[arg(long, value_name = "N", conflicts_with_all = ["duration", "warmup"])]
    requests: Option<u64>,
    /// With --requests: N operations before the measured ones, not measured; every one
    /// (with the sets of its misses) is answered before the first measured one leaves
    /// [default: 0].
    #[arg(long, value_name = "N", requires = "requests")]
    warmup_requests: Option<u64>,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes of each value: a JSON string of that many ASCII letters (Redis: the same
    /// bytes). Accepts 100, 4KiB, 1k (= 1024), 1MiB.
    #[arg(long, value_parser = parse_bytes, default_value = "100")]
    value_size: usize,
    /// Sizes of the values instead of --value-size: each set's drawn log-uniform between
    /// MIN and MAX bytes, both included (as many of 64-128 B as of 32-64 KiB in
    /// 64-64KiB); each a prefix of one text of MAX letters.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_byte_range, conflicts_with = "value_size")]
    value_size_range: Option<(usize, usize)>,
    /// Namespaces: keys are ns{i % N}:k{i}; 0 gives simple keys k{i}.
    #[arg(long, default_value_t = 10)]
    namespaces: u64,
    /// Write every key of the key space once before measuring (pipelined batches of
    /// 25; on Redis also the sorted sets that range and label read).
    #[arg(long)]
    preload: bool,
    /// Operation weights (ops not named weigh 0).
    #[arg(long, value_parser = Mix::parse, default_value = MIX_DEFAULT)]
    mix: Mix,
    /// Cache-aside instead of --mix: each operation gets its key and, if the key is
    /// missing, sets it (a --value-size value); reports hits, misses and the hit ratio.
    #[arg(long, conflicts_with = "mix")]
    cache_aside: bool,
    /// With --cache-aside: every N-th measured operation, counted over all connections
    /// (the warm-up has none), gets the next key of a one-pass scan instead of a key
    /// from --dist: scan0, scan1, ... (scan i in namespace i % --namespaces), outside
    /// the key space and never repeated within the run, so R measured operations touch
    /// R / N scan keys.
    /// A scan get misses (unless an earlier run left its key) and is set like any miss;
    /// it counts in hits and misses, and apart as scan_gets and scan_misses. Tests scan
    /// resistance.
    #[arg(long, value_name = "N", requires = "cache_aside")]
    scan_every: Option<u64>,
    /// Key distribution (zipfian: theta --zipf-alpha, hot keys scattered over the key
    /// space).
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    dist: Dist,
    /// The skew of --dist zipfian [default: 0.99, YCSB's]: above 0, at most 5, and not
    /// within 0.001 of 1 (the generator's formula divides by 1 - alpha).
    #[arg(long, value_name = "A")]
    zipf_alpha: Option<f64>,
    /// Step the rate up (from --rate or 10000, x1.25 per step of --warmup +
    /// --duration) and report the highest rate whose p99 stays under P99_MS
    /// milliseconds.
    #[arg(long, value_name = "P99_MS")]
    find_max: Option<f64>,
    /// Print the results as one JSON object on the last line of stdout as well.
    #[arg(long)]
    json: bool,
    /// Seed of the op, key and value choices (each connection draws its own stream).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Speak RESP2 to a Redis server instead (GET/SET/INCRBY/ZRANGEBYLEX/ZRANGE/PING).
    #[arg(long)]
    redis: bool,
    /// The server's process id: report its CPU time over the measured window and the
    /// operations per server CPU-second.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Loop threads of the generator, each driving every N-th connection (the server
    /// needs the other cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Connections, at most: each holds a socket and its buffers.
const CONNECTIONS_MAX: u64 = 4096;
/// Requests in flight per connection, at most.
const PIPELINE_MAX: usize = 65_536;
/// Worker threads, at most.
const THREADS_MAX: usize = 256;
/// Operations of a counted run (`--requests`, `--warmup-requests`), at most: a
/// trillion is days of any server's work.
const REQUESTS_MAX: u64 = 1 << 40;
/// Namespaces, at most (each is a sorted set on Redis).
const NAMESPACES_MAX: u64 = 1_000_000;
/// Room left in an item for its key, label and encoding: a value must fit ampd's item
/// limit with them.
const VALUE_SIZE_MAX: usize =
    ampd_wire::limits::ITEM_SIZE_MAX - 2 * ampd_wire::limits::KEY_LEN_MAX - 64;
/// The first --find-max step's rate when --rate is not given.
const FIND_MAX_START: f64 = 10_000.0;

/// Parses a humantime duration (`10s`, `1m30s`, `500ms`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 10s, 1m, 500ms)"))
}

/// Parses a byte count: a number with an optional unit `B`, `k`/`KB`/`KiB` (1024),
/// `M`/`MB`/`MiB` (1024²). Binary units either way: a value size is a memory size.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 100, 4KiB, 1M)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown unit {other:?} in {text:?} (B, KiB, MiB)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses `MIN-MAX`, two byte counts as [`parse_bytes`] reads them (`64-64KiB`).
fn parse_byte_range(text: &str) -> Result<(usize, usize), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range MIN-MAX (e.g. 64-64KiB)"))?;
    Ok((parse_bytes(min)?, parse_bytes(max)?))
}

/// Checks what clap cannot, turning the arguments into a run's configuration.
fn check(args: Args) -> Result<run::Config, String> {
    let in_range = |name: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("--{name} {v}, allowed {lo}..={hi}"))
        }
    };
    in_range("connections", args.connections, 1, CONNECTIONS_MAX)?;
    in_range("pipeline", args.pipeline as u64, 1, PIPELINE_MAX as u64)?;
    in_range("threads", args.threads as u64, 1, THREADS_MAX as u64)?;
    if let Some(n) = args.scan_every {
        in_range("scan-every", n, 1, REQUESTS_MAX)?;
    }
    in_range("keys", args.keys, 1, KEYS_MAX)?;
    in_range("namespaces", args.namespaces, 0, NAMESPACES_MAX)?;
    in_range(
        "value-size",
        args.value_size as u64,
        0,
        VALUE_SIZE_MAX as u64,
    )?;
    let values = match args.value_size_range {
        None => Values::fixed(args.value_size, args.seed),
        Some((min, max)) => {
            if !(1 <= min && min <= max) {
                return Err(format!(
                    "--value-size-range {min}-{max}: MIN from 1 (the sizes are log-uniform) and at most MAX"
                ));
            }
            in_range(
                "value-size-range's MAX",
                max as u64,
                1,
                VALUE_SIZE_MAX as u64,
            )?;
            Values::log_uniform(min, max, args.seed)
        }
    };
    if args.duration.is_zero() {
        return Err("--duration must be above zero".into());
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!(
                "--rate {r}: a number of requests per second above 0"
            ));
        }
    }
    if let Some(n) = args.requests {
        in_range("requests", n, 1, REQUESTS_MAX)?;
        in_range(
            "warmup-requests",
            args.warmup_requests.unwrap_or(0),
            0,
            REQUESTS_MAX,
        )?;
        if !args.max {
            return Err(
                "--requests counts the operations of a closed loop: give it with --max (not --rate or --find-max)"
                    .into(),
            );
        }
    }
    let load = match (args.rate, args.max, args.find_max) {
        (_, true, _) => match args.requests {
            Some(measured) => run::Load::Count {
                warmup: args.warmup_requests.unwrap_or(0),
                measured,
            },
            None => run::Load::Max,
        },
        (rate, false, Some(p99_ms)) => {
            if !(p99_ms.is_finite() && p99_ms > 0.0) {
                return Err(format!(
                    "--find-max {p99_ms}: a p99 bound in milliseconds above 0"
                ));
            }
            run::Load::FindMax {
                start: rate.unwrap_or(FIND_MAX_START),
                p99_bound: Duration::from_secs_f64(p99_ms / 1000.0),
            }
        }
        (Some(rate), false, None) => run::Load::Rate(rate),
        (None, false, None) => {
            return Err("say how to load the server: --rate N, --max or --find-max P99_MS".into())
        }
    };
    if let Some(pid) = args.server_pid {
        cpu::cpu_time(Some(pid)).map_err(|e| format!("--server-pid {pid}: {e}"))?;
    }
    if args.redis && args.env.is_some() {
        eprintln!("ampd-loadgen: --env is ignored with --redis");
    }
    let zipf_theta = match (args.zipf_alpha, args.dist) {
        (None, _) => ZIPF_THETA,
        (Some(a), Dist::Zipfian) => {
            keys::check_theta(a).map_err(|e| format!("--zipf-alpha: {e}"))?;
            a
        }
        (Some(_), Dist::Uniform) => {
            return Err("--zipf-alpha is the skew of --dist zipfian: give both".into())
        }
    };
    let keys = Arc::new(KeySpace::new(
        args.keys,
        args.namespaces,
        args.dist,
        zipf_theta,
    ));
    Ok(run::Config {
        target: if args.redis {
            run::Target::Redis
        } else {
            run::Target::Ampd
        },
        values,
        addr: args.addr,
        env: args.env,
        token: args.token,
        connections: args.connections,
        pipeline: args.pipeline,
        load,
        duration: args.duration,
        warmup: args.warmup,
        keys,
        dist: args.dist,
        zipf_theta,
        namespaces: args.namespaces,
        preload: args.preload,
        workload: if args.cache_aside {
            Workload::CacheAside
        } else {
            Workload::Mix(args.mix)
        },
        scan: args.scan_every.map(|n| Arc::new(keys::ScanKeys::new(n))),
        seed: args.seed,
        json: args.json,
        server_pid: args.server_pid,
        threads: args.threads,
    })
}

/// Raises the soft limit of open files to the hard one: each connection takes a
/// socket, and the usual soft limit (1024) would stop short of --connections 4096.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the rlimit on our stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            // Failing leaves the old limit, and connecting will say EMFILE if it matters.
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    raise_fd_limit();
    let config = match check(args) {
        Ok(c) => c,
        // clap's own error format and exit code (2) for every bad argument.
        Err(why) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, why)
            .exit(),
    };
    match run::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ampd-loadgen: {why}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_units() {
        for (text, want) in [
            ("0", 0),
            ("100", 100),
            ("100B", 100),
            ("1k", 1024),
            ("4KiB", 4096),
            ("4 kb", 4096),
            ("1MiB", 1 << 20),
            ("2M", 2 << 20),
        ] {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for bad in ["", "k", "-1", "1.5k", "10 parsecs", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert!(parse_bytes("99999999999999999M")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_take_humantime_forms() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").unwrap_err().contains("e.g. 10s"));
        assert!(parse_duration("soon").is_err());
    }

    fn parse(args: &[&str]) -> Result<run::Config, String> {
        let mut argv = vec!["ampd-loadgen"];
        argv.extend_from_slice(args);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        check(args)
    }

    #[test]
    fn the_command_line_is_checked() {
        Args::command().debug_assert();
        let c = parse(&["--rate", "2000"]).unwrap();
        assert_eq!(c.load, run::Load::Rate(2000.0));
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.values, Values::fixed(100, 1));
        let r = parse(&["--rate", "1", "--value-size-range", "64-64KiB"]).unwrap();
        assert_eq!((r.values.min(), r.values.max()), (64, 65_536));
        assert!(!r.values.is_fixed());
        assert!(matches!(parse(&["--max"]).unwrap().load, run::Load::Max));
        assert_eq!(c.zipf_theta, ZIPF_THETA, "the default skew is YCSB's");
        let z = parse(&["--max", "--dist", "zipfian", "--zipf-alpha", "1.2"]).unwrap();
        assert_eq!((z.dist, z.zipf_theta), (Dist::Zipfian, 1.2));
        assert_eq!(c.workload, Workload::Mix(Mix::parse(MIX_DEFAULT).unwrap()));
        let ca = parse(&["--max", "--cache-aside", "--requests", "2000"]).unwrap();
        assert_eq!(ca.workload, Workload::CacheAside);
        assert_eq!(
            ca.load,
            run::Load::Count {
                warmup: 0,
                measured: 2000
            }
        );
        assert!(ca.scan.is_none());
        let scan = parse(&["--max", "--cache-aside", "--scan-every", "10"]).unwrap();
        assert_eq!(scan.scan.map(|s| s.every()), Some(10));
        let ca = parse(&["--rate", "5", "--cache-aside"]).unwrap();
        assert_eq!(
            (ca.workload, ca.load),
            (Workload::CacheAside, run::Load::Rate(5.0))
        );
        assert_eq!(
            parse(&["--max", "--requests", "10", "--warmup-requests", "7"])
                .unwrap()
                .load,
            run::Load::Count {
                warmup: 7,
                measured: 10
            }
        );
        assert_eq!(
            parse(&["--find-max", "1.5"]).unwrap().load,
            run::Load::FindMax {
                start: FIND_MAX_START,
                p99_bound: Duration::from_micros(1500)
            }
        );
        for (args, why) in [
            (
                &["--connections", "0", "--rate", "1"][..],
                "--connections 0",
            ),
            (&["--rate", "0"], "--rate 0"),
            (&["--rate", "1", "--max"], "cannot be used with"),
            (&["--max", "--find-max", "1"], "cannot be used with"),
            (&[], "--rate N, --max or --find-max"),
            (&["--rate", "1", "--duration", "0s"], "above zero"),
            (
                &["--rate", "1", "--mix", "get=0"],
                "no op a positive weight",
            ),
            (&["--rate", "1", "--value-size", "1MiB"], "--value-size"),
            (
                &["--rate", "1", "--value-size-range", "64"],
                "not a range MIN-MAX",
            ),
            (
                &["--rate", "1", "--value-size-range", "0-10"],
                "--value-size-range 0-10: MIN from 1",
            ),
            (
                &["--rate", "1", "--value-size-range", "100-10"],
                "and at most MAX",
            ),
            (
                &["--rate", "1", "--value-size-range", "1-1MiB"],
                "--value-size-range's MAX 1048576, allowed 1..=",
            ),
            (
                &[
                    "--rate",
                    "1",
                    "--value-size",
                    "5",
                    "--value-size-range",
                    "1-9",
                ],
                "cannot be used with",
            ),
            (&["--rate", "1", "--dist", "pareto"], "pareto"),
            (&["--rate", "1", "--zipf-alpha", "0.5"], "give both"),
            (
                &["--rate", "1", "--dist", "zipfian", "--zipf-alpha", "1"],
                "--zipf-alpha: zipf alpha 1 is within 0.001 of 1",
            ),
            (
                &["--rate", "1", "--dist", "zipfian", "--zipf-alpha", "0"],
                "above 0",
            ),
            (
                &["--rate", "1", "--dist", "zipfian", "--zipf-alpha", "9"],
                "at most 5",
            ),
            (&["--find-max", "0"], "above 0"),
            (
                &["--max", "--cache-aside", "--mix", "get=1"],
                "'--cache-aside' cannot be used with '--mix <MIX>'",
            ),
            (
                &["--rate", "1", "--requests", "10"],
                "--requests counts the operations of a closed loop: give it with --max",
            ),
            (
                &["--find-max", "1", "--requests", "10"],
                "give it with --max",
            ),
            (&["--max", "--requests", "0"], "--requests 0, allowed 1..="),
            (
                &["--max", "--requests", "10", "--duration", "1s"],
                "cannot be used with",
            ),
            (
                &["--max", "--requests", "10", "--warmup", "1s"],
                "cannot be used with",
            ),
            (&["--max", "--warmup-requests", "10"], "--requests <N>"),
            (&["--max", "--scan-every", "10"], "--cache-aside"),
            (
                &["--max", "--cache-aside", "--scan-every", "0"],
                "--scan-every 0, allowed 1..=",
            ),
            (
                &["--rate", "1", "--server-pid", "4294967295"],
                "--server-pid",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }
}
