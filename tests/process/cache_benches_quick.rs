//! The cache tier's bench binaries, `cache-latency` and `cache-rss`, in their `--quick`
//! mode against the real server and generator: each must run to its end, find its
//! phases as meant (the latency bench exits 1 when its below-the-budget phase evicted
//! or its evicting phase did not; the RSS bench when nothing was evicted), and print
//! its table and every target with a verdict, met or missed — never "not measured",
//! which is what a figure gone missing (a renamed field of the generator's JSON or of
//! `stats`) turns into. Guards against a bench broken by a change elsewhere, which
//! would otherwise show only when someone runs it. Whether a target is met is the
//! benchmark's business on a quiet machine: no timing is asserted here.

use ampd_tests::server_process::build_beside;
use std::path::PathBuf;
use std::process::Command;

const AMPD: &str = env!("CARGO_BIN_EXE_ampd");

/// The folder of the generator and the bench binaries, built once per test binary.
fn binaries() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_beside(AMPD, "ampd-loadgen", &["ampd-loadgen"]);
            build_beside(AMPD, "ampd-benches", &["cache-latency", "cache-rss"])
        })
        .clone()
}

/// Runs bench `name --quick` with this build's binaries; its stdout, once it has
/// exited with 0.
fn quick(name: &str) -> String {
    let dir = binaries();
    let out = Command::new(dir.join(name))
        .arg("--quick")
        .arg("--ampd")
        .arg(AMPD)
        .arg("--loadgen")
        .arg(dir.join("ampd-loadgen"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} --quick: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The rows of the targets table (after its header), each with a verdict.
fn verdicts(stdout: &str) -> Vec<&str> {
    let table = stdout
        .split_once("| target | measured | goal | met? |")
        .unwrap_or_else(|| panic!("no targets table: {stdout}"))
        .1;
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let verdict = row.trim_end_matches('|').rsplit('|').next().unwrap_or("");
            verdict.trim()
        })
        .collect()
}

#[test]
fn cache_latency_quick_measures_both_phases_and_judges_every_target() {
    let stdout = quick("cache-latency");
    for row in ["| below |", "| evicting |", "| evicting ÷ below |"] {
        assert!(stdout.contains(row), "{row}: {stdout}");
    }
    let verdicts = verdicts(&stdout);
    assert_eq!(verdicts.len(), 3, "{stdout}");
    assert!(
        verdicts.iter().all(|v| *v == "met" || *v == "missed"),
        "{verdicts:?}: {stdout}"
    );
}

#[test]
fn cache_rss_quick_churns_and_judges_its_target() {
    let stdout = quick("cache-rss");
    assert!(stdout.contains("| B | empty RSS |"), "{stdout}");
    let verdicts = verdicts(&stdout);
    assert_eq!(verdicts.len(), 1, "{stdout}");
    assert!(
        verdicts[0] == "met" || verdicts[0] == "missed",
        "{verdicts:?}: {stdout}"
    );
}
