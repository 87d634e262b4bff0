//! Behaviour of the operator that no single provider owns, end to end on
//! the real kube-apiserver: faults in the API server and the providers,
//! hostile input, the inbound server, output templates, running as
//! replicas, the chart's RBAC judged by the real authorizer, and the Helm
//! chart itself.

mod faults;
mod helm;
mod hostile_input;
mod inbound;
mod operations;
mod rbac;
mod templates;
