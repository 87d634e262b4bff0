//! `http::check_endpoint`: the ClusterProvider network policy.
#![no_main]

#[path = "common.rs"]
mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use integration_operator::providers::http::check_endpoint;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Target {
    Text(String),
    V4([u8; 4], u16),
    V6([u16; 8], u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    https: bool,
    target: Target,
    allow_http: bool,
    allow_private: bool,
    /// Appended to the structured targets, which the fuzzer reaches far more
    /// often than a hand-typed URL with a query.
    query: Option<String>,
    password: Option<String>,
}

/// Independent oracle: addresses an endpoint must not point at unless allowed.
fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    a == 0 // "this network"; 0.0.0.0 reaches the local host
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || [a, b, c, d] == [255, 255, 255, 255]
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    ip.is_loopback()
        || ip.is_unspecified()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some stacks)
        // IPv4-mapped, IPv4-compatible and NAT64 (64:ff9b::/96) forms of a private IPv4 address
        || (s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) && private_v4(embedded))
        || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && private_v4(embedded))
}

fuzz_target!(|input: Input| {
    let scheme = if input.https { "https" } else { "http" };
    let text = match &input.target {
        Target::Text(t) => t.clone(),
        Target::V4(o, port) => format!("{scheme}://{}:{port}/token", Ipv4Addr::from(*o)),
        Target::V6(s, port) => format!("{scheme}://[{}]:{port}/token", Ipv6Addr::from(*s)),
    };
    let Ok(mut url) = url::Url::parse(&text) else {
        return;
    };
    if !matches!(input.target, Target::Text(_)) {
        url.set_query(input.query.as_deref());
        if let Some(p) = &input.password {
            let _ = url.set_username("user");
            let _ = url.set_password(Some(p));
        }
    }
    match check_endpoint(&url, input.allow_http, input.allow_private) {
        Ok(()) => {
            assert!(
                url.scheme() == "https" || (url.scheme() == "http" && input.allow_http),
                "accepted scheme {:?} (allow_http {})",
                url.scheme(),
                input.allow_http
            );
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "accepted userinfo"
            );
            if !input.allow_private {
                let private = match url.host() {
                    Some(url::Host::Ipv4(ip)) => private_v4(ip),
                    Some(url::Host::Ipv6(ip)) => private_v6(ip),
                    Some(url::Host::Domain(d)) => {
                        let d = d.trim_end_matches('.').to_ascii_lowercase();
                        d == "localhost" || d.ends_with(".localhost")
                    }
                    None => true,
                };
                assert!(!private, "accepted a private address: {url}");
            }
        }
        Err(message) => {
            assert!(!message.chars().any(common::is_unsafe_char), "{message:?}");
            // The message must not depend on the query string or the
            // password: the same URL with other values gives the same
            // message. (A differential check: a plain "does the message
            // contain the query" would trip on a query such as "rted", which
            // the fixed wording "unsupported" happens to contain.)
            let mut other = url.clone();
            if other.query().is_some() {
                other.set_query(Some("other-query"));
            }
            if other.password().is_some() {
                let _ = other.set_password(Some("other-password"));
            }
            let again = check_endpoint(&other, input.allow_http, input.allow_private);
            assert_eq!(
                again.as_ref().err(),
                Some(&message),
                "the message changes with the query string or the password"
            );
        }
    }
});
