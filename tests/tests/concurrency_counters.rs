//! Concurrency: many threads writing at once lose nothing.
//!
//! Guards against a counter read-modify-write that is not serialized by the owning
//! shard (two `add`s reading the same old value), against update-merges of one object
//! from several writers dropping each other's fields, and against writes to one
//! namespace from many threads going missing. SPEC.md "add": "Concurrent adds from many
//! clients never lose an increment."

use ampd_engine::{Db, QueryOptions, SetOptions};
use serde_json::{json, Number};

const THREADS: usize = 8;
const ADDS_PER_THREAD: i64 = 10_000;

fn open() -> Db {
    ampd_tests::open_in_memory(2)
}

/// Runs `f(thread_index)` on `THREADS` OS threads at once.
fn on_threads(f: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let f = &f;
            s.spawn(move || f(t));
        }
    });
}

#[test]
fn adds_on_one_key_from_8_threads_sum_exactly() {
    let db = open();
    on_threads(|_| {
        futures::executor::block_on(async {
            for _ in 0..ADDS_PER_THREAD {
                db.add("counters:hits", None, Number::from(1))
                    .await
                    .expect("add");
            }
        })
    });
    let item = db.get_one("counters:hits").expect("get").expect("present");
    assert_eq!(item.value(), json!(THREADS as i64 * ADDS_PER_THREAD));
}

#[test]
fn adds_on_one_nested_field_from_8_threads_sum_exactly() {
    let db = open();
    futures::executor::block_on(db.set("page", json!({"title": "home"}), &SetOptions::default()))
        .expect("set");
    on_threads(|t| {
        futures::executor::block_on(async {
            for i in 0..ADDS_PER_THREAD {
                // Half the threads count down by 1 and up by 3, so order mistakes show.
                let n = if t % 2 == 0 {
                    1
                } else if i % 2 == 0 {
                    -1
                } else {
                    3
                };
                db.add("page", Some("views"), Number::from(n))
                    .await
                    .expect("add");
            }
        })
    });
    let want = (THREADS as i64 / 2) * ADDS_PER_THREAD + (THREADS as i64 / 2) * ADDS_PER_THREAD;
    let item = db.get_one("page").expect("get").expect("present");
    assert_eq!(item.value(), json!({"title": "home", "views": want}));
}

#[test]
fn dollar_add_and_merges_from_8_threads_keep_every_field() {
    let db = open();
    on_threads(|t| {
        futures::executor::block_on(async {
            for i in 0..1_000 {
                let v = json!({ format!("t{t}"): i, "total": {"$add": 1} });
                db.set("stats:all", v, &SetOptions::default())
                    .await
                    .expect("set");
            }
        })
    });
    let mut want = serde_json::Map::new();
    let item = db.get_one("stats:all").expect("get").expect("present");
    let got = item.value();
    for t in 0..THREADS {
        want.insert(format!("t{t}"), json!(999));
    }
    want.insert("total".into(), json!(THREADS * 1_000));
    let got_obj = got.as_object().expect("an object");
    assert_eq!(got_obj.len(), want.len(), "{got}");
    for (k, v) in &want {
        assert_eq!(got_obj.get(k), Some(v), "field {k} of {got}");
    }
}

#[test]
fn writers_to_one_namespace_lose_no_item() {
    let db = open();
    const PER_THREAD: usize = 500;
    on_threads(|t| {
        futures::executor::block_on(async {
            for i in 0..PER_THREAD {
                let key = format!("orders:t{t}-{i:04}");
                db.set(&key, json!(i), &SetOptions::default())
                    .await
                    .expect("set");
            }
        })
    });
    let mut seen = Vec::new();
    let options = QueryOptions {
        limit: Some(1000),
        ..Default::default()
    };
    let mut page = match db.get("orders:*", &options).expect("query") {
        ampd_engine::Got::Page(p) => p,
        ampd_engine::Got::Item(_) => panic!("a prefix query returned one item"),
    };
    loop {
        seen.extend(page.items.iter().map(|i| (i.key().to_owned(), i.value())));
        match db.next_page(&page).expect("next page") {
            Some(p) => page = p,
            None => break,
        }
    }
    assert_eq!(seen.len(), THREADS * PER_THREAD);
    let mut want: Vec<(String, serde_json::Value)> = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| (format!("orders:t{t}-{i:04}"), json!(i))))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, want);
}

/// Tasks started on the shards' own executors: writes to keys of the task's shard are
/// applied in place, writes to another shard's keys hop there; none is lost either way.
#[test]
fn tasks_on_shard_executors_write_in_place_and_across() {
    let db = open();
    // One key owned by each shard.
    let keys: Vec<String> = (0..db.shard_count())
        .map(|s| {
            (0..)
                .map(|i| format!("local{i}:n"))
                .find(|k| db.shard_for(&ampd_engine::Key::parse(k).expect("key")) == s)
                .expect("some key lands on every shard")
        })
        .collect();
    let tasks: Vec<_> = (0..db.shard_count())
        .map(|s| {
            let (db2, keys) = (db.clone(), keys.clone());
            db.spawn_on(s, move || async move {
                for _ in 0..ADDS_PER_THREAD {
                    for k in &keys {
                        db2.add(k, None, Number::from(1)).await.expect("add");
                    }
                }
                ADDS_PER_THREAD
            })
        })
        .collect();
    let done: Vec<i64> = futures::executor::block_on(futures::future::join_all(tasks))
        .into_iter()
        .map(|r| r.expect("task finishes"))
        .collect();
    assert_eq!(done, vec![ADDS_PER_THREAD; db.shard_count()]);
    for k in &keys {
        let item = db.get_one(k).expect("get").expect("present");
        assert_eq!(
            item.value(),
            json!(ADDS_PER_THREAD * db.shard_count() as i64),
            "{k}"
        );
    }
}

/// A task that panics on a shard's executor is reported to its caller as an error, and
/// the shard goes on serving writes (a dead executor would leave every later write to
/// its keys waiting forever).
#[test]
fn a_panicking_shard_task_leaves_the_shard_serving() {
    let db = open();
    for s in 0..db.shard_count() {
        let failed = futures::executor::block_on(db.spawn_on(s, || async {
            panic!("a task that fails on purpose");
        }));
        assert_eq!(
            failed.expect_err("the panic is reported").code(),
            ampd_engine::ErrorCode::Internal
        );
    }
    futures::executor::block_on(async {
        for i in 0..100 {
            db.set(&format!("after{i}:k"), json!(i), &SetOptions::default())
                .await
                .expect("the shards still take writes");
        }
    });
    assert_eq!(db.stored_item_count(), 100);
}

/// Label scans while labels change under them: no page shows an item twice, and the
/// items whose labels never change are on every page that covers them.
#[test]
fn label_scans_during_label_changes_show_each_item_once() {
    let db = open();
    futures::executor::block_on(async {
        for i in 0..200 {
            let options = SetOptions::default().label(1, format!("m{:03}", i % 10));
            db.set(&format!("steady{i:03}"), json!(i), &options)
                .await
                .expect("set");
        }
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the writer however the scans end, so a failed assertion fails the test
    /// instead of leaving the scope waiting for the writer.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            futures::executor::block_on(async {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Flip between a label value before and after the steady ones.
                    let label = if n.is_multiple_of(2) { "a" } else { "z" };
                    let options = SetOptions::default().label(1, label);
                    db.set("flipper", json!(n), &options).await.expect("set");
                    n += 1;
                }
            })
        });
        let _stop = StopOnDrop(&stop);
        for round in 0..300 {
            let options = QueryOptions {
                limit: Some(1000),
                reverse: round % 2 == 1,
                ..Default::default()
            };
            let page = db
                .get_by_label("label1", "*", &options)
                .expect("label query");
            let keys: Vec<&str> = page.items.iter().map(|i| i.key()).collect();
            let mut distinct = keys.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), keys.len(), "a key repeats in round {round}");
            let steady = keys.iter().filter(|k| k.starts_with("steady")).count();
            assert_eq!(steady, 200, "round {round}");
        }
    });
}
