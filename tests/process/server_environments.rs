//! Environments and access, and the client's connection, against real `ampd serve`
//! processes (SPEC.md "Environments and access").
//!
//! It guards against one environment seeing another's data (the same keys holding
//! different values in each, in exact reads, scans and label queries), against a
//! restart that mixes environments up or moves their data out of `DATA/env/NAME/`,
//! against a token check that can be passed with a wrong, empty, missing or another
//! environment's token — or whose refusal tells the cause apart —, against a server that
//! serves a tokenless environment on a non-loopback address, and against a client that
//! serialises or mismatches the concurrent requests of one connection, or stays broken
//! after its server restarts.

use ampd_tests::server_process::ServerProcess;
use ampd_wire::client::{Client, Got};
use ampd_wire::{BatchItem, ErrorCode, QueryOptions, SetOptions, Value};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

/// The environments of these servers, with their tokens.
const ENVS: [(&str, Option<&str>); 3] = [
    ("dev", None),
    ("prod", Some("tok1")),
    ("stage", Some("tok2")),
];

/// `--env` flags for [`ENVS`].
const ENV_ARGS: [&str; 6] = ["--env", "dev", "--env", "prod=tok1", "--env", "stage=tok2"];

async fn connect(addr: &str, env: &str, token: Option<&str>) -> Client {
    Client::builder(addr)
        .env(Some(env))
        .token(token)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{env}: cannot connect: {e}"))
}

/// The code and message of a refused handshake.
async fn refused(addr: &str, env: Option<&str>, token: Option<&str>) -> (ErrorCode, String) {
    match Client::builder(addr).env(env).token(token).connect().await {
        Ok(_) => panic!("env {env:?} token {token:?}: admitted"),
        Err(e) => (e.code(), e.message().to_owned()),
    }
}

/// The value of an exact `get`.
async fn value(client: &Client, key: &str) -> Value {
    match client.get(key, QueryOptions::default()).await {
        Ok(Got::Value(v)) => v,
        other => panic!("get {key}: {other:?}"),
    }
}

/// A multi-item `get` (or label query) as the API shows it.
async fn page(client: &Client, pattern: &str, label: Option<&str>) -> Value {
    let options = QueryOptions {
        label: label.map(str::to_owned),
        ..QueryOptions::default()
    };
    match client.get(pattern, options).await {
        Ok(Got::Page(p)) => p.to_json(),
        other => panic!("get {pattern} (label {label:?}): {other:?}"),
    }
}

/// Writes the same keys in every environment, each with its environment's name in the
/// value and in a label.
async fn write_each(addr: &str) {
    for (env, token) in ENVS {
        let c = connect(addr, env, token).await;
        c.set("shared", json!({"env": env}), SetOptions::default())
            .await
            .expect("set");
        c.set("ns:shared", json!(env), SetOptions::default().label(1, "L"))
            .await
            .expect("set with a label");
        let own = BatchItem {
            key: format!("own:{env}"),
            value: json!(1),
            ..BatchItem::default()
        };
        c.set_batch(vec![own], true, false)
            .await
            .expect("batch set");
    }
}

/// Every environment sees exactly its own writes of [`write_each`].
async fn check_each(addr: &str) {
    for (env, token) in ENVS {
        let c = connect(addr, env, token).await;
        assert_eq!(value(&c, "shared").await, json!({"env": env}), "{env}");
        assert_eq!(
            page(&c, "*", None).await,
            json!({"items": [{"key": "shared", "value": {"env": env}}]}),
            "{env}"
        );
        assert_eq!(
            page(&c, "ns:*", None).await,
            json!({"items": [{"key": "ns:shared", "value": env}]}),
            "{env}"
        );
        assert_eq!(
            page(&c, "L", Some("label1")).await,
            json!({"items": [{"key": "ns:shared", "value": env}]}),
            "{env}"
        );
        assert_eq!(
            page(&c, "own:*", None).await,
            json!({"items": [{"key": format!("own:{env}"), "value": 1}]}),
            "{env}"
        );
        assert_eq!(
            c.get_many(&["own:dev", "own:prod", "own:stage"], false)
                .await
                .expect("batch get"),
            json!({"items": [{"key": format!("own:{env}"), "value": 1}]}),
            "{env}"
        );
    }
}

/// `ampd repl --env ENV` on the server's data folder: what it answers to `input`, one line each.
fn repl_on(data: &Path, env: &str, input: &str) -> Vec<Value> {
    let mut child = Command::new(BIN)
        .args(["repl", "--shards", "2", "--env", env, "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ampd repl starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("ampd repl reads");
    let out = child.wait_with_output().expect("ampd repl ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn environments_are_isolated_and_stay_in_their_folders_across_restart() {
    let dir = ampd_tests::temp_dir("server-envs");
    let data = dir.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["--addr", "127.0.0.1:0", "--data-dir", data, "--shards", "2"];
    args.extend(ENV_ARGS);

    let server = ServerProcess::start(BIN, &args);
    write_each(server.addr()).await;
    check_each(server.addr()).await;
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");

    let mut folders: Vec<String> = std::fs::read_dir(dir.join("env"))
        .expect("DATA/env")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, ["dev", "prod", "stage"]);

    let server = ServerProcess::start(BIN, &args);
    check_each(server.addr()).await;
    assert_eq!(server.stop().code(), Some(0));

    // Each folder alone holds its environment's data, and nothing of the others.
    for (env, _) in ENVS {
        let answers = repl_on(&dir, env, "get shared\nget own:*\nget L --label label1\n");
        assert_eq!(
            answers,
            [
                json!({"env": env}),
                json!({"items": [{"key": format!("own:{env}"), "value": 1}]}),
                json!({"items": [{"key": "ns:shared", "value": env}]}),
            ],
            "DATA/env/{env}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tokens_are_checked_and_a_refusal_tells_nothing_more() {
    let mut args = vec!["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"];
    args.extend(ENV_ARGS);
    let server = ServerProcess::start(BIN, &args);
    let addr = server.addr();

    // Before prod holds anything, and after: the refusals must not differ.
    let mut messages = Vec::new();
    for round in 0..2 {
        for token in [Some("wrong"), Some(""), None, Some("tok2"), Some("tok1 ")] {
            let (code, message) = refused(addr, Some("prod"), token).await;
            assert_eq!(code, ErrorCode::Unauthorized, "prod with {token:?}");
            assert!(
                !message.contains("tok1") && !message.contains("tok2"),
                "a token in the message: {message}"
            );
            messages.push(message);
        }
        if round == 0 {
            write_each(addr).await;
        }
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "one message whatever the cause: {messages:?}"
    );
    assert!(messages[0].contains("prod"), "{messages:?}");

    let (code, _) = refused(addr, Some("stage"), Some("tok1")).await;
    assert_eq!(code, ErrorCode::Unauthorized, "prod's token for stage");
    for (env, token) in [("nope", None), ("nope", Some("tok1")), ("", None)] {
        let (code, message) = refused(addr, Some(env), token).await;
        assert_eq!(code, ErrorCode::UnknownEnvironment, "{env:?}: {message}");
    }
    // The right tokens, and dev without one (also when the client names no
    // environment), are admitted.
    check_each(addr).await;
    let default = Client::connect(addr).await.expect("dev by default");
    assert_eq!(value(&default, "shared").await, json!({"env": "dev"}));
}

#[test]
fn a_non_loopback_address_needs_a_token_for_every_environment() {
    for args in [
        vec!["--addr", "0.0.0.0:0", "--in-memory", "--shards", "1"],
        vec![
            "--addr",
            "0.0.0.0:0",
            "--in-memory",
            "--shards",
            "1",
            "--env",
            "prod=tok1",
            "--env",
            "dev",
        ],
    ] {
        let failure = match ServerProcess::try_start(BIN, &args) {
            Ok(server) => panic!("{args:?}: started on {}", server.addr()),
            Err(failure) => failure,
        };
        let status = failure.status.expect("it exits by itself");
        assert!(!status.success(), "{args:?}: {status}");
        assert!(failure.stdout.is_empty(), "{failure}");
        assert!(
            failure.stderr.contains("environment dev"),
            "names the environment: {failure}"
        );
    }

    let args = [
        "--addr",
        "0.0.0.0:0",
        "--in-memory",
        "--shards",
        "1",
        "--env",
        "dev=tok0",
        "--env",
        "prod=tok1",
    ];
    let server = ServerProcess::start(BIN, &args);
    assert!(server.addr().starts_with("0.0.0.0:"), "{}", server.addr());
    let local = format!("127.0.0.1:{}", server.port());
    ampd_tests::block_on(async {
        let dev = connect(&local, "dev", Some("tok0")).await;
        dev.set("k", json!(1), SetOptions::default())
            .await
            .expect("set");
        assert_eq!(value(&dev, "k").await, json!(1));
        let (code, _) = refused(&local, None, None).await;
        assert_eq!(code, ErrorCode::Unauthorized, "dev now needs its token");
    });
}

#[tokio::test]
async fn one_connection_carries_many_concurrent_requests() {
    let server = ServerProcess::start(
        BIN,
        &["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"],
    );
    let client = Client::connect(server.addr()).await.expect("connects");

    let adds = (0..1000).map(|_| {
        let c = client.clone();
        async move { c.add("counter", None, 1, false).await }
    });
    let mut totals: Vec<i64> = futures::future::join_all(adds)
        .await
        .into_iter()
        .map(|r| r.expect("add").as_i64().expect("an integer total"))
        .collect();
    totals.sort_unstable();
    assert_eq!(
        totals,
        (1..=1000).collect::<Vec<i64>>(),
        "each add saw its own total"
    );
    assert_eq!(value(&client, "counter").await, json!(1000));

    // Answers matched by id: each read gets its own key's value.
    let sets = (0..500).map(|i| {
        let c = client.clone();
        async move {
            c.set(&format!("k{i}"), json!(i), SetOptions::default())
                .await
        }
    });
    for (i, r) in futures::future::join_all(sets)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.expect("set"), json!(i));
    }
    let gets = (0..500).map(|i| {
        let c = client.clone();
        async move { (i, value(&c, &format!("k{i}")).await) }
    });
    for (i, v) in futures::future::join_all(gets).await {
        assert_eq!(v, json!(i), "k{i}");
    }

    let stats = client.stats().await.expect("stats");
    assert_eq!(stats["connections_accepted"], json!(1), "{stats}");
}

#[tokio::test]
async fn client_reconnects_after_the_server_restarts() {
    let dir = ampd_tests::temp_dir("client-reconnect");
    let data = dir.to_str().expect("a UTF-8 temp path");
    let server = ServerProcess::start(
        BIN,
        &["--addr", "127.0.0.1:0", "--data-dir", data, "--shards", "2"],
    );
    let addr = server.addr().to_owned();
    let client = Client::connect(addr.as_str()).await.expect("connects");
    assert_eq!(
        client
            .set("k", json!(1), SetOptions::default())
            .await
            .expect("set"),
        json!(1)
    );
    assert_eq!(
        server.stop_with("INT").code(),
        Some(0),
        "SIGINT is a clean stop"
    );

    let down = client.get("k", QueryOptions::default()).await;
    assert_eq!(
        down.as_ref().map_err(|e| e.code()).err(),
        Some(ErrorCode::Internal),
        "a call while the server is down fails: {down:?}"
    );

    let server = ServerProcess::start(
        BIN,
        &["--addr", addr.as_str(), "--data-dir", data, "--shards", "2"],
    );
    assert_eq!(server.addr(), addr);
    assert_eq!(
        value(&client, "k").await,
        json!(1),
        "the same client, reconnected"
    );
    assert_eq!(
        client.add("k", None, 1, false).await.expect("add"),
        json!(2)
    );
    let stats = client.stats().await.expect("stats");
    assert_eq!(stats["connections_accepted"], json!(1), "{stats}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
