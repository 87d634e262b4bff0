//! Cornerstone TalentLink (formerly Lumesse TalentLink; shared/providers.md
//! section 2): no token exchange — every request carries HTTP Basic
//! (username/password) plus the `api_key` query parameter. The driver
//! validates all three with a cheap REST read and publishes them: the Basic
//! header, the API key and the ClusterProvider's base URL (the shared proxy
//! or a regional host). Nothing expires; the controller validates again
//! every `revalidateInterval` and whenever the input Secret changes.
//!
//! Assumptions (UNKNOWN in providers.md 2.4/2.5; also in
//! docs/providers/talentlink.md):
//! - The validation read is `GET {baseUrl}/department?api_key=…&query=…`
//!   with Basic, asking for the smallest page: the GraphQL-style `query`
//!   [`VALIDATION_QUERY`] (one department, its id only), the form a
//!   third-party connector sends (providers.md 2.3). Without it the whole
//!   department tree comes back, which in a large tenant outgrows the answer
//!   cap. A 2xx answer must be JSON.
//! - 401 means a wrong username, password or API key (`ReauthRequired`);
//!   403 a key not approved yet or a user without the Webservices role
//!   (`PermissionDenied`, retried slowly); 404 a wrong `baseUrl`.
//! - The username is sent exactly as stored in the input Secret (bare, or in
//!   the `Company:user:BO` form if the tenant needs it).
//! - Rate limits are unknown: a 429 is retried with backoff, never before
//!   `Retry-After`.
//!
//! The API key travels in a query string: URLs are never logged, and
//! provider text is scrubbed of every input value before it is shown.

use async_trait::async_trait;
use base64::Engine;
use secrecy::ExposeSecret;

use super::{
    Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderHttp, base_url, endpoint, fields,
    keys, scrub,
};

/// Provider name used in messages.
const TALENTLINK: &str = "Cornerstone TalentLink";
/// The validation step, as conditions name it.
const STEP: &str = "validating the username, password and API key with a read of /department (GET /department)";

/// The `query` of the validation read: the smallest page (one department,
/// its id only), in the form nntthuy-axonivy/talentLink-connector sends
/// (`{departments(first: 10, after: 0, where: …) {id, …}}`).
pub const VALIDATION_QUERY: &str = "{departments(first: 1, after: 0) {id}}";

/// The `cornerstone-talentlink` driver.
#[derive(Debug)]
pub struct TalentLinkDriver {
    http: ProviderHttp,
}

impl TalentLinkDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }
}

/// The provider's message in an error answer (JSON `message` or `error`, or
/// short plain text), scrubbed of input values.
fn detail(body: &[u8], secrets: &Credentials) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => ["message", "error", "errorMessage"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    scrub(&text, secrets)
}

/// Adds the provider and the step to an error from the HTTP layer.
fn in_step(err: DriverError) -> DriverError {
    match err {
        DriverError::Unavailable { message } => DriverError::Unavailable {
            message: format!("{TALENTLINK}, {STEP}: {message}"),
        },
        DriverError::MalformedResponse { message } => DriverError::MalformedResponse {
            message: format!("{TALENTLINK}, {STEP}: {message}"),
        },
        DriverError::Misconfigured { message } => DriverError::Misconfigured {
            message: format!("{TALENTLINK}, {STEP}: {message}"),
        },
        other => other.in_step(&format!("{TALENTLINK}, {STEP}")),
    }
}

/// Maps the answer to the validation read to an error, if it is one. Pure.
pub fn classify(status: u16, body: &[u8], secrets: &Credentials) -> Option<DriverError> {
    let detail = detail(body, secrets);
    let said = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    Some(match status {
        200..=299 => {
            return match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(_) => None,
                Err(_) => Some(DriverError::MalformedResponse {
                    message: format!("{TALENTLINK}, {STEP}: the answer is not JSON"),
                }),
            };
        }
        401 => DriverError::CredentialsRejected {
            message: format!(
                "{TALENTLINK} refused the username, password or API key (input Secret keys \"username\", \"password\", \"api_key\") while {STEP}: {said}; put the current password of the TalentLink API user and the API key of the integration it is assigned to into the input Secret"
            ),
        },
        403 => DriverError::PermissionDenied {
            message: format!(
                "{TALENTLINK} denied access while {STEP}: {said}; a production API key works only once Cornerstone TalentLink approved its integration (Integrations Marketplace), and the user needs API access and the Webservices role; checked again by itself"
            ),
        },
        404 => DriverError::Misconfigured {
            message: format!(
                "{TALENTLINK} has no /department resource at the ClusterProvider's baseUrl ({said}); baseUrl must be the REST API base, e.g. https://apiproxy.shared.lumessetalentlink.com/tlk/rest"
            ),
        },
        _ => DriverError::BadRequest {
            message: format!("{TALENTLINK} rejected the request while {STEP}: {said}"),
        },
    })
}

/// The Basic header value for `username:password`.
pub fn basic_header(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

#[async_trait]
impl Driver for TalentLinkDriver {
    fn supports(&self, flow: &Flow) -> bool {
        matches!(flow, Flow::BasicAuth)
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        let username = req.inputs.require("username")?;
        let password = req.inputs.require("password")?;
        let api_key = req.inputs.require(keys::API_KEY)?;
        let base = base_url(req.provider)?;
        let mut url = endpoint(base, "department").map_err(in_step)?;
        url.query_pairs_mut()
            .append_pair("api_key", api_key.expose_secret())
            .append_pair("query", VALIDATION_QUERY);
        let basic = basic_header(username.expose_secret(), password.expose_secret());
        let request = self
            .http
            .client()
            .get(url)
            .header(reqwest::header::AUTHORIZATION, &basic)
            .header(reqwest::header::ACCEPT, "application/json");
        let answer = self
            .http
            .send(req.provider, request, req.inputs, req.priority)
            .await
            .map_err(in_step)?;
        if let Some(err) = classify(answer.status.as_u16(), &answer.body, req.inputs) {
            return Err(err);
        }
        Ok(Outcome::Issued(Issued {
            fields: fields([
                (keys::AUTHORIZATION, basic.clone()),
                (keys::HEADER_NAME, "Authorization".to_string()),
                (keys::HEADER_VALUE, basic),
                (keys::API_KEY, api_key.expose_secret().to_string()),
                (keys::BASE_URL, base.to_string()),
            ]),
            expires_at: None,
            lifetime_defaulted: false,
            provider_id: None,
            warning: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasons::Reason;

    fn secrets() -> Credentials {
        fields([("password", "canary-password-1"), ("api_key", "canary-key-1")])
    }

    #[test]
    fn refused_credentials_name_talentlink_the_step_and_the_keys() {
        let err = classify(401, br#"{"message":"bad key canary-key-1"}"#, &secrets()).unwrap();
        assert_eq!(err.reason(), Reason::ReauthRequired);
        let text = err.to_string();
        assert!(
            text.contains("Cornerstone TalentLink refused") && text.contains("GET /department"),
            "{text}"
        );
        assert!(!text.contains("canary-key-1"), "{text}");
    }

    #[test]
    fn statuses_map_to_actionable_reasons() {
        let s = secrets();
        assert!(classify(200, b"{}", &s).is_none());
        assert_eq!(
            classify(200, b"<html>", &s).unwrap().reason(),
            Reason::MalformedResponse
        );
        assert_eq!(classify(403, b"", &s).unwrap().reason(), Reason::PermissionDenied);
        assert_eq!(classify(404, b"", &s).unwrap().reason(), Reason::ProviderMisconfigured);
        assert_eq!(
            classify(400, b"", &s).unwrap().reason(),
            Reason::ProviderRejectedRequest
        );
    }

    #[test]
    fn basic_header_is_rfc7617() {
        assert_eq!(
            basic_header("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
