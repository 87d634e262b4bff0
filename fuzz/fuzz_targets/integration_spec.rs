//! Arbitrary JSON as an Integration spec: deserialisation, the controller's
//! flow resolution (`resolve::flow_of`), `renewBefore` and the output Secret
//! it would produce.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use integration_operator::{
    controller::{
        output::{self, Fingerprinter, MANAGED_BY, MANAGED_BY_LABEL, Schedule},
        resolve::flow_of,
        schedule::{RenewBefore, renew_at},
    },
    crd::{Integration, IntegrationSpec},
    providers::Credentials,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    lifetime_secs: u32,
    spec: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let Ok(spec) = serde_json::from_slice::<IntegrationSpec>(&input.spec) else {
        return;
    };
    let blocks = [
        spec.client_credentials.is_some(),
        spec.api_key.is_some(),
        spec.basic_auth.is_some(),
        spec.partner_integration.is_some(),
        spec.element_instance.is_some(),
        spec.connection.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    let mut integration = Integration::new("intg", spec);
    integration.metadata.namespace = Some("team-a".into());
    integration.metadata.uid = Some("0b9f6a4e-uid".into());
    match flow_of(&integration) {
        Ok(_) => assert_eq!(blocks, 1, "a flow was resolved from {blocks} flow blocks"),
        Err(e) => {
            assert_ne!(blocks, 1, "one flow block but: {e}");
            assert!(!e.to_string().chars().any(char::is_control));
        }
    }
    if let Some(rb) = integration
        .spec
        .refresh
        .as_ref()
        .and_then(|r| r.renew_before.as_deref())
        && let Ok(rb) = RenewBefore::parse(rb)
    {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        // Lifetimes the drivers can produce: 1 s to 366 days.
        let lifetime = Duration::from_secs(u64::from(input.lifetime_secs) % (366 * 24 * 3600) + 1);
        let expires = now + jiff::SignedDuration::try_from(lifetime).unwrap();
        let at = renew_at(now, expires, Some(rb), "uid");
        assert!(at >= now && at <= expires, "renew at {at} outside [{now}, {expires}]");
    }
    // The output Secret stays in the Integration's namespace and keeps the
    // operator's label whatever target.labels says.
    let secret = output::desired_secret(
        &integration,
        &Credentials::default(),
        &Default::default(),
        "fp",
        Schedule::default(),
        &Fingerprinter::new(b"key".to_vec()),
    );
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .map(String::as_str),
        Some(MANAGED_BY)
    );
    assert_eq!(secret.metadata.name, Some(output::target_name(&integration)));
});
