//! Least privilege, judged by the real kube-apiserver's RBAC authorizer: the
//! operator's identity is the Helm chart's (its ServiceAccount, ClusterRole,
//! Roles and bindings, rendered by `helm template` with `watchNamespaces` set
//! to this test's namespace), authenticated with a TokenRequest token. Every
//! verb the operator uses is allowed; what it must never do is refused with
//! 403 Forbidden.

use crate::common::Cluster;
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

/// Denied by admission (the chart's ValidatingAdmissionPolicy) or by RBAC.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => status.message,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// Rejected-credential feedback, as the chart grants it when
/// `feedback.enabled`: an application's ServiceAccount bound to the
/// report-rejected role may set the credentials-rejected annotation on an
/// Integration, and the real apiserver (RBAC plus the chart's
/// ValidatingAdmissionPolicy, evaluated by its CEL admission plugin) refuses
/// everything else it tries.
#[tokio::test]
async fn the_feedback_role_lets_an_application_report_a_rejection_and_change_nothing_else() {
    use k8s_openapi::api::{core::v1::ServiceAccount, rbac::v1::RoleBinding};
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    let fullname = format!("fb-{ns}");
    let rendered = testkit::control_plane::render_chart(&[
        "--set",
        "feedback.enabled=true",
        "--set",
        &format!("fullnameOverride={fullname}"),
        "--show-only",
        "templates/feedback.yaml",
    ])
    .expect("the chart renders with feedback enabled");
    cluster.kubectl_apply(&rendered);

    // The application's identity, bound in its own namespace.
    let pp = PostParams::default();
    let admin = cluster.client.clone();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": "app-reports-rejections"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{fullname}-report-rejected")},
                "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let app = cluster.control_plane().service_account_client(&admin, &ns, "app").await;
    cluster
        .input_secret("creds", &[("client_id", "a"), ("client_secret", "b")])
        .await;
    cluster
        .oauth2_provider("auth", "http://127.0.0.1:9/token", json!({}))
        .await;
    cluster
        .integration(
            "api",
            json!({"provider": "auth", "secretRef": {"name": "creds"}, "clientCredentials": {}}),
        )
        .await;
    let integrations: Api<Integration> = Api::namespaced(app.clone(), &ns);
    let pp = PatchParams::default();
    let annotate = |key: &str, value: &str| Patch::Merge(json!({"metadata": {"annotations": {key: value}}}));

    // The policy takes effect once the apiserver has loaded it: until a
    // spec edit is refused, it has not.
    let message = crate::common::eventually(
        std::time::Duration::from_secs(20),
        "the admission policy in force",
        || async {
            match integrations
                .patch(
                    "api",
                    &pp,
                    &Patch::Merge(json!({"spec": {"target": {"name": "elsewhere"}}})),
                )
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Some(s.message),
                Ok(_) => {
                    // Admitted before the policy was loaded: put it back.
                    let _ = cluster
                        .integrations()
                        .patch("api", &pp, &Patch::Merge(json!({"spec": {"target": null}})))
                        .await;
                    None
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        },
    )
    .await;
    assert!(message.contains("may only set the annotation"), "{message}");

    // Reporting works.
    let reported = allowed(
        integrations
            .patch(
                "api",
                &pp,
                &annotate("integration-operator.io/credentials-rejected", "2026-12-02T10:00:00Z"),
            )
            .await,
        "set the credentials-rejected annotation",
    );
    assert_eq!(
        reported.metadata.annotations.unwrap()["integration-operator.io/credentials-rejected"],
        "2026-12-02T10:00:00Z"
    );
    // Nothing else: another annotation, a label, a finalizer, deletion,
    // status, Secrets.
    refused(
        integrations
            .patch("api", &pp, &annotate("integration-operator.io/renew-now", "now"))
            .await,
        "another annotation",
    );
    refused(
        integrations
            .patch("api", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await,
        "a label",
    );
    refused(
        integrations
            .patch("api", &pp, &Patch::Merge(json!({"metadata": {"finalizers": ["x/y"]}})))
            .await,
        "a finalizer",
    );
    forbidden(
        integrations.delete("api", &DeleteParams::default()).await,
        "delete the Integration",
    );
    forbidden(
        integrations
            .patch_status(
                "api",
                &pp,
                &Patch::Merge(json!({"status": {"renewAt": "2030-01-01T00:00:00Z"}})),
            )
            .await,
        "write status",
    );
    forbidden(
        Api::<Secret>::namespaced(app.clone(), &ns)
            .list(&ListParams::default())
            .await,
        "list Secrets",
    );
    // People with update rights are not affected by the policy.
    allowed(
        cluster
            .integrations()
            .patch("api", &pp, &annotate("integration-operator.io/renew-now", "now"))
            .await,
        "an admin annotates",
    );
}

/// Consumer rollouts' RBAC is opt-in: without the chart's
/// `rollouts.enabled` the operator may not touch workloads; with it, it may
/// patch Deployments, StatefulSets and DaemonSets in its namespaces, and
/// still not read, create or delete them.
#[tokio::test]
async fn workload_patches_are_allowed_only_with_the_charts_rollouts_opt_in() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    let admin: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    admin
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "app"},
                "spec": {
                    "selector": {"matchLabels": {"app": "app"}},
                    "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}},
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let restart = Patch::Merge(
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-02T00:00:00Z"}}}}}),
    );
    let pp = PatchParams::default();
    let op = cluster.operator_client.clone();
    let deployments: Api<Deployment> = Api::namespaced(op.clone(), &ns);
    forbidden(
        deployments.patch("app", &pp, &restart).await,
        "patch a Deployment without the opt-in",
    );

    cluster.enable_rollouts().await;
    allowed(
        deployments.patch("app", &pp, &restart).await,
        "patch a Deployment with rollouts.enabled",
    );
    // A patch of a missing StatefulSet or DaemonSet is a 404, not a 403: allowed.
    for result in [
        Api::<StatefulSet>::namespaced(op.clone(), &ns)
            .patch("none", &pp, &restart)
            .await
            .map(drop),
        Api::<DaemonSet>::namespaced(op.clone(), &ns)
            .patch("none", &pp, &restart)
            .await
            .map(drop),
    ] {
        match result {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 404, "{s:?}"),
            other => panic!("expected 404, got {other:?}"),
        }
    }
    forbidden(deployments.get("app").await, "read a Deployment");
    forbidden(
        deployments.delete("app", &DeleteParams::default()).await,
        "delete a Deployment",
    );
    forbidden(
        Api::<Deployment>::namespaced(op.clone(), "default")
            .patch("app", &pp, &restart)
            .await,
        "patch a Deployment outside watchNamespaces",
    );
}

/// The inbound server's receiver (any replica, leader or not) reads the
/// ClusterProvider and its webhook Secret in the operator's namespace, lists
/// Integrations and records a delivery as annotations with a uid-guarded
/// merge patch: the chart's RBAC allows exactly that, and not deleting an
/// Integration or reading a webhook Secret elsewhere.
#[tokio::test]
async fn the_operator_can_do_what_the_inbound_receiver_needs() {
    let cluster = Cluster::start().await;
    let op = cluster.operator_client.clone();
    cluster
        .cluster_provider(
            "kombo",
            json!({"type": "kombo", "baseUrl": "http://127.0.0.1:9/v1", "webhook": {"secretRef": {"name": "kombo-webhook"}}}),
        )
        .await;
    cluster.input_secret("kombo-webhook", &[("webhook_secret", "s")]).await;
    cluster.input_secret("kombo-api-key", &[("api_key", "k")]).await;
    let created = cluster
        .integration(
            "hooked",
            json!({"provider": "kombo", "secretRef": {"name": "kombo-api-key"},
                   "connection": {"endUserEmail": "a@b.example", "endUserOrganizationName": "B"},
                   "target": {"name": "hooked-out"}}),
        )
        .await;

    let providers: Api<ClusterProvider> = Api::all(op.clone());
    allowed(
        providers.get(&cluster.provider_name("kombo")).await,
        "get clusterprovider",
    );
    let own: Api<Secret> = Api::namespaced(op.clone(), &cluster.operator_namespace());
    allowed(
        own.get("kombo-webhook").await,
        "get the webhook Secret in the operator's namespace",
    );
    let integrations: Api<Integration> = Api::namespaced(op.clone(), &cluster.namespace);
    allowed(integrations.list(&ListParams::default()).await, "list integrations");
    allowed(
        integrations
            .patch(
                "hooked",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"uid": created.metadata.uid, "annotations": {
                    "integration-operator.io/provider-event": "evt_1",
                    "integration-operator.io/provider-reported-id": "personio:x 00"}}})),
            )
            .await,
        "patch integration annotations (the receiver's record)",
    );

    forbidden(
        integrations.delete("hooked", &DeleteParams::default()).await,
        "delete integration",
    );
    let elsewhere: Api<Secret> = Api::namespaced(op.clone(), "default");
    forbidden(
        elsewhere.get("kombo-webhook").await,
        "get a Secret outside the operator's namespaces",
    );
}
