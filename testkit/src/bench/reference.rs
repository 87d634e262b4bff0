//! The reference client: how fast this control plane can bring N
//! Integrations to Ready when a client makes only the API calls no
//! implementation can skip.
//!
//! The cold-start limit of `cold_start_limit` counts API round trips at the
//! idle apiserver's latency. On a small machine the control plane is
//! saturated long before that: every first issue costs it a Secret create,
//! a status patch and an Event, on top of the harness's own create. This
//! client measures that cost on a fresh control plane of the same build:
//! it watches Integrations and, for each, reads the input Secret (only the
//! first time: an implementation caching input Secrets needs no more) and writes
//! copies of the very Secret, status and Event the operator wrote for one
//! Integration of the measured run (so the apiserver does the same work per
//! object), with the operator's concurrency. It keeps no other state, runs no
//! other watch and calls no provider, so it is a lower bound for any
//! operator on this control plane, not a model of this one.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::{
    api::{core::v1::Secret, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use super::{
    BenchArgs, Prepared, create_integrations, integration_resource, last_ready, prepare, track_ready, wait_all,
};

/// What the operator wrote for one Integration, as the reference client
/// replays it.
#[derive(Debug, Clone)]
pub struct Written {
    /// The output Secret: labels, annotations, owner reference, type, data.
    secret: Value,
    /// The Integration's status.
    status: Value,
    /// The `Issued` Event.
    event: Value,
}

/// Reads what the operator wrote for `namespace/name`.
pub async fn capture(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Written> {
    let integration = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &integration_resource())
        .get(name)
        .await?;
    let status = integration.data["status"].clone();
    let secret_name = status["secretName"]
        .as_str()
        .context("the Integration names no Secret")?;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret_name)
        .await?;
    let event = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .context("the operator published no Event for the Integration")?;
    Ok(Written {
        secret: json!({
            "type": secret.type_,
            "data": secret.data,
            "metadata": {
                "labels": secret.metadata.labels,
                "annotations": secret.metadata.annotations,
                "ownerReferences": secret.metadata.owner_references,
            },
        }),
        status,
        event: serde_json::to_value(&event)?,
    })
}

/// Brings N Integrations to Ready on a fresh control plane with the
/// reference client; returns the time from the first create until the last
/// was seen Ready (None if not all were).
pub async fn cold_start(args: &BenchArgs, n: usize, written: &Written) -> anyhow::Result<Option<Duration>> {
    let Prepared {
        cp,
        client,
        sim: _sim,
        names,
        keys,
    } = prepare(args, n).await?;
    let seen = track_ready(client.clone());
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let controller = {
        let (client, written, failures) = (client.clone(), written.clone(), failures.clone());
        let read = Arc::new(Mutex::new(HashSet::new()));
        let concurrency = args.operator_concurrency.max(1);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &integration_resource());
        tokio::spawn(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .filter_map(move |event| {
                    let first = event.ok().filter(|o| {
                        let uid = o.metadata.uid.clone().unwrap_or_default();
                        handled.lock().unwrap_or_else(|p| p.into_inner()).insert(uid)
                    });
                    std::future::ready(first)
                })
                .map(move |integration| {
                    let (client, written, failures, read) =
                        (client.clone(), written.clone(), failures.clone(), read.clone());
                    async move {
                        if let Err(e) = issue(&client, &written, &read, &integration).await {
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            eprintln!("bench: reference client: {e:#}");
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .for_each(|()| std::future::ready(())),
        )
    };
    let created = Mutex::new(std::collections::HashMap::new());
    let t0 = Instant::now();
    create_integrations(&client, &names, &created).await?;
    let cold_wait = Duration::from_secs(600).max(Duration::from_millis(10) * n as u32);
    let all_ready = wait_all(&seen, &keys, cold_wait).await;
    let span = last_ready(&seen, &keys, all_ready, t0);
    controller.abort();
    eprintln!(
        "bench: N={n}: reference client: all Ready in {span:?} ({} failed calls)",
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    tokio::task::spawn_blocking(move || drop(cp)).await?;
    Ok(all_ready.then_some(span))
}

/// The calls for one Integration: read the input Secret (unless read
/// already), create the output Secret, patch the status, publish the Event.
async fn issue(
    client: &Client,
    written: &Written,
    read: &Mutex<HashSet<String>>,
    integration: &DynamicObject,
) -> anyhow::Result<()> {
    let namespace = integration.metadata.namespace.clone().unwrap_or_default();
    let name = integration.metadata.name.clone().unwrap_or_default();
    let uid = integration.metadata.uid.clone().unwrap_or_default();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let input = integration.data["spec"]["secretRef"]["name"]
        .as_str()
        .unwrap_or("creds");
    // Each input Secret is read once: an implementation caching input
    // Secrets would need no more (the operator reads per look, sharing only
    // reads in flight), and a lower bound may not do more than one must.
    if read
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(format!("{namespace}/{input}"))
    {
        secrets.get(input).await?;
    }

    let mut secret = written.secret.clone();
    secret["metadata"]["name"] = json!(name);
    secret["metadata"]["namespace"] = json!(namespace);
    if let Some(labels) = secret["metadata"]["labels"].as_object_mut() {
        labels.insert("integration-operator.io/integration".into(), json!(name));
    }
    if let Some(owner) = secret["metadata"]["ownerReferences"].get_mut(0) {
        owner["name"] = json!(name);
        owner["uid"] = json!(uid);
    }
    let created = secrets
        .create(&PostParams::default(), &serde_json::from_value(secret)?)
        .await?;

    let mut status = written.status.clone();
    status["secretName"] = json!(name);
    status["secretResourceVersion"] = json!(created.metadata.resource_version);
    status["observedGeneration"] = json!(integration.metadata.generation);
    Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &integration_resource())
        .patch_status(
            &name,
            &PatchParams {
                field_manager: Some("integration-operator/status".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;

    let mut event = written.event.clone();
    let now = jiff::Timestamp::now();
    event["metadata"] = json!({"name": format!("{name}.{:x}", now.as_nanosecond()), "namespace": namespace});
    event["eventTime"] = serde_json::to_value(MicroTime(now))?;
    event["regarding"]["name"] = json!(name);
    event["regarding"]["namespace"] = json!(namespace);
    event["regarding"]["uid"] = json!(uid);
    event["regarding"]["resourceVersion"] = json!(integration.metadata.resource_version);
    Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &serde_json::from_value(event)?)
        .await?;
    Ok(())
}
