//! The integration tests: one binary, shared helpers in `common`.
//!
//! Layout (the test pyramid's upper layers; unit tests sit next to the code
//! in `src/`, and `tests/e2e.rs` is the separate suite that runs against
//! whatever cluster `KUBECONFIG` names):
//!
//! - `conformance`: the scenarios every provider driver must pass, run once
//!   per driver and flow.
//! - `providers`: what is specific to one provider, end to end.
//! - `operator`: behaviour no provider owns (faults, hostile input, inbound
//!   endpoints, templates, replicas, RBAC, the chart).
//! - `commands`: `make demo`, `make bench`, the command-line companion.
//! - `artifacts`: generated files and README tables against the code.
//!
//! Everything that needs a cluster runs on the real kube-apiserver that
//! `scripts/control-plane.sh` builds and starts (`$CLUSTER_KUBECONFIG`);
//! each test gets its own namespace and its own operator process.

mod artifacts;
mod commands;
mod common;
mod conformance;
mod operator;
mod providers;
