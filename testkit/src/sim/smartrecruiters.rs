//! A SmartRecruiters simulator (shared/providers.md section 1), on
//! 127.0.0.1 with an ephemeral port:
//!
//! | route name | request | what it does |
//! | --- | --- | --- |
//! | `token` | `POST /identity/oauth/token` | client-credentials grant, form-encoded; client id/secret in the body (`client_secret_post`, the documented form [seed-4]) or in `Authorization: Basic` (`client_secret_basic`, per the changelog); both at once is a 400 |
//! | `integrations` | `POST /apps-integrations/partner-api/integrations` | General Partner Integration: master bearer token, JSON `appId`, `companyId`, optional `clientId`/`clientSecret`; answers 200 with customer-level `clientId`, `clientSecret`, `integrationId` (shown once) |
//! | `company` | `GET /configuration/company/my` | the cheap validation call (providers.md 1.10): accepts `X-SmartToken: <api key>` or a customer-level bearer token |
//! | `jobs` | `GET /jobs` | a protected data route, used the way an application would use the credentials |
//!
//! SmartRecruiters also calls the partner (seed 004): for an app registered
//! with [`SmartRecruitersSim::register_partner_app`] (its `oauthTokenUrl`
//! and `callbackUrl`), [`SmartRecruitersSim::disable_and_notify`] disables
//! an integration as the customer would and then, if the integration was
//! created with partner-side credentials (bi-directional), obtains a bearer
//! token from the partner's `oauthTokenUrl` with them (client-credentials
//! grant, form body, as SmartRecruiters documents its own endpoint) and
//! POSTs `{"eventType": "INTEGRATION_DISABLED"}` to `callbackUrl` with it.
//! No `oauthTokenUrl`, no callback (seed 004). The control route
//! `POST /_sim/integrations/{id}/disable` does the same over HTTP.
//!
//! Every route takes faults from the shared [`Faults`] under its route name
//! and counts its requests (failed ones included). The token route also
//! takes faults for one kind of client only: `token/master` (partner master
//! credentials), `token/integration` (customer-level credentials of a
//! partner integration) and `token/customer` (customer-made OAuth clients).
//!
//! Assumptions where providers.md says UNKNOWN (the safe choice each time;
//! the same list is in docs/providers/smartrecruiters.md):
//! - Token answers are RFC 6749 section 5.1 (`access_token`, `token_type`
//!   lowercase `bearer`, `expires_in`); token errors are section 5.2
//!   (`{"error","error_description"}`, 401 `invalid_client` for bad client
//!   credentials).
//! - Other routes answer errors as `{"code": ..., "message": ...}`: 401 for a
//!   refused key or token, 403 (`OAuthPermissionsException`) for a token that
//!   lacks the permission (a master token on a data route, a customer token
//!   on the partner API).
//! - A second POST for an appId+companyId that already has an enabled
//!   integration is refused with 409 (`INTEGRATION_ALREADY_EXISTS`), and a
//!   partner `clientId` already used by another of the partner's integrations
//!   with 409 (`DUPLICATE_CLIENT_ID`): the POST is never idempotent. A
//!   disabled integration (the customer switched it off) does not block a
//!   new POST.
//! - No GET, list or DELETE of a partner integration exists on the partner
//!   side (none is documented); [`SmartRecruitersSim::integrations`] and
//!   [`SmartRecruitersSim::disable_integration`] are control methods, not routes.
//! - 429 may come with or without `Retry-After` (inject either with
//!   [`Fault::Status`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
    routing::{get, post},
};
use base64::Engine;
use rand::RngCore;
use serde_json::{Value, json};

use super::faults::{self, Fault, Faults, json_response};

/// Route names for [`SmartRecruitersSim::fail_next`] and the counters.
pub const ROUTES: [&str; 4] = ["token", "integrations", "company", "jobs"];

/// Who a client (and the tokens issued to it) belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Partner-level master credentials, allowed to create integrations for these app ids.
    Master { app_ids: Vec<String> },
    /// Customer-level credentials of a partner integration.
    Integration { integration_id: String, company_id: String },
    /// An OAuth client a company admin made in the Credential Manager.
    Customer { company_id: String },
}

/// How a client authenticated at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id`/`client_secret` in the form body.
    Body,
    /// `Authorization: Basic`.
    Basic,
}

/// A partner integration, as SmartRecruiters holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerIntegration {
    pub integration_id: String,
    pub app_id: String,
    pub company_id: String,
    /// Master client that created it.
    pub created_by: String,
    /// Customer-level credentials SmartRecruiters issued.
    pub client_id: String,
    pub client_secret: String,
    /// Partner-side credentials sent with the creation request (bi-directional).
    pub partner_client_id: Option<String>,
    pub partner_client_secret: Option<String>,
    /// False once the customer (or SmartRecruiters) disabled it.
    pub enabled: bool,
}

#[derive(Clone)]
struct Client {
    secret: String,
    kind: ClientKind,
    revoked: bool,
}

#[derive(Clone)]
struct TokenInfo {
    client_id: String,
    kind: ClientKind,
    expires: Instant,
}

#[derive(Default)]
struct State_ {
    clients: HashMap<String, Client>,
    /// API key -> company id.
    api_keys: HashMap<String, String>,
    tokens: HashMap<String, TokenInfo>,
    issued_tokens: Vec<String>,
    integrations: Vec<PartnerIntegration>,
    /// Seconds; `None` omits `expires_in`.
    lifetime: Option<u64>,
    calls: BTreeMap<String, u64>,
    call_times: BTreeMap<String, Vec<Instant>>,
    token_calls_by_client: BTreeMap<String, u64>,
    token_call_times_by_client: BTreeMap<String, Vec<Instant>>,
    client_auth_seen: Vec<(String, ClientAuth)>,
    /// Every integrations POST body, in order.
    posts: Vec<Value>,
    /// What partners registered per app id (seed 004: `oauthTokenUrl`, `callbackUrl`).
    partner_apps: HashMap<String, PartnerApp>,
}

/// What a partner registered with SmartRecruiters' Partner & API Team for one app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartnerApp {
    pub oauth_token_url: Option<String>,
    pub callback_url: Option<String>,
}

/// What [`SmartRecruitersSim::disable_and_notify`] did at the partner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notified {
    /// HTTP status of the partner's `oauthTokenUrl` (`None`: not called).
    pub token_status: Option<u16>,
    /// The bearer token it issued, if any.
    pub token: Option<String>,
    /// HTTP status of the partner's `callbackUrl` (`None`: not called).
    pub callback_status: Option<u16>,
}

struct Inner {
    state: Mutex<State_>,
    faults: Faults,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, route: &str) {
        let mut s = self.lock();
        *s.calls.entry(route.to_string()).or_insert(0) += 1;
        s.call_times.entry(route.to_string()).or_default().push(Instant::now());
    }
}

/// A running SmartRecruiters simulator. Dropping it stops the server.
pub struct SmartRecruitersSim {
    inner: Arc<Inner>,
    server: super::Served,
}

impl SmartRecruitersSim {
    /// Starts the simulator; tokens live 1800 s (the 30 minutes documented
    /// for SmartRecruiters access tokens) until [`Self::set_token_lifetime`].
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State_ {
                lifetime: Some(1800),
                ..State_::default()
            }),
            faults: Faults::default(),
        });
        let app = Router::new()
            .route("/identity/oauth/token", post(token))
            .route("/apps-integrations/partner-api/integrations", post(create_integration))
            .route("/configuration/company/my", get(company))
            .route("/jobs", get(jobs))
            .route("/_sim/integrations/{id}/disable", post(control_disable))
            .with_state(inner.clone());
        let server = super::Served::start(app).await?;
        Ok(Self { inner, server })
    }

    /// Base URL, with a trailing slash (what a ClusterProvider's `baseUrl` holds).
    pub fn url(&self) -> String {
        self.server.url("/")
    }

    pub fn token_url(&self) -> String {
        self.server.url("/identity/oauth/token")
    }

    /// Registers a customer API key of `company_id` (made in the Credential Manager).
    pub fn add_api_key(&self, key: &str, company_id: &str) {
        self.inner.lock().api_keys.insert(key.into(), company_id.into());
    }

    /// The company admin revokes the key.
    pub fn revoke_api_key(&self, key: &str) {
        self.inner.lock().api_keys.remove(key);
    }

    /// Registers (or replaces) a customer-made OAuth client of `company_id`.
    pub fn add_client(&self, id: &str, secret: &str, company_id: &str) {
        self.insert_client(
            id,
            secret,
            ClientKind::Customer {
                company_id: company_id.into(),
            },
        );
    }

    /// Registers (or replaces) partner master credentials for these app ids.
    pub fn add_master_client(&self, id: &str, secret: &str, app_ids: &[&str]) {
        self.insert_client(
            id,
            secret,
            ClientKind::Master {
                app_ids: app_ids.iter().map(|a| a.to_string()).collect(),
            },
        );
    }

    fn insert_client(&self, id: &str, secret: &str, kind: ClientKind) {
        self.inner.lock().clients.insert(
            id.into(),
            Client {
                secret: secret.into(),
                kind,
                revoked: false,
            },
        );
    }

    /// Revokes a client: its credentials and every token issued to it stop working.
    pub fn revoke_client(&self, id: &str) {
        let mut s = self.inner.lock();
        if let Some(c) = s.clients.get_mut(id) {
            c.revoked = true;
        }
        s.tokens.retain(|_, t| t.client_id != id);
    }

    /// The customer disables a partner integration: its customer-level
    /// credentials and tokens stop working, and a new POST for the same
    /// appId+companyId is accepted again.
    pub fn disable_integration(&self, integration_id: &str) {
        disable(&self.inner, integration_id);
    }

    /// Registers what the partner gave SmartRecruiters for `app_id`: its
    /// `oauthTokenUrl` and `callbackUrl` (seed 004, step 1).
    pub fn register_partner_app(&self, app_id: &str, oauth_token_url: Option<&str>, callback_url: Option<&str>) {
        self.inner.lock().partner_apps.insert(
            app_id.into(),
            PartnerApp {
                oauth_token_url: oauth_token_url.map(String::from),
                callback_url: callback_url.map(String::from),
            },
        );
    }

    /// The customer disables the integration ([`Self::disable_integration`])
    /// and SmartRecruiters tells the partner: a token from the partner's
    /// `oauthTokenUrl` with the partner-side credentials sent at creation,
    /// then `{"eventType": "INTEGRATION_DISABLED"}` to its `callbackUrl`.
    pub async fn disable_and_notify(&self, integration_id: &str) -> anyhow::Result<Notified> {
        notify_disabled(&self.inner, integration_id).await
    }

    /// Lifetime of new tokens in seconds; `None` omits `expires_in`.
    pub fn set_token_lifetime(&self, secs: Option<u64>) {
        self.inner.lock().lifetime = secs;
    }

    /// Every partner integration created so far (enabled or not).
    pub fn integrations(&self) -> Vec<PartnerIntegration> {
        self.inner.lock().integrations.clone()
    }

    /// Enabled partner integrations.
    pub fn enabled_integrations(&self) -> usize {
        self.inner.lock().integrations.iter().filter(|i| i.enabled).count()
    }

    /// Every body POSTed to the partner-integrations route (accepted or not).
    pub fn integration_posts(&self) -> Vec<Value> {
        self.inner.lock().posts.clone()
    }

    /// Requests to `route` so far, failed ones included.
    pub fn calls(&self, route: &str) -> u64 {
        self.inner.lock().calls.get(route).copied().unwrap_or(0)
    }

    /// When each request to `route` arrived, oldest first.
    pub fn call_times(&self, route: &str) -> Vec<Instant> {
        self.inner.lock().call_times.get(route).cloned().unwrap_or_default()
    }

    /// Requests to every route so far.
    pub fn total_calls(&self) -> u64 {
        self.inner.lock().calls.values().sum()
    }

    /// Token requests that authenticated as `client_id` (successful or refused
    /// for a wrong secret; not those answered by an injected fault).
    pub fn token_calls_for(&self, client_id: &str) -> u64 {
        self.inner
            .lock()
            .token_calls_by_client
            .get(client_id)
            .copied()
            .unwrap_or(0)
    }

    /// When each such token request arrived.
    pub fn token_call_times_for(&self, client_id: &str) -> Vec<Instant> {
        self.inner
            .lock()
            .token_call_times_by_client
            .get(client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// (client id, method) of every token request that carried client credentials.
    pub fn client_auth_seen(&self) -> Vec<(String, ClientAuth)> {
        self.inner.lock().client_auth_seen.clone()
    }

    /// Whether `token` was issued here, has not expired and was not revoked.
    pub fn is_valid_token(&self, token: &str) -> bool {
        self.token_info(token).is_some()
    }

    /// The client a live token was issued to.
    pub fn token_client(&self, token: &str) -> Option<String> {
        self.token_info(token).map(|t| t.client_id)
    }

    fn token_info(&self, token: &str) -> Option<TokenInfo> {
        self.inner
            .lock()
            .tokens
            .get(token)
            .filter(|t| t.expires > Instant::now())
            .cloned()
    }

    /// Whether `key` is a live API key.
    pub fn is_valid_api_key(&self, key: &str) -> bool {
        self.inner.lock().api_keys.contains_key(key)
    }

    /// Every access token issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.lock().issued_tokens.clone()
    }

    /// Injects `fault` into the next `count` requests to `route` (see [`ROUTES`]).
    pub fn fail_next(&self, route: &str, count: usize, fault: Fault) {
        self.inner.faults.fail_next(route, count, fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }
}

/// Disables the integration; returns it as it was, if it exists.
fn disable(inner: &Inner, integration_id: &str) -> Option<PartnerIntegration> {
    let mut s = inner.lock();
    let i = s.integrations.iter_mut().find(|i| i.integration_id == integration_id)?;
    i.enabled = false;
    let found = i.clone();
    if let Some(c) = s.clients.get_mut(&found.client_id) {
        c.revoked = true;
    }
    s.tokens.retain(|_, t| t.client_id != found.client_id);
    Some(found)
}

async fn notify_disabled(inner: &Inner, integration_id: &str) -> anyhow::Result<Notified> {
    let integration =
        disable(inner, integration_id).ok_or_else(|| anyhow::anyhow!("no integration {integration_id}"))?;
    let app = inner
        .lock()
        .partner_apps
        .get(&integration.app_id)
        .cloned()
        .unwrap_or_default();
    let mut notified = Notified::default();
    // Seed 004: no oauthTokenUrl, no callback; and nothing to sign it with
    // unless the partner sent credentials with the integration.
    let (Some(token_url), Some(callback_url), Some(id), Some(secret)) = (
        app.oauth_token_url,
        app.callback_url,
        integration.partner_client_id,
        integration.partner_client_secret,
    ) else {
        return Ok(notified);
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let answer = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await?;
    notified.token_status = Some(answer.status().as_u16());
    if !answer.status().is_success() {
        return Ok(notified);
    }
    let body: Value = answer.json().await?;
    let Some(token) = body.get("access_token").and_then(Value::as_str).map(String::from) else {
        return Ok(notified);
    };
    notified.token = Some(token.clone());
    let answer = http
        .post(&callback_url)
        .bearer_auth(&token)
        .json(&json!({"eventType": "INTEGRATION_DISABLED"}))
        .send()
        .await?;
    notified.callback_status = Some(answer.status().as_u16());
    Ok(notified)
}

/// `POST /_sim/integrations/{id}/disable`: the control route of
/// [`SmartRecruitersSim::disable_and_notify`] (for a demo or another process).
async fn control_disable(
    State(inner): State<Arc<Inner>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match notify_disabled(&inner, &id).await {
        Ok(n) => json_response(
            StatusCode::OK,
            json!({"tokenStatus": n.token_status, "callbackStatus": n.callback_status}).to_string(),
        ),
        Err(e) => json_response(StatusCode::NOT_FOUND, json!({"message": e.to_string()}).to_string()),
    }
}

fn random_hex(n: usize) -> String {
    let mut raw = vec![0u8; n];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// RFC 6749 section 5.2 error of the token endpoint.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = json_response(
        status,
        json!({"error": error, "error_description": description}).to_string(),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"SmartRecruiters\""),
        );
    }
    r
}

fn default_oauth_error(code: u16) -> String {
    let error = match code {
        401 => "invalid_client",
        403 => "unauthorized_client",
        429 => "too_many_requests",
        c if c >= 500 => "server_error",
        _ => "invalid_request",
    };
    json!({"error": error, "error_description": format!("simulated {code}")}).to_string()
}

/// SmartRecruiters-style error of the other routes.
fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}).to_string())
}

fn default_api_error(code: u16) -> String {
    let (c, m) = match code {
        401 => ("UNAUTHORIZED", "Unauthorized"),
        403 => ("OAuthPermissionsException", "Missing permission for this operation"),
        409 => ("CONFLICT", "Conflict"),
        429 => ("TOO_MANY_REQUESTS", "Rate limit exceeded"),
        c if c >= 500 => ("INTERNAL_ERROR", "Internal error"),
        _ => ("BAD_REQUEST", "Bad request"),
    };
    json!({"code": c, "message": m}).to_string()
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    inner.count("token");
    let sample = || json!({"access_token": "x".repeat(36), "token_type": "bearer", "expires_in": 1800}).to_string();
    if let Some(r) = faults::apply(inner.faults.take("token"), default_oauth_error, sample).await {
        return r;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported here",
        );
    }
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(i, p)| (form_decode(i), form_decode(p))));
    let body_auth = form.get("client_id").cloned().zip(form.get("client_secret").cloned());
    let ((id, secret), method) = match (basic, body_auth) {
        (Some(_), Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
            );
        }
        (Some(b), None) => (b, ClientAuth::Basic),
        (None, Some(p)) => (p, ClientAuth::Body),
        (None, None) => {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "no client authentication");
        }
    };
    let (client, fault) = {
        let mut s = inner.lock();
        s.client_auth_seen.push((id.clone(), method));
        *s.token_calls_by_client.entry(id.clone()).or_insert(0) += 1;
        s.token_call_times_by_client
            .entry(id.clone())
            .or_default()
            .push(Instant::now());
        let client = s.clients.get(&id).cloned();
        // Faults for one kind of client only: "token/master",
        // "token/integration" (customer-level GPI credentials), "token/customer".
        let kind_route = match client.as_ref().map(|c| &c.kind) {
            Some(ClientKind::Master { .. }) => Some("token/master"),
            Some(ClientKind::Integration { .. }) => Some("token/integration"),
            Some(ClientKind::Customer { .. }) => Some("token/customer"),
            None => None,
        };
        (client, kind_route.and_then(|r| inner.faults.take(r)))
    };
    if let Some(r) = faults::apply(fault, default_oauth_error, sample).await {
        return r;
    }
    let mut s = inner.lock();
    let Some(client) = client.filter(|c| !c.revoked && c.secret == secret) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    };
    let token = random_hex(18);
    let lifetime = s.lifetime;
    s.tokens.insert(
        token.clone(),
        TokenInfo {
            client_id: id,
            kind: client.kind,
            expires: Instant::now() + Duration::from_secs(lifetime.unwrap_or(1800)),
        },
    );
    s.issued_tokens.push(token.clone());
    let mut answer = json!({"access_token": token, "token_type": "bearer"});
    if let Some(l) = lifetime {
        answer["expires_in"] = json!(l);
    }
    let mut r = json_response(StatusCode::OK, answer.to_string());
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r.headers_mut().insert("pragma", HeaderValue::from_static("no-cache"));
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn live_token(inner: &Inner, token: &str) -> Option<TokenInfo> {
    inner
        .lock()
        .tokens
        .get(token)
        .filter(|t| t.expires > Instant::now())
        .cloned()
}

async fn create_integration(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    inner.count("integrations");
    let sample =
        || json!({"clientId": "x".repeat(20), "clientSecret": "y".repeat(40), "integrationId": uuid()}).to_string();
    if let Some(r) = faults::apply(inner.faults.take("integrations"), default_api_error, sample).await {
        return r;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    inner.lock().posts.push(body.clone());
    let Some(master) = bearer(&headers).and_then(|t| live_token(&inner, t)) else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Invalid or expired access token",
        );
    };
    let ClientKind::Master { app_ids } = &master.kind else {
        return api_error(
            StatusCode::FORBIDDEN,
            "OAuthPermissionsException",
            "Only partner master credentials may create integrations",
        );
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(app_id), Some(company_id)) = (text("appId"), text("companyId")) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "appId and companyId are required",
        );
    };
    if !app_ids.contains(&app_id) {
        return api_error(
            StatusCode::FORBIDDEN,
            "OAuthPermissionsException",
            "The application does not belong to these credentials",
        );
    }
    let (partner_id, partner_secret) = (text("clientId"), text("clientSecret"));
    if partner_id.is_some() != partner_secret.is_some() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "clientId and clientSecret go together",
        );
    }
    let mut s = inner.lock();
    if s.integrations
        .iter()
        .any(|i| i.enabled && i.app_id == app_id && i.company_id == company_id)
    {
        return api_error(
            StatusCode::CONFLICT,
            "INTEGRATION_ALREADY_EXISTS",
            "An integration for this application and company already exists",
        );
    }
    if let Some(pid) = &partner_id
        && s.integrations
            .iter()
            .any(|i| i.created_by == master.client_id && i.partner_client_id.as_ref() == Some(pid))
    {
        return api_error(
            StatusCode::CONFLICT,
            "DUPLICATE_CLIENT_ID",
            "clientId must be unique among the partner's integrations",
        );
    }
    let integration = PartnerIntegration {
        integration_id: uuid(),
        app_id,
        company_id: company_id.clone(),
        created_by: master.client_id.clone(),
        client_id: format!("gpi-{}", random_hex(10)),
        client_secret: random_hex(24),
        partner_client_id: partner_id,
        partner_client_secret: partner_secret,
        enabled: true,
    };
    s.clients.insert(
        integration.client_id.clone(),
        Client {
            secret: integration.client_secret.clone(),
            kind: ClientKind::Integration {
                integration_id: integration.integration_id.clone(),
                company_id,
            },
            revoked: false,
        },
    );
    s.integrations.push(integration.clone());
    json_response(
        StatusCode::OK,
        json!({
            "clientId": integration.client_id,
            "clientSecret": integration.client_secret,
            "integrationId": integration.integration_id,
        })
        .to_string(),
    )
}

/// A refusal: status, error code and message.
type Refusal = (StatusCode, &'static str, &'static str);

/// The company a request may read: by API key or by a customer-level token.
fn company_of(inner: &Inner, headers: &HeaderMap) -> Result<String, Refusal> {
    if let Some(key) = headers.get("x-smarttoken").and_then(|v| v.to_str().ok()) {
        return inner.lock().api_keys.get(key).cloned().ok_or((
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Invalid API key",
        ));
    }
    let Some(info) = bearer(headers).and_then(|t| live_token(inner, t)) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Missing, invalid or expired credentials",
        ));
    };
    match info.kind {
        ClientKind::Integration { company_id, .. } | ClientKind::Customer { company_id } => Ok(company_id),
        // Master tokens carry no data scopes (providers.md 1.10).
        ClientKind::Master { .. } => Err((
            StatusCode::FORBIDDEN,
            "OAuthPermissionsException",
            "Master credentials cannot read company data",
        )),
    }
}

async fn company(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    inner.count("company");
    let sample = || json!({"id": "ACME", "name": "Acme"}).to_string();
    if let Some(r) = faults::apply(inner.faults.take("company"), default_api_error, sample).await {
        return r;
    }
    match company_of(&inner, &headers) {
        Ok(id) => json_response(
            StatusCode::OK,
            json!({"id": id, "name": format!("{id} Inc.")}).to_string(),
        ),
        Err((status, code, message)) => api_error(status, code, message),
    }
}

async fn jobs(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    inner.count("jobs");
    let sample = || json!({"totalFound": 0, "content": []}).to_string();
    if let Some(r) = faults::apply(inner.faults.take("jobs"), default_api_error, sample).await {
        return r;
    }
    match company_of(&inner, &headers) {
        Ok(_) => json_response(
            StatusCode::OK,
            json!({"offset": 0, "limit": 10, "totalFound": 0, "content": []}).to_string(),
        ),
        Err((status, code, message)) => api_error(status, code, message),
    }
}
