//! The operator end to end with the `kombo` driver's `connection` flow: the
//! real controller over real HTTP, against the real kube-apiserver (testkit's
//! control plane) and the Kombo simulator, with the test playing the customer
//! who completes (or ignores) the connect link and the admin who finishes the
//! connection.

use std::time::Duration;

use crate::common::{Cluster, eventually, ready};
use integration_operator::crd::Integration;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
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
        .split("valid until ")
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
        // replacement link comes after the first expired, here within
        // seconds: only the status can be checked.
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

async fn assert_no_secret_anywhere(cluster: &Cluster) {
    cluster.assert_nowhere(NAME, &[API_KEY, ROTATED_KEY]).await;
}

/// The time a condition message says the link is valid until.
fn valid_until(message: &str) -> jiff::Timestamp {
    message
        .split("valid until ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no validity in {message:?}"))
}

/// Stands in for the `integration-created` webhook (a later issue): what
/// learns the integration the customer created with the operator's link
/// records it in the output Secret as created by the operator.
async fn deliver_created(cluster: &Cluster, id: &str) {
    cluster
        .patch_secret_strings(OUTPUT, json!({"kombo_created_integration_id": id}))
        .await;
}

/// A connection the operator created: link published, completed by the
/// customer, delivered as created with the link. Returns the integration id.
async fn connected_via_link(cluster: &Cluster, sim: &KomboSim) -> String {
    let link = published_link(cluster, sim, 0).await;
    let id = sim.complete_link(&link, "smartrecruiters").expect("link completes");
    deliver_created(cluster, &id).await;
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(i.status.unwrap().integration_id.as_deref(), Some(id.as_str()));
    id
}

async fn set_integration_id(cluster: &Cluster, id: Option<&str>) {
    cluster
        .integrations()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"connection": {"integrationId": id}}})),
        )
        .await
        .expect("spec patched");
}

#[tokio::test]
async fn a_magic_link_is_sent_and_the_link_token_is_never_taken_for_an_activation_token() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;

    let before = jiff::Timestamp::now();
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
    // A link meant to be e-mailed to a person, with the validity Kombo
    // documents for it (one year), not an hour-long EMBEDDED one.
    assert_eq!(request["link_type"], json!("MAGIC_LINK"));
    let message = ready(&cluster.integrations().get(NAME).await.unwrap()).message;
    assert!(message.contains("MAGIC_LINK"), "{message}");
    let days = (valid_until(&message) - before).get_seconds() / 86_400;
    assert!((364..=365).contains(&days), "valid for {days} days: {message}");
    // The message says how to finish, naming what identifies the customer.
    assert!(
        message.contains(&uid) && message.contains("spec.connection.integrationId"),
        "{message}"
    );

    // The customer finishes. Kombo resolves the activation token its
    // front-end SDK returned, never the link's own token, and the operator
    // does not poll with it.
    let id = sim.complete_link(&link, "smartrecruiters").expect("link completes");
    let activation = sim.activation_token(&link).expect("an activation token");
    let client = reqwest::Client::new();
    let by_token = |token: String| {
        client
            .get(format!("{}/connect/integration-by-token/{token}", sim.base_url()))
            .bearer_auth(API_KEY)
            .send()
    };
    assert_eq!(by_token(sim.links()[0].token.clone()).await.unwrap().status(), 404);
    assert_eq!(by_token(activation).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.route == routes::INTEGRATION_BY_TOKEN)
            .count(),
        2,
        "the operator asked integration-by-token itself"
    );
    cluster.wait_ready(NAME, "False", Some("AwaitingConnection")).await;

    // The admin names the integration: the credentials appear and work.
    set_integration_id(&cluster, Some(&id)).await;
    cluster.wait_ready(NAME, "True", Some("Issued")).await;
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
        "the superseded link stays in the Secret: {:?}",
        data.keys()
    );
    assert_eq!(app_call(&cluster).await, 200, "the application's Kombo call fails");
    assert_eq!(sim.calls(routes::CREATE_LINK), 1);
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn an_embedded_link_is_created_on_request_and_states_its_one_hour_validity() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({"linkType": "EMBEDDED"}))).await;
    let before = jiff::Timestamp::now();
    published_link(&cluster, &sim, 0).await;
    assert_eq!(sim.links()[0].request["link_type"], json!("EMBEDDED"));
    let message = ready(&cluster.integrations().get(NAME).await.unwrap()).message;
    assert!(message.contains("EMBEDDED"), "{message}");
    let secs = (valid_until(&message) - before).get_seconds();
    assert!((3595..=3601).contains(&secs), "valid for {secs}s: {message}");
    operator.stop().await;
}

#[tokio::test]
async fn expired_link_is_reported_and_only_the_retry_annotation_creates_a_new_one() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({"linkType": "EMBEDDED"}))).await;
    let link = published_link(&cluster, &sim, 0).await;

    // Two hours pass (the link's creation time moves back).
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let created = jiff::Timestamp::from_second(created.as_second()).unwrap();
    cluster
        .patch_secret_strings(OUTPUT, json!({"connect_link_created_at": created.to_string()}))
        .await;
    let i = cluster.wait_ready(NAME, "False", Some("ConnectLinkExpired")).await;
    let message = ready(&i).message;
    assert!(message.contains("Kombo connect link"), "{message}");
    assert!(message.contains("spec.connection.integrationId"), "{message}");
    let value = retry_value(&message);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.links().len(), 1, "a new link was created without being asked");
    assert!(cluster.has_event("ConnectLinkExpired").await);

    annotate_retry(&cluster, &value).await;
    let new_link = published_link(&cluster, &sim, 1).await;
    assert_ne!(new_link, link);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The annotation still names the old link: no third one.
    assert_eq!(sim.links().len(), 2);
    operator.stop().await;
}

#[tokio::test]
async fn each_kombo_integration_state_maps_to_a_condition() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let id = connected_via_link(&cluster, &sim).await;
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
        // The tool, read from the object Kombo returns.
        assert!(message.contains("(smartrecruiters)"), "{message}");
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
    deliver_created(&cluster, &new_id).await;
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
    assert!(cluster.has_event("ReauthRequired").await);

    // The refused key is not sent again by itself...
    let held = sim.total_calls();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sim.total_calls(), held, "the refused key was sent again");
    // ...until a person, having fixed it in Kombo, asks for one more try;
    // the link is completed; then the key is revoked.
    sim.add_api_key(API_KEY);
    annotate_retry(&cluster, "key-fixed-in-kombo").await;
    connected_via_link(&cluster, &sim).await;
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
async fn a_rate_limited_check_waits_at_least_retry_after() {
    let (cluster, sim) = setup("1s").await;
    sim.add_integration("personio:ratelimited", "personio");
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"integrationId": "personio:ratelimited"})))
        .await;
    cluster.wait_ready(NAME, "True", None).await;
    let before = sim.calls(routes::GET_INTEGRATION) as usize;
    sim.fail_next(routes::GET_INTEGRATION, 1, Fault::rate_limited(3));
    cluster.wait_ready(NAME, "False", Some("ProviderRateLimited")).await;
    let times = eventually(Duration::from_secs(20), "a check after the 429", || async {
        let t = sim.call_times(routes::GET_INTEGRATION);
        (t.len() >= before + 2).then_some(t)
    })
    .await;
    let gap = times[before + 1] - times[before];
    assert!(
        gap >= Duration::from_millis(2900),
        "checked again {gap:?} after a Retry-After of 3s"
    );
    cluster.wait_ready(NAME, "True", None).await;
    operator.stop().await;
}

#[tokio::test]
async fn deleting_the_integration_deletes_the_kombo_integration_it_created() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let id = connected_via_link(&cluster, &sim).await;

    cluster.delete_integration(NAME).await;
    assert!(sim.integrations().is_empty(), "the Kombo integration was left behind");
    assert_eq!(sim.deleted(), vec![id.clone()]);
    assert!(cluster.has_event("CleanedUp").await);
    // Checked before deleting, and deleted with the body Kombo documents.
    let requests = sim.requests();
    let delete = requests
        .iter()
        .position(|r| r.route == routes::DELETE_INTEGRATION)
        .unwrap();
    assert_eq!(requests[delete].body, json!({}));
    assert!(requests[..delete].iter().any(|r| r.route == routes::GET_INTEGRATION));
    operator.stop().await;
}

#[tokio::test]
async fn deleting_while_waiting_deletes_nothing_it_cannot_attribute() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let link = published_link(&cluster, &sim, 0).await;
    // The customer finishes, but nothing told the operator which
    // integration that was (no webhook yet): it cannot be found, and the
    // Integration's deletion does not hang on it.
    let id = sim.complete_link(&link, "smartrecruiters").unwrap();
    cluster.delete_integration(NAME).await;
    assert_eq!(sim.calls(routes::DELETE_INTEGRATION), 0);
    assert!(sim.integrations().contains_key(&id));
    operator.stop().await;
}

#[tokio::test]
async fn retain_keeps_the_kombo_integration() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"deletionPolicy": "Retain"})))
        .await;
    let id = connected_via_link(&cluster, &sim).await;

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
    let id = connected_via_link(&cluster, &sim).await;

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
async fn an_integration_id_named_in_the_spec_is_never_adopted_nor_deleted() {
    let (cluster, sim) = setup("1s").await;
    // Someone connected the customer earlier (another Integration, the dashboard).
    sim.add_integration("personio:someoneelse", "personio");
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"integrationId": "personio:someoneelse"})))
        .await;
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(sim.links().len(), 0, "no link for an existing integration");
    assert_eq!(app_call(&cluster).await, 200);
    assert_eq!(
        i.status.unwrap().integration_id,
        None,
        "a named integration is recorded as the operator's"
    );

    // The field is removed: the operator does not take the named
    // integration for its own; it asks the customer to connect.
    set_integration_id(&cluster, None).await;
    published_link(&cluster, &sim, 0).await;
    cluster.delete_integration(NAME).await;
    assert!(sim.integrations().contains_key("personio:someoneelse"));
    assert_eq!(sim.calls(routes::DELETE_INTEGRATION), 0);
    operator.stop().await;
}

#[tokio::test]
async fn an_integration_without_this_integrations_origin_id_is_never_deleted() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    published_link(&cluster, &sim, 0).await;
    // Someone else's link, completed: an integration with another origin id,
    // recorded (wrongly) as the one created with this operator's link.
    sim.set_auto_complete(Some("personio"));
    reqwest::Client::new()
        .post(format!("{}/connect/create-link", sim.base_url()))
        .bearer_auth(API_KEY)
        .json(&json!({"end_user_email": "x@other.example", "end_user_organization_name": "Other", "end_user_origin_id": "other-customer"}))
        .send()
        .await
        .unwrap();
    let other = sim.links()[1].integration_id.clone().expect("auto-completed");
    deliver_created(&cluster, &other).await;
    cluster.wait_ready(NAME, "True", None).await;

    cluster.delete_integration(NAME).await;
    assert!(
        sim.integrations().contains_key(&other),
        "another customer's integration was deleted"
    );
    assert_eq!(sim.calls(routes::DELETE_INTEGRATION), 0);
    operator.stop().await;
}

#[tokio::test]
async fn a_bare_404_from_a_wrong_base_url_is_a_misconfiguration() {
    let (cluster, sim) = setup("1h").await;
    sim.add_integration("personio:exists", "personio");
    // The host is right, the path is not Kombo's API (the `/v1` is missing).
    let wrong = sim.base_url().trim_end_matches("/v1").to_string() + "/api";
    cluster
        .cluster_provider(
            "kombo",
            json!({"type": "kombo", "baseUrl": wrong, "revalidateInterval": "1h"}),
        )
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"integrationId": "personio:exists"})))
        .await;
    let i = cluster.wait_ready(NAME, "False", Some("ProviderMisconfigured")).await;
    let message = ready(&i).message;
    assert!(message.contains("baseUrl") && message.contains("Kombo"), "{message}");

    // Without an id, the first call (the key check) tells the same.
    cluster
        .integrations()
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    cluster.wait_gone(NAME).await;
    cluster.integration(NAME, spec(json!({}))).await;
    let i = cluster.wait_ready(NAME, "False", Some("ProviderMisconfigured")).await;
    assert!(
        ready(&i).message.contains("GET /check-api-key"),
        "{}",
        ready(&i).message
    );
    assert_eq!(sim.links().len(), 0);
    operator.stop().await;
}

#[tokio::test]
async fn a_typo_in_a_kombo_enumeration_is_refused_at_admission() {
    let (cluster, _sim) = setup("1h").await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &ApiResource::erase::<Integration>(&()),
    );
    let create = |field: &str, value: &str| {
        let mut s = spec(json!({}));
        s["connection"][field] = json!(value);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": format!("typo-{}", field.to_lowercase()), "namespace": cluster.namespace},
            "spec": s,
        }))
        .unwrap();
        let api = api.clone();
        async move { api.create(&PostParams::default(), &obj).await }
    };
    for (field, value) in [
        ("integrationTool", "smartrecruiter"),
        ("integrationTool", "SmartRecruiters"),
        ("integrationCategory", "ats"),
        ("integrationCategory", "CRM"),
        ("linkType", "MAGIC"),
    ] {
        let err = create(field, value)
            .await
            .expect_err(&format!("{field}={value} was accepted"));
        assert!(err.to_string().contains(field), "{field}={value}: {err}");
    }
    // Kombo's own values are accepted.
    for (field, value) in [
        ("integrationTool", "cornerstonetalentlink"),
        ("integrationCategory", "ASSESSMENT"),
        ("linkType", "EMBEDDED"),
    ] {
        let created = create(field, value).await.expect("a Kombo value accepted");
        api.delete(&created.name_any(), &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_deleted_output_secret_is_rebuilt_from_status_without_a_second_link() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let id = connected_via_link(&cluster, &sim).await;

    cluster
        .secrets()
        .delete(OUTPUT, &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the Secret rebuilt", || async {
        let data = cluster.secret_data(OUTPUT).await?;
        (data.get("integration_id") == Some(&id)).then_some(())
    })
    .await;
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(app_call(&cluster).await, 200);
    assert_eq!(sim.links().len(), 1, "a second link was minted");

    // Still the operator's own: deleting the Integration removes it.
    cluster.delete_integration(NAME).await;
    assert_eq!(sim.deleted(), vec![id]);
    operator.stop().await;
}

#[tokio::test]
async fn a_lost_secret_whose_integration_is_gone_waits_for_a_person() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let id = connected_via_link(&cluster, &sim).await;

    sim.delete_in_dashboard(&id);
    cluster
        .secrets()
        .delete(OUTPUT, &DeleteParams::default())
        .await
        .unwrap();
    let i = cluster.wait_ready(NAME, "False", Some("IntegrationNotFound")).await;
    let message = ready(&i).message;
    assert!(message.contains(&id), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.links().len(), 1, "a second link without being asked");
    annotate_retry(&cluster, &retry_value(&message)).await;
    published_link(&cluster, &sim, 1).await;
    operator.stop().await;
}

/// The output Secret is deleted while a link waits for the customer: the
/// link cannot be recovered from Kombo (it has no way to list links), and
/// the customer may still complete it, so no second link is minted until a
/// person asks; status (outside the Secret) remembers that one was sent.
#[tokio::test]
async fn a_lost_secret_with_a_waiting_link_mints_no_second_link_until_asked() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    published_link(&cluster, &sim, 0).await;
    let i = cluster.integrations().get(NAME).await.unwrap();
    assert!(
        i.status.as_ref().and_then(|s| s.awaiting.as_ref()).is_some(),
        "status does not record the waiting link"
    );

    cluster
        .secrets()
        .delete(OUTPUT, &DeleteParams::default())
        .await
        .unwrap();
    let i = cluster.wait_ready(NAME, "False", Some("ConnectLinkLost")).await;
    let message = ready(&i).message;
    assert!(message.contains("spec.connection.integrationId"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.links().len(), 1, "a second link without being asked");

    annotate_retry(&cluster, &retry_value(&message)).await;
    published_link(&cluster, &sim, 1).await;
    assert_eq!(sim.links().len(), 2);
    operator.stop().await;
}
