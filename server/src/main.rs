use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edge::log::Action;
use edge::program::Started;
use edge::settings::process_env;
use server::StartError;
use server::{Config, Server};
use tokio::runtime::Builder;
use tracing::{error, info, warn};

/// Makes glibc's allocator keep one arena for every thread. With one per
/// thread, memory freed by the writer thread stays in the arenas of the
/// sessions' threads that allocated it, and the peak under a flood of
/// batches passes the bound in docs/BENCHMARKS.md. (Other C libraries have
/// no such arenas.)
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator, and it runs
        // first thing in main, before any other thread exists.
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        assert_eq!(set, 1, "glibc takes M_ARENA_MAX");
    }
}

/// The central server of the Lotería Nacional.
///
/// Settings come from the configuration file, overridden by the environment;
/// the README lists them all.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The configuration file.
    #[arg(long, default_value = "config.ini")]
    config: PathBuf,
}

fn main() -> ExitCode {
    one_malloc_arena();
    let args = Args::parse();
    let config = Config::load(&args.config, &process_env);
    let started = edge::program::start("server", config, |c| c.logging_level, Builder::new_multi_thread());
    let Started { config, log, runtime, shutdown } = match started {
        Ok(started) => started,
        Err(code) => return code,
    };
    runtime.block_on(async {
        info!(
            "{}",
            Action::success("config")
                .field("port", config.port)
                .field("listen_backlog", config.listen_backlog)
                .field("logging_level", &config.logging_level_name)
        );
        let revocation = config.revocation;
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e @ StartError::Round(_)) => {
                error!("{}", Action::fail("open_round").field("error", e));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                error!("{}", Action::fail("accept_connections").field("error", e));
                return ExitCode::FAILURE;
            }
        };
        info!("{}", Action::in_progress("accept_connections"));
        server.log_round();
        if !revocation {
            warn!(
                "{}",
                Action::fail("revocation_list")
                    .field("error", "SERVER_TLS_CRL is empty: a revoked certificate is accepted")
            );
        }
        let result = server.run(shutdown).await;
        log.warn_if_dropped();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        }
    })
}
