//! End-to-end scenarios against a real cluster (kind, k3d, minikube, ...):
//! `make e2e` with `KUBECONFIG` pointing at it. Ignored by `make test` —
//! no machine here has a cluster — and reported as skipped there, never as
//! passed.
//!
//! The operator runs in this test process (so it reaches the OAuth 2.0
//! simulator on 127.0.0.1), against the cluster's API server. Everything is
//! created in a fresh namespace labelled `integration-operator.io/e2e=true`
//! and a uniquely named ClusterProvider, both deleted at the end. The CRDs are
//! server-side applied from `crds/crds.yaml` and left installed.

use std::time::Duration;

use clap::Parser;
use integration_operator::{
    cli::{Cli, Command, Operator},
    crd::{ClusterProvider, Integration},
};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use testkit::sim::oauth2::OAuth2Sim;

async fn poll<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn ready(api: &Api<Integration>, name: &str) -> Option<Integration> {
    let i = api.get(name).await.ok()?;
    let c = i.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True").then_some(i.clone())
}

async fn token(secrets: &Api<Secret>, name: &str) -> Option<String> {
    let s = secrets.get_opt(name).await.ok()??;
    let v = s.data?.get("access_token")?.0.clone();
    String::from_utf8(v).ok()
}

#[tokio::test]
#[ignore = "needs a real cluster: run `make e2e` with KUBECONFIG set"]
async fn integration_lifecycle_on_a_real_cluster() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to the cluster to test against"
    );
    let client = Client::try_default().await.expect("a client for $KUBECONFIG");
    let suffix = format!("{:x}", jiff::Timestamp::now().as_millisecond() & 0xffffff);
    let ns = format!("io-e2e-{suffix}");
    let provider = format!("io-e2e-{suffix}");

    // CRDs (server-side apply, so re-running is harmless).
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml")).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("integration-operator-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD applied");
        poll("CRD established", || async {
            let c = crds.get(&name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": ns, "labels": {"integration-operator.io/e2e": "true"}}
    }))
    .unwrap();
    namespaces.create(&PostParams::default(), &namespace).await.unwrap();

    let sim = OAuth2Sim::start().await.unwrap();
    sim.add_client("e2e-client", "e2e-secret-5d1f");
    sim.set_token_lifetime(Some(6));
    let providers: Api<ClusterProvider> = Api::all(client.clone());
    let cp: ClusterProvider = serde_json::from_value(json!({
        "apiVersion": "integration-operator.io/v1alpha1", "kind": "ClusterProvider",
        "metadata": {"name": provider},
        "spec": {"type": "oauth2", "tokenUrl": sim.token_url(), "allowInsecureHttp": true, "allowPrivateAddresses": true},
    }))
    .unwrap();
    providers.create(&PostParams::default(), &cp).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let input: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"}, "stringData": {"client_id": "e2e-client", "client_secret": "e2e-secret-5d1f"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &input).await.unwrap();

    let Command::Run(args) = Cli::parse_from([
        "integration-operator",
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--namespace",
        ns.as_str(),
    ])
    .command
    else {
        unreachable!()
    };
    let operator = Operator::start(client.clone(), *args).await.expect("operator starts");

    let integrations: Api<Integration> = Api::namespaced(client.clone(), &ns);
    let integration: Integration = serde_json::from_value(json!({
        "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
        "metadata": {"name": "api"},
        "spec": {"provider": provider, "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": "out"}},
    }))
    .unwrap();
    integrations.create(&PostParams::default(), &integration).await.unwrap();
    poll("Ready", || ready(&integrations, "api")).await;
    let first = poll("a token in the Secret", || token(&secrets, "out")).await;
    assert!(sim.is_valid_token(&first));
    // Renewed before the 6-second token expires.
    let second = poll("a renewed token", || async {
        let t = token(&secrets, "out").await?;
        (t != first).then_some(t)
    })
    .await;
    assert!(sim.is_valid_token(&second));

    // Deleting the Integration garbage-collects the Secret (the cluster's GC).
    integrations.delete("api", &DeleteParams::default()).await.unwrap();
    poll("the Secret to be collected", || async {
        secrets.get_opt("out").await.ok()?.is_none().then_some(())
    })
    .await;

    operator.stop().await;
    let _ = providers.delete(&provider, &DeleteParams::default()).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
