//! The vocabulary ampd speaks, shared by the engine, the server and every client.
//!
//! This crate has no runtime: a client in any async runtime (or none) can depend on it
//! without compiling glommio.
//!
//! # Layout
//! - [`client`] (feature `client`): the Rust client, on tokio.
//! - [`error_code`]: the stable error codes of SPEC.md, `#[repr(u16)]`, never reused.
//! - [`error`]: [`Error`], a code plus a message that names what was wrong.
//! - [`events`]: change events' names and the filters that pick them.
//! - [`limits`]: every size and count limit, as named constants related by
//!   compile-time assertions.
//! - [`frame`]: the binary frames of the protocol (header, opcodes, request and
//!   response payloads), encoded and decoded without a runtime; `PROTOCOL.md` beside
//!   `src/` describes them for clients in other languages.
//! - [`options`]: the options of the API's calls ([`SetOptions`], [`QueryOptions`],
//!   [`BatchItem`]), the same for the embedded engine and the client.
//! - [`page`]: the `{items, lastKey}` result shape, as JSON and as MessagePack.
//! - [`pattern`]: the syntax of a `get` pattern (namespace and form), and so which
//!   patterns name one exact key.
//! - [`value`]: the value encoding (MessagePack), in which the engine keeps values and
//!   the protocol carries them, so a read copies bytes without re-encoding.

// Everything here decodes what a peer sent or is linked into others' programs: no
// unchecked indexing or unwrapping outside tests; a needed exception says why.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)
)]
// A library logs (or returns errors); only binaries print.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod error_code;
pub mod events;
pub mod frame;
pub mod limits;
pub mod options;
pub mod page;
pub mod pattern;
pub mod value;

pub use error::{Error, Result};
pub use error_code::ErrorCode;
pub use options::{BatchItem, QueryOptions, SetOptions};
pub use value::Value;
