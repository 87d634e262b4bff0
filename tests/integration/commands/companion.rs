//! The command-line companion as a person uses it: the real binary
//! (`status`, `explain`, `renew`, `check`), and the same binary as the
//! kubectl plugin `kubectl integration` through a symlink on PATH, against
//! the real control plane, the running operator and the provider
//! simulators. Every output is checked for the leak canaries: the input
//! secrets and every token a simulator issued.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use crate::common::{Cluster, calls_during, eventually};
use integration_operator::controller::reconcile::RENEW_NOW_ANNOTATION;
use serde_json::json;
use testkit::sim::{Fault, oauth2::OAuth2Sim, smartrecruiters::SmartRecruitersSim};

const BINARY: &str = env!("CARGO_BIN_EXE_integration-operator");
const CLIENT_ID: &str = "client-a";
/// Canaries: they must never appear in anything the companion prints.
const CLIENT_SECRET: &str = "canary-companion-secret-5e1d7a";
const WRONG_SECRET: &str = "canary-companion-wrong-secret-90c3b2";
const MASTER_SECRET: &str = "canary-companion-master-secret-77ad04";

/// What a run printed, both streams, and how it ended.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs the binary with `args`, the cluster's admin kubeconfig (whose
/// context namespace is the test's) in $KUBECONFIG as a user would have it.
async fn companion(kubeconfig: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(BINARY);
    cmd.args(args);
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        // No cluster at all: nothing may depend on one.
        None => cmd.env("KUBECONFIG", "/nonexistent/kubeconfig"),
    };
    let run: Run = cmd.output().await.expect("the binary runs").into();
    eprintln!("$ integration-operator {}\n{}", args.join(" "), run.all());
    run
}

/// Fails if any canary appears in `text`.
fn assert_no_secret(text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "a secret value was printed:\n{text}");
    }
}

fn canaries(issued: Vec<String>) -> Vec<String> {
    let mut all = vec![
        CLIENT_SECRET.to_string(),
        WRONG_SECRET.to_string(),
        MASTER_SECRET.to_string(),
    ];
    assert!(!issued.is_empty(), "the simulator issued no token: nothing to look for");
    all.extend(issued);
    all
}

/// The cells of the table row whose NAME column is `name`.
fn row(table: &str, name: &str, name_column: usize) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.get(name_column).map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
}

fn cc_spec(secret: &str, target: &str) -> serde_json::Value {
    json!({
        "provider": "auth",
        "secretRef": {"name": secret},
        "clientCredentials": {"scopes": ["read"]},
        "target": {"name": target},
    })
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

#[tokio::test]
async fn status_and_explain_tell_a_ready_integration_from_a_failing_one_without_printing_values() {
    let (cluster, sim) = setup().await;
    cluster
        .input_secret(
            "bad-creds",
            &[("client_id", CLIENT_ID), ("client_secret", WRONG_SECRET)],
        )
        .await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec("creds", "out")).await;
    cluster.integration("broken", cc_spec("bad-creds", "broken-out")).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    cluster.wait_ready("broken", "False", Some("ReauthRequired")).await;
    assert!(cluster.has_event("ReauthRequired").await);
    assert!(cluster.has_event("Issued").await);
    let kubeconfig = Some(cluster.kubeconfig());
    let provider = cluster.provider_name("auth");

    // status, in the kubeconfig context's namespace.
    let status = companion(kubeconfig, &["status"]).await;
    assert!(status.ok);
    let header: Vec<&str> = status.stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PROVIDER", "FLOW", "READY", "REASON", "EXPIRES", "MESSAGE"]
    );
    let api = row(&status.stdout, "api", 0);
    assert_eq!(
        api[..5],
        ["api", provider.as_str(), "clientCredentials", "True", "Issued"]
    );
    assert_eq!(api[5], "in", "{api:?}: expires in the future");
    assert!(api[6].ends_with('m'), "{api:?}");
    let broken = row(&status.stdout, "broken", 0);
    assert_eq!(
        broken[..6],
        [
            "broken",
            provider.as_str(),
            "clientCredentials",
            "False",
            "ReauthRequired",
            "-"
        ]
    );
    assert!(
        broken[6..].join(" ").contains("refused credentials are not sent again"),
        "{broken:?}: the Ready message is shown"
    );

    // -A adds the namespace.
    let all = companion(kubeconfig, &["status", "-A"]).await;
    assert!(all.ok && all.stdout.starts_with("NAMESPACE "), "{}", all.stdout);
    let mine: Vec<Vec<String>> = all
        .stdout
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<String>>())
        .filter(|cells| cells[0] == cluster.namespace)
        .collect();
    assert_eq!(mine.len(), 2, "{}", all.stdout);

    // explain on the failing one: its reason, its Events, what to do.
    let explained = companion(kubeconfig, &["explain", "broken"]).await;
    assert!(explained.ok);
    let out = &explained.stdout;
    assert!(
        out.contains(&format!("Integration {}/broken", cluster.namespace)),
        "{out}"
    );
    assert!(
        out.contains("Flow:           clientCredentials (scopes: read)"),
        "{out}"
    );
    assert!(
        out.contains("bad-creds — exists; keys: client_id, client_secret"),
        "{out}"
    );
    assert!(out.contains("broken-out — does not exist"), "{out}");
    assert!(out.contains("Ready=False  ReauthRequired"), "{out}");
    assert!(out.contains("refusedInputs: "), "{out}");
    let warning = out
        .lines()
        .find(|l| l.contains("Warning") && l.contains("ReauthRequired"))
        .unwrap_or_else(|| panic!("no Warning ReauthRequired Event shown:\n{out}"));
    assert!(warning.contains("ago"), "{warning}");
    assert!(
        out.contains("What to do: put working credentials into the input Secret"),
        "{out}"
    );

    // explain on the Ready one.
    let explained_ok = companion(kubeconfig, &["explain", "api", "-n", &cluster.namespace]).await;
    assert!(explained_ok.ok);
    let out = &explained_ok.stdout;
    assert!(
        out.contains("out — exists, owned by this Integration; keys: access_token, authorization, base_url, expires_at, header_name, header_value, token_type"),
        "{out}"
    );
    assert!(out.contains("Ready=True  Issued"), "{out}");
    assert!(out.contains("expiresAt: ") && out.contains("(in "), "{out}");
    assert!(
        out.lines().any(|l| l.contains("Normal") && l.contains("Issued")),
        "{out}"
    );
    assert!(out.contains("What to do: nothing to do"), "{out}");

    // A name that does not exist fails, and says so.
    let missing = companion(kubeconfig, &["explain", "nope"]).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains(&format!("Integration {}/nope not found", cluster.namespace)),
        "{}",
        missing.stderr
    );

    let secrets = canaries(sim.issued_tokens());
    for run in [&status, &all, &explained, &explained_ok, &missing] {
        assert_no_secret(&run.all(), &secrets);
    }
    operator.stop().await;
}

#[tokio::test]
async fn renew_wait_causes_exactly_one_exchange_and_reports_a_failed_one() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec("creds", "out")).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let first = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    assert_eq!(sim.token_calls(), 1);
    let kubeconfig = Some(cluster.kubeconfig());

    // Asked right after the first issue: the 10 s cap holds it back, and
    // --wait waits it out.
    let renewed = companion(kubeconfig, &["renew", "api", "--wait", "--timeout", "40s"]).await;
    assert!(renewed.ok, "{}", renewed.stderr);
    assert!(
        renewed.stdout.contains(&format!("set {RENEW_NOW_ANNOTATION}=")),
        "{}",
        renewed.stdout
    );
    assert!(renewed.stdout.contains("one exchange per 10s"), "{}", renewed.stdout);
    assert!(
        renewed
            .stdout
            .contains("renewed: Ready=True Renewed: credentials in Secret \"out\" are valid until"),
        "{}",
        renewed.stdout
    );
    assert_eq!(sim.token_calls(), 2, "one request, one exchange");
    let second = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    assert_ne!(second, first, "the output Secret still holds the old token");
    assert!(sim.is_valid_token(&second));
    let i = cluster.integrations().get("api").await.unwrap();
    let asked = i.metadata.annotations.unwrap()[RENEW_NOW_ANNOTATION].clone();
    asked.parse::<jiff::Timestamp>().expect("an RFC 3339 timestamp");
    assert_eq!(i.status.unwrap().renew_now_answered, Some(asked));
    assert_eq!(
        calls_during(&sim, Duration::from_secs(2)).await,
        0,
        "more than one exchange"
    );

    // A renewal the provider fails ends the wait with the failure.
    sim.fail_next("token", 1000, Fault::status(503));
    let failed = companion(kubeconfig, &["renew", "api", "--wait", "--timeout", "40s"]).await;
    assert!(!failed.ok, "a failed renewal exited 0");
    assert!(
        failed.stderr.contains("the renewal failed: ProviderUnavailable"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("What to do: nothing: retried"),
        "{}",
        failed.stderr
    );
    sim.clear_faults();

    let secrets = canaries(sim.issued_tokens());
    for run in [&renewed, &failed] {
        assert_no_secret(&run.all(), &secrets);
    }
    operator.stop().await;
}

/// Writes `value` as a manifest file (JSON is YAML).
fn manifest(dir: &Path, name: &str, value: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    path
}

fn integration_manifest(provider: &str, spec_flow: (&str, serde_json::Value)) -> serde_json::Value {
    json!({
        "apiVersion": "integration-operator.io/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "api", "namespace": "team-a"},
        "spec": {
            "provider": provider,
            "secretRef": {"name": "creds"},
            spec_flow.0: spec_flow.1,
            "target": {"name": "out"},
        },
    })
}

fn provider_manifest(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "integration-operator.io/v1alpha1",
        "kind": "ClusterProvider",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn string_secret(pairs: &[(&str, &str)]) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> =
        pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": data})
}

#[tokio::test]
async fn check_exchanges_once_from_files_and_prints_keys_redacted_with_no_cluster() {
    let sim = OAuth2Sim::start().await.expect("simulator starts");
    sim.add_client(CLIENT_ID, CLIENT_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let integration = manifest(
        dir.path(),
        "integration.yaml",
        integration_manifest("auth", ("clientCredentials", json!({"scopes": ["read"]}))),
    );
    let provider = manifest(
        dir.path(),
        "provider.yaml",
        provider_manifest(
            "auth",
            json!({"type": "oauth2", "tokenUrl": sim.token_url(), "baseUrl": "https://api.example.com/",
                   "allowInsecureHttp": true, "allowPrivateAddresses": true}),
        ),
    );
    let good = manifest(
        dir.path(),
        "good.yaml",
        string_secret(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]),
    );
    let b64 = |s: &str| base64_encode(s);
    let wrong = manifest(
        dir.path(),
        "wrong.yaml",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "data": {"client_id": b64(CLIENT_ID), "client_secret": b64(WRONG_SECRET)}}),
    );
    let args = |secret: &Path| {
        vec![
            "check".to_string(),
            "-f".into(),
            integration.display().to_string(),
            "--provider".into(),
            provider.display().to_string(),
            "--secret-file".into(),
            secret.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| async move { companion(None, &a.iter().map(String::as_str).collect::<Vec<_>>()).await };

    let checked = run(args(&good)).await;
    assert!(checked.ok, "{}", checked.stderr);
    assert_eq!(sim.token_calls(), 1, "one exchange");
    assert!(
        checked.stderr.contains("one real exchange with ClusterProvider auth"),
        "{}",
        checked.stderr
    );
    let out = &checked.stdout;
    assert!(
        out.contains("The operator would write Secret team-a/out with 7 keys (values redacted)"),
        "{out}"
    );
    let token = sim.issued_tokens()[0].clone();
    let access = row(out, "access_token", 0);
    assert_eq!(access, ["access_token", &token.len().to_string(), "<redacted>"]);
    for key in [
        "authorization",
        "base_url",
        "expires_at",
        "header_name",
        "header_value",
        "token_type",
    ] {
        assert_eq!(row(out, key, 0)[2], "<redacted>", "{out}");
    }
    assert!(
        out.contains("expires:  ") && (out.contains("(in 60m)") || out.contains("(in 59m)")),
        "{out}"
    );
    assert!(out.contains("renew at: "), "{out}");
    assert!(out.contains("status.integrationId: -"), "{out}");
    // Values a person might consider harmless are redacted too.
    assert!(!out.contains("Bearer") && !out.contains("api.example.com"), "{out}");

    let refused = run(args(&wrong)).await;
    assert!(!refused.ok, "a refused exchange exited 0");
    assert!(refused.stderr.contains("reason:  ReauthRequired"), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("at ClusterProvider auth: the provider refused the credentials"),
        "{}",
        refused.stderr
    );
    assert_eq!(sim.token_calls(), 2);

    // The ClusterProvider's safety opt-ins apply as in the operator: without
    // them, plain http to 127.0.0.1 is refused before anything is sent.
    let strict = manifest(
        dir.path(),
        "strict.yaml",
        provider_manifest("auth", json!({"type": "oauth2", "tokenUrl": sim.token_url()})),
    );
    let mut a = args(&good);
    a[4] = strict.display().to_string();
    let unsafe_endpoint = run(a).await;
    assert!(!unsafe_endpoint.ok);
    assert!(
        unsafe_endpoint.stderr.contains("reason:  InvalidProvider"),
        "{}",
        unsafe_endpoint.stderr
    );
    assert!(
        unsafe_endpoint.stderr.contains("allowInsecureHttp"),
        "{}",
        unsafe_endpoint.stderr
    );
    assert_eq!(
        sim.token_calls(),
        2,
        "an endpoint the ClusterProvider does not allow was called"
    );

    let secrets = canaries(sim.issued_tokens());
    for r in [&checked, &refused, &unsafe_endpoint] {
        assert_no_secret(&r.all(), &secrets);
    }
}

#[tokio::test]
async fn check_refuses_a_flow_that_creates_something_unless_told_yes() {
    let sim = SmartRecruitersSim::start().await.expect("simulator starts");
    sim.add_master_client("partner-master", MASTER_SECRET, &["my-app"]);
    let dir = tempfile::tempdir().unwrap();
    let integration = manifest(
        dir.path(),
        "integration.yaml",
        integration_manifest(
            "smartrecruiters",
            ("partnerIntegration", json!({"appId": "my-app", "companyId": "ACME"})),
        ),
    );
    let provider = manifest(
        dir.path(),
        "provider.yaml",
        provider_manifest(
            "smartrecruiters",
            json!({"type": "smartrecruiters", "baseUrl": sim.url(), "tokenUrl": sim.token_url(),
                   "allowInsecureHttp": true, "allowPrivateAddresses": true}),
        ),
    );
    let secret = manifest(
        dir.path(),
        "master.yaml",
        string_secret(&[("client_id", "partner-master"), ("client_secret", MASTER_SECRET)]),
    );
    let files = [
        "check",
        "-f",
        integration.to_str().unwrap(),
        "--provider",
        provider.to_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
    ];

    let refused = companion(None, &files).await;
    assert!(!refused.ok, "a one-shot flow ran without --yes");
    assert!(
        refused
            .stderr
            .contains("the partnerIntegration flow creates a SmartRecruiters partner integration"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("Pass --yes"), "{}", refused.stderr);
    assert_eq!(sim.total_calls(), 0, "the simulator was called without --yes");

    let mut with_yes = files.to_vec();
    with_yes.push("--yes");
    let created = companion(None, &with_yes).await;
    assert!(created.ok, "{}", created.stderr);
    let made = sim.integrations();
    assert_eq!(made.len(), 1, "one partner integration created");
    let out = &created.stdout;
    assert!(
        out.contains(&format!("status.integrationId: {}", made[0].integration_id)),
        "{out}"
    );
    assert!(out.contains("Created at the provider"), "{out}");
    assert_eq!(row(out, "client_secret", 0)[2], "<redacted>", "{out}");

    let mut secrets = canaries(sim.issued_tokens());
    secrets.push(made[0].client_secret.clone());
    for r in [&refused, &created] {
        assert_no_secret(&r.all(), &secrets);
    }
}

#[tokio::test]
async fn check_from_cluster_reads_the_input_secret_of_the_integrations_namespace() {
    let (cluster, sim) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let mut i = integration_manifest("auth", ("clientCredentials", json!({})));
    // No namespace in the file: the kubeconfig context's (the test's) is used.
    i["metadata"].as_object_mut().unwrap().remove("namespace");
    let integration = manifest(dir.path(), "integration.yaml", i);
    let provider = manifest(
        dir.path(),
        "provider.yaml",
        provider_manifest(
            "auth",
            json!({"type": "oauth2", "tokenUrl": sim.token_url(), "allowInsecureHttp": true, "allowPrivateAddresses": true}),
        ),
    );
    let args = [
        "check",
        "-f",
        integration.to_str().unwrap(),
        "--provider",
        provider.to_str().unwrap(),
        "--from-cluster",
    ];
    let checked = companion(Some(cluster.kubeconfig()), &args).await;
    assert!(checked.ok, "{}", checked.stderr);
    assert!(
        checked
            .stdout
            .contains(&format!("Secret {}/out with 6 keys", cluster.namespace)),
        "{}",
        checked.stdout
    );
    assert_eq!(sim.token_calls(), 1);
    assert!(
        cluster.secrets().get_opt("out").await.unwrap().is_none(),
        "check wrote to the cluster"
    );

    // Without the input Secret: the operator's SecretNotFound, no call.
    cluster.secrets().delete("creds", &Default::default()).await.unwrap();
    let missing = companion(Some(cluster.kubeconfig()), &args).await;
    assert!(!missing.ok);
    assert!(missing.stderr.contains("reason:  SecretNotFound"), "{}", missing.stderr);
    assert_eq!(sim.token_calls(), 1);
    let secrets = canaries(sim.issued_tokens());
    assert_no_secret(&checked.all(), &secrets);
    assert_no_secret(&missing.all(), &secrets);
}

#[tokio::test]
async fn kubectl_runs_the_binary_as_the_integration_plugin() {
    let (cluster, sim) = setup().await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec("creds", "out")).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;

    // What the README tells a user to do: a symlink named kubectl-integration on PATH.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BINARY, bin.path().join("kubectl-integration")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", cluster.kubeconfig());
        async move { Run::from(cmd.output().await.expect("kubectl runs")) }
    };

    let plugins = kubectl(&["plugin", "list"]).await;
    assert!(plugins.stdout.contains("kubectl-integration"), "{}", plugins.all());

    let status = kubectl(&["integration", "status"]).await;
    assert!(status.ok, "{}", status.all());
    let header: Vec<&str> = status.stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PROVIDER", "FLOW", "READY", "REASON", "EXPIRES", "MESSAGE"]
    );
    let api = row(&status.stdout, "api", 0);
    assert_eq!(
        api[..5],
        [
            "api",
            cluster.provider_name("auth").as_str(),
            "clientCredentials",
            "True",
            "Issued"
        ]
    );

    // Under kubectl's name it is the companion alone, and says so.
    let help = kubectl(&["integration", "--help"]).await;
    assert!(
        help.ok && help.stdout.contains("Usage: kubectl integration <COMMAND>"),
        "{}",
        help.all()
    );
    assert!(
        !help.stdout.contains("\n  run "),
        "the plugin offers `run`:\n{}",
        help.stdout
    );

    eventually(Duration::from_secs(10), "an Issued Event", || async {
        cluster.has_event("Issued").await.then_some(())
    })
    .await;
    let explained = kubectl(&["integration", "explain", "api"]).await;
    assert!(
        explained.ok && explained.stdout.contains("Ready=True  Issued"),
        "{}",
        explained.all()
    );

    let secrets = canaries(sim.issued_tokens());
    for r in [&status, &help, &explained] {
        assert_no_secret(&r.all(), &secrets);
    }
    operator.stop().await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
