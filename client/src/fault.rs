//! What goes wrong in an agency's session, sorted by what to do about it:
//! [`Retry`], which a new connection may cure (the agency backs off,
//! connects again and resumes), and [`Fatal`], which it cannot.

use std::io;
use std::time::Duration;

use protocol::{ErrorCode, Message, ReadError};
use rustls::{AlertDescription, CertificateError, PeerIncompatible};

use crate::source::SourceError;

/// A fault of one connection.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error(transparent)]
    Retry(#[from] Retry),
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

/// The connection or the server's storage failed for now: connect again,
/// say Hello, and resume from what the server holds.
#[derive(Debug, thiserror::Error)]
pub enum Retry {
    #[error("cannot connect to {address} within {within:?}")]
    ConnectTimeout { address: String, within: Duration },
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("no TLS handshake with {address} within {within:?}")]
    HandshakeTimeout { address: String, within: Duration },
    #[error("TLS with {server} failed: {error}")]
    Tls { server: String, error: rustls::Error },
    #[error("TLS with {server} broken off: {source}")]
    TlsBroken { server: String, source: io::Error },
    #[error("no reply within {0:?}")]
    NoReply(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("connection lost: {0}")]
    Lost(io::Error),
    #[error(transparent)]
    Truncated(ReadError),
    /// An error the server says may pass (its storage failed, a batch out
    /// of sequence after a fault, it is shutting down).
    #[error("the server answered {code:?}: {reason}")]
    Answered { code: ErrorCode, reason: String },
    #[error("acks stopped")]
    AcksStopped,
}

/// Nothing a new connection would change.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("{server} refused this agency's certificate ({alert:?})")]
    CertificateRefused { server: String, alert: AlertDescription },
    #[error("{server} and this agency have no TLS in common ({alert:?})")]
    NoCommonTls { server: String, alert: AlertDescription },
    #[error("{server} and this agency have no TLS in common ({why:?})")]
    Incompatible { server: String, why: PeerIncompatible },
    #[error("{server} is not who it should be: its certificate is refused ({why:?})")]
    ServerRefused { server: String, why: CertificateError },
    #[error("{server} is not who it should be: it presents no certificate")]
    ServerWithoutCertificate { server: String },
    #[error("the server refused the request ({code:?}): {reason}")]
    Refused { code: ErrorCode, reason: String },
    #[error("unexpected reply from the server: {0}")]
    UnexpectedReply(&'static str),
    #[error("the server speaks another protocol: {0}")]
    OtherProtocol(ReadError),
    #[error("the server refused the bet at line {line} as invalid ({reason}), though this agency found it valid: are client and server of the same version?")]
    Disagreement { line: u64, reason: String },
    #[error(transparent)]
    NotItsFile(#[from] NotItsFile),
    #[error("the bet reader stopped")]
    ReaderStopped,
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The agency file is not the one whose bets the server holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotItsFile {
    #[error("the server holds {held} bets of agency {agency}, more than the {total} of its file")]
    MoreThanTheFile { agency: u32, held: u64, total: u64 },
    #[error("the server holds {held} bets of agency {agency}, but its file has only {valid} valid bets: it is not the file this agency uploaded")]
    Shorter { agency: u32, held: u64, valid: u64 },
    #[error("the first {bets} bets of the file differ from the {held} the server holds for agency {agency}: it is not the file this agency uploaded")]
    Differs { agency: u32, bets: u64, held: u64 },
    #[error("agency {agency} finished with {held} bets, but its file has more: it is not the file this agency uploaded")]
    Longer { agency: u32, held: u64 },
}

impl Fault {
    /// What an unexpected reply means: the server's error codes say
    /// whether trying again can help.
    pub fn from_reply(reply: Message) -> Fault {
        match reply {
            Message::Error { code, reason, .. } => match code {
                // A round closed meanwhile: the next Hello says so, and
                // the agency gets its winners; one not open yet: ask again.
                ErrorCode::StorageFailure
                | ErrorCode::OutOfSequence
                | ErrorCode::ShuttingDown
                | ErrorCode::RoundClosed
                | ErrorCode::RoundNotOpen => Retry::Answered { code, reason }.into(),
                _ => Fatal::Refused { code, reason }.into(),
            },
            other => Fatal::UnexpectedReply(other.name()).into(),
        }
    }
}

impl From<NotItsFile> for Fault {
    fn from(e: NotItsFile) -> Fault {
        Fault::Fatal(e.into())
    }
}

/// A failed send or read: the connection is gone.
pub fn lost(e: io::Error) -> Fault {
    Retry::Lost(e).into()
}

/// A failed TLS handshake, with `server` named: a certificate refused, by
/// either side, or TLS that the two sides cannot agree on is fatal (a new
/// connection would meet the same); anything else (a lost or garbled
/// connection, an internal error of the server) is worth another try.
pub fn tls_fault(server: &str, e: io::Error) -> Fault {
    use AlertDescription as Alert;
    let server = server.to_owned();
    let Some(error) = protocol::tls::tls_failure(&e).cloned() else {
        return Retry::TlsBroken { server, source: e }.into();
    };
    match error {
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::CertificateRequired
            | Alert::UnknownCA
            | Alert::AccessDenied),
        ) => Fatal::CertificateRefused { server, alert }.into(),
        rustls::Error::AlertReceived(alert @ (Alert::ProtocolVersion | Alert::HandshakeFailure)) => {
            Fatal::NoCommonTls { server, alert }.into()
        }
        rustls::Error::InvalidCertificate(why) => Fatal::ServerRefused { server, why }.into(),
        rustls::Error::NoCertificatesPresented => Fatal::ServerWithoutCertificate { server }.into(),
        rustls::Error::PeerIncompatible(why) => Fatal::Incompatible { server, why }.into(),
        error => Retry::Tls { server, error }.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription as Alert;

    fn fault(error: rustls::Error) -> Fault {
        tls_fault("the server at server:12345", io::Error::new(io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn only_a_refused_certificate_or_no_common_tls_is_final() {
        for alert in
            [Alert::CertificateRevoked, Alert::UnknownCA, Alert::BadCertificate, Alert::CertificateRequired]
        {
            let Fault::Fatal(refused) = fault(rustls::Error::AlertReceived(alert)) else {
                panic!("{alert:?}")
            };
            assert!(
                matches!(refused, Fatal::CertificateRefused { alert: a, .. } if a == alert),
                "{refused:?}"
            );
            assert_eq!(
                refused.to_string(),
                format!("the server at server:12345 refused this agency's certificate ({alert:?})")
            );
        }
        let version = fault(rustls::Error::AlertReceived(Alert::ProtocolVersion));
        assert!(matches!(version, Fault::Fatal(Fatal::NoCommonTls { .. })), "{version:?}");
        let refused = fault(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(matches!(refused, Fault::Fatal(Fatal::ServerRefused { .. })), "{refused:?}");
        for passing in [
            rustls::Error::AlertReceived(Alert::InternalError),
            rustls::Error::AlertReceived(Alert::DecodeError),
            rustls::Error::DecryptError,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ] {
            assert!(matches!(fault(passing.clone()), Fault::Retry(Retry::Tls { .. })), "{passing:?}");
        }
        let lost = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(tls_fault("the server", lost), Fault::Retry(Retry::TlsBroken { .. })));
    }

    #[test]
    fn the_servers_error_codes_say_whether_to_try_again() {
        let error = |code| Message::Error { code, first: 0, bet: None, reason: "why".into() };
        for code in [
            ErrorCode::StorageFailure,
            ErrorCode::OutOfSequence,
            ErrorCode::ShuttingDown,
            ErrorCode::RoundClosed,
            ErrorCode::RoundNotOpen,
        ] {
            assert!(
                matches!(Fault::from_reply(error(code)), Fault::Retry(Retry::Answered { .. })),
                "{code:?}"
            );
        }
        for code in [
            ErrorCode::Forbidden,
            ErrorCode::AlreadyFinished,
            ErrorCode::UnknownAgency,
            ErrorCode::UnknownRound,
        ] {
            assert!(
                matches!(Fault::from_reply(error(code)), Fault::Fatal(Fatal::Refused { .. })),
                "{code:?}"
            );
        }
        let other = Fault::from_reply(Message::FinishedAck);
        assert!(matches!(other, Fault::Fatal(Fatal::UnexpectedReply(_))), "{other:?}");
    }
}
