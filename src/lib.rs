//! integration-operator: manages third-party API integrations as Kubernetes
//! custom resources and keeps their credentials fresh in Secrets.
//!
//! - [`crd`]: the `Integration` and `ClusterProvider` resources.
//! - [`providers`]: one driver per provider protocol, free of Kubernetes types.
//! - [`controller`]: the reconcile loop that turns Integrations into Secrets.
//! - [`reasons`]: every condition and Event reason, checked against the README.
//! - [`telemetry`]: metrics, health endpoints, logging.
//! - [`cli`]: the command line.

pub mod cli;
pub mod controller;
pub mod crd;
pub mod providers;
pub mod reasons;
pub mod telemetry;
