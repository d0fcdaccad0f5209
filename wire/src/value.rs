//! The value encoding: MessagePack, the compact self-describing format that every
//! language already has a library for.
//!
//! A [`Value`] is JSON-shaped (`serde_json::Value` with insertion-ordered objects).
//! Integers and floats stay distinct through the encoding: an integer is a MessagePack
//! int, a float a MessagePack float64. The engine keeps every stored value in this
//! encoding, so reads hand bytes to the protocol without re-encoding; only merges and
//! counters decode.

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
    #[allow(clippy::expect_used)]
    rmp_serde::encode::write(out, value).expect("a Value always encodes into a Vec");
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

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
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
