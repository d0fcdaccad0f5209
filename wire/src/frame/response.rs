//! Response frames: OK (the operation's result, as one MessagePack value) and error
//! (`{"code", "message"}`).

use super::header::{
    patch_header, peek_header, Header, FLAG_ERROR, FLAG_PUSH, FLAG_RESPONSE, HEADER_LEN,
};
use super::header::{ID_OFFSET, LEN_OFFSET};
use super::payload::{read_payload, write_payload, Required, Text};
use super::FrameError;
use crate::limits::{ERROR_MESSAGE_LEN_MAX, FRAME_PAYLOAD_MAX, PAYLOAD_DEPTH_MAX};
use crate::{Error, ErrorCode, Value};
use bytes::{Buf, BufMut, BytesMut};

/// A response, decoded by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request it answers (0: about the connection as a whole).
    pub id: u32,
    /// The opcode of the request it answers (with id 0, not meaningful).
    pub kind: u16,
    /// The result (an empty OK payload is `Value::Null`), or the refusal.
    pub result: Result<Value, Error>,
    /// A push ([`FLAG_PUSH`]): not the answer to `id` but one of the frames that
    /// request opened (an event of a subscription).
    pub push: bool,
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

/// Appends a push frame (flags `RESPONSE | PUSH`) for the request `id` of `kind` that
/// opened it, whose payload is `value`. Panics like [`encode_ok`].
pub fn encode_push(id: u32, kind: u16, value: &Value, out: &mut BytesMut) {
    let start = begin(id, kind, FLAG_RESPONSE | FLAG_PUSH, out);
    write_payload(out, value);
    start.finish(out);
}

/// Appends the push of one subscription event (PROTOCOL.md "Events") for the
/// `subscribe` request `id`: payload `{"delivery": delivery, "event": event}`, `event`
/// already encoded as one MessagePack value. Panics like [`encode_ok`].
pub fn encode_event_push(id: u32, delivery: u64, event: &[u8], out: &mut BytesMut) {
    let start = begin(
        id,
        super::Opcode::Subscribe as u16,
        FLAG_RESPONSE | FLAG_PUSH,
        out,
    );
    let mut w = (&mut *out).writer();
    // Writes into a BytesMut cannot fail.
    let _ = rmp::encode::write_map_len(&mut w, 2);
    let _ = rmp::encode::write_str(&mut w, "delivery");
    let _ = rmp::encode::write_uint(&mut w, delivery);
    let _ = rmp::encode::write_str(&mut w, "event");
    out.put_slice(event);
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
    begin(id, kind, FLAG_RESPONSE, out)
}

fn begin(id: u32, kind: u16, flags: u16, out: &mut BytesMut) -> ResponseStart {
    let at = out.len();
    let header = Header {
        len: 0,
        id,
        kind,
        flags,
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
        push: header.flags & FLAG_PUSH != 0,
    })
}

/// Levels a result may nest beyond [`PAYLOAD_DEPTH_MAX`]: a page wraps each stored
/// value (which a request's map held at depth 1) in a list and an entry map; the rest
/// is slack for results to come.
const RESULT_WRAPPING_MAX: usize = 8;

/// The payload of an error response.
#[derive(Default)]
struct ErrorPayload {
    code: u16,
    message: String,
}

// A newer server may add fields to its errors: skip what we do not know.
payload_map!(ErrorPayload, "an error map", Skip, {
    "code" => code: Required<u16>,
    "message" => message: Text,
});

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(super) fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
