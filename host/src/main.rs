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
    /// Upload a new version of a component to a running host.
    Deploy {
        /// The component's name in the config.
        name: String,
        /// The `.wasm` component file.
        file: PathBuf,
        /// Start a canary rollout: the new version's first share of the
        /// invocations, 1 to 99 %; without it the version swaps in at once.
        #[arg(long)]
        canary: Option<u8>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show, promote or abort a component's canary rollout.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Swap a component back to its previous version, or to --version.
    Rollback {
        name: String,
        /// A stored version: full content hash or a unique prefix.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the replicas sharing the host's database: heartbeat age, live or
    /// gone, and whether each serves the deployed version of every component.
    Cluster {
        /// Print the host's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the components of a running host and their versions.
    Components {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// The running (or last) rollout: state, step, shares, figures, last decision.
    Status {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Promote the canary now.
    Promote {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Abort the rollout: the stable version serves everything.
    Abort {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; fails naming the first row that does not match.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        /// Overrides `[database] url`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
}

#[derive(Args)]
struct AdminArgs {
    /// The host's address.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin bearer token.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Recorded in the audit log as who acted.
    #[arg(long, env = "USER", default_value = "cli")]
    actor: String,
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
    /// Development only: redeploy a component when its file changes.
    #[arg(long)]
    watch: bool,
    /// This replica's id among those sharing the database; overrides
    /// `[cluster] replica_id` (a Kubernetes pod name is a good one).
    #[arg(long, env = "SWITCHYARD_REPLICA_ID")]
    replica_id: Option<String>,
    /// The address other replicas and operators reach this one at;
    /// overrides `[cluster] advertise`.
    #[arg(long, env = "SWITCHYARD_ADVERTISE")]
    advertise: Option<String>,
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
            Command::Deploy { name, file, canary, admin } => deploy(&name, &file, canary, &admin).await,
            Command::Rollout { command } => rollout(command).await,
            Command::Rollback { name, version, admin } => rollback(&name, version.as_deref(), &admin).await,
            Command::Components { admin } => components(&admin).await,
            Command::Cluster { json, admin } => cluster(json, &admin).await,
            Command::Audit { command: AuditCommand::Verify { config, database_url } } => {
                audit_verify(&config, database_url).await
            }
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
    let _log_writer = telemetry::init(args.log_format);
    let mut config = Config::load(&args.config.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(url) = args.database_url {
        config.database.url = url;
    }
    if let Some(id) = args.replica_id {
        switchyard::config::validate_replica_id(&id)?;
        config.cluster.replica_id = Some(id);
    }
    if let Some(address) = args.advertise {
        config.cluster.advertise = Some(address);
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
    if args.watch {
        switchyard::watch::start(&config, state.runtime.clone());
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.server.listen))?;
    switchyard::serve(&config, state, listener, shutdown_signal()).await
}

async fn check(args: ConfigArgs) -> anyhow::Result<()> {
    let _log_writer = telemetry::init(LogFormat::Pretty);
    let mut config = Config::load(&args.config)?;
    // Loading needs a database for the smoke instantiation only; a private
    // in-memory one leaves the real database untouched.
    config.database.url = "sqlite::memory:".to_owned();
    config.database.max_connections = 1;
    let state = switchyard::prepare(&config)
        .await
        .with_context(|| format!("cannot load the app of {}", args.config.display()))?;
    for component in state.runtime.registry().list() {
        println!("ok  {}  {}  {}", component.name, component.version, component.export);
    }
    println!("{}: {} components, {} routes", args.config.display(), config.components.len(), config.routes.len());
    Ok(())
}

fn admin_client(admin: &AdminArgs) -> anyhow::Result<(reqwest::Client, reqwest::header::HeaderMap)> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &admin.token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    headers.insert(switchyard::server::ACTOR_HEADER, admin.actor.parse()?);
    Ok((reqwest::Client::new(), headers))
}

/// Prints a JSON answer, or fails with the host's error message.
async fn answer(response: reqwest::Response) -> anyhow::Result<()> {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no details");
        anyhow::bail!("{status}: {message}");
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

async fn deploy(name: &str, file: &std::path::Path, canary: Option<u8>, admin: &AdminArgs) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(file).await.with_context(|| format!("cannot read {}", file.display()))?;
    let (client, headers) = admin_client(admin)?;
    let mut url = format!("{}/admin/components/{name}", admin.url.trim_end_matches('/'));
    if let Some(share) = canary {
        url.push_str(&format!("?canary={share}"));
    }
    answer(client.put(url).headers(headers).body(bytes).send().await?).await
}

async fn rollout(command: RolloutCommand) -> anyhow::Result<()> {
    let (name, admin, action) = match &command {
        RolloutCommand::Status { name, admin } => (name, admin, None),
        RolloutCommand::Promote { name, admin } => (name, admin, Some("promote")),
        RolloutCommand::Abort { name, admin } => (name, admin, Some("abort")),
    };
    let (client, headers) = admin_client(admin)?;
    let url = format!("{}/admin/components/{name}/rollout", admin.url.trim_end_matches('/'));
    let request = match action {
        None => client.get(url),
        Some(action) => client.post(format!("{url}/{action}")),
    };
    answer(request.headers(headers).send().await?).await
}

async fn rollback(name: &str, version: Option<&str>, admin: &AdminArgs) -> anyhow::Result<()> {
    let (client, headers) = admin_client(admin)?;
    let mut url = format!("{}/admin/components/{name}/rollback", admin.url.trim_end_matches('/'));
    if let Some(version) = version {
        url.push_str(&format!("?version={version}"));
    }
    answer(client.post(url).headers(headers).send().await?).await
}

async fn components(admin: &AdminArgs) -> anyhow::Result<()> {
    let (client, headers) = admin_client(admin)?;
    let url = format!("{}/admin/components", admin.url.trim_end_matches('/'));
    answer(client.get(url).headers(headers).send().await?).await
}

async fn cluster(json: bool, admin: &AdminArgs) -> anyhow::Result<()> {
    let (client, headers) = admin_client(admin)?;
    let url = format!("{}/admin/cluster", admin.url.trim_end_matches('/'));
    let response = client.get(url).headers(headers).send().await?;
    if json || !response.status().is_success() {
        return answer(response).await;
    }
    let view: serde_json::Value = response.json().await?;
    print!("{}", cluster_table(&view));
    Ok(())
}

/// `GET /admin/cluster` as a person reads it: the active versions, then one
/// line per replica.
fn cluster_table(view: &serde_json::Value) -> String {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("-").to_owned();
    let mut out = String::from("active:");
    for (name, version) in view["active"].as_object().into_iter().flatten() {
        out.push_str(&format!(" {name} {}", text(version)));
    }
    out.push_str(&format!(
        "\n{:<28} {:<22} {:<5} {:>9} {:<9} SERVING\n",
        "REPLICA", "ADDRESS", "STATE", "HEARTBEAT", "CONVERGED"
    ));
    for replica in view["replicas"].as_array().into_iter().flatten() {
        let age = replica["heartbeat_age_ms"].as_i64().unwrap_or_default() as f64 / 1_000.0;
        let converged = if replica["converged"].as_bool() == Some(true) { "yes" } else { "no" };
        let serving: Vec<String> = replica["serving"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, served)| format!("{name} {}", text(&served["version"])))
            .collect();
        out.push_str(&format!(
            "{:<28} {:<22} {:<5} {:>8.1}s {:<9} {}\n",
            text(&replica["id"]),
            text(&replica["address"]),
            text(&replica["state"]),
            age,
            converged,
            serving.join(", ")
        ));
        for diverged in replica["diverged"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {} wants {}: {}\n",
                text(&diverged["component"]),
                text(&diverged["wanted"]),
                text(&diverged["error"])
            ));
        }
    }
    out
}

async fn audit_verify(args: &ConfigArgs, database_url: Option<String>) -> anyhow::Result<()> {
    let url = match database_url {
        Some(url) => url,
        None => Config::load(&args.config)?.database.url,
    };
    let clock = std::sync::Arc::new(switchyard::clock::SystemClock);
    let db = switchyard::db::Database::connect(&url, 1, clock).await?;
    let verdict = db.audit_verify().await?;
    db.close().await;
    match verdict {
        Ok(rows) => {
            println!("audit log intact: {rows} rows");
            Ok(())
        }
        Err(broken) => anyhow::bail!("audit log broken at row {}: {}", broken.seq, broken.problem),
    }
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
