//! Fuzzy snapshots of a shard: every live item, written while the shard keeps serving,
//! so that recovery replays only the WAL from the snapshot's start.
//!
//! # Format
//! `snap-{s0:020}.snap`, where `s0` is the WAL sequence number the snapshot starts from:
//! a [`SegmentHeader`] with segment id [`SNAPSHOT_SEGMENT`] and `first_seq = s0`, then
//! one WAL record (`Entry::Put`) per item, numbered 0, 1, 2, ... with the same segment
//! id: the record format, its checks and its decoder are the WAL's, defined once in
//! [`crate::wal::record`].
//!
//! # Why a fuzzy snapshot is exact
//! `s0` is taken between two batches, when every record below `s0` is installed. The
//! walk then runs while later batches (numbered `s0` and up) change items under it, so
//! the file holds, for each key, its state at some moment after `s0`. Records are
//! after-images, so replaying the WAL from `s0` over the snapshot sets every key that
//! changed after `s0` to its final state, and leaves the others as the snapshot has
//! them: exactly the acknowledged state.
//!
//! # Durability
//! Written to `snap-{s0}.tmp`, synced, renamed to `.snap`, directory synced; only then
//! may the WAL segments before `s0` and older snapshots be removed. A `.tmp` left by a
//! crash is removed at recovery.

use crate::item::Item;
use crate::storage::{Storage, StorageFile};
use crate::wal::log::{io_error, read_whole, WalError};
use crate::wal::record::{self, Entry, Position, SegmentHeader};

/// The segment id that marks a snapshot file's header and records.
pub const SNAPSHOT_SEGMENT: u64 = u64::MAX;
/// Bytes gathered before each write of a snapshot.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

fn name(s0: u64) -> String {
    format!("snap-{s0:020}.snap")
}

fn tmp_name(s0: u64) -> String {
    format!("snap-{s0:020}.tmp")
}

fn start_seq(file: &str) -> Option<u64> {
    let s0 = file.strip_prefix("snap-")?.strip_suffix(".snap")?;
    (s0.len() == 20).then(|| s0.parse().ok()).flatten()
}

/// Writes a snapshot of `items` (live items only) starting at `s0`, durably, then
/// removes older snapshots. Yields between chunks so the shard keeps serving. Returns
/// the number of items written.
pub async fn write<S: Storage>(
    storage: &S,
    shard: u16,
    s0: u64,
    items: impl Iterator<Item = Item>,
    now_s: i64,
) -> Result<u64, WalError> {
    let tmp = tmp_name(s0);
    let file = storage
        .create(&tmp)
        .await
        .map_err(io_error("create", &tmp))?;
    let header = SegmentHeader {
        shard,
        segment: SNAPSHOT_SEGMENT,
        first_seq: s0,
    };
    let mut offset = 0u64;
    let mut chunk = header.encode().to_vec();
    let mut count = 0u64;
    for item in items.filter(|i| !i.is_expired(now_s)) {
        let at = Position {
            shard,
            segment: SNAPSHOT_SEGMENT,
            seq: count,
        };
        record::encode_record(&Entry::Put(item.to_image()), at, &mut chunk);
        count += 1;
        if chunk.len() >= WRITE_CHUNK_BYTES {
            let len = chunk.len() as u64;
            file.write_at(offset, std::mem::take(&mut chunk))
                .await
                .map_err(io_error("write", &tmp))?;
            offset += len;
            glommio::yield_if_needed().await;
        }
    }
    file.write_at(offset, chunk)
        .await
        .map_err(io_error("write", &tmp))?;
    file.sync_data().await.map_err(io_error("sync", &tmp))?;
    let done = name(s0);
    storage
        .rename(&tmp, &done)
        .await
        .map_err(io_error("rename", &tmp))?;
    storage
        .sync_dir()
        .await
        .map_err(io_error("directory sync", &done))?;
    for old in storage.list().await.map_err(io_error("listing", "."))? {
        if start_seq(&old).is_some_and(|s| s < s0) {
            storage
                .remove(&old)
                .await
                .map_err(io_error("remove", &old))?;
        }
    }
    Ok(count)
}

/// Loads the newest snapshot: its start sequence number and its items (as WAL
/// entries). Removes leftover `.tmp` files. `None` when there is no snapshot.
pub async fn load<S: Storage>(
    storage: &S,
    shard: u16,
) -> Result<Option<(u64, Vec<Entry>)>, WalError> {
    let names = storage.list().await.map_err(io_error("listing", "."))?;
    for tmp in names
        .iter()
        .filter(|n| n.starts_with("snap-") && n.ends_with(".tmp"))
    {
        storage.remove(tmp).await.map_err(io_error("remove", tmp))?;
    }
    let Some(newest) = names.iter().filter(|n| start_seq(n).is_some()).max() else {
        return Ok(None);
    };
    let (_, bytes) = read_whole(storage, newest).await?;
    let corrupt = |offset: usize, error| WalError::Corrupt {
        file: newest.clone(),
        offset: offset as u64,
        error,
    };
    let header = match SegmentHeader::decode(&bytes) {
        Ok(Some(h)) if h.shard == shard && h.segment == SNAPSHOT_SEGMENT => h,
        Ok(_) => {
            return Err(corrupt(
                0,
                record::FormatError::BadLength {
                    body_len: bytes.len() as u64,
                },
            ))
        }
        Err(e) => return Err(corrupt(0, e)),
    };
    let mut entries = Vec::new();
    let mut offset = record::SEGMENT_HEADER_LEN;
    while offset < bytes.len() {
        let at = Position {
            shard,
            segment: SNAPSHOT_SEGMENT,
            seq: entries.len() as u64,
        };
        match record::decode_record(&bytes[offset..], at) {
            Ok(Some((entry, len))) => {
                entries.push(entry);
                offset += len;
            }
            // A snapshot is renamed into place only when whole: a short one is damage.
            Ok(None) => {
                return Err(corrupt(
                    offset,
                    record::FormatError::BadLength {
                        body_len: (bytes.len() - offset) as u64,
                    },
                ))
            }
            Err(e) => return Err(corrupt(offset, e)),
        }
    }
    Ok(Some((header.first_seq, entries)))
}
