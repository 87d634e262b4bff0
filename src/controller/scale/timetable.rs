//! When each Integration is next looked at.
//!
//! Every Integration has a next look scheduled for as long as it exists (its
//! renewal, or its expiry), so this table holds one entry per Integration.
//! kube-runtime's scheduler would hold it as a delay-queue slot, a hash-map
//! entry and two copies of the object reference (~0.9 KiB per Integration,
//! 9 MiB at 10,000); an entry here is the cache's key, shared, and a time
//! (~0.1 KiB).
//! Due entries are fed to the controller as triggers; the scheduler then
//! holds only what is due now.
//!
//! Setting a time replaces the previous one: the latest reconcile's decision
//! is the one that counts.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, stream};
use tokio::{sync::Notify, time::Instant};

use crate::controller::IntegrationKey;

#[derive(Default)]
struct Table {
    /// Due time and a tie-breaker, to key.
    by_time: BTreeMap<(Instant, u64), IntegrationKey>,
    /// Key to its entry in `by_time`.
    by_key: HashMap<IntegrationKey, (Instant, u64)>,
    next_seq: u64,
}

/// The next-look times of all Integrations of one controller.
#[derive(Default)]
pub struct Timetable {
    table: Mutex<Table>,
    changed: Notify,
}

impl Timetable {
    /// Looks at `integration` again at `at`, instead of any time set before.
    pub fn set(&self, integration: &IntegrationKey, at: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let seq = table.next_seq;
        table.next_seq += 1;
        let shared = match table.by_key.remove_entry(integration) {
            Some((shared, old)) => {
                table.by_time.remove(&old);
                shared
            }
            None => integration.clone(),
        };
        table.by_time.insert((at, seq), shared.clone());
        table.by_key.insert(shared, (at, seq));
        drop(table);
        // Wakes the stream, which may be sleeping until a later time.
        self.changed.notify_one();
    }

    /// Forgets the next look (an error policy or a deletion decides instead).
    pub fn clear(&self, integration: &IntegrationKey) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = table.by_key.remove(integration) {
            table.by_time.remove(&old);
        }
    }

    /// The time set for `integration`, if any.
    pub fn get(&self, integration: &IntegrationKey) -> Option<Instant> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.by_key.get(integration).map(|(at, _)| *at)
    }

    /// How many looks are scheduled within half a second of `at`: the load
    /// a renewal placed there would join (see
    /// [`schedule::renew_at_least_loaded`](crate::controller::schedule::renew_at_least_loaded)).
    pub fn scheduled_around(&self, at: Instant) -> usize {
        let half = std::time::Duration::from_millis(500);
        let from = at.checked_sub(half).unwrap_or(at);
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.by_time.range((from, 0)..(at + half, 0)).count()
    }

    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns everything due at `now`, and when the next entry is due.
    fn take_due(&self, now: Instant) -> (Vec<IntegrationKey>, Option<Instant>) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while let Some(entry) = table.by_time.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            table.by_key.remove(&key);
            due.push(key);
        }
        if table.by_key.is_empty() {
            // Give back the capacity of a wave that has passed.
            table.by_key.shrink_to_fit();
        }
        (due, table.by_time.first_key_value().map(|((at, _), _)| *at))
    }

    /// The Integrations as they fall due, forever.
    pub fn due(self: Arc<Self>) -> impl Stream<Item = IntegrationKey> + Send + 'static {
        stream::unfold(self, |table| async move {
            loop {
                let (due, next) = table.take_due(Instant::now());
                if !due.is_empty() {
                    return Some((stream::iter(due), table));
                }
                // A `set` since `take_due` has left a permit: no change is missed.
                match next {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = table.changed.notified() => {}
                        }
                    }
                    None => table.changed.notified().await,
                }
            }
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(name: &str) -> IntegrationKey {
        IntegrationKey::new("ns", name)
    }

    #[tokio::test(start_paused = true)]
    async fn integrations_come_due_in_time_order_and_a_new_time_replaces_the_old() {
        let table = Arc::new(Timetable::default());
        let now = Instant::now();
        table.set(&r("late"), now + Duration::from_secs(30));
        table.set(&r("early"), now + Duration::from_secs(10));
        table.set(&r("moved"), now + Duration::from_secs(5));
        // The latest decision counts, even when it is later.
        table.set(&r("moved"), now + Duration::from_secs(20));
        assert_eq!(table.len(), 3);
        let due: Vec<_> = table.clone().due().take(3).collect().await;
        assert_eq!(due, vec![r("early"), r("moved"), r("late")]);
        assert_eq!(Instant::now() - now, Duration::from_secs(30));
        assert!(table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_time_set_while_waiting_wakes_the_stream() {
        let table = Arc::new(Timetable::default());
        let now = Instant::now();
        table.set(&r("a"), now + Duration::from_secs(3600));
        let mut due = Box::pin(table.clone().due());
        let waiting = tokio::spawn(async move { due.next().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        table.set(&r("b"), now + Duration::from_secs(2));
        let first = waiting.await.unwrap();
        assert_eq!(first, Some(r("b")));
        assert_eq!(Instant::now() - now, Duration::from_secs(2));
        assert_eq!(table.get(&r("a")), Some(now + Duration::from_secs(3600)));
    }

    #[test]
    fn the_load_around_a_time_counts_the_looks_within_half_a_second() {
        let table = Timetable::default();
        let now = Instant::now();
        let at = |ms| now + Duration::from_secs(60) + Duration::from_millis(ms);
        for (name, ms) in [("a", 0), ("b", 400), ("c", 499), ("d", 500), ("e", 1200)] {
            table.set(&r(name), at(ms));
        }
        assert_eq!(table.scheduled_around(at(0)), 3, "a, b and c; d is half a second away");
        assert_eq!(table.scheduled_around(at(1000)), 2, "d and e");
        assert_eq!(table.scheduled_around(at(5000)), 0);
        table.clear(&r("b"));
        assert_eq!(table.scheduled_around(at(0)), 2);
    }

    #[test]
    fn cleared_entries_never_come_due() {
        let table = Timetable::default();
        let now = Instant::now();
        table.set(&r("a"), now);
        table.clear(&r("a"));
        assert_eq!(table.take_due(now + Duration::from_secs(1)).0, vec![]);
        assert!(table.is_empty());
    }
}
