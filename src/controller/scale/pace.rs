//! How fast routine renewals may start: a little faster than the timetable
//! has looks due, never in the bursts a stalled control plane releases.
//!
//! When the API server stalls, reconciles waiting on their writes hold every
//! reconcile slot; when it recovers they finish together, and the renewals
//! queued behind them start together: the provider sees the stall as a
//! burst. In the refresh waves of `make bench` (a control plane busy with
//! the operator's writes) such catch-ups made the busiest second at the
//! provider 1.3-1.5 times the rate the renewals were scheduled at. A
//! routine renewal (in the first half of its window) loses nothing by
//! waiting a second, so routine starts are paced at [`HEADROOM`] times the
//! rate at which the timetable has looks due over the next [`HORIZON`]; one
//! over the pace is deferred like a renewal that finds the provider busy.
//! Urgent work (a first issue, a change, a renewal late in its window) is
//! never paced.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// How far ahead the timetable is read for the rate looks are due at.
pub const HORIZON: Duration = Duration::from_secs(10);
/// Routine starts may run this much faster than the looks due: room to
/// catch up on a backlog without repeating it as a burst.
pub const HEADROOM: f64 = 1.2;
/// The pace never drops below this many starts per second (a quiet
/// timetable must not hold back the few renewals it has).
pub const FLOOR_PER_SECOND: f64 = 10.0;
/// The bucket holds at most this much of a second's pace: the largest
/// burst of starts the pace lets through.
const BURST: Duration = Duration::from_millis(200);
/// How often the timetable is read again for the rate.
const RATE_REFRESH: Duration = Duration::from_millis(250);

/// A token bucket whose rate follows the timetable.
#[derive(Debug)]
pub struct RoutinePace {
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Starts per second allowed now.
    rate: f64,
    last_refill: Instant,
    rate_read_at: Option<Instant>,
}

impl Default for RoutinePace {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            bucket: Mutex::new(Bucket {
                tokens: capacity(FLOOR_PER_SECOND),
                rate: FLOOR_PER_SECOND,
                last_refill: now,
                rate_read_at: None,
            }),
        }
    }
}

/// The pace for `due_ahead` looks due within the next [`HORIZON`].
pub fn pace(due_ahead: usize) -> f64 {
    (HEADROOM * due_ahead as f64 / HORIZON.as_secs_f64()).max(FLOOR_PER_SECOND)
}

fn capacity(rate: f64) -> f64 {
    (rate * BURST.as_secs_f64()).max(1.0)
}

impl RoutinePace {
    /// Whether a routine renewal may start at `now`; takes its place in the
    /// pace if so. `due_ahead` counts the looks due between `now` and
    /// `now + HORIZON` (read at most every [`RATE_REFRESH`]).
    pub fn admit(&self, now: Instant, due_ahead: impl FnOnce(Instant, Instant) -> usize) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        if b.rate_read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RATE_REFRESH)
        {
            b.rate = pace(due_ahead(now, now + HORIZON));
            b.rate_read_at = Some(now);
        }
        let elapsed = now.saturating_duration_since(b.last_refill).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(capacity(b.rate));
        b.last_refill = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts admitted in each second of `seconds`, offered `offered` per
    /// 10 ms, with `due_ahead` looks in the timetable's horizon.
    fn admitted_per_second(seconds: u64, offered: usize, due_ahead: usize) -> Vec<usize> {
        let pace = RoutinePace::default();
        let t0 = Instant::now();
        (0..seconds)
            .map(|s| {
                (0..100u64)
                    .map(|tick| t0 + Duration::from_secs(s) + Duration::from_millis(tick * 10))
                    .map(|at| (0..offered).filter(|_| pace.admit(at, |_, _| due_ahead)).count())
                    .sum()
            })
            .collect()
    }

    #[test]
    fn a_backlog_released_at_once_starts_at_the_pace_of_the_timetable() {
        // 150 looks due per second ahead; 1,000 renewals offered per second.
        let per_second = admitted_per_second(5, 10, 1500);
        for n in &per_second[1..] {
            assert!((175..=185).contains(n), "{per_second:?}: 1.2 x 150 per second");
        }
    }

    #[test]
    fn what_the_pace_allows_passes_unhindered() {
        // One renewal per 10 ms (100/s) against a timetable with 150/s due.
        let per_second = admitted_per_second(5, 1, 1500);
        assert_eq!(per_second, vec![100; 5]);
    }

    #[test]
    fn a_quiet_timetable_still_lets_renewals_through_at_the_floor() {
        assert_eq!(pace(0), FLOOR_PER_SECOND);
        let per_second = admitted_per_second(3, 5, 0);
        for n in &per_second[1..] {
            assert!((9..=11).contains(n), "{per_second:?}");
        }
        // The first one at once, after any silence.
        assert!(RoutinePace::default().admit(Instant::now(), |_, _| 0));
    }

    #[test]
    fn the_timetable_is_read_for_the_horizon_ahead_of_now() {
        let pace = RoutinePace::default();
        let now = Instant::now();
        let mut asked = None;
        pace.admit(now, |from, to| {
            asked = Some((from, to));
            0
        });
        assert_eq!(asked, Some((now, now + HORIZON)));
    }
}
