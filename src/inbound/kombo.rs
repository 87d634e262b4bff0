//! Kombo's webhooks (shared/providers.md section 4.3) at
//! `POST /webhooks/kombo/<ClusterProvider name>`.
//!
//! A delivery is acted on only if, in this order (the answer when not):
//! 1. the ClusterProvider exists, is of type `kombo` and names a webhook
//!    secret in `spec.webhook` (404: nothing is served there);
//! 2. that Secret (in the operator's namespace) holds the secret (503: the
//!    admin must fix it; Kombo retries);
//! 3. `X-Kombo-Signature` is the HMAC-SHA256 of the raw body under that
//!    secret, base64url without padding, compared in constant time (401 when
//!    missing or wrong);
//! 4. the body is Kombo's envelope `{"id","type","data"}` with the `data`
//!    of its type as the official SDK models it (400);
//! 5. it is not stale: `integration-deleted` carries `data.deleted_at`,
//!    `integration-state-changed` `data.updated_at`; older than the replay
//!    window or more than [`FUTURE_SKEW`] ahead is stale (400).
//!    `integration-created` carries no time at all (the SDK's model has
//!    none), so only the replay cache guards it;
//! 6. its event `id` was not seen within the replay window (409);
//! 7. it names an Integration of this ClusterProvider, in a namespace the
//!    ClusterProvider allows (404 when none; 422 when an origin id is
//!    claimed by more than one).
//!
//! Other event types, validly signed, are answered 202 and ignored.
//!
//! What the receiver does is only to record the fact on the Integration
//! (any replica can; the leader acts):
//! - `integration-created`: the annotation
//!   `integration-operator.io/provider-reported-id: <id> <attestation>`
//!   (bound to the Integration's uid with the operator's key) and
//!   `integration-operator.io/provider-event: <event id>`. The leader's
//!   kombo driver takes the id only while a link is out, and only if
//!   `GET /integrations/{id}` shows the origin id sent with the link.
//! - `integration-deleted`, `integration-state-changed`: the annotation
//!   `integration-operator.io/provider-event: <event id>`: the leader checks
//!   the integration with Kombo at once (the payload's state is not
//!   trusted; Kombo's API is asked).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::{
    controller::{
        output::Fingerprinter,
        reconcile::{PROVIDER_EVENT_ANNOTATION, REPORTED_ID_ANNOTATION},
    },
    crd::{ClusterProvider, Integration, ProviderType},
};

/// The header Kombo signs deliveries in.
pub const SIGNATURE_HEADER: &str = "X-Kombo-Signature";
/// Default key of the webhook secret in its Secret.
pub const DEFAULT_SECRET_KEY: &str = "webhook_secret";
/// How far in the future an event time may be (clock skew).
pub const FUTURE_SKEW: Duration = Duration::from_secs(300);
/// Most event ids remembered at once; when full of unexpired ids, new
/// deliveries are refused (503) rather than forgetting one early.
const MAX_REMEMBERED: usize = 100_000;
/// Longest event id accepted.
const MAX_EVENT_ID: usize = 128;

/// The Kombo webhook receiver's state, shared by every request.
#[derive(Clone)]
pub struct KomboWebhooks {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The operator's namespace: where webhook secrets live.
    namespace: String,
    /// Namespaces the operator manages; empty: all.
    watch_namespaces: Vec<String>,
    fingerprinter: Fingerprinter,
    replay: Mutex<ReplayCache>,
    window: Duration,
}

impl KomboWebhooks {
    pub fn new(
        client: Client,
        namespace: String,
        watch_namespaces: Vec<String>,
        fingerprinter: Fingerprinter,
        window: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                namespace,
                watch_namespaces,
                fingerprinter,
                replay: Mutex::new(ReplayCache::default()),
                window,
            }),
        }
    }
}

/// Why a delivery was refused, as answered and counted (never with the
/// payload, the signature or the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoWebhook,
    SecretUnavailable,
    Unsigned,
    BadSignature,
    Malformed,
    Stale,
    Replayed,
    NoIntegration,
    Ambiguous,
    Busy,
    ApiError,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::NoWebhook | Refusal::NoIntegration => StatusCode::NOT_FOUND,
            Refusal::Unsigned | Refusal::BadSignature => StatusCode::UNAUTHORIZED,
            Refusal::Malformed | Refusal::Stale => StatusCode::BAD_REQUEST,
            Refusal::Replayed => StatusCode::CONFLICT,
            Refusal::Ambiguous => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::SecretUnavailable | Refusal::Busy | Refusal::ApiError => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Bounded label, also the answer's message.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoWebhook => "no webhook is configured here",
            Refusal::SecretUnavailable => "the webhook secret is not available",
            Refusal::Unsigned => "missing X-Kombo-Signature",
            Refusal::BadSignature => "invalid signature",
            Refusal::Malformed => "malformed event",
            Refusal::Stale => "stale event",
            Refusal::Replayed => "event already received",
            Refusal::NoIntegration => "no Integration matches this event",
            Refusal::Ambiguous => "more than one Integration matches this origin id",
            Refusal::Busy => "too many recent events; retry later",
            Refusal::ApiError => "could not record the event; retry later",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status(),
            axum::Json(json!({"status": "error", "error": {"message": self.as_str()}})),
        )
            .into_response()
    }
}

/// Kombo's signature of `body` under `secret`: HMAC-SHA256, base64url
/// without padding (providers.md 4.3). The simulator signs with this too.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Kombo's signature of `body` under `secret`, in
/// constant time. Pure, so it can be tested and fuzzed.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature.trim().as_bytes()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct EndUser {
    origin_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
    end_user: EndUser,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    id: String,
    deleted_at: Timestamp,
}

#[derive(Debug, Deserialize)]
struct StateChanged {
    integration_id: String,
    updated_at: Timestamp,
}

/// What a verified event asks of the operator.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// `integration-created`: the integration `id`, created by the end user
    /// with origin id `origin`.
    Created { id: String, origin: String },
    /// `integration-deleted` / `integration-state-changed`: check `id` now.
    Changed { id: String, at: Timestamp },
    /// Another type: nothing to do.
    Other,
}

/// Parses a verified body into its event id and what it asks. Pure.
pub fn parse(body: &[u8]) -> Result<(String, Event), Refusal> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    if envelope.id.is_empty()
        || envelope.id.len() > MAX_EVENT_ID
        || !envelope
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(Refusal::Malformed);
    }
    let event = match envelope.kind.as_str() {
        "integration-created" => {
            let d: Created = serde_json::from_value(envelope.data).map_err(|_| Refusal::Malformed)?;
            let origin = d.end_user.origin_id.ok_or(Refusal::NoIntegration)?;
            Event::Created { id: d.id, origin }
        }
        "integration-deleted" => {
            let d: Deleted = serde_json::from_value(envelope.data).map_err(|_| Refusal::Malformed)?;
            Event::Changed {
                id: d.id,
                at: d.deleted_at,
            }
        }
        "integration-state-changed" => {
            let d: StateChanged = serde_json::from_value(envelope.data).map_err(|_| Refusal::Malformed)?;
            Event::Changed {
                id: d.integration_id,
                at: d.updated_at,
            }
        }
        _ => Event::Other,
    };
    Ok((envelope.id, event))
}

/// Event ids seen within the replay window, oldest first.
#[derive(Default)]
struct ReplayCache {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl ReplayCache {
    /// Records `id`; `Err(Replayed)` if it was seen within `window`,
    /// `Err(Busy)` if the cache is full of unexpired ids.
    fn reserve(&mut self, id: &str, window: Duration, now: Instant) -> Result<(), Refusal> {
        while let Some((at, old)) = self.order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            if self.seen.get(old) == Some(at) {
                self.seen.remove(old);
            }
            self.order.pop_front();
        }
        if self.seen.contains_key(id) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Refusal::Busy);
        }
        self.seen.insert(id.to_string(), now);
        self.order.push_back((now, id.to_string()));
        Ok(())
    }

    /// Forgets `id` again (it was not acted on, so Kombo's retry must be).
    fn release(&mut self, id: &str) {
        self.seen.remove(id);
    }
}

/// `POST /webhooks/kombo/{provider}`.
pub async fn receive(
    State(hooks): State<KomboWebhooks>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&hooks.inner, &provider, &headers, &body).await {
        Ok(answer) => answer,
        Err(refusal) => {
            // The provider name and the reason only: never the payload,
            // the signature or the secret.
            warn!(provider = %provider, reason = refusal.as_str(), "kombo webhook refused");
            refusal.into_response()
        }
    }
}

async fn handle(inner: &Inner, provider: &str, headers: &HeaderMap, body: &[u8]) -> Result<Response, Refusal> {
    let cp = Api::<ClusterProvider>::all(inner.client.clone())
        .get_opt(provider)
        .await
        .map_err(|_| Refusal::ApiError)?
        .ok_or(Refusal::NoWebhook)?;
    if cp.spec.provider_type != ProviderType::Kombo {
        return Err(Refusal::NoWebhook);
    }
    let webhook = cp.spec.webhook.as_ref().ok_or(Refusal::NoWebhook)?;
    let secret = read_secret(inner, &webhook.secret_ref.name, webhook.secret_ref.key.as_deref()).await?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(Refusal::Unsigned)?;
    if !verify(&secret, body, signature) {
        return Err(Refusal::BadSignature);
    }
    let (event_id, event) = parse(body)?;
    if let Event::Changed { at, .. } = &event {
        let now = Timestamp::now();
        let window = jiff::SignedDuration::try_from(inner.window).unwrap_or_default();
        let skew = jiff::SignedDuration::try_from(FUTURE_SKEW).unwrap_or_default();
        if *at < now - window || *at > now + skew {
            return Err(Refusal::Stale);
        }
    }
    // Kombo's event ids are unique per environment: one cache per ClusterProvider name.
    let replay_key = format!("{provider}/{event_id}");
    inner
        .replay
        .lock()
        .map_err(|_| Refusal::Busy)?
        .reserve(&replay_key, inner.window, Instant::now())?;
    let result = record(inner, &cp, &event_id, &event).await;
    if result.is_err()
        && let Ok(mut replay) = inner.replay.lock()
    {
        replay.release(&replay_key);
    }
    let recorded = result?;
    info!(provider = %provider, event = kind(&event), integrations = recorded, "kombo webhook recorded");
    let status = if matches!(event, Event::Other) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({"status": "success", "data": {}}))).into_response())
}

fn kind(event: &Event) -> &'static str {
    match event {
        Event::Created { .. } => "integration-created",
        Event::Changed { .. } => "integration-changed",
        Event::Other => "other",
    }
}

async fn read_secret(inner: &Inner, name: &str, key: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(inner.client.clone(), &inner.namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|_| Refusal::SecretUnavailable)?
        .ok_or(Refusal::SecretUnavailable)?;
    let value = secret
        .data
        .and_then(|d| d.get(key.unwrap_or(DEFAULT_SECRET_KEY)).cloned())
        .map(|b| b.0)
        .filter(|v| !v.is_empty())
        .ok_or(Refusal::SecretUnavailable)?;
    // A trailing newline from `kubectl create secret --from-file` is not
    // part of the secret Kombo shows.
    let trimmed = value.trim_ascii_end();
    Ok(trimmed.to_vec())
}

/// The Integrations of ClusterProvider `cp` the operator manages.
async fn candidates(inner: &Inner, cp: &ClusterProvider) -> Result<Vec<Integration>, Refusal> {
    let name = cp.name_any();
    let mut all = Vec::new();
    let namespaces: Vec<Option<&str>> = if inner.watch_namespaces.is_empty() {
        vec![None]
    } else {
        inner.watch_namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for ns in namespaces {
        let api: Api<Integration> = match ns {
            Some(ns) => Api::namespaced(inner.client.clone(), ns),
            None => Api::all(inner.client.clone()),
        };
        let list = api.list(&ListParams::default()).await.map_err(|_| Refusal::ApiError)?;
        all.extend(list.items);
    }
    let allowed = &cp.spec.allowed_namespaces;
    Ok(all
        .into_iter()
        .filter(|i| i.spec.provider == name && i.spec.connection.is_some() && i.metadata.deletion_timestamp.is_none())
        .filter(|i| allowed.is_empty() || allowed.contains(&i.namespace().unwrap_or_default()))
        .collect())
}

/// Records `event` on the Integrations it concerns; returns how many.
async fn record(inner: &Inner, cp: &ClusterProvider, event_id: &str, event: &Event) -> Result<usize, Refusal> {
    let targets: Vec<(Integration, BTreeMap<String, String>)> = match event {
        Event::Other => return Ok(0),
        Event::Created { id, origin } => {
            let matching: Vec<Integration> = candidates(inner, cp)
                .await?
                .into_iter()
                .filter(|i| {
                    let c = i.spec.connection.as_deref();
                    c.is_some_and(|c| c.integration_id.is_none())
                        && c.and_then(|c| c.end_user_origin_id.clone())
                            .or_else(|| i.metadata.uid.clone())
                            .as_deref()
                            == Some(origin.as_str())
                })
                .collect();
            if matching.len() > 1 {
                return Err(Refusal::Ambiguous);
            }
            matching
                .into_iter()
                .map(|i| {
                    let uid = i.metadata.uid.clone().unwrap_or_default();
                    let attested = format!("{id} {}", inner.fingerprinter.attest(&uid, id));
                    let annotations = BTreeMap::from([
                        (REPORTED_ID_ANNOTATION.to_string(), attested),
                        (PROVIDER_EVENT_ANNOTATION.to_string(), event_id.to_string()),
                    ]);
                    (i, annotations)
                })
                .collect()
        }
        Event::Changed { id, .. } => candidates(inner, cp)
            .await?
            .into_iter()
            .filter(|i| {
                i.status.as_ref().and_then(|s| s.integration_id.as_deref()) == Some(id.as_str())
                    || i.spec.connection.as_deref().and_then(|c| c.integration_id.as_deref()) == Some(id.as_str())
            })
            .map(|i| {
                (
                    i,
                    BTreeMap::from([(PROVIDER_EVENT_ANNOTATION.to_string(), event_id.to_string())]),
                )
            })
            .collect(),
    };
    if targets.is_empty() {
        return Err(Refusal::NoIntegration);
    }
    for (integration, annotations) in &targets {
        let api: Api<Integration> = Api::namespaced(inner.client.clone(), &integration.namespace().unwrap_or_default());
        // A merge patch of two annotations, guarded by the uid so that an
        // Integration deleted and re-created under the same name is not
        // given another's report.
        let patch = json!({"metadata": {"uid": integration.metadata.uid, "annotations": annotations}});
        api.patch(&integration.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|_| Refusal::ApiError)?;
    }
    Ok(targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_base64url_without_padding() {
        let sig = sign(b"secret", b"{\"id\":\"e1\"}");
        assert!(!sig.contains('=') && !sig.contains('+') && !sig.contains('/'), "{sig}");
        assert_eq!(sig.len(), 43);
        assert!(verify(b"secret", b"{\"id\":\"e1\"}", &sig));
        assert!(!verify(b"secret", b"{\"id\":\"e2\"}", &sig));
        assert!(!verify(b"other", b"{\"id\":\"e1\"}", &sig));
        assert!(!verify(b"secret", b"{\"id\":\"e1\"}", ""));
        assert!(!verify(b"secret", b"{\"id\":\"e1\"}", "not base64!"));
        // Standard base64 with padding is not what Kombo sends.
        let padded = base64::engine::general_purpose::STANDARD.encode(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig.as_bytes())
                .unwrap(),
        );
        if padded != sig {
            assert!(!verify(b"secret", b"{\"id\":\"e1\"}", &padded));
        }
    }

    #[test]
    fn events_parse_as_the_sdk_models_them() {
        let created = json!({"id": "evt_1", "type": "integration-created", "data": {
            "id": "personio:abc", "tool": "personio", "category": "HRIS",
            "end_user": {"organization_name": "ACME", "creator_email": null, "origin_id": "o-1"}}});
        assert_eq!(
            parse(created.to_string().as_bytes()).unwrap(),
            (
                "evt_1".to_string(),
                Event::Created {
                    id: "personio:abc".into(),
                    origin: "o-1".into()
                }
            )
        );
        let changed = json!({"id": "evt_2", "type": "integration-state-changed", "data": {
            "integration_tool": "personio", "integration_id": "personio:abc", "integration_category": "HRIS",
            "end_user": {"organization_name": "ACME", "creator_email": null, "origin_id": "o-1"},
            "qa_status": "PASSED", "setup_status": "COMPLETED", "state": "INVALID",
            "updated_at": "2026-12-01T10:00:00.000Z"}});
        assert!(matches!(
            parse(changed.to_string().as_bytes()).unwrap().1,
            Event::Changed { ref id, .. } if id == "personio:abc"
        ));
        let other = json!({"id": "evt_3", "type": "sync-finished", "data": {}});
        assert_eq!(parse(other.to_string().as_bytes()).unwrap().1, Event::Other);
        for bad in [
            "not json".to_string(),
            json!({"id": "e", "type": "integration-created", "data": {}}).to_string(),
            json!({"id": "e/../x", "type": "sync-finished", "data": {}}).to_string(),
            json!({"type": "sync-finished", "data": {}}).to_string(),
        ] {
            assert_eq!(parse(bad.as_bytes()).unwrap_err(), Refusal::Malformed, "{bad}");
        }
    }

    #[test]
    fn the_replay_cache_refuses_a_seen_id_until_the_window_passes() {
        let mut cache = ReplayCache::default();
        let window = Duration::from_secs(60);
        let t0 = Instant::now();
        assert!(cache.reserve("a", window, t0).is_ok());
        assert_eq!(
            cache.reserve("a", window, t0 + Duration::from_secs(59)),
            Err(Refusal::Replayed)
        );
        assert!(cache.reserve("a", window, t0 + Duration::from_secs(61)).is_ok());
        cache.release("a");
        assert!(cache.reserve("a", window, t0 + Duration::from_secs(62)).is_ok());
    }
}
