//! The embedded engine's write path (issue 13, "the embedded cache"): an application
//! thread writing to an in-memory engine applies its write itself, under the shard's
//! write lock, instead of handing it to the shard's executor and waiting for a
//! wake-up. What must not change: a write is atomic and visible to every later read,
//! writes to a shard have one order, and as soon as an event handler exists writes go
//! through the executor again, so its events come in commit order with none missing.
//! A durable engine still writes through the shard's WAL.

use ampd_engine::{Config, Db, Event, SetOptions};
use serde_json::{json, Value};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longer than any write can take unless it waits for a shard that is stalled.
const STALL: Duration = Duration::from_secs(10);

fn set(db: &Db, key: &str, value: Value) {
    futures::executor::block_on(db.set(key, value, &SetOptions::default())).expect("set");
}

/// Blocks shard 0's executor thread until the returned sender is dropped or sent to.
fn stall_shard(db: &Db) -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (stalled, is_stalled) = mpsc::channel::<()>();
    let task = db.spawn_on(0, move || async move {
        stalled.send(()).expect("test waits");
        // Blocking on purpose: nothing else runs on the shard's thread meanwhile.
        let _ = released.recv();
    });
    std::thread::spawn(move || futures::executor::block_on(task));
    is_stalled
        .recv_timeout(STALL)
        .expect("the shard runs the stalling task");
    release
}

/// Runs a `set` of `key` on a thread of its own; the receiver gets its result.
fn set_on_a_thread(db: &Arc<Db>, key: &'static str, value: Value) -> mpsc::Receiver<()> {
    let (done, finished) = mpsc::channel();
    let db = db.clone();
    std::thread::spawn(move || {
        set(&db, key, value);
        let _ = done.send(());
    });
    finished
}

#[test]
fn an_in_memory_write_from_an_application_thread_does_not_wait_for_the_shard() {
    let db = Arc::new(ampd_tests::open_in_memory(1));
    let release = stall_shard(&db);
    let finished = set_on_a_thread(&db, "ns:a", json!(1));
    let done = finished.recv_timeout(STALL);
    // Release the shard whatever happened, so a failure does not hang the test.
    drop(release);
    assert_eq!(
        done,
        Ok(()),
        "the set waited for the stalled shard's executor"
    );
    let item = db.get_one("ns:a").expect("get").expect("written");
    assert_eq!(item.value(), json!(1));
}

#[test]
fn a_durable_write_still_goes_through_the_shards_wal() {
    let dir = ampd_tests::temp_dir("embedded-writes-durable");
    let db = Arc::new(
        Db::open(Config {
            shards: 1,
            pin: false,
            data_dir: Some(dir.clone()),
            ..Config::default()
        })
        .expect("engine opens"),
    );
    let release = stall_shard(&db);
    let finished = set_on_a_thread(&db, "ns:a", json!(1));
    // While the shard's executor is stalled the write cannot be logged, so it can be
    // neither answered nor visible.
    assert_eq!(
        finished.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    assert_eq!(db.get_one("ns:a").expect("get"), None);
    drop(release);
    finished
        .recv_timeout(STALL)
        .expect("answered once the shard runs");
    assert_eq!(db.wal_counters().0, 1, "one WAL record");
    let item = db.get_one("ns:a").expect("get").expect("written");
    assert_eq!(item.value(), json!(1));
}

/// Four threads count one key up while a handler is registered midway: from the
/// handler's first event on it sees every later count, in order (a write applied
/// beside the executor after the handler existed would leave a gap, or arrive out of
/// order).
#[test]
fn a_handler_registered_under_direct_writes_misses_nothing_after_its_first_event() {
    const THREADS: usize = 4;
    const ADDS: i64 = 3_000;
    let db = ampd_tests::open_in_memory(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (registered, is_registered) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let db = &db;
            s.spawn(move || {
                for _ in 0..ADDS {
                    futures::executor::block_on(db.add("ns:c", None, 1.into())).expect("add");
                }
            });
        }
        // Register once the count is well under way.
        while db
            .get_one("ns:c")
            .expect("get")
            .is_none_or(|i| i.value().as_i64() < Some(ADDS))
        {
            std::thread::yield_now();
        }
        let sink = seen.clone();
        db.on("*", move |e: Event| {
            sink.lock().expect("lock").push(e.item.value().as_i64());
            std::future::ready(Ok::<(), String>(()))
        })
        .expect("handler registers");
        registered.send(()).expect("sent");
    });
    is_registered.recv().expect("registered");
    let total = THREADS as i64 * ADDS;
    let item = db.get_one("ns:c").expect("get").expect("counted");
    assert_eq!(item.value(), json!(total), "no add lost");
    // Handlers run on the shard's executor: wait for the last count to arrive.
    let deadline = std::time::Instant::now() + STALL;
    while seen.lock().expect("lock").last() != Some(&Some(total)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the last count never reached the handler"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen: Vec<i64> = seen
        .lock()
        .expect("lock")
        .iter()
        .flatten()
        .copied()
        .collect();
    let first = *seen.first().expect("some events");
    assert!(first < total, "registered before the last add");
    assert_eq!(seen, (first..=total).collect::<Vec<_>>());
}
