//! The machinery that lets one operator serve many Integrations, apart from
//! the domain steps of a reconcile: the Integration cache ([`cache`]) of
//! compact entries ([`cached`]) under shared keys ([`key`]), the loop that
//! runs reconciles from it ([`runner`]), when each Integration is next looked at
//! ([`timetable`]) and how fast routine renewals start ([`pace`]), the compact cache of output Secrets ([`owned`]), input
//! Secret reads shared by reconciles asking at once ([`shared_reads`]), and
//! the Event publisher that keeps nothing per object ([`events`]), the
//! backoff and Warning repetition after failures ([`backoff`]), and Secret
//! versions kept by name in a few bytes each ([`versions`]).

pub mod backoff;
pub mod cache;
pub mod cached;
pub mod events;
pub mod key;
pub mod owned;
pub mod pace;
pub mod runner;
pub mod shared_reads;
pub mod timetable;
pub mod versions;
