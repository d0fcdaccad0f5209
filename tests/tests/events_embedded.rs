//! Change events of the embedded engine, through `Db::on` as an application uses it
//! (SPEC.md "Events"): one event per committed change with its item and the item it
//! replaced, every filter form, commit order within a namespace under concurrent
//! writers, handlers in registration order, expiry, retries with backoff, dead letters
//! and their replay, and no event for a write that did not commit.

use ampd_engine::storage::{Fault, FaultKind, SimDisk};
use ampd_engine::{BatchItem, Config, Db, ErrorCode, Event, FsyncPolicy, Retry, SetOptions};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn open(shards: usize, retry: Retry) -> Db {
    Db::open(Config {
        shards,
        pin: false,
        event_retry: retry,
        ..Config::default()
    })
    .expect("engine opens")
}

fn quick_retry() -> Retry {
    Retry {
        first: Duration::from_millis(100),
        max: Duration::from_millis(400),
        give_up_after: Duration::from_millis(1500),
    }
}

fn set(db: &Db, key: &str, value: Value) {
    set_with(db, key, value, SetOptions::default());
}

fn set_with(db: &Db, key: &str, value: Value, options: SetOptions) {
    futures::executor::block_on(db.set(key, value, &options)).expect("set");
}

fn remove(db: &Db, key: &str) -> bool {
    futures::executor::block_on(db.remove(key)).expect("remove")
}

/// An event as a test compares it: name, key, value, the previous value, expired.
type Seen = (String, String, Value, Option<Value>, bool);

fn seen(e: &Event) -> Seen {
    (
        e.name.to_string(),
        e.item.key().to_owned(),
        e.item.value(),
        e.previous.as_ref().map(|p| p.value()),
        e.expired,
    )
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A handler that records what it is given, and the record.
fn recorder() -> (
    Log,
    impl Fn(Event) -> std::future::Ready<Result<(), String>> + Send + Sync + 'static,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    (log, move |e: Event| {
        sink.lock().unwrap().push(seen(&e));
        std::future::ready(Ok(()))
    })
}

/// Waits until `f` holds, for at most 10 s (a stall, not a slow machine, fails it).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ev(name: &str, key: &str, value: Value, previous: Option<Value>) -> Seen {
    (name.into(), key.into(), value, previous, false)
}

#[test]
fn each_committed_change_makes_one_event_with_its_item_and_the_one_it_replaced() {
    let db = open(2, Retry::default());
    let (log, handler) = recorder();
    db.on("*", handler).unwrap();
    set(&db, "users:ann", json!({"a": 1}));
    set(&db, "users:ann", json!({"b": 2})); // update-merge
    futures::executor::block_on(db.add("users:ann", Some("a"), 5.into())).unwrap();
    assert!(remove(&db, "users:ann"));
    assert!(!remove(&db, "users:ann"), "nothing there: no event");
    eventually("4 events", || log.lock().unwrap().len() == 4);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            ev("created", "users:ann", json!({"a": 1}), None),
            ev(
                "updated",
                "users:ann",
                json!({"a": 1, "b": 2}),
                Some(json!({"a": 1}))
            ),
            ev(
                "updated",
                "users:ann",
                json!({"a": 6, "b": 2}),
                Some(json!({"a": 1, "b": 2}))
            ),
            ev(
                "deleted",
                "users:ann",
                json!({"a": 6, "b": 2}),
                Some(json!({"a": 6, "b": 2}))
            ),
        ]
    );
    // A batch: one event per item, in the batch's order within the namespace.
    log.lock().unwrap().clear();
    let items = (0..3)
        .map(|i| BatchItem {
            key: format!("b:k{i}"),
            value: json!(i),
            ..BatchItem::default()
        })
        .collect();
    futures::executor::block_on(db.set_batch(items, true)).unwrap();
    eventually("3 batch events", || log.lock().unwrap().len() == 3);
    assert_eq!(
        *log.lock().unwrap(),
        (0..3)
            .map(|i| ev("created", &format!("b:k{i}"), json!(i), None))
            .collect::<Vec<_>>()
    );
    // The event's JSON, as the CLI and the wire show it.
    let shown = Arc::new(Mutex::new(Vec::new()));
    let sink = shown.clone();
    db.on("updated:users:*", move |e: Event| {
        sink.lock().unwrap().push(e.to_json());
        std::future::ready(Ok::<(), String>(()))
    })
    .unwrap();
    set(&db, "users:bob", json!(1));
    set(&db, "users:bob", json!(2));
    eventually("the update", || shown.lock().unwrap().len() == 1);
    let e = shown.lock().unwrap()[0].clone();
    assert_eq!(e["name"], json!("updated"));
    assert_eq!(e["item"]["key"], json!("users:bob"));
    assert_eq!(e["item"]["value"], json!(2));
    assert_eq!(e["previous"]["value"], json!(1));
    assert!(e["item"]["modified"].is_string() && e.get("expired").is_none());
}

#[test]
fn every_filter_form_picks_exactly_its_events() {
    let db = open(2, Retry::default());
    let forms = [
        "created",
        "*",
        "*:global-item",
        "created:order_*",
        "created:order_*:item_*",
        "deleted:users:ann",
        "updated:*:*",
    ];
    let logs: Vec<_> = forms
        .iter()
        .map(|f| {
            let (log, handler) = recorder();
            db.on(*f, handler).unwrap();
            log
        })
        .collect();
    let (list_log, handler) = recorder();
    db.on(["created", "deleted"], handler).unwrap();

    set(&db, "global-item", json!(1)); // created, simple
    set(&db, "global-item", json!(2)); // updated, simple
    set(&db, "order_7", json!(1)); // created, simple
    set(&db, "order_1:item_2", json!(1)); // created, namespaced
    set(&db, "order_1:note", json!(1)); // created, namespaced
    set(&db, "users:ann", json!(1)); // created
    set(&db, "users:ann", json!(2)); // updated, namespaced
    remove(&db, "users:ann"); // deleted
    remove(&db, "global-item"); // deleted, simple
    eventually("every event reaches `*`", || {
        logs[1].lock().unwrap().len() == 9
    });
    eventually("and the list", || list_log.lock().unwrap().len() == 7);
    let got = |i: usize| -> Vec<(String, String)> {
        logs[i]
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.0.clone(), s.1.clone()))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let created = [
        ("created", "global-item"),
        ("created", "order_7"),
        ("created", "order_1:item_2"),
        ("created", "order_1:note"),
        ("created", "users:ann"),
    ];
    // Lanes of different namespaces run side by side: compare as sets where the
    // events span namespaces, in order where they share one.
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(got(0)), sorted(pairs(&created)));
    assert_eq!(
        got(2),
        pairs(&[
            ("created", "global-item"),
            ("updated", "global-item"),
            ("deleted", "global-item")
        ])
    );
    assert_eq!(got(3), pairs(&[("created", "order_7")]));
    assert_eq!(got(4), pairs(&[("created", "order_1:item_2")]));
    assert_eq!(got(5), pairs(&[("deleted", "users:ann")]));
    assert_eq!(got(6), pairs(&[("updated", "users:ann")]));
    let listed: Vec<_> = list_log
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.0.clone(), s.1.clone()))
        .collect();
    let mut expected = pairs(&created);
    expected.extend(pairs(&[
        ("deleted", "users:ann"),
        ("deleted", "global-item"),
    ]));
    assert_eq!(sorted(listed), sorted(expected));

    let e = db
        .on("made:x", |_e: Event| {
            std::future::ready(Ok::<(), String>(()))
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidQuery);
    assert!(e.message().contains("\"made\" is not an event name"), "{e}");
}

/// Four writers, each on a namespace of its own (2 shards), write 300 versions of one
/// key and 300 new keys as fast as they can; a slow handler (it yields on every event)
/// must see each namespace's changes exactly in commit order, and every one of them.
#[test]
fn a_namespace_is_delivered_in_commit_order_under_concurrent_writers() {
    let db = open(2, Retry::default());
    let seen = Arc::new(Mutex::new(Vec::<(String, String, i64)>::new()));
    let sink = seen.clone();
    db.on("*", move |e: Event| {
        let sink = sink.clone();
        async move {
            ampd_rt::yield_now().await;
            let ns = e.namespace().unwrap_or_default().to_owned();
            let v = e.item.value().as_i64().unwrap_or(-1);
            sink.lock().unwrap().push((ns, e.item.key().to_owned(), v));
            Ok::<(), String>(())
        }
    })
    .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..300i64 {
                    set(&db, &format!("ns{w}:counter"), json!(i));
                    set(&db, &format!("ns{w}:k{i:04}"), json!(i));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    eventually("all 2,400 events", || seen.lock().unwrap().len() == 2400);
    let seen = seen.lock().unwrap();
    for w in 0..4 {
        let ns = format!("ns{w}");
        let mine: Vec<(String, i64)> = seen
            .iter()
            .filter(|(n, _, _)| *n == ns)
            .map(|(_, k, v)| (k.clone(), *v))
            .collect();
        // The writer's own order: counter i, then key i.
        let expected: Vec<(String, i64)> = (0..300)
            .flat_map(|i| [(format!("{ns}:counter"), i), (format!("{ns}:k{i:04}"), i)])
            .collect();
        assert_eq!(mine, expected, "{ns}");
    }
}

#[test]
fn handlers_of_one_event_run_in_registration_order_and_off_stops_one() {
    let db = open(1, Retry::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let ids: Vec<_> = (0..3)
        .map(|h| {
            let sink = log.clone();
            db.on("*", move |e: Event| {
                let sink = sink.clone();
                async move {
                    // The first handler is the slowest: order must still hold.
                    for _ in 0..(3 - h) {
                        ampd_rt::yield_now().await;
                    }
                    sink.lock().unwrap().push((h, e.item.key().to_owned()));
                    Ok::<(), String>(())
                }
            })
            .unwrap()
        })
        .collect();
    set(&db, "ns:a", json!(1));
    set(&db, "ns:b", json!(1));
    eventually("6 calls", || log.lock().unwrap().len() == 6);
    let expected: Vec<(usize, String)> = ["ns:a", "ns:b"]
        .iter()
        .flat_map(|k| (0..3).map(move |h| (h, k.to_string())))
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);

    assert!(db.off(ids[1]));
    assert!(!db.off(ids[1]));
    log.lock().unwrap().clear();
    set(&db, "ns:c", json!(1));
    eventually("2 calls", || log.lock().unwrap().len() == 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        *log.lock().unwrap(),
        vec![(0, "ns:c".to_owned()), (2, "ns:c".to_owned())]
    );
}

#[test]
fn an_expiry_is_a_deleted_event_marked_expired() {
    let db = open(1, Retry::default());
    let (log, handler) = recorder();
    db.on("deleted", handler).unwrap();
    // One second from now (an absolute second could pass before the write lands, and
    // a past epoch second reads as seconds from now).
    set_with(
        &db,
        "tmp:k",
        json!("soon gone"),
        SetOptions::default().ttl(1),
    );
    eventually("the expiry event", || log.lock().unwrap().len() == 1);
    assert_eq!(
        log.lock().unwrap()[0],
        (
            "deleted".to_owned(),
            "tmp:k".to_owned(),
            json!("soon gone"),
            Some(json!("soon gone")),
            true
        )
    );
}

/// A handler failing on one key: retried after 100, 200, 400, 400 ms... until 1.5 s
/// after its first failure, then dead-lettered; meanwhile the later event of its
/// namespace waits and another namespace goes on. Replayed once the handler is mended,
/// the dead letter is delivered.
#[test]
fn a_failing_handler_is_retried_with_backoff_then_dead_lettered_and_replayed() {
    let db = open(1, quick_retry());
    let mended = Arc::new(Mutex::new(false));
    let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let delivered = Arc::new(Mutex::new(Vec::<String>::new()));
    let (m, a, d) = (mended.clone(), attempts.clone(), delivered.clone());
    let id = db
        .on("*", move |e: Event| {
            let key = e.item.key().to_owned();
            let result = if key == "bad:k" && !*m.lock().unwrap() {
                a.lock().unwrap().push(Instant::now());
                Err(format!("cannot handle {key}"))
            } else {
                d.lock().unwrap().push(key);
                Ok(())
            };
            std::future::ready(result)
        })
        .unwrap();
    set(&db, "bad:k", json!(1));
    set(&db, "bad:later", json!(1));
    set(&db, "good:k", json!(1));
    eventually("the other namespace goes on", || {
        delivered.lock().unwrap().contains(&"good:k".to_owned())
    });
    assert!(
        !delivered.lock().unwrap().contains(&"bad:later".to_owned()),
        "the namespace's later event waits while its first one retries"
    );
    eventually("the dead letter", || db.dead_letters().len() == 1);
    let dead = db.dead_letters();
    assert_eq!(dead[0].handler, id);
    assert_eq!(dead[0].event.item.key(), "bad:k");
    assert_eq!(dead[0].error, "cannot handle bad:k");
    let times = attempts.lock().unwrap().clone();
    assert_eq!(dead[0].attempts as usize, times.len());
    // Each retry waits at least its backoff: 100, 200, 400, 400, ... ms (capped), and
    // the last one comes at the horizon, not after it.
    let waits = [100u64, 200, 400, 400, 400];
    for (i, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let least = Duration::from_millis(waits[i.min(waits.len() - 1)]);
        let least = least.min(Duration::from_millis(1500) - (pair[0] - times[0]));
        assert!(
            gap + Duration::from_millis(5) >= least,
            "retry {i}: {gap:?} < {least:?}"
        );
    }
    assert!(times.len() >= 5, "attempts: {}", times.len());
    assert!(*times.last().unwrap() - times[0] >= Duration::from_millis(1495));
    eventually("then the namespace goes on", || {
        delivered.lock().unwrap().contains(&"bad:later".to_owned())
    });

    *mended.lock().unwrap() = true;
    assert_eq!(db.replay_dead_letters(Some(id)).len(), 1);
    eventually("the replayed event", || {
        delivered.lock().unwrap().contains(&"bad:k".to_owned())
    });
    assert!(db.dead_letters().is_empty());
}

#[test]
fn a_handler_that_succeeds_on_retry_is_not_dead_lettered_and_a_panic_is_a_failure() {
    let db = open(1, quick_retry());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let (log, recorder_handler) = recorder();
    db.on("*", move |e: Event| {
        let call = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if call == 1 {
            panic!("first call panics");
        }
        std::future::ready(if call < 3 {
            Err(format!("call {call} fails on {}", e.item.key()))
        } else {
            Ok(())
        })
    })
    .unwrap();
    db.on("*", recorder_handler).unwrap();
    set(&db, "ns:k", json!(1));
    eventually("the second handler, after the first succeeds", || {
        log.lock().unwrap().len() == 1
    });
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(db.dead_letters().is_empty());
}

/// With a WAL, an event exists exactly when its change was committed: a write whose
/// WAL write fails is refused and makes no event.
#[test]
fn no_event_for_a_write_that_did_not_commit() {
    let dir = ampd_tests::temp_dir("events-commit");
    let disk = SimDisk::new();
    let db = Db::open(Config {
        shards: 1,
        pin: false,
        data_dir: Some(dir.clone()),
        fsync: FsyncPolicy::Always,
        simulated_disks: Some(vec![disk.clone()]),
        ..Config::default()
    })
    .unwrap();
    let (log, handler) = recorder();
    db.on("*", handler).unwrap();
    set(&db, "ns:committed", json!(1));
    eventually("the committed write's event", || {
        log.lock().unwrap().len() == 1
    });
    // The next disk operation (this write's) fails, and every one after it.
    disk.plan_fault(Fault {
        at: 0,
        kind: FaultKind::Io,
        persistent: true,
    });
    let refused = futures::executor::block_on(db.set("ns:lost", json!(2), &SetOptions::default()));
    assert_eq!(refused.unwrap_err().code(), ErrorCode::Internal);
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1, "ns:committed");
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}
