//! Every reason the operator writes on a condition or an Event, in one place.
//!
//! The code uses these constants instead of string literals, and
//! `tests/readme.rs` checks README's "Conditions" table and its Argo CD health
//! check against the lists below, so the documentation cannot drift from
//! what the code sets. A new reason goes here first, with its [`Health`].

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
    /// [`EXPIRED`]).
    Progressing,
    /// A person must act: fix the spec, the input Secret, the
    /// ClusterProvider, or something at the provider.
    Degraded,
}

// Ready=True.
/// Credentials were issued (or re-issued after a change or a repair).
pub const ISSUED: &str = "Issued";
/// Credentials were renewed before they expired.
pub const RENEWED: &str = "Renewed";

// Ready=False: resolving the Integration (the user's or admin's to fix).
/// The input Secret does not exist.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// The input Secret lacks a key, or a value is not usable text.
pub const INVALID_INPUT_SECRET: &str = "InvalidInputSecret";
/// The named ClusterProvider does not exist.
pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
/// The ClusterProvider's `allowedNamespaces` excludes this namespace.
pub const PROVIDER_NOT_ALLOWED: &str = "ProviderNotAllowed";
/// The ClusterProvider's fields are invalid (URL, network policy, duration).
pub const INVALID_PROVIDER: &str = "InvalidProvider";
/// The provider type does not implement the Integration's flow.
pub const UNSUPPORTED_FLOW: &str = "UnsupportedFlow";
/// The Integration's spec is invalid (flow blocks, `refresh.renewBefore`).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The target Secret exists and belongs to someone else.
pub const TARGET_SECRET_NOT_OWNED: &str = "TargetSecretNotOwned";
/// A `spec.target.template` template does not compile or render (the
/// message names the key, the line and the kind of error, never a value).
pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
/// A `spec.target.template` key is one the flow issues credentials under.
pub const TEMPLATE_KEY_CONFLICT: &str = "TemplateKeyConflict";
/// `spec.target.type` differs from the existing output Secret's type,
/// which Kubernetes cannot change.
pub const SECRET_TYPE_CHANGED: &str = "SecretTypeChanged";

// Ready=False: what a provider answered.
/// The provider refused the credentials (401, an invalid instance).
pub const REAUTH_REQUIRED: &str = "ReauthRequired";
/// The provider denied the request (403).
pub const PERMISSION_DENIED: &str = "PermissionDenied";
/// The provider reported a conflict (409).
pub const PROVIDER_CONFLICT: &str = "ProviderConflict";
/// The provider rejected the request as invalid (other 4xx).
pub const PROVIDER_REJECTED_REQUEST: &str = "ProviderRejectedRequest";
/// The ClusterProvider's endpoint is wrong (404, a redirect, a missing URL).
pub const PROVIDER_MISCONFIGURED: &str = "ProviderMisconfigured";
/// 429, or 503 with Retry-After.
pub const PROVIDER_RATE_LIMITED: &str = "ProviderRateLimited";
/// 5xx or no connection.
pub const PROVIDER_UNAVAILABLE: &str = "ProviderUnavailable";
/// No answer within the ClusterProvider's `requestTimeout`.
pub const PROVIDER_TIMEOUT: &str = "ProviderTimeout";
/// The answer could not be understood.
pub const MALFORMED_RESPONSE: &str = "MalformedResponse";
/// Credentials shown once could not be stored in the output Secret yet.
pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
/// A Kubernetes API call failed.
pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
/// The operator could not build a status or Secret (a bug).
pub const INTERNAL_ERROR: &str = "InternalError";
/// The last credentials expired and could not be renewed (replaces the
/// failure's own reason once the credentials have run out).
pub const EXPIRED: &str = "Expired";
/// Deleting provider-side state failed; the finalizer stays.
pub const CLEANUP_FAILED: &str = "CleanupFailed";

// Ready=False: SmartRecruiters partner integrations.
/// A creation request went out and its answer was lost; not sent again by itself.
pub const PARTNER_INTEGRATION_UNCERTAIN: &str = "PartnerIntegrationUncertain";
/// Another Integration already creates the partner integration for this app and company.
pub const DUPLICATE_INTEGRATION: &str = "DuplicateIntegration";
/// The output Secret lost the customer-level credentials of the integration
/// status records; they cannot be read again, and no new one is created by itself.
pub const PARTNER_CREDENTIALS_LOST: &str = "PartnerCredentialsLost";

// Ready=False: SmartRecruiters partner integrations and Cloud Elements instances.
/// A field the provider-side object was created for (appId, companyId,
/// elementKey, instanceName) no longer matches the spec.
pub const IMMUTABLE_FIELD_CHANGED: &str = "ImmutableFieldChanged";

// Ready=False: Cloud Elements / SAP Open Connectors element instances.
/// The instance no longer exists on the platform.
pub const ELEMENT_INSTANCE_GONE: &str = "ElementInstanceGone";
/// The instance is disabled on the platform.
pub const ELEMENT_INSTANCE_DISABLED: &str = "ElementInstanceDisabled";

// Ready=False: the OAuth 2.0 authorization-code flow.
/// An authorization URL waits for a person to grant access.
pub const AUTHORIZATION_REQUIRED: &str = "AuthorizationRequired";

// Ready=False: Kombo connections.
/// A connect link waits for the customer.
pub const AWAITING_CONNECTION: &str = "AwaitingConnection";
/// The connect link lapsed before the customer completed it.
pub const CONNECT_LINK_EXPIRED: &str = "ConnectLinkExpired";
/// The output Secret holding a waiting connect link was lost.
pub const CONNECT_LINK_LOST: &str = "ConnectLinkLost";
/// The integration does not exist in Kombo (any more).
pub const INTEGRATION_NOT_FOUND: &str = "IntegrationNotFound";
/// The customer's credentials for the tool stopped working (Kombo `INVALID`).
pub const INTEGRATION_INVALID: &str = "IntegrationInvalid";
/// The integration was paused in Kombo (`INACTIVE`).
pub const INTEGRATION_INACTIVE: &str = "IntegrationInactive";
/// Connected; Kombo runs its first full sync (`FINAL_SYNC_PENDING`).
pub const INTEGRATION_SYNC_PENDING: &str = "IntegrationSyncPending";
/// Connected; the customer has setup steps left in Kombo.
pub const INTEGRATION_SETUP_INCOMPLETE: &str = "IntegrationSetupIncomplete";

// Warning=True.
/// The provider gave no lifetime; `defaultTokenLifetime` was assumed.
pub const EXPIRY_NOT_PROVIDED: &str = "ExpiryNotProvided";
/// SmartRecruiters: the API key authenticated but may not read the company
/// (403 on the check); published, with this warning.
pub const API_KEY_PERMISSION_LIMITED: &str = "ApiKeyPermissionLimited";

// RenewalOverdue=True (its own condition type, set by the stall watchdog).
/// A renewal is overdue and nothing recorded a failure: the operator may be stalled.
pub const RENEWAL_OVERDUE: &str = "RenewalOverdue";

// Driver reasons shown only inside a CleanupFailed message.
/// During deletion: the instance id in the Secret does not carry this
/// Integration's tag, so it is not deleted.
pub const ELEMENT_INSTANCE_NOT_OWNED: &str = "ElementInstanceNotOwned";

// Event-only reasons (Normal Events; Ready says Issued).
/// Re-issued after the spec, input Secret or provider changed.
pub const REISSUED: &str = "Reissued";
/// Re-issued because the output Secret was deleted or edited.
pub const REPAIRED: &str = "Repaired";
/// Issued again after a failure.
pub const RECOVERED: &str = "Recovered";
/// Provider-side state deleted with the Integration.
pub const CLEANED_UP: &str = "CleanedUp";
/// The workloads of `spec.rollout` were restarted for changed credentials.
pub const ROLLOUT_RESTARTED: &str = "RolloutRestarted";
/// A workload of `spec.rollout` could not be restarted (Warning).
pub const ROLLOUT_FAILED: &str = "RolloutFailed";
/// A consumer reported the credentials rejected, and the provider still
/// accepts them as they are: nothing was changed.
pub const STILL_ACCEPTED: &str = "StillAccepted";
/// The output Secret was written again with a new type or templates, from
/// the credentials it held (no provider call).
pub const RERENDERED: &str = "Rerendered";

/// Every reason a `Ready` condition can carry, with how it reads for a GitOps tool.
pub const READY: &[(&str, Health)] = &[
    (ISSUED, Health::Healthy),
    (RENEWED, Health::Healthy),
    (SECRET_NOT_FOUND, Health::Degraded),
    (INVALID_INPUT_SECRET, Health::Degraded),
    (PROVIDER_NOT_FOUND, Health::Degraded),
    (PROVIDER_NOT_ALLOWED, Health::Degraded),
    (INVALID_PROVIDER, Health::Degraded),
    (UNSUPPORTED_FLOW, Health::Degraded),
    (INVALID_SPEC, Health::Degraded),
    (TARGET_SECRET_NOT_OWNED, Health::Degraded),
    (INVALID_TEMPLATE, Health::Degraded),
    (TEMPLATE_KEY_CONFLICT, Health::Degraded),
    (SECRET_TYPE_CHANGED, Health::Degraded),
    (REAUTH_REQUIRED, Health::Degraded),
    (PERMISSION_DENIED, Health::Degraded),
    (PROVIDER_CONFLICT, Health::Degraded),
    (PROVIDER_REJECTED_REQUEST, Health::Degraded),
    (PROVIDER_MISCONFIGURED, Health::Degraded),
    (PROVIDER_RATE_LIMITED, Health::Progressing),
    (PROVIDER_UNAVAILABLE, Health::Progressing),
    (PROVIDER_TIMEOUT, Health::Progressing),
    (MALFORMED_RESPONSE, Health::Progressing),
    (SECRET_WRITE_FAILED, Health::Progressing),
    (KUBERNETES_API_ERROR, Health::Progressing),
    (INTERNAL_ERROR, Health::Degraded),
    (EXPIRED, Health::Degraded),
    (CLEANUP_FAILED, Health::Degraded),
    (PARTNER_INTEGRATION_UNCERTAIN, Health::Degraded),
    (DUPLICATE_INTEGRATION, Health::Degraded),
    (PARTNER_CREDENTIALS_LOST, Health::Degraded),
    (IMMUTABLE_FIELD_CHANGED, Health::Degraded),
    (ELEMENT_INSTANCE_GONE, Health::Degraded),
    (ELEMENT_INSTANCE_DISABLED, Health::Degraded),
    (AUTHORIZATION_REQUIRED, Health::Progressing),
    (AWAITING_CONNECTION, Health::Progressing),
    (CONNECT_LINK_EXPIRED, Health::Degraded),
    (CONNECT_LINK_LOST, Health::Degraded),
    (INTEGRATION_NOT_FOUND, Health::Degraded),
    (INTEGRATION_INVALID, Health::Degraded),
    (INTEGRATION_INACTIVE, Health::Degraded),
    (INTEGRATION_SYNC_PENDING, Health::Progressing),
    (INTEGRATION_SETUP_INCOMPLETE, Health::Progressing),
];

/// Every reason a `Warning` condition can carry.
pub const WARNING: &[&str] = &[EXPIRY_NOT_PROVIDED, API_KEY_PERMISSION_LIMITED];

/// Every reason a `RenewalOverdue` condition can carry.
pub const OVERDUE: &[&str] = &[RENEWAL_OVERDUE];

/// Driver reasons that never reach a condition themselves: a failure while
/// deleting shows as [`CLEANUP_FAILED`], with the driver's message.
pub const CLEANUP_DETAIL: &[&str] = &[ELEMENT_INSTANCE_NOT_OWNED];

/// Reasons used only on Events (besides every Ready reason above).
pub const EVENT_ONLY: &[&str] = &[
    REISSUED,
    REPAIRED,
    RECOVERED,
    CLEANED_UP,
    STILL_ACCEPTED,
    ROLLOUT_RESTARTED,
    ROLLOUT_FAILED,
    RERENDERED,
];

/// How a GitOps tool should read a Ready condition with `reason` and
/// `status` (`True`, `False`, `Unknown`). An unknown reason reads Degraded.
pub fn health(status: &str, reason: &str) -> Health {
    match status {
        "True" => Health::Healthy,
        "Unknown" => Health::Progressing,
        _ => READY
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, h)| *h)
            .filter(|h| *h != Health::Healthy)
            .unwrap_or(Health::Degraded),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, time::Duration};

    use super::*;
    use crate::{controller::Error, providers::DriverError};

    fn is_ready_reason(r: &str) -> bool {
        READY.iter().any(|(x, _)| *x == r)
    }

    #[test]
    fn no_reason_is_listed_twice() {
        let mut all: Vec<&str> = READY.iter().map(|(r, _)| *r).collect();
        all.extend(WARNING);
        all.extend(OVERDUE);
        all.extend(CLEANUP_DETAIL);
        all.extend(EVENT_ONLY);
        let unique: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "a reason is listed twice: {all:?}");
        for r in all {
            assert!(
                r.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && r.chars().all(|c| c.is_ascii_alphanumeric()),
                "{r} is not PascalCase"
            );
        }
    }

    #[test]
    fn every_error_reason_is_a_listed_ready_reason() {
        let m = || "m".to_string();
        let driver_errors = [
            DriverError::MissingInput { key: m() },
            DriverError::CredentialsRejected { message: m() },
            DriverError::PermissionDenied { message: m() },
            DriverError::Conflict { message: m() },
            DriverError::BadRequest { message: m() },
            DriverError::RateLimited { retry_after: None },
            DriverError::Unavailable { message: m() },
            DriverError::Timeout {
                timeout: Duration::from_secs(1),
            },
            DriverError::MalformedResponse { message: m() },
            DriverError::Misconfigured { message: m() },
            DriverError::CheckpointFailed { message: m() },
            DriverError::RateLimited { retry_after: None }.in_step("s"),
        ];
        for e in driver_errors {
            assert!(is_ready_reason(e.reason()), "{} is not in READY", e.reason());
            let wrapped = Error::Driver(Box::new(e.clone()));
            assert!(is_ready_reason(wrapped.reason()), "{}", wrapped.reason());
            assert_eq!(Error::Cleanup(Box::new(e)).reason(), CLEANUP_FAILED);
        }
        assert_eq!(
            Error::Kube(kube::Error::SerdeError(serde_json::from_str::<()>("x").unwrap_err())).reason(),
            KUBERNETES_API_ERROR
        );
    }

    #[test]
    fn health_follows_the_list() {
        assert_eq!(health("True", ISSUED), Health::Healthy);
        assert_eq!(health("False", AWAITING_CONNECTION), Health::Progressing);
        assert_eq!(health("False", PROVIDER_UNAVAILABLE), Health::Progressing);
        assert_eq!(health("False", EXPIRED), Health::Degraded);
        assert_eq!(health("False", "SomethingNew"), Health::Degraded);
        assert_eq!(
            health("False", ISSUED),
            Health::Degraded,
            "Issued on False is not healthy"
        );
        assert_eq!(health("Unknown", ""), Health::Progressing);
    }
}
