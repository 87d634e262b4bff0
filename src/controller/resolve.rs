//! Step 1 of a reconcile: resolve what an Integration refers to — its
//! ClusterProvider (from the watched store), the driver and flow, and the
//! input Secret — into provider-agnostic values. Every failure here is the
//! user's or admin's to fix and says what to fix.

use crate::reasons::Reason;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use secrecy::SecretString;
use url::Url;

use super::{Context, Error};
use crate::{
    crd::{ClientAuthMethod, ClusterProvider, ClusterProviderSpec, DeletionPolicy, Integration, ProviderType},
    providers::{ClientAuth, Credentials, Driver, Drivers, Flow, ProviderConfig, http::check_endpoint},
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_LIFETIME: Duration = Duration::from_secs(1800);
const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_RPS: u32 = 10;
const DEFAULT_REVALIDATE: Duration = Duration::from_secs(3600);
/// Longest request timeout accepted from a ClusterProvider.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest lifetime or revalidation interval accepted from a ClusterProvider
/// (366 days, the longest lifetime believed from a provider): renewals are
/// scheduled in memory, and a queue of years cannot be scheduled at all.
const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Input keys whose values the drivers send in HTTP headers or requests
/// (some verbatim: API keys, Cloud Elements secrets). A line break inside one
/// would inject headers; no real credential has control characters.
/// Largest input Secret value accepted, in bytes. Real credentials are far
/// smaller; a larger value would be sent as a header of that size on every
/// attempt (a 1 MiB value became a 1.4 MB Basic header), which no provider
/// accepts, so it is refused before any call.
pub const MAX_INPUT_VALUE_BYTES: usize = 64 * 1024;

pub const REQUEST_INPUT_KEYS: &[&str] = &[
    "api_key",
    "client_id",
    "client_secret",
    "username",
    "password",
    "user_secret",
    "organization_secret",
];

/// What an Integration's ClusterProvider resolves to: everything an
/// exchange needs but the input values.
pub struct Resolved {
    pub provider: ProviderConfig,
    pub provider_spec: ClusterProviderSpec,
    pub driver: std::sync::Arc<dyn Driver>,
    pub flow: Flow,
}

/// The input Secret's values, and the version they were read at.
pub struct Inputs {
    pub values: Credentials,
    pub resource_version: String,
}

/// Resolves an Integration's ClusterProvider, its driver and flow (from the
/// caches alone).
pub fn resolve(integration: &Integration, ctx: &Context) -> Result<Resolved, Error> {
    let (provider_spec, provider, driver, flow) = resolve_provider(integration, ctx)?;
    Ok(Resolved {
        provider,
        provider_spec,
        driver,
        flow,
    })
}

/// Reads the input Secret an Integration names.
pub async fn read_inputs(integration: &Integration, ctx: &Context) -> Result<Inputs, Error> {
    let namespace = integration.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &integration.spec;
    let input = ctx
        .input_reads
        .get(&ctx.client, namespace, &spec.secret_ref.name)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                Reason::SecretNotFound,
                format!(
                    "input Secret {:?} does not exist in namespace {namespace:?}",
                    spec.secret_ref.name
                ),
            )
        })?;
    Ok(Inputs {
        values: secret_credentials(&input)?,
        resource_version: input.metadata.resource_version.unwrap_or_default(),
    })
}

/// A ClusterProvider resolved for one Integration: its spec, its effective
/// configuration, its driver and the Integration's flow.
pub type ResolvedProvider = (ClusterProviderSpec, ProviderConfig, std::sync::Arc<dyn Driver>, Flow);

/// The ClusterProvider, its driver and the flow, from the caches alone.
pub fn resolve_provider(integration: &Integration, ctx: &Context) -> Result<ResolvedProvider, Error> {
    let spec = &integration.spec;
    let cluster_provider = ctx
        .providers
        .get(&ObjectRef::<ClusterProvider>::new(&spec.provider))
        .ok_or_else(|| {
            Error::invalid(
                Reason::ProviderNotFound,
                format!("ClusterProvider {:?} does not exist", spec.provider),
            )
        })?;
    let (spec, mut provider, driver, flow) = resolve_with(integration, &cluster_provider.spec, &ctx.drivers)?;
    // The provider's limits are for the whole operator; a shard has its share.
    provider.max_concurrency = ctx.shard.share(provider.max_concurrency);
    provider.requests_per_second = ctx.shard.share(provider.requests_per_second);
    Ok((spec, provider, driver, flow))
}

/// The driver, flow and effective configuration of the ClusterProvider an
/// Integration names (`cp_spec`, found by the caller), checked as the
/// operator checks them: allowed namespaces, endpoint safety opt-ins, a
/// flow the driver supports. Needs no cluster, so the command-line
/// companion's `check` resolves a workstation's files exactly as the
/// operator would.
pub fn resolve_with(
    integration: &Integration,
    cp_spec: &ClusterProviderSpec,
    drivers: &Drivers,
) -> Result<ResolvedProvider, Error> {
    let namespace = integration.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &integration.spec;
    if !cp_spec.allowed_namespaces.is_empty() && !cp_spec.allowed_namespaces.iter().any(|n| n == namespace) {
        return Err(Error::invalid(
            Reason::ProviderNotAllowed,
            format!(
                "ClusterProvider {:?} does not allow Integrations in namespace {namespace:?} (see its allowedNamespaces)",
                spec.provider
            ),
        ));
    }
    let provider = provider_config(&spec.provider, cp_spec).map_err(|message| {
        Error::invalid(
            Reason::InvalidProvider,
            format!("ClusterProvider {:?}: {message}", spec.provider),
        )
    })?;
    let flow = flow_of(integration)?;
    let driver = drivers.for_type(cp_spec.provider_type);
    if !driver.supports(&flow) {
        return Err(Error::invalid(
            Reason::UnsupportedFlow,
            format!(
                "provider type {} does not support the {} flow",
                cp_spec.provider_type.as_str(),
                flow.name()
            ),
        ));
    }
    Ok((cp_spec.clone(), provider, driver, flow))
}

/// The flow block of the spec. The CRD schema admits exactly one; this is
/// the backstop for objects stored before the rule existed. Pure (fuzzed).
pub fn flow_of(integration: &Integration) -> Result<Flow, Error> {
    let spec = &integration.spec;
    let set: Vec<&str> = [
        ("clientCredentials", spec.client_credentials.is_some()),
        ("apiKey", spec.api_key.is_some()),
        ("basicAuth", spec.basic_auth.is_some()),
        ("partnerIntegration", spec.partner_integration.is_some()),
        ("elementInstance", spec.element_instance.is_some()),
        ("connection", spec.connection.is_some()),
        ("authorizationCode", spec.authorization_code.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if set.len() != 1 {
        return Err(Error::invalid(
            Reason::InvalidSpec,
            format!("the spec must set exactly one flow block, found {}: {set:?}", set.len()),
        ));
    }
    let namespace = integration.metadata.namespace.clone().unwrap_or_default();
    let name = integration.metadata.name.clone().unwrap_or_default();
    let uid = integration.metadata.uid.clone().unwrap_or_default();
    let deletes = |p: Option<DeletionPolicy>| p.unwrap_or_default() == DeletionPolicy::Delete;
    Ok(if let Some(cc) = &spec.client_credentials {
        Flow::ClientCredentials {
            scopes: cc.scopes.clone(),
            audience: cc.audience.clone(),
        }
    } else if spec.api_key.is_some() {
        Flow::ApiKey
    } else if spec.basic_auth.is_some() {
        Flow::BasicAuth
    } else if let Some(p) = &spec.partner_integration {
        Flow::PartnerIntegration {
            app_id: p.app_id.clone(),
            company_id: p.company_id.clone(),
            bidirectional: p.bidirectional,
        }
    } else if let Some(e) = &spec.element_instance {
        Flow::ElementInstance {
            element_key: e.element_key.clone(),
            instance_name: e.instance_name.clone().unwrap_or_else(|| format!("{namespace}-{name}")),
            configuration: e.configuration.clone(),
            secret_configuration: e.secret_configuration.clone(),
            delete_on_cleanup: deletes(e.deletion_policy),
            publish_organization_secret: e.publish_organization_secret,
        }
    } else if let Some(c) = &spec.connection {
        Flow::Connection {
            end_user_email: c.end_user_email.clone(),
            end_user_organization_name: c.end_user_organization_name.clone(),
            end_user_origin_id: c.end_user_origin_id.clone().unwrap_or(uid),
            integration_category: c.integration_category.map(|c| c.as_str().to_string()),
            integration_tool: c.integration_tool.clone(),
            link_type: c.link_type.unwrap_or_default(),
            integration_id: c.integration_id.clone(),
            delete_on_cleanup: deletes(c.deletion_policy),
        }
    } else if let Some(a) = &spec.authorization_code {
        Flow::AuthorizationCode {
            scopes: a.scopes.clone(),
            extra_parameters: a.extra_parameters.clone(),
            binding: crate::providers::authorization::Binding { namespace, name, uid },
        }
    } else {
        return Err(Error::invalid(Reason::InvalidSpec, "the spec has no flow block"));
    })
}

/// Every Integration this operator may see, by a LIST: cluster-wide, or,
/// where its RBAC is namespaced (403), its own namespace. For a sharded
/// operator, whose cache holds only its shard's namespaces; asked only
/// before a flow with an exclusive key creates something, never at renewals.
pub async fn list_integrations(me: &Integration, ctx: &Context) -> Result<Vec<Integration>, Error> {
    let params = kube::api::ListParams::default();
    let listed = match kube::Api::<Integration>::all(ctx.client.clone()).list(&params).await {
        Ok(list) => list,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            kube::Api::<Integration>::namespaced(
                ctx.client.clone(),
                me.metadata.namespace.as_deref().unwrap_or_default(),
            )
            .list(&params)
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(listed.items)
}

/// The other Integration (`namespace/name`) that claims the provider-side
/// object `me`'s flow would create (the same ClusterProvider and
/// [`Flow::exclusive_key`]) and came first: holding the object already
/// (`status.integrationId`) where `me` does not, else older, or as old and sorted
/// first by namespace and name. `None` when the flow has no exclusive key
/// or nobody else claims it.
///
/// Computed before the exchange from the controller's own Integration
/// cache, not a LIST: the cache holds exactly what a LIST would return
/// (all namespaces, or, for a controller per watched namespace, its own
/// one, as a LIST falls back to under namespaced RBAC), at no API call.
/// It is never older than the event that caused this reconcile: the
/// cache applies a watch's events in order before the runner acts on
/// them, so every Integration created before `me` is in it.
pub fn first_claimant<'a>(
    me: &Integration,
    flow: &Flow,
    all: impl IntoIterator<Item = &'a Integration>,
) -> Option<String> {
    let key = flow.exclusive_key()?;
    // One that already holds the provider-side object comes first: two
    // created in the same second are otherwise ordered by name, which can
    // put a newcomer before the one whose object already exists (it would
    // then be refused by the provider, not named a duplicate here).
    let order = |i: &Integration| {
        (
            i.status.as_ref().and_then(|s| s.integration_id.as_ref()).is_none(),
            i.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(i64::MAX),
            i.metadata.namespace.clone().unwrap_or_default(),
            i.metadata.name.clone().unwrap_or_default(),
        )
    };
    let mine = order(me);
    all.into_iter()
        .filter(|o| o.metadata.uid != me.metadata.uid && o.spec.provider == me.spec.provider)
        .filter(|o| flow_of(o).ok().and_then(|f| f.exclusive_key()).as_ref() == Some(&key))
        .map(|o| (order(o), o))
        .filter(|(order, _)| *order < mine)
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, o)| {
            format!(
                "{}/{}",
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default()
            )
        })
}

/// Input values as text. Binary values cannot be credentials for an HTTP
/// API, so they are refused by key name.
pub fn secret_credentials(secret: &Secret) -> Result<Credentials, Error> {
    let mut values = std::collections::BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        if v.0.len() > MAX_INPUT_VALUE_BYTES {
            return Err(Error::invalid(
                Reason::InvalidInputSecret,
                format!(
                    "input Secret key {k:?} holds {} bytes; values are limited to {} KiB (no provider accepts a credential that large), so nothing was sent: put the credential itself into the key",
                    v.0.len(),
                    MAX_INPUT_VALUE_BYTES / 1024
                ),
            ));
        }
        let text = String::from_utf8(v.0.clone()).map_err(|_| {
            Error::invalid(
                Reason::InvalidInputSecret,
                format!("input Secret key {k:?} is not UTF-8 text"),
            )
        })?;
        // Trailing newlines from `kubectl create secret --from-file` are never
        // part of a credential.
        let text = text.trim_end_matches(['\r', '\n']);
        if REQUEST_INPUT_KEYS.contains(&k.as_str()) && text.chars().any(char::is_control) {
            return Err(Error::invalid(
                Reason::InvalidInputSecret,
                format!(
                    "input Secret key {k:?} contains a line break or another control character; it is sent in HTTP requests, where it could inject headers, so it is refused (a trailing newline alone is fine)"
                ),
            ));
        }
        values.insert(k.clone(), SecretString::from(text.to_string()));
    }
    Ok(Credentials::new(values))
}

/// `10m`, `8784h`: a duration as the ClusterProvider fields spell it.
fn go_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Client authentication at the token endpoint when the ClusterProvider does
/// not set `clientAuthMethod`: what the provider documents. SmartRecruiters
/// shows the client id and secret in the form body (`client_secret_post`);
/// any other RFC 6749 endpoint gets HTTP Basic, which section 2.3.1 requires
/// every server to support.
pub fn default_client_auth(provider_type: ProviderType) -> ClientAuthMethod {
    match provider_type {
        ProviderType::Smartrecruiters => ClientAuthMethod::ClientSecretPost,
        ProviderType::Oauth2
        | ProviderType::CornerstoneTalentlink
        | ProviderType::CloudElements
        | ProviderType::Kombo => ClientAuthMethod::ClientSecretBasic,
    }
}

/// The driver-facing configuration of a ClusterProvider, defaults applied.
fn browser_url(field: &str, value: &Option<String>) -> Result<Option<Url>, String> {
    value
        .as_deref()
        .map(|v| {
            let url = Url::parse(v).map_err(|e| format!("{field} is not a valid URL: {e}"))?;
            if !matches!(url.scheme(), "https" | "http") || url.fragment().is_some() {
                return Err(format!("{field} must be an http(s) URL without a fragment"));
            }
            Ok(url)
        })
        .transpose()
}

pub fn provider_config(name: &str, spec: &ClusterProviderSpec) -> Result<ProviderConfig, String> {
    let parse = |field: &str, value: &Option<String>| -> Result<Option<Url>, String> {
        value
            .as_deref()
            .map(|v| {
                let url = Url::parse(v).map_err(|e| format!("{field} is not a valid URL: {e}"))?;
                check_endpoint(&url, spec.allow_insecure_http, spec.allow_private_addresses)
                    .map_err(|e| format!("{field}: {e}"))?;
                Ok(url)
            })
            .transpose()
    };
    let duration =
        |field: &str, value: &Option<String>, default: Duration, max: Duration| -> Result<Duration, String> {
            match value {
                None => Ok(default),
                Some(v) => super::schedule::parse_duration(v)
                    .map_err(|e| format!("{field}: {e}"))
                    .and_then(|d| {
                        if d.is_zero() {
                            Err(format!("{field} must be greater than zero"))
                        } else if d > max {
                            Err(format!("{field} must be at most {}", go_duration(max)))
                        } else {
                            Ok(d)
                        }
                    }),
            }
        };
    Ok(ProviderConfig {
        name: name.to_string(),
        token_url: parse("tokenUrl", &spec.token_url)?,
        base_url: parse("baseUrl", &spec.base_url)?,
        // Opened by a browser and redirected to by the provider, never
        // called by the operator: any absolute http(s) URL.
        authorization_url: browser_url("authorizationUrl", &spec.authorization_url)?,
        redirect_url: browser_url("redirectUrl", &spec.redirect_url)?,
        client_auth: match spec
            .client_auth_method
            .unwrap_or_else(|| default_client_auth(spec.provider_type))
        {
            ClientAuthMethod::ClientSecretBasic => ClientAuth::Basic,
            ClientAuthMethod::ClientSecretPost => ClientAuth::Post,
        },
        request_timeout: duration("requestTimeout", &spec.request_timeout, DEFAULT_TIMEOUT, MAX_TIMEOUT)?,
        default_lifetime: duration(
            "defaultTokenLifetime",
            &spec.default_token_lifetime,
            DEFAULT_LIFETIME,
            MAX_INTERVAL,
        )?,
        max_concurrency: spec
            .max_concurrency
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_CONCURRENCY),
        requests_per_second: spec
            .requests_per_second
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_RPS),
        rate_limit_scope: spec
            .rate_limit_scope
            .unwrap_or_else(|| spec.provider_type.default_rate_limit_scope()),
        revalidate_interval: duration(
            "revalidateInterval",
            &spec.revalidate_interval,
            DEFAULT_REVALIDATE,
            MAX_INTERVAL,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(namespace: &str, name: &str, uid: &str, created: &str, provider: &str, company: &str) -> Integration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "integration-operator.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "creationTimestamp": created},
            "spec": {
                "provider": provider,
                "secretRef": {"name": "master"},
                "partnerIntegration": {"appId": "app", "companyId": company},
                "target": {"name": format!("{name}-out")},
            },
        }))
        .unwrap()
    }

    /// Who else claims the same partner integration: the older one, or of
    /// two as old the one sorted first; never the Integration itself, one
    /// on another ClusterProvider or for another company.
    #[test]
    fn the_first_claimant_is_the_oldest_other_one_with_the_same_key() {
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:00:01Z";
        let me = partner("b", "me", "u-me", t1, "sr", "ACME");
        let flow = flow_of(&me).unwrap();
        let claimant = |all: &[Integration]| first_claimant(&me, &flow, all.iter());
        assert_eq!(claimant(std::slice::from_ref(&me)), None);
        let younger = partner("a", "younger", "u-y", "2026-01-01T00:00:02Z", "sr", "ACME");
        let other_company = partner("a", "beta", "u-b", t0, "sr", "BETA");
        let other_provider = partner("a", "elsewhere", "u-e", t0, "sr-2", "ACME");
        assert_eq!(
            claimant(&[me.clone(), younger.clone(), other_company, other_provider]),
            None
        );
        let as_old_sorted_after = partner("c", "same-second", "u-c", t1, "sr", "ACME");
        assert_eq!(claimant(&[me.clone(), as_old_sorted_after]), None);
        let as_old_sorted_first = partner("a", "same-second", "u-a", t1, "sr", "ACME");
        let older = partner("z", "older", "u-o", t0, "sr", "ACME");
        assert_eq!(
            claimant(&[younger, as_old_sorted_first.clone(), me.clone()]).as_deref(),
            Some("a/same-second")
        );
        assert_eq!(
            claimant(&[as_old_sorted_first, older, me.clone()]).as_deref(),
            Some("z/older")
        );
        // A flow without an exclusive key never has one.
        assert_eq!(first_claimant(&me, &Flow::ApiKey, [&me]), None);
    }

    #[test]
    fn one_that_already_holds_the_provider_side_object_comes_first() {
        // Created in the same second, "a/..." sorts before "z/...": without
        // the object, "a" would come first; "z" created it, so "z" does.
        let t = "2026-01-01T00:00:00Z";
        let newcomer = partner("a", "acme", "u-a", t, "sr", "ACME");
        let mut holder = partner("z", "acme", "u-z", t, "sr", "ACME");
        holder.status = Some(crate::crd::IntegrationStatus {
            integration_id: Some("int-1".into()),
            ..Default::default()
        });
        let flow = flow_of(&newcomer).unwrap();
        let all = [newcomer.clone(), holder.clone()];
        assert_eq!(first_claimant(&newcomer, &flow, all.iter()).as_deref(), Some("z/acme"));
        assert_eq!(first_claimant(&holder, &flow, all.iter()), None);
    }

    fn spec(token_url: &str) -> ClusterProviderSpec {
        ClusterProviderSpec {
            provider_type: ProviderType::Oauth2,
            token_url: Some(token_url.into()),
            authorization_url: None,
            redirect_url: None,
            base_url: None,
            client_auth_method: None,
            request_timeout: None,
            default_token_lifetime: None,
            max_concurrency: None,
            requests_per_second: None,
            revalidate_interval: None,
            rate_limit_scope: None,
            allowed_namespaces: vec![],
            allow_insecure_http: false,
            allow_private_addresses: false,
            webhook: None,
            partner_endpoints: None,
        }
    }

    #[test]
    fn defaults_are_applied_in_code() {
        let cfg = provider_config("p", &spec("https://auth.example.com/token")).unwrap();
        assert_eq!(cfg.client_auth, ClientAuth::Basic);
        assert_eq!(cfg.request_timeout, DEFAULT_TIMEOUT);
        assert_eq!(cfg.default_lifetime, DEFAULT_LIFETIME);
        assert_eq!(cfg.max_concurrency, 8);
    }

    #[test]
    fn client_authentication_defaults_to_what_the_provider_documents() {
        let mut s = spec("https://auth.example.com/token");
        assert_eq!(provider_config("p", &s).unwrap().client_auth, ClientAuth::Basic);
        s.provider_type = ProviderType::Smartrecruiters;
        assert_eq!(provider_config("p", &s).unwrap().client_auth, ClientAuth::Post);
        // An explicit setting always wins.
        s.client_auth_method = Some(ClientAuthMethod::ClientSecretBasic);
        assert_eq!(provider_config("p", &s).unwrap().client_auth, ClientAuth::Basic);
        s.provider_type = ProviderType::Oauth2;
        s.client_auth_method = Some(ClientAuthMethod::ClientSecretPost);
        assert_eq!(provider_config("p", &s).unwrap().client_auth, ClientAuth::Post);
    }

    #[test]
    fn bad_endpoints_are_explained() {
        let err = provider_config("p", &spec("http://auth.example.com/token")).unwrap_err();
        assert!(err.contains("tokenUrl") && err.contains("allowInsecureHttp"), "{err}");
        let err = provider_config("p", &spec("not a url")).unwrap_err();
        assert!(err.contains("tokenUrl is not a valid URL"), "{err}");
        let mut s = spec("https://a.example.com/t");
        s.request_timeout = Some("0s".into());
        assert!(provider_config("p", &s).unwrap_err().contains("requestTimeout"));
    }
}
