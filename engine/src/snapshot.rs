//! Fuzzy snapshots of a shard: every live item, written while the shard keeps serving,
//! so that recovery replays only the WAL from the snapshot's start.
//!
//! # Format
//! `snap-{s0:020}.snap`, where `s0` is the WAL sequence number the snapshot starts from:
//! a [`SegmentHeader`] with segment id [`SNAPSHOT_SEGMENT`] and `first_seq = s0`, then
//! one WAL record (`Entry::Put`) per item, numbered 0, 1, 2, ... with the same segment
//! id: the record format and its checks are the WAL's ([`crate::wal::record`]), and a
//! snapshot is read by the WAL's segment reader ([`crate::wal::segment`]), so a fault
//! in either is found and named the same way.
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

use crate::failpoint;
use crate::item::Item;
use crate::storage::{Storage, StorageFile};
use crate::wal::log::{io_error, read_whole, WalError};
use crate::wal::record::{self, Entry, EntryRef, Position, SegmentHeader};
use crate::wal::segment::{self, Expected, Fault, Numbering};

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

/// One piece of a snapshot on its way from the walk to the file.
pub struct Chunk {
    /// Encoded records (the first chunk starts with the header).
    pub bytes: Vec<u8>,
    /// Items whose records are in `bytes`.
    pub items: u64,
    /// The walk is complete after this chunk.
    pub last: bool,
}

/// Walks `items` (skipping those expired at `now_s`) and encodes the snapshot that
/// starts at `s0` in chunks of about [`WRITE_CHUNK_BYTES`], handing each to `send`;
/// stops early when `send` returns `false` (the writer gave up). Pure CPU: this is the
/// part that runs on a background thread, while the shard keeps serving.
pub fn encode(
    shard: u16,
    s0: u64,
    items: impl Iterator<Item = Item>,
    now_s: i64,
    mut send: impl FnMut(Chunk) -> bool,
) {
    let header = SegmentHeader {
        shard,
        segment: SNAPSHOT_SEGMENT,
        first_seq: s0,
    };
    let mut chunk = Chunk {
        bytes: header.encode().to_vec(),
        items: 0,
        last: false,
    };
    let mut scratch = rkyv::util::AlignedVec::new();
    for (seq, item) in (0u64..).zip(items.filter(|i| !i.is_expired(now_s))) {
        let at = Position {
            shard,
            segment: SNAPSHOT_SEGMENT,
            seq,
        };
        let entry = EntryRef::Put(item.image());
        record::encode_record_ref(&entry, at, &mut scratch, &mut chunk.bytes);
        chunk.items += 1;
        if chunk.bytes.len() >= WRITE_CHUNK_BYTES {
            let full = std::mem::replace(
                &mut chunk,
                Chunk {
                    bytes: Vec::with_capacity(WRITE_CHUNK_BYTES + 4096),
                    items: 0,
                    last: false,
                },
            );
            if !send(full) {
                return;
            }
        }
    }
    chunk.last = true;
    send(chunk);
}

/// Writes the snapshot that starts at `s0` from the chunks [`encode`] produces,
/// durably, then removes older snapshots. Returns the number of items written. A
/// snapshot whose chunks stop before the last one (the walk died) is not renamed into
/// place.
pub async fn write<S: Storage>(
    storage: &S,
    s0: u64,
    mut chunks: impl futures::Stream<Item = Chunk> + Unpin,
) -> Result<u64, WalError> {
    use futures::StreamExt;
    let tmp = tmp_name(s0);
    let file = storage
        .create(&tmp)
        .await
        .map_err(io_error("create", &tmp))?;
    failpoint::check(failpoint::SNAPSHOT_WRITE_TMP).map_err(io_error("write", &tmp))?;
    let mut offset = 0u64;
    let mut count = 0u64;
    let mut complete = false;
    while let Some(chunk) = chunks.next().await {
        complete = chunk.last;
        let len = chunk.bytes.len() as u64;
        file.write_at(offset, chunk.bytes)
            .await
            .map_err(io_error("write", &tmp))?;
        offset += len;
        count += chunk.items;
    }
    if !complete {
        return Err(io_error("write", &tmp)(std::io::Error::other(
            "the snapshot walk stopped before the end",
        )));
    }
    file.sync_data().await.map_err(io_error("sync", &tmp))?;
    let done = name(s0);
    failpoint::check(failpoint::SNAPSHOT_RENAME).map_err(io_error("rename", &tmp))?;
    storage
        .rename(&tmp, &done)
        .await
        .map_err(io_error("rename", &tmp))?;
    failpoint::check(failpoint::SNAPSHOT_SYNC_DIR).map_err(io_error("directory sync", &done))?;
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
    decode(&bytes, shard)
        .map(Some)
        .map_err(|fault| WalError::Corrupt {
            file: newest.clone(),
            offset: fault.offset,
            reason: fault.reason,
        })
}

/// Decodes the bytes of shard `shard`'s snapshot file: its start sequence number and
/// its items (as WAL entries), through the WAL's segment reader. A snapshot is renamed
/// into place only once whole, so any fault, a short last record included, is damage.
pub fn decode(bytes: &[u8], shard: u16) -> Result<(u64, Vec<Entry>), Fault> {
    let expected = Expected {
        shard,
        segment: SNAPSHOT_SEGMENT,
        first_seq: None,
        numbering: Numbering::FromZero,
    };
    let mut entries = Vec::new();
    let read = segment::read(bytes, expected, |_, entry| entries.push(entry))?;
    match read.fault {
        Some(fault) => Err(fault),
        None => Ok((read.header.first_seq, entries)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{FormatError, ItemImage, SEGMENT_HEADER_LEN};

    fn image(key: &str) -> Entry {
        Entry::Put(ItemImage {
            key: key.into(),
            value: vec![0xc0],
            created_ms: 1,
            modified_ms: 1,
            expires_s: None,
            labels: Default::default(),
        })
    }

    /// A snapshot of `shard` from `s0` holding `keys`, as [`encode`] lays it out.
    fn snapshot(shard: u16, s0: u64, keys: &[&str]) -> Vec<u8> {
        let mut bytes = SegmentHeader {
            shard,
            segment: SNAPSHOT_SEGMENT,
            first_seq: s0,
        }
        .encode()
        .to_vec();
        for (seq, key) in (0..).zip(keys) {
            let at = Position {
                shard,
                segment: SNAPSHOT_SEGMENT,
                seq,
            };
            record::encode_record(&image(key), at, &mut bytes);
        }
        bytes
    }

    #[test]
    fn decode_reads_what_was_encoded() {
        let bytes = snapshot(1, 77, &["a", "ns:b"]);
        assert_eq!(decode(&bytes, 1), Ok((77, vec![image("a"), image("ns:b")])));
    }

    /// The loader once read segments with a copy of the WAL's reader and called another
    /// shard's snapshot a bad length; the one reader calls it misplaced, as the log does.
    #[test]
    fn faults_are_named_as_the_log_names_them() {
        let bytes = snapshot(1, 77, &["a", "b"]);
        let at = |shard| Position {
            shard,
            segment: SNAPSHOT_SEGMENT,
            seq: 77,
        };
        assert_eq!(
            decode(&bytes, 2),
            Err(Fault {
                offset: 0,
                reason: FormatError::Misplaced {
                    expected: at(2),
                    found: at(1)
                }
            })
        );
        assert_eq!(
            decode(&bytes[..10], 1),
            Err(Fault {
                offset: 0,
                reason: FormatError::ShortHeader { bytes: 10 }
            })
        );
        // A short last record is damage in a snapshot (it is renamed in only whole).
        let cut = bytes.len() - 1;
        let second = SEGMENT_HEADER_LEN + (bytes.len() - SEGMENT_HEADER_LEN) / 2;
        assert_eq!(
            decode(&bytes[..cut], 1),
            Err(Fault {
                offset: second as u64,
                reason: FormatError::ShortRecord {
                    bytes: (cut - second) as u64
                }
            })
        );
    }
}
