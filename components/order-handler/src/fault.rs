//! Deliberate faults, compiled in only by a `fault-*` feature, so the load
//! test of progressive delivery can deploy real broken builds of this very
//! component (`components/build.sh --faults`). A normal build has none of
//! this code. Each fault acts before any store access, so a slow build does
//! not hold the database's write lock while it dawdles.
//!
//! - `fault-trap`: every request traps.
//! - `fault-trap-tenth`: one request in ten traps, chosen by a hash of its
//!   `Idempotency-Key` (of its path and body without one), so a retry of a
//!   request meets the same fate.
//! - `fault-fuel`: about eight times the fuel of a normal order, and no
//!   latency a client would notice.
//! - `fault-slow`: 2,000 more database reads per request, some 12 ms. The
//!   time goes to the host (fuel counts only the guest's own work, bulk
//!   memory operations by the byte, so it barely rises) and to the
//!   database's write lock, which both versions share: on SQLite such a
//!   build slows the stable version too. Computing more instead would show
//!   as fuel first.

#[cfg(feature = "fault-fuel")]
use core::hint::black_box;

use crate::switchyard::platform::types::Request;

/// Loop turns of `fault-fuel`: a normal order costs about 55k fuel, each
/// turn about 21.
#[cfg(feature = "fault-fuel")]
const FUEL_TURNS: u64 = 18_000;

/// `fault-slow`: reads of one key before the request is handled.
#[cfg(feature = "fault-slow")]
const SLOW_READS: usize = 2_000;

/// Runs the fault of this build before the request is handled. A build
/// enables one fault: two define `inject` twice and do not compile.
#[cfg(feature = "fault-trap")]
pub fn inject(_request: &Request) {
    trap();
}

#[cfg(feature = "fault-trap-tenth")]
pub fn inject(request: &Request) {
    if fingerprint(request).is_multiple_of(10) {
        trap();
    }
}

#[cfg(feature = "fault-fuel")]
pub fn inject(_request: &Request) {
    let mut acc: u64 = 0;
    for turn in 0..black_box(FUEL_TURNS) {
        acc = black_box(acc.wrapping_mul(31).wrapping_add(turn));
    }
    black_box(acc);
}

#[cfg(feature = "fault-slow")]
pub fn inject(_request: &Request) {
    // Errors are the handler's to meet and report; here they only cut the
    // delay short.
    let Ok(bucket) = crate::wasi::keyvalue::store::open("orders") else { return };
    for _ in 0..SLOW_READS {
        if bucket.exists(crate::store::ORDER_SEQUENCE).is_err() {
            return;
        }
    }
}

#[cfg(any(feature = "fault-trap", feature = "fault-trap-tenth"))]
fn trap() -> ! {
    // On wasm an abort is the `unreachable` instruction: a trap.
    std::process::abort()
}

/// FNV-1a of what identifies the request: stable across retries.
#[cfg(feature = "fault-trap-tenth")]
fn fingerprint(request: &Request) -> u64 {
    let key = request.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"));
    let parts: [&[u8]; 2] = match key {
        Some((_, value)) => [value.as_bytes(), b""],
        None => [request.path.as_bytes(), &request.body],
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
