//! The one error type of the API: a stable [`ErrorCode`] and a message for humans.
//!
//! The engine returns it, the protocol carries it, the client hands it back unchanged,
//! so a caller matches on `err.code()` the same way in-process and over the network.

use crate::ErrorCode;
use std::fmt;

/// A refused request. The message names what was wrong and carries the numbers
/// ("key is 300 bytes, limit 256").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
