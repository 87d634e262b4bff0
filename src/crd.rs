//! The custom resources: `Integration` (namespaced, owned by application teams)
//! and `ClusterProvider` (cluster-scoped, owned by cluster admins).
//!
//! Every field carries a `///` comment: it becomes the `kubectl explain` text.
//! Nothing is defaulted into the stored spec (GitOps tools would see drift);
//! defaults live in code and the effective values are reported in status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Provider vocabulary the drivers share (defined in `integration-providers`).
pub use crate::providers::{KomboLinkType, ProviderType, RateLimitScope};

/// API group of every resource of this operator.
pub const GROUP: &str = "integration-operator.io";

/// Pattern shared by every duration field: Go-style durations such as `90s`, `10m`, `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A Kubernetes object name (RFC 1123 subdomain): no path, namespace or
/// whitespace can be smuggled through a reference.
const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Bounds a string-to-string map in the schema: at most `N` entries, each
/// value at most `L` characters (the apiserver rejects larger objects at
/// admission, before the operator sees them).
fn bounded_map<const N: u64, const L: u64>(schema: &mut schemars::Schema) {
    schema.insert("maxProperties".into(), N.into());
    if let Some(values) = schema.get_mut("additionalProperties").and_then(|v| v.as_object_mut()) {
        values.insert("maxLength".into(), L.into());
    }
}

/// Keeps an optional enum field's own doc in the schema. kube's
/// `OptionalEnum` rewrite hoists `anyOf: [<enum>, null]` into the field and
/// the enum type's description overwrites the field's (which says the
/// default): drop the member's description first.
fn field_doc_wins(schema: &mut schemars::Schema) {
    if let Some(members) = schema.get_mut("anyOf").and_then(|v| v.as_array_mut()) {
        for m in members.iter_mut().filter_map(|m| m.as_object_mut()) {
            m.remove("description");
        }
    }
}

/// An Integration asks the operator to obtain credentials from a provider and
/// keep them, fresh, in a Secret of the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "integration-operator.io",
    version = "v1alpha1",
    kind = "Integration",
    doc = "An Integration obtains credentials from a provider and keeps them, fresh, in a Secret.",
    namespaced,
    status = "IntegrationStatus",
    shortname = "intg",
    category = "integration-operator",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","description":"When the credentials expire (RFC 3339)","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.clientCredentials), has(self.apiKey), has(self.basicAuth), has(self.partnerIntegration), has(self.elementInstance), has(self.connection), has(self.authorizationCode)].filter(x, x).size() == 1")
        .message("exactly one flow block must be set: clientCredentials, apiKey, basicAuth, partnerIntegration, elementInstance, connection or authorizationCode")
        .reason(Reason::FieldValueInvalid)
)]
// The flow blocks are boxed: an Integration lives in the controller's cache
// for as long as it exists, and only one block is ever set, so inline
// blocks would cost every Integration the size of all of them.
pub struct IntegrationSpec {
    /// Name of the ClusterProvider to obtain credentials from (for example
    /// `smartrecruiters` or an OAuth 2.0 server an admin registered). Endpoints
    /// come only from the ClusterProvider: an Integration can never name a URL.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub provider: String,

    /// The Secret, in the Integration's namespace, that holds the input
    /// credentials (for `clientCredentials`: keys `client_id` and `client_secret`).
    pub secret_ref: SecretReference,

    /// OAuth 2.0 client-credentials flow (RFC 6749 section 4.4): the operator
    /// exchanges the input client id and secret for an access token and renews
    /// it before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<Box<ClientCredentialsFlow>>,

    /// API-key flow: the operator validates the key in the input Secret (key
    /// `api_key`) with a cheap authenticated call and publishes it as the
    /// provider's header (SmartRecruiters: `X-SmartToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Box<ApiKeyFlow>>,

    /// Username/password plus API key (Cornerstone TalentLink): input keys
    /// `username`, `password` and `api_key`; validated with a cheap read and
    /// published as a Basic header, the API key and the base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<Box<BasicAuthFlow>>,

    /// SmartRecruiters General Partner Integration: master credentials (input
    /// keys `client_id`, `client_secret`) create a customer-level integration
    /// once; its client id and secret are stored and exchanged for tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_integration: Option<Box<PartnerIntegrationFlow>>,

    /// Cloud Elements / SAP Open Connectors element instance, created once
    /// with the platform's User and Organization secrets (input keys
    /// `user_secret`, `organization_secret`) and deleted with the Integration
    /// unless retained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_instance: Option<Box<ElementInstanceFlow>>,

    /// Kombo connection: a connect link the customer completes, then the
    /// Kombo API key (input key `api_key`) and the integration id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Box<ConnectionFlow>>,

    /// OAuth 2.0 authorization-code flow with PKCE (RFC 6749 section 4.1,
    /// RFC 7636 S256): a person grants access in a browser at the URL the
    /// operator publishes in the Ready condition and an Event; the provider
    /// redirects to the operator's callback (the ClusterProvider's
    /// `redirectUrl`); the operator exchanges the code, keeps the refresh
    /// token and renews the access token with it. Input keys `client_id`
    /// and, for a confidential client, `client_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_code: Option<Box<AuthorizationCodeFlow>>,

    /// Where and how the resulting credentials are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Box<TargetSpec>>,

    /// When credentials are renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Box<RefreshSpec>>,

    /// Workloads to restart when the credentials change in a way their pods
    /// must pick up (not on routine renewals). Needs the chart's
    /// `rollouts.enabled`. Editing it never causes an exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Box<RolloutSpec>>,
}

/// Workloads restarted when the credentials change.
///
/// A restart is what `kubectl rollout restart` does: the annotation
/// `kubectl.kubernetes.io/restartedAt` on the pod template is set to the
/// time, with a merge patch that touches nothing else. Routine renewals (a
/// new token before the old one expires) and the first issue never
/// restart; any other change of the credentials does (new input
/// credentials, credentials issued again after a repair, renew-now or a
/// rejection report that got different ones).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Deployments, StatefulSets or DaemonSets in the Integration's namespace.
    #[schemars(length(min = 1, max = 16))]
    pub workloads: Vec<WorkloadReference>,

    /// Changes within this time of the first one cause one restart, e.g.
    /// `30s` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub coalesce: Option<String>,

    /// Shortest time between two restarts, e.g. `5m` (the default): a
    /// change inside it is restarted for when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub min_interval: Option<String>,
}

/// A workload in the Integration's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub struct WorkloadReference {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (apps/v1).
    pub kind: WorkloadKind,
    /// Its name.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// The kinds of workload a rollout restarts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Reference to a Secret in the Integration's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret. It must be in the same namespace as the Integration:
    /// there is deliberately no namespace field.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// Parameters of the OAuth 2.0 client-credentials flow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCredentialsFlow {
    /// Scopes to request, sent space-separated in the `scope` parameter.
    /// Empty: no `scope` parameter (the server's default scopes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$"))
    )]
    pub scopes: Vec<String>,

    /// Audience to request (the `audience` parameter some servers require),
    /// for example `https://api.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,
}

/// Parameters of the OAuth 2.0 authorization-code flow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationCodeFlow {
    /// Scopes to request, sent space-separated in the `scope` parameter
    /// (include the one your provider needs for refresh tokens, e.g.
    /// `offline_access`). Empty: no `scope` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$"))
    )]
    pub scopes: Vec<String>,

    /// Extra authorization request parameters some providers need (e.g.
    /// `prompt: consent`, `access_type: offline`). The operator's own
    /// parameters (`client_id`, `redirect_uri`, `state`, `code_challenge`,
    /// …) cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub extra_parameters: BTreeMap<String, String>,
}

/// Parameters of the API-key flow (none yet: the key comes from the input Secret).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyFlow {}

/// Parameters of the username/password + API key flow (none yet: all three
/// come from the input Secret).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthFlow {}

/// Parameters of the SmartRecruiters General Partner Integration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartnerIntegrationFlow {
    /// The partner application id SmartRecruiters issued. Immutable: the
    /// integration SmartRecruiters creates belongs to one app and company,
    /// and its credentials are shown only once.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.partnerIntegration.appId cannot be changed: the SmartRecruiters integration and its credentials belong to the app it was created for; to use another app, delete this Integration and create a new one")
        .reason(Reason::FieldValueInvalid))]
    pub app_id: String,
    /// The customer's SmartRecruiters company id. Immutable, like `appId`.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.partnerIntegration.companyId cannot be changed: the SmartRecruiters integration and its credentials belong to the company it was created for; to connect another company, delete this Integration and create a new one")
        .reason(Reason::FieldValueInvalid))]
    pub company_id: String,
    /// Bi-directional integration: the operator also generates the
    /// customer-level client id and secret SmartRecruiters will use to call
    /// the partner, sends them with the creation request and stores them as
    /// `partner_client_id` / `partner_client_secret`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bidirectional: bool,
}

/// Parameters of a Cloud Elements / SAP Open Connectors element instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
// On the block, not the field: setting or removing the optional name
// changes the instance name as much as editing it does.
#[x_kube(validation = Rule::new("(has(self.instanceName) ? self.instanceName : '') == (has(oldSelf.instanceName) ? oldSelf.instanceName : '')")
    .message("spec.elementInstance.instanceName cannot be set, changed or removed: the element instance and its token were created under the old name; to use another name, delete this Integration and create a new one")
    .reason(Reason::FieldValueInvalid))]
pub struct ElementInstanceFlow {
    /// The element key, for example `smartrecruiters`. Immutable: an
    /// element instance belongs to one element.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.elementInstance.elementKey cannot be changed: the element instance and its token belong to the element it was created for; to use another element, delete this Integration and create a new one")
        .reason(Reason::FieldValueInvalid))]
    pub element_key: String,
    /// Instance name shown in the platform. Default: `<namespace>-<name>` of
    /// the Integration. Cannot be set, changed or removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub instance_name: Option<String>,
    /// Non-secret element configuration values, by configuration key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<64, 4096>)]
    pub configuration: BTreeMap<String, String>,
    /// Secret element configuration: element configuration key -> key of the
    /// input Secret holding the value (for SmartRecruiters: `api.key: api_key`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<64, 253>)]
    pub secret_configuration: BTreeMap<String, String>,
    /// What happens to the instance when the Integration is deleted. Default `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_doc_wins)]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Also put the platform's Organization secret into the published header
    /// (`User …, Organization …, Element …` instead of `User …, Element …`).
    /// Off by default: the Organization secret is the organization-wide
    /// administration secret, and every pod that reads the output Secret
    /// would hold it. Element (hub) calls need only `User` and `Element`;
    /// turn this on only for a consumer that calls platform APIs needing all three.
    #[serde(default, skip_serializing_if = "is_false")]
    pub publish_organization_secret: bool,
}

/// Parameters of a Kombo connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFlow {
    /// Email of the customer's user who completes the connection.
    #[schemars(length(min = 3, max = 320))]
    pub end_user_email: String,
    /// The customer's organisation name.
    #[schemars(length(min = 1, max = 256))]
    pub end_user_organization_name: String,
    /// Your id for the customer. Default: the Integration's uid, which is
    /// what keeps one Integration from ever creating two connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub end_user_origin_id: Option<String>,
    /// Kombo integration category the link is for: `HRIS`, `ATS`,
    /// `ASSESSMENT` or `LMS` (Kombo's values; Kombo assumes `HRIS` when it is
    /// not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_doc_wins)]
    pub integration_category: Option<KomboCategory>,
    /// Kombo tool to preselect, for example `smartrecruiters` or
    /// `cornerstonetalentlink`: one of the tool ids Kombo's API accepts (its
    /// `integration_tool` enumeration), so a typo is refused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = &crate::providers::kombo::TOOLS[..]))]
    pub integration_tool: Option<String>,
    /// The kind of connect link. `MAGIC_LINK` (default): a link for a person
    /// to open from an e-mail, valid for one year. `EMBEDDED`: a link for
    /// the Kombo Connect front-end SDK, valid for one hour; only useful when
    /// an application of yours opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_doc_wins)]
    pub link_type: Option<KomboLinkType>,
    /// Use an existing Kombo integration instead of creating a connect link
    /// (an id such as `personio:8d1hHjk3`; it becomes part of request paths,
    /// so `/`, `?`, `#` and `%` are not allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9:._~@+=-]*$"))]
    pub integration_id: Option<String>,
    /// What happens to the Kombo integration when the Integration is deleted. Default `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_doc_wins)]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// Kombo's integration categories (its `integration_category` enumeration).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum KomboCategory {
    Hris,
    Ats,
    Assessment,
    Lms,
}

impl KomboCategory {
    /// The value Kombo's API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            KomboCategory::Hris => "HRIS",
            KomboCategory::Ats => "ATS",
            KomboCategory::Assessment => "ASSESSMENT",
            KomboCategory::Lms => "LMS",
        }
    }
}

/// What happens to provider-side state when the Integration is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete it.
    #[default]
    Delete,
    /// Keep it.
    Retain,
}

/// Where the resulting credentials are written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.type) || self.type != 'kubernetes.io/basic-auth' || (has(self.template) && has(self.template.data) && ('username' in self.template.data || 'password' in self.template.data))")
        .message("spec.target.type kubernetes.io/basic-auth needs a `username` or `password` key: add one to spec.target.template.data, for example username: '{{ credentials.client_id }}'")
        .reason(Reason::FieldValueRequired)
)]
pub struct TargetSpec {
    /// Name of the output Secret, in the Integration's namespace. Defaults to
    /// the Integration's name. The operator refuses to write a Secret it does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: Option<String>,

    /// Extra labels for the output Secret. The Integration's own labels are not
    /// copied unless listed here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<64, 63>)]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations for the output Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<64, 16384>)]
    pub annotations: BTreeMap<String, String>,

    /// Type of the output Secret: `Opaque` (default) or
    /// `kubernetes.io/basic-auth` (which needs a `username` or `password`
    /// key from `template.data`). Kubernetes does not let a Secret's type
    /// change: changing this field on an existing Secret sets Ready=False
    /// with reason `SecretTypeChanged` and leaves the Secret as it is until
    /// it is deleted (the operator then writes it with the new type) or the
    /// field is set back. Changing it never calls the provider.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_doc_wins)]
    pub secret_type: Option<SecretType>,

    /// Extra keys of the output Secret, rendered from the issued
    /// credentials. The issued keys are always kept as they are (flows
    /// resume from them). Editing the templates rewrites the Secret from
    /// the credentials it holds, without calling the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSpec>,
}

/// Types an output Secret can have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SecretType {
    /// Arbitrary keys (the default).
    #[default]
    Opaque,
    /// Basic authentication: Kubernetes requires a `username` or a
    /// `password` key (render them with `template.data`).
    #[serde(rename = "kubernetes.io/basic-auth")]
    BasicAuth,
}

impl SecretType {
    /// The value of the Secret's `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretType::Opaque => "Opaque",
            SecretType::BasicAuth => "kubernetes.io/basic-auth",
        }
    }
}

/// Largest number of rendered keys.
pub const MAX_TEMPLATE_KEYS: u64 = 32;
/// Largest template, in characters.
pub const MAX_TEMPLATE_LENGTH: u64 = 16384;

/// Keys of the output Secret rendered with templates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    /// Output Secret key -> MiniJinja (Jinja2) template of its value. A
    /// template reads `credentials` (the issued keys, for example
    /// `{{ credentials.access_token }}`) and `integration` (`name`,
    /// `namespace`, `provider`), nothing else: no environment, files or
    /// other Secrets. Filters include `tojson` (a JSON string or
    /// document), `urlencode`, `b64encode`, `default`, `replace`, `trim`,
    /// `upper` and `lower`. Printing an undefined value is an error (use
    /// `default` or `is defined`). Keys are Secret keys (letters, digits,
    /// `-`, `_`, `.`; at most 253) and must not be keys the operator
    /// writes the issued credentials under. A template that fails to
    /// compile or render sets Ready=False with reason `InvalidTemplate`
    /// and the Secret is not touched.
    #[schemars(transform = bounded_map::<MAX_TEMPLATE_KEYS, MAX_TEMPLATE_LENGTH>)]
    #[x_kube(
        validation = Rule::new("self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$') && k != '.' && !k.startsWith('..'))")
            .message("spec.target.template.data: each key must be a valid Secret key: letters, digits, '-', '_' and '.', at most 253 characters, not '.' and not starting with '..'")
            .reason(Reason::FieldValueInvalid),
        validation = Rule::new(crate::controller::templates::reserved_keys_rule())
            .message(Message::Message(crate::controller::templates::reserved_keys_message()))
            .reason(Reason::FieldValueInvalid)
    )]
    pub data: BTreeMap<String, String>,
}

/// When credentials are renewed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshSpec {
    /// How long before expiry to renew: a duration such as `10m` or `1h30m`, or
    /// a percentage of the token lifetime such as `25%`. Default: 30% of the
    /// lifetime, at most 15m. At most half the lifetime: a longer value is
    /// capped, so a token is always used for at least half its life. The
    /// renewal falls inside this window, spread by a per-Integration jitter
    /// over its first half, so that tokens issued together are not all renewed
    /// in the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^(([0-9]+(ms|s|m|h))+|[0-9]{1,2}%)$"))]
    pub renew_before: Option<String>,
}

/// Observed state of an Integration, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions: `Ready` (credentials are present and valid) and `Warning`
    /// (something needs attention although credentials may still work).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// When the credentials in the output Secret expire (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,

    /// When the operator will renew them (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<String>,

    /// When the provider last issued credentials (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exchange_time: Option<String>,

    /// Name of the output Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// The output Secret's `metadata.resourceVersion` as the operator last
    /// wrote or checked it. A restarted operator trusts a Secret still at
    /// this version without reading its data back; any other version (an
    /// edit, a re-creation) is read and checked against its content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_resource_version: Option<String>,

    /// Provider-side identifier where the flow has one (integration or instance id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,

    /// Set while the provider refuses the credentials: a keyed fingerprint
    /// (HMAC, reveals nothing of the values) of the refused inputs and of the
    /// `integration-operator.io/retry` annotation's value at the time. The
    /// operator does not send the same credentials again (a password sent
    /// every few minutes can lock the account) until the input Secret, the
    /// spec or the ClusterProvider changes, or the annotation is set to a new
    /// value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_inputs: Option<String>,

    /// A one-shot step that waits for someone outside the cluster (a Kombo
    /// connect link, by its creation time). Kept here, outside the output
    /// Secret, so that a deleted Secret never starts a second one: the
    /// condition then says how to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<String>,
    /// The value of the `integration-operator.io/renew-now` annotation that
    /// the last exchange answered. Setting the annotation to any other value
    /// (a timestamp, say) makes the operator exchange again at once, at most
    /// once per 10 seconds per Integration, without deleting anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_now_answered: Option<String>,
    /// The value of the `integration-operator.io/credentials-rejected`
    /// annotation that the last exchange answered. A consuming application
    /// that gets a 401 with the published credentials sets the annotation
    /// to a new value; the operator re-validates or renews them, at most
    /// once per 30 seconds per Integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_answered: Option<String>,

    /// The value of the `integration-operator.io/provider-event`
    /// annotation that the last check answered. The operator's inbound
    /// server sets that annotation to the id of a verified provider webhook
    /// about this Integration (Kombo's `integration-deleted`,
    /// `integration-state-changed`); the leader then checks the integration
    /// with the provider at once, at most once per 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_event_answered: Option<String>,

    /// Restarts of `spec.rollout.workloads`: a change waiting to be rolled
    /// out and the last restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where the restarts of an Integration's workloads stand.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// When the first credential change not rolled out yet happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<String>,
    /// When the workloads were last restarted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<String>,
}

/// A ClusterProvider is an admin-owned provider endpoint set that Integrations
/// name. It is the only place endpoints come from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "integration-operator.io",
    version = "v1alpha1",
    kind = "ClusterProvider",
    doc = "A ClusterProvider is a provider endpoint set, owned by cluster admins, that Integrations name.",
    shortname = "cprov",
    category = "integration-operator",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Token URL","type":"string","jsonPath":".spec.tokenUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProviderSpec {
    /// The driver compiled into the operator that speaks this provider's protocol.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,

    /// Token endpoint (for `oauth2`: the RFC 6749 token endpoint URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub token_url: Option<String>,

    /// Authorization endpoint (RFC 6749 section 3.1) for the
    /// `authorizationCode` flow: the URL a person opens in a browser, with
    /// the request parameters the operator adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub authorization_url: Option<String>,

    /// The operator's callback for the `authorizationCode` flow, as the
    /// provider must redirect to it and as it is registered there (the
    /// inbound server's `/oauth2/callback` behind its public host), e.g.
    /// `https://integrations.example.com/oauth2/callback`. Sent as
    /// `redirect_uri`. On the ClusterProvider because it is registered with
    /// the client, which the ClusterProvider's admin owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub redirect_url: Option<String>,

    /// Base URL of the provider's API, published in the output Secret as `base_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub base_url: Option<String>,

    /// How the client authenticates at the token endpoint. Default by type:
    /// `client_secret_post` (id and secret in the form body) for
    /// `smartrecruiters`, the form SmartRecruiters documents;
    /// `client_secret_basic` (HTTP Basic, which RFC 6749 requires every
    /// server to support) for `oauth2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_doc_wins)]
    pub client_auth_method: Option<ClientAuthMethod>,

    /// Timeout of one request to the provider, as a duration. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub request_timeout: Option<String>,

    /// Lifetime assumed when the provider's answer carries no expiry
    /// (`expires_in`). Default `30m`. The Integration shows a Warning condition
    /// when this default was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub default_token_lifetime: Option<String>,

    /// How often credentials without an expiry (API keys, instance tokens,
    /// Kombo integrations) are validated again. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub revalidate_interval: Option<String>,

    /// Most requests in flight to this provider at once, across all
    /// Integrations. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrency: Option<i32>,

    /// Most requests per second to this provider, across all Integrations. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: Option<i32>,

    /// What a 429 (or a 503 with Retry-After) holds back until its
    /// Retry-After: `Credential`, only requests sent with the same
    /// credentials (one tenant's own traffic exhausting its budget does not
    /// delay anyone else's renewals); or `Host`, every request to that host,
    /// from every ClusterProvider. Default by type: `Credential` for
    /// `smartrecruiters`, which limits each credential separately; `Host`
    /// for the others, whose limits are not documented per credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scope: Option<RateLimitScope>,

    /// Namespaces whose Integrations may use this provider. Empty: all namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 63)))]
    pub allowed_namespaces: Vec<String>,

    /// Allow plain `http://` endpoints. Off by default: credentials would cross
    /// the network in clear text. Meant for in-cluster test servers only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure_http: bool,

    /// Allow endpoints on loopback, private or link-local addresses. Off by
    /// default so that a provider entry cannot be pointed at cluster-internal
    /// services or cloud metadata endpoints by mistake.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_private_addresses: bool,

    /// Inbound webhooks from this provider (type `kombo`): the operator's
    /// inbound server (`--inbound-addr`) accepts deliveries at
    /// `/webhooks/kombo/<this ClusterProvider's name>` only while this is
    /// set, and only with a valid signature made with this secret. Unset:
    /// no webhook is accepted and the operator polls as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,

    /// SmartRecruiters' calls to the partner (type `smartrecruiters`,
    /// General Partner Integration with `bidirectional: true`): while this
    /// is set, the operator's inbound server (`--inbound-addr`) serves, for
    /// this ClusterProvider, the `oauthTokenUrl`
    /// (`/webhooks/smartrecruiters/<name>/oauth/token`), the `callbackUrl`
    /// (`/webhooks/smartrecruiters/<name>/callback`) and the `consentUrl`
    /// (`/webhooks/smartrecruiters/<name>/consent`) to register with
    /// SmartRecruiters' Partner & API Team. Unset: nothing is served there
    /// (404), and a disabled integration is noticed only when SmartRecruiters
    /// refuses its credentials at the next renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_endpoints: Option<PartnerEndpointsSpec>,
}

/// The endpoints SmartRecruiters calls on the partner (seed 004: `oauthTokenUrl`,
/// `callbackUrl`, `consentUrl`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartnerEndpointsSpec {
    /// Lifetime of the bearer tokens the operator issues at its
    /// `oauthTokenUrl` to SmartRecruiters (for the customer-level
    /// credentials it generated), as a duration between `1m` and `24h`.
    /// Default `1h`. SmartRecruiters uses them only to sign the disable
    /// callback; shorter limits what a leaked token can do, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub token_lifetime: Option<String>,
}

/// Where a provider's webhook signing secret is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret holding the webhook signing secret (for Kombo: the
    /// webhook secret of the Kombo environment this ClusterProvider's API
    /// key belongs to). It must be in the operator's own namespace, which
    /// the operator may read and namespace users normally cannot.
    pub secret_ref: WebhookSecretReference,
}

/// A key of a Secret in the operator's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretReference {
    /// Name of the Secret, in the operator's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Key in the Secret's data. Default `webhook_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Client authentication at an OAuth 2.0 token endpoint (RFC 6749 section 2.3.1).
// No `Default`: the default depends on the provider type
// (`controller::resolve::default_client_auth`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// Client id and secret in an HTTP Basic `Authorization` header.
    ClientSecretBasic,
    /// Client id and secret as form parameters in the request body.
    ClientSecretPost,
}

/// The CRDs as a multi-document YAML stream, in the order they should be applied.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [ClusterProvider::crd(), Integration::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
