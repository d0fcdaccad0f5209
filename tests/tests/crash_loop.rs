//! Crash loop: a writer process (`crash-writer`, `fsync always`) is killed with SIGKILL
//! at random moments; after each kill the data directory is opened again and must hold
//! every acknowledged write, and be the state of some moment between the last
//! acknowledged write and the next one (the one in flight may or may not be there).
//! Then the writer starts again where the data left off.
//!
//! Guards against acknowledging before the fsync, losing the tail of the log at a
//! crash, and a recovery that cannot open what a crash left behind.

use ampd_engine::{Config, Db, FsyncPolicy, QueryOptions};
use ampd_tests::splitmix;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: u64 = 64;

/// The recovered values of `w:0..w:63` (None where never written).
fn recovered(dir: &std::path::Path) -> Vec<Option<u64>> {
    let db = Db::open(Config {
        shards: 2,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        ..Config::default()
    })
    .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    let options = QueryOptions {
        limit: Some(1000),
        ..Default::default()
    };
    let mut values = vec![None; KEYS as usize];
    let page = db.get("w:*", &options).expect("query").to_json(false);
    for item in page["items"].as_array().expect("items") {
        let key = item["key"].as_str().expect("key");
        let j: usize = key[2..].parse().expect("w:N");
        values[j] = Some(item["value"].as_u64().expect("a number"));
    }
    values
}

fn crash_loop(kills: u64, seed: u64) {
    let dir = ampd_tests::temp_dir(&format!("crash-{seed}"));
    let mut rng = seed;
    let mut first = 0u64;
    let mut kills_after_acks = 0;
    for kill in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&dir)
            .arg(first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the writer starts");
        let stdout = child.stdout.take().expect("piped");
        // Read acks on a thread while the main thread picks the moment to kill.
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    last = Some(n.parse::<u64>().expect("ack N"));
                }
            }
            last
        });
        let wait = Duration::from_millis(20 + splitmix(&mut rng) % 120);
        let started = Instant::now();
        while started.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let last_acked = reader.join().expect("reader");
        let values = recovered(&dir);
        let newest = values.iter().flatten().copied().max();
        if let Some(acked) = last_acked {
            kills_after_acks += 1;
            // Every acknowledged write is there: each key holds its last acked value, or
            // the in-flight write (acked + 1) if it was for that key.
            for j in 0..KEYS {
                let last_for_key = (first..=acked).rev().find(|n| n % KEYS == j);
                let in_flight = (acked + 1) % KEYS == j;
                let got = values[j as usize];
                let ok = got == last_for_key.or(if first > 0 { got } else { None })
                    || (in_flight && got == Some(acked + 1));
                assert!(
                    ok,
                    "kill {kill} (seed {seed}): w:{j} is {got:?}, last acked write for it \
                     {last_for_key:?}, last ack {acked}"
                );
            }
            assert!(
                newest <= Some(acked + 1),
                "kill {kill}: a write that was never made"
            );
        }
        first = newest.map_or(0, |n| n + 1);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
    // Most kills must land while writes are being acknowledged, or the test proves
    // nothing.
    assert!(
        kills_after_acks * 2 >= kills,
        "only {kills_after_acks} of {kills} kills came after an acknowledged write"
    );
    eprintln!("{kills} kills, {kills_after_acks} after acknowledged writes, {first} writes in all");
}

#[test]
fn every_acknowledged_write_survives_100_kills() {
    crash_loop(100, 1);
}

#[test]
#[ignore = "long: 3,000 kills; run with --ignored"]
fn every_acknowledged_write_survives_3000_kills() {
    crash_loop(3000, 2);
}
