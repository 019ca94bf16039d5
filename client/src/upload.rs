//! Sending the bets of one read over one connection, pipelined.
//!
//! First the read's [`Item::Resumed`] is checked against the server's
//! `Welcome`: the bets the server already holds of this agency must be
//! exactly the first ones of the file. Then one half of the connection
//! sends batches (up to [`WINDOW`] unacknowledged) while the other reads
//! their acks, in order.

use std::time::Duration;

use edge::log::Action;
use protocol::{ErrorCode, Message, MessageWriter};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::batch::Batch;
use crate::config::Config;
use crate::fault::{lost, Fatal, Fault, NotItsFile, Retry};
use crate::link::{Link, Replies, Welcome};
use crate::progress::Progress;
use crate::source::{Item, Unsendable};

/// Batches sent and not yet acknowledged, at most.
pub const WINDOW: usize = 32;

/// Queued frames are sent once they reach this many bytes (a TLS record
/// holds up to 16 KiB), or as soon as the reader has nothing ready.
const FLUSH_BYTES: usize = 16 * 1024;

/// Items the reader may have ready ahead of the upload: the capacity of
/// the channel between them.
pub const READ_AHEAD: usize = 8;

/// Unusable rows reported so far, across reads of the same file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reported {
    /// The last line reported: a later read reports only rows after it.
    pub up_to_line: u64,
    /// How many rows.
    pub rows: usize,
}

impl Reported {
    fn report(&mut self, line: u64, reason: Unsendable) {
        error!("{}", Action::fail("apuesta_enviada").field("line", line).field("error", reason));
        let before = self.rows;
        self.up_to_line = self.up_to_line.max(line);
        self.rows += 1;
        assert!(self.rows > before, "reported rows only grow");
    }
}

/// Uploads what `items` holds after the bets the server has; returns how
/// many valid bets the agency has in all. `acked` is set at every ack.
pub async fn upload(
    config: &Config,
    link: &mut Link,
    items: &mut mpsc::Receiver<Item>,
    welcome: Welcome,
    single: bool,
    reported: &mut Reported,
    progress: &mut Progress,
) -> Result<u64, Fault> {
    resume(config, items, welcome, reported).await?;
    let (in_flight, awaiting) = mpsc::channel::<Batch>(WINDOW);
    let Link { reader, writer } = link;
    let send = send_batches(config, writer, items, in_flight, welcome, reported);
    let receive = receive_acks(reader, awaiting, single, progress);
    let (total, ()) = tokio::try_join!(send, receive)?;
    assert!(total >= welcome.progress.bets(), "an agency has at least the bets the server holds");
    debug!("agency {}: all {total} bets are stored", config.id);
    Ok(total)
}

/// Checks the read's first bets against what the server holds (as an
/// upload does), then reads the rest without sending it: the number of
/// valid bets of the file.
pub async fn count_rest(
    config: &Config,
    items: &mut mpsc::Receiver<Item>,
    welcome: Welcome,
    reported: &mut Reported,
) -> Result<u64, Fault> {
    resume(config, items, welcome, reported).await?;
    loop {
        match items.recv().await {
            Some(Item::Unusable { line, reason }) => reported.report(line, reason),
            Some(Item::Batch(_)) => {}
            Some(Item::End { bets }) => return Ok(bets),
            Some(Item::Failed(error)) => return Err(Fatal::Source(error).into()),
            Some(Item::Resumed(_)) => unreachable!("a read resumes once"),
            None => return Err(Fatal::ReaderStopped.into()),
        }
    }
}

/// Checks the read's skipped bets against what the server holds: they
/// must be exactly the first bets of the file.
async fn resume(
    config: &Config,
    items: &mut mpsc::Receiver<Item>,
    welcome: Welcome,
    reported: &mut Reported,
) -> Result<(), Fault> {
    let skipped = loop {
        match items.recv().await {
            Some(Item::Unusable { line, reason }) => reported.report(line, reason),
            Some(Item::Resumed(skipped)) => break skipped,
            Some(Item::Failed(error)) => return Err(Fatal::Source(error).into()),
            Some(Item::Batch(_) | Item::End { .. }) => unreachable!("a read resumes before its first batch"),
            None => return Err(Fatal::ReaderStopped.into()),
        }
    };
    let (agency, held) = (config.id, welcome.progress);
    if skipped.bets() < held.bets() {
        return Err(NotItsFile::Shorter { agency, held: held.bets(), valid: skipped.bets() }.into());
    }
    if skipped != held {
        return Err(NotItsFile::Differs { agency, bets: skipped.bets(), held: held.bets() }.into());
    }
    if held.bets() > 0 {
        info!("{}", Action::in_progress("resume").field("client_id", agency).field("stored", held.bets()));
    }
    Ok(())
}

/// Sends the read's batches, up to [`WINDOW`] unacknowledged; returns the
/// number of valid bets once the read is done.
async fn send_batches<W: AsyncWrite + Unpin>(
    config: &Config,
    writer: &mut MessageWriter<W>,
    items: &mut mpsc::Receiver<Item>,
    in_flight: mpsc::Sender<Batch>,
    welcome: Welcome,
    reported: &mut Reported,
) -> Result<u64, Fault> {
    let mut first = true;
    let mut ready = Vec::with_capacity(READ_AHEAD);
    loop {
        // About to wait for the reader: what is queued goes out now.
        if items.is_empty() {
            writer.flush().await.map_err(lost)?;
        }
        // All the reader has ready at once: it is woken once per
        // READ_AHEAD items, not once per batch.
        if items.recv_many(&mut ready, READ_AHEAD).await == 0 {
            return Err(Fatal::ReaderStopped.into());
        }
        for item in ready.drain(..) {
            // Frames go out together: one flush (a TLS record, a write)
            // carries up to FLUSH_BYTES.
            if writer.queued() >= FLUSH_BYTES {
                writer.flush().await.map_err(lost)?;
            }
            let batch = match item {
                Item::Unusable { line, reason } => {
                    reported.report(line, reason);
                    continue;
                }
                Item::Batch(batch) => batch,
                Item::End { bets } => {
                    writer.flush().await.map_err(lost)?;
                    return Ok(bets);
                }
                Item::Failed(error) => return Err(Fatal::Source(error).into()),
                Item::Resumed(_) => unreachable!("a read resumes once"),
            };
            if welcome.finished {
                return Err(NotItsFile::Longer { agency: config.id, held: welcome.progress.bets() }.into());
            }
            if !first && !config.loop_period.is_zero() {
                writer.flush().await.map_err(lost)?;
                pause(config.loop_period).await;
            }
            first = false;
            let slot = match in_flight.try_reserve() {
                Ok(slot) => slot,
                Err(_) => {
                    // The window is full: what is queued must go out for
                    // its acks to come back.
                    writer.flush().await.map_err(lost)?;
                    in_flight.reserve().await.map_err(|_| Retry::AcksStopped)?
                }
            };
            writer.queue_frame(&batch.frame);
            slot.send(batch);
        }
    }
}

/// Reads the acks of the batches sent, in order.
async fn receive_acks(
    reader: &mut Replies,
    mut awaiting: mpsc::Receiver<Batch>,
    single: bool,
    progress: &mut Progress,
) -> Result<(), Fault> {
    while let Some(batch) = awaiting.recv().await {
        match reader.next().await? {
            Message::BatchAck { first, count } if first == batch.first => {
                progress.acked(first + u64::from(count), batch.end);
                debug!("bets {first}..{} acknowledged", first + u64::from(count));
                log_sent(&batch, single);
            }
            Message::Error { code: ErrorCode::InvalidBet, first, bet, reason } if first == batch.first => {
                // The agency checks every bet with the server's rules
                // before it gives it an ordinal: a bet refused here means
                // the two disagree, and resuming cannot help.
                let line =
                    bet.and_then(|i| batch.lines.get(usize::from(i))).copied().unwrap_or(batch.lines[0]);
                return Err(Fatal::Disagreement { line, reason }.into());
            }
            other => return Err(Fault::from_reply(other)),
        }
    }
    Ok(())
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

pub async fn pause(period: Duration) {
    if !period.is_zero() {
        tokio::time::sleep(period).await;
    }
}
