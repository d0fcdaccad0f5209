//! The reaper: expired items leave memory within about a second of their expiry
//! (SPEC.md "Expired items are never returned"; the issue: "a reaper removes them within
//! a second, in slices"), more than one slice of them (256) at a time, and an item
//! whose ttl was extended or cleared is not reaped at its old expiry.

use ampd_engine::{Db, QueryOptions, SetOptions, Value};
use serde_json::json;
use std::time::{Duration, Instant};

fn open() -> Db {
    ampd_tests::open_in_memory(2)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Polls `f` until it is true or `limit` passes; returns whether it became true.
fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn expired_items_leave_memory_in_slices_and_extended_ones_stay() {
    let db = open();
    // Expire at the start of the next second but one, so every item shares one expiry.
    let at = now_s() + 2;
    futures::executor::block_on(async {
        for i in 0..600 {
            let options = SetOptions::default().ttl(at);
            db.set(&format!("tmp:{i:04}"), json!(i), &options)
                .await
                .expect("set");
        }
        // Extended, cleared, and overwritten without ttl: none of these may be reaped.
        db.set(
            "tmp:0000",
            json!("kept"),
            &SetOptions::default().ttl(at + 60),
        )
        .await
        .expect("extend");
        db.set(
            "tmp:0001",
            json!("kept"),
            &SetOptions::default().ttl(Value::Null),
        )
        .await
        .expect("clear");
        db.set(
            "tmp:0002",
            json!("kept"),
            &SetOptions::default().overwrite(),
        )
        .await
        .expect("overwrite");
    });
    assert_eq!(db.stored_item_count(), 600);
    let page = |limit| {
        db.get(
            "tmp:*",
            &QueryOptions {
                limit: Some(limit),
                ..Default::default()
            },
        )
        .expect("query")
        .to_json(false)
    };
    // Reads hide items from their expiry second on; the reaper follows within ~1 s.
    assert!(
        eventually(Duration::from_secs(4), || page(1000)["items"]
            .as_array()
            .is_some_and(|a| a.len() == 3)),
        "reads still show expired items: {}",
        page(5)
    );
    assert!(
        eventually(Duration::from_millis(1500), || db.stored_item_count() == 3),
        "{} items still stored",
        db.stored_item_count()
    );
    assert_eq!(
        page(10),
        json!({"items": [
            {"key": "tmp:0000", "value": "kept"},
            {"key": "tmp:0001", "value": "kept"},
            {"key": "tmp:0002", "value": "kept"},
        ]})
    );
}
