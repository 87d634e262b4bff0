//! Report: status conditions and Events from what the pipeline ended with
//! (or the error it failed with), written only when they changed, and the
//! consumer rollouts a change of credentials asks for.

use super::observe::{current_schedule, retried_after_disable, status_of};
use super::{
    Ending, EndingKind, PROVIDER_DISABLED_ANNOTATION, PROVIDER_EVENT_ANNOTATION, REJECTED_ANNOTATION,
    RENEW_NOW_ANNOTATION, RETRY_ANNOTATION, until,
};
use crate::reasons::Reason;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::super::{
    Context, Error, IntegrationKey,
    events::EventType,
    output,
    plan::ExchangeReason,
    status::{self, Wanted},
};
use crate::crd::{Integration, IntegrationStatus};

/// What a look reports, decided from what it ended with and the status as
/// it was: the status to write (its conditions as wanted, merged with the
/// old ones when written), the Event to publish, when to look again, and
/// whether the credentials changed in a way the named workloads must pick up.
#[derive(Debug)]
pub(super) struct Report {
    pub(super) status: IntegrationStatus,
    pub(super) wanted: Vec<Wanted>,
    pub(super) event: Option<(EventType, Reason, String)>,
    pub(super) recheck_at: Option<Timestamp>,
    pub(super) rollout_change: bool,
    /// Only an exchange knows that a field became empty; other endings
    /// never null a field they did not compute.
    pub(super) clear_empty: bool,
}

/// Writes status and Events for a successful pipeline; returns when to look again.
pub(super) async fn finish(
    integration: &Integration,
    ctx: &Context,
    ending: Ending,
    previous_failure: bool,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let old = status_of(integration);
    let wrote_secret = matches!(
        ending,
        Ending::Issued { written: true, .. } | Ending::UpToDate { rerendered: true, .. }
    );
    let Report {
        status: mut new,
        mut wanted,
        event,
        mut recheck_at,
        rollout_change,
        clear_empty,
    } = on_success(integration, &old, ending, previous_failure, now);
    if let Some(spec) = integration.spec.rollout.as_deref()
        && let Some(until) = roll_out(integration, ctx, spec, &mut new, rollout_change, now).await
    {
        recheck_at = Some(recheck_at.map_or(until, |r| r.min(until)));
    }
    // A look that did not renew leaves an overdue renewal overdue: its
    // condition stays until a renewal moves the renewal time.
    if let Some(c) = super::super::watchdog::still_overdue(&old, &new, now, ctx.stall_after) {
        wanted.push(Wanted::from(c));
    }
    new.conditions = status::merge_conditions(&old.conditions, &wanted, integration.metadata.generation, now);
    // The output Secret's version this process wrote or checked, recorded
    // whenever status is written anyway: a restarted process then trusts
    // that version without reading it. It never causes a write of its own
    // (a restart after an upgrade that added the field writes nothing).
    if new != old || wrote_secret {
        let secret = ObjectRef::<Secret>::new(&output::target_name(integration))
            .within(&integration.namespace().unwrap_or_default());
        if let Some(rv) = ctx.verified.version_of(&secret) {
            new.secret_resource_version = Some(rv);
        }
    }
    patch_status_if_changed(integration, ctx, &old, &new, clear_empty).await?;
    if let Some((type_, reason, note)) = event {
        publish(ctx, integration, type_, reason, note).await;
    }
    // From the time the look ends, not the time it began: counted from the
    // start, every second a look spent on the exchange and its writes was
    // added to the next one (seen on the real apiserver as renewals a second
    // late, tokens used past the end of their window).
    Ok(recheck_at.map(|at| until(Timestamp::now(), at)))
}

/// The report of a look that ended without error (pure).
pub(super) fn on_success(
    integration: &Integration,
    old: &IntegrationStatus,
    ending: Ending,
    previous_failure: bool,
    now: Timestamp,
) -> Report {
    let generation = integration.metadata.generation;
    let mut new = IntegrationStatus {
        observed_generation: generation,
        secret_name: Some(output::target_name(integration)),
        // Whatever was refused before, the provider took what was sent now.
        refused_inputs: None,
        ..old.clone()
    };
    let ending_kind = match &ending {
        Ending::Issued { .. } => EndingKind::Issued,
        _ => EndingKind::Other,
    };
    // A change of credentials the named workloads must pick up.
    let mut rollout_change = false;
    let (wanted, recheck_at, event) = match ending {
        Ending::UpToDate {
            recheck_at,
            schedule,
            rerendered,
        } => {
            // A re-render changes what the workloads read, like new credentials.
            rollout_change = rerendered;
            // The schedule recorded with the credentials (as observed) is
            // fresher than a status that may lag in the cache (after a
            // failed status write, say).
            let recorded = schedule;
            if let Some(at) = recorded.expires_at {
                new.expires_at = Some(status::rfc3339(at));
            }
            if let Some(at) = recorded.renew_at {
                new.renew_at = Some(status::rfc3339(at));
            }
            // Keep a Ready=True condition's reason (and, if its message
            // still holds, the condition as it is); turn anything else Ready.
            let message = ready_message(integration, &new);
            let mut wanted = vec![match status::ready_condition(Some(old)) {
                Some(c) if c.status == "True" && c.message == message => Wanted::from(c),
                Some(c) if c.status == "True" => Wanted::ready(c.reason.parse().unwrap_or(Reason::Issued), message),
                _ => Wanted::ready(Reason::Issued, message),
            }];
            if recorded.expiry_assumed {
                wanted.push(Wanted::warning(
                    Reason::ExpiryNotProvided,
                    expiry_assumed_message(integration, &new),
                ));
            } else if let Some(w) = old
                .conditions
                .iter()
                .find(|c| c.type_ == status::WARNING && c.status == "True" && c.reason != Reason::ExpiryNotProvided)
            {
                // A warning the provider's answer raised at issue (e.g.
                // ApiKeyPermissionLimited) holds as long as the credentials
                // it was raised for: nothing was asked of the provider now.
                wanted.push(Wanted::from(w));
            }
            let event = rerendered.then(|| {
                    (
                        EventType::Normal,
                        Reason::Rerendered,
                        "output Secret written again with the current spec.target type and templates, from the credentials it holds (no provider call)".to_string(),
                    )
                });
            (wanted, recheck_at, event)
        }
        Ending::Pending {
            reason,
            message,
            recheck_after,
            started,
        } => {
            if started.is_some() {
                new.awaiting = started;
            }
            let event = match status::ready_condition(Some(old)) {
                Some(c) if c.reason == reason && c.message == message => None,
                _ => Some((EventType::Normal, reason, message.clone())),
            };
            (
                vec![Wanted::not_ready(reason, message)],
                Some(now + jiff::SignedDuration::try_from(recheck_after).unwrap_or_default()),
                event,
            )
        }
        Ending::Issued {
            issued,
            reason,
            renew_at,
            written,
            changed,
        } => {
            // Whatever waited has completed.
            new.awaiting = None;
            rollout_change = super::super::rollout::matters(reason, changed);
            new.expires_at = issued.expires_at.map(status::rfc3339);
            new.renew_at = Some(status::rfc3339(renew_at));
            new.last_exchange_time = Some(status::rfc3339(now));
            // Any exchange answers a renew-now request or a rejection
            // report made before it.
            new.renew_now_answered = integration.annotations().get(RENEW_NOW_ANNOTATION).cloned();
            new.rejection_answered = integration.annotations().get(REJECTED_ANNOTATION).cloned();
            new.provider_event_answered = integration.annotations().get(PROVIDER_EVENT_ANNOTATION).cloned();
            if issued.provider_id.is_some() {
                new.integration_id = issued.provider_id.clone();
            }
            let (condition_reason, event_reason, note) = match reason {
                ExchangeReason::Initial => (Reason::Issued, Reason::Issued, "credentials issued".to_string()),
                ExchangeReason::Renewal => (
                    Reason::Renewed,
                    Reason::Renewed,
                    "credentials renewed before expiry".to_string(),
                ),
                ExchangeReason::InputChanged => (
                    Reason::Issued,
                    Reason::Reissued,
                    "spec, input Secret or provider changed: credentials reissued".to_string(),
                ),
                ExchangeReason::Repair => (
                    Reason::Issued,
                    Reason::Repaired,
                    "output Secret was missing or edited: credentials reissued".to_string(),
                ),
                ExchangeReason::Requested
                    if integration.annotations().get(PROVIDER_EVENT_ANNOTATION)
                        != old.provider_event_answered.as_ref()
                        && integration.annotations().get(RENEW_NOW_ANNOTATION) == old.renew_now_answered.as_ref() =>
                {
                    (
                        Reason::Issued,
                        Reason::Renewed,
                        format!(
                            "checked with the provider at once after a provider webhook ({PROVIDER_EVENT_ANNOTATION})"
                        ),
                    )
                }
                ExchangeReason::Requested if retried_after_disable(integration, old) => (
                    Reason::Issued,
                    Reason::Reissued,
                    format!(
                        "exchanged on request ({RETRY_ANNOTATION}) after the provider reported the integration disabled ({PROVIDER_DISABLED_ANNOTATION})"
                    ),
                ),
                ExchangeReason::Requested => (
                    Reason::Renewed,
                    Reason::Renewed,
                    format!("credentials renewed on request ({RENEW_NOW_ANNOTATION})"),
                ),
                ExchangeReason::Reported if changed => (
                    Reason::Renewed,
                    Reason::Renewed,
                    format!("a consumer reported the credentials rejected ({REJECTED_ANNOTATION}): renewed"),
                ),
                ExchangeReason::Reported => (
                    Reason::Issued,
                    Reason::StillAccepted,
                    format!(
                        "a consumer reported the credentials rejected ({REJECTED_ANNOTATION}); the provider still accepts them as they are, so nothing changed: check how the consumer uses them"
                    ),
                ),
            };
            let mut wanted = vec![Wanted::ready(condition_reason, ready_message(integration, &new))];
            if issued.lifetime_defaulted {
                wanted.push(Wanted::warning(
                    Reason::ExpiryNotProvided,
                    expiry_assumed_message(integration, &new),
                ));
            }
            if let Some((reason, message)) = &issued.warning {
                wanted.push(Wanted::warning(*reason, message.clone()));
            }
            let event = if previous_failure {
                Some((EventType::Normal, Reason::Recovered, format!("{note} after a failure")))
            } else if reason == ExchangeReason::Renewal {
                // Routine: the Ready condition and status say it; an Event
                // per renewal would be an object per Integration per token
                // lifetime, news to no one.
                None
            } else if written || reason == ExchangeReason::Reported {
                Some((EventType::Normal, event_reason, note))
            } else {
                None
            };
            (wanted, Some(renew_at), event)
        }
    };
    Report {
        status: new,
        wanted,
        event,
        recheck_at,
        rollout_change,
        clear_empty: matches!(ending_kind, EndingKind::Issued),
    }
}

/// Restarts the Integration's workloads when a change waits and its time
/// has come (see [`super::super::rollout`]); returns when to look again for a
/// change that waits.
pub(super) async fn roll_out(
    integration: &Integration,
    ctx: &Context,
    spec: &crate::crd::RolloutSpec,
    new: &mut IntegrationStatus,
    change: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    use super::super::rollout::{self, Step};
    if change {
        new.rollout = Some(rollout::record_change(new.rollout.take(), now));
    }
    match rollout::next(new.rollout.as_ref(), rollout::Timing::of(spec), now) {
        Step::Nothing => None,
        Step::Wait { until } => Some(until),
        Step::Restart => {
            let namespace = integration.namespace().unwrap_or_default();
            let failures = rollout::restart(&ctx.client, &namespace, &spec.workloads, now).await;
            // Restarted or not, this change is done: a failure is reported,
            // not retried in a loop (the next change tries again).
            new.rollout = Some(rollout::restarted(now));
            let restarted: Vec<String> = spec
                .workloads
                .iter()
                .filter(|w| !failures.iter().any(|(f, _)| f == *w))
                .map(ToString::to_string)
                .collect();
            if !restarted.is_empty() {
                info!(workloads = ?restarted, "restarted workloads for changed credentials");
                let note = format!(
                    "credentials changed: restarted {} (kubectl.kubernetes.io/restartedAt)",
                    restarted.join(", ")
                );
                publish(ctx, integration, EventType::Normal, Reason::RolloutRestarted, note).await;
            }
            for (workload, why) in failures {
                warn!(%workload, why, "could not restart a workload");
                let note = format!("credentials changed but {workload} was not restarted: {why}");
                publish(ctx, integration, EventType::Warning, Reason::RolloutFailed, note).await;
            }
            None
        }
    }
}

pub(super) fn expiry_assumed_message(integration: &Integration, status: &IntegrationStatus) -> String {
    format!(
        "the provider did not say when the credentials expire; assuming they expire at {} (defaultTokenLifetime of ClusterProvider {:?})",
        status.expires_at.clone().unwrap_or_default(),
        integration.spec.provider
    )
}

pub(super) fn ready_message(integration: &Integration, status: &IntegrationStatus) -> String {
    let name = output::target_name(integration);
    match &status.expires_at {
        Some(at) => format!("credentials in Secret {name:?} are valid until {at}"),
        None => format!("credentials in Secret {name:?} are valid"),
    }
}

/// Sets Ready=False with the failure's reason (or `Expired` once the last
/// credentials have expired) and emits a Warning Event. The output Secret is
/// left as it is.
pub(super) async fn record_failure(integration: &Integration, ctx: &Context, err: &Error, now: Timestamp) {
    let old = status_of(integration);
    // The expiry recorded with the credentials (the status may lag in the cache).
    let cached_expiry = current_schedule(integration, ctx).expires_at;
    let (new, reason, message) = on_failure(&old, cached_expiry, err, integration.metadata.generation, now);
    // Only conditions and observedGeneration: a failure must not rewrite the
    // expiry fields from a possibly stale copy of the status.
    if let Err(e) = patch_conditions_if_changed(integration, ctx, &old, &new).await {
        warn!(error = %e, "could not write failure status");
    }
    warn!(reason = reason.as_str(), error = %err, "reconcile failed");
    // One Warning per distinct failure, repeated at most every
    // WARNING_REPEAT while it lasts: a failing Integration retried with
    // backoff must not flood the API server with Events.
    let key = IntegrationKey::new(&integration.namespace().unwrap_or_default(), &integration.name_any());
    if ctx.warnings.should_publish(&key, reason.as_str(), &message) {
        publish(ctx, integration, EventType::Warning, reason, message).await;
    }
}

/// The status of a look that failed with `err` (pure), with the reason and
/// message of its Warning Event: Ready=False with the failure's reason, or
/// `Expired` once the last credentials (expiring at `cached_expiry`, else as
/// the status records) have run out.
pub(super) fn on_failure(
    old: &IntegrationStatus,
    cached_expiry: Option<Timestamp>,
    err: &Error,
    generation: Option<i64>,
    now: Timestamp,
) -> (IntegrationStatus, Reason, String) {
    let expires_at = cached_expiry.or_else(|| status::parse_time(old.expires_at.as_ref()));
    let expired = expires_at.is_some_and(|at| at <= now);
    let message = err.to_string();
    let (reason, message) = if let Error::Held { message, .. } = err {
        // The condition as it stands: nothing happened since.
        (err.reason(), message.clone())
    } else if expired {
        (
            Reason::Expired,
            format!(
                "credentials expired at {} and could not be renewed: {message}",
                expires_at.map(status::rfc3339).unwrap_or_default()
            ),
        )
    } else if let Some(at) = expires_at.map(status::rfc3339) {
        (
            err.reason(),
            format!("{message}; the last issued credentials stay in place until they expire at {at}"),
        )
    } else {
        (err.reason(), message)
    };
    let mut wanted = vec![Wanted::not_ready(reason, message.clone())];
    if let Some(w) = old.conditions.iter().find(|c| c.type_ == status::WARNING) {
        wanted.push(Wanted::from(w));
    }
    let new = IntegrationStatus {
        observed_generation: generation,
        conditions: status::merge_conditions(&old.conditions, &wanted, generation, now),
        refused_inputs: err.refusal().map(String::from).or_else(|| old.refused_inputs.clone()),
        ..old.clone()
    };
    (new, reason, message)
}

pub(super) async fn patch_status_if_changed(
    integration: &Integration,
    ctx: &Context,
    old: &IntegrationStatus,
    new: &IntegrationStatus,
    clear_empty: bool,
) -> Result<(), Error> {
    if old == new {
        return Ok(());
    }
    let api: Api<Integration> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    // With clear_empty, a merge patch with explicit nulls: fields that became empty are removed.
    let mut body = serde_json::to_value(new).map_err(|e| Error::invalid(Reason::InternalError, e.to_string()))?;
    if let Some(map) = body.as_object_mut()
        && old.refused_inputs.is_some()
    {
        map.entry("refusedInputs").or_insert(serde_json::Value::Null);
    }
    if let Some(map) = body.as_object_mut()
        && old.awaiting.is_some()
    {
        map.entry("awaiting").or_insert(serde_json::Value::Null);
    }
    if let (Some(map), Some(rollout)) = (body.as_object_mut(), &new.rollout) {
        // Explicit nulls: a merge patch keeps a field it does not mention.
        map.insert(
            "rollout".into(),
            json!({"pendingSince": rollout.pending_since, "lastRestart": rollout.last_restart}),
        );
    }
    if let Some(map) = body.as_object_mut().filter(|_| clear_empty) {
        for field in [
            "expiresAt",
            "renewAt",
            "lastExchangeTime",
            "integrationId",
            "secretName",
        ] {
            map.entry(field).or_insert(serde_json::Value::Null);
        }
    }
    api.patch_status(
        &integration.name_any(),
        &status_patch_params(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await?;
    ctx.metrics.status_written();
    Ok(())
}

pub(super) async fn patch_conditions_if_changed(
    integration: &Integration,
    ctx: &Context,
    old: &IntegrationStatus,
    new: &IntegrationStatus,
) -> Result<(), Error> {
    if old.conditions == new.conditions
        && old.observed_generation == new.observed_generation
        && old.refused_inputs == new.refused_inputs
    {
        return Ok(());
    }
    let api: Api<Integration> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    api.patch_status(
        &integration.name_any(),
        &status_patch_params(),
        &Patch::Merge(json!({"status": {
            "conditions": new.conditions,
            "observedGeneration": new.observed_generation,
            "refusedInputs": new.refused_inputs,
        }})),
    )
    .await?;
    ctx.metrics.status_written();
    Ok(())
}

/// Status is written under its own field manager, so `managedFields` tells
/// the operator's status writes from its Secret writes and from anyone else's.
pub(in crate::controller) fn status_patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(super::STATUS_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

pub(in crate::controller) async fn publish(
    ctx: &Context,
    integration: &Integration,
    type_: EventType,
    reason: Reason,
    note: String,
) {
    let note = crate::providers::sanitize_message(&note);
    if let Err(e) = ctx
        .events
        .publish(&integration.object_ref(&()), type_, reason.as_str(), &note)
        .await
    {
        debug!(error = %e, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::{
        crd::{IntegrationSpec, SecretReference},
        providers::{Credentials, DriverError, Issued},
    };

    fn integration(annotations: &[(&str, &str)]) -> Integration {
        let mut i = Integration::new(
            "api",
            IntegrationSpec {
                provider: "p".into(),
                secret_ref: SecretReference { name: "in".into() },
                ..IntegrationSpec::default()
            },
        );
        i.metadata.namespace = Some("ns".into());
        i.metadata.generation = Some(2);
        i.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        i
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn issued(lifetime_defaulted: bool, warning: Option<(Reason, String)>) -> Issued {
        Issued {
            fields: Credentials::new(BTreeMap::new()),
            expires_at: Some(at("2026-12-02T11:00:00Z")),
            lifetime_defaulted,
            provider_id: None,
            warning,
        }
    }

    fn ended(reason: ExchangeReason, written: bool, changed: bool) -> Ending {
        Ending::Issued {
            issued: issued(false, None),
            reason,
            renew_at: at("2026-12-02T10:50:00Z"),
            written,
            changed,
        }
    }

    fn ready(status: bool, reason: Reason, message: &str) -> Condition {
        Condition {
            type_: status::READY.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-12-02T09:00:00Z")),
        }
    }

    fn old(conditions: Vec<Condition>) -> IntegrationStatus {
        IntegrationStatus {
            conditions,
            ..IntegrationStatus::default()
        }
    }

    const NOW: &str = "2026-12-02T10:00:00Z";

    /// Which Event and Ready reason each way of ending an exchange reports.
    #[test]
    fn an_exchange_reports_the_event_its_reason_calls_for() {
        let plain = integration(&[]);
        let renew_now = integration(&[(RENEW_NOW_ANNOTATION, "1")]);
        let webhook = integration(&[(PROVIDER_EVENT_ANNOTATION, "evt-1")]);
        type Case<'a> = (
            &'a Integration,
            ExchangeReason,
            bool,
            bool,
            bool,
            Reason,
            Option<Reason>,
        );
        let cases: &[Case] = &[
            // (integration, why, previous failure, written, changed, Ready reason, Event)
            (
                &plain,
                ExchangeReason::Initial,
                false,
                true,
                true,
                Reason::Issued,
                Some(Reason::Issued),
            ),
            // A routine renewal is news to no one: no Event.
            (
                &plain,
                ExchangeReason::Renewal,
                false,
                true,
                true,
                Reason::Renewed,
                None,
            ),
            (
                &plain,
                ExchangeReason::Renewal,
                true,
                true,
                true,
                Reason::Renewed,
                Some(Reason::Recovered),
            ),
            (
                &plain,
                ExchangeReason::InputChanged,
                false,
                true,
                true,
                Reason::Issued,
                Some(Reason::Reissued),
            ),
            (
                &plain,
                ExchangeReason::Repair,
                false,
                true,
                true,
                Reason::Issued,
                Some(Reason::Repaired),
            ),
            // A check that found everything as it was wrote nothing: no Event.
            (
                &plain,
                ExchangeReason::Repair,
                false,
                false,
                false,
                Reason::Issued,
                None,
            ),
            (
                &renew_now,
                ExchangeReason::Requested,
                false,
                true,
                true,
                Reason::Renewed,
                Some(Reason::Renewed),
            ),
            (
                &webhook,
                ExchangeReason::Requested,
                false,
                true,
                false,
                Reason::Issued,
                Some(Reason::Renewed),
            ),
            (
                &plain,
                ExchangeReason::Reported,
                false,
                true,
                true,
                Reason::Renewed,
                Some(Reason::Renewed),
            ),
            (
                &plain,
                ExchangeReason::Reported,
                false,
                false,
                false,
                Reason::Issued,
                Some(Reason::StillAccepted),
            ),
        ];
        for (i, (integration, why, failed_before, written, changed, ready_reason, event)) in cases.iter().enumerate() {
            let report = on_success(
                integration,
                &old(vec![]),
                ended(*why, *written, *changed),
                *failed_before,
                at(NOW),
            );
            assert_eq!(report.wanted[0].reason, ready_reason.as_str(), "case {i}");
            assert!(report.wanted[0].status, "case {i}");
            assert_eq!(report.event.as_ref().map(|e| e.1), *event, "case {i}");
            assert_eq!(report.recheck_at, Some(at("2026-12-02T10:50:00Z")), "case {i}");
            assert!(
                report.clear_empty,
                "case {i}: an exchange clears fields that became empty"
            );
            assert_eq!(
                report.status.expires_at.as_deref(),
                Some("2026-12-02T11:00:00Z"),
                "case {i}"
            );
            assert_eq!(report.status.observed_generation, Some(2), "case {i}");
        }
    }

    #[test]
    fn an_exchange_answers_every_request_made_before_it() {
        let i = integration(&[
            (RENEW_NOW_ANNOTATION, "a"),
            (REJECTED_ANNOTATION, "b"),
            (PROVIDER_EVENT_ANNOTATION, "c"),
        ]);
        let report = on_success(
            &i,
            &old(vec![]),
            ended(ExchangeReason::Requested, true, true),
            false,
            at(NOW),
        );
        assert_eq!(report.status.renew_now_answered.as_deref(), Some("a"));
        assert_eq!(report.status.rejection_answered.as_deref(), Some("b"));
        assert_eq!(report.status.provider_event_answered.as_deref(), Some("c"));
    }

    #[test]
    fn an_issue_reports_its_warnings_beside_ready() {
        let ending = Ending::Issued {
            issued: issued(true, Some((Reason::ApiKeyPermissionLimited, "403 on the check".into()))),
            reason: ExchangeReason::Initial,
            renew_at: at("2026-12-02T10:50:00Z"),
            written: true,
            changed: true,
        };
        let report = on_success(&integration(&[]), &old(vec![]), ending, false, at(NOW));
        let warnings: Vec<&str> = report
            .wanted
            .iter()
            .filter(|w| w.type_ == status::WARNING)
            .map(|w| w.reason.as_str())
            .collect();
        assert_eq!(warnings, ["ExpiryNotProvided", "ApiKeyPermissionLimited"]);
    }

    #[test]
    fn an_up_to_date_look_keeps_ready_and_its_warning_and_reports_no_event() {
        let i = integration(&[]);
        let message = "credentials in Secret \"api\" are valid until 2026-12-02T11:00:00Z";
        let mut warning = ready(true, Reason::ApiKeyPermissionLimited, "limited");
        warning.type_ = status::WARNING.into();
        let before = old(vec![ready(true, Reason::Renewed, message), warning]);
        let schedule = output::Schedule {
            expires_at: Some(at("2026-12-02T11:00:00Z")),
            renew_at: Some(at("2026-12-02T10:50:00Z")),
            expiry_assumed: false,
        };
        let ending = Ending::UpToDate {
            recheck_at: Some(at("2026-12-02T10:50:00Z")),
            schedule,
            rerendered: false,
        };
        let report = on_success(&i, &before, ending, false, at(NOW));
        assert_eq!(report.wanted[0].reason, "Renewed", "a Ready=True reason is kept");
        assert_eq!(
            report.wanted[1].reason, "ApiKeyPermissionLimited",
            "the issue's warning holds"
        );
        assert!(report.event.is_none());
        assert!(!report.clear_empty, "only an exchange may null a field");
        assert!(!report.rollout_change);
        assert_eq!(
            report.status.renew_at.as_deref(),
            Some("2026-12-02T10:50:00Z"),
            "from the observed schedule"
        );

        // Rendered again: an Event, and the workloads must pick it up.
        let ending = Ending::UpToDate {
            recheck_at: None,
            schedule,
            rerendered: true,
        };
        let report = on_success(&i, &before, ending, false, at(NOW));
        assert_eq!(report.event.map(|e| e.1), Some(Reason::Rerendered));
        assert!(report.rollout_change);
    }

    #[test]
    fn waiting_reports_its_event_once() {
        let pending = || Ending::Pending {
            reason: Reason::AwaitingConnection,
            message: "open the link".into(),
            recheck_after: Duration::from_secs(60),
            started: Some("link created".into()),
        };
        let i = integration(&[]);
        let first = on_success(&i, &old(vec![]), pending(), false, at(NOW));
        assert_eq!(first.event.as_ref().map(|e| e.1), Some(Reason::AwaitingConnection));
        assert_eq!(first.status.awaiting.as_deref(), Some("link created"));
        assert_eq!(first.recheck_at, Some(at("2026-12-02T10:01:00Z")));
        let again = on_success(
            &i,
            &old(vec![ready(false, Reason::AwaitingConnection, "open the link")]),
            pending(),
            false,
            at(NOW),
        );
        assert!(again.event.is_none(), "the same wait is not news");
    }

    /// How a failure reads, by whether the last credentials still hold.
    #[test]
    fn a_failure_says_whether_the_last_credentials_still_hold() {
        let down = Error::Driver(Box::new(DriverError::Unavailable { message: "503".into() }));
        let cases: &[(Option<&str>, Reason, &str)] = &[
            (None, Reason::ProviderUnavailable, "the provider is unavailable: 503"),
            (
                Some("2026-12-02T11:00:00Z"),
                Reason::ProviderUnavailable,
                "the provider is unavailable: 503; the last issued credentials stay in place until they expire at 2026-12-02T11:00:00Z",
            ),
            (
                Some("2026-12-02T09:00:00Z"),
                Reason::Expired,
                "credentials expired at 2026-12-02T09:00:00Z and could not be renewed: the provider is unavailable: 503",
            ),
        ];
        for (expiry, reason, message) in cases {
            let (new, r, m) = on_failure(&old(vec![]), expiry.map(at), &down, Some(3), at(NOW));
            assert_eq!((r, m.as_str()), (*reason, *message));
            let ready = status::ready_condition(Some(&new)).unwrap();
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", reason.as_str())
            );
            assert_eq!(new.observed_generation, Some(3));
        }
        // The expiry the status records counts when the cache has none.
        let recorded = IntegrationStatus {
            expires_at: Some("2026-12-02T09:00:00Z".into()),
            ..IntegrationStatus::default()
        };
        assert_eq!(on_failure(&recorded, None, &down, None, at(NOW)).1, Reason::Expired);
    }

    #[test]
    fn a_held_refusal_keeps_its_message_and_records_the_refusal() {
        let held = Error::Held {
            message: "refused before".into(),
            hold: "fp-1".into(),
        };
        let (new, reason, message) = on_failure(&old(vec![]), None, &held, None, at(NOW));
        assert_eq!((reason, message.as_str()), (Reason::ReauthRequired, "refused before"));
        assert_eq!(new.refused_inputs.as_deref(), Some("fp-1"));
    }
}
