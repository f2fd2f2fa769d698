//! Units of work that read first (GET and HEAD invocations), on both
//! databases: they read without SQLite's write permit or PostgreSQL's row
//! locks, so a writer is not kept waiting by them; at their first write they
//! become writers, going on only if what they read is unchanged, and commit
//! atomically; when it changed, the write is refused as a conflict and the
//! invocation runs again as a writer. The `visits` fixture reads a count and
//! writes it back plus one, so a lost update shows as a repeated count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use switchyard::db::DbError;

use common::{Backend, TestHost};

/// Gives up on a writer that should not have had to wait at all.
const NO_WAIT: Duration = Duration::from_secs(10);

async fn stored(host: &TestHost, key: &str) -> Option<Vec<u8>> {
    host.db.kv_get("reads", "b", key).await.unwrap()
}

/// A reader holds no lock a writer waits for; its own first write then
/// commits with every later write, atomically.
async fn readers_lock_nothing_and_then_write_atomically(host: &TestHost) {
    let mut reader = host.db.unit_of_work(Arc::from("reads"), Arc::from("r1")).reading_first();
    assert_eq!(reader.kv_get("b", "k").await.unwrap(), None);
    assert!(!reader.kv_exists("b", "k").await.unwrap());
    assert!(reader.kv_list_keys("b", 0).await.unwrap().0.is_empty());

    // A writer of another key, while the reader is open, commits at once.
    let mut writer = host.db.unit_of_work(Arc::from("reads"), Arc::from("w1"));
    tokio::time::timeout(NO_WAIT, async {
        writer.kv_set("b", "other", b"w").await.unwrap();
        writer.commit().await.unwrap();
    })
    .await
    .expect("a writer waited for a reader");

    drop(reader);

    // A reader whose read is unchanged at its first write goes on, and its
    // writes commit together.
    let mut reader = host.db.unit_of_work(Arc::from("reads"), Arc::from("r2")).reading_first();
    assert_eq!(reader.kv_get("b", "k").await.unwrap(), None);
    reader.kv_set("b", "k", b"1").await.unwrap();
    reader.kv_set("b", "j", b"2").await.unwrap();
    assert_eq!(reader.kv_increment("b", "n", 3).await.unwrap(), 3);
    assert!(!reader.conflicted());
    assert_eq!(stored(host, "k").await, None, "nothing is visible before the commit");
    reader.commit().await.unwrap();
    assert_eq!(
        (stored(host, "k").await, stored(host, "j").await, stored(host, "n").await),
        (Some(b"1".to_vec()), Some(b"2".to_vec()), Some(b"3".to_vec()))
    );
}
on_both_backends!(readers_lock_nothing_and_then_write_atomically, readers_lock_nothing_and_then_write_atomically);

/// A reader whose read changed before its first write is refused that
/// write, and nothing of it commits; a change to something it did not
/// read does not matter.
async fn a_read_that_changed_refuses_the_write(host: &TestHost) {
    // What was read, and whether a change to "k" (its value, or for
    // `exists` its presence) or to a key of its own makes it conflict: a
    // list of keys is unchanged by a new value, and changed by a new key.
    let cases = [("get", true, false), ("exists", true, false), ("list", false, true)];
    for (read, on_k, on_other) in cases {
        for changed in ["k", "elsewhere"] {
            let mut setup = host.db.unit_of_work(Arc::from("reads"), Arc::from("setup"));
            setup.kv_set("b", "k", b"before").await.unwrap();
            setup.kv_delete("b", "mine").await.unwrap();
            setup.commit().await.unwrap();

            let mut reader = host.db.unit_of_work(Arc::from("reads"), Arc::from("reader")).reading_first();
            match read {
                "get" => assert_eq!(reader.kv_get("b", "k").await.unwrap(), Some(b"before".to_vec())),
                "exists" => assert!(reader.kv_exists("b", "k").await.unwrap()),
                _ => assert!(!reader.kv_list_keys("b", 0).await.unwrap().0.is_empty()),
            }
            let mut writer = host.db.unit_of_work(Arc::from("reads"), Arc::from("writer"));
            match (read, changed) {
                ("exists", "k") => writer.kv_delete("b", "k").await.unwrap(),
                (_, "k") => writer.kv_set("b", "k", b"after").await.unwrap(),
                // A key of its own: a new one for the list to show.
                _ => writer.kv_set("b", &format!("elsewhere-{read}"), b"new").await.unwrap(),
            }
            tokio::time::timeout(NO_WAIT, writer.commit()).await.expect("a writer waited for a reader").unwrap();

            let result = reader.kv_set("b", "mine", b"x").await;
            let case = format!("{read}, then a change to {changed}");
            if (changed == "k" && on_k) || (changed != "k" && on_other) {
                assert!(matches!(result, Err(DbError::Conflict)), "{case}: {result:?}");
                assert!(reader.conflicted(), "{case}");
                assert!(matches!(reader.commit().await, Err(DbError::Conflict)), "{case}");
                assert_eq!(stored(host, "mine").await, None, "{case}: nothing of it commits");
            } else {
                result.unwrap();
                assert!(!reader.conflicted(), "{case}");
                reader.commit().await.unwrap();
                assert_eq!(stored(host, "mine").await, Some(b"x".to_vec()), "{case}");
            }
        }
    }
}
on_both_backends!(a_read_that_changed_refuses_the_write, a_read_that_changed_refuses_the_write);

/// The fixture behind a GET and a POST route.
const VISITS: &str = r#"
    [components.visits]
    path = "visits.wasm"

    [[routes]]
    method = "GET"
    path = "/visits"
    component = "visits"

    [[routes]]
    method = "POST"
    path = "/visits"
    component = "visits"
"#;

/// Concurrent GETs that read a count and write it plus one each see a
/// count of their own: a GET whose read changed before it wrote runs again.
async fn no_visit_is_lost(backend: Backend) {
    let Some(host) = TestHost::start_with_toml(backend, VISITS).await else { return };
    // The first visit makes the row. (Two writers that both find no row
    // lock nothing on PostgreSQL, reading first or not: the race this test
    // is about is over a row that exists.)
    let first = TestHost::client().post(format!("{}/visits", host.url)).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "1");
    let (clients, each) = (8, 15);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = format!("{}/visits", host.url);
            tokio::spawn(async move {
                let client = TestHost::client();
                let mut counts = Vec::new();
                for n in 0..each {
                    // Mostly GETs, which read first; a POST now and then.
                    let request = if (i + n) % 5 == 0 { client.post(&url) } else { client.get(&url) };
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    counts.push(response.text().await.unwrap().parse::<u64>().unwrap());
                }
                counts
            })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.extend(task.await.unwrap());
    }
    let total = (clients * each) as u64 + 1;
    counts.sort();
    assert_eq!(counts, (2..=total).collect::<Vec<_>>(), "every visit saw a count of its own");
    assert_eq!(host.db.kv_get("visits", "visits", "count").await.unwrap(), Some(total.to_string().into_bytes()));
    let samples = common::scrape_metrics(&host).await;
    let ok = common::sample(
        &samples,
        "component_invocations_total",
        &[("component", "visits"), ("version", &common::active_version_of(&host, "visits")), ("outcome", "ok")],
    );
    assert_eq!(ok, Some(total as f64), "a run again is one invocation");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_visit_is_lost_on_sqlite() {
    no_visit_is_lost(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_visit_is_lost_on_postgres() {
    no_visit_is_lost(Backend::Postgres).await;
}
