//! Each named durability step (`ampd_engine::failpoint`) failed on purpose, through the
//! whole engine: before a WAL write, between write and fsync, between fsync and the
//! acknowledgement, at segment rotation and deletion, and at a snapshot's temp file,
//! rename and directory sync. Then the power is cut and the engine opened again.
//!
//! Guards against a step whose failure is acknowledged anyway, against a WAL that goes
//! on after a failed step (memory and disk would part ways), against a failed snapshot
//! that stops the shard or loses data, and against a failure that leaves something a
//! later recovery cannot open. Fail points are process-wide, so the scenarios run one
//! after another in this file's single test.

use ampd_engine::storage::SimDisk;
use ampd_engine::{failpoint, Config, Db, ErrorCode, FsyncPolicy, SetOptions};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn open(dir: &Path, disk: &SimDisk) -> Db {
    Db::open(Config {
        shards: 1,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        // Rotation every few records; snapshots only when asked.
        wal_segment_bytes: 512,
        snapshot_wal_bytes: u64::MAX,
        snapshot_interval: Duration::from_secs(3600),
        simulated_disks: Some(vec![disk.clone()]),
        ..Config::default()
    })
    .unwrap_or_else(|e| panic!("open: {e}"))
}

fn set(db: &Db, key: &str, value: u64) -> Result<(), ampd_engine::Error> {
    futures::executor::block_on(db.set(key, json!(value), &SetOptions::default())).map(|_| ())
}

/// What became of the writes made while the point was armed.
#[derive(Debug, PartialEq)]
enum Expect {
    /// The WAL stops: the failed write and every later one are refused; what a failed
    /// write left on disk is absent (`false`) or present (`true`) after a power cut.
    WalStops { failed_write_survives: bool },
    /// Only the snapshot fails; writes go on and the next snapshot succeeds.
    SnapshotFails,
}

fn scenario(dir: &Path, point: &'static str, expect: Expect) {
    let _ = std::fs::remove_dir_all(dir);
    let disk = SimDisk::new();
    let db = open(dir, &disk);
    let mut acked = Vec::new();
    for i in 0..10 {
        set(&db, &format!("before{i}"), i).unwrap();
        acked.push((format!("before{i}"), i));
    }
    futures::executor::block_on(db.snapshot()).unwrap();
    for i in 10..20 {
        set(&db, &format!("before{i}"), i).unwrap();
        acked.push((format!("before{i}"), i));
    }

    fail::cfg(point, "return").unwrap();
    let mut first_failed = None;
    for i in 0..20 {
        let key = format!("armed{i}");
        match set(&db, &key, i) {
            Ok(()) => acked.push((key, i)),
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::Internal, "{point}: {e}");
                if first_failed.is_none() {
                    assert!(
                        e.message().contains(point),
                        "{point}: the first refusal names the failed step: {e}"
                    );
                    first_failed = Some(key);
                }
            }
        }
    }
    let snapshot = futures::executor::block_on(db.snapshot());
    fail::remove(point);

    match expect {
        Expect::WalStops {
            failed_write_survives,
        } => {
            let failed = first_failed.unwrap_or_else(|| panic!("{point} never fired"));
            let later = set(&db, "after", 1).expect_err("a stopped WAL refuses writes");
            assert_eq!(later.code(), ErrorCode::Internal, "{point}: {later}");
            // Reads go on from what is durable; the failed write is not visible.
            assert_eq!(db.get_one("before0").unwrap().unwrap().value(), json!(0));
            assert_eq!(db.get_one(&failed).unwrap(), None, "{point}");
            drop(db);
            // Nothing unsynced survives this cut. A torn half would not do: in a
            // preallocated segment the half of a record that a tear loses may be zeros
            // anyway, and the record is then on disk whole, exactly as written (torn
            // tails have their own tests in wal_recovery.rs).
            disk.power_cut(|_| 0);
            let db = open(dir, &disk);
            let survived = db.get_one(&failed).unwrap().is_some();
            assert_eq!(survived, failed_write_survives, "{point}: {failed}");
            check_acked(&db, &acked, point);
            set(&db, "after_recovery", 1).unwrap();
        }
        Expect::SnapshotFails => {
            assert_eq!(first_failed, None, "{point}: writes go on");
            let e = snapshot.expect_err("the snapshot reports the failed step");
            assert!(e.message().contains(point), "{point}: {e}");
            set(&db, "after", 1).unwrap();
            acked.push(("after".into(), 1));
            futures::executor::block_on(db.snapshot())
                .unwrap_or_else(|e| panic!("{point}: the next snapshot: {e}"));
            drop(db);
            disk.power_cut(|len| len / 2);
            let db = open(dir, &disk);
            check_acked(&db, &acked, point);
        }
    }
}

fn check_acked(db: &Db, acked: &[(String, u64)], point: &str) {
    for (key, value) in acked {
        let got = db.get_one(key).unwrap().map(|i| i.value());
        assert_eq!(got, Some(json!(value)), "{point}: acknowledged {key} lost");
    }
}

#[test]
fn every_durability_step_fails_cleanly() {
    let scenario_lock = fail::FailScenario::setup();
    let dir = ampd_tests::temp_dir("failpoints");
    let stops = |failed_write_survives| Expect::WalStops {
        failed_write_survives,
    };
    let cases = [
        (failpoint::WAL_BEFORE_WRITE, stops(false)),
        // Written but never synced: the power cut takes it.
        (failpoint::WAL_BEFORE_SYNC, stops(false)),
        // Synced but never acknowledged: it may survive, and here it does.
        (failpoint::WAL_BEFORE_ACK, stops(true)),
        (failpoint::WAL_ROTATE, stops(false)),
        (failpoint::WAL_REMOVE_SEGMENT, Expect::SnapshotFails),
        (failpoint::SNAPSHOT_WRITE_TMP, Expect::SnapshotFails),
        (failpoint::SNAPSHOT_RENAME, Expect::SnapshotFails),
        (failpoint::SNAPSHOT_SYNC_DIR, Expect::SnapshotFails),
    ];
    assert_eq!(cases.len(), failpoint::ALL.len(), "every point has a case");
    for (point, expect) in cases {
        scenario(&dir, point, expect);
    }
    scenario_lock.teardown();
    let _ = std::fs::remove_dir_all(&dir);
}
