//! `switchyard:platform/log`: guest log lines become host tracing events
//! carrying the component name and the request id.

use wasmtime::component::HasData;

use super::bindings::log::{Host, Level};

/// Longest message kept; a guest cannot flood the logs with one call.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Lines one invocation may log; the rest are dropped, with one warning
/// that says so, so one guest cannot drown every other's lines.
pub const MAX_LINES_PER_INVOCATION: u32 = 1_000;

/// Who is logging: the component and the request it serves, and the lines
/// it has logged in this invocation.
pub struct LogView<'a> {
    pub component: &'a str,
    pub request_id: &'a str,
    pub lines: &'a mut u32,
}

/// Links `switchyard:platform/log` to a [`LogView`].
pub struct Log;

impl HasData for Log {
    type Data<'a> = LogView<'a>;
}

impl Host for LogView<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let (component, request_id) = (self.component, self.request_id);
        *self.lines = self.lines.saturating_add(1);
        if *self.lines > MAX_LINES_PER_INVOCATION {
            if *self.lines == MAX_LINES_PER_INVOCATION + 1 {
                tracing::warn!(
                    target: "component",
                    component,
                    request_id,
                    "more than {MAX_LINES_PER_INVOCATION} log lines in one invocation; the rest are dropped"
                );
            }
            return Ok(());
        }
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        match level {
            Level::Trace => tracing::trace!(target: "component", component, request_id, "{message}"),
            Level::Debug => tracing::debug!(target: "component", component, request_id, "{message}"),
            Level::Info => tracing::info!(target: "component", component, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "component", component, request_id, "{message}"),
            Level::Error => tracing::error!(target: "component", component, request_id, "{message}"),
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("short", 100), "short");
    }
}
