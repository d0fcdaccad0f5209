//! Why a frame was refused.

use crate::{Error, ErrorCode};

/// Why a frame was refused. [`From<FrameError> for Error`](Error) maps it to
/// `frame_too_large` or `bad_frame`, keeping the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header declares a payload longer than [`FRAME_PAYLOAD_MAX`](crate::limits::FRAME_PAYLOAD_MAX).
    #[error("frame declares {declared} bytes, limit {limit}")]
    TooLarge {
        /// The payload length the header declares (or an encoder would have).
        declared: u64,
        /// [`FRAME_PAYLOAD_MAX`](crate::limits::FRAME_PAYLOAD_MAX).
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
