//! Hostile clients under load: open-loop orders for the whole run, and in
//! its middle half hostile clients on raw sockets against the same host:
//!
//! - slow headers: connections that send a header byte a second;
//! - slow bodies: `POST /orders` whose body comes a byte a second;
//! - idle connections that send nothing;
//! - malformed requests in a loop, each on a connection of its own: a
//!   `Content-Length` with `Transfer-Encoding` and a smuggled request after
//!   the body, two lengths, a coding after `chunked`, a method that is not a
//!   token, a control byte in the target, header floods;
//! - clients that send a request and leave before the answer.
//!
//! Slow and idle connections that the host closes are opened again, so the
//! pressure lasts the whole attack. The orders' p99 during the attack is
//! compared with their p99 before and after it: the goal is within 2×.
//! Every malformed request must get its exact answer. The host's own bounds
//! (header read timeout, request timeout, header limits) are what it is
//! run with: the attack is long enough for the 30 s defaults to act.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::workload::{Mix, OrderTraffic};
use super::{Context, Findings, drive_open, seconds_since_start};
use crate::load::StopFlag;
use crate::load::open::RateProfile;
use crate::summary::{self, Window};
use crate::thresholds;

/// The goal: orders' p99 during the attack at most this many times their
/// p99 outside it.
pub const MAX_P99_RATIO: f64 = 2.0;
/// Connections sending their headers a byte at a time.
const SLOW_HEADERS: usize = 100;
/// Connections sending an order's body a byte at a time.
const SLOW_BODIES: usize = 50;
/// Connections that send nothing.
const IDLE: usize = 200;
/// Malformed requests a second (each on a new connection).
const MALFORMED_PER_SECOND: u32 = 20;
/// Clients a second that send a request and leave at once.
const LEAVERS_PER_SECOND: u32 = 20;
/// Pause between the bytes of a slow client.
const TRICKLE_INTERVAL: Duration = Duration::from_secs(1);
/// Wait before reconnecting after a refused connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for the answer to a malformed request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Declared length of a slow body: far more than the attack sends.
const SLOW_BODY_LENGTH: usize = 4096;

/// A malformed request and the status it must get.
struct Malformed {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn malformed_requests() -> Vec<Malformed> {
    let smuggled = "GET /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let flood = |n: usize| (0..n).map(|i| format!("x-flood-{i}: v\r\n")).collect::<String>();
    let requests: [(&str, String, u16); 8] = [
        (
            "content-length with chunked, a request smuggled after the body",
            format!(
                "POST /orders HTTP/1.1\r\nhost: loadtest\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{body}",
                body.len()
            ),
            // Read as chunked: an empty order, refused by the order handler.
            400,
        ),
        (
            "two content-lengths",
            "POST /orders HTTP/1.1\r\nhost: loadtest\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}}".into(),
            400,
        ),
        (
            "a coding after chunked",
            "POST /orders HTTP/1.1\r\nhost: loadtest\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        ("a method that is not a token", "G@T /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\n\r\n".into(), 400),
        ("a control byte in the target", "GET /orders/\x01 HTTP/1.1\r\nhost: loadtest\r\n\r\n".into(), 400),
        ("65 headers", format!("GET /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\n{}\r\n", flood(64)), 431),
        ("101 headers", format!("GET /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\n{}\r\n", flood(100)), 431),
        (
            "a 100 KiB header",
            format!("GET /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\nx-big: {}\r\n\r\n", "a".repeat(100 * 1024)),
            431,
        ),
    ];
    requests
        .into_iter()
        .map(|(name, request, status)| Malformed { name, request: request.into_bytes(), status })
        .collect()
}

/// Counts of what the hostile clients did and what happened to them, by a
/// readable key.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, key: impl Into<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(key.into()).or_default() += 1;
    }

    fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied().unwrap_or(0)
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// When the attack ends: its deadline or the run's stop flag.
#[derive(Clone)]
struct Attack {
    address: SocketAddr,
    until: Instant,
    stop: StopFlag,
    tally: Arc<Tally>,
}

impl Attack {
    fn running(&self) -> bool {
        Instant::now() < self.until && !self.stop.is_stopped()
    }

    async fn connect(&self, kind: &str) -> Option<TcpStream> {
        match TcpStream::connect(self.address).await {
            Ok(stream) => {
                self.tally.add(format!("{kind}: connections opened"));
                Some(stream)
            }
            Err(_) => {
                self.tally.add(format!("{kind}: connections refused"));
                tokio::time::sleep(RECONNECT_PAUSE).await;
                None
            }
        }
    }
}

pub async fn run(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let address = socket_address(&context.target.base_url)?;
    let tally = Arc::new(Tally::default());
    let (attack_at, attack_for) = (params.duration / 4, params.duration / 2);
    let attacker = {
        let (recorder, stop, tally) = (Arc::clone(&context.recorder), context.stop.clone(), Arc::clone(&tally));
        tokio::spawn(async move {
            tokio::time::sleep(attack_at).await;
            if stop.is_stopped() {
                return None;
            }
            let start_s = seconds_since_start(&recorder);
            let attack = Attack { address, until: Instant::now() + attack_for, stop, tally };
            let mut clients = JoinSet::new();
            for _ in 0..SLOW_HEADERS {
                clients.spawn(slow_headers(attack.clone()));
            }
            for _ in 0..SLOW_BODIES {
                clients.spawn(slow_body(attack.clone()));
            }
            for _ in 0..IDLE {
                clients.spawn(idle(attack.clone()));
            }
            clients.spawn(malformed(attack.clone()));
            clients.spawn(leavers(attack));
            while clients.join_next().await.is_some() {}
            Some(Window { kind: "attack".into(), start_s, end_s: seconds_since_start(&recorder) })
        })
    };

    let traffic = Arc::new(OrderTraffic::new(Mix::ORDERS_ONLY, params.seed));
    drive_open(context, traffic, RateProfile::constant(params.rate, params.duration)).await;
    let window = attacker.await.context("the attack task failed")?;

    let samples = context.recorder.snapshot();
    let windows: Vec<Window> = window.into_iter().collect();
    let (inside, outside) = summary::inside_outside(&samples, &windows, "attack");
    let ratio = if outside.p99_ms > 0.0 { inside.p99_ms / outside.p99_ms } else { 0.0 };
    let unexpected = tally.get("malformed: unexpected answers");

    let mut findings =
        Findings { model: format!("open, {} rps", params.rate), common_thresholds: true, ..Findings::default() };
    findings.details.insert("attack s".into(), json!(attack_for.as_secs_f64()));
    findings.details.insert("hostile clients".into(), json!(tally.snapshot()));
    findings.details.insert("requests during the attack".into(), json!(inside.count));
    findings.details.insert("p99 during the attack ms".into(), json!(inside.p99_ms));
    findings.details.insert("p99 outside the attack ms".into(), json!(outside.p99_ms));
    findings.details.insert("p99 ratio".into(), json!((ratio * 100.0).round() / 100.0));
    findings.checks.push(thresholds::at_least("attack windows", windows.len() as f64, 1.0, ""));
    findings.checks.push(thresholds::at_least("requests during the attack", inside.count as f64, 1.0, ""));
    findings.checks.push(thresholds::at_most("p99 during the attack / outside it", ratio, MAX_P99_RATIO, "×"));
    findings.checks.push(thresholds::at_most("malformed requests answered otherwise", unexpected as f64, 0.0, ""));
    findings.windows = windows;
    Ok(findings)
}

/// `host:port` of a loopback base URL such as `http://127.0.0.1:8080`.
fn socket_address(base_url: &str) -> anyhow::Result<SocketAddr> {
    let authority = base_url.strip_prefix("http://").context("hostile needs an http:// target")?;
    let authority = authority.split('/').next().unwrap_or(authority);
    authority.parse().with_context(|| format!("hostile needs an IP:port target, not {authority:?}"))
}

/// What became of a connection the client kept sending on.
enum Fate {
    Answered(u16),
    Closed,
    /// The attack ended first.
    Outlasted,
}

/// Sends one byte of `byte` each [`TRICKLE_INTERVAL`] until the host
/// answers or closes, or the attack ends.
async fn trickle(attack: &Attack, stream: &mut TcpStream, byte: u8) -> Fate {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if !attack.running() {
            return Fate::Outlasted;
        }
        match tokio::time::timeout(TRICKLE_INTERVAL, stream.read(&mut chunk)).await {
            Err(_) => {
                if stream.write_all(&[byte]).await.is_err() {
                    return Fate::Closed;
                }
            }
            Ok(Ok(0)) | Ok(Err(_)) => return status_of(&answer).map_or(Fate::Closed, Fate::Answered),
            Ok(Ok(n)) => {
                answer.extend_from_slice(&chunk[..n]);
                if let Some(status) = status_of(&answer) {
                    return Fate::Answered(status);
                }
            }
        }
    }
}

fn record(attack: &Attack, kind: &str, fate: Fate) {
    match fate {
        Fate::Answered(status) => attack.tally.add(format!("{kind}: answered {status}")),
        Fate::Closed => attack.tally.add(format!("{kind}: closed by the host")),
        Fate::Outlasted => attack.tally.add(format!("{kind}: open at the end")),
    }
}

async fn slow_headers(attack: Attack) {
    while attack.running() {
        let Some(mut stream) = attack.connect("slow headers").await else { continue };
        if stream.write_all(b"GET /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\nx-slow: ").await.is_err() {
            record(&attack, "slow headers", Fate::Closed);
            continue;
        }
        let fate = trickle(&attack, &mut stream, b'a').await;
        record(&attack, "slow headers", fate);
    }
}

async fn slow_body(attack: Attack) {
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: loadtest\r\ncontent-type: application/json\r\ncontent-length: {SLOW_BODY_LENGTH}\r\n\r\n"
    );
    while attack.running() {
        let Some(mut stream) = attack.connect("slow bodies").await else { continue };
        if stream.write_all(head.as_bytes()).await.is_err() {
            record(&attack, "slow bodies", Fate::Closed);
            continue;
        }
        let fate = trickle(&attack, &mut stream, b' ').await;
        record(&attack, "slow bodies", fate);
    }
}

async fn idle(attack: Attack) {
    while attack.running() {
        let Some(mut stream) = attack.connect("idle").await else { continue };
        let mut chunk = [0u8; 64];
        let fate = loop {
            if !attack.running() {
                break Fate::Outlasted;
            }
            match tokio::time::timeout(TRICKLE_INTERVAL, stream.read(&mut chunk)).await {
                Err(_) => {}
                Ok(Ok(0)) | Ok(Err(_)) => break Fate::Closed,
                Ok(Ok(n)) => break status_of(&chunk[..n]).map_or(Fate::Closed, Fate::Answered),
            }
        };
        record(&attack, "idle", fate);
    }
}

async fn malformed(attack: Attack) {
    let requests = malformed_requests();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / MALFORMED_PER_SECOND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for request in requests.iter().cycle() {
        tick.tick().await;
        if !attack.running() {
            return;
        }
        let Some(mut stream) = attack.connect("malformed").await else { continue };
        // The host may close before the whole request is written (a flood).
        let _ = stream.write_all(&request.request).await;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        while status_of(&answer).is_none() {
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let status = status_of(&answer);
        attack.tally.add(format!(
            "malformed: {} → {}",
            request.name,
            status.map_or("no answer".into(), |s| s.to_string())
        ));
        if status != Some(request.status) {
            attack.tally.add("malformed: unexpected answers");
        }
    }
}

async fn leavers(attack: Attack) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / LEAVERS_PER_SECOND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while attack.running() {
        tick.tick().await;
        let Some(mut stream) = attack.connect("leavers").await else { continue };
        let _ = stream.write_all(b"GET /orders/ord_1 HTTP/1.1\r\nhost: loadtest\r\n\r\n").await;
        drop(stream);
    }
}

/// The status of a response whose status line has arrived.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line_end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&answer[..line_end]).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), Some(431));
        assert_eq!(status_of(b"HTTP/1.1 408 Req"), None, "not a whole line yet");
        assert_eq!(status_of(b"garbage\r\n"), None);
    }

    #[test]
    fn targets_are_socket_addresses() {
        assert_eq!(socket_address("http://127.0.0.1:8080").ok(), Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
        assert!(socket_address("https://127.0.0.1:8080").is_err());
        assert!(socket_address("http://localhost:8080").is_err());
    }

    #[test]
    fn each_malformed_request_names_its_answer() {
        let requests = malformed_requests();
        assert!(requests.iter().all(|r| [400, 431].contains(&r.status)));
        let smuggling = &requests[0];
        let text = String::from_utf8_lossy(&smuggling.request);
        let declared: usize =
            text.split("content-length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        assert_eq!(declared, text.split_once("\r\n\r\n").unwrap().1.len(), "the length covers the smuggled request");
    }
}
