//! The workload of the crash-loop test: write `n` is a pure function of `n`, and covers
//! every item shape the WAL must carry — overwrites with labels, merges, `$add`,
//! counters, absolute ttls, removes and batches — so a recovered state can be compared
//! with an in-memory engine that ran writes `0..=n` (the reference model: this test
//! checks durability, `model_ops.rs` checks the write rules against a `BTreeMap`).

use ampd_engine::{BatchItem, Db, Error, QueryOptions, SetOptions, Value};
use serde_json::{json, Number};

/// Keys per namespace: small, so writes keep landing on the same items.
const KEYS: u64 = 16;
/// 2100-01-01T00:00:00Z: ttls are absolute so that every run computes the same item.
const TTL_BASE: u64 = 4_102_444_800;

/// Applies write `n`.
pub async fn write(db: &Db, n: u64) -> Result<(), Error> {
    let k = n / 8 % KEYS;
    let key = format!("w:{k}");
    match n % 8 {
        0 => db
            .set(
                &key,
                json!({"n": n, "tag": format!("t{}", n % 5)}),
                &SetOptions::default()
                    .overwrite()
                    .label(1, format!("g:{}", n % 3)),
            )
            .await
            .map(drop),
        1 => db
            .set(&key, json!({"merged": n}), &SetOptions::default())
            .await
            .map(drop),
        2 => db
            .set(&key, json!({"c": {"$add": 1}}), &SetOptions::default())
            .await
            .map(drop),
        3 => db
            .add(&format!("c:{k}"), None, Number::from(2))
            .await
            .map(drop),
        4 => db
            .set(
                &format!("t:{k}"),
                json!(n),
                &SetOptions::default()
                    .ttl(TTL_BASE + n)
                    .label(2, format!("h:{}", n % 4)),
            )
            .await
            .map(drop),
        5 => db.remove(&format!("w:{}", (k + 3) % KEYS)).await.map(drop),
        6 => {
            let items = (0..3)
                .map(|i| BatchItem {
                    key: format!("b:{}", (k + i) % KEYS),
                    value: json!([n, i, "batch", 0.5]),
                    ttl: None,
                    labels: Default::default(),
                })
                .collect();
            db.set_batch(items, true).await.map(drop)
        }
        _ => db
            .add(&format!("f:{k}"), Some("hits"), Number::from(1))
            .await
            .map(drop),
    }
}

/// Every item the workload can make, with its metadata but without `created` and
/// `modified` (which depend on when a write ran), plus both label indexes.
pub fn state(db: &Db) -> Value {
    let page = |pattern: &str, label: Option<&str>| {
        let options = QueryOptions {
            meta: true,
            limit: Some(1000),
            label: label.map(str::to_owned),
            ..Default::default()
        };
        let mut page = db.get(pattern, &options).expect("query").to_json(true);
        for item in page["items"].as_array_mut().into_iter().flatten() {
            if let Some(item) = item.as_object_mut() {
                item.remove("created");
                item.remove("modified");
            }
        }
        page
    };
    json!({
        "w": page("w:*", None),
        "c": page("c:*", None),
        "t": page("t:*", None),
        "b": page("b:*", None),
        "f": page("f:*", None),
        "label1": page("g:*", Some("label1")),
        "label2": page("h:*", Some("label2")),
    })
}
