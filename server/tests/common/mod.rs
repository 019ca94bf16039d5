//! Helpers shared by the server's integration tests: a real server on a
//! loopback port, and a raw protocol connection to poke at it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lottery::Bet;
use protocol::tls::{self, TlsConnector};
use protocol::{BetRecord, Message, MessageReader, MessageWriter, MAX_FRAME_LEN};
use server::{Config, Server};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Agencies the shared test credentials cover.
pub const AGENCIES_WITH_CREDENTIALS: u32 = 32;

/// The shared test credentials (see `testkit::credentials`).
pub fn credentials() -> PathBuf {
    testkit::credentials::shared(AGENCIES_WITH_CREDENTIALS)
}

/// A server on `127.0.0.1:<free port>` with its round in a temp dir.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where its pages listen.
    pub http: Option<SocketAddr>,
    pub storage: PathBuf,
    agencies: u32,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), server::WriterFailed>>,
    dir: Arc<tempfile::TempDir>,
}

pub fn config(agencies: u32, storage: &Path) -> Config {
    let dir = credentials();
    let tls =
        edge::credentials::server_config(&testkit::credentials::server(&dir), Some(&dir.join("crl.pem")))
            .unwrap();
    Config {
        port: 0,
        listen_backlog: 64,
        logging_level: edge::log::Level::Info,
        logging_level_name: "INFO".into(),
        agencies,
        storage_path: storage.to_path_buf(),
        idle_timeout: Duration::from_secs(10),
        tls,
        revocation: true,
        auth_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_unauthenticated: 64,
        schedule: server::Schedule::default(),
        http_address: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    }
}

impl TestServer {
    pub async fn start(agencies: u32) -> TestServer {
        TestServer::start_with(agencies, |_| {}).await
    }

    pub async fn start_with(agencies: u32, tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_in(Arc::new(tempfile::tempdir().unwrap()), agencies, tweak).await
    }

    async fn start_in(
        dir: Arc<tempfile::TempDir>,
        agencies: u32,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = config(agencies, &dir.path().join("bets.csv"));
        tweak(&mut config);
        let storage = config.storage_path.clone();
        let server = Server::bind(config).await.unwrap();
        let port = server.local_addr().unwrap().port();
        let http = server.http_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http,
            storage,
            agencies,
            stop: Some(stop),
            task,
            dir,
        }
    }

    /// Stops the server and waits for it; returns the bets it stored.
    pub async fn stop(self) -> Vec<Bet> {
        let (storage, _keep) = (self.storage.clone(), self.dir.clone());
        self.shut_down().await;
        stored(&storage)
    }

    /// Stops the server and starts another on the same storage.
    pub async fn restart(self) -> TestServer {
        let (dir, agencies) = (self.dir.clone(), self.agencies);
        self.shut_down().await;
        TestServer::start_in(dir, agencies, |_| {}).await
    }

    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(3), &mut self.task).await.unwrap().unwrap();
        result.unwrap();
    }

    pub fn stored(&self) -> Vec<Bet> {
        stored(&self.storage)
    }
}

pub fn stored(path: &Path) -> Vec<Bet> {
    lottery::storage::load_bets(path).unwrap().collect::<Result<_, _>>().unwrap()
}

/// A TCP connection to `to` from `from` (any 127.0.0.x is this host).
pub async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Any byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A protocol connection driven by hand.
pub struct Raw {
    pub reader: MessageReader<ReadHalf<Box<dyn Io>>>,
    pub writer: MessageWriter<WriteHalf<Box<dyn Io>>>,
}

impl Raw {
    fn over(stream: Box<dyn Io>) -> Raw {
        let (r, w) = tokio::io::split(stream);
        Raw { reader: MessageReader::new(r, MAX_FRAME_LEN), writer: MessageWriter::new(w) }
    }

    /// Plain frames, no TLS: what an anonymous peer (or `nc`) speaks.
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw::over(Box::new(TcpStream::connect(addr).await.unwrap()))
    }

    /// TLS with agency `agency`'s certificate (`None`: no certificate).
    pub async fn tls(addr: SocketAddr, agency: Option<u32>) -> Raw {
        Raw::try_tls(addr, agency).await.unwrap()
    }

    /// Like [`Raw::tls`], saying why the handshake failed.
    pub async fn try_tls(addr: SocketAddr, agency: Option<u32>) -> std::io::Result<Raw> {
        let dir = credentials();
        let config = match agency {
            Some(agency) => {
                edge::credentials::client_config(&testkit::credentials::agency(&dir, agency)).unwrap()
            }
            None => anonymous_tls(&dir),
        };
        Raw::tls_with(addr, config).await
    }

    /// TLS with this client configuration.
    pub async fn tls_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(addr).await?;
        let name = tls::server_name(&addr.to_string()).unwrap();
        let tls = TlsConnector::from(config).connect(name, stream).await?;
        Ok(Raw::over(Box::new(tls)))
    }

    /// A connection that has said Hello for `agency`, with its own
    /// certificate; returns it and the Welcome.
    pub async fn agency(addr: SocketAddr, agency: u32) -> (Raw, Message) {
        let mut raw = Raw::tls(addr, Some(agency)).await;
        let welcome = raw.ask(&Message::Hello { agency, round: 1, wait_ms: 0 }).await;
        assert!(matches!(welcome, Message::Welcome { .. }), "{welcome:?}");
        (raw, welcome)
    }

    pub async fn send(&mut self, message: &Message) {
        self.writer.send(message).await.unwrap();
    }

    /// Writes bytes that need not be a valid frame.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer_stream().write_all(bytes).await.unwrap();
    }

    fn writer_stream(&mut self) -> &mut WriteHalf<Box<dyn Io>> {
        // MessageWriter keeps nothing queued between sends, so writing
        // beside it cannot reorder bytes.
        self.writer.get_mut()
    }

    /// The read half, for raw bytes.
    pub fn reader_stream(&mut self) -> &mut ReadHalf<Box<dyn Io>> {
        self.reader.get_mut()
    }

    /// The next message; panics after 5 s.
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), self.reader.read()).await.unwrap().unwrap()
    }

    /// Sends `message` and returns the reply.
    pub async fn ask(&mut self, message: &Message) -> Message {
        self.send(message).await;
        self.recv().await.expect("a reply")
    }

    /// Asserts the server closes the connection (EOF or reset) within 5 s.
    pub async fn expect_closed(&mut self) {
        match tokio::time::timeout(Duration::from_secs(5), self.reader.read()).await {
            Ok(Ok(None)) | Ok(Err(_)) => {}
            Ok(Ok(Some(m))) => panic!("expected the connection closed, got {m:?}"),
            Err(_) => panic!("the connection is still open after 5 s"),
        }
    }
}

pub fn bet(document: &str, number: u32) -> BetRecord {
    BetRecord {
        first_name: "Santiago Lionel".into(),
        last_name: "Lorca".into(),
        document: document.into(),
        birthdate: "1999-03-17".into(),
        number: number.to_string(),
    }
}

/// A batch whose first bet has ordinal `first`.
pub fn batch(first: u64, bets: Vec<BetRecord>) -> Message {
    Message::BetBatch { first, bets: bets.into() }
}

/// The ack of a batch of `count` bets from ordinal `first`.
pub fn ack(first: u64, count: u16) -> Message {
    Message::BatchAck { first, count }
}

/// TLS that verifies the server but presents no certificate.
pub fn anonymous_tls(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client configuration for agency `id` against `addr`.
pub fn client_config(id: u32, addr: SocketAddr, data_file: &Path) -> client::Config {
    let credentials = testkit::credentials::agency(&credentials(), id);
    client::Config {
        id,
        round: 1,
        server_address: addr.to_string(),
        loop_amount: 2000,
        loop_period: Duration::ZERO,
        log_level: edge::log::Level::Info,
        log_level_name: "INFO".into(),
        batch_max_amount: 80,
        data_file: data_file.to_path_buf(),
        reply_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(20),
        tls: edge::credentials::client_config(&credentials).unwrap(),
        server_name: tls::server_name(&addr.to_string()).unwrap(),
    }
}
