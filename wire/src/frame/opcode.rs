//! The protocol's calls, one line each: opcode number, wire name, payload type. From
//! this table come [`Opcode`] (with its numbers, names and [`Opcode::ALL`]),
//! [`Request`] (one variant per call), and the dispatch of the request codec, so a new
//! call is one line here, its payload type with its field table in `request`, and its
//! handling in the server and the client.

use super::payload::write_payload;
use super::request::{
    Ack, Add, DeadLetters, Get, Hello, Remove, Set, SetBatch, Subscribe, Unsubscribe,
};
use crate::limits::PAYLOAD_DEPTH_MAX;
use bytes::BytesMut;
use std::fmt;

/// A request payload: a map with its own field table (`payload_map!`), read with the
/// protocol's depth limit unless the type knows a faster way.
pub(super) trait Payload: serde::Serialize + serde::de::DeserializeOwned {
    fn decode(payload: &[u8]) -> Result<Self, String> {
        super::payload::read_payload(payload, PAYLOAD_DEPTH_MAX)
    }
}

impl Payload for Hello {}
impl Payload for Set {}
impl Payload for SetBatch {}
impl Payload for Add {}
impl Payload for Remove {}
impl Payload for Subscribe {}
impl Payload for Ack {}
impl Payload for DeadLetters {}
impl Payload for Unsubscribe {}

/// Declares the calls: `Name = number, "wire_name";` for a call without a payload,
/// `Name = number, "wire_name", PayloadType;` for one with.
macro_rules! calls {
    (
        empty { $($(#[$edoc:meta])* $e:ident = $en:literal, $ename:literal;)+ }
        payload { $($(#[$pdoc:meta])* $p:ident = $pn:literal, $pname:literal, $ty:ty;)+ }
    ) => {
        /// What a request asks for. The numbers are part of the protocol: never
        /// changed, never reused. They are grouped by range: 1.. connection, 16..
        /// reads, 32.. writes, 48.. administration, 64.. events.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Opcode {
            $($(#[$edoc])* $e = $en,)+
            $($(#[$pdoc])* $p = $pn,)+
        }

        /// How many calls there are.
        const CALLS: usize = [$(stringify!($e),)+ $(stringify!($p),)+].len();

        impl Opcode {
            /// Every opcode.
            pub const ALL: [Opcode; CALLS] = [$(Opcode::$e,)+ $(Opcode::$p,)+];

            /// The opcode with this wire number, if there is one.
            pub const fn from_u16(n: u16) -> Option<Opcode> {
                match n {
                    $($en => Some(Opcode::$e),)+
                    $($pn => Some(Opcode::$p),)+
                    _ => None,
                }
            }

            /// The snake_case name PROTOCOL.md uses.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Opcode::$e => $ename,)+
                    $(Opcode::$p => $pname,)+
                }
            }
        }

        /// A request, decoded: one variant per [`Opcode`]. Each payload's map is
        /// described on its type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $($(#[$edoc])* $e,)+
            $($(#[$pdoc])* $p($ty),)+
        }

        impl Request {
            /// The opcode a frame of this request carries.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $(Request::$e => Opcode::$e,)+
                    $(Request::$p(_) => Opcode::$p,)+
                }
            }

            /// Appends the request's payload (nothing for a call without one).
            pub(super) fn write_payload(&self, out: &mut BytesMut) {
                match self {
                    $(Request::$e => {})+
                    $(Request::$p(payload) => write_payload(out, payload),)+
                }
            }

            /// Reads the payload of a request with `opcode`.
            pub(super) fn read_payload(opcode: Opcode, payload: &[u8]) -> Result<Request, String> {
                match opcode {
                    $(Opcode::$e if payload.is_empty() => Ok(Request::$e),)+
                    $(Opcode::$e => Err(format!(
                        "{} takes an empty payload, got {} bytes",
                        $ename,
                        payload.len()
                    )),)+
                    $(Opcode::$p => <$ty as Payload>::decode(payload).map(Request::$p),)+
                }
            }
        }
    };
}

calls! {
    empty {
        /// Does nothing; answered with an empty payload.
        Ping = 2, "ping";
        /// Server statistics.
        Stats = 48, "stats";
    }
    payload {
        /// Opens the connection: protocol version, environment, token. First frame
        /// only.
        Hello = 1, "hello", Hello;
        /// `get`: one key, a batch of keys, or a pattern (page).
        Get = 16, "get", Get;
        /// `set` of one item.
        Set = 32, "set", Set;
        /// `set` of a batch of items (`overwrite` required).
        SetBatch = 33, "set_batch", SetBatch;
        /// `add` to a number or to a numeric field.
        Add = 34, "add", Add;
        /// `remove` of one key or a batch of keys.
        Remove = 35, "remove", Remove;
        /// Opens or joins a named subscription; its events follow as pushes.
        Subscribe = 64, "subscribe", Subscribe;
        /// The client's word on one pushed event.
        Ack = 65, "ack", Ack;
        /// A subscription's dead letters, listed or replayed.
        DeadLetters = 66, "dead_letters", DeadLetters;
        /// Removes a named subscription, its position and its dead letters.
        Unsubscribe = 67, "unsubscribe", Unsubscribe;
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
