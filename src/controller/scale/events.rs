//! Publishing Kubernetes Events (events.k8s.io/v1) about Integrations.
//!
//! kube-runtime's `Recorder` keeps every Event it published in the last few
//! minutes to aggregate repeats into series, and scans that cache on every
//! publish: with 10,000 Integrations issuing at once that is tens of MiB
//! and quadratic work. This operator's Events are either one-off (issued,
//! renewed, recovered) or already deduplicated before they get here
//! (`Warnings`), so each is simply created, and nothing is kept.

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Creates Events on behalf of this controller instance.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
}

impl EventPublisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
        }
    }

    /// The Event for `regarding`, as it will be created.
    pub fn event(&self, regarding: &ObjectReference, type_: EventType, reason: &str, note: &str) -> Event {
        let now = jiff::Timestamp::now();
        Event {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Unique per publish, like kubectl's and client-go's names.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Reconcile".into()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    /// Creates the Event in the namespace of what it is about.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let event = self.event(regarding, type_, reason, note);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_name_the_object_reason_and_reporter() {
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let publisher = EventPublisher::new(client, "integration-operator", "pod-a");
        let regarding = ObjectReference {
            kind: Some("Integration".into()),
            name: Some("api".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        let e = publisher.event(&regarding, EventType::Warning, "ReauthRequired", "refused");
        assert_eq!(e.metadata.namespace.as_deref(), Some("team-a"));
        assert!(e.metadata.name.unwrap().starts_with("api."));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("ReauthRequired"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-a"));
        assert_eq!(e.regarding.unwrap().name.as_deref(), Some("api"));
    }
}
