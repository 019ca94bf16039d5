//! Framing: finding where one frame ends in a stream of bytes.
//!
//! This module does no I/O. [`Frame::parse`] looks at whatever bytes have
//! arrived so far and either takes one whole frame off the front, says it
//! needs more, or refuses the stream. It checks the announced length
//! *before* waiting for (and buffering) the body, so a peer cannot make us
//! allocate more than [`MAX_FRAME_LEN`] bytes per connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version carried in every frame. Version 2 numbers an
/// agency's bets and opens every connection with `Hello`.
pub const VERSION: u8 = 3;

/// Largest frame on the wire, every header included.
pub const MAX_FRAME_LEN: usize = 8192;

/// Bytes before the payload: length (4), version (1), kind (1).
pub const HEADER_LEN: usize = 6;

/// Bytes taken by the length prefix itself.
const LENGTH_LEN: usize = 4;

/// One frame, with its payload still uninterpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub version: u8,
    pub kind: u8,
    pub payload: Bytes,
}

/// Why a byte stream cannot be cut into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame announces {len} bytes after its length, fewer than its 2-byte header")]
    TooShort { len: usize },
}

impl Frame {
    /// Takes one whole frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame; the bytes
    /// stay in `buf` until more arrive. Frames larger than `max_len` bytes
    /// (headers included) are refused as soon as their length is known.
    pub fn parse(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
        if buf.len() < LENGTH_LEN {
            return Ok(None);
        }
        let announced = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let total = LENGTH_LEN.saturating_add(announced);
        if total > max_len {
            return Err(FrameError::TooLarge { len: total, max: max_len });
        }
        if announced < HEADER_LEN - LENGTH_LEN {
            return Err(FrameError::TooShort { len: announced });
        }
        if buf.len() < total {
            // Make room once for the rest of this frame, no more.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let (version, kind) = (buf[LENGTH_LEN], buf[LENGTH_LEN + 1]);
        // The payload gets an allocation of its own size: a frame kept for
        // a while (a batch waiting for the disk) must not keep the whole
        // read buffer it came from alive, and the buffer is reused.
        let payload = Bytes::copy_from_slice(&buf[HEADER_LEN..total]);
        buf.advance(total);
        let frame = Frame { version, kind, payload };
        assert_eq!(frame.wire_len(), total, "a frame is as long as its length field says");
        assert!(frame.wire_len() <= max_len, "no frame past the limit is ever taken");
        Ok(Some(frame))
    }

    /// Writes the whole frame, headers included, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let before = dst.len();
        write_header(dst, self.version, self.kind, self.payload.len());
        dst.put_slice(&self.payload);
        assert_eq!(dst.len() - before, self.wire_len(), "a frame takes its wire length");
    }

    /// Size of the whole frame on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Writes the header of a frame whose payload is `payload_len` bytes long.
pub(crate) fn write_header(dst: &mut BytesMut, version: u8, kind: u8, payload_len: usize) {
    let announced =
        u32::try_from(payload_len + HEADER_LEN - LENGTH_LEN).expect("payloads are bounded far below 4 GiB");
    dst.reserve(HEADER_LEN + payload_len);
    dst.put_u32(announced);
    dst.put_u8(version);
    dst.put_u8(kind);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, payload: &[u8]) -> Frame {
        Frame { version: VERSION, kind, payload: Bytes::copy_from_slice(payload) }
    }

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf);
        }
        buf.to_vec()
    }

    #[test]
    fn a_partial_frame_waits_for_more_bytes() {
        let bytes = encoded(&[frame(7, b"hello")]);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(Frame::parse(&mut buf, MAX_FRAME_LEN), Ok(None));
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(Frame::parse(&mut buf, MAX_FRAME_LEN), Ok(Some(frame(7, b"hello"))));
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_body_arrives() {
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            Frame::parse(&mut buf, MAX_FRAME_LEN),
            Err(FrameError::TooLarge { len: 4 + 0x7fff_ffff, max: MAX_FRAME_LEN })
        );
        assert!(buf.capacity() < MAX_FRAME_LEN);
    }

    #[test]
    fn a_frame_of_exactly_the_limit_is_accepted() {
        let f = frame(1, &vec![b'x'; MAX_FRAME_LEN - HEADER_LEN]);
        let mut buf = BytesMut::from(&encoded(std::slice::from_ref(&f))[..]);
        assert_eq!(f.wire_len(), MAX_FRAME_LEN);
        assert_eq!(Frame::parse(&mut buf, MAX_FRAME_LEN), Ok(Some(f)));
    }

    #[test]
    fn a_length_too_short_for_the_header_is_refused() {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 1][..]);
        assert_eq!(Frame::parse(&mut buf, MAX_FRAME_LEN), Err(FrameError::TooShort { len: 1 }));
    }

    proptest! {
        #[test]
        fn any_split_of_the_stream_yields_the_same_frames(
            frames in prop::collection::vec(
                (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let frames: Vec<Frame> = frames.iter().map(|(k, p)| frame(*k, p)).collect();
            let bytes = encoded(&frames);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();

            let mut buf = BytesMut::new();
            let mut seen = Vec::new();
            let mut from = 0;
            for to in cuts {
                buf.extend_from_slice(&bytes[from..to]);
                from = to;
                while let Some(f) = Frame::parse(&mut buf, MAX_FRAME_LEN).unwrap() {
                    seen.push(f);
                }
            }
            prop_assert_eq!(seen, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics_and_never_buffers_past_the_limit(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = Frame::parse(&mut buf, MAX_FRAME_LEN) {}
            prop_assert!(buf.capacity() <= MAX_FRAME_LEN.max(bytes.len()));
        }
    }
}
