//! The pure parts of the OAuth 2.0 authorization-code flow (RFC 6749
//! section 4.1) with PKCE (RFC 7636): the `state` parameter bound to one
//! Integration, the S256 code challenge and the authorization URL.
//!
//! `state` is `v1.<namespace>.<name>.<nonce>.<issued-at>.<mac>` (namespace
//! and name base64url-encoded, the nonce 128 random bits, issued-at in Unix
//! seconds, the MAC an HMAC-SHA256 over namespace, name, uid, nonce and
//! issued-at, truncated to 128 bits). The callback learns from it which
//! Integration the redirect is for, and the MAC, keyed with a key derived
//! from the operator's fingerprint key, proves that the operator minted it
//! for exactly that Integration (same uid: a recreated Integration of the
//! same name does not accept its predecessor's state) and when. Nothing in
//! it is secret: the browser carries it in the URL.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::RngCore;
use sha2::{Digest, Sha256};
use url::Url;

/// How long a published authorization URL (its `state` and verifier) is
/// good for: ten minutes, the longest lifetime RFC 6749 section 4.1.2
/// recommends for the code itself.
pub const STATE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

/// The Integration a `state` is bound to.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The key of `state` MACs, derived from the operator's fingerprint key
/// (domain-separated from its other uses).
#[derive(Clone)]
pub struct StateKey(Vec<u8>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey([redacted])")
    }
}

fn feed(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_le_bytes());
    mac.update(bytes);
}

impl StateKey {
    /// Derives the state key from the operator's fingerprint key.
    pub fn derive(fingerprint_key: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(fingerprint_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        feed(&mut mac, b"integration-operator oauth2 state v1");
        Self(mac.finalize().into_bytes().to_vec())
    }

    fn mac(&self, binding: &Binding, nonce: &str, issued_at: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        feed(&mut mac, binding.namespace.as_bytes());
        feed(&mut mac, binding.name.as_bytes());
        feed(&mut mac, binding.uid.as_bytes());
        feed(&mut mac, nonce.as_bytes());
        feed(&mut mac, issued_at.to_string().as_bytes());
        mac
    }

    /// A new `state` for `binding`, issued at `now`.
    pub fn mint(&self, binding: &Binding, now: Timestamp) -> String {
        self.mint_with(binding, &random_b64(16), now.as_second())
    }

    fn mint_with(&self, binding: &Binding, nonce: &str, issued_at: i64) -> String {
        let tag = self.mac(binding, nonce, issued_at).finalize().into_bytes();
        format!(
            "v1.{}.{}.{nonce}.{issued_at}.{}",
            URL_SAFE_NO_PAD.encode(&binding.namespace),
            URL_SAFE_NO_PAD.encode(&binding.name),
            URL_SAFE_NO_PAD.encode(&tag[..16])
        )
    }

    /// Whether `state` was minted by this key for `binding` (its uid
    /// included). Constant-time in the MAC.
    pub fn verify(&self, state: &ParsedState, uid: &str) -> bool {
        let binding = Binding {
            namespace: state.namespace.clone(),
            name: state.name.clone(),
            uid: uid.to_string(),
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(&state.mac) else {
            return false;
        };
        tag.len() == 16
            && self
                .mac(&binding, &state.nonce, state.issued_at)
                .verify_truncated_left(&tag)
                .is_ok()
    }
}

/// A `state` taken apart (not yet verified).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedState {
    pub namespace: String,
    pub name: String,
    nonce: String,
    pub issued_at: i64,
    mac: String,
}

impl ParsedState {
    /// Parses a `state` parameter; `None` for anything not shaped like one
    /// this operator mints (length-bounded first).
    pub fn parse(state: &str) -> Option<ParsedState> {
        if state.len() > 512 {
            return None;
        }
        let parts: Vec<&str> = state.split('.').collect();
        let [version, ns, name, nonce, issued_at, mac] = parts.as_slice() else {
            return None;
        };
        if *version != "v1" || nonce.len() != 22 || mac.len() != 22 {
            return None;
        }
        let text = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty() && s.len() <= 253)
        };
        Some(ParsedState {
            namespace: text(ns)?,
            name: text(name)?,
            nonce: nonce.to_string(),
            issued_at: issued_at.parse().ok()?,
            mac: mac.to_string(),
        })
    }

    /// Whether the state is older than `max_age` at `now` (or from the
    /// future by more than a minute of clock skew).
    pub fn expired(&self, now: Timestamp, max_age: std::time::Duration) -> bool {
        let age = now.as_second() - self.issued_at;
        age > max_age.as_secs() as i64 || age < -60
    }
}

/// `n` random bytes, base64url without padding.
pub fn random_b64(n: usize) -> String {
    let mut raw = vec![0u8; n];
    rand::rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// A new PKCE code verifier (RFC 7636 section 4.1: 32 random octets,
/// base64url, 43 characters).
pub fn new_verifier() -> String {
    random_b64(32)
}

/// The S256 code challenge of a verifier (RFC 7636 section 4.2).
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The operator's own authorization request parameters, which
/// `extra_parameters` cannot override.
pub const RESERVED: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// The authorization URL a person opens (RFC 6749 section 4.1.1, RFC 7636
/// section 4.3). It carries no secret: the challenge, never the verifier.
pub fn authorization_url(
    endpoint: &Url,
    client_id: &str,
    redirect_uri: &Url,
    scopes: &[String],
    extra: &BTreeMap<String, String>,
    state: &str,
    verifier: &str,
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", client_id);
        q.append_pair("redirect_uri", redirect_uri.as_str());
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        q.append_pair("state", state);
        q.append_pair("code_challenge", &challenge_s256(verifier));
        q.append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            if !RESERVED.contains(&k.as_str()) {
                q.append_pair(k, v);
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, uid: &str) -> Binding {
        Binding {
            namespace: "team-a".into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// RFC 7636 Appendix B: the example verifier and its S256 challenge.
    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = new_verifier();
        assert_eq!(v.len(), 43);
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn state_is_bound_to_namespace_name_uid_and_key() {
        let key = StateKey::derive(b"k1");
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let state = key.mint(&binding("crm", "uid-1"), now);
        let parsed = ParsedState::parse(&state).unwrap();
        assert_eq!((parsed.namespace.as_str(), parsed.name.as_str()), ("team-a", "crm"));
        assert!(key.verify(&parsed, "uid-1"));
        // Another uid (the Integration recreated under the same name).
        assert!(!key.verify(&parsed, "uid-2"));
        // Another key (another operator installation).
        assert!(!StateKey::derive(b"k2").verify(&parsed, "uid-1"));
        // Another Integration's name spliced into a valid state.
        let other = state.replacen(&URL_SAFE_NO_PAD.encode("crm"), &URL_SAFE_NO_PAD.encode("hr"), 1);
        let spliced = ParsedState::parse(&other).unwrap();
        assert_eq!(spliced.name, "hr");
        assert!(!key.verify(&spliced, "uid-1"));
        // A changed issue time (to dodge expiry).
        let later = state.replacen(&now.as_second().to_string(), &(now.as_second() + 3600).to_string(), 1);
        assert!(!key.verify(&ParsedState::parse(&later).unwrap(), "uid-1"));
        // Two mints differ (random nonce).
        assert_ne!(state, key.mint(&binding("crm", "uid-1"), now));
    }

    #[test]
    fn state_expiry_and_malformed_states() {
        let key = StateKey::derive(b"k1");
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let parsed = ParsedState::parse(&key.mint(&binding("crm", "u"), now)).unwrap();
        assert!(!parsed.expired(now + jiff::SignedDuration::from_secs(600), STATE_LIFETIME));
        assert!(parsed.expired(now + jiff::SignedDuration::from_secs(601), STATE_LIFETIME));
        assert!(parsed.expired(now - jiff::SignedDuration::from_secs(120), STATE_LIFETIME));
        for bad in [
            "",
            "v1",
            "v2.a.b.c.d.e",
            &"x".repeat(600),
            "v1.!!.YQ.AAAAAAAAAAAAAAAAAAAAAA.1.AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(ParsedState::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn url_carries_challenge_not_verifier_and_reserved_params_win() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let url = authorization_url(
            &Url::parse("https://auth.example.com/authorize?tenant=x").unwrap(),
            "client-1",
            &Url::parse("https://ops.example.com/oauth2/callback").unwrap(),
            &["openid".into(), "offline_access".into()],
            &BTreeMap::from([("prompt".into(), "consent".into()), ("state".into(), "evil".into())]),
            "st",
            verifier,
        );
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["state"], "st");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["scope"], "openid offline_access");
        assert_eq!(q["code_challenge"], "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!url.as_str().contains(verifier));
    }
}
