//! Penalties for addresses whose credentials keep failing.
//!
//! A connection that fails to authenticate (no certificate, one that names
//! no agency, or a plain request for what needs an agency) is answered
//! only after a wait: [`FIRST_PENALTY`] for the first failure of its
//! address, doubling with each recent one up to [`MAX_PENALTY`]. A client
//! that floods from an address waits on each of its connections, and gets
//! its refusals slowly; meanwhile its connection's place in the gate goes
//! first to any newcomer. A connection that presents a valid certificate
//! never waits, from whatever address: agencies behind one NAT with a
//! flooding neighbour are not kept out, nor delayed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first penalty; it doubles with each recent failure of an address.
pub const FIRST_PENALTY: Duration = Duration::from_millis(100);
/// The longest penalty.
pub const MAX_PENALTY: Duration = Duration::from_secs(2);
/// Failures older than this are forgotten.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

/// Recent authentication failures of one address.
#[derive(Debug, Clone, Copy)]
struct Record {
    count: u32,
    last: Instant,
}

/// Recent authentication failures per address.
#[derive(Debug, Default)]
pub struct Failures {
    by_address: Mutex<HashMap<IpAddr, Record>>,
}

impl Failures {
    /// Counts a failure of `ip`; returns how many it has had recently and
    /// how long the failing connection waits before it is answered.
    pub fn fail(&self, ip: IpAddr) -> (u32, Duration) {
        let now = Instant::now();
        let mut by_address = self.lock();
        if by_address.len() >= MAX_ADDRESSES {
            by_address.retain(|_, r| now.duration_since(r.last) < FAILURE_MEMORY);
            if by_address.len() >= MAX_ADDRESSES {
                by_address.clear();
            }
        }
        assert!(by_address.len() < MAX_ADDRESSES, "the addresses remembered are bounded");
        let record = by_address.entry(ip).or_insert(Record { count: 0, last: now });
        if now.duration_since(record.last) >= FAILURE_MEMORY {
            record.count = 0;
        }
        record.count = record.count.saturating_add(1);
        record.last = now;
        let penalty = FIRST_PENALTY.saturating_mul(1 << (record.count - 1).min(16)).min(MAX_PENALTY);
        assert!(penalty >= FIRST_PENALTY, "a failure always costs the first penalty at least");
        assert!(penalty <= MAX_PENALTY, "no penalty is longer than the longest");
        (record.count, penalty)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_double_per_recent_failure_up_to_a_bound() {
        let failures = Failures::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let penalties: Vec<Duration> = (0..10).map(|_| failures.fail(ip).1).collect();
        assert_eq!(penalties[0], FIRST_PENALTY);
        assert_eq!(penalties[1], FIRST_PENALTY * 2);
        assert_eq!(penalties[9], MAX_PENALTY);
        assert_eq!(failures.fail([10, 0, 0, 2].into()), (1, FIRST_PENALTY), "per address");
    }

    #[test]
    fn old_failures_are_forgotten() {
        let failures = Failures::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let long_ago = Instant::now().checked_sub(FAILURE_MEMORY).expect("the machine is up for a minute");
        failures.lock().insert(ip, Record { count: 9, last: long_ago });
        assert_eq!(failures.fail(ip), (1, FIRST_PENALTY));
    }
}
