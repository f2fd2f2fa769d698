//! Compiled code kept in memory, at two grains. Whole versions, by content
//! digest ([`CompiledCache`]): a rollback to a stored version, or a redeploy
//! of one already seen, skips Cranelift and swaps in the time validation and
//! the smoke instantiation take. And single functions, by their body
//! ([`CompiledFunctions`], Cranelift's incremental cache): a new build
//! compiles only the functions it changed. Only code this process compiled
//! from wasm is kept; nothing precompiled is ever read from outside. Both are
//! bounded, and drop what was least recently used.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use quick_cache::Weighter;
use wasmtime::CacheStore;
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

/// Bytes of compiled functions kept for incremental compilation, across all
/// components: one build of the order handler takes 1.4 MB (`just
/// bench-compile`), so this holds some twenty.
pub const COMPILED_FUNCTION_BYTES: u64 = 32 << 20;

/// Cranelift's incremental compilation cache, in memory. Cranelift keys each
/// function by its body with the functions it calls named indirectly, so a
/// function unchanged by a new build is found again even when others moved
/// around it. Keys and values are Cranelift's own, never read from outside
/// this process.
pub struct CompiledFunctions {
    functions: quick_cache::sync::Cache<Vec<u8>, Vec<u8>, ByLength>,
}

/// An entry weighs its key and value bytes.
#[derive(Clone)]
struct ByLength;

impl Weighter<Vec<u8>, Vec<u8>> for ByLength {
    fn weight(&self, key: &Vec<u8>, value: &Vec<u8>) -> u64 {
        // Never zero: quick_cache keeps weightless entries forever.
        (key.len() + value.len()).max(1) as u64
    }
}

impl CompiledFunctions {
    pub fn new(bytes: u64) -> CompiledFunctions {
        // Sized for functions of about 2 KB, key and code.
        let estimated = usize::try_from(bytes / 2048).unwrap_or(usize::MAX).max(16);
        CompiledFunctions { functions: quick_cache::sync::Cache::with_weighter(estimated, bytes, ByLength) }
    }

    /// Bytes held.
    pub fn weight(&self) -> u64 {
        self.functions.weight()
    }
}

impl std::fmt::Debug for CompiledFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFunctions").field("bytes", &self.weight()).finish()
    }
}

impl CacheStore for CompiledFunctions {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.functions.get(key).map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.functions.insert(key.to_vec(), value);
        true
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

    #[test]
    fn compiled_functions_stay_within_their_bytes() {
        let functions = CompiledFunctions::new(64 << 10);
        for i in 0..200u32 {
            assert!(functions.insert(&i.to_le_bytes(), vec![0; 1024]));
        }
        assert!(functions.weight() <= 64 << 10, "{} bytes held", functions.weight());
        let kept = (0..200u32).filter(|i| functions.get(&i.to_le_bytes()).is_some()).count();
        assert!(kept > 0 && kept <= 64, "{kept} of 200 functions of 1 KB kept in 64 KB");
        assert_eq!(functions.get(&199u32.to_le_bytes()).as_deref(), Some(&[0; 1024][..]), "the newest is kept whole");
    }
}
