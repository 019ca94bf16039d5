//! A connection from its accept to its session, and its closing line.
//!
//! Agencies speak TLS, with a certificate that names them; the first byte
//! of the connection tells TLS (a handshake record, `0x16`) from our plain
//! frames (a length, starting with `0x00`). A plain connection is served
//! `Echo` and nothing else: that is the course's echo validation, `nc` from
//! a busybox container, and it carries no data. Any other request over it,
//! or over TLS without a certificate, is refused as `Unauthenticated`.
//!
//! Until it has authenticated (its TLS handshake done with a verified
//! agency certificate, and its `Hello` said), a connection holds a place in
//! the [`Gate`], lives at most the authentication deadline and may send at
//! most [`BEFORE_HELLO_BYTES`](crate::gate::BEFORE_HELLO_BYTES). A failed
//! authentication is logged once, and makes the next connections from the
//! same address wait before their handshake (see [`Failures`]). Every
//! connection, however it ends (aborted at shutdown included), gets one
//! `close_connection` line.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge::duration::GoDuration;
use edge::log::Action;
use protocol::tls::{Holder, TlsAcceptor, TLS_HANDSHAKE};
use protocol::{ErrorCode, Message, MessageWriter};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agencies::Agencies;
use crate::gate::{Gate, Metered, Waiting};
use crate::penalty::Failures;
use crate::session::{self, Identity, Limits, PeerLines};

/// What every connection shares.
pub struct Context {
    pub agencies: Arc<Agencies>,
    pub gate: Arc<Gate>,
    pub failures: Arc<Failures>,
    pub acceptor: TlsAcceptor,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// The lines peers can cause, all connections together.
    pub peer_lines: Arc<PeerLines>,
    /// Cancelled at shutdown.
    pub stop: CancellationToken,
}

/// Why a connection closed, as its closing line says.
#[derive(Debug)]
pub enum CloseReason {
    AbortedAtShutdown,
    PeerClosed,
    PeerLost(io::Error),
    PushedOut,
    ShuttingDown,
    NoAuthentication(Duration),
    HandshakeBroken(io::Error),
    NotAuthenticated(&'static str),
    AuthenticationFailed(rustls::Error),
    NoHello,
    Superseded,
    ProtocolError,
    ReplyNotSent,
    StoppedReading(Duration),
    IdleTimeout,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::AbortedAtShutdown => write!(f, "aborted at shutdown"),
            CloseReason::PeerClosed => write!(f, "peer closed the connection"),
            CloseReason::PeerLost(e) => write!(f, "peer lost: {e}"),
            CloseReason::PushedOut => write!(f, "pushed out: too many connections waiting to authenticate"),
            CloseReason::ShuttingDown => write!(f, "server shutting down"),
            CloseReason::NoAuthentication(within) => {
                write!(f, "no authentication within {}", GoDuration(*within))
            }
            CloseReason::HandshakeBroken(e) => write!(f, "TLS handshake broken off: {e}"),
            CloseReason::NotAuthenticated(why) => write!(f, "not authenticated: {why}"),
            CloseReason::AuthenticationFailed(e) => write!(f, "authentication failed: {e}"),
            CloseReason::NoHello => write!(f, "no Hello within the authentication deadline"),
            CloseReason::Superseded => write!(f, "superseded by a newer connection of its agency"),
            CloseReason::ProtocolError => write!(f, "protocol error"),
            CloseReason::ReplyNotSent => write!(f, "the reply could not be sent"),
            CloseReason::StoppedReading(within) => {
                write!(f, "the peer stopped reading: a reply waited {} to be written", GoDuration(*within))
            }
            CloseReason::IdleTimeout => write!(f, "idle timeout"),
        }
    }
}

/// Logs `close_connection` when dropped, with the last reason given: a
/// connection aborted at shutdown still gets its line. The line of a
/// connection the server closes at shutdown is always logged (one line per
/// resource closed); any other is one of the lines peers cause, within
/// their budget.
pub struct CloseLine {
    peer: SocketAddr,
    /// The agency this connection spoke for, once its `Hello` was said.
    pub agency: Option<u32>,
    pub why: CloseReason,
    /// Lines of this connection that were not logged (see the session's
    /// log budget).
    pub unlogged: u32,
    peer_lines: Arc<PeerLines>,
}

impl Drop for CloseLine {
    fn drop(&mut self) {
        let at_shutdown = matches!(self.why, CloseReason::ShuttingDown | CloseReason::AbortedAtShutdown);
        if !at_shutdown && !self.peer_lines.allow() {
            return;
        }
        let mut line = Action::success("close_connection").field("ip", self.peer.ip());
        if let Some(agency) = self.agency {
            line = line.field("agency", agency);
        }
        if self.unlogged > 0 {
            line = line.field("unlogged_lines", self.unlogged);
        }
        info!("{}", line.field("reason", &self.why));
    }
}

/// Serves one accepted connection until it ends.
pub async fn handle(stream: TcpStream, peer: SocketAddr, id: u64, ctx: Arc<Context>) {
    let why = CloseReason::AbortedAtShutdown;
    let mut close = CloseLine { peer, agency: None, why, unlogged: 0, peer_lines: ctx.peer_lines.clone() };
    let waiting = ctx.gate.admit(id, peer.ip());
    let deadline = Instant::now() + ctx.auth_timeout;
    let arrival = tokio::select! {
        () = waiting.pushed_out.cancelled() => Err(CloseReason::PushedOut),
        () = ctx.stop.cancelled() => Err(CloseReason::ShuttingDown),
        arrival = timeout_at(deadline, arrive(stream, &ctx, &waiting)) => {
            arrival.unwrap_or(Err(CloseReason::NoAuthentication(ctx.auth_timeout)))
        }
    };
    let arrival = match arrival {
        Ok(arrival) => arrival,
        Err(why) => {
            close.why = why;
            return;
        }
    };
    match arrival {
        Arrival::Plain(stream) => {
            let limits = Limits::new(&ctx, waiting, deadline);
            session::serve(stream, peer, id, Identity::Anonymous, &ctx, limits, &mut close).await;
        }
        Arrival::Certified(stream, holder) => {
            // Its certificate is verified; its Hello (the operator's first
            // request) takes it out of the gate.
            let limits = Limits::new(&ctx, waiting, deadline);
            let identity = match holder {
                Holder::Agency(agency) => Identity::Agency(agency),
                Holder::Operator => Identity::Operator,
            };
            session::serve(*stream, peer, id, identity, &ctx, limits, &mut close).await;
        }
        Arrival::Anonymous(stream, reason) => {
            let penalty = failed(peer, &reason, &ctx.failures, &ctx.peer_lines);
            waiting.failed();
            close.why = CloseReason::NotAuthenticated(reason);
            // The refusal comes after the penalty; a newcomer or the
            // deadline may end the wait first, and the connection with it.
            tokio::select! {
                () = waiting.pushed_out.cancelled() => close.why = CloseReason::PushedOut,
                () = ctx.stop.cancelled() => close.why = CloseReason::ShuttingDown,
                () = tokio::time::sleep_until(deadline) => {}
                () = tokio::time::sleep(penalty) => {
                    ctx.agencies.metrics.refused(ErrorCode::Unauthenticated);
                    refuse(*stream, reason, ctx.write_timeout).await
                }
            }
        }
        Arrival::Refused(error) => {
            failed(peer, &error, &ctx.failures, &ctx.peer_lines);
            close.why = CloseReason::AuthenticationFailed(error);
        }
    }
}

/// Tells a connection without an agency's certificate why it is closed.
async fn refuse(stream: protocol::tls::server::TlsStream<Stream>, reason: &'static str, within: Duration) {
    let mut writer = MessageWriter::new(stream);
    let refusal =
        Message::Error { code: ErrorCode::Unauthenticated, first: 0, bet: None, reason: reason.into() };
    let _ = timeout(within, writer.send(&refusal)).await;
    let _ = timeout(within, writer.shutdown()).await;
}

/// A connection's stream, metered until it leaves the gate.
type Stream = Metered<TcpStream>;

/// What a connection turned out to be.
enum Arrival {
    /// Plain frames: Echo only.
    Plain(Stream),
    /// TLS with a verified certificate of this agency, or the operator's.
    Certified(Box<protocol::tls::server::TlsStream<Stream>>, Holder),
    /// TLS without an agency's certificate (none, or one that names no
    /// agency), and why.
    Anonymous(Box<protocol::tls::server::TlsStream<Stream>>, &'static str),
    /// TLS that failed: the certificate was refused, or TLS itself failed.
    Refused(rustls::Error),
}

/// Reads the first byte, then does the TLS handshake if it is one; tells
/// the gate how far the connection got.
async fn arrive(stream: TcpStream, ctx: &Context, waiting: &Waiting) -> Result<Arrival, CloseReason> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Err(CloseReason::PeerClosed),
        Ok(_) => {}
        Err(e) => return Err(CloseReason::PeerLost(e)),
    }
    waiting.started();
    let stream = waiting.meter(stream);
    if first[0] != TLS_HANDSHAKE {
        return Ok(Arrival::Plain(stream));
    }
    let tls = match ctx.acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => {
            return match protocol::tls::tls_failure(&e) {
                Some(tls) => Ok(Arrival::Refused(tls.clone())),
                None => Err(CloseReason::HandshakeBroken(e)),
            }
        }
    };
    let holder =
        tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).map(protocol::tls::holder_of);
    Ok(match holder {
        None => Arrival::Anonymous(
            Box::new(tls),
            "no agency certificate: an agency connects with TLS and its certificate",
        ),
        Some(Some(holder)) => {
            waiting.certified(holder);
            Arrival::Certified(Box::new(tls), holder)
        }
        Some(None) => Arrival::Anonymous(
            Box::new(tls),
            "the certificate names no agency (its common name is neither agency-K nor operator)",
        ),
    })
}

/// Logs a failed authentication, once, and counts it against the address;
/// returns how long the connection waits before it is refused.
pub fn failed(
    peer: SocketAddr,
    error: &dyn fmt::Display,
    failures: &Failures,
    lines: &PeerLines,
) -> Duration {
    let (failures, penalty) = failures.fail(peer.ip());
    if lines.allow() {
        warn!(
            "{}",
            Action::fail("authenticate")
                .field("ip", peer.ip())
                .field("error", error)
                .field("failures", failures)
                .field("wait", GoDuration(penalty))
        );
    }
    penalty
}
