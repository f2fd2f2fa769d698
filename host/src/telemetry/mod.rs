//! Telemetry: structured `tracing` logs (JSON for machines by default, a
//! pretty format for people, filtered by `RUST_LOG`) and the Prometheus
//! metrics in [`metrics`].
//!
//! Lines are formatted by `tracing-subscriber` (its JSON format, with the
//! event's fields at the top level and the current span's under `span`)
//! and written by `tracing-appender`'s non-blocking writer: a request thread
//! hands a finished line to a bounded queue and a thread of its own writes
//! it out. When the output cannot keep up and the queue is full, the line is
//! dropped and counted (`log_lines_dropped_total`) rather than stalling the
//! threads that serve requests.

pub mod metrics;

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt};

/// Lines the writer's queue holds before new ones are dropped: at about
/// 300 bytes a line, some 40 MB of logs a stalled output may leave behind.
const QUEUED_LINES: usize = 128_000;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, span fields (request id) included.
    Json,
    /// Human-readable, coloured when writing to a terminal.
    Pretty,
}

/// Flushes what is queued and stops the writer thread when dropped; keep it
/// alive until the process exits.
pub type LogWriterGuard = WorkerGuard;

/// Counts the lines dropped because the queue was full.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the output could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Installs the global subscriber, writing to stderr through the
/// non-blocking writer. Keep the returned guard alive until exit: dropping
/// it writes what is still queued. Safe to call once per process; later
/// calls do nothing.
pub fn init(format: LogFormat) -> LogWriterGuard {
    let (writer, guard) =
        NonBlockingBuilder::default().lossy(true).buffered_lines_limit(QUEUED_LINES).finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let directives = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    init_with_writer(format, writer, directives.as_deref());
    guard
}

/// [`init`] with another destination and filter directives (tests capture
/// logs this way).
pub fn init_with_writer<W>(format: LogFormat, writer: W, directives: Option<&str>)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter(directives);
    let output = match format {
        LogFormat::Json => json_layer(writer).boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(writer).boxed(),
    };
    let _ = tracing_subscriber::registry().with(filter).with(output).try_init();
}

/// One JSON object a line: timestamp, level, the event's fields (message
/// included) at the top level, target, and the current span's fields (the
/// request id) under `span`.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_writer(writer)
}

/// The filter for `RUST_LOG`-style directives, or [`default_filter`] when
/// there are none or they do not parse.
///
/// Directives that name only targets and levels (`info,sqlx=warn`), which
/// is nearly always, become a [`Targets`] filter: it decides once per call
/// site. [`EnvFilter`] is kept for directives that need it (span names,
/// field values), since it also tracks every span it sees, taking a shared
/// lock each time a span is entered or left.
fn filter(directives: Option<&str>) -> Box<dyn Layer<Registry> + Send + Sync> {
    let Some(directives) = directives.map(str::trim).filter(|d| !d.is_empty()) else {
        return default_filter();
    };
    // `[span]` and `{field}` are what only `EnvFilter` understands;
    // `Targets` would read `[span]` as a target name.
    let targets_only = !directives.contains(['[', '{']);
    if targets_only && let Ok(targets) = directives.parse::<Targets>() {
        return targets.boxed();
    }
    match EnvFilter::try_new(directives) {
        Ok(filter) => filter.boxed(),
        Err(_) => default_filter(),
    }
}

/// The filter when `RUST_LOG` is unset: `info,sqlx=warn,wasmtime=warn,cranelift=warn`.
fn default_filter() -> Box<dyn Layer<Registry> + Send + Sync> {
    let quiet = ["sqlx", "wasmtime", "cranelift"].map(|target| (target, LevelFilter::WARN));
    Targets::new().with_default(LevelFilter::INFO).with_targets(quiet).boxed()
}

/// Keeps every log line in memory, readable as text or as JSON values: the
/// destination tests give [`init_with_writer`] to read what was logged.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|bytes| bytes.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Every captured line that parses as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` logs, as plain text lines, under `filter(directives)`.
    fn logged(directives: Option<&str>, f: impl FnOnce()) -> String {
        let capture = Captured::default();
        let output = fmt::layer().with_writer(capture.clone()).with_ansi(false);
        let subscriber = tracing_subscriber::registry().with(filter(directives)).with(output);
        tracing::subscriber::with_default(subscriber, f);
        capture.text()
    }

    #[test]
    fn json_lines_carry_event_fields_at_the_top_and_the_span_under_span() {
        let capture = Captured::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(capture.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("request", request_id = "r-1").in_scope(|| {
                tracing::info!(component = "hello", fuel = 7u64, "invocation");
            });
        });
        let lines = capture.json_lines();
        assert_eq!(lines.len(), 1, "{}", capture.text());
        let line = &lines[0];
        assert_eq!(line["message"], "invocation");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["component"], "hello");
        assert_eq!(line["fuel"], 7);
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["span"]["request_id"], "r-1");
        assert_eq!(line["span"]["name"], "request");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }

    #[test]
    fn target_directives_filter_by_target_and_level() {
        let text = logged(Some("warn,switchyard::telemetry=debug"), || {
            tracing::debug!("kept debug");
            tracing::trace!("dropped trace");
            tracing::info!(target: "elsewhere", "dropped info");
            tracing::warn!(target: "elsewhere", "kept warn");
        });
        assert!(text.contains("kept debug") && text.contains("kept warn"), "{text}");
        assert!(!text.contains("dropped"), "{text}");
    }

    #[test]
    fn span_directives_still_filter_by_span() {
        let text = logged(Some("warn,[request]=debug"), || {
            tracing::info_span!("request").in_scope(|| tracing::debug!("kept inside the span"));
            tracing::debug!("dropped outside it");
        });
        assert!(text.contains("kept inside the span"), "{text}");
        assert!(!text.contains("dropped"), "{text}");
    }

    #[test]
    fn missing_or_invalid_directives_mean_the_default() {
        for directives in [None, Some(""), Some("  "), Some("sqlx=loud")] {
            let text = logged(directives, || {
                tracing::info!("kept info");
                tracing::debug!("dropped debug");
                tracing::info!(target: "sqlx::query", "dropped sqlx info");
                tracing::warn!(target: "sqlx::query", "kept sqlx warn");
            });
            assert!(text.contains("kept info") && text.contains("kept sqlx warn"), "{directives:?}: {text}");
            assert!(!text.contains("dropped"), "{directives:?}: {text}");
        }
    }
}
