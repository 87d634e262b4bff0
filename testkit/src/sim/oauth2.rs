//! A generic OAuth 2.0 token endpoint (RFC 6749): the client-credentials
//! grant at `POST /oauth/token` with `client_secret_basic` (section 2.3.1,
//! form-urlencoded inside Basic) or `client_secret_post`; section 5.1
//! answers and section 5.2 errors; and a protected `GET /api/me` that tells
//! a valid token from an expired or unknown one (RFC 6750).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
};
use base64::Engine;
use rand::RngCore;
use serde_json::json;

use super::faults::{self, Fault, Faults, json_response};

#[derive(Default)]
struct Inner {
    clients: Mutex<HashMap<String, String>>,
    /// token -> (client id, expiry)
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    issued: Mutex<Vec<String>>,
    lifetime: Mutex<Option<u64>>,
    token_calls: AtomicU64,
    /// Arrival time of every token request (benchmarks: calls per second).
    call_times: Mutex<Vec<Instant>>,
    /// Arrival times of the authenticated token requests, by client id.
    call_times_by_client: Mutex<HashMap<String, Vec<Instant>>>,
    latency_ms: AtomicU64,
    faults: Faults,
    /// Clients over their own rate limit: answered 429 with this
    /// Retry-After (seconds), as a provider that limits each credential does.
    limited_clients: Mutex<HashMap<String, u64>>,
}

/// A running token-server simulator.
pub struct OAuth2Sim {
    inner: Arc<Inner>,
    server: super::Served,
}

impl OAuth2Sim {
    /// Starts on 127.0.0.1 with an ephemeral port; tokens live 3600 s.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        *inner.lifetime.lock().unwrap_or_else(|p| p.into_inner()) = Some(3600);
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/me", get(me))
            .with_state(inner.clone());
        let server = super::Served::start(app).await?;
        Ok(Self { inner, server })
    }

    pub fn url(&self) -> String {
        self.server.url("")
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.url())
    }

    /// Registers (or replaces the secret of) a client.
    pub fn add_client(&self, id: &str, secret: &str) {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.into(), secret.into());
    }

    /// Answers every token request of `id` with 429 and `Retry-After:
    /// retry_after_secs` (its own budget is spent, as when the customer's
    /// own application traffic uses it up); `None` lifts it.
    pub fn limit_client(&self, id: &str, retry_after_secs: Option<u64>) {
        let mut limited = self.inner.limited_clients.lock().unwrap_or_else(|p| p.into_inner());
        match retry_after_secs {
            Some(secs) => limited.insert(id.into(), secs),
            None => limited.remove(id),
        };
    }

    /// Lifetime of new tokens in seconds; `None` omits `expires_in`.
    pub fn set_token_lifetime(&self, secs: Option<u64>) {
        *self.inner.lifetime.lock().unwrap_or_else(|p| p.into_inner()) = secs;
    }

    /// Requests to the token endpoint so far (failed ones included).
    pub fn token_calls(&self) -> u64 {
        self.inner.token_calls.load(Ordering::SeqCst)
    }

    /// When each token request arrived, oldest first.
    pub fn token_call_times(&self) -> Vec<Instant> {
        self.inner.call_times.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// When each authenticated token request of `client_id` arrived, oldest first.
    pub fn token_call_times_for(&self, client_id: &str) -> Vec<Instant> {
        self.inner
            .call_times_by_client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `token` was issued here and has not expired.
    pub fn is_valid_token(&self, token: &str) -> bool {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .is_some_and(|(_, exp)| *exp > Instant::now())
    }

    /// The client a token was issued to.
    pub fn token_client(&self, token: &str) -> Option<String> {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .map(|(c, _)| c.clone())
    }

    /// Every token issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.issued.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Injects `fault` into the next `count` requests to `route` (`"token"`).
    pub fn fail_next(&self, route: &str, count: usize, fault: Fault) {
        self.inner.faults.fail_next(route, count, fault);
    }

    /// Latency added to every token request (benchmarks: a provider's round trip).
    pub fn set_latency(&self, latency: Duration) {
        self.inner
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }
}

fn oauth_error(code: u16) -> String {
    let error = match code {
        401 => "invalid_client",
        403 => "access_denied",
        429 => "slow_down",
        c if c >= 500 => "server_error",
        _ => "invalid_request",
    };
    json!({"error": error, "error_description": format!("simulated {code}")}).to_string()
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = json_response(
        status,
        json!({"error": error, "error_description": description}).to_string(),
    );
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = "Basic realm=\"simulator\"".parse()
    {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    inner.token_calls.fetch_add(1, Ordering::SeqCst);
    let arrived = Instant::now();
    inner.call_times.lock().unwrap_or_else(|p| p.into_inner()).push(arrived);
    let latency = inner.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let lifetime = *inner.lifetime.lock().unwrap_or_else(|p| p.into_inner());
    let sample = || json!({"access_token": "x".repeat(32), "token_type": "Bearer", "expires_in": 3600}).to_string();
    if let Some(r) = faults::apply(inner.faults.take("token"), oauth_error, sample).await {
        return r;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials",
        );
    }
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(i, p)| (form_decode(i), form_decode(p))));
    let post = form.get("client_id").cloned().zip(form.get("client_secret").cloned());
    let (id, secret) = match (basic, post) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
            );
        }
        (Some(b), None) => b,
        (None, Some(p)) => p,
        (None, None) => return error(StatusCode::UNAUTHORIZED, "invalid_client", "no client authentication"),
    };
    let known = inner
        .clients
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned();
    if known.as_deref() != Some(secret.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let limited = inner
        .limited_clients
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .copied();
    if let Some(secs) = limited {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "rate limit of this client exceeded",
        );
        if let Ok(v) = secs.to_string().parse() {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    inner
        .call_times_by_client
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id.clone())
        .or_default()
        .push(arrived);
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("sim-{}", hex(&raw));
    let expiry = Instant::now() + Duration::from_secs(lifetime.unwrap_or(3600));
    inner
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), (id, expiry));
    inner
        .issued
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(token.clone());
    let mut answer = json!({"access_token": token, "token_type": "Bearer"});
    if let Some(l) = lifetime {
        answer["expires_in"] = json!(l);
    }
    if let Some(scope) = form.get("scope") {
        answer["scope"] = json!(scope);
    }
    let mut r = json_response(StatusCode::OK, answer.to_string());
    r.headers_mut()
        .insert("cache-control", axum::http::HeaderValue::from_static("no-store"));
    r
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn me(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let found = inner
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .cloned();
    match found {
        Some((client, exp)) if exp > Instant::now() => {
            json_response(StatusCode::OK, json!({"client_id": client}).to_string())
        }
        _ => {
            let mut r = json_response(StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}).to_string());
            if let Ok(v) = "Bearer error=\"invalid_token\"".parse() {
                r.headers_mut().insert("www-authenticate", v);
            }
            r
        }
    }
}
