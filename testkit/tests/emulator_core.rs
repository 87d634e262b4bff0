//! The emulator judged by a real client: kube-rs (`kube::Client` and
//! kube-runtime) over HTTP on 127.0.0.1.
//!
//! Each test starts its own emulator and asserts behaviour a user of a real
//! API server would notice — status codes and reasons, resourceVersion and
//! generation, field ownership, finalizers and garbage collection, watch
//! event order, bookmarks, 410 Gone and relists — so that a test that passes
//! here says something about the operator on a real cluster.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{ConfigMap, Namespace, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, CustomResource, CustomResourceExt, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event as RecorderEvent, EventType, Recorder, Reporter},
        reflector,
        wait::{await_condition, conditions},
        watcher,
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use testkit::emulator::{Emulator, EmulatorOptions};

/// A small custom resource with a status subresource, standing in for the
/// operator's own kinds.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "emulator.test",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

const DEADLINE: Duration = Duration::from_secs(20);

async fn start() -> (Emulator, Client) {
    let emu = Emulator::start().await.expect("the emulator starts");
    let client = emu.client().await;
    (emu, client)
}

async fn namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

/// Installs the Widget CRD and waits for it to be Established, as a user would.
async fn install_widgets(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("CRD created");
    tokio::time::timeout(
        DEADLINE,
        await_condition(crds, "widgets.emulator.test", conditions::is_crd_established()),
    )
    .await
    .expect("CRD established in time")
    .expect("CRD condition watch");
}

fn widget(name: &str, size: i64) -> Widget {
    let mut w = Widget::new(name, WidgetSpec { size, color: None });
    w.metadata.namespace = Some("x".into());
    w
}

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

/// The Status an API call failed with.
fn status_of<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` until it returns Some or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next item of a stream, within the deadline.
async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

fn rv<K: Resource>(o: &K) -> String {
    o.meta().resource_version.clone().unwrap_or_default()
}

#[tokio::test]
async fn secrets_round_trip_fold_string_data_and_keep_type_immutable() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "x");
    let created = secrets
        .create(&PostParams::default(), &secret("s", &[("app", "a")]))
        .await
        .unwrap();
    assert!(created.string_data.is_none(), "stringData is folded into data");
    assert_eq!(created.data.as_ref().unwrap()["k"].0, b"v");
    assert_eq!(created.type_.as_deref(), Some("Opaque"), "type defaults to Opaque");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let mut got = secrets.get("s").await.unwrap();
    assert_eq!(got.data, created.data);
    got.string_data = Some(BTreeMap::from([("k2".to_string(), "w".to_string())]));
    let replaced = secrets.replace("s", &PostParams::default(), &got).await.unwrap();
    assert_ne!(rv(&replaced), rv(&created));
    let data = replaced.data.unwrap();
    assert_eq!(
        (data["k"].0.as_slice(), data["k2"].0.as_slice()),
        (&b"v"[..], &b"w"[..])
    );

    let mut retyped = secrets.get("s").await.unwrap();
    retyped.type_ = Some("kubernetes.io/tls".into());
    let (code, reason, message) = status_of(secrets.replace("s", &PostParams::default(), &retyped).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(message.contains("immutable"), "{message}");

    secrets.delete("s", &DeleteParams::default()).await.unwrap();
    let (code, reason, _) = status_of(secrets.get("s").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn config_maps_round_trip() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let created = cms
        .create(&PostParams::default(), &config_map("c", &[("a", "1")]))
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("x"));
    let mut got = cms.get("c").await.unwrap();
    got.data.as_mut().unwrap().insert("b".into(), "2".into());
    let replaced = cms.replace("c", &PostParams::default(), &got).await.unwrap();
    assert_eq!(replaced.data.unwrap().len(), 2);
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 1);
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("c").await.unwrap().is_none());
}

#[tokio::test]
async fn custom_resources_round_trip_after_the_crd_is_established() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    install_widgets(&client).await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "x");
    let created = widgets.create(&PostParams::default(), &widget("w", 3)).await.unwrap();
    assert_eq!(created.spec.size, 3);
    assert_eq!(created.metadata.generation, Some(1));
    let patched = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "red"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.color.as_deref(), Some("red"));
    // Schema validation applies: a string where an integer belongs is refused.
    let bad = json!({"apiVersion": "emulator.test/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": "large"}});
    let dynamic = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "x",
        &kube::api::ApiResource::erase::<Widget>(&()),
    );
    let (code, _, message) = status_of(
        dynamic
            .create(&PostParams::default(), &serde_json::from_value(bad).unwrap())
            .await,
    );
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.size"), "{message}");
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    assert!(widgets.get_opt("w").await.unwrap().is_none());
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_404_and_a_duplicate_is_409() {
    let (_emu, client) = start().await;
    let nowhere = Api::<ConfigMap>::namespaced(client.clone(), "nowhere");
    let (code, reason, message) = status_of(nowhere.create(&PostParams::default(), &config_map("c", &[])).await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert!(message.contains("namespaces \"nowhere\" not found"), "{message}");

    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    cms.create(&PostParams::default(), &config_map("c", &[])).await.unwrap();
    let (code, reason, message) = status_of(cms.create(&PostParams::default(), &config_map("c", &[])).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"), "{message}");
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_a_409_conflict() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let first = cms
        .create(&PostParams::default(), &config_map("c", &[("a", "1")]))
        .await
        .unwrap();
    let mut fresh = first.clone();
    fresh.data = Some(BTreeMap::from([("a".to_string(), "2".to_string())]));
    cms.replace("c", &PostParams::default(), &fresh).await.unwrap();
    let mut stale = first.clone();
    stale.data = Some(BTreeMap::from([("a".to_string(), "3".to_string())]));
    let (code, reason, message) = status_of(cms.replace("c", &PostParams::default(), &stale).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["a"], "2");
    // A merge patch carrying a stale resourceVersion is a precondition too.
    let (code, _, _) = status_of(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv(&first)}, "data": {"a": "4"}})),
        )
        .await,
    );
    assert_eq!(code, 409);
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page_with_continue() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "x");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        secrets
            .create(&PostParams::default(), &secret(&format!("s{i:02}"), &[("tier", tier)]))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(10);
    loop {
        let page = secrets.list(&lp).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|s| s.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = ListParams::default().limit(10).continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(
        (seen.len(), unique.len()),
        (25, 25),
        "every Secret exactly once: {seen:?}"
    );

    let names = |l: kube::core::ObjectList<Secret>| l.items.iter().map(|s| s.name_any()).collect::<Vec<_>>();
    assert_eq!(
        names(secrets.list(&ListParams::default().labels("tier=odd")).await.unwrap()).len(),
        12
    );
    assert_eq!(
        names(
            secrets
                .list(&ListParams::default().labels("tier in (odd,even)"))
                .await
                .unwrap()
        )
        .len(),
        25
    );
    assert_eq!(
        names(secrets.list(&ListParams::default().labels("tier!=odd")).await.unwrap()).len(),
        13
    );
    assert!(names(secrets.list(&ListParams::default().labels("!tier")).await.unwrap()).is_empty());
    assert_eq!(
        names(
            secrets
                .list(&ListParams::default().fields("metadata.name=s07"))
                .await
                .unwrap()
        ),
        vec!["s07"]
    );
    // A label selector and paging together still return every match once.
    let first = secrets
        .list(&ListParams::default().labels("tier=even").limit(5))
        .await
        .unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rest = secrets
        .list(
            &ListParams::default()
                .labels("tier=even")
                .limit(100)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_eq!(first.items.len() + rest.items.len(), 13);
    assert_eq!(first.metadata.remaining_item_count, Some(8));
}

#[tokio::test]
async fn merge_and_json_patches_edit_in_place() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    cms.create(&PostParams::default(), &config_map("c", &[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    let merged = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}, "metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("b".to_string(), "2".to_string()), ("c".to_string(), "3".to_string())])
    );
    assert_eq!(merged.metadata.labels.unwrap()["l"], "v");
    let ops = json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "22"},
        {"op": "remove", "path": "/data/c"},
    ]);
    let patched = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap(),
        BTreeMap::from([("b".to_string(), "22".to_string())])
    );
    // A failing `test` op leaves the object alone.
    let failing = json!([{"op": "test", "path": "/data/b", "value": "nope"}, {"op": "remove", "path": "/data/b"}]);
    let (code, _, _) = status_of(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(failing).unwrap()),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["b"], "22");
}

#[tokio::test]
async fn server_side_apply_tracks_ownership() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let apply = |manager: &str, data: Value, force: bool| {
        let cms = cms.clone();
        let mut pp = PatchParams::apply(manager);
        pp.force = force;
        async move {
            cms.patch(
                "c",
                &pp,
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}),
                ),
            )
            .await
        }
    };
    let first = apply("alice", json!({"a": "1", "b": "2"}), false).await.unwrap();
    assert_eq!(first.data.as_ref().unwrap().len(), 2);
    let managers: Vec<_> = first
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
        .collect();
    assert_eq!(managers, vec![("alice".to_string(), "Apply".to_string())]);

    // Dropping a field from the applied configuration removes it.
    let second = apply("alice", json!({"a": "1"}), false).await.unwrap();
    assert_eq!(
        second.data.clone().unwrap(),
        BTreeMap::from([("a".to_string(), "1".to_string())])
    );

    // Another manager setting an owned field to another value conflicts...
    let (code, reason, message) = status_of(apply("bob", json!({"a": "9"}), false).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
    assert!(message.contains("alice") && message.contains(".data.a"), "{message}");
    // ...unless forced, which takes the field.
    let forced = apply("bob", json!({"a": "9"}), true).await.unwrap();
    assert_eq!(forced.data.clone().unwrap()["a"], "9");
    let (code, _, message) = status_of(apply("alice", json!({"a": "1"}), false).await);
    assert_eq!(code, 409, "alice no longer owns .data.a: {message}");

    // Re-applying the same configuration changes nothing, not even resourceVersion.
    let again = apply("bob", json!({"a": "9"}), false).await.unwrap();
    assert_eq!(rv(&again), rv(&forced));
    assert_eq!(
        cms.get("c").await.unwrap().metadata.resource_version,
        forced.metadata.resource_version
    );

    // An apply without a field manager is refused.
    let (code, _, _) = status_of(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}})),
        )
        .await,
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn the_status_subresource_splits_spec_from_status_and_generation_follows_spec() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    install_widgets(&client).await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "x");
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus {
        phase: Some("Ignored".into()),
    });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "status is ignored on create");
    assert_eq!(created.metadata.generation, Some(1));

    // A status write through the main resource is ignored.
    let mut edit = created.clone();
    edit.status = Some(WidgetStatus {
        phase: Some("Sneaky".into()),
    });
    let after_main = widgets.replace("w", &PostParams::default(), &edit).await.unwrap();
    assert_eq!(after_main.status, None);
    assert_eq!(after_main.metadata.generation, Some(1));

    // /status changes status only, and does not bump generation.
    let after_status = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 99}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(after_status.status.unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!(after_status.spec.size, 1, "spec does not change through /status");
    assert_eq!(after_status.metadata.generation, Some(1));

    // Metadata-only changes leave generation alone; spec changes bump it.
    let labelled = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let resized = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(resized.metadata.generation, Some(2));
    assert_eq!(
        resized.status.unwrap().phase.as_deref(),
        Some("Ready"),
        "status survives spec writes"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let mut cm = config_map("c", &[]);
    cm.metadata.finalizers = Some(vec!["emulator.test/hold".into()]);
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut events = cms.watch(&WatchParams::default(), &rv(&created)).await.unwrap().boxed();

    cms.delete("c", &DeleteParams::default()).await.unwrap();
    let held = cms.get("c").await.expect("the object stays while finalizers remain");
    assert!(held.metadata.deletion_timestamp.is_some());
    match next(&mut events).await.unwrap() {
        WatchEvent::Modified(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        other => panic!("expected MODIFIED with a deletionTimestamp, got {other:?}"),
    }
    // A second delete changes nothing.
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    assert_eq!(rv(&cms.get("c").await.unwrap()), rv(&held));

    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        cms.get_opt("c").await.unwrap().is_none(),
        "gone once the last finalizer is"
    );
    match next(&mut events).await.unwrap() {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "c"),
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test]
async fn dependents_of_a_deleted_custom_resource_are_garbage_collected() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    install_widgets(&client).await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "x");
    let secrets = Api::<Secret>::namespaced(client.clone(), "x");
    let owner = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let mut owned = secret("owned", &[]);
    owned.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    secrets.create(&PostParams::default(), &owned).await.unwrap();
    secrets
        .create(&PostParams::default(), &secret("unowned", &[]))
        .await
        .unwrap();

    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    eventually("the owned Secret to be collected", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("owned").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(secrets.get_opt("unowned").await.unwrap().is_some());

    // Orphan propagation keeps the dependent and drops the reference.
    let owner = widgets.create(&PostParams::default(), &widget("w2", 1)).await.unwrap();
    let mut kept = secret("kept", &[]);
    kept.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    secrets.create(&PostParams::default(), &kept).await.unwrap();
    widgets
        .delete(
            "w2",
            &DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let kept = secrets.get("kept").await.unwrap();
    assert!(kept.metadata.owner_references.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn watches_deliver_changes_in_order_and_resume_from_a_resource_version() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let start_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut live = cms.watch(&WatchParams::default(), &start_rv).await.unwrap().boxed();

    let created = cms
        .create(&PostParams::default(), &config_map("c", &[("a", "1")]))
        .await
        .unwrap();
    cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}})))
        .await
        .unwrap();
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    // Another namespace's objects are not this watch's business.
    namespace(&client, "y").await;
    Api::<ConfigMap>::namespaced(client.clone(), "y")
        .create(&PostParams::default(), &config_map("other", &[]))
        .await
        .unwrap();

    let kinds = |e: WatchEvent<ConfigMap>| match e {
        WatchEvent::Added(o) => ("ADDED", o.name_any(), rv(&o)),
        WatchEvent::Modified(o) => ("MODIFIED", o.name_any(), rv(&o)),
        WatchEvent::Deleted(o) => ("DELETED", o.name_any(), rv(&o)),
        other => panic!("unexpected {other:?}"),
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(kinds(next(&mut live).await.unwrap()));
    }
    assert_eq!(
        seen.iter().map(|(k, n, _)| (*k, n.as_str())).collect::<Vec<_>>(),
        vec![("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "c")]
    );
    let rvs: Vec<u64> = seen.iter().map(|(_, _, rv)| rv.parse().unwrap()).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions increase: {rvs:?}"
    );

    // A watch started after the fact replays from the given resourceVersion.
    let mut resumed = cms.watch(&WatchParams::default(), &rv(&created)).await.unwrap().boxed();
    assert_eq!(kinds(next(&mut resumed).await.unwrap()).0, "MODIFIED");
    assert_eq!(kinds(next(&mut resumed).await.unwrap()).0, "DELETED");

    // A label-selected watch sees only its matches.
    let mut selected = cms
        .watch(&WatchParams::default().labels("pick=yes"), &start_rv)
        .await
        .unwrap()
        .boxed();
    let mut picked = config_map("picked", &[]);
    picked.metadata.labels = Some(BTreeMap::from([("pick".to_string(), "yes".to_string())]));
    cms.create(&PostParams::default(), &picked).await.unwrap();
    assert_eq!(kinds(next(&mut selected).await.unwrap()).1, "picked");
}

#[tokio::test]
async fn watches_that_allow_bookmarks_get_them() {
    let emu = Emulator::start_with(EmulatorOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = emu.client().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let created = cms.create(&PostParams::default(), &config_map("c", &[])).await.unwrap();
    let mut events = cms.watch(&WatchParams::default(), &rv(&created)).await.unwrap().boxed();
    match next(&mut events).await.unwrap() {
        WatchEvent::Bookmark(b) => {
            let bookmarked: u64 = b.metadata.resource_version.parse().unwrap();
            assert!(bookmarked >= rv(&created).parse::<u64>().unwrap());
        }
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_resource_version_is_410_gone_and_the_watcher_relists() {
    let emu = Emulator::start_with(EmulatorOptions {
        watch_history: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = emu.client().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let first = cms
        .create(&PostParams::default(), &config_map("c0", &[]))
        .await
        .unwrap();
    for i in 1..10 {
        cms.create(&PostParams::default(), &config_map(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut stale = cms.watch(&WatchParams::default(), &rv(&first)).await.unwrap().boxed();
    match next(&mut stale).await {
        Ok(WatchEvent::Error(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}"),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }

    // kube-runtime's watcher: connected, then its watch drops while more
    // changes than the history holds happen; its resume must fail with 410
    // and it must relist to catch up.
    let (store, writer) = reflector::store::<ConfigMap>();
    let mut stream = reflector(writer, watcher(cms.clone(), watcher::Config::default())).boxed();
    loop {
        if let watcher::Event::InitDone = next(&mut stream).await.unwrap() {
            break;
        }
    }
    assert_eq!(
        emu.counters().count("list", "configmaps"),
        1,
        "the watcher's initial list"
    );
    emu.faults().drop_watches();
    for i in 10..20 {
        cms.create(&PostParams::default(), &config_map(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while store.state().len() != 19 || store.get(&reflector::ObjectRef::new("c0").within("x")).is_some() {
        assert!(
            Instant::now() < deadline,
            "the watcher caught up: {} objects",
            store.state().len()
        );
        // Errors (the 410) are expected here; the watcher recovers by relisting.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    }
    assert_eq!(
        emu.counters().count("list", "configmaps"),
        2,
        "the 410 made the watcher relist exactly once"
    );
}

#[tokio::test]
async fn a_watcher_and_reflector_run_steadily_with_one_initial_list() {
    let (emu, client) = start().await;
    namespace(&client, "x").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "x");
    let (store, writer) = reflector::store::<Secret>();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let errors = errors.clone();
        let stream = reflector(writer, watcher(secrets.clone(), watcher::Config::default()));
        tokio::spawn(async move {
            let mut stream = stream.boxed();
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    errors.lock().unwrap().push(e.to_string());
                }
            }
        })
    };
    store.wait_until_ready().await.unwrap();
    for i in 0..20 {
        secrets
            .create(&PostParams::default(), &secret(&format!("s{i}"), &[]))
            .await
            .unwrap();
    }
    secrets
        .patch(
            "s0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    eventually("the store to hold all 20 Secrets", || {
        let store = store.clone();
        async move {
            let labelled = store
                .get(&reflector::ObjectRef::new("s0").within("x"))
                .is_some_and(|s| s.labels().contains_key("a"));
            (store.state().len() == 20 && labelled).then_some(())
        }
    })
    .await;
    // Keep it running a while: a relist loop or a reconnect storm would show
    // in the counters.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock().unwrap());
    assert_eq!(emu.counters().count("list", "secrets"), 1, "exactly one initial list");
    assert_eq!(emu.counters().count("watch", "secrets"), 1, "one long-lived watch");
}

#[tokio::test]
async fn a_controller_reconciles_every_custom_resource() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    install_widgets(&client).await;
    let widgets = Api::<Widget>::namespaced(client.clone(), "x");
    for i in 0..5 {
        widgets
            .create(&PostParams::default(), &widget(&format!("w{i}"), i))
            .await
            .unwrap();
    }
    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Failed(#[from] kube::Error);
    async fn reconcile(w: Arc<Widget>, api: Arc<Api<Widget>>) -> Result<Action, Failed> {
        api.patch_status(
            &w.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": format!("Reconciled-{}", w.spec.size)}})),
        )
        .await?;
        Ok(Action::await_change())
    }
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(widgets.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    eventually("every Widget reconciled", || {
        let widgets = widgets.clone();
        async move {
            let list = widgets.list(&ListParams::default()).await.unwrap();
            list.items
                .iter()
                .all(|w| w.status.as_ref().and_then(|s| s.phase.clone()) == Some(format!("Reconciled-{}", w.spec.size)))
                .then_some(())
        }
    })
    .await;
    // A Widget created while it runs is reconciled too.
    widgets
        .create(&PostParams::default(), &widget("late", 7))
        .await
        .unwrap();
    eventually("the late Widget reconciled", || {
        let widgets = widgets.clone();
        async move {
            let w = widgets.get("late").await.unwrap();
            (w.status.and_then(|s| s.phase).as_deref() == Some("Reconciled-7")).then_some(())
        }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn metadata_only_lists_and_watches() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "x");
    secrets
        .create(&PostParams::default(), &secret("s", &[("app", "a")]))
        .await
        .unwrap();
    let list = secrets
        .list_metadata(&ListParams::default().labels("app=a"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let meta: &PartialObjectMeta<Secret> = &list.items[0];
    assert_eq!(meta.name_any(), "s");
    assert_eq!(meta.labels()["app"], "a");
    let one = secrets.get_metadata("s").await.unwrap();
    assert_eq!(one.metadata.uid, meta.metadata.uid);

    let mut events = secrets
        .watch_metadata(&WatchParams::default(), &rv(meta))
        .await
        .unwrap()
        .boxed();
    secrets.create(&PostParams::default(), &secret("t", &[])).await.unwrap();
    match next(&mut events).await.unwrap() {
        WatchEvent::Added(m) => assert_eq!(m.name_any(), "t"),
        other => panic!("expected ADDED, got {other:?}"),
    }
    // kube-runtime watches Api<PartialObjectMeta<_>> with metadata-only requests.
    let metas = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), "x");
    assert_eq!(metas.list(&ListParams::default()).await.unwrap().items.len(), 2);
    let mut names = BTreeSet::new();
    let mut stream = watcher(metas, watcher::Config::default()).applied_objects().boxed();
    while names.len() < 2 {
        names.insert(next(&mut stream).await.unwrap().name_any());
    }
    assert_eq!(names, BTreeSet::from(["s".to_string(), "t".to_string()]));
}

#[tokio::test]
async fn injected_429_reaches_the_client_with_retry_after() {
    let (emu, client) = start().await;
    namespace(&client, "x").await;
    Api::<ConfigMap>::namespaced(client.clone(), "x")
        .create(&PostParams::default(), &config_map("c", &[]))
        .await
        .unwrap();
    let path = "/api/v1/namespaces/x/configmaps/c";

    // Raw HTTP: the status, the header and a Status body.
    emu.faults()
        .fail_next(Some(axum::http::Method::GET), path, 1, 429, Some(1));
    let response = reqwest::get(format!("{}{path}", emu.url())).await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("TooManyRequests"))
    );
    assert_eq!(
        reqwest::get(format!("{}{path}", emu.url())).await.unwrap().status(),
        200
    );

    // kube's client without retries sees the 429 as an API error.
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(emu.kubeconfig_path()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.default_retry = false;
    let plain = Api::<ConfigMap>::namespaced(Client::try_from(config).unwrap(), "x");
    emu.faults()
        .fail_next(Some(axum::http::Method::GET), path, 1, 429, Some(1));
    let (code, reason, _) = status_of(plain.get("c").await);
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));

    // kube's default client retries, waiting as Retry-After says.
    emu.counters().reset();
    emu.faults()
        .fail_next(Some(axum::http::Method::GET), path, 1, 429, Some(1));
    let started = Instant::now();
    Api::<ConfigMap>::namespaced(client.clone(), "x")
        .get("c")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(emu.counters().count("get", "configmaps"), 2);
}

#[tokio::test]
async fn a_watcher_reconnects_after_its_watch_is_dropped() {
    let (emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    // Drive the watcher until its watch is open (it lists first), so that
    // every drop below hits an open watch.
    let deadline = Instant::now() + DEADLINE;
    while emu.counters().count("watch", "configmaps") == 0 {
        assert!(Instant::now() < deadline, "the watcher never watched");
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    }
    cms.create(&PostParams::default(), &config_map("before", &[]))
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.unwrap().name_any(), "before");
    for round in 0..3 {
        emu.faults().drop_watches();
        let name = format!("after-{round}");
        cms.create(&PostParams::default(), &config_map(&name, &[]))
            .await
            .unwrap();
        assert_eq!(next(&mut stream).await.unwrap().name_any(), name);
    }
    assert_eq!(
        emu.counters().count("watch", "configmaps"),
        4,
        "{:?}",
        emu.counters().snapshot()
    );
    assert_eq!(emu.counters().count("list", "configmaps"), 1, "resumed, not relisted");
}

#[tokio::test]
async fn leases_round_trip_with_optimistic_concurrency() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let leases = Api::<Lease>::namespaced(client.clone(), "x");
    let now = MicroTime(jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(now.clone()),
            renew_time: Some(now.clone()),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.renew_time.unwrap().0.as_second(), now.0.as_second());

    let mut taken = created.clone();
    let spec = taken.spec.as_mut().unwrap();
    spec.holder_identity = Some("b".into());
    spec.lease_transitions = Some(1);
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    let updated = leases.replace("leader", &PostParams::default(), &taken).await.unwrap();
    assert_eq!(updated.spec.as_ref().unwrap().holder_identity.as_deref(), Some("b"));
    // The loser of a race, holding the old resourceVersion, gets a conflict.
    let (code, _, _) = status_of(leases.replace("leader", &PostParams::default(), &created).await);
    assert_eq!(code, 409);
    assert_eq!(
        leases.get("leader").await.unwrap().spec.unwrap().lease_transitions,
        Some(1)
    );
}

#[tokio::test]
async fn recorded_events_show_in_both_event_apis() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let cm = cms.create(&PostParams::default(), &config_map("c", &[])).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "emulator-test".into(),
            instance: Some("pod-1".into()),
        },
    );
    let event = RecorderEvent {
        type_: EventType::Warning,
        reason: "Tested".into(),
        note: Some("something happened".into()),
        action: "Testing".into(),
        secondary: None,
    };
    let reference = cm.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let core = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "x")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(core.items.len(), 1, "a repeat is a series, not a new Event");
    let e = &core.items[0];
    assert_eq!(e.reason.as_deref(), Some("Tested"));
    assert_eq!(e.message.as_deref(), Some("something happened"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.involved_object.name.as_deref(), Some("c"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(e.count, Some(2));
    let by_field = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "x")
        .list(&ListParams::default().fields("involvedObject.name=c"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);

    let new = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "x")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(new.items.len(), 1);
    let e = &new.items[0];
    assert_eq!(e.note.as_deref(), Some("something happened"));
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("c"));
    assert_eq!(e.reporting_controller.as_deref(), Some("emulator-test"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn counters_count_writes_by_verb_and_resource() {
    let (emu, client) = start().await;
    namespace(&client, "x").await;
    install_widgets(&client).await;
    emu.counters().reset();
    let secrets = Api::<Secret>::namespaced(client.clone(), "x");
    secrets.create(&PostParams::default(), &secret("a", &[])).await.unwrap();
    secrets.create(&PostParams::default(), &secret("b", &[])).await.unwrap();
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    secrets.delete("b", &DeleteParams::default()).await.unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    let widgets = Api::<Widget>::namespaced(client.clone(), "x");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "P"}})),
        )
        .await
        .unwrap();

    let counters = emu.counters();
    assert_eq!(counters.count("create", "secrets"), 2);
    assert_eq!(counters.count("patch", "secrets"), 1);
    assert_eq!(counters.count("delete", "secrets"), 1);
    assert_eq!(counters.count("list", "secrets"), 1);
    assert_eq!(counters.writes_to("secrets"), 4);
    assert_eq!(counters.writes_to("widgets"), 1);
    assert_eq!(counters.writes_to("widgets/status"), 1);
    assert_eq!(counters.writes(), 6);
    assert_eq!(
        emu.object_count(),
        4 + 1 + 1 + 1,
        "4 namespaces, a CRD, a Secret, a Widget"
    );
    counters.reset();
    assert_eq!(counters.writes(), 0);
}

#[tokio::test]
async fn server_side_apply_honours_a_resource_version_precondition() {
    let (_emu, client) = start().await;
    namespace(&client, "x").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "x");
    let apply = |rv: Option<String>, value: &str| {
        let cms = cms.clone();
        let mut metadata = json!({"name": "c"});
        if let Some(rv) = rv {
            metadata["resourceVersion"] = json!(rv);
        }
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"a": value}});
        async move {
            cms.patch("c", &PatchParams::apply("me").force(), &Patch::Apply(body))
                .await
        }
    };
    let first = apply(None, "1").await.unwrap();
    let rv = first.metadata.resource_version.clone();
    // The version applied against is current: the apply goes through.
    let second = apply(rv.clone(), "2").await.unwrap();
    assert_eq!(second.data.unwrap()["a"], "2");
    // A stale one is a 409 and changes nothing.
    let (code, reason, message) = status_of(apply(rv, "3").await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["a"], "2");
}
