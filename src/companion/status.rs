//! `status`: one line per Integration — provider, flow, readiness, expiry,
//! and for the ones that are not ready, why (the Ready message, cut short).

use anyhow::Context as _;
use jiff::Timestamp;
use kube::{Api, ResourceExt, api::ListParams};

use super::{ClusterArgs, show};
use crate::{
    controller::{resolve, status::ready_condition},
    crd::Integration,
};

/// Longest Ready message shown in the table; `explain` shows all of it.
const MESSAGE_WIDTH: usize = 80;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Integrations of every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// Lists the Integrations and prints the table. Exits 0 whatever their
/// state: a failing Integration is news, not a failure of the command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let api: Api<Integration> = if args.all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, &namespace)
    };
    let where_ = if args.all_namespaces {
        "any namespace".to_string()
    } else {
        format!("namespace {namespace}")
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing Integrations in {where_}"))?
        .items;
    if items.is_empty() {
        // As kubectl says it: on stderr, so a script reading stdout sees no rows.
        eprintln!("No Integrations found in {where_}.");
        return Ok(());
    }
    items.sort_by_key(|i| (i.namespace(), i.name_any()));
    print!("{}", render(&items, args.all_namespaces, Timestamp::now()));
    Ok(())
}

/// The table (pure).
pub fn render(items: &[Integration], with_namespace: bool, now: Timestamp) -> String {
    let mut headers = vec!["NAME", "PROVIDER", "FLOW", "READY", "REASON", "EXPIRES", "MESSAGE"];
    if with_namespace {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let ready = ready_condition(i.status.as_ref());
            let status = ready.map_or("Unknown", |c| c.status.as_str());
            let reason = ready
                .map(|c| c.reason.as_str())
                .filter(|r| !r.is_empty())
                .unwrap_or("-");
            let message = match ready {
                Some(c) if c.status == "True" => String::new(),
                Some(c) => show::truncate(&show::one_line(&c.message), MESSAGE_WIDTH),
                None => "not looked at by the operator yet".to_string(),
            };
            let mut row = vec![
                i.name_any(),
                i.spec.provider.clone(),
                flow_name(i).to_string(),
                status.to_string(),
                reason.to_string(),
                show::expiry(now, i.status.as_ref().and_then(|s| s.expires_at.as_deref())),
                message,
            ];
            if with_namespace {
                row.insert(0, i.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    show::table(&headers, &rows)
}

/// The flow block the spec sets, as the operator names it (`?` when the
/// spec does not set exactly one).
pub fn flow_name(i: &Integration) -> &'static str {
    resolve::flow_of(i).map_or("?", |f| f.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IntegrationSpec, IntegrationStatus, SecretReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn integration(name: &str, ready: Option<(&str, &str, &str)>, expires: Option<&str>) -> Integration {
        let mut i = Integration::new(
            name,
            IntegrationSpec {
                provider: "auth".into(),
                secret_ref: SecretReference { name: "in".into() },
                client_credentials: Some(Box::default()),
                ..IntegrationSpec::default()
            },
        );
        i.metadata.namespace = Some("team".into());
        i.status = Some(IntegrationStatus {
            conditions: ready
                .map(|(status, reason, message)| Condition {
                    type_: "Ready".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message: message.into(),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            expires_at: expires.map(String::from),
            ..IntegrationStatus::default()
        });
        i
    }

    #[test]
    fn rows_show_readiness_expiry_and_why_not_ready() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let mut failing = integration(
            "broken",
            Some(("False", "ReauthRequired", &format!("refused\n{}", "x".repeat(200)))),
            Some("2026-12-02T09:57:00Z"),
        );
        failing.spec.client_credentials = None;
        failing.spec.api_key = Some(Box::default());
        let items = [
            integration("api", Some(("True", "Issued", "valid")), Some("2026-12-02T10:12:00Z")),
            failing,
            integration("new", None, None),
        ];
        let out = render(&items, false, now);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME ") && lines[0].ends_with("MESSAGE"), "{out}");
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[1]),
            ["api", "auth", "clientCredentials", "True", "Issued", "in", "12m"]
        );
        let broken = cells(lines[2]);
        assert_eq!(
            broken[..8],
            [
                "broken",
                "auth",
                "apiKey",
                "False",
                "ReauthRequired",
                "expired",
                "3m",
                "ago"
            ]
        );
        assert!(lines[2].ends_with('…') && lines[2].contains("refused x"), "{out}");
        assert!(
            lines[3].contains("Unknown") && lines[3].contains("not looked at"),
            "{out}"
        );
        // The Ready one has no message: its valid-until text would only repeat EXPIRES.
        assert!(!lines[1].contains("valid"));

        let all = render(&items[..1], true, now);
        assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
        assert!(all.lines().nth(1).unwrap().starts_with("team "), "{all}");
    }
}
