//! Provider drivers: turn input credentials into issued credentials.
//!
//! A driver knows a provider's wire format and nothing of Kubernetes: it gets
//! typed flow parameters, an endpoint configuration and [`SecretString`]
//! inputs, and returns an [`Outcome`] or a classified [`DriverError`]. The
//! controller turns outcomes into Secrets and conditions.

pub mod authorization;
pub mod cloud_elements;
pub mod http;
pub mod kombo;
pub mod limiter;
pub mod oauth2;
pub mod reasons;
pub mod smartrecruiters;
pub mod spec;
pub mod talentlink;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use http::ProviderHttp;
pub use limiter::Priority;

use crate::reasons::Reason;

/// Output Secret keys shared by every provider (the documented layout).
pub mod keys {
    /// Ready header value for `Authorization` (`Bearer …`, `Basic …`).
    pub const AUTHORIZATION: &str = "authorization";
    /// Name of the header to send.
    pub const HEADER_NAME: &str = "header_name";
    /// Value of the header to send.
    pub const HEADER_VALUE: &str = "header_value";
    /// Access token, where the flow yields one.
    pub const ACCESS_TOKEN: &str = "access_token";
    /// Token type as the provider named it (`Bearer`).
    pub const TOKEN_TYPE: &str = "token_type";
    /// Expiry of the access token, RFC 3339.
    pub const EXPIRES_AT: &str = "expires_at";
    /// Customer-level client id a provider issued.
    pub const CLIENT_ID: &str = "client_id";
    /// Customer-level client secret a provider issued.
    pub const CLIENT_SECRET: &str = "client_secret";
    /// Provider-side integration or instance id.
    pub const INTEGRATION_ID: &str = "integration_id";
    /// API base URL the credentials are for.
    pub const BASE_URL: &str = "base_url";
    /// An API key the client must send besides the header (TalentLink's `api_key` query parameter).
    pub const API_KEY: &str = "api_key";
    /// Name of a second header the client must send (Kombo: `X-Integration-Id`).
    pub const EXTRA_HEADER_NAME: &str = "extra_header_name";
    /// Value of that second header.
    pub const EXTRA_HEADER_VALUE: &str = "extra_header_value";

    /// Every key above.
    pub const ALL: &[&str] = &[
        AUTHORIZATION,
        HEADER_NAME,
        HEADER_VALUE,
        ACCESS_TOKEN,
        TOKEN_TYPE,
        EXPIRES_AT,
        CLIENT_ID,
        CLIENT_SECRET,
        INTEGRATION_ID,
        BASE_URL,
        API_KEY,
        EXTRA_HEADER_NAME,
        EXTRA_HEADER_VALUE,
    ];
}

/// Every key a driver can write into the output Secret: the documented
/// layout and the flows' own state. Output templates may not use them.
pub fn issued_keys() -> impl Iterator<Item = &'static str> {
    keys::ALL
        .iter()
        .chain(smartrecruiters::STATE_KEYS)
        .chain(cloud_elements::STATE_KEYS)
        .chain(kombo::STATE_KEYS)
        .copied()
}

/// Endpoint configuration of one provider, as the admin set it on a
/// ClusterProvider, with defaults applied.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// ClusterProvider name; keys the shared rate limiter.
    pub name: String,
    pub token_url: Option<Url>,
    /// Authorization endpoint (the `authorizationCode` flow).
    pub authorization_url: Option<Url>,
    /// The operator's callback registered at the provider (`redirect_uri`).
    pub redirect_url: Option<Url>,
    pub base_url: Option<Url>,
    pub client_auth: ClientAuth,
    pub request_timeout: Duration,
    /// Lifetime assumed when the provider does not say.
    pub default_lifetime: Duration,
    pub max_concurrency: usize,
    pub requests_per_second: u32,
    /// How often credentials without an expiry (API keys, instance tokens)
    /// are validated again.
    pub revalidate_interval: Duration,
    /// What a 429's Retry-After holds back.
    pub rate_limit_scope: RateLimitScope,
}

pub use crate::spec::{KomboLinkType, ProviderType, RateLimitScope};

/// RFC 6749 section 2.3.1 client authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// Parameters of the flow an Integration asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Flow {
    /// OAuth 2.0 client credentials (input keys `client_id`, `client_secret`).
    ClientCredentials {
        scopes: Vec<String>,
        audience: Option<String>,
    },
    /// Validate and publish an API key (input key `api_key`).
    ApiKey,
    /// Username, password and API key (input keys `username`, `password`, `api_key`).
    BasicAuth,
    /// SmartRecruiters General Partner Integration (master credentials as
    /// `client_id`, `client_secret`).
    PartnerIntegration {
        app_id: String,
        company_id: String,
        bidirectional: bool,
    },
    /// Cloud Elements / Open Connectors element instance.
    ElementInstance {
        element_key: String,
        instance_name: String,
        configuration: BTreeMap<String, String>,
        /// Element configuration key -> input key.
        secret_configuration: BTreeMap<String, String>,
        delete_on_cleanup: bool,
        /// Publish `User …, Organization …, Element …` instead of `User …, Element …`.
        publish_organization_secret: bool,
    },
    /// Kombo connection.
    Connection {
        end_user_email: String,
        end_user_organization_name: String,
        end_user_origin_id: String,
        integration_category: Option<String>,
        integration_tool: Option<String>,
        /// `link_type` of new connect links.
        link_type: KomboLinkType,
        integration_id: Option<String>,
        delete_on_cleanup: bool,
    },
    /// OAuth 2.0 authorization code with PKCE (input keys `client_id` and,
    /// optionally, `client_secret`).
    AuthorizationCode {
        scopes: Vec<String>,
        extra_parameters: BTreeMap<String, String>,
        /// The Integration the `state` parameter is bound to.
        binding: authorization::Binding,
    },
}

impl Flow {
    /// Whether the flow keeps state in the output Secret from one exchange
    /// to the next (answers shown once, "request sent" markers), so that an
    /// exchange must start from what the Secret holds.
    pub fn keeps_state(&self) -> bool {
        matches!(
            self,
            Flow::PartnerIntegration { .. }
                | Flow::ElementInstance { .. }
                | Flow::Connection { .. }
                | Flow::AuthorizationCode { .. }
        )
    }

    /// Identifies the provider-side object the flow creates where a provider
    /// allows only one per key (SmartRecruiters: one partner integration per
    /// appId and companyId); two Integrations on the same ClusterProvider
    /// with the same key would create it twice.
    pub fn exclusive_key(&self) -> Option<String> {
        match self {
            Flow::PartnerIntegration { app_id, company_id, .. } => {
                Some(format!("partnerIntegration\0{app_id}\0{company_id}"))
            }
            _ => None,
        }
    }

    /// Stable name, used in conditions and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Flow::ClientCredentials { .. } => "clientCredentials",
            Flow::ApiKey => "apiKey",
            Flow::BasicAuth => "basicAuth",
            Flow::PartnerIntegration { .. } => "partnerIntegration",
            Flow::ElementInstance { .. } => "elementInstance",
            Flow::Connection { .. } => "connection",
            Flow::AuthorizationCode { .. } => "authorizationCode",
        }
    }
}

/// Named credential values (input Secret data, or previously issued fields).
/// Values are [`SecretString`]s: their `Debug` output is redacted.
#[derive(Clone, Default)]
pub struct Credentials(BTreeMap<String, SecretString>);

impl std::fmt::Debug for Credentials {
    // Names only: values never reach a log line, even at trace level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Credentials {
    pub fn new(values: BTreeMap<String, SecretString>) -> Self {
        Self(values)
    }

    /// The value under `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&SecretString, DriverError> {
        match self.0.get(key) {
            Some(v) if !v.expose_secret().is_empty() => Ok(v),
            _ => Err(DriverError::MissingInput { key: key.to_string() }),
        }
    }

    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &SecretString)> {
        self.0.iter()
    }

    /// Every value, for scrubbing provider messages before they are shown.
    pub fn values(&self) -> impl Iterator<Item = &SecretString> {
        self.0.values()
    }

    /// These values overlaid with `other`'s, minus the `remove` keys.
    pub fn updated(&self, other: &Credentials, remove: &[&str]) -> Credentials {
        let mut all = self.0.clone();
        for (k, v) in other.iter() {
            all.insert(k.clone(), v.clone());
        }
        all.retain(|k, _| !remove.contains(&k.as_str()));
        Credentials(all)
    }

    /// Both sets of values, for scrubbing.
    pub fn and(&self, other: &Credentials) -> Credentials {
        self.updated(other, &[])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a provider call goes and how urgently: the ClusterProvider's
/// settings and the controller's priority for the request that causes it.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub provider: &'a ProviderConfig,
    pub priority: Priority,
}

/// What a driver is asked to do.
pub struct ExchangeRequest<'a> {
    pub provider: &'a ProviderConfig,
    /// How urgent its provider calls are at the provider's limiter (the
    /// controller's decision: a first issue or a change is urgent, a renewal
    /// early in its window yields). Drivers pass it on with every call.
    pub priority: Priority,
    pub flow: &'a Flow,
    /// The input Secret's data.
    pub inputs: &'a Credentials,
    /// Fields already in the output Secret: from earlier exchanges, and
    /// from this exchange's [`Outcome::Persist`]s.
    pub persisted: &'a Credentials,
    /// The other Integration (`namespace/name`) that names the same
    /// ClusterProvider and the same [`Flow::exclusive_key`] and came first
    /// (older, or as old and sorted first): it, not this one, creates the
    /// provider-side object. A fact the controller computes from its own
    /// cache before the call, for flows with an exclusive key only, so a
    /// driver never lists Kubernetes objects; `None` when there is none.
    pub first_claimant: Option<&'a str>,
    /// The key that binds an authorization request's `state` to the
    /// Integration (the authorization-code flow); `None` outside the operator.
    pub state_key: Option<&'a authorization::StateKey>,
    /// A stable identity of the requesting object (the Integration's uid):
    /// seeds deterministic ids, tags and origin ids.
    pub identity: &'a str,
    /// A value the user set to ask for a one-shot step to be done again
    /// (a new connect link, a second creation request); `None` if not asked.
    pub retry_requested: Option<&'a str>,
    /// The provider-side id the last issue recorded in the Integration's
    /// status (`status.integrationId`). It survives the loss of the output
    /// Secret, so a driver can find what an earlier one-shot flow created
    /// instead of creating a second one.
    pub recorded_id: Option<&'a str>,
    /// The one-shot step that waits for someone outside the cluster, as the
    /// driver named it in `Outcome::Pending::started` and the status
    /// recorded it (`status.awaiting`); survives the loss of the Secret.
    pub recorded_awaiting: Option<&'a str>,
    /// A provider-side id that a verified provider webhook reported for
    /// this Integration (Kombo's `integration-created`: the integration the
    /// customer created with the operator's link), handed over by the
    /// inbound server through an attested annotation. A hint only: the
    /// driver checks it with the provider before it uses it.
    pub reported_id: Option<&'a str>,
    /// When the exchange began: the same for every call of one exchange
    /// (see [`run_exchange`]), so a driver can tell a marker it persisted
    /// in this exchange (its value is `now`) from one an earlier exchange
    /// left behind.
    pub now: Timestamp,
}

/// What a driver returns.
#[derive(Debug)]
pub enum Outcome {
    /// Final credentials, ready for the output Secret.
    Issued(Issued),
    /// The flow waits for something outside the operator (a person completing
    /// a connect link). Look again after `recheck_after`.
    Pending {
        reason: Reason,
        message: String,
        recheck_after: Duration,
        /// A one-shot step the driver started that now waits for someone
        /// outside the cluster (a Kombo connect link: `link created at T`).
        /// Recorded in status, outside the output Secret, so that losing
        /// the Secret never starts a second one.
        started: Option<String>,
    },
    /// "Persist these keys, then go on as `then` says": state the flow must
    /// not lose (credentials a provider shows only once, a "request sent"
    /// marker, a rotated refresh token) is written to the output Secret
    /// before anything else happens. The driver returns the effect instead
    /// of writing through the controller mid-call: it stays a function of
    /// its inputs and what is persisted, and the path after a persist is
    /// the path a restart after it takes, since both start from the
    /// persisted state. [`run_exchange`] applies it.
    Persist {
        /// Keys to set, over what is persisted.
        set: Credentials,
        /// Keys to remove.
        remove: Vec<String>,
        then: Then,
    },
}

/// What follows a [`Outcome::Persist`] once its write succeeded (a failed
/// write ends the exchange with [`DriverError::PersistFailed`]).
#[derive(Debug)]
pub enum Then {
    /// Call the driver again with the new persisted state: work remains
    /// (a creation request after its marker, a validation after a
    /// creation), and the driver resumes it from that state, exactly as
    /// after a restart at this point.
    CallAgain,
    /// The exchange ends with this outcome: the driver already knows it,
    /// and calling again could not recompute it for free (a rotated refresh
    /// token persisted with the access token it came with: a second call
    /// would spend a second token request) or would be pointless (a new
    /// authorization request or connect link, published as soon as it is
    /// durable).
    Finish(Box<Outcome>),
    /// The exchange ends with this error: the write undid state the error
    /// makes stale (a "request sent" marker after an answer that proves
    /// nothing was created), and a next call could no longer know the error.
    Fail(DriverError),
}

impl Outcome {
    /// "Persist `set`, remove `remove`, then call me again".
    pub fn persist(set: Credentials, remove: &[&str]) -> Outcome {
        Outcome::persist_then(set, remove, Then::CallAgain)
    }

    /// Persists `set` and removes `remove`, then goes on as `then` says.
    pub fn persist_then(set: Credentials, remove: &[&str], then: Then) -> Outcome {
        Outcome::Persist {
            set,
            remove: remove.iter().map(|k| k.to_string()).collect(),
            then,
        }
    }
}

/// Most [`Outcome::Persist`]s one exchange may ask for. The longest flow
/// needs four (SmartRecruiters' partner integration created again:
/// forgetting the dead credentials, the generated partner credentials,
/// the request-sent marker, the creation answer); more means a driver that
/// does not make progress, which must end as an error, not spin.
pub const MAX_PERSISTS: usize = 16;

/// Where [`run_exchange`] writes what a driver asks to persist: the output
/// Secret in the controller, memory in tests and the companion's `check`.
#[async_trait]
pub trait StateWriter: Send {
    /// Makes `persisted` (everything now persisted) durable; `dropped` are
    /// the keys that were persisted before and are removed now (a
    /// server-side apply does not remove keys another write created).
    async fn write(&mut self, persisted: &Credentials, dropped: &[&str]) -> Result<(), DriverError>;
}

/// An exchange run to its end by [`run_exchange`].
#[derive(Debug)]
pub struct Finished {
    /// [`Outcome::Issued`] or [`Outcome::Pending`], never a persist.
    pub outcome: Outcome,
    /// What is persisted now: the request's state with every persist applied.
    pub persisted: Credentials,
}

/// Runs one exchange to its end: calls the driver, writes each
/// [`Outcome::Persist`] with `writer` and goes on as its [`Then`] says,
/// each call with the same request but the new persisted state. One loop
/// for the controller, the companion and the tests, so the persist
/// semantics (and the bound) are the same everywhere.
pub async fn run_exchange(
    driver: &dyn Driver,
    req: &ExchangeRequest<'_>,
    writer: &mut dyn StateWriter,
) -> Result<Finished, DriverError> {
    let mut persisted = req.persisted.clone();
    let mut persists = 0;
    let mut next = driver.exchange(req).await;
    loop {
        let (set, remove, then) = match next? {
            Outcome::Persist { set, remove, then } => (set, remove, then),
            outcome => return Ok(Finished { outcome, persisted }),
        };
        if persists == MAX_PERSISTS {
            return Err(DriverError::NeedsAttention {
                reason: Reason::InternalError,
                message: format!(
                    "the {} flow asked to persist its state more than {MAX_PERSISTS} times in one exchange without finishing; stopped (a driver bug: please report it)",
                    req.flow.name()
                ),
            });
        }
        persists += 1;
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        let updated = persisted.updated(&set, &remove);
        let dropped: Vec<&str> = remove.iter().copied().filter(|k| persisted.get(k).is_some()).collect();
        writer.write(&updated, &dropped).await?;
        persisted = updated;
        next = match then {
            Then::CallAgain => {
                driver
                    .exchange(&ExchangeRequest {
                        persisted: &persisted,
                        ..*req
                    })
                    .await
            }
            Then::Finish(outcome) => Ok(*outcome),
            Then::Fail(e) => Err(e),
        };
    }
}

/// Keeps persisted state in memory: tests and the companion's `check`,
/// which writes nothing anywhere.
#[derive(Debug, Default)]
pub struct MemoryState {
    /// What is persisted now.
    pub persisted: Credentials,
    /// Every state written, in order.
    pub writes: Vec<Credentials>,
}

#[async_trait]
impl StateWriter for MemoryState {
    async fn write(&mut self, persisted: &Credentials, _dropped: &[&str]) -> Result<(), DriverError> {
        self.persisted = persisted.clone();
        self.writes.push(persisted.clone());
        Ok(())
    }
}

/// What a driver's cleanup is asked to undo.
pub struct CleanupRequest<'a> {
    pub provider: &'a ProviderConfig,
    /// As [`ExchangeRequest::priority`].
    pub priority: Priority,
    pub flow: &'a Flow,
    pub inputs: &'a Credentials,
    pub persisted: &'a Credentials,
    /// The requesting object's stable identity, as in [`ExchangeRequest`]
    /// (finds a provider-side object whose id never reached the Secret).
    pub identity: &'a str,
    /// As [`ExchangeRequest::recorded_id`].
    pub recorded_id: Option<&'a str>,
}

/// Credentials a provider issued.
#[derive(Debug)]
pub struct Issued {
    /// Output Secret fields, keyed by the names in [`keys`].
    pub fields: Credentials,
    /// When they expire; `None` for credentials without a lifetime (API keys).
    pub expires_at: Option<Timestamp>,
    /// The provider gave no lifetime and `default_lifetime` was assumed.
    pub lifetime_defaulted: bool,
    /// Provider-side identifier, where there is one.
    pub provider_id: Option<String>,
    /// Issued, but something needs a person's attention (a `Warning`
    /// condition beside Ready=True): the reason and message.
    pub warning: Option<(Reason, String)>,
}

/// Why a driver failed, classified so the controller can decide what to do.
/// Messages are provider text scrubbed of input values and truncated.
#[derive(Debug, thiserror::Error, Clone, PartialEq, strum::EnumDiscriminants)]
#[strum_discriminants(derive(strum::EnumIter), name(DriverErrorKind))]
pub enum DriverError {
    #[error("input Secret has no non-empty key {key:?}")]
    MissingInput { key: String },
    #[error("the provider refused the credentials: {message}")]
    CredentialsRejected { message: String },
    #[error("the provider denied the request: {message}")]
    PermissionDenied { message: String },
    #[error("the provider reported a conflict: {message}")]
    Conflict { message: String },
    #[error("the provider rejected the request: {message}")]
    BadRequest { message: String },
    /// HTTP 429, a 503 with Retry-After, or a provider's own rate-limit code.
    #[error("rate limited, {}", match retry_after {
        Some(d) => format!("Retry-After asked to wait {}", human_duration(*d)),
        None => "no Retry-After given: retried with backoff".to_string(),
    })]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider is unavailable: {message}")]
    Unavailable { message: String },
    #[error("no answer within {} (the ClusterProvider's requestTimeout)", human_duration(*timeout))]
    Timeout { timeout: Duration },
    /// A failed provider call with where it happened: the step and the
    /// endpoint (host and ClusterProvider). Reason, retry policy and
    /// Retry-After are the wrapped error's. Each part is named by whoever
    /// knows it, first come first kept: a driver names its step with
    /// [`DriverError::in_step`] (the one way drivers add context), the HTTP
    /// layer the host it called, and the controller's
    /// [`DriverError::located`] fills in whatever is still missing.
    #[error("{}", at_text(step.as_deref(), endpoint.as_deref(), error))]
    At {
        step: Option<String>,
        endpoint: Option<String>,
        error: Box<DriverError>,
    },
    #[error("the provider's answer could not be understood: {message}")]
    MalformedResponse { message: String },
    #[error("the provider endpoint is not configured correctly: {message}")]
    Misconfigured { message: String },
    #[error("{message}")]
    NeedsAttention { reason: Reason, message: String },
    /// The write of an [`Outcome::Persist`] failed.
    #[error("could not persist credentials: {message}")]
    PersistFailed { message: String },
}

impl DriverError {
    /// PascalCase reason, used as condition reason, Event reason and metric label.
    pub fn reason(&self) -> Reason {
        match self {
            DriverError::MissingInput { .. } => Reason::InvalidInputSecret,
            DriverError::CredentialsRejected { .. } => Reason::ReauthRequired,
            DriverError::PermissionDenied { .. } => Reason::PermissionDenied,
            DriverError::Conflict { .. } => Reason::ProviderConflict,
            DriverError::BadRequest { .. } => Reason::ProviderRejectedRequest,
            DriverError::RateLimited { .. } => Reason::ProviderRateLimited,
            DriverError::Unavailable { .. } => Reason::ProviderUnavailable,
            DriverError::Timeout { .. } => Reason::ProviderTimeout,
            DriverError::MalformedResponse { .. } => Reason::MalformedResponse,
            DriverError::Misconfigured { .. } => Reason::ProviderMisconfigured,
            DriverError::NeedsAttention { reason, .. } => *reason,
            DriverError::PersistFailed { .. } => Reason::SecretWriteFailed,
            DriverError::At { error, .. } => error.reason(),
        }
    }

    /// The error without the [`DriverError::At`] context around it.
    pub fn inner(&self) -> &DriverError {
        match self {
            DriverError::At { error, .. } => error.inner(),
            other => other,
        }
    }

    /// Whether the error is about a provider call (as opposed to missing
    /// input, a driver's own guidance, or a persist write): such an error
    /// names where it happened.
    fn is_provider_failure(&self) -> bool {
        !matches!(
            self,
            DriverError::MissingInput { .. } | DriverError::NeedsAttention { .. } | DriverError::PersistFailed { .. }
        )
    }

    /// Names the endpoint (host and ClusterProvider) of a failed provider
    /// call, unless one is named already; other errors are returned as they
    /// are. Only the HTTP layer ([`ProviderHttp::send`], which knows the
    /// host it called) and [`DriverError::located`] use it; drivers name
    /// steps with [`DriverError::in_step`].
    pub(crate) fn at_endpoint(self, endpoint: String) -> DriverError {
        match self {
            DriverError::At {
                step,
                endpoint: None,
                error,
            } => DriverError::At {
                step,
                endpoint: Some(endpoint),
                error,
            },
            e @ DriverError::At { .. } => e,
            e if e.is_provider_failure() => DriverError::At {
                step: None,
                endpoint: Some(endpoint),
                error: Box::new(e),
            },
            other => other,
        }
    }

    /// Names the provider and step (`SmartRecruiters, exchanging the client
    /// credentials`, `Kombo, creating the connection`) of a failed provider
    /// call, unless a step is named already (the innermost, most precise
    /// one wins); other errors are returned as they are. The one way a
    /// driver adds context to an error: the last arm of its error
    /// explanations, once its specific hints are given.
    pub fn in_step(self, step: &str) -> DriverError {
        match self {
            DriverError::At {
                step: None,
                endpoint,
                error,
            } => DriverError::At {
                step: Some(step.to_string()),
                endpoint,
                error,
            },
            e @ DriverError::At { .. } => e,
            e if e.is_provider_failure() => DriverError::At {
                step: Some(step.to_string()),
                endpoint: None,
                error: Box::new(e),
            },
            other => other,
        }
    }

    /// The backstop every driver's error passes through in the controller,
    /// so that no driver can forget it: a failed provider call names the
    /// ClusterProvider (and its host, where the provider has only one) and
    /// a step (the flow, where the driver named none). A different job from
    /// [`DriverError::in_step`]: it is applied once, to every error, by the
    /// caller that knows the ClusterProvider and the flow, and only fills
    /// in what the driver and the HTTP layer left unnamed.
    pub fn located(self, provider: &ProviderConfig, flow: &str) -> DriverError {
        let hosts: std::collections::BTreeSet<String> = [&provider.token_url, &provider.base_url]
            .into_iter()
            .flatten()
            .filter_map(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .collect();
        let endpoint = match hosts.len() {
            1 => format!(
                "{} (ClusterProvider {})",
                hosts.into_iter().next().unwrap_or_default(),
                provider.name
            ),
            _ => format!("ClusterProvider {}", provider.name),
        };
        self.in_step(&format!("the {flow} flow")).at_endpoint(endpoint)
    }

    /// Whether the provider refused the credentials themselves (a 401, a
    /// refused login): the same inputs must not be sent again until they
    /// change, since each try may count towards locking the account.
    pub fn holds_inputs(&self) -> bool {
        matches!(self.inner(), DriverError::CredentialsRejected { .. })
    }

    /// Transient failures are retried with backoff; the others need a change
    /// by a person (new credentials, a fixed spec) and are retried slowly.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.inner(),
            DriverError::RateLimited { .. }
                | DriverError::Unavailable { .. }
                | DriverError::Timeout { .. }
                | DriverError::MalformedResponse { .. }
                | DriverError::PersistFailed { .. }
        )
    }

    /// The least time to wait before calling the provider again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.inner() {
            DriverError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// `3s`, `1m30s`, `250ms`: a duration as a person reads it in a message.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

fn at_text(step: Option<&str>, endpoint: Option<&str>, error: &DriverError) -> String {
    match (step, endpoint) {
        (Some(step), Some(endpoint)) => format!("{step} at {endpoint}: {error}"),
        (Some(place), None) | (None, Some(place)) => format!("{place}: {error}"),
        (None, None) => error.to_string(),
    }
}

/// A provider driver.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Whether this driver implements `flow`.
    fn supports(&self, flow: &Flow) -> bool;

    /// Runs the flow: issues, renews or re-validates credentials.
    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError>;

    /// Whether deleting an Integration with this flow must undo provider-side
    /// state (the controller then holds a finalizer).
    fn needs_cleanup(&self, _flow: &Flow) -> bool {
        false
    }

    /// Undoes provider-side state; "already gone" is success.
    async fn cleanup(&self, _req: &CleanupRequest<'_>) -> Result<(), DriverError> {
        Ok(())
    }
}

/// Makes provider text safe to show in a condition, an Event or a log line:
/// removes any input value it echoes, drops control characters (no log or
/// header injection) and bounds its length. Should a value survive anyway
/// (a value that overlaps the redaction mark, say), nothing is shown.
pub fn scrub(text: &str, secrets: &Credentials) -> String {
    const MAX: usize = 200;
    const MARK: &str = "[redacted]";
    // Values as they can appear once the text's control characters are
    // blanked. Short values would blank out ordinary words; real secrets
    // are longer.
    let mut needles: Vec<String> = secrets
        .values()
        .map(|v| v.expose_secret())
        .filter(|v| v.len() >= 4)
        .map(blank_unsafe)
        .collect();
    needles.sort();
    needles.dedup();
    needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let leaks = |s: &str| needles.iter().any(|n| s.contains(n.as_str()));
    let mut out = blank_unsafe(text);
    // A replacement can form a new occurrence (`d]ab` in `d]abab`): repeat.
    for _ in 0..8 {
        if !leaks(&out) {
            break;
        }
        for n in &needles {
            out = out.replace(n.as_str(), MARK);
        }
    }
    if out.chars().count() > MAX {
        out = out.chars().take(MAX).collect::<String>() + "…";
    }
    let out = out.trim();
    if leaks(out) { String::new() } else { out.to_string() }
}

/// Characters that must not reach a log line, an Event, a condition or a
/// header: control characters (CR, LF, ESC, ...), Unicode line and paragraph
/// separators and bidirectional overrides.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn blank_unsafe(text: &str) -> String {
    text.chars().map(|c| if is_unsafe_char(c) { ' ' } else { c }).collect()
}

/// A message for a condition or an Event: unsafe characters blanked and at
/// most 1,024 bytes, the limit the API server puts on an Event's note
/// (`len(note) <= 1024`, counted in bytes: a longer note is refused with
/// 422 and the Event is lost). The backstop behind [`scrub`].
pub fn sanitize_message(text: &str) -> String {
    const MAX_BYTES: usize = 1024;
    const ELLIPSIS: &str = "…";
    let mut out = blank_unsafe(text);
    if out.len() > MAX_BYTES {
        let mut cut = MAX_BYTES - ELLIPSIS.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(ELLIPSIS);
    }
    out
}

/// Parses a provider's JSON answer (`what`, e.g. "the token response") into
/// `T`. A failure is described by its category and position only, never by
/// the parser's own text: serde quotes the offending value (`invalid type:
/// string "eyJ…"`), and an answer that is not the expected object may be a
/// bare token, which must not reach a condition, an Event or a log line.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, DriverError> {
    serde_json::from_slice(body).map_err(|e| DriverError::MalformedResponse {
        message: describe_json_error(what, body, &e),
    })
}

/// What is wrong with a JSON answer, without any of its content: its
/// category (empty, not JSON, cut short, JSON of the wrong kind, a field of
/// the wrong type) and, where it helps, line and column.
pub fn describe_json_error(what: &str, body: &[u8], e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    if body.iter().all(u8::is_ascii_whitespace) {
        return format!("{what} is empty");
    }
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => format!("{what} ends early (cut off at {at})"),
        Category::Syntax | Category::Io => format!("{what} is not valid JSON (syntax error at {at})"),
        Category::Data => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(_)) => {
                format!("{what} is a JSON object whose fields do not have the expected types (at {at})")
            }
            Ok(other) => format!("{what} is {} where a JSON object was expected", json_kind(&other)),
            Err(_) => format!("{what} is not valid JSON (at {at})"),
        },
    }
}

/// "a JSON string", "a JSON array", …: the kind of a value, never its content.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "JSON null",
        serde_json::Value::Bool(_) => "a JSON boolean",
        serde_json::Value::Number(_) => "a JSON number",
        serde_json::Value::String(_) => "a JSON string",
        serde_json::Value::Array(_) => "a JSON array",
        serde_json::Value::Object(_) => "a JSON object",
    }
}

/// Checks a value a provider returned that the operator publishes (in the
/// output Secret, a header, status or a message): non-empty, at most `max`
/// bytes, without whitespace or control characters.
pub fn check_published(what: &str, value: &str, max: usize) -> Result<(), DriverError> {
    let problem = if value.is_empty() {
        "is empty"
    } else if value.len() > max {
        "is too long"
    } else if value.chars().any(|c| is_unsafe_char(c) || c.is_whitespace()) {
        "contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(DriverError::MalformedResponse {
        message: format!("the {what} in the provider's answer {problem}"),
    })
}

/// Checks a provider-side id the operator puts into request paths: as
/// [`check_published`], at most 256 bytes, and no path syntax (`/`, `\`,
/// `?`, `#`, `%`, `.`, `..`).
pub fn check_path_id(what: &str, value: &str) -> Result<(), DriverError> {
    check_published(what, value, 256)?;
    if value.contains(['/', '\\', '?', '#', '%']) || value == "." || value == ".." {
        return Err(DriverError::MalformedResponse {
            message: format!("the {what} in the provider's answer contains URL path characters"),
        });
    }
    Ok(())
}

/// The backstop before credentials are written: header names and values a
/// client would send as they are must not carry CR, LF or other control
/// characters (header injection in every consumer of the Secret).
pub fn check_issued(fields: &Credentials) -> Result<(), DriverError> {
    for key in [
        keys::AUTHORIZATION,
        keys::HEADER_NAME,
        keys::HEADER_VALUE,
        keys::EXTRA_HEADER_NAME,
        keys::EXTRA_HEADER_VALUE,
    ] {
        if let Some(v) = fields.get(key)
            && v.expose_secret().chars().any(is_unsafe_char)
        {
            return Err(DriverError::MalformedResponse {
                message: format!(
                    "the issued {key} contains control characters and cannot be used as an HTTP header; nothing was written"
                ),
            });
        }
    }
    Ok(())
}

/// The drivers compiled into the operator, shared by every reconcile (they
/// hold per-provider rate limiters and token caches).
#[derive(Clone)]
pub struct Drivers {
    pub oauth2: Arc<dyn Driver>,
    pub smartrecruiters: Arc<dyn Driver>,
    pub talentlink: Arc<dyn Driver>,
    pub cloud_elements: Arc<dyn Driver>,
    pub kombo: Arc<dyn Driver>,
}

impl Drivers {
    pub fn new(http: ProviderHttp) -> Self {
        Self {
            oauth2: Arc::new(oauth2::OAuth2Driver::new(http.clone())),
            smartrecruiters: Arc::new(smartrecruiters::SmartRecruitersDriver::new(http.clone())),
            talentlink: Arc::new(talentlink::TalentLinkDriver::new(http.clone())),
            cloud_elements: Arc::new(cloud_elements::CloudElementsDriver::new(http.clone())),
            kombo: Arc::new(kombo::KomboDriver::new(http)),
        }
    }

    /// The driver of a ClusterProvider type.
    pub fn for_type(&self, provider_type: ProviderType) -> Arc<dyn Driver> {
        match provider_type {
            ProviderType::Oauth2 => self.oauth2.clone(),
            ProviderType::Smartrecruiters => self.smartrecruiters.clone(),
            ProviderType::CornerstoneTalentlink => self.talentlink.clone(),
            ProviderType::CloudElements => self.cloud_elements.clone(),
            ProviderType::Kombo => self.kombo.clone(),
        }
    }
}

/// Joins `path` to a base URL, keeping the base's own path
/// (`https://h/v1` + `connect/create-link` = `https://h/v1/connect/create-link`).
pub fn endpoint(base: &Url, path: &str) -> Result<Url, DriverError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    base.join(path.trim_start_matches('/'))
        .map_err(|e| DriverError::Misconfigured {
            message: format!("cannot build the {path} URL: {e}"),
        })
}

/// The ClusterProvider's base URL, required by most drivers.
pub fn base_url(provider: &ProviderConfig) -> Result<&Url, DriverError> {
    provider.base_url.as_ref().ok_or_else(|| DriverError::Misconfigured {
        message: "the ClusterProvider has no baseUrl".into(),
    })
}

/// Builds a [`Credentials`] from plain pairs.
pub fn fields<I, K, V>(pairs: I) -> Credentials
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    Credentials::new(
        pairs
            .into_iter()
            .map(|(k, v)| (k.into(), SecretString::from(v.into())))
            .collect(),
    )
}

/// Maps a non-success answer of a provider's API (not a token endpoint) to a
/// driver error; `detail` is the provider's message, already extracted.
pub fn classify_status(status: u16, detail: &str, secrets: &Credentials) -> DriverError {
    let message = scrub(
        &format!(
            "HTTP {status}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
        secrets,
    );
    match status {
        401 => DriverError::CredentialsRejected { message },
        403 => DriverError::PermissionDenied { message },
        // No such endpoint: the ClusterProvider's URL is wrong. Drivers for
        // which a 404 means a missing object (an instance, an integration)
        // say so before they get here.
        404 => DriverError::Misconfigured {
            message: format!("{message} (no such endpoint: check the ClusterProvider's URLs)"),
        },
        409 => DriverError::Conflict { message },
        _ => DriverError::BadRequest { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pairs: &[(&str, &str)]) -> Credentials {
        Credentials::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
                .collect(),
        )
    }

    /// Every kind of driver error, a new one included (the match is
    /// exhaustive), ends on the Ready condition with a reason a GitOps tool
    /// can read, wrapped in context or not.
    #[test]
    fn every_driver_error_reason_is_a_ready_reason() {
        use strum::IntoEnumIterator;
        let m = || "m".to_string();
        for kind in DriverErrorKind::iter() {
            let e = match kind {
                DriverErrorKind::MissingInput => DriverError::MissingInput { key: m() },
                DriverErrorKind::CredentialsRejected => DriverError::CredentialsRejected { message: m() },
                DriverErrorKind::PermissionDenied => DriverError::PermissionDenied { message: m() },
                DriverErrorKind::Conflict => DriverError::Conflict { message: m() },
                DriverErrorKind::BadRequest => DriverError::BadRequest { message: m() },
                DriverErrorKind::RateLimited => DriverError::RateLimited { retry_after: None },
                DriverErrorKind::Unavailable => DriverError::Unavailable { message: m() },
                DriverErrorKind::Timeout => DriverError::Timeout {
                    timeout: Duration::from_secs(1),
                },
                DriverErrorKind::At => DriverError::Timeout {
                    timeout: Duration::from_secs(1),
                }
                .in_step("s"),
                DriverErrorKind::MalformedResponse => DriverError::MalformedResponse { message: m() },
                DriverErrorKind::Misconfigured => DriverError::Misconfigured { message: m() },
                DriverErrorKind::NeedsAttention => DriverError::NeedsAttention {
                    reason: Reason::DuplicateIntegration,
                    message: m(),
                },
                DriverErrorKind::PersistFailed => DriverError::PersistFailed { message: m() },
            };
            assert_eq!(DriverErrorKind::from(&e), kind);
            assert!(
                matches!(e.reason().kind(), crate::reasons::Kind::Ready(_)),
                "{kind:?}: {}",
                e.reason()
            );
        }
    }

    #[test]
    fn scrub_removes_echoed_secrets_and_control_characters() {
        let c = creds(&[("client_secret", "s3cr3t-value")]);
        let got = scrub("bad secret s3cr3t-value\r\nX-Injected: yes", &c);
        assert!(!got.contains("s3cr3t-value"));
        assert!(!got.contains('\n') && !got.contains('\r'));
        assert!(got.contains("[redacted]"));
    }

    #[test]
    fn scrub_bounds_length() {
        let got = scrub(&"x".repeat(10_000), &Credentials::default());
        assert!(got.chars().count() <= 201);
    }

    #[test]
    fn credentials_debug_shows_names_only() {
        let c = creds(&[("client_secret", "s3cr3t-value")]);
        let dbg = format!("{c:?}");
        assert!(dbg.contains("client_secret"));
        assert!(!dbg.contains("s3cr3t-value"));
    }

    #[test]
    fn rate_limits_and_timeouts_say_where_and_how_long() {
        let limited = DriverError::RateLimited {
            retry_after: Some(Duration::from_secs(90)),
        }
        .at_endpoint("api.smartrecruiters.com (ClusterProvider smartrecruiters)".into())
        .in_step("SmartRecruiters, exchanging the client credentials (POST /identity/oauth/token)");
        assert_eq!(
            limited.to_string(),
            "SmartRecruiters, exchanging the client credentials (POST /identity/oauth/token) at \
             api.smartrecruiters.com (ClusterProvider smartrecruiters): rate limited, Retry-After asked to wait 1m30s"
        );
        assert_eq!(limited.reason(), Reason::ProviderRateLimited);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(90)));
        assert!(limited.is_transient());
        // A second step does not replace the first, more precise one.
        assert_eq!(limited.clone().in_step("outer"), limited);

        let timeout = DriverError::Timeout {
            timeout: Duration::from_secs(2),
        }
        .in_step("Kombo, polling the connect link");
        assert_eq!(
            timeout.to_string(),
            "Kombo, polling the connect link: no answer within 2s (the ClusterProvider's requestTimeout)"
        );
        assert_eq!(timeout.reason(), Reason::ProviderTimeout);
        let bare = DriverError::RateLimited { retry_after: None }.at_endpoint("h (ClusterProvider p)".into());
        assert_eq!(
            bare.to_string(),
            "h (ClusterProvider p): rate limited, no Retry-After given: retried with backoff"
        );
        assert_eq!(bare.inner(), &DriverError::RateLimited { retry_after: None });
        // Every failed provider call says where; guidance and input errors
        // are left alone.
        let other = DriverError::Unavailable { message: "x".into() };
        assert_eq!(
            other.clone().in_step("s").at_endpoint("e".into()).to_string(),
            "s at e: the provider is unavailable: x"
        );
        let missing = DriverError::MissingInput { key: "k".into() };
        assert_eq!(missing.clone().in_step("s").at_endpoint("e".into()), missing);
    }

    #[test]
    fn every_provider_failure_names_the_cluster_provider_host_and_step() {
        let provider = ProviderConfig {
            name: "example-oauth".into(),
            token_url: Some(Url::parse("https://auth.example.com/oauth/token").unwrap()),
            authorization_url: None,
            redirect_url: None,
            base_url: None,
            client_auth: ClientAuth::Basic,
            request_timeout: Duration::from_secs(10),
            default_lifetime: Duration::from_secs(1800),
            max_concurrency: 1,
            requests_per_second: 1,
            revalidate_interval: Duration::from_secs(3600),
            rate_limit_scope: RateLimitScope::Host,
        };
        for err in [
            DriverError::CredentialsRejected {
                message: "HTTP 401".into(),
            },
            DriverError::MalformedResponse {
                message: "the token response is a JSON string".into(),
            },
            DriverError::Unavailable {
                message: "HTTP 503".into(),
            },
        ] {
            let text = err.located(&provider, "clientCredentials").to_string();
            assert!(
                text.starts_with("the clientCredentials flow at auth.example.com (ClusterProvider example-oauth): "),
                "{text}"
            );
        }
        // A step and endpoint named by the driver and the HTTP layer win.
        let named = DriverError::Unavailable {
            message: "HTTP 503".into(),
        }
        .at_endpoint("h:1 (ClusterProvider p)".into())
        .in_step("requesting a token (POST /t)")
        .located(&provider, "clientCredentials");
        assert_eq!(
            named.to_string(),
            "requesting a token (POST /t) at h:1 (ClusterProvider p): the provider is unavailable: HTTP 503"
        );
    }

    /// The real API server refuses an Event whose note is over 1,024 bytes
    /// (the project's former API emulator did not): long messages, multi-byte ones included, are
    /// cut to fit.
    #[test]
    fn messages_fit_an_event_note() {
        for text in ["x".repeat(5000), "é".repeat(3000), "🔑".repeat(1000)] {
            let out = sanitize_message(&text);
            assert!(out.len() <= 1024, "{} bytes", out.len());
            assert!(out.ends_with('…'));
        }
        assert_eq!(sanitize_message("short"), "short");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(3)), "3s");
        assert_eq!(human_duration(Duration::from_secs(120)), "2m");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h2m5s");
    }

    #[test]
    fn missing_and_empty_inputs_name_the_key() {
        let c = creds(&[("client_id", "")]);
        let err = c.require("client_id").unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidInputSecret);
        assert!(err.to_string().contains("client_id"));
    }
}
