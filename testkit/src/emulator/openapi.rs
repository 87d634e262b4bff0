//! OpenAPI v3 documents (`/openapi/v3` and per group-version), generated from
//! the registered CRD schemas and the built-in types the emulator serves.
//!
//! What the documents are shaped for (all checked against kubectl 1.32):
//! - `kubectl explain <resource>[.field...]`: kubectl finds the GVK through the
//!   `x-kubernetes-group-version-kind` object of an operation on
//!   `/api[s]/<group>/<version>[/namespaces/{namespace}]/<plural>[/{name}]`,
//!   then the schema in `components.schemas` whose
//!   `x-kubernetes-group-version-kind` list contains that GVK, and walks
//!   `properties`, `$ref`, `allOf`, `items` and `additionalProperties`.
//! - `kubectl apply`/`create` field validation: kubectl sends
//!   `fieldValidation=Strict` only when the `patch` operation of the
//!   resource's path, tagged with its GVK, has a `fieldValidation` query
//!   parameter, so every mutating operation declares it.
//! - kubectl caches documents by URL: the index's `serverRelativeURL` carries a
//!   `?hash=` of the document ([`index_with_documents`]).
//!
//! Schema names: built-ins use their Go names (`io.k8s.api.core.v1.Secret`);
//! CRD kinds use the reversed group, version and kind
//! (`io.integration-operator.v1alpha1.Integration`), as kube-apiserver does.
//! `ObjectMeta` is `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`, and a
//! CRD schema's `metadata` refers to it through `allOf`.
//!
//! Built-in schemas (derived from k8s-openapi's `schemars` impls, converted to
//! OpenAPI 3.0 with `#/components/schemas/` refs): core/v1 Namespace, Secret,
//! ConfigMap, Event, ServiceAccount, Pod; events.k8s.io/v1 Event;
//! coordination.k8s.io/v1 Lease; apps/v1 Deployment;
//! apiextensions.k8s.io/v1 CustomResourceDefinition. Each also gets a
//! `<Kind>List` schema.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// What the OpenAPI generator needs to know about one served resource.
#[derive(Debug, Clone)]
pub struct ResourceSchema {
    /// API group, "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Plural resource name, e.g. `integrations`.
    pub plural: String,
    pub namespaced: bool,
    /// The OpenAPI v3 schema of the object (for CRDs, `openAPIV3Schema`).
    /// Ignored for the built-in kinds listed in the module docs, whose full
    /// schemas (with every referenced definition) are generated here.
    pub schema: Value,
}

/// Body of `GET /openapi/v3`: the index of group-version documents.
/// `gvs` are paths like `api/v1`, `apis/integration-operator.io/v1alpha1`.
/// Without the documents the `hash` can only name the group-version; prefer
/// [`index_with_documents`], whose hash changes whenever a document does
/// (kubectl caches each document by its URL).
pub fn index(gvs: &[String]) -> Value {
    let paths: Map<String, Value> = gvs
        .iter()
        .map(|gv| {
            (
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", hash_of(gv))}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// Body of `GET /openapi/v3` with each URL's `hash` computed from the document
/// served for it, so kubectl refetches a document after a CRD changes.
pub fn index_with_documents(docs: &[(String, Value)]) -> Value {
    let paths: Map<String, Value> = docs
        .iter()
        .map(|(gv, doc)| {
            (
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", document_hash(doc))}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// The `hash` (an ETag-like hex digest) of a document.
pub fn document_hash(doc: &Value) -> String {
    hash_of(&doc.to_string())
}

fn hash_of(s: &str) -> String {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016X}", h.finish())
}

/// Body of `GET /openapi/v3/{gv}` for the resources of one group-version.
pub fn group_version_document(resources: &[ResourceSchema]) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.extend(meta_definitions());
    for r in resources {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let list_kind = format!("{}List", r.kind);
        let list_gvk = json!({"group": r.group, "version": r.version, "kind": list_kind});
        let name = match builtin_definitions(&r.group, &r.version, &r.kind) {
            Some((name, defs)) => {
                schemas.extend(defs);
                name
            }
            None => {
                let name = crd_schema_name(&r.group, &r.version, &r.kind);
                schemas.insert(name.clone(), crd_schema(&r.schema, &gvk));
                name
            }
        };
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
        let list_name = format!("{name}List");
        schemas.insert(
            list_name.clone(),
            json!({
                "description": format!("{list_kind} is a list of {}", r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"description": API_VERSION_DESCRIPTION, "type": "string"},
                    "items": {"description": format!("List of {}.", r.plural), "type": "array",
                              "items": {"allOf": [{"$ref": schema_ref(&name)}], "default": {}}},
                    "kind": {"description": KIND_DESCRIPTION, "type": "string"},
                    "metadata": {"description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                                 "allOf": [{"$ref": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}], "default": {}}
                },
                "x-kubernetes-group-version-kind": [list_gvk],
            }),
        );
        add_paths(&mut paths, r, &gvk, &name, &list_name);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Schemas of the built-in kinds the emulator serves, keyed by (group, version, kind):
/// the kind's own schema, whose `$ref`s point at `#/components/schemas/...`
/// (the definitions are added by [`group_version_document`]).
pub fn builtin_schema(group: &str, version: &str, kind: &str) -> Option<Value> {
    let (name, mut defs) = builtin_definitions(group, version, kind)?;
    defs.remove(&name)
}

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// `integration-operator.io`, `v1alpha1`, `Integration` ->
/// `io.integration-operator.v1alpha1.Integration`.
pub fn crd_schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// A CRD's `openAPIV3Schema` as kube-apiserver publishes it: `apiVersion`,
/// `kind` and `metadata` described, `metadata` pointing at ObjectMeta.
fn crd_schema(schema: &Value, gvk: &Value) -> Value {
    let mut s = match schema {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    s.entry("type").or_insert_with(|| json!("object"));
    let props = s.entry("properties").or_insert_with(|| json!({}));
    if let Value::Object(props) = props {
        props.insert(
            "apiVersion".into(),
            json!({"description": API_VERSION_DESCRIPTION, "type": "string"}),
        );
        props.insert(
            "kind".into(),
            json!({"description": KIND_DESCRIPTION, "type": "string"}),
        );
        props.insert(
            "metadata".into(),
            json!({"description": METADATA_DESCRIPTION, "allOf": [{"$ref": schema_ref(OBJECT_META)}]}),
        );
    }
    s.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
    Value::Object(s)
}

/// ObjectMeta and the other meta/v1 schemas every document refers to.
fn meta_definitions() -> Map<String, Value> {
    let (_, mut defs) = generate::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
    let (_, list_defs) = generate::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    defs.extend(list_defs);
    let (_, status_defs) = generate::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    defs.extend(status_defs);
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    defs
}

/// The schema name and all definitions (the kind's own included) of a built-in kind.
fn builtin_definitions(group: &str, version: &str, kind: &str) -> Option<(String, Map<String, Value>)> {
    use k8s_openapi::api;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    let (name, defs) = match (group, version, kind) {
        ("", "v1", "Namespace") => generate::<api::core::v1::Namespace>(),
        ("", "v1", "Secret") => generate::<api::core::v1::Secret>(),
        ("", "v1", "ConfigMap") => generate::<api::core::v1::ConfigMap>(),
        ("", "v1", "Event") => generate::<api::core::v1::Event>(),
        ("", "v1", "ServiceAccount") => generate::<api::core::v1::ServiceAccount>(),
        ("", "v1", "Pod") => generate::<api::core::v1::Pod>(),
        ("events.k8s.io", "v1", "Event") => generate::<api::events::v1::Event>(),
        ("coordination.k8s.io", "v1", "Lease") => generate::<api::coordination::v1::Lease>(),
        ("apps", "v1", "Deployment") => generate::<api::apps::v1::Deployment>(),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => generate::<apiext::CustomResourceDefinition>(),
        _ => return None,
    };
    Some((name, defs))
}

/// Generates `T`'s schema in OpenAPI 3.0 form: its name and every definition,
/// the root included under that name.
fn generate<T: JsonSchema>() -> (String, Map<String, Value>) {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let root = generator.root_schema_for::<T>();
    let mut root = root.to_value();
    let mut defs = root
        .as_object_mut()
        .and_then(|r| r.remove("components"))
        .and_then(|mut c| c.as_object_mut().and_then(|c| c.remove("schemas")))
        .and_then(|s| match s {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    let name = T::schema_name().into_owned();
    if let Value::Object(r) = &mut root {
        r.remove("title");
        r.remove("$schema");
    }
    defs.insert(name.clone(), root);
    for v in defs.values_mut() {
        normalize(v);
    }
    (name, defs)
}

/// Makes a generated schema look like kube-apiserver's: no `title`/`$schema`,
/// `type` arrays folded into `type` + `nullable`, refs in `#/components/schemas/`.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("$schema");
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(rest) = r.strip_prefix("#/$defs/")
            {
                *r = schema_ref(rest);
            }
            if let Some(Value::Array(types)) = m.get("type").cloned() {
                let non_null: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
                if non_null.len() < types.len() {
                    m.insert("nullable".into(), Value::Bool(true));
                }
                match non_null.as_slice() {
                    [one] => {
                        m.insert("type".into(), (*one).clone());
                    }
                    _ => {
                        m.remove("type");
                    }
                }
            }
            for child in m.values_mut() {
                normalize(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        ),
    ];
    if patch {
        p.push(json!({"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    p
}

fn json_response(name: &str) -> Value {
    json!({"200": {"description": "OK", "content": {
        "application/json": {"schema": {"$ref": schema_ref(name)}},
        "application/yaml": {"schema": {"$ref": schema_ref(name)}},
        "application/vnd.kubernetes.protobuf": {"schema": {"$ref": schema_ref(name)}}
    }}})
}

fn add_paths(paths: &mut Map<String, Value>, r: &ResourceSchema, gvk: &Value, name: &str, list_name: &str) {
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let op_id = |verb: &str, suffix: &str| {
        let ns = if r.namespaced && suffix != "ForAllNamespaces" {
            "Namespaced"
        } else {
            ""
        };
        format!("{verb}{ns}{}{suffix}", r.kind)
    };
    let op = |verb: &str, action: &str, description: String, response: &str, params: Vec<Value>, body: bool| {
        let mut o = json!({
            "tags": [format!("{}_{}", if r.group.is_empty() { "core" } else { &r.group }, r.version)],
            "description": description,
            "operationId": op_id(verb, ""),
            "parameters": params,
            "responses": json_response(response),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if body {
            o["requestBody"] = json!({"content": {"*/*": {"schema": {"$ref": schema_ref(name)}}}, "required": true});
        }
        o
    };
    let mut patch = op(
        "patch",
        "patch",
        format!("partially update the specified {}", r.kind),
        name,
        write_params(true),
        false,
    );
    patch["requestBody"] = json!({"content": {
        "application/apply-patch+yaml": {"schema": {"$ref": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}},
        "application/json-patch+json": {"schema": {"$ref": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}},
        "application/merge-patch+json": {"schema": {"$ref": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}},
        "application/strategic-merge-patch+json": {"schema": {"$ref": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}}
    }, "required": true});
    let mut path_params = vec![];
    if r.namespaced {
        path_params.push(json!({"name": "namespace", "in": "path", "description": "object name and auth scope, such as for teams and projects", "required": true, "schema": {"type": "string", "uniqueItems": true}}));
    }
    let mut item_params = path_params.clone();
    item_params.insert(0, json!({"name": "name", "in": "path", "description": format!("name of the {}", r.kind), "required": true, "schema": {"type": "string", "uniqueItems": true}}));
    paths.insert(
        collection.clone(),
        json!({
            "get": op("list", "list", format!("list or watch objects of kind {}", r.kind), list_name, vec![], false),
            "post": op("create", "post", format!("create a {}", r.kind), name, write_params(false), true),
            "delete": op("deletecollection", "deletecollection", format!("delete collection of {}", r.kind), "io.k8s.apimachinery.pkg.apis.meta.v1.Status", vec![], false),
            "parameters": path_params,
        }),
    );
    paths.insert(
        item,
        json!({
            "get": op("read", "get", format!("read the specified {}", r.kind), name, vec![], false),
            "put": op("replace", "put", format!("replace the specified {}", r.kind), name, write_params(false), true),
            "patch": patch,
            "delete": op("delete", "delete", format!("delete a {}", r.kind), "io.k8s.apimachinery.pkg.apis.meta.v1.Status", vec![], false),
            "parameters": item_params,
        }),
    );
    if r.namespaced {
        let mut all = op(
            "list",
            "list",
            format!("list or watch objects of kind {}", r.kind),
            list_name,
            vec![],
            false,
        );
        all["operationId"] = json!(op_id("list", "ForAllNamespaces"));
        paths.insert(format!("{prefix}/{}", r.plural), json!({"get": all}));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The Integration CRD as the operator generates it (crds/crds.yaml).
    pub(crate) fn integration_crd() -> Value {
        let yaml = include_str!("../../../crds/crds.yaml");
        serde_yaml::Deserializer::from_str(yaml)
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .find(|d: &Value| d["spec"]["names"]["kind"] == "Integration")
            .expect("Integration CRD in crds/crds.yaml")
    }

    pub(crate) fn integration_resource() -> ResourceSchema {
        let crd = integration_crd();
        ResourceSchema {
            group: "integration-operator.io".into(),
            version: "v1alpha1".into(),
            kind: "Integration".into(),
            plural: "integrations".into(),
            namespaced: true,
            schema: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
        }
    }

    pub(crate) fn secret_resource() -> ResourceSchema {
        ResourceSchema {
            group: String::new(),
            version: "v1".into(),
            kind: "Secret".into(),
            plural: "secrets".into(),
            namespaced: true,
            schema: Value::Null,
        }
    }

    /// Follows a `#/components/schemas/` ref.
    fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
        let r = s
            .get("$ref")
            .or_else(|| s.pointer("/allOf/0/$ref"))
            .and_then(Value::as_str);
        match r.and_then(|r| r.strip_prefix("#/components/schemas/")) {
            Some(name) => &doc["components"]["schemas"][name],
            None => s,
        }
    }

    #[test]
    fn crd_document_has_gvk_schema_paths_and_object_meta() {
        let doc = group_version_document(&[integration_resource()]);
        let name = "io.integration-operator.v1alpha1.Integration";
        let s = &doc["components"]["schemas"][name];
        assert_eq!(
            s["x-kubernetes-group-version-kind"],
            json!([{"group": "integration-operator.io", "version": "v1alpha1", "kind": "Integration"}])
        );
        assert!(
            s.pointer("/properties/spec/properties/refresh/properties/renewBefore/description")
                .is_some()
        );
        assert_eq!(
            s["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let meta = resolve(&doc, &s["properties"]["metadata"]);
        assert!(meta["properties"]["name"]["description"].is_string());
        // Every ref resolves.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let target = &part[..part.find('"').unwrap_or(0)];
            assert!(
                doc["components"]["schemas"].get(target).is_some(),
                "dangling ref {target}"
            );
        }
        // kubectl explain finds the GVK on an operation of the resource's paths.
        let list = &doc["paths"]["/apis/integration-operator.io/v1alpha1/namespaces/{namespace}/integrations"];
        assert_eq!(list["get"]["x-kubernetes-group-version-kind"]["kind"], "Integration");
        // kubectl's field validation check: PATCH on the item path declares fieldValidation.
        let patch =
            &doc["paths"]["/apis/integration-operator.io/v1alpha1/namespaces/{namespace}/integrations/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["version"], "v1alpha1");
        assert!(
            patch["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"))
        );
        assert!(
            doc["paths"]
                .get("/apis/integration-operator.io/v1alpha1/integrations")
                .is_some()
        );
    }

    #[test]
    fn builtin_schemas_are_openapi3_with_component_refs() {
        for (g, v, k) in [
            ("", "v1", "Namespace"),
            ("", "v1", "Secret"),
            ("", "v1", "ConfigMap"),
            ("", "v1", "Event"),
            ("", "v1", "ServiceAccount"),
            ("", "v1", "Pod"),
            ("events.k8s.io", "v1", "Event"),
            ("coordination.k8s.io", "v1", "Lease"),
            ("apps", "v1", "Deployment"),
            ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        ] {
            let s = builtin_schema(g, v, k).unwrap_or_else(|| panic!("{g}/{v} {k}"));
            let text = s.to_string();
            assert!(!text.contains("$defs") && !text.contains("$schema"), "{k}: {text:.200}");
            assert!(
                s["properties"]["metadata"]
                    .to_string()
                    .contains("#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "{k}"
            );
        }
        assert!(builtin_schema("", "v1", "Widget").is_none());
        let doc = group_version_document(&[secret_resource()]);
        let secret = &doc["components"]["schemas"]["io.k8s.api.core.v1.Secret"];
        assert_eq!(
            secret["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Secret"}])
        );
        assert_eq!(secret["properties"]["data"]["additionalProperties"]["format"], "byte");
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"].is_object());
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.SecretList"].is_object());
    }

    #[test]
    fn index_urls_carry_a_hash_that_follows_the_document() {
        let idx = index(&["api/v1".to_string()]);
        let url = idx["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap_or("");
        assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
        let a = group_version_document(&[integration_resource()]);
        let mut changed = integration_resource();
        changed.schema["description"] = json!("changed");
        let b = group_version_document(&[changed]);
        let ia = index_with_documents(&[("apis/integration-operator.io/v1alpha1".into(), a)]);
        let ib = index_with_documents(&[("apis/integration-operator.io/v1alpha1".into(), b)]);
        assert_ne!(ia, ib);
    }

    #[test]
    fn crd_schema_name_reverses_the_group() {
        assert_eq!(
            crd_schema_name("integration-operator.io", "v1alpha1", "Integration"),
            "io.integration-operator.v1alpha1.Integration"
        );
        assert_eq!(crd_schema_name("a.b.example.com", "v1", "X"), "com.example.b.a.v1.X");
    }

    /// A minimal discovery + OpenAPI server, enough for real kubectl to run
    /// `explain` and `get` against these pure functions before the emulator's
    /// request path exists. Returns the base URL.
    pub(crate) async fn fake_apiserver(objects: Vec<Value>) -> Option<String> {
        use axum::{
            Json, Router,
            extract::{Path, RawQuery},
            http::{HeaderMap, StatusCode},
            routing::get,
        };
        let resources = [integration_resource(), secret_resource()];
        let docs: Vec<(String, Value)> = vec![
            ("api/v1".into(), group_version_document(&resources[1..])),
            (
                "apis/integration-operator.io/v1alpha1".into(),
                group_version_document(&resources[..1]),
            ),
        ];
        let idx = index_with_documents(&docs);
        let docs2 = docs.clone();
        let crd = integration_crd();
        let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        let columns: Vec<Value> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let app = Router::new()
            .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})) }))
            .route("/apis", get(|| async { Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "integration-operator.io",
                "versions": [{"groupVersion": "integration-operator.io/v1alpha1", "version": "v1alpha1"}],
                "preferredVersion": {"groupVersion": "integration-operator.io/v1alpha1", "version": "v1alpha1"}}]})) }))
            .route("/api/v1", get(|| async { Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]})) }))
            .route("/apis/integration-operator.io/v1alpha1", get(|| async { Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "integration-operator.io/v1alpha1", "resources": [
                {"name": "integrations", "singularName": "integration", "namespaced": true, "kind": "Integration", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]})) }))
            .route("/openapi/v3", get(move || { let idx = idx.clone(); async move { Json(idx) } }))
            .route("/openapi/v3/{*gv}", get(move |Path(gv): Path<String>| { let docs = docs2.clone(); async move {
                Json(docs.iter().find(|(g, _)| *g == gv).map(|(_, d)| d.clone()).unwrap_or(Value::Null)) } }))
            .route("/apis/integration-operator.io/v1alpha1/namespaces/{ns}/integrations", get(move |headers: HeaderMap| { let objects = objects.clone(); let columns = columns.clone(); async move {
                let accept = headers.get("accept").and_then(|a| a.to_str().ok()).unwrap_or("");
                if accept.contains("as=Table") {
                    Json(crate::emulator::table::build(&columns, &objects, "Metadata", json!({"resourceVersion": "1"})))
                } else {
                    Json(json!({"kind": "IntegrationList", "apiVersion": "integration-operator.io/v1alpha1", "metadata": {}, "items": objects}))
                } } }).post(move |RawQuery(query): RawQuery, Json(body): Json<Value>| { let schema = schema.clone(); async move { create_integration(&schema, query, body) } }))
            .route("/apis/integration-operator.io/v1alpha1/namespaces/{ns}/integrations/{name}", get(|Path((_, name)): Path<(String, String)>| async move {
                (StatusCode::NOT_FOUND, Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("integrations.integration-operator.io \"{name}\" not found"), "reason": "NotFound",
                    "details": {"name": name, "group": "integration-operator.io", "kind": "integrations"}, "code": 404})))
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        tokio::spawn(async move { axum::serve(crate::nodelay(listener), app).await });
        Some(format!("http://{addr}"))
    }

    /// Runs kubectl against `server` with a fresh cache dir; None when kubectl is missing.
    pub(crate) async fn kubectl(server: &str, args: &[&str]) -> Option<(bool, String, String)> {
        if !std::path::Path::new("/usr/bin/kubectl").exists() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("openapi-test-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).ok()?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").ok()?;
        let out = tokio::process::Command::new("/usr/bin/kubectl")
            .arg(format!("--server={server}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--cache-dir={}", dir.join("cache").display()))
            .args(args)
            .output()
            .await
            .ok()?;
        let _ = std::fs::remove_dir_all(&dir);
        Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_explain_prints_crd_field_docs() {
        let Some(server) = fake_apiserver(vec![]).await else {
            return;
        };
        let Some((ok, out, err)) = kubectl(&server, &["explain", "integration.spec.refresh"]).await else {
            return;
        };
        assert!(ok, "stdout: {out}\nstderr: {err}");
        assert!(out.contains("GROUP:      integration-operator.io"), "{out}");
        assert!(out.contains("KIND:       Integration"), "{out}");
        assert!(out.contains("FIELD: refresh <Object>"), "{out}");
        assert!(out.contains("renewBefore\t<string>"), "{out}");
        let (ok, out, err) = kubectl(&server, &["explain", "integration.spec"])
            .await
            .unwrap_or_default();
        assert!(ok, "stdout: {out}\nstderr: {err}");
        assert!(out.contains("provider\t<string> -required-"), "{out}");
        let (ok, out, err) = kubectl(&server, &["explain", "integration.metadata.name"])
            .await
            .unwrap_or_default();
        assert!(
            ok && out.contains("Name must be unique within a namespace"),
            "stdout: {out}\nstderr: {err}"
        );
        let (ok, out, err) = kubectl(&server, &["explain", "secret"]).await.unwrap_or_default();
        assert!(ok, "stdout: {out}\nstderr: {err}");
        assert!(
            out.contains("KIND:       Secret") && out.contains("data\t<map[string]string>"),
            "{out}"
        );
        let (ok, _, err) = kubectl(&server, &["explain", "integration.spec.nope"])
            .await
            .unwrap_or_default();
        assert!(!ok && err.contains("field \"nope\" does not exist"), "{err}");
    }

    /// The create step of a request path, just enough to show how kubectl
    /// reports what [`crate::emulator::schema`] finds (400 strict, 422 invalid).
    fn create_integration(
        schema: &Value,
        query: Option<String>,
        mut body: Value,
    ) -> (axum::http::StatusCode, axum::Json<Value>) {
        use axum::http::StatusCode;
        let strict = query.unwrap_or_default().contains("fieldValidation=Strict");
        let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        match crate::emulator::schema::validate(schema, &mut body, None, strict) {
            Ok(()) => (StatusCode::CREATED, axum::Json(body)),
            Err(errs) if errs.iter().any(|e| e.reason == crate::emulator::schema::REASON_UNKNOWN) => {
                let fields: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
                (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("strict decoding error: {}", fields.join(", ")), "reason": "BadRequest", "code": 400}),
                    ),
                )
            }
            Err(errs) => {
                let msg: Vec<String> = errs.iter().map(ToString::to_string).collect();
                let causes: Vec<Value> = errs
                    .iter()
                    .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
                    .collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("Integration.integration-operator.io \"{name}\" is invalid: [{}]", msg.join(", ")), "reason": "Invalid",
                    "details": {"name": name, "group": "integration-operator.io", "kind": "Integration", "causes": causes}, "code": 422}),
                    ),
                )
            }
        }
    }

    async fn apply(server: &str, manifest: &str) -> (bool, String, String) {
        let file = std::env::temp_dir().join(format!("apply-{}-{}.yaml", std::process::id(), rand::random::<u64>()));
        if std::fs::write(&file, manifest).is_err() {
            return (false, String::new(), "cannot write manifest".into());
        }
        let path = file.display().to_string();
        let out = kubectl(server, &["apply", "-f", &path])
            .await
            .unwrap_or((true, "skipped".into(), String::new()));
        let _ = std::fs::remove_file(&file);
        out
    }

    /// kubectl apply sends fieldValidation=Strict because of the documents
    /// here, and prints the schema/CEL errors the way users see them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_apply_validates_strictly_and_reports_fields() {
        if !std::path::Path::new("/usr/bin/kubectl").exists() {
            return;
        }
        let Some(server) = fake_apiserver(vec![]).await else {
            return;
        };
        let head =
            "apiVersion: integration-operator.io/v1alpha1\nkind: Integration\nmetadata: {name: x, namespace: ns}\n";
        let (ok, out, err) = apply(
            &server,
            &format!("{head}spec: {{provider: sr, secretRef: {{name: in}}, apiKey: {{}}}}\n"),
        )
        .await;
        assert!(
            ok && out.contains("integration.integration-operator.io/x created"),
            "stdout: {out}\nstderr: {err}"
        );
        let (ok, _, err) = apply(
            &server,
            &format!("{head}spec: {{provider: sr, secretRef: {{name: in}}, apiKey: {{}}, bogus: 1}}\n"),
        )
        .await;
        assert!(
            !ok && err.contains("strict decoding error: unknown field \"spec.bogus\""),
            "{err}"
        );
        let (ok, _, err) = apply(
            &server,
            &format!("{head}spec: {{provider: sr, secretRef: {{}}, apiKey: {{}}}}\n"),
        )
        .await;
        assert!(
            !ok && err.contains("The Integration \"x\" is invalid")
                && err.contains("spec.secretRef.name: Required value"),
            "{err}"
        );
        let (ok, _, err) = apply(
            &server,
            &format!("{head}spec: {{provider: sr, secretRef: {{name: in}}, apiKey: {{}}, clientCredentials: {{}}}}\n"),
        )
        .await;
        assert!(
            !ok && err.contains("spec: Invalid value: \"object\": exactly one flow block must be set"),
            "{err}"
        );
    }
}
