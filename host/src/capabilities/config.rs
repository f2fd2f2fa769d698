//! `switchyard:platform/config`: the component's `[components.NAME.config]`
//! table, read-only.

use crate::runtime::bindings::config::Host;
use crate::runtime::state::InvocationState;

impl Host for InvocationState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.component.config.get(&key).cloned())
    }
}
