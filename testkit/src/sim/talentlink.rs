//! A Cornerstone TalentLink (ex-Lumesse) REST simulator (shared/providers.md
//! section 2), served under `/tlk/rest` like
//! `https://apiproxy.shared.lumessetalentlink.com/tlk/rest`:
//!
//! | route name (counters, faults) | request |
//! | --- | --- |
//! | `department` | `GET /tlk/rest/department` (the operator's validation read): every department of the tenant ([`TalentLinkSim::set_departments`]), or the first N when the GraphQL-style `query` parameter says `departments(first: N …)` (the form of a third-party connector, providers.md 2.3) |
//! | `position` | `GET /tlk/rest/position` (what an application does) |
//!
//! Every request needs HTTP Basic with the username and password of a user
//! added with [`TalentLinkSim::add_user`] plus the query parameter
//! `api_key=<key>` of a key added with [`TalentLinkSim::add_api_key`]
//! (providers.md 2.2). There is no token exchange.
//!
//! Several simulators stand for several regional hosts: each has its own
//! users and keys, so credentials of one tenant only work on its own host.
//!
//! Assumptions where providers.md says UNKNOWN (2.4, 2.5; also listed in
//! docs/providers/talentlink.md):
//! - The Basic user-id is the username exactly as stored (the simulator
//!   compares `username:password` as a whole, so a `Company:user:BO` form
//!   works as well as a bare one).
//! - Wrong username, wrong password, unknown or revoked API key: **401**.
//! - Known key not approved yet (production approval), a key assigned to
//!   another user, or a user without the *Webservices* role: **403**.
//! - Error bodies are JSON `{"status": <code>, "message": "…"}`.
//! - No rate limit is built in; 429s come only from injected faults.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use base64::Engine;
use serde_json::{Value, json};

use super::faults::{self, Fault, Faults, json_response};

/// Route names, for [`TalentLinkSim::calls`] and [`TalentLinkSim::fail_next`].
pub mod routes {
    pub const DEPARTMENT: &str = "department";
    pub const POSITION: &str = "position";
    /// Every route.
    pub const ALL: [&str; 2] = [DEPARTMENT, POSITION];
}

/// An API key as TalentLink knows it: the integration it came from is
/// assigned to one user, and production keys need Cornerstone's approval.
#[derive(Clone, Debug)]
struct ApiKey {
    user: String,
    approved: bool,
}

#[derive(Clone, Debug)]
struct User {
    password: String,
    webservices_role: bool,
}

#[derive(Default)]
struct World {
    users: HashMap<String, User>,
    keys: HashMap<String, ApiKey>,
    revoked_keys: HashSet<String>,
    /// Departments of the tenant (0 counts as 1).
    departments: usize,
}

#[derive(Default)]
struct Inner {
    world: Mutex<World>,
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

    /// Why a request with this Basic header and API key is refused, if it is.
    fn refuse(&self, authorization: Option<&str>, api_key: Option<&str>) -> Option<Response> {
        let basic = authorization
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok());
        let world = self.world();
        let user = basic.as_deref().and_then(|pair| {
            world
                .users
                .iter()
                .find(|(name, u)| pair == format!("{name}:{}", u.password))
                .map(|(name, u)| (name.clone(), u.clone()))
        });
        let Some((username, user)) = user else {
            return Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
        };
        let key = api_key
            .filter(|k| !world.revoked_keys.contains(*k))
            .and_then(|k| world.keys.get(k));
        let Some(key) = key else {
            return Some(error(StatusCode::UNAUTHORIZED, "Invalid API key"));
        };
        if !key.approved {
            return Some(error(
                StatusCode::FORBIDDEN,
                "The integration for this API key is pending approval",
            ));
        }
        if key.user != username {
            return Some(error(StatusCode::FORBIDDEN, "The API key is not assigned to this user"));
        }
        if !user.webservices_role {
            return Some(error(StatusCode::FORBIDDEN, "The user lacks the Webservices role"));
        }
        None
    }
}

/// A running TalentLink simulator (one regional host).
pub struct TalentLinkSim {
    inner: Arc<Inner>,
    server: super::Served,
}

impl TalentLinkSim {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/tlk/rest/department", get(department))
            .route("/tlk/rest/position", get(position))
            .with_state(inner.clone());
        let server = super::Served::start(app).await?;
        Ok(Self { inner, server })
    }

    /// The REST base URL, as a ClusterProvider's `baseUrl` (`http://127.0.0.1:port/tlk/rest`).
    pub fn base_url(&self) -> String {
        self.server.url("/tlk/rest")
    }

    /// How many departments the tenant has: `GET /department` without a
    /// `query` returns all of them, with `departments(first: N …)` the first N.
    pub fn set_departments(&self, n: usize) {
        self.inner.world().departments = n;
    }

    /// Adds (or replaces) an API user with the Webservices role.
    pub fn add_user(&self, username: &str, password: &str) {
        self.inner.world().users.insert(
            username.into(),
            User {
                password: password.into(),
                webservices_role: true,
            },
        );
    }

    /// Removes a user (the password no longer works).
    pub fn revoke_user(&self, username: &str) {
        self.inner.world().users.remove(username);
    }

    /// Grants or withdraws the Webservices role.
    pub fn set_webservices_role(&self, username: &str, granted: bool) {
        if let Some(u) = self.inner.world().users.get_mut(username) {
            u.webservices_role = granted;
        }
    }

    /// Adds an approved API key whose integration is assigned to `username`.
    pub fn add_api_key(&self, key: &str, username: &str) {
        let mut world = self.inner.world();
        world.revoked_keys.remove(key);
        world.keys.insert(
            key.into(),
            ApiKey {
                user: username.into(),
                approved: true,
            },
        );
    }

    /// Marks a key approved or pending (production approval by Cornerstone).
    pub fn set_key_approved(&self, key: &str, approved: bool) {
        if let Some(k) = self.inner.world().keys.get_mut(key) {
            k.approved = approved;
        }
    }

    /// Revokes an API key.
    pub fn revoke_api_key(&self, key: &str) {
        self.inner.world().revoked_keys.insert(key.into());
    }

    /// Whether a request with this `Authorization` value and API key would
    /// be accepted right now (what an application's call would get).
    pub fn accepts(&self, authorization: &str, api_key: &str) -> bool {
        self.inner.refuse(Some(authorization), Some(api_key)).is_none()
    }

    /// Requests to `route` so far (failed ones included).
    pub fn calls(&self, route: &str) -> u64 {
        self.inner.calls.count(route)
    }

    /// Arrival times of the requests to `route`, oldest first.
    pub fn call_times(&self, route: &str) -> Vec<Instant> {
        self.inner.calls.times(route)
    }

    /// Requests on every route.
    pub fn total_calls(&self) -> u64 {
        self.inner.calls.total(&routes::ALL)
    }

    /// Injects `fault` into the next `count` requests to `route`.
    pub fn fail_next(&self, route: &str, count: usize, fault: Fault) {
        self.inner.faults.fail_next(route, count, fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"status": status.as_u16(), "message": message}).to_string(),
    )
}

fn default_error(code: u16) -> String {
    json!({"status": code, "message": format!("simulated {code}")}).to_string()
}

async fn serve(
    inner: &Inner,
    route: &'static str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    good: impl Fn() -> String,
) -> Response {
    inner.count(route);
    if let Some(r) = faults::apply(inner.faults.take(route), default_error, &good).await {
        return r;
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Some(r) = inner.refuse(authorization, query.get("api_key").map(String::as_str)) {
        return r;
    }
    json_response(StatusCode::OK, good())
}

/// The page size a GraphQL-style `query` asks for (`departments(first: N …)`);
/// `None` without a query or a `first`.
fn first_of(query: &HashMap<String, String>) -> Option<usize> {
    let q = query.get("query")?;
    let rest = &q[q.find("first:")? + "first:".len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

async fn department(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let total = inner.world().departments.max(1);
    let shown = first_of(&query).map_or(total, |n| n.min(total));
    let good = move || {
        let departments: Vec<Value> = (0..shown)
            .map(|i| json!({"id": 1001 + i, "label": format!("Department {i}"), "code": format!("D{i}")}))
            .collect();
        json!({"departments": departments, "totalCount": total}).to_string()
    };
    serve(&inner, routes::DEPARTMENT, &headers, &query, good).await
}

async fn position(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let good = || {
        json!({"positions": [{"id": 2002, "title": "Backend engineer", "status": "OPEN"}], "totalCount": 1}).to_string()
    };
    serve(&inner, routes::POSITION, &headers, &query, good).await
}
