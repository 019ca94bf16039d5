//! One connection to the server, and what can go wrong with it.
//!
//! Every wait has a bound: connecting and every reply take at most the
//! reply timeout, so a server that accepts and then says nothing (paused,
//! or on the far side of a half-open connection) costs that long, not
//! forever. [`Fault`] sorts what goes wrong into what a new connection may
//! cure and what it cannot.

use std::io;
use std::time::Duration;

use lottery::Progress;
use protocol::tls::{client::TlsStream, TlsConnector};
use protocol::{ErrorCode, Message, MessageReader, MessageWriter, ReadError, MAX_FRAME_LEN};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Config;

/// What went wrong, sorted by what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The connection or the server's storage failed for now: connect
    /// again, say Hello, and resume from what the server holds.
    #[error("{0}")]
    Retry(String),
    /// Nothing a new connection would change.
    #[error("{0}")]
    Fatal(String),
}

impl Fault {
    /// What an unexpected reply means: the server's error codes say
    /// whether trying again can help.
    pub fn from_reply(reply: Message) -> Fault {
        match reply {
            Message::Error { code, reason, .. } => match code {
                ErrorCode::StorageFailure | ErrorCode::OutOfSequence | ErrorCode::ShuttingDown => {
                    Fault::Retry(format!("the server answered {code:?}: {reason}"))
                }
                _ => Fault::Fatal(format!("the server refused the request ({code:?}): {reason}")),
            },
            other => Fault::Fatal(format!("unexpected reply from the server: {}", other.name())),
        }
    }
}

/// What the server holds of the agency, from its `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub progress: Progress,
    pub finished: bool,
}

type Tls = TlsStream<TcpStream>;

/// A connection, split so that sending and reading replies can go on at once.
pub struct Link {
    pub reader: Replies,
    pub writer: MessageWriter<WriteHalf<Tls>>,
}

/// The reading half: every reply within the timeout.
pub struct Replies {
    reader: MessageReader<ReadHalf<Tls>>,
    timeout: Duration,
}

impl Replies {
    /// The next reply, within the timeout.
    pub async fn next(&mut self) -> Result<Message, Fault> {
        match timeout(self.timeout, self.reader.read()).await {
            Err(_) => Err(Fault::Retry(format!("no reply within {:?}", self.timeout))),
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => Err(Fault::Retry("the server closed the connection".into())),
            // In TLS 1.3 the server judges the agency's certificate after
            // the agency's side of the handshake is done: a refusal comes
            // as an alert on the first read.
            Ok(Err(ReadError::Io(e))) if protocol::tls::tls_failure(&e).is_some() => {
                Err(tls_fault("the server", &e))
            }
            Ok(Err(ReadError::Io(e))) => Err(Fault::Retry(format!("connection lost: {e}"))),
            Ok(Err(e @ ReadError::Truncated(_))) => Err(Fault::Retry(e.to_string())),
            Ok(Err(e)) => Err(Fault::Fatal(format!("the server speaks another protocol: {e}"))),
        }
    }
}

impl Link {
    /// One attempt to connect and do the TLS handshake, within the reply
    /// timeout. A certificate refused, by either side, is fatal: trying
    /// again would not change it.
    pub async fn connect(config: &Config) -> Result<Link, Fault> {
        let (address, within) = (&config.server_address, config.reply_timeout);
        let stream = match timeout(within, TcpStream::connect(address)).await {
            Err(_) => return Err(Fault::Retry(format!("cannot connect to {address} within {within:?}"))),
            Ok(Err(e)) => return Err(Fault::Retry(format!("cannot connect to {address}: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true).map_err(io_fault)?;
        let connector = TlsConnector::from(config.tls.clone());
        let tls = match timeout(within, connector.connect(config.server_name.clone(), stream)).await {
            Err(_) => return Err(Fault::Retry(format!("no TLS handshake with {address} within {within:?}"))),
            Ok(Err(e)) => return Err(tls_fault(&format!("the server at {address}"), &e)),
            Ok(Ok(tls)) => tls,
        };
        let (read_half, write_half) = tokio::io::split(tls);
        Ok(Link {
            reader: Replies { reader: MessageReader::new(read_half, MAX_FRAME_LEN), timeout: within },
            writer: MessageWriter::new(write_half),
        })
    }

    /// Sends `message` and waits for the reply.
    pub async fn ask(&mut self, message: &Message) -> Result<Message, Fault> {
        self.writer.send(message).await.map_err(io_fault)?;
        self.reader.next().await
    }

    /// Ends the connection the way TLS wants it ended (`close_notify`),
    /// without waiting long for a peer that may be gone.
    pub async fn close(mut self) {
        let _ = timeout(self.reader.timeout, self.writer.shutdown()).await;
    }

    /// Says which agency this connection speaks for; returns what the
    /// server holds of it.
    pub async fn hello(&mut self, agency: u32) -> Result<Welcome, Fault> {
        match self.ask(&Message::Hello { agency }).await? {
            Message::Welcome { stored, digest, finished } => {
                Ok(Welcome { progress: Progress::new(stored, digest), finished })
            }
            other => Err(Fault::from_reply(other)),
        }
    }
}

/// A failed TLS handshake, with `server` named: a certificate refused, by
/// either side, or TLS that the two sides cannot agree on is fatal (a new
/// connection would meet the same); anything else (a lost or garbled
/// connection, an internal error of the server) is worth another try.
fn tls_fault(server: &str, e: &io::Error) -> Fault {
    use rustls::AlertDescription as Alert;
    match protocol::tls::tls_failure(e) {
        Some(rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::CertificateRequired
            | Alert::UnknownCA
            | Alert::AccessDenied),
        )) => Fault::Fatal(format!("{server} refused this agency's certificate ({alert:?})")),
        Some(rustls::Error::AlertReceived(alert @ (Alert::ProtocolVersion | Alert::HandshakeFailure))) => {
            Fault::Fatal(format!("{server} and this agency have no TLS in common ({alert:?})"))
        }
        Some(rustls::Error::InvalidCertificate(why)) => {
            Fault::Fatal(format!("{server} is not who it should be: its certificate is refused ({why:?})"))
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            Fault::Fatal(format!("{server} is not who it should be: it presents no certificate"))
        }
        Some(rustls::Error::PeerIncompatible(why)) => {
            Fault::Fatal(format!("{server} and this agency have no TLS in common ({why:?})"))
        }
        Some(other) => Fault::Retry(format!("TLS with {server} failed: {other}")),
        None => Fault::Retry(format!("TLS with {server} broken off: {e}")),
    }
}

/// A failed send: the connection is gone.
pub fn io_fault(e: io::Error) -> Fault {
    Fault::Retry(format!("connection lost: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription as Alert;

    fn fault(error: rustls::Error) -> Fault {
        tls_fault("the server at server:12345", &io::Error::new(io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn only_a_refused_certificate_or_no_common_tls_is_final() {
        for alert in
            [Alert::CertificateRevoked, Alert::UnknownCA, Alert::BadCertificate, Alert::CertificateRequired]
        {
            let Fault::Fatal(why) = fault(rustls::Error::AlertReceived(alert)) else { panic!("{alert:?}") };
            assert_eq!(
                why,
                format!("the server at server:12345 refused this agency's certificate ({alert:?})")
            );
        }
        assert!(matches!(fault(rustls::Error::AlertReceived(Alert::ProtocolVersion)), Fault::Fatal(_)));
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(matches!(fault(refused), Fault::Fatal(why) if why.contains("is not who it should be")));
        for passing in [
            rustls::Error::AlertReceived(Alert::InternalError),
            rustls::Error::AlertReceived(Alert::DecodeError),
            rustls::Error::DecryptError,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ] {
            assert!(matches!(fault(passing.clone()), Fault::Retry(_)), "{passing:?}");
        }
        let lost = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert!(
            matches!(tls_fault("the server", &lost), Fault::Retry(why) if why.starts_with("TLS with the server "))
        );
    }
}
