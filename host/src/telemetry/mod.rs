//! Telemetry: structured `tracing` logs (JSON for machines by default, a
//! pretty format for people, filtered by `RUST_LOG`) and the Prometheus
//! metrics in [`metrics`].

mod json_format;
mod log_writer;
pub mod metrics;

pub use log_writer::LogWriterGuard;
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
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.fmt_fields(json_format::JsonMembers).event_format(json_format::JsonLines).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
