//! One reconcile of one Integration, as a pipeline:
//! resolve -> observe output Secret -> decide (pure) -> exchange (driver) ->
//! write Secret -> write status (only when it changed) -> requeue.
//!
//! Only this module sequences the steps; each step lives in its own module.

use crate::reasons::Reason;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::{
    Context, Error,
    events::EventType,
    output, owned,
    plan::{self, Decision, ExchangeReason, Facts, SecretState},
    resolve::{self, Resolved},
    schedule::{self, RenewBefore},
    status::{self, Wanted},
    templates::{self, TemplateError},
};
use crate::{
    crd::{Integration, IntegrationStatus},
    providers::{
        Checkpoint, CleanupRequest, Credentials, DriverError, ExchangeRequest, Issued, Outcome,
        limiter::{self, Priority},
    },
};

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
        /// The schedule of the Secret version the decision read, when it
        /// was read from the API server (fresher than the cache).
        observed: Option<output::Schedule>,
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

#[instrument(skip_all, fields(namespace = %integration.namespace().unwrap_or_default(), name = %integration.name_any(), generation = integration.metadata.generation))]
pub async fn reconcile(integration: Arc<Integration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    ctx.wait_for_caches().await;
    let key = ObjectRef::from_obj(&*integration);
    let next_look = look(&integration, &ctx, &key).await;
    ctx.health.progressed();
    // The next look is kept in the compact timetable, not kube-runtime's
    // scheduler (see timetable.rs); after a failure the error policy decides.
    match next_look {
        Ok(Some(after)) => ctx.timetable.set(&key, tokio::time::Instant::now() + after),
        Ok(None) | Err(_) => ctx.timetable.clear(&key),
    }
    next_look.map(|_| Action::await_change())
}

/// One look at an Integration; returns when to look again, if ever.
async fn look(
    integration: &Integration,
    ctx: &Context,
    key: &ObjectRef<Integration>,
) -> Result<Option<Duration>, Error> {
    let now = Timestamp::now();
    if integration.metadata.deletion_timestamp.is_some() {
        // The output Secret is garbage-collected through its owner reference;
        // provider-side state is undone here, under the finalizer.
        return match cleanup(integration, ctx).await {
            Ok(next) => Ok(next),
            Err(err) => {
                record_failure(integration, ctx, &err, now).await;
                Err(err)
            }
        };
    }
    let routine = plan::routine_renewal(&recorded(integration), now);
    if routine && ctx.limiter.routine_would_wait(&integration.spec.provider) {
        // The provider's slots are taken: waiting for one here would hold a
        // reconcile slot that a new or changed Integration needs. Look again
        // shortly; past half its window the renewal stops being routine.
        ctx.metrics.reconciled("deferred");
        return Ok(Some(Duration::from_millis(rand::random_range(500..2000))));
    }
    let result = pipeline(integration, ctx, now, routine).await;
    match result {
        Ok(ending) => {
            let previous_failure = ctx.failures.reset(key);
            ctx.warnings.clear(key);
            let next = finish(integration, ctx, ending, previous_failure, now).await?;
            ctx.metrics.reconciled("success");
            Ok(next)
        }
        Err(err) => {
            ctx.metrics.reconciled(err.reason().as_str());
            record_failure(integration, ctx, &err, now).await;
            Err(err)
        }
    }
}

async fn pipeline(integration: &Integration, ctx: &Context, now: Timestamp, routine: bool) -> Result<Ending, Error> {
    // Independent reads, asked at once: a first issue waits for one round
    // trip instead of two.
    let (resolved, existing) = tokio::join!(resolve::resolve(integration, ctx), observe_secret(integration, ctx));
    let resolved = resolved?;
    let context = fingerprint_context(integration, &resolved)?;
    let input_fingerprint = ctx.fingerprinter.inputs(&context, &resolved.inputs);
    let existing = existing?;
    let state = status_of(integration);
    let template_fingerprint = ctx.fingerprinter.template(integration.spec.target.as_deref());
    let facts = Facts {
        input_fingerprint: input_fingerprint.clone(),
        secret: existing.state.clone(),
        issued_before: state.last_exchange_time.is_some(),
        renew_request: plan::renew_request(
            integration.annotations().get(RENEW_NOW_ANNOTATION).map(String::as_str),
            state.renew_now_answered.as_deref(),
            status::parse_time(state.last_exchange_time.as_ref()),
        )
        .or_else(|| {
            plan::rejection_report(
                integration.annotations().get(REJECTED_ANNOTATION).map(String::as_str),
                state.rejection_answered.as_deref(),
                status::parse_time(state.last_exchange_time.as_ref()),
                ctx.report_interval,
            )
        })
        .or_else(|| {
            // A provider webhook about this Integration: check it now,
            // capped like a renew-now request.
            plan::renew_request(
                integration
                    .annotations()
                    .get(PROVIDER_EVENT_ANNOTATION)
                    .map(String::as_str),
                state.provider_event_answered.as_deref(),
                status::parse_time(state.last_exchange_time.as_ref()),
            )
        }),
        template_fingerprint: template_fingerprint.clone(),
    };
    let keeps_state = resolved.flow.keeps_state();
    let reason = match plan::decide(&facts, now) {
        Decision::UpToDate { recheck_at } => {
            debug!(renew_at = ?recheck_at, "credentials are current");
            return Ok(Ending::UpToDate {
                recheck_at,
                observed: existing
                    .secret
                    .as_ref()
                    .map(|s| output::Schedule::from_annotations(s.annotations())),
                rerendered: false,
            });
        }
        Decision::Rerender { recheck_at } => {
            match rerender(integration, ctx, &existing, &input_fingerprint, keeps_state).await? {
                Some((written, observed)) => {
                    info!("output Secret rendered again from the credentials it holds");
                    return Ok(Ending::UpToDate {
                        recheck_at,
                        observed: Some(observed),
                        rerendered: written,
                    });
                }
                // Not as recorded after all (gone or edited since): repair.
                None => ExchangeReason::Repair,
            }
        }
        Decision::Exchange(reason) => reason,
    };
    let refusal = refusal_of(integration, ctx, &input_fingerprint);
    if plan::held(state.refused_inputs.as_deref(), &refusal) {
        // Refused before, unchanged since: sending them again would
        // only count as one more failed login.
        debug!("the provider refused these inputs before; holding them");
        return Err(Error::Held {
            message: refusal_message(&state)
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
    check_type(
        integration,
        ctx,
        &existing,
        template_fingerprint.as_deref(),
        keeps_state,
    )
    .await?;
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
            Some(expires_at) => schedule::renew_at(now, expires_at, renew_before, &uid(integration)),
            None => {
                answered
                    + jiff::SignedDuration::try_from(resolved.provider.revalidate_interval)
                        .unwrap_or(jiff::SignedDuration::from_secs(3600))
            }
        }),
    };
    // Renewals early in their window yield to everything else at
    // the provider's limiter; late ones are urgent.
    let priority = if plan::yields(reason, routine, &recorded(integration), now) {
        Priority::Routine
    } else {
        Priority::Urgent
    };
    let exchanged = limiter::with_priority(
        priority,
        exchange(integration, ctx, &resolved, &existing, &input_fingerprint, now, &plan),
    )
    .await?;
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

/// The output Secret as found, and its data when it had to be read.
struct Observed {
    state: SecretState,
    /// Fields already in the Secret (read only when needed).
    secret: Option<Secret>,
}

async fn observe_secret(integration: &Integration, ctx: &Context) -> Result<Observed, Error> {
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let key = ObjectRef::<k8s_openapi::api::core::v1::Secret>::new(&name).within(&namespace);
    let cached = ctx.owned_secrets.get(&namespace, &name);
    let Some(cached) = cached else {
        // Not in the label-selected cache. The cache may lag behind our own
        // write (a status event can arrive first), and a provider call must
        // never rest on a stale "missing": ask the API server.
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        return match api.get_opt(&name).await? {
            None => Ok(Observed {
                state: SecretState::Missing,
                secret: None,
            }),
            Some(secret) if !output::is_owned_by(&secret.metadata, integration) => Err(not_owned(&name)),
            Some(secret) => Ok(examine(secret, ctx, &key)),
        };
    };
    if !cached.is_owned_by(integration) {
        return Err(not_owned(&name));
    }
    let rv = cached.resource_version.to_string();
    let fingerprint = cached.input_fingerprint.as_deref().unwrap_or_default().to_string();
    let written = cached.schedule;
    let template_fingerprint = cached.template_fingerprint().map(String::from);
    let intact = || SecretState::Intact {
        input_fingerprint: fingerprint.clone(),
        renew_at: written.renew_at,
        expires_at: written.expires_at,
        template_fingerprint: template_fingerprint.clone(),
    };
    if ctx.verified.is_verified(&key, &rv) {
        return Ok(Observed {
            state: intact(),
            secret: None,
        });
    }
    // A version we did not write or check (someone edited it, or the operator
    // restarted): read the data once and check it against its content hash.
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(secret) = api.get_opt(&name).await? else {
        return Ok(Observed {
            state: SecretState::Missing,
            secret: None,
        });
    };
    if !output::is_owned_by(&secret.metadata, integration) {
        return Err(not_owned(&name));
    }
    Ok(examine(secret, ctx, &key))
}

/// Checks a freshly read output Secret against its content hash.
fn examine(secret: Secret, ctx: &Context, key: &ObjectRef<Secret>) -> Observed {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let written = output::Schedule::from_annotations(&annotations);
    let state = if output::is_intact(&secret, &ctx.fingerprinter) {
        ctx.verified
            .record(key, secret.metadata.resource_version.as_deref().unwrap_or_default());
        SecretState::Intact {
            input_fingerprint: annotations
                .get(output::INPUT_FINGERPRINT_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            renew_at: written.renew_at,
            expires_at: written.expires_at,
            template_fingerprint: annotations.get(output::TEMPLATE_FINGERPRINT_ANNOTATION).cloned(),
        }
    } else {
        warn!(secret = %secret.metadata.name.clone().unwrap_or_default(), "output Secret was changed by someone else; repairing");
        SecretState::Tampered
    };
    Observed {
        state,
        secret: Some(secret),
    }
}

fn not_owned(name: &str) -> Error {
    Error::invalid(
        Reason::TargetSecretNotOwned,
        format!(
            "Secret {name:?} exists and is not owned by this Integration; choose another spec.target.name or delete that Secret"
        ),
    )
}

/// The condition for a template that cannot be used.
fn template_error(e: TemplateError) -> Error {
    let reason = match e {
        TemplateError::Failed { .. } => Reason::InvalidTemplate,
        TemplateError::Conflict { .. } => Reason::TemplateKeyConflict,
    };
    Error::invalid(
        reason,
        format!("{e}; the output Secret was not rewritten with these templates"),
    )
}

/// The condition for a Secret type the existing Secret does not have.
fn type_changed(name: &str, found: Option<&str>, wanted: &str, keeps_state: bool) -> Error {
    let found = found.map(|f| format!(" has type {f:?} and")).unwrap_or_default();
    let how = if keeps_state {
        format!(
            "set spec.target.type back: this flow keeps credentials the provider shows only once in Secret {name:?}, and deleting it would lose them"
        )
    } else {
        format!(
            "delete Secret {name:?} and the operator writes it again with the new type (issuing new credentials), or set spec.target.type back"
        )
    };
    Error::invalid(
        Reason::SecretTypeChanged,
        format!(
            "Secret {name:?}{found} spec.target.type asks for {wanted:?}; Kubernetes cannot change a Secret's type and the operator never deletes Secrets: {how}. The Secret stays as it is"
        ),
    )
}

/// Refuses a write that would change the existing output Secret's type,
/// before any provider call. The type is known without a read when the
/// Secret was written with the type and templates the spec asks for.
async fn check_type(
    integration: &Integration,
    ctx: &Context,
    existing: &Observed,
    wanted_fingerprint: Option<&str>,
    keeps_state: bool,
) -> Result<(), Error> {
    let found = match (&existing.state, &existing.secret) {
        (SecretState::Missing, _) => return Ok(()),
        (_, Some(secret)) => secret.type_.clone(),
        (
            SecretState::Intact {
                template_fingerprint, ..
            },
            None,
        ) if template_fingerprint.as_deref() == wanted_fingerprint => {
            return Ok(());
        }
        _ => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
            match api.get_opt(&output::target_name(integration)).await? {
                Some(secret) if output::is_owned_by(&secret.metadata, integration) => secret.type_,
                _ => return Ok(()),
            }
        }
    };
    compare_type(integration, found.as_deref(), keeps_state)
}

fn compare_type(integration: &Integration, found: Option<&str>, keeps_state: bool) -> Result<(), Error> {
    let wanted = output::secret_type(integration.spec.target.as_deref()).as_str();
    if found.unwrap_or("Opaque") == wanted {
        Ok(())
    } else {
        Err(type_changed(
            &output::target_name(integration),
            found,
            wanted,
            keeps_state,
        ))
    }
}

/// Writes the output Secret again, with the type and templates the spec
/// asks for now, from the credentials it holds: no provider call. `None`
/// when the Secret is not as recorded after all (gone, or edited since).
/// Returns whether it wrote, and the schedule recorded with the credentials.
async fn rerender(
    integration: &Integration,
    ctx: &Context,
    existing: &Observed,
    input_fingerprint: &str,
    keeps_state: bool,
) -> Result<Option<(bool, output::Schedule)>, Error> {
    if let Some(spec) = templates::of(integration) {
        templates::check(spec).map_err(template_error)?;
    }
    let secret = match &existing.secret {
        // Read and checked against its content hash when observed.
        Some(secret) => secret.clone(),
        None => {
            let name = output::target_name(integration);
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
            match api.get_opt(&name).await? {
                None => return Ok(None),
                Some(secret) if !output::is_owned_by(&secret.metadata, integration) => return Err(not_owned(&name)),
                Some(secret) if !output::is_intact(&secret, &ctx.fingerprinter) => return Ok(None),
                Some(secret) => secret,
            }
        }
    };
    compare_type(integration, secret.type_.as_deref(), keeps_state)?;
    let (fields, _) = output::split(&secret);
    let rendered = templates::render(integration, &fields).map_err(template_error)?;
    let schedule = output::Schedule::from_annotations(secret.annotations());
    let (written, _) = write_secret(integration, ctx, &fields, &rendered, input_fingerprint, schedule, false).await?;
    Ok(Some((written, schedule)))
}

/// What an exchange ended with.
enum Exchanged {
    Issued {
        issued: Issued,
        written: bool,
        /// The credentials differ from those the Secret held (not only
        /// their schedule).
        changed: bool,
        /// As written with the credentials.
        renew_at: Option<Timestamp>,
    },
    Pending {
        reason: Reason,
        message: String,
        recheck_after: Duration,
        started: Option<String>,
    },
}

/// Persists a flow's intermediate state in the output Secret.
struct SecretCheckpoint<'a> {
    integration: &'a Integration,
    ctx: &'a Context,
    persisted: tokio::sync::Mutex<Credentials>,
    /// The rendered keys the Secret held when the exchange began: kept as
    /// they are while the flow is unfinished.
    carried: BTreeMap<String, String>,
    /// The output Secret was missing when this reconcile looked, and nothing
    /// has been written since: the first write can create it at once.
    seen_missing: AtomicBool,
}

#[async_trait::async_trait]
impl Checkpoint for SecretCheckpoint<'_> {
    async fn save(&self, set: &Credentials, remove: &[&str]) -> Result<Credentials, DriverError> {
        let mut persisted = self.persisted.lock().await;
        let updated = persisted.updated(set, remove);
        let rendered = templates::carried(self.integration, &updated, &self.carried);
        write_secret(
            self.integration,
            self.ctx,
            &updated,
            &rendered,
            UNFINISHED,
            output::Schedule::default(),
            self.seen_missing.load(Ordering::Relaxed),
        )
        .await
        .map_err(|e| DriverError::CheckpointFailed {
            message: format!("writing the output Secret failed: {e}"),
        })?;
        // Server-side apply never removes a key another field manager also
        // owns, and the keys of the Secret's first write (a create) are owned
        // by that create: remove dropped keys explicitly.
        let dropped: Vec<&str> = remove.iter().copied().filter(|k| persisted.get(k).is_some()).collect();
        if !dropped.is_empty() {
            remove_secret_keys(self.integration, self.ctx, &dropped)
                .await
                .map_err(|e| DriverError::CheckpointFailed {
                    message: format!("removing keys from the output Secret failed: {e}"),
                })?;
        }
        *persisted = updated.clone();
        Ok(updated)
    }
}

/// Removes `keys` from the output Secret's data (a merge patch with nulls).
async fn remove_secret_keys(integration: &Integration, ctx: &Context, keys: &[&str]) -> Result<(), Error> {
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let data: serde_json::Map<String, serde_json::Value> =
        keys.iter().map(|k| (k.to_string(), serde_json::Value::Null)).collect();
    let params = PatchParams {
        field_manager: Some(SECRET_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let written = api
        .patch(&name, &params, &Patch::Merge(json!({ "data": data })))
        .await?;
    ctx.verified.record(
        &ObjectRef::<Secret>::new(&name).within(&namespace),
        written.metadata.resource_version.as_deref().unwrap_or_default(),
    );
    Ok(())
}

/// Runs the driver; writes the output Secret when it issues credentials.
async fn exchange(
    integration: &Integration,
    ctx: &Context,
    resolved: &Resolved,
    existing: &Observed,
    input_fingerprint: &str,
    now: Timestamp,
    plan: &(dyn Fn(Option<Timestamp>, bool, Timestamp) -> output::Schedule + Sync),
) -> Result<Exchanged, Error> {
    let (persisted, carried) = match &existing.secret {
        Some(secret) => output::split(secret),
        // A renewal of a stateless flow needs nothing from the old Secret:
        // no read.
        None if !resolved.flow.keeps_state() => (Credentials::default(), BTreeMap::new()),
        None => read_persisted(integration, ctx).await?,
    };
    let checkpoint = SecretCheckpoint {
        integration,
        ctx,
        persisted: tokio::sync::Mutex::new(persisted.clone()),
        carried,
        seen_missing: AtomicBool::new(matches!(existing.state, SecretState::Missing)),
    };
    let identity = uid(integration);
    let retry = integration.annotations().get(RETRY_ANNOTATION).cloned();
    let state_key = ctx.fingerprinter.state_key();
    let reported = reported_id(integration, ctx, &identity);
    let request = ExchangeRequest {
        state_key: Some(&state_key),
        provider: &resolved.provider,
        flow: &resolved.flow,
        inputs: &resolved.inputs,
        persisted: &persisted,
        checkpoint: &checkpoint,
        peers: &resolve::ClusterPeers { integration, ctx },
        identity: &identity,
        retry_requested: retry.as_deref(),
        recorded_id: integration.status.as_ref().and_then(|s| s.integration_id.as_deref()),
        recorded_awaiting: integration.status.as_ref().and_then(|s| s.awaiting.as_deref()),
        reported_id: reported.as_deref(),
        now,
    };
    let started = std::time::Instant::now();
    fail::fail_point!(failpoints::BEFORE_EXCHANGE, |_| std::process::abort());
    let outcome = resolved.driver.exchange(&request).await;
    ctx.metrics.exchanged(
        &resolved.provider.name,
        resolved.flow.name(),
        outcome
            .as_ref()
            .map(|_| "success")
            .unwrap_or_else(|e| e.reason().as_str()),
        started.elapsed(),
    );
    let located = |e: DriverError| {
        let error = Box::new(e.located(&resolved.provider, resolved.flow.name()));
        if error.holds_inputs() {
            Error::Refused {
                error,
                hold: refusal_of(integration, ctx, input_fingerprint),
            }
        } else {
            Error::Driver(error)
        }
    };
    let answered = Timestamp::now();
    match outcome.map_err(located)? {
        Outcome::Issued(issued) => {
            // Never publish a header value that would inject headers.
            crate::providers::check_issued(&issued.fields).map_err(|e| Error::Driver(Box::new(e)))?;
            // Keep what earlier steps persisted (customer-level credentials),
            // add what was issued now.
            let seen_missing = checkpoint.seen_missing.into_inner();
            let persisted = checkpoint.persisted.into_inner();
            let fields = persisted.updated(&issued.fields, &[]);
            // A template that fails on these values leaves the Secret as
            // it was (a one-shot flow's answers are in it already: its
            // checkpoints wrote them).
            let rendered = templates::render(integration, &fields).map_err(template_error)?;
            fail::fail_point!(failpoints::AFTER_EXCHANGE, |_| std::process::abort());
            let schedule = plan(issued.expires_at, issued.lifetime_defaulted, answered);
            let (written, changed) = write_secret(
                integration,
                ctx,
                &fields,
                &rendered,
                input_fingerprint,
                schedule,
                seen_missing,
            )
            .await?;
            fail::fail_point!(failpoints::AFTER_SECRET_WRITE, |_| std::process::abort());
            Ok(Exchanged::Issued {
                issued: Issued { fields, ..issued },
                written,
                changed,
                renew_at: schedule.renew_at,
            })
        }
        Outcome::Pending {
            reason,
            message,
            recheck_after,
            started,
        } => Ok(Exchanged::Pending {
            reason,
            message,
            recheck_after,
            started,
        }),
    }
}

/// The refusal fingerprint of these inputs with the retry annotation as it is now.
/// The provider-side id a verified webhook reported for this Integration,
/// if the annotation carries one with a valid attestation for this uid.
fn reported_id(integration: &Integration, ctx: &Context, uid: &str) -> Option<String> {
    let value = integration.annotations().get(REPORTED_ID_ANNOTATION)?;
    let (id, attestation) = value.split_once(' ')?;
    if ctx.fingerprinter.attested(uid, id, attestation) {
        Some(id.to_string())
    } else {
        warn!("ignoring a provider-reported-id annotation without a valid attestation");
        None
    }
}

fn refusal_of(integration: &Integration, ctx: &Context, input_fingerprint: &str) -> String {
    let retry = integration.annotations().get(RETRY_ANNOTATION).map(String::as_str);
    ctx.fingerprinter.refusal(input_fingerprint, retry)
}

/// The Ready condition's message, where it reports a refusal.
fn refusal_message(state: &IntegrationStatus) -> Option<String> {
    state
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY && c.reason == Reason::ReauthRequired)
        .map(|c| c.message.clone())
}

/// The output Secret's fields (and its rendered keys), read when the cache
/// did not need them.
async fn read_persisted(
    integration: &Integration,
    ctx: &Context,
) -> Result<(Credentials, BTreeMap<String, String>), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    Ok(match api.get_opt(&output::target_name(integration)).await? {
        Some(secret) if output::is_owned_by(&secret.metadata, integration) => output::split(&secret),
        _ => (Credentials::default(), BTreeMap::new()),
    })
}

/// Adds the cleanup finalizer if it is missing.
async fn ensure_finalizer(integration: &Integration, ctx: &Context) -> Result<(), Error> {
    if integration.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(());
    }
    let mut finalizers = integration.finalizers().to_vec();
    finalizers.push(CLEANUP_FINALIZER.to_string());
    patch_finalizers(integration, ctx, finalizers).await
}

/// Replaces the finalizer list, conditional on the resourceVersion we saw so
/// that another writer's finalizer is never dropped.
async fn patch_finalizers(integration: &Integration, ctx: &Context, finalizers: Vec<String>) -> Result<(), Error> {
    let api: Api<Integration> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    api.patch(
        &integration.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": integration.resource_version(),
        }})),
    )
    .await?;
    Ok(())
}

/// Deletion: undo provider-side state, then release the finalizer. A failed
/// cleanup is reported and retried, never silently dropped.
async fn cleanup(integration: &Integration, ctx: &Context) -> Result<Option<Duration>, Error> {
    if !integration.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(None);
    }
    let (_, provider, driver, flow) = resolve::resolve_provider(integration, ctx)?;
    if driver.needs_cleanup(&flow) {
        let namespace = integration.namespace().unwrap_or_default();
        let inputs = match ctx
            .input_reads
            .get(&ctx.client, &namespace, &integration.spec.secret_ref.name)
            .await?
        {
            Some(secret) => resolve::secret_credentials(&secret)?,
            None => {
                return Err(Error::invalid(
                    Reason::CleanupFailed,
                    format!(
                        "cannot delete the provider-side state: input Secret {:?} is gone; restore it, or remove the finalizer {CLEANUP_FINALIZER} to leave the provider-side state behind",
                        integration.spec.secret_ref.name
                    ),
                ));
            }
        };
        let (persisted, _) = read_persisted(integration, ctx).await?;
        driver
            .cleanup(&CleanupRequest {
                provider: &provider,
                flow: &flow,
                inputs: &inputs,
                persisted: &persisted,
                identity: &uid(integration),
                recorded_id: integration.status.as_ref().and_then(|s| s.integration_id.as_deref()),
            })
            .await
            .map_err(|e| Error::Cleanup(Box::new(e.located(&provider, flow.name()))))?;
        publish(
            ctx,
            integration,
            EventType::Normal,
            Reason::CleanedUp,
            "provider-side state deleted".into(),
        )
        .await;
    }
    let remaining: Vec<String> = integration
        .finalizers()
        .iter()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(integration, ctx, remaining).await?;
    Ok(None)
}

/// Writes the output Secret: created the first time (so that a Secret of the
/// same name made by someone else is never overwritten), server-side applied
/// after that. `seen_missing`: this reconcile found no Secret and has not
/// written one since. Rendered keys the Secret had and no longer has a
/// template for are removed. Returns whether it wrote, and whether the
/// credentials differ from those the Secret held.
async fn write_secret(
    integration: &Integration,
    ctx: &Context,
    fields: &Credentials,
    rendered: &BTreeMap<String, String>,
    input_fingerprint: &str,
    schedule: output::Schedule,
    seen_missing: bool,
) -> Result<(bool, bool), Error> {
    let desired = output::desired_secret(
        integration,
        fields,
        rendered,
        input_fingerprint,
        schedule,
        &ctx.fingerprinter,
    );
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let changed = ctx
        .owned_secrets
        .get(&namespace, &name)
        .is_none_or(|cached| cached.content_digest != owned::content_digest(&desired.metadata));
    written_secret(integration, ctx, desired, seen_missing)
        .await
        .map(|written| (written, changed))
}

async fn written_secret(
    integration: &Integration,
    ctx: &Context,
    desired: Secret,
    seen_missing: bool,
) -> Result<bool, Error> {
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::<Secret>::new(&name).within(&namespace);
    // Until the written version is recorded, the watch's report of it is not
    // mistaken for someone else's edit.
    let _writing = ctx.verified.begin_write(&key);
    let mut cached_rv = None;
    let mut previous_rendered = BTreeSet::new();
    if let Some(cached) = ctx.owned_secrets.get(&namespace, &name) {
        // A re-validation that changes nothing must not write (or wake
        // every watcher of the Secret).
        let rv = cached.resource_version.to_string();
        if ctx.verified.is_verified(&key, &rv)
            && cached.is_owned_by(integration)
            && cached.metadata_digest == owned::metadata_digest(&desired.metadata)
        {
            return Ok(false);
        }
        if cached.is_owned_by(integration) {
            cached_rv = Some(rv);
            previous_rendered = cached.rendered_keys();
        }
    }
    // What we know decides a fast path; anything else (or a fast path that
    // lost a race) takes the careful path below.
    let fast = if let Some(rv) = cached_rv {
        // The cache says the Secret is ours: apply at once, on the condition
        // that it is still the version the cache saw (a renewal then costs
        // one write and no read).
        let mut conditional = desired.clone();
        conditional.metadata.resource_version = Some(rv);
        Some(
            api.patch(
                &name,
                &PatchParams::apply(SECRET_MANAGER).force(),
                &Patch::Apply(&conditional),
            )
            .await,
        )
    } else if seen_missing {
        // Seen missing a moment ago: create at once instead of asking again
        // (a Secret that appeared since fails the create with a 409).
        Some(api.create(&PostParams::default(), &desired).await)
    } else {
        None
    };
    match fast {
        Some(Ok(written)) => {
            ctx.verified
                .record(&key, written.metadata.resource_version.as_deref().unwrap_or_default());
            ctx.metrics.secret_written();
            remove_stale_rendered(integration, ctx, &desired, &previous_rendered).await?;
            return Ok(true);
        }
        Some(Err(e)) if !is_retryable(&e) => return Err(write_error(e, integration)),
        _ => {}
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match api.get_metadata_opt(&name).await {
            Ok(None) => api.create(&PostParams::default(), &desired).await,
            Ok(Some(meta)) if !output::is_owned_by(&meta.metadata, integration) => {
                return Err(not_owned(&name));
            }
            Ok(Some(meta)) => {
                previous_rendered = output::rendered_keys(meta.metadata.annotations.as_ref());
                api.patch(
                    &name,
                    &PatchParams::apply(SECRET_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(written) => {
                ctx.verified
                    .record(&key, written.metadata.resource_version.as_deref().unwrap_or_default());
                ctx.metrics.secret_written();
                remove_stale_rendered(integration, ctx, &desired, &previous_rendered).await?;
                return Ok(true);
            }
            // Lost a race with another writer (create vs create, or a
            // transient API error): look again. Credentials shown once must
            // not be lost to a blip, so retry a few times before giving up.
            Err(e) if attempt < 4 && is_retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(write_error(e, integration)),
        }
    }
}

/// Removes rendered keys whose template is gone. Server-side apply would
/// keep them: the Secret's first write (a create) owns them too.
async fn remove_stale_rendered(
    integration: &Integration,
    ctx: &Context,
    desired: &Secret,
    previous_rendered: &BTreeSet<String>,
) -> Result<(), Error> {
    let data = desired.data.as_ref();
    let stale: Vec<&str> = previous_rendered
        .iter()
        .filter(|k| !data.is_some_and(|d| d.contains_key(*k)))
        .map(String::as_str)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    remove_secret_keys(integration, ctx, &stale).await
}

/// A refused Secret write as a condition: a type change (which the checks
/// before the write should have caught) gets its own reason.
fn write_error(e: kube::Error, integration: &Integration) -> Error {
    match &e {
        kube::Error::Api(s)
            if s.code == 422 && s.message.contains("field is immutable") && s.message.contains("type") =>
        {
            type_changed(
                &output::target_name(integration),
                None,
                output::secret_type(integration.spec.target.as_deref()).as_str(),
                resolve::flow_of(integration).map_or(true, |f| f.keeps_state()),
            )
        }
        _ => e.into(),
    }
}

fn is_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Writes status and Events for a successful pipeline; returns when to look again.
async fn finish(
    integration: &Integration,
    ctx: &Context,
    ending: Ending,
    previous_failure: bool,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let old = status_of(integration);
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
    let (mut wanted, mut recheck_at, event) = match ending {
        Ending::UpToDate {
            recheck_at,
            observed,
            rerendered,
        } => {
            // A re-render changes what the workloads read, like new credentials.
            rollout_change = rerendered;
            // The schedule recorded with the credentials is fresher than a
            // status that may lag in the cache; the version the decision
            // read from the API server is fresher still (after a failed
            // status write, the cache can lag behind our own Secret write,
            // and its catching up is filtered out as no news).
            let recorded = observed.unwrap_or_else(|| current_schedule(integration, ctx));
            if let Some(at) = recorded.expires_at {
                new.expires_at = Some(status::rfc3339(at));
            }
            if let Some(at) = recorded.renew_at {
                new.renew_at = Some(status::rfc3339(at));
            }
            // Keep a Ready=True condition's reason (and, if its message
            // still holds, the condition as it is); turn anything else Ready.
            let message = ready_message(integration, &new);
            let mut wanted = vec![match status::ready_condition(Some(&old)) {
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
            let event = match status::ready_condition(Some(&old)) {
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
            rollout_change = super::rollout::matters(reason, changed);
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
    if let Some(spec) = integration.spec.rollout.as_deref()
        && let Some(until) = roll_out(integration, ctx, spec, &mut new, rollout_change, now).await
    {
        recheck_at = Some(recheck_at.map_or(until, |r| r.min(until)));
    }
    // A look that did not renew leaves an overdue renewal overdue: its
    // condition stays until a renewal moves the renewal time.
    if let Some(c) = super::watchdog::still_overdue(&old, &new, now, ctx.stall_after) {
        wanted.push(Wanted::from(c));
    }
    new.conditions = status::merge_conditions(&old.conditions, &wanted, generation, now);
    // Only an exchange knows that a field became empty; other endings never
    // null a field they did not compute.
    let clear_empty = matches!(ending_kind, EndingKind::Issued);
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

/// Restarts the Integration's workloads when a change waits and its time
/// has come (see [`super::rollout`]); returns when to look again for a
/// change that waits.
async fn roll_out(
    integration: &Integration,
    ctx: &Context,
    spec: &crate::crd::RolloutSpec,
    new: &mut IntegrationStatus,
    change: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    use super::rollout::{self, Step};
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

fn expiry_assumed_message(integration: &Integration, status: &IntegrationStatus) -> String {
    format!(
        "the provider did not say when the credentials expire; assuming they expire at {} (defaultTokenLifetime of ClusterProvider {:?})",
        status.expires_at.clone().unwrap_or_default(),
        integration.spec.provider
    )
}

fn ready_message(integration: &Integration, status: &IntegrationStatus) -> String {
    let name = output::target_name(integration);
    match &status.expires_at {
        Some(at) => format!("credentials in Secret {name:?} are valid until {at}"),
        None => format!("credentials in Secret {name:?} are valid"),
    }
}

/// Sets Ready=False with the failure's reason (or `Expired` once the last
/// credentials have expired) and emits a Warning Event. The output Secret is
/// left as it is.
async fn record_failure(integration: &Integration, ctx: &Context, err: &Error, now: Timestamp) {
    let old = status_of(integration);
    // The expiry recorded with the credentials (the status may lag in the cache).
    let expires_at = current_schedule(integration, ctx)
        .expires_at
        .or_else(|| status::parse_time(old.expires_at.as_ref()));
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
        observed_generation: integration.metadata.generation,
        conditions: status::merge_conditions(&old.conditions, &wanted, integration.metadata.generation, now),
        refused_inputs: err.refusal().map(String::from).or_else(|| old.refused_inputs.clone()),
        ..old.clone()
    };
    // Only conditions and observedGeneration: a failure must not rewrite the
    // expiry fields from a possibly stale copy of the status.
    if let Err(e) = patch_conditions_if_changed(integration, ctx, &old, &new).await {
        warn!(error = %e, "could not write failure status");
    }
    warn!(reason = reason.as_str(), error = %err, "reconcile failed");
    // One Warning per distinct failure, repeated at most every
    // WARNING_REPEAT while it lasts: a failing Integration retried with
    // backoff must not flood the API server with Events.
    let key = ObjectRef::from_obj(integration);
    if ctx.warnings.should_publish(&key, reason.as_str(), &message) {
        publish(ctx, integration, EventType::Warning, reason, message).await;
    }
}

async fn patch_status_if_changed(
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
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await?;
    ctx.metrics.status_written();
    Ok(())
}

async fn patch_conditions_if_changed(
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
        &PatchParams::default(),
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

/// The schedule recorded on the output Secret, from the cache.
fn current_schedule(integration: &Integration, ctx: &Context) -> output::Schedule {
    let namespace = integration.namespace().unwrap_or_default();
    ctx.owned_secrets
        .get(&namespace, &output::target_name(integration))
        .filter(|cached| cached.is_owned_by(integration))
        .map(|cached| cached.schedule)
        .unwrap_or_default()
}

pub(super) async fn publish(ctx: &Context, integration: &Integration, type_: EventType, reason: Reason, note: String) {
    let note = crate::providers::sanitize_message(&note);
    if let Err(e) = ctx
        .events
        .publish(&integration.object_ref(&()), type_, reason.as_str(), &note)
        .await
    {
        debug!(error = %e, "could not publish event");
    }
}

/// What the status records, for the routine-renewal check.
fn recorded(integration: &Integration) -> plan::Recorded {
    let status = integration.status.as_ref();
    let at = |v: Option<&String>| v.and_then(|s| s.parse::<Timestamp>().ok());
    plan::Recorded {
        spec_observed: status.and_then(|s| s.observed_generation) == integration.metadata.generation,
        ready: status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        renew_at: at(status.and_then(|s| s.renew_at.as_ref())),
        expires_at: at(status.and_then(|s| s.expires_at.as_ref())),
    }
}

fn status_of(integration: &Integration) -> IntegrationStatus {
    integration.status.clone().unwrap_or_default()
}

fn uid(integration: &Integration) -> String {
    integration.metadata.uid.clone().unwrap_or_default()
}

/// `spec.refresh.renewBefore`, parsed (the companion's `check` shows the
/// renewal time the operator would schedule).
pub fn renew_before(integration: &Integration) -> Result<Option<RenewBefore>, Error> {
    integration
        .spec
        .refresh
        .as_ref()
        .and_then(|r| r.renew_before.as_deref())
        .map(|s| {
            RenewBefore::parse(s)
                .map_err(|e| Error::invalid(Reason::InvalidSpec, format!("spec.refresh.renewBefore: {e}")))
        })
        .transpose()
}

/// What the exchange depends on besides input values: the provider's
/// configuration and the Integration's whole spec. Any change to either is
/// a reason to reissue.
/// What an exchange depends on besides the input values: the Integration's
/// spec and, of the ClusterProvider, only what changes what is sent or
/// where (type, URLs, client authentication as in effect). Its rate limit,
/// concurrency, timeouts, allowed namespaces and the like change how the
/// operator works, not the credentials: editing them re-issues nothing.
fn fingerprint_context(integration: &Integration, resolved: &Resolved) -> Result<String, Error> {
    let provider = &resolved.provider;
    let spec = presentation_free(integration)?;
    serde_json::to_string(&json!({
        "provider": {
            "type": resolved.provider_spec.provider_type,
            "tokenUrl": provider.token_url.as_ref().map(url::Url::as_str),
            "baseUrl": provider.base_url.as_ref().map(url::Url::as_str),
            "clientAuth": format!("{:?}", provider.client_auth),
        },
        "spec": spec,
    }))
    .map_err(|e| Error::invalid(Reason::InternalError, e.to_string()))
}

/// The spec without `target.type` and `target.template`: they change how
/// the credentials are presented, not what is asked of the provider, so
/// editing them renders the Secret again without an exchange
/// ([`Decision::Rerender`]). A target left empty by their removal is
/// dropped, so that adding templates to an Integration without a target
/// keeps its fingerprint; other spec fields (target name, labels,
/// annotations included) stay exactly as they were fingerprinted before
/// templates existed, so no Secret written earlier looks out of date.
fn presentation_free(integration: &Integration) -> Result<serde_json::Value, Error> {
    let mut spec =
        serde_json::to_value(&integration.spec).map_err(|e| Error::invalid(Reason::InternalError, e.to_string()))?;
    if let Some(map) = spec.as_object_mut() {
        let emptied = map
            .get_mut("target")
            .and_then(|t| t.as_object_mut())
            .is_some_and(|target| {
                let removed = target.remove("type").is_some() | target.remove("template").is_some();
                removed && target.is_empty()
            });
        if emptied {
            map.remove("target");
        }
        // Which workloads restart is no input of the exchange either:
        // editing it must not issue new credentials.
        map.remove("rollout");
    }
    Ok(spec)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let d = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    d.max(Duration::from_millis(200))
}
