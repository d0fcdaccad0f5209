//! Support for ampd's integration tests.
//!
//! The conformance suite is written once against [`Api`], a small async trait whose
//! methods return each call's result as the API shows it (the JSON of SPEC.md: a value,
//! `null`, `{"items": [...], "lastKey": ...}`, `true`/`false`, an array). Any way into
//! ampd that can implement it — the embedded engine here, the network client later —
//! runs the same cases unchanged: [`conformance_suite!`] stamps out one `#[test]` per
//! case for a backend.
//!
//! [`crash_workload`] is the write sequence of the crash-loop test and its writer.

pub mod crash_workload;

use ampd_engine::{BatchItem, Config, Db, Error, QueryOptions, SetOptions, Value};
use serde_json::{json, Number};

/// The data API as its users call it, with results as JSON.
#[allow(async_fn_in_trait)]
pub trait Api {
    /// `set(key, value, options)`: the stored value, or the item with `meta`.
    async fn set(&self, key: &str, value: Value, options: SetOptions) -> Result<Value, Error>;
    /// `set([items], {overwrite, meta})`: `{"items": [...]}` in request order.
    async fn set_batch(
        &self,
        items: Vec<BatchItem>,
        overwrite: bool,
        meta: bool,
    ) -> Result<Value, Error>;
    /// `add(key, n)` / `add(key, field, n)`: the updated value, or the item with `meta`.
    async fn add(
        &self,
        key: &str,
        field: Option<&str>,
        amount: Number,
        meta: bool,
    ) -> Result<Value, Error>;
    /// `get(pattern, options)`: a value or `null` for an exact key, else a page.
    async fn get(&self, pattern: &str, options: QueryOptions) -> Result<Value, Error>;
    /// `get([keys])`: `{"items": [...]}` in request order, absent keys left out.
    async fn get_many(&self, keys: &[&str], meta: bool) -> Result<Value, Error>;
    /// `getByLabel(label, pattern, options)`: always a page.
    async fn get_by_label(
        &self,
        label: &str,
        pattern: &str,
        options: QueryOptions,
    ) -> Result<Value, Error>;
    /// `remove(key)`: `true` when an item was removed.
    async fn remove(&self, key: &str) -> Result<Value, Error>;
    /// `remove([keys])`: an array of booleans in request order.
    async fn remove_many(&self, keys: &[&str]) -> Result<Value, Error>;
}

/// The embedded engine as an [`Api`].
pub struct Embedded {
    pub db: Db,
}

impl Embedded {
    /// A fresh in-memory engine with `shards` shards (see [`open_in_memory`]).
    pub fn open(shards: usize) -> Embedded {
        Embedded {
            db: open_in_memory(shards),
        }
    }
}

/// A fresh in-memory engine with `shards` shards, not pinned (tests share cores).
pub fn open_in_memory(shards: usize) -> Db {
    Db::open(Config {
        shards,
        pin: false,
        ..Config::default()
    })
    .expect("engine opens")
}

/// A fresh, empty folder for one test's data, unique to this process.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ampd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The largest file under any shard folder of data directory `dir` (the WAL segment
/// that holds the most records), for tests that damage one.
pub fn busiest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut best = (0, std::path::PathBuf::new());
    for shard in std::fs::read_dir(dir).expect("a data directory").flatten() {
        if !shard.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for f in std::fs::read_dir(shard.path())
            .expect("a shard folder")
            .flatten()
        {
            let len = f.metadata().map_or(0, |m| m.len());
            if len > best.0 {
                best = (len, f.path());
            }
        }
    }
    best.1
}

/// splitmix64: reproducible random choices for seeded tests.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn items_json(items: &[ampd_engine::Item], meta: bool) -> Value {
    json!({"items": items.iter().map(|i| i.to_entry_json(meta)).collect::<Vec<_>>()})
}

impl Api for Embedded {
    async fn set(&self, key: &str, value: Value, options: SetOptions) -> Result<Value, Error> {
        let item = self.db.set(key, value, &options).await?;
        Ok(item.to_result_json(options.meta))
    }

    async fn set_batch(
        &self,
        items: Vec<BatchItem>,
        overwrite: bool,
        meta: bool,
    ) -> Result<Value, Error> {
        let items = self.db.set_batch(items, overwrite).await?;
        Ok(items_json(&items, meta))
    }

    async fn add(
        &self,
        key: &str,
        field: Option<&str>,
        amount: Number,
        meta: bool,
    ) -> Result<Value, Error> {
        let item = self.db.add(key, field, amount).await?;
        Ok(item.to_result_json(meta))
    }

    async fn get(&self, pattern: &str, options: QueryOptions) -> Result<Value, Error> {
        Ok(self.db.get(pattern, &options)?.to_json(options.meta))
    }

    async fn get_many(&self, keys: &[&str], meta: bool) -> Result<Value, Error> {
        Ok(items_json(&self.db.get_many(keys)?, meta))
    }

    async fn get_by_label(
        &self,
        label: &str,
        pattern: &str,
        options: QueryOptions,
    ) -> Result<Value, Error> {
        Ok(self
            .db
            .get_by_label(label, pattern, &options)?
            .to_json(options.meta))
    }

    async fn remove(&self, key: &str) -> Result<Value, Error> {
        Ok(json!(self.db.remove(key).await?))
    }

    async fn remove_many(&self, keys: &[&str]) -> Result<Value, Error> {
        Ok(json!(self.db.remove_many(keys).await?))
    }
}

/// Stamps out one `#[test]` per conformance case for a backend.
///
/// `conformance_suite!(open_expr; case_a, case_b, ...)` where `open_expr` makes a fresh
/// backend implementing [`Api`] and each case is `async fn(&impl Api)`.
#[macro_export]
macro_rules! conformance_suite {
    ($open:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let api = $open;
                rt.block_on(super::$case(&api));
            }
        )*
    };
}
