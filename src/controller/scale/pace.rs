//! How fast routine renewals start: at most a little above the rate the
//! timetable schedules, however many fall behind.
//!
//! Renewals are placed so that the schedule is flat (see
//! [`renew_at_least_loaded`](crate::controller::schedule::renew_at_least_loaded)),
//! but execution is not: when the API server stalls, the reconciles waiting
//! on it finish together and the renewals queued behind them would all call
//! the provider in the same second. A routine renewal (early in its window,
//! see [`plan::routine_renewal`](crate::controller::plan::routine_renewal))
//! therefore asks for a turn: the pace hands out start times no closer than
//! `1 / rate` apart (a generic cell rate algorithm: a turn within
//! [`TOLERANCE`] of now starts at once), where `rate` is [`HEADROOM`] times
//! the looks the timetable scheduled within [`RATE_SPAN`] either side of
//! now (come due or still to come; looks put off by the pace itself are
//! not counted, or a backlog would raise its own rate). A renewal whose
//! turn is later is looked at again at that turn, which is reserved for it,
//! and gives its reconcile slot back meanwhile. A turn never lies
//! past the end of the routine part of the window: a renewal that would
//! wait that long comes back when it has become urgent, and urgent work is
//! never paced.
//!
//! A turn admits a renewal at the start of its look, before its input is
//! read from the API server. A stall there can bunch renewals admitted
//! seconds apart, so their provider calls are spaced too, at the same
//! rate, by a short wait just before the call ([`RoutinePace::call_at`]).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::controller::IntegrationKey;

/// How far above the schedule's rate routine renewals may start: room for
/// a catch-up after a stall without the provider's busiest second growing
/// past it.
pub const HEADROOM: f64 = 1.25;
/// Routine renewals a second that the pace always allows, so that a small
/// deployment, whose schedule holds few looks, renews without waiting.
pub const MIN_RATE: f64 = 10.0;
/// The schedule's rate is read over this much of the timetable either side
/// of now: short enough to follow the shape of a refresh wave (a minute
/// ahead would read its last seconds as half their rate), long enough to
/// span a stall.
pub const RATE_SPAN: Duration = Duration::from_secs(5);
/// A turn this close starts at once: the pace's burst.
pub const TOLERANCE: Duration = Duration::from_millis(50);
/// How often the rate is read from the timetable again.
const RATE_REFRESH: Duration = Duration::from_millis(250);
/// Reservations older than this are forgotten (their Integration was
/// deleted, or looked at for another reason, before its turn).
const RESERVATION_KEPT: Duration = Duration::from_secs(60);

/// When a routine renewal may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Now.
    Now,
    /// Not before this instant: look again then.
    At(Instant),
}

impl Turn {
    /// A start at `start`, seen at `now`: one within [`TOLERANCE`] is now.
    fn starting(start: Instant, now: Instant) -> Self {
        if start <= now + TOLERANCE {
            Turn::Now
        } else {
            Turn::At(start)
        }
    }
}

struct State {
    /// Turns.
    next_start: Spacing,
    /// Routine provider calls.
    next_call: Spacing,
    /// Turns handed to renewals told to come back.
    reserved: HashMap<IntegrationKey, Instant>,
    /// Turns a second, and until when that figure is used.
    rate: f64,
    rate_read_until: Instant,
    pruned_at: Instant,
}

/// Starts no closer than `1 / rate` apart: the earliest the next may have.
struct Spacing(Instant);

impl Spacing {
    /// The earliest start, asked at `now`.
    fn earliest(&self, now: Instant) -> Instant {
        self.0.max(now)
    }

    /// Takes a start at `start` (one [`Spacing::earliest`] gave).
    fn take(&mut self, start: Instant, rate: f64) {
        self.0 = start + Duration::from_secs_f64(1.0 / rate);
    }
}

/// The turns of routine renewals (one per controller).
pub struct RoutinePace {
    state: Mutex<State>,
}

impl Default for RoutinePace {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                next_start: Spacing(now),
                next_call: Spacing(now),
                reserved: HashMap::new(),
                rate: MIN_RATE,
                rate_read_until: now,
                pruned_at: now,
            }),
        }
    }
}

impl RoutinePace {
    /// The turn of `integration`'s routine renewal, looked at `now`.
    /// `routine_until` is when the renewal stops being routine;
    /// `scheduled_within` counts the looks the timetable scheduled between
    /// two instants (read at most once per [`RATE_REFRESH`]).
    pub fn turn(
        &self,
        integration: &IntegrationKey,
        now: Instant,
        routine_until: Instant,
        scheduled_within: impl FnOnce(Instant, Instant) -> usize,
    ) -> Turn {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now >= state.pruned_at + RESERVATION_KEPT {
            state.pruned_at = now;
            state.reserved.retain(|_, at| *at + RESERVATION_KEPT > now);
        }
        if let Some(&at) = state.reserved.get(integration) {
            let turn = Turn::starting(at.min(routine_until), now);
            // Looked at before its turn (a watch event): the turn stands.
            if turn == Turn::Now {
                state.reserved.remove(integration);
            }
            return turn;
        }
        if now >= state.rate_read_until {
            let from = now.checked_sub(RATE_SPAN).unwrap_or(now);
            let looks = scheduled_within(from, now + RATE_SPAN) as f64;
            state.rate = (HEADROOM * looks / (2.0 * RATE_SPAN.as_secs_f64())).max(MIN_RATE);
            state.rate_read_until = now + RATE_REFRESH;
        }
        let start = state.next_start.earliest(now);
        if start > routine_until {
            // It becomes urgent before its turn: no turn is taken, so the
            // renewals behind it are not held back by one that will not use it.
            return Turn::starting(routine_until, now);
        }
        let rate = state.rate;
        state.next_start.take(start, rate);
        let turn = Turn::starting(start, now);
        if turn != Turn::Now {
            state.reserved.insert(integration.clone(), start);
        }
        turn
    }

    /// When an admitted routine renewal, ready to call the provider at
    /// `now`, may call it: no closer than `1 / rate` after the previous
    /// one (within [`TOLERANCE`], at once).
    pub fn call_at(&self, now: Instant) -> Instant {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (start, rate) = (state.next_call.earliest(now), state.rate);
        state.next_call.take(start, rate);
        match Turn::starting(start, now) {
            Turn::Now => now,
            Turn::At(at) => at,
        }
    }

    /// Renewals told to come back that have not yet.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reserved.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> IntegrationKey {
        IntegrationKey::new("ns", &format!("i{i}"))
    }

    /// When each renewal started, each coming back at the turn it was given.
    fn run(pace: &RoutinePace, arrivals: &[(Instant, usize)], looks: usize, routine_for: Duration) -> Vec<Instant> {
        let mut starts = Vec::new();
        let mut queue: Vec<(Instant, usize)> = arrivals.to_vec();
        while !queue.is_empty() {
            queue.sort_by_key(|(at, _)| *at);
            let (now, i) = queue.remove(0);
            match pace.turn(&key(i), now, now + routine_for, |_, _| looks) {
                Turn::Now => starts.push(now),
                Turn::At(at) => {
                    assert!(at > now, "a later turn is later");
                    queue.push((at, i));
                }
            }
        }
        starts
    }

    fn busiest_second(starts: &[Instant]) -> usize {
        let mut starts = starts.to_vec();
        starts.sort();
        // Every window of one second that begins at a start.
        (0..starts.len())
            .map(|i| {
                starts[i..]
                    .iter()
                    .take_while(|s| **s < starts[i] + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_renewal_starts_at_once() {
        let pace = RoutinePace::default();
        let now = Instant::now();
        assert_eq!(
            pace.turn(&key(0), now, now + Duration::from_secs(60), |_, _| 0),
            Turn::Now
        );
        assert_eq!(pace.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_after_a_stall_starts_at_the_schedules_rate_with_headroom() {
        // 100 looks a second scheduled; a stall left 600 renewals due at
        // once. They start no faster than 125 a second (HEADROOM), all
        // of them, each at its reserved turn.
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        let arrivals: Vec<_> = (0..600).map(|i| (t0, i)).collect();
        let starts = run(&pace, &arrivals, 1_000, Duration::from_secs(600));
        assert_eq!(starts.len(), 600, "every renewal starts");
        let busiest = busiest_second(&starts);
        assert!(
            (124..=132).contains(&busiest),
            "busiest second {busiest}, want about 125"
        );
        let last = starts.iter().max().unwrap().duration_since(t0);
        assert!(
            last < Duration::from_secs(5),
            "the backlog is done within 600/125 s: {last:?}"
        );
        assert_eq!(pace.waiting(), 0, "every reserved turn was used");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_schedule_still_renews_at_the_minimum_rate() {
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        let arrivals: Vec<_> = (0..30).map(|i| (t0, i)).collect();
        let starts = run(&pace, &arrivals, 3, Duration::from_secs(600));
        assert_eq!(starts.len(), 30);
        let busiest = busiest_second(&starts);
        assert!((10..=11).contains(&busiest), "busiest second {busiest}, want MIN_RATE");
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_never_waits_past_the_routine_part_of_its_window() {
        // 1,000 due at once, routine for 2 more seconds: those whose turn
        // would come later are told to come back when they are urgent (and
        // urgent work is not paced), and take no turn from the others.
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(2);
        let mut at_end = 0;
        for i in 0..1_000 {
            match pace.turn(&key(i), t0, until, |_, _| 1_000) {
                Turn::Now => {}
                Turn::At(at) if at == until => at_end += 1,
                Turn::At(at) => assert!(at < until),
            }
        }
        assert!(
            (740..=760).contains(&at_end),
            "{at_end} sent to the end of the routine window"
        );
        assert!(pace.waiting() <= 250);
        // At the end, one without a turn goes at once (never put off to
        // an instant that has come: that would look again and again).
        assert_eq!(pace.turn(&key(5_000), until, until, |_, _| 1_000), Turn::Now);
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_bunched_after_their_turns_call_the_provider_spaced() {
        // 100 a second scheduled: turns 8 ms apart (125/s). A stall after
        // the turns holds 128 of them until the same instant; their calls
        // still go out no faster than the pace.
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(600);
        let mut at = t0;
        for i in 0..128 {
            if let Turn::At(turn) = pace.turn(&key(i), at, until, |_, _| 1_000) {
                at = turn;
                assert_eq!(pace.turn(&key(i), at, until, |_, _| 1_000), Turn::Now);
            }
        }
        let released = at + Duration::from_secs(3);
        let calls: Vec<Instant> = (0..128).map(|_| pace.call_at(released)).collect();
        let busiest = busiest_second(&calls);
        assert!(
            (124..=128).contains(&busiest),
            "busiest second {busiest}, want about 125"
        );
        assert_eq!(calls[0], released, "the first goes at once");
        // Calls that come in their own time do not wait.
        let later = released + Duration::from_secs(10);
        assert_eq!(pace.call_at(later), later);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_looked_at_before_its_turn_keeps_it() {
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(600);
        for i in 0..50 {
            pace.turn(&key(i), t0, until, |_, _| 0);
        }
        let Turn::At(turn) = pace.turn(&key(99), t0, until, |_, _| 0) else {
            panic!("the 51st at 10 a second waits")
        };
        // A watch event brings it back early: same turn, no new one taken.
        let early = t0 + Duration::from_secs(1);
        assert_eq!(pace.turn(&key(99), early, until, |_, _| 0), Turn::At(turn));
        assert_eq!(pace.turn(&key(99), turn, until, |_, _| 0), Turn::Now);
        assert_eq!(pace.waiting(), 49, "keys 1-49 still hold theirs");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_follows_the_timetable() {
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        let mut asked = None;
        pace.turn(&key(0), t0, t0 + Duration::from_secs(600), |from, to| {
            asked = Some((from, to));
            200
        });
        assert_eq!(asked, Some((t0 - RATE_SPAN, t0 + RATE_SPAN)));
        // 200 looks in 10 s: 20 a second, 25 with headroom, 40 ms apart;
        // the second turn is within TOLERANCE, the third is not.
        let until = t0 + Duration::from_secs(600);
        assert_eq!(pace.turn(&key(1), t0, until, |_, _| 200), Turn::Now);
        let Turn::At(third) = pace.turn(&key(2), t0, until, |_, _| 200) else {
            panic!("the third turn is 80 ms away")
        };
        let away = third.duration_since(t0).as_secs_f64();
        assert!((0.0799..0.0801).contains(&away), "{away}");
    }
}
