//! The controller's Integration cache holds a compact form of each
//! Integration, not the typed object.
//!
//! A typed `Integration` costs about 1.9 KiB in a cache at rest: 816 bytes
//! inline (the metadata, spec and status structs, mostly empty `Option`s),
//! a conditions `Vec` that serde leaves with room for four, and about twenty
//! small strings. Even with spec and status packed, kube-runtime's store
//! still cost ~1.5 KiB per Integration: a typed `ObjectMeta` (360 bytes
//! inline and five strings) and a key holding copies of the name,
//! namespace, uid and resourceVersion (docs/benchmarks.md).
//!
//! [`CachedIntegration`] keeps:
//! - the facts read for *every* Integration at once — by the watch mappers
//!   (provider, input Secret), the stall watchdog and the metrics scrape
//!   (Ready, `renewAt`, expiry, a recorded `RenewalOverdue`) and by the
//!   filter that tells a change a reconcile must act on from our own status
//!   writes ([`CachedIntegration::changes`]) — decoded once per watch event
//!   instead of at each scan;
//! - the metadata (slimmed, without the name and namespace its key holds),
//!   spec and status as one compact JSON text, LZ4-compressed against a
//!   built-in dictionary of typical bodies ([`DICTIONARY`]: ~600 bytes of
//!   JSON keep in ~200), decoded by [`CachedIntegration::expand`] only when
//!   that one Integration is reconciled (a few microseconds, beside the
//!   milliseconds of its API and provider calls).

use std::sync::{Arc, LazyLock};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::key::{IntegrationKey, Interner};
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
#[derive(Debug)]
pub struct CachedIntegration {
    provider: Arc<str>,
    input: Arc<str>,
    readiness: Readiness,
    overdue_recorded: bool,
    renew_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    changes: u64,
    /// `{"metadata":…,"spec":…,"status":…}`, as serde_json writes them,
    /// compressed against [`DICTIONARY`].
    body: Box<[u8]>,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    metadata: &'a ObjectMeta,
    spec: &'a IntegrationSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: &'a Option<IntegrationStatus>,
}

#[derive(Deserialize)]
struct Body {
    metadata: ObjectMeta,
    spec: IntegrationSpec,
    #[serde(default)]
    status: Option<IntegrationStatus>,
}

impl CachedIntegration {
    /// The key and compact form of `integration`, with its metadata
    /// slimmed and its repeated strings shared through `interner`.
    pub fn new(integration: Integration, interner: &Interner) -> (IntegrationKey, Self) {
        let Integration {
            mut metadata,
            spec,
            status,
        } = integration;
        slim(&mut metadata);
        let key = IntegrationKey::interned(
            interner,
            metadata.namespace.as_deref().unwrap_or_default(),
            metadata.name.as_deref().unwrap_or_default(),
        );
        let changes = changes(&metadata);
        // The key holds them.
        metadata.name = None;
        metadata.namespace = None;
        let recorded = status.as_ref();
        let readiness = match status::ready_condition(recorded).map(|c| c.status.as_str()) {
            Some("True") => Readiness::True,
            Some("False") => Readiness::False,
            _ => Readiness::Unknown,
        };
        let body = body_json(&metadata, &spec, &status);
        let cached = Self {
            provider: interner.intern(&spec.provider),
            input: interner.intern(&spec.secret_ref.name),
            readiness,
            overdue_recorded: recorded.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == RENEWAL_OVERDUE)),
            renew_at: status::parse_time(recorded.and_then(|s| s.renew_at.as_ref())),
            expires_at: status::parse_time(recorded.and_then(|s| s.expires_at.as_ref())),
            changes,
            body: lz4_flex::block::compress_prepend_size_with_dict(&body, &DICTIONARY).into_boxed_slice(),
        };
        (key, cached)
    }

    /// The whole Integration `key` names, as it was cached.
    pub fn expand(&self, key: &IntegrationKey) -> Integration {
        // The body was written by `new` from the same types.
        let json = lz4_flex::block::decompress_size_prepended_with_dict(&self.body, &DICTIONARY)
            .expect("a cached Integration's body decompresses");
        let body: Body = serde_json::from_slice(&json).expect("a cached Integration's body decodes");
        let mut metadata = body.metadata;
        metadata.name = Some(key.name().to_owned());
        metadata.namespace = Some(key.namespace().to_owned());
        Integration {
            metadata,
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

    /// A digest of what a reconcile acts on: everything but the status and
    /// resourceVersion. Two versions with the same digest differ only by
    /// our own status writes (or an unchanged resync).
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

fn body_json(metadata: &ObjectMeta, spec: &IntegrationSpec, status: &Option<IntegrationStatus>) -> Vec<u8> {
    // Serializing derived types into a Vec does not fail.
    serde_json::to_vec(&BodyRef { metadata, spec, status }).unwrap_or_default()
}

/// What cached bodies are compressed against: typical bodies, written by
/// the same types as the cached ones (so with the same key order), so that
/// field names, condition types, reasons and the phrases most messages
/// share cost a few bytes each instead of their length. Only this process
/// ever reads what it compressed, so the dictionary can change freely
/// between versions.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    use serde_json::json;
    let time = "2026-01-01T00:00:00Z";
    let ready = |reason: &str, message: &str| {
        json!({"type": "Ready", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": time, "observedGeneration": 1})
    };
    let failed = |reason: &str, message: &str| {
        json!({"type": "Ready", "status": "False", "reason": reason, "message": message,
            "lastTransitionTime": time, "observedGeneration": 1})
    };
    let status = |conditions: serde_json::Value| {
        json!({"observedGeneration": 1, "conditions": conditions, "expiresAt": time, "renewAt": time,
            "lastExchangeTime": time, "secretName": "credentials", "secretResourceVersion": "1"})
    };
    let specs = [
        json!({"provider": "smartrecruiters", "secretRef": {"name": "credentials"},
            "partnerIntegration": {"companyId": "", "appId": "", "bidirectional": true}}),
        json!({"provider": "cloud-elements", "secretRef": {"name": "credentials"},
            "elementInstance": {"elementKey": "", "instanceName": "", "deletionPolicy": "Delete"}}),
        json!({"provider": "kombo", "secretRef": {"name": "credentials"},
            "connection": {"integrationTool": "", "endUserEmail": "", "endUserOrganizationName": "", "endUserOriginId": ""}}),
        json!({"provider": "talentlink", "secretRef": {"name": "credentials"}, "basicAuth": {}}),
        json!({"provider": "api-key", "secretRef": {"name": "credentials"}, "apiKey": {},
            "target": {"name": "credentials", "labels": {"app.kubernetes.io/name": ""}, "type": "Opaque"}}),
        json!({"provider": "oauth2", "secretRef": {"name": "credentials"},
            "clientCredentials": {"scopes": ["read"], "audience": "https://"},
            "refresh": {"renewBefore": "5m"}}),
        json!({"provider": "oauth2", "secretRef": {"name": "credentials"}, "clientCredentials": {}}),
    ];
    let statuses = [
        status(json!([failed(
            "SecretNotFound",
            "input Secret \"credentials\" not found"
        )])),
        status(json!([failed(
            "ProviderUnavailable",
            "the provider did not answer; retrying"
        )])),
        status(json!([ready(
            "Renewed",
            "credentials in Secret \"credentials\" are valid until 2026-01-01T00:00:00Z"
        )])),
        status(json!([ready(
            "Issued",
            "credentials in Secret \"credentials\" are valid until 2026-01-01T00:00:00Z"
        )])),
    ];
    let mut dictionary = Vec::new();
    for (spec, status) in specs.iter().zip(statuses.iter().cycle()) {
        let sample = json!({
            "metadata": {"name": "", "namespace": "", "uid": "00000000-0000-0000-0000-000000000000",
                "resourceVersion": "1", "generation": 1, "creationTimestamp": time,
                "finalizers": ["integration-operator.io/cleanup"]},
            "spec": spec, "status": status,
        });
        if let Ok(Integration {
            mut metadata,
            spec,
            status,
        }) = serde_json::from_value::<Integration>(sample)
        {
            (metadata.name, metadata.namespace) = (None, None);
            dictionary.extend(body_json(&metadata, &spec, &status));
        }
    }
    dictionary
});

/// The digest of [`CachedIntegration::changes`]: the uid, generation (the
/// spec), annotations (the retry request), finalizers and deletion.
fn changes(meta: &ObjectMeta) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0.to_string()).hash(&mut h);
    h.finish()
}

/// Drops from cached metadata what the operator never reads and the real
/// apiserver always sends: `managedFields` (the largest part of a typical
/// object) and kubectl's copy of the last applied object. Maps and lists
/// left empty are dropped.
fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
    if meta.labels.as_ref().is_some_and(|l| l.is_empty()) {
        meta.labels = None;
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
        let (key, cached) = CachedIntegration::new(original.clone(), &Interner::default());
        assert_eq!(key, IntegrationKey::new("ns", "a"));
        let expanded = cached.expand(&key);
        assert_eq!(expanded.spec, original.spec);
        assert_eq!(expanded.status, original.status);
        assert_eq!(expanded.metadata.name, original.metadata.name);
        assert_eq!(expanded.metadata.namespace, original.metadata.namespace);
        assert_eq!(expanded.metadata.uid, original.metadata.uid);
        assert_eq!(expanded.metadata.resource_version, original.metadata.resource_version);
        assert_eq!(expanded.metadata.generation, original.metadata.generation);
        assert_eq!(expanded.metadata.finalizers, original.metadata.finalizers);
        assert_eq!(expanded.metadata.managed_fields, None);
        assert_eq!(
            expanded.metadata.annotations, None,
            "the last-applied copy is dropped, and the map with it"
        );
    }

    #[test]
    fn the_facts_read_for_every_integration_are_decoded_once() {
        let interner = Interner::default();
        let (_, cached) = CachedIntegration::new(ready_integration(), &interner);
        assert_eq!(cached.provider(), "p");
        assert_eq!(cached.input(), "creds");
        assert_eq!(cached.readiness(), Readiness::True);
        assert_eq!(cached.expires_at(), Some("2026-12-02T11:00:00Z".parse().unwrap()));
        assert_eq!(cached.renew_at(), Some("2026-12-02T10:45:00.250Z".parse().unwrap()));
        assert!(!cached.overdue_recorded());

        let mut fresh = ready_integration();
        fresh.status = None;
        let (key, fresh) = CachedIntegration::new(fresh, &interner);
        assert_eq!(fresh.readiness(), Readiness::Unknown);
        assert_eq!(fresh.expires_at(), None);
        assert_eq!(fresh.expand(&key).status, None);
        assert!(
            Arc::ptr_eq(&cached.provider, &fresh.provider),
            "repeated strings are shared"
        );
    }

    #[test]
    fn a_typical_body_is_kept_in_well_under_half_its_json() {
        // Every sample of the dictionary still decodes (a renamed spec field
        // would silently drop one; seven samples make ~4.9 KB).
        assert!(DICTIONARY.len() > 4000, "{}", DICTIONARY.len());
        let (key, cached) = CachedIntegration::new(ready_integration(), &Interner::default());
        let json = lz4_flex::block::decompress_size_prepended_with_dict(&cached.body, &DICTIONARY).unwrap();
        assert_eq!(
            serde_json::from_slice::<Body>(&json).unwrap().spec,
            cached.expand(&key).spec
        );
        assert!(
            cached.body.len() * 5 < json.len() * 2,
            "{} bytes kept for {} of JSON",
            cached.body.len(),
            json.len()
        );
    }

    #[test]
    fn only_what_a_reconcile_acts_on_changes_the_digest() {
        let interner = Interner::default();
        let digest = |i: Integration| CachedIntegration::new(i, &interner).1.changes();
        let before = digest(ready_integration());
        let mut status_only = ready_integration();
        status_only.metadata.resource_version = Some("8".into());
        status_only.status.as_mut().unwrap().renew_at = Some("2026-12-02T11:45:00Z".into());
        assert_eq!(digest(status_only), before, "our own status write is no news");
        let mut spec = ready_integration();
        spec.metadata.generation = Some(3);
        assert_ne!(digest(spec), before);
        let mut retry = ready_integration();
        retry.metadata.annotations = Some([("integration-operator.io/retry".to_string(), "1".to_string())].into());
        assert_ne!(digest(retry), before);
        let mut recreated = ready_integration();
        recreated.metadata.uid = Some("u2".into());
        assert_ne!(digest(recreated), before, "a new object of the same name is news");
    }
}
