use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edge::log::Action;
use edge::program::Started;
use edge::settings::process_env;
use server::admin::{self, Admin};
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
    #[arg(long, default_value = "config.ini", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The operator's command: asks the running server, over TLS with the
    /// operator's certificate.
    Admin {
        /// The server's address (default: 127.0.0.1:SERVER_PORT).
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        #[command(subcommand)]
        command: admin::Command,
    },
    /// Asks the running server's /healthz (SERVER_HTTP_ADDRESS): exit 0 if
    /// it serves its round, 1 otherwise. Compose and Swarm's healthcheck.
    Health,
}

fn main() -> ExitCode {
    one_malloc_arena();
    let args = Args::parse();
    match args.command {
        Some(Command::Admin { address, command }) => run_admin(&args.config, address, command),
        Some(Command::Health) => health(&args.config),
        None => serve(&args.config),
    }
}

/// `server admin …`: one answer on stdout, or one line on stderr.
fn run_admin(config: &std::path::Path, address: Option<String>, command: admin::Command) -> ExitCode {
    let runtime = match Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("server admin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = Admin::load(config, &process_env, address).map(|admin| runtime.block_on(admin.run(command)));
    match answer.and_then(|answer| answer) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("server admin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `server health`: one line on stderr when it is not healthy.
fn health(config: &std::path::Path) -> ExitCode {
    let address = server::config::file_settings(config).map_err(|e| e.to_string()).and_then(|file| {
        let sources = edge::settings::Sources { env: &process_env, file: &file };
        server::config::http_address(&sources).map_err(|e| e.to_string())
    });
    let address = match address {
        Ok(Some(address)) => address,
        Ok(None) => {
            eprintln!("server health: SERVER_HTTP_ADDRESS is empty: the server serves no health check");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("server health: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("server health: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::http::check(address)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server health: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server until SIGTERM.
fn serve(config: &std::path::Path) -> ExitCode {
    let config = Config::load(config, &process_env);
    let started = edge::program::start("server", config, |c| c.logging_level, Builder::new_multi_thread());
    let Started { config, log, runtime, mut shutdown } = match started {
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
        let server = match Server::bind_unless(config, &mut shutdown).await {
            Ok(Some(server)) => server,
            Ok(None) => {
                info!("{}", Action::in_progress("shutdown"));
                let why = "the shutdown came before the round was read back: the next start reads it again";
                warn!("{}", Action::fail("open_round").field("error", why));
                info!("{}", Action::success("shutdown"));
                return ExitCode::SUCCESS;
            }
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
        if let Some(address) = server.http_addr() {
            info!(
                "{}",
                Action::success("http")
                    .field("address", address)
                    .field("pages", "/ /status.json /metrics /healthz")
            );
        }
        match server::raise_open_files() {
            Ok(limit) => info!("{}", Action::success("open_files").field("limit", limit)),
            Err(e) => warn!(
                "{}",
                Action::fail("open_files")
                    .field("error", e)
                    .field("then", "fewer agencies can connect at once")
            ),
        }
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
