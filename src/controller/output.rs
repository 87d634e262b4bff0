//! The output Secret as the operator wants it (pure), and the keyed
//! fingerprints that let a reconcile tell, from the cluster alone, whether the
//! Secret is intact and which inputs it was made from.

use std::collections::BTreeMap;

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

use crate::{crd::Integration, providers::Credentials};

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
/// When the credentials expire (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "integration-operator.io/expires-at";
/// When the operator renews (or re-validates) them (RFC 3339).
pub const RENEW_AT_ANNOTATION: &str = "integration-operator.io/renew-at";

/// Present when the provider gave no lifetime and a default was assumed.
pub const EXPIRY_ASSUMED_ANNOTATION: &str = "integration-operator.io/expiry-assumed";

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

    /// Fingerprint of a Secret's data.
    pub fn content(&self, data: &BTreeMap<String, ByteString>) -> String {
        let mut mac = self.mac();
        for (k, v) in data {
            feed(&mut mac, k.as_bytes());
            feed(&mut mac, &v.0);
        }
        Self::finish(mac)
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

/// The output Secret as it should be.
pub fn desired_secret(
    integration: &Integration,
    fields: &Credentials,
    input_fingerprint: &str,
    schedule: Schedule,
    fingerprinter: &Fingerprinter,
) -> Secret {
    let data: BTreeMap<String, ByteString> = fields
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose_secret().as_bytes().to_vec())))
        .collect();
    let target = integration.spec.target.clone().unwrap_or_default();
    let mut labels = target.labels;
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(
        INTEGRATION_LABEL.into(),
        integration.metadata.name.clone().unwrap_or_default(),
    );
    let mut annotations = target.annotations;
    annotations.insert(CONTENT_HASH_ANNOTATION.into(), fingerprinter.content(&data));
    annotations.insert(INPUT_FINGERPRINT_ANNOTATION.into(), input_fingerprint.into());
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
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Reads the credential fields back out of an existing output Secret (for
/// flows that resume from a checkpoint).
pub fn fields_of(secret: &Secret) -> Credentials {
    Credentials::new(
        secret
            .data
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                String::from_utf8(v.0.clone())
                    .ok()
                    .map(|s| (k.clone(), secrecy::SecretString::from(s)))
            })
            .collect(),
    )
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
    recorded.is_some_and(|r| *r == fingerprinter.content(data))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = desired_secret(&integration(), &fields(), "in-fp", Schedule::default(), &fp);
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

    #[test]
    fn edited_data_is_detected() {
        let fp = Fingerprinter::new(b"k".to_vec());
        let mut s = desired_secret(&integration(), &fields(), "in-fp", Schedule::default(), &fp);
        s.data
            .as_mut()
            .unwrap()
            .insert("access_token".into(), ByteString(b"forged".to_vec()));
        assert!(!is_intact(&s, &fp));
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
