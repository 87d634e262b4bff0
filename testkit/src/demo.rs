//! `make demo`: the operator's main job end to end on one machine, with no
//! cluster and no provider account. Starts the Kubernetes API emulator and an
//! OAuth 2.0 token-server simulator on 127.0.0.1, applies the CRDs and the
//! example manifests with the real `kubectl`, runs the real operator binary,
//! and shows the Integration becoming Ready, its Secret, and renewals of a
//! short-lived token. It ends by itself and says what happened.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{emulator::Emulator, sim::oauth2::OAuth2Sim};

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The operator binary to run.
    #[arg(long, env = "OPERATOR_BIN", default_value = "target/debug/integration-operator")]
    pub operator: PathBuf,
    /// The kubectl binary.
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    pub kubectl: String,
    /// Lifetime of the simulator's tokens, in seconds (short, to show renewals).
    #[arg(long, default_value_t = 6)]
    pub token_lifetime: u64,
    /// How many renewals to wait for before ending.
    #[arg(long, default_value_t = 2)]
    pub renewals: usize,
    /// Working directory for the kubeconfig, manifests and the operator's log.
    #[arg(long, default_value = "target/demo")]
    pub workdir: PathBuf,
}

const CLIENT_ID: &str = "demo-client";
const CLIENT_SECRET: &str = "demo-secret-change-me";

struct Kubectl<'a> {
    bin: &'a str,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
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
        println!("$ kubectl {}", args.join(" "));
        let out = self.run(args)?;
        for line in out.lines() {
            println!("  {line}");
        }
        Ok(out)
    }
}

fn step(text: &str) {
    println!("\n== {text}");
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

    step("starting the Kubernetes API emulator (in-process, 127.0.0.1; not a real cluster)");
    let emulator = Emulator::start().await?;
    let kubeconfig = workdir.join("kubeconfig");
    std::fs::copy(emulator.kubeconfig_path(), &kubeconfig)?;
    println!("  API at {}, kubeconfig at {}", emulator.url(), kubeconfig.display());
    let cache = tempfile_dir(&workdir, "kubectl-cache")?;
    let kubectl = Kubectl {
        bin: &args.kubectl,
        kubeconfig: kubeconfig.clone(),
        cache,
    };

    step(&format!(
        "starting an OAuth 2.0 token-server simulator issuing {}-second tokens",
        args.token_lifetime
    ));
    let sim = OAuth2Sim::start().await?;
    sim.add_client(CLIENT_ID, CLIENT_SECRET);
    sim.set_token_lifetime(Some(args.token_lifetime));
    println!("  token endpoint {}", sim.token_url());

    step("installing the CRDs");
    kubectl.show(&["apply", "-f", "crds/crds.yaml"])?;
    kubectl.show(&[
        "wait",
        "--for=condition=Established",
        "crd/integrations.integration-operator.io",
        "crd/clusterproviders.integration-operator.io",
        "--timeout=30s",
    ])?;

    step("applying examples/oauth2-client-credentials.yaml (tokenUrl pointed at the simulator)");
    let manifest = demo_manifest(Path::new("examples/oauth2-client-credentials.yaml"), &sim.token_url())?;
    let manifest_path = workdir.join("example.yaml");
    std::fs::write(&manifest_path, manifest)?;
    kubectl.show(&["apply", "-f", &manifest_path.to_string_lossy()])?;

    step("starting the operator");
    let log_path = workdir.join("operator.log");
    let log = std::fs::File::create(&log_path)?;
    let mut operator = tokio::process::Command::new(&args.operator)
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("LOG_LEVEL", "info,kube=warn")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.operator.display()))?;
    println!("  {} (log: {})", args.operator.display(), log_path.display());

    let result = watch(&kubectl, &sim, &args).await;

    step("stopping the operator");
    stop(&mut operator).await;
    match result {
        Ok(summary) => {
            step("what happened");
            println!("{summary}");
            println!(
                "  demo passed in {:.1}s — everything ran on 127.0.0.1 against the API emulator, not a real cluster",
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

async fn watch(kubectl: &Kubectl<'_>, sim: &OAuth2Sim, args: &DemoArgs) -> anyhow::Result<String> {
    step("waiting for the Integration to become Ready");
    kubectl.show(&[
        "wait",
        "--for=condition=Ready",
        "integration/example-api",
        "-n",
        "demo",
        "--timeout=60s",
    ])?;
    kubectl.show(&["get", "integrations", "-n", "demo"])?;

    step("the generated Secret (values of credentials not shown)");
    let secret = secret_json(kubectl)?;
    print_secret(&secret);
    let first_token = token_of(&secret)?;
    if !sim.is_valid_token(&first_token) {
        bail!("the Secret's access_token is not one the provider accepts");
    }

    step(&format!("watching {} renewals of the short-lived token", args.renewals));
    let mut tokens = vec![first_token];
    let deadline = Instant::now() + Duration::from_secs(args.token_lifetime * (args.renewals as u64 + 2) + 10);
    while tokens.len() <= args.renewals {
        if Instant::now() > deadline {
            bail!("no renewal seen within the deadline ({} tokens seen)", tokens.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let secret = secret_json(kubectl)?;
        let token = token_of(&secret)?;
        let expires_at = field(&secret, "expires_at")?;
        if token != *tokens.last().unwrap_or(&String::new()) {
            println!(
                "  {} renewed: new token valid until {} (previous one had not expired yet: {})",
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or(jiff::Timestamp::now()),
                expires_at,
                tokens.last().is_some_and(|t| sim.is_valid_token(t))
            );
            tokens.push(token);
        }
    }
    kubectl.show(&["get", "integrations", "-n", "demo"])?;
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
    Ok(format!(
        "  Integration demo/example-api became Ready; Secret demo/example-api-credentials holds a working bearer token\n  \
         the token was renewed {} times before expiry (token endpoint called {} times); the current token is accepted: {}",
        tokens.len() - 1,
        sim.token_calls(),
        sim.is_valid_token(&last)
    ))
}

fn secret_json(kubectl: &Kubectl<'_>) -> anyhow::Result<Value> {
    let out = kubectl.run(&["get", "secret", "example-api-credentials", "-n", "demo", "-o", "json"])?;
    Ok(serde_json::from_str(&out)?)
}

fn field(secret: &Value, key: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let b64 = secret["data"][key]
        .as_str()
        .with_context(|| format!("the Secret has no {key}"))?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(b64)?,
    )?)
}

fn token_of(secret: &Value) -> anyhow::Result<String> {
    field(secret, "access_token")
}

fn print_secret(secret: &Value) {
    let labels = &secret["metadata"]["labels"];
    println!("  labels: {labels}");
    if let Some(data) = secret["data"].as_object() {
        for key in data.keys() {
            let shown = match key.as_str() {
                "expires_at" | "token_type" | "header_name" | "base_url" => field(secret, key).unwrap_or_default(),
                _ => "(set, not shown)".to_string(),
            };
            println!("  {key}: {shown}");
        }
    }
}

/// The example manifest with the ClusterProvider pointed at the simulator
/// (plain http on loopback, which a ClusterProvider must opt into).
fn demo_manifest(example: &Path, token_url: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(example).with_context(|| format!("reading {}", example.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut value: serde_yaml::Value = serde::Deserialize::deserialize(doc)?;
        if value["kind"] == "ClusterProvider" {
            let spec = &mut value["spec"];
            spec["tokenUrl"] = token_url.into();
            spec["allowInsecureHttp"] = true.into();
            spec["allowPrivateAddresses"] = true.into();
        }
        docs.push(serde_yaml::to_string(&value)?);
    }
    Ok(docs.join("---\n"))
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
