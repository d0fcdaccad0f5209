//! Crash loop of the cache tier: a writer process (`crash-writer DIR N cache`: `fsync
//! always`, `s3fifo`, a budget of about 40 items, small WAL segments and snapshots)
//! overwrites 200 keys in turn, each with the number of the write, so nearly every
//! write evicts; it is SIGKILLed 20-140 ms after its first acknowledgement, 30 times,
//! and the data directory is opened again after each kill.
//!
//! Every recovered key must hold the last acknowledged write to it (or the write in
//! flight at the kill): an eviction may take a key away, never bring back an older
//! value or lose a write it did not evict. The recovered shards must be within their
//! budgets, and the run must have evicted (most keys gone) while keeping the newest.
//!
//! Guards against evictions that recovery does not replay (an evicted key coming back
//! with an old value), an eviction of the write being made, and a budget that only
//! holds until a restart.

use ampd_engine::Db;
use ampd_tests::crash_workload::{cache_config, cache_state, CACHE_KEYS};
use ampd_tests::splitmix;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const KILLS: u64 = 30;

#[test]
fn evictions_and_acknowledged_writes_survive_kills() {
    let dir = ampd_tests::temp_dir("cache-crash");
    let mut rng = 0x00c0_ffee;
    // Writes `0..done` are acknowledged (or recovered).
    let mut done = 0u64;
    let mut evicted_seen = 0;
    for kill in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&dir)
            .arg(done.to_string())
            .arg("cache")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the writer starts");
        let stdout = child.stdout.take().expect("piped");
        let (ack, acks) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    if ack.send(n.parse::<u64>().expect("ack N")).is_err() {
                        break;
                    }
                }
            }
        });
        let first = acks
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("kill {kill}: no acknowledgement ({e})"));
        assert_eq!(
            first, done,
            "kill {kill}: the writer starts after the data's last"
        );
        std::thread::sleep(Duration::from_millis(20 + splitmix(&mut rng) % 121));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        reader.join().expect("reader");
        let acked_until = acks.try_iter().last().unwrap_or(first) + 1;

        let db = Db::open(cache_config(&dir)).expect("recovery");
        for s in db.cache_stats() {
            assert!(s.used <= s.budget.unwrap_or(0), "kill {kill}: {s:?}");
        }
        let state = cache_state(&db);
        // The last write to key k below `until`.
        let last_write = |k: u64, until: u64| (0..until).rev().find(|m| m % CACHE_KEYS == k);
        let mut in_flight = false;
        for (key, n) in &state {
            let k: u64 = key.trim_start_matches("e:").parse().expect("e:K");
            if *n == acked_until && n % CACHE_KEYS == k {
                in_flight = true;
                continue;
            }
            assert_eq!(
                Some(*n),
                last_write(k, acked_until),
                "kill {kill}: {key} holds write {n}, not its last acknowledged one"
            );
        }
        evicted_seen = evicted_seen.max(CACHE_KEYS as usize - state.len());
        // The newest acknowledged write is never the one evicted (it made the room).
        let newest = acked_until - 1;
        let newest_key = format!("e:{}", newest % CACHE_KEYS);
        assert!(
            state.get(&newest_key) == Some(&newest) || in_flight,
            "kill {kill}: the newest acknowledged write {newest} is missing"
        );
        drop(db);
        done = acked_until + u64::from(in_flight);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert!(
        done > CACHE_KEYS * 2,
        "only {done} writes in {KILLS} kills: the keys never came round again"
    );
    assert!(
        evicted_seen > 100,
        "at most {evicted_seen} of {CACHE_KEYS} keys were ever evicted"
    );
}
