//! Secret versions by name, in 17 bytes an entry: what the operator knows
//! of a Secret's resourceVersion without keeping the Secret.
//!
//! [`VersionTable`] maps a Secret (namespace and name) to a resourceVersion.
//! The key is a 64-bit keyed hash of the name, not the name (a name
//! allocation and a map slot of 32 bytes, ~0.9 MiB at 10,000 Secrets,
//! against 0.27 MiB). Two names may, very rarely, share a slot; that is
//! harmless because a resourceVersion is unique across all objects of a
//! cluster (etcd's revision of the write): a slot holding another Secret's
//! version never equals the version asked about, so a collision can only
//! make the operator read what it could have skipped, never skip a read it
//! needed. Versions that are not plain decimal numbers (the API calls them
//! opaque; etcd-backed servers write decimals) are not kept at all: the
//! operator then reads, as it would without this table.
//!
//! [`InputVersions`] is one of them, fed by the watch of Secret metadata:
//! the current version of every Secret an Integration may read as input.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{ResourceExt, core::PartialObjectMeta, runtime::watcher};

/// The map's hasher: its keys are already keyed hashes.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Slots = HashMap<u64, u64, BuildHasherDefault<Identity>>;

/// A resourceVersion as kept: decimal digits without a leading zero.
pub fn numeric(resource_version: &str) -> Option<u64> {
    let canonical = !resource_version.starts_with('0') || resource_version == "0";
    canonical.then(|| resource_version.parse().ok()).flatten()
}

/// Secret versions by a keyed hash of namespace and name (see the module).
pub struct VersionTable {
    /// Random per process, so that names cannot be chosen to collide.
    keys: RandomState,
    slots: Slots,
}

impl Default for VersionTable {
    fn default() -> Self {
        VersionTable {
            keys: RandomState::new(),
            slots: Slots::default(),
        }
    }
}

impl VersionTable {
    /// A fresh, empty table hashing names as this one does.
    fn sibling(&self) -> VersionTable {
        VersionTable {
            keys: self.keys.clone(),
            slots: Slots::default(),
        }
    }

    fn slot(&self, namespace: &str, name: &str) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write(namespace.as_bytes());
        h.write_u8(0xff);
        h.write(name.as_bytes());
        h.finish()
    }

    /// The version kept for `namespace/name`, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<u64> {
        self.slots.get(&self.slot(namespace, name)).copied()
    }

    /// Whether `resource_version` is the version kept for `namespace/name`.
    pub fn holds(&self, namespace: &str, name: &str, resource_version: &str) -> bool {
        numeric(resource_version).is_some_and(|rv| self.get(namespace, name) == Some(rv))
    }

    /// Keeps `resource_version` for `namespace/name`; one that is not a
    /// plain number forgets the name instead.
    pub fn set(&mut self, namespace: &str, name: &str, resource_version: &str) {
        let slot = self.slot(namespace, name);
        match numeric(resource_version) {
            Some(rv) => self.slots.insert(slot, rv),
            None => self.slots.remove(&slot),
        };
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        let slot = self.slot(namespace, name);
        self.slots.remove(&slot);
    }

    /// Keeps only the names `kept` lists.
    pub fn retain<'a>(&mut self, kept: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let kept: HashSet<u64> = kept.into_iter().map(|(ns, name)| self.slot(ns, name)).collect();
        self.slots.retain(|slot, _| kept.contains(slot));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }
}

/// The current version of every Secret an Integration may read as input
/// (the Secret-metadata watch's view: Secrets not managed by the operator,
/// in this shard). A look whose input Secret is still at the version its
/// credentials were made from needs no read of it.
#[derive(Clone)]
pub struct InputVersions {
    state: Arc<Mutex<InputState>>,
    /// True once the first list is in.
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for InputVersions {
    fn default() -> Self {
        InputVersions {
            state: Arc::default(),
            ready: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

#[derive(Default)]
struct InputState {
    current: VersionTable,
    /// Being filled by a (re)list, which replaces `current` when done.
    relist: Option<VersionTable>,
}

impl InputVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, InputState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once the first list is in (until then, every look reads).
    pub async fn wait_until_ready(&self) {
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
    }

    /// The version of `namespace/name` last seen by the watch.
    pub fn get(&self, namespace: &str, name: &str) -> Option<u64> {
        self.lock().current.get(namespace, name)
    }

    /// How many Secrets it knows.
    pub fn len(&self) -> usize {
        self.lock().current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one watch event. Returns the Secret when the event is news:
    /// a version not known before (a new Secret, a change, a version seen
    /// again by a re-list after it changed) or a deletion. A re-list's
    /// report of a version already known is not: nothing an Integration
    /// reads changed. Nor is the first list: every Integration is looked at
    /// once the caches are ready anyway (the Integration watch's own first
    /// list), so waking each again for its input would only repeat the look.
    pub fn apply(&self, event: watcher::Event<PartialObjectMeta<Secret>>) -> Option<PartialObjectMeta<Secret>> {
        let mut state = self.lock();
        let names = |s: &PartialObjectMeta<Secret>| (s.namespace().unwrap_or_default(), s.name_any());
        match event {
            watcher::Event::Init => {
                state.relist = Some(state.current.sibling());
                None
            }
            watcher::Event::InitApply(secret) => {
                let (namespace, name) = names(&secret);
                let rv = secret.metadata.resource_version.as_deref().unwrap_or_default();
                let first_list = !*self.ready.borrow();
                let known = first_list || state.current.holds(&namespace, &name, rv);
                let fresh = state.current.sibling();
                state.relist.get_or_insert(fresh).set(&namespace, &name, rv);
                (!known).then_some(secret)
            }
            watcher::Event::InitDone => {
                if let Some(mut fresh) = state.relist.take() {
                    fresh.shrink_to_fit();
                    state.current = fresh;
                }
                self.ready.send_replace(true);
                None
            }
            watcher::Event::Apply(secret) => {
                let (namespace, name) = names(&secret);
                let rv = secret.metadata.resource_version.as_deref().unwrap_or_default();
                let known = state.current.holds(&namespace, &name, rv);
                state.current.set(&namespace, &name, rv);
                (!known).then_some(secret)
            }
            watcher::Event::Delete(secret) => {
                let (namespace, name) = names(&secret);
                state.current.remove(&namespace, &name);
                Some(secret)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::core::PartialObjectMetaExt;

    fn secret(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
        .into_request_partial::<Secret>()
    }

    fn news(versions: &InputVersions, event: watcher::Event<PartialObjectMeta<Secret>>) -> Option<String> {
        versions.apply(event).map(|s| s.name_any())
    }

    #[test]
    fn only_plain_decimal_versions_are_kept() {
        assert_eq!(numeric("4711"), Some(4711));
        assert_eq!(numeric("0"), Some(0));
        for opaque in ["", "0815", "12a", "-1", " 1", "99999999999999999999999"] {
            assert_eq!(numeric(opaque), None, "{opaque:?}");
        }
        let mut table = VersionTable::default();
        table.set("ns", "a", "5");
        assert!(table.holds("ns", "a", "5"));
        table.set("ns", "a", "opaque");
        assert_eq!(table.get("ns", "a"), None, "an opaque version forgets the old one");
        assert!(!table.holds("ns", "a", "opaque"));
    }

    #[test]
    fn names_are_told_apart_by_namespace_and_name() {
        let mut table = VersionTable::default();
        table.set("ab", "c", "1");
        table.set("a", "bc", "2");
        assert_eq!(table.get("ab", "c"), Some(1));
        assert_eq!(table.get("a", "bc"), Some(2));
        assert_eq!(table.get("other", "c"), None);
        table.retain([("a", "bc")]);
        assert_eq!((table.get("ab", "c"), table.get("a", "bc")), (None, Some(2)));
    }

    #[test]
    fn changes_and_deletions_are_news_and_neither_the_first_list_nor_a_relist_of_known_versions_is() {
        let versions = InputVersions::default();
        // The first list is no news: every Integration gets its look anyway.
        assert_eq!(news(&versions, watcher::Event::Init), None);
        assert_eq!(news(&versions, watcher::Event::InitApply(secret("a", "10"))), None);
        assert_eq!(news(&versions, watcher::Event::InitApply(secret("b", "11"))), None);
        assert_eq!(versions.get("ns", "a"), None, "known once the list is complete");
        assert_eq!(news(&versions, watcher::Event::InitDone), None);
        assert_eq!((versions.get("ns", "a"), versions.get("ns", "b")), (Some(10), Some(11)));
        // A change is news; the same version again is not.
        assert_eq!(
            news(&versions, watcher::Event::Apply(secret("a", "12"))),
            Some("a".into())
        );
        assert_eq!(news(&versions, watcher::Event::Apply(secret("a", "12"))), None);
        assert_eq!(versions.get("ns", "a"), Some(12));
        // A re-list after the watch was down: what changed meanwhile is
        // news, what did not is not, and what was deleted is forgotten.
        news(&versions, watcher::Event::Init);
        assert_eq!(news(&versions, watcher::Event::InitApply(secret("a", "12"))), None);
        assert_eq!(
            news(&versions, watcher::Event::InitApply(secret("c", "13"))),
            Some("c".into())
        );
        news(&versions, watcher::Event::InitDone);
        assert_eq!(versions.get("ns", "b"), None);
        assert_eq!(versions.len(), 2);
        // A deletion is news and forgets the version: a Secret created
        // again under the name has a new one.
        assert_eq!(
            news(&versions, watcher::Event::Delete(secret("a", "12"))),
            Some("a".into())
        );
        assert_eq!(versions.get("ns", "a"), None);
    }
}
