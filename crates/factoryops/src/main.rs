use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use factoryops::{Components, start};
use factoryops_platform::Config;
use factoryops_platform::config::CONFIG_FILE_ENV;
use factoryops_types::SystemClock;

// The process-wide allocator is the one unavoidable global: under MQTT load glibc malloc
// took ~35 % of the server's CPU and jemalloc halved the CPU per message
// (crates/ingest/BENCHMARKS.md, runs with LD_PRELOAD).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// FactoryOps: industrial energy intelligence, one binary.
#[derive(Parser)]
#[command(name = "factoryops", version, about)]
struct Cli {
    /// Optional TOML config file (defaults → file → FACTORYOPS_* env vars).
    #[arg(long, global = true, env = CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server: every component (default) or the listed ones.
    Serve {
        /// Comma-separated: api,ingest,rules,notify,analytics,reports.
        #[arg(long, default_value = "api,ingest,rules,notify,analytics,reports")]
        components: Components,
    },
    /// Applies database migrations and exits.
    Migrate,
    /// Prints the effective configuration with secrets masked.
    Config,
    /// Prints the version.
    Version,
    /// Prints the OpenAPI document generated from the code.
    Openapi,
    /// Simulates a fleet of devices publishing over MQTT (provisions them through the API).
    Simulate(factoryops::simulate::SimulateArgs),
    /// Inspects the embedded time-series store in the data dir.
    Tsdb {
        #[command(subcommand)]
        command: TsdbCommand,
    },
}

#[derive(Subcommand)]
enum TsdbCommand {
    /// Series, points, bytes on disk per resolution, WAL size (the server must be stopped;
    /// while it runs, the same figures are on /metrics as factoryops_tsdb_*).
    Stats,
    /// Verifies every checksum of every file; safe while the server runs. Exit 1 on problems.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("factoryops {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Openapi => {
            match factoryops_api::openapi_document().to_pretty_json() {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if let Command::Simulate(args) = cli.command {
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match runtime.block_on(factoryops::simulate::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config = cli.command {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    if let Command::Tsdb { command } = &cli.command {
        return tsdb_command(&config, command);
    }
    factoryops_platform::logging::init(config.log_format, &config.log_level);
    if let Command::Serve { .. } = cli.command {
        raise_fd_limit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Migrate => {
                factoryops::open_database_for_migrate(&config).await?;
                println!("migrations applied");
                Ok(true)
            }
            Command::Serve { components } => serve(config, components).await,
            Command::Config | Command::Version | Command::Openapi | Command::Tsdb { .. } | Command::Simulate(_) => {
                Ok(true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tsdb_command(config: &Config, command: &TsdbCommand) -> ExitCode {
    let dir = factoryops::telemetry::embedded_dir(config);
    let result = match command {
        TsdbCommand::Check => factoryops_tsdb::check_dir(&dir).map(|report| {
            let ok = report.ok();
            (serde_json::to_string_pretty(&report), ok)
        }),
        TsdbCommand::Stats => {
            let embedded = factoryops::telemetry::embedded_config(config);
            factoryops_tsdb::EmbeddedStore::open(embedded, Arc::new(SystemClock))
                .and_then(|store| store.stats())
                .map(|stats| (serde_json::to_string_pretty(&stats), true))
        }
    };
    match result {
        Ok((Ok(json), ok)) => {
            println!("{json}");
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Ok((Err(e), _)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: tsdb in {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Every socket is a descriptor: the server runs with as many as the hard limit allows,
/// and sizes its connection caps from that (ADR 0011).
fn raise_fd_limit() {
    match factoryops_platform::fdlimit::raise_nofile_limit() {
        Ok(limit) if limit.soft > limit.before => {
            tracing::info!(from = limit.before, to = limit.soft, hard = limit.hard, "file descriptor limit raised")
        }
        Ok(limit) => tracing::info!(limit = limit.soft, hard = limit.hard, "file descriptor limit"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit; connection caps follow the current one")
        }
    }
}

async fn serve(config: Config, components: Components) -> anyhow::Result<bool> {
    let server = start(config, components.clone(), Arc::new(SystemClock)).await?;
    server.shutdown_handle().listen_for_signals();
    if let Some(addr) = server.http_addr() {
        let host = if addr.ip().is_unspecified() { "localhost".to_string() } else { addr.ip().to_string() };
        tracing::info!(components = %components, "FactoryOps is running at http://{host}:{} (API docs: /api/docs)", addr.port());
    }
    Ok(server.wait().await)
}
