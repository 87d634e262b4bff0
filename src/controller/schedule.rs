//! When to renew: `expiresAt - renewBefore - jitter`, as a pure function.
//!
//! The jitter is derived from the Integration's uid and the issue time, so it
//! is stable across reconciles and restarts yet spreads tokens issued in the
//! same second over a window instead of renewing them all at once.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Renew-before when the spec says nothing: 20% of the lifetime, at most this.
pub const DEFAULT_RENEW_BEFORE_CAP: Duration = Duration::from_secs(600);
/// Default share of the lifetime renewed early.
pub const DEFAULT_RENEW_BEFORE_PERCENT: u32 = 20;
/// Share of the renew-before window over which renewals are spread.
const JITTER_SHARE: f64 = 0.5;
/// Never schedule a renewal sooner than this after issue (a bogus lifetime
/// must not turn into a tight refresh loop).
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
    /// 90% of the lifetime, so a token is used for a while before renewal.
    pub fn window(self, lifetime: Duration) -> Duration {
        let wanted = match self {
            RenewBefore::Fixed(d) => d,
            RenewBefore::Percent(p) => lifetime.mul_f64(f64::from(p) / 100.0),
        };
        wanted.min(lifetime.mul_f64(0.9))
    }
}

/// The default renew-before: 20% of the lifetime, capped at 10 minutes.
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
    let lifetime = Duration::try_from(expires_at.duration_since(issued_at)).unwrap_or(Duration::ZERO);
    let window = match renew_before {
        Some(rb) => rb.window(lifetime),
        None => default_window(lifetime),
    };
    let jitter = window.mul_f64(JITTER_SHARE * unit_fraction(seed, issued_at));
    let earliest = issued_at + signed(MIN_RENEW_DELAY.min(lifetime));
    let at = expires_at - signed(window) - signed(jitter);
    at.max(earliest)
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
        // 10m before expiry, minus up to 5m of jitter.
        assert!(
            at <= t("2026-01-01T00:50:00Z") && at >= t("2026-01-01T00:45:00Z"),
            "{at}"
        );
    }

    #[test]
    fn default_is_twenty_percent_capped_at_ten_minutes() {
        let issued = t("2026-01-01T00:00:00Z");
        let short = renew_at(issued, t("2026-01-01T00:00:10Z"), None, "u");
        assert!(
            short <= t("2026-01-01T00:00:08Z") && short >= t("2026-01-01T00:00:07Z"),
            "{short}"
        );
        let long = renew_at(issued, t("2026-01-02T00:00:00Z"), None, "u");
        assert!(
            long <= t("2026-01-01T23:50:00Z") && long >= t("2026-01-01T23:45:00Z"),
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
        assert!(at >= t("2026-01-01T00:00:01Z"));
        assert!(at < t("2026-01-01T00:01:00Z"));
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
