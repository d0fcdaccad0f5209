//! One shard's log: segment files `{segment:020}.wal` in the shard's [`Storage`],
//! appended in batches (one write, then one `sync_data`, per batch: group commit), read
//! back in full when the shard opens.
//!
//! # Reading: torn tail or corruption (`TolerateCorruptTail` only at the tail)
//! Each segment is read by the one segment reader ([`segment::read`]), which checks
//! records in order with [`record::decode_record`]. When a record is cut short or fails
//! its checks:
//! - in the last segment, with no whole valid record of this shard and segment anywhere
//!   after it, it is a torn tail (a crash in the middle of the last write): the file is
//!   cut at the last whole record and the log says how many bytes went;
//! - anywhere else it is corruption: opening fails with the file and the byte offset,
//!   and nothing is skipped. [`Log::open_repairing`] (`ampd repair`, `Db::repair`) cuts
//!   there when an operator asks for it.
//!
//! # Writing: no retry after a failed write or sync
//! A failed `write_at` or `sync_data` poisons the log: the batch is reported failed and
//! every later append fails too, because after a failed fsync Linux may have marked the
//! pages clean without writing them, so a retry could "succeed" and lose data. The shard
//! recovers from what is on disk.

use super::record::{self, Entry, EntryRef, FormatError, Position, SegmentHeader};
use super::segment::{self, Expected, Fault, Numbering};
use crate::failpoint;
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::PathBuf;

/// Limits of a log.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// A segment that has reached this many bytes is closed and a new one started.
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
    /// How many bytes went.
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

/// One shard's log, open for appending.
pub struct Log<S: Storage> {
    storage: S,
    shard: u16,
    config: LogConfig,
    segment: u64,
    file: S::File,
    /// Where the next record goes in `file`.
    offset: u64,
    next_seq: u64,
    poisoned: bool,
    /// Every segment of the log: (id, first sequence number), oldest first.
    segments: Vec<(u64, u64)>,
    /// Bytes appended since the log was opened.
    appended_bytes: u64,
    /// Where each record's body is archived before it is framed (reused).
    scratch: rkyv::util::AlignedVec,
}

impl<S: Storage> Log<S> {
    /// Opens (or starts) the log of `shard`, replays the records numbered `from_seq` and
    /// later, cuts a torn tail, and positions the log after the last whole record.
    /// Segments holding only records below `from_seq` (covered by the snapshot that
    /// `from_seq` comes from) are removed.
    pub async fn open(
        storage: S,
        shard: u16,
        from_seq: u64,
        config: LogConfig,
    ) -> Result<(Log<S>, Replay), WalError> {
        let names = storage.list().await.map_err(io_error("listing", "."))?;
        let mut ids: Vec<u64> = names.iter().filter_map(|n| segment_id(n)).collect();
        // Segments wholly before `from_seq` are covered by a snapshot; one may be left
        // over when removing it failed or a crash came first. Skip (and remove) them:
        // segment `i` is covered when segment `i + 1` starts at or before `from_seq`.
        let mut first_seqs = Vec::with_capacity(ids.len());
        for id in &ids {
            let name = segment_name(*id);
            let file = storage.open(&name).await.map_err(io_error("open", &name))?;
            let head = file
                .read_at(0, record::SEGMENT_HEADER_LEN)
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
            .take_while(|w| matches!(w, [Some(_), Some(next)] if *next <= from_seq))
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
        let mut replay = Replay::default();
        let mut next_seq = None;
        let mut last = None;
        let mut segments = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let is_last = i + 1 == ids.len();
            let (file, end, first_seq, seq) = read_segment(
                &storage,
                shard,
                *id,
                next_seq,
                from_seq,
                is_last,
                &mut replay,
            )
            .await?;
            if next_seq.is_none() && first_seq > from_seq {
                // The records from `from_seq` (a snapshot's start) to here are gone.
                return Err(gap(shard, *id, from_seq, first_seq));
            }
            segments.push((*id, first_seq));
            next_seq = Some(seq);
            last = Some((*id, file, end));
        }
        let mut log = match last {
            Some((segment, file, offset)) => Log {
                storage,
                shard,
                config,
                segment,
                file,
                offset,
                next_seq: next_seq.unwrap_or(from_seq),
                poisoned: false,
                segments,
                appended_bytes: 0,
                scratch: rkyv::util::AlignedVec::new(),
            },
            None => {
                let (file, offset) = start_segment(&storage, shard, 0, from_seq).await?;
                Log {
                    storage,
                    shard,
                    config,
                    segment: 0,
                    file,
                    offset,
                    next_seq: from_seq,
                    poisoned: false,
                    segments: vec![(0, from_seq)],
                    appended_bytes: 0,
                    scratch: rkyv::util::AlignedVec::new(),
                }
            }
        };
        log.next_seq = log.next_seq.max(from_seq);
        Ok((log, replay))
    }

    /// Opens the log like [`Log::open`], but where it finds corruption (a bad record
    /// or header, or a sequence gap) it cuts the log there: the damaged segment is
    /// truncated at the bad record (removed if its header or first record is bad) and
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
            let f = storage.open(&file).await.map_err(io_error("open", &file))?;
            let size = f.size().await.map_err(io_error("stat", &file))?;
            // A segment with no whole valid record left goes whole.
            let offset = if offset <= record::SEGMENT_HEADER_LEN as u64 {
                drop(f);
                storage
                    .remove(&file)
                    .await
                    .map_err(io_error("remove", &file))?;
                0
            } else {
                f.truncate(offset)
                    .await
                    .map_err(io_error("truncate", &file))?;
                f.sync_data().await.map_err(io_error("sync", &file))?;
                offset
            };
            cuts.push(Cut {
                file: PathBuf::from(&file),
                offset,
                bytes: size.saturating_sub(offset),
                reason: CutReason::Damaged(reason),
            });
            let names = storage.list().await.map_err(io_error("listing", "."))?;
            for later in names
                .iter()
                .filter(|n| segment_id(n).is_some_and(|l| l > id))
            {
                let bytes = match storage.open(later).await {
                    Ok(f) => f.size().await.map_err(io_error("stat", later))?,
                    Err(e) => return Err(io_error("open", later)(e)),
                };
                storage
                    .remove(later)
                    .await
                    .map_err(io_error("remove", later))?;
                cuts.push(Cut {
                    file: PathBuf::from(later),
                    offset: 0,
                    bytes,
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

    async fn append_inner<'e, E>(&mut self, entries: &'e [E], sync: bool) -> Result<u64, WalError>
    where
        EntryRef<'e>: From<&'e E>,
    {
        if self.offset >= self.config.segment_bytes_max {
            self.rotate().await?;
        }
        let mut batch = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = Position {
                shard: self.shard,
                segment: self.segment,
                seq: self.next_seq + i as u64,
            };
            record::encode_record_ref(&entry.into(), at, &mut self.scratch, &mut batch);
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
        Ok(self.next_seq - 1)
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
        let (file, offset) =
            start_segment(&self.storage, self.shard, segment, self.next_seq).await?;
        self.segment = segment;
        self.file = file;
        self.offset = offset;
        self.segments.push((segment, self.next_seq));
        Ok(())
    }
}

/// Creates segment `id` with its header, durably (file data and directory entry).
async fn start_segment<S: Storage>(
    storage: &S,
    shard: u16,
    id: u64,
    first_seq: u64,
) -> Result<(S::File, u64), WalError> {
    let name = segment_name(id);
    let header = SegmentHeader {
        shard,
        segment: id,
        first_seq,
    };
    let file = storage
        .create(&name)
        .await
        .map_err(io_error("create", &name))?;
    file.write_at(0, header.encode().to_vec())
        .await
        .map_err(io_error("write", &name))?;
    file.sync_data().await.map_err(io_error("sync", &name))?;
    storage
        .sync_dir()
        .await
        .map_err(io_error("directory sync", &name))?;
    Ok((file, record::SEGMENT_HEADER_LEN as u64))
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

/// Reads one segment into `replay` (through the one segment reader,
/// [`segment::read`]); returns the open file, the offset after its last whole record,
/// its first sequence number and the next one. A fault in the last segment with
/// nothing valid after it is a torn tail and is cut; any other is corruption.
async fn read_segment<S: Storage>(
    storage: &S,
    shard: u16,
    id: u64,
    expected_seq: Option<u64>,
    from_seq: u64,
    is_last: bool,
    replay: &mut Replay,
) -> Result<(S::File, u64, u64, u64), WalError> {
    let name = segment_name(id);
    let (file, bytes) = read_whole(storage, &name).await?;
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
        // A segment whose header never became whole can only be the newest one, torn
        // while it was being started: start it again.
        Err(Fault {
            reason: FormatError::ShortHeader { bytes },
            ..
        }) if is_last => {
            drop(file);
            storage
                .remove(&name)
                .await
                .map_err(io_error("remove", &name))?;
            let seq = expected_seq.unwrap_or(from_seq);
            let (file, offset) = start_segment(storage, shard, id, seq).await?;
            replay.torn_bytes += bytes;
            return Ok((file, offset, seq, seq));
        }
        Err(fault) => return Err(corrupt(fault)),
    };
    if let Some(fault) = read.fault {
        if !is_last || segment::record_follows(&bytes, fault.offset, shard, id) {
            return Err(corrupt(fault));
        }
        let torn = bytes.len() as u64 - fault.offset;
        file.truncate(fault.offset)
            .await
            .map_err(io_error("truncate", &name))?;
        file.sync_data().await.map_err(io_error("sync", &name))?;
        tracing::warn!(
            "WAL {name}: cut a torn tail of {torn} bytes at byte {}",
            fault.offset
        );
        replay.torn_bytes += torn;
    }
    Ok((file, read.end, read.header.first_seq, read.next_seq))
}
