//! `providers::scrub` and `providers::classify_status`: provider text made
//! safe for conditions, Events and logs.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use integration_operator::providers::{classify_status, scrub};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    secrets: Vec<String>,
    status: u16,
    text: String,
}

fuzz_target!(|input: Input| {
    let secrets = common::credentials(&input.secrets);
    let out = scrub(&input.text, &secrets);
    common::assert_safe_message(&out, &secrets);
    assert!(out.chars().count() <= 201, "not bounded");
    let e = classify_status(input.status, &input.text, &secrets);
    common::assert_safe_error(&e, &secrets);
});
