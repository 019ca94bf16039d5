use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use client::{BetSource, Config, Ending};
use edge::duration::GoDuration;
use edge::log::Action;
use edge::program::Started;
use edge::settings::process_env;
use tokio::runtime::Builder;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// An agency of the Lotería Nacional.
///
/// Settings come from the configuration file, overridden by the environment
/// (CLI_ID, CLI_SERVER_ADDRESS, CLI_LOOP_AMOUNT, CLI_LOOP_PERIOD,
/// CLI_LOG_LEVEL, CLI_BATCH_MAXAMOUNT, CLI_DATA_FILE, CLI_REPLY_TIMEOUT,
/// CLI_RETRY_TIMEOUT, CLI_ROUND). Without an agency
/// file the agency sends the single bet of NOMBRE, APELLIDO, DOCUMENTO,
/// NACIMIENTO and NUMERO.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The configuration file.
    #[arg(long, default_value = "config.yaml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config::load(&args.config, &process_env);
    let started = edge::program::start("client", config, |c| c.log_level, Builder::new_current_thread());
    let Started { config, log, runtime, shutdown } = match started {
        Ok(started) => started,
        Err(code) => return code,
    };
    let code = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });
        info!(
            "{}",
            Action::success("config")
                .field("client_id", config.id)
                .field("server_address", &config.server_address)
                .field("loop_amount", config.loop_amount)
                .field("loop_period", GoDuration(config.loop_period))
                .field("log_level", &config.log_level_name)
        );
        let source = match BetSource::choose(&config, &process_env) {
            Ok(source) => source,
            Err(e) => {
                error!("{}", Action::fail("apuesta_enviada").field("error", e));
                return ExitCode::FAILURE;
            }
        };
        let ending = client::run(&config, source, stop).await;
        let code = report(&config, ending);
        log.warn_if_dropped();
        code
    });
    // Nothing is left to wait for: the reader thread, if any, only reads
    // (joining it would cost the exit a wake-up).
    runtime.shutdown_background();
    code
}

/// Logs how the session ended and picks the exit code.
fn report(config: &Config, ending: Result<Ending, client::AgencyError>) -> ExitCode {
    let finished = |rejected: usize| {
        if rejected == 0 {
            info!("{}", Action::success("loop_finished").field("client_id", config.id));
            ExitCode::SUCCESS
        } else {
            error!(
                "{}",
                Action::fail("loop_finished").field("client_id", config.id).field("rejected", rejected)
            );
            ExitCode::FAILURE
        }
    };
    match ending {
        Ok(Ending::Winners { documents, rejected, left_out }) => {
            info!("{}", Action::success("consulta_ganadores").field("cant_ganadores", documents.len()));
            match left_out {
                None => finished(rejected),
                Some(left_out) => {
                    let line = Action::fail("loop_finished").field("client_id", config.id);
                    error!("{}", line.field("rejected", rejected).field("left_out", left_out));
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Ending::GaveUp { queries, rejected }) => {
            // One fail line says it all; rejected batches were logged already.
            error!(
                "{}",
                Action::fail("consulta_ganadores")
                    .field("queries", queries)
                    .field("rejected", rejected)
                    .field("error", "the draw did not happen in time")
            );
            ExitCode::FAILURE
        }
        Ok(Ending::Stopped) => {
            info!("{}", Action::success("shutdown").field("client_id", config.id));
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{}", Action::fail("loop_finished").field("client_id", config.id).field("error", e));
            ExitCode::FAILURE
        }
    }
}
