//! Opcodes: what a request asks for.

use std::fmt;

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
