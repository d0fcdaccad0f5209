//! Why [`crate::Db::open`] (or [`crate::Db::repair`]) could not open a database, as a
//! type an embedding application can match on: another process holds it, it was made
//! with another shard count, its log is corrupt (file and offset), an I/O operation
//! failed, or a shard's executor would not start.
//!
//! The requests of a running database fail with [`ampd_wire::Error`] (the stable codes
//! of SPEC.md); an `OpenError` converts into one (`internal`, with this message) for a
//! caller that reports both alike.

use crate::wal::log::WalError;
use crate::wal::record::FormatError;
use std::io;
use std::path::{Path, PathBuf};

/// Why a database folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has the folder open (it holds the lock file).
    #[error("data directory {}: another process has it open", dir.display())]
    Locked { dir: PathBuf },
    /// The folder was made with `recorded` shards; routing depends on the count, so it
    /// opens with no other.
    #[error(
        "data directory {} was made with {recorded} shards, asked to open it with {asked}",
        dir.display()
    )]
    ShardCount {
        dir: PathBuf,
        recorded: usize,
        asked: usize,
    },
    /// More shards asked for than [`crate::layout::SHARDS_MAX`].
    #[error("{asked} shards asked for, limit {max}")]
    TooManyShards { asked: usize, max: usize },
    /// A WAL segment or snapshot is damaged before its end (or in a way a crash cannot
    /// leave). `ampd repair` (`Db::repair`) cuts the log there.
    #[error("{} is corrupt at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: FormatError,
    },
    /// A file operation failed.
    #[error("{op} of {} failed: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A shard's thread (its io_uring ring, its CPU binding) did not start.
    #[error(
        "could not start shard {shard}: {reason} (a shard needs io_uring with \
         DEFER_TASKRUN and, when pinned, its core)"
    )]
    Executor { shard: usize, reason: String },
}

impl OpenError {
    /// The error of a log or snapshot in shard folder `dir` (whose file names are
    /// relative to it).
    pub(crate) fn from_wal(dir: &Path, error: WalError) -> OpenError {
        match error {
            WalError::Io { op, file, source } => OpenError::Io {
                op,
                path: dir.join(file),
                source,
            },
            WalError::Corrupt {
                file,
                offset,
                reason,
            } => OpenError::Corrupt {
                file: dir.join(file),
                offset,
                reason,
            },
            // Only appends poison a log, and opening appends nothing.
            WalError::Poisoned => OpenError::Io {
                op: "open",
                path: dir.to_owned(),
                source: io::Error::other(WalError::Poisoned.to_string()),
            },
        }
    }

    /// An I/O error on `path`.
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OpenError {
        let path = path.to_owned();
        move |source| OpenError::Io { op, path, source }
    }
}

impl From<OpenError> for ampd_wire::Error {
    fn from(e: OpenError) -> ampd_wire::Error {
        ampd_wire::Error::new(ampd_wire::ErrorCode::Internal, e.to_string())
    }
}
