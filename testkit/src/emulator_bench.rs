//! `testkit bench-emulator`: the API emulator's own throughput, so that the
//! operator benchmark can say whether the emulator was its bottleneck.
//!
//! Real clients over real HTTP (one `kube::Client`, `concurrency` requests in
//! flight): creates, GETs, merge patches and server-side applies of Secrets,
//! paged LISTs, and how long a watch takes to deliver every change, with
//! `objects` objects stored.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::emulator::Emulator;

/// Options of `testkit bench-emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorBenchArgs {
    /// Objects (Secrets) stored.
    #[arg(long, default_value_t = 10_000)]
    pub objects: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs the probe and prints one table.
pub async fn run(args: EmulatorBenchArgs) -> anyhow::Result<()> {
    let emulator = Emulator::start().await?;
    let client = emulator.client().await;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "load"}}))?,
        )
        .await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), "load");
    let n = args.objects;
    let cpu0 = cpu_seconds();

    // A watch that must see every change made below.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watching = {
        let (api, seen) = (api.clone(), seen.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).touched_objects().boxed();
            while let Some(Ok(_)) = events.next().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut rows = Vec::new();
    let timed = |name: &'static str, count: usize, took: Duration| (name, count, took);

    let t = Instant::now();
    each(n, args.concurrency, |i| {
        let api = api.clone();
        async move {
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("s-{i}"), "labels": {"bench": "yes"}},
                "stringData": {"token": format!("value-{i}")},
            }))?;
            api.create(&PostParams::default(), &s).await?;
            Ok(())
        }
    })
    .await?;
    rows.push(timed("create", n, t.elapsed()));

    let t = Instant::now();
    each(n, args.concurrency, |i| {
        let api = api.clone();
        async move {
            api.get(&format!("s-{i}")).await?;
            Ok(())
        }
    })
    .await?;
    rows.push(timed("get", n, t.elapsed()));

    let t = Instant::now();
    each(n, args.concurrency, |i| {
        let api = api.clone();
        async move {
            api.patch(
                &format!("s-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    rows.push(timed("merge patch", n, t.elapsed()));

    let t = Instant::now();
    each(n, args.concurrency, |i| {
        let api = api.clone();
        async move {
            let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("s-{i}")},
                              "stringData": {"token": format!("applied-{i}")}});
            api.patch(
                &format!("s-{i}"),
                &PatchParams::apply("bench").force(),
                &Patch::Apply(body),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    rows.push(timed("server-side apply", n, t.elapsed()));

    let t = Instant::now();
    let mut listed = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        listed += page.items.len();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => break,
        }
    }
    rows.push(timed("list (pages of 500), objects", listed, t.elapsed()));

    // Every create, patch and apply above is one watch event.
    let expected = 3 * n;
    let t = Instant::now();
    while seen.load(std::sync::atomic::Ordering::Relaxed) < expected && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = seen.load(std::sync::atomic::Ordering::Relaxed);
    watching.abort();
    let cpu = cpu_seconds() - cpu0;
    let requests = emulator.counters().snapshot().values().sum::<u64>();

    println!(
        "API emulator throughput: {n} Secrets, {} requests in flight, one kube::Client over HTTP on 127.0.0.1\n",
        args.concurrency
    );
    println!("| operation | count | seconds | per second |");
    println!("| --- | --- | --- | --- |");
    for (name, count, took) in rows {
        println!(
            "| {name} | {count} | {:.2} | {:.0} |",
            took.as_secs_f64(),
            count as f64 / took.as_secs_f64().max(0.000_001)
        );
    }
    println!(
        "| watch events delivered (of {expected}) | {delivered} | after the last write: {:.2} | |",
        t.elapsed().as_secs_f64()
    );
    println!(
        "\n{requests} requests; CPU of this process (emulator and client together): {cpu:.1} s, {:.0} µs per request",
        cpu / requests.max(1) as f64 * 1e6
    );
    emulator.shutdown().await;
    Ok(())
}

async fn each<F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    stream::iter(0..n)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
