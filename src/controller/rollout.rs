//! Consumer rollouts: restarting the workloads an Integration names when its
//! credentials change in a way their pods must pick up.
//!
//! Pods that read a credential at start (an environment variable, a config
//! file parsed once) keep the old one after the Secret changes. Tokens that
//! are renewed routinely must be re-read by their consumers anyway, so a
//! routine renewal never restarts anything, nor does the first issue (pods
//! waiting for the Secret start by themselves); any other change of the
//! credentials does. Changes are coalesced (`coalesce` after the first one)
//! and rate-limited (`minInterval` between restarts); both times live in
//! `status.rollout`, so a restarted operator neither forgets nor repeats a
//! restart. The restart is `kubectl rollout restart`'s: a merge patch of the
//! pod template's `kubectl.kubernetes.io/restartedAt` annotation, which
//! GitOps tools leave alone (it is not in the manifests they apply).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{plan::ExchangeReason, schedule, status};
use crate::crd::{RolloutSpec, RolloutStatus, WorkloadKind, WorkloadReference};

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Default of `spec.rollout.coalesce`.
pub const DEFAULT_COALESCE: Duration = Duration::from_secs(30);
/// Default of `spec.rollout.minInterval`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(300);

/// Whether an exchange that ended with `changed` credentials is one the
/// workloads must pick up.
pub fn matters(reason: ExchangeReason, changed: bool) -> bool {
    changed && !matches!(reason, ExchangeReason::Initial | ExchangeReason::Renewal)
}

/// The spec's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub coalesce: Duration,
    pub min_interval: Duration,
}

impl Timing {
    /// Reads the spec; an unreadable duration (the schema checks the form)
    /// falls back to the default.
    pub fn of(spec: &RolloutSpec) -> Timing {
        let read = |value: &Option<String>, default| {
            value
                .as_deref()
                .and_then(|v| schedule::parse_duration(v).ok())
                .unwrap_or(default)
        };
        Timing {
            coalesce: read(&spec.coalesce, DEFAULT_COALESCE),
            min_interval: read(&spec.min_interval, DEFAULT_MIN_INTERVAL),
        }
    }
}

/// What to do about the workloads now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing waits to be rolled out.
    Nothing,
    /// A change waits; restart at this time.
    Wait { until: Timestamp },
    /// Restart now.
    Restart,
}

/// The next step for a rollout in `state` (pure).
pub fn next(state: Option<&RolloutStatus>, timing: Timing, now: Timestamp) -> Step {
    let Some(pending) = state.and_then(|s| status::parse_time(s.pending_since.as_ref())) else {
        return Step::Nothing;
    };
    let span = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let mut due = pending.saturating_add(span(timing.coalesce)).unwrap_or(pending);
    if let Some(last) = state.and_then(|s| status::parse_time(s.last_restart.as_ref())) {
        due = due.max(last.saturating_add(span(timing.min_interval)).unwrap_or(last));
    }
    if now >= due {
        Step::Restart
    } else {
        Step::Wait { until: due }
    }
}

/// Records a change that matters: the first one since the last restart
/// starts the coalescing window.
pub fn record_change(state: Option<RolloutStatus>, now: Timestamp) -> RolloutStatus {
    let mut state = state.unwrap_or_default();
    if state.pending_since.is_none() {
        state.pending_since = Some(status::rfc3339(now));
    }
    state
}

/// The state after a restart at `now`.
pub fn restarted(now: Timestamp) -> RolloutStatus {
    RolloutStatus {
        pending_since: None,
        last_restart: Some(status::rfc3339(now)),
    }
}

impl std::fmt::Display for WorkloadReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{}", self.kind, self.name)
    }
}

/// Restarts each workload as `kubectl rollout restart` does; returns the
/// failures, each with what to do about it.
pub async fn restart(
    client: &Client,
    namespace: &str,
    workloads: &[WorkloadReference],
    now: Timestamp,
) -> Vec<(WorkloadReference, String)> {
    let body = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: status::rfc3339(now)}}}}});
    let patch = Patch::Merge(&body);
    let pp = PatchParams::default();
    let mut failures = Vec::new();
    for workload in workloads {
        let result = match workload.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(&workload.name, &pp, &patch)
                .await
                .map(drop),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(&workload.name, &pp, &patch)
                .await
                .map(drop),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .patch(&workload.name, &pp, &patch)
                .await
                .map(drop),
        };
        if let Err(e) = result {
            let why = match &e {
                kube::Error::Api(s) if s.code == 404 => "it does not exist in this namespace".to_string(),
                kube::Error::Api(s) if s.code == 403 => {
                    "the operator may not patch it: install the chart with rollouts.enabled=true".to_string()
                }
                other => format!("the API server answered: {other}"),
            };
            failures.push((workload.clone(), why));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const TIMING: Timing = Timing {
        coalesce: Duration::from_secs(30),
        min_interval: Duration::from_secs(300),
    };

    #[test]
    fn routine_renewals_and_first_issues_never_restart() {
        assert!(!matters(ExchangeReason::Renewal, true));
        assert!(!matters(ExchangeReason::Initial, true));
        assert!(matters(ExchangeReason::InputChanged, true));
        assert!(matters(ExchangeReason::Requested, true));
        assert!(matters(ExchangeReason::Reported, true));
        assert!(matters(ExchangeReason::Repair, true));
        // Validated again and found the same: nothing changed.
        assert!(!matters(ExchangeReason::InputChanged, false));
    }

    #[test]
    fn changes_are_coalesced_into_one_restart_after_the_window() {
        let first = t("2026-01-01T00:00:00Z");
        let state = record_change(None, first);
        // A second change inside the window keeps the first one's time.
        let state = record_change(Some(state), t("2026-01-01T00:00:20Z"));
        assert_eq!(state.pending_since.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(
            next(Some(&state), TIMING, t("2026-01-01T00:00:20Z")),
            Step::Wait {
                until: t("2026-01-01T00:00:30Z")
            }
        );
        assert_eq!(next(Some(&state), TIMING, t("2026-01-01T00:00:30Z")), Step::Restart);
        let after = restarted(t("2026-01-01T00:00:30Z"));
        assert_eq!(next(Some(&after), TIMING, t("2026-01-01T01:00:00Z")), Step::Nothing);
    }

    #[test]
    fn restarts_are_at_least_min_interval_apart() {
        let after = restarted(t("2026-01-01T00:00:30Z"));
        let state = record_change(Some(after), t("2026-01-01T00:01:00Z"));
        // The window ends at 00:01:30, the interval at 00:05:30.
        assert_eq!(
            next(Some(&state), TIMING, t("2026-01-01T00:02:00Z")),
            Step::Wait {
                until: t("2026-01-01T00:05:30Z")
            }
        );
        assert_eq!(next(Some(&state), TIMING, t("2026-01-01T00:05:30Z")), Step::Restart);
    }

    #[test]
    fn the_spec_times_default_when_absent() {
        let spec = RolloutSpec {
            workloads: vec![],
            coalesce: Some("2s".into()),
            min_interval: None,
        };
        assert_eq!(
            Timing::of(&spec),
            Timing {
                coalesce: Duration::from_secs(2),
                min_interval: DEFAULT_MIN_INTERVAL
            }
        );
    }
}
