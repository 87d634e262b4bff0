//! Generated artifacts stay in step with the code: the committed CRD YAML
//! under `crds/` and the example manifests under `examples/`.

use integration_operator::crd::{ClusterProvider, Integration, crds_yaml};

#[test]
fn committed_crds_match_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml"))
        .expect("crds/crds.yaml is committed");
    let generated = crds_yaml().expect("CRDs serialise");
    assert!(
        committed == generated,
        "crds/crds.yaml is out of date with src/crd.rs: run `make crds` and commit the result"
    );
}

#[test]
fn the_chart_ships_the_same_crds() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml")).expect("crds");
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/integration-operator/files/crds.yaml"
    ))
    .expect("the chart's CRD copy is committed");
    assert!(
        committed == chart,
        "the chart's CRDs differ from crds/: run `make crds`"
    );
}

#[test]
fn every_example_manifest_parses_as_its_kind() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/ exists") {
        let path = entry.expect("readable").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).expect("valid YAML");
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            match kind.as_str() {
                "Integration" => {
                    serde_yaml::from_value::<Integration>(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                "ClusterProvider" => {
                    serde_yaml::from_value::<ClusterProvider>(value)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                // Built-in kinds: the real apiserver checks them (tests/helm.rs).
                "Secret" | "Namespace" | "ServiceAccount" | "RoleBinding" | "Deployment" => {}
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no example manifests found");
}

use serde::Deserialize;
