//! The cache of output Secrets: what a reconcile needs to know about each,
//! and nothing else.
//!
//! A typed reflector store keeps every Secret's whole metadata: labels and
//! annotations are B-tree maps (a ~0.5 KiB node each, however few entries)
//! and owner references, timestamps and uid are separate allocations — about
//! 2 KiB per Secret, 20 MiB at 10,000 Integrations. This cache keeps a
//! projection of ~200 bytes: the resourceVersion, the controlling owner's
//! uid, the recorded input fingerprint and schedule, and a digest of the
//! labels and annotations (to tell whether a write would change them).

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, RwLock},
};

use futures::{Stream, TryStreamExt};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    core::PartialObjectMeta,
    runtime::{reflector::ObjectRef, watcher},
};

use super::versions::{VersionTable, numeric};
use crate::controller::output::{self, Schedule};
use crate::crd::Integration;
use std::num::NonZeroU64;

/// An output Secret as last seen by the watch.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedSecret {
    /// Its resourceVersion; `None` when not a plain number (the API calls
    /// versions opaque; etcd-backed servers write numbers): such a Secret
    /// is never trusted without a read.
    pub resource_version: Option<NonZeroU64>,
    /// The uid of the controlling owner reference, if any.
    pub controller_uid: Option<CompactText>,
    /// The input fingerprint annotation the credentials were derived from.
    pub input_fingerprint: Option<CompactText>,
    /// The input version annotation, when it holds a digest
    /// ([`output::INPUT_VERSION_ANNOTATION`]; a digest of 0 counts as none).
    pub input_version: Option<NonZeroU64>,
    /// The schedule recorded in the annotations.
    pub schedule: Schedule,
    /// How it is presented, where it is more than an `Opaque` Secret of
    /// issued keys (one pointer for the many Secrets that are just that).
    pub templated: Option<Box<Templated>>,
    /// [`metadata_digest`] of the labels and annotations.
    pub metadata_digest: u64,
    /// [`content_digest`]: tells whether the data changed without keeping it.
    pub content_digest: u64,
}

/// The type and templates an output Secret was written with.
#[derive(Debug, Clone, PartialEq)]
pub struct Templated {
    /// Its template fingerprint annotation.
    pub fingerprint: Option<Box<str>>,
    /// Its rendered keys, as the annotation lists them.
    pub rendered_keys: Option<Box<str>>,
}

impl Templated {
    fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Templated> {
        let get = |k: &str| annotations.get(k).map(|v| v.as_str().into());
        let t = Templated {
            fingerprint: get(output::TEMPLATE_FINGERPRINT_ANNOTATION),
            rendered_keys: get(output::RENDERED_KEYS_ANNOTATION),
        };
        (t.fingerprint.is_some() || t.rendered_keys.is_some()).then_some(t)
    }
}

impl OwnedSecret {
    /// The template fingerprint it was written with.
    pub fn template_fingerprint(&self) -> Option<&str> {
        self.templated.as_ref().and_then(|t| t.fingerprint.as_deref())
    }

    /// Its rendered keys.
    pub fn rendered_keys(&self) -> std::collections::BTreeSet<String> {
        let listed = self.templated.as_ref().and_then(|t| t.rendered_keys.as_deref());
        listed
            .map(|v| v.split(',').filter(|k| !k.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    pub fn from_meta(meta: &ObjectMeta) -> OwnedSecret {
        let annotations = meta.annotations.as_ref();
        OwnedSecret {
            resource_version: meta
                .resource_version
                .as_deref()
                .and_then(numeric)
                .and_then(NonZeroU64::new),
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| CompactText::new(&o.uid)),
            input_fingerprint: annotations
                .and_then(|a| a.get(output::INPUT_FINGERPRINT_ANNOTATION))
                .map(|v| CompactText::new(v)),
            input_version: annotations
                .and_then(|a| a.get(output::INPUT_VERSION_ANNOTATION))
                .and_then(|v| output::parse_input_version(v))
                .and_then(NonZeroU64::new),
            schedule: annotations.map(Schedule::from_annotations).unwrap_or_default(),
            templated: annotations.and_then(Templated::from_annotations).map(Box::new),
            metadata_digest: metadata_digest(meta),
            content_digest: content_digest(meta),
        }
    }

    /// Whether `integration` is the controlling owner (see [`output::is_owned_by`]).
    pub fn is_owned_by(&self, integration: &Integration) -> bool {
        match (integration.metadata.uid.as_deref(), self.controller_uid.as_ref()) {
            (Some(uid), Some(owner)) => *owner == CompactText::new(uid),
            _ => false,
        }
    }
}

/// A string kept as the 16 bytes it spells when it has one of the two
/// shapes most strings here have: a uid (a UUID as the apiserver writes it)
/// or an input fingerprint (32 lowercase hex digits). That saves an
/// allocation of 32-48 bytes per output Secret for each (~8 MiB at 100,000).
/// Anything else is kept as it is; either way it reads back as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactText {
    Uuid([u8; 16]),
    Hex([u8; 16]),
    Other(Box<str>),
}

impl CompactText {
    pub fn new(text: &str) -> Self {
        let bytes = |hex: &str| -> Option<[u8; 16]> {
            let lowercase = hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let mut out = [0u8; 16];
            (lowercase && hex.len() == 32 && hex::decode_to_slice(hex, &mut out).is_ok()).then_some(out)
        };
        let uuid = || {
            let parts: Vec<&str> = text.split('-').collect();
            let shape = parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]);
            shape.then(|| bytes(&parts.concat())).flatten()
        };
        match (bytes(text), uuid()) {
            (Some(hex), _) => Self::Hex(hex),
            (None, Some(uuid)) => Self::Uuid(uuid),
            (None, None) => Self::Other(text.into()),
        }
    }
}

impl std::fmt::Display for CompactText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hex(b) => f.write_str(&hex::encode(b)),
            Self::Uuid(b) => {
                let h = hex::encode(b);
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// A digest of an object's labels and annotations, leaving out kubectl's
/// copy of the last applied manifest (never part of what we write).
pub fn metadata_digest(meta: &ObjectMeta) -> u64 {
    fn map(h: &mut impl Hasher, m: Option<&BTreeMap<String, String>>) {
        let entries = m
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration");
        for (k, v) in entries {
            k.hash(h);
            v.hash(h);
        }
        0xffu8.hash(h);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    map(&mut h, meta.labels.as_ref());
    map(&mut h, meta.annotations.as_ref());
    h.finish()
}

/// A digest of the content-hash annotation (the keyed hash of the data the
/// operator wrote): equal digests, equal data.
pub fn content_digest(meta: &ObjectMeta) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(output::CONTENT_HASH_ANNOTATION))
        .hash(&mut h);
    h.finish()
}

fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

/// A [`key`] back as namespace and name (a namespace has no `/`).
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

fn ref_key(secret: &ObjectRef<Secret>) -> Box<str> {
    key(secret.namespace.as_deref().unwrap_or_default(), &secret.name)
}

/// Output Secret versions whose data the operator wrote or checked, so an
/// unchanged Secret is never read again. Forgotten when the Secret is
/// deleted, so Integrations that come and go leave nothing behind.
#[derive(Clone, Default)]
pub struct Verified(Arc<VerifiedInner>);

#[derive(Default)]
struct VerifiedInner {
    versions: Mutex<VersionTable>,
    /// Secrets this operator is writing right now.
    writing: Mutex<std::collections::HashSet<Box<str>>>,
    /// Signalled whenever a write ends.
    write_ended: tokio::sync::Notify,
}

/// Marks a Secret as being written until dropped.
pub struct Writing {
    verified: Verified,
    key: Box<str>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let inner = &self.verified.0;
        inner
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        inner.write_ended.notify_waiters();
    }
}

/// How long an event waits for our own write of the same Secret to end.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Verified {
    fn versions(&self) -> std::sync::MutexGuard<'_, VersionTable> {
        self.0.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_verified(&self, secret: &ObjectRef<Secret>, resource_version: &str) -> bool {
        let namespace = secret.namespace.as_deref().unwrap_or_default();
        self.versions().holds(namespace, &secret.name, resource_version)
    }

    /// The version of `secret` this process last wrote or checked.
    pub fn version_of(&self, secret: &ObjectRef<Secret>) -> Option<String> {
        let namespace = secret.namespace.as_deref().unwrap_or_default();
        self.versions().get(namespace, &secret.name).map(|rv| rv.to_string())
    }

    pub fn record(&self, secret: &ObjectRef<Secret>, resource_version: &str) {
        let namespace = secret.namespace.as_deref().unwrap_or_default();
        self.versions().set(namespace, &secret.name, resource_version);
    }

    /// Declares a write of `secret` under way, until the guard is dropped
    /// (after the written version was recorded).
    pub fn begin_write(&self, secret: &ObjectRef<Secret>) -> Writing {
        let key = ref_key(secret);
        self.0
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        Writing {
            verified: self.clone(),
            key,
        }
    }

    fn is_writing(&self, key: &str) -> bool {
        self.0.writing.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    /// Whether this version of `secret` is news: not one this operator
    /// wrote or checked. The watch can deliver our own write before the
    /// write's response is processed; such an event is judged once the
    /// write has ended, or it would look like someone else's edit and cost
    /// a needless reconcile (measured: 0.55 extra reads per renewal).
    pub async fn is_news(&self, secret: &ObjectRef<Secret>, resource_version: &str) -> bool {
        let key = ref_key(secret);
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let ended = self.0.write_ended.notified();
            if !self.is_writing(&key) {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        !self.is_verified(secret, resource_version)
    }

    fn forget(&self, key: &str) {
        let (namespace, name) = split_key(key);
        self.versions().remove(namespace, name);
    }

    /// Keeps only the versions of the Secrets named by `keys`.
    fn retain<'a>(&self, keys: impl Iterator<Item = &'a Box<str>>) {
        self.versions().retain(keys.map(|k| split_key(k)));
    }
}

#[derive(Default)]
struct State {
    secrets: HashMap<Box<str>, OwnedSecret>,
    /// A relist in progress: replaces `secrets` when complete, so that
    /// Secrets deleted while the watch was down disappear.
    relist: Option<HashMap<Box<str>, OwnedSecret>>,
}

/// The output-Secret cache, shared by the watch that fills it and the reconciles.
#[derive(Clone)]
pub struct OwnedSecrets {
    state: Arc<RwLock<State>>,
    verified: Verified,
    ready_tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for OwnedSecrets {
    fn default() -> Self {
        OwnedSecrets {
            state: Arc::default(),
            verified: Verified::default(),
            ready_tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl OwnedSecrets {
    /// The verified versions of these Secrets.
    pub fn verified(&self) -> Verified {
        self.verified.clone()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<OwnedSecret> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.secrets.get(&*key(namespace, name)).cloned()
    }

    pub fn len(&self) -> usize {
        self.state.read().unwrap_or_else(|p| p.into_inner()).secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first complete list has been applied.
    /// Whether the first list is in.
    pub fn is_ready(&self) -> bool {
        *self.ready_tx.borrow()
    }

    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready_tx.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Applies one watch event, as kube-runtime's reflector would.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let entry = |s: &PartialObjectMeta<Secret>| {
            let meta = &s.metadata;
            (
                key(
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                ),
                OwnedSecret::from_meta(meta),
            )
        };
        match event {
            watcher::Event::Apply(s) => {
                let (k, v) = entry(s);
                state.secrets.insert(k, v);
            }
            watcher::Event::Delete(s) => {
                let (k, _) = entry(s);
                state.secrets.remove(&k);
                self.verified.forget(&k);
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                let (k, v) = entry(s);
                state.relist.get_or_insert_with(HashMap::new).insert(k, v);
            }
            watcher::Event::InitDone => {
                if let Some(mut fresh) = state.relist.take() {
                    fresh.shrink_to_fit();
                    self.verified.retain(fresh.keys());
                    state.secrets = fresh;
                }
                drop(state);
                self.ready_tx.send_replace(true);
            }
        }
    }

    /// Passes a watch stream through, keeping this cache up to date.
    pub fn reflect<S>(self, stream: S) -> impl Stream<Item = S::Item>
    where
        S: Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>>,
    {
        stream.inspect_ok(move |event| self.apply(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::core::PartialObjectMetaExt;

    fn secret(name: &str, rv: &str, owner: &str) -> PartialObjectMeta<Secret> {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            resource_version: Some(rv.into()),
            owner_references: Some(vec![OwnerReference {
                uid: owner.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            annotations: Some(BTreeMap::from([(
                output::INPUT_FINGERPRINT_ANNOTATION.to_string(),
                "f1".to_string(),
            )])),
            ..Default::default()
        }
        .into_request_partial::<Secret>()
    }

    #[test]
    fn a_relist_forgets_secrets_deleted_while_the_watch_was_down() {
        let cache = OwnedSecrets::default();
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(secret("a", "1", "u1")));
        cache.apply(&watcher::Event::InitApply(secret("b", "1", "u2")));
        cache.apply(&watcher::Event::InitDone);
        assert_eq!(cache.len(), 2);
        // Until the relist completes, the old view stays readable.
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(secret("a", "2", "u1")));
        assert!(cache.get("ns", "b").is_some());
        cache.apply(&watcher::Event::InitDone);
        assert!(cache.get("ns", "b").is_none());
        let a = cache.get("ns", "a").expect("a is cached");
        assert_eq!(a.resource_version.map(u64::from), Some(2));
        assert_eq!(a.input_fingerprint.map(|f| f.to_string()).as_deref(), Some("f1"));
        assert_eq!(a.controller_uid.map(|u| u.to_string()).as_deref(), Some("u1"));
    }

    #[test]
    fn uids_and_fingerprints_read_back_as_written_whatever_their_shape() {
        for text in [
            "d16bc634-87a2-4a29-aa45-e0cd0c3a4f3b",
            "0123456789abcdef0123456789abcdef",
            "D16BC634-87A2-4A29-AA45-E0CD0C3A4F3B",
            "0123456789ABCDEF0123456789abcdef",
            "d16bc634-87a2-4a29-aa45-e0cd0c3a4f3",
            "d16bc63487a24a29aa45e0cd0c3a4f3b0",
            "u1",
            "",
        ] {
            assert_eq!(CompactText::new(text).to_string(), text);
        }
        assert!(matches!(
            CompactText::new("d16bc634-87a2-4a29-aa45-e0cd0c3a4f3b"),
            CompactText::Uuid(_)
        ));
        assert!(matches!(
            CompactText::new("0123456789abcdef0123456789abcdef"),
            CompactText::Hex(_)
        ));
        assert_ne!(
            CompactText::new("d16bc634-87a2-4a29-aa45-e0cd0c3a4f3b"),
            CompactText::new("d16bc63487a24a29aa45e0cd0c3a4f3b"),
            "a uid and a digest of the same bytes are different text"
        );
    }

    #[test]
    fn applies_and_deletes_are_reflected() {
        let cache = OwnedSecrets::default();
        cache.apply(&watcher::Event::Apply(secret("a", "1", "u1")));
        cache.apply(&watcher::Event::Apply(secret("a", "3", "u1")));
        assert_eq!(cache.get("ns", "a").unwrap().resource_version.map(u64::from), Some(3));
        let a = ObjectRef::<Secret>::new("a").within("ns");
        cache.verified().record(&a, "3");
        assert!(cache.verified().is_verified(&a, "3"));
        assert!(!cache.verified().is_verified(&a, "2"));
        cache.apply(&watcher::Event::Delete(secret("a", "3", "u1")));
        assert!(cache.get("ns", "a").is_none());
        assert!(!cache.verified().is_verified(&a, "3"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_during_our_own_write_is_judged_after_the_write() {
        let verified = Verified::default();
        let a = ObjectRef::<Secret>::new("a").within("ns");
        let writing = verified.begin_write(&a);
        let judge = {
            let verified = verified.clone();
            let a = a.clone();
            tokio::spawn(async move { verified.is_news(&a, "7").await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!judge.is_finished(), "judged before the write ended");
        verified.record(&a, "7");
        drop(writing);
        assert!(!judge.await.unwrap(), "our own write was taken for news");
        // Someone else's version is news, and nothing waits when no write is under way.
        assert!(verified.is_news(&a, "8").await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_ends_does_not_hold_events_forever() {
        let verified = Verified::default();
        let a = ObjectRef::<Secret>::new("a").within("ns");
        let _stuck = verified.begin_write(&a);
        let started = tokio::time::Instant::now();
        assert!(verified.is_news(&a, "1").await);
        assert_eq!(started.elapsed(), SETTLE_WAIT);
    }

    #[test]
    fn the_digest_ignores_only_the_last_applied_annotation() {
        let mut a = secret("a", "1", "u1").metadata;
        let base = metadata_digest(&a);
        a.annotations
            .as_mut()
            .unwrap()
            .insert("kubectl.kubernetes.io/last-applied-configuration".into(), "{}".into());
        assert_eq!(metadata_digest(&a), base);
        a.labels = Some(BTreeMap::from([("x".to_string(), "y".to_string())]));
        assert_ne!(metadata_digest(&a), base);
        // A label is not the same as an annotation with the same key and value.
        let mut b = secret("a", "1", "u1").metadata;
        b.annotations.as_mut().unwrap().insert("x".into(), "y".into());
        assert_ne!(metadata_digest(&b), metadata_digest(&a));
    }
}
