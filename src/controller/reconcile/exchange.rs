//! Exchange: runs the provider's driver, persisting a flow's intermediate
//! state in the output Secret when the driver returns
//! [`Outcome::Persist`], and writes the issued credentials.

use super::observe::{Observation, read_persisted, refusal_of, reported_id, uid};
use super::write::{template_error, write_secret};
use super::{RETRY_ANNOTATION, SECRET_MANAGER, UNFINISHED};
use crate::reasons::Reason;
use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;

use super::super::{
    Context, Error, output,
    plan::SecretState,
    resolve,
    templates::{self},
};
use crate::{
    crd::Integration,
    providers::{Credentials, DriverError, ExchangeRequest, Issued, Outcome, Priority, StateWriter, run_exchange},
};

/// What an exchange ended with.
pub(super) enum Exchanged {
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

/// Writes the state a driver asks to persist ([`Outcome::Persist`]) into
/// the output Secret, marked unfinished (its input fingerprint is
/// [`UNFINISHED`], so the next reconcile runs the flow on), with the
/// rendered keys the Secret held carried as they are.
pub(super) struct SecretWriter<'a> {
    pub(super) integration: &'a Integration,
    pub(super) ctx: &'a Context,
    /// The rendered keys the Secret held when the exchange began: kept as
    /// they are while the flow is unfinished.
    pub(super) carried: BTreeMap<String, String>,
    /// The output Secret was missing when this reconcile looked: a write
    /// can create it at once.
    pub(super) seen_missing: bool,
}

#[async_trait::async_trait]
impl StateWriter for SecretWriter<'_> {
    async fn write(&mut self, persisted: &Credentials, dropped: &[&str]) -> Result<(), DriverError> {
        let rendered = templates::carried(self.integration, persisted, &self.carried);
        write_secret(
            self.integration,
            self.ctx,
            persisted,
            &rendered,
            output::InputStamp {
                fingerprint: UNFINISHED,
                version: None,
            },
            output::Schedule::default(),
            self.seen_missing,
        )
        .await
        .map_err(|e| DriverError::PersistFailed {
            message: format!("writing the output Secret failed: {e}"),
        })?;
        // Server-side apply never removes a key another field manager also
        // owns, and the keys of the Secret's first write (a create) are owned
        // by that create: remove dropped keys explicitly.
        if !dropped.is_empty() {
            remove_secret_keys(self.integration, self.ctx, dropped)
                .await
                .map_err(|e| DriverError::PersistFailed {
                    message: format!("removing keys from the output Secret failed: {e}"),
                })?;
        }
        Ok(())
    }
}

/// Removes `keys` from the output Secret's data (a merge patch with nulls).
pub(super) async fn remove_secret_keys(integration: &Integration, ctx: &Context, keys: &[&str]) -> Result<(), Error> {
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

/// Runs the driver to the end of its flow (every [`Outcome::Persist`]
/// written as it asks, see [`run_exchange`]); writes the output Secret
/// when it issues credentials.
pub(super) async fn run(
    integration: &Integration,
    ctx: &Context,
    seen: &Observation,
    now: Timestamp,
    plan: &(dyn Fn(Option<Timestamp>, bool, Timestamp) -> output::Schedule + Sync),
    priority: Priority,
) -> Result<Exchanged, Error> {
    let (resolved, existing, input_fingerprint) = (&seen.resolved, &seen.secret, seen.input_fingerprint.as_str());
    let (persisted, carried) = match &existing.secret {
        Some(secret) => output::split(secret),
        // A renewal of a stateless flow needs nothing from the old Secret:
        // no read.
        None if !resolved.flow.keeps_state() => (Credentials::default(), BTreeMap::new()),
        None => read_persisted(integration, ctx).await?,
    };
    let seen_missing = matches!(existing.state, SecretState::Missing);
    let mut writer = SecretWriter {
        integration,
        ctx,
        carried,
        seen_missing,
    };
    let identity = uid(integration);
    let retry = integration.annotations().get(RETRY_ANNOTATION).cloned();
    let state_key = ctx.fingerprinter.state_key();
    let reported = reported_id(integration, ctx, &identity);
    // A fact about the other Integrations, for the flows it matters to
    // only: from the controller's cache, which holds every Integration this
    // operator may see, unless it is sharded (the cache then holds this
    // shard's namespaces only, and a claimant can be in another shard's).
    let first_claimant = match resolved.flow.exclusive_key() {
        Some(_) if ctx.shard.is_sharded() => resolve::first_claimant(
            integration,
            &resolved.flow,
            resolve::list_integrations(integration, ctx).await?.iter(),
        ),
        Some(_) => resolve::first_claimant(
            integration,
            &resolved.flow,
            // Only those of the same ClusterProvider can claim the same
            // object: only they are expanded from the compact cache.
            ctx.integrations
                .snapshot()
                .iter()
                .filter(|(_, other)| other.provider() == integration.spec.provider)
                .map(|(key, other)| other.expand(key))
                .collect::<Vec<_>>()
                .iter(),
        ),
        None => None,
    };
    let request = ExchangeRequest {
        priority,
        state_key: Some(&state_key),
        provider: &resolved.provider,
        flow: &resolved.flow,
        inputs: seen.inputs()?,
        persisted: &persisted,
        first_claimant: first_claimant.as_deref(),
        identity: &identity,
        retry_requested: retry.as_deref(),
        recorded_id: seen.status.integration_id.as_deref(),
        recorded_awaiting: seen.status.awaiting.as_deref(),
        reported_id: reported.as_deref(),
        now,
    };
    let started = std::time::Instant::now();
    fail::fail_point!(super::failpoints::BEFORE_EXCHANGE, |_| std::process::abort());
    let outcome = run_exchange(resolved.driver.as_ref(), &request, &mut writer).await;
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
    let finished = outcome.map_err(located)?;
    match finished.outcome {
        Outcome::Issued(issued) => {
            // Never publish a header value that would inject headers.
            crate::providers::check_issued(&issued.fields).map_err(|e| Error::Driver(Box::new(e)))?;
            // Keep what earlier steps persisted (customer-level credentials),
            // add what was issued now.
            let fields = finished.persisted.updated(&issued.fields, &[]);
            // A template that fails on these values leaves the Secret as
            // it was (a one-shot flow's answers are in it already: its
            // persists wrote them).
            let rendered = templates::render(integration, &fields).map_err(template_error)?;
            fail::fail_point!(super::failpoints::AFTER_EXCHANGE, |_| std::process::abort());
            let schedule = plan(issued.expires_at, issued.lifetime_defaulted, answered);
            let (written, changed) = write_secret(
                integration,
                ctx,
                &fields,
                &rendered,
                seen.stamp(),
                schedule,
                seen_missing,
            )
            .await?;
            fail::fail_point!(super::failpoints::AFTER_SECRET_WRITE, |_| std::process::abort());
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
        Outcome::Persist { .. } => unreachable!("run_exchange applies every persist"),
    }
}
