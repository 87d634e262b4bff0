//! Per-provider request pacing: a concurrency cap, a request-rate cap and a
//! "do not call before" instant set by a 429's Retry-After, shared by every
//! Integration that uses the same ClusterProvider.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Limits of one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: usize,
    pub requests_per_second: u32,
}

struct ProviderLimiter {
    limits: Limits,
    in_flight: Arc<Semaphore>,
    /// Earliest instant the next request may start (rate pacing and Retry-After).
    next_start: Mutex<Instant>,
}

/// Called with (provider, time waited) whenever a request had to wait.
type WaitObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Shared limiters, keyed by provider name.
#[derive(Clone)]
pub struct Limiter {
    providers: Arc<Mutex<HashMap<String, Arc<ProviderLimiter>>>>,
    waits: WaitObserver,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::with_wait_observer(|_, _| {})
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

/// Permission to send one request; dropping it frees the concurrency slot.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Limiter {
    /// A limiter that reports every wait it imposes to `on_wait(provider, waited)`
    /// (metrics use it).
    pub fn with_wait_observer(on_wait: impl Fn(&str, Duration) + Send + Sync + 'static) -> Self {
        Self {
            providers: Arc::default(),
            waits: Arc::new(on_wait),
        }
    }

    fn provider(&self, name: &str, limits: Limits) -> Arc<ProviderLimiter> {
        let mut map = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.get(name).filter(|l| l.limits == limits).cloned();
        entry.unwrap_or_else(|| {
            // New provider, or the admin changed its limits: start afresh.
            let fresh = Arc::new(ProviderLimiter {
                limits,
                in_flight: Arc::new(Semaphore::new(limits.max_concurrency.max(1))),
                next_start: Mutex::new(Instant::now()),
            });
            map.insert(name.to_string(), fresh.clone());
            fresh
        })
    }

    /// Waits until a request to `name` may start.
    pub async fn acquire(&self, name: &str, limits: Limits) -> Permit {
        let provider = self.provider(name, limits);
        let began = Instant::now();
        // A closed semaphore cannot happen (we never close it); fall back to a
        // fresh one rather than panicking.
        let slot = match provider.in_flight.clone().acquire_owned().await {
            Ok(slot) => slot,
            Err(_) => Arc::new(Semaphore::new(1))
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("a fresh semaphore is open")),
        };
        let start_at = {
            let mut next = provider.next_start.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start_at = (*next).max(now);
            let spacing = Duration::from_secs_f64(1.0 / f64::from(limits.requests_per_second.max(1)));
            *next = start_at + spacing;
            start_at
        };
        tokio::time::sleep_until(start_at).await;
        let waited = began.elapsed();
        if waited >= Duration::from_millis(1) {
            (self.waits)(name, waited);
        }
        Permit { _slot: slot }
    }

    /// Records a provider's Retry-After: no request to it starts before then.
    pub fn block_for(&self, name: &str, limits: Limits, delay: Duration) {
        let provider = self.provider(name, limits);
        let mut next = provider.next_start.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + delay;
        if until > *next {
            *next = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_concurrency: 2,
        requests_per_second: 10,
    };

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_rate_limit() {
        let limiter = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(limiter.acquire("p", LIMITS).await);
        }
        // Five starts at 10/s: the fifth no earlier than 400 ms after the first.
        assert!(t0.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_every_caller_of_that_provider_only() {
        let limiter = Limiter::default();
        limiter.block_for("p", LIMITS, Duration::from_secs(30));
        let t0 = Instant::now();
        drop(limiter.acquire("other", LIMITS).await);
        assert!(t0.elapsed() < Duration::from_secs(1));
        drop(limiter.acquire("p", LIMITS).await);
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped() {
        let limiter = Limiter::default();
        let limits = Limits {
            max_concurrency: 1,
            requests_per_second: 1000,
        };
        let held = limiter.acquire("p", limits).await;
        let second = tokio::time::timeout(Duration::from_secs(5), limiter.acquire("p", limits)).await;
        assert!(second.is_err(), "a second request started while the only slot was held");
        drop(held);
        let third = tokio::time::timeout(Duration::from_secs(5), limiter.acquire("p", limits)).await;
        assert!(third.is_ok());
    }
}
