//! Output templates end to end (`spec.target.type`, `spec.target.template`):
//! the real operator against the real kube-apiserver (testkit's control
//! plane) and the OAuth 2.0 and SmartRecruiters simulators. What a user
//! sees: a typed Secret with rendered keys that follow every renewal, a
//! template edit that rewrites the Secret without a provider call, a broken
//! template or a type change that leaves the last good Secret and says why
//! (without a credential value), and keys the apiserver refuses at
//! admission.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Cluster, eventually, logs};
use integration_operator::crd::Integration;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, PostParams},
};
use serde_json::json;
use testkit::sim::{oauth2::OAuth2Sim, smartrecruiters::SmartRecruitersSim};

const CLIENT_ID: &str = "client-a";
/// A canary: it must never appear in any log line, Event or status.
const CLIENT_SECRET: &str = "canary-secret-tpl-91c2e4";

async fn setup(lifetime: Option<u64>) -> (Cluster, OAuth2Sim) {
    let cluster = Cluster::start().await;
    let sim = OAuth2Sim::start().await.expect("simulator starts");
    sim.add_client(CLIENT_ID, CLIENT_SECRET);
    sim.set_token_lifetime(lifetime);
    cluster.oauth2_provider("auth", &sim.token_url(), json!({})).await;
    cluster
        .input_secret("creds", &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .await;
    (cluster, sim)
}

const CONFIG_JSON: &str = r#"{
  "baseUrl": {{ credentials.base_url | tojson }},
  "token": {{ credentials.access_token | tojson }},
  "expiresAt": {{ credentials.expires_at | tojson }},
  "integration": {{ (integration.namespace ~ "/" ~ integration.name) | tojson }}
}
"#;

/// A basic-auth Secret with a config.json, a .env file and a URL.
fn templated_spec() -> serde_json::Value {
    json!({
        "provider": "auth",
        "secretRef": {"name": "creds"},
        "clientCredentials": {"scopes": ["read"]},
        "target": {
            "name": "out",
            "type": "kubernetes.io/basic-auth",
            "template": {"data": {
                "username": "{{ integration.name }}",
                "password": "{{ credentials.access_token }}",
                "config.json": CONFIG_JSON,
                ".env": "API_TOKEN={{ credentials.access_token }}\nAPI_BASE_URL={{ credentials.base_url }}\n",
                "url": "{{ credentials.base_url }}v1/jobs?auth={{ credentials.authorization | urlencode }}",
            }},
        },
    })
}

fn plain_spec() -> serde_json::Value {
    json!({
        "provider": "auth",
        "secretRef": {"name": "creds"},
        "clientCredentials": {"scopes": ["read"]},
        "target": {"name": "out", "labels": {"team": "a"}},
    })
}

/// Replaces `spec.target` as `kubectl edit` would (a whole-object update).
async fn set_target(cluster: &Cluster, name: &str, target: serde_json::Value) {
    let api = cluster.integrations();
    let mut i = api.get(name).await.unwrap();
    i.spec.target = Some(Box::new(serde_json::from_value(target).expect("a valid target")));
    api.replace(name, &PostParams::default(), &i)
        .await
        .expect("Integration updated");
}

fn ready(i: &Integration) -> (String, String) {
    let c = i
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    (c.reason.clone(), c.message.clone())
}

/// Checks every rendered key against the issued ones of the same Secret.
fn assert_rendered_from_its_own_token(data: &BTreeMap<String, String>, sim: &OAuth2Sim) {
    let token = &data["access_token"];
    assert!(
        sim.is_valid_token(token),
        "the Secret holds a token the provider accepts"
    );
    assert_eq!(data["password"], *token);
    assert_eq!(data["username"], "api");
    let config: serde_json::Value = serde_json::from_str(&data["config.json"]).expect("config.json is JSON");
    assert_eq!(config["token"], *token);
    assert_eq!(config["baseUrl"], "https://api.example.com/");
    assert_eq!(config["expiresAt"], data["expires_at"]);
    assert!(config["integration"].as_str().unwrap().ends_with("/api"));
    assert!(
        data[".env"].lines().any(|l| l == format!("API_TOKEN={token}")),
        "{}",
        data[".env"]
    );
    assert!(data[".env"].ends_with('\n'), "the .env file keeps its last newline");
    let url = url::Url::parse(&data["url"]).expect("a URL");
    assert!(
        data["url"].contains("auth=Bearer%20sim-"),
        "urlencoded: {}",
        data["url"]
    );
    let auth = url.query_pairs().find(|(k, _)| k == "auth").unwrap().1;
    assert_eq!(auth, format!("Bearer {token}"));
}

#[tokio::test]
async fn a_basic_auth_secret_with_rendered_keys_follows_every_renewal() {
    let (cluster, sim) = setup(Some(3)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", templated_spec()).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;

    let secret: Secret = cluster.secrets().get("out").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let first = cluster.secret_data("out").await.unwrap();
    assert_rendered_from_its_own_token(&first, &sim);

    // Two renewals: every version of the Secret is consistent.
    let mut tokens = vec![first["access_token"].clone()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokens.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no two renewals in 15 s");
        let data = cluster.secret_data("out").await.unwrap();
        assert_rendered_from_its_own_token(&data, &sim);
        if tokens.last() != Some(&data["access_token"]) {
            tokens.push(data["access_token"].clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_ready("api", "True", Some("Renewed")).await;
    operator.stop().await;
}

#[tokio::test]
async fn template_edits_rewrite_the_secret_without_a_provider_call() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", plain_spec()).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let issued = cluster.secret_data("out").await.unwrap();
    let token = issued["access_token"].clone();
    let calls = sim.token_calls();
    assert_eq!(calls, 1);

    // Templates added to an Integration that had none.
    set_target(
        &cluster,
        "api",
        json!({"name": "out", "labels": {"team": "a"}, "template": {"data": {
            "config.json": "{\"token\": {{ credentials.access_token | tojson }}}",
            "old.env": "TOKEN={{ credentials.access_token }}",
        }}}),
    )
    .await;
    let data = eventually(Duration::from_secs(15), "the templates rendered", || async {
        let data = cluster.secret_data("out").await?;
        data.contains_key("old.env").then_some(data)
    })
    .await;
    assert_eq!(data["old.env"], format!("TOKEN={token}"));
    let config: serde_json::Value = serde_json::from_str(&data["config.json"]).unwrap();
    assert_eq!(config["token"], token);

    // One template renamed and changed, one left as it was.
    set_target(
        &cluster,
        "api",
        json!({"name": "out", "labels": {"team": "a"}, "template": {"data": {
            "config.json": "{\"token\": {{ credentials.access_token | tojson }}}",
            "app.env": "export TOKEN={{ credentials.access_token }}\n",
        }}}),
    )
    .await;
    let data = eventually(Duration::from_secs(15), "the new template rendered", || async {
        let data = cluster.secret_data("out").await?;
        (data.contains_key("app.env") && !data.contains_key("old.env")).then_some(data)
    })
    .await;
    assert_eq!(data["app.env"], format!("export TOKEN={token}\n"));

    // Templates removed: the Secret is the plain layout again.
    set_target(&cluster, "api", json!({"name": "out", "labels": {"team": "a"}})).await;
    let data = eventually(Duration::from_secs(15), "the rendered keys removed", || async {
        let data = cluster.secret_data("out").await?;
        (!data.contains_key("app.env") && !data.contains_key("config.json")).then_some(data)
    })
    .await;
    assert_eq!(data, issued, "back to exactly the issued keys and values");

    // The Secret is written before status: wait for the status of the last edit.
    eventually(Duration::from_secs(10), "status observes the last edit", || async {
        let i = cluster.integrations().get("api").await.ok()?;
        (i.status.as_ref()?.observed_generation == i.metadata.generation).then_some(())
    })
    .await;
    cluster.wait_ready("api", "True", None).await;
    assert_eq!(sim.token_calls(), calls, "a template edit called the provider");
    assert!(cluster.has_event("Rerendered").await, "no Rerendered Event");

    // And the rewritten Secret is current: a restart neither calls nor writes.
    operator.stop().await;
    let counters = cluster.api().counters();
    let writes = counters.writes();
    let operator = cluster.start_operator().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.token_calls(), calls, "the restart made a provider call");
    assert_eq!(counters.writes(), writes, "the restart wrote to the API");
    operator.stop().await;
}

/// A key whose template is removed goes, even one the Secret was created
/// with and whose value never changed (server-side apply alone would keep
/// it: the create that made the Secret owns it too).
#[tokio::test]
async fn a_removed_template_takes_its_key_with_it() {
    let (cluster, _sim) = setup(Some(3)).await;
    let operator = cluster.start_operator().await;
    let mut spec = plain_spec();
    spec["target"]["template"] = json!({"data": {
        "static.txt": "always the same",
        "token.txt": "{{ credentials.access_token }}",
    }});
    cluster.integration("api", spec).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(data["static.txt"], "always the same");
    // Renewed in place: the constant key is written again, unchanged (and
    // renewals go on while the template is edited).
    cluster.wait_ready("api", "True", Some("Renewed")).await;

    set_target(
        &cluster,
        "api",
        json!({"name": "out", "labels": {"team": "a"}, "template": {"data": {
            "token.txt": "{{ credentials.access_token }}",
        }}}),
    )
    .await;
    let data = eventually(Duration::from_secs(15), "static.txt removed", || async {
        let data = cluster.secret_data("out").await?;
        (!data.contains_key("static.txt")).then_some(data)
    })
    .await;
    assert_eq!(
        data.get("token.txt"),
        data.get("access_token"),
        "{:?}",
        data.keys().collect::<Vec<_>>()
    );
    // Renewals after the edit keep it that way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let data = cluster.secret_data("out").await.unwrap();
    assert!(!data.contains_key("static.txt"));
    assert_eq!(data.get("token.txt"), data.get("access_token"));
    operator.stop().await;
}

#[tokio::test]
async fn a_broken_template_keeps_the_last_good_secret_and_says_why_without_values() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", templated_spec()).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let good = cluster.secret_data("out").await.unwrap();
    let calls = sim.token_calls();

    let mut target = templated_spec()["target"].clone();
    // A syntax error on line 3 of config.json.
    target["template"]["data"]["config.json"] =
        json!("{\n  \"a\": 1,\n  \"token\": {{ credentials.access_token | tojson }\n}\n");
    set_target(&cluster, "api", target).await;
    let i = cluster.wait_ready("api", "False", Some("InvalidTemplate")).await;
    let (_, message) = ready(&i);
    assert!(
        message.contains(r#"spec.target.template.data["config.json"], line 3: syntax error"#),
        "{message}"
    );

    // A template that fails on the value itself: text is not a number.
    let mut target = templated_spec()["target"].clone();
    target["template"]["data"]["url"] = json!("{{ credentials.base_url }}?n={{ credentials.access_token | int + 1 }}");
    set_target(&cluster, "api", target).await;
    let i = eventually(Duration::from_secs(15), "a condition naming the url key", || async {
        let i = cluster.integrations().get("api").await.ok()?;
        ready(&i)
            .1
            .contains(r#"data["url"], line 1: invalid operation"#)
            .then_some(i)
    })
    .await;
    assert_eq!(ready(&i).0, "InvalidTemplate");

    // A misspelt credential key names the keys there are.
    let mut target = templated_spec()["target"].clone();
    target["template"]["data"]["password"] = json!("{{ credentials.acess_token }}");
    set_target(&cluster, "api", target).await;
    let i = eventually(
        Duration::from_secs(15),
        "a condition naming the password key",
        || async {
            let i = cluster.integrations().get("api").await.ok()?;
            ready(&i)
                .1
                .contains(r#"data["password"], line 1: undefined value"#)
                .then_some(i)
        },
    )
    .await;
    assert!(ready(&i).1.contains("access_token, authorization"), "{}", ready(&i).1);

    // Through all of it: the last good Secret, untouched, and no call.
    assert_eq!(
        cluster.secret_data("out").await.unwrap(),
        good,
        "the Secret was touched"
    );
    assert_eq!(sim.token_calls(), calls, "a broken template called the provider");
    assert!(cluster.has_event("InvalidTemplate").await, "no Warning Event");

    // Fixed: rendered again, still without a call.
    set_target(&cluster, "api", templated_spec()["target"].clone()).await;
    cluster.wait_ready("api", "True", None).await;
    let fixed = cluster.secret_data("out").await.unwrap();
    assert_eq!(fixed, good);
    assert_eq!(sim.token_calls(), calls);
    operator.stop().await;

    // No credential value in any message, Event or log line.
    let tokens = sim.issued_tokens();
    assert!(!tokens.is_empty());
    for (what, text) in [
        ("logs", logs()),
        ("events", cluster.events_text().await),
        ("status", cluster.integration_yaml("api").await),
    ] {
        assert!(!text.contains(CLIENT_SECRET), "the client secret appeared in {what}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "an access token appeared in {what}");
        }
    }
}

#[tokio::test]
async fn a_secret_type_change_is_refused_until_the_secret_is_deleted() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", plain_spec()).await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let before = cluster.secret_data("out").await.unwrap();
    let calls = sim.token_calls();

    // The same target with a type and templates: nothing else changes.
    let mut target = templated_spec()["target"].clone();
    target["labels"] = json!({"team": "a"});
    set_target(&cluster, "api", target).await;
    let i = cluster.wait_ready("api", "False", Some("SecretTypeChanged")).await;
    let (_, message) = ready(&i);
    assert!(message.contains(r#"Secret "out" has type "Opaque""#), "{message}");
    assert!(message.contains("kubernetes.io/basic-auth"), "{message}");
    assert!(message.contains(r#"delete Secret "out""#), "{message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let secret: Secret = cluster.secrets().get("out").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        cluster.secret_data("out").await.unwrap(),
        before,
        "the Secret was touched"
    );
    assert_eq!(sim.token_calls(), calls, "a type change called the provider");

    // Doing what the condition says: the Secret comes back with the new type.
    cluster.secrets().delete("out", &DeleteParams::default()).await.unwrap();
    cluster.wait_ready("api", "True", None).await;
    let secret: Secret = eventually(Duration::from_secs(15), "the Secret written again", || async {
        cluster.secrets().get_opt("out").await.ok()?
    })
    .await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_rendered_from_its_own_token(&cluster.secret_data("out").await.unwrap(), &sim);
    operator.stop().await;
}

/// What the apiserver refuses at admission, before the operator sees it.
#[tokio::test]
async fn admission_refuses_bad_keys_collisions_and_a_basic_auth_secret_without_username() {
    let (cluster, _sim) = setup(Some(3600)).await;
    let create = |name: &str, target: serde_json::Value| {
        let mut spec = plain_spec();
        spec["target"] = target;
        // Untyped, as kubectl sends it: the Rust types would refuse some
        // of these before the apiserver sees them.
        let i: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "integration-operator.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": spec,
        }))
        .unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(
            cluster.client.clone(),
            &cluster.namespace,
            &ApiResource::erase::<Integration>(&()),
        );
        async move { api.create(&PostParams::default(), &i).await }
    };
    let refused = |result: Result<DynamicObject, kube::Error>| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{}", status.message);
            status.message
        }
        Ok(_) => panic!("admitted"),
        Err(e) => panic!("unexpected error {e}"),
    };

    for key in ["a/b", "with space", "..hidden", "."] {
        let message = refused(create("bad-key", json!({"template": {"data": {key: "x"}}})).await);
        assert!(message.contains("must be a valid Secret key"), "{key}: {message}");
    }
    let message = refused(create("taken", json!({"template": {"data": {"access_token": "x"}}})).await);
    assert!(message.contains("writes the issued credentials under"), "{message}");
    let message = refused(
        create(
            "no-user",
            json!({"type": "kubernetes.io/basic-auth", "template": {"data": {"config.json": "{}"}}}),
        )
        .await,
    );
    assert!(message.contains("needs a `username` or `password` key"), "{message}");
    let message = refused(create("tls", json!({"type": "kubernetes.io/tls"})).await);
    assert!(message.contains("Unsupported value"), "{message}");
    let many: serde_json::Map<String, serde_json::Value> = (0..40).map(|n| (format!("k{n}"), json!("x"))).collect();
    refused(create("many", json!({"template": {"data": many}})).await);
    let long = "x".repeat(20_000);
    refused(create("long", json!({"template": {"data": {"k": long}}})).await);
    // And what is fine is admitted.
    create(
        "fine",
        json!({"type": "kubernetes.io/basic-auth", "template": {"data": {"username": "u", ".env": "A=1"}}}),
    )
    .await
    .expect("a valid template is admitted");
}

/// A one-shot flow (SmartRecruiters partner integration) keeps its state in
/// the output Secret: rendered keys are never read back as its state, a
/// template edit creates nothing at the provider, and renewals go on.
#[tokio::test]
async fn a_partner_integration_renders_basic_auth_and_never_posts_again() {
    const APP: &str = "my-app";
    const MASTER_SECRET: &str = "canary-master-secret-tpl-5f1a";
    let cluster = Cluster::start().await;
    let sim = SmartRecruitersSim::start().await.expect("simulator starts");
    sim.set_token_lifetime(Some(3));
    sim.add_master_client("partner-master", MASTER_SECRET, &[APP]);
    cluster
        .oauth2_provider(
            "smartrecruiters",
            &sim.token_url(),
            json!({"type": "smartrecruiters", "baseUrl": sim.url(), "clientAuthMethod": "client_secret_post"}),
        )
        .await;
    cluster
        .input_secret(
            "master",
            &[("client_id", "partner-master"), ("client_secret", MASTER_SECRET)],
        )
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "acme",
            json!({
                "provider": "smartrecruiters",
                "secretRef": {"name": "master"},
                "partnerIntegration": {"appId": APP, "companyId": "ACME"},
                "target": {
                    "name": "out",
                    "type": "kubernetes.io/basic-auth",
                    "template": {"data": {
                        "username": "{{ credentials.client_id }}",
                        "password": "{{ credentials.client_secret }}",
                        "bearer": "{{ credentials.authorization }}",
                    }},
                },
            }),
        )
        .await;
    cluster.wait_ready("acme", "True", Some("Issued")).await;
    let created = sim.integrations();
    assert_eq!(created.len(), 1);
    let secret: Secret = cluster.secrets().get("out").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(data["username"], created[0].client_id);
    assert_eq!(data["password"], created[0].client_secret);

    // Renewals resume from the Secret (with its rendered keys in it).
    let first = data["access_token"].clone();
    eventually(Duration::from_secs(15), "a renewal", || async {
        let data = cluster.secret_data("out").await?;
        (data["access_token"] != first).then_some(())
    })
    .await;
    let i = cluster.wait_ready("acme", "True", Some("Renewed")).await;
    assert!(ready(&i).1.contains("valid until"));
    let data = cluster.secret_data("out").await.unwrap();
    assert_eq!(data["bearer"], data["authorization"]);
    assert_eq!(data["username"], created[0].client_id);

    // A template edit.
    let posts = sim.integration_posts().len();
    set_target(
        &cluster,
        "acme",
        json!({"name": "out", "type": "kubernetes.io/basic-auth", "template": {"data": {
            "username": "{{ credentials.client_id }}",
            "password": "{{ credentials.client_secret }}",
            "id": "{{ credentials.integration_id }}",
        }}}),
    )
    .await;
    eventually(Duration::from_secs(15), "the edit rendered", || async {
        let data = cluster.secret_data("out").await?;
        (data.get("id") == Some(&created[0].integration_id) && !data.contains_key("bearer")).then_some(())
    })
    .await;
    cluster.wait_ready("acme", "True", None).await;
    assert_eq!(
        sim.integration_posts().len(),
        posts,
        "a second partner integration was created"
    );
    assert_eq!(sim.integrations().len(), 1);
    operator.stop().await;
    for (what, text) in [
        ("logs", logs()),
        ("events", cluster.events_text().await),
        ("status", cluster.integration_yaml("acme").await),
    ] {
        assert!(!text.contains(MASTER_SECRET), "the master secret appeared in {what}");
        assert!(
            !text.contains(created[0].client_secret.as_str()),
            "the customer secret appeared in {what}"
        );
    }
}
