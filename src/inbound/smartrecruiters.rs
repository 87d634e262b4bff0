//! SmartRecruiters' calls to the partner (General Partner Integration,
//! seed 004; shared/providers.md section 1.5), served per ClusterProvider of
//! type `smartrecruiters` while its `spec.partnerEndpoints` is set:
//!
//! | registered as | route | what it does |
//! | --- | --- | --- |
//! | `oauthTokenUrl` | `POST /webhooks/smartrecruiters/<cp>/oauth/token` | RFC 6749 section 4.4 client-credentials grant for the customer-level credentials the operator generated (`bidirectional: true`) and sent with the integration POST |
//! | `callbackUrl` | `POST /webhooks/smartrecruiters/<cp>/callback` | `{"eventType": "INTEGRATION_DISABLED"}` signed with a token from the route above |
//! | `consentUrl` | `GET /webhooks/smartrecruiters/<cp>/consent?companyId=…[&redirect=…]` | a hand-off page: the operator has no sign-in, an admin applies the Integration |
//!
//! **Tokens** are self-contained, so any replica verifies them without
//! shared memory: `iosr1.<base64url(expiry ":" clientId)>.<base64url(MAC)>`,
//! the MAC an HMAC-SHA256 under a key derived from *both* the operator's
//! fingerprint key and the generated client secret ([`TokenKey::derive`]).
//! Why both: the operator's key alone would keep a token valid after the
//! client secret it was issued for is gone (an integration created again
//! with new partner credentials); the client secret alone would let whoever
//! reads the output Secret mint tokens without ever asking the endpoint.
//! Nothing is stored per token; a token dies with its expiry, with the
//! Integration, or with its client secret.
//!
//! **Who a client is** comes from the operator's own state only: the
//! generated client id names the Integration's uid
//! ([`crate::providers::smartrecruiters::partner_client_identity`]); that
//! Integration must use this ClusterProvider with `bidirectional: true` in a
//! namespace it allows, and its output Secret must be owned by it, intact
//! (content hash under the operator's key: a namespace user who edits the
//! Secret cannot plant a secret of their choosing) and hold exactly this
//! `partner_client_id`; the secret is compared in constant time.
//!
//! **What a callback does** is to record the fact on the Integration (any
//! replica can; the leader acts): the annotation
//! `integration-operator.io/provider-disabled: <integrationId> <time> <attestation>`,
//! a MAC under the operator's key bound to the Integration's uid, so nobody
//! who can merely edit annotations can forge it. The leader then shows
//! `ReauthRequired` with a Warning Event and sends nothing more for that
//! integration until a person sets `integration-operator.io/retry`.
//!
//! Nothing received is logged: no secret, no token, no body; only the
//! ClusterProvider, a fixed reason and, for callbacks, an event type that
//! passed a character check.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::{
    controller::{
        output::{self, Fingerprinter},
        reconcile::{PROVIDER_DISABLED_ANNOTATION, parse_disabled},
        schedule::parse_duration,
    },
    crd::{ClusterProvider, Integration, ProviderType},
    providers::{
        keys,
        smartrecruiters::{PARTNER_CLIENT_ID, PARTNER_CLIENT_SECRET, partner_client_identity},
    },
};

/// Version prefix of the tokens this endpoint issues.
const TOKEN_PREFIX: &str = "iosr1";
/// Longest token looked at (an issued one is well under 200 bytes).
const MAX_TOKEN: usize = 512;
/// Longest client id accepted (a generated one is 60 bytes at most).
const MAX_CLIENT_ID: usize = 128;
/// Token lifetime unless `spec.partnerEndpoints.tokenLifetime` says otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Bounds of `tokenLifetime`: a token of a few seconds would expire on its
/// way to the callback; one of days would outlive most reasons to revoke it.
const TOKEN_LIFETIME_BOUNDS: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(24 * 3600));
/// The event SmartRecruiters sends when a customer disables an integration.
pub const INTEGRATION_DISABLED: &str = "INTEGRATION_DISABLED";
/// Purpose label of the token key derived from the operator's fingerprint key.
pub const TOKEN_KEY_PURPOSE: &str = "smartrecruiters partner token v1";

/// The receiver's state, shared by every request.
#[derive(Clone)]
pub struct PartnerEndpoints {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Namespaces the operator manages; empty: all.
    watch_namespaces: Vec<String>,
    fingerprinter: Fingerprinter,
    /// Derived from the fingerprint key once ([`TOKEN_KEY_PURPOSE`]).
    token_root: Vec<u8>,
}

impl PartnerEndpoints {
    pub fn new(client: Client, watch_namespaces: Vec<String>, fingerprinter: Fingerprinter) -> Self {
        let token_root = fingerprinter.derived_key(TOKEN_KEY_PURPOSE);
        Self {
            inner: Arc::new(Inner {
                client,
                watch_namespaces,
                fingerprinter,
                token_root,
            }),
        }
    }
}

// ---------------------------------------------------------------- tokens

/// The MAC key of one client's tokens (see the module doc for why it
/// derives from both the operator's key and the client secret).
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

fn feed(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_le_bytes());
    mac.update(bytes);
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

impl TokenKey {
    /// `root`: the key derived from the operator's fingerprint key;
    /// `provider`: the ClusterProvider whose endpoint issues the token (a
    /// token of one is no token of another); `client_secret`: the generated
    /// secret the token is issued for.
    pub fn derive(root: &[u8], provider: &str, client_secret: &[u8]) -> Self {
        let mut mac = hmac(root);
        feed(&mut mac, provider.as_bytes());
        feed(&mut mac, client_secret);
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = hmac(&self.0);
        feed(&mut mac, TOKEN_PREFIX.as_bytes());
        feed(&mut mac, payload);
        mac
    }
}

/// Issues a token for `client_id`, valid until `expires_at` (Unix seconds).
pub fn mint(key: &TokenKey, client_id: &str, expires_at: i64) -> String {
    let payload = format!("{expires_at}:{client_id}");
    let tag = key.mac(payload.as_bytes()).finalize().into_bytes();
    format!(
        "{TOKEN_PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// A token's claims, read before its MAC is checked (the client id says
/// whose key checks it).
#[derive(Debug, PartialEq, Eq)]
pub struct Claims {
    pub client_id: String,
    pub expires_at: i64,
    payload: Vec<u8>,
    tag: Vec<u8>,
}

/// Why a token is refused (all answered alike: `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Expired,
    BadMac,
}

/// Reads a token's claims; checks its form and expiry, not its MAC. Pure.
pub fn claims(token: &str, now: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(TOKEN_PREFIX), Some(payload), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
    let text = std::str::from_utf8(&payload).map_err(|_| TokenError::Malformed)?;
    let (expires_at, client_id) = text.split_once(':').ok_or(TokenError::Malformed)?;
    let expires_at: i64 = expires_at.parse().map_err(|_| TokenError::Malformed)?;
    if !valid_client_id(client_id) || tag.len() != 32 {
        return Err(TokenError::Malformed);
    }
    if expires_at <= now {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        client_id: client_id.to_string(),
        expires_at,
        payload,
        tag,
    })
}

/// Whether `claims` carry the MAC of `key` (constant time). Pure.
pub fn verify(key: &TokenKey, claims: &Claims) -> Result<(), TokenError> {
    key.mac(&claims.payload)
        .verify_slice(&claims.tag)
        .map_err(|_| TokenError::BadMac)
}

fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether two secrets are equal, in time independent of where they differ
/// (both are MAC'd under a throwaway key and the tags compared with
/// `hmac`'s constant-time check).
fn same_secret(given: &[u8], stored: &[u8]) -> bool {
    let key: [u8; 32] = rand::random();
    let mut a = hmac(&key);
    a.update(given);
    let mut b = hmac(&key);
    b.update(stored);
    a.verify_slice(&b.finalize().into_bytes()).is_ok()
}

// ------------------------------------------------- the token request (pure)

/// An RFC 6749 section 5.2 error of the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    /// 400: a parameter missing, repeated or malformed, or two client
    /// authentication methods at once.
    InvalidRequest(&'static str),
    /// 400: a grant type other than `client_credentials`.
    UnsupportedGrantType,
    /// 401 with `WWW-Authenticate`: no, unknown or wrong client credentials.
    InvalidClient,
    /// 503: the operator could not read its own state; retry.
    Unavailable,
}

impl OAuthError {
    fn as_str(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::Unavailable => "temporarily_unavailable",
        }
    }

    fn description(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(why) => why,
            OAuthError::UnsupportedGrantType => "only grant_type=client_credentials is supported",
            OAuthError::InvalidClient => "client authentication failed",
            OAuthError::Unavailable => "try again later",
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self {
            OAuthError::InvalidRequest(_) | OAuthError::UnsupportedGrantType => StatusCode::BAD_REQUEST,
            OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = (
            status,
            axum::Json(json!({"error": self.as_str(), "error_description": self.description()})),
        )
            .into_response();
        no_store(response.headers_mut());
        if self == OAuthError::InvalidClient {
            // RFC 6749 section 5.2: a 401 names the scheme the client may use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"integration-operator\""),
            );
        }
        response
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The client credentials of a client-credentials token request (RFC 6749
/// sections 2.3.1, 4.4.2), from its `Authorization` header, `Content-Type`
/// and body. Pure.
pub fn client_credentials(
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(String, SecretString), OAuthError> {
    let form_type = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut form: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        // Section 3.2: parameters must not be included more than once.
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::InvalidRequest("a parameter is repeated"));
        }
    }
    match form.get("grant_type").map(String::as_str) {
        None => return Err(OAuthError::InvalidRequest("grant_type is missing")),
        Some("client_credentials") => {}
        Some(_) => return Err(OAuthError::UnsupportedGrantType),
    }
    let basic = match authorization {
        None => None,
        Some(value) => {
            let (scheme, rest) = value.trim().split_once(' ').ok_or(OAuthError::InvalidClient)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::InvalidClient);
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| OAuthError::InvalidClient)?;
            let text = String::from_utf8(raw).map_err(|_| OAuthError::InvalidClient)?;
            let (id, secret) = text.split_once(':').ok_or(OAuthError::InvalidClient)?;
            // Section 2.3.1: both are form-encoded before Basic encoding.
            Some((form_decode(id), form_decode(secret)))
        }
    };
    let body_auth = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, None) => None,
        // A client id without a secret (a public client) is no client here.
        _ if basic.is_none() => return Err(OAuthError::InvalidClient),
        _ => None,
    };
    let (id, secret) = match (basic, body_auth) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::InvalidRequest("more than one client authentication method"));
        }
        (Some(b), None) | (None, Some(b)) => b,
        (None, None) => return Err(OAuthError::InvalidClient),
    };
    if !valid_client_id(&id) || secret.is_empty() {
        return Err(OAuthError::InvalidClient);
    }
    Ok((id, SecretString::from(secret)))
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

// ------------------------------------------------------ the callback (pure)

/// What a verified callback asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// `INTEGRATION_DISABLED`: the customer disabled the integration.
    Disabled,
    /// Another event type (the label is safe to log: checked characters).
    Other(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallbackBody {
    event_type: String,
}

/// Parses a callback body (seed 004: `{"eventType": "INTEGRATION_DISABLED"}`;
/// other fields are allowed and ignored). Pure.
pub fn parse_callback(body: &[u8]) -> Option<Callback> {
    let parsed: CallbackBody = serde_json::from_slice(body).ok()?;
    if parsed.event_type == INTEGRATION_DISABLED {
        return Some(Callback::Disabled);
    }
    let safe = !parsed.event_type.is_empty()
        && parsed.event_type.len() <= 64
        && parsed
            .event_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    Some(Callback::Other(if safe {
        parsed.event_type
    } else {
        "unrecognised".into()
    }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Why a callback was refused (RFC 6750 section 3 for the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRefusal {
    NotServed,
    NoToken,
    InvalidToken,
    Malformed,
    Unavailable,
}

impl CallbackRefusal {
    fn as_str(self) -> &'static str {
        match self {
            CallbackRefusal::NotServed => "no partner endpoints are configured here",
            CallbackRefusal::NoToken => "missing bearer token",
            CallbackRefusal::InvalidToken => "invalid or expired token",
            CallbackRefusal::Malformed => "malformed callback",
            CallbackRefusal::Unavailable => "could not record the callback; retry later",
        }
    }
}

impl IntoResponse for CallbackRefusal {
    fn into_response(self) -> Response {
        let (status, challenge) = match self {
            CallbackRefusal::NotServed => (StatusCode::NOT_FOUND, None),
            CallbackRefusal::NoToken => (StatusCode::UNAUTHORIZED, Some("Bearer realm=\"integration-operator\"")),
            CallbackRefusal::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                Some("Bearer realm=\"integration-operator\", error=\"invalid_token\""),
            ),
            CallbackRefusal::Malformed => (StatusCode::BAD_REQUEST, None),
            CallbackRefusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        let mut response = (status, axum::Json(json!({"error": self.as_str()}))).into_response();
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        response
    }
}

// ------------------------------------------------------- the consent page

/// Whether `company_id` is plausible as a SmartRecruiters company id (it is
/// shown on the page and logged). Pure.
pub fn valid_company_id(company_id: &str) -> bool {
    !company_id.is_empty()
        && company_id.len() <= 128
        && company_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The `redirect` back to SmartRecruiters, if it is one: `https` on
/// `smartrecruiters.com` or a subdomain, default port, no user info.
/// Anything else is dropped, so the page is never an open redirect. Pure.
pub fn safe_redirect(redirect: &str) -> Option<url::Url> {
    let url = url::Url::parse(redirect).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let smartrecruiters = host == "smartrecruiters.com" || host.ends_with(".smartrecruiters.com");
    (url.scheme() == "https"
        && smartrecruiters
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none())
    .then_some(url)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The hand-off page for `company_id`, with a link back to `redirect`. Pure.
pub fn consent_page(company_id: &str, redirect: Option<&url::Url>) -> String {
    let company = html_escape(company_id);
    let back = match redirect {
        Some(url) => format!(
            "<p><a href=\"{}\">Return to SmartRecruiters</a></p>",
            html_escape(url.as_str())
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Connection requested</title></head>\n<body>\n<h1>Connection requested</h1>\n<p>Your request to connect SmartRecruiters company <code>{company}</code> has reached the integration's operator. There is no sign-in here: an administrator of this service completes the connection by approving it (applying an Integration for company <code>{company}</code>).</p>\n<p>Ask your contact at the service to approve it. The integration shows as enabled on your Apps &amp; Integrations page in SmartRecruiters once they have.</p>\n{back}\n</body></html>\n"
    )
}

fn page(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script, style or resource of any kind; framed only by
    // SmartRecruiters (POPUP mode loads this page in an iFrame there).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors https://smartrecruiters.com https://*.smartrecruiters.com; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// --------------------------------------------------------------- handlers

/// The ClusterProvider `name`, if it serves partner endpoints; and its token lifetime.
async fn served(inner: &Inner, name: &str) -> Result<Option<(ClusterProvider, Duration)>, kube::Error> {
    let Some(cp) = Api::<ClusterProvider>::all(inner.client.clone()).get_opt(name).await? else {
        return Ok(None);
    };
    if cp.spec.provider_type != ProviderType::Smartrecruiters {
        return Ok(None);
    }
    let Some(endpoints) = cp.spec.partner_endpoints.as_ref() else {
        return Ok(None);
    };
    let lifetime = endpoints
        .token_lifetime
        .as_deref()
        .and_then(|l| parse_duration(l).ok())
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .clamp(TOKEN_LIFETIME_BOUNDS.0, TOKEN_LIFETIME_BOUNDS.1);
    Ok(Some((cp, lifetime)))
}

/// The generated credentials of `client_id`, as the operator's own state
/// holds them.
struct Found {
    integration: Integration,
    secret: SecretString,
    /// The provider-side integration they were sent with, if recorded.
    integration_id: Option<String>,
}

/// Finds the Integration `client_id` was generated for (see the module doc).
/// `Ok(None)`: no such client, whatever the reason (the answer is the same,
/// so the endpoint is no oracle of which Integrations exist).
async fn find_client(inner: &Inner, cp: &ClusterProvider, client_id: &str) -> Result<Option<Found>, kube::Error> {
    let Some(uid) = partner_client_identity(client_id) else {
        return Ok(None);
    };
    let name = cp.name_any();
    let namespaces: Vec<Option<&str>> = if inner.watch_namespaces.is_empty() {
        vec![None]
    } else {
        inner.watch_namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let allowed = &cp.spec.allowed_namespaces;
    let mut integration = None;
    for ns in namespaces {
        let api: Api<Integration> = match ns {
            Some(ns) => Api::namespaced(inner.client.clone(), ns),
            None => Api::all(inner.client.clone()),
        };
        // From the API server's watch cache (resourceVersion=0): cheap, and
        // an Integration is minutes old before SmartRecruiters calls.
        let list = api.list(&ListParams::default().match_any()).await?;
        integration = list.items.into_iter().find(|i| {
            i.metadata.uid.as_deref() == Some(uid)
                && i.spec.provider == name
                && i.metadata.deletion_timestamp.is_none()
                && i.spec.partner_integration.as_ref().is_some_and(|p| p.bidirectional)
                && (allowed.is_empty() || allowed.contains(&i.namespace().unwrap_or_default()))
        });
        if integration.is_some() {
            break;
        }
    }
    let Some(integration) = integration else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(inner.client.clone(), &integration.namespace().unwrap_or_default());
    let Some(secret) = secrets.get_opt(&output::target_name(&integration)).await? else {
        return Ok(None);
    };
    if !output::is_owned_by(&secret.metadata, &integration) || !output::is_intact(&secret, &inner.fingerprinter) {
        return Ok(None);
    }
    let fields = output::fields_of(&secret);
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| v.expose_secret().to_string())
            .filter(|v| !v.is_empty())
    };
    if text(PARTNER_CLIENT_ID).as_deref() != Some(client_id) {
        return Ok(None);
    }
    let Some(secret) = fields
        .get(PARTNER_CLIENT_SECRET)
        .filter(|s| !s.expose_secret().is_empty())
    else {
        return Ok(None);
    };
    let integration_id =
        text(keys::INTEGRATION_ID).or_else(|| integration.status.as_ref().and_then(|s| s.integration_id.clone()));
    Ok(Some(Found {
        secret: secret.clone(),
        integration,
        integration_id,
    }))
}

/// `POST /webhooks/smartrecruiters/{provider}/oauth/token`.
pub async fn token(
    State(endpoints): State<PartnerEndpoints>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inner = &endpoints.inner;
    let cp = match served(inner, &provider).await {
        Ok(Some(cp)) => cp,
        Ok(None) => return CallbackRefusal::NotServed.into_response(),
        Err(_) => return OAuthError::Unavailable.into_response(),
    };
    let (cp, lifetime) = cp;
    let header = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    let (client_id, client_secret) =
        match client_credentials(header(header::AUTHORIZATION), header(header::CONTENT_TYPE), &body) {
            Ok(c) => c,
            Err(e) => {
                warn!(provider = %provider, reason = e.as_str(), "smartrecruiters token request refused");
                return e.into_response();
            }
        };
    let found = match find_client(inner, &cp, &client_id).await {
        Ok(found) => found,
        Err(_) => return OAuthError::Unavailable.into_response(),
    };
    let Some(found) = found.filter(|f| {
        same_secret(
            client_secret.expose_secret().as_bytes(),
            f.secret.expose_secret().as_bytes(),
        )
    }) else {
        warn!(provider = %provider, reason = "invalid_client", "smartrecruiters token request refused");
        return OAuthError::InvalidClient.into_response();
    };
    let key = TokenKey::derive(&inner.token_root, &provider, found.secret.expose_secret().as_bytes());
    let secs = lifetime.as_secs();
    let expires_at = jiff::Timestamp::now().as_second() + secs as i64;
    let token = mint(&key, &client_id, expires_at);
    info!(
        provider = %provider,
        namespace = %found.integration.namespace().unwrap_or_default(),
        name = %found.integration.name_any(),
        "smartrecruiters token issued"
    );
    let mut response = (
        StatusCode::OK,
        axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": secs})),
    )
        .into_response();
    no_store(response.headers_mut());
    response
}

/// `POST /webhooks/smartrecruiters/{provider}/callback`.
pub async fn callback(
    State(endpoints): State<PartnerEndpoints>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle_callback(&endpoints.inner, &provider, &headers, &body).await {
        Ok(response) => response,
        Err(refusal) => {
            warn!(provider = %provider, reason = refusal.as_str(), "smartrecruiters callback refused");
            refusal.into_response()
        }
    }
}

async fn handle_callback(
    inner: &Inner,
    provider: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, CallbackRefusal> {
    let (cp, _) = served(inner, provider)
        .await
        .map_err(|_| CallbackRefusal::Unavailable)?
        .ok_or(CallbackRefusal::NotServed)?;
    let token = bearer(headers)
        .filter(|t| !t.is_empty())
        .ok_or(CallbackRefusal::NoToken)?;
    let now = jiff::Timestamp::now().as_second();
    // Form and expiry first: a malformed or expired token costs no lookup.
    let claims = claims(token, now).map_err(|_| CallbackRefusal::InvalidToken)?;
    let found = find_client(inner, &cp, &claims.client_id)
        .await
        .map_err(|_| CallbackRefusal::Unavailable)?
        .ok_or(CallbackRefusal::InvalidToken)?;
    let key = TokenKey::derive(&inner.token_root, provider, found.secret.expose_secret().as_bytes());
    verify(&key, &claims).map_err(|_| CallbackRefusal::InvalidToken)?;
    let event = parse_callback(body).ok_or(CallbackRefusal::Malformed)?;
    let name = found.integration.name_any();
    let namespace = found.integration.namespace().unwrap_or_default();
    match event {
        Callback::Other(kind) => {
            info!(provider = %provider, event = %kind, "smartrecruiters callback of another type acknowledged; nothing changed");
            Ok((StatusCode::ACCEPTED, axum::Json(json!({})).into_response()).into_response())
        }
        Callback::Disabled => {
            let Some(id) = found.integration_id.as_deref() else {
                // The credentials went out with a request whose answer was
                // never stored: there is no integration to mark.
                info!(provider = %provider, %namespace, %name, "smartrecruiters integration-disabled callback for an integration the operator never recorded; nothing changed");
                return Ok((StatusCode::OK, axum::Json(json!({}))).into_response());
            };
            record_disabled(inner, &found.integration, id, now).await?;
            info!(provider = %provider, %namespace, %name, integration_id = %id, "smartrecruiters integration-disabled callback recorded");
            Ok((StatusCode::OK, axum::Json(json!({}))).into_response())
        }
    }
}

/// Records the disable on the Integration for the leader: once per
/// integration id (a repeat, or a replay within the token's lifetime,
/// leaves the first record as it is).
async fn record_disabled(inner: &Inner, integration: &Integration, id: &str, now: i64) -> Result<(), CallbackRefusal> {
    let uid = integration.metadata.uid.clone().unwrap_or_default();
    let already = integration
        .annotations()
        .get(PROVIDER_DISABLED_ANNOTATION)
        .and_then(|v| parse_disabled(v))
        .is_some_and(|(recorded, at, att)| recorded == id && inner.fingerprinter.attested_disabled(&uid, id, at, att));
    if already {
        return Ok(());
    }
    let value = format!("{id} {now} {}", inner.fingerprinter.attest_disabled(&uid, id, now));
    let api: Api<Integration> = Api::namespaced(inner.client.clone(), &integration.namespace().unwrap_or_default());
    // Guarded by the uid: an Integration deleted and re-created under the
    // same name is not given another's report.
    let patch = json!({"metadata": {"uid": uid, "annotations": {PROVIDER_DISABLED_ANNOTATION: value}}});
    api.patch(&integration.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|_| CallbackRefusal::Unavailable)?;
    Ok(())
}

/// Query of the consent page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentQuery {
    company_id: Option<String>,
    redirect: Option<String>,
}

/// `GET /webhooks/smartrecruiters/{provider}/consent?companyId=…[&redirect=…]`.
pub async fn consent(
    State(endpoints): State<PartnerEndpoints>,
    Path(provider): Path<String>,
    query: Result<Query<ConsentQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match served(&endpoints.inner, &provider).await {
        Ok(Some(_)) => {}
        Ok(None) => return page(StatusCode::NOT_FOUND, "<!doctype html>\n<p>Not found.</p>\n".into()),
        Err(_) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "<!doctype html>\n<p>Try again later.</p>\n".into(),
            );
        }
    }
    let Ok(Query(query)) = query else {
        return page(
            StatusCode::BAD_REQUEST,
            "<!doctype html>\n<p>This page expects a SmartRecruiters companyId.</p>\n".into(),
        );
    };
    let Some(company_id) = query.company_id.filter(|c| valid_company_id(c)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "<!doctype html>\n<p>This page expects a SmartRecruiters companyId.</p>\n".into(),
        );
    };
    let redirect = query.redirect.as_deref().and_then(safe_redirect);
    // The request, for the admin who approves it (validated characters).
    info!(provider = %provider, company_id = %company_id, "smartrecruiters consent requested; an Integration with this companyId approves it");
    page(StatusCode::OK, consent_page(&company_id, redirect.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    fn key(secret: &str) -> TokenKey {
        TokenKey::derive(b"root", "sr", secret.as_bytes())
    }

    #[test]
    fn a_minted_token_verifies_only_under_its_key_and_until_it_expires() {
        let token = mint(&key("s1"), "io-client", NOW + 3600);
        assert!(token.starts_with("iosr1.") && token.len() < 200, "{token}");
        let c = claims(&token, NOW).unwrap();
        assert_eq!((c.client_id.as_str(), c.expires_at), ("io-client", NOW + 3600));
        assert_eq!(verify(&key("s1"), &c), Ok(()));
        // Another client secret, ClusterProvider or operator key: refused.
        assert_eq!(verify(&key("s2"), &c), Err(TokenError::BadMac));
        assert_eq!(
            verify(&TokenKey::derive(b"root", "other", b"s1"), &c),
            Err(TokenError::BadMac)
        );
        assert_eq!(
            verify(&TokenKey::derive(b"other-root", "sr", b"s1"), &c),
            Err(TokenError::BadMac)
        );
        assert_eq!(claims(&token, NOW + 3600), Err(TokenError::Expired));
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let k = key("s1");
        let token = mint(&k, "io-a", NOW + 60);
        let parts: Vec<&str> = token.split('.').collect();
        // Another client id or a later expiry with the old MAC.
        for payload in [
            "0:io-a",
            &format!("{}:io-b", NOW + 60),
            &format!("{}:io-a", NOW + 99_999),
        ] {
            let forged = format!("iosr1.{}.{}", URL_SAFE_NO_PAD.encode(payload), parts[2]);
            match claims(&forged, NOW) {
                Ok(c) => assert_eq!(verify(&k, &c), Err(TokenError::BadMac), "{payload}"),
                Err(e) => assert_eq!(e, TokenError::Expired, "{payload}"),
            }
        }
        // A flipped bit in the MAC.
        let mut tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        tag[0] ^= 1;
        let forged = format!("iosr1.{}.{}", parts[1], URL_SAFE_NO_PAD.encode(tag));
        assert_eq!(verify(&k, &claims(&forged, NOW).unwrap()), Err(TokenError::BadMac));
        for junk in [
            "",
            "iosr1",
            "iosr1..",
            "iosr2.a.b",
            &format!("{token}.x"),
            &format!("iosr1.{}.{}", URL_SAFE_NO_PAD.encode("nocolon"), parts[2]),
            &format!("iosr1.{}.{}", URL_SAFE_NO_PAD.encode(format!("{NOW}:")), parts[2]),
            &format!("iosr1.{}.{}", parts[1], URL_SAFE_NO_PAD.encode([0u8; 16])),
            &"x".repeat(MAX_TOKEN + 1),
        ] {
            assert_eq!(claims(junk, NOW), Err(TokenError::Malformed), "{junk}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn basic(id: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    }

    #[test]
    fn client_credentials_come_from_the_body_or_basic_never_both() {
        let body = b"grant_type=client_credentials&client_id=io-a&client_secret=s%2B1";
        let (id, secret) = client_credentials(None, FORM, body).unwrap();
        assert_eq!((id.as_str(), secret.expose_secret()), ("io-a", "s+1"));
        let (id, secret) = client_credentials(
            Some(&basic("io-a", "s%2B1")),
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"grant_type=client_credentials",
        )
        .unwrap();
        assert_eq!((id.as_str(), secret.expose_secret()), ("io-a", "s+1"));
        assert_eq!(
            client_credentials(Some(&basic("io-a", "s")), FORM, body).unwrap_err(),
            OAuthError::InvalidRequest("more than one client authentication method")
        );
    }

    #[test]
    fn token_requests_are_refused_in_rfc_6749_terms() {
        let refused = |auth: Option<&str>, ct: Option<&str>, body: &str| {
            client_credentials(auth, ct, body.as_bytes()).unwrap_err().as_str()
        };
        let ok = "client_id=io-a&client_secret=s";
        assert_eq!(
            refused(None, FORM, &format!("grant_type=password&{ok}")),
            "unsupported_grant_type"
        );
        assert_eq!(
            refused(None, FORM, &format!("grant_type=authorization_code&{ok}")),
            "unsupported_grant_type"
        );
        assert_eq!(refused(None, FORM, ok), "invalid_request");
        assert_eq!(
            refused(
                None,
                FORM,
                &format!("grant_type=client_credentials&grant_type=client_credentials&{ok}")
            ),
            "invalid_request"
        );
        assert_eq!(
            refused(
                None,
                Some("application/json"),
                &format!("grant_type=client_credentials&{ok}")
            ),
            "invalid_request"
        );
        assert_eq!(
            refused(None, None, &format!("grant_type=client_credentials&{ok}")),
            "invalid_request"
        );
        assert_eq!(refused(None, FORM, "grant_type=client_credentials"), "invalid_client");
        assert_eq!(
            refused(None, FORM, "grant_type=client_credentials&client_id=io-a"),
            "invalid_client"
        );
        assert_eq!(
            refused(
                None,
                FORM,
                "grant_type=client_credentials&client_id=io-a&client_secret="
            ),
            "invalid_client"
        );
        assert_eq!(
            refused(Some("Bearer x"), FORM, "grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            refused(Some("Basic !!!"), FORM, "grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            refused(Some(&basic("io a\u{7f}", "s")), FORM, "grant_type=client_credentials"),
            "invalid_client"
        );
    }

    #[test]
    fn callbacks_parse_as_the_seed_shows_them() {
        assert_eq!(
            parse_callback(br#"{"eventType": "INTEGRATION_DISABLED"}"#),
            Some(Callback::Disabled)
        );
        assert_eq!(
            parse_callback(br#"{"eventType": "INTEGRATION_DISABLED", "companyId": "ACME"}"#),
            Some(Callback::Disabled)
        );
        assert_eq!(
            parse_callback(br#"{"eventType": "INTEGRATION_PAUSED"}"#),
            Some(Callback::Other("INTEGRATION_PAUSED".into()))
        );
        assert_eq!(
            parse_callback(br#"{"eventType": "x\nlevel=error injected"}"#),
            Some(Callback::Other("unrecognised".into()))
        );
        for bad in [&b"not json"[..], b"{}", br#"{"eventType": 1}"#, b"[]", b""] {
            assert_eq!(parse_callback(bad), None);
        }
    }

    #[test]
    fn the_consent_page_never_redirects_off_smartrecruiters_and_escapes_what_it_shows() {
        assert!(safe_redirect("https://www.smartrecruiters.com/app-integrations/x?y=1").is_some());
        assert!(safe_redirect("https://smartrecruiters.com/").is_some());
        for bad in [
            "http://www.smartrecruiters.com/",
            "https://smartrecruiters.com.evil.example/",
            "https://evilsmartrecruiters.com/",
            "https://user@www.smartrecruiters.com/",
            "https://www.smartrecruiters.com:8443/",
            "javascript:alert(1)",
            "//www.smartrecruiters.com/",
            "https://evil.example/?https://www.smartrecruiters.com",
        ] {
            assert!(safe_redirect(bad).is_none(), "{bad}");
        }
        assert!(valid_company_id("ACME-1_2.x"));
        for bad in ["", "a b", "<script>", "a\"b", &"a".repeat(129)] {
            assert!(!valid_company_id(bad), "{bad}");
        }
        let url = safe_redirect("https://www.smartrecruiters.com/back?a=1&b=\"2\"").unwrap();
        let html = consent_page("ACME", Some(&url));
        assert!(html.contains("<code>ACME</code>"));
        assert!(
            html.contains("href=\"https://www.smartrecruiters.com/back?a=1&amp;b=%222%22\""),
            "{html}"
        );
        assert!(!consent_page("ACME", None).contains("href"));
    }
}
