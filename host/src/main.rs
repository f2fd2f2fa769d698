//! The `switchyard` command line: `serve` an app, or `check` its config and
//! components without serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchyard::config::Config;
use switchyard::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Serve WebAssembly components over HTTP, metered and isolated")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the app's components and serve its routes.
    Serve(ServeArgs),
    /// Validate the config and compile and link every component, then exit.
    Check(ConfigArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// The app's config file.
    #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
    config: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on; overrides `[server] listen`.
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// `sqlite://FILE` or `postgres://…`; overrides `[database] url`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, env = "SWITCHYARD_LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
    /// Development only: serve the admin API without a token when
    /// SWITCHYARD_ADMIN_TOKEN is unset.
    #[arg(long)]
    insecure_admin: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Check(args) => check(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let mut config = Config::load(&args.config.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(url) = args.database_url {
        config.database.url = url;
    }
    // Everything that can fail does so before the port is bound.
    let mut state = switchyard::prepare(&config)
        .await
        .with_context(|| format!("cannot start the app of {}", args.config.config.display()))?;
    let token = std::env::var(switchyard::server::ADMIN_TOKEN_ENV).ok();
    if token.is_none() && args.insecure_admin {
        tracing::warn!("admin API open without a token (--insecure-admin): development use only");
    }
    state.admin = std::sync::Arc::new(switchyard::server::AdminAuth::new(token, args.insecure_admin));
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.server.listen))?;
    switchyard::serve(&config, state, listener, shutdown_signal()).await
}

async fn check(args: ConfigArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    let mut config = Config::load(&args.config)?;
    // Loading needs a database for the smoke instantiation only; a private
    // in-memory one leaves the real database untouched.
    config.database.url = "sqlite::memory:".to_owned();
    config.database.max_connections = 1;
    let state = switchyard::prepare(&config)
        .await
        .with_context(|| format!("cannot load the app of {}", args.config.display()))?;
    for component in state.runtime.registry().list() {
        println!("ok  {}  {}", component.name, component.version);
    }
    println!("{}: {} components, {} routes", args.config.display(), config.components.len(), config.routes.len());
    Ok(())
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
