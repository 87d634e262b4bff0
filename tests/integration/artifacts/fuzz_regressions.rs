//! Inputs the fuzz targets in `fuzz/` found (or that reviewing their
//! properties found), kept as ordinary tests so `make test` guards them
//! without nightly or libFuzzer. Each test names its target.

use std::collections::BTreeMap;

use integration_operator::{
    controller::resolve::{provider_config, secret_credentials},
    crd::ClusterProviderSpec,
    providers::{Credentials, DriverError, classify_status, http::check_endpoint, oauth2::classify_error, scrub},
    reasons::Reason,
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use secrecy::SecretString;

fn creds(values: &[&str]) -> Credentials {
    Credentials::new(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("key{i}"), SecretString::from(v.to_string())))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn message(e: &DriverError) -> String {
    match e {
        DriverError::CredentialsRejected { message }
        | DriverError::PermissionDenied { message }
        | DriverError::Conflict { message }
        | DriverError::BadRequest { message }
        | DriverError::MalformedResponse { message } => message.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// fuzz target `oauth2_error`, crash-0dbfc978: the provider echoed an input
/// value with control characters where the value has spaces; blanking the
/// control characters after the redaction re-formed the value.
#[test]
fn oauth2_error_echoing_a_value_with_control_characters_is_redacted() {
    let secrets = creds(&["\0\0\0\0*\0", "\"b~   6~"]);
    let body = serde_json::to_vec(&serde_json::json!({"error": "\"b~\0\0\x006~\0\0"})).unwrap();
    let m = message(&classify_error(14887, &body, &secrets));
    assert!(!m.contains("\"b~   6~"), "{m:?}");
    assert!(!m.chars().any(char::is_control), "{m:?}");
}

/// fuzz target `scrub`, crash-99ff029b: the same, with control characters
/// blanked into a run of spaces equal to an input value.
#[test]
fn scrub_redacts_values_formed_by_blanked_control_characters() {
    let secrets = creds(&["    ", ""]);
    let text = "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0AI =  \u{3}|\u{f}\u{6}";
    let out = scrub(text, &secrets);
    assert!(!out.contains("    "), "{out:?}");
    let e = classify_status(202, text, &secrets);
    assert!(!message(&e).contains("    "), "{e:?}");
}

/// Review of the `scrub` property: a redaction mark next to the rest of the
/// text can form a value again (`d]ab` in `d]abab` -> `[redacted]ab`).
#[test]
fn scrub_never_leaves_a_value_formed_around_the_redaction_mark() {
    for (value, text) in [("d]ab", "x d]abab y"), ("ted]X", "zzzzX"), ("redacted", "a redacted b")] {
        let secrets = if value == "ted]X" {
            creds(&["zzzz", value])
        } else {
            creds(&[value])
        };
        let out = scrub(text, &secrets);
        assert!(!out.contains(value), "{value:?} in {out:?}");
    }
    // Ordinary text keeps its words.
    assert_eq!(
        scrub("bad secret s3cr3t-value!", &creds(&["s3cr3t-value"])),
        "bad secret [redacted]!"
    );
}

/// Review of the `scrub` property: Unicode line separators and bidirectional
/// overrides are as good as a newline for forging log lines or hiding text.
#[test]
fn scrub_blanks_unicode_separators_and_bidi_overrides() {
    let out = scrub(
        "a\u{2028}b\u{2029}c\u{202E}d\u{2066}e\u{1b}[31m",
        &Credentials::default(),
    );
    assert_eq!(out, "a b c d e [31m");
}

/// fuzz target `check_endpoint`, crash (V4 0.0.1.0): 0.0.0.0/8 ("this
/// network") was not treated as private; the same family of forms of a
/// private IPv4 address inside IPv6 are refused too.
#[test]
fn check_endpoint_refuses_this_network_and_embedded_private_ipv4() {
    for url in [
        "https://0.0.1.0:0/token",
        "https://0.0.0.0/token",
        "https://255.255.255.255/token",
        "https://[::10.0.0.1]/token",
        "https://[::127.0.0.1]/token",
        "https://[64:ff9b::a9fe:a9fe]/token",
        "https://[fec0::1]/token",
        "https://[::ffff:169.254.169.254]/token",
    ] {
        let url = url::Url::parse(url).unwrap();
        let err = check_endpoint(&url, false, false).expect_err(url.as_str());
        assert!(err.contains("allowPrivateAddresses"), "{url}: {err}");
        assert!(check_endpoint(&url, false, true).is_ok(), "{url} once allowed");
    }
    // Public addresses in the same notations stay usable.
    for url in [
        "https://[64:ff9b::808:808]/t",
        "https://8.8.8.8/t",
        "https://[2001:db8::1]/t",
    ] {
        assert!(
            check_endpoint(&url::Url::parse(url).unwrap(), false, false).is_ok(),
            "{url}"
        );
    }
}

/// fuzz target `provider_answers`, crash (CloudElementsCreated): an instance
/// answer with an empty token was accepted, and would have been published
/// as the header `User …, Element ` (an id of `true` is fine).
#[test]
fn cloud_elements_instance_without_a_usable_token_is_malformed() {
    use integration_operator::providers::cloud_elements::parse_created_instance;
    let body = br#"{"token":"","id":true,"code":"ev","clientId":null}"#;
    assert_eq!(
        parse_created_instance(body).err().unwrap().reason(),
        Reason::MalformedResponse
    );
    for body in [
        r#"{"token":"tok\r\nX-Injected: 1","id":7}"#,
        r#"{"token":"tok en","id":7}"#,
        r#"{"token":"tok","id":"../admin"}"#,
        r#"{"token":"tok","id":"1?x=y"}"#,
    ] {
        assert!(parse_created_instance(body.as_bytes()).is_err(), "{body}");
    }
    assert_eq!(
        parse_created_instance(br#"{"token":"tok","id":7}"#).unwrap(),
        ("7".to_string(), "tok".to_string())
    );
}

/// fuzz target `cluster_provider`, crash-d6c24de4: a defaultTokenLifetime of
/// `0000269334294m` (512 years) was accepted; renewals that far out cannot be
/// scheduled (the requeue queue panics beyond ~2 years, and timestamps
/// overflow). Lifetimes and intervals are bounded to 366 days, timeouts to 10m.
#[test]
fn cluster_provider_durations_too_long_to_schedule_are_refused() {
    let spec: ClusterProviderSpec = serde_json::from_str(
        r#"{"type":"oauth2","tokenUrl":"https://2auth.example.com/to.0.0.1/","allowInsecureHttp":true,"requestTimeout":"2s","defaultTokenLifetime":"0000269334294m","nd":5}"#,
    )
    .unwrap();
    let err = provider_config("p", &spec).err().unwrap();
    assert!(err.contains("defaultTokenLifetime must be at most 8784h"), "{err}");
    for (field, value, max) in [
        ("revalidateInterval", "8785h", "8784h"),
        ("requestTimeout", "11m", "10m"),
        ("defaultTokenLifetime", "4294967295h", "8784h"),
    ] {
        let spec: ClusterProviderSpec = serde_json::from_value(serde_json::json!({
            "type": "oauth2", "tokenUrl": "https://auth.example.com/token", field: value,
        }))
        .unwrap();
        let err = provider_config("p", &spec).err().unwrap();
        assert!(err.contains(&format!("{field} must be at most {max}")), "{err}");
    }
    let spec: ClusterProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "oauth2", "tokenUrl": "https://auth.example.com/token",
        "defaultTokenLifetime": "8784h", "revalidateInterval": "8784h", "requestTimeout": "10m",
    }))
    .unwrap();
    assert!(provider_config("p", &spec).is_ok());
}

/// fuzz target `secret_credentials`, crash-31d7857d: an `organization_secret`
/// of "\0" was accepted; Cloud Elements sends it verbatim in the
/// Authorization header. Control characters in any value sent in requests
/// are refused, naming the key and not showing the value.
#[test]
fn input_values_sent_in_requests_must_not_carry_control_characters() {
    let secret = |k: &str, v: &[u8]| Secret {
        data: Some(BTreeMap::from([(k.to_string(), ByteString(v.to_vec()))])),
        ..Secret::default()
    };
    let err = secret_credentials(&secret("organization_secret", b"\0")).err().unwrap();
    assert_eq!(err.reason(), Reason::InvalidInputSecret);
    assert!(err.to_string().contains("\"organization_secret\""), "{err}");
    let err = secret_credentials(&secret("api_key", b"sk-9f2c7e\r\nX-Injected: 1"))
        .err()
        .unwrap();
    assert!(!err.to_string().contains("sk-9f2c7e"), "{err}");
    // A trailing newline (kubectl --from-file) is removed, not refused; other
    // keys (a PEM bundle next to the credentials) may hold anything textual.
    assert!(secret_credentials(&secret("api_key", b"sk-9f2c7e\n")).is_ok());
    assert!(secret_credentials(&secret("ca.crt", b"-----BEGIN\nabc\n-----END\n")).is_ok());
}

/// A 1 MiB value was sent as a 1.4 MB header on every retry and ended as
/// "ProviderUnavailable: the request failed". It is refused before any call,
/// naming the key and its size.
#[test]
fn oversized_input_values_are_refused_naming_key_and_size() {
    let secret = |k: &str, v: &[u8]| Secret {
        data: Some(BTreeMap::from([(k.to_string(), ByteString(v.to_vec()))])),
        ..Secret::default()
    };
    let limit = integration_operator::controller::resolve::MAX_INPUT_VALUE_BYTES;
    assert!(secret_credentials(&secret("client_secret", &vec![b'x'; limit])).is_ok());
    let err = secret_credentials(&secret("client_secret", &vec![b'x'; 1024 * 1024]))
        .err()
        .unwrap();
    assert_eq!(err.reason(), Reason::InvalidInputSecret);
    let text = err.to_string();
    assert!(
        text.contains("\"client_secret\"") && text.contains("1048576 bytes") && text.contains("64 KiB"),
        "{text}"
    );
}
