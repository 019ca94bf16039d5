//! How far an agency's upload has got, in a form both sides can compute.
//!
//! An agency's bets have ordinals: 0, 1, 2… in the order of its file,
//! counting valid bets only. The server stores them in that order, so what
//! it holds of an agency is always a prefix: the first `bets` of them.
//! [`Progress`] is that count plus a digest of those bets' rows exactly as
//! they are in `bets.csv`. The server keeps it as it stores (and rebuilds
//! it from the file on recovery); an agency that reconnects, or starts
//! again, computes it over the first `bets` bets of its file and compares:
//! a different digest means a different file, and the agency stops.
//!
//! The digest is the wrapping sum of a 128-bit hash of each row, seeded
//! with the row's ordinal: order matters, a prefix extends in O(1), and a
//! batch's share can be computed apart from (and in parallel with) the
//! rest. It detects accidents (a changed file), not forgeries: it is not
//! a cryptographic hash, and nothing here needs one.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128_with_seed;

/// The first `bets` bets of an agency, and the digest of their rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Progress {
    bets: u64,
    digest: u128,
}

impl Progress {
    /// A progress as the other side sent it.
    pub fn new(bets: u64, digest: u128) -> Progress {
        Progress { bets, digest }
    }

    /// How many bets.
    pub fn bets(&self) -> u64 {
        self.bets
    }

    /// The digest of their rows.
    pub fn digest(&self) -> u128 {
        self.digest
    }

    /// Counts one more bet, whose row in `bets.csv` is `row` (line end
    /// included).
    pub fn push(&mut self, row: &[u8]) {
        assert_eq!(row.last(), Some(&b'\n'), "a row is counted with its line end");
        self.digest = self.digest.wrapping_add(row_hash(self.bets, row));
        self.bets += 1;
    }

    /// Counts `share.bets()` more bets, whose shares were computed with
    /// [`Share`] starting at this progress's count.
    pub fn extend(&mut self, share: &Share) {
        assert_eq!(share.first, self.bets, "a share extends the progress it starts from");
        self.bets += share.bets;
        self.digest = self.digest.wrapping_add(share.digest);
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bets, digest {:032x}", self.bets, self.digest)
    }
}

/// The part of a progress that a run of consecutive bets adds, computed
/// apart from the rest (a batch's rows, by the session that received it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    first: u64,
    bets: u64,
    digest: u128,
}

impl Share {
    /// An empty share for bets from ordinal `first` on.
    pub fn starting_at(first: u64) -> Share {
        Share { first, bets: 0, digest: 0 }
    }

    pub fn push(&mut self, row: &[u8]) {
        self.digest = self.digest.wrapping_add(row_hash(self.first + self.bets, row));
        self.bets += 1;
    }

    /// Ordinal of the first bet.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// How many bets.
    pub fn bets(&self) -> u64 {
        self.bets
    }
}

fn row_hash(ordinal: u64, row: &[u8]) -> u128 {
    xxh3_128_with_seed(row, ordinal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: [&[u8]; 3] =
        [b"1,A,B,1,1999-03-17,1\n", b"1,C,D,2,1999-03-17,2\n", b"1,E,F,3,1999-03-17,3\n"];

    fn progress(rows: &[&[u8]]) -> Progress {
        let mut p = Progress::default();
        rows.iter().for_each(|r| p.push(r));
        p
    }

    #[test]
    fn the_same_rows_give_the_same_progress() {
        assert_eq!(progress(&ROWS), progress(&ROWS));
        assert_eq!(progress(&ROWS).bets(), 3);
    }

    #[test]
    fn order_and_content_change_the_digest() {
        let swapped = [ROWS[1], ROWS[0], ROWS[2]];
        assert_ne!(progress(&ROWS).digest(), progress(&swapped).digest());
        let changed = [ROWS[0], b"1,C,D,2,1999-03-17,3\n", ROWS[2]];
        assert_ne!(progress(&ROWS).digest(), progress(&changed).digest());
    }

    #[test]
    fn a_share_computed_apart_extends_a_progress_like_pushing_each_row() {
        let mut p = progress(&ROWS[..1]);
        let mut share = Share::starting_at(1);
        ROWS[1..].iter().for_each(|r| share.push(r));
        p.extend(&share);
        assert_eq!(p, progress(&ROWS));
    }

    #[test]
    #[should_panic(expected = "a share extends the progress it starts from")]
    fn a_share_from_elsewhere_is_a_bug() {
        progress(&ROWS).extend(&Share::starting_at(1));
    }
}
