//! The emulator's HTTP front: routing, content negotiation (JSON, YAML,
//! protobuf, Table, PartialObjectMetadata), watches, fault injection and
//! request counters, plus the [`Emulator`] handle tests hold.

mod registry;
mod select;
mod ssa;
mod store;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::Response,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast::error::RecvError};

use super::{openapi, protobuf, table};
use registry::ResourceType;
use select::{FieldSelector, LabelSelector};
pub use store::ApiError;
use store::{State, WriteOptions};

/// Options of [`Emulator::start_with`].
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Where to write the kubeconfig; default: a fresh temporary directory.
    pub kubeconfig: Option<PathBuf>,
    /// Changes kept for watches to resume from; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            watch_history: 100_000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    faults: Faults,
    counters: Counters,
    bookmark_interval: Duration,
}

/// A running emulator.
pub struct Emulator {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Emulator {
    /// Starts on 127.0.0.1 with an ephemeral port and writes a kubeconfig.
    pub async fn start() -> anyhow::Result<Emulator> {
        Self::start_with(EmulatorOptions::default()).await
    }

    pub async fn start_with(opts: EmulatorOptions) -> anyhow::Result<Emulator> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts.watch_history)),
            faults: Faults::default(),
            counters: Counters::default(),
            bookmark_interval: opts.bookmark_interval,
        });
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let (tempdir, kubeconfig) = match opts.kubeconfig {
            Some(p) => (None, p),
            None => {
                let dir = tempfile::tempdir()?;
                let p = dir.path().join("kubeconfig");
                (Some(dir), p)
            }
        };
        write_kubeconfig(&kubeconfig, &format!("http://{addr}"))?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(crate::nodelay(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Emulator {
            addr,
            kubeconfig,
            _tempdir: tempdir,
            shared,
            stop: Some(stop),
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client built from the kubeconfig, as any user's would be.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("the emulator's kubeconfig is readable");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("the emulator's kubeconfig is valid");
        kube::Client::try_from(config).expect("a client for the emulator")
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    pub fn counters(&self) -> Counters {
        self.shared.counters.clone()
    }

    /// Objects stored, over all types.
    pub fn object_count(&self) -> usize {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .object_count()
    }

    /// Stops serving; open watches end.
    pub async fn shutdown(mut self) {
        self.shared.faults.drop_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}

fn write_kubeconfig(path: &Path, server: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {server}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user:\n    token: emulator\n"
    );
    std::fs::write(path, text)
}

/// Injected API failures; cheap to clone.
#[derive(Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
    latency: Arc<AtomicU64>,
    drop: Arc<Notify>,
    drops: Arc<AtomicU64>,
}

#[derive(Clone, Debug)]
struct FaultRule {
    method: Option<Method>,
    path_contains: String,
    left: usize,
    status: u16,
    retry_after: Option<u64>,
}

impl Faults {
    /// The next `count` requests whose path contains `path_contains` (and,
    /// if given, with this method) are answered with `status`.
    pub fn fail_next(
        &self,
        method: Option<Method>,
        path_contains: &str,
        count: usize,
        status: u16,
        retry_after_secs: Option<u64>,
    ) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).push(FaultRule {
            method,
            path_contains: path_contains.into(),
            left: count,
            status,
            retry_after: retry_after_secs,
        });
    }

    /// Ends every open watch now (clients must reconnect).
    pub fn drop_watches(&self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        self.drop.notify_waiters();
    }

    /// Latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.latency.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.set_latency(Duration::ZERO);
    }

    fn take(&self, method: &Method, path: &str) -> Option<(u16, Option<u64>)> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let i = rules.iter().position(|r| {
            r.left > 0 && r.method.as_ref().is_none_or(|m| m == method) && path.contains(&r.path_contains)
        })?;
        rules[i].left -= 1;
        let hit = (rules[i].status, rules[i].retry_after);
        if rules[i].left == 0 {
            rules.remove(i);
        }
        Some(hit)
    }
}

/// Requests served, by (verb, resource); cheap to clone.
#[derive(Clone, Default)]
pub struct Counters(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl Counters {
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.snapshot()
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// create + update + patch + delete, over all resources.
    pub fn writes(&self) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((verb, _), _)| {
                matches!(
                    verb.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes to one resource (e.g. `secrets`, `integrations/status`).
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((verb, r), _)| r == resource && matches!(verb.as_str(), "create" | "update" | "patch" | "delete"))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn record(&self, verb: &str, resource: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((verb.to_string(), resource.to_string()))
            .or_insert(0) += 1;
    }
}

/// A parsed request for a resource.
#[derive(Debug, Clone)]
struct Target {
    group: String,
    version: String,
    namespace: String,
    plural: String,
    name: Option<String>,
    subresource: String,
    watch_path: bool,
}

enum Route {
    Version,
    Api,
    Apis,
    Group(String),
    Resources(String, String),
    OpenApiIndex,
    OpenApiDoc(String),
    Resource(Target),
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::Api,
        ["apis"] => return Route::Apis,
        ["api", v] => return Route::Resources(String::new(), v.to_string()),
        ["apis", g] => return Route::Group(g.to_string()),
        ["apis", g, v] => return Route::Resources(g.to_string(), v.to_string()),
        ["openapi", "v3"] => return Route::OpenApiIndex,
        ["openapi", "v3", rest @ ..] => return Route::OpenApiDoc(rest.join("/")),
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Route::NotFound,
    };
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (namespace, rest) = match rest {
        // /api/v1/namespaces/{name}/status is the namespace's own subresource.
        ["namespaces", _, "status" | "finalize"] if group.is_empty() => ("", rest),
        ["namespaces", ns, r @ ..] if !r.is_empty() => (*ns, r),
        r => ("", r),
    };
    match rest {
        [plural, more @ ..] if more.len() <= 2 => Route::Resource(Target {
            group: group.into(),
            version: version.into(),
            namespace: namespace.into(),
            plural: plural.to_string(),
            name: more.first().map(|s| s.to_string()),
            subresource: more.get(1).map(|s| s.to_string()).unwrap_or_default(),
            watch_path,
        }),
        _ => Route::NotFound,
    }
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// How the client wants objects rendered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Full,
    Table,
    Metadata,
}

fn form_of(headers: &HeaderMap) -> Form {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // The first acceptable representation wins, as the API server negotiates.
    for part in accept.split(',') {
        if part.contains("as=Table") {
            return Form::Table;
        }
        if part.contains("as=PartialObjectMetadata") {
            return Form::Metadata;
        }
        if part.contains("application/json") || part.contains("protobuf") || part.contains("*/*") {
            return Form::Full;
        }
    }
    Form::Full
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.trim().starts_with(protobuf::CONTENT_TYPE))
    })
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// Renders one object in the requested form.
fn render_one(obj: Value, rt: &ResourceType, form: Form, q: &BTreeMap<String, String>) -> Value {
    match form {
        Form::Full => obj,
        Form::Metadata => partial(&obj),
        Form::Table => table::build(
            &rt.printer_columns,
            std::slice::from_ref(&obj),
            q.get("includeObject").map(String::as_str).unwrap_or("Metadata"),
            json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
        ),
    }
}

fn respond(status: StatusCode, body: Value, headers: &HeaderMap) -> Response {
    if wants_protobuf(headers)
        && let Some(bytes) = protobuf::encode(&body)
    {
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(protobuf::CONTENT_TYPE));
        return r;
    }
    json_response(status, &body)
}

fn verb_of(method: &Method, t: &Target, q: &BTreeMap<String, String>) -> &'static str {
    match *method {
        Method::GET if t.watch_path || q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        Method::GET if t.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.faults.latency.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let path = uri.path().to_string();
    let q = query(&uri);
    if let Route::Resource(t) = route(&path) {
        let resource = if t.subresource.is_empty() {
            t.plural.clone()
        } else {
            format!("{}/{}", t.plural, t.subresource)
        };
        shared.counters.record(verb_of(&method, &t, &q), &resource);
    }
    if let Some((status, retry_after)) = shared.faults.take(&method, &path) {
        let mut r = error_response(&ApiError::new(
            status,
            reason_for(status),
            format!("injected fault: HTTP {status}"),
        ));
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    match route(&path) {
        Route::Version => json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulator", "platform": "linux/amd64", "goVersion": "go1.24", "compiler": "gc", "buildDate": "2026-01-01T00:00:00Z", "gitCommit": "emulator", "gitTreeState": "clean"}),
        ),
        Route::Api => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        Route::Apis => {
            let body = shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry
                .group_list();
            json_response(StatusCode::OK, &body)
        }
        Route::Group(g) => {
            let body = shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry
                .group(&g);
            match body {
                Some(b) => json_response(StatusCode::OK, &b),
                None => error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            }
        }
        Route::Resources(g, v) => {
            let body = shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry
                .resource_list(&g, &v);
            match body {
                Some(b) => json_response(StatusCode::OK, &b),
                None => error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            }
        }
        Route::OpenApiIndex => {
            let docs = shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry
                .openapi_documents();
            json_response(StatusCode::OK, &openapi::index_with_documents(&docs))
        }
        Route::OpenApiDoc(gv) => {
            let docs = shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry
                .openapi_documents();
            match docs.into_iter().find(|(p, _)| *p == gv) {
                Some((_, doc)) => json_response(StatusCode::OK, &doc),
                None => error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "no OpenAPI document for that group-version",
                )),
            }
        }
        Route::Resource(t) => resource(shared, method, t, q, headers, body).await,
        Route::NotFound => error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

/// Decodes a request body (JSON, YAML or protobuf) into an object.
fn decode_body(headers: &HeaderMap, body: &[u8], rt: &ResourceType) -> Result<Value, ApiError> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with(protobuf::CONTENT_TYPE) {
        return protobuf::decode(&rt.api_version(), &rt.kind, body).map_err(ApiError::bad_request);
    }
    if content_type.contains("yaml") {
        return serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
}

async fn resource(
    shared: Arc<Shared>,
    method: Method,
    t: Target,
    q: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rt = {
        let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.registry.find(&t.group, &t.version, &t.plural).cloned()
    };
    let Some(rt) = rt else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    if !(t.subresource.is_empty() || t.subresource == "status" && rt.status_subresource) {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({}/{})",
                rt.plural, t.subresource
            ),
        ));
    }
    let form = form_of(&headers);
    let opts = WriteOptions {
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
        field_manager: q.get("fieldManager").cloned().or_else(|| {
            headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
        }),
        subresource: t.subresource.clone(),
        managed_fields: None,
    };
    let verb = verb_of(&method, &t, &q);
    let result: Result<(StatusCode, Value), ApiError> = match verb {
        "watch" => return watch(shared, rt, t, q, form).await,
        "get" => {
            let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .get(&rt, &t.namespace, t.name.as_deref().unwrap_or_default())
                .map(|o| (StatusCode::OK, render_one(o, &rt, form, &q)))
        }
        "list" => list(&shared, &rt, &t, &q, form),
        "create" => decode_body(&headers, &body, &rt).and_then(|obj| {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .create(&rt, &t.namespace, obj, &opts)
                .map(|o| (StatusCode::CREATED, o))
        }),
        "update" => decode_body(&headers, &body, &rt).and_then(|obj| {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .update(&rt, &t.namespace, t.name.as_deref().unwrap_or_default(), obj, &opts)
                .map(|o| (StatusCode::OK, o))
        }),
        "patch" => patch(&shared, &rt, &t, &q, &headers, &body, &opts),
        "delete" => {
            let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let policy = q
                .get("propagationPolicy")
                .cloned()
                .or_else(|| options["propagationPolicy"].as_str().map(String::from))
                .unwrap_or_default();
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .delete(
                    &rt,
                    &t.namespace,
                    t.name.as_deref().unwrap_or_default(),
                    policy == "Orphan",
                )
                .map(|o| (StatusCode::OK, o))
        }
        "deletecollection" => {
            let selector = match LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
                Ok(s) => s,
                Err(e) => return error_response(&ApiError::bad_request(e)),
            };
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let victims: Vec<(String, String)> = state
                .list(&rt, &t.namespace)
                .into_iter()
                .filter(|o| selector.matches(o))
                .map(|o| {
                    (
                        o["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                        o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let mut items = Vec::new();
            for (ns, name) in victims {
                if let Ok(o) = state.delete(&rt, &ns, &name, false) {
                    items.push(o);
                }
            }
            Ok((
                StatusCode::OK,
                json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": items}),
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("method {method} is not supported"),
        )),
    };
    match result {
        Ok((status, body)) => respond(status, body, &headers),
        Err(e) => error_response(&e),
    }
}

fn list(
    shared: &Shared,
    rt: &ResourceType,
    t: &Target,
    q: &BTreeMap<String, String>,
    form: Form,
) -> Result<(StatusCode, Value), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    // Paging: `continue` names the last key returned.
    let after = q.get("continue").cloned().unwrap_or_default();
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let (items, remaining, rv) = {
        let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let (items, remaining) = state.list_page(
            rt,
            &t.namespace,
            |o| labels.matches(o) && fields.matches(o),
            &after,
            limit,
        );
        (items, remaining, state.resource_version())
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        meta["continue"] = json!(items.last().map(page_key).unwrap_or_default());
        meta["remainingItemCount"] = json!(remaining);
    }
    let body = match form {
        Form::Table => table::build(
            &rt.printer_columns,
            &items,
            q.get("includeObject").map(String::as_str).unwrap_or("Metadata"),
            meta,
        ),
        Form::Metadata => json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        Form::Full => {
            json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items})
        }
    };
    Ok((StatusCode::OK, body))
}

fn page_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn patch(
    shared: &Shared,
    rt: &ResourceType,
    t: &Target,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<(StatusCode, Value), ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if content_type.starts_with("application/apply-patch") {
        let config: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding apply patch: {e}")))?;
        let force = q.get("force").is_some_and(|f| f == "true");
        return state
            .apply(rt, &t.namespace, &name, config, force, opts)
            .map(|o| (StatusCode::OK, o));
    }
    let current = state.get(rt, &t.namespace, &name)?;
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut patched = current.clone();
    if content_type.starts_with("application/json-patch+json") {
        let ops: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(&mut patched, &ops)
            .map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}")))?;
    } else if content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json")
    {
        // A resourceVersion in the patch is a precondition.
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(store::ApiError::conflict(
                rt,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut patch = patch;
        strip_directives(&mut patch);
        json_patch::merge(&mut patched, &patch);
    } else {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        ));
    }
    // Stored resourceVersion: a patch is never stale by itself.
    patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    state
        .update(rt, &t.namespace, &name, patched, opts)
        .map(|o| (StatusCode::OK, o))
}

/// Strategic-merge directives (`$patch`, `$retainKeys`, ...) are dropped: the
/// patch is applied as a JSON merge patch.
fn strip_directives(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with('$'));
        for child in m.values_mut() {
            strip_directives(child);
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch(shared: Arc<Shared>, rt: ResourceType, t: Target, q: BTreeMap<String, String>, form: Form) -> Response {
    let labels = match LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let mut fields = match FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    if let Some(name) = &t.name {
        // /watch/.../{name} is a watch on one object.
        fields = FieldSelector::parse(&format!("metadata.name={name}")).unwrap_or_default();
    }
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let requested_rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let storage_key = rt.storage_key();
    let namespace = t.namespace.clone();
    let matches = move |o: &Value| labels.matches(o) && fields.matches(o);
    let render = {
        let rt = rt.clone();
        let q = q.clone();
        move |o: Value| render_one(store::present(&o, &rt), &rt, form, &q)
    };
    let (initial, subscription, start_rv) = {
        let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let current_rv = state.resource_version();
        if requested_rv.is_empty() || requested_rv == "0" || send_initial {
            let items: Vec<Value> = state.list(&rt, &namespace).into_iter().filter(|o| matches(o)).collect();
            (items, state.subscribe(current_rv), current_rv)
        } else {
            let from = requested_rv.parse::<u64>().unwrap_or(0);
            (Vec::new(), state.subscribe(from), from)
        }
    };
    let drop_signal = shared.faults.drop.clone();
    // The drop generation this watch was opened in: a `drop_watches()` any
    // time after this ends it, even one that comes while the stream is still
    // replaying (before it waits on the Notify, which only wakes waiters).
    let drops = shared.faults.drops.clone();
    let opened_in = drops.load(Ordering::SeqCst);
    let dropped_since_open = move || drops.load(Ordering::SeqCst) != opened_in;
    let bookmark_every = shared.bookmark_interval;
    let kind = rt.kind.clone();
    let api_version = rt.api_version();
    let stream = async_stream::stream! {
        let Some((replay, mut rx)) = subscription else {
            let status = ApiError::new(410, "Expired", format!("too old resource version: {requested_rv}")).status();
            yield Ok::<Bytes, std::io::Error>(event_line("ERROR", &status));
            return;
        };
        let mut last_rv = start_rv;
        for o in initial {
            if dropped_since_open() {
                return;
            }
            yield Ok(event_line("ADDED", &render(o)));
        }
        if send_initial {
            let bookmark = json!({"kind": kind, "apiVersion": api_version, "metadata": {
                "resourceVersion": last_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            yield Ok(event_line("BOOKMARK", &bookmark));
        }
        for c in replay {
            if dropped_since_open() {
                return;
            }
            if c.storage_key == storage_key && (namespace.is_empty() || c.namespace == namespace) && matches(&c.object) {
                last_rv = c.rv;
                yield Ok(event_line(c.kind, &render(c.object.clone())));
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let dropped = drop_signal.notified();
        tokio::pin!(dropped);
        // Registered before the check, so no drop falls between the two.
        dropped.as_mut().enable();
        if dropped_since_open() {
            return;
        }
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                // Biased, so that a dropped or expired watch delivers nothing
                // more: `drop_watches()` takes effect at once, as a broken
                // connection would, even when changes are already queued.
                biased;
                _ = &mut dropped => break,
                _ = &mut deadline => break,
                received = rx.recv() => match received {
                    Ok(c) => {
                        if c.rv <= last_rv { continue; }
                        if c.storage_key == storage_key && (namespace.is_empty() || c.namespace == namespace) && matches(&c.object) {
                            last_rv = c.rv;
                            yield Ok(event_line(c.kind, &render(c.object.clone())));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let status = ApiError::new(410, "Expired", "the watch fell too far behind; relist").status();
                        yield Ok(event_line("ERROR", &status));
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rv.to_string()}});
                    yield Ok(event_line("BOOKMARK", &bookmark));
                }
            }
        }
    };
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("transfer-encoding", HeaderValue::from_static("chunked"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_like_the_api_server() {
        let Route::Resource(t) = route("/api/v1/namespaces/ns1/secrets/s1") else {
            panic!()
        };
        assert_eq!(
            (t.namespace.as_str(), t.plural.as_str(), t.name.as_deref()),
            ("ns1", "secrets", Some("s1"))
        );
        let Route::Resource(t) = route("/api/v1/namespaces/ns1") else {
            panic!()
        };
        assert_eq!(
            (t.namespace.as_str(), t.plural.as_str(), t.name.as_deref()),
            ("", "namespaces", Some("ns1"))
        );
        let Route::Resource(t) = route("/apis/integration-operator.io/v1alpha1/namespaces/a/integrations/x/status")
        else {
            panic!()
        };
        assert_eq!(t.subresource, "status");
        let Route::Resource(t) = route("/api/v1/watch/namespaces/a/secrets") else {
            panic!()
        };
        assert!(t.watch_path);
        let Route::Resource(t) = route("/apis/integration-operator.io/v1alpha1/clusterproviders/p") else {
            panic!()
        };
        assert_eq!((t.namespace.as_str(), t.name.as_deref()), ("", Some("p")));
        assert!(matches!(route("/apis/g"), Route::Group(_)));
        assert!(matches!(route("/openapi/v3/apis/g/v1"), Route::OpenApiDoc(p) if p == "apis/g/v1"));
    }
}
