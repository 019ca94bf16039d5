//! Cutting a stream of bets into batches, encoded as they come.
//!
//! A batch holds at most `max_amount` bets and its frame is at most
//! [`MAX_FRAME_LEN`] bytes, headers included: a batch is cut early when the
//! next bet would cross that size. Bets go from the file's fields straight
//! into the frame, never through owned strings. Each batch carries the
//! ordinal of its first bet; a bet too large for a frame of its own never
//! gets one (see [`fits_a_frame`]): the reader sets it aside first.

use bytes::{Bytes, BytesMut};
use protocol::{
    bet_wire_len, BetBatchBuilder, BetFields, BetRecord, Frame, Message, BATCH_HEADER_LEN, MAX_FRAME_LEN,
};

/// One `BetBatch` frame, ready to send, with the file line of each bet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Ordinal of its first bet.
    pub first: u64,
    pub frame: Bytes,
    pub lines: Vec<u64>,
    /// Bytes of the source up to the end of its last bet's row.
    pub end: u64,
}

/// Whether a bet fits in a batch frame of its own.
pub fn fits_a_frame(bet: BetFields<'_>) -> bool {
    BATCH_HEADER_LEN + bet_wire_len(bet) <= MAX_FRAME_LEN
}

impl Batch {
    /// The bets of the frame, decoded again (for logging and tests).
    pub fn bets(&self) -> Vec<BetRecord> {
        let mut buf = BytesMut::from(&self.frame[..]);
        match Frame::parse(&mut buf, MAX_FRAME_LEN).ok().flatten().map(Message::from_frame) {
            Some(Ok(Message::BetBatch { bets, .. })) => bets.to_records(),
            _ => Vec::new(),
        }
    }
}

/// Collects bets and hands back batches as they fill.
#[derive(Debug)]
pub struct BatchCutter {
    max_amount: usize,
    /// Ordinal of the first bet of the batch being filled.
    first: u64,
    current: BetBatchBuilder,
    lines: Vec<u64>,
    /// Bytes of the source up to the end of the last bet pushed.
    end: u64,
}

impl BatchCutter {
    /// Batches from ordinal `first` on; `max_amount` is at least 1 (the
    /// configuration makes sure).
    pub fn new(first: u64, max_amount: usize) -> BatchCutter {
        BatchCutter {
            max_amount: max_amount.max(1),
            first,
            current: BetBatchBuilder::new(first),
            lines: Vec::new(),
            end: 0,
        }
    }

    /// Adds a bet that fits a frame, from `line` of the source, whose row
    /// ends `end` bytes into it; returns the batch that closes, if any.
    pub fn push(&mut self, bet: BetFields<'_>, line: u64, end: u64) -> Option<Batch> {
        assert!(fits_a_frame(bet), "bets too large for a frame are set aside before they get an ordinal");
        let len = bet_wire_len(bet);
        let full = (self.current.wire_len() + len > MAX_FRAME_LEN).then(|| self.take()).flatten();
        self.current.push(bet);
        self.lines.push(line);
        assert!(end >= self.end, "rows come in the order of the source");
        self.end = end;
        assert!(self.lines.len() <= self.max_amount, "a batch holds at most max_amount bets");
        assert!(self.current.wire_len() <= MAX_FRAME_LEN, "a bet joins a batch only if it fits");
        match full {
            Some(batch) => Some(batch),
            None if self.lines.len() == self.max_amount => self.take(),
            None => None,
        }
    }

    /// The last, partial batch, if any.
    pub fn finish(mut self) -> Option<Batch> {
        self.take()
    }

    fn take(&mut self) -> Option<Batch> {
        if self.lines.is_empty() {
            return None;
        }
        let first = self.first;
        self.first += self.lines.len() as u64;
        let batch = Batch {
            first,
            frame: std::mem::replace(&mut self.current, BetBatchBuilder::new(self.first)).finish(),
            lines: std::mem::take(&mut self.lines),
            end: self.end,
        };
        assert!(batch.frame.len() <= MAX_FRAME_LEN, "a batch fits in a frame");
        assert_eq!(self.first, first + batch.lines.len() as u64, "batches are consecutive");
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bet(name_len: usize) -> BetRecord {
        BetRecord {
            first_name: "x".repeat(name_len),
            last_name: "Lorca".into(),
            document: "30904465".into(),
            birthdate: "1999-03-17".into(),
            number: "7574".into(),
        }
    }

    fn cut_all(bets: &[BetRecord], max_amount: usize) -> Vec<Batch> {
        let mut cutter = BatchCutter::new(0, max_amount);
        let mut batches = Vec::new();
        for (i, bet) in bets.iter().enumerate() {
            batches.extend(cutter.push(bet.fields(), i as u64 + 1, i as u64 + 1));
        }
        batches.extend(cutter.finish());
        batches
    }

    #[test]
    fn every_batch_but_the_last_has_exactly_max_amount() {
        let batches = cut_all(&vec![bet(5); 991], 10);
        assert_eq!(batches.len(), 100);
        assert!(batches[..99].iter().all(|b| b.bets().len() == 10));
        assert_eq!(batches[99].bets().len(), 1);
        assert_eq!(batches[99].lines, [991]);
        let firsts: Vec<u64> = batches.iter().map(|b| b.first).collect();
        assert_eq!(firsts, (0..100).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn long_names_cut_the_batch_at_8_kib() {
        let batches = cut_all(&vec![bet(1000); 30], 100);
        assert!(batches.len() > 1);
        assert!(batches.iter().all(|b| b.frame.len() <= MAX_FRAME_LEN));
        assert_eq!(batches.iter().map(|b| b.bets().len()).sum::<usize>(), 30);
    }

    #[test]
    fn a_bet_fits_a_frame_up_to_exactly_its_size() {
        let fixed = bet_wire_len(bet(0).fields());
        let largest = MAX_FRAME_LEN - BATCH_HEADER_LEN - fixed;
        assert!(fits_a_frame(bet(largest).fields()));
        assert!(!fits_a_frame(bet(largest + 1).fields()));
    }

    proptest! {
        #[test]
        fn batches_keep_every_bet_in_order_within_both_limits(
            lens in prop::collection::vec(0usize..3000, 0..200),
            max_amount in 1usize..150,
        ) {
            let bets: Vec<BetRecord> = lens.iter().map(|&n| bet(n)).collect();
            let batches = cut_all(&bets, max_amount);
            let mut lines: Vec<u64> = Vec::new();
            let mut decoded = Vec::new();
            for b in &batches {
                prop_assert_eq!(b.first, decoded.len() as u64);
                let these = b.bets();
                prop_assert!(!these.is_empty() && these.len() <= max_amount);
                prop_assert_eq!(these.len(), b.lines.len());
                prop_assert!(b.frame.len() <= MAX_FRAME_LEN);
                lines.extend(&b.lines);
                decoded.extend(these);
            }
            prop_assert_eq!(lines, (1..=bets.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(decoded, bets);
        }
    }
}
