//! `oauth2::parse_token`: a token endpoint's success body.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use arbitrary::Arbitrary;
use integration_operator::providers::oauth2::parse_token;
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Fields {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in_number: Option<f64>,
        expires_in_text: Option<String>,
        extra: Option<String>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    secrets: Vec<String>,
    default_secs: u16,
    now_offset: u32,
    body: Body,
}

fuzz_target!(|input: Input| {
    let secrets = common::distinctive(&input.secrets);
    let body = match &input.body {
        Body::Raw(b) => b.clone(),
        Body::Fields {
            access_token,
            token_type,
            expires_in_number,
            expires_in_text,
            extra,
        } => {
            let mut v = serde_json::json!({});
            if let Some(t) = access_token {
                v["access_token"] = serde_json::json!(t);
            }
            if let Some(t) = token_type {
                v["token_type"] = serde_json::json!(t);
            }
            if let Some(n) = expires_in_number {
                v["expires_in"] = serde_json::json!(n);
            }
            if let Some(t) = expires_in_text {
                v["expires_in"] = serde_json::json!(t);
            }
            if let Some(t) = extra {
                v["error_description"] = serde_json::json!(t);
            }
            serde_json::to_vec(&v).unwrap()
        }
    };
    let now = jiff::Timestamp::from_second(1_700_000_000 + i64::from(input.now_offset)).unwrap();
    let default = Duration::from_secs(u64::from(input.default_secs).max(1));
    match parse_token(&body, default, now) {
        Ok(token) => {
            common::assert_publishable("access_token", token.access_token.expose_secret(), 1 << 20);
            assert!(
                !token.token_type.is_empty()
                    && token
                        .token_type
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "token_type {:?}",
                token.token_type
            );
            assert!(token.expires_at >= now, "expires in the past");
            let max = now + jiff::SignedDuration::from_secs(367 * 24 * 3600);
            assert!(token.expires_at <= max, "lifetime not clamped: {}", token.expires_at);
        }
        Err(e) => {
            common::assert_safe_error(&e, &secrets);
            common::assert_no_answer_content(&e, &body, |b| parse_token(b, default, now));
        }
    }
});
