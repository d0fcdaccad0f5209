//! Support for ampd's integration tests.
//!
//! The conformance suite is written once against [`Api`], a small async trait whose
//! methods return each call's result as the API shows it (the JSON of SPEC.md: a value,
//! `null`, `{"items": [...], "lastKey": ...}`, `true`/`false`, an array). Any way into
//! ampd that implements it runs the same cases unchanged.
//!
//! # Layout
//! - [`Api`], and [`Embedded`]: the embedded engine as an `Api`.
//! - [`conformance`]: the cases, `pub async fn case(api: &impl Api)`;
//!   [`conformance_suite!`] stamps out one `#[test]` per case for a backend.
//! - [`remote`]: [`remote::Remote`], a server over the network (the Rust client) as an
//!   `Api`.
//! - [`server_process`]: [`server_process::ServerProcess`], an `ampd serve` child
//!   process for tests of the root package (which alone know the binary's path).
//! - [`crash_workload`]: the write sequence of the crash-loop test and its writer.

pub mod conformance;
pub mod crash_workload;
pub mod remote;
pub mod server_process;

// The suite's tests build their runtime through this, so a crate that invokes
// `conformance_suite!` needs no tokio of its own.
#[doc(hidden)]
pub use tokio;

use ampd_engine::{BatchItem, Config, Db, Error, QueryOptions, SetOptions, Value};
use serde_json::{json, Number};

/// The data API as its users call it, with results as JSON.
#[expect(
    async_fn_in_trait,
    reason = "the tests' own trait: its futures need no Send bound"
)]
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

/// Runs `future` to completion on a fresh single-threaded tokio runtime (the tests'
/// clients are async; the tests themselves are not).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A fresh, empty folder for one test's data, unique to this process, removed when
/// the test is done with it (dropped): a data folder holds preallocated WAL segments
/// of 64 MiB, so folders left behind fill a disk within a few test runs.
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("ampd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempDir(dir)
}

/// See [`temp_dir`]; reads as its path.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::PathBuf;

    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The WAL segment under any shard folder of data directory `dir` that holds the most
/// records (the longest [`log_len`]), for tests that damage one.
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
            if !f.file_name().to_string_lossy().ends_with(".wal") {
                continue;
            }
            let len = std::fs::read(f.path()).map_or(0, |bytes| log_len(&bytes));
            if len > best.0 {
                best = (len, f.path());
            }
        }
    }
    best.1
}

/// Where the records of a WAL segment's bytes end: a segment is preallocated, zeros
/// after its last record, so this is just after its last non-zero byte (which may be a
/// few bytes before the last record's end, when that ends in zeros; a cut's count of
/// bytes says the same).
pub fn log_len(segment: &[u8]) -> usize {
    segment
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1)
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
    let entries = items.iter().map(|i| i.to_entry_json(meta)).collect();
    ampd_wire::page::to_json(entries, None)
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
/// `conformance_suite!(open_expr)`, where `open_expr` makes a fresh, empty backend
/// implementing [`Api`]. Each test builds a current-thread tokio runtime and evaluates
/// `open_expr` inside it, so the expression may `.await` (a remote backend connects
/// there, and its client's tasks live on that runtime); then it runs the case.
///
/// This is the one list of the cases: a case added to [`conformance`] must be added
/// here, in the order of that file. Every case is portable, i.e. uses nothing but
/// [`Api`]; checks of one backend's own helpers (the embedded `Db::next_page`) live
/// beside that backend's suite instead.
#[macro_export]
macro_rules! conformance_suite {
    ($open:expr $(,)?) => {
        $crate::conformance_suite!(@cases $open;
            keys_are_trimmed,
            keys_are_case_sensitive_and_may_hold_spaces,
            key_length_limit_counts_bytes,
            set_refuses_unaddressable_keys,
            odd_but_addressable_keys_are_reachable,
            namespace_ends_at_first_colon,
            seed_value_types_round_trip,
            integers_and_floats_stay_distinct,
            null_is_a_stored_value,
            meta_shape_seed_example,
            created_kept_on_update_reset_on_overwrite,
            update_merges_objects_shallowly,
            update_replaces_non_objects,
            update_keeps_labels_and_ttl,
            overwrite_drops_labels_and_ttl,
            dollar_add_seed_example,
            dollar_add_floats_and_missing_fields,
            dollar_add_not_a_number,
            dollar_add_overflow,
            batch_set_seed_example,
            batch_set_order_and_meta,
            batch_set_limit_25,
            batch_set_requires_overwrite,
            batch_set_one_bad_item_writes_nothing,
            batch_set_overwrites_whole_items,
            add_seed_counters,
            add_field_seed_example,
            add_integer_stays_integer_float_makes_float,
            add_overflow_at_i64_bounds,
            add_not_a_number,
            add_meta_keeps_labels_and_ttl,
            concurrent_adds_lose_nothing,
            get_exact_and_absent,
            get_many_seed_example,
            get_many_limits_and_exact_keys,
            star_covers_simple_keys_only,
            comparisons_seed_user123,
            between_is_inclusive,
            order_is_bytewise,
            limit_default_and_range,
            limit_1000_returns_1000,
            reverse_order,
            start_is_exclusive,
            start_without_the_namespace_is_a_key_within_it,
            last_key_exactly_when_more_remain,
            paging_neither_skips_nor_repeats,
            paging_with_writes_between_pages,
            page_stops_before_one_mib,
            malformed_patterns_are_invalid_query,
            labels_seed_order_example,
            labels_seed_namespaced_value,
            label_value_forms,
            label_order_is_value_then_key,
            label_paging_with_cursor,
            label_changes_update_index_immediately,
            label_invalid_name,
            label_values_follow_key_rules,
            label_page_stops_before_one_mib,
            ttl_relative_and_absolute_integers,
            ttl_iso_dates,
            ttl_null_clears,
            ttl_invalid,
            ttl_expiry_hides_item,
            item_size_cap,
            remove_single,
            remove_many_seed_example,
            remove_drops_label_entries,
            remove_limits_and_exact_keys,
            refused_requests_change_nothing,
        );
    };
    (@cases $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::block_on(async {
                    let api = $open;
                    $crate::conformance::$case(&api).await
                });
            }
        )*
    };
}
