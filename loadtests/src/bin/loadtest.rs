//! `loadtest`: runs one load scenario against Switchyard and writes its
//! results, or (`loadtest report`) compares the latest runs. Unless
//! `--target` names a running host, it starts the host and the provider
//! simulator on free loopback ports for the run and stops them afterwards,
//! also when the run fails. Exits non-zero when a threshold is violated, so
//! `just loadtest smoke` can gate CI.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum as _};
use indicatif::{ProgressBar, ProgressStyle};
use switchyard_loadtests::harness::{Harness, HarnessOptions};
use switchyard_loadtests::hostmetrics::{self, HostMetrics, Snapshot};
use switchyard_loadtests::load::{self, DEFAULT_REQUEST_TIMEOUT, Recorder, StopFlag, Target};
use switchyard_loadtests::scenarios::{self, Context, Findings, Params, Scenario};
use switchyard_loadtests::summary::{self, Summary};
use switchyard_loadtests::thresholds::{Check, Thresholds};
use switchyard_loadtests::{plot, report, techreport};

/// Longest run any flag may ask for; with the drain wait and start-up this
/// bounds every invocation.
const MAX_DURATION: Duration = Duration::from_secs(2 * 3600);
/// Time past the scenario's own duration (start-up of the load, drain waits,
/// stress judging) before the hard cap stops it.
const CAP_MARGIN: Duration = Duration::from_secs(120);
/// How long a stopped scenario may take to wind down its in-flight requests.
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(name = "loadtest", version, about = "Load-test Switchyard's reference app")]
struct Cli {
    /// smoke, warmup, baseline, spike, stress, soak, hotswap, outage, mixed, canary, hostile — or
    /// `report` to compare the latest runs.
    #[arg(default_value = "smoke")]
    scenario: String,
    /// Run length (e.g. 30s, 2m, 1h); the scenario's default when unset.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Arrival rate in requests per second (open-model scenarios; stress: the step).
    #[arg(long)]
    rate: Option<f64>,
    /// Virtual users (closed model: warmup).
    #[arg(long)]
    users: Option<usize>,
    /// Bound on requests sent; derived from rate × duration when unset.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Largest tolerated error fraction (0.01 = 1%); errors are 5xx and failures to get an answer.
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Largest tolerated p99 latency, in ms.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Hot swap: time between redeploys (default: ≤ 2s, enough for 20 swaps).
    #[arg(long, value_parser = parse_duration)]
    swap_interval: Option<Duration>,
    /// Hot swap: deploy a build never seen before at every swap (same code,
    /// a new digest), so each swap compiles, instead of alternating two.
    #[arg(long)]
    new_builds: bool,
    /// Outage: how long the providers stay down (default: a third of the run).
    #[arg(long, value_parser = parse_duration)]
    outage: Option<Duration>,
    /// Outage: how long to wait for the outbox to drain.
    #[arg(long, value_parser = parse_duration, default_value = "180s")]
    drain_timeout: Duration,
    /// Canary: the share (%, 1–99) each canary deploy starts with.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u8).range(1..=99))]
    canary_share: u8,
    /// Seed of the traffic mix (random when unset; recorded in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Per-request timeout.
    #[arg(long, value_parser = parse_duration)]
    request_timeout: Option<Duration>,
    /// Load a running host at this URL instead of starting one (loopback only).
    #[arg(long)]
    target: Option<String>,
    /// With --target: the admin token (hotswap, outage, outbox counts).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// With --target: the provider simulator's control API (outage).
    #[arg(long)]
    simulator_control: Option<String>,
    /// The config the started host's config is derived from.
    #[arg(long, default_value_os_t = repo_root().join("switchyard.toml"))]
    config: PathBuf,
    /// The order handler component hot swap redeploys (canary: its fault
    /// builds are in `faults/` beside it).
    #[arg(long, default_value_os_t = repo_root().join("components/build/order-handler.wasm"))]
    order_handler: PathBuf,
    /// Where `switchyard` and `provider-simulator` are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where run directories and report.md go.
    #[arg(long, default_value_os_t = repo_root().join("loadtests/results"))]
    results_dir: PathBuf,
    /// `report`: how many recent runs to compare.
    #[arg(long, default_value_t = report::DEFAULT_RUNS)]
    runs: usize,
    /// `report`: write the technical report (report.md and its charts under
    /// report/) into this directory instead, from the newest run of each scenario.
    #[arg(long)]
    technical: Option<PathBuf>,
}

/// The repository the command runs in: the nearest directory, from the
/// working directory up, that holds `switchyard.toml` and `loadtests/`.
/// Not the one the binary was built from: clones that share a cargo target
/// directory share this binary too. Falls back to the working directory.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .find(|dir| dir.join("switchyard.toml").is_file() && dir.join("loadtests").is_dir())
        .map_or(cwd.clone(), Path::to_path_buf)
}

/// `500ms`, `30s`, `2m`, `1h`, or bare seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?} (try 30s, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms, s, m or h")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())?;
    if duration > MAX_DURATION {
        return Err(format!("{text} is longer than the {}h cap", MAX_DURATION.as_secs() / 3600));
    }
    Ok(duration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.scenario == "report" {
        return match write_report(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        };
    }
    let scenario = match Scenario::from_str(&cli.scenario, true) {
        Ok(scenario) => scenario,
        Err(_) => {
            eprintln!("error: unknown scenario {:?}; see --help", cli.scenario);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli, scenario)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn write_report(cli: &Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.technical {
        techreport::write(&cli.results_dir, dir)?;
        eprintln!("technical report written to {}", dir.join("report.md").display());
        return Ok(());
    }
    let runs = report::recent_runs(&cli.results_dir, cli.runs)?;
    let text = report::render(&runs);
    print!("{text}");
    std::fs::write(cli.results_dir.join("report.md"), &text).context("cannot write report.md")
}

/// Runs the scenario; Ok(passed).
async fn run(cli: Cli, scenario: Scenario) -> anyhow::Result<bool> {
    let defaults = scenario.defaults();
    let params = Params {
        duration: cli.duration.unwrap_or(defaults.duration),
        rate: cli.rate.unwrap_or(defaults.rate),
        users: cli.users.unwrap_or(defaults.users),
        max_requests: cli.max_requests,
        thresholds: Thresholds {
            max_error_rate: cli.max_error_rate.unwrap_or(defaults.thresholds.max_error_rate),
            max_p99_ms: cli.max_p99_ms.unwrap_or(defaults.thresholds.max_p99_ms),
        },
        swap_interval: cli.swap_interval,
        new_builds: cli.new_builds,
        outage: cli.outage,
        drain_timeout: cli.drain_timeout,
        seed: cli.seed.unwrap_or_else(|| fastrand::u64(..)),
        canary_share: cli.canary_share,
    };
    let (stamp, started_at) = summary::utc_now();
    let results_dir = cli.results_dir.join(format!("{stamp}-{}", scenario.name()));
    std::fs::create_dir_all(&results_dir).with_context(|| format!("cannot create {}", results_dir.display()))?;
    eprintln!("loadtest {}: results in {}", scenario.name(), results_dir.display());
    if cli.target.is_none() {
        eprintln!("config {}, order handler {}", cli.config.display(), cli.order_handler.display());
    }

    let (harness, base_url, control_url, admin_token) = match &cli.target {
        Some(url) => {
            ensure_loopback(url)?;
            if let Some(control) = &cli.simulator_control {
                ensure_loopback(control)?;
            }
            (None, url.clone(), cli.simulator_control.clone(), cli.admin_token.clone())
        }
        None => {
            let bin_dir = match &cli.bin_dir {
                Some(dir) => dir.clone(),
                None => std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            let token = format!("lt-{}", uuid::Uuid::new_v4().simple());
            let options = HarnessOptions {
                bin_dir,
                source_config: cli.config.clone(),
                results_dir: results_dir.clone(),
                admin_token: token.clone(),
            };
            eprintln!("starting the host and the provider simulator…");
            let harness = Harness::start(&options).await?;
            eprintln!("dashboard: {}/dashboard (admin token: {token})", harness.base_url);
            let (base, control) = (harness.base_url.clone(), harness.control_url.clone());
            (Some(harness), base, Some(control), Some(token))
        }
    };
    let host_pid = harness.as_ref().map(|h| h.host_pid);

    // Everything from here on must reach `harness.stop()`.
    let outcome = measure(&cli, scenario, params, &base_url, control_url, admin_token, host_pid).await;
    if let Some(harness) = harness
        && let Err(err) = harness.stop().await
    {
        eprintln!("warning: {err:#}");
    }
    let (mut summary, samples) = outcome?;
    summary.details.insert("results".into(), serde_json::json!(results_dir.display().to_string()));
    if cli.target.is_none() {
        // Which app this run measured: the config the host's was derived from
        // (its component paths are relative to it) and the hot-swapped build.
        summary.details.insert("config".into(), serde_json::json!(cli.config.display().to_string()));
        summary.details.insert("order_handler".into(), serde_json::json!(cli.order_handler.display().to_string()));
    }
    summary.started_at = started_at;

    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(results_dir.join("summary.json"), json).context("cannot write summary.json")?;
    let markdown = summary.to_markdown();
    std::fs::write(results_dir.join("summary.md"), &markdown).context("cannot write summary.md")?;
    let timeline = load::histogram::timeline(&samples);
    let mut csv = String::from("second,completed,errors,p50_ms,p99_ms\n");
    for p in &timeline {
        csv.push_str(&format!("{},{},{},{:.3},{:.3}\n", p.second, p.completed, p.errors, p.p50_ms, p.p99_ms));
    }
    std::fs::write(results_dir.join("timeline.csv"), csv).context("cannot write timeline.csv")?;
    if let Err(err) = plot::draw(&results_dir.join("latency.svg"), scenario.name(), &timeline, &summary.windows) {
        eprintln!("warning: {err:#}");
    }
    println!("{markdown}");
    Ok(summary.passed)
}

/// Scrapes, runs the scenario under the hard cap and Ctrl-C, scrapes again,
/// and builds the summary.
async fn measure(
    cli: &Cli,
    scenario: Scenario,
    params: Params,
    base_url: &str,
    control_url: Option<String>,
    admin_token: Option<String>,
    host_pid: Option<u32>,
) -> anyhow::Result<(Summary, Vec<load::Sample>)> {
    let target = Arc::new(Target::new(base_url, cli.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT))?);
    let before = scrape(&target).await;
    let rss_start = host_pid.and_then(hostmetrics::rss_kib);
    let recorder = Arc::new(Recorder::new());
    let stop = StopFlag::new();
    let cap = params.duration + params.drain_timeout + CAP_MARGIN;
    let (duration, seed, thresholds) = (params.duration, params.seed, params.thresholds);
    let context = Context {
        target: Arc::clone(&target),
        recorder: Arc::clone(&recorder),
        stop: stop.clone(),
        params,
        admin_token,
        control_url,
        host_pid,
        order_handler: cli.order_handler.clone(),
    };
    let progress = spawn_progress(Arc::clone(&recorder), duration, stop.clone());

    let run = scenarios::run(scenario, &context);
    tokio::pin!(run);
    let mut interrupted = None;
    let result = tokio::select! {
        result = &mut run => result,
        () = tokio::time::sleep(cap) => {
            interrupted = Some(format!("hard time cap of {}s reached", cap.as_secs()));
            stop.stop();
            tokio::time::timeout(STOP_GRACE, &mut run).await.unwrap_or_else(|_| Ok(Findings::default()))
        }
        _ = tokio::signal::ctrl_c() => {
            interrupted = Some("interrupted (Ctrl-C)".to_owned());
            stop.stop();
            tokio::time::timeout(STOP_GRACE, &mut run).await.unwrap_or_else(|_| Ok(Findings::default()))
        }
    };
    stop.stop();
    let _ = progress.await;

    let after = scrape(&target).await;
    let samples = recorder.snapshot();
    let (findings, failure) = match result {
        Ok(findings) => (findings, interrupted),
        Err(err) => (Findings::default(), Some(format!("{err:#}"))),
    };
    let mut summary = Summary::from_samples(scenario.name(), "", &findings.model, &samples, &recorder.versions());
    summary.windows = findings.windows;
    summary.details = findings.details;
    summary.details.insert("seed".into(), serde_json::json!(seed));
    if let (Some(before), Some(after)) = (&before, &after) {
        summary.host = HostMetrics::between(before, after);
    }
    summary.host.rss_kib = findings.rss.or_else(|| {
        let (start, end) = (rss_start?, host_pid.and_then(hostmetrics::rss_kib)?);
        Some(hostmetrics::RssStats { start, end, max: start.max(end) })
    });
    let mut checks = Vec::new();
    if let Some(reason) = failure {
        checks.push(Check { name: "scenario completed".into(), limit: "yes".into(), actual: reason, passed: false });
    }
    if findings.common_thresholds || checks.is_empty() && findings.checks.is_empty() {
        checks.extend(thresholds.evaluate(summary.requests, summary.errors, summary.latency.p99_ms));
    }
    checks.extend(findings.checks);
    summary.set_checks(checks);
    Ok((summary, samples))
}

async fn scrape(target: &Target) -> Option<Snapshot> {
    match hostmetrics::scrape(&target.client, &target.base_url).await {
        Ok(snapshot) => Some(snapshot),
        Err(err) => {
            eprintln!("warning: {err:#}");
            None
        }
    }
}

/// Live RPS / p99 / errors: a progress bar on a terminal, a line every 10 s
/// otherwise (CI logs).
fn spawn_progress(recorder: Arc<Recorder>, duration: Duration, stop: StopFlag) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal { ProgressBar::new(duration.as_secs().max(1)) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    tokio::spawn(async move {
        let tick = Duration::from_millis(500);
        let mut ticks: u64 = 0;
        while !stop.is_stopped() {
            tokio::time::sleep(tick).await;
            ticks += 1;
            let (count, errors, p99) = recorder.recent(Duration::from_secs(1));
            let line = format!("{count} rps, p99 {p99:.1} ms, {errors} errors/s, {} total", recorder.snapshot_len());
            bar.set_position(recorder.elapsed().as_secs().min(duration.as_secs()));
            bar.set_message(line.clone());
            if !terminal && ticks.is_multiple_of(20) {
                eprintln!("[{:>4}s] {line}", recorder.elapsed().as_secs());
            }
        }
        bar.finish_and_clear();
    })
}

/// Refuses non-loopback targets: load tests never leave the machine.
fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
    let loopback = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(loopback, "{url} is not a loopback address; load tests only target this machine");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("5h").is_err(), "over the cap");
    }

    #[test]
    fn only_loopback_targets_are_allowed() {
        assert!(ensure_loopback("http://127.0.0.1:8080").is_ok());
        assert!(ensure_loopback("http://localhost:8080/x").is_ok());
        assert!(ensure_loopback("http://[::1]:8080").is_ok());
        assert!(ensure_loopback("http://10.0.0.5:8080").is_err());
        assert!(ensure_loopback("http://example.com").is_err());
    }
}
