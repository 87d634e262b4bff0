//! The deciding step of a reconcile, as a pure function: given what is known
//! about an Integration and its output Secret, is a provider call needed?
//!
//! Every input comes from the cluster (status, Secret annotations) so that a
//! restarted operator decides exactly as the one before it did.

use jiff::Timestamp;

/// What the reconcile knows when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Keyed fingerprint of the ClusterProvider, the Integration's spec and
    /// the input values, as computed now.
    pub input_fingerprint: String,
    /// The output Secret as found.
    pub secret: SecretState,
    /// Whether credentials were ever issued (status says so): a missing
    /// Secret is then a repair rather than a first issue.
    pub issued_before: bool,
    /// A renew-now request or a rejection report not yet answered, if any.
    pub renew_request: Option<RenewRequest>,
    /// Keyed fingerprint of the Secret type and templates the spec asks
    /// for (`None`: an `Opaque` Secret without templates).
    pub template_fingerprint: Option<String>,
}

/// An unanswered renew-now request or rejection report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewRequest {
    /// The earliest time it may be acted on: requests are capped per
    /// Integration (see [`RENEW_NOW_MIN_INTERVAL`]) so that an annotation
    /// set in a loop cannot turn into a loop of provider calls.
    pub not_before: Option<Timestamp>,
    /// A consumer reported the credentials rejected (the
    /// credentials-rejected annotation), rather than a person asking.
    pub reported: bool,
}

/// Shortest time between an exchange and one a renew-now request causes.
pub const RENEW_NOW_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Default shortest time between an exchange and one a rejection report
/// causes (`--rejection-report-interval`): longer than a person's
/// renew-now, because an application that reports every 401 it gets would
/// otherwise hold its provider at one exchange every few seconds.
pub const REJECTION_REPORT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The rejection report an Integration carries: the credentials-rejected
/// annotation's value differs from the last one answered, capped to
/// `min_interval` after the last exchange.
pub fn rejection_report(
    reported: Option<&str>,
    answered: Option<&str>,
    last_exchange: Option<Timestamp>,
    min_interval: std::time::Duration,
) -> Option<RenewRequest> {
    let reported = reported?;
    if answered == Some(reported) {
        return None;
    }
    let min = jiff::SignedDuration::try_from(min_interval).unwrap_or_default();
    Some(RenewRequest {
        not_before: last_exchange.map(|t| t + min),
        reported: true,
    })
}

/// The renew-now request an Integration carries: its annotation's value
/// differs from the last one answered (`answered`, from status), capped to
/// [`RENEW_NOW_MIN_INTERVAL`] after the last exchange.
pub fn renew_request(
    asked: Option<&str>,
    answered: Option<&str>,
    last_exchange: Option<Timestamp>,
) -> Option<RenewRequest> {
    let asked = asked?;
    if answered == Some(asked) {
        return None;
    }
    let min = jiff::SignedDuration::try_from(RENEW_NOW_MIN_INTERVAL).unwrap_or_default();
    Some(RenewRequest {
        not_before: last_exchange.map(|t| t + min),
        reported: false,
    })
}

/// The output Secret as the reconcile found it.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretState {
    /// There is no output Secret.
    Missing,
    /// It exists but its data no longer matches what the operator wrote
    /// (edited by someone else).
    Tampered,
    /// It is as the operator wrote it, from inputs with this fingerprint,
    /// with the renewal time and expiry it was written with (its
    /// annotations: written together with the credentials, so never stale
    /// relative to them, unlike a status that may lag in a cache).
    Intact {
        input_fingerprint: String,
        renew_at: Option<Timestamp>,
        expires_at: Option<Timestamp>,
        /// The type and templates it was written with.
        template_fingerprint: Option<String>,
    },
}

/// Why credentials must be (re)issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeReason {
    /// No credentials yet.
    Initial,
    /// The Integration's spec, the input Secret or the ClusterProvider changed.
    InputChanged,
    /// The output Secret was deleted or edited by someone else.
    Repair,
    /// The renewal time has come.
    Renewal,
    /// A person or a consuming application asked, with the renew-now
    /// annotation.
    Requested,
    /// A consuming application reported the credentials rejected, with the
    /// credentials-rejected annotation.
    Reported,
}

impl ExchangeReason {
    /// Bounded label for metrics and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeReason::Initial => "initial",
            ExchangeReason::InputChanged => "input_changed",
            ExchangeReason::Repair => "repair",
            ExchangeReason::Renewal => "renewal",
            ExchangeReason::Requested => "requested",
            ExchangeReason::Reported => "reported",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Credentials are valid and current: no provider call, no write; look
    /// again at `recheck_at` (the renewal time), if any.
    UpToDate { recheck_at: Option<Timestamp> },
    /// Call the provider.
    Exchange(ExchangeReason),
    /// The credentials are valid and current, but the spec asks for another
    /// Secret type or other templates: write the Secret again from the
    /// credentials it holds, without calling the provider; then as
    /// `UpToDate`.
    Rerender { recheck_at: Option<Timestamp> },
}

/// Decides whether the provider must be called.
pub fn decide(facts: &Facts, now: Timestamp) -> Decision {
    let (fingerprint_written, renew_at, expires_at, template_written) = match &facts.secret {
        SecretState::Missing => {
            let reason = if facts.issued_before {
                ExchangeReason::Repair
            } else {
                ExchangeReason::Initial
            };
            return Decision::Exchange(reason);
        }
        SecretState::Tampered => return Decision::Exchange(ExchangeReason::Repair),
        SecretState::Intact {
            input_fingerprint,
            renew_at,
            expires_at,
            template_fingerprint,
        } => (input_fingerprint, *renew_at, *expires_at, template_fingerprint),
    };
    if *fingerprint_written != facts.input_fingerprint {
        return Decision::Exchange(ExchangeReason::InputChanged);
    }
    // A renew-now request inside the cap is looked at again when it ends.
    let mut capped_until = None;
    if let Some(request) = facts.renew_request {
        match request.not_before {
            Some(t) if t > now => capped_until = Some(t),
            _ if request.reported => return Decision::Exchange(ExchangeReason::Reported),
            _ => return Decision::Exchange(ExchangeReason::Requested),
        }
    }
    let recheck = |renew_at: Option<Timestamp>| match (renew_at, capped_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match (renew_at, expires_at) {
        (Some(renew_at), _) if renew_at <= now => Decision::Exchange(ExchangeReason::Renewal),
        (_, Some(expires_at)) if expires_at <= now => Decision::Exchange(ExchangeReason::Renewal),
        // No renewal time recorded (an older or hand-made Secret): renew
        // rather than trust credentials of unknown age.
        (None, _) => Decision::Exchange(ExchangeReason::Renewal),
        // A renewal due now renders the new templates with the new
        // credentials anyway; otherwise only the presentation changed.
        (renew_at, _) if *template_written != facts.template_fingerprint => Decision::Rerender {
            recheck_at: recheck(renew_at),
        },
        (renew_at, _) => Decision::UpToDate {
            recheck_at: recheck(renew_at),
        },
    }
}

/// Whether an exchange must not be tried: the provider refused exactly these
/// inputs (with the retry annotation as it is now) before. `recorded` is
/// the refusal in status, `current` the fingerprint of what would be sent.
pub fn held(recorded: Option<&str>, current: &str) -> bool {
    recorded == Some(current)
}

/// What an Integration's status says about its credentials, read before
/// anything else (no API read, no provider call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The spec is the one the status describes (generation == observedGeneration).
    pub spec_observed: bool,
    /// The Ready condition is True.
    pub ready: bool,
    pub renew_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
}

/// Whether the only work due is a routine renewal that may wait: the spec
/// is unchanged, the credentials are Ready, and the renewal is in the first
/// half of its window. Past the half-way point it is urgent, so a busy
/// provider can delay a renewal but never let the credentials expire.
pub fn routine_renewal(recorded: &Recorded, now: Timestamp) -> bool {
    routine_until(recorded, now).is_some()
}

/// When the renewal due now stops being routine (half-way through its
/// window), if it is routine now (see [`routine_renewal`]).
pub fn routine_until(recorded: &Recorded, now: Timestamp) -> Option<Timestamp> {
    let (Some(renew_at), Some(expires_at)) = (recorded.renew_at, recorded.expires_at) else {
        return None;
    };
    if !recorded.spec_observed || !recorded.ready || now < renew_at || now >= expires_at {
        return None;
    }
    let half_window = expires_at.duration_since(renew_at) / 2;
    let until = renew_at + half_window;
    (now < until).then_some(until)
}

/// Whether an exchange yields to others at the provider's limiter, paced
/// like a refresh wave: a routine renewal, or a re-issue after an edit of the
/// input Secret or the ClusterProvider (the spec unchanged) while the
/// current credentials are Ready and unexpired. An admin's edit of a
/// ClusterProvider that 10,000 Integrations use must not starve first
/// issues and failing Integrations of the provider's slots.
pub fn yields(reason: ExchangeReason, routine: bool, recorded: &Recorded, now: Timestamp) -> bool {
    match reason {
        ExchangeReason::Renewal => routine,
        ExchangeReason::InputChanged => {
            recorded.spec_observed && recorded.ready && recorded.expires_at.is_none_or(|at| at > now)
        }
        ExchangeReason::Initial | ExchangeReason::Repair | ExchangeReason::Requested | ExchangeReason::Reported => {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn current() -> Facts {
        Facts {
            input_fingerprint: "fp1".into(),
            secret: SecretState::Intact {
                input_fingerprint: "fp1".into(),
                renew_at: Some(t("2026-01-01T00:50:00Z")),
                expires_at: Some(t("2026-01-01T01:00:00Z")),
                template_fingerprint: None,
            },
            issued_before: true,
            renew_request: None,
            template_fingerprint: None,
        }
    }

    fn recorded() -> Recorded {
        Recorded {
            spec_observed: true,
            ready: true,
            renew_at: Some(t("2026-01-01T00:50:00Z")),
            expires_at: Some(t("2026-01-01T01:00:00Z")),
        }
    }

    #[test]
    fn a_renewal_is_routine_only_in_the_first_half_of_its_window() {
        let r = recorded();
        assert!(!routine_renewal(&r, t("2026-01-01T00:49:59Z")), "not yet due");
        assert!(routine_renewal(&r, t("2026-01-01T00:50:00Z")));
        assert!(routine_renewal(&r, t("2026-01-01T00:54:59Z")));
        assert_eq!(
            routine_until(&r, t("2026-01-01T00:50:00Z")),
            Some(t("2026-01-01T00:55:00Z"))
        );
        assert!(
            !routine_renewal(&r, t("2026-01-01T00:55:00Z")),
            "half the window gone: urgent"
        );
        assert!(!routine_renewal(&r, t("2026-01-01T01:00:00Z")), "expired: urgent");
    }

    #[test]
    fn re_issues_after_an_edit_yield_while_the_credentials_are_good() {
        let now = t("2026-01-01T00:30:00Z");
        let r = recorded();
        assert!(yields(ExchangeReason::InputChanged, false, &r, now));
        assert!(!yields(ExchangeReason::Initial, true, &r, now));
        assert!(!yields(ExchangeReason::Repair, true, &r, now));
        assert!(yields(ExchangeReason::Renewal, true, &r, now));
        assert!(!yields(ExchangeReason::Renewal, false, &r, now));
        let edited_spec = Recorded {
            spec_observed: false,
            ..recorded()
        };
        assert!(
            !yields(ExchangeReason::InputChanged, false, &edited_spec, now),
            "a spec edit is urgent"
        );
        let failing = Recorded {
            ready: false,
            ..recorded()
        };
        assert!(!yields(ExchangeReason::InputChanged, false, &failing, now));
        assert!(
            !yields(ExchangeReason::InputChanged, false, &r, t("2026-01-01T01:00:00Z")),
            "expired: urgent"
        );
    }

    #[test]
    fn refused_inputs_are_held_until_they_or_the_retry_annotation_change() {
        assert!(held(Some("abc"), "abc"));
        assert!(!held(Some("abc"), "abd"));
        assert!(!held(None, "abc"));
    }

    #[test]
    fn changed_or_failing_integrations_are_never_routine() {
        let now = t("2026-01-01T00:51:00Z");
        let changed = Recorded {
            spec_observed: false,
            ..recorded()
        };
        let failing = Recorded {
            ready: false,
            ..recorded()
        };
        let unknown = Recorded {
            expires_at: None,
            ..recorded()
        };
        assert!(!routine_renewal(&changed, now));
        assert!(!routine_renewal(&failing, now));
        assert!(!routine_renewal(&unknown, now));
    }

    #[test]
    fn valid_credentials_need_no_call_and_are_rechecked_at_renewal() {
        assert_eq!(
            decide(&current(), t("2026-01-01T00:10:00Z")),
            Decision::UpToDate {
                recheck_at: Some(t("2026-01-01T00:50:00Z"))
            }
        );
    }

    #[test]
    fn renewal_time_reached_means_exchange() {
        assert_eq!(
            decide(&current(), t("2026-01-01T00:50:00Z")),
            Decision::Exchange(ExchangeReason::Renewal)
        );
    }

    #[test]
    fn changed_inputs_or_a_damaged_secret_mean_exchange() {
        let now = t("2026-01-01T00:10:00Z");
        let mut f = current();
        f.input_fingerprint = "fp2".into();
        assert_eq!(decide(&f, now), Decision::Exchange(ExchangeReason::InputChanged));

        let mut f = current();
        f.secret = SecretState::Tampered;
        assert_eq!(decide(&f, now), Decision::Exchange(ExchangeReason::Repair));

        let mut f = current();
        f.secret = SecretState::Missing;
        assert_eq!(decide(&f, now), Decision::Exchange(ExchangeReason::Repair));

        // Past expiry even if the renewal time was missed.
        let mut f = current();
        f.secret = SecretState::Intact {
            input_fingerprint: "fp1".into(),
            renew_at: Some(t("2026-01-01T02:00:00Z")),
            expires_at: Some(t("2026-01-01T00:05:00Z")),
            template_fingerprint: None,
        };
        assert_eq!(decide(&f, now), Decision::Exchange(ExchangeReason::Renewal));
    }

    #[test]
    fn a_new_integration_is_an_initial_exchange() {
        let f = Facts {
            input_fingerprint: "fp".into(),
            secret: SecretState::Missing,
            issued_before: false,
            renew_request: None,
            template_fingerprint: None,
        };
        assert_eq!(
            decide(&f, t("2026-01-01T00:00:00Z")),
            Decision::Exchange(ExchangeReason::Initial)
        );
    }

    #[test]
    fn an_intact_secret_with_unknown_expiry_is_renewed() {
        let f = Facts {
            secret: SecretState::Intact {
                input_fingerprint: "fp1".into(),
                renew_at: None,
                expires_at: None,
                template_fingerprint: None,
            },
            ..current()
        };
        // An intact Secret with no recorded renewal time: renew, never trust an unknown age.
        assert_eq!(
            decide(&f, t("2026-01-01T00:10:00Z")),
            Decision::Exchange(ExchangeReason::Renewal)
        );
    }

    #[test]
    fn a_renew_now_request_exchanges_at_once_and_only_until_it_is_answered() {
        let now = t("2026-01-01T00:10:00Z");
        let issued = Some(t("2026-01-01T00:00:00Z"));
        // Asked, never answered: exchange now, although nothing is due.
        let asked = renew_request(Some("2026-01-01T00:09:59Z"), None, issued);
        assert!(asked.is_some());
        let f = Facts {
            renew_request: asked,
            ..current()
        };
        assert_eq!(decide(&f, now), Decision::Exchange(ExchangeReason::Requested));
        // Answered (status records the value): nothing more.
        assert_eq!(
            renew_request(Some("2026-01-01T00:09:59Z"), Some("2026-01-01T00:09:59Z"), issued),
            None
        );
        assert_eq!(renew_request(None, Some("x"), issued), None);
        // A new value is a new request.
        assert!(renew_request(Some("b"), Some("a"), issued).is_some());
    }

    #[test]
    fn a_renew_now_request_right_after_an_exchange_waits_for_the_cap() {
        let issued = t("2026-01-01T00:10:00Z");
        let now = t("2026-01-01T00:10:03Z");
        let f = Facts {
            renew_request: renew_request(Some("again"), Some("before"), Some(issued)),
            ..current()
        };
        let cap_end = t("2026-01-01T00:10:10Z");
        // Not yet: look again when the cap ends (before the renewal time).
        assert_eq!(
            decide(&f, now),
            Decision::UpToDate {
                recheck_at: Some(cap_end)
            }
        );
        assert_eq!(decide(&f, cap_end), Decision::Exchange(ExchangeReason::Requested));
        // Missing or changed inputs still come first.
        let missing = Facts {
            secret: SecretState::Missing,
            ..f.clone()
        };
        assert_eq!(decide(&missing, now), Decision::Exchange(ExchangeReason::Repair));
    }

    #[test]
    fn a_rejection_report_is_answered_once_and_capped_at_thirty_seconds() {
        let issued = t("2026-01-01T00:10:00Z");
        let cap = REJECTION_REPORT_MIN_INTERVAL;
        let report = rejection_report(Some("401 at 00:10:05"), None, Some(issued), cap);
        let f = Facts {
            renew_request: report,
            ..current()
        };
        // Inside the cap: look again when it ends.
        assert_eq!(
            decide(&f, t("2026-01-01T00:10:20Z")),
            Decision::UpToDate {
                recheck_at: Some(t("2026-01-01T00:10:30Z"))
            }
        );
        assert_eq!(
            decide(&f, t("2026-01-01T00:10:30Z")),
            Decision::Exchange(ExchangeReason::Reported)
        );
        // Answered: nothing more; a new value is a new report.
        assert_eq!(rejection_report(Some("a"), Some("a"), Some(issued), cap), None);
        assert!(rejection_report(Some("b"), Some("a"), Some(issued), cap).is_some_and(|r| r.reported));
        assert_eq!(rejection_report(None, None, Some(issued), cap), None);
    }

    #[test]
    fn changed_templates_alone_rerender_without_a_provider_call() {
        let now = t("2026-01-01T00:10:00Z");
        let changed = Facts {
            template_fingerprint: Some("tpl2".into()),
            ..current()
        };
        assert_eq!(
            decide(&changed, now),
            Decision::Rerender {
                recheck_at: Some(t("2026-01-01T00:50:00Z"))
            }
        );
        // Templates removed again: back to a plain Secret, still no call.
        let mut removed = current();
        removed.secret = SecretState::Intact {
            input_fingerprint: "fp1".into(),
            renew_at: Some(t("2026-01-01T00:50:00Z")),
            expires_at: Some(t("2026-01-01T01:00:00Z")),
            template_fingerprint: Some("tpl1".into()),
        };
        assert!(matches!(decide(&removed, now), Decision::Rerender { .. }));
        // Due anyway, or with changed inputs: the exchange renders them.
        assert_eq!(
            decide(&changed, t("2026-01-01T00:50:00Z")),
            Decision::Exchange(ExchangeReason::Renewal)
        );
        let inputs_too = Facts {
            input_fingerprint: "fp2".into(),
            ..changed.clone()
        };
        assert_eq!(
            decide(&inputs_too, now),
            Decision::Exchange(ExchangeReason::InputChanged)
        );
        // Unchanged: nothing to do.
        let same = Facts {
            template_fingerprint: Some("tpl1".into()),
            ..removed.clone()
        };
        assert!(matches!(decide(&same, now), Decision::UpToDate { .. }));
    }
}
