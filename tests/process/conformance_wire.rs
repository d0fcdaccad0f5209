//! Conformance suite over the wire: every case of `ampd_tests::conformance` — the same
//! cases, unchanged, that `tests/tests/conformance.rs` runs on the embedded engine —
//! sent through the Rust client to a real `ampd serve --in-memory --shards 2`, one
//! fresh server per case.
//!
//! It guards against the network path changing what a user sees: a value re-encoded on
//! the way (an integer that comes back as a float, a lost `null`, reordered object
//! fields), a page that gains or loses `lastKey` or a field, metadata that differs from
//! the embedded item's, an error code or message that is lost or replaced by
//! `internal`, a limit checked differently by the codec than by the engine, and
//! pipelined requests of one connection that do not take effect in the order they were
//! sent. Results must be exactly those of the embedded engine: the suite asserts exact
//! JSON.

mod wire {
    ampd_tests::conformance_suite!(
        ampd_tests::remote::Remote::serve(
            env!("CARGO_BIN_EXE_ampd"),
            &["--addr", "127.0.0.1:0", "--in-memory", "--shards", "2"],
        )
        .await
    );
}
