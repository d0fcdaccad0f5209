//! The load generator against a real server, briefly: `ampd-loadgen` drives `ampd serve`
//! for 10 seconds at a fixed rate with the default mix (get, set, add, range, label) on
//! a preloaded key space, and must finish with zero errors and a JSON report whose
//! counts add up. Guards against a generator (or a server) that breaks under the
//! benchmark's own workload; speed is measured elsewhere (`benches/compare-redis.sh`).

use ampd_tests::server_process::ServerProcess;
use serde_json::Value;
use std::process::Command;

/// The generator is a binary of another package of this workspace: cargo builds it
/// for `cargo build`, not for the tests of this package, so build it when it is
/// missing (cargo lets go of the build directory while tests run).
fn loadgen_binary() -> std::path::PathBuf {
    let ampd = std::path::Path::new(env!("CARGO_BIN_EXE_ampd"));
    let loadgen = ampd.with_file_name("ampd-loadgen");
    if !loadgen.exists() {
        let release = ampd
            .parent()
            .is_some_and(|dir| dir.file_name().is_some_and(|n| n == "release"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "ampd-loadgen", "--bin", "ampd-loadgen"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building ampd-loadgen failed: {status:?}");
    }
    assert!(loadgen.exists(), "{} is missing", loadgen.display());
    loadgen
}

#[test]
fn loadgen_runs_ten_seconds_against_a_server_without_errors() {
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_ampd"),
        &["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"],
    );
    let loadgen = loadgen_binary();
    let pid = server.pid().to_string();
    let out = Command::new(&loadgen)
        .args([
            "--addr",
            server.addr(),
            "--connections",
            "8",
            "--pipeline",
            "4",
        ])
        .args(["--rate", "2000", "--duration", "10s", "--warmup", "1s"])
        .args([
            "--keys",
            "10000",
            "--preload",
            "--server-pid",
            &pid,
            "--json",
        ])
        .output()
        .expect("the generator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {stdout}"));
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["lost_connections"], 0, "{report}");
    let ops = report["ops"].as_u64().expect("ops");
    assert!(ops >= 15_000, "{ops} ops in 10 s at 2,000/s");
    let per_op: u64 = report["per_op"]
        .as_object()
        .expect("per_op")
        .values()
        .map(|o| o["ops"].as_u64().expect("ops of an op"))
        .sum();
    assert_eq!(per_op, ops, "per-op counts add up: {report}");
    for op in ["get", "set", "add", "range", "label"] {
        assert!(
            report["per_op"][op]["ops"].as_u64() > Some(0),
            "{op}: {report}"
        );
    }
    drop(server);
}
