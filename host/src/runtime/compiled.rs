//! Compiled versions kept in memory, by content digest: a rollback to a
//! stored version, or a redeploy of one already seen, skips Cranelift and
//! swaps in the time validation and the smoke instantiation take. Only
//! code this process compiled from wasm is kept; nothing precompiled is
//! ever read from outside. Bounded: the least recently used version goes
//! first.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use wasmtime::component::Component;

/// Versions kept across all components: a few megabytes of machine code
/// each for components like the order handler.
pub const COMPILED_VERSIONS: usize = 16;

/// Least recently used at the front.
pub(crate) struct CompiledCache {
    entries: Mutex<VecDeque<(String, Component)>>,
    capacity: usize,
}

impl CompiledCache {
    pub(crate) fn new(capacity: usize) -> CompiledCache {
        CompiledCache { entries: Mutex::new(VecDeque::with_capacity(capacity)), capacity }
    }

    /// The compiled code of `digest`, now the most recently used.
    pub(crate) fn get(&self, digest: &str) -> Option<Component> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let at = entries.iter().position(|(d, _)| d == digest)?;
        let entry = entries.remove(at)?;
        let component = entry.1.clone();
        entries.push_back(entry);
        Some(component)
    }

    /// Keeps `component` as `digest`'s, dropping the least recently used
    /// one beyond capacity.
    pub(crate) fn insert(&self, digest: &str, component: Component) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|(d, _)| d != digest);
        entries.push_back((digest.to_owned(), component));
        while entries.len() > self.capacity {
            entries.pop_front();
        }
    }

    #[cfg(test)]
    fn digests(&self) -> Vec<String> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(d, _)| d.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_least_recently_used_version_goes_first() {
        let engine = wasmtime::Engine::default();
        // The eight bytes of an empty component.
        let component = Component::from_binary(&engine, b"\0asm\x0d\x00\x01\x00").unwrap();
        let cache = CompiledCache::new(2);
        cache.insert("a", component.clone());
        cache.insert("b", component.clone());
        assert!(cache.get("a").is_some(), "a is used again");
        cache.insert("c", component.clone());
        assert_eq!(cache.digests(), ["a", "c"], "b was the least recently used");
        assert!(cache.get("b").is_none());
        cache.insert("a", component);
        assert_eq!(cache.digests(), ["c", "a"], "a second insert moves, not duplicates");
    }
}
