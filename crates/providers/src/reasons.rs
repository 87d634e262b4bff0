//! Every reason the operator writes on a condition or an Event, in one place.
//!
//! One enum: conditions, Events, metric labels and README's tables all take
//! their reasons from [`Reason`], and [`Reason::kind`] is an exhaustive
//! match, so a new reason does not compile until someone decides where it
//! is shown and, for `Ready`, how a GitOps tool reads it.
//! `tests/integration/artifacts/readme.rs` checks README's "Conditions"
//! table and its Argo CD health check against [`Reason::all`].

/// How a GitOps tool should read a `Ready` condition with a given reason
/// (README's Argo CD health check implements exactly this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready=True: the Secret holds valid credentials.
    Healthy,
    /// Not ready yet, and getting there without anyone changing the
    /// Integration: a customer finishing a connect link or a provider-side
    /// setup, or a transient failure the operator retries by itself (the
    /// last good Secret stays until it expires, then the reason is
    /// [`Reason::Expired`]).
    Progressing,
    /// A person must act: fix the spec, the input Secret, the
    /// ClusterProvider, or something at the provider.
    Degraded,
}

/// Where a reason is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// On the `Ready` condition (and on Events), read by GitOps tools as the
    /// given health when Ready is False.
    Ready(Health),
    /// On the `Warning` condition.
    Warning,
    /// On the `RenewalOverdue` condition (the stall watchdog).
    Overdue,
    /// Only inside a `CleanupFailed` message: a failure while deleting.
    CleanupDetail,
    /// Only on Events (Normal, unless noted); Ready says `Issued`.
    EventOnly,
}

/// A condition or Event reason. Its text (`as_str`, `Display`) is the
/// variant's name, PascalCase as the Kubernetes API conventions ask.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
    strum::EnumIter,
)]
pub enum Reason {
    // Ready=True.
    /// Credentials were issued (or re-issued after a change or a repair).
    Issued,
    /// Credentials were renewed before they expired.
    Renewed,
    // Ready=False: resolving the Integration (the user's or admin's to fix).
    /// The input Secret does not exist.
    SecretNotFound,
    /// The input Secret lacks a key, or a value is not usable text.
    InvalidInputSecret,
    /// The named ClusterProvider does not exist.
    ProviderNotFound,
    /// The ClusterProvider's `allowedNamespaces` excludes this namespace.
    ProviderNotAllowed,
    /// The ClusterProvider's fields are invalid (URL, network policy, duration).
    InvalidProvider,
    /// The provider type does not implement the Integration's flow.
    UnsupportedFlow,
    /// The Integration's spec is invalid (flow blocks, `refresh.renewBefore`).
    InvalidSpec,
    /// The target Secret exists and belongs to someone else.
    TargetSecretNotOwned,
    /// A `spec.target.template` template does not compile or render (the
    /// message names the key, the line and the kind of error, never a value).
    InvalidTemplate,
    /// A `spec.target.template` key is one the flow issues credentials under.
    TemplateKeyConflict,
    /// `spec.target.type` differs from the existing output Secret's type,
    /// which Kubernetes cannot change.
    SecretTypeChanged,
    // Ready=False: what a provider answered.
    /// The provider refused the credentials (401, an invalid instance).
    ReauthRequired,
    /// The provider denied the request (403).
    PermissionDenied,
    /// The provider reported a conflict (409).
    ProviderConflict,
    /// The provider rejected the request as invalid (other 4xx).
    ProviderRejectedRequest,
    /// The ClusterProvider's endpoint is wrong (404, a redirect, a missing URL).
    ProviderMisconfigured,
    /// 429, or 503 with Retry-After.
    ProviderRateLimited,
    /// 5xx or no connection.
    ProviderUnavailable,
    /// No answer within the ClusterProvider's `requestTimeout`.
    ProviderTimeout,
    /// The answer could not be understood.
    MalformedResponse,
    /// Credentials shown once could not be stored in the output Secret yet.
    SecretWriteFailed,
    /// A Kubernetes API call failed.
    KubernetesApiError,
    /// The operator could not build a status or Secret (a bug).
    InternalError,
    /// The last credentials expired and could not be renewed (replaces the
    /// failure's own reason once the credentials have run out).
    Expired,
    /// Deleting provider-side state failed; the finalizer stays.
    CleanupFailed,
    // Ready=False: SmartRecruiters partner integrations.
    /// A creation request went out and its answer was lost; not sent again by itself.
    PartnerIntegrationUncertain,
    /// Another Integration already creates the partner integration for this app and company.
    DuplicateIntegration,
    /// The output Secret lost the customer-level credentials of the integration
    /// status records; they cannot be read again, and no new one is created by itself.
    PartnerCredentialsLost,
    // Ready=False: SmartRecruiters partner integrations and Cloud Elements instances.
    /// A field the provider-side object was created for (appId, companyId,
    /// elementKey, instanceName) no longer matches the spec.
    ImmutableFieldChanged,
    // Ready=False: Cloud Elements / SAP Open Connectors element instances.
    /// The instance no longer exists on the platform.
    ElementInstanceGone,
    /// The instance is disabled on the platform.
    ElementInstanceDisabled,
    // Ready=False: the OAuth 2.0 authorization-code flow.
    /// An authorization URL waits for a person to grant access.
    AuthorizationRequired,
    // Ready=False: Kombo connections.
    /// A connect link waits for the customer.
    AwaitingConnection,
    /// The connect link lapsed before the customer completed it.
    ConnectLinkExpired,
    /// The output Secret holding a waiting connect link was lost.
    ConnectLinkLost,
    /// The integration does not exist in Kombo (any more).
    IntegrationNotFound,
    /// The customer's credentials for the tool stopped working (Kombo `INVALID`).
    IntegrationInvalid,
    /// The integration was paused in Kombo (`INACTIVE`).
    IntegrationInactive,
    /// Connected; Kombo runs its first full sync (`FINAL_SYNC_PENDING`).
    IntegrationSyncPending,
    /// Connected; the customer has setup steps left in Kombo.
    IntegrationSetupIncomplete,
    // Warning=True.
    /// The provider gave no lifetime; `defaultTokenLifetime` was assumed.
    ExpiryNotProvided,
    /// SmartRecruiters: the API key authenticated but may not read the company
    /// (403 on the check); published, with this warning.
    ApiKeyPermissionLimited,
    // RenewalOverdue=True (its own condition type, set by the stall watchdog).
    /// A renewal is overdue and nothing recorded a failure: the operator may be stalled.
    RenewalOverdue,
    // Driver reasons shown only inside a CleanupFailed message.
    /// During deletion: the instance id in the Secret does not carry this
    /// Integration's tag, so it is not deleted.
    ElementInstanceNotOwned,
    // Event-only reasons (Normal Events; Ready says Issued).
    /// Re-issued after the spec, input Secret or provider changed.
    Reissued,
    /// Re-issued because the output Secret was deleted or edited.
    Repaired,
    /// Issued again after a failure.
    Recovered,
    /// Provider-side state deleted with the Integration.
    CleanedUp,
    /// The workloads of `spec.rollout` were restarted for changed credentials.
    RolloutRestarted,
    /// A workload of `spec.rollout` could not be restarted (Warning).
    RolloutFailed,
    /// A consumer reported the credentials rejected, and the provider still
    /// accepts them as they are: nothing was changed.
    StillAccepted,
    /// The output Secret was written again with a new type or templates, from
    /// the credentials it held (no provider call).
    Rerendered,
}

impl Reason {
    /// The reason's text, as written on conditions, Events and metric labels.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Where the reason is shown and, on `Ready`, how it reads.
    pub fn kind(self) -> Kind {
        match self {
            Reason::Issued | Reason::Renewed => Kind::Ready(Health::Healthy),
            Reason::SecretNotFound
            | Reason::InvalidInputSecret
            | Reason::ProviderNotFound
            | Reason::ProviderNotAllowed
            | Reason::InvalidProvider
            | Reason::UnsupportedFlow
            | Reason::InvalidSpec
            | Reason::TargetSecretNotOwned
            | Reason::InvalidTemplate
            | Reason::TemplateKeyConflict
            | Reason::SecretTypeChanged
            | Reason::ReauthRequired
            | Reason::PermissionDenied
            | Reason::ProviderConflict
            | Reason::ProviderRejectedRequest
            | Reason::ProviderMisconfigured
            | Reason::InternalError
            | Reason::Expired
            | Reason::CleanupFailed
            | Reason::PartnerIntegrationUncertain
            | Reason::DuplicateIntegration
            | Reason::PartnerCredentialsLost
            | Reason::ImmutableFieldChanged
            | Reason::ElementInstanceGone
            | Reason::ElementInstanceDisabled
            | Reason::ConnectLinkExpired
            | Reason::ConnectLinkLost
            | Reason::IntegrationNotFound
            | Reason::IntegrationInvalid
            | Reason::IntegrationInactive => Kind::Ready(Health::Degraded),
            Reason::ProviderRateLimited
            | Reason::ProviderUnavailable
            | Reason::ProviderTimeout
            | Reason::MalformedResponse
            | Reason::SecretWriteFailed
            | Reason::KubernetesApiError
            | Reason::AuthorizationRequired
            | Reason::AwaitingConnection
            | Reason::IntegrationSyncPending
            | Reason::IntegrationSetupIncomplete => Kind::Ready(Health::Progressing),
            Reason::ExpiryNotProvided | Reason::ApiKeyPermissionLimited => Kind::Warning,
            Reason::RenewalOverdue => Kind::Overdue,
            Reason::ElementInstanceNotOwned => Kind::CleanupDetail,
            Reason::Reissued
            | Reason::Repaired
            | Reason::Recovered
            | Reason::CleanedUp
            | Reason::RolloutRestarted
            | Reason::RolloutFailed
            | Reason::StillAccepted
            | Reason::Rerendered => Kind::EventOnly,
        }
    }

    /// Every reason, in declaration order.
    pub fn all() -> impl Iterator<Item = Reason> {
        <Reason as strum::IntoEnumIterator>::iter()
    }

    /// Every reason of `kind`.
    pub fn of_kind(kind: fn(Kind) -> bool) -> impl Iterator<Item = Reason> {
        Reason::all().filter(move |r| kind(r.kind()))
    }
}

/// A condition's reason as read back (a `String`) against a known one.
impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.as_str().to_string()
    }
}

/// How a GitOps tool should read a Ready condition with `reason` and
/// `status` (`True`, `False`, `Unknown`), as read back from the cluster. A
/// reason this version does not know reads Degraded.
pub fn health(status: &str, reason: &str) -> Health {
    match status {
        "True" => Health::Healthy,
        "Unknown" => Health::Progressing,
        _ => match reason.parse::<Reason>().map(Reason::kind) {
            Ok(Kind::Ready(Health::Progressing)) => Health::Progressing,
            _ => Health::Degraded,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_pascal_case_and_reads_back_as_itself() {
        for r in Reason::all() {
            let text = r.as_str();
            assert!(
                text.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && text.chars().all(|c| c.is_ascii_alphanumeric()),
                "{text} is not PascalCase"
            );
            assert_eq!(text.parse::<Reason>(), Ok(r));
            assert_eq!(r.to_string(), text);
        }
    }

    #[test]
    fn health_follows_the_kinds() {
        assert_eq!(health("True", "Issued"), Health::Healthy);
        assert_eq!(health("False", "AwaitingConnection"), Health::Progressing);
        assert_eq!(health("False", "ProviderUnavailable"), Health::Progressing);
        assert_eq!(health("False", "Expired"), Health::Degraded);
        assert_eq!(health("False", "SomethingNew"), Health::Degraded);
        assert_eq!(
            health("False", "Issued"),
            Health::Degraded,
            "Issued on False is not healthy"
        );
        assert_eq!(health("Unknown", ""), Health::Progressing);
        for r in Reason::all() {
            if let Kind::Ready(h @ (Health::Progressing | Health::Degraded)) = r.kind() {
                assert_eq!(health("False", r.as_str()), h, "{r}");
            }
        }
    }
}
