//! Runs reconciles: each Integration a trigger names, once the cache is
//! ready, at most `concurrency` at once and never two of one Integration at
//! once; a trigger for an Integration in flight waits for it to end, and
//! repeated triggers of one waiting Integration run it once.
//!
//! kube-runtime's `Controller` does this around its own reflector store,
//! whose entries cost three times the compact cache's (see [`super::cache`]);
//! its scheduler, which deduplicates and holds, is used here as it is.

use std::{collections::HashSet, future::Future, pin::pin, sync::Arc, task::Poll, time::Duration};

use futures::{
    Stream, StreamExt,
    future::{FutureExt, poll_fn},
    stream::{self, FuturesUnordered},
};
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use tokio::time::Instant;
use tracing::debug;

use super::{cache::IntegrationCache, cached::CachedIntegration, key::IntegrationKey};

/// The longest retry delay the scheduler is given (its delay queue refuses
/// times two years away).
const LONGEST_RETRY: Duration = Duration::from_secs(180 * 24 * 3600);

enum Step {
    Due(IntegrationKey),
    Finished(IntegrationKey, Option<Duration>),
    Stop,
    Stopped,
}

/// Runs until `shutdown` resolves and the reconciles in flight have ended.
/// `reconcile` returns when to run that Integration again after a failure
/// (its next routine look is the timetable's, a trigger like any other).
pub async fn run<F, Fut>(
    cache: IntegrationCache,
    triggers: impl Stream<Item = IntegrationKey>,
    concurrency: usize,
    mut reconcile: F,
    shutdown: impl Future<Output = ()>,
) where
    F: FnMut(IntegrationKey, Arc<CachedIntegration>) -> Fut,
    Fut: Future<Output = Option<Duration>>,
{
    let (retry_tx, retry_rx) = futures::channel::mpsc::unbounded();
    let requests = stream::select(
        triggers.map(|key| ScheduleRequest {
            message: key,
            run_at: Instant::now(),
        }),
        retry_rx,
    );
    let mut scheduler = pin!(scheduler(requests));
    let mut running = FuturesUnordered::new();
    let mut in_flight: HashSet<IntegrationKey> = HashSet::new();
    let mut shutdown = pin!(shutdown.fuse());
    let mut ready = pin!(cache.wait_until_ready().fuse());
    let (mut is_ready, mut stopping) = (false, false);
    let concurrency = concurrency.max(1);
    loop {
        let step = poll_fn(|cx| {
            if !stopping && shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Stop);
            }
            if let Poll::Ready(Some((key, retry))) = running.poll_next_unpin(cx) {
                return Poll::Ready(Step::Finished(key, retry));
            }
            if stopping {
                return if running.is_empty() {
                    Poll::Ready(Step::Stopped)
                } else {
                    Poll::Pending
                };
            }
            if !is_ready && ready.as_mut().poll(cx).is_ready() {
                is_ready = true;
            }
            if !is_ready || running.len() >= concurrency {
                // Keep taking triggers (they are deduplicated in the
                // scheduler) so that the watches feeding them never stall.
                let _ = scheduler.as_mut().hold().poll_next_unpin(cx);
                return Poll::Pending;
            }
            match scheduler
                .as_mut()
                .hold_unless(|key| !in_flight.contains(key))
                .poll_next_unpin(cx)
            {
                Poll::Ready(Some(key)) => Poll::Ready(Step::Due(key)),
                // The triggers ended: nothing more will ever be due.
                Poll::Ready(None) => Poll::Ready(Step::Stop),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Due(key) => match cache.get(&key) {
                Some((key, integration)) => {
                    in_flight.insert(key.clone());
                    running.push(reconcile(key.clone(), integration).map(move |retry| (key, retry)));
                }
                None => debug!(%key, "gone before its reconcile"),
            },
            Step::Finished(key, retry) => {
                in_flight.remove(&key);
                if let Some(after) = retry {
                    let _ = retry_tx.unbounded_send(ScheduleRequest {
                        message: key,
                        run_at: Instant::now() + after.min(LONGEST_RETRY),
                    });
                }
            }
            Step::Stop => stopping = true,
            Step::Stopped => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::runtime::watcher::Event;

    use super::*;
    use crate::crd::Integration;

    fn integration(name: &str) -> Integration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
            "metadata": {"name": name, "namespace": "ns", "uid": name, "generation": 1, "resourceVersion": "1"},
            "spec": {"provider": "p", "secretRef": {"name": "creds"}, "clientCredentials": {}},
        }))
        .unwrap()
    }

    fn filled(names: &[&str]) -> IntegrationCache {
        let cache = IntegrationCache::default();
        cache.apply(Event::Init);
        for name in names {
            cache.apply(Event::InitApply(integration(name)));
        }
        cache.apply(Event::InitDone);
        cache
    }

    /// A runner on `cache` in the background, fed by `triggers`.
    struct Started {
        triggers: futures::channel::mpsc::UnboundedSender<IntegrationKey>,
        stop: tokio::sync::oneshot::Sender<()>,
        runner: tokio::task::JoinHandle<()>,
    }

    impl Started {
        fn new<F, Fut>(cache: IntegrationCache, concurrency: usize, reconcile: F) -> Self
        where
            F: FnMut(IntegrationKey, Arc<CachedIntegration>) -> Fut + Send + 'static,
            Fut: Future<Output = Option<Duration>> + Send + 'static,
        {
            let (triggers, rx) = futures::channel::mpsc::unbounded();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let runner = tokio::spawn(run(cache, rx, concurrency, reconcile, async {
                let _ = stopped.await;
            }));
            Self { triggers, stop, runner }
        }

        fn trigger(&self, key: IntegrationKey) {
            self.triggers.unbounded_send(key).unwrap();
        }

        /// Stops the runner and waits for it to end.
        async fn stop(self) {
            let _ = self.stop.send(());
            self.runner.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_integration_never_runs_twice_at_once_and_waiting_triggers_run_it_once_more() {
        let cache = filled(&["a", "b"]);
        let a = IntegrationKey::new("ns", "a");
        let log = Arc::new(Mutex::new(Vec::new()));
        let started = Started::new(cache, 8, {
            let log = log.clone();
            move |key: IntegrationKey, _| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(format!("start {key}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    log.lock().unwrap().push(format!("end {key}"));
                    None
                }
            }
        });
        started.trigger(a.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Three more triggers while it runs, and one for an Integration
        // that is not in the cache.
        for _ in 0..3 {
            started.trigger(a.clone());
        }
        started.trigger(IntegrationKey::new("ns", "gone"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        started.stop().await;
        assert_eq!(
            *log.lock().unwrap(),
            ["start ns/a", "end ns/a", "start ns/a", "end ns/a"],
            "the triggers during the first run are one more run, after it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_concurrency_run_at_once_a_failure_is_retried_and_shutdown_waits_for_those_in_flight() {
        #[derive(Default)]
        struct State {
            running: usize,
            most: usize,
            /// (key, start, end) of each run.
            runs: Vec<(String, Instant, Option<Instant>)>,
        }
        let names: Vec<String> = (0..6).map(|i| format!("i{i}")).collect();
        let cache = filled(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let state = Arc::new(Mutex::new(State::default()));
        let started = Started::new(cache, 2, {
            let state = state.clone();
            move |key: IntegrationKey, _| {
                let state = state.clone();
                async move {
                    let (first, run) = {
                        let mut s = state.lock().unwrap();
                        s.running += 1;
                        s.most = s.most.max(s.running);
                        let first = !s.runs.iter().any(|(k, ..)| *k == key.to_string());
                        s.runs.push((key.to_string(), Instant::now(), None));
                        (first, s.runs.len() - 1)
                    };
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let mut s = state.lock().unwrap();
                    s.running -= 1;
                    s.runs[run].2 = Some(Instant::now());
                    // i0 fails once and asks to be retried in 30 s.
                    (key.name() == "i0" && first).then_some(Duration::from_secs(30))
                }
            }
        });
        for name in &names {
            started.trigger(IntegrationKey::new("ns", name));
        }
        // Stop while the retry runs: the runner waits for it to end.
        let i0_runs = |s: &State| {
            s.runs
                .iter()
                .filter(|(k, ..)| k == "ns/i0")
                .cloned()
                .collect::<Vec<_>>()
        };
        while i0_runs(&state.lock().unwrap()).len() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state.lock().unwrap().running, 1, "the retry is running");
        started.stop().await;
        let s = state.lock().unwrap();
        assert_eq!(s.most, 2, "never more than the concurrency");
        assert_eq!(s.running, 0, "shutdown waited for the run in flight");
        assert_eq!(s.runs.len(), 7);
        let runs = i0_runs(&s);
        let waited = runs[1].1 - runs[0].2.unwrap();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
        assert!(runs[1].2.is_some(), "the retry ended before the runner did");
    }
}
