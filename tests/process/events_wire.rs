//! Named subscriptions over the wire, through the Rust client against a real `ampd
//! serve` (PROTOCOL.md "Events"): the events a subscription's filter picks arrive as
//! the API shows them; two clients sharing a name split its events without breaking a
//! namespace's order; an event whose client leaves before acknowledging it, or whose
//! handler fails, is delivered again; a malformed filter is refused.

use ampd_tests::server_process::ServerProcess;
use ampd_wire::client::Client;
use ampd_wire::{ErrorCode, SetOptions};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

fn serve(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"];
    args.extend_from_slice(extra);
    ServerProcess::start(BIN, &args)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

type Log = Arc<Mutex<Vec<Value>>>;

/// Subscribes `name` on a client of its own, in the background; every event goes to
/// the returned log.
fn subscribe(rt: &tokio::runtime::Runtime, addr: &str, name: &str, filter: &[&str]) -> Log {
    let log: Log = Arc::default();
    let (sink, addr, name) = (log.clone(), addr.to_owned(), name.to_owned());
    let filter: Vec<String> = filter.iter().map(|f| (*f).to_owned()).collect();
    let (opened, open) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let client = Client::connect(&addr).await.expect("connect");
        let filter: Vec<&str> = filter.iter().map(String::as_str).collect();
        // `on` answers only when the connection ends; the subscription is open once the
        // server has answered `subscribe`, which a ping after it proves.
        let on = client.on(&name, &filter, move |e| {
            sink.lock().unwrap().push(e);
            async { Ok(()) }
        });
        let pinged = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.ping().await.expect("ping");
            let _ = opened.send(());
            std::future::pending::<()>().await
        };
        tokio::select! { r = on => panic!("subscription ended: {r:?}"), _ = pinged => {} }
    });
    open.recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    log
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_subscription_receives_what_its_filter_picks_as_the_api_shows_it() {
    let server = serve(&[]);
    let rt = runtime();
    let created = subscribe(&rt, server.addr(), "created-users", &["created:users:*"]);
    let all = subscribe(&rt, server.addr(), "all", &["*"]);
    let client = rt.block_on(Client::connect(server.addr())).unwrap();
    rt.block_on(async {
        let options = SetOptions::default();
        client
            .set("users:ann", json!({"age": 30}), options.clone())
            .await
            .unwrap();
        client
            .set("users:ann", json!({"age": 31}), options.clone())
            .await
            .unwrap();
        client.set("other", json!(1), options).await.unwrap();
        client.remove("users:ann").await.unwrap();
    });
    eventually("4 events for `*`", || all.lock().unwrap().len() == 4);
    eventually("1 for created:users:*", || {
        created.lock().unwrap().len() == 1
    });
    let e = created.lock().unwrap()[0].clone();
    assert_eq!(e["name"], json!("created"));
    assert_eq!(e["item"]["key"], json!("users:ann"));
    assert_eq!(e["item"]["value"], json!({"age": 30}));
    assert!(e["item"]["created"].is_string() && e.get("previous").is_none());
    let users: Vec<Value> = all
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["item"]["key"] == json!("users:ann"))
        .cloned()
        .collect();
    let names: Vec<&str> = users.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["created", "updated", "deleted"],
        "commit order in a namespace"
    );
    assert_eq!(users[1]["previous"]["value"], json!({"age": 30}));
    assert_eq!(users[1]["item"]["value"], json!({"age": 31}));
    assert_eq!(users[2]["item"]["value"], json!({"age": 31}));

    let refused = rt.block_on(async { client.on("bad", &["made"], |_| async { Ok(()) }).await });
    assert_eq!(refused.unwrap_err().code(), ErrorCode::InvalidQuery);
    let refused = rt.block_on(async {
        let other = Client::connect(server.addr()).await.unwrap();
        other.on("all", &["created"], |_| async { Ok(()) }).await
    });
    let e = refused.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidQuery);
    assert!(e.message().contains("exists with filter"), "{e}");
}

/// Two clients share "audit": between them they see every event once (no handler
/// fails), and each namespace's events in commit order wherever they land.
#[test]
fn clients_sharing_a_name_split_its_events_in_namespace_order() {
    let server = serve(&[]);
    let rt = runtime();
    let a = subscribe(&rt, server.addr(), "audit", &["*"]);
    let b = subscribe(&rt, server.addr(), "audit", &["*"]);
    let client = rt.block_on(Client::connect(server.addr())).unwrap();
    rt.block_on(async {
        for i in 0..100 {
            for ns in ["n1", "n2", "n3"] {
                client
                    .set(&format!("{ns}:k"), json!(i), SetOptions::default())
                    .await
                    .unwrap();
            }
        }
    });
    eventually("300 events between the two", || {
        a.lock().unwrap().len() + b.lock().unwrap().len() == 300
    });
    std::thread::sleep(Duration::from_millis(100));
    let (a, b) = (a.lock().unwrap().clone(), b.lock().unwrap().clone());
    assert_eq!(a.len() + b.len(), 300, "each event once");
    assert!(!a.is_empty() && !b.is_empty(), "both clients get events");
    // The order in which the two clients' handlers ran, merged, is not observable here;
    // what is: each client sees each namespace's values increasing, and the union is
    // every value of every namespace.
    for ns in ["n1", "n2", "n3"] {
        let key = json!(format!("{ns}:k"));
        let mut all = Vec::new();
        for log in [&a, &b] {
            let mine: Vec<i64> = log
                .iter()
                .filter(|e| e["item"]["key"] == key)
                .map(|e| e["item"]["value"].as_i64().unwrap())
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{ns}: {mine:?}");
            all.extend(mine);
        }
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "{ns}");
    }
}

/// A handler that fails twice is retried with the server's backoff (50 ms doubling)
/// and succeeds on the third delivery; a client that disconnects holding an event
/// unacknowledged has it delivered again to the next client of the subscription.
#[test]
fn failed_and_unacknowledged_events_are_delivered_again() {
    let server = serve(&["--event-retry-first", "50ms", "--event-retry-max", "200ms"]);
    let rt = runtime();
    let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let a = attempts.clone();
    let addr = server.addr().to_owned();
    rt.spawn(async move {
        let client = Client::connect(&addr).await.unwrap();
        let _ = client
            .on("flaky", &["*"], move |_| {
                let mut a = a.lock().unwrap();
                a.push(Instant::now());
                let result = if a.len() < 3 {
                    Err(format!("attempt {} fails", a.len()))
                } else {
                    Ok(())
                };
                async move { result }
            })
            .await;
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = rt.block_on(Client::connect(server.addr())).unwrap();
    rt.block_on(client.set("ns:k", json!(1), SetOptions::default()))
        .unwrap();
    eventually("three attempts", || attempts.lock().unwrap().len() == 3);
    let times = attempts.lock().unwrap().clone();
    assert!(
        times[1] - times[0] >= Duration::from_millis(45),
        "{:?}",
        times[1] - times[0]
    );
    assert!(
        times[2] - times[1] >= Duration::from_millis(95),
        "{:?}",
        times[2] - times[1]
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        attempts.lock().unwrap().len(),
        3,
        "acknowledged: not delivered again"
    );

    // A client that takes an event and leaves without acknowledging it.
    let taken = Arc::new(Mutex::new(0));
    let t = taken.clone();
    let addr = server.addr().to_owned();
    // On a runtime of its own: dropping it closes the client's connection.
    let holder = runtime();
    holder.spawn(async move {
        let client = Client::connect(&addr).await.unwrap();
        let _ = client
            .on("handover", &["*"], move |_| {
                *t.lock().unwrap() += 1;
                // Never finishes: the ack never goes.
                std::future::pending::<Result<(), String>>()
            })
            .await;
    });
    std::thread::sleep(Duration::from_millis(200));
    rt.block_on(client.set("ns:handed", json!(2), SetOptions::default()))
        .unwrap();
    eventually("the first client holds the event", || {
        *taken.lock().unwrap() == 1
    });
    holder.shutdown_background();
    let next = subscribe(&rt, server.addr(), "handover", &["*"]);
    eventually("the event reaches the next client", || {
        next.lock()
            .unwrap()
            .iter()
            .any(|e| e["item"]["key"] == json!("ns:handed"))
    });
}
