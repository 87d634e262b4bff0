//! `explain NAME`: why an Integration is in its current state — what its
//! spec asks for, every condition, every status field, whether its input
//! and output Secrets exist and which keys they hold (never values), the
//! last Events about it, and what to do, from the Ready reason.

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{Api, ResourceExt, api::ListParams};

use super::{ClusterArgs, hints, show};
use crate::{
    controller::{output, resolve, status::ready_condition},
    crd::{ClusterProvider, Integration},
    providers::Flow,
};

/// How many of the latest Events are shown.
const EVENTS_SHOWN: usize = 10;
/// Longest Event note shown (notes go up to 1,024 bytes).
const NOTE_WIDTH: usize = 240;

/// Flags of `explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Integration.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What `explain` found besides the Integration itself. Each lookup may
/// fail on its own (a team may read its Integrations but not
/// ClusterProviders): a failure is shown in its place, not fatal.
pub struct Findings {
    pub provider: Result<Option<ClusterProvider>, String>,
    pub input: Result<Option<Secret>, String>,
    pub output: Result<Option<Secret>, String>,
    pub events: Result<Vec<Event>, String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let name = &args.name;
    let integrations: Api<Integration> = Api::namespaced(client.clone(), &namespace);
    let integration = integrations
        .get_opt(name)
        .await
        .with_context(|| format!("reading Integration {namespace}/{name}"))?
        .ok_or_else(|| anyhow::anyhow!("Integration {namespace}/{name} not found"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let providers: Api<ClusterProvider> = Api::all(client.clone());
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let text = |e: kube::Error| format!("could not read: {e}");
    let target = output::target_name(&integration);
    let (provider, input, output, events) = tokio::join!(
        providers.get_opt(&integration.spec.provider),
        secrets.get_opt(&integration.spec.secret_ref.name),
        secrets.get_opt(&target),
        events_about(&events, name, integration.metadata.uid.as_deref()),
    );
    let findings = Findings {
        provider: provider.map_err(text),
        input: input.map_err(text),
        output: output.map_err(text),
        events: events.map_err(text),
    };
    print!("{}", render(&integration, &findings, Timestamp::now()));
    Ok(())
}

/// Events regarding the Integration `name` (of this uid, when given: not
/// those of a deleted namesake), oldest first.
pub async fn events_about(api: &Api<Event>, name: &str, uid: Option<&str>) -> Result<Vec<Event>, kube::Error> {
    let params = ListParams::default().fields(&format!("regarding.kind=Integration,regarding.name={name}"));
    let mut events: Vec<Event> = api
        .list(&params)
        .await?
        .items
        .into_iter()
        // The field selector already does this; a server that ignores it
        // must not mix in other objects' Events.
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Integration")
                    && r.name.as_deref() == Some(name)
                    && (uid.is_none() || r.uid.is_none() || r.uid.as_deref() == uid)
            })
        })
        .collect();
    events.sort_by_key(event_time);
    Ok(events)
}

/// When an Event happened: its latest occurrence where it has a series.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The whole report (pure).
pub fn render(integration: &Integration, found: &Findings, now: Timestamp) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let spec = &integration.spec;
    line(format!(
        "Integration {}/{}",
        integration.namespace().unwrap_or_default(),
        integration.name_any()
    ));
    line(format!(
        "  Provider:       {}",
        provider_summary(&spec.provider, &found.provider)
    ));
    line(format!("  Flow:           {}", flow_summary(integration)));
    line(format!(
        "  Input Secret:   {}",
        secret_summary(&spec.secret_ref.name, &found.input, None)
    ));
    line(format!(
        "  Output Secret:  {}",
        secret_summary(&output::target_name(integration), &found.output, Some(integration))
    ));

    line(String::new());
    line("Status:".into());
    let status = integration.status.clone().unwrap_or_default();
    // Every field the status has, whatever fields it gains later:
    // serialised, not listed by hand (conditions get their own section).
    let fields = serde_json::to_value(&status).unwrap_or_default();
    let mut shown = 0;
    for (key, value) in fields.as_object().into_iter().flatten() {
        if key == "conditions" {
            continue;
        }
        let text = match value {
            serde_json::Value::String(s) => show::time_and_relative(now, s),
            other => other.to_string(),
        };
        let note = match key.as_str() {
            "observedGeneration" if status.observed_generation != integration.metadata.generation => format!(
                "  (the spec is at generation {}: the operator has not acted on the latest change yet)",
                integration.metadata.generation.unwrap_or_default()
            ),
            "refusedInputs" => "  (the provider refused the current inputs; they are not sent again until they change or integration-operator.io/retry is set to a new value)".into(),
            _ => String::new(),
        };
        line(format!("  {key}: {}{note}", show::one_line(&text)));
        shown += 1;
    }
    if let Some(asked) = integration
        .annotations()
        .get(crate::controller::reconcile::RENEW_NOW_ANNOTATION)
        && status.renew_now_answered.as_ref() != Some(asked)
    {
        line(format!(
            "  renew-now requested ({}) and not answered yet",
            show::one_line(asked)
        ));
        shown += 1;
    }
    if shown == 0 {
        line("  (none: the operator has not written a status)".into());
    }

    line(String::new());
    line("Conditions:".into());
    if status.conditions.is_empty() {
        line("  (none)".into());
    }
    for c in &status.conditions {
        line(format!(
            "  {}={}  {}  (since {})",
            c.type_,
            c.status,
            c.reason,
            show::ago(now, c.last_transition_time.0)
        ));
        if !c.message.is_empty() {
            line(format!("    {}", show::one_line(&c.message)));
        }
    }

    line(String::new());
    match &found.events {
        Ok(events) if events.is_empty() => line("Events: none".into()),
        Ok(events) => {
            line(format!(
                "Events (last {}, oldest first):",
                events.len().min(EVENTS_SHOWN)
            ));
            let rows: Vec<Vec<String>> = events
                .iter()
                .skip(events.len().saturating_sub(EVENTS_SHOWN))
                .map(|e| {
                    vec![
                        event_time(e).map_or("?".into(), |t| show::ago(now, t)),
                        e.type_.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        show::truncate(&show::one_line(e.note.as_deref().unwrap_or_default()), NOTE_WIDTH),
                    ]
                })
                .collect();
            for row in show::table(&["AGE", "TYPE", "REASON", "NOTE"], &rows).lines() {
                line(format!("  {row}"));
            }
        }
        Err(e) => line(format!("Events: {e}")),
    }

    line(String::new());
    line(advice(integration));
    out
}

/// The one-line "what to do", from the Ready reason.
fn advice(integration: &Integration) -> String {
    let Some(ready) = ready_condition(integration.status.as_ref()) else {
        return "What to do: the operator has not looked at this Integration yet; check that it runs and watches this namespace (its --watch-namespaces).".into();
    };
    match hints::hint(&ready.reason) {
        Some(h) => format!("Ready: {} — {}\nWhat to do: {}", ready.reason, h.meaning, h.what_to_do),
        None => format!(
            "Ready: {} (a reason this version does not document): read the condition message above.",
            ready.reason
        ),
    }
}

fn provider_summary(name: &str, found: &Result<Option<ClusterProvider>, String>) -> String {
    match found {
        Ok(Some(cp)) => {
            let s = &cp.spec;
            let mut parts = vec![format!("type {}", s.provider_type.as_str())];
            if let Some(u) = &s.token_url {
                parts.push(format!("tokenUrl {u}"));
            }
            if let Some(u) = &s.base_url {
                parts.push(format!("baseUrl {u}"));
            }
            format!("ClusterProvider {name} ({})", show::one_line(&parts.join(", ")))
        }
        Ok(None) => format!("ClusterProvider {name} — does not exist"),
        Err(e) => format!("ClusterProvider {name} — {}", show::one_line(e)),
    }
}

/// The flow and its non-secret parameters.
fn flow_summary(integration: &Integration) -> String {
    let flow = match resolve::flow_of(integration) {
        Ok(flow) => flow,
        Err(e) => return format!("? ({e})"),
    };
    let detail = match &flow {
        Flow::ClientCredentials { scopes, audience } => {
            let mut d = Vec::new();
            if !scopes.is_empty() {
                d.push(format!("scopes: {}", scopes.join(" ")));
            }
            if let Some(a) = audience {
                d.push(format!("audience: {a}"));
            }
            d.join("; ")
        }
        Flow::ApiKey | Flow::BasicAuth => String::new(),
        Flow::PartnerIntegration { app_id, company_id, .. } => format!("appId {app_id}, companyId {company_id}"),
        Flow::ElementInstance {
            element_key,
            instance_name,
            ..
        } => format!("element {element_key}, instance {instance_name}"),
        Flow::Connection { integration_id, .. } => match integration_id {
            Some(id) => format!("integrationId {id}"),
            None => "through a connect link".into(),
        },
        Flow::AuthorizationCode { scopes, .. } if !scopes.is_empty() => format!("scopes: {}", scopes.join(" ")),
        Flow::AuthorizationCode { .. } => String::new(),
    };
    if detail.is_empty() {
        flow.name().to_string()
    } else {
        show::one_line(&format!("{} ({detail})", flow.name()))
    }
}

/// Whether a Secret exists and which keys it holds. Only the key names are
/// taken from it.
fn secret_summary(name: &str, found: &Result<Option<Secret>, String>, owner: Option<&Integration>) -> String {
    match found {
        Ok(Some(secret)) => {
            let keys: Vec<&str> = secret.data.iter().flatten().map(|(k, _)| k.as_str()).collect();
            let owned = match owner {
                Some(i) if output::is_owned_by(&secret.metadata, i) => ", owned by this Integration",
                Some(_) => ", NOT owned by this Integration (the operator will not write it)",
                None => "",
            };
            let keys = if keys.is_empty() {
                "no keys".to_string()
            } else {
                format!("keys: {}", keys.join(", "))
            };
            show::one_line(&format!("{name} — exists{owned}; {keys}"))
        }
        Ok(None) => format!("{name} — does not exist"),
        Err(e) => format!("{name} — {}", show::one_line(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IntegrationSpec, IntegrationStatus, SecretReference};
    use k8s_openapi::{
        ByteString,
        api::core::v1::ObjectReference,
        apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time},
    };

    const VALUE: &str = "value-that-must-not-show-4d1c";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn failing() -> Integration {
        let mut i = Integration::new(
            "api",
            IntegrationSpec {
                provider: "auth".into(),
                secret_ref: SecretReference { name: "creds".into() },
                client_credentials: Some(Box::default()),
                ..IntegrationSpec::default()
            },
        );
        i.metadata.namespace = Some("team".into());
        i.metadata.generation = Some(2);
        i.status = Some(IntegrationStatus {
            observed_generation: Some(2),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "ReauthRequired".into(),
                message: "the provider refused the credentials: HTTP 401".into(),
                last_transition_time: Time(at("2026-12-02T09:58:00Z")),
                observed_generation: Some(2),
            }],
            expires_at: Some("2026-12-02T10:30:00Z".into()),
            refused_inputs: Some("ab12".into()),
            ..IntegrationStatus::default()
        });
        i
    }

    fn secret(keys: &[&str]) -> Secret {
        Secret {
            metadata: ObjectMeta::default(),
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(VALUE.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn event(reason: &str, at_: &str) -> Event {
        Event {
            type_: Some("Warning".into()),
            reason: Some(reason.into()),
            note: Some(format!("{reason} note")),
            event_time: Some(MicroTime(at(at_))),
            regarding: Some(ObjectReference::default()),
            ..Event::default()
        }
    }

    #[test]
    fn the_report_says_what_happened_and_what_to_do_without_values() {
        let now = at("2026-12-02T10:00:00Z");
        let found = Findings {
            provider: Err("could not read: forbidden".into()),
            input: Ok(Some(secret(&["client_id", "client_secret"]))),
            output: Ok(None),
            events: Ok((0..12)
                .map(|n| event(&format!("R{n}"), &format!("2026-12-02T09:{:02}:00Z", 40 + n)))
                .collect()),
        };
        let out = render(&failing(), &found, now);
        assert!(out.contains("Flow:           clientCredentials"), "{out}");
        assert!(out.contains("creds — exists; keys: client_id, client_secret"), "{out}");
        assert!(out.contains("Output Secret:  api — does not exist"), "{out}");
        assert!(
            out.contains("ClusterProvider auth — could not read: forbidden"),
            "{out}"
        );
        assert!(out.contains("expiresAt: 2026-12-02T10:30:00Z (in 30m)"), "{out}");
        assert!(out.contains("refusedInputs: ab12  (the provider refused"), "{out}");
        assert!(out.contains("Ready=False  ReauthRequired  (since 2m ago)"), "{out}");
        assert!(
            out.contains("    the provider refused the credentials: HTTP 401"),
            "{out}"
        );
        // The last ten Events, oldest first.
        assert!(out.contains("Events (last 10, oldest first):"), "{out}");
        assert!(
            !out.contains("R1 ") && out.contains("R2 ") && out.contains("R11 "),
            "{out}"
        );
        assert!(out.find("R2 ").unwrap() < out.find("R11 ").unwrap());
        assert!(
            out.contains("What to do: put working credentials into the input Secret"),
            "{out}"
        );
        assert!(!out.contains(VALUE), "a Secret value was shown:\n{out}");
    }

    #[test]
    fn an_integration_never_looked_at_says_so() {
        let mut i = failing();
        i.status = None;
        let found = Findings {
            provider: Ok(None),
            input: Ok(None),
            output: Ok(None),
            events: Ok(vec![]),
        };
        let out = render(&i, &found, at("2026-12-02T10:00:00Z"));
        assert!(out.contains("ClusterProvider auth — does not exist"), "{out}");
        assert!(out.contains("(none: the operator has not written a status)"), "{out}");
        assert!(out.contains("Events: none"), "{out}");
        assert!(
            out.contains("the operator has not looked at this Integration yet"),
            "{out}"
        );
    }
}
