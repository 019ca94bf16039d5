//! Who gets in: the connections that have not authenticated yet, and the
//! addresses whose credentials keep failing.
//!
//! Authenticated agencies must always get service, whatever anyone else
//! does. An agency that authenticates leaves the [`Gate`]'s pool within its
//! TLS handshake (milliseconds), and after that only its own agency can
//! push it out (a newer connection of the same agency). Connections that do
//! not authenticate stay in the pool at most the authentication deadline,
//! and the pool has a bound: a new connection past it pushes out the
//! oldest one. To keep an agency out, an attacker would have to open more
//! connections than the pool holds within one TLS handshake, over and over.
//!
//! [`Failures`] slows down repeated failures: after a failed
//! authentication, new connections from the same address wait before their
//! handshake starts, longer the more that address failed recently (at most
//! [`MAX_PENALTY`], so an agency behind the same address is delayed, never
//! kept out).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The connections not authenticated yet; see the module documentation.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    /// Oldest first: each one's id, and the token that pushes it out.
    waiting: Mutex<VecDeque<(u64, CancellationToken)>>,
}

/// A place in the gate's pool, given up when dropped.
#[derive(Debug)]
pub struct Waiting {
    gate: Arc<Gate>,
    id: u64,
    /// Cancelled when a newer connection pushes this one out.
    pub pushed_out: CancellationToken,
}

impl Gate {
    pub fn new(max: usize) -> Arc<Gate> {
        assert!(max > 0, "the pool holds at least one connection");
        Arc::new(Gate { max, waiting: Mutex::new(VecDeque::with_capacity(max)) })
    }

    /// A place for connection `id`, pushing out the oldest if full.
    pub fn admit(self: &Arc<Gate>, id: u64) -> Waiting {
        let pushed_out = CancellationToken::new();
        let mut waiting = self.lock();
        if waiting.len() >= self.max {
            let (_, oldest) = waiting.pop_front().expect("a full pool is not empty");
            oldest.cancel();
        }
        waiting.push_back((id, pushed_out.clone()));
        assert!(waiting.len() <= self.max, "the pool stays within its bound");
        Waiting { gate: self.clone(), id, pushed_out }
    }

    /// How many connections wait now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, CancellationToken)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = self.gate.lock();
        if let Some(at) = waiting.iter().position(|(id, _)| *id == self.id) {
            waiting.remove(at);
        }
    }
}

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
        let record = by_address.entry(ip).or_insert(Record { count: 0, last: now, until: now });
        if now.duration_since(record.last) >= FAILURE_MEMORY {
            record.count = 0;
        }
        record.count = record.count.saturating_add(1);
        record.last = now;
        let penalty = FIRST_PENALTY.saturating_mul(1 << (record.count - 1).min(16)).min(MAX_PENALTY);
        record.until = now + penalty;
        (record.count, penalty)
    }

    /// How long a new connection from `ip` waits before its handshake.
    pub fn wait(&self, ip: IpAddr) -> Duration {
        self.lock().get(&ip).map_or(Duration::ZERO, |r| r.until.saturating_duration_since(Instant::now()))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_pushes_out_its_oldest_and_a_place_is_given_up_on_drop() {
        let gate = Gate::new(2);
        let one = gate.admit(1);
        let two = gate.admit(2);
        assert!(!one.pushed_out.is_cancelled());
        let three = gate.admit(3);
        assert!(one.pushed_out.is_cancelled() && !two.pushed_out.is_cancelled());
        assert_eq!(gate.len(), 2);
        drop(two);
        assert_eq!(gate.len(), 1);
        drop(one);
        assert_eq!(gate.len(), 1, "a pushed-out place is gone already");
        drop(three);
        assert!(gate.is_empty());
    }

    #[test]
    fn penalties_double_per_recent_failure_up_to_a_bound() {
        let failures = Failures::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let penalties: Vec<Duration> = (0..10).map(|_| failures.fail(ip).1).collect();
        assert_eq!(penalties[0], FIRST_PENALTY);
        assert_eq!(penalties[1], FIRST_PENALTY * 2);
        assert_eq!(penalties[9], MAX_PENALTY);
        assert_eq!(failures.fail([10, 0, 0, 2].into()), (1, FIRST_PENALTY), "per address");
        assert!(failures.wait(ip) > MAX_PENALTY / 2 && failures.wait(ip) <= MAX_PENALTY);
        assert_eq!(failures.wait([10, 0, 0, 3].into()), Duration::ZERO);
    }
}
