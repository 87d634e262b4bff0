//! A thin fault-injecting, counting proxy in front of the real
//! kube-apiserver.
//!
//! The operator under test talks to the API server through it (plain HTTP
//! on 127.0.0.1; the proxy speaks TLS to the apiserver and passes the
//! operator's own bearer token through, so the real authenticator and
//! authorizer decide every request). It adds only what a real cluster does
//! not give a test on demand:
//!
//! - [`Faults`]: answer the next N matching requests with a chosen status
//!   (409, 410, 429 with Retry-After, 5xx), end every open watch at once,
//!   add latency to every request;
//! - [`Counters`]: requests by (verb, resource) as the operator sent them,
//!   the same split as the apiserver's `apiserver_request_total`, but for
//!   this one client only (the test's own admin requests go around it).
//!
//! Everything else — storage, validation, admission, watch semantics,
//! resource versions — is the real apiserver's.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use tokio::sync::{Notify, oneshot};

/// A running proxy; stops when dropped.
pub struct ApiProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: Faults,
    counters: Counters,
    /// Requests the apiserver refused, by ("<verb> <status>", resource).
    refusals: Counters,
    /// Reads of single objects, by (resource, name).
    reads: Counters,
}

impl ApiProxy {
    /// Starts a proxy to the API server `config` points at, trusting its CA.
    /// `config`'s own credentials are not used: each request carries its own.
    pub async fn start(config: &kube::Config) -> anyhow::Result<ApiProxy> {
        let mut http = reqwest::Client::builder()
            .no_proxy()
            // Watches stay open for minutes; only connecting is bounded.
            .connect_timeout(Duration::from_secs(5));
        for der in config.root_cert.iter().flatten() {
            http = http.add_root_certificate(reqwest::Certificate::from_der(der).context("the cluster's CA")?);
        }
        let upstream = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let shared = Arc::new(Shared {
            upstream,
            http: http.build()?,
            faults: Faults::default(),
            counters: Counters::default(),
            refusals: Counters::default(),
            reads: Counters::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(crate::nodelay(listener), app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(ApiProxy {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// The proxy's URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    pub fn counters(&self) -> Counters {
        self.shared.counters.clone()
    }

    /// The requests the apiserver itself answered with 4xx/5xx, by
    /// (`"<verb> <status>"`, resource): conflicts, mostly (injected faults
    /// are not counted here).
    pub fn refusals(&self) -> Counters {
        self.shared.refusals.clone()
    }

    /// Reads of single objects (GET by name), by (resource, name): which
    /// objects were read, where [`Self::counters`] says how many.
    pub fn reads(&self) -> Counters {
        self.shared.reads.clone()
    }

    /// `kubeconfig` with its cluster's server replaced by this proxy (and
    /// no CA: the proxy serves plain HTTP on 127.0.0.1).
    pub fn kubeconfig(&self, kubeconfig: &kube::config::Kubeconfig) -> kube::config::Kubeconfig {
        let mut kubeconfig = kubeconfig.clone();
        for cluster in &mut kubeconfig.clusters {
            if let Some(c) = cluster.cluster.as_mut() {
                c.server = Some(self.url());
                c.certificate_authority = None;
                c.certificate_authority_data = None;
            }
        }
        kubeconfig
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.shared.faults.drop_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "content-length",
];

async fn forward(
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
    let path = uri.path();
    let query = uri.query().unwrap_or_default();
    let classified = classify(&method, path, query);
    if let Some((verb, resource)) = &classified {
        shared.counters.record(verb, resource);
        if *verb == "get" {
            let name = path
                .rsplit('/')
                .nth(usize::from(resource.contains('/')))
                .unwrap_or_default();
            shared.reads.record(resource, name);
        }
    }
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);
    match shared.faults.take(&method, target) {
        Some(Injected::Status { status, retry_after }) => return injected(status, retry_after),
        Some(Injected::WatchExpired) => return watch_expired(),
        None => {}
    }
    // Taken before the request is sent: a drop asked for while the
    // apiserver is still answering ends this watch too.
    let drops = shared.faults.drops.load(Ordering::SeqCst);
    let dropped = shared.faults.drop.clone().notified_owned();
    let url = format!(
        "{}{}",
        shared.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = shared.http.request(method, url).body(body);
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            // The apiserver is down (a test restarted it): what a client
            // sees from a load balancer in front of a stopped apiserver.
            let message = format!("the API server did not answer: {}", e.without_url());
            return (StatusCode::BAD_GATEWAY, message).into_response();
        }
    };
    if let Some((verb, resource)) = &classified
        && (answer.status().is_client_error() || answer.status().is_server_error())
    {
        shared
            .refusals
            .record(&format!("{verb} {}", answer.status().as_u16()), resource);
    }
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    let faults = shared.faults.clone();
    let stream = answer.bytes_stream().take_until(async move {
        if faults.drops.load(Ordering::SeqCst) != drops {
            return;
        }
        dropped.await
    });
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn injected(status: u16, retry_after: Option<u64>) -> Response {
    let reason = match status {
        409 => "Conflict",
        410 => "Expired",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("injected fault: HTTP {status}"),
        "reason": reason,
        "code": status,
    });
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

/// What the apiserver answers a watch resumed from a compacted resource
/// version: HTTP 200 and one ERROR event carrying 410 Expired (not an HTTP
/// 410, which clients treat as a failed start and retry as it was).
fn watch_expired() -> Response {
    let event = serde_json::json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version (injected)",
            "reason": "Expired",
            "code": 410,
        },
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!("{event}\n"),
    )
        .into_response()
}

/// The (verb, resource) of a resource request, as the apiserver's
/// `apiserver_request_total` names them (`resource/subresource` joined);
/// `None` for discovery and other non-resource paths.
pub fn classify(method: &Method, path: &str, query: &str) -> Option<(&'static str, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    Some((verb, resource))
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
    answer: Injected,
}

/// An answer given instead of the apiserver's.
#[derive(Clone, Copy, Debug)]
enum Injected {
    Status { status: u16, retry_after: Option<u64> },
    WatchExpired,
}

impl Faults {
    /// The next `count` requests whose path and query contain
    /// `path_contains` (and, if given, with this method) are answered with
    /// `status` instead of reaching the apiserver. `…/secrets?` matches the
    /// list and watch requests of Secrets, not reads of one Secret.
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
            answer: Injected::Status {
                status,
                retry_after: retry_after_secs,
            },
        });
    }

    /// The next `count` watch requests whose path and query contain
    /// `path_contains` are told their resource version is gone, as the
    /// apiserver tells a watch resumed after etcd compacted past it: the
    /// watcher must list again.
    pub fn expire_next_watches(&self, path_contains: &str, count: usize) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).push(FaultRule {
            method: Some(Method::GET),
            path_contains: path_contains.to_string(),
            left: count,
            answer: Injected::WatchExpired,
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

    fn take(&self, method: &Method, target: &str) -> Option<Injected> {
        let is_watch = target.contains("watch=true") || target.contains("watch=1");
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let i = rules.iter().position(|r| {
            r.left > 0
                && r.method.as_ref().is_none_or(|m| m == method)
                && target.contains(&r.path_contains)
                && (is_watch || !matches!(r.answer, Injected::WatchExpired))
        })?;
        rules[i].left -= 1;
        let hit = rules[i].answer;
        if rules[i].left == 0 {
            rules.remove(i);
        }
        Some(hit)
    }
}

/// Requests sent, by (verb, resource); cheap to clone.
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
            .filter(|((verb, _), _)| is_write(verb))
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes to one resource (e.g. `secrets`, `integrations/status`).
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((verb, r), _)| r == resource && is_write(verb))
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

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_the_apiserver_counts_them() {
        let c = |m: Method, p: &str, q: &str| classify(&m, p, q).map(|(v, r)| format!("{v} {r}"));
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/secrets/s", ""),
            Some("get secrets".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/secrets", "watch=true&x=1"),
            Some("watch secrets".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/secrets", "labelSelector=x"),
            Some("list secrets".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a", ""),
            Some("get namespaces".into())
        );
        assert_eq!(c(Method::GET, "/api/v1/namespaces", ""), Some("list namespaces".into()));
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/integration-operator.io/v1alpha1/namespaces/a/integrations/i/status",
                ""
            ),
            Some("patch integrations/status".into())
        );
        assert_eq!(
            c(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events", ""),
            Some("create events".into())
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/a/secrets/s", ""),
            Some("delete secrets".into())
        );
        assert_eq!(c(Method::GET, "/apis/integration-operator.io/v1alpha1", ""), None);
        assert_eq!(c(Method::GET, "/version", ""), None);
    }
}
