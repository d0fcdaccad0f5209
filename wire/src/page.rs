//! The result shape of every multi-item answer, defined once: `{"items": [...],
//! "lastKey"?: str}`. A page of a `get` carries `lastKey` exactly when more items
//! remain (pass it back as `start`); a batch `get` or `set` never does.
//!
//! The engine builds it as JSON ([`to_json`]), the server writes it straight into a
//! response in MessagePack ([`encode`], copying each stored value's bytes), and the
//! client reads it back ([`from_json`]).

use crate::Value;
use serde_json::Map;

/// The field that holds the entries.
pub const ITEMS: &str = "items";
/// The field that holds the cursor of the next page.
pub const LAST_KEY: &str = "lastKey";

/// `{items, lastKey?}` as JSON.
pub fn to_json(items: Vec<Value>, last_key: Option<&str>) -> Value {
    let mut m = Map::with_capacity(2);
    m.insert(ITEMS.into(), Value::Array(items));
    if let Some(k) = last_key {
        m.insert(LAST_KEY.into(), Value::String(k.to_owned()));
    }
    Value::Object(m)
}

/// Appends `{items, lastKey?}` in MessagePack to `out`, each entry written by
/// `entry` (which must append exactly one MessagePack value). `out` is memory (a
/// `Vec`, a `BytesMut`'s writer): writes to it cannot fail.
pub fn encode<W: std::io::Write, T>(
    out: &mut W,
    items: &[T],
    last_key: Option<&str>,
    mut entry: impl FnMut(&mut W, &T),
) {
    let fields = 1 + u32::from(last_key.is_some());
    let _ = rmp::encode::write_map_len(out, fields);
    let _ = rmp::encode::write_str(out, ITEMS);
    // A page holds at most QUERY_LIMIT_MAX items and a batch BATCH_ITEMS_MAX.
    let _ = rmp::encode::write_array_len(out, u32::try_from(items.len()).unwrap_or(u32::MAX));
    for item in items {
        entry(out, item);
    }
    if let Some(last_key) = last_key {
        let _ = rmp::encode::write_str(out, LAST_KEY);
        let _ = rmp::encode::write_str(out, last_key);
    }
}

/// Reads `{items, lastKey?}` back: the entries and the cursor. Anything else is
/// returned as it came, for the caller's error.
pub fn from_json(value: Value) -> Result<(Vec<Value>, Option<String>), Value> {
    let Value::Object(mut m) = value else {
        return Err(value);
    };
    let items = match m.remove(ITEMS) {
        Some(Value::Array(items)) => items,
        other => return Err(other.unwrap_or_default()),
    };
    match m.remove(LAST_KEY) {
        Some(Value::String(k)) => Ok((items, Some(k))),
        None => Ok((items, None)),
        Some(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_forms_agree() {
        for last_key in [None, Some("ns:b")] {
            let items = vec![
                json!({"key": "ns:a", "value": 1}),
                json!({"key": "ns:b", "value": [true]}),
            ];
            let json = to_json(items.clone(), last_key);
            let mut bytes = Vec::new();
            encode(&mut bytes, &items, last_key, |out, v| {
                crate::value::encode_into(v, out)
            });
            assert_eq!(crate::value::decode(&bytes).unwrap(), json);
            assert_eq!(from_json(json), Ok((items, last_key.map(str::to_owned))));
        }
        assert_eq!(to_json(vec![], None), json!({"items": []}));
    }

    #[test]
    fn other_shapes_are_returned() {
        assert_eq!(from_json(json!(1)), Err(json!(1)));
        assert_eq!(from_json(json!({"items": 1})), Err(json!(1)));
        assert_eq!(from_json(json!({"items": [], "lastKey": 2})), Err(json!(2)));
    }
}
