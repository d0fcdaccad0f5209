//! Snapshots taken while writes go on recover exactly: automatic ones (every few KiB of
//! WAL) and explicit ones (`Db::snapshot`) while another thread keeps writing; after a
//! reopen the state is the acknowledged state, and the WAL segments the snapshots cover
//! are gone. Guards against a fuzzy snapshot that loses a write made during its walk,
//! replays from the wrong sequence number, or drops a segment it does not cover.

use ampd_engine::{Config, Db, FsyncPolicy, QueryOptions, SetOptions};
use ampd_tests::temp_dir;
use serde_json::{json, Number, Value};
use std::path::Path;

fn open(dir: &Path) -> Db {
    Db::open(Config {
        shards: 2,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        snapshot_wal_bytes: 32 << 10,
        wal_segment_bytes: 8 << 10,
        ..Config::default()
    })
    .expect("the engine opens")
}

/// Files in the shard folders under `dir` whose names end with `suffix`.
fn shard_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|shard| {
            std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|f| f.file_name().to_string_lossy().ends_with(suffix))
        .count()
}

fn snapshot_files(dir: &Path) -> usize {
    shard_files(dir, ".snap")
}

fn state(db: &Db) -> Value {
    let all = |pattern: &str| {
        let mut out = Vec::new();
        let options = QueryOptions {
            meta: true,
            limit: Some(1000),
            ..Default::default()
        };
        let mut page = match db.get(pattern, &options).expect("query") {
            ampd_engine::Got::Page(p) => p,
            ampd_engine::Got::Item(_) => unreachable!("a prefix gives a page"),
        };
        loop {
            out.extend(page.items.iter().map(|i| i.to_meta_json()));
            match db.next_page(&page).expect("next page") {
                Some(p) => page = p,
                None => break,
            }
        }
        out
    };
    json!({"a": all("a:*"), "b": all("b:*"), "simple": all("*")})
}

fn wal_segments(dir: &Path) -> usize {
    shard_files(dir, ".wal")
}

#[test]
fn automatic_and_explicit_snapshots_under_writes_recover_exactly() {
    let dir = temp_dir("snapshots");
    let before = {
        let db = open(&dir);
        std::thread::scope(|s| {
            // A writer thread: updates, counters, labels and removes over a small key
            // space, so snapshots meet keys that change during their walk.
            s.spawn(|| {
                futures::executor::block_on(async {
                    for i in 0..3000u64 {
                        let ns = if i % 2 == 0 { "a" } else { "b" };
                        let key = format!("{ns}:{:03}", i % 300);
                        let options = SetOptions::default().label(1, format!("l{}", i % 7));
                        db.set(&key, json!({"i": i, "pad": "x".repeat(40)}), &options)
                            .await
                            .unwrap();
                        db.add(&format!("c{}", i % 5), None, Number::from(1))
                            .await
                            .unwrap();
                        if i % 11 == 0 {
                            db.remove(&format!("a:{:03}", (i * 7) % 300)).await.unwrap();
                        }
                    }
                })
            });
            // Explicit snapshots while the writer runs.
            for _ in 0..5 {
                futures::executor::block_on(db.snapshot()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        state(&db)
    };
    // Segments the snapshots cover are gone: far fewer than were written.
    let segments = wal_segments(&dir);
    assert!(segments <= 10, "{segments} WAL segments left");
    let snapshots = snapshot_files(&dir);
    assert!(
        (1..=2).contains(&snapshots),
        "{snapshots} snapshots (one per shard at most)"
    );

    let db = open(&dir);
    assert_eq!(state(&db), before);
    // The counters are exact: 3000 adds over 5 keys.
    for c in 0..5 {
        assert_eq!(
            db.get_one(&format!("c{c}")).unwrap().unwrap().value(),
            json!(600)
        );
    }
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shard_being_written_snapshots_itself_on_time() {
    let dir = temp_dir("snapshot-interval");
    let db = Db::open(Config {
        shards: 1,
        pin: false,
        data_dir: Some(dir.clone()),
        snapshot_wal_bytes: u64::MAX,
        snapshot_interval: std::time::Duration::from_millis(50),
        ..Config::default()
    })
    .unwrap();
    assert_eq!(snapshot_files(&dir), 0);
    let started = std::time::Instant::now();
    futures::executor::block_on(async {
        let mut i = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(400) {
            db.set(&format!("t:{}", i % 50), json!(i), &SetOptions::default())
                .await
                .unwrap();
            i += 1;
        }
    });
    // Snapshots were taken on time, and each removed the one before it: at most the
    // newest and the one a running snapshot is about to replace are left.
    let kept = snapshot_files(&dir);
    assert!(
        (1..=2).contains(&kept),
        "{kept} snapshots kept: one or two expected"
    );
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_in_memory_engine_refuses_to_snapshot() {
    let db = ampd_tests::open_in_memory(1);
    let e = futures::executor::block_on(db.snapshot()).unwrap_err();
    assert!(e.message().contains("in-memory"), "{e}");
}
