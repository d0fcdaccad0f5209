//! The server's claim on its address (`ampd_rt::net::claim`).
//!
//! Guards against a second server that binds a port another one listens on (its
//! listeners share the port with `SO_REUSEPORT`, so the kernel would let it in and
//! hand it half the connections) and against a server restarted right after a SIGKILL
//! that joins the dead server's listener, which lingers for milliseconds while the
//! kernel tears the dead server's ring down and then resets the connections it took.

use ampd_tests::server_process::ServerProcess;
use ampd_wire::client::{Client, Got};
use ampd_wire::{QueryOptions, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ampd");

#[test]
fn a_second_server_on_a_busy_port_is_refused() {
    let first = ServerProcess::start(BIN, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let addr = first.addr().to_owned();
    let failure = match ServerProcess::try_start(BIN, &["--addr", &addr, "--in-memory"]) {
        Ok(second) => panic!("a second server started on {}", second.addr()),
        Err(failure) => failure,
    };
    assert!(
        failure.status.is_some_and(|s| !s.success()),
        "the second server must exit with an error: {failure}"
    );
    assert!(
        failure
            .stderr
            .contains(&format!("cannot listen on {addr}: Address already in use")),
        "{failure}"
    );
    drop(first);
}

#[tokio::test]
async fn a_server_restarted_after_a_kill_serves_every_connection() {
    let first = ServerProcess::start(BIN, &["--addr", "127.0.0.1:0", "--in-memory"]);
    let addr = first.addr().to_owned();
    let mut server = first;
    for round in 0..20 {
        // A connection open at the kill keeps the dead server's ring (and listener)
        // busy a little longer.
        let held = Client::connect(addr.clone()).await.expect("connect");
        server.stop_with("KILL");
        drop(held);
        server = ServerProcess::start(BIN, &["--addr", &addr, "--in-memory"]);
        for n in 0..20 {
            let client = Client::connect(addr.clone())
                .await
                .unwrap_or_else(|e| panic!("round {round}, connection {n}: {e}"));
            let got = client.get("absent", QueryOptions::default()).await;
            assert!(
                matches!(got, Ok(Got::Value(Value::Null))),
                "round {round}, connection {n}: {got:?}"
            );
        }
    }
    drop(server);
}
