//! A Cloud Elements / SAP Open Connectors platform simulator
//! (shared/providers.md section 3), served under `/elements/api-v2` like
//! `https://api.cloud-elements.com/elements/api-v2`:
//!
//! | route name (counters, faults) | request |
//! | --- | --- |
//! | `create-instance` | `POST /elements/api-v2/instances` |
//! | `list-instances` | `GET /elements/api-v2/instances`, optionally filtered with `tags[]=<tag>` (repeatable: instances carrying every tag given) |
//! | `get-instance` | `GET /elements/api-v2/instances/{id}` |
//! | `update-instance` | `PUT /elements/api-v2/instances/{id}` |
//! | `delete-instance` | `DELETE /elements/api-v2/instances/{id}` |
//! | `hub` | `GET /elements/api-v2/hubs/humancapital/candidates` (what an application does) |
//!
//! Platform calls need `Authorization: User <user secret>, Organization
//! <organization secret>` of a pair added with [`CloudElementsSim::add_user`]
//! (providers.md 3.2); instances belong to the organization. Hub calls need
//! `User <user secret>, Element <instance token>` and accept an
//! `Organization` part too (`User …, Organization …, Element …`, the form
//! some calls require). The `smartrecruiters` element takes the
//! configuration key `api.key` (a SmartRecruiters API key added with
//! [`CloudElementsSim::add_element_api_key`]); answers follow the instance
//! JSON of seed-3 (`id`, `name`, `token`, `element{…}`, `tags`, `valid`,
//! `disabled`, …). Secret configuration values are masked in answers.
//!
//! Assumptions where providers.md says UNKNOWN (3.4, 3.6; also listed in
//! docs/providers/cloud-elements.md):
//! - Error bodies are JSON `{"requestId": "…", "message": "…"}`.
//! - A wrong or reset User/Organization secret: **401**; a user without the
//!   right to manage instances ([`CloudElementsSim::set_user_may_manage`]): **403**.
//! - Instance names are unique per organization: a second `POST /instances`
//!   with a name in use answers **409** (the platform documents no
//!   uniqueness; the stricter behaviour is simulated so the operator must
//!   handle it). Creation is otherwise not idempotent: every accepted POST
//!   creates a new instance with a new id and token.
//! - A configuration the element rejects (an unknown SmartRecruiters key) at
//!   create or update: **400**, nothing created. A key revoked later turns
//!   the instance's `valid` to false.
//! - `GET /instances` returns every instance of the organization, tokens
//!   included, in one page, unless filtered with `tags[]` (the filter Cloud
//!   Elements' own test framework uses: `GET /instances?tags%5B%5D=…`; the
//!   reference documents none). Other query parameters are ignored.
//! - No rate limit is built in; 429s come only from injected faults.
//!
//! A [`Fault::Delay`] on `create-instance` creates the instance first and
//! answers late (the platform did the work, the caller gave up waiting);
//! on the other routes, as everywhere, it delays the whole request.

// Handlers answer with a ready `Response` on every early exit.
#![allow(clippy::result_large_err)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use base64::Engine;
use rand::RngCore;
use serde_json::{Value, json};

use super::faults::{self, Fault, Faults, json_response};

/// Route names, for [`CloudElementsSim::calls`] and [`CloudElementsSim::fail_next`].
pub mod routes {
    pub const CREATE_INSTANCE: &str = "create-instance";
    pub const LIST_INSTANCES: &str = "list-instances";
    pub const GET_INSTANCE: &str = "get-instance";
    pub const UPDATE_INSTANCE: &str = "update-instance";
    pub const DELETE_INSTANCE: &str = "delete-instance";
    pub const HUB: &str = "hub";
    /// Every route.
    pub const ALL: [&str; 6] = [
        CREATE_INSTANCE,
        LIST_INSTANCES,
        GET_INSTANCE,
        UPDATE_INSTANCE,
        DELETE_INSTANCE,
        HUB,
    ];
}

/// Configuration keys whose values are masked in answers.
const SECRET_CONFIG_KEYS: [&str; 3] = ["api.key", "oauth.api.secret", "oauth.user.refresh_token"];

/// An element instance as the simulator knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub id: u64,
    pub name: String,
    pub token: String,
    pub element_key: String,
    pub organization: String,
    pub configuration: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub disabled: bool,
    /// Forced `valid: false` (besides a revoked element key).
    pub forced_invalid: bool,
}

#[derive(Default)]
struct World {
    /// user secret -> organization secret
    users: HashMap<String, String>,
    /// users who may not create, update or delete instances (403)
    read_only_users: HashSet<String>,
    element_api_keys: HashSet<String>,
    instances: BTreeMap<u64, Instance>,
    next_id: u64,
    deleted: Vec<u64>,
    created: u64,
}

impl World {
    fn valid(&self, i: &Instance) -> bool {
        !i.forced_invalid
            && match i.element_key.as_str() {
                "smartrecruiters" => i
                    .configuration
                    .get("api.key")
                    .is_some_and(|k| self.element_api_keys.contains(k)),
                _ => true,
            }
    }

    fn render(&self, i: &Instance) -> Value {
        let configuration: serde_json::Map<String, Value> = i
            .configuration
            .iter()
            .map(|(k, v)| {
                let shown = if SECRET_CONFIG_KEYS.contains(&k.as_str()) {
                    "********".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), json!(shown))
            })
            .collect();
        json!({
            "id": i.id,
            "name": i.name,
            "createdDate": "2026-11-22T20:44:36Z",
            "token": i.token,
            "element": {
                "id": 6159,
                "name": "SmartRecruiters ",
                "hookName": "SmartRecruiters",
                "key": i.element_key,
                "active": false,
                "deleted": false,
                "typeOauth": false,
                "authentication": {"type": "custom"},
                "hub": "humancapital",
                "protocolType": "http",
            },
            "elementId": 6159,
            "tags": i.tags,
            "provisionInteractions": [],
            "valid": self.valid(i),
            "disabled": i.disabled,
            "maxCacheSize": 0,
            "cacheTimeToLive": 0,
            "configuration": configuration,
            "eventsEnabled": false,
            "traceLoggingEnabled": false,
            "cachingEnabled": false,
            "externalAuthentication": "none",
            "user": {"id": 123456, "emailAddress": "claude@example.com", "firstName": "Claude", "lastName": "Elements"},
        })
    }
}

#[derive(Default)]
struct Inner {
    world: Mutex<World>,
    calls: super::calls::CallLog,
    faults: Faults,
}

/// The parts of a Cloud Elements `Authorization` header.
#[derive(Default, Debug)]
struct Auth {
    user: Option<String>,
    organization: Option<String>,
    element: Option<String>,
}

fn parse_auth(headers: &HeaderMap) -> Auth {
    let mut auth = Auth::default();
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for part in value.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("User ") {
            auth.user = Some(v.trim().to_string());
        } else if let Some(v) = part.strip_prefix("Organization ") {
            auth.organization = Some(v.trim().to_string());
        } else if let Some(v) = part.strip_prefix("Element ") {
            auth.element = Some(v.trim().to_string());
        }
    }
    auth
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"requestId": "5c3f1d6e0c1a4b2d9e8f7a6b", "message": message}).to_string(),
    )
}

fn default_error(code: u16) -> String {
    json!({"requestId": "5c3f1d6e0c1a4b2d9e8f7a6b", "message": format!("simulated {code}")}).to_string()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Invalid Organization or User secret, or invalid Element token provided.",
    )
}

impl Inner {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, route: &'static str) {
        self.calls.record(route);
    }

    /// Counts the call and applies an injected fault, if any.
    async fn enter(&self, route: &'static str, good: impl Fn() -> String) -> Option<Response> {
        self.count(route);
        faults::apply(self.faults.take(route), default_error, good).await
    }

    /// The organization of a platform call, or the 401 answer.
    fn platform(&self, headers: &HeaderMap) -> Result<(String, String), Response> {
        let auth = parse_auth(headers);
        let (Some(user), Some(org)) = (auth.user, auth.organization) else {
            return Err(unauthorized());
        };
        match self.world().users.get(&user) {
            Some(o) if *o == org => Ok((user, org)),
            _ => Err(unauthorized()),
        }
    }

    /// As [`Inner::platform`], for calls that change instances (403 for a read-only user).
    fn manager(&self, headers: &HeaderMap) -> Result<String, Response> {
        let (user, org) = self.platform(headers)?;
        if self.world().read_only_users.contains(&user) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "User does not have the privilege to manage element instances",
            ));
        }
        Ok(org)
    }

    /// Whether a hub call with this header is accepted (instance id if so).
    fn hub_instance(&self, headers: &HeaderMap) -> Option<u64> {
        let auth = parse_auth(headers);
        let world = self.world();
        let org = world.users.get(auth.user.as_deref()?)?;
        if auth.organization.as_ref().is_some_and(|o| o != org) {
            return None;
        }
        let token = auth.element?;
        let i = world
            .instances
            .values()
            .find(|i| i.token == token && i.organization == *org)?;
        (!i.disabled && world.valid(i)).then_some(i.id)
    }
}

/// A running Cloud Elements simulator.
pub struct CloudElementsSim {
    inner: Arc<Inner>,
    server: super::Served,
}

impl CloudElementsSim {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        inner.world().next_id = 12345;
        let app = Router::new()
            .route("/elements/api-v2/instances", get(list_instances).post(create_instance))
            .route(
                "/elements/api-v2/instances/{id}",
                get(get_instance).put(update_instance).delete(delete_instance),
            )
            .route("/elements/api-v2/hubs/humancapital/candidates", get(hub))
            .with_state(inner.clone());
        let server = super::Served::start(app).await?;
        Ok(Self { inner, server })
    }

    /// The platform base URL, as a ClusterProvider's `baseUrl`
    /// (`http://127.0.0.1:port/elements/api-v2`).
    pub fn base_url(&self) -> String {
        self.server.url("/elements/api-v2")
    }

    /// Accepts `User <user_secret>, Organization <organization_secret>` from now on.
    pub fn add_user(&self, user_secret: &str, organization_secret: &str) {
        self.inner
            .world()
            .users
            .insert(user_secret.into(), organization_secret.into());
    }

    /// Resets a user's secret: the old one stops working at once (providers.md 3.2).
    pub fn revoke_user(&self, user_secret: &str) {
        self.inner.world().users.remove(user_secret);
    }

    /// Whether the user may create, update and delete instances (403 if not).
    pub fn set_user_may_manage(&self, user_secret: &str, may: bool) {
        let mut world = self.inner.world();
        if may {
            world.read_only_users.remove(user_secret);
        } else {
            world.read_only_users.insert(user_secret.into());
        }
    }

    /// Accepts `key` as a SmartRecruiters API key (`api.key` configuration).
    pub fn add_element_api_key(&self, key: &str) {
        self.inner.world().element_api_keys.insert(key.into());
    }

    /// SmartRecruiters stops accepting `key`: instances using it turn invalid.
    pub fn revoke_element_api_key(&self, key: &str) {
        self.inner.world().element_api_keys.remove(key);
    }

    /// Instances that exist now, by id.
    pub fn instances(&self) -> BTreeMap<u64, Instance> {
        self.inner.world().instances.clone()
    }

    /// Instances that exist now.
    pub fn instance_count(&self) -> usize {
        self.inner.world().instances.len()
    }

    /// Instances ever created (deleted ones included).
    pub fn created_count(&self) -> u64 {
        self.inner.world().created
    }

    /// Ids deleted through the API, in order.
    pub fn deleted(&self) -> Vec<u64> {
        self.inner.world().deleted.clone()
    }

    /// Creates an instance as someone else would (in the platform's UI):
    /// returns its id.
    pub fn create_instance(&self, organization_secret: &str, name: &str, tags: &[&str]) -> u64 {
        let mut world = self.inner.world();
        new_instance(
            &mut world,
            organization_secret,
            name,
            "smartrecruiters",
            BTreeMap::new(),
            tags.iter().map(|t| t.to_string()).collect(),
        )
    }

    /// Deletes an instance as someone else would (not counted as an API delete).
    pub fn remove_instance(&self, id: u64) {
        self.inner.world().instances.remove(&id);
    }

    /// Disables or enables an instance.
    pub fn set_disabled(&self, id: u64, disabled: bool) {
        if let Some(i) = self.inner.world().instances.get_mut(&id) {
            i.disabled = disabled;
        }
    }

    /// Forces an instance's `valid` flag to false (or back to computed).
    pub fn set_invalid(&self, id: u64, invalid: bool) {
        if let Some(i) = self.inner.world().instances.get_mut(&id) {
            i.forced_invalid = invalid;
        }
    }

    /// Whether a hub call with this `Authorization` value would be accepted
    /// right now (what an application's call would get).
    pub fn accepts(&self, authorization: &str) -> bool {
        let mut headers = HeaderMap::new();
        match authorization.parse() {
            Ok(v) => {
                headers.insert("authorization", v);
            }
            Err(_) => return false,
        }
        self.inner.hub_instance(&headers).is_some()
    }

    /// Every instance token ever issued that still exists.
    pub fn tokens(&self) -> Vec<String> {
        self.inner.world().instances.values().map(|i| i.token.clone()).collect()
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

fn new_instance(
    world: &mut World,
    organization: &str,
    name: &str,
    element_key: &str,
    configuration: BTreeMap<String, String>,
    tags: Vec<String>,
) -> u64 {
    let id = world.next_id;
    world.next_id += 1;
    world.created += 1;
    // Like the platform's: base64, with `/`, `+` and `=` in it.
    let mut raw = [0u8; 30];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::STANDARD.encode(raw);
    world.instances.insert(
        id,
        Instance {
            id,
            name: name.into(),
            token,
            element_key: element_key.into(),
            organization: organization.into(),
            configuration,
            tags,
            disabled: false,
            forced_invalid: false,
        },
    );
    id
}

/// What a create or update body asks for.
struct Requested {
    element_key: String,
    configuration: BTreeMap<String, String>,
    tags: Vec<String>,
    name: String,
}

/// The element key, configuration, tags and name of a create or update
/// body, or the 4xx answer.
fn parse_body(world: &World, body: &str) -> Result<Requested, Response> {
    let v: Value =
        serde_json::from_str(body).map_err(|_| error(StatusCode::BAD_REQUEST, "Request body is not valid JSON"))?;
    let element_key = v["element"]["key"]
        .as_str()
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "element.key is required"))?
        .to_string();
    let name = v["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "name is required"))?
        .to_string();
    let configuration: BTreeMap<String, String> = v["configuration"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let tags = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if element_key != "smartrecruiters" {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("No element found with key {element_key}"),
        ));
    }
    match configuration.get("api.key") {
        Some(k) if world.element_api_keys.contains(k) => {}
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Failed to authenticate with SmartRecruiters: the provided api.key is invalid",
            ));
        }
    }
    Ok(Requested {
        element_key,
        configuration,
        tags,
        name,
    })
}

async fn create_instance(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let sample = || {
        let world = World::default();
        let i = Instance {
            id: 1,
            name: "sample".into(),
            token: "x".repeat(40),
            element_key: "smartrecruiters".into(),
            organization: String::new(),
            configuration: BTreeMap::new(),
            tags: vec![],
            disabled: false,
            forced_invalid: false,
        };
        world.render(&i).to_string()
    };
    inner.count(routes::CREATE_INSTANCE);
    let fault = inner.faults.take(routes::CREATE_INSTANCE);
    if let Some(Fault::Delay(d)) = fault {
        // The platform does the work, then answers too late: the caller
        // may have given up, the instance exists anyway.
        let answer = create(&inner, &headers, &body);
        tokio::time::sleep(d).await;
        return answer;
    }
    if let Some(r) = faults::apply(fault, default_error, sample).await {
        return r;
    }
    create(&inner, &headers, &body)
}

fn create(inner: &Inner, headers: &HeaderMap, body: &str) -> Response {
    let org = match inner.manager(headers) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut world = inner.world();
    let Requested {
        element_key,
        configuration,
        tags,
        name,
    } = match parse_body(&world, body) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    if world
        .instances
        .values()
        .any(|i| i.organization == org && i.name == name)
    {
        return error(
            StatusCode::CONFLICT,
            &format!("An element instance with the name '{name}' already exists"),
        );
    }
    let id = new_instance(&mut world, &org, &name, &element_key, configuration, tags);
    json_response(StatusCode::OK, world.render(&world.instances[&id]).to_string())
}

async fn list_instances(State(inner): State<Arc<Inner>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if let Some(r) = inner.enter(routes::LIST_INSTANCES, || "[]".to_string()).await {
        return r;
    }
    let (_, org) = match inner.platform(&headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let wanted: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "tags[]")
        .map(|(_, v)| v.into_owned())
        .collect();
    let world = inner.world();
    let list: Vec<Value> = world
        .instances
        .values()
        .filter(|i| i.organization == org)
        .filter(|i| wanted.iter().all(|t| i.tags.contains(t)))
        .map(|i| world.render(i))
        .collect();
    json_response(StatusCode::OK, Value::Array(list).to_string())
}

/// The instance `id` of the caller's organization, or the 404 answer.
fn find(world: &World, org: &str, id: &str) -> Result<u64, Response> {
    id.parse::<u64>()
        .ok()
        .filter(|id| world.instances.get(id).is_some_and(|i| i.organization == org))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("No instance found with id {id}")))
}

async fn get_instance(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let sample = || json!({"id": 1, "token": "x".repeat(40), "valid": true, "disabled": false}).to_string();
    if let Some(r) = inner.enter(routes::GET_INSTANCE, sample).await {
        return r;
    }
    let (_, org) = match inner.platform(&headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let world = inner.world();
    match find(&world, &org, &id) {
        Ok(id) => json_response(StatusCode::OK, world.render(&world.instances[&id]).to_string()),
        Err(r) => r,
    }
}

async fn update_instance(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let sample = || json!({"id": 1, "token": "x".repeat(40), "valid": true, "disabled": false}).to_string();
    if let Some(r) = inner.enter(routes::UPDATE_INSTANCE, sample).await {
        return r;
    }
    let org = match inner.manager(&headers) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut world = inner.world();
    let id = match find(&world, &org, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Requested {
        configuration,
        tags,
        name,
        ..
    } = match parse_body(&world, &body) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    if let Some(i) = world.instances.get_mut(&id) {
        // The token stays (providers.md 3.7: update instead of delete + create).
        i.configuration = configuration;
        i.tags = tags;
        i.name = name;
    }
    json_response(StatusCode::OK, world.render(&world.instances[&id]).to_string())
}

async fn delete_instance(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = inner.enter(routes::DELETE_INSTANCE, || "{}".to_string()).await {
        return r;
    }
    let org = match inner.manager(&headers) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut world = inner.world();
    let id = match find(&world, &org, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    world.instances.remove(&id);
    world.deleted.push(id);
    // The platform answers 200 (providers.md 3.3).
    json_response(StatusCode::OK, "{}".into())
}

async fn hub(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let good = || json!([{"id": "c-1", "firstName": "Ada", "lastName": "Lovelace"}]).to_string();
    if let Some(r) = inner.enter(routes::HUB, good).await {
        return r;
    }
    match inner.hub_instance(&headers) {
        Some(_) => json_response(StatusCode::OK, good()),
        None => unauthorized(),
    }
}
