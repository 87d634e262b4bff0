//! Backoff and repetition after failures: how long to wait after the n-th
//! consecutive failure of an Integration ([`retry_delay`], pure, with
//! jitter and at least the provider's Retry-After), the failure counts it
//! reads ([`Failures`]), how often the Warning Event of an ongoing failure
//! is repeated ([`Warnings`]). The watches back off on their own errors
//! (`default_backoff`); none pauses the others.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use crate::controller::{Error, IntegrationKey};

/// Retry timing after failures.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First retry after a transient failure; doubles per failure.
    pub base: Duration,
    /// Longest wait between retries.
    pub max: Duration,
    /// Wait after a failure only a person can fix (the watches also retry as
    /// soon as the Integration, its Secret or its provider changes).
    pub invalid: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
            invalid: Duration::from_secs(300),
        }
    }
}

/// Consecutive failures per Integration (for exponential backoff).
#[derive(Default)]
pub struct Failures(Mutex<HashMap<IntegrationKey, u32>>);

impl Failures {
    pub fn bump(&self, key: &IntegrationKey) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Clears the count; returns whether there had been failures.
    pub fn reset(&self, key: &IntegrationKey) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key).is_some()
    }
}

/// How often a Warning Event for the same ongoing failure is repeated.
pub const WARNING_REPEAT: Duration = Duration::from_secs(600);

/// The last Warning published per Integration, to deduplicate Events.
#[derive(Default)]
pub struct Warnings(Mutex<HashMap<IntegrationKey, (String, std::time::Instant)>>);

impl Warnings {
    /// Whether a Warning with this reason and message should be published now.
    pub fn should_publish(&self, key: &IntegrationKey, reason: &str, message: &str) -> bool {
        let fingerprint = format!("{reason}\n{message}");
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((last, at)) if *last == fingerprint && at.elapsed() < WARNING_REPEAT => false,
            _ => {
                map.insert(key.clone(), (fingerprint, std::time::Instant::now()));
                true
            }
        }
    }

    /// The failure is over: the next one is news again.
    pub fn clear(&self, key: &IntegrationKey) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Backoff for the n-th consecutive failure (pure).
pub fn retry_delay(err: &Error, failures: u32, policy: &RetryPolicy, seed: &str) -> Duration {
    let base = if err.is_transient() {
        let exp = policy
            .base
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)));
        exp.min(policy.max)
    } else {
        policy.invalid
    };
    // Up to +20% jitter, so Integrations that failed together retry apart.
    let jitter = base.mul_f64(0.2 * fraction(seed, failures));
    (base + jitter).max(err.retry_after().unwrap_or_default())
}

fn fraction(seed: &str, n: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}
