//! Cloud Elements / SAP Open Connectors (shared/providers.md section 3): an
//! element instance is created once (`POST /instances`) with the platform's
//! User and Organization secrets; its token is the credential. The instance
//! id and token are persisted before anything else, the instance is validated
//! with `GET /instances/{id}` (`valid`, not `disabled`), reconfigured with
//! `PUT` when the secret configuration changes, and deleted on cleanup.
//!
//! Assumptions (UNKNOWN in providers.md): a rejected User/Organization secret
//! answers 401; error bodies carry `message`. Instances are tagged with the
//! Integration's uid so an orphan can be found in the platform.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    CleanupRequest, Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderConfig,
    ProviderHttp, base_url, classify_status, endpoint, fields, keys,
};

/// Persisted: hash of the configuration the instance was created or last updated with.
const CONFIG_HASH: &str = "instance_config_hash";
/// Persisted: the instance token.
const INSTANCE_TOKEN: &str = "element_token";

/// The `cloud-elements` driver.
#[derive(Debug)]
pub struct CloudElementsDriver {
    http: ProviderHttp,
}

#[derive(Deserialize)]
struct Instance {
    id: Option<serde_json::Value>,
    token: Option<String>,
    valid: Option<bool>,
    disabled: Option<bool>,
}

impl CloudElementsDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }

    fn platform_auth(inputs: &Credentials) -> Result<String, DriverError> {
        Ok(format!(
            "User {}, Organization {}",
            inputs.require("user_secret")?.expose_secret(),
            inputs.require("organization_secret")?.expose_secret()
        ))
    }

    async fn call(
        &self,
        provider: &ProviderConfig,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        body: Option<&serde_json::Value>,
        scrub: &Credentials,
    ) -> Result<(u16, Vec<u8>), DriverError> {
        let url = endpoint(base_url(provider)?, path)?;
        let mut request = self
            .http
            .client()
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            request = request.json(b);
        }
        let answer = self.http.send(provider, request, scrub).await?;
        Ok((answer.status.as_u16(), answer.body))
    }
}

fn configuration(
    flow_config: &std::collections::BTreeMap<String, String>,
    secret_config: &std::collections::BTreeMap<String, String>,
    inputs: &Credentials,
) -> Result<serde_json::Map<String, serde_json::Value>, DriverError> {
    let mut config: serde_json::Map<String, serde_json::Value> =
        flow_config.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    for (config_key, input_key) in secret_config {
        config.insert(config_key.clone(), json!(inputs.require(input_key)?.expose_secret()));
    }
    Ok(config)
}

fn config_hash(config: &serde_json::Map<String, serde_json::Value>) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(config).unwrap_or_default()))
}

fn message_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v.get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string()
}

#[async_trait]
impl Driver for CloudElementsDriver {
    fn supports(&self, flow: &Flow) -> bool {
        matches!(flow, Flow::ElementInstance { .. })
    }

    fn needs_cleanup(&self, flow: &Flow) -> bool {
        matches!(
            flow,
            Flow::ElementInstance {
                delete_on_cleanup: true,
                ..
            }
        )
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        let Flow::ElementInstance {
            element_key,
            instance_name,
            configuration: flow_config,
            secret_configuration,
            ..
        } = req.flow
        else {
            return Err(DriverError::Misconfigured {
                message: format!("cloud-elements does not support the {} flow", req.flow.name()),
            });
        };
        let auth = Self::platform_auth(req.inputs)?;
        let config = configuration(flow_config, secret_configuration, req.inputs)?;
        let hash = config_hash(&config);
        let mut persisted = req.persisted.clone();
        let scrub = req.inputs.and(&persisted);
        let body = json!({
            "element": {"key": element_key},
            "configuration": config,
            "tags": [format!("integration-operator:{}", req.identity)],
            "name": instance_name,
        });

        if persisted.get(keys::INTEGRATION_ID).is_none() {
            let (status, answer) = self
                .call(
                    req.provider,
                    reqwest::Method::POST,
                    "instances",
                    &auth,
                    Some(&body),
                    &scrub,
                )
                .await?;
            if !(200..300).contains(&status) {
                return Err(classify_status(status, &message_of(&answer), &scrub));
            }
            let instance: Instance = serde_json::from_slice(&answer).map_err(|_| DriverError::MalformedResponse {
                message: "the instance answer is not JSON".into(),
            })?;
            let (Some(id), Some(token)) = (instance.id, instance.token) else {
                return Err(DriverError::MalformedResponse {
                    message: "the instance answer lacks id or token".into(),
                });
            };
            let id = id.to_string().trim_matches('"').to_string();
            // Shown at creation: persisted before anything else.
            persisted = req
                .checkpoint
                .save(
                    &fields([
                        (keys::INTEGRATION_ID, id),
                        (INSTANCE_TOKEN, token),
                        (CONFIG_HASH, hash.clone()),
                    ]),
                    &[],
                )
                .await?;
        }
        let scrub = req.inputs.and(&persisted);
        let id = persisted.require(keys::INTEGRATION_ID)?.expose_secret().to_string();
        let path = format!("instances/{id}");
        if persisted.get(CONFIG_HASH).map(|h| h.expose_secret().to_string()) != Some(hash.clone()) {
            // The configuration (say, the provider API key) changed: update
            // the instance in place so its token stays the same.
            let (status, answer) = self
                .call(req.provider, reqwest::Method::PUT, &path, &auth, Some(&body), &scrub)
                .await?;
            if !(200..300).contains(&status) {
                return Err(classify_status(status, &message_of(&answer), &scrub));
            }
            persisted = req.checkpoint.save(&fields([(CONFIG_HASH, hash)]), &[]).await?;
        }
        let (status, answer) = self
            .call(req.provider, reqwest::Method::GET, &path, &auth, None, &scrub)
            .await?;
        if status == 404 {
            return Err(DriverError::NeedsAttention {
                reason: "ElementInstanceGone",
                message: format!(
                    "element instance {id} no longer exists on the platform; delete the output Secret's integration_id key or the Integration to create a new one"
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(classify_status(status, &message_of(&answer), &scrub));
        }
        let instance: Instance = serde_json::from_slice(&answer).map_err(|_| DriverError::MalformedResponse {
            message: "the instance answer is not JSON".into(),
        })?;
        if instance.disabled == Some(true) {
            return Err(DriverError::NeedsAttention {
                reason: "ElementInstanceDisabled",
                message: format!("element instance {id} is disabled on the platform"),
            });
        }
        if instance.valid == Some(false) {
            return Err(DriverError::CredentialsRejected {
                message: format!(
                    "element instance {id} is marked invalid: the provider refused its configuration (for example the API key)"
                ),
            });
        }
        let token = persisted.require(INSTANCE_TOKEN)?.expose_secret().to_string();
        let header = format!(
            "User {}, Element {}",
            req.inputs.require("user_secret")?.expose_secret(),
            token
        );
        Ok(Outcome::Issued(Issued {
            fields: fields([
                (keys::AUTHORIZATION, header.clone()),
                (keys::HEADER_NAME, "Authorization".to_string()),
                (keys::HEADER_VALUE, header),
                (keys::BASE_URL, base_url(req.provider)?.to_string()),
            ]),
            expires_at: None,
            lifetime_defaulted: false,
            provider_id: Some(id),
        }))
    }

    async fn cleanup(&self, req: &CleanupRequest<'_>) -> Result<(), DriverError> {
        let Some(id) = req.persisted.get(keys::INTEGRATION_ID) else {
            return Ok(());
        };
        let auth = Self::platform_auth(req.inputs)?;
        let scrub = req.inputs.and(req.persisted);
        let path = format!("instances/{}", id.expose_secret());
        let (status, answer) = self
            .call(req.provider, reqwest::Method::DELETE, &path, &auth, None, &scrub)
            .await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(classify_status(status, &message_of(&answer), &scrub)),
        }
    }
}
