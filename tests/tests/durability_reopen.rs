//! Durability through the engine: with a data directory, every acknowledged write —
//! every item shape, merges, `$add`, counters, labels, ttls, removes, batches — is back
//! after the engine is closed and opened again, on the same shards, with the same
//! answers to every query. Also: one data directory is never opened twice, and never
//! with another shard count (routing would put items on the wrong shard's log).

use ampd_engine::{
    BatchItem, Config, Cut, CutReason, Db, FsyncPolicy, OpenError, QueryOptions, SetOptions,
};
use ampd_tests::temp_dir;
use serde_json::{json, Number, Value};
use std::path::{Path, PathBuf};

fn open(dir: &Path, shards: usize, fsync: FsyncPolicy) -> Result<Db, OpenError> {
    Db::open(Config {
        shards,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync,
        ..Config::default()
    })
}

/// Everything the API can show: all simple keys, every namespace used, label queries,
/// with metadata.
fn everything(db: &Db) -> Value {
    let all = |pattern: &str, label: Option<&str>| {
        let options = QueryOptions {
            meta: true,
            limit: Some(1000),
            label: label.map(str::to_owned),
            ..Default::default()
        };
        db.get(pattern, &options).expect("query").to_json(true)
    };
    json!({
        "simple": all("*", None),
        "users": all("users:*", None),
        "orders": all("orders:*", None),
        "stats": all("stats:*", None),
        "label1": all("*", Some("label1")),
        "label2": all("g:*", Some("label2")),
    })
}

async fn workload(db: &Db) {
    let plain = SetOptions::default();
    db.set("s", json!("text"), &plain).await.unwrap();
    db.set("n", json!(-17), &plain).await.unwrap();
    db.set("f", json!(2.5), &plain).await.unwrap();
    db.set("b", json!(true), &plain).await.unwrap();
    db.set("nul", Value::Null, &plain).await.unwrap();
    db.set("arr", json!([1, "two", [3.0], {"four": 4}]), &plain)
        .await
        .unwrap();
    db.set(
        "users:ann",
        json!({"name": "Ann", "age": 30}),
        &SetOptions::default().label(1, "team-a"),
    )
    .await
    .unwrap();
    db.set(
        "users:ann",
        json!({"age": 31, "visits": {"$add": 2}}),
        &plain,
    )
    .await
    .unwrap();
    db.set(
        "users:bob",
        json!({"name": "Bob"}),
        &SetOptions::default()
            .label(1, "team-b")
            .label(2, "g:x")
            .ttl(3600),
    )
    .await
    .unwrap();
    db.set(
        "users:cid",
        json!({"name": "Cid"}),
        &SetOptions::default().label(1, "team-a"),
    )
    .await
    .unwrap();
    db.set(
        "users:cid",
        json!("replaced"),
        &SetOptions::default().overwrite(),
    )
    .await
    .unwrap();
    db.add("stats:hits", None, Number::from(5)).await.unwrap();
    db.add("stats:hits", None, Number::from(-2)).await.unwrap();
    db.add("stats:page", Some("views"), Number::from_f64(0.5).unwrap())
        .await
        .unwrap();
    let batch = (0..25)
        .map(|i| BatchItem {
            key: format!("orders:{i:03}"),
            value: json!({"n": i}),
            labels: [Some(format!("o-{}", i % 3)), None, None, None, None],
            ..Default::default()
        })
        .collect();
    db.set_batch(batch, true).await.unwrap();
    db.remove_many(&["orders:003", "orders:004", "nope"])
        .await
        .unwrap();
    db.remove("f").await.unwrap();
    db.set(
        "users:ann",
        json!({"age": 32}),
        &SetOptions::default().label(1, "team-c"),
    )
    .await
    .unwrap();
}

#[test]
fn every_write_survives_close_and_reopen() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::Interval(std::time::Duration::from_millis(20)),
    ] {
        for shards in [1, 3] {
            let dir = temp_dir(&format!("reopen-{shards}"));
            let before = {
                let db = open(&dir, shards, fsync).unwrap();
                futures::executor::block_on(workload(&db));
                everything(&db)
            };
            let db = open(&dir, shards, fsync).unwrap();
            assert_eq!(everything(&db), before, "{fsync:?}, {shards} shards");
            // And it keeps going: more writes, another reopen.
            futures::executor::block_on(db.add("stats:hits", None, Number::from(10))).unwrap();
            drop(db);
            let db = open(&dir, shards, fsync).unwrap();
            assert_eq!(
                db.get_one("stats:hits").unwrap().unwrap().value(),
                json!(13)
            );
            drop(db);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn a_data_directory_is_opened_once_and_with_its_own_shard_count() {
    let dir = temp_dir("lock");
    let db = open(&dir, 2, FsyncPolicy::Always).unwrap();
    match open(&dir, 2, FsyncPolicy::Always) {
        Err(OpenError::Locked { dir: locked }) => assert_eq!(locked, *dir),
        other => panic!("a second open: {other:?}"),
    }
    drop(db);
    match open(&dir, 3, FsyncPolicy::Always) {
        Err(OpenError::ShardCount {
            dir: at,
            recorded: 2,
            asked: 3,
        }) => assert_eq!(at, *dir),
        other => panic!("another shard count: {other:?}"),
    }
    assert!(open(&dir, 2, FsyncPolicy::Always).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_relative_data_directory_works() {
    // Integration tests run in the package folder: this lands in the workspace target.
    let rel = PathBuf::from(format!("../target/ampd-relative-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&rel);
    {
        let db = open(&rel, 2, FsyncPolicy::Always).unwrap();
        futures::executor::block_on(db.set("k", json!(1), &SetOptions::default())).unwrap();
    }
    let db = open(&rel, 2, FsyncPolicy::Always).unwrap();
    assert_eq!(db.get_one("k").unwrap().unwrap().value(), json!(1));
    drop(db);
    std::fs::remove_dir_all(&rel).unwrap();
}

/// The largest WAL segment under `dir` (the one holding the writes).
#[test]
fn corruption_in_the_middle_refuses_to_open_until_repaired() {
    let dir = temp_dir("repair");
    {
        let db = open(&dir, 2, FsyncPolicy::Always).unwrap();
        futures::executor::block_on(async {
            for i in 0..200 {
                db.set(&format!("w:{i:03}"), json!(i), &SetOptions::default())
                    .await
                    .unwrap();
            }
        });
    }
    let segment = ampd_tests::busiest_segment(&dir);
    let mut bytes = std::fs::read(&segment).unwrap();
    // The middle of its records (zeros, free space, follow them).
    let log_len = ampd_tests::log_len(&bytes);
    let middle = log_len / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    // The refusal names the damaged segment and the record in it that holds the
    // flipped byte.
    let (offset, reason) = match open(&dir, 2, FsyncPolicy::Always) {
        Err(OpenError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, std::fs::canonicalize(&segment).unwrap());
            (offset, reason)
        }
        other => panic!("a damaged log: {other:?}"),
    };
    assert!(
        offset > 40 && offset <= middle as u64,
        "offset {offset}, damage at {middle}"
    );
    // Nothing was changed by the refusal: it is refused again.
    assert!(matches!(
        open(&dir, 2, FsyncPolicy::Always),
        Err(OpenError::Corrupt { .. })
    ));

    // The repair cuts exactly there, and says so.
    let cuts = Db::repair(&dir).unwrap();
    assert_eq!(
        cuts,
        [Cut {
            file: segment.clone(),
            offset,
            bytes: log_len as u64 - offset,
            reason: CutReason::Damaged(reason),
        }]
    );
    assert!(
        Db::repair(&dir).unwrap().is_empty(),
        "a second repair finds nothing"
    );

    let db = open(&dir, 2, FsyncPolicy::Always).unwrap();
    let page = db
        .get(
            "w:*",
            &QueryOptions {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .unwrap()
        .to_json(false);
    let items = page["items"].as_array().unwrap();
    // Everything before the damaged record, in order, and nothing after it.
    assert!(
        !items.is_empty() && items.len() < 200,
        "{} items",
        items.len()
    );
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["key"], json!(format!("w:{i:03}")));
        assert_eq!(item["value"], json!(i));
    }
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}
