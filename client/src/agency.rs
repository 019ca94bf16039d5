//! One agency's whole session with the server, faults included: upload
//! every bet, say it has finished, then ask for its winners until the draw
//! is done.
//!
//! Every connection starts with `Hello`, and the server's `Welcome` says
//! where the agency stands: how many of its bets are stored (and their
//! digest), and whether it has finished. The agency goes on from there.
//! When a connection fails in any phase (the server crashed or restarted,
//! the network cut it, a reply did not come in time, the disk was full),
//! the agency connects again with backoff and resumes the same way; it
//! gives up only after [`Config::retry_timeout`] without any progress. What
//! a new connection cannot change (a file that differs from what the
//! server holds, a refusal) ends the session with an error.
//!
//! An agency says "finished" only with the count of all its valid bets,
//! and the server accepts it only when it holds exactly those: a fault can
//! delay the draw, never cut it short.
//!
//! Its `Hello` names its round (`CLI_ROUND`). If that round closed before
//! the agency finished (its time was up, or the operator closed it), the
//! agency stops sending, counts the valid bets of its file the round left
//! out, says so in one line, and still gets its winners; the run fails.
//! If the round has not opened yet, the server holds the `Hello` for a
//! while and the agency asks again, for as long as its retry time allows.

use std::time::{Duration, Instant};

use edge::log::Action;
use protocol::{ErrorCode, Message, RoundStage};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::fault::{Fatal, Fault, NotItsFile, Retry};
use crate::link::{Link, Welcome, WINNERS_WAIT};
use crate::progress::Progress;
use crate::source::{spawn_reader, BetSource, Item, ReadFrom};
use crate::upload::{count_rest, pause, upload, Reported, READ_AHEAD};

/// The shortest pause between two winners queries, whatever `loop.period`
/// says: with a period of `0s` an agency whose server answers at once
/// (one that does not hold queries for the draw) asks 200 times a second
/// at most, instead of spinning.
pub const MIN_QUERY_INTERVAL: Duration = Duration::from_millis(5);

/// A winners query not answered within this long means the draw is still
/// to come: the agency says it waits.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(1);

/// The first pause before connecting again; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(20);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Bytes of the agency's bets, for the shares its `progreso` lines say.
fn size(source: &BetSource) -> u64 {
    match source {
        BetSource::File(path) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        BetSource::Single(_) => 1,
    }
}

/// How a session ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The draw is done and these are the agency's winners; `rejected`
    /// rows of its file could not be sent; `left_out` valid bets were not
    /// stored because the round closed before the agency finished.
    Winners { documents: Vec<String>, rejected: usize, left_out: Option<u64> },
    /// `loop.amount` queries were all answered "not ready".
    GaveUp { queries: u32, rejected: usize },
    /// A shutdown signal arrived first.
    Stopped,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum AgencyError {
    #[error(transparent)]
    Fatal(#[from] Fatal),
    #[error("no progress for {after:?}, giving up; last problem: {last}")]
    GaveUp { after: Duration, last: Retry },
}

/// Runs the agency until it has its winners, gives up, fails or `stop`
/// fires. Either way the socket and the file are closed on return.
pub async fn run(config: &Config, source: BetSource, stop: CancellationToken) -> Result<Ending, AgencyError> {
    let mut agency = Agency::new(config, source.clone());
    let outcome = tokio::select! {
        biased;
        () = stop.cancelled() => Ok(Ending::Stopped),
        outcome = agency.run() => outcome,
    };
    // The connection and the channel are gone, so a reader still running
    // stops at its next hand-over.
    agency.join_reader().await;
    if let BetSource::File(path) = source {
        info!("{}", Action::success("close_file").field("path", path.display()));
    }
    info!("{}", Action::success("close_connection").field("server_address", &config.server_address));
    outcome
}

/// Where the agency stands, across connections.
struct Agency<'a> {
    config: &'a Config,
    source: BetSource,
    /// Valid bets of the source, once one read reached its end and the
    /// server acknowledged them all.
    total: Option<u64>,
    /// The server recorded this agency's "finished".
    finished: bool,
    /// The round closed before the agency finished, leaving this many of
    /// its valid bets out.
    left_out: Option<u64>,
    /// It said it waits for its round to open.
    said_waiting: bool,
    /// Winners queries answered "not ready".
    queries: u32,
    reported: Reported,
    /// How far it has got, and what it said of it.
    progress: Progress,
    /// Pause before the next connection attempt.
    backoff: Duration,
    /// The bet reader of the last upload.
    reader: Option<JoinHandle<()>>,
}

impl<'a> Agency<'a> {
    fn new(config: &'a Config, source: BetSource) -> Agency<'a> {
        let size = size(&source);
        Agency {
            config,
            source,
            total: None,
            finished: false,
            left_out: None,
            said_waiting: false,
            queries: 0,
            reported: Reported::default(),
            progress: Progress::new(config.id, size),
            backoff: FIRST_BACKOFF,
            reader: None,
        }
    }

    async fn run(&mut self) -> Result<Ending, AgencyError> {
        let mut connected_before = false;
        loop {
            let mut connected = false;
            let fault = match self.attempt(&mut connected).await {
                Ok(ending) => return Ok(ending),
                Err(Fault::Fatal(reason)) => return Err(AgencyError::Fatal(reason)),
                Err(Fault::Retry(reason)) => reason,
            };
            self.join_reader().await;
            if self.progress.at.elapsed() > self.config.retry_timeout {
                return Err(AgencyError::GaveUp { after: self.config.retry_timeout, last: fault });
            }
            let delay = self.next_backoff();
            connected_before |= connected;
            let line = Action::in_progress("reconnect")
                .field("client_id", self.config.id)
                .field("in", edge::duration::GoDuration(delay))
                .field("error", &fault);
            // Until the server is first reached, retrying is routine
            // (Compose starts everything at once).
            if connected_before {
                info!("{line}");
            } else {
                debug!("{line}");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: from `Hello` to the winners, as far as it gets.
    async fn attempt(&mut self, connected: &mut bool) -> Result<Ending, Fault> {
        let mut link = Link::connect(self.config).await?;
        let welcome = self.hello(&mut link).await?;
        *connected = true;
        self.backoff = FIRST_BACKOFF;
        debug!(
            "agency {}: the server holds {} of round {} (finished: {}, {:?})",
            self.config.id, welcome.progress, self.config.round, welcome.finished, welcome.stage
        );
        self.finished |= welcome.finished;
        if welcome.stage != RoundStage::Open && !self.finished {
            self.left_out(welcome).await?;
            let ending = self.winners(&mut link).await?;
            link.close().await;
            return Ok(ending);
        }

        if self.total != Some(welcome.progress.bets()) {
            if let Some(total) = self.total.filter(|total| welcome.progress.bets() > *total) {
                let held = welcome.progress.bets();
                return Err(NotItsFile::MoreThanTheFile { agency: self.config.id, held, total }.into());
            }
            let total = self.upload(&mut link, welcome).await?;
            self.total = Some(total);
        }
        if !self.finished {
            self.finish(&mut link).await?;
        }
        let ending = self.winners(&mut link).await?;
        link.close().await;
        Ok(ending)
    }

    async fn upload(&mut self, link: &mut Link, welcome: Welcome) -> Result<u64, Fault> {
        self.join_reader().await;
        let (items, mut batches) = mpsc::channel::<Item>(READ_AHEAD);
        let from = ReadFrom { resume: welcome.progress.bets(), reported_up_to: self.reported.up_to_line };
        let single = matches!(self.source, BetSource::Single(_));
        let source = self.source.clone();
        self.reader = Some(spawn_reader(source, self.config.id, self.config.batch_max_amount, from, items));
        upload(self.config, link, &mut batches, welcome, single, &mut self.reported, &mut self.progress).await
    }

    /// `Hello`; while the round is not open yet, again and again (the
    /// server holds each but the first a while), for at most the retry
    /// time. The first is answered at once, so the agency says it waits as
    /// soon as it does.
    async fn hello(&mut self, link: &mut Link) -> Result<Welcome, Fault> {
        let mut hold = false;
        loop {
            match link.hello(self.config.id, self.config.round, std::mem::replace(&mut hold, true)).await {
                Err(Fault::Retry(waiting @ Retry::Answered { code: ErrorCode::RoundNotOpen, .. })) => {
                    if !self.said_waiting {
                        self.said_waiting = true;
                        let line = Action::in_progress("esperar_ronda").field("client_id", self.config.id);
                        let most = edge::duration::GoDuration(self.config.retry_timeout);
                        info!("{}", line.field("round", self.config.round).field("for_at_most", most));
                    }
                    if self.progress.at.elapsed() > self.config.retry_timeout {
                        return Err(waiting.into());
                    }
                }
                welcome => return welcome,
            }
        }
    }

    /// The round closed before this agency finished: counts the valid
    /// bets of its file after those stored (checking that those are its
    /// first ones), and says how many were left out, once.
    async fn left_out(&mut self, welcome: Welcome) -> Result<(), Fault> {
        if self.left_out.is_some() {
            return Ok(());
        }
        self.join_reader().await;
        let (items, mut read) = mpsc::channel::<Item>(READ_AHEAD);
        let from = ReadFrom { resume: welcome.progress.bets(), reported_up_to: self.reported.up_to_line };
        self.reader = Some(spawn_reader(
            self.source.clone(),
            self.config.id,
            self.config.batch_max_amount,
            from,
            items,
        ));
        let total = count_rest(self.config, &mut read, welcome, &mut self.reported).await?;
        let left_out = total - welcome.progress.bets();
        self.left_out = Some(left_out);
        warn!(
            "{}",
            Action::fail("ronda_cerrada")
                .field("client_id", self.config.id)
                .field("round", self.config.round)
                .field("stored", welcome.progress.bets())
                .field("left_out", left_out)
        );
        Ok(())
    }

    async fn finish(&mut self, link: &mut Link) -> Result<(), Fault> {
        let bets = self.total.expect("the upload ends knowing every bet");
        pause(self.config.loop_period).await;
        match link.ask(&Message::Finished { bets }).await? {
            Message::FinishedAck => {
                debug!("finished with {bets} bets acknowledged");
                self.finished = true;
                self.progress.at = Instant::now();
                Ok(())
            }
            other => Err(Fault::from_reply(other)),
        }
    }

    async fn winners(&mut self, link: &mut Link) -> Result<Ending, Fault> {
        let (rejected, left_out) = (self.reported.rows, self.left_out);
        assert!(
            self.finished || left_out.is_some(),
            "an agency asks for its winners once it has finished, or its round closed"
        );
        // Once every agency has finished, the draw has come or is a moment
        // away (a query held for it is answered "not ready" at the draw):
        // the next query waits `loop.period` alone, once, not the floor.
        let (mut soon, mut soon_left) = (false, true);
        while self.queries < self.config.loop_amount {
            let interval = if self.queries == 0 || std::mem::take(&mut soon) {
                self.config.loop_period
            } else {
                self.config.loop_period.max(MIN_QUERY_INTERVAL)
            };
            pause(interval).await;
            let mut documents = Vec::new();
            let wait_ms = u32::try_from(WINNERS_WAIT.as_millis()).expect("a wait of seconds");
            link.writer.send(&Message::WinnersQuery { wait_ms }).await.map_err(crate::fault::lost)?;
            let mut reply = {
                let answer = link.reader.next_within(WINNERS_WAIT + self.config.reply_timeout);
                tokio::pin!(answer);
                // A query held past a moment: the agency waits for the draw.
                tokio::select! {
                    reply = &mut answer => reply?,
                    () = tokio::time::sleep(SAY_WAITING_AFTER) => {
                        self.progress.waiting(self.total.unwrap_or(0), self.finished);
                        answer.await?
                    }
                }
            };
            loop {
                self.progress.at = Instant::now();
                match reply {
                    Message::NotReady { finished, expected } => {
                        self.queries += 1;
                        soon = finished >= expected && std::mem::take(&mut soon_left);
                        debug!(
                            "the draw is not done yet ({finished}/{expected} finished; query {} of {})",
                            self.queries, self.config.loop_amount
                        );
                        break;
                    }
                    Message::Winners { last: true, documents: more } => {
                        documents.extend(more);
                        return Ok(Ending::Winners { documents, rejected, left_out });
                    }
                    Message::Winners { last: false, documents: more } => documents.extend(more),
                    other => return Err(Fault::from_reply(other)),
                }
                reply = link.reader.next().await?;
            }
        }
        Ok(Ending::GaveUp { queries: self.queries, rejected })
    }

    /// The pause before the next attempt: doubling, with jitter so that
    /// agencies cut off together do not all come back at once.
    fn next_backoff(&mut self) -> Duration {
        let delay = self.backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }

    async fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            if let Err(e) = reader.await {
                warn!("the bet reader failed: {e}");
            }
        }
    }
}
