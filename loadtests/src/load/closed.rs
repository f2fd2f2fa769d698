//! The closed model: N virtual users, each sending its next request only
//! after the previous one answered (plus an optional think time). Throughput
//! is whatever the server sustains; latency is measured from each request's
//! actual start. Used to warm a host up and to ask "how much can N clients
//! push", not to prove tail latency — that is the open model's job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{Recorder, StopFlag, Target, Workload};

/// Bounds of one closed-model run.
#[derive(Debug, Clone)]
pub struct ClosedConfig {
    pub users: usize,
    pub duration: Duration,
    /// Hard bound on requests across all users.
    pub max_requests: u64,
    /// Pause between a user's answer and its next request.
    pub think_time: Duration,
}

/// Runs `config.users` users until the duration, the request bound or
/// `stop` ends the run; returns the number of requests sent.
pub async fn run_closed(
    target: Arc<Target>,
    workload: Arc<dyn Workload>,
    recorder: Arc<Recorder>,
    config: ClosedConfig,
    stop: StopFlag,
) -> u64 {
    let deadline = Instant::now() + config.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let mut users = JoinSet::new();
    for _ in 0..config.users.max(1) {
        let (target, workload, recorder) = (Arc::clone(&target), Arc::clone(&workload), Arc::clone(&recorder));
        let (sent, stop) = (Arc::clone(&sent), stop.clone());
        let (max_requests, think_time) = (config.max_requests, config.think_time);
        users.spawn(async move {
            while Instant::now() < deadline && !stop.is_stopped() {
                if sent.fetch_add(1, Ordering::SeqCst) >= max_requests {
                    break;
                }
                let spec = workload.next_request();
                target.send(&spec, workload.as_ref(), &recorder, Instant::now()).await;
                if !think_time.is_zero() {
                    tokio::time::sleep(think_time).await;
                }
            }
        });
    }
    while users.join_next().await.is_some() {}
    sent.load(Ordering::SeqCst).min(config.max_requests)
}
