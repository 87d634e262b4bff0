//! When to renew: `expiresAt - renewBefore + jitter`, as a pure function.
//!
//! The renewal always falls inside the window the user asked for: the jitter
//! spreads renewals over the first half of `[expiresAt - renewBefore,
//! expiresAt)`, never before it. The window itself is at most half the
//! lifetime, so every token is used for at least half its life and no
//! Integration exchanges more than twice per lifetime, whatever
//! `renewBefore` says (an earlier version capped the window at 90% and added
//! the jitter on top of it, so a large `renewBefore` renewed one second after
//! every issue, forever).
//!
//! The jitter is derived from the Integration's uid and the issue time, so it
//! spreads tokens issued in the same second over a window instead of
//! renewing them all at once. The operator offers each renewal every
//! quarter-second of that span and takes the one with the fewest looks
//! already scheduled in it ([`renew_at_least_loaded`]): a burst of issues (a cold start, a
//! restore) then renews flatter than it was issued. The time chosen is
//! written with the credentials, so restarts keep it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Renew-before when the spec says nothing: 30% of the lifetime, at most
/// this. With the jitter inside the window, renewals fall between 70% and
/// 85% of the lifetime (at most 15 to 7.5 minutes before expiry).
pub const DEFAULT_RENEW_BEFORE_CAP: Duration = Duration::from_secs(900);
/// Default share of the lifetime renewed early.
pub const DEFAULT_RENEW_BEFORE_PERCENT: u32 = 30;
/// Share of the renew-before window over which renewals are spread (its
/// first part: a renewal is never later than this share into the window).
const JITTER_SHARE: f64 = 0.5;
/// The largest share of a token's lifetime the renew-before window may
/// cover: a token is used for at least the rest before it is renewed.
pub const MAX_WINDOW_SHARE: f64 = 0.5;
/// Never schedule a renewal sooner than this after issue (a bogus lifetime
/// of a second or less must not turn into a tight refresh loop).
const MIN_RENEW_DELAY: Duration = Duration::from_secs(1);

/// How long before expiry to renew, as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RenewBefore {
    Fixed(Duration),
    Percent(u32),
}

impl RenewBefore {
    /// Parses `10m`, `1h30m`, `90s`, `500ms` or `25%`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p.parse().map_err(|_| format!("invalid percentage {s:?}"))?;
            if p == 0 || p >= 100 {
                return Err(format!("renewBefore percentage must be between 1% and 99%, got {s}"));
            }
            return Ok(RenewBefore::Percent(p));
        }
        parse_duration(s).map(RenewBefore::Fixed)
    }

    /// The renew-before window for a token of `lifetime`: never more than
    /// half the lifetime ([`MAX_WINDOW_SHARE`]), so a token is used for at
    /// least half its life before renewal.
    pub fn window(self, lifetime: Duration) -> Duration {
        let wanted = match self {
            RenewBefore::Fixed(d) => d,
            RenewBefore::Percent(p) => lifetime.mul_f64(f64::from(p) / 100.0),
        };
        wanted.min(lifetime.mul_f64(MAX_WINDOW_SHARE))
    }
}

/// The default renew-before: 30% of the lifetime, capped at 15 minutes.
pub fn default_window(lifetime: Duration) -> Duration {
    RenewBefore::Percent(DEFAULT_RENEW_BEFORE_PERCENT)
        .window(lifetime)
        .min(DEFAULT_RENEW_BEFORE_CAP)
}

/// Parses a Go-style duration (`1h30m`, `90s`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (use e.g. 90s, 10m, 1h30m)");
    if s.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        total = total
            .checked_add(unit.checked_mul(u32::try_from(n).map_err(|_| err())?).ok_or_else(err)?)
            .ok_or_else(err)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// When to renew a token issued at `issued_at` that expires at `expires_at`.
/// `seed` (the Integration's uid) picks the jitter.
pub fn renew_at(
    issued_at: Timestamp,
    expires_at: Timestamp,
    renew_before: Option<RenewBefore>,
    seed: &str,
) -> Timestamp {
    candidate(issued_at, expires_at, renew_before, seed)
}

/// The load of a renewal's place is counted per this much of the wall
/// clock (quarter-seconds from each whole second): fine enough that a
/// second counted from any instant, as a provider may count it, holds about
/// as many renewals as a whole wall-clock second (with whole seconds as the
/// unit, the places within each second were left to chance, and a replay
/// of a measured wave read 1.26x its mean in whole seconds but 1.51x in
/// seconds counted from a quarter past; in quarters, 1.26-1.39x).
pub const LOAD_QUANTUM: Duration = Duration::from_millis(250);
/// At most this many places in its span are offered to a renewal: one a
/// quantum (1,080 for a 30-minute token's 270 s span, 1,800 at most with
/// the default renew-before); a wider span offers this many, evenly spread.
pub const MAX_RENEWAL_PLACES: u64 = 2_000;

/// The quantum `at` falls in: quantum `n` begins `n` quanta after the epoch.
pub fn quantum_of(at: Timestamp) -> i128 {
    at.as_nanosecond().div_euclid(LOAD_QUANTUM.as_nanos() as i128)
}

/// Like [`renew_at`], but in the quantum ([`LOAD_QUANTUM`]) of the same
/// span where `load` (how many looks are already scheduled in a time's
/// quantum) is least. The places offered are [`renew_at`]'s and the ones a
/// whole number of quanta before and after it whose quantum lies wholly in
/// the span; the search starts at [`renew_at`]'s place, so a lone token
/// renews exactly there, and goes forwards, then backwards. Tokens issued
/// in a burst then fill their spans evenly instead of repeating the burst's
/// shape (four places drawn at random, the rule before, left 1.5x the mean
/// in a simulated wave; every quantum leaves 1.3x, which is what the spans
/// allow once they overlap). Whole quanta only, and shifts by whole quanta
/// (a token keeps its place within a quantum): the newest quantum a span
/// reaches would otherwise fill at its start (with seconds clipped to the
/// span, a measured wave alternated 200 and 130 renewals a second).
///
/// The quanta are the wall clock's: the caller's `load` must count in the
/// same ones (see [`quantum_of`]).
pub fn renew_at_least_loaded(
    issued_at: Timestamp,
    expires_at: Timestamp,
    renew_before: Option<RenewBefore>,
    seed: &str,
    load: impl Fn(Timestamp) -> usize,
) -> Timestamp {
    let Span { start, length, floor } = span(issued_at, expires_at, renew_before);
    let end = start + signed(length);
    let jittered = renew_at(issued_at, expires_at, renew_before, seed);
    let quanta = u64::try_from(length.as_nanos() / LOAD_QUANTUM.as_nanos()).unwrap_or(u64::MAX);
    let step = if quanta > MAX_RENEWAL_PLACES {
        signed(length.div_f64(MAX_RENEWAL_PLACES as f64))
    } else {
        signed(LOAD_QUANTUM)
    };
    let quantum = i128::try_from(LOAD_QUANTUM.as_nanos()).unwrap_or(1);
    // Its whole quantum inside the span, and not before the floor.
    let whole = |at: &Timestamp| {
        let begins = quantum_of(*at) * quantum;
        begins >= start.as_nanosecond() && begins + quantum <= end.as_nanosecond() && *at >= floor
    };
    let shifted = |k: i32| jittered.checked_add(step * k).ok();
    let later = (1..).map_while(move |k| shifted(k).filter(|at| *at < end));
    let earlier = (1..).map_while(move |k| shifted(-k).filter(|at| *at >= start));
    std::iter::once(jittered)
        .chain(later.chain(earlier).filter(whole))
        .min_by_key(|at| load(*at))
        .unwrap_or(jittered)
}

/// Where a token's renewals may fall: from `start` for `length` (the first
/// half of the renew-before window), never before `floor`.
struct Span {
    start: Timestamp,
    length: Duration,
    floor: Timestamp,
}

fn span(issued_at: Timestamp, expires_at: Timestamp, renew_before: Option<RenewBefore>) -> Span {
    let lifetime = Duration::try_from(expires_at.duration_since(issued_at)).unwrap_or(Duration::ZERO);
    let window = match renew_before {
        Some(rb) => rb.window(lifetime),
        None => default_window(lifetime),
    };
    Span {
        start: expires_at - signed(window),
        length: window.mul_f64(JITTER_SHARE),
        floor: issued_at + signed(MIN_RENEW_DELAY.min(lifetime)),
    }
}

/// The place in the span the seed picks.
fn candidate(issued_at: Timestamp, expires_at: Timestamp, renew_before: Option<RenewBefore>, seed: &str) -> Timestamp {
    let Span { start, length, floor } = span(issued_at, expires_at, renew_before);
    (start + signed(length.mul_f64(unit_fraction(seed, issued_at)))).max(floor)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// A number in [0, 1) derived from the seed and the issue time (FNV-1a).
fn unit_fraction(seed: &str, issued_at: Timestamp) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(issued_at.as_second().to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_durations_and_percentages() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(RenewBefore::parse("25%").unwrap(), RenewBefore::Percent(25));
        assert!(RenewBefore::parse("100%").is_err());
        assert!(RenewBefore::parse("0%").is_err());
    }

    #[test]
    fn renewal_lands_in_the_window_before_expiry() {
        let issued = t("2026-01-01T00:00:00Z");
        let expires = t("2026-01-01T01:00:00Z");
        let at = renew_at(
            issued,
            expires,
            Some(RenewBefore::Fixed(Duration::from_secs(600))),
            "uid-1",
        );
        // 10m before expiry at the earliest; the jitter spreads inside the
        // window (up to 5m later), never before it.
        assert!(
            at >= t("2026-01-01T00:50:00Z") && at <= t("2026-01-01T00:55:00Z"),
            "{at}"
        );
    }

    #[test]
    fn default_is_thirty_percent_capped_at_fifteen_minutes() {
        let issued = t("2026-01-01T00:00:00Z");
        let short = renew_at(issued, t("2026-01-01T00:00:10Z"), None, "u");
        assert!(
            short >= t("2026-01-01T00:00:07Z") && short <= t("2026-01-01T00:00:08.5Z"),
            "{short}"
        );
        let long = renew_at(issued, t("2026-01-02T00:00:00Z"), None, "u");
        assert!(
            long >= t("2026-01-01T23:45:00Z") && long <= t("2026-01-01T23:52:30Z"),
            "{long}"
        );
    }

    #[test]
    fn renew_before_longer_than_the_lifetime_still_uses_the_token_first() {
        let issued = t("2026-01-01T00:00:00Z");
        let at = renew_at(
            issued,
            t("2026-01-01T00:01:00Z"),
            Some(RenewBefore::Fixed(Duration::from_secs(3600))),
            "u",
        );
        // The window is capped at half the lifetime: renewed 30-45 s in.
        assert!(at >= t("2026-01-01T00:00:30Z"), "{at}");
        assert!(at <= t("2026-01-01T00:00:45Z"), "{at}");
    }

    /// The loop the issue reported: `5m` on 5-minute tokens and `25m` on
    /// 30-minute tokens renewed one second after every issue for most uids.
    #[test]
    fn a_renew_before_as_long_as_the_lifetime_is_no_refresh_loop() {
        let issued = t("2026-01-01T00:00:00Z");
        for (lifetime, rb) in [(300, 300), (1800, 1500), (60, 3600)] {
            for i in 0..1000 {
                let expires = issued + SignedDuration::from_secs(lifetime);
                let at = renew_at(
                    issued,
                    expires,
                    Some(RenewBefore::Fixed(Duration::from_secs(rb as u64))),
                    &format!("uid-{i}"),
                );
                let used = at.duration_since(issued).as_secs_f64();
                assert!(
                    used >= lifetime as f64 / 2.0,
                    "lifetime {lifetime}s renewBefore {rb}s: renewed {used}s after issue"
                );
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn renew_before() -> impl Strategy<Value = Option<RenewBefore>> {
            prop_oneof![
                Just(None),
                (1u32..100).prop_map(|p| Some(RenewBefore::Percent(p))),
                (0u64..200_000_000).prop_map(|ms| Some(RenewBefore::Fixed(Duration::from_millis(ms)))),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// For every lifetime, renewBefore and uid: the renewal falls
            /// inside the window the user asked for (capped at half the
            /// lifetime), the token is used for at least half its life (or
            /// one second, for lifetimes shorter than two), and the jitter
            /// never moves it out of the window.
            #[test]
            fn renewal_stays_inside_the_asked_window(
                lifetime_ms in 1u64..(40 * 24 * 3600 * 1000),
                rb in renew_before(),
                uid in "[a-f0-9-]{1,36}",
                issued_s in 1_600_000_000i64..2_000_000_000,
                load_seed in any::<i64>(),
            ) {
                let issued = Timestamp::from_second(issued_s).unwrap();
                let lifetime = Duration::from_millis(lifetime_ms);
                let expires = issued + signed(lifetime);
                // Whichever place the load picks.
                let at = renew_at_least_loaded(issued, expires, rb, &uid, |at| {
                    (at.as_millisecond().wrapping_mul(load_seed) >> 7) as usize % 5
                });
                let window = match rb {
                    Some(rb) => rb.window(lifetime),
                    None => default_window(lifetime),
                };
                let used = Duration::try_from(at.duration_since(issued)).unwrap();
                // Used for at least half its life: at most two exchanges per lifetime.
                let half_life = lifetime.mul_f64(1.0 - MAX_WINDOW_SHARE);
                prop_assert!(used + Duration::from_millis(1) >= half_life, "used {used:?} of {lifetime:?}");
                // Never after expiry.
                prop_assert!(at <= expires);
                // Inside the asked window: not earlier than `expires - window`,
                // and at most half the window later (unless the one-second floor applies).
                let window_start = expires - signed(window);
                if used > MIN_RENEW_DELAY {
                    prop_assert!(at >= window_start - SignedDuration::from_millis(1), "{at} before the window starting {window_start}");
                    prop_assert!(at <= window_start + signed(window.mul_f64(JITTER_SHARE)) + SignedDuration::from_millis(1));
                }
                // A requested window within the cap is honoured exactly.
                if let Some(RenewBefore::Fixed(d)) = rb
                    && d <= lifetime.mul_f64(MAX_WINDOW_SHARE)
                {
                    prop_assert_eq!(window, d);
                }
            }
        }
    }

    #[test]
    fn a_burst_renews_spread_over_its_window_where_the_load_is_least() {
        // 10,000 tokens issued over 50 s, most of them early (as a cold
        // start against a busy apiserver issues them), renewing in a 22.5 s
        // jitter window: with one place each, the renewals repeat the
        // burst's shape; offered every second, each takes the emptiest.
        let start = t("2026-01-01T00:00:00Z");
        let lifetime = SignedDuration::from_secs(150);
        let issued: Vec<Timestamp> = (0..10_000u32)
            .map(|i| {
                let share = f64::from(i) / 10_000.0;
                start + SignedDuration::from_secs_f64(50.0 * share * share)
            })
            .collect();
        /// A scheduler: issue time, uid and the renewals per second so far.
        type Choose<'a> = &'a dyn Fn(Timestamp, &str, &BTreeMap<i64, usize>) -> Timestamp;
        let peak_to_mean = |choose: Choose| {
            let mut seconds = BTreeMap::new();
            for (i, at) in issued.iter().enumerate() {
                let renew = choose(*at, &format!("uid-{i}"), &seconds);
                *seconds.entry(renew.as_second()).or_insert(0usize) += 1;
            }
            let span = seconds.keys().last().unwrap() - seconds.keys().next().unwrap() + 1;
            let busiest = *seconds.values().max().unwrap() as f64;
            busiest / (10_000.0 / span as f64)
        };
        let alone = peak_to_mean(&|at, uid, _| renew_at(at, at + lifetime, None, uid));
        let least_loaded = peak_to_mean(&|at, uid, seconds| {
            renew_at_least_loaded(at, at + lifetime, None, uid, |c| {
                seconds.get(&c.as_second()).copied().unwrap_or(0)
            })
        });
        assert!(alone > 2.0, "the burst's shape: {alone:.2}x the mean");
        // 1.19x; four places drawn at random (the rule before) left 1.4x.
        assert!(least_loaded < 1.3, "{least_loaded:.2}x the mean (alone: {alone:.2}x)");
        // With nothing else scheduled, the place is renew_at's.
        let nothing_scheduled = renew_at_least_loaded(start, start + lifetime, None, "uid-1", |_| 0);
        assert_eq!(nothing_scheduled, renew_at(start, start + lifetime, None, "uid-1"));
    }

    #[test]
    fn renewals_placed_by_load_fill_every_second_evenly_however_it_is_counted() {
        // 2,000 tokens issued in the same second, placed one after another
        // (load counted per quantum, as the timetable counts it): every
        // second of the span holds about as many, counted from the whole
        // second or from any other instant, as a provider may count.
        let issued = t("2026-01-01T00:00:00.250Z");
        let expires = issued + SignedDuration::from_secs(150);
        let mut quanta = BTreeMap::new();
        let mut places = Vec::new();
        for i in 0..2_000 {
            let at = renew_at_least_loaded(issued, expires, None, &format!("uid-{i}"), |at| {
                quanta.get(&quantum_of(at)).copied().unwrap_or(0)
            });
            *quanta.entry(quantum_of(at)).or_insert(0usize) += 1;
            places.push(at);
        }
        // The span: 22.5 s from 105 s after issue (45 s before expiry).
        let (first, last) = (places.iter().min().unwrap(), places.iter().max().unwrap());
        assert!(
            *first >= t("2026-01-01T00:01:45.250Z") && *last < t("2026-01-01T00:02:07.750Z"),
            "{first} {last}"
        );
        for offset_ms in [0, 100, 250, 500, 730] {
            let mut seconds = BTreeMap::new();
            for at in &places {
                let second = (at.as_millisecond() - offset_ms).div_euclid(1000);
                *seconds.entry(second).or_insert(0usize) += 1;
            }
            // Inner seconds only: the first and last are cut by the span.
            let inner: Vec<usize> = seconds.values().copied().skip(1).collect();
            let inner = &inner[..inner.len() - 1];
            // About 89 a second (2,000 over 22.5 s); within a quantum the
            // places are the jitter's, so a second counted from elsewhere
            // varies by a few.
            let (lo, hi) = (inner.iter().min().unwrap(), inner.iter().max().unwrap());
            assert!(
                *lo >= 75 && *hi <= 100,
                "from {offset_ms} ms into the second: {seconds:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_tokens_issued_together() {
        let issued = t("2026-01-01T00:00:00Z");
        let expires = t("2026-01-01T01:00:00Z");
        let mut seconds = std::collections::BTreeMap::new();
        for i in 0..10_000 {
            let at = renew_at(issued, expires, None, &format!("uid-{i}"));
            *seconds.entry(at.as_second()).or_insert(0u32) += 1;
        }
        // 10,000 renewals over a 300 s window: about 33 per second; none near all of them.
        let busiest = seconds.values().max().copied().unwrap_or(0);
        assert!(seconds.len() > 250, "spread over {} seconds only", seconds.len());
        assert!(busiest < 100, "busiest second has {busiest} renewals");
    }
}
