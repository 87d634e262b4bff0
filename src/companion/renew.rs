//! `renew NAME`: asks the operator for a new exchange now, by setting the
//! `integration-operator.io/renew-now` annotation to the current time (a
//! value the operator has not answered yet); with `--wait`, waits for the
//! answer (`status.renewNowAnswered` equal to that value) or a failure.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{ClusterArgs, FIELD_MANAGER, explain, hints, show};
use crate::{
    controller::{
        plan::RENEW_NOW_MIN_INTERVAL,
        reconcile::RENEW_NOW_ANNOTATION,
        schedule::parse_duration,
        status::{ready_condition, rfc3339_millis},
    },
    crd::Integration,
    providers::human_duration,
};

/// How often `--wait` looks at the Integration.
const POLL: Duration = Duration::from_millis(250);

/// Flags of `renew`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Integration.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Wait until the operator answered the request, and print the outcome.
    #[arg(long)]
    pub wait: bool,
    /// Longest wait with --wait, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let api: Api<Integration> = Api::namespaced(client.clone(), &namespace);
    let name = &args.name;
    // Events that exist before the request are not its outcome.
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let earlier: BTreeSet<String> = explain::events_about(&events, name, None)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.metadata.name)
        .collect();
    // Milliseconds: two requests within a second are still two values.
    let value = rfc3339_millis(Timestamp::now());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(
        name,
        &params,
        &Patch::Merge(json!({"metadata": {"annotations": {RENEW_NOW_ANNOTATION: value}}})),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!("Integration {namespace}/{name} not found"),
        e => anyhow::Error::new(e).context(format!("annotating Integration {namespace}/{name}")),
    })?;
    println!("integration {namespace}/{name}: set {RENEW_NOW_ANNOTATION}={value}");
    println!(
        "The operator exchanges the credentials again at once; it caps renew-now at one exchange per {} per Integration (a request inside that window is answered when it ends).",
        human_duration(RENEW_NOW_MIN_INTERVAL)
    );
    if !args.wait {
        return Ok(());
    }
    wait(&api, &events, name, &namespace, &value, &earlier, args.timeout).await
}

/// Waits for the answer to the request `value`: the operator records it in
/// `status.renewNowAnswered` once it exchanged. A failed exchange records
/// nothing there; it publishes a Warning Event, which ends the wait too.
async fn wait(
    api: &Api<Integration>,
    events: &Api<Event>,
    name: &str,
    namespace: &str,
    value: &str,
    earlier: &BTreeSet<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let integration = api
            .get(name)
            .await
            .with_context(|| format!("reading Integration {namespace}/{name}"))?;
        let status = integration.status.as_ref();
        let ready = ready_condition(status);
        if status.and_then(|s| s.renew_now_answered.as_deref()) == Some(value) {
            match ready {
                Some(c) => println!(
                    "renewed: Ready={} {}: {}",
                    c.status,
                    c.reason,
                    show::one_line(&c.message)
                ),
                None => println!("renewed"),
            }
            return Ok(());
        }
        let failures: Vec<Event> = explain::events_about(events, name, integration.metadata.uid.as_deref())
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| e.metadata.name.as_ref().is_some_and(|n| !earlier.contains(n)))
            .collect();
        if let Some(e) = failures.last() {
            let reason = e.reason.clone().unwrap_or_default();
            bail!(
                "the renewal failed: {reason}: {}{}",
                show::one_line(e.note.as_deref().unwrap_or_default()),
                what_to_do(&reason)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            let now = match ready {
                Some(c) => format!(
                    "; Ready={} {}: {}{}",
                    c.status,
                    c.reason,
                    show::one_line(&c.message),
                    what_to_do(&c.reason)
                ),
                None => String::new(),
            };
            bail!(
                "no answer within {} (is the operator running and watching namespace {namespace}?){now}",
                human_duration(timeout)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn what_to_do(reason: &str) -> String {
    hints::hint(reason)
        .map(|h| format!("\nWhat to do: {}", h.what_to_do))
        .unwrap_or_default()
}
