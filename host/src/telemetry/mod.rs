//! Telemetry: structured `tracing` logs (JSON for machines by default, a
//! pretty format for people, filtered by `RUST_LOG`) and the Prometheus
//! metrics in [`metrics`].

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, span fields (request id) included.
    Json,
    /// Human-readable, coloured when writing to a terminal.
    Pretty,
}

/// Filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx=warn,wasmtime=warn,cranelift=warn";

/// Lines the log writer thread may fall behind by before request threads
/// wait for it. Nothing is dropped: a full buffer slows logging callers
/// rather than losing lines.
const LOG_BUFFER_LINES: usize = 64 * 1024;

/// Installs the global subscriber, writing to stderr from a dedicated
/// thread so request threads format a line but never wait on the write.
/// Keep the returned guard alive until exit: dropping it flushes what is
/// still buffered. Safe to call once per process; later calls do nothing.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(false)
        .thread_name("switchyard-log")
        .finish(std::io::stderr());
    init_with_writer(format, writer);
    guard
}

/// [`init`] with another destination (tests capture logs this way).
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
