//! The operator end to end with the `smartrecruiters` driver: the real
//! controller over real HTTP, against the real kube-apiserver (testkit's
//! control plane) and the SmartRecruiters simulator. What is specific to
//! SmartRecruiters: the `X-SmartToken` API key, both client authentication
//! methods at `/identity/oauth/token`, and the one-shot General Partner
//! Integration.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Cluster, eventually, logs};
use integration_operator::crd::Integration;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use testkit::sim::{
    Fault,
    smartrecruiters::{ClientAuth, SmartRecruitersSim},
};

const PROVIDER: &str = "smartrecruiters";
const APP: &str = "my-app";
const MASTER_ID: &str = "partner-master";
/// Canaries: they must never appear in any log line, Event or status.
const MASTER_SECRET: &str = "canary-master-secret-3b9d71";
const API_KEY: &str = "DCRA1-canary-api-key-6e02f1c8d4";
const CLIENT_SECRET: &str = "canary-client-secret-a41f07";

async fn setup(lifetime: Option<u64>) -> (Cluster, SmartRecruitersSim) {
    let cluster = Cluster::start().await;
    let sim = SmartRecruitersSim::start().await.expect("simulator starts");
    sim.set_token_lifetime(lifetime);
    sim.add_master_client(MASTER_ID, MASTER_SECRET, &[APP]);
    provider(&cluster, &sim, PROVIDER, json!({})).await;
    (cluster, sim)
}

/// A ClusterProvider of type smartrecruiters pointing at the simulator.
async fn provider(cluster: &Cluster, sim: &SmartRecruitersSim, name: &str, extra: serde_json::Value) {
    let mut spec = json!({
        "type": "smartrecruiters",
        "baseUrl": sim.url(),
        "clientAuthMethod": "client_secret_post",
        "revalidateInterval": "1s",
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    cluster.oauth2_provider(name, &sim.token_url(), spec).await;
}

fn partner_spec(company: &str, target: &str, bidirectional: bool) -> serde_json::Value {
    json!({
        "provider": PROVIDER,
        "secretRef": {"name": "master"},
        "partnerIntegration": {"appId": APP, "companyId": company, "bidirectional": bidirectional},
        "target": {"name": target},
    })
}

async fn master_secret(cluster: &Cluster) {
    cluster
        .input_secret("master", &[("client_id", MASTER_ID), ("client_secret", MASTER_SECRET)])
        .await;
}

fn ready(i: &Integration) -> (String, String) {
    let c = i
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    (c.reason.clone(), c.message.clone())
}

/// Annotation that asks for a one-shot step to run again.
async fn annotate_retry(cluster: &Cluster, name: &str, value: &str) {
    cluster
        .integrations()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"integration-operator.io/retry": value}}})),
        )
        .await
        .expect("annotated");
}

#[tokio::test]
async fn api_key_is_published_as_x_smart_token_and_a_refused_key_needs_reauth() {
    let (cluster, sim) = setup(Some(1800)).await;
    sim.add_api_key(API_KEY, "ACME");
    cluster.input_secret("key", &[("api_key", API_KEY)]).await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "key",
            json!({"provider": PROVIDER, "secretRef": {"name": "key"}, "apiKey": {}, "target": {"name": "out"}}),
        )
        .await;
    let i = cluster.wait_ready("key", "True", None).await;
    assert!(i.status.unwrap().expires_at.is_none(), "an API key has no expiry");
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(data["header_name"], "X-SmartToken");
    assert_eq!(data["header_value"], API_KEY);
    assert_eq!(data["base_url"], sim.url());
    assert!(
        !data.contains_key("authorization"),
        "the header is not Authorization: no `authorization` key"
    );
    assert!(sim.calls("company") >= 1, "the key was not validated");

    sim.revoke_api_key(API_KEY);
    let i = cluster.wait_ready("key", "False", Some("ReauthRequired")).await;
    let (_, message) = ready(&i);
    assert!(
        message.contains("SmartRecruiters refused the API key") && message.contains("Credentials"),
        "the message must say the key was refused and where to make a new one: {message}"
    );
    assert_eq!(
        cluster.secret_data("out").await.unwrap(),
        data,
        "the last Secret is kept"
    );
    assert!(cluster.has_event("ReauthRequired").await);

    // A new key in the input Secret recovers it.
    sim.add_api_key("DCRA1-canary-new-key-90aa3e", "ACME");
    cluster
        .patch_secret_strings("key", json!({"api_key": "DCRA1-canary-new-key-90aa3e"}))
        .await;
    cluster.wait_ready("key", "True", None).await;
    assert_eq!(
        cluster.secret_data("out").await.unwrap()["header_value"],
        "DCRA1-canary-new-key-90aa3e"
    );
    operator.stop().await;
    cluster
        .assert_nowhere_in(&["key"], &[API_KEY, "DCRA1-canary-new-key-90aa3e"])
        .await;
}

#[tokio::test]
async fn client_credentials_work_with_body_and_basic_client_auth() {
    let (cluster, sim) = setup(Some(1800)).await;
    provider(
        &cluster,
        &sim,
        "sr-basic",
        json!({"clientAuthMethod": "client_secret_basic"}),
    )
    .await;
    sim.add_client("client-body", CLIENT_SECRET, "ACME");
    sim.add_client("client-basic", "canary-basic-secret-2:%+", "ACME");
    cluster
        .input_secret(
            "body",
            &[("client_id", "client-body"), ("client_secret", CLIENT_SECRET)],
        )
        .await;
    cluster
        .input_secret(
            "basic",
            &[
                ("client_id", "client-basic"),
                ("client_secret", "canary-basic-secret-2:%+"),
            ],
        )
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "body",
            json!({"provider": PROVIDER, "secretRef": {"name": "body"}, "clientCredentials": {}, "target": {"name": "out-body"}}),
        )
        .await;
    cluster
        .integration(
            "basic",
            json!({"provider": "sr-basic", "secretRef": {"name": "basic"}, "clientCredentials": {}, "target": {"name": "out-basic"}}),
        )
        .await;
    for (name, out, client) in [
        ("body", "out-body", "client-body"),
        ("basic", "out-basic", "client-basic"),
    ] {
        cluster.wait_ready(name, "True", Some("Issued")).await;
        let data = cluster.secret_data(out).await.unwrap();
        let token = &data["access_token"];
        assert_eq!(
            sim.token_client(token).as_deref(),
            Some(client),
            "{name}: token not accepted"
        );
        // SmartRecruiters may answer `bearer` in lower case; the header is canonical.
        assert_eq!(data["authorization"], format!("Bearer {token}"));
        assert_eq!(data["header_name"], "Authorization");
    }
    let seen = sim.client_auth_seen();
    assert!(seen.iter().any(|s| *s == ("client-body".to_string(), ClientAuth::Body)));
    assert!(
        seen.iter()
            .any(|s| *s == ("client-basic".to_string(), ClientAuth::Basic))
    );
    assert!(
        seen.iter()
            .all(|(id, m)| (id == "client-body") == (*m == ClientAuth::Body)),
        "each ClusterProvider's method is the only one used: {seen:?}"
    );
    operator.stop().await;
    cluster
        .assert_nowhere_in(&["body", "basic"], &[CLIENT_SECRET, "canary-basic-secret-2"])
        .await;
}

#[tokio::test]
async fn without_client_auth_method_the_credentials_go_in_the_form_body() {
    let (cluster, sim) = setup(Some(1800)).await;
    // No clientAuthMethod: a smartrecruiters ClusterProvider defaults to
    // client_secret_post, the form SmartRecruiters documents.
    cluster
        .cluster_provider(
            "sr-default",
            json!({"type": "smartrecruiters", "baseUrl": sim.url(), "tokenUrl": sim.token_url()}),
        )
        .await;
    sim.add_client("client-default", CLIENT_SECRET, "ACME");
    cluster
        .input_secret(
            "creds",
            &[("client_id", "client-default"), ("client_secret", CLIENT_SECRET)],
        )
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "cc",
            json!({"provider": "sr-default", "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": "out"}}),
        )
        .await;
    cluster.wait_ready("cc", "True", Some("Issued")).await;
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(
        sim.token_client(&data["access_token"]).as_deref(),
        Some("client-default")
    );
    let seen = sim.client_auth_seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| *s == ("client-default".to_string(), ClientAuth::Body)),
        "id and secret in the form body, never HTTP Basic: {seen:?}"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_token_without_expires_in_gets_a_conservative_default_lifetime_and_a_warning() {
    let (cluster, sim) = setup(None).await;
    sim.add_client("client", CLIENT_SECRET, "ACME");
    cluster
        .input_secret("creds", &[("client_id", "client"), ("client_secret", CLIENT_SECRET)])
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "cc",
            json!({"provider": PROVIDER, "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": "out"}}),
        )
        .await;
    let i = cluster.wait_ready("cc", "True", None).await;
    let status = i.status.unwrap();
    let warning = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Warning")
        .expect("a Warning condition");
    assert_eq!(warning.reason, "ExpiryNotProvided");
    assert!(warning.message.contains(PROVIDER), "{}", warning.message);
    let expires: jiff::Timestamp = status.expires_at.unwrap().parse().unwrap();
    let lifetime = expires.duration_since(jiff::Timestamp::now()).as_secs();
    // 30 minutes: the only lifetime SmartRecruiters documents.
    assert!((1700..=1800).contains(&lifetime), "expected ~30m, got {lifetime}s");
    operator.stop().await;
}

#[tokio::test]
async fn partner_integration_is_created_once_and_its_id_recorded() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    let i = cluster.wait_ready("acme", "True", Some("Issued")).await;

    let created = sim.integrations();
    assert_eq!(created.len(), 1);
    let created = &created[0];
    assert_eq!((created.app_id.as_str(), created.company_id.as_str()), (APP, "ACME"));
    assert_eq!(
        i.status.as_ref().unwrap().integration_id.as_deref(),
        Some(created.integration_id.as_str()),
        "status.integrationId"
    );
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(data["client_id"], created.client_id);
    assert_eq!(data["client_secret"], created.client_secret);
    assert_eq!(data["integration_id"], created.integration_id);
    assert!(
        data.get("partner_post_sent_at").is_none_or(|m| m.is_empty()),
        "the \"request sent\" marker is cleared once the answer is stored"
    );
    assert_eq!(
        sim.token_client(&data["access_token"]).as_deref(),
        Some(created.client_id.as_str()),
        "the token is the customer-level one"
    );
    let post = &sim.integration_posts()[0];
    assert_eq!(
        post,
        &json!({"appId": APP, "companyId": "ACME"}),
        "not bi-directional: no clientId"
    );
    operator.stop().await;
    cluster
        .assert_nowhere_in(
            &["acme"],
            &[
                MASTER_SECRET.into(),
                created.client_secret.clone(),
                data["access_token"].clone(),
            ],
        )
        .await;
}

#[tokio::test]
async fn a_customer_token_failure_after_the_post_and_a_restart_never_post_again() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    sim.fail_next("token/integration", usize::MAX, Fault::status(503));
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    let i = cluster.wait_ready("acme", "False", Some("ProviderUnavailable")).await;
    let (_, message) = ready(&i);
    assert!(
        message.contains("SmartRecruiters") && message.contains("customer-level credentials"),
        "the message names the step: {message}"
    );
    // The answer is in the Secret already, before the step that failed.
    let created = sim.integrations()[0].clone();
    let data = cluster.secret_data("out").await.expect("the Secret holds the answer");
    assert_eq!(data["client_id"], created.client_id);
    assert_eq!(data["client_secret"], created.client_secret);
    assert_eq!(data["integration_id"], created.integration_id);

    operator.stop().await;
    sim.clear_faults();
    let operator = cluster.start_operator().await;
    let i = cluster.wait_ready("acme", "True", None).await;
    assert_eq!(sim.calls("integrations"), 1, "the integration was created twice");
    assert_eq!(
        i.status.unwrap().integration_id.as_deref(),
        Some(created.integration_id.as_str())
    );
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(sim.token_client(&data["access_token"]), Some(created.client_id.clone()));
    operator.stop().await;
}

#[tokio::test]
async fn a_secret_write_failing_after_the_post_is_retried_without_a_second_post() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    // The first write (the "request sent" marker) creates the Secret; the
    // next one, which stores the answer, is a patch: make several fail,
    // more than one attempt's retries.
    cluster
        .api()
        .faults()
        .fail_next(Some(reqwest::Method::PATCH), "secrets/out", 8, 500, None);
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    cluster.wait_ready("acme", "True", None).await;
    let posts = sim.calls("integrations");
    assert_eq!(posts, 1, "the integration was created {posts} times");
    let created = sim.integrations()[0].clone();
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(data["client_secret"], created.client_secret);
    assert!(
        cluster.has_event("SecretWriteFailed").await,
        "the failed write was reported"
    );
    operator.stop().await;
}

#[tokio::test]
async fn an_answer_lost_to_a_restart_stops_and_waits_for_a_person() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    let faults = cluster.api().faults();
    faults.fail_next(Some(reqwest::Method::PATCH), "secrets/out", usize::MAX, 500, None);
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    cluster.wait_ready("acme", "False", Some("SecretWriteFailed")).await;
    assert_eq!(sim.calls("integrations"), 1);
    // The operator dies before it could store the answer anywhere durable.
    operator.stop().await;
    faults.clear();
    let operator = cluster.start_operator().await;
    let i = cluster
        .wait_ready("acme", "False", Some("PartnerIntegrationUncertain"))
        .await;
    let (_, message) = ready(&i);
    let marker = cluster.secret_data("out").await.unwrap()["partner_post_sent_at"].clone();
    assert!(
        message.contains("shows the credentials only once")
            && message.contains(&format!("integration-operator.io/retry={marker}")),
        "the message says what happened and how to ask for a new request: {message}"
    );
    // Retries keep happening (retry-invalid is 3s in tests); none POSTs.
    let reconciles_before = cluster.api().counters().count("get", "secrets");
    eventually(Duration::from_secs(10), "a few more reconciles", || async {
        (cluster.api().counters().count("get", "secrets") > reconciles_before + 1).then_some(())
    })
    .await;
    assert_eq!(sim.calls("integrations"), 1, "the integration was created again");

    // The customer disabled the orphan; a person asks for a new request.
    sim.disable_integration(&sim.integrations()[0].integration_id);
    annotate_retry(&cluster, "acme", &marker).await;
    cluster.wait_ready("acme", "True", None).await;
    assert_eq!(sim.calls("integrations"), 2);
    operator.stop().await;
}

#[tokio::test]
async fn an_unreadable_creation_answer_is_never_followed_by_a_second_post_unless_asked() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    sim.fail_next("integrations", 1, Fault::Truncated);
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    let i = cluster
        .wait_ready("acme", "False", Some("PartnerIntegrationUncertain"))
        .await;
    assert_eq!(sim.calls("integrations"), 1);
    let marker = cluster.secret_data("out").await.unwrap()["partner_post_sent_at"].clone();
    assert!(ready(&i).1.contains(&marker));
    annotate_retry(&cluster, "acme", &marker).await;
    cluster.wait_ready("acme", "True", None).await;
    assert_eq!(sim.calls("integrations"), 2);
    assert_eq!(sim.integrations().len(), 1);
    operator.stop().await;
}

#[tokio::test]
async fn a_second_integration_for_the_same_company_is_refused_without_a_post() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    let operator = cluster.start_operator().await;
    cluster.integration("first", partner_spec("ACME", "out-1", false)).await;
    cluster.wait_ready("first", "True", None).await;
    cluster
        .integration("second", partner_spec("ACME", "out-2", false))
        .await;
    let i = cluster
        .wait_ready("second", "False", Some("DuplicateIntegration"))
        .await;
    let (_, message) = ready(&i);
    assert!(
        message.contains(&format!("{}/first", cluster.namespace))
            && message.contains("\"ACME\"")
            && message.contains(APP),
        "the message names the Integration that owns it: {message}"
    );
    assert_eq!(sim.calls("integrations"), 1, "the second Integration sent a POST");
    assert!(cluster.secret_data("out-2").await.is_none());
    // The first one is untouched.
    cluster.wait_ready("first", "True", None).await;
    operator.stop().await;
}

#[tokio::test]
async fn integrations_sharing_master_credentials_cost_one_master_token_call_per_lifetime() {
    let (cluster, sim) = setup(Some(4)).await;
    master_secret(&cluster).await;
    let operator = cluster.start_operator().await;
    for n in 0..5 {
        cluster
            .integration(
                &format!("c{n}"),
                partner_spec(&format!("C{n}"), &format!("out-{n}"), false),
            )
            .await;
    }
    for n in 0..5 {
        cluster.wait_ready(&format!("c{n}"), "True", None).await;
    }
    assert_eq!(sim.integrations().len(), 5);
    assert_eq!(
        sim.token_calls_for(MASTER_ID),
        1,
        "five Integrations created together share one master token"
    );
    // Once that token's lifetime is over, the next creations need a new one: one, not one each.
    let master_token = sim.issued_tokens()[0].clone();
    eventually(Duration::from_secs(10), "the master token to expire", || async {
        (!sim.is_valid_token(&master_token)).then_some(())
    })
    .await;
    for n in 5..8 {
        cluster
            .integration(
                &format!("c{n}"),
                partner_spec(&format!("C{n}"), &format!("out-{n}"), false),
            )
            .await;
    }
    for n in 5..8 {
        cluster.wait_ready(&format!("c{n}"), "True", None).await;
    }
    assert_eq!(sim.token_calls_for(MASTER_ID), 2);
    operator.stop().await;
}

#[tokio::test]
async fn bidirectional_credentials_are_unique_strong_and_sent_once() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    let operator = cluster.start_operator().await;
    cluster.integration("a", partner_spec("A", "out-a", true)).await;
    cluster.integration("b", partner_spec("B", "out-b", true)).await;
    let mut seen: Vec<BTreeMap<String, String>> = Vec::new();
    for (name, out, company) in [("a", "out-a", "A"), ("b", "out-b", "B")] {
        let i = cluster.wait_ready(name, "True", None).await;
        let data = cluster.secret_data(out).await.unwrap();
        let (id, secret) = (&data["partner_client_id"], &data["partner_client_secret"]);
        assert!(
            id.contains(i.metadata.uid.as_deref().unwrap()),
            "the id derives from the Integration's uid: {id}"
        );
        assert!(
            secret.len() >= 64 && secret.chars().all(|c| c.is_ascii_hexdigit()),
            "a 256-bit random secret"
        );
        let created = sim
            .integrations()
            .into_iter()
            .find(|c| c.company_id == company)
            .unwrap();
        assert_eq!(created.partner_client_id.as_ref(), Some(id), "what SmartRecruiters got");
        assert_eq!(created.partner_client_secret.as_ref(), Some(secret));
        seen.push(data);
    }
    assert_ne!(seen[0]["partner_client_id"], seen[1]["partner_client_id"]);
    assert_ne!(seen[0]["partner_client_secret"], seen[1]["partner_client_secret"]);
    assert_eq!(sim.calls("integrations"), 2);
    operator.stop().await;
    let canaries: Vec<String> = seen.iter().map(|d| d["partner_client_secret"].clone()).collect();
    cluster.assert_nowhere_in(&["a", "b"], &canaries).await;
}

#[tokio::test]
async fn a_403_is_permission_denied_naming_the_step() {
    let (cluster, sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    sim.fail_next("integrations", usize::MAX, Fault::status(403));
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    let i = cluster.wait_ready("acme", "False", Some("PermissionDenied")).await;
    let (_, message) = ready(&i);
    assert!(
        message.contains("SmartRecruiters") && message.contains("creating the partner integration"),
        "the message names provider and step: {message}"
    );
    assert!(sim.integrations().is_empty());
    // Nothing was created, so once permitted it goes ahead (a 403 is no
    // "outcome unknown").
    sim.clear_faults();
    cluster.wait_ready("acme", "True", None).await;
    assert_eq!(sim.integrations().len(), 1);
    operator.stop().await;
}

fn warning(i: &Integration) -> Option<(String, String)> {
    i.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Warning" && c.status == "True"))
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn an_api_key_that_may_not_read_the_company_is_published_with_a_warning() {
    let (cluster, sim) = setup(Some(1800)).await;
    sim.add_api_key(API_KEY, "ACME");
    cluster.input_secret("key", &[("api_key", API_KEY)]).await;
    // The key authenticates, but its System role may not read the company.
    sim.fail_next("company", usize::MAX, Fault::status(403));
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "key",
            json!({"provider": PROVIDER, "secretRef": {"name": "key"}, "apiKey": {}, "target": {"name": "out-key"}}),
        )
        .await;
    let i = cluster.wait_ready("key", "True", None).await;
    let (reason, message) = warning(&i).expect("a Warning condition");
    assert_eq!(reason, "ApiKeyPermissionLimited");
    assert!(
        message.contains("HTTP 403") && message.contains("System role") && message.contains("published"),
        "the warning says what was refused and what to check: {message}"
    );
    let data = cluster.secret_data("out-key").await.expect("the key is published");
    assert_eq!(data["header_value"], API_KEY);
    // What the application would do with a key limited to, say, jobs: it works.
    let jobs = reqwest::Client::new()
        .get(format!("{}jobs", data["base_url"]))
        .header("X-SmartToken", &data["header_value"])
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status().as_u16(), 200);

    // Once the key may read the company, the warning goes.
    sim.clear_faults();
    eventually(Duration::from_secs(20), "the warning to clear", || async {
        let i = cluster.integrations().get("key").await.ok()?;
        warning(&i).is_none().then_some(())
    })
    .await;
    operator.stop().await;
    cluster.assert_nowhere_in(&["key"], &[API_KEY]).await;
}

#[tokio::test]
async fn app_and_company_cannot_be_changed_once_set() {
    let (cluster, _sim) = setup(Some(1800)).await;
    master_secret(&cluster).await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    for (field, value) in [("companyId", "BETA"), ("appId", "other-app")] {
        let err = cluster
            .integrations()
            .patch(
                "acme",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"partnerIntegration": {field: value}}})),
            )
            .await
            .expect_err("the edit must be refused at admission");
        let kube::Error::Api(status) = err else {
            panic!("expected an API error, got {err}")
        };
        assert_eq!(status.code, 422, "{field}");
        assert!(
            status
                .message
                .contains(&format!("spec.partnerIntegration.{field} cannot be changed"))
                && status.message.contains("delete this Integration and create a new one"),
            "the refusal names the field and what to do instead: {}",
            status.message
        );
    }
    // Other fields stay editable.
    cluster
        .integrations()
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"refresh": {"renewBefore": "5m"}}})),
        )
        .await
        .expect("an unrelated edit is accepted");
}

#[tokio::test]
async fn a_429_retry_after_is_honoured_and_without_it_backoff_applies() {
    let (cluster, sim) = setup(Some(1800)).await;
    sim.add_client("client", CLIENT_SECRET, "ACME");
    cluster
        .input_secret("creds", &[("client_id", "client"), ("client_secret", CLIENT_SECRET)])
        .await;
    sim.fail_next("token", 1, Fault::rate_limited(3));
    let operator = cluster.start_operator().await;
    let spec = |target: &str| json!({"provider": PROVIDER, "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": target}});
    cluster.integration("limited", spec("out-1")).await;
    let i = cluster
        .wait_ready("limited", "False", Some("ProviderRateLimited"))
        .await;
    let (_, message) = ready(&i);
    assert!(
        message
            .contains("SmartRecruiters, exchanging the client credentials (POST /identity/oauth/token) at 127.0.0.1:")
            && message.contains(&format!(
                "(ClusterProvider {}): rate limited, Retry-After asked to wait 3s",
                cluster.provider_name("smartrecruiters")
            )),
        "the message names provider, step, host and the wait: {message}"
    );
    cluster.wait_ready("limited", "True", None).await;
    let times = sim.call_times("token");
    assert!(times.len() >= 2);
    let waited = times[1].duration_since(times[0]);
    assert!(
        waited >= Duration::from_millis(2900),
        "the next call came {waited:?} after a 429 with Retry-After: 3"
    );

    // Without Retry-After: retried with the operator's own (short, in tests) backoff.
    sim.fail_next(
        "token",
        1,
        Fault::Status {
            code: 429,
            body: None,
            retry_after: None,
        },
    );
    cluster.integration("plain", spec("out-2")).await;
    cluster.wait_ready("plain", "True", None).await;
    let times = sim.call_times("token");
    let n = times.len();
    let waited = times[n - 1].duration_since(times[n - 2]);
    assert!(
        waited < Duration::from_millis(2900),
        "without Retry-After the retry should not wait {waited:?}"
    );
    operator.stop().await;
}

#[tokio::test]
async fn refused_customer_credentials_need_reauth_and_are_recreated_when_asked() {
    let (cluster, sim) = setup(Some(5)).await;
    master_secret(&cluster).await;
    let operator = cluster.start_operator().await;
    cluster.integration("acme", partner_spec("ACME", "out", false)).await;
    cluster.wait_ready("acme", "True", None).await;
    let first = sim.integrations()[0].clone();

    // The customer switches the integration off in SmartRecruiters.
    sim.disable_integration(&first.integration_id);
    let i = cluster.wait_ready("acme", "False", Some("ReauthRequired")).await;
    let (_, message) = ready(&i);
    assert!(
        message.contains("refused")
            && message.contains(&format!("integration-operator.io/retry={}", first.integration_id)),
        "the message says what was refused and how to recreate: {message}"
    );
    assert_eq!(sim.calls("integrations"), 1, "not recreated without being asked");

    annotate_retry(&cluster, "acme", &first.integration_id).await;
    let i = cluster.wait_ready("acme", "True", None).await;
    let second = sim.integrations()[1].clone();
    assert_ne!(second.integration_id, first.integration_id);
    assert_eq!(
        i.status.unwrap().integration_id.as_deref(),
        Some(second.integration_id.as_str())
    );
    assert_eq!(cluster.secret_data("out").await.unwrap()["client_id"], second.client_id);
    operator.stop().await;
}

/// Rejected-credential feedback: an application that got a 401 with the
/// published key says so with the credentials-rejected annotation, and the
/// key is checked again at once instead of at the next revalidation (an
/// hour away here).
#[tokio::test]
async fn a_rejection_report_checks_the_key_at_once_and_a_revoked_key_needs_reauth_before_the_next_check() {
    let (cluster, sim) = setup(None).await;
    provider(&cluster, &sim, "sr-hourly", json!({"revalidateInterval": "1h"})).await;
    sim.add_api_key(API_KEY, "ACME");
    cluster.input_secret("key", &[("api_key", API_KEY)]).await;
    let operator = cluster
        .start_operator_with(&["--rejection-report-interval", "2s"])
        .await;
    cluster
        .integration(
            "key",
            json!({"provider": "sr-hourly", "secretRef": {"name": "key"}, "apiKey": {}, "target": {"name": "out"}}),
        )
        .await;
    cluster.wait_ready("key", "True", None).await;
    let checks = sim.calls("company");
    let report = |value: &'static str| {
        let api = cluster.integrations();
        async move {
            api.patch(
                "key",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"integration-operator.io/credentials-rejected": value}}}),
                ),
            )
            .await
            .expect("annotated")
        }
    };

    // The key still works: checked once, nothing changed, and the Event
    // tells the application's team to look elsewhere.
    report("2026-12-02T10:00:00Z").await;
    eventually(Duration::from_secs(15), "a StillAccepted Event", || async {
        (cluster.events_with_reason("StillAccepted").await >= 1).then_some(())
    })
    .await;
    assert_eq!(sim.calls("company"), checks + 1, "one check per report");
    let i = cluster.wait_ready("key", "True", None).await;
    assert_eq!(
        i.status.unwrap().rejection_answered.as_deref(),
        Some("2026-12-02T10:00:00Z")
    );
    // The same value again (a re-applied manifest) reports nothing.
    report("2026-12-02T10:00:00Z").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.calls("company"), checks + 1, "an answered report checked again");

    // Revoked at SmartRecruiters: the next report finds out at once.
    sim.revoke_api_key(API_KEY);
    report("2026-12-02T10:05:00Z").await;
    let i = cluster.wait_ready("key", "False", Some("ReauthRequired")).await;
    let (_, message) = ready(&i);
    assert!(!message.contains(API_KEY));
    operator.stop().await;
    let text = format!("{}\n{}", logs(), cluster.events_text().await);
    assert!(!text.contains(API_KEY), "the API key appeared in the log or an Event");
}

// ------------------------------------------------------------------------
// SmartRecruiters calling the operator (seed 004): the operator's
// oauthTokenUrl and callbackUrl, served by its inbound server for a
// ClusterProvider with `partnerEndpoints`. Polling stays slow (tokens live
// 30 minutes), so whatever happens within seconds happened because of a
// callback.

const INBOUND: [&str; 4] = [
    "--inbound-addr",
    "127.0.0.1:0",
    "--inbound-insecure-http",
    "--inbound-rate=50",
];

/// The three URLs of `provider` to register with SmartRecruiters.
struct PartnerUrls {
    token: String,
    callback: String,
    consent: String,
}

fn partner_urls(operator: &integration_operator::cli::Operator, cluster: &Cluster, provider: &str) -> PartnerUrls {
    let addr = operator.inbound_addr.expect("inbound server on");
    let base = format!(
        "http://{addr}/webhooks/smartrecruiters/{}",
        cluster.provider_name(provider)
    );
    PartnerUrls {
        token: format!("{base}/oauth/token"),
        callback: format!("{base}/callback"),
        consent: format!("{base}/consent"),
    }
}

/// A SmartRecruiters ClusterProvider serving partner endpoints, the master
/// Secret, and an operator with its inbound server; the simulator knows the
/// operator's URLs as SmartRecruiters' Partner & API Team would.
async fn partner_setup() -> (
    Cluster,
    SmartRecruitersSim,
    integration_operator::cli::Operator,
    PartnerUrls,
) {
    let (cluster, sim) = setup(Some(1800)).await;
    provider(&cluster, &sim, PROVIDER, json!({"partnerEndpoints": {}})).await;
    master_secret(&cluster).await;
    let operator = cluster.start_operator_with(&INBOUND).await;
    let urls = partner_urls(&operator, &cluster, PROVIDER);
    sim.register_partner_app(APP, Some(&urls.token), Some(&urls.callback));
    (cluster, sim, operator, urls)
}

fn annotations(i: &Integration) -> BTreeMap<String, String> {
    i.metadata.annotations.clone().unwrap_or_default()
}

/// A token request to the operator's oauthTokenUrl: (status, JSON body, headers).
async fn token_request(
    url: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().post(url).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let answer = request.send().await.expect("token request sent");
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    (status, answer.json().await.unwrap_or_default(), headers)
}

async fn callback_request(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let answer = request.send().await.expect("callback sent");
    (answer.status().as_u16(), answer.headers().clone())
}

const DISABLED: &[u8] = br#"{"eventType": "INTEGRATION_DISABLED"}"#;

#[tokio::test]
async fn a_disable_callback_turns_the_integration_reauth_required_at_once_and_retry_creates_a_new_one() {
    let (cluster, sim, operator, _urls) = partner_setup().await;
    cluster.integration("acme", partner_spec("ACME", "out", true)).await;
    cluster.wait_ready("acme", "True", None).await;
    let first = sim.integrations()[0].clone();
    let customer_calls = sim.token_calls_for(&first.client_id);

    // The customer disables it; SmartRecruiters gets a token from the
    // operator with the credentials the operator generated, then calls back.
    let sent = std::time::Instant::now();
    let notified = sim.disable_and_notify(&first.integration_id).await.unwrap();
    assert_eq!(notified.token_status, Some(200), "{notified:?}");
    assert_eq!(notified.callback_status, Some(200), "{notified:?}");
    let i = cluster.wait_ready("acme", "False", Some("ReauthRequired")).await;
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "ReauthRequired only after {:?}",
        sent.elapsed()
    );
    let (_, message) = ready(&i);
    assert!(
        message.contains(&first.integration_id)
            && message.contains("disabled")
            && message.contains(&format!("integration-operator.io/retry={}", first.integration_id)),
        "{message}"
    );
    assert!(
        annotations(&i).contains_key("integration-operator.io/provider-disabled"),
        "the receiver recorded it"
    );
    assert!(cluster.has_event("ReauthRequired").await, "a Warning Event");
    assert!(
        cluster
            .events_text()
            .await
            .lines()
            .any(|l| l.starts_with("Warning ReauthRequired") && l.contains(&first.integration_id)),
        "the Warning Event names the integration"
    );
    // From the callback, not from asking SmartRecruiters: no token call
    // for the disabled credentials, and none while it stays disabled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sim.token_calls_for(&first.client_id), customer_calls);
    assert_eq!(sim.calls("integrations"), 1);

    // A person asks for it again: a new integration, with new partner credentials.
    annotate_retry(&cluster, "acme", &first.integration_id).await;
    let i = cluster.wait_ready("acme", "True", None).await;
    assert_eq!(sim.calls("integrations"), 2);
    let (reason, message) = ready(&i);
    assert_eq!(reason, "Issued", "{message}");
    // (Recovered: it comes after a failure.)
    eventually(
        Duration::from_secs(10),
        "an Event saying why it was created again",
        || async {
            cluster
                .events_text()
                .await
                .lines()
                .any(|l| l.starts_with("Normal ") && l.contains("reported the integration disabled"))
                .then_some(())
        },
    )
    .await;
    let second = sim.integrations()[1].clone();
    assert_eq!(
        i.status.as_ref().unwrap().integration_id.as_deref(),
        Some(second.integration_id.as_str())
    );
    assert_ne!(second.partner_client_id, first.partner_client_id);
    // The old token belongs to the old partner credentials: refused now.
    let old = notified.token.clone().unwrap();
    let urls = partner_urls(&operator, &cluster, PROVIDER);
    assert_eq!(
        callback_request(&urls.callback, Some(&old), DISABLED.to_vec()).await.0,
        401
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.wait_ready("acme", "True", None).await;

    // The new one can be disabled the same way.
    let notified2 = sim.disable_and_notify(&second.integration_id).await.unwrap();
    assert_eq!(notified2.callback_status, Some(200));
    cluster.wait_ready("acme", "False", Some("ReauthRequired")).await;
    operator.stop().await;

    let mut canaries = vec![MASTER_SECRET.to_string(), old, notified2.token.unwrap()];
    for c in sim.integrations() {
        canaries.push(c.client_secret);
        canaries.extend(c.partner_client_secret);
    }
    cluster.assert_nowhere_in(&["acme"], &canaries).await;
}

#[tokio::test]
async fn hostile_token_requests_and_callbacks_are_refused_and_change_nothing() {
    use integration_operator::inbound::smartrecruiters::{TOKEN_KEY_PURPOSE, TokenKey, mint};
    let (cluster, sim, operator, urls) = partner_setup().await;
    cluster.integration("a", partner_spec("A", "out-a", true)).await;
    cluster.integration("b", partner_spec("B", "out-b", true)).await;
    cluster.wait_ready("a", "True", None).await;
    cluster.wait_ready("b", "True", None).await;
    let a = cluster.secret_data("out-a").await.unwrap();
    let b = cluster.secret_data("out-b").await.unwrap();
    let (a_id, a_secret) = (a["partner_client_id"].as_str(), a["partner_client_secret"].as_str());
    let (b_id, b_secret) = (b["partner_client_id"].as_str(), b["partner_client_secret"].as_str());
    let grant = ("grant_type", "client_credentials");

    // Positive control: both client authentication methods get a token.
    let (status, body, headers) = token_request(
        &urls.token,
        None,
        &[grant, ("client_id", a_id), ("client_secret", a_secret)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(headers["cache-control"], "no-store");
    let a_token = body["access_token"].as_str().unwrap().to_string();
    let (status, body, _) = token_request(&urls.token, Some((b_id, b_secret)), &[grant]).await;
    assert_eq!(status, 200);
    let b_token = body["access_token"].as_str().unwrap().to_string();

    // Token requests refused in RFC 6749 terms.
    let wrong = token_request(
        &urls.token,
        None,
        &[grant, ("client_id", a_id), ("client_secret", b_secret)],
    )
    .await;
    assert_eq!((wrong.0, wrong.1["error"].as_str()), (401, Some("invalid_client")));
    assert!(wrong.2.contains_key("www-authenticate"));
    let unknown_id = "io-00000000-0000-4000-8000-000000000000";
    let unknown = token_request(
        &urls.token,
        None,
        &[grant, ("client_id", unknown_id), ("client_secret", a_secret)],
    )
    .await;
    assert_eq!((unknown.0, unknown.1["error"].as_str()), (401, Some("invalid_client")));
    let other_grant = token_request(
        &urls.token,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", a_id),
            ("client_secret", a_secret),
        ],
    )
    .await;
    assert_eq!(
        (other_grant.0, other_grant.1["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let both = token_request(
        &urls.token,
        Some((a_id, a_secret)),
        &[grant, ("client_id", a_id), ("client_secret", a_secret)],
    )
    .await;
    assert_eq!((both.0, both.1["error"].as_str()), (400, Some("invalid_request")));
    // The master credentials are SmartRecruiters' to check, not the operator's.
    let master = token_request(
        &urls.token,
        None,
        &[grant, ("client_id", MASTER_ID), ("client_secret", MASTER_SECRET)],
    )
    .await;
    assert_eq!(master.0, 401);

    // Tokens minted with the operator's real key (read by this admin test),
    // to craft an expired one and prove crafting works.
    let key_secret: k8s_openapi::api::core::v1::Secret =
        kube::Api::namespaced(cluster.client.clone(), &cluster.operator_namespace())
            .get(integration_operator::cli::FINGERPRINT_KEY_SECRET)
            .await
            .unwrap();
    let root = integration_operator::controller::output::Fingerprinter::new(key_secret.data.unwrap()["key"].0.clone())
        .derived_key(TOKEN_KEY_PURPOSE);
    let a_key = TokenKey::derive(&root, &cluster.provider_name(PROVIDER), a_secret.as_bytes());
    let now = jiff::Timestamp::now().as_second();
    let expired = mint(&a_key, a_id, now - 1);
    let crafted = mint(&a_key, a_id, now + 60);
    // A's token relabelled for B, with A's MAC.
    let parts: Vec<&str> = a_token.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let relabelled = format!("iosr1.{}.{}", b64.encode(payload.replace(a_id, b_id)), parts[2]);
    // A's MAC over a later expiry.
    let (exp, _) = payload.split_once(':').unwrap();
    let extended = format!(
        "iosr1.{}.{}",
        b64.encode(payload.replacen(exp, &(now + 86_400 * 30).to_string(), 1)),
        parts[2]
    );
    let mut flipped = a_token.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'Q' } else { 'A' });

    let cb = |token: Option<String>, body: Vec<u8>| {
        let url = urls.callback.clone();
        async move { callback_request(&url, token.as_deref(), body).await }
    };
    let (status, headers) = cb(None, DISABLED.to_vec()).await;
    assert_eq!(status, 401, "missing Bearer");
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    for (what, token) in [
        ("expired", expired),
        ("relabelled for another Integration", relabelled),
        ("extended", extended),
        ("flipped", flipped),
        ("garbage", "not-a-token".to_string()),
        ("another ClusterProvider's key", {
            let other = TokenKey::derive(&root, "another-provider", a_secret.as_bytes());
            mint(&other, a_id, now + 60)
        }),
    ] {
        let (status, headers) = cb(Some(token), DISABLED.to_vec()).await;
        assert_eq!(status, 401, "{what}");
        assert!(
            headers["www-authenticate"].to_str().unwrap().contains("invalid_token"),
            "{what}"
        );
    }
    // Valid tokens, bad bodies.
    assert_eq!(cb(Some(a_token.clone()), b"not json".to_vec()).await.0, 400);
    assert_eq!(cb(Some(a_token.clone()), b"{}".to_vec()).await.0, 400);
    let mut huge = br#"{"eventType": "INTEGRATION_DISABLED", "pad": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#""}"#);
    assert_eq!(cb(Some(a_token.clone()), huge).await.0, 413);
    // Another event type: acknowledged, nothing changed (the crafted
    // token works, so the expired one above failed for its expiry).
    assert_eq!(
        cb(
            Some(crafted.clone()),
            br#"{"eventType": "INTEGRATION_PAUSED"}"#.to_vec()
        )
        .await
        .0,
        202
    );
    // Someone who may edit annotations forges a disable of B.
    let b_integration = sim
        .integrations()
        .into_iter()
        .find(|c| c.company_id == "B")
        .unwrap()
        .integration_id;
    cluster
        .integrations()
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "integration-operator.io/provider-disabled":
                    format!("{b_integration} 1780000000 00112233445566778899aabbccddeeff")
            }}})),
        )
        .await
        .unwrap();
    // A ClusterProvider without partnerEndpoints serves nothing.
    provider(&cluster, &sim, "sr-plain", json!({})).await;
    let plain = partner_urls(&operator, &cluster, "sr-plain");
    assert_eq!(
        token_request(&plain.token, Some((a_id, a_secret)), &[grant]).await.0,
        404
    );

    // Nothing changed: both Ready as issued, no disable recorded on A, and
    // B carries only the forgery, which the leader ignored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["a", "b"] {
        let i = cluster.wait_ready(name, "True", None).await;
        assert_eq!(ready(&i).0, "Issued", "{name}");
    }
    let a_now = cluster.integrations().get("a").await.unwrap();
    assert!(!annotations(&a_now).contains_key("integration-operator.io/provider-disabled"));
    assert_eq!(cluster.events_with_reason("ReauthRequired").await, 0);
    assert_eq!(sim.integration_posts().len(), 2);

    // Positive control: A's genuine token disables A, and only A.
    assert_eq!(cb(Some(a_token.clone()), DISABLED.to_vec()).await.0, 200);
    cluster.wait_ready("a", "False", Some("ReauthRequired")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.wait_ready("b", "True", None).await;
    // And B's own token disables B: what was refused above was the forgery.
    assert_eq!(cb(Some(b_token.clone()), DISABLED.to_vec()).await.0, 200);
    cluster.wait_ready("b", "False", Some("ReauthRequired")).await;
    operator.stop().await;

    let mut canaries = vec![
        MASTER_SECRET.to_string(),
        a_secret.to_string(),
        b_secret.to_string(),
        a_token,
        b_token,
        crafted,
    ];
    for c in sim.integrations() {
        canaries.push(c.client_secret);
    }
    cluster.assert_nowhere_in(&["a", "b"], &canaries).await;
}

#[tokio::test]
async fn the_consent_page_is_a_hand_off_that_never_redirects_off_smartrecruiters() {
    let (cluster, sim, operator, urls) = partner_setup().await;
    let get = |query: &str| {
        let url = format!("{}{query}", urls.consent);
        async move {
            let answer = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .send()
                .await
                .unwrap();
            let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
            (status, headers, answer.text().await.unwrap())
        }
    };
    let (status, headers, html) =
        get("?companyId=ACME&redirect=https%3A%2F%2Fwww.smartrecruiters.com%2Fapp%3Fx%3D1").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<code>ACME</code>") && html.contains("administrator"),
        "{html}"
    );
    assert!(
        html.contains("href=\"https://www.smartrecruiters.com/app?x=1\""),
        "{html}"
    );
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors https://smartrecruiters.com")
    );
    assert!(!headers.contains_key("location"), "a page, not a redirect");
    let (status, _, html) = get("?companyId=ACME&redirect=https%3A%2F%2Fevil.example%2F").await;
    assert_eq!(status, 200);
    assert!(!html.contains("href") && !html.contains("evil"), "{html}");
    assert_eq!(get("?companyId=%3Cscript%3E").await.0, 400);
    assert_eq!(get("").await.0, 400);
    assert!(
        logs().contains("smartrecruiters consent requested") && logs().contains("company_id=ACME"),
        "the admin finds the request in the log"
    );
    // Nothing is created by an anonymous visit.
    assert_eq!(sim.total_calls(), 0);
    assert!(
        cluster
            .integrations()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    operator.stop().await;
}

/// Tokens carry everything needed to check them: one replica issues the
/// token, another (the standby) receives the callback, the leader acts.
#[tokio::test]
async fn a_token_issued_by_one_replica_is_accepted_by_another_and_the_leader_acts() {
    let (cluster, sim) = setup(Some(1800)).await;
    provider(
        &cluster,
        &sim,
        PROVIDER,
        json!({"partnerEndpoints": {"tokenLifetime": "10m"}}),
    )
    .await;
    master_secret(&cluster).await;
    let replica = |name: &'static str| {
        let mut args = INBOUND.to_vec();
        args.extend(["--leader-elect", "--instance", name, "--lease-duration-seconds", "4"]);
        args
    };
    let a = cluster.start_operator_with(&replica("replica-a")).await;
    cluster.integration("acme", partner_spec("ACME", "out", true)).await;
    cluster.wait_ready("acme", "True", None).await;
    let b = cluster.start_operator_with(&replica("replica-b")).await;
    let lease: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(cluster.client.clone(), &cluster.operator_namespace());
    let holder = lease
        .get("integration-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("replica-a"));

    // The token from the leader's endpoint, the callback to the standby's.
    let (on_a, on_b) = (
        partner_urls(&a, &cluster, PROVIDER),
        partner_urls(&b, &cluster, PROVIDER),
    );
    sim.register_partner_app(APP, Some(&on_a.token), Some(&on_b.callback));
    let created = sim.integrations()[0].clone();
    let notified = sim.disable_and_notify(&created.integration_id).await.unwrap();
    assert_eq!(
        (notified.token_status, notified.callback_status),
        (Some(200), Some(200))
    );
    cluster.wait_ready("acme", "False", Some("ReauthRequired")).await;
    // The lifetime the ClusterProvider asked for.
    let data = cluster.secret_data("out").await.unwrap();
    let (_, body, _) = token_request(
        &on_b.token,
        Some((&data["partner_client_id"], &data["partner_client_secret"])),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(body["expires_in"], 600);
    b.stop().await;
    a.stop().await;
    let mut canaries = vec![data["partner_client_secret"].clone(), notified.token.unwrap()];
    canaries.extend(body["access_token"].as_str().map(String::from));
    cluster.assert_nowhere_in(&["acme"], &canaries).await;
}
