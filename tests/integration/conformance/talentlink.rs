//! The `cornerstone-talentlink` driver's `basicAuth` flow against the
//! TalentLink REST simulator: nothing is exchanged, the credentials are
//! validated (again every `revalidateInterval`) and published.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU32, Ordering},
};

use base64::Engine;
use serde_json::json;
use testkit::sim::{
    Fault,
    talentlink::{TalentLinkSim, routes},
};

use super::{Case, INPUT_SECRET, OUTPUT_SECRET, rotated};
use crate::common::Cluster;

const USERNAME: &str = "conformance-api-user";
const PASSWORD: &str = "canary-talentlink-password-3f9b27";
const API_KEY: &str = "canary-talentlink-api-key-d04e6a";

pub struct BasicAuth {
    sim: TalentLinkSim,
    rotations: AtomicU32,
}

impl BasicAuth {
    fn password(n: u32) -> String {
        rotated(PASSWORD, n)
    }
}

impl Case for BasicAuth {
    async fn setup(cluster: &Cluster) -> Self {
        let sim = TalentLinkSim::start().await.expect("simulator starts");
        sim.add_user(USERNAME, PASSWORD);
        sim.add_api_key(API_KEY, USERNAME);
        cluster
            .cluster_provider(
                "talentlink",
                json!({"type": "cornerstone-talentlink", "baseUrl": sim.base_url(), "revalidateInterval": "2s"}),
            )
            .await;
        cluster
            .input_secret(
                INPUT_SECRET,
                &[("username", USERNAME), ("password", PASSWORD), ("api_key", API_KEY)],
            )
            .await;
        Self {
            sim,
            rotations: AtomicU32::new(0),
        }
    }

    fn spec(&self) -> serde_json::Value {
        json!({
            "provider": "talentlink",
            "secretRef": {"name": INPUT_SECRET},
            "basicAuth": {},
            "target": {"name": OUTPUT_SECRET},
        })
    }

    fn works(&self, data: &BTreeMap<String, String>) -> bool {
        data.get("header_name").map(String::as_str) == Some("Authorization")
            && data.get("authorization") == data.get("header_value")
            && data.get("base_url") == Some(&self.sim.base_url())
            && matches!(
                (data.get("header_value"), data.get("api_key")),
                (Some(h), Some(k)) if self.sim.accepts(h, k)
            )
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
        // The API user's password is changed in TalentLink.
        self.sim.add_user(USERNAME, "changed-by-the-provider");
    }

    fn rotate_input(&self) -> Vec<(String, String)> {
        let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        let password = Self::password(n);
        self.sim.add_user(USERNAME, &password);
        vec![("password".into(), password)]
    }

    fn provider_objects(&self) -> usize {
        0
    }

    fn canaries(&self) -> Vec<String> {
        let n = self.rotations.load(Ordering::SeqCst);
        let mut all = vec![API_KEY.to_string()];
        for i in 0..=n {
            let password = Self::password(i);
            // The Basic header carries the password base64-encoded.
            all.push(base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}")));
            all.push(password);
        }
        all
    }
}
