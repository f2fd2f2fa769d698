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

/// Installs the global subscriber, writing to stderr. Safe to call once
/// per process; later calls do nothing.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
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
