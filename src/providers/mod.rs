//! Provider drivers: turn input credentials into issued credentials.
//!
//! A driver knows a provider's wire format and nothing of Kubernetes: it gets
//! typed flow parameters, an endpoint configuration and [`SecretString`]
//! inputs, and returns an [`Outcome`] or a classified [`DriverError`]. The
//! controller turns outcomes into Secrets and conditions.

pub mod http;
pub mod limiter;
pub mod oauth2;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use http::ProviderHttp;

/// Output Secret keys shared by every provider (the documented layout).
pub mod keys {
    /// Ready header value for `Authorization` (`Bearer …`, `Basic …`).
    pub const AUTHORIZATION: &str = "authorization";
    /// Name of the header to send.
    pub const HEADER_NAME: &str = "header_name";
    /// Value of the header to send.
    pub const HEADER_VALUE: &str = "header_value";
    /// Access token, where the flow yields one.
    pub const ACCESS_TOKEN: &str = "access_token";
    /// Token type as the provider named it (`Bearer`).
    pub const TOKEN_TYPE: &str = "token_type";
    /// Expiry of the access token, RFC 3339.
    pub const EXPIRES_AT: &str = "expires_at";
    /// Customer-level client id a provider issued.
    pub const CLIENT_ID: &str = "client_id";
    /// Customer-level client secret a provider issued.
    pub const CLIENT_SECRET: &str = "client_secret";
    /// Provider-side integration or instance id.
    pub const INTEGRATION_ID: &str = "integration_id";
    /// API base URL the credentials are for.
    pub const BASE_URL: &str = "base_url";
}

/// Endpoint configuration of one provider, as the admin set it on a
/// ClusterProvider, with defaults applied.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// ClusterProvider name; keys the shared rate limiter.
    pub name: String,
    pub token_url: Option<Url>,
    pub base_url: Option<Url>,
    pub client_auth: ClientAuth,
    pub request_timeout: Duration,
    /// Lifetime assumed when the provider does not say.
    pub default_lifetime: Duration,
    pub max_concurrency: usize,
    pub requests_per_second: u32,
}

/// RFC 6749 section 2.3.1 client authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// Parameters of the flow an Integration asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Flow {
    ClientCredentials {
        scopes: Vec<String>,
        audience: Option<String>,
    },
}

impl Flow {
    /// Stable name, used in conditions and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Flow::ClientCredentials { .. } => "clientCredentials",
        }
    }
}

/// Named credential values (input Secret data, or previously issued fields).
/// Values are [`SecretString`]s: their `Debug` output is redacted.
#[derive(Clone, Default)]
pub struct Credentials(BTreeMap<String, SecretString>);

impl std::fmt::Debug for Credentials {
    // Names only: values never reach a log line, even at trace level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Credentials {
    pub fn new(values: BTreeMap<String, SecretString>) -> Self {
        Self(values)
    }

    /// The value under `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&SecretString, DriverError> {
        match self.0.get(key) {
            Some(v) if !v.expose_secret().is_empty() => Ok(v),
            _ => Err(DriverError::MissingInput { key: key.to_string() }),
        }
    }

    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &SecretString)> {
        self.0.iter()
    }

    /// Every value, for scrubbing provider messages before they are shown.
    pub fn values(&self) -> impl Iterator<Item = &SecretString> {
        self.0.values()
    }
}

/// What a driver is asked to do.
pub struct ExchangeRequest<'a> {
    pub provider: &'a ProviderConfig,
    pub flow: &'a Flow,
    /// The input Secret's data.
    pub inputs: &'a Credentials,
    /// Fields already in the output Secret, for flows whose earlier steps
    /// issued credentials that are shown only once (checkpoints).
    pub persisted: &'a Credentials,
    pub now: Timestamp,
}

/// What a driver returns.
#[derive(Debug)]
pub enum Outcome {
    /// Final credentials, ready for the output Secret.
    Issued(Issued),
    /// Credentials the provider shows only once: the controller must persist
    /// them in the output Secret before calling the driver again.
    Checkpoint(Credentials),
}

/// Credentials a provider issued.
#[derive(Debug)]
pub struct Issued {
    /// Output Secret fields, keyed by the names in [`keys`].
    pub fields: Credentials,
    /// When they expire; `None` for credentials without a lifetime (API keys).
    pub expires_at: Option<Timestamp>,
    /// The provider gave no lifetime and `default_lifetime` was assumed.
    pub lifetime_defaulted: bool,
    /// Provider-side identifier, where there is one.
    pub provider_id: Option<String>,
}

/// Why a driver failed, classified so the controller can decide what to do.
/// Messages are provider text scrubbed of input values and truncated.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DriverError {
    #[error("input Secret has no non-empty key {key:?}")]
    MissingInput { key: String },
    #[error("the provider refused the credentials: {message}")]
    CredentialsRejected { message: String },
    #[error("the provider denied the request: {message}")]
    PermissionDenied { message: String },
    #[error("the provider reported a conflict: {message}")]
    Conflict { message: String },
    #[error("the provider rejected the request: {message}")]
    BadRequest { message: String },
    #[error("the provider is rate limiting requests{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider is unavailable: {message}")]
    Unavailable { message: String },
    #[error("the provider did not answer within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("the provider's answer could not be understood: {message}")]
    MalformedResponse { message: String },
    #[error("the provider endpoint is not configured correctly: {message}")]
    Misconfigured { message: String },
}

impl DriverError {
    /// PascalCase reason, used as condition reason, Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DriverError::MissingInput { .. } => "InvalidInputSecret",
            DriverError::CredentialsRejected { .. } => "ReauthRequired",
            DriverError::PermissionDenied { .. } => "PermissionDenied",
            DriverError::Conflict { .. } => "ProviderConflict",
            DriverError::BadRequest { .. } => "ProviderRejectedRequest",
            DriverError::RateLimited { .. } => "ProviderRateLimited",
            DriverError::Unavailable { .. } => "ProviderUnavailable",
            DriverError::Timeout { .. } => "ProviderTimeout",
            DriverError::MalformedResponse { .. } => "MalformedResponse",
            DriverError::Misconfigured { .. } => "ProviderMisconfigured",
        }
    }

    /// Transient failures are retried with backoff; the others need a change
    /// by a person (new credentials, a fixed spec) and are retried slowly.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DriverError::RateLimited { .. }
                | DriverError::Unavailable { .. }
                | DriverError::Timeout { .. }
                | DriverError::MalformedResponse { .. }
        )
    }

    /// The least time to wait before calling the provider again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DriverError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// A provider driver.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Whether this driver implements `flow`.
    fn supports(&self, flow: &Flow) -> bool;

    /// Runs the flow (or its next step).
    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError>;
}

/// Makes provider text safe to show in a condition, an Event or a log line:
/// removes any input value it echoes, drops control characters (no log or
/// header injection) and bounds its length.
pub fn scrub(text: &str, secrets: &Credentials) -> String {
    const MAX: usize = 200;
    let mut out = text.to_string();
    for value in secrets.values() {
        let v = value.expose_secret();
        // Short values would blank out ordinary words; real secrets are longer.
        if v.len() >= 4 {
            out = out.replace(v, "[redacted]");
        }
    }
    let mut cleaned: String = out.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if cleaned.chars().count() > MAX {
        cleaned = cleaned.chars().take(MAX).collect::<String>() + "…";
    }
    cleaned.trim().to_string()
}

/// The drivers compiled into the operator, shared by every reconcile (they
/// hold per-provider rate limiters and token caches).
#[derive(Clone)]
pub struct Drivers {
    pub oauth2: Arc<oauth2::OAuth2Driver>,
}

impl Drivers {
    pub fn new(http: ProviderHttp) -> Self {
        Self {
            oauth2: Arc::new(oauth2::OAuth2Driver::new(http)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pairs: &[(&str, &str)]) -> Credentials {
        Credentials::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn scrub_removes_echoed_secrets_and_control_characters() {
        let c = creds(&[("client_secret", "s3cr3t-value")]);
        let got = scrub("bad secret s3cr3t-value\r\nX-Injected: yes", &c);
        assert!(!got.contains("s3cr3t-value"));
        assert!(!got.contains('\n') && !got.contains('\r'));
        assert!(got.contains("[redacted]"));
    }

    #[test]
    fn scrub_bounds_length() {
        let got = scrub(&"x".repeat(10_000), &Credentials::default());
        assert!(got.chars().count() <= 201);
    }

    #[test]
    fn credentials_debug_shows_names_only() {
        let c = creds(&[("client_secret", "s3cr3t-value")]);
        let dbg = format!("{c:?}");
        assert!(dbg.contains("client_secret"));
        assert!(!dbg.contains("s3cr3t-value"));
    }

    #[test]
    fn missing_and_empty_inputs_name_the_key() {
        let c = creds(&[("client_id", "")]);
        let err = c.require("client_id").unwrap_err();
        assert_eq!(err.reason(), "InvalidInputSecret");
        assert!(err.to_string().contains("client_id"));
    }
}
