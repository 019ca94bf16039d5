//! A batch of an agency's bets, checked and turned into the rows they
//! take in the bets file.
//!
//! The server encodes each batch where it arrives (in parallel with every
//! other connection), so that the one writer of the round's files only
//! writes.

use crate::bet::{BetRef, InvalidBet};
use crate::progress::Share;
use crate::storage::write_row;

/// A batch's valid bets, as rows of the bets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Ordinals and digest share of its bets.
    share: Share,
    /// Their rows, as they go into `bets.csv`.
    rows: Vec<u8>,
    /// Documents of its winning bets, in order.
    winners: Vec<String>,
}

/// Why a batch cannot be stored at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a batch holds at least one bet")]
    Empty,
    #[error("a batch starting at bet {first} would end past the last ordinal")]
    PastLastOrdinal { first: u64 },
    #[error("bet {index}: {error}")]
    Invalid { index: usize, error: InvalidBet },
}

impl EncodedBatch {
    /// Checks every bet of a batch of `agency` whose first bet has ordinal
    /// `first`, and writes their rows into a buffer of exactly
    /// `max_row_bytes` (the most these bets can take: what the writer's
    /// queue reserved for them). One invalid bet refuses the whole batch.
    pub fn encode<'a>(
        agency: u32,
        first: u64,
        bets: impl ExactSizeIterator<Item = [&'a str; 5]>,
        max_row_bytes: usize,
    ) -> Result<EncodedBatch, BatchError> {
        let count = bets.len();
        if count == 0 {
            return Err(BatchError::Empty);
        }
        if first.checked_add(count as u64).is_none() {
            return Err(BatchError::PastLastOrdinal { first });
        }
        let mut batch = EncodedBatch {
            share: Share::starting_at(first),
            rows: Vec::with_capacity(max_row_bytes),
            winners: Vec::new(),
        };
        for (index, fields) in bets.enumerate() {
            let bet = BetRef::parse(fields).map_err(|error| BatchError::Invalid { index, error })?;
            let start = batch.rows.len();
            write_row(&mut batch.rows, agency, &bet);
            batch.share.push(&batch.rows[start..]);
            if bet.has_won() {
                batch.winners.push(bet.document.to_owned());
            }
        }
        assert_eq!(batch.share.bets(), count as u64, "every bet of the batch is in its share");
        assert!(batch.rows.len() <= max_row_bytes, "rows take at most the room reserved for them");
        assert_eq!(batch.rows.capacity(), max_row_bytes, "rows take the memory reserved for them, no more");
        Ok(batch)
    }

    /// Ordinal of the first bet.
    pub fn first(&self) -> u64 {
        self.share.first()
    }

    /// How many bets.
    pub fn bets(&self) -> u64 {
        self.share.bets()
    }

    pub fn share(&self) -> &Share {
        &self.share
    }

    /// The rows, line ends included.
    pub fn rows(&self) -> &[u8] {
        &self.rows
    }

    /// The documents of its winning bets, taken out (once stored).
    pub fn take_winners(&mut self) -> Vec<String> {
        std::mem::take(&mut self.winners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANA: [&str; 5] = ["Ana", "Paz", "123", "1999-03-17", "7574"];
    const BETO: [&str; 5] = ["Beto", "Paz", "456", "1999-03-17", "12"];

    #[test]
    fn a_batch_becomes_its_rows_share_and_winners() {
        let mut batch = EncodedBatch::encode(3, 10, [ANA, BETO].into_iter(), 256).unwrap();
        assert_eq!(batch.rows(), b"3,Ana,Paz,123,1999-03-17,7574\n3,Beto,Paz,456,1999-03-17,12\n");
        assert_eq!((batch.first(), batch.bets()), (10, 2));
        assert_eq!(batch.take_winners(), ["123"]);
    }

    #[test]
    fn one_invalid_bet_refuses_the_batch_and_says_which() {
        let bad = ["Carla", "Paz", "78x", "1999-03-17", "1"];
        let err = EncodedBatch::encode(1, 0, [ANA, bad, BETO].into_iter(), 256).unwrap_err();
        assert!(matches!(err, BatchError::Invalid { index: 1, error: InvalidBet::Document(_) }), "{err:?}");
    }

    #[test]
    fn an_empty_batch_or_one_past_the_last_ordinal_is_refused() {
        assert_eq!(EncodedBatch::encode(1, 0, std::iter::empty(), 8), Err(BatchError::Empty));
        let err = EncodedBatch::encode(1, u64::MAX, [ANA].into_iter(), 64).unwrap_err();
        assert_eq!(err, BatchError::PastLastOrdinal { first: u64::MAX });
    }
}
