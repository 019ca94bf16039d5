//! One connection to the server.
//!
//! Every wait has a bound: connecting and every reply take at most the
//! reply timeout, so a server that accepts and then says nothing (paused,
//! or on the far side of a half-open connection) costs that long, not
//! forever. What goes wrong is a [`Fault`].

use std::time::Duration;

use lottery::Progress;
use protocol::tls::{client::TlsStream, TlsConnector};
use protocol::{Message, MessageReader, MessageWriter, ReadError, RoundStage, HELLO_WAIT, MAX_FRAME_LEN};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Config;
use crate::fault::{lost, tls_fault, Fatal, Fault, Retry};

/// What the server holds of the agency, from its `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub progress: Progress,
    pub finished: bool,
    /// Where the agency's round stands.
    pub stage: RoundStage,
}

type Tls = TlsStream<TcpStream>;

/// How long the agency asks the server to hold a winners query for the
/// draw: waiting agencies cost the server a frame every this long each.
pub const WINNERS_WAIT: Duration = Duration::from_secs(30);
const _: () =
    assert!(WINNERS_WAIT.as_secs() <= protocol::MAX_WINNERS_WAIT.as_secs(), "the server holds it that long");

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
        self.next_within(self.timeout).await
    }

    /// The next reply, within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Result<Message, Fault> {
        match timeout(within, self.reader.read()).await {
            Err(_) => Err(Retry::NoReply(within).into()),
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => Err(Retry::Closed.into()),
            // In TLS 1.3 the server judges the agency's certificate after
            // the agency's side of the handshake is done: a refusal comes
            // as an alert on the first read.
            Ok(Err(ReadError::Io(e))) if protocol::tls::tls_failure(&e).is_some() => {
                Err(tls_fault("the server", e))
            }
            Ok(Err(ReadError::Io(e))) => Err(lost(e)),
            Ok(Err(e @ ReadError::Truncated(_))) => Err(Retry::Truncated(e).into()),
            Ok(Err(e)) => Err(Fatal::OtherProtocol(e).into()),
        }
    }
}

impl Link {
    /// One attempt to connect and do the TLS handshake, within the reply
    /// timeout. A certificate refused, by either side, is fatal: trying
    /// again would not change it.
    pub async fn connect(config: &Config) -> Result<Link, Fault> {
        let (address, within) = (&config.server_address, config.reply_timeout);
        let address_owned = || address.to_owned();
        let stream = match timeout(within, TcpStream::connect(address)).await {
            Err(_) => return Err(Retry::ConnectTimeout { address: address_owned(), within }.into()),
            Ok(Err(source)) => return Err(Retry::Connect { address: address_owned(), source }.into()),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true).map_err(lost)?;
        let connector = TlsConnector::from(config.tls.clone());
        let tls = match timeout(within, connector.connect(config.server_name.clone(), stream)).await {
            Err(_) => return Err(Retry::HandshakeTimeout { address: address_owned(), within }.into()),
            Ok(Err(e)) => return Err(tls_fault(&format!("the server at {address}"), e)),
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
        self.writer.send(message).await.map_err(lost)?;
        self.reader.next().await
    }

    /// Ends the connection the way TLS wants it ended (`close_notify`),
    /// without waiting long for a peer that may be gone.
    pub async fn close(mut self) {
        let _ = timeout(self.reader.timeout, self.writer.shutdown()).await;
    }

    /// Says which agency this connection speaks for, in which round;
    /// returns what the server holds of it. A round not open yet is
    /// answered `RoundNotOpen`: at once, or, if `hold`, once it opens or
    /// after half the reply timeout.
    pub async fn hello(&mut self, agency: u32, round: u64, hold: bool) -> Result<Welcome, Fault> {
        let wait = if hold { (self.reader.timeout / 2).min(HELLO_WAIT) } else { Duration::ZERO };
        let wait_ms = u32::try_from(wait.as_millis()).expect("a wait of seconds");
        match self.ask(&Message::Hello { agency, round, wait_ms }).await? {
            Message::Welcome { stored, digest, finished, stage } => {
                Ok(Welcome { progress: Progress::new(stored, digest), finished, stage })
            }
            other => Err(Fault::from_reply(other)),
        }
    }
}
