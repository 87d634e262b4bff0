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
//!   refused before any call ([`super::ExchangeRequest::first_claimant`]).
//! - Customer-level credentials do not expire. When SmartRecruiters refuses
//!   them (the customer disabled the integration), the integration is
//!   created again only when a person asks (the retry annotation set to the
//!   integration id) or the master credentials in the input Secret changed
//!   since it was created.
//! - Token-endpoint errors follow RFC 6749 section 5.2; other errors carry
//!   `code`/`message`.
//! - A rejected API key answers 401. A 403 on the API-key check means the
//!   key authenticated but its System role may not read the company: the
//!   key is published with a Warning condition (`ApiKeyPermissionLimited`),
//!   not refused (see docs/providers/smartrecruiters.md for why).

use crate::reasons::Reason;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderConfig, ProviderHttp, Then,
    base_url, classify_status, endpoint, fields, keys,
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
/// Written by earlier versions (a digest of the master credentials the
/// integration was created with); removed when an integration is created again.
pub const MASTER_FINGERPRINT: &str = "partner_master_fingerprint";
/// The appId the stored customer-level credentials (or the request the
/// marker stands for) were made for.
pub const MADE_FOR_APP_ID: &str = "partner_app_id";
/// The companyId they were made for.
pub const MADE_FOR_COMPANY_ID: &str = "partner_company_id";
/// Every key the flow persists besides the documented layout.
pub(crate) const STATE_KEYS: &[&str] = &[
    POST_MARKER,
    PARTNER_CLIENT_ID,
    PARTNER_CLIENT_SECRET,
    MASTER_FINGERPRINT,
    MADE_FOR_APP_ID,
    MADE_FOR_COMPANY_ID,
];
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
    /// Creation answers (shown once) not seen persisted yet, by Integration
    /// identity: from their arrival until a call finds them in
    /// `persisted`. Should the write of their [`Outcome::Persist`] fail,
    /// the next exchange persists them first instead of losing them.
    unsaved: Mutex<HashMap<String, Credentials>>,
}

#[derive(Debug)]
struct CachedToken {
    token: SecretString,
    /// Used from the cache until then.
    fresh_until: Timestamp,
    /// When it was obtained: a token obtained before an exchange began may
    /// have been revoked since, and is replaced once on a 401.
    obtained_at: Timestamp,
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

/// The marker's value, if a request may have been sent.
fn marker(persisted: &Credentials) -> Option<&str> {
    persisted
        .get(POST_MARKER)
        .map(|m| m.expose_secret())
        .filter(|m| !m.is_empty())
}

/// The (appId, companyId) the persisted state was made for, where recorded.
fn made_for(persisted: &Credentials) -> Option<(&str, &str)> {
    let get = |k| {
        persisted
            .get(k)
            .map(|v: &SecretString| v.expose_secret())
            .filter(|v| !v.is_empty())
    };
    Some((get(MADE_FOR_APP_ID)?, get(MADE_FOR_COMPANY_ID)?))
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
            .send(req.provider, request, req.inputs, req.priority)
            .await
            .map_err(|e| at(STEP, e))?;
        let mut warning = None;
        if !answer.status.is_success() {
            let status = answer.status.as_u16();
            let said = scrub(&error_detail(&answer.body), req.inputs);
            let detail = if said.is_empty() {
                String::new()
            } else {
                format!(", {said}")
            };
            match status {
                401 => {
                    return Err(DriverError::CredentialsRejected {
                        message: format!(
                            "SmartRecruiters refused the API key in input Secret key \"api_key\" (HTTP 401 at GET /configuration/company/my{detail}): it was revoked, mistyped, or is not a customer API key; create one in SmartRecruiters under Settings > Admin > Apps & Integrations > Credentials and put it in the input Secret"
                        ),
                    });
                }
                // The key authenticated (a refused key is a 401) but its
                // System role does not allow reading the company. It may
                // still allow what the application needs (jobs,
                // candidates): a key limited on purpose is not refused for
                // the endpoint the operator happens to probe.
                403 => {
                    warning = Some((
                        Reason::ApiKeyPermissionLimited,
                        format!(
                            "SmartRecruiters, {STEP}: HTTP 403{detail}: the API key was accepted but may not read the company, so the operator could not confirm what it may do; it is published anyway. If the application gets 403 answers too, give the credential a System role with the permissions it needs (Credential Manager in SmartRecruiters)"
                        ),
                    ));
                }
                _ => return Err(at(STEP, classify_status(status, &said, req.inputs))),
            }
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
            warning,
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

    /// A fresh cached master token and whether it was obtained before `since`.
    fn cached_master(&self, key: &str, since: Timestamp) -> Option<(SecretString, bool)> {
        self.master_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|c| c.fresh_until > Timestamp::now())
            .map(|c| (c.token.clone(), c.obtained_at < since))
    }

    fn forget_master(&self, key: &str) {
        self.master_tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// A master bearer token, from the cache when one is fresh; the bool
    /// says whether it came from the cache and was obtained before this
    /// exchange began (`req.now`), so may have been revoked since. Every
    /// call of one exchange sees the same answer for the same token: a
    /// token replaced after a 401 is not replaced again in that exchange.
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
        if let Some(cached) = self.cached_master(&cache_key, req.now) {
            return Ok(cached);
        }
        let _one_at_a_time = self.master_lock.lock().await;
        // Another Integration may have fetched it while we waited.
        if let Some(cached) = self.cached_master(&cache_key, req.now) {
            return Ok(cached);
        }
        let now = Timestamp::now();
        let token = request_token(
            &self.http,
            provider,
            &TokenRequest {
                priority: req.priority,
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
                obtained_at: now,
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
                priority: req.priority,
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

    /// The General Partner Integration, one step per call, each resuming
    /// from what the output Secret holds ([`Outcome::Persist`]):
    /// - customer-level credentials: their bearer token (the routine path);
    /// - a request-sent marker holding this exchange's time (`req.now`):
    ///   the marker this exchange persisted for its POST, not sent yet:
    ///   send it;
    /// - a marker from an earlier exchange: that POST may have created the
    ///   integration (a restart, a lost answer): stop and ask a person;
    /// - nothing yet: the checks (a lost Secret, a duplicate), generated
    ///   partner-side credentials, the master token, then the marker.
    ///
    /// A creation answer (shown once) is kept in memory from the moment it
    /// arrives until a call sees it persisted: if the write of its
    /// [`Outcome::Persist`] fails, the next exchange persists it first
    /// instead of losing it.
    async fn partner_integration(
        &self,
        req: &ExchangeRequest<'_>,
        app_id: &str,
        company_id: &str,
        bidirectional: bool,
    ) -> Result<Outcome, DriverError> {
        let provider = Self::token_url(req.provider)?;
        let persisted = req.persisted;

        // An answer shown once that is not persisted yet: persisted first.
        // Once the Secret holds customer-level credentials, it is no longer
        // needed (they are this answer's, or newer).
        {
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            if has_customer_creds(persisted) {
                unsaved.remove(req.identity);
            } else if let Some(answer) = unsaved.get(req.identity) {
                return Ok(Outcome::persist(answer.clone(), &[]));
            }
        }

        // What the Secret holds (credentials, or a request that may have
        // created some) was made for one app and company: never publish it,
        // nor act on it, for others (the CRD refuses such edits; this holds
        // for objects admitted before that rule, or without it).
        if (has_customer_creds(persisted) || marker(persisted).is_some())
            && let Some((old_app, old_company)) = made_for(persisted)
            && (old_app, old_company) != (app_id, company_id)
        {
            return Err(DriverError::NeedsAttention {
                reason: Reason::ImmutableFieldChanged,
                message: format!(
                    "SmartRecruiters: the output Secret holds the partner integration {} made for appId {old_app:?} and companyId {old_company:?}, but spec.partnerIntegration now names appId {app_id:?} and companyId {company_id:?}; an integration cannot move to another app or company, so its credentials are not published for the new values. Put the old appId and companyId back, or delete this Integration and create a new one",
                    persisted
                        .get(keys::INTEGRATION_ID)
                        .map(|v| v.expose_secret().to_string())
                        .filter(|v| !v.is_empty())
                        .map(|v| format!("(integration {v})"))
                        .unwrap_or_else(|| "request".into())
                ),
            });
        }
        let made_for_fields = || {
            fields([
                (MADE_FOR_APP_ID, app_id.to_string()),
                (MADE_FOR_COMPANY_ID, company_id.to_string()),
            ])
        };

        if has_customer_creds(persisted) {
            match self.customer_token(req, &provider, persisted).await {
                Err(DriverError::CredentialsRejected { message }) => {
                    let iid = persisted.require(keys::INTEGRATION_ID)?.expose_secret().to_string();
                    // Only a person's request creates it again: the customer
                    // may have disabled it on purpose, and new master
                    // credentials say nothing about that.
                    if req.retry_requested != Some(iid.as_str()) {
                        return Err(DriverError::CredentialsRejected {
                            message: format!(
                                "{message}. The customer may have disabled integration {iid} (appId {app_id:?}, companyId {company_id:?}) in SmartRecruiters, or SmartRecruiters revoked it; the operator does not create it again by itself, not even after new master credentials. Once the customer wants it back, set the annotation integration-operator.io/retry={iid} to create a new one"
                            ),
                        });
                    }
                    // The old credentials are dead: forget them. The next
                    // call finds status recording integration {iid} and the
                    // retry naming it, and creates a new one (the path a
                    // restart here takes).
                    return Ok(Outcome::persist(
                        Credentials::default(),
                        &[
                            keys::CLIENT_ID,
                            keys::CLIENT_SECRET,
                            keys::INTEGRATION_ID,
                            PARTNER_CLIENT_ID,
                            PARTNER_CLIENT_SECRET,
                            MASTER_FINGERPRINT,
                            MADE_FOR_APP_ID,
                            MADE_FOR_COMPANY_ID,
                        ],
                    ));
                }
                Ok(Outcome::Issued(mut issued)) => {
                    // Secrets written before the made-for keys existed get them now.
                    issued.fields = issued.fields.updated(&made_for_fields(), &[]);
                    return Ok(Outcome::Issued(issued));
                }
                other => return other,
            }
        }

        // The marker's value is the time of the exchange that persisted it:
        // this exchange's own marker stands for a request not sent yet.
        let now = req.now.to_string();
        let mut recreate = false;
        let ours = match marker(persisted) {
            Some(sent_at) if sent_at == now => true,
            Some(sent_at) => {
                let asked_again = req.retry_requested == Some(sent_at);
                if !asked_again {
                    return Err(DriverError::NeedsAttention {
                        reason: Reason::PartnerIntegrationUncertain,
                        message: format!(
                            "SmartRecruiters, creating the partner integration: a request for appId {app_id:?} and companyId {company_id:?} was sent at {sent_at} but its answer was not received or could not be stored; SmartRecruiters shows the credentials only once, so the operator does not send it again by itself. Check the company's Apps & Integrations page in SmartRecruiters: if the integration exists, the customer must disable it first; then, to send the request again, set the annotation integration-operator.io/retry={sent_at}"
                        ),
                    });
                }
                false
            }
            None => {
                // The output Secret lost the credentials of an integration that
                // status still records (the Secret was deleted or emptied):
                // they cannot be read again, and a new request would be refused
                // while that integration is enabled, or duplicate it.
                if let Some(recorded) = req.recorded_id.filter(|r| !r.is_empty()) {
                    if req.retry_requested != Some(recorded) {
                        return Err(DriverError::NeedsAttention {
                            reason: Reason::PartnerCredentialsLost,
                            message: format!(
                                "SmartRecruiters: status.integrationId records partner integration {recorded} (appId {app_id:?}, companyId {company_id:?}), but its customer-level credentials are no longer in the output Secret (deleted or emptied); SmartRecruiters shows them only once and offers no way to read them again, so the operator sends no new request by itself. Ask the customer to disable integration {recorded} on their Apps & Integrations page, then set the annotation integration-operator.io/retry={recorded} to create a new one"
                            ),
                        });
                    }
                    // Asked for: a new integration. Its partner-side client id
                    // must differ from the lost one's.
                    recreate = true;
                }
                if let Some(first) = req.first_claimant {
                    return Err(DriverError::NeedsAttention {
                        reason: Reason::DuplicateIntegration,
                        message: format!(
                            "Integration {first} already creates the SmartRecruiters partner integration for appId {app_id:?} and companyId {company_id:?} on ClusterProvider {:?}; SmartRecruiters allows one per app and company, so this Integration sends no request. Use the credentials in {first}'s output Secret, or delete one of the two Integrations",
                            req.provider.name
                        ),
                    });
                }
                false
            }
        };

        if bidirectional && persisted.get(PARTNER_CLIENT_ID).is_none() {
            // Generated once and persisted before SmartRecruiters sees
            // them. The id must be unique across all of the partner's
            // integrations: derived from the Integration's uid (plus a
            // suffix when an integration is created again).
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let id = partner_client_id(req.identity, recreate.then(|| req.now.as_second()));
            let generated = fields([(PARTNER_CLIENT_ID, id), (PARTNER_CLIENT_SECRET, hex::encode(raw))]);
            return Ok(Outcome::persist(generated, &[]));
        }
        let (master, stale) = self.master_token(req, &provider).await?;
        if !ours {
            // The marker stands for exactly one request: persisted right
            // before it is sent, with what it is sent for, and cleared by
            // every answer that proves nothing was created. The next call
            // sends it.
            let marker = made_for_fields().updated(&fields([(POST_MARKER, now)]), &[]);
            return Ok(Outcome::persist(marker, &[]));
        }

        let mut body = json!({"appId": app_id, "companyId": company_id});
        if bidirectional {
            body["clientId"] = json!(persisted.get(PARTNER_CLIENT_ID).map(|v| v.expose_secret().to_string()));
            body["clientSecret"] = json!(
                persisted
                    .get(PARTNER_CLIENT_SECRET)
                    .map(|v| v.expose_secret().to_string())
            );
        }
        let url = endpoint(base_url(&provider)?, INTEGRATIONS_PATH)?;
        const STEP: &str = "creating the partner integration (POST /apps-integrations/partner-api/integrations)";
        let scrub_all = req.inputs.and(persisted);
        let request = self
            .http
            .client()
            .post(url)
            .bearer_auth(master.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let answer = match self.http.send(&provider, request, &scrub_all, req.priority).await {
            Ok(a) => a,
            // Nothing was created: the marker goes with the error.
            Err(e) if proves_not_created(&e) => {
                return Ok(Outcome::persist_then(cleared_marker(), &[], Then::Fail(at(STEP, e))));
            }
            Err(e) => return Err(at(STEP, e)),
        };
        if answer.status.as_u16() == 401 && stale {
            // The shared master token, obtained before this exchange, was
            // refused (revoked early): nothing was created. The marker is
            // cleared before anything else can fail and the token dropped;
            // the next call gets a new one and sends the request once more
            // (a token obtained during this exchange is not retried).
            self.forget_master(&Self::master_cache_key(&provider, req.inputs)?);
            return Ok(Outcome::persist(cleared_marker(), &[]));
        }
        if !answer.status.is_success() {
            // Answered and refused: nothing was created; retrying is safe.
            let status = answer.status.as_u16();
            let detail = scrub(&error_detail(&answer.body), &scrub_all);
            let error = match status {
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
            };
            return Ok(Outcome::persist_then(cleared_marker(), &[], Then::Fail(error)));
        }
        let (cid, csecret, iid) = parse_partner_integration(&answer.body).map_err(|e| at(STEP, e))?;
        // Shown once: persisted before anything else, and kept in memory
        // until a call sees it persisted. The next call exchanges it.
        let answer = fields([
            (keys::CLIENT_ID, cid),
            (keys::CLIENT_SECRET, csecret),
            (keys::INTEGRATION_ID, iid),
            (POST_MARKER, String::new()),
        ])
        .updated(&made_for_fields(), &[]);
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.identity.to_string(), answer.clone());
        Ok(Outcome::persist(answer, &[]))
    }
}

/// The partner-side client id generated for the Integration with identity
/// (uid) `identity`: `io-<uid>`, or `io-<uid>-<time>` for an integration
/// created again at `time` (Unix seconds). SmartRecruiters requires it
/// unique across the partner's integrations; the uid makes it so.
pub fn partner_client_id(identity: &str, recreated_at: Option<i64>) -> String {
    match recreated_at {
        Some(t) => format!("io-{identity}-{t}"),
        None => format!("io-{identity}"),
    }
}

/// The Integration uid a [`partner_client_id`] was generated for, if
/// `client_id` has that form (a Kubernetes uid is 36 characters). Lets the
/// operator's token endpoint find the one Integration to check a client
/// against instead of searching every output Secret. The id is no secret:
/// the client secret and the output Secret it is stored in decide.
pub fn partner_client_identity(client_id: &str) -> Option<&str> {
    const UID_LEN: usize = 36;
    let rest = client_id.strip_prefix("io-")?;
    let uid = rest.get(..UID_LEN)?;
    let suffix = &rest[UID_LEN..];
    let valid_uid = uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let valid_suffix = suffix.is_empty()
        || suffix
            .strip_prefix('-')
            .is_some_and(|t| !t.is_empty() && t.len() <= 20 && t.chars().all(|c| c.is_ascii_digit()));
    (valid_uid && valid_suffix).then_some(uid)
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
            Flow::ApiKey
                | Flow::ClientCredentials { .. }
                | Flow::PartnerIntegration { .. }
                | Flow::AuthorizationCode { .. }
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
                        priority: req.priority,
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
            Flow::AuthorizationCode { .. } => {
                let provider = authorization_code_endpoints(req.provider)?;
                let req = ExchangeRequest {
                    provider: &provider,
                    ..*req
                };
                crate::oauth2::authorization_code(&self.http, &req).await
            }
            other => Err(DriverError::Misconfigured {
                message: format!("smartrecruiters does not support the {} flow", other.name()),
            }),
        }
    }
}

/// SmartRecruiters' authorization-code endpoints (seed 001; shared/providers.md
/// section 1.4): `GET https://www.smartrecruiters.com/identity/oauth/allow`
/// and `POST https://www.smartrecruiters.com/identity/oauth/token`, unless
/// the ClusterProvider names others. SmartRecruiters documents no PKCE: the
/// challenge and verifier are sent anyway (a server that does not know them
/// ignores them, RFC 7636 section 5), and `state` is what binds the redirect.
pub fn authorization_code_endpoints(provider: &ProviderConfig) -> Result<ProviderConfig, DriverError> {
    let mut p = provider.clone();
    let fixed = |u: &str| {
        url::Url::parse(u).map_err(|e| DriverError::Misconfigured {
            message: format!("{u}: {e}"),
        })
    };
    if p.authorization_url.is_none() {
        p.authorization_url = Some(fixed("https://www.smartrecruiters.com/identity/oauth/allow")?);
    }
    if p.token_url.is_none() {
        p.token_url = Some(fixed("https://www.smartrecruiters.com/identity/oauth/token")?);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use testkit::sim::smartrecruiters::SmartRecruitersSim;

    use super::*;
    use crate::{ClientAuth, Priority, StateWriter, run_exchange};

    const MASTER_ID: &str = "master";
    const MASTER_SECRET: &str = "master-secret-1";
    const APP: &str = "app-1";

    /// The output Secret, in memory: what the controller's persist writes
    /// and its write of the issued fields leave there.
    #[derive(Default)]
    struct Secret(Mutex<Credentials>);

    #[async_trait]
    impl StateWriter for &Secret {
        async fn write(&mut self, persisted: &Credentials, _dropped: &[&str]) -> Result<(), DriverError> {
            *self.0.lock().unwrap() = persisted.clone();
            Ok(())
        }
    }

    impl Secret {
        fn get(&self, key: &str) -> Option<String> {
            self.0.lock().unwrap().get(key).map(|v| v.expose_secret().to_string())
        }
    }

    fn provider(sim: &SmartRecruitersSim) -> ProviderConfig {
        ProviderConfig {
            name: "smartrecruiters".into(),
            token_url: Some(sim.token_url().parse().unwrap()),
            authorization_url: None,
            redirect_url: None,
            base_url: Some(sim.url().parse().unwrap()),
            client_auth: ClientAuth::Post,
            request_timeout: Duration::from_secs(5),
            default_lifetime: Duration::from_secs(1800),
            max_concurrency: 8,
            requests_per_second: 1000,
            revalidate_interval: Duration::from_secs(3600),
            rate_limit_scope: super::super::RateLimitScope::Credential,
        }
    }

    fn master(id: &str, secret: &str) -> Credentials {
        fields([(keys::CLIENT_ID, id), (keys::CLIENT_SECRET, secret)])
    }

    fn partner(company: &str) -> Flow {
        Flow::PartnerIntegration {
            app_id: APP.into(),
            company_id: company.into(),
            bidirectional: false,
        }
    }

    /// One exchange as the controller runs it: from what the Secret holds,
    /// writing the issued fields back on success.
    struct Run<'a> {
        provider: &'a ProviderConfig,
        flow: Flow,
        inputs: Credentials,
        identity: &'a str,
        retry: Option<&'a str>,
        recorded: Option<&'a str>,
    }

    impl Run<'_> {
        async fn on(&self, driver: &SmartRecruitersDriver, secret: &Secret) -> Result<Outcome, DriverError> {
            let persisted = secret.0.lock().unwrap().clone();
            let finished = run_exchange(
                driver,
                &ExchangeRequest {
                    priority: Priority::Urgent,
                    state_key: None,
                    provider: self.provider,
                    flow: &self.flow,
                    inputs: &self.inputs,
                    persisted: &persisted,
                    first_claimant: None,
                    identity: self.identity,
                    retry_requested: self.retry,
                    recorded_id: self.recorded,
                    recorded_awaiting: None,
                    reported_id: None,
                    now: Timestamp::now(),
                },
                &mut &*secret,
            )
            .await?;
            if let Outcome::Issued(issued) = &finished.outcome {
                let mut held = secret.0.lock().unwrap();
                *held = finished.persisted.updated(&issued.fields, &[]);
            }
            Ok(finished.outcome)
        }
    }

    async fn started() -> (SmartRecruitersSim, SmartRecruitersDriver) {
        let sim = SmartRecruitersSim::start().await.unwrap();
        sim.add_master_client(MASTER_ID, MASTER_SECRET, &[APP]);
        (sim, SmartRecruitersDriver::new(ProviderHttp::plain().unwrap()))
    }

    fn reason(outcome: &Result<Outcome, DriverError>) -> Reason {
        match outcome {
            Ok(Outcome::Issued(_)) => Reason::Issued,
            Ok(Outcome::Pending { reason, .. }) => *reason,
            Ok(Outcome::Persist { .. }) => unreachable!("run_exchange applies every persist"),
            Err(e) => e.reason(),
        }
    }

    #[tokio::test]
    async fn credentials_made_for_another_company_are_never_published() {
        let (sim, driver) = started().await;
        let provider = provider(&sim);
        let secret = Secret::default();
        let mut run = Run {
            provider: &provider,
            flow: partner("ACME"),
            inputs: master(MASTER_ID, MASTER_SECRET),
            identity: "uid-1",
            retry: None,
            recorded: None,
        };
        assert_eq!(reason(&run.on(&driver, &secret).await), Reason::Issued);
        assert_eq!(secret.get(MADE_FOR_COMPANY_ID).as_deref(), Some("ACME"));
        let calls = sim.total_calls();

        // The spec now names another company (admitted without the CRD's rule).
        run.flow = partner("BETA");
        let outcome = run.on(&driver, &secret).await;
        assert_eq!(reason(&outcome), Reason::ImmutableFieldChanged);
        let message = outcome.unwrap_err().to_string();
        assert!(
            message.contains("\"ACME\"") && message.contains("\"BETA\"") && message.contains("delete this Integration"),
            "{message}"
        );
        assert_eq!(
            sim.total_calls(),
            calls,
            "nothing is sent for credentials that do not match"
        );
        assert_eq!(sim.integrations().len(), 1);

        // Back to the old value: published again.
        run.flow = partner("ACME");
        assert_eq!(reason(&run.on(&driver, &secret).await), Reason::Issued);
    }

    #[tokio::test]
    async fn a_failed_master_token_fetch_after_a_401_leaves_no_request_sent_marker() {
        let (sim, driver) = started().await;
        let provider = provider(&sim);
        // A first integration puts a master token into the shared cache.
        let first = Run {
            provider: &provider,
            flow: partner("ACME"),
            inputs: master(MASTER_ID, MASTER_SECRET),
            identity: "uid-1",
            retry: None,
            recorded: None,
        };
        assert_eq!(reason(&first.on(&driver, &Secret::default()).await), Reason::Issued);

        // The master credentials are revoked: the cached token gets a 401
        // at the POST, and fetching a new one fails.
        sim.revoke_client(MASTER_ID);
        let second = Run {
            flow: partner("BETA"),
            identity: "uid-2",
            ..first
        };
        let secret = Secret::default();
        assert_eq!(reason(&second.on(&driver, &secret).await), Reason::ReauthRequired);
        assert_eq!(
            secret.get(POST_MARKER).unwrap_or_default(),
            "",
            "nothing was created, yet the marker says a request may have"
        );

        // Master credentials work again: the integration is created, not
        // held back as "uncertain".
        sim.add_master_client(MASTER_ID, MASTER_SECRET, &[APP]);
        assert_eq!(reason(&second.on(&driver, &secret).await), Reason::Issued);
        assert_eq!(sim.integrations().len(), 2);
    }

    #[tokio::test]
    async fn new_master_credentials_never_recreate_an_integration_the_customer_disabled() {
        let (sim, driver) = started().await;
        let provider = provider(&sim);
        let secret = Secret::default();
        let mut run = Run {
            provider: &provider,
            flow: partner("ACME"),
            inputs: master(MASTER_ID, MASTER_SECRET),
            identity: "uid-1",
            retry: None,
            recorded: None,
        };
        assert_eq!(reason(&run.on(&driver, &secret).await), Reason::Issued);
        let iid = sim.integrations()[0].integration_id.clone();

        // The customer switches it off; the partner rotates its master credentials.
        sim.disable_integration(&iid);
        sim.add_master_client("master-2", "master-secret-2", &[APP]);
        run.inputs = master("master-2", "master-secret-2");
        let outcome = run.on(&driver, &secret).await;
        assert_eq!(reason(&outcome), Reason::ReauthRequired);
        let message = outcome.unwrap_err().to_string();
        assert!(
            message.contains(&format!("integration-operator.io/retry={iid}")),
            "{message}"
        );
        assert_eq!(
            sim.integrations().len(),
            1,
            "the disabled integration was created again"
        );

        // A person asks for it.
        let asked = Run {
            retry: Some(&iid),
            ..run
        };
        assert_eq!(reason(&asked.on(&driver, &secret).await), Reason::Issued);
        assert_eq!(sim.integrations().len(), 2);
    }

    #[tokio::test]
    async fn lost_customer_credentials_stop_the_flow_until_a_person_asks() {
        let (sim, driver) = started().await;
        let provider = provider(&sim);
        let run = Run {
            provider: &provider,
            flow: partner("ACME"),
            inputs: master(MASTER_ID, MASTER_SECRET),
            identity: "uid-1",
            retry: None,
            recorded: None,
        };
        assert_eq!(reason(&run.on(&driver, &Secret::default()).await), Reason::Issued);
        let iid = sim.integrations()[0].integration_id.clone();

        // The output Secret is deleted; status still records the integration.
        let emptied = Secret::default();
        let lost = Run {
            recorded: Some(&iid),
            ..run
        };
        let outcome = lost.on(&driver, &emptied).await;
        assert_eq!(reason(&outcome), Reason::PartnerCredentialsLost);
        let message = outcome.unwrap_err().to_string();
        assert!(
            message.contains("shows them only once")
                && message.contains(&format!("integration-operator.io/retry={iid}"))
                && message.contains("disable"),
            "{message}"
        );
        assert_eq!(sim.calls("integrations"), 1, "a second creation request was sent");

        // The customer disabled the old one, a person asks: a new one.
        sim.disable_integration(&iid);
        let asked = Run {
            retry: Some(&iid),
            ..lost
        };
        assert_eq!(reason(&asked.on(&driver, &emptied).await), Reason::Issued);
        assert_eq!(sim.integrations().len(), 2);
        assert_ne!(emptied.get(keys::INTEGRATION_ID), Some(iid));
    }

    #[test]
    fn a_generated_partner_client_id_names_the_integration_it_was_made_for() {
        let uid = "6f1c2b8e-9d0a-4e3f-8a7b-1c2d3e4f5a6b";
        assert_eq!(partner_client_identity(&partner_client_id(uid, None)), Some(uid));
        assert_eq!(
            partner_client_identity(&partner_client_id(uid, Some(1_780_000_000))),
            Some(uid)
        );
        for other in [
            "",
            "io-",
            "io-short",
            "gpi-6f1c2b8e-9d0a-4e3f-8a7b-1c2d3e4f5a6b",
            "io-6f1c2b8e-9d0a-4e3f-8a7b-1c2d3e4f5a6bX",
            "io-6f1c2b8e-9d0a-4e3f-8a7b-1c2d3e4f5a6b-",
            "io-6f1c2b8e-9d0a-4e3f-8a7b-1c2d3e4f5a6b-12a",
            "io-6f1c2b8e/9d0a-4e3f-8a7b-1c2d3e4f5a6b",
            "io-6f1c2b8e-9d0a-4e3f-8a7b-1c2d3e4f5a6\u{e9}",
        ] {
            assert_eq!(partner_client_identity(other), None, "{other}");
        }
    }

    #[test]
    fn steps_are_named_in_messages() {
        let e = at(
            "creating the partner integration",
            DriverError::PermissionDenied {
                message: "HTTP 403".into(),
            },
        );
        assert_eq!(e.reason(), Reason::PermissionDenied);
        assert!(
            e.to_string()
                .contains("SmartRecruiters, creating the partner integration: HTTP 403")
        );
    }

    /// The authorization-code flow publishes SmartRecruiters' own authorize
    /// endpoint (seed 001) when the ClusterProvider names none.
    #[tokio::test]
    async fn authorization_code_defaults_to_smartrecruiters_endpoints() {
        let sim = SmartRecruitersSim::start().await.unwrap();
        let mut provider = provider(&sim);
        provider.redirect_url = Some("https://ops.example.com/oauth2/callback".parse().unwrap());
        provider.token_url = None;
        let defaults = authorization_code_endpoints(&provider).unwrap();
        assert_eq!(
            defaults.token_url.unwrap().as_str(),
            "https://www.smartrecruiters.com/identity/oauth/token"
        );
        let flow = Flow::AuthorizationCode {
            scopes: vec!["candidates_read".into()],
            extra_parameters: Default::default(),
            binding: crate::authorization::Binding {
                namespace: "ns".into(),
                name: "sr".into(),
                uid: "u".into(),
            },
        };
        let inputs = crate::fields([("client_id", "cid"), ("client_secret", "cs-0123")]);
        let secret = Secret::default();
        let key = crate::authorization::StateKey::derive(b"k");
        let persisted = Credentials::default();
        let driver = SmartRecruitersDriver::new(ProviderHttp::plain().unwrap());
        let outcome = run_exchange(
            &driver,
            &ExchangeRequest {
                priority: Priority::Urgent,
                state_key: Some(&key),
                provider: &provider,
                flow: &flow,
                inputs: &inputs,
                persisted: &persisted,
                first_claimant: None,
                identity: "u",
                retry_requested: None,
                recorded_id: None,
                recorded_awaiting: None,
                reported_id: None,
                now: Timestamp::now(),
            },
            &mut &secret,
        )
        .await
        .unwrap()
        .outcome;
        let Outcome::Pending { reason, message, .. } = outcome else {
            panic!("not pending")
        };
        assert_eq!(reason, Reason::AuthorizationRequired);
        assert!(
            message.contains("https://www.smartrecruiters.com/identity/oauth/allow?response_type=code&client_id=cid"),
            "{message}"
        );
        assert!(secret.get("oauth2_state").is_some());
    }
}
