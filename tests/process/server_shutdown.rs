//! A clean shutdown under load: `ampd serve` on a data folder (`fsync always`) gets
//! SIGTERM while 16 clients keep writing. It must stop accepting, answer what is in
//! flight, sync, and exit 0; after a restart on the same folder every write that was
//! acknowledged is there.
//!
//! Guards against a shutdown that drops acknowledged writes (answering before the sync,
//! or exiting before the logs are synced), hangs on open connections, or exits with an
//! error.

use ampd_tests::server_process::ServerProcess;
use ampd_wire::client::{Client, Got};
use ampd_wire::SetOptions;
use serde_json::json;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ampd");
const WRITERS: usize = 16;

#[test]
fn sigterm_under_load_keeps_every_acknowledged_write() {
    let dir = ampd_tests::temp_dir("shutdown");
    let dir_arg = dir.to_str().expect("a UTF-8 temp path").to_owned();
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--data-dir",
        &dir_arg,
    ];
    let server = ServerProcess::start(BIN, &args);
    let addr = server.addr().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let acked: Vec<Vec<u64>> = rt.block_on(async {
        let client = Client::connect(&addr).await.expect("connect");
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for n in 0u64.. {
                        let key = format!("w{w}:{n:06}");
                        match client.set(&key, json!(n), SetOptions::default()).await {
                            Ok(stored) => {
                                assert_eq!(stored, json!(n));
                                acked.push(n);
                            }
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stopping = tokio::task::spawn_blocking(move || {
            let stderr = server.stderr();
            (server.stop(), stderr)
        });
        let mut acked = Vec::new();
        for w in writers {
            acked.push(w.await.expect("writer"));
        }
        let (status, stderr) = stopping.await.expect("stopper");
        assert!(status.success(), "exit {status:?}: {stderr}");
        acked
    });
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total > 100, "only {total} writes before the signal");

    let server = ServerProcess::start(BIN, &args);
    let addr = server.addr().to_owned();
    rt.block_on(async {
        let client = Client::connect(&addr).await.expect("reconnect");
        for (w, ns) in acked.iter().enumerate() {
            for &n in ns {
                let got = client
                    .get(&format!("w{w}:{n:06}"), Default::default())
                    .await
                    .expect("get");
                match got {
                    Got::Value(v) => assert_eq!(v, json!(n), "w{w}:{n} lost"),
                    other => panic!("{other:?}"),
                }
            }
        }
    });
    eprintln!("{total} acknowledged writes, all there after the restart");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
