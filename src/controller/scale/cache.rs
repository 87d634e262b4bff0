//! The controller's cache of Integrations, filled from their watch.
//!
//! It does what kube-runtime's reflector store does for the controller —
//! one entry per Integration, replaced whole after a relist, "ready" once
//! the first list is in — with an entry a third of the size: the compact
//! form ([`CachedIntegration`]) under a key of two shared strings, where
//! the store keeps a typed `ObjectMeta` and a key with four string copies
//! (docs/benchmarks.md, "Where the memory goes"). Applying a watch event
//! also says whether a reconcile must act on it, from the digest the
//! previous entry kept (the job kube-runtime's predicate filter did with a
//! map of its own).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use kube::runtime::watcher;
use tokio::sync::watch;

use super::{
    cached::CachedIntegration,
    key::{IntegrationKey, Interner},
};
use crate::crd::Integration;

type Entries = HashMap<IntegrationKey, Arc<CachedIntegration>>;

/// What a watch event means for the controller.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// New, or changed in something a reconcile acts on.
    Reconcile(IntegrationKey),
    /// Deleted.
    Gone(IntegrationKey),
    /// Only our own status write, an unchanged resync, or a list marker.
    Nothing,
}

struct Inner {
    entries: RwLock<Entries>,
    /// The entries of a relist in progress; they replace `entries` whole
    /// when it ends.
    relist: Mutex<Option<Entries>>,
    interner: Interner,
    ready: watch::Sender<bool>,
}

/// The Integrations one controller watches.
#[derive(Clone)]
pub struct IntegrationCache(Arc<Inner>);

impl Default for IntegrationCache {
    fn default() -> Self {
        Self(Arc::new(Inner {
            entries: RwLock::default(),
            relist: Mutex::default(),
            interner: Interner::default(),
            ready: watch::Sender::new(false),
        }))
    }
}

impl std::fmt::Debug for IntegrationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationCache").field("len", &self.len()).finish()
    }
}

impl IntegrationCache {
    fn entries(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.0.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached Integration `key` names, under the cache's own copy of
    /// the key (whose strings the cache shares).
    pub fn get(&self, key: &IntegrationKey) -> Option<(IntegrationKey, Arc<CachedIntegration>)> {
        self.entries().get_key_value(key).map(|(k, v)| (k.clone(), v.clone()))
    }

    pub fn contains(&self, key: &IntegrationKey) -> bool {
        self.entries().contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every cached Integration, as of now.
    pub fn snapshot(&self) -> Vec<(IntegrationKey, Arc<CachedIntegration>)> {
        self.entries().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The keys of the Integrations `wanted` picks.
    pub fn keys_where(&self, wanted: impl Fn(&IntegrationKey, &CachedIntegration) -> bool) -> Vec<IntegrationKey> {
        self.entries()
            .iter()
            .filter(|(k, v)| wanted(k, v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Returns once the first list is in.
    pub async fn wait_until_ready(&self) {
        let _ = self.0.ready.subscribe().wait_for(|ready| *ready).await;
    }

    /// Applies one watch event; says whether a reconcile must act on it.
    pub fn apply(&self, event: watcher::Event<Integration>) -> Change {
        use watcher::Event;
        match event {
            Event::Init => {
                *self.0.relist.lock().unwrap_or_else(|p| p.into_inner()) = Some(Entries::new());
                Change::Nothing
            }
            Event::InitApply(integration) => {
                let (key, cached) = CachedIntegration::new(integration, &self.0.interner);
                let change = self.judge(&key, &cached);
                let mut relist = self.0.relist.lock().unwrap_or_else(|p| p.into_inner());
                relist.get_or_insert_default().insert(key, Arc::new(cached));
                change
            }
            Event::InitDone => {
                let listed = self.0.relist.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(listed) = listed {
                    *self.0.entries.write().unwrap_or_else(|p| p.into_inner()) = listed;
                }
                self.0.interner.prune();
                self.0.ready.send_replace(true);
                Change::Nothing
            }
            Event::Apply(integration) => {
                let (key, cached) = CachedIntegration::new(integration, &self.0.interner);
                let change = self.judge(&key, &cached);
                let mut entries = self.0.entries.write().unwrap_or_else(|p| p.into_inner());
                // Keep the cache's key: clones of it are held elsewhere.
                match entries.get_mut(&key) {
                    Some(entry) => *entry = Arc::new(cached),
                    None => {
                        entries.insert(key, Arc::new(cached));
                    }
                }
                change
            }
            Event::Delete(integration) => {
                let (key, _) = CachedIntegration::new(integration, &self.0.interner);
                let removed = self
                    .0
                    .entries
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove_entry(&key);
                Change::Gone(removed.map_or(key, |(key, _)| key))
            }
        }
    }

    /// News unless the cached version has the same digest.
    fn judge(&self, key: &IntegrationKey, cached: &CachedIntegration) -> Change {
        match self.entries().get_key_value(key) {
            Some((_, old)) if old.changes() == cached.changes() => Change::Nothing,
            Some((key, _)) => Change::Reconcile(key.clone()),
            None => Change::Reconcile(key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn integration(name: &str, generation: i64, rv: &str) -> Integration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "generation": generation,
                "resourceVersion": rv},
            "spec": {"provider": "p", "secretRef": {"name": "creds"}, "clientCredentials": {}},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_list_fills_the_cache_and_only_changes_a_reconcile_acts_on_are_news() {
        let cache = IntegrationCache::default();
        let key = IntegrationKey::new("ns", "a");
        assert_eq!(cache.apply(Event::Init), Change::Nothing);
        assert_eq!(
            cache.apply(Event::InitApply(integration("a", 1, "1"))),
            Change::Reconcile(key.clone())
        );
        assert!(cache.is_empty(), "a list in progress is not the cache yet");
        assert_eq!(cache.apply(Event::InitDone), Change::Nothing);
        cache.wait_until_ready().await;
        assert_eq!(cache.len(), 1);

        // Our own status write (a new resourceVersion only) is no news.
        assert_eq!(cache.apply(Event::Apply(integration("a", 1, "2"))), Change::Nothing);
        assert_eq!(
            cache
                .get(&key)
                .unwrap()
                .1
                .expand(&key)
                .metadata
                .resource_version
                .as_deref(),
            Some("2"),
            "yet the cache holds the new version"
        );
        assert_eq!(
            cache.apply(Event::Apply(integration("a", 2, "3"))),
            Change::Reconcile(key.clone())
        );

        // A relist that finds the same version is no news, and one without
        // the Integration drops it.
        cache.apply(Event::Init);
        assert_eq!(cache.apply(Event::InitApply(integration("a", 2, "3"))), Change::Nothing);
        cache.apply(Event::InitDone);
        assert_eq!(cache.len(), 1);
        cache.apply(Event::Init);
        cache.apply(Event::InitDone);
        assert!(cache.is_empty());

        cache.apply(Event::Apply(integration("b", 1, "4")));
        assert_eq!(
            cache.apply(Event::Delete(integration("b", 1, "5"))),
            Change::Gone(IntegrationKey::new("ns", "b"))
        );
        assert!(cache.is_empty());
    }
}
