//! Preallocated WAL segments on a simulated disk: a segment is made at its full size and
//! zero-filled before it is used, the next one (the spare) is prepared beside the log,
//! and the zeros after a segment's last record are free space, not a torn record.
//!
//! Guards against the mistakes preallocation invites: reading the zeros after the last
//! record as a torn tail (a cut reported on every open) or as damage (a log that will
//! not open), appending at the file's end instead of the log's, reading a spare as a
//! segment of the log, a crash while the spare is prepared or renamed into place that
//! leaves a log recovery cannot open or that lost an acknowledged record, and a cut
//! (torn tail or repair) that shrinks a preallocated segment back into one that grows
//! with every append.

use ampd_engine::storage::{Fault, FaultKind, SimDisk, Storage, StorageFile};
use ampd_engine::wal::log::{
    segment_name, Cut, CutReason, Log, LogConfig, WalError, SPARE_NAME, SPARE_PART_NAME,
};
use ampd_engine::wal::record::{Entry, FormatError, SegmentHeader, SEGMENT_HEADER_LEN};
use ampd_tests::{log_len, splitmix};
use futures::executor::block_on;

const SHARD: u16 = 1;
/// Small segments: a few records each, so tests cross rotations.
const SEGMENT: u64 = 4096;
const CONFIG: LogConfig = LogConfig {
    segment_bytes_max: SEGMENT,
};

fn entry(i: u64, value_len: usize) -> Entry {
    Entry::Put(ampd_engine::wal::record::ItemImage {
        key: format!("ns:k{i}"),
        value: vec![(i % 251) as u8 | 1; value_len],
        created_ms: i as i64,
        modified_ms: i as i64 + 1,
        expires_s: None,
        labels: Default::default(),
    })
}

fn open(disk: &SimDisk, config: LogConfig) -> Result<(Log<SimDisk>, Vec<Entry>, u64), WalError> {
    let (log, replay) = block_on(Log::open(disk.clone(), SHARD, 0, config))?;
    let entries = replay.entries.into_iter().map(|(_, e)| e).collect();
    Ok((log, entries, replay.torn_bytes))
}

fn file_bytes(disk: &SimDisk, name: &str) -> Vec<u8> {
    let f = block_on(disk.open(name)).unwrap();
    let size = block_on(f.size()).unwrap();
    block_on(f.read_at(0, size as usize)).unwrap()
}

/// Replaces the content of `name` with `bytes`, durably.
fn set_file(disk: &SimDisk, name: &str, bytes: &[u8]) {
    let f = block_on(disk.open(name)).unwrap();
    block_on(f.truncate(0)).unwrap();
    block_on(f.write_at(0, bytes.to_vec())).unwrap();
    block_on(f.sync_data()).unwrap();
}

/// A fresh log on a fresh disk with `n` one-record batches of `value_len` bytes in
/// segment 0; returns the disk, the records, and where the log ended after each.
fn records_in_segment_0(n: u64, value_len: usize) -> (SimDisk, Vec<Entry>, Vec<usize>) {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, CONFIG).unwrap();
    let mut ends = Vec::new();
    let written: Vec<Entry> = (0..n).map(|i| entry(i, value_len)).collect();
    for e in &written {
        block_on(log.append(std::slice::from_ref(e), true)).unwrap();
        let (segment, end) = log.position();
        assert_eq!(segment, 0, "the records fit one segment");
        ends.push(end as usize);
    }
    (disk, written, ends)
}

#[test]
fn a_preallocated_segment_with_records_then_zeros_recovers_exactly_those() {
    let (disk, written, ends) = records_in_segment_0(5, 100);
    let bytes = file_bytes(&disk, &segment_name(0));
    assert_eq!(bytes.len() as u64, SEGMENT, "made at its full size");
    let end = ends[4];
    assert!(end < bytes.len() - 100, "free space follows the records");
    assert!(bytes[end..].iter().all(|b| *b == 0));
    // The spare was prepared beside the log, and is no segment of it.
    assert_eq!(
        block_on(disk.list()).unwrap(),
        [segment_name(0), SPARE_NAME.to_owned()]
    );
    assert_eq!(file_bytes(&disk, SPARE_NAME), vec![0; SEGMENT as usize]);

    let (mut log, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(replayed, written);
    assert_eq!(torn, 0, "zeros are free space: nothing is cut");
    assert_eq!(log.position(), (0, end as u64), "appends go after the log");
    assert_eq!(log.next_seq(), 5);
    block_on(log.append(&[entry(5, 100)], true)).unwrap();
    drop(log);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(replayed.len(), 6);
    assert_eq!(replayed[5], entry(5, 100));
    assert_eq!(torn, 0);
    assert_eq!(file_bytes(&disk, &segment_name(0)).len() as u64, SEGMENT);
}

#[test]
fn a_torn_record_followed_by_zeros_is_cut_as_a_torn_tail() {
    let (disk, written, ends) = records_in_segment_0(4, 300);
    let name = segment_name(0);
    let whole = file_bytes(&disk, &name);
    // Every tear inside the last record: what the write put on disk is a prefix of it,
    // and the zeros that were there before follow.
    let (last_start, last_end) = (ends[2], ends[3]);
    let mut torn_cuts = 0;
    for cut in last_start + 1..last_end {
        let mut torn_disk = whole.clone();
        torn_disk[cut..].fill(0);
        set_file(&disk, &name, &torn_disk);
        let (mut log, replayed, torn) = open(&disk, CONFIG).unwrap();
        if whole[cut..last_end].iter().all(|b| *b == 0) {
            // What the tear lost was zeros: the record is on disk whole, as written.
            assert_eq!(replayed, written, "cut {cut}");
            assert_eq!(torn, 0);
            continue;
        }
        torn_cuts += 1;
        assert_eq!(replayed, written[..3], "cut {cut}");
        // The torn record's bytes, up to its last non-zero one (the zeros after it
        // cannot be told from free space, and were free space before the write).
        assert_eq!(torn, (log_len(&torn_disk) - last_start) as u64, "cut {cut}");
        assert_eq!(log.position(), (0, last_start as u64));
        // The cut zeroed the torn bytes and kept the segment's size.
        let after = file_bytes(&disk, &name);
        assert_eq!(after.len() as u64, SEGMENT, "cut {cut}");
        assert_eq!(after[..last_start], whole[..last_start]);
        assert!(after[last_start..].iter().all(|b| *b == 0), "cut {cut}");
        // The log goes on from there.
        block_on(log.append(&[entry(9, 3)], true)).unwrap();
        drop(log);
        let (_, again, torn) = open(&disk, CONFIG).unwrap();
        assert_eq!(again.len(), 4);
        assert_eq!(again[3], entry(9, 3));
        assert_eq!(torn, 0);
    }
    assert!(
        torn_cuts > 300,
        "{torn_cuts} of the tears left a torn record"
    );
}

/// Appends one-record batches until the log has rotated into segment 1 and holds a
/// record there; returns the records and where segment 0's log ended.
fn two_segments(disk: &SimDisk) -> (Vec<Entry>, u64) {
    let (mut log, _, _) = open(disk, CONFIG).unwrap();
    let mut written = Vec::new();
    let mut end_0 = 0;
    for i in 0.. {
        let e = entry(i, 700);
        block_on(log.append(std::slice::from_ref(&e), true)).unwrap();
        written.push(e);
        match log.position() {
            (0, end) => end_0 = end,
            (1, _) => break,
            other => panic!("{other:?}"),
        }
    }
    (written, end_0)
}

#[test]
fn a_flipped_bit_in_the_free_space_is_a_torn_tail_in_the_last_segment_and_damage_before_it() {
    // In the last segment: non-zero bytes after the last record, with no valid record
    // after them, are a torn tail, as any other bytes there would be. They are zeroed.
    let (disk, written, ends) = records_in_segment_0(3, 100);
    let name = segment_name(0);
    let whole = file_bytes(&disk, &name);
    let end = ends[2];
    for at in [
        end,
        end + 1,
        end + 31,
        end + 32,
        end + 500,
        SEGMENT as usize - 1,
    ] {
        for bit in [0, 7] {
            let mut flipped = whole.clone();
            flipped[at] ^= 1 << bit;
            set_file(&disk, &name, &flipped);
            let (log, replayed, torn) = open(&disk, CONFIG).unwrap();
            assert_eq!(replayed, written, "byte {at} bit {bit}");
            assert_eq!(torn, (at + 1 - end) as u64, "byte {at} bit {bit}");
            assert_eq!(log.position(), (0, end as u64));
            assert_eq!(file_bytes(&disk, &name), whole, "zeroed again");
        }
    }

    // In an earlier segment the same byte is damage: opening is refused at the end of
    // that segment's log, and a repair cuts there, and everything after it.
    let disk = SimDisk::new();
    let (written, end_0) = two_segments(&disk);
    let name_0 = segment_name(0);
    let whole_0 = file_bytes(&disk, &name_0);
    let at = end_0 as usize + 10;
    assert!(at < SEGMENT as usize, "segment 0 has free space");
    let mut flipped = whole_0.clone();
    flipped[at] ^= 0x20;
    set_file(&disk, &name_0, &flipped);
    let reason = match open(&disk, CONFIG) {
        Err(WalError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!((file, offset), (name_0.clone(), end_0));
            assert!(
                matches!(reason, FormatError::BadChecksum { .. }),
                "{reason}"
            );
            reason
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a damaged segment before the last opened"),
    };
    let segment_1_len = log_len(&file_bytes(&disk, &segment_name(1))) as u64;
    let (mut log, replay, cuts) =
        block_on(Log::open_repairing(disk.clone(), SHARD, 0, CONFIG)).unwrap();
    assert_eq!(
        cuts,
        [
            Cut {
                file: name_0.clone().into(),
                offset: end_0,
                bytes: (at + 1) as u64 - end_0,
                reason: CutReason::Damaged(reason),
            },
            Cut {
                file: segment_name(1).into(),
                offset: 0,
                bytes: segment_1_len,
                reason: CutReason::AfterDamage,
            },
        ]
    );
    let kept = written.len() - 1;
    assert_eq!(replay.entries.len(), kept);
    assert_eq!(file_bytes(&disk, &name_0), whole_0, "zeroed, size kept");
    // The repaired log appends where segment 0's log ended, and rotates on.
    assert_eq!(log.position(), (0, end_0));
    let more: Vec<Entry> = (100..110).map(|i| entry(i, 700)).collect();
    for e in &more {
        block_on(log.append(std::slice::from_ref(e), true)).unwrap();
    }
    assert!(log.position().0 >= 2, "{:?}", log.position());
    drop(log);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(replayed[..kept], written[..kept]);
    assert_eq!(replayed[kept..], more[..]);
}

#[test]
fn a_repaired_preallocated_segment_keeps_its_size_and_appends_after_the_cut() {
    let (disk, written, ends) = records_in_segment_0(5, 100);
    let name = segment_name(0);
    let whole = file_bytes(&disk, &name);
    // Damage the third record: a valid record follows, so it is corruption.
    let mut damaged = whole.clone();
    damaged[ends[1] + 40] ^= 0x01;
    set_file(&disk, &name, &damaged);
    assert!(matches!(
        open(&disk, CONFIG),
        Err(WalError::Corrupt { offset, .. }) if offset == ends[1] as u64
    ));
    let (mut log, replay, cuts) =
        block_on(Log::open_repairing(disk.clone(), SHARD, 0, CONFIG)).unwrap();
    assert_eq!(cuts.len(), 1);
    assert_eq!(
        (cuts[0].offset, cuts[0].bytes),
        (ends[1] as u64, (log_len(&damaged) - ends[1]) as u64),
        "the cut counts the log's bytes, not the free space"
    );
    assert_eq!(replay.entries.len(), 2);
    let after = file_bytes(&disk, &name);
    assert_eq!(after.len() as u64, SEGMENT);
    assert_eq!(after[..ends[1]], whole[..ends[1]]);
    assert!(after[ends[1]..].iter().all(|b| *b == 0));
    assert_eq!(log.position(), (0, ends[1] as u64));
    let more: Vec<Entry> = (50..70).map(|i| entry(i, 300)).collect();
    for batch in more.chunks(3) {
        block_on(log.append(batch, true)).unwrap();
    }
    assert!(log.position().0 >= 1, "it rotated");
    drop(log);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(replayed[..2], written[..2]);
    assert_eq!(replayed[2..], more[..]);
}

#[test]
fn rotation_takes_the_prepared_spare_and_prepares_the_next() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, CONFIG).unwrap();
    // Only the first segment, made at open; the spare comes with the first append.
    assert_eq!(block_on(disk.list()).unwrap(), [segment_name(0)]);
    let mut written = Vec::new();
    let mut segment = 0;
    for i in 0..40 {
        let batch = [entry(i, 400)];
        block_on(log.append(&batch, true)).unwrap();
        written.extend(batch);
        assert!(
            block_on(disk.list())
                .unwrap()
                .contains(&SPARE_NAME.to_owned()),
            "a spare is ready after append {i}"
        );
        if log.position().0 != segment {
            assert_eq!(log.position().0, segment + 1);
            segment += 1;
            // The new segment is the spare with a header: preallocated, its records
            // followed by zeros.
            let bytes = file_bytes(&disk, &segment_name(segment));
            assert_eq!(bytes.len() as u64, SEGMENT);
            let header = SegmentHeader::decode(&bytes).unwrap().unwrap();
            assert_eq!(
                header,
                SegmentHeader {
                    shard: SHARD,
                    segment,
                    first_seq: i,
                }
            );
            let end = log.position().1 as usize;
            assert!(
                bytes[end..].iter().all(|b| *b == 0),
                "free space after the log"
            );
        }
    }
    assert!(segment >= 3, "{segment}");
    drop(log);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!((replayed, torn), (written, 0));
}

#[test]
fn a_batch_larger_than_a_segment_grows_a_segment_of_its_own() {
    let disk = SimDisk::new();
    let config = LogConfig {
        segment_bytes_max: 1024,
    };
    let (mut log, _, _) = open(&disk, config).unwrap();
    let big: Vec<Entry> = (0..5).map(|i| entry(i, 400)).collect();
    // First into the empty segment 0, which grows; then after a small record, into a
    // new segment.
    block_on(log.append(&big, true)).unwrap();
    assert_eq!(log.position().0, 0);
    let grown = file_bytes(&disk, &segment_name(0)).len() as u64;
    assert!(grown > 1024 && grown == log.position().1, "{grown}");
    block_on(log.append(&[entry(5, 10)], true)).unwrap();
    assert_eq!(log.position().0, 1, "a full segment rotates");
    block_on(log.append(&big, true)).unwrap();
    assert_eq!(log.position().0, 2, "the batch does not fit what is left");
    block_on(log.append(&[entry(6, 10)], true)).unwrap();
    assert_eq!(log.position().0, 3);
    drop(log);
    let (_, replayed, torn) = open(&disk, config).unwrap();
    assert_eq!(torn, 0);
    let want: Vec<Entry> = big
        .iter()
        .cloned()
        .chain([entry(5, 10)])
        .chain(big.iter().cloned())
        .chain([entry(6, 10)])
        .collect();
    assert_eq!(replayed, want);
}

#[test]
fn a_segment_written_before_preallocation_opens_and_is_appended_to() {
    let (disk, written, ends) = records_in_segment_0(3, 100);
    let name = segment_name(0);
    // The same records in a segment that ends at its last record.
    let whole = file_bytes(&disk, &name);
    set_file(&disk, &name, &whole[..ends[2]]);
    let (mut log, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!((replayed, torn), (written.clone(), 0));
    let more: Vec<Entry> = (3..30).map(|i| entry(i, 100)).collect();
    for e in &more {
        block_on(log.append(std::slice::from_ref(e), true)).unwrap();
    }
    assert!(log.position().0 >= 1);
    drop(log);
    // It grew with its appends up to the segment size; the next is preallocated.
    let old = file_bytes(&disk, &name).len() as u64;
    assert!(old > ends[2] as u64 && old <= SEGMENT, "{old}");
    assert_eq!(file_bytes(&disk, &segment_name(1)).len() as u64, SEGMENT);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(replayed[..3], written[..]);
    assert_eq!(replayed[3..], more[..]);
}

#[test]
fn spares_left_by_a_crash_are_never_read_as_the_log() {
    let (disk, written, _) = records_in_segment_0(3, 100);
    // A spare half filled, with garbage (what a failing disk might leave), and a
    // whole spare that already has the header of the segment it was about to become
    // (a crash between the header write and the rename).
    let part = block_on(disk.create(SPARE_PART_NAME)).unwrap();
    block_on(part.write_at(0, vec![0x5a; 3000])).unwrap();
    let stale = SegmentHeader {
        shard: SHARD,
        segment: 1,
        first_seq: 77,
    };
    let spare = block_on(disk.open(SPARE_NAME)).unwrap();
    block_on(spare.write_at(0, stale.encode().to_vec())).unwrap();
    block_on(disk.sync_dir()).unwrap();
    let (mut log, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!((replayed, torn), (written.clone(), 0));
    assert_eq!(
        block_on(disk.list()).unwrap(),
        [segment_name(0), SPARE_NAME.to_owned()],
        "the half-filled spare is removed"
    );
    // The next rotation takes the spare and writes its own header over the stale one.
    let more: Vec<Entry> = (3..12).map(|i| entry(i, 300)).collect();
    for e in &more {
        block_on(log.append(std::slice::from_ref(e), true)).unwrap();
    }
    assert!(log.position().0 >= 1);
    let bytes = file_bytes(&disk, &segment_name(1));
    assert_eq!(SegmentHeader::decode(&bytes).unwrap().unwrap().segment, 1);
    assert_ne!(
        SegmentHeader::decode(&bytes).unwrap().unwrap().first_seq,
        77
    );
    drop(log);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(replayed[..3], written[..]);
    assert_eq!(replayed[3..], more[..]);

    // A spare of another segment size (the configuration changed) is not used.
    let other = LogConfig {
        segment_bytes_max: 2 * SEGMENT,
    };
    let (mut log, _, _) = open(&disk, other).unwrap();
    assert!(!block_on(disk.list())
        .unwrap()
        .contains(&SPARE_NAME.to_owned()));
    block_on(log.append(&[entry(99, 1)], true)).unwrap();
    assert_eq!(
        file_bytes(&disk, SPARE_NAME).len() as u64,
        2 * SEGMENT,
        "a new one of the new size"
    );
}

#[test]
fn a_failed_preparation_of_the_spare_stops_nothing() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, CONFIG).unwrap();
    // The first append is a write and a sync; then the spare's preparation starts: a
    // create and a write of zeros, which fails (once).
    disk.plan_fault(Fault {
        at: 3,
        kind: FaultKind::NoSpace,
        persistent: false,
    });
    let written: Vec<Entry> = (0..30).map(|i| entry(i, 300)).collect();
    block_on(log.append(&written[..1], true)).unwrap();
    assert_eq!(
        block_on(disk.list()).unwrap(),
        [segment_name(0), SPARE_PART_NAME.to_owned()],
        "the preparation failed half way"
    );
    // The rotations prepare their segments themselves; nothing is refused.
    for e in &written[1..] {
        block_on(log.append(std::slice::from_ref(e), true)).unwrap();
    }
    assert!(log.position().0 >= 2);
    drop(log);
    let (_, replayed, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!((replayed, torn), (written, 0));
}

/// One seeded run: a log that rotates through preallocated segments, with the Nth disk
/// operation after open failing for good (a crash at that operation: nothing after it
/// reaches the disk), then a power cut that keeps a random prefix of each file's last
/// unsynced write. Recovery must give back every acknowledged record, in order, and
/// nothing that was never written; no spare is read as the log; and the recovered log
/// must take new records through further rotations.
fn crash_at(at: u64, seed: u64) {
    let mut rng = seed;
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, CONFIG).unwrap();
    disk.plan_fault(Fault {
        at,
        kind: FaultKind::Io,
        persistent: true,
    });
    let mut attempted = Vec::new();
    let mut acked = 0;
    for i in 0..24 {
        let batch: Vec<Entry> = (0..1 + i % 3)
            .map(|j| entry(100 * i + j, (splitmix(&mut rng) % 900) as usize))
            .collect();
        attempted.extend(batch.iter().cloned());
        match block_on(log.append(&batch, true)) {
            Ok(_) => acked = attempted.len(),
            Err(_) => break,
        }
    }
    drop(log);
    let tear = splitmix(&mut rng);
    disk.power_cut(|len| tear as usize % (len + 1));
    let (mut log, replayed, _) =
        open(&disk, CONFIG).unwrap_or_else(|e| panic!("crash at {at}, seed {seed}: {e}"));
    assert!(
        replayed.len() >= acked,
        "crash at {at}: {} of {acked} acknowledged records back",
        replayed.len()
    );
    assert_eq!(replayed, attempted[..replayed.len()], "crash at {at}");
    for name in block_on(disk.list()).unwrap() {
        assert!(
            name.ends_with(".wal") || name == SPARE_NAME,
            "crash at {at}: {name} left after open"
        );
    }
    let more: Vec<Entry> = (0..20).map(|i| entry(10_000 + i, 500)).collect();
    for e in &more {
        block_on(log.append(std::slice::from_ref(e), true))
            .unwrap_or_else(|e| panic!("crash at {at}: after recovery: {e}"));
    }
    drop(log);
    let (_, again, torn) = open(&disk, CONFIG).unwrap();
    assert_eq!(torn, 0, "crash at {at}");
    assert_eq!(again[..replayed.len()], replayed[..], "crash at {at}");
    assert_eq!(again[replayed.len()..], more[..], "crash at {at}");
}

#[test]
fn a_crash_at_any_operation_while_spares_are_prepared_and_taken_recovers() {
    // The operations of a run without a fault: every one of them is a crash point
    // (appends, preparations of spares, rotations).
    let ops = {
        let disk = SimDisk::new();
        let (mut log, _, _) = open(&disk, CONFIG).unwrap();
        let start = disk.ops();
        let mut rng = 0;
        for i in 0..24 {
            let batch: Vec<Entry> = (0..1 + i % 3)
                .map(|j| entry(100 * i + j, (splitmix(&mut rng) % 900) as usize))
                .collect();
            block_on(log.append(&batch, true)).unwrap();
        }
        assert!(log.position().0 >= 4, "the run crosses rotations");
        disk.ops() - start
    };
    for at in 0..=ops {
        for seed in 0..4 {
            crash_at(at, seed);
        }
    }
}

#[test]
fn a_crash_while_the_first_segment_is_prepared_recovers() {
    // A new log prepares its first segment before it is used: a crash at any step of
    // that leaves a log that opens empty, or with that segment whole.
    let steps = {
        let disk = SimDisk::new();
        open(&disk, CONFIG).unwrap();
        disk.ops()
    };
    for at in 0..steps {
        let disk = SimDisk::new();
        disk.plan_fault(Fault {
            at,
            kind: FaultKind::Io,
            persistent: true,
        });
        assert!(open(&disk, CONFIG).is_err(), "step {at} fails");
        disk.power_cut(|len| len / 2);
        let (mut log, replayed, torn) = open(&disk, CONFIG).unwrap();
        assert_eq!((replayed.len(), torn), (0, 0), "step {at}");
        assert_eq!(log.position(), (0, SEGMENT_HEADER_LEN as u64));
        block_on(log.append(&[entry(1, 1)], true)).unwrap();
        drop(log);
        let (_, replayed, _) = open(&disk, CONFIG).unwrap();
        assert_eq!(replayed, [entry(1, 1)], "step {at}");
        assert_eq!(
            file_bytes(&disk, &segment_name(0)).len() as u64,
            SEGMENT,
            "step {at}"
        );
    }
}
