//! `bench`: how fast the whole system runs, natively over loopback.
//!
//! It generates the agencies' files and credentials (not timed), starts the
//! real `server` binary on a new round, then starts one real `client`
//! process per agency with the shipped `client/config.yaml` and times from
//! starting the first to the exit of the last: upload with every ack
//! durable, "finished", the draw, the winners. Each run checks that every
//! agency exited 0 told its number of winners, and that every bet is in the
//! bets file. It reports the median and the spread of the runs, bets per
//! second, fsyncs, the CPU time of the server and of the agencies, and the
//! server's peak memory (VmHWM); then the recovery of the last run's round
//! and the cost of one connection. `--tasks` runs the agencies in this
//! process instead (their winners checked one by one); `--hostile N`
//! measures the server's memory under N flooding agencies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use client::{BetSource, Ending};
use datagen::GeneratedAgency;
use nix::sys::resource::{getrusage, UsageWho};
use testkit::{AgencyBuilder, RunningServer, ServerBuilder};
use tokio_util::sync::CancellationToken;

mod hostile;

#[derive(Parser)]
#[command(about = "Times agencies uploading to the real server over loopback")]
struct Args {
    /// The server binary (build it with `cargo build --release -p server`).
    #[arg(long, default_value = "target/release/server")]
    server: PathBuf,
    /// The client binary, one process per agency.
    #[arg(long, default_value = "target/release/client")]
    client: PathBuf,
    /// The agencies' configuration file (env overrides the id, the
    /// server's address, the data file and the credentials).
    #[arg(long, default_value = "client/config.yaml")]
    client_config: PathBuf,
    /// Run the agencies as tasks of this process instead of as `client`
    /// processes (no process start, no client logs).
    #[arg(long)]
    tasks: bool,
    /// Number of agencies.
    #[arg(long, default_value_t = 5)]
    agencies: usize,
    /// Rows per agency: one value for all, or one per agency.
    #[arg(long, value_delimiter = ',', default_values_t = datagen::COURSE_ROWS)]
    rows: Vec<usize>,
    /// Winners per agency.
    #[arg(long, default_value_t = datagen::COURSE_WINNERS)]
    winners: usize,
    /// Bets per batch (the committed client/config.yaml says 80).
    #[arg(long, default_value_t = 80)]
    max_amount: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 11)]
    runs: usize,
    /// The server's LOGGING_LEVEL.
    #[arg(long, default_value = "INFO")]
    log_level: String,
    /// Where the data and the bets file go (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Instead of rounds: the server's memory while this many agencies
    /// pipeline maximum-size batches and never read a reply.
    #[arg(long)]
    hostile: Option<usize>,
    /// How long the hostile load lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    hostile_seconds: u64,
}

struct RunResult {
    elapsed: Duration,
    peak_rss_kib: u64,
    /// CPU time the server used (user + system), to 10 ms.
    server_cpu: Duration,
    /// CPU time the agencies used (user + system).
    agencies_cpu: Duration,
    /// fdatasync calls on the bets file and on the journal, if the server
    /// logged them (it does at INFO).
    syncs: Option<(u64, u64)>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // Agencies as tasks hold a connection each: as many files as the
    // server (which raises its own limit the same way).
    server::raise_open_files().context("raising the limit of open files")?;
    // The server and the agencies work in the data folder: paths given
    // relative to here must still lead to the binaries and the config.
    for path in [&mut args.server, &mut args.client, &mut args.client_config] {
        *path = std::path::absolute(&*path)?;
    }
    let rows = match args.rows.as_slice() {
        [one] => vec![*one; args.agencies],
        many if many.len() == args.agencies => many.to_vec(),
        many => bail!("--rows has {} values for {} agencies", many.len(), args.agencies),
    };
    ensure!(
        args.server.is_file(),
        "no server binary at {} (cargo build --release -p server)",
        args.server.display()
    );
    ensure!(
        args.tasks || args.client.is_file(),
        "no client binary at {} (cargo build --release -p client)",
        args.client.display()
    );
    let temp = tempfile::tempdir()?;
    let dir = std::path::absolute(args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf()))?;
    std::fs::create_dir_all(&dir)?;
    if let Some(connections) = args.hostile {
        return hostile_load(&args, connections, &dir);
    }
    rounds(&args, &rows, &dir)
}

/// Timed rounds of the agencies against the real server, then the
/// recovery of the last one and the cost of one connection.
fn rounds(args: &Args, rows: &[usize], dir: &Path) -> anyhow::Result<()> {
    let total: usize = rows.iter().sum();
    eprintln!("generating {} agencies, {total} bets in {}", args.agencies, dir.display());
    let agencies = datagen::generate(dir, rows, &vec![args.winners; args.agencies], datagen::SAMPLE_SEED)?;
    eprintln!("making TLS credentials for {} agencies", args.agencies);
    testkit::credentials::make(&credentials_dir(dir), args.agencies as u32);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut results = Vec::new();
    for run in 0..args.runs {
        let last = run + 1 == args.runs;
        let result = runtime.block_on(one_run(args, dir, &agencies, total, last))?;
        eprintln!(
            "run {:>2}: {:>8.1} ms  {:>10.0} bets/s  server peak RSS {:.1} MiB, CPU {:.0} ms (agencies {:.0} ms), fsyncs {}",
            run + 1,
            ms(result.elapsed),
            total as f64 / result.elapsed.as_secs_f64(),
            result.peak_rss_kib as f64 / 1024.0,
            ms(result.server_cpu),
            ms(result.agencies_cpu),
            result.syncs.map_or("?".to_owned(), |(bets, journal)| format!("{bets} + {journal} (journal)"))
        );
        results.push(result);
    }
    // Recovery: a server started on the last run's round reads it all back.
    let recovery = measure_recovery(args, dir, agencies.len())?;
    let handshake = runtime.block_on(measure_handshakes(args, dir, &agencies))?;
    results.sort_by_key(|r| r.elapsed);
    let median = results[results.len() / 2].elapsed;
    let peak = results.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
    println!(
        "{} agencies, {total} bets, batches of {}, {} runs: median {:.1} ms (min {:.1}, max {:.1}), {:.0} bets/s at the median, {} fsyncs at the median, server peak RSS {:.1} MiB; recovering the round: {:.1} ms; a connection (TCP, TLS handshake, Hello): median {:.2} ms",
        args.agencies,
        args.max_amount,
        results.len(),
        ms(median),
        ms(results[0].elapsed),
        ms(results[results.len() - 1].elapsed),
        total as f64 / median.as_secs_f64(),
        results[results.len() / 2].syncs.map_or("?".to_owned(), |(bets, journal)| (bets + journal).to_string()),
        peak as f64 / 1024.0,
        ms(recovery),
        ms(handshake)
    );
    Ok(())
}

/// The server's memory under `connections` flooding agencies and a full
/// pool of waiting connections, against its bound.
fn hostile_load(args: &Args, connections: usize, dir: &Path) -> anyhow::Result<()> {
    let r = hostile::run(&args.server, connections, args.hostile_seconds, dir)?;
    println!(
        "{} agencies pipelining full batches, never reading, and {} connections waiting before Hello, {} s: server RSS {:.1} MiB at start, {:.1} MiB once connected, peak {:.1} MiB; {} batches sent; the bound (docs/BENCHMARKS.md): {:.1} MiB + {} KiB + {} × {} KiB + {} × {} KiB + {} KiB = {:.1} MiB",
        r.connections,
        r.waiting,
        args.hostile_seconds,
        r.started_kib as f64 / 1024.0,
        r.connected_kib as f64 / 1024.0,
        r.peak_kib as f64 / 1024.0,
        r.batches,
        r.started_kib as f64 / 1024.0,
        hostile::WORKING_KIB,
        r.connections,
        hostile::PER_CONNECTION_KIB,
        r.waiting,
        hostile::PER_WAITING_KIB,
        hostile::QUEUE_KIB,
        r.bound_kib() as f64 / 1024.0
    );
    ensure!(r.peak_kib <= r.bound_kib(), "the server's memory went past the bound (docs/BENCHMARKS.md)");
    Ok(())
}

/// User and system CPU time of this process or of its waited-for children.
fn cpu_time(who: UsageWho) -> anyhow::Result<Duration> {
    let usage = getrusage(who)?;
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64)
    };
    Ok(time(usage.user_time()) + time(usage.system_time()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where the server's and the agencies' TLS credentials are.
fn credentials_dir(dir: &Path) -> PathBuf {
    dir.join("credentials")
}

/// The server under test, for `agencies` agencies, its round at `storage`;
/// returns once it listens.
fn start_server(args: &Args, dir: &Path, agencies: usize, storage: &Path) -> anyhow::Result<RunningServer> {
    Ok(server(&args.server, dir, agencies, storage)
        .log_level(&args.log_level)
        .credentials(credentials_dir(dir))
        .try_start()?)
}

/// How the benchmark starts `binary`, working in `dir`: a deep backlog, and
/// time to recover a large round before it listens.
fn server(binary: &Path, dir: &Path, agencies: usize, storage: &Path) -> ServerBuilder {
    ServerBuilder::new(dir)
        .binary(binary)
        .backlog(1024)
        .agencies(agencies as u32)
        .storage(storage)
        .ready_within(Duration::from_secs(300))
}

/// Stops the server; returns the syncs of the bets file and of the
/// journal, from its `close_file` line (`None` when it logs no INFO, or is
/// a version that did not count them).
fn stop_server(server: &mut RunningServer) -> anyhow::Result<Option<(u64, u64)>> {
    let status = server.stop();
    ensure!(status.success(), "the server exited with {status}:\n{}\n{}", server.tail(20), server.stderr());
    let Some(line) = server.seen.iter().rev().find(|l| l.contains("action: close_file")) else {
        return Ok(None);
    };
    let action = edge::log::parse_action(line).map_err(anyhow::Error::msg)?;
    let number = |key: &str| action.get(key).and_then(|n| n.parse::<u64>().ok());
    Ok(number("syncs").zip(number("journal_syncs")))
}

/// Where a run keeps its round; the last one is kept for [`measure_recovery`].
fn round_dir(dir: &Path) -> PathBuf {
    dir.join("round")
}

async fn one_run(
    args: &Args,
    dir: &Path,
    agencies: &[GeneratedAgency],
    total: usize,
    keep: bool,
) -> anyhow::Result<RunResult> {
    // Every run is a new round: a fresh storage folder, nothing carried over.
    let round = round_dir(dir);
    if round.exists() {
        std::fs::remove_dir_all(&round)?;
    }
    std::fs::create_dir(&round)?;
    let storage = round.join("bets.csv");
    let mut server = start_server(args, dir, agencies.len(), &storage)?;

    let address = server.addr().to_string();
    let (elapsed, agencies_cpu) = if args.tasks {
        let before = cpu_time(UsageWho::RUSAGE_SELF)?;
        let elapsed = run_tasks(args, dir, &address, agencies).await?;
        (elapsed, cpu_time(UsageWho::RUSAGE_SELF)? - before)
    } else {
        // The server is not waited for yet: only the agencies count.
        let before = cpu_time(UsageWho::RUSAGE_CHILDREN)?;
        let elapsed = run_processes(args, dir, &address, agencies)?;
        (elapsed, cpu_time(UsageWho::RUSAGE_CHILDREN)? - before)
    };
    let peak_rss_kib = server.peak_rss_kib()?;
    let server_cpu = server.cpu_time()?;
    let syncs = stop_server(&mut server)?;
    let stored = lottery::storage::load_bets(&storage)?.count();
    ensure!(stored == total, "{stored} bets stored of {total}");
    if !keep {
        std::fs::remove_dir_all(&round)?;
    }
    Ok(RunResult { elapsed, peak_rss_kib, server_cpu, agencies_cpu, syncs })
}

/// Runs each agency as a `client` process with the shipped configuration;
/// times from starting the first to the exit of the last, and checks that
/// each exits 0 having been told its number of winners.
fn run_processes(
    args: &Args,
    dir: &Path,
    address: &str,
    agencies: &[GeneratedAgency],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut running = Vec::new();
    for agency in agencies {
        let mut process = AgencyBuilder::new(dir, agency.agency, address)
            .binary(&args.client)
            .config_file(&args.client_config)
            .credentials(credentials_dir(dir))
            .batch_max_amount(args.max_amount)
            .data_file(&agency.path)
            .start();
        // Each waits on its own thread, which notes when its agency exited.
        running.push(std::thread::spawn(move || {
            let status = process.wait();
            (process, status, Instant::now())
        }));
    }
    let mut last_exit = started;
    for (agency, running) in agencies.iter().zip(running) {
        let (mut process, status, exited) = running.join().expect("a waiting thread does not panic");
        last_exit = last_exit.max(exited);
        let told = format!(
            "action: consulta_ganadores | result: success | cant_ganadores: {}",
            agency.winners.len()
        );
        ensure!(
            status.success() && process.seen.iter().any(|l| l.ends_with(&told)),
            "agency {}: {status}, no line \"{told}\"; its last lines:\n{}\n{}",
            agency.agency,
            process.tail(5),
            process.stderr()
        );
    }
    Ok(last_exit - started)
}

/// The configuration of `agency` run as a task of this process: no pause
/// between batches, warnings only, at most `queries` winners queries.
fn task_config(
    args: &Args,
    agency: &GeneratedAgency,
    address: &str,
    queries: u32,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> client::Config {
    client::Config {
        round: 1,
        id: agency.agency,
        server_address: address.to_owned(),
        loop_amount: queries,
        loop_period: Duration::ZERO,
        log_level: edge::log::Level::Warning,
        log_level_name: "WARNING".into(),
        batch_max_amount: args.max_amount,
        data_file: agency.path.clone(),
        reply_timeout: client::config::DEFAULT_REPLY_TIMEOUT,
        retry_timeout: client::config::DEFAULT_RETRY_TIMEOUT,
        tls,
        server_name: protocol::tls::server_name("127.0.0.1:1").expect("an address is a server name"),
    }
}

/// Runs each agency as a task of this process; times from the first
/// connection to the last agency holding its winners, and checks them.
async fn run_tasks(
    args: &Args,
    dir: &Path,
    address: &str,
    agencies: &[GeneratedAgency],
) -> anyhow::Result<Duration> {
    // TLS configurations are read before the clock starts: an agency reads
    // its credentials once, at start, before it connects.
    let agency_tls: Vec<_> = agencies
        .iter()
        .map(|a| {
            edge::credentials::client_config(&testkit::credentials::agency(&credentials_dir(dir), a.agency))
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let runs: Vec<_> = agencies
        .iter()
        .map(|agency| {
            let tls = agency_tls[agency.agency as usize - 1].clone();
            let config = task_config(args, agency, address, 100_000, tls);
            tokio::spawn(async move {
                let source = BetSource::File(config.data_file.clone());
                client::run(&config, source, CancellationToken::new()).await
            })
        })
        .collect();
    let mut endings = Vec::with_capacity(runs.len());
    for run in runs {
        endings.push(run.await);
    }
    let elapsed = started.elapsed();
    for (agency, ending) in agencies.iter().zip(endings) {
        let ending = ending?.with_context(|| format!("agency {}", agency.agency))?;
        let expected = Ending::Winners { documents: agency.winners.clone(), rejected: 0, left_out: None };
        ensure!(ending == expected, "agency {}: {ending:?}, expected {expected:?}", agency.agency);
    }
    Ok(elapsed)
}

/// Time from starting a server on the kept round to its listening: the
/// recovery of the whole round (the lock, the journal, every row read back
/// and checked).
fn measure_recovery(args: &Args, dir: &Path, agencies: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let storage = round_dir(dir).join("bets.csv");
    let mut server = start_server(args, dir, agencies, &storage)?;
    let took = started.elapsed();
    stop_server(&mut server)?;
    std::fs::remove_dir_all(round_dir(dir))?;
    Ok(took)
}

/// The median time, over 51 connections one after another, from
/// connecting to holding the server's Welcome: TCP, the TLS handshake with
/// both certificates verified, Hello.
async fn measure_handshakes(
    args: &Args,
    dir: &Path,
    agencies: &[GeneratedAgency],
) -> anyhow::Result<Duration> {
    let round = round_dir(dir);
    std::fs::create_dir_all(&round)?;
    let storage = round.join("bets.csv");
    let mut server = start_server(args, dir, agencies.len(), &storage)?;
    let agency = &agencies[0];
    let tls = edge::credentials::client_config(&testkit::credentials::agency(
        &credentials_dir(dir),
        agency.agency,
    ))?;
    let config = task_config(args, agency, &server.addr().to_string(), 1, tls);
    let mut times = Vec::new();
    for _ in 0..51 {
        let started = Instant::now();
        let mut link = client::Link::connect(&config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        link.hello(agency.agency, 1, false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(started.elapsed());
        link.close().await;
    }
    stop_server(&mut server)?;
    std::fs::remove_dir_all(round)?;
    times.sort();
    Ok(times[times.len() / 2])
}
