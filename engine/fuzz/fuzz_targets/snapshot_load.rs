//! The snapshot loader (`snapshot::decode`: the WAL's segment reader with a snapshot's
//! expectations). The first byte picks how the rest is read: as a whole snapshot file
//! (header included), or as record bodies (each a length byte, then that many bytes)
//! framed behind a valid snapshot header with valid record headers and checksums, so
//! the reader's record loop and rkyv's validation are reached.
//!
//! Guards against a panic, an unbounded allocation or a stack overflow on any input;
//! checks that a snapshot of valid frames is either read whole, one entry per frame,
//! or refused at a frame's offset as a bad body.
#![no_main]

use ampd_engine::snapshot::{decode, SNAPSHOT_SEGMENT};
use ampd_engine::wal::record::{encode_record_body, FormatError, Position, SegmentHeader};
use libfuzzer_sys::fuzz_target;

const SHARD: u16 = 4;
const S0: u64 = 77;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = decode(rest, SHARD);
        return;
    }
    let header = SegmentHeader {
        shard: SHARD,
        segment: SNAPSHOT_SEGMENT,
        first_seq: S0,
    };
    let mut file = header.encode().to_vec();
    let mut starts = Vec::new();
    let mut bodies = rest;
    for seq in 0.. {
        let Some((&len, after)) = bodies.split_first() else {
            break;
        };
        let (body, after) = after.split_at(usize::from(len).min(after.len()));
        starts.push(file.len() as u64);
        let at = Position {
            shard: SHARD,
            segment: SNAPSHOT_SEGMENT,
            seq,
        };
        encode_record_body(body, at, &mut file);
        bodies = after;
    }
    match decode(&file, SHARD) {
        Ok((s0, entries)) => {
            assert_eq!(s0, S0);
            assert_eq!(entries.len(), starts.len());
        }
        Err(fault) => {
            assert!(
                matches!(fault.reason, FormatError::BadBody(_)),
                "{fault:?}"
            );
            assert!(starts.contains(&fault.offset), "{fault:?}");
        }
    }
});
