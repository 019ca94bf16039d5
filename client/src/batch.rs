//! Cutting a stream of bets into batches, encoded as they come.
//!
//! A batch holds at most `max_amount` bets and its frame is at most
//! [`MAX_FRAME_LEN`] bytes, headers included: a batch is cut early when the
//! next bet would cross that size. A bet too large for a frame of its own
//! is set aside with its line. Bets go from the file's fields straight into
//! the frame, never through owned strings.

use bytes::{Bytes, BytesMut};
use protocol::{
    bet_wire_len, BetBatchBuilder, BetFields, BetRecord, Frame, Message, BATCH_HEADER_LEN, MAX_FRAME_LEN,
};

/// One `BetBatch` frame, ready to send, with the file line of each bet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seq: u32,
    pub frame: Bytes,
    pub lines: Vec<u64>,
}

impl Batch {
    /// The bets of the frame, decoded again (for logging and tests).
    pub fn bets(&self) -> Vec<BetRecord> {
        let mut buf = BytesMut::from(&self.frame[..]);
        match Frame::parse(&mut buf, MAX_FRAME_LEN).ok().flatten().map(Message::from_frame) {
            Some(Ok(Message::BetBatch { bets, .. })) => bets,
            _ => Vec::new(),
        }
    }
}

/// What [`BatchCutter::push`] may hand back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// A full batch, ready to send.
    Batch(Batch),
    /// A bet that cannot fit in a frame of its own.
    TooLarge { line: u64, size: usize },
}

/// Collects bets and hands back batches as they fill.
#[derive(Debug)]
pub struct BatchCutter {
    agency: u32,
    max_amount: usize,
    /// Sequence number of the batch being filled; batches count from 1.
    seq: u32,
    current: BetBatchBuilder,
    lines: Vec<u64>,
}

impl BatchCutter {
    /// `max_amount` is at least 1 (the configuration makes sure).
    pub fn new(agency: u32, max_amount: usize) -> BatchCutter {
        BatchCutter {
            agency,
            max_amount: max_amount.max(1),
            seq: 1,
            current: BetBatchBuilder::new(agency, 1),
            lines: Vec::new(),
        }
    }

    /// Adds a bet; returns what that completes: the batch it closed, or a
    /// refusal for a bet that fits no frame.
    pub fn push(&mut self, bet: BetFields<'_>, line: u64) -> Option<Cut> {
        let len = bet_wire_len(bet);
        if BATCH_HEADER_LEN + len > MAX_FRAME_LEN {
            return Some(Cut::TooLarge { line, size: BATCH_HEADER_LEN + len });
        }
        let full = (self.current.wire_len() + len > MAX_FRAME_LEN).then(|| self.take()).flatten();
        self.current.push(bet);
        self.lines.push(line);
        match full {
            Some(batch) => Some(Cut::Batch(batch)),
            None if self.lines.len() == self.max_amount => self.take().map(Cut::Batch),
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
        let next = BetBatchBuilder::new(self.agency, self.seq + 1);
        let batch = Batch {
            seq: self.seq,
            frame: std::mem::replace(&mut self.current, next).finish(),
            lines: std::mem::take(&mut self.lines),
        };
        self.seq += 1;
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

    fn cut_all(bets: &[BetRecord], max_amount: usize) -> (Vec<Batch>, Vec<u64>) {
        let mut cutter = BatchCutter::new(1, max_amount);
        let mut batches = Vec::new();
        let mut too_large = Vec::new();
        for (i, bet) in bets.iter().enumerate() {
            match cutter.push(bet.fields(), i as u64 + 1) {
                Some(Cut::Batch(b)) => batches.push(b),
                Some(Cut::TooLarge { line, .. }) => too_large.push(line),
                None => {}
            }
        }
        batches.extend(cutter.finish());
        (batches, too_large)
    }

    #[test]
    fn every_batch_but_the_last_has_exactly_max_amount() {
        let (batches, _) = cut_all(&vec![bet(5); 991], 10);
        assert_eq!(batches.len(), 100);
        assert!(batches[..99].iter().all(|b| b.bets().len() == 10));
        assert_eq!(batches[99].bets().len(), 1);
        assert_eq!(batches[99].lines, [991]);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn long_names_cut_the_batch_at_8_kib() {
        let (batches, _) = cut_all(&vec![bet(1000); 30], 100);
        assert!(batches.len() > 1);
        assert!(batches.iter().all(|b| b.frame.len() <= MAX_FRAME_LEN));
        assert_eq!(batches.iter().map(|b| b.bets().len()).sum::<usize>(), 30);
    }

    #[test]
    fn a_bet_too_large_for_any_frame_is_set_aside_with_its_line() {
        let (batches, too_large) = cut_all(&[bet(3), bet(9000), bet(3)], 10);
        assert_eq!(too_large, [2]);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].lines, [1, 3]);
    }

    proptest! {
        #[test]
        fn batches_keep_every_bet_in_order_within_both_limits(
            lens in prop::collection::vec(0usize..3000, 0..200),
            max_amount in 1usize..150,
        ) {
            let bets: Vec<BetRecord> = lens.iter().map(|&n| bet(n)).collect();
            let (batches, too_large) = cut_all(&bets, max_amount);
            prop_assert!(too_large.is_empty());
            let mut lines: Vec<u64> = Vec::new();
            let mut decoded = Vec::new();
            for b in &batches {
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
