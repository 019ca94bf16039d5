//! `make chaos`: a long fault campaign on the real binaries, natively.
//!
//! Rounds of five agencies with the course's sizes, each under random
//! server and agency kills (SIGKILL), cut and half-open connections, every
//! round checked against its files (see `testkit::chaos`); then rounds
//! whose storage loses power again and again, on the lazy filesystem,
//! each cut held to what the agencies were told (see `testkit::power`).
//! Prints one line per round and a summary line per campaign; exits
//! non-zero if any round failed.

use std::process::ExitCode;

use clap::Parser;
use testkit::chaos::{run_round, Faults, Plan, Totals};
use testkit::power::{run_power_round, PowerFailure, PowerPlan, PowerTotals};

#[derive(Parser)]
#[command(about = "Rounds of the real server and agencies under random faults, checked byte for byte")]
struct Args {
    /// Rounds to run.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Seed of the first round (each round adds one).
    #[arg(long, default_value_t = 7574)]
    seed: u64,
    /// Rows per agency.
    #[arg(long, value_delimiter = ',', default_values_t = datagen::COURSE_ROWS)]
    rows: Vec<usize>,
    /// Server kills per round, at least.
    #[arg(long, default_value_t = 30)]
    server_kills: usize,
    /// Agency kills per round, at least.
    #[arg(long, default_value_t = 15)]
    client_kills: usize,
    /// Cuts of every connection per round, at least.
    #[arg(long, default_value_t = 10)]
    cuts: usize,
    /// Freezes of every connection per round, at least.
    #[arg(long, default_value_t = 5)]
    freezes: usize,
    /// Milliseconds between two faults: MIN,MAX.
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "5,40")]
    interval_ms: Vec<u64>,
    /// Rounds of power cuts to run after the fault rounds.
    #[arg(long, default_value_t = 5)]
    power_rounds: usize,
    /// Power cuts per round, at least.
    #[arg(long, default_value_t = 60)]
    power_cuts: usize,
    /// The agencies' pause between two batches in power rounds, in
    /// milliseconds: it stretches the upload over more cuts.
    #[arg(long, default_value_t = 8)]
    power_pause_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults = Faults {
        server_kills: args.server_kills,
        client_kills: args.client_kills,
        cuts: args.cuts,
        freezes: args.freezes,
    };
    let mut totals = Totals::default();
    for round in 0..args.rounds {
        let seed = args.seed + round as u64;
        let plan = Plan {
            interval_ms: (args.interval_ms[0], args.interval_ms[1]),
            ..Plan::new(args.rows.clone(), faults, seed)
        };
        let outcome = run_round(&plan);
        match &outcome {
            Ok(o) => eprintln!(
                "round {:>2} (seed {seed}): {} in {:.1} s; {}; server kills during uploads {}, while agencies waited {}, after the draw {}",
                round + 1,
                o.injected,
                o.elapsed.as_secs_f64(),
                o.report,
                o.kills.upload,
                o.kills.waiting,
                o.kills.drawn
            ),
            Err(why) => eprintln!("round {:>2} (seed {seed}) FAILED: {why}", round + 1),
        }
        totals.add(&outcome);
    }
    println!("chaos: {totals}");
    let power = power_campaign(&args);
    println!("power: {power}");
    let faults_held = totals.completed == totals.rounds && totals.lost == 0 && totals.duplicated == 0;
    let power_held = power.completed == power.rounds && power.lost == 0 && power.duplicated == 0;
    if faults_held && power_held {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Rounds whose storage loses power again and again.
fn power_campaign(args: &Args) -> PowerTotals {
    let mut totals = PowerTotals::default();
    for round in 0..args.power_rounds {
        let seed = args.seed + round as u64;
        let pause = std::time::Duration::from_millis(args.power_pause_ms);
        let plan =
            PowerPlan { rows: args.rows.clone(), cuts: args.power_cuts, pause, seed, next_round: true };
        let work = match tempfile::tempdir() {
            Ok(work) => work,
            Err(e) => {
                eprintln!("power round {:>2}: no temporary folder: {e}", round + 1);
                totals.add(&Err(PowerFailure::from(e.to_string())));
                continue;
            }
        };
        let outcome = run_power_round(&plan, work.path());
        match &outcome {
            Ok(o) => eprintln!("power round {:>2} (seed {seed}): {o}", round + 1),
            Err(why) => eprintln!("power round {:>2} (seed {seed}) FAILED: {why}", round + 1),
        }
        totals.add(&outcome);
    }
    totals
}
