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

/// Every example reads as the operator's own type with no field dropped on
/// the way: serde ignores unknown fields, so a misspelt one would otherwise
/// pass here and be silently lost in the operator (the apiserver's strict
/// check is `operator::helm`'s test).
#[test]
fn every_example_manifest_reads_as_its_kind_without_an_ignored_field() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/ exists") {
        let path = entry.expect("readable").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).expect("valid YAML");
            if let Err(e) = read_as_its_kind(&value) {
                panic!("{}: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no example manifests found");
}

/// The positive control of the test above: a misspelt field is caught.
#[test]
fn a_misspelt_example_field_is_caught() {
    let good = serde_json::json!({
        "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
        "metadata": {"name": "x"},
        "spec": {"provider": "p", "secretRef": {"name": "in"}, "target": {"name": "out"}},
    });
    assert_eq!(read_as_its_kind(&good), Ok(()));
    let mut misspelt = good.clone();
    misspelt["spec"]["target"]["nmae"] = "typo".into();
    assert_eq!(
        read_as_its_kind(&misspelt),
        Err("field spec.target.nmae is not read by the operator".into())
    );
}

/// Reads `value` as the type of its kind and returns an error naming any
/// field the type did not keep.
fn read_as_its_kind(value: &serde_json::Value) -> Result<(), String> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    let read = match kind {
        "Integration" => serde_json::from_value::<Integration>(value.clone()).and_then(serde_json::to_value),
        "ClusterProvider" => serde_json::from_value::<ClusterProvider>(value.clone()).and_then(serde_json::to_value),
        // Built-in kinds: the real apiserver checks them (operator::helm).
        "Secret" | "Namespace" | "ServiceAccount" | "RoleBinding" | "Deployment" => return Ok(()),
        other => return Err(format!("unexpected kind {other:?}")),
    }
    .map_err(|e| e.to_string())?;
    match dropped_field(value.get("spec"), read.get("spec"), "spec") {
        Some(path) => Err(format!("field {path} is not read by the operator")),
        None => Ok(()),
    }
}

/// The first path present in `original` but absent from `read`.
fn dropped_field(original: Option<&serde_json::Value>, read: Option<&serde_json::Value>, at: &str) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (original?, read) {
        (Object(o), Some(Object(r))) => o
            .iter()
            .find_map(|(k, v)| dropped_field(Some(v), r.get(k), &format!("{at}.{k}"))),
        (Array(o), Some(Array(r))) => o
            .iter()
            .enumerate()
            .find_map(|(i, v)| dropped_field(Some(v), r.get(i), &format!("{at}[{i}]"))),
        // Types skip writing empty and default values back; those were read.
        (serde_json::Value::Null | serde_json::Value::Bool(false), _) => None,
        (serde_json::Value::String(s), None) if s.is_empty() => None,
        (_, None) => Some(at.to_string()),
        _ => None,
    }
}

use serde::Deserialize;

/// The drivers' crate stays free of Kubernetes: the compiler enforces the
/// boundary only while kube and k8s-openapi are not its dependencies.
#[test]
fn the_providers_crate_does_not_depend_on_kubernetes() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crates/providers/Cargo.toml"))
        .expect("crates/providers/Cargo.toml");
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    assert!(dependencies.contains("reqwest"), "the check reads the right table");
    for line in dependencies.lines() {
        let name = line.split(['=', '.']).next().unwrap_or_default().trim();
        assert!(
            !name.starts_with("kube") && !name.starts_with("k8s"),
            "integration-providers depends on {name}: drivers must not reach Kubernetes"
        );
    }
}
