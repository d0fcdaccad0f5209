//! The conformance cases: one per rule of SPEC.md and per example of the seed docs
//! (`seed/ampt-data.txt`), each asserting the exact result a user of the API sees —
//! values, item order, `lastKey`, metadata and error codes.
//!
//! Every case is `pub async fn case(api: &impl Api)` and starts from an empty store; it
//! uses nothing but the [`Api`] trait, so the same case runs against any backend: the
//! embedded engine ([`crate::Embedded`]) and a server over the network
//! ([`crate::remote::Remote`]). [`crate::conformance_suite!`] lists the cases (in the
//! order of this file) and stamps out one `#[test]` per case for a backend. A few helpers
//! are public for the embedded-only checks of `tests/tests/conformance.rs`.

use crate::Api;
use ampd_engine::{BatchItem, Error, ErrorCode, QueryOptions, SetOptions, Value};
use serde_json::{json, Number};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- helpers -------------------------------------------------------------------------

/// The success value of a request; panics with the refusal otherwise.
#[track_caller]
pub fn ok<T>(r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("request refused: {e}"),
    }
}

/// The code of a refused request; panics with the result when it was accepted. Every
/// refusal must also carry a message naming what was wrong.
#[track_caller]
fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected a refusal, got Ok({v:?})"),
        Err(e) => {
            assert!(!e.message().is_empty(), "{:?} without a message", e.code());
            e.code()
        }
    }
}

/// Default set options: an update, no ttl or labels given.
pub fn opts() -> SetOptions {
    SetOptions::default()
}

/// Set options that clear label `n` (1..=5).
fn clear_label(mut o: SetOptions, n: usize) -> SetOptions {
    o.labels[n - 1] = Some(None);
    o
}

/// Default query options.
pub fn q() -> QueryOptions {
    QueryOptions::default()
}

fn meta() -> QueryOptions {
    QueryOptions { meta: true, ..q() }
}

/// Query options with `limit: n`.
pub fn limit(n: i64) -> QueryOptions {
    QueryOptions {
        limit: Some(n),
        ..q()
    }
}

/// `o` with `reverse`.
pub fn rev(o: QueryOptions) -> QueryOptions {
    QueryOptions { reverse: true, ..o }
}

fn start(o: QueryOptions, key: &str) -> QueryOptions {
    QueryOptions {
        start: Some(key.to_owned()),
        ..o
    }
}

fn on_label(o: QueryOptions, name: &str) -> QueryOptions {
    QueryOptions {
        label: Some(name.to_owned()),
        ..o
    }
}

fn float(f: f64) -> Number {
    Number::from_f64(f).expect("a finite float")
}

fn bi(key: &str, value: Value) -> BatchItem {
    BatchItem {
        key: key.to_owned(),
        value,
        ..BatchItem::default()
    }
}

fn bi_label(key: &str, value: Value, n: usize, label: &str) -> BatchItem {
    let mut item = bi(key, value);
    item.labels[n - 1] = Some(label.to_owned());
    item
}

async fn put(api: &impl Api, key: &str, value: Value) -> Value {
    ok(api.set(key, value, opts()).await)
}

/// Sets every key with its own name as value, all at once.
pub async fn put_keys(api: &impl Api, keys: &[&str]) {
    let writes = keys.iter().map(|k| api.set(k, json!(k), opts()));
    for r in futures::future::join_all(writes).await {
        ok(r);
    }
}

async fn get(api: &impl Api, pattern: &str) -> Value {
    ok(api.get(pattern, q()).await)
}

async fn query(api: &impl Api, pattern: &str, o: QueryOptions) -> Value {
    ok(api.get(pattern, o).await)
}

async fn by_label(api: &impl Api, label: &str, pattern: &str, o: QueryOptions) -> Value {
    ok(api.get_by_label(label, pattern, o).await)
}

/// `{"items": [{key, value: key}...]}`: the page of keys set by [`put_keys`].
fn page_of(keys: &[&str]) -> Value {
    json!({"items": keys.iter().map(|k| json!({"key": k, "value": k})).collect::<Vec<_>>()})
}

/// `{"items": [{key, value}...]}`.
pub fn items(entries: &[(&str, Value)]) -> Value {
    let items: Vec<Value> = entries
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({ "items": items })
}

/// The keys of a page's items, in order.
#[track_caller]
fn keys(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|i| {
            i["key"]
                .as_str()
                .unwrap_or_else(|| panic!("item without key: {i}"))
                .to_owned()
        })
        .collect()
}

/// A page's `lastKey`, after checking the page has no fields but `items` and `lastKey`.
#[track_caller]
fn last_key(page: &Value) -> Option<String> {
    let obj = page
        .as_object()
        .unwrap_or_else(|| panic!("not a page: {page}"));
    for k in obj.keys() {
        assert!(
            k == "items" || k == "lastKey",
            "unexpected page field {k:?}"
        );
    }
    obj.get("lastKey").map(|k| {
        k.as_str()
            .unwrap_or_else(|| panic!("lastKey is not a string: {k}"))
            .to_owned()
    })
}

/// Pages through `pattern` (a label query when `o.label` is set) with `start = lastKey`
/// until no `lastKey` is returned. Checks that a key query's `lastKey` is its last
/// item's key and that every page but the last is non-empty. Returns the pages.
async fn walk(api: &impl Api, pattern: &str, o: QueryOptions, pages_max: usize) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut o = o;
    loop {
        let page = query(api, pattern, o.clone()).await;
        let last = last_key(&page);
        let page_keys = keys(&page);
        pages.push(page);
        let Some(last) = last else {
            return pages;
        };
        assert!(!page_keys.is_empty(), "an empty page with lastKey {last:?}");
        if o.label.is_none() {
            assert_eq!(page_keys.last(), Some(&last), "lastKey is the last key");
        }
        assert!(
            pages.len() < pages_max,
            "{pattern:?}: more than {pages_max} pages (keys so far: {:?})",
            pages.iter().flat_map(keys).collect::<Vec<_>>()
        );
        o.start = Some(last);
    }
}

fn walked_keys(pages: &[Value]) -> Vec<String> {
    pages.iter().flat_map(keys).collect()
}

fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("millis fit i64")
}

fn now_s() -> i64 {
    now_ms().div_euclid(1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch milliseconds of `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, millisecond
/// precision); panics on any other shape.
#[track_caller]
pub fn rfc3339_ms(s: &str) -> i64 {
    let b = s.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "{s:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    let n = |from: usize, to: usize| -> i64 { s[from..to].parse().expect("digits") };
    let (mo, d, h, mi, sec) = (n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19));
    assert!(
        (1..=12).contains(&mo) && (1..=31).contains(&d),
        "{s:?}: bad date"
    );
    assert!(h < 24 && mi < 60 && sec < 60, "{s:?}: bad time");
    let days = days_from_civil(n(0, 4), mo, d);
    ((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + n(20, 23)
}

/// `created` and `modified` of a meta item, in epoch milliseconds, after checking their
/// format, that `created <= modified`, and that both lie within a second of this
/// test's clock (so they are UTC and current).
#[track_caller]
fn times(item: &Value) -> (i64, i64) {
    let field = |name: &str| {
        item[name]
            .as_str()
            .unwrap_or_else(|| panic!("meta item without {name}: {item}"))
    };
    let (c, m) = (rfc3339_ms(field("created")), rfc3339_ms(field("modified")));
    assert!(c <= m, "created after modified: {item}");
    let now = now_ms();
    for t in [c, m] {
        assert!(
            t <= now + 1000 && t >= now - 60_000,
            "{item}: timestamp {t} is not near now ({now})"
        );
    }
    (c, m)
}

/// A meta item without `created` and `modified` (checked by [`times`]), for exact
/// comparison of the rest.
#[track_caller]
fn untimed(item: &Value) -> Value {
    times(item);
    let mut m = item
        .as_object()
        .unwrap_or_else(|| panic!("not a meta item: {item}"))
        .clone();
    m.remove("created");
    m.remove("modified");
    Value::Object(m)
}

/// A meta item without its times and its `ttl`, after checking that the ttl lies within
/// `[lo, hi]` epoch seconds.
#[track_caller]
fn untimed_ttl(item: &Value, lo: i64, hi: i64) -> Value {
    let ttl = item["ttl"]
        .as_i64()
        .unwrap_or_else(|| panic!("meta item without an integer ttl: {item}"));
    assert!(
        lo <= ttl && ttl <= hi,
        "ttl {ttl} not in {lo}..={hi}: {item}"
    );
    let mut m = untimed(item);
    if let Value::Object(o) = &mut m {
        o.remove("ttl");
    }
    m
}

/// Everything a user can see of the store through these patterns and label queries,
/// with metadata: a refused request must leave it identical.
async fn snapshot(api: &impl Api, patterns: &[&str], labels: &[(&str, &str)]) -> Vec<Value> {
    let all = QueryOptions {
        meta: true,
        limit: Some(1000),
        ..q()
    };
    let mut out = Vec::new();
    for p in patterns {
        out.push(query(api, p, all.clone()).await);
    }
    for (l, p) in labels {
        out.push(by_label(api, l, p, all.clone()).await);
    }
    out
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---- keys ----------------------------------------------------------------------------

/// SPEC "Keys": leading and trailing white space is removed first (seed: "both
/// 'keyName' and ' keyName ' would be equivalent"), for every operation.
pub async fn keys_are_trimmed(api: &impl Api) {
    assert_eq!(
        ok(api.set(" keyName ", json!("v1"), opts()).await),
        json!("v1")
    );
    assert_eq!(get(api, "keyName").await, json!("v1"));
    assert_eq!(get(api, "\tkeyName\n").await, json!("v1"));
    put(api, "keyName", json!("v2")).await;
    assert_eq!(get(api, " keyName ").await, json!("v2"));
    let item = ok(api
        .set("  users:ann smith  ", json!(1), opts().meta())
        .await);
    assert_eq!(item["key"], json!("users:ann smith"));
    assert_eq!(
        ok(api.add(" users:ann smith ", None, 2.into(), false).await),
        json!(3)
    );
    assert_eq!(get(api, "*").await, items(&[("keyName", json!("v2"))]));
    assert_eq!(
        get(api, "users:*").await,
        items(&[("users:ann smith", json!(3))])
    );
    assert_eq!(
        ok(api.get_many(&[" keyName", "users:ann smith "], false).await),
        items(&[("keyName", json!("v2")), ("users:ann smith", json!(3))])
    );
    assert_eq!(ok(api.remove("  keyName  ").await), json!(true));
    assert_eq!(get(api, "keyName").await, Value::Null);
}

/// SPEC "Keys": keys are case sensitive and may contain spaces (seed: `"foo Obj"`).
pub async fn keys_are_case_sensitive_and_may_hold_spaces(api: &impl Api) {
    put(api, "foo", json!(1)).await;
    put(api, "Foo", json!(2)).await;
    put(api, "FOO", json!(3)).await;
    put(api, "foo Obj", json!(4)).await;
    put(api, "ns:a b  c", json!(5)).await;
    assert_eq!(get(api, "foo").await, json!(1));
    assert_eq!(get(api, "Foo").await, json!(2));
    assert_eq!(get(api, "FOO").await, json!(3));
    assert_eq!(get(api, "foo Obj").await, json!(4));
    assert_eq!(get(api, "fOO").await, Value::Null);
    assert_eq!(get(api, "ns:a b  c").await, json!(5));
    assert_eq!(get(api, "ns:a b c").await, Value::Null);
    assert_eq!(keys(&get(api, "*").await), ["FOO", "Foo", "foo", "foo Obj"]);
}

/// SPEC "Keys": after trimming a key is 1..=256 bytes (bytes, not characters); longer
/// is `key_too_long` for every operation that takes a key.
pub async fn key_length_limit_counts_bytes(api: &impl Api) {
    let k256 = "k".repeat(256);
    let k257 = "k".repeat(257);
    let ns256 = format!("ns:{}", "x".repeat(253));
    let euro85 = "€".repeat(85); // 255 bytes
    let euro86 = "€".repeat(86); // 258 bytes
    assert_eq!(ok(api.set(&k256, json!(1), opts()).await), json!(1));
    assert_eq!(
        ok(api.set(&format!("  {k256}\t"), json!(2), opts()).await),
        json!(2),
        "256 bytes once trimmed"
    );
    assert_eq!(get(api, &k256).await, json!(2));
    put(api, &ns256, json!(3)).await;
    assert_eq!(get(api, &ns256).await, json!(3));
    put(api, &euro85, json!(4)).await;
    assert_eq!(get(api, &euro85).await, json!(4));

    for long in [&k257, &euro86, &format!("ns:{}", "x".repeat(254))] {
        assert_eq!(
            code(api.set(long, json!(0), opts()).await),
            ErrorCode::KeyTooLong
        );
        assert_eq!(
            code(api.add(long, None, 1.into(), false).await),
            ErrorCode::KeyTooLong
        );
        assert_eq!(
            code(api.set_batch(vec![bi(long, json!(0))], true, false).await),
            ErrorCode::KeyTooLong
        );
        assert_eq!(code(api.get(long, q()).await), ErrorCode::KeyTooLong);
        assert_eq!(
            code(api.get_many(&[long.as_str()], false).await),
            ErrorCode::KeyTooLong
        );
        assert_eq!(code(api.remove(long).await), ErrorCode::KeyTooLong);
    }
    // Empty after trimming: not 1..=256 bytes (the engine calls it `invalid_key`).
    for empty in ["", "   "] {
        assert_eq!(
            code(api.set(empty, json!(0), opts()).await),
            ErrorCode::InvalidKey,
            "{empty:?}"
        );
    }
    let k256s = k256.as_str();
    assert_eq!(
        get(api, "*").await,
        items(&[(k256s, json!(2)), (euro85.as_str(), json!(4))])
    );
    assert_eq!(get(api, "ns:*").await, items(&[(ns256.as_str(), json!(3))]));
}

/// SPEC "Keys": a key that `get` could not address exactly — ending in `*`, holding
/// `|`, or whose key part starts with `<` or `>` — is refused with `invalid_key`, by
/// `set`, batch `set` and `add`; nothing is written.
pub async fn set_refuses_unaddressable_keys(api: &impl Api) {
    let bad = [
        "a*", "*", "ns:a*", "ns:*", "a|b", "|", "ns:a|b", "ns:|", "a|", ">a", ">=a", "<a", "<=a",
        "ns:>a", "ns:>=a", "ns:<a", "ns:<=a", "ns:", " ns:a* ",
    ];
    for k in bad {
        assert_eq!(
            code(api.set(k, json!(1), opts()).await),
            ErrorCode::InvalidKey,
            "set {k:?}"
        );
        assert_eq!(
            code(api.set(k, json!(1), opts().overwrite()).await),
            ErrorCode::InvalidKey,
            "set {k:?} overwrite"
        );
        assert_eq!(
            code(api.set_batch(vec![bi(k, json!(1))], true, false).await),
            ErrorCode::InvalidKey,
            "batch {k:?}"
        );
        assert_eq!(
            code(api.add(k, None, 1.into(), false).await),
            ErrorCode::InvalidKey,
            "add {k:?}"
        );
    }
    assert_eq!(get(api, "*").await, json!({"items": []}));
    assert_eq!(get(api, "ns:*").await, json!({"items": []}));
    assert_eq!(get(api, "a:*").await, json!({"items": []}));
}

/// SPEC "Keys": only the listed shapes are refused; other uses of the query characters
/// are ordinary keys, readable exactly and in scans ("no item may be unreachable").
pub async fn odd_but_addressable_keys_are_reachable(api: &impl Api) {
    let good = [
        "a*b", "*a", "a>", "a<b", "ns:a>b", "ns:a<", "ns:*a", "ns:a:b*c", ">ns:a", "n*s:a",
    ];
    for (i, k) in good.iter().enumerate() {
        assert_eq!(ok(api.set(k, json!(i), opts()).await), json!(i), "{k:?}");
    }
    for (i, k) in good.iter().enumerate() {
        assert_eq!(get(api, k).await, json!(i), "get {k:?}");
    }
    assert_eq!(keys(&get(api, "*").await), ["*a", "a*b", "a<b", "a>"]);
    assert_eq!(
        keys(&get(api, "ns:*").await),
        ["ns:*a", "ns:a:b*c", "ns:a<", "ns:a>b"]
    );
    assert_eq!(keys(&get(api, ">ns:*").await), [">ns:a"]);
}

/// SPEC "Keys": the namespace is the text before the *first* colon.
pub async fn namespace_ends_at_first_colon(api: &impl Api) {
    put_keys(api, &["a:b:c", "a:b", "a", "ab:c", "a:c"]).await;
    assert_eq!(get(api, "a:b:c").await, json!("a:b:c"));
    assert_eq!(get(api, "a:*").await, page_of(&["a:b", "a:b:c", "a:c"]));
    assert_eq!(get(api, "a:b*").await, page_of(&["a:b", "a:b:c"]));
    assert_eq!(get(api, "a:b:*").await, page_of(&["a:b:c"]));
    assert_eq!(get(api, "*").await, page_of(&["a"]));
    assert_eq!(get(api, "ab:*").await, page_of(&["ab:c"]));
}

// ---- values --------------------------------------------------------------------------

/// Seed "Setting Items": string, number, boolean, array and object values; `set`
/// returns the value; `get` reads it back.
pub async fn seed_value_types_round_trip(api: &impl Api) {
    let cases = [
        ("foo", json!("bar")),
        ("fooNum", json!(123456)),
        ("foo-Bool", json!(true)),
        ("foo_Array", json!(["val1", "val2", "val3"])),
        (
            "foo Obj",
            json!({"key1": "some val", "key2": "some other val"}),
        ),
        (
            "nested",
            json!({"a": [1, {"b": null, "c": false}], "d": {"e": -2.5}}),
        ),
        ("empty string", json!("")),
        ("unicode", json!("żółw 🐢 \u{0} end")),
        ("empty array", json!([])),
        ("empty object", json!({})),
        ("false", json!(false)),
    ];
    for (k, v) in &cases {
        assert_eq!(ok(api.set(k, v.clone(), opts()).await), *v, "set {k:?}");
    }
    for (k, v) in &cases {
        assert_eq!(get(api, k).await, *v, "get {k:?}");
    }
    let mut sorted: Vec<(&str, Value)> = cases.iter().map(|(k, v)| (*k, v.clone())).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(get(api, "*").await, items(&sorted));
}

/// SPEC "Values": 64-bit integers are kept exact and integers and floats stay distinct
/// (`1` is not `1.0`), in single reads, scans, batch reads and inside objects.
pub async fn integers_and_floats_stay_distinct(api: &impl Api) {
    let cases = [
        ("i", json!(1)),
        ("f", json!(1.0)),
        ("zero", json!(0)),
        ("fzero", json!(0.0)),
        ("neg", json!(-7)),
        ("max", json!(i64::MAX)),
        ("min", json!(i64::MIN)),
        ("past2p53", json!(9_007_199_254_740_993_i64)),
        ("tenth", json!(0.1)),
        ("huge", json!(1e300)),
        ("nfloat", json!(-2.5)),
        ("obj", json!({"n": 2, "x": 2.0, "arr": [3, 3.0]})),
    ];
    for (k, v) in &cases {
        put(api, k, v.clone()).await;
    }
    for (k, v) in &cases {
        let got = get(api, k).await;
        assert_eq!(got, *v, "{k:?}");
    }
    assert!(get(api, "i").await.is_i64());
    assert!(get(api, "f").await.is_f64());
    assert_ne!(get(api, "f").await, json!(1));
    assert_ne!(get(api, "i").await, json!(1.0));
    assert_eq!(get(api, "obj").await["x"], json!(2.0));
    assert!(get(api, "obj").await["x"].is_f64());
    assert!(get(api, "obj").await["n"].is_i64());
    let page = get(api, "*").await;
    let scanned: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| &i["value"])
        .collect();
    let mut sorted: Vec<&(&str, Value)> = cases.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(scanned, sorted.iter().map(|(_, v)| v).collect::<Vec<_>>());
    assert_eq!(
        ok(api.get_many(&["f", "i", "max"], false).await),
        items(&[("f", json!(1.0)), ("i", json!(1)), ("max", json!(i64::MAX))])
    );
}

/// SPEC "Values": null is a value. A stored null reads as `null` like an absent key,
/// but the item exists: it has metadata, appears in scans and batch reads, and its
/// removal reports `true`.
pub async fn null_is_a_stored_value(api: &impl Api) {
    assert_eq!(ok(api.set("n", Value::Null, opts()).await), Value::Null);
    assert_eq!(get(api, "n").await, Value::Null);
    let item = query(api, "n", meta()).await;
    assert_eq!(untimed(&item), json!({"key": "n", "value": null}));
    assert_eq!(get(api, "*").await, items(&[("n", Value::Null)]));
    assert_eq!(
        ok(api.get_many(&["n", "absent"], false).await),
        items(&[("n", Value::Null)])
    );
    // An update with null replaces an object (null is not an object).
    put(api, "o", json!({"a": 1})).await;
    assert_eq!(put(api, "o", Value::Null).await, Value::Null);
    assert_eq!(
        untimed(&query(api, "o", meta()).await),
        json!({"key": "o", "value": null})
    );
    assert_eq!(ok(api.remove("n").await), json!(true));
    assert_eq!(query(api, "n", meta()).await, Value::Null);
    assert_eq!(ok(api.remove("n").await), json!(false));
}

// ---- set: metadata -------------------------------------------------------------------

/// Seed: `set("foo", "bar", {meta, overwrite, ttl: 3600, label1: "baz", label2:
/// "baz:bat"})`. SPEC "Values and items": with `meta` the result is exactly `key`,
/// `value`, `created`, `modified` (RFC 3339 UTC, milliseconds), `ttl` (epoch seconds)
/// and the labels that are set; every read with `meta` shows the same object.
pub async fn meta_shape_seed_example(api: &impl Api) {
    let before = now_ms();
    let item = ok(api
        .set(
            "foo",
            json!("bar"),
            opts()
                .meta()
                .overwrite()
                .ttl(3600)
                .label(1, "baz")
                .label(2, "baz:bat"),
        )
        .await);
    let after = now_ms();
    assert_eq!(
        rfc3339_ms("2023-11-14T22:13:20.123Z"),
        1_700_000_000_123,
        "the test's own clock format"
    );
    let (c, m) = times(&item);
    assert!(
        before - 1000 <= c && c <= after + 1000,
        "created {c} is now"
    );
    assert_eq!(c, m, "a new item is created and modified at once");
    assert_eq!(
        untimed_ttl(&item, before / 1000 + 3600, after / 1000 + 3601),
        json!({"key": "foo", "value": "bar", "label1": "baz", "label2": "baz:bat"})
    );
    assert_eq!(query(api, "foo", meta()).await, item);
    assert_eq!(
        ok(api.get_many(&["foo"], true).await),
        json!({"items": [item]})
    );
    assert_eq!(query(api, "*", meta()).await, json!({"items": [item]}));
    assert_eq!(
        by_label(api, "label1", "baz", meta()).await,
        json!({"items": [item]})
    );
    assert_eq!(
        by_label(api, "label2", "baz:bat", meta()).await,
        json!({"items": [item]})
    );
    assert_eq!(
        get(api, "foo").await,
        json!("bar"),
        "no meta: the bare value"
    );

    // An item without ttl or labels has exactly the four fields.
    let plain = ok(api.set("ns:plain", json!({"a": 1}), opts().meta()).await);
    let mut fields: Vec<&String> = plain.as_object().expect("object").keys().collect();
    fields.sort();
    assert_eq!(fields, ["created", "key", "modified", "value"]);
    assert_eq!(
        untimed(&plain),
        json!({"key": "ns:plain", "value": {"a": 1}})
    );
    assert_eq!(
        put(api, "ns:plain", json!({"b": 2})).await,
        json!({"a": 1, "b": 2})
    );
}

/// SPEC "Values and items" / "set": `created` is kept across updates and adds and
/// restarts with `overwrite`; `modified` changes with every write.
pub async fn created_kept_on_update_reset_on_overwrite(api: &impl Api) {
    let a = ok(api.set("c", json!({"v": 1}), opts().meta()).await);
    let (c1, m1) = times(&a);
    sleep_ms(5).await;
    let b = ok(api.set("c", json!({"w": 2}), opts().meta()).await);
    let (c2, m2) = times(&b);
    assert_eq!(c2, c1, "an update keeps created");
    assert!(m2 > m1, "an update changes modified ({m1} -> {m2})");
    assert_eq!(b["value"], json!({"v": 1, "w": 2}));
    sleep_ms(5).await;
    let c = ok(api.add("c", Some("v"), 1.into(), true).await);
    let (c3, m3) = times(&c);
    assert_eq!(c3, c1, "add keeps created");
    assert!(m3 > m2, "add changes modified");
    assert_eq!(c["value"], json!({"v": 2, "w": 2}));
    sleep_ms(5).await;
    let d = ok(api
        .set("c", json!({"x": 3}), opts().meta().overwrite())
        .await);
    let (c4, m4) = times(&d);
    assert!(c4 > c1, "overwrite restarts created ({c1} -> {c4})");
    assert_eq!(c4, m4);
    assert_eq!(d["value"], json!({"x": 3}));
    assert_eq!(query(api, "c", meta()).await, d);
    sleep_ms(5).await;
    let e = ok(api.set_batch(vec![bi("c", json!(4))], true, true).await);
    let (c5, _) = times(&e["items"][0]);
    assert!(c5 > c4, "a batch set overwrites: created restarts");
}

// ---- set: update and overwrite -------------------------------------------------------

/// SPEC "set": an update of an object by an object is a shallow merge — new top-level
/// fields replace old ones whole, the other old fields stay; `set` returns the merged
/// value.
pub async fn update_merges_objects_shallowly(api: &impl Api) {
    put(
        api,
        "o",
        json!({"a": 1, "b": {"x": 1, "y": 2}, "c": "keep"}),
    )
    .await;
    assert_eq!(
        put(api, "o", json!({"b": {"x": 9}, "d": [1]})).await,
        json!({"a": 1, "b": {"x": 9}, "c": "keep", "d": [1]})
    );
    assert_eq!(
        get(api, "o").await,
        json!({"a": 1, "b": {"x": 9}, "c": "keep", "d": [1]})
    );
    assert_eq!(
        put(api, "o", json!({"a": null, "d": [2]})).await,
        json!({"a": null, "b": {"x": 9}, "c": "keep", "d": [2]}),
        "a null field replaces; arrays are replaced, not appended"
    );
    assert_eq!(
        put(api, "o", json!({})).await,
        json!({"a": null, "b": {"x": 9}, "c": "keep", "d": [2]})
    );
    // Namespaced keys merge the same way.
    put(api, "users:1", json!({"name": "ann", "age": 30})).await;
    assert_eq!(
        put(api, "users:1", json!({"age": 31})).await,
        json!({"name": "ann", "age": 31})
    );
    assert_eq!(get(api, "users:1").await, json!({"name": "ann", "age": 31}));
}

/// SPEC "set": when either side is not an object the update replaces the value.
pub async fn update_replaces_non_objects(api: &impl Api) {
    let steps = [
        json!({"a": 1}),
        json!("s"),
        json!({"b": 2}),
        json!([1]),
        json!([2]),
        json!(5),
        json!(5.5),
        json!({"c": 3}),
        Value::Null,
        json!({"d": 4}),
        json!(true),
    ];
    for v in steps {
        assert_eq!(put(api, "x", v.clone()).await, v);
        assert_eq!(get(api, "x").await, v);
    }
}

/// SPEC "set": an update keeps the labels and ttl it does not give; given ones change.
pub async fn update_keeps_labels_and_ttl(api: &impl Api) {
    let first = ok(api
        .set(
            "k",
            json!(1),
            opts().meta().ttl(3600).label(1, "L1").label(2, "g:L2"),
        )
        .await);
    let ttl = first["ttl"].as_i64().expect("ttl");
    let second = ok(api.set("k", json!(2), opts().meta()).await);
    assert_eq!(
        untimed(&second),
        json!({"key": "k", "value": 2, "ttl": ttl, "label1": "L1", "label2": "g:L2"})
    );
    assert_eq!(
        by_label(api, "label1", "L1", q()).await,
        items(&[("k", json!(2))])
    );
    assert_eq!(
        by_label(api, "label2", "g:L2", q()).await,
        items(&[("k", json!(2))])
    );
    let third = ok(api.set("k", json!(3), opts().meta().label(1, "L1b")).await);
    assert_eq!(
        untimed(&third),
        json!({"key": "k", "value": 3, "ttl": ttl, "label1": "L1b", "label2": "g:L2"})
    );
    let before = now_s();
    let fourth = ok(api.set("k", json!(4), opts().meta().ttl(7200)).await);
    assert_eq!(
        untimed_ttl(&fourth, before + 7200, now_s() + 7200),
        json!({"key": "k", "value": 4, "label1": "L1b", "label2": "g:L2"})
    );
    assert_eq!(
        by_label(api, "label1", "L1", q()).await,
        json!({"items": []})
    );
    assert_eq!(
        by_label(api, "label1", "L1b", q()).await,
        items(&[("k", json!(4))])
    );
}

/// SPEC "set": `overwrite: true` replaces the item whole — no merge, and the labels and
/// ttl it does not give are dropped (and leave the label index).
pub async fn overwrite_drops_labels_and_ttl(api: &impl Api) {
    ok(api
        .set(
            "k",
            json!({"a": 1}),
            opts().ttl(3600).label(1, "L1").label(3, "x:y"),
        )
        .await);
    let r = ok(api
        .set("k", json!({"b": 2}), opts().meta().overwrite())
        .await);
    assert_eq!(untimed(&r), json!({"key": "k", "value": {"b": 2}}));
    assert_eq!(
        by_label(api, "label1", "L1", q()).await,
        json!({"items": []})
    );
    assert_eq!(
        by_label(api, "label3", "x:*", q()).await,
        json!({"items": []})
    );
    let r = ok(api
        .set("k", json!(3), opts().meta().overwrite().label(2, "N"))
        .await);
    assert_eq!(untimed(&r), json!({"key": "k", "value": 3, "label2": "N"}));
    assert_eq!(
        by_label(api, "label2", "N", q()).await,
        items(&[("k", json!(3))])
    );
    assert_eq!(query(api, "k", meta()).await, r);
}

// ---- set: $add -----------------------------------------------------------------------

/// Seed "Updating multiple values atomically": `{nestedCounter: {$add: 1},
/// anotherCounter: {$add: 5}, someOtherValue: "foo"}` — counters start from 0 when
/// missing and add on every call; plain fields are last-write-wins.
pub async fn dollar_add_seed_example(api: &impl Api) {
    let v = json!({
        "nestedCounter": {"$add": 1},
        "anotherCounter": {"$add": 5},
        "someOtherValue": "foo",
    });
    assert_eq!(
        put(api, "myObject", v.clone()).await,
        json!({"nestedCounter": 1, "anotherCounter": 5, "someOtherValue": "foo"})
    );
    assert_eq!(
        put(api, "myObject", v).await,
        json!({"nestedCounter": 2, "anotherCounter": 10, "someOtherValue": "foo"})
    );
    assert_eq!(
        put(
            api,
            "myObject",
            json!({"nestedCounter": {"$add": -3}, "someOtherValue": "bar"})
        )
        .await,
        json!({"nestedCounter": -1, "anotherCounter": 10, "someOtherValue": "bar"})
    );
    let got = get(api, "myObject").await;
    assert_eq!(
        got,
        json!({"nestedCounter": -1, "anotherCounter": 10, "someOtherValue": "bar"})
    );
    assert!(got["nestedCounter"].is_i64() && got["anotherCounter"].is_i64());
}

/// SPEC "set": `$add` with floats makes floats, missing fields count as 0, and a
/// stored value that is not an object is replaced (its fields are all missing).
pub async fn dollar_add_floats_and_missing_fields(api: &impl Api) {
    put(api, "o", json!({"n": 1, "s": "x"})).await;
    let r = put(api, "o", json!({"n": {"$add": 0.5}, "m": {"$add": 2.5}})).await;
    assert_eq!(r, json!({"n": 1.5, "s": "x", "m": 2.5}));
    let r = put(api, "o", json!({"i": {"$add": 0}, "n": {"$add": 1}})).await;
    assert_eq!(r, json!({"n": 2.5, "s": "x", "m": 2.5, "i": 0}));
    assert!(r["i"].is_i64() && r["n"].is_f64());
    put(api, "p", json!(7)).await;
    assert_eq!(
        put(api, "p", json!({"c": {"$add": 1}})).await,
        json!({"c": 1})
    );
    assert_eq!(
        put(api, "ns:new", json!({"c": {"$add": 2.0}})).await,
        json!({"c": 2.0})
    );
    // `overwrite`: nothing stored survives, so `$add` counts from zero.
    put(api, "q", json!({"n": 5, "x": 1})).await;
    assert_eq!(
        ok(api
            .set("q", json!({"n": {"$add": 3}}), opts().overwrite())
            .await),
        json!({"n": 3})
    );
    assert_eq!(get(api, "q").await, json!({"n": 3}));
}

/// SPEC "set": `$add` on a non-numeric stored field, or with a non-numeric operand, is
/// `not_a_number`, and the whole write is refused (its other fields too).
pub async fn dollar_add_not_a_number(api: &impl Api) {
    let stored = json!({"s": "text", "n": 1, "t": true, "o": {"a": 1}});
    put(api, "o", stored.clone()).await;
    let before = query(api, "o", meta()).await;
    let bad = [
        json!({"s": {"$add": 1}}),
        json!({"t": {"$add": 1}, "n": 5}),
        json!({"n": 9, "o": {"$add": 1}}),
        json!({"n": {"$add": "2"}}),
        json!({"n": {"$add": null}}),
        json!({"n": {"$add": [1]}}),
    ];
    for v in bad {
        assert_eq!(
            code(api.set("o", v.clone(), opts()).await),
            ErrorCode::NotANumber,
            "{v}"
        );
    }
    assert_eq!(query(api, "o", meta()).await, before);
    assert_eq!(get(api, "o").await, stored);
}

/// SPEC "add"/"set": integer `$add` that leaves the 64-bit integer range is
/// `overflow` and changes nothing.
pub async fn dollar_add_overflow(api: &impl Api) {
    let stored = json!({"big": i64::MAX, "small": i64::MIN, "f": 1});
    put(api, "o", stored.clone()).await;
    assert_eq!(
        code(
            api.set("o", json!({"big": {"$add": 1}, "f": 2}), opts())
                .await
        ),
        ErrorCode::Overflow
    );
    assert_eq!(
        code(api.set("o", json!({"small": {"$add": -1}}), opts()).await),
        ErrorCode::Overflow
    );
    assert_eq!(get(api, "o").await, stored);
    assert_eq!(
        put(api, "o", json!({"big": {"$add": -1}, "small": {"$add": 1}})).await,
        json!({"big": i64::MAX - 1, "small": i64::MIN + 1, "f": 1})
    );
}

// ---- batch set -----------------------------------------------------------------------

/// Seed "Setting Multiple Items": the three-item example (a ttl on one, a namespaced
/// label on another) returns `{items: [{key, value}]}` in request order; the items read
/// back with the seed's batch `get`, their ttl and their label.
pub async fn batch_set_seed_example(api: &impl Api) {
    let mut ttl_item = bi("someOtherKey", json!(123));
    ttl_item.ttl = Some(json!(1000));
    let batch = vec![
        bi("key1", json!("string value")),
        ttl_item,
        bi_label("namespacedKey:keyX", json!({"foo": "bar"}), 1, "foo:baz"),
    ];
    let expected = items(&[
        ("key1", json!("string value")),
        ("someOtherKey", json!(123)),
        ("namespacedKey:keyX", json!({"foo": "bar"})),
    ]);
    let before = now_s();
    assert_eq!(ok(api.set_batch(batch, true, false).await), expected);
    assert_eq!(
        ok(api
            .get_many(&["key1", "someOtherKey", "namespacedKey:keyX"], false)
            .await),
        expected
    );
    assert_eq!(
        untimed_ttl(
            &query(api, "someOtherKey", meta()).await,
            before + 1000,
            now_s() + 1000
        ),
        json!({"key": "someOtherKey", "value": 123})
    );
    assert_eq!(
        by_label(api, "label1", "foo:baz", q()).await,
        items(&[("namespacedKey:keyX", json!({"foo": "bar"}))])
    );
}

/// SPEC "set" batch: results follow request order (not key order, not shard order);
/// with `meta` each carries its metadata; keys are trimmed.
pub async fn batch_set_order_and_meta(api: &impl Api) {
    let keys_in = ["z", "a", "m:1", " b ", "c:0", "y"];
    let batch: Vec<BatchItem> = keys_in
        .iter()
        .enumerate()
        .map(|(i, k)| bi_label(k, json!(i), 2, &format!("L{i}")))
        .collect();
    let r = ok(api.set_batch(batch, true, true).await);
    let got = r["items"].as_array().expect("items");
    assert_eq!(got.len(), keys_in.len());
    for (i, (item, k)) in got.iter().zip(keys_in).enumerate() {
        let (c, m) = times(item);
        assert_eq!(c, m);
        assert_eq!(
            untimed(item),
            json!({"key": k.trim(), "value": i, "label2": format!("L{i}")})
        );
    }
    assert_eq!(r.as_object().expect("object").len(), 1, "only items: {r}");
    assert_eq!(
        ok(api
            .get_many(&["y", "c:0", "b", "m:1", "a", "z"], true)
            .await)["items"],
        json!(got.iter().rev().cloned().collect::<Vec<_>>())
    );
}

/// SPEC "set" batch: at most 25 items; 26 is `batch_too_large` and writes nothing.
pub async fn batch_set_limit_25(api: &impl Api) {
    let names: Vec<String> = (0..26).map(|i| format!("b:{i:02}")).collect();
    let batch =
        |n: usize| -> Vec<BatchItem> { names[..n].iter().map(|k| bi(k, json!(k))).collect() };
    assert_eq!(
        code(api.set_batch(batch(26), true, false).await),
        ErrorCode::BatchTooLarge
    );
    assert_eq!(get(api, "b:*").await, json!({"items": []}));
    let r = ok(api.set_batch(batch(25), true, false).await);
    let first25: Vec<&str> = names[..25].iter().map(String::as_str).collect();
    assert_eq!(r, page_of(&first25));
    assert_eq!(get(api, "b:*").await, page_of(&first25));
}

/// SPEC "set" batch: `overwrite: true` is required (`overwrite_required`), and nothing
/// is written without it.
pub async fn batch_set_requires_overwrite(api: &impl Api) {
    put(api, "k", json!({"a": 1})).await;
    let before = query(api, "k", meta()).await;
    assert_eq!(
        code(
            api.set_batch(
                vec![bi("k", json!({"b": 2})), bi("n", json!(1))],
                false,
                false
            )
            .await
        ),
        ErrorCode::OverwriteRequired
    );
    assert_eq!(
        code(api.set_batch(vec![bi("n", json!(1))], false, true).await),
        ErrorCode::OverwriteRequired
    );
    assert_eq!(query(api, "k", meta()).await, before);
    assert_eq!(get(api, "n").await, Value::Null);
}

/// SPEC "set" batch: the whole batch is validated first; one bad item (any kind of
/// refusal) rejects the batch and nothing of it is written, on any shard.
pub async fn batch_set_one_bad_item_writes_nothing(api: &impl Api) {
    ok(api.set("k0", json!(0), opts().label(1, "L")).await);
    let before = snapshot(api, &["*", "ns:*"], &[("label1", "*")]).await;
    let mut bad_ttl = bi("k3", json!(3));
    bad_ttl.ttl = Some(json!(-5));
    let cases: Vec<(BatchItem, ErrorCode)> = vec![
        (bi("k3*", json!(3)), ErrorCode::InvalidKey),
        (bi("ns:>k3", json!(3)), ErrorCode::InvalidKey),
        (bi(&"k".repeat(257), json!(3)), ErrorCode::KeyTooLong),
        (bad_ttl, ErrorCode::InvalidTtl),
        (
            bi_label("k3", json!(3), 4, "bad|label"),
            ErrorCode::InvalidKey,
        ),
        (
            bi("k3", json!("x".repeat(410 * 1024))),
            ErrorCode::ValueTooLarge,
        ),
    ];
    for (bad, expected) in cases {
        for at in [0, 2, 4] {
            let mut batch = vec![
                bi_label("k0", json!(99), 1, "M"),
                bi("k1", json!(1)),
                bi("ns:k2", json!(2)),
                bi("other:k4", json!(4)),
            ];
            batch.insert(at, bad.clone());
            assert_eq!(
                code(api.set_batch(batch, true, false).await),
                expected,
                "bad item {:?} at {at}",
                bad.key
            );
        }
    }
    assert_eq!(
        snapshot(api, &["*", "ns:*"], &[("label1", "*")]).await,
        before
    );
    assert_eq!(
        ok(api
            .get_many(&["k0", "k1", "ns:k2", "other:k4"], false)
            .await),
        items(&[("k0", json!(0))])
    );
}

/// SPEC "set" batch: each item is written with `overwrite` — no merge, labels and ttl
/// not given are dropped, `$add` counts from zero.
pub async fn batch_set_overwrites_whole_items(api: &impl Api) {
    ok(api
        .set("k", json!({"a": 1}), opts().ttl(3600).label(1, "L"))
        .await);
    put(api, "c", json!({"n": 10})).await;
    let r = ok(api
        .set_batch(
            vec![bi("k", json!({"b": 2})), bi("c", json!({"n": {"$add": 1}}))],
            true,
            true,
        )
        .await);
    assert_eq!(
        untimed(&r["items"][0]),
        json!({"key": "k", "value": {"b": 2}})
    );
    assert_eq!(
        untimed(&r["items"][1]),
        json!({"key": "c", "value": {"n": 1}})
    );
    assert_eq!(query(api, "k", meta()).await, r["items"][0]);
    assert_eq!(
        by_label(api, "label1", "L", q()).await,
        json!({"items": []})
    );
}

// ---- add -----------------------------------------------------------------------------

/// Seed "Updating a single value atomically": `add("myCounter", 1)`,
/// `add("myNegativeCounter", -1)`; a missing item is created with `n`; an item set to
/// 10 counts on from 10.
pub async fn add_seed_counters(api: &impl Api) {
    let add = |k: &'static str, n: i64| api.add(k, None, n.into(), false);
    assert_eq!(ok(add("myCounter", 1).await), json!(1));
    assert_eq!(ok(add("myCounter", 1).await), json!(2));
    assert_eq!(ok(add("myNegativeCounter", -1).await), json!(-1));
    assert_eq!(ok(add("myNegativeCounter", -1).await), json!(-2));
    put(api, "tenCounter", json!(10)).await;
    assert_eq!(ok(add("tenCounter", 1).await), json!(11));
    assert_eq!(ok(add("counters:a", 3).await), json!(3));
    assert_eq!(ok(add("counters:a", 4).await), json!(7));
    assert_eq!(get(api, "myCounter").await, json!(2));
    assert_eq!(get(api, "myNegativeCounter").await, json!(-2));
    assert_eq!(get(api, "counters:a").await, json!(7));
    assert!(get(api, "myCounter").await.is_i64());
}

/// Seed: `add("myObjectKey", "nestedCounter", 5)` returns the updated object; a missing
/// item becomes `{field: n}`, a missing field counts as 0, other fields stay.
pub async fn add_field_seed_example(api: &impl Api) {
    let add = |f: &'static str, n: i64| api.add("myObjectKey", Some(f), n.into(), false);
    assert_eq!(
        ok(add("nestedCounter", 5).await),
        json!({"nestedCounter": 5})
    );
    assert_eq!(
        ok(add("nestedCounter", 5).await),
        json!({"nestedCounter": 10})
    );
    put(api, "myObjectKey", json!({"other": "x"})).await;
    assert_eq!(
        ok(add("another", -2).await),
        json!({"nestedCounter": 10, "other": "x", "another": -2})
    );
    assert_eq!(
        get(api, "myObjectKey").await,
        json!({"nestedCounter": 10, "other": "x", "another": -2})
    );
}

/// SPEC "add": integer + integer stays an integer; any float makes a float.
pub async fn add_integer_stays_integer_float_makes_float(api: &impl Api) {
    let r = ok(api.add("i", None, 1.into(), false).await);
    assert!(r.is_i64(), "{r}");
    let r = ok(api.add("i", None, 2.into(), false).await);
    assert_eq!(r, json!(3));
    assert!(r.is_i64());
    assert_eq!(ok(api.add("i", None, float(0.5), false).await), json!(3.5));
    assert_eq!(ok(api.add("i", None, 1.into(), false).await), json!(4.5));
    put(api, "f", json!(1.0)).await;
    let r = ok(api.add("f", None, 1.into(), false).await);
    assert_eq!(r, json!(2.0));
    assert!(r.is_f64(), "a stored float stays a float: {r}");
    assert_eq!(
        ok(api.add("g", None, float(0.25), false).await),
        json!(0.25)
    );
    assert_eq!(
        ok(api.add("o", Some("n"), float(1.5), false).await),
        json!({"n": 1.5})
    );
    assert_eq!(
        ok(api.add("o", Some("n"), 1.into(), false).await),
        json!({"n": 2.5})
    );
    let r = ok(api.add("z", None, 0.into(), false).await);
    assert_eq!(r, json!(0));
    assert!(r.is_i64());
    assert_eq!(get(api, "i").await, json!(4.5));
    assert_eq!(get(api, "f").await, json!(2.0));
}

/// SPEC "add": an integer sum outside the 64-bit (signed) range is `overflow` and
/// leaves the item as it was. Float sums that are not finite are refused too (the
/// engine uses `overflow`; SPEC names no code for them).
pub async fn add_overflow_at_i64_bounds(api: &impl Api) {
    put(api, "max", json!(i64::MAX)).await;
    put(api, "min", json!(i64::MIN)).await;
    put(api, "fo", json!({"n": i64::MAX})).await;
    put(api, "fl", json!(1e308)).await;
    assert_eq!(
        code(api.add("min", None, (-1).into(), false).await),
        ErrorCode::Overflow
    );
    assert_eq!(
        code(api.add("fl", None, float(1e308), false).await),
        ErrorCode::Overflow
    );
    assert_eq!(
        code(api.add("max", None, 1.into(), false).await),
        ErrorCode::Overflow,
        "i64::MAX + 1"
    );
    assert_eq!(
        code(api.add("fo", Some("n"), 1.into(), false).await),
        ErrorCode::Overflow,
        "field i64::MAX + 1"
    );
    assert_eq!(get(api, "max").await, json!(i64::MAX));
    assert_eq!(get(api, "min").await, json!(i64::MIN));
    assert_eq!(get(api, "fo").await, json!({"n": i64::MAX}));
    assert_eq!(get(api, "fl").await, json!(1e308));
    assert_eq!(
        ok(api.add("max", None, (-1).into(), false).await),
        json!(i64::MAX - 1)
    );
    assert_eq!(
        ok(api.add("min", None, 1.into(), false).await),
        json!(i64::MIN + 1)
    );
}

/// SPEC "add": `add(key, n)` needs a stored number, `add(key, field, n)` a stored
/// object whose field is a number or missing; anything else is `not_a_number` and
/// changes nothing.
pub async fn add_not_a_number(api: &impl Api) {
    let stored = [
        ("s", json!("text")),
        ("o", json!({"n": 1, "f": "x"})),
        ("num", json!(5)),
        ("arr", json!([1])),
        ("nul", Value::Null),
        ("b", json!(true)),
    ];
    for (k, v) in &stored {
        put(api, k, v.clone()).await;
    }
    let before = query(api, "*", meta()).await;
    for k in ["s", "o", "arr", "nul", "b"] {
        assert_eq!(
            code(api.add(k, None, 1.into(), false).await),
            ErrorCode::NotANumber,
            "add({k:?}, 1)"
        );
    }
    for k in ["s", "num", "arr", "nul", "b"] {
        assert_eq!(
            code(api.add(k, Some("n"), 1.into(), false).await),
            ErrorCode::NotANumber,
            "add({k:?}, \"n\", 1)"
        );
    }
    assert_eq!(
        code(api.add("o", Some("f"), 1.into(), false).await),
        ErrorCode::NotANumber,
        "a string field"
    );
    assert_eq!(query(api, "*", meta()).await, before);
}

/// SPEC "add": with `meta` (the seed's trailing `true`) `add` returns the item; an add
/// keeps `created`, labels and ttl, and label reads see the new value.
pub async fn add_meta_keeps_labels_and_ttl(api: &impl Api) {
    let first = ok(api
        .set("c", json!(1), opts().meta().ttl(3600).label(1, "L"))
        .await);
    sleep_ms(3).await;
    let r = ok(api.add("c", None, 2.into(), true).await);
    let (c, m) = times(&r);
    assert_eq!(c, times(&first).0);
    assert!(m > times(&first).1);
    assert_eq!(
        untimed(&r),
        json!({"key": "c", "value": 3, "ttl": first["ttl"], "label1": "L"})
    );
    let fresh = ok(api.add("ns:c2", Some("hits"), 7.into(), true).await);
    let (c, m) = times(&fresh);
    assert_eq!(c, m);
    assert_eq!(
        untimed(&fresh),
        json!({"key": "ns:c2", "value": {"hits": 7}})
    );
    assert_eq!(
        by_label(api, "label1", "L", q()).await,
        items(&[("c", json!(3))])
    );
    assert_eq!(query(api, "c", meta()).await, r);
}

/// SPEC "add": concurrent adds never lose an increment; each add sees a distinct
/// running total.
pub async fn concurrent_adds_lose_nothing(api: &impl Api) {
    const N: i64 = 200;
    let adds = (0..N).map(|_| api.add("ctr", None, 1.into(), false));
    let fields = (0..N).map(|_| api.add("ns:obj", Some("n"), 1.into(), false));
    let (a, f) = futures::future::join(
        futures::future::join_all(adds),
        futures::future::join_all(fields),
    )
    .await;
    let mut seen: Vec<i64> = a
        .into_iter()
        .map(|r| ok(r).as_i64().expect("integer"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=N).collect::<Vec<_>>());
    let mut seen: Vec<i64> = f
        .into_iter()
        .map(|r| ok(r)["n"].as_i64().expect("integer"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=N).collect::<Vec<_>>());
    assert_eq!(get(api, "ctr").await, json!(N));
    assert_eq!(get(api, "ns:obj").await, json!({"n": N}));
}

// ---- get: exact and batch ------------------------------------------------------------

/// SPEC "get": an exact key returns the value, or null when absent — never a prefix
/// match, never another namespace's item.
pub async fn get_exact_and_absent(api: &impl Api) {
    assert_eq!(get(api, "nothing").await, Value::Null);
    assert_eq!(get(api, "ns:nothing").await, Value::Null);
    assert_eq!(query(api, "nothing", meta()).await, Value::Null);
    put(api, "foo", json!("bar")).await;
    put(api, "ns:foo", json!(1)).await;
    put(api, "foobar", json!(2)).await;
    assert_eq!(get(api, "foo").await, json!("bar"));
    assert_eq!(get(api, "ns:foo").await, json!(1));
    assert_eq!(get(api, "fo").await, Value::Null);
    assert_eq!(get(api, "ns:fo").await, Value::Null);
    assert_eq!(get(api, "other:foo").await, Value::Null);
    assert_eq!(get(api, "ns:foobar").await, Value::Null);
    assert_eq!(
        untimed(&query(api, "foo", meta()).await),
        json!({"key": "foo", "value": "bar"})
    );
}

/// Seed "Getting multiple items by their key": `get(["key1", "someOtherKey",
/// "namespacedKey:keyX"])`. SPEC: `{items}` in request order, absent keys left out.
pub async fn get_many_seed_example(api: &impl Api) {
    put(api, "key1", json!("string value")).await;
    put(api, "someOtherKey", json!(123)).await;
    put(api, "namespacedKey:keyX", json!({"foo": "bar"})).await;
    assert_eq!(
        ok(api
            .get_many(&["key1", "someOtherKey", "namespacedKey:keyX"], false)
            .await),
        items(&[
            ("key1", json!("string value")),
            ("someOtherKey", json!(123)),
            ("namespacedKey:keyX", json!({"foo": "bar"})),
        ])
    );
    assert_eq!(
        ok(api
            .get_many(
                &[
                    "namespacedKey:keyX",
                    "missing",
                    "key1",
                    "ns:missing",
                    "someOtherKey"
                ],
                false
            )
            .await),
        items(&[
            ("namespacedKey:keyX", json!({"foo": "bar"})),
            ("key1", json!("string value")),
            ("someOtherKey", json!(123)),
        ])
    );
    assert_eq!(
        ok(api.get_many(&["missing"], false).await),
        json!({"items": []})
    );
    let m = ok(api.get_many(&["someOtherKey", "key1"], true).await);
    assert_eq!(
        untimed(&m["items"][0]),
        json!({"key": "someOtherKey", "value": 123})
    );
    assert_eq!(
        untimed(&m["items"][1]),
        json!({"key": "key1", "value": "string value"})
    );
}

/// SPEC "get": a batch holds at most 25 keys (`batch_too_large`), and only exact keys:
/// a wildcard or condition in a batch is `invalid_key`.
pub async fn get_many_limits_and_exact_keys(api: &impl Api) {
    let names: Vec<String> = (0..26).map(|i| format!("k{i:02}")).collect();
    for k in names.iter().step_by(3) {
        put(api, k, json!(k)).await;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let present: Vec<&str> = refs[..25].iter().step_by(3).copied().collect();
    assert_eq!(
        ok(api.get_many(&refs[..25], false).await),
        page_of(&present)
    );
    assert_eq!(
        code(api.get_many(&refs, false).await),
        ErrorCode::BatchTooLarge
    );
    for bad in ["ns:*", "*", "k0*", "a|b", ">k00", "ns:<=a"] {
        assert_eq!(
            code(api.get_many(&["k00", bad], false).await),
            ErrorCode::InvalidKey,
            "{bad:?}"
        );
    }
}

// ---- get: patterns -------------------------------------------------------------------

/// SPEC "get": a pattern without a namespace (`*`, `pre*`, `>x`, `a|b`) covers simple
/// keys only, and `ns:...` covers only namespace `ns`; results merge across shards in
/// key order.
pub async fn star_covers_simple_keys_only(api: &impl Api) {
    put_keys(
        api,
        &[
            "f", "b", "d", "a", "e", "c", "ba", "bz", "b:1", "ns:a", "ns:z", "nsx:a", "n:a", "x:y",
            "a:0",
        ],
    )
    .await;
    assert_eq!(
        get(api, "*").await,
        page_of(&["a", "b", "ba", "bz", "c", "d", "e", "f"])
    );
    assert_eq!(get(api, "b*").await, page_of(&["b", "ba", "bz"]));
    assert_eq!(get(api, ">c").await, page_of(&["d", "e", "f"]));
    assert_eq!(get(api, "<b").await, page_of(&["a"]));
    assert_eq!(get(api, "a|bz").await, page_of(&["a", "b", "ba", "bz"]));
    assert_eq!(get(api, "ns:*").await, page_of(&["ns:a", "ns:z"]));
    assert_eq!(get(api, "n:*").await, page_of(&["n:a"]));
    assert_eq!(get(api, "nsx:*").await, page_of(&["nsx:a"]));
    assert_eq!(get(api, "b:*").await, page_of(&["b:1"]));
    assert_eq!(get(api, "none:*").await, json!({"items": []}));
}

/// Seed "Partial matches" and "Greater than and Less than" (the `user123` examples):
/// prefixes and comparisons are plain byte-wise comparisons within the namespace.
pub async fn comparisons_seed_user123(api: &impl Api) {
    let keys_in = [
        "user123:2021-05-01",
        "user123:2021-05-17",
        "user123:2021-05-18",
        "user123:2021-05-18T10",
        "user123:2021-05-19",
        "user123:2021-05-31",
        "user123:2021-05-31T09",
        "user123:2021-06-01",
        "user123:orders_1",
        "user123:orders_2",
        "user1234:2021-05-20",
        "user12:2021-05-20",
        "user123",
        "2021-05-20",
    ];
    put_keys(api, &keys_in).await;
    assert_eq!(get(api, "user123:*").await, page_of(&keys_in[..10]));
    assert_eq!(
        get(api, "user123:>2021-05-18").await,
        page_of(&keys_in[3..10])
    );
    assert_eq!(
        get(api, "user123:>=2021-05-18").await,
        page_of(&keys_in[2..10])
    );
    assert_eq!(
        get(api, "user123:<2021-05-18").await,
        page_of(&keys_in[..2])
    );
    assert_eq!(
        get(api, "user123:<=2021-05-18").await,
        page_of(&keys_in[..3])
    );
    let orders = query(api, "user123:orders*", meta()).await;
    assert_eq!(keys(&orders), ["user123:orders_1", "user123:orders_2"]);
    assert_eq!(
        untimed(&orders["items"][1]),
        json!({"key": "user123:orders_2", "value": "user123:orders_2"})
    );
    assert_eq!(
        get(api, "user123:>2021-06-01").await,
        page_of(&keys_in[8..10])
    );
    assert_eq!(get(api, "user123:<2021-05-01").await, json!({"items": []}));
    assert_eq!(
        get(api, "user123:>=2021-05-31T09").await,
        page_of(&keys_in[6..10])
    );
}

/// Seed "Retrieving items between two keys": `user123:2021-05-01|2021-05-31`. SPEC:
/// `a <= key <= b`, both ends inclusive, plain lexicographic comparison.
pub async fn between_is_inclusive(api: &impl Api) {
    let keys_in = [
        "user123:2021-04-30",
        "user123:2021-05-01",
        "user123:2021-05-17",
        "user123:2021-05-18T10",
        "user123:2021-05-31",
        "user123:2021-05-31T09",
        "user123:2021-06-01",
    ];
    put_keys(api, &keys_in).await;
    put_keys(api, &["2021-05-02", "user1234:2021-05-02"]).await;
    assert_eq!(
        get(api, "user123:2021-05-01|2021-05-31").await,
        page_of(&keys_in[1..5])
    );
    assert_eq!(
        get(api, "user123:2021-05-02|2021-05-30").await,
        page_of(&keys_in[2..4])
    );
    assert_eq!(
        get(api, "user123:2021-05-17|2021-05-17").await,
        page_of(&keys_in[2..3]),
        "a == b is one item, still a page"
    );
    assert_eq!(
        get(api, "user123:2021-05-31|2021-05-01").await,
        json!({"items": []}),
        "a > b is empty"
    );
    assert_eq!(
        query(api, "user123:2021-05-01|2021-05-31", rev(q())).await,
        page_of(&[keys_in[4], keys_in[3], keys_in[2], keys_in[1]])
    );
    assert_eq!(
        get(api, "2021-05-01|2021-05-31").await,
        page_of(&["2021-05-02"])
    );
}

/// SPEC "get": keys sort byte-wise (not by locale, not case-folded, shorter prefix
/// first), simple keys merged across shards, namespaced keys alike.
pub async fn order_is_bytewise(api: &impl Api) {
    let sorted = [
        "0", "10", "9", "A", "B", "Z", "a", "a b", "a-", "aa", "~", "é", "€",
    ];
    let mut shuffled = sorted;
    shuffled.reverse();
    shuffled.swap(2, 7);
    put_keys(api, &shuffled).await;
    let ns: Vec<String> = sorted.iter().map(|k| format!("ns:{k}")).collect();
    let ns: Vec<&str> = ns.iter().map(String::as_str).collect();
    put_keys(api, &ns).await;
    assert_eq!(get(api, "*").await, page_of(&sorted));
    assert_eq!(get(api, "ns:*").await, page_of(&ns));
    let mut rsorted = sorted;
    rsorted.reverse();
    assert_eq!(query(api, "*", rev(q())).await, page_of(&rsorted));
    let mut rns = ns.clone();
    rns.reverse();
    assert_eq!(query(api, "ns:*", rev(q())).await, page_of(&rns));
    assert_eq!(get(api, ">Z").await, page_of(&sorted[6..]));
    assert_eq!(get(api, "ns:>=a").await, page_of(&ns[6..]));
    assert_eq!(get(api, "a*").await, page_of(&sorted[6..10]));
}

/// SPEC "get": `limit` defaults to 100 and must be 1..=1000, else
/// `limit_out_of_range` (for key and label queries alike).
pub async fn limit_default_and_range(api: &impl Api) {
    let names: Vec<String> = (0..101).map(|i| format!("k{i:03}")).collect();
    let writes = names
        .iter()
        .map(|k| api.set(k, json!(k), opts().label(1, "same")));
    for r in futures::future::join_all(writes).await {
        ok(r);
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let first = get(api, "*").await;
    assert_eq!(keys(&first), all[..100]);
    assert_eq!(last_key(&first).as_deref(), Some("k099"));
    assert_eq!(
        query(api, "*", start(q(), "k099")).await,
        page_of(&all[100..])
    );
    let labelled = by_label(api, "label1", "same", q()).await;
    assert_eq!(keys(&labelled), all[..100]);
    assert!(last_key(&labelled).is_some());
    let one = query(api, "*", limit(1)).await;
    assert_eq!(keys(&one), ["k000"]);
    assert_eq!(last_key(&one).as_deref(), Some("k000"));
    assert_eq!(query(api, "*", limit(1000)).await, page_of(&all));
    assert_eq!(query(api, "*", limit(101)).await, page_of(&all));
    for n in [0, -1, 1001, i64::MAX, i64::MIN] {
        assert_eq!(
            code(api.get("*", limit(n)).await),
            ErrorCode::LimitOutOfRange,
            "limit {n}"
        );
        assert_eq!(
            code(api.get_by_label("label1", "*", limit(n)).await),
            ErrorCode::LimitOutOfRange,
            "label limit {n}"
        );
    }
}

/// SPEC "get": `limit: 1000` returns 1000 items when more exist.
pub async fn limit_1000_returns_1000(api: &impl Api) {
    let names: Vec<String> = (0..1001).map(|i| format!("n:{i:04}")).collect();
    let writes = names.iter().map(|k| api.set(k, json!(1), opts()));
    for r in futures::future::join_all(writes).await {
        ok(r);
    }
    let page = query(api, "n:*", limit(1000)).await;
    let got = keys(&page);
    assert_eq!(got.len(), 1000);
    assert_eq!(got, names[..1000]);
    assert_eq!(last_key(&page).as_deref(), Some("n:0999"));
    assert_eq!(
        query(api, "n:*", start(limit(1000), "n:0999")).await,
        items(&[("n:1000", json!(1))])
    );
}

/// SPEC "get": `reverse` sorts descending, for every form, with `limit` and `start`.
pub async fn reverse_order(api: &impl Api) {
    // Seed: `data.get("users:*", { limit: 10, reverse: true })`.
    let users: Vec<String> = (0..12).map(|i| format!("users:u{i:02}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    put_keys(api, &refs).await;
    let p = query(api, "users:*", rev(limit(10))).await;
    let mut newest: Vec<&str> = refs.clone();
    newest.reverse();
    assert_eq!(keys(&p), newest[..10]);
    assert_eq!(last_key(&p).as_deref(), Some("users:u02"));

    put_keys(api, &["a", "b", "c", "d", "e", "f", "ns:a", "ns:b", "ns:c"]).await;
    assert_eq!(
        query(api, "*", rev(q())).await,
        page_of(&["f", "e", "d", "c", "b", "a"])
    );
    let p = query(api, "*", rev(limit(2))).await;
    assert_eq!(keys(&p), ["f", "e"]);
    assert_eq!(last_key(&p).as_deref(), Some("e"));
    let p = query(api, "*", start(rev(limit(2)), "e")).await;
    assert_eq!(keys(&p), ["d", "c"]);
    assert_eq!(last_key(&p).as_deref(), Some("c"));
    assert_eq!(
        query(api, "*", start(rev(limit(2)), "c")).await,
        page_of(&["b", "a"])
    );
    assert_eq!(
        query(api, ">b", rev(q())).await,
        page_of(&["f", "e", "d", "c"])
    );
    assert_eq!(query(api, "b|d", rev(q())).await, page_of(&["d", "c", "b"]));
    assert_eq!(query(api, "<=b", rev(q())).await, page_of(&["b", "a"]));
    assert_eq!(
        query(api, "ns:*", rev(q())).await,
        page_of(&["ns:c", "ns:b", "ns:a"])
    );
}

/// SPEC "get": `start` is exclusive and only narrows the pattern's range; it may name
/// a key that does not exist.
pub async fn start_is_exclusive(api: &impl Api) {
    put_keys(api, &["a", "b", "c", "d", "e", "ns:a", "ns:b", "ns:c"]).await;
    assert_eq!(
        query(api, "*", start(q(), "b")).await,
        page_of(&["c", "d", "e"])
    );
    assert_eq!(
        query(api, "*", start(q(), "bb")).await,
        page_of(&["c", "d", "e"])
    );
    assert_eq!(
        query(api, "*", start(q(), "0")).await,
        page_of(&["a", "b", "c", "d", "e"])
    );
    assert_eq!(query(api, "*", start(q(), "e")).await, json!({"items": []}));
    assert_eq!(query(api, "*", start(q(), "z")).await, json!({"items": []}));
    assert_eq!(
        query(api, "b|d", start(q(), "a")).await,
        page_of(&["b", "c", "d"])
    );
    assert_eq!(
        query(api, "b|d", start(q(), "b")).await,
        page_of(&["c", "d"])
    );
    assert_eq!(
        query(api, ">b", start(q(), "c")).await,
        page_of(&["d", "e"])
    );
    assert_eq!(
        query(api, "ns:*", start(q(), "ns:a")).await,
        page_of(&["ns:b", "ns:c"])
    );
    assert_eq!(
        query(api, "*", start(rev(q()), "c")).await,
        page_of(&["b", "a"])
    );
    assert_eq!(
        query(api, "*", start(rev(q()), "a")).await,
        json!({"items": []})
    );
    assert_eq!(
        query(api, "ns:*", start(rev(q()), "ns:c")).await,
        page_of(&["ns:b", "ns:a"])
    );
}

/// SPEC "get": the seed's own pagination sample, `get("foo:*", {limit: 3, start:
/// "foobaz"})`. A `start` that does not begin with the pattern's `ns:` is a key within
/// that namespace, so it continues after `foo:foobaz` — forwards and backwards — and a
/// loop that pages with key parts ends. Guards against the start being ignored (it once
/// read as a simple key, outside the pattern, and every page was the first).
pub async fn start_without_the_namespace_is_a_key_within_it(api: &impl Api) {
    put_keys(
        api,
        &[
            "foo:bar",
            "foo:baz",
            "foo:foobar",
            "foo:foobaz",
            "foo:foobazz",
            "foo:qux",
            "foo:zap",
            "foobaz",
            "foobazz",
            "zzz",
        ],
    )
    .await;
    let after = page_of(&["foo:foobazz", "foo:qux", "foo:zap"]);
    assert_eq!(query(api, "foo:*", start(limit(3), "foobaz")).await, after);
    assert_eq!(
        query(api, "foo:*", start(limit(3), "foo:foobaz")).await,
        after
    );
    assert_eq!(
        query(api, "foo:*", start(rev(limit(3)), "foobaz")).await,
        page_of(&["foo:foobar", "foo:baz", "foo:bar"])
    );
    // Another namespace's text is a key part here too: `foo:bar:x`.
    assert_eq!(
        query(api, "foo:*", start(limit(2), "bar:x")).await,
        json!({"items": [
            {"key": "foo:baz", "value": "foo:baz"},
            {"key": "foo:foobar", "value": "foo:foobar"},
        ], "lastKey": "foo:foobar"})
    );
    assert_eq!(
        query(api, "foo:*", start(q(), "zzz")).await,
        json!({"items": []})
    );
    assert_eq!(
        query(api, "foo:f*", start(q(), "foobar")).await,
        page_of(&["foo:foobaz", "foo:foobazz"])
    );
    // Paging with the key part of each lastKey walks the namespace once and ends.
    let mut o = limit(2);
    let mut walked = Vec::new();
    loop {
        let page = query(api, "foo:*", o.clone()).await;
        walked.extend(keys(&page));
        let Some(last) = last_key(&page) else { break };
        assert!(walked.len() <= 7, "paging does not end: {walked:?}");
        let part = last.strip_prefix("foo:").expect("a key of foo");
        o.start = Some(part.to_owned());
    }
    assert_eq!(
        walked,
        [
            "foo:bar",
            "foo:baz",
            "foo:foobar",
            "foo:foobaz",
            "foo:foobazz",
            "foo:qux",
            "foo:zap"
        ]
    );
}

/// SPEC "get": `lastKey` is present exactly when more items remain — not when the page
/// ends exactly at the last item, and items outside the range do not count.
pub async fn last_key_exactly_when_more_remain(api: &impl Api) {
    let all = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    put_keys(api, &all).await;
    let p = query(api, "*", limit(5)).await;
    assert_eq!(keys(&p), all[..5]);
    assert_eq!(last_key(&p).as_deref(), Some("e"));
    assert_eq!(
        query(api, "*", start(limit(5), "e")).await,
        page_of(&all[5..])
    );
    assert_eq!(query(api, "*", limit(10)).await, page_of(&all));
    assert_eq!(query(api, "*", limit(11)).await, page_of(&all));
    assert_eq!(
        last_key(&query(api, "*", limit(9)).await).as_deref(),
        Some("i")
    );
    assert_eq!(query(api, "b|d", limit(3)).await, page_of(&["b", "c", "d"]));
    assert_eq!(query(api, "<d", limit(3)).await, page_of(&["a", "b", "c"]));
    assert_eq!(query(api, ">g", limit(3)).await, page_of(&["h", "i", "j"]));
    assert_eq!(last_key(&query(api, "*", rev(limit(10))).await), None);
    let p = query(api, "*", rev(limit(5))).await;
    assert_eq!(last_key(&p).as_deref(), Some("f"));
    let p = query(api, "*", start(rev(limit(5)), "f")).await;
    assert_eq!(keys(&p), ["e", "d", "c", "b", "a"]);
    assert_eq!(last_key(&p), None);
    assert_eq!(
        query(api, "b|d", rev(limit(3))).await,
        page_of(&["d", "c", "b"])
    );
}

/// SPEC "get": paging with `start: lastKey` returns every item exactly once, in order,
/// forwards and backwards, for simple keys spread over shards and for a namespace.
pub async fn paging_neither_skips_nor_repeats(api: &impl Api) {
    let simple: Vec<String> = (0..53).map(|i| format!("s{:02}", (i * 37) % 53)).collect();
    let names: Vec<String> = (0..31).map(|i| format!("ns:k{i:02}")).collect();
    let all: Vec<&str> = simple.iter().chain(&names).map(String::as_str).collect();
    put_keys(api, &all).await;
    let mut simple_sorted = simple.clone();
    simple_sorted.sort();
    for l in [1, 4, 7, 53, 100] {
        let pages = walk(api, "*", limit(l), 60).await;
        assert_eq!(walked_keys(&pages), simple_sorted, "forward, limit {l}");
        let pages = walk(api, "*", rev(limit(l)), 60).await;
        let mut r = simple_sorted.clone();
        r.reverse();
        assert_eq!(walked_keys(&pages), r, "reverse, limit {l}");
    }
    let pages = walk(api, "ns:*", limit(6), 10).await;
    assert_eq!(pages.len(), 6);
    assert_eq!(walked_keys(&pages), names);
    let pages = walk(api, "s1|s4", rev(limit(3)), 20).await;
    let mut r: Vec<String> = simple_sorted
        .iter()
        .filter(|k| k.as_str() >= "s1" && k.as_str() <= "s4")
        .cloned()
        .collect();
    r.reverse();
    assert_eq!(walked_keys(&pages), r);
}

/// SPEC "get": pagination never skips or repeats an item that was present for the
/// whole scan, even with writes between pages; items come in strictly ascending order.
pub async fn paging_with_writes_between_pages(api: &impl Api) {
    let names: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    put_keys(api, &refs).await;
    let mut seen: Vec<String> = Vec::new();
    let mut o = limit(4);
    for round in 0.. {
        assert!(round < 20, "too many pages");
        let page = query(api, "*", o.clone()).await;
        seen.extend(keys(&page));
        let Some(last) = last_key(&page) else {
            break;
        };
        // Writes between pages: behind the cursor, ahead of it, and removals ahead.
        put(api, &format!("p0{round}x"), json!(round)).await;
        put(api, &format!("p2{round}x"), json!(round)).await;
        put(api, "p15", json!("updated")).await;
        if round == 0 {
            assert_eq!(ok(api.remove("p29").await), json!(true));
        }
        o.start = Some(last);
    }
    for w in seen.windows(2) {
        assert!(w[0] < w[1], "not strictly ascending: {:?}", w);
    }
    for k in &names[..29] {
        assert!(
            seen.contains(k),
            "{k} present for the whole scan but skipped"
        );
    }
    assert!(
        !seen.contains(&"p29".to_owned()),
        "a removed item was returned"
    );
}

/// SPEC "get": a page stops before it would pass 1 MiB, and says `lastKey`; five items
/// of ~300 KiB come as 3 + 2 (forwards and backwards), simple keys across shards.
pub async fn page_stops_before_one_mib(api: &impl Api) {
    let big = "x".repeat(300 * 1024);
    let names = ["big1", "big2", "big3", "big4", "big5"];
    for k in names {
        put(api, k, json!(big)).await;
    }
    let check = |page: &Value| {
        let bytes: usize = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i["key"].as_str().map_or(0, str::len) + i["value"].as_str().map_or(0, str::len)
            })
            .sum();
        assert!(bytes <= 1024 * 1024, "page of {bytes} bytes");
    };
    let p1 = get(api, "big*").await;
    check(&p1);
    assert_eq!(keys(&p1), ["big1", "big2", "big3"]);
    assert_eq!(last_key(&p1).as_deref(), Some("big3"));
    let p2 = query(api, "big*", start(q(), "big3")).await;
    assert_eq!(keys(&p2), ["big4", "big5"]);
    assert_eq!(last_key(&p2), None);
    assert_eq!(p2["items"][1]["value"], json!(big));
    let r1 = query(api, "*", rev(q())).await;
    check(&r1);
    assert_eq!(keys(&r1), ["big5", "big4", "big3"]);
    assert_eq!(last_key(&r1).as_deref(), Some("big3"));
    let r2 = query(api, "*", start(rev(q()), "big3")).await;
    assert_eq!(keys(&r2), ["big2", "big1"]);
    assert_eq!(last_key(&r2), None);
    let l2 = query(api, "*", limit(2)).await;
    assert_eq!(keys(&l2), ["big1", "big2"], "limit still applies first");
}

/// SPEC "get": a malformed pattern is `invalid_query`, for key and label queries.
pub async fn malformed_patterns_are_invalid_query(api: &impl Api) {
    put(api, "a", json!(1)).await;
    for bad in [
        "", "   ", "ns:", ">", ">=", "<", "<=", "|", "a|", "|b", "ns:>", "ns:>=", "ns:<", "ns:<=",
        "ns:|", "ns:a|", "ns:|b",
    ] {
        assert_eq!(
            code(api.get(bad, q()).await),
            ErrorCode::InvalidQuery,
            "get {bad:?}"
        );
        assert_eq!(
            code(api.get_by_label("label1", bad, q()).await),
            ErrorCode::InvalidQuery,
            "label {bad:?}"
        );
    }
    assert_eq!(get(api, "a").await, json!(1));
}

// ---- labels --------------------------------------------------------------------------

/// Seed "Getting items by their labels": the order `user-1234:ORDER_2021-05-18_9321`
/// with `label1: 'ORDER-9321'` is found by user (key prefix) and by order id
/// (`getByLabel('label1', 'ORDER-9321')` or `get(.., {label: 'label1'})`), and a label
/// query always returns `{items}`, even for an exact value.
pub async fn labels_seed_order_example(api: &impl Api) {
    let order = json!({"total": 42.5, "lines": ["book"]});
    let other = json!({"total": 7, "lines": ["pen"]});
    ok(api
        .set(
            "user-1234:ORDER_2021-05-18_9321",
            order.clone(),
            opts().label(1, "ORDER-9321"),
        )
        .await);
    ok(api
        .set(
            "user-1234:ORDER_2021-05-20_9400",
            other.clone(),
            opts().label(1, "ORDER-9400"),
        )
        .await);
    put(api, "user-1234:PROFILE", json!({"name": "ann"})).await;
    let both = items(&[
        ("user-1234:ORDER_2021-05-18_9321", order.clone()),
        ("user-1234:ORDER_2021-05-20_9400", other.clone()),
    ]);
    assert_eq!(get(api, "user-1234:ORDER_*").await, both);
    let one = items(&[("user-1234:ORDER_2021-05-18_9321", order.clone())]);
    assert_eq!(by_label(api, "label1", "ORDER-9321", q()).await, one);
    assert_eq!(query(api, "ORDER-9321", on_label(q(), "label1")).await, one);
    assert_eq!(by_label(api, "label1", "ORDER-*", q()).await, both);
    assert_eq!(
        by_label(api, "label2", "ORDER-9321", q()).await,
        json!({"items": []})
    );
    assert_eq!(
        by_label(api, "label1", "ORDER-1", q()).await,
        json!({"items": []})
    );
    let m = by_label(api, "label1", "ORDER-9400", meta()).await;
    assert_eq!(
        untimed(&m["items"][0]),
        json!({"key": "user-1234:ORDER_2021-05-20_9400", "value": other, "label1": "ORDER-9400"})
    );
}

/// Seed: `set("foo", "bar", {label1: "baz", label2: "baz:bat"})` — labels use
/// namespaces like keys: `baz:bat` is in namespace `baz`, so `*` (simple values) does
/// not find it and `baz:*` does.
pub async fn labels_seed_namespaced_value(api: &impl Api) {
    ok(api
        .set(
            "foo",
            json!("bar"),
            opts().label(1, "baz").label(2, "baz:bat"),
        )
        .await);
    let the_item = items(&[("foo", json!("bar"))]);
    assert_eq!(by_label(api, "label1", "baz", q()).await, the_item);
    assert_eq!(by_label(api, "label2", "baz:bat", q()).await, the_item);
    assert_eq!(by_label(api, "label2", "baz:*", q()).await, the_item);
    assert_eq!(by_label(api, "label2", "baz:b*", q()).await, the_item);
    assert_eq!(by_label(api, "label1", "*", q()).await, the_item);
    assert_eq!(
        by_label(api, "label2", "*", q()).await,
        json!({"items": []})
    );
    assert_eq!(
        by_label(api, "label1", "baz:*", q()).await,
        json!({"items": []})
    );
    assert_eq!(
        by_label(api, "label2", "bat", q()).await,
        json!({"items": []})
    );
}

/// SPEC "get": label queries run every pattern form on label values (exact, prefix,
/// `>` `>=` `<` `<=`, `a|b`), ordered by label value — not by key.
pub async fn label_value_forms(api: &impl Api) {
    let labelled = [
        ("z1", "2021-05-01"),
        ("a:y2", "2021-05-17"),
        ("x3", "2021-05-18"),
        ("w4", "2021-05-18T10"),
        ("b:v5", "2021-05-31"),
        ("u6", "2021-06-01"),
    ];
    for (k, l) in labelled {
        ok(api.set(k, json!(k), opts().label(3, l)).await);
    }
    put(api, "t7", json!("t7")).await;
    ok(api
        .set("s8", json!("s8"), opts().label(3, "d:2021-05-18"))
        .await);
    let ks: Vec<&str> = labelled.iter().map(|(k, _)| *k).collect();
    let l3 = |p: &'static str| by_label(api, "label3", p, q());
    assert_eq!(l3("2021-05-18").await, page_of(&ks[2..3]));
    assert_eq!(l3("2021-05*").await, page_of(&ks[..5]));
    assert_eq!(l3("2021-05-18*").await, page_of(&ks[2..4]));
    assert_eq!(l3(">2021-05-18").await, page_of(&ks[3..]));
    assert_eq!(l3(">=2021-05-18").await, page_of(&ks[2..]));
    assert_eq!(l3("<2021-05-18").await, page_of(&ks[..2]));
    assert_eq!(l3("<=2021-05-18").await, page_of(&ks[..3]));
    assert_eq!(l3("2021-05-01|2021-05-31").await, page_of(&ks[..5]));
    assert_eq!(l3("*").await, page_of(&ks));
    assert_eq!(l3("d:*").await, page_of(&["s8"]));
    let mut r = ks.clone();
    r.reverse();
    assert_eq!(by_label(api, "label3", "*", rev(q())).await, page_of(&r));
    assert_eq!(
        query(api, ">=2021-05-18", on_label(rev(q()), "label3")).await,
        page_of(&r[..4])
    );
}

/// SPEC "get": label results are ordered by (label value, key); keys of any namespace
/// and any shard interleave by key text.
pub async fn label_order_is_value_then_key(api: &impl Api) {
    for (k, l) in [
        ("z", "a"),
        ("a:1", "b"),
        ("m", "a"),
        ("b:9", "a"),
        ("y", "b"),
        ("c", "a:x"),
    ] {
        ok(api.set(k, json!(k), opts().label(5, l)).await);
    }
    assert_eq!(
        by_label(api, "label5", "*", q()).await,
        page_of(&["b:9", "m", "z", "a:1", "y"])
    );
    assert_eq!(
        by_label(api, "label5", "*", rev(q())).await,
        page_of(&["y", "a:1", "z", "m", "b:9"])
    );
    assert_eq!(
        by_label(api, "label5", "a", q()).await,
        page_of(&["b:9", "m", "z"])
    );
    assert_eq!(by_label(api, "label5", "a:*", q()).await, page_of(&["c"]));
}

/// SPEC "get": a label query's `lastKey` is a cursor that, passed back unchanged as
/// `start`, gives the next page; paging never skips or repeats, forwards and
/// backwards, including inside a run of equal label values.
pub async fn label_paging_with_cursor(api: &impl Api) {
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..20 {
        let (k, l) = (format!("k{i:02}"), format!("v{}", i % 4));
        ok(api.set(&k, json!(k), opts().label(2, l.clone())).await);
        expected.push((l, k));
    }
    for (k, l) in [("ns:k", "v1"), ("other:a", "v3")] {
        ok(api.set(k, json!(k), opts().label(2, l)).await);
        expected.push((l.to_owned(), k.to_owned()));
    }
    expected.sort();
    let order: Vec<String> = expected.iter().map(|(_, k)| k.clone()).collect();
    for l in [1, 3, 5, 11, 22] {
        let pages = walk(api, "*", on_label(limit(l), "label2"), 30).await;
        assert_eq!(walked_keys(&pages), order, "forward, limit {l}");
        let pages = walk(api, "*", on_label(rev(limit(l)), "label2"), 30).await;
        let mut r = order.clone();
        r.reverse();
        assert_eq!(walked_keys(&pages), r, "reverse, limit {l}");
    }
    let pages = walk(api, "v1|v2", on_label(limit(4), "label2"), 10).await;
    let mid: Vec<String> = expected
        .iter()
        .filter(|(l, _)| l == "v1" || l == "v2")
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(walked_keys(&pages), mid);
    assert_eq!(pages.len(), 3, "11 items, limit 4: 3 pages");
}

/// SPEC "get": label reads see every acknowledged write — a changed, cleared or
/// dropped label leaves the index at once, and label results carry the newest value.
pub async fn label_changes_update_index_immediately(api: &impl Api) {
    let empty = json!({"items": []});
    ok(api.set("k", json!(1), opts().label(1, "old")).await);
    assert_eq!(
        by_label(api, "label1", "old", q()).await,
        items(&[("k", json!(1))])
    );
    ok(api.set("k", json!(2), opts().label(1, "new")).await);
    assert_eq!(by_label(api, "label1", "old", q()).await, empty);
    assert_eq!(
        by_label(api, "label1", "new", q()).await,
        items(&[("k", json!(2))])
    );
    put(api, "k", json!(3)).await;
    assert_eq!(
        by_label(api, "label1", "new", q()).await,
        items(&[("k", json!(3))])
    );
    ok(api.add("k", None, 1.into(), false).await);
    assert_eq!(
        by_label(api, "label1", "*", q()).await,
        items(&[("k", json!(4))])
    );
    // Simple value to namespaced value and back.
    ok(api.set("k", json!(5), opts().label(1, "ns:new")).await);
    assert_eq!(by_label(api, "label1", "*", q()).await, empty);
    assert_eq!(
        by_label(api, "label1", "ns:*", q()).await,
        items(&[("k", json!(5))])
    );
    let r = ok(api.set("k", json!(6), clear_label(opts().meta(), 1)).await);
    assert_eq!(untimed(&r), json!({"key": "k", "value": 6}));
    assert_eq!(by_label(api, "label1", "ns:*", q()).await, empty);
    ok(api.set("k", json!(7), opts().label(1, "again")).await);
    ok(api.set("k", json!(8), opts().overwrite()).await);
    assert_eq!(by_label(api, "label1", "again", q()).await, empty);
    ok(api
        .set("k", json!(9), opts().overwrite().label(4, "x"))
        .await);
    ok(api
        .set_batch(vec![bi_label("k", json!(10), 4, "y")], true, false)
        .await);
    assert_eq!(by_label(api, "label4", "x", q()).await, empty);
    assert_eq!(
        by_label(api, "label4", "y", q()).await,
        items(&[("k", json!(10))])
    );
    assert_eq!(ok(api.remove("k").await), json!(true));
    assert_eq!(by_label(api, "label4", "*", q()).await, empty);
}

/// SPEC "get": the label option must be `label1`..`label5`; any other name is
/// `invalid_query`.
pub async fn label_invalid_name(api: &impl Api) {
    ok(api.set("k", json!(1), opts().label(1, "L")).await);
    for name in [
        "label0", "label6", "Label1", "LABEL1", "label", "labels1", "", "key",
    ] {
        assert_eq!(
            code(api.get("*", on_label(q(), name)).await),
            ErrorCode::InvalidQuery,
            "get label {name:?}"
        );
        assert_eq!(
            code(api.get_by_label(name, "L", q()).await),
            ErrorCode::InvalidQuery,
            "getByLabel {name:?}"
        );
    }
    for name in ["label1", "label2", "label3", "label4", "label5"] {
        ok(api.get_by_label(name, "*", q()).await);
    }
}

/// SPEC "Keys": label values follow the key rules — trimmed, 1..=256 bytes
/// (`key_too_long`), addressable (`invalid_key`); a refused label writes nothing.
pub async fn label_values_follow_key_rules(api: &impl Api) {
    let r = ok(api
        .set("k", json!(1), opts().meta().label(1, "  L  "))
        .await);
    assert_eq!(r["label1"], json!("L"));
    assert_eq!(
        by_label(api, "label1", "L", q()).await,
        items(&[("k", json!(1))])
    );
    let l256 = "l".repeat(256);
    ok(api
        .set("k256", json!(2), opts().label(2, l256.clone()))
        .await);
    assert_eq!(
        by_label(api, "label2", &l256, q()).await,
        items(&[("k256", json!(2))])
    );
    ok(api.set("deep", json!(3), opts().label(3, "ns:a:b")).await);
    assert_eq!(
        by_label(api, "label3", "ns:a*", q()).await,
        items(&[("deep", json!(3))])
    );
    let before = snapshot(api, &["*"], &[("label1", "*")]).await;
    let bad = [
        ("l".repeat(257), ErrorCode::KeyTooLong),
        ("x*".to_owned(), ErrorCode::InvalidKey),
        ("a|b".to_owned(), ErrorCode::InvalidKey),
        (">x".to_owned(), ErrorCode::InvalidKey),
        ("ns:<=x".to_owned(), ErrorCode::InvalidKey),
        ("ns:*".to_owned(), ErrorCode::InvalidKey),
        ("ns:".to_owned(), ErrorCode::InvalidKey),
        ("   ".to_owned(), ErrorCode::InvalidKey),
    ];
    for (label, expected) in bad {
        for key in ["k", "fresh"] {
            assert_eq!(
                code(api.set(key, json!(9), opts().label(5, label.clone())).await),
                expected,
                "label {label:?} on {key}"
            );
        }
    }
    assert_eq!(snapshot(api, &["*"], &[("label1", "*")]).await, before);
}

/// SPEC "get": the 1 MiB page cap applies to label queries too; the cursor resumes.
pub async fn label_page_stops_before_one_mib(api: &impl Api) {
    let big = "y".repeat(300 * 1024);
    for k in ["a", "b:1", "c", "d:1", "e"] {
        ok(api.set(k, json!(big), opts().label(1, "big")).await);
    }
    let p1 = by_label(api, "label1", "big", q()).await;
    assert_eq!(keys(&p1), ["a", "b:1", "c"]);
    let cursor = last_key(&p1).expect("more remain");
    let p2 = by_label(api, "label1", "big", start(q(), &cursor)).await;
    assert_eq!(keys(&p2), ["d:1", "e"]);
    assert_eq!(last_key(&p2), None);
}

// ---- ttl -----------------------------------------------------------------------------

/// SPEC "set" ttl: an integer greater than now is an absolute epoch second; any other
/// positive integer is added to now.
pub async fn ttl_relative_and_absolute_integers(api: &impl Api) {
    let before = now_s();
    let r = ok(api.set("rel", json!(1), opts().meta().ttl(3600)).await);
    let after = now_s();
    assert_eq!(
        untimed_ttl(&r, before + 3600, after + 3600),
        json!({"key": "rel", "value": 1})
    );
    let r = ok(api.set("one", json!(1), opts().meta().ttl(1)).await);
    untimed_ttl(&r, before + 1, now_s() + 1);
    let abs = now_s() + 100_000;
    let r = ok(api.set("abs", json!(1), opts().meta().ttl(abs)).await);
    assert_eq!(r["ttl"], json!(abs));
    let soon = now_s() + 50;
    let r = ok(api.set("soon", json!(1), opts().meta().ttl(soon)).await);
    assert_eq!(r["ttl"], json!(soon), "just above now is still absolute");
    assert_eq!(query(api, "abs", meta()).await["ttl"], json!(abs));
}

/// SPEC "set" ttl: full and partial ISO-8601 dates and date-times are absolute, UTC
/// when no offset is given.
pub async fn ttl_iso_dates(api: &impl Api) {
    let day = days_from_civil(2099, 12, 1) * 86_400;
    assert_eq!(day, 4_099_766_400, "the test's own calendar");
    let cases = [
        ("2099-12-01", day),
        ("2099-12-01T10:00", day + 36_000),
        ("2099-12-01T10:00:00Z", day + 36_000),
        ("2099-12-01T10:00:30Z", day + 36_030),
        ("2099-12-01T10:00:00+02:00", day + 28_800),
        ("2099-12-01T10:00:00-01:30", day + 41_400),
        ("2099-12", day),
    ];
    for (text, at) in cases {
        let r = ok(api.set("k", json!(1), opts().meta().ttl(text)).await);
        assert_eq!(r["ttl"], json!(at), "ttl {text:?}");
        assert_eq!(query(api, "k", meta()).await["ttl"], json!(at));
    }
}

/// SPEC "set" ttl: `null` clears the ttl.
pub async fn ttl_null_clears(api: &impl Api) {
    let r = ok(api.set("k", json!(1), opts().meta().ttl(3600)).await);
    assert!(r["ttl"].is_i64());
    let r = ok(api.set("k", json!(2), opts().meta().ttl(Value::Null)).await);
    assert_eq!(untimed(&r), json!({"key": "k", "value": 2}));
    let r = ok(api.set("k", json!(3), opts().meta()).await);
    assert_eq!(untimed(&r), json!({"key": "k", "value": 3}));
    let r = ok(api
        .set("fresh", json!(1), opts().meta().ttl(Value::Null))
        .await);
    assert_eq!(untimed(&r), json!({"key": "fresh", "value": 1}));
}

/// SPEC "set" ttl: zero, negative or unparsable is `invalid_ttl`, for single and batch
/// sets, and changes nothing. (A date in the past is refused the same way: SPEC does
/// not list it, but it would make an item that is born expired.)
pub async fn ttl_invalid(api: &impl Api) {
    ok(api.set("k", json!({"a": 1}), opts().ttl(3600)).await);
    let before = snapshot(api, &["*"], &[]).await;
    let bad = [
        json!(0),
        json!(-5),
        json!(1.5),
        json!("tomorrow"),
        json!(""),
        json!("2099-13-01"),
        json!("2020-01-01"),
        json!(true),
        json!([1]),
        json!({"s": 1}),
    ];
    for ttl in bad {
        assert_eq!(
            code(api.set("k", json!({"b": 2}), opts().ttl(ttl.clone())).await),
            ErrorCode::InvalidTtl,
            "ttl {ttl}"
        );
        assert_eq!(
            code(api.set("new", json!(1), opts().ttl(ttl.clone())).await),
            ErrorCode::InvalidTtl,
            "ttl {ttl} on a new key"
        );
        let mut item = bi("new", json!(1));
        item.ttl = Some(ttl.clone());
        assert_eq!(
            code(
                api.set_batch(vec![bi("k", json!(0)), item], true, false)
                    .await
            ),
            ErrorCode::InvalidTtl,
            "batch ttl {ttl}"
        );
    }
    assert_eq!(snapshot(api, &["*"], &[]).await, before);
}

/// SPEC "get": expired items are never returned — an item with a 1 s ttl leaves exact
/// reads, batch reads, key scans and label scans within ~2 s, and `lastKey` does not
/// count it. Afterwards the key is free: remove finds nothing, add and set start over.
pub async fn ttl_expiry_hides_item(api: &impl Api) {
    // Expiry has whole-second granularity: a 1 s ttl set late in a second ends at the
    // next second boundary. Start early in a second so the reads right after the
    // writes still see the items.
    while now_ms() % 1000 > 300 {
        sleep_ms(20).await;
    }
    ok(api
        .set("tmp", json!({"a": 1}), opts().ttl(1).label(1, "gone"))
        .await);
    ok(api
        .set("e:tmp", json!(1), opts().ttl(1).label(2, "e:gone"))
        .await);
    ok(api.set("keep", json!(1), opts().label(1, "gone")).await);
    put(api, "e:keep", json!(1)).await;
    ok(api.set("x1", json!(1), opts()).await);
    ok(api.set("x2", json!(2), opts().ttl(1)).await);
    assert_eq!(get(api, "tmp").await, json!({"a": 1}));
    assert_eq!(
        keys(&by_label(api, "label1", "gone", q()).await),
        ["keep", "tmp"]
    );
    let t0 = Instant::now();
    loop {
        let hidden = get(api, "tmp").await.is_null()
            && get(api, "e:tmp").await.is_null()
            && keys(&get(api, "*").await) == ["keep", "x1"]
            && keys(&get(api, "e:*").await) == ["e:keep"]
            && keys(&by_label(api, "label1", "gone", q()).await) == ["keep"]
            && keys(&by_label(api, "label2", "e:*", q()).await).is_empty()
            && keys(&ok(api.get_many(&["tmp", "e:tmp", "keep"], false).await)) == ["keep"]
            && query(api, "x*", limit(1)).await == items(&[("x1", json!(1))]);
        if hidden {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "expired items still visible after {:?}: tmp={} *={} label={}",
            t0.elapsed(),
            get(api, "tmp").await,
            get(api, "*").await,
            by_label(api, "label1", "gone", q()).await
        );
        sleep_ms(50).await;
    }
    assert_eq!(ok(api.remove("tmp").await), json!(false));
    let r = ok(api.add("e:tmp", None, 5.into(), true).await);
    assert_eq!(untimed(&r), json!({"key": "e:tmp", "value": 5}));
    assert_eq!(put(api, "x2", json!({"b": 2})).await, json!({"b": 2}));
    assert_eq!(
        untimed(&query(api, "x2", meta()).await),
        json!({"key": "x2", "value": {"b": 2}})
    );
}

// ---- item size -----------------------------------------------------------------------

/// SPEC "Values and items": key + value + labels is at most 400 KiB; more is
/// `value_too_large` (for set, update-merge and batch) and writes nothing.
pub async fn item_size_cap(api: &impl Api) {
    const ITEM: usize = 400 * 1024;
    assert_eq!(
        code(api.set("big", json!("x".repeat(ITEM)), opts()).await),
        ErrorCode::ValueTooLarge
    );
    assert_eq!(get(api, "big").await, Value::Null);
    let fits = "x".repeat(ITEM - 200);
    put(api, "fits", json!(fits)).await;
    assert_eq!(get(api, "fits").await, json!(fits));
    let before = query(api, "fits", meta()).await;
    assert_eq!(
        code(
            api.set("fits", json!(fits), opts().label(1, "L".repeat(250)))
                .await
        ),
        ErrorCode::ValueTooLarge,
        "labels count towards the size"
    );
    assert_eq!(query(api, "fits", meta()).await, before);
    let half = "h".repeat(250 * 1024);
    put(api, "obj", json!({"a": half})).await;
    assert_eq!(
        code(api.set("obj", json!({"b": half}), opts()).await),
        ErrorCode::ValueTooLarge,
        "the merged item is too large"
    );
    assert_eq!(get(api, "obj").await, json!({"a": half}));
    assert_eq!(
        code(
            api.set_batch(
                vec![bi("small", json!(1)), bi("big", json!("x".repeat(ITEM)))],
                true,
                false
            )
            .await
        ),
        ErrorCode::ValueTooLarge
    );
    assert_eq!(get(api, "small").await, Value::Null);
    assert_eq!(keys(&get(api, "*").await), ["fits", "obj"]);
}

// ---- remove --------------------------------------------------------------------------

/// Seed "Removing items": `remove("foo")`, `remove("foo:bar")` → `true` when an item
/// was removed, `false` when none existed; the item is gone from every read.
pub async fn remove_single(api: &impl Api) {
    put(api, "foo", json!(1)).await;
    put(api, "foo:bar", json!(2)).await;
    put(api, "food", json!(3)).await;
    assert_eq!(ok(api.remove("foo").await), json!(true));
    assert_eq!(ok(api.remove("foo").await), json!(false));
    assert_eq!(get(api, "foo").await, Value::Null);
    assert_eq!(get(api, "foo:bar").await, json!(2));
    assert_eq!(get(api, "*").await, items(&[("food", json!(3))]));
    assert_eq!(ok(api.remove("foo:bar").await), json!(true));
    assert_eq!(get(api, "foo:*").await, json!({"items": []}));
    assert_eq!(ok(api.remove("never").await), json!(false));
    assert_eq!(ok(api.remove("ns:never").await), json!(false));
    // The key is free again: a new item starts over.
    assert_eq!(put(api, "foo", json!({"n": 1})).await, json!({"n": 1}));
}

/// Seed: `remove(["key1", "someOtherKey", "namespacedKey:keyX"])`. SPEC: an array of
/// booleans in request order.
pub async fn remove_many_seed_example(api: &impl Api) {
    put(api, "key1", json!(1)).await;
    put(api, "someOtherKey", json!(2)).await;
    put(api, "namespacedKey:keyX", json!(3)).await;
    put(api, "stay", json!(4)).await;
    assert_eq!(
        ok(api
            .remove_many(&[
                "key1",
                "missing",
                "namespacedKey:keyX",
                "someOtherKey",
                "ns:no"
            ])
            .await),
        json!([true, false, true, true, false])
    );
    assert_eq!(
        ok(api
            .get_many(
                &["key1", "someOtherKey", "namespacedKey:keyX", "stay"],
                false
            )
            .await),
        items(&[("stay", json!(4))])
    );
    assert_eq!(
        ok(api
            .remove_many(&["key1", "someOtherKey", "namespacedKey:keyX"])
            .await),
        json!([false, false, false])
    );
}

/// SPEC "remove": removal drops every label entry of the item.
pub async fn remove_drops_label_entries(api: &impl Api) {
    let mut o = opts();
    for n in 1..=5 {
        o = o.label(n, format!("L{n}"));
    }
    ok(api.set("k", json!(1), o).await);
    ok(api.set("ns:other", json!(2), opts().label(1, "L1")).await);
    assert_eq!(
        keys(&by_label(api, "label1", "L1", q()).await),
        ["k", "ns:other"]
    );
    assert_eq!(ok(api.remove_many(&["k"]).await), json!([true]));
    for n in 2..=5 {
        assert_eq!(
            by_label(api, &format!("label{n}"), "*", q()).await,
            json!({"items": []})
        );
    }
    assert_eq!(
        by_label(api, "label1", "L1", q()).await,
        items(&[("ns:other", json!(2))])
    );
}

/// SPEC "remove": at most 25 keys (`batch_too_large`), exact keys only (`invalid_key`);
/// a refused remove removes nothing.
pub async fn remove_limits_and_exact_keys(api: &impl Api) {
    let names: Vec<String> = (0..26).map(|i| format!("r{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    put_keys(api, &refs).await;
    assert_eq!(code(api.remove_many(&refs).await), ErrorCode::BatchTooLarge);
    for bad in ["r*", "*", "ns:*", "r00|r05", ">r00", "ns:<=a"] {
        assert_eq!(
            code(api.remove_many(&["r00", bad, "r01"]).await),
            ErrorCode::InvalidKey,
            "{bad:?}"
        );
        assert_eq!(
            code(api.remove(bad).await),
            ErrorCode::InvalidKey,
            "{bad:?}"
        );
    }
    assert_eq!(
        code(api.remove_many(&["r00", &"r".repeat(257)]).await),
        ErrorCode::KeyTooLong
    );
    assert_eq!(get(api, "*").await, page_of(&refs));
    assert_eq!(
        ok(api.remove_many(&refs[..25]).await),
        json!(vec![true; 25])
    );
    assert_eq!(get(api, "*").await, page_of(&refs[25..]));
}

// ---- refused requests ----------------------------------------------------------------

/// The store as [`refused_requests_change_nothing`] watches it.
async fn refusal_snapshot(api: &impl Api) -> Vec<Value> {
    snapshot(api, &["*", "ns:*"], &[("label1", "*"), ("label2", "ns:*")]).await
}

/// Asserts a request was refused with `expected` and that the store is unchanged.
async fn refused_unchanged(
    api: &impl Api,
    what: &str,
    result: Result<Value, Error>,
    expected: ErrorCode,
    before: &[Value],
) {
    assert_eq!(code(result), expected, "{what}");
    assert_eq!(
        refusal_snapshot(api).await,
        before,
        "{what}: a refused request changed the store"
    );
}

/// SPEC "Errors": a refused request changes nothing — checked after one refusal of
/// every class a data request can meet, against a snapshot with metadata (so even a
/// rewrite with the same value would show in `modified`).
pub async fn refused_requests_change_nothing(api: &impl Api) {
    ok(api
        .set(
            "s",
            json!({"n": 1, "t": "text"}),
            opts().ttl(3600).label(1, "L"),
        )
        .await);
    ok(api.set("ns:a", json!(5), opts().label(2, "ns:L")).await);
    put(api, "min", json!(i64::MIN)).await;
    put(api, "z", json!([1])).await;
    let before = refusal_snapshot(api).await;
    let b = before.as_slice();
    let k257 = "k".repeat(257);
    let twenty_six: Vec<BatchItem> = (0..26).map(|i| bi(&format!("b{i}"), json!(i))).collect();
    let mut bad_ttl = bi("s", json!(0));
    bad_ttl.ttl = Some(json!("garbage"));
    let mut remove26: Vec<&str> = vec!["s", "ns:a", "min", "z"];
    remove26.resize(26, "z");
    use ErrorCode as E;

    let r = api.set("s*", json!(1), opts()).await;
    refused_unchanged(api, "set s*", r, E::InvalidKey, b).await;
    let r = api.set(&k257, json!(1), opts()).await;
    refused_unchanged(api, "set 257 bytes", r, E::KeyTooLong, b).await;
    let huge = json!({"n": 2, "huge": "x".repeat(410 * 1024)});
    let r = api.set("s", huge, opts()).await;
    refused_unchanged(api, "set too large", r, E::ValueTooLarge, b).await;
    let r = api.set("s", json!({"n": 2}), opts().ttl(0)).await;
    refused_unchanged(api, "set ttl 0", r, E::InvalidTtl, b).await;
    let r = api
        .set("s", json!(1), opts().overwrite().ttl("garbage"))
        .await;
    refused_unchanged(api, "overwrite bad ttl", r, E::InvalidTtl, b).await;
    let r = api.set("s", json!({"n": 2}), opts().label(1, "bad*")).await;
    refused_unchanged(api, "set bad label", r, E::InvalidKey, b).await;
    let r = api
        .set("s", json!({"n": 2, "t": {"$add": 1}}), opts())
        .await;
    refused_unchanged(api, "$add on text", r, E::NotANumber, b).await;
    let r = api.add("s", None, 1.into(), false).await;
    refused_unchanged(api, "add to an object", r, E::NotANumber, b).await;
    let r = api.add("min", None, (-1).into(), true).await;
    refused_unchanged(api, "add overflow", r, E::Overflow, b).await;
    let r = api.set_batch(twenty_six, true, false).await;
    refused_unchanged(api, "batch of 26", r, E::BatchTooLarge, b).await;
    let r = api.set_batch(vec![bi("s", json!(0))], false, false).await;
    refused_unchanged(api, "batch without overwrite", r, E::OverwriteRequired, b).await;
    let r = api
        .set_batch(vec![bi("s", json!(0)), bi("ns:*", json!(0))], true, false)
        .await;
    refused_unchanged(api, "batch bad key", r, E::InvalidKey, b).await;
    let r = api
        .set_batch(vec![bi("ns:a", json!(0)), bad_ttl], true, true)
        .await;
    refused_unchanged(api, "batch bad ttl", r, E::InvalidTtl, b).await;
    let r = api.remove_many(&["s", "ns:a", "x*"]).await;
    refused_unchanged(api, "remove with a bad key", r, E::InvalidKey, b).await;
    let r = api.remove_many(&remove26).await;
    refused_unchanged(api, "remove 26", r, E::BatchTooLarge, b).await;
    let r = api.get("*", limit(0)).await;
    refused_unchanged(api, "get limit 0", r, E::LimitOutOfRange, b).await;
    let r = api.get("ns:>", q()).await;
    refused_unchanged(api, "get malformed", r, E::InvalidQuery, b).await;
    let r = api.get("*", on_label(q(), "label6")).await;
    refused_unchanged(api, "get label6", r, E::InvalidQuery, b).await;
    let r = api.get_many(&["s", "ns:*"], false).await;
    refused_unchanged(api, "get_many wildcard", r, E::InvalidKey, b).await;
}
