//! Shards: several active operators, each reconciling the Integrations of
//! its share of the namespaces (see docs/scaling.md).
//!
//! A namespace belongs to shard `hash(namespace) mod count`. Sharding by
//! namespace, not by Integration, keeps everything one reconcile reads
//! together: an Integration, its input Secret and its output Secret are in
//! one namespace, so a shard's caches hold only its own objects and every
//! input read stays inside the shard. The hash is FNV-1a, fixed here (not
//! the standard library's, whose seed and algorithm may change): replicas
//! built from different releases must agree on who owns what.
//!
//! Each shard elects its own leader (its own Lease, see [`Shard::lease_name`])
//! among the replicas started for it, so a shard whose leader dies is taken
//! over by its standby exactly as an unsharded operator's is. A provider's
//! `maxConcurrency` and `requestsPerSecond` are a budget for the whole
//! operator: each shard takes its share ([`Shard::share`]).

use std::fmt;

use kube::runtime::watcher;

/// This operator's shard: `index` of `count` (`0` of `1`: unsharded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `INDEX/COUNT`, e.g. `0/3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (index, count) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected INDEX/COUNT, e.g. 0/3"))?;
        let index: u32 = index
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: INDEX is not a number"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: COUNT is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("{s:?}: INDEX must be below COUNT, and COUNT at least 1"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether this operator works on objects in `namespace`.
    pub fn owns(&self, namespace: &str) -> bool {
        self.count <= 1 || shard_of(namespace, self.count) == self.index
    }

    /// Whether the operator is sharded at all.
    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// The Lease this shard's replicas elect their leader with.
    pub fn lease_name(&self, base: &str) -> String {
        if self.is_sharded() {
            format!("{base}-shard-{}-of-{}", self.index, self.count)
        } else {
            base.to_string()
        }
    }

    /// This shard's share of a limit set for the whole operator (rounded
    /// up, at least 1): `count` shards together stay within the limit but
    /// for the rounding.
    pub fn share<T>(&self, limit: T) -> T
    where
        T: Copy + TryFrom<u32> + TryInto<u64>,
    {
        if !self.is_sharded() {
            return limit;
        }
        let whole: u64 = limit.try_into().unwrap_or(u64::MAX);
        let part = whole.div_ceil(u64::from(self.count)).max(1);
        u32::try_from(part)
            .ok()
            .and_then(|p| T::try_from(p).ok())
            .unwrap_or(limit)
    }

    /// Keeps the events of a watch that concern this shard's namespaces
    /// (the bookkeeping events of the watch itself always pass).
    pub fn keeps<K: kube::Resource>(&self, event: &watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
                self.owns(o.meta().namespace.as_deref().unwrap_or_default())
            }
            watcher::Event::Init | watcher::Event::InitDone => true,
        }
    }
}

/// The shard of `namespace` among `count` (FNV-1a, 64 bits).
pub fn shard_of(namespace: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_has_exactly_one_shard() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let mut per_shard = [0usize; 3];
        for n in 0..3000 {
            let ns = format!("tenant-{n}");
            let owners: Vec<u32> = shards.iter().filter(|s| s.owns(&ns)).map(|s| s.index).collect();
            assert_eq!(owners.len(), 1, "{ns}: {owners:?}");
            per_shard[owners[0] as usize] += 1;
        }
        // Spread, not piled on one shard.
        assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
    }

    #[test]
    fn the_hash_is_fixed_across_releases() {
        // FNV-1a: 0xebada5168620c5fe for "default", 0xc2efb128e3ebf08b for
        // "tenant-1". Replicas of different builds must agree on owners, so
        // these never change.
        assert_eq!(shard_of("default", 1000), 782);
        assert_eq!(shard_of("tenant-1", 1000), 131);
        assert_eq!(shard_of("kube-system", 1000), 918);
    }

    #[test]
    fn unsharded_owns_everything_and_keeps_its_lease_and_limits() {
        let s = Shard::default();
        assert!(s.owns("anything"));
        assert_eq!(s.lease_name("integration-operator"), "integration-operator");
        assert_eq!(s.share(500u32), 500);
        assert_eq!(s.share(7usize), 7);
    }

    #[test]
    fn a_shard_takes_its_share_of_the_limits_and_its_own_lease() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s.lease_name("io"), "io-shard-1-of-3");
        assert_eq!(s.share(500u32), 167);
        assert_eq!(s.share(32usize), 11);
        assert_eq!(s.share(1u32), 1, "never zero");
    }

    #[test]
    fn bad_shard_values_are_refused() {
        for bad in ["", "1", "3/3", "0/0", "a/2", "1/b", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?}");
        }
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
    }
}
