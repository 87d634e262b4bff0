//! Kombo (shared/providers.md section 4): the Kombo API key (Bearer) plus an
//! integration id (`X-Integration-Id`).
//!
//! Two ways in:
//! - `spec.connection.integrationId` names an existing integration: the
//!   driver only validates it (`GET /integrations/{id}`). It is someone
//!   else's: it is never recorded as created by this operator, never put in
//!   `status.integrationId` and never deleted, also after the field is
//!   removed from the spec.
//! - Otherwise the driver checks the API key (`GET /check-api-key`), creates
//!   one connect link (`POST /connect/create-link`, `link_type` from the
//!   spec, `MAGIC_LINK` by default) and publishes it for the customer
//!   (condition message and Event), with its validity.
//!
//! Kombo tells a backend which integration a customer created only through
//! the short-lived activation token its front-end SDK hands to the page that
//! opened the link (`GET /connect/integration-by-token/{token}`) or through
//! the `integration-created` webhook. The link's own `token` parameter is not
//! such a token, and Kombo's API has no lookup by `end_user_origin_id` (the
//! SDKs generated from its OpenAPI document list no `GET /integrations`).
//! Without that webhook the operator therefore does not poll Kombo while a
//! link is out: the condition tells the admin how to finish (name the
//! integration in `spec.connection.integrationId`). With it (the inbound
//! server, `crate::inbound::kombo`), the receiving replica hands the
//! integration id to the leader in an attested annotation
//! ([`ExchangeRequest::reported_id`]); the driver takes it only if
//! `GET /integrations/{id}` shows the origin id sent with the link.
//!
//! State between reconciles lives in the output Secret, persisted
//! ([`Outcome::Persist`]) before the link is shown to anyone: the link, its type and
//! creation time, the `end_user_origin_id` sent with it, and — once known —
//! the id of the integration created with it (`kombo_created_integration_id`,
//! the marker that the operator owns it). Only such an integration is ever
//! deleted, and only after `GET /integrations/{id}` shows the
//! `end_user.origin_id` the operator sent. The same id is recorded in
//! `status.integrationId`, which survives the loss of the Secret: a lost
//! Secret is rebuilt from it instead of minting a second link.
//!
//! Assumptions (also in docs/providers/kombo.md):
//! - Link validity: Kombo's answer carries none, so the documented one per
//!   type is used: `EMBEDDED` one hour, `MAGIC_LINK` one year (counted as
//!   365 days). Kombo does not deduplicate, so an expired link is replaced
//!   only when a person asks (the annotation `integration-operator.io/retry`
//!   set to the value the condition names), never automatically.
//! - A 404 that carries Kombo's error envelope (`{"status":"error",
//!   "error":{…}}`, `PLATFORM.Reason::IntegrationNotFound`) means the integration
//!   does not exist; a 404 without it comes from something that is not
//!   Kombo's API (a wrong `baseUrl`) and is reported as a misconfiguration.
//! - API keys do not expire (none documented); the key is validated with every
//!   re-validation of the integration, every `revalidateInterval`.
//! - Numeric rate limits and `Retry-After` are unknown: a 429 is retried with
//!   backoff, at least the `Retry-After` when Kombo sends one.

use crate::reasons::Reason;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    CleanupRequest, Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, Priority, ProviderConfig,
    ProviderHttp, Then, base_url, endpoint, fields, keys, scrub,
};
use crate::KomboLinkType;

/// Output Secret keys holding the flow's state.
const LINK: &str = "connect_link";
const LINK_CREATED_AT: &str = "connect_link_created_at";
const LINK_TYPE: &str = "connect_link_type";
/// The link's `token` parameter, kept by earlier versions (removed when seen).
const LEGACY_LINK_TOKEN: &str = "connect_link_token";
const LINK_KEYS: [&str; 4] = [LINK, LINK_CREATED_AT, LINK_TYPE, LEGACY_LINK_TOKEN];
/// The `end_user_origin_id` sent with the link: the integration created with
/// it carries it as `end_user.origin_id`.
pub const ORIGIN: &str = "kombo_origin_id";
/// The integration the customer created with this operator's link: the
/// marker "created by this operator", the only id ever deleted. Whatever
/// learns the id (the `integration-created` webhook) writes it here; the
/// published `integration_id` is never read back as one.
pub const CREATED: &str = "kombo_created_integration_id";
/// Every key the flow persists besides the documented layout.
pub(crate) const STATE_KEYS: &[&str] = &[LINK, LINK_CREATED_AT, LINK_TYPE, LEGACY_LINK_TOKEN, ORIGIN, CREATED];
/// Validity of an `EMBEDDED` link (Kombo's SDK models: one hour).
const EMBEDDED_LIFETIME: SignedDuration = SignedDuration::from_secs(3600);
/// Validity of a `MAGIC_LINK` (Kombo's SDK models: one year; 365 days, so a
/// leap year never overstates it).
const MAGIC_LINK_LIFETIME: SignedDuration = SignedDuration::from_secs(365 * 24 * 3600);
/// Header carrying the integration id on integration-scoped calls.
pub const INTEGRATION_HEADER: &str = "X-Integration-Id";
/// Longest id or token accepted from Kombo (they end up in URL paths).
const MAX_ID: usize = 256;
/// Longest connect link accepted from Kombo.
const MAX_LINK: usize = 2048;

/// Kombo's tool ids (the `integration_tool` enumeration of
/// `POST /connect/create-link`), as the official SDK generated from Kombo's
/// OpenAPI document lists them (PyPI `kombo` 1.4.0, pinned in
/// tests/kombo_sdk; tests/integration/providers/kombo_sdk.rs checks this list against it).
pub const TOOLS: [&str; 207] = [
    "workday",
    "successfactors",
    "smartrecruiters",
    "factorial",
    "oraclerecruiting",
    "lever",
    "icims",
    "cornerstonetalentlink",
    "recruitee",
    "recruiterflow",
    "atlas",
    "greenhouse",
    "greenhousev3",
    "greenhousejobboard",
    "teamtailor",
    "teamtailorjobboards",
    "ashby",
    "talentsoft",
    "talentsoftcustomer",
    "concludis",
    "perbilityhelix",
    "talention",
    "piloga",
    "onlyfy",
    "personio",
    "ukgpro",
    "ukgready",
    "adpworkforcenow",
    "taleo",
    "rexx",
    "afas",
    "bamboohr",
    "bullhorn4salesforce",
    "bullhorn",
    "bullhornlogin",
    "workable",
    "jobvite",
    "fountain",
    "softgarden",
    "softgardenpartner",
    "pinpoint",
    "welcometothejungle",
    "dvinci",
    "dvinciadmin",
    "join",
    "sagehr",
    "traffit",
    "erecruiter",
    "abacusumantis",
    "umantis",
    "jobylon",
    "taleez",
    "hrworks",
    "otys",
    "zohorecruit",
    "ceipal",
    "eploy",
    "jobdiva",
    "careerplug",
    "perview",
    "eightfold",
    "paylocity",
    "paycor",
    "avature",
    "apploi",
    "phenom",
    "paradox",
    "heyrecruit",
    "recruhr",
    "recruitcrm",
    "jazzhr",
    "bite",
    "brassring",
    "homerun",
    "mysolution",
    "carerix",
    "carerixgraphql",
    "hroffice",
    "talentclue",
    "inrecruiting",
    "jobadder",
    "ubeeo",
    "connexys",
    "hr4you",
    "cornerstoneondemand",
    "zvooverecruit",
    "odoo",
    "comeet",
    "compleetpitcher",
    "compleetpersy",
    "compleet",
    "gem",
    "laura",
    "covetorest",
    "coveto",
    "mercury",
    "crelate",
    "manatal",
    "avionte",
    "mhmhr",
    "asymbl",
    "breezyhr",
    "flatchr",
    "dayforce",
    "digitalrecruiters",
    "applicantstack",
    "reachmee",
    "talentadore",
    "sandbox",
    "guidecom",
    "spott",
    "logicmelon",
    "loxo",
    "kula",
    "trackerrms",
    "databites",
    "pageup",
    "talent360",
    "emplypeople",
    "workdaycustomreport",
    "workdaycustomreportsftp",
    "ukgprowfm",
    "adpdecidium",
    "payfitcustomer",
    "payfitpartner",
    "payfit",
    "employmenthero",
    "fourth",
    "kenjo",
    "heavenhr",
    "hibob",
    "cezannehr",
    "entraid",
    "azuread",
    "googleworkspace",
    "nmbrs",
    "deel",
    "remotecom",
    "iriscascade",
    "okta",
    "sagepeople",
    "humaans",
    "eurecia",
    "oraclehcm",
    "officient",
    "sesamehr",
    "charliehr",
    "abacus",
    "zohopeople",
    "gusto",
    "breathehr",
    "catalystone",
    "mirus",
    "alexishr",
    "simployer",
    "peple",
    "youserve",
    "hansalog",
    "lattice",
    "latticetalent",
    "hoorayhr",
    "trinet",
    "trinetpeo",
    "namely",
    "paycom",
    "insperity",
    "paychex",
    "rippling",
    "sapling",
    "peoplehr",
    "lucca",
    "zelt",
    "planday",
    "boondmanager",
    "haileyhr",
    "silae",
    "skello",
    "oysterhr",
    "kiwihr",
    "square",
    "leapsome",
    "loket",
    "workforcecom",
    "peoplefirst",
    "sdworx",
    "itrent",
    "absenceio",
    "a3innuvanomina",
    "scim",
    "datevlauds",
    "datevhr",
    "datev",
    "datevlug",
    "sympa",
    "youforce",
    "nibelis",
    "peoplexd",
    "zellis",
    "sftp",
    "sftpfetch",
    "360learning",
    "talentlms",
    "docebo",
    "coursera",
    "udemy",
    "linkedinlearning",
    "moodle",
];

/// The documented validity of a link of `link_type`.
pub fn link_lifetime(link_type: KomboLinkType) -> SignedDuration {
    match link_type {
        KomboLinkType::Embedded => EMBEDDED_LIFETIME,
        KomboLinkType::MagicLink => MAGIC_LINK_LIFETIME,
    }
}

/// The driver state as the output Secret holds it.
fn get(persisted: &Credentials, key: &str) -> Option<String> {
    persisted
        .get(key)
        .map(|v| v.expose_secret().to_string())
        .filter(|v| !v.is_empty())
}

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

    /// Kombo says the integration does not exist: its error code, or a 404
    /// in Kombo's error envelope. A bare 404 (no envelope) is not Kombo
    /// speaking: see [`classify_answer`].
    fn not_found(&self) -> bool {
        error_code(&self.body) == Some("PLATFORM.INTEGRATION_NOT_FOUND")
            || (self.status == 404 && is_kombo_error(&self.body))
    }
}

/// A step of the flow, named in every error so that a condition says what
/// the operator was doing when Kombo failed.
enum Step<'a> {
    CheckApiKey,
    CreateLink,
    Validate(&'a str),
    Delete(&'a str),
}

impl Step<'_> {
    fn describe(&self) -> String {
        match self {
            Step::CheckApiKey => "checking the API key (GET /check-api-key)".into(),
            Step::CreateLink => "creating a connect link (POST /connect/create-link)".into(),
            Step::Validate(id) => format!("checking integration {id} (GET /integrations/{id})"),
            Step::Delete(id) => format!("deleting integration {id} (DELETE /integrations/{id})"),
        }
    }

    fn path(&self) -> String {
        match self {
            Step::CheckApiKey => "check-api-key".into(),
            Step::CreateLink => "connect/create-link".into(),
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
        other => other.in_step(&format!("Kombo, {what}")),
    }
}

/// An integration as `GET /integrations/{id}` describes it.
#[derive(Debug, PartialEq)]
pub struct IntegrationDetails {
    /// `tool.id` (Kombo returns the tool as an object), scrubbed.
    pub tool: String,
    pub status: String,
    pub setup_status: Option<String>,
    /// `end_user.origin_id`.
    pub origin_id: Option<String>,
}

/// Reads the `data` of a `GET /integrations/{id}` answer. Pure, so it can be
/// fuzzed.
pub fn parse_integration(body: &Value, secrets: &Credentials) -> Result<IntegrationDetails, DriverError> {
    let data = &body["data"];
    let Some(tool) = data["tool"].get("id").and_then(Value::as_str) else {
        return Err(DriverError::MalformedResponse {
            message: "the integration answer has no tool object with an id (data.tool.id)".into(),
        });
    };
    let status = data["status"].as_str().ok_or_else(|| DriverError::MalformedResponse {
        message: "the integration answer has no data.status".into(),
    })?;
    Ok(IntegrationDetails {
        tool: scrub(tool, secrets),
        status: status.to_string(),
        setup_status: data["setup_status"].as_str().map(str::to_string),
        origin_id: data["end_user"]["origin_id"].as_str().map(str::to_string),
    })
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
        priority: Priority,
        step: &Step<'_>,
        api_key: &str,
        body: Option<Value>,
        secrets: &Credentials,
    ) -> Result<Answer, DriverError> {
        let path = step.path();
        let url = endpoint(base_url(provider)?, &path).map_err(|e| in_step(step, e))?;
        let mut request = self.http.client().request(step.method(), url).bearer_auth(api_key);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer = self
            .http
            .send(provider, request, secrets, priority)
            .await
            .map_err(|e| in_step(step, e))?;
        let status = answer.status.as_u16();
        let body = if answer.status.is_success() {
            parse_body(&path, &answer.body).map_err(|e| in_step(step, e))?
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

    /// `GET /integrations/{id}`: `None` when Kombo says it does not exist.
    async fn details(
        &self,
        provider: &ProviderConfig,
        priority: Priority,
        api_key: &str,
        id: &str,
        secrets: &Credentials,
    ) -> Result<Option<IntegrationDetails>, DriverError> {
        let step = Step::Validate(id);
        let answer = self.call(provider, priority, &step, api_key, None, secrets).await?;
        if answer.not_found() && !matches!(answer.status, 401 | 403) {
            return Ok(None);
        }
        Self::expect_ok(&step, &answer, secrets)?;
        parse_integration(&answer.body, secrets)
            .map(Some)
            .map_err(|e| in_step(&step, e))
    }

    /// Checks the integration's state; issues the credentials when it can be
    /// used. `own`: created with this operator's link (recorded in status).
    async fn validate(
        &self,
        req: &ExchangeRequest<'_>,
        api_key: &str,
        integration_id: &str,
        own: bool,
        secrets: &Credentials,
    ) -> Result<Outcome, DriverError> {
        let step = Step::Validate(integration_id);
        let Some(details) = self
            .details(req.provider, req.priority, api_key, integration_id, secrets)
            .await?
        else {
            return Err(DriverError::NeedsAttention {
                reason: Reason::IntegrationNotFound,
                message: format!("Kombo has no integration {integration_id} ({})", step.describe()),
            });
        };
        let tool = &details.tool;
        match details.status.as_str() {
            "ACTIVE" => {}
            "INVALID" => {
                return Err(DriverError::NeedsAttention {
                    reason: Reason::IntegrationInvalid,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is INVALID: the customer's credentials for the tool stopped working. The customer must reconnect it in Kombo (a relink from the Kombo dashboard); the operator picks it up at the next check"
                    ),
                });
            }
            "INACTIVE" => {
                return Err(DriverError::NeedsAttention {
                    reason: Reason::IntegrationInactive,
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
        match details.setup_status.as_deref() {
            None | Some("COMPLETED") => {}
            Some("FINAL_SYNC_PENDING") => {
                return Ok(Outcome::Pending {
                    reason: Reason::IntegrationSyncPending,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is connected and Kombo is running its first full sync (setup_status FINAL_SYNC_PENDING); the credentials are published when it finishes"
                    ),
                    recheck_after: recheck_cap(req.provider),
                    started: None,
                });
            }
            Some(other) => {
                return Ok(Outcome::Pending {
                    reason: Reason::IntegrationSetupIncomplete,
                    message: format!(
                        "Kombo integration {integration_id} ({tool}) is connected but its setup is not finished (setup_status {}): the customer must complete the setup steps in Kombo",
                        scrub(other, secrets)
                    ),
                    recheck_after: recheck_cap(req.provider),
                    started: None,
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
            // Only the operator's own integration goes into status: the
            // record it is found again by, and deleted by.
            provider_id: own.then(|| integration_id.to_string()),
            warning: None,
        }))
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
            link_type,
            ..
        } = req.flow
        else {
            return Err(unsupported(req.flow));
        };
        // The key first, so a wrong key is reported as such rather than as a
        // failed link creation.
        let step = Step::CheckApiKey;
        let check = self
            .call(req.provider, req.priority, &step, api_key, None, secrets)
            .await?;
        Self::expect_ok(&step, &check, secrets)?;
        let mut body = json!({
            "end_user_email": end_user_email,
            "end_user_organization_name": end_user_organization_name,
            // Ties every integration created with the link to this
            // Integration (the Integration's uid unless the spec says otherwise).
            "end_user_origin_id": end_user_origin_id,
            "link_type": link_type.as_str(),
        });
        if let Some(c) = integration_category {
            body["integration_category"] = json!(c);
        }
        if let Some(t) = integration_tool {
            body["integration_tool"] = json!(t);
        }
        let step = Step::CreateLink;
        let answer = self
            .call(req.provider, req.priority, &step, api_key, Some(body), secrets)
            .await?;
        Self::expect_ok(&step, &answer, secrets)?;
        let (link, _) = parse_connect_link(&answer.body).map_err(|e| in_step(&step, e))?;
        // Whole seconds: the time is shown to people, and the retry
        // annotation must repeat it exactly.
        let created_at = Timestamp::from_second(req.now.as_second()).unwrap_or(req.now);
        // Shown only once it is durable: a link nobody can find again
        // could still create an integration.
        Ok(Outcome::persist_then(
            fields([
                (LINK, link.clone()),
                (LINK_CREATED_AT, created_at.to_string()),
                (LINK_TYPE, link_type.as_str().to_string()),
                (ORIGIN, end_user_origin_id.clone()),
            ]),
            &[keys::INTEGRATION_ID, CREATED, LEGACY_LINK_TOKEN],
            Then::Finish(Box::new(awaiting(req, &link, created_at, *link_type))),
        ))
    }

    /// The integration an `integration-created` webhook reported: recorded
    /// as created by this operator when Kombo shows this Integration's
    /// origin id on it. `Ok(None)`: not taken (the link keeps waiting).
    async fn claim_reported(
        &self,
        req: &ExchangeRequest<'_>,
        api_key: &str,
        id: &str,
        origin: &str,
        secrets: &Credentials,
    ) -> Result<Option<Outcome>, DriverError> {
        if !path_safe(id, &[':', '@', '+', '=']) {
            return Ok(None);
        }
        match self.details(req.provider, req.priority, api_key, id, secrets).await? {
            // Recorded as this operator's; the next call validates it.
            Some(d) if d.origin_id.as_deref() == Some(origin) => Ok(Some(Outcome::persist(
                fields([(CREATED, id.to_string()), (ORIGIN, origin.to_string())]),
                &LINK_KEYS,
            ))),
            _ => {
                tracing::warn!(
                    integration_id = %id,
                    "the reported Kombo integration does not exist or does not carry this Integration's origin id: not taken"
                );
                Ok(None)
            }
        }
    }

    /// The Secret lost the flow's state, but status recorded the
    /// integration created with this operator's link: take it back if Kombo
    /// still has it with this Integration's origin id. `Ok(None)`: nothing to
    /// recover (a new link may be created).
    async fn recover(
        &self,
        req: &ExchangeRequest<'_>,
        api_key: &str,
        recorded: &str,
        origin: &str,
        secrets: &Credentials,
    ) -> Result<Option<Outcome>, DriverError> {
        let retry = format!(
            "To create a new connect link instead, set the annotation integration-operator.io/retry={recorded} on this Integration"
        );
        if req.retry_requested == Some(recorded) {
            return Ok(None);
        }
        if !path_safe(recorded, &[':', '@', '+', '=']) {
            return Ok(None);
        }
        match self
            .details(req.provider, req.priority, api_key, recorded, secrets)
            .await?
        {
            None => Err(DriverError::NeedsAttention {
                reason: Reason::IntegrationNotFound,
                message: format!(
                    "the output Secret lost the Kombo connection state, and Kombo has no integration {recorded} (status.integrationId) any more: it was deleted in Kombo. {retry}"
                ),
            }),
            // Taken back; the next call validates it.
            Some(d) if d.origin_id.as_deref() == Some(origin) => Ok(Some(Outcome::persist(
                fields([(CREATED, recorded.to_string()), (ORIGIN, origin.to_string())]),
                &LINK_KEYS,
            ))),
            Some(_) => Err(DriverError::NeedsAttention {
                reason: Reason::IntegrationNotFound,
                message: format!(
                    "the output Secret lost the Kombo connection state; status.integrationId names integration {recorded}, but its end_user.origin_id is not this Integration's ({origin}), so it is not taken over. Name it in spec.connection.integrationId to use it. {retry}"
                ),
            }),
        }
    }
}

fn unsupported(flow: &Flow) -> DriverError {
    DriverError::Misconfigured {
        message: format!("kombo does not support the {} flow", flow.name()),
    }
}

/// The longest wait between two checks while something is pending.
fn recheck_cap(provider: &ProviderConfig) -> Duration {
    provider
        .revalidate_interval
        .min(Duration::from_secs(120))
        .max(Duration::from_millis(500))
}

/// The Pending outcome while the customer has not completed the link. The
/// message is the same on every look, so it makes one Event.
/// The durable name of a link in status (`status.awaiting`).
fn link_marker(created_at: Timestamp) -> String {
    format!("link-created-{}", created_at.as_second())
}

fn awaiting(req: &ExchangeRequest<'_>, link: &str, created_at: Timestamp, link_type: KomboLinkType) -> Outcome {
    let (email, origin) = match req.flow {
        Flow::Connection {
            end_user_email,
            end_user_origin_id,
            ..
        } => (end_user_email.as_str(), end_user_origin_id.as_str()),
        _ => ("", ""),
    };
    let expires = created_at + link_lifetime(link_type);
    let left = Duration::try_from(expires.duration_since(req.now)).unwrap_or_default();
    let purpose = match link_type {
        KomboLinkType::MagicLink => format!("send this Kombo connect link to {email}"),
        KomboLinkType::Embedded => {
            format!("open this EMBEDDED Kombo connect link for {email} with the Kombo Connect front-end SDK")
        }
    };
    Outcome::Pending {
        reason: Reason::AwaitingConnection,
        message: format!(
            "waiting for the customer to connect their tool in Kombo: {purpose}: {link} ({}, valid until {expires}). When they have finished, find the integration with origin id {origin} in the Kombo dashboard and set spec.connection.integrationId to its id: Kombo reports a finished connection only through its front-end SDK or its integration-created webhook, and its API has no lookup by origin id",
            link_type.as_str()
        ),
        // Nothing is asked of Kombo while a link waits: looking again costs
        // no call, and reports the expiry (or a Secret edit) on time.
        recheck_after: left.min(recheck_cap(req.provider)).max(Duration::from_secs(1)),
        started: Some(link_marker(created_at)),
    }
}

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

/// Whether `body` is Kombo's error envelope
/// (`{"status":"error","error":{"message":…}}`).
fn is_kombo_error(body: &Value) -> bool {
    body["status"] == "error" && body["error"].is_object()
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

/// The integration id in an `integration-by-token` answer (the answer to an
/// activation token of Kombo's front-end SDK; the operator has none to ask
/// with yet).
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
            // Kombo answers every error with its envelope: a 404 without it
            // is a path Kombo's API does not have (a wrong baseUrl, or a
            // proxy in front of it).
            404 if !is_kombo_error(body) => DriverError::Misconfigured {
                message: "HTTP 404 without Kombo's error body: this is not Kombo's API; check the ClusterProvider's baseUrl (https://api.kombo.dev/v1 or https://api.us.kombo.dev/v1)".into(),
            },
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

    /// Only an integration created with this operator's link is ever
    /// deleted (see [`KomboDriver::cleanup`]); one named in `integrationId`
    /// belongs to someone else. The finalizer is held whenever the policy
    /// is `Delete`: the Integration may own one from before the id was named.
    fn needs_cleanup(&self, flow: &Flow) -> bool {
        matches!(
            flow,
            Flow::Connection {
                delete_on_cleanup: true,
                ..
            }
        )
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        let Flow::Connection {
            integration_id,
            end_user_origin_id,
            link_type,
            ..
        } = req.flow
        else {
            return Err(unsupported(req.flow));
        };
        let api_key = req.inputs.require(keys::API_KEY)?.expose_secret().to_string();
        let persisted = req.persisted;
        let secrets = req.inputs.and(persisted);

        // An integration someone else created: validate only. It is never
        // recorded as this operator's (the published integration_id is
        // never read back as one).
        if let Some(id) = integration_id {
            if LINK_KEYS.iter().any(|k| persisted.get(k).is_some()) {
                // The named integration supersedes a waiting link; the
                // next call validates it.
                return Ok(Outcome::persist(Credentials::default(), &LINK_KEYS));
            }
            return self
                .validate(req, &api_key, id, false, &secrets)
                .await
                .map_err(|e| match e {
                    DriverError::NeedsAttention { reason, message } if reason == Reason::IntegrationNotFound => {
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

        // The integration the customer created with this operator's link.
        if let Some(id) = get(persisted, CREATED) {
            if LINK_KEYS.iter().any(|k| persisted.get(k).is_some()) {
                // The link's job is done; the next call validates.
                return Ok(Outcome::persist(Credentials::default(), &LINK_KEYS));
            }
            match self.validate(req, &api_key, &id, true, &secrets).await {
                Err(DriverError::NeedsAttention { reason, message })
                    if reason == Reason::IntegrationNotFound && req.retry_requested != Some(id.as_str()) =>
                {
                    return Err(DriverError::NeedsAttention {
                        reason,
                        message: format!(
                            "{message}: it was deleted in Kombo. To send the customer a new connect link, set the annotation integration-operator.io/retry={id} on this Integration"
                        ),
                    });
                }
                // Asked for a new link: forget the integration; the next
                // call starts over without it.
                Err(DriverError::NeedsAttention {
                    reason: Reason::IntegrationNotFound,
                    ..
                }) => {
                    return Ok(Outcome::persist(
                        Credentials::default(),
                        &[keys::INTEGRATION_ID, CREATED],
                    ));
                }
                other => return other,
            }
        }

        // A verified integration-created webhook named the integration the
        // customer created (handed over by the inbound server): take it as
        // this operator's only if Kombo shows the origin id sent with the
        // link, and only while a link is (or was) out.
        if let Some(id) = req.reported_id
            && get(persisted, CREATED).is_none()
            && (get(persisted, LINK).is_some() || req.recorded_awaiting.is_some())
            && let Some(outcome) = self
                .claim_reported(req, &api_key, id, end_user_origin_id, &secrets)
                .await?
        {
            return Ok(outcome);
        }

        // A link waiting for the customer: nothing to ask Kombo (see the
        // module documentation), only its expiry to watch.
        if let (Some(link), Some(created)) = (get(persisted, LINK), get(persisted, LINK_CREATED_AT)) {
            let created_at: Timestamp = created.parse().unwrap_or(req.now);
            let sent_type = match get(persisted, LINK_TYPE).as_deref() {
                Some("MAGIC_LINK") => KomboLinkType::MagicLink,
                // Earlier versions created EMBEDDED links (Kombo's default).
                _ => KomboLinkType::Embedded,
            };
            let expires = created_at + link_lifetime(sent_type);
            if expires > req.now {
                return Ok(awaiting(req, &link, created_at, sent_type));
            }
            if req.retry_requested != Some(created.as_str()) {
                return Err(DriverError::NeedsAttention {
                    reason: Reason::ConnectLinkExpired,
                    message: format!(
                        "the Kombo connect link created at {created} ({}) expired at {expires} unless the customer completed it. If they did, find the integration with origin id {end_user_origin_id} in the Kombo dashboard and set spec.connection.integrationId to its id; otherwise, to create a new {} link, set the annotation integration-operator.io/retry={created} on this Integration",
                        sent_type.as_str(),
                        link_type.as_str()
                    ),
                });
            }
            return self.create_link(req, &api_key, &secrets).await;
        }

        // No state in the Secret, but status recorded the integration the
        // operator's link created: the Secret was lost. Take it back rather
        // than minting a second link.
        if let Some(recorded) = req.recorded_id
            && let Some(outcome) = self
                .recover(req, &api_key, recorded, end_user_origin_id, &secrets)
                .await?
        {
            return Ok(outcome);
        }

        // No state in the Secret, but status recorded a link still waiting:
        // the Secret (and the link in it) was lost while the customer may
        // still complete it. Kombo cannot list links, so it cannot be
        // recovered; a second link could create a second integration.
        if let Some(marker) = req.recorded_awaiting
            && req.retry_requested != Some(marker)
        {
            return Err(DriverError::NeedsAttention {
                reason: Reason::ConnectLinkLost,
                message: format!(
                    "the output Secret holding the Kombo connect link ({marker}) was deleted before the customer completed it; Kombo cannot list connect links, so it cannot be recovered, and the customer may still complete it. If they did, find the integration with origin id {end_user_origin_id} in the Kombo dashboard and set spec.connection.integrationId to its id; to create a new link instead, set the annotation integration-operator.io/retry={marker} on this Integration"
                ),
            });
        }

        self.create_link(req, &api_key, &secrets).await
    }

    async fn cleanup(&self, req: &CleanupRequest<'_>) -> Result<(), DriverError> {
        let Flow::Connection { end_user_origin_id, .. } = req.flow else {
            return Err(unsupported(req.flow));
        };
        // Only the integration created with this operator's link, from the
        // Secret or, if the Secret is gone, from status.
        let Some(id) = get(req.persisted, CREATED).or_else(|| req.recorded_id.map(str::to_string)) else {
            return Ok(());
        };
        if !path_safe(&id, &[':', '@', '+', '=']) {
            return Ok(());
        }
        let api_key = req.inputs.require(keys::API_KEY)?.expose_secret().to_string();
        let secrets = req.inputs.and(req.persisted);
        let origin = get(req.persisted, ORIGIN).unwrap_or_else(|| end_user_origin_id.clone());
        // Never delete what does not carry the origin id this operator sent.
        let Some(details) = self
            .details(req.provider, req.priority, &api_key, &id, &secrets)
            .await?
        else {
            return Ok(());
        };
        if details.origin_id.as_deref() != Some(origin.as_str()) {
            tracing::warn!(
                integration_id = %id,
                "Kombo integration does not carry this Integration's origin id: not deleted"
            );
            return Ok(());
        }
        let step = Step::Delete(&id);
        let answer = self
            .call(req.provider, req.priority, &step, &api_key, Some(json!({})), &secrets)
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
    fn link_validity_is_the_documented_one_per_type() {
        assert_eq!(link_lifetime(KomboLinkType::Embedded), SignedDuration::from_hours(1));
        assert_eq!(
            link_lifetime(KomboLinkType::MagicLink),
            SignedDuration::from_hours(365 * 24)
        );
    }

    #[test]
    fn a_bare_404_is_a_misconfiguration_and_kombos_404_means_not_found() {
        let none = Credentials::default();
        // A wrong baseUrl: a web server's page, or JSON that is not Kombo's envelope.
        for bare in [Value::Null, json!({"message": "Not Found"}), json!("Not Found")] {
            let e = classify_answer(404, &bare, &none);
            assert_eq!(e.reason(), Reason::ProviderMisconfigured, "{bare}");
            assert!(e.to_string().contains("baseUrl"), "{e}");
            assert!(
                !Answer {
                    status: 404,
                    body: bare
                }
                .not_found()
            );
        }
        let kombo = json!({"status": "error", "error": {"code": "PLATFORM.INTEGRATION_NOT_FOUND", "title": null, "message": "m", "log_url": null}});
        assert!(
            Answer {
                status: 404,
                body: kombo.clone()
            }
            .not_found()
        );
        let no_code =
            json!({"status": "error", "error": {"code": null, "title": null, "message": "m", "log_url": null}});
        assert!(
            Answer {
                status: 404,
                body: no_code
            }
            .not_found()
        );
        assert_ne!(
            classify_answer(404, &kombo, &none).reason(),
            Reason::ProviderMisconfigured
        );
    }

    #[test]
    fn the_tool_is_read_as_the_object_kombo_returns() {
        let body = json!({"status": "success", "data": {
            "id": "personio:x",
            "tool": {"id": "personio", "label": "Personio", "internal_label": null, "logo_url": "https://x/l.svg", "icon_url": "https://x/i.svg"},
            "status": "ACTIVE", "setup_status": "COMPLETED",
            "end_user": {"organization_name": "ACME", "creator_email": null, "origin_id": "o-1"},
        }});
        let d = parse_integration(&body, &Credentials::default()).unwrap();
        assert_eq!(d.tool, "personio");
        assert_eq!(d.origin_id.as_deref(), Some("o-1"));
        let mut flat = body.clone();
        flat["data"]["tool"] = json!("personio");
        assert_eq!(
            parse_integration(&flat, &Credentials::default()).unwrap_err().reason(),
            Reason::MalformedResponse
        );
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
            Reason::ReauthRequired
        );
        assert_eq!(
            classify_answer(400, &body("PLATFORM.RATE_LIMIT_EXCEEDED"), &none).reason(),
            Reason::ProviderRateLimited
        );
        assert_eq!(
            classify_answer(401, &Value::Null, &none).reason(),
            Reason::ReauthRequired
        );
        assert_eq!(
            classify_answer(409, &Value::Null, &none).reason(),
            Reason::ProviderConflict
        );
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
