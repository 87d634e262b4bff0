//! Metrics, health endpoints and log setup.
//!
//! Metric labels are bounded sets (provider, flow, result, reason) — never an
//! error text or a value. Per-Integration expiry series carry only namespace
//! and name, like cert-manager's certificate expiry series.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::controller::{CachedIntegration, IntegrationCache, IntegrationKey, cached::Readiness};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InboundLabels {
    endpoint: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    provider: String,
    flow: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    outcome: String,
}

/// The controllers' Integration caches, shared with the scrape.
type IntegrationStores = Arc<Mutex<Vec<IntegrationCache>>>;

/// Per-Integration series, derived from the cache at scrape time and
/// written straight into the scrape: nothing per Integration is kept
/// between scrapes (a metric family would hold a map of 10,000 label sets).
#[derive(Debug)]
struct IntegrationCollector(IntegrationStores);

impl Collector for IntegrationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stores = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let integrations: Vec<(IntegrationKey, Arc<CachedIntegration>)> =
            stores.iter().flat_map(|s| s.snapshot()).collect();
        let mut by_ready = [("True", 0i64), ("False", 0), ("Unknown", 0)];
        {
            let mut family = encoder.encode_descriptor(
                "credentials_expiry_timestamp_seconds",
                "When each Integration's current credentials expire (Unix time)",
                None,
                MetricType::Gauge,
            )?;
            for (key, integration) in &integrations {
                let slot = match integration.readiness() {
                    Readiness::True => 0,
                    Readiness::False => 1,
                    Readiness::Unknown => 2,
                };
                by_ready[slot].1 += 1;
                let Some(at) = integration.expires_at() else {
                    continue;
                };
                let labels = [
                    ("namespace", key.namespace()),
                    ("name", key.name()),
                    ("provider", integration.provider()),
                ];
                ConstGauge::new(at.as_millisecond() as f64 / 1000.0).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "integrations",
            "Integrations by Ready condition status (True, False, Unknown)",
            None,
            MetricType::Gauge,
        )?;
        for (status, count) in by_ready {
            ConstGauge::new(count).encode(family.encode_family(&[("status", status)])?)?;
        }
        Ok(())
    }
}

struct Inner {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    inbound_requests: Family<InboundLabels, Counter>,
    reconcile_duration: Histogram,
    exchanges: Family<ExchangeLabels, Counter>,
    exchange_duration: Family<ProviderLabels, Histogram>,
    provider_calls: Family<CallLabels, Counter>,
    provider_call_duration: Family<ProviderLabels, Histogram>,
    rate_limit_waits: Family<ProviderLabels, Counter>,
    rate_limit_wait_seconds: Family<ProviderLabels, Counter<f64>>,
    secret_writes: Counter,
    status_writes: Counter,
    renewals_overdue: Gauge,
    integrations: IntegrationStores,
}

/// The operator's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let inner = Inner {
            registry: Mutex::new(Registry::with_prefix("integration_operator")),
            reconciles: Family::default(),
            inbound_requests: Family::default(),
            reconcile_duration: latency_histogram(),
            exchanges: Family::default(),
            exchange_duration: Family::new_with_constructor(latency_histogram),
            provider_calls: Family::default(),
            provider_call_duration: Family::new_with_constructor(latency_histogram),
            rate_limit_waits: Family::default(),
            rate_limit_wait_seconds: Family::default(),
            secret_writes: Counter::default(),
            status_writes: Counter::default(),
            renewals_overdue: Gauge::default(),
            integrations: IntegrationStores::default(),
        };
        {
            let mut r = inner.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "reconciles",
                "Reconciles by result (success or a failure reason)",
                inner.reconciles.clone(),
            );
            r.register(
                "reconcile_duration_seconds",
                "Duration of one reconcile",
                inner.reconcile_duration.clone(),
            );
            r.register(
                "exchanges",
                "Credential exchanges by provider, flow and outcome",
                inner.exchanges.clone(),
            );
            r.register(
                "exchange_duration_seconds",
                "Duration of one credential exchange (all its provider calls)",
                inner.exchange_duration.clone(),
            );
            r.register(
                "provider_requests",
                "HTTP requests to providers by outcome",
                inner.provider_calls.clone(),
            );
            r.register(
                "provider_request_duration_seconds",
                "Latency of one HTTP request to a provider",
                inner.provider_call_duration.clone(),
            );
            r.register(
                "provider_rate_limit_waits",
                "Requests that waited for the provider's rate limit, concurrency cap or Retry-After",
                inner.rate_limit_waits.clone(),
            );
            r.register(
                "provider_rate_limit_wait_seconds",
                "Time spent waiting for provider limits",
                inner.rate_limit_wait_seconds.clone(),
            );
            r.register("secret_writes", "Writes of output Secrets", inner.secret_writes.clone());
            r.register(
                "status_writes",
                "Writes of Integration status",
                inner.status_writes.clone(),
            );
            r.register(
                "renewals_overdue",
                "Renewals more than the grace period late with Ready still True (the stall watchdog's count)",
                inner.renewals_overdue.clone(),
            );
            r.register(
                "inbound_requests",
                "Requests to the inbound server by endpoint and HTTP status",
                inner.inbound_requests.clone(),
            );
            r.register_collector(Box::new(IntegrationCollector(inner.integrations.clone())));
        }
        Self(Arc::new(inner))
    }

    /// Forgets the caches of a previous run (a lost leadership term).
    pub fn clear_integration_stores(&self) {
        self.0.integrations.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Lets the scrape derive per-Integration series from a controller's cache.
    pub fn add_integration_cache(&self, store: IntegrationCache) {
        self.0
            .integrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
    }

    /// One request to the inbound server. `endpoint` is a fixed name
    /// (`kombo`, `other`), never the requested path.
    pub fn inbound_request(&self, endpoint: &'static str, code: u16) {
        self.0
            .inbound_requests
            .get_or_create(&InboundLabels { endpoint, code })
            .inc();
    }

    pub fn reconciled(&self, result: &str) {
        self.0
            .reconciles
            .get_or_create(&ResultLabels { result: result.into() })
            .inc();
    }

    /// Records the reconcile duration when dropped.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            started: Instant::now(),
        }
    }

    pub fn exchanged(&self, provider: &str, flow: &str, outcome: &str, took: Duration) {
        self.0
            .exchanges
            .get_or_create(&ExchangeLabels {
                provider: provider.into(),
                flow: flow.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.0
            .exchange_duration
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn provider_call(&self, provider: &str, outcome: &str, took: Duration) {
        self.0
            .provider_calls
            .get_or_create(&CallLabels {
                provider: provider.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.0
            .provider_call_duration
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn rate_limit_wait(&self, provider: &str, waited: Duration) {
        let labels = ProviderLabels {
            provider: provider.into(),
        };
        self.0.rate_limit_waits.get_or_create(&labels).inc();
        self.0
            .rate_limit_wait_seconds
            .get_or_create(&labels)
            .inc_by(waited.as_secs_f64());
    }

    pub fn secret_written(&self) {
        self.0.secret_writes.inc();
    }

    /// The stall watchdog's count over every controller.
    pub fn set_renewals_overdue(&self, count: usize) {
        self.0.renewals_overdue.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn status_written(&self) {
        self.0.status_writes.inc();
    }

    /// The OpenMetrics text, with per-Integration series refreshed from the cache.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.0.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Observes a reconcile's duration on drop.
pub struct ReconcileTimer {
    metrics: Metrics,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .0
            .reconcile_duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Readiness as the probes report it: the leader (or the only replica) is
/// ready once its caches are synced; a standby replica is ready while its
/// leader-election loop runs (it must pass probes to be a usable standby).
#[derive(Clone)]
pub struct Health {
    /// Controllers (one per watched namespace, or one) whose caches are not
    /// synced yet.
    unsynced: Arc<AtomicUsize>,
    standby: Arc<AtomicBool>,
    /// Overdue renewals per controller, as its stall watchdog last counted.
    overdue: Arc<Mutex<std::collections::BTreeMap<usize, usize>>>,
    /// When a reconcile last finished (success or failure).
    progressed: Arc<Mutex<std::time::Instant>>,
    /// How long renewals may be overdue with no reconcile finishing before
    /// the liveness probe fails.
    stall_after: Arc<Mutex<std::time::Duration>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            unsynced: Arc::new(AtomicUsize::new(1)),
            standby: Arc::new(AtomicBool::new(true)),
            overdue: Arc::default(),
            progressed: Arc::new(Mutex::new(std::time::Instant::now())),
            stall_after: Arc::new(Mutex::new(std::time::Duration::from_secs(300))),
        }
    }
}

impl Health {
    /// The controllers' caches are synced (or, with `false`, the controllers stopped).
    pub fn set_ready(&self, ready: bool) {
        self.unsynced.store(usize::from(!ready), Ordering::SeqCst);
    }

    /// `parts` controllers must each report [`Health::part_synced`] before
    /// this replica is ready.
    pub fn expect_parts(&self, parts: usize) {
        self.unsynced.store(parts.max(1), Ordering::SeqCst);
    }

    /// One controller's caches are synced. Reported before that controller
    /// reconciles anything, so nothing a probe could see happens while the
    /// replica still reads as not ready.
    pub fn part_synced(&self) {
        let _ = self
            .unsynced
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_sub(1)));
    }

    /// This replica is standing by for the Lease rather than reconciling.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    pub fn is_standby(&self) -> bool {
        self.standby.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.is_standby() || self.unsynced.load(Ordering::SeqCst) == 0
    }

    /// The grace of the liveness probe (see [`crate::controller::watchdog`]).
    pub fn set_stall_after(&self, after: std::time::Duration) {
        *self.stall_after.lock().unwrap_or_else(|p| p.into_inner()) = after;
    }

    /// A reconcile finished: the workers are making progress.
    pub fn progressed(&self) {
        *self.progressed.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// The watchdog of controller `slot` counted `count` overdue renewals.
    pub fn set_overdue(&self, slot: usize, count: usize) {
        self.overdue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, count);
    }

    /// Overdue renewals over every controller.
    pub fn overdue(&self) -> usize {
        self.overdue.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// The controllers stopped (a lost leadership term): nothing they
    /// counted holds any more.
    pub fn clear_overdue(&self) {
        self.overdue.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Whether the liveness probe passes: not while renewals are overdue and
    /// no reconcile has finished for the grace period.
    pub fn is_live(&self) -> bool {
        let since = self.progressed.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let grace = *self.stall_after.lock().unwrap_or_else(|p| p.into_inner());
        crate::controller::watchdog::is_live(self.overdue(), since, grace)
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Metrics,
    health: Health,
}

/// Serves `/metrics`, `/healthz` (the process is serving) and `/readyz`
/// (caches synced and, with leader election, this replica is running the loop
/// or standing by healthily).
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(live_handler))
        .route("/livez", get(live_handler))
        .route("/readyz", get(ready_handler))
        .with_state(ServerState { metrics, health });
    axum::serve(listener, app).await
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn live_handler(State(state): State<ServerState>) -> impl IntoResponse {
    if state.health.is_live() {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: {} renewals overdue and no reconcile finished lately",
                state.health.overdue()
            ),
        )
    }
}

async fn ready_handler(State(state): State<ServerState>) -> impl IntoResponse {
    if state.health.is_standby() {
        (StatusCode::OK, "standby")
    } else if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// Installs the log subscriber: JSON or human-readable, filtered by `filter`
/// (RUST_LOG syntax).
pub fn init_logging(json: bool, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a log file or a log
        // collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn a_replica_is_ready_only_once_every_namespaces_controller_has_synced() {
        let health = Health::default();
        health.set_standby(false);
        assert!(!health.is_ready(), "ready before anything synced");
        health.expect_parts(2);
        health.part_synced();
        assert!(!health.is_ready(), "ready with one of two namespaces synced");
        health.part_synced();
        assert!(health.is_ready());
        // A stopped controller (a lost Lease) is not ready again until synced.
        health.set_ready(false);
        assert!(!health.is_ready());
        health.part_synced();
        assert!(health.is_ready());
    }
}
