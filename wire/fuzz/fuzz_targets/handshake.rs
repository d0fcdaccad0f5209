//! The first frame of every connection: arbitrary bytes as the payload of a `Hello`.
//!
//! The server decodes a `Hello` before it knows who is talking, so this decoder meets
//! the least trusted input of all. Checks that it never panics and that an accepted
//! `Hello` re-encodes to a frame that decodes to the same request.
#![no_main]

use ampd_wire::frame::{decode_request, decode_request_payload, encode_request, Opcode, Request};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode_request_payload(1, Opcode::Hello, data) else {
        return;
    };
    assert!(
        matches!(request, Request::Hello(_)),
        "a Hello payload gave {request:?}"
    );
    let mut frame = BytesMut::new();
    if encode_request(1, &request, &mut frame).is_ok() {
        assert_eq!(decode_request(&mut frame), Ok(Some((1, request))));
        assert!(frame.is_empty());
    }
});
