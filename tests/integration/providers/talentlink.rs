//! The operator end to end with the `cornerstone-talentlink` driver's
//! `basicAuth` flow: the real controller over real HTTP, against the real
//! kube-apiserver (testkit's control plane) and TalentLink REST simulators
//! (one per regional host).

use std::time::Duration;

use crate::common::{Cluster, eventually, ready};
use base64::Engine;
use serde_json::json;
use testkit::sim::{
    Fault,
    talentlink::{TalentLinkSim, routes},
};

/// Canaries: they must never appear in a log line, an Event or a status.
const USERNAME: &str = "ACME:api-user:BO";
const PASSWORD: &str = "canary-tl-password-6e2f90";
const API_KEY: &str = "canary-tl-api-key-a41c7d";
const NEW_PASSWORD: &str = "canary-tl-password-rotated-0b93e5";
const NAME: &str = "acme-talentlink";
const OUTPUT: &str = "acme-talentlink-credentials";
const INPUT: &str = "talentlink-user";

/// A cluster whose ClusterProvider `talentlink-emea5` points at the
/// "regional" simulator; a second simulator stands for the shared proxy
/// and knows none of the tenant's credentials.
async fn setup(revalidate: &str) -> (Cluster, TalentLinkSim, TalentLinkSim) {
    let cluster = Cluster::start().await;
    let shared = TalentLinkSim::start().await.expect("simulator starts");
    let regional = TalentLinkSim::start().await.expect("simulator starts");
    regional.add_user(USERNAME, PASSWORD);
    regional.add_api_key(API_KEY, USERNAME);
    cluster
        .cluster_provider(
            "talentlink-shared",
            json!({"type": "cornerstone-talentlink", "baseUrl": shared.base_url()}),
        )
        .await;
    cluster
        .cluster_provider(
            "talentlink-emea5",
            json!({
                "type": "cornerstone-talentlink",
                "baseUrl": regional.base_url(),
                "revalidateInterval": revalidate,
                "requestTimeout": "1s",
            }),
        )
        .await;
    cluster
        .input_secret(
            INPUT,
            &[("username", USERNAME), ("password", PASSWORD), ("api_key", API_KEY)],
        )
        .await;
    (cluster, shared, regional)
}

fn spec() -> serde_json::Value {
    json!({
        "provider": "talentlink-emea5",
        "secretRef": {"name": INPUT},
        "basicAuth": {},
        "target": {"name": OUTPUT},
    })
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// What an application does with the output Secret: a REST read with the
/// Basic header and the `api_key` query parameter, at the published base
/// URL. Returns the HTTP status.
async fn app_call(cluster: &Cluster) -> u16 {
    let data = cluster.secret_data(OUTPUT).await.expect("output Secret exists");
    reqwest::Client::new()
        .get(format!("{}/position", data["base_url"]))
        .query(&[("api_key", data["api_key"].as_str())])
        .header(data["header_name"].as_str(), data["header_value"].as_str())
        .send()
        .await
        .expect("simulator answers")
        .status()
        .as_u16()
}

async fn assert_no_secret_anywhere(cluster: &Cluster) {
    let header = basic(USERNAME, PASSWORD);
    let encoded = header.trim_start_matches("Basic ");
    cluster
        .assert_nowhere(NAME, &[PASSWORD, API_KEY, NEW_PASSWORD, encoded])
        .await;
}

#[tokio::test]
async fn publishes_the_basic_header_the_api_key_and_the_regional_base_url() {
    let (cluster, shared, regional) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    let i = cluster.wait_ready(NAME, "True", Some("Issued")).await;

    let data = cluster.secret_data(OUTPUT).await.unwrap();
    let header = basic(USERNAME, PASSWORD);
    assert_eq!(data["header_name"], "Authorization");
    assert_eq!(data["header_value"], header);
    assert_eq!(data["authorization"], header);
    assert_eq!(data["api_key"], API_KEY);
    assert_eq!(
        data["base_url"],
        regional.base_url(),
        "not the ClusterProvider's regional host"
    );
    assert!(!data.contains_key("expires_at"), "TalentLink credentials do not expire");
    assert_eq!(i.status.unwrap().expires_at, None);
    assert_eq!(regional.calls(routes::DEPARTMENT), 1, "validated with one read");
    assert_eq!(shared.total_calls(), 0, "the other host was called");
    assert_eq!(app_call(&cluster).await, 200, "the application's call fails");
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn credentials_are_validated_again_every_revalidate_interval() {
    let (cluster, _shared, regional) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    cluster.wait_ready(NAME, "True", None).await;
    let times = eventually(Duration::from_secs(15), "three more validations", || async {
        let t = regional.call_times(routes::DEPARTMENT);
        (t.len() >= 4).then_some(t)
    })
    .await;
    // The interval runs from the validation's answer, so two calls are at
    // least the interval apart less the provider's own answer time (a few
    // milliseconds here). Validating on every event instead would give
    // gaps of a few milliseconds.
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "validated again after {:?}, not after revalidateInterval",
            pair[1] - pair[0]
        );
    }
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(app_call(&cluster).await, 200);
    operator.stop().await;
}

#[tokio::test]
async fn refused_credentials_need_reauth_naming_talentlink_and_the_step_and_recover() {
    let (cluster, _shared, regional) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    cluster.wait_ready(NAME, "True", None).await;
    let good = cluster.secret_data(OUTPUT).await.unwrap();

    // The API user's password is changed in TalentLink.
    regional.add_user(USERNAME, NEW_PASSWORD);
    let i = cluster.wait_ready(NAME, "False", Some("ReauthRequired")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("Cornerstone TalentLink refused")
            && message.contains("GET /department")
            && message.contains("password"),
        "the message names TalentLink, the step and what to fix: {message}"
    );
    assert!(cluster.has_event("ReauthRequired").await);
    assert_eq!(
        cluster.secret_data(OUTPUT).await.unwrap(),
        good,
        "the last Secret changed"
    );

    // Fixing the input Secret recovers without anything else.
    cluster
        .patch_secret_strings(INPUT, json!({"password": NEW_PASSWORD}))
        .await;
    cluster.wait_ready(NAME, "True", None).await;
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(data["header_value"], basic(USERNAME, NEW_PASSWORD));
    assert_eq!(app_call(&cluster).await, 200);

    // A revoked API key is refused the same way.
    regional.revoke_api_key(API_KEY);
    let i = cluster.wait_ready(NAME, "False", Some("ReauthRequired")).await;
    assert!(ready(&i).message.contains("api_key"), "{}", ready(&i).message);
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_key_awaiting_approval_is_permission_denied_until_cornerstone_approves_it() {
    let (cluster, _shared, regional) = setup("1h").await;
    regional.set_key_approved(API_KEY, false);
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    let i = cluster.wait_ready(NAME, "False", Some("PermissionDenied")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("Cornerstone TalentLink") && message.contains("approved") && message.contains("Webservices"),
        "{message}"
    );
    assert!(
        cluster.secret_data(OUTPUT).await.is_none(),
        "unvalidated credentials were published"
    );
    // Checked again by itself (slowly: 3 s in the tests) until approved.
    regional.set_key_approved(API_KEY, true);
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(app_call(&cluster).await, 200);
    operator.stop().await;
}

#[tokio::test]
async fn provider_failures_read_as_what_they_are_and_keep_the_last_good_secret() {
    let (cluster, _shared, regional) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    cluster.wait_ready(NAME, "True", None).await;
    let good = cluster.secret_data(OUTPUT).await.unwrap();
    for (fault, reason) in [
        (Fault::status(503), "ProviderUnavailable"),
        (Fault::rate_limited(1), "ProviderRateLimited"),
        (Fault::status(429), "ProviderRateLimited"),
        (Fault::Malformed, "MalformedResponse"),
        (Fault::Truncated, "MalformedResponse"),
        (Fault::Delay(Duration::from_secs(3)), "ProviderTimeout"),
        (Fault::status(404), "ProviderMisconfigured"),
    ] {
        regional.fail_next(routes::DEPARTMENT, usize::MAX, fault.clone());
        let i = cluster.wait_ready(NAME, "False", Some(reason)).await;
        let message = ready(&i).message;
        assert!(
            message.contains("Cornerstone TalentLink"),
            "{fault:?}: the message does not name TalentLink: {message}"
        );
        if matches!(reason, "ProviderRateLimited" | "ProviderTimeout") {
            // No provider text to show: the step, host and ClusterProvider say where.
            assert!(
                message.contains("GET /department")
                    && message.contains(&format!(
                        "(ClusterProvider {})",
                        cluster.provider_name("talentlink-emea5")
                    )),
                "{fault:?}: {message}"
            );
        }
        match &fault {
            Fault::Status {
                retry_after: Some(_), ..
            } => assert!(message.contains("Retry-After asked to wait 1s"), "{message}"),
            Fault::Delay(_) => assert!(message.contains("no answer within 1s"), "{message}"),
            _ => {}
        }
        assert_eq!(
            cluster.secret_data(OUTPUT).await.unwrap(),
            good,
            "the last good Secret changed"
        );
        regional.clear_faults();
        cluster.wait_ready(NAME, "True", None).await;
    }
    assert_no_secret_anywhere(&cluster).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_missing_input_key_is_named() {
    let cluster = Cluster::start().await;
    let regional = TalentLinkSim::start().await.expect("simulator starts");
    cluster
        .cluster_provider(
            "talentlink-emea5",
            json!({"type": "cornerstone-talentlink", "baseUrl": regional.base_url()}),
        )
        .await;
    cluster
        .input_secret(INPUT, &[("username", USERNAME), ("password", PASSWORD)])
        .await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    let i = cluster.wait_ready(NAME, "False", Some("InvalidInputSecret")).await;
    assert!(ready(&i).message.contains("api_key"), "{}", ready(&i).message);
    assert_eq!(regional.total_calls(), 0);
    operator.stop().await;
}

/// The documented example (examples/talentlink.yaml), pointed at the
/// simulator and the test namespace, works as it stands.
#[tokio::test]
async fn the_example_manifests_work() {
    let cluster = Cluster::start().await;
    let sim = TalentLinkSim::start().await.expect("simulator starts");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/talentlink.yaml")).unwrap();
    let mut integrations = vec![];
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str().unwrap() {
            "ClusterProvider" => {
                v["spec"]["baseUrl"] = json!(sim.base_url());
                cluster
                    .cluster_provider(v["metadata"]["name"].as_str().unwrap(), v["spec"].clone())
                    .await;
            }
            "Secret" => {
                let data = &v["stringData"];
                let username = data["username"].as_str().expect("username key").to_string();
                assert!(data["password"].is_string() && data["api_key"].is_string());
                assert_eq!(data.as_object().unwrap().len(), 3);
                sim.add_user(&username, PASSWORD);
                sim.add_api_key(API_KEY, &username);
                cluster
                    .input_secret(
                        v["metadata"]["name"].as_str().unwrap(),
                        &[("username", &username), ("password", PASSWORD), ("api_key", API_KEY)],
                    )
                    .await;
            }
            "Integration" => integrations.push(v),
            other => panic!("unexpected kind {other}"),
        }
    }
    let operator = cluster.start_operator().await;
    assert!(!integrations.is_empty());
    for v in &integrations {
        let name = v["metadata"]["name"].as_str().unwrap();
        cluster.integration(name, v["spec"].clone()).await;
        cluster.wait_ready(name, "True", None).await;
        let data = cluster
            .secret_data(v["spec"]["target"]["name"].as_str().unwrap())
            .await
            .unwrap();
        assert!(sim.accepts(&data["header_value"], &data["api_key"]));
        assert_eq!(data["base_url"], sim.base_url());
    }
    operator.stop().await;
}

#[tokio::test]
async fn the_validation_read_asks_for_the_smallest_page_so_a_large_tenant_validates() {
    let (cluster, _shared, regional) = setup("1h").await;
    // Every department in one answer would be well over the 1 MiB the
    // operator reads of an answer.
    regional.set_departments(20_000);
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec()).await;
    // Without the smallest page this never gets Ready: the read fails on size.
    cluster.wait_ready(NAME, "True", Some("Issued")).await;
    assert_eq!(regional.calls(routes::DEPARTMENT), 1, "validated with one read");
    operator.stop().await;
}
