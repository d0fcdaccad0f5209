//! Crash loop: a writer process (`crash-writer`, `fsync always`) makes the writes of
//! `ampd_tests::crash_workload` (every item shape: overwrites with labels, merges,
//! `$add`, counters, ttls, removes, batches) and is killed with SIGKILL at a random
//! moment 20-140 ms after its first acknowledged write. After each kill the data
//! directory is opened again and must equal the reference model (an in-memory engine
//! that made the same writes) after the last acknowledged write, or after the one in
//! flight. Then the writer starts again after the last write the data holds. The
//! writer's WAL segments and snapshot thresholds are small (`crash_workload::config`),
//! so the run crosses snapshots (kills land before, during and after them) and WAL
//! segments are removed, and each start replays a short log.
//!
//! Guards against acknowledging before the fsync, losing the tail of the log at a
//! crash, a record that replays differently from how it first applied, a snapshot that
//! loses or resurrects a write, and a recovery that cannot open what a crash left
//! behind.
//!
//! The run proves something only if its kills land while writes are being
//! acknowledged: the delay counts from the writer's first acknowledgement (its start,
//! replay included, takes a varying share of any delay counted from its spawn), every
//! writer must have acknowledged a write before it is killed, and nine kills in ten
//! must find it still acknowledging.

use ampd_engine::Db;
use ampd_tests::{crash_workload, open_in_memory, splitmix};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a writer may take to acknowledge its first write (generous: tests run side
/// by side on few cores; a writer that never acknowledges is a failure, not a wait).
const WRITER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The kill comes this long after the writer's first acknowledgement, plus up to
/// [`KILL_DELAY_SPREAD_MS`]: a write takes ~1.5 ms here, so dozens of writes fall in
/// the window and the kill lands at a random point of one.
const KILL_DELAY_MIN_MS: u64 = 20;
const KILL_DELAY_SPREAD_MS: u64 = 120;

fn recovered(dir: &Path) -> Value {
    let db =
        Db::open(crash_workload::config(dir)).unwrap_or_else(|e| panic!("recovery failed: {e}"));
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

/// The files of the shard folders of data directory `dir`, as `shard/file` names.
fn shard_files(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(dir)
        .expect("the data directory")
        .flatten()
    {
        if !shard.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let folder = shard.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(shard.path())
            .expect("a shard folder")
            .flatten()
        {
            files.push(format!("{folder}/{}", f.file_name().to_string_lossy()));
        }
    }
    files
}

/// What the data directory showed over the run, looked at after each kill.
#[derive(Default)]
struct Sightings {
    /// Every snapshot file seen (`shard/snap-S0.snap`): each is a snapshot completed.
    snapshots: BTreeSet<String>,
    /// Every WAL segment seen.
    segments: BTreeSet<String>,
    /// Kills that left a snapshot half written (a `.tmp`).
    kills_mid_snapshot: u64,
    /// The most WAL segments present at once.
    segments_max: usize,
}

impl Sightings {
    fn look(&mut self, dir: &Path) {
        let (mut segments, mut half_written) = (0, false);
        for f in shard_files(dir) {
            if f.ends_with(".snap") {
                self.snapshots.insert(f);
            } else if f.ends_with(".wal") {
                segments += 1;
                self.segments.insert(f);
            } else if f.ends_with(".tmp") {
                half_written = true;
            }
        }
        self.segments_max = self.segments_max.max(segments);
        self.kills_mid_snapshot += u64::from(half_written);
    }
}

/// The writer's stderr, collected on a thread (so a full pipe never stops the writer),
/// for the message of a failure.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn crash_loop(kills: u64, seed: u64) {
    let started = Instant::now();
    let dir = ampd_tests::temp_dir(&format!("crash-{seed}"));
    let model = open_in_memory(2);
    let mut rng = seed;
    // Writes `0..done` are in the data directory and in the model.
    let mut done = 0u64;
    // Kills that found the writer still acknowledging (an ack after the delay began).
    let mut kills_mid_stream = 0;
    // Kills whose recovered state held the write in flight (durable, not acknowledged).
    let mut kills_with_write_in_flight = 0;
    let mut sightings = Sightings::default();
    // Spawn to first acknowledgement, per kill: the writer's start, replay included.
    let mut starts = Vec::with_capacity(kills as usize);
    for kill in 0..kills {
        let spawned = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&dir)
            .arg(done.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the writer starts");
        let stderr = collect(child.stderr.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        // Acks go to the main thread as they come, so it can time the kill from the
        // first one.
        let (ack, acks) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    let n = n.parse::<u64>().expect("ack N");
                    if ack.send(n).is_err() {
                        break;
                    }
                }
            }
        });
        let first = match acks.recv_timeout(WRITER_START_TIMEOUT) {
            Ok(first) => first,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().expect("reaped");
                panic!(
                    "kill {kill} (seed {seed}): the writer acknowledged nothing within \
                     {WRITER_START_TIMEOUT:?} ({e}; {status}); its stderr:\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
        };
        starts.push(spawned.elapsed());
        assert_eq!(
            first, done,
            "kill {kill}: the writer's first write is the one after the data's last"
        );
        let delay = Duration::from_millis(
            KILL_DELAY_MIN_MS + splitmix(&mut rng) % (KILL_DELAY_SPREAD_MS + 1),
        );
        std::thread::sleep(delay);
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "kill {kill} (seed {seed}): the writer ended by itself ({status}); its \
                 stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        reader.join().expect("reader");
        let last = acks.try_iter().last().unwrap_or(first);
        kills_mid_stream += u64::from(last > first);
        let acked_until = last + 1;
        sightings.look(&dir);
        let got = recovered(&dir);
        advance(&model, done, acked_until);
        done = acked_until;
        if got != crash_workload::state(&model) {
            // Only the write in flight at the kill may be there beyond the last ack.
            advance(&model, done, done + 1);
            done += 1;
            kills_with_write_in_flight += 1;
            assert_eq!(
                got,
                crash_workload::state(&model),
                "kill {kill} (seed {seed}): the recovered state is neither the state after \
                 the last acknowledged write ({}) nor after the next",
                done - 2
            );
        }
    }
    let segments_left = shard_files(&dir)
        .iter()
        .filter(|f| f.ends_with(".wal"))
        .count();
    std::fs::remove_dir_all(&dir).expect("cleanup");
    let segments_removed = sightings.segments.len() - segments_left;
    let tenth = starts.len().div_ceil(10);
    let mean = |d: &[Duration]| d.iter().sum::<Duration>() / d.len().max(1) as u32;
    eprintln!(
        "{kills} kills in {:.0?}: {kills_mid_stream} while the writer was acknowledging, \
         {kills_with_write_in_flight} with the write in flight recovered, {} during a \
         snapshot; {done} writes in all; {} snapshots and {} WAL segments seen, {} segments \
         removed, at most {} at once; writer start to first ack: mean {:.1?} over the first \
         tenth of the kills, {:.1?} over the last, longest {:.1?}",
        started.elapsed(),
        sightings.kills_mid_snapshot,
        sightings.snapshots.len(),
        sightings.segments.len(),
        segments_removed,
        sightings.segments_max,
        mean(&starts[..tenth]),
        mean(&starts[starts.len() - tenth..]),
        starts.iter().max().copied().unwrap_or_default(),
    );
    // The kills must land while writes are being acknowledged, or the run proves
    // nothing: a kill after the writer stopped acknowledging (stalled, or done) tests
    // only a clean state.
    assert!(
        kills_mid_stream * 10 >= kills * 9,
        "only {kills_mid_stream} of {kills} kills came while the writer was acknowledging \
         writes"
    );
    // And the run must have crossed snapshots and had segments removed, or it tested
    // only the replay of one growing log.
    assert!(
        sightings.snapshots.len() as u64 * 10 >= kills,
        "only {} snapshots in {kills} kills",
        sightings.snapshots.len()
    );
    assert!(
        segments_removed > 0,
        "no WAL segment was removed in {kills} kills"
    );
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
