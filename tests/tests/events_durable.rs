//! Durable subscriptions of the embedded engine (`Db::subscribe`, SPEC.md "Events"):
//! a subscription resumes after the database is closed and opened again, with the
//! events it had not finished with delivered again (per namespace, in commit order)
//! and none it had finished with; expiries are among them; a subscription that fell
//! behind the backlog cap gets an explicit error instead of a silent gap; names,
//! filters and handlers are checked.
//!
//! Guards against positions that are not saved or not used, against a WAL that drops
//! what a subscription still needs (or keeps it past the cap silently), against
//! expiries that leave no record to derive their events from, and against a resumed
//! subscription that skips or repeats what it should not.

use ampd_engine::{Config, Db, ErrorCode, Event, Retry, SetOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn open(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Db {
    let mut config = Config {
        shards: 2,
        pin: false,
        data_dir: Some(dir.to_owned()),
        ..Config::default()
    };
    tweak(&mut config);
    Db::open(config).expect("engine opens")
}

fn set(db: &Db, key: &str, value: Value, options: SetOptions) {
    futures::executor::block_on(db.set(key, value, &options)).expect("set");
}

/// (name, key, value, expired) of the events a handler was given.
type Log = Arc<Mutex<Vec<(String, String, Value, bool)>>>;

/// A handler that records each event and finishes with it, except those of keys
/// starting with `hold`, which it never finishes (a consumer that died holding them).
fn holding(
    hold: &'static str,
) -> (
    Log,
    impl Fn(Event) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
) {
    let log: Log = Arc::default();
    let sink = log.clone();
    (log, move |e: Event| {
        let key = e.item.key().to_owned();
        sink.lock()
            .unwrap()
            .push((e.name.to_string(), key.clone(), e.item.value(), e.expired));
        if !hold.is_empty() && key.starts_with(hold) {
            Box::pin(futures::future::pending())
        } else {
            Box::pin(futures::future::ready(Ok(())))
        }
    })
}

fn subscribe<F, Fut>(db: &Db, name: &str, filters: &[&str], handler: F) -> Result<(), ErrorCode>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    futures::executor::block_on(db.subscribe(name, filters, handler))
        .map(|_| ())
        .map_err(|e| e.code())
}

/// Waits until `f` holds, for at most 10 s (a stall, not a slow machine, fails it).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lets the positions saver (every 100 ms) catch up.
fn let_positions_save() {
    std::thread::sleep(Duration::from_millis(400));
}

fn created(key: &str, value: Value) -> (String, String, Value, bool) {
    ("created".to_owned(), key.to_owned(), value, false)
}

#[test]
fn a_subscription_resumes_with_what_it_had_not_finished() {
    let dir = ampd_tests::temp_dir("events-durable-resume");
    {
        let db = open(&dir, |_| {});
        let (log, handler) = holding("b:");
        subscribe(&db, "mailer", &["*"], handler).unwrap();
        for i in 0..5 {
            set(&db, &format!("a:{i}"), json!(i), SetOptions::default());
        }
        for i in 0..5 {
            set(&db, &format!("b:{i}"), json!(i), SetOptions::default());
        }
        // `a` is finished with; `b` is stuck on its first event.
        eventually("a:0..5 and b:0", || log.lock().unwrap().len() == 6);
        let_positions_save();
    }
    let db = open(&dir, |_| {});
    let (log, handler) = holding("");
    subscribe(&db, "mailer", &["*"], handler).unwrap();
    set(&db, "a:5", json!(5), SetOptions::default());
    eventually("b:0..5 again and a:5", || log.lock().unwrap().len() == 6);
    std::thread::sleep(Duration::from_millis(200));
    let seen = log.lock().unwrap().clone();
    let of = |ns: &str| -> Vec<_> {
        seen.iter()
            .filter(|e| e.1.starts_with(ns))
            .cloned()
            .collect()
    };
    assert_eq!(
        of("b:"),
        (0..5)
            .map(|i| created(&format!("b:{i}"), json!(i)))
            .collect::<Vec<_>>(),
        "b's events again, in commit order"
    );
    assert_eq!(
        of("a:"),
        vec![created("a:5", json!(5))],
        "nothing of a again"
    );
    // Handled and saved: a third opening delivers nothing old.
    let_positions_save();
    drop(db);
    let db = open(&dir, |_| {});
    let (log, handler) = holding("");
    subscribe(&db, "mailer", &["*"], handler).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(*log.lock().unwrap(), vec![]);
}

#[test]
fn a_new_subscription_starts_at_now_and_filters_its_backlog() {
    let dir = ampd_tests::temp_dir("events-durable-filters");
    {
        let db = open(&dir, |_| {});
        set(&db, "users:before", json!(0), SetOptions::default());
        let (log, handler) = holding("users:");
        subscribe(&db, "users", &["created:users:*"], handler).unwrap();
        set(&db, "users:ann", json!(1), SetOptions::default());
        set(&db, "other:x", json!(2), SetOptions::default());
        set(&db, "users:bob", json!(3), SetOptions::default());
        eventually("users:ann", || log.lock().unwrap().len() == 1);
        let_positions_save();
    }
    let db = open(&dir, |_| {});
    let (log, handler) = holding("");
    subscribe(&db, "users", &["created:users:*"], handler).unwrap();
    eventually("the backlog", || log.lock().unwrap().len() == 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            created("users:ann", json!(1)),
            created("users:bob", json!(3))
        ]
    );
}

#[test]
fn expiries_are_delivered_again_after_a_restart() {
    let dir = ampd_tests::temp_dir("events-durable-expiry");
    {
        let db = open(&dir, |_| {});
        let (log, handler) = holding("tmp:");
        subscribe(&db, "s", &["*"], handler).unwrap();
        set(
            &db,
            "tmp:k",
            json!("soon gone"),
            SetOptions::default().ttl(1),
        );
        eventually("the create", || log.lock().unwrap().len() == 1);
        // The reaper removes it through the WAL once its second has passed.
        eventually("the expiry is committed", || db.stored_item_count() == 0);
        let_positions_save();
    }
    let db = open(&dir, |_| {});
    let (log, handler) = holding("");
    subscribe(&db, "s", &["*"], handler).unwrap();
    eventually("both events", || log.lock().unwrap().len() == 2);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            created("tmp:k", json!("soon gone")),
            (
                "deleted".to_owned(),
                "tmp:k".to_owned(),
                json!("soon gone"),
                true
            ),
        ]
    );
}

#[test]
fn a_subscription_past_the_backlog_cap_is_lost_explicitly() {
    let dir = ampd_tests::temp_dir("events-durable-lost");
    let small = |c: &mut Config| {
        c.shards = 1;
        c.wal_segment_bytes = 64 << 10;
        c.event_backlog_max = 64 << 10;
    };
    {
        let db = open(&dir, small);
        let (log, handler) = holding("k:");
        subscribe(&db, "slow", &["*"], handler).unwrap();
        let (_, fine) = holding("");
        subscribe(&db, "fast", &["*"], fine).unwrap();
        let value = json!("x".repeat(1000));
        for i in 0..400 {
            set(&db, &format!("k:{i}"), value.clone(), SetOptions::default());
        }
        eventually("the first event", || !log.lock().unwrap().is_empty());
        let_positions_save();
        futures::executor::block_on(db.snapshot()).unwrap();
        assert!(db.subscriptions_fallen_behind() >= 1);
    }
    let db = open(&dir, small);
    let (_, handler) = holding("");
    let err = futures::executor::block_on(db.subscribe("slow", ["*"], handler)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(
        err.message().contains("lost its position") && err.message().contains("backlog"),
        "{}",
        err.message()
    );
    // The other subscription goes on; the lost one can be removed and made again.
    let (_, fine) = holding("");
    futures::executor::block_on(db.subscribe("fast", ["*"], fine)).unwrap();
    assert!(db.unsubscribe("slow").unwrap());
    let (log, handler) = holding("");
    subscribe(&db, "slow", &["*"], handler).unwrap();
    set(&db, "k:new", json!(1), SetOptions::default());
    eventually("the new event", || log.lock().unwrap().len() == 1);
    assert_eq!(log.lock().unwrap()[0].1, "k:new");
}

#[test]
fn names_filters_and_handlers_are_checked() {
    let dir = ampd_tests::temp_dir("events-durable-checks");
    let db = open(&dir, |_| {});
    let (_, h) = holding("");
    assert_eq!(
        subscribe(&db, "a/b", &["*"], h),
        Err(ErrorCode::InvalidQuery)
    );
    let (_, h) = holding("");
    assert_eq!(
        subscribe(&db, "s", &["bogus"], h),
        Err(ErrorCode::InvalidQuery)
    );
    let (_, h) = holding("");
    subscribe(&db, "s", &["created"], h).unwrap();
    let (_, h) = holding("");
    assert_eq!(
        subscribe(&db, "s", &["updated"], h),
        Err(ErrorCode::InvalidQuery),
        "other filters"
    );
    let (_, h) = holding("");
    assert_eq!(
        subscribe(&db, "s", &["created"], h),
        Err(ErrorCode::InvalidQuery),
        "a second handler"
    );
    let listed = db.subscriptions();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].filters.clone()),
        ("s", vec!["created".to_owned()])
    );
    assert!(listed[0].positions.iter().all(Option::is_some));
    assert!(!db.unsubscribe("none").unwrap());
}

#[test]
fn dead_letters_outlive_a_restart_and_replay() {
    let dir = ampd_tests::temp_dir("events-durable-dead");
    let quick = |c: &mut Config| {
        c.event_retry = Retry {
            first: Duration::from_millis(50),
            max: Duration::from_millis(100),
            give_up_after: Duration::from_millis(300),
        };
    };
    {
        let db = open(&dir, quick);
        let failing =
            |_e: Event| std::future::ready(Err::<(), _>("the mail server said no".to_owned()));
        subscribe(&db, "mailer", &["*"], failing).unwrap();
        set(
            &db,
            "bad:1",
            json!({"to": "ann"}),
            SetOptions::default().label(1, "x"),
        );
        eventually("a dead letter", || db.dead_letters().len() == 1);
        let_positions_save();
    }
    let db = open(&dir, quick);
    let letters = db.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.handler, db.subscriptions()[0].handler);
    assert_eq!(letter.error, "the mail server said no");
    assert!(letter.attempts >= 3, "{}", letter.attempts);
    assert_eq!(
        (
            letter.event.name.to_string(),
            letter.event.item.key(),
            letter.event.item.value()
        ),
        ("created".to_owned(), "bad:1", json!({"to": "ann"}))
    );
    assert_eq!(letter.event.item.label(1), Some("x"));
    let (log, handler) = holding("");
    subscribe(&db, "mailer", &["*"], handler).unwrap();
    let replayed = db.replay_dead_letters(Some(letter.handler));
    assert_eq!(replayed.len(), 1);
    eventually("the replay", || log.lock().unwrap().len() == 1);
    assert_eq!(
        log.lock().unwrap()[0],
        created("bad:1", json!({"to": "ann"}))
    );
    // Replayed and saved: gone after another restart.
    let_positions_save();
    drop(db);
    let db = open(&dir, quick);
    assert_eq!(db.dead_letters(), vec![]);
}
