//! The operator end to end with the `kombo` driver's `connection` flow: the
//! real controller over real HTTP, against the Kubernetes API emulator and the
//! Kombo simulator, with the test playing the customer who completes (or
//! ignores) the connect link.

mod common;

use std::time::Duration;

use common::{Cluster, eventually, logs};
use integration_operator::crd::Integration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use testkit::sim::{
    Fault,
    kombo::{KomboSim, routes},
};

/// Canaries: they must never appear in a log line, an Event or a status.
const API_KEY: &str = "canary-kombo-api-key-5e1d7b2a";
const ROTATED_KEY: &str = "canary-kombo-api-key-rotated-93c4f0";
const NAME: &str = "acme-kombo";
const OUTPUT: &str = "acme-kombo-credentials";

async fn setup(revalidate: &str) -> (Cluster, KomboSim) {
    let cluster = Cluster::start().await;
    let sim = KomboSim::start().await.expect("simulator starts");
    sim.add_api_key(API_KEY);
    cluster
        .cluster_provider(
            "kombo",
            json!({"type": "kombo", "baseUrl": sim.base_url(), "revalidateInterval": revalidate}),
        )
        .await;
    cluster.input_secret("kombo-api-key", &[("api_key", API_KEY)]).await;
    (cluster, sim)
}

fn spec(extra: serde_json::Value) -> serde_json::Value {
    let mut connection = json!({
        "endUserEmail": "it-admin@acme.example",
        "endUserOrganizationName": "ACME Inc.",
        "integrationCategory": "ATS",
        "integrationTool": "smartrecruiters",
    });
    if let (Some(c), serde_json::Value::Object(e)) = (connection.as_object_mut(), extra) {
        c.extend(e);
    }
    json!({
        "provider": "kombo",
        "secretRef": {"name": "kombo-api-key"},
        "connection": connection,
        "target": {"name": OUTPUT},
    })
}

fn ready(i: &Integration) -> Condition {
    i.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .expect("a Ready condition")
}

/// What an application does with the output Secret: a Kombo data call with
/// both headers, to the published base URL. Returns the HTTP status.
async fn app_call(cluster: &Cluster) -> u16 {
    let data = cluster.secret_data(OUTPUT).await.expect("output Secret exists");
    reqwest::Client::new()
        .get(format!("{}/ats/jobs", data["base_url"]))
        .header(data["header_name"].as_str(), data["header_value"].as_str())
        .header(data["extra_header_name"].as_str(), data["extra_header_value"].as_str())
        .send()
        .await
        .expect("simulator answers")
        .status()
        .as_u16()
}

/// Waits for the connect link and returns it, checking it is published in
/// status (Ready=False AwaitingConnection) and as an Event.
async fn published_link(cluster: &Cluster, sim: &KomboSim, nth: usize) -> String {
    let link = eventually(Duration::from_secs(20), "a connect link", || async {
        sim.links().get(nth).map(|l| l.url.clone())
    })
    .await;
    let i = eventually(Duration::from_secs(20), "the link in the Ready condition", || async {
        let i = cluster.integrations().get(NAME).await.ok()?;
        // The link can reach the simulator before the status that shows it is written.
        let c = i
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (c.status == "False" && c.reason == "AwaitingConnection" && c.message.contains(&link)).then_some(i)
    })
    .await;
    assert!(
        ready(&i).message.contains("it-admin@acme.example"),
        "{}",
        ready(&i).message
    );
    // Read by people: a time in whole seconds, as a valid RFC 3339 instant.
    let valid_until = ready(&i)
        .message
        .split("(valid until ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no expiry in {:?}", ready(&i).message));
    let at: jiff::Timestamp = valid_until.parse().expect("an RFC 3339 time");
    assert_eq!(at.subsec_nanosecond(), 0, "{valid_until}");
    assert!(!valid_until.contains('.'), "{valid_until}");
    if nth > 0 {
        // kube-runtime's Recorder folds an Event with the same reason into
        // the earlier one's series for 6 minutes, keeping the first note; a
        // replacement link comes an hour after the first (links live one
        // hour), here within seconds: only the status can be checked.
        return link;
    }
    eventually(Duration::from_secs(10), "the link in an Event", || async {
        cluster
            .events_text()
            .await
            .lines()
            .any(|l| l.starts_with("Normal AwaitingConnection") && l.contains(&link))
            .then_some(())
    })
    .await;
    link
}

async fn annotate_retry(cluster: &Cluster, value: &str) {
    cluster
        .integrations()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"integration-operator.io/retry": value}}})),
        )
        .await
        .expect("annotation set");
}

/// The value a condition message asks to set the retry annotation to.
fn retry_value(message: &str) -> String {
    message
        .split("integration-operator.io/retry=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the message does not say how to retry: {message}"))
        .to_string()
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in [API_KEY, ROTATED_KEY] {
        assert!(!text.contains(canary), "an API key appeared in {what}");
    }
}

async fn assert_no_secret_anywhere(cluster: &Cluster) {
    assert_no_canary("logs", &logs());
    assert_no_canary("events", &cluster.events_text().await);
    assert_no_canary("status", &cluster.integration_yaml(NAME).await);
}

#[tokio::test]
async fn connect_link_is_published_polled_with_backoff_and_completion_issues_working_credentials() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;

    let link = published_link(&cluster, &sim, 0).await;
    let request = &sim.links()[0].request;
    let uid = cluster.integrations().get(NAME).await.unwrap().metadata.uid.unwrap();
    assert_eq!(
        request["end_user_origin_id"],
        json!(uid),
        "the link is keyed on the Integration"
    );
    assert_eq!(request["integration_tool"], json!("smartrecruiters"));
    assert_eq!(request["end_user_email"], json!("it-admin@acme.example"));

    // While the customer takes their time, the operator polls with growing gaps.
    let polls = eventually(Duration::from_secs(20), "five polls of the link", || async {
        let t = sim.call_times(routes::INTEGRATION_BY_TOKEN);
        (t.len() >= 5).then_some(t)
    })
    .await;
    let first_gap = polls[1] - polls[0];
    let later_gap = polls[4] - polls[3];
    assert!(
        later_gap.as_secs_f64() >= 1.6 * first_gap.as_secs_f64(),
        "polling does not back off: first gap {first_gap:?}, fifth {later_gap:?}"
    );
    assert!(polls.len() <= 6, "{} polls within a few seconds", polls.len());
    assert_eq!(sim.calls(routes::CREATE_LINK), 1, "one link, never a second");
    assert_eq!(sim.calls(routes::CHECK_API_KEY), 1);

    // The customer connects: the credentials appear and work.
    let id = sim.complete_link(&link, "smartrecruiters").expect("link completes");
    let i = cluster.wait_ready(NAME, "True", Some("Issued")).await;
    assert_eq!(i.status.unwrap().integration_id.as_deref(), Some(id.as_str()));
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(data["header_name"], "Authorization");
    assert_eq!(data["header_value"], format!("Bearer {API_KEY}"));
    assert_eq!(data["authorization"], format!("Bearer {API_KEY}"));
    assert_eq!(data["extra_header_name"], "X-Integration-Id");
    assert_eq!(data["extra_header_value"], id);
    assert_eq!(data["integration_id"], id);
    assert_eq!(data["base_url"], sim.base_url());
    assert!(
        !data.keys().any(|k| k.starts_with("connect_link")),
        "the used link stays in the Secret: {:?}",
        data.keys()
    );
    assert_eq!(app_call(&cluster).await, 200, "the application's Kombo call fails");
    assert_eq!(sim.calls(routes::CREATE_LINK), 1);
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn expired_link_is_reported_and_only_the_retry_annotation_creates_a_new_one() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let link = published_link(&cluster, &sim, 0).await;

    sim.expire_link(&link);
    let i = cluster.wait_ready(NAME, "False", Some("ConnectLinkExpired")).await;
    let message = ready(&i).message;
    assert!(message.contains("Kombo connect link"), "{message}");
    let value = retry_value(&message);
    // The operator keeps looking, but never mints a link on its own.
    let polls = sim.calls(routes::INTEGRATION_BY_TOKEN);
    eventually(Duration::from_secs(20), "another look at the expired link", || async {
        (sim.calls(routes::INTEGRATION_BY_TOKEN) > polls).then_some(())
    })
    .await;
    assert_eq!(sim.links().len(), 1, "a new link was created without being asked");
    assert!(cluster.events_with_reason("ConnectLinkExpired").await >= 1);

    annotate_retry(&cluster, &value).await;
    let new_link = published_link(&cluster, &sim, 1).await;
    assert_ne!(new_link, link);
    sim.complete_link(&new_link, "smartrecruiters")
        .expect("new link completes");
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(app_call(&cluster).await, 200);
    // The annotation still names the old link: no third one.
    assert_eq!(sim.links().len(), 2);
    operator.stop().await;
}

#[tokio::test]
async fn each_kombo_integration_state_maps_to_a_condition() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let link = published_link(&cluster, &sim, 0).await;
    let id = sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.wait_ready(NAME, "True", None).await;
    let good = cluster.secret_data(OUTPUT).await.unwrap();

    for (status, setup, reason, words) in [
        ("ACTIVE", "INCOMPLETE", "IntegrationSetupIncomplete", "setup"),
        ("ACTIVE", "FINAL_SYNC_PENDING", "IntegrationSyncPending", "sync"),
        ("INVALID", "COMPLETED", "IntegrationInvalid", "reconnect"),
        ("INACTIVE", "COMPLETED", "IntegrationInactive", "Enable it"),
    ] {
        sim.set_integration_state(&id, status, setup);
        let i = cluster.wait_ready(NAME, "False", Some(reason)).await;
        let message = ready(&i).message;
        assert!(
            message.contains(&id) && message.contains("Kombo") && message.contains(words),
            "{status}/{setup}: {message}"
        );
        assert_eq!(
            cluster.secret_data(OUTPUT).await.unwrap(),
            good,
            "the Secret changed while the integration was {status}/{setup}"
        );
    }
    sim.set_integration_state(&id, "ACTIVE", "COMPLETED");
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(app_call(&cluster).await, 200);

    // Deleted in the Kombo dashboard: reported, and the customer can be
    // asked to connect again.
    sim.delete_in_dashboard(&id);
    let i = cluster.wait_ready(NAME, "False", Some("IntegrationNotFound")).await;
    let message = ready(&i).message;
    assert!(message.contains(&id), "{message}");
    annotate_retry(&cluster, &retry_value(&message)).await;
    let new_link = published_link(&cluster, &sim, 1).await;
    let new_id = sim.complete_link(&new_link, "smartrecruiters").unwrap();
    eventually(Duration::from_secs(20), "the new integration published", || async {
        let data = cluster.secret_data(OUTPUT).await?;
        (data.get("integration_id") == Some(&new_id)).then_some(())
    })
    .await;
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(app_call(&cluster).await, 200);
    operator.stop().await;
}

#[tokio::test]
async fn refused_api_key_needs_reauth_naming_kombo_and_the_step() {
    let (cluster, sim) = setup("1s").await;
    sim.revoke_api_key(API_KEY);
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;

    // Before a link: the key check fails, and no link is created with it.
    let i = cluster.wait_ready(NAME, "False", Some("ReauthRequired")).await;
    let message = ready(&i).message;
    for words in ["Kombo refused the API key", "GET /check-api-key", "api_key"] {
        assert!(message.contains(words), "{words:?} missing: {message}");
    }
    assert_eq!(sim.calls(routes::CREATE_LINK), 0);
    assert!(cluster.events_with_reason("ReauthRequired").await >= 1);

    // The key is fixed; the link is completed; then the key is revoked.
    sim.add_api_key(API_KEY);
    let link = published_link(&cluster, &sim, 0).await;
    sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.wait_ready(NAME, "True", None).await;
    sim.revoke_api_key(API_KEY);
    let i = cluster.wait_ready(NAME, "False", Some("ReauthRequired")).await;
    let message = ready(&i).message;
    for words in ["Kombo refused the API key", "GET /integrations/"] {
        assert!(message.contains(words), "{words:?} missing: {message}");
    }

    // A new key in the input Secret recovers it.
    sim.add_api_key(ROTATED_KEY);
    cluster
        .patch_secret_strings("kombo-api-key", json!({"api_key": ROTATED_KEY}))
        .await;
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(
        cluster.secret_data(OUTPUT).await.unwrap()["header_value"],
        format!("Bearer {ROTATED_KEY}")
    );
    assert_eq!(app_call(&cluster).await, 200);
    assert_eq!(sim.links().len(), 1, "a new key must not mean a new connection");
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn kombo_failures_are_reported_with_the_step_and_never_create_a_second_link() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    // Consecutive cases have different reasons, so each wait sees its own.
    let cases: Vec<(Fault, &str, &str)> = vec![
        (Fault::status(503), "ProviderUnavailable", "POST /connect/create-link"),
        (Fault::status(403), "PermissionDenied", "POST /connect/create-link"),
        (Fault::Malformed, "MalformedResponse", "POST /connect/create-link"),
        (Fault::status(409), "ProviderConflict", "POST /connect/create-link"),
        (Fault::Truncated, "MalformedResponse", "POST /connect/create-link"),
        (Fault::status(429), "ProviderRateLimited", "POST /connect/create-link"),
        (
            Fault::Delay(Duration::from_secs(3)),
            "ProviderTimeout",
            "POST /connect/create-link",
        ),
        (Fault::status(500), "ProviderUnavailable", "POST /connect/create-link"),
    ];
    sim.fail_next(routes::CREATE_LINK, usize::MAX, cases[0].0.clone());
    cluster.integration(NAME, spec(json!({}))).await;
    for (fault, reason, step) in cases {
        sim.clear_faults();
        sim.fail_next(routes::CREATE_LINK, usize::MAX, fault.clone());
        let i = cluster.wait_ready(NAME, "False", Some(reason)).await;
        let message = ready(&i).message;
        assert!(
            message.contains(step) && (step.is_empty() || message.contains("Kombo")),
            "{fault:?}: {message}"
        );
    }
    sim.clear_faults();
    published_link(&cluster, &sim, 0).await;
    assert_eq!(sim.links().len(), 1);
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_rate_limited_poll_waits_at_least_retry_after() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    published_link(&cluster, &sim, 0).await;
    let before = sim.calls(routes::INTEGRATION_BY_TOKEN) as usize;
    sim.fail_next(routes::INTEGRATION_BY_TOKEN, 1, Fault::rate_limited(3));
    cluster.wait_ready(NAME, "False", Some("ProviderRateLimited")).await;
    let times = eventually(Duration::from_secs(20), "a poll after the 429", || async {
        let t = sim.call_times(routes::INTEGRATION_BY_TOKEN);
        let limited = t.iter().skip(before).count() >= 2;
        limited.then_some(t)
    })
    .await;
    let gap = times[before + 1] - times[before];
    assert!(
        gap >= Duration::from_millis(2900),
        "polled again {gap:?} after a Retry-After of 3s"
    );
    cluster.wait_ready(NAME, "False", Some("AwaitingConnection")).await;
    operator.stop().await;
}

#[tokio::test]
async fn deleting_the_integration_deletes_the_kombo_integration() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let link = published_link(&cluster, &sim, 0).await;
    let id = sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.wait_ready(NAME, "True", None).await;

    cluster.delete_integration(NAME).await;
    assert!(sim.integrations().is_empty(), "the Kombo integration was left behind");
    assert_eq!(sim.deleted(), vec![id]);
    assert!(cluster.events_with_reason("CleanedUp").await >= 1);
    operator.stop().await;
}

#[tokio::test]
async fn deleting_while_waiting_removes_an_integration_the_customer_just_created() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let link = published_link(&cluster, &sim, 0).await;
    // The customer finishes; the operator is deleted before or after it noticed.
    let id = sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.delete_integration(NAME).await;
    assert_eq!(
        sim.deleted(),
        vec![id],
        "the customer's new integration was left behind"
    );
    operator.stop().await;
}

#[tokio::test]
async fn retain_keeps_the_kombo_integration() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"deletionPolicy": "Retain"})))
        .await;
    let link = published_link(&cluster, &sim, 0).await;
    let id = sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.wait_ready(NAME, "True", None).await;

    cluster.delete_integration(NAME).await;
    assert!(
        sim.integrations().contains_key(&id),
        "a retained integration was deleted"
    );
    assert_eq!(sim.calls(routes::DELETE_INTEGRATION), 0);
    operator.stop().await;
}

#[tokio::test]
async fn a_failing_delete_is_retried_and_reported_never_dropped() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let link = published_link(&cluster, &sim, 0).await;
    let id = sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.wait_ready(NAME, "True", None).await;

    sim.fail_next(routes::DELETE_INTEGRATION, usize::MAX, Fault::status(503));
    cluster
        .integrations()
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    let i = cluster.wait_ready(NAME, "False", Some("CleanupFailed")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("Kombo") && message.contains(&format!("DELETE /integrations/{id}")),
        "{message}"
    );
    assert!(i.metadata.deletion_timestamp.is_some());
    eventually(Duration::from_secs(20), "the DELETE retried", || async {
        (sim.calls(routes::DELETE_INTEGRATION) >= 2).then_some(())
    })
    .await;
    cluster.assert_cleanup_held(NAME).await;
    assert!(sim.integrations().contains_key(&id));

    sim.clear_faults();
    cluster.wait_gone(NAME).await;
    assert_eq!(sim.deleted(), vec![id]);
    operator.stop().await;
}

#[tokio::test]
async fn an_existing_integration_id_is_validated_and_never_deleted() {
    let (cluster, sim) = setup("1h").await;
    sim.set_auto_complete(Some("personio"));
    // Someone connected the customer earlier (another Integration, the dashboard).
    let other = KomboLinkMaker::make(&sim).await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({"integrationId": other}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(sim.links().len(), 1, "no link for an existing integration");
    assert_eq!(app_call(&cluster).await, 200);
    cluster.delete_integration(NAME).await;
    assert!(sim.integrations().contains_key(&other));
    operator.stop().await;
}

/// Creates an integration the way someone else would: a link of their own,
/// completed by the simulator's auto-complete mode.
struct KomboLinkMaker;

impl KomboLinkMaker {
    async fn make(sim: &KomboSim) -> String {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/connect/create-link", sim.base_url()))
            .bearer_auth(API_KEY)
            .json(&json!({"end_user_email": "x@acme.example", "end_user_organization_name": "ACME"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success");
        sim.links()[0].integration_id.clone().expect("auto-completed")
    }
}
