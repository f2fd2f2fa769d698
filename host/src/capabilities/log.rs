//! `switchyard:platform/log`: guest log lines become host tracing events
//! carrying the component name and the request id.

use crate::runtime::bindings::log::{Host, Level};
use crate::runtime::state::InvocationState;

/// Longest message kept; a guest cannot flood the logs with one call.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

impl Host for InvocationState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        let component = &*self.component.name;
        let request_id = &*self.request_id;
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
