//! Delivery of an authorization-code redirect (RFC 6749 section 4.1.2) to
//! the leader: the seam between the inbound HTTP server and the reconcile.
//!
//! Any replica may receive the browser's `GET /oauth2/callback?code=&state=`;
//! only the leader reconciles. [`deliver`] checks `state` — minted by this
//! operator's key for exactly one Integration (namespace, name and uid),
//! younger than [`STATE_LIFETIME`], and the very request the Integration's
//! output Secret holds now, not yet answered — and then hands the code over
//! through the API server: it writes the code into the output Secret as one
//! more checkpoint key, with the content hash recomputed and the input
//! fingerprint left at the checkpoint marker, under the resourceVersion it
//! checked. The leader's watch sees a version it did not write, finds it
//! intact and unfinished, and resumes the flow: it exchanges the code.
//! Nothing is written for a refused delivery, and the code is never logged.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, ResourceExt},
};
use secrecy::ExposeSecret;

use super::output::{self, Fingerprinter};
use crate::{
    crd::Integration,
    providers::{
        authorization::{ParsedState, STATE_LIFETIME},
        oauth2::ac_keys,
    },
};

/// Field manager of a delivery's write.
pub const DELIVERY_MANAGER: &str = "integration-operator/authorization";

/// Why a delivery was refused. Messages name no code, token or state value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeliveryError {
    /// Not a state this operator minted (malformed, another key, another
    /// Integration's name spliced in, a recreated Integration).
    #[error("the state parameter is not one this operator issued")]
    InvalidState,
    /// Older than the request's lifetime.
    #[error("the authorization request has expired; open the new URL in the Integration's status")]
    Expired,
    /// Valid once, but not the request the Integration waits for now
    /// (replaced by a newer one, or already answered and exchanged).
    #[error("the authorization request is no longer current (replaced, or already used)")]
    NotCurrent,
    /// A code was already delivered for this request (a replay).
    #[error("a code was already delivered for this authorization request")]
    Replayed,
    /// The code is empty, too long or has characters no code has.
    #[error("the code parameter is malformed")]
    MalformedCode,
    /// The Integration (or its output Secret) is gone, or is not an
    /// authorization-code Integration.
    #[error("no Integration waits for this authorization")]
    UnknownIntegration,
    /// The API server refused or failed; the browser may retry.
    #[error("the delivery could not be recorded, try again: {0}")]
    Kubernetes(String),
}

impl DeliveryError {
    /// The HTTP status the callback answers with.
    pub fn status(&self) -> u16 {
        match self {
            DeliveryError::Kubernetes(_) => 503,
            DeliveryError::Replayed => 409,
            DeliveryError::Expired | DeliveryError::NotCurrent => 410,
            _ => 400,
        }
    }
}

/// Validates `state` and hands `code` to the leader (see the module
/// documentation). `max_age` is [`STATE_LIFETIME`] in the operator.
pub async fn deliver(
    client: &Client,
    fingerprinter: &Fingerprinter,
    code: &str,
    state: &str,
) -> Result<(), DeliveryError> {
    deliver_with(client, fingerprinter, code, state, STATE_LIFETIME, Timestamp::now()).await
}

/// As [`deliver`], with the lifetime and the time given (tests).
pub async fn deliver_with(
    client: &Client,
    fingerprinter: &Fingerprinter,
    code: &str,
    state: &str,
    max_age: Duration,
    now: Timestamp,
) -> Result<(), DeliveryError> {
    if code.is_empty() || code.len() > 2048 || !code.chars().all(|c| c.is_ascii_graphic()) {
        return Err(DeliveryError::MalformedCode);
    }
    let parsed = ParsedState::parse(state).ok_or(DeliveryError::InvalidState)?;
    let k8s = |e: kube::Error| DeliveryError::Kubernetes(e.to_string());
    let integrations: Api<Integration> = Api::namespaced(client.clone(), &parsed.namespace);
    let integration = integrations
        .get_opt(&parsed.name)
        .await
        .map_err(k8s)?
        // Told apart from a forged state only after the MAC: no oracle of
        // which Integrations exist.
        .ok_or(DeliveryError::InvalidState)?;
    let uid = integration.metadata.uid.clone().unwrap_or_default();
    // The MAC first: an expiry answer must not confirm a forged state.
    if !fingerprinter.state_key().verify(&parsed, &uid) {
        return Err(DeliveryError::InvalidState);
    }
    if parsed.expired(now, max_age) {
        return Err(DeliveryError::Expired);
    }
    if integration.spec.authorization_code.is_none() || integration.metadata.deletion_timestamp.is_some() {
        return Err(DeliveryError::UnknownIntegration);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &parsed.namespace);
    let secret = secrets
        .get_opt(&output::target_name(&integration))
        .await
        .map_err(k8s)?
        .ok_or(DeliveryError::UnknownIntegration)?;
    if !output::is_owned_by(&secret.metadata, &integration) || !output::is_intact(&secret, fingerprinter) {
        // Someone else's Secret, or one edited behind the operator's back:
        // nothing in it is believed.
        return Err(DeliveryError::NotCurrent);
    }
    let fields = output::fields_of(&secret);
    let current = fields.get(ac_keys::STATE).map(|s| s.expose_secret().to_string());
    if !current.is_some_and(|c| constant_time_eq(c.as_bytes(), state.as_bytes())) {
        return Err(DeliveryError::NotCurrent);
    }
    if fields.get(ac_keys::CODE).is_some() {
        return Err(DeliveryError::Replayed);
    }
    let mut data = secret.data.clone().unwrap_or_default();
    data.insert(ac_keys::CODE.to_string(), ByteString(code.as_bytes().to_vec()));
    let patch = serde_json::json!({
        "metadata": {
            // A precondition: a concurrent delivery (a replay racing the
            // first) or a new request written since loses with 409.
            "resourceVersion": secret.metadata.resource_version,
            "annotations": {
                output::CONTENT_HASH_ANNOTATION: fingerprinter.content(
                    &data,
                    &output::rendered_keys(secret.metadata.annotations.as_ref()),
                ),
                // Unfinished: the leader resumes the flow instead of
                // believing the Secret current.
                output::INPUT_FINGERPRINT_ANNOTATION: super::reconcile::UNFINISHED,
            },
        },
        "data": { ac_keys::CODE: ByteString(code.as_bytes().to_vec()) },
    });
    let params = PatchParams {
        field_manager: Some(DELIVERY_MANAGER.into()),
        ..PatchParams::default()
    };
    // A merge patch: the verb the operator's role already has on Secrets.
    match secrets.patch(&secret.name_any(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(namespace = %parsed.namespace, integration = %parsed.name, "authorization code delivered to the leader");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Err(DeliveryError::Replayed),
        Err(e) => Err(k8s(e)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the callback needs: an API client and the fingerprint key.
#[derive(Clone)]
pub struct CallbackState {
    pub client: Client,
    pub fingerprinter: Fingerprinter,
}

/// `GET /oauth2/callback` (the path registered at providers as the
/// ClusterProvider's `redirectUrl`): `code` and `state`, or the provider's
/// `error` (RFC 6749 section 4.1.2.1). Answers a small HTML page; never
/// echoes the code or the state.
pub fn authorization_router(state: CallbackState) -> axum::Router {
    axum::Router::new()
        .route("/oauth2/callback", axum::routing::get(callback))
        .with_state(state)
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    axum::extract::State(ctx): axum::extract::State<CallbackState>,
    axum::extract::Query(q): axum::extract::Query<CallbackQuery>,
) -> (axum::http::StatusCode, axum::response::Html<String>) {
    let (status, text) = match (q.error, q.code, q.state) {
        (Some(error), _, _) => {
            // The provider's error code is ASCII per RFC 6749; anything else is not shown.
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            (
                400,
                format!(
                    "The provider did not grant access ({error}). Open the authorization URL in the Integration's status again."
                ),
            )
        }
        (None, Some(code), Some(state)) => match deliver(&ctx.client, &ctx.fingerprinter, &code, &state).await {
            Ok(()) => (
                200,
                "Access granted. The operator is exchanging the code; you can close this window.".to_string(),
            ),
            Err(e) => (e.status(), format!("Not accepted: {e}.")),
        },
        _ => (400, "The request has no code and state.".to_string()),
    };
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>integration-operator</title></head><body><p>{}</p></body></html>",
        html_escape(&text)
    );
    (status, axum::response::Html(page))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The callback without a cluster: what it answers before any API call.
    #[tokio::test]
    async fn the_callback_refuses_without_echoing_and_reports_provider_errors() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let state = CallbackState {
            client: Client::try_from(config).unwrap(),
            fingerprinter: Fingerprinter::new(b"k".to_vec()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, authorization_router(state)).await });
        let get = |q: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}/oauth2/callback?{q}"))
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        let (status, page) = get("code=secret-code-123&state=forged-state-456").await;
        assert_eq!(status, 400);
        assert!(page.contains("not one this operator issued"), "{page}");
        assert!(!page.contains("secret-code-123") && !page.contains("forged-state-456"));
        let (status, page) = get("error=access_denied%3Cscript%3E&state=x").await;
        assert_eq!(status, 400);
        assert!(page.contains("(access_deniedscript)"), "{page}");
        assert!(!page.contains("<script>"));
        assert_eq!(get("").await.0, 400);
        assert_eq!(get("code=a%0Ab&state=x").await.0, 400);
    }
}
