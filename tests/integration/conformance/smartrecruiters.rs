//! The `smartrecruiters` driver's three flows against the SmartRecruiters
//! simulator: a customer API key (`X-SmartToken`), a customer-made OAuth
//! client (client credentials) and the General Partner Integration.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::json;
use testkit::sim::{
    Fault,
    smartrecruiters::{ROUTES, SmartRecruitersSim},
};

use super::{Case, INPUT_SECRET, OUTPUT_SECRET, rotated};
use crate::common::Cluster;

const PROVIDER: &str = "smartrecruiters";
const COMPANY: &str = "ACME";
const APP: &str = "conformance-app";

async fn start_sim(cluster: &Cluster, lifetime: u64) -> SmartRecruitersSim {
    let sim = SmartRecruitersSim::start().await.expect("simulator starts");
    sim.set_token_lifetime(Some(lifetime));
    cluster
        .oauth2_provider(
            PROVIDER,
            &sim.token_url(),
            json!({
                "type": "smartrecruiters",
                "baseUrl": sim.url(),
                "clientAuthMethod": "client_secret_post",
                "revalidateInterval": "2s",
            }),
        )
        .await;
    sim
}

fn set_down(sim: &SmartRecruitersSim, down: bool) {
    sim.clear_faults();
    if down {
        for route in ROUTES {
            sim.fail_next(route, usize::MAX, Fault::status(503));
        }
    }
}

fn bearer_works(sim: &SmartRecruitersSim, data: &BTreeMap<String, String>) -> bool {
    data.get("access_token").is_some_and(|t| sim.is_valid_token(t))
        && data.get("header_name").map(String::as_str) == Some("Authorization")
        && data.get("header_value") == data.get("access_token").map(|t| format!("Bearer {t}")).as_ref()
}

/// A customer API key, validated and published as `X-SmartToken`.
pub struct ApiKey {
    sim: SmartRecruitersSim,
    rotations: AtomicU32,
}

const API_KEY: &str = "DCRA1-canary-sr-api-key-0c5e2b7a91";

fn api_key(n: u32) -> String {
    rotated(API_KEY, n)
}

impl Case for ApiKey {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = start_sim(cluster, 1800).await;
        sim.add_api_key(API_KEY, COMPANY);
        cluster.input_secret(INPUT_SECRET, &[("api_key", API_KEY)]).await;
        Self {
            sim,
            rotations: AtomicU32::new(0),
        }
    }

    fn spec(&self) -> serde_json::Value {
        json!({
            "provider": PROVIDER,
            "secretRef": {"name": INPUT_SECRET},
            "apiKey": {},
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        data.get("header_name").map(String::as_str) == Some("X-SmartToken")
            && data.get("header_value").is_some_and(|k| self.sim.is_valid_api_key(k))
    }

    fn calls(&self) -> u64 {
        self.sim.total_calls()
    }

    fn set_down(&self, down: bool) {
        set_down(&self.sim, down);
    }

    fn revoke_input(&self) {
        self.sim.revoke_api_key(&api_key(self.rotations.load(Ordering::SeqCst)));
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let key = api_key(self.rotations.fetch_add(1, Ordering::SeqCst) + 1);
        self.sim.add_api_key(&key, COMPANY);
        vec![("api_key".into(), key)]
    }

    fn provider_objects(&self) -> usize {
        0
    }

    fn canaries(&self) -> Vec<String> {
        (0..=self.rotations.load(Ordering::SeqCst)).map(api_key).collect()
    }
}

const CLIENT_ID: &str = "acme-oauth-client";
const CLIENT_SECRET: &str = "canary-sr-client-secret-5d0f3e";

/// A customer-made OAuth client (Credential Manager > OAuth client ID).
pub struct ClientCredentials {
    sim: SmartRecruitersSim,
    rotations: AtomicU32,
}

fn client(n: u32) -> (String, String) {
    (rotated(CLIENT_ID, n), rotated(CLIENT_SECRET, n))
}

impl Case for ClientCredentials {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = start_sim(cluster, 5).await;
        sim.add_client(CLIENT_ID, CLIENT_SECRET, COMPANY);
        cluster
            .input_secret(
                INPUT_SECRET,
                &[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            )
            .await;
        Self {
            sim,
            rotations: AtomicU32::new(0),
        }
    }

    fn spec(&self) -> serde_json::Value {
        json!({
            "provider": PROVIDER,
            "secretRef": {"name": INPUT_SECRET},
            "clientCredentials": {},
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        bearer_works(&self.sim, data)
    }

    fn calls(&self) -> u64 {
        self.sim.total_calls()
    }

    fn set_down(&self, down: bool) {
        set_down(&self.sim, down);
    }

    fn revoke_input(&self) {
        self.sim.revoke_client(&client(self.rotations.load(Ordering::SeqCst)).0);
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let (id, secret) = client(self.rotations.fetch_add(1, Ordering::SeqCst) + 1);
        self.sim.add_client(&id, &secret, COMPANY);
        vec![("client_id".into(), id), ("client_secret".into(), secret)]
    }

    fn provider_objects(&self) -> usize {
        0
    }

    fn canaries(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..=self.rotations.load(Ordering::SeqCst))
            .map(|n| client(n).1)
            .collect();
        all.extend(self.sim.issued_tokens());
        all
    }
}

const MASTER_ID: &str = "partner-master";
const MASTER_SECRET: &str = "canary-sr-master-secret-77a1c4";

/// The General Partner Integration: master credentials create a
/// customer-level integration once, whose credentials are then exchanged.
///
/// "Revoking the input" here means SmartRecruiters revoked the partner's
/// access: the master credentials and the customer-level credentials of the
/// integrations they created (otherwise nothing the Integration uses any
/// more would be refused). New master credentials alone do not create a new
/// integration (the operator cannot tell this from a customer who disabled
/// it on purpose): a person asks with the retry annotation, set to the
/// integration id as the condition says.
pub struct PartnerIntegration {
    sim: SmartRecruitersSim,
    rotations: AtomicU32,
}

fn master(n: u32) -> (String, String) {
    (rotated(MASTER_ID, n), rotated(MASTER_SECRET, n))
}

impl Case for PartnerIntegration {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = start_sim(cluster, 5).await;
        sim.add_master_client(MASTER_ID, MASTER_SECRET, &[APP]);
        cluster
            .input_secret(
                INPUT_SECRET,
                &[("client_id", MASTER_ID), ("client_secret", MASTER_SECRET)],
            )
            .await;
        Self {
            sim,
            rotations: AtomicU32::new(0),
        }
    }

    fn spec(&self) -> serde_json::Value {
        json!({
            "provider": PROVIDER,
            "secretRef": {"name": INPUT_SECRET},
            "partnerIntegration": {"appId": APP, "companyId": COMPANY, "bidirectional": true},
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        let issued_to_integration = data
            .get("access_token")
            .and_then(|t| self.sim.token_client(t))
            .is_some_and(|c| {
                self.sim
                    .integrations()
                    .iter()
                    .any(|i| i.enabled && i.client_id == c && data.get("integration_id") == Some(&i.integration_id))
            });
        bearer_works(&self.sim, data) && issued_to_integration
    }

    fn calls(&self) -> u64 {
        self.sim.total_calls()
    }

    fn set_down(&self, down: bool) {
        set_down(&self.sim, down);
    }

    fn revoke_input(&self) {
        self.sim.revoke_client(&master(self.rotations.load(Ordering::SeqCst)).0);
        for i in self.sim.integrations() {
            self.sim.disable_integration(&i.integration_id);
        }
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let (id, secret) = master(self.rotations.fetch_add(1, Ordering::SeqCst) + 1);
        self.sim.add_master_client(&id, &secret, &[APP]);
        vec![("client_id".into(), id), ("client_secret".into(), secret)]
    }

    fn retry_after_rotation(&self) -> Option<String> {
        self.sim.integrations().last().map(|i| i.integration_id.clone())
    }

    fn provider_objects(&self) -> usize {
        self.sim.enabled_integrations()
    }

    fn creates_provider_objects(&self) -> bool {
        true
    }

    fn provider_can_delete(&self) -> bool {
        // No partner API deletes an integration (shared/providers.md).
        false
    }

    fn canaries(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..=self.rotations.load(Ordering::SeqCst))
            .map(|n| master(n).1)
            .collect();
        for i in self.sim.integrations() {
            all.push(i.client_secret);
            all.extend(i.partner_client_secret);
        }
        all.extend(self.sim.issued_tokens());
        all
    }
}
