//! Sending the bets of one read over one connection, pipelined.
//!
//! First the read's [`Item::Resumed`] is checked against the server's
//! `Welcome`: the bets the server already holds of this agency must be
//! exactly the first ones of the file. Then one half of the connection
//! sends batches (up to [`WINDOW`] unacknowledged) while the other reads
//! their acks, in order.

use std::time::{Duration, Instant};

use edge::log::Action;
use protocol::{ErrorCode, Message};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::batch::Batch;
use crate::config::Config;
use crate::link::{io_fault, Fault, Link, Welcome};
use crate::source::Item;

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
    fn report(&mut self, line: u64, reason: String) {
        error!("{}", Action::fail("apuesta_enviada").field("line", line).field("error", reason));
        self.up_to_line = self.up_to_line.max(line);
        self.rows += 1;
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
    acked: &mut Instant,
) -> Result<u64, Fault> {
    let skipped = loop {
        match items.recv().await {
            Some(Item::Unusable { line, reason }) => reported.report(line, reason),
            Some(Item::Resumed(skipped)) => break skipped,
            Some(Item::Failed(reason)) => return Err(Fault::Fatal(reason)),
            Some(Item::Batch(_) | Item::End { .. }) => unreachable!("a read resumes before its first batch"),
            None => return Err(Fault::Fatal("the bet reader stopped".into())),
        }
    };
    let held = welcome.progress;
    if skipped.bets() < held.bets() {
        return Err(Fault::Fatal(format!(
            "the server holds {} bets of agency {}, but its file has only {} valid bets: it is not the file this agency uploaded",
            held.bets(),
            config.id,
            skipped.bets()
        )));
    }
    if skipped != held {
        return Err(Fault::Fatal(format!(
            "the first {} bets of the file differ from the {} the server holds for agency {}: it is not the file this agency uploaded",
            skipped.bets(),
            held.bets(),
            config.id
        )));
    }
    if held.bets() > 0 {
        info!("{}", Action::in_progress("resume").field("client_id", config.id).field("stored", held.bets()));
    }

    let (in_flight, mut awaiting) = mpsc::channel::<Batch>(WINDOW);
    let Link { reader, writer } = link;
    let send = async {
        let mut first = true;
        let mut ready = Vec::with_capacity(READ_AHEAD);
        loop {
            // About to wait for the reader: what is queued goes out now.
            if items.is_empty() {
                writer.flush().await.map_err(io_fault)?;
            }
            // All the reader has ready at once: it is woken once per
            // READ_AHEAD items, not once per batch.
            if items.recv_many(&mut ready, READ_AHEAD).await == 0 {
                return Err(Fault::Fatal("the bet reader stopped".into()));
            }
            for item in ready.drain(..) {
                // Frames go out together: one flush (a TLS record, a
                // write) carries up to FLUSH_BYTES.
                if writer.queued() >= FLUSH_BYTES {
                    writer.flush().await.map_err(io_fault)?;
                }
                match item {
                    Item::Unusable { line, reason } => reported.report(line, reason),
                    Item::Batch(batch) => {
                        if welcome.finished {
                            return Err(Fault::Fatal(format!(
                                "agency {} finished with {} bets, but its file has more: it is not the file this agency uploaded",
                                config.id,
                                held.bets()
                            )));
                        }
                        if !first && !config.loop_period.is_zero() {
                            writer.flush().await.map_err(io_fault)?;
                            pause(config.loop_period).await;
                        }
                        first = false;
                        let slot = match in_flight.try_reserve() {
                            Ok(slot) => slot,
                            Err(_) => {
                                // The window is full: what is queued must go
                                // out for its acks to come back.
                                writer.flush().await.map_err(io_fault)?;
                                in_flight.reserve().await.map_err(|_| Fault::Retry("acks stopped".into()))?
                            }
                        };
                        writer.queue_frame(&batch.frame);
                        slot.send(batch);
                    }
                    Item::End { bets } => {
                        writer.flush().await.map_err(io_fault)?;
                        drop(in_flight);
                        return Ok(bets);
                    }
                    Item::Failed(reason) => return Err(Fault::Fatal(reason)),
                    Item::Resumed(_) => unreachable!("a read resumes once"),
                }
            }
        }
    };
    let receive = async {
        while let Some(batch) = awaiting.recv().await {
            match reader.next().await? {
                Message::BatchAck { first, .. } if first == batch.first => {
                    *acked = Instant::now();
                    log_sent(&batch, single);
                }
                Message::Error { code: ErrorCode::InvalidBet, first, bet, reason }
                    if first == batch.first =>
                {
                    // The agency checks every bet with the server's rules
                    // before it gives it an ordinal: a bet refused here
                    // means the two disagree, and resuming cannot help.
                    let line =
                        bet.and_then(|i| batch.lines.get(usize::from(i))).copied().unwrap_or(batch.lines[0]);
                    return Err(Fault::Fatal(format!(
                        "the server refused the bet at line {line} as invalid ({reason}), though this agency found it valid: are client and server of the same version?"
                    )));
                }
                other => return Err(Fault::from_reply(other)),
            }
        }
        Ok::<(), Fault>(())
    };
    let (total, ()) = tokio::try_join!(send, receive)?;
    debug!("agency {}: all {total} bets are stored", config.id);
    Ok(total)
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
