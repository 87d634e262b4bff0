//! One conformance suite that every provider driver runs: the same
//! user-visible scenarios (issue, refresh or re-validate, rotate the input,
//! provider down, credentials refused, delete, no secret anywhere), each
//! against the real controller over real HTTP, the real kube-apiserver
//! (testkit's control plane) and the provider's protocol simulator.
//!
//! A provider joins by implementing [`Case`] in its own module and adding one
//! `conformance!(module, CaseType);` line below. The scenarios know nothing
//! of any provider's wire format: everything provider-specific goes through
//! the case.

mod cloud_elements;
mod kombo;
mod oauth2;
mod smartrecruiters;
mod talentlink;

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Cluster, eventually, logs};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

/// Name of the input Secret every case creates in `setup`.
pub const INPUT_SECRET: &str = "creds";
/// Name of the output Secret every case's spec targets.
pub const OUTPUT_SECRET: &str = "out";
/// Name of the Integration the scenarios create.
pub const INTEGRATION: &str = "conformance";

/// The `n`th value of a credential a case rotates: the original for 0, then
/// a distinct value for each rotation.
pub fn rotated(original: &str, n: u32) -> String {
    if n == 0 {
        original.to_string()
    } else {
        format!("{original}-rotated-{n}")
    }
}

/// A provider flow under test, with its simulator.
#[allow(async_fn_in_trait)]
pub trait Case: Sized {
    /// Starts the simulator, creates the ClusterProvider the spec names and the
    /// input Secret [`INPUT_SECRET`] with credentials the simulator accepts.
    /// Lifetimes (or the ClusterProvider's `revalidateInterval`) are short, so
    /// a renewal or re-validation happens within a few seconds.
    async fn setup(cluster: &Cluster) -> Self;

    /// The Integration spec (provider, `secretRef` [`INPUT_SECRET`], the flow
    /// block, `target.name` [`OUTPUT_SECRET`]).
    fn spec(&self) -> serde_json::Value;

    /// Whether the output Secret's data holds credentials the provider accepts
    /// right now (the way an application would use them).
    fn works(&self, data: &BTreeMap<String, String>) -> bool;

    /// Calls the provider has answered so far, on every route.
    fn calls(&self) -> u64;

    /// While `down`, every request to the provider gets a 503.
    fn set_down(&self, down: bool);

    /// The provider stops accepting the input credentials currently in the
    /// input Secret (revoked or rotated on the provider's side).
    fn revoke_input(&self);

    /// New input credentials the provider accepts, as input Secret keys and
    /// values; the scenario writes them into the input Secret.
    fn rotate_input(&self) -> Vec<(String, String)>;

    /// The value of the retry annotation (`integration-operator.io/retry`) a
    /// person sets after new input credentials, where new credentials alone
    /// must not recover the flow (a SmartRecruiters partner integration the
    /// customer disabled is created again only when a person asks); `None`
    /// when the new input is enough.
    fn retry_after_rotation(&self) -> Option<String> {
        None
    }

    /// Objects the flow created on the provider's side that still exist
    /// (integrations, instances); 0 for flows that create none.
    fn provider_objects(&self) -> usize;

    /// Whether the flow creates an object on the provider's side (then
    /// deleting the Integration must remove it).
    fn creates_provider_objects(&self) -> bool {
        false
    }

    /// Whether the provider offers a way to delete what the flow created.
    /// SmartRecruiters gives partners none (the customer disables the
    /// integration in SmartRecruiters); deleting the Integration must then
    /// still finish, and leave the provider's object as it was.
    fn provider_can_delete(&self) -> bool {
        true
    }

    /// Every secret value that must never be printed: input secrets and
    /// everything the provider issued so far.
    fn canaries(&self) -> Vec<String>;
}

/// The scenarios, generic over the case.
pub mod scenarios {
    use super::*;

    async fn start<C: Case>() -> (Cluster, C, integration_operator::cli::Operator) {
        let cluster = Cluster::start().await;
        let case = C::setup(&cluster).await;
        let operator = cluster.start_operator().await;
        cluster.integration(INTEGRATION, case.spec()).await;
        cluster.wait_ready(INTEGRATION, "True", None).await;
        (cluster, case, operator)
    }

    async fn output(cluster: &Cluster) -> BTreeMap<String, String> {
        cluster
            .secret_data(OUTPUT_SECRET)
            .await
            .expect("the output Secret exists")
    }

    /// Applied with valid input, the Integration turns Ready and its Secret
    /// holds credentials the provider accepts, in the documented layout.
    pub async fn issues_working_credentials<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        let data = output(&cluster).await;
        assert!(case.works(&data), "the provider refuses what the Secret holds");
        for key in ["header_name", "header_value", "base_url"] {
            assert!(data.contains_key(key), "the output Secret lacks {key:?}");
        }
        let i = cluster.integrations().get(INTEGRATION).await.unwrap();
        let status = i.status.expect("status written");
        assert_eq!(status.observed_generation, i.metadata.generation);
        assert_eq!(status.secret_name.as_deref(), Some(OUTPUT_SECRET));
        operator.stop().await;
    }

    /// The operator goes back to the provider on its own (renewal before
    /// expiry, or re-validation of credentials without one) and the Secret
    /// keeps working throughout.
    pub async fn refreshes_or_revalidates<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        let before = case.calls();
        eventually(Duration::from_secs(20), "a renewal or re-validation", || async {
            (case.calls() > before).then_some(())
        })
        .await;
        // Whatever the Secret holds while this goes on is accepted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let data = output(&cluster).await;
            assert!(case.works(&data), "the Secret held refused credentials");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.wait_ready(INTEGRATION, "True", None).await;
        operator.stop().await;
    }

    /// A rotated input Secret leads to credentials obtained with the new input.
    pub async fn rotated_input_is_used<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        case.revoke_input();
        let rotated = case.rotate_input();
        write_input(&cluster, &rotated).await;
        ask_retry(&cluster, &case).await;
        eventually(
            Duration::from_secs(20),
            "credentials from the rotated input",
            || async {
                let data = cluster.secret_data(OUTPUT_SECRET).await?;
                let i = cluster.integrations().get(INTEGRATION).await.ok()?;
                let ready = i
                    .status?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (ready && case.works(&data)).then_some(())
            },
        )
        .await;
        operator.stop().await;
    }

    /// A provider outage is reported as transient, with the step that failed,
    /// and leaves the last good Secret untouched; the Integration recovers by
    /// itself.
    pub async fn provider_down_keeps_the_last_good_secret<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        let good = output(&cluster).await;
        case.set_down(true);
        let i = cluster.wait_ready(INTEGRATION, "False", None).await;
        let ready = ready_condition(&i);
        assert!(
            ["ProviderUnavailable", "Expired"].contains(&ready.reason.as_str()),
            "an outage must read as an outage, not as {}: {}",
            ready.reason,
            ready.message
        );
        assert!(!ready.message.is_empty());
        assert!(
            cluster.has_event(&ready.reason).await,
            "no Warning Event says {}",
            ready.reason
        );
        assert_eq!(output(&cluster).await, good, "the Secret changed during the outage");
        case.set_down(false);
        cluster.wait_ready(INTEGRATION, "True", None).await;
        assert!(case.works(&output(&cluster).await));
        operator.stop().await;
    }

    /// Credentials the provider refuses mark the Integration as needing new
    /// credentials (not as an outage); fixing the input Secret recovers it.
    pub async fn refused_credentials_need_reauth_and_recover<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        case.revoke_input();
        let i = cluster.wait_ready(INTEGRATION, "False", Some("ReauthRequired")).await;
        let message = ready_condition(&i).message;
        assert!(
            message.to_lowercase().contains("refused"),
            "the message must say the credentials were refused: {message}"
        );
        assert!(cluster.has_event("ReauthRequired").await);
        // The refused credentials are not sent again (each try could count
        // towards locking the account), and the condition says so...
        assert!(
            message.contains("not sent again") && message.contains("integration-operator.io/retry"),
            "the message must say the credentials are held and how to retry: {message}"
        );
        let held_at = case.calls();
        // ...over more than two retry intervals of the test operator (3 s).
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(case.calls(), held_at, "the refused credentials were sent again");
        let rotated = case.rotate_input();
        write_input(&cluster, &rotated).await;
        ask_retry(&cluster, &case).await;
        cluster.wait_ready(INTEGRATION, "True", None).await;
        assert!(case.works(&output(&cluster).await));
        operator.stop().await;
    }

    /// Deleting the Integration removes its Secret and whatever the flow
    /// created on the provider's side.
    pub async fn delete_cleans_up<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        let created = case.provider_objects();
        if case.creates_provider_objects() {
            assert!(created > 0, "the flow created nothing on the provider");
        }
        cluster
            .integrations()
            .delete(INTEGRATION, &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            Duration::from_secs(20),
            "the Integration and its Secret gone",
            || async {
                let gone = cluster.integrations().get_opt(INTEGRATION).await.ok()?.is_none()
                    && cluster.secrets().get_opt(OUTPUT_SECRET).await.ok()?.is_none();
                gone.then_some(())
            },
        )
        .await;
        if case.provider_can_delete() {
            assert_eq!(case.provider_objects(), 0, "provider-side objects left behind");
        } else {
            assert_eq!(case.provider_objects(), created, "the provider's objects changed");
        }
        operator.stop().await;
    }

    /// Across issue, failure, recovery and renewal, no secret value reaches
    /// logs (trace level), Events, status or metrics.
    pub async fn no_secret_in_logs_events_status_or_metrics<C: Case>() {
        let (cluster, case, operator) = start::<C>().await;
        case.set_down(true);
        cluster.wait_ready(INTEGRATION, "False", None).await;
        case.set_down(false);
        cluster.wait_ready(INTEGRATION, "True", None).await;
        case.revoke_input();
        cluster.wait_ready(INTEGRATION, "False", Some("ReauthRequired")).await;
        write_input(&cluster, &case.rotate_input()).await;
        ask_retry(&cluster, &case).await;
        cluster.wait_ready(INTEGRATION, "True", None).await;
        let metrics = reqwest::get(format!("http://{}/metrics", operator.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        operator.stop().await;

        let canaries = case.canaries();
        assert!(!canaries.is_empty());
        let haystacks = [
            ("logs", logs()),
            ("events", cluster.events_text().await),
            ("status", cluster.integration_yaml(INTEGRATION).await),
            ("metrics", metrics),
        ];
        for (what, text) in &haystacks {
            assert!(!text.is_empty(), "nothing captured from {what}");
            for canary in &canaries {
                assert!(!text.contains(canary.as_str()), "a secret value appeared in {what}");
            }
        }
    }

    fn ready_condition(
        i: &integration_operator::crd::Integration,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        i.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .cloned()
            .expect("a Ready condition")
    }

    /// Sets the retry annotation where the case says a person would.
    async fn ask_retry<C: Case>(cluster: &Cluster, case: &C) {
        let Some(value) = case.retry_after_rotation() else {
            return;
        };
        cluster
            .integrations()
            .patch(
                INTEGRATION,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"integration-operator.io/retry": value}}})),
            )
            .await
            .expect("retry annotation set");
    }

    async fn write_input(cluster: &Cluster, values: &[(String, String)]) {
        let data: serde_json::Map<String, serde_json::Value> =
            values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        cluster
            .secrets()
            .patch(
                INPUT_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": data})),
            )
            .await
            .expect("input Secret updated");
    }
}

/// Generates the suite's tests for one case.
macro_rules! conformance {
    ($module:ident, $case:ty) => {
        mod $module {
            use super::scenarios;

            #[tokio::test]
            async fn issues_working_credentials() {
                scenarios::issues_working_credentials::<$case>().await
            }
            #[tokio::test]
            async fn refreshes_or_revalidates() {
                scenarios::refreshes_or_revalidates::<$case>().await
            }
            #[tokio::test]
            async fn rotated_input_is_used() {
                scenarios::rotated_input_is_used::<$case>().await
            }
            #[tokio::test]
            async fn provider_down_keeps_the_last_good_secret() {
                scenarios::provider_down_keeps_the_last_good_secret::<$case>().await
            }
            #[tokio::test]
            async fn refused_credentials_need_reauth_and_recover() {
                scenarios::refused_credentials_need_reauth_and_recover::<$case>().await
            }
            #[tokio::test]
            async fn delete_cleans_up() {
                scenarios::delete_cleans_up::<$case>().await
            }
            #[tokio::test]
            async fn no_secret_in_logs_events_status_or_metrics() {
                scenarios::no_secret_in_logs_events_status_or_metrics::<$case>().await
            }
        }
    };
}

conformance!(oauth2_client_credentials, crate::conformance::oauth2::ClientCredentials);
conformance!(kombo_connection, crate::conformance::kombo::Connection);
conformance!(smartrecruiters_api_key, crate::conformance::smartrecruiters::ApiKey);
conformance!(
    smartrecruiters_client_credentials,
    crate::conformance::smartrecruiters::ClientCredentials
);
conformance!(
    smartrecruiters_partner_integration,
    crate::conformance::smartrecruiters::PartnerIntegration
);
conformance!(talentlink_basic_auth, crate::conformance::talentlink::BasicAuth);
conformance!(
    cloud_elements_element_instance,
    crate::conformance::cloud_elements::ElementInstance
);
