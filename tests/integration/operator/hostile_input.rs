//! Hostile and careless input: specs, input Secrets, ClusterProviders and
//! provider answers built to break the operator, leak credentials or inject
//! text into logs, Events, status or Secrets. Each is refused with a clear
//! message and has no side effect: no provider call, no Secret written.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{Cluster, eventually, logs};
use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use integration_operator::crd::Integration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
};
use serde_json::json;
use testkit::sim::{Fault, oauth2::OAuth2Sim};

const CLIENT_ID: &str = "client-a";
/// A canary: it must never appear in any log line, Event or status.
const CLIENT_SECRET: &str = "canary-hostile-5d1e8b27";

/// One request a [`Catcher`] received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
}

/// A tiny HTTP server on 127.0.0.1 that records every request and answers
/// with `respond(method, path)`.
struct Catcher {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Catcher {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Catcher {
    async fn start<F>(respond: F) -> Catcher
    where
        F: Fn(&str, &str) -> Response + Send + Sync + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let record = seen.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, _body: Bytes| {
            let record = record.clone();
            let respond = respond.clone();
            async move {
                record.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    headers,
                });
                respond(method.as_str(), uri.path())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Catcher { addr, seen, server }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn json_answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn setup() -> (Cluster, OAuth2Sim) {
    let cluster = Cluster::start().await;
    let sim = OAuth2Sim::start().await.expect("simulator starts");
    sim.add_client(CLIENT_ID, CLIENT_SECRET);
    cluster.oauth2_provider("auth", &sim.token_url(), json!({})).await;
    cluster
        .input_secret("creds", &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .await;
    (cluster, sim)
}

fn cc_spec() -> serde_json::Value {
    json!({
        "provider": "auth",
        "secretRef": {"name": "creds"},
        "clientCredentials": {},
        "target": {"name": "out"},
    })
}

fn ready_message(i: &Integration) -> String {
    i.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Text a person reads: no control characters, no line or paragraph
/// separators, no bidirectional overrides.
fn assert_printable(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n') // lines of the haystack are joined with \n
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(bad.is_empty(), "{what} carries control characters {bad:?}: {text:?}");
}

/// Integrations as raw JSON (specs the typed client could not even express).
fn raw_integrations(cluster: &Cluster) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("integration-operator.io", "v1alpha1", "Integration");
    Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &ApiResource::from_gvk(&gvk))
}

/// Creating this Integration spec is refused at admission with a 422 whose
/// message contains `needle`.
async fn assert_rejected(cluster: &Cluster, name: &str, spec: serde_json::Value, needle: &str) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "integration-operator.io/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": spec,
    }))
    .expect("a Kubernetes object");
    let err = raw_integrations(cluster)
        .create(&PostParams::default(), &obj)
        .await
        .expect_err(&format!("{name} must be rejected at admission"));
    let kube::Error::Api(status) = err else {
        panic!("{name}: expected an API error, got {err}")
    };
    assert_eq!(status.code, 422, "{name}: {}", status.message);
    assert!(
        status.message.contains(needle),
        "{name}: the rejection does not name {needle:?}: {}",
        status.message
    );
}

#[tokio::test]
async fn malformed_and_oversized_specs_are_rejected_at_admission() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    let with = |patch: serde_json::Value| {
        let mut spec = cc_spec();
        for (k, v) in patch.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let long = "a".repeat(100_000);
    let many_labels: serde_json::Map<String, serde_json::Value> =
        (0..1000).map(|n| (format!("l{n}"), json!("v"))).collect();
    let many_config: serde_json::Map<String, serde_json::Value> =
        (0..1000).map(|n| (format!("c{n}"), json!("v"))).collect();
    let cases = [
        (
            "no-secret-ref",
            json!({"provider": "auth", "clientCredentials": {}}),
            "secretRef",
        ),
        (
            "no-flow",
            json!({"provider": "auth", "secretRef": {"name": "creds"}}),
            "exactly one flow block",
        ),
        ("long-provider", with(json!({"provider": long})), "spec.provider"),
        (
            "bad-secret-name",
            with(json!({"secretRef": {"name": "../kube-system/creds"}})),
            "spec.secretRef.name",
        ),
        (
            "newline-secret-name",
            with(json!({"secretRef": {"name": "creds\nX: y"}})),
            "spec.secretRef.name",
        ),
        (
            "bad-target-name",
            with(json!({"target": {"name": "Out Secret"}})),
            "spec.target.name",
        ),
        (
            "many-scopes",
            with(json!({"clientCredentials": {"scopes": vec!["s"; 65]}})),
            "spec.clientCredentials.scopes",
        ),
        (
            "long-scope",
            with(json!({"clientCredentials": {"scopes": [long.clone()]}})),
            "spec.clientCredentials.scopes[0]",
        ),
        (
            "long-audience",
            with(json!({"clientCredentials": {"audience": long.clone()}})),
            "spec.clientCredentials.audience",
        ),
        (
            "many-labels",
            with(json!({"target": {"name": "out", "labels": many_labels}})),
            "spec.target.labels",
        ),
        (
            "long-annotation",
            with(json!({"target": {"name": "out", "annotations": {"a": "x".repeat(300_000)}}})),
            "spec.target.annotations",
        ),
        (
            "long-renew-before",
            with(json!({"refresh": {"renewBefore": "1h".repeat(1000)}})),
            "spec.refresh.renewBefore",
        ),
        (
            "many-element-config",
            json!({"provider": "auth", "secretRef": {"name": "creds"},
                   "elementInstance": {"elementKey": "sr", "configuration": many_config}}),
            "spec.elementInstance.configuration",
        ),
        (
            "path-in-kombo-id",
            json!({"provider": "auth", "secretRef": {"name": "creds"},
                   "connection": {"endUserEmail": "a@example.com", "endUserOrganizationName": "Acme",
                                  "integrationId": "../../connect/create-link"}}),
            "spec.connection.integrationId",
        ),
        (
            "long-kombo-tool",
            json!({"provider": "auth", "secretRef": {"name": "creds"},
                   "connection": {"endUserEmail": "a@example.com", "endUserOrganizationName": "Acme",
                                  "integrationTool": long.clone()}}),
            "spec.connection.integrationTool",
        ),
    ];
    for (name, spec, needle) in cases {
        assert_rejected(&cluster, name, spec, needle).await;
    }
    // Nothing was stored, so nothing was called or written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster
            .integrations()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(sim.token_calls(), 0);
    assert!(cluster.secret_data("out").await.is_none());
    operator.stop().await;
}

#[tokio::test]
async fn an_input_secret_in_another_namespace_cannot_be_referenced() {
    let (cluster, sim) = setup().await;
    // A tempting target: valid credentials in another team's namespace.
    let team_b = format!("{}-b", cluster.namespace);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": team_b}})).unwrap();
    Api::<Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "theirs", "namespace": team_b},
        "stringData": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), &team_b)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let operator = cluster.start_operator().await;
    let manifest = json!({
        "apiVersion": "integration-operator.io/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "cross", "namespace": cluster.namespace},
        "spec": {"provider": cluster.provider_name("auth"), "secretRef": {"name": "theirs", "namespace": team_b},
                 "clientCredentials": {}, "target": {"name": "out"}},
    });

    // kubectl (strict field validation) refuses the field outright.
    let file = std::env::temp_dir().join(format!("cross-{}.json", std::process::id()));
    std::fs::write(&file, manifest.to_string()).unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .await
        .expect("kubectl runs");
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl accepted a secretRef.namespace");
    assert!(
        stderr.contains("unknown field") && stderr.contains("namespace"),
        "{stderr}"
    );

    // A client without strict validation gets the field pruned: the
    // reference can only mean a Secret in the Integration's own namespace.
    let obj: DynamicObject = serde_json::from_value(manifest).unwrap();
    let stored = raw_integrations(&cluster)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
    assert_eq!(stored.data["spec"]["secretRef"], json!({"name": "theirs"}));
    let i = cluster.wait_ready("cross", "False", Some("SecretNotFound")).await;
    assert!(
        ready_message(&i).contains(&format!("\"{}\"", cluster.namespace)),
        "the message names the Integration's namespace: {}",
        ready_message(&i)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.token_calls(), 0, "credentials from another namespace were used");
    assert!(cluster.secret_data("out").await.is_none());
    operator.stop().await;
}

#[tokio::test]
async fn a_provider_that_excludes_the_namespace_or_missing_keys_make_no_call() {
    let (cluster, sim) = setup().await;
    cluster
        .oauth2_provider("elsewhere", &sim.token_url(), json!({"allowedNamespaces": ["team-b"]}))
        .await;
    let operator = cluster.start_operator().await;
    let mut spec = cc_spec();
    spec["provider"] = json!("elsewhere");
    cluster.integration("excluded", spec).await;
    let i = cluster
        .wait_ready("excluded", "False", Some("ProviderNotAllowed"))
        .await;
    assert!(ready_message(&i).contains("allowedNamespaces"), "{}", ready_message(&i));

    // An apiKey Integration whose Secret lacks api_key: named, not called.
    let catcher = Catcher::start(|_, _| json_answer(StatusCode::OK, json!({}))).await;
    cluster
        .oauth2_provider(
            "sr",
            &format!("{}/identity/oauth/token", catcher.url()),
            json!({"type": "smartrecruiters", "baseUrl": format!("{}/", catcher.url())}),
        )
        .await;
    cluster.input_secret("no-key", &[("apikey", "sk-1234567890")]).await;
    cluster
        .integration(
            "missing-key",
            json!({"provider": "sr", "secretRef": {"name": "no-key"}, "apiKey": {}, "target": {"name": "out-2"}}),
        )
        .await;
    let i = cluster
        .wait_ready("missing-key", "False", Some("InvalidInputSecret"))
        .await;
    assert!(ready_message(&i).contains("\"api_key\""), "{}", ready_message(&i));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.token_calls(), 0);
    assert!(catcher.requests().is_empty(), "{:?}", catcher.requests());
    assert!(cluster.secret_data("out").await.is_none());
    assert!(cluster.secret_data("out-2").await.is_none());
    operator.stop().await;
}

#[tokio::test]
async fn input_values_that_would_break_a_header_are_refused_before_any_call() {
    let (cluster, sim) = setup().await;
    let catcher = Catcher::start(|_, _| json_answer(StatusCode::OK, json!({}))).await;
    cluster
        .oauth2_provider(
            "sr",
            &format!("{}/identity/oauth/token", catcher.url()),
            json!({"type": "smartrecruiters", "baseUrl": format!("{}/", catcher.url())}),
        )
        .await;
    let injected_key = "sk-canary-4410\r\nX-Injected: yes";
    cluster.input_secret("crlf-key", &[("api_key", injected_key)]).await;
    cluster
        .input_secret(
            "crlf-secret",
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", "canary-9c1\nX-Injected: yes"),
            ],
        )
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "api-key",
            json!({"provider": "sr", "secretRef": {"name": "crlf-key"}, "apiKey": {}, "target": {"name": "out-1"}}),
        )
        .await;
    let mut spec = cc_spec();
    spec["secretRef"]["name"] = json!("crlf-secret");
    spec["target"]["name"] = json!("out-2");
    cluster.integration("client-secret", spec).await;

    for (name, key) in [("api-key", "api_key"), ("client-secret", "client_secret")] {
        let i = cluster.wait_ready(name, "False", Some("InvalidInputSecret")).await;
        let message = ready_message(&i);
        assert!(
            message.contains(&format!("{key:?}")) && message.contains("control character"),
            "{name}: {message}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        catcher.requests().is_empty(),
        "the API key was sent: {:?}",
        catcher.requests()
    );
    assert_eq!(sim.token_calls(), 0);
    assert!(cluster.secret_data("out-1").await.is_none());
    assert!(cluster.secret_data("out-2").await.is_none());
    for (what, text) in [
        ("logs", logs()),
        ("events", cluster.events_text().await),
        ("status", cluster.integration_yaml("api-key").await),
    ] {
        assert!(!text.contains("sk-canary-4410"), "the API key appeared in {what}");
        assert!(!text.contains("canary-9c1"), "the client secret appeared in {what}");
    }
    operator.stop().await;
}

#[tokio::test]
async fn unicode_and_very_long_input_values_work_unchanged() {
    let (cluster, sim) = setup().await;
    let unicode_secret = "sécrét-ключ-秘密-🔑:%+&=";
    // Just under the 64 KiB input value limit.
    let long_secret = "L".repeat(60_000);
    sim.add_client("клиент-🔑", unicode_secret);
    sim.add_client("long-client", &long_secret);
    cluster
        .input_secret(
            "unicode",
            &[("client_id", "клиент-🔑"), ("client_secret", unicode_secret)],
        )
        .await;
    cluster
        .input_secret("long", &[("client_id", "long-client"), ("client_secret", &long_secret)])
        .await;
    // A 60 KB secret is too big for a header: the post method carries it.
    cluster
        .oauth2_provider(
            "auth-post",
            &sim.token_url(),
            json!({"clientAuthMethod": "client_secret_post"}),
        )
        .await;
    let operator = cluster.start_operator().await;
    let mut spec = cc_spec();
    spec["secretRef"]["name"] = json!("unicode");
    spec["target"]["name"] = json!("out-unicode");
    cluster.integration("unicode", spec).await;
    let mut spec = cc_spec();
    spec["provider"] = json!("auth-post");
    spec["secretRef"]["name"] = json!("long");
    spec["target"]["name"] = json!("out-long");
    cluster.integration("long", spec).await;

    for (name, out, client) in [
        ("unicode", "out-unicode", "клиент-🔑"),
        ("long", "out-long", "long-client"),
    ] {
        cluster.wait_ready(name, "True", None).await;
        let token = cluster.secret_data(out).await.unwrap()["access_token"].clone();
        assert_eq!(sim.token_client(&token).as_deref(), Some(client), "{name}");
    }
    operator.stop().await;
}

#[tokio::test]
async fn endpoints_on_plain_http_or_private_addresses_are_refused_unless_allowed() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    let http_loopback = sim.token_url(); // http://127.0.0.1:port/oauth/token
    let https_loopback = http_loopback.replacen("http://", "https://", 1);
    let cases = [
        (
            "plain-http",
            http_loopback.clone(),
            json!({"allowInsecureHttp": false}),
            "allowInsecureHttp",
        ),
        (
            "loopback",
            https_loopback,
            json!({"allowPrivateAddresses": false}),
            "allowPrivateAddresses",
        ),
        (
            "metadata",
            "https://169.254.169.254/latest/meta-data".to_string(),
            json!({"allowPrivateAddresses": false}),
            "allowPrivateAddresses",
        ),
        (
            "mapped-v6",
            "https://[::ffff:10.0.0.1]/token".to_string(),
            json!({"allowPrivateAddresses": false}),
            "allowPrivateAddresses",
        ),
        (
            "nat64",
            "https://[64:ff9b::a9fe:a9fe]/token".to_string(),
            json!({"allowPrivateAddresses": false}),
            "allowPrivateAddresses",
        ),
        (
            "zero",
            "https://0.0.0.0/token".to_string(),
            json!({"allowPrivateAddresses": false}),
            "allowPrivateAddresses",
        ),
        (
            "userinfo",
            "https://user:pw@auth.example.com/token".to_string(),
            json!({}),
            "must not carry credentials",
        ),
        (
            "file",
            "file:///etc/passwd".to_string(),
            json!({}),
            "unsupported URL scheme",
        ),
    ];
    for (n, (name, url, extra, needle)) in cases.iter().enumerate() {
        cluster.oauth2_provider(name, url, extra.clone()).await;
        let mut spec = cc_spec();
        spec["provider"] = json!(name);
        spec["target"]["name"] = json!(format!("out-{n}"));
        cluster.integration(name, spec).await;
        let i = cluster.wait_ready(name, "False", Some("InvalidProvider")).await;
        assert!(ready_message(&i).contains(needle), "{name}: {}", ready_message(&i));
        assert!(!ready_message(&i).contains("pw@"), "{name}: {}", ready_message(&i));
    }
    assert_eq!(sim.token_calls(), 0, "a refused endpoint was called");
    for n in 0..cases.len() {
        assert!(cluster.secret_data(&format!("out-{n}")).await.is_none());
    }
    // Allowing both on the ClusterProvider makes the same endpoint usable.
    cluster.oauth2_provider("plain-http", &http_loopback, json!({})).await;
    cluster.wait_ready("plain-http", "True", None).await;
    operator.stop().await;
}

#[tokio::test]
async fn durations_too_long_to_schedule_are_refused_and_the_operator_keeps_working() {
    let (cluster, sim) = setup().await;
    sim.set_token_lifetime(None);
    cluster
        .oauth2_provider("forever", &sim.token_url(), json!({"defaultTokenLifetime": "20000h"}))
        .await;
    let operator = cluster.start_operator().await;
    let mut spec = cc_spec();
    spec["provider"] = json!("forever");
    spec["target"]["name"] = json!("out-forever");
    cluster.integration("forever", spec).await;
    let i = cluster.wait_ready("forever", "False", Some("InvalidProvider")).await;
    assert!(
        ready_message(&i).contains("defaultTokenLifetime"),
        "{}",
        ready_message(&i)
    );
    assert_eq!(sim.token_calls(), 0);
    // The controller is still alive and serving other Integrations.
    cluster.integration("fine", cc_spec()).await;
    cluster.wait_ready("fine", "True", None).await;
    operator.stop().await;
}

/// The token endpoint answers with a redirect to another host: the
/// operator must not follow it, so the other host never sees credentials.
#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    let cluster = Cluster::start().await;
    cluster
        .input_secret("creds", &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .await;
    let thief = Catcher::start(|_, _| {
        json_answer(
            StatusCode::OK,
            json!({"access_token": "stolen-token", "token_type": "Bearer", "expires_in": 3600}),
        )
    })
    .await;
    let operator = cluster.start_operator().await;
    for code in [302u16, 307, 308] {
        let location = format!("{}/steal", thief.url());
        let redirector = Catcher::start(move |_, _| {
            (
                StatusCode::from_u16(code).unwrap(),
                [("location", location.clone())],
                "moved",
            )
                .into_response()
        })
        .await;
        let name = format!("redirect-{code}");
        cluster
            .oauth2_provider(&name, &format!("{}/oauth/token", redirector.url()), json!({}))
            .await;
        let mut spec = cc_spec();
        spec["provider"] = json!(name);
        spec["target"]["name"] = json!(format!("out-{code}"));
        cluster.integration(&name, spec).await;
        let i = cluster.wait_ready(&name, "False", Some("ProviderMisconfigured")).await;
        assert!(ready_message(&i).contains("redirect"), "{}", ready_message(&i));
        let asked = redirector.requests();
        assert!(
            asked.first().is_some_and(|r| r.headers.contains_key("authorization")),
            "the configured token endpoint got the credentials: {asked:?}"
        );
        assert!(cluster.secret_data(&format!("out-{code}")).await.is_none());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        thief.requests().is_empty(),
        "credentials followed a redirect: {:?}",
        thief
            .requests()
            .iter()
            .map(|s| (&s.method, &s.path))
            .collect::<Vec<_>>()
    );
    operator.stop().await;
}

#[tokio::test]
async fn provider_text_built_to_inject_into_logs_events_or_status_is_neutralised() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    let description = format!(
        "bad\r\nINJECTED-LINE level=error secret={CLIENT_SECRET} \u{1b}[31mred\u{1b}[0m \u{2028}SEPARATED \u{202E}desrever"
    );
    sim.fail_next(
        "token",
        1000,
        Fault::Status {
            code: 400,
            body: Some(
                json!({"error": "invalid_request\nINJECTED-CODE", "error_description": description}).to_string(),
            ),
            retry_after: None,
        },
    );
    cluster.integration("api", cc_spec()).await;
    let i = cluster
        .wait_ready("api", "False", Some("ProviderRejectedRequest"))
        .await;
    let message = ready_message(&i);
    assert!(message.contains("bad"), "the provider's text is kept: {message}");
    // Let the Warning Event be written.
    eventually(Duration::from_secs(10), "a Warning Event", || async {
        cluster
            .events_text()
            .await
            .contains("ProviderRejectedRequest")
            .then_some(())
    })
    .await;
    let events = cluster.events_text().await;
    for (what, text) in [("status", message.as_str()), ("events", events.as_str())] {
        assert_printable(what, text);
        assert!(!text.contains(CLIENT_SECRET), "the client secret appeared in {what}");
    }
    let logs = logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("INJECTED") || l.starts_with("SEPARATED")),
        "a provider's text started a log line of its own"
    );
    assert!(!logs.contains(CLIENT_SECRET), "the client secret appeared in the logs");
    assert!(!logs.contains('\u{1b}'), "an ANSI escape reached the logs");
    assert!(cluster.secret_data("out").await.is_none());
    operator.stop().await;
}

/// A token endpoint that answers with JSON that is not the expected object
/// — a bare token string, an array, an error page with a token in it —
/// must not have its content quoted into the condition, the Events or the
/// log (the JSON parser's error text quotes the offending value).
#[tokio::test]
async fn answers_that_are_not_the_expected_object_are_described_never_quoted() {
    const BARE: &str = "canary-bare-token-0c7e4a19";
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    let cases = [
        ("bare-string", 200, json!(BARE).to_string(), "MalformedResponse"),
        ("array", 200, json!([BARE]).to_string(), "MalformedResponse"),
        (
            "wrong-type",
            200,
            json!({"access_token": [BARE]}).to_string(),
            "MalformedResponse",
        ),
        ("error-page", 502, format!("<html>{BARE}</html>"), "ProviderUnavailable"),
        ("bare-error", 400, json!(BARE).to_string(), "ProviderRejectedRequest"),
    ];
    for (name, code, body, reason) in cases {
        sim.clear_faults();
        sim.fail_next(
            "token",
            1000,
            Fault::Status {
                code,
                body: Some(body),
                retry_after: None,
            },
        );
        let mut spec = cc_spec();
        spec["target"]["name"] = json!(format!("out-{name}"));
        cluster.integration(name, spec).await;
        let i = cluster.wait_ready(name, "False", Some(reason)).await;
        let message = ready_message(&i);
        assert!(
            !message.contains(BARE),
            "{name}: the answer reached the status: {message}"
        );
        // Every message names the ClusterProvider and the step.
        assert!(
            message.contains("ClusterProvider auth") && message.contains("client-credentials token"),
            "{name}: {message}"
        );
        eventually(Duration::from_secs(10), "a Warning Event", || async {
            (cluster.events_with_reason(reason).await >= 1).then_some(())
        })
        .await;
    }
    let events = cluster.events_text().await;
    assert!(!events.contains(BARE), "the answer reached an Event");
    assert!(!logs().contains(BARE), "the answer reached the log");
    operator.stop().await;
}

#[tokio::test]
async fn tokens_that_would_break_a_header_or_huge_answers_are_never_written() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    let huge = json!({"access_token": "t".repeat(2 * 1024 * 1024), "token_type": "Bearer"}).to_string();
    let cases = [
        (
            "newline-token",
            json!({"access_token": "tok\r\nX-Injected: yes", "token_type": "Bearer"}).to_string(),
        ),
        (
            "space-token",
            json!({"access_token": "tok en", "token_type": "Bearer"}).to_string(),
        ),
        (
            "newline-type",
            json!({"access_token": "tok", "token_type": "Bearer\nX-Injected: yes"}).to_string(),
        ),
        ("huge", huge),
    ];
    for (name, body) in cases {
        sim.clear_faults();
        sim.fail_next(
            "token",
            1000,
            Fault::Status {
                code: 200,
                body: Some(body),
                retry_after: None,
            },
        );
        let mut spec = cc_spec();
        spec["target"]["name"] = json!(format!("out-{name}"));
        cluster.integration(name, spec).await;
        let i = cluster.wait_ready(name, "False", Some("MalformedResponse")).await;
        assert_printable(name, &ready_message(&i));
        assert!(
            cluster.secret_data(&format!("out-{name}")).await.is_none(),
            "{name}: the answer was written"
        );
    }
    // Extra fields in an answer never become Secret keys.
    sim.clear_faults();
    sim.fail_next(
        "token",
        1000,
        Fault::Status {
            code: 200,
            body: Some(
                json!({"access_token": "tok-extra", "token_type": "Bearer", "expires_in": 3600,
                       "../evil": "x", "authorization\n": "y", "client_secret": "z"})
                .to_string(),
            ),
            retry_after: None,
        },
    );
    let mut spec = cc_spec();
    spec["target"]["name"] = json!("out-extra");
    cluster.integration("extra", spec).await;
    cluster.wait_ready("extra", "True", None).await;
    let keys: Vec<String> = cluster.secret_data("out-extra").await.unwrap().into_keys().collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "authorization",
            "base_url",
            "expires_at",
            "header_name",
            "header_value",
            "token_type"
        ]
    );
    operator.stop().await;
}
