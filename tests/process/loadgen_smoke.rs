//! The load generator against a real server, briefly: `ampd-loadgen` drives `ampd serve`
//! for 10 seconds at a fixed rate with the default mix (get, set, add, range, label) on
//! a preloaded key space, and must finish with zero errors and a JSON report whose
//! counts add up. Guards against a generator (or a server) that breaks under the
//! benchmark's own workload; speed is measured elsewhere (`benches/compare-redis.sh`).
//!
//! Then cache-aside (`--cache-aside --requests N`) on an empty server, one connection
//! with one request in flight: the first get of each key must miss and set it, every
//! later get hit, so the generator's hits and misses are exact and the server ends up
//! holding one item per miss — and they agree with the server's own cache counters.
//! Guards against a generator that takes ampd's `nil` for a value (every get a hit,
//! nothing set) or a value for `nil`. With `--scan-every 10` a tenth of the operations
//! are on scan keys, which must all miss and be set once each, on top of the key
//! space's misses. The refused argument combinations exit with 2.
//!
//! Then `--value-size-range`: what a preload and a run of sets leave on the server is
//! read back, and every value is a string of the generator's letters with a size
//! inside the range, the sizes spread over it (guards against a range that is ignored,
//! or values cut or padded on the way).

use ampd_tests::server_process::{build_beside, cli, ServerProcess};
use serde_json::Value;
use std::process::{Command, Output};

const AMPD: &str = env!("CARGO_BIN_EXE_ampd");

/// The generator, built once per test binary ([`build_beside`] says why).
fn loadgen_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_beside(AMPD, "ampd-loadgen", &["ampd-loadgen"]).join("ampd-loadgen"))
        .clone()
}

#[test]
fn loadgen_runs_ten_seconds_against_a_server_without_errors() {
    let server = ServerProcess::start(
        AMPD,
        &["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"],
    );
    let loadgen = loadgen_binary();
    let pid = server.pid().to_string();
    let out = Command::new(&loadgen)
        .args([
            "--addr",
            server.addr(),
            "--connections",
            "8",
            "--pipeline",
            "4",
        ])
        .args(["--rate", "2000", "--duration", "10s", "--warmup", "1s"])
        .args([
            "--keys",
            "10000",
            "--preload",
            "--server-pid",
            &pid,
            "--json",
        ])
        .output()
        .expect("the generator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {stdout}"));
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["lost_connections"], 0, "{report}");
    let ops = report["ops"].as_u64().expect("ops");
    assert!(ops >= 15_000, "{ops} ops in 10 s at 2,000/s");
    let per_op: u64 = report["per_op"]
        .as_object()
        .expect("per_op")
        .values()
        .map(|o| o["ops"].as_u64().expect("ops of an op"))
        .sum();
    assert_eq!(per_op, ops, "per-op counts add up: {report}");
    for op in ["get", "set", "add", "range", "label"] {
        assert!(
            report["per_op"][op]["ops"].as_u64() > Some(0),
            "{op}: {report}"
        );
    }
    drop(server);
}

/// Runs the generator with `args`; its output, whatever the exit status.
fn loadgen(args: &[&str]) -> Output {
    Command::new(loadgen_binary())
        .args(args)
        .output()
        .expect("the generator runs")
}

/// The JSON report on the last line of a successful run's stdout.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {stdout}"))
}

/// `ampd stats` of the server at `addr`.
fn server_stats(addr: &str) -> Value {
    let out = Command::new(AMPD)
        .arg("stats")
        .env("AMPD_ADDR", addr)
        .output()
        .expect("run ampd stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats is JSON")
}

/// A cache-aside run of `requests` operations on one connection with one request in
/// flight, over `keys` keys, with `extra` arguments.
/// An in-memory server with a 64 MiB cache budget under `policy`.
fn cache_server(policy: &str) -> ServerProcess {
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--in-memory",
        "--max-memory",
        "64MiB",
    ];
    ServerProcess::start(AMPD, &[&args[..], &["--eviction", policy]].concat())
}

fn cache_aside(addr: &str, requests: u64, keys: u64, extra: &[&str]) -> Value {
    let (requests, keys) = (requests.to_string(), keys.to_string());
    let mut args = vec![
        "--addr",
        addr,
        "--cache-aside",
        "--max",
        "--requests",
        &requests,
        "--warmup-requests",
        "0",
        "--keys",
        &keys,
        "--connections",
        "1",
        "--pipeline",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = report(&loadgen(&args));
    assert_eq!(r["cache_aside"], true, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["lost_connections"], 0, "{r}");
    let (hits, misses) = (r["hits"].as_u64().unwrap(), r["misses"].as_u64().unwrap());
    assert_eq!(hits + misses, r["requests"].as_u64().unwrap(), "{r}");
    assert_eq!(r["per_op"]["get"]["ops"], hits + misses, "{r}");
    assert_eq!(r["per_op"]["set"]["ops"], misses, "a set per miss: {r}");
    assert_eq!(r["ops"], hits + 2 * misses, "{r}");
    r
}

#[test]
fn cache_aside_misses_each_key_once_and_the_server_holds_what_was_set() {
    let server = ServerProcess::start(AMPD, &["--addr", "127.0.0.1:0", "--in-memory"]);
    // 2000 uniform draws over 100 keys reach every key (all but certainly; and the seed
    // is fixed): 100 misses, each setting its key, then hits.
    let r = cache_aside(server.addr(), 2000, 100, &[]);
    assert_eq!(
        (r["hits"].as_u64(), r["misses"].as_u64()),
        (Some(1900), Some(100)),
        "{r}"
    );
    assert_eq!(r["hit_ratio"].as_f64(), Some(0.95), "{r}");
    assert_eq!(server_stats(server.addr())["items"], 100);
    // The cache is warm now: every get hits, nothing is set.
    let r = cache_aside(server.addr(), 500, 100, &["--seed", "2"]);
    assert_eq!(
        (r["hits"].as_u64(), r["misses"].as_u64()),
        (Some(500), Some(0)),
        "{r}"
    );
    assert_eq!(r["hit_ratio"].as_f64(), Some(1.0), "{r}");
    assert_eq!(server_stats(server.addr())["items"], 100);
    drop(server);
}

#[test]
fn cache_aside_counts_agree_with_the_servers_cache_counters() {
    // With a budget (far more than 1000 items need: nothing is evicted) the server
    // counts its own hits and misses of gets.
    let server = cache_server("lru");
    let r = cache_aside(
        server.addr(),
        3000,
        1000,
        &["--dist", "zipfian", "--zipf-alpha", "1.2"],
    );
    assert_eq!(r["zipf_alpha"].as_f64(), Some(1.2), "{r}");
    let (hits, misses) = (r["hits"].as_u64().unwrap(), r["misses"].as_u64().unwrap());
    // Skewed: far fewer distinct keys than draws (uniform would draw ~950 of the 1000).
    assert!(misses > 0 && misses < 600, "{r}");
    let stats = server_stats(server.addr());
    assert_eq!(stats["items"], misses, "one item per miss: {stats}");
    let cache = &stats["cache"];
    assert_eq!(cache["evictions"], 0, "{stats}");
    assert_eq!(
        (cache["hits"].as_u64(), cache["misses"].as_u64()),
        (Some(hits), Some(misses)),
        "{stats} vs {r}"
    );
    drop(server);
}

#[test]
fn ranged_value_sizes_reach_the_server_within_the_range() {
    let server = ServerProcess::start(AMPD, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let keys = 300u64;
    let (min, max) = (10usize, 20_000usize);
    let range = format!("{min}-{max}");
    let key_count = keys.to_string();
    let r = report(&loadgen(&[
        "--addr",
        server.addr(),
        "--value-size-range",
        &range,
        "--keys",
        &key_count,
        "--namespaces",
        "0",
        "--preload",
        "--mix",
        "set=100",
        "--rate",
        "500",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--json",
    ]));
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(
        (&r["value_size"], &r["value_size_min"], &r["value_size_max"]),
        (&Value::Null, &Value::from(min), &Value::from(max)),
        "{r}"
    );
    assert!(r["per_op"]["set"]["ops"].as_u64() > Some(0), "{r}");
    // The preload wrote every key; the sets overwrote some of them.
    assert_eq!(server_stats(server.addr())["items"], keys);
    // Read back 25 keys at a time (a batch's limit).
    let names: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
    let mut values = Vec::new();
    for chunk in names.chunks(25) {
        let mut args = vec!["get"];
        args.extend(chunk.iter().map(String::as_str));
        // Several keys answer {items: [{key, value}], lastKey}, in the order asked.
        let got: Value = serde_json::from_str(&cli(AMPD, server.addr(), &args)).expect("JSON");
        let got = got["items"].as_array().expect("items");
        let keys: Vec<&str> = got.iter().filter_map(|i| i["key"].as_str()).collect();
        assert_eq!(keys, chunk, "{got:?}");
        values.extend(got.iter().map(|i| i["value"].clone()));
    }
    let mut sizes: Vec<usize> = values
        .iter()
        .map(|v| {
            let text = v.as_str().unwrap_or_else(|| panic!("a string: {v}"));
            assert!(text.bytes().all(|b| b.is_ascii_lowercase()), "{text}");
            text.len()
        })
        .collect();
    assert!(sizes.iter().all(|n| (min..=max).contains(n)), "{sizes:?}");
    // Log-uniform over 10 B .. 20 KB: 300 values reach below 100 B and above 2 KB
    // (each about a third of the draws), and hardly two are the same size.
    assert!(sizes.iter().any(|&n| n < 100), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n > 2_000), "{sizes:?}");
    sizes.sort_unstable();
    sizes.dedup();
    assert!(sizes.len() > 200, "{} distinct sizes", sizes.len());
    drop(server);
}

#[test]
fn a_scan_mixed_into_cache_aside_misses_every_scan_key_and_sets_it_once() {
    let server = cache_server("s3fifo");
    // 2000 operations, every 10th on a fresh scan key: 200 scan keys, and 1800 uniform
    // draws over 100 keys, which reach all of them (the seed is fixed). Each first get
    // misses and sets its key: 100 + 200 misses, the rest hits, 300 items.
    let r = cache_aside(server.addr(), 2000, 100, &["--scan-every", "10"]);
    assert_eq!(r["scan_every"], 10, "{r}");
    assert_eq!(
        (r["scan_gets"].as_u64(), r["scan_misses"].as_u64()),
        (Some(200), Some(200)),
        "{r}"
    );
    let misses = r["misses"].as_u64().unwrap();
    assert!(misses >= 200, "every scan get misses: {r}");
    assert_eq!((r["hits"].as_u64(), misses), (Some(1700), 300), "{r}");
    let stats = server_stats(server.addr());
    assert_eq!(stats["items"], 300, "one item per miss: {stats}");
    let cache = &stats["cache"];
    assert_eq!(cache["evictions"], 0, "{stats}");
    assert_eq!(
        (cache["hits"].as_u64(), cache["misses"].as_u64()),
        (Some(1700), Some(300)),
        "{stats} vs {r}"
    );
    drop(server);
}

#[test]
fn refused_combinations_exit_with_2_and_say_why() {
    for (args, why) in [
        (
            &["--max", "--cache-aside", "--mix", "get=1"][..],
            "'--cache-aside' cannot be used with '--mix <MIX>'",
        ),
        (
            &["--rate", "100", "--requests", "10"],
            "--requests counts the operations of a closed loop: give it with --max",
        ),
        (
            &["--find-max", "1", "--requests", "10"],
            "give it with --max",
        ),
        (
            &["--max", "--requests", "10", "--duration", "1s"],
            "cannot be used with",
        ),
        (&["--max", "--warmup-requests", "10"], "--requests <N>"),
        (
            &["--max", "--dist", "zipfian", "--zipf-alpha", "1"],
            "within 0.001 of 1",
        ),
        (
            &["--max", "--dist", "zipfian", "--zipf-alpha", "0"],
            "above 0",
        ),
        (&["--max", "--zipf-alpha", "0.5"], "skew of --dist zipfian"),
        (&["--max", "--scan-every", "10"], "--cache-aside"),
        (
            &["--max", "--cache-aside", "--scan-every", "0"],
            "--scan-every 0, allowed 1..=",
        ),
    ] {
        // Nothing listens there: the arguments are refused before any connection.
        let mut argv = vec!["--addr", "127.0.0.1:1"];
        argv.extend_from_slice(args);
        let out = loadgen(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}
