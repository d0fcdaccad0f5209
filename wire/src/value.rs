//! The value encoding: MessagePack, the compact self-describing format that every
//! language already has a library for.
//!
//! A [`Value`] is JSON-shaped (`serde_json::Value` with insertion-ordered objects).
//! Integers and floats stay distinct through the encoding: an integer is a MessagePack
//! int, a float a MessagePack float64. The engine keeps every stored value in this
//! encoding, so reads hand bytes to the protocol without re-encoding; only merges and
//! counters decode.

use crate::limits::VALUE_DEPTH_MAX;
use crate::{Error, ErrorCode};
use bytes::Bytes;

/// A JSON-shaped value: null, bool, number (exact 64-bit integer or float), string,
/// array or object.
pub type Value = serde_json::Value;

/// Encodes a value. Infallible for every `Value` (objects have string keys).
pub fn encode(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(16);
    encode_into(value, &mut out);
    Bytes::from(out)
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail and a serde_json::Value always has string keys.
    #[expect(
        clippy::expect_used,
        reason = "a Vec grows as needed and a Value has string keys"
    )]
    rmp_serde::encode::write(out, value).expect("a Value always encodes into a Vec");
}

/// How deeply `value` nests arrays and objects (a scalar is 0, `[1]` is 1). Walks
/// without recursion, so any value can be measured.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((v, above)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, above + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|f| (f, above + 1))),
            _ => continue,
        }
        deepest = deepest.max(above + 1);
    }
    deepest
}

/// Refuses a value nested deeper than [`VALUE_DEPTH_MAX`] with `value_too_large`.
pub fn check_depth(value: &Value) -> Result<(), Error> {
    let depth = depth(value);
    if depth > VALUE_DEPTH_MAX {
        return Err(Error::new(
            ErrorCode::ValueTooLarge,
            format!("the value nests {depth} levels deep, limit {VALUE_DEPTH_MAX}"),
        ));
    }
    Ok(())
}

/// Decodes one value; bytes that are not a whole, valid encoding are `bad_frame`.
pub fn decode(bytes: &[u8]) -> Result<Value, Error> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let value: Value = serde::Deserialize::deserialize(&mut de)
        .map_err(|e| Error::new(ErrorCode::BadFrame, format!("undecodable value: {e}")))?;
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(Error::new(
            ErrorCode::BadFrame,
            format!(
                "value has {} trailing bytes after {used}",
                bytes.len() as u64 - used
            ),
        ));
    }
    Ok(value)
}

/// Whether an encoded value is an object (a MessagePack map), without decoding it.
pub fn is_object(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

/// The fields of an encoded object, in order: each name and the encoded bytes of its
/// value, borrowed from `bytes`, so a merge copies the fields it keeps without decoding
/// them. `None` when `bytes` is not a whole encoded object with string keys.
pub fn object_fields(bytes: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let mut rest = bytes;
    let len = rmp::decode::read_map_len(&mut rest).ok()?;
    // A length read from the bytes bounds nothing: every field takes at least 2 bytes.
    let mut fields = Vec::with_capacity((len as usize).min(rest.len() / 2));
    for _ in 0..len {
        let (name, after_name) = rmp::decode::read_str_from_slice(rest).ok()?;
        let mut after_value = after_name;
        rmpv::decode::read_value_ref(&mut after_value).ok()?;
        let used = after_name.len() - after_value.len();
        fields.push((name, after_name.get(..used)?));
        rest = after_value;
    }
    rest.is_empty().then_some(fields)
}

/// Writes an encoded object field by field: the counterpart of [`object_fields`].
pub struct ObjectWriter {
    out: Vec<u8>,
}

impl ObjectWriter {
    /// Starts an object of exactly `len` fields.
    pub fn new(len: usize, capacity: usize) -> ObjectWriter {
        let mut out = Vec::with_capacity(capacity + 5);
        // Writing into a Vec cannot fail.
        let _ = rmp::encode::write_map_len(&mut out, len as u32);
        ObjectWriter { out }
    }

    /// A field whose value is already encoded.
    pub fn encoded_field(&mut self, name: &str, encoded: &[u8]) {
        let _ = rmp::encode::write_str(&mut self.out, name);
        self.out.extend_from_slice(encoded);
    }

    pub fn field(&mut self, name: &str, value: &Value) {
        let _ = rmp::encode::write_str(&mut self.out, name);
        encode_into(value, &mut self.out);
    }

    pub fn finish(self) -> Bytes {
        Bytes::from(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}], "c": 2})), 4);
        assert_eq!(depth(&nested(VALUE_DEPTH_MAX)), VALUE_DEPTH_MAX);
        assert!(check_depth(&nested(VALUE_DEPTH_MAX)).is_ok());
        let e = check_depth(&nested(VALUE_DEPTH_MAX + 1)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValueTooLarge);
        assert_eq!(
            e.message(),
            format!(
                "the value nests {} levels deep, limit {VALUE_DEPTH_MAX}",
                VALUE_DEPTH_MAX + 1
            )
        );
    }

    #[test]
    fn integers_and_floats_stay_distinct() {
        for v in [
            json!(1),
            json!(1.0),
            json!(-7),
            json!(i64::MAX),
            json!(u64::MAX),
        ] {
            assert_eq!(decode(&encode(&v)).unwrap(), v);
        }
        assert!(decode(&encode(&json!(1.0))).unwrap().is_f64());
        assert!(decode(&encode(&json!(1))).unwrap().is_i64());
    }

    #[test]
    fn object_order_is_kept_and_detected() {
        let v = json!({"z": 1, "a": [true, null, "s"], "m": {"x": 1.5}});
        let b = encode(&v);
        assert!(is_object(&b));
        assert_eq!(decode(&b).unwrap().to_string(), v.to_string());
        assert!(!is_object(&encode(&json!([1]))));
        assert!(!is_object(&[]));
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        let b = encode(&json!({"k": "some value", "n": [1, 2, 3]}));
        for len in 0..b.len() {
            assert_eq!(decode(&b[..len]).unwrap_err().code(), ErrorCode::BadFrame);
        }
        let mut long = b.to_vec();
        long.push(0xc0);
        assert_eq!(decode(&long).unwrap_err().code(), ErrorCode::BadFrame);
    }

    #[test]
    fn object_fields_round_trip_through_the_writer() {
        let v = json!({"a": 1, "b": {"c": [1, 2, {"d": null}]}, "e": "text", "f": 2.5});
        let enc = encode(&v);
        let fields = object_fields(&enc).unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
        assert_eq!(names, ["a", "b", "e", "f"]);
        assert_eq!(
            decode(fields[1].1).unwrap(),
            json!({"c": [1, 2, {"d": null}]})
        );
        let mut w = ObjectWriter::new(fields.len(), enc.len());
        for (name, raw) in &fields {
            w.encoded_field(name, raw);
        }
        assert_eq!(w.finish(), enc);
        assert_eq!(object_fields(&encode(&json!([1]))), None);
        for len in 0..enc.len() {
            assert_eq!(object_fields(&enc[..len]), None, "prefix of {len} bytes");
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec((".*", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            prop_assert_eq!(decode(&encode(&v)).unwrap(), v);
        }

        #[test]
        fn object_fields_agree_with_decode(v in arb_value()) {
            let enc = encode(&v);
            match (object_fields(&enc), &v) {
                (Some(fields), Value::Object(m)) => {
                    prop_assert_eq!(fields.len(), m.len());
                    for ((name, raw), (k, fv)) in fields.iter().zip(m) {
                        prop_assert_eq!(*name, k.as_str());
                        prop_assert_eq!(&decode(raw).unwrap(), fv);
                    }
                }
                (None, Value::Object(_)) => prop_assert!(false, "an object was not read"),
                (fields, _) => prop_assert!(fields.is_none()),
            }
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
