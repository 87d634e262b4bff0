//! The object store and the semantics of writes: resourceVersion (one global
//! counter, as etcd's), generation, the status subresource split, validation
//! of custom resources, finalizers and `deletionTimestamp`, garbage
//! collection through owner references, CRD registration, and the bounded
//! event history that watches resume from.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::{
    registry::{Registry, ResourceType},
    ssa,
};
use crate::emulator::schema;

/// A change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub storage_key: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

/// An API error, rendered as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        );
        e.details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        );
        e.details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        e
    }

    pub fn invalid(rt: &ResourceType, name: &str, errors: &[schema::FieldError]) -> Self {
        let joined = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let message = if joined.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", rt.qualified_kind(), joined[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", rt.qualified_kind(), joined.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        let mut e = Self::new(422, "Invalid", message);
        e.details = json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes});
        e
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldValidation=Strict`: unknown fields are errors rather than pruned.
    pub strict: bool,
    pub field_manager: Option<String>,
    /// `/status` (or another subresource) rather than the main resource.
    pub subresource: String,
    /// Ownership already computed by server-side apply (replaces the
    /// Update-operation bookkeeping).
    pub managed_fields: Option<Value>,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or(jiff::Timestamp::now())
        .to_string()
}

type Objects = BTreeMap<(String, String), Value>;

/// Changes to replay, then the live feed.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// The emulator's whole state, behind one lock.
pub struct State {
    pub registry: Registry,
    rv: u64,
    objects: HashMap<String, Objects>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    tx: broadcast::Sender<Arc<Change>>,
    uid_counter: u64,
}

impl State {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        let mut state = State {
            registry: Registry::default(),
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            tx,
            uid_counter: 0,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let rt = state.registry.find("", "v1", "namespaces").cloned();
            if let Some(rt) = rt {
                let _ = state.create(&rt, "", json!({"metadata": {"name": ns}}), &WriteOptions::default());
            }
        }
        state
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Subscribes to changes after `from` (exclusive), replaying history.
    /// `None` when the history no longer reaches back that far (410 Gone).
    pub fn subscribe(&self, from: u64) -> Option<Subscription> {
        let oldest = self.history.front().map(|c| c.rv).unwrap_or(self.rv + 1);
        if from + 1 < oldest && from < self.rv {
            return None;
        }
        let replay = self.history.iter().filter(|c| c.rv > from).cloned().collect();
        Some((replay, self.tx.subscribe()))
    }

    fn objects(&self, rt: &ResourceType) -> Option<&Objects> {
        self.objects.get(&rt.storage_key())
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects(rt)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .map(|o| present(o, rt))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// All objects of a type in a namespace ("" = all namespaces), sorted.
    pub fn list(&self, rt: &ResourceType, ns: &str) -> Vec<Value> {
        self.objects(rt)
            .map(|m| {
                m.iter()
                    .filter(|((o_ns, _), _)| ns.is_empty() || o_ns == ns)
                    .map(|(_, o)| present(o, rt))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One page of a list: objects of a type in a namespace ("" = all) that
    /// `keep` accepts and whose `ns/name` key sorts after `after`, at most
    /// `limit` of them, and how many more there are. Only the page is copied:
    /// paging through 10,000 objects must not copy all of them per page.
    pub fn list_page(
        &self,
        rt: &ResourceType,
        ns: &str,
        keep: impl Fn(&Value) -> bool,
        after: &str,
        limit: Option<usize>,
    ) -> (Vec<Value>, usize) {
        let Some(objects) = self.objects(rt) else {
            return (Vec::new(), 0);
        };
        // Events are stored in one shape and served in two: select on the served one.
        let converts = rt.kind == "Event";
        let mut page = Vec::new();
        let mut remaining = 0;
        for ((o_ns, name), o) in objects {
            if !(ns.is_empty() || o_ns == ns) || (!after.is_empty() && format!("{o_ns}/{name}").as_str() <= after) {
                continue;
            }
            let presented = converts.then(|| present(o, rt));
            if !keep(presented.as_ref().unwrap_or(o)) {
                continue;
            }
            if limit.is_some_and(|l| page.len() >= l) {
                remaining += 1;
            } else {
                page.push(presented.unwrap_or_else(|| present(o, rt)));
            }
        }
        (page, remaining)
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get("/namespaces")
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the request body is not an object"));
        }
        let ns = if rt.namespaced { ns.to_string() } else { String::new() };
        if rt.namespaced && !self.namespace_exists(&ns) {
            let mut e = ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
            e.details = json!({"name": ns, "kind": "namespaces"});
            return Err(e);
        }
        let meta = obj["metadata"].as_object().cloned().unwrap_or_default();
        let name = match (
            meta.get("name").and_then(|n| n.as_str()),
            meta.get("generateName").and_then(|n| n.as_str()),
        ) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) => {
                self.uid_counter += 1;
                format!("{prefix}{:05x}", self.uid_counter.wrapping_mul(2_654_435_761) % 0xfffff)
            }
            _ => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    &[schema::FieldError {
                        reason: "FieldValueRequired".into(),
                        field: "metadata.name".into(),
                        message: "name or generateName is required".into(),
                    }],
                ));
            }
        };
        if let Some(body_ns) = meta.get("namespace").and_then(|n| n.as_str())
            && rt.namespaced
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
            )));
        }
        if self
            .objects(rt)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
        {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified_plural()),
            );
            e.details = json!({"name": name, "group": rt.group, "kind": rt.plural});
            return Err(e);
        }
        self.uid_counter += 1;
        let uid = uuid_like(self.uid_counter);
        {
            let m = obj["metadata"].as_object_mut().map(std::mem::take).unwrap_or_default();
            let mut m: Map<String, Value> = m;
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(now()));
            m.insert("generation".into(), json!(1));
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
            m.remove("generateName");
            obj["metadata"] = Value::Object(m);
        }
        if rt.status_subresource && rt.custom {
            // The status stanza is ignored on create when /status is served.
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        self.normalise(rt, &mut obj, None)?;
        self.validate(rt, &name, &mut obj, None, opts.strict)?;
        if let Some(managed) = &opts.managed_fields {
            obj["metadata"]["managedFields"] = managed.clone();
        } else if let Some(manager) = &opts.field_manager {
            ssa::record_update(
                &json!({}),
                &mut obj,
                manager,
                &opts.subresource,
                &rt.api_version(),
                &now(),
            );
        }
        let stored = self.commit(rt, &ns, &name, None, obj)?;
        Ok(present(&stored, rt))
    }

    /// Replaces an object (PUT), honouring the resourceVersion precondition.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns.to_string() } else { String::new() };
        let current = self
            .objects(rt)
            .and_then(|m| m.get(&(ns.clone(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        // Server-owned metadata stays as stored.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match current["metadata"].get(field) {
                Some(v) => obj["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if rt.status_subresource {
            let status = current.get("status").cloned();
            if opts.subresource == "status" {
                // Only status changes through /status.
                let new_status = obj.get("status").cloned();
                obj = current.clone();
                set_or_remove(&mut obj, "status", new_status);
            } else {
                set_or_remove(&mut obj, "status", status);
            }
        }
        // Adding a finalizer to an object being deleted is refused, as by the API server.
        if current["metadata"]["deletionTimestamp"].is_string() {
            let before: Vec<&Value> = current["metadata"]["finalizers"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let added = obj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| !before.contains(&f)));
            if added {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                        rt.qualified_kind()
                    ),
                ));
            }
        }
        self.normalise(rt, &mut obj, Some(&current))?;
        self.validate(rt, name, &mut obj, Some(&current), opts.strict)?;
        if let Some(managed) = &opts.managed_fields {
            obj["metadata"]["managedFields"] = managed.clone();
        } else {
            let manager = opts.field_manager.clone().unwrap_or_else(|| "unknown".into());
            // As the API server's field manager: managedFields written through
            // the main resource (non-empty) replace the stored ones before this
            // write's own changes are attributed. kubectl relies on it to move
            // ownership from client-side to server-side apply (csaupgrade);
            // clients that send nothing, or write a subresource, keep the stored ones.
            let mut base = current.clone();
            if opts.subresource.is_empty()
                && let Some(sent) = obj["metadata"]["managedFields"].as_array()
                && !sent.is_empty()
                && obj["metadata"]["managedFields"] != current["metadata"]["managedFields"]
            {
                base["metadata"]["managedFields"] = obj["metadata"]["managedFields"].clone();
            }
            ssa::record_update(&base, &mut obj, &manager, &opts.subresource, &rt.api_version(), &now());
        }
        let stored = self.commit(rt, &ns, name, Some(current), obj)?;
        Ok(present(&stored, rt))
    }

    /// Server-side apply (creates the object when missing).
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        config: Value,
        force: bool,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let manager = opts.field_manager.clone().ok_or_else(|| {
            ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
        })?;
        let ns_key = if rt.namespaced { ns.to_string() } else { String::new() };
        let current = self
            .objects(rt)
            .and_then(|m| m.get(&(ns_key, name.to_string())))
            .cloned();
        // A resourceVersion in the applied configuration is a precondition,
        // as on a real API server: it must match the stored object's.
        if let Some(rv) = config["metadata"]["resourceVersion"].as_str() {
            let stored = current.as_ref().and_then(|c| c["metadata"]["resourceVersion"].as_str());
            if stored != Some(rv) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        rt.plural
                    ),
                ));
            }
        }
        let base = current.clone().unwrap_or_else(|| json!({}));
        let mut config = config;
        if opts.subresource != "status"
            && rt.status_subresource
            && current.is_some()
            && let Some(o) = config.as_object_mut()
        {
            o.remove("status");
        }
        let merged = ssa::apply(&base, &config, &manager, force, &opts.subresource, &rt.api_version(), &now()).map_err(|conflicts| {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field}))
                .collect();
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.iter().map(|c| format!("conflict with \"{}\": {}", c.manager, c.field)).collect::<Vec<_>>().join(", ")
                ),
            );
            e.details = json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes});
            e
        })?;
        let managed = merged["metadata"]["managedFields"].clone();
        let opts = WriteOptions {
            managed_fields: Some(managed),
            ..opts.clone()
        };
        match current {
            None => {
                let mut obj = merged;
                obj["metadata"]["name"] = json!(name);
                self.create(rt, ns, obj, &opts)
            }
            Some(current) => {
                let mut obj = merged;
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                self.update(rt, ns, name, obj, &opts)
            }
        }
    }

    /// Deletes an object: marks it when finalizers remain, removes it and
    /// collects its dependents otherwise.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str, orphan: bool) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns.to_string() } else { String::new() };
        let current = self
            .objects(rt)
            .and_then(|m| m.get(&(ns.clone(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if has_finalizers {
            if current["metadata"]["deletionTimestamp"].is_string() {
                return Ok(present(&current, rt));
            }
            let mut marked = current.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let stored = self.commit(rt, &ns, name, Some(current), marked)?;
            return Ok(present(&stored, rt));
        }
        self.remove(rt, &ns, name, orphan);
        Ok(present(&current, rt))
    }

    /// Removes an object for good, emits DELETED and garbage-collects.
    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str, orphan: bool) {
        let Some(obj) = self
            .objects
            .get_mut(&rt.storage_key())
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())))
        else {
            return;
        };
        self.rv += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(rt, ns, "DELETED", gone);
        if rt.kind == "CustomResourceDefinition" {
            self.registry.unregister_crd(&obj);
            let key = format!(
                "{}/{}",
                obj["spec"]["group"].as_str().unwrap_or_default(),
                obj["spec"]["names"]["plural"].as_str().unwrap_or_default()
            );
            self.objects.remove(&key);
        }
        if rt.kind == "Namespace" && rt.group.is_empty() {
            let keys: Vec<String> = self.objects.keys().cloned().collect();
            for key in keys {
                let Some(dep_rt) = self.registry.by_storage_key(&key).cloned() else {
                    continue;
                };
                let names: Vec<String> = self.objects[&key]
                    .keys()
                    .filter(|(o_ns, _)| o_ns == name)
                    .map(|(_, n)| n.clone())
                    .collect();
                for n in names {
                    self.force_remove(&dep_rt, name, &n);
                }
            }
        }
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        self.collect_dependents(&uid, orphan);
    }

    fn force_remove(&mut self, rt: &ResourceType, ns: &str, name: &str) {
        if let Some(m) = self.objects.get_mut(&rt.storage_key())
            && let Some(mut o) = m.get(&(ns.to_string(), name.to_string())).cloned()
        {
            if let Some(meta) = o["metadata"].as_object_mut() {
                meta.remove("finalizers");
            }
            m.insert((ns.to_string(), name.to_string()), o);
        }
        self.remove(rt, ns, name, false);
    }

    /// Deletes (or, for orphan propagation, releases) the dependents of `uid`.
    fn collect_dependents(&mut self, uid: &str, orphan: bool) {
        if uid.is_empty() {
            return;
        }
        let mut dependents = Vec::new();
        for (key, objects) in &self.objects {
            for ((ns, name), o) in objects {
                let owned = o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
                if owned {
                    dependents.push((key.clone(), ns.clone(), name.clone()));
                }
            }
        }
        for (key, ns, name) in dependents {
            let Some(rt) = self.registry.by_storage_key(&key).cloned() else {
                continue;
            };
            if orphan {
                if let Some(current) = self
                    .objects
                    .get(&key)
                    .and_then(|m| m.get(&(ns.clone(), name.clone())))
                    .cloned()
                {
                    let mut released = current.clone();
                    if let Some(refs) = released["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                    let _ = self.commit(&rt, &ns, &name, Some(current), released);
                }
            } else {
                let _ = self.delete(&rt, &ns, &name, false);
            }
        }
    }

    /// Server-side defaults and conversions of built-in kinds.
    fn normalise(&self, rt: &ResourceType, obj: &mut Value, current: Option<&Value>) -> Result<(), ApiError> {
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if rt.group.is_empty() && rt.kind == "Secret" {
            if let Some(string_data) = obj.get("stringData").cloned().and_then(|v| v.as_object().cloned()) {
                let data = obj["data"].as_object().cloned().unwrap_or_default();
                let mut data = data;
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default().to_string();
                    data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
                }
                obj["data"] = Value::Object(data);
                if let Some(o) = obj.as_object_mut() {
                    o.remove("stringData");
                }
            }
            if obj["data"].is_object() {
                for (k, v) in obj["data"].as_object().into_iter().flatten() {
                    let valid = v
                        .as_str()
                        .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                    if !valid {
                        return Err(ApiError::bad_request(format!("illegal base64 data at key {k:?}")));
                    }
                }
            }
            if obj["type"].as_str().is_none_or(str::is_empty) {
                obj["type"] = json!("Opaque");
            }
            if let Some(old) = current
                && old["type"] != obj["type"]
            {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
                return Err(ApiError::invalid(
                    rt,
                    &name,
                    &[schema::FieldError {
                        reason: "FieldValueInvalid".into(),
                        field: "type".into(),
                        message: format!("Invalid value: {}: field is immutable", obj["type"]),
                    }],
                ));
            }
        }
        if rt.group.is_empty() && rt.kind == "Namespace" && obj["status"]["phase"].is_null() {
            obj["status"] = json!({"phase": "Active"});
        }
        if rt.kind == "CustomResourceDefinition" {
            let names = obj["spec"]["names"].clone();
            let storage = obj["spec"]["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
                .and_then(|v| v["name"].as_str())
                .unwrap_or_default()
                .to_string();
            let t = now();
            obj["status"] = json!({
                "acceptedNames": names,
                "storedVersions": [storage],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
                ],
            });
        }
        Ok(())
    }

    fn validate(
        &self,
        rt: &ResourceType,
        name: &str,
        obj: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<(), ApiError> {
        let Some(schema_doc) = &rt.schema else { return Ok(()) };
        // metadata is the API server's, not the schema's.
        let metadata = obj.get("metadata").cloned();
        let result = schema::validate(schema_doc, obj, old, strict);
        set_or_remove(obj, "metadata", metadata);
        result.map_err(|errors| {
            let unknown: Vec<&schema::FieldError> =
                errors.iter().filter(|e| e.reason == schema::REASON_UNKNOWN).collect();
            if !unknown.is_empty() {
                let fields: Vec<String> = unknown
                    .iter()
                    .map(|e| format!("unknown field \"{}\"", e.field))
                    .collect();
                ApiError::bad_request(format!("strict decoding error: {}", fields.join(", ")))
            } else {
                ApiError::invalid(rt, name, &errors)
            }
        })
    }

    /// Stores a new version (or removes the object when its last finalizer
    /// went while it was being deleted), bumping generation on spec changes.
    fn commit(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        before: Option<Value>,
        mut after: Value,
    ) -> Result<Value, ApiError> {
        if let Some(before) = &before {
            let deleting = before["metadata"]["deletionTimestamp"].is_string();
            let finalizers_left = after["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            if deleting && !finalizers_left {
                if let Some(m) = self.objects.get_mut(&rt.storage_key()) {
                    m.insert((ns.to_string(), name.to_string()), after.clone());
                }
                self.remove(rt, ns, name, false);
                return Ok(after);
            }
            if without_times(before) == without_times(&after) {
                // A no-op write changes nothing, not even resourceVersion.
                return Ok(before.clone());
            }
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(1);
            let bump = spec_of(before, rt) != spec_of(&after, rt)
                || (after["metadata"]["deletionTimestamp"].is_string()
                    && !before["metadata"]["deletionTimestamp"].is_string());
            after["metadata"]["generation"] = json!(if bump { generation + 1 } else { generation });
        }
        self.rv += 1;
        after["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if rt.kind == "CustomResourceDefinition" {
            self.registry.register_crd(&after);
        }
        self.objects
            .entry(rt.storage_key())
            .or_default()
            .insert((ns.to_string(), name.to_string()), after.clone());
        self.emit(
            rt,
            ns,
            if before.is_some() { "MODIFIED" } else { "ADDED" },
            after.clone(),
        );
        Ok(after)
    }

    fn emit(&mut self, rt: &ResourceType, ns: &str, kind: &'static str, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            storage_key: rt.storage_key(),
            namespace: ns.to_string(),
            kind,
            object,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
        let _ = self.tx.send(change);
    }

    /// How many objects are stored, over all types.
    pub fn object_count(&self) -> usize {
        self.objects.values().map(|m| m.len()).sum()
    }
}

/// The object with managedFields timestamps blanked, for no-op detection.
fn without_times(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(entries) = o["metadata"]["managedFields"].as_array_mut() {
        for e in entries {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    o
}

fn set_or_remove(obj: &mut Value, key: &str, v: Option<Value>) {
    if let Some(o) = obj.as_object_mut() {
        match v {
            Some(v) => {
                o.insert(key.into(), v);
            }
            None => {
                o.remove(key);
            }
        }
    }
}

/// What counts as "spec" for generation: everything but metadata (and
/// status, where /status is served).
fn spec_of(obj: &Value, rt: &ResourceType) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        if rt.status_subresource {
            m.remove("status");
        }
    }
    o
}

/// The object as served in a given version.
pub fn present(obj: &Value, rt: &ResourceType) -> Value {
    let mut o = obj.clone();
    if rt.kind == "Event" && o["apiVersion"] != json!(rt.api_version()) {
        convert_event(&mut o, rt.group.is_empty());
    }
    o["apiVersion"] = json!(rt.api_version());
    o
}

/// Converts an Event between its core/v1 and events.k8s.io/v1 shapes.
fn convert_event(o: &mut Value, to_core: bool) {
    const PAIRS: &[(&str, &str)] = &[
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("count", "deprecatedCount"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("source", "deprecatedSource"),
        ("reportingComponent", "reportingController"),
        ("related", "related"),
    ];
    let Some(m) = o.as_object_mut() else { return };
    for (core, new) in PAIRS {
        let (from, to) = if to_core { (new, core) } else { (core, new) };
        if let Some(v) = m.remove(*from) {
            m.insert(to.to_string(), v);
        }
    }
    if to_core {
        if let Some(series) = m.get("series").cloned() {
            m.insert("count".into(), series["count"].clone());
            m.insert("lastTimestamp".into(), series["lastObservedTime"].clone());
        }
        if let Some(t) = m.get("eventTime").cloned()
            && !m.contains_key("firstTimestamp")
        {
            m.insert("firstTimestamp".into(), t.clone());
            m.entry("lastTimestamp").or_insert(t);
        }
    }
}

fn uuid_like(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (n & 0xfff) as u16,
        n
    )
}
