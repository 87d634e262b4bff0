//! Arbitrary JSON as a ClusterProvider spec through `resolve::provider_config`:
//! every accepted endpoint passes the network policy, every duration is
//! positive and small enough to schedule.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use integration_operator::{
    controller::resolve::provider_config, crd::ClusterProviderSpec, providers::http::check_endpoint,
};
use libfuzzer_sys::fuzz_target;

/// The controller's requeue queue (tokio-util DelayQueue) panics beyond 2^36 ms.
const SCHEDULABLE: Duration = Duration::from_millis((1 << 36) - 1);

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<ClusterProviderSpec>(data) else {
        return;
    };
    match provider_config("p", &spec) {
        Ok(cfg) => {
            for url in [&cfg.token_url, &cfg.base_url].into_iter().flatten() {
                assert!(
                    check_endpoint(url, spec.allow_insecure_http, spec.allow_private_addresses).is_ok(),
                    "accepted {url}"
                );
            }
            for (what, d) in [
                ("requestTimeout", cfg.request_timeout),
                ("defaultTokenLifetime", cfg.default_lifetime),
                ("revalidateInterval", cfg.revalidate_interval),
            ] {
                assert!(!d.is_zero(), "{what} is zero");
                assert!(d < SCHEDULABLE, "{what} {d:?} cannot be scheduled");
            }
            assert!(cfg.max_concurrency >= 1 && cfg.requests_per_second >= 1);
        }
        Err(message) => assert!(!message.chars().any(common::is_unsafe_char), "{message:?}"),
    }
});
