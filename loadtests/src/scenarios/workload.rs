//! The reference app's traffic: orders, reads of orders and inventory
//! updates, in proportions a scenario chooses. Stock is seeded so that most
//! orders succeed, one "hot" sku sells out and is restocked by the inventory
//! updates (the contention that yields 409s), and a small share of requests
//! name skus or orders that do not exist (404s) — so every answer the API
//! can give shows up, and each is reported on its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use reqwest::Method;
use serde_json::json;

use crate::load::{RequestSpec, Target, Workload};

pub const ORDERS: &str = "POST /orders";
pub const READS: &str = "GET /orders/{id}";
pub const INVENTORY: &str = "PUT /inventory/{sku}";

/// Skus with stock that never runs out during a run.
const PLENTIFUL: [&str; 8] =
    ["lt-anvil", "lt-bolt", "lt-cog", "lt-drill", "lt-flange", "lt-gear", "lt-hinge", "lt-lever"];
const PLENTIFUL_STOCK: u64 = 1_000_000_000;
/// The contended sku: little stock, restocked now and then.
const HOT: &str = "lt-hot";
/// Restocks are small and rare next to the hot sku's orders, so it is sold
/// out about half the time.
const HOT_STOCK: u64 = 5;
/// Share (%) of inventory updates that restock the hot sku.
const HOT_RESTOCK_PERCENT: u32 = 5;
/// Order ids kept for reads; old ones are as good as new ones.
const KEPT_IDS: usize = 4096;

/// Relative weights of the three request kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub orders: u32,
    pub reads: u32,
    pub inventory: u32,
}

impl Mix {
    /// Only `POST /orders`: the write path, with its three outbox messages.
    pub const ORDERS_ONLY: Mix = Mix { orders: 100, reads: 0, inventory: 0 };
    /// A shop's day: mostly reads, a third orders, some restocking.
    pub const REALISTIC: Mix = Mix { orders: 35, reads: 55, inventory: 10 };
}

/// Generates requests of a [`Mix`] and remembers created order ids.
#[derive(Debug)]
pub struct OrderTraffic {
    mix: Mix,
    rng: Mutex<fastrand::Rng>,
    created: Mutex<VecDeque<String>>,
    sequence: AtomicU64,
    /// Distinguishes this run's idempotency keys from any earlier run's
    /// against the same host.
    run_id: String,
}

impl OrderTraffic {
    pub fn new(mix: Mix, seed: u64) -> OrderTraffic {
        OrderTraffic {
            mix,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            created: Mutex::new(VecDeque::new()),
            sequence: AtomicU64::new(0),
            run_id: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    fn order(&self, rng: &mut fastrand::Rng) -> RequestSpec {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let roll = rng.u32(0..100);
        // 4% unknown sku (404), 16% the hot sku (409 once sold out).
        let (sku, qty) = if roll < 4 {
            (format!("lt-missing-{}", rng.u32(0..1000)), 1)
        } else if roll < 20 {
            (HOT.to_owned(), 1)
        } else {
            (PLENTIFUL[rng.usize(0..PLENTIFUL.len())].to_owned(), rng.u32(1..4))
        };
        let body = json!({
            "customer": format!("Load Tester {n}"),
            "email": format!("load{n}@example.com"),
            "phone": "+44 20 7946 0000",
            "items": [{ "sku": sku, "qty": qty }],
        });
        RequestSpec {
            endpoint: ORDERS,
            method: Method::POST,
            path: "/orders".into(),
            body: Some(body.to_string()),
            idempotency_key: Some(format!("lt-{}-{n}", self.run_id)),
        }
    }

    fn read(&self, rng: &mut fastrand::Rng) -> RequestSpec {
        let known = {
            let created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
            if created.is_empty() || rng.u32(0..100) < 5 {
                None
            } else {
                created.get(rng.usize(0..created.len())).cloned()
            }
        };
        let id = known.unwrap_or_else(|| format!("ord_missing_{}", rng.u32(0..1_000_000)));
        RequestSpec {
            endpoint: READS,
            method: Method::GET,
            path: format!("/orders/{id}"),
            body: None,
            idempotency_key: None,
        }
    }

    fn restock(&self, rng: &mut fastrand::Rng) -> RequestSpec {
        let (sku, stock) = if rng.u32(0..100) < HOT_RESTOCK_PERCENT {
            (HOT, HOT_STOCK)
        } else {
            (PLENTIFUL[rng.usize(0..PLENTIFUL.len())], PLENTIFUL_STOCK)
        };
        inventory_request(sku, stock)
    }
}

impl Workload for OrderTraffic {
    fn next_request(&self) -> RequestSpec {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let total = (self.mix.orders + self.mix.reads + self.mix.inventory).max(1);
        let roll = rng.u32(0..total);
        if roll < self.mix.orders {
            self.order(&mut rng)
        } else if roll < self.mix.orders + self.mix.reads {
            self.read(&mut rng)
        } else {
            self.restock(&mut rng)
        }
    }

    fn observe(&self, spec: &RequestSpec, status: u16, body: &[u8]) {
        if spec.endpoint != ORDERS || status != 201 {
            return;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        if let Some(id) = value.get("id").and_then(|id| id.as_str()) {
            let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
            if created.len() >= KEPT_IDS {
                created.pop_front();
            }
            created.push_back(id.to_owned());
        }
    }
}

fn inventory_request(sku: &str, stock: u64) -> RequestSpec {
    RequestSpec {
        endpoint: INVENTORY,
        method: Method::PUT,
        path: format!("/inventory/{sku}"),
        body: Some(json!({ "stock": stock, "price_cents": 250 }).to_string()),
        idempotency_key: None,
    }
}

/// Stocks every sku the traffic orders, before the load starts (not recorded).
pub async fn seed_inventory(target: &Target) -> anyhow::Result<()> {
    let skus = PLENTIFUL.iter().map(|sku| (*sku, PLENTIFUL_STOCK)).chain([(HOT, HOT_STOCK)]);
    for (sku, stock) in skus {
        let spec = inventory_request(sku, stock);
        let response = target
            .client
            .put(format!("{}{}", target.base_url, spec.path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(spec.body.unwrap_or_default())
            .send()
            .await
            .with_context(|| format!("cannot stock {sku}"))?;
        anyhow::ensure!(response.status().is_success(), "stocking {sku} answered {}", response.status());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_mix_follows_its_weights() {
        let traffic = OrderTraffic::new(Mix::REALISTIC, 7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            *counts.entry(traffic.next_request().endpoint).or_insert(0) += 1;
        }
        assert!((3200..3800).contains(&counts[ORDERS]), "{counts:?}");
        assert!((5200..5800).contains(&counts[READS]), "{counts:?}");
        assert!((800..1200).contains(&counts[INVENTORY]), "{counts:?}");
    }

    #[test]
    fn reads_target_orders_that_were_created() {
        let traffic = OrderTraffic::new(Mix { orders: 0, reads: 1, inventory: 0 }, 1);
        let order = OrderTraffic::new(Mix::ORDERS_ONLY, 1).next_request();
        traffic.observe(&order, 201, br#"{"id":"ord_42","total_cents":250}"#);
        let paths: Vec<String> = (0..100).map(|_| traffic.next_request().path).collect();
        assert!(paths.iter().filter(|p| *p == "/orders/ord_42").count() > 80, "{paths:?}");
        assert!(paths.iter().all(|p| p.starts_with("/orders/")));
    }

    #[test]
    fn every_order_has_its_own_idempotency_key_and_a_valid_body() {
        let traffic = OrderTraffic::new(Mix::ORDERS_ONLY, 3);
        let (a, b) = (traffic.next_request(), traffic.next_request());
        assert_ne!(a.idempotency_key, b.idempotency_key);
        let body: serde_json::Value = serde_json::from_str(a.body.as_deref().unwrap()).unwrap();
        assert!(body["email"].as_str().unwrap().contains('@'));
        assert!(body["items"][0]["qty"].as_u64().unwrap() >= 1);
    }
}
