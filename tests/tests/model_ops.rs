//! Model-based test: random sequences of `set` (update-merge, overwrite, `$add`),
//! `add`, `remove`, `get`, key queries, label queries and paginated scans run against
//! the engine and against a plain `BTreeMap` model, on 2 and 4 shards.
//!
//! It guards against the engine's indexes drifting apart (a label entry left behind by
//! an update or a remove, a scan that drops or repeats an item at a shard boundary or
//! a page boundary) and against merge and counter rules that disagree with SPEC.md in
//! some corner that the hand-written cases did not think of. Multi-page scans run
//! while writes happen between pages: every item present for the whole scan must be
//! returned exactly once, in order.

use ampd_engine::{Db, ErrorCode, Got, QueryOptions, SetOptions, Value};
use proptest::prelude::*;
use serde_json::{json, Map, Number};
use std::collections::{BTreeMap, BTreeSet};

/// Keys: simple keys and two namespaces, short rests so that ranges and prefixes
/// collide often.
fn arb_key() -> impl Strategy<Value = String> {
    (prop::sample::select(vec!["", "a:", "b:"]), "[xyz]{1,2}")
        .prop_map(|(ns, k)| format!("{ns}{k}"))
}

fn arb_label() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["L1", "L2", "Lx", "g:L1", "g:M"]).prop_map(String::from),
    )
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-5i64..5).prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!("s")),
        Just(json!(null)),
        prop::collection::vec(
            (
                prop::sample::select(vec!["f", "g", "h"]),
                prop_oneof![
                    (-3i64..3).prop_map(Value::from),
                    Just(json!("t")),
                    (-3i64..3).prop_map(|n| json!({"$add": n})),
                    Just(json!({"$add": 0.5})),
                ]
            ),
            0..3
        )
        .prop_map(|fs| Value::Object(fs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
    ]
}

fn arb_pattern() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("*".to_owned()),
        "[xyz]\\*",
        ">[xyz]{1,2}",
        ">=[xyz]{1,2}",
        "<[xyz]{1,2}",
        "<=[xyz]{1,2}",
        "[xyz]{1,2}\\|[xyz]{1,2}",
    ];
    (prop::sample::select(vec!["", "a:", "b:", "g:"]), part).prop_map(|(ns, p)| format!("{ns}{p}"))
}

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: String,
        value: Value,
        overwrite: bool,
        label: Option<String>,
    },
    Add {
        key: String,
        field: Option<String>,
        n: i64,
    },
    Remove {
        key: String,
    },
    Get {
        key: String,
    },
    Query {
        pattern: String,
        limit: i64,
        reverse: bool,
    },
    LabelQuery {
        pattern: String,
        limit: i64,
        reverse: bool,
    },
    /// A paginated scan with `writes` applied between its pages.
    ScanWhileWriting {
        pattern: String,
        limit: i64,
        writes: Vec<Op>,
    },
}

fn arb_write() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (arb_key(), arb_value(), any::<bool>(), arb_label())
            .prop_map(|(key, value, overwrite, label)| Op::Set { key, value, overwrite, label }),
        2 => (arb_key(), prop::option::of(prop::sample::select(vec!["f", "g"]).prop_map(String::from)), -3i64..4)
            .prop_map(|(key, field, n)| Op::Add { key, field, n }),
        1 => arb_key().prop_map(|key| Op::Remove { key }),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => arb_write(),
        1 => arb_key().prop_map(|key| Op::Get { key }),
        2 => (arb_pattern(), 1i64..5, any::<bool>())
            .prop_map(|(pattern, limit, reverse)| Op::Query { pattern, limit, reverse }),
        1 => (arb_pattern(), 1i64..5, any::<bool>())
            .prop_map(|(pattern, limit, reverse)| Op::LabelQuery { pattern, limit, reverse }),
        1 => (arb_pattern(), 1i64..3, prop::collection::vec(arb_write(), 0..6))
            .prop_map(|(pattern, limit, writes)| Op::ScanWhileWriting { pattern, limit, writes }),
    ]
}

/// The reference: key → (value, label1).
#[derive(Default)]
struct Model {
    items: BTreeMap<String, (Value, Option<String>)>,
}

fn add(a: &Number, b: &Number) -> Result<Number, ErrorCode> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x
            .checked_add(y)
            .map(Number::from)
            .ok_or(ErrorCode::Overflow),
        _ => Number::from_f64(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
            .ok_or(ErrorCode::Overflow),
    }
}

impl Model {
    fn set(
        &mut self,
        key: &str,
        value: &Value,
        overwrite: bool,
        label: &Option<String>,
    ) -> Result<Value, ErrorCode> {
        let stored = if overwrite {
            None
        } else {
            self.items.get(key).cloned()
        };
        let new_value = match (value, stored.as_ref().map(|s| &s.0)) {
            (Value::Object(fields), old) => {
                let mut out = match old {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                for (k, v) in fields {
                    let merged = match v.get("$add").and_then(Value::as_number) {
                        Some(n) if v.as_object().is_some_and(|o| o.len() == 1) => {
                            match out.get(k) {
                                None => Value::Number(n.clone()),
                                Some(Value::Number(o)) => Value::Number(add(o, n)?),
                                Some(_) => return Err(ErrorCode::NotANumber),
                            }
                        }
                        _ => v.clone(),
                    };
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (v, _) => v.clone(),
        };
        let new_label = match label {
            Some(l) => Some(l.clone()),
            None => stored.and_then(|s| s.1),
        };
        self.items
            .insert(key.to_owned(), (new_value.clone(), new_label));
        Ok(new_value)
    }

    fn add(&mut self, key: &str, field: &Option<String>, n: i64) -> Result<Value, ErrorCode> {
        let n = Number::from(n);
        let stored = self.items.get(key).cloned();
        let new_value = match (field, stored.as_ref().map(|s| &s.0)) {
            (None, None) => Value::Number(n),
            (None, Some(Value::Number(o))) => Value::Number(add(o, &n)?),
            (Some(f), None) => json!({ f.as_str(): n }),
            (Some(f), Some(Value::Object(m))) => {
                let mut m = m.clone();
                let sum = match m.get(f) {
                    None => n,
                    Some(Value::Number(o)) => add(o, &n)?,
                    Some(_) => return Err(ErrorCode::NotANumber),
                };
                m.insert(f.clone(), Value::Number(sum));
                Value::Object(m)
            }
            _ => return Err(ErrorCode::NotANumber),
        };
        let label = stored.and_then(|s| s.1);
        self.items
            .insert(key.to_owned(), (new_value.clone(), label));
        Ok(new_value)
    }

    /// Keys a pattern covers, in ascending order, from `(namespace, rest)` pairs.
    fn matches(pattern: &str, text: &str) -> bool {
        let (pns, part) = split_ns(pattern);
        let (kns, rest) = split_ns(text);
        if pns != kns {
            return false;
        }
        if let Some((a, b)) = part.split_once('|') {
            a <= rest && rest <= b
        } else if let Some(x) = part.strip_prefix(">=") {
            rest >= x
        } else if let Some(x) = part.strip_prefix('>') {
            rest > x
        } else if let Some(x) = part.strip_prefix("<=") {
            rest <= x
        } else if let Some(x) = part.strip_prefix('<') {
            rest < x
        } else if let Some(p) = part.strip_suffix('*') {
            rest.starts_with(p)
        } else {
            rest == part
        }
    }

    fn query(&self, pattern: &str, reverse: bool) -> Vec<String> {
        let mut keys: Vec<String> = self
            .items
            .keys()
            .filter(|k| Model::matches(pattern, k))
            .cloned()
            .collect();
        if reverse {
            keys.reverse();
        }
        keys
    }

    fn label_query(&self, pattern: &str, reverse: bool) -> Vec<String> {
        let mut hits: Vec<(String, String)> = self
            .items
            .iter()
            .filter_map(|(k, (_, l))| {
                l.as_ref()
                    .filter(|l| Model::matches(pattern, l))
                    .map(|l| (l.clone(), k.clone()))
            })
            .collect();
        hits.sort();
        if reverse {
            hits.reverse();
        }
        hits.into_iter().map(|(_, k)| k).collect()
    }
}

fn split_ns(text: &str) -> (Option<&str>, &str) {
    match text.split_once(':') {
        Some((ns, rest)) => (Some(ns), rest),
        None => (None, text),
    }
}

fn page_keys(got: Got) -> (Vec<String>, Option<String>) {
    match got {
        Got::Page(p) => (
            p.items.iter().map(|i| i.key().to_owned()).collect(),
            p.last_key,
        ),
        Got::Item(_) => panic!("a pattern query returned a single item"),
    }
}

/// Applies one write to both sides and compares the results.
async fn write(db: &Db, model: &mut Model, op: &Op) {
    match op {
        Op::Set {
            key,
            value,
            overwrite,
            label,
        } => {
            let mut options = SetOptions {
                overwrite: *overwrite,
                ..Default::default()
            };
            if let Some(l) = label {
                options = options.label(1, l.clone());
            }
            let got = db.set(key, value.clone(), &options).await;
            let want = model.set(key, value, *overwrite, label);
            match (got, want) {
                (Ok(item), Ok(v)) => assert_eq!(item.value(), v, "set {key}"),
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "set {key}: {e}"),
                (got, want) => panic!("set {key} {value}: engine {got:?}, model {want:?}"),
            }
        }
        Op::Add { key, field, n } => {
            let got = db.add(key, field.as_deref(), Number::from(*n)).await;
            let want = model.add(key, field, *n);
            match (got, want) {
                (Ok(item), Ok(v)) => assert_eq!(item.value(), v, "add {key}"),
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "add {key}: {e}"),
                (got, want) => panic!("add {key} {field:?} {n}: engine {got:?}, model {want:?}"),
            }
        }
        Op::Remove { key } => {
            let got = db.remove(key).await.expect("remove");
            assert_eq!(got, model.items.remove(key).is_some(), "remove {key}");
        }
        other => unreachable!("not a write: {other:?}"),
    }
}

async fn run(shards: usize, ops: Vec<Op>) {
    let db = ampd_tests::open_in_memory(shards);
    let mut model = Model::default();
    for op in &ops {
        match op {
            Op::Set { .. } | Op::Add { .. } | Op::Remove { .. } => write(&db, &mut model, op).await,
            Op::Get { key } => {
                let got = db.get_one(key).expect("get").map(|i| i.value());
                assert_eq!(got, model.items.get(key).map(|i| i.0.clone()), "get {key}");
            }
            Op::Query {
                pattern,
                limit,
                reverse,
            } => {
                let options = QueryOptions {
                    limit: Some(*limit),
                    reverse: *reverse,
                    ..Default::default()
                };
                let page = match db.get(pattern, &options).expect("query") {
                    Got::Page(p) => p,
                    Got::Item(_) => panic!("a pattern query returned a single item"),
                };
                let keys: Vec<String> = page.items.iter().map(|i| i.key().to_owned()).collect();
                let want = model.query(pattern, *reverse);
                let n = want.len().min(*limit as usize);
                assert_eq!(
                    keys,
                    want[..n],
                    "query {pattern} limit {limit} reverse {reverse}"
                );
                let want_last = (want.len() > n).then(|| want[n - 1].clone());
                assert_eq!(page.last_key, want_last, "lastKey of {pattern}");
                for item in &page.items {
                    assert_eq!(
                        item.value(),
                        model.items[item.key()].0,
                        "value of {}",
                        item.key()
                    );
                }
            }
            Op::LabelQuery {
                pattern,
                limit,
                reverse,
            } => {
                let options = QueryOptions {
                    limit: Some(*limit),
                    reverse: *reverse,
                    ..Default::default()
                };
                let mut page = db
                    .get_by_label("label1", pattern, &options)
                    .expect("label query");
                let mut keys: Vec<String> = Vec::new();
                loop {
                    keys.extend(page.items.iter().map(|i| i.key().to_owned()));
                    match db.next_page(&page).expect("next page") {
                        Some(p) => page = p,
                        None => break,
                    }
                }
                assert_eq!(
                    keys,
                    model.label_query(pattern, *reverse),
                    "label query {pattern} reverse {reverse}"
                );
            }
            Op::ScanWhileWriting {
                pattern,
                limit,
                writes,
            } => {
                let before: BTreeSet<String> = model.query(pattern, false).into_iter().collect();
                let mut touched = BTreeSet::new();
                let options = QueryOptions {
                    limit: Some(*limit),
                    ..Default::default()
                };
                let (mut seen, mut last) = page_keys(db.get(pattern, &options).expect("scan"));
                let mut pending = writes.iter();
                while let Some(start) = last {
                    if let Some(w) = pending.next() {
                        if let Op::Remove { key } = w {
                            touched.insert(key.clone());
                        }
                        write(&db, &mut model, w).await;
                    }
                    let next = QueryOptions {
                        start: Some(start),
                        ..options.clone()
                    };
                    let (keys, l) = page_keys(db.get(pattern, &next).expect("scan page"));
                    seen.extend(keys);
                    last = l;
                }
                for w in pending {
                    write(&db, &mut model, w).await;
                }
                assert!(
                    seen.windows(2).all(|w| w[0] < w[1]),
                    "scan of {pattern} out of order or repeated: {seen:?}"
                );
                let seen: BTreeSet<String> = seen.into_iter().collect();
                for k in before.difference(&touched) {
                    assert!(seen.contains(k), "scan of {pattern} skipped {k}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_on_2_shards(ops in prop::collection::vec(arb_op(), 1..60)) {
        futures::executor::block_on(run(2, ops));
    }

    #[test]
    fn engine_matches_model_on_4_shards(ops in prop::collection::vec(arb_op(), 1..60)) {
        futures::executor::block_on(run(4, ops));
    }
}
