//! Kombo (shared/providers.md section 4): the Kombo API key (Bearer) plus an
//! integration id (`X-Integration-Id`). Without an id, the driver creates a
//! connect link once, publishes it for the customer, and polls until the
//! customer has completed it; then it validates the integration's state.
//!
//! Assumptions (UNKNOWN or unclear in providers.md):
//! - The link's `token` query parameter resolves the integration through
//!   `GET /connect/integration-by-token/{token}` once the customer finished;
//!   until then that call answers 404 / `PLATFORM.INTEGRATION_NOT_FOUND`.
//! - Embedded links are valid for one hour. Kombo does not deduplicate
//!   links, so an expired link is replaced only when a person asks (the
//!   annotation `integration-operator.io/retry` set to the link's creation
//!   time), never automatically.

use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    CleanupRequest, Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderConfig,
    ProviderHttp, base_url, endpoint, fields, http::retry_after, keys, scrub,
};

const LINK: &str = "connect_link";
const LINK_TOKEN: &str = "connect_link_token";
const LINK_CREATED_AT: &str = "connect_link_created_at";
/// Validity of an embedded connect link.
const LINK_LIFETIME: SignedDuration = SignedDuration::from_secs(3600);
/// Header carrying the integration id on integration-scoped calls.
pub const INTEGRATION_HEADER: &str = "X-Integration-Id";

/// The `kombo` driver.
#[derive(Debug)]
pub struct KomboDriver {
    http: ProviderHttp,
}

struct Answer {
    status: u16,
    body: Value,
}

impl KomboDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }

    async fn call(
        &self,
        provider: &ProviderConfig,
        method: reqwest::Method,
        path: &str,
        api_key: &str,
        body: Option<Value>,
        secrets: &Credentials,
    ) -> Result<Answer, DriverError> {
        let url = endpoint(base_url(provider)?, path)?;
        let mut request = self.http.client().request(method, url).bearer_auth(api_key);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer = self.http.send(provider, request, secrets).await?;
        let parsed: Value = serde_json::from_slice(&answer.body).map_err(|_| DriverError::MalformedResponse {
            message: format!("Kombo's answer to {path} is not JSON"),
        })?;
        if answer.status.as_u16() == 429 {
            return Err(DriverError::RateLimited {
                retry_after: retry_after(&answer.headers),
            });
        }
        Ok(Answer {
            status: answer.status.as_u16(),
            body: parsed,
        })
    }

    async fn validate(
        &self,
        req: &ExchangeRequest<'_>,
        api_key: &str,
        integration_id: &str,
        secrets: &Credentials,
    ) -> Result<Outcome, DriverError> {
        let path = format!("integrations/{integration_id}");
        let answer = self
            .call(req.provider, reqwest::Method::GET, &path, api_key, None, secrets)
            .await?;
        if answer.status == 404 || error_code(&answer.body) == Some("PLATFORM.INTEGRATION_NOT_FOUND") {
            return Err(DriverError::NeedsAttention {
                reason: "IntegrationNotFound",
                message: format!("Kombo has no integration {integration_id:?}"),
            });
        }
        if !(200..300).contains(&answer.status) {
            return Err(classify(&answer, secrets));
        }
        let data = &answer.body["data"];
        match data["status"].as_str().unwrap_or_default() {
            "ACTIVE" => {}
            "INVALID" => {
                return Err(DriverError::NeedsAttention {
                    reason: "ReauthRequired",
                    message: format!(
                        "Kombo integration {integration_id} is INVALID: the customer's credentials for the tool stopped working; they must reconnect it (relink) in Kombo"
                    ),
                });
            }
            "INACTIVE" => {
                return Err(DriverError::NeedsAttention {
                    reason: "IntegrationInactive",
                    message: format!("Kombo integration {integration_id} is INACTIVE (paused)"),
                });
            }
            other => {
                return Err(DriverError::MalformedResponse {
                    message: format!("unknown Kombo integration status {:?}", scrub(other, secrets)),
                });
            }
        }
        if let Some(setup) = data["setup_status"].as_str()
            && setup != "COMPLETED"
        {
            return Ok(Outcome::Pending {
                reason: "IntegrationSetupIncomplete",
                message: format!("Kombo integration {integration_id} setup is {setup}"),
                recheck_after: recheck(req.provider),
            });
        }
        let header = format!("Bearer {api_key}");
        Ok(Outcome::Issued(Issued {
            fields: fields([
                (keys::AUTHORIZATION, header.clone()),
                (keys::HEADER_NAME, "Authorization".to_string()),
                (keys::HEADER_VALUE, header),
                (keys::EXTRA_HEADER_NAME, INTEGRATION_HEADER.to_string()),
                (keys::EXTRA_HEADER_VALUE, integration_id.to_string()),
                (keys::INTEGRATION_ID, integration_id.to_string()),
                (keys::BASE_URL, base_url(req.provider)?.to_string()),
            ]),
            expires_at: None,
            lifetime_defaulted: false,
            provider_id: Some(integration_id.to_string()),
        }))
    }
}

fn recheck(provider: &ProviderConfig) -> Duration {
    provider.revalidate_interval.min(Duration::from_secs(30))
}

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

fn classify(answer: &Answer, secrets: &Credentials) -> DriverError {
    let code = error_code(&answer.body).unwrap_or_default();
    let message = scrub(
        &format!(
            "HTTP {} {}: {}",
            answer.status,
            code,
            answer.body["error"]["message"].as_str().unwrap_or_default()
        ),
        secrets,
    );
    match code {
        "PLATFORM.AUTHENTICATION_INVALID" => DriverError::CredentialsRejected { message },
        "PLATFORM.RATE_LIMIT_EXCEEDED" | "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED" => {
            DriverError::RateLimited { retry_after: None }
        }
        "PLATFORM.IP_NOT_WHITELISTED" => DriverError::PermissionDenied { message },
        _ => match answer.status {
            401 => DriverError::CredentialsRejected { message },
            403 => DriverError::PermissionDenied { message },
            409 => DriverError::Conflict { message },
            s if s >= 500 => DriverError::Unavailable { message },
            _ => DriverError::BadRequest { message },
        },
    }
}

#[async_trait]
impl Driver for KomboDriver {
    fn supports(&self, flow: &Flow) -> bool {
        matches!(flow, Flow::Connection { .. })
    }

    fn needs_cleanup(&self, flow: &Flow) -> bool {
        matches!(
            flow,
            Flow::Connection {
                delete_on_cleanup: true,
                integration_id: None,
                ..
            }
        )
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        let Flow::Connection {
            end_user_email,
            end_user_organization_name,
            end_user_origin_id,
            integration_category,
            integration_tool,
            integration_id,
            ..
        } = req.flow
        else {
            return Err(DriverError::Misconfigured {
                message: format!("kombo does not support the {} flow", req.flow.name()),
            });
        };
        let api_key = req.inputs.require(keys::API_KEY)?.expose_secret().to_string();
        let mut persisted = req.persisted.clone();
        let secrets = req.inputs.and(&persisted);
        if let Some(id) = integration_id.clone().or_else(|| {
            persisted
                .get(keys::INTEGRATION_ID)
                .map(|v| v.expose_secret().to_string())
        }) {
            return self.validate(req, &api_key, &id, &secrets).await;
        }
        if let (Some(token), Some(created)) = (persisted.get(LINK_TOKEN), persisted.get(LINK_CREATED_AT)) {
            let created_at: Timestamp = created.expose_secret().parse().unwrap_or(req.now);
            let token = token.expose_secret().to_string();
            let answer = self
                .call(
                    req.provider,
                    reqwest::Method::GET,
                    &format!("connect/integration-by-token/{token}"),
                    &api_key,
                    None,
                    &secrets,
                )
                .await?;
            if (200..300).contains(&answer.status) {
                let Some(id) = answer.body["data"]["id"].as_str().map(str::to_string) else {
                    return Err(DriverError::MalformedResponse {
                        message: "integration-by-token answer has no data.id".into(),
                    });
                };
                persisted = req
                    .checkpoint
                    .save(&fields([(keys::INTEGRATION_ID, id.clone())]), &[LINK_TOKEN])
                    .await?;
                return self.validate(req, &api_key, &id, &req.inputs.and(&persisted)).await;
            }
            if answer.status != 404 && error_code(&answer.body) != Some("PLATFORM.INTEGRATION_NOT_FOUND") {
                return Err(classify(&answer, &secrets));
            }
            let link = persisted
                .get(LINK)
                .map(|l| l.expose_secret().to_string())
                .unwrap_or_default();
            let expires = created_at + LINK_LIFETIME;
            let asked_again = req.retry_requested == Some(created.expose_secret());
            if expires > req.now {
                return Ok(Outcome::Pending {
                    reason: "AwaitingConnection",
                    message: format!(
                        "waiting for the customer to connect their tool at {link} (link valid until {expires})"
                    ),
                    recheck_after: recheck(req.provider),
                });
            }
            if !asked_again {
                return Err(DriverError::NeedsAttention {
                    reason: "ConnectLinkExpired",
                    message: format!(
                        "the connect link expired at {expires} before the customer completed it; to create a new one, set the annotation integration-operator.io/retry={}",
                        created.expose_secret()
                    ),
                });
            }
        }
        // Check the key first, so a wrong key is reported as such rather than
        // as a failed link creation.
        let check = self
            .call(
                req.provider,
                reqwest::Method::GET,
                "check-api-key",
                &api_key,
                None,
                &secrets,
            )
            .await?;
        if !(200..300).contains(&check.status) {
            return Err(classify(&check, &secrets));
        }
        let mut body = json!({
            "end_user_email": end_user_email,
            "end_user_organization_name": end_user_organization_name,
            "end_user_origin_id": end_user_origin_id,
        });
        if let Some(c) = integration_category {
            body["integration_category"] = json!(c);
        }
        if let Some(t) = integration_tool {
            body["integration_tool"] = json!(t);
        }
        let answer = self
            .call(
                req.provider,
                reqwest::Method::POST,
                "connect/create-link",
                &api_key,
                Some(body),
                &secrets,
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(classify(&answer, &secrets));
        }
        let Some(link) = answer.body["data"]["link"].as_str().map(str::to_string) else {
            return Err(DriverError::MalformedResponse {
                message: "create-link answer has no data.link".into(),
            });
        };
        let token = url::Url::parse(&link)
            .ok()
            .and_then(|u| u.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()))
            .ok_or_else(|| DriverError::MalformedResponse {
                message: "the connect link carries no token".into(),
            })?;
        req.checkpoint
            .save(
                &fields([
                    (LINK, link.clone()),
                    (LINK_TOKEN, token),
                    (LINK_CREATED_AT, req.now.to_string()),
                ]),
                &[],
            )
            .await?;
        Ok(Outcome::Pending {
            reason: "AwaitingConnection",
            message: format!(
                "connect link created: send it to the customer to connect their tool: {link} (valid until {})",
                req.now + LINK_LIFETIME
            ),
            recheck_after: recheck(req.provider),
        })
    }

    async fn cleanup(&self, req: &CleanupRequest<'_>) -> Result<(), DriverError> {
        let Some(id) = req.persisted.get(keys::INTEGRATION_ID) else {
            return Ok(());
        };
        let api_key = req.inputs.require(keys::API_KEY)?.expose_secret().to_string();
        let secrets = req.inputs.and(req.persisted);
        let answer = self
            .call(
                req.provider,
                reqwest::Method::DELETE,
                &format!("integrations/{}", id.expose_secret()),
                &api_key,
                Some(json!({})),
                &secrets,
            )
            .await?;
        if (200..300).contains(&answer.status)
            || answer.status == 404
            || error_code(&answer.body) == Some("PLATFORM.INTEGRATION_NOT_FOUND")
        {
            Ok(())
        } else {
            Err(classify(&answer, &secrets))
        }
    }
}
