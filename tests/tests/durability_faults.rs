//! Disk faults through the whole engine: for every N, the Nth I/O operation of a
//! shard's disk (write, sync, create, rename, remove, directory sync) fails — once or for
//! good, with EIO or ENOSPC — while a workload runs; then the power is cut (keeping a
//! torn prefix of the last write) and the engine is opened again on the same disks.
//!
//! It found a segment whose removal failed after a snapshot being left before a gap,
//! which made the next recovery fail; recovery now skips and removes covered segments.
//!
//! Guards against acknowledging a write whose I/O failed (it would be lost by the power
//! cut: fsyncgate is simulated, so a retried fsync persists nothing), against losing an
//! acknowledged write, and against a recovery that cannot open what a failure left.

use ampd_engine::storage::{Fault, FaultKind, SimDisk};
use ampd_engine::{Config, Db, FsyncPolicy, SetOptions};
use ampd_tests::splitmix;
use serde_json::json;
use std::path::{Path, PathBuf};

const SHARDS: usize = 2;
const WRITES: u64 = 40;

fn open(dir: &Path, disks: &[SimDisk]) -> Result<Db, ampd_engine::OpenError> {
    Db::open(Config {
        shards: SHARDS,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        // Small, so segment rotation and snapshots (create, rename, remove) happen.
        snapshot_wal_bytes: 2 << 10,
        wal_segment_bytes: 1 << 10,
        simulated_disks: Some(disks.to_vec()),
        ..Config::default()
    })
}

fn run(dir: &PathBuf, fault: Fault, seed: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let disks: Vec<SimDisk> = (0..SHARDS).map(|_| SimDisk::new()).collect();
    let mut acked: Vec<(String, u64)> = Vec::new();
    if let Ok(db) = open(dir, &disks) {
        for d in &disks {
            d.plan_fault(fault);
        }
        futures::executor::block_on(async {
            for i in 0..WRITES {
                let key = format!("n{}:k{i}", i % 3);
                if db.set(&key, json!(i), &SetOptions::default()).await.is_ok() {
                    acked.push((key, i));
                }
            }
        });
    }
    let mut rng = seed;
    for d in &disks {
        let tear = splitmix(&mut rng);
        d.power_cut(|len| tear as usize % (len + 1));
    }
    let db = open(dir, &disks)
        .unwrap_or_else(|e| panic!("{fault:?}: recovery after the power cut failed: {e}"));
    for (key, value) in &acked {
        let got = db.get_one(key).unwrap().map(|i| i.value());
        assert_eq!(
            got,
            Some(json!(value)),
            "{fault:?} seed {seed}: acknowledged {key} lost"
        );
    }
}

#[test]
fn no_failed_write_is_acknowledged_and_no_acknowledged_write_is_lost() {
    let dir = ampd_tests::temp_dir("faults");
    let mut seed = 0;
    for at in 0..120 {
        for kind in [FaultKind::Io, FaultKind::NoSpace] {
            for persistent in [false, true] {
                seed += 1;
                run(
                    &dir,
                    Fault {
                        at,
                        kind,
                        persistent,
                    },
                    seed,
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
