//! What the server counts, for Prometheus: atomics the writer and the
//! sessions bump off any lock, read and encoded only when `/metrics` is
//! asked for ([`Exposition`], a `prometheus_client` collector), so that
//! counting costs the hot path an atomic add and nothing more.
//!
//! Every label set is bounded: agencies (1..N), a batch's results, error
//! codes, a connection's stage, a round's state, why log lines were not
//! written.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use lottery::storage::timing::SyncTimes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use protocol::ErrorCode;

use crate::board::Board;
use crate::gate::Gate;
use crate::session::PeerLines;

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResult {
    Stored,
    AlreadyStored,
    Invalid,
    OutOfSequence,
    AfterFinished,
    RoundClosed,
    StorageFailure,
}

impl BatchResult {
    const ALL: [BatchResult; 7] = [
        BatchResult::Stored,
        BatchResult::AlreadyStored,
        BatchResult::Invalid,
        BatchResult::OutOfSequence,
        BatchResult::AfterFinished,
        BatchResult::RoundClosed,
        BatchResult::StorageFailure,
    ];

    fn label(self) -> &'static str {
        match self {
            BatchResult::Stored => "stored",
            BatchResult::AlreadyStored => "already_stored",
            BatchResult::Invalid => "invalid",
            BatchResult::OutOfSequence => "out_of_sequence",
            BatchResult::AfterFinished => "after_finished",
            BatchResult::RoundClosed => "round_closed",
            BatchResult::StorageFailure => "storage_failure",
        }
    }
}

/// The error codes a refusal may carry, as the metrics name them.
const CODES: [(ErrorCode, &str); 18] = [
    (ErrorCode::Malformed, "malformed"),
    (ErrorCode::UnsupportedVersion, "unsupported_version"),
    (ErrorCode::UnknownMessage, "unknown_message"),
    (ErrorCode::FrameTooLarge, "frame_too_large"),
    (ErrorCode::InvalidBet, "invalid_bet"),
    (ErrorCode::UnknownAgency, "unknown_agency"),
    (ErrorCode::AlreadyFinished, "already_finished"),
    (ErrorCode::OutOfSequence, "out_of_sequence"),
    (ErrorCode::StorageFailure, "storage_failure"),
    (ErrorCode::UnexpectedMessage, "unexpected_message"),
    (ErrorCode::ShuttingDown, "shutting_down"),
    (ErrorCode::Superseded, "superseded"),
    (ErrorCode::Unauthenticated, "unauthenticated"),
    (ErrorCode::Forbidden, "forbidden"),
    (ErrorCode::RoundClosed, "round_closed"),
    (ErrorCode::RoundNotOpen, "round_not_open"),
    (ErrorCode::RoundOpen, "round_open"),
    (ErrorCode::UnknownRound, "unknown_round"),
];

/// The server's counters; see the module documentation.
#[derive(Debug)]
pub struct Metrics {
    /// Bets stored since the server started, every round, agency K at K − 1.
    bets: Vec<AtomicU64>,
    batches: [AtomicU64; BatchResult::ALL.len()],
    /// By error code, at the code's index in [`CODES`].
    refusals: [AtomicU64; CODES.len()],
    /// Sessions that speak for an agency now.
    agency_sessions: AtomicI64,
    /// Whether the last group that wrote to the round's files failed.
    storage_failing: AtomicBool,
    syncs: Arc<SyncTimes>,
}

impl Metrics {
    pub fn new(agencies: u32, syncs: Arc<SyncTimes>) -> Metrics {
        Metrics {
            bets: (0..agencies).map(|_| AtomicU64::new(0)).collect(),
            batches: Default::default(),
            refusals: Default::default(),
            agency_sessions: AtomicI64::new(0),
            storage_failing: AtomicBool::new(false),
            syncs,
        }
    }

    /// `bets` more bets of `agency` are stored.
    pub fn stored(&self, agency: u32, bets: u64) {
        self.bets[agency as usize - 1].fetch_add(bets, Ordering::Relaxed);
    }

    pub fn batch(&self, result: BatchResult) {
        let at = BatchResult::ALL.iter().position(|r| *r == result).expect("every result is listed");
        self.batches[at].fetch_add(1, Ordering::Relaxed);
    }

    /// A group that wrote to the round's files failed (`true`), or one
    /// succeeded.
    pub fn storage_wrote(&self, failed: bool) {
        self.storage_failing.store(failed, Ordering::Relaxed);
    }

    pub fn storage_failing(&self) -> bool {
        self.storage_failing.load(Ordering::Relaxed)
    }

    /// A refusal with `code` was sent.
    pub fn refused(&self, code: ErrorCode) {
        if let Some(at) = CODES.iter().position(|(c, _)| *c == code) {
            self.refusals[at].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A session started (`1`) or stopped (`-1`) speaking for an agency.
    pub fn agency_session(&self, change: i64) {
        let now = self.agency_sessions.fetch_add(change, Ordering::Relaxed) + change;
        assert!(now >= 0, "sessions end after they start");
    }
}

/// `/metrics`: the counters with the board, the gate and the log, encoded
/// in Prometheus' text format when asked.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(
        metrics: Arc<Metrics>,
        board: Arc<Board>,
        gate: Arc<Gate>,
        peer_lines: Arc<PeerLines>,
    ) -> Exposition {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape { metrics, board, gate, peer_lines }));
        Exposition { registry }
    }

    /// Every metric now, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("a String takes any text");
        text
    }
}

/// What a scrape reads.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    gate: Arc<Gate>,
    peer_lines: Arc<PeerLines>,
}

type Result = std::result::Result<(), std::fmt::Error>;

fn counter(encoder: &mut MetricEncoder<'_>, value: u64) -> Result {
    encoder.encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result {
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut bets = encoder.encode_descriptor(
            "lottery_bets_stored",
            "Bets stored since the server started, every round, by agency.",
            None,
            MetricType::Counter,
        )?;
        for (agency, stored) in (1u32..).zip(&m.bets) {
            counter(&mut bets.encode_family(&[("agency", agency.to_string())])?, load(stored))?;
        }
        let help = "Batches answered, by what became of them.";
        let mut batches = encoder.encode_descriptor("lottery_batches", help, None, MetricType::Counter)?;
        for (result, count) in BatchResult::ALL.iter().zip(&m.batches) {
            counter(&mut batches.encode_family(&[("result", result.label())])?, load(count))?;
        }
        let help = "Requests refused, by the error code sent.";
        let mut refusals = encoder.encode_descriptor("lottery_refusals", help, None, MetricType::Counter)?;
        for ((_, code), count) in CODES.iter().zip(&m.refusals) {
            counter(&mut refusals.encode_family(&[("code", *code)])?, load(count))?;
        }
        self.encode_round(&mut encoder)?;
        self.encode_connections(&mut encoder)?;
        let syncs = m.syncs.now();
        let seconds = Unit::Seconds;
        let help = "How long the disk took to make a group of the round's files durable (fdatasync).";
        let mut fsync =
            encoder.encode_descriptor("lottery_fsync", help, Some(&seconds), MetricType::Histogram)?;
        fsync.encode_histogram::<NoLabelSet>(syncs.seconds, syncs.count, &syncs.buckets, None)?;
        let help = "Log lines not written: held back by the peers' budget, or dropped because stdout could not keep up.";
        let mut dropped =
            encoder.encode_descriptor("lottery_log_lines_dropped", help, None, MetricType::Counter)?;
        counter(&mut dropped.encode_family(&[("reason", "budget")])?, self.peer_lines.held_back_in_all())?;
        counter(&mut dropped.encode_family(&[("reason", "stdout")])?, edge::log::dropped_lines())?;
        Ok(())
    }
}

impl Scrape {
    fn encode_round(&self, encoder: &mut DescriptorEncoder<'_>) -> Result {
        let view = self.board.view();
        let help = "The open round's number (or the last one's, drawn, until the next opens).";
        let mut round = encoder.encode_descriptor("lottery_round", help, None, MetricType::Gauge)?;
        round.encode_gauge(&i64::try_from(view.number).unwrap_or(i64::MAX))?;
        let help = "1 for the round's state, 0 for the others.";
        let mut state = encoder.encode_descriptor("lottery_round_state", help, None, MetricType::Gauge)?;
        for name in ["open", "closed", "drawn"] {
            let value = i64::from(view.stage.as_str() == name);
            state.encode_family(&[("state", name)])?.encode_gauge(&value)?;
        }
        let help = "Agencies of the round that have finished.";
        let mut finished =
            encoder.encode_descriptor("lottery_agencies_finished", help, None, MetricType::Gauge)?;
        finished.encode_gauge(&i64::from(self.board.finished()))?;
        Ok(())
    }

    fn encode_connections(&self, encoder: &mut DescriptorEncoder<'_>) -> Result {
        let help = "Connections now: not authenticated yet, or speaking for an agency.";
        let mut connections =
            encoder.encode_descriptor("lottery_connections", help, None, MetricType::Gauge)?;
        let waiting = i64::try_from(self.gate.len()).unwrap_or(i64::MAX);
        connections.encode_family(&[("stage", "unauthenticated")])?.encode_gauge(&waiting)?;
        let agencies = self.metrics.agency_sessions.load(Ordering::Relaxed);
        connections.encode_family(&[("stage", "agency")])?.encode_gauge(&agencies)?;
        Ok(())
    }
}
