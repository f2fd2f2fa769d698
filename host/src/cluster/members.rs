//! What a heartbeat records about a replica, and what the table says about
//! the cluster: who is alive, and who serves what the deploy history names.
//! Pure functions over rows, so the rules are tested without a database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::replicas::ReplicaRow;
use crate::runtime::Divergence;

/// What one replica serves of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// Short version of the stable build.
    pub version: String,
    /// The canary beside it, with its share (%), while one serves here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<(String, u8)>,
    /// closed | open | half_open
    pub breaker: String,
}

/// Whether a replica still heart-beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Live,
    /// Silent for longer than `gone_after_ms`; dropped after `drop_after_ms`.
    Gone,
}

/// One row of `GET /admin/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    pub heartbeat_age_ms: i64,
    pub state: Liveness,
    /// Serves the deploy history's active version of every component.
    pub converged: bool,
    pub serving: BTreeMap<String, Served>,
    /// Components it could not bring to their deployed version, and why.
    pub diverged: Vec<Divergence>,
}

/// Reads the table's rows against the active versions (full digests, by
/// component) at `now`.
pub fn members(rows: &[ReplicaRow], active: &BTreeMap<String, String>, now: i64, gone_after_ms: u64) -> Vec<Member> {
    rows.iter()
        .map(|row| {
            let serving: BTreeMap<String, Served> = serde_json::from_str(&row.serving).unwrap_or_default();
            let diverged: Vec<Divergence> = serde_json::from_str(&row.diverged).unwrap_or_default();
            let age = now.saturating_sub(row.heartbeat_at);
            let state =
                if age > i64::try_from(gone_after_ms).unwrap_or(i64::MAX) { Liveness::Gone } else { Liveness::Live };
            Member {
                id: row.id.clone(),
                address: row.address.clone(),
                started_at: row.started_at,
                heartbeat_age_ms: age.max(0),
                state,
                converged: state == Liveness::Live && unconverged(&serving, active).is_empty(),
                serving,
                diverged,
            }
        })
        .collect()
}

/// The components `serving` does not serve at their active version: each
/// with (wanted, served) short versions.
pub fn unconverged(
    serving: &BTreeMap<String, Served>,
    active: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    serving
        .iter()
        .filter_map(|(name, served)| {
            let wanted = short(active.get(name)?);
            (served.version != wanted).then(|| (name.clone(), wanted.to_owned(), served.version.clone()))
        })
        .collect()
}

/// How `mine` (component → world) differs from another replica's: one
/// sentence per difference; empty when they configure the same app.
pub fn differences(mine: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (name, world) in mine {
        match theirs.get(name) {
            None => found.push(format!("component {name} is configured here but not there")),
            Some(other) if other != world => {
                found.push(format!("component {name} is of world {world} here but {other} there"))
            }
            Some(_) => {}
        }
    }
    found.extend(
        theirs
            .keys()
            .filter(|name| !mine.contains_key(*name))
            .map(|name| format!("component {name} is configured there but not here")),
    );
    found
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, heartbeat_at: i64, serving: &[(&str, &str)]) -> ReplicaRow {
        let serving: BTreeMap<&str, Served> = serving
            .iter()
            .map(|(name, version)| {
                (*name, Served { version: (*version).to_owned(), canary: None, breaker: "closed".into() })
            })
            .collect();
        ReplicaRow {
            id: id.to_owned(),
            address: format!("{id}:8080"),
            started_at: 0,
            heartbeat_at,
            components: "{}".to_owned(),
            serving: serde_json::to_string(&serving).unwrap(),
            diverged: "[]".to_owned(),
            figures: "{}".to_owned(),
        }
    }

    #[test]
    fn a_replica_is_converged_when_live_and_on_every_active_version() {
        let active: BTreeMap<String, String> =
            [("orders".to_owned(), "aaaaaaaaaaaa5555".to_owned()), ("email".to_owned(), "bbbbbbbbbbbb".to_owned())]
                .into();
        let rows = [
            row("a", 9_000, &[("orders", "aaaaaaaaaaaa"), ("email", "bbbbbbbbbbbb")]),
            row("b", 9_500, &[("orders", "cccccccccccc"), ("email", "bbbbbbbbbbbb")]),
            row("c", 1_000, &[("orders", "aaaaaaaaaaaa"), ("email", "bbbbbbbbbbbb")]),
        ];
        let members = members(&rows, &active, 10_000, 5_000);
        let seen: Vec<(&str, Liveness, bool, i64)> =
            members.iter().map(|m| (m.id.as_str(), m.state, m.converged, m.heartbeat_age_ms)).collect();
        assert_eq!(
            seen,
            [
                ("a", Liveness::Live, true, 1_000),
                ("b", Liveness::Live, false, 500),
                ("c", Liveness::Gone, false, 9_000)
            ]
        );
    }

    #[test]
    fn unconverged_names_what_is_wanted_and_what_serves() {
        let active: BTreeMap<String, String> = [("orders".to_owned(), "aaaaaaaaaaaa5555".to_owned())].into();
        let serving: BTreeMap<String, Served> =
            [("orders".to_owned(), Served { version: "cccccccccccc".into(), canary: None, breaker: "closed".into() })]
                .into();
        assert_eq!(unconverged(&serving, &active), [("orders".into(), "aaaaaaaaaaaa".into(), "cccccccccccc".into())]);
        assert!(unconverged(&serving, &BTreeMap::new()).is_empty(), "a component never deployed diverges from nothing");
    }

    #[test]
    fn differences_name_each_component_and_world() {
        let mine: BTreeMap<String, String> =
            [("orders".into(), "handler".into()), ("email".into(), "connector".into())].into();
        let theirs: BTreeMap<String, String> =
            [("orders".into(), "wasi-http".into()), ("sms".into(), "connector".into())].into();
        assert_eq!(
            differences(&mine, &theirs),
            [
                "component email is configured here but not there",
                "component orders is of world handler here but wasi-http there",
                "component sms is configured there but not here",
            ]
        );
        assert!(differences(&mine, &mine).is_empty());
    }
}
