//! `application/vnd.kubernetes.protobuf` bodies for built-in types: the
//! `k8s\0` magic, a `runtime.Unknown` envelope (`typeMeta`, `raw`,
//! `contentEncoding`, `contentType`) and the type's message from `k8s-pb`.
//!
//! Covered kinds, both directions ([`decode`] and [`encode`]):
//! core/v1 `Secret`, `ConfigMap`, `Namespace`, `Event`, their `...List`
//! kinds, coordination.k8s.io/v1 `Lease` and `LeaseList`, and meta/v1
//! `Status` (encode only: it is what error responses carry). Anything else is
//! an error from `decode` (the request path answers 415) and `None` from
//! `encode` (the caller answers in JSON).
//!
//! The conversion follows Go's JSON encoding of the same types: `omitempty`
//! scalars that are empty are left out (gogo-protobuf always writes them),
//! pointer fields (`immutable`, the Lease spec, `deletionGracePeriodSeconds`,
//! `controller`...) keep their zero values, zero `Time`s are left out, `Time`
//! is RFC 3339 in seconds and `MicroTime` in microseconds, `bytes` are base64.
//! Not converted: `ManagedFieldsEntry.fieldsV1` is carried as its JSON.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Map, Value, json};

/// Content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf request body for the given built-in kind into its JSON form.
/// Errors name what could not be decoded (the request path answers 415 or 400).
/// The envelope's own `typeMeta` wins over `api_version`/`kind` when set.
pub fn decode(api_version: &str, kind: &str, body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body does not start with the k8s\\0 magic")?;
    let unknown = Unknown::decode(rest).map_err(|e| format!("invalid runtime.Unknown envelope: {e}"))?;
    if unknown.content_encoding.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(format!(
            "unsupported protobuf content encoding {:?}",
            unknown.content_encoding
        ));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm
        .api_version
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| api_version.to_string());
    let kind = tm.kind.filter(|s| !s.is_empty()).unwrap_or_else(|| kind.to_string());
    let raw = unknown.raw.unwrap_or_default();
    let bad = |e: prost::DecodeError| format!("invalid protobuf {api_version} {kind}: {e}");
    let obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => secret_json(&core::Secret::decode(&raw[..]).map_err(bad)?),
        ("v1", "ConfigMap") => config_map_json(&core::ConfigMap::decode(&raw[..]).map_err(bad)?),
        ("v1", "Namespace") => namespace_json(&core::Namespace::decode(&raw[..]).map_err(bad)?),
        ("v1", "Event") => event_json(&core::Event::decode(&raw[..]).map_err(bad)?),
        ("coordination.k8s.io/v1", "Lease") => lease_json(&coordination::Lease::decode(&raw[..]).map_err(bad)?),
        ("v1", "SecretList") => {
            let l = core::SecretList::decode(&raw[..]).map_err(bad)?;
            list_json(
                &l.metadata,
                l.items.iter().map(|i| typed(secret_json(i), "v1", "Secret")),
            )
        }
        ("v1", "ConfigMapList") => {
            let l = core::ConfigMapList::decode(&raw[..]).map_err(bad)?;
            list_json(
                &l.metadata,
                l.items.iter().map(|i| typed(config_map_json(i), "v1", "ConfigMap")),
            )
        }
        ("v1", "NamespaceList") => {
            let l = core::NamespaceList::decode(&raw[..]).map_err(bad)?;
            list_json(
                &l.metadata,
                l.items.iter().map(|i| typed(namespace_json(i), "v1", "Namespace")),
            )
        }
        ("v1", "EventList") => {
            let l = core::EventList::decode(&raw[..]).map_err(bad)?;
            list_json(&l.metadata, l.items.iter().map(|i| typed(event_json(i), "v1", "Event")))
        }
        ("coordination.k8s.io/v1", "LeaseList") => {
            let l = coordination::LeaseList::decode(&raw[..]).map_err(bad)?;
            list_json(
                &l.metadata,
                l.items
                    .iter()
                    .map(|i| typed(lease_json(i), "coordination.k8s.io/v1", "Lease")),
            )
        }
        _ => return Err(format!("protobuf is not supported for {api_version} {kind}")),
    };
    Ok(typed(obj, &api_version, &kind))
}

/// Encodes a built-in object (or list/Status) as a protobuf body, or `None` when
/// the kind has no protobuf encoding here (the caller then answers in JSON).
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str)?;
    let raw = match (api_version, kind) {
        ("v1", "Secret") => secret_pb(obj)?.encode_to_vec(),
        ("v1", "ConfigMap") => config_map_pb(obj)?.encode_to_vec(),
        ("v1", "Namespace") => namespace_pb(obj).encode_to_vec(),
        ("v1", "Event") => event_pb(obj).encode_to_vec(),
        ("coordination.k8s.io/v1", "Lease") => lease_pb(obj).encode_to_vec(),
        ("v1", "Status") | ("meta.k8s.io/v1", "Status") | ("", "Status") => status_pb(obj).encode_to_vec(),
        ("v1", "SecretList") => core::SecretList {
            metadata: Some(list_meta_pb(obj.get("metadata"))),
            items: items(obj, secret_pb)?,
        }
        .encode_to_vec(),
        ("v1", "ConfigMapList") => core::ConfigMapList {
            metadata: Some(list_meta_pb(obj.get("metadata"))),
            items: items(obj, config_map_pb)?,
        }
        .encode_to_vec(),
        ("v1", "NamespaceList") => core::NamespaceList {
            metadata: Some(list_meta_pb(obj.get("metadata"))),
            items: items(obj, |o| Some(namespace_pb(o)))?,
        }
        .encode_to_vec(),
        ("v1", "EventList") => core::EventList {
            metadata: Some(list_meta_pb(obj.get("metadata"))),
            items: items(obj, |o| Some(event_pb(o)))?,
        }
        .encode_to_vec(),
        ("coordination.k8s.io/v1", "LeaseList") => coordination::LeaseList {
            metadata: Some(list_meta_pb(obj.get("metadata"))),
            items: items(obj, |o| Some(lease_pb(o)))?,
        }
        .encode_to_vec(),
        _ => return None,
    };
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(envelope.encode_to_vec());
    Some(out)
}

// ---------------------------------------------------------------- JSON building helpers

/// Sets `apiVersion`/`kind` first, as the apiserver prints them.
fn typed(obj: Value, api_version: &str, kind: &str) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!(api_version));
    if let Value::Object(o) = obj {
        for (k, v) in o {
            if k != "kind" && k != "apiVersion" {
                m.insert(k, v);
            }
        }
    }
    Value::Object(m)
}

/// `omitempty` string: left out when unset or empty.
fn put_str(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(s) = v.as_ref().filter(|s| !s.is_empty()) {
        m.insert(k.into(), json!(s));
    }
}

/// Pointer field: kept whenever it is set, even to a zero value.
fn put_ptr<T: Into<Value> + Clone>(m: &mut Map<String, Value>, k: &str, v: &Option<T>) {
    if let Some(v) = v {
        m.insert(k.into(), v.clone().into());
    }
}

/// `omitempty` number: left out when unset or zero.
fn put_num<T: Into<Value> + Copy + Default + PartialEq>(m: &mut Map<String, Value>, k: &str, v: &Option<T>) {
    if let Some(v) = v.filter(|v| *v != T::default()) {
        m.insert(k.into(), v.into());
    }
}

fn put_map(m: &mut Map<String, Value>, k: &str, v: &BTreeMap<String, String>) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn put_list(m: &mut Map<String, Value>, k: &str, v: Vec<Value>) {
    if !v.is_empty() {
        m.insert(k.into(), Value::Array(v));
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn time_json(seconds: Option<i64>, nanos: Option<i32>, micro: bool) -> Option<Value> {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if s == 0 && n == 0 {
        return None;
    }
    let t = jiff::Timestamp::new(s, if micro { n - n % 1000 } else { 0 }).ok()?;
    Some(json!(if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }))
}

fn put_time(m: &mut Map<String, Value>, k: &str, t: &Option<meta::Time>) {
    if let Some(v) = t.as_ref().and_then(|t| time_json(t.seconds, t.nanos, false)) {
        m.insert(k.into(), v);
    }
}

fn put_micro(m: &mut Map<String, Value>, k: &str, t: &Option<meta::MicroTime>) {
    if let Some(v) = t.as_ref().and_then(|t| time_json(t.seconds, t.nanos, true)) {
        m.insert(k.into(), v);
    }
}

// ---------------------------------------------------------------- proto -> JSON

fn object_meta_json(m: &Option<meta::ObjectMeta>) -> Value {
    let Some(m) = m else { return json!({}) };
    let mut o = Map::new();
    put_str(&mut o, "name", &m.name);
    put_str(&mut o, "generateName", &m.generate_name);
    put_str(&mut o, "namespace", &m.namespace);
    put_str(&mut o, "selfLink", &m.self_link);
    put_str(&mut o, "uid", &m.uid);
    put_str(&mut o, "resourceVersion", &m.resource_version);
    put_num(&mut o, "generation", &m.generation);
    put_time(&mut o, "creationTimestamp", &m.creation_timestamp);
    put_time(&mut o, "deletionTimestamp", &m.deletion_timestamp);
    put_ptr(&mut o, "deletionGracePeriodSeconds", &m.deletion_grace_period_seconds);
    put_map(&mut o, "labels", &m.labels);
    put_map(&mut o, "annotations", &m.annotations);
    let owners = m
        .owner_references
        .iter()
        .map(|r| {
            let mut x = Map::new();
            x.insert("apiVersion".into(), json!(r.api_version.clone().unwrap_or_default()));
            x.insert("kind".into(), json!(r.kind.clone().unwrap_or_default()));
            x.insert("name".into(), json!(r.name.clone().unwrap_or_default()));
            x.insert("uid".into(), json!(r.uid.clone().unwrap_or_default()));
            put_ptr(&mut x, "controller", &r.controller);
            put_ptr(&mut x, "blockOwnerDeletion", &r.block_owner_deletion);
            Value::Object(x)
        })
        .collect();
    put_list(&mut o, "ownerReferences", owners);
    put_list(&mut o, "finalizers", m.finalizers.iter().map(|f| json!(f)).collect());
    let managed = m
        .managed_fields
        .iter()
        .map(|e| {
            let mut x = Map::new();
            put_str(&mut x, "manager", &e.manager);
            put_str(&mut x, "operation", &e.operation);
            put_str(&mut x, "apiVersion", &e.api_version);
            put_time(&mut x, "time", &e.time);
            put_str(&mut x, "fieldsType", &e.fields_type);
            if let Some(raw) = e.fields_v1.as_ref().and_then(|f| f.raw.as_ref()) {
                x.insert(
                    "fieldsV1".into(),
                    serde_json::from_slice(raw).unwrap_or_else(|_| json!({})),
                );
            }
            put_str(&mut x, "subresource", &e.subresource);
            Value::Object(x)
        })
        .collect();
    put_list(&mut o, "managedFields", managed);
    Value::Object(o)
}

fn list_json(m: &Option<meta::ListMeta>, items: impl Iterator<Item = Value>) -> Value {
    let mut lm = Map::new();
    if let Some(m) = m {
        put_str(&mut lm, "selfLink", &m.self_link);
        put_str(&mut lm, "resourceVersion", &m.resource_version);
        put_str(&mut lm, "continue", &m.r#continue);
        put_ptr(&mut lm, "remainingItemCount", &m.remaining_item_count);
    }
    json!({"metadata": lm, "items": items.collect::<Vec<_>>()})
}

fn secret_json(s: &core::Secret) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&s.metadata));
    put_ptr(&mut o, "immutable", &s.immutable);
    if !s.data.is_empty() {
        o.insert(
            "data".into(),
            s.data
                .iter()
                .map(|(k, v)| (k.clone(), json!(b64(v))))
                .collect::<Map<_, _>>()
                .into(),
        );
    }
    put_map(&mut o, "stringData", &s.string_data);
    put_str(&mut o, "type", &s.r#type);
    Value::Object(o)
}

fn config_map_json(c: &core::ConfigMap) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&c.metadata));
    put_ptr(&mut o, "immutable", &c.immutable);
    put_map(&mut o, "data", &c.data);
    if !c.binary_data.is_empty() {
        o.insert(
            "binaryData".into(),
            c.binary_data
                .iter()
                .map(|(k, v)| (k.clone(), json!(b64(v))))
                .collect::<Map<_, _>>()
                .into(),
        );
    }
    Value::Object(o)
}

fn namespace_json(n: &core::Namespace) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&n.metadata));
    let mut spec = Map::new();
    if let Some(s) = &n.spec {
        put_list(&mut spec, "finalizers", s.finalizers.iter().map(|f| json!(f)).collect());
    }
    o.insert("spec".into(), Value::Object(spec));
    let mut status = Map::new();
    if let Some(s) = &n.status {
        put_str(&mut status, "phase", &s.phase);
        let conds = s
            .conditions
            .iter()
            .map(|c| {
                let mut x = Map::new();
                put_str(&mut x, "type", &c.r#type);
                put_str(&mut x, "status", &c.status);
                put_time(&mut x, "lastTransitionTime", &c.last_transition_time);
                put_str(&mut x, "reason", &c.reason);
                put_str(&mut x, "message", &c.message);
                Value::Object(x)
            })
            .collect();
        put_list(&mut status, "conditions", conds);
    }
    o.insert("status".into(), Value::Object(status));
    Value::Object(o)
}

fn object_reference_json(r: &core::ObjectReference) -> Map<String, Value> {
    let mut x = Map::new();
    put_str(&mut x, "kind", &r.kind);
    put_str(&mut x, "namespace", &r.namespace);
    put_str(&mut x, "name", &r.name);
    put_str(&mut x, "uid", &r.uid);
    put_str(&mut x, "apiVersion", &r.api_version);
    put_str(&mut x, "resourceVersion", &r.resource_version);
    put_str(&mut x, "fieldPath", &r.field_path);
    x
}

fn event_json(e: &core::Event) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&e.metadata));
    o.insert(
        "involvedObject".into(),
        Value::Object(
            e.involved_object
                .as_ref()
                .map(object_reference_json)
                .unwrap_or_default(),
        ),
    );
    put_str(&mut o, "reason", &e.reason);
    put_str(&mut o, "message", &e.message);
    let mut source = Map::new();
    if let Some(s) = &e.source {
        put_str(&mut source, "component", &s.component);
        put_str(&mut source, "host", &s.host);
    }
    o.insert("source".into(), Value::Object(source));
    // Go marshals zero metav1.Time as null for these two non-pointer fields.
    o.insert(
        "firstTimestamp".into(),
        e.first_timestamp
            .as_ref()
            .and_then(|t| time_json(t.seconds, t.nanos, false))
            .unwrap_or(Value::Null),
    );
    o.insert(
        "lastTimestamp".into(),
        e.last_timestamp
            .as_ref()
            .and_then(|t| time_json(t.seconds, t.nanos, false))
            .unwrap_or(Value::Null),
    );
    put_num(&mut o, "count", &e.count);
    put_str(&mut o, "type", &e.r#type);
    o.insert(
        "eventTime".into(),
        e.event_time
            .as_ref()
            .and_then(|t| time_json(t.seconds, t.nanos, true))
            .unwrap_or(Value::Null),
    );
    if let Some(s) = &e.series {
        let mut x = Map::new();
        put_num(&mut x, "count", &s.count);
        put_micro(&mut x, "lastObservedTime", &s.last_observed_time);
        o.insert("series".into(), Value::Object(x));
    }
    put_str(&mut o, "action", &e.action);
    if let Some(r) = &e.related {
        o.insert("related".into(), Value::Object(object_reference_json(r)));
    }
    put_str(&mut o, "reportingComponent", &e.reporting_component);
    put_str(&mut o, "reportingInstance", &e.reporting_instance);
    Value::Object(o)
}

fn lease_json(l: &coordination::Lease) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&l.metadata));
    let mut spec = Map::new();
    if let Some(s) = &l.spec {
        put_ptr(&mut spec, "holderIdentity", &s.holder_identity);
        put_ptr(&mut spec, "leaseDurationSeconds", &s.lease_duration_seconds);
        put_micro(&mut spec, "acquireTime", &s.acquire_time);
        put_micro(&mut spec, "renewTime", &s.renew_time);
        put_ptr(&mut spec, "leaseTransitions", &s.lease_transitions);
        put_ptr(&mut spec, "strategy", &s.strategy);
        put_ptr(&mut spec, "preferredHolder", &s.preferred_holder);
    }
    o.insert("spec".into(), Value::Object(spec));
    Value::Object(o)
}

// ---------------------------------------------------------------- JSON -> proto

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(String::from)
}

fn i64_(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

fn i32_(v: &Value, k: &str) -> Option<i32> {
    i64_(v, k).and_then(|n| i32::try_from(n).ok())
}

fn b(v: &Value, k: &str) -> Option<bool> {
    v.get(k).and_then(Value::as_bool)
}

fn smap(v: &Value, k: &str) -> BTreeMap<String, String> {
    v.get(k)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A base64 map; `None` when a value is not valid base64 (the object cannot
/// be represented faithfully, so the caller answers in JSON instead).
fn bytes_map(v: &Value, k: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let Some(m) = v.get(k).and_then(Value::as_object) else {
        return Some(BTreeMap::new());
    };
    m.iter()
        .map(|(k, v)| {
            let decoded = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
            Some((k.clone(), decoded))
        })
        .collect()
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn parse_time(v: &Value, k: &str) -> Option<(i64, i32)> {
    let t: jiff::Timestamp = v.get(k)?.as_str()?.parse().ok()?;
    Some((t.as_second(), t.subsec_nanosecond()))
}

fn time_pb(v: &Value, k: &str) -> Option<meta::Time> {
    parse_time(v, k).map(|(s, _)| meta::Time {
        seconds: Some(s),
        nanos: Some(0),
    })
}

fn micro_pb(v: &Value, k: &str) -> Option<meta::MicroTime> {
    parse_time(v, k).map(|(s, n)| meta::MicroTime {
        seconds: Some(s),
        nanos: Some(n - n % 1000),
    })
}

fn object_meta_pb(v: Option<&Value>) -> meta::ObjectMeta {
    let null = Value::Null;
    let v = v.unwrap_or(&null);
    let owner_references = v
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|r| meta::OwnerReference {
                    api_version: s(r, "apiVersion"),
                    kind: s(r, "kind"),
                    name: s(r, "name"),
                    uid: s(r, "uid"),
                    controller: b(r, "controller"),
                    block_owner_deletion: b(r, "blockOwnerDeletion"),
                })
                .collect()
        })
        .unwrap_or_default();
    let managed_fields = v
        .get("managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| meta::ManagedFieldsEntry {
                    manager: s(e, "manager"),
                    operation: s(e, "operation"),
                    api_version: s(e, "apiVersion"),
                    time: time_pb(e, "time"),
                    fields_type: s(e, "fieldsType"),
                    fields_v1: e.get("fieldsV1").map(|f| meta::FieldsV1 {
                        raw: Some(f.to_string().into_bytes()),
                    }),
                    subresource: s(e, "subresource"),
                })
                .collect()
        })
        .unwrap_or_default();
    meta::ObjectMeta {
        name: s(v, "name"),
        generate_name: s(v, "generateName"),
        namespace: s(v, "namespace"),
        self_link: s(v, "selfLink"),
        uid: s(v, "uid"),
        resource_version: s(v, "resourceVersion"),
        generation: i64_(v, "generation"),
        creation_timestamp: time_pb(v, "creationTimestamp"),
        deletion_timestamp: time_pb(v, "deletionTimestamp"),
        deletion_grace_period_seconds: i64_(v, "deletionGracePeriodSeconds"),
        labels: smap(v, "labels"),
        annotations: smap(v, "annotations"),
        owner_references,
        finalizers: strings(v, "finalizers"),
        managed_fields,
    }
}

fn list_meta_pb(v: Option<&Value>) -> meta::ListMeta {
    let null = Value::Null;
    let v = v.unwrap_or(&null);
    meta::ListMeta {
        self_link: s(v, "selfLink"),
        resource_version: s(v, "resourceVersion"),
        r#continue: s(v, "continue"),
        remaining_item_count: i64_(v, "remainingItemCount"),
    }
}

fn items<T>(list: &Value, f: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    list.get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(f).collect())
        .unwrap_or(Some(Vec::new()))
}

fn secret_pb(v: &Value) -> Option<core::Secret> {
    Some(core::Secret {
        metadata: Some(object_meta_pb(v.get("metadata"))),
        immutable: b(v, "immutable"),
        data: bytes_map(v, "data")?,
        string_data: smap(v, "stringData"),
        r#type: s(v, "type"),
    })
}

fn config_map_pb(v: &Value) -> Option<core::ConfigMap> {
    Some(core::ConfigMap {
        metadata: Some(object_meta_pb(v.get("metadata"))),
        immutable: b(v, "immutable"),
        data: smap(v, "data"),
        binary_data: bytes_map(v, "binaryData")?,
    })
}

fn namespace_pb(v: &Value) -> core::Namespace {
    let null = Value::Null;
    let status = v.get("status").unwrap_or(&null);
    core::Namespace {
        metadata: Some(object_meta_pb(v.get("metadata"))),
        spec: Some(core::NamespaceSpec {
            finalizers: strings(v.get("spec").unwrap_or(&null), "finalizers"),
        }),
        status: Some(core::NamespaceStatus {
            phase: s(status, "phase"),
            conditions: status
                .get("conditions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|c| core::NamespaceCondition {
                            r#type: s(c, "type"),
                            status: s(c, "status"),
                            last_transition_time: time_pb(c, "lastTransitionTime"),
                            reason: s(c, "reason"),
                            message: s(c, "message"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
    }
}

fn object_reference_pb(r: &Value) -> core::ObjectReference {
    core::ObjectReference {
        kind: s(r, "kind"),
        namespace: s(r, "namespace"),
        name: s(r, "name"),
        uid: s(r, "uid"),
        api_version: s(r, "apiVersion"),
        resource_version: s(r, "resourceVersion"),
        field_path: s(r, "fieldPath"),
    }
}

fn event_pb(v: &Value) -> core::Event {
    core::Event {
        metadata: Some(object_meta_pb(v.get("metadata"))),
        involved_object: v.get("involvedObject").map(object_reference_pb),
        reason: s(v, "reason"),
        message: s(v, "message"),
        source: v.get("source").map(|src| core::EventSource {
            component: s(src, "component"),
            host: s(src, "host"),
        }),
        first_timestamp: time_pb(v, "firstTimestamp"),
        last_timestamp: time_pb(v, "lastTimestamp"),
        count: i32_(v, "count"),
        r#type: s(v, "type"),
        event_time: micro_pb(v, "eventTime"),
        series: v.get("series").filter(|x| x.is_object()).map(|x| core::EventSeries {
            count: i32_(x, "count"),
            last_observed_time: micro_pb(x, "lastObservedTime"),
        }),
        action: s(v, "action"),
        related: v.get("related").filter(|x| x.is_object()).map(object_reference_pb),
        reporting_component: s(v, "reportingComponent"),
        reporting_instance: s(v, "reportingInstance"),
    }
}

fn lease_pb(v: &Value) -> coordination::Lease {
    let null = Value::Null;
    let spec = v.get("spec").unwrap_or(&null);
    coordination::Lease {
        metadata: Some(object_meta_pb(v.get("metadata"))),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s(spec, "holderIdentity"),
            lease_duration_seconds: i32_(spec, "leaseDurationSeconds"),
            acquire_time: micro_pb(spec, "acquireTime"),
            renew_time: micro_pb(spec, "renewTime"),
            lease_transitions: i32_(spec, "leaseTransitions"),
            strategy: s(spec, "strategy"),
            preferred_holder: s(spec, "preferredHolder"),
        }),
    }
}

fn status_pb(v: &Value) -> meta::Status {
    meta::Status {
        metadata: Some(list_meta_pb(v.get("metadata"))),
        status: s(v, "status"),
        message: s(v, "message"),
        reason: s(v, "reason"),
        details: v.get("details").filter(|d| d.is_object()).map(|d| meta::StatusDetails {
            name: s(d, "name"),
            group: s(d, "group"),
            kind: s(d, "kind"),
            uid: s(d, "uid"),
            causes: d
                .get("causes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|c| meta::StatusCause {
                            reason: s(c, "reason"),
                            message: s(c, "message"),
                            field: s(c, "field"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            retry_after_seconds: i32_(d, "retryAfterSeconds"),
        }),
        code: i32_(v, "code"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(obj: &Value) -> Value {
        let bytes = encode(obj).unwrap_or_else(|| panic!("encode {}", obj["kind"]));
        assert!(bytes.starts_with(MAGIC));
        let api_version = obj["apiVersion"].as_str().unwrap_or("");
        let kind = obj["kind"].as_str().unwrap_or("");
        decode(api_version, kind, &bytes).unwrap_or_else(|e| panic!("decode {kind}: {e}"))
    }

    fn meta() -> Value {
        json!({"name": "x", "namespace": "ns", "uid": "u-1", "resourceVersion": "42", "generation": 3,
               "creationTimestamp": "2025-01-02T03:04:05Z", "labels": {"a": "b"}, "annotations": {"c": "d"},
               "finalizers": ["f"], "ownerReferences": [{"apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
               "name": "i", "uid": "u-0", "controller": true, "blockOwnerDeletion": true}],
               "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                                  "time": "2025-01-02T03:04:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]})
    }

    #[test]
    fn secret_roundtrips() {
        let s = json!({"kind": "Secret", "apiVersion": "v1", "metadata": meta(), "type": "Opaque",
                       "data": {"a": "Yg==", "empty": ""}, "immutable": false});
        assert_eq!(roundtrip(&s), s);
    }

    #[test]
    fn config_map_namespace_lease_event_roundtrip() {
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta(), "data": {"k": "v"}, "binaryData": {"b": "AAE="}});
        assert_eq!(roundtrip(&cm), cm);
        let ns = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "demo"}, "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Active"}});
        assert_eq!(roundtrip(&ns), ns);
        let lease = json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"name": "l", "namespace": "ns"},
                           "spec": {"holderIdentity": "op-1", "leaseDurationSeconds": 15, "acquireTime": "2025-01-02T03:04:05.123456Z",
                                    "renewTime": "2025-01-02T03:04:06.000000Z", "leaseTransitions": 0}});
        assert_eq!(roundtrip(&lease), lease);
        let ev = json!({"kind": "Event", "apiVersion": "v1", "metadata": {"name": "e", "namespace": "ns"},
                        "involvedObject": {"kind": "Integration", "namespace": "ns", "name": "i", "apiVersion": "integration-operator.io/v1alpha1"},
                        "reason": "Issued", "message": "token issued", "source": {"component": "integration-operator"},
                        "firstTimestamp": "2025-01-02T03:04:05Z", "lastTimestamp": "2025-01-02T03:04:05Z", "count": 2,
                        "type": "Normal", "eventTime": null, "reportingComponent": "integration-operator"});
        assert_eq!(roundtrip(&ev), ev);
    }

    #[test]
    fn lists_roundtrip() {
        let l = json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
                       "items": [{"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "a"}, "data": {"k": "dg=="}}]});
        assert_eq!(roundtrip(&l), l);
        for kind in ["ConfigMapList", "NamespaceList", "EventList"] {
            let l = json!({"kind": kind, "apiVersion": "v1", "metadata": {}, "items": []});
            assert_eq!(roundtrip(&l), l);
        }
        let l = json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1", "metadata": {}, "items": []});
        assert_eq!(roundtrip(&l), l);
    }

    #[test]
    fn status_encodes_as_meta_v1_status() {
        let st = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "secrets \"x\" not found",
                        "reason": "NotFound", "details": {"name": "x", "kind": "secrets", "causes": [{"reason": "FieldValueRequired", "field": "data"}]},
                        "code": 404});
        let bytes = encode(&st).unwrap_or_default();
        let env = Unknown::decode(&bytes[MAGIC.len()..]).unwrap_or_default();
        assert_eq!(env.type_meta.and_then(|t| t.kind).as_deref(), Some("Status"));
        let status = meta::Status::decode(env.raw.unwrap_or_default().as_slice()).unwrap_or_default();
        assert_eq!(status.code, Some(404));
        assert_eq!(status.reason.as_deref(), Some("NotFound"));
        assert_eq!(status.details.map(|d| d.causes.len()), Some(1));
    }

    #[test]
    fn unsupported_and_garbage_are_errors_not_panics() {
        assert!(encode(&json!({"kind": "Pod", "apiVersion": "v1"})).is_none());
        assert!(
            encode(&json!({"kind": "Secret", "apiVersion": "v1", "data": {"a": "not base64!"}})).is_none(),
            "bad base64 falls back to JSON"
        );
        assert!(encode(&json!("nope")).is_none());
        assert!(
            decode("v1", "Secret", b"{\"kind\":\"Secret\"}")
                .unwrap_err()
                .contains("magic")
        );
        assert!(decode("v1", "Secret", b"k8s\0\xff\xff\xff").is_err());
        let pod = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
            }),
            raw: Some(vec![]),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(pod.encode_to_vec());
        assert!(decode("v1", "Pod", &body).unwrap_err().contains("not supported"));
        let mut body = MAGIC.to_vec();
        body.extend(
            Unknown {
                raw: Some(vec![0x0a, 0xff]),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert!(decode("v1", "Secret", &body).is_err());
    }

    #[test]
    fn go_style_empty_fields_are_omitted_on_decode() {
        // What gogo-protobuf writes for a fresh Secret: empty strings and a zero Time.
        let s = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("x".into()),
                generate_name: Some(String::new()),
                namespace: Some(String::new()),
                creation_timestamp: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                generation: Some(0),
                ..Default::default()
            }),
            r#type: Some(String::new()),
            ..Default::default()
        };
        let env = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
            }),
            raw: Some(s.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(env.encode_to_vec());
        assert_eq!(
            decode("", "", &body).ok(),
            Some(json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}}))
        );
    }

    /// Real `kubectl create secret generic` sends protobuf; the decoded body
    /// must be the Secret the user asked for, and kubectl must accept the
    /// protobuf answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_create_secret_sends_protobuf_we_decode() {
        use crate::emulator::openapi::{
            self,
            tests::{kubectl, secret_resource},
        };
        use axum::{
            Json, Router,
            body::Bytes,
            extract::State,
            http::{HeaderMap, StatusCode, header},
            response::IntoResponse,
            routing::{get, post},
        };
        use std::sync::{Arc, Mutex};
        type Seen = Arc<Mutex<Vec<(String, Value)>>>;
        let seen: Seen = Arc::default();
        let doc = openapi::group_version_document(&[secret_resource()]);
        let idx = openapi::index_with_documents(&[("api/v1".into(), doc.clone())]);
        async fn create(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let obj = if ct.starts_with(CONTENT_TYPE) {
                match decode("v1", "Secret", &body) {
                    Ok(o) => o,
                    Err(e) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, e).into_response(),
                }
            } else {
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            };
            let mut stored = obj.clone();
            stored["metadata"]["uid"] = json!("u-1");
            stored["metadata"]["resourceVersion"] = json!("1");
            stored["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
            if let Ok(mut s) = seen.lock() {
                s.push((ct, obj));
            }
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            match encode(&stored).filter(|_| accept.contains(CONTENT_TYPE)) {
                Some(bytes) => (StatusCode::CREATED, [(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response(),
                None => (StatusCode::CREATED, Json(stored)).into_response(),
            }
        }
        let app = Router::new()
            .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
            .route("/apis", get(|| async { Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }))
            .route("/api/v1", get(|| async { Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["create", "get", "list", "patch"]}]})) }))
            .route("/openapi/v3", get(move || { let idx = idx.clone(); async move { Json(idx) } }))
            .route("/openapi/v3/api/v1", get(move || { let doc = doc.clone(); async move { Json(doc) } }))
            .route("/api/v1/namespaces/{ns}/secrets", post(create))
            .with_state(seen.clone());
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(addr) = listener.local_addr() else { return };
        tokio::spawn(async move { axum::serve(crate::nodelay(listener), app).await });
        let server = format!("http://{addr}");
        let Some((ok, out, err)) = kubectl(
            &server,
            &["create", "secret", "generic", "x", "-n", "ns", "--from-literal=a=b"],
        )
        .await
        else {
            return;
        };
        assert!(ok, "stdout: {out}\nstderr: {err}");
        assert_eq!(out.trim(), "secret/x created");
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let (ct, obj) = seen.first().cloned().unwrap_or_default();
        assert!(ct.starts_with(CONTENT_TYPE), "kubectl sent {ct}");
        assert_eq!(obj["kind"], "Secret");
        assert_eq!(obj["metadata"]["name"], "x");
        assert_eq!(obj["metadata"]["namespace"], "ns");
        assert_eq!(obj["data"]["a"], b64(b"b"));
        assert!(
            obj["metadata"].get("creationTimestamp").is_none(),
            "zero time omitted: {obj}"
        );
    }
}
