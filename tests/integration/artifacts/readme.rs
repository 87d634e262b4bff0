//! README.md against the code: the "Conditions" table lists every reason
//! the operator can set (`crates/providers/src/reasons.rs`) and nothing else, with the health
//! the code assigns; the Argo CD health check maps exactly the code's
//! Progressing reasons to Progressing; the Events section names every
//! Event-only reason; every provider document, example and the threat
//! model are linked. The docs cannot drift from the code unnoticed.

use std::collections::{BTreeMap, BTreeSet};

use integration_operator::reasons::{self, Health, Kind, Reason};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The text of the README section under `heading` (up to the next heading
/// of the same or a higher level).
fn section(text: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut out = Vec::new();
    let mut inside = false;
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            let l = line.chars().take_while(|c| *c == '#').count();
            if inside && l <= level {
                break;
            }
            if line.trim() == heading {
                inside = true;
                continue;
            }
        }
        if inside {
            out.push(line);
        }
    }
    assert!(inside, "README has no section {heading:?}");
    out.join("\n")
}

/// Backticked PascalCase words (reasons) in `text`.
fn backticked_reasons(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.len() > 1
                && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && w.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .map(str::to_string)
        .collect()
}

struct Row {
    reason: String,
    condition: String,
    health: String,
    text: String,
}

/// The Conditions table: `| reason | condition | Argo CD | meaning |`.
fn condition_rows() -> Vec<Row> {
    let table = section(&readme(), "### Conditions");
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a Conditions row needs 4 cells: {l}");
            let named = backticked_reasons(cells[0]);
            assert_eq!(named.len(), 1, "one reason per row: {l}");
            Row {
                reason: named.into_iter().next().unwrap(),
                condition: cells[1].to_string(),
                health: cells[2].to_string(),
                text: cells[3].to_string(),
            }
        })
        .collect()
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Healthy => "Healthy",
        Health::Progressing => "Progressing",
        Health::Degraded => "Degraded",
    }
}

#[test]
fn the_conditions_table_lists_every_reason_the_code_sets_and_no_other() {
    let rows = condition_rows();
    let by_reason: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.reason.as_str(), r)).collect();
    assert_eq!(by_reason.len(), rows.len(), "a reason has two rows");

    for (reason, health) in Reason::all().filter_map(|r| match r.kind() {
        Kind::Ready(h) => Some((r.as_str(), h)),
        _ => None,
    }) {
        let row = by_reason
            .get(reason)
            .unwrap_or_else(|| panic!("README's Conditions table has no row for Ready reason {reason}"));
        let status = if health == Health::Healthy { "True" } else { "False" };
        assert_eq!(row.condition, format!("Ready={status}"), "{reason}");
        assert_eq!(row.health, health_name(health), "{reason}: Argo CD column");
        assert!(row.text.contains(" — "), "{reason}: say what it means and what to do");
    }
    for reason in Reason::of_kind(|k| k == Kind::Warning).map(Reason::as_str) {
        let row = by_reason
            .get(reason)
            .unwrap_or_else(|| panic!("no row for Warning reason {reason}"));
        assert_eq!(row.condition, "Warning=True", "{reason}");
    }
    for reason in Reason::of_kind(|k| k == Kind::Overdue).map(Reason::as_str) {
        let row = by_reason
            .get(reason)
            .unwrap_or_else(|| panic!("no row for RenewalOverdue reason {reason}"));
        assert_eq!(row.condition, "RenewalOverdue=True", "{reason}");
    }
    let expected: BTreeSet<&str> = Reason::of_kind(|k| matches!(k, Kind::Ready(_) | Kind::Warning | Kind::Overdue))
        .map(Reason::as_str)
        .collect();
    let stale: Vec<&&str> = by_reason.keys().filter(|r| !expected.contains(**r)).collect();
    assert!(stale.is_empty(), "README lists reasons the code never sets: {stale:?}");

    // Reasons shown only inside another reason's message are explained there.
    let all_text: String = rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n");
    for reason in Reason::of_kind(|k| k == Kind::CleanupDetail).map(Reason::as_str) {
        assert!(
            backticked_reasons(&all_text).contains(reason),
            "the Conditions table does not explain {reason}"
        );
    }
}

#[test]
fn the_argo_cd_health_check_reads_every_reason_as_the_code_says() {
    let gitops = section(&readme(), "### GitOps");
    let lua = gitops
        .split("```lua\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a lua block under GitOps");
    let table = lua
        .split("local progressing = {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("a `local progressing = {...}` table");
    let in_lua: BTreeSet<&str> = table
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_suffix("= true")
                .map(str::trim)
                .unwrap_or_else(|| panic!("unexpected entry in the Lua table: {e:?}"))
        })
        .collect();
    let in_code: BTreeSet<&str> = Reason::of_kind(|k| k == Kind::Ready(Health::Progressing))
        .map(Reason::as_str)
        .collect();
    assert_eq!(
        in_lua, in_code,
        "the Lua's Progressing reasons differ from crates/providers/src/reasons.rs"
    );
    // Ready=True is Healthy and every other Ready=False reason Degraded,
    // as reasons::health says.
    assert!(
        lua.contains(r#"if c.status == "True" then hs.status = "Healthy""#),
        "{lua}"
    );
    assert!(
        lua.contains(r#"elseif c.status == "Unknown" or progressing[c.reason] then hs.status = "Progressing""#),
        "{lua}"
    );
    assert!(lua.contains(r#"else hs.status = "Degraded" end"#), "{lua}");
    assert_eq!(reasons::health("False", "NotARealReason"), Health::Degraded);
}

#[test]
fn the_events_section_names_every_event_reason() {
    let events = backticked_reasons(&section(&readme(), "### Events"));
    for reason in Reason::of_kind(|k| matches!(k, Kind::EventOnly | Kind::Ready(Health::Healthy))).map(Reason::as_str) {
        assert!(
            events.contains(reason),
            "README's Events section does not name {reason}"
        );
    }
}

/// Every provider document, every example and the threat model are linked
/// from the README (Providers and Security sections).
#[test]
fn every_provider_doc_example_and_the_threat_model_are_linked() {
    let text = readme();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut wanted = vec!["docs/threat-model.md".to_string()];
    for (dir, ext) in [("docs/providers", "md"), ("examples", "yaml")] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == ext) {
                wanted.push(format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    assert!(wanted.len() > 8, "{wanted:?}");
    for file in wanted {
        assert!(text.contains(&format!("]({file})")), "README does not link {file}");
    }
    let security = section(&text, "## Security");
    assert!(security.contains("](docs/threat-model.md)"));
}

/// The "Command-line companion" section has a row for every subcommand the
/// plugin offers and the symlink that installs it.
#[test]
fn the_companion_section_documents_every_subcommand_and_the_plugin_symlink() {
    use clap::CommandFactory;
    let text = section(&readme(), "## Command-line companion");
    let plugin = integration_operator::companion::PluginCli::command();
    let subcommands: Vec<&str> = plugin.get_subcommands().map(|s| s.get_name()).collect();
    assert!(subcommands.len() >= 4, "{subcommands:?}");
    for name in subcommands {
        assert!(
            text.contains(&format!("\n| `{name}")),
            "README's companion table has no row for `{name}`"
        );
    }
    assert!(
        text.contains(r#"ln -s "$(command -v integration-operator)" ~/.local/bin/kubectl-integration"#),
        "README does not show the kubectl plugin symlink"
    );
}
