//! The generic `oauth2` driver against a real OAuth 2.0 authorization server
//! nobody here wrote: oidc-provider (npm, pinned in tests/oidc), running on
//! 127.0.0.1 with 3-second tokens. The operator runs against the real
//! kube-apiserver (testkit's control plane).

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use serde_json::json;
use testkit::sim::oidc::OidcProvider;

const SECRET: &str = "oidc-canary-secret-4d9e2f";

#[tokio::test]
async fn issues_renews_before_expiry_and_reports_a_rejected_secret() {
    let cluster = Cluster::start().await;
    let oidc = OidcProvider::start("operator", SECRET, 3)
        .await
        .expect("oidc-provider starts");
    cluster.oauth2_provider("oidc", &oidc.token_url(), json!({})).await;
    cluster
        .input_secret("creds", &[("client_id", "operator"), ("client_secret", SECRET)])
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "api",
            json!({"provider": "oidc", "secretRef": {"name": "creds"}, "clientCredentials": {}, "target": {"name": "out"}}),
        )
        .await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let first = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    assert!(
        oidc.is_active(&first).await.unwrap(),
        "oidc-provider does not know the issued token"
    );

    // Renewed before the 3-second token expires, repeatedly: every token seen
    // in the Secret is one oidc-provider still accepts.
    let mut seen = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        let token = cluster.secret_data("out").await.unwrap()["access_token"].clone();
        assert!(
            oidc.is_active(&token).await.unwrap(),
            "the Secret held a token oidc-provider no longer accepts"
        );
        if seen.last() != Some(&token) {
            seen.push(token);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.len() >= 3,
        "expected at least two renewals, saw {} tokens",
        seen.len()
    );

    // A wrong secret: oidc-provider answers invalid_client; the operator asks
    // for new credentials and keeps the last good token until it expires.
    cluster
        .patch_secret_strings("creds", json!({"client_secret": "wrong"}))
        .await;
    let i = cluster.wait_ready("api", "False", Some("ReauthRequired")).await;
    let message = i.status.unwrap().conditions[0].message.clone();
    assert!(message.contains("invalid_client"), "{message}");
    // The last good token is read only now: a renewal already in flight when
    // the input Secret changed may still have written a newer one before the
    // rejected exchange. From the rejection on, the Secret must not change.
    let good = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    assert!(
        oidc.is_active(&good).await.unwrap(),
        "the kept token is not one oidc-provider still accepts"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.secret_data("out").await.unwrap()["access_token"], good);

    // Fixing the input Secret recovers without a restart.
    cluster
        .patch_secret_strings("creds", json!({"client_secret": SECRET}))
        .await;
    eventually(
        Duration::from_secs(15),
        "recovery after the secret is fixed",
        || async {
            let i = cluster.integrations().get("api").await.ok()?;
            let ready = i.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "True").then_some(())
        },
    )
    .await;
    operator.stop().await;
    oidc.stop().await;
}

#[tokio::test]
async fn client_secret_post_authentication_works() {
    let cluster = Cluster::start().await;
    let oidc = OidcProvider::start("operator", SECRET, 60)
        .await
        .expect("oidc-provider starts");
    cluster
        .oauth2_provider(
            "oidc",
            &oidc.token_url(),
            json!({"clientAuthMethod": "client_secret_post"}),
        )
        .await;
    cluster
        .input_secret("creds", &[("client_id", "operator-post"), ("client_secret", SECRET)])
        .await;
    let operator = cluster.start_operator().await;
    cluster
        .integration(
            "api",
            json!({"provider": "oidc", "secretRef": {"name": "creds"}, "clientCredentials": {"scopes": ["read"]}, "target": {"name": "out"}}),
        )
        .await;
    cluster.wait_ready("api", "True", Some("Issued")).await;
    let token = cluster.secret_data("out").await.unwrap()["access_token"].clone();
    assert!(oidc.is_active(&token).await.unwrap());
    operator.stop().await;
    oidc.stop().await;
}
