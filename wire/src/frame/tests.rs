//! The frame codec's tests: round trips, every truncation, every refusal, and property
//! tests that no input panics.

use super::header::{FLAGS_OFFSET, KIND_OFFSET};
use super::payload::{read_payload, write_payload};
use super::request::plain_get;
use super::response::cut_at_char;
use super::*;
use crate::limits::ITEM_SIZE_MAX;
use crate::limits::{BATCH_ITEMS_MAX, ERROR_MESSAGE_LEN_MAX, FRAME_PAYLOAD_MAX, PAYLOAD_DEPTH_MAX};
use crate::{Error, ErrorCode, QueryOptions, SetOptions, Value};
use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use serde_json::json;

fn request_frame(id: u32, request: &Request) -> BytesMut {
    let mut out = BytesMut::new();
    encode_request(id, request, &mut out).unwrap();
    out
}

fn decode_one(bytes: &[u8]) -> Result<Option<(u32, Request)>, FrameError> {
    decode_request(&mut BytesMut::from(bytes))
}

fn raw_frame(id: u32, kind: u16, flags: u16, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let header = Header {
        len: payload.len() as u32,
        id,
        kind,
        flags,
    };
    out.put_slice(&header.encode());
    out.put_slice(payload);
    out
}

fn set(key: &str, value: Value) -> Set {
    Set {
        key: key.into(),
        value: value.into(),
        options: SetOptions::default(),
    }
}

fn bad_payload_why(r: Result<Option<(u32, Request)>, FrameError>) -> String {
    match r {
        Err(FrameError::BadPayload { why, .. }) => why,
        other => panic!("expected a bad payload, got {other:?}"),
    }
}

/// A payload map written by hand, to send what our encoder never would.
fn map(entries: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
    for (k, v) in entries {
        rmp::encode::write_str(&mut out, k).unwrap();
        crate::value::encode_into(v, &mut out);
    }
    out
}

/// One example of every request, with every optional field used somewhere.
fn examples() -> Vec<Request> {
    let mut full_set = set("ns:k", json!({"a": 1, "b": [1.5, null, "s"]}));
    full_set.options = SetOptions {
        meta: true,
        overwrite: true,
        ttl: Some(Value::Null),
        labels: [Some(Some("L:1".into())), None, None, None, Some(None)],
    };
    vec![
        Request::Hello(Hello {
            version: PROTOCOL_VERSION,
            env: Some("prod".into()),
            token: Some("t0k3n".into()),
        }),
        Request::Ping,
        Request::Get(Get {
            pattern: Patterns::One("ns:pre*".into()),
            options: QueryOptions {
                meta: true,
                limit: Some(10),
                reverse: true,
                start: Some("ns:pre5".into()),
                label: Some("label2".into()),
            },
        }),
        Request::Get(Get {
            pattern: Patterns::Many(vec!["a".into(), "b".into()]),
            options: QueryOptions::default(),
        }),
        Request::Set(set("a", json!(1))),
        Request::Set(full_set),
        Request::SetBatch(SetBatch {
            items: vec![
                BatchItem {
                    key: "x".into(),
                    value: json!(2.0),
                    ttl: Some(json!(3600)),
                    labels: [None, Some("l2".into()), None, None, None],
                },
                BatchItem {
                    key: "y".into(),
                    value: json!("text"),
                    ttl: None,
                    labels: Default::default(),
                },
            ],
            overwrite: true,
            meta: false,
        }),
        Request::Add(Add {
            key: "counter".into(),
            field: Some("n".into()),
            amount: serde_json::Number::from(-3),
            meta: true,
        }),
        Request::Remove(Remove {
            keys: Patterns::Many(vec!["a".into(), "b".into()]),
        }),
        Request::Stats,
    ]
}

#[test]
fn header_layout_is_little_endian_in_table_order() {
    let h = Header {
        len: 0x0403_0201,
        id: 0x0807_0605,
        kind: 0x0a09,
        flags: 0x0c0b,
    };
    let bytes = h.encode();
    assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(Header::decode(&bytes), h);
}

#[test]
fn opcode_numbers_round_trip_and_are_unique() {
    for op in Opcode::ALL {
        assert_eq!(Opcode::from_u16(op as u16), Some(op));
    }
    let mut numbers: Vec<u16> = Opcode::ALL.iter().map(|op| *op as u16).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), Opcode::ALL.len());
    for n in [0, 3, 15, 17, 31, 36, 47, 49, u16::MAX] {
        assert_eq!(Opcode::from_u16(n), None);
    }
}

#[test]
fn the_plain_get_reader_agrees_with_the_general_one() {
    let plain = |key: &[u8], marker: &[u8]| {
        let mut payload = b"\x81\xa7pattern".to_vec();
        payload.extend_from_slice(marker);
        payload.extend_from_slice(key);
        payload
    };
    let long = "k".repeat(300);
    let cases: Vec<Vec<u8>> = vec![
        plain(b"", b"\xa0"),
        plain(b"ns:k1", b"\xa5"),
        plain("é*".as_bytes(), b"\xa3"),
        plain(&[b'k'; 31], b"\xbf"),
        plain(&[b'k'; 40], b"\xd9\x28"),
        plain(long.as_bytes(), b"\xda\x01\x2c"),
        // Not UTF-8, a declared length that disagrees, bin instead of str, and
        // a trailing byte: left to the general reader, which refuses them.
        plain(b"\xff", b"\xa1"),
        plain(b"ab", b"\xa3"),
        plain(b"abcd", b"\xa3"),
        plain(b"ab", b"\xc4\x02"),
        plain(b"ab", b"\xd9"),
    ];
    for payload in cases {
        let general = read_payload::<Get>(&payload, PAYLOAD_DEPTH_MAX);
        match plain_get(&payload) {
            Some(get) => assert_eq!(Ok(get), general, "{payload:x?}"),
            None => assert!(general.is_err(), "{payload:x?}: {general:?}"),
        }
    }
    // What the client sends for a plain get takes the fast path.
    let get = Get {
        pattern: Patterns::One("ns:k1".into()),
        options: QueryOptions::default(),
    };
    let sent = request_frame(7, &Request::Get(get));
    assert!(plain_get(&sent[HEADER_LEN..]).is_some());
}

#[test]
fn every_example_round_trips() {
    for (i, request) in examples().into_iter().enumerate() {
        let mut buf = request_frame(i as u32, &request);
        assert_eq!(buf.get(KIND_OFFSET).copied(), Some(request.opcode() as u8));
        let got = decode_request(&mut buf).unwrap();
        assert_eq!(got, Some((i as u32, request)));
        assert!(buf.is_empty());
    }
}

#[test]
fn every_truncation_needs_more_bytes_and_consumes_nothing() {
    for request in examples() {
        let frame = request_frame(7, &request);
        for len in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..len]);
            assert_eq!(
                decode_request(&mut buf),
                Ok(None),
                "{request:?} cut at {len}"
            );
            assert_eq!(&buf[..], &frame[..len]);
        }
    }
    let mut response = BytesMut::new();
    encode_ok_value(
        7,
        Opcode::Get as u16,
        &json!({"items": [{"key": "k", "value": 1}]}),
        &mut response,
    );
    encode_error(
        8,
        Opcode::Set as u16,
        &Error::new(ErrorCode::InvalidKey, "no"),
        &mut response,
    );
    for len in 0..response.len() {
        let mut buf = BytesMut::from(&response[..len]);
        while let Some(r) = decode_response(&mut buf).unwrap() {
            assert_eq!(r.id, 7, "only the first frame is whole before the end");
        }
    }
}

#[test]
fn frames_back_to_back_decode_in_order() {
    let mut buf = BytesMut::new();
    let requests = examples();
    for (i, r) in requests.iter().enumerate() {
        encode_request(100 + i as u32, r, &mut buf).unwrap();
    }
    // A partial frame after them stays in the buffer.
    let tail = request_frame(999, &Request::Ping);
    buf.put_slice(&tail[..5]);
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(
            decode_request(&mut buf).unwrap(),
            Some((100 + i as u32, r.clone()))
        );
    }
    assert_eq!(decode_request(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], &tail[..5]);
}

#[test]
fn oversized_frames_are_refused_from_the_header_alone() {
    for declared in [u32::MAX, FRAME_PAYLOAD_MAX as u32 + 1] {
        let header = Header {
            len: declared,
            id: 5,
            kind: Opcode::Set as u16,
            flags: 0,
        };
        let mut buf = BytesMut::from(&header.encode()[..]);
        let err = decode_request(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                declared: u64::from(declared),
                limit: FRAME_PAYLOAD_MAX
            }
        );
        assert_eq!(buf.len(), HEADER_LEN, "a header error consumes nothing");
        assert_eq!(err.reply_to(), (0, 0));
        let response_header = Header {
            flags: FLAG_RESPONSE,
            ..header
        };
        let err = decode_response(&mut BytesMut::from(&response_header.encode()[..]));
        assert!(matches!(err, Err(FrameError::TooLarge { .. })));
    }
    // Exactly the limit is allowed: it waits for the payload.
    let header = Header {
        len: FRAME_PAYLOAD_MAX as u32,
        id: 5,
        kind: Opcode::Set as u16,
        flags: 0,
    };
    assert_eq!(decode_one(&header.encode()), Ok(None));
}

#[test]
fn frame_errors_become_wire_errors_with_the_numbers() {
    let e = Error::from(FrameError::TooLarge {
        declared: u64::from(u32::MAX),
        limit: FRAME_PAYLOAD_MAX,
    });
    assert_eq!(e.code(), ErrorCode::FrameTooLarge);
    assert_eq!(
        e.message(),
        "frame declares 4294967295 bytes, limit 11534336"
    );
    let e = Error::from(FrameError::UnknownOpcode(77));
    assert_eq!(e.code(), ErrorCode::BadFrame);
    assert_eq!(e.message(), "unknown opcode 77");
}

#[test]
fn bad_flags_are_refused() {
    for flags in [
        FLAG_RESPONSE,
        FLAG_ERROR,
        FLAG_RESPONSE | FLAG_ERROR,
        FLAG_PUSH,
        1 << 3,
        1 << 15,
    ] {
        let frame = raw_frame(1, Opcode::Ping as u16, flags, &[]);
        let err = decode_one(&frame[..HEADER_LEN]).unwrap_err();
        assert_eq!(err, decode_one(&frame).unwrap_err());
        assert!(matches!(err, FrameError::BadFlags { flags: f, .. } if f == flags));
        assert_eq!(Error::from(err).code(), ErrorCode::BadFrame);
    }
    for flags in [
        0,
        FLAG_ERROR,
        FLAG_PUSH,
        FLAG_RESPONSE | FLAG_PUSH | FLAG_ERROR,
        FLAG_RESPONSE | 1 << 3,
        FLAG_RESPONSE | 1 << 15,
    ] {
        let frame = raw_frame(1, Opcode::Ping as u16, flags, &[]);
        let err = decode_response(&mut frame.clone()).unwrap_err();
        assert!(matches!(err, FrameError::BadFlags { flags: f, .. } if f == flags));
    }
}

#[test]
fn unknown_opcodes_are_refused_from_the_header() {
    for kind in [0, 3, 17, 36, 0xffff] {
        let frame = raw_frame(9, kind, 0, &[0xc0]);
        assert_eq!(
            decode_one(&frame[..HEADER_LEN]),
            Err(FrameError::UnknownOpcode(kind))
        );
        assert_eq!(FrameError::UnknownOpcode(kind).reply_to(), (0, 0));
    }
    // A response may carry any kind: an error about an unreadable frame has kind 0.
    let mut buf = BytesMut::new();
    encode_error(
        0,
        0,
        &Error::new(ErrorCode::BadFrame, "unknown opcode 3"),
        &mut buf,
    );
    let r = decode_response(&mut buf).unwrap().unwrap();
    assert_eq!((r.id, r.kind), (0, 0));
}

#[test]
fn bad_payloads_are_refused_with_the_request_id_and_consumed() {
    let garbage: &[&[u8]] = &[
        &[],
        &[0xc1],                         // never used in MessagePack
        &[0xc0],                         // nil, not a map
        &[0x90],                         // an array, not a map
        &[0x81, 0x01, 0x02],             // an integer key
        &[0xdf, 0xff, 0xff, 0xff, 0xff], // a map declaring 2^32-1 entries
        &[0x81, 0xa3, b'k', b'e'],       // cut inside a key
    ];
    for payload in garbage {
        for op in [
            Opcode::Hello,
            Opcode::Get,
            Opcode::Set,
            Opcode::SetBatch,
            Opcode::Add,
            Opcode::Remove,
        ] {
            let mut buf = raw_frame(42, op as u16, 0, payload);
            buf.put_slice(&request_frame(43, &Request::Ping));
            let err = decode_request(&mut buf).unwrap_err();
            assert!(
                matches!(err, FrameError::BadPayload { .. }),
                "{op} {payload:?}: {err:?}"
            );
            assert_eq!(err.reply_to(), (42, op as u16));
            assert_eq!(Error::from(err).code(), ErrorCode::BadFrame);
            assert_eq!(
                decode_request(&mut buf).unwrap(),
                Some((43, Request::Ping)),
                "stream in step"
            );
        }
    }
    for op in [Opcode::Ping, Opcode::Stats] {
        let why = bad_payload_why(decode_one(&raw_frame(1, op as u16, 0, &[0x80])));
        assert!(why.contains("empty payload, got 1 bytes"), "{why}");
    }
}

#[test]
fn unknown_repeated_and_missing_fields_are_refused() {
    let typo = map(&[
        ("key", json!("a")),
        ("value", json!(1)),
        ("overwite", json!(true)),
    ]);
    let why = bad_payload_why(decode_one(&raw_frame(1, Opcode::Set as u16, 0, &typo)));
    assert!(why.contains("unknown field `overwite`"), "{why}");

    let twice = map(&[
        ("key", json!("a")),
        ("value", json!(1)),
        ("key", json!("b")),
    ]);
    let why = bad_payload_why(decode_one(&raw_frame(1, Opcode::Set as u16, 0, &twice)));
    assert!(why.contains("duplicate field `key`"), "{why}");

    let no_value = map(&[("key", json!("a"))]);
    let why = bad_payload_why(decode_one(&raw_frame(1, Opcode::Set as u16, 0, &no_value)));
    assert!(why.contains("missing field `value`"), "{why}");

    let item_typo = map(&[("items", json!([{"key": "a", "value": 1, "lable1": "x"}]))]);
    let why = bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::SetBatch as u16,
        0,
        &item_typo,
    )));
    assert!(why.contains("unknown field `lable1`"), "{why}");

    let no_version = map(&[("env", json!("dev"))]);
    let why = bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::Hello as u16,
        0,
        &no_version,
    )));
    assert!(why.contains("missing field `version`"), "{why}");
}

#[test]
fn structs_sent_as_positional_arrays_are_refused() {
    let positional = [0x92, 0xa1, b'a', 0x01]; // ["a", 1]
    let why = bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::Set as u16,
        0,
        &positional,
    )));
    assert!(why.contains("expected a Set map"), "{why}");
    let items = map(&[("items", json!([["a", 1]])), ("overwrite", json!(true))]);
    let why = bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::SetBatch as u16,
        0,
        &items,
    )));
    assert!(why.contains("expected a batch item map"), "{why}");
}

#[test]
fn wrong_types_are_refused() {
    let cases: &[(Opcode, Vec<u8>)] = &[
        (Opcode::Set, map(&[("key", json!(1)), ("value", json!(1))])),
        (
            Opcode::Set,
            map(&[
                ("key", json!("a")),
                ("value", json!(1)),
                ("label1", json!(5)),
            ]),
        ),
        (Opcode::Get, map(&[("pattern", json!({"a": 1}))])),
        (Opcode::Get, map(&[("pattern", json!([1, 2]))])),
        (
            Opcode::Get,
            map(&[("pattern", json!("a")), ("limit", json!(1.5))]),
        ),
        (
            Opcode::Get,
            map(&[("pattern", json!("a")), ("limit", json!(u64::MAX))]),
        ),
        (
            Opcode::Get,
            map(&[("pattern", json!("a")), ("reverse", json!("yes"))]),
        ),
        (
            Opcode::Add,
            map(&[("key", json!("a")), ("amount", json!("1"))]),
        ),
        (
            Opcode::Add,
            map(&[("key", json!("a")), ("amount", Value::Null)]),
        ),
        (Opcode::Hello, map(&[("version", json!(-1))])),
        (
            Opcode::Hello,
            map(&[("version", json!(u64::from(u32::MAX) + 1))]),
        ),
        (Opcode::Remove, map(&[("keys", json!(true))])),
        (Opcode::SetBatch, map(&[("items", json!({"key": "a"}))])),
    ];
    for (op, payload) in cases {
        let r = decode_one(&raw_frame(1, *op as u16, 0, payload));
        assert!(
            matches!(r, Err(FrameError::BadPayload { .. })),
            "{op} {payload:x?}: {r:?}"
        );
    }
}

#[test]
fn strings_must_be_str_not_bin() {
    let bin_a = [0xc4, 0x01, b'a'];
    let with_bin = |op: Opcode, before: &[(&str, Value)], name: &str| {
        let mut payload = map(before);
        payload[0] += 1; // one more entry, written here
        rmp::encode::write_str(&mut payload, name).unwrap();
        payload.extend(bin_a);
        decode_one(&raw_frame(1, op as u16, 0, &payload))
    };
    let cases = [
        with_bin(Opcode::Set, &[("value", json!(1))], "key"),
        with_bin(
            Opcode::Set,
            &[("key", json!("k")), ("value", json!(1))],
            "label1",
        ),
        with_bin(Opcode::Get, &[("pattern", json!("a"))], "start"),
        with_bin(Opcode::Hello, &[("version", json!(1))], "token"),
        with_bin(Opcode::Add, &[("amount", json!(1))], "key"),
        with_bin(Opcode::Remove, &[], "keys"),
    ];
    for r in cases {
        let why = bad_payload_why(r);
        assert!(why.contains("byte array"), "{why}");
    }
    let mut payload = map(&[("keys", json!(["a"]))]);
    let at = payload.len() - 2;
    payload.splice(at.., [0xc4, 0x01, b'a']);
    let why = bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::Remove as u16,
        0,
        &payload,
    )));
    assert!(why.contains("byte array"), "{why}");
}

#[test]
fn trailing_bytes_are_refused() {
    let mut payload = map(&[("keys", json!("a"))]);
    payload.push(0xc0);
    let why = bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::Remove as u16,
        0,
        &payload,
    )));
    assert!(why.contains("1 trailing bytes"), "{why}");
}

#[test]
fn nil_is_not_absent_for_ttl_and_labels_of_a_set() {
    let payload = map(&[
        ("key", json!("a")),
        ("value", json!(1)),
        ("ttl", Value::Null),
        ("label2", Value::Null),
        ("label3", json!("x")),
    ]);
    let Some((_, Request::Set(s))) =
        decode_one(&raw_frame(1, Opcode::Set as u16, 0, &payload)).unwrap()
    else {
        panic!("not a set");
    };
    assert_eq!(s.options.ttl, Some(Value::Null));
    assert_eq!(
        s.options.labels,
        [None, Some(None), Some(Some("x".into())), None, None]
    );
    let absent = map(&[("key", json!("a")), ("value", json!(1))]);
    let Some((_, Request::Set(s))) =
        decode_one(&raw_frame(1, Opcode::Set as u16, 0, &absent)).unwrap()
    else {
        panic!("not a set");
    };
    assert_eq!(s.options.ttl, None);
    assert_eq!(s.options.labels, [None, None, None, None, None]);
    // For options that have no "clear", nil is the same as absent.
    let payload = map(&[
        ("pattern", json!("a")),
        ("limit", Value::Null),
        ("meta", Value::Null),
        ("start", Value::Null),
    ]);
    let Some((_, Request::Get(g))) =
        decode_one(&raw_frame(1, Opcode::Get as u16, 0, &payload)).unwrap()
    else {
        panic!("not a get");
    };
    assert_eq!(g.options, QueryOptions::default());
}

#[test]
fn integers_and_floats_stay_distinct() {
    for (value, amount) in [
        (json!(1), serde_json::Number::from(1)),
        (json!(1.0), serde_json::Number::from_f64(1.0).unwrap()),
        (json!(u64::MAX), serde_json::Number::from(u64::MAX)),
        (json!(i64::MIN), serde_json::Number::from(i64::MIN)),
        (json!(-0.5), serde_json::Number::from_f64(-0.5).unwrap()),
    ] {
        let request = Request::Set(set(
            "k",
            json!({"n": value.clone(), "list": [value.clone()]}),
        ));
        let (_, got) = decode_one(&request_frame(1, &request)).unwrap().unwrap();
        assert_eq!(got, request);
        let add = Request::Add(Add {
            key: "k".into(),
            field: None,
            amount: amount.clone(),
            meta: false,
        });
        let Some((_, Request::Add(got))) = decode_one(&request_frame(1, &add)).unwrap() else {
            panic!("not an add");
        };
        assert_eq!(
            (
                got.amount.is_f64(),
                got.amount.is_i64() || got.amount.is_u64()
            ),
            (amount.is_f64(), !amount.is_f64())
        );
        let mut buf = BytesMut::new();
        encode_ok_value(1, Opcode::Add as u16, &value, &mut buf);
        let got = decode_response(&mut buf).unwrap().unwrap().result.unwrap();
        assert_eq!(
            (got.is_f64(), got.is_u64() || got.is_i64()),
            (value.is_f64(), !value.is_f64())
        );
        assert_eq!(got, value);
    }
}

/// `[[...[nil]...]]` nested `levels` deep, as the value of a Set: the payload nests
/// `levels + 1` levels.
fn deep_set(levels: usize) -> Vec<u8> {
    let mut payload = map(&[("key", json!("a"))]);
    payload[0] = 0x82; // one more entry: the value, written below
    rmp::encode::write_str(&mut payload, "value").unwrap();
    payload.extend(std::iter::repeat_n(0x91, levels));
    payload.push(0xc0);
    payload
}

#[test]
fn nesting_is_bounded() {
    let ok = deep_set(PAYLOAD_DEPTH_MAX - 1);
    assert!(decode_one(&raw_frame(1, Opcode::Set as u16, 0, &ok))
        .unwrap()
        .is_some());
    let too_deep = deep_set(PAYLOAD_DEPTH_MAX);
    let why = bad_payload_why(decode_one(&raw_frame(1, Opcode::Set as u16, 0, &too_deep)));
    assert!(why.contains("depth limit"), "{why}");
    // Far deeper than any stack could recurse: refused, not a crash.
    let hostile = deep_set(1_000_000);
    bad_payload_why(decode_one(&raw_frame(1, Opcode::Set as u16, 0, &hostile)));

    // A page of the deepest value a Set accepts still decodes as a response.
    let mut value = Value::Null;
    for _ in 0..PAYLOAD_DEPTH_MAX - 1 {
        value = Value::Array(vec![value]);
    }
    let page = json!({"items": [{"key": "a", "value": value}]});
    let mut buf = BytesMut::new();
    encode_ok_value(1, Opcode::Get as u16, &page, &mut buf);
    assert_eq!(decode_response(&mut buf).unwrap().unwrap().result, Ok(page));
}

#[test]
fn declared_counts_do_not_allocate() {
    // A list declaring 2^32-1 elements in a 20-byte payload: refused at the end of
    // the bytes, its capacity capped (a 2^32-1 element Vec would abort the test).
    let mut payload = map(&[("pattern", json!("x"))]);
    payload.truncate(payload.len() - 2); // drop the string "x"
    payload.extend([0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, b'a']);
    bad_payload_why(decode_one(&raw_frame(1, Opcode::Get as u16, 0, &payload)));
    let mut payload = map(&[("items", json!([]))]);
    payload.truncate(payload.len() - 1);
    payload.extend([0xdd, 0xff, 0xff, 0xff, 0xff, 0x80]);
    bad_payload_why(decode_one(&raw_frame(
        1,
        Opcode::SetBatch as u16,
        0,
        &payload,
    )));
}

#[test]
fn oversized_requests_are_refused_before_sending() {
    let huge = "x".repeat(FRAME_PAYLOAD_MAX);
    let mut out = BytesMut::from(&b"before"[..]);
    let err = encode_request(1, &Request::Set(set("k", json!(huge))), &mut out).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { declared, .. } if declared > FRAME_PAYLOAD_MAX as u64)
    );
    assert_eq!(&out[..], b"before");
    // The largest batch the limits allow fits.
    let item = BatchItem {
        key: "k".repeat(200),
        value: json!("v".repeat(ITEM_SIZE_MAX - 2000)),
        ttl: Some(json!("2030-01-01T00:00:00Z")),
        labels: std::array::from_fn(|_| Some("l".repeat(256))),
    };
    let batch = Request::SetBatch(SetBatch {
        items: vec![item; BATCH_ITEMS_MAX],
        overwrite: true,
        meta: true,
    });
    let mut out = BytesMut::new();
    encode_request(1, &batch, &mut out).unwrap();
    assert_eq!(decode_request(&mut out).unwrap(), Some((1, batch)));
}

#[test]
fn responses_round_trip() {
    let mut buf = BytesMut::new();
    encode_ok(1, Opcode::Ping as u16, &[], &mut buf);
    encode_ok(2, Opcode::Get as u16, &[0xc0], &mut buf);
    let start = begin_ok(3, Opcode::Get as u16, &mut buf);
    buf.put_slice(&crate::value::encode(&json!({"a": [1, 2.5]})));
    start.finish(&mut buf);
    encode_ok_value(4, Opcode::Remove as u16, &json!([true, false]), &mut buf);
    let expect = [
        (1, Opcode::Ping, Value::Null),
        (2, Opcode::Get, Value::Null),
        (3, Opcode::Get, json!({"a": [1, 2.5]})),
        (4, Opcode::Remove, json!([true, false])),
    ];
    for (id, op, value) in expect {
        let r = decode_response(&mut buf).unwrap().unwrap();
        assert_eq!(
            r,
            Response {
                id,
                kind: op as u16,
                result: Ok(value),
                push: false,
            }
        );
    }
    assert!(buf.is_empty());
}

#[test]
fn every_error_code_round_trips() {
    let mut buf = BytesMut::new();
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        let e = Error::new(code, format!("{code} number {i}"));
        encode_error(i as u32, Opcode::Set as u16, &e, &mut buf);
        let r = decode_response(&mut buf).unwrap().unwrap();
        assert_eq!(
            r,
            Response {
                id: i as u32,
                kind: Opcode::Set as u16,
                result: Err(e),
                push: false,
            }
        );
    }
}

#[test]
fn error_payloads_from_newer_servers_still_decode() {
    let payload = map(&[
        ("code", json!(999)),
        ("message", json!("a new kind of refusal")),
        ("retryAfterMs", json!(50)),
    ]);
    let frame = raw_frame(3, Opcode::Set as u16, FLAG_RESPONSE | FLAG_ERROR, &payload);
    let r = decode_response(&mut frame.clone()).unwrap().unwrap();
    let e = r.result.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal);
    assert_eq!(e.message(), "error code 999: a new kind of refusal");
    for bad in [
        map(&[("code", json!(1))]),
        map(&[("code", json!(70000)), ("message", json!("m"))]),
        vec![0xc0],
    ] {
        let frame = raw_frame(3, 0, FLAG_RESPONSE | FLAG_ERROR, &bad);
        let err = decode_response(&mut frame.clone()).unwrap_err();
        assert!(
            matches!(err, FrameError::BadPayload { id: 3, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn long_error_messages_are_cut_at_a_character() {
    let long = "é".repeat(ERROR_MESSAGE_LEN_MAX); // two bytes each
    let mut buf = BytesMut::new();
    encode_error(1, 0, &Error::new(ErrorCode::Internal, long), &mut buf);
    let e = decode_response(&mut buf)
        .unwrap()
        .unwrap()
        .result
        .unwrap_err();
    assert_eq!(e.message().len(), ERROR_MESSAGE_LEN_MAX);
    assert_eq!(cut_at_char("aé", 2), "a");
    assert_eq!(cut_at_char("", 2), "");
}

#[test]
#[should_panic(expected = "passes the limit")]
fn an_oversized_response_is_a_bug() {
    let mut buf = BytesMut::new();
    let start = begin_ok(1, 1, &mut buf);
    buf.put_bytes(0, FRAME_PAYLOAD_MAX + 1);
    start.finish(&mut buf);
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// PROTOCOL.md's worked example is these bytes: the doc cannot drift from the code.
#[test]
fn protocol_md_worked_example() {
    let doc = include_str!("../../PROTOCOL.md");
    let mut frames = Vec::new();
    let hello = Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        env: Some("dev".into()),
        token: None,
    });
    frames.push(request_frame(1, &hello));
    let mut buf = BytesMut::new();
    encode_ok_value(
        1,
        Opcode::Hello as u16,
        &json!({"version": 1, "server": "ampd"}),
        &mut buf,
    );
    frames.push(buf);
    frames.push(request_frame(2, &Request::Set(set("a", json!(1)))));
    let mut buf = BytesMut::new();
    encode_ok_value(2, Opcode::Set as u16, &json!(1), &mut buf);
    frames.push(buf);
    let mut buf = BytesMut::new();
    encode_error(
        3,
        Opcode::Set as u16,
        &Error::new(ErrorCode::InvalidKey, "key is empty"),
        &mut buf,
    );
    frames.push(buf);
    let lines: Vec<(String, String)> = frames
        .iter()
        .map(|frame| {
            let (header, payload) = frame.split_at(HEADER_LEN);
            (
                format!("header  {}", hex(header)),
                format!("payload {}", hex(payload)),
            )
        })
        .collect();
    // On a failure, these are the lines to paste.
    for (header_line, payload_line) in &lines {
        println!("{header_line}\n{payload_line}");
    }
    for ((header_line, payload_line), frame) in lines.iter().zip(&frames) {
        let payload = &frame[HEADER_LEN..];
        assert!(
            doc.contains(header_line.as_str()),
            "PROTOCOL.md lacks `{header_line}`"
        );
        assert!(
            payload.is_empty() || doc.contains(payload_line.as_str()),
            "PROTOCOL.md lacks `{payload_line}`"
        );
    }
}

/// The error code table of PROTOCOL.md lists every code with its number.
#[test]
fn protocol_md_lists_every_error_code_and_opcode() {
    let doc = include_str!("../../PROTOCOL.md");
    for code in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code as u16, code.as_str());
        assert!(doc.contains(&row), "PROTOCOL.md lacks `{row}`");
    }
    for op in Opcode::ALL {
        let row = format!("| {} | `{}` |", op as u16, op.as_str());
        assert!(doc.contains(&row), "PROTOCOL.md lacks `{row}`");
    }
}

// ---- fuzz seeds and regressions ----------------------------------------------------

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// The seed corpus of each fuzz target: `(target, file, bytes)`.
fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut all = BytesMut::new();
    for (i, r) in examples().iter().enumerate() {
        encode_request(i as u32 + 1, r, &mut all).unwrap();
    }
    let mut responses = BytesMut::new();
    let page =
        json!({"items": [{"key": "a", "value": 1}, {"key": "b", "value": 2.5}], "lastKey": "b"});
    encode_ok_value(1, Opcode::Get as u16, &page, &mut responses);
    encode_ok(2, Opcode::Ping as u16, &[], &mut responses);
    let e = Error::new(ErrorCode::InvalidKey, "key is empty");
    encode_error(3, Opcode::Set as u16, &e, &mut responses);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        env: Some("prod".into()),
        token: Some("secret".into()),
    };
    let mut hello_payload = BytesMut::new();
    write_payload(&mut hello_payload, &hello);
    vec![
        ("frame_request", "every_request", all.to_vec()),
        (
            "frame_request",
            "set",
            request_frame(2, &Request::Set(set("a", json!(1)))).to_vec(),
        ),
        ("frame_response", "ok_and_error", responses.to_vec()),
        ("handshake", "hello_payload", hello_payload.to_vec()),
    ]
}

/// The seeds in `wire/fuzz/corpus/` are what this code encodes today. Run with
/// `AMPD_WRITE_FUZZ_SEEDS=1` to rewrite them after a format change.
#[test]
fn fuzz_seeds_are_current() {
    let write = std::env::var_os("AMPD_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in fuzz_seeds() {
        let path = format!("{FUZZ_DIR}/corpus/{target}/{name}");
        if write {
            std::fs::create_dir_all(format!("{FUZZ_DIR}/corpus/{target}")).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{path} is stale: rerun with AMPD_WRITE_FUZZ_SEEDS=1"
        );
        replay(target, &bytes);
    }
}

/// Every input a fuzz target once crashed on, kept in `wire/fuzz/regressions/`, passes
/// the target's checks now.
#[test]
fn fuzz_regressions_pass() {
    for target in ["frame_request", "frame_response", "handshake"] {
        let Ok(dir) = std::fs::read_dir(format!("{FUZZ_DIR}/regressions/{target}")) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            replay(target, &std::fs::read(&path).unwrap());
        }
    }
}

/// What each fuzz target (`wire/fuzz/fuzz_targets/`) checks of one input.
fn replay(target: &str, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    match target {
        "frame_request" => {
            while let Ok(Some((id, request))) = decode_request(&mut buf) {
                let mut again = BytesMut::new();
                if encode_request(id, &request, &mut again).is_ok() {
                    assert_eq!(decode_request(&mut again), Ok(Some((id, request))));
                }
            }
        }
        "frame_response" => {
            while let Ok(Some(response)) = decode_response(&mut buf) {
                let mut again = BytesMut::new();
                match &response.result {
                    Ok(v) if response.push => {
                        encode_push(response.id, response.kind, v, &mut again)
                    }
                    Ok(v) => encode_ok_value(response.id, response.kind, v, &mut again),
                    Err(e) if e.message().len() > ERROR_MESSAGE_LEN_MAX => continue,
                    Err(e) => encode_error(response.id, response.kind, e, &mut again),
                }
                assert_eq!(decode_response(&mut again), Ok(Some(response)));
            }
        }
        "handshake" => {
            if let Ok(request) = decode_request_payload(1, Opcode::Hello, data) {
                assert!(matches!(request, Request::Hello(_)));
                let mut frame = BytesMut::new();
                if encode_request(1, &request, &mut frame).is_ok() {
                    assert_eq!(decode_request(&mut frame), Ok(Some((1, request))));
                }
            }
        }
        other => panic!("no fuzz target {other}"),
    }
}

// ---- property tests --------------------------------------------------------------

fn arb_string() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        arb_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_number() -> impl Strategy<Value = serde_json::Number> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Number::from),
        any::<u64>().prop_map(serde_json::Number::from),
        any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64),
    ]
}

fn arb_patterns() -> impl Strategy<Value = Patterns> {
    prop_oneof![
        arb_string().prop_map(Patterns::One),
        prop::collection::vec(arb_string(), 0..4).prop_map(Patterns::Many),
    ]
}

fn arb_batch_item() -> impl Strategy<Value = BatchItem> {
    (
        arb_string(),
        arb_value(),
        prop::option::of(arb_value()),
        prop::array::uniform5(prop::option::of(arb_string())),
    )
        .prop_map(|(key, value, ttl, labels)| BatchItem {
            key,
            value,
            ttl,
            labels,
        })
}

fn arb_request() -> impl Strategy<Value = Request> {
    let opt_str = || prop::option::of(arb_string());
    prop_oneof![
        (any::<u32>(), opt_str(), opt_str()).prop_map(|(version, env, token)| Request::Hello(
            Hello {
                version,
                env,
                token
            }
        )),
        Just(Request::Ping),
        Just(Request::Stats),
        (
            arb_patterns(),
            prop::option::of(any::<i64>()),
            any::<bool>(),
            opt_str(),
            opt_str(),
            any::<bool>()
        )
            .prop_map(|(pattern, limit, reverse, start, label, meta)| {
                Request::Get(Get {
                    pattern,
                    options: QueryOptions {
                        meta,
                        limit,
                        reverse,
                        start,
                        label,
                    },
                })
            }),
        (
            arb_string(),
            arb_value(),
            prop::option::of(arb_value()),
            prop::array::uniform5(prop::option::of(opt_str())),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(key, value, ttl, labels, overwrite, meta)| {
                Request::Set(Set {
                    key,
                    value: value.into(),
                    options: SetOptions {
                        meta,
                        overwrite,
                        ttl,
                        labels,
                    },
                })
            }),
        (
            prop::collection::vec(arb_batch_item(), 0..4),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(items, overwrite, meta)| Request::SetBatch(SetBatch {
                items,
                overwrite,
                meta
            })),
        (arb_string(), opt_str(), arb_number(), any::<bool>()).prop_map(
            |(key, field, amount, meta)| Request::Add(Add {
                key,
                field,
                amount,
                meta
            })
        ),
        arb_patterns().prop_map(|keys| Request::Remove(Remove { keys })),
    ]
}

/// Decodes every frame in `bytes`, as a server would, until one is incomplete or
/// refused. Must never panic.
fn drain_requests(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = decode_request(&mut buf) {}
}

fn drain_responses(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = decode_response(&mut buf) {}
}

proptest! {
    #[test]
    fn requests_round_trip(id in any::<u32>(), request in arb_request()) {
        let mut buf = request_frame(id, &request);
        prop_assert_eq!(decode_request(&mut buf).unwrap(), Some((id, request)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn ok_responses_round_trip(id in any::<u32>(), kind in any::<u16>(), value in arb_value()) {
        let mut buf = BytesMut::new();
        encode_ok_value(id, kind, &value, &mut buf);
        let expect = Response { id, kind, result: Ok(value), push: false };
        prop_assert_eq!(decode_response(&mut buf).unwrap(), Some(expect));
    }

    #[test]
    fn error_responses_round_trip(
        id in any::<u32>(),
        code in prop::sample::select(&ErrorCode::ALL[..]),
        message in ".{0,64}",
    ) {
        let mut buf = BytesMut::new();
        let e = Error::new(code, message);
        encode_error(id, Opcode::Get as u16, &e, &mut buf);
        let expect = Response { id, kind: Opcode::Get as u16, result: Err(e), push: false };
        prop_assert_eq!(decode_response(&mut buf).unwrap(), Some(expect));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        drain_requests(&bytes);
        drain_responses(&bytes);
    }

    /// Valid headers with arbitrary payloads reach the payload decoders, which random
    /// bytes alone rarely do.
    #[test]
    fn arbitrary_payloads_never_panic(
        kind in prop::sample::select(Opcode::ALL.map(|op| op as u16).to_vec()),
        flags in prop::sample::select(vec![0, FLAG_RESPONSE, FLAG_RESPONSE | FLAG_ERROR]),
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let frame = raw_frame(1, kind, flags, &payload);
        drain_requests(&frame);
        drain_responses(&frame);
    }

    /// A valid frame with a few bytes changed: close to valid, the hardest case.
    #[test]
    fn mutated_frames_never_panic(
        request in arb_request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = request_frame(1, &request).to_vec();
        for (at, byte) in edits {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        drain_requests(&frame);
        let mut as_response = frame.clone();
        as_response[FLAGS_OFFSET] = FLAG_RESPONSE as u8;
        drain_responses(&as_response);
    }
}

#[test]
fn a_push_carries_its_subscribe_request_and_is_never_an_error() {
    let mut buf = BytesMut::new();
    let payload = json!({"delivery": 7, "event": {"name": "created"}});
    encode_push(9, Opcode::Subscribe as u16, &payload, &mut buf);
    assert_eq!(
        buf[8..12],
        [64, 0, (FLAG_RESPONSE | FLAG_PUSH) as u8, 0],
        "kind 64, flags RESPONSE | PUSH"
    );
    let r = decode_response(&mut buf).unwrap().unwrap();
    assert_eq!(
        r,
        Response {
            id: 9,
            kind: Opcode::Subscribe as u16,
            result: Ok(payload),
            push: true,
        }
    );
    let mut bad =
        BytesMut::from(&raw_frame(1, 64, FLAG_RESPONSE | FLAG_PUSH | FLAG_ERROR, b"")[..]);
    assert!(matches!(
        decode_response(&mut bad),
        Err(FrameError::BadFlags {
            why: "a push is never an error",
            ..
        })
    ));
    let mut request = BytesMut::from(&raw_frame(1, 64, FLAG_PUSH, b"")[..]);
    assert!(matches!(
        decode_request(&mut request),
        Err(FrameError::BadFlags { .. })
    ));
}

#[test]
fn subscribe_and_ack_round_trip() {
    for request in [
        Request::Subscribe(Subscribe {
            name: "mailer".into(),
            filter: Patterns::One("created:users:*".into()),
        }),
        Request::Subscribe(Subscribe {
            name: "audit".into(),
            filter: Patterns::Many(vec!["created".into(), "deleted:*".into()]),
        }),
        Request::Ack(Ack {
            delivery: u64::MAX,
            error: None,
        }),
        Request::Ack(Ack {
            delivery: 3,
            error: Some("smtp down".into()),
        }),
    ] {
        let mut buf = BytesMut::new();
        encode_request(5, &request, &mut buf).unwrap();
        assert_eq!(decode_request(&mut buf).unwrap(), Some((5, request)));
    }
}
