//! The generic `oauth2` driver's client-credentials flow against the OAuth 2.0
//! token-server simulator.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::json;
use testkit::sim::{Fault, oauth2::OAuth2Sim};

use super::{Case, INPUT_SECRET, OUTPUT_SECRET, rotated};
use crate::common::Cluster;

const CLIENT_ID: &str = "conformance-client";
const CLIENT_SECRET: &str = "canary-oauth2-secret-4d1c9a";

pub struct ClientCredentials {
    sim: OAuth2Sim,
    rotations: AtomicU32,
}

impl Case for ClientCredentials {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = OAuth2Sim::start().await.expect("simulator starts");
        sim.add_client(CLIENT_ID, CLIENT_SECRET);
        sim.set_token_lifetime(Some(5));
        cluster.oauth2_provider("auth", &sim.token_url(), json!({})).await;
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
            "provider": "auth",
            "secretRef": {"name": INPUT_SECRET},
            "clientCredentials": {"scopes": ["read"]},
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        data.get("access_token").is_some_and(|t| self.sim.is_valid_token(t))
            && data.get("header_value") == data.get("access_token").map(|t| format!("Bearer {t}")).as_ref()
    }

    fn calls(&self) -> u64 {
        self.sim.token_calls()
    }

    fn set_down(&self, down: bool) {
        self.sim.clear_faults();
        if down {
            self.sim.fail_next("token", usize::MAX, Fault::status(503));
        }
    }

    fn revoke_input(&self) {
        // Every client the input Secret may name gets a secret it does not hold.
        let n = self.rotations.load(Ordering::SeqCst);
        self.sim.add_client(CLIENT_ID, "revoked-by-the-provider");
        self.sim.add_client(&rotated(CLIENT_ID, n), "revoked-by-the-provider");
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        let (id, secret) = (rotated(CLIENT_ID, n), rotated(CLIENT_SECRET, n));
        self.sim.add_client(&id, &secret);
        vec![("client_id".into(), id), ("client_secret".into(), secret)]
    }

    fn provider_objects(&self) -> usize {
        0
    }

    fn canaries(&self) -> Vec<String> {
        let n = self.rotations.load(Ordering::SeqCst);
        let mut all: Vec<String> = (1..=n).map(|i| format!("{CLIENT_SECRET}-rotated-{i}")).collect();
        all.push(CLIENT_SECRET.to_string());
        all.extend(self.sim.issued_tokens());
        all
    }
}
