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
use serde::Deserialize;

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

/// A value a request gives to be stored. A caller builds one from a [`Value`]; read off
/// a frame, anything but an object stays in the value encoding, exactly as the engine
/// stores it, so a `set` of a string, number or array never builds a `Value` only to
/// encode it again. An object is decoded: a `set` may merge it into the stored object
/// or add to its fields.
///
/// Reading one accepts and refuses exactly what reading a [`Value`] does, and its bytes
/// are what [`encode`] makes of that `Value` (integers in their shortest form, floats
/// as float64, non-finite floats as nil, objects with their duplicate names merged).
#[derive(Debug, Clone)]
pub enum Given {
    Value(Value),
    /// The encoding of a value that is not an object.
    Encoded(Bytes),
}

impl Given {
    /// The value, decoded if need be.
    pub fn to_value(&self) -> Value {
        match self {
            Given::Value(v) => v.clone(),
            // Only read off a frame, from bytes this module wrote.
            Given::Encoded(b) => decode(b).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for Given {
    fn from(v: Value) -> Given {
        Given::Value(v)
    }
}

impl PartialEq for Given {
    fn eq(&self, other: &Given) -> bool {
        match (self, other) {
            (Given::Encoded(a), Given::Encoded(b)) => a == b,
            (Given::Value(a), Given::Value(b)) => a == b,
            _ => self.to_value() == other.to_value(),
        }
    }
}

impl Default for Given {
    fn default() -> Given {
        Given::Value(Value::Null)
    }
}

impl serde::Serialize for Given {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Given::Value(v) => v.serialize(s),
            Given::Encoded(_) => self.to_value().serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Given {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Given, D::Error> {
        d.deserialize_any(GivenVisitor)
    }
}

/// What [`Value`]'s own visitor says it expects, so refusals read the same.
const EXPECTING: &str = "any valid JSON value";

/// Reads the top of a [`Given`]: an object into a `Value`, anything else through
/// [`Encoder`].
struct GivenVisitor;

macro_rules! encode_as_given {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<E: serde::de::Error>(self, $($arg: $ty),*) -> Result<Given, E> {
            let mut out = Vec::new();
            Encoder(&mut out).$method($($arg),*)?;
            Ok(Given::Encoded(Bytes::from(out)))
        }
    )*};
}

impl<'de> serde::de::Visitor<'de> for GivenVisitor {
    type Value = Given;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(EXPECTING)
    }

    encode_as_given!(
        visit_unit(),
        visit_none(),
        visit_bool(v: bool),
        visit_i64(v: i64),
        visit_u64(v: u64),
        visit_f64(v: f64),
        visit_str(v: &str),
    );

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Given, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Given, A::Error> {
        let mut out = Vec::new();
        Encoder(&mut out).visit_seq(seq)?;
        Ok(Given::Encoded(Bytes::from(out)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Given, A::Error> {
        let object = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Given::Value(object))
    }
}

/// Writes the value it visits in the value encoding, as [`encode`] writes the `Value`
/// that `Value`'s own visitor would have built: nested objects go through a `Value`
/// (for their duplicate names), everything else is written as it is read.
struct Encoder<'a>(&'a mut Vec<u8>);

impl<'de> serde::de::DeserializeSeed<'de> for Encoder<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

// Writes into a Vec cannot fail: their results are ignored below.
impl<'de> serde::de::Visitor<'de> for Encoder<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        let _ = rmp::encode::write_nil(self.0);
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        let _ = rmp::encode::write_bool(self.0, v);
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        let _ = rmp::encode::write_sint(self.0, v);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        let _ = rmp::encode::write_uint(self.0, v);
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // A `Value` has no non-finite numbers: it holds null for them.
        if v.is_finite() {
            let _ = rmp::encode::write_f64(self.0, v);
        } else {
            let _ = rmp::encode::write_nil(self.0);
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        let _ = rmp::encode::write_str(self.0, v);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The length goes first. MessagePack arrays declare theirs, so the hint is the
        // length; without one, the elements are written into a buffer of their own and
        // counted first.
        match seq.size_hint() {
            Some(len) => {
                let _ = rmp::encode::write_array_len(self.0, len as u32);
                let mut seen = 0;
                while seq.next_element_seed(Encoder(self.0))?.is_some() {
                    seen += 1;
                }
                if seen != len {
                    return Err(serde::de::Error::invalid_length(
                        seen,
                        &"the declared length",
                    ));
                }
            }
            None => {
                let mut items = Vec::new();
                let mut seen = 0u32;
                while seq.next_element_seed(Encoder(&mut items))?.is_some() {
                    seen += 1;
                }
                let _ = rmp::encode::write_array_len(self.0, seen);
                self.0.extend_from_slice(&items);
            }
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let object = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        encode_into(&object, self.0);
        Ok(())
    }
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

    /// Any MessagePack value, JSON-shaped or not.
    fn arb_msgpack() -> impl Strategy<Value = rmpv::Value> {
        use rmpv::Value as M;
        let leaf = prop_oneof![
            Just(M::Nil),
            any::<bool>().prop_map(M::from),
            any::<i64>().prop_map(M::from),
            any::<u64>().prop_map(M::from),
            any::<f32>().prop_map(M::F32),
            prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)].prop_map(M::F64),
            "[a-zé]{0,40}".prop_map(M::from),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(M::Binary),
            (any::<i8>(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(t, d)| M::Ext(t, d)),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            let key =
                prop_oneof![4 => "[ab]".prop_map(M::from), 1 => any::<i8>().prop_map(M::from)];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(M::Array),
                prop::collection::vec((key, inner), 0..5).prop_map(M::Map),
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

        /// Any MessagePack at all (bin, ext, integer keys, float32, non-finite floats,
        /// repeated names): read as a `Given`, it is refused exactly when reading a
        /// `Value` refuses it, with the same message, and otherwise holds that value, as
        /// the bytes `encode` makes of it unless it is an object.
        #[test]
        fn a_given_reads_as_a_value_does(v in arb_msgpack()) {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &v).unwrap();
            let as_value = rmp_serde::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
            let as_given = rmp_serde::from_slice::<Given>(&bytes).map_err(|e| e.to_string());
            match (as_value, as_given) {
                (Ok(value), Ok(Given::Encoded(b))) => {
                    prop_assert!(!value.is_object());
                    prop_assert_eq!(&b, &encode(&value));
                }
                (Ok(value), Ok(Given::Value(given))) => {
                    prop_assert!(value.is_object());
                    prop_assert_eq!(given, value);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "Value read {:?}, Given read {:?}", a, b),
            }
        }
    }
}
