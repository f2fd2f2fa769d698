//! `serve --watch`: redeploys a component when its file changes, for local
//! development. Files are polled (no platform watcher needed); a change must
//! hold still for one more poll before it is deployed, so a file caught
//! half-written is never sent, and the deploy goes through the same
//! validation and audit as an upload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::runtime::Runtime;

/// How often component files are checked.
const POLL: Duration = Duration::from_millis(500);

/// What identifies a file's contents cheaply.
type Stamp = (SystemTime, u64);

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Starts the watcher task; it runs until the process ends.
pub fn start(config: &Config, runtime: Arc<Runtime>) {
    let files: Vec<(String, PathBuf)> =
        config.components.iter().map(|(name, c)| (name.clone(), config.component_path(c))).collect();
    tokio::spawn(async move {
        let mut seen: HashMap<String, Option<Stamp>> = files.iter().map(|(n, p)| (n.clone(), stamp(p))).collect();
        let mut pending: HashMap<String, Stamp> = HashMap::new();
        tracing::info!(files = files.len(), "watching component files for changes");
        loop {
            tokio::time::sleep(POLL).await;
            for (name, path) in &files {
                let now = stamp(path);
                if now == seen.get(name).copied().flatten() {
                    pending.remove(name);
                    continue;
                }
                let Some(now) = now else { continue };
                // Debounce: deploy once the new stamp held for a full poll.
                if pending.get(name) != Some(&now) {
                    pending.insert(name.clone(), now);
                    continue;
                }
                pending.remove(name);
                seen.insert(name.clone(), Some(now));
                match tokio::fs::read(path).await {
                    Ok(bytes) => match runtime.deploy(name, bytes.into(), "watch").await {
                        Ok(report) => {
                            tracing::info!(component = name, version = report.version, "redeployed after a file change")
                        }
                        Err(err) => tracing::warn!(component = name, error = %err, "changed file not deployed"),
                    },
                    Err(err) => tracing::warn!(component = name, error = %err, "cannot read changed file"),
                }
            }
        }
    });
}
