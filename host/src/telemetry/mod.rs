//! Telemetry: structured `tracing` logs (JSON for machines by default, a
//! pretty format for people, filtered by `RUST_LOG`) and the Prometheus
//! metrics in [`metrics`].

mod json_format;
mod log_writer;
pub mod metrics;

pub use log_writer::LogWriterGuard;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, span fields (request id) included.
    Json,
    /// Human-readable, coloured when writing to a terminal.
    Pretty,
}

/// Installs the global subscriber, writing to stderr from a dedicated
/// thread: request threads format a line and append it to a buffer, and
/// the writer writes what gathered every few milliseconds. Keep the
/// returned guard alive until exit: dropping it writes what is still
/// buffered. Safe to call once per process; later calls do nothing.
pub fn init(format: LogFormat) -> std::io::Result<LogWriterGuard> {
    let (writer, guard) = log_writer::LogBuffer::start(std::io::stderr())?;
    init_with_writer(format, writer);
    Ok(guard)
}

/// [`init`] with another destination (tests capture logs this way).
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let directives = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = filter(directives.as_deref());
    let output = match format {
        LogFormat::Json => fmt::layer()
            .with_writer(writer)
            .fmt_fields(json_format::JsonMembers)
            .event_format(json_format::JsonLines)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(writer).boxed(),
    };
    let _ = tracing_subscriber::registry().with(filter).with(output).try_init();
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

/// What tests write logs to: every byte kept, readable as text.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
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
