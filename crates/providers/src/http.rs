//! The one HTTP path every driver uses to reach a provider: pacing through the
//! shared [`Limiter`], a per-provider timeout, no redirects (credentials must
//! never follow a redirect to another host), a bounded body, and the
//! protocol-independent classification of failures (timeouts, 429, 5xx).

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{RequestBuilder, StatusCode, header::HeaderMap};

use super::{
    Credentials, DriverError, ProviderConfig, RateLimitScope,
    limiter::{Limiter, Limits, Priority},
    scrub,
};

/// Largest provider answer read; anything larger is treated as malformed.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Observes every provider call: (provider, outcome label, latency).
pub type CallObserver = Arc<dyn Fn(&str, &'static str, Duration) + Send + Sync>;

/// A provider's answer that passed the generic checks.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Shared HTTP client for all drivers.
#[derive(Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    limiter: Limiter,
    observer: CallObserver,
}

impl std::fmt::Debug for ProviderHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHttp").finish_non_exhaustive()
    }
}

impl ProviderHttp {
    pub fn new(limiter: Limiter, observer: CallObserver) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("integration-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            limiter,
            observer,
        })
    }

    /// A client with no observer, for tests and tools.
    pub fn plain() -> Result<Self, reqwest::Error> {
        Self::new(Limiter::default(), Arc::new(|_, _, _| {}))
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` to `provider`, paced and timed. 429 and 5xx become
    /// errors here; other statuses are for the driver to interpret.
    /// `secrets` are scrubbed from any provider text that ends up in an error.
    pub async fn send(
        &self,
        provider: &ProviderConfig,
        request: RequestBuilder,
        secrets: &Credentials,
        priority: Priority,
    ) -> Result<Answer, DriverError> {
        let limits = Limits {
            max_concurrency: provider.max_concurrency,
            requests_per_second: provider.requests_per_second,
        };
        // Where a rate limit or a timeout happened, for its message: the
        // host (never the path or query, which may carry ids or keys) and
        // the ClusterProvider.
        let (client, built) = request.build_split();
        let built = built.map_err(|e| transport_error(&e, provider.request_timeout))?;
        let host = host_of(built.url());
        let endpoint = format!("{host} (ClusterProvider {})", provider.name);
        let backoff_key = match provider.rate_limit_scope {
            RateLimitScope::Host => host.clone(),
            RateLimitScope::Credential => format!("{host} {}", credential_of(&built)),
        };
        let request = RequestBuilder::from_parts(client, built);
        let _permit = self
            .limiter
            .acquire(&provider.name, &backoff_key, limits, priority)
            .await;
        let started = Instant::now();
        let result = self.send_once(provider, request, secrets).await;
        let outcome = match &result {
            Ok(_) => "answered",
            Err(e) => e.reason().as_str(),
        };
        (self.observer)(&provider.name, outcome, started.elapsed());
        if let Err(DriverError::RateLimited { retry_after }) = &result {
            // Every request the limit applies to waits (the credential's or
            // the host's), not just this Integration's.
            let delay = retry_after.unwrap_or(Duration::from_secs(1));
            self.limiter.block_for(&backoff_key, delay);
        }
        result.map_err(|e| e.at_endpoint(endpoint))
    }

    async fn send_once(
        &self,
        provider: &ProviderConfig,
        request: RequestBuilder,
        secrets: &Credentials,
    ) -> Result<Answer, DriverError> {
        let timeout = provider.request_timeout;
        let call = async {
            let response = request
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| transport_error(&e, timeout))?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e, timeout))? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(DriverError::MalformedResponse {
                        message: format!("answer larger than {MAX_BODY_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer { status, headers, body })
        };
        let answer = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| DriverError::Timeout { timeout })??;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(DriverError::RateLimited {
                retry_after: retry_after(&answer.headers),
            });
        }
        if answer.status.is_server_error() {
            let message = format!(
                "HTTP {}{}",
                answer.status.as_u16(),
                describe_error_body(&answer.headers, &answer.body, secrets)
            );
            if answer.status == StatusCode::SERVICE_UNAVAILABLE
                && let Some(delay) = retry_after(&answer.headers)
            {
                return Err(DriverError::RateLimited {
                    retry_after: Some(delay),
                });
            }
            return Err(DriverError::Unavailable { message });
        }
        if answer.status.is_redirection() {
            return Err(DriverError::Misconfigured {
                message: format!(
                    "the endpoint answered with a redirect (HTTP {}); redirects are not followed with credentials — set the final URL on the ClusterProvider",
                    answer.status.as_u16()
                ),
            });
        }
        Ok(answer)
    }
}

/// What an error answer said, safe to show: the provider's own message
/// from a JSON object's `message`, `error_description`, `error` or `detail`
/// field (scrubbed of input values), else only the answer's kind and size.
/// Raw bodies are never quoted: an HTML page or a bare string may carry
/// anything, a token included.
pub fn describe_error_body(headers: &HeaderMap, body: &[u8], secrets: &Credentials) -> String {
    if body.is_empty() {
        return String::new();
    }
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(body) {
        let text = ["message", "error_description", "error", "detail"]
            .iter()
            .find_map(|k| fields.get(*k).and_then(|v| v.as_str()))
            .map(|t| scrub(t, secrets))
            .unwrap_or_default();
        if !text.is_empty() {
            return format!(": {text}");
        }
    }
    let kind = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()))
        .map_or_else(|| "with no content type".to_string(), |v| format!("of {v}"));
    format!(" ({} bytes {kind}, not shown)", body.len())
}

/// Which credentials a request is sent with, as an opaque digest (never
/// shown, never stored): its authentication headers, or, where it has none
/// (`client_secret_post`), its form body, which carries the client id and
/// secret. Requests with the same credentials share a rate-limit budget.
fn credential_of(request: &reqwest::Request) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    let mut found = false;
    for name in ["authorization", "x-smarttoken", "x-api-key", "api-key"] {
        if let Some(value) = request.headers().get(name) {
            digest.update(name.as_bytes());
            digest.update(value.as_bytes());
            found = true;
        }
    }
    if !found && let Some(body) = request.body().and_then(reqwest::Body::as_bytes) {
        digest.update(body);
    }
    hex::encode(&digest.finalize()[..8])
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> DriverError {
    if e.is_timeout() {
        return DriverError::Timeout { timeout };
    }
    // reqwest's Display for connection errors names the URL; URLs here never
    // carry credentials (they come from the ClusterProvider, and query-string
    // keys are added only as headers), so the kind of failure is enough.
    let kind = if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the answer"
    } else {
        "the request failed"
    };
    DriverError::Unavailable {
        message: kind.to_string(),
    }
}

/// Parses `Retry-After` (delay-seconds or an HTTP date), bounded to one hour so
/// a hostile value cannot park an Integration forever.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let secs = when.duration_since(jiff::Timestamp::now()).as_secs();
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    };
    Some(delay.min(Duration::from_secs(3600)))
}

/// Checks an endpoint URL against the ClusterProvider's network policy:
/// `https` unless plain http is allowed; no loopback, private or link-local
/// literal addresses (nor `localhost`) unless allowed.
pub fn check_endpoint(url: &url::Url, allow_http: bool, allow_private: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(format!(
                "{} uses plain http; set allowInsecureHttp on the ClusterProvider to allow it",
                redact_url(url)
            ));
        }
        other => return Err(format!("unsupported URL scheme {other:?}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint URLs must not carry credentials".into());
    }
    let private = match url.host() {
        Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => return Err("endpoint URL has no host".into()),
    };
    if private && !allow_private {
        return Err(format!(
            "{} points at a loopback, private or link-local address; set allowPrivateAddresses on the ClusterProvider to allow it",
            redact_url(url)
        ));
    }
    Ok(())
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                // 0.0.0.0/8, "this network": 0.0.0.0 reaches the local host.
                || v4.octets()[0] == 0
                || is_shared(v4)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = || std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // fec0::/10, deprecated site-local, still routed by some stacks.
                || (s[0] & 0xffc0) == 0xfec0
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
                // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) forms.
                || (s[..6] == [0; 6] && is_private(IpAddr::V4(embedded())))
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_private(IpAddr::V4(embedded())))
        }
    }
}

/// 100.64.0.0/10 (carrier-grade NAT, used by some cluster networks).
fn is_shared(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 100 && (b & 0xC0) == 64
}

/// `host` or `host:port`, as a message names an endpoint.
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => "(no host)".to_string(),
    }
}

/// Scheme, host and path only: no query string (it may carry keys).
pub fn redact_url(url: &url::Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn endpoint_policy_refuses_http_and_private_addresses_unless_allowed() {
        assert!(check_endpoint(&url("https://api.example.com/token"), false, false).is_ok());
        let err = check_endpoint(&url("http://api.example.com/token"), false, false).unwrap_err();
        assert!(err.contains("allowInsecureHttp"));
        for private in [
            "https://127.0.0.1/t",
            "https://10.1.2.3/t",
            "https://169.254.169.254/latest",
            "https://[::1]/t",
            "https://localhost/t",
            "https://[::ffff:10.0.0.1]/t",
        ] {
            let err = check_endpoint(&url(private), false, false).unwrap_err();
            assert!(err.contains("allowPrivateAddresses"), "{private}: {err}");
        }
        assert!(check_endpoint(&url("http://127.0.0.1:8080/t"), true, true).is_ok());
        assert!(check_endpoint(&url("https://user:pw@example.com/"), false, false).is_err());
        assert!(check_endpoint(&url("file:///etc/passwd"), true, true).is_err());
    }

    #[test]
    fn retry_after_parses_seconds_and_is_bounded() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3600)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_bodies_are_described_not_quoted() {
        let mut h = HeaderMap::new();
        let none = Credentials::default();
        assert_eq!(
            describe_error_body(&h, br#"{"message":"maintenance until 10:00"}"#, &none),
            ": maintenance until 10:00"
        );
        // A bare string, an HTML page: kind and size only.
        let bare = describe_error_body(&h, br#""opaque-token-8f2a61c9""#, &none);
        assert!(!bare.contains("opaque-token"), "{bare}");
        assert_eq!(bare, " (23 bytes with no content type, not shown)");
        h.insert(
            reqwest::header::CONTENT_TYPE,
            "text/html; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(
            describe_error_body(&h, b"<html>secret-ish</html>", &none),
            " (23 bytes of text/html, not shown)"
        );
    }

    #[test]
    fn redact_url_drops_query_strings() {
        assert_eq!(
            redact_url(&url("https://h.example/p?api_key=secret")),
            "https://h.example/p"
        );
    }
}
