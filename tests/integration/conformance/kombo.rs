//! The `kombo` driver's `connection` flow against the Kombo simulator, with
//! an integration the customer already connected, named in
//! `spec.connection.integrationId`: the scenarios see a connection without a
//! person (a new link needs one: Kombo reports a finished link only through
//! its front-end SDK or a webhook). A named integration is someone else's:
//! deleting the Integration must leave it as it was.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::json;
use testkit::sim::{
    Fault,
    kombo::{KomboSim, routes},
};

use super::{Case, INPUT_SECRET, OUTPUT_SECRET, rotated};
use crate::common::Cluster;

const API_KEY: &str = "canary-kombo-conformance-key-8b2e61";
const INTEGRATION_ID: &str = "smartrecruiters:8d1hpPsbjxUkoCoa1veLZGe5";

pub struct Connection {
    sim: KomboSim,
    rotations: AtomicU32,
}

impl Connection {
    fn key(n: u32) -> String {
        rotated(API_KEY, n)
    }
}

impl Case for Connection {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = KomboSim::start().await.expect("simulator starts");
        sim.add_api_key(API_KEY);
        sim.add_integration(INTEGRATION_ID, "smartrecruiters");
        cluster
            .cluster_provider(
                "kombo",
                json!({"type": "kombo", "baseUrl": sim.base_url(), "revalidateInterval": "2s"}),
            )
            .await;
        cluster.input_secret(INPUT_SECRET, &[("api_key", API_KEY)]).await;
        Self {
            sim,
            rotations: AtomicU32::new(0),
        }
    }

    fn spec(&self) -> serde_json::Value {
        json!({
            "provider": "kombo",
            "secretRef": {"name": INPUT_SECRET},
            "connection": {
                "endUserEmail": "it-admin@acme.example",
                "endUserOrganizationName": "ACME Inc.",
                "integrationCategory": "ATS",
                "integrationId": INTEGRATION_ID,
            },
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        let key = data.get("header_value").and_then(|v| v.strip_prefix("Bearer "));
        let id = data.get("extra_header_value");
        data.get("header_name").map(String::as_str) == Some("Authorization")
            && data.get("extra_header_name").map(String::as_str) == Some("X-Integration-Id")
            && data.get("base_url") == Some(&self.sim.base_url())
            && matches!((key, id), (Some(k), Some(i)) if self.sim.accepts(k, i))
    }

    fn calls(&self) -> u64 {
        self.sim.total_calls()
    }

    fn set_down(&self, down: bool) {
        self.sim.clear_faults();
        if down {
            for route in routes::ALL {
                self.sim.fail_next(route, usize::MAX, Fault::status(503));
            }
        }
    }

    fn revoke_input(&self) {
        let n = self.rotations.load(Ordering::SeqCst);
        self.sim.revoke_api_key(&Self::key(n));
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        let key = Self::key(n);
        self.sim.add_api_key(&key);
        vec![("api_key".into(), key)]
    }

    fn provider_objects(&self) -> usize {
        self.sim.integrations().len()
    }

    fn provider_can_delete(&self) -> bool {
        // Kombo can, but a named integration is not the operator's to delete.
        false
    }

    fn canaries(&self) -> Vec<String> {
        let n = self.rotations.load(Ordering::SeqCst);
        (0..=n).map(Self::key).collect()
    }
}
