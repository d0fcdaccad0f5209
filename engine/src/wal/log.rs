//! One shard's log: segment files `{segment:020}.wal` in the shard's [`Storage`],
//! appended in batches (one write, then one `sync_data`, per batch: group commit), read
//! back in full when the shard opens.
//!
//! # Preallocated segments
//! A segment is made at its full size ([`LogConfig::segment_bytes_max`]) before it is
//! used, filled with zeros by real writes and synced, so that an append overwrites
//! blocks that are already written instead of extending the file: its `fdatasync` then
//! has no file size or extent to journal (measured on this machine: 48–59 µs against
//! 88–116 µs after an appending write). `fallocate` alone would not do: it leaves
//! *unwritten* extents, and the first write into one still journals its conversion.
//!
//! The next segment (the spare) is prepared by a task beside the shard
//! ([`Storage::spawn`]): it fills [`SPARE_PART_NAME`] with zeros in
//! [`ZERO_CHUNK_BYTES`] writes, syncs it and renames it [`SPARE_NAME`]. A rotation takes
//! the ready spare at once (it waits only when the spare is still being filled, and
//! prepares one itself when there is none): it writes the segment header into the
//! spare, syncs it, renames it `{segment:020}.wal` and syncs the directory. Neither spare
//! name is a segment name, so recovery never reads a spare as part of the log; a
//! half-filled `.part` left by a crash is removed at open, a whole spare is kept for the
//! next rotation. A crash between the header write and the rename leaves a spare with a
//! header, which the next rotation overwrites: the spare's bytes after the header are
//! never written while it is a spare.
//!
//! The log's end in a segment is therefore not the file's end: it is just after the
//! last whole record, followed by zeros (free space). Segments written before
//! preallocation, and a segment that a batch larger than a whole segment made grow, end
//! at their last record; both are read and appended to the same way.
//!
//! # Reading: free space, torn tail or corruption (`TolerateCorruptTail` only at the tail)
//! Each segment is read by the one segment reader ([`segment::read`]), which checks
//! records in order with [`record::decode_record`]. Where it stops:
//! - if every byte from there to the end of the file is zero ([`segment::is_free`]),
//!   that is free space: the segment's log ends there, nothing is cut or reported;
//! - else, in the last segment, with no whole valid record of this shard and segment
//!   anywhere after it, it is a torn tail (a crash in the middle of the last write): the
//!   segment is cut at the last whole record and the log says how many bytes went;
//! - anywhere else it is corruption: opening fails with the file and the byte offset,
//!   and nothing is skipped. [`Log::open_repairing`] (`ampd repair`, `Db::repair`) cuts
//!   there when an operator asks for it.
//!
//! A non-zero byte in the free space after the last record is thus a torn tail in the
//! last segment and corruption in any other, as any other bytes after it would be.
//!
//! A cut keeps a preallocated segment (one at least `segment_bytes_max` long) at its
//! size: the bytes from the cut to its last non-zero byte are zeroed again, and only
//! they are counted as cut. A shorter segment is truncated at the cut, as before
//! preallocation, and every byte after the cut is counted.
//!
//! # Writing: no retry after a failed write or sync
//! A failed `write_at` or `sync_data` poisons the log: the batch is reported failed and
//! every later append fails too, because after a failed fsync Linux may have marked the
//! pages clean without writing them, so a retry could "succeed" and lose data. The shard
//! recovers from what is on disk. A failed preparation of the spare poisons nothing (no
//! record is in it): the spare is dropped and the next rotation prepares its own, and
//! only if that fails does the rotation, and so the batch, fail.

use super::record::{
    self, Entry, EntryRef, FormatError, Position, SegmentHeader, SEGMENT_HEADER_LEN,
};
use super::segment::{self, Expected, Fault, Numbering};
use crate::failpoint;
use crate::storage::{Storage, StorageFile};
use futures::channel::oneshot;
use std::io;
use std::path::PathBuf;

/// The next segment's file once it is zero-filled and synced. Not a segment name: it
/// becomes one only when a rotation has written a header into it.
pub const SPARE_NAME: &str = "wal.spare";
/// The next segment's file while it is being zero-filled; one left by a crash is
/// removed at open.
pub const SPARE_PART_NAME: &str = "wal.spare.part";
/// Bytes of zeros per write when a segment is prepared (or a cut zeroed): above
/// [`crate::storage::WRITE_INLINE_MAX`], so that on the ring each write is a ring
/// request and the shard's executor serves its connections meanwhile.
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(ZERO_CHUNK_BYTES > crate::storage::WRITE_INLINE_MAX);

/// Limits of a log.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// The size a segment is made at, zero-filled, before it is used. A segment is
    /// closed and the next one started when it is full, or when the next batch would
    /// run past this size (a batch larger than this goes alone into a new segment,
    /// which grows to hold it).
    pub segment_bytes_max: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes_max: 64 << 20,
        }
    }
}

/// Why the log cannot go on.
#[derive(Debug)]
pub enum WalError {
    /// An I/O operation failed.
    Io {
        op: &'static str,
        file: String,
        source: io::Error,
    },
    /// A record or header before the end of the log is bad, or a segment does not
    /// continue the sequence numbers of the one before it (a missing segment).
    Corrupt {
        file: String,
        offset: u64,
        reason: FormatError,
    },
    /// An earlier write or sync failed; nothing more is accepted.
    Poisoned,
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { op, file, source } => write!(f, "WAL {op} of {file} failed: {source}"),
            WalError::Corrupt {
                file,
                offset,
                reason,
            } => write!(f, "WAL {file} is corrupt at byte {offset}: {reason}"),
            WalError::Poisoned => write!(
                f,
                "the WAL stopped taking writes after a failed write or sync"
            ),
        }
    }
}

impl std::error::Error for WalError {}

/// Wraps an I/O error with the operation and the file it failed on.
pub(crate) fn io_error<'a>(
    op: &'static str,
    file: &'a str,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        file: file.to_owned(),
        source,
    }
}

/// The file name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.wal")
}

fn segment_id(name: &str) -> Option<u64> {
    let id = name.strip_suffix(".wal")?;
    (id.len() == 20).then(|| id.parse().ok()).flatten()
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every record from the requested sequence number on, in order.
    pub entries: Vec<(u64, Entry)>,
    /// Bytes cut off a torn tail (0 when the log ended on a whole record).
    pub torn_bytes: u64,
}

/// What a repair cut off a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The file: a segment's name in the shard's storage (`Db::repair` makes it a path).
    pub file: PathBuf,
    /// Where the cut starts; 0 when the whole file was removed.
    pub offset: u64,
    /// How many bytes of the log went: up to the file's end, or, in a preallocated
    /// segment, up to its last non-zero byte (the zeros after it were free space).
    pub bytes: u64,
    pub reason: CutReason,
}

/// Why a repair cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutReason {
    /// The damage itself: what the reader found at the cut.
    Damaged(FormatError),
    /// A segment after the damage (its records would not follow the cut log's).
    AfterDamage,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.display();
        let (offset, bytes) = (self.offset, self.bytes);
        match (&self.reason, offset) {
            (CutReason::Damaged(why), 0) => write!(f, "{file}: removed, {bytes} bytes ({why})"),
            (CutReason::Damaged(why), _) => {
                write!(f, "{file}: cut at byte {offset}, {bytes} bytes ({why})")
            }
            (CutReason::AfterDamage, _) => {
                write!(f, "{file}: removed, {bytes} bytes (after the damage)")
            }
        }
    }
}

/// The next segment's file, as the log knows it.
enum Spare {
    /// None is ready or being prepared.
    Missing,
    /// A task is filling it; it answers once [`SPARE_NAME`] is ready, or why not.
    Preparing(oneshot::Receiver<Result<(), WalError>>),
    /// [`SPARE_NAME`] is zero-filled and synced.
    Ready,
}

/// One shard's log, open for appending.
pub struct Log<S: Storage> {
    storage: S,
    shard: u16,
    config: LogConfig,
    segment: u64,
    file: S::File,
    /// Where the next record goes in `file`: the end of the segment's log (zeros, the
    /// free space of a preallocated segment, may follow it).
    offset: u64,
    next_seq: u64,
    poisoned: bool,
    /// Every segment of the log: (id, first sequence number), oldest first.
    segments: Vec<(u64, u64)>,
    /// Bytes appended since the log was opened.
    appended_bytes: u64,
    /// Where each record's body is archived before it is framed (reused).
    scratch: rkyv::util::AlignedVec,
    spare: Spare,
}

impl<S: Storage> Log<S> {
    /// Opens (or starts) the log of `shard`, replays the records numbered `from_seq` and
    /// later, cuts a torn tail, and positions the log after the last whole record.
    /// Segments holding only records below `from_seq` (covered by the snapshot that
    /// `from_seq` comes from) are removed, and so is a half-prepared spare; a new log's
    /// first segment is prepared (zero-filled) before it is used.
    pub async fn open(
        storage: S,
        shard: u16,
        from_seq: u64,
        config: LogConfig,
    ) -> Result<(Log<S>, Replay), WalError> {
        Log::open_keeping(storage, shard, from_seq, from_seq, config).await
    }

    /// [`Log::open`], keeping (and replaying) the records from `keep_from` on too
    /// (`keep_from <= from_seq`: what durable subscriptions still need before a
    /// snapshot's start), where the log still holds them: records below `from_seq`
    /// that are gone are no error.
    pub async fn open_keeping(
        storage: S,
        shard: u16,
        from_seq: u64,
        keep_from: u64,
        config: LogConfig,
    ) -> Result<(Log<S>, Replay), WalError> {
        let keep_from = keep_from.min(from_seq);
        let names = storage.list().await.map_err(io_error("listing", "."))?;
        let mut spare = spare_at_open(&storage, &names, config).await?;
        let mut ids: Vec<u64> = names.iter().filter_map(|n| segment_id(n)).collect();
        // Segments wholly before `from_seq` are covered by a snapshot; one may be left
        // over when removing it failed or a crash came first. Skip (and remove) them:
        // segment `i` is covered when segment `i + 1` starts at or before `from_seq`.
        let mut first_seqs = Vec::with_capacity(ids.len());
        for id in &ids {
            let name = segment_name(*id);
            let file = storage.open(&name).await.map_err(io_error("open", &name))?;
            let head = file
                .read_at(0, SEGMENT_HEADER_LEN)
                .await
                .map_err(io_error("read", &name))?;
            // An unreadable header is reported by the full read below.
            first_seqs.push(
                SegmentHeader::decode(&head)
                    .ok()
                    .flatten()
                    .map(|h| h.first_seq),
            );
        }
        let covered = first_seqs
            .windows(2)
            .take_while(|w| matches!(w, [Some(_), Some(next)] if *next <= keep_from))
            .count();
        for id in ids.drain(..covered) {
            let name = segment_name(id);
            storage
                .remove(&name)
                .await
                .map_err(io_error("remove", &name))?;
        }
        if covered > 0 {
            storage
                .sync_dir()
                .await
                .map_err(io_error("directory sync", "."))?;
        }
        let reading = Reading {
            storage: &storage,
            shard,
            from_seq: keep_from,
            config,
        };
        let mut replay = Replay::default();
        let mut next_seq = None;
        let mut last = None;
        let mut segments = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let is_last = i + 1 == ids.len();
            let (file, end, first_seq, seq) =
                match reading.segment(*id, next_seq, is_last, &mut replay).await? {
                    Read::Whole {
                        file,
                        end,
                        first_seq,
                        next_seq,
                    } => (file, end, first_seq, next_seq),
                    // A segment whose header never became whole can only be the newest
                    // one (of a build before preallocation), torn while it was being
                    // started: start it again.
                    Read::TornHeader { bytes } => {
                        let seq = next_seq.unwrap_or(from_seq);
                        let (file, offset) =
                            start_segment(&storage, &mut spare, config, shard, *id, seq).await?;
                        replay.torn_bytes += bytes;
                        (file, offset, seq, seq)
                    }
                };
            if next_seq.is_none() && first_seq > from_seq {
                // The records from `from_seq` (a snapshot's start) to here are gone.
                return Err(gap(shard, *id, from_seq, first_seq));
            }
            segments.push((*id, first_seq));
            next_seq = Some(seq);
            last = Some((*id, file, end));
        }
        let (segment, file, offset) = match last {
            Some(last) => last,
            None => {
                segments.push((0, from_seq));
                let (file, offset) =
                    start_segment(&storage, &mut spare, config, shard, 0, from_seq).await?;
                (0, file, offset)
            }
        };
        let log = Log {
            storage,
            shard,
            config,
            segment,
            file,
            offset,
            next_seq: next_seq.unwrap_or(from_seq).max(from_seq),
            poisoned: false,
            segments,
            appended_bytes: 0,
            spare,
            scratch: rkyv::util::AlignedVec::new(),
        };
        Ok((log, replay))
    }

    /// Opens the log like [`Log::open`], but where it finds corruption (a bad record
    /// or header, or a sequence gap) it cuts the log there: the damaged segment is
    /// cut at the bad record (removed if its header or first record is bad) and
    /// every later segment is removed. Returns the log and what was cut. Only for an
    /// operator who asked for it: what follows the damage is lost.
    pub async fn open_repairing(
        storage: S,
        shard: u16,
        from_seq: u64,
        config: LogConfig,
    ) -> Result<(Log<S>, Replay, Vec<Cut>), WalError> {
        let mut cuts = Vec::new();
        loop {
            let (file, offset, reason) =
                match Log::open(storage.clone(), shard, from_seq, config).await {
                    Ok((log, replay)) => return Ok((log, replay, cuts)),
                    Err(WalError::Corrupt {
                        file,
                        offset,
                        reason,
                    }) => (file, offset, reason),
                    Err(other) => return Err(other),
                };
            // The errors of `open` only ever name segment files.
            let Some(id) = segment_id(&file) else {
                return Err(WalError::Corrupt {
                    file,
                    offset,
                    reason,
                });
            };
            let (f, bytes) = read_whole(&storage, &file).await?;
            let end = log_end(&bytes, config);
            // A segment with no whole valid record left goes whole.
            let offset = if offset <= SEGMENT_HEADER_LEN as u64 {
                drop(f);
                storage
                    .remove(&file)
                    .await
                    .map_err(io_error("remove", &file))?;
                0
            } else {
                cut(&f, &file, offset, end, bytes.len() as u64, config).await?;
                offset
            };
            cuts.push(Cut {
                file: PathBuf::from(&file),
                offset,
                bytes: end.saturating_sub(offset),
                reason: CutReason::Damaged(reason),
            });
            let names = storage.list().await.map_err(io_error("listing", "."))?;
            for later in names
                .iter()
                .filter(|n| segment_id(n).is_some_and(|l| l > id))
            {
                let (_, bytes) = read_whole(&storage, later).await?;
                storage
                    .remove(later)
                    .await
                    .map_err(io_error("remove", later))?;
                cuts.push(Cut {
                    file: PathBuf::from(later),
                    offset: 0,
                    bytes: log_end(&bytes, config),
                    reason: CutReason::AfterDamage,
                });
            }
            storage
                .sync_dir()
                .await
                .map_err(io_error("directory sync", &file))?;
        }
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the oldest record the log holds (or would hold).
    pub fn first_seq(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.next_seq, |(_, first)| *first)
    }

    /// Bytes of the segments that hold records below `to` but not only records below
    /// `from`: what keeping the log from `from` instead of `to` costs.
    pub fn bytes_between(&self, from: u64, to: u64) -> u64 {
        let covered = |seq: u64| {
            self.segments
                .windows(2)
                .take_while(|w| matches!(w, [_, (_, next)] if *next <= seq))
                .count() as u64
        };
        covered(to).saturating_sub(covered(from)) * self.config.segment_bytes_max
    }

    /// The segment being appended to, and where in it the next record goes.
    pub fn position(&self) -> (u64, u64) {
        (self.segment, self.offset)
    }

    /// Appends `entries` as one write and, with `sync`, one `sync_data`. Returns the
    /// sequence number of the last record. On `Err` none of them may be acknowledged,
    /// and the log takes nothing more.
    pub async fn append<'e, E>(&mut self, entries: &'e [E], sync: bool) -> Result<u64, WalError>
    where
        EntryRef<'e>: From<&'e E>,
    {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let result = self.append_inner(entries, sync).await;
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// The records of `entries`, numbered from the next sequence number, in the
    /// current segment.
    fn encode<'e, E>(&mut self, entries: &'e [E]) -> Vec<u8>
    where
        EntryRef<'e>: From<&'e E>,
    {
        let mut batch = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = Position {
                shard: self.shard,
                segment: self.segment,
                seq: self.next_seq + i as u64,
            };
            record::encode_record_ref(&entry.into(), at, &mut self.scratch, &mut batch);
        }
        batch
    }

    async fn append_inner<'e, E>(&mut self, entries: &'e [E], sync: bool) -> Result<u64, WalError>
    where
        EntryRef<'e>: From<&'e E>,
    {
        let mut batch = self.encode(entries);
        let size = self.config.segment_bytes_max;
        // A full segment is closed, and so is one the batch would run past the end of,
        // unless it holds no record yet: a batch larger than a whole segment goes into
        // a new one, which grows to hold it.
        let past_end = self.offset + batch.len() as u64 > size;
        if self.offset >= size || (past_end && self.offset > SEGMENT_HEADER_LEN as u64) {
            self.rotate().await?;
            // The records name their segment.
            batch = self.encode(entries);
        }
        let name = segment_name(self.segment);
        let len = batch.len() as u64;
        failpoint::check(failpoint::WAL_BEFORE_WRITE).map_err(io_error("write", &name))?;
        self.file
            .write_at(self.offset, batch)
            .await
            .map_err(io_error("write", &name))?;
        if sync {
            failpoint::check(failpoint::WAL_BEFORE_SYNC).map_err(io_error("sync", &name))?;
            self.file
                .sync_data()
                .await
                .map_err(io_error("sync", &name))?;
        }
        // Written and synced but not yet acknowledged: failing here leaves records on
        // disk that no caller was told about (allowed), and poisons the log like any
        // other failure, so memory never runs ahead of or behind the disk.
        failpoint::check(failpoint::WAL_BEFORE_ACK).map_err(io_error("acknowledge", &name))?;
        self.offset += len;
        self.appended_bytes += len;
        self.next_seq += entries.len() as u64;
        if matches!(self.spare, Spare::Missing) {
            self.prepare_spare();
        }
        Ok(self.next_seq - 1)
    }

    /// Starts preparing the next segment beside the shard.
    fn prepare_spare(&mut self) {
        let (done, answer) = oneshot::channel();
        let storage = self.storage.clone();
        let size = self.config.segment_bytes_max;
        self.storage.spawn(async move {
            let prepared = prepare_spare(&storage, size).await;
            if let Err(e) = &prepared {
                tracing::warn!("{e}: the next rotation prepares its segment itself");
            }
            // The log may be gone: the spare then waits for the next open.
            let _ = done.send(prepared);
        });
        self.spare = Spare::Preparing(answer);
    }

    /// Bytes appended since the log was opened.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes
    }

    /// The storage the log lives in (snapshots share it).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Removes the segments that hold only records numbered below `seq` (a durable
    /// snapshot covers them); the segment being appended to always stays. Returns how
    /// many were removed.
    pub async fn drop_segments_before(&mut self, seq: u64) -> Result<usize, WalError> {
        let covered = self
            .segments
            .windows(2)
            .take_while(|w| matches!(w, [_, (_, next)] if *next <= seq))
            .count();
        for _ in 0..covered {
            // Forget a segment only once it is removed: a failed removal is retried
            // after the next snapshot (and `open` skips covered leftovers anyway).
            let Some(&(oldest, _)) = self.segments.first() else {
                break;
            };
            let name = segment_name(oldest);
            failpoint::check(failpoint::WAL_REMOVE_SEGMENT).map_err(io_error("remove", &name))?;
            self.storage
                .remove(&name)
                .await
                .map_err(io_error("remove", &name))?;
            self.segments.remove(0);
        }
        if covered > 0 {
            self.storage
                .sync_dir()
                .await
                .map_err(io_error("directory sync", "."))?;
        }
        Ok(covered)
    }

    /// Forces what was appended without `sync` to disk.
    pub async fn sync(&mut self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let name = segment_name(self.segment);
        let result = self.file.sync_data().await.map_err(io_error("sync", &name));
        self.poisoned = result.is_err();
        result
    }

    async fn rotate(&mut self) -> Result<(), WalError> {
        let name = segment_name(self.segment);
        self.file
            .sync_data()
            .await
            .map_err(io_error("sync", &name))?;
        let segment = self.segment + 1;
        failpoint::check(failpoint::WAL_ROTATE).map_err(io_error("rotate", &name))?;
        let (file, offset) = start_segment(
            &self.storage,
            &mut self.spare,
            self.config,
            self.shard,
            segment,
            self.next_seq,
        )
        .await?;
        self.segment = segment;
        self.file = file;
        self.offset = offset;
        self.segments.push((segment, self.next_seq));
        Ok(())
    }
}

/// What a spare left by the last run is worth: a half-filled one (`.part`) is removed;
/// a whole one of this log's segment size is kept for the next rotation, one of another
/// size removed.
async fn spare_at_open<S: Storage>(
    storage: &S,
    names: &[String],
    config: LogConfig,
) -> Result<Spare, WalError> {
    let has = |name: &str| names.iter().any(|n| n == name);
    if has(SPARE_PART_NAME) {
        storage
            .remove(SPARE_PART_NAME)
            .await
            .map_err(io_error("remove", SPARE_PART_NAME))?;
    }
    if !has(SPARE_NAME) {
        return Ok(Spare::Missing);
    }
    let file = storage
        .open(SPARE_NAME)
        .await
        .map_err(io_error("open", SPARE_NAME))?;
    let size = file.size().await.map_err(io_error("stat", SPARE_NAME))?;
    if size == config.segment_bytes_max {
        return Ok(Spare::Ready);
    }
    drop(file);
    storage
        .remove(SPARE_NAME)
        .await
        .map_err(io_error("remove", SPARE_NAME))?;
    Ok(Spare::Missing)
}

/// Makes [`SPARE_NAME`]: `size` bytes of zeros, written (not only allocated: see the
/// module header) and synced under [`SPARE_PART_NAME`], then renamed.
async fn prepare_spare<S: Storage>(storage: &S, size: u64) -> Result<(), WalError> {
    let part = SPARE_PART_NAME;
    let file = match storage.create(part).await {
        // Left by a preparation that failed.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            storage
                .remove(part)
                .await
                .map_err(io_error("remove", part))?;
            storage.create(part).await
        }
        created => created,
    }
    .map_err(io_error("create", part))?;
    write_zeros(&file, part, 0, size).await?;
    file.sync_data().await.map_err(io_error("sync", part))?;
    storage
        .rename(part, SPARE_NAME)
        .await
        .map_err(io_error("rename", part))?;
    storage
        .sync_dir()
        .await
        .map_err(io_error("directory sync", SPARE_NAME))
}

/// Writes zeros over `from..to` of `file`, [`ZERO_CHUNK_BYTES`] at a time.
async fn write_zeros<F: StorageFile>(
    file: &F,
    name: &str,
    from: u64,
    to: u64,
) -> Result<(), WalError> {
    let mut at = from;
    while at < to {
        let len = (to - at).min(ZERO_CHUNK_BYTES as u64);
        file.write_at(at, vec![0; len as usize])
            .await
            .map_err(io_error("write", name))?;
        at += len;
    }
    Ok(())
}

/// Makes segment `id` from the spare, durably (file data and directory entry): waits
/// for the spare being prepared (not at all when it is ready) or prepares one now,
/// writes the header into it, syncs it and renames it into place (replacing a segment
/// `id` whose header was torn). Returns the file and where its first record goes.
async fn start_segment<S: Storage>(
    storage: &S,
    spare: &mut Spare,
    config: LogConfig,
    shard: u16,
    id: u64,
    first_seq: u64,
) -> Result<(S::File, u64), WalError> {
    let ready = match std::mem::replace(spare, Spare::Missing) {
        Spare::Ready => true,
        // `Err(Canceled)`: the task was dropped (its executor stopped) before it ended.
        Spare::Preparing(answer) => matches!(answer.await, Ok(Ok(()))),
        Spare::Missing => false,
    };
    if !ready {
        prepare_spare(storage, config.segment_bytes_max).await?;
    }
    let name = segment_name(id);
    let header = SegmentHeader {
        shard,
        segment: id,
        first_seq,
    };
    let file = storage
        .open(SPARE_NAME)
        .await
        .map_err(io_error("open", SPARE_NAME))?;
    file.write_at(0, header.encode().to_vec())
        .await
        .map_err(io_error("write", SPARE_NAME))?;
    file.sync_data()
        .await
        .map_err(io_error("sync", SPARE_NAME))?;
    storage
        .rename(SPARE_NAME, &name)
        .await
        .map_err(io_error("rename", SPARE_NAME))?;
    storage
        .sync_dir()
        .await
        .map_err(io_error("directory sync", &name))?;
    Ok((file, SEGMENT_HEADER_LEN as u64))
}

/// Where the log in a segment file of `bytes` ends for a cut's count: for a
/// preallocated segment (at least `segment_bytes_max` long) just after its last non-zero
/// byte, the zeros after it being free space; for a shorter one, the file's end.
fn log_end(bytes: &[u8], config: LogConfig) -> u64 {
    let size = bytes.len() as u64;
    if size >= config.segment_bytes_max {
        segment::trimmed_len(bytes)
    } else {
        size
    }
}

/// Cuts segment `name` (`size` bytes) at `offset`, where its log ends at `end`
/// ([`log_end`]), durably: a preallocated segment keeps its size and its bytes from
/// `offset` to `end` become zeros (free space) again; a shorter one is truncated.
async fn cut<F: StorageFile>(
    file: &F,
    name: &str,
    offset: u64,
    end: u64,
    size: u64,
    config: LogConfig,
) -> Result<(), WalError> {
    if size >= config.segment_bytes_max {
        write_zeros(file, name, offset, end).await?;
    } else {
        file.truncate(offset)
            .await
            .map_err(io_error("truncate", name))?;
    }
    file.sync_data().await.map_err(io_error("sync", name))
}

/// Segment `id` starts at sequence `found` where `expected` belongs: the segments
/// between are missing.
fn gap(shard: u16, id: u64, expected: u64, found: u64) -> WalError {
    let at = |seq| Position {
        shard,
        segment: id,
        seq,
    };
    WalError::Corrupt {
        file: segment_name(id),
        offset: 0,
        reason: FormatError::Misplaced {
            expected: at(expected),
            found: at(found),
        },
    }
}

/// Opens `name` and reads all of it (segments and snapshots are read whole, once, at
/// recovery).
pub(crate) async fn read_whole<S: Storage>(
    storage: &S,
    name: &str,
) -> Result<(S::File, Vec<u8>), WalError> {
    let file = storage.open(name).await.map_err(io_error("open", name))?;
    let size = file.size().await.map_err(io_error("stat", name))?;
    let bytes = file
        .read_at(0, size as usize)
        .await
        .map_err(io_error("read", name))?;
    Ok((file, bytes))
}

/// What the reading of a log needs to know of it.
struct Reading<'a, S> {
    storage: &'a S,
    shard: u16,
    /// The first sequence number to replay.
    from_seq: u64,
    config: LogConfig,
}

/// What one segment held.
enum Read<F> {
    /// The open file, the offset after its last whole record, its first sequence
    /// number and the next one.
    Whole {
        file: F,
        end: u64,
        first_seq: u64,
        next_seq: u64,
    },
    /// The last segment's header is cut short: `bytes` are there.
    TornHeader { bytes: u64 },
}

impl<S: Storage> Reading<'_, S> {
    /// Reads segment `id` into `replay` (through the one segment reader,
    /// [`segment::read`]). Zeros after its last record are free space; a fault in the
    /// last segment with nothing valid after it is a torn tail and is cut; any other
    /// is corruption.
    async fn segment(
        &self,
        id: u64,
        expected_seq: Option<u64>,
        is_last: bool,
        replay: &mut Replay,
    ) -> Result<Read<S::File>, WalError> {
        let (shard, from_seq) = (self.shard, self.from_seq);
        let name = segment_name(id);
        let (file, bytes) = read_whole(self.storage, &name).await?;
        let corrupt = |fault: Fault| WalError::Corrupt {
            file: name.clone(),
            offset: fault.offset,
            reason: fault.reason,
        };
        let expected = Expected {
            shard,
            segment: id,
            first_seq: expected_seq,
            numbering: Numbering::FromHeader,
        };
        let read = segment::read(&bytes, expected, |seq, entry| {
            if seq >= from_seq {
                replay.entries.push((seq, entry));
            }
        });
        let read = match read {
            Ok(read) => read,
            Err(Fault {
                reason: FormatError::ShortHeader { bytes },
                ..
            }) if is_last => return Ok(Read::TornHeader { bytes }),
            Err(fault) => return Err(corrupt(fault)),
        };
        match read.fault {
            Some(fault) if segment::is_free(&bytes, fault.offset) => {}
            Some(fault) => {
                if !is_last || segment::record_follows(&bytes, fault.offset, shard, id) {
                    return Err(corrupt(fault));
                }
                let end = log_end(&bytes, self.config);
                cut(
                    &file,
                    &name,
                    fault.offset,
                    end,
                    bytes.len() as u64,
                    self.config,
                )
                .await?;
                let torn = end.saturating_sub(fault.offset);
                tracing::warn!(
                    "WAL {name}: cut a torn tail of {torn} bytes at byte {}",
                    fault.offset
                );
                replay.torn_bytes += torn;
            }
            None => {}
        }
        Ok(Read::Whole {
            file,
            end: read.end,
            first_seq: read.header.first_seq,
            next_seq: read.next_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::UringStorage;
    use crate::wal::record::ItemImage;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    fn put(i: u64, value_len: usize) -> Entry {
        Entry::Put(ItemImage {
            key: format!("k{i}"),
            value: vec![7; value_len],
            created_ms: 0,
            modified_ms: 0,
            expires_s: None,
            labels: Default::default(),
        })
    }

    /// On the ring, in a real directory: the spare is zero-filled by a task beside the
    /// appends (in several ring writes), and a rotation renames that very file into
    /// place (the same inode), at its full size. A rotation right after the next spare
    /// was started waits for it, and the log reads back whole.
    #[test]
    fn on_the_ring_a_rotation_renames_the_prepared_spare_into_place() {
        let dir = std::env::temp_dir().join(format!("ampd-wal-spare-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let size = 3 * ZERO_CHUNK_BYTES as u64 + 4096;
        let config = LogConfig {
            segment_bytes_max: size,
        };
        let d = dir.clone();
        let written = ampd_rt::thread::Builder::new()
            .spawn(move || async move {
                let len = |name: &str| std::fs::metadata(d.join(name)).unwrap().len();
                let (mut log, _) = Log::open(UringStorage::new(&d), 3, 0, config)
                    .await
                    .unwrap();
                assert_eq!(
                    len(&segment_name(0)),
                    size,
                    "the first segment, made at open"
                );
                let mut n = 0;
                log.append(&[put(n, 100)], true).await.unwrap();
                n += 1;
                // A generous bound: only a stall exceeds it.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !d.join(SPARE_NAME).exists() {
                    assert!(Instant::now() < deadline, "the spare is never ready");
                    ampd_rt::time::sleep(Duration::from_millis(1)).await;
                }
                assert_eq!(len(SPARE_NAME), size);
                let spare = std::fs::metadata(d.join(SPARE_NAME)).unwrap().ino();
                while log.position().0 == 0 {
                    log.append(&[put(n, 256 << 10)], true).await.unwrap();
                    n += 1;
                }
                let segment_1 = std::fs::metadata(d.join(segment_name(1))).unwrap();
                assert_eq!((segment_1.ino(), segment_1.len()), (spare, size));
                // Full at once: the next rotation finds its spare still being filled.
                let batch: Vec<Entry> = (n..n + 12).map(|i| put(i, 256 << 10)).collect();
                log.append(&batch, true).await.unwrap();
                n += 12;
                log.append(&[put(n, 1)], true).await.unwrap();
                n += 1;
                assert_eq!(log.position().0, 2);
                assert_eq!(len(&segment_name(2)), size);
                drop(log);
                let (_, replay) = Log::open(UringStorage::new(&d), 3, 0, config)
                    .await
                    .unwrap();
                assert_eq!(replay.torn_bytes, 0);
                let seqs: Vec<u64> = replay.entries.iter().map(|(seq, _)| *seq).collect();
                assert_eq!(seqs, (0..n).collect::<Vec<_>>());
                n
            })
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(written > 13, "{written}");
    }
}
