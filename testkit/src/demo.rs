//! `make demo`: the operator's main job end to end on one machine, with no
//! cluster and no provider account. Starts a real Kubernetes control plane
//! (kube-apiserver, etcd and kube-controller-manager built from the
//! Kubernetes Go modules, see `control_plane`; built on first use) and
//! one simulator per provider on 127.0.0.1 (an OAuth 2.0 token server,
//! SmartRecruiters, Cornerstone TalentLink, Cloud Elements, Kombo), runs the
//! real operator binary, and applies the files in `examples/` with the real
//! `kubectl` — each ClusterProvider's URLs pointed at its simulator, which
//! accepts the examples' placeholder credentials. For every provider it
//! shows the Integrations becoming Ready, `kubectl get integrations`, and the
//! keys (never the values) of the Secrets written; then it checks with each
//! simulator that the published credentials work, and says what happened.
//! Any Integration that does not become Ready fails the demo (non-zero exit).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::{
    control_plane::ControlPlane,
    sim::{
        cloud_elements::CloudElementsSim, kombo::KomboSim, oauth2::OAuth2Sim, smartrecruiters::SmartRecruitersSim,
        talentlink::TalentLinkSim,
    },
};

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The operator binary to run.
    #[arg(long, env = "OPERATOR_BIN", default_value = "target/debug/integration-operator")]
    pub operator: PathBuf,
    /// The kubectl binary.
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    pub kubectl: String,
    /// Lifetime of the OAuth 2.0 simulator's tokens, in seconds (short, to show renewals).
    #[arg(long, default_value_t = 6)]
    pub token_lifetime: u64,
    /// How many renewals of the OAuth 2.0 token to wait for.
    #[arg(long, default_value_t = 2)]
    pub renewals: usize,
    /// Working directory for the kubeconfig, manifests and the operator's log.
    #[arg(long, default_value = "target/demo")]
    pub workdir: PathBuf,
}

/// The examples' placeholder credentials, which the simulators accept.
mod example {
    pub const OAUTH_CLIENT_ID: &str = "demo-client";
    pub const OAUTH_CLIENT_SECRET: &str = "demo-secret-change-me";
    pub const SR_API_KEY: &str = "DCRA1-replace-with-your-key";
    pub const SR_CLIENT_ID: &str = "replace-with-the-oauth-client-id";
    pub const SR_CLIENT_SECRET: &str = "replace-with-the-oauth-client-secret";
    pub const SR_MASTER_ID: &str = "partner-master-client-id";
    pub const SR_MASTER_SECRET: &str = "partner-master-client-secret";
    pub const SR_APP_ID: &str = "my-app";
    pub const TL_USERNAME: &str = "api-user";
    pub const TL_PASSWORD: &str = "replace-me";
    pub const TL_API_KEY: &str = "replace-me";
    pub const CE_USER_SECRET: &str = "replace-me";
    pub const CE_ORGANIZATION_SECRET: &str = "replace-me";
    pub const CE_SMARTRECRUITERS_KEY: &str = "replace-me";
    pub const KOMBO_API_KEY: &str = "replace-me";
    /// The integration examples/kombo.yaml's globex-kombo names.
    pub const KOMBO_EXISTING_ID: &str = "personio:8d1hpPsbjxUkoCoa1veLZGe5";
}

/// Where the operator runs (its Lease and fingerprint key), as the chart installs it.
const OPERATOR_NS: &str = "integration-operator";

/// The namespace of the ATS examples (none of them creates it).
const NS: &str = "hiring";

struct Kubectl<'a> {
    bin: &'a str,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = std::process::Command::new(self.bin);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        // kubectl blocks (`kubectl wait` for up to its timeout) while the
        // simulators must keep serving on this runtime.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let out = if multi_thread {
            tokio::task::block_in_place(|| command.output())
        } else {
            command.output()
        }
        .with_context(|| format!("running {} (is kubectl installed?)", self.bin))?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs and echoes the command and its output, as a person would see it.
    fn show(&self, args: &[&str]) -> anyhow::Result<String> {
        let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        println!("$ kubectl {}", quoted.join(" "));
        let out = self.run(args)?;
        for line in out.lines() {
            println!("  {line}");
        }
        Ok(out)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&all)?)?)
    }

    /// `kubectl wait` for Ready on these Integrations; on failure the error
    /// carries each one's Ready condition.
    fn wait_ready(&self, namespace: &str, names: &[&str]) -> anyhow::Result<()> {
        let objects: Vec<String> = names.iter().map(|n| format!("integration/{n}")).collect();
        let mut args = vec!["wait", "--for=condition=Ready"];
        args.extend(objects.iter().map(String::as_str));
        args.extend(["-n", namespace, "--timeout=45s"]);
        if let Err(e) = self.show(&args) {
            let states: Vec<String> = names
                .iter()
                .map(|n| match self.ready(namespace, n) {
                    Ok(c) => format!("{namespace}/{n}: Ready={} {}: {}", c.status, c.reason, c.message),
                    Err(e) => format!("{namespace}/{n}: {e:#}"),
                })
                .collect();
            bail!("{e:#}\n  {}", states.join("\n  "));
        }
        Ok(())
    }

    /// The Integration's Ready condition (empty fields when there is none yet).
    fn ready(&self, namespace: &str, name: &str) -> anyhow::Result<Condition> {
        let i = self.json(&["get", "integration", name, "-n", namespace])?;
        let c = i["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or(Value::Null);
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        Ok(Condition {
            status: text("status"),
            reason: text("reason"),
            message: text("message"),
            integration_id: i["status"]["integrationId"].as_str().map(str::to_string),
        })
    }

    /// Shows `kubectl get integrations` for these names.
    fn get_integrations(&self, namespace: &str, names: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["get", "integrations", "-n", namespace];
        args.extend(names);
        self.show(&args)?;
        Ok(())
    }

    /// Shows the keys of an output Secret — never a value — and returns
    /// the decoded data for the simulator checks.
    fn secret_keys(&self, namespace: &str, name: &str) -> anyhow::Result<Secret> {
        self.show(&[
            "get",
            "secret",
            name,
            "-n",
            namespace,
            "-o",
            "go-template={{range $k, $v := .data}}{{$k}} {{end}}",
        ])?;
        Secret::from(&self.json(&["get", "secret", name, "-n", namespace])?)
    }
}

struct Condition {
    status: String,
    reason: String,
    message: String,
    integration_id: Option<String>,
}

/// A Secret's decoded data.
struct Secret(std::collections::BTreeMap<String, String>);

impl Secret {
    fn from(secret: &Value) -> anyhow::Result<Self> {
        use base64::Engine;
        let mut data = std::collections::BTreeMap::new();
        for (k, v) in secret["data"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
            data.insert(k.clone(), String::from_utf8(bytes)?);
        }
        Ok(Self(data))
    }

    fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("the Secret has no {key}"))
    }
}

/// The simulators, one per provider.
struct Sims {
    oauth2: OAuth2Sim,
    smartrecruiters: SmartRecruitersSim,
    talentlink: TalentLinkSim,
    cloud_elements: CloudElementsSim,
    kombo: KomboSim,
}

impl Sims {
    async fn start(token_lifetime: u64) -> anyhow::Result<Self> {
        use example::*;
        let oauth2 = OAuth2Sim::start().await?;
        oauth2.add_client(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET);
        oauth2.set_token_lifetime(Some(token_lifetime));
        let smartrecruiters = SmartRecruitersSim::start().await?;
        smartrecruiters.add_api_key(SR_API_KEY, "ACME");
        smartrecruiters.add_client(SR_CLIENT_ID, SR_CLIENT_SECRET, "ACME");
        smartrecruiters.add_master_client(SR_MASTER_ID, SR_MASTER_SECRET, &[SR_APP_ID]);
        let talentlink = TalentLinkSim::start().await?;
        talentlink.add_user(TL_USERNAME, TL_PASSWORD);
        talentlink.add_api_key(TL_API_KEY, TL_USERNAME);
        let cloud_elements = CloudElementsSim::start().await?;
        cloud_elements.add_user(CE_USER_SECRET, CE_ORGANIZATION_SECRET);
        cloud_elements.add_element_api_key(CE_SMARTRECRUITERS_KEY);
        let kombo = KomboSim::start().await?;
        kombo.add_api_key(KOMBO_API_KEY);
        kombo.add_integration(KOMBO_EXISTING_ID, "personio");
        Ok(Self {
            oauth2,
            smartrecruiters,
            talentlink,
            cloud_elements,
            kombo,
        })
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn heading(text: &str) {
    println!("\n\n######## {text}");
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.workdir)?;
    let workdir = args.workdir.canonicalize()?;
    if !args.operator.exists() {
        bail!(
            "operator binary {} not found: build it with `cargo build`",
            args.operator.display()
        );
    }

    step(
        "starting a Kubernetes control plane on 127.0.0.1: kube-apiserver, etcd, kube-controller-manager (built from source on first use: minutes)",
    );
    let control_plane = tokio::task::spawn_blocking(ControlPlane::private).await??;
    let kubeconfig = workdir.join("kubeconfig");
    std::fs::copy(control_plane.kubeconfig(), &kubeconfig)?;
    println!(
        "  kube-apiserver {} (etcd {}) at {}, ready in {:.1}s; admin kubeconfig at {}",
        control_plane.state.kubernetes,
        control_plane.state.etcd_version,
        control_plane.state.server,
        control_plane.state.start_seconds,
        kubeconfig.display()
    );
    let cache = tempfile_dir(&workdir, "kubectl-cache")?;
    let kubectl = Kubectl {
        bin: &args.kubectl,
        kubeconfig: kubeconfig.clone(),
        cache,
    };

    step("starting one simulator per provider on 127.0.0.1 (they accept the examples' placeholder credentials)");
    let sims = Sims::start(args.token_lifetime).await?;
    println!(
        "  OAuth 2.0 token server  {} ({}-second tokens)",
        sims.oauth2.token_url(),
        args.token_lifetime
    );
    println!("  SmartRecruiters         {}", sims.smartrecruiters.url());
    println!("  Cornerstone TalentLink  {}", sims.talentlink.base_url());
    println!("  Cloud Elements          {}", sims.cloud_elements.base_url());
    println!("  Kombo                   {}", sims.kombo.base_url());

    step("installing the CRDs");
    kubectl.show(&["apply", "-f", "crds/crds.yaml"])?;
    kubectl.show(&[
        "wait",
        "--for=condition=Established",
        "crd/integrations.integration-operator.io",
        "crd/clusterproviders.integration-operator.io",
        "--timeout=30s",
    ])?;

    step(
        "giving the operator the Helm chart's identity: its ServiceAccount and RBAC (rendered by helm template), a TokenRequest token",
    );
    let admin = control_plane.client().await;
    kubectl.show(&["create", "namespace", OPERATOR_NS])?;
    let service_account = control_plane
        .install_chart_rbac(&admin, OPERATOR_NS, "integration-operator", &[])
        .await?;
    let token = control_plane
        .service_account_token(&admin, OPERATOR_NS, &service_account)
        .await;
    let operator_kubeconfig = workdir.join("operator.kubeconfig");
    std::fs::write(
        &operator_kubeconfig,
        serde_yaml::to_string(&control_plane.token_kubeconfig(&token))?,
    )?;
    println!("  {OPERATOR_NS}/{service_account}: the chart's ClusterRole (cluster-wide Secret access), no more");

    step("starting the operator");
    // The inbound server (Kombo's webhooks) on a free loopback port, plain
    // HTTP as the demo has no certificate (a cluster serves it over TLS).
    let inbound_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log_path = workdir.join("operator.log");
    let log = std::fs::File::create(&log_path)?;
    let mut operator = tokio::process::Command::new(&args.operator)
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--namespace",
            OPERATOR_NS,
            "--inbound-addr",
            &inbound_addr.to_string(),
            "--inbound-insecure-http",
            "--kubeconfig",
        ])
        .arg(&operator_kubeconfig)
        .env("LOG_LEVEL", "info,kube=warn")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.operator.display()))?;
    println!("  {} (log: {})", args.operator.display(), log_path.display());

    let demo = Demo {
        kubectl: &kubectl,
        sims: &sims,
        workdir: &workdir,
        args: &args,
        inbound_addr,
    };
    let result = demo.all().await;

    step("stopping the operator");
    stop(&mut operator).await;
    match result {
        Ok(summary) => {
            step("what happened");
            for line in summary {
                println!("  {line}");
            }
            println!(
                "  demo passed in {:.1}s — everything ran on 127.0.0.1 against a real kube-apiserver and provider simulators, not a provider's real service",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}\n--- operator log ({}) ---", log_path.display());
            eprintln!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
            Err(e)
        }
    }
}

struct Demo<'a> {
    kubectl: &'a Kubectl<'a>,
    sims: &'a Sims,
    workdir: &'a Path,
    args: &'a DemoArgs,
    /// Where the operator's inbound server listens (Kombo's webhooks).
    inbound_addr: std::net::SocketAddr,
}

impl Demo<'_> {
    /// Every provider in turn, then a last look at all Integrations.
    /// Returns the summary lines.
    async fn all(&self) -> anyhow::Result<Vec<String>> {
        let mut summary = vec![self.oauth2().await?];
        step(&format!("creating namespace {NS} (the ATS examples' namespace)"));
        self.kubectl.show(&["create", "namespace", NS])?;
        summary.push(self.smartrecruiters().await?);
        summary.push(self.talentlink()?);
        summary.push(self.cloud_elements().await?);
        summary.push(self.kombo().await?);

        heading("all Integrations");
        self.kubectl.show(&["get", "integrations", "-A"])?;
        let all = self.kubectl.json(&["get", "integrations", "-A"])?;
        let items = all["items"].as_array().cloned().unwrap_or_default();
        let not_ready: Vec<String> = items
            .iter()
            .filter(|i| {
                !i["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .map(|i| format!("{}/{}", i["metadata"]["namespace"], i["metadata"]["name"]))
            .collect();
        ensure!(not_ready.is_empty(), "Integrations not Ready at the end: {not_ready:?}");
        let providers: std::collections::BTreeSet<&str> =
            items.iter().filter_map(|i| i["spec"]["provider"].as_str()).collect();
        summary.push(format!(
            "{} Integrations on {} ClusterProviders, every one Ready (and acme-elements deleted with its element instance)",
            items.len(),
            providers.len()
        ));
        Ok(summary)
    }

    /// Writes `examples/<file>` with `edit` applied to each document into the
    /// work directory and `kubectl apply`s it.
    fn apply_example(
        &self,
        file: &str,
        edit: impl Fn(&mut serde_yaml::Value) -> Vec<serde_yaml::Value>,
    ) -> anyhow::Result<()> {
        let source = Path::new("examples").join(file);
        let text = std::fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut value: serde_yaml::Value = serde::Deserialize::deserialize(doc)?;
            let extra = edit(&mut value);
            docs.push(serde_yaml::to_string(&value)?);
            for e in extra {
                docs.push(serde_yaml::to_string(&e)?);
            }
        }
        let path = self.workdir.join(file);
        std::fs::write(&path, docs.join("---\n"))?;
        self.kubectl.show(&["apply", "-f", &path.to_string_lossy()])?;
        Ok(())
    }

    async fn oauth2(&self) -> anyhow::Result<String> {
        let (kubectl, sim) = (self.kubectl, &self.sims.oauth2);
        heading("OAuth 2.0 client credentials (any RFC 6749 token endpoint)");
        step("applying examples/oauth2-client-credentials.yaml (tokenUrl pointed at the simulator)");
        let token_url = sim.token_url();
        self.apply_example("oauth2-client-credentials.yaml", |doc| {
            point_at(doc, &[("tokenUrl", &token_url)]);
            vec![]
        })?;
        kubectl.wait_ready("demo", &["example-api"])?;
        kubectl.get_integrations("demo", &["example-api"])?;
        step("the generated Secret");
        let secret = kubectl.secret_keys("demo", "example-api-credentials")?;
        let first_token = secret.get("access_token")?.to_string();
        ensure!(
            sim.is_valid_token(&first_token),
            "the Secret's access_token is not one the provider accepts"
        );

        let renewals = self.args.renewals;
        step(&format!("watching {renewals} renewals of the short-lived token"));
        let mut tokens = vec![first_token];
        let deadline = Instant::now() + Duration::from_secs(self.args.token_lifetime * (renewals as u64 + 2) + 10);
        while tokens.len() <= renewals {
            ensure!(
                Instant::now() <= deadline,
                "no renewal seen within the deadline ({} tokens seen)",
                tokens.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let secret = Secret::from(&kubectl.json(&["get", "secret", "example-api-credentials", "-n", "demo"])?)?;
            let token = secret.get("access_token")?.to_string();
            if token != *tokens.last().unwrap_or(&String::new()) {
                println!(
                    "  {} renewed: new token valid until {} (previous one had not expired yet: {})",
                    jiff::Timestamp::now()
                        .round(jiff::Unit::Second)
                        .unwrap_or(jiff::Timestamp::now()),
                    secret.get("expires_at")?,
                    tokens.last().is_some_and(|t| sim.is_valid_token(t))
                );
                tokens.push(token);
            }
        }
        kubectl.get_integrations("demo", &["example-api"])?;
        kubectl
            .show(&[
                "get",
                "events",
                "-n",
                "demo",
                "--field-selector",
                "involvedObject.name=example-api",
            ])
            .ok();
        let last = tokens.last().cloned().unwrap_or_default();
        ensure!(sim.is_valid_token(&last), "the current token is not accepted");
        let templated = self.output_templates()?;
        Ok(format!(
            "OAuth 2.0: demo/example-api Ready; its token was renewed {} times before expiry ({} token requests); the current one is accepted; {templated}",
            tokens.len() - 1,
            sim.token_calls()
        ))
    }

    /// examples/output-templates.yaml: the same provider's token as a
    /// basic-auth Secret with rendered keys, checked with the simulator.
    fn output_templates(&self) -> anyhow::Result<String> {
        let (kubectl, sim) = (self.kubectl, &self.sims.oauth2);
        step("applying examples/output-templates.yaml (a basic-auth Secret with a config.json, a .env file and a URL)");
        self.apply_example("output-templates.yaml", |_| vec![])?;
        kubectl.wait_ready("demo", &["example-api-templated"])?;
        step("the rendered Secret");
        let secret = kubectl.secret_keys("demo", "example-api-config")?;
        let kind = kubectl.json(&["get", "secret", "example-api-config", "-n", "demo"])?["type"].clone();
        ensure!(
            kind == "kubernetes.io/basic-auth",
            "the Secret's type is {kind}, not kubernetes.io/basic-auth"
        );
        let token = secret.get("access_token")?;
        let config: Value = serde_json::from_str(secret.get("config.json")?).context("config.json is not JSON")?;
        ensure!(
            config["token"] == token && sim.is_valid_token(token),
            "config.json does not hold the issued token, or the provider refuses it"
        );
        ensure!(secret.get("password")? == token, "password is not the token");
        ensure!(
            secret.get(".env")?.lines().any(|l| l == format!("API_TOKEN={token}")),
            ".env has no API_TOKEN line with the token"
        );
        ensure!(
            secret.get("jobs-url")?.contains("authorization=Bearer%20"),
            "jobs-url does not carry the urlencoded header"
        );
        Ok("demo/example-api-templated Ready as a kubernetes.io/basic-auth Secret whose config.json, .env and URL carry the accepted token".into())
    }

    async fn smartrecruiters(&self) -> anyhow::Result<String> {
        let (kubectl, sim) = (self.kubectl, &self.sims.smartrecruiters);
        heading("SmartRecruiters: apiKey, clientCredentials, partnerIntegration");
        let (base, token) = (sim.url(), sim.token_url());
        let urls = [("baseUrl", base.as_str()), ("tokenUrl", token.as_str())];
        for file in [
            "smartrecruiters-api-key.yaml",
            "smartrecruiters-client-credentials.yaml",
        ] {
            step(&format!(
                "applying examples/{file} (ClusterProvider URLs pointed at the simulator)"
            ));
            self.apply_example(file, |doc| {
                point_at(doc, &urls);
                vec![]
            })?;
        }
        step(
            "applying examples/smartrecruiters-partner.yaml, plus a second partner Integration \
             (company GLOBEX) on the same master credentials",
        );
        self.apply_example("smartrecruiters-partner.yaml", |doc| {
            if doc["kind"] != "Integration" {
                return vec![];
            }
            let mut second = doc.clone();
            second["metadata"]["name"] = "globex-partner".into();
            second["spec"]["partnerIntegration"]["companyId"] = "GLOBEX".into();
            second["spec"]["target"]["name"] = "globex-smartrecruiters-credentials".into();
            vec![second]
        })?;
        let names = [
            "acme-smartrecruiters",
            "acme-smartrecruiters-oauth",
            "acme-partner",
            "globex-partner",
        ];
        kubectl.wait_ready(NS, &names)?;
        kubectl.get_integrations(NS, &names)?;
        step("the partner integrations' ids, from status.integrationId");
        kubectl.show(&[
            "get",
            "integrations",
            "-n",
            NS,
            "acme-partner",
            "globex-partner",
            "-o",
            "custom-columns=NAME:.metadata.name,COMPANY:.spec.partnerIntegration.companyId,INTEGRATION-ID:.status.integrationId",
        ])?;
        step("the generated Secrets");
        let api_key = kubectl.secret_keys(NS, "acme-smartrecruiters")?;
        let oauth = kubectl.secret_keys(NS, "acme-smartrecruiters-oauth-credentials")?;
        let acme = kubectl.secret_keys(NS, "acme-smartrecruiters-credentials")?;
        let globex = kubectl.secret_keys(NS, "globex-smartrecruiters-credentials")?;

        // What an application could do with them.
        ensure!(
            api_key.get("header_name")? == "X-SmartToken" && sim.is_valid_api_key(api_key.get("header_value")?),
            "the published API key is not accepted"
        );
        ensure!(
            sim.token_client(oauth.get("access_token")?).as_deref() == Some(example::SR_CLIENT_ID),
            "the clientCredentials token is not accepted"
        );
        let created = sim.integrations();
        ensure!(
            created.len() == 2,
            "expected 2 partner integrations, SmartRecruiters has {}",
            created.len()
        );
        let mut ids = Vec::new();
        for (name, secret) in [("acme-partner", &acme), ("globex-partner", &globex)] {
            let status_id = kubectl.ready(NS, name)?.integration_id.unwrap_or_default();
            let made = created
                .iter()
                .find(|c| c.integration_id == status_id)
                .with_context(|| format!("{name}: status.integrationId {status_id:?} is not a partner integration"))?;
            ensure!(
                secret.get("integration_id")? == status_id
                    && sim.token_client(secret.get("access_token")?).as_deref() == Some(made.client_id.as_str()),
                "{name}: the Secret does not hold that integration's working token"
            );
            ids.push(status_id);
        }
        let master_calls = sim.token_calls_for(example::SR_MASTER_ID);
        println!("  partner master-token requests for both partner Integrations: {master_calls}");
        ensure!(
            master_calls == 1,
            "two partner Integrations on the same master credentials made {master_calls} master-token requests, not 1"
        );
        let seen = sim.client_auth_seen();
        ensure!(
            seen.iter()
                .all(|(_, m)| *m == crate::sim::smartrecruiters::ClientAuth::Body),
            "a token request did not carry the client credentials in the form body: {seen:?}"
        );
        Ok(format!(
            "SmartRecruiters: API key published as X-SmartToken and accepted; OAuth client exchanged for a token, id and secret in the form body; \
             2 partner integrations created ({}) with 1 master-token request between them",
            ids.join(", ")
        ))
    }

    fn talentlink(&self) -> anyhow::Result<String> {
        let (kubectl, sim) = (self.kubectl, &self.sims.talentlink);
        heading("Cornerstone TalentLink: basicAuth");
        step("applying examples/talentlink.yaml (baseUrl pointed at the simulator)");
        let base = sim.base_url();
        self.apply_example("talentlink.yaml", |doc| {
            point_at(doc, &[("baseUrl", &base)]);
            vec![]
        })?;
        kubectl.wait_ready(NS, &["acme-talentlink"])?;
        kubectl.get_integrations(NS, &["acme-talentlink"])?;
        step("the generated Secret");
        let secret = kubectl.secret_keys(NS, "acme-talentlink-credentials")?;
        ensure!(
            sim.accepts(secret.get("authorization")?, secret.get("api_key")?),
            "TalentLink does not accept the published Basic header and API key"
        );
        Ok(format!(
            "Cornerstone TalentLink: username, password and API key validated ({} GET /department) and published as a Basic header plus api_key; accepted",
            sim.calls("department")
        ))
    }

    async fn cloud_elements(&self) -> anyhow::Result<String> {
        let (kubectl, sim) = (self.kubectl, &self.sims.cloud_elements);
        heading("Cloud Elements / SAP Open Connectors: elementInstance");
        step("applying examples/cloud-elements.yaml (baseUrl pointed at the simulator)");
        let base = sim.base_url();
        self.apply_example("cloud-elements.yaml", |doc| {
            point_at(doc, &[("baseUrl", &base)]);
            vec![]
        })?;
        kubectl.wait_ready(NS, &["acme-elements"])?;
        kubectl.get_integrations(NS, &["acme-elements"])?;
        let id = kubectl.ready(NS, "acme-elements")?.integration_id.unwrap_or_default();
        println!("  status.integrationId (the element instance id): {id}");
        step("the generated Secret");
        let secret = kubectl.secret_keys(NS, "acme-elements-credentials")?;
        ensure!(
            sim.accepts(secret.get("authorization")?),
            "the platform does not accept the published header"
        );
        let instances = sim.instances();
        ensure!(
            instances.len() == 1 && instances.keys().next().map(u64::to_string) == Some(id.clone()),
            "expected exactly instance {id} on the platform, found {:?}",
            instances.keys().collect::<Vec<_>>()
        );
        println!("  element instances on the platform: {}", sim.instance_count());

        step("deleting the Integration: its finalizer deletes the element instance first");
        kubectl.show(&["delete", "integration", "acme-elements", "-n", NS, "--timeout=30s"])?;
        let deleted = sim.deleted();
        println!(
            "  element instances on the platform: {} (deleted: {:?})",
            sim.instance_count(),
            deleted
        );
        ensure!(
            sim.instance_count() == 0 && deleted.iter().any(|d| d.to_string() == id),
            "the element instance {id} was not deleted with the Integration"
        );
        Ok(format!(
            "Cloud Elements: element instance {id} created and its token published (accepted); deleting the Integration deleted the instance through the finalizer"
        ))
    }

    async fn kombo(&self) -> anyhow::Result<String> {
        let (kubectl, sim) = (self.kubectl, &self.sims.kombo);
        heading("Kombo: connection");
        step("applying examples/kombo.yaml (baseUrl pointed at the simulator)");
        let base = sim.base_url();
        step("the admin stores Kombo's webhook secret in the operator's namespace and names it in the ClusterProvider");
        const WEBHOOK_SECRET: &str = "demo-kombo-webhook-secret";
        kubectl.show(&[
            "create",
            "secret",
            "generic",
            "kombo-webhook",
            "-n",
            OPERATOR_NS,
            "--from-literal=webhook_secret=demo-kombo-webhook-secret",
        ])?;
        self.apply_example("kombo.yaml", |doc| {
            point_at(doc, &[("baseUrl", &base)]);
            if doc["kind"] == "ClusterProvider" {
                let mut secret_ref = serde_yaml::Mapping::new();
                secret_ref.insert("name".into(), "kombo-webhook".into());
                let mut webhook = serde_yaml::Mapping::new();
                webhook.insert("secretRef".into(), secret_ref.into());
                doc["spec"]["webhook"] = webhook.into();
            }
            vec![]
        })?;
        let webhook_url = format!("http://{}/webhooks/kombo/kombo", self.inbound_addr);
        sim.set_webhook(&webhook_url, WEBHOOK_SECRET);
        println!("  webhook registered at Kombo (simulated): {webhook_url}");
        step("acme-kombo: the operator creates a connect link and publishes it in status");
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiting = loop {
            let c = kubectl.ready(NS, "acme-kombo")?;
            if c.reason == "AwaitingConnection" {
                break c;
            }
            ensure!(
                Instant::now() < deadline,
                "acme-kombo did not publish a connect link (Ready={} {}: {})",
                c.status,
                c.reason,
                c.message
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        kubectl.get_integrations(NS, &["acme-kombo"])?;
        println!("  Ready condition message: {}", waiting.message);
        let link = sim.links().first().map(|l| l.url.clone()).context("no connect link")?;
        ensure!(
            waiting.message.contains(&link),
            "the link Kombo made is not in the status"
        );
        step("the customer completes the connect link (simulated)");
        let id = sim
            .complete_link(&link, "smartrecruiters")
            .context("the simulator could not complete the link")?;
        println!("  Kombo created integration {id}");
        // Kombo reports a finished link by its signed integration-created
        // webhook: the operator's inbound server records it on the
        // Integration and the leader finishes the connection, without the
        // admin (who otherwise names the id in spec.connection.integrationId).
        step("Kombo sends the signed integration-created webhook to the operator's inbound server");
        let event = sim
            .integration_created_event(&id)
            .context("the simulator has no such integration")?;
        let status = sim.deliver(&event).await?;
        println!("  POST {webhook_url} (X-Kombo-Signature): HTTP {status}");
        ensure!(status == 200, "the operator answered the webhook with HTTP {status}");
        kubectl.wait_ready(NS, &["acme-kombo", "globex-kombo"])?;
        kubectl.get_integrations(NS, &["acme-kombo", "globex-kombo"])?;
        step("the generated Secrets");
        let acme = kubectl.secret_keys(NS, "acme-kombo-credentials")?;
        let globex = kubectl.secret_keys(NS, "globex-kombo-credentials")?;
        for (secret, expected) in [(&acme, id.as_str()), (&globex, example::KOMBO_EXISTING_ID)] {
            ensure!(
                secret.get("extra_header_value")? == expected
                    && sim.accepts(
                        secret.get("header_value")?.trim_start_matches("Bearer ").trim(),
                        expected
                    ),
                "the Secret for {expected} does not hold working credentials"
            );
        }
        Ok(format!(
            "Kombo: connect link (MAGIC_LINK) published in status (AwaitingConnection); the customer completed it, Kombo's signed integration-created webhook reached the inbound server, integration {id} Ready without the admin; existing integration {} validated; both accepted",
            example::KOMBO_EXISTING_ID
        ))
    }
}

/// `arg` as a POSIX shell would need it to be typed.
fn shell_quote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Points a ClusterProvider document at a simulator: sets the URL fields
/// and the admin opt-ins for plain http and 127.0.0.1 that a simulator
/// needs (a production ClusterProvider has neither).
fn point_at(doc: &mut serde_yaml::Value, urls: &[(&str, &str)]) {
    if doc["kind"] != "ClusterProvider" {
        return;
    }
    let spec = &mut doc["spec"];
    for (field, url) in urls {
        spec[*field] = (*url).into();
    }
    spec["allowInsecureHttp"] = true.into();
    spec["allowPrivateAddresses"] = true.into();
}

fn tempfile_dir(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn stop(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SIGTERM, so the operator shuts down gracefully.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
