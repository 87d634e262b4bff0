//! What a condition reason means and what to do about it, read from the
//! README's "Conditions" table.
//!
//! That table is the one place these explanations are written:
//! `tests/integration/artifacts/readme.rs` checks that it has a row for every reason in
//! `crates/providers/src/reasons.rs`, each saying "meaning — what to do". Compiling the
//! README in keeps the companion's hints and the documentation the same
//! text instead of two copies that drift apart.

/// The README, as built into the binary.
const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// What a reason means and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub meaning: String,
    pub what_to_do: String,
}

/// The README's explanation of `reason`, if it has one.
pub fn hint(reason: &str) -> Option<Hint> {
    hint_in(README, reason)
}

/// The row of `reason` in the Conditions table of `readme`:
/// `` | `Reason` | Ready=False | Degraded | meaning — what to do | ``.
fn hint_in(readme: &str, reason: &str) -> Option<Hint> {
    let start = format!("| `{reason}` |");
    // Only that section: other tables may start a row with a code span too.
    let row = readme
        .lines()
        .skip_while(|l| l.trim() != "### Conditions")
        .skip(1)
        .take_while(|l| !l.starts_with("#"))
        .find(|l| l.starts_with(&start))?;
    let cells: Vec<&str> = row.trim().trim_matches('|').split(" | ").collect();
    let text = cells.get(3)?.trim();
    let (meaning, what_to_do) = text.split_once(" — ")?;
    // Markdown code spans read fine without their backticks on a terminal.
    let plain = |s: &str| s.replace('`', "").trim().to_string();
    Some(Hint {
        meaning: plain(meaning),
        what_to_do: plain(what_to_do),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasons::{Kind, Reason};

    #[test]
    fn every_ready_and_warning_reason_has_a_hint() {
        for reason in Reason::of_kind(|k| matches!(k, Kind::Ready(_) | Kind::Warning)).map(Reason::as_str) {
            let h = hint(reason).unwrap_or_else(|| panic!("no hint for {reason}"));
            assert!(!h.meaning.is_empty() && !h.what_to_do.is_empty(), "{reason}: {h:?}");
            assert!(!h.what_to_do.contains('`'), "{reason}: {h:?}");
        }
        assert_eq!(hint("NoSuchReason"), None);
    }

    #[test]
    fn a_row_splits_into_meaning_and_what_to_do() {
        let readme = "### Conditions\n\n| `SecretNotFound` | Ready=False | Degraded | the input Secret `spec.secretRef.name` does not exist — create it (picked up at once) |\n";
        assert_eq!(
            hint_in(readme, "SecretNotFound"),
            Some(Hint {
                meaning: "the input Secret spec.secretRef.name does not exist".into(),
                what_to_do: "create it (picked up at once)".into(),
            })
        );
        // Outside the Conditions section, a row is not a reason's.
        assert_eq!(
            hint_in(&readme.replace("### Conditions", "### Other"), "SecretNotFound"),
            None
        );
    }
}
