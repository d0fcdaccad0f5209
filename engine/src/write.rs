//! What a write makes of an item: update-merge, overwrite, `$add`, `add`, ttl and
//! labels (SPEC.md "set" and "add"). Pure functions of (stored item, request, clock),
//! run by the owning shard; nothing here touches a skiplist.

use crate::item::{Expiry, Item, ItemData, Labels};
use crate::key::Key;
use crate::ttl::TtlChange;
use ampd_wire::limits::{ITEM_SIZE_MAX, LABEL_COUNT};
use ampd_wire::value::{self, Value};
use ampd_wire::{Error, ErrorCode};
use bytes::Bytes;
use serde_json::{Map, Number};

/// What a write does to one label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum LabelChange {
    /// Not given: an update keeps the stored label, an overwrite drops it.
    #[default]
    Keep,
    Clear,
    Set(Key),
}

/// A validated `set` of one item.
#[derive(Debug, Clone)]
pub(crate) struct SetRequest {
    pub key: Key,
    pub value: NewValue,
    pub overwrite: bool,
    pub ttl: TtlChange,
    pub labels: [LabelChange; LABEL_COUNT],
}

/// What a `set` stores, encoded on the caller's thread where it can be, so the shard
/// does not have to.
#[derive(Debug, Clone)]
pub(crate) enum NewValue {
    /// Anything but an object: stored as these bytes, whatever is stored now.
    Plain(Bytes),
    /// An object: merged into a stored object unless the set overwrites, stored as
    /// `encoded` where nothing is merged (`None` when it has `$add` fields, which only
    /// the stored item can resolve).
    Object {
        fields: Value,
        encoded: Option<Bytes>,
    },
}

impl NewValue {
    /// The bytes stored when nothing is merged, if known before the stored item is.
    pub fn encoded(&self) -> Option<&Bytes> {
        match self {
            NewValue::Plain(b) => Some(b),
            NewValue::Object { encoded, .. } => encoded.as_ref(),
        }
    }
}

/// A validated `add`.
#[derive(Debug, Clone)]
pub(crate) struct AddRequest {
    pub key: Key,
    pub field: Option<String>,
    pub amount: Number,
}

/// The operand of a `{"$add": n}` field, if `v` is one. A `$add` of a non-number is
/// `not_a_number`.
pub(crate) fn add_operand(field: &str, v: &Value) -> Result<Option<Number>, Error> {
    let Value::Object(m) = v else {
        return Ok(None);
    };
    if m.len() != 1 {
        return Ok(None);
    }
    match m.get("$add") {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.clone())),
        Some(other) => Err(Error::new(
            ErrorCode::NotANumber,
            format!("field {field:?}: $add needs a number, got {other}"),
        )),
    }
}

/// Whether a value holds a top-level `$add` field (checked for well-formedness).
pub(crate) fn has_add_fields(v: &Value) -> Result<bool, Error> {
    let Value::Object(m) = v else {
        return Ok(false);
    };
    let mut any = false;
    for (k, fv) in m {
        any |= add_operand(k, fv)?.is_some();
    }
    Ok(any)
}

/// `a + b` with the rules of SPEC.md: integers stay exact 64-bit signed integers
/// (a sum outside `i64` is `overflow`), a float on either side makes a float.
pub(crate) fn add_numbers(a: &Number, b: &Number) -> Result<Number, Error> {
    let int = |n: &Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        return i64::try_from(x + y).map(Number::from).map_err(|_| {
            Error::new(
                ErrorCode::Overflow,
                format!("{a} + {b} does not fit a 64-bit integer"),
            )
        });
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    Number::from_f64(x + y).ok_or_else(|| {
        Error::new(
            ErrorCode::Overflow,
            format!("{a} + {b} is not a finite number"),
        )
    })
}

/// The item a `set` makes of `stored` (the live item, or `None`). Takes the request
/// whole: its key, labels and encoded value move into the item, uncopied.
pub(crate) fn apply_set(
    stored: Option<&Item>,
    req: SetRequest,
    now_ms: i64,
) -> Result<ItemData, Error> {
    let base = if req.overwrite {
        None
    } else {
        stored.map(Item::data)
    };
    let value = match (req.value, base) {
        (NewValue::Plain(enc), _) => enc,
        (
            NewValue::Object {
                encoded: Some(enc), ..
            },
            None,
        ) => enc,
        (
            NewValue::Object {
                encoded: Some(enc), ..
            },
            Some(old),
        ) if !value::is_object(&old.value) => enc,
        (NewValue::Object { fields, .. }, base) => {
            let old = base
                .filter(|old| value::is_object(&old.value))
                .and_then(|old| value::object_fields(&old.value))
                .unwrap_or_default();
            merge(&old, &fields)?
        }
    };
    let mut given = req.labels.into_iter().enumerate();
    let labels = std::array::from_fn(|_| match given.next() {
        Some((i, LabelChange::Keep)) => base.and_then(|b| b.labels.get(i)).map(Box::from),
        Some((_, LabelChange::Clear)) | None => None,
        Some((_, LabelChange::Set(k))) => Some(k.into_string().into_boxed_str()),
    });
    let expires_s = match req.ttl {
        TtlChange::Keep => base.and_then(|b| b.expires_s.get()),
        TtlChange::Clear => None,
        TtlChange::At(s) => Some(s),
    };
    finish(
        req.key.into_string(),
        value,
        base.map_or(now_ms, |b| b.created_ms),
        now_ms,
        expires_s,
        Labels::new(labels),
    )
}

/// Shallow merge of `new` over the stored object whose encoded fields are `old`,
/// resolving `$add` fields against the stored fields. Works on the encoding: stored
/// fields that `new` does not name are copied as bytes, and only a field under `$add`
/// is decoded (a merge through `Value` spent most of its time decoding and hashing
/// fields it then wrote back unchanged).
fn merge(old: &[(&str, &[u8])], new: &Value) -> Result<Bytes, Error> {
    let Value::Object(fields) = new else {
        return Ok(value::encode(new));
    };
    // Few fields: a scan beats hashing. Many: a map keeps the merge linear.
    let by_name: Option<std::collections::HashMap<&str, &[u8]>> =
        (old.len() > 16).then(|| old.iter().copied().collect());
    let stored = |name: &str| match &by_name {
        Some(m) => m.get(name).copied(),
        None => old.iter().find(|(n, _)| *n == name).map(|(_, raw)| *raw),
    };
    let added = fields.keys().filter(|k| stored(k).is_none()).count();
    let capacity = old
        .iter()
        .map(|(n, raw)| n.len() + raw.len() + 2)
        .sum::<usize>();
    let mut out = value::ObjectWriter::new(old.len() + added, capacity + 16 * fields.len());
    let write_new = |out: &mut value::ObjectWriter, name: &str, v: &Value, raw: Option<&[u8]>| {
        match add_operand(name, v)? {
            Some(n) => {
                let current = raw.map(value::decode).transpose()?;
                out.field(
                    name,
                    &Value::Number(add_to_field(current.as_ref(), name, &n)?),
                );
            }
            None => out.field(name, v),
        }
        Ok::<(), Error>(())
    };
    for (name, raw) in old {
        match fields.get(*name) {
            Some(v) => write_new(&mut out, name, v, Some(raw))?,
            None => out.encoded_field(name, raw),
        }
    }
    for (name, v) in fields {
        if stored(name).is_none() {
            write_new(&mut out, name, v, None)?;
        }
    }
    Ok(out.finish())
}

fn add_to_field(stored: Option<&Value>, field: &str, n: &Number) -> Result<Number, Error> {
    match stored {
        None => Ok(n.clone()),
        Some(Value::Number(old)) => add_numbers(old, n),
        Some(other) => Err(Error::new(
            ErrorCode::NotANumber,
            format!("field {field:?} holds {other}, not a number"),
        )),
    }
}

/// The item an `add` makes of `stored`.
pub(crate) fn apply_add(
    stored: Option<&Item>,
    req: AddRequest,
    now_ms: i64,
) -> Result<ItemData, Error> {
    let old = stored.map(|s| s.value());
    let value = match (&req.field, old) {
        (None, None) => Value::Number(req.amount.clone()),
        (None, Some(Value::Number(n))) => Value::Number(add_numbers(&n, &req.amount)?),
        (None, Some(other)) => {
            return Err(Error::new(
                ErrorCode::NotANumber,
                format!("{:?} holds {other}, not a number", req.key.as_str()),
            ))
        }
        (Some(f), None) => Value::Object(Map::from_iter([(
            f.clone(),
            Value::Number(req.amount.clone()),
        )])),
        (Some(f), Some(Value::Object(mut m))) => {
            let sum = add_to_field(m.get(f), f, &req.amount)?;
            m.insert(f.clone(), Value::Number(sum));
            Value::Object(m)
        }
        (Some(_), Some(other)) => {
            return Err(Error::new(
                ErrorCode::NotANumber,
                format!("{:?} holds {other}, not an object", req.key.as_str()),
            ))
        }
    };
    let base = stored.map(Item::data);
    finish(
        req.key.into_string(),
        value::encode(&value),
        base.map_or(now_ms, |b| b.created_ms),
        now_ms,
        base.and_then(|b| b.expires_s.get()),
        base.map(|b| b.labels.clone()).unwrap_or_default(),
    )
}

/// Assembles an item and enforces the item size limit.
fn finish(
    key: String,
    value: Bytes,
    created_ms: i64,
    modified_ms: i64,
    expires_s: Option<i64>,
    labels: Labels,
) -> Result<ItemData, Error> {
    let size = item_size(&key, value.len(), labels.slots().into_iter().flatten());
    check_item_size(&key, size)?;
    Ok(ItemData {
        key: key.into_boxed_str(),
        value: value.into(),
        created_ms,
        modified_ms,
        expires_s: Expiry::at(expires_s),
        labels,
    })
}

/// Encoded size of an item: key, value and labels.
pub(crate) fn item_size<'l>(
    key: &str,
    value_len: usize,
    labels: impl IntoIterator<Item = &'l str>,
) -> usize {
    key.len() + value_len + labels.into_iter().map(str::len).sum::<usize>()
}

pub(crate) fn check_item_size(key: &str, size: usize) -> Result<(), Error> {
    if size > ITEM_SIZE_MAX {
        return Err(Error::new(
            ErrorCode::ValueTooLarge,
            format!("item {key:?} is {size} bytes, limit {ITEM_SIZE_MAX}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(v: Value) -> Number {
        match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        }
    }

    #[test]
    fn integer_and_float_sums() {
        assert_eq!(
            add_numbers(&n(json!(2)), &n(json!(3))).unwrap(),
            n(json!(5))
        );
        assert_eq!(
            add_numbers(&n(json!(2)), &n(json!(-3))).unwrap(),
            n(json!(-1))
        );
        assert_eq!(
            add_numbers(&n(json!(2)), &n(json!(0.5))).unwrap(),
            n(json!(2.5))
        );
        assert!(add_numbers(&n(json!(1.0)), &n(json!(1))).unwrap().is_f64());
        let e = add_numbers(&n(json!(i64::MAX)), &n(json!(1))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Overflow);
        assert_eq!(
            e.message(),
            "9223372036854775807 + 1 does not fit a 64-bit integer"
        );
        assert_eq!(
            add_numbers(&n(json!(i64::MIN)), &n(json!(-1)))
                .unwrap_err()
                .code(),
            ErrorCode::Overflow
        );
        assert_eq!(
            add_numbers(&n(json!(1e308)), &n(json!(1e308)))
                .unwrap_err()
                .code(),
            ErrorCode::Overflow
        );
    }

    #[test]
    fn add_operands() {
        assert_eq!(
            add_operand("f", &json!({"$add": 2})).unwrap(),
            Some(n(json!(2)))
        );
        assert_eq!(add_operand("f", &json!({"$add": 2, "x": 1})).unwrap(), None);
        assert_eq!(add_operand("f", &json!(5)).unwrap(), None);
        assert_eq!(
            add_operand("f", &json!({"$add": "2"})).unwrap_err().code(),
            ErrorCode::NotANumber
        );
        assert!(has_add_fields(&json!({"a": {"$add": 1}, "b": 2})).unwrap());
        assert!(!has_add_fields(&json!({"a": {"b": 1}})).unwrap());
    }

    fn merged(old: Value, new: Value) -> Result<Value, Error> {
        let old = value::encode(&old);
        let fields = value::object_fields(&old).unwrap();
        Ok(value::decode(&merge(&fields, &new)?).unwrap())
    }

    #[test]
    fn merge_keeps_other_fields_and_adds() {
        let old = json!({"a": 1, "b": "x", "c": 10, "n": {"deep": [1]}});
        let new = json!({"b": "y", "c": {"$add": 5}, "d": {"$add": 1.5}, "e": null});
        let got = merged(old, new).unwrap();
        assert_eq!(
            got,
            json!({"a": 1, "b": "y", "c": 15, "n": {"deep": [1]}, "d": 1.5, "e": null})
        );
        // Stored fields keep their order, new ones follow.
        assert_eq!(
            got.to_string(),
            r#"{"a":1,"b":"y","c":15,"n":{"deep":[1]},"d":1.5,"e":null}"#
        );
        assert_eq!(
            merged(json!({"c": "text"}), json!({"c": {"$add": 1}}))
                .unwrap_err()
                .code(),
            ErrorCode::NotANumber
        );
        assert_eq!(merged(json!({}), json!(5)).unwrap(), json!(5));
        assert_eq!(merged(json!({"a": 1}), json!({})).unwrap(), json!({"a": 1}));
    }
}
