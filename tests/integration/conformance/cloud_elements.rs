//! The `cloud-elements` driver's `elementInstance` flow against the Cloud
//! Elements / SAP Open Connectors simulator: one SmartRecruiters element
//! instance is created, its token published, the instance validated again
//! every `revalidateInterval` and deleted with the Integration.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::json;
use testkit::sim::{
    Fault,
    cloud_elements::{CloudElementsSim, routes},
};

use super::{Case, INPUT_SECRET, OUTPUT_SECRET, rotated};
use crate::common::Cluster;

const USER_SECRET: &str = "canary-ce-conformance-user-9d1f35";
const ORG_SECRET: &str = "canary-ce-conformance-org-47ab02";
const SR_KEY: &str = "canary-ce-conformance-sr-key-e6c813";

pub struct ElementInstance {
    sim: CloudElementsSim,
    rotations: AtomicU32,
}

impl ElementInstance {
    fn user_secret(n: u32) -> String {
        rotated(USER_SECRET, n)
    }
}

impl Case for ElementInstance {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = CloudElementsSim::start().await.expect("simulator starts");
        sim.add_user(USER_SECRET, ORG_SECRET);
        sim.add_element_api_key(SR_KEY);
        cluster
            .cluster_provider(
                "cloud-elements",
                json!({"type": "cloud-elements", "baseUrl": sim.base_url(), "revalidateInterval": "2s"}),
            )
            .await;
        cluster
            .input_secret(
                INPUT_SECRET,
                &[
                    ("user_secret", USER_SECRET),
                    ("organization_secret", ORG_SECRET),
                    ("smartrecruiters_api_key", SR_KEY),
                ],
            )
            .await;
        Self {
            sim,
            rotations: AtomicU32::new(0),
        }
    }

    fn spec(&self) -> serde_json::Value {
        json!({
            "provider": "cloud-elements",
            "secretRef": {"name": INPUT_SECRET},
            "elementInstance": {
                "elementKey": "smartrecruiters",
                "secretConfiguration": {"api.key": "smartrecruiters_api_key"},
            },
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        data.get("header_name").map(String::as_str) == Some("Authorization")
            && data.get("base_url") == Some(&self.sim.base_url())
            && data.get("header_value").is_some_and(|h| self.sim.accepts(h))
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
        // The user secret is reset on the platform.
        let n = self.rotations.load(Ordering::SeqCst);
        self.sim.revoke_user(&Self::user_secret(n));
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        let secret = Self::user_secret(n);
        self.sim.add_user(&secret, ORG_SECRET);
        vec![("user_secret".into(), secret)]
    }

    fn provider_objects(&self) -> usize {
        self.sim.instance_count()
    }

    fn creates_provider_objects(&self) -> bool {
        true
    }

    fn canaries(&self) -> Vec<String> {
        let n = self.rotations.load(Ordering::SeqCst);
        let mut all: Vec<String> = (0..=n).map(Self::user_secret).collect();
        all.push(ORG_SECRET.to_string());
        all.push(SR_KEY.to_string());
        all.extend(self.sim.tokens());
        all
    }
}
