//! Provider simulators: HTTP servers on 127.0.0.1 that speak each provider's
//! protocol, with injectable failures and call counters.

pub mod faults;
pub mod oauth2;
pub mod oidc;

pub use faults::{Fault, Faults};
