//! `make bench`: the real operator binary against the Kubernetes API emulator
//! and an OAuth 2.0 simulator with configurable latency, at several scales.
//! Prints one table of figures with their goals; it never fails on timing.
//!
//! Figures per scale N (Integrations spread over namespaces and ClusterProviders):
//! cold start (all N Ready; per-Integration p50/p99 from creation to Ready,
//! against the limit set by provider latency and allowed concurrency),
//! operator RSS, RSS growth from unrelated 1 MiB Secrets, quiet steady state
//! (writes and provider calls with nothing due), restart (provider calls,
//! writes, time until every Integration was re-evaluated), time to Ready of
//! new Integrations while N exist, and CPU seconds of the operator and of the
//! emulator (this process).

use std::{
    collections::HashMap,
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

use crate::{emulator::Emulator, sim::oauth2::OAuth2Sim};

/// Options of `testkit bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The operator binary (build it with --release for meaningful figures).
    #[arg(long, env = "OPERATOR_BIN", default_value = "target/release/integration-operator")]
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
}

/// One scale's figures.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub n: usize,
    pub cold_start: Duration,
    pub cold_limit: Duration,
    pub ready_p50: Duration,
    pub ready_p99: Duration,
    pub rss_mib: f64,
    pub rss_growth_unrelated_mib: Option<f64>,
    pub steady_writes: u64,
    pub steady_calls: u64,
    pub restart_calls: u64,
    pub restart_writes: u64,
    pub restart_reevaluated: Duration,
    pub new_ready_p99: Duration,
    pub operator_cpu_s: f64,
    pub emulator_cpu_s: f64,
    pub all_ready: bool,
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

fn proc_stat(pid: u32) -> (f64, f64) {
    // (RSS MiB, CPU seconds user+system)
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the name).
    (rss_kib / 1024.0, (ticks(11) + ticks(12)) / 100.0)
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
        let child = tokio::process::Command::new(bin)
            .args([
                "run",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--concurrency",
                "128",
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
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
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
        while let Some(Ok(o)) = events.next().await {
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

/// Runs one scale and returns its figures.
pub async fn run_scale(args: &BenchArgs, n: usize) -> anyhow::Result<Figures> {
    let emulator = Emulator::start().await?;
    let client = emulator.client().await;
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
        let cp: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "ClusterProvider",
            "metadata": {"name": format!("provider-{p}")},
            "spec": {"type": "oauth2", "tokenUrl": sim.token_url(), "allowInsecureHttp": true, "allowPrivateAddresses": true,
                     "maxConcurrency": args.concurrency, "requestsPerSecond": 100000},
        }))?;
        cp_api.create(&PostParams::default(), &cp).await?;
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

    let port = free_port();
    let operator = Operator::start(&args.operator, emulator.kubeconfig_path(), port).await?;
    let seen = track_ready(client.clone());
    let created = Mutex::new(HashMap::new());
    let t0 = Instant::now();
    create_integrations(&client, &names, &created).await?;
    let all_ready = wait_all(&seen, &keys, Duration::from_secs(600)).await;
    eprintln!(
        "bench: N={n}: cold start done in {:?} (all Ready: {all_ready})",
        t0.elapsed()
    );
    let cold_start = t0.elapsed();
    let mut per: Vec<Duration> = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let created = created.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| Some(seen.get(k)?.saturating_duration_since(*created.get(k)?)))
            .collect()
    };
    per.sort();
    // The physical limit: every exchange costs the provider latency, and
    // concurrency * providers of them run at once.
    let parallel = (args.concurrency * args.providers).max(1) as f64;
    let cold_limit = Duration::from_secs_f64(n as f64 / parallel * args.latency_ms as f64 / 1000.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_mib, _) = proc_stat(operator.pid());

    // Quiet steady state: nothing is due.
    let counters = emulator.counters();
    counters.reset();
    let calls_before = sim.token_calls();
    tokio::time::sleep(Duration::from_secs(5)).await;
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
    eprintln!("bench: N={n}: operator stopped; restarting");
    counters.reset();
    let calls_before = sim.token_calls();
    let total = (n + args.new_integrations) as f64;
    let restarted = Operator::start(&args.operator, emulator.kubeconfig_path(), port).await?;
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
    let restart_calls = sim.token_calls() - calls_before;
    let restart_writes = counters.writes();
    restarted.stop().await;
    let (_, emulator_cpu_s) = proc_stat(std::process::id());
    emulator.shutdown().await;
    Ok(Figures {
        n,
        cold_start,
        cold_limit,
        ready_p50: percentile(&per, 0.5),
        ready_p99: percentile(&per, 0.99),
        rss_mib,
        rss_growth_unrelated_mib,
        steady_writes,
        steady_calls,
        restart_calls,
        restart_writes,
        restart_reevaluated,
        new_ready_p99: percentile(&fresh_times, 0.99),
        operator_cpu_s,
        emulator_cpu_s,
        all_ready,
    })
}

/// Renders the figures as a Markdown table with goals.
pub fn table(args: &BenchArgs, figures: &[Figures]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "provider latency {} ms, maxConcurrency {} x {} ClusterProviders, {} namespaces\n\n",
        args.latency_ms, args.concurrency, args.providers, args.namespaces
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
    row("cold start, all Ready (limit; ratio)", "<= 1.5x limit", &|f| {
        format!(
            "{} ({}; {:.1}x)",
            s(f.cold_start),
            s(f.cold_limit),
            f.cold_start.as_secs_f64() / f.cold_limit.as_secs_f64().max(0.001)
        )
    });
    row("per-Integration create->Ready p50 / p99", "", &|f| {
        format!("{} / {}", s(f.ready_p50), s(f.ready_p99))
    });
    row("operator RSS", "<= 64 MiB at 10k", &|f| format!("{:.1} MiB", f.rss_mib));
    row("RSS growth, unrelated 1 MiB Secrets", "< 5 MiB", &|f| {
        f.rss_growth_unrelated_mib
            .map(|m| format!("{m:.1} MiB"))
            .unwrap_or_else(|| "-".into())
    });
    row("steady state: API writes / provider calls in 5 s", "0 / 0", &|f| {
        format!("{} / {}", f.steady_writes, f.steady_calls)
    });
    row("restart: provider calls / API writes", "0 / 0", &|f| {
        format!("{} / {}", f.restart_calls, f.restart_writes)
    });
    row("restart: all re-evaluated after", "<= 60 s", &|f| {
        s(f.restart_reevaluated)
    });
    row("new Integration create->Ready p99 while N exist", "<= 5 s", &|f| {
        s(f.new_ready_p99)
    });
    row("operator CPU seconds (whole run)", "", &|f| {
        format!("{:.1}", f.operator_cpu_s)
    });
    row("emulator + bench CPU seconds (cumulative)", "", &|f| {
        format!("{:.1}", f.emulator_cpu_s)
    });
    out
}

/// Runs every scale and prints the table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for &n in &args.integrations {
        eprintln!("bench: N={n} ...");
        figures.push(run_scale(&args, n).await?);
    }
    println!("{}", table(&args, &figures));
    Ok(())
}
