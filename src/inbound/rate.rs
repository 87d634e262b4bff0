//! A token bucket per source address, bounded in memory. Small on purpose
//! (a few dozen lines instead of a new dependency): the inbound server sees
//! a handful of providers, not the open internet at scale.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Most source addresses tracked at once; beyond, idle buckets are dropped
/// and, if none is idle, new sources are refused until some are.
const MAX_SOURCES: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`; `Err(wait)` when there is none.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = super::source_key(ip);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Err(Duration::from_secs(1));
        };
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&ip) {
            let (rate, burst) = (self.per_second, self.burst);
            // A bucket that has refilled completely carries no information.
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_SOURCES {
                return Err(Duration::from_secs(1));
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_source() {
        let limiter = RateLimiter::new(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(a, t0).is_ok());
        }
        let wait = limiter.check_at(a, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // Another source has its own bucket.
        assert!(limiter.check_at(b, t0).is_ok());
        // Half a second refills one token at 2/s.
        assert!(limiter.check_at(a, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.check_at(a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert!(limiter.check_at("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(limiter.check_at("2001:db8::2".parse().unwrap(), t0).is_err());
        assert!(limiter.check_at("2001:db8:0:1::1".parse().unwrap(), t0).is_ok());
    }
}
