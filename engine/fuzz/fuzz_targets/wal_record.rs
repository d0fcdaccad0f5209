//! The WAL record decoder (`wal::record::decode_record`): arbitrary bytes as a record,
//! and the same bytes as the body of a record whose header is valid and whose CRC32C is
//! recomputed, so rkyv's validation of the body is reached (random headers almost never
//! get past the checksum).
//!
//! Guards against a panic, an unbounded allocation or a stack overflow on any input;
//! checks that a framed body is either an entry or refused as a bad body, and that
//! every accepted entry re-encodes to a record that decodes to the same entry.
#![no_main]

use ampd_engine::wal::record::{
    decode_record, encode_record, encode_record_body, FormatError, Position,
};
use libfuzzer_sys::fuzz_target;

const AT: Position = Position {
    shard: 1,
    segment: 2,
    seq: 3,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((entry, len))) = decode_record(data, AT) {
        assert!(len <= data.len());
        round_trip(entry);
    }
    let mut framed = Vec::new();
    encode_record_body(data, AT, &mut framed);
    match decode_record(&framed, AT) {
        Ok(Some((entry, len))) => {
            assert_eq!(len, framed.len());
            round_trip(entry);
        }
        Err(FormatError::BadBody(_)) => {}
        // Only a body over the length limit fails before validation.
        Err(FormatError::BadLength { .. }) => {}
        other => panic!("a framed body gave {other:?}"),
    }
});

fn round_trip(entry: ampd_engine::wal::record::Entry) {
    let mut again = Vec::new();
    encode_record(&entry, AT, &mut again);
    assert_eq!(
        decode_record(&again, AT),
        Ok(Some((entry, again.len()))),
        "re-encoded entry differs"
    );
}
