//! `ampd repl` on a stopped server's data folder, as a user reaches for it: serve,
//! write through the CLI, stop the server, open the REPL on the same `--data-dir`,
//! and read the values back, in the default environment and in a named one.
//!
//! Guards against the REPL opening a database of its own beside the server's (it once
//! opened `ampd-data` itself while the server kept environment `dev` in
//! `ampd-data/env/dev`, so `get` answered `null` for what the server had stored), and
//! against a REPL that cannot reach an environment other than `dev`.

use ampd_tests::server_process::ServerProcess;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs one CLI command against `addr`, which must succeed; its stdout, trimmed.
fn cli(addr: &str, args: &[&str]) -> String {
    ampd_tests::server_process::cli(BIN, addr, args)
}

/// Runs `ampd repl ARGS` with `input` as its commands.
fn repl(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("repl")
        .args(args)
        .env_remove("AMPD_ENV")
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
        .expect("the REPL reads its input");
    child.wait_with_output().expect("the REPL ends")
}

#[test]
fn the_repl_reads_what_the_server_stored() {
    let dir = ampd_tests::temp_dir("cli-repl");
    let dir_arg = dir.to_str().expect("a UTF-8 temp path");
    let server = ServerProcess::start(
        BIN,
        &[
            "--addr",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--data-dir",
            dir_arg,
            "--env",
            "dev",
            "--env",
            "staging",
        ],
    );
    let addr = server.addr().to_owned();
    assert_eq!(
        cli(
            &addr,
            &["set", "users:ann", r#"{"age":30}"#, "--label1", "team:a"]
        ),
        r#"{"age":30}"#
    );
    assert_eq!(cli(&addr, &["add", "visits", "2"]), "2");
    assert_eq!(
        cli(
            &addr,
            &["--env", "staging", "set", "users:ann", "\"staging\""]
        ),
        r#""staging""#
    );
    assert!(server.stop().success());

    // The default environment, `dev`, from the same --data-dir the server was given.
    let out = repl(
        &["--data-dir", dir_arg],
        "get users:ann\nget visits\nget team:* --label label1\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        [
            r#"{"age":30}"#,
            "2",
            r#"{"items":[{"key":"users:ann","value":{"age":30}}]}"#
        ]
    );
    // Writes made in the REPL are the server's to see at its next start.
    let out = repl(
        &["--data-dir", dir_arg, "--env", "staging"],
        "get users:ann\nset users:bob 7\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().next(), Some(r#""staging""#));

    let server = ServerProcess::start(
        BIN,
        &[
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir_arg,
            "--env",
            "dev",
            "--env",
            "staging",
        ],
    );
    let addr = server.addr().to_owned();
    assert_eq!(cli(&addr, &["--env", "staging", "get", "users:bob"]), "7");
    assert_eq!(cli(&addr, &["get", "users:bob"]), "null");
    assert!(server.stop().success());
    // Nothing beside the environments' folders: the REPL made no database of its own.
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .expect("the data folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    top.sort();
    assert_eq!(top, ["env"]);
    let _ = std::fs::remove_dir_all(&dir);
}
