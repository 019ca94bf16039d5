//! Messages: what each frame means.
//!
//! The message table, each payload's layout, the rules of a session and the
//! error codes are in `docs/PROTOCOL.md`; this module is their code.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use crate::bets::{bet_wire_len, BetBatchBuilder, BetFields, BetRecord, Bets, BetsIter};
pub use crate::error_code::ErrorCode;
use crate::frame::{write_header, Frame, HEADER_LEN, VERSION};

/// Bytes of a `BetBatch` frame before its first bet.
pub const BATCH_HEADER_LEN: usize = HEADER_LEN + 8 + 2;

/// Bytes of a `Winners` frame before its first document.
pub const WINNERS_HEADER_LEN: usize = HEADER_LEN + 1 + 2;

/// Bytes of a `Status` frame before its text.
pub const STATUS_HEADER_LEN: usize = HEADER_LEN + 1 + 2;

/// The longest the server holds a `Hello` about a round not open yet,
/// whatever its `wait_ms` asks, before it answers `RoundNotOpen`.
pub const HELLO_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest the server holds a `WinnersQuery` for the draw, whatever
/// its `wait_ms` asks.
pub const MAX_WINNERS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Index sent in an `Error` that concerns no single bet.
pub const NO_BET: u16 = u16::MAX;

pub(crate) mod kind {
    pub const BET_BATCH: u8 = 0x01;
    pub const FINISHED: u8 = 0x02;
    pub const WINNERS_QUERY: u8 = 0x03;
    pub const ECHO: u8 = 0x04;
    pub const HELLO: u8 = 0x05;
    pub const STATUS_QUERY: u8 = 0x06;
    pub const CLOSE_ROUND: u8 = 0x07;
    pub const OPEN_ROUND: u8 = 0x08;
    pub const BATCH_ACK: u8 = 0x81;
    pub const ERROR: u8 = 0x82;
    pub const FINISHED_ACK: u8 = 0x83;
    pub const WINNERS: u8 = 0x84;
    pub const NOT_READY: u8 = 0x85;
    pub const WELCOME: u8 = 0x86;
    pub const STATUS: u8 = 0x87;
}

/// Where a round stands, as a `Welcome` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RoundStage {
    /// Bets are taken.
    Open = 0,
    /// Closed; its draw is being recorded.
    Closed = 1,
    /// Closed and drawn: the winners are there.
    Drawn = 2,
}

impl RoundStage {
    fn from_u8(stage: u8) -> Option<RoundStage> {
        [RoundStage::Open, RoundStage::Closed, RoundStage::Drawn].into_iter().find(|s| *s as u8 == stage)
    }
}

/// Every message of the protocol, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    BetBatch {
        first: u64,
        bets: Bets,
    },
    Finished {
        bets: u64,
    },
    /// The agency's winners; before the draw, the server may hold the
    /// query up to `wait_ms` milliseconds for it (0: answer at once).
    WinnersQuery {
        wait_ms: u32,
    },
    Echo(Bytes),
    /// The connection speaks for `agency`, about `round`; if that round
    /// has not opened yet, the server may hold the answer up to `wait_ms`
    /// milliseconds for it.
    Hello {
        agency: u32,
        round: u64,
        wait_ms: u32,
    },
    /// The operator's: where the open round stands.
    StatusQuery,
    /// The operator's: close the open round now.
    CloseRound,
    /// The operator's: open the next round.
    OpenRound,
    BatchAck {
        first: u64,
        count: u16,
    },
    Error {
        code: ErrorCode,
        first: u64,
        bet: Option<u16>,
        reason: String,
    },
    FinishedAck,
    Winners {
        last: bool,
        documents: Vec<String>,
    },
    NotReady {
        finished: u32,
        expected: u32,
    },
    Welcome {
        stored: u64,
        digest: u128,
        finished: bool,
        stage: RoundStage,
    },
    /// The round's status, as JSON text cut into frames; the last says so.
    Status {
        last: bool,
        text: String,
    },
}

/// Why a frame does not hold a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("message ends inside field `{0}`")]
    Truncated(&'static str),
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
    #[error("field `{field}` holds {value}, which is not allowed")]
    InvalidValue { field: &'static str, value: u32 },
}

impl DecodeError {
    /// The code to answer this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownKind(_) => ErrorCode::UnknownMessage,
            _ => ErrorCode::Malformed,
        }
    }
}

impl Message {
    /// Gives a frame its meaning.
    pub fn from_frame(frame: Frame) -> Result<Message, DecodeError> {
        if frame.version != VERSION {
            return Err(DecodeError::UnsupportedVersion(frame.version));
        }
        let mut src = frame.payload;
        let message = match frame.kind {
            kind::BET_BATCH => {
                let first = get_u64(&mut src, "first")?;
                let count = get_u16(&mut src, "count")?;
                Message::BetBatch { first, bets: Bets::decode(&mut src, count)? }
            }
            kind::FINISHED => Message::Finished { bets: get_u64(&mut src, "bets")? },
            kind::WINNERS_QUERY => Message::WinnersQuery { wait_ms: get_u32(&mut src, "wait_ms")? },
            kind::ECHO => Message::Echo(src.split_off(0)),
            kind::HELLO => Message::Hello {
                agency: get_u32(&mut src, "agency")?,
                round: get_u64(&mut src, "round")?,
                wait_ms: get_u32(&mut src, "wait_ms")?,
            },
            kind::STATUS_QUERY => Message::StatusQuery,
            kind::CLOSE_ROUND => Message::CloseRound,
            kind::OPEN_ROUND => Message::OpenRound,
            kind::BATCH_ACK => {
                Message::BatchAck { first: get_u64(&mut src, "first")?, count: get_u16(&mut src, "count")? }
            }
            kind::ERROR => Message::Error {
                code: ErrorCode::from_u8(get_u8(&mut src, "code")?),
                first: get_u64(&mut src, "first")?,
                bet: Some(get_u16(&mut src, "bet")?).filter(|i| *i != NO_BET),
                reason: get_str(&mut src, "reason")?,
            },
            kind::FINISHED_ACK => Message::FinishedAck,
            kind::WINNERS => {
                let last = get_bool(&mut src, "last")?;
                let count = get_u16(&mut src, "count")?;
                let mut documents = Vec::with_capacity((count as usize).min(src.len() / 2));
                for _ in 0..count {
                    documents.push(get_str(&mut src, "document")?);
                }
                Message::Winners { last, documents }
            }
            kind::NOT_READY => Message::NotReady {
                finished: get_u32(&mut src, "finished")?,
                expected: get_u32(&mut src, "expected")?,
            },
            kind::WELCOME => Message::Welcome {
                stored: get_u64(&mut src, "stored")?,
                digest: get_u128(&mut src, "digest")?,
                finished: get_bool(&mut src, "finished")?,
                stage: {
                    let stage = get_u8(&mut src, "stage")?;
                    RoundStage::from_u8(stage)
                        .ok_or(DecodeError::InvalidValue { field: "stage", value: stage.into() })?
                },
            },
            kind::STATUS => {
                Message::Status { last: get_bool(&mut src, "last")?, text: get_str(&mut src, "text")? }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if src.has_remaining() {
            return Err(DecodeError::TrailingBytes(src.remaining()));
        }
        Ok(message)
    }

    /// Writes the whole frame of this message to `dst`.
    ///
    /// Callers keep within the protocol's limits (see [`crate::MAX_FRAME_LEN`]);
    /// [`Message::wire_len`] tells the size beforehand.
    pub fn encode(&self, dst: &mut BytesMut) {
        let before = dst.len();
        self.encode_unchecked(dst);
        // Paired with the reader's check: what goes out is what its header says.
        assert_eq!(dst.len() - before, self.wire_len(), "a message takes its wire length");
    }

    fn encode_unchecked(&self, dst: &mut BytesMut) {
        write_header(dst, VERSION, self.kind(), self.wire_len() - HEADER_LEN);
        match self {
            Message::BetBatch { first, bets } => {
                dst.put_u64(*first);
                dst.put_u16(bets.count);
                dst.put_slice(&bets.bytes);
            }
            Message::Finished { bets } => dst.put_u64(*bets),
            Message::WinnersQuery { wait_ms } => dst.put_u32(*wait_ms),
            Message::Echo(payload) => dst.put_slice(payload),
            Message::Hello { agency, round, wait_ms } => {
                dst.put_u32(*agency);
                dst.put_u64(*round);
                dst.put_u32(*wait_ms);
            }
            Message::StatusQuery | Message::CloseRound | Message::OpenRound => {}
            Message::BatchAck { first, count } => {
                dst.put_u64(*first);
                dst.put_u16(*count);
            }
            Message::Error { code, first, bet, reason } => {
                dst.put_u8(*code as u8);
                dst.put_u64(*first);
                dst.put_u16(bet.unwrap_or(NO_BET));
                put_str(dst, reason);
            }
            Message::FinishedAck => {}
            Message::Winners { last, documents } => {
                dst.put_u8(u8::from(*last));
                dst.put_u16(u16::try_from(documents.len()).expect("a winners frame holds at most 65535"));
                for document in documents {
                    put_str(dst, document);
                }
            }
            Message::NotReady { finished, expected } => {
                dst.put_u32(*finished);
                dst.put_u32(*expected);
            }
            Message::Welcome { stored, digest, finished, stage } => {
                dst.put_u64(*stored);
                dst.put_u128(*digest);
                dst.put_u8(u8::from(*finished));
                dst.put_u8(*stage as u8);
            }
            Message::Status { last, text } => {
                dst.put_u8(u8::from(*last));
                put_str(dst, text);
            }
        }
    }

    /// Size of this message's frame on the wire, headers included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Message::BetBatch { bets, .. } => BATCH_HEADER_LEN - HEADER_LEN + bets.bytes.len(),
                Message::Finished { .. } => 8,
                Message::WinnersQuery { .. } => 4,
                Message::Echo(payload) => payload.len(),
                Message::Hello { .. } => 16,
                Message::StatusQuery | Message::CloseRound | Message::OpenRound => 0,
                Message::BatchAck { .. } => 10,
                Message::Error { reason, .. } => 11 + 2 + reason.len(),
                Message::FinishedAck => 0,
                Message::Winners { documents, .. } => {
                    WINNERS_HEADER_LEN - HEADER_LEN + documents.iter().map(|d| 2 + d.len()).sum::<usize>()
                }
                Message::NotReady { .. } => 8,
                Message::Welcome { .. } => 26,
                Message::Status { text, .. } => 1 + 2 + text.len(),
            }
    }

    fn kind(&self) -> u8 {
        match self {
            Message::BetBatch { .. } => kind::BET_BATCH,
            Message::Finished { .. } => kind::FINISHED,
            Message::WinnersQuery { .. } => kind::WINNERS_QUERY,
            Message::Echo(_) => kind::ECHO,
            Message::Hello { .. } => kind::HELLO,
            Message::StatusQuery => kind::STATUS_QUERY,
            Message::CloseRound => kind::CLOSE_ROUND,
            Message::OpenRound => kind::OPEN_ROUND,
            Message::BatchAck { .. } => kind::BATCH_ACK,
            Message::Error { .. } => kind::ERROR,
            Message::FinishedAck => kind::FINISHED_ACK,
            Message::Winners { .. } => kind::WINNERS,
            Message::NotReady { .. } => kind::NOT_READY,
            Message::Welcome { .. } => kind::WELCOME,
            Message::Status { .. } => kind::STATUS,
        }
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::BetBatch { .. } => "BetBatch",
            Message::Finished { .. } => "Finished",
            Message::WinnersQuery { .. } => "WinnersQuery",
            Message::Echo(_) => "Echo",
            Message::Hello { .. } => "Hello",
            Message::StatusQuery => "StatusQuery",
            Message::CloseRound => "CloseRound",
            Message::OpenRound => "OpenRound",
            Message::BatchAck { .. } => "BatchAck",
            Message::Error { .. } => "Error",
            Message::FinishedAck => "FinishedAck",
            Message::Winners { .. } => "Winners",
            Message::NotReady { .. } => "NotReady",
            Message::Welcome { .. } => "Welcome",
            Message::Status { .. } => "Status",
        }
    }

    /// Whether only the server sends this message.
    pub fn is_reply(&self) -> bool {
        self.kind() & 0x80 != 0
    }

    /// Whether only the operator may send this message.
    pub fn is_operators(&self) -> bool {
        matches!(self, Message::StatusQuery | Message::CloseRound | Message::OpenRound)
    }
}

/// Writes one bet of a `BetBatch`: its five fields as `str`.
pub(crate) fn put_bet(dst: &mut BytesMut, fields: BetFields<'_>) {
    fields.iter().for_each(|f| put_str(dst, f));
}

/// Writes a `str`: u16 byte length, then the bytes. Longer strings are cut
/// at a character boundary; callers keep fields far below 64 KiB anyway
/// since a frame holds at most 8 KiB.
fn put_str(dst: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst.put_u16(end as u16);
    dst.put_slice(&s.as_bytes()[..end]);
}

fn get_u8(src: &mut Bytes, field: &'static str) -> Result<u8, DecodeError> {
    src.try_get_u8().map_err(|_| DecodeError::Truncated(field))
}

fn get_u16(src: &mut Bytes, field: &'static str) -> Result<u16, DecodeError> {
    src.try_get_u16().map_err(|_| DecodeError::Truncated(field))
}

fn get_u32(src: &mut Bytes, field: &'static str) -> Result<u32, DecodeError> {
    src.try_get_u32().map_err(|_| DecodeError::Truncated(field))
}

fn get_u64(src: &mut Bytes, field: &'static str) -> Result<u64, DecodeError> {
    src.try_get_u64().map_err(|_| DecodeError::Truncated(field))
}

fn get_u128(src: &mut Bytes, field: &'static str) -> Result<u128, DecodeError> {
    src.try_get_u128().map_err(|_| DecodeError::Truncated(field))
}

fn get_bool(src: &mut Bytes, field: &'static str) -> Result<bool, DecodeError> {
    match get_u8(src, field)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::InvalidValue { field, value: other.into() }),
    }
}

fn get_str(src: &mut Bytes, field: &'static str) -> Result<String, DecodeError> {
    let len = get_u16(src, field)? as usize;
    if src.remaining() < len {
        return Err(DecodeError::Truncated(field));
    }
    let bytes = src.split_to(len);
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bets::FIELDS;
    use crate::frame::MAX_FRAME_LEN;
    use proptest::prelude::*;

    fn round_trip(message: &Message) -> Message {
        let mut buf = BytesMut::new();
        message.encode(&mut buf);
        assert_eq!(buf.len(), message.wire_len(), "wire_len of {message:?}");
        let frame = Frame::parse(&mut buf, usize::MAX).unwrap().unwrap();
        assert!(buf.is_empty());
        Message::from_frame(frame).unwrap()
    }

    fn bet() -> impl Strategy<Value = BetRecord> {
        (".{0,20}", ".{0,20}", "[0-9]{0,10}", ".{0,12}", ".{0,6}").prop_map(
            |(first_name, last_name, document, birthdate, number)| BetRecord {
                first_name,
                last_name,
                document,
                birthdate,
                number,
            },
        )
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u64>(), prop::collection::vec(bet(), 0..20))
                .prop_map(|(first, bets)| Message::BetBatch { first, bets: bets.into() }),
            any::<u64>().prop_map(|bets| Message::Finished { bets }),
            any::<u32>().prop_map(|wait_ms| Message::WinnersQuery { wait_ms }),
            prop::collection::vec(any::<u8>(), 0..100).prop_map(|b| Message::Echo(b.into())),
            (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(agency, round, wait_ms)| Message::Hello {
                agency,
                round,
                wait_ms
            }),
            Just(Message::StatusQuery),
            Just(Message::CloseRound),
            Just(Message::OpenRound),
            (any::<u64>(), any::<u16>()).prop_map(|(first, count)| Message::BatchAck { first, count }),
            (1u8..=18, any::<u64>(), prop::option::of(0u16..u16::MAX), ".{0,40}").prop_map(
                |(code, first, bet, reason)| Message::Error {
                    code: ErrorCode::from_u8(code),
                    first,
                    bet,
                    reason
                }
            ),
            Just(Message::FinishedAck),
            (any::<bool>(), prop::collection::vec("[0-9]{1,10}", 0..30))
                .prop_map(|(last, documents)| Message::Winners { last, documents }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(finished, expected)| Message::NotReady { finished, expected }),
            (
                any::<u64>(),
                any::<u128>(),
                any::<bool>(),
                prop::sample::select(vec![RoundStage::Open, RoundStage::Closed, RoundStage::Drawn])
            )
                .prop_map(|(stored, digest, finished, stage)| Message::Welcome {
                    stored,
                    digest,
                    finished,
                    stage
                }),
            (any::<bool>(), ".{0,60}").prop_map(|(last, text)| Message::Status { last, text }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_survives_a_round_trip(m in message()) {
            prop_assert_eq!(round_trip(&m), m);
        }

        #[test]
        fn arbitrary_payloads_never_panic_the_decoder(
            kind in any::<u8>(),
            payload in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = Message::from_frame(Frame { version: VERSION, kind, payload: payload.into() });
        }

        #[test]
        fn every_truncation_of_a_batch_is_an_error(
            bets in prop::collection::vec(bet(), 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = BytesMut::new();
            Message::BetBatch { first: 1, bets: bets.into() }.encode(&mut buf);
            let payload = buf.split_off(HEADER_LEN).freeze();
            let cut = cut.index(payload.len());
            let frame = Frame { version: VERSION, kind: kind::BET_BATCH, payload: payload.slice(..cut) };
            prop_assert!(Message::from_frame(frame).is_err());
        }
    }

    /// Bytes of a field: often UTF-8, sometimes a character cut in two
    /// (its halves in neighbouring fields), now and then longer than 127
    /// bytes (a length that is not two ASCII bytes).
    fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            ".{0,8}".prop_map(String::into_bytes),
            prop::collection::vec(prop::sample::select(vec![b'a', 0xc3, 0xb1, 0x80, 0xe2, 0xff]), 0..6),
            "[a-zñ]{120,140}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn a_batch_decodes_exactly_when_every_field_is_utf8_and_gives_back_its_fields(
            fields in prop::collection::vec(field_bytes(), 5..=25).prop_map(|mut f| {
                f.truncate(f.len() / 5 * 5);
                f
            }),
        ) {
            let mut payload = BytesMut::new();
            payload.put_u64(1);
            payload.put_u16((fields.len() / 5) as u16);
            for field in &fields {
                payload.put_u16(field.len() as u16);
                payload.put_slice(field);
            }
            let frame = Frame { version: VERSION, kind: kind::BET_BATCH, payload: payload.freeze() };
            let decoded = Message::from_frame(frame);
            let all_utf8 = fields.iter().all(|f| std::str::from_utf8(f).is_ok());
            match decoded {
                Ok(Message::BetBatch { bets, .. }) => {
                    prop_assert!(all_utf8);
                    let back: Vec<&[u8]> = bets.iter().flatten().map(str::as_bytes).collect();
                    prop_assert_eq!(back, fields.iter().map(Vec::as_slice).collect::<Vec<_>>());
                }
                Ok(other) => prop_assert!(false, "decoded as {:?}", other),
                Err(e) => {
                    prop_assert!(!all_utf8, "refused valid fields: {}", e);
                    let first_bad = fields.iter().position(|f| std::str::from_utf8(f).is_err()).unwrap();
                    prop_assert_eq!(e, DecodeError::InvalidUtf8(FIELDS[first_bad % 5]));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_batch_builder_writes_the_same_frame_as_the_message(
            first in any::<u64>(),
            bets in prop::collection::vec(bet(), 0..20),
        ) {
            let mut builder = BetBatchBuilder::new(first);
            for b in &bets {
                let before = builder.wire_len();
                builder.push(b.fields());
                prop_assert_eq!(builder.wire_len() - before, bet_wire_len(b.fields()));
            }
            prop_assert_eq!(builder.count(), bets.len());
            let message = Message::BetBatch { first, bets: bets.into() };
            let mut expected = BytesMut::new();
            message.encode(&mut expected);
            prop_assert_eq!(builder.finish(), expected.freeze());
        }
    }

    /// One frame of each message kind: the fuzz target's seeds, kept in
    /// `fuzz/seeds/decode/`. Run with `--ignored` to write them again.
    #[test]
    #[ignore]
    fn write_the_fuzz_seeds() {
        let bet = BetRecord {
            first_name: "Zoë".into(),
            last_name: "Núñez, \"el\"".into(),
            document: "00123456".into(),
            birthdate: "1999-03-17".into(),
            number: "7574".into(),
        };
        let messages = [
            Message::BetBatch { first: 80, bets: vec![bet.clone(), bet].into() },
            Message::Finished { bets: 26936 },
            Message::WinnersQuery { wait_ms: 30_000 },
            Message::Echo(bytes::Bytes::from_static(b"validar-echo-server: hola, Loteria")),
            Message::Hello { agency: 3, round: 1, wait_ms: 5000 },
            Message::StatusQuery,
            Message::CloseRound,
            Message::OpenRound,
            Message::BatchAck { first: 80, count: 2 },
            Message::Error {
                code: ErrorCode::Forbidden,
                first: 0,
                bet: None,
                reason: "agency 4, not 3".into(),
            },
            Message::FinishedAck,
            Message::Winners { last: true, documents: vec!["30904465".into()] },
            Message::NotReady { finished: 1, expected: 5 },
            Message::Welcome {
                stored: 1200,
                digest: u128::MAX / 3,
                finished: false,
                stage: RoundStage::Open,
            },
            Message::Status { last: true, text: "{\"round\":1}".into() },
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decode");
        std::fs::create_dir_all(&dir).unwrap();
        for message in &messages {
            let mut frame = BytesMut::new();
            message.encode(&mut frame);
            std::fs::write(dir.join(message.name()), &frame).unwrap();
        }
    }

    #[test]
    fn accents_travel_as_utf8() {
        let m = Message::BetBatch {
            first: 9,
            bets: vec![BetRecord {
                first_name: "María José".into(),
                last_name: "Núñez, \"el\" Peña".into(),
                document: "00123456".into(),
                birthdate: "1999-03-17".into(),
                number: "7574".into(),
            }]
            .into(),
        };
        assert_eq!(round_trip(&m), m);
    }

    #[test]
    fn invalid_utf8_is_refused_naming_the_field() {
        let mut buf = BytesMut::new();
        let bet = BetRecord {
            first_name: "ab".into(),
            last_name: "c".into(),
            document: "1".into(),
            birthdate: "2000-01-01".into(),
            number: "1".into(),
        };
        Message::BetBatch { first: 1, bets: vec![bet].into() }.encode(&mut buf);
        let at = BATCH_HEADER_LEN + 2; // first byte of first_name
        buf[at] = 0xff;
        let frame = Frame::parse(&mut buf, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(Message::from_frame(frame), Err(DecodeError::InvalidUtf8("first_name")));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let frame = Frame {
            version: VERSION,
            kind: kind::HELLO,
            payload: Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]),
        };
        assert_eq!(Message::from_frame(frame), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn another_version_is_refused() {
        let frame = Frame { version: 1, kind: kind::FINISHED, payload: Bytes::new() };
        assert_eq!(Message::from_frame(frame).unwrap_err().code(), ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn an_echo_is_answered_with_the_identical_bytes() {
        let mut request = BytesMut::new();
        Message::Echo(Bytes::from_static(b"hola")).encode(&mut request);
        let reply = match round_trip(&Message::Echo(Bytes::from_static(b"hola"))) {
            m @ Message::Echo(_) => {
                let mut b = BytesMut::new();
                m.encode(&mut b);
                b
            }
            other => panic!("decoded as {other:?}"),
        };
        assert_eq!(reply, request);
    }
}
