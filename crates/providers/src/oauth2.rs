//! Generic OAuth 2.0 driver: the client-credentials grant (RFC 6749 section
//! 4.4) against any token endpoint, with `client_secret_basic` or
//! `client_secret_post` client authentication (section 2.3.1).
//!
//! And the authorization-code grant with PKCE (section 4.1, RFC 7636) and
//! refresh tokens (section 6), see [`authorization_code`].
//!
//! The token request itself is public so other drivers whose providers use a
//! standard token endpoint (SmartRecruiters) share it.

use crate::reasons::Reason;
use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use base64::Engine;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    ClientAuth, Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, Priority, ProviderConfig,
    ProviderHttp, Target, Then, keys, scrub,
};

/// Longest lifetime believed from a provider; a larger `expires_in` is
/// clamped so that a bogus value cannot stop renewals for years.
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The generic `oauth2` driver.
#[derive(Debug)]
pub struct OAuth2Driver {
    http: ProviderHttp,
}

impl OAuth2Driver {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }
}

#[async_trait]
impl Driver for OAuth2Driver {
    fn supports(&self, flow: &Flow) -> bool {
        matches!(flow, Flow::ClientCredentials { .. } | Flow::AuthorizationCode { .. })
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        if matches!(req.flow, Flow::AuthorizationCode { .. }) {
            return authorization_code(&self.http, req).await;
        }
        let Flow::ClientCredentials { scopes, audience } = req.flow else {
            return Err(DriverError::Misconfigured {
                message: format!("oauth2 does not support the {} flow", req.flow.name()),
            });
        };
        let client_id = req.inputs.require(keys::CLIENT_ID)?;
        let client_secret = req.inputs.require(keys::CLIENT_SECRET)?;
        let token = request_token(
            &self.http,
            req.provider,
            &TokenRequest {
                priority: req.priority,
                client_id,
                client_secret,
                scopes,
                audience: audience.as_deref(),
            },
            req.inputs,
            req.now,
        )
        .await
        .map_err(|e| {
            let path = req.provider.token_url.as_ref().map(|u| u.path()).unwrap_or_default();
            e.in_step(&format!("requesting a client-credentials token (POST {path})"))
        })?;
        Ok(Outcome::Issued(token.into_issued(req.provider)))
    }
}

/// A client-credentials token request.
pub struct TokenRequest<'a> {
    /// Passed on to the provider's limiter.
    pub priority: Priority,
    pub client_id: &'a SecretString,
    pub client_secret: &'a SecretString,
    pub scopes: &'a [String],
    pub audience: Option<&'a str>,
}

/// A token the endpoint issued.
pub struct Token {
    pub access_token: SecretString,
    /// Normalised: `Bearer` for any casing of bearer, else as sent.
    pub token_type: String,
    pub expires_at: Timestamp,
    pub lifetime_defaulted: bool,
    /// A refresh token, where the grant issued one (RFC 6749 section 5.1).
    pub refresh_token: Option<SecretString>,
}

impl Token {
    /// Output Secret fields for a bearer token.
    pub fn into_issued(self, provider: &ProviderConfig) -> Issued {
        let header = format!("{} {}", self.token_type, self.access_token.expose_secret());
        let mut fields: BTreeMap<String, SecretString> = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            fields.insert(k.to_string(), SecretString::from(v));
        };
        put(keys::AUTHORIZATION, header.clone());
        put(keys::HEADER_NAME, "Authorization".into());
        put(keys::HEADER_VALUE, header);
        put(keys::ACCESS_TOKEN, self.access_token.expose_secret().to_string());
        put(keys::TOKEN_TYPE, self.token_type.clone());
        put(keys::EXPIRES_AT, self.expires_at.to_string());
        if let Some(base) = &provider.base_url {
            put(keys::BASE_URL, base.to_string());
        }
        Issued {
            fields: Credentials::new(fields),
            expires_at: Some(self.expires_at),
            lifetime_defaulted: self.lifetime_defaulted,
            provider_id: None,
            warning: None,
        }
    }
}

/// RFC 6749 section 5.1 success body (extra fields ignored).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
}

/// RFC 6749 section 5.2 error body.
#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// Runs one client-credentials request against the provider's token URL.
pub async fn request_token(
    http: &ProviderHttp,
    provider: &ProviderConfig,
    req: &TokenRequest<'_>,
    scrub_values: &Credentials,
    now: Timestamp,
) -> Result<Token, DriverError> {
    let token_url = provider.token_url.as_ref().ok_or_else(|| DriverError::Misconfigured {
        message: "the ClusterProvider has no tokenUrl".into(),
    })?;
    let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
    if !req.scopes.is_empty() {
        form.push(("scope", req.scopes.join(" ")));
    }
    if let Some(aud) = req.audience {
        form.push(("audience", aud.to_string()));
    }
    let mut request = http
        .client()
        .post(token_url.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match provider.client_auth {
        ClientAuth::Basic => {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                basic_header(req.client_id.expose_secret(), req.client_secret.expose_secret()),
            );
        }
        ClientAuth::Post => {
            form.push(("client_id", req.client_id.expose_secret().to_string()));
            form.push(("client_secret", req.client_secret.expose_secret().to_string()));
        }
    }
    let request = request.form(&form);
    let answer = http.send(provider, request, scrub_values, req.priority).await?;
    if !answer.status.is_success() {
        return Err(classify_error(answer.status.as_u16(), &answer.body, scrub_values));
    }
    parse_token(&answer.body, provider.default_lifetime, now)
}

/// Output Secret keys holding the authorization-code flow's state. They
/// are the operator's, not the consumers': the documented layout does not
/// list them.
pub mod ac_keys {
    /// The `state` of the authorization request now published.
    pub const STATE: &str = "oauth2_state";
    /// Its PKCE code verifier.
    pub const VERIFIER: &str = "oauth2_code_verifier";
    /// The code the callback delivered (written by `deliver`, removed once exchanged).
    pub const CODE: &str = "oauth2_code";
    /// The newest refresh token.
    pub const REFRESH_TOKEN: &str = "oauth2_refresh_token";
    /// Why a new consent is needed (the refresh token or code was refused).
    pub const REAUTH: &str = "oauth2_reauth";
    /// Everything but the refresh token: removed once a code is exchanged.
    pub const REQUEST: [&str; 4] = [STATE, VERIFIER, CODE, REAUTH];
}

/// The authorization-code flow, one step per reconcile, resuming from what
/// the output Secret holds:
/// - a refresh token: renew with it (`grant_type=refresh_token`); a new
///   refresh token in the answer is persisted before anything else;
/// - a code the callback delivered (with the state and verifier it
///   belongs to): exchange it (`grant_type=authorization_code`);
/// - a published request that has not expired: keep waiting;
/// - else: mint a new `state` and verifier, persist them, publish the URL.
///
/// A refused refresh token or code (`invalid_grant`) starts a new request
/// and reports `ReauthRequired` with its URL.
///
/// Every state change is an [`Outcome::Persist`] that ends the exchange
/// ([`Then::Finish`]) with what this call learnt: a new refresh token is
/// persisted together with the access token it came with, and published
/// once that write succeeded. Calling the driver again instead would find
/// only the refresh token and spend a second token request (and, with
/// rotation, a second refresh token) on every routine renewal; persisting
/// the access token under a "just issued" marker for the next call to
/// publish would add a state key to recompute what is already known. A
/// failed write issues nothing, as before: the old refresh token stays in
/// the Secret, spent at a rotating provider, which then asks for consent
/// again — never a published token whose refresh token was lost.
pub async fn authorization_code(http: &ProviderHttp, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
    use super::authorization as az;
    let client_id = req.inputs.require(keys::CLIENT_ID)?;
    let client_secret = req
        .inputs
        .get(keys::CLIENT_SECRET)
        .filter(|s| !s.expose_secret().is_empty());
    let redirect = req
        .provider
        .redirect_url
        .as_ref()
        .ok_or_else(|| DriverError::Misconfigured {
            message:
                "the ClusterProvider has no redirectUrl (the operator's /oauth2/callback as registered at the provider)"
                    .into(),
        })?;
    let scrub_values = req.inputs.and(req.persisted);
    let persisted = |k: &str| {
        req.persisted
            .get(k)
            .map(|v| v.expose_secret().to_string())
            .filter(|v| !v.is_empty())
    };

    if let (Some(code), Some(verifier)) = (persisted(ac_keys::CODE), persisted(ac_keys::VERIFIER)) {
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", redirect.to_string()),
            ("code_verifier", verifier),
        ];
        return match token_call(
            http,
            Target {
                provider: req.provider,
                priority: req.priority,
            },
            form,
            client_id,
            client_secret,
            &scrub_values,
            req.now,
        )
        .await
        {
            Ok(token) => {
                // The refresh token first, in the same write that drops the
                // used code and verifier.
                let set = match &token.refresh_token {
                    Some(rt) => super::fields([(ac_keys::REFRESH_TOKEN, rt.expose_secret().to_string())]),
                    None => Credentials::default(),
                };
                let mut remove = ac_keys::REQUEST.to_vec();
                if token.refresh_token.is_none() {
                    remove.push(ac_keys::REFRESH_TOKEN);
                }
                let issued = Outcome::Issued(token.into_issued(req.provider));
                Ok(Outcome::persist_then(set, &remove, Then::Finish(Box::new(issued))))
            }
            Err(e) if is_invalid_grant(&e) => {
                new_request(
                    req,
                    client_id,
                    redirect,
                    Some(format!("the provider refused the authorization code ({e})")),
                )
                .await
            }
            Err(e) => Err(e.in_step("exchanging the authorization code (POST token endpoint)")),
        };
    }

    if let Some(refresh) = persisted(ac_keys::REFRESH_TOKEN) {
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh.clone()),
        ];
        if let Flow::AuthorizationCode { scopes, .. } = req.flow
            && !scopes.is_empty()
        {
            form.push(("scope", scopes.join(" ")));
        }
        return match token_call(
            http,
            Target {
                provider: req.provider,
                priority: req.priority,
            },
            form,
            client_id,
            client_secret,
            &scrub_values,
            req.now,
        )
        .await
        {
            Ok(token) => {
                // Rotation: the new refresh token is durable before the
                // access token is used or published; the old one is spent.
                // One token request per renewal: the access token is
                // published as soon as the new refresh token is durable.
                let rotated = token
                    .refresh_token
                    .as_ref()
                    .map(|rt| rt.expose_secret().to_string())
                    .filter(|rt| *rt != refresh);
                let issued = Outcome::Issued(token.into_issued(req.provider));
                Ok(match rotated {
                    Some(rt) => Outcome::persist_then(
                        super::fields([(ac_keys::REFRESH_TOKEN, rt)]),
                        &[],
                        Then::Finish(Box::new(issued)),
                    ),
                    None => issued,
                })
            }
            Err(e) if is_invalid_grant(&e) => {
                new_request(
                    req,
                    client_id,
                    redirect,
                    Some(format!(
                        "the provider refused the refresh token, it was revoked or has expired ({e})"
                    )),
                )
                .await
            }
            Err(e) => Err(e.in_step("renewing with the refresh token (POST token endpoint)")),
        };
    }

    // A request already published and still good: the same URL again.
    if let (Some(state), Some(verifier)) = (persisted(ac_keys::STATE), persisted(ac_keys::VERIFIER))
        && let Some(parsed) = az::ParsedState::parse(&state)
        && !parsed.expired(req.now, az::STATE_LIFETIME)
    {
        let url = request_url(req, client_id, redirect, &state, &verifier)?;
        let expires = Timestamp::from_second(parsed.issued_at + az::STATE_LIFETIME.as_secs() as i64).unwrap_or(req.now);
        return Ok(pending(req, &url, expires, persisted(ac_keys::REAUTH)));
    }
    new_request(req, client_id, redirect, persisted(ac_keys::REAUTH)).await
}

fn is_invalid_grant(e: &DriverError) -> bool {
    matches!(e.inner(), DriverError::CredentialsRejected { message } if message.contains("invalid_grant"))
}

/// Mints a new `state` and verifier and publishes the URL once they are
/// persisted (the callback checks what it receives against them).
async fn new_request(
    req: &ExchangeRequest<'_>,
    client_id: &SecretString,
    redirect: &url::Url,
    reauth: Option<String>,
) -> Result<Outcome, DriverError> {
    use super::authorization as az;
    let (Some(key), Flow::AuthorizationCode { binding, .. }) = (req.state_key, req.flow) else {
        return Err(DriverError::Misconfigured {
            message: "the authorization-code flow needs the operator's state key".into(),
        });
    };
    let state = key.mint(binding, req.now);
    let verifier = az::new_verifier();
    let url = request_url(req, client_id, redirect, &state, &verifier)?;
    let mut set = vec![(ac_keys::STATE, state), (ac_keys::VERIFIER, verifier)];
    let mut remove = vec![ac_keys::CODE];
    match &reauth {
        Some(why) => set.push((ac_keys::REAUTH, why.clone())),
        None => remove.push(ac_keys::REAUTH),
    }
    if reauth.is_some() {
        // Refused: it is of no use any more, and must not be tried again.
        remove.push(ac_keys::REFRESH_TOKEN);
    }
    let expires = Timestamp::from_second(req.now.as_second() + az::STATE_LIFETIME.as_secs() as i64).unwrap_or(req.now);
    let pending = pending(req, &url, expires, reauth);
    Ok(Outcome::persist_then(
        super::fields(set),
        &remove,
        Then::Finish(Box::new(pending)),
    ))
}

fn request_url(
    req: &ExchangeRequest<'_>,
    client_id: &SecretString,
    redirect: &url::Url,
    state: &str,
    verifier: &str,
) -> Result<url::Url, DriverError> {
    let endpoint = req
        .provider
        .authorization_url
        .as_ref()
        .ok_or_else(|| DriverError::Misconfigured {
            message: "the ClusterProvider has no authorizationUrl".into(),
        })?;
    let (scopes, extra) = match req.flow {
        Flow::AuthorizationCode {
            scopes,
            extra_parameters,
            ..
        } => (scopes.as_slice(), extra_parameters.clone()),
        _ => (&[][..], BTreeMap::new()),
    };
    Ok(super::authorization::authorization_url(
        endpoint,
        client_id.expose_secret(),
        redirect,
        scopes,
        &extra,
        state,
        verifier,
    ))
}

fn pending(req: &ExchangeRequest<'_>, url: &url::Url, expires: Timestamp, reauth: Option<String>) -> Outcome {
    let left = Duration::try_from(expires.duration_since(req.now)).unwrap_or_default();
    let (reason, why) = match reauth {
        Some(why) => (Reason::ReauthRequired, format!("{why}; ")),
        None => (Reason::AuthorizationRequired, String::new()),
    };
    Outcome::Pending {
        reason,
        message: format!(
            "{why}a person must grant access: open {url} (valid until {expires}); the provider then redirects to the operator's callback"
        ),
        // Looking again costs no provider call; the callback's write wakes
        // the reconcile at once, this only renews an expired request.
        recheck_after: left.clamp(Duration::from_secs(1), Duration::from_secs(60)),
        started: None,
    }
}

/// One token endpoint request with the ClusterProvider's client
/// authentication (or, without a client secret, as a public client with
/// `client_id` in the body).
async fn token_call(
    http: &ProviderHttp,
    target: Target<'_>,
    mut form: Vec<(&str, String)>,
    client_id: &SecretString,
    client_secret: Option<&SecretString>,
    scrub_values: &Credentials,
    now: Timestamp,
) -> Result<Token, DriverError> {
    let Target { provider, priority } = target;
    let token_url = provider.token_url.as_ref().ok_or_else(|| DriverError::Misconfigured {
        message: "the ClusterProvider has no tokenUrl".into(),
    })?;
    let mut request = http
        .client()
        .post(token_url.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match (client_secret, provider.client_auth) {
        (Some(secret), ClientAuth::Basic) => {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                basic_header(client_id.expose_secret(), secret.expose_secret()),
            );
        }
        (Some(secret), ClientAuth::Post) => {
            form.push(("client_id", client_id.expose_secret().to_string()));
            form.push(("client_secret", secret.expose_secret().to_string()));
        }
        (None, _) => form.push(("client_id", client_id.expose_secret().to_string())),
    }
    let answer = http.send(provider, request.form(&form), scrub_values, priority).await?;
    if !answer.status.is_success() {
        return Err(classify_error(answer.status.as_u16(), &answer.body, scrub_values));
    }
    parse_token(&answer.body, provider.default_lifetime, now)
}

/// `Authorization: Basic` value with RFC 6749 section 2.3.1 form-urlencoding
/// of id and secret (a `:` or `%` in a secret must survive).
pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// Parses a token endpoint's success body.
pub fn parse_token(body: &[u8], default_lifetime: Duration, now: Timestamp) -> Result<Token, DriverError> {
    let parsed: TokenResponse = super::parse_json("the token response", body)?;
    let access_token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DriverError::MalformedResponse {
            message: "token response has no access_token".into(),
        })?;
    if access_token.chars().any(|c| c.is_control() || c == ' ') {
        // It would break the header we publish (and could inject headers).
        return Err(DriverError::MalformedResponse {
            message: "access_token contains whitespace or control characters".into(),
        });
    }
    let token_type = match parsed.token_type.as_deref() {
        None => "Bearer".to_string(),
        Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_string(),
        Some(t) if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && !t.is_empty() => {
            t.to_string()
        }
        Some(_) => {
            return Err(DriverError::MalformedResponse {
                message: "token_type is not a valid token type".into(),
            });
        }
    };
    let expires_in = parsed.expires_in.as_ref().and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    });
    let (lifetime, defaulted) = match expires_in {
        Some(secs) if secs.is_finite() && secs >= 1.0 => {
            if secs > MAX_LIFETIME.as_secs_f64() {
                tracing::warn!(
                    expires_in = secs,
                    max_days = MAX_LIFETIME.as_secs() / 86_400,
                    "token endpoint's expires_in is beyond the longest lifetime believed; clamped (renewal is scheduled for the clamped expiry)"
                );
            }
            (Duration::from_secs_f64(secs.min(MAX_LIFETIME.as_secs_f64())), false)
        }
        // Missing, zero, negative or garbage: assume the configured default and say so.
        _ => (default_lifetime, true),
    };
    let expires_at = now
        .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::from_secs(1800)))
        .unwrap_or(now);
    // Whole seconds: the form used in the Secret, its annotations and status.
    let expires_at = Timestamp::from_second(expires_at.as_second()).unwrap_or(expires_at);
    Ok(Token {
        access_token: SecretString::from(access_token),
        token_type,
        expires_at,
        lifetime_defaulted: defaulted,
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty() && !t.chars().any(|c| c.is_control() || c == ' '))
            .map(SecretString::from),
    })
}

/// Maps a token endpoint's 4xx answer to a driver error (RFC 6749 section 5.2).
pub fn classify_error(status: u16, body: &[u8], scrub_values: &Credentials) -> DriverError {
    let parsed: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|p| p.error.clone()).unwrap_or_default();
    let description = parsed.and_then(|p| p.error_description).unwrap_or_default();
    let mut message = format!("HTTP {status}");
    if !code.is_empty() {
        message.push_str(&format!(" {code}"));
    }
    if !description.is_empty() {
        message.push_str(&format!(": {description}"));
    }
    let message = scrub(&message, scrub_values);
    match (status, code.as_str()) {
        // RFC 6749 section 5.2: the client authenticated but may not use
        // this grant type. The credentials are fine; the client's
        // registration at the provider is not, and resending them changes
        // nothing until a person fixes it there.
        (_, "unauthorized_client") => DriverError::BadRequest {
            message: format!(
                "{message} (the client may not use the client_credentials grant: allow that grant for this client at the provider)"
            ),
        },
        (_, "invalid_client" | "invalid_grant") | (401, _) => DriverError::CredentialsRejected { message },
        (_, "invalid_scope" | "access_denied") | (403, _) => DriverError::PermissionDenied { message },
        (404, _) => DriverError::Misconfigured {
            message: format!("{message} (no token endpoint at this URL: check the ClusterProvider's tokenUrl)"),
        },
        (409, _) => DriverError::Conflict { message },
        _ => DriverError::BadRequest { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(1800);

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn parses_a_standard_answer_case_insensitively() {
        let t = parse_token(
            br#"{"access_token":"abc","token_type":"bearer","expires_in":3600,"extra":1}"#,
            DEFAULT,
            now(),
        )
        .unwrap();
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.expires_at.to_string(), "2026-01-01T01:00:00Z");
        assert!(!t.lifetime_defaulted);
    }

    #[test]
    fn missing_zero_or_garbage_expiry_uses_the_default_and_says_so() {
        for body in [
            br#"{"access_token":"abc","token_type":"Bearer"}"#.as_slice(),
            br#"{"access_token":"abc","expires_in":0}"#,
            br#"{"access_token":"abc","expires_in":-5}"#,
            br#"{"access_token":"abc","expires_in":"soon"}"#,
        ] {
            let t = parse_token(body, DEFAULT, now()).unwrap();
            assert!(t.lifetime_defaulted);
            assert_eq!(t.expires_at.to_string(), "2026-01-01T00:30:00Z");
        }
    }

    #[test]
    fn absurd_expiry_is_clamped() {
        let t = parse_token(br#"{"access_token":"abc","expires_in":1e300}"#, DEFAULT, now()).unwrap();
        assert!(t.expires_at < "2027-01-03T00:00:00Z".parse().unwrap());
    }

    #[test]
    fn string_expiry_is_accepted() {
        let t = parse_token(br#"{"access_token":"abc","expires_in":"60"}"#, DEFAULT, now()).unwrap();
        assert_eq!(t.expires_at.to_string(), "2026-01-01T00:01:00Z");
    }

    #[test]
    fn malformed_truncated_or_tokenless_answers_are_errors() {
        for body in [
            b"not json".as_slice(),
            br#"{"access_token":"ab"#,
            br#"{"token_type":"Bearer"}"#,
            br#"{"access_token":""}"#,
            br#"{"access_token":"a\r\nX-Evil: 1"}"#,
        ] {
            let err = parse_token(body, DEFAULT, now()).err().unwrap();
            assert_eq!(
                err.reason(),
                Reason::MalformedResponse,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// An answer that is JSON but not the expected object (a bare token, an
    /// array of them) is described by its kind: the parser's own text would
    /// quote the token into the condition, the Events and the log.
    #[test]
    fn a_bare_token_answer_is_described_not_quoted() {
        for (body, kind) in [
            (br#""opaque-bare-token-4f1c9e""#.as_slice(), "a JSON string"),
            (br#"["opaque-bare-token-4f1c9e"]"#, "a JSON array"),
            (
                br#"{"access_token":["opaque-bare-token-4f1c9e"]}"#,
                "fields do not have the expected types",
            ),
            (br#"{"access_token":"opaque-bare-token-4f1c9e" "#, "ends early"),
            (br#"opaque-bare-token-4f1c9e"#, "not valid JSON"),
        ] {
            let err = parse_token(body, DEFAULT, now()).err().unwrap();
            let text = err.to_string();
            assert!(!text.contains("opaque-bare-token"), "{text}");
            assert!(text.contains(kind), "{text}");
            assert!(text.contains("the token response"), "{text}");
        }
    }

    #[test]
    fn errors_are_classified_per_rfc6749() {
        let none = Credentials::default();
        assert_eq!(
            classify_error(400, br#"{"error":"invalid_client"}"#, &none).reason(),
            Reason::ReauthRequired
        );
        assert_eq!(classify_error(401, b"", &none).reason(), Reason::ReauthRequired);
        // A configuration error at the provider, not a refused credential.
        let unauthorized = classify_error(400, br#"{"error":"unauthorized_client"}"#, &none);
        assert_eq!(unauthorized.reason(), Reason::ProviderRejectedRequest);
        assert!(
            unauthorized.to_string().contains("client_credentials grant"),
            "{unauthorized}"
        );
        assert_eq!(
            classify_error(400, br#"{"error":"invalid_scope"}"#, &none).reason(),
            Reason::PermissionDenied
        );
        assert_eq!(
            classify_error(400, br#"{"error":"unsupported_grant_type"}"#, &none).reason(),
            Reason::ProviderRejectedRequest
        );
    }

    #[test]
    fn error_descriptions_echoing_a_secret_are_scrubbed() {
        let creds = Credentials::new(BTreeMap::from([(
            "client_secret".to_string(),
            SecretString::from("hunter2-secret".to_string()),
        )]));
        let err = classify_error(
            401,
            br#"{"error":"invalid_client","error_description":"secret hunter2-secret is wrong"}"#,
            &creds,
        );
        assert!(!err.to_string().contains("hunter2-secret"));
    }

    #[test]
    fn basic_header_form_encodes_before_base64() {
        // RFC 6749 2.3.1: "a:b" id and "p%ss word" secret.
        let h = basic_header("a:b", "p%ss word");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "a%3Ab:p%25ss+word");
    }

    mod authorization_code {
        use std::sync::Mutex;

        use super::*;
        use crate::{
            RateLimitScope, StateWriter,
            authorization::{Binding, StateKey},
            fields, run_exchange,
        };

        /// The output Secret: every write, in order.
        #[derive(Default)]
        struct Recorder {
            now: Mutex<Credentials>,
            saves: Mutex<Vec<Vec<String>>>,
            fail: bool,
        }

        #[async_trait]
        impl StateWriter for &Recorder {
            async fn write(&mut self, persisted: &Credentials, _dropped: &[&str]) -> Result<(), DriverError> {
                if self.fail {
                    return Err(DriverError::PersistFailed {
                        message: "API server down".into(),
                    });
                }
                self.saves.lock().unwrap().push(persisted.keys().cloned().collect());
                *self.now.lock().unwrap() = persisted.clone();
                Ok(())
            }
        }

        /// A token endpoint answering every grant with `answer` (status, body).
        async fn token_endpoint(answer: (u16, &'static str)) -> url::Url {
            let app = axum::Router::new().route(
                "/token",
                axum::routing::post(
                    move || async move { (axum::http::StatusCode::from_u16(answer.0).unwrap(), answer.1) },
                ),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/token").parse().unwrap()
        }

        fn provider(token_url: url::Url) -> ProviderConfig {
            ProviderConfig {
                name: "p".into(),
                token_url: Some(token_url),
                authorization_url: Some("https://auth.example.com/authorize".parse().unwrap()),
                redirect_url: Some("https://ops.example.com/oauth2/callback".parse().unwrap()),
                base_url: None,
                client_auth: ClientAuth::Basic,
                request_timeout: Duration::from_secs(5),
                default_lifetime: DEFAULT,
                max_concurrency: 1,
                requests_per_second: 100,
                revalidate_interval: Duration::from_secs(3600),
                rate_limit_scope: RateLimitScope::Host,
            }
        }

        async fn run(
            answer: (u16, &'static str),
            persisted: Credentials,
            checkpoint: &Recorder,
        ) -> Result<Outcome, DriverError> {
            let provider = provider(token_endpoint(answer).await);
            let flow = Flow::AuthorizationCode {
                scopes: vec!["read".into()],
                extra_parameters: Default::default(),
                binding: Binding {
                    namespace: "ns".into(),
                    name: "crm".into(),
                    uid: "u".into(),
                },
            };
            *checkpoint.now.lock().unwrap() = persisted.clone();
            let key = StateKey::derive(b"k");
            let inputs = fields([("client_id", "cid"), ("client_secret", "secret-0123")]);
            let req = ExchangeRequest {
                priority: Priority::Urgent,
                provider: &provider,
                flow: &flow,
                inputs: &inputs,
                persisted: &persisted,
                first_claimant: None,
                state_key: Some(&key),
                identity: "u",
                retry_requested: None,
                recorded_id: None,
                recorded_awaiting: None,
                reported_id: None,
                now: now(),
            };
            let driver = OAuth2Driver::new(ProviderHttp::plain().unwrap());
            run_exchange(&driver, &req, &mut &*checkpoint)
                .await
                .map(|finished| finished.outcome)
        }

        /// Rotation: the new refresh token is written before the access
        /// token is handed back, in one token request; if that write fails,
        /// nothing is issued.
        #[tokio::test]
        async fn a_rotated_refresh_token_is_persisted_before_the_token_is_issued() {
            let answer = (200, r#"{"access_token":"at-2","expires_in":60,"refresh_token":"rt-2"}"#);
            let old = fields([(ac_keys::REFRESH_TOKEN, "rt-1")]);
            let rec = Recorder::default();
            let Outcome::Issued(issued) = run(answer, old.clone(), &rec).await.unwrap() else {
                panic!("not issued")
            };
            assert_eq!(issued.fields.get("access_token").unwrap().expose_secret(), "at-2");
            assert_eq!(
                *rec.saves.lock().unwrap(),
                vec![vec![ac_keys::REFRESH_TOKEN.to_string()]]
            );
            assert_eq!(
                rec.now
                    .lock()
                    .unwrap()
                    .get(ac_keys::REFRESH_TOKEN)
                    .unwrap()
                    .expose_secret(),
                "rt-2"
            );
            let failing = Recorder {
                fail: true,
                ..Recorder::default()
            };
            let err = run(answer, old, &failing).await.unwrap_err();
            assert_eq!(err.reason(), Reason::SecretWriteFailed, "{err}");
        }

        /// A routine renewal at a rotating provider costs one token
        /// request: the access token is published from the answer that
        /// brought the new refresh token, once that is written.
        #[tokio::test]
        async fn a_rotating_renewal_costs_one_token_request() {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static CALLS: AtomicUsize = AtomicUsize::new(0);
            let app = axum::Router::new().route(
                "/token",
                axum::routing::post(|| async {
                    CALLS.fetch_add(1, Ordering::SeqCst);
                    r#"{"access_token":"at-2","expires_in":60,"refresh_token":"rt-2"}"#
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let provider = provider(format!("http://{addr}/token").parse().unwrap());
            let flow = Flow::AuthorizationCode {
                scopes: vec![],
                extra_parameters: Default::default(),
                binding: Binding {
                    namespace: "ns".into(),
                    name: "crm".into(),
                    uid: "u".into(),
                },
            };
            let key = StateKey::derive(b"k");
            let inputs = fields([("client_id", "cid"), ("client_secret", "secret-0123")]);
            let persisted = fields([(ac_keys::REFRESH_TOKEN, "rt-1")]);
            let rec = Recorder::default();
            let req = ExchangeRequest {
                priority: Priority::Urgent,
                provider: &provider,
                flow: &flow,
                inputs: &inputs,
                persisted: &persisted,
                first_claimant: None,
                state_key: Some(&key),
                identity: "u",
                retry_requested: None,
                recorded_id: None,
                recorded_awaiting: None,
                reported_id: None,
                now: now(),
            };
            let driver = OAuth2Driver::new(ProviderHttp::plain().unwrap());
            let finished = run_exchange(&driver, &req, &mut &rec).await.unwrap();
            let Outcome::Issued(issued) = finished.outcome else {
                panic!("not issued")
            };
            assert_eq!(issued.fields.get("access_token").unwrap().expose_secret(), "at-2");
            assert_eq!(CALLS.load(Ordering::SeqCst), 1, "a second token request");
            assert_eq!(rec.saves.lock().unwrap().len(), 1);
        }

        /// A refused refresh token: ReauthRequired with a fresh URL, the
        /// refused token dropped, a new state and verifier saved first.
        #[tokio::test]
        async fn invalid_grant_asks_for_consent_again_with_a_fresh_url() {
            let answer = (
                400,
                r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
            );
            let rec = Recorder::default();
            let outcome = run(answer, fields([(ac_keys::REFRESH_TOKEN, "rt-1")]), &rec)
                .await
                .unwrap();
            let Outcome::Pending { reason, message, .. } = outcome else {
                panic!("not pending")
            };
            assert_eq!(reason, Reason::ReauthRequired);
            assert!(message.contains("https://auth.example.com/authorize?"), "{message}");
            let saved = rec.now.lock().unwrap().clone();
            assert!(saved.get(ac_keys::REFRESH_TOKEN).is_none());
            let verifier = saved.get(ac_keys::VERIFIER).unwrap().expose_secret().to_string();
            assert!(!message.contains(&verifier) && !message.contains("rt-1"));
            assert!(saved.get(ac_keys::STATE).is_some() && saved.get(ac_keys::REAUTH).is_some());
        }

        /// A delivered code is exchanged; code, state and verifier go in the
        /// same write that keeps the refresh token.
        #[tokio::test]
        async fn a_delivered_code_is_exchanged_and_the_request_forgotten() {
            let answer = (200, r#"{"access_token":"at-1","expires_in":60,"refresh_token":"rt-1"}"#);
            let rec = Recorder::default();
            let persisted = fields([(ac_keys::STATE, "st"), (ac_keys::VERIFIER, "v"), (ac_keys::CODE, "c")]);
            let Outcome::Issued(_) = run(answer, persisted, &rec).await.unwrap() else {
                panic!("not issued")
            };
            let saved = rec.now.lock().unwrap().clone();
            assert_eq!(
                saved.keys().cloned().collect::<Vec<_>>(),
                vec![ac_keys::REFRESH_TOKEN.to_string()]
            );
        }
    }
}
