//! The process the crash-loop test kills: it opens the engine on a data directory with
//! the crash loop's configuration (`ampd_tests::crash_workload::config`: `fsync always`,
//! small WAL segments and snapshot thresholds), then makes writes `FIRST_N, FIRST_N + 1,
//! ...` of `ampd_tests::crash_workload` one at a time forever, printing `ack N` after
//! write `N` is acknowledged.
//!
//! With `cache` after them, the cache tier's workload instead
//! (`crash_workload::cache_config` and `cache_write`).
//!
//! Usage: `crash-writer DATA_DIR FIRST_N [cache]`

use ampd_engine::Db;
use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(first)) = (args.next(), args.next()) else {
        eprintln!("usage: crash-writer DATA_DIR FIRST_N");
        std::process::exit(2);
    };
    let first: u64 = first.parse().expect("FIRST_N is a number");
    let cache = args.next().as_deref() == Some("cache");
    let config = if cache {
        ampd_tests::crash_workload::cache_config(dir.as_ref())
    } else {
        ampd_tests::crash_workload::config(dir.as_ref())
    };
    let db = Db::open(config).expect("the engine opens");
    let mut out = std::io::stdout().lock();
    futures::executor::block_on(async {
        for n in first.. {
            let written = if cache {
                ampd_tests::crash_workload::cache_write(&db, n).await
            } else {
                ampd_tests::crash_workload::write(&db, n).await
            };
            written.expect("a write succeeds");
            writeln!(out, "ack {n}").expect("stdout");
            out.flush().expect("stdout");
        }
    });
}
