//! SmartRecruiters (shared/providers.md section 1): API key validation
//! (`X-SmartToken`), the client-credentials grant at `/identity/oauth/token`,
//! and the General Partner Integration: master credentials -> bearer token
//! (cached and shared) -> one POST creating the customer-level integration ->
//! customer-level credentials -> their own bearer token.
//!
//! Assumptions where the documentation is silent (UNKNOWN in providers.md;
//! docs/providers/smartrecruiters.md lists them for users):
//! - A second POST for the same appId+companyId is not idempotent; the POST
//!   is treated as one-shot. Before sending it, a `partner_post_sent_at`
//!   marker is persisted; if an earlier POST's outcome is unknown (timeout,
//!   5xx, lost answer, crash) the flow stops and asks a person, rather than
//!   risk a duplicate. Answers that prove nothing was created (4xx, 429,
//!   connection refused) clear the marker and are retried normally.
//! - Two Integrations on the same ClusterProvider for the same
//!   appId+companyId would create the integration twice: the younger one is
//!   refused before any call ([`super::Peers`]).
//! - Customer-level credentials do not expire. When SmartRecruiters refuses
//!   them (the customer disabled the integration), the integration is
//!   created again only when a person asks (the retry annotation set to the
//!   integration id) or the master credentials in the input Secret changed
//!   since it was created.
//! - Token-endpoint errors follow RFC 6749 section 5.2; other errors carry
//!   `code`/`message`.
//! - A rejected API key answers 401 (403 for a missing permission).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
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
/// A keyed digest of the master credentials the integration was created
/// with (never the credentials themselves).
pub const MASTER_FINGERPRINT: &str = "partner_master_fingerprint";
/// The validation call of API keys (providers.md 1.10).
const COMPANY_PATH: &str = "configuration/company/my";
/// The General Partner Integration creation endpoint.
const INTEGRATIONS_PATH: &str = "apps-integrations/partner-api/integrations";
/// A cached master token is used only while it has at least this long left
/// (or a fifth of its lifetime, for short-lived tokens).
const MASTER_TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// The `smartrecruiters` driver.
#[derive(Debug)]
pub struct SmartRecruitersDriver {
    http: ProviderHttp,
    /// Master bearer tokens by (provider, hash of master credentials): one
    /// master token per credential and lifetime, shared by every Integration.
    master_tokens: Mutex<HashMap<String, CachedToken>>,
    /// Serialises master-token requests so that N Integrations starting
    /// together cost one token call, not N.
    master_lock: tokio::sync::Mutex<()>,
    /// Creation answers (shown once) whose checkpoint failed, by Integration
    /// identity: written first on the next attempt instead of being lost.
    unsaved: Mutex<HashMap<String, Credentials>>,
}

#[derive(Debug)]
struct CachedToken {
    token: SecretString,
    /// Used from the cache until then.
    fresh_until: Timestamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartnerIntegrationAnswer {
    client_id: Option<String>,
    client_secret: Option<String>,
    integration_id: Option<String>,
}

/// Adds the provider and the step to a failure's message, so that a
/// condition says what failed where.
fn at(step: &str, e: DriverError) -> DriverError {
    let wrap = |message: String| format!("SmartRecruiters, {step}: {message}");
    match e {
        DriverError::CredentialsRejected { message } => DriverError::CredentialsRejected { message: wrap(message) },
        DriverError::PermissionDenied { message } => DriverError::PermissionDenied { message: wrap(message) },
        DriverError::Conflict { message } => DriverError::Conflict { message: wrap(message) },
        DriverError::BadRequest { message } => DriverError::BadRequest { message: wrap(message) },
        DriverError::Unavailable { message } => DriverError::Unavailable { message: wrap(message) },
        DriverError::MalformedResponse { message } => DriverError::MalformedResponse { message: wrap(message) },
        DriverError::Misconfigured { message } => DriverError::Misconfigured { message: wrap(message) },
        other => other.in_step(&format!("SmartRecruiters, {step}")),
    }
}

fn token_path(provider: &ProviderConfig) -> String {
    provider
        .token_url
        .as_ref()
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| "/identity/oauth/token".into())
}

fn has_customer_creds(persisted: &Credentials) -> bool {
    [keys::CLIENT_ID, keys::CLIENT_SECRET, keys::INTEGRATION_ID]
        .iter()
        .all(|k| persisted.require(k).is_ok())
}

/// Keyed digest of the master credentials: tells "the same" from "changed"
/// without storing them.
fn master_fingerprint(inputs: &Credentials) -> Result<String, DriverError> {
    let mut h = Sha256::new();
    h.update(b"integration-operator/smartrecruiters-master\0");
    h.update(inputs.require(keys::CLIENT_ID)?.expose_secret().as_bytes());
    h.update([0]);
    h.update(inputs.require(keys::CLIENT_SECRET)?.expose_secret().as_bytes());
    Ok(hex::encode(&h.finalize()[..16]))
}

impl SmartRecruitersDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self {
            http,
            master_tokens: Mutex::default(),
            master_lock: tokio::sync::Mutex::new(()),
            unsaved: Mutex::default(),
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
        const STEP: &str = "validating the API key (GET /configuration/company/my)";
        let key = req.inputs.require(keys::API_KEY)?;
        let base = base_url(req.provider)?;
        let url = endpoint(base, COMPANY_PATH)?;
        let request = self
            .http
            .client()
            .get(url)
            .header(API_KEY_HEADER, key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        let answer = self
            .http
            .send(req.provider, request, req.inputs)
            .await
            .map_err(|e| at(STEP, e))?;
        if !answer.status.is_success() {
            let status = answer.status.as_u16();
            let detail = scrub(&error_detail(&answer.body), req.inputs);
            return Err(match status {
                401 => DriverError::CredentialsRejected {
                    message: format!(
                        "SmartRecruiters refused the API key in input Secret key \"api_key\" (HTTP 401 at GET /configuration/company/my{}): it was revoked, mistyped, or is not a customer API key; create one in SmartRecruiters under Settings > Admin > Apps & Integrations > Credentials and put it in the input Secret",
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(", {detail}")
                        }
                    ),
                },
                403 => DriverError::PermissionDenied {
                    message: format!(
                        "SmartRecruiters, {STEP}: HTTP 403{}: the key is valid but may not read the company; check the System role of the credential in the Credential Manager",
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(" {detail}")
                        }
                    ),
                },
                _ => at(STEP, classify_status(status, &detail, req.inputs)),
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

    fn master_cache_key(provider: &ProviderConfig, inputs: &Credentials) -> Result<String, DriverError> {
        let id = inputs.require(keys::CLIENT_ID)?;
        let secret = inputs.require(keys::CLIENT_SECRET)?;
        let mut h = Sha256::new();
        h.update(provider.name.as_bytes());
        h.update([0]);
        if let Some(u) = &provider.token_url {
            h.update(u.as_str().as_bytes());
        }
        h.update([0]);
        h.update(id.expose_secret().as_bytes());
        h.update([0]);
        h.update(secret.expose_secret().as_bytes());
        Ok(hex::encode(h.finalize()))
    }

    fn cached_master(&self, key: &str) -> Option<SecretString> {
        self.master_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|c| c.fresh_until > Timestamp::now())
            .map(|c| c.token.clone())
    }

    fn forget_master(&self, key: &str) {
        self.master_tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// A master bearer token, from the cache when one is fresh; the bool
    /// says whether it came from the cache.
    async fn master_token(
        &self,
        req: &ExchangeRequest<'_>,
        provider: &ProviderConfig,
    ) -> Result<(SecretString, bool), DriverError> {
        let step = format!(
            "obtaining a token with the partner master credentials (POST {})",
            token_path(provider)
        );
        let cache_key = Self::master_cache_key(provider, req.inputs)?;
        if let Some(t) = self.cached_master(&cache_key) {
            return Ok((t, true));
        }
        let _one_at_a_time = self.master_lock.lock().await;
        // Another Integration may have fetched it while we waited.
        if let Some(t) = self.cached_master(&cache_key) {
            return Ok((t, true));
        }
        let now = Timestamp::now();
        let token = request_token(
            &self.http,
            provider,
            &TokenRequest {
                client_id: req.inputs.require(keys::CLIENT_ID)?,
                client_secret: req.inputs.require(keys::CLIENT_SECRET)?,
                scopes: &[],
                audience: None,
            },
            req.inputs,
            now,
        )
        .await
        .map_err(|e| at(&step, e))?;
        let lifetime = token.expires_at.duration_since(now);
        let margin = SignedDuration::try_from(MASTER_TOKEN_MARGIN)
            .unwrap_or_default()
            .min(lifetime / 5);
        self.master_tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(
            cache_key,
            CachedToken {
                token: token.access_token.clone(),
                fresh_until: token.expires_at - margin,
            },
        );
        Ok((token.access_token, false))
    }

    /// The customer-level credentials' bearer token.
    async fn customer_token(
        &self,
        req: &ExchangeRequest<'_>,
        provider: &ProviderConfig,
        persisted: &Credentials,
    ) -> Result<Outcome, DriverError> {
        let customer_id = persisted.require(keys::CLIENT_ID)?;
        let customer_secret = persisted.require(keys::CLIENT_SECRET)?;
        let integration_id = persisted.require(keys::INTEGRATION_ID)?.expose_secret().to_string();
        let step = format!(
            "exchanging the customer-level credentials of integration {integration_id} (POST {})",
            token_path(provider)
        );
        let token = request_token(
            &self.http,
            provider,
            &TokenRequest {
                client_id: customer_id,
                client_secret: customer_secret,
                scopes: &[],
                audience: None,
            },
            &req.inputs.and(persisted),
            req.now,
        )
        .await
        .map_err(|e| at(&step, e))?;
        let mut issued = with_base(token, provider);
        issued.provider_id = Some(integration_id);
        Ok(Outcome::Issued(issued))
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

        // An answer shown once that an earlier attempt could not persist.
        if !has_customer_creds(&persisted) {
            let unsaved = self
                .unsaved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(req.identity);
            if let Some(answer) = unsaved {
                persisted = match req.checkpoint.save(&answer, &[]).await {
                    Ok(p) => p,
                    Err(e) => {
                        self.unsaved
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(req.identity.to_string(), answer);
                        return Err(e);
                    }
                };
            }
        }

        let mut recreate = false;
        if has_customer_creds(&persisted) {
            match self.customer_token(req, &provider, &persisted).await {
                Err(DriverError::CredentialsRejected { message }) => {
                    let iid = persisted.require(keys::INTEGRATION_ID)?.expose_secret().to_string();
                    let asked = req.retry_requested == Some(iid.as_str());
                    let master_changed = persisted
                        .get(MASTER_FINGERPRINT)
                        .is_some_and(|fp| fp.expose_secret() != master_fingerprint(req.inputs).unwrap_or_default());
                    if !asked && !master_changed {
                        return Err(DriverError::CredentialsRejected {
                            message: format!(
                                "{message}. The customer may have disabled integration {iid} (appId {app_id:?}, companyId {company_id:?}) in SmartRecruiters, or SmartRecruiters revoked it. Once it is enabled again, or after putting new master credentials into the input Secret, the operator creates it again; to ask for that now, set the annotation integration-operator.io/retry={iid}"
                            ),
                        });
                    }
                    // The old credentials are dead: forget them and create the integration again.
                    persisted = req
                        .checkpoint
                        .save(
                            &Credentials::default(),
                            &[
                                keys::CLIENT_ID,
                                keys::CLIENT_SECRET,
                                keys::INTEGRATION_ID,
                                PARTNER_CLIENT_ID,
                                PARTNER_CLIENT_SECRET,
                                MASTER_FINGERPRINT,
                            ],
                        )
                        .await?;
                    recreate = true;
                }
                other => return other,
            }
        }

        if let Some(sent_at) = persisted.get(POST_MARKER).filter(|m| !m.expose_secret().is_empty()) {
            let asked_again = req.retry_requested.is_some_and(|r| r == sent_at.expose_secret());
            if !asked_again {
                return Err(DriverError::NeedsAttention {
                    reason: crate::reasons::PARTNER_INTEGRATION_UNCERTAIN,
                    message: format!(
                        "SmartRecruiters, creating the partner integration: a request for appId {app_id:?} and companyId {company_id:?} was sent at {} but its answer was not received or could not be stored; SmartRecruiters shows the credentials only once, so the operator does not send it again by itself. Check the company's Apps & Integrations page in SmartRecruiters: if the integration exists, the customer must disable it first; then, to send the request again, set the annotation integration-operator.io/retry={}",
                        sent_at.expose_secret(),
                        sent_at.expose_secret()
                    ),
                });
            }
        } else if let Some(first) = req.peers.first_claimant().await? {
            return Err(DriverError::NeedsAttention {
                reason: crate::reasons::DUPLICATE_INTEGRATION,
                message: format!(
                    "Integration {first} already creates the SmartRecruiters partner integration for appId {app_id:?} and companyId {company_id:?} on ClusterProvider {:?}; SmartRecruiters allows one per app and company, so this Integration sends no request. Use the credentials in {first}'s output Secret, or delete one of the two Integrations",
                    req.provider.name
                ),
            });
        }

        let (mut master, mut cached) = self.master_token(req, &provider).await?;
        let mut body = json!({"appId": app_id, "companyId": company_id});
        if bidirectional {
            if persisted.get(PARTNER_CLIENT_ID).is_none() {
                // Generated once and persisted before SmartRecruiters sees
                // them. The id must be unique across all of the partner's
                // integrations: derived from the Integration's uid (plus a
                // suffix when an integration is created again).
                let mut raw = [0u8; 32];
                rand::rng().fill_bytes(&mut raw);
                let id = if recreate {
                    format!("io-{}-{}", req.identity, req.now.as_second())
                } else {
                    format!("io-{}", req.identity)
                };
                let generated = fields([(PARTNER_CLIENT_ID, id), (PARTNER_CLIENT_SECRET, hex::encode(raw))]);
                persisted = req.checkpoint.save(&generated, &[]).await?;
            }
            body["clientId"] = json!(persisted.get(PARTNER_CLIENT_ID).map(|v| v.expose_secret().to_string()));
            body["clientSecret"] = json!(
                persisted
                    .get(PARTNER_CLIENT_SECRET)
                    .map(|v| v.expose_secret().to_string())
            );
        }
        let url = endpoint(base_url(&provider)?, INTEGRATIONS_PATH)?;
        persisted = req
            .checkpoint
            .save(
                &fields([
                    (POST_MARKER, req.now.to_string()),
                    (MASTER_FINGERPRINT, master_fingerprint(req.inputs)?),
                ]),
                &[],
            )
            .await?;
        let scrub_all = req.inputs.and(&persisted);
        const STEP: &str = "creating the partner integration (POST /apps-integrations/partner-api/integrations)";
        let answer = loop {
            let request = self
                .http
                .client()
                .post(url.clone())
                .bearer_auth(master.expose_secret())
                .header(reqwest::header::ACCEPT, "application/json")
                .json(&body);
            let answer = match self.http.send(&provider, request, &scrub_all).await {
                Ok(a) => a,
                Err(e) => {
                    if proves_not_created(&e) {
                        req.checkpoint.save(&cleared_marker(), &[]).await?;
                    }
                    return Err(at(STEP, e));
                }
            };
            if answer.status.as_u16() == 401 && cached {
                // The shared master token was refused (revoked early):
                // nothing was created; drop it and try once with a new one.
                self.forget_master(&Self::master_cache_key(&provider, req.inputs)?);
                (master, cached) = self.master_token(req, &provider).await?;
                continue;
            }
            break answer;
        };
        if !answer.status.is_success() {
            // Answered and refused: nothing was created; retrying is safe.
            req.checkpoint.save(&cleared_marker(), &[]).await?;
            let status = answer.status.as_u16();
            let detail = scrub(&error_detail(&answer.body), &scrub_all);
            return Err(match status {
                409 => DriverError::Conflict {
                    message: format!(
                        "SmartRecruiters, {STEP}: HTTP 409 {detail}: SmartRecruiters already has an integration for appId {app_id:?} and companyId {company_id:?} that was not created by this Integration (another cluster, a deleted Integration, or by hand), and its credentials are shown only once. Ask the customer to disable it on their Apps & Integrations page; the operator then creates a new one"
                    ),
                },
                403 => DriverError::PermissionDenied {
                    message: format!(
                        "SmartRecruiters, {STEP}: HTTP 403 {detail}: has company {company_id:?} approved app {app_id:?}, and are the master credentials in the input Secret the ones issued for this app?"
                    ),
                },
                401 => DriverError::CredentialsRejected {
                    message: format!(
                        "SmartRecruiters, {STEP}: HTTP 401 {detail}: SmartRecruiters refused the master token; check the master credentials in the input Secret"
                    ),
                },
                _ => at(STEP, classify_status(status, &detail, &scrub_all)),
            });
        }
        let (cid, csecret, iid) = parse_partner_integration(&answer.body).map_err(|e| at(STEP, e))?;
        // Shown once: persisted before anything else happens.
        let answer = fields([
            (keys::CLIENT_ID, cid),
            (keys::CLIENT_SECRET, csecret),
            (keys::INTEGRATION_ID, iid),
            (POST_MARKER, String::new()),
        ]);
        persisted = match req.checkpoint.save(&answer, &[]).await {
            Ok(p) => p,
            Err(e) => {
                self.unsaved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(req.identity.to_string(), answer);
                return Err(e);
            }
        };
        self.customer_token(req, &provider, &persisted).await
    }
}

/// Clears the "request sent" marker. It is set to empty rather than removed:
/// a key the first write of the output Secret created (a create, not an
/// apply) is not removed by a later server-side apply that omits it.
fn cleared_marker() -> Credentials {
    fields([(POST_MARKER, String::new())])
}

fn with_base(token: Token, provider: &ProviderConfig) -> Issued {
    token.into_issued(provider)
}

/// Errors after which the provider certainly did not act on the request.
fn proves_not_created(e: &DriverError) -> bool {
    match e.inner() {
        DriverError::RateLimited { .. } => true,
        DriverError::Unavailable { message } => message == "could not connect",
        _ => false,
    }
}

/// Parses the partner-integration creation answer into (client id, client
/// secret, integration id). Pure, so it can be fuzzed.
pub fn parse_partner_integration(body: &[u8]) -> Result<(String, String, String), DriverError> {
    let parsed: PartnerIntegrationAnswer =
        serde_json::from_slice(body).map_err(|_| DriverError::MalformedResponse {
            message: "the partner-integration answer is not the documented JSON".into(),
        })?;
    let (Some(cid), Some(csecret), Some(iid)) = (parsed.client_id, parsed.client_secret, parsed.integration_id) else {
        return Err(DriverError::MalformedResponse {
            message: "the partner-integration answer lacks clientId, clientSecret or integrationId".into(),
        });
    };
    // Published in the Secret, status and messages: no header or log injection.
    super::check_published("clientId", &cid, 16 * 1024)?;
    super::check_published("clientSecret", &csecret, 16 * 1024)?;
    super::check_published("integrationId", &iid, 256)?;
    Ok((cid, csecret, iid))
}

/// A short, safe rendering of an error body: SmartRecruiters' `message` or
/// `code` fields where present, else nothing (bodies may echo input).
pub fn error_detail(body: &[u8]) -> String {
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
                let step = format!("exchanging the client credentials (POST {})", token_path(&provider));
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
                .await
                .map_err(|e| at(&step, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_named_in_messages() {
        let e = at(
            "creating the partner integration",
            DriverError::PermissionDenied {
                message: "HTTP 403".into(),
            },
        );
        assert_eq!(e.reason(), "PermissionDenied");
        assert!(
            e.to_string()
                .contains("SmartRecruiters, creating the partner integration: HTTP 403")
        );
    }

    #[test]
    fn master_fingerprint_changes_with_either_value_and_hides_them() {
        let a = fields([(keys::CLIENT_ID, "id"), (keys::CLIENT_SECRET, "secret-value-1")]);
        let b = fields([(keys::CLIENT_ID, "id"), (keys::CLIENT_SECRET, "secret-value-2")]);
        let fa = master_fingerprint(&a).unwrap();
        assert_ne!(fa, master_fingerprint(&b).unwrap());
        assert_eq!(fa, master_fingerprint(&a).unwrap());
        assert!(!fa.contains("secret-value"));
    }
}
