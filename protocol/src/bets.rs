//! A batch's bets as they travel: five text fields each, checked once
//! when decoded and then borrowed from the frame, and built straight from
//! borrowed fields on the agency's side.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{write_header, VERSION};
use crate::message::{kind, put_bet, DecodeError, BATCH_HEADER_LEN};

/// One bet as it travels: text fields exactly as the agency read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetRecord {
    pub first_name: String,
    pub last_name: String,
    pub document: String,
    pub birthdate: String,
    pub number: String,
}

/// The five text fields of a bet, borrowed: first name, last name,
/// document, birthdate, number.
pub type BetFields<'a> = [&'a str; 5];

/// Bytes a bet with these fields takes inside a `BetBatch` frame.
pub fn bet_wire_len(fields: BetFields<'_>) -> usize {
    fields.iter().map(|f| 2 + f.len()).sum()
}

impl BetRecord {
    /// The fields, borrowed.
    pub fn fields(&self) -> BetFields<'_> {
        [&self.first_name, &self.last_name, &self.document, &self.birthdate, &self.number]
    }

    /// Bytes this bet takes inside a `BetBatch` frame.
    pub fn encoded_len(&self) -> usize {
        bet_wire_len(self.fields())
    }

    fn from_fields([first_name, last_name, document, birthdate, number]: BetFields<'_>) -> BetRecord {
        BetRecord {
            first_name: first_name.into(),
            last_name: last_name.into(),
            document: document.into(),
            birthdate: birthdate.into(),
            number: number.into(),
        }
    }
}

/// The fields of a bet, in order, as named in errors.
pub(crate) const FIELDS: [&str; 5] = ["first_name", "last_name", "document", "birthdate", "number"];

/// The bets of a `BetBatch` as they travel: `count` bets of five `str`
/// each. Decoding checks every length and that every field is UTF-8, once;
/// reading them borrows each field from the frame: no copy, no allocation
/// per field.
#[derive(Clone, PartialEq, Eq)]
pub struct Bets {
    pub(crate) count: u16,
    pub(crate) bytes: Bytes,
}

impl Bets {
    /// How many bets.
    pub fn len(&self) -> usize {
        self.count.into()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the bets take on the wire, their lengths included.
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Each bet's fields, borrowed from the frame.
    pub fn iter(&self) -> BetsIter<'_> {
        BetsIter {
            text: Text::of(&self.bytes),
            ranges: FieldRanges { bytes: &self.bytes, at: 0 },
            left: self.count,
        }
    }

    /// The bets, owned (for tests and logs).
    pub fn to_records(&self) -> Vec<BetRecord> {
        self.iter().map(BetRecord::from_fields).collect()
    }

    /// Takes `count` bets off the front of `src`, checking each field.
    pub(crate) fn decode(src: &mut Bytes, count: u16) -> Result<Bets, DecodeError> {
        let mut at = 0;
        for _ in 0..count {
            for field in FIELDS {
                let len = src.get(at..at + 2).ok_or(DecodeError::Truncated(field))?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                src.get(at + 2..at + 2 + len).ok_or(DecodeError::Truncated(field))?;
                at += 2 + len;
            }
        }
        let text = Text::of(&src[..at]);
        let mut ranges = FieldRanges { bytes: &src[..at], at: 0 };
        for field in FIELDS.iter().cycle().take(usize::from(count) * FIELDS.len()) {
            let range = ranges.next().expect("every length was checked above");
            text.get(range).ok_or(DecodeError::InvalidUtf8(field))?;
        }
        Ok(Bets { count, bytes: src.split_to(at) })
    }
}

/// Where each field of some bets is, the lengths in front of them checked.
#[derive(Debug, Clone)]
struct FieldRanges<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for FieldRanges<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<std::ops::Range<usize>> {
        let len = self.bytes.get(self.at..self.at + 2)?;
        let range = self.at + 2..self.at + 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
        self.at = range.end;
        Some(range)
    }
}

/// The text of a batch's bets, checked for UTF-8 in one pass when it can
/// be: a length of less than 128 bytes is two ASCII bytes, which no
/// multi-byte character can straddle, so when the whole is UTF-8 a field
/// is exactly when it starts and ends on a character boundary.
enum Text<'a> {
    Whole(&'a str),
    Fields(&'a [u8]),
}

impl<'a> Text<'a> {
    fn of(bytes: &'a [u8]) -> Text<'a> {
        match simdutf8::basic::from_utf8(bytes) {
            Ok(whole) => Text::Whole(whole),
            Err(_) => Text::Fields(bytes),
        }
    }

    /// The field at `range`, if it is UTF-8.
    fn get(&self, range: std::ops::Range<usize>) -> Option<&'a str> {
        match *self {
            Text::Whole(whole) => whole.get(range),
            Text::Fields(bytes) => std::str::from_utf8(&bytes[range]).ok(),
        }
    }
}

impl From<&[BetRecord]> for Bets {
    fn from(records: &[BetRecord]) -> Bets {
        let mut bytes = BytesMut::new();
        records.iter().for_each(|r| put_bet(&mut bytes, r.fields()));
        let count = u16::try_from(records.len()).expect("a batch holds at most 65535 bets");
        Bets { count, bytes: bytes.freeze() }
    }
}

impl From<Vec<BetRecord>> for Bets {
    fn from(records: Vec<BetRecord>) -> Bets {
        Bets::from(records.as_slice())
    }
}

impl std::fmt::Debug for Bets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The bets of a [`Bets`], in order, each as its five fields.
pub struct BetsIter<'a> {
    text: Text<'a>,
    ranges: FieldRanges<'a>,
    left: u16,
}

impl std::fmt::Debug for BetsIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BetsIter").field("at", &self.ranges.at).field("left", &self.left).finish()
    }
}

impl<'a> Iterator for BetsIter<'a> {
    type Item = BetFields<'a>;

    fn next(&mut self) -> Option<BetFields<'a>> {
        self.left = self.left.checked_sub(1)?;
        Some(std::array::from_fn(|_| {
            let range = self.ranges.next().expect("every length was checked when the batch was decoded");
            self.text.get(range).expect("every field was checked when the batch was decoded")
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left.into(), Some(self.left.into()))
    }
}

impl ExactSizeIterator for BetsIter<'_> {}

/// Builds a `BetBatch` frame bet by bet, straight from borrowed fields,
/// so that an agency never copies a bet into owned strings on its way to
/// the wire.
#[derive(Debug)]
pub struct BetBatchBuilder {
    buf: BytesMut,
    count: u16,
}

impl BetBatchBuilder {
    /// A batch whose first bet has ordinal `first`.
    pub fn new(first: u64) -> BetBatchBuilder {
        let mut buf = BytesMut::with_capacity(crate::MAX_FRAME_LEN);
        write_header(&mut buf, VERSION, kind::BET_BATCH, 0);
        buf.put_u64(first);
        buf.put_u16(0);
        BetBatchBuilder { buf, count: 0 }
    }

    /// Size of the frame so far.
    pub fn wire_len(&self) -> usize {
        self.buf.len()
    }

    /// Bets so far.
    pub fn count(&self) -> usize {
        self.count.into()
    }

    /// Appends a bet. The caller keeps the frame within its limit, checking
    /// [`bet_wire_len`] against [`BetBatchBuilder::wire_len`].
    pub fn push(&mut self, fields: BetFields<'_>) {
        put_bet(&mut self.buf, fields);
        self.count += 1;
    }

    /// The finished frame.
    pub fn finish(mut self) -> Bytes {
        let announced = u32::try_from(self.buf.len() - 4).expect("a batch frame is at most 8 KiB");
        self.buf[0..4].copy_from_slice(&announced.to_be_bytes());
        self.buf[BATCH_HEADER_LEN - 2..BATCH_HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        self.buf.freeze()
    }
}
