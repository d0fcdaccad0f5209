//! Conformance suite, embedded: every case of `ampd_tests::conformance` (one per rule
//! of SPEC.md and per example of the seed docs, each asserting the exact result a user
//! of the API sees — values, item order, `lastKey`, metadata and error codes) run
//! against the embedded engine with 2 shards, so simple keys and label entries are
//! merged across shards.
//!
//! It guards against the engine drifting from the behaviour contract: a key that is not
//! trimmed or a limit that is off by one, an update that merges deeply or drops labels,
//! an integer that comes back as a float, a counter that overflows silently, a scan that
//! leaks another namespace, skips or repeats an item across shards or pages, a label
//! index that lags a write, an expired item that is still returned, and a refused
//! request that changes something anyway. The same cases run over the network against
//! `ampd serve` in `tests/process/conformance_wire.rs`. A small section at the end checks
//! the embedded `Db::next_page` helper directly.

use ampd_engine::{Got, Page};
use ampd_tests::conformance::{limit, ok, opts, put_keys, q, rev};
use ampd_tests::{Api, Embedded};
use serde_json::json;

// ---- Db::next_page (embedded only) ---------------------------------------------------
//
// The seed's `result.next()` helper is `Db::next_page` in the embedded engine; it is
// not part of `Api` (over the network the client offers its own), so these cases take
// the embedded backend itself.

#[track_caller]
fn page(got: Got) -> Page {
    match got {
        Got::Page(p) => p,
        Got::Item(i) => panic!("expected a page, got one item {i:?}"),
    }
}

/// Follows `next_page` from `first` to the end; returns every key in order.
fn follow(api: &Embedded, first: Page, pages_max: usize) -> Vec<String> {
    let mut out: Vec<String> = first.items.iter().map(|i| i.key().to_owned()).collect();
    let mut current = first;
    let mut pages = 1;
    while let Some(next) = ok(api.db.next_page(&current)) {
        pages += 1;
        assert!(pages <= pages_max, "more than {pages_max} pages: {out:?}");
        out.extend(next.items.iter().map(|i| i.key().to_owned()));
        current = next;
    }
    assert_eq!(current.last_key, None, "the last page has no lastKey");
    out
}

/// Seed: "To paginate through all items using next()" — `next_page` keeps the
/// pattern and options (limit, reverse) and walks every item once; a page without
/// `lastKey` has no next page.
async fn next_page_walks_key_pages(api: &Embedded) {
    let names: Vec<String> = (0..11).map(|i| format!("foo:{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    put_keys(api, &refs).await;
    put_keys(api, &["foo", "fop:1"]).await;
    let first = page(ok(api.db.get("foo:*", &limit(3))));
    assert_eq!(first.last_key.as_deref(), Some("foo:02"));
    assert_eq!(follow(api, first, 10), names);
    let first = page(ok(api.db.get("foo:*", &rev(limit(4)))));
    let mut r = names.clone();
    r.reverse();
    assert_eq!(follow(api, first, 10), r);
    let first = page(ok(api.db.get("foo:>04", &limit(2))));
    assert_eq!(follow(api, first, 10), names[5..]);
    let whole = page(ok(api.db.get("foo:*", &q())));
    assert_eq!(whole.items.len(), 11);
    assert_eq!(ok(api.db.next_page(&whole)), None);
}

/// `next_page` on label pages passes the label cursor back unchanged.
async fn next_page_walks_label_pages(api: &Embedded) {
    let mut expected = Vec::new();
    for i in 0..9 {
        let (k, l) = (format!("k{i}"), format!("v{}", i % 3));
        ok(api.set(&k, json!(i), opts().label(1, l.clone())).await);
        expected.push((l, k));
    }
    expected.sort();
    let order: Vec<String> = expected.into_iter().map(|(_, k)| k).collect();
    let first = ok(api.db.get_by_label("label1", "*", &limit(2)));
    assert!(first.last_key.is_some());
    assert_eq!(follow(api, first, 10), order);
    let first = ok(api.db.get_by_label("label1", "*", &rev(limit(4))));
    let mut r = order.clone();
    r.reverse();
    assert_eq!(follow(api, first, 10), r);
}

// ---- suites --------------------------------------------------------------------------

mod embedded {
    ampd_tests::conformance_suite!(ampd_tests::Embedded::open(2));

    // The embedded engine's `next()` helper (not part of `Api`).

    /// Runs an embedded-only case on a fresh 2-shard engine.
    fn run(case: impl AsyncFnOnce(&super::Embedded)) {
        ampd_tests::block_on(async { case(&super::Embedded::open(2)).await });
    }

    #[test]
    fn next_page_walks_key_pages() {
        run(super::next_page_walks_key_pages);
    }

    #[test]
    fn next_page_walks_label_pages() {
        run(super::next_page_walks_label_pages);
    }
}
