//! One agency's whole session with the server: upload every bet, say it
//! has finished, then ask for its winners until the draw is done.
//!
//! Bets are read and cut into batches on a blocking thread (the file is
//! read as a stream, never whole) and handed over a small channel. The
//! upload keeps up to [`WINDOW`] batches in flight: one half of the
//! connection sends batches while the other reads their acks, in order.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use lottery::log::Action;
use protocol::{BetRecord, ErrorCode, Message, MessageReader, MessageWriter, ReadError, MAX_FRAME_LEN};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::agency_file::AgencyFile;
use crate::batch::{Batch, BatchCutter, Cut};
use crate::config::Config;

/// Batches sent and not yet acknowledged, at most.
pub const WINDOW: usize = 32;

/// The shortest pause between two winners queries, whatever `loop.period`
/// says: with a period of `0s` a waiting agency asks 200 times a second at
/// most, instead of spinning.
pub const MIN_QUERY_INTERVAL: Duration = Duration::from_millis(5);

/// How long an agency keeps trying to reach a server that is not up yet.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Where the agency's bets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BetSource {
    /// The agency's file, one bet per row.
    File(PathBuf),
    /// The single bet of the environment (`NOMBRE` ... `NUMERO`).
    Single(BetRecord),
}

impl BetSource {
    /// The agency file when it exists, else the bet of the environment.
    pub fn choose(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<BetSource, String> {
        if config.data_file.is_file() {
            return Ok(BetSource::File(config.data_file.clone()));
        }
        let field = |name: &str| {
            env(name).ok_or_else(|| {
                format!(
                    "no agency file at {} and no bet in the environment ({name} is not set)",
                    config.data_file.display()
                )
            })
        };
        Ok(BetSource::Single(BetRecord {
            first_name: field("NOMBRE")?,
            last_name: field("APELLIDO")?,
            document: field("DOCUMENTO")?,
            birthdate: field("NACIMIENTO")?,
            number: field("NUMERO")?,
        }))
    }
}

/// How a session ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The draw is done and these are the agency's winners.
    Winners { documents: Vec<String>, rejected: usize },
    /// `loop.amount` queries were all answered "not ready".
    GaveUp { queries: u32, rejected: usize },
    /// A shutdown signal arrived first.
    Stopped,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum AgencyError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("connection to the server lost: {0}")]
    Io(#[from] io::Error),
    #[error("unreadable reply from the server: {0}")]
    Read(#[from] ReadError),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server refused the request: {0}")]
    Refused(String),
    #[error("unexpected reply from the server: {0}")]
    Unexpected(String),
}

/// What the bet reader hands to the upload.
enum Item {
    Batch(Batch),
    /// A row that cannot be sent, with why.
    Unusable {
        line: u64,
        reason: String,
    },
}

impl From<Cut> for Item {
    fn from(cut: Cut) -> Item {
        match cut {
            Cut::Batch(batch) => Item::Batch(batch),
            Cut::TooLarge { line, size } => Item::Unusable {
                line,
                reason: format!("the bet takes {size} bytes, more than a {MAX_FRAME_LEN}-byte packet holds"),
            },
        }
    }
}

/// Runs the agency until it has its winners, gives up, fails or `stop`
/// fires. Either way the socket and the file are closed on return.
pub async fn run(config: &Config, source: BetSource, stop: CancellationToken) -> Result<Ending, AgencyError> {
    let single = matches!(source, BetSource::Single(_));
    let (items, batches) = mpsc::channel(4);
    let reader = spawn_reader(source.clone(), config.id, config.batch_max_amount, items);
    let outcome = tokio::select! {
        biased;
        () = stop.cancelled() => Ok(Ending::Stopped),
        outcome = session(config, batches, single) => outcome,
    };
    // The session (and with it the socket and the channel) is gone, so the
    // reader stops at its next send.
    let _ = reader.await;
    if let BetSource::File(path) = source {
        info!("{}", Action::success("close_file").field("path", path.display()));
    }
    info!("{}", Action::success("close_connection").field("server_address", &config.server_address));
    outcome
}

/// Reads the bets and cuts them into batches, on a blocking thread.
fn spawn_reader(
    source: BetSource,
    agency: u32,
    max_amount: usize,
    items: mpsc::Sender<Item>,
) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut cutter = BatchCutter::new(agency, max_amount);
        // Hands one item to the upload; false once the upload is gone.
        let send = |item: Item| items.blocking_send(item).is_ok();
        match source {
            BetSource::Single(bet) => {
                if let Some(cut) = cutter.push(bet.fields(), 0) {
                    send(cut.into());
                }
            }
            BetSource::File(path) => {
                let mut file = match AgencyFile::open(&path) {
                    Ok(file) => file,
                    Err(e) => {
                        send(Item::Unusable {
                            line: 0,
                            reason: format!("cannot read {}: {e}", path.display()),
                        });
                        return;
                    }
                };
                while let Some(row) = file.next_row() {
                    let item = match row.bet {
                        Ok(bet) => cutter.push(bet, row.line).map(Item::from),
                        Err(reason) => Some(Item::Unusable { line: row.line, reason }),
                    };
                    if item.is_some_and(|item| !send(item)) {
                        return;
                    }
                }
            }
        }
        if let Some(batch) = cutter.finish() {
            send(Item::Batch(batch));
        }
    })
}

/// One connection to the server, split so that sending and reading acks
/// can go on at once.
struct Link {
    reader: MessageReader<OwnedReadHalf>,
    writer: MessageWriter<OwnedWriteHalf>,
}

impl Link {
    /// Connects, retrying with backoff while the server is not up yet.
    async fn connect(address: &str) -> Result<Link, AgencyError> {
        let give_up = Instant::now() + CONNECT_PATIENCE;
        let mut delay = Duration::from_millis(20);
        loop {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let (read_half, write_half) = stream.into_split();
                    return Ok(Link {
                        reader: MessageReader::new(read_half, MAX_FRAME_LEN),
                        writer: MessageWriter::new(write_half),
                    });
                }
                Err(e) if Instant::now() + delay < give_up => {
                    debug!(
                        "{}",
                        Action::in_progress("connect").field("server_address", address).field("error", e)
                    );
                    sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(source) => return Err(AgencyError::Connect { address: address.into(), source }),
            }
        }
    }

    async fn reply(&mut self) -> Result<Message, AgencyError> {
        self.reader.read().await?.ok_or(AgencyError::Closed)
    }
}

async fn session(
    config: &Config,
    batches: mpsc::Receiver<Item>,
    single: bool,
) -> Result<Ending, AgencyError> {
    let mut link = Link::connect(&config.server_address).await?;
    let rejected = upload(config, &mut link, batches, single).await?;

    pause(config.loop_period).await;
    link.writer.send(&Message::Finished { agency: config.id }).await?;
    match link.reply().await? {
        Message::FinishedAck => {}
        other => return Err(refusal(other)),
    }

    for query in 1..=config.loop_amount {
        let interval =
            if query == 1 { config.loop_period } else { config.loop_period.max(MIN_QUERY_INTERVAL) };
        pause(interval).await;
        match ask_winners(config.id, &mut link).await {
            Ok(Some(documents)) => return Ok(Ending::Winners { documents, rejected }),
            Ok(None) => debug!("the draw is not done yet (query {query} of {})", config.loop_amount),
            // An idle server may have closed the connection between two
            // slow queries: connect again and go on counting.
            Err(AgencyError::Closed | AgencyError::Io(_)) => {
                debug!("reconnecting to ask for the winners");
                link = Link::connect(&config.server_address).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Ending::GaveUp { queries: config.loop_amount, rejected })
}

/// Sends every batch and reads every ack; returns how many batches and rows
/// were rejected.
async fn upload(
    config: &Config,
    link: &mut Link,
    mut items: mpsc::Receiver<Item>,
    single: bool,
) -> Result<usize, AgencyError> {
    let (in_flight, mut awaiting) = mpsc::channel::<Batch>(WINDOW);
    let Link { reader, writer } = link;
    let send = async {
        let mut unusable = 0;
        let mut first = true;
        while let Some(item) = items.recv().await {
            let batch = match item {
                Item::Batch(batch) => batch,
                Item::Unusable { line, reason } => {
                    error!("{}", Action::fail("apuesta_enviada").field("line", line).field("error", reason));
                    unusable += 1;
                    continue;
                }
            };
            if !first {
                pause(config.loop_period).await;
            }
            first = false;
            let slot = in_flight.reserve().await.map_err(|_| AgencyError::Closed)?;
            writer.queue_frame(&batch.frame);
            writer.flush().await?;
            slot.send(batch);
        }
        drop(in_flight);
        Ok::<usize, AgencyError>(unusable)
    };
    let receive = async {
        let mut rejected = 0;
        while let Some(batch) = awaiting.recv().await {
            match reader.read().await?.ok_or(AgencyError::Closed)? {
                Message::BatchAck { seq, .. } if seq == batch.seq => log_sent(&batch, single),
                Message::Error { code, seq, bet, reason } if seq == batch.seq && batch_error(code) => {
                    let mut line = Action::fail("apuesta_enviada")
                        .field("lines", format!("{}-{}", batch.lines[0], batch.lines[batch.lines.len() - 1]))
                        .field("cantidad", batch.lines.len());
                    if let Some(index) = bet.and_then(|i| batch.lines.get(usize::from(i))) {
                        line = line.field("bet_line", index);
                    }
                    error!("{}", line.field("error", reason));
                    rejected += 1;
                }
                other => return Err(refusal(other)),
            }
        }
        Ok::<usize, AgencyError>(rejected)
    };
    let (unusable, rejected) = tokio::try_join!(send, receive)?;
    Ok(unusable + rejected)
}

/// Errors that reject one batch and leave the session going.
fn batch_error(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::InvalidBet | ErrorCode::DuplicateBatch | ErrorCode::StorageFailure)
}

/// `apuesta_enviada` per confirmed bet: INFO for the single bet of the
/// environment, DEBUG for the bets of a file. The bets are decoded again
/// from the frame only when the line will be written.
fn log_sent(batch: &Batch, single: bool) {
    if !single && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for bet in &batch.bets() {
        let line =
            Action::success("apuesta_enviada").field("dni", &bet.document).field("numero", &bet.number);
        if single {
            info!("{line}");
        } else {
            debug!("{line}");
        }
    }
}

/// One winners query: `Some(documents)` once the draw is done.
async fn ask_winners(agency: u32, link: &mut Link) -> Result<Option<Vec<String>>, AgencyError> {
    link.writer.send(&Message::WinnersQuery { agency }).await?;
    let mut documents = Vec::new();
    loop {
        match link.reply().await? {
            Message::NotReady { .. } => return Ok(None),
            Message::Winners { last, documents: more } => {
                documents.extend(more);
                if last {
                    return Ok(Some(documents));
                }
            }
            other => return Err(refusal(other)),
        }
    }
}

fn refusal(message: Message) -> AgencyError {
    match message {
        Message::Error { reason, .. } => AgencyError::Refused(reason),
        other => AgencyError::Unexpected(format!("{other:?}")),
    }
}

async fn pause(period: Duration) {
    if !period.is_zero() {
        sleep(period).await;
    }
}
