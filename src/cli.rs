//! The command line: `run` (the operator), `crds` (print the CRD YAML), and
//! the command-line companion's subcommands (`status`, `renew`, `explain`,
//! `check`; see [`crate::companion`]). Every flag of `run` can also be set
//! from the environment.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Client, Config, api::PostParams, config::KubeConfigOptions};
use rand::RngCore;
use tracing::info;

use crate::{
    companion,
    controller::{self, RetryPolicy, Settings, output::Fingerprinter},
    crd, inbound,
    providers::{Drivers, ProviderHttp, limiter::Limiter},
    telemetry::{self, Health, Metrics},
};

/// Manages third-party API integrations as Kubernetes custom resources.
#[derive(Debug, Parser)]
#[command(name = "integration-operator", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the cluster of the kubeconfig (or in-cluster).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    #[command(flatten)]
    Companion(companion::Command),
}

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG_PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "LOG_LEVEL", default_value = "info,kube=warn")]
    pub log_level: String,
    /// Namespace of the operator's own state (the fingerprint key Secret).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Instance name shown in Events.
    #[arg(long, env = "POD_NAME", default_value = "integration-operator")]
    pub instance: String,
    /// Reconciles in flight at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 64)]
    pub concurrency: u16,
    /// First retry delay after a transient failure (doubles per failure), e.g. 5s.
    #[arg(long, env = "RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Longest retry delay, e.g. 5m.
    #[arg(long, env = "RETRY_MAX", default_value = "5m", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// Namespaces to manage, comma-separated; empty: all namespaces. With a
    /// list, the operator watches only those namespaces, so namespaced RBAC
    /// (Roles) is enough for Integrations and Secrets.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub watch_namespaces: Vec<String>,
    /// Run several replicas safely: only the holder of a coordination.k8s.io
    /// Lease reconciles; the others stand by and take over when it goes.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease (in --namespace).
    #[arg(long, env = "LEASE_NAME", default_value = "integration-operator")]
    pub lease_name: String,
    /// This operator's shard among several active ones, as INDEX/COUNT
    /// (e.g. 0/3): it works only on the namespaces whose hash falls to
    /// INDEX, elects its leader with its own Lease (LEASE_NAME-shard-INDEX-of-COUNT)
    /// and takes 1/COUNT of each ClusterProvider's maxConcurrency and
    /// requestsPerSecond. Start every INDEX below COUNT, each with the same
    /// COUNT; see docs/scaling.md.
    #[arg(long, env = "SHARD", default_value = "0/1")]
    pub shard: controller::shard::Shard,
    /// Seconds a leader holds the Lease without renewing it before another replica may take over.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Retry delay after a failure a person must fix (bad spec, missing Secret), e.g. 5m.
    #[arg(long, env = "RETRY_INVALID", default_value = "5m", value_parser = parse_duration)]
    pub retry_invalid: Duration,
    /// How late a renewal may be (at most half the time left to expiry, at
    /// least 5s) before it is RenewalOverdue; also how long renewals may be
    /// overdue with no reconcile finishing before /livez fails.
    #[arg(long, env = "RENEWAL_OVERDUE_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub renewal_overdue_after: Duration,
    /// Shortest time from an exchange to one that a consumer's rejection
    /// report (the credentials-rejected annotation) causes, per Integration.
    #[arg(long, env = "REJECTION_REPORT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub rejection_report_interval: Duration,
    /// Address of the inbound server (provider webhooks), e.g. 0.0.0.0:8443;
    /// unset: no inbound server. Its own port, never the metrics port.
    #[arg(long, env = "INBOUND_ADDR")]
    pub inbound_addr: Option<SocketAddr>,
    /// PEM certificate chain the inbound server presents (mounted from a
    /// Secret, e.g. cert-manager's); read again when the file changes.
    #[arg(long, env = "INBOUND_TLS_CERT", requires = "inbound_tls_key")]
    pub inbound_tls_cert: Option<PathBuf>,
    /// PEM private key of --inbound-tls-cert.
    #[arg(long, env = "INBOUND_TLS_KEY", requires = "inbound_tls_cert")]
    pub inbound_tls_key: Option<PathBuf>,
    /// Serve the inbound endpoints over plain HTTP (tests on 127.0.0.1, or
    /// behind a proxy that terminates TLS). Without it, TLS is required.
    #[arg(long, env = "INBOUND_INSECURE_HTTP", default_value_t = false)]
    pub inbound_insecure_http: bool,
    /// Inbound requests per second per source address (with a burst of
    /// five times as many).
    #[arg(long, env = "INBOUND_RATE", default_value_t = 5)]
    pub inbound_rate: u32,
    /// How long a webhook's event id is remembered (a repeat is refused as
    /// a replay) and how old an event's own time may be (older is stale), e.g. 1h.
    #[arg(long, env = "INBOUND_REPLAY_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub inbound_replay_window: Duration,
    /// How long in-flight reconciles may take to finish on shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    controller::schedule::parse_duration(s)
}

/// Name of the Secret holding the key of the operator's keyed fingerprints.
pub const FINGERPRINT_KEY_SECRET: &str = "integration-operator-fingerprint-key";

impl Cli {
    /// The command line of this process. Invoked as `kubectl-integration`
    /// (kubectl runs it for `kubectl integration …`, typically through a
    /// symlink to this binary), it is the companion alone.
    pub fn from_env() -> Self {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        if companion::invoked_as_plugin(&argv0) {
            Cli {
                command: Command::Companion(companion::PluginCli::parse().command),
            }
        } else {
            Cli::parse()
        }
    }

    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crds => {
                print!("{}", crd::crds_yaml()?);
                Ok(())
            }
            Command::Run(args) => run(*args).await,
            Command::Companion(command) => {
                // A person reads this: the message and its causes on one
                // line, without the backtrace anyhow adds when
                // RUST_BACKTRACE is set, and exit status 1.
                if let Err(e) = command.execute().await {
                    use std::io::Write as _;
                    let _ = std::io::stdout().flush();
                    eprintln!("error: {e:#}");
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_json, &args.log_level);
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await.context("no kubeconfig and not in a cluster")?,
    };
    let operator = Operator::start(crate::api_client::build(config)?, args).await?;
    operator.run_until(shutdown_signal()).await;
    Ok(())
}

/// A running operator: the controller and the metrics/health server.
pub struct Operator {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Where the inbound server listens, if it is on.
    pub inbound_addr: Option<SocketAddr>,
    inbound: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    shutdown_grace: Duration,
}

impl Operator {
    /// Starts the operator on `client` with the settings of `args` (logging
    /// is the caller's business). Tests start it this way too, so they run
    /// exactly what the binary runs.
    pub async fn start(client: Client, args: RunArgs) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let health = Health::default();
        let wait_metrics = metrics.clone();
        let call_metrics = metrics.clone();
        let limiter =
            Limiter::with_wait_observer(move |provider, waited| wait_metrics.rate_limit_wait(provider, waited));
        let http = ProviderHttp::new(
            limiter.clone(),
            Arc::new(move |provider, outcome, took| call_metrics.provider_call(provider, outcome, took)),
        )?;
        let key = fingerprint_key(&client, &args.namespace).await?;
        let inbound_config = inbound_config(&args)?;
        let listener = tokio::net::TcpListener::bind(args.metrics_addr)
            .await
            .with_context(|| format!("binding {}", args.metrics_addr))?;
        let metrics_addr = listener.local_addr()?;
        let server = tokio::spawn({
            let (metrics, health) = (metrics.clone(), health.clone());
            async move {
                if let Err(e) = telemetry::serve(listener, metrics, health).await {
                    tracing::error!(error = %e, "metrics server failed");
                }
            }
        });
        info!(version = env!("CARGO_PKG_VERSION"), %metrics_addr, "starting integration-operator");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watch_namespaces: Vec<String> = args
            .watch_namespaces
            .into_iter()
            .filter(|n| !n.trim().is_empty())
            .collect();
        let (inbound_addr, inbound) = match inbound_config {
            None => (None, None),
            Some(config) => {
                let listener = inbound::bind(&config).await?;
                let addr = listener.local_addr()?;
                let app = inbound::router(
                    inbound::kombo::KomboWebhooks::new(
                        client.clone(),
                        args.namespace.clone(),
                        watch_namespaces.clone(),
                        Fingerprinter::new(key.clone()),
                        args.inbound_replay_window,
                    ),
                    inbound::smartrecruiters::PartnerEndpoints::new(
                        client.clone(),
                        watch_namespaces.clone(),
                        Fingerprinter::new(key.clone()),
                    ),
                    controller::authorization::CallbackState {
                        client: client.clone(),
                        fingerprinter: Fingerprinter::new(key.clone()),
                    },
                    Arc::new(inbound::RateLimiter::new(config.rate_per_second, config.burst)),
                    metrics.clone(),
                );
                info!(inbound_addr = %addr, tls = config.tls.is_some(), "inbound server listening");
                let task = tokio::spawn(async move {
                    if let Err(e) = inbound::serve(listener, config, app).await {
                        tracing::error!(error = %e, "inbound server failed");
                    }
                });
                (Some(addr), Some(task))
            }
        };
        let settings = Settings {
            drivers: Drivers::new(http),
            limiter,
            fingerprinter: Fingerprinter::new(key),
            metrics,
            health,
            retry: RetryPolicy {
                base: args.retry_base,
                max: args.retry_max,
                invalid: args.retry_invalid,
            },
            concurrency: args.concurrency,
            instance: args.instance,
            watch_namespaces,
            stall_after: args.renewal_overdue_after,
            report_interval: args.rejection_report_interval,
            shard: args.shard,
        };
        let controller = if args.leader_elect {
            let lease =
                kube_lease_manager::LeaseManagerBuilder::new(client.clone(), args.shard.lease_name(&args.lease_name))
                    .with_namespace(&args.namespace)
                    .with_identity(&settings.instance)
                    .with_duration(args.lease_duration_seconds.max(2))
                    .with_grace((args.lease_duration_seconds / 3).max(1))
                    .build()
                    .await
                    .context("setting up leader election")?;
            tokio::spawn(lead_then_run(client, settings, lease, stopped))
        } else {
            settings.health.set_standby(false);
            tokio::spawn(controller::run(client, settings, async move {
                let _ = stopped.await;
            }))
        };
        Ok(Self {
            metrics_addr,
            inbound_addr,
            inbound,
            stop,
            controller,
            server,
            shutdown_grace: args.shutdown_grace,
        })
    }

    /// Runs until `shutdown` resolves (or the controller ends), then stops gracefully.
    pub async fn run_until(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::select! {
            _ = shutdown => {}
            _ = &mut self.controller => {}
        }
        self.stop().await;
    }

    /// Stops gracefully: in-flight reconciles finish (within the shutdown
    /// grace: a stuck one must not keep a replaced pod alive), no new ones start.
    pub async fn stop(mut self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(self.shutdown_grace, &mut self.controller)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.shutdown_grace, "in-flight reconciles did not finish; stopping anyway");
            self.controller.abort();
        }
        self.server.abort();
        if let Some(inbound) = self.inbound.take() {
            inbound.abort();
        }
    }
}

/// The inbound server's settings, checked: TLS unless plain HTTP is asked for.
fn inbound_config(args: &RunArgs) -> anyhow::Result<Option<inbound::InboundConfig>> {
    let Some(addr) = args.inbound_addr else {
        return Ok(None);
    };
    let tls = match (
        &args.inbound_tls_cert,
        &args.inbound_tls_key,
        args.inbound_insecure_http,
    ) {
        (Some(cert), Some(key), false) => Some((cert.clone(), key.clone())),
        (None, None, true) => None,
        (Some(_), Some(_), true) => anyhow::bail!("--inbound-insecure-http and --inbound-tls-cert exclude each other"),
        _ => anyhow::bail!(
            "--inbound-addr needs --inbound-tls-cert and --inbound-tls-key (or, for plain HTTP, --inbound-insecure-http)"
        ),
    };
    Ok(Some(inbound::InboundConfig {
        addr,
        tls,
        rate_per_second: args.inbound_rate.max(1),
        burst: args.inbound_rate.max(1).saturating_mul(5),
    }))
}

/// With leader election: stand by until this replica holds the Lease, run the
/// controller while it does, stop it the moment the Lease is lost, and
/// release the Lease on shutdown so the next replica takes over at once.
async fn lead_then_run(
    client: Client,
    settings: Settings,
    lease: kube_lease_manager::LeaseManager,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let (mut leading, lease_task) = lease.watch().await;
    settings.health.set_standby(true);
    loop {
        // Stand by.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return; },
                _ = &mut stopped => {
                    drop(leading);
                    let _ = lease_task.await;
                    return;
                }
            }
        }
        info!(instance = %settings.instance, "became leader");
        settings.health.set_standby(false);
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let term = tokio::spawn(controller::run(client.clone(), settings.clone(), async move {
            let _ = lost_rx.await;
        }));
        let shutting_down = loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() { break false; }
                }
                _ = &mut stopped => break true,
            }
        };
        let _ = lost_tx.send(());
        let _ = term.await;
        settings.health.set_ready(false);
        settings.health.set_standby(true);
        if shutting_down {
            info!("released leadership on shutdown");
            drop(leading);
            let _ = lease_task.await;
            return;
        }
        info!("lost leadership; standing by");
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested");
    // Before the shutdown drops the caches: the profile's end is the
    // operator as it ran.
    crate::heap_profile::finish();
}

/// The key of the keyed fingerprints, kept in a Secret of the operator's
/// namespace so that every replica and every restart uses the same one (a new
/// key would make every Secret look changed and cost a provider call each).
async fn fingerprint_key(client: &Client, namespace: &str) -> anyhow::Result<Vec<u8>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(FINGERPRINT_KEY_SECRET).await? {
            let key = secret
                .data
                .and_then(|d| d.get("key").cloned())
                .map(|b| b.0)
                .filter(|k| k.len() >= 32)
                .with_context(|| format!("Secret {namespace}/{FINGERPRINT_KEY_SECRET} has no 32-byte key"))?;
            return Ok(key);
        }
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(FINGERPRINT_KEY_SECRET.into()),
                namespace: Some(namespace.into()),
                labels: Some(
                    [(
                        controller::output::MANAGED_BY_LABEL.to_string(),
                        controller::output::MANAGED_BY.to_string(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some([("key".to_string(), ByteString(key.clone()))].into()),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(key),
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not read or create Secret {namespace}/{FINGERPRINT_KEY_SECRET}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
