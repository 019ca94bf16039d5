//! Arbitrary bytes from a peer: framing and decoding must never panic, and
//! never buffer past the frame limit.
//!
//! Run with `cargo +nightly fuzz run decode` from `protocol/`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::{Frame, Message, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = Frame::parse(&mut buf, MAX_FRAME_LEN) {
        if let Ok(message) = Message::from_frame(frame) {
            // What decodes must encode back within the limit it came in.
            let mut again = BytesMut::new();
            message.encode(&mut again);
            assert!(again.len() <= MAX_FRAME_LEN);
        }
    }
});
