//! The stall watchdog: notices renewals that should have happened and did
//! not, whatever the cause (a stuck worker, a lost schedule, a bug), from
//! what is recorded rather than from the machinery that failed.
//!
//! It reads the Integration cache on a tick. An Integration whose recorded
//! renewal time (`status.renewAt`) is more than a grace period behind, while
//! its Ready condition still says True (a failing renewal says why in
//! Ready=False and is retried; that is not a stall), gets a
//! `RenewalOverdue=True` condition, a Warning Event and is counted in the
//! `integration_operator_renewals_overdue` gauge. The next status the
//! reconcile writes drops the condition once the renewal has happened.
//!
//! Globally: while any renewal is overdue and no reconcile at all has
//! finished for a grace period, the liveness probe fails, so that Kubernetes
//! restarts an operator whose workers are stuck.

use crate::reasons::Reason;
use std::{collections::HashSet, sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, ResourceExt, api::Patch};
use serde_json::json;
use tracing::{debug, warn};

use super::{
    CachedIntegration, Context, IntegrationCache, IntegrationKey,
    cached::Readiness,
    events::EventType,
    status::{self, Wanted},
};
use crate::{crd::Integration, crd::IntegrationStatus, telemetry::Health};

/// Condition type (and reason) of an overdue renewal.
pub const RENEWAL_OVERDUE: &str = "RenewalOverdue";

/// A renewal is never called overdue sooner than this after its time: the
/// schedule's own latency and a busy provider's deferrals stay below it.
pub const MIN_GRACE: Duration = Duration::from_secs(5);

/// When a renewal recorded for `renew_at` counts as overdue: `grace` after
/// it, but never later than halfway between it and the expiry, so that an
/// overdue renewal is reported while the credentials still work (and never
/// sooner than [`MIN_GRACE`]).
pub fn overdue_at(renew_at: Timestamp, expires_at: Option<Timestamp>, grace: Duration) -> Timestamp {
    let mut grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    if let Some(expires_at) = expires_at.filter(|e| *e > renew_at) {
        grace = grace.min(expires_at.duration_since(renew_at) / 2);
    }
    let floor = SignedDuration::try_from(MIN_GRACE).unwrap_or_default();
    renew_at.saturating_add(grace.max(floor)).unwrap_or(renew_at)
}

/// The renewal time an Integration is overdue on at `now`, if it is.
pub fn overdue(status: Option<&IntegrationStatus>, now: Timestamp, grace: Duration) -> Option<Timestamp> {
    let status = status?;
    let ready = status::ready_condition(Some(status)).is_some_and(|c| c.status == "True");
    let renew_at = status::parse_time(status.renew_at.as_ref());
    overdue_from(
        ready,
        renew_at,
        status::parse_time(status.expires_at.as_ref()),
        now,
        grace,
    )
}

/// [`overdue`], from the facts the cache keeps for every Integration.
fn overdue_cached(integration: &CachedIntegration, now: Timestamp, grace: Duration) -> Option<Timestamp> {
    overdue_from(
        integration.readiness() == Readiness::True,
        integration.renew_at(),
        integration.expires_at(),
        now,
        grace,
    )
}

fn overdue_from(
    ready: bool,
    renew_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    grace: Duration,
) -> Option<Timestamp> {
    // A failure is already reported (Ready=False, with its reason) and
    // retried; only a renewal that silently did not happen is a stall.
    if !ready {
        return None;
    }
    let renew_at = renew_at?;
    (now >= overdue_at(renew_at, expires_at, grace)).then_some(renew_at)
}

/// The RenewalOverdue condition a reconcile that did not renew must keep: it
/// still holds when the status it writes is still overdue.
pub fn still_overdue<'a>(
    old: &'a IntegrationStatus,
    new: &IntegrationStatus,
    now: Timestamp,
    grace: Duration,
) -> Option<&'a Condition> {
    let condition = old.conditions.iter().find(|c| c.type_ == RENEWAL_OVERDUE)?;
    overdue(Some(new), now, grace).map(|_| condition)
}

/// Whether the process is alive as the liveness probe sees it: not when
/// renewals are overdue and no reconcile has finished for `grace` (pure).
pub fn is_live(overdue: usize, since_progress: Duration, grace: Duration) -> bool {
    overdue == 0 || since_progress < grace
}

/// How often the watchdog looks.
fn tick(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

fn message(renew_at: Timestamp, now: Timestamp) -> String {
    let late = Duration::try_from(now.duration_since(renew_at)).unwrap_or_default();
    format!(
        "the renewal due at {} has not happened ({} late) and no failure was recorded; the credentials stay in place until they expire. If this lasts, the operator's workers may be stalled: see its log and its liveness probe",
        status::rfc3339(renew_at),
        crate::providers::human_duration(late),
    )
}

/// Watches one controller's Integrations until the task is dropped.
pub async fn run(cache: IntegrationCache, ctx: Arc<Context>, health: Health, slot: usize) {
    let grace = ctx.stall_after;
    ctx.wait_for_caches().await;
    // Flagged in this run: one condition write and one Event per episode,
    // even where the write failed.
    let mut flagged: HashSet<IntegrationKey> = HashSet::new();
    let mut interval = tokio::time::interval(tick(grace));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Timestamp::now();
        let mut count = 0;
        let mut seen = HashSet::new();
        for (key, integration) in cache.snapshot() {
            let Some(renew_at) = overdue_cached(&integration, now, grace) else {
                continue;
            };
            count += 1;
            seen.insert(key.clone());
            if integration.overdue_recorded() || flagged.contains(&key) {
                continue;
            }
            flag(&integration.expand(&key), &ctx, renew_at, now).await;
            flagged.insert(key);
        }
        flagged.retain(|k| seen.contains(k));
        health.set_overdue(slot, count);
        ctx.metrics.set_renewals_overdue(health.overdue());
    }
}

/// Writes the condition (only onto the version read: a status written
/// meanwhile wins) and publishes the Event.
async fn flag(integration: &Integration, ctx: &Context, renew_at: Timestamp, now: Timestamp) {
    let message = message(renew_at, now);
    warn!(
        namespace = %integration.namespace().unwrap_or_default(),
        name = %integration.name_any(),
        renew_at = %status::rfc3339(renew_at),
        "renewal overdue"
    );
    let old = integration.status.clone().unwrap_or_default();
    let mut wanted: Vec<Wanted> = old.conditions.iter().map(Wanted::from).collect();
    wanted.push(Wanted::overdue(message.clone()));
    let conditions = status::merge_conditions(&old.conditions, &wanted, old.observed_generation, now);
    let api: Api<Integration> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    let body = json!({
        "metadata": {"resourceVersion": integration.resource_version()},
        "status": {"conditions": conditions},
    });
    match api
        .patch_status(
            &integration.name_any(),
            &super::reconcile::status_patch_params(),
            &Patch::Merge(body),
        )
        .await
    {
        Ok(_) => ctx.metrics.status_written(),
        // Written meanwhile: the next tick judges the new version.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            debug!("status changed meanwhile; not flagging this version");
            return;
        }
        Err(e) => warn!(error = %e, "could not write the RenewalOverdue condition"),
    }
    super::reconcile::publish(ctx, integration, EventType::Warning, Reason::RenewalOverdue, message).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::status::merge_conditions;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ready_status(renew_at: &str, expires_at: Option<&str>, ready: bool) -> IntegrationStatus {
        let wanted = if ready {
            Wanted::ready(Reason::Issued, "ok")
        } else {
            Wanted::not_ready(Reason::ProviderUnavailable, "down")
        };
        IntegrationStatus {
            conditions: merge_conditions(&[], &[wanted], Some(1), t("2026-01-01T00:00:00Z")),
            renew_at: Some(renew_at.into()),
            expires_at: expires_at.map(Into::into),
            ..IntegrationStatus::default()
        }
    }

    #[test]
    fn a_renewal_is_overdue_after_the_grace_but_before_halfway_to_expiry() {
        let grace = Duration::from_secs(300);
        // Long window: the grace decides.
        let s = ready_status("2026-01-01T01:00:00Z", Some("2026-01-01T02:00:00Z"), true);
        assert_eq!(overdue(Some(&s), t("2026-01-01T01:04:59Z"), grace), None);
        assert_eq!(
            overdue(Some(&s), t("2026-01-01T01:05:00Z"), grace),
            Some(t("2026-01-01T01:00:00Z"))
        );
        // Short window (2 minutes to expiry): halfway decides.
        let s = ready_status("2026-01-01T01:00:00Z", Some("2026-01-01T01:02:00Z"), true);
        assert_eq!(overdue(Some(&s), t("2026-01-01T01:00:59Z"), grace), None);
        assert!(overdue(Some(&s), t("2026-01-01T01:01:00Z"), grace).is_some());
        // Very short window: never sooner than MIN_GRACE.
        let s = ready_status("2026-01-01T01:00:00Z", Some("2026-01-01T01:00:02Z"), true);
        assert_eq!(overdue(Some(&s), t("2026-01-01T01:00:04Z"), grace), None);
        assert!(overdue(Some(&s), t("2026-01-01T01:00:05Z"), grace).is_some());
        // No expiry (a revalidated key): the grace.
        let s = ready_status("2026-01-01T01:00:00Z", None, true);
        assert!(overdue(Some(&s), t("2026-01-01T01:05:00Z"), grace).is_some());
    }

    #[test]
    fn a_failing_or_never_issued_integration_is_not_a_stall() {
        let grace = Duration::from_secs(60);
        let failing = ready_status("2026-01-01T01:00:00Z", None, false);
        assert_eq!(overdue(Some(&failing), t("2026-01-02T00:00:00Z"), grace), None);
        assert_eq!(overdue(None, t("2026-01-02T00:00:00Z"), grace), None);
        let mut unscheduled = ready_status("2026-01-01T01:00:00Z", None, true);
        unscheduled.renew_at = None;
        assert_eq!(overdue(Some(&unscheduled), t("2026-01-02T00:00:00Z"), grace), None);
    }

    #[test]
    fn the_condition_stays_until_a_renewal_moves_the_renewal_time() {
        let grace = Duration::from_secs(60);
        let now = t("2026-01-01T01:10:00Z");
        let mut old = ready_status("2026-01-01T01:00:00Z", None, true);
        old.conditions = merge_conditions(
            &old.conditions,
            &[Wanted::ready(Reason::Issued, "ok"), Wanted::overdue("late".into())],
            Some(1),
            now,
        );
        let unchanged = old.clone();
        assert!(still_overdue(&old, &unchanged, now, grace).is_some());
        let renewed = IntegrationStatus {
            renew_at: Some("2026-01-01T02:00:00Z".into()),
            ..old.clone()
        };
        assert!(still_overdue(&old, &renewed, now, grace).is_none());
    }

    #[test]
    fn liveness_fails_only_when_renewals_are_overdue_and_nothing_progresses() {
        let grace = Duration::from_secs(60);
        assert!(is_live(0, Duration::from_secs(3600), grace));
        assert!(is_live(3, Duration::from_secs(10), grace));
        assert!(!is_live(3, Duration::from_secs(60), grace));
    }
}
