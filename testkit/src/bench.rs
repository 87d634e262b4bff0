//! `make bench`: the real operator binary against a real Kubernetes control
//! plane (kube-apiserver, etcd, kube-controller-manager from
//! `testkit/control-plane`, a fresh one per scale) and an OAuth 2.0
//! simulator with configurable latency, at several scales. The operator
//! talks to the apiserver through [`crate::api_proxy`], which counts its
//! requests by verb and resource (the harness's own requests go around it).
//! Prints one table of figures with their goals; it never fails on timing.
//!
//! Figures per scale N (Integrations spread over namespaces and ClusterProviders):
//! cold start (all N Ready; per-Integration p50/p99 from creation to Ready,
//! against the limit set by provider latency, allowed concurrency and rate,
//! and the API round trips: see `cold_start_limit`; the round trips are
//! measured twice, at the idle apiserver's latency and as the time the
//! reference client of `bench/reference.rs` needs on a fresh control plane
//! to make only the unskippable calls for the same N),
//! operator RSS, RSS growth from unrelated 1 MiB Secrets, quiet steady state
//! (writes and provider calls with nothing due), restart (provider calls,
//! writes, time until every Integration was re-evaluated), time to Ready of
//! new Integrations while N exist, and CPU seconds of the operator, of the
//! control plane (its processes), and of this harness with the simulator.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
    core::{ApiResource, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use crate::{api_proxy::ApiProxy, control_plane::ControlPlane, sim::oauth2::OAuth2Sim};

mod reference;

/// Options of `testkit bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The operator binary (build it with --release for meaningful figures).
    #[arg(long, env = "OPERATOR_BIN", default_value = "target/dist/integration-operator")]
    pub operator: PathBuf,
    /// Scales to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub integrations: Vec<usize>,
    /// Namespaces the Integrations are spread over.
    #[arg(long, default_value_t = 4)]
    pub namespaces: usize,
    /// ClusterProviders the Integrations are spread over.
    #[arg(long, default_value_t = 2)]
    pub providers: usize,
    /// Latency of every token request at the simulator, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// maxConcurrency of each ClusterProvider.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Unrelated 1 MiB Secrets added to measure memory growth (0 to skip).
    #[arg(long, default_value_t = 1000)]
    pub unrelated_secrets: usize,
    /// New Integrations measured for time to Ready while N exist.
    #[arg(long, default_value_t = 20)]
    pub new_integrations: usize,
    /// Token lifetime of the refresh wave, in seconds: a 1 h lifetime scaled
    /// down (0 skips the wave). Renewals fall between 70 % and 85 % of it.
    #[arg(long, default_value_t = 150)]
    pub wave_lifetime: u64,
    /// Provider latency during the refresh wave, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub wave_latency_ms: u64,
    /// requestsPerSecond of each ClusterProvider.
    #[arg(long, default_value_t = 500)]
    pub rate_limit: u32,
    /// Also run the cold start with the Integrations split over this many
    /// active operator processes, each owning a shard (`--shard i/K`,
    /// docs/scaling.md), comma-separated (e.g. 1,2,4); empty: no sharded run.
    #[arg(long, value_delimiter = ',')]
    pub shards: Vec<u32>,
    /// Stop each scale after the cold start, the quiet steady state and the
    /// unrelated Secrets (the figures memory work needs): no new
    /// Integrations, restart or wave. A run at 10,000 takes about 2 minutes
    /// instead of 6; the table shows "-" or zeros for what was skipped.
    #[arg(long)]
    pub cold_only: bool,
    /// Instead of the scales' table, measure throughput: N Integrations
    /// applied while no operator runs, then one operator started on the
    /// backlog; prints exchanges per second and where the CPU went. Pair
    /// it with a high --rate-limit and --concurrency to leave the provider
    /// unlimited (issue 18, item 5).
    #[arg(long)]
    pub throughput: bool,
    /// The operator's `--concurrency` (reconciles at once).
    #[arg(long, default_value_t = 128)]
    pub operator_concurrency: usize,
    /// Skip the reference client's cold start (a second fresh control plane
    /// per scale, see `bench/reference.rs`); the limit then counts API round
    /// trips at the idle apiserver's latency only.
    #[arg(long)]
    pub skip_reference: bool,
}

/// One scale's figures.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub n: usize,
    pub cold_start: Duration,
    pub cold_limit: Duration,
    /// Which term of the limit was the largest.
    pub cold_bound: &'static str,
    /// The limit without the reference client's term: API round trips at
    /// the idle apiserver's latency.
    pub cold_limit_idle: Duration,
    pub cold_bound_idle: &'static str,
    /// The reference client's cold start on a fresh control plane (None:
    /// skipped or not all Ready).
    pub cold_reference: Option<Duration>,
    /// How long the client took to apply the N Integrations.
    pub create_span: Duration,
    pub ready_p50: Duration,
    pub ready_p99: Duration,
    pub rss_mib: f64,
    /// Of `rss_mib`: anonymous (heap, stacks) and file-backed (the mapped
    /// binary and libraries).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    pub rss_growth_unrelated_mib: Option<f64>,
    pub steady_writes: u64,
    pub steady_calls: u64,
    pub restart_calls: u64,
    pub restart_writes: u64,
    /// Single-object reads (GET) at the restart, by resource.
    pub restart_gets: BTreeMap<String, u64>,
    pub restart_reevaluated: Duration,
    pub new_ready_p99: Duration,
    pub operator_cpu_s: f64,
    /// The control plane's processes (etcd, apiserver, controller manager).
    pub control_plane_cpu_s: f64,
    /// This harness and the provider simulator.
    pub bench_cpu_s: f64,
    pub all_ready: bool,
    pub wave: Option<Wave>,
    /// From the apiserver's own `/metrics`: requests to Secrets,
    /// Integrations and Events per Integration during the cold start (only
    /// the operator writes those then; reads include the harness's watch).
    pub apiserver_cold_writes_per_integration: f64,
    /// From the apiserver's own `/metrics`: writes to Secrets, Integrations
    /// and Events in the quiet steady state.
    pub apiserver_steady_writes: u64,
    /// Watches the operator holds open at the apiserver
    /// (`apiserver_longrunning_requests{verb="WATCH"}` with it running,
    /// minus after it stopped).
    pub operator_watches: i64,
}

/// The refresh wave's figures.
#[derive(Debug, Default, Clone)]
pub struct Wave {
    /// How long issuing every token took (they were all issued in this span).
    pub issue_span: Duration,
    pub renewals: u64,
    /// First to last renewal.
    pub window: Duration,
    pub mean_per_s: f64,
    pub busiest_per_s: u64,
    /// The busiest second and the mean as the operator scheduled the
    /// renewals (the renew-at it wrote with each token), before any ran.
    pub scheduled_busiest_per_s: u64,
    pub scheduled_mean_per_s: f64,
    /// Sum of the ClusterProviders' requestsPerSecond.
    pub rate_limit: u64,
    /// (Secret, scan) pairs where a Secret held an expired token.
    pub expired_seen: u64,
    pub new_ready_p50: Duration,
    pub new_ready_p99: Duration,
    pub operator_cpu_per_1000: f64,
    pub bench_cpu_per_1000: f64,
    /// Token calls while a 429's Retry-After was in force (after the 429).
    pub calls_during_retry_after: u64,
    pub retry_after: Duration,
    /// Secret and status writes per renewal.
    pub writes_per_renewal: f64,
    /// Event writes per renewal (reported apart: Events are the audit trail).
    pub event_writes_per_renewal: f64,
    /// GET and LIST requests per renewal (reads of any object).
    pub reads_per_renewal: f64,
    /// Writes to Secrets, Integrations (and status) and Events per renewal,
    /// from the apiserver's own `/metrics`.
    pub apiserver_writes_per_renewal: f64,
}

/// The apiserver's own `/metrics` text.
async fn apiserver_metrics(client: &Client) -> String {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    client.request_text(request).await.unwrap_or_default()
}

/// Writes (POST, PUT, PATCH, APPLY — the apiserver's verb for a
/// server-side apply —, DELETE) to the resources only the operator writes
/// while the bench measures: Secrets, Integrations (with status), Events.
fn operator_resource_writes(metrics: &str) -> u64 {
    let mut total = 0;
    for verb in ["POST", "PUT", "PATCH", "APPLY", "DELETE"] {
        for resource in ["secrets", "integrations", "events"] {
            total += crate::control_plane::sum_metric(
                metrics,
                "apiserver_request_total",
                &[("verb", verb), ("resource", resource)],
            );
        }
    }
    total
}

/// Watches open at the apiserver.
fn open_watches(metrics: &str) -> i64 {
    crate::control_plane::sum_metric(metrics, "apiserver_longrunning_requests", &[("verb", "WATCH")]) as i64
}

fn integration_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("integration-operator.io", "v1alpha1", "Integration"),
        "integrations",
    )
}

fn is_ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// A field of /proc/<pid>/status in KiB (0 if absent).
fn status_kib(status: &str, field: &str) -> f64 {
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// (anonymous, file-backed) resident MiB: the heap and stacks against the
/// pages of the mapped binary and libraries, which only a smaller binary
/// changes.
fn rss_split(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        status_kib(&status, "RssAnon") / 1024.0,
        status_kib(&status, "RssFile") / 1024.0,
    )
}

fn proc_stat(pid: u32) -> (f64, f64) {
    // (RSS MiB, CPU seconds user+system)
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status_kib(&status, "VmRSS");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the name).
    (rss_kib / 1024.0, (ticks(11) + ticks(12)) / 100.0)
}

/// CPU seconds (user + system) of `pid` and every process under it.
fn tree_cpu(pid: u32) -> f64 {
    let mut total = proc_stat(pid).1;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        // The parent pid is the second field after the command's ")".
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            total += tree_cpu(child);
        }
    }
    total
}

/// The operator's identity on the bench's cluster: the Helm chart's
/// ServiceAccount and RBAC for watching every namespace (in `default`),
/// talking through a counting proxy. Returns the proxy, the operator's
/// kubeconfig and the folder that holds it.
async fn operator_identity(
    cp: &ControlPlane,
    client: &Client,
) -> anyhow::Result<(ApiProxy, PathBuf, tempfile::TempDir)> {
    let sa = cp.install_chart_rbac(client, "default", "bench-operator", &[]).await?;
    let token = cp.service_account_token(client, "default", &sa).await;
    let admin = kube::config::Kubeconfig::read_from(cp.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(admin, &kube::config::KubeConfigOptions::default()).await?;
    let proxy = ApiProxy::start(&config).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("operator.kubeconfig");
    std::fs::write(
        &path,
        serde_yaml::to_string(&proxy.kubeconfig(&cp.token_kubeconfig(&token)))?,
    )?;
    Ok((proxy, path, dir))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Operator {
    child: tokio::process::Child,
    metrics: String,
}

impl Operator {
    async fn start(bin: &PathBuf, kubeconfig: &std::path::Path, port: u16) -> anyhow::Result<Operator> {
        Operator::start_shard(bin, kubeconfig, port, None).await
    }

    /// An operator process owning `shard` (`INDEX/COUNT`), or everything.
    async fn start_shard(
        bin: &PathBuf,
        kubeconfig: &std::path::Path,
        port: u16,
        shard: Option<&str>,
    ) -> anyhow::Result<Operator> {
        Operator::start_with(bin, kubeconfig, port, shard, 128).await
    }

    /// An operator process with `concurrency` reconciles at once.
    async fn start_with(
        bin: &PathBuf,
        kubeconfig: &std::path::Path,
        port: u16,
        shard: Option<&str>,
        concurrency: usize,
    ) -> anyhow::Result<Operator> {
        let mut command = tokio::process::Command::new(bin);
        if let Some(shard) = shard {
            command.env("SHARD", shard);
        }
        // Profiling hook: BENCH_HEAPTRACK_DIR=dir records each operator run's
        // heap with heaptrack's preload library (raw files, one per start;
        // `heaptrack_interpret < f.raw | gzip > f.gz; heaptrack_print f.gz`).
        if let Ok(dir) = std::env::var("BENCH_HEAPTRACK_DIR") {
            static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let k = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            command
                .env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
                .env("DUMP_HEAPTRACK_OUTPUT", format!("{dir}/operator-{k}.raw"));
        }
        let child = command
            .args([
                "run",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--concurrency",
                &concurrency.to_string(),
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env(
                "LOG_LEVEL",
                std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(std::env::temp_dir().join("integration-operator-bench.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (run `cargo build --release` first)", bin.display()))?;
        Ok(Operator {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        })
    }

    /// Waits until the operator's caches are synced (`/readyz`), so that a
    /// figure measured from here does not include the process's start-up.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = self.metrics.replace("/metrics", "/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the operator was not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sum of a counter family in the operator's /metrics.
    async fn counter(&self, prefix: &str) -> f64 {
        let Ok(resp) = reqwest::get(&self.metrics).await else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        // A `heap-profile` build (HEAP_PROFILE set, inherited) symbolizes and
        // writes its profile on SIGTERM, which takes a while at 10,000.
        let grace = if std::env::var_os("HEAP_PROFILE").is_some() {
            600
        } else {
            15
        };
        if tokio::time::timeout(Duration::from_secs(grace), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

/// Watches Integrations and records when each first became Ready.
fn track_ready(client: Client) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let api: Api<DynamicObject> = Api::all_with(client, &integration_resource());
    let record = seen.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        // Watch errors are followed by a reconnect: keep reading.
        while let Some(event) = events.next().await {
            let Ok(o) = event else { continue };
            if is_ready(&o) {
                let key = format!(
                    "{}/{}",
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default()
                );
                record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key)
                    .or_insert_with(Instant::now);
            }
        }
    });
    seen
}

async fn create_integrations(
    client: &Client,
    names: &[(String, String, String)],
    created: &Mutex<HashMap<String, Instant>>,
) -> anyhow::Result<()> {
    let ar = integration_resource();
    stream::iter(names.iter().cloned())
        .map(|(ns, name, provider)| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            let created = &created;
            async move {
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"provider": provider, "secretRef": {"name": "creds"}, "clientCredentials": {}},
                }))?;
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(format!("{ns}/{name}"), Instant::now());
                api.create(&PostParams::default(), &obj).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The physical limit of a cold start: no operator can do better while
/// respecting the ClusterProviders' limits.
///
/// Each ClusterProvider serves its share of the N exchanges at most
/// `maxConcurrency` at a time, each taking the provider latency, and starts
/// at most `requestsPerSecond` of them per second; none can start before its
/// Integration exists, and applying the N takes the client `create_span`.
/// The last exchange then takes the latency, plus the API round trips no
/// implementation can skip: the watch delivering the Integration, the input
/// read, the Secret write, the status write and the watch delivering that
/// status (5, each the idle round trip measured before the start).
/// Returns the limit and which bound set it.
fn cold_start_limit(
    args: &BenchArgs,
    n: usize,
    create_span: Duration,
    round_trip: Duration,
) -> (Duration, &'static str) {
    let per_provider = n.div_ceil(args.providers.max(1)) as f64;
    let latency = args.latency_ms as f64 / 1000.0;
    let bounds = [
        (
            Duration::from_secs_f64(per_provider / args.concurrency.max(1) as f64 * latency),
            "concurrency",
        ),
        (
            Duration::from_secs_f64((per_provider - 1.0).max(0.0) / f64::from(args.rate_limit.max(1))),
            "rate",
        ),
        (create_span, "apply"),
    ];
    let (start_of_last, bound) = bounds.into_iter().max_by_key(|(d, _)| *d).unwrap_or_default();
    (
        start_of_last + Duration::from_millis(args.latency_ms) + round_trip * 5,
        bound,
    )
}

/// The median time of one API request on the idle apiserver.
async fn idle_round_trip(client: &Client) -> anyhow::Result<Duration> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut times = Vec::with_capacity(21);
    for _ in 0..21 {
        let started = Instant::now();
        api.get("bench-0").await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// When the last of `keys` was seen Ready, counted from `t0` (`wait_all`
/// polls; the watch does not); the time so far when not all were.
fn last_ready(seen: &Mutex<HashMap<String, Instant>>, keys: &[String], all_ready: bool, t0: Instant) -> Duration {
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    keys.iter()
        .filter_map(|k| seen.get(k))
        .max()
        .filter(|_| all_ready)
        .map_or_else(|| t0.elapsed(), |last| last.saturating_duration_since(t0))
}

/// Most of `times` in one second, seconds counted from `t0`.
fn busiest_second(times: &[Instant], t0: Instant) -> u64 {
    per_second(times.iter().copied(), t0).into_iter().max().unwrap_or(0)
}

async fn wait_all(seen: &Mutex<HashMap<String, Instant>>, keys: &[String], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let done = {
            let map = seen.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().all(|k| map.contains_key(k))
        };
        if done {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh control plane with the CRDs, the ClusterProviders, the
/// namespaces with their input Secret, and the N Integrations to apply
/// (not applied yet).
struct Prepared {
    cp: ControlPlane,
    client: Client,
    sim: OAuth2Sim,
    /// (namespace, name, ClusterProvider) of each Integration.
    names: Vec<(String, String, String)>,
    /// `namespace/name` of each.
    keys: Vec<String>,
}

async fn prepare(args: &BenchArgs, n: usize) -> anyhow::Result<Prepared> {
    let cp = tokio::task::spawn_blocking(ControlPlane::private).await??;
    eprintln!(
        "bench: N={n}: control plane {} (etcd {}) up in {:.1} s",
        cp.state.kubernetes, cp.state.etcd_version, cp.state.start_seconds
    );
    let client = cp.client().await;
    let sim = OAuth2Sim::start().await?;
    sim.add_client("bench", "bench-secret-0123456789");
    sim.set_token_lifetime(Some(3600));
    sim.set_latency(Duration::from_millis(args.latency_ms));

    let crds: Vec<Value> = {
        let text = std::fs::read_to_string("crds/crds.yaml").context("run from the repository root")?;
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?
    };
    let crd_api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in crds {
        crd_api
            .create(&PostParams::default(), &serde_json::from_value(crd)?)
            .await?;
    }
    let cp_api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("integration-operator.io", "v1alpha1", "ClusterProvider"),
            "clusterproviders",
        ),
    );
    for p in 0..args.providers {
        let provider: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "ClusterProvider",
            "metadata": {"name": format!("provider-{p}")},
            "spec": {"type": "oauth2", "tokenUrl": sim.token_url(), "allowInsecureHttp": true, "allowPrivateAddresses": true,
                     "maxConcurrency": args.concurrency, "requestsPerSecond": args.rate_limit},
        }))?;
        // A new CRD is served a moment after it is created.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = cp_api.create(&PostParams::default(), &provider).await {
            anyhow::ensure!(Instant::now() < deadline, "the ClusterProvider CRD was not served: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for ns in 0..args.namespaces {
        let name = format!("bench-{ns}");
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await?;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds", "namespace": name},
            "stringData": {"client_id": "bench", "client_secret": "bench-secret-0123456789"},
        }))?;
        Api::<Secret>::namespaced(client.clone(), &name)
            .create(&PostParams::default(), &secret)
            .await?;
    }
    let names: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            (
                format!("bench-{}", i % args.namespaces),
                format!("intg-{i}"),
                format!("provider-{}", i % args.providers),
            )
        })
        .collect();
    let keys: Vec<String> = names.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect();
    Ok(Prepared {
        cp,
        client,
        sim,
        names,
        keys,
    })
}

/// Runs one scale and returns its figures: the operator's run, then the
/// reference client's cold start on a fresh control plane, whose time joins
/// the cold-start limit.
pub async fn run_scale(args: &BenchArgs, n: usize) -> anyhow::Result<Figures> {
    let (mut figures, written) = run_operator_scale(args, n).await?;
    figures.cold_limit_idle = figures.cold_limit;
    figures.cold_bound_idle = figures.cold_bound;
    if args.skip_reference {
        return Ok(figures);
    }
    let Some(written) = written else {
        eprintln!("bench: N={n}: no reference client run: nothing was written to copy");
        return Ok(figures);
    };
    eprintln!("bench: N={n}: reference client on a fresh control plane ...");
    figures.cold_reference = reference::cold_start(args, n, &written).await?;
    if let Some(reference) = figures.cold_reference {
        // The reference's time already holds its round trips; the last
        // exchange would add the provider latency.
        let limit = reference + Duration::from_millis(args.latency_ms);
        if limit > figures.cold_limit {
            figures.cold_limit = limit;
            figures.cold_bound = "control plane";
        }
    }
    Ok(figures)
}

/// The operator's run of one scale, and what it wrote for the first
/// Integration (for the reference client).
async fn run_operator_scale(args: &BenchArgs, n: usize) -> anyhow::Result<(Figures, Option<reference::Written>)> {
    let Prepared {
        cp,
        client,
        sim,
        names,
        keys,
    } = prepare(args, n).await?;

    let (proxy, operator_kubeconfig, _kubeconfig_dir) = operator_identity(&cp, &client).await?;
    let port = free_port();
    let operator = Operator::start(&args.operator, &operator_kubeconfig, port).await?;
    // Cold start measures applying N Integrations to a running operator;
    // its own start-up is the restart figure's business.
    operator.wait_ready().await?;
    let round_trip = idle_round_trip(&client).await?;
    let seen = track_ready(client.clone());
    let created = Mutex::new(HashMap::new());
    let t0 = Instant::now();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("bench: N={n}: cold start begins at {}", jiff::Timestamp::now());
    }
    let cold_metrics0 = apiserver_metrics(&client).await;
    create_integrations(&client, &names, &created).await?;
    let create_span = t0.elapsed();
    // 10 minutes, or 10 ms per Integration at the largest scales (on two
    // cores the control plane takes about that long per first issue), so
    // that the rows after the cold start measure a settled operator.
    let cold_wait = Duration::from_secs(600).max(Duration::from_millis(10) * n as u32);
    let all_ready = wait_all(&seen, &keys, cold_wait).await;
    eprintln!(
        "bench: N={n}: cold start done in {:?} (all Ready: {all_ready})",
        t0.elapsed()
    );
    let cold_start = last_ready(&seen, &keys, all_ready, t0);
    if std::env::var_os("BENCH_DEBUG").is_some() {
        // Where the cold start's time went, relative to its start.
        let at = |t: &Instant| t.saturating_duration_since(t0);
        let quantiles = |mut v: Vec<Duration>| {
            v.sort();
            let ms = |p: f64| percentile(&v, p).as_millis();
            format!("{}/{}/{}/{} ms", ms(0.0), ms(0.5), ms(0.9), ms(1.0))
        };
        let calls: Vec<Duration> = sim.token_call_times().iter().map(at).collect();
        let ready: Vec<Duration> = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(at)
            .collect();
        eprintln!(
            "bench: cold start min/p50/p90/max: token calls arrived {}, Ready seen {}; idle round trip {:?}",
            quantiles(calls),
            quantiles(ready),
            round_trip
        );
    }
    let mut per: Vec<Duration> = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let created = created.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| Some(seen.get(k)?.saturating_duration_since(*created.get(k)?)))
            .collect()
    };
    per.sort();
    let (cold_limit, cold_bound) = cold_start_limit(args, n, create_span, round_trip);
    let written = match names.first() {
        Some((ns, name, _)) if all_ready => reference::capture(&client, ns, name)
            .await
            .inspect_err(|e| eprintln!("bench: N={n}: could not read what the operator wrote: {e:#}"))
            .ok(),
        _ => None,
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The harness created the N Integrations (POSTs): not the operator's.
    let cold_writes = operator_resource_writes(&apiserver_metrics(&client).await)
        .saturating_sub(operator_resource_writes(&cold_metrics0))
        .saturating_sub(n as u64);
    let apiserver_cold_writes_per_integration = cold_writes as f64 / n.max(1) as f64;
    let (rss_mib, _) = proc_stat(operator.pid());
    let (rss_anon_mib, rss_file_mib) = rss_split(operator.pid());

    // Quiet steady state: nothing is due.
    let counters = proxy.counters();
    counters.reset();
    let calls_before = sim.token_calls();
    let steady_metrics0 = apiserver_metrics(&client).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let apiserver_steady_writes = operator_resource_writes(&apiserver_metrics(&client).await)
        .saturating_sub(operator_resource_writes(&steady_metrics0));
    let watches_running = open_watches(&apiserver_metrics(&client).await);
    let steady_writes = counters.writes();
    let steady_calls = sim.token_calls() - calls_before;

    eprintln!("bench: N={n}: steady state measured");
    // Unrelated 1 MiB Secrets.
    let rss_growth_unrelated_mib = if args.unrelated_secrets > 0 {
        let payload = "x".repeat(1024 * 1024);
        let api: Api<Secret> = Api::namespaced(client.clone(), "default");
        stream::iter(0..args.unrelated_secrets)
            .map(|i| {
                let api = api.clone();
                let payload = payload.clone();
                async move {
                    let s: Secret = serde_json::from_value(json!({
                        "metadata": {"name": format!("unrelated-{i}")}, "stringData": {"blob": payload},
                    }))?;
                    api.create(&PostParams::default(), &s).await?;
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some(proc_stat(operator.pid()).0 - rss_mib)
    } else {
        None
    };

    eprintln!("bench: N={n}: unrelated Secrets measured");
    if args.cold_only {
        // SIGTERM: a `heap-profile` build writes its profile now, with the
        // caches as the RSS figures above saw them.
        let (_, operator_cpu_s) = proc_stat(operator.pid());
        operator.stop().await;
        let (_, bench_cpu_s) = proc_stat(std::process::id());
        let control_plane_cpu_s = tree_cpu(cp.state.pid);
        drop(proxy);
        tokio::task::spawn_blocking(move || drop(cp)).await?;
        return Ok((
            Figures {
                n,
                cold_start,
                cold_limit,
                cold_bound,
                create_span,
                ready_p50: percentile(&per, 0.5),
                ready_p99: percentile(&per, 0.99),
                rss_mib,
                rss_anon_mib,
                rss_file_mib,
                rss_growth_unrelated_mib,
                steady_writes,
                steady_calls,
                control_plane_cpu_s,
                bench_cpu_s,
                operator_cpu_s,
                all_ready,
                apiserver_cold_writes_per_integration,
                apiserver_steady_writes,
                ..Figures::default()
            },
            written,
        ));
    }
    // New Integrations while N exist.
    let fresh: Vec<(String, String, String)> = (0..args.new_integrations)
        .map(|i| ("bench-0".to_string(), format!("new-{i}"), "provider-0".to_string()))
        .collect();
    let fresh_keys: Vec<String> = fresh.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect();
    let created_fresh = Mutex::new(HashMap::new());
    for one in &fresh {
        create_integrations(&client, std::slice::from_ref(one), &created_fresh).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_all(&seen, &fresh_keys, Duration::from_secs(120)).await;
    let mut fresh_times: Vec<Duration> = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let created = created_fresh.lock().unwrap_or_else(|p| p.into_inner());
        fresh_keys
            .iter()
            .filter_map(|k| Some(seen.get(k)?.saturating_duration_since(*created.get(k)?)))
            .collect()
    };
    fresh_times.sort();
    let (_, operator_cpu_s) = proc_stat(operator.pid());

    eprintln!("bench: N={n}: new Integrations measured");
    // Restart with everything still valid.
    operator.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let operator_watches = watches_running - open_watches(&apiserver_metrics(&client).await);
    eprintln!("bench: N={n}: operator stopped; restarting");
    counters.reset();
    let calls_before = sim.token_calls();
    let total = (n + args.new_integrations) as f64;
    let restarted = Operator::start(&args.operator, &operator_kubeconfig, port).await?;
    let t_restart = Instant::now();
    let deadline = t_restart + Duration::from_secs(300);
    loop {
        let done = restarted.counter("integration_operator_reconciles_total").await;
        if done >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restart_reevaluated = t_restart.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "bench: N={n}: RSS after restart {:.1} MiB; {}",
        proc_stat(restarted.pid()).0,
        std::fs::read_to_string(format!("/proc/{}/status", restarted.pid()))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Rss"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let restart_calls = sim.token_calls() - calls_before;
    let restart_writes = counters.writes();
    let mut restart_gets = BTreeMap::new();
    for ((verb, resource), count) in counters.snapshot() {
        if verb == "get" {
            *restart_gets.entry(resource).or_default() += count;
        }
    }
    let wave = if args.wave_lifetime > 0 {
        let mut all = names.clone();
        all.extend(fresh.iter().cloned());
        Some(refresh_wave(args, &client, &proxy, &sim, &restarted, &seen, &all).await?)
    } else {
        None
    };
    restarted.stop().await;
    let (_, bench_cpu_s) = proc_stat(std::process::id());
    let control_plane_cpu_s = tree_cpu(cp.state.pid);
    drop(proxy);
    tokio::task::spawn_blocking(move || drop(cp)).await?;
    Ok((
        Figures {
            n,
            cold_start,
            cold_limit,
            cold_bound,
            create_span,
            ready_p50: percentile(&per, 0.5),
            ready_p99: percentile(&per, 0.99),
            rss_mib,
            rss_anon_mib,
            rss_file_mib,
            rss_growth_unrelated_mib,
            steady_writes,
            steady_calls,
            restart_calls,
            restart_writes,
            restart_gets,
            restart_reevaluated,
            new_ready_p99: percentile(&fresh_times, 0.99),
            operator_cpu_s,
            control_plane_cpu_s,
            bench_cpu_s,
            all_ready,
            wave,
            apiserver_cold_writes_per_integration,
            apiserver_steady_writes,
            operator_watches,
            ..Figures::default()
        },
        written,
    ))
}

/// Rotates every namespace's input Secret so that all tokens are issued
/// again at once with a short lifetime, then measures their renewal: how
/// the calls spread, whether a Secret ever held an expired token, how fast
/// new Integrations get Ready meanwhile, CPU per 1,000 renewals, writes per
/// renewal; and last, a 429 with Retry-After.
async fn refresh_wave(
    args: &BenchArgs,
    client: &Client,
    proxy: &ApiProxy,
    sim: &OAuth2Sim,
    operator: &Operator,
    seen: &Mutex<HashMap<String, Instant>>,
    all: &[(String, String, String)],
) -> anyhow::Result<Wave> {
    let total = all.len() as u64;
    let lifetime = Duration::from_secs(args.wave_lifetime);
    sim.set_token_lifetime(Some(args.wave_lifetime));
    sim.add_client("wave", "wave-secret-0123456789");
    // The Integrations created during the wave use a client of their own, so
    // that their first issues are not counted as renewals in the spread.
    sim.add_client("fresh", "fresh-secret-0123456789");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench-fresh"}}))?,
        )
        .await?;
    Api::<Secret>::namespaced(client.clone(), "bench-fresh")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "creds"},
                "stringData": {"client_id": "fresh", "client_secret": "fresh-secret-0123456789"},
            }))?,
        )
        .await?;
    let expiries = track_expiries(client.clone());
    // Issue: every Integration's input changes in the same instant.
    let calls_before = sim.token_calls();
    let t_issue = Instant::now();
    for ns in 0..args.namespaces {
        let api: Api<Secret> = Api::namespaced(client.clone(), &format!("bench-{ns}"));
        api.patch(
            "creds",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"stringData": {"client_id": "wave", "client_secret": "wave-secret-0123456789"}}),
            ),
        )
        .await?;
    }
    // 10 minutes, or 10 ms per token at the largest scales (the cold
    // start's pace on two cores: each issue is a Secret and a status write).
    let deadline = Instant::now() + Duration::from_secs(600).max(Duration::from_millis(10) * total as u32);
    while sim.token_calls() - calls_before < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let issue_span = t_issue.elapsed();
    eprintln!("bench: wave: {total} tokens issued in {issue_span:?}");
    sim.set_latency(Duration::from_millis(args.wave_latency_ms));
    let issued_calls = sim.token_calls();
    let t_issued = Instant::now();

    // Scan for expired tokens in Secrets until every token was renewed.
    let expired_seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scanning = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scanner = {
        let (expiries, expired_seen, scanning) = (expiries.clone(), expired_seen.clone(), scanning.clone());
        tokio::spawn(async move {
            while scanning.load(std::sync::atomic::Ordering::SeqCst) {
                let now = jiff::Timestamp::now();
                let expired: Vec<(String, jiff::Timestamp)> = expiries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|(_, t)| t.expires_at <= now)
                    .map(|(k, t)| (k.clone(), t.expires_at))
                    .collect();
                if !expired.is_empty() && std::env::var_os("BENCH_DEBUG").is_some() {
                    eprintln!("bench: wave: at {now} expired in Secrets: {expired:?}");
                }
                let expired = expired.len() as u64;
                expired_seen.fetch_add(expired, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // Wait for the wave to begin, then create new Integrations during it.
    let renew_starts = t_issue + lifetime.mul_f64(0.7);
    while Instant::now() < renew_starts && sim.token_calls() == issued_calls {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The renewal times the operator chose, as it wrote them with each
    // token (none has been renewed yet), on this harness's clock: the wave
    // as scheduled, to tell a peak in the schedule from one in execution.
    let scheduled: Vec<Instant> = {
        let (now, wall) = (Instant::now(), jiff::Timestamp::now());
        expiries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| !k.starts_with("bench-fresh/"))
            .filter_map(|(_, t)| t.renew_at)
            .map(|at| {
                let ahead = at.duration_since(wall);
                if ahead.is_negative() {
                    now.checked_sub(Duration::try_from(-ahead).unwrap_or_default())
                        .unwrap_or(now)
                } else {
                    now + Duration::try_from(ahead).unwrap_or_default()
                }
            })
            .collect()
    };
    while sim.token_calls() - issued_calls < total / 10 && Instant::now() < t_issue + lifetime {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("bench: wave: renewals under way; creating new Integrations");
    let fresh: Vec<(String, String, String)> = (0..args.new_integrations)
        .map(|i| {
            (
                "bench-fresh".to_string(),
                format!("wave-new-{i}"),
                "provider-1".to_string(),
            )
        })
        .collect();
    let fresh_keys: Vec<String> = fresh.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect();
    let created = Mutex::new(HashMap::new());
    for one in &fresh {
        create_integrations(client, std::slice::from_ref(one), &created).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_all(seen, &fresh_keys, Duration::from_secs(120)).await;
    let mut fresh_times: Vec<Duration> = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let created = created.lock().unwrap_or_else(|p| p.into_inner());
        fresh_keys
            .iter()
            .filter_map(|k| Some(seen.get(k)?.saturating_duration_since(*created.get(k)?)))
            .collect()
    };
    fresh_times.sort();

    // The rest of the wave, renewals only: requests and CPU per renewal.
    let counters = proxy.counters();
    counters.reset();
    proxy.refusals().reset();
    let wave_metrics0 = apiserver_metrics(client).await;
    let (_, op_cpu0) = proc_stat(operator.pid());
    let (_, bench_cpu0) = proc_stat(std::process::id());
    let renew_calls0 = sim.token_calls();
    let exchanges0 = operator.counter("integration_operator_exchanges_total").await;
    // Until every token issued in the burst was renewed (plus the new ones).
    let want = issued_calls + total + fresh.len() as u64;
    let deadline = t_issue + lifetime * 2;
    while sim.token_calls() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Renewals completed (the operator's count), so that calls in flight at
    // either edge do not skew the per-renewal figures.
    let renew_calls = (operator.counter("integration_operator_exchanges_total").await - exchanges0).max(0.0) as u64;
    let _ = renew_calls0;
    let apiserver_writes = operator_resource_writes(&apiserver_metrics(client).await)
        .saturating_sub(operator_resource_writes(&wave_metrics0));
    let writes = counters.writes_to("secrets") + counters.writes_to("integrations/status");
    let event_writes = counters.writes_to("events");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("bench: wave requests by verb and resource: {:?}", counters.snapshot());
        eprintln!("bench: wave requests refused: {:?}", proxy.refusals().snapshot());
    }
    let reads: u64 = counters
        .snapshot()
        .iter()
        .filter(|((verb, _), _)| verb == "get" || verb == "list")
        .map(|(_, n)| n)
        .sum();
    let (_, op_cpu1) = proc_stat(operator.pid());
    let (_, bench_cpu1) = proc_stat(std::process::id());
    scanning.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = scanner.await;

    // Spread: renewals per second from the first to the last (the wave's
    // client only: the new Integrations' first issues are not renewals).
    let times: Vec<Instant> = sim
        .token_call_times_for("wave")
        .into_iter()
        .filter(|t| *t > t_issued)
        .collect();
    let renewals = times.len() as u64;
    let (first, last) = (times.first().copied(), times.last().copied());
    let window = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f),
        _ => Duration::ZERO,
    };
    let busiest_per_s = first.map_or(0, |f| busiest_second(&times, f));
    let mean_per_s = renewals as f64 / window.as_secs_f64().max(1.0);
    let (scheduled_busiest_per_s, scheduled_mean_per_s) = {
        let (first, last) = (scheduled.iter().min(), scheduled.iter().max());
        match (first, last) {
            (Some(f), Some(l)) => (
                busiest_second(&scheduled, *f),
                scheduled.len() as f64 / l.saturating_duration_since(*f).as_secs_f64().max(1.0),
            ),
            _ => (0, 0.0),
        }
    };
    // Per second since the issue: tokens issued, renewals as scheduled and
    // renewals as they reached the provider, for a look at where a peak is.
    if let Ok(dir) = std::env::var("BENCH_WAVE_SERIES") {
        let issued = per_second(
            sim.token_call_times_for("wave").into_iter().filter(|t| *t <= t_issued),
            t_issue,
        );
        let planned = per_second(scheduled.iter().copied(), t_issue);
        let done = per_second(times.iter().copied(), t_issue);
        let rows = issued.len().max(planned.len()).max(done.len());
        let at = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
        let mut tsv = String::from("second\tissued\tscheduled\trenewed\n");
        for i in 0..rows {
            tsv += &format!("{i}\t{}\t{}\t{}\n", at(&issued, i), at(&planned, i), at(&done, i));
        }
        let path = std::path::Path::new(&dir).join(format!("wave-{total}.tsv"));
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, tsv)) {
            Ok(()) => eprintln!("bench: wave: per-second series in {}", path.display()),
            Err(e) => eprintln!("bench: wave: could not write {}: {e}", path.display()),
        }
    }
    let per_1000 = |cpu: f64| cpu / (renew_calls.max(1) as f64 / 1000.0);

    // A 429 with Retry-After: calls after it must wait until it elapses.
    let retry_after = Duration::from_secs(3);
    sim.set_latency(Duration::from_millis(args.latency_ms));
    sim.fail_next("token", 1, crate::sim::Fault::rate_limited(retry_after.as_secs()));
    let before_429 = sim.token_calls();
    let api: Api<Secret> = Api::namespaced(client.clone(), "bench-0");
    api.patch(
        "creds",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"stringData": {"client_id": "bench"}})),
    )
    .await?;
    sim.add_client("bench", "wave-secret-0123456789");
    while sim.token_calls() == before_429 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t_429 = Instant::now();
    let in_flight_allowance = args.concurrency as u64;
    tokio::time::sleep(retry_after.saturating_sub(Duration::from_millis(200))).await;
    let calls_during_retry_after = sim
        .token_call_times()
        .iter()
        .filter(|t| **t > t_429 + Duration::from_millis(args.latency_ms + 50))
        .count() as u64;
    let _ = in_flight_allowance;

    Ok(Wave {
        issue_span,
        renewals,
        window,
        mean_per_s,
        busiest_per_s,
        scheduled_busiest_per_s,
        scheduled_mean_per_s,
        rate_limit: u64::from(args.rate_limit) * args.providers as u64,
        expired_seen: expired_seen.load(std::sync::atomic::Ordering::SeqCst),
        new_ready_p50: percentile(&fresh_times, 0.5),
        new_ready_p99: percentile(&fresh_times, 0.99),
        operator_cpu_per_1000: per_1000(op_cpu1 - op_cpu0),
        bench_cpu_per_1000: per_1000(bench_cpu1 - bench_cpu0),
        calls_during_retry_after,
        retry_after,
        writes_per_renewal: writes as f64 / renew_calls.max(1) as f64,
        event_writes_per_renewal: event_writes as f64 / renew_calls.max(1) as f64,
        reads_per_renewal: reads as f64 / renew_calls.max(1) as f64,
        apiserver_writes_per_renewal: apiserver_writes as f64 / renew_calls.max(1) as f64,
    })
}

/// What the operator wrote on an output Secret: when its token expires
/// and when the operator will renew it.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    expires_at: jiff::Timestamp,
    renew_at: Option<jiff::Timestamp>,
}

/// Watches the operator's output Secrets and keeps each one's expiry and
/// renewal time.
fn track_expiries(client: Client) -> Arc<Mutex<HashMap<String, Tracked>>> {
    let expiries = Arc::new(Mutex::new(HashMap::new()));
    let api: Api<Secret> = Api::all(client);
    let record = expiries.clone();
    tokio::spawn(async move {
        let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=integration-operator");
        let mut events = watcher(api, config).default_backoff().applied_objects().boxed();
        // A watch error (a dropped connection, 410 Gone) is followed by a
        // reconnect: keep reading, or this view would freeze and report
        // renewed tokens as expired.
        while let Some(event) = events.next().await {
            let Ok(s) = event else { continue };
            let annotation = |name: &str| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(name))
                    .and_then(|v| v.parse::<jiff::Timestamp>().ok())
            };
            if let Some(expires_at) = annotation("integration-operator.io/expires-at") {
                let key = format!(
                    "{}/{}",
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default()
                );
                let renew_at = annotation("integration-operator.io/renew-at");
                record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, Tracked { expires_at, renew_at });
            }
        }
    });
    expiries
}

/// Counts of `times` per second since `t0`, from second 0 to the last.
fn per_second(times: impl IntoIterator<Item = Instant>, t0: Instant) -> Vec<u64> {
    let mut counts: Vec<u64> = Vec::new();
    for t in times {
        let second = t.saturating_duration_since(t0).as_secs() as usize;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    counts
}

/// Renders the figures as a Markdown table with goals.
pub fn table(args: &BenchArgs, figures: &[Figures]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "provider latency {} ms ({} ms in the wave), maxConcurrency {} and requestsPerSecond {} x {} ClusterProviders, {} namespaces, wave token lifetime {} s\n\n",
        args.latency_ms, args.wave_latency_ms, args.concurrency, args.rate_limit, args.providers, args.namespaces, args.wave_lifetime
    ));
    out.push_str("| figure | goal |");
    for f in figures {
        out.push_str(&format!(" N={} |", f.n));
    }
    out.push_str("\n| --- | --- |");
    for _ in figures {
        out.push_str(" --- |");
    }
    out.push('\n');
    let mut row = |name: &str, goal: &str, cell: &dyn Fn(&Figures) -> String| {
        out.push_str(&format!("| {name} | {goal} |"));
        for f in figures {
            out.push_str(&format!(" {} |", cell(f)));
        }
        out.push('\n');
    };
    let s = |d: Duration| format!("{:.2}s", d.as_secs_f64());
    row("all Ready", "yes", &|f| {
        if f.all_ready { "yes".into() } else { "NO".into() }
    });
    row(
        "cold start, all Ready (limit, its bound; ratio)",
        "<= 1.5x limit",
        &|f| {
            format!(
                "{} ({}, {}; {:.1}x)",
                s(f.cold_start),
                s(f.cold_limit),
                f.cold_bound,
                f.cold_start.as_secs_f64() / f.cold_limit.as_secs_f64().max(0.001)
            )
        },
    );
    row(
        "cold start: reference client, only the unskippable API calls (see bench/reference.rs)",
        "",
        &|f| f.cold_reference.map_or_else(|| "-".into(), s),
    );
    row(
        "cold start against the idle-round-trip limit (limit, its bound; ratio)",
        "",
        &|f| {
            format!(
                "{} ({}, {}; {:.1}x)",
                s(f.cold_start),
                s(f.cold_limit_idle),
                f.cold_bound_idle,
                f.cold_start.as_secs_f64() / f.cold_limit_idle.as_secs_f64().max(0.001)
            )
        },
    );
    row("time to apply the N Integrations (client side)", "", &|f| {
        s(f.create_span)
    });
    row("per-Integration create->Ready p50 / p99", "", &|f| {
        format!("{} / {}", s(f.ready_p50), s(f.ready_p99))
    });
    row("operator RSS (anonymous + file-backed)", "<= 32 MiB at 10k", &|f| {
        format!("{:.1} MiB ({:.1} + {:.1})", f.rss_mib, f.rss_anon_mib, f.rss_file_mib)
    });
    row("RSS growth, unrelated 1 MiB Secrets", "< 5 MiB", &|f| {
        f.rss_growth_unrelated_mib
            .map(|m| format!("{m:.1} MiB"))
            .unwrap_or_else(|| "-".into())
    });
    row("steady state: API writes / provider calls in 5 s", "0 / 0", &|f| {
        format!("{} / {}", f.steady_writes, f.steady_calls)
    });
    row(
        "apiserver /metrics: Secret+Integration+Event writes per Integration at cold start / in the quiet 5 s",
        "- / 0",
        &|f| {
            format!(
                "{:.2} / {}",
                f.apiserver_cold_writes_per_integration, f.apiserver_steady_writes
            )
        },
    );
    row(
        "apiserver /metrics: watches the operator holds open",
        "independent of N",
        &|f| f.operator_watches.to_string(),
    );
    row("restart: provider calls / API writes", "0 / 0", &|f| {
        format!("{} / {}", f.restart_calls, f.restart_writes)
    });
    row("restart: API reads (GET) per Integration, by resource", "", &|f| {
        let total = (f.n + args.new_integrations).max(1) as f64;
        let gets: Vec<String> = f
            .restart_gets
            .iter()
            .map(|(resource, n)| format!("{resource} {:.2}", *n as f64 / total))
            .collect();
        if gets.is_empty() {
            "0".to_string()
        } else {
            gets.join(", ")
        }
    });
    row("restart: all re-evaluated after", "<= 60 s", &|f| {
        s(f.restart_reevaluated)
    });
    row("new Integration create->Ready p99 while N exist", "<= 5 s", &|f| {
        s(f.new_ready_p99)
    });
    let wave = |f: &Figures, cell: &dyn Fn(&Wave) -> String| f.wave.as_ref().map(cell).unwrap_or_else(|| "-".into());
    row("wave: tokens issued within", "same second (scaled)", &|f| {
        wave(f, &|w| s(w.issue_span))
    });
    row("wave: renewals over window (mean/s)", "", &|f| {
        wave(f, &|w| {
            format!("{} over {} ({:.0}/s)", w.renewals, s(w.window), w.mean_per_s)
        })
    });
    row(
        "wave: busiest second (x mean; rate limit)",
        "<= 2x mean, <= limit",
        &|f| {
            wave(f, &|w| {
                format!(
                    "{}/s ({:.2}x; limit {}/s)",
                    w.busiest_per_s,
                    w.busiest_per_s as f64 / w.mean_per_s.max(0.001),
                    w.rate_limit
                )
            })
        },
    );
    row("wave: busiest second as scheduled (x its mean)", "", &|f| {
        wave(f, &|w| {
            format!(
                "{}/s ({:.2}x)",
                w.scheduled_busiest_per_s,
                w.scheduled_busiest_per_s as f64 / w.scheduled_mean_per_s.max(0.001)
            )
        })
    });
    row("wave: expired tokens seen in Secrets", "0", &|f| {
        wave(f, &|w| w.expired_seen.to_string())
    });
    row("wave: new Integration create->Ready p50 / p99", "p99 <= 5 s", &|f| {
        wave(f, &|w| format!("{} / {}", s(w.new_ready_p50), s(w.new_ready_p99)))
    });
    row("wave: Secret + status writes per renewal", "<= 2", &|f| {
        wave(f, &|w| format!("{:.2}", w.writes_per_renewal))
    });
    row(
        "wave: Event writes / API reads per renewal",
        "- / 1 (the input Secret)",
        &|f| {
            wave(f, &|w| {
                format!("{:.2} / {:.2}", w.event_writes_per_renewal, w.reads_per_renewal)
            })
        },
    );
    row(
        "wave: apiserver /metrics writes per renewal (Secrets, Integrations, Events)",
        "<= 2",
        &|f| wave(f, &|w| format!("{:.2}", w.apiserver_writes_per_renewal)),
    );
    row("wave: operator CPU s per 1,000 renewals", "", &|f| {
        wave(f, &|w| format!("{:.2}", w.operator_cpu_per_1000))
    });
    row("wave: sim+bench CPU s per 1,000 renewals", "", &|f| {
        wave(f, &|w| format!("{:.2}", w.bench_cpu_per_1000))
    });
    row("429 Retry-After: token calls before it elapsed", "0", &|f| {
        wave(f, &|w| {
            format!(
                "{} (Retry-After {}s)",
                w.calls_during_retry_after,
                w.retry_after.as_secs()
            )
        })
    });
    row("operator CPU seconds (whole run)", "", &|f| {
        format!("{:.1}", f.operator_cpu_s)
    });
    row(
        "control plane CPU seconds (etcd + apiserver + controller manager)",
        "",
        &|f| format!("{:.1}", f.control_plane_cpu_s),
    );
    row("sim + bench CPU seconds (cumulative)", "", &|f| {
        format!("{:.1}", f.bench_cpu_s)
    });
    out
}

/// The cold start of one scale split over K operator processes.
#[derive(Debug, Clone)]
pub struct ShardFigures {
    pub n: usize,
    pub shards: u32,
    pub all_ready: bool,
    pub cold_start: Duration,
    /// Token requests at the provider: N when each Integration is
    /// exchanged once, by one shard.
    pub token_calls: u64,
    /// Most token requests in one second (the limit is for all shards together).
    pub busiest_per_s: u64,
    pub rss_mib: Vec<f64>,
    pub cpu_s: Vec<f64>,
    pub control_plane_cpu_s: f64,
}

/// Applies N Integrations to K operator processes, each owning a shard,
/// and measures the cold start, each process's memory and CPU, and what
/// the provider saw.
pub async fn run_sharded(args: &BenchArgs, n: usize, shards: u32) -> anyhow::Result<ShardFigures> {
    let Prepared {
        cp,
        client,
        sim,
        names,
        keys,
    } = prepare(args, n).await?;
    let (_proxy, kubeconfig, _dir) = operator_identity(&cp, &client).await?;
    let mut operators = Vec::new();
    for i in 0..shards {
        let shard = format!("{i}/{shards}");
        let operator = Operator::start_shard(&args.operator, &kubeconfig, free_port(), Some(&shard)).await?;
        operators.push(operator);
    }
    for operator in &operators {
        operator.wait_ready().await?;
    }
    let seen = track_ready(client.clone());
    let created = Mutex::new(HashMap::new());
    let calls_before = sim.token_calls();
    let t0 = Instant::now();
    create_integrations(&client, &names, &created).await?;
    let all_ready = wait_all(&seen, &keys, Duration::from_secs(900)).await;
    let cold_start = last_ready(&seen, &keys, all_ready, t0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats: Vec<(f64, f64)> = operators.iter().map(|o| proc_stat(o.pid())).collect();
    let figures = ShardFigures {
        n,
        shards,
        all_ready,
        cold_start,
        token_calls: sim.token_calls() - calls_before,
        busiest_per_s: busiest_second(&sim.token_call_times(), t0),
        rss_mib: stats.iter().map(|s| s.0).collect(),
        cpu_s: stats.iter().map(|s| s.1).collect(),
        control_plane_cpu_s: tree_cpu(cp.state.pid),
    };
    for operator in operators {
        operator.stop().await;
    }
    Ok(figures)
}

/// The sharded runs as a table.
pub fn shard_table(args: &BenchArgs, figures: &[ShardFigures]) -> String {
    let mut out = format!(
        "sharded cold start: provider latency {} ms, maxConcurrency {} and requestsPerSecond {} x {} ClusterProviders (for all shards together), {} namespaces\n\n",
        args.latency_ms, args.concurrency, args.rate_limit, args.providers, args.namespaces
    );
    out += "| N | shards | all Ready | cold start | token calls (N = each once) | busiest second (limit) | RSS per process | operator CPU s per process | control plane CPU s |\n";
    out += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    let list = |v: &[f64], unit: &str| {
        v.iter()
            .map(|x| format!("{x:.1}{unit}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for f in figures {
        out += &format!(
            "| {} | {} | {} | {:.2}s | {} | {}/s ({}/s) | {} | {} | {:.1} |\n",
            f.n,
            f.shards,
            if f.all_ready { "yes" } else { "NO" },
            f.cold_start.as_secs_f64(),
            f.token_calls,
            f.busiest_per_s,
            u64::from(args.rate_limit) * args.providers as u64,
            list(&f.rss_mib, " MiB"),
            list(&f.cpu_s, ""),
            f.control_plane_cpu_s,
        );
    }
    out
}

/// How fast one operator works off a backlog.
#[derive(Debug, Clone)]
pub struct ThroughputFigures {
    pub n: usize,
    pub all_ready: bool,
    /// From the operator's start to the last Integration seen Ready.
    pub drain: Duration,
    pub token_calls: u64,
    pub busiest_per_s: u64,
    /// The ceiling the operator's reconcile slots set: each first issue
    /// holds a slot for the provider's latency and its API round trips.
    pub slot_ceiling_per_s: f64,
    pub operator_cpu_s: f64,
    pub control_plane_cpu_s: f64,
    pub bench_cpu_s: f64,
    pub rss_mib: f64,
}

/// Applies N Integrations with no operator running, then starts one and
/// measures how fast it issues credentials for all of them: the first
/// issue of each is one token exchange, the Secret create, the status
/// patch and an Event. Nothing else is running, so the rate is the
/// operator's (and the control plane's), not the harness's applying.
pub async fn run_throughput(args: &BenchArgs, n: usize) -> anyhow::Result<ThroughputFigures> {
    let Prepared {
        cp,
        client,
        sim,
        names,
        keys,
    } = prepare(args, n).await?;
    let (_proxy, kubeconfig, _dir) = operator_identity(&cp, &client).await?;
    let created = Mutex::new(HashMap::new());
    create_integrations(&client, &names, &created).await?;
    let seen = track_ready(client.clone());
    let round_trip = idle_round_trip(&client).await?;
    let calls_before = sim.token_calls();
    let (cp_cpu0, bench_cpu0) = (tree_cpu(cp.state.pid), proc_stat(std::process::id()).1);
    let t0 = Instant::now();
    let operator = Operator::start_with(
        &args.operator,
        &kubeconfig,
        free_port(),
        None,
        args.operator_concurrency,
    )
    .await?;
    let wait = Duration::from_secs(600).max(Duration::from_millis(10) * n as u32);
    let all_ready = wait_all(&seen, &keys, wait).await;
    let drain = last_ready(&seen, &keys, all_ready, t0);
    let (rss_mib, operator_cpu_s) = proc_stat(operator.pid());
    let control_plane_cpu_s = tree_cpu(cp.state.pid) - cp_cpu0;
    let bench_cpu_s = proc_stat(std::process::id()).1 - bench_cpu0;
    // A slot holds one first issue for the provider's answer and about
    // four API round trips (input read, Secret create, status patch, Event).
    let per_issue = Duration::from_millis(args.latency_ms) + round_trip * 4;
    let figures = ThroughputFigures {
        n,
        all_ready,
        drain,
        token_calls: sim.token_calls() - calls_before,
        busiest_per_s: busiest_second(&sim.token_call_times(), t0),
        slot_ceiling_per_s: args.operator_concurrency as f64 / per_issue.as_secs_f64(),
        operator_cpu_s,
        control_plane_cpu_s,
        bench_cpu_s,
        rss_mib,
    };
    operator.stop().await;
    Ok(figures)
}

/// The throughput runs as a table.
pub fn throughput_table(args: &BenchArgs, figures: &[ThroughputFigures]) -> String {
    let mut out = format!(
        "throughput: a backlog of N Integrations, one operator started on it (--concurrency {}); provider latency {} ms, maxConcurrency {} and requestsPerSecond {} x {} ClusterProviders, {} namespaces\n\n",
        args.operator_concurrency, args.latency_ms, args.concurrency, args.rate_limit, args.providers, args.namespaces
    );
    out += "| N | all Ready | start to all Ready | first issues per second (mean) | busiest second at the provider | ceiling of the reconcile slots | operator CPU s (cores busy) | control plane CPU s (cores busy) | sim + bench CPU s | operator RSS |\n";
    out += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for f in figures {
        let wall = f.drain.as_secs_f64().max(1e-3);
        out += &format!(
            "| {} | {} | {:.2}s | {:.0}/s | {}/s | {:.0}/s | {:.1} ({:.2}) | {:.1} ({:.2}) | {:.1} | {:.1} MiB |\n",
            f.n,
            if f.all_ready { "yes" } else { "NO" },
            wall,
            f.token_calls as f64 / wall,
            f.busiest_per_s,
            f.slot_ceiling_per_s,
            f.operator_cpu_s,
            f.operator_cpu_s / wall,
            f.control_plane_cpu_s,
            f.control_plane_cpu_s / wall,
            f.bench_cpu_s,
            f.rss_mib,
        );
    }
    out
}

/// Runs every scale and prints the table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.throughput {
        let mut figures = Vec::new();
        for &n in &args.integrations {
            eprintln!("bench: throughput, N={n} ...");
            figures.push(run_throughput(&args, n).await?);
        }
        println!("{}", throughput_table(&args, &figures));
        return Ok(());
    }
    let mut figures = Vec::new();
    let mut sharded = Vec::new();
    for &n in &args.integrations {
        eprintln!("bench: N={n} ...");
        if args.shards.is_empty() {
            figures.push(run_scale(&args, n).await?);
        }
        for &k in &args.shards {
            eprintln!("bench: N={n}, {k} shards ...");
            sharded.push(run_sharded(&args, n, k).await?);
        }
    }
    if !figures.is_empty() {
        println!("{}", table(&args, &figures));
    }
    if !sharded.is_empty() {
        println!("{}", shard_table(&args, &sharded));
    }
    Ok(())
}
