//! `provider-simulator`: serves the simulated email, SMS and webhook
//! providers (see `switchyard_loadtests::simulator`) until Ctrl-C or SIGTERM,
//! for `just loadtest` and for running the host by hand.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use switchyard_loadtests::simulator::Simulator;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "provider-simulator",
    version,
    about = "Play the email, SMS and webhook providers Switchyard's connectors deliver to"
)]
struct Cli {
    /// Address of the delivery endpoints: POST /email, /sms, /webhook/{path}.
    #[arg(long, env = "SIMULATOR_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Address of the control API (/control/*, /received, /health); separate
    /// from deliveries so it stays reachable while they are down.
    #[arg(long, env = "SIMULATOR_CONTROL", default_value = "127.0.0.1:9091")]
    control: SocketAddr,
    /// Seed for the fail-rate dice, to replay a run exactly; random (and
    /// logged) when unset.
    #[arg(long, env = "SIMULATOR_SEED")]
    seed: Option<u64>,
    /// Log line format.
    #[arg(long, value_enum, env = "SIMULATOR_LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Filter used when `RUST_LOG` is unset: faults switched on and off, not
/// every delivery.
const DEFAULT_FILTER: &str = "info";

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "provider simulator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let simulator = Arc::new(match cli.seed {
        Some(seed) => Simulator::with_seed(seed),
        None => Simulator::new(),
    });
    let delivery = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen for deliveries on {}", cli.listen))?;
    let control = tokio::net::TcpListener::bind(cli.control)
        .await
        .with_context(|| format!("cannot listen for control requests on {}", cli.control))?;
    simulator.serve(delivery, control, shutdown_signal()).await
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler Ctrl-C still works; not worth failing over.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
