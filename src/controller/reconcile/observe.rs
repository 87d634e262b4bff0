//! Observe: what one look reads before deciding — the output Secret (from
//! the owned-Secret cache, read only when the cache cannot answer), what
//! status records, the fingerprints of the exchange's inputs, and the
//! schedule written with the credentials.

use super::write::{cached_output, read_output};
use super::{
    PROVIDER_DISABLED_ANNOTATION, PROVIDER_EVENT_ANNOTATION, REJECTED_ANNOTATION, RENEW_NOW_ANNOTATION,
    REPORTED_ID_ANNOTATION, RETRY_ANNOTATION,
};
use crate::reasons::Reason;
use std::{collections::BTreeMap, num::NonZeroU64};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use serde_json::json;
use tracing::warn;

use super::super::{
    Context, Error, output,
    plan::{self, Facts, SecretState},
    resolve::{self, Resolved},
    scale::owned::OwnedSecret,
    schedule::RenewBefore,
    status::{self},
};
use crate::{
    crd::{Integration, IntegrationStatus},
    providers::Credentials,
};

/// Everything one look reads before it decides, read once: the resolved
/// references and inputs, their fingerprints, the output Secret and the
/// schedule written with it, and what status records. Every later step
/// (decide, exchange, write, report) reads from here, so the expiry of the
/// credentials, say, has one source: [`Observed::schedule`].
pub(super) struct Observation {
    pub(super) resolved: Resolved,
    /// The input Secret's values, when this look read them. A look that
    /// found the input Secret at the version the credentials were made
    /// from, and provider and spec as they were, knows the input
    /// fingerprint without them and skips the read; should it exchange, it
    /// observes again, reading them ([`Reading::Always`]).
    inputs: Option<Credentials>,
    /// Fingerprint of what the exchange sends (inputs and what it depends on).
    pub(super) input_fingerprint: String,
    /// [`output::Fingerprinter::input_version`] of the inputs as observed.
    pub(super) input_version: Option<u64>,
    /// Fingerprint of the output's type and templates.
    pub(super) template_fingerprint: Option<String>,
    pub(super) secret: Observed,
    /// The status as the look found it.
    pub(super) status: IntegrationStatus,
    /// What status records, for the routine-renewal and priority decisions.
    pub(super) recorded: plan::Recorded,
}

/// Whether a look reads the input Secret.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Reading {
    /// Unless the input Secret is known unchanged since the credentials
    /// were made.
    UnlessUnchanged,
    /// Always: an exchange sends the values.
    Always,
}

/// Reads what a look decides with. The input Secret and the output Secret
/// are independent reads, asked at once: a first issue waits for one
/// round trip instead of two. Where the output Secret records the input
/// Secret's current version (and provider and spec are as they were), the
/// input is not read: the output Secret alone is observed (from the cache
/// when its version is trusted), and the fingerprint it records stands.
pub(super) async fn observe(integration: &Integration, ctx: &Context, reading: Reading) -> Result<Observation, Error> {
    let resolved = resolve::resolve(integration, ctx)?;
    let context = fingerprint_context(integration, &resolved)?;
    let observation = |inputs, input_fingerprint, input_version, secret| Observation {
        inputs,
        input_fingerprint,
        input_version,
        template_fingerprint: ctx.fingerprinter.template(integration.spec.target.as_deref()),
        secret,
        status: status_of(integration),
        recorded: recorded(integration),
        resolved,
    };
    // The input version now, as the Secret-metadata watch last saw it.
    let current = || {
        let namespace = integration.namespace().unwrap_or_default();
        let rv = ctx.input_versions.get(&namespace, &integration.spec.secret_ref.name)?;
        Some(ctx.fingerprinter.input_version(&rv.to_string(), &context))
    };
    let current = (reading == Reading::UnlessUnchanged).then(current).flatten();
    // The cache's entry, read once: both the skip and the observation use it.
    let cached = cached_output(integration, ctx)?;
    let cached_version = cached.as_ref().and_then(|c| c.input_version);
    if let Some(version) = current.filter(|v| cached_version.map(NonZeroU64::get) == Some(*v)) {
        let secret = observe_secret(integration, ctx, cached).await?;
        // Read back if it was not trusted: what it records now decides.
        if let (SecretState::Intact { input_fingerprint, .. }, Some(recorded)) = (&secret.state, secret.input_version)
            && recorded == version
        {
            let fingerprint = input_fingerprint.clone();
            return Ok(observation(None, fingerprint, Some(version), secret));
        }
        let inputs = resolve::read_inputs(integration, ctx).await?;
        return Ok(read(observation, inputs, secret, ctx, &context));
    }
    let (inputs, secret) = tokio::join!(
        resolve::read_inputs(integration, ctx),
        observe_secret(integration, ctx, cached)
    );
    Ok(read(observation, inputs?, secret?, ctx, &context))
}

/// The observation of a look that read the input values.
fn read(
    observation: impl FnOnce(Option<Credentials>, String, Option<u64>, Observed) -> Observation,
    inputs: resolve::Inputs,
    secret: Observed,
    ctx: &Context,
    context: &str,
) -> Observation {
    let input_fingerprint = ctx.fingerprinter.inputs(context, &inputs.values);
    let input_version = (!inputs.resource_version.is_empty())
        .then(|| ctx.fingerprinter.input_version(&inputs.resource_version, context));
    observation(Some(inputs.values), input_fingerprint, input_version, secret)
}

impl Observation {
    /// The input values, read by this look (see [`Reading`]).
    pub(super) fn inputs(&self) -> Result<&Credentials, Error> {
        self.inputs
            .as_ref()
            .ok_or_else(|| Error::invalid(Reason::InternalError, "the inputs were not read before an exchange"))
    }

    /// Whether this look read the input values.
    pub(super) fn read_inputs(&self) -> bool {
        self.inputs.is_some()
    }

    /// What new credentials are recorded as made from.
    pub(super) fn stamp(&self) -> output::InputStamp<'_> {
        output::InputStamp {
            fingerprint: &self.input_fingerprint,
            version: self.input_version,
        }
    }

    /// The facts the pure decision reads.
    pub(super) fn facts(&self, integration: &Integration, report_interval: std::time::Duration) -> Facts {
        let state = &self.status;
        let annotation = |name: &str| integration.annotations().get(name).map(String::as_str);
        let last_exchange = status::parse_time(state.last_exchange_time.as_ref());
        Facts {
            input_fingerprint: self.input_fingerprint.clone(),
            secret: self.secret.state.clone(),
            issued_before: state.last_exchange_time.is_some(),
            renew_request: plan::renew_request(
                annotation(RENEW_NOW_ANNOTATION),
                state.renew_now_answered.as_deref(),
                last_exchange,
            )
            .or_else(|| {
                plan::rejection_report(
                    annotation(REJECTED_ANNOTATION),
                    state.rejection_answered.as_deref(),
                    last_exchange,
                    report_interval,
                )
            })
            .or_else(|| {
                // A provider webhook about this Integration: check it now,
                // capped like a renew-now request.
                plan::renew_request(
                    annotation(PROVIDER_EVENT_ANNOTATION),
                    state.provider_event_answered.as_deref(),
                    last_exchange,
                )
            }),
            template_fingerprint: self.template_fingerprint.clone(),
        }
    }
}

/// The output Secret as found, and its data when it had to be read.
pub(super) struct Observed {
    pub(super) state: SecretState,
    /// Fields already in the Secret (read only when needed).
    pub(super) secret: Option<Secret>,
    /// The schedule written with the credentials (expiry, renewal time):
    /// from the version read when there was a read, else from the cache.
    /// Empty when there is no intact Secret.
    pub(super) schedule: output::Schedule,
    /// The input version an intact Secret records
    /// ([`output::INPUT_VERSION_ANNOTATION`]).
    pub(super) input_version: Option<u64>,
}

/// The output Secret, from `cached` (the owned-Secret cache's entry) when
/// that version is trusted, else read and checked.
async fn observe_secret(
    integration: &Integration,
    ctx: &Context,
    cached: Option<OwnedSecret>,
) -> Result<Observed, Error> {
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let key = ObjectRef::<k8s_openapi::api::core::v1::Secret>::new(&name).within(&namespace);
    let missing = || Observed {
        state: SecretState::Missing,
        secret: None,
        schedule: output::Schedule::default(),
        input_version: None,
    };
    let Some(cached) = cached else {
        // Not in the label-selected cache. The cache may lag behind our own
        // write (a status event can arrive first), and a provider call must
        // never rest on a stale "missing": ask the API server.
        return Ok(match read_output(integration, ctx).await? {
            None => missing(),
            Some(secret) => examine(secret, ctx, &key),
        });
    };
    if let Some(trusted) = trusted(integration, ctx, &cached) {
        return Ok(trusted);
    }
    // A version we did not write or check (someone edited it, or our write
    // was not followed by the status write that records it): read the data
    // once and check it against its content hash.
    Ok(match read_output(integration, ctx).await? {
        None => missing(),
        Some(secret) => examine(secret, ctx, &key),
    })
}

/// The output Secret from the cache, without a read, when its version is
/// the one this process last wrote or checked, or, where this process has
/// none yet (a restarted process, a new leader), the one status records as
/// the operator's. Any other version is someone else's (or older than one
/// written since) and must be read and checked.
fn trusted(integration: &Integration, ctx: &Context, cached: &OwnedSecret) -> Option<Observed> {
    let name = output::target_name(integration);
    let key = ObjectRef::<Secret>::new(&name).within(&integration.namespace().unwrap_or_default());
    let rv = cached.resource_version?.to_string();
    match ctx.verified.version_of(&key) {
        // What this process wrote or checked last is the freshest word: a
        // cache that lags behind its own write still shows the version
        // status records, but that version is no longer current.
        Some(known) if known == rv => {}
        Some(_) => return None,
        None => {
            let recorded = integration
                .status
                .as_ref()
                .and_then(|s| s.secret_resource_version.as_deref());
            if recorded != Some(rv.as_str()) {
                return None;
            }
            ctx.verified.record(&key, &rv);
        }
    }
    Some(Observed {
        state: SecretState::Intact {
            input_fingerprint: cached
                .input_fingerprint
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default(),
            renew_at: cached.schedule.renew_at,
            expires_at: cached.schedule.expires_at,
            template_fingerprint: cached.template_fingerprint().map(String::from),
        },
        secret: None,
        schedule: cached.schedule,
        input_version: cached.input_version.map(NonZeroU64::get),
    })
}

/// Checks a freshly read output Secret against its content hash.
pub(super) fn examine(secret: Secret, ctx: &Context, key: &ObjectRef<Secret>) -> Observed {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let written = output::Schedule::from_annotations(&annotations);
    let intact = output::is_intact(&secret, &ctx.fingerprinter);
    let input_version = annotations
        .get(output::INPUT_VERSION_ANNOTATION)
        .and_then(|v| output::parse_input_version(v))
        .filter(|_| intact);
    let state = if intact {
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
        schedule: written,
        input_version,
    }
}

/// The provider-side id a verified webhook reported for this Integration,
/// if the annotation carries one with a valid attestation for this uid.
pub(super) fn reported_id(integration: &Integration, ctx: &Context, uid: &str) -> Option<String> {
    let value = integration.annotations().get(REPORTED_ID_ANNOTATION)?;
    let (id, attestation) = value.split_once(' ')?;
    if ctx.fingerprinter.attested(uid, id, attestation) {
        Some(id.to_string())
    } else {
        warn!("ignoring a provider-reported-id annotation without a valid attestation");
        None
    }
}

/// The provider-side integration a verified callback reported disabled, and
/// when (Unix seconds), if the annotation carries a valid attestation for
/// this uid and names the integration status records (a report about an
/// integration replaced since is history).
pub(super) fn disabled_report(
    integration: &Integration,
    ctx: &Context,
    state: &IntegrationStatus,
) -> Option<(String, i64)> {
    let value = integration.annotations().get(PROVIDER_DISABLED_ANNOTATION)?;
    let (id, at, attestation) = parse_disabled(value)?;
    if !ctx
        .fingerprinter
        .attested_disabled(&uid(integration), id, at, attestation)
    {
        warn!("ignoring a provider-disabled annotation without a valid attestation");
        return None;
    }
    (state.integration_id.as_deref() == Some(id)).then(|| (id.to_string(), at))
}

/// Whether the retry annotation asks again for the integration a
/// provider-disabled report names (for the message of the exchange it
/// causes; the report's attestation was checked when it was acted on).
pub(super) fn retried_after_disable(integration: &Integration, old: &IntegrationStatus) -> bool {
    let annotations = integration.annotations();
    annotations
        .get(PROVIDER_DISABLED_ANNOTATION)
        .and_then(|v| parse_disabled(v))
        .is_some_and(|(id, _, _)| {
            annotations.get(RETRY_ANNOTATION).map(String::as_str) == Some(id)
                && old.integration_id.as_deref() == Some(id)
        })
}

/// Splits a [`PROVIDER_DISABLED_ANNOTATION`] value into id, time and attestation.
pub fn parse_disabled(value: &str) -> Option<(&str, i64, &str)> {
    let mut parts = value.split(' ');
    let (id, at, attestation) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || id.is_empty() {
        return None;
    }
    Some((id, at.parse().ok()?, attestation))
}

/// The refusal fingerprint of these inputs with the retry annotation as it is now.
pub(super) fn refusal_of(integration: &Integration, ctx: &Context, input_fingerprint: &str) -> String {
    let retry = integration.annotations().get(RETRY_ANNOTATION).map(String::as_str);
    ctx.fingerprinter.refusal(input_fingerprint, retry)
}

/// The Ready condition's message, where it reports a refusal.
pub(super) fn refusal_message(state: &IntegrationStatus) -> Option<String> {
    state
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY && c.reason == Reason::ReauthRequired)
        .map(|c| c.message.clone())
}

/// The output Secret's fields (and its rendered keys), read when the cache
/// did not need them.
pub(super) async fn read_persisted(
    integration: &Integration,
    ctx: &Context,
) -> Result<(Credentials, BTreeMap<String, String>), Error> {
    Ok(match read_output(integration, ctx).await? {
        Some(secret) => output::split(&secret),
        None => (Credentials::default(), BTreeMap::new()),
    })
}

/// The schedule recorded on the output Secret, from the cache: for a look
/// that failed before its [`Observation`] was complete (the same source
/// [`observe_secret`] reads first).
pub(super) fn current_schedule(integration: &Integration, ctx: &Context) -> output::Schedule {
    cached_output(integration, ctx)
        .ok()
        .flatten()
        .map(|cached| cached.schedule)
        .unwrap_or_default()
}

/// What the status records, for the routine-renewal check.
pub(super) fn recorded(integration: &Integration) -> plan::Recorded {
    let status = integration.status.as_ref();
    let at = |v: Option<&String>| v.and_then(|s| s.parse::<Timestamp>().ok());
    plan::Recorded {
        spec_observed: status.and_then(|s| s.observed_generation) == integration.metadata.generation,
        ready: status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        renew_at: at(status.and_then(|s| s.renew_at.as_ref())),
        expires_at: at(status.and_then(|s| s.expires_at.as_ref())),
    }
}

pub(super) fn status_of(integration: &Integration) -> IntegrationStatus {
    integration.status.clone().unwrap_or_default()
}

pub(super) fn uid(integration: &Integration) -> String {
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

/// What an exchange depends on besides the input values: the Integration's
/// spec and, of the ClusterProvider, only what changes what is sent or
/// where (type, URLs, client authentication as in effect). Its rate limit,
/// concurrency, timeouts, allowed namespaces and the like change how the
/// operator works, not the credentials: editing them re-issues nothing.
pub(super) fn fingerprint_context(integration: &Integration, resolved: &Resolved) -> Result<String, Error> {
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
pub(super) fn presentation_free(integration: &Integration) -> Result<serde_json::Value, Error> {
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
