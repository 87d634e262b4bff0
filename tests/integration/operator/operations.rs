//! Running the operator as a platform engineer would: the real binary as two
//! replicas with leader election (kill -9 the leader, the other takes over),
//! and the metrics and health endpoints. Against the real kube-apiserver
//! (testkit's control plane) and the OAuth 2.0 simulator.

use std::{process::Stdio, time::Duration};

use crate::common::{Cluster, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use testkit::sim::oauth2::OAuth2Sim;

const SECRET: &str = "ops-canary-secret-81c2aa";

async fn setup(lifetime: u64) -> (Cluster, OAuth2Sim) {
    let cluster = Cluster::start().await;
    let sim = OAuth2Sim::start().await.unwrap();
    sim.add_client("client-a", SECRET);
    sim.set_token_lifetime(Some(lifetime));
    cluster.oauth2_provider("auth", &sim.token_url(), json!({})).await;
    cluster
        .input_secret("creds", &[("client_id", "client-a"), ("client_secret", SECRET)])
        .await;
    (cluster, sim)
}

fn spec() -> serde_json::Value {
    json!({"provider": "auth", "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": "out"}})
}

/// One replica of the real operator binary.
struct Replica {
    name: &'static str,
    child: tokio::process::Child,
}

impl Replica {
    fn start(cluster: &Cluster, name: &'static str) -> Replica {
        Replica::start_as(cluster, name, cluster.operator_kubeconfig(), cluster.operator_env())
    }

    /// A replica with another identity (`kubeconfig`) and environment.
    fn start_as(
        cluster: &Cluster,
        name: &'static str,
        kubeconfig: &std::path::Path,
        env: Vec<(&'static str, String)>,
    ) -> Replica {
        let _ = cluster;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_integration-operator"))
            .args([
                "run",
                "--leader-elect",
                "--lease-duration-seconds",
                "3",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(["--retry-base", "200ms", "--retry-max", "2s"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .envs(env)
            .env("POD_NAME", name)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(std::env::temp_dir().join(format!("{name}.log")))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .kill_on_drop(true)
            .spawn()
            .expect("the operator binary starts");
        Replica { name, child }
    }

    /// SIGKILL: no chance to release the Lease.
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn holder(cluster: &Cluster) -> Option<String> {
    holder_of(cluster, "integration-operator").await
}

async fn holder_of(cluster: &Cluster, lease: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.operator_namespace());
    leases.get_opt(lease).await.ok()??.spec?.holder_identity
}

#[tokio::test]
async fn two_replicas_exchange_once_and_the_standby_takes_over_when_the_leader_dies() {
    let (cluster, sim) = setup(3600).await;
    let a = Replica::start(&cluster, "replica-a");
    let b = Replica::start(&cluster, "replica-b");
    let leader = eventually(Duration::from_secs(20), "a Lease holder", || holder(&cluster)).await;
    cluster.integration("api", spec()).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    // Both replicas are up, only one reconciles: one exchange, not two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.token_calls(), 1, "both replicas exchanged credentials");

    let (dead, survivor) = if leader == a.name { (a, b) } else { (b, a) };
    let survivor_name = survivor.name;
    dead.kill().await;
    let killed_at = jiff::Timestamp::now();
    let lease = eventually(Duration::from_secs(20), "the standby to take the Lease", || async {
        let lease = Api::<Lease>::namespaced(cluster.client.clone(), &cluster.operator_namespace())
            .get("integration-operator")
            .await
            .ok()?;
        let spec = lease.spec?;
        (spec.holder_identity.as_deref() == Some(survivor_name)).then_some(spec)
    })
    .await;
    // The gap with no working leader: from the kill to the new holder's
    // first renewal (its acquisition), as the Lease records it. A dead
    // leader's Lease must expire first (3 s after its last renewal, at most
    // 3 s after the kill); kube-lease-manager then waits a random 0.1-1 s
    // before taking an expired Lease, to avoid collisions.
    let acquired = lease
        .acquire_time
        .or(lease.renew_time)
        .expect("the new holder's acquire time")
        .0;
    let gap = acquired.duration_since(killed_at);
    assert!(
        gap <= jiff::SignedDuration::from_millis(3000 + 1000 + 500),
        "no leader for {gap:#} after the kill: more than the lease duration (3 s) plus the lease manager's 1 s collision wait"
    );
    // The new leader found the credentials valid: no exchange at takeover.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.token_calls(), 1, "the new leader exchanged valid credentials again");
    // The new leader does the work: rotate the input and watch it re-exchange.
    sim.add_client("client-b", "rotated-ops-secret");
    cluster
        .patch_secret_strings(
            "creds",
            json!({"client_id": "client-b", "client_secret": "rotated-ops-secret"}),
        )
        .await;
    eventually(Duration::from_secs(20), "the new leader to re-exchange", || async {
        let token = cluster.secret_data("out").await?["access_token"].clone();
        (sim.token_client(&token).as_deref() == Some("client-b")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sim.token_calls(),
        2,
        "one exchange before the handover and one after the rotation"
    );
    survivor.kill().await;
}

#[tokio::test]
async fn metrics_and_health_endpoints_report_what_happened() {
    let (cluster, _sim) = setup(3600).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", spec()).await;
    let ready = cluster.wait_ready("api", "True", None).await;
    let base = format!("http://{}", operator.metrics_addr);
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let metrics = eventually(Duration::from_secs(5), "exchange metrics", || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            // The Ready count comes from the cache, which sees the status
            // write a moment after the exchange is counted.
            (text.contains("integration_operator_exchanges_total{")
                && text.contains(r#"integration_operator_integrations{status="True"} 1"#))
            .then_some(text)
        }
    })
    .await;
    let provider = cluster.provider_name("auth");
    for series in [
        format!(
            r#"integration_operator_exchanges_total{{provider="{provider}",flow="clientCredentials",outcome="success"}} 1"#
        ),
        r#"integration_operator_reconciles_total{result="success"}"#.to_string(),
        format!(r#"integration_operator_provider_requests_total{{provider="{provider}",outcome="answered"}} 1"#),
        r#"integration_operator_integrations{status="True"} 1"#.to_string(),
        "integration_operator_reconcile_duration_seconds_count".to_string(),
        "integration_operator_provider_request_duration_seconds_bucket".to_string(),
        "integration_operator_secret_writes_total 1".to_string(),
    ] {
        assert!(metrics.contains(&series), "missing {series} in\n{metrics}");
    }
    // The expiry series matches the status, so an alert can fire before an outage.
    let expires: jiff::Timestamp = ready.status.unwrap().expires_at.unwrap().parse().unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("integration_operator_credentials_expiry_timestamp_seconds{"))
        .expect("an expiry series");
    assert!(
        line.contains(&format!(r#"namespace="{}""#, cluster.namespace)) && line.contains(r#"name="api""#),
        "{line}"
    );
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((value - expires.as_second() as f64).abs() < 1.0, "{line} vs {expires}");
    assert!(!metrics.contains(SECRET));
    operator.stop().await;
}

#[tokio::test]
async fn with_watch_namespaces_only_those_namespaces_are_managed() {
    let (cluster, sim) = setup(3600).await;
    let team_b_name = format!("{}-b", cluster.namespace);
    let other: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": team_b_name}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client.clone())
        .create(&Default::default(), &other)
        .await
        .unwrap();
    // The harness starts the operator with `--watch-namespaces <this test's namespace>`.
    let operator = cluster.start_operator().await;
    cluster.integration("api", spec()).await;
    cluster.wait_ready("api", "True", None).await;
    let elsewhere: integration_operator::crd::Integration = serde_json::from_value(json!({
        "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
        "metadata": {"name": "ignored", "namespace": team_b_name},
        "spec": spec(),
    }))
    .unwrap();
    let team_b: Api<integration_operator::crd::Integration> = Api::namespaced(cluster.client.clone(), &team_b_name);
    team_b.create(&Default::default(), &elsewhere).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        team_b.get("ignored").await.unwrap().status.is_none(),
        "an unwatched namespace was reconciled"
    );
    assert_eq!(sim.token_calls(), 1);
    operator.stop().await;
}

/// A kubeconfig of a ServiceAccount with the chart's RBAC for `watch`
/// (cluster-wide when empty), named `fullname`, with a TokenRequest token:
/// the identity a chart install with those values gives the operator.
async fn chart_identity(cluster: &Cluster, fullname: &str, watch: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let cp = cluster.control_plane();
    let sa = cp
        .install_chart_rbac(&cluster.client, &cluster.namespace, fullname, watch)
        .await
        .expect("the chart's RBAC installed");
    let token = cp.service_account_token(&cluster.client, &cluster.namespace, &sa).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_yaml::to_string(&cp.token_kubeconfig(&token)).unwrap(),
    )
    .unwrap();
    (dir, kubeconfig)
}

/// Several active operators, each owning a shard of the namespaces
/// (`--shard INDEX/COUNT`, docs/scaling.md): every Integration is exchanged
/// once, by the shard that owns its namespace, each shard elects its own
/// leader, and a shard whose leader dies is taken over by its standby
/// while the other shard goes on.
#[tokio::test]
async fn shards_split_the_namespaces_each_exchanges_its_own_once_and_a_shards_standby_takes_over() {
    use integration_operator::controller::shard::shard_of;
    use k8s_openapi::api::core::v1::Event;

    let (cluster, sim) = setup(3600).await;
    let cp = cluster.control_plane();
    // Namespaces until both shards own at least two (the hash decides).
    let mut namespaces: Vec<String> = Vec::new();
    while (0..2).any(|s| namespaces.iter().filter(|n| shard_of(n, 2) == s).count() < 2) {
        namespaces.push(cp.namespace(&cluster.client, "t-shard").await);
    }
    // The chart's RBAC for exactly these namespaces, and a token of its
    // ServiceAccount: the shards run with the least privilege a
    // watchNamespaces install gives.
    let watched: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let (_dir, kubeconfig) = chart_identity(&cluster, &format!("io-{}-shards", cluster.namespace), &watched).await;
    let env = |shard: &str| {
        vec![
            ("POD_NAMESPACE", cluster.namespace.clone()),
            ("WATCH_NAMESPACES", namespaces.join(",")),
            ("SHARD", shard.to_string()),
        ]
    };
    let mut shard_spec = spec();
    shard_spec["provider"] = json!(cluster.provider_name("auth"));
    let integration = |ns: &str, name: &str| -> integration_operator::crd::Integration {
        let mut spec = shard_spec.clone();
        spec["target"]["name"] = json!(format!("{name}-out"));
        serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap()
    };
    for ns in &namespaces {
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds", "namespace": ns},
            "stringData": {"client_id": "client-a", "client_secret": SECRET},
        }))
        .unwrap();
        Api::namespaced(cluster.client.clone(), ns)
            .create(&Default::default(), &secret)
            .await
            .unwrap();
        Api::namespaced(cluster.client.clone(), ns)
            .create(&Default::default(), &integration(ns, "api"))
            .await
            .unwrap();
    }

    let zero_a = Replica::start_as(&cluster, "shard-0-a", &kubeconfig, env("0/2"));
    let one = Replica::start_as(&cluster, "shard-1", &kubeconfig, env("1/2"));
    let all_ready = |name: &'static str| {
        let (client, namespaces) = (cluster.client.clone(), namespaces.clone());
        async move {
            for ns in &namespaces {
                let api: Api<integration_operator::crd::Integration> = Api::namespaced(client.clone(), ns);
                let ready = api
                    .get_opt(name)
                    .await
                    .ok()??
                    .status?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if !ready {
                    return None;
                }
            }
            Some(())
        }
    };
    eventually(Duration::from_secs(60), "every namespace's Integration Ready", || {
        all_ready("api")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.token_calls(),
        namespaces.len() as u64,
        "each Integration is exchanged once, by one shard"
    );
    // Each Integration was issued by the shard that owns its namespace:
    // its Event names the replica (reportingInstance).
    for ns in &namespaces {
        let events: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
        let issued: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Issued"))
            .filter_map(|e| e.reporting_instance)
            .collect();
        let owner = if shard_of(ns, 2) == 0 { "shard-0-a" } else { "shard-1" };
        assert_eq!(issued, [owner], "{ns}: issued by {issued:?}, owned by {owner}");
    }
    // Each shard has its own Lease and leader.
    assert_eq!(
        holder_of(&cluster, "integration-operator-shard-0-of-2")
            .await
            .as_deref(),
        Some("shard-0-a")
    );
    assert_eq!(
        holder_of(&cluster, "integration-operator-shard-1-of-2")
            .await
            .as_deref(),
        Some("shard-1")
    );

    // Shard 0's leader dies; its standby takes over, shard 1 goes on.
    let zero_b = Replica::start_as(&cluster, "shard-0-b", &kubeconfig, env("0/2"));
    zero_a.kill().await;
    eventually(Duration::from_secs(30), "shard 0's standby to lead", || async {
        (holder_of(&cluster, "integration-operator-shard-0-of-2")
            .await
            .as_deref()
            == Some("shard-0-b"))
        .then_some(())
    })
    .await;
    for ns in &namespaces {
        Api::namespaced(cluster.client.clone(), ns)
            .create(&Default::default(), &integration(ns, "late"))
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(60),
        "the new Integrations Ready in both shards",
        || all_ready("late"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sim.token_calls(),
        2 * namespaces.len() as u64,
        "the takeover exchanged nothing again; each new Integration once"
    );
    zero_b.kill().await;
    one.kill().await;
    for ns in &namespaces {
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client.clone())
            .delete(ns, &Default::default())
            .await;
    }
}

/// A fact across shards: SmartRecruiters allows one partner integration
/// per company and app, and a second Integration for the same company is
/// refused without a POST, even when the two are in namespaces of
/// different shards (the sharded operator asks the API server, since its
/// cache holds only its own shard). On a control plane of its own: the
/// shards run cluster-wide, as the chart installs them without
/// watchNamespaces, and must not see the other tests' Integrations.
#[tokio::test]
async fn a_second_partner_integration_for_a_company_is_refused_across_shards() {
    use integration_operator::controller::shard::shard_of;
    use testkit::sim::smartrecruiters::SmartRecruitersSim;

    let cluster = Cluster::private().await;
    let cp = cluster.control_plane();
    let sim = SmartRecruitersSim::start().await.expect("simulator starts");
    sim.set_token_lifetime(Some(1800));
    sim.add_master_client("partner-master", "canary-master-secret-5e1b02", &["my-app"]);
    cluster
        .oauth2_provider(
            "sr",
            &sim.token_url(),
            json!({"type": "smartrecruiters", "baseUrl": sim.url(), "clientAuthMethod": "client_secret_post"}),
        )
        .await;
    // A namespace in each shard: the first and the second claimant.
    let (mut first, mut second) = (None, None);
    while first.is_none() || second.is_none() {
        let ns = cp.namespace(&cluster.client, "t-claim").await;
        match shard_of(&ns, 2) {
            0 if first.is_none() => first = Some(ns),
            1 if second.is_none() => second = Some(ns),
            _ => {}
        }
    }
    let (first, second) = (first.unwrap(), second.unwrap());
    let (_dir, kubeconfig) = chart_identity(&cluster, "io-claim-shards", &[]).await;
    let env = |shard: &str| {
        vec![
            ("POD_NAMESPACE", cluster.namespace.clone()),
            ("SHARD", shard.to_string()),
        ]
    };
    let zero = Replica::start_as(&cluster, "claim-shard-0", &kubeconfig, env("0/2"));
    let one = Replica::start_as(&cluster, "claim-shard-1", &kubeconfig, env("1/2"));
    let create = |ns: String| {
        let client = cluster.client.clone();
        let provider = cluster.provider_name("sr");
        async move {
            let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
                "metadata": {"name": "master", "namespace": ns},
                "stringData": {"client_id": "partner-master", "client_secret": "canary-master-secret-5e1b02"},
            }))
            .unwrap();
            Api::namespaced(client.clone(), &ns)
                .create(&Default::default(), &secret)
                .await
                .unwrap();
            let integration: integration_operator::crd::Integration = serde_json::from_value(json!({
                "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
                "metadata": {"name": "acme", "namespace": ns},
                "spec": {
                    "provider": provider,
                    "secretRef": {"name": "master"},
                    "partnerIntegration": {"appId": "my-app", "companyId": "ACME"},
                    "target": {"name": "acme-out"},
                },
            }))
            .unwrap();
            Api::namespaced(client, &ns)
                .create(&Default::default(), &integration)
                .await
                .unwrap();
        }
    };
    let ready = |ns: String| {
        let client = cluster.client.clone();
        async move {
            let api: Api<integration_operator::crd::Integration> = Api::namespaced(client, &ns);
            api.get_opt("acme")
                .await
                .ok()??
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")
        }
    };
    create(first.clone()).await;
    eventually(Duration::from_secs(60), "the first claimant Ready", || async {
        ready(first.clone()).await.filter(|c| c.status == "True")
    })
    .await;
    create(second.clone()).await;
    let refused = eventually(Duration::from_secs(60), "the second refused as a duplicate", || async {
        ready(second.clone())
            .await
            .filter(|c| c.status == "False" && c.reason == "DuplicateIntegration")
    })
    .await;
    assert!(
        refused.message.contains(&format!("{first}/acme")),
        "the message names the first claimant: {}",
        refused.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.calls("integrations"), 1, "the second shard sent a creation POST");
    zero.kill().await;
    one.kill().await;
}
