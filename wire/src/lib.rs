//! The vocabulary ampd speaks, shared by the engine, the server and every client.
//!
//! This crate has no runtime: a client in any async runtime (or none) can depend on it
//! without compiling glommio.
//!
//! # Layout
//! - [`error_code`]: the stable error codes of SPEC.md, `#[repr(u16)]`, never reused.
//! - [`error`]: [`Error`], a code plus a message that names what was wrong.
//! - [`limits`]: every size and count limit, as named constants related by
//!   compile-time assertions.
//! - [`value`]: the value encoding (MessagePack), in which the engine keeps values and
//!   the protocol carries them, so a read copies bytes without re-encoding.

pub mod error;
pub mod error_code;
pub mod limits;
pub mod value;

pub use error::{Error, Result};
pub use error_code::ErrorCode;
pub use value::Value;
