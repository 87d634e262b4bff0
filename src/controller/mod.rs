//! The Integration controller: watches, shared context, error policy. The
//! reconcile itself is in [`reconcile`]; its steps in the sibling modules.
//! The watches fill the Integration cache ([`scale::cache`]) and name the
//! Integrations to look at; [`scale::runner`] runs the reconciles.
//!
//! Watches, and why each is there:
//! - Integrations (all namespaces): the objects reconciled.
//! - ClusterProviders (cluster-scoped, cached): resolved on every reconcile;
//!   a change re-reconciles the Integrations that name it.
//! - Secrets labelled `app.kubernetes.io/managed-by=integration-operator`,
//!   metadata only (cached): the output Secrets, to repair them when deleted
//!   or edited. Unrelated Secrets are never cached.
//! - Secrets, metadata only, not cached: only to map a changed or deleted
//!   input Secret to the Integrations that reference it.

pub mod authorization;
pub mod output;
pub mod plan;
pub mod reconcile;
pub mod resolve;
pub mod rollout;
pub mod scale;
pub mod schedule;
pub mod shard;
pub mod status;
pub mod templates;
pub mod watchdog;

pub use scale::backoff::{Failures, RetryPolicy, WARNING_REPEAT, Warnings, retry_delay};
pub use scale::cache::IntegrationCache;
pub use scale::cached::CachedIntegration;
pub use scale::key::IntegrationKey;
pub use scale::{backoff, cache, cached, events, owned, pace, shared_reads, timetable, versions};

use crate::reasons::Reason;
use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    crd::{ClusterProvider, Integration},
    providers::{DriverError, Drivers},
    telemetry::{Health, Metrics},
};
use output::Fingerprinter;

/// Errors of a reconcile, each with a PascalCase reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// The provider call failed.
    #[error("{0}")]
    Driver(Box<DriverError>),
    /// The Integration or something it refers to is wrong; a person must fix it.
    #[error("{message}")]
    Invalid { reason: Reason, message: String },
    /// Undoing provider-side state on deletion failed (reason
    /// `CleanupFailed`); retried like the driver error it wraps (backoff
    /// for an outage, slowly for what a person must fix).
    #[error("deleting the provider-side state failed: {0}")]
    Cleanup(Box<DriverError>),
    /// The provider refused the credentials (reason `ReauthRequired`):
    /// they are held, not sent again, until the inputs change or a person
    /// asks for a retry. `hold` is the [`Fingerprinter::refusal`] recorded
    /// in status.
    #[error("{REFUSAL_HOLD}; {error}")]
    Refused { error: Box<DriverError>, hold: String },
    /// The same credentials were refused before and are not sent again;
    /// `message` is the condition's message as it stands.
    #[error("{message}")]
    Held { message: String, hold: String },
}

/// What a refusal's condition message starts with (first, so that cutting a
/// long message to the Event note limit never drops it): why nothing happens
/// next, and the two ways to go on.
pub const REFUSAL_HOLD: &str = "refused credentials are not sent again (each refused login may count towards locking the account) until the input Secret changes or the annotation integration-operator.io/retry is set to a new value";

impl Error {
    pub fn invalid(reason: Reason, message: impl Into<String>) -> Self {
        Error::Invalid {
            reason,
            message: message.into(),
        }
    }

    /// Condition reason, Event reason and metric label.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Kube(_) => Reason::KubernetesApiError,
            Error::Driver(e) => e.reason(),
            Error::Invalid { reason, .. } => *reason,
            Error::Cleanup(_) => Reason::CleanupFailed,
            Error::Refused { error, .. } => error.reason(),
            Error::Held { .. } => Reason::ReauthRequired,
        }
    }

    /// The refusal to record in status, if this error is one.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Error::Refused { hold, .. } | Error::Held { hold, .. } => Some(hold),
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Error::Kube(_) => true,
            Error::Driver(e) => e.is_transient(),
            Error::Invalid { .. } | Error::Refused { .. } | Error::Held { .. } => false,
            Error::Cleanup(e) => e.is_transient(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Driver(e) | Error::Cleanup(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub drivers: Drivers,
    pub providers: Store<ClusterProvider>,
    /// The Integrations this controller watches (its own cache): facts
    /// about other Integrations, such as who else claims a provider-side
    /// object, come from here instead of a LIST.
    pub integrations: IntegrationCache,
    pub owned_secrets: owned::OwnedSecrets,
    pub fingerprinter: Fingerprinter,
    /// The provider limiter the drivers share: a busy provider defers
    /// routine renewals before they take a reconcile slot.
    pub limiter: crate::providers::limiter::Limiter,
    pub events: events::EventPublisher,
    pub metrics: Metrics,
    pub failures: Failures,
    pub warnings: Warnings,
    pub verified: owned::Verified,
    pub retry: RetryPolicy,
    /// When each Integration is next looked at.
    pub timetable: Arc<timetable::Timetable>,
    /// The turns of routine renewals, paced to the timetable's rate.
    pub pace: pace::RoutinePace,
    /// Input Secret reads, shared by reconciles that ask at the same time.
    pub input_reads: shared_reads::SharedReads,
    /// The current version of every Secret that may be an input, from the
    /// Secret-metadata watch: an input Secret still at the version the
    /// credentials were made from is not read.
    pub input_versions: versions::InputVersions,
    /// Becomes true once the ClusterProvider and owned-Secret caches and the
    /// input versions are synced.
    pub caches_ready: tokio::sync::watch::Receiver<bool>,
    /// Liveness: every finished look is progress.
    pub health: Health,
    /// How late a renewal may be before it is overdue (see [`watchdog`]).
    pub stall_after: Duration,
    /// Shortest time from an exchange to one a rejection report causes.
    pub report_interval: Duration,
    /// See [`Settings::shard`].
    pub shard: shard::Shard,
}

impl Context {
    /// Reconciles decide from the caches; never before they are filled.
    ///
    /// One task waits on the stores and publishes readiness on a watch
    /// channel that any number of reconciles can wait on: kube-runtime's
    /// `Store::wait_until_ready` wakes only the last of several concurrent
    /// waiters (a oneshot receiver keeps one waker), which stranded the
    /// other reconciles forever when many started before the caches synced.
    pub async fn wait_for_caches(&self) {
        let mut ready = self.caches_ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}

/// Everything `run` needs besides the client.
#[derive(Clone)]
pub struct Settings {
    pub drivers: Drivers,
    /// The limiter inside `drivers`' HTTP client.
    pub limiter: crate::providers::limiter::Limiter,
    pub fingerprinter: Fingerprinter,
    pub metrics: Metrics,
    pub health: Health,
    pub retry: RetryPolicy,
    /// Reconciles in flight at once.
    pub concurrency: u16,
    /// Instance name in Events (`reportingInstance`).
    pub instance: String,
    /// Namespaces to manage; empty: all.
    pub watch_namespaces: Vec<String>,
    /// How late a renewal may be before it is overdue (see [`watchdog`]).
    pub stall_after: Duration,
    /// Shortest time from an exchange to one a rejection report causes.
    pub report_interval: Duration,
    /// The namespaces this operator works on among several active ones.
    pub shard: shard::Shard,
}

/// The error policy: exponential backoff with jitter for transient failures,
/// at least the provider's Retry-After, a slow retry for failures a person
/// must fix; and never later than the credentials' expiry, so that an
/// `Expired` condition appears on time.
pub fn error_policy(key: &IntegrationKey, integration: &CachedIntegration, err: &Error, ctx: &Context) -> Duration {
    let failures = ctx.failures.bump(key);
    let uid = integration.expand(key).metadata.uid.unwrap_or_default();
    let wait = retry_delay(err, failures, &ctx.retry, &uid);
    match integration.expires_at() {
        Some(at) => {
            let to_expiry = Duration::try_from(at.duration_since(jiff::Timestamp::now())).unwrap_or(Duration::ZERO);
            if to_expiry > Duration::ZERO {
                wait.min(to_expiry + Duration::from_millis(100))
                    .max(err.retry_after().unwrap_or_default())
            } else {
                wait
            }
        }
        None => wait,
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl future::Future<Output = ()> + Send + Sync + 'static,
) {
    settings.metrics.clear_integration_stores();
    settings.health.set_stall_after(settings.stall_after);
    settings.health.clear_overdue();
    if settings.watch_namespaces.is_empty() {
        let health = settings.health.clone();
        run_scope(client, settings, None, 0, shutdown).await;
        health.clear_overdue();
        return;
    }
    // One controller per watched namespace (namespaced watches need only
    // namespaced RBAC), sharing drivers, rate limiters, metrics and the key.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scopes = settings.watch_namespaces.clone();
    // Ready only when every namespace's caches are synced.
    settings.health.expect_parts(scopes.len());
    let runs = scopes.into_iter().enumerate().map(|(slot, ns)| {
        let mut stop = stop_rx.clone();
        let scoped = settings.clone();
        run_scope(client.clone(), scoped, Some(ns), slot, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    });
    let all = future::join_all(runs);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        _ = shutdown => {
            let _ = stop_tx.send(true);
            all.await;
        }
    }
    settings.health.set_ready(false);
    settings.health.clear_overdue();
}

/// Runs one controller over all namespaces (`None`) or one.
async fn run_scope(
    client: Client,
    settings: Settings,
    namespace: Option<String>,
    slot: usize,
    shutdown: impl future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (integrations, secrets): (Api<Integration>, Api<PartialObjectMeta<Secret>>) = match &namespace {
        None => (Api::all(client.clone()), Api::all(client.clone())),
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
    };
    // `Api<PartialObjectMeta<_>>` makes metadata-only requests: Secret data
    // never reaches this process through a watch.
    // Sharded, each watch keeps only this shard's namespaces (the API has no
    // server-side filter by namespace hash; the events of others are dropped
    // as they arrive, so they cost bandwidth but no memory).
    let shard = settings.shard;

    let (providers, providers_writer) = reflector::store::<ClusterProvider>();
    let provider_events = reflector::reflector(
        providers_writer,
        watcher(Api::<ClusterProvider>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();

    let owned_secrets = owned::OwnedSecrets::default();
    let owned_events = owned_secrets
        .clone()
        .reflect(
            watcher(
                secrets.clone(),
                watcher::Config::default().labels(&format!("{}={}", output::MANAGED_BY_LABEL, output::MANAGED_BY)),
            )
            .try_filter(move |event| future::ready(shard.keeps(event))),
        )
        .default_backoff()
        .touched_objects();

    // All Secrets' metadata, streamed: only their versions are kept (a few
    // bytes each, see `versions`), to find the Integrations whose input
    // changed and to let a look skip reading an input that did not.
    // The operator's own output Secrets are left out: they are never an
    // input, and the owned-Secret watch already covers them.
    let input_versions = versions::InputVersions::default();
    let input_news = watcher(secrets, watcher::Config::default())
        .default_backoff()
        .filter_map(ok_or_log("Secret metadata"))
        .filter_map({
            let versions = input_versions.clone();
            move |event| {
                let wanted = |secret: &PartialObjectMeta<Secret>| {
                    let managed = secret
                        .labels()
                        .get(output::MANAGED_BY_LABEL)
                        .is_some_and(|v| v == output::MANAGED_BY);
                    !managed && shard.owns(secret.namespace().as_deref().unwrap_or_default())
                };
                let kept = match &event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s) => wanted(s),
                    watcher::Event::Init | watcher::Event::InitDone => true,
                };
                future::ready(kept.then(|| versions.apply(event)).flatten())
            }
        });

    // The controller's Integration cache, read by reconciles through the
    // context (see Context::integrations).
    let integration_cache = IntegrationCache::default();

    let (caches_ready_tx, caches_ready) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Context {
        client: client.clone(),
        drivers: settings.drivers,
        providers: providers.clone(),
        integrations: integration_cache.clone(),
        owned_secrets: owned_secrets.clone(),
        fingerprinter: settings.fingerprinter,
        limiter: settings.limiter,
        events: events::EventPublisher::new(client.clone(), "integration-operator", &settings.instance),
        metrics: settings.metrics,
        failures: Failures::default(),
        warnings: Warnings::default(),
        verified: owned_secrets.verified(),
        retry: settings.retry,
        timetable: Arc::default(),
        pace: pace::RoutinePace::default(),
        input_reads: shared_reads::SharedReads::default(),
        input_versions,
        caches_ready,
        health: settings.health.clone(),
        stall_after: settings.stall_after,
        report_interval: settings.report_interval,
        shard: settings.shard,
    });

    let health = settings.health.clone();
    let (provider_store, owned_store, input_versions) = (
        ctx.providers.clone(),
        ctx.owned_secrets.clone(),
        ctx.input_versions.clone(),
    );
    tokio::spawn(async move {
        // The only waiter on the stores themselves (see Context::wait_for_caches).
        // The input versions too: a look before their first list would read
        // every input Secret it could have skipped.
        let _ = future::join3(
            provider_store.wait_until_ready(),
            owned_store.wait_until_ready(),
            input_versions.wait_until_ready(),
        )
        .await;
        health.part_synced();
        let _ = caches_ready_tx.send(true);
        info!("caches synced");
        // Keep the sender alive for the controller's lifetime.
        caches_ready_tx.closed().await;
    });

    // Only a change a reconcile must act on starts one: the spec, the
    // annotations (the retry request), finalizers, deletion. Our own status
    // writes and unchanged resyncs do not: every reconcile already schedules
    // its next look, and each extra one would cost a read of the input Secret.
    let integration_triggers = watcher(integrations, watcher::Config::default())
        .default_backoff()
        .filter_map(ok_or_log("Integrations"))
        .filter_map({
            let (cache, ctx) = (integration_cache.clone(), ctx.clone());
            move |event| {
                future::ready(match shard.keeps(&event).then(|| cache.apply(event)) {
                    Some(cache::Change::Reconcile(key)) => Some(key),
                    Some(cache::Change::Gone(key)) => {
                        ctx.timetable.clear(&key);
                        ctx.failures.reset(&key);
                        ctx.warnings.clear(&key);
                        None
                    }
                    Some(cache::Change::Nothing) | None => None,
                })
            }
        });
    // Likewise a version of an output Secret this operator wrote and checked
    // itself is no news.
    let verified = ctx.clone();
    // Up to this many owned-Secret events wait at once for a write of ours
    // to end (see Verified::is_news); the order of triggers does not matter.
    const JUDGED_AT_ONCE: usize = 256;
    // The first list's Secrets are no news either: every Integration is
    // looked at once the caches are ready (the Integration watch's first
    // list names each), and that look reads the caches; a re-list's are.
    let first_list_done = ctx.owned_secrets.clone();
    let owner_triggers = owned_events
        .filter_map(ok_or_log("output Secrets"))
        .filter(move |_| future::ready(first_list_done.is_ready()))
        .map(move |secret| {
            let verified = verified.verified.clone();
            async move {
                let key = ObjectRef::<Secret>::new(&secret.name_any()).within(&secret.namespace().unwrap_or_default());
                let news = verified
                    .is_news(&key, secret.metadata.resource_version.as_deref().unwrap_or_default())
                    .await;
                news.then(|| owners(&secret))
            }
        })
        .buffer_unordered(JUDGED_AT_ONCE)
        .filter_map(future::ready)
        .flat_map(stream::iter);
    let provider_triggers = provider_events.filter_map(ok_or_log("ClusterProviders")).flat_map({
        let cache = integration_cache.clone();
        move |provider| {
            let name = provider.name_any();
            stream::iter(cache.keys_where(|_, i| i.provider() == name))
        }
    });
    // The Integrations reading a changed Secret, found by one scan of the
    // cache for all the news that arrived together (a re-list after an
    // outage can bring thousands at once: a scan each would be quadratic).
    const SECRETS_PER_SCAN: usize = 4096;
    let input_triggers = input_news.ready_chunks(SECRETS_PER_SCAN).flat_map({
        let cache = integration_cache.clone();
        move |secrets| {
            let names: Vec<(String, String)> = secrets
                .iter()
                .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
                .collect();
            let changed: std::collections::HashSet<(&str, &str)> =
                names.iter().map(|(ns, name)| (ns.as_str(), name.as_str())).collect();
            stream::iter(cache.keys_where(|key, i| changed.contains(&(key.namespace(), i.input()))))
        }
    });
    // Entries of Integrations deleted since are dropped here.
    let due = ctx.timetable.clone().due().filter({
        let cache = integration_cache.clone();
        move |integration| future::ready(cache.contains(integration))
    });
    ctx.metrics.add_integration_cache(integration_cache.clone());
    // Stops with this controller (dropped at the end of this function).
    let watchdog = AbortOnDrop(tokio::spawn(watchdog::run(
        integration_cache.clone(),
        ctx.clone(),
        settings.health.clone(),
        slot,
    )));

    let triggers = stream::select_all([
        integration_triggers.boxed(),
        owner_triggers.boxed(),
        provider_triggers.boxed(),
        input_triggers.boxed(),
        due.boxed(),
    ]);
    scale::runner::run(
        integration_cache,
        triggers,
        usize::from(settings.concurrency),
        move |key, integration| {
            let ctx = ctx.clone();
            async move {
                match reconcile::reconcile(key.clone(), integration.clone(), ctx.clone()).await {
                    Ok(()) => None,
                    // Already reported by the reconcile (status, Event, log).
                    Err(err) => Some(error_policy(&key, &integration, &err, &ctx)),
                }
            }
        },
        shutdown,
    )
    .await;
    drop(watchdog);
    info!("controller stopped");
}

/// Passes a watch's objects on and logs its errors: each watch retries on
/// its own (`default_backoff`), and none pauses the others.
fn ok_or_log<T>(watch: &'static str) -> impl FnMut(Result<T, watcher::Error>) -> future::Ready<Option<T>> {
    move |item| {
        future::ready(match item {
            Ok(item) => Some(item),
            Err(e) => {
                warn!(error = %e, watch, "watch failed; retrying");
                None
            }
        })
    }
}

/// The Integrations that own `secret`, by its owner references.
fn owners(secret: &PartialObjectMeta<Secret>) -> Vec<IntegrationKey> {
    let api_version = Integration::api_version(&());
    let namespace = secret.namespace().unwrap_or_default();
    secret
        .owner_references()
        .iter()
        .filter(|owner| owner.kind == Integration::kind(&()) && owner.api_version == api_version)
        .map(|owner| IntegrationKey::new(&namespace, &owner.name))
        .collect()
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let err = Error::Driver(Box::new(DriverError::Unavailable { message: "x".into() }));
        let d1 = retry_delay(&err, 1, &policy, "u");
        let d3 = retry_delay(&err, 3, &policy, "u");
        let d30 = retry_delay(&err, 30, &policy, "u");
        assert!(d1 >= Duration::from_secs(5) && d1 <= Duration::from_secs(6));
        assert!(d3 >= Duration::from_secs(20) && d3 <= Duration::from_secs(24));
        assert!(d30 <= Duration::from_secs(360));
    }

    #[test]
    fn retry_after_is_honoured_even_above_the_backoff() {
        let err = Error::Driver(Box::new(DriverError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        }));
        assert!(retry_delay(&err, 1, &RetryPolicy::default(), "u") >= Duration::from_secs(120));
    }

    #[test]
    fn failures_a_person_must_fix_retry_slowly() {
        let err = Error::invalid(Reason::SecretNotFound, "x");
        assert!(retry_delay(&err, 1, &RetryPolicy::default(), "u") >= Duration::from_secs(300));
    }
}
