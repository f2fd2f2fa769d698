//! Capped exponential backoff with full jitter: the delay before attempt
//! `n + 1` is uniform in `[0, min(max, base · 2^(n-1))]`, which spreads a
//! burst of failed messages out instead of retrying them in lockstep.

/// Delay in milliseconds after `attempt` (1-based) failed.
pub fn delay_ms(attempt: u32, base_ms: u64, max_ms: u64, rng: &mut fastrand::Rng) -> u64 {
    let exponent = attempt.saturating_sub(1).min(62);
    let ceiling = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    rng.u64(0..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::delay_ms;

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (attempt, ceiling) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1_000), (40, 1_000), (200, 1_000)] {
            let delays: Vec<u64> = (0..500).map(|_| delay_ms(attempt, 100, 1_000, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: the whole range is used, not just the top.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(delays.iter().any(|d| *d > ceiling * 3 / 4), "attempt {attempt}");
        }
    }
}
