//! `bench --hostile N`: the server's memory while N authenticated agencies
//! each pipeline maximum-size batches as fast as they can and never read a
//! reply, and the gate's pool is full of connections that have not said
//! `Hello`, each holding as much as it may send before it does. The server
//! must keep its memory within a bound of its limits (docs/BENCHMARKS.md
//! states it), whatever they do.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::tls::TlsConnector;
use protocol::{bet_wire_len, BetBatchBuilder, Message, MessageReader, MessageWriter, MAX_FRAME_LEN};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use ::server::{BEFORE_HELLO_BYTES, DEFAULT_MAX_UNAUTHENTICATED};

/// Memory a connection can make the server hold at most, as
/// docs/BENCHMARKS.md accounts for it: its TLS session, rustls' buffers of
/// a record received and of its plaintext (16 KiB each), the frame being
/// read (8 KiB), one frame whose bets wait for room in the writer's queue
/// (8 KiB) and its task.
pub const PER_CONNECTION_KIB: u64 = 68;

/// Memory a connection waiting in the gate's pool can make the server hold
/// at most: it may send [`BEFORE_HELLO_BYTES`] before its `Hello`, so
/// rustls' buffer of a record received stays within 16 KiB; with its TLS
/// session, its task and the buffers an echo of the largest frame leaves
/// grown, for the costliest shapes found (an agency's handshake done, an
/// echo whose reply it does not read, then a record cut short of the
/// limit; docs/BENCHMARKS.md has what they measure).
pub const PER_WAITING_KIB: u64 = 48;

/// What a server serving batches holds beyond what it held at start,
/// whatever the number of connections: its threads' stacks as they are
/// used, the writer's group, the log's buffer.
pub const WORKING_KIB: u64 = 1024;

/// The writer's queue, in KiB.
pub const QUEUE_KIB: u64 = ::server::QUEUE_BYTES as u64 / 1024;

/// What the server's memory did.
pub struct Report {
    pub connections: usize,
    /// Connections waiting in the gate's pool (it holds this many).
    pub waiting: usize,
    /// Resident memory once started, before any connection.
    pub started_kib: u64,
    /// Resident memory once every connection had said Hello, before any batch.
    pub connected_kib: u64,
    /// The most it reached while the batches came.
    pub peak_kib: u64,
    /// Batches the connections managed to write in all.
    pub batches: u64,
}

impl Report {
    /// The bound (docs/BENCHMARKS.md): memory at start, plus the working memory, plus
    /// each connection's, plus each place of the pool, plus the writer's
    /// queue.
    pub fn bound_kib(&self) -> u64 {
        self.started_kib
            + WORKING_KIB
            + self.connections as u64 * PER_CONNECTION_KIB
            + self.waiting as u64 * PER_WAITING_KIB
            + QUEUE_KIB
    }
}

/// Runs the attack for `seconds` against a server of `connections` agencies.
pub fn run(binary: &Path, connections: usize, seconds: u64, dir: &Path) -> anyhow::Result<Report> {
    let credentials = testkit::credentials::shared(connections as u32);
    let storage = dir.join("hostile-round");
    std::fs::create_dir_all(&storage)?;
    let bets = storage.join("bets.csv");
    let mut server = crate::server(binary, dir, connections, &bets)
        .log_level("WARNING")
        .credentials(&credentials)
        // Connections waiting in the pool last the whole load.
        .env("SERVER_AUTH_TIMEOUT", format!("{}s", seconds + 60))
        .try_start()?;
    let port = server.port();
    let started_kib = server.rss_kib()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(async {
        let mut links = Vec::with_capacity(connections);
        for agency in 1..=connections as u32 {
            links.push(connect(port, agency, &credentials).await?);
        }
        let connected_kib = server.rss_kib()?;
        let waiting = DEFAULT_MAX_UNAUTHENTICATED;
        let mut places = Vec::with_capacity(waiting);
        for _ in 0..waiting {
            places.push(wait_in_pool(port, 1, &credentials).await?);
        }
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for link in links {
            let sent = sent.clone();
            tasks.push(tokio::spawn(flood(link, sent)));
        }
        let mut peak_kib = connected_kib;
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak_kib = peak_kib.max(server.rss_kib()?);
        }
        peak_kib = peak_kib.max(server.peak_rss_kib()?);
        tasks.iter().for_each(|t| t.abort());
        let batches = sent.load(std::sync::atomic::Ordering::Relaxed);
        drop(places);
        anyhow::Ok(Report { connections, waiting, started_kib, connected_kib, peak_kib, batches })
    })?;
    drop(runtime);
    crate::stop_server(&mut server)?;
    std::fs::remove_dir_all(storage)?;
    Ok(report)
}

type Link = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection with `agency`'s certificate, its handshake done.
async fn handshake(port: u16, agency: u32, credentials: &Path) -> anyhow::Result<Link> {
    let config = edge::credentials::client_config(&testkit::credentials::agency(credentials, agency))?;
    let name = protocol::tls::server_name("127.0.0.1:1")?;
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    Ok(TlsConnector::from(config).connect(name, stream).await?)
}

/// A TLS connection of `agency` that has said Hello.
async fn connect(port: u16, agency: u32, credentials: &Path) -> anyhow::Result<Link> {
    let tls = handshake(port, agency, credentials).await?;
    let (read_half, write_half) = tokio::io::split(tls);
    let mut writer = MessageWriter::new(write_half);
    let mut reader = MessageReader::new(read_half, MAX_FRAME_LEN);
    writer.send(&Message::Hello { agency, round: 1, wait_ms: 0 }).await?;
    match reader.read().await? {
        Some(Message::Welcome { .. }) => Ok(reader.into_inner().unsplit(writer.into_inner())),
        other => anyhow::bail!("agency {agency}: Hello answered with {other:?}"),
    }
}

/// A connection of `agency` with its TLS handshake done and no `Hello`,
/// that has had the largest echo answered without reading the reply, then
/// sent most of a record beyond, up to what it may send: the costliest
/// place in the pool found (the echo's buffers stay grown).
async fn wait_in_pool(port: u16, agency: u32, credentials: &Path) -> anyhow::Result<Link> {
    let mut tls = handshake(port, agency, credentials).await?;
    let echo = Message::Echo(vec![b'x'; MAX_FRAME_LEN - 64].into());
    MessageWriter::new(&mut tls).send(&echo).await.context("the server closed a waiting connection")?;
    // Under TLS, the start of a record of the largest size: with the
    // handshake (1.5 KiB are left for it) and the echo, just short of the
    // limit.
    let mut record = vec![0x17, 0x03, 0x03, 0x40, 0x00];
    record.resize(BEFORE_HELLO_BYTES - MAX_FRAME_LEN - 1536, 0x5a);
    tls.get_mut().0.write_all(&record).await.context("the server closed a waiting connection")?;
    Ok(tls)
}

/// Sends batches of as many bets as fit a frame, in sequence, forever,
/// reading nothing.
async fn flood(mut link: Link, sent: std::sync::Arc<std::sync::atomic::AtomicU64>) -> anyhow::Result<()> {
    let bet =
        ["Santiago Lionel Ángel María", "Fernández de la Peña Ibáñez", "30904465", "1999-03-17", "1234"];
    let per_frame = (MAX_FRAME_LEN - protocol::BATCH_HEADER_LEN) / bet_wire_len(bet);
    let mut first = 0u64;
    loop {
        let mut batch = BetBatchBuilder::new(first);
        (0..per_frame).for_each(|_| batch.push(bet));
        let frame = batch.finish();
        assert!(frame.len() <= MAX_FRAME_LEN && frame.len() > MAX_FRAME_LEN - bet_wire_len(bet));
        link.write_all(&frame).await.context("the server closed the connection")?;
        first += per_frame as u64;
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
