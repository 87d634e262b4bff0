//! The served resource types — built-ins and those registered by
//! CustomResourceDefinitions — and the discovery and OpenAPI documents
//! derived from them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::emulator::openapi::{self, ResourceSchema};

/// One served resource of one group-version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// The `/status` subresource is served (and splits spec from status writes).
    pub status_subresource: bool,
    /// `additionalPrinterColumns` of a CRD version.
    pub printer_columns: Vec<Value>,
    /// `openAPIV3Schema` of a CRD version (None for built-ins).
    pub schema: Option<Value>,
    /// Defined by a CRD (validated against `schema`).
    pub custom: bool,
}

impl ResourceType {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key: versions of one group/resource share their objects, and
    /// so do core and events.k8s.io Events (two views of one resource, as
    /// in a real cluster).
    pub fn storage_key(&self) -> String {
        if self.kind == "Event" && (self.group.is_empty() || self.group == "events.k8s.io") {
            return "/events".into();
        }
        format!("{}/{}", self.group, self.plural)
    }

    /// `Kind.group` as used in Status messages (`Integration.integration-operator.io`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `plural.group` as in "integrations.integration-operator.io not found".
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool, short: &[&str]) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: false,
        printer_columns: vec![],
        schema: None,
        custom: false,
    }
}

/// The resource types the emulator serves.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut types = vec![
            builtin("", "v1", "Namespace", "namespaces", false, &["ns"]),
            builtin("", "v1", "Secret", "secrets", true, &[]),
            builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
            builtin("", "v1", "Event", "events", true, &["ev"]),
            builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
            builtin("", "v1", "Pod", "pods", true, &["po"]),
            builtin("coordination.k8s.io", "v1", "Lease", "leases", true, &[]),
            builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"]),
            builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"]),
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                &["crd", "crds"],
            ),
        ];
        for t in &mut types {
            if t.kind == "Namespace"
                || t.kind == "Pod"
                || t.kind == "Deployment"
                || t.kind == "CustomResourceDefinition"
            {
                t.status_subresource = true;
            }
        }
        Registry { types }
    }
}

impl Registry {
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Any served version of a group/resource (for garbage collection).
    pub fn by_storage_key(&self, key: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.storage_key() == key)
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types.iter().any(|t| t.group == group && t.version == version)
    }

    /// Registers (or re-registers) the served versions of a CRD.
    pub fn register_crd(&mut self, crd: &Value) {
        self.unregister_crd(crd);
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let names = &spec["names"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() == Some(false) {
                continue;
            }
            self.types.push(ResourceType {
                group: group.clone(),
                version: version["name"].as_str().unwrap_or_default().into(),
                kind: names["kind"].as_str().unwrap_or_default().into(),
                plural: names["plural"].as_str().unwrap_or_default().into(),
                singular: names["singular"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| names["kind"].as_str().unwrap_or_default().to_lowercase()),
                namespaced: spec["scope"].as_str() == Some("Namespaced"),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                status_subresource: version["subresources"]["status"].is_object(),
                printer_columns: version["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                schema: Some(version["schema"]["openAPIV3Schema"].clone()),
                custom: true,
            });
        }
    }

    pub fn unregister_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        self.types
            .retain(|t| !(t.custom && t.group == group && t.plural == plural));
    }

    /// `GET /apis`: every group with its versions.
    pub fn group_list(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(&t.group).or_default();
            if !versions.contains(&t.version.as_str()) {
                versions.push(&t.version);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`.
    pub fn group(&self, group: &str) -> Option<Value> {
        let list = self.group_list();
        list["groups"].as_array()?.iter().find(|g| g["name"] == group).map(|g| {
            let mut g = g.clone();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
    }

    /// `GET /api/v1` or `/apis/{group}/{version}`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let mut resources = Vec::new();
        for t in self.types.iter().filter(|t| t.group == group && t.version == version) {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": t.short_names,
                "categories": t.categories,
            }));
            if t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
    }

    /// OpenAPI v3 paths (`api/v1`, `apis/g/v`) with their documents.
    pub fn openapi_documents(&self) -> Vec<(String, Value)> {
        let mut by_gv: BTreeMap<(String, String), Vec<ResourceSchema>> = BTreeMap::new();
        for t in &self.types {
            let schema = match &t.schema {
                Some(s) => s.clone(),
                None => match openapi::builtin_schema(&t.group, &t.version, &t.kind) {
                    Some(s) => s,
                    None => continue,
                },
            };
            by_gv
                .entry((t.group.clone(), t.version.clone()))
                .or_default()
                .push(ResourceSchema {
                    group: t.group.clone(),
                    version: t.version.clone(),
                    kind: t.kind.clone(),
                    plural: t.plural.clone(),
                    namespaced: t.namespaced,
                    schema,
                });
        }
        by_gv
            .into_iter()
            .map(|((g, v), resources)| {
                let path = if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                };
                (path, openapi::group_version_document(&resources))
            })
            .collect()
    }
}
