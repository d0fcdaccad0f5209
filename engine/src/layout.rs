//! The data folder, laid out in one place: every path the engine, the server, the REPL
//! and `ampd repair` use is built here.
//!
//! ```text
//! ROOT/                      the server's --data-dir (also `ampd repl`'s and `ampd repair`'s)
//!   env/NAME/                one environment: one database, the folder `Db::open` is given
//!     LOCK                   held with flock while a process has the database open
//!     shards                 the shard count the database was made with ("4\n")
//!     shard-0000/            shard 0's storage (flat): WAL segments and snapshots
//!       00000000000000000000.wal
//!       snap-00000000000000001234.snap
//!     shard-0001/
//!     subscriptions/         durable event subscriptions: NAME.json, filters and positions
//! ```
//!
//! Inside a shard folder, the file names belong to [`crate::wal::log`] (segments) and
//! [`crate::snapshot`]; both see the folder through [`crate::storage::Storage`].
//!
//! The shard count is recorded because routing depends on it: under another count an
//! item would be looked for on another shard's log. A shard's id is written into every
//! WAL header as a `u16`, and [`SHARDS_MAX`] keeps every id within it.

use crate::error::OpenError;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The most shards a database may have. Each is a thread with its own io_uring ring
/// (and usually a core of its own), so far fewer fit on any machine; its id must fit
/// the `u16` of the WAL headers.
pub const SHARDS_MAX: usize = 1024;
const _: () = assert!(SHARDS_MAX - 1 <= u16::MAX as usize);

/// The folder below the root that holds one folder per environment.
const ENV_FOLDER: &str = "env";
/// The file a process holds locked while it has the database open.
const LOCK_FILE: &str = "LOCK";
/// The file that records a database's shard count.
const SHARDS_FILE: &str = "shards";
/// The folder of a database's durable subscriptions.
const SUBSCRIPTIONS_FOLDER: &str = "subscriptions";

/// The database folder of environment `name` under the server's data folder `root`.
pub fn env_dir(root: &Path, name: &str) -> PathBuf {
    root.join(ENV_FOLDER).join(name)
}

/// The database folders under the server's data folder `root`: one per environment,
/// sorted by name. Fails when `root` has no environments folder.
pub fn env_dirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(ENV_FOLDER))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The folder of shard `id` in database folder `db`.
pub(crate) fn shard_dir(db: &Path, id: usize) -> PathBuf {
    db.join(shard_folder(id))
}

/// The folder of database `db`'s durable subscriptions.
pub(crate) fn subscriptions_dir(db: &Path) -> PathBuf {
    db.join(SUBSCRIPTIONS_FOLDER)
}

/// The name of shard `id`'s folder.
pub(crate) fn shard_folder(id: usize) -> String {
    format!("shard-{id:04}")
}

/// The id shard `index` carries in its WAL and snapshot headers. `Db::open` refuses
/// more than [`SHARDS_MAX`] shards before any exists, so a larger index is a bug.
pub(crate) fn disk_id(index: usize) -> u16 {
    assert!(index < SHARDS_MAX, "shard {index} is past SHARDS_MAX");
    index as u16
}

/// A database folder opened for use: locked for as long as this lives.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The folder's absolute path (shard folders stay right whatever the current directory does later).
    pub dir: PathBuf,
    _lock: File,
}

/// The shard count recorded in database folder `dir`; `None` when none is (a folder
/// never opened).
pub(crate) fn recorded_shards(dir: &Path) -> Result<Option<usize>, OpenError> {
    let file = dir.join(SHARDS_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse().map(Some).map_err(|e| OpenError::Io {
            op: "read the shard count",
            path: file,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OpenError::io("read the shard count", &file)(e)),
    }
}

/// Makes database folder `dir` ready for `shards` shards: creates it, takes its lock
/// (so two processes never open one database), checks or records the shard count, and
/// creates the shard folders.
pub(crate) fn open(dir: &Path, shards: usize) -> Result<Opened, OpenError> {
    std::fs::create_dir_all(dir).map_err(OpenError::io("create", dir))?;
    let lock_file = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(OpenError::io("open", &lock_file))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => OpenError::Locked {
            dir: dir.to_owned(),
        },
        std::fs::TryLockError::Error(e) => OpenError::io("lock", &lock_file)(e),
    })?;
    match recorded_shards(dir)? {
        Some(recorded) if recorded != shards => {
            return Err(OpenError::ShardCount {
                dir: dir.to_owned(),
                recorded,
                asked: shards,
            });
        }
        Some(_) => {}
        None => {
            record_shards(dir, shards).map_err(OpenError::io("record the shard count in", dir))?
        }
    }
    for id in 0..shards {
        let shard = shard_dir(dir, id);
        std::fs::create_dir_all(&shard).map_err(OpenError::io("create", &shard))?;
    }
    let absolute = std::fs::canonicalize(dir).map_err(OpenError::io("resolve", dir))?;
    Ok(Opened {
        dir: absolute,
        _lock: lock,
    })
}

/// Writes the shard count durably.
fn record_shards(dir: &Path, shards: usize) -> io::Result<()> {
    write_durably(dir, SHARDS_FILE, format!("{shards}\n").as_bytes())
}

/// Replaces file `name` in `dir` with `bytes`, whole or not at all, durably: a temp
/// file, synced, renamed over it, the folder synced.
pub(crate) fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let root = Path::new("/data");
        assert_eq!(env_dir(root, "dev"), Path::new("/data/env/dev"));
        assert_eq!(
            shard_dir(&env_dir(root, "dev"), 7),
            Path::new("/data/env/dev/shard-0007")
        );
        assert_eq!(disk_id(SHARDS_MAX - 1), 1023);
    }
}
