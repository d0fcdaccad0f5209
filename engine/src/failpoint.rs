//! Named fail points at each durability step, so a test can fail exactly that step.
//!
//! Built on the `fail` crate. Without the `failpoints` feature every check compiles to
//! nothing; with it, a test configures a point (`fail::cfg(WAL_BEFORE_SYNC, "return")`)
//! and the step fails with an I/O error that names the point, taking the same path a
//! real failure of that step takes.
//!
//! | point | where it fails |
//! | --- | --- |
//! | [`WAL_BEFORE_WRITE`] | before a batch's records are written |
//! | [`WAL_BEFORE_SYNC`] | after the write, before its `sync_data` |
//! | [`WAL_BEFORE_ACK`] | after the sync, before the batch is acknowledged |
//! | [`WAL_ROTATE`] | when a full segment is closed and the next one started |
//! | [`WAL_REMOVE_SEGMENT`] | before a segment covered by a snapshot is removed |
//! | [`SNAPSHOT_WRITE_TMP`] | before a snapshot's temp file is written |
//! | [`SNAPSHOT_RENAME`] | before the synced temp file is renamed into place |
//! | [`SNAPSHOT_SYNC_DIR`] | before the directory holding the new name is synced |

use std::io;

pub const WAL_BEFORE_WRITE: &str = "wal::before_write";
pub const WAL_BEFORE_SYNC: &str = "wal::before_sync";
pub const WAL_BEFORE_ACK: &str = "wal::before_ack";
pub const WAL_ROTATE: &str = "wal::rotate";
pub const WAL_REMOVE_SEGMENT: &str = "wal::remove_segment";
pub const SNAPSHOT_WRITE_TMP: &str = "snapshot::write_tmp";
pub const SNAPSHOT_RENAME: &str = "snapshot::rename";
pub const SNAPSHOT_SYNC_DIR: &str = "snapshot::sync_dir";

/// Every point, for tests that fire each one.
pub const ALL: [&str; 8] = [
    WAL_BEFORE_WRITE,
    WAL_BEFORE_SYNC,
    WAL_BEFORE_ACK,
    WAL_ROTATE,
    WAL_REMOVE_SEGMENT,
    SNAPSHOT_WRITE_TMP,
    SNAPSHOT_RENAME,
    SNAPSHOT_SYNC_DIR,
];

/// `Err` when the point `name` is configured to fire; `Ok` otherwise (always, without
/// the `failpoints` feature).
#[inline]
#[cfg_attr(
    not(feature = "failpoints"),
    expect(unused_variables, reason = "without the feature no point is checked")
)]
pub(crate) fn check(name: &'static str) -> io::Result<()> {
    fail::fail_point!(name, |_| Err(io::Error::other(format!(
        "fail point {name} fired"
    ))));
    Ok(())
}
