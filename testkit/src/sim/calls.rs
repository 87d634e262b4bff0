//! The requests a simulator received, by route: what tests count.

use std::{collections::HashMap, sync::Mutex, time::Instant};

/// Arrival times of requests, by route (failed ones included).
#[derive(Default)]
pub struct CallLog(Mutex<HashMap<&'static str, Vec<Instant>>>);

impl CallLog {
    pub fn record(&self, route: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route)
            .or_default()
            .push(Instant::now());
    }

    /// Arrival times of the requests to `route`, oldest first.
    pub fn times(&self, route: &str) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests to `route` so far.
    pub fn count(&self, route: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .map_or(0, |v| v.len() as u64)
    }

    /// Requests to all of `routes` so far.
    pub fn total(&self, routes: &[&str]) -> u64 {
        routes.iter().map(|r| self.count(r)).sum()
    }
}
