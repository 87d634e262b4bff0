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
//!
//! The table also counts looks per quantum: the scheduled ones still to come
//! (the load a renewal placed there would join) and, for the last minute,
//! those that came due (with the former, the schedule's own rate around
//! now, which [`pace`](super::pace) paces routine renewals to). A look put
//! off to a later turn ([`Timetable::put_off`]) is not counted: it was
//! counted where it was scheduled.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, stream};
use tokio::{sync::Notify, time::Instant};

use crate::controller::IntegrationKey;

struct Table {
    /// Due time and a tie-breaker, to key.
    by_time: BTreeMap<(Instant, u64), IntegrationKey>,
    /// Key to its entry in `by_time`. The tie-breaker's top bit
    /// ([`PUT_OFF`]) marks a look put off, which no quantum counts.
    by_key: HashMap<IntegrationKey, (Instant, u64)>,
    /// How many looks fall in each quantum
    /// ([`LOAD_QUANTUM`](crate::controller::schedule::LOAD_QUANTUM)),
    /// counted from `epoch`: the load a renewal placed there would join. A
    /// few thousand entries at most (one per quantum that has a look),
    /// whatever N is.
    per_quantum: HashMap<u64, u32>,
    /// How many scheduled looks came due in each quantum of the last
    /// [`CAME_DUE_KEPT`].
    came_due: BTreeMap<u64, u32>,
    /// An instant at a whole wall-clock second, so that these quanta are
    /// the wall clock's, the ones
    /// [`renew_at_least_loaded`](crate::controller::schedule::renew_at_least_loaded)
    /// places renewals in.
    epoch: Instant,
    next_seq: u64,
}

/// The tie-breaker bit of a look put off (not counted in any quantum).
const PUT_OFF: u64 = 1 << 63;
/// How long the looks that came due are counted.
const CAME_DUE_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

impl Table {
    fn quantum(&self, at: Instant) -> u64 {
        let quantum = crate::controller::schedule::LOAD_QUANTUM.as_nanos();
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos() / quantum).unwrap_or(u64::MAX)
    }

    fn insert(&mut self, integration: IntegrationKey, at: Instant, counted: bool) {
        let seq = self.next_seq | if counted { 0 } else { PUT_OFF };
        self.next_seq += 1;
        self.by_time.insert((at, seq), integration.clone());
        self.by_key.insert(integration, (at, seq));
        if counted {
            *self.per_quantum.entry(self.quantum(at)).or_default() += 1;
        }
    }

    /// Removes the look of `integration`, returning the key's shared copy.
    fn remove(&mut self, integration: &IntegrationKey) -> Option<IntegrationKey> {
        let (shared, old) = self.by_key.remove_entry(integration)?;
        self.by_time.remove(&old);
        self.uncount(old);
        Some(shared)
    }

    /// Takes a look out of its quantum's count (unless it was put off).
    /// Returns the quantum it was counted in.
    fn uncount(&mut self, (at, seq): (Instant, u64)) -> Option<u64> {
        if seq & PUT_OFF != 0 {
            return None;
        }
        let quantum = self.quantum(at);
        if let Some(n) = self.per_quantum.get_mut(&quantum) {
            *n -= 1;
            if *n == 0 {
                self.per_quantum.remove(&quantum);
            }
        }
        Some(quantum)
    }

    fn in_quantum(&self, at: Instant) -> usize {
        self.per_quantum.get(&self.quantum(at)).map_or(0, |n| *n as usize)
    }
}

/// The next-look times of all Integrations of one controller.
pub struct Timetable {
    table: Mutex<Table>,
    changed: Notify,
}

impl Default for Timetable {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table {
                by_time: BTreeMap::new(),
                by_key: HashMap::new(),
                per_quantum: HashMap::new(),
                came_due: BTreeMap::new(),
                epoch: whole_wall_clock_second(),
                next_seq: 0,
            }),
            changed: Notify::new(),
        }
    }
}

/// The latest instant at which the wall clock read a whole second.
fn whole_wall_clock_second() -> Instant {
    let (monotonic, wall) = (Instant::now(), jiff::Timestamp::now());
    let into_second = std::time::Duration::from_nanos(u64::try_from(wall.subsec_nanosecond()).unwrap_or(0));
    monotonic.checked_sub(into_second).unwrap_or(monotonic)
}

impl Timetable {
    /// Looks at `integration` again at `at`, instead of any time set before.
    pub fn set(&self, integration: &IntegrationKey, at: Instant) {
        self.set_by_load(integration, |_| at);
    }

    /// Looks at `integration` again at `at`, a look that was scheduled
    /// earlier and is put off: it adds to no quantum's count.
    pub fn put_off(&self, integration: &IntegrationKey, at: Instant) {
        self.place(integration, false, |_| at);
    }

    /// Looks at `integration` again at the time `choose` picks, instead of
    /// any time set before. `choose` is given how many looks are already
    /// scheduled in the quantum of a time (this Integration's own look left
    /// out), and runs under the table's lock: renewals placed at the same
    /// moment by concurrent reconciles see each other's places instead of
    /// all taking the one that looked least loaded to each of them.
    pub fn set_by_load(
        &self,
        integration: &IntegrationKey,
        choose: impl FnOnce(&dyn Fn(Instant) -> usize) -> Instant,
    ) -> Instant {
        self.place(integration, true, choose)
    }

    /// Replaces the look of `integration` with the one `choose` picks,
    /// counted in its quantum or not.
    fn place(
        &self,
        integration: &IntegrationKey,
        counted: bool,
        choose: impl FnOnce(&dyn Fn(Instant) -> usize) -> Instant,
    ) -> Instant {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let shared = table.remove(integration).unwrap_or_else(|| integration.clone());
        let at = choose(&|at| table.in_quantum(at));
        table.insert(shared, at, counted);
        drop(table);
        // Wakes the stream, which may be sleeping until a later time.
        self.changed.notify_one();
        at
    }

    /// Forgets the next look (an error policy or a deletion decides instead).
    pub fn clear(&self, integration: &IntegrationKey) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(integration);
    }

    /// The time set for `integration`, if any.
    pub fn get(&self, integration: &IntegrationKey) -> Option<Instant> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.by_key.get(integration).map(|(at, _)| *at)
    }

    /// How many looks were scheduled from `from` up to `to`, whether still
    /// to come or come due (within the last minute), put-off ones left out.
    /// Counted by whole quanta: a few dozen lookups whatever N is.
    pub fn scheduled_within(&self, from: Instant, to: Instant) -> usize {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let (from, to) = (table.quantum(from), table.quantum(to));
        let to_come: usize = (from..to)
            .map(|q| table.per_quantum.get(&q).map_or(0, |n| *n as usize))
            .sum();
        let came: usize = table.came_due.range(from..to).map(|(_, n)| *n as usize).sum();
        to_come + came
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
            let (look, key) = entry.remove_entry();
            table.by_key.remove(&key);
            if let Some(quantum) = table.uncount(look) {
                *table.came_due.entry(quantum).or_default() += 1;
            }
            due.push(key);
        }
        if !due.is_empty() {
            let kept_from = table.quantum(now.checked_sub(CAME_DUE_KEPT).unwrap_or(now));
            table.came_due = table.came_due.split_off(&kept_from);
        }
        if table.by_key.is_empty() {
            // Give back the capacity of a wave that has passed.
            table.by_key.shrink_to_fit();
            table.per_quantum.shrink_to_fit();
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

    /// The load each `at` would join, as `set_by_load` shows it.
    fn loads(table: &Timetable, ats: &[Instant]) -> Vec<usize> {
        let mut seen = Vec::new();
        table.set_by_load(&r("probe"), |load| {
            seen = ats.iter().map(|at| load(*at)).collect();
            ats[0]
        });
        table.clear(&r("probe"));
        seen
    }

    #[test]
    fn the_load_of_a_quantum_counts_its_looks_and_forgets_moved_and_cleared_ones() {
        let table = Timetable::default();
        let base = Instant::now() + Duration::from_secs(60);
        let at = |ms| base + Duration::from_millis(ms);
        for (name, ms) in [("a", 1000), ("b", 1100), ("c", 1900), ("d", 2000), ("e", 2200)] {
            table.set(&r(name), at(ms));
        }
        // Quanta are the wall clock's, so `base` may fall anywhere in one:
        // times a quantum apart are quanta in a row, which hold every look.
        let quanta: Vec<Instant> = (0..=12).map(|q| at(q * 250)).collect();
        let total: usize = loads(&table, &quanta).iter().sum();
        assert_eq!(total, 5, "every look is in one quantum");
        table.set(&r("a"), at(60_000));
        table.clear(&r("b"));
        assert_eq!(loads(&table, &quanta).iter().sum::<usize>(), 3, "b cleared, a moved");
        assert_eq!(loads(&table, &[at(60_000)]), vec![1]);
        assert_eq!(loads(&table, &[at(300_000)]), vec![0]);
    }

    #[test]
    fn its_quanta_are_the_wall_clocks() {
        let table = Timetable::default();
        let (monotonic, wall) = (Instant::now(), jiff::Timestamp::now());
        let second = jiff::Timestamp::from_second(wall.as_second() + 60).unwrap();
        let at = |ms: i64| {
            let at = second + jiff::SignedDuration::from_millis(ms);
            monotonic + Duration::try_from(at.duration_since(wall)).unwrap()
        };
        for (name, ms) in [("a", 20), ("b", 230), ("c", 270)] {
            table.set(&r(name), at(ms));
        }
        // a and b share the wall clock's first quarter of the second, c is
        // in the next.
        assert_eq!(loads(&table, &[at(125), at(375), at(-125)]), vec![2, 1, 0]);
    }

    #[test]
    fn concurrent_placements_see_each_other() {
        let table = Timetable::default();
        let base = Instant::now() + Duration::from_secs(60);
        let seconds: Vec<Instant> = (0..4).map(|s| base + Duration::from_secs(s)).collect();
        // Each takes the least loaded of four places: four placements
        // fill all four instead of all taking the first.
        for name in ["a", "b", "c", "d"] {
            table.set_by_load(&r(name), |load| *seconds.iter().min_by_key(|at| load(**at)).unwrap());
        }
        assert_eq!(loads(&table, &seconds), vec![1, 1, 1, 1]);
        // Its own look is left out when an Integration is placed again.
        let again = table.set_by_load(&r("a"), |load| *seconds.iter().min_by_key(|at| load(**at)).unwrap());
        assert_eq!(again, seconds[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn scheduled_within_counts_the_quanta_of_a_stretch_come_due_or_to_come_but_not_put_off() {
        let table = Timetable::default();
        let base = Instant::now() + Duration::from_secs(60);
        for i in 0..100 {
            // One look every 100 ms for 10 s.
            table.set(&r(&format!("l{i}")), base + Duration::from_millis(i * 100));
        }
        let (from, to) = (base - Duration::from_secs(1), base + Duration::from_secs(11));
        assert_eq!(table.scheduled_within(from, to), 100);
        // Five seconds hold about 50, give or take the quanta at its ends.
        let half = table.scheduled_within(base + Duration::from_secs(2), base + Duration::from_secs(7));
        assert!((48..=52).contains(&half), "{half}");
        let later = (base + Duration::from_secs(20), base + Duration::from_secs(80));
        assert_eq!(table.scheduled_within(later.0, later.1), 0);
        // Half of them come due: they are still counted where they were.
        tokio::time::advance(Duration::from_millis(64_950)).await;
        let (due, _) = table.take_due(Instant::now());
        assert_eq!(due.len(), 50);
        assert_eq!(table.scheduled_within(from, to), 100);
        // Put off to later, a look is not counted again.
        for key in &due {
            table.put_off(key, base + Duration::from_secs(8));
        }
        assert_eq!(table.scheduled_within(from, to), 100);
        // Come due over a minute ago, it is forgotten.
        tokio::time::advance(Duration::from_secs(75)).await;
        let (due, _) = table.take_due(Instant::now());
        assert_eq!(due.len(), 100);
        assert_eq!(table.scheduled_within(from, to), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn looks_that_come_due_leave_the_load() {
        let table = Arc::new(Timetable::default());
        let at = Instant::now() + Duration::from_secs(5);
        table.set(&r("a"), at);
        assert_eq!(loads(&table, &[at]), vec![1]);
        let due: Vec<_> = table.clone().due().take(1).collect().await;
        assert_eq!(due, vec![r("a")]);
        assert_eq!(loads(&table, &[at]), vec![0]);
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
