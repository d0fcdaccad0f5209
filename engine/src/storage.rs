//! The one door through which the WAL and snapshots touch files: [`Storage`] (a flat
//! directory) and [`StorageFile`]. Production uses [`UringStorage`] (the shard thread's
//! io_uring, so a shard awaits its fsync while its other tasks run); tests use
//! [`SimDisk`], which can cut the power and fail any operation.
//!
//! # What `SimDisk` models (and why)
//! - Power cut: every byte written since the file's last successful `sync_data` is lost,
//!   except a random prefix of the last unsynced write (a torn write); directory changes
//!   (creates, renames, removes) since the last `sync_dir` are undone.
//! - Faults: the Nth operation (counting writes, syncs, renames, removes, creates) fails
//!   with EIO or ENOSPC, once or from then on.
//! - fsyncgate: after a failed `sync_data`, Linux may mark the dirty pages clean without
//!   writing them; a later `sync_data` then succeeds and persists nothing. The simulated
//!   disk does the same, so a writer that retries a failed fsync "successfully" is caught
//!   losing data.
//! - Tasks beside the caller ([`Storage::spawn`], the WAL's segment preparation) run to
//!   their end as soon as they are spawned, their operations counted like any other, so
//!   a test that fails the Nth operation or cuts the power lands inside them too.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A flat directory of files. Clones refer to the same directory (and a task it
/// [spawns](Storage::spawn) holds one, hence `'static`).
#[expect(
    async_fn_in_trait,
    reason = "used inside the engine, on one executor: its futures need no Send bound"
)]
pub trait Storage: Clone + 'static {
    type File: StorageFile;
    /// Creates an empty file; fails if `name` exists.
    async fn create(&self, name: &str) -> io::Result<Self::File>;
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    /// The names of the files, sorted.
    async fn list(&self) -> io::Result<Vec<String>>;
    /// Replaces `to` with `from`, atomically.
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the creates, renames and removes so far durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// Runs `task` beside the caller, which goes on without waiting for it: the WAL
    /// prepares its next segment this way while the shard serves. The ring's tasks run
    /// on the shard's executor (their I/O on the ring); the simulated disk runs `task`
    /// to its end at once, since none of its operations ever waits.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static);
}

/// One open file.
#[expect(
    async_fn_in_trait,
    reason = "used inside the engine, on one executor: its futures need no Send bound"
)]
pub trait StorageFile {
    /// Writes all of `bytes` at `pos`.
    async fn write_at(&self, pos: u64, bytes: Vec<u8>) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    async fn size(&self) -> io::Result<u64>;
    /// Makes the file's data durable (`fdatasync`).
    async fn sync_data(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
}

// ---- production: the ring ------------------------------------------------------------

/// Files in a real directory, through the thread's io_uring (`ampd-rt`). Usable only
/// on a runtime thread (a shard's).
#[derive(Debug, Clone)]
pub struct UringStorage {
    dir: PathBuf,
}

impl UringStorage {
    pub fn new(dir: impl Into<PathBuf>) -> UringStorage {
        UringStorage { dir: dir.into() }
    }

    fn open_options(&self) -> std::fs::OpenOptions {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true);
        options
    }
}

/// A file of [`UringStorage`].
///
/// Writes of up to [`WRITE_INLINE_MAX`] bytes (every WAL batch of ordinary items) are
/// plain `pwrite`s on the shard's thread: a copy into the page cache costs a few
/// microseconds, while the same write through io_uring on ext4 is handed to a kernel
/// worker thread (buffered writes cannot complete inline there), which costs two
/// context switches and a wake-up per batch. Measured in ARCHITECTURE.md ("WAL writes").
/// Larger writes (snapshot chunks), reads and every `fdatasync` go through the ring, so
/// the shard serves its connections while the disk works.
#[derive(Debug)]
pub struct UringFile {
    file: ampd_rt::fs::File,
}

/// The largest write done inline (see [`UringFile`]).
pub const WRITE_INLINE_MAX: usize = 256 * 1024;

impl Storage for UringStorage {
    type File = UringFile;

    async fn create(&self, name: &str) -> io::Result<UringFile> {
        // Opening is a quick metadata call, done at rotation and snapshot time only.
        let file = self
            .open_options()
            .create_new(true)
            .open(self.dir.join(name))?;
        Ok(UringFile { file: file.into() })
    }

    async fn open(&self, name: &str) -> io::Result<UringFile> {
        let file = self.open_options().open(self.dir.join(name))?;
        Ok(UringFile { file: file.into() })
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        // Only at recovery: a blocking readdir is fine there.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    async fn sync_dir(&self) -> io::Result<()> {
        ampd_rt::fs::sync_dir(&self.dir).await
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        ampd_rt::spawn(task).detach();
    }
}

impl StorageFile for UringFile {
    async fn write_at(&self, pos: u64, bytes: Vec<u8>) -> io::Result<()> {
        if bytes.len() <= WRITE_INLINE_MAX {
            use std::os::unix::fs::FileExt;
            return self.file.std().write_all_at(&bytes, pos);
        }
        self.file.write_all_at(pos, bytes).await
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file.read_at(pos, len).await
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.file.std().metadata()?.len())
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data().await
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.std().set_len(len)
    }
}

// ---- tests: the simulated disk ------------------------------------------------------

/// Which error a planned fault raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// EIO.
    Io,
    /// ENOSPC.
    NoSpace,
}

/// A planned failure: the operation numbered `at` (0-based, counting every write,
/// sync, create, rename and remove) fails, and with `persistent` so does every one after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub at: u64,
    pub kind: FaultKind,
    pub persistent: bool,
}

/// An in-memory disk with power cuts and injected faults. Clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    /// File contents by inode.
    inodes: BTreeMap<u64, SimInode>,
    next_inode: u64,
    /// The directory as the running system sees it, and as a power cut would leave it.
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    ops: u64,
    fault: Option<Fault>,
}

#[derive(Debug, Default, Clone)]
struct SimInode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// The bytes of `current` that may differ from `durable` (a range covering every
    /// write and truncation since they were last made equal), so that a sync copies
    /// what changed, not a whole preallocated segment.
    changed: Option<(usize, usize)>,
    /// Whether a `sync_data` would persist anything (false after a failed one: the
    /// pages were marked clean, fsyncgate).
    dirty: bool,
    /// The last write since the last sync: (position, bytes), for a torn prefix.
    last_write: Option<(u64, Vec<u8>)>,
}

/// A file of a [`SimDisk`].
#[derive(Debug, Clone)]
pub struct SimFile {
    disk: SimDisk,
    inode: u64,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans a fault (replacing any earlier plan); operations count from now.
    pub fn plan_fault(&self, fault: Fault) {
        let mut s = self.state();
        s.fault = Some(Fault {
            at: s.ops + fault.at,
            ..fault
        });
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// Cuts the power: what was not synced is lost, but for a torn prefix of each file's
    /// last unsynced write, `torn(len)` bytes long (pass `|_| 0` for none). Faults are
    /// cleared, as after a reboot.
    pub fn power_cut(&self, mut torn: impl FnMut(usize) -> usize) {
        let mut s = self.state();
        s.names = s.durable_names.clone();
        let live: Vec<u64> = s.names.values().copied().collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        for inode in s.inodes.values_mut() {
            let mut content = inode.durable.clone();
            if let Some((pos, bytes)) = inode.last_write.take() {
                let keep = torn(bytes.len()).min(bytes.len());
                write_into(&mut content, pos, &bytes[..keep]);
            }
            inode.current = content.clone();
            inode.durable = content;
            inode.changed = None;
            inode.dirty = false;
        }
        s.fault = None;
    }

    /// Counts an operation and raises the planned fault if it is due.
    fn op(&self) -> io::Result<()> {
        let mut s = self.state();
        let n = s.ops;
        s.ops += 1;
        match s.fault {
            Some(f) if n == f.at || (f.persistent && n > f.at) => Err(match f.kind {
                FaultKind::Io => io::Error::from_raw_os_error(5),
                FaultKind::NoSpace => io::Error::from_raw_os_error(28),
            }),
            _ => Ok(()),
        }
    }

    fn inode_of(&self, name: &str) -> io::Result<u64> {
        self.state()
            .names
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} not found")))
    }
}

fn write_into(content: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = pos as usize;
    if content.len() < pos + bytes.len() {
        content.resize(pos + bytes.len(), 0);
    }
    content[pos..pos + bytes.len()].copy_from_slice(bytes);
}

impl Storage for SimDisk {
    type File = SimFile;

    async fn create(&self, name: &str) -> io::Result<SimFile> {
        self.op()?;
        let mut s = self.state();
        if s.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        let inode = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(inode, SimInode::default());
        s.names.insert(name.to_owned(), inode);
        Ok(SimFile {
            disk: self.clone(),
            inode,
        })
    }

    async fn open(&self, name: &str) -> io::Result<SimFile> {
        Ok(SimFile {
            disk: self.clone(),
            inode: self.inode_of(name)?,
        })
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state().names.keys().cloned().collect())
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.op()?;
        let inode = self.inode_of(from)?;
        let mut s = self.state();
        s.names.remove(from);
        s.names.insert(to.to_owned(), inode);
        Ok(())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.op()?;
        self.inode_of(name)?;
        self.state().names.remove(name);
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.op()?;
        let mut s = self.state();
        s.durable_names = s.names.clone();
        Ok(())
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        let mut task = std::pin::pin!(task);
        let polled = task
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        assert!(
            polled.is_ready(),
            "a task on the simulated disk waited: only its own operations may be awaited"
        );
    }
}

impl SimInode {
    /// Notes that `current[from..to]` may now differ from `durable`.
    fn change(&mut self, from: usize, to: usize) {
        self.changed = Some(match self.changed {
            Some((lo, hi)) => (lo.min(from), hi.max(to)),
            None => (from, to),
        });
        self.dirty = true;
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimInode) -> T) -> io::Result<T> {
        let mut s = self.disk.state();
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file is gone"))?;
        Ok(f(inode))
    }
}

impl StorageFile for SimFile {
    async fn write_at(&self, pos: u64, bytes: Vec<u8>) -> io::Result<()> {
        self.disk.op()?;
        self.with(|f| {
            // A write past the end fills the gap with zeros: that changes too.
            let from = f.current.len().min(pos as usize);
            f.change(from, pos as usize + bytes.len());
            write_into(&mut f.current, pos, &bytes);
            f.last_write = Some((pos, bytes));
        })
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.with(|f| {
            let start = (pos as usize).min(f.current.len());
            let end = start.saturating_add(len).min(f.current.len());
            f.current[start..end].to_vec()
        })
    }

    async fn size(&self) -> io::Result<u64> {
        self.with(|f| f.current.len() as u64)
    }

    async fn sync_data(&self) -> io::Result<()> {
        if let Err(e) = self.disk.op() {
            // fsyncgate: the kernel may drop the dirty state without writing.
            self.with(|f| f.dirty = false)?;
            return Err(e);
        }
        self.with(|f| {
            if f.dirty {
                // The same as `durable = current.clone()`, copying only what changed.
                f.durable.resize(f.current.len(), 0);
                if let Some((lo, hi)) = f.changed.take() {
                    let hi = hi.min(f.current.len());
                    if lo < hi {
                        f.durable[lo..hi].copy_from_slice(&f.current[lo..hi]);
                    }
                }
            }
            f.dirty = false;
            f.last_write = None;
        })
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.op()?;
        self.with(|f| {
            let old_len = f.current.len();
            f.current.truncate(len as usize);
            f.change(f.current.len(), old_len);
            f.last_write = None;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn unsynced_bytes_and_directory_entries_die_in_a_power_cut() {
        let disk = SimDisk::new();
        block_on(async {
            let f = disk.create("a").await.unwrap();
            disk.sync_dir().await.unwrap();
            f.write_at(0, b"hello ".to_vec()).await.unwrap();
            f.sync_data().await.unwrap();
            f.write_at(6, b"world".to_vec()).await.unwrap();
            let g = disk.create("b").await.unwrap();
            g.write_at(0, b"never listed".to_vec()).await.unwrap();
            g.sync_data().await.unwrap();
        });
        disk.power_cut(|_| 0);
        block_on(async {
            assert_eq!(disk.list().await.unwrap(), ["a"]);
            let f = disk.open("a").await.unwrap();
            assert_eq!(f.read_at(0, 100).await.unwrap(), b"hello ");
        });
    }

    #[test]
    fn a_torn_write_keeps_a_prefix() {
        let disk = SimDisk::new();
        block_on(async {
            let f = disk.create("a").await.unwrap();
            disk.sync_dir().await.unwrap();
            f.write_at(0, b"abcdef".to_vec()).await.unwrap();
        });
        disk.power_cut(|len| len / 2);
        let f = block_on(disk.open("a")).unwrap();
        assert_eq!(block_on(f.read_at(0, 100)).unwrap(), b"abc");
    }

    #[test]
    fn a_retried_fsync_after_a_failure_persists_nothing() {
        let disk = SimDisk::new();
        block_on(async {
            let f = disk.create("wal").await.unwrap();
            disk.sync_dir().await.unwrap();
            f.write_at(0, b"acked?".to_vec()).await.unwrap();
            disk.plan_fault(Fault {
                at: 0,
                kind: FaultKind::Io,
                persistent: false,
            });
            let e = f.sync_data().await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(5));
            // The retry "works"...
            f.sync_data().await.unwrap();
        });
        // ...and the data is gone all the same.
        disk.power_cut(|_| 0);
        let f = block_on(disk.open("wal")).unwrap();
        assert_eq!(block_on(f.read_at(0, 100)).unwrap(), b"");
    }

    #[test]
    fn faults_hit_the_nth_operation_once_or_for_good() {
        let disk = SimDisk::new();
        let f = block_on(disk.create("a")).unwrap();
        disk.plan_fault(Fault {
            at: 1,
            kind: FaultKind::NoSpace,
            persistent: false,
        });
        assert!(block_on(f.write_at(0, vec![1])).is_ok());
        assert_eq!(
            block_on(f.write_at(1, vec![2])).unwrap_err().raw_os_error(),
            Some(28)
        );
        assert!(block_on(f.write_at(1, vec![3])).is_ok());
        disk.plan_fault(Fault {
            at: 0,
            kind: FaultKind::Io,
            persistent: true,
        });
        for _ in 0..3 {
            assert!(block_on(disk.rename("a", "b")).is_err());
        }
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let disk = SimDisk::new();
        block_on(async {
            let f = disk.create("snap.tmp").await.unwrap();
            f.write_at(0, b"snapshot".to_vec()).await.unwrap();
            f.sync_data().await.unwrap();
            disk.sync_dir().await.unwrap();
            disk.rename("snap.tmp", "snap").await.unwrap();
        });
        disk.power_cut(|_| 0);
        assert_eq!(block_on(disk.list()).unwrap(), ["snap.tmp"]);
        block_on(async {
            disk.rename("snap.tmp", "snap").await.unwrap();
            disk.sync_dir().await.unwrap();
        });
        disk.power_cut(|_| 0);
        assert_eq!(block_on(disk.list()).unwrap(), ["snap"]);
    }

    #[test]
    fn a_sync_persists_the_file_as_it_is_whatever_changed() {
        let disk = SimDisk::new();
        block_on(async {
            let f = disk.create("a").await.unwrap();
            disk.sync_dir().await.unwrap();
            f.write_at(0, vec![1; 100]).await.unwrap();
            f.sync_data().await.unwrap();
            f.truncate(50).await.unwrap();
            // Past the end: the gap reads as zeros.
            f.write_at(60, vec![2; 10]).await.unwrap();
            f.write_at(10, vec![3; 5]).await.unwrap();
            f.sync_data().await.unwrap();
        });
        disk.power_cut(|_| 0);
        let mut want = vec![1; 50];
        want[10..15].fill(3);
        want.resize(60, 0);
        want.extend([2; 10]);
        let f = block_on(disk.open("a")).unwrap();
        assert_eq!(block_on(f.read_at(0, 100)).unwrap(), want);
        // Changes before a failed sync are persisted by the next sync that has
        // something to persist (the model above, fsyncgate aside).
        block_on(async {
            f.write_at(0, vec![4; 5]).await.unwrap();
            disk.plan_fault(Fault {
                at: 0,
                kind: FaultKind::Io,
                persistent: false,
            });
            f.sync_data().await.unwrap_err();
            f.write_at(65, vec![5; 10]).await.unwrap();
            f.sync_data().await.unwrap();
        });
        disk.power_cut(|_| 0);
        want[..5].fill(4);
        want.resize(65, 0);
        want.extend([5; 10]);
        assert_eq!(block_on(f.read_at(0, 100)).unwrap(), want);
    }

    #[test]
    fn a_task_spawned_on_the_simulated_disk_runs_at_once() {
        let disk = SimDisk::new();
        let d = disk.clone();
        disk.spawn(async move {
            let f = d.create("spare").await.unwrap();
            f.write_at(0, vec![0; 8]).await.unwrap();
        });
        assert_eq!(block_on(disk.list()).unwrap(), ["spare"]);
        assert_eq!(disk.ops(), 2);
    }

    #[test]
    fn uring_storage_writes_syncs_renames_and_reads() {
        let dir = std::env::temp_dir().join(format!("ampd-storage-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.clone();
        let got = ampd_rt::thread::Builder::new()
            .spawn(move || async move {
                let s = UringStorage::new(&d);
                let f = s.create("seg.tmp").await.unwrap();
                f.write_at(0, b"abc".to_vec()).await.unwrap();
                f.write_at(3, b"def".to_vec()).await.unwrap();
                f.sync_data().await.unwrap();
                assert!(
                    s.create("seg.tmp").await.is_err(),
                    "create refuses to clobber"
                );
                s.rename("seg.tmp", "seg").await.unwrap();
                s.sync_dir().await.unwrap();
                let f = s.open("seg").await.unwrap();
                f.truncate(5).await.unwrap();
                let bytes = f.read_at(0, 100).await.unwrap();
                let names = s.list().await.unwrap();
                s.remove("seg").await.unwrap();
                (bytes, names, s.list().await.unwrap())
            })
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.0, b"abcde");
        assert_eq!(got.1, ["seg"]);
        assert!(got.2.is_empty());
    }
}
