//! A Kombo API simulator (shared/providers.md section 4), served under `/v1`
//! like `https://api.kombo.dev/v1`:
//!
//! | route name (counters, faults) | request |
//! | --- | --- |
//! | `check-api-key` | `GET /v1/check-api-key` |
//! | `create-link` | `POST /v1/connect/create-link` |
//! | `integration-by-token` | `GET /v1/connect/integration-by-token/{token}` |
//! | `get-integration` | `GET /v1/integrations/{id}` |
//! | `delete-integration` | `DELETE /v1/integrations/{id}` (body `{}`) |
//! | `data` | `GET /v1/ats/jobs`, needs `X-Integration-Id` (what an application does) |
//!
//! Every call needs `Authorization: Bearer <API key>` of a key added with
//! [`KomboSim::add_api_key`]; answers use Kombo's envelopes
//! (`{"status":"success","data":…}` and
//! `{"status":"error","error":{"code","title","message","log_url"}}`).
//!
//! A test plays the customer: [`KomboSim::complete_link`] finishes a connect
//! link (an integration is created), [`KomboSim::set_integration_state`]
//! changes its `status` / `setup_status`, [`KomboSim::expire_link`] lets a
//! link lapse, [`KomboSim::revoke_api_key`] removes a key. With
//! [`KomboSim::set_auto_complete`] every new link is completed at once, for
//! suites that need a connection without a person.
//!
//! [`KomboSim::requests`] returns every request as received (method, path,
//! JSON body), so a test can check them against Kombo's own models (the
//! official SDK, tests/kombo_sdk). Answers follow the SDK's response models
//! (PyPI `kombo` 1.4.0): `GET /integrations/{id}` returns `tool` as an object
//! and every field the model requires.
//!
//! Like Kombo, `integration-by-token` resolves only the short-lived
//! activation token the Kombo Connect front-end SDK returns to the page that
//! opened the link ([`KomboSim::complete_link`] makes one, read it with
//! [`KomboSim::activation_token`]); the link's `token` query parameter is not
//! one and answers 404 `PLATFORM.INTEGRATION_NOT_FOUND`.
//!
//! Webhooks: with [`KomboSim::set_webhook`] (the URL and secret registered
//! on Kombo's dashboard) the simulator delivers events as Kombo does
//! (providers.md 4.3): a JSON envelope `{"id","type","data"}` whose `data`
//! follows the official SDK's webhook models (`IntegrationCreatedWebhookPayload`
//! and the others; tests/kombo_sdk checks them), POSTed with
//! `X-Kombo-Signature`, the HMAC-SHA256 of the raw body under the secret,
//! base64url without padding (computed here independently of the operator).
//! [`KomboSim::integration_created_event`] and the other builders make the
//! payloads; [`KomboSim::deliver`] signs and sends one;
//! [`KomboSim::delivered`] lists what was sent.
//!
//! Assumptions where providers.md says UNKNOWN or is silent (also listed in
//! docs/providers/kombo.md):
//! - Activation tokens do not expire in the simulator.
//! - A path Kombo does not have answers a bare 404 with no body (axum's
//!   fallback), standing in for a wrong `baseUrl`.
//! - No rate limit is built in; 429s (with or without `Retry-After`) come
//!   only from injected faults.
//! - Data calls on an `INACTIVE` or `INVALID` integration answer 409 with
//!   `INTEGRATION.INACTIVE` / `INTEGRATION.AUTHENTICATION_INVALID` (codes from
//!   Kombo's SDK; the HTTP status is a guess, like the 409 Kombo documents for
//!   `INTEGRATION.SETUP_*`).
//! - API keys never expire.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
};
use rand::Rng;
use serde_json::{Value, json};

use super::faults::{self, Fault, Faults, json_response};

/// Route names, for [`KomboSim::calls`] and [`KomboSim::fail_next`].
pub mod routes {
    pub const CHECK_API_KEY: &str = "check-api-key";
    pub const CREATE_LINK: &str = "create-link";
    pub const INTEGRATION_BY_TOKEN: &str = "integration-by-token";
    pub const GET_INTEGRATION: &str = "get-integration";
    pub const DELETE_INTEGRATION: &str = "delete-integration";
    pub const DATA: &str = "data";
    /// Every route.
    pub const ALL: [&str; 6] = [
        CHECK_API_KEY,
        CREATE_LINK,
        INTEGRATION_BY_TOKEN,
        GET_INTEGRATION,
        DELETE_INTEGRATION,
        DATA,
    ];
}

/// A connect link as the simulator knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// The URL handed to the customer.
    pub url: String,
    /// Its `token` query parameter.
    pub token: String,
    /// The `create-link` request body as received.
    pub request: Value,
    pub expired: bool,
    /// The integration the customer created with it, once completed.
    pub integration_id: Option<String>,
    /// The activation token Kombo Connect handed to the page that opened
    /// the link when the customer finished (what `integration-by-token` takes).
    pub activation_token: Option<String>,
}

/// A request as the simulator received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Route name (see [`routes`]).
    pub route: &'static str,
    pub method: String,
    /// Path below `/v1`, e.g. `/connect/create-link`.
    pub path: String,
    /// The JSON body (`Value::Null` when there was none or it was not JSON).
    pub body: Value,
}

/// An integration as the simulator knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Integration {
    pub id: String,
    pub tool: String,
    /// `ACTIVE`, `INVALID` or `INACTIVE`.
    pub status: String,
    /// `INCOMPLETE`, `FINAL_SYNC_PENDING` or `COMPLETED`.
    pub setup_status: String,
    /// The link's `end_user_origin_id`.
    pub origin_id: Option<String>,
    /// The link's `end_user_organization_name` and `end_user_email`.
    pub organization_name: String,
    pub creator_email: Option<String>,
}

#[derive(Default)]
struct World {
    api_keys: HashSet<String>,
    /// By token, in creation order of tokens kept separately.
    links: HashMap<String, Link>,
    link_order: Vec<String>,
    integrations: BTreeMap<String, Integration>,
    /// Activation token -> link token.
    activations: HashMap<String, String>,
    deleted: Vec<String>,
    auto_complete: Option<String>,
    /// The webhook URL and secret registered on Kombo's dashboard.
    webhook: Option<(String, String)>,
    /// Every event delivered, with the HTTP status the receiver answered.
    delivered: Vec<(Value, u16)>,
}

#[derive(Default)]
struct Inner {
    world: Mutex<World>,
    requests: Mutex<Vec<Request>>,
    calls: super::calls::CallLog,
    faults: Faults,
}

impl Inner {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, route: &'static str) {
        self.calls.record(route);
    }

    fn record(&self, route: &'static str, method: &str, path: String, body: &str) {
        let body = serde_json::from_str(body).unwrap_or(Value::Null);
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).push(Request {
            route,
            method: method.to_string(),
            path,
            body,
        });
    }

    /// Counts the call and applies an injected fault, if any.
    async fn enter(&self, route: &'static str, good: impl Fn() -> String) -> Option<Response> {
        self.count(route);
        faults::apply(self.faults.take(route), default_error, good).await
    }

    /// The 401 answer, unless the request carries a known API key.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if self.world().api_keys.contains(key) {
            None
        } else {
            Some(error(
                StatusCode::UNAUTHORIZED,
                "PLATFORM.AUTHENTICATION_INVALID",
                "The provided API key is invalid.",
            ))
        }
    }
}

/// A running Kombo simulator.
pub struct KomboSim {
    inner: Arc<Inner>,
    server: super::Served,
}

impl KomboSim {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/check-api-key", get(check_api_key))
            .route("/v1/connect/create-link", post(create_link))
            .route("/v1/connect/integration-by-token/{token}", get(integration_by_token))
            .route("/v1/integrations/{id}", get(get_integration).delete(delete_integration))
            .route("/v1/ats/jobs", get(data))
            .with_state(inner.clone());
        let server = super::Served::start(app).await?;
        Ok(Self { inner, server })
    }

    /// The API base URL, as a ClusterProvider's `baseUrl` (`http://127.0.0.1:port/v1`).
    pub fn base_url(&self) -> String {
        self.server.url("/v1")
    }

    /// Accepts `key` as an API key from now on.
    pub fn add_api_key(&self, key: &str) {
        self.inner.world().api_keys.insert(key.to_string());
    }

    /// Stops accepting `key` (revoked on Kombo's Secrets page).
    pub fn revoke_api_key(&self, key: &str) {
        self.inner.world().api_keys.remove(key);
    }

    /// With `Some(tool)`, every link created from now on is completed at once
    /// with that tool (an `ACTIVE`, `COMPLETED` integration).
    pub fn set_auto_complete(&self, tool: Option<&str>) {
        self.inner.world().auto_complete = tool.map(str::to_string);
    }

    /// Registers the webhook URL and signing secret (Kombo dashboard, Webhooks).
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.inner.world().webhook = Some((url.to_string(), secret.to_string()));
    }

    /// The `integration-created` event Kombo sends when the customer
    /// finishes a connect link (`IntegrationCreatedWebhookPayload`).
    pub fn integration_created_event(&self, id: &str) -> Option<Value> {
        let world = self.inner.world();
        let i = world.integrations.get(id)?;
        Some(json!({
            "id": event_id(),
            "type": "integration-created",
            "data": {
                "id": i.id,
                "tool": i.tool,
                "category": category_of(&world, id),
                "end_user": end_user(i),
            },
        }))
    }

    /// The `integration-deleted` event (`IntegrationDeletedWebhookPayload`)
    /// for an integration deleted in the dashboard (or about to be).
    pub fn integration_deleted_event(&self, id: &str, tool: &str, origin_id: Option<&str>) -> Value {
        json!({
            "id": event_id(),
            "type": "integration-deleted",
            "data": {
                "id": id,
                "tool": tool,
                "category": "ATS",
                "end_user": {"organization_name": "ACME Inc.", "creator_email": null, "origin_id": origin_id},
                "deleted_at": now_rfc3339(),
            },
        })
    }

    /// The `integration-state-changed` event
    /// (`IntegrationStateChangedWebhookPayload`) for the integration's current state.
    pub fn integration_state_changed_event(&self, id: &str) -> Option<Value> {
        let world = self.inner.world();
        let i = world.integrations.get(id)?;
        Some(json!({
            "id": event_id(),
            "type": "integration-state-changed",
            "data": {
                "integration_tool": i.tool,
                "integration_id": i.id,
                "integration_category": category_of(&world, id),
                "end_user": end_user(i),
                "qa_status": "PASSED",
                "setup_status": i.setup_status,
                "state": i.status,
                "updated_at": now_rfc3339(),
            },
        }))
    }

    /// Delivers `event` to the registered webhook as Kombo does: the body
    /// serialised once, signed, POSTed. Returns the receiver's HTTP status.
    pub async fn deliver(&self, event: &Value) -> anyhow::Result<u16> {
        let (url, secret) = self
            .inner
            .world()
            .webhook
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no webhook registered"))?;
        let (body, signature) = delivery(event, &secret);
        let status = deliver_raw(&url, body, Some(&signature)).await?;
        self.inner.world().delivered.push((event.clone(), status));
        Ok(status)
    }

    /// Every event delivered so far, with the answer's HTTP status.
    pub fn delivered(&self) -> Vec<(Value, u16)> {
        self.inner.world().delivered.clone()
    }

    /// Every link created so far, oldest first.
    pub fn links(&self) -> Vec<Link> {
        let world = self.inner.world();
        world
            .link_order
            .iter()
            .filter_map(|t| world.links.get(t).cloned())
            .collect()
    }

    /// The customer completes the link with this URL (or token) in `tool`:
    /// Kombo creates an `ACTIVE` integration with setup `COMPLETED` and hands
    /// an activation token to the page that opened the link (see
    /// [`KomboSim::activation_token`]). Returns the integration's id; `None`
    /// for an unknown or expired link.
    pub fn complete_link(&self, link: &str, tool: &str) -> Option<String> {
        let mut world = self.inner.world();
        let token = token_of(link);
        complete(&mut world, &token, tool)
    }

    /// The activation token Kombo Connect returned when the link with this
    /// URL (or token) was completed.
    pub fn activation_token(&self, link: &str) -> Option<String> {
        let token = token_of(link);
        self.inner.world().links.get(&token)?.activation_token.clone()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The link with this URL (or token) expires.
    pub fn expire_link(&self, link: &str) {
        let token = token_of(link);
        if let Some(l) = self.inner.world().links.get_mut(&token) {
            l.expired = true;
        }
    }

    /// An integration connected earlier, outside the operator (a customer
    /// who used a link from the Kombo dashboard): `ACTIVE`, setup
    /// `COMPLETED`, with this id.
    pub fn add_integration(&self, id: &str, tool: &str) {
        self.inner.world().integrations.insert(
            id.to_string(),
            Integration {
                id: id.to_string(),
                tool: tool.to_string(),
                status: "ACTIVE".into(),
                setup_status: "COMPLETED".into(),
                origin_id: None,
                organization_name: "simulated".into(),
                creator_email: None,
            },
        );
    }

    /// Sets an integration's `status` (`ACTIVE`, `INVALID`, `INACTIVE`) and
    /// `setup_status` (`INCOMPLETE`, `FINAL_SYNC_PENDING`, `COMPLETED`).
    pub fn set_integration_state(&self, id: &str, status: &str, setup_status: &str) {
        if let Some(i) = self.inner.world().integrations.get_mut(id) {
            i.status = status.to_string();
            i.setup_status = setup_status.to_string();
        }
    }

    /// Someone deletes the integration in the Kombo dashboard.
    pub fn delete_in_dashboard(&self, id: &str) {
        let mut world = self.inner.world();
        if world.integrations.remove(id).is_some() {
            world.deleted.push(id.to_string());
        }
    }

    /// Integrations that exist, by id.
    pub fn integrations(&self) -> BTreeMap<String, Integration> {
        self.inner.world().integrations.clone()
    }

    /// Ids of integrations deleted (through the API or the dashboard), oldest first.
    pub fn deleted(&self) -> Vec<String> {
        self.inner.world().deleted.clone()
    }

    /// Whether a data call with this API key and `X-Integration-Id` succeeds
    /// right now (the same check as the `data` route, without a request).
    pub fn accepts(&self, api_key: &str, integration_id: &str) -> bool {
        let world = self.inner.world();
        world.api_keys.contains(api_key)
            && world
                .integrations
                .get(integration_id)
                .is_some_and(|i| i.status == "ACTIVE" && i.setup_status == "COMPLETED")
    }

    /// Requests to `route` so far (failed ones included).
    pub fn calls(&self, route: &str) -> u64 {
        self.call_times(route).len() as u64
    }

    /// Requests to every route so far.
    pub fn total_calls(&self) -> u64 {
        self.inner.calls.total(&routes::ALL)
    }

    /// When each request to `route` arrived, oldest first.
    pub fn call_times(&self, route: &str) -> Vec<Instant> {
        self.inner.calls.times(route)
    }

    /// Injects `fault` into the next `count` requests to `route` (see [`routes`]).
    pub fn fail_next(&self, route: &str, count: usize, fault: Fault) {
        self.inner.faults.fail_next(route, count, fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }
}

/// The token of a link given as URL or as token.
fn token_of(link: &str) -> String {
    url::Url::parse(link)
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()))
        .unwrap_or_else(|| link.to_string())
}

fn complete(world: &mut World, token: &str, tool: &str) -> Option<String> {
    let link = world.links.get_mut(token)?;
    if link.expired {
        return None;
    }
    if let Some(id) = &link.integration_id {
        return Some(id.clone());
    }
    // Kombo ids look like `<tool>:<random>` (personio:8d1hpPsbjxUkoCoa1veLZGe5).
    let id = format!("{tool}:{}", random(24));
    link.integration_id = Some(id.clone());
    let activation = random(40);
    link.activation_token = Some(activation.clone());
    let request = link.request.clone();
    world.activations.insert(activation, link.token.clone());
    world.integrations.insert(
        id.clone(),
        Integration {
            id: id.clone(),
            tool: tool.to_string(),
            status: "ACTIVE".into(),
            setup_status: "COMPLETED".into(),
            origin_id: request["end_user_origin_id"].as_str().map(str::to_string),
            organization_name: request["end_user_organization_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            creator_email: request["end_user_email"].as_str().map(str::to_string),
        },
    );
    Some(id)
}

/// Kombo's webhook signature: HMAC-SHA256 of the raw body under the
/// webhook secret, base64url without padding (providers.md 4.3).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The exact body and `X-Kombo-Signature` [`KomboSim::deliver`] sends for
/// `event` under `secret` (the body is serialised once and signed as sent).
pub fn delivery(event: &Value, secret: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let signature = sign(secret.as_bytes(), &body);
    (body, signature)
}

/// POSTs `body` to `url` with `signature` (if any) in `X-Kombo-Signature`,
/// as Kombo's webhook sender does; for hostile tests too. Returns the status.
pub async fn deliver_raw(url: &str, body: Vec<u8>, signature: Option<&str>) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
    let mut request = client.post(url).header("content-type", "application/json").body(body);
    if let Some(s) = signature {
        request = request.header("X-Kombo-Signature", s);
    }
    Ok(request.send().await?.status().as_u16())
}

fn event_id() -> String {
    format!("evt_{}", random(24))
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn end_user(i: &Integration) -> Value {
    json!({"organization_name": i.organization_name, "creator_email": i.creator_email, "origin_id": i.origin_id})
}

/// The category of the link an integration was created with (default `ATS`).
fn category_of(world: &World, id: &str) -> String {
    world
        .links
        .values()
        .find(|l| l.integration_id.as_deref() == Some(id))
        .and_then(|l| l.request["integration_category"].as_str().map(str::to_string))
        .unwrap_or_else(|| "ATS".into())
}

fn random(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Kombo's error envelope.
fn error_body(code: Option<&str>, message: &str) -> String {
    json!({
        "status": "error",
        "error": {"code": code, "title": null, "message": message, "log_url": null},
    })
    .to_string()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, error_body(Some(code), message))
}

/// The body of an injected status fault: the code Kombo uses for it.
fn default_error(status: u16) -> String {
    let code = match status {
        401 => Some("PLATFORM.AUTHENTICATION_INVALID"),
        403 => Some("PLATFORM.IP_NOT_WHITELISTED"),
        404 => Some("PLATFORM.INTEGRATION_NOT_FOUND"),
        409 => Some("INTEGRATION.SETUP_INCOMPLETE"),
        429 => Some("PLATFORM.RATE_LIMIT_EXCEEDED"),
        s if s >= 500 => Some("PLATFORM.UNKNOWN_ERROR"),
        _ => Some("PLATFORM.INPUT_INVALID"),
    };
    error_body(code, &format!("simulated {status}"))
}

fn success(data: Value) -> Response {
    json_response(StatusCode::OK, json!({"status": "success", "data": data}).to_string())
}

/// `GET /integrations/{id}`'s `data`, with every field the SDK's model
/// (`GetIntegrationsIntegrationIDPositiveResponseData`) requires.
fn integration_json(i: &Integration) -> Value {
    json!({
        "id": i.id,
        "tool": {
            "id": i.tool,
            "label": i.tool,
            "internal_label": null,
            "logo_url": format!("https://storage.googleapis.com/kombo-assets/integrations/{}/logo.svg", i.tool),
            "icon_url": format!("https://storage.googleapis.com/kombo-assets/integrations/{}/icon.svg", i.tool),
        },
        "category": "ATS",
        "status": i.status,
        "setup_status": i.setup_status,
        "end_user": {"organization_name": i.organization_name, "creator_email": i.creator_email, "origin_id": i.origin_id},
        "scope_config": {"id": "B1hu5NGyhdjSq5X3hxEz4bAN", "name": null},
        "data_expired_at": null,
        "created_at": "2026-01-01T00:00:00.000Z",
        "beta": false,
        "read_models": [],
        "write_actions": [],
    })
}

async fn check_api_key(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let sample = || json!({"status": "success", "data": {"environment_id": "env-sim"}}).to_string();
    inner.record(routes::CHECK_API_KEY, "GET", "/check-api-key".into(), "");
    if let Some(r) = inner.enter(routes::CHECK_API_KEY, sample).await {
        return r;
    }
    if let Some(r) = inner.refuse(&headers) {
        return r;
    }
    success(json!({"environment_id": "env-sim", "customer_id": "customer-sim"}))
}

async fn create_link(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let sample = || json!({"status": "success", "data": {"link": "https://connect.kombo.dev/v1?token=x"}}).to_string();
    inner.record(routes::CREATE_LINK, "POST", "/connect/create-link".into(), &body);
    if let Some(r) = inner.enter(routes::CREATE_LINK, sample).await {
        return r;
    }
    if let Some(r) = inner.refuse(&headers) {
        return r;
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "PLATFORM.INPUT_INVALID", "Body is not JSON.");
    };
    for required in ["end_user_email", "end_user_organization_name"] {
        if request[required].as_str().is_none_or(str::is_empty) {
            return error(
                StatusCode::BAD_REQUEST,
                "PLATFORM.INPUT_INVALID",
                &format!("{required} is required."),
            );
        }
    }
    if let Some(c) = request.get("integration_category")
        && !["HRIS", "ATS", "ASSESSMENT", "LMS"].contains(&c.as_str().unwrap_or_default())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "PLATFORM.INPUT_INVALID",
            "integration_category is invalid.",
        );
    }
    if let Some(t) = request.get("link_type")
        && !["EMBEDDED", "MAGIC_LINK"].contains(&t.as_str().unwrap_or_default())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "PLATFORM.INPUT_INVALID",
            "link_type is invalid.",
        );
    }
    if let Some(l) = request.get("language").filter(|l| !l.is_null())
        && !["en", "de", "fr", "it", "es"].contains(&l.as_str().unwrap_or_default())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "PLATFORM.INPUT_INVALID",
            "language is invalid.",
        );
    }
    if request.get("remote_environment").is_some() && request.get("integration_tool").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "PLATFORM.INPUT_INVALID",
            "remote_environment requires integration_tool.",
        );
    }
    let token = random(32);
    let url = format!("https://connect.kombo.dev/v1?token={token}");
    let mut world = inner.world();
    world.links.insert(
        token.clone(),
        Link {
            url: url.clone(),
            token: token.clone(),
            request: request.clone(),
            expired: false,
            integration_id: None,
            activation_token: None,
        },
    );
    world.link_order.push(token.clone());
    if let Some(tool) = world.auto_complete.clone() {
        let tool = request["integration_tool"].as_str().map(str::to_string).unwrap_or(tool);
        complete(&mut world, &token, &tool);
    }
    success(json!({"link": url}))
}

async fn integration_by_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let sample = || {
        json!({"status": "success", "data": {"id": "tool:sample", "tool": "tool", "setup_status": "COMPLETED"}})
            .to_string()
    };
    inner.record(
        routes::INTEGRATION_BY_TOKEN,
        "GET",
        format!("/connect/integration-by-token/{token}"),
        "",
    );
    if let Some(r) = inner.enter(routes::INTEGRATION_BY_TOKEN, sample).await {
        return r;
    }
    if let Some(r) = inner.refuse(&headers) {
        return r;
    }
    let world = inner.world();
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "PLATFORM.INTEGRATION_NOT_FOUND",
            "No integration was created with this token.",
        )
    };
    // Only an activation token: a link's own token is not one.
    let Some(link) = world.activations.get(&token).and_then(|t| world.links.get(t)) else {
        return not_found();
    };
    match link.integration_id.as_ref().and_then(|id| world.integrations.get(id)) {
        Some(i) => success(json!({
            "id": i.id,
            "tool": i.tool,
            "end_user_origin_id": link.request["end_user_origin_id"],
            "end_user_organization_name": link.request["end_user_organization_name"],
            "end_user_email": link.request["end_user_email"],
            "setup_status": i.setup_status,
        })),
        None => not_found(),
    }
}

async fn get_integration(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let sample = || {
        json!({"status": "success", "data": {"id": "tool:sample", "tool": {"id": "tool"}, "status": "ACTIVE", "setup_status": "COMPLETED"}})
            .to_string()
    };
    inner.record(routes::GET_INTEGRATION, "GET", format!("/integrations/{id}"), "");
    if let Some(r) = inner.enter(routes::GET_INTEGRATION, sample).await {
        return r;
    }
    if let Some(r) = inner.refuse(&headers) {
        return r;
    }
    match inner.world().integrations.get(&id) {
        Some(i) => success(integration_json(i)),
        None => error(
            StatusCode::NOT_FOUND,
            "PLATFORM.INTEGRATION_NOT_FOUND",
            "The integration does not exist.",
        ),
    }
}

async fn delete_integration(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let sample = || json!({"status": "success", "data": {}}).to_string();
    inner.record(
        routes::DELETE_INTEGRATION,
        "DELETE",
        format!("/integrations/{id}"),
        &body,
    );
    if let Some(r) = inner.enter(routes::DELETE_INTEGRATION, sample).await {
        return r;
    }
    if let Some(r) = inner.refuse(&headers) {
        return r;
    }
    let mut world = inner.world();
    if world.integrations.remove(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "PLATFORM.INTEGRATION_NOT_FOUND",
            "The integration does not exist.",
        );
    }
    world.deleted.push(id);
    success(json!({}))
}

/// What an application does with the output Secret: a data call with the
/// API key and `X-Integration-Id`.
async fn data(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let sample = || json!({"status": "success", "data": {"results": [], "next": null}}).to_string();
    if let Some(r) = inner.enter(routes::DATA, sample).await {
        return r;
    }
    if let Some(r) = inner.refuse(&headers) {
        return r;
    }
    let Some(id) = headers.get("x-integration-id").and_then(|v| v.to_str().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PLATFORM.INPUT_INVALID",
            "The X-Integration-Id header is required.",
        );
    };
    let world = inner.world();
    let Some(i) = world.integrations.get(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "PLATFORM.INTEGRATION_NOT_FOUND",
            "The integration does not exist.",
        );
    };
    let refused = match (i.status.as_str(), i.setup_status.as_str()) {
        ("INACTIVE", _) => Some("INTEGRATION.INACTIVE"),
        ("INVALID", _) => Some("INTEGRATION.AUTHENTICATION_INVALID"),
        (_, "INCOMPLETE") => Some("INTEGRATION.SETUP_INCOMPLETE"),
        (_, "FINAL_SYNC_PENDING") => Some("INTEGRATION.SETUP_SYNC_PENDING"),
        _ => None,
    };
    match refused {
        Some(code) => error(StatusCode::CONFLICT, code, "The integration cannot serve requests."),
        None => success(json!({"results": [], "next": null})),
    }
}
