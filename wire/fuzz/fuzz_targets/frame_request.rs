//! The server's decoder: arbitrary bytes as a stream of request frames.
//!
//! Guards against a panic, an unbounded allocation or a stack overflow on any input,
//! and checks that every request it accepts survives re-encoding unchanged.
#![no_main]

use ampd_wire::frame::{decode_request, encode_request};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some((id, request))) = decode_request(&mut buf) {
        let mut again = BytesMut::new();
        // A decoded request can re-encode larger than it came (a float32 becomes a
        // float64), past the frame limit: then there is nothing to compare.
        if encode_request(id, &request, &mut again).is_ok() {
            let decoded = decode_request(&mut again);
            assert_eq!(
                decoded,
                Ok(Some((id, request))),
                "re-encoded request differs"
            );
            assert!(again.is_empty());
        }
    }
});
