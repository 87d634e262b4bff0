//! Enumerations of the CRDs that name provider concepts: which drivers
//! exist, what a rate limit applies to, Kombo's link types. They live here
//! so drivers use them without the CRD types (and without Kubernetes); the
//! operator's `crd` module re-exports them, and their `///` docs become
//! `kubectl explain` through the CRD schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Provider drivers compiled into the operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// Any RFC 6749 OAuth 2.0 token endpoint (client-credentials grant).
    Oauth2,
    /// SmartRecruiters: API key, client credentials, General Partner Integration.
    Smartrecruiters,
    /// Cornerstone TalentLink (Lumesse): username/password plus API key.
    CornerstoneTalentlink,
    /// Cloud Elements / SAP Open Connectors element instances.
    CloudElements,
    /// Kombo unified API connections.
    Kombo,
}

impl ProviderType {
    /// Stable lower-case name, used in conditions and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Oauth2 => "oauth2",
            ProviderType::Smartrecruiters => "smartrecruiters",
            ProviderType::CornerstoneTalentlink => "cornerstone-talentlink",
            ProviderType::CloudElements => "cloud-elements",
            ProviderType::Kombo => "kombo",
        }
    }
}

/// What a provider's rate limit applies to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitScope {
    /// Each set of credentials has its own budget.
    Credential,
    /// The host has one budget for every caller.
    Host,
}

impl ProviderType {
    /// The scope of the provider's documented rate limit.
    pub fn default_rate_limit_scope(self) -> RateLimitScope {
        match self {
            // "each credential counts as a separate API user" (providers.md 1.7).
            ProviderType::Smartrecruiters => RateLimitScope::Credential,
            ProviderType::Oauth2
            | ProviderType::CornerstoneTalentlink
            | ProviderType::CloudElements
            | ProviderType::Kombo => RateLimitScope::Host,
        }
    }
}

/// Kombo's connect link types (its `link_type` enumeration).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KomboLinkType {
    /// A link a person opens from an e-mail; valid for one year.
    #[default]
    MagicLink,
    /// A link for the Kombo Connect front-end SDK; valid for one hour.
    Embedded,
}

impl KomboLinkType {
    /// The value Kombo's API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            KomboLinkType::MagicLink => "MAGIC_LINK",
            KomboLinkType::Embedded => "EMBEDDED",
        }
    }
}
