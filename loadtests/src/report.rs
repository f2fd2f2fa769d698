//! `loadtest report`: one Markdown table comparing the most recent runs,
//! read from their `summary.json`, so a regression between two runs of the
//! same scenario is visible at a glance. Written to stdout and to
//! `results/report.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::summary::Summary;

/// Default number of runs compared.
pub const DEFAULT_RUNS: usize = 20;

/// The `limit` most recent runs under `results_dir`, oldest first, with the
/// name of the directory each came from. Directories without a readable
/// `summary.json` (a run that crashed) are skipped.
pub fn recent_runs(results_dir: &Path, limit: usize) -> anyhow::Result<Vec<(String, Summary)>> {
    let mut dirs: Vec<String> = std::fs::read_dir(results_dir)
        .with_context(|| format!("cannot list {}", results_dir.display()))?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("summary.json").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    // Directory names start with a UTC timestamp, so names sort by time.
    dirs.sort();
    let skip = dirs.len().saturating_sub(limit);
    let mut runs = Vec::new();
    for dir in dirs.into_iter().skip(skip) {
        let text = match std::fs::read_to_string(results_dir.join(&dir).join("summary.json")) {
            Ok(text) => text,
            Err(_) => continue,
        };
        if let Ok(summary) = serde_json::from_str::<Summary>(&text) {
            runs.push((dir, summary));
        }
    }
    Ok(runs)
}

/// The comparison table. The p99 change is against the previous run of the
/// same scenario in the list.
pub fn render(runs: &[(String, Summary)]) -> String {
    let mut out = String::from("# Load test runs\n\n");
    if runs.is_empty() {
        out.push_str("No runs with a summary.json yet: run `just loadtest smoke`.\n");
        return out;
    }
    out.push_str(
        "| run | scenario | model | duration s | requests | rps | p50 ms | p99 ms | Δp99 | max ms | errors | result |\n",
    );
    out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (index, (dir, s)) in runs.iter().enumerate() {
        let previous = runs[..index].iter().rev().find(|(_, p)| p.scenario == s.scenario);
        let delta = match previous {
            Some((_, p)) if p.latency.p99_ms > 0.0 => {
                format!("{:+.0}%", (s.latency.p99_ms / p.latency.p99_ms - 1.0) * 100.0)
            }
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {dir} | {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {delta} | {:.1} | {} ({:.2}%) | {} |",
            s.scenario,
            s.model,
            s.duration_s,
            s.requests,
            s.achieved_rps,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.errors,
            s.error_rate * 100.0,
            if s.passed { "pass" } else { "**FAIL**" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::load::{Outcome, Sample};

    fn run(scenario: &str, latency_ms: u64) -> Summary {
        let samples: Vec<Sample> = (0..10)
            .map(|n| Sample {
                endpoint: "POST /orders",
                outcome: Outcome::Status(201),
                intended_us: n * 100_000,
                latency_us: latency_ms * 1000,
                version: 0,
            })
            .collect();
        let mut summary = Summary::from_samples(scenario, "t", "open, 10 rps", &samples, &[]);
        summary.set_checks(vec![crate::thresholds::at_most("p99", latency_ms as f64, 500.0, " ms")]);
        summary
    }

    #[test]
    fn compares_each_run_with_the_previous_of_its_scenario() {
        let runs = vec![
            ("20260101-000000-smoke".to_owned(), run("smoke", 10)),
            ("20260101-000100-hotswap".to_owned(), run("hotswap", 50)),
            ("20260101-000200-smoke".to_owned(), run("smoke", 20)),
        ];
        let table = render(&runs);
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("| 2026")).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("| – |"), "{}", lines[0]);
        assert!(lines[2].contains("| +100% |"), "{}", lines[2]);
        assert!(lines[2].ends_with("| pass |"));
    }

    #[test]
    fn reads_the_latest_runs_in_time_order_and_skips_broken_ones() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        for (name, latency) in
            [("20260101-000200-smoke", 20), ("20260101-000000-smoke", 10), ("20260101-000100-smoke", 15)]
        {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("summary.json"), serde_json::to_string(&run("smoke", latency)).unwrap())
                .unwrap();
        }
        std::fs::create_dir_all(dir.join("20260101-000300-crashed")).unwrap();
        std::fs::write(dir.join("20260101-000300-crashed").join("summary.json"), "{").unwrap();
        let runs = recent_runs(&dir, 2).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
        // The two most recent directories are 000200 and the broken 000300.
        assert_eq!(names, ["20260101-000200-smoke"]);
    }

    #[test]
    fn says_so_when_there_is_nothing_to_compare() {
        assert!(render(&[]).contains("No runs"));
    }
}
