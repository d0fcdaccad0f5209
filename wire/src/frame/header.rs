//! The frame header: 12 bytes, little-endian, each offset computed from the one
//! before it (the table is in the module above).

use super::{FrameError, Opcode};
use crate::limits::FRAME_PAYLOAD_MAX;
use bytes::BytesMut;
use std::mem::size_of;

pub(super) const LEN_OFFSET: usize = 0;
pub(super) const ID_OFFSET: usize = LEN_OFFSET + size_of::<u32>();
pub(super) const KIND_OFFSET: usize = ID_OFFSET + size_of::<u32>();
pub(super) const FLAGS_OFFSET: usize = KIND_OFFSET + size_of::<u16>();
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
/// Set, with [`FLAG_RESPONSE`], on a frame the server sends of its own accord: an event
/// of a subscription, carrying the id and kind of the `subscribe` that opened it. Never
/// with [`FLAG_ERROR`].
pub const FLAG_PUSH: u16 = 1 << 2;
const FLAGS_KNOWN: u16 = FLAG_RESPONSE | FLAG_ERROR | FLAG_PUSH;

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
    /// [`FLAG_RESPONSE`], [`FLAG_ERROR`] and [`FLAG_PUSH`].
    pub flags: u16,
}

impl Header {
    /// The header's 12 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[LEN_OFFSET..ID_OFFSET].copy_from_slice(&self.len.to_le_bytes());
        b[ID_OFFSET..KIND_OFFSET].copy_from_slice(&self.id.to_le_bytes());
        b[KIND_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.kind.to_le_bytes());
        b[FLAGS_OFFSET..HEADER_LEN].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Reads a header; every bit pattern is a header, checked separately.
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
        if self.flags & FLAG_PUSH != 0 && self.flags & FLAG_ERROR != 0 {
            return Err(FrameError::BadFlags {
                flags: self.flags,
                why: "a push is never an error",
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
pub(super) fn peek_header(buf: &[u8]) -> Option<Header> {
    let bytes: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(Header::decode(bytes))
}

/// Overwrites the placeholder header at `at` in `out`.
pub(super) fn patch_header(out: &mut BytesMut, at: usize, header: &Header) {
    let field = out.get_mut(at..at + HEADER_LEN);
    assert!(field.is_some(), "the buffer lost a frame header at {at}");
    if let Some(field) = field {
        field.copy_from_slice(&header.encode());
    }
}
