//! How the companion shows things to a person: relative times, aligned
//! tables, text made safe for a terminal. Pure, so it is tested as it is.

use jiff::Timestamp;

use crate::providers::is_unsafe_char;

/// A span as kubectl's AGE column shows it: `45s`, `12m`, `5h`, `3d`.
pub fn span(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `in 12m` or `3m ago` (`0s ago` for now).
pub fn relative(now: Timestamp, at: Timestamp) -> String {
    let d = at.as_second() - now.as_second();
    if d > 0 {
        format!("in {}", span(d))
    } else {
        format!("{} ago", span(d))
    }
}

/// How long ago something happened: `3m ago`. A time slightly ahead of
/// this machine's clock (the cluster's clock differs a little, or the
/// Event was written in the second that is just starting) reads `0s ago`.
pub fn ago(now: Timestamp, at: Timestamp) -> String {
    relative(now, at.min(now))
}

/// An expiry as the status table shows it: `in 12m`, `expired 3m ago`, or
/// `-` when there is none (or it cannot be read).
pub fn expiry(now: Timestamp, at: Option<&str>) -> String {
    match at.and_then(|s| s.parse::<Timestamp>().ok()) {
        Some(at) if at > now => relative(now, at),
        Some(at) => format!("expired {}", relative(now, at)),
        None => "-".to_string(),
    }
}

/// An RFC 3339 time with how far it is from now: `2026-12-02T10:00:00Z (in 12m)`.
pub fn time_and_relative(now: Timestamp, value: &str) -> String {
    match value.parse::<Timestamp>() {
        Ok(at) => format!("{value} ({})", relative(now, at)),
        Err(_) => value.to_string(),
    }
}

/// Text from the cluster on one terminal line: control characters (escape
/// sequences, line breaks) blanked, so an Event note cannot rewrite the
/// screen or fake output lines.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if is_unsafe_char(c) { ' ' } else { c }).collect()
}

/// At most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Columns aligned with three spaces between them, as kubectl prints; the
/// last column is not padded (no trailing blanks).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn spans_read_like_kubectl_ages() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(119), "119s");
        assert_eq!(span(12 * 60 + 30), "12m");
        assert_eq!(span(-(3 * 3600)), "3h");
        assert_eq!(span(5 * 86_400), "5d");
    }

    #[test]
    fn expiries_say_which_way() {
        let now = t("2026-12-02T10:00:00Z");
        assert_eq!(expiry(now, Some("2026-12-02T10:12:00Z")), "in 12m");
        assert_eq!(expiry(now, Some("2026-12-02T09:57:00Z")), "expired 3m ago");
        assert_eq!(expiry(now, None), "-");
        assert_eq!(expiry(now, Some("garbled")), "-");
        assert_eq!(ago(now, t("2026-12-02T10:00:00.5Z")), "0s ago");
        assert_eq!(ago(now, t("2026-12-02T09:59:00Z")), "60s ago");
        assert_eq!(
            time_and_relative(now, "2026-12-02T09:58:00Z"),
            "2026-12-02T09:58:00Z (2m ago)"
        );
    }

    #[test]
    fn tables_align_and_do_not_trail_blanks() {
        let out = table(
            &["NAME", "READY", "MESSAGE"],
            &[
                vec!["a".into(), "True".into(), String::new()],
                vec!["longer".into(), "False".into(), "why".into()],
            ],
        );
        assert_eq!(out, "NAME     READY   MESSAGE\na        True\nlonger   False   why\n");
    }

    #[test]
    fn terminal_text_is_one_safe_line() {
        assert_eq!(one_line("a\nb\x1b[2Jc"), "a b [2Jc");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
