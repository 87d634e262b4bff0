//! Per-provider request pacing: a concurrency cap and a request-rate cap,
//! shared by every Integration that uses the same ClusterProvider; and a
//! "do not call before" instant set by a 429's Retry-After for what the
//! provider limits — a host (every request to it, whichever ClusterProvider
//! sends it) or one credential at a host — which holds every request in
//! that scope however long it has been queued, without a concurrency slot.
//!
//! Requests have a [`Priority`]: while an urgent request (a new Integration, a
//! changed spec or input, a repair) waits for a slot, no routine renewal takes
//! one, so new work never queues behind a refresh wave. Renewals are due
//! well before expiry, so the wait costs them nothing a user sees.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// How urgent a provider request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Someone is waiting for it: a first issue, a change, a repair.
    Urgent,
    /// A scheduled renewal or re-validation.
    Routine,
}

/// Limits of one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: usize,
    pub requests_per_second: u32,
}

struct ProviderLimiter {
    limits: Limits,
    slots: Arc<Slots>,
    /// Earliest instant the next request may start (rate pacing and Retry-After).
    next_start: Mutex<Instant>,
}

/// Concurrency slots handed out urgent-first.
struct Slots {
    state: Mutex<SlotState>,
    urgent: Notify,
    routine: Notify,
}

struct SlotState {
    free: usize,
    urgent_waiting: usize,
}

impl Slots {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState {
                free: n,
                urgent_waiting: 0,
            }),
            urgent: Notify::new(),
            routine: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn acquire(self: &Arc<Self>, priority: Priority) -> Slot {
        let urgent = priority == Priority::Urgent;
        let waiting = UrgentWaiting::new(self.clone(), urgent);
        let notify = if urgent { &self.urgent } else { &self.routine };
        loop {
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut state = self.lock();
                if state.free > 0 && (urgent || state.urgent_waiting == 0) {
                    state.free -= 1;
                    drop(state);
                    drop(waiting);
                    return Slot(self.clone());
                }
            }
            // The timeout is a safety net only: a waiter that was woken and
            // then cancelled must not strand a free slot.
            let _ = tokio::time::timeout(Duration::from_millis(250), woken).await;
        }
    }

    fn release(&self) {
        let urgent_waiting = {
            let mut state = self.lock();
            state.free += 1;
            state.urgent_waiting
        };
        self.wake(urgent_waiting);
    }

    fn wake(&self, urgent_waiting: usize) {
        if urgent_waiting > 0 {
            self.urgent.notify_one();
        } else {
            self.routine.notify_one();
        }
    }
}

/// Counts an urgent waiter for as long as it waits (also when cancelled).
struct UrgentWaiting {
    slots: Arc<Slots>,
    urgent: bool,
}

impl UrgentWaiting {
    fn new(slots: Arc<Slots>, urgent: bool) -> Self {
        if urgent {
            slots.lock().urgent_waiting += 1;
        }
        Self { slots, urgent }
    }
}

impl Drop for UrgentWaiting {
    fn drop(&mut self) {
        if self.urgent {
            let (left, free) = {
                let mut state = self.slots.lock();
                state.urgent_waiting -= 1;
                (state.urgent_waiting, state.free)
            };
            if left == 0 && free > 0 {
                // Routine work held back for this one may go now.
                self.slots.wake(0);
            }
        }
    }
}

/// One concurrency slot; freed on drop.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Called with (provider, time waited) whenever a request had to wait.
type WaitObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Shared limiters, keyed by provider name.
#[derive(Clone)]
pub struct Limiter {
    providers: Arc<Mutex<HashMap<String, Arc<ProviderLimiter>>>>,
    /// Retry-After per host (`host[:port]`): a host that asked us to wait
    /// gets no request from any ClusterProvider until then.
    blocked_hosts: Arc<Mutex<HashMap<String, Instant>>>,
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
    _slot: Slot,
}

impl Limiter {
    /// A limiter that reports every wait it imposes to `on_wait(provider, waited)`
    /// (metrics use it).
    pub fn with_wait_observer(on_wait: impl Fn(&str, Duration) + Send + Sync + 'static) -> Self {
        Self {
            providers: Arc::default(),
            blocked_hosts: Arc::default(),
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
                slots: Slots::new(limits.max_concurrency.max(1)),
                next_start: Mutex::new(Instant::now()),
            });
            map.insert(name.to_string(), fresh.clone());
            fresh
        })
    }

    fn blocked_until(&self, host: &str) -> Option<Instant> {
        let mut hosts = self.blocked_hosts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Forget what has elapsed, so the map holds only hosts still waited on.
        hosts.retain(|_, until| *until > now);
        hosts.get(host).copied()
    }

    /// Waits until a request from ClusterProvider `name` may start. `scope`
    /// is what a Retry-After applies to: a host, or a host and credential
    /// (see [`Limiter::block_for`]).
    pub async fn acquire(&self, name: &str, scope: &str, limits: Limits, priority: Priority) -> Permit {
        let provider = self.provider(name, limits);
        let began = Instant::now();
        loop {
            // A held-back request waits without a slot: one tenant's
            // Retry-After must not take the slots everyone else needs.
            while let Some(until) = self.blocked_until(scope) {
                tokio::time::sleep_until(until).await;
            }
            let slot = provider.slots.acquire(priority).await;
            let start_at = {
                let mut next = provider.next_start.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let start_at = (*next).max(now);
                let spacing = Duration::from_secs_f64(1.0 / f64::from(limits.requests_per_second.max(1)));
                *next = start_at + spacing;
                start_at
            };
            tokio::time::sleep_until(start_at).await;
            // Checked again after the pacing wait: a 429 that arrived while
            // this request was queued still holds it (without its slot).
            if self.blocked_until(scope).is_some() {
                drop(slot);
                continue;
            }
            let waited = began.elapsed();
            if waited >= Duration::from_millis(1) {
                (self.waits)(name, waited);
            }
            return Permit { _slot: slot };
        }
    }

    /// Whether a routine request to ClusterProvider `name` would have to
    /// wait for a slot now (all taken, or urgent requests waiting). The
    /// controller then defers the renewal instead of holding one of its own
    /// reconcile slots while it waits.
    pub fn routine_would_wait(&self, name: &str) -> bool {
        let providers = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        providers.get(name).is_some_and(|p| {
            let state = p.slots.lock();
            state.free == 0 || state.urgent_waiting > 0
        })
    }

    /// Records a Retry-After for `scope` (a host, or a host and credential):
    /// no request in that scope starts before then.
    pub fn block_for(&self, scope: &str, delay: Duration) {
        let until = Instant::now() + delay;
        let mut hosts = self.blocked_hosts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = hosts.entry(scope.to_string()).or_insert(until);
        if until > *entry {
            *entry = until;
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
            drop(limiter.acquire("p", "h", LIMITS, Priority::Urgent).await);
        }
        // Five starts at 10/s: the fifth no earlier than 400 ms after the first.
        assert!(t0.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_every_caller_of_that_host_only() {
        let limiter = Limiter::default();
        limiter.block_for("h", Duration::from_secs(30));
        let t0 = Instant::now();
        drop(limiter.acquire("p", "other-host", LIMITS, Priority::Urgent).await);
        assert!(t0.elapsed() < Duration::from_secs(1));
        // Another ClusterProvider pointing at the same host waits too.
        drop(limiter.acquire("q", "h", LIMITS, Priority::Urgent).await);
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_queued_before_the_429_still_waits_for_retry_after() {
        let limiter = Limiter::default();
        // 1 request per second: the third is paced to start at t0 + 2 s.
        let slow = Limits {
            max_concurrency: 4,
            requests_per_second: 1,
        };
        let t0 = Instant::now();
        drop(limiter.acquire("p", "h", slow, Priority::Urgent).await);
        drop(limiter.acquire("p", "h", slow, Priority::Urgent).await);
        let queued = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                drop(limiter.acquire("p", "h", slow, Priority::Urgent).await);
                Instant::now()
            }
        });
        // t0 + 1.5 s: the host answers 429 with Retry-After 10 s while the
        // third waits for its paced start.
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.block_for("h", Duration::from_secs(10));
        let started = queued.await.unwrap();
        assert!(started.duration_since(t0) >= Duration::from_millis(11_500));
    }

    /// One tenant's 429 storm: its own requests wait for the Retry-After,
    /// holding no slot, so another credential's request at the same host
    /// with the only slot starts at once.
    #[tokio::test(start_paused = true)]
    async fn a_blocked_credential_holds_no_slot_and_delays_no_other_credential() {
        let limiter = Limiter::default();
        let one = Limits {
            max_concurrency: 1,
            requests_per_second: 1000,
        };
        limiter.block_for("h busy", Duration::from_secs(60));
        let t0 = Instant::now();
        let mut busy = Vec::new();
        for _ in 0..20 {
            let limiter = limiter.clone();
            busy.push(tokio::spawn(async move {
                drop(limiter.acquire("p", "h busy", one, Priority::Urgent).await);
                Instant::now()
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(limiter.acquire("p", "h calm", one, Priority::Urgent).await);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the other tenant waited {:?}",
            t0.elapsed()
        );
        for b in busy {
            assert!(b.await.unwrap().duration_since(t0) >= Duration::from_secs(60));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn routine_work_is_told_to_wait_while_the_provider_is_busy() {
        let limiter = Limiter::default();
        let one = Limits {
            max_concurrency: 1,
            requests_per_second: 1000,
        };
        assert!(!limiter.routine_would_wait("p"), "an unused provider is free");
        let held = limiter.acquire("p", "h", one, Priority::Urgent).await;
        assert!(limiter.routine_would_wait("p"));
        assert!(!limiter.routine_would_wait("q"));
        drop(held);
        assert!(!limiter.routine_would_wait("p"));
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_requests_go_ahead_of_waiting_renewals() {
        let limiter = Limiter::default();
        let limits = Limits {
            max_concurrency: 1,
            requests_per_second: 1000,
        };
        let held = limiter.acquire("p", "h", limits, Priority::Urgent).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (name, priority) in [
            ("renewal-1", Priority::Routine),
            ("renewal-2", Priority::Routine),
            ("new", Priority::Urgent),
        ] {
            let (limiter, order) = (limiter.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let permit = limiter.acquire("p", "h", limits, priority).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        for w in waiting {
            w.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order[0], "new", "the new Integration waited behind renewals: {order:?}");
        assert_eq!(order.len(), 3, "every renewal still ran: {order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped() {
        let limiter = Limiter::default();
        let limits = Limits {
            max_concurrency: 1,
            requests_per_second: 1000,
        };
        let held = limiter.acquire("p", "h", limits, Priority::Urgent).await;
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            limiter.acquire("p", "h", limits, Priority::Urgent),
        )
        .await;
        assert!(second.is_err(), "a second request started while the only slot was held");
        drop(held);
        let third = tokio::time::timeout(
            Duration::from_secs(5),
            limiter.acquire("p", "h", limits, Priority::Urgent),
        )
        .await;
        assert!(third.is_ok());
    }
}
