//! Cutting a stream of bets into batches.
//!
//! A batch holds at most `max_amount` bets and its frame is at most
//! [`MAX_FRAME_LEN`] bytes, headers included: a batch is cut early when the
//! next bet would cross that size. A bet too large for a frame of its own
//! is set aside with its line.

use protocol::{BetRecord, BATCH_HEADER_LEN, MAX_FRAME_LEN};

/// Bets that travel in one frame, with the file line of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bets: Vec<BetRecord>,
    pub lines: Vec<u64>,
}

impl Batch {
    fn with_capacity(n: usize) -> Batch {
        Batch { bets: Vec::with_capacity(n), lines: Vec::with_capacity(n) }
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
    max_amount: usize,
    current: Batch,
    /// Frame size of `current` so far.
    size: usize,
}

impl BatchCutter {
    /// `max_amount` is at least 1 (the configuration makes sure).
    pub fn new(max_amount: usize) -> BatchCutter {
        let max_amount = max_amount.max(1);
        BatchCutter { max_amount, current: Batch::with_capacity(max_amount.min(1024)), size: BATCH_HEADER_LEN }
    }

    /// Adds a bet; returns whatever that completes (at most a batch and a
    /// refusal, or the batch the bet closed).
    pub fn push(&mut self, bet: BetRecord, line: u64) -> Vec<Cut> {
        let len = bet.encoded_len();
        if BATCH_HEADER_LEN + len > MAX_FRAME_LEN {
            return vec![Cut::TooLarge { line, size: BATCH_HEADER_LEN + len }];
        }
        let mut out = Vec::new();
        if self.size + len > MAX_FRAME_LEN {
            out.extend(self.take());
        }
        self.current.bets.push(bet);
        self.current.lines.push(line);
        self.size += len;
        if self.current.bets.len() == self.max_amount {
            out.extend(self.take());
        }
        out
    }

    /// The last, partial batch, if any.
    pub fn finish(mut self) -> Option<Batch> {
        self.take().and_then(|cut| match cut {
            Cut::Batch(batch) => Some(batch),
            Cut::TooLarge { .. } => None,
        })
    }

    fn take(&mut self) -> Option<Cut> {
        if self.current.bets.is_empty() {
            return None;
        }
        self.size = BATCH_HEADER_LEN;
        let next = Batch::with_capacity(self.max_amount.min(1024));
        Some(Cut::Batch(std::mem::replace(&mut self.current, next)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Message;
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

    fn cut_all(bets: Vec<BetRecord>, max_amount: usize) -> (Vec<Batch>, Vec<u64>) {
        let mut cutter = BatchCutter::new(max_amount);
        let mut batches = Vec::new();
        let mut too_large = Vec::new();
        for (i, bet) in bets.into_iter().enumerate() {
            for cut in cutter.push(bet, i as u64 + 1) {
                match cut {
                    Cut::Batch(b) => batches.push(b),
                    Cut::TooLarge { line, .. } => too_large.push(line),
                }
            }
        }
        batches.extend(cutter.finish());
        (batches, too_large)
    }

    #[test]
    fn every_batch_but_the_last_has_exactly_max_amount() {
        let (batches, _) = cut_all(vec![bet(5); 991], 10);
        assert_eq!(batches.len(), 100);
        assert!(batches[..99].iter().all(|b| b.bets.len() == 10));
        assert_eq!(batches[99].bets.len(), 1);
        assert_eq!(batches[99].lines, [991]);
    }

    #[test]
    fn long_names_cut_the_batch_at_8_kib() {
        let (batches, _) = cut_all(vec![bet(1000); 30], 100);
        assert!(batches.len() > 1);
        for b in &batches {
            let frame = Message::BetBatch { agency: 1, seq: 1, bets: b.bets.clone() };
            assert!(frame.wire_len() <= MAX_FRAME_LEN);
        }
        assert_eq!(batches.iter().map(|b| b.bets.len()).sum::<usize>(), 30);
    }

    #[test]
    fn a_bet_too_large_for_any_frame_is_set_aside_with_its_line() {
        let (batches, too_large) = cut_all(vec![bet(3), bet(9000), bet(3)], 10);
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
            let (batches, too_large) = cut_all(bets.clone(), max_amount);
            prop_assert!(too_large.is_empty());
            let mut lines: Vec<u64> = Vec::new();
            for b in &batches {
                prop_assert!(!b.bets.is_empty() && b.bets.len() <= max_amount);
                let frame = Message::BetBatch { agency: 1, seq: 1, bets: b.bets.clone() };
                prop_assert!(frame.wire_len() <= MAX_FRAME_LEN);
                lines.extend(&b.lines);
            }
            prop_assert_eq!(lines, (1..=bets.len() as u64).collect::<Vec<_>>());
        }
    }
}
