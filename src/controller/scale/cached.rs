//! The controller's Integration cache holds a compact form of each
//! Integration, not the typed object.
//!
//! A typed `Integration` costs about 1.9 KiB in the cache at rest: 816 bytes
//! inline (the metadata, spec and status structs, mostly empty `Option`s),
//! a conditions `Vec` that serde leaves with room for four, and about twenty
//! small strings. The heap profile at 10,000 Integrations put the
//! Integration store first, at 16.7 MiB (docs/benchmarks.md).
//!
//! [`CachedIntegration`] keeps:
//! - the metadata, as kube-runtime's store and every key need it (slimmed:
//!   no `managedFields`, no `kubectl` last-applied copy, no empty maps);
//! - the facts read for *every* Integration at once — by the watch mappers
//!   (provider, input Secret), the stall watchdog and the metrics scrape
//!   (Ready, `renewAt`, expiry, a recorded `RenewalOverdue`) — decoded once
//!   per watch event instead of at each scan;
//! - the spec and status as the compact JSON they arrived in, one
//!   allocation, decoded by [`CachedIntegration::expand`] only when that
//!   one Integration is reconciled (a few microseconds, beside the
//!   milliseconds of its API and provider calls).

use std::borrow::Cow;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Resource,
    runtime::{reflector::ObjectRef, watcher},
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    controller::{status, watchdog::RENEWAL_OVERDUE},
    crd::{Integration, IntegrationSpec, IntegrationStatus},
};

/// What the Ready condition says, as the scrape counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

/// An Integration as the controller's cache holds it (see the module docs).
#[derive(Clone, Debug)]
pub struct CachedIntegration {
    metadata: ObjectMeta,
    provider: Box<str>,
    input: Box<str>,
    readiness: Readiness,
    overdue_recorded: bool,
    renew_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    /// `{"spec":…,"status":…}`, as serde_json writes them.
    body: Box<str>,
}

/// The key of an Integration in the controller's cache, timetable and
/// failure counts.
pub type IntegrationKey = ObjectRef<CachedIntegration>;

/// The key of `integration` (name and namespace; what keys compare on).
pub fn key_of(integration: &Integration) -> IntegrationKey {
    let key = ObjectRef::new(integration.metadata.name.as_deref().unwrap_or_default());
    match integration.metadata.namespace.as_deref() {
        Some(ns) => key.within(ns),
        None => key,
    }
}

#[derive(Serialize)]
struct BodyRef<'a> {
    spec: &'a IntegrationSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<IntegrationStatus>,
}

#[derive(Deserialize)]
struct Body {
    spec: IntegrationSpec,
    #[serde(default)]
    status: Option<IntegrationStatus>,
}

impl CachedIntegration {
    /// The compact form of `integration`, with its metadata slimmed.
    pub fn new(integration: Integration) -> Self {
        let Integration {
            mut metadata,
            spec,
            status,
        } = integration;
        slim(&mut metadata);
        let recorded = status.as_ref();
        let readiness = match status::ready_condition(recorded).map(|c| c.status.as_str()) {
            Some("True") => Readiness::True,
            Some("False") => Readiness::False,
            _ => Readiness::Unknown,
        };
        let body = serde_json::to_string(&BodyRef {
            spec: &spec,
            status: &status,
        })
        // Serializing derived types into a String does not fail.
        .unwrap_or_default();
        Self {
            metadata,
            provider: spec.provider.as_str().into(),
            input: spec.secret_ref.name.as_str().into(),
            readiness,
            overdue_recorded: recorded.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == RENEWAL_OVERDUE)),
            renew_at: status::parse_time(recorded.and_then(|s| s.renew_at.as_ref())),
            expires_at: status::parse_time(recorded.and_then(|s| s.expires_at.as_ref())),
            body: body.into_boxed_str(),
        }
    }

    /// The whole Integration, as it was cached.
    pub fn expand(&self) -> Integration {
        // The body was written by `new` from the same types.
        let body: Body = serde_json::from_str(&self.body).expect("a cached Integration's body decodes");
        Integration {
            metadata: self.metadata.clone(),
            spec: body.spec,
            status: body.status,
        }
    }

    /// `spec.provider`: the ClusterProvider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// `spec.secretRef.name`: the input Secret's name.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What the Ready condition says.
    pub fn readiness(&self) -> Readiness {
        self.readiness
    }

    /// `status.renewAt`.
    pub fn renew_at(&self) -> Option<Timestamp> {
        self.renew_at
    }

    /// `status.expiresAt`: when the current credentials expire.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    /// Whether the status carries a `RenewalOverdue` condition.
    pub fn overdue_recorded(&self) -> bool {
        self.overdue_recorded
    }
}

/// A watch event of `Integration`s, in the cache's form.
pub fn event(event: watcher::Event<Integration>) -> watcher::Event<CachedIntegration> {
    use watcher::Event;
    match event {
        Event::Apply(i) => Event::Apply(CachedIntegration::new(i)),
        Event::Delete(i) => Event::Delete(CachedIntegration::new(i)),
        Event::InitApply(i) => Event::InitApply(CachedIntegration::new(i)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// Drops from cached metadata what the operator never reads and the real
/// apiserver always sends: `managedFields` (the largest part of a typical
/// object) and kubectl's copy of the last applied object. Maps and lists
/// left empty, or with spare room from decoding, are given back.
pub fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    // An empty BTreeMap keeps its node allocated once it has held a key.
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
    if meta.labels.as_ref().is_some_and(|l| l.is_empty()) {
        meta.labels = None;
    }
    if let Some(finalizers) = meta.finalizers.as_mut() {
        finalizers.shrink_to_fit();
    }
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.shrink_to_fit();
    }
}

impl Resource for CachedIntegration {
    type DynamicType = ();
    type Scope = <Integration as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Integration::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Integration::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Integration::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Integration::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// kube-runtime's controller asks that what it reconciles can be decoded
/// from the API; the controller here is fed from a watch of `Integration`
/// that converts each object (see controller::run_scope).
impl<'de> Deserialize<'de> for CachedIntegration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Integration::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_integration() -> Integration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "generation": 2, "resourceVersion": "7",
                "finalizers": ["integration-operator.io/cleanup"],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"provider": "p", "secretRef": {"name": "creds"}, "clientCredentials": {"scopes": ["read"]},
                "target": {"name": "out", "labels": {"team": "x"}}},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True", "reason": "Issued",
                "message": "issued", "lastTransitionTime": "2026-12-02T10:00:00Z"}],
                "expiresAt": "2026-12-02T11:00:00Z", "renewAt": "2026-12-02T10:45:00.250Z", "secretName": "out"},
        }))
        .unwrap()
    }

    #[test]
    fn expanding_gives_back_the_spec_and_status_with_the_slimmed_metadata() {
        let original = ready_integration();
        let cached = CachedIntegration::new(original.clone());
        let expanded = cached.expand();
        assert_eq!(expanded.spec, original.spec);
        assert_eq!(expanded.status, original.status);
        assert_eq!(expanded.metadata.name, original.metadata.name);
        assert_eq!(expanded.metadata.uid, original.metadata.uid);
        assert_eq!(expanded.metadata.finalizers, original.metadata.finalizers);
        assert_eq!(expanded.metadata.managed_fields, None);
        assert_eq!(
            expanded.metadata.annotations, None,
            "the last-applied copy is dropped, and the map with it"
        );
    }

    #[test]
    fn the_facts_read_for_every_integration_are_decoded_once() {
        let cached = CachedIntegration::new(ready_integration());
        assert_eq!(cached.provider(), "p");
        assert_eq!(cached.input(), "creds");
        assert_eq!(cached.readiness(), Readiness::True);
        assert_eq!(cached.expires_at(), Some("2026-12-02T11:00:00Z".parse().unwrap()));
        assert_eq!(cached.renew_at(), Some("2026-12-02T10:45:00.250Z".parse().unwrap()));
        assert!(!cached.overdue_recorded());

        let mut fresh = ready_integration();
        fresh.status = None;
        let cached = CachedIntegration::new(fresh);
        assert_eq!(cached.readiness(), Readiness::Unknown);
        assert_eq!(cached.expires_at(), None);
        assert_eq!(cached.expand().status, None);
    }

    #[test]
    fn keys_made_from_either_form_are_equal() {
        let integration = ready_integration();
        let cached = CachedIntegration::new(integration.clone());
        assert_eq!(key_of(&integration), ObjectRef::from_obj(&cached));
    }
}
