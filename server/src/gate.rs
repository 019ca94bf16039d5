//! Who gets in: the connections that have not authenticated yet.
//!
//! Authenticated agencies must always get service, whatever anyone else
//! does. Until its `Hello`, a connection holds a place in the [`Gate`]'s
//! bounded pool, for at most the authentication deadline. When the pool is
//! full, a newcomer pushes out one place, chosen so that a flood hurts the
//! flood first:
//!
//! - a connection that failed to authenticate (it only waits out its
//!   penalty, see [`crate::penalty`]) before any other;
//! - then the one that has come least far ([`Stage`]): a connection that
//!   has sent nothing before one in its handshake, so that silent
//!   connections from however many addresses never push out agencies
//!   behind one address (a NAT) whose handshakes are under way; a
//!   connection whose certificate is verified is never pushed out by
//!   another agency's;
//! - among those, from the address holding the most places: a flood from
//!   one address (or a few) only pushes out its own connections, never
//!   those of an address with fewer, however long their handshakes take
//!   (an agency far away needs several round trips);
//! - then the oldest.
//!
//! One identity holds at most one certified place: a newer connection of
//! the same agency pushes out the older (as its `Hello` would supersede
//! it), so that a stolen certificate, however many connections it opens,
//! keeps no other agency out.
//!
//! What a connection sends while it holds a place is metered: at most
//! [`BEFORE_HELLO_BYTES`] in all, TLS handshake included, or its reads fail
//! (see [`Metered`]). That bounds what a place can make the server hold:
//! rustls alone would buffer a handshake message of up to 64 KiB.
//!
//! Repeated failures from one address are slowed down apart, in
//! [`crate::penalty`].

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use protocol::tls::Holder;
use protocol::MAX_FRAME_LEN;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Bytes a connection may send while it holds a place in the pool, TLS
/// handshake included. An agency's handshake and `Hello` take a small
/// part of it (more with a longer certificate chain); a plain
/// connection's largest echo takes a frame.
pub const BEFORE_HELLO_BYTES: usize = 12 * 1024;
const _: () = assert!(BEFORE_HELLO_BYTES >= MAX_FRAME_LEN + 4096, "room for an echo of the largest frame");

/// How far a connection waiting in the gate has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Accepted; nothing received yet.
    Silent,
    /// Its first bytes arrived: a TLS handshake (or plain frames) under way.
    Started,
    /// Its agency certificate is verified; its `Hello` is to come.
    Certified,
}

#[derive(Debug)]
struct Place {
    id: u64,
    ip: IpAddr,
    stage: Stage,
    /// Who its verified certificate names, once certified.
    holder: Option<Holder>,
    /// It failed to authenticate and only waits out its penalty.
    failed: bool,
    pushed_out: CancellationToken,
}

/// The connections not authenticated yet; see the module documentation.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    /// Oldest first.
    places: Mutex<Vec<Place>>,
}

/// A place in the gate's pool, given up when dropped; then the connection
/// may send without limit.
#[derive(Debug)]
pub struct Waiting {
    gate: Arc<Gate>,
    id: u64,
    /// Cancelled when a newer connection pushes this one out.
    pub pushed_out: CancellationToken,
    /// Bytes the connection may still send; `usize::MAX` once it may send
    /// without limit.
    left: Arc<AtomicUsize>,
}

impl Gate {
    pub fn new(max: usize) -> Arc<Gate> {
        assert!(max > 0, "the pool holds at least one connection");
        Arc::new(Gate { max, places: Mutex::new(Vec::new()) })
    }

    /// A place for connection `id` from `ip`, pushing another out if the
    /// pool is full (see the module documentation). If every place is
    /// taken by a certified agency, the newcomer itself is pushed out.
    pub fn admit(self: &Arc<Gate>, id: u64, ip: IpAddr) -> Waiting {
        let pushed_out = CancellationToken::new();
        let mut places = self.lock();
        if places.len() >= self.max {
            match victim(&places) {
                Some(at) => {
                    let victim = places.remove(at);
                    assert!(victim.stage < Stage::Certified, "a certified place is never pushed out");
                    victim.pushed_out.cancel();
                }
                None => pushed_out.cancel(),
            }
        }
        if !pushed_out.is_cancelled() {
            let place = Place {
                id,
                ip,
                stage: Stage::Silent,
                holder: None,
                failed: false,
                pushed_out: pushed_out.clone(),
            };
            places.push(place);
        }
        assert!(places.len() <= self.max, "the pool stays within its bound");
        Waiting { gate: self.clone(), id, pushed_out, left: Arc::new(AtomicUsize::new(BEFORE_HELLO_BYTES)) }
    }

    /// How many connections wait now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Place>> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The place to push out of a full pool: a failed one, else the least
/// advanced, from the address with the most places, the oldest; never a
/// certified one.
fn victim(places: &[Place]) -> Option<usize> {
    let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
    places.iter().for_each(|p| *per_address.entry(p.ip).or_default() += 1);
    places
        .iter()
        .enumerate()
        .filter(|(_, p)| p.stage < Stage::Certified)
        // max_by_key keeps the last of equals: reverse the age to keep the oldest.
        .max_by_key(|(at, p)| {
            (p.failed, std::cmp::Reverse(p.stage), per_address[&p.ip], std::cmp::Reverse(*at))
        })
        .map(|(at, _)| at)
}

impl Waiting {
    /// Records that the connection has sent its first bytes.
    pub fn started(&self) {
        let mut places = self.gate.lock();
        if let Some(place) = places.iter_mut().find(|p| p.id == self.id) {
            place.stage = place.stage.max(Stage::Started);
        }
    }

    /// Records that the connection's certificate names `holder`; an older
    /// certified place of the same holder is pushed out.
    pub fn certified(&self, holder: Holder) {
        let mut places = self.gate.lock();
        let older = places.iter().position(|p| p.holder == Some(holder) && p.id != self.id);
        if let Some(at) = older {
            let older = places.remove(at);
            assert_eq!(older.stage, Stage::Certified, "only a certified place names a holder");
            older.pushed_out.cancel();
        }
        if let Some(place) = places.iter_mut().find(|p| p.id == self.id) {
            place.stage = Stage::Certified;
            place.holder = Some(holder);
        }
        let per_holder = places.iter().filter(|p| p.holder == Some(holder)).count();
        assert!(per_holder <= 1, "one identity holds at most one certified place");
    }

    /// Records that the connection failed to authenticate: its place goes
    /// first when the pool is full.
    pub fn failed(&self) {
        let mut places = self.gate.lock();
        if let Some(place) = places.iter_mut().find(|p| p.id == self.id) {
            assert!(place.stage < Stage::Certified, "a certified connection does not fail to authenticate");
            place.failed = true;
        }
    }

    /// The connection's stream, whose reads count against what it may
    /// send while it waits.
    pub fn meter<S>(&self, stream: S) -> Metered<S> {
        Metered { inner: stream, left: self.left.clone() }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.left.store(usize::MAX, Ordering::Relaxed);
        let mut places = self.gate.lock();
        if let Some(at) = places.iter().position(|p| p.id == self.id) {
            places.remove(at);
        }
    }
}

/// A stream whose reads fail once its connection, still waiting in the
/// pool, has sent more than [`BEFORE_HELLO_BYTES`]; see [`Waiting::meter`].
/// Writes go through untouched.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    left: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        // Once out of the pool (every read of an agency's upload), a load.
        if self.left.load(Ordering::Relaxed) == usize::MAX {
            return Poll::Ready(Ok(()));
        }
        let read = buf.filled().len() - before;
        let within = |left: usize| match left {
            usize::MAX => Some(left),
            _ => left.checked_sub(read),
        };
        // The bytes of a read past the limit are not handed on: whoever
        // reads sees an error instead, and the connection ends.
        match self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, within) {
            Ok(_) => Poll::Ready(Ok(())),
            Err(_) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {BEFORE_HELLO_BYTES} bytes sent before Hello"),
            ))),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [10, 0, 0, last].into()
    }

    #[tokio::test]
    async fn a_waiting_connection_reads_up_to_its_limit_and_freely_once_out_of_the_pool() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Gate::new(4);
        let waiting = gate.admit(1, ip(1));
        let (mut peer, stream) = tokio::io::duplex(4 * BEFORE_HELLO_BYTES);
        let mut metered = waiting.meter(stream);
        peer.write_all(&vec![7; BEFORE_HELLO_BYTES + 1]).await.unwrap();
        metered.read_exact(&mut vec![0; BEFORE_HELLO_BYTES]).await.unwrap();
        let past = metered.read(&mut [0; 1]).await.unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::InvalidData, "{past}");

        let waiting = gate.admit(2, ip(1));
        let (mut peer, stream) = tokio::io::duplex(4 * BEFORE_HELLO_BYTES);
        let mut metered = waiting.meter(stream);
        drop(waiting);
        peer.write_all(&vec![7; 3 * BEFORE_HELLO_BYTES]).await.unwrap();
        metered.read_exact(&mut vec![0; 3 * BEFORE_HELLO_BYTES]).await.unwrap();
    }

    #[test]
    fn a_full_pool_pushes_out_its_oldest_and_a_place_is_given_up_on_drop() {
        let gate = Gate::new(2);
        let one = gate.admit(1, ip(1));
        let two = gate.admit(2, ip(2));
        assert!(!one.pushed_out.is_cancelled());
        let three = gate.admit(3, ip(3));
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
    fn a_flood_pushes_out_its_own_places_before_anyone_else() {
        let gate = Gate::new(4);
        let agency = gate.admit(1, ip(9));
        let flood: Vec<Waiting> = (2..200).map(|id| gate.admit(id, ip(66))).collect();
        assert!(!agency.pushed_out.is_cancelled(), "the flood's address holds the most places");
        assert_eq!(flood.iter().filter(|w| !w.pushed_out.is_cancelled()).count(), 3);
    }

    #[test]
    fn silent_connections_from_many_addresses_never_push_out_agencies_behind_one_address() {
        let gate = Gate::new(8);
        let behind_a_nat: Vec<Waiting> = (1..=5).map(|id| gate.admit(id, ip(9))).collect();
        behind_a_nat.iter().for_each(Waiting::started);
        let flood: Vec<Waiting> = (100..400).map(|id| gate.admit(id, ip((id % 250) as u8))).collect();
        assert!(behind_a_nat.iter().all(|w| !w.pushed_out.is_cancelled()), "their handshakes are under way");
        assert_eq!(flood.iter().filter(|w| !w.pushed_out.is_cancelled()).count(), 3);
    }

    #[test]
    fn places_that_came_further_stay_and_certified_ones_are_never_pushed_out() {
        let gate = Gate::new(3);
        let started = gate.admit(1, ip(1));
        started.started();
        let certified = gate.admit(2, ip(2));
        certified.certified(Holder::Agency(2));
        let silent = gate.admit(3, ip(3));
        let newcomer = gate.admit(4, ip(4));
        assert!(silent.pushed_out.is_cancelled(), "the silent one goes first, though the newest");
        assert!(!started.pushed_out.is_cancelled() && !certified.pushed_out.is_cancelled());
        newcomer.certified(Holder::Agency(4));
        started.certified(Holder::Agency(1));
        let late = gate.admit(5, ip(5));
        assert!(late.pushed_out.is_cancelled(), "a pool of certified agencies refuses the newcomer");
        assert!(!started.pushed_out.is_cancelled() && !certified.pushed_out.is_cancelled());
    }

    #[test]
    fn one_agency_holds_one_certified_place_the_newest() {
        let gate = Gate::new(8);
        let first = gate.admit(1, ip(1));
        first.certified(Holder::Agency(7));
        let second = gate.admit(2, ip(2));
        second.certified(Holder::Agency(7));
        assert!(first.pushed_out.is_cancelled(), "the older place of the same agency goes");
        let other = gate.admit(3, ip(1));
        other.certified(Holder::Agency(8));
        assert!(!second.pushed_out.is_cancelled() && !other.pushed_out.is_cancelled());
        assert_eq!(gate.len(), 2);
    }

    #[test]
    fn a_failed_place_goes_before_any_other() {
        let gate = Gate::new(3);
        let failed = gate.admit(1, ip(1));
        failed.started();
        failed.failed();
        let flood: Vec<Waiting> = (2..4).map(|id| gate.admit(id, ip(66))).collect();
        let newcomer = gate.admit(4, ip(9));
        assert!(failed.pushed_out.is_cancelled(), "though its address holds the fewest places");
        assert!(flood.iter().all(|w| !w.pushed_out.is_cancelled()) && !newcomer.pushed_out.is_cancelled());
    }
}
