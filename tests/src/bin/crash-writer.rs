//! The process the crash-loop test kills: it opens the engine on a data directory with
//! `fsync always`, then writes one item at a time forever, printing `ack N` after each
//! write is acknowledged. Write `N` sets `w:{N % 64}` to `N`.
//!
//! Usage: `crash-writer DATA_DIR FIRST_N`

use ampd_engine::{Config, Db, FsyncPolicy, SetOptions};
use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(first)) = (args.next(), args.next()) else {
        eprintln!("usage: crash-writer DATA_DIR FIRST_N");
        std::process::exit(2);
    };
    let first: u64 = first.parse().expect("FIRST_N is a number");
    let db = Db::open(Config {
        shards: 2,
        pin: false,
        data_dir: Some(dir.into()),
        fsync: FsyncPolicy::Always,
        ..Config::default()
    })
    .expect("the engine opens");
    let mut out = std::io::stdout().lock();
    futures::executor::block_on(async {
        for n in first.. {
            db.set(&format!("w:{}", n % 64), n.into(), &SetOptions::default())
                .await
                .expect("a write succeeds");
            writeln!(out, "ack {n}").expect("stdout");
            out.flush().expect("stdout");
        }
    });
}
