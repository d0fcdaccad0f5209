//! The workload of the crash-loop test: write `n` is a pure function of `n`, and covers
//! every item shape the WAL must carry — overwrites with labels, merges, `$add`,
//! counters, absolute ttls, removes and batches — so a recovered state can be compared
//! with an in-memory engine that ran writes `0..=n` (the reference model: this test
//! checks durability, `model_ops.rs` checks the write rules against a `BTreeMap`).
//! [`config`] is the engine's configuration for the writer and for the recovery.

use ampd_engine::{BatchItem, Config, Db, Error, FsyncPolicy, QueryOptions, SetOptions, Value};
use serde_json::{json, Number};
use std::path::Path;
use std::time::Duration;

/// The WAL segment size of the crash loop: a few dozen writes, so segments fill and
/// close within one life of the writer, and snapshots have whole segments to remove.
pub const WAL_SEGMENT_BYTES: u64 = 4 << 10;
/// The snapshot threshold of the crash loop: ~40 writes (~200 bytes each) of the busier
/// shard. It counts only what the writer appended since it opened the data, and a life
/// of the writer is ~20-140 ms of writes (~10-100 of them at ~700 a second here), so a
/// larger one (the default is 256 MiB) is never reached and the log only grows: each
/// start replays all of it, and no kill lands near a snapshot.
pub const SNAPSHOT_WAL_BYTES: u64 = 8 << 10;
/// A shard that has written anything snapshots this long after the writer's start, so
/// the quieter shard (which may not write `SNAPSHOT_WAL_BYTES` in a life) snapshots too.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(60);

/// The engine's configuration over data directory `dir`: 2 shards, `fsync always`, and
/// the small WAL segments and snapshot thresholds above, so a crash-loop run crosses
/// snapshots (and kills land before, during and after them) and removes segments.
pub fn config(dir: &Path) -> Config {
    Config {
        shards: 2,
        pin: false,
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        snapshot_wal_bytes: SNAPSHOT_WAL_BYTES,
        snapshot_interval: SNAPSHOT_INTERVAL,
        wal_segment_bytes: WAL_SEGMENT_BYTES,
        ..Config::default()
    }
}

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

/// Keys of the cache-tier workload ([`cache_write`]).
pub const CACHE_KEYS: u64 = 200;

/// [`config`] with a cache tier: `s3fifo` and a budget of about 40 of
/// [`cache_write`]'s items, so most of its keys are evicted again and again.
pub fn cache_config(dir: &Path) -> Config {
    let item = ampd_engine::evict::cost_of("e:100", &json!({"n": 100_000}));
    Config {
        max_memory: Some(40 * item),
        eviction: ampd_engine::Eviction::S3Fifo,
        ..config(dir)
    }
}

/// Write `n` of the cache-tier workload: key `e:{n % CACHE_KEYS}` overwritten with
/// `{"n": n}`, so a key's value names the write that made it.
pub async fn cache_write(db: &Db, n: u64) -> Result<(), Error> {
    let key = format!("e:{}", n % CACHE_KEYS);
    db.set(&key, json!({"n": n}), &SetOptions::default().overwrite())
        .await
        .map(drop)
}

/// The cache-tier workload's items: key to the write that made its value.
pub fn cache_state(db: &Db) -> std::collections::BTreeMap<String, u64> {
    let options = QueryOptions {
        limit: Some(1000),
        ..Default::default()
    };
    let page = db.get("e:*", &options).expect("query").to_json(false);
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let key = i["key"].as_str().unwrap_or_default().to_owned();
            (key, i["value"]["n"].as_u64().unwrap_or(u64::MAX))
        })
        .collect()
}
