//! Error codes on the wire, one per kind of refusal in SPEC.md.
//!
//! The numbers are part of the protocol: a code keeps its number forever and a retired
//! number is never reused for something else.

use std::fmt;

/// A stable error code. `as_str` is the name SPEC.md and the CLI use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    InvalidKey = 1,
    KeyTooLong = 2,
    ValueTooLarge = 3,
    InvalidTtl = 4,
    InvalidQuery = 5,
    LimitOutOfRange = 6,
    BatchTooLarge = 7,
    OverwriteRequired = 8,
    NotANumber = 9,
    Overflow = 10,
    Unauthorized = 11,
    UnknownEnvironment = 12,
    FrameTooLarge = 13,
    BadFrame = 14,
    MemoryLimit = 15,
    Busy = 16,
    Internal = 17,
}

impl ErrorCode {
    /// Every code, in number order.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidKey,
        ErrorCode::KeyTooLong,
        ErrorCode::ValueTooLarge,
        ErrorCode::InvalidTtl,
        ErrorCode::InvalidQuery,
        ErrorCode::LimitOutOfRange,
        ErrorCode::BatchTooLarge,
        ErrorCode::OverwriteRequired,
        ErrorCode::NotANumber,
        ErrorCode::Overflow,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownEnvironment,
        ErrorCode::FrameTooLarge,
        ErrorCode::BadFrame,
        ErrorCode::MemoryLimit,
        ErrorCode::Busy,
        ErrorCode::Internal,
    ];

    /// The snake_case name of SPEC.md (`invalid_key`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::KeyTooLong => "key_too_long",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::InvalidTtl => "invalid_ttl",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::LimitOutOfRange => "limit_out_of_range",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::OverwriteRequired => "overwrite_required",
            ErrorCode::NotANumber => "not_a_number",
            ErrorCode::Overflow => "overflow",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownEnvironment => "unknown_environment",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::MemoryLimit => "memory_limit",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code with this wire number, if there is one.
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u16 == n)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_are_unique() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as u16, i as u16 + 1);
            assert_eq!(ErrorCode::from_u16(*code as u16), Some(*code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(18), None);
    }

    #[test]
    fn names_are_snake_case_and_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
