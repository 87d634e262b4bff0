//! `http::retry_after`: a provider's Retry-After header.
#![no_main]

use std::time::Duration;

use integration_operator::providers::http::retry_after;
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, value);
    if let Some(d) = retry_after(&headers) {
        assert!(d <= Duration::from_secs(3600), "unbounded delay {d:?}");
    }
});
