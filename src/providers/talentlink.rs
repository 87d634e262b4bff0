//! Cornerstone TalentLink (formerly Lumesse TalentLink; shared/providers.md
//! section 2): no token exchange — every request carries HTTP Basic
//! (username/password) plus the `api_key` query parameter. The driver
//! validates all three with a cheap REST read and publishes them.
//!
//! Assumptions (UNKNOWN in providers.md): the validation read is
//! `GET {baseUrl}/department?api_key=…` with Basic; 401 means wrong
//! username/password or key, 403 a key not yet approved or a missing role.
//! The API key travels in a query string, so URLs are never logged.

use async_trait::async_trait;
use base64::Engine;
use secrecy::ExposeSecret;

use super::{
    Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderHttp, base_url, endpoint, fields, keys,
};

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
        let mut url = endpoint(base, "department")?;
        url.query_pairs_mut().append_pair("api_key", api_key.expose_secret());
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                username.expose_secret(),
                password.expose_secret()
            ))
        );
        let request = self
            .http
            .client()
            .get(url)
            .header(reqwest::header::AUTHORIZATION, &basic)
            .header(reqwest::header::ACCEPT, "application/json");
        let answer = self.http.send(req.provider, request, req.inputs).await?;
        match answer.status.as_u16() {
            200..=299 => {}
            401 => {
                return Err(DriverError::CredentialsRejected {
                    message: "TalentLink refused the username, password or API key (HTTP 401)".into(),
                });
            }
            403 => {
                return Err(DriverError::PermissionDenied {
                    message: "TalentLink denied access (HTTP 403): the API key may not be approved yet, or the user lacks the Webservices role".into(),
                });
            }
            other => {
                return Err(DriverError::BadRequest {
                    message: format!("TalentLink answered HTTP {other} to the validation read"),
                });
            }
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
        }))
    }
}
