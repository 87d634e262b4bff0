//! The operator end to end with the `cloud-elements` driver's
//! `elementInstance` flow: the real controller over real HTTP, against the
//! real kube-apiserver (testkit's control plane) and the Cloud Elements / SAP
//! Open Connectors platform simulator.

use std::time::Duration;

use crate::common::{Cluster, eventually, ready};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use testkit::sim::{
    Fault,
    cloud_elements::{CloudElementsSim, routes},
};

/// Canaries: they must never appear in a log line, an Event or a status.
const USER_SECRET: &str = "canary-ce-user-secret-7f3a91";
const ORG_SECRET: &str = "canary-ce-org-secret-2b6c04";
const SR_KEY: &str = "canary-ce-smartrecruiters-key-e85d1f";
const NEW_USER_SECRET: &str = "canary-ce-user-secret-rotated-51aa0c";
const NEW_SR_KEY: &str = "canary-ce-smartrecruiters-key-rotated-c7d2e9";
const NAME: &str = "acme";
const OUTPUT: &str = "acme-elements";
const INPUT: &str = "ce-platform";

async fn setup(revalidate: &str) -> (Cluster, CloudElementsSim) {
    let cluster = Cluster::start().await;
    let sim = CloudElementsSim::start().await.expect("simulator starts");
    sim.add_user(USER_SECRET, ORG_SECRET);
    sim.add_element_api_key(SR_KEY);
    cluster
        .cluster_provider(
            "cloud-elements",
            json!({
                "type": "cloud-elements",
                "baseUrl": sim.base_url(),
                "revalidateInterval": revalidate,
                "requestTimeout": "1s",
            }),
        )
        .await;
    cluster
        .input_secret(
            INPUT,
            &[
                ("user_secret", USER_SECRET),
                ("organization_secret", ORG_SECRET),
                ("smartrecruiters_api_key", SR_KEY),
            ],
        )
        .await;
    (cluster, sim)
}

fn spec(extra: serde_json::Value) -> serde_json::Value {
    let mut flow = json!({
        "elementKey": "smartrecruiters",
        "secretConfiguration": {"api.key": "smartrecruiters_api_key"},
    });
    if let (Some(f), serde_json::Value::Object(e)) = (flow.as_object_mut(), extra) {
        f.extend(e);
    }
    json!({
        "provider": "cloud-elements",
        "secretRef": {"name": INPUT},
        "elementInstance": flow,
        "target": {"name": OUTPUT},
    })
}

/// The only instance on the platform.
fn only_instance(sim: &CloudElementsSim) -> testkit::sim::cloud_elements::Instance {
    let all = sim.instances();
    assert_eq!(all.len(), 1, "expected exactly one instance: {all:?}");
    all.into_values().next().unwrap()
}

/// What an application does with the output Secret: a hub call with the
/// published header, to the published base URL. Returns the HTTP status.
async fn app_call(cluster: &Cluster) -> u16 {
    let data = cluster.secret_data(OUTPUT).await.expect("output Secret exists");
    reqwest::Client::new()
        .get(format!("{}/hubs/humancapital/candidates", data["base_url"]))
        .header(data["header_name"].as_str(), data["header_value"].as_str())
        .send()
        .await
        .expect("simulator answers")
        .status()
        .as_u16()
}

async fn assert_no_secret_anywhere(cluster: &Cluster, sim: &CloudElementsSim) {
    let mut canaries: Vec<String> = [USER_SECRET, ORG_SECRET, SR_KEY, NEW_USER_SECRET, NEW_SR_KEY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    canaries.extend(sim.tokens());
    cluster.assert_nowhere(NAME, &canaries).await;
}

#[tokio::test]
async fn one_instance_is_created_tagged_validated_and_its_token_published() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    let created = cluster.integration(NAME, spec(json!({}))).await;
    let uid = created.metadata.uid.unwrap();
    let i = cluster.wait_ready(NAME, "True", Some("Issued")).await;

    let instance = only_instance(&sim);
    assert_eq!(sim.calls(routes::CREATE_INSTANCE), 1);
    assert_eq!(
        instance.name,
        format!("{}-acme", cluster.namespace),
        "default name is <namespace>-<name>"
    );
    assert_eq!(instance.element_key, "smartrecruiters");
    assert_eq!(instance.configuration.get("api.key").map(String::as_str), Some(SR_KEY));
    assert_eq!(instance.tags, vec![format!("integration-operator:{uid}")]);
    assert!(sim.calls(routes::GET_INSTANCE) >= 1, "the instance was not validated");

    let data = cluster.secret_data(OUTPUT).await.unwrap();
    // The header element calls need; not the organization-wide secret.
    let header = format!("User {USER_SECRET}, Element {}", instance.token);
    for (key, value) in &data {
        assert!(
            !value.contains(ORG_SECRET),
            "the Organization secret is in output Secret key {key}"
        );
    }
    assert_eq!(data["header_name"], "Authorization");
    assert_eq!(data["header_value"], header);
    assert_eq!(data["authorization"], header);
    assert_eq!(data["integration_id"], instance.id.to_string());
    assert_eq!(data["base_url"], sim.base_url());
    assert!(!data.contains_key("expires_at"), "an instance token has no expiry");
    let status = i.status.unwrap();
    assert_eq!(status.integration_id, Some(instance.id.to_string()));
    assert_eq!(status.expires_at, None);
    assert_eq!(app_call(&cluster).await, 200, "the application's hub call fails");

    // A restarted operator finds everything in the cluster: no new instance.
    operator.stop().await;
    let operator = cluster.start_operator().await;
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(sim.created_count(), 1);
    assert_no_secret_anywhere(&cluster, &sim).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_failed_validation_after_the_post_never_creates_a_second_instance() {
    let (cluster, sim) = setup("1h").await;
    sim.fail_next(routes::GET_INSTANCE, usize::MAX, Fault::status(503));
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let i = cluster.wait_ready(NAME, "False", Some("ProviderUnavailable")).await;
    let instance = only_instance(&sim);
    let message = ready(&i).message;
    assert!(
        message.contains("Cloud Elements") && message.contains(&format!("GET /instances/{}", instance.id)),
        "the message names the platform and the step: {message}"
    );
    // The one-shot answer is in the Secret already, before the step that failed.
    let data = cluster
        .secret_data(OUTPUT)
        .await
        .expect("the Secret holds the instance");
    assert_eq!(data["integration_id"], instance.id.to_string());
    assert_eq!(data["element_token"], instance.token);
    eventually(Duration::from_secs(10), "validation retried", || async {
        (sim.calls(routes::GET_INSTANCE) >= 3).then_some(())
    })
    .await;

    operator.stop().await;
    sim.clear_faults();
    let operator = cluster.start_operator().await;
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(sim.calls(routes::CREATE_INSTANCE), 1, "the instance was created twice");
    assert_eq!(sim.created_count(), 1);
    assert_eq!(i.status.unwrap().integration_id, Some(instance.id.to_string()));
    assert_eq!(app_call(&cluster).await, 200);
    operator.stop().await;
}

#[tokio::test]
async fn a_failing_secret_write_after_the_post_never_creates_a_second_instance() {
    let (cluster, sim) = setup("1h").await;
    let faults = cluster.api().faults();
    let operator = cluster.start_operator().await;
    // Every write that would store the new instance (the output Secret's
    // create) fails, more often than one attempt retries.
    let secrets_path = format!("namespaces/{}/secrets", cluster.namespace);
    faults.fail_next(Some(reqwest::Method::POST), &secrets_path, usize::MAX, 500, None);
    cluster.integration(NAME, spec(json!({}))).await;
    let i = cluster.wait_ready(NAME, "False", Some("SecretWriteFailed")).await;
    assert!(!ready(&i).message.is_empty());
    assert!(cluster.secret_data(OUTPUT).await.is_none());
    // Retries keep failing to store it; none creates another instance.
    eventually(Duration::from_secs(10), "the lookup retried", || async {
        (sim.calls(routes::LIST_INSTANCES) >= 3).then_some(())
    })
    .await;
    assert_eq!(sim.created_count(), 1, "a failed write led to a second POST");

    // The operator dies with the answer nowhere in the cluster; a new one
    // finds the instance by its tag.
    operator.stop().await;
    faults.clear();
    let operator = cluster.start_operator().await;
    let i = cluster.wait_ready(NAME, "True", None).await;
    let instance = only_instance(&sim);
    assert_eq!(sim.calls(routes::CREATE_INSTANCE), 1, "the instance was created twice");
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(data["element_token"], instance.token);
    assert_eq!(i.status.unwrap().integration_id, Some(instance.id.to_string()));
    assert_eq!(app_call(&cluster).await, 200);
    assert!(
        cluster.has_event("SecretWriteFailed").await,
        "the failed write was not reported"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_create_answer_lost_to_a_timeout_or_a_failure_is_never_created_twice() {
    let (cluster, sim) = setup("1h").await;
    // The platform is slow (the instance is created after the operator gave
    // up waiting), then rate limits with and without Retry-After, fails,
    // and answers with a cut-off body: the operator retries through all of it.
    sim.fail_next(routes::CREATE_INSTANCE, 1, Fault::Delay(Duration::from_millis(1500)));
    sim.fail_next(routes::LIST_INSTANCES, 1, Fault::rate_limited(1));
    sim.fail_next(routes::LIST_INSTANCES, 1, Fault::status(429));
    sim.fail_next(routes::LIST_INSTANCES, 1, Fault::status(502));
    sim.fail_next(routes::LIST_INSTANCES, 1, Fault::Truncated);
    sim.fail_next(routes::LIST_INSTANCES, 1, Fault::Malformed);
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let instance = only_instance(&sim);
    assert_eq!(sim.created_count(), 1, "a lost answer led to a second instance");
    assert_eq!(sim.calls(routes::CREATE_INSTANCE), 1);
    assert!(sim.calls(routes::LIST_INSTANCES) >= 7);
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(data["element_token"], instance.token);
    assert_eq!(app_call(&cluster).await, 200);
    operator.stop().await;
}

#[tokio::test]
async fn provider_failures_on_each_step_read_as_what_they_are() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let good = cluster.secret_data(OUTPUT).await.unwrap();
    let id = only_instance(&sim).id;
    for (fault, reason) in [
        (Fault::status(503), "ProviderUnavailable"),
        (Fault::rate_limited(1), "ProviderRateLimited"),
        (Fault::status(429), "ProviderRateLimited"),
        (Fault::Malformed, "MalformedResponse"),
        (Fault::Truncated, "MalformedResponse"),
        (Fault::Delay(Duration::from_secs(3)), "ProviderTimeout"),
        (Fault::status(403), "PermissionDenied"),
    ] {
        sim.fail_next(routes::GET_INSTANCE, usize::MAX, fault.clone());
        let i = cluster.wait_ready(NAME, "False", Some(reason)).await;
        let message = ready(&i).message;
        assert!(
            message.contains("Cloud Elements") && message.contains(&format!("GET /instances/{id}")),
            "{fault:?}: the message names the platform and the step: {message}"
        );
        if matches!(reason, "ProviderRateLimited" | "ProviderTimeout") {
            assert!(
                message.contains(&format!(
                    "(ClusterProvider {})",
                    cluster.provider_name("cloud-elements")
                )),
                "{fault:?}: the message names the endpoint: {message}"
            );
        }
        assert_eq!(
            cluster.secret_data(OUTPUT).await.unwrap(),
            good,
            "the last good Secret changed"
        );
        sim.clear_faults();
        cluster.wait_ready(NAME, "True", None).await;
    }
    assert_eq!(sim.created_count(), 1);
    operator.stop().await;
}

#[tokio::test]
async fn refused_platform_secrets_need_reauth_and_recover_when_the_input_is_fixed() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let id = only_instance(&sim).id;

    // Someone resets the user secret on the platform.
    sim.revoke_user(USER_SECRET);
    let i = cluster.wait_ready(NAME, "False", Some("ReauthRequired")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("Cloud Elements refused")
            && message.contains("user_secret")
            && message.contains(&format!("GET /instances/{id}")),
        "{message}"
    );
    assert!(cluster.has_event("ReauthRequired").await);

    sim.add_user(NEW_USER_SECRET, ORG_SECRET);
    cluster
        .patch_secret_strings(INPUT, json!({"user_secret": NEW_USER_SECRET}))
        .await;
    cluster.wait_ready(NAME, "True", None).await;
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert!(data["header_value"].starts_with(&format!("User {NEW_USER_SECRET}, ")));
    assert_eq!(app_call(&cluster).await, 200);
    assert_eq!(sim.created_count(), 1);
    assert_no_secret_anywhere(&cluster, &sim).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_refused_element_key_needs_reauth_and_a_new_key_updates_the_instance_in_place() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let before = only_instance(&sim);

    sim.revoke_element_api_key(SR_KEY);
    let i = cluster.wait_ready(NAME, "False", Some("ReauthRequired")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("invalid") && message.contains("Cloud Elements"),
        "{message}"
    );

    sim.add_element_api_key(NEW_SR_KEY);
    cluster
        .patch_secret_strings(INPUT, json!({"smartrecruiters_api_key": NEW_SR_KEY}))
        .await;
    cluster.wait_ready(NAME, "True", None).await;
    let after = only_instance(&sim);
    assert_eq!(after.id, before.id);
    assert_eq!(
        after.token, before.token,
        "the token changed: the instance was replaced"
    );
    assert_eq!(after.configuration.get("api.key").map(String::as_str), Some(NEW_SR_KEY));
    assert_eq!(sim.calls(routes::UPDATE_INSTANCE), 1);
    assert_eq!(sim.created_count(), 1);
    assert_eq!(app_call(&cluster).await, 200);
    assert_no_secret_anywhere(&cluster, &sim).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_duplicate_instance_name_is_a_clear_conflict() {
    let (cluster, sim) = setup("1h").await;
    // Someone created an instance with the name the Integration would use.
    sim.create_instance(ORG_SECRET, &format!("{}-acme", cluster.namespace), &[]);
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let i = cluster.wait_ready(NAME, "False", Some("ProviderConflict")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("Cloud Elements")
            && message.contains("POST /instances")
            && message.contains(&format!("{}-acme", cluster.namespace))
            && message.contains("instanceName"),
        "the message says what collided and what to do: {message}"
    );
    assert_eq!(sim.created_count(), 1);

    // instanceName cannot be changed in place: the Integration is created
    // again under a free name (nothing had been created for it).
    cluster.delete_integration(NAME).await;
    cluster
        .integration(NAME, spec(json!({"instanceName": "acme-sr"})))
        .await;
    cluster.wait_ready(NAME, "True", None).await;
    assert_eq!(sim.created_count(), 2);
    assert!(sim.instances().values().any(|i| i.name == "acme-sr"));
    operator.stop().await;
}

#[tokio::test]
async fn a_vanished_instance_is_reported_and_replaced_only_when_asked() {
    let (cluster, sim) = setup("1s").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let old = only_instance(&sim).id;
    sim.remove_instance(old);
    let i = cluster.wait_ready(NAME, "False", Some("ElementInstanceGone")).await;
    let message = ready(&i).message;
    assert!(
        message.contains(&format!("integration-operator.io/retry={old}")),
        "the message says how to get a new instance: {message}"
    );
    assert_eq!(sim.created_count(), 1, "replaced without being asked");

    cluster
        .integrations()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"integration-operator.io/retry": old.to_string()}}})),
        )
        .await
        .unwrap();
    let i = cluster.wait_ready(NAME, "True", None).await;
    let new = only_instance(&sim);
    assert_ne!(new.id, old);
    assert_eq!(i.status.unwrap().integration_id, Some(new.id.to_string()));
    assert_eq!(app_call(&cluster).await, 200);
    assert_eq!(sim.created_count(), 2);
    operator.stop().await;
}

#[tokio::test]
async fn deleting_the_integration_deletes_the_instance() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert!(
        i.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"integration-operator.io/cleanup".to_string())
    );
    let id = only_instance(&sim).id;
    cluster.delete_integration(NAME).await;
    assert_eq!(sim.instance_count(), 0, "the instance was left behind");
    assert_eq!(sim.deleted(), vec![id]);
    assert!(cluster.has_event("CleanedUp").await);
    operator.stop().await;
}

#[tokio::test]
async fn retain_keeps_the_instance() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"deletionPolicy": "Retain"})))
        .await;
    let i = cluster.wait_ready(NAME, "True", None).await;
    assert!(i.metadata.finalizers.unwrap_or_default().is_empty());
    let id = only_instance(&sim).id;
    cluster.delete_integration(NAME).await;
    assert!(sim.instances().contains_key(&id), "a retained instance was deleted");
    assert_eq!(sim.calls(routes::DELETE_INSTANCE), 0);
    operator.stop().await;
}

#[tokio::test]
async fn a_failing_delete_keeps_the_finalizer_is_retried_with_backoff_and_reported() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let id = only_instance(&sim).id;

    sim.fail_next(routes::DELETE_INSTANCE, usize::MAX, Fault::status(503));
    cluster
        .integrations()
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    let i = cluster.wait_ready(NAME, "False", Some("CleanupFailed")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("Cloud Elements") && message.contains(&format!("DELETE /instances/{id}")),
        "{message}"
    );
    assert!(i.metadata.deletion_timestamp.is_some());
    // A transient failure is retried with backoff (200 ms doubling in the
    // tests), not at the slow pace of a failure a person must fix (3 s).
    let first = eventually(Duration::from_secs(10), "the first DELETE", || async {
        sim.call_times(routes::DELETE_INSTANCE).first().copied()
    })
    .await;
    let times = eventually(Duration::from_secs(10), "four DELETEs", || async {
        let t = sim.call_times(routes::DELETE_INSTANCE);
        (t.len() >= 4).then_some(t)
    })
    .await;
    assert!(
        times[3] - first < Duration::from_secs(3),
        "the delete is not retried with backoff: {:?}",
        times[3] - first
    );
    assert!(
        times[3] - times[2] >= Duration::from_millis(300),
        "retried in a tight loop: {:?}",
        times[3] - times[2]
    );
    cluster.assert_cleanup_held(NAME).await;
    assert!(sim.instances().contains_key(&id));

    sim.clear_faults();
    cluster.wait_gone(NAME).await;
    assert_eq!(sim.deleted(), vec![id]);
    operator.stop().await;
}

#[tokio::test]
async fn deleting_before_the_id_was_stored_still_deletes_the_instance() {
    let (cluster, sim) = setup("1h").await;
    let faults = cluster.api().faults();
    let operator = cluster.start_operator().await;
    let secrets_path = format!("namespaces/{}/secrets", cluster.namespace);
    faults.fail_next(Some(reqwest::Method::POST), &secrets_path, usize::MAX, 500, None);
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "False", Some("SecretWriteFailed")).await;
    let id = only_instance(&sim).id;
    cluster.delete_integration(NAME).await;
    assert_eq!(
        sim.deleted(),
        vec![id],
        "an instance whose id never reached the Secret was left behind"
    );
    faults.clear();
    operator.stop().await;
}

#[tokio::test]
async fn an_edited_instance_id_never_deletes_someone_elses_instance() {
    let (cluster, sim) = setup("1h").await;
    let other = sim.create_instance(ORG_SECRET, "another-teams-instance", &["team-b"]);
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let ours = sim.instances().values().find(|i| i.id != other).unwrap().id;
    // Someone with write access to the output Secret points it elsewhere
    // and stops the operator from repairing it.
    operator.stop().await;
    cluster
        .patch_secret_strings(OUTPUT, json!({"integration_id": other.to_string()}))
        .await;
    cluster
        .integrations()
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    let operator = cluster.start_operator().await;
    let i = cluster.wait_ready(NAME, "False", Some("CleanupFailed")).await;
    let message = ready(&i).message;
    assert!(message.contains("does not carry the tag"), "{message}");
    assert!(
        sim.instances().contains_key(&other),
        "another team's instance was deleted"
    );
    assert_eq!(sim.calls(routes::DELETE_INSTANCE), 0);
    assert!(sim.instances().contains_key(&ours));
    operator.stop().await;
}

/// The documented example (examples/cloud-elements.yaml), pointed at the
/// simulator and the test namespace, works as it stands.
#[tokio::test]
async fn the_example_manifests_work() {
    let cluster = Cluster::start().await;
    let sim = CloudElementsSim::start().await.expect("simulator starts");
    sim.add_user(USER_SECRET, ORG_SECRET);
    sim.add_element_api_key(SR_KEY);
    let values = [
        ("user_secret", USER_SECRET),
        ("organization_secret", ORG_SECRET),
        ("smartrecruiters_api_key", SR_KEY),
    ];
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cloud-elements.yaml")).unwrap();
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
                let keys: Vec<String> = v["stringData"].as_object().unwrap().keys().cloned().collect();
                let data: Vec<(&str, &str)> = keys
                    .iter()
                    .map(|k| {
                        let value = values.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
                        (k.as_str(), value.unwrap_or_else(|| panic!("unexpected input key {k}")))
                    })
                    .collect();
                assert_eq!(data.len(), values.len(), "the example Secret lacks a key");
                cluster
                    .input_secret(v["metadata"]["name"].as_str().unwrap(), &data)
                    .await;
            }
            "Integration" => integrations.push(v),
            other => panic!("unexpected kind {other}"),
        }
    }
    let operator = cluster.start_operator().await;
    for v in &integrations {
        let name = v["metadata"]["name"].as_str().unwrap();
        cluster.integration(name, v["spec"].clone()).await;
        cluster.wait_ready(name, "True", None).await;
        let data = cluster
            .secret_data(v["spec"]["target"]["name"].as_str().unwrap())
            .await
            .unwrap();
        assert!(sim.accepts(&data["header_value"]));
    }
    assert_eq!(sim.instance_count(), integrations.len());
    let named = integrations[0]["spec"]["elementInstance"]["instanceName"].as_str();
    assert!(sim.instances().values().any(|i| Some(i.name.as_str()) == named));
    operator.stop().await;
}

#[tokio::test]
async fn the_organization_secret_is_published_only_when_asked() {
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(NAME, spec(json!({"publishOrganizationSecret": true})))
        .await;
    cluster.wait_ready(NAME, "True", Some("Issued")).await;
    let instance = only_instance(&sim);
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(
        data["authorization"],
        format!(
            "User {USER_SECRET}, Organization {ORG_SECRET}, Element {}",
            instance.token
        )
    );
    assert_eq!(app_call(&cluster).await, 200);

    // Turned off again: the next issue drops it from the Secret.
    cluster
        .integrations()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"elementInstance": {"publishOrganizationSecret": null}}})),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the header without the Organization secret",
        || async {
            let data = cluster.secret_data(OUTPUT).await?;
            (data["authorization"] == format!("User {USER_SECRET}, Element {}", instance.token)).then_some(())
        },
    )
    .await;
    assert_eq!(sim.created_count(), 1);
    operator.stop().await;
}

#[tokio::test]
async fn an_organization_with_thousands_of_instances_is_searched_by_tag_not_read_whole() {
    let (cluster, sim) = setup("1h").await;
    // Listed whole, these are well over the 1 MiB the operator reads of an answer.
    for n in 0..2500 {
        sim.create_instance(ORG_SECRET, &format!("other-{n}"), &["someone-else"]);
    }
    let operator = cluster.start_operator().await;
    let created = cluster.integration(NAME, spec(json!({}))).await;
    let uid = created.metadata.uid.unwrap();
    cluster.wait_ready(NAME, "True", Some("Issued")).await;
    assert_eq!(sim.created_count(), 2501);
    let mine: Vec<_> = sim
        .instances()
        .into_values()
        .filter(|i| i.tags.contains(&format!("integration-operator:{uid}")))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        cluster.secret_data(OUTPUT).await.unwrap()["integration_id"],
        mine[0].id.to_string()
    );
    operator.stop().await;
}

#[tokio::test]
async fn element_key_and_instance_name_cannot_be_changed_once_set() {
    let (cluster, _sim) = setup("1h").await;
    cluster.integration(NAME, spec(json!({}))).await;
    for (patch, field) in [
        (json!({"elementKey": "bamboohr"}), "elementKey cannot be changed"),
        (
            json!({"instanceName": "renamed"}),
            "instanceName cannot be set, changed or removed",
        ),
    ] {
        let err = cluster
            .integrations()
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"elementInstance": patch}})),
            )
            .await
            .expect_err("the edit must be refused at admission");
        let kube::Error::Api(status) = err else {
            panic!("expected an API error, got {err}")
        };
        assert_eq!(status.code, 422);
        assert!(
            status.message.contains(&format!("spec.elementInstance.{field}"))
                && status.message.contains("delete this Integration and create a new one"),
            "the refusal names the field and what to do instead: {}",
            status.message
        );
    }
    // The configuration stays editable (the instance is updated in place).
    cluster
        .integrations()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"elementInstance": {"configuration": {"x": "y"}}}})),
        )
        .await
        .expect("a configuration edit is accepted");
}

#[tokio::test]
async fn an_instance_made_for_another_name_is_never_published_as_ready() {
    // No re-validation racing the edit below: only the edit starts a reconcile.
    let (cluster, sim) = setup("1h").await;
    let operator = cluster.start_operator().await;
    cluster.integration(NAME, spec(json!({}))).await;
    cluster.wait_ready(NAME, "True", None).await;
    let data = cluster.secret_data(OUTPUT).await.unwrap();
    assert_eq!(data["instance_name"], format!("{}-acme", cluster.namespace));
    assert_eq!(data["instance_element_key"], "smartrecruiters");
    // The Secret holds an instance made under another name: what an edit of
    // instanceName leaves behind where the CRD's rule did not apply.
    cluster
        .patch_secret_strings(OUTPUT, json!({"instance_name": "team-a-old"}))
        .await;
    let i = cluster.wait_ready(NAME, "False", Some("ImmutableFieldChanged")).await;
    let message = ready(&i).message;
    assert!(
        message.contains("\"team-a-old\"")
            && message.contains(&format!("\"{}-acme\"", cluster.namespace))
            && message.contains("delete this Integration"),
        "{message}"
    );
    assert_eq!(sim.created_count(), 1, "no second instance");
    operator.stop().await;
}
