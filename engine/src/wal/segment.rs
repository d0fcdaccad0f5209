//! The segment reader, defined once: WAL segments ([`super::log`]) and snapshots
//! ([`crate::snapshot`], which are segments of an id of their own) are both read by
//! [`read`], so a fault is found, and named, the same way in both.
//!
//! What a fault *means* is the caller's policy, not the reader's: in a WAL segment,
//! zeros from the fault to the end ([`is_free`]) are the free space of a preallocated
//! segment, where its log ends; otherwise, in the newest WAL segment, a fault with no
//! valid record anywhere after it ([`record_follows`]) is a torn tail and is cut;
//! anywhere else in the WAL, and anywhere in a snapshot (which is written to its end
//! and renamed into place only once whole, so zeros after its records are damage too),
//! it is corruption.
//!
//! Zeros after the last record read as a record whose header is all zeros: `body_len`
//! 0 and a stored CRC32C of 0, which the CRC32C of the header's other bytes never is
//! (checked in the tests), so they never pass for a record; fewer than a header's
//! bytes of them are a short record. Either way the reader stops there, with a fault,
//! and the caller asks [`is_free`].

use super::record::{
    self, Entry, FormatError, Position, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// The segment the bytes must be, and how its records are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub shard: u16,
    pub segment: u64,
    /// The `first_seq` its header must carry, when the reader knows it (the number
    /// after the previous segment's last record).
    pub first_seq: Option<u64>,
    pub numbering: Numbering,
}

/// How the records of a segment are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// From the header's `first_seq` on (a WAL segment).
    FromHeader,
    /// From 0 (a snapshot, whose header's `first_seq` is the WAL position it covers).
    FromZero,
}

/// A bad header or record, at `offset` bytes into the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub offset: u64,
    pub reason: FormatError,
}

/// What a segment holds up to its end or its first fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub header: SegmentHeader,
    /// The offset just after the last whole valid record: where the next record goes,
    /// or where a cut is made.
    pub end: u64,
    /// The number the next record gets.
    pub next_seq: u64,
    /// The first bad record, when there is one; nothing after it was read.
    pub fault: Option<Fault>,
}

/// Reads a segment's bytes: checks its header against `expected`, then hands each
/// valid record, with its number, to `entry`, in order, up to the end or the first
/// fault. `Err`: the header itself is short, damaged, or not the expected one (a
/// fault at offset 0).
pub fn read(
    bytes: &[u8],
    expected: Expected,
    mut entry: impl FnMut(u64, Entry),
) -> Result<Segment, Fault> {
    let at_start = |reason| Fault { offset: 0, reason };
    let header = match SegmentHeader::decode(bytes) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(at_start(FormatError::ShortHeader {
                bytes: bytes.len() as u64,
            }))
        }
        Err(reason) => return Err(at_start(reason)),
    };
    let found = Position {
        shard: header.shard,
        segment: header.segment,
        seq: header.first_seq,
    };
    let wanted = Position {
        shard: expected.shard,
        segment: expected.segment,
        seq: expected.first_seq.unwrap_or(header.first_seq),
    };
    if found != wanted {
        return Err(at_start(FormatError::Misplaced {
            expected: wanted,
            found,
        }));
    }
    let mut offset = SEGMENT_HEADER_LEN;
    let mut seq = match expected.numbering {
        Numbering::FromHeader => header.first_seq,
        Numbering::FromZero => 0,
    };
    let fault = loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        if rest.is_empty() {
            break None;
        }
        let at = Position {
            shard: expected.shard,
            segment: expected.segment,
            seq,
        };
        let reason = match record::decode_record(rest, at) {
            Ok(Some((decoded, len))) => {
                entry(seq, decoded);
                offset += len;
                seq += 1;
                continue;
            }
            Ok(None) => FormatError::ShortRecord {
                bytes: rest.len() as u64,
            },
            Err(reason) => reason,
        };
        break Some(Fault {
            offset: offset as u64,
            reason,
        });
    };
    Ok(Segment {
        header,
        end: offset as u64,
        next_seq: seq,
        fault,
    })
}

/// Whether every byte of `bytes` from `offset` on is zero (true at or past the end):
/// the free space of a preallocated WAL segment, which its writer has not reached.
pub fn is_free(bytes: &[u8], offset: u64) -> bool {
    let from = usize::try_from(offset).unwrap_or(usize::MAX);
    bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .all(|b| *b == 0)
}

/// The length of `bytes` without the zeros at its end.
pub fn trimmed_len(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last as u64 + 1)
}

/// Whether a whole valid record of `shard`'s `segment` starts anywhere after `offset`
/// in `bytes`: then a fault at `offset` is damage, not a torn tail.
pub fn record_follows(bytes: &[u8], offset: u64, shard: u16, segment: u64) -> bool {
    let mut p = usize::try_from(offset).map_or(bytes.len(), |o| o.saturating_add(1));
    while p < bytes.len() {
        // A record whose header is all zeros is never valid (see the module header):
        // skip to where the next non-zero byte is within a header's reach, so that the
        // free space of a preallocated segment is passed over at the speed of a scan.
        let Some(non_zero) = bytes
            .get(p..)
            .and_then(|rest| rest.iter().position(|b| *b != 0))
        else {
            return false;
        };
        p = p.max((p + non_zero).saturating_sub(RECORD_HEADER_LEN - 1));
        if bytes
            .get(p..)
            .is_some_and(|rest| record::looks_like_record(rest, shard, segment))
        {
            return true;
        }
        p += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{encode_record, ItemImage, RECORD_HEADER_LEN};

    const SHARD: u16 = 2;
    const SEGMENT: u64 = 5;

    fn remove(key: &str) -> Entry {
        Entry::Remove { key: key.into() }
    }

    /// A segment starting at `first_seq` with one record per key, records numbered as
    /// `numbering` says.
    fn segment(first_seq: u64, keys: &[&str], numbering: Numbering) -> Vec<u8> {
        let header = SegmentHeader {
            shard: SHARD,
            segment: SEGMENT,
            first_seq,
        };
        let mut out = header.encode().to_vec();
        let base = match numbering {
            Numbering::FromHeader => first_seq,
            Numbering::FromZero => 0,
        };
        for (seq, key) in (base..).zip(keys) {
            let at = Position {
                shard: SHARD,
                segment: SEGMENT,
                seq,
            };
            encode_record(&remove(key), at, &mut out);
        }
        out
    }

    fn expected(first_seq: Option<u64>, numbering: Numbering) -> Expected {
        Expected {
            shard: SHARD,
            segment: SEGMENT,
            first_seq,
            numbering,
        }
    }

    fn read_all(bytes: &[u8], e: Expected) -> (Result<Segment, Fault>, Vec<(u64, Entry)>) {
        let mut got = Vec::new();
        let r = read(bytes, e, |seq, entry| got.push((seq, entry)));
        (r, got)
    }

    #[test]
    fn both_numberings_read_every_record() {
        for numbering in [Numbering::FromHeader, Numbering::FromZero] {
            let bytes = segment(10, &["a", "b", "c"], numbering);
            let (r, got) = read_all(&bytes, expected(Some(10), numbering));
            let base = if numbering == Numbering::FromHeader {
                10
            } else {
                0
            };
            assert_eq!(
                got,
                [
                    (base, remove("a")),
                    (base + 1, remove("b")),
                    (base + 2, remove("c"))
                ]
            );
            let s = r.unwrap();
            assert_eq!(
                (s.end, s.next_seq, s.fault),
                (bytes.len() as u64, base + 3, None)
            );
        }
    }

    #[test]
    fn a_short_or_foreign_header_is_a_fault_at_zero() {
        let bytes = segment(10, &["a"], Numbering::FromHeader);
        let e = expected(None, Numbering::FromHeader);
        assert_eq!(
            read(&bytes[..39], e, |_, _| {}).unwrap_err(),
            Fault {
                offset: 0,
                reason: FormatError::ShortHeader { bytes: 39 }
            }
        );
        let at = |shard, segment, seq| Position {
            shard,
            segment,
            seq,
        };
        let other_shard = Expected { shard: 3, ..e };
        assert_eq!(
            read(&bytes, other_shard, |_, _| {}).unwrap_err().reason,
            FormatError::Misplaced {
                expected: at(3, SEGMENT, 10),
                found: at(SHARD, SEGMENT, 10)
            }
        );
        // A segment that does not continue the one before it: a gap.
        let gap = expected(Some(9), Numbering::FromHeader);
        assert_eq!(
            read(&bytes, gap, |_, _| {}).unwrap_err().reason,
            FormatError::Misplaced {
                expected: at(SHARD, SEGMENT, 9),
                found: at(SHARD, SEGMENT, 10)
            }
        );
    }

    #[test]
    fn the_first_bad_record_stops_the_read_and_is_named() {
        let bytes = segment(0, &["a", "b", "c"], Numbering::FromHeader);
        let record_len = (bytes.len() - SEGMENT_HEADER_LEN) / 3;
        let second = SEGMENT_HEADER_LEN + record_len;
        let e = expected(None, Numbering::FromHeader);

        let mut damaged = bytes.clone();
        damaged[second + RECORD_HEADER_LEN] ^= 1;
        let (r, got) = read_all(&damaged, e);
        let s = r.unwrap();
        assert_eq!(got, [(0, remove("a"))]);
        assert_eq!((s.end, s.next_seq), (second as u64, 1));
        let fault = s.fault.unwrap();
        assert_eq!(fault.offset, second as u64);
        assert!(matches!(fault.reason, FormatError::BadChecksum { .. }));
        assert!(record_follows(&damaged, fault.offset, SHARD, SEGMENT));

        // Cut inside the last record: a short record, and nothing valid after it.
        let cut = bytes.len() - 3;
        let (r, _) = read_all(&bytes[..cut], e);
        let fault = r.unwrap().fault.unwrap();
        let third = second + record_len;
        assert_eq!(
            fault,
            Fault {
                offset: third as u64,
                reason: FormatError::ShortRecord {
                    bytes: (cut - third) as u64
                }
            }
        );
        assert!(!record_follows(&bytes[..cut], fault.offset, SHARD, SEGMENT));
    }

    #[test]
    fn zeros_are_never_a_record() {
        // The claim of the module header: an all-zero record header stores CRC32C 0,
        // which the bytes it covers never have.
        assert_ne!(crc32c::crc32c(&[0; RECORD_HEADER_LEN - 8]), 0);
        for (shard, segment) in [(0, 0), (SHARD, SEGMENT)] {
            let at = Position {
                shard,
                segment,
                seq: 0,
            };
            assert!(matches!(
                record::decode_record(&[0; 64], at),
                Err(FormatError::BadChecksum { stored: 0, .. })
            ));
            assert_eq!(record::decode_record(&[0; 31], at), Ok(None));
            assert!(!record::looks_like_record(&[0; 64], shard, segment));
        }
    }

    #[test]
    fn zeros_after_the_last_record_stop_the_read_and_are_free() {
        let records = segment(0, &["a", "b"], Numbering::FromHeader);
        let e = expected(None, Numbering::FromHeader);
        for zeros in [1, 31, 32, 33, 4096] {
            let mut bytes = records.clone();
            bytes.resize(records.len() + zeros, 0);
            let (r, got) = read_all(&bytes, e);
            let s = r.unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!((s.end, s.next_seq), (records.len() as u64, 2));
            // The reader stops with a fault; what it means is the caller's to say.
            let fault = s.fault.unwrap();
            assert_eq!(fault.offset, records.len() as u64);
            assert!(is_free(&bytes, fault.offset), "{zeros} zeros");
            assert!(!record_follows(&bytes, fault.offset, SHARD, SEGMENT));
            bytes[records.len() + zeros - 1] = 1;
            assert!(!is_free(&bytes, fault.offset), "{zeros} zeros, then a one");
            assert_eq!(trimmed_len(&bytes), bytes.len() as u64);
        }
        assert!(is_free(&records, records.len() as u64));
        assert!(is_free(&records, u64::MAX));
        assert_eq!(trimmed_len(&[0, 0]), 0);
        assert_eq!(trimmed_len(&[0, 7, 0, 0]), 2);
    }

    #[test]
    fn a_record_after_a_long_run_of_zeros_is_found() {
        let bytes = segment(0, &["a", "b", "c"], Numbering::FromHeader);
        let record_len = (bytes.len() - SEGMENT_HEADER_LEN) / 3;
        let second = SEGMENT_HEADER_LEN + record_len;
        let third = second + record_len;
        // The second record half torn, zeros, then the third: damage, however many
        // zeros (a header's length of them or not) are between.
        for zeros in [0, 1, 31, 32, 33, 1 << 20] {
            let mut damaged = bytes[..second + 10].to_vec();
            damaged.resize(second + 10 + zeros, 0);
            damaged.extend_from_slice(&bytes[third..]);
            assert!(
                record_follows(&damaged, second as u64, SHARD, SEGMENT),
                "{zeros} zeros"
            );
            damaged.truncate(second + 10 + zeros);
            assert!(
                !record_follows(&damaged, second as u64, SHARD, SEGMENT),
                "{zeros} zeros"
            );
        }
    }

    #[test]
    fn an_image_round_trips() {
        let image = Entry::Put(ItemImage {
            key: "ns:k".into(),
            value: vec![1, 2, 3],
            created_ms: 1,
            modified_ms: 2,
            expires_s: None,
            labels: Default::default(),
        });
        let mut bytes = SegmentHeader {
            shard: SHARD,
            segment: SEGMENT,
            first_seq: 0,
        }
        .encode()
        .to_vec();
        let at = Position {
            shard: SHARD,
            segment: SEGMENT,
            seq: 0,
        };
        encode_record(&image, at, &mut bytes);
        let (r, got) = read_all(&bytes, expected(Some(0), Numbering::FromHeader));
        assert_eq!(r.unwrap().fault, None);
        assert_eq!(got, [(0, image)]);
    }
}
