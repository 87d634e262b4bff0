//! Nothing is lost under faults: the real controller against the real
//! kube-apiserver and the OAuth 2.0 simulator, with faults injected into
//! the API server (dropped watches, 409/429/5xx on writes, latency, 410 Gone on
//! resumed watches), into the provider (timeouts, 5xx storms, 429 with
//! Retry-After, broken JSON, odd `expires_in`), and into the operator process
//! itself (the real binary aborted at each step of a flow, then restarted).
//! Everything runs on the real control plane. API faults come from
//! testkit's proxy between the operator and the apiserver (dropped watches,
//! 409/410/429/5xx on chosen requests, latency), and the last test uses
//! real causes: an apiserver restarted after an etcd compaction, and a
//! restarted etcd.
//!
//! Every test says what a user ends up with: Ready, a token the provider
//! accepts in the Secret, a status that agrees with the Secret, and exactly
//! as many provider calls as the flow needs (tests/integration/providers/oauth2.rs covers the
//! single-fault basics; these add what it does not).

use std::{
    process::{ExitStatus, Stdio},
    time::Duration,
};

use crate::common::{Cluster, calls_during, eventually, logs};
use integration_operator::{controller::reconcile::failpoints, crd::Integration};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use reqwest::Method;
use serde_json::json;
use testkit::sim::{Fault, oauth2::OAuth2Sim};

/// A canary: never in a log line, Event or status.
const CLIENT_SECRET: &str = "faults-canary-secret-5d09e1";
const ROTATED_SECRET: &str = "faults-rotated-secret-77c3b2";

async fn setup_with(cluster: Cluster, lifetime: Option<u64>, provider: serde_json::Value) -> (Cluster, OAuth2Sim) {
    let sim = OAuth2Sim::start().await.expect("simulator starts");
    sim.add_client("client-a", CLIENT_SECRET);
    sim.add_client("client-b", ROTATED_SECRET);
    sim.set_token_lifetime(lifetime);
    cluster.oauth2_provider("auth", &sim.token_url(), provider).await;
    cluster
        .input_secret("creds", &[("client_id", "client-a"), ("client_secret", CLIENT_SECRET)])
        .await;
    (cluster, sim)
}

async fn setup(lifetime: Option<u64>) -> (Cluster, OAuth2Sim) {
    setup_with(Cluster::start().await, lifetime, json!({})).await
}

fn spec(target: &str) -> serde_json::Value {
    json!({"provider": "auth", "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": target}})
}

/// Switches the input Secret to client-b (a reason to exchange again).
async fn rotate_input(cluster: &Cluster) {
    cluster
        .patch_secret_strings(
            "creds",
            json!({"client_id": "client-b", "client_secret": ROTATED_SECRET}),
        )
        .await;
}

/// Waits until the Secret `target` holds a valid token issued to `client`.
async fn wait_token_for(cluster: &Cluster, sim: &OAuth2Sim, target: &str, client: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("Secret {target} to hold a valid token of {client}"),
        || async {
            let token = cluster.secret_data(target).await?.get("access_token")?.clone();
            (sim.is_valid_token(&token) && sim.token_client(&token).as_deref() == Some(client)).then_some(token)
        },
    )
    .await
}

/// What a user checks after any fault: Ready=True for the current
/// generation, the Secret holds a token the provider accepts, and the status
/// agrees with the Secret (waited for: a status write may be in flight).
/// Returns the token.
async fn assert_consistent(cluster: &Cluster, sim: &OAuth2Sim, name: &str, target: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (i, data) = loop {
        let i = cluster.integrations().get(name).await.expect("the Integration exists");
        let data = cluster.secret_data(target).await.unwrap_or_default();
        let status = i.status.clone().unwrap_or_default();
        // Ready, and its message names the expiry the Secret holds.
        let ready = status.conditions.iter().any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && data.get("expires_at").is_some_and(|at| c.message.contains(at.as_str()))
        });
        if ready
            && status.observed_generation == i.metadata.generation
            && status.expires_at.as_ref() == data.get("expires_at")
        {
            break (i, data);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: not Ready with a status that agrees with Secret {target}: status {status:?}, Secret expires_at {:?}",
            data.get("expires_at")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = i.status.clone().expect("a status");
    assert_eq!(status.secret_name.as_deref(), Some(target));
    let token = data["access_token"].clone();
    assert!(
        sim.is_valid_token(&token),
        "{name}: the Secret holds a token the provider does not accept"
    );
    assert_eq!(data["authorization"], format!("Bearer {token}"));
    let renew: jiff::Timestamp = status.renew_at.expect("renewAt").parse().unwrap();
    let expires: jiff::Timestamp = data["expires_at"].parse().unwrap();
    assert!(
        renew < expires,
        "{name}: renewAt {renew} is not before expiresAt {expires}"
    );
    token
}

/// Watches the provider for `window` and returns the calls made meanwhile
/// (to show that nothing more happens once the work is done).
fn no_secret_leaked(text: &str, what: &str) {
    for secret in [CLIENT_SECRET, ROTATED_SECRET] {
        assert!(!text.contains(secret), "a client secret appeared in {what}");
    }
}

// ---------------------------------------------------------------------------
// Kubernetes API server faults
// ---------------------------------------------------------------------------

fn watch_count(cluster: &Cluster) -> u64 {
    let c = cluster.api().counters();
    c.count("watch", "integrations") + c.count("watch", "secrets") + c.count("watch", "clusterproviders")
}

/// Ends every open watch and waits until all four of the operator's watches
/// (Integrations, ClusterProviders, owned Secrets, input Secrets) are back.
async fn drop_watches_and_wait_back(cluster: &Cluster) {
    let before = watch_count(cluster);
    cluster.api().faults().drop_watches();
    eventually(
        Duration::from_secs(15),
        "the operator's watches to reconnect",
        || async { (watch_count(cluster) >= before + 4).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn watches_dropped_mid_stream_and_repeatedly_lose_no_work_and_duplicate_no_exchange() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    let faults = cluster.api().faults();
    cluster.integration("a", spec("out-a")).await;
    cluster.wait_ready("a", "True", None).await;

    // Idle drops: each relist sees everything again, none of it is news.
    for _ in 0..3 {
        drop_watches_and_wait_back(&cluster).await;
    }
    assert_eq!(sim.token_calls(), 1, "a relist after a dropped watch exchanged again");

    // Drops in the middle of work: a new Integration, an input rotation and a
    // deleted output Secret, each with the watches cut right after it.
    cluster.integration("b", spec("out-b")).await;
    faults.drop_watches();
    wait_token_for(&cluster, &sim, "out-b", "client-a").await;

    rotate_input(&cluster).await;
    faults.drop_watches();
    wait_token_for(&cluster, &sim, "out-a", "client-b").await;
    wait_token_for(&cluster, &sim, "out-b", "client-b").await;

    cluster
        .secrets()
        .delete("out-a", &DeleteParams::default())
        .await
        .unwrap();
    faults.drop_watches();
    let repaired = wait_token_for(&cluster, &sim, "out-a", "client-b").await;

    drop_watches_and_wait_back(&cluster).await;
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    // a: issue, rotation, repair; b: issue, rotation.
    assert_eq!(
        sim.token_calls(),
        5,
        "exchanges lost or duplicated across dropped watches"
    );
    assert_eq!(assert_consistent(&cluster, &sim, "a", "out-a").await, repaired);
    assert_consistent(&cluster, &sim, "b", "out-b").await;
    operator.stop().await;
}

#[tokio::test]
async fn conflicts_on_secret_and_status_writes_are_retried_and_converge_with_one_exchange_each() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    let faults = cluster.api().faults();
    let secrets = &format!("/api/v1/namespaces/{}/secrets", cluster.namespace);
    let status = &format!("/namespaces/{}/integrations/api/status", cluster.namespace);
    // First issue: the create of the Secret and the status write conflict.
    faults.fail_next(Some(Method::POST), secrets, 2, 409, None);
    faults.fail_next(Some(Method::PATCH), status, 2, 409, None);
    cluster.integration("api", spec("out")).await;
    wait_token_for(&cluster, &sim, "out", "client-a").await;
    assert_consistent(&cluster, &sim, "api", "out").await;
    assert_eq!(sim.token_calls(), 1, "a conflict on a write cost another exchange");

    // Re-issue after a rotation: the apply of the existing Secret and the
    // status write conflict.
    faults.fail_next(Some(Method::PATCH), &format!("{secrets}/out"), 2, 409, None);
    faults.fail_next(Some(Method::PATCH), status, 1, 409, None);
    rotate_input(&cluster).await;
    let token = wait_token_for(&cluster, &sim, "out", "client-b").await;
    assert_eq!(assert_consistent(&cluster, &sim, "api", "out").await, token);
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    assert_eq!(sim.token_calls(), 2, "a conflict on a write cost another exchange");
    no_secret_leaked(&cluster.events_text().await, "events");
    operator.stop().await;
}

#[tokio::test]
async fn server_errors_and_429_with_retry_after_on_writes_converge_with_one_exchange_each() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    let faults = cluster.api().faults();
    let secrets = &format!("/api/v1/namespaces/{}/secrets", cluster.namespace);
    let status = &format!("/namespaces/{}/integrations/api/status", cluster.namespace);
    faults.fail_next(Some(Method::POST), secrets, 1, 500, None);
    faults.fail_next(Some(Method::POST), secrets, 1, 429, Some(1));
    faults.fail_next(Some(Method::PATCH), status, 2, 429, Some(1));
    faults.fail_next(Some(Method::PATCH), status, 1, 503, None);
    cluster.integration("api", spec("out")).await;
    wait_token_for(&cluster, &sim, "out", "client-a").await;
    assert_consistent(&cluster, &sim, "api", "out").await;
    assert_eq!(sim.token_calls(), 1);

    faults.fail_next(Some(Method::PATCH), &format!("{secrets}/out"), 1, 503, None);
    faults.fail_next(Some(Method::PATCH), &format!("{secrets}/out"), 1, 429, Some(1));
    faults.fail_next(Some(Method::PATCH), status, 1, 500, None);
    rotate_input(&cluster).await;
    let token = wait_token_for(&cluster, &sim, "out", "client-b").await;
    assert_eq!(assert_consistent(&cluster, &sim, "api", "out").await, token);
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    assert_eq!(sim.token_calls(), 2, "an API error on a write cost another exchange");
    operator.stop().await;
}

#[tokio::test]
async fn a_failed_status_write_while_the_secret_cache_lags_ends_with_a_status_that_matches_the_secret() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", spec("out")).await;
    let first = assert_consistent(&cluster, &sim, "api", "out").await;
    // Hold the Secret watches off (their cache keeps the old version for
    // ~2 s), and make the status write after the next exchange fail once.
    // The retry then found the credentials current and took expiresAt and
    // renewAt from the lagging cache; once the watches were back, their
    // catch-up was no news (the operator wrote that version itself), so the
    // status kept the old expiry until the next renewal.
    let faults = cluster.api().faults();
    let ns = &cluster.namespace;
    faults.fail_next(
        Some(Method::GET),
        &format!("/api/v1/namespaces/{ns}/secrets?"),
        12,
        503,
        None,
    );
    faults.fail_next(
        Some(Method::PATCH),
        &format!("/namespaces/{ns}/integrations/api/status"),
        1,
        409,
        None,
    );
    faults.drop_watches();
    // The next token lives shorter: its expiry differs from the first's.
    sim.set_token_lifetime(Some(1800));
    // A spec change: a reason to exchange that arrives through the
    // Integration watch, which is not held off.
    cluster
        .integrations()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clientCredentials": {"scopes": ["read"]}}})),
        )
        .await
        .unwrap();
    let second = eventually(Duration::from_secs(15), "a new token in the Secret", || async {
        let token = cluster.secret_data("out").await?["access_token"].clone();
        (token != first).then_some(token)
    })
    .await;
    assert_eq!(assert_consistent(&cluster, &sim, "api", "out").await, second);
    assert_eq!(sim.token_calls(), 2);
    operator.stop().await;
}

#[tokio::test]
async fn a_watch_that_keeps_failing_for_one_kind_does_not_hold_up_work_on_the_others() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("a", spec("out-a")).await;
    cluster.wait_ready("a", "True", None).await;
    // The ClusterProvider watch breaks and cannot come back for a while.
    let faults = cluster.api().faults();
    let counters = cluster.api().counters();
    let attempts = counters.count("watch", "clusterproviders");
    faults.fail_next(
        Some(Method::GET),
        "/apis/integration-operator.io/v1alpha1/clusterproviders?",
        1000,
        503,
        None,
    );
    faults.drop_watches();
    eventually(
        Duration::from_secs(15),
        "the ClusterProvider watch to fail 8 times",
        || async { (counters.count("watch", "clusterproviders") >= attempts + 8).then_some(()) },
    )
    .await;
    // Meanwhile a new Integration and a deleted output Secret are acted on
    // at once: the other watches are fine.
    let started = tokio::time::Instant::now();
    cluster.integration("b", spec("out-b")).await;
    cluster
        .secrets()
        .delete("out-a", &DeleteParams::default())
        .await
        .unwrap();
    assert_consistent(&cluster, &sim, "b", "out-b").await;
    assert_consistent(&cluster, &sim, "a", "out-a").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a failing ClusterProvider watch held up other work for {took:?}"
    );
    assert_eq!(sim.token_calls(), 3);
    faults.clear();
    operator.stop().await;
}

#[tokio::test]
async fn a_slow_api_server_still_converges_with_one_exchange_per_integration() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.api().faults().set_latency(Duration::from_millis(250));
    for n in 0..3 {
        cluster
            .integration(&format!("api-{n}"), spec(&format!("out-{n}")))
            .await;
    }
    for n in 0..3 {
        assert_consistent(&cluster, &sim, &format!("api-{n}"), &format!("out-{n}")).await;
    }
    assert_eq!(sim.token_calls(), 3, "a slow API server caused extra exchanges");
    operator.stop().await;
}

#[tokio::test]
async fn an_expired_resource_version_makes_the_watchers_relist_without_losing_or_duplicating_work() {
    // The apiserver answers a watch resumed from a compacted resource
    // version with 410 Gone (the last test here makes etcd do it for real);
    // the proxy answers the resumed watches so, and the watchers must relist.
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("a", spec("out-a")).await;
    cluster.wait_ready("a", "True", None).await;
    let counters = cluster.api().counters();
    let lists = counters.count("list", "integrations") + counters.count("list", "secrets");

    // Keep the operator's watches away for a moment, cut them, and change
    // what it must act on while it is away; then each resumed watch is
    // told its resource version is gone.
    let faults = cluster.api().faults();
    let ns = &cluster.namespace;
    let watched = [
        format!("/apis/integration-operator.io/v1alpha1/namespaces/{ns}/integrations?"),
        "/apis/integration-operator.io/v1alpha1/clusterproviders?".to_string(),
        format!("/api/v1/namespaces/{ns}/secrets?"),
    ];
    for path in &watched {
        faults.fail_next(Some(Method::GET), path, 1, 503, None);
    }
    faults.fail_next(Some(Method::GET), &watched[2], 1, 503, None);
    for path in &watched {
        faults.expire_next_watches(path, 1);
    }
    faults.expire_next_watches(&watched[2], 1);
    faults.drop_watches();
    let dropped = tokio::time::Instant::now();
    rotate_input(&cluster).await;
    cluster.integration("b", spec("out-b")).await;

    wait_token_for(&cluster, &sim, "out-a", "client-b").await;
    wait_token_for(&cluster, &sim, "out-b", "client-b").await;
    // Acted on about as soon as the watches could come back (a ~1 s outage
    // here): not held up by every watch's 410 in turn (it took 8-19 s while
    // the controller paused all its watches after any one's error).
    let took = dropped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "changes made during a 410 relist took {took:?} to be acted on"
    );
    // The relists themselves may come after the work is done (another
    // watch's event can trigger it first, and the first relist attempt is
    // answered 503): wait for them rather than race them.
    eventually(
        Duration::from_secs(10),
        "the watchers to relist after 410 Gone",
        || async { (counters.count("list", "integrations") + counters.count("list", "secrets") > lists).then_some(()) },
    )
    .await;
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    // a: issue and rotation; b: issue.
    assert_eq!(sim.token_calls(), 3, "exchanges lost or duplicated across a relist");
    assert_consistent(&cluster, &sim, "a", "out-a").await;
    assert_consistent(&cluster, &sim, "b", "out-b").await;
    operator.stop().await;
}

// ---------------------------------------------------------------------------
// Provider faults (beyond tests/integration/providers/oauth2.rs)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_provider_slower_than_the_request_timeout_times_out_and_the_retry_issues() {
    let (cluster, sim) = setup_with(Cluster::start().await, Some(3600), json!({"requestTimeout": "500ms"})).await;
    let operator = cluster.start_operator().await;
    sim.fail_next("token", 2, Fault::Delay(Duration::from_millis(1500)));
    cluster.integration("api", spec("out")).await;
    let token = wait_token_for(&cluster, &sim, "out", "client-a").await;
    assert_eq!(assert_consistent(&cluster, &sim, "api", "out").await, token);
    assert!(cluster.has_event("ProviderTimeout").await, "no ProviderTimeout Event");
    assert_eq!(calls_during(&sim, Duration::from_millis(500)).await, 0);
    assert_eq!(sim.token_calls(), 3, "two timed-out calls and one that answered");
    operator.stop().await;
}

#[tokio::test]
async fn a_5xx_storm_backs_off_with_bounded_calls_and_recovers_when_it_ends() {
    let (cluster, sim) = setup(Some(3600)).await;
    // retry-base 200ms doubling to retry-max 2s (the harness's flags).
    let operator = cluster.start_operator().await;
    sim.fail_next("token", 10_000, Fault::status(500));
    cluster.integration("api", spec("out")).await;
    eventually(Duration::from_secs(10), "the first provider call", || async {
        (sim.token_calls() >= 1).then_some(())
    })
    .await;
    // Backoff 0.2+0.4+0.8+1.6+2... s: about 5 calls in the first 4 s (a fixed
    // 200 ms retry would make 20), then one per ~2 s.
    let first = calls_during(&sim, Duration::from_secs(4)).await;
    assert!((2..=7).contains(&first), "{first} provider calls in 4 s of a 5xx storm");
    let later = calls_during(&sim, Duration::from_secs(4)).await;
    assert!(
        (1..=3).contains(&later),
        "{later} provider calls in the next 4 s: the backoff did not grow to its cap"
    );
    let i = cluster.wait_ready("api", "False", Some("ProviderUnavailable")).await;
    no_secret_leaked(&serde_json::to_string(&i.status).unwrap(), "status");
    assert!(cluster.secret_data("out").await.is_none());

    sim.clear_faults();
    let token = wait_token_for(&cluster, &sim, "out", "client-a").await;
    assert_eq!(assert_consistent(&cluster, &sim, "api", "out").await, token);
    assert_eq!(
        sim.issued_tokens().len(),
        1,
        "more than one token issued after the storm"
    );
    assert_eq!(
        cluster.events_with_reason("ProviderUnavailable").await,
        1,
        "one Warning Event for the storm, not one per retry"
    );
    assert!(cluster.has_event("Recovered").await);
    operator.stop().await;
}

#[tokio::test]
async fn a_429_retry_after_is_honoured_for_every_integration_on_that_provider() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    sim.fail_next("token", 1, Fault::rate_limited(2));
    cluster.integration("a", spec("out-a")).await;
    cluster.wait_ready("a", "False", Some("ProviderRateLimited")).await;
    // Another Integration on the same provider waits too.
    cluster.integration("b", spec("out-b")).await;
    assert_consistent(&cluster, &sim, "a", "out-a").await;
    assert_consistent(&cluster, &sim, "b", "out-b").await;
    let times = sim.token_call_times();
    assert_eq!(times.len(), 3, "one rate-limited call, then one per Integration");
    for later in &times[1..] {
        let waited = later.duration_since(times[0]);
        assert!(
            waited >= Duration::from_millis(1950),
            "a call {waited:?} after a 429 with Retry-After: 2"
        );
    }
    operator.stop().await;
}

#[tokio::test]
async fn malformed_and_truncated_token_answers_are_retried_until_one_is_issued() {
    let (cluster, sim) = setup(Some(3600)).await;
    let operator = cluster.start_operator().await;
    sim.fail_next("token", 1, Fault::Truncated);
    sim.fail_next("token", 1, Fault::Malformed);
    cluster.integration("api", spec("out")).await;
    let token = wait_token_for(&cluster, &sim, "out", "client-a").await;
    assert_eq!(assert_consistent(&cluster, &sim, "api", "out").await, token);
    assert!(cluster.has_event("MalformedResponse").await);
    assert_eq!(calls_during(&sim, Duration::from_millis(500)).await, 0);
    assert_eq!(sim.token_calls(), 3);
    assert_eq!(sim.issued_tokens(), vec![token]);
    operator.stop().await;
}

#[tokio::test]
async fn expires_in_zero_gets_the_default_lifetime_and_a_warning_that_survive_a_restart() {
    let (cluster, sim) = setup_with(Cluster::start().await, Some(0), json!({"defaultTokenLifetime": "10m"})).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", spec("out")).await;
    let i = cluster.wait_ready("api", "True", None).await;
    let check = |i: &Integration| {
        let status = i.status.clone().unwrap();
        let warning = status.conditions.iter().find(|c| c.type_ == "Warning");
        assert_eq!(
            warning.map(|w| w.reason.as_str()),
            Some("ExpiryNotProvided"),
            "{status:?}"
        );
        let expires: jiff::Timestamp = status.expires_at.unwrap().parse().unwrap();
        let lifetime = expires.duration_since(jiff::Timestamp::now()).as_secs();
        assert!((500..=600).contains(&lifetime), "expected ~10m, got {lifetime}s");
    };
    check(&i);
    // "Expires in 0 s" must not become a renewal loop.
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    operator.stop().await;
    let operator = cluster.start_operator().await;
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    check(&cluster.wait_ready("api", "True", None).await);
    assert_eq!(sim.token_calls(), 1);
    operator.stop().await;
}

#[tokio::test]
async fn an_absurd_expires_in_is_clamped_without_overflow_and_the_operator_says_so() {
    let (cluster, sim) = setup(Some(1_000_000_000_000)).await;
    let operator = cluster.start_operator().await;
    cluster.integration("api", spec("out")).await;
    assert_consistent(&cluster, &sim, "api", "out").await;
    let status = cluster.integrations().get("api").await.unwrap().status.unwrap();
    let expires: jiff::Timestamp = status.expires_at.unwrap().parse().unwrap();
    let days = expires.duration_since(jiff::Timestamp::now()).as_secs() / 86_400;
    assert!(
        (360..=366).contains(&days),
        "expiry {days} days out, not clamped to about a year"
    );
    assert!(
        logs().contains("clamped"),
        "nothing says the provider's expires_in was clamped"
    );
    // The operator is alive and keeps working.
    rotate_input(&cluster).await;
    wait_token_for(&cluster, &sim, "out", "client-b").await;
    assert_eq!(sim.token_calls(), 2);
    operator.stop().await;
}

// ---------------------------------------------------------------------------
// The operator process killed at each step of a flow, then restarted
// ---------------------------------------------------------------------------

/// The real operator binary (built by cargo for these tests, with fail points).
struct Binary {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Binary {
    /// Starts the binary; with `failpoint`, it aborts when it gets there.
    fn start(cluster: &Cluster, failpoint: Option<&str>) -> Binary {
        Self::start_with(cluster, failpoint, &[])
    }

    /// Starts the binary with extra flags.
    fn start_with(cluster: &Cluster, failpoint: Option<&str>, extra: &[&str]) -> Binary {
        let log = tempfile::Builder::new()
            .prefix("faults-operator-")
            .suffix(".log")
            .tempfile()
            .expect("a log file")
            .into_temp_path()
            .keep()
            .expect("a kept log file");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_integration-operator"));
        command
            .args(["run", "--metrics-addr", "127.0.0.1:0"])
            .args(["--retry-base", "200ms", "--retry-max", "2s"])
            .args(extra)
            .arg("--kubeconfig")
            .arg(cluster.operator_kubeconfig())
            .envs(cluster.operator_env())
            .env("LOG_LEVEL", "info")
            .env_remove("FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map(Stdio::from).unwrap_or(Stdio::null()))
            .kill_on_drop(true);
        if let Some(point) = failpoint {
            command.env("FAILPOINTS", format!("{point}=return"));
        }
        let child = command.spawn().expect("the operator binary starts");
        Binary { child, log }
    }

    /// Waits for the process to die at its fail point.
    async fn died(mut self, point: &str) -> ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the operator did not stop at fail point {point} (built without the failpoints feature?); its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
            .expect("the operator's exit status");
        let _ = std::fs::remove_file(&self.log);
        status
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it serves /metrics and /livez, from its start-up log line.
    async fn metrics_url(&self) -> String {
        eventually(Duration::from_secs(20), "the metrics address in the log", || async {
            let log = self.log();
            let rest = log.split("metrics_addr=").nth(1)?;
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            Some(format!("http://{}", addr.trim_matches('"')))
        })
        .await
    }
}

/// GET on the operator's metrics port: status and body.
async fn probe(url: &str) -> (u16, String) {
    let answer = reqwest::get(url).await.expect("the metrics port answers");
    (answer.status().as_u16(), answer.text().await.unwrap_or_default())
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts the binary with `point` armed, applies an Integration, and waits
/// for the process to die there.
async fn killed_at(point: &str) -> (Cluster, OAuth2Sim) {
    assert!(failpoints::ALL.contains(&point));
    let (cluster, sim) = setup(Some(3600)).await;
    let doomed = Binary::start(&cluster, Some(point));
    cluster.integration("api", spec("out")).await;
    let status = doomed.died(point).await;
    assert!(!status.success(), "the operator exited cleanly at {point}: {status:?}");
    (cluster, sim)
}

/// Restarts the binary without fail points and checks what the user gets.
async fn restarted(cluster: &Cluster, sim: &OAuth2Sim) -> (Binary, String) {
    let operator = Binary::start(cluster, None);
    cluster.wait_ready("api", "True", None).await;
    let token = assert_consistent(cluster, sim, "api", "out").await;
    assert_eq!(calls_during(sim, Duration::from_secs(1)).await, 0, "{}", operator.log());
    let log = operator.log();
    no_secret_leaked(&log, "the operator's log");
    assert!(!log.contains(&token), "the access token appeared in the operator's log");
    (operator, token)
}

#[tokio::test]
async fn killed_before_the_provider_call_a_restart_issues_once() {
    let (cluster, sim) = killed_at(failpoints::BEFORE_EXCHANGE).await;
    assert_eq!(sim.token_calls(), 0);
    assert!(cluster.secret_data("out").await.is_none());
    let (_operator, _token) = restarted(&cluster, &sim).await;
    assert_eq!(sim.token_calls(), 1);
}

#[tokio::test]
async fn killed_after_the_provider_answered_a_restart_obtains_the_lost_token_again() {
    let (cluster, sim) = killed_at(failpoints::AFTER_EXCHANGE).await;
    assert_eq!(sim.token_calls(), 1);
    assert!(cluster.secret_data("out").await.is_none(), "the Secret was written");
    let (_operator, token) = restarted(&cluster, &sim).await;
    // A client-credentials token is simply obtained again.
    assert_eq!(sim.token_calls(), 2);
    assert_eq!(sim.issued_tokens().last(), Some(&token));
}

#[tokio::test]
async fn killed_after_the_secret_write_a_restart_keeps_the_written_credentials_without_a_call() {
    let (cluster, sim) = killed_at(failpoints::AFTER_SECRET_WRITE).await;
    assert_eq!(sim.token_calls(), 1);
    let written = cluster.secret_data("out").await.expect("the Secret was written")["access_token"].clone();
    let before = cluster.integrations().get("api").await.unwrap();
    assert!(
        before
            .status
            .is_none_or(|s| !s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        "Ready before the status write"
    );
    let (_operator, token) = restarted(&cluster, &sim).await;
    assert_eq!(
        sim.token_calls(),
        1,
        "credentials already in the Secret were exchanged again"
    );
    assert_eq!(token, written, "the written credentials were replaced");
}

/// A restarted operator trusts what it wrote and knows what did not change
/// without reading it: no read of an output Secret still at the version
/// status records, none of an input Secret still at the version the
/// credentials were made from. Everything changed while it was down is
/// read and acted on: an input Secret deleted and created again with the
/// same values (read, nothing exchanged), an output Secret edited and
/// edited back (read, found intact, nothing exchanged), a ClusterProvider
/// edit that changes what is sent, and a rotated input (both exchanged).
#[tokio::test]
async fn a_restart_reads_only_what_changed_while_the_operator_was_down() {
    let (cluster, sim) = setup(Some(3600)).await;
    cluster.oauth2_provider("auth-d", &sim.token_url(), json!({})).await;
    let client_a = [("client_id", "client-a"), ("client_secret", CLIENT_SECRET)];
    for input in ["creds-b", "creds-d", "creds-e"] {
        cluster.input_secret(input, &client_a).await;
    }
    let with = |provider: &str, input: &str, target: &str| json!({"provider": provider, "secretRef": {"name": input}, "clientCredentials": {}, "target": {"name": target}});
    let operator = cluster.start_operator().await;
    cluster.integration("a", with("auth", "creds", "out-a")).await;
    cluster.integration("b", with("auth", "creds-b", "out-b")).await;
    cluster.integration("c", with("auth", "creds", "out-c")).await;
    cluster.integration("d", with("auth-d", "creds-d", "out-d")).await;
    cluster.integration("e", with("auth", "creds-e", "out-e")).await;
    for name in ["a", "b", "c", "d", "e"] {
        cluster.wait_ready(name, "True", None).await;
    }
    let mut tokens = std::collections::BTreeMap::new();
    for out in ["out-a", "out-b", "out-c", "out-d", "out-e"] {
        tokens.insert(
            out,
            cluster.secret_data(out).await.expect("written")["access_token"].clone(),
        );
    }
    operator.stop().await;
    assert_eq!(sim.token_calls(), 5);

    // While it is down:
    let secrets = cluster.secrets();
    secrets.delete("creds-b", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(10), "creds-b gone", || async {
        secrets.get_opt("creds-b").await.unwrap().is_none().then_some(())
    })
    .await;
    cluster.input_secret("creds-b", &client_a).await;
    let c_token = tokens["out-c"].clone();
    cluster
        .patch_secret_strings("out-c", json!({"access_token": "edited"}))
        .await;
    cluster
        .patch_secret_strings("out-c", json!({"access_token": c_token}))
        .await;
    cluster
        .oauth2_provider(
            "auth-d",
            &sim.token_url(),
            json!({"clientAuthMethod": "client_secret_post"}),
        )
        .await;
    cluster
        .patch_secret_strings(
            "creds-e",
            json!({"client_id": "client-b", "client_secret": ROTATED_SECRET}),
        )
        .await;

    let reads = cluster.api().reads();
    reads.reset();
    let writes = cluster.api().counters();
    writes.reset();
    let operator = cluster.start_operator().await;
    for out in ["out-d", "out-e"] {
        eventually(Duration::from_secs(20), "a new token after the change", || async {
            let token = cluster.secret_data(out).await?["access_token"].clone();
            (token != tokens[out]).then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(20), "the changed Secrets read", || async {
        (reads.count("secrets", "creds-b") > 0 && reads.count("secrets", "out-c") > 0).then_some(())
    })
    .await;
    assert_eq!(calls_during(&sim, Duration::from_secs(2)).await, 0);
    assert_eq!(
        sim.token_calls(),
        7,
        "only the provider edit and the rotation were exchanged"
    );
    for (secret, why) in [
        ("out-a", "an output Secret at the version status records"),
        ("out-b", "an output Secret at the version status records"),
        ("creds", "an input Secret at the version the credentials were made from"),
    ] {
        assert_eq!(
            reads.count("secrets", secret),
            0,
            "{secret} was read: {why}\n{:?}",
            reads.snapshot()
        );
    }
    for secret in ["creds-b", "out-c", "creds-d", "creds-e"] {
        assert!(reads.count("secrets", secret) > 0, "{secret} changed and was not read");
    }
    // Only the two new tokens were written (Secret and status each).
    assert_eq!(writes.writes_to("secrets"), 2, "{:?}", writes.snapshot());
    assert_eq!(writes.writes_to("integrations/status"), 2, "{:?}", writes.snapshot());
    for (name, out) in [("a", "out-a"), ("b", "out-b"), ("c", "out-c")] {
        assert_eq!(cluster.secret_data(out).await.unwrap()["access_token"], tokens[out]);
        cluster.wait_ready(name, "True", None).await;
    }
    wait_token_for(&cluster, &sim, "out-e", "client-b").await;
    operator.stop().await;
}

// ---------------------------------------------------------------------------
// Real causes, on a real control plane of the test's own: the apiserver
// restarted after an etcd compaction (its watchers resume from a
// resourceVersion that is gone and get 410 Gone), then etcd restarted.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_restarted_apiserver_after_an_etcd_compaction_and_a_restarted_etcd_lose_no_work() {
    let (cluster, sim) = setup_with(Cluster::private().await, Some(3600), json!({})).await;
    let control_plane = cluster.control_plane();
    let operator = cluster.start_operator().await;
    cluster.integration("a", spec("out-a")).await;
    cluster.wait_ready("a", "True", None).await;
    let exchanges = sim.token_calls();

    // Changes the watchers have not seen, compacted away, then the apiserver
    // goes down for a second and comes back with an empty watch cache.
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    for n in 0..5 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("churn-{n}")}})).unwrap();
        config_maps.create(&PostParams::default(), &cm).await.unwrap();
    }
    control_plane.compact().await.expect("etcd compacted");
    control_plane
        .restart("kube-apiserver", Duration::from_secs(1))
        .await
        .expect("kube-apiserver restarted");
    rotate_input(&cluster).await;
    cluster.integration("b", spec("out-b")).await;
    wait_token_for(&cluster, &sim, "out-a", "client-b").await;
    wait_token_for(&cluster, &sim, "out-b", "client-b").await;
    assert!(
        logs().contains("code: 410"),
        "no watch got 410 Gone after the compaction and restart"
    );
    // One exchange for a's new input, one for b: none lost, none doubled.
    assert_eq!(sim.token_calls(), exchanges + 2);

    // etcd itself goes away for two seconds.
    control_plane
        .restart("etcd", Duration::from_secs(2))
        .await
        .expect("etcd restarted");
    cluster.integration("c", spec("out-c")).await;
    wait_token_for(&cluster, &sim, "out-c", "client-b").await;
    cluster.wait_ready("c", "True", None).await;
    assert_eq!(calls_during(&sim, Duration::from_secs(1)).await, 0);
    assert_eq!(sim.token_calls(), exchanges + 3);
    operator.stop().await;
}

/// The stall watchdog, with a worker stalled for real: the binary's
/// `stall-renewal` fail point makes every routine renewal hang forever (a
/// stuck worker), so the renewal time passes with Ready still True and no
/// failure recorded.
#[tokio::test]
async fn a_stalled_renewal_is_reported_overdue_fails_liveness_and_a_restart_renews() {
    // 20-s tokens renewed at half their life: due ~10 s after issue,
    // overdue 3 s later (--renewal-overdue-after).
    let (cluster, sim) = setup(Some(20)).await;
    let stuck = Binary::start_with(
        &cluster,
        Some(failpoints::STALL_RENEWAL),
        &["--renewal-overdue-after", "3s"],
    );
    let mut with_refresh = spec("out");
    with_refresh["refresh"] = json!({"renewBefore": "50%"});
    cluster.integration("api", with_refresh.clone()).await;
    cluster.wait_ready("api", "True", None).await;
    let first = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    let url = stuck.metrics_url().await;
    assert_eq!(
        probe(&format!("{url}/livez")).await.0,
        200,
        "live before any renewal is due"
    );

    let overdue = eventually(Duration::from_secs(30), "a RenewalOverdue condition", || async {
        let i = cluster.integrations().get("api").await.ok()?;
        i.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "RenewalOverdue" && c.status == "True")
    })
    .await;
    assert_eq!(overdue.reason, "RenewalOverdue");
    assert!(overdue.message.contains("has not happened"), "{}", overdue.message);
    assert!(cluster.has_event("RenewalOverdue").await, "no RenewalOverdue Event");
    let (_, metrics) = probe(&format!("{url}/metrics")).await;
    assert!(
        metrics.contains("integration_operator_renewals_overdue 1"),
        "the gauge does not count it:\n{metrics}"
    );
    // Nothing finishes any more: the liveness probe fails, so that
    // Kubernetes would restart the process.
    let (code, body) = eventually(Duration::from_secs(15), "/livez to fail", || async {
        let (code, body) = probe(&format!("{url}/livez")).await;
        (code == 503).then_some((code, body))
    })
    .await;
    assert!(body.contains("1 renewals overdue"), "{code} {body}");
    assert_eq!(sim.token_calls(), 1, "the stalled renewal never reached the provider");
    let log = stuck.log();
    assert!(log.contains("renewal overdue"), "{log}");
    drop(stuck);

    // What Kubernetes does next: a new process renews, and the condition goes.
    let healthy = Binary::start_with(&cluster, None, &["--renewal-overdue-after", "3s"]);
    eventually(Duration::from_secs(30), "a renewed token", || async {
        let token = cluster.secret_data("out").await?["access_token"].clone();
        (token != first && sim.is_valid_token(&token)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(15), "the condition cleared", || async {
        let i = cluster.integrations().get("api").await.ok()?;
        (!i.status?.conditions.iter().any(|c| c.type_ == "RenewalOverdue")).then_some(())
    })
    .await;
    let url = healthy.metrics_url().await;
    assert_eq!(probe(&format!("{url}/livez")).await.0, 200);
    let logs = format!("{}\n{}", healthy.log(), cluster.events_text().await);
    no_secret_leaked(&logs, "the log and Events");
    assert!(!logs.contains(&first), "the token appeared in the log or an Event");
}
