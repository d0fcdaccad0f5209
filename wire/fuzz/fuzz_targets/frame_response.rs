//! The client's decoder: arbitrary bytes as a stream of response frames.
//!
//! Guards against a panic, an unbounded allocation or a stack overflow on any input,
//! and checks that every response it accepts survives re-encoding unchanged.
#![no_main]

use ampd_wire::frame::{decode_response, encode_error, encode_ok_value, encode_push};
use ampd_wire::limits::ERROR_MESSAGE_LEN_MAX;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(response)) = decode_response(&mut buf) {
        let mut again = BytesMut::new();
        match &response.result {
            Ok(value) if response.push => encode_push(response.id, response.kind, value, &mut again),
            Ok(value) => encode_ok_value(response.id, response.kind, value, &mut again),
            // A longer message is cut when encoded: nothing to compare.
            Err(e) if e.message().len() > ERROR_MESSAGE_LEN_MAX => continue,
            Err(e) => encode_error(response.id, response.kind, e, &mut again),
        }
        let decoded = decode_response(&mut again);
        assert_eq!(decoded, Ok(Some(response)), "re-encoded response differs");
        assert!(again.is_empty());
    }
});
