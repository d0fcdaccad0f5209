//! The ampd driver: the handshake, and each operation as a request frame of
//! `ampd_wire::frame` (`PROTOCOL.md`).
//!
//! Why not `ampd_wire::client::Client`: every call there takes a channel hop to a writer
//! task and a oneshot back, which at a few hundred thousand requests a second would
//! make the generator, not the server, the bottleneck. Here one task encodes frames
//! straight into its write buffer and matches replies by id (`connection.rs`).
//!
//! Each connection keeps one request of each kind as a template and rewrites only its
//! key (and label, and with `--value-size-range` its value) in place, so encoding
//! allocates nothing once the strings have grown to their longest.
//!
//! | op | request |
//! | --- | --- |
//! | get | `get {pattern: key}` |
//! | set | `set {key, value, label1: label}` (value: a string of `--value-size` bytes, or of a size drawn from `--value-size-range`) |
//! | add | `add {key: counter, amount: 1}` |
//! | range | `get {pattern: "ns:>=k{i}", limit: 10}` |
//! | label | `get {pattern: label, label: "label1", limit: 10}` |
//! | ping | `ping` |
//! | preload | `set_batch {items: [{key, value, label1}] x 25, overwrite: true}` |

use crate::connection::{is_timeout, read_some};
use crate::connection::{Protocol, Reply, Request};
use crate::keys::KeySpace;
use crate::mix::Op;
use crate::value::ValueSource;
use ampd_wire::frame::{
    self, Add, Get, Hello, Patterns, Request as Frame, Set, SetBatch, PROTOCOL_VERSION,
};
use ampd_wire::limits::BATCH_ITEMS_MAX;
use ampd_wire::value::Given;
use ampd_wire::{BatchItem, QueryOptions, SetOptions, Value};
use bytes::BytesMut;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// Keys per preload frame: a full batch.
pub const PRELOAD_UNIT: u64 = BATCH_ITEMS_MAX as u64;

/// `limit` of the range and label queries.
pub const QUERY_LIMIT: i64 = 10;

/// The handshake's id; requests after it start at [`FIRST_ID`].
const HELLO_ID: u32 = 1;
pub const FIRST_ID: u32 = HELLO_ID + 1;

/// Connects and makes the handshake; the error says why in words (refused, no such
/// environment, no server). Every read and write of it is bounded by `timeout`.
pub fn connect(
    addr: &str,
    env: Option<&str>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let mut stream = crate::connection::open(addr, timeout)?;
    let late = |e: &std::io::Error| {
        is_timeout(e).then(|| format!("no handshake with {addr} within {timeout:?}"))
    };
    let hello = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        env: env.map(str::to_owned),
        token: token.map(str::to_owned),
    });
    let mut buf = BytesMut::new();
    frame::encode_request(HELLO_ID, &hello, &mut buf).map_err(|e| format!("hello: {e}"))?;
    stream
        .write_all(&buf)
        .map_err(|e| late(&e).unwrap_or(format!("send hello: {e}")))?;
    buf.clear();
    loop {
        if let Some(response) =
            frame::decode_response(&mut buf).map_err(|e| format!("hello answer: {e}"))?
        {
            return match response.result {
                Ok(_) if response.id == HELLO_ID => Ok(stream),
                Ok(_) => Err(format!("hello answered with id {}", response.id)),
                Err(e) => Err(format!("hello refused: {e}")),
            };
        }
        let n = read_some(&mut stream, &mut buf)
            .map_err(|e| late(&e).unwrap_or(format!("read hello answer: {e}")))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection during the handshake"));
        }
    }
}

/// One connection's request templates.
pub struct Ampd {
    keys: Arc<KeySpace>,
    values: ValueSource,
    get: Frame,
    set: Frame,
    add: Frame,
    range: Frame,
    label: Frame,
    preload: Frame,
}

impl Ampd {
    pub fn new(keys: Arc<KeySpace>, mut values: ValueSource) -> Ampd {
        // Written before each set when the sizes vary.
        let value = Value::String(if values.is_fixed() {
            values.next_value().to_owned()
        } else {
            String::new()
        });
        let get = |limit: Option<i64>, label: Option<&str>| {
            Frame::Get(Get {
                pattern: Patterns::One(String::new()),
                options: QueryOptions {
                    limit,
                    label: label.map(str::to_owned),
                    ..QueryOptions::default()
                },
            })
        };
        Ampd {
            get: get(None, None),
            set: Frame::Set(Set {
                key: String::new(),
                value: value.clone().into(),
                options: SetOptions::default().label(1, String::new()),
            }),
            add: Frame::Add(Add {
                key: String::new(),
                field: None,
                amount: 1.into(),
                meta: false,
            }),
            range: get(Some(QUERY_LIMIT), None),
            label: get(Some(QUERY_LIMIT), Some("label1")),
            preload: Frame::SetBatch(SetBatch {
                items: (0..BATCH_ITEMS_MAX)
                    .map(|_| {
                        let mut labels: [Option<String>; 5] = Default::default();
                        labels[0] = Some(String::new());
                        BatchItem {
                            key: String::new(),
                            value: value.clone(),
                            ttl: None,
                            labels,
                        }
                    })
                    .collect(),
                overwrite: true,
                meta: false,
            }),
            keys,
            values,
        }
    }
}

/// The string of a value template (the generator writes strings only).
fn text(value: &mut Value) -> &mut String {
    match value {
        Value::String(s) => s,
        _ => unreachable!("value templates are strings"),
    }
}

/// Rewrites a template's value in place.
fn rewrite(value: &mut Value, with: &str) {
    let s = text(value);
    s.clear();
    s.push_str(with);
}

/// The pattern string of a `get` template.
fn pattern(frame: &mut Frame) -> &mut String {
    match frame {
        Frame::Get(Get {
            pattern: Patterns::One(p),
            ..
        }) => p,
        _ => unreachable!("get templates hold one pattern"),
    }
}

/// The label1 string of a set template or batch item (always `Some(Some(_))`).
fn label1(label: &mut Option<Option<String>>) -> &mut String {
    label
        .get_or_insert_with(|| Some(String::new()))
        .get_or_insert_with(String::new)
}

impl Protocol for Ampd {
    fn encode(&mut self, request: Request, id: u32, out: &mut BytesMut) -> Result<u32, String> {
        let keys = &*self.keys;
        let frame = match request {
            Request::Op { op, key } => match op {
                Op::Get => {
                    keys.key(key, pattern(&mut self.get));
                    &self.get
                }
                Op::Set => {
                    let Frame::Set(s) = &mut self.set else {
                        unreachable!("the set template is a set")
                    };
                    keys.key(key, &mut s.key);
                    keys.label(key, label1(&mut s.options.labels[0]));
                    if !self.values.is_fixed() {
                        let Given::Value(value) = &mut s.value else {
                            unreachable!("the set template holds a Value")
                        };
                        rewrite(value, self.values.next_value());
                    }
                    &self.set
                }
                Op::Add => {
                    let Frame::Add(a) = &mut self.add else {
                        unreachable!("the add template is an add")
                    };
                    keys.counter(key, &mut a.key);
                    &self.add
                }
                Op::Range => {
                    keys.range_pattern(key, pattern(&mut self.range));
                    &self.range
                }
                Op::Label => {
                    keys.label(key, pattern(&mut self.label));
                    &self.label
                }
                Op::Ping => &Frame::Ping,
            },
            Request::Preload { first, end } => {
                let Frame::SetBatch(b) = &mut self.preload else {
                    unreachable!("the preload template is a batch")
                };
                let n = (end - first) as usize;
                assert!(
                    (1..=BATCH_ITEMS_MAX).contains(&n),
                    "a preload unit of {n} keys"
                );
                // Keep every item's strings (and so their capacity); send the first n.
                for (item, i) in b.items.iter_mut().zip(first..end) {
                    keys.key(i, &mut item.key);
                    keys.label(i, item.labels[0].get_or_insert_with(String::new));
                    if !self.values.is_fixed() {
                        rewrite(&mut item.value, self.values.next_value());
                    }
                }
                if n < BATCH_ITEMS_MAX {
                    // The last, short unit: encode a copy of just its items.
                    let short = Frame::SetBatch(SetBatch {
                        items: b.items[..n].to_vec(),
                        overwrite: true,
                        meta: false,
                    });
                    frame::encode_request(id, &short, out).map_err(|e| e.to_string())?;
                    return Ok(1);
                }
                &self.preload
            }
        };
        frame::encode_request(id, frame, out).map_err(|e| e.to_string())?;
        Ok(1)
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, String> {
        let Some(response) = frame::decode_response(buf).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if response.id == 0 {
            // About the connection as a whole: it is being closed (PROTOCOL.md).
            let why = match response.result {
                Err(e) => e.to_string(),
                Ok(_) => "an answer with id 0".into(),
            };
            return Err(format!("the server gave up on the connection: {why}"));
        }
        // A get of one key answers its value or nil (PROTOCOL.md); an empty payload
        // reads as nil too. The values this generator writes are strings, never nil.
        let missing = matches!(response.result, Ok(Value::Null));
        Ok(Some(Reply {
            id: Some(response.id),
            error: response.result.err().map(|e| e.to_string()),
            missing,
        }))
    }

    fn tagged(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Dist, ZIPF_THETA};
    use ampd_wire::frame::decode_request;

    fn ampd() -> Ampd {
        Ampd::new(
            Arc::new(KeySpace::new(1000, 10, Dist::Uniform, ZIPF_THETA)),
            ValueSource::constant("vvvv"),
        )
    }

    fn round_trip(a: &mut Ampd, request: Request, id: u32) -> Frame {
        let mut out = BytesMut::new();
        assert_eq!(a.encode(request, id, &mut out).unwrap(), 1);
        let (got_id, frame) = decode_request(&mut out).unwrap().unwrap();
        assert_eq!(got_id, id);
        assert!(out.is_empty());
        frame
    }

    #[test]
    fn each_op_encodes_the_documented_request() {
        let mut a = ampd();
        let op = |op, key| Request::Op { op, key };
        match round_trip(&mut a, op(Op::Set, 42), 7) {
            Frame::Set(s) => {
                assert_eq!(s.key, "ns2:k42");
                assert_eq!(s.value, Value::from("vvvv").into());
                assert_eq!(s.options.labels[0], Some(Some("ns2:g42".into())));
                assert!(s.options.labels[1..].iter().all(Option::is_none));
                assert!(!s.options.overwrite);
            }
            f => panic!("{f:?}"),
        }
        // The template is rewritten, not appended to.
        match round_trip(&mut a, op(Op::Set, 5), 8) {
            Frame::Set(s) => assert_eq!(
                (s.key.as_str(), s.options.labels[0].clone()),
                ("ns5:k5", Some(Some("ns5:g5".into())))
            ),
            f => panic!("{f:?}"),
        }
        match round_trip(&mut a, op(Op::Get, 3), 9) {
            Frame::Get(g) => {
                assert_eq!(g.pattern, Patterns::One("ns3:k3".into()));
                assert_eq!((g.options.limit, g.options.label), (None, None));
            }
            f => panic!("{f:?}"),
        }
        match round_trip(&mut a, op(Op::Add, 3), 10) {
            Frame::Add(x) => assert_eq!((x.key.as_str(), x.amount.as_i64()), ("ns3:c3", Some(1))),
            f => panic!("{f:?}"),
        }
        match round_trip(&mut a, op(Op::Range, 17), 11) {
            Frame::Get(g) => {
                assert_eq!(g.pattern, Patterns::One("ns7:>=k17".into()));
                assert_eq!(g.options.limit, Some(QUERY_LIMIT));
            }
            f => panic!("{f:?}"),
        }
        match round_trip(&mut a, op(Op::Label, 117), 12) {
            Frame::Get(g) => {
                assert_eq!(g.pattern, Patterns::One("ns7:g17".into()));
                assert_eq!(g.options.label.as_deref(), Some("label1"));
            }
            f => panic!("{f:?}"),
        }
        assert_eq!(round_trip(&mut a, op(Op::Ping, 0), 13), Frame::Ping);
    }

    #[test]
    fn preload_units_are_full_and_short_batches() {
        let mut a = ampd();
        match round_trip(&mut a, Request::Preload { first: 25, end: 50 }, 3) {
            Frame::SetBatch(b) => {
                assert!(b.overwrite);
                assert_eq!(b.items.len(), 25);
                assert_eq!(b.items[0].key, "ns5:k25");
                assert_eq!(b.items[24].key, "ns9:k49");
                assert_eq!(b.items[24].labels[0].as_deref(), Some("ns9:g49"));
            }
            f => panic!("{f:?}"),
        }
        match round_trip(
            &mut a,
            Request::Preload {
                first: 990,
                end: 1000,
            },
            4,
        ) {
            Frame::SetBatch(b) => {
                assert_eq!(b.items.len(), 10);
                assert_eq!(b.items[9].key, "ns9:k999");
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn ranged_values_are_drawn_per_set_and_per_preloaded_item() {
        let values = crate::value::Values::log_uniform(10, 1000, 1);
        let mut a = Ampd::new(
            Arc::new(KeySpace::new(1000, 10, Dist::Uniform, ZIPF_THETA)),
            values.source(1, 0),
        );
        // The same stream as the encoder's, so the lengths are known.
        let mut expected = values.source(1, 0);
        let text = |v: Value| v.as_str().map(str::to_owned).unwrap();
        let mut lengths = Vec::new();
        for key in 0..50 {
            let Frame::Set(s) = round_trip(&mut a, Request::Op { op: Op::Set, key }, 7) else {
                panic!("a set")
            };
            let value = text(s.value.to_value());
            assert_eq!(value, expected.next_value(), "set {key}");
            lengths.push(value.len());
        }
        assert!(lengths.iter().all(|n| (10..=1000).contains(n)));
        lengths.dedup();
        assert!(lengths.len() > 40, "the sizes vary: {lengths:?}");
        let Frame::SetBatch(b) = round_trip(&mut a, Request::Preload { first: 0, end: 25 }, 8)
        else {
            panic!("a batch")
        };
        for item in b.items {
            assert_eq!(text(item.value), expected.next_value(), "{}", item.key);
        }
    }

    #[test]
    fn replies_carry_ids_and_refusals_and_id_zero_ends_the_connection() {
        use ampd_wire::{Error, ErrorCode};
        let mut a = ampd();
        let mut buf = BytesMut::new();
        frame::encode_ok(5, Op::Get as u16, &[0xc0], &mut buf);
        let err = Error::new(ErrorCode::InvalidKey, "key is empty");
        frame::encode_error(6, 32, &err, &mut buf);
        // Half of a third frame: need more.
        let mut third = BytesMut::new();
        frame::encode_ok(7, 2, &[], &mut third);
        buf.extend_from_slice(&third[..5]);
        assert_eq!(
            a.decode(&mut buf).unwrap(),
            Some(Reply {
                id: Some(5),
                error: None,
                missing: true
            })
        );
        let r = a.decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.id, Some(6));
        assert_eq!(r.error.as_deref(), Some("invalid_key: key is empty"));
        assert_eq!(a.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&third[5..]);
        assert_eq!(
            a.decode(&mut buf).unwrap(),
            Some(Reply {
                id: Some(7),
                error: None,
                missing: true
            })
        );
        frame::encode_error(0, 0, &Error::new(ErrorCode::BadFrame, "x"), &mut buf);
        assert!(a.decode(&mut buf).unwrap_err().contains("gave up"));
    }

    #[test]
    fn a_get_answered_nil_is_a_miss_and_a_value_a_hit() {
        use crate::connection::Lookup;
        use ampd_wire::{Error, ErrorCode};
        let mut a = ampd();
        let get = Op::Get as u16;
        let mut lookup = |encode: &dyn Fn(&mut BytesMut)| {
            let mut buf = BytesMut::new();
            encode(&mut buf);
            let reply = a.decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            Lookup::of(&reply)
        };
        // MessagePack nil (0xc0), and an empty payload, which reads as nil.
        assert_eq!(
            lookup(&|b| frame::encode_ok(2, get, &[0xc0], b)),
            Some(Lookup::Miss)
        );
        assert_eq!(
            lookup(&|b| frame::encode_ok(2, get, &[], b)),
            Some(Lookup::Miss)
        );
        // A string value (fixstr "vvvv"), an empty string, false, 0: all values.
        for payload in [&b"\xa4vvvv"[..], b"\xa0", b"\xc2", b"\x00"] {
            assert_eq!(
                lookup(&|b| frame::encode_ok(2, get, payload, b)),
                Some(Lookup::Hit),
                "{payload:?}"
            );
        }
        // A refusal is neither: it counts as an error.
        let err = Error::new(ErrorCode::InvalidKey, "key is empty");
        assert_eq!(lookup(&|b| frame::encode_error(2, get, &err, b)), None);
    }
}
