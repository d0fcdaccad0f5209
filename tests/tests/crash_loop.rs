//! Crash loop: a writer process (`crash-writer`, `fsync always`) makes the writes of
//! `ampd_tests::crash_workload` (every item shape: overwrites with labels, merges,
//! `$add`, counters, ttls, removes, batches) and is killed with SIGKILL at random
//! moments. After each kill the data directory is opened again and must equal the
//! reference model (an in-memory engine that made the same writes) after the last
//! acknowledged write, or after the one in flight. Then the writer starts again after
//! the last write the data holds.
//!
//! Guards against acknowledging before the fsync, losing the tail of the log at a
//! crash, a record that replays differently from how it first applied, and a recovery
//! that cannot open what a crash left behind.

use ampd_engine::{Config, Db, FsyncPolicy};
use ampd_tests::{crash_workload, open_in_memory, splitmix};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn recovered(dir: &std::path::Path) -> Value {
    let db = Db::open(Config {
        shards: 2,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        ..Config::default()
    })
    .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    crash_workload::state(&db)
}

/// Makes writes `from..to` on the model.
fn advance(model: &Db, from: u64, to: u64) {
    futures::executor::block_on(async {
        for n in from..to {
            crash_workload::write(model, n)
                .await
                .unwrap_or_else(|e| panic!("model write {n}: {e}"));
        }
    });
}

fn crash_loop(kills: u64, seed: u64) {
    let dir = ampd_tests::temp_dir(&format!("crash-{seed}"));
    let model = open_in_memory(2);
    let mut rng = seed;
    // Writes `0..done` are in the data directory and in the model.
    let mut done = 0u64;
    let mut kills_after_acks = 0;
    for kill in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&dir)
            .arg(done.to_string())
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
        let acked_until = reader.join().expect("reader").map_or(done, |n| n + 1);
        kills_after_acks += u64::from(acked_until > done);
        let got = recovered(&dir);
        advance(&model, done, acked_until);
        done = acked_until;
        if got != crash_workload::state(&model) {
            // Only the write in flight at the kill may be there beyond the last ack.
            advance(&model, done, done + 1);
            done += 1;
            assert_eq!(
                got,
                crash_workload::state(&model),
                "kill {kill} (seed {seed}): the recovered state is neither the state after \
                 the last acknowledged write ({}) nor after the next",
                done - 2
            );
        }
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
    // Most kills must land while writes are being acknowledged, or the test proves
    // nothing.
    assert!(
        kills_after_acks * 2 >= kills,
        "only {kills_after_acks} of {kills} kills came after an acknowledged write"
    );
    eprintln!("{kills} kills, {kills_after_acks} after acknowledged writes, {done} writes in all");
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
