//! Kombo (shared/providers.md section 4): the Kombo API key (Bearer) plus an
//! integration id (`X-Integration-Id`).
//!
//! Two ways in:
//! - `spec.connection.integrationId` names an existing integration: the
//!   driver only validates it (`GET /integrations/{id}`) and never deletes it.
//! - Otherwise the driver checks the API key (`GET /check-api-key`), creates
//!   one connect link (`POST /connect/create-link`), publishes it for the
//!   customer (condition message and Event) and polls, with backoff, until the
//!   customer has completed it. It then stores the integration id, validates
//!   the integration and publishes the credentials; the integration is deleted
//!   with the Integration unless `deletionPolicy: Retain`.
//!
//! State between reconciles lives in the output Secret (link, its token and
//! creation time; then the integration id), written through the checkpoint
//! before the link is shown to anyone.
//!
//! Assumptions (UNKNOWN or unclear in providers.md; also in
//! docs/providers/kombo.md):
//! - The link's `token` query parameter resolves the integration through
//!   `GET /connect/integration-by-token/{token}` once the customer finished
//!   (Kombo documents that endpoint for the short-lived token its frontend SDK
//!   returns); until then that call answers 404 /
//!   `PLATFORM.INTEGRATION_NOT_FOUND`. Any other 4xx there (400
//!   `PLATFORM.INPUT_INVALID`, 410, …) means the link can no longer be used.
//!   If Kombo never resolves link tokens, the Integration waits with
//!   `AwaitingConnection`, and setting `integrationId` to the id shown in the
//!   Kombo dashboard finishes it.
//! - Embedded links are valid for one hour (documented). Kombo does not
//!   deduplicate, so an expired link is replaced only when a person asks (the
//!   annotation `integration-operator.io/retry` set to the value the
//!   condition names), never automatically.
//! - API keys do not expire (none documented); the key is validated with every
//!   re-validation of the integration, every `revalidateInterval`.
//! - Numeric rate limits and `Retry-After` are unknown: a 429 is retried with
//!   backoff, at least the `Retry-After` when Kombo sends one.

use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    CleanupRequest, Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, ProviderConfig,
    ProviderHttp, base_url, endpoint, fields, keys, scrub,
};

/// Output Secret keys holding the flow's state until the customer connects.
const LINK: &str = "connect_link";
const LINK_TOKEN: &str = "connect_link_token";
const LINK_CREATED_AT: &str = "connect_link_created_at";
const LINK_KEYS: [&str; 3] = [LINK, LINK_TOKEN, LINK_CREATED_AT];
/// Validity of an embedded connect link (providers.md 4.2: one hour).
const LINK_LIFETIME: SignedDuration = SignedDuration::from_secs(3600);
/// First polls of a new link come this soon (a customer who was waiting for
/// the link finishes in a minute or two).
const POLL_FLOOR: Duration = Duration::from_secs(1);
/// Polls never come further apart than this (nor than `revalidateInterval`),
/// so a completed link is picked up within two minutes.
const POLL_CAP: Duration = Duration::from_secs(120);
/// Header carrying the integration id on integration-scoped calls.
pub const INTEGRATION_HEADER: &str = "X-Integration-Id";
pub use crate::reasons::{AWAITING_CONNECTION, CONNECT_LINK_EXPIRED, INTEGRATION_NOT_FOUND};
use crate::reasons::{
    INTEGRATION_INACTIVE, INTEGRATION_INVALID, INTEGRATION_SETUP_INCOMPLETE, INTEGRATION_SYNC_PENDING,
};
/// Longest id or token accepted from Kombo (they end up in URL paths).
const MAX_ID: usize = 256;
/// Longest connect link accepted from Kombo.
const MAX_LINK: usize = 2048;

/// The `kombo` driver.
#[derive(Debug)]
pub struct KomboDriver {
    http: ProviderHttp,
}

/// A Kombo answer that passed the generic checks (no 429, no 5xx).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn not_found(&self) -> bool {
        self.status == 404 || error_code(&self.body) == Some("PLATFORM.INTEGRATION_NOT_FOUND")
    }
}

/// A step of the flow, named in every error so that a condition says what
/// the operator was doing when Kombo failed.
enum Step<'a> {
    CheckApiKey,
    CreateLink,
    PollLink,
    Validate(&'a str),
    Delete(&'a str),
}

impl Step<'_> {
    fn describe(&self) -> String {
        match self {
            Step::CheckApiKey => "checking the API key (GET /check-api-key)".into(),
            Step::CreateLink => "creating a connect link (POST /connect/create-link)".into(),
            Step::PollLink => {
                "looking up the integration created with the connect link (GET /connect/integration-by-token)".into()
            }
            Step::Validate(id) => format!("checking integration {id} (GET /integrations/{id})"),
            Step::Delete(id) => format!("deleting integration {id} (DELETE /integrations/{id})"),
        }
    }

    fn path(&self, token: &str) -> String {
        match self {
            Step::CheckApiKey => "check-api-key".into(),
            Step::CreateLink => "connect/create-link".into(),
            Step::PollLink => format!("connect/integration-by-token/{token}"),
            Step::Validate(id) | Step::Delete(id) => format!("integrations/{id}"),
        }
    }

    fn method(&self) -> reqwest::Method {
        match self {
            Step::CreateLink => reqwest::Method::POST,
            Step::Delete(_) => reqwest::Method::DELETE,
            _ => reqwest::Method::GET,
        }
    }
}

/// Adds Kombo and the step to an error, with what to do where a person can act.
fn in_step(step: &Step<'_>, err: DriverError) -> DriverError {
    let what = step.describe();
    match err {
        DriverError::CredentialsRejected { message } => DriverError::CredentialsRejected {
            message: format!(
                "Kombo refused the API key in input Secret key \"api_key\" while {what}: {message}; put a valid API key of this Kombo environment (Kombo dashboard, Secrets page) into the input Secret"
            ),
        },
        DriverError::PermissionDenied { message } => DriverError::PermissionDenied {
            message: format!(
                "Kombo denied {what}: {message}; check the API key's environment and Kombo's IP allow-list"
            ),
        },
        other => other.with_context(&format!("Kombo, {what}")),
    }
}

/// What polling a connect link found.
enum Polled {
    Connected(String),
    Waiting,
    /// Kombo says the link can no longer be used (its message, scrubbed).
    Unusable(String),
}

impl KomboDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }

    /// One call. Answers other than 2xx come back as `Answer`s for the step
    /// to interpret; transport failures, 429 and 5xx as errors naming the step.
    async fn call(
        &self,
        provider: &ProviderConfig,
        step: &Step<'_>,
        token: &str,
        api_key: &str,
        body: Option<Value>,
        secrets: &Credentials,
    ) -> Result<Answer, DriverError> {
        let path = step.path(token);
        let url = endpoint(base_url(provider)?, &path).map_err(|e| in_step(step, e))?;
        let mut request = self.http.client().request(step.method(), url).bearer_auth(api_key);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer = self
            .http
            .send(provider, request, secrets)
            .await
            .map_err(|e| in_step(step, e))?;
        let status = answer.status.as_u16();
        let body = if answer.status.is_success() {
            parse_body(&path_for_message(step), &answer.body).map_err(|e| in_step(step, e))?
        } else {
            // An error answer need not be JSON (a proxy's HTML page): the
            // status still classifies it.
            serde_json::from_slice(&answer.body).unwrap_or(Value::Null)
        };
        Ok(Answer { status, body })
    }

    /// Fails unless `answer` is a success; the error names the step.
    fn expect_ok(step: &Step<'_>, answer: &Answer, secrets: &Credentials) -> Result<(), DriverError> {
        if answer.ok() {
            Ok(())
        } else {
            Err(in_step(step, classify_answer(answer.status, &answer.body, secrets)))
        }
    }

    /// Checks the integration's state; issues the credentials when it can be used.
    async fn validate(
        &self,
        req: &ExchangeRequest<'_>,
        api_key: &str,
        integration_id: &str,
        secrets: &Credentials,
    ) -> Result<Outcome, DriverError> {
        let step = Step::Validate(integration_id);
        let answer = self.call(req.provider, &step, "", api_key, None, secrets).await?;
        if answer.not_found() && !matches!(answer.status, 401 | 403) {
            return Err(DriverError::NeedsAttention {
                reason: INTEGRATION_NOT_FOUND,
                message: format!("Kombo has no integration {integration_id} ({})", step.describe()),
            });
        }
        Self::expect_ok(&step, &answer, secrets)?;
        let data = &answer.body["data"];
        let tool = data["tool"].as_str().map(|t| scrub(t, secrets)).unwrap_or_default();
        let status = data["status"].as_str().unwrap_or_default();
        match status {
            "ACTIVE" => {}
            "INVALID" => {
                return Err(DriverError::NeedsAttention {
                    reason: INTEGRATION_INVALID,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is INVALID: the customer's credentials for the tool stopped working. The customer must reconnect it in Kombo (a relink from the Kombo dashboard); the operator picks it up at the next check"
                    ),
                });
            }
            "INACTIVE" => {
                return Err(DriverError::NeedsAttention {
                    reason: INTEGRATION_INACTIVE,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is INACTIVE: it was paused in Kombo (or, in a development environment, went unused for two weeks). Enable it in the Kombo dashboard"
                    ),
                });
            }
            other => {
                return Err(in_step(
                    &step,
                    DriverError::MalformedResponse {
                        message: format!("unknown integration status {:?}", scrub(other, secrets)),
                    },
                ));
            }
        }
        // Data calls answer 409 until setup is complete (providers.md 4.4).
        match data["setup_status"].as_str() {
            None | Some("COMPLETED") => {}
            Some("FINAL_SYNC_PENDING") => {
                return Ok(Outcome::Pending {
                    reason: INTEGRATION_SYNC_PENDING,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is connected and Kombo is running its first full sync (setup_status FINAL_SYNC_PENDING); the credentials are published when it finishes"
                    ),
                    recheck_after: poll_cap(req.provider),
                });
            }
            Some(other) => {
                return Ok(Outcome::Pending {
                    reason: INTEGRATION_SETUP_INCOMPLETE,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is connected but its setup is not finished (setup_status {}): the customer must complete the setup steps in Kombo",
                        scrub(other, secrets)
                    ),
                    recheck_after: poll_cap(req.provider),
                });
            }
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
            warning: None,
        }))
    }

    /// Asks Kombo whether the customer completed the link with `token`.
    async fn poll(
        &self,
        provider: &ProviderConfig,
        token: &str,
        api_key: &str,
        secrets: &Credentials,
    ) -> Result<Polled, DriverError> {
        let step = Step::PollLink;
        let answer = self.call(provider, &step, token, api_key, None, secrets).await?;
        if answer.ok() {
            return parse_integration_by_token(&answer.body)
                .map(Polled::Connected)
                .map_err(|e| in_step(&step, e));
        }
        if answer.not_found() && !matches!(answer.status, 401 | 403) {
            return Ok(Polled::Waiting);
        }
        match answer.status {
            401 | 403 | 409 => Err(in_step(&step, classify_answer(answer.status, &answer.body, secrets))),
            _ => Ok(Polled::Unusable(scrub(
                answer.body["error"]["message"].as_str().unwrap_or_default(),
                secrets,
            ))),
        }
    }

    /// Checks the API key, creates a connect link and persists it before
    /// anyone sees it.
    async fn create_link(
        &self,
        req: &ExchangeRequest<'_>,
        api_key: &str,
        secrets: &Credentials,
    ) -> Result<Outcome, DriverError> {
        let Flow::Connection {
            end_user_email,
            end_user_organization_name,
            end_user_origin_id,
            integration_category,
            integration_tool,
            ..
        } = req.flow
        else {
            return Err(unsupported(req.flow));
        };
        // The key first, so a wrong key is reported as such rather than as a
        // failed link creation.
        let step = Step::CheckApiKey;
        let check = self.call(req.provider, &step, "", api_key, None, secrets).await?;
        Self::expect_ok(&step, &check, secrets)?;
        let mut body = json!({
            "end_user_email": end_user_email,
            "end_user_organization_name": end_user_organization_name,
            // Ties every integration created with the link to this
            // Integration (the Integration's uid unless the spec says otherwise).
            "end_user_origin_id": end_user_origin_id,
        });
        if let Some(c) = integration_category {
            body["integration_category"] = json!(c);
        }
        if let Some(t) = integration_tool {
            body["integration_tool"] = json!(t);
        }
        let step = Step::CreateLink;
        let answer = self.call(req.provider, &step, "", api_key, Some(body), secrets).await?;
        Self::expect_ok(&step, &answer, secrets)?;
        let (link, token) = parse_connect_link(&answer.body).map_err(|e| in_step(&step, e))?;
        // Whole seconds: the time is shown to people, and the retry
        // annotation must repeat it exactly.
        let created_at = Timestamp::from_second(req.now.as_second()).unwrap_or(req.now);
        req.checkpoint
            .save(
                &fields([
                    (LINK, link.clone()),
                    (LINK_TOKEN, token),
                    (LINK_CREATED_AT, created_at.to_string()),
                ]),
                &[keys::INTEGRATION_ID],
            )
            .await?;
        Ok(awaiting(req, &link, created_at, POLL_FLOOR.min(poll_cap(req.provider))))
    }
}

fn unsupported(flow: &Flow) -> DriverError {
    DriverError::Misconfigured {
        message: format!("kombo does not support the {} flow", flow.name()),
    }
}

fn path_for_message(step: &Step<'_>) -> String {
    // Never the link token: it would end up in a condition.
    match step {
        Step::PollLink => "connect/integration-by-token".into(),
        other => other.path(""),
    }
}

/// The longest wait between two polls or checks while something is pending.
fn poll_cap(provider: &ProviderConfig) -> Duration {
    provider
        .revalidate_interval
        .min(POLL_CAP)
        .max(Duration::from_millis(500))
}

/// Wait before the next poll of a link created `elapsed` ago: half the time
/// the customer has taken so far, between [`POLL_FLOOR`] and the cap, so a
/// link costs a few dozen calls in its hour rather than thousands.
pub fn poll_interval(elapsed: Duration, cap: Duration) -> Duration {
    (elapsed / 2).clamp(POLL_FLOOR.min(cap), cap)
}

/// The Pending outcome while the customer has not completed the link. The
/// message is the same on every poll, so it makes one Event.
fn awaiting(req: &ExchangeRequest<'_>, link: &str, created_at: Timestamp, recheck_after: Duration) -> Outcome {
    let email = match req.flow {
        Flow::Connection { end_user_email, .. } => end_user_email.as_str(),
        _ => "",
    };
    Outcome::Pending {
        reason: AWAITING_CONNECTION,
        message: format!(
            "waiting for the customer to connect their tool in Kombo: send this Kombo connect link to {email}: {link} (valid until {}); the credentials are published once they finish",
            created_at + LINK_LIFETIME
        ),
        recheck_after,
    }
}

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

/// Parses a Kombo answer body (every Kombo answer is JSON). Pure, so it can be fuzzed.
pub fn parse_body(path: &str, body: &[u8]) -> Result<Value, DriverError> {
    serde_json::from_slice(body).map_err(|_| DriverError::MalformedResponse {
        message: format!("Kombo's answer to {path} is not JSON"),
    })
}

/// Whether `value` can go into a URL path segment unchanged.
fn path_safe(value: &str, extra: &[char]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c) || extra.contains(&c))
}

/// The integration id in an `integration-by-token` answer.
pub fn parse_integration_by_token(body: &Value) -> Result<String, DriverError> {
    let id = body["data"]["id"]
        .as_str()
        .ok_or_else(|| DriverError::MalformedResponse {
            message: "integration-by-token answer has no data.id".into(),
        })?;
    // The id becomes part of request paths and of the output Secret: the
    // characters Kombo ids use (`personio:8d1hpPsbjxUkoCoa1veLZGe5`), the
    // same set spec.connection.integrationId allows.
    if !path_safe(id, &[':', '@', '+', '=']) {
        return Err(DriverError::MalformedResponse {
            message: "integration-by-token answer has an integration id with unexpected characters".into(),
        });
    }
    Ok(id.to_string())
}

/// The connect link and its `token` query parameter in a `create-link` answer.
pub fn parse_connect_link(body: &Value) -> Result<(String, String), DriverError> {
    let Some(raw) = body["data"]["link"].as_str() else {
        return Err(DriverError::MalformedResponse {
            message: "create-link answer has no data.link".into(),
        });
    };
    let url = url::Url::parse(raw)
        .ok()
        .filter(|u| u.scheme() == "https" && u.host().is_some())
        .ok_or_else(|| DriverError::MalformedResponse {
            message: "the connect link is not an https URL".into(),
        })?;
    // The serialised URL is ASCII with no whitespace (the parser
    // percent-encodes the rest): safe in a condition message.
    let link = url.as_str().to_string();
    if link.len() > MAX_LINK {
        return Err(DriverError::MalformedResponse {
            message: format!("the connect link is longer than {MAX_LINK} characters"),
        });
    }
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| path_safe(t, &[]))
        .ok_or_else(|| DriverError::MalformedResponse {
            message: "the connect link carries no usable token".into(),
        })?;
    Ok((link, token))
}

/// Maps a Kombo error answer to a driver error (branching on `error.code`
/// first, as Kombo asks, then on the HTTP status).
pub fn classify_answer(status: u16, body: &Value, secrets: &Credentials) -> DriverError {
    let code = error_code(body).unwrap_or_default();
    let detail = body["error"]["message"].as_str().unwrap_or_default();
    let message = scrub(
        &[format!("HTTP {status}"), code.to_string(), detail.to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        secrets,
    );
    match code {
        "PLATFORM.AUTHENTICATION_INVALID" => DriverError::CredentialsRejected { message },
        "PLATFORM.RATE_LIMIT_EXCEEDED" | "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED" => {
            DriverError::RateLimited { retry_after: None }
        }
        "PLATFORM.IP_NOT_WHITELISTED" => DriverError::PermissionDenied { message },
        "PLATFORM.UNKNOWN_ERROR" | "PLATFORM.TASK_TIMED_OUT" => DriverError::Unavailable { message },
        _ => match status {
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

    /// Only integrations the operator created through a connect link are
    /// deleted; one named in `integrationId` belongs to someone else.
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
        let Flow::Connection { integration_id, .. } = req.flow else {
            return Err(unsupported(req.flow));
        };
        let api_key = req.inputs.require(keys::API_KEY)?.expose_secret().to_string();
        let mut persisted = req.persisted.clone();
        let secrets = req.inputs.and(&persisted);

        // An integration someone else created: validate only.
        if let Some(id) = integration_id {
            return self.validate(req, &api_key, id, &secrets).await.map_err(|e| match e {
                DriverError::NeedsAttention { reason, message } if reason == INTEGRATION_NOT_FOUND => {
                    DriverError::NeedsAttention {
                        reason,
                        message: format!(
                            "{message}: check spec.connection.integrationId against the Kombo dashboard, or remove it to create a connect link"
                        ),
                    }
                }
                other => other,
            });
        }

        // The integration the customer created with our link.
        if let Some(id) = persisted
            .get(keys::INTEGRATION_ID)
            .map(|v| v.expose_secret().to_string())
        {
            match self.validate(req, &api_key, &id, &secrets).await {
                Err(DriverError::NeedsAttention { reason, message })
                    if reason == INTEGRATION_NOT_FOUND && req.retry_requested != Some(id.as_str()) =>
                {
                    return Err(DriverError::NeedsAttention {
                        reason,
                        message: format!(
                            "{message}: it was deleted in Kombo. To send the customer a new connect link, set the annotation integration-operator.io/retry={id} on this Integration"
                        ),
                    });
                }
                // Asked for a new link: forget the integration and start over.
                Err(DriverError::NeedsAttention { reason, .. }) if reason == INTEGRATION_NOT_FOUND => {
                    persisted = req
                        .checkpoint
                        .save(&Credentials::default(), &[keys::INTEGRATION_ID])
                        .await?;
                }
                other => return other,
            }
        }

        // A link waiting for the customer.
        if let (Some(token), Some(link), Some(created)) = (
            persisted.get(LINK_TOKEN),
            persisted.get(LINK),
            persisted.get(LINK_CREATED_AT),
        ) {
            let (token, link, created) = (
                token.expose_secret().to_string(),
                link.expose_secret().to_string(),
                created.expose_secret().to_string(),
            );
            let created_at: Timestamp = created.parse().unwrap_or(req.now);
            let expires = created_at + LINK_LIFETIME;
            let unusable = match self.poll(req.provider, &token, &api_key, &secrets).await? {
                Polled::Connected(id) => {
                    // Stored before anything else: the link's job is done and
                    // it is removed from the Secret.
                    persisted = req
                        .checkpoint
                        .save(&fields([(keys::INTEGRATION_ID, id.clone())]), &LINK_KEYS)
                        .await?;
                    return self.validate(req, &api_key, &id, &req.inputs.and(&persisted)).await;
                }
                Polled::Waiting if expires > req.now => {
                    let elapsed = Duration::try_from(req.now.duration_since(created_at)).unwrap_or_default();
                    return Ok(awaiting(
                        req,
                        &link,
                        created_at,
                        poll_interval(elapsed, poll_cap(req.provider)),
                    ));
                }
                Polled::Waiting => String::new(),
                Polled::Unusable(detail) if detail.is_empty() => " (Kombo no longer accepts it)".to_string(),
                Polled::Unusable(detail) => format!(" (Kombo: {detail})"),
            };
            if req.retry_requested != Some(created.as_str()) {
                return Err(DriverError::NeedsAttention {
                    reason: CONNECT_LINK_EXPIRED,
                    message: format!(
                        "the Kombo connect link created at {created} expired{unusable} before the customer completed it (links are valid until {expires}). To create a new link, set the annotation integration-operator.io/retry={created} on this Integration"
                    ),
                });
            }
        }

        self.create_link(req, &api_key, &secrets).await
    }

    async fn cleanup(&self, req: &CleanupRequest<'_>) -> Result<(), DriverError> {
        let api_key = req.inputs.require(keys::API_KEY)?.expose_secret().to_string();
        let secrets = req.inputs.and(req.persisted);
        let id = match req.persisted.get(keys::INTEGRATION_ID) {
            Some(id) => id.expose_secret().to_string(),
            None => {
                // The customer may have completed the link since the last
                // poll: look once more, so that integration is not left behind.
                let Some(token) = req.persisted.get(LINK_TOKEN) else {
                    return Ok(());
                };
                match self
                    .poll(req.provider, token.expose_secret(), &api_key, &secrets)
                    .await?
                {
                    Polled::Connected(id) => id,
                    Polled::Waiting | Polled::Unusable(_) => return Ok(()),
                }
            }
        };
        let step = Step::Delete(&id);
        let answer = self
            .call(req.provider, &step, "", &api_key, Some(json!({})), &secrets)
            .await?;
        if answer.ok() || (answer.not_found() && !matches!(answer.status, 401 | 403)) {
            Ok(())
        } else {
            Err(in_step(&step, classify_answer(answer.status, &answer.body, &secrets)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_between_a_floor_and_a_cap() {
        let cap = Duration::from_secs(120);
        assert_eq!(poll_interval(Duration::ZERO, cap), POLL_FLOOR);
        assert_eq!(poll_interval(Duration::from_secs(10), cap), Duration::from_secs(5));
        assert_eq!(poll_interval(Duration::from_secs(3600), cap), cap);
        // A cap below the floor wins (a tiny revalidateInterval).
        let small = Duration::from_millis(500);
        assert_eq!(poll_interval(Duration::ZERO, small), small);
    }

    #[test]
    fn connect_links_must_be_https_with_a_path_safe_token() {
        let answer = |link: &str| json!({"status": "success", "data": {"link": link}});
        let (link, token) = parse_connect_link(&answer("https://connect.kombo.dev/v1?token=abc123")).unwrap();
        assert_eq!(link, "https://connect.kombo.dev/v1?token=abc123");
        assert_eq!(token, "abc123");
        for bad in [
            "http://connect.kombo.dev/v1?token=abc",
            "https://connect.kombo.dev/v1",
            "https://connect.kombo.dev/v1?token=..",
            "https://connect.kombo.dev/v1?token=a%2Fb",
            "javascript:alert(1)",
        ] {
            assert!(parse_connect_link(&answer(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn integration_ids_from_kombo_cannot_change_a_request_path() {
        let answer = |id: &str| json!({"data": {"id": id}});
        assert_eq!(
            parse_integration_by_token(&answer("personio:8d1hpPsbjxUkoCoa1veLZGe5")).unwrap(),
            "personio:8d1hpPsbjxUkoCoa1veLZGe5"
        );
        for bad in ["../x", "a/b", "a?b", "a#b", "a%2F", "..", "", "a b"] {
            assert!(parse_integration_by_token(&answer(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_branch_on_the_kombo_code_before_the_status() {
        let body = |code: &str| json!({"status": "error", "error": {"code": code, "message": "m"}});
        let none = Credentials::default();
        assert_eq!(
            classify_answer(400, &body("PLATFORM.AUTHENTICATION_INVALID"), &none).reason(),
            "ReauthRequired"
        );
        assert_eq!(
            classify_answer(400, &body("PLATFORM.RATE_LIMIT_EXCEEDED"), &none).reason(),
            "ProviderRateLimited"
        );
        assert_eq!(classify_answer(401, &Value::Null, &none).reason(), "ReauthRequired");
        assert_eq!(classify_answer(409, &Value::Null, &none).reason(), "ProviderConflict");
    }

    #[test]
    fn errors_name_kombo_and_the_step() {
        let err = in_step(
            &Step::Validate("personio:x"),
            DriverError::CredentialsRejected {
                message: "HTTP 401".into(),
            },
        );
        let text = err.to_string();
        assert!(text.contains("Kombo refused the API key"), "{text}");
        assert!(text.contains("GET /integrations/personio:x"), "{text}");
        assert!(text.contains("api_key"), "{text}");
    }
}
