//! Provider simulators: HTTP servers on 127.0.0.1 that speak each provider's
//! protocol, with injectable failures and call counters.

pub mod calls;
pub mod cloud_elements;
pub mod faults;
pub mod kombo;
pub mod oauth2;
pub mod oidc;
mod served;
pub mod smartrecruiters;
pub mod talentlink;

pub use faults::{Fault, Faults};
pub use served::Served;
