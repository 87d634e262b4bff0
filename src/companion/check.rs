//! `check -f integration.yaml --provider provider.yaml`: one exchange from a
//! workstation with the provider the files name, with no operator deployed.
//!
//! The files are resolved exactly as the operator resolves the objects
//! (`controller::resolve::resolve_with`: allowed namespaces, the
//! ClusterProvider's `allowInsecureHttp` / `allowPrivateAddresses`, the
//! flow the driver supports), the same driver runs once, and what the
//! operator would write to the output Secret is printed with every value
//! redacted: key, length, `<redacted>`. A failure prints the reason and
//! message the operator would put in the Ready condition (already scrubbed
//! of input values) and exits non-zero.
//!
//! It is a real exchange. Flows that create something at the provider
//! (a SmartRecruiters partner integration, a Cloud Elements element
//! instance, a Kombo connect link) need `--yes`: `check` keeps nothing, so
//! what it creates is left at the provider and credentials shown once are lost.

use crate::reasons::Reason;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, ResourceExt};
use secrecy::ExposeSecret;

use super::{ClusterArgs, show};
use crate::{
    controller::{self, output, reconcile, resolve, schedule},
    crd::{ClusterProvider, Integration},
    providers::{self, Credentials, DriverError, Drivers, ExchangeRequest, Flow, Outcome, Priority, ProviderHttp},
};

/// What stands in for every value in the output.
pub const REDACTED: &str = "<redacted>";

/// Flags of `check`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["secret_file", "from_cluster"])))]
pub struct Args {
    /// The Integration manifest (YAML or JSON; the Integration in it).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The ClusterProvider manifest the Integration's spec.provider names.
    #[arg(long, value_name = "FILE")]
    pub provider: PathBuf,
    /// The input Secret as a manifest: `data` (base64) and/or `stringData`.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Read the input Secret (spec.secretRef) from the cluster, in the
    /// Integration's namespace.
    #[arg(long)]
    pub from_cluster: bool,
    /// Go ahead with a flow that creates something at the provider (a
    /// SmartRecruiters partner integration, a Cloud Elements element
    /// instance, a Kombo connect link), which check leaves there.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut integration: Integration = find_object(&args.file, "Integration")?;
    let provider: ClusterProvider = find_object(&args.provider, "ClusterProvider")?;
    // The provider file must hold the ClusterProvider the Integration names:
    // with another one, the operator would report ProviderNotFound.
    if provider.name_any() != integration.spec.provider {
        bail!(
            "{} names ClusterProvider {:?}, but {} holds ClusterProvider {:?} (the operator would report {})",
            args.file.display(),
            integration.spec.provider,
            args.provider.display(),
            provider.name_any(),
            Reason::ProviderNotFound
        );
    }

    // The namespace decides allowedNamespaces and where --from-cluster reads.
    let client = if args.from_cluster {
        Some(args.cluster.connect().await?)
    } else {
        None
    };
    let fallback = match &client {
        Some((_, ns)) => ns.clone(),
        None => args.cluster.namespace_offline(),
    };
    let namespace = match (integration.metadata.namespace.clone(), &args.cluster.namespace) {
        (Some(file), Some(flag)) if &file != flag => bail!(
            "{} is in namespace {file:?}, but --namespace says {flag:?}",
            args.file.display()
        ),
        (Some(file), _) => file,
        (None, _) => fallback,
    };
    integration.metadata.namespace = Some(namespace.clone());
    // The uid seeds ids, tags and the renewal jitter; a manifest has none.
    let identity = integration
        .metadata
        .uid
        .get_or_insert_with(|| format!("companion-check-{:016x}", rand::random::<u64>()))
        .clone();

    let drivers = Drivers::new(ProviderHttp::plain()?);
    let (cp_spec, config, driver, flow) =
        resolve::resolve_with(&integration, &provider.spec, &drivers).map_err(as_condition)?;
    if let Some(what) = creates_at_provider(&flow)
        && !args.yes
    {
        bail!(
            "not checked: the {} flow creates {what} at the provider, and check keeps nothing — what it creates stays there, and credentials the provider shows only once are printed redacted and lost. Pass --yes to do it anyway; nothing was sent.",
            flow.name()
        );
    }
    let renew_before = reconcile::renew_before(&integration).map_err(as_condition)?;

    let inputs = match (&args.secret_file, &client) {
        (Some(path), _) => {
            let (name, secret) = secret_from_file(path)?;
            if let Some(name) = name.filter(|n| *n != integration.spec.secret_ref.name) {
                eprintln!(
                    "note: {} holds Secret {name:?}; the Integration's spec.secretRef names {:?}",
                    path.display(),
                    integration.spec.secret_ref.name
                );
            }
            resolve::secret_credentials(&secret).map_err(as_condition)?
        }
        (None, Some((client, _))) => {
            let name = &integration.spec.secret_ref.name;
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let secret = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading Secret {namespace}/{name}"))?
                .ok_or_else(|| {
                    as_condition(controller::Error::invalid(
                        Reason::SecretNotFound,
                        format!("input Secret {name:?} does not exist in namespace {namespace:?}"),
                    ))
                })?;
            resolve::secret_credentials(&secret).map_err(as_condition)?
        }
        (None, None) => bail!("give --secret-file or --from-cluster"),
    };

    eprintln!(
        "check: one real exchange with ClusterProvider {} (type {}, {}), flow {}; nothing is written anywhere and values are redacted.",
        config.name,
        cp_spec.provider_type.as_str(),
        hosts(&config),
        flow.name()
    );
    let mut state = providers::MemoryState::default();
    let retry = integration.annotations().get(reconcile::RETRY_ANNOTATION).cloned();
    let now = Timestamp::now();
    let request = ExchangeRequest {
        priority: Priority::Urgent,
        state_key: None,
        provider: &config,
        flow: &flow,
        inputs: &inputs,
        persisted: &Credentials::default(),
        // A workstation check has no cluster to ask.
        first_claimant: None,
        identity: &identity,
        retry_requested: retry.as_deref(),
        recorded_id: None,
        recorded_awaiting: None,
        reported_id: None,
        now,
    };
    // The same classification the controller makes of a driver error.
    let failed = |e: DriverError| {
        let error = Box::new(e.located(&config, flow.name()));
        as_condition(if error.holds_inputs() {
            controller::Error::Refused {
                error,
                hold: String::new(),
            }
        } else {
            controller::Error::Driver(error)
        })
    };
    let finished = providers::run_exchange(driver.as_ref(), &request, &mut state)
        .await
        .map_err(failed)?;
    let answered = Timestamp::now();
    match finished.outcome {
        Outcome::Issued(issued) => {
            providers::check_issued(&issued.fields).map_err(failed)?;
            let fields = finished.persisted.updated(&issued.fields, &[]);
            // As the reconcile schedules it: before expiry, or a
            // revalidation interval after the answer. (With other
            // renewals scheduled, the operator may take a less busy place
            // in the same span: `schedule::renew_at_least_loaded`.)
            let renew_at = match issued.expires_at {
                Some(expires_at) => schedule::renew_at(now, expires_at, renew_before, &identity),
                None => {
                    answered
                        + jiff::SignedDuration::try_from(config.revalidate_interval)
                            .unwrap_or(jiff::SignedDuration::from_secs(3600))
                }
            };
            let report = Report {
                secret: format!("{namespace}/{}", output::target_name(&integration)),
                fields: &fields,
                expires_at: issued.expires_at,
                expiry_assumed: issued.lifetime_defaulted,
                renew_at,
                provider_id: issued.provider_id.as_deref(),
                warning: issued.warning.as_ref().map(|(r, m)| (*r, m.as_str())),
                created: creates_at_provider(&flow).is_some(),
            };
            print!("{}", report.render(Timestamp::now()));
        }
        Outcome::Pending { reason, message, .. } => {
            println!("The exchange is waiting for someone outside the cluster; the operator would set Ready=False:");
            println!("  reason:  {reason}");
            println!("  message: {}", show::one_line(&providers::sanitize_message(&message)));
            println!("No Secret would be written yet.");
        }
        Outcome::Persist { .. } => unreachable!("run_exchange applies every persist"),
    }
    Ok(())
}

/// A failure as the operator would put it in the Ready condition.
fn as_condition(err: controller::Error) -> anyhow::Error {
    anyhow!(
        "the operator would set Ready=False\n  reason:  {}\n  message: {}",
        err.reason(),
        show::one_line(&providers::sanitize_message(&err.to_string()))
    )
}

/// What a flow creates at the provider on its first exchange, if anything.
pub fn creates_at_provider(flow: &Flow) -> Option<&'static str> {
    match flow {
        Flow::PartnerIntegration { .. } => {
            Some("a SmartRecruiters partner integration (its customer-level credentials are shown only once)")
        }
        Flow::ElementInstance { .. } => Some("an element instance"),
        Flow::Connection {
            integration_id: None, ..
        } => Some("a Kombo connect link"),
        Flow::AuthorizationCode { .. } => Some("an authorization request (a person must consent in a browser)"),
        Flow::ClientCredentials { .. } | Flow::ApiKey | Flow::BasicAuth | Flow::Connection { .. } => None,
    }
}

/// The endpoints an exchange talks to, for the banner: scheme, host, port
/// and path (no user info or query string, which may carry keys).
fn hosts(config: &providers::ProviderConfig) -> String {
    let hosts: std::collections::BTreeSet<String> = [&config.token_url, &config.base_url]
        .into_iter()
        .flatten()
        .map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
        .collect();
    if hosts.is_empty() {
        "no endpoint configured".into()
    } else {
        hosts.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// What `check` prints after a successful exchange (pure).
pub struct Report<'a> {
    /// `namespace/name` of the output Secret.
    pub secret: String,
    pub fields: &'a Credentials,
    pub expires_at: Option<Timestamp>,
    pub expiry_assumed: bool,
    pub renew_at: Timestamp,
    pub provider_id: Option<&'a str>,
    pub warning: Option<(Reason, &'a str)>,
    /// The flow created something at the provider.
    pub created: bool,
}

impl Report<'_> {
    pub fn render(&self, now: Timestamp) -> String {
        let mut out = format!(
            "The operator would write Secret {} with {} keys (values redacted):\n",
            self.secret,
            self.fields.keys().count()
        );
        let rows: Vec<Vec<String>> = self
            .fields
            .iter()
            .map(|(k, v)| {
                vec![
                    show::one_line(k),
                    v.expose_secret().len().to_string(),
                    REDACTED.to_string(),
                ]
            })
            .collect();
        for row in show::table(&["KEY", "LENGTH", "VALUE"], &rows).lines() {
            out.push_str(&format!("  {row}\n"));
        }
        let at = |t: Timestamp| format!("{} ({})", controller::status::rfc3339(t), show::relative(now, t));
        out.push_str(&match self.expires_at {
            Some(t) if self.expiry_assumed => format!(
                "expires:  {} — assumed: the provider gave no lifetime, so the ClusterProvider's defaultTokenLifetime applies\n",
                at(t)
            ),
            Some(t) => format!("expires:  {}\n", at(t)),
            None => "expires:  never (the credentials have no lifetime; they are re-validated)\n".into(),
        });
        out.push_str(&format!("renew at: {}\n", at(self.renew_at)));
        out.push_str(&format!(
            "status.integrationId: {}\n",
            self.provider_id.map_or("-".to_string(), show::one_line)
        ));
        if self.expiry_assumed {
            out.push_str(&format!(
                "Warning {}: the provider did not say when the credentials expire\n",
                Reason::ExpiryNotProvided
            ));
        }
        if let Some((reason, message)) = self.warning {
            out.push_str(&format!("Warning {reason}: {}\n", show::one_line(message)));
        }
        if self.created {
            out.push_str(&format!(
                "Created at the provider{}: check keeps nothing, so remove it there unless you want it.\n",
                self.provider_id
                    .map(|id| format!(" ({})", show::one_line(id)))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// The YAML (or JSON) documents of a file.
fn documents(path: &Path) -> anyhow::Result<Vec<serde_yaml::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        // Location only: a parser message may quote the text, and this
        // file may be a Secret.
        let value = serde::Deserialize::deserialize(doc).map_err(|e: serde_yaml::Error| {
            anyhow!(
                "{} is not valid YAML{}",
                path.display(),
                e.location()
                    .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                    .unwrap_or_default()
            )
        })?;
        if !matches!(value, serde_yaml::Value::Null) {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The one object of `kind` in a manifest file.
fn find_object<T: serde::de::DeserializeOwned>(path: &Path, kind: &str) -> anyhow::Result<T> {
    let mut found: Vec<serde_yaml::Value> = documents(path)?
        .into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .collect();
    match found.len() {
        0 => bail!("{} holds no {kind}", path.display()),
        1 => {
            serde_yaml::from_value(found.remove(0)).with_context(|| format!("{} is not a valid {kind}", path.display()))
        }
        n => bail!(
            "{} holds {n} objects of kind {kind}; give a file with one",
            path.display()
        ),
    }
}

/// The input Secret of a manifest file, `stringData` merged over `data` as
/// the API server does, and its name. Errors name keys, never values.
pub fn secret_from_file(path: &Path) -> anyhow::Result<(Option<String>, Secret)> {
    let mut found: Vec<serde_yaml::Value> = documents(path)?
        .into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Secret"))
        .collect();
    let doc = match found.len() {
        1 => found.remove(0),
        0 => bail!("{} holds no Secret (kind: Secret)", path.display()),
        n => bail!("{} holds {n} Secrets; give a file with one", path.display()),
    };
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(String::from);
    let mut data = BTreeMap::new();
    for (field, base64) in [("data", true), ("stringData", false)] {
        let Some(map) = doc.get(field) else { continue };
        let map = map
            .as_mapping()
            .ok_or_else(|| anyhow!("{}: {field} is not a map of key to value", path.display()))?;
        for (key, value) in map {
            let key = key
                .as_str()
                .ok_or_else(|| anyhow!("{}: a key of {field} is not text", path.display()))?;
            // A number or a boolean would have to be turned back into text,
            // maybe not the text that was meant (`1e3`, `1.50`): refused, as
            // the API server refuses it.
            let text = value
                .as_str()
                .ok_or_else(|| anyhow!("{}: {field}.{key} is not a string; quote its value", path.display()))?;
            let bytes = if base64 {
                let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| anyhow!("{}: data.{key} is not valid base64", path.display()))?
            } else {
                text.as_bytes().to_vec()
            };
            data.insert(key.to_string(), ByteString(bytes));
        }
    }
    Ok((
        name,
        Secret {
            data: Some(data),
            ..Secret::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "s3cr3t-value-never-printed";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn secret_files_merge_string_data_over_base64_data() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(VALUE);
        let f = file(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ndata:\n  client_id: {}\n  client_secret: {encoded}\nstringData:\n  client_id: plain-id\n",
            base64::engine::general_purpose::STANDARD.encode("old-id")
        ));
        let (name, secret) = secret_from_file(f.path()).unwrap();
        assert_eq!(name.as_deref(), Some("creds"));
        let creds = resolve::secret_credentials(&secret).unwrap();
        assert_eq!(creds.get("client_id").unwrap().expose_secret(), "plain-id");
        assert_eq!(creds.get("client_secret").unwrap().expose_secret(), VALUE);
    }

    #[test]
    fn secret_file_errors_name_keys_never_values() {
        for (text, expected) in [
            (
                format!("kind: Secret\ndata:\n  client_secret: '{VALUE}!'\n"),
                "data.client_secret is not valid base64",
            ),
            (
                "kind: Secret\nstringData:\n  api_key: 12345\n".to_string(),
                "stringData.api_key is not a string",
            ),
            (
                format!("kind: Secret\nstringData:\n  k: \"{VALUE}\n"),
                "is not valid YAML",
            ),
            ("kind: ConfigMap\n".to_string(), "holds no Secret"),
        ] {
            let f = file(&text);
            let err = format!("{:#}", secret_from_file(f.path()).unwrap_err());
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains(VALUE), "a value leaked: {err}");
        }
    }

    #[test]
    fn the_report_shows_keys_and_lengths_never_values() {
        let fields = providers::fields([("access_token", VALUE), ("token_type", "Bearer")]);
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let report = Report {
            secret: "team/out".into(),
            fields: &fields,
            expires_at: Some("2026-12-02T11:00:00Z".parse().unwrap()),
            expiry_assumed: false,
            renew_at: "2026-12-02T10:45:00Z".parse().unwrap(),
            provider_id: Some("int-1"),
            warning: None,
            created: false,
        };
        let out = report.render(now);
        assert!(out.contains("Secret team/out with 2 keys"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["access_token", &VALUE.len().to_string(), REDACTED]),
            "{out}"
        );
        assert!(out.contains("expires:  2026-12-02T11:00:00Z (in 60m)"), "{out}");
        assert!(out.contains("renew at: 2026-12-02T10:45:00Z (in 45m)"), "{out}");
        assert!(out.contains("status.integrationId: int-1"), "{out}");
        assert!(!out.contains(VALUE) && !out.contains("Bearer"), "{out}");
    }

    #[test]
    fn only_flows_that_create_something_need_yes() {
        assert!(creates_at_provider(&Flow::ApiKey).is_none());
        assert!(
            creates_at_provider(&Flow::ClientCredentials {
                scopes: vec![],
                audience: None
            })
            .is_none()
        );
        assert!(
            creates_at_provider(&Flow::PartnerIntegration {
                app_id: "a".into(),
                company_id: "c".into(),
                bidirectional: false
            })
            .is_some()
        );
    }
}
