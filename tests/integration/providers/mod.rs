//! One module per provider driver, each end to end: the real operator over
//! real HTTP against the real kube-apiserver and that provider's simulator
//! (and, where a third party publishes one, its oracle: oidc-provider,
//! Kombo's official SDK). What is specific to one provider lives here; what
//! every provider must do lives in `conformance`.

mod cloud_elements;
mod kombo;
mod kombo_sdk;
mod oauth2;
mod oidc_provider;
mod smartrecruiters;
mod talentlink;
