//! The binary frames of the wire protocol: bytes → [`Request`] / [`Response`] and back.
//!
//! This is the only place that turns protocol bytes into frames. It has no runtime: the
//! server (glommio) and the client (tokio) both hand it a `BytesMut` they read into.
//! `wire/PROTOCOL.md` describes the same format for someone writing a client in another
//! language.
//!
//! # Frame layout
//! Every frame is a 12-byte little-endian header followed by `len` bytes of payload:
//!
//! | offset | size | field   | meaning                                                   |
//! | ------ | ---- | ------- | --------------------------------------------------------- |
//! | 0      | u32  | `len`   | payload bytes after the header, at most [`FRAME_PAYLOAD_MAX`] |
//! | 4      | u32  | `id`    | chosen by the client, echoed by the response               |
//! | 8      | u16  | `kind`  | the [`Opcode`]; a response carries its request's           |
//! | 10     | u16  | `flags` | [`FLAG_RESPONSE`], [`FLAG_ERROR`]; other bits are refused   |
//!
//! A payload is one MessagePack value (or nothing, for `Ping` and `Stats`): a request's
//! is a map with string keys, an OK response's is the operation's result, an error
//! response's is `{"code", "message"}`.
//!
//! # Decisions
//! - The length is checked from the header alone, before any payload is buffered: the
//!   peer never decides what we allocate. Nothing a decoder allocates is sized by a
//!   count read from the bytes (a list's capacity is capped by [`BATCH_ITEMS_MAX`]).
//! - Incomplete input is `Ok(None)` and consumes nothing; a refused frame is a typed
//!   [`FrameError`] whose message carries the numbers.
//! - Request maps refuse unknown and repeated keys, so a typo (`"overwite"`) is an error
//!   rather than an option silently not taken; they must be maps, never positional
//!   arrays, so field order is not part of the protocol. Error payloads in responses
//!   ignore keys they do not know, so a newer server may add some.
//! - `ttl` and `labelN` of a single `set` are three-state, as in the engine's
//!   `SetOptions`: absent keeps the stored one, `nil` clears it, a value sets it.

// A decoder must not panic on any input: no unchecked indexing or unwrapping outside
// tests (the few places that index a fixed-size array say why it cannot fail).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

use crate::limits::{
    BATCH_ITEMS_MAX, ERROR_MESSAGE_LEN_MAX, FRAME_PAYLOAD_MAX, LABEL_COUNT, PAYLOAD_DEPTH_MAX,
};
use crate::{Error, ErrorCode, Value};
use bytes::{Buf, BufMut, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;

/// The protocol version this crate speaks, sent in [`Hello`] and in the server's answer.
pub const PROTOCOL_VERSION: u32 = 1;

/// The environment a connection uses when its [`Hello`] names none.
pub const ENV_DEFAULT: &str = "dev";

/// Where `ampd serve` listens, and clients connect, unless told otherwise.
pub const ADDR_DEFAULT: &str = "127.0.0.1:7070";

// ---------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------

const LEN_OFFSET: usize = 0;
const ID_OFFSET: usize = LEN_OFFSET + size_of::<u32>();
const KIND_OFFSET: usize = ID_OFFSET + size_of::<u32>();
const FLAGS_OFFSET: usize = KIND_OFFSET + size_of::<u16>();
/// Bytes of a frame header; the payload follows.
pub const HEADER_LEN: usize = FLAGS_OFFSET + size_of::<u16>();

const _: () = assert!(
    HEADER_LEN == 12,
    "the header layout is part of the protocol"
);
const _: () = assert!(LEN_OFFSET == 0, "a reader finds the length first");

/// Set on every frame the server sends.
pub const FLAG_RESPONSE: u16 = 1 << 0;
/// Set, with [`FLAG_RESPONSE`], on a response whose payload is an error.
pub const FLAG_ERROR: u16 = 1 << 1;
const FLAGS_KNOWN: u16 = FLAG_RESPONSE | FLAG_ERROR;

/// A frame header, as it is on the wire: no field is checked until
/// [`check_request`](Header::check_request) or [`check_response`](Header::check_response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload bytes after the header.
    pub len: u32,
    /// The request id, chosen by the client and echoed by the response.
    pub id: u32,
    /// The [`Opcode`] of the request (a response carries its request's).
    pub kind: u16,
    /// [`FLAG_RESPONSE`] and [`FLAG_ERROR`].
    pub flags: u16,
}

impl Header {
    /// The header's 12 bytes.
    // The offsets are constants that lie inside HEADER_LEN (asserted above).
    #[allow(clippy::indexing_slicing)]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[LEN_OFFSET..ID_OFFSET].copy_from_slice(&self.len.to_le_bytes());
        b[ID_OFFSET..KIND_OFFSET].copy_from_slice(&self.id.to_le_bytes());
        b[KIND_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.kind.to_le_bytes());
        b[FLAGS_OFFSET..HEADER_LEN].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Reads a header; every bit pattern is a header, checked separately.
    #[allow(clippy::indexing_slicing)] // constant offsets inside the array, as above
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let b = bytes;
        Header {
            len: u32::from_le_bytes([
                b[LEN_OFFSET],
                b[LEN_OFFSET + 1],
                b[LEN_OFFSET + 2],
                b[LEN_OFFSET + 3],
            ]),
            id: u32::from_le_bytes([
                b[ID_OFFSET],
                b[ID_OFFSET + 1],
                b[ID_OFFSET + 2],
                b[ID_OFFSET + 3],
            ]),
            kind: u16::from_le_bytes([b[KIND_OFFSET], b[KIND_OFFSET + 1]]),
            flags: u16::from_le_bytes([b[FLAGS_OFFSET], b[FLAGS_OFFSET + 1]]),
        }
    }

    /// Checks a header that arrived at the server: length within the limit, no flag
    /// set, a known opcode. On success the payload may be read and handed to
    /// [`decode_request_payload`].
    pub fn check_request(&self) -> Result<Opcode, FrameError> {
        self.check_len()?;
        if self.flags & !FLAGS_KNOWN != 0 {
            return Err(FrameError::BadFlags {
                flags: self.flags,
                why: "unknown flag bits",
            });
        }
        if self.flags != 0 {
            return Err(FrameError::BadFlags {
                flags: self.flags,
                why: "a request carries no flags",
            });
        }
        Opcode::from_u16(self.kind).ok_or(FrameError::UnknownOpcode(self.kind))
    }

    /// Checks a header that arrived at the client: length within the limit and
    /// [`FLAG_RESPONSE`] set. Any `kind` is accepted: an error about a frame the server
    /// could not read carries kind 0.
    pub fn check_response(&self) -> Result<(), FrameError> {
        self.check_len()?;
        if self.flags & !FLAGS_KNOWN != 0 {
            return Err(FrameError::BadFlags {
                flags: self.flags,
                why: "unknown flag bits",
            });
        }
        if self.flags & FLAG_RESPONSE == 0 {
            return Err(FrameError::BadFlags {
                flags: self.flags,
                why: "a response carries the RESPONSE flag",
            });
        }
        Ok(())
    }

    fn check_len(&self) -> Result<(), FrameError> {
        if self.len as usize > FRAME_PAYLOAD_MAX {
            return Err(FrameError::TooLarge {
                declared: u64::from(self.len),
                limit: FRAME_PAYLOAD_MAX,
            });
        }
        Ok(())
    }
}

/// The header at the front of `buf`, if all of it has arrived.
fn peek_header(buf: &[u8]) -> Option<Header> {
    let bytes: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(Header::decode(bytes))
}

// ---------------------------------------------------------------------------------------
// Opcodes
// ---------------------------------------------------------------------------------------

/// What a request asks for. The numbers are part of the protocol: never changed, never
/// reused. They are grouped by range: 1.. connection, 16.. reads, 32.. writes,
/// 48.. administration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    /// Opens the connection: protocol version, environment, token. First frame only.
    Hello = 1,
    /// Does nothing; answered with an empty payload.
    Ping = 2,
    /// `get`: one key, a batch of keys, or a pattern (page).
    Get = 16,
    /// `set` of one item.
    Set = 32,
    /// `set` of a batch of items (`overwrite` required).
    SetBatch = 33,
    /// `add` to a number or to a numeric field.
    Add = 34,
    /// `remove` of one key or a batch of keys.
    Remove = 35,
    /// Server statistics.
    Stats = 48,
}

impl Opcode {
    /// Every opcode, in number order.
    pub const ALL: [Opcode; 8] = [
        Opcode::Hello,
        Opcode::Ping,
        Opcode::Get,
        Opcode::Set,
        Opcode::SetBatch,
        Opcode::Add,
        Opcode::Remove,
        Opcode::Stats,
    ];

    /// The opcode with this wire number, if there is one.
    pub fn from_u16(n: u16) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| *op as u16 == n)
    }

    /// The snake_case name PROTOCOL.md uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Opcode::Hello => "hello",
            Opcode::Ping => "ping",
            Opcode::Get => "get",
            Opcode::Set => "set",
            Opcode::SetBatch => "set_batch",
            Opcode::Add => "add",
            Opcode::Remove => "remove",
            Opcode::Stats => "stats",
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A request, decoded. Each variant's payload map is described on its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Opcode 1: open the connection.
    Hello(Hello),
    /// Opcode 2: empty payload.
    Ping,
    /// Opcode 16.
    Get(Get),
    /// Opcode 32.
    Set(Set),
    /// Opcode 33.
    SetBatch(SetBatch),
    /// Opcode 34.
    Add(Add),
    /// Opcode 35.
    Remove(Remove),
    /// Opcode 48: empty payload.
    Stats,
}

impl Request {
    /// The opcode a frame of this request carries.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello(_) => Opcode::Hello,
            Request::Ping => Opcode::Ping,
            Request::Get(_) => Opcode::Get,
            Request::Set(_) => Opcode::Set,
            Request::SetBatch(_) => Opcode::SetBatch,
            Request::Add(_) => Opcode::Add,
            Request::Remove(_) => Opcode::Remove,
            Request::Stats => Opcode::Stats,
        }
    }
}

/// `Hello`: `{"version": u32, "env"?: str, "token"?: str}`. The first frame of every
/// connection. The server answers `{"version": u32, "server": str}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the client speaks ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The environment; `None` is [`ENV_DEFAULT`].
    pub env: Option<String>,
    /// The environment's token; `None` for an environment that has none.
    pub token: Option<String>,
}

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
    /// [`BATCH_ITEMS_MAX`]).
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

/// `Get`: `{"pattern": str | [str], "limit"?: int, "reverse"?: bool, "start"?: str,
/// "label"?: str, "meta"?: bool}`. The fields mirror the engine's `QueryOptions`; their
/// values are checked by the engine (so `limit: 0` is `limit_out_of_range`, as in
/// process), only their types here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// A key or pattern, or a batch of exact keys.
    pub pattern: Patterns,
    /// Items per page; `None` is the default (100).
    pub limit: Option<i64>,
    /// Descending order.
    pub reverse: bool,
    /// Resume after this `lastKey`.
    pub start: Option<String>,
    /// `"label1"` ..= `"label5"`: query that label's values instead of keys.
    pub label: Option<String>,
    /// Return items with their metadata.
    pub meta: bool,
}

/// `Set`: `{"key": str, "value": any, "ttl"?: any, "label1".."label5"?: str | nil,
/// "overwrite"?: bool, "meta"?: bool}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    /// The item's key.
    pub key: String,
    /// The value to store (or merge into an object).
    pub value: Value,
    /// `None`: absent (keep the stored ttl). `Some(Value::Null)`: `nil` (clear it).
    /// Otherwise seconds or a date, checked by the engine (`invalid_ttl`).
    pub ttl: Option<Value>,
    /// `labels[n - 1]` is `labelN`. `None`: absent (keep). `Some(None)`: `nil` (clear).
    pub labels: [Option<Option<String>>; LABEL_COUNT],
    /// Replace the item whole instead of merging.
    pub overwrite: bool,
    /// Return the item with its metadata.
    pub meta: bool,
}

/// One item of a [`SetBatch`] (the API's own [`BatchItem`]): `{"key": str, "value": any,
/// "ttl"?: any, "label1".."label5"?: str}`. A batch overwrites, so absent and `nil`
/// mean the same for labels; a `nil` ttl decodes as `Some(Value::Null)`, which clears like
/// absent.
pub use crate::options::BatchItem;

/// `SetBatch`: `{"items": [item, ...], "overwrite"?: bool, "meta"?: bool}`. The engine
/// refuses a batch without `overwrite` (`overwrite_required`) or with too many items
/// (`batch_too_large`).
#[derive(Debug, Clone, PartialEq)]
pub struct SetBatch {
    /// The items, written all or none.
    pub items: Vec<BatchItem>,
    /// Must be true (the engine says `overwrite_required` otherwise).
    pub overwrite: bool,
    /// Answer with the items' metadata.
    pub meta: bool,
}

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

/// `Remove`: `{"keys": str | [str]}`. One key answers a bool, a list an array of bools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remove {
    /// One key or a batch of exact keys.
    pub keys: Patterns,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a frame was refused. [`From<FrameError> for Error`](Error) maps it to
/// `frame_too_large` or `bad_frame`, keeping the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header declares a payload longer than [`FRAME_PAYLOAD_MAX`].
    #[error("frame declares {declared} bytes, limit {limit}")]
    TooLarge {
        /// The payload length the header declares (or an encoder would have).
        declared: u64,
        /// [`FRAME_PAYLOAD_MAX`].
        limit: usize,
    },
    /// The flags are wrong for the direction, or have unknown bits.
    #[error("frame has flags {flags:#06x}: {why}")]
    BadFlags {
        /// The header's flags.
        flags: u16,
        /// What is wrong with them.
        why: &'static str,
    },
    /// The header's `kind` is no [`Opcode`].
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// The header was fine but the payload is not what its opcode takes.
    #[error("bad payload for frame {id} (kind {kind}): {why}")]
    BadPayload {
        /// The frame's request id, echoed by the error frame.
        id: u32,
        /// The frame's kind.
        kind: u16,
        /// What the payload decoder refused, naming the field where it can.
        why: String,
    },
}

impl FrameError {
    /// The `(id, kind)` an error frame answering this error carries: the request's own
    /// when its header was sound and only the payload was bad, else `(0, 0)`, which
    /// stands for the connection as a whole (the header cannot be trusted).
    pub fn reply_to(&self) -> (u32, u16) {
        match self {
            FrameError::BadPayload { id, kind, .. } => (*id, *kind),
            FrameError::TooLarge { .. }
            | FrameError::BadFlags { .. }
            | FrameError::UnknownOpcode(_) => (0, 0),
        }
    }

    /// The error code this refusal carries on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::BadFrame,
        }
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        Error::new(e.code(), e.to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Request frames
// ---------------------------------------------------------------------------------------

/// Appends a request frame (header and payload) to `out`.
///
/// A request whose payload would pass [`FRAME_PAYLOAD_MAX`] is refused with
/// [`FrameError::TooLarge`] and leaves `out` as it was, so a client can fail that one
/// request instead of sending a frame the server would answer by closing the connection.
pub fn encode_request(id: u32, request: &Request, out: &mut BytesMut) -> Result<(), FrameError> {
    let start = out.len();
    out.put_slice(&[0; HEADER_LEN]);
    match request {
        Request::Ping | Request::Stats => {}
        Request::Hello(r) => write_payload(out, r),
        Request::Get(r) => write_payload(out, r),
        Request::Set(r) => write_payload(out, r),
        Request::SetBatch(r) => write_payload(out, r),
        Request::Add(r) => write_payload(out, r),
        Request::Remove(r) => write_payload(out, r),
    }
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
    let depth = PAYLOAD_DEPTH_MAX;
    let request = match opcode {
        Opcode::Ping | Opcode::Stats if !payload.is_empty() => Err(format!(
            "{opcode} takes an empty payload, got {} bytes",
            payload.len()
        )),
        Opcode::Ping => Ok(Request::Ping),
        Opcode::Stats => Ok(Request::Stats),
        Opcode::Hello => read_payload(payload, depth).map(Request::Hello),
        Opcode::Get => match plain_get(payload) {
            Some(get) => Ok(Request::Get(get)),
            None => read_payload(payload, depth).map(Request::Get),
        },
        Opcode::Set => read_payload(payload, depth).map(Request::Set),
        Opcode::SetBatch => read_payload(payload, depth).map(Request::SetBatch),
        Opcode::Add => read_payload(payload, depth).map(Request::Add),
        Opcode::Remove => read_payload(payload, depth).map(Request::Remove),
    };
    request.map_err(|why| FrameError::BadPayload {
        id,
        kind: opcode as u16,
        why,
    })
}

// ---------------------------------------------------------------------------------------
// Response frames
// ---------------------------------------------------------------------------------------

/// A response, decoded by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request it answers (0: about the connection as a whole).
    pub id: u32,
    /// The opcode of the request it answers (with id 0, not meaningful).
    pub kind: u16,
    /// The result (an empty OK payload is `Value::Null`), or the refusal.
    pub result: Result<Value, Error>,
}

/// Appends an OK response whose payload is `payload`, bytes already encoded as one
/// MessagePack value (or empty).
///
/// Panics if `payload` passes [`FRAME_PAYLOAD_MAX`]: the limits make every result fit,
/// so a larger one is a bug, not a refusal.
pub fn encode_ok(id: u32, kind: u16, payload: &[u8], out: &mut BytesMut) {
    let start = begin_ok(id, kind, out);
    out.put_slice(payload);
    start.finish(out);
}

/// Appends an OK response whose payload is `value`, encoded. Panics like [`encode_ok`].
pub fn encode_ok_value(id: u32, kind: u16, value: &Value, out: &mut BytesMut) {
    let start = begin_ok(id, kind, out);
    write_payload(out, value);
    start.finish(out);
}

/// An OK response under construction: its header is in the buffer with the length
/// still to fill in. Returned by [`begin_ok`].
#[derive(Debug)]
#[must_use = "a response's length is written by finish()"]
pub struct ResponseStart {
    /// Where the header starts in the buffer.
    at: usize,
}

/// Starts an OK response in `out` for a caller that writes the payload itself (the
/// server copies stored MessagePack values straight in): append one MessagePack value
/// (or nothing) to `out`, then call [`ResponseStart::finish`]. Nothing else may be
/// written to or removed from `out` in between.
pub fn begin_ok(id: u32, kind: u16, out: &mut BytesMut) -> ResponseStart {
    let at = out.len();
    let header = Header {
        len: 0,
        id,
        kind,
        flags: FLAG_RESPONSE,
    };
    out.put_slice(&header.encode());
    ResponseStart { at }
}

impl ResponseStart {
    /// Writes the payload's length into the header.
    ///
    /// Panics if the payload passes [`FRAME_PAYLOAD_MAX`] or `out` lost the header:
    /// both are bugs of the caller.
    pub fn finish(self, out: &mut BytesMut) {
        assert!(
            out.len() >= self.at + HEADER_LEN,
            "the buffer lost a response header at {} (length {})",
            self.at,
            out.len()
        );
        let len = out.len() - self.at - HEADER_LEN;
        assert!(
            len <= FRAME_PAYLOAD_MAX,
            "a response payload of {len} bytes passes the limit {FRAME_PAYLOAD_MAX}"
        );
        let len = (len as u32).to_le_bytes();
        if let Some(field) = out.get_mut(self.at + LEN_OFFSET..self.at + ID_OFFSET) {
            field.copy_from_slice(&len);
        }
    }
}

/// Appends an error response: flags `RESPONSE | ERROR`, payload
/// `{"code": u16, "message": str}`. A message longer than [`ERROR_MESSAGE_LEN_MAX`]
/// bytes is cut at a character boundary.
pub fn encode_error(id: u32, kind: u16, error: &Error, out: &mut BytesMut) {
    let start = out.len();
    let header = Header {
        len: 0,
        id,
        kind,
        flags: FLAG_RESPONSE | FLAG_ERROR,
    };
    out.put_slice(&header.encode());
    let payload = ErrorPayload {
        code: error.code() as u16,
        message: cut_at_char(error.message(), ERROR_MESSAGE_LEN_MAX).to_owned(),
    };
    write_payload(out, &payload);
    let len = out.len() - start - HEADER_LEN;
    // An error payload is a u16 and a bounded message: far below the limit.
    patch_header(
        out,
        start,
        &Header {
            len: len as u32,
            ..header
        },
    );
}

/// Decodes the response frame at the front of `buf`: `Ok(None)` until all of it has
/// arrived (nothing consumed); the frame is consumed on `Ok(Some)` and on a payload
/// error, not on a header error. Any error leaves the connection unusable.
pub fn decode_response(buf: &mut BytesMut) -> Result<Option<Response>, FrameError> {
    let Some(header) = peek_header(buf) else {
        return Ok(None);
    };
    header.check_response()?;
    let frame_len = HEADER_LEN + header.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..frame_len) else {
        return Ok(None);
    };
    let response = decode_response_payload(&header, payload);
    buf.advance(frame_len);
    response.map(Some)
}

/// Decodes the payload of a response frame whose header passed
/// [`Header::check_response`].
///
/// An error code this crate does not know becomes `internal`, its message prefixed with
/// the number, so a newer server's refusals still reach the caller.
pub fn decode_response_payload(header: &Header, payload: &[u8]) -> Result<Response, FrameError> {
    let bad = |why: String| FrameError::BadPayload {
        id: header.id,
        kind: header.kind,
        why,
    };
    // A result wraps a stored value in a few levels (a page's `items` list and entry
    // map), which a request's map did not.
    let depth = PAYLOAD_DEPTH_MAX + RESULT_WRAPPING_MAX;
    let result = if header.flags & FLAG_ERROR != 0 {
        let e: ErrorPayload = read_payload(payload, depth).map_err(bad)?;
        Err(match ErrorCode::from_u16(e.code) {
            Some(code) => Error::new(code, e.message),
            None => Error::new(
                ErrorCode::Internal,
                format!("error code {}: {}", e.code, e.message),
            ),
        })
    } else if payload.is_empty() {
        Ok(Value::Null)
    } else {
        Ok(read_payload::<Value>(payload, depth).map_err(bad)?)
    };
    Ok(Response {
        id: header.id,
        kind: header.kind,
        result,
    })
}

/// Levels a result may nest beyond [`PAYLOAD_DEPTH_MAX`]: a page wraps each stored
/// value (which a request's map held at depth 1) in a list and an entry map; the rest
/// is slack for results to come.
const RESULT_WRAPPING_MAX: usize = 8;

/// The payload of an error response.
struct ErrorPayload {
    code: u16,
    message: String,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Payload bytes
// ---------------------------------------------------------------------------------------

/// Overwrites the placeholder header at `at` in `out`.
fn patch_header(out: &mut BytesMut, at: usize, header: &Header) {
    let field = out.get_mut(at..at + HEADER_LEN);
    assert!(field.is_some(), "the buffer lost a frame header at {at}");
    if let Some(field) = field {
        field.copy_from_slice(&header.encode());
    }
}

/// Appends `payload`, MessagePack with string-keyed maps, to `out`.
fn write_payload<T: Serialize + ?Sized>(out: &mut BytesMut, payload: &T) {
    // A BytesMut grows as needed, so the writer cannot fail; every payload type here
    // serializes maps with string keys and known lengths, which rmp-serde always
    // encodes. An error would be a bug in this module.
    if let Err(e) = rmp_serde::encode::write_named(&mut out.writer(), payload) {
        panic!("a payload always encodes into memory: {e}");
    }
}

/// Decodes one whole payload: exactly one MessagePack value, nested at most `depth`
/// levels, with no bytes after it.
/// The commonest request, `{"pattern": str}` and nothing else, read without serde
/// (the general reader costs as much as the lookup it asks for). Anything else, and a
/// key that is not UTF-8, is left to [`read_payload`], which gives the same result or
/// the error.
fn plain_get(payload: &[u8]) -> Option<Get> {
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
        limit: None,
        reverse: false,
        start: None,
        label: None,
        meta: false,
    })
}

fn read_payload<T: de::DeserializeOwned>(payload: &[u8], depth: usize) -> Result<T, String> {
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

// ---------------------------------------------------------------------------------------
// Payload maps: serde, by hand
// ---------------------------------------------------------------------------------------
//
// Derive cannot say what the protocol needs: a map and never a positional array,
// `label1..label5` as one array, `nil` apart from absent. Each type below lists its
// field names once; `read_fields` refuses unknown and repeated names.

const LABEL_NAMES: [&str; LABEL_COUNT] = ["label1", "label2", "label3", "label4", "label5"];

const HELLO_FIELDS: &[&str] = &["version", "env", "token"];
const GET_FIELDS: &[&str] = &["pattern", "limit", "reverse", "start", "label", "meta"];
const SET_FIELDS: &[&str] = &[
    "key",
    "value",
    "ttl",
    "label1",
    "label2",
    "label3",
    "label4",
    "label5",
    "overwrite",
    "meta",
];
const BATCH_ITEM_FIELDS: &[&str] = &[
    "key", "value", "ttl", "label1", "label2", "label3", "label4", "label5",
];
const SET_BATCH_FIELDS: &[&str] = &["items", "overwrite", "meta"];
const ADD_FIELDS: &[&str] = &["key", "field", "amount", "meta"];
const REMOVE_FIELDS: &[&str] = &["keys"];
const ERROR_FIELDS: &[&str] = &["code", "message"];

// Repeated fields are tracked in a u16 bit set.
const _: () = assert!(SET_FIELDS.len() <= 16 && BATCH_ITEM_FIELDS.len() <= 16);

/// Whether unknown field names are refused (requests) or skipped (responses).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unknown {
    Refuse,
    Skip,
}

/// Reads every entry of a payload map, handing each known field's name to `field`,
/// which must read its value from `map`.
fn read_fields<'de, A: MapAccess<'de>>(
    map: &mut A,
    names: &'static [&'static str],
    unknown: Unknown,
    mut field: impl FnMut(&'static str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
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
    Ok(())
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

fn required<T, E: de::Error>(field: Option<T>, name: &'static str) -> Result<T, E> {
    field.ok_or_else(|| E::missing_field(name))
}

/// A string that must be a MessagePack str: serde's `String` would also take a bin of
/// UTF-8 bytes, which the protocol does not allow anywhere.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// The value of a string field.
fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
    Ok(map.next_value::<Text>()?.0)
}

/// The value of an optional string field: `nil` is `None`.
fn opt_text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
    Ok(map.next_value::<Option<Text>>()?.map(|t| t.0))
}

/// The index of `labelN` in a labels array.
fn label_slot(name: &str) -> Option<usize> {
    LABEL_NAMES.iter().position(|n| *n == name)
}

/// A payload type read from a map by [`MapVisitor`].
trait FromMap: Sized {
    /// What the visitor expects, for error messages ("a Set map").
    const EXPECTING: &'static str;
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Accepts a map only: a struct sent as a positional array is refused.
struct MapVisitor<T>(PhantomData<T>);

impl<'de, T: FromMap> Visitor<'de> for MapVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

fn deserialize_map<'de, D: Deserializer<'de>, T: FromMap>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(MapVisitor(PhantomData))
}

/// Reads a list into a vector whose capacity is capped: the length a peer declares
/// bounds nothing, and no list in a request may hold more than [`BATCH_ITEMS_MAX`].
fn read_list<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(BATCH_ITEMS_MAX));
    while let Some(x) = seq.next_element()? {
        list.push(x);
    }
    Ok(list)
}

/// A list of `T`, read with [`read_list`].
struct List<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<List<T>, A::Error> {
                read_list(seq).map(List)
            }
        }
        d.deserialize_seq(ListVisitor(PhantomData))
    }
}

/// Counts the entries a map will have, for the map header.
fn count(present: &[bool]) -> usize {
    present.iter().filter(|p| **p).count()
}

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
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Patterns, E> {
                Ok(Patterns::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Patterns, E> {
                Ok(Patterns::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Patterns, A::Error> {
                let list: Vec<Text> = read_list(seq)?;
                Ok(Patterns::Many(list.into_iter().map(|t| t.0).collect()))
            }
        }
        d.deserialize_any(PatternsVisitor)
    }
}

impl Serialize for Hello {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = count(&[true, self.env.is_some(), self.token.is_some()]);
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("version", &self.version)?;
        if let Some(env) = &self.env {
            m.serialize_entry("env", env)?;
        }
        if let Some(token) = &self.token {
            m.serialize_entry("token", token)?;
        }
        m.end()
    }
}

impl FromMap for Hello {
    const EXPECTING: &'static str = "a Hello map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut version, mut env, mut token) = (None, None, None);
        read_fields(&mut map, HELLO_FIELDS, Unknown::Refuse, |name, map| {
            match name {
                "version" => version = Some(map.next_value()?),
                "env" => env = opt_text(map)?,
                _ => token = opt_text(map)?,
            }
            Ok(())
        })?;
        Ok(Hello {
            version: required(version, "version")?,
            env,
            token,
        })
    }
}

impl Serialize for Get {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = count(&[
            true,
            self.limit.is_some(),
            self.reverse,
            self.start.is_some(),
            self.label.is_some(),
            self.meta,
        ]);
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("pattern", &self.pattern)?;
        if let Some(limit) = &self.limit {
            m.serialize_entry("limit", limit)?;
        }
        if self.reverse {
            m.serialize_entry("reverse", &true)?;
        }
        if let Some(start) = &self.start {
            m.serialize_entry("start", start)?;
        }
        if let Some(label) = &self.label {
            m.serialize_entry("label", label)?;
        }
        if self.meta {
            m.serialize_entry("meta", &true)?;
        }
        m.end()
    }
}

impl FromMap for Get {
    const EXPECTING: &'static str = "a Get map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut pattern = None;
        let mut get = Get {
            pattern: Patterns::Many(Vec::new()),
            limit: None,
            reverse: false,
            start: None,
            label: None,
            meta: false,
        };
        read_fields(&mut map, GET_FIELDS, Unknown::Refuse, |name, map| {
            match name {
                "pattern" => pattern = Some(map.next_value()?),
                "limit" => get.limit = map.next_value()?,
                "reverse" => get.reverse = flag(map)?,
                "start" => get.start = opt_text(map)?,
                "label" => get.label = opt_text(map)?,
                _ => get.meta = flag(map)?,
            }
            Ok(())
        })?;
        get.pattern = required(pattern, "pattern")?;
        Ok(get)
    }
}

/// An optional bool: `nil` is the same as absent, false.
fn flag<'de, A: MapAccess<'de>>(map: &mut A) -> Result<bool, A::Error> {
    Ok(map.next_value::<Option<bool>>()?.unwrap_or(false))
}

impl Serialize for Set {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let labels = self.labels.iter().filter(|l| l.is_some()).count();
        let len = labels + count(&[true, true, self.ttl.is_some(), self.overwrite, self.meta]);
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("key", &self.key)?;
        m.serialize_entry("value", &self.value)?;
        if let Some(ttl) = &self.ttl {
            m.serialize_entry("ttl", ttl)?;
        }
        for (name, label) in LABEL_NAMES.iter().zip(&self.labels) {
            if let Some(label) = label {
                // `Some(None)` is written as nil: clear the label.
                m.serialize_entry(name, label)?;
            }
        }
        if self.overwrite {
            m.serialize_entry("overwrite", &true)?;
        }
        if self.meta {
            m.serialize_entry("meta", &true)?;
        }
        m.end()
    }
}

impl FromMap for Set {
    const EXPECTING: &'static str = "a Set map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut key, mut value) = (None, None);
        let mut set = Set {
            key: String::new(),
            value: Value::Null,
            ttl: None,
            labels: Default::default(),
            overwrite: false,
            meta: false,
        };
        read_fields(&mut map, SET_FIELDS, Unknown::Refuse, |name, map| {
            match name {
                "key" => key = Some(text(map)?),
                "value" => value = Some(map.next_value()?),
                // Read as a Value, not an Option, so that nil stays `Some(Null)`.
                "ttl" => set.ttl = Some(map.next_value()?),
                "overwrite" => set.overwrite = flag(map)?,
                "meta" => set.meta = flag(map)?,
                label => {
                    let v = opt_text(map)?;
                    if let Some(slot) = label_slot(label).and_then(|i| set.labels.get_mut(i)) {
                        *slot = Some(v);
                    }
                }
            }
            Ok(())
        })?;
        set.key = required(key, "key")?;
        set.value = required(value, "value")?;
        Ok(set)
    }
}

impl Serialize for BatchItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let labels = self.labels.iter().filter(|l| l.is_some()).count();
        let len = labels + count(&[true, true, self.ttl.is_some()]);
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("key", &self.key)?;
        m.serialize_entry("value", &self.value)?;
        if let Some(ttl) = &self.ttl {
            m.serialize_entry("ttl", ttl)?;
        }
        for (name, label) in LABEL_NAMES.iter().zip(&self.labels) {
            if let Some(label) = label {
                m.serialize_entry(name, label)?;
            }
        }
        m.end()
    }
}

impl FromMap for BatchItem {
    const EXPECTING: &'static str = "a batch item map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut key, mut value) = (None, None);
        let mut item = BatchItem {
            key: String::new(),
            value: Value::Null,
            ttl: None,
            labels: Default::default(),
        };
        read_fields(&mut map, BATCH_ITEM_FIELDS, Unknown::Refuse, |name, map| {
            match name {
                "key" => key = Some(text(map)?),
                "value" => value = Some(map.next_value()?),
                "ttl" => item.ttl = Some(map.next_value()?),
                label => {
                    let v = opt_text(map)?;
                    if let Some(slot) = label_slot(label).and_then(|i| item.labels.get_mut(i)) {
                        *slot = v;
                    }
                }
            }
            Ok(())
        })?;
        item.key = required(key, "key")?;
        item.value = required(value, "value")?;
        Ok(item)
    }
}

impl Serialize for SetBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = count(&[true, self.overwrite, self.meta]);
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("items", &self.items)?;
        if self.overwrite {
            m.serialize_entry("overwrite", &true)?;
        }
        if self.meta {
            m.serialize_entry("meta", &true)?;
        }
        m.end()
    }
}

impl FromMap for SetBatch {
    const EXPECTING: &'static str = "a SetBatch map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut items = None;
        let (mut overwrite, mut meta) = (false, false);
        read_fields(&mut map, SET_BATCH_FIELDS, Unknown::Refuse, |name, map| {
            match name {
                "items" => items = Some(map.next_value::<List<BatchItem>>()?.0),
                "overwrite" => overwrite = flag(map)?,
                _ => meta = flag(map)?,
            }
            Ok(())
        })?;
        Ok(SetBatch {
            items: required(items, "items")?,
            overwrite,
            meta,
        })
    }
}

impl Serialize for Add {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = count(&[true, self.field.is_some(), true, self.meta]);
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("key", &self.key)?;
        if let Some(field) = &self.field {
            m.serialize_entry("field", field)?;
        }
        m.serialize_entry("amount", &self.amount)?;
        if self.meta {
            m.serialize_entry("meta", &true)?;
        }
        m.end()
    }
}

impl FromMap for Add {
    const EXPECTING: &'static str = "an Add map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut key, mut field, mut amount, mut meta) = (None, None, None, false);
        read_fields(&mut map, ADD_FIELDS, Unknown::Refuse, |name, map| {
            match name {
                "key" => key = Some(text(map)?),
                "field" => field = opt_text(map)?,
                "amount" => amount = Some(map.next_value()?),
                _ => meta = flag(map)?,
            }
            Ok(())
        })?;
        Ok(Add {
            key: required(key, "key")?,
            field,
            amount: required(amount, "amount")?,
            meta,
        })
    }
}

impl Serialize for Remove {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("keys", &self.keys)?;
        m.end()
    }
}

impl FromMap for Remove {
    const EXPECTING: &'static str = "a Remove map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut keys = None;
        read_fields(&mut map, REMOVE_FIELDS, Unknown::Refuse, |_, map| {
            keys = Some(map.next_value()?);
            Ok(())
        })?;
        Ok(Remove {
            keys: required(keys, "keys")?,
        })
    }
}

impl Serialize for ErrorPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("code", &self.code)?;
        m.serialize_entry("message", &self.message)?;
        m.end()
    }
}

impl FromMap for ErrorPayload {
    const EXPECTING: &'static str = "an error map";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut code, mut message) = (None, None);
        // A newer server may add fields to its errors: skip what we do not know.
        read_fields(&mut map, ERROR_FIELDS, Unknown::Skip, |name, map| {
            match name {
                "code" => code = Some(map.next_value()?),
                _ => message = Some(text(map)?),
            }
            Ok(())
        })?;
        Ok(ErrorPayload {
            code: required(code, "code")?,
            message: required(message, "message")?,
        })
    }
}

macro_rules! deserialize_from_map {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_map(d)
            }
        }
    )*};
}

deserialize_from_map!(
    Hello,
    Get,
    Set,
    BatchItem,
    SetBatch,
    Add,
    Remove,
    ErrorPayload
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ITEM_SIZE_MAX;
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
            value,
            ttl: None,
            labels: Default::default(),
            overwrite: false,
            meta: false,
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
        full_set.ttl = Some(Value::Null);
        full_set.labels[0] = Some(Some("L:1".into()));
        full_set.labels[4] = Some(None);
        full_set.overwrite = true;
        full_set.meta = true;
        vec![
            Request::Hello(Hello {
                version: PROTOCOL_VERSION,
                env: Some("prod".into()),
                token: Some("t0k3n".into()),
            }),
            Request::Ping,
            Request::Get(Get {
                pattern: Patterns::One("ns:pre*".into()),
                limit: Some(10),
                reverse: true,
                start: Some("ns:pre5".into()),
                label: Some("label2".into()),
                meta: true,
            }),
            Request::Get(Get {
                pattern: Patterns::Many(vec!["a".into(), "b".into()]),
                limit: None,
                reverse: false,
                start: None,
                label: None,
                meta: false,
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
            limit: None,
            reverse: false,
            start: None,
            label: None,
            meta: false,
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
            1 << 2,
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
            FLAG_RESPONSE | 1 << 2,
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
        assert_eq!(s.ttl, Some(Value::Null));
        assert_eq!(
            s.labels,
            [None, Some(None), Some(Some("x".into())), None, None]
        );
        let absent = map(&[("key", json!("a")), ("value", json!(1))]);
        let Some((_, Request::Set(s))) =
            decode_one(&raw_frame(1, Opcode::Set as u16, 0, &absent)).unwrap()
        else {
            panic!("not a set");
        };
        assert_eq!(s.ttl, None);
        assert_eq!(s.labels, [None, None, None, None, None]);
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
        assert_eq!((g.limit, g.meta, g.start), (None, false, None));
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
                    result: Ok(value)
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
                    result: Err(e)
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
        let doc = include_str!("../PROTOCOL.md");
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
        let doc = include_str!("../PROTOCOL.md");
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
        let page = json!({"items": [{"key": "a", "value": 1}, {"key": "b", "value": 2.5}], "lastKey": "b"});
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
                        limit,
                        reverse,
                        start,
                        label,
                        meta,
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
                        value,
                        ttl,
                        labels,
                        overwrite,
                        meta,
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
            let expect = Response { id, kind, result: Ok(value) };
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
            let expect = Response { id, kind: Opcode::Get as u16, result: Err(e) };
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
}
