//! The inbound server and Kombo's webhooks, end to end: the real operator
//! (with the chart's RBAC) against the real kube-apiserver, the Kombo
//! simulator delivering signed events as Kombo does, and hostile senders.
//! Polling stays slow here (`revalidateInterval: 1h`), so everything that
//! happens within seconds happened because of a webhook.

use std::time::Duration;

use crate::common::{Cluster, eventually, logs};
use integration_operator::crd::{ClusterProvider, Integration};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use testkit::sim::kombo::{KomboSim, deliver_raw, routes, sign};

/// Canaries: never in a log line, an Event or a status.
const API_KEY: &str = "canary-inbound-kombo-key-7f3a1c";
const WEBHOOK_SECRET: &str = "canary-inbound-webhook-secret-b42e9d";
const PAYLOAD_CANARY: &str = "canary-inbound-payload-org-51c0aa";
const NAME: &str = "acme-kombo";
const OUTPUT: &str = "acme-kombo-credentials";
const WEBHOOK_SECRET_NAME: &str = "kombo-webhook";

/// Re-applies this build's CRDs. The shared control plane also serves
/// other checkouts' test runs, whose older CRDs (without `spec.webhook`)
/// would prune the field; in a single checkout this is a no-op.
async fn fresh_schema(cluster: &Cluster) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt as _;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    for crd in [ClusterProvider::crd(), Integration::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        // Test processes apply at once: a conflict is someone else's apply.
        for _ in 0..10 {
            let applied = crds
                .patch(
                    &name,
                    &PatchParams::apply("integration-operator-tests").force(),
                    &Patch::Apply(&crd),
                )
                .await;
            if applied.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether the ClusterProvider, as served now, has its webhook.
async fn webhook_served(cluster: &Cluster) -> bool {
    let api: Api<ClusterProvider> = Api::all(cluster.client.clone());
    api.get(&cluster.provider_name("kombo"))
        .await
        .is_ok_and(|cp| cp.spec.webhook.is_some())
}

/// How often the receiver has refused `provider` for want of a webhook.
fn no_webhook_refusals(provider: &str) -> usize {
    logs()
        .lines()
        .filter(|l| l.contains(&format!("provider={provider} ")) && l.contains("no webhook is configured here"))
        .count()
}

/// Runs `send` with this build's CRDs served; once more if, in between,
/// another checkout's test run re-applied its older CRD and the receiver
/// saw the ClusterProvider without `spec.webhook` (its log says so). Any
/// other answer is returned as it is.
async fn with_schema<F, Fut>(cluster: &Cluster, mut send: F) -> u16
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let provider = cluster.provider_name("kombo");
    for _ in 0..5 {
        fresh_schema(cluster).await;
        let before = no_webhook_refusals(&provider);
        let status = send().await;
        if status == 404 && no_webhook_refusals(&provider) > before {
            continue;
        }
        return status;
    }
    panic!("the shared control plane kept serving a CRD without spec.webhook")
}

/// Delivers `event` as Kombo does, with this build's CRDs served.
async fn deliver(cluster: &Cluster, sim: &KomboSim, event: &Value) -> u16 {
    with_schema(cluster, || async { sim.deliver(event).await.unwrap() }).await
}

/// Sends `body` with `signature` to `url`, with this build's CRDs served.
async fn raw(cluster: &Cluster, url: &str, body: &[u8], signature: Option<&str>) -> u16 {
    with_schema(cluster, || async {
        deliver_raw(url, body.to_vec(), signature).await.unwrap()
    })
    .await
}

async fn setup() -> (Cluster, KomboSim) {
    let cluster = Cluster::start().await;
    let sim = KomboSim::start().await.expect("simulator starts");
    sim.add_api_key(API_KEY);
    for _ in 0..5 {
        fresh_schema(&cluster).await;
        cluster
            .cluster_provider(
                "kombo",
                json!({
                    "type": "kombo",
                    "baseUrl": sim.base_url(),
                    "revalidateInterval": "1h",
                    "webhook": {"secretRef": {"name": WEBHOOK_SECRET_NAME}},
                }),
            )
            .await;
        if webhook_served(&cluster).await {
            break;
        }
    }
    cluster.input_secret("kombo-api-key", &[("api_key", API_KEY)]).await;
    // In the operator's namespace (this test's, as the chart installs it).
    cluster
        .input_secret(WEBHOOK_SECRET_NAME, &[("webhook_secret", WEBHOOK_SECRET)])
        .await;
    (cluster, sim)
}

fn spec() -> Value {
    json!({
        "provider": "kombo",
        "secretRef": {"name": "kombo-api-key"},
        "connection": {
            "endUserEmail": "it-admin@acme.example",
            "endUserOrganizationName": PAYLOAD_CANARY,
            "integrationCategory": "ATS",
        },
        "target": {"name": OUTPUT},
    })
}

const INBOUND: [&str; 4] = [
    "--inbound-addr",
    "127.0.0.1:0",
    "--inbound-insecure-http",
    "--inbound-rate=50",
];

fn webhook_url(addr: std::net::SocketAddr, cluster: &Cluster) -> String {
    format!("http://{addr}/webhooks/kombo/{}", cluster.provider_name("kombo"))
}

async fn link(sim: &KomboSim) -> String {
    eventually(Duration::from_secs(20), "a connect link", || async {
        sim.links().first().map(|l| l.url.clone())
    })
    .await
}

fn assert_no_canaries(text: &str, what: &str) {
    for canary in [API_KEY, WEBHOOK_SECRET, PAYLOAD_CANARY] {
        assert!(!text.contains(canary), "{what} contains {canary}");
    }
}

#[tokio::test]
async fn a_signed_integration_created_makes_the_integration_ready_at_once() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator_with(&INBOUND).await;
    let url = webhook_url(operator.inbound_addr.expect("inbound server on"), &cluster);
    sim.set_webhook(&url, WEBHOOK_SECRET);
    cluster.integration(NAME, spec()).await;
    let link = link(&sim).await;
    cluster.wait_ready(NAME, "False", Some("AwaitingConnection")).await;

    // The customer finishes the link; Kombo sends integration-created.
    let id = sim.complete_link(&link, "personio").unwrap();
    let event = sim.integration_created_event(&id).unwrap();
    let sent = std::time::Instant::now();
    assert_eq!(deliver(&cluster, &sim, &event).await, 200);
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "Ready only after {:?}",
        sent.elapsed()
    );
    assert_eq!(i.status.as_ref().unwrap().integration_id.as_deref(), Some(id.as_str()));
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(data["integration_id"], id);
    assert_eq!(data["kombo_created_integration_id"], id);

    // The customer's credentials break: integration-state-changed.
    sim.set_integration_state(&id, "INVALID", "COMPLETED");
    let event = sim.integration_state_changed_event(&id).unwrap();
    assert_eq!(deliver(&cluster, &sim, &event).await, 200);
    cluster.wait_ready(NAME, "False", Some("IntegrationInvalid")).await;

    // Deleted in the dashboard: integration-deleted.
    sim.set_integration_state(&id, "ACTIVE", "COMPLETED");
    sim.delete_in_dashboard(&id);
    let origin = i.metadata.uid.clone().unwrap();
    let event = sim.integration_deleted_event(&id, "personio", Some(&origin));
    assert_eq!(deliver(&cluster, &sim, &event).await, 200);
    cluster.wait_ready(NAME, "False", Some("IntegrationNotFound")).await;

    operator.stop().await;
    assert_no_canaries(&logs(), "the logs");
    assert_no_canaries(&cluster.events_text().await, "the Events");
    // The payload canary is the spec's own organization name: only the
    // status and the annotations are the operator's to keep it out of.
    let i = cluster.integrations().get(NAME).await.unwrap();
    let written = json!({"status": i.status, "annotations": i.metadata.annotations}).to_string();
    assert_no_canaries(&written, "the Integration's status and annotations");
}

#[tokio::test]
async fn hostile_deliveries_are_refused_and_change_nothing() {
    let (cluster, sim) = setup().await;
    let inbound = [
        "--inbound-addr",
        "127.0.0.1:0",
        "--inbound-insecure-http",
        "--inbound-rate=5",
    ];
    // A second Kombo ClusterProvider with its own secret, and an
    // Integration of it: a delivery signed for the first cannot reach it.
    cluster
        .cluster_provider(
            "kombo-other",
            json!({"type": "kombo", "baseUrl": sim.base_url(), "revalidateInterval": "1h"}),
        )
        .await;
    let operator = cluster.start_operator_with(&inbound).await;
    let addr = operator.inbound_addr.unwrap();
    let url = webhook_url(addr, &cluster);
    sim.set_webhook(&url, WEBHOOK_SECRET);
    cluster.integration(NAME, spec()).await;
    let mut other = spec();
    other["provider"] = json!("kombo-other");
    other["target"]["name"] = json!("other-credentials");
    let other = cluster.integration("other", other).await;
    let link = eventually(Duration::from_secs(20), "two links", || async {
        let links = sim.links();
        (links.len() == 2).then(|| {
            links
                .into_iter()
                .find(|l| l.request["end_user_origin_id"] != json!(other.metadata.uid))
                .unwrap()
                .url
        })
    })
    .await;
    cluster.wait_ready(NAME, "False", Some("AwaitingConnection")).await;
    let id = sim.complete_link(&link, "personio").unwrap();
    let before = cluster.integrations().get(NAME).await.unwrap();
    let lookups = sim.calls(routes::GET_INTEGRATION);

    let valid = sim.integration_created_event(&id).unwrap();
    let body = serde_json::to_vec(&valid).unwrap();
    let good = sign(WEBHOOK_SECRET.as_bytes(), &body);
    let signed = |v: &Value| {
        let b = serde_json::to_vec(v).unwrap();
        let s = sign(WEBHOOK_SECRET.as_bytes(), &b);
        (b, s)
    };

    fresh_schema(&cluster).await;
    // Unsigned, wrongly signed (another secret; a valid signature of
    // another body; standard base64 with padding).
    assert_eq!(raw(&cluster, &url, &body, None).await, 401);
    let wrong = sign(b"not-the-secret", &body);
    assert_eq!(raw(&cluster, &url, &body, Some(&wrong)).await, 401);
    let (_, other_sig) = signed(&json!({"id": "x", "type": "sync-finished", "data": {}}));
    assert_eq!(raw(&cluster, &url, &body, Some(&other_sig)).await, 401);
    // Malformed JSON, validly signed.
    let junk = b"{\"id\": \"evt_1\", \"type\": ".to_vec();
    let junk_sig = sign(WEBHOOK_SECRET.as_bytes(), &junk);
    assert_eq!(raw(&cluster, &url, &junk, Some(&junk_sig)).await, 400);
    // Oversized.
    let mut big = valid.clone();
    big["data"]["padding"] = json!("x".repeat(70 * 1024));
    let (b, s) = signed(&big);
    assert_eq!(raw(&cluster, &url, &b, Some(&s)).await, 413);
    // An unknown origin id, and the origin id of the other provider's Integration.
    for origin in [json!("nobody-knows-this-origin"), json!(other.metadata.uid)] {
        let mut e = valid.clone();
        e["id"] = json!(format!("evt_origin_{}", origin.as_str().unwrap().len()));
        e["data"]["end_user"]["origin_id"] = origin;
        let (b, s) = signed(&e);
        assert_eq!(raw(&cluster, &url, &b, Some(&s)).await, 404);
    }
    // Signed for the other provider's URL with this provider's secret: it has no webhook.
    let other_url = format!("http://{addr}/webhooks/kombo/{}", cluster.provider_name("kombo-other"));
    assert_eq!(deliver_raw(&other_url, body.clone(), Some(&good)).await.unwrap(), 404);
    // A stale state change (an hour and more old).
    let mut stale = json!({"id": "evt_stale", "type": "integration-state-changed", "data": {
        "integration_tool": "personio", "integration_id": id, "integration_category": "ATS",
        "end_user": {"organization_name": "x", "creator_email": null, "origin_id": null},
        "qa_status": "PASSED", "setup_status": "COMPLETED", "state": "INVALID",
        "updated_at": "2020-01-01T00:00:00Z"}});
    let (b, s) = signed(&stale);
    assert_eq!(raw(&cluster, &url, &b, Some(&s)).await, 400);
    stale["data"]["updated_at"] = json!("2999-01-01T00:00:00Z");
    let (b, s) = signed(&stale);
    assert_eq!(raw(&cluster, &url, &b, Some(&s)).await, 400);
    // A namespace user forges the hand-over annotation (no valid attestation).
    cluster
        .integrations()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "integration-operator.io/provider-reported-id": format!("{id} 00112233445566778899aabbccddeeff"),
                "integration-operator.io/provider-event": "forged"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Nothing changed: still waiting, no lookup of the integration at Kombo,
    // the other Integration untouched.
    let now = cluster.integrations().get(NAME).await.unwrap();
    assert_eq!(
        sim.calls(routes::GET_INTEGRATION),
        lookups,
        "a refused delivery made a Kombo call"
    );
    let ready = |i: &Integration| {
        i.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(ready(&now), ready(&before));
    assert!(now.status.as_ref().unwrap().integration_id.is_none());
    let other_now = cluster.integrations().get("other").await.unwrap();
    assert!(
        other_now
            .metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("integration-operator.io/provider")),
        "the other provider's Integration was annotated"
    );

    // The real delivery works once; its replay is refused.
    fresh_schema(&cluster).await;
    assert_eq!(raw(&cluster, &url, &body, Some(&good)).await, 200);
    assert_eq!(raw(&cluster, &url, &body, Some(&good)).await, 409);
    cluster.wait_ready(NAME, "True", None).await;

    // Rate limit per source: a flood is cut off with 429.
    let mut limited = 0;
    for _ in 0..400 {
        if deliver_raw(&url, b"{}".to_vec(), None).await.unwrap() == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "no 429 in a flood of 400 requests");

    // Counted by endpoint and status, never by the requested path.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let odd = format!("http://{addr}/webhooks/kombo/path-canary-0d9e");
    assert_eq!(deliver_raw(&odd, b"{}".to_vec(), None).await.unwrap(), 404);
    let metrics = reqwest::get(format!("http://{}/metrics", operator.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for code in [200, 401, 404, 409, 413, 429] {
        assert!(
            metrics.contains(&format!(
                "integration_operator_inbound_requests_total{{endpoint=\"kombo\",code=\"{code}\"}}"
            )),
            "no inbound count for {code}:\n{metrics}"
        );
    }
    assert!(!metrics.contains("path-canary-0d9e"), "a path reached a label");

    operator.stop().await;
    let logs = logs();
    assert_no_canaries(&logs, "the logs");
    assert!(!logs.contains(&good), "a signature was logged");
    assert_no_canaries(&cluster.events_text().await, "the Events");
}

#[tokio::test]
async fn a_standby_replica_receives_the_webhook_and_the_leader_acts() {
    let (cluster, sim) = setup().await;
    let mut first = INBOUND.to_vec();
    first.extend([
        "--leader-elect",
        "--instance",
        "replica-a",
        "--lease-duration-seconds",
        "4",
    ]);
    let a = cluster.start_operator_with(&first).await;
    // replica-a holds the Lease before replica-b starts.
    cluster.integration(NAME, spec()).await;
    let link = link(&sim).await;
    cluster.wait_ready(NAME, "False", Some("AwaitingConnection")).await;
    let mut second = INBOUND.to_vec();
    second.extend([
        "--leader-elect",
        "--instance",
        "replica-b",
        "--lease-duration-seconds",
        "4",
    ]);
    let b = cluster.start_operator_with(&second).await;
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), &cluster.operator_namespace());
    let holder = lease
        .get("integration-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("replica-a"));

    // Kombo delivers to the standby (replica-b).
    sim.set_webhook(&webhook_url(b.inbound_addr.unwrap(), &cluster), WEBHOOK_SECRET);
    let id = sim.complete_link(&link, "personio").unwrap();
    let event = sim.integration_created_event(&id).unwrap();
    assert_eq!(deliver(&cluster, &sim, &event).await, 200);
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(i.status.as_ref().unwrap().integration_id.as_deref(), Some(id.as_str()));
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn the_inbound_server_serves_tls_from_files_and_reloads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let make = |cn: &str| {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ])
            .args(["-subj", &format!("/CN={cn}"), "-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    make("first");
    let (cluster, _sim) = setup().await;
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let operator = cluster
        .start_operator_with(&[
            "--inbound-addr",
            "127.0.0.1:0",
            "--inbound-tls-cert",
            &c,
            "--inbound-tls-key",
            &k,
        ])
        .await;
    let addr = operator.inbound_addr.unwrap();
    let url = format!("https://{addr}/webhooks/kombo/{}", cluster.provider_name("kombo"));
    // Unsigned over TLS: the server answers (401), so TLS works.
    assert_eq!(raw(&cluster, &url, b"{}", None).await, 401);
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert!(
        deliver_raw(&url.replace("https://", "http://"), b"{}".to_vec(), None)
            .await
            .is_err()
    );
    let served_cn = || async {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
            ))
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(served_cn().await.contains("first"));
    // cert-manager renews the certificate: served from the next handshake on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    make("second");
    eventually(Duration::from_secs(10), "the renewed certificate served", || async {
        served_cn().await.contains("second").then_some(())
    })
    .await;
    operator.stop().await;
}

/// Starting with an inbound address but neither TLS files nor an explicit
/// plain-HTTP flag fails: plain HTTP is never a silent default.
#[tokio::test]
async fn inbound_without_tls_or_an_explicit_plain_http_flag_does_not_start() {
    use clap::Parser as _;
    use integration_operator::cli::{Cli, Command, Operator};
    let cluster = Cluster::start().await;
    let Command::Run(args) = Cli::parse_from([
        "integration-operator",
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--namespace",
        &cluster.namespace,
        "--inbound-addr",
        "127.0.0.1:0",
    ])
    .command
    else {
        unreachable!()
    };
    let err = Operator::start(cluster.operator_client.clone(), *args)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--inbound-tls-cert"), "{err}");
}

/// An Integration outside the operator's namespaces, and one in a namespace
/// the ClusterProvider does not allow, are never matched: a signed
/// `integration-created` naming their origin id is answered 404 and neither
/// is annotated.
#[tokio::test]
async fn an_origin_id_of_an_integration_elsewhere_is_refused() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator_with(&INBOUND).await;
    let url = webhook_url(operator.inbound_addr.unwrap(), &cluster);
    sim.set_webhook(&url, WEBHOOK_SECRET);
    // Another namespace (not watched by this operator), same ClusterProvider.
    let elsewhere = cluster
        .control_plane()
        .namespace(&cluster.client, "t-inbound-elsewhere")
        .await;
    let mut outside: Integration = serde_json::from_value(json!({
        "apiVersion": "integration-operator.io/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": NAME, "namespace": elsewhere},
        "spec": spec(),
    }))
    .unwrap();
    outside.spec.provider = cluster.provider_name("kombo");
    let outside_api: Api<Integration> = Api::namespaced(cluster.client.clone(), &elsewhere);
    let outside = outside_api
        .create(&kube::api::PostParams::default(), &outside)
        .await
        .unwrap();
    // In this namespace, but the ClusterProvider stops allowing it.
    let here = cluster.integration(NAME, spec()).await;
    fresh_schema(&cluster).await;
    let providers: Api<ClusterProvider> = Api::all(cluster.client.clone());
    providers
        .patch(
            &cluster.provider_name("kombo"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allowedNamespaces": ["someone-else"]}})),
        )
        .await
        .unwrap();
    for (n, origin) in [outside.metadata.uid.clone(), here.metadata.uid.clone()]
        .into_iter()
        .enumerate()
    {
        let event = json!({"id": format!("evt_elsewhere_{n}"), "type": "integration-created", "data": {
            "id": "personio:elsewhere", "tool": "personio", "category": "ATS",
            "end_user": {"organization_name": "x", "creator_email": null, "origin_id": origin}}});
        let status = deliver(&cluster, &sim, &event).await;
        let provider = cluster.provider_name("kombo");
        let said: Vec<String> = logs()
            .lines()
            .filter(|l| l.contains(&format!("provider={provider} ")))
            .map(str::to_string)
            .collect();
        assert_eq!(status, 404, "origin {n}; the receiver said:\n{}", said.join("\n"));
    }
    // Refused for that reason, not for a missing webhook.
    let provider = cluster.provider_name("kombo");
    let refusals = logs()
        .lines()
        .filter(|l| l.contains(&format!("provider={provider} ")) && l.contains("no Integration matches this event"))
        .count();
    assert_eq!(refusals, 2, "{}", logs());
    for i in [
        outside_api.get(NAME).await.unwrap(),
        cluster.integrations().get(NAME).await.unwrap(),
    ] {
        assert!(
            i.metadata
                .annotations
                .unwrap_or_default()
                .keys()
                .all(|k| !k.starts_with("integration-operator.io/provider")),
            "an Integration elsewhere was annotated"
        );
    }
    operator.stop().await;
}
