//! How long the disk takes to make a group durable: a histogram of the
//! syncs, kept in atomics that the writer updates and anyone may read
//! (a metrics page) without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds: from a fast NVMe disk's
/// `fdatasync` to a stalled one's.
pub const SYNC_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A histogram of sync times.
#[derive(Debug, Default)]
pub struct SyncTimes {
    /// Syncs that took at most `SYNC_BUCKETS[i]` (and more than the bucket
    /// before): not cumulative.
    buckets: [AtomicU64; SYNC_BUCKETS.len()],
    /// Syncs that took longer than the last bound.
    over: AtomicU64,
    nanos: AtomicU64,
}

/// A reading of [`SyncTimes`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncTimesNow {
    /// The syncs of each bucket by its upper bound, not cumulative (the
    /// exposition adds them up): those of [`SYNC_BUCKETS`], then those over
    /// the last bound, under `f64::MAX` (`+Inf`).
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub seconds: f64,
}

impl SyncTimes {
    /// Records one sync that took `took`.
    pub fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        match SYNC_BUCKETS.iter().position(|&bound| seconds <= bound) {
            Some(bucket) => self.buckets[bucket].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn now(&self) -> SyncTimesNow {
        let bounds = SYNC_BUCKETS.iter().copied().chain([f64::MAX]);
        let counts = self.buckets.iter().chain([&self.over]).map(|count| count.load(Ordering::Relaxed));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        // The buckets' sum: what the exposition's `+Inf` and `_count` must
        // agree on.
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let seconds = self.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        assert_eq!(buckets.len(), SYNC_BUCKETS.len() + 1, "every bound, and +Inf");
        SyncTimesNow { buckets, count, seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_fall_in_their_buckets_and_the_slowest_past_every_bound() {
        let times = SyncTimes::default();
        for micros in [50, 300, 300, 4_000, 3_000_000] {
            times.record(Duration::from_micros(micros));
        }
        let now = times.now();
        assert_eq!(now.count, 5);
        assert_eq!(now.buckets[0], (0.0001, 1));
        assert_eq!(now.buckets[2], (0.0005, 2));
        assert_eq!(now.buckets[5], (0.005, 1));
        assert_eq!(now.buckets[13], (2.5, 0));
        assert_eq!(now.buckets.last(), Some(&(f64::MAX, 1)), "the slowest passes every bound");
        assert!((now.seconds - 3.00465).abs() < 1e-9);
    }
}
