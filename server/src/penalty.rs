//! Penalties for addresses whose credentials keep failing.
//!
//! After a failed authentication, new connections from the same address
//! wait before their handshake, longer the more that address failed
//! recently (at most [`MAX_PENALTY`], so an agency behind the same address
//! is delayed, never kept out: it waits having sent its first bytes, so
//! connections that have sent nothing go first in the gate's pool).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first penalty; it doubles with each recent failure of an address.
pub const FIRST_PENALTY: Duration = Duration::from_millis(100);
/// The longest penalty: far below an agency's reply timeout (10 s).
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
    /// New connections from the address wait until then.
    until: Instant,
}

/// Recent authentication failures per address.
#[derive(Debug, Default)]
pub struct Failures {
    by_address: Mutex<HashMap<IpAddr, Record>>,
}

impl Failures {
    /// Counts a failure of `ip`; returns how many it has had recently and
    /// how long its next connections wait.
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
        let record = by_address.entry(ip).or_insert(Record { count: 0, last: now, until: now });
        if now.duration_since(record.last) >= FAILURE_MEMORY {
            record.count = 0;
        }
        record.count = record.count.saturating_add(1);
        record.last = now;
        let penalty = FIRST_PENALTY.saturating_mul(1 << (record.count - 1).min(16)).min(MAX_PENALTY);
        record.until = now + penalty;
        assert!(penalty >= FIRST_PENALTY, "a failure always costs the first penalty at least");
        assert!(penalty <= MAX_PENALTY, "no penalty keeps an agency behind the address out");
        (record.count, penalty)
    }

    /// How long a new connection from `ip` waits before its handshake, if
    /// at all. `None` is not `Duration::ZERO`: a timer of no length still
    /// waits for the next tick of tokio's clock, up to a millisecond.
    pub fn wait(&self, ip: IpAddr) -> Option<Duration> {
        let left = self.lock().get(&ip)?.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
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
        let wait = failures.wait(ip).expect("a failing address waits");
        assert!(wait > MAX_PENALTY / 2 && wait <= MAX_PENALTY);
        assert_eq!(failures.wait([10, 0, 0, 3].into()), None);
    }

    #[test]
    fn a_penalty_served_means_no_wait_at_all() {
        let failures = Failures::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let past = Instant::now();
        failures.lock().insert(ip, Record { count: 1, last: past, until: past });
        assert_eq!(failures.wait(ip), None);
    }
}
