//! One reconcile of one Integration, as a pipeline:
//! observe (references, inputs, output Secret, status: one value) ->
//! decide (pure) -> exchange (driver) ->
//! write Secret -> write status (only when it changed) -> requeue.
//!
//! This module only sequences the steps; each lives in its own file:
//! [`observe`] (what one look reads), `plan::decide` (the pure decision, in
//! `controller::plan`), [`exchange`] (the driver), [`write`] (the output
//! Secret and the finalizer), [`report`] (status, Events, rollouts) and
//! [`cleanup`] (deletion).

mod cleanup;
mod exchange;
mod observe;
mod report;
mod write;

pub use observe::renew_before;
pub(super) use report::{publish, status_patch_params};

use crate::reasons::Reason;
use exchange::Exchanged;
pub use observe::parse_disabled;
use observe::{Observation, Reading, disabled_report, observe, recorded, refusal_message, refusal_of, uid};
use report::{finish, record_failure};
use std::{sync::Arc, time::Duration};
use write::{check_type, ensure_finalizer, rerender, template_error};

use jiff::Timestamp;
use kube::ResourceExt;
use tracing::{debug, info, instrument};

use super::{
    CachedIntegration, Context, Error, IntegrationKey, output, pace,
    plan::{self, Decision, ExchangeReason},
    schedule, status, templates, watchdog,
};
use crate::{
    crd::Integration,
    providers::{Issued, Priority},
};

/// How long before the stall watchdog would call a renewal overdue the
/// pace stops holding it back (the renewal itself takes a moment).
const PACED_BEFORE_OVERDUE: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

/// Field manager of the output Secret.
pub const SECRET_MANAGER: &str = "integration-operator";

/// Field manager of the Integration's status.
pub const STATUS_MANAGER: &str = "integration-operator/status";

/// Finalizer held while provider-side state must be undone on deletion.
pub const CLEANUP_FINALIZER: &str = "integration-operator.io/cleanup";

/// Annotation a person sets to allow a one-shot step to run again (its value
/// must match what the condition message names).
pub const RETRY_ANNOTATION: &str = "integration-operator.io/retry";

/// Annotation a person or a consuming application sets (to a new value, a
/// timestamp say) to have the credentials exchanged again now.
pub const RENEW_NOW_ANNOTATION: &str = "integration-operator.io/renew-now";

/// Annotation a consuming application sets (to a new value) when the
/// provider rejected the published credentials: the operator re-validates
/// or renews them. The chart's opt-in `feedback` role lets an application's
/// ServiceAccount set this annotation and nothing else.
pub const REJECTED_ANNOTATION: &str = "integration-operator.io/credentials-rejected";

/// Annotation the operator's inbound server sets (to the id of a verified
/// provider webhook about this Integration, e.g. Kombo's
/// `integration-state-changed`) so that the leader checks the integration
/// with the provider at once; answered in `status.providerEventAnswered`.
/// Anyone who may set it could equally set renew-now: it asks for a check,
/// capped like renew-now, and carries nothing the operator trusts.
pub const PROVIDER_EVENT_ANNOTATION: &str = "integration-operator.io/provider-event";

/// Annotation the operator's inbound server sets to `<id> <attestation>`
/// when a verified provider webhook reports the provider-side object created
/// for this Integration (Kombo's `integration-created`). The attestation is
/// a MAC under the operator's key bound to the Integration's uid (see
/// [`output::Fingerprinter::attest`]): a value without a valid one is
/// ignored, and the driver still checks the id with the provider.
pub const REPORTED_ID_ANNOTATION: &str = "integration-operator.io/provider-reported-id";

/// Annotation the operator's inbound server sets to `<id> <time> <attestation>`
/// when a verified provider callback reports the provider-side integration
/// `id` of this Integration disabled (SmartRecruiters' `INTEGRATION_DISABLED`),
/// `time` being when it was received (Unix seconds). The attestation is a
/// MAC under the operator's key over the Integration's uid, `id` and `time`
/// ([`output::Fingerprinter::attest_disabled`]): a value without a valid one
/// is ignored. While `id` is the integration status records, the leader
/// sends nothing to the provider for it and shows `ReauthRequired`, until a
/// person sets [`RETRY_ANNOTATION`] to `id`.
pub const PROVIDER_DISABLED_ANNOTATION: &str = "integration-operator.io/provider-disabled";

/// Input fingerprint written with checkpoints: never equal to a real one, so
/// an unfinished flow is always resumed.
pub(crate) const UNFINISHED: &str = "unfinished";

/// Fail points of the reconcile pipeline, for tests that kill the operator at
/// each step of a flow and check what a restarted one makes of it.
///
/// They exist only in builds with the `fail` crate's `failpoints` feature,
/// which only the dev-dependency turns on: `cargo test` / `cargo nextest`
/// build the library and the `integration-operator` binary with it, a release
/// build has none and every point compiles to nothing. The binary reads the
/// `FAILPOINTS` environment variable at start (`name=return;...`); a point
/// set to `return` ends the process on the spot (abort, like `kill -9`:
/// nothing is flushed, released or written).
pub mod failpoints {
    /// Before the provider call, after the decision to exchange.
    pub const BEFORE_EXCHANGE: &str = "before-exchange";
    /// After the provider issued credentials, before the output Secret write.
    pub const AFTER_EXCHANGE: &str = "after-exchange";
    /// After the output Secret write, before the status write.
    pub const AFTER_SECRET_WRITE: &str = "after-secret-write";
    /// Every fail point above.
    pub const ALL: &[&str] = &[BEFORE_EXCHANGE, AFTER_EXCHANGE, AFTER_SECRET_WRITE];
    /// A routine renewal that never ends (set to `return`): a stuck worker,
    /// for the stall watchdog's test. Not in [`ALL`]: it stalls, not aborts.
    pub const STALL_RENEWAL: &str = "stall-renewal";
}

enum EndingKind {
    Issued,
    Other,
}

/// What the pipeline ended with, before status is written.
enum Ending {
    UpToDate {
        recheck_at: Option<Timestamp>,
        /// The schedule written with the credentials: as observed, or as
        /// written again by a re-render.
        schedule: output::Schedule,
        /// The Secret was written again with another type or templates,
        /// from the credentials it held.
        rerendered: bool,
    },
    Issued {
        issued: Issued,
        reason: ExchangeReason,
        renew_at: Timestamp,
        /// The Secret was written (a re-validation writes its new
        /// schedule; one that found everything as it was writes nothing).
        written: bool,
        /// The credentials themselves changed.
        changed: bool,
    },
    Pending {
        reason: Reason,
        message: String,
        recheck_after: Duration,
        started: Option<String>,
    },
}

#[instrument(skip_all, fields(namespace = %key.namespace(), name = %key.name(), generation = tracing::field::Empty))]
pub async fn reconcile(key: IntegrationKey, cached: Arc<CachedIntegration>, ctx: Arc<Context>) -> Result<(), Error> {
    let _timer = ctx.metrics.reconcile_timer();
    ctx.wait_for_caches().await;
    // The cache keeps a compact form; this look works on the whole object.
    let integration = cached.expand(&key);
    tracing::Span::current().record("generation", integration.metadata.generation);
    let next_look = look(&integration, &ctx, &key).await;
    ctx.health.progressed();
    // The next look is kept in the compact timetable; after a failure the
    // error policy decides.
    match next_look {
        Ok(Some(NextLook::Scheduled(after))) => ctx.timetable.set(&key, tokio::time::Instant::now() + after),
        Ok(Some(NextLook::PutOff(after))) => ctx.timetable.put_off(&key, tokio::time::Instant::now() + after),
        Ok(None) | Err(_) => ctx.timetable.clear(&key),
    }
    next_look.map(|_| ())
}

/// When to look at an Integration again.
enum NextLook {
    /// A new look: it counts in the schedule's load and rate.
    Scheduled(Duration),
    /// A routine renewal that came due, put off to a later turn: it was
    /// counted where it was scheduled and is not counted again (or a
    /// backlog would raise the rate it is paced to).
    PutOff(Duration),
}

/// One look at an Integration; returns when to look again, if ever.
async fn look(integration: &Integration, ctx: &Context, key: &IntegrationKey) -> Result<Option<NextLook>, Error> {
    let now = Timestamp::now();
    if integration.metadata.deletion_timestamp.is_some() {
        // The output Secret is garbage-collected through its owner reference;
        // provider-side state is undone here, under the finalizer.
        return match cleanup::run(integration, ctx).await {
            Ok(next) => Ok(next.map(NextLook::Scheduled)),
            Err(err) => {
                record_failure(integration, ctx, &err, now).await;
                Err(err)
            }
        };
    }
    let recorded = recorded(integration);
    let routine_until = plan::routine_until(&recorded, now);
    let routine = routine_until.is_some();
    if routine && ctx.limiter.routine_would_wait(&integration.spec.provider) {
        // The provider's slots are taken: waiting for one here would hold a
        // reconcile slot that a new or changed Integration needs. Look again
        // shortly; past half its window the renewal stops being routine.
        ctx.metrics.reconciled("deferred");
        return Ok(Some(NextLook::PutOff(Duration::from_millis(rand::random_range(
            500..2000,
        )))));
    }
    if let Some(until) = routine_until {
        // Routine renewals start no faster than the schedule's own rate
        // (with headroom): a backlog left by a stall is caught up at that
        // pace, not in one burst at the provider. One told to wait gives
        // its reconcile slot back and comes back at its reserved turn.
        // Never paced past the point the stall watchdog would call it
        // overdue either: a deliberate wait is not a stall.
        let overdue = recorded
            .renew_at
            .map(|renew_at| watchdog::overdue_at(renew_at, recorded.expires_at, ctx.stall_after));
        let until = overdue.map_or(until, |overdue| {
            until.min(overdue.saturating_sub(PACED_BEFORE_OVERDUE).unwrap_or(overdue))
        });
        let monotonic = tokio::time::Instant::now();
        let routine_end = monotonic + until_instant(now, until);
        let turn = ctx.pace.turn(key, monotonic, routine_end, |from, to| {
            ctx.timetable.scheduled_within(from, to)
        });
        if let pace::Turn::At(at) = turn {
            ctx.metrics.reconciled("paced");
            return Ok(Some(NextLook::PutOff(at.saturating_duration_since(monotonic))));
        }
    }
    let result = pipeline(integration, key, ctx, now, routine).await;
    match result {
        Ok(ending) => {
            let previous_failure = ctx.failures.reset(key);
            ctx.warnings.clear(key);
            let next = finish(integration, ctx, ending, previous_failure, now).await?;
            ctx.metrics.reconciled("success");
            Ok(next.map(NextLook::Scheduled))
        }
        Err(err) => {
            ctx.metrics.reconciled(err.reason().as_str());
            record_failure(integration, ctx, &err, now).await;
            Err(err)
        }
    }
}

async fn pipeline(
    integration: &Integration,
    key: &IntegrationKey,
    ctx: &Context,
    now: Timestamp,
    routine: bool,
) -> Result<Ending, Error> {
    let mut seen = observe(integration, ctx, Reading::UnlessUnchanged).await?;
    let mut decision = decide(integration, ctx, &seen, now)?;
    if matches!(decision, Decision::Exchange(_)) && !seen.read_inputs() {
        // The exchange sends the input values: read them now, and decide
        // again from them (they may have changed since the watch saw them).
        seen = observe(integration, ctx, Reading::Always).await?;
        decision = decide(integration, ctx, &seen, now)?;
    }
    let Observation {
        resolved,
        input_fingerprint,
        secret: existing,
        template_fingerprint,
        status: state,
        recorded,
        ..
    } = &seen;
    let keeps_state = resolved.flow.keeps_state();
    let reason = match decision {
        Decision::UpToDate { recheck_at } => {
            debug!(renew_at = ?recheck_at, "credentials are current");
            return Ok(Ending::UpToDate {
                recheck_at,
                schedule: existing.schedule,
                rerendered: false,
            });
        }
        Decision::Rerender { recheck_at } => {
            match rerender(integration, ctx, existing, seen.stamp(), keeps_state).await? {
                Some((written, schedule)) => {
                    info!("output Secret rendered again from the credentials it holds");
                    return Ok(Ending::UpToDate {
                        recheck_at,
                        schedule,
                        rerendered: written,
                    });
                }
                // Not as recorded after all (gone or edited since): repair.
                None => ExchangeReason::Repair,
            }
        }
        Decision::Exchange(reason) => reason,
    };
    let refusal = refusal_of(integration, ctx, input_fingerprint);
    if plan::held(state.refused_inputs.as_deref(), &refusal) {
        // Refused before, unchanged since: sending them again would
        // only count as one more failed login.
        debug!("the provider refused these inputs before; holding them");
        return Err(Error::Held {
            message: refusal_message(state)
                .unwrap_or_else(|| format!("{}; the provider refused them", super::REFUSAL_HOLD)),
            hold: refusal,
        });
    }
    // What can be known to fail without a credential value fails
    // before anything is sent: a provider call whose answer could
    // not be written would be wasted, and a one-shot flow's lost.
    if let Some(spec) = templates::of(integration) {
        templates::check(spec).map_err(template_error)?;
    }
    check_type(integration, ctx, existing, template_fingerprint.as_deref(), keeps_state).await?;
    info!(reason = reason.as_str(), "exchanging credentials");
    if reason == ExchangeReason::Renewal {
        let stall = (|| {
            fail::fail_point!(failpoints::STALL_RENEWAL, |_| true);
            false
        })();
        if stall {
            std::future::pending::<()>().await;
        }
    }
    if resolved.driver.needs_cleanup(&resolved.flow) {
        // Before anything is created at the provider.
        ensure_finalizer(integration, ctx).await?;
    }
    let renew_before = renew_before(integration)?;
    // `answered` is when the provider answered: a revalidation
    // interval runs from the validation itself, not from the start
    // of a reconcile whose API reads came before it.
    let plan = |expires_at: Option<Timestamp>, expiry_assumed: bool, answered: Timestamp| output::Schedule {
        expires_at,
        expiry_assumed,
        renew_at: Some(match expires_at {
            // Of the quarter-seconds in its span, the one with the fewest looks
            // already scheduled: a burst of issues renews spread out. The
            // place is taken in the timetable at once, so the renewals
            // placed by concurrent reconciles spread too (the look set
            // when this reconcile ends replaces it).
            Some(expires_at) => {
                let (wall, monotonic) = (Timestamp::now(), tokio::time::Instant::now());
                let instant =
                    |at: Timestamp| monotonic + Duration::try_from(at.duration_since(wall)).unwrap_or_default();
                let mut renew_at = expires_at;
                ctx.timetable.set_by_load(key, |load| {
                    renew_at =
                        schedule::renew_at_least_loaded(now, expires_at, renew_before, &uid(integration), |at| {
                            load(instant(at))
                        });
                    instant(renew_at)
                });
                renew_at
            }
            None => {
                answered
                    + jiff::SignedDuration::try_from(resolved.provider.revalidate_interval)
                        .unwrap_or(jiff::SignedDuration::from_secs(3600))
            }
        }),
    };
    // Renewals early in their window yield to everything else at
    // the provider's limiter; late ones are urgent.
    let priority = if plan::yields(reason, routine, recorded, now) {
        Priority::Routine
    } else {
        Priority::Urgent
    };
    if routine && reason == ExchangeReason::Renewal {
        // Its turn, taken when the look began, admitted it; a stall since
        // (its input read waiting on the API server) can have bunched it
        // with the renewals admitted after it. Their provider calls keep
        // the pace's spacing all the same (a wait of at most a reconcile
        // slot's share: those held up together are at most the slots).
        tokio::time::sleep_until(ctx.pace.call_at(tokio::time::Instant::now())).await;
    }
    let exchanged = exchange::run(integration, ctx, &seen, now, &plan, priority).await?;
    match exchanged {
        Exchanged::Issued {
            issued,
            written,
            changed,
            renew_at,
        } => {
            let renew_at = renew_at.unwrap_or(now);
            Ok(Ending::Issued {
                issued,
                reason,
                renew_at,
                written,
                changed,
            })
        }
        Exchanged::Pending {
            reason,
            message,
            recheck_after,
            started,
        } => Ok(Ending::Pending {
            reason,
            message,
            recheck_after,
            started,
        }),
    }
}

/// What a look does with what it observed (the pure [`plan::decide`],
/// unless a verified provider callback reported the integration disabled).
fn decide(integration: &Integration, ctx: &Context, seen: &Observation, now: Timestamp) -> Result<Decision, Error> {
    let state = &seen.status;
    // A verified provider callback reported the integration status records
    // disabled: the customer switched it off. Its credentials would only be
    // refused (each refusal one more failed login), so nothing is sent
    // until a person asks for it to be created again, and the condition
    // says so at once rather than at the next renewal.
    if let Some((id, at)) = disabled_report(integration, ctx, state) {
        if integration.annotations().get(RETRY_ANNOTATION) != Some(&id) {
            return Err(Error::invalid(
                Reason::ReauthRequired,
                format!(
                    "ClusterProvider {:?} reported integration {id} disabled (a verified callback received at {}): the customer switched it off, so the operator neither renews its credentials nor creates it again by itself; the last credentials stay in the output Secret, but the provider will refuse them. Once the customer wants it back, set the annotation {RETRY_ANNOTATION}={id} to create a new one",
                    seen.resolved.provider.name,
                    Timestamp::from_second(at).map(status::rfc3339).unwrap_or_default(),
                ),
            ));
        }
        // Asked for: one exchange (the driver creates the integration again
        // once the provider refuses the old credentials), not one per look.
        if status::parse_time(state.last_exchange_time.as_ref()).is_none_or(|t| t.as_second() <= at) {
            return Ok(Decision::Exchange(ExchangeReason::Requested));
        }
    }
    Ok(plan::decide(&seen.facts(integration, ctx.report_interval), now))
}

/// From `now` to `at`, none if `at` has passed.
fn until_instant(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    until_instant(now, at).max(Duration::from_millis(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_disabled_value_is_id_time_and_attestation() {
        assert_eq!(
            parse_disabled("7cbc0f64 1780000000 00ff"),
            Some(("7cbc0f64", 1_780_000_000, "00ff"))
        );
        for bad in [
            "",
            "7cbc0f64",
            "7cbc0f64 1780000000",
            "7cbc0f64 soon 00ff",
            "7cbc0f64 1780000000 00ff extra",
            " 1780000000 00ff",
        ] {
            assert_eq!(parse_disabled(bad), None, "{bad:?}");
        }
        // What the receiver writes, the leader reads back and verifies.
        let f = output::Fingerprinter::new(vec![1; 32]);
        let value = format!("iid 1780000000 {}", f.attest_disabled("uid", "iid", 1_780_000_000));
        let (id, at, attestation) = parse_disabled(&value).unwrap();
        assert!(f.attested_disabled("uid", id, at, attestation));
    }
}
