//! The binary frames of the wire protocol: bytes → [`Request`] / [`Response`] and back.
//!
//! This is the only place that turns protocol bytes into frames. It has no runtime: the
//! server (glommio) and the client (tokio) both hand it a `BytesMut` they read into.
//! `wire/PROTOCOL.md` describes the same format for someone writing a client in another
//! language.
//!
//! # Layout
//! - `header`: the 12-byte header (below), its offsets and flags.
//! - `opcode`: the table of calls, one line each: [`Opcode`] and [`Request`] come
//!   from it.
//! - `request`: the request payloads (one type per call, each with its field table),
//!   the request frame's encoder and decoder.
//! - `response`: OK and error responses.
//! - `error`: why a frame was refused ([`FrameError`]).
//! - `payload`: the MessagePack map codec every payload type is declared with: one
//!   line per field, beside the type (see "Adding a field").
//!
//! # Frame layout
//! Every frame is a 12-byte little-endian header followed by `len` bytes of payload:
//!
//! | offset | size | field   | meaning                                                   |
//! | ------ | ---- | ------- | --------------------------------------------------------- |
//! | 0      | u32  | `len`   | payload bytes after the header, at most `FRAME_PAYLOAD_MAX` |
//! | 4      | u32  | `id`    | chosen by the client, echoed by the response               |
//! | 8      | u16  | `kind`  | the [`Opcode`]; a response carries its request's           |
//! | 10     | u16  | `flags` | [`FLAG_RESPONSE`], [`FLAG_ERROR`], [`FLAG_PUSH`]; others refused |
//!
//! A payload is one MessagePack value (or nothing, for `Ping` and `Stats`): a request's
//! is a map with string keys, an OK response's is the operation's result, an error
//! response's is `{"code", "message"}`.
//!
//! # Decisions
//! - The length is checked from the header alone, before any payload is buffered: the
//!   peer never decides what we allocate. Nothing a decoder allocates is sized by a
//!   count read from the bytes (a list's capacity is capped by
//!   [`BATCH_ITEMS_MAX`](crate::limits::BATCH_ITEMS_MAX)).
//! - Incomplete input is `Ok(None)` and consumes nothing; a refused frame is a typed
//!   [`FrameError`] whose message carries the numbers.
//! - Request maps refuse unknown and repeated keys, so a typo (`"overwite"`) is an error
//!   rather than an option silently not taken; they must be maps, never positional
//!   arrays, so field order is not part of the protocol. Error payloads in responses
//!   ignore keys they do not know, so a newer server may add some.
//! - `ttl` and `labelN` of a single `set` are three-state, as in the engine's
//!   `SetOptions`: absent keeps the stored one, `nil` clears it, a value sets it.
//!
//! # Adding a field
//! A payload type's fields are listed once, in a `payload_map!` table next to the type:
//! `"limit" => options.limit: Optional<i64>,`. The table gives the type its encoder
//! (absent fields are left out), its decoder (a map only; unknown and repeated names
//! refused, required ones checked) and its field list. A new option of `get` is one
//! field in `QueryOptions` and one line in `Get`'s table.

// A decoder must not panic on any input: no unchecked indexing or unwrapping outside
// tests (the few places that index a fixed-size array say why it cannot fail).
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]

#[macro_use]
mod payload;
mod error;
mod header;
mod opcode;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use error::FrameError;
pub use header::{Header, FLAG_ERROR, FLAG_PUSH, FLAG_RESPONSE, HEADER_LEN};
pub use opcode::{Opcode, Request};
pub use request::{
    decode_request, decode_request_payload, encode_request, Ack, Add, BatchItem, DeadLetters, Get,
    Hello, Patterns, Remove, Set, SetBatch, Subscribe, Unsubscribe,
};
pub use response::{
    begin_ok, decode_response, decode_response_payload, encode_error, encode_event_push, encode_ok,
    encode_ok_value, encode_push, Response, ResponseStart,
};

/// The protocol version this crate speaks, sent in [`Hello`] and in the server's answer.
pub const PROTOCOL_VERSION: u32 = 1;

/// The environment a connection uses when its [`Hello`] names none.
pub const ENV_DEFAULT: &str = "dev";

/// Where `ampd serve` listens, and clients connect, unless told otherwise.
pub const ADDR_DEFAULT: &str = "127.0.0.1:7070";
