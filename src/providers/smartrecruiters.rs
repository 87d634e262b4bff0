//! SmartRecruiters (shared/providers.md section 1): API key validation
//! (`X-SmartToken`), the client-credentials grant at `/identity/oauth/token`,
//! and the General Partner Integration: master credentials -> bearer token
//! (cached and shared) -> one POST creating the customer-level integration ->
//! customer-level credentials -> their own bearer token.
//!
//! Assumptions where the documentation is silent (UNKNOWN in providers.md):
//! - A second POST for the same appId+companyId is not idempotent; the POST
//!   is treated as one-shot. Before sending it, a `partner_post_sent_at`
//!   marker is persisted; if an earlier POST's outcome is unknown (timeout,
//!   5xx, lost answer, crash) the flow stops and asks a person, rather than
//!   risk a duplicate. Answers that prove nothing was created (4xx, 429,
//!   connection refused) clear the marker and are retried normally.
//! - Token-endpoint errors follow RFC 6749 section 5.2.
//! - A rejected API key answers 401 (403 for a missing permission).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use jiff::Timestamp;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderConfig, ProviderHttp, base_url,
    classify_status, endpoint, fields, keys,
    oauth2::{Token, TokenRequest, request_token},
    scrub,
};

/// Header SmartRecruiters API keys travel in.
pub const API_KEY_HEADER: &str = "X-SmartToken";
/// Persisted before the partner POST is sent (its value: when).
pub const POST_MARKER: &str = "partner_post_sent_at";
/// The partner-side client id sent for bi-directional integrations.
pub const PARTNER_CLIENT_ID: &str = "partner_client_id";
/// The partner-side client secret sent for bi-directional integrations.
pub const PARTNER_CLIENT_SECRET: &str = "partner_client_secret";
/// A cached master token is used only while it has at least this long left.
const MASTER_TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// The `smartrecruiters` driver.
#[derive(Debug)]
pub struct SmartRecruitersDriver {
    http: ProviderHttp,
    /// Master bearer tokens by (provider, hash of master credentials): one
    /// master token per credential and lifetime, shared by every Integration.
    master_tokens: Mutex<HashMap<String, (SecretString, Timestamp)>>,
    /// Serialises master-token requests so that N Integrations starting
    /// together cost one token call, not N.
    master_lock: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartnerIntegrationAnswer {
    client_id: Option<String>,
    client_secret: Option<String>,
    integration_id: Option<String>,
}

impl SmartRecruitersDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self {
            http,
            master_tokens: Mutex::default(),
            master_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn token_url(provider: &ProviderConfig) -> Result<ProviderConfig, DriverError> {
        let mut p = provider.clone();
        if p.token_url.is_none() {
            p.token_url = Some(endpoint(base_url(provider)?, "identity/oauth/token")?);
        }
        Ok(p)
    }

    async fn validate_api_key(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        let key = req.inputs.require(keys::API_KEY)?;
        let base = base_url(req.provider)?;
        let url = endpoint(base, "configuration/company/my")?;
        let request = self
            .http
            .client()
            .get(url)
            .header(API_KEY_HEADER, key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        let answer = self.http.send(req.provider, request, req.inputs).await?;
        if !answer.status.is_success() {
            let status = answer.status.as_u16();
            return Err(match status {
                401 => DriverError::CredentialsRejected {
                    message: "SmartRecruiters refused the API key (HTTP 401) at GET /configuration/company/my".into(),
                },
                _ => classify_status(status, &error_detail(&answer.body), req.inputs),
            });
        }
        let issued = Issued {
            fields: fields([
                (keys::HEADER_NAME, API_KEY_HEADER.to_string()),
                (keys::HEADER_VALUE, key.expose_secret().to_string()),
                (keys::BASE_URL, base.to_string()),
            ]),
            expires_at: None,
            lifetime_defaulted: false,
            provider_id: None,
        };
        Ok(Outcome::Issued(issued))
    }

    async fn master_token(
        &self,
        req: &ExchangeRequest<'_>,
        provider: &ProviderConfig,
    ) -> Result<SecretString, DriverError> {
        let id = req.inputs.require(keys::CLIENT_ID)?;
        let secret = req.inputs.require(keys::CLIENT_SECRET)?;
        let cache_key = {
            let mut h = Sha256::new();
            h.update(provider.name.as_bytes());
            h.update([0]);
            h.update(id.expose_secret().as_bytes());
            h.update([0]);
            h.update(secret.expose_secret().as_bytes());
            hex::encode(h.finalize())
        };
        let fresh = |now: Timestamp, map: &HashMap<String, (SecretString, Timestamp)>| {
            map.get(&cache_key)
                .filter(|(_, exp)| *exp > now + jiff::SignedDuration::try_from(MASTER_TOKEN_MARGIN).unwrap_or_default())
                .map(|(t, _)| t.clone())
        };
        if let Some(t) = fresh(
            Timestamp::now(),
            &self.master_tokens.lock().unwrap_or_else(|p| p.into_inner()),
        ) {
            return Ok(t);
        }
        let _one_at_a_time = self.master_lock.lock().await;
        // Another Integration may have fetched it while we waited.
        if let Some(t) = fresh(
            Timestamp::now(),
            &self.master_tokens.lock().unwrap_or_else(|p| p.into_inner()),
        ) {
            return Ok(t);
        }
        let token = request_token(
            &self.http,
            provider,
            &TokenRequest {
                client_id: id,
                client_secret: secret,
                scopes: &[],
                audience: None,
            },
            req.inputs,
            Timestamp::now(),
        )
        .await?;
        self.master_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, (token.access_token.clone(), token.expires_at));
        Ok(token.access_token)
    }

    async fn partner_integration(
        &self,
        req: &ExchangeRequest<'_>,
        app_id: &str,
        company_id: &str,
        bidirectional: bool,
    ) -> Result<Outcome, DriverError> {
        let provider = Self::token_url(req.provider)?;
        let mut persisted = req.persisted.clone();
        let scrub_all = req.inputs.and(&persisted);
        let have_customer_creds = persisted.get(keys::CLIENT_ID).is_some()
            && persisted.get(keys::CLIENT_SECRET).is_some()
            && persisted.get(keys::INTEGRATION_ID).is_some();
        if !have_customer_creds {
            if let Some(sent_at) = persisted.get(POST_MARKER) {
                let asked_again = req.retry_requested.is_some_and(|r| r == sent_at.expose_secret());
                if !asked_again {
                    return Err(DriverError::NeedsAttention {
                        reason: "PartnerIntegrationUncertain",
                        message: format!(
                            "a request creating the SmartRecruiters integration for appId {app_id:?} and companyId {company_id:?} was sent at {} but its answer was not received; SmartRecruiters shows the credentials only once. Check the integration in SmartRecruiters; to send the request again, set the annotation integration-operator.io/retry={}",
                            sent_at.expose_secret(),
                            sent_at.expose_secret()
                        ),
                    });
                }
            }
            let mut body = json!({"appId": app_id, "companyId": company_id});
            if bidirectional {
                if persisted.get(PARTNER_CLIENT_ID).is_none() {
                    // Generated once and persisted before SmartRecruiters sees them.
                    let mut raw = [0u8; 32];
                    rand::rng().fill_bytes(&mut raw);
                    let generated = fields([
                        (PARTNER_CLIENT_ID, format!("io-{}", req.identity)),
                        (PARTNER_CLIENT_SECRET, hex::encode(raw)),
                    ]);
                    persisted = req.checkpoint.save(&generated, &[]).await?;
                }
                body["clientId"] = json!(persisted.get(PARTNER_CLIENT_ID).map(|v| v.expose_secret().to_string()));
                body["clientSecret"] = json!(
                    persisted
                        .get(PARTNER_CLIENT_SECRET)
                        .map(|v| v.expose_secret().to_string())
                );
            }
            let master = self.master_token(req, &provider).await?;
            let url = endpoint(base_url(&provider)?, "apps-integrations/partner-api/integrations")?;
            persisted = req
                .checkpoint
                .save(&fields([(POST_MARKER, req.now.to_string())]), &[])
                .await?;
            let request = self
                .http
                .client()
                .post(url)
                .bearer_auth(master.expose_secret())
                .json(&body);
            let scrub_all = scrub_all.and(&persisted);
            let answer = match self.http.send(&provider, request, &scrub_all).await {
                Ok(a) => a,
                Err(e) => {
                    if proves_not_created(&e) {
                        req.checkpoint.save(&Credentials::default(), &[POST_MARKER]).await?;
                    }
                    return Err(e);
                }
            };
            if !answer.status.is_success() {
                // Answered and refused: nothing was created; retrying is safe.
                req.checkpoint.save(&Credentials::default(), &[POST_MARKER]).await?;
                let status = answer.status.as_u16();
                return Err(match status {
                    409 => DriverError::Conflict {
                        message: format!(
                            "SmartRecruiters already has an integration for appId {app_id:?} and companyId {company_id:?} (HTTP 409): {}",
                            scrub(&error_detail(&answer.body), &scrub_all)
                        ),
                    },
                    403 => DriverError::PermissionDenied {
                        message: format!(
                            "SmartRecruiters refused to create the integration (HTTP 403) — has company {company_id:?} approved app {app_id:?}? {}",
                            scrub(&error_detail(&answer.body), &scrub_all)
                        ),
                    },
                    _ => classify_status(status, &error_detail(&answer.body), &scrub_all),
                });
            }
            let parsed: PartnerIntegrationAnswer =
                serde_json::from_slice(&answer.body).map_err(|_| DriverError::MalformedResponse {
                    message: "the partner-integration answer is not the documented JSON".into(),
                })?;
            let (Some(cid), Some(csecret), Some(iid)) = (parsed.client_id, parsed.client_secret, parsed.integration_id)
            else {
                return Err(DriverError::MalformedResponse {
                    message: "the partner-integration answer lacks clientId, clientSecret or integrationId".into(),
                });
            };
            // Shown once: persisted before anything else happens.
            persisted = req
                .checkpoint
                .save(
                    &fields([
                        (keys::CLIENT_ID, cid),
                        (keys::CLIENT_SECRET, csecret),
                        (keys::INTEGRATION_ID, iid),
                    ]),
                    &[POST_MARKER],
                )
                .await?;
        }
        let customer_id = persisted.require(keys::CLIENT_ID)?.clone();
        let customer_secret = persisted.require(keys::CLIENT_SECRET)?.clone();
        let integration_id = persisted.require(keys::INTEGRATION_ID)?.expose_secret().to_string();
        let token = request_token(
            &self.http,
            &provider,
            &TokenRequest {
                client_id: &customer_id,
                client_secret: &customer_secret,
                scopes: &[],
                audience: None,
            },
            &req.inputs.and(&persisted),
            req.now,
        )
        .await?;
        let mut issued = with_base(token, &provider);
        issued.provider_id = Some(integration_id);
        Ok(Outcome::Issued(issued))
    }
}

fn with_base(token: Token, provider: &ProviderConfig) -> Issued {
    token.into_issued(provider)
}

/// Errors after which the provider certainly did not act on the request.
fn proves_not_created(e: &DriverError) -> bool {
    match e {
        DriverError::RateLimited { .. } => true,
        DriverError::Unavailable { message } => message == "could not connect",
        _ => false,
    }
}

/// A short, safe rendering of an error body: SmartRecruiters' `message` or
/// `code` fields where present, else nothing (bodies may echo input).
fn error_detail(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    ["message", "code", "error_description", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default()
}

#[async_trait]
impl Driver for SmartRecruitersDriver {
    fn supports(&self, flow: &Flow) -> bool {
        matches!(
            flow,
            Flow::ApiKey | Flow::ClientCredentials { .. } | Flow::PartnerIntegration { .. }
        )
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        match req.flow {
            Flow::ApiKey => self.validate_api_key(req).await,
            Flow::ClientCredentials { scopes, audience } => {
                let provider = Self::token_url(req.provider)?;
                let token = request_token(
                    &self.http,
                    &provider,
                    &TokenRequest {
                        client_id: req.inputs.require(keys::CLIENT_ID)?,
                        client_secret: req.inputs.require(keys::CLIENT_SECRET)?,
                        scopes,
                        audience: audience.as_deref(),
                    },
                    req.inputs,
                    req.now,
                )
                .await?;
                Ok(Outcome::Issued(with_base(token, &provider)))
            }
            Flow::PartnerIntegration {
                app_id,
                company_id,
                bidirectional,
            } => self.partner_integration(req, app_id, company_id, *bidirectional).await,
            other => Err(DriverError::Misconfigured {
                message: format!("smartrecruiters does not support the {} flow", other.name()),
            }),
        }
    }
}
