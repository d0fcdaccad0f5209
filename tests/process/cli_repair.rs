//! `ampd repair` as an operator uses it: a data folder whose WAL is damaged in the
//! middle refuses to open, naming the file and the byte offset; `ampd repair` cuts the
//! log there and says so; the folder then opens with exactly the writes before the
//! damage. Guards against a repair that is silent, cuts the wrong place, or is needed
//! twice.

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `ampd ARGS`, feeding `stdin`.
fn ampd(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ampd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ampd starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("ampd reads its input");
    child.wait_with_output().expect("ampd ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repl(dir: &Path, input: &str) -> Output {
    let dir = dir.to_str().expect("a UTF-8 temp path");
    ampd(&["repl", "--shards", "1", "--data-dir", dir], input)
}

#[test]
fn repair_cuts_a_damaged_log_where_the_refusal_said() {
    let dir = ampd_tests::temp_dir("cli-repair");
    let writes: String = (0..200).map(|i| format!("set w:{i:03} {i}\n")).collect();
    let out = repl(&dir, &writes);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 200);

    // The REPL keeps environment `dev` where the server does.
    let segment = ampd_tests::busiest_segment(&dir.join("env").join("dev"));
    let name = segment
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned();
    let mut bytes = std::fs::read(&segment).expect("the segment");
    // The middle of its records (zeros, free space, follow them).
    let middle = ampd_tests::log_len(&bytes) / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("the damaged segment");

    let refused = repl(&dir, "get w:000\n");
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(
        why.contains(&name) && why.contains("corrupt at byte"),
        "the refusal names the file and offset: {why}"
    );
    assert!(refused.stdout.is_empty(), "nothing was served");

    let dir_arg = dir.to_str().expect("a UTF-8 temp path");
    let repaired = ampd(&["repair", "--data-dir", dir_arg], "");
    assert!(repaired.status.success(), "{}", text(&repaired.stderr));
    let said = text(&repaired.stdout);
    assert!(
        said.contains(&name) && said.contains("cut at byte"),
        "repair says what it cut: {said}"
    );
    let again = ampd(&["repair", "--data-dir", dir_arg], "");
    assert!(
        text(&again.stdout).contains("nothing to repair"),
        "{}",
        text(&again.stdout)
    );

    let out = repl(&dir, "get w:* --limit 1000\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON line");
    let items = page["items"].as_array().expect("items");
    // Everything before the damaged record, in order, and nothing after it.
    assert!(
        !items.is_empty() && items.len() < 200,
        "{} items",
        items.len()
    );
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item, &json!({"key": format!("w:{i:03}"), "value": i}));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
