//! Properties shared by the fuzz targets.
#![allow(dead_code)]

use std::collections::BTreeMap;

use integration_operator::providers::{Credentials, DriverError};
use secrecy::{ExposeSecret, SecretString};

/// Longest message (in characters) a driver error may carry.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Input values as the operator holds them.
pub fn credentials(values: &[String]) -> Credentials {
    Credentials::new(
        values
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, v)| (format!("key{i}"), SecretString::from(v.clone())))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Input values that cannot occur in a fixed message template (they carry a
/// key emoji), for targets whose messages mix templates and provider text.
pub fn distinctive(values: &[String]) -> Credentials {
    let marked: Vec<String> = values.iter().map(|v| format!("\u{1F511}{v}")).collect();
    credentials(&marked)
}

/// Characters that break a log line, an Event, a header or a terminal.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A message shown to users: no unsafe characters, bounded, and no input
/// value (the operator skips values shorter than 4 bytes).
pub fn assert_safe_message(message: &str, secrets: &Credentials) {
    assert!(
        !message.chars().any(is_unsafe_char),
        "message has a control character: {message:?}"
    );
    assert!(
        message.chars().count() <= MAX_MESSAGE_CHARS,
        "message has {} characters",
        message.chars().count()
    );
    for v in secrets.values() {
        let v = v.expose_secret();
        if v.len() >= 4 {
            assert!(
                !message.contains(v),
                "message {message:?} contains the input value {v:?}"
            );
        }
    }
}

/// The provider-derived text of a driver error, if it has one.
pub fn message_of(e: &DriverError) -> Option<&str> {
    match e {
        DriverError::CredentialsRejected { message }
        | DriverError::PermissionDenied { message }
        | DriverError::Conflict { message }
        | DriverError::BadRequest { message }
        | DriverError::Unavailable { message }
        | DriverError::MalformedResponse { message }
        | DriverError::Misconfigured { message }
        | DriverError::NeedsAttention { message, .. }
        | DriverError::PersistFailed { message } => Some(message),
        DriverError::MissingInput { .. } | DriverError::RateLimited { .. } | DriverError::Timeout { .. } => None,
        DriverError::At { error, .. } => message_of(error),
    }
}

pub fn assert_safe_error(e: &DriverError, secrets: &Credentials) {
    if let Some(m) = message_of(e) {
        assert_safe_message(m, secrets);
    }
    assert!(!e.to_string().chars().any(is_unsafe_char), "{e}");
}

/// A value the operator publishes (header, URL path, status, message):
/// non-empty, bounded, no whitespace or control characters.
pub fn assert_publishable(what: &str, value: &str, max: usize) {
    assert!(!value.is_empty(), "{what} is empty");
    assert!(value.len() <= max, "{what} is {} bytes", value.len());
    assert!(
        !value.chars().any(|c| is_unsafe_char(c) || c.is_whitespace()),
        "{what} has whitespace or control characters: {value:?}"
    );
}

/// A provider id the operator puts into a URL path: also no path syntax.
pub fn assert_path_safe(what: &str, value: &str) {
    assert_publishable(what, value, 256);
    assert!(
        !value.contains(['/', '\\', '?', '#', '%']) && value != "." && value != "..",
        "{what} would change the request path: {value:?}"
    );
}

/// An error about a provider's answer carries none of the answer's content,
/// checked differentially: with every letter and digit inside the answer's
/// JSON strings replaced by another of its class (same length, same
/// validity), the error reads the same. A bare token answered instead of the
/// expected object must not reach a condition through the parser's text.
pub fn assert_no_answer_content<T>(e: &DriverError, body: &[u8], parse: impl Fn(&[u8]) -> Result<T, DriverError>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let shifted = serde_json::to_vec(&shift_strings(&v)).unwrap();
    let original = serde_json::to_vec(&v).unwrap();
    // Compare like with like: both bodies in serde's own serialisation.
    let (Err(a), Err(b)) = (parse(&original), parse(&shifted)) else {
        return;
    };
    assert_eq!(
        a.to_string(),
        b.to_string(),
        "the error text depends on the answer's content (first error: {e})"
    );
}

fn shift_strings(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(
            s.chars()
                .map(|c| match c {
                    'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
                    'z' => 'a',
                    'Z' => 'A',
                    '9' => '0',
                    c => c,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shift_strings).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), shift_strings(x))).collect()),
        other => other.clone(),
    }
}
