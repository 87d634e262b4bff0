//! `oauth2::classify_error`: a token endpoint's 4xx body (RFC 6749 5.2).
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use integration_operator::providers::oauth2::classify_error;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Fields {
        error: Option<String>,
        error_description: Option<String>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    secrets: Vec<String>,
    status: u16,
    body: Body,
}

fuzz_target!(|input: Input| {
    // Any input value, however odd: the whole message is scrubbed.
    let secrets = common::credentials(&input.secrets);
    let body = match &input.body {
        Body::Raw(b) => b.clone(),
        Body::Fields {
            error,
            error_description,
        } => serde_json::to_vec(&serde_json::json!({"error": error, "error_description": error_description})).unwrap(),
    };
    let e = classify_error(input.status, &body, &secrets);
    common::assert_safe_error(&e, &secrets);
});
