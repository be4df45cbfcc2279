//! Presentation shared by the network subcommands: aligned tables, UTC
//! timestamps, progress bars on a terminal and shell-quoted commands.

use std::fmt::Write as _;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A plain text table: a header row and left-aligned columns separated by
/// two spaces.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub(crate) fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                let _ = write!(line, "{cell:<width$}", width = widths[column]);
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A protobuf timestamp's seconds as RFC 3339 UTC, or "-" when unset.
/// (Callers pass `timestamp.seconds`: this crate does not name the
/// `prost_types` type.)
pub(crate) fn timestamp(seconds: Option<i64>) -> String {
    let Some(seconds) = seconds else {
        return "-".to_owned();
    };
    let days = seconds.div_euclid(86_400);
    let seconds_of_day = seconds.rem_euclid(86_400);
    match gs1::CalendarDate::from_days_since_epoch(days) {
        Ok(date) => format!(
            "{date}T{:02}:{:02}:{:02}Z",
            seconds_of_day / 3600,
            seconds_of_day / 60 % 60,
            seconds_of_day % 60
        ),
        // Outside years 0..=9999: show the raw value rather than a wrong date.
        Err(_) => format!("{seconds}s since 1970-01-01"),
    }
}

/// A progress bar on standard error, drawn only when standard error is a
/// terminal (hidden otherwise, so logs and pipes stay clean).
pub(crate) fn progress_bar(length: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A counter on standard error for input of unknown length (standard
/// input), drawn only when standard error is a terminal.
pub(crate) fn progress_counter(unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{human_pos}} {unit} ({{per_sec}})");
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Prints a line on standard error without tearing a visible progress bar.
pub(crate) fn note(bar: &ProgressBar, line: &str) {
    bar.suspend(|| eprintln!("{line}"));
}

/// Quotes an argument for a POSIX shell when it needs quoting.
pub(crate) fn shell_quote(argument: &str) -> String {
    let plain = !argument.is_empty()
        && argument
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if plain {
        argument.to_owned()
    } else {
        format!("'{}'", argument.replace('\'', r"'\''"))
    }
}

/// Makes text safe for one line of a tab-separated file: control
/// characters (tab, line breaks, GS, …) are written as `\xNN`.
pub(crate) fn escape_control(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(escaped, "\\x{:02x}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// `NAME` of a protobuf enum value name `PREFIX_NAME`, in lower case:
/// `code("PACK_STATE_ACTIVE", "PACK_STATE_")` is `active`.
pub(crate) fn code(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// A code in words: `batch_does_not_match_serial` → `batch does not match serial`.
pub(crate) fn words(code: &str) -> String {
    code.replace('_', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(None), "-");
        assert_eq!(
            timestamp(Some(1_709_164_800 + 3_723)),
            "2024-02-29T01:02:03Z"
        );
        assert_eq!(timestamp(Some(-1)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["A", "BB"]);
        table.push(vec!["long".to_owned(), "x".to_owned()]);
        assert_eq!(table.render(), "A     BB\nlong  x\n");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc-1"), "abc-1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(escape_control("a\tb\u{1d}"), "a\\x09b\\x1d");
    }

    #[test]
    fn codes_and_words() {
        assert_eq!(code("PACK_STATE_ACTIVE", "PACK_STATE_"), "active");
        assert_eq!(
            words(&code("EU_ALERT_CODE_UNKNOWN_SERIAL", "EU_ALERT_CODE_")),
            "unknown serial"
        );
    }
}
