//! The WAL on a simulated disk: what is appended comes back, a torn tail is cut at the
//! last whole record, damage before the tail is refused with its file and offset, a
//! failed write or sync poisons the log, and after a power cut at any moment every
//! acknowledged record is back (and nothing that was never written).
//!
//! Guards against the classic WAL mistakes: treating a bad record in the middle of the
//! log as a clean end (silent loss of everything after it), accepting a valid record
//! copied to the wrong place, retrying a failed fsync as if it had worked (fsyncgate),
//! and acknowledging a batch before its sync.

use ampd_engine::storage::{Fault, FaultKind, SimDisk, Storage, StorageFile};
use ampd_engine::wal::log::{segment_name, Log, LogConfig, WalError};
use ampd_engine::wal::record::{Entry, ItemImage};
use ampd_tests::splitmix;
use futures::executor::block_on;

const SHARD: u16 = 1;

fn entry(i: u64, value_len: usize) -> Entry {
    if i % 7 == 3 {
        return Entry::Remove {
            key: format!("ns:k{}", i - 1),
        };
    }
    Entry::Put(ItemImage {
        key: format!("ns:k{i}"),
        value: vec![(i % 251) as u8; value_len],
        created_ms: i as i64,
        modified_ms: i as i64 + 1,
        expires_s: i.is_multiple_of(5).then_some(1_900_000_000),
        labels: [
            i.is_multiple_of(3).then(|| format!("L{i}")),
            None,
            None,
            None,
            None,
        ],
    })
}

fn open(disk: &SimDisk, config: LogConfig) -> Result<(Log<SimDisk>, Vec<Entry>, u64), WalError> {
    let (log, replay) = block_on(Log::open(disk.clone(), SHARD, 0, config))?;
    let entries = replay.entries.into_iter().map(|(_, e)| e).collect();
    Ok((log, entries, replay.torn_bytes))
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
    }
}

#[test]
fn appended_batches_come_back_across_segments() {
    let disk = SimDisk::new();
    let (mut log, replayed, _) = open(&disk, small_segments()).unwrap();
    assert!(replayed.is_empty());
    let written: Vec<Entry> = (0..200)
        .map(|i| entry(i, (i as usize * 13) % 300))
        .collect();
    for batch in written.chunks(7) {
        block_on(log.append(batch, true)).unwrap();
    }
    assert_eq!(log.next_seq(), 200);
    drop(log);
    let segments = block_on(disk.list()).unwrap();
    assert!(segments.len() > 5, "{segments:?}");
    let (log, replayed, torn) = open(&disk, small_segments()).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(replayed, written);
    assert_eq!(log.next_seq(), 200);
    // Replay from a later sequence number (after a snapshot) skips what came before.
    let (_, replay) = block_on(Log::open(disk.clone(), SHARD, 150, small_segments())).unwrap();
    assert_eq!(replay.entries.first().map(|e| e.0), Some(150));
    assert_eq!(replay.entries.len(), 50);
}

/// Appends `n` entries of `value_len` bytes to a fresh disk and syncs; returns the disk
/// and where the log ends in its single segment (the segment is preallocated: zeros
/// follow).
fn one_segment(n: u64, value_len: usize) -> (SimDisk, u64) {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, LogConfig::default()).unwrap();
    for i in 0..n {
        block_on(log.append(&[entry(i, value_len)], true)).unwrap();
    }
    let (segment, end) = log.position();
    assert_eq!(segment, 0);
    (disk, end)
}

/// Makes segment 0 hold exactly `bytes`: a segment as written before preallocation.
fn set_segment(disk: &SimDisk, bytes: Vec<u8>) {
    let f = block_on(disk.open(&segment_name(0))).unwrap();
    block_on(f.truncate(0)).unwrap();
    block_on(f.write_at(0, bytes)).unwrap();
    block_on(f.sync_data()).unwrap();
}

/// The first `end` bytes of segment 0: its log, without the free space after it.
fn segment_bytes(disk: &SimDisk, end: u64) -> Vec<u8> {
    let f = block_on(disk.open(&segment_name(0))).unwrap();
    block_on(f.read_at(0, end as usize)).unwrap()
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_record() {
    for value_len in [1, 100, 4095, 4096, 4097] {
        let (disk, end) = one_segment(4, value_len);
        let whole = segment_bytes(&disk, end);
        // Offsets where each record ends.
        let ends: Vec<usize> = {
            let (_, replayed, _) = open(&disk, LogConfig::default()).unwrap();
            assert_eq!(replayed.len(), 4);
            (1..=4)
                .map(|n| one_segment(n, value_len).1 as usize)
                .collect()
        };
        // Cut anywhere inside the last two records.
        for cut in ends[1] + 1..whole.len() {
            set_segment(&disk, whole[..cut].to_vec());
            let whole_records = ends.iter().filter(|e| **e <= cut).count();
            let (mut log, replayed, torn) = open(&disk, LogConfig::default()).unwrap();
            assert_eq!(
                replayed.len(),
                whole_records,
                "value {value_len}, cut {cut}"
            );
            assert_eq!(torn, (cut - ends[whole_records - 1]) as u64);
            // The log goes on after the cut, and the next open sees it.
            block_on(log.append(&[entry(99, 3)], true)).unwrap();
            let (_, again, torn) = open(&disk, LogConfig::default()).unwrap();
            assert_eq!(again.len(), whole_records + 1);
            assert_eq!(torn, 0);
            set_segment(&disk, whole.clone());
        }
        // Garbage instead of the last record: zeros, 0xFF, pseudo-random bytes.
        for fill in [0u8, 0xff, 0x5a] {
            let mut damaged = whole[..ends[2]].to_vec();
            damaged.extend((0..whole.len() - ends[2]).map(|i| fill ^ (i as u8 & 0x0f)));
            set_segment(&disk, damaged);
            let (_, replayed, _) = open(&disk, LogConfig::default()).unwrap();
            assert_eq!(replayed.len(), 3, "fill {fill:#x}");
            set_segment(&disk, whole.clone());
        }
    }
}

#[test]
fn a_bad_record_before_good_ones_is_corruption_naming_file_and_offset() {
    let (disk, end) = one_segment(6, 40);
    let whole = segment_bytes(&disk, end);
    let second = one_segment(1, 40).1 as usize;
    // Flip every bit of the second record (header and body): always refused.
    let third = one_segment(2, 40).1 as usize;
    for bit in second * 8..third * 8 {
        let mut bad = whole.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        set_segment(&disk, bad);
        match open(&disk, LogConfig::default()) {
            Err(WalError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, segment_name(0));
                assert_eq!(offset, second as u64, "bit {bit}");
            }
            Err(other) => panic!("bit {bit}: {other}"),
            Ok((_, replayed, torn)) => panic!(
                "bit {bit}: opened with {} records, {torn} torn",
                replayed.len()
            ),
        }
    }
}

#[test]
fn a_record_copied_to_the_wrong_place_is_refused() {
    let (disk, end) = one_segment(3, 10);
    let whole = segment_bytes(&disk, end);
    let r1 = one_segment(1, 10).1 as usize;
    let r2 = one_segment(2, 10).1 as usize;
    // Put record 0 where record 1 belongs (valid CRC, wrong sequence number).
    let mut bad = whole[..r1].to_vec();
    bad.extend_from_slice(&whole[40..r1]);
    bad.extend_from_slice(&whole[r2..]);
    set_segment(&disk, bad);
    assert!(matches!(
        open(&disk, LogConfig::default()),
        Err(WalError::Corrupt { offset, .. }) if offset == r1 as u64
    ));
}

#[test]
fn a_failed_sync_poisons_the_log_and_loses_nothing_acknowledged() {
    for kind in [FaultKind::Io, FaultKind::NoSpace] {
        let disk = SimDisk::new();
        let (mut log, _, _) = open(&disk, LogConfig::default()).unwrap();
        block_on(log.append(&[entry(0, 5)], true)).unwrap();
        // The write succeeds, its sync fails.
        disk.plan_fault(Fault {
            at: 1,
            kind,
            persistent: false,
        });
        assert!(block_on(log.append(&[entry(1, 5)], true)).is_err());
        assert!(matches!(
            block_on(log.append(&[entry(2, 5)], true)),
            Err(WalError::Poisoned)
        ));
        disk.power_cut(|_| 0);
        let (_, replayed, _) = open(&disk, LogConfig::default()).unwrap();
        assert_eq!(replayed, vec![entry(0, 5)]);
    }
}

/// One seeded run: batches appended with sync, a fault somewhere, a power cut with a
/// torn last write; after reopening, every acknowledged entry is there, in order, and
/// nothing past what was attempted.
fn power_cut_run(seed: u64) {
    let mut rng = seed;
    let disk = SimDisk::new();
    let config = LogConfig {
        segment_bytes_max: 512 + splitmix(&mut rng) % 4096,
    };
    let (mut log, _, _) = open(&disk, config).unwrap();
    if splitmix(&mut rng).is_multiple_of(2) {
        disk.plan_fault(Fault {
            at: splitmix(&mut rng) % 60,
            kind: if splitmix(&mut rng).is_multiple_of(2) {
                FaultKind::Io
            } else {
                FaultKind::NoSpace
            },
            persistent: splitmix(&mut rng).is_multiple_of(2),
        });
    }
    let mut attempted = Vec::new();
    let mut acked = 0;
    for _ in 0..splitmix(&mut rng) % 30 {
        let n = 1 + splitmix(&mut rng) % 4;
        let batch: Vec<Entry> = (0..n)
            .map(|_| {
                entry(
                    attempted.len() as u64 + 1000,
                    (splitmix(&mut rng) % 600) as usize,
                )
            })
            .collect();
        attempted.extend(batch.iter().cloned().map(Some));
        match block_on(log.append(&batch, true)) {
            Ok(_) => acked = attempted.len(),
            Err(_) => break,
        }
    }
    drop(log);
    let tear = splitmix(&mut rng);
    disk.power_cut(|len| (tear as usize) % (len + 1));
    let (_, replayed, _) = open(&disk, config).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert!(
        replayed.len() >= acked,
        "seed {seed}: {} of {acked} acknowledged entries back",
        replayed.len()
    );
    let want: Vec<Entry> = attempted
        .into_iter()
        .flatten()
        .take(replayed.len())
        .collect();
    assert_eq!(replayed, want, "seed {seed}");
}

#[test]
fn power_cuts_keep_every_acknowledged_entry_10k_seeds() {
    for seed in 0..10_000 {
        power_cut_run(seed);
    }
}

#[test]
#[ignore = "long: a million seeds; run with --ignored"]
fn power_cuts_keep_every_acknowledged_entry_1m_seeds() {
    for seed in 0..1_000_000 {
        power_cut_run(seed);
    }
}
