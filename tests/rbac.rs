//! Least privilege, judged by the real kube-apiserver's RBAC authorizer: the
//! operator's identity is the Helm chart's (its ServiceAccount, ClusterRole,
//! Roles and bindings, rendered by `helm template` with `watchNamespaces` set
//! to this test's namespace), authenticated with a TokenRequest token. Every
//! verb the operator uses is allowed; what it must never do is refused with
//! 403 Forbidden.

mod common;

use common::Cluster;
use integration_operator::crd::{ClusterProvider, Integration};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Secret},
    events::v1::Event,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
};
use serde_json::json;

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert_eq!(status.reason, "Forbidden", "{what}: {status:?}");
        }
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: the chart's RBAC should allow it: {e}"))
}

#[tokio::test]
async fn the_charts_rbac_allows_every_verb_the_operator_uses_and_nothing_it_must_not_do() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    let op = cluster.operator_client.clone();
    let pp = PostParams::default();

    // ClusterProviders: read, cluster-wide.
    let providers: Api<ClusterProvider> = Api::all(op.clone());
    allowed(providers.list(&ListParams::default()).await, "list clusterproviders");
    allowed(
        providers.watch(&WatchParams::default().timeout(1), "0").await.map(drop),
        "watch clusterproviders",
    );
    cluster
        .oauth2_provider("auth", "http://127.0.0.1:9/token", json!({}))
        .await;
    allowed(
        providers.get(&cluster.provider_name("auth")).await,
        "get clusterprovider",
    );

    // Integrations: read, patch (finalizer), patch status.
    cluster
        .input_secret("creds", &[("client_id", "a"), ("client_secret", "b")])
        .await;
    cluster
        .integration(
            "api",
            json!({"provider": "auth", "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": "out"}}),
        )
        .await;
    let integrations: Api<Integration> = Api::namespaced(op.clone(), &ns);
    allowed(integrations.list(&ListParams::default()).await, "list integrations");
    allowed(
        integrations
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .map(drop),
        "watch integrations",
    );
    allowed(integrations.get("api").await, "get integration");
    allowed(
        integrations
            .patch(
                "api",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["integration-operator.io/test"]}})),
            )
            .await,
        "patch integration finalizers",
    );
    allowed(
        integrations
            .patch_status(
                "api",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
            )
            .await,
        "patch integration status",
    );

    // Secrets in the watched namespace: read, create, patch (server-side apply).
    let secrets: Api<Secret> = Api::namespaced(op.clone(), &ns);
    allowed(secrets.list(&ListParams::default()).await, "list secrets");
    allowed(
        secrets.watch(&WatchParams::default().timeout(1), "0").await.map(drop),
        "watch secrets",
    );
    allowed(secrets.get("creds").await, "get secret");
    let out: Secret =
        serde_json::from_value(json!({"metadata": {"name": "written"}, "stringData": {"k": "v"}})).unwrap();
    allowed(secrets.create(&pp, &out).await, "create secret");
    allowed(
        secrets
            .patch(
                "written",
                &PatchParams::apply("integration-operator").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "written"}, "stringData": {"k": "w"}})),
            )
            .await,
        "server-side apply secret",
    );

    // Events about Integrations.
    let events: Api<Event> = Api::namespaced(op.clone(), &ns);
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "api.test"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "integration-operator.io/controller",
        "reportingInstance": "test",
        "action": "Reconcile", "reason": "Test", "type": "Normal", "note": "rbac test",
        "regarding": {"apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration", "namespace": ns, "name": "api"},
    }))
    .unwrap();
    allowed(events.create(&pp, &event).await, "create event");
    allowed(
        events
            .patch(
                "api.test",
                &PatchParams::default(),
                // As an event series is updated (the note itself is immutable).
                &Patch::Merge(json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}})),
            )
            .await,
        "patch event",
    );

    // The leader-election Lease in the operator's own namespace.
    let leases: Api<Lease> = Api::namespaced(op.clone(), &ns);
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "integration-operator"}, "spec": {"holderIdentity": "a"}}))
            .unwrap();
    allowed(leases.create(&pp, &lease).await, "create lease");
    let mut got = allowed(leases.get("integration-operator").await, "get lease");
    got.spec.as_mut().unwrap().holder_identity = Some("b".into());
    allowed(leases.replace("integration-operator", &pp, &got).await, "update lease");
    allowed(
        leases
            .patch(
                "integration-operator",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": "c"}})),
            )
            .await,
        "patch lease",
    );

    // Never: delete a Secret (outputs are garbage-collected by ownerReferences).
    forbidden(secrets.delete("creds", &DeleteParams::default()).await, "delete secret");
    forbidden(
        secrets
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await,
        "delete all secrets",
    );
    // Never: Secrets outside watchNamespaces.
    let elsewhere = format!("{ns}-other");
    let other_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": elsewhere}})).unwrap();
    Api::<Namespace>::all(cluster.client.clone())
        .create(&pp, &other_ns)
        .await
        .unwrap();
    let theirs: Secret =
        serde_json::from_value(json!({"metadata": {"name": "theirs"}, "stringData": {"password": "x"}})).unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), &elsewhere)
        .create(&pp, &theirs)
        .await
        .unwrap();
    let other_secrets: Api<Secret> = Api::namespaced(op.clone(), &elsewhere);
    forbidden(
        other_secrets.get("theirs").await,
        "get a secret outside watchNamespaces",
    );
    forbidden(
        other_secrets.list(&ListParams::default()).await,
        "list secrets outside watchNamespaces",
    );
    forbidden(
        Api::<Secret>::all(op.clone()).list(&ListParams::default()).await,
        "list secrets in all namespaces",
    );
    forbidden(
        other_secrets.create(&pp, &out).await,
        "create a secret outside watchNamespaces",
    );
    // Never: write ClusterProviders (their endpoints are the cluster admin's to set).
    let mut cp = allowed(
        providers.get(&cluster.provider_name("auth")).await,
        "get clusterprovider",
    );
    cp.metadata.resource_version = None;
    cp.metadata.uid = None;
    cp.metadata.creation_timestamp = None;
    cp.metadata.managed_fields = None;
    cp.metadata.generation = None;
    cp.metadata.name = Some(cluster.provider_name("created-by-operator"));
    forbidden(providers.create(&pp, &cp).await, "create clusterprovider");
    forbidden(
        providers
            .patch(
                &cluster.provider_name("auth"),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tokenUrl": "http://127.0.0.1:9/elsewhere"}})),
            )
            .await,
        "patch clusterprovider",
    );
    forbidden(
        providers
            .delete(&cluster.provider_name("auth"), &DeleteParams::default())
            .await,
        "delete clusterprovider",
    );
    // Nor create Integrations (people do that) or delete them.
    forbidden(
        integrations.delete("api", &DeleteParams::default()).await,
        "delete integration",
    );
}
