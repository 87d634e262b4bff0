//! Building the Integration's status: `metav1.Condition`s with transition
//! times preserved when nothing changed, so an unchanged reconcile produces an
//! identical status and therefore no write.

use crate::reasons::Reason;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::{crd::IntegrationStatus, providers::sanitize_message};

/// Condition type: credentials are present and valid.
pub const READY: &str = "Ready";
/// Condition type: something needs attention although credentials may work.
pub const WARNING: &str = "Warning";
/// Condition type: a renewal is overdue and nothing says why (the watchdog).
/// Its only reason has the same name ([`Reason::RenewalOverdue`]).
pub const RENEWAL_OVERDUE: &str = "RenewalOverdue";

/// A condition as the reconcile wants it, before transition times. Its
/// message is sanitised (no control characters, bounded): whatever a driver
/// or a provider put into it, a condition cannot inject lines or escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn ready(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_: READY,
            status: true,
            reason: reason.into(),
            message: sanitize_message(&message.into()),
        }
    }

    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_: READY,
            status: false,
            reason: reason.into(),
            message: sanitize_message(&message.into()),
        }
    }

    /// `RenewalOverdue=True`, set by the stall watchdog.
    pub fn overdue(message: String) -> Self {
        Self {
            type_: RENEWAL_OVERDUE,
            status: true,
            reason: Reason::RenewalOverdue.into(),
            message: sanitize_message(&message),
        }
    }

    pub fn warning(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_: WARNING,
            status: true,
            reason: reason.into(),
            message: sanitize_message(&message.into()),
        }
    }
}

impl From<&Condition> for Wanted {
    /// An existing condition, kept as it is.
    fn from(c: &Condition) -> Self {
        Self {
            type_: match c.type_.as_str() {
                READY => READY,
                RENEWAL_OVERDUE => RENEWAL_OVERDUE,
                _ => WARNING,
            },
            status: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

/// Merges wanted conditions into the existing list. A condition keeps its
/// `lastTransitionTime` unless its status flips; condition types not wanted
/// any more are dropped.
pub fn merge_conditions(
    existing: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let previous = existing.iter().find(|c| c.type_ == w.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.clone(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The Ready condition of a status, if any.
pub fn ready_condition(status: Option<&IntegrationStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == READY)
}

/// RFC 3339 with second precision, the form used in status fields.
///
/// Truncated, never rounded up: a recorded expiry is never later than the
/// real one, and a recorded renewal time never later than the time the
/// next look was scheduled for (a look before the recorded time would find
/// nothing due and cost a second one).
pub fn rfc3339(t: Timestamp) -> String {
    let whole = jiff::TimestampRound::new()
        .smallest(jiff::Unit::Second)
        .mode(jiff::RoundMode::Trunc);
    t.round(whole).unwrap_or(t).to_string()
}

/// RFC 3339 with millisecond precision, the form of the renew-at
/// annotation: the next look is scheduled from it, and a time cut to the
/// second would make a one-second revalidation interval anything between
/// nothing and one second.
pub fn rfc3339_millis(t: Timestamp) -> String {
    let millis = jiff::TimestampRound::new()
        .smallest(jiff::Unit::Millisecond)
        .mode(jiff::RoundMode::Trunc);
    t.round(millis).unwrap_or(t).to_string()
}

/// Parses an RFC 3339 status field; a garbled value counts as absent.
pub fn parse_time(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = merge_conditions(
            &[],
            &[Wanted::ready(Reason::Issued, "ok")],
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        let second = merge_conditions(
            &first,
            &[Wanted::ready(Reason::Renewed, "ok again")],
            Some(1),
            t("2026-01-01T01:00:00Z"),
        );
        assert_eq!(second[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(second[0].reason, "Renewed");
        let third = merge_conditions(
            &second,
            &[Wanted::not_ready(Reason::ProviderUnavailable, "down")],
            Some(1),
            t("2026-01-01T02:00:00Z"),
        );
        assert_eq!(third[0].last_transition_time, Time(t("2026-01-01T02:00:00Z")));
        assert_eq!(third[0].status, "False");
    }

    #[test]
    fn identical_inputs_give_identical_conditions() {
        let wanted = [
            Wanted::ready(Reason::Issued, "ok"),
            Wanted::warning(Reason::ExpiryNotProvided, "w"),
        ];
        let a = merge_conditions(&[], &wanted, Some(3), t("2026-01-01T00:00:00Z"));
        let b = merge_conditions(&a, &wanted, Some(3), t("2026-01-01T05:00:00Z"));
        assert_eq!(a, b);
    }
}
