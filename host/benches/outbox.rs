//! `just bench-outbox`: how fast the dispatcher drains a backlog through the
//! real connector component to the provider simulator answering at once.
//!
//! Enqueues `MESSAGES` email messages with delivery paused, then starts the
//! dispatcher and times the drain until every message is DELIVERED. Runs on
//! SQLite, again on SQLite with about 1 % of the answers 200 ms late (a
//! slow tail, which a dispatcher that waits for a batch's slowest delivery
//! pays for in every batch), and on PostgreSQL too when `DATABASE_URL`
//! names a server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::clock::SystemClock;
use switchyard::config::Config;
use switchyard::db::outbox::{NewMessage, Status};
use switchyard::outbox::Dispatcher;
use switchyard_loadtests::simulator::Simulator;
use tokio::net::TcpListener;

const MESSAGES: usize = 20_000;
const ENQUEUE_BATCH: usize = 1_000;

fn config(components: &std::path::Path, db: &str, provider: &str) -> Config {
    let text = format!(
        r#"
        [database]
        url = "{db}"
        max_connections = 16
        [outbox]
        dispatch = false
        batch_size = 256
        concurrency = 32
        [components.connector-email]
        path = "connector-email.wasm"
        world = "connector"
        allowed_hosts = ["{provider}"]
        config = {{ url = "http://{provider}/email" }}
        [connectors.email]
        component = "connector-email"
        "#
    );
    Config::parse(&text, components.to_path_buf()).expect("bench config")
}

async fn drain(db_url: &str, label: &str, provider: &str) {
    let components = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../components/build");
    let config = config(&components, db_url, provider);
    let state = switchyard::prepare(&config).await.expect("prepare");
    for chunk in 0..MESSAGES / ENQUEUE_BATCH {
        let mut unit = state.db.unit_of_work(Arc::from("bench"), Arc::from(format!("bench-{chunk}")));
        for i in 0..ENQUEUE_BATCH {
            let message = NewMessage {
                recipient: format!("user{i}@example.com"),
                subject: Some("Order confirmed".into()),
                body: "Thanks for your order.".into(),
                metadata: vec![],
            };
            unit.enqueue("email", message).await.expect("enqueue");
        }
        unit.commit().await.expect("commit");
    }
    let started = Instant::now();
    let dispatcher = Dispatcher::start(
        &config,
        state.runtime.clone(),
        state.db.clone(),
        Arc::new(SystemClock),
        state.deliveries.clone(),
    );
    let deadline = started + Duration::from_secs(600);
    loop {
        let delivered = state.db.outbox_count(Status::Delivered).await.expect("count");
        if delivered as usize >= MESSAGES {
            break;
        }
        assert!(Instant::now() < deadline, "{label}: drain did not finish in 10 minutes ({delivered} delivered)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    dispatcher.stop().await;
    println!(
        "| {label} | {MESSAGES} | {:.2} s | {:.0} msg/s |",
        elapsed.as_secs_f64(),
        MESSAGES as f64 / elapsed.as_secs_f64()
    );
    state.db.close().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    runtime.block_on(async {
        let simulator = Arc::new(Simulator::with_seed(1));
        let deliveries = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let provider = deliveries.local_addr().expect("addr").to_string();
        tokio::spawn(simulator.clone().serve(deliveries, control, std::future::pending()));

        println!("| database | messages | drain time | rate |");
        println!("|---|---:|---:|---:|");
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
        drain(&sqlite, "SQLite", &provider).await;
        // Recipients user100@ … user900@ of every thousand: 0.9 %.
        simulator.reset().expect("reset");
        simulator.slow_recipients(Some(("00@".into(), 200))).expect("slow");
        let slow_tail = format!("sqlite://{}", dir.path().join("bench-slow.db").display());
        drain(&slow_tail, "SQLite, 0.9 % of answers 200 ms late", &provider).await;
        simulator.slow_recipients(None).expect("fast");
        if let Ok(url) = std::env::var("DATABASE_URL")
            && url.starts_with("postgres")
        {
            simulator.reset().expect("reset");
            // A fresh database so earlier runs' rows do not count.
            let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.expect("pg");
            let name = format!("switchyard_bench_{}", std::process::id());
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&admin).await.expect("drop");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create");
            let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
            drain(&format!("{base}/{name}"), "PostgreSQL", &provider).await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
        }
    });
}
