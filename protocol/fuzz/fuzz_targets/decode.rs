//! Arbitrary bytes from a peer: framing and decoding must never panic, never
//! buffer past the frame limit, and what decodes must encode back to the
//! same message (every kind, `Hello` and `Welcome` and every error code
//! included).
//!
//! Run with `cargo +nightly fuzz run decode` from `protocol/`; the seeds in
//! `fuzz/seeds/decode/` hold one frame of each kind.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::{Frame, Message, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = Frame::parse(&mut buf, MAX_FRAME_LEN) {
        assert!(buf.capacity() <= MAX_FRAME_LEN.max(data.len()), "no buffering past the limit");
        if let Ok(message) = Message::from_frame(frame) {
            let mut again = BytesMut::new();
            message.encode(&mut again);
            assert!(again.len() <= MAX_FRAME_LEN, "what decodes fits a frame again");
            assert_eq!(again.len(), message.wire_len());
            let frame = Frame::parse(&mut again, MAX_FRAME_LEN).expect("a frame").expect("a whole frame");
            assert_eq!(Message::from_frame(frame).as_ref(), Ok(&message), "a round trip keeps the message");
        }
    }
});
