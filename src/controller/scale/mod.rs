//! The machinery that lets one operator serve many Integrations, apart from
//! the domain steps of a reconcile: the compact Integration cache
//! ([`cached`]), when each Integration is next looked at
//! ([`timetable`]), the compact cache of output Secrets ([`owned`]), input
//! Secret reads shared by reconciles asking at once ([`shared_reads`]), and
//! the Event publisher that keeps nothing per object ([`events`]), and the
//! backoff and Warning repetition after failures ([`backoff`]).

pub mod backoff;
pub mod cached;
pub mod events;
pub mod owned;
pub mod shared_reads;
pub mod timetable;
