//! Shared harness of the integration tests: a real Kubernetes control plane
//! (kube-apiserver, etcd, kube-controller-manager; `testkit::control_plane`)
//! with the CRDs installed and a namespace per test, a fault-injecting,
//! counting proxy between the operator and the apiserver
//! (`testkit::api_proxy`), provider simulators, the real operator (started
//! through the same `Operator::start` the binary uses), and a capture of
//! every log line it writes, at trace level, for the no-secret-in-logs
//! checks.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use clap::Parser;
use integration_operator::{
    cli::{Cli, Command, Operator},
    crd::{ClusterProvider, Integration},
};
use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use testkit::{api_proxy::ApiProxy, control_plane::ControlPlane};

/// Installs (or updates) the operator's CRDs and waits until they are served.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [ClusterProvider::crd(), Integration::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("integration-operator-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .expect("CRD applied");
        eventually(Duration::from_secs(30), &format!("CRD {name} Established"), || async {
            let crd = crds.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// Everything the operator logged in this test process.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        // The operator's own lines (not the HTTP stack's) are echoed, so a
        // failing test shows what the operator did.
        if let Ok(text) = std::str::from_utf8(buf)
            && text.contains("integration_operator")
        {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the trace-level log capture (once per test process).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buf
    });
}

/// Everything logged so far.
pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

/// Token requests the OAuth 2.0 simulator answers during `window` from now.
pub async fn calls_during(sim: &testkit::sim::oauth2::OAuth2Sim, window: Duration) -> u64 {
    let before = sim.token_calls();
    tokio::time::sleep(window).await;
    sim.token_calls() - before
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a test's cluster comes from.
enum Backend {
    /// The real control plane this test run shares; the test has its own namespace.
    Shared(&'static ControlPlane),
    /// A real control plane of this test's own (it restarts or compacts it).
    Private(Box<ControlPlane>),
}

impl Backend {
    fn control_plane(&self) -> &ControlPlane {
        match self {
            Backend::Shared(cp) => cp,
            Backend::Private(cp) => cp,
        }
    }
}

/// A cluster with the operator's CRDs installed and a namespace for this
/// test. On the real control plane (the default) the operator started by
/// [`Cluster::start_operator`] runs as the Helm chart's ServiceAccount with
/// the chart's RBAC, watching only this test's namespace, and the
/// ClusterProviders a test creates get a per-test name suffix.
pub struct Cluster {
    backend: Backend,
    /// The admin client (system:masters on the real control plane).
    pub client: Client,
    pub namespace: String,
    /// The client the operator runs with (the chart's ServiceAccount).
    pub operator_client: Client,
    /// Admin kubeconfig whose context namespace is this test's.
    kubeconfig: std::path::PathBuf,
    /// Kubeconfig of the operator's ServiceAccount (a TokenRequest token).
    operator_kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// The fault-injecting, counting proxy the operator's identity talks to
    /// the real apiserver through.
    api_proxy: ApiProxy,
    /// Appended to ClusterProvider names (cluster-scoped, shared by the run).
    suffix: String,
}

impl Cluster {
    /// A namespace of this test's own on the shared real control plane.
    pub async fn start() -> Cluster {
        let cp = ControlPlane::shared().expect("the shared control plane");
        Cluster::on(Backend::Shared(cp)).await
    }

    /// A real control plane of this test's own, for tests that stop,
    /// restart or compact its parts (see [`Cluster::control_plane`]).
    pub async fn private() -> Cluster {
        let cp = tokio::task::spawn_blocking(ControlPlane::private)
            .await
            .unwrap()
            .expect("a private control plane");
        Cluster::on(Backend::Private(Box::new(cp))).await
    }

    async fn on(backend: Backend) -> Cluster {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let cp = backend.control_plane();
        let client = cp.client().await;
        install_crds(&client).await;
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .rsplit("::")
            .next()
            .unwrap_or("test")
            .to_string();
        let namespace = cp.namespace(&client, &format!("t-{test}")).await;
        let sa = cp
            .install_chart_rbac(&client, &namespace, &format!("io-{namespace}"), &[&namespace])
            .await
            .expect("the chart's RBAC installed");
        let token = cp.service_account_token(&client, &namespace, &sa).await;
        let mut admin = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
        for ctx in &mut admin.contexts {
            if let Some(c) = ctx.context.as_mut() {
                c.namespace = Some(namespace.clone());
            }
        }
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, serde_yaml::to_string(&admin).unwrap()).unwrap();
        let admin_config =
            kube::Config::from_custom_kubeconfig(admin.clone(), &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        let api_proxy = ApiProxy::start(&admin_config).await.expect("the API proxy starts");
        let mut operator = api_proxy.kubeconfig(&cp.token_kubeconfig(&token));
        for ctx in &mut operator.contexts {
            if let Some(c) = ctx.context.as_mut() {
                c.namespace = Some(namespace.clone());
            }
        }
        let operator_kubeconfig = dir.path().join("operator.kubeconfig");
        std::fs::write(&operator_kubeconfig, serde_yaml::to_string(&operator).unwrap()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(operator, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let operator_client = Client::try_from(config).unwrap();
        Cluster {
            client,
            operator_client,
            suffix: format!("-{namespace}"),
            namespace,
            kubeconfig,
            operator_kubeconfig,
            _dir: dir,
            api_proxy,
            backend,
        }
    }

    /// The real control plane under this test.
    pub fn control_plane(&self) -> &ControlPlane {
        self.backend.control_plane()
    }

    /// The proxy between the operator and the real apiserver: faults to
    /// inject, and the operator's requests by verb and resource.
    pub fn api(&self) -> &ApiProxy {
        &self.api_proxy
    }

    /// An admin kubeconfig whose default namespace is this test's (for kubectl).
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// The kubeconfig of the operator's identity (for the operator binary).
    pub fn operator_kubeconfig(&self) -> &std::path::Path {
        &self.operator_kubeconfig
    }

    /// Environment for an operator binary started by a test: its own
    /// namespace and the namespaces it watches, as the chart sets them.
    pub fn operator_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("POD_NAMESPACE", self.namespace.clone()),
            ("WATCH_NAMESPACES", self.namespace.clone()),
        ]
    }

    /// The operator's own namespace (its Lease and fingerprint key): this
    /// test's, as the chart installs it beside the Integrations it watches.
    pub fn operator_namespace(&self) -> String {
        self.namespace.clone()
    }

    /// The cluster-wide name of this test's ClusterProvider `name`.
    pub fn provider_name(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }

    pub fn integrations(&self) -> Api<Integration> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Starts the operator with test-friendly retry timings.
    pub async fn start_operator(&self) -> Operator {
        self.start_operator_with(&[]).await
    }

    pub async fn start_operator_with(&self, extra: &[&str]) -> Operator {
        let mut argv = vec![
            "integration-operator",
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--retry-base",
            "200ms",
            "--retry-max",
            "2s",
            "--retry-invalid",
            "3s",
            "--namespace",
            &self.namespace,
            "--watch-namespaces",
            &self.namespace,
        ];
        argv.extend_from_slice(extra);
        let Command::Run(args) = Cli::parse_from(argv).command else {
            unreachable!("run subcommand")
        };
        // A client of its own, as each operator process has: one shared by
        // operators started one after another in a test kept the first's
        // connections, and a restarted operator once waited on them forever.
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.operator_kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        Operator::start(client, *args).await.expect("operator starts")
    }

    /// Grants the operator's identity what the chart's `rollouts.enabled`
    /// grants (rendered by `helm template`, applied with kubectl).
    pub async fn enable_rollouts(&self) {
        let ns = &self.namespace;
        let rendered = testkit::control_plane::render_chart(&[
            "--namespace",
            ns,
            "--set",
            "rollouts.enabled=true",
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--set",
            "rbac.clusterWideSecretAccess=false",
            "--set",
            &format!("fullnameOverride=io-{ns}"),
            "--show-only",
            "templates/rollouts-rbac.yaml",
        ])
        .expect("the chart renders with rollouts enabled");
        self.kubectl_apply(&rendered);
    }

    /// `kubectl apply --server-side` of a manifest, as the admin.
    pub fn kubectl_apply(&self, manifest: &str) {
        let mut apply = std::process::Command::new("kubectl")
            .args(["apply", "--server-side", "-f", "-", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        std::io::Write::write_all(&mut apply.stdin.take().unwrap(), manifest.as_bytes()).unwrap();
        let out = apply.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates (or replaces) a ClusterProvider of type oauth2 at `token_url`.
    pub async fn oauth2_provider(&self, name: &str, token_url: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "type": "oauth2",
            "tokenUrl": token_url,
            "baseUrl": "https://api.example.com/",
        });
        merge(&mut spec, extra);
        self.cluster_provider(name, spec).await;
    }

    /// Creates (or replaces) a ClusterProvider of any type: `spec` over
    /// test defaults (plain http and 127.0.0.1 allowed, 2 s request timeout).
    pub async fn cluster_provider(&self, name: &str, spec: serde_json::Value) {
        let mut full = json!({
            "allowInsecureHttp": true,
            "allowPrivateAddresses": true,
            "requestTimeout": "2s",
        });
        merge(&mut full, spec);
        let cp: ClusterProvider = serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1",
            "kind": "ClusterProvider",
            "metadata": {"name": self.provider_name(name)},
            "spec": full,
        }))
        .expect("valid ClusterProvider");
        let name = &self.provider_name(name);
        let api: Api<ClusterProvider> = Api::all(self.client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &cp)
            .await
            .expect("ClusterProvider created");
    }

    /// Creates an input Secret with string data.
    pub async fn input_secret(&self, name: &str, data: &[(&str, &str)]) {
        let string_data: serde_json::Map<String, serde_json::Value> =
            data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.namespace},
            "stringData": string_data,
        }))
        .unwrap();
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .expect("input Secret created");
    }

    /// Creates an Integration from a spec.
    pub async fn integration(&self, name: &str, mut spec: serde_json::Value) -> Integration {
        if let Some(provider) = spec.get("provider").and_then(|p| p.as_str()) {
            spec["provider"] = json!(self.provider_name(provider));
        }
        let i: Integration = serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .expect("valid Integration");
        self.integrations()
            .create(&PostParams::default(), &i)
            .await
            .expect("Integration created")
    }

    /// Merges `string_data` (a JSON object of key -> text) into a Secret,
    /// as `kubectl patch secret --type merge -p '{"stringData": ...}'` does.
    pub async fn patch_secret_strings(&self, name: &str, string_data: serde_json::Value) {
        self.secrets()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({ "stringData": string_data })),
            )
            .await
            .expect("Secret patched");
    }

    /// Deletes an Integration and waits until it is gone (finalizers done).
    pub async fn delete_integration(&self, name: &str) {
        self.integrations()
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
        self.wait_gone(name).await;
    }

    /// Waits until the Integration no longer exists (its finalizer is done).
    pub async fn wait_gone(&self, name: &str) {
        eventually(Duration::from_secs(20), &format!("{name} gone"), || async {
            self.integrations().get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    /// A deleted Integration whose provider-side cleanup fails is still
    /// there, held by its finalizer, and a Warning CleanupFailed Event says so.
    pub async fn assert_cleanup_held(&self, name: &str) {
        let i = self.integrations().get_opt(name).await.unwrap();
        assert!(
            i.is_some_and(|i| i.metadata.deletion_timestamp.is_some()),
            "{name}: the finalizer was dropped while cleanup failed"
        );
        assert!(
            self.events_text()
                .await
                .lines()
                .any(|l| l.starts_with("Warning CleanupFailed")),
            "no Warning CleanupFailed Event"
        );
    }

    /// Waits until the Integration's Ready condition has `status` (and `reason`, if given).
    pub async fn wait_ready(&self, name: &str, status: &str, reason: Option<&str>) -> Integration {
        let api = self.integrations();
        eventually(
            Duration::from_secs(20),
            &format!("{name} Ready={status} {reason:?}"),
            || {
                let api = api.clone();
                async move {
                    let i = api.get(name).await.ok()?;
                    let c = i
                        .status
                        .as_ref()?
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Ready")?
                        .clone();
                    (c.status == status && reason.is_none_or(|r| c.reason == r)).then_some(i)
                }
            },
        )
        .await
    }

    /// The output Secret's data as strings.
    pub async fn secret_data(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let s = self.secrets().get_opt(name).await.ok()??;
        Some(
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        )
    }

    /// Every Event's note and reason in the namespace, joined.
    pub async fn events_text(&self) -> String {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        list.iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether an Event with this reason exists, waiting up to 10 s for one:
    /// an Event is published after the status it goes with, so a test that
    /// saw the status may look before the Event is stored.
    pub async fn has_event(&self, reason: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.events_with_reason(reason).await >= 1 {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Events with this reason for the named Integration.
    pub async fn events_with_reason(&self, reason: &str) -> usize {
        self.events_text()
            .await
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some(reason))
            .count()
    }

    pub async fn integration_yaml(&self, name: &str) -> String {
        self.integrations()
            .get(name)
            .await
            .map(|i| serde_yaml::to_string(&i).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Asserts that none of `canaries` (secret values the test planted or
    /// the simulator issued) appears in the operator's logs, the namespace's
    /// Events or the Integration `name` as stored (status included).
    pub async fn assert_nowhere<S: AsRef<str>>(&self, name: &str, canaries: &[S]) {
        self.assert_nowhere_in(&[name], canaries).await
    }

    /// As [`Cluster::assert_nowhere`], over the status of several Integrations.
    pub async fn assert_nowhere_in<S: AsRef<str>>(&self, names: &[&str], canaries: &[S]) {
        let mut haystacks = vec![
            ("logs".to_string(), logs()),
            ("events".to_string(), self.events_text().await),
        ];
        for name in names {
            haystacks.push((format!("the status of {name}"), self.integration_yaml(name).await));
        }
        for (what, text) in &haystacks {
            for canary in canaries {
                assert!(!text.contains(canary.as_ref()), "a secret value appeared in {what}");
            }
        }
    }
}

/// The Integration's Ready condition; panics when it has none yet.
pub fn ready(i: &Integration) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    i.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .expect("a Ready condition")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}
