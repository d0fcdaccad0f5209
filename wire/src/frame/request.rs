//! Request payloads, one type per call, each with its field table; and the request
//! frame's encoder and decoder.

use super::header::{patch_header, peek_header, Header, HEADER_LEN};
use super::opcode::Payload;
use super::payload::{
    read_payload, Flag, List, OptText, Optional, Required, Text, Tristate, TristateText,
};
use super::{FrameError, Opcode, Request, ENV_DEFAULT};
use crate::limits::{FRAME_PAYLOAD_MAX, PAYLOAD_DEPTH_MAX};
use crate::value::Given;
use crate::{QueryOptions, SetOptions, Value};
use bytes::{Buf, BufMut, BytesMut};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;

pub use crate::options::BatchItem;

/// `Hello`: `{"version": u32, "env"?: str, "token"?: str}`. The first frame of every
/// connection. The server answers `{"version": u32, "server": str}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the client speaks ([`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)).
    pub version: u32,
    /// The environment; `None` is [`ENV_DEFAULT`].
    pub env: Option<String>,
    /// The environment's token; `None` for an environment that has none.
    pub token: Option<String>,
}

payload_map!(Hello, "a Hello map", Refuse, {
    "version" => version: Required<u32>,
    "env" => env: OptText,
    "token" => token: OptText,
});

impl Hello {
    /// The environment named, or [`ENV_DEFAULT`].
    pub fn env(&self) -> &str {
        self.env.as_deref().unwrap_or(ENV_DEFAULT)
    }
}

/// One string or a list of them: `get`'s pattern (a list is a batch of exact keys) and
/// `remove`'s keys. On the wire, a MessagePack string or array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patterns {
    /// A MessagePack string.
    One(String),
    /// A MessagePack array of strings (a batch; the engine caps it at
    /// [`BATCH_ITEMS_MAX`](crate::limits::BATCH_ITEMS_MAX)).
    Many(Vec<String>),
}

impl Patterns {
    /// The strings, one or many.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Patterns::One(s) => std::slice::from_ref(s),
            Patterns::Many(v) => v,
        }
    }
}

impl Default for Patterns {
    /// No keys: the decoder's starting point ([`Get::pattern`] and [`Remove::keys`] are
    /// required, so a decoded request never holds it).
    fn default() -> Patterns {
        Patterns::Many(Vec::new())
    }
}

/// `Get`: `{"pattern": str | [str], "limit"?: int, "reverse"?: bool, "start"?: str,
/// "label"?: str, "meta"?: bool}`. The options are the API's own [`QueryOptions`];
/// their values are checked by the engine (so `limit: 0` is `limit_out_of_range`, as in
/// process), only their types here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Get {
    /// A key or pattern, or a batch of exact keys.
    pub pattern: Patterns,
    pub options: QueryOptions,
}

impl Payload for Get {
    /// The commonest request, `{"pattern": str}`, is read without serde.
    fn decode(payload: &[u8]) -> Result<Get, String> {
        match plain_get(payload) {
            Some(get) => Ok(get),
            None => read_payload(payload, PAYLOAD_DEPTH_MAX),
        }
    }
}

payload_map!(Get, "a Get map", Refuse, {
    "pattern" => pattern: Required<Patterns>,
    "limit" => options.limit: Optional<i64>,
    "reverse" => options.reverse: Flag,
    "start" => options.start: OptText,
    "label" => options.label: OptText,
    "meta" => options.meta: Flag,
});

/// `Set`: `{"key": str, "value": any, "ttl"?: any, "label1".."label5"?: str | nil,
/// "overwrite"?: bool, "meta"?: bool}`. The options are the API's own [`SetOptions`]:
/// `ttl` and each `labelN` are three-state (absent keeps the stored one, `nil` clears
/// it, a value sets it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Set {
    /// The item's key.
    pub key: String,
    /// The value to store (or merge into an object). Read off a frame, it stays in
    /// the value encoding unless it is an object ([`Given`]).
    pub value: Given,
    pub options: SetOptions,
}

payload_map!(Set, "a Set map", Refuse, {
    "key" => key: Text,
    "value" => value: Required<Given>,
    "ttl" => options.ttl: Tristate,
    "label1" => options.labels[0]: TristateText,
    "label2" => options.labels[1]: TristateText,
    "label3" => options.labels[2]: TristateText,
    "label4" => options.labels[3]: TristateText,
    "label5" => options.labels[4]: TristateText,
    "overwrite" => options.overwrite: Flag,
    "meta" => options.meta: Flag,
});

// One item of a [`SetBatch`] is the API's own [`BatchItem`]: `{"key": str, "value": any,
// "ttl"?: any, "label1".."label5"?: str}`. A batch overwrites, so absent and `nil` mean
// the same for labels; a `nil` ttl decodes as `Some(Value::Null)`, which clears like
// absent.
payload_map!(BatchItem, "a batch item map", Refuse, {
    "key" => key: Text,
    "value" => value: Required<Value>,
    "ttl" => ttl: Tristate,
    "label1" => labels[0]: OptText,
    "label2" => labels[1]: OptText,
    "label3" => labels[2]: OptText,
    "label4" => labels[3]: OptText,
    "label5" => labels[4]: OptText,
});

/// `SetBatch`: `{"items": [item, ...], "overwrite"?: bool, "meta"?: bool}`. The engine
/// refuses a batch without `overwrite` (`overwrite_required`) or with too many items
/// (`batch_too_large`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetBatch {
    /// The items, written all or none.
    pub items: Vec<BatchItem>,
    /// Must be true (the engine says `overwrite_required` otherwise).
    pub overwrite: bool,
    /// Answer with the items' metadata.
    pub meta: bool,
}

payload_map!(SetBatch, "a SetBatch map", Refuse, {
    "items" => items: List<BatchItem>,
    "overwrite" => overwrite: Flag,
    "meta" => meta: Flag,
});

/// `Add`: `{"key": str, "field"?: str, "amount": int | float, "meta"?: bool}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    /// The item's key.
    pub key: String,
    /// Add to this field of an object value instead of to the value.
    pub field: Option<String>,
    /// An exact integer or a float; which one decides the result's type.
    pub amount: serde_json::Number,
    /// Answer with the item instead of the value.
    pub meta: bool,
}

impl Default for Add {
    /// Adds 0 to nothing: the decoder's starting point (`key` and `amount` are required).
    fn default() -> Add {
        Add {
            key: String::new(),
            field: None,
            amount: serde_json::Number::from(0),
            meta: false,
        }
    }
}

payload_map!(Add, "an Add map", Refuse, {
    "key" => key: Text,
    "field" => field: OptText,
    "amount" => amount: Required<serde_json::Number>,
    "meta" => meta: Flag,
});

/// `Remove`: `{"keys": str | [str]}`. One key answers a bool, a list an array of bools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remove {
    /// One key or a batch of exact keys.
    pub keys: Patterns,
}

payload_map!(Remove, "a Remove map", Refuse, {
    "keys" => keys: Required<Patterns>,
});

/// `Subscribe`: `{"name": str, "filter": str | [str]}`. Opens the named subscription
/// (or joins it: several connections may share one name) on this connection; answered
/// with an empty payload, after which the subscription's events arrive as push frames
/// carrying this request's id, each to be acknowledged with an [`Ack`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribe {
    pub name: String,
    /// One event filter or a list (SPEC.md "Events"; [`crate::events`]).
    pub filter: Patterns,
}

payload_map!(Subscribe, "a Subscribe map", Refuse, {
    "name" => name: Text,
    "filter" => filter: Required<Patterns>,
});

/// `Ack`: `{"delivery": int, "error"?: str}`. The client's word on one pushed event:
/// handled, or (with `error`) failed, to be retried by the server's backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// The `delivery` number of the pushed event.
    pub delivery: u64,
    /// Why the handler failed; absent when it succeeded.
    pub error: Option<String>,
}

payload_map!(Ack, "an Ack map", Refuse, {
    "delivery" => delivery: Required<u64>,
    "error" => error: OptText,
});

/// `DeadLetters`: `{"name": str, "replay"?: bool}`. Lists subscription `name`'s dead
/// letters; with `replay`, delivers them again (and lists what was replayed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetters {
    pub name: String,
    pub replay: bool,
}

payload_map!(DeadLetters, "a DeadLetters map", Refuse, {
    "name" => name: Text,
    "replay" => replay: Flag,
});

/// `Unsubscribe`: `{"name": str}`. Removes subscription `name`: its position, what the
/// WAL kept for it and its dead letters; its connections get no more of its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsubscribe {
    pub name: String,
}

payload_map!(Unsubscribe, "an Unsubscribe map", Refuse, {
    "name" => name: Text,
});

impl Serialize for Patterns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patterns::One(one) => s.serialize_str(one),
            Patterns::Many(many) => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PatternsVisitor;
        impl<'de> Visitor<'de> for PatternsVisitor {
            type Value = Patterns;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Patterns, E> {
                Ok(Patterns::One(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Patterns, E> {
                Ok(Patterns::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Patterns, A::Error> {
                let list: Vec<super::payload::Str> = super::payload::read_list(seq)?;
                Ok(Patterns::Many(list.into_iter().map(|t| t.0).collect()))
            }
        }
        d.deserialize_any(PatternsVisitor)
    }
}

/// Appends a request frame (header and payload) to `out`.
///
/// A request whose payload would pass [`FRAME_PAYLOAD_MAX`] is refused with
/// [`FrameError::TooLarge`] and leaves `out` as it was, so a client can fail that one
/// request instead of sending a frame the server would answer by closing the connection.
pub fn encode_request(id: u32, request: &Request, out: &mut BytesMut) -> Result<(), FrameError> {
    let start = out.len();
    out.put_slice(&[0; HEADER_LEN]);
    request.write_payload(out);
    let len = out.len() - start - HEADER_LEN;
    if len > FRAME_PAYLOAD_MAX {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            declared: len as u64,
            limit: FRAME_PAYLOAD_MAX,
        });
    }
    let header = Header {
        len: len as u32, // <= FRAME_PAYLOAD_MAX, which fits a u32 (limits.rs)
        id,
        kind: request.opcode() as u16,
        flags: 0,
    };
    patch_header(out, start, &header);
    Ok(())
}

/// Decodes the request frame at the front of `buf`.
///
/// - `Ok(None)`: the frame has not all arrived; nothing is consumed. A header that
///   fails [`Header::check_request`] is an `Err` as soon as its 12 bytes are in, before
///   any of its payload.
/// - `Ok(Some((id, request)))`: the frame is consumed.
/// - `Err`: on a header error nothing is consumed; on a payload error
///   ([`FrameError::BadPayload`]) the frame is consumed. Either way the protocol closes
///   the connection after the error frame ([`FrameError::reply_to`] names its id).
pub fn decode_request(buf: &mut BytesMut) -> Result<Option<(u32, Request)>, FrameError> {
    let Some(header) = peek_header(buf) else {
        return Ok(None);
    };
    let opcode = header.check_request()?;
    let frame_len = HEADER_LEN + header.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..frame_len) else {
        return Ok(None);
    };
    let request = decode_request_payload(header.id, opcode, payload);
    buf.advance(frame_len);
    request.map(|r| Some((header.id, r)))
}

/// Decodes the payload of a request frame whose header passed
/// [`Header::check_request`], for a caller that reads the header and the payload
/// separately. Errors are [`FrameError::BadPayload`], carrying `id`.
pub fn decode_request_payload(
    id: u32,
    opcode: Opcode,
    payload: &[u8],
) -> Result<Request, FrameError> {
    let request = Request::read_payload(opcode, payload);
    request.map_err(|why| FrameError::BadPayload {
        id,
        kind: opcode as u16,
        why,
    })
}

/// The commonest request, `{"pattern": str}` and nothing else, read without serde
/// (the general reader costs as much as the lookup it asks for). Anything else, and a
/// key that is not UTF-8, is left to [`read_payload`], which gives the same result or
/// the error.
pub(super) fn plain_get(payload: &[u8]) -> Option<Get> {
    const PREFIX: &[u8] = b"\x81\xa7pattern";
    let (&marker, rest) = payload.strip_prefix(PREFIX)?.split_first()?;
    let (len, text) = match marker {
        0xa0..=0xbf => (usize::from(marker & 0x1f), rest),
        0xd9 => {
            let (&len, text) = rest.split_first()?;
            (usize::from(len), text)
        }
        0xda => {
            let (len, text) = rest.split_first_chunk::<2>()?;
            (usize::from(u16::from_be_bytes(*len)), text)
        }
        _ => return None,
    };
    if text.len() != len {
        return None;
    }
    let key = std::str::from_utf8(text).ok()?;
    Some(Get {
        pattern: Patterns::One(key.to_owned()),
        options: QueryOptions::default(),
    })
}
