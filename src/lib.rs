//! integration-operator: manages third-party API integrations as Kubernetes
//! custom resources and keeps their credentials fresh in Secrets.
//!
//! - [`crd`]: the `Integration` and `ClusterProvider` resources.
//! - [`providers`]: one driver per provider protocol — the
//!   `integration-providers` crate (`crates/providers`), which cannot use
//!   Kubernetes types: it does not depend on kube.
//! - [`controller`]: the reconcile loop that turns Integrations into Secrets.
//! - [`reasons`]: every condition and Event reason (in `integration-providers`), checked against the README.
//! - [`telemetry`]: metrics, health endpoints, logging.
//! - [`inbound`]: the inbound server (provider webhooks).
//! - [`api_client`]: the Kubernetes API client.
//! - [`cli`]: the command line.
//! - [`companion`]: the command-line companion (`status`, `renew`,
//!   `explain`, `check`), also the kubectl plugin `kubectl integration`.

pub mod api_client;
pub mod cli;
pub mod companion;
pub mod controller;
pub mod crd;
pub mod heap_profile;
pub mod inbound;
pub use integration_providers as providers;
pub use integration_providers::reasons;
pub mod telemetry;
