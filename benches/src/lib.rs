//! Shared set-up of the engine benchmarks.
//!
//! # Layout
//! - The data set: [`key`], [`label`] and [`value`] name item `i` of a preload, so
//!   every bench can pick an existing key without keeping a list of them.
//! - [`open`] and [`preload`]: an engine filled with `n` items, fast (sets in flight by
//!   the thousand, so the shards drain whole batches).
//! - [`Rng`]: a small deterministic random source (the benches need no `rand`).
//! - [`Zipf`] and [`trace_key`]: the keys of a zipfian cache trace (`cache-ratio`,
//!   `embedded-vs-moka`).
//! - [`Counted`]: mimalloc with a count of the bytes allocated while [`allocated_by`]
//!   runs, for binaries that measure what an item costs (`item-bytes`,
//!   `embedded-vs-moka`).
//! - [`is_bench_run`]: whether the binary runs as a benchmark or as a smoke test
//!   (`cargo test --benches`), which must stay quick.
//! - [`Spawned`]: a server process a benchmark binary started, stopped when dropped;
//!   [`Spawned::ampd`] and [`Spawned::redis`] start one pinned to given cores
//!   ([`pinned`]: by `taskset` where the machine has it).
//! - The generator and the server as the bench binaries read them: [`loadgen_json`]
//!   (and [`loadgen_json_ticking`], which samples while it runs), [`field`] of its JSON,
//!   [`StatsProbe`] for a server's `stats`, [`process_bytes`] (its resident set).
//! - Reporting: [`machine`] and [`commit`] to head the figures, [`median`], [`figure`], [`mib`],
//!   and [`Target`] with [`targets_table`], the closing table of an issue's targets,
//!   measured, met or missed.
//!
//! # The data set
//! Item `i` lives in namespace `ns{i % 1000}` as `ns{n}:k{i:07}`, except about 1% that
//! are simple keys `s{i:07}` (so both routing rules are exercised). About 10% carry
//! `label1 = grp{g}` with `g` among [`LABEL_GROUPS`] values, so a label query for one
//! value returns about `items / 10 / LABEL_GROUPS` items (50 at 1 M). Values are
//! objects of ~100 encoded bytes.

use ampd_engine::{Config, Db, SetOptions, Value};
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Namespaces of the data set.
pub const NAMESPACES: u64 = 1000;
/// Distinct `label1` values of the data set.
pub const LABEL_GROUPS: u64 = 2000;
/// Items of the full data set.
pub const ITEMS_FULL: u64 = 1_000_000;
/// Items when the binary runs as a smoke test.
pub const ITEMS_SMOKE: u64 = 10_000;
/// Sets in flight at once during a preload.
const PRELOAD_IN_FLIGHT: usize = 8192;

/// Whether the binary was started by `cargo bench` (`--bench`) rather than by
/// `cargo test --benches` or with `--test`/`--list` (criterion's own rule).
pub fn is_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Items to preload: `AMPD_BENCH_ITEMS` if set, else the full data set when
/// benchmarking and a small one otherwise.
pub fn item_count() -> u64 {
    if let Some(n) = std::env::var("AMPD_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if is_bench_run() {
        ITEMS_FULL
    } else {
        ITEMS_SMOKE
    }
}

/// splitmix64: a well-mixed hash of `i`, used to decide an item's shape.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of item `i`.
pub fn key(i: u64) -> String {
    if mix(i).is_multiple_of(100) {
        format!("s{i:07}")
    } else {
        format!("ns{}:k{i:07}", i % NAMESPACES)
    }
}

/// The `label1` value of item `i`, if it has one.
pub fn label(i: u64) -> Option<String> {
    let h = mix(i);
    (h >> 8)
        .is_multiple_of(10)
        .then(|| label_value((h >> 16) % LABEL_GROUPS))
}

/// The `g`th `label1` value.
pub fn label_value(g: u64) -> String {
    format!("grp{g}")
}

/// The value of item `i`: an object of ~100 bytes once encoded.
pub fn value(i: u64) -> Value {
    json!({
        "name": format!("user-{i:07}"),
        "score": i % 10_000,
        "active": !i.is_multiple_of(3),
        "bio": "a value padded to make the encoded item about one hundred bytes",
    })
}

/// The options that give item `i` its label.
pub fn set_options(i: u64) -> SetOptions {
    match label(i) {
        Some(l) => SetOptions::default().label(1, l),
        None => SetOptions::default(),
    }
}

/// Opens an engine with `shards` pinned shards.
pub fn open(shards: usize) -> Db {
    Db::open(Config {
        shards,
        pin: true,
        ..Config::default()
    })
    .expect("the engine opens")
}

/// Sets items `0..items`, [`PRELOAD_IN_FLIGHT`] at a time, printing progress to stderr
/// about once a second.
pub fn preload(db: &Db, items: u64) {
    let started = Instant::now();
    let mut reported = started;
    let mut done = 0u64;
    while done < items {
        let end = (done + PRELOAD_IN_FLIGHT as u64).min(items);
        let sets = (done..end).map(|i| async move {
            db.set(&key(i), value(i), &set_options(i))
                .await
                .expect("a preload set succeeds")
        });
        futures::executor::block_on(futures::future::join_all(sets));
        done = end;
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            eprintln!(
                "preload ({} shards): {done}/{items} items, {:.1} s",
                db.shard_count(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "preload ({} shards): {items} items in {secs:.1} s ({:.0} sets/s)",
        db.shard_count(),
        items as f64 / secs
    );
}

/// A small deterministic random source (xorshift over splitmix seeds).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough in `0..n` for picking keys.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(alpha) over `keys` keys, drawn by inverting its CDF (exact; one table of
/// `keys` doubles).
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(keys: u64, alpha: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(keys as usize);
        let mut sum = 0.0;
        for rank in 1..=keys {
            sum += 1.0 / (rank as f64).powf(alpha);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// A rank in `0..keys` for a uniform `u` in [0, 1) (0 the most frequent).
    pub fn rank(&self, u: f64) -> u64 {
        self.cdf.partition_point(|c| *c < u) as u64
    }

    /// The id in `0..keys` of the next key of the trace: a rank scattered over the key
    /// space (a bijection: 2^61-1 is prime), so the hot keys are not neighbours.
    pub fn draw(&self, rng: &mut Rng) -> u64 {
        let keys = self.cdf.len() as u128;
        (self.rank(rng.unit()) as u128 * ((1u128 << 61) - 1) % keys) as u64
    }
}

/// The key of trace id `id`, `k{id}`.
pub fn trace_key(id: u64) -> String {
    let mut key = String::new();
    push_trace_key(&mut key, id);
    key
}

/// [`trace_key`] written into `out` (cleared first), for loops that reuse a buffer.
pub fn push_trace_key(out: &mut String, id: u64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "k{id}");
}

/// mimalloc (the server's allocator) with a count of the bytes allocated and freed
/// while [`allocated_by`] runs. A binary installs it with
/// `#[global_allocator] static GLOBAL: ampd_benches::Counted = ampd_benches::Counted;`;
/// outside a count it costs one relaxed load of a flag no thread writes, so a
/// benchmark's timed phases run at mimalloc's speed.
pub struct Counted;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

impl Counted {
    fn count(bytes: isize) {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed through to mimalloc unchanged; the counting touches no
// allocation.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counted::count(layout.size() as isize);
        // SAFETY: the caller's contract is passed on.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Counted::count(-(layout.size() as isize));
        // SAFETY: the caller's contract is passed on.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counted::count(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract is passed on.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns what it gave and the bytes allocated meanwhile, less those
/// freed meanwhile (by any thread, so the engine's shards count too), as [`Counted`]
/// counts them: layout sizes, not the allocator's size classes. Calls do not nest.
pub fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    assert!(
        !COUNTING.swap(true, Ordering::Relaxed),
        "allocated_by does not nest"
    );
    let out = f();
    COUNTING.store(false, Ordering::Relaxed);
    (out, (ALLOCATED.load(Ordering::Relaxed) - before) as i64)
}

/// `count` keys of existing items, picked at random among `0..items`.
pub fn random_keys(items: u64, count: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| key(rng.below(items))).collect()
}

/// A server process a benchmark binary started, with its scratch folder: stopped
/// (SIGTERM, so it syncs and exits as in production), reaped, and the folder removed
/// when dropped.
pub struct Spawned {
    pub child: std::process::Child,
    pub dir: std::path::PathBuf,
    /// Where it listens, `host:port` (as it said, so `--addr 127.0.0.1:0` works).
    pub addr: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Spawned {
    /// A scratch folder `name` (emptied) for a server of this process.
    pub fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ampd-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// `ampd serve ARGS` pinned to `cores` (taskset's list), with `dir` its scratch
    /// folder; once it prints its address. `Err` with what it said when it does not
    /// (as `--coalesce` on a kernel before 6.12).
    pub fn ampd(
        bin: &str,
        cores: &str,
        args: &[&str],
        dir: std::path::PathBuf,
    ) -> Result<Spawned, String> {
        use std::io::{BufRead, Read};
        let mut child = pinned(cores, bin)
            .arg("serve")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {bin}: {e}"))?;
        // Drained on a thread of its own, so that what ampd logs never blocks it; read
        // only when it will not start, to say why.
        let mut stderr = child.stderr.take().expect("piped stderr");
        let said = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if let Some(addr) = line.strip_prefix("ampd listening on ") {
            let addr = addr.trim().to_owned();
            return Ok(Spawned { child, dir, addr });
        }
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let said = said.join().unwrap_or_default();
        let said = if said.trim().is_empty() { line } else { said };
        Err(said.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// `redis-server ARGS` on `port` pinned to core 0, with `dir` its folder; once it
    /// answers PING.
    pub fn redis(port: u16, args: &[&str], dir: std::path::PathBuf) -> Spawned {
        let child = pinned("0", "redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        for _ in 0..100 {
            let pong = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "ping"])
                .output();
            if pong.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Spawned {
            child,
            dir,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

/// `program` pinned to `cores` (taskset's list, as `0` or `0,1`) when the machine has
/// `taskset`; unpinned, said once on stderr, when it has not.
pub fn pinned(cores: &str, program: impl AsRef<OsStr>) -> Command {
    static TASKSET: OnceLock<bool> = OnceLock::new();
    let taskset = *TASKSET.get_or_init(|| {
        let found = Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("taskset is missing: the servers and the generator run unpinned");
        }
        found
    });
    if taskset {
        let mut command = Command::new("taskset");
        command.args(["-c", cores]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs `ampd-loadgen` as `command` says (its stderr dropped) and returns its `--json`
/// result, the last line of its stdout; panics, naming `what`, when there is none.
pub fn loadgen_json(mut command: Command, what: &str) -> serde_json::Value {
    let out = command
        .stderr(Stdio::null())
        .output()
        .expect("the generator runs");
    last_json(&out, what)
}

/// As [`loadgen_json`], calling `tick` with the time since the generator started every
/// `every` while it runs (to sample the server and print a progress line).
pub fn loadgen_json_ticking(
    mut command: Command,
    what: &str,
    every: Duration,
    mut tick: impl FnMut(Duration),
) -> serde_json::Value {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the generator runs");
    let started = Instant::now();
    // Waited for on a thread of its own, which also drains its stdout.
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let mut next = every;
    let out = loop {
        match finished.recv_timeout(next.saturating_sub(started.elapsed())) {
            Ok(out) => break out.expect("the generator runs"),
            Err(RecvTimeoutError::Timeout) => {
                tick(started.elapsed());
                next += every;
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{what}: the generator's waiter ended without its output")
            }
        }
    };
    last_json(&out, what)
}

/// The generator's `--json` result: the last line of its stdout.
fn last_json(out: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{what}: the generator's last line is not JSON ({e}): {stdout}"))
}

/// A number of a JSON result (the generator's, `ampd stats`), NaN when it is missing.
pub fn field(v: &serde_json::Value, name: &str) -> f64 {
    v[name].as_f64().unwrap_or(f64::NAN)
}

/// A connection to an ampd server kept open for its `stats`: sampling it once a second
/// costs the server one small request, and the machine no process started.
pub struct StatsProbe {
    runtime: tokio::runtime::Runtime,
    client: ampd_wire::client::Client,
}

impl StatsProbe {
    /// Connects to the server at `addr`; panics when it cannot.
    pub fn connect(addr: &str) -> StatsProbe {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime
            .block_on(ampd_wire::client::Client::connect(addr))
            .unwrap_or_else(|e| panic!("no connection to {addr} for stats: {e}"));
        StatsProbe { runtime, client }
    }

    /// `stats` now; panics when the server does not answer.
    pub fn stats(&self) -> serde_json::Value {
        self.runtime
            .block_on(self.client.stats())
            .unwrap_or_else(|e| panic!("stats: {e}"))
    }
}

/// A size of process `pid` in bytes from `/proc/PID/status`: `VmRSS` (resident now),
/// `VmHWM` (the most it has been resident); `None` when it cannot be read (the process
/// is gone).
pub fn process_bytes(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The machine the figures come from: cores, CPU model, kernel.
pub fn machine() -> String {
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

/// The commit the binaries were built from, as `git` in the current folder says (empty
/// outside a checkout).
pub fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The value after `flag` on a bench binary's command line, parsed; exits with 2
/// (and says so) when it is missing or does not parse.
pub fn flag_value<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> T {
    let text = args.next().unwrap_or_default();
    text.parse().unwrap_or_else(|_| {
        eprintln!("{flag} needs a value ({text:?} is not one)");
        std::process::exit(2)
    })
}

/// The median (the upper one of an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A figure as a table shows it: whole numbers from 100 up, one decimal below.
pub fn figure(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Bytes in MiB, one decimal: `16.0 MiB`.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// One of an issue's targets as a run measured it.
pub struct Target {
    pub what: String,
    pub measured: String,
    pub goal: String,
    /// `None`: not measured (a setting was refused, or a figure is missing).
    pub met: Option<bool>,
}

impl Target {
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        }
    }
}

/// The closing table of `targets` (markdown): each one, what was measured, its goal,
/// met or missed; then how many were met.
pub fn targets_table(targets: &[Target]) -> String {
    let mut t = String::from("| target | measured | goal | met? |\n| --- | --- | --- | --- |\n");
    for target in targets {
        t += &format!(
            "| {} | {} | {} | {} |\n",
            target.what,
            target.measured,
            target.goal,
            target.verdict()
        );
    }
    let met = targets.iter().filter(|t| t.met == Some(true)).count();
    t + &format!("\n{met} of {} targets met.\n", targets.len())
}
