//! The key of an Integration: its namespace and name.
//!
//! One key per Integration is held by the cache, and clones of it by the
//! timetable, the scheduler, the failure counts and the reconcile in
//! flight. Both parts are shared strings, so a clone is two reference
//! counts, not two allocations; the cache also shares each namespace among
//! all the Integrations in it (see [`Interner`]).

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex},
};

/// An Integration's namespace and name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntegrationKey {
    namespace: Arc<str>,
    name: Arc<str>,
}

impl IntegrationKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A key whose namespace is the interned copy.
    pub(super) fn interned(interner: &Interner, namespace: &str, name: &str) -> Self {
        Self {
            namespace: interner.intern(namespace),
            name: name.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for IntegrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for IntegrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One shared copy of each string many Integrations repeat: namespaces,
/// ClusterProvider names, input Secret names.
#[derive(Default)]
pub struct Interner(Mutex<HashSet<Arc<str>>>);

impl Interner {
    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match set.get(s) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = s.into();
                set.insert(shared.clone());
                shared
            }
        }
    }

    /// Forgets the strings no one holds any more.
    pub fn prune(&self) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.retain(|s| Arc::strong_count(s) > 1);
        set.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_by_namespace_and_name_and_interned_namespaces_are_shared() {
        let interner = Interner::default();
        let a = IntegrationKey::interned(&interner, "ns", "a");
        let b = IntegrationKey::interned(&interner, "ns", "b");
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        assert_eq!(a, IntegrationKey::new("ns", "a"));
        assert_ne!(a, IntegrationKey::new("other", "a"));
        assert_eq!(a.to_string(), "ns/a");
        drop((a, b));
        interner.prune();
        assert!(interner.0.lock().unwrap().is_empty());
    }
}
