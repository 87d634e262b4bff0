//! `helm install` and `helm uninstall` of the chart against the real
//! kube-apiserver: what the API admits (no kubelet runs, so no Pod starts).
//! The apiserver validates every rendered object, the chart's ClusterProviders
//! against the CRD's OpenAPI schema and CEL rules included.

mod common;

use common::Cluster;
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
    assert!(
        cluster.control_plane().is_some(),
        "this test is about the real apiserver"
    );
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
