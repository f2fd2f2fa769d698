//! `switchyard:platform/config`: the component's `[components.NAME.config]`
//! table, read-only.

use std::collections::BTreeMap;

use wasmtime::component::HasData;

use super::bindings::config::Host;

/// The component's configured values.
pub struct ConfigView<'a> {
    pub values: &'a BTreeMap<String, String>,
}

/// Links `switchyard:platform/config` to a [`ConfigView`].
pub struct ConfigValues;

impl HasData for ConfigValues {
    type Data<'a> = ConfigView<'a>;
}

impl Host for ConfigView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.values.get(&key).cloned())
    }
}
