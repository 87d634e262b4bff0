//! The operator end to end with the generic `oauth2` driver: the real
//! controller over real HTTP, against the real kube-apiserver (testkit's
//! control plane) and the OAuth 2.0 token-server simulator.

use std::time::Duration;

use crate::common::{Cluster, calls_during, eventually, logs};
use integration_operator::crd::Integration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use testkit::sim::oauth2::OAuth2Sim;

const CLIENT_ID: &str = "client-a";
/// A canary: it must never appear in any log line, Event or status.
const CLIENT_SECRET: &str = "canary-secret-7f3a9c1e5b";

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

fn cc_spec() -> serde_json::Value {
    json!({
        "provider": "auth",
        "secretRef": {"name": "creds"},
        "clientCredentials": {"scopes": ["read"]},
        "target": {"name": "out", "labels": {"team": "a"}},
    })
}

fn status_text(i: &Integration) -> String {
    serde_json::to_string(&i.status).unwrap_or_default()
}

#[tokio::test]
async fn applied_integration_becomes_ready_with_a_working_token_in_the_documented_layout() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;

    let ready = cluster.wait_ready("api", "True", Some("Issued")).await;
    let status = ready.status.clone().unwrap();
    assert!(status.expires_at.is_some() && status.renew_at.is_some() && status.last_exchange_time.is_some());
    assert_eq!(status.secret_name.as_deref(), Some("out"));
    assert_eq!(status.observed_generation, ready.metadata.generation);

    let data = cluster.secret_data("out").await.expect("output Secret exists");
    let token = data["access_token"].clone();
    assert!(
        sim.is_valid_token(&token),
        "the Secret holds a token the provider accepts"
    );
    assert_eq!(data["authorization"], format!("Bearer {token}"));
    assert_eq!(data["header_name"], "Authorization");
    assert_eq!(data["header_value"], format!("Bearer {token}"));
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["base_url"], "https://api.example.com/");
    assert_eq!(data["expires_at"], status.expires_at.clone().unwrap());

    let secret: Secret = cluster.secrets().get("out").await.unwrap();
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "integration-operator");
    assert_eq!(labels["team"], "a");
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(owner.kind, "Integration");
    assert_eq!(Some(owner.uid.clone()), ready.metadata.uid);
    assert_eq!(sim.token_calls(), 1);
    assert!(cluster.has_event("Issued").await);
    operator.stop().await;
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    let (cluster, sim) = setup(Some(3)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;

    // Watch the Secret for ~8 s (more than two lifetimes): every token seen
    // there must still be valid, and it must change.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        if let Some(data) = cluster.secret_data("out").await {
            let token = data["access_token"].clone();
            let expires: jiff::Timestamp = data["expires_at"].parse().unwrap();
            assert!(expires > jiff::Timestamp::now(), "the Secret held an expired token");
            assert!(
                sim.is_valid_token(&token),
                "the Secret held a token the provider no longer accepts"
            );
            seen.insert(token);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.len() >= 3,
        "expected at least two renewals, saw {} tokens",
        seen.len()
    );
    let i = cluster.wait_ready("api", "True", Some("Renewed")).await;
    assert!(i.status.unwrap().renew_at.is_some());
    // A routine renewal is no news: the Ready condition says Renewed, and
    // no Event is written for it (one per token would be an Event object
    // per Integration per renewal).
    assert!(cluster.has_event("Issued").await);
    assert_eq!(
        cluster.events_with_reason("Renewed").await,
        0,
        "routine renewals wrote Events:\n{}",
        cluster.events_text().await
    );
    operator.stop().await;
}

/// A refused login is not retried every few minutes forever (about 288
/// failed logins a day can lock the customer's API user): the refused
/// credentials wait until the input Secret changes or a person sets the
/// retry annotation to a new value, and the status says so. A refusal at
/// renewal keeps the last good token in place.
#[tokio::test]
async fn refused_credentials_are_not_sent_again_until_changed_or_retried() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    sim.fail_next("token", 10_000, testkit::sim::Fault::status(401));
    cluster.integration("api", cc_spec()).await;
    let i = cluster.wait_ready("api", "False", Some("ReauthRequired")).await;
    let message = i.status.as_ref().unwrap().conditions[0].message.clone();
    assert!(message.contains("not sent again"), "{message}");
    assert!(i.status.as_ref().unwrap().refused_inputs.is_some());
    let refused = sim.token_calls();
    assert_eq!(refused, 1, "the refused credentials were sent {refused} times");
    // More than two retry intervals of the test operator (3 s): no call.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(sim.token_calls(), refused, "the refused credentials were sent again");

    // A person asks for one more try: exactly one call, refused again.
    let annotate = |value: &'static str| {
        let integrations = cluster.integrations();
        async move {
            integrations
                .patch(
                    "api",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"integration-operator.io/retry": value}}})),
                )
                .await
                .unwrap();
        }
    };
    annotate("try-1").await;
    eventually(Duration::from_secs(10), "one more call", || async {
        (sim.token_calls() == refused + 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sim.token_calls(), refused + 1, "the retry was repeated");

    // The provider accepts them again and a person retries: Ready.
    sim.clear_faults();
    annotate("try-2").await;
    let i = cluster.wait_ready("api", "True", None).await;
    assert!(
        i.status.unwrap().refused_inputs.is_none(),
        "the hold outlived the success"
    );
    operator.stop().await;
}

/// One tenant whose own traffic spent its per-credential budget gets 429s
/// with a long Retry-After; another tenant on the same ClusterProvider and
/// host keeps renewing its short-lived tokens on time (before, one 429
/// blocked the whole host for every tenant).
#[tokio::test]
async fn one_tenants_rate_limit_leaves_the_others_renewals_on_time() {
    let (cluster, sim) = setup(Some(4)).await;
    sim.add_client("busy", "busy-secret-61d0");
    cluster
        .oauth2_provider(
            "auth-per-client",
            &sim.token_url(),
            json!({"rateLimitScope": "Credential"}),
        )
        .await;
    cluster
        .input_secret("busy", &[("client_id", "busy"), ("client_secret", "busy-secret-61d0")])
        .await;
    let operator = cluster.start_operator().await;
    let mut calm = cc_spec();
    calm["provider"] = json!("auth-per-client");
    cluster.integration("calm", calm).await;
    cluster.wait_ready("calm", "True", None).await;

    sim.limit_client("busy", Some(60));
    let mut busy = cc_spec();
    busy["provider"] = json!("auth-per-client");
    busy["secretRef"]["name"] = json!("busy");
    busy["target"] = json!({"name": "busy-out"});
    cluster.integration("busy", busy).await;
    cluster.wait_ready("busy", "False", Some("ProviderRateLimited")).await;

    // Four-second tokens: over 12 s the calm tenant renews at least twice
    // more, and its published token is never expired when looked at.
    let before = sim.token_call_times_for(CLIENT_ID).len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < deadline {
        let token = cluster.secret_data("out").await.unwrap()["access_token"].clone();
        assert!(
            sim.is_valid_token(&token),
            "the calm tenant's token expired during the other's 429s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let renewed = sim.token_call_times_for(CLIENT_ID).len() - before;
    assert!(renewed >= 2, "the calm tenant renewed {renewed} times in 12 s");
    operator.stop().await;
}

/// Editing how the operator talks to a provider (rate, concurrency, timeout,
/// allowed namespaces) re-issues nothing; editing what is sent (the client
/// authentication method) re-issues once.
#[tokio::test]
async fn only_provider_edits_that_change_what_is_sent_re_issue() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    let issued = sim.token_calls();
    cluster
        .oauth2_provider(
            "auth",
            &sim.token_url(),
            json!({"requestsPerSecond": 3, "maxConcurrency": 2, "requestTimeout": "5s",
                   "allowedNamespaces": [cluster.namespace.clone()]}),
        )
        .await;
    // Naming workloads to restart is no input of the exchange either.
    cluster
        .integrations()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rollout": {"workloads": [{"kind": "Deployment", "name": "app"}]}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        sim.token_calls(),
        issued,
        "a pacing or rollout edit re-issued the credentials"
    );
    cluster
        .oauth2_provider(
            "auth",
            &sim.token_url(),
            json!({"clientAuthMethod": "client_secret_post"}),
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "a re-issue with the new client authentication",
        || async { (sim.token_calls() == issued + 1).then_some(()) },
    )
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_lasting_failure_emits_one_warning_event_not_one_per_retry() {
    let (cluster, _sim) = setup(Some(3600)).await;
    let mut spec = cc_spec();
    spec["secretRef"]["name"] = json!("absent");
    let operator = cluster.start_operator().await;
    cluster.integration("api", spec).await;
    cluster.wait_ready("api", "False", Some("SecretNotFound")).await;
    // The first failure's Event may land just after its status.
    eventually(Duration::from_secs(5), "the first SecretNotFound Event", || async {
        (cluster.events_with_reason("SecretNotFound").await == 1).then_some(())
    })
    .await;
    // Retries happen every few seconds (retry-invalid 3s in tests), each
    // reading the input Secret again; each would otherwise create an Event
    // or patch its series.
    let counters = cluster.api().counters();
    let before = counters.writes_to("events");
    let reads = counters.count("get", "secrets");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        counters.count("get", "secrets") >= reads + 2,
        "the failure was not retried: the test shows nothing"
    );
    assert_eq!(
        counters.writes_to("events"),
        before,
        "a repeated failure wrote Events again"
    );
    assert_eq!(cluster.events_with_reason("SecretNotFound").await, 1);
    operator.stop().await;
}

#[tokio::test]
async fn credentials_that_cannot_be_renewed_are_reported_expired() {
    let (cluster, sim) = setup(Some(2)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    sim.fail_next("token", 10_000, testkit::sim::Fault::status(503));
    let i = cluster.wait_ready("api", "False", Some("Expired")).await;
    assert!(i.status.unwrap().conditions[0].message.contains("expired"));
    operator.stop().await;
}

#[tokio::test]
async fn a_token_without_expiry_gets_the_default_lifetime_and_a_warning() {
    let (cluster, sim) = setup(None).await;
    cluster
        .oauth2_provider("auth", &sim.token_url(), json!({"defaultTokenLifetime": "45m"}))
        .await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    let i = cluster.wait_ready("api", "True", None).await;
    let status = i.status.unwrap();
    let warning = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Warning")
        .expect("a Warning condition");
    assert_eq!(warning.reason, "ExpiryNotProvided");
    let expires: jiff::Timestamp = status.expires_at.unwrap().parse().unwrap();
    let lifetime = expires.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((2600..=2700).contains(&lifetime), "expected ~45m, got {lifetime}s");
    operator.stop().await;
}

#[tokio::test]
async fn bad_references_get_clear_conditions_and_recover_when_fixed() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;

    let mut spec = cc_spec();
    spec["secretRef"]["name"] = json!("missing");
    cluster.integration("no-secret", spec).await;
    let i = cluster.wait_ready("no-secret", "False", Some("SecretNotFound")).await;
    assert!(status_text(&i).contains("missing"));

    let mut spec = cc_spec();
    spec["provider"] = json!("nope");
    spec["target"]["name"] = json!("out2");
    cluster.integration("no-provider", spec).await;
    cluster
        .wait_ready("no-provider", "False", Some("ProviderNotFound"))
        .await;

    let mut spec = cc_spec();
    spec["target"]["name"] = json!("out3");
    cluster.input_secret("half", &[("client_id", CLIENT_ID)]).await;
    spec["secretRef"]["name"] = json!("half");
    cluster.integration("no-key", spec).await;
    let i = cluster.wait_ready("no-key", "False", Some("InvalidInputSecret")).await;
    assert!(status_text(&i).contains("client_secret"));

    // Fixing the reference recovers without a restart or a long wait.
    cluster
        .input_secret("missing", &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .await;
    cluster.wait_ready("no-secret", "True", None).await;
    cluster.oauth2_provider("nope", &sim.token_url(), json!({})).await;
    cluster.wait_ready("no-provider", "True", None).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_spec_with_two_flow_blocks_is_rejected_at_admission() {
    let (cluster, _sim) = setup(Some(3600)).await;
    let i: Integration = serde_json::from_value(json!({
        "apiVersion": "integration-operator.io/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "two", "namespace": cluster.namespace},
        "spec": {"provider": "auth", "secretRef": {"name": "creds"}, "clientCredentials": {}, "apiKey": {}},
    }))
    .unwrap();
    let err = cluster
        .integrations()
        .create(&Default::default(), &i)
        .await
        .expect_err("two flow blocks must be rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!(status.code, 422);
    assert!(status.message.contains("exactly one flow block"), "{}", status.message);
}

#[tokio::test]
async fn deleting_the_input_secret_or_provider_sets_a_condition_and_keeps_the_output() {
    let (cluster, _sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    cluster
        .secrets()
        .delete("creds", &DeleteParams::default())
        .await
        .unwrap();
    cluster.wait_ready("api", "False", Some("SecretNotFound")).await;
    assert!(cluster.secret_data("out").await.is_some(), "the output Secret is kept");
    kube::Api::<integration_operator::crd::ClusterProvider>::all(cluster.client.clone())
        .delete(&cluster.provider_name("auth"), &DeleteParams::default())
        .await
        .unwrap();
    cluster.wait_ready("api", "False", Some("ProviderNotFound")).await;
    operator.stop().await;
}

#[tokio::test]
async fn status_writes_and_resyncs_cause_no_exchange_and_no_write() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    // Let the reconcile triggered by our own writes settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = sim.token_calls();
    let counters = cluster.api().counters();
    let writes = counters.writes();

    // An unrelated metadata change and a foreign status-only change: the
    // operator reconciles, decides nothing is due, and touches nothing.
    cluster
        .integrations()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.token_calls(), calls, "a resync made a provider call");
    assert_eq!(
        counters.writes(),
        writes,
        "the operator wrote something although nothing was due"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_restarted_operator_makes_no_provider_call_and_no_write_for_valid_credentials() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    for n in 0..5 {
        let mut spec = cc_spec();
        spec["target"]["name"] = json!(format!("out-{n}"));
        cluster.integration(&format!("api-{n}"), spec).await;
    }
    for n in 0..5 {
        cluster.wait_ready(&format!("api-{n}"), "True", None).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    operator.stop().await;

    let calls = sim.token_calls();
    let counters = cluster.api().counters();
    let writes = counters.writes();
    let operator = cluster.start_operator().await;
    // Give the new instance time to list and re-evaluate everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.token_calls(), calls, "the restart made provider calls");
    assert_eq!(counters.writes(), writes, "the restart wrote to the API");
    operator.stop().await;
}

#[tokio::test]
async fn a_second_integration_naming_the_same_target_is_refused() {
    let (cluster, _sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("first", cc_spec()).await;
    cluster.wait_ready("first", "True", None).await;
    let before = cluster.secret_data("out").await.unwrap();
    cluster.integration("second", cc_spec()).await;
    let i = cluster
        .wait_ready("second", "False", Some("TargetSecretNotOwned"))
        .await;
    assert!(status_text(&i).contains("out"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.secret_data("out").await.unwrap(),
        before,
        "the first Integration's Secret was overwritten"
    );
    operator.stop().await;
}

#[tokio::test]
async fn an_edited_or_deleted_output_secret_is_repaired() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;

    cluster
        .patch_secret_strings("out", json!({"access_token": "forged"}))
        .await;
    let repaired = eventually(Duration::from_secs(10), "the edited Secret to be repaired", || async {
        let t = cluster.secret_data("out").await?["access_token"].clone();
        (t != "forged").then_some(t)
    })
    .await;
    assert!(sim.is_valid_token(&repaired));

    cluster.secrets().delete("out", &DeleteParams::default()).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the deleted Secret to be re-created",
        || async {
            let t = cluster.secret_data("out").await?["access_token"].clone();
            sim.is_valid_token(&t).then_some(())
        },
    )
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn no_secret_value_reaches_logs_events_or_status() {
    let (cluster, sim) = setup(Some(2)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    // A failure whose body echoes the secret, then recovery and renewals.
    sim.fail_next(
        "token",
        3,
        testkit::sim::Fault::Status {
            code: 400,
            body: Some(format!(
                r#"{{"error":"invalid_request","error_description":"bad secret {CLIENT_SECRET}"}}"#
            )),
            retry_after: None,
        },
    );
    cluster.wait_ready("api", "False", None).await;
    cluster.wait_ready("api", "True", None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    operator.stop().await;

    let tokens = sim.issued_tokens();
    assert!(tokens.len() >= 2);
    let haystacks = [
        ("logs", logs()),
        ("events", cluster.events_text().await),
        ("status", cluster.integration_yaml("api").await),
    ];
    for (what, text) in &haystacks {
        assert!(!text.is_empty() || *what != "logs", "nothing captured from {what}");
        assert!(!text.contains(CLIENT_SECRET), "the client secret appeared in {what}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "an access token appeared in {what}");
        }
    }
}

/// Sets the renew-now annotation as a person would with `kubectl annotate
/// --overwrite`.
async fn ask_renew_now(cluster: &Cluster, value: &str) {
    cluster
        .integrations()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"integration-operator.io/renew-now": value}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn renew_now_exchanges_again_in_place_once_per_request_and_at_most_every_ten_seconds() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    let before = cluster.secrets().get("out").await.unwrap();
    let first = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    assert_eq!(sim.token_calls(), 1);

    // Asked right after the first issue: answered once the 10 s cap from
    // that issue has passed, with a new token in the same Secret.
    let asked = tokio::time::Instant::now();
    ask_renew_now(&cluster, "2026-12-02T10:00:00Z").await;
    let second = eventually(Duration::from_secs(20), "a token issued on request", || async {
        let token = cluster.secret_data("out").await?["access_token"].clone();
        (token != first).then_some(token)
    })
    .await;
    assert!(sim.is_valid_token(&second));
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "answered {:?} after a request made right after an issue: no cap",
        asked.elapsed()
    );
    assert_eq!(sim.token_calls(), 2, "one request, one exchange");
    let after = cluster.secrets().get("out").await.unwrap();
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "the Secret was replaced, not updated in place"
    );
    let i = cluster.wait_ready("api", "True", Some("Renewed")).await;
    assert_eq!(
        i.status.unwrap().renew_now_answered.as_deref(),
        Some("2026-12-02T10:00:00Z")
    );
    // The Event is published after the status; wait for it.
    eventually(
        Duration::from_secs(10),
        "an Event saying renewed on request",
        || async { cluster.events_text().await.contains("renewed on request").then_some(()) },
    )
    .await;

    // The same value again (a GitOps sync re-applying it) asks nothing.
    ask_renew_now(&cluster, "2026-12-02T10:00:00Z").await;
    assert_eq!(calls_during(&sim, Duration::from_secs(2)).await, 0);

    // A new value soon after: waits for the cap, then one exchange.
    ask_renew_now(&cluster, "2026-12-02T10:00:05Z").await;
    assert_eq!(
        calls_during(&sim, Duration::from_secs(3)).await,
        0,
        "a request inside the cap called the provider"
    );
    eventually(Duration::from_secs(15), "the capped request answered", || async {
        (sim.token_calls() == 3).then_some(())
    })
    .await;
    assert_eq!(calls_during(&sim, Duration::from_secs(2)).await, 0);
    let events = cluster.events_text().await;
    assert!(!events.contains(CLIENT_SECRET) && !events.contains(second.as_str()));
    operator.stop().await;
}

/// Rejected-credential feedback on a token flow: a consumer's report gets a
/// new token in place (after the report cap), with an Event saying why.
#[tokio::test]
async fn a_consumers_rejection_report_renews_the_token_in_place_once() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster
        .start_operator_with(&["--rejection-report-interval", "2s"])
        .await;
    cluster.integration("api", cc_spec()).await;
    cluster.wait_ready("api", "True", None).await;
    let first = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    cluster
        .integrations()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"integration-operator.io/credentials-rejected": "401 at 10:00"}}}),
            ),
        )
        .await
        .unwrap();
    let second = eventually(Duration::from_secs(15), "a token issued after the report", || async {
        let token = cluster.secret_data("out").await?["access_token"].clone();
        (token != first).then_some(token)
    })
    .await;
    assert!(sim.is_valid_token(&second));
    eventually(Duration::from_secs(10), "an Event naming the report", || async {
        cluster
            .events_text()
            .await
            .contains("reported the credentials rejected")
            .then_some(())
    })
    .await;
    assert_eq!(
        calls_during(&sim, Duration::from_secs(3)).await,
        0,
        "one report, one exchange"
    );
    assert_eq!(sim.token_calls(), 2);
    operator.stop().await;
}

/// The Deployment's `kubectl.kubernetes.io/restartedAt` pod-template
/// annotation, if any.
async fn restarted_at(cluster: &Cluster) -> Option<String> {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let d = api.get("app").await.unwrap();
    d.spec?
        .template
        .metadata?
        .annotations?
        .get("kubectl.kubernetes.io/restartedAt")
        .cloned()
}

/// Consumer rollouts on the real apiserver: a Deployment named in
/// `spec.rollout` is restarted (its pod template annotated as `kubectl
/// rollout restart` does) exactly once per coalesced change of the
/// credentials, never for routine renewals, and only with the chart's
/// opt-in RBAC.
#[tokio::test]
async fn changed_credentials_restart_the_named_workloads_once_per_coalesced_change_and_never_for_renewals() {
    // 4-s tokens: several routine renewals during the test.
    let (cluster, sim) = setup(Some(4)).await;
    sim.add_client("client-b", "rotated-b-91c2");
    sim.add_client("client-c", "rotated-c-4d7e");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(cluster.client.clone(), &cluster.namespace);
    deployments
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "app"},
                "spec": {
                    "selector": {"matchLabels": {"app": "app"}},
                    "template": {
                        "metadata": {"labels": {"app": "app"}},
                        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
                    },
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let operator = cluster.start_operator().await;
    let mut spec = cc_spec();
    spec["rollout"] = json!({
        "workloads": [{"kind": "Deployment", "name": "app"}, {"kind": "StatefulSet", "name": "missing"}],
        "coalesce": "2s",
        "minInterval": "5s",
    });
    cluster.integration("api", spec).await;
    cluster.wait_ready("api", "True", None).await;
    let first = cluster.secret_data("out").await.unwrap()["access_token"].clone();

    // Routine renewals (and the first issue) restart nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_ne!(
        cluster.secret_data("out").await.unwrap()["access_token"],
        first,
        "no renewal happened"
    );
    assert_eq!(
        restarted_at(&cluster).await,
        None,
        "a routine renewal restarted the workload"
    );

    // Without the chart's rollouts RBAC, a change is reported, not retried.
    cluster
        .patch_secret_strings(
            "creds",
            json!({"client_id": "client-b", "client_secret": "rotated-b-91c2"}),
        )
        .await;
    let failed = eventually(Duration::from_secs(20), "RolloutFailed Events", || async {
        let text = cluster.events_text().await;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("RolloutFailed"))
            .map(String::from)
            .collect();
        (lines.len() >= 2).then_some(lines.join("\n"))
    })
    .await;
    assert!(
        failed.contains("Deployment/app") && failed.contains("rollouts.enabled=true"),
        "{failed}"
    );
    assert!(failed.contains("StatefulSet/missing"), "{failed}");
    assert_eq!(restarted_at(&cluster).await, None);

    // With it: two changes close together, one restart.
    cluster.enable_rollouts().await;
    cluster
        .patch_secret_strings(
            "creds",
            json!({"client_id": "client-c", "client_secret": "rotated-c-4d7e"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .patch_secret_strings(
            "creds",
            json!({"client_id": "client-a", "client_secret": CLIENT_SECRET}),
        )
        .await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(14);
    while tokio::time::Instant::now() < deadline {
        if let Some(at) = restarted_at(&cluster).await {
            seen.insert(at);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen.len(), 1, "expected exactly one restart, saw {seen:?}");
    eventually(Duration::from_secs(10), "a RolloutRestarted Event", || async {
        let text = cluster.events_text().await;
        text.lines()
            .any(|l| l.starts_with("Normal RolloutRestarted") && l.contains("Deployment/app"))
            .then_some(())
    })
    .await;
    // A workload that does not exist is named as such.
    eventually(
        Duration::from_secs(10),
        "a RolloutFailed Event for the missing one",
        || async {
            let text = cluster.events_text().await;
            text.lines()
                .any(|l| l.contains("StatefulSet/missing") && l.contains("does not exist"))
                .then_some(())
        },
    )
    .await;
    // Nothing else of the Deployment changed (a merge patch of one annotation).
    let d = deployments.get("app").await.unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0].image.as_deref(),
        Some("example.invalid/app:1")
    );
    operator.stop().await;
    let text = format!("{}\n{}", logs(), cluster.events_text().await);
    assert!(
        !text.contains(CLIENT_SECRET) && !text.contains("rotated-c-4d7e"),
        "a secret leaked"
    );
}
