//! The output Secret as the operator wants it (pure), and the keyed
//! fingerprints that let a reconcile tell, from the cluster alone, whether the
//! Secret is intact and which inputs it was made from.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::{
    crd::{Integration, SecretType, TargetSpec},
    providers::Credentials,
};

/// Label on every object the operator creates; its Secret watch selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "integration-operator";
/// Label naming the Integration an output Secret belongs to.
pub const INTEGRATION_LABEL: &str = "integration-operator.io/integration";
/// Keyed hash of the Secret's data as the operator wrote it.
pub const CONTENT_HASH_ANNOTATION: &str = "integration-operator.io/content-hash";
/// Keyed hash of the inputs (provider, flow, input values) it was made from.
pub const INPUT_FINGERPRINT_ANNOTATION: &str = "integration-operator.io/input-fingerprint";
/// Keyed digest (16 hex digits) of the input Secret's resourceVersion and
/// of everything else the input fingerprint rests on (provider and spec),
/// as they were when the credentials were made: while both are unchanged,
/// the input fingerprint is too, and a look needs no read of the input
/// Secret to know it (see [`Fingerprinter::input_version`]). Absent on an
/// unfinished flow's checkpoint.
pub const INPUT_VERSION_ANNOTATION: &str = "integration-operator.io/input-version";
/// When the credentials expire (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "integration-operator.io/expires-at";
/// When the operator renews (or re-validates) them (RFC 3339).
pub const RENEW_AT_ANNOTATION: &str = "integration-operator.io/renew-at";

/// Present when the provider gave no lifetime and a default was assumed.
pub const EXPIRY_ASSUMED_ANNOTATION: &str = "integration-operator.io/expiry-assumed";

/// The keys rendered from `spec.target.template` (comma-separated; a
/// Secret key has no comma): never read back as credentials, and removed
/// when their template goes.
pub const RENDERED_KEYS_ANNOTATION: &str = "integration-operator.io/rendered-keys";
/// Keyed hash of the Secret type and templates the Secret was written
/// with: when the spec's differ, the Secret is rendered again from the
/// credentials it holds, without a provider call. Absent for an `Opaque`
/// Secret without templates (as every Secret was before templates).
pub const TEMPLATE_FINGERPRINT_ANNOTATION: &str = "integration-operator.io/template-fingerprint";

/// When credentials expire and are renewed, as recorded with them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Schedule {
    pub expires_at: Option<Timestamp>,
    pub renew_at: Option<Timestamp>,
    /// The expiry is the ClusterProvider's default, not the provider's word.
    pub expiry_assumed: bool,
}

impl Schedule {
    /// Reads the schedule back from a Secret's annotations.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Schedule {
        let at = |k: &str| annotations.get(k).and_then(|v| v.parse().ok());
        Schedule {
            expires_at: at(EXPIRES_AT_ANNOTATION),
            renew_at: at(RENEW_AT_ANNOTATION),
            expiry_assumed: annotations.get(EXPIRY_ASSUMED_ANNOTATION).is_some_and(|v| v == "true"),
        }
    }
}

/// Keyed hashing (HMAC-SHA256). The key is the operator's own secret, so the
/// annotations reveal nothing about the values even to someone who can guess
/// candidate values.
#[derive(Clone)]
pub struct Fingerprinter {
    key: Vec<u8>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter([redacted])")
    }
}

impl Fingerprinter {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    fn finish(mac: Hmac<Sha256>) -> String {
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The key of the authorization-code flow's `state` MACs, derived from
    /// this key (so every replica derives the same one).
    pub fn state_key(&self) -> crate::providers::authorization::StateKey {
        crate::providers::authorization::StateKey::derive(&self.key)
    }

    /// Fingerprint of everything an exchange depends on. `context` is the
    /// provider's effective configuration and the flow, already serialised.
    pub fn inputs(&self, context: &str, inputs: &Credentials) -> String {
        let mut mac = self.mac();
        feed(&mut mac, context.as_bytes());
        for (k, v) in inputs.iter() {
            feed(&mut mac, k.as_bytes());
            feed(&mut mac, v.expose_secret().as_bytes());
        }
        Self::finish(mac)
    }

    /// Digest of the version of the input Secret (its resourceVersion: a
    /// new one for every write, and for a Secret deleted and created again
    /// under the same name) and of the fingerprint `context`: when both are
    /// as recorded, [`Self::inputs`] would give what it gave then. Keyed,
    /// so that no one who can edit the output Secret's annotations can make
    /// the operator believe its inputs unchanged.
    pub fn input_version(&self, input_resource_version: &str, context: &str) -> u64 {
        let mut mac = self.mac();
        feed(&mut mac, b"input-version");
        feed(&mut mac, input_resource_version.as_bytes());
        feed(&mut mac, context.as_bytes());
        let bytes = mac.finalize().into_bytes();
        u64::from_be_bytes(
            bytes[..8]
                .try_into()
                .unwrap_or_else(|_| unreachable!("SHA-256 gives 32 bytes")),
        )
    }

    /// Fingerprint of a refusal: the inputs the provider refused and the
    /// value of the retry annotation then (a new value lifts the hold).
    pub fn refusal(&self, input_fingerprint: &str, retry: Option<&str>) -> String {
        let mut mac = self.mac();
        feed(&mut mac, b"refusal");
        feed(&mut mac, input_fingerprint.as_bytes());
        feed(&mut mac, retry.unwrap_or_default().as_bytes());
        Self::finish(mac)
    }

    /// Attestation that a verified provider webhook reported provider-side
    /// id `id` for the Integration with uid `uid`. The inbound server (any
    /// replica: they share the key) writes it beside the id in the
    /// [`REPORTED_ID_ANNOTATION`](super::reconcile::REPORTED_ID_ANNOTATION);
    /// the leader accepts the id only with it, so a namespace user who can
    /// set annotations cannot forge the report.
    pub fn attest(&self, uid: &str, id: &str) -> String {
        let mut mac = self.mac();
        feed(&mut mac, b"provider-reported-id");
        feed(&mut mac, uid.as_bytes());
        feed(&mut mac, id.as_bytes());
        Self::finish(mac)
    }

    /// Whether `attestation` is [`Fingerprinter::attest`] of `uid` and `id`
    /// (compared in constant time).
    pub fn attested(&self, uid: &str, id: &str, attestation: &str) -> bool {
        let Ok(given) = hex::decode(attestation) else {
            return false;
        };
        let mut mac = self.mac();
        feed(&mut mac, b"provider-reported-id");
        feed(&mut mac, uid.as_bytes());
        feed(&mut mac, id.as_bytes());
        given.len() == 16 && mac.verify_truncated_left(&given).is_ok()
    }

    /// A key for another use of the operator's secret (e.g. the MACs of the
    /// bearer tokens the inbound server issues), derived from this key and
    /// `purpose`: every replica derives the same one, and no output of one
    /// use can be passed off as another's.
    pub fn derived_key(&self, purpose: &str) -> Vec<u8> {
        let mut mac = self.mac();
        feed(&mut mac, b"derived-key");
        feed(&mut mac, purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Attestation that a verified provider callback reported the
    /// provider-side integration `id` of the Integration with uid `uid`
    /// disabled, received at `at` (Unix seconds). Written by the inbound
    /// server beside the id in the
    /// [`PROVIDER_DISABLED_ANNOTATION`](super::reconcile::PROVIDER_DISABLED_ANNOTATION);
    /// the leader acts on the report only with it, so someone who may merely
    /// edit the Integration's annotations cannot forge one. Domain-separated
    /// from [`Fingerprinter::attest`]: a reported-id attestation is no
    /// disabled one.
    pub fn attest_disabled(&self, uid: &str, id: &str, at: i64) -> String {
        Self::finish(self.disabled_mac(uid, id, at))
    }

    /// Whether `attestation` is [`Fingerprinter::attest_disabled`] of `uid`,
    /// `id` and `at` (compared in constant time).
    pub fn attested_disabled(&self, uid: &str, id: &str, at: i64, attestation: &str) -> bool {
        let Ok(given) = hex::decode(attestation) else {
            return false;
        };
        given.len() == 16 && self.disabled_mac(uid, id, at).verify_truncated_left(&given).is_ok()
    }

    fn disabled_mac(&self, uid: &str, id: &str, at: i64) -> Hmac<Sha256> {
        let mut mac = self.mac();
        feed(&mut mac, b"provider-disabled");
        feed(&mut mac, uid.as_bytes());
        feed(&mut mac, id.as_bytes());
        feed(&mut mac, at.to_string().as_bytes());
        mac
    }

    /// Fingerprint of a Secret's data and of which keys in it are rendered
    /// (fed only when some are, so the content hash of a Secret without
    /// templates is what it always was).
    pub fn content(&self, data: &BTreeMap<String, ByteString>, rendered: &BTreeSet<String>) -> String {
        let mut mac = self.mac();
        for (k, v) in data {
            feed(&mut mac, k.as_bytes());
            feed(&mut mac, &v.0);
        }
        if !rendered.is_empty() {
            feed(&mut mac, b"rendered");
            for k in rendered {
                feed(&mut mac, k.as_bytes());
            }
        }
        Self::finish(mac)
    }

    /// Fingerprint of how the credentials are presented: the Secret type
    /// and the templates. `None` for an `Opaque` Secret without templates.
    pub fn template(&self, target: Option<&TargetSpec>) -> Option<String> {
        let secret_type = secret_type(target);
        let templates = target
            .and_then(|t| t.template.as_ref())
            .map(|t| &t.data)
            .filter(|d| !d.is_empty());
        if secret_type == SecretType::Opaque && templates.is_none() {
            return None;
        }
        let mut mac = self.mac();
        feed(&mut mac, b"template");
        feed(&mut mac, secret_type.as_str().as_bytes());
        for (k, v) in templates.into_iter().flatten() {
            feed(&mut mac, k.as_bytes());
            feed(&mut mac, v.as_bytes());
        }
        Some(Self::finish(mac))
    }
}

/// Length-prefixed, so ("ab","c") and ("a","bc") differ.
fn feed(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_le_bytes());
    mac.update(bytes);
}

/// Name of the output Secret: `spec.target.name`, else the Integration's name.
pub fn target_name(integration: &Integration) -> String {
    integration
        .spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| integration.metadata.name.clone().unwrap_or_default())
}

/// Controller owner reference to the Integration (so the Secret is
/// garbage-collected with it).
pub fn owner_reference(integration: &Integration) -> Option<OwnerReference> {
    integration.controller_owner_ref(&())
}

/// Whether `secret` is controlled by `integration` (same uid).
pub fn is_owned_by(meta: &ObjectMeta, integration: &Integration) -> bool {
    let uid = integration.metadata.uid.as_deref();
    uid.is_some()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// The Secret type `spec.target` asks for.
pub fn secret_type(target: Option<&TargetSpec>) -> SecretType {
    target.and_then(|t| t.secret_type).unwrap_or_default()
}

/// What credentials were made from, as recorded with them: the input
/// fingerprint, and the input version when the inputs were a finished
/// flow's (see [`INPUT_VERSION_ANNOTATION`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputStamp<'a> {
    pub fingerprint: &'a str,
    pub version: Option<u64>,
}

/// [`INPUT_VERSION_ANNOTATION`]'s value for a digest.
pub fn format_input_version(version: u64) -> String {
    format!("{version:016x}")
}

/// A digest read back from [`INPUT_VERSION_ANNOTATION`]'s value.
pub fn parse_input_version(value: &str) -> Option<u64> {
    (value.len() == 16)
        .then(|| u64::from_str_radix(value, 16).ok())
        .flatten()
}

/// The output Secret as it should be: the issued `fields` and the
/// `rendered` template keys (which never collide with them; an issued key
/// wins if they did).
pub fn desired_secret(
    integration: &Integration,
    fields: &Credentials,
    rendered: &BTreeMap<String, String>,
    inputs: InputStamp<'_>,
    schedule: Schedule,
    fingerprinter: &Fingerprinter,
) -> Secret {
    let rendered: BTreeMap<&String, &String> = rendered.iter().filter(|(k, _)| fields.get(k).is_none()).collect();
    let data: BTreeMap<String, ByteString> = fields
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose_secret().as_bytes().to_vec())))
        .chain(
            rendered
                .iter()
                .map(|(k, v)| ((*k).clone(), ByteString(v.as_bytes().to_vec()))),
        )
        .collect();
    let rendered_keys: BTreeSet<String> = rendered.keys().map(|k| (*k).clone()).collect();
    let target = integration.spec.target.clone().unwrap_or_default();
    let template_fingerprint = fingerprinter.template(Some(&target));
    let secret_type = secret_type(Some(&target));
    let mut labels = target.labels;
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(
        INTEGRATION_LABEL.into(),
        integration.metadata.name.clone().unwrap_or_default(),
    );
    let mut annotations = target.annotations;
    annotations.insert(
        CONTENT_HASH_ANNOTATION.into(),
        fingerprinter.content(&data, &rendered_keys),
    );
    // Ours, whatever target.annotations says.
    annotations.remove(RENDERED_KEYS_ANNOTATION);
    annotations.remove(TEMPLATE_FINGERPRINT_ANNOTATION);
    if !rendered_keys.is_empty() {
        let keys: Vec<&str> = rendered_keys.iter().map(String::as_str).collect();
        annotations.insert(RENDERED_KEYS_ANNOTATION.into(), keys.join(","));
    }
    if let Some(fp) = template_fingerprint {
        annotations.insert(TEMPLATE_FINGERPRINT_ANNOTATION.into(), fp);
    }
    annotations.insert(INPUT_FINGERPRINT_ANNOTATION.into(), inputs.fingerprint.into());
    annotations.remove(INPUT_VERSION_ANNOTATION);
    if let Some(version) = inputs.version {
        annotations.insert(INPUT_VERSION_ANNOTATION.into(), format_input_version(version));
    }
    if let Some(at) = schedule.expires_at {
        annotations.insert(EXPIRES_AT_ANNOTATION.into(), super::status::rfc3339(at));
    }
    if let Some(at) = schedule.renew_at {
        annotations.insert(RENEW_AT_ANNOTATION.into(), super::status::rfc3339_millis(at));
    }
    if schedule.expiry_assumed {
        annotations.insert(EXPIRY_ASSUMED_ANNOTATION.into(), "true".into());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(target_name(integration)),
            namespace: integration.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner_reference(integration).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some(secret_type.as_str().into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The rendered keys a Secret's annotation names.
pub fn rendered_keys(annotations: Option<&BTreeMap<String, String>>) -> BTreeSet<String> {
    annotations
        .and_then(|a| a.get(RENDERED_KEYS_ANNOTATION))
        .map(|v| v.split(',').filter(|k| !k.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

/// Reads the credential fields back out of an existing output Secret (for
/// flows that resume from a checkpoint). Rendered keys are not credentials.
pub fn fields_of(secret: &Secret) -> Credentials {
    split(secret).0
}

/// An existing output Secret's data: the credential fields, and the values
/// of its rendered keys.
pub fn split(secret: &Secret) -> (Credentials, BTreeMap<String, String>) {
    let rendered_keys = rendered_keys(secret.metadata.annotations.as_ref());
    let mut fields = BTreeMap::new();
    let mut rendered = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        let Ok(s) = String::from_utf8(v.0.clone()) else {
            continue;
        };
        if rendered_keys.contains(k) {
            rendered.insert(k.clone(), s);
        } else {
            fields.insert(k.clone(), secrecy::SecretString::from(s));
        }
    }
    (Credentials::new(fields), rendered)
}

/// Whether an existing Secret's data still matches the content hash it carries.
pub fn is_intact(secret: &Secret, fingerprinter: &Fingerprinter) -> bool {
    let recorded = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONTENT_HASH_ANNOTATION));
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let rendered = rendered_keys(secret.metadata.annotations.as_ref());
    recorded.is_some_and(|r| *r == fingerprinter.content(data, &rendered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_attestations_are_bound_to_uid_id_time_and_key_and_are_no_reported_id_attestation() {
        let f = Fingerprinter::new(vec![7; 32]);
        let a = f.attest_disabled("uid-1", "iid-1", 1_700_000_000);
        assert!(f.attested_disabled("uid-1", "iid-1", 1_700_000_000, &a));
        assert!(!f.attested_disabled("uid-2", "iid-1", 1_700_000_000, &a));
        assert!(!f.attested_disabled("uid-1", "iid-2", 1_700_000_000, &a));
        assert!(!f.attested_disabled("uid-1", "iid-1", 1_700_000_001, &a));
        assert!(!Fingerprinter::new(vec![8; 32]).attested_disabled("uid-1", "iid-1", 1_700_000_000, &a));
        assert!(!f.attested_disabled("uid-1", "iid-1", 1_700_000_000, "zz"));
        // A reported-id attestation cannot stand in for a disabled one.
        let reported = f.attest("uid-1", "iid-1");
        assert!(!f.attested_disabled("uid-1", "iid-1", 1_700_000_000, &reported));
        assert_ne!(f.derived_key("a"), f.derived_key("b"));
        assert_ne!(f.derived_key("a"), Fingerprinter::new(vec![8; 32]).derived_key("a"));
    }

    #[test]
    fn attestations_bind_the_id_to_the_uid_and_the_key() {
        let f = Fingerprinter::new(vec![7; 32]);
        let a = f.attest("uid-1", "personio:abc");
        assert!(f.attested("uid-1", "personio:abc", &a));
        assert!(!f.attested("uid-2", "personio:abc", &a), "another Integration");
        assert!(!f.attested("uid-1", "personio:abd", &a), "another id");
        assert!(
            !Fingerprinter::new(vec![8; 32]).attested("uid-1", "personio:abc", &a),
            "another key"
        );
        for bad in ["", "00", "zz", &a[..a.len() - 2]] {
            assert!(!f.attested("uid-1", "personio:abc", bad), "{bad:?}");
        }
    }
    use crate::crd::{IntegrationSpec, SecretReference, TargetSpec};
    use secrecy::SecretString;

    fn integration() -> Integration {
        let mut i = Integration::new(
            "acme",
            IntegrationSpec {
                provider: "p".into(),
                secret_ref: SecretReference { name: "in".into() },
                target: Some(Box::new(TargetSpec {
                    labels: BTreeMap::from([("team".into(), "a".into())]),
                    ..TargetSpec::default()
                })),
                ..IntegrationSpec::default()
            },
        );
        i.metadata.namespace = Some("ns".into());
        i.metadata.uid = Some("uid-1".into());
        i.metadata.labels = Some(BTreeMap::from([("not-copied".into(), "x".into())]));
        i
    }

    fn fields() -> Credentials {
        Credentials::new(BTreeMap::from([(
            "access_token".to_string(),
            SecretString::from("tok".to_string()),
        )]))
    }

    #[test]
    fn desired_secret_is_owned_labelled_and_hashed() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let s = desired_secret(
            &integration(),
            &fields(),
            &BTreeMap::new(),
            STAMP,
            Schedule::default(),
            &fp,
        );
        assert_eq!(s.metadata.name.as_deref(), Some("acme"));
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["team"], "a");
        assert!(
            !labels.contains_key("not-copied"),
            "Integration labels must not be copied"
        );
        assert!(is_owned_by(&s.metadata, &integration()));
        assert!(is_intact(&s, &fp));
        let annotations = s.metadata.annotations.clone().unwrap();
        assert!(!annotations.values().any(|v| v.contains("tok")));
    }

    const STAMP: InputStamp<'static> = InputStamp {
        fingerprint: "in-fp",
        version: None,
    };

    #[test]
    fn the_input_version_is_recorded_only_with_finished_inputs_and_follows_the_input_and_context() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let version = fp.input_version("41", "ctx");
        assert_ne!(
            version,
            fp.input_version("42", "ctx"),
            "a new version of the input Secret"
        );
        assert_ne!(version, fp.input_version("41", "ctx2"), "another provider or spec");
        assert_ne!(
            version,
            Fingerprinter::new(b"other".to_vec()).input_version("41", "ctx")
        );
        assert_eq!(version, fp.input_version("41", "ctx"));
        let mut forged = integration();
        forged.spec.target.get_or_insert_default().annotations.insert(
            INPUT_VERSION_ANNOTATION.into(),
            format_input_version(fp.input_version("1", "forged")),
        );
        let stamped = |version| {
            let s = desired_secret(
                &forged,
                &fields(),
                &BTreeMap::new(),
                InputStamp {
                    fingerprint: "in-fp",
                    version,
                },
                Schedule::default(),
                &fp,
            );
            s.metadata.annotations.unwrap().get(INPUT_VERSION_ANNOTATION).cloned()
        };
        let written = stamped(Some(version)).expect("recorded");
        assert_eq!(parse_input_version(&written), Some(version));
        // A checkpoint records none, whatever target.annotations says.
        assert_eq!(stamped(None), None);
        assert_eq!(parse_input_version("not hex digits!!"), None);
        assert_eq!(parse_input_version("abc"), None);
    }

    #[test]
    fn edited_data_is_detected() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let mut s = desired_secret(
            &integration(),
            &fields(),
            &BTreeMap::new(),
            STAMP,
            Schedule::default(),
            &fp,
        );
        s.data
            .as_mut()
            .unwrap()
            .insert("access_token".into(), ByteString(b"forged".to_vec()));
        assert!(!is_intact(&s, &fp));
    }

    fn templated() -> Integration {
        let mut i = integration();
        let target = i.spec.target.as_mut().unwrap();
        target.secret_type = Some(SecretType::BasicAuth);
        target.template = Some(crate::crd::TemplateSpec {
            data: BTreeMap::from([("username".to_string(), "{{ credentials.access_token }}".to_string())]),
        });
        i
    }

    #[test]
    fn rendered_keys_are_written_typed_and_never_read_back_as_credentials() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let rendered = BTreeMap::from([
            ("username".to_string(), "tok".to_string()),
            // A collision never replaces an issued value.
            ("access_token".to_string(), "rendered".to_string()),
        ]);
        let s = desired_secret(&templated(), &fields(), &rendered, STAMP, Schedule::default(), &fp);
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let data = s.data.clone().unwrap();
        assert_eq!(data["username"].0, b"tok");
        assert_eq!(data["access_token"].0, b"tok");
        let annotations = s.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[RENDERED_KEYS_ANNOTATION], "username");
        assert_eq!(
            annotations.get(TEMPLATE_FINGERPRINT_ANNOTATION),
            fp.template(templated().spec.target.as_deref()).as_ref()
        );
        assert!(is_intact(&s, &fp));
        let (issued, carried) = split(&s);
        assert_eq!(
            issued.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["access_token"]
        );
        assert_eq!(carried["username"], "tok");
        assert!(fields_of(&s).get("username").is_none());

        // Someone who edits which keys count as rendered edits the content.
        let mut edited = s.clone();
        edited
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(RENDERED_KEYS_ANNOTATION.into(), "username,access_token".into());
        assert!(!is_intact(&edited, &fp));
    }

    #[test]
    fn secrets_without_templates_hash_as_they_always_did() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let s = desired_secret(
            &integration(),
            &fields(),
            &BTreeMap::new(),
            STAMP,
            Schedule::default(),
            &fp,
        );
        // The content hash as it was computed before templates existed.
        let mut mac = fp.mac();
        for (k, v) in s.data.as_ref().unwrap() {
            feed(&mut mac, k.as_bytes());
            feed(&mut mac, &v.0);
        }
        let before = Fingerprinter::finish(mac);
        let annotations = s.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[CONTENT_HASH_ANNOTATION], before);
        assert!(!annotations.contains_key(RENDERED_KEYS_ANNOTATION));
        assert!(!annotations.contains_key(TEMPLATE_FINGERPRINT_ANNOTATION));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn the_template_fingerprint_follows_type_and_templates_only() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let plain = integration();
        assert_eq!(fp.template(plain.spec.target.as_deref()), None);
        assert_eq!(fp.template(None), None);
        let mut explicit = integration();
        explicit.spec.target.as_mut().unwrap().secret_type = Some(SecretType::Opaque);
        assert_eq!(
            fp.template(explicit.spec.target.as_deref()),
            None,
            "Opaque is the default"
        );
        let typed = templated();
        let a = fp.template(typed.spec.target.as_deref()).unwrap();
        let mut other = templated();
        other
            .spec
            .target
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .data
            .insert("password".into(), "p".into());
        assert_ne!(Some(a.clone()), fp.template(other.spec.target.as_deref()));
        let mut untyped = templated();
        untyped.spec.target.as_mut().unwrap().secret_type = None;
        assert_ne!(Some(a.clone()), fp.template(untyped.spec.target.as_deref()));
        let mut labelled = templated();
        labelled
            .spec
            .target
            .as_mut()
            .unwrap()
            .labels
            .insert("x".into(), "y".into());
        assert_eq!(Some(a), fp.template(labelled.spec.target.as_deref()));
    }

    #[test]
    fn fingerprints_depend_on_the_key_and_every_input() {
        let a = Fingerprinter::new(b"k1".to_vec());
        let b = Fingerprinter::new(b"k2".to_vec());
        assert_ne!(a.inputs("ctx", &fields()), b.inputs("ctx", &fields()));
        assert_ne!(a.inputs("ctx", &fields()), a.inputs("ctx2", &fields()));
        assert_ne!(a.inputs("ctx", &fields()), a.inputs("ctx", &Credentials::default()));
        assert_eq!(a.inputs("ctx", &fields()), a.inputs("ctx", &fields()));
    }
}
