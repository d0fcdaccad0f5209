//! The CLI as scripts use it: every form of `ampd set|get|add|remove` against one
//! `ampd serve`, asserting the exact line of JSON on stdout and exit code 0, and for a
//! refusal exit code 1, nothing on stdout and exactly one line `CODE: message` on
//! stderr.
//!
//! It guards against a CLI that parses a form differently from its help (a flag taken
//! as a value, a JSON value taken as text or the other way round, a label or ttl flag
//! that is dropped), that prints something other than the API's result (a reformatted
//! number, a page without `lastKey`, an item without its metadata), that reports a
//! refusal in another shape or with exit code 0, that ignores `AMPD_ADDR`, `AMPD_ENV` or
//! `AMPD_TOKEN`, or that hangs or succeeds when no server listens.

use ampd_tests::conformance::items;
use ampd_tests::server_process::ServerProcess;
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

/// Runs `ampd ARGS` with exactly `vars` of the CLI's environment variables set.
fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("AMPD_ADDR")
        .env_remove("AMPD_ENV")
        .env_remove("AMPD_TOKEN");
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("ampd runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one line of JSON of a successful command.
#[track_caller]
fn json_line(out: &Output, what: &str) -> Value {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: exit status; stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(stderr.is_empty(), "{what}: stderr {stderr:?}");
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{what}: not one line: {stdout:?}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: {stdout:?}: {e}"))
}

/// The message of a refusal with `code`: exit code 1, nothing on stdout, and on stderr
/// exactly one line `code: message` with a message.
#[track_caller]
fn refusal(out: &Output, code: &str, what: &str) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status; stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(stdout.is_empty(), "{what}: stdout {stdout:?}");
    assert!(
        stderr.ends_with('\n') && stderr.lines().count() == 1,
        "{what}: not one line: {stderr:?}"
    );
    let message = stderr
        .trim_end()
        .strip_prefix(&format!("{code}: "))
        .unwrap_or_else(|| panic!("{what}: expected `{code}: message`, got {stderr:?}"));
    assert!(!message.trim().is_empty(), "{what}: no message: {stderr:?}");
    message.to_owned()
}

/// The CLI pointed at one server with `--addr`.
struct Cli {
    addr: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--addr", self.addr.as_str()];
        all.extend_from_slice(args);
        run(&all, &[])
    }

    /// The result of a command that must succeed.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> Value {
        json_line(&self.run(args), &format!("ampd {args:?}"))
    }

    /// The exact stdout of a command that must succeed.
    #[track_caller]
    fn stdout(&self, args: &[&str]) -> String {
        let out = self.run(args);
        json_line(&out, &format!("ampd {args:?}"));
        text(&out.stdout)
    }

    /// The message of a command that must be refused with `code`.
    #[track_caller]
    fn refused(&self, args: &[&str], code: &str) -> String {
        refusal(&self.run(args), code, &format!("ampd {args:?}"))
    }
}

fn now_s() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_secs()).expect("seconds fit i64")
}

/// A `--meta` item without `created` and `modified`, after checking both are there,
/// RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`), and in order.
#[track_caller]
fn untimed(item: &Value) -> Value {
    let mut m = item
        .as_object()
        .unwrap_or_else(|| panic!("not an item: {item}"))
        .clone();
    let mut times = Vec::new();
    for name in ["created", "modified"] {
        let t = m
            .remove(name)
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in {item}"));
        // Panics unless it is YYYY-MM-DDTHH:MM:SS.mmmZ.
        ampd_tests::conformance::rfc3339_ms(&t);
        times.push(t);
    }
    assert!(times[0] <= times[1], "created after modified: {item}");
    Value::Object(m)
}

/// One server with a tokenless `dev` and a `prod` with token `tok1`; every form of the
/// CLI against it, one section (and one namespace) per kind of command.
#[test]
fn every_cli_form_against_one_server() {
    let server = ServerProcess::start(
        BIN,
        &[
            "--addr",
            "127.0.0.1:0",
            "--in-memory",
            "--shards",
            "2",
            "--env",
            "dev",
            "--env",
            "prod=tok1",
        ],
    );
    let cli = Cli {
        addr: server.addr().to_owned(),
    };
    set_forms(&cli);
    set_meta_and_ttl(&cli);
    labels(&cli);
    batch_set(&cli);
    get_patterns_and_paging(&cli);
    batch_get(&cli);
    add_forms(&cli);
    remove_forms(&cli);
    refusals(&cli);
    environment_variables(&cli);
}

/// `set KEY JSON [--overwrite]`: JSON values as given, text that is not JSON as a
/// string; an update merges objects, `--overwrite` replaces.
fn set_forms(cli: &Cli) {
    assert_eq!(
        cli.ok(&["set", "set:obj", r#"{"a":1,"b":[1,2]}"#]),
        json!({"a": 1, "b": [1, 2]})
    );
    assert_eq!(
        cli.ok(&["set", "set:obj", r#"{"b":2}"#]),
        json!({"a": 1, "b": 2})
    );
    assert_eq!(
        cli.ok(&["set", "set:obj", r#"{"c":3}"#, "--overwrite"]),
        json!({"c": 3})
    );
    assert_eq!(cli.ok(&["get", "set:obj"]), json!({"c": 3}));
    // Exact output: integers and floats print as they are stored.
    for (value, printed) in [
        ("42", "42\n"),
        ("1.0", "1.0\n"),
        ("9223372036854775807", "9223372036854775807\n"),
        (r#""42""#, "\"42\"\n"),
        ("true", "true\n"),
        ("null", "null\n"),
        (r#"[1,"x",{"y":null}]"#, "[1,\"x\",{\"y\":null}]\n"),
        // Not JSON: taken as a string.
        ("hello world", "\"hello world\"\n"),
        ("{not json", "\"{not json\"\n"),
        ("", "\"\"\n"),
        ("it's \"quoted\"", "\"it's \\\"quoted\\\"\"\n"),
    ] {
        assert_eq!(
            cli.stdout(&["set", "set:v", value, "--overwrite"]),
            printed,
            "set {value:?}"
        );
        assert_eq!(
            cli.stdout(&["get", "set:v"]),
            printed,
            "get after {value:?}"
        );
    }
    // A value that starts with `-` comes after `--`.
    assert_eq!(cli.stdout(&["set", "set:neg", "--", "-5"]), "-5\n");
    // Keys are trimmed and may hold spaces.
    assert_eq!(cli.ok(&["set", "  set:a b  ", "1"]), json!(1));
    assert_eq!(cli.ok(&["get", "set:a b"]), json!(1));
}

/// `--meta` returns the item (`key`, `value`, `created`, `modified`, and `ttl` and
/// labels when set); `--ttl` takes seconds, an epoch second, an ISO date or `null`.
fn set_meta_and_ttl(cli: &Cli) {
    let item = cli.ok(&["set", "meta:a", "v", "--meta"]);
    assert_eq!(untimed(&item), json!({"key": "meta:a", "value": "v"}));
    assert_eq!(cli.ok(&["get", "meta:a", "--meta"]), item);

    let before = now_s();
    let item = cli.ok(&["set", "meta:a", "w", "--ttl", "3600", "--meta"]);
    let after = now_s();
    let ttl = item["ttl"].as_i64().expect("an integer ttl");
    assert!(
        before + 3600 <= ttl && ttl <= after + 3600,
        "ttl {ttl} not now + 3600 ({before}..{after})"
    );
    assert_eq!(
        untimed(&item),
        json!({"key": "meta:a", "value": "w", "ttl": ttl})
    );
    assert_eq!(cli.ok(&["get", "meta:a", "--meta"]), item);
    // An update without --ttl keeps it.
    let kept = cli.ok(&["set", "meta:a", "x", "--meta"]);
    assert_eq!(kept["ttl"], json!(ttl));

    for (ttl, epoch) in [
        ("1893456000", 1_893_456_000),
        ("2030-01-01", 1_893_456_000),
        ("2030-01-01T10:00", 1_893_492_000),
        ("2030-01-01T10:00:00Z", 1_893_492_000),
    ] {
        let item = cli.ok(&["set", "meta:t", "v", "--ttl", ttl, "--meta"]);
        assert_eq!(
            untimed(&item),
            json!({"key": "meta:t", "value": "v", "ttl": epoch}),
            "--ttl {ttl}"
        );
    }
    let cleared = cli.ok(&["set", "meta:t", "v", "--ttl", "null", "--meta"]);
    assert_eq!(untimed(&cleared), json!({"key": "meta:t", "value": "v"}));
    for bad in ["0", "-5", "soon", "2001-01-01"] {
        cli.refused(&["set", "meta:t", "v", "--ttl", bad], "invalid_ttl");
    }
    assert_eq!(
        untimed(&cli.ok(&["get", "meta:t", "--meta"])),
        json!({"key": "meta:t", "value": "v"}),
        "refused ttls changed nothing"
    );
}

/// `--label1` .. `--label5` on `set`, and `get VALUE --label labelN`.
fn labels(cli: &Cli) {
    let item = cli.ok(&[
        "set", "label:a", "v", "--label1", "l1", "--label2", "ns:l2", "--label3", "l3", "--label4",
        "l4", "--label5", "l5", "--meta",
    ]);
    let labelled = json!({
        "key": "label:a", "value": "v",
        "label1": "l1", "label2": "ns:l2", "label3": "l3", "label4": "l4", "label5": "l5",
    });
    assert_eq!(untimed(&item), labelled);
    cli.ok(&["set", "label:b", "w", "--label1", "l0", "--label3", "l3"]);
    for (n, value) in [(1, "l1"), (2, "ns:l2"), (4, "l4"), (5, "l5")] {
        assert_eq!(
            cli.ok(&["get", value, "--label", &format!("label{n}")]),
            items(&[("label:a", json!("v"))]),
            "label{n}"
        );
    }
    // Ordered by label value, then key.
    assert_eq!(
        cli.ok(&["get", "l*", "--label", "label1"]),
        items(&[("label:b", json!("w")), ("label:a", json!("v"))])
    );
    assert_eq!(
        cli.ok(&["get", "l3", "--label", "label3"]),
        items(&[("label:a", json!("v")), ("label:b", json!("w"))])
    );
    // Label values have namespaces like keys.
    assert_eq!(
        cli.ok(&["get", "*", "--label", "label2"]),
        json!({"items": []})
    );
    assert_eq!(
        cli.ok(&["get", "ns:*", "--label", "label2"]),
        items(&[("label:a", json!("v"))])
    );
    // An update keeps the labels; the label query sees the new value and its item.
    cli.ok(&["set", "label:a", "v2"]);
    let page = cli.ok(&["get", "l1", "--label", "label1", "--meta"]);
    let mut expected = labelled.clone();
    expected["value"] = json!("v2");
    assert_eq!(untimed(&page["items"][0]), expected);
    assert_eq!(page.as_object().map(|m| m.len()), Some(1), "{page}");
    // Paging a label query: lastKey is a cursor passed back as --start.
    let first = cli.ok(&["get", "l*", "--label", "label1", "--limit", "1"]);
    let cursor = first["lastKey"].as_str().expect("a cursor").to_owned();
    assert_eq!(first["items"], items(&[("label:b", json!("w"))])["items"]);
    assert_eq!(
        cli.ok(&["get", "l*", "--label", "label1", "--limit", "1", "--start", &cursor]),
        items(&[("label:a", json!("v2"))])
    );
}

/// `set --batch JSON_ARRAY --overwrite [--meta]`.
fn batch_set(cli: &Cli) {
    let batch = r#"[{"key":"batch:b","value":2},
        {"key":"batch:a","value":{"x":1},"ttl":"2030-01-01","label1":"bl"}]"#;
    assert_eq!(
        cli.ok(&["set", "--batch", batch, "--overwrite"]),
        items(&[("batch:b", json!(2)), ("batch:a", json!({"x": 1}))])
    );
    let with_meta = cli.ok(&["set", "--batch", batch, "--overwrite", "--meta"]);
    let entries = with_meta["items"].as_array().expect("items");
    assert_eq!(entries.len(), 2);
    assert_eq!(untimed(&entries[0]), json!({"key": "batch:b", "value": 2}));
    assert_eq!(
        untimed(&entries[1]),
        json!({"key": "batch:a", "value": {"x": 1}, "ttl": 1_893_456_000, "label1": "bl"})
    );
    assert_eq!(
        cli.ok(&["get", "bl", "--label", "label1"]),
        items(&[("batch:a", json!({"x": 1}))])
    );

    let fresh = r#"[{"key":"batch:c","value":3}]"#;
    cli.refused(&["set", "--batch", fresh], "overwrite_required");
    let many: Vec<Value> = (0..26)
        .map(|i| json!({"key": format!("batch:n{i:02}"), "value": i}))
        .collect();
    let many = Value::Array(many).to_string();
    cli.refused(&["set", "--batch", &many, "--overwrite"], "batch_too_large");
    let one_bad = r#"[{"key":"batch:c","value":3},{"key":"batch:*","value":4}]"#;
    cli.refused(&["set", "--batch", one_bad, "--overwrite"], "invalid_key");
    assert_eq!(
        cli.ok(&["get", "batch:*"]),
        items(&[("batch:a", json!({"x": 1})), ("batch:b", json!(2))]),
        "refused batches wrote nothing"
    );
}

/// `get PATTERN [--limit N] [--reverse] [--start K]`: exact keys, prefixes, ranges,
/// and pages walked with `--start lastKey`.
fn get_patterns_and_paging(cli: &Cli) {
    let keys: Vec<String> = (0..7).map(|i| format!("page:k{i}")).collect();
    for k in &keys {
        cli.ok(&["set", k, &format!("\"{k}\"")]);
    }
    let page = |range: std::ops::Range<usize>, rev: bool| -> Vec<Value> {
        let mut v: Vec<Value> = keys[range]
            .iter()
            .map(|k| json!({"key": k, "value": k}))
            .collect();
        if rev {
            v.reverse();
        }
        v
    };
    assert_eq!(cli.ok(&["get", "page:k3"]), json!("page:k3"));
    assert_eq!(cli.stdout(&["get", "page:none"]), "null\n");
    assert_eq!(
        cli.ok(&["get", "page:*"]),
        json!({"items": page(0..7, false)})
    );
    assert_eq!(
        cli.ok(&["get", "page:*", "--limit", "3"]),
        json!({"items": page(0..3, false), "lastKey": "page:k2"})
    );
    assert_eq!(
        cli.ok(&["get", "page:*", "--limit", "3", "--start", "page:k2"]),
        json!({"items": page(3..6, false), "lastKey": "page:k5"})
    );
    assert_eq!(
        cli.ok(&["get", "page:*", "--limit", "3", "--start", "page:k5"]),
        json!({"items": page(6..7, false)})
    );
    assert_eq!(
        cli.ok(&["get", "page:*", "--reverse", "--limit", "4"]),
        json!({"items": page(3..7, true), "lastKey": "page:k3"})
    );
    assert_eq!(
        cli.ok(&[
            "get",
            "page:*",
            "--reverse",
            "--limit",
            "4",
            "--start",
            "page:k3"
        ]),
        json!({"items": page(0..3, true)})
    );
    assert_eq!(
        cli.ok(&["get", "page:>k4"]),
        json!({"items": page(5..7, false)})
    );
    assert_eq!(
        cli.ok(&["get", "page:k1|k3"]),
        json!({"items": page(1..4, false)})
    );
    assert_eq!(
        cli.ok(&["get", "page:<=k1", "--reverse"]),
        json!({"items": page(0..2, true)})
    );
    let with_meta = cli.ok(&["get", "page:k1|k2", "--meta"]);
    let entries = with_meta["items"].as_array().expect("items");
    assert_eq!(entries.len(), 2);
    assert_eq!(
        untimed(&entries[1]),
        json!({"key": "page:k2", "value": "page:k2"})
    );
}

/// `get KEY KEY...`: a batch of exact keys, in request order, absent keys left out.
fn batch_get(cli: &Cli) {
    cli.ok(&["set", "bget:a", "1"]);
    cli.ok(&["set", "bget:b", r#"{"x":2}"#, "--label1", "bg"]);
    cli.ok(&["set", "plain", "3"]);
    assert_eq!(
        cli.ok(&["get", "bget:b", "bget:none", "plain", "bget:a"]),
        items(&[
            ("bget:b", json!({"x": 2})),
            ("plain", json!(3)),
            ("bget:a", json!(1))
        ])
    );
    assert_eq!(cli.ok(&["get", "bget:none", "none"]), json!({"items": []}));
    let with_meta = cli.ok(&["get", "bget:b", "bget:a", "--meta"]);
    assert_eq!(
        with_meta["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(untimed)
            .collect::<Vec<_>>(),
        [
            json!({"key": "bget:b", "value": {"x": 2}, "label1": "bg"}),
            json!({"key": "bget:a", "value": 1}),
        ]
    );
    let many: Vec<String> = (0..26).map(|i| format!("bget:{i}")).collect();
    let mut args = vec!["get"];
    args.extend(many.iter().map(String::as_str));
    cli.refused(&args, "batch_too_large");
    cli.ok(&args[..26]);
    cli.refused(&["get", "bget:a", "bget:*"], "invalid_key");
}

/// `add KEY [FIELD] N [--meta]`.
fn add_forms(cli: &Cli) {
    assert_eq!(cli.stdout(&["add", "add:c", "5"]), "5\n");
    assert_eq!(cli.stdout(&["add", "add:c", "-2"]), "3\n");
    assert_eq!(cli.stdout(&["add", "add:c", "0.5"]), "3.5\n");
    assert_eq!(cli.ok(&["add", "add:o", "f", "3"]), json!({"f": 3}));
    cli.ok(&["set", "add:o", r#"{"g":"text"}"#]);
    assert_eq!(
        cli.ok(&["add", "add:o", "f", "2"]),
        json!({"f": 5, "g": "text"})
    );
    let item = cli.ok(&["add", "--meta", "add:o", "f", "1"]);
    assert_eq!(
        untimed(&item),
        json!({"key": "add:o", "value": {"f": 6, "g": "text"}})
    );
    let item = cli.ok(&["add", "--meta", "add:c", "1"]);
    assert_eq!(untimed(&item), json!({"key": "add:c", "value": 4.5}));

    let message = cli.refused(&["add", "add:c", "abc"], "not_a_number");
    assert!(message.contains("abc"), "{message}");
    cli.refused(&["add", "add:o", "g", "1"], "not_a_number");
    cli.refused(&["add", "add:o", "1"], "not_a_number");
    cli.ok(&["set", "add:max", "9223372036854775807"]);
    cli.refused(&["add", "add:max", "1"], "overflow");
    assert_eq!(
        cli.stdout(&["get", "add:max"]),
        "9223372036854775807\n",
        "a refused add changed nothing"
    );
}

/// `remove KEY [KEY...]`.
fn remove_forms(cli: &Cli) {
    for k in ["rm:a", "rm:b", "rm:c"] {
        cli.ok(&["set", k, "1"]);
    }
    assert_eq!(cli.stdout(&["remove", "rm:a"]), "true\n");
    assert_eq!(cli.stdout(&["remove", "rm:a"]), "false\n");
    assert_eq!(
        cli.ok(&["remove", "rm:c", "rm:a", "rm:b"]),
        json!([true, false, true])
    );
    assert_eq!(cli.ok(&["get", "rm:*"]), json!({"items": []}));
    let many: Vec<String> = (0..26).map(|i| format!("rm:{i}")).collect();
    let mut args = vec!["remove"];
    args.extend(many.iter().map(String::as_str));
    cli.refused(&args, "batch_too_large");
    assert_eq!(cli.ok(&args[..26]), json!(vec![false; 25]));
    cli.refused(&["remove", "rm:*"], "invalid_key");
}

/// Refusals of every class the CLI can meet: `CODE: message` on stderr, exit code 1,
/// and nothing written.
fn refusals(cli: &Cli) {
    let message = cli.refused(&["set", "x*", "1"], "invalid_key");
    assert!(message.contains("x*"), "{message}");
    cli.refused(&["set", "   ", "1"], "invalid_key");
    let long = "k".repeat(257);
    let message = cli.refused(&["set", &long, "1"], "key_too_long");
    assert!(message.contains("257"), "{message}");
    cli.refused(&["set", "ok", "1", "--label1", &long], "key_too_long");
    cli.refused(&["get", "*", "--limit", "0"], "limit_out_of_range");
    cli.refused(&["get", "*", "--limit", "1001"], "limit_out_of_range");
    cli.refused(&["get", "*", "--limit", "-1"], "limit_out_of_range");
    cli.refused(&["get", "*", "--label", "label6"], "invalid_query");
    cli.refused(&["get", "ns:>"], "invalid_query");
    cli.refused(&["set", "ok", r#"{"n":{"$add":"x"}}"#], "not_a_number");
    // No single argument may pass 128 KiB (the kernel's limit), so the item grows past
    // 400 KiB by updates that each add a field of 110,000 bytes.
    let field = "x".repeat(110_000);
    for name in ["a", "b", "c"] {
        cli.ok(&["set", "big", &json!({ name: field }).to_string()]);
    }
    let message = cli.refused(
        &["set", "big", &json!({"d": field}).to_string()],
        "value_too_large",
    );
    assert!(message.contains("409600"), "names the limit: {message}");
    let big = cli.ok(&["get", "big"]);
    assert_eq!(
        big.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
    assert_eq!(
        cli.stdout(&["get", "ok"]),
        "null\n",
        "refusals wrote nothing"
    );
    cli.refused(&["set", "ok"], "invalid_query");
    cli.refused(
        &["--env", "dev", "--env", "prod", "get", "ok"],
        "invalid_query",
    );
}

/// `AMPD_ADDR`, `AMPD_ENV` and `AMPD_TOKEN` instead of the flags; a flag wins over its
/// variable.
fn environment_variables(cli: &Cli) {
    let addr = cli.addr.as_str();
    let prod = [
        ("AMPD_ADDR", addr),
        ("AMPD_ENV", "prod"),
        ("AMPD_TOKEN", "tok1"),
    ];
    assert_eq!(
        json_line(
            &run(&["set", "envk", "p1"], &prod),
            "set in prod by variables"
        ),
        json!("p1")
    );
    assert_eq!(
        json_line(&run(&["get", "envk"], &prod), "get in prod by variables"),
        json!("p1")
    );
    assert_eq!(
        cli.ok(&["--env", "prod", "--token", "tok1", "get", "envk"]),
        json!("p1"),
        "the same environment by flags"
    );
    assert_eq!(
        json_line(&run(&["get", "envk"], &[("AMPD_ADDR", addr)]), "dev"),
        Value::Null,
        "dev does not see prod"
    );
    let out = run(
        &["get", "envk"],
        &[
            ("AMPD_ADDR", addr),
            ("AMPD_ENV", "prod"),
            ("AMPD_TOKEN", "no"),
        ],
    );
    refusal(&out, "unauthorized", "a wrong AMPD_TOKEN");
    let out = run(
        &["get", "envk"],
        &[("AMPD_ADDR", addr), ("AMPD_ENV", "prod")],
    );
    refusal(&out, "unauthorized", "no AMPD_TOKEN");
    let out = run(
        &["get", "envk"],
        &[("AMPD_ADDR", addr), ("AMPD_ENV", "nope")],
    );
    refusal(&out, "unknown_environment", "an unknown AMPD_ENV");
    // Flags win over variables.
    let out = run(
        &[
            "--addr", addr, "--env", "prod", "--token", "tok1", "get", "envk",
        ],
        &[
            ("AMPD_ADDR", "127.0.0.1:1"),
            ("AMPD_ENV", "nope"),
            ("AMPD_TOKEN", "no"),
        ],
    );
    assert_eq!(json_line(&out, "flags over variables"), json!("p1"));
}

/// With no server at the address the CLI fails at once: exit code 1, nothing on
/// stdout, one line on stderr naming the address.
#[test]
fn no_server_listening_is_an_error() {
    // A port that was free a moment ago and that nothing listens on now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    for (args, vars) in [
        (vec!["--addr", addr.as_str(), "get", "k"], vec![]),
        (vec!["set", "k", "1"], vec![("AMPD_ADDR", addr.as_str())]),
    ] {
        let started = std::time::Instant::now();
        let out = run(&args, &vars);
        let message = refusal(&out, "internal", &format!("{args:?} {vars:?}"));
        assert!(message.contains(&addr), "names the address: {message}");
        assert!(started.elapsed().as_secs() < 5, "fails at once");
    }
}

/// The documented form `add KEY [FIELD] N [--meta]` with `--meta` last.
#[test]
fn add_takes_meta_after_its_arguments() {
    let server = ServerProcess::start(BIN, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let cli = Cli {
        addr: server.addr().to_owned(),
    };
    let item = cli.ok(&["add", "c", "5", "--meta"]);
    assert_eq!(untimed(&item), json!({"key": "c", "value": 5}));
    let item = cli.ok(&["add", "o", "f", "3", "--meta"]);
    assert_eq!(untimed(&item), json!({"key": "o", "value": {"f": 3}}));
}

/// `set KEY JSON` with a negative number, as `add KEY -1` takes one.
#[test]
fn set_takes_a_negative_number() {
    let server = ServerProcess::start(BIN, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let cli = Cli {
        addr: server.addr().to_owned(),
    };
    assert_eq!(cli.stdout(&["set", "n", "-5"]), "-5\n");
    let item = cli.ok(&["set", "f", "-0.5", "--meta"]);
    assert_eq!(untimed(&item), json!({"key": "f", "value": -0.5}));
}

/// `--labelN null` clears a label; paging options with a batch of keys are refused.
#[test]
fn labels_clear_with_null_and_batch_gets_take_no_paging_options() {
    let server = ServerProcess::start(BIN, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let cli = Cli {
        addr: server.addr().to_owned(),
    };
    cli.ok(&["set", "t:a", "1", "--label1", "g:x", "--label2", "g:y"]);
    let item = cli.ok(&["set", "t:a", "2", "--label1", "null", "--meta"]);
    assert_eq!(
        untimed(&item),
        json!({"key": "t:a", "value": 2, "label2": "g:y"})
    );
    assert_eq!(
        cli.ok(&["get", "g:*", "--label", "label1"]),
        json!({"items": []})
    );
    for option in [
        &["--limit", "5"][..],
        &["--reverse"],
        &["--start", "t:a"],
        &["--label", "label1"],
    ] {
        let mut args = vec!["get", "t:a", "t:b"];
        args.extend_from_slice(option);
        let message = cli.refused(&args, "invalid_query");
        assert!(message.contains("batch"), "{message}");
    }
}

/// A value (or a batch) from standard input (`-`) or a file (`@PATH`): a 400 KiB
/// value passes the OS's 128 KiB cap on one argument this way, and is stored whole.
/// JSON nested deeper than a stored value may be is refused with the limit, not stored
/// as a string.
#[test]
fn large_values_come_from_stdin_or_a_file_and_deep_json_is_refused() {
    use std::io::Write;
    let server = ServerProcess::start(BIN, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let cli = Cli {
        addr: server.addr().to_owned(),
    };
    // Under the item limit (400 KiB) with the key and the encoding's few bytes.
    let big = "x".repeat(400 * 1024 - 64);
    let big_json = format!("{big:?}\n");
    let mut child = Command::new(BIN)
        .args(["--addr", &cli.addr, "set", "big:stdin", "-", "--meta"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ampd runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(big_json.as_bytes())
        .expect("ampd reads stdin");
    let out = child.wait_with_output().expect("ampd ends");
    let item = json_line(&out, "set big:stdin -");
    assert_eq!(untimed(&item), json!({"key": "big:stdin", "value": big}));

    let dir = ampd_tests::temp_dir("cli-value-file");
    std::fs::create_dir_all(&dir).expect("a temp folder");
    let file = dir.join("value.json");
    std::fs::write(&file, r#"{"nested": {"list": [1, 2.5, "three"]}}"#).expect("write");
    let at = format!("@{}", file.display());
    assert_eq!(
        cli.ok(&["set", "doc:file", &at]),
        json!({"nested": {"list": [1, 2.5, "three"]}})
    );
    // Text that is not JSON is a string, as on the command line; a final newline goes.
    std::fs::write(&file, "plain text\n").expect("write");
    assert_eq!(cli.ok(&["set", "doc:text", &at]), json!("plain text"));
    let batch = dir.join("batch.json");
    std::fs::write(
        &batch,
        r#"[{"key": "b:1", "value": 1}, {"key": "b:2", "value": [2]}]"#,
    )
    .expect("write");
    let at_batch = format!("@{}", batch.display());
    assert_eq!(
        cli.ok(&["set", "--batch", &at_batch, "--overwrite"]),
        json!({"items": [{"key": "b:1", "value": 1}, {"key": "b:2", "value": [2]}]})
    );
    let missing = format!("@{}", dir.join("nothing-here").display());
    let message = cli.refused(&["set", "doc:missing", &missing], "invalid_query");
    assert!(message.contains("nothing-here"), "{message}");
    assert_eq!(cli.ok(&["get", "doc:missing"]), Value::Null);

    // Deepest allowed, one deeper (parsed, then measured), and deeper than the parser
    // goes: never stored as a string.
    let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    let max = ampd_wire::limits::VALUE_DEPTH_MAX;
    assert_eq!(
        cli.ok(&["set", "deep:ok", &nested(max)]),
        serde_json::from_str::<Value>(&nested(max)).expect("JSON")
    );
    for levels in [max + 1, 200] {
        let message = cli.refused(&["set", "deep:no", &nested(levels)], "value_too_large");
        assert!(message.contains(&format!("limit {max}")), "{message}");
    }
    assert_eq!(cli.ok(&["get", "deep:no"]), Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
}
