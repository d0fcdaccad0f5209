//! `ampd on NAME FILTER...` as a user runs it: each event a line of JSON on stdout,
//! acknowledged once printed; it keeps running across a server restart (reconnects and
//! subscribes again); `--exec CMD` hands each event to a command, whose failures the
//! server retries; a malformed filter exits at once with `invalid_query`; `ampd events
//! remove` removes a subscription.

use ampd_tests::server_process::ServerProcess;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

/// A port nobody listens on now, so a restarted server can take it again.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn serve(addr: &str) -> ServerProcess {
    let args = [
        "--addr",
        addr,
        "--in-memory",
        "--shards",
        "1",
        "--event-retry-first",
        "50ms",
        "--event-retry-max",
        "100ms",
    ];
    ServerProcess::start(BIN, &args)
}

/// Runs one CLI command against `addr`, which must succeed; its stdout, trimmed.
fn cli(addr: &str, args: &[&str]) -> String {
    ampd_tests::server_process::cli(BIN, addr, args)
}

/// `ampd on ...` in the background, its stdout lines arriving on the channel.
struct On {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl On {
    fn start(addr: &str, args: &[&str]) -> On {
        let mut child = Command::new(BIN)
            .arg("on")
            .args(args)
            .env("AMPD_ADDR", addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ampd on");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        On { child, lines }
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("an event line within 10 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }
}

impl Drop for On {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parts of an event line a test can know: name, key, value, previous value.
fn shape(e: &Value) -> Value {
    json!([
        e["name"],
        e["item"]["key"],
        e["item"]["value"],
        e["previous"]["value"]
    ])
}

#[test]
fn events_print_as_json_lines_and_survive_a_server_restart() {
    let addr = format!("127.0.0.1:{}", free_port());
    let server = serve(&addr);
    let on = On::start(&addr, &["mailer", "*:users:*"]);
    // `on` subscribes as it starts; a write before that would not be its to see.
    std::thread::sleep(Duration::from_millis(300));
    cli(&addr, &["set", "users:ann", r#"{"n": 1}"#]);
    cli(&addr, &["set", "other", "1"]);
    cli(&addr, &["set", "users:ann", r#"{"n": 2}"#]);
    cli(&addr, &["remove", "users:ann"]);
    assert_eq!(
        shape(&on.next()),
        json!(["created", "users:ann", {"n": 1}, null])
    );
    assert_eq!(
        shape(&on.next()),
        json!(["updated", "users:ann", {"n": 2}, {"n": 1}])
    );
    assert_eq!(
        shape(&on.next()),
        json!(["deleted", "users:ann", {"n": 2}, {"n": 2}])
    );

    // The server dies (SIGKILL) and comes back on the same address: `on` reconnects,
    // subscribes again, and prints what is committed from then on.
    server.stop_with("KILL");
    let server = serve(&addr);
    let mut seen = None;
    for i in 0..50 {
        cli(&addr, &["set", &format!("users:u{i}"), &i.to_string()]);
        if let Ok(line) = on.lines.recv_timeout(Duration::from_millis(200)) {
            seen = Some(serde_json::from_str::<Value>(&line).expect("JSON"));
            break;
        }
    }
    let e = seen.expect("an event after the restart");
    assert_eq!(e["name"], json!("created"));
    assert!(e["item"]["key"].as_str().unwrap().starts_with("users:u"));
    drop(server);
}

#[test]
fn exec_runs_a_command_per_event_and_its_failures_are_retried() {
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = serve(&addr);
    let dir = ampd_tests::temp_dir("cli-on-exec");
    std::fs::create_dir_all(&dir).unwrap();
    let count = dir.join("count");
    let out = dir.join("out");
    // Fails twice, then appends the event to `out`.
    let script = format!(
        "c=$(cat {count} 2>/dev/null || echo 0); echo $((c+1)) > {count}; [ $c -ge 2 ] && cat >> {out}",
        count = count.display(),
        out = out.display()
    );
    let _on = On::start(&addr, &["hook", "created", "--exec", &script]);
    std::thread::sleep(Duration::from_millis(300));
    cli(&addr, &["set", "ns:k", r#""v""#]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the event never got through"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = std::fs::read_to_string(&out).unwrap();
    let e: Value = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(shape(&e), json!(["created", "ns:k", "v", null]));
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_malformed_filter_exits_with_invalid_query() {
    let out = Command::new(BIN)
        .args(["on", "x", "made:up"])
        .env("AMPD_ADDR", "127.0.0.1:1")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("invalid_query: event filter \"made:up\""),
        "{stderr}"
    );
}

/// A command that always fails: the event is retried until the horizon, then
/// dead-lettered; `ampd events dead-letters` lists it, and `--replay` delivers it to the
/// subscription's next client.
#[test]
fn dead_letters_are_listed_and_replayed_from_the_cli() {
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = ServerProcess::start(
        BIN,
        &[
            "--addr",
            &addr,
            "--in-memory",
            "--shards",
            "1",
            "--event-retry-first",
            "20ms",
            "--event-retry-max",
            "40ms",
            "--event-retry-for",
            "300ms",
        ],
    );
    let failing = On::start(&addr, &["hook", "created", "--exec", "exit 3"]);
    std::thread::sleep(Duration::from_millis(300));
    cli(&addr, &["set", "ns:k", "1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let listed: Value =
            serde_json::from_str(&cli(&addr, &["events", "dead-letters", "hook"])).unwrap();
        if listed.as_array().is_some_and(|a| !a.is_empty()) {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert_eq!(
        shape(&dead[0]["event"]),
        json!(["created", "ns:k", 1, null])
    );
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{dead}"
    );
    assert!(dead[0]["attempts"].as_u64().unwrap() >= 4, "{dead}");
    drop(failing);

    let printing = On::start(&addr, &["hook", "created"]);
    std::thread::sleep(Duration::from_millis(300));
    let replayed: Value =
        serde_json::from_str(&cli(&addr, &["events", "dead-letters", "hook", "--replay"])).unwrap();
    assert_eq!(replayed.as_array().unwrap().len(), 1);
    assert_eq!(shape(&printing.next()), json!(["created", "ns:k", 1, null]));
    assert_eq!(cli(&addr, &["events", "dead-letters", "hook"]).trim(), "[]");
    let out = Command::new(BIN)
        .args(["events", "dead-letters", "nobody"])
        .env("AMPD_ADDR", &addr)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("invalid_query: no subscription named \"nobody\""));

    // Removed, the subscription is gone (its dead letters with it); a second remove
    // finds nothing.
    drop(printing);
    assert_eq!(cli(&addr, &["events", "remove", "hook"]).trim(), "true");
    assert_eq!(cli(&addr, &["events", "remove", "hook"]).trim(), "false");
    let out = Command::new(BIN)
        .args(["events", "dead-letters", "hook"])
        .env("AMPD_ADDR", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
