//! The MessagePack map codec of every payload, declared with one table per type.
//!
//! Derive cannot say what the protocol needs: a map and never a positional array,
//! `label1..label5` as five names for one array, `nil` apart from absent, strings that
//! must be `str` (never `bin`), lists whose declared length allocates nothing. So each
//! payload type lists its fields once, in a [`payload_map!`] table beside the type:
//!
//! ```text
//! payload_map!(Get, "a Get map", Refuse, {
//!     "pattern" => pattern: Required<Patterns>,
//!     "limit" => options.limit: Optional<i64>,
//!     ...
//! });
//! ```
//!
//! Each line names the field on the wire, the place in the type that holds it, and
//! its [`Field`] codec, which says how the value is written, read, and whether it may be
//! left out. The table gives the type `Serialize` and `Deserialize`; nothing else
//! lists the fields.

use crate::limits::BATCH_ITEMS_MAX;
use bytes::{BufMut, BytesMut};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// Appends `payload`, MessagePack with string-keyed maps, to `out`.
pub(super) fn write_payload<T: Serialize + ?Sized>(out: &mut BytesMut, payload: &T) {
    // A BytesMut grows as needed, so the writer cannot fail; every payload type here
    // serializes maps with string keys and known lengths, which rmp-serde always
    // encodes. An error would be a bug in this module.
    if let Err(e) = rmp_serde::encode::write_named(&mut out.writer(), payload) {
        panic!("a payload always encodes into memory: {e}");
    }
}

/// Decodes one whole payload: exactly one MessagePack value, nested at most `depth`
/// levels, with no bytes after it.
pub(super) fn read_payload<T: DeserializeOwned>(payload: &[u8], depth: usize) -> Result<T, String> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
    // rmp-serde refuses nesting that reaches its counter, so +1 allows `depth` levels.
    de.set_max_depth(depth + 1);
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = de.position();
    if used != payload.len() as u64 {
        return Err(format!(
            "{} trailing bytes after the payload's {used}",
            payload.len() as u64 - used
        ));
    }
    Ok(value)
}

/// Whether unknown field names are refused (requests) or skipped (responses).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Unknown {
    Refuse,
    Skip,
}

/// How one field is written and read. Implemented by the codecs below; a payload
/// table names one per field.
pub(super) trait Field {
    /// What the field holds in the payload type.
    type Value;
    /// A required field missing from a map is refused (`missing field`).
    const REQUIRED: bool = false;
    /// Whether the field is written: an absent option is left out of the map.
    fn present(value: &Self::Value) -> bool;
    /// Writes the entry `name: value`.
    fn write<M: SerializeMap>(
        map: &mut M,
        name: &'static str,
        value: &Self::Value,
    ) -> Result<(), M::Error>;
    /// Reads the value of the entry whose name was just read.
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Self::Value, A::Error>;
}

/// A field that must be present, of any type that serde reads as the protocol means it
/// (numbers, `Value`s, [`Patterns`](super::Patterns)); strings use [`Text`] instead.
pub(super) struct Required<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> Field for Required<T> {
    type Value = T;
    const REQUIRED: bool = true;
    fn present(_: &T) -> bool {
        true
    }
    fn write<M: SerializeMap>(map: &mut M, name: &'static str, value: &T) -> Result<(), M::Error> {
        map.serialize_entry(name, value)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<T, A::Error> {
        map.next_value()
    }
}

/// An optional field of any type: absent and `nil` are both `None`.
pub(super) struct Optional<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> Field for Optional<T> {
    type Value = Option<T>;
    fn present(value: &Option<T>) -> bool {
        value.is_some()
    }
    fn write<M: SerializeMap>(
        map: &mut M,
        name: &'static str,
        value: &Option<T>,
    ) -> Result<(), M::Error> {
        map.serialize_entry(name, value)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
        map.next_value()
    }
}

/// A required string (a MessagePack `str`).
pub(super) struct Text;

impl Field for Text {
    type Value = String;
    const REQUIRED: bool = true;
    fn present(_: &String) -> bool {
        true
    }
    fn write<M: SerializeMap>(map: &mut M, name: &'static str, v: &String) -> Result<(), M::Error> {
        map.serialize_entry(name, v)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
        Ok(map.next_value::<Str>()?.0)
    }
}

/// An optional string: absent and `nil` are both `None`.
pub(super) struct OptText;

impl Field for OptText {
    type Value = Option<String>;
    fn present(value: &Option<String>) -> bool {
        value.is_some()
    }
    fn write<M: SerializeMap>(
        map: &mut M,
        name: &'static str,
        value: &Option<String>,
    ) -> Result<(), M::Error> {
        map.serialize_entry(name, value)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
        Ok(map.next_value::<Option<Str>>()?.map(|s| s.0))
    }
}

/// A flag: written only when true; absent and `nil` are false.
pub(super) struct Flag;

impl Field for Flag {
    type Value = bool;
    fn present(value: &bool) -> bool {
        *value
    }
    fn write<M: SerializeMap>(map: &mut M, name: &'static str, v: &bool) -> Result<(), M::Error> {
        map.serialize_entry(name, v)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<bool, A::Error> {
        Ok(map.next_value::<Option<bool>>()?.unwrap_or(false))
    }
}

/// A value whose `nil` is not its absence (a `set`'s `ttl`): absent is `None`, `nil`
/// is `Some(Value::Null)` (clear), anything else is the value.
pub(super) struct Tristate;

impl Field for Tristate {
    type Value = Option<crate::Value>;
    fn present(value: &Self::Value) -> bool {
        value.is_some()
    }
    fn write<M: SerializeMap>(
        map: &mut M,
        name: &'static str,
        value: &Self::Value,
    ) -> Result<(), M::Error> {
        map.serialize_entry(name, value)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Self::Value, A::Error> {
        // Read as a Value, not an Option, so that nil stays `Some(Null)`.
        Ok(Some(map.next_value()?))
    }
}

/// A string whose `nil` is not its absence (a `set`'s `labelN`): absent is `None`, `nil`
/// is `Some(None)` (clear), a string is `Some(Some(s))`.
pub(super) struct TristateText;

impl Field for TristateText {
    type Value = Option<Option<String>>;
    fn present(value: &Self::Value) -> bool {
        value.is_some()
    }
    fn write<M: SerializeMap>(
        map: &mut M,
        name: &'static str,
        value: &Self::Value,
    ) -> Result<(), M::Error> {
        // `Some(None)` is written as nil.
        map.serialize_entry(name, value)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Self::Value, A::Error> {
        Ok(Some(map.next_value::<Option<Str>>()?.map(|s| s.0)))
    }
}

/// A required list, read with its capacity capped (see [`read_list`]).
pub(super) struct List<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> Field for List<T> {
    type Value = Vec<T>;
    const REQUIRED: bool = true;
    fn present(_: &Vec<T>) -> bool {
        true
    }
    fn write<M: SerializeMap>(map: &mut M, name: &'static str, v: &Vec<T>) -> Result<(), M::Error> {
        map.serialize_entry(name, v)
    }
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Vec<T>, A::Error> {
        Ok(map.next_value::<CappedList<T>>()?.0)
    }
}

/// Declares a payload type's map fields, once: each line is
/// `"wire name" => place.in.the.type: Codec,` (a place may end in `[i]`), after the
/// type, what the decoder expects (for its error messages) and whether unknown names are
/// refused (`Refuse`, requests) or skipped (`Skip`, responses). Gives the type
/// `Serialize` and `Deserialize` (see the module's documentation). The type must be
/// `Default`: the decoder starts from it and fills in what the map holds.
macro_rules! payload_map {
    ($ty:ty, $expecting:literal, $unknown:ident, {
        $($name:literal => $($place:ident).+ $([$i:literal])? : $codec:ty,)+
    }) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                use $crate::frame::payload::Field;
                let len = 0 $(+ usize::from(
                    <$codec as Field>::present(&self.$($place).+ $([$i])?)
                ))+;
                let mut m = s.serialize_map(Some(len))?;
                $(
                    let value = &self.$($place).+ $([$i])?;
                    if <$codec as Field>::present(value) {
                        <$codec as Field>::write(&mut m, $name, value)?;
                    }
                )+
                m.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use $crate::frame::payload::{read_fields, Field, Unknown};
                const NAMES: &[&str] = &[$($name),+];
                const REQUIRED: &[bool] = &[$(<$codec as Field>::REQUIRED),+];
                // Repeated fields are tracked in a u16 bit set.
                const _: () = assert!(NAMES.len() <= 16);

                /// Accepts a map only: a struct sent as a positional array is refused.
                struct MapOnly;
                impl<'de> serde::de::Visitor<'de> for MapOnly {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::default();
                        let seen = read_fields(&mut map, NAMES, Unknown::$unknown, |name, map| {
                            match name {
                                $($name => {
                                    out.$($place).+ $([$i])? = <$codec as Field>::read(map)?
                                })+
                                _ => {}
                            }
                            Ok(())
                        })?;
                        for ((name, required), i) in NAMES.iter().zip(REQUIRED).zip(0u32..) {
                            if *required && seen & (1 << i) == 0 {
                                return Err(serde::de::Error::missing_field(name));
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(MapOnly)
            }
        }
    };
}

/// Reads every entry of a payload map, handing each known field's name to `field`,
/// which must read its value from `map`. Returns the set of fields seen (bit `i` for
/// `names[i]`).
pub(super) fn read_fields<'de, A: MapAccess<'de>>(
    map: &mut A,
    names: &'static [&'static str],
    unknown: Unknown,
    mut field: impl FnMut(&'static str, &mut A) -> Result<(), A::Error>,
) -> Result<u16, A::Error> {
    let mut seen = 0u16;
    while let Some(name) = map.next_key_seed(FieldName { names, unknown })? {
        let Some((i, name)) = name else {
            map.next_value::<IgnoredAny>()?;
            continue;
        };
        let bit = 1u16 << i;
        if seen & bit != 0 {
            return Err(de::Error::duplicate_field(name));
        }
        seen |= bit;
        field(name, map)?;
    }
    Ok(seen)
}

/// A map key that must be one of `names`: its index and name, or `None` for an
/// unknown name that is to be skipped.
struct FieldName {
    names: &'static [&'static str],
    unknown: Unknown,
}

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<(usize, &'static str)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldName {
    type Value = Option<(usize, &'static str)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name (a string)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match self.names.iter().position(|n| *n == v) {
            Some(i) => Ok(self.names.get(i).map(|n| (i, *n))),
            None if self.unknown == Unknown::Skip => Ok(None),
            None => Err(E::unknown_field(v, self.names)),
        }
    }
}

/// A string that must be a MessagePack str: serde's `String` would also take a bin of
/// UTF-8 bytes, which the protocol does not allow anywhere.
pub(super) struct Str(pub(super) String);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl Visitor<'_> for StrVisitor {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
                Ok(Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str, E> {
                Ok(Str(v))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// Reads a list into a vector whose capacity is capped: the length a peer declares
/// bounds nothing, and no list in a request may hold more than [`BATCH_ITEMS_MAX`].
pub(super) fn read_list<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    mut seq: A,
) -> Result<Vec<T>, A::Error> {
    let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(BATCH_ITEMS_MAX));
    while let Some(x) = seq.next_element()? {
        list.push(x);
    }
    Ok(list)
}

/// A list of `T`, read with [`read_list`].
struct CappedList<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CappedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = CappedList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<CappedList<T>, A::Error> {
                read_list(seq).map(CappedList)
            }
        }
        d.deserialize_seq(ListVisitor(PhantomData))
    }
}
