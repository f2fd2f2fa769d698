//! Bounded admission per component: at most `max_concurrency` invocations
//! run at once, at most `max_queue` more wait, and anything beyond is
//! refused at once.
//!
//! Refusing early is the point: an unbounded queue turns overload into
//! ever-growing latency and memory, and waiting for a pool slot would turn
//! it into pooling-allocator errors. A refused caller gets 503 with
//! `Retry-After` and can go elsewhere or back off. A queued request waits at
//! most `queue_timeout` — past that, its caller has likely given up anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted; also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot busy and the queue full.
    QueueFull,
    /// Waited in the queue for `queue_timeout` without getting a slot.
    QueueTimeout,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::QueueTimeout => "queue_timeout",
        }
    }
}

/// One component's gate.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_concurrency: usize,
    max_queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
    /// Highest queue depth seen; shows the bound held.
    deepest: AtomicUsize,
}

/// A running invocation's slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(max_concurrency: usize, max_queue: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            max_concurrency,
            max_queue,
            queue_timeout,
            waiting: AtomicUsize::new(0),
            deepest: AtomicUsize::new(0),
        }
    }

    /// Takes a slot, queueing within bounds, or says why not.
    pub async fn admit(&self) -> Result<Slot, Refusal> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        // Reserve a queue place without ever exceeding the bound.
        let reserved = self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
            (waiting < self.max_queue).then_some(waiting + 1)
        });
        let Ok(before) = reserved else { return Err(Refusal::QueueFull) };
        self.deepest.fetch_max(before + 1, Ordering::Relaxed);
        let waited = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            // A closed semaphore never happens; treat it like a timeout.
            Ok(Err(_)) | Err(_) => Err(Refusal::QueueTimeout),
        }
    }

    /// Requests waiting for a slot now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The deepest the queue has been.
    pub fn deepest_queue(&self) -> usize {
        self.deepest.load(Ordering::Relaxed)
    }

    /// Invocations running now.
    pub fn running(&self) -> usize {
        self.max_concurrency - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_up_to_the_limit_queues_within_bounds_refuses_beyond() {
        let gate = Arc::new(Admission::new(2, 1, Duration::from_secs(60)));
        let first = gate.admit().await.expect("slot 1");
        let _second = gate.admit().await.expect("slot 2");
        assert_eq!(gate.running(), 2);

        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await.map(|_| ()) }
        });
        while gate.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.admit().await.expect_err("queue full"), Refusal::QueueFull);

        drop(first);
        assert_eq!(queued.await.expect("task"), Ok(()), "the queued request got the freed slot");
        assert_eq!(gate.deepest_queue(), 1);
        assert_eq!(gate.queue_depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_requests_give_up_after_the_timeout() {
        let gate = Admission::new(1, 4, Duration::from_millis(100));
        let _held = gate.admit().await.expect("slot");
        // Paused time: the timeout elapses without real waiting.
        assert_eq!(gate.admit().await.expect_err("timed out"), Refusal::QueueTimeout);
        assert_eq!(gate.queue_depth(), 0);
    }
}
