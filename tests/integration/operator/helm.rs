//! `helm install` and `helm uninstall` of the chart against the real
//! kube-apiserver: what the API admits (no kubelet runs, so no Pod starts).
//! The apiserver validates every rendered object, the chart's ClusterProviders
//! against the CRD's OpenAPI schema and CEL rules included.

use crate::common::Cluster;
use integration_operator::crd::ClusterProvider;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, Role},
};
use kube::Api;

fn helm(cluster: &Cluster, args: &[&str]) -> String {
    let helm = testkit::control_plane::helm().expect("helm installed");
    let out = std::process::Command::new(helm)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["--namespace", &cluster.namespace])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn helm_install_and_uninstall_of_the_chart_are_admitted_and_clean_up() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    let fullname = format!("h-{ns}");
    let chart = testkit::control_plane::repo_root().join("charts/integration-operator");
    // The CRDs are already installed (by the harness); the chart's default
    // ClusterProviders are created as a user's install would.
    helm(
        &cluster,
        &[
            "install",
            "io",
            chart.to_str().unwrap(),
            "--set",
            "crds.install=false",
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--set",
            &format!("fullnameOverride={fullname}"),
        ],
    );
    let status = helm(&cluster, &["status", "io"]);
    assert!(status.contains("STATUS: deployed"), "{status}");

    let deployment = Api::<Deployment>::namespaced(cluster.client.clone(), &ns)
        .get(&fullname)
        .await
        .expect("the Deployment was admitted");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(fullname.as_str()));
    let env = pod.containers[0].env.clone().unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "WATCH_NAMESPACES" && e.value.as_deref() == Some(ns.as_str())),
        "{env:?}"
    );
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns)
        .get(&fullname)
        .await
        .expect("the ServiceAccount");
    Api::<ClusterRole>::all(cluster.client.clone())
        .get(&fullname)
        .await
        .expect("the ClusterRole");
    Api::<Role>::namespaced(cluster.client.clone(), &ns)
        .get(&format!("{fullname}-managed"))
        .await
        .expect("the Role in the watched namespace");
    let providers: Api<ClusterProvider> = Api::all(cluster.client.clone());
    for name in ["smartrecruiters", "cornerstone-talentlink", "cloud-elements", "kombo"] {
        providers
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("the chart's ClusterProvider {name}: {e}"));
    }

    helm(&cluster, &["uninstall", "io", "--wait"]);
    assert!(
        Api::<Deployment>::namespaced(cluster.client.clone(), &ns)
            .get_opt(&fullname)
            .await
            .unwrap()
            .is_none(),
        "the Deployment outlived helm uninstall"
    );
    assert!(
        Api::<ClusterRole>::all(cluster.client.clone())
            .get_opt(&fullname)
            .await
            .unwrap()
            .is_none(),
        "the ClusterRole outlived helm uninstall"
    );
    for name in ["smartrecruiters", "cornerstone-talentlink", "cloud-elements", "kombo"] {
        assert!(
            providers.get_opt(name).await.unwrap().is_none(),
            "ClusterProvider {name} outlived helm uninstall"
        );
    }
}

/// kubectl as the admin, in this test's namespace unless a manifest names
/// its own.
fn kubectl(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// `manifest` with every object renamed `<name>-<suffix>` and moved to
/// `namespace` (cluster-scoped ClusterProviders keep no namespace), so a
/// dry run cannot meet an object another test left on the shared cluster.
fn isolated(manifest: &str, namespace: &str, suffix: &str) -> String {
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let mut value: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let cluster_scoped = value["kind"].as_str() == Some("ClusterProvider");
        let meta = value["metadata"].as_mapping_mut().expect("metadata");
        let name = meta["name"].as_str().unwrap().to_string();
        meta.insert("name".into(), format!("{name}-{suffix}").into());
        if !cluster_scoped {
            meta.insert("namespace".into(), namespace.into());
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).unwrap());
    }
    out
}

/// Creates `manifest` as a server-side dry run with strict field
/// validation: the CRDs' OpenAPI schemas, CEL rules and unknown-field
/// checks all apply; nothing is stored.
fn dry_run_create(cluster: &Cluster, manifest: &str) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    kubectl(
        cluster,
        &[
            "create",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            file.path().to_str().unwrap(),
        ],
    )
}

/// Every example is admitted by the real apiserver with strict field
/// validation; a misspelt field in a copy of one is refused, naming the
/// field, so the check can fail.
#[tokio::test]
async fn every_example_is_admitted_with_strict_field_validation_and_a_misspelt_field_is_refused() {
    let cluster = Cluster::start().await;
    let suffix = &cluster.namespace[cluster.namespace.len() - 8..];
    let dir = testkit::control_plane::repo_root().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let manifest = isolated(&std::fs::read_to_string(&path).unwrap(), &cluster.namespace, suffix);
        let out = dry_run_create(&cluster, &manifest);
        assert!(
            out.status.success(),
            "{} was refused: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples found");

    let original = std::fs::read_to_string(dir.join("oauth2-client-credentials.yaml")).unwrap();
    assert!(
        original.contains("secretRef:"),
        "the example changed; pick another field"
    );
    let misspelt = isolated(
        &original.replace("secretRef:", "secretRefs:"),
        &cluster.namespace,
        suffix,
    );
    let out = dry_run_create(&cluster, &misspelt);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misspelt field was admitted");
    assert!(
        stderr.contains("secretRefs"),
        "the refusal does not name the field: {stderr}"
    );
}
