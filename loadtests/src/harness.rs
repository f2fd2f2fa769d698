//! Starts and stops what a run loads: the `switchyard` host serving the
//! reference app and the `provider-simulator` its connectors deliver to,
//! both on free loopback ports, with their logs in the run's results
//! directory. It stops exactly the processes it spawned, by their PIDs —
//! SIGTERM first so the host drains, SIGKILL if it does not — and, should
//! the run fail or be dropped halfway, `kill_on_drop` still reaps them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::hostconfig::{self, Placement};

/// How long the host may take to compile its components and become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a SIGTERMed process may take to drain before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Log filter for both processes: a loaded host logging every request at
/// info would measure its logger.
const RUST_LOG: &str = "warn";

/// What to start, and where.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    /// Directory holding the `switchyard` and `provider-simulator` binaries.
    pub bin_dir: PathBuf,
    /// The repository's `switchyard.toml`, rewritten for the run.
    pub source_config: PathBuf,
    /// The run's results directory: generated config, database, logs.
    pub results_dir: PathBuf,
    /// Set as `SWITCHYARD_ADMIN_TOKEN`, so the admin API is usable (deploys,
    /// outbox counts) but not open.
    pub admin_token: String,
}

/// The running host and simulator.
#[derive(Debug)]
pub struct Harness {
    host: Child,
    simulator: Child,
    /// `http://127.0.0.1:PORT` of the host.
    pub base_url: String,
    /// `http://127.0.0.1:PORT` of the simulator's control API.
    pub control_url: String,
    /// For reading the host's RSS.
    pub host_pid: u32,
}

impl Harness {
    /// Starts the simulator, then the host, and waits until both answer.
    pub async fn start(options: &HarnessOptions) -> anyhow::Result<Harness> {
        let (listen, delivery, control) = (free_port()?, free_port()?, free_port()?);
        let source_dir = options
            .source_config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .canonicalize()
            .context("cannot resolve the config's directory")?;
        let source = std::fs::read_to_string(&options.source_config)
            .with_context(|| format!("cannot read {}", options.source_config.display()))?;
        let results_dir = options.results_dir.canonicalize().context("cannot resolve the results directory")?;
        let database = results_dir.join("host.db");
        let config_text =
            hostconfig::rewrite(&source, &source_dir, &Placement { listen, database: &database, simulator: delivery })?;
        let config_path = results_dir.join("switchyard.toml");
        std::fs::write(&config_path, config_text).context("cannot write the generated config")?;

        let mut simulator = Command::new(options.bin_dir.join("provider-simulator"));
        simulator
            .args(["--listen", &delivery.to_string(), "--control", &control.to_string(), "--log-format", "json"])
            .env("RUST_LOG", RUST_LOG)
            .env_remove("SIMULATOR_SEED")
            .stdin(Stdio::null())
            .stdout(log_file(&results_dir, "simulator.log")?)
            .stderr(log_file(&results_dir, "simulator.log")?)
            .kill_on_drop(true);
        let simulator = simulator.spawn().context("cannot start provider-simulator (build it with --bins)")?;

        let mut host = Command::new(options.bin_dir.join("switchyard"));
        host.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--log-format", "json"])
            .env("RUST_LOG", RUST_LOG)
            .env("SWITCHYARD_ADMIN_TOKEN", &options.admin_token)
            // The generated config decides these; an inherited variable
            // (CI's PostgreSQL DATABASE_URL) must not override it.
            .env_remove("DATABASE_URL")
            .env_remove("SWITCHYARD_LISTEN")
            .env_remove("SWITCHYARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(log_file(&results_dir, "host.log")?)
            .stderr(log_file(&results_dir, "host.log")?)
            .kill_on_drop(true);
        let host = host.spawn().context("cannot start switchyard (build it with --release)")?;
        let host_pid = host.id().context("the host exited at once")?;

        let mut harness = Harness {
            host,
            simulator,
            base_url: format!("http://{listen}"),
            control_url: format!("http://{control}"),
            host_pid,
        };
        let client = reqwest::Client::new();
        let control_health = format!("{}/health", harness.control_url);
        wait_ready(&client, &control_health, &mut harness.simulator, &results_dir.join("simulator.log")).await?;
        let host_ready = format!("{}/health/ready", harness.base_url);
        wait_ready(&client, &host_ready, &mut harness.host, &results_dir.join("host.log")).await?;
        Ok(harness)
    }

    /// Stops both processes: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let host = stop_child(&mut self.host).await;
        let simulator = stop_child(&mut self.simulator).await;
        host.context("stopping the host")?;
        simulator.context("stopping the simulator")
    }
}

/// A loopback port nobody listens on right now. The socket is closed before
/// the child binds it; another process could take it in between, which on a
/// test machine is rare enough to accept and fails loudly if it happens.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?)
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .with_context(|| format!("cannot open {name}"))
}

/// Polls `url` until it answers 2xx; fails if `child` exits first or the
/// timeout passes, quoting the end of its log.
async fn wait_ready(client: &reqwest::Client, url: &str, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(response) = client.get(url).timeout(Duration::from_secs(2)).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("process exited with {status} before {url} was ready; log tail:\n{}", log_tail(log));
        }
        if Instant::now() > deadline {
            anyhow::bail!("{url} not ready after {READY_TIMEOUT:?}; log tail:\n{}", log_tail(log));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn stop_child(child: &mut Child) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()).and_then(rustix::process::Pid::from_raw) {
        // Ignored: the process may have exited since try_wait.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => {
            status?;
            Ok(())
        }
        Err(_) => {
            child.kill().await?;
            Ok(())
        }
    }
}
