//! `resolve::secret_credentials`: the input Secret's data as credentials.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use integration_operator::controller::resolve::secret_credentials;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

/// Input keys whose values end up in HTTP headers (raw or encoded).
const HEADER_BOUND: &[&str] = &[
    "api_key",
    "client_id",
    "client_secret",
    "username",
    "password",
    "user_secret",
    "organization_secret",
];

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<(Key, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let data: BTreeMap<String, ByteString> = input
        .entries
        .iter()
        .map(|(k, v)| {
            let key = match k {
                Key::Known(i) => HEADER_BOUND[usize::from(*i) % HEADER_BOUND.len()].to_string(),
                Key::Other(s) => s.clone(),
            };
            (key, ByteString(v.clone()))
        })
        .collect();
    let secret = Secret {
        data: Some(data.clone()),
        ..Secret::default()
    };
    match secret_credentials(&secret) {
        Ok(creds) => {
            for (k, v) in creds.iter() {
                let v = v.expose_secret();
                assert!(!v.ends_with(['\r', '\n']), "{k}: trailing newline kept");
                if HEADER_BOUND.contains(&k.as_str()) {
                    assert!(!v.chars().any(char::is_control), "{k}: control character accepted");
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.chars().any(char::is_control), "{message:?}");
            for v in data.values() {
                if let Ok(v) = std::str::from_utf8(&v.0)
                    && v.trim().len() >= 4
                    // (key names are shown, quoted and escaped)
                    && !data.keys().any(|k| format!("{k:?}").contains(v.trim()))
                {
                    assert!(!message.contains(v.trim()), "the error {message:?} shows a value");
                }
            }
        }
    }
});
