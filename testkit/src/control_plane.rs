//! A real Kubernetes control plane for the tests: kube-apiserver, etcd and
//! kube-controller-manager built from the Kubernetes Go modules in
//! `testkit/control-plane/` (see its README) by `scripts/control-plane.sh`.
//!
//! A real apiserver takes seconds to start, so a test run shares one
//! ([`ControlPlane::shared`]) and every test isolates itself in its own
//! namespace ([`ControlPlane::namespace`]). Tests that stop or restart the
//! apiserver or etcd take a private one ([`ControlPlane::private`]).
//!
//! The shared cluster is the one at `$CLUSTER_KUBECONFIG` when that is set
//! (`make test` starts it before the suite and stops it after). Without it the
//! first test to ask starts one in the background at
//! `target/control-plane/shared/kubeconfig`, which stops itself after ten
//! minutes without a test attaching to it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    core::v1::{Namespace, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde::Deserialize;
use serde_json::json;

/// What a running cluster publishes beside its kubeconfig.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub pid: u32,
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT` of the kube-apiserver.
    pub server: String,
    /// `http://127.0.0.1:PORT` of etcd.
    pub etcd: String,
    /// The orchestrator's fault endpoint (restart, stop, start, compact).
    pub control: String,
    pub data_dir: PathBuf,
    pub start_seconds: f64,
    /// The pinned Kubernetes release, e.g. `v1.33.13`.
    pub kubernetes: String,
    pub etcd_version: String,
}

/// A handle on a running control plane.
pub struct ControlPlane {
    pub state: State,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// The repository's root (testkit's parent folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the repository")
        .to_path_buf()
}

fn out_dir() -> PathBuf {
    std::env::var_os("CONTROL_PLANE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/control-plane"))
}

/// Builds the control-plane binary if its sources changed (a no-op taking
/// milliseconds otherwise) and returns its path. The first build on a machine
/// takes minutes; its progress goes to stderr.
pub fn binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/control-plane.sh"))
            .arg("build")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running scripts/control-plane.sh build: {e}"))?;
        if !out.status.success() {
            return Err(format!("scripts/control-plane.sh build failed ({})", out.status));
        }
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        Ok(PathBuf::from(path))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn read_state(kubeconfig: &Path) -> anyhow::Result<State> {
    let path = PathBuf::from(format!("{}.state.json", kubeconfig.display()));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

impl ControlPlane {
    /// The cluster this test run shares: `$CLUSTER_KUBECONFIG`'s, started
    /// (once, whichever test process asks first) if it does not run yet.
    pub fn shared() -> anyhow::Result<&'static ControlPlane> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::attach_or_start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("no control plane: {e}"))
    }

    fn attach_or_start() -> anyhow::Result<ControlPlane> {
        let kubeconfig = match std::env::var_os("CLUSTER_KUBECONFIG") {
            Some(k) => PathBuf::from(k),
            None => out_dir().join("shared/kubeconfig"),
        };
        if let Ok(state) = read_state(&kubeconfig)
            && pid_alive(state.pid)
        {
            let cp = ControlPlane {
                state,
                child: None,
                _dir: None,
            };
            cp.touch();
            return Ok(cp);
        }
        binary()?;
        // `start` is idempotent and serialized by a lock in the script, so
        // test processes racing here end up on one cluster.
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/control-plane.sh"))
            .args(["start", "--idle-exit", "10m"])
            .env("CLUSTER_KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()?;
        if !status.success() {
            bail!("scripts/control-plane.sh start failed ({status})");
        }
        let cp = ControlPlane {
            state: read_state(&kubeconfig)?,
            child: None,
            _dir: None,
        };
        cp.touch();
        Ok(cp)
    }

    /// A cluster of this test's own, for tests that stop or restart its
    /// parts. Stopped when the handle is dropped (or this process exits).
    pub fn private() -> anyhow::Result<ControlPlane> {
        let bin = binary()?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let log = std::fs::File::create(dir.path().join("cluster.log"))?;
        let mut child = Command::new(bin)
            .args(["cluster", "run", "--exit-with-parent", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(state) = read_state(&kubeconfig) {
                return Ok(ControlPlane {
                    state,
                    child: Some(child),
                    _dir: Some(dir),
                });
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path().join("cluster.log")).unwrap_or_default();
                bail!("the private control plane exited during start-up ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the private control plane was not ready in 180s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.state.kubeconfig
    }

    /// An admin (system:masters) client from the cluster's kubeconfig.
    pub async fn client(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("the kubeconfig is readable");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("the kubeconfig is valid");
        Client::try_from(config).expect("a client for the control plane")
    }

    /// A client that authenticates as ServiceAccount `namespace/name`, with a
    /// token from the TokenRequest API, as a pod of that account would.
    pub async fn service_account_client(&self, admin: &Client, namespace: &str, name: &str) -> Client {
        let token = self.service_account_token(admin, namespace, name).await;
        let kubeconfig = self.token_kubeconfig(&token);
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("the token kubeconfig is valid");
        Client::try_from(config).expect("a client for the service account")
    }

    /// A fresh token for ServiceAccount `namespace/name` (one hour).
    pub async fn service_account_token(&self, admin: &Client, namespace: &str, name: &str) -> String {
        let request: TokenRequest = serde_json::from_value(json!({
            "spec": {"audiences": [], "expirationSeconds": 3600}
        }))
        .unwrap();
        let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let response: TokenRequest = api
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .expect("TokenRequest answered");
        response.status.expect("a token").token
    }

    /// The admin kubeconfig with the admin's certificate replaced by `token`.
    pub fn token_kubeconfig(&self, token: &str) -> kube::config::Kubeconfig {
        let mut kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("the kubeconfig is readable");
        for user in &mut kubeconfig.auth_infos {
            user.auth_info = Some(serde_json::from_value(json!({"token": token})).expect("a token AuthInfo"));
        }
        kubeconfig
    }

    /// Creates a namespace named `prefix-<random>` and returns its name; see
    /// [`ControlPlane::delete_namespace`].
    pub async fn namespace(&self, admin: &Client, prefix: &str) -> String {
        self.touch();
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("{}-{:08x}", prefix.trim_matches('-'), rand::random::<u32>());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        name
    }

    /// Deletes a namespace (the namespace controller removes its contents).
    pub async fn delete_namespace(admin: &Client, name: &str) {
        let _ = Api::<Namespace>::all(admin.clone())
            .delete(name, &DeleteParams::background())
            .await;
    }

    /// Installs the operator's identity as the Helm chart defines it, for
    /// an operator in `namespace` that watches `watch` (none: every
    /// namespace, with the chart's `rbac.clusterWideSecretAccess`): the
    /// chart's ServiceAccount, ClusterRole, Roles and bindings, rendered by
    /// `helm template` (release `io`, objects named `fullname`). Returns the
    /// ServiceAccount's name.
    pub async fn install_chart_rbac(
        &self,
        admin: &Client,
        namespace: &str,
        fullname: &str,
        watch: &[&str],
    ) -> anyhow::Result<String> {
        let scope = if watch.is_empty() {
            "rbac.clusterWideSecretAccess=true".to_string()
        } else {
            format!("watchNamespaces={{{}}}", watch.join(","))
        };
        let rendered = render_chart(&[
            "--namespace",
            namespace,
            "--set",
            &scope,
            "--set",
            &format!("fullnameOverride={fullname}"),
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ])?;
        let mut service_account = None;
        for doc in serde_yaml::Deserializer::from_str(&rendered) {
            let value = serde_json::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            if kind == "ServiceAccount" {
                service_account = value["metadata"]["name"].as_str().map(str::to_string);
            }
            create_object(admin, value)
                .await
                .with_context(|| format!("creating the chart's {kind}"))?;
        }
        service_account.context("the chart rendered no ServiceAccount")
    }

    async fn control(&self, path: &str) -> anyhow::Result<String> {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.state.control))
            .timeout(Duration::from_secs(180))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {text}");
        }
        Ok(text)
    }

    /// Stops a component (`etcd`, `kube-apiserver`, `kube-controller-manager`)
    /// with SIGTERM and starts it again on the same port and data; returns
    /// once it is ready. `down` keeps it stopped that long first.
    pub async fn restart(&self, component: &str, down: Duration) -> anyhow::Result<()> {
        self.control(&format!("/restart/{component}?down={}ms", down.as_millis()))
            .await
            .map(drop)
    }

    pub async fn stop_component(&self, component: &str) -> anyhow::Result<()> {
        self.control(&format!("/stop/{component}")).await.map(drop)
    }

    pub async fn start_component(&self, component: &str) -> anyhow::Result<()> {
        self.control(&format!("/start/{component}")).await.map(drop)
    }

    /// Compacts etcd at its current revision: a watch resumed from an older
    /// resourceVersion then gets 410 Gone from the apiserver. Returns the revision.
    pub async fn compact(&self) -> anyhow::Result<i64> {
        Ok(self.control("/compact").await?.trim().parse()?)
    }

    /// Keeps a cluster started with `--idle-exit` alive (best effort).
    pub fn touch(&self) {
        use std::io::{Read, Write};
        let Some(addr) = self.state.control.strip_prefix("http://") else {
            return;
        };
        let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
            return;
        };
        if let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.write_all(b"POST /touch HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.read(&mut [0u8; 256]);
        }
    }

    /// `apiserver_request_total` summed over the lines matching `verb` and
    /// `resource`, from the apiserver's own `/metrics`.
    pub async fn request_total(&self, admin: &Client, verb: &str, resource: &str) -> u64 {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = admin.request_text(request).await.expect("/metrics");
        sum_metric(
            &text,
            "apiserver_request_total",
            &[("verb", verb), ("resource", resource)],
        )
    }
}

/// The Helm that `scripts/install-helm.sh` installs into `.tools/` (on first use).
pub fn helm() -> anyhow::Result<PathBuf> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/install-helm.sh"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("scripts/install-helm.sh failed ({})", out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// `helm template io charts/integration-operator ARGS...`.
pub fn render_chart(args: &[&str]) -> anyhow::Result<String> {
    let helm = helm()?;
    let out = Command::new(helm)
        .args(["template", "io"])
        .arg(repo_root().join("charts/integration-operator"))
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Creates one object of the kinds the chart's identity is made of.
async fn create_object(admin: &Client, value: serde_json::Value) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let namespace = value["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    let pp = PostParams::default();
    match value["kind"].as_str().unwrap_or_default() {
        "ServiceAccount" => {
            Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
                .create(&pp, &serde_json::from_value(value)?)
                .await?;
        }
        "ClusterRole" => {
            Api::<ClusterRole>::all(admin.clone())
                .create(&pp, &serde_json::from_value(value)?)
                .await?;
        }
        "ClusterRoleBinding" => {
            Api::<ClusterRoleBinding>::all(admin.clone())
                .create(&pp, &serde_json::from_value(value)?)
                .await?;
        }
        "Role" => {
            Api::<Role>::namespaced(admin.clone(), &namespace)
                .create(&pp, &serde_json::from_value(value)?)
                .await?;
        }
        "RoleBinding" => {
            Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
                .create(&pp, &serde_json::from_value(value)?)
                .await?;
        }
        other => bail!("unexpected kind {other} in the chart's RBAC"),
    }
    Ok(())
}

/// Sums a Prometheus counter over the samples whose labels include `labels`.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGTERM, so the orchestrator stops its components in order.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
