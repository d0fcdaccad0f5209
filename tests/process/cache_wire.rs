//! The cache tier served (`ampd serve --max-memory SIZE --eviction POLICY`), as a
//! user drives it with the CLI: writes past the budget evict instead of failing,
//! `ampd stats` reports the budget, what is used, hits, misses and evictions (per
//! shard and in total, adding up), and `--eviction` without `--max-memory` or with an
//! unknown policy is refused at start.

use ampd_tests::server_process::ServerProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

/// Runs one CLI command against `addr`, which must succeed; its stdout, trimmed.
fn cli(addr: &str, args: &[&str]) -> String {
    ampd_tests::server_process::cli(BIN, addr, args)
}

#[test]
fn a_full_cache_evicts_and_reports_it() {
    let server = ServerProcess::start(
        BIN,
        &[
            "--addr",
            "127.0.0.1:0",
            "--in-memory",
            "--shards",
            "2",
            "--max-memory",
            "16KiB",
            "--eviction",
            "s3fifo",
        ],
    );
    let addr = server.addr().to_owned();
    let value = format!("\"{}\"", "x".repeat(200));
    for i in 0..100 {
        cli(&addr, &["set", &format!("k{i}"), &value]);
    }
    assert_eq!(
        cli(&addr, &["get", "k99"]),
        value,
        "the newest write is there"
    );
    assert_eq!(cli(&addr, &["get", "nope"]), "null");
    let stats: Value = serde_json::from_str(&cli(&addr, &["stats"])).unwrap();
    let cache = &stats["cache"];
    assert_eq!(cache["budget"], 16 * 1024, "{cache}");
    let used = cache["used"].as_u64().unwrap();
    assert!(used <= 16 * 1024 && used > 8 * 1024, "{cache}");
    let evictions = cache["evictions"].as_u64().unwrap();
    let items = stats["items"].as_u64().unwrap();
    assert_eq!(evictions + items, 100, "{stats}");
    assert_eq!(
        (cache["hits"].as_u64(), cache["misses"].as_u64()),
        (Some(1), Some(1))
    );
    let shards = cache["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    for field in [
        "budget",
        "used",
        "hits",
        "misses",
        "evictions",
        "evicted_bytes",
    ] {
        let sum: u64 = shards.iter().map(|s| s[field].as_u64().unwrap()).sum();
        assert_eq!(Some(sum), cache[field].as_u64(), "{field}: {cache}");
    }
}

#[test]
fn eviction_needs_a_budget_and_a_known_policy() {
    for (args, says) in [
        (
            vec!["--in-memory", "--eviction", "lru"],
            "--eviction needs --max-memory",
        ),
        (
            vec!["--in-memory", "--max-memory", "1MiB", "--eviction", "lfu"],
            "use s3fifo (recommended), lru or none",
        ),
    ] {
        let mut all = vec!["--addr", "127.0.0.1:0"];
        all.extend(args);
        match ServerProcess::try_start(BIN, &all) {
            Ok(s) => panic!("{all:?} started at {}", s.addr()),
            Err(failure) => assert!(failure.stderr.contains(says), "{all:?}: {failure}"),
        }
    }
}
