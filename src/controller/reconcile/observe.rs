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
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use serde_json::json;
use tracing::warn;

use super::super::{
    Context, Error, output,
    plan::{self, Facts, SecretState},
    resolve::{self, Resolved},
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
    /// Fingerprint of what the exchange sends (inputs and what it depends on).
    pub(super) input_fingerprint: String,
    /// Fingerprint of the output's type and templates.
    pub(super) template_fingerprint: Option<String>,
    pub(super) secret: Observed,
    /// The status as the look found it.
    pub(super) status: IntegrationStatus,
    /// What status records, for the routine-renewal and priority decisions.
    pub(super) recorded: plan::Recorded,
}

/// Reads what a look decides with. The Integration's references and the
/// output Secret are independent reads, asked at once: a first issue waits
/// for one round trip instead of two.
pub(super) async fn observe(integration: &Integration, ctx: &Context) -> Result<Observation, Error> {
    let (resolved, secret) = tokio::join!(resolve::resolve(integration, ctx), observe_secret(integration, ctx));
    let resolved = resolved?;
    let context = fingerprint_context(integration, &resolved)?;
    let input_fingerprint = ctx.fingerprinter.inputs(&context, &resolved.inputs);
    Ok(Observation {
        input_fingerprint,
        template_fingerprint: ctx.fingerprinter.template(integration.spec.target.as_deref()),
        secret: secret?,
        status: status_of(integration),
        recorded: recorded(integration),
        resolved,
    })
}

impl Observation {
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
}

pub(super) async fn observe_secret(integration: &Integration, ctx: &Context) -> Result<Observed, Error> {
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let key = ObjectRef::<k8s_openapi::api::core::v1::Secret>::new(&name).within(&namespace);
    let missing = || Observed {
        state: SecretState::Missing,
        secret: None,
        schedule: output::Schedule::default(),
    };
    let Some(cached) = cached_output(integration, ctx)? else {
        // Not in the label-selected cache. The cache may lag behind our own
        // write (a status event can arrive first), and a provider call must
        // never rest on a stale "missing": ask the API server.
        return Ok(match read_output(integration, ctx).await? {
            None => missing(),
            Some(secret) => examine(secret, ctx, &key),
        });
    };
    let rv = cached.resource_version.to_string();
    if ctx.verified.is_verified(&key, &rv) {
        return Ok(Observed {
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
        });
    }
    // A version we did not write or check (someone edited it, or the operator
    // restarted): read the data once and check it against its content hash.
    Ok(match read_output(integration, ctx).await? {
        None => missing(),
        Some(secret) => examine(secret, ctx, &key),
    })
}

/// Checks a freshly read output Secret against its content hash.
pub(super) fn examine(secret: Secret, ctx: &Context, key: &ObjectRef<Secret>) -> Observed {
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
        schedule: written,
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
