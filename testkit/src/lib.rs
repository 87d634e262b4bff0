//! Test and demo infrastructure for integration-operator.
//!
//! - [`emulator`]: an in-process Kubernetes API emulator served over real HTTP on
//!   127.0.0.1, which the operator, kube-rs clients and the real `kubectl` talk to
//!   exactly as they would talk to a cluster. It is not Kubernetes: it implements
//!   the parts of the API the operator and kubectl depend on.
//! - [`sim`]: provider simulators that speak each provider's wire protocol,
//!   including its failure modes.
//! - [`demo`]: `make demo`, the operator's main job end to end.
//! - [`bench`]: `make bench`, the scale and speed figures.
//! - [`emulator_bench`]: the emulator's own throughput (`make bench-emulator`).
//!
//! Nothing here is linked into the shipped operator binary.

pub mod bench;
pub mod demo;
pub mod emulator;
pub mod emulator_bench;
pub mod sim;
