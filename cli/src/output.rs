//! Output: aligned tables, human-readable sizes, CSV, and writing to stdout.

use std::io::Write;

use crate::failure::{Failure, Result};

/// A count with its noun, singular for one: `1 SIM`, `2 SIMs`.
pub fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Bytes with binary units and one decimal: `512 B`, `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: columns separated by two spaces (cells never hold two spaces in a
/// row, so the output splits back on them), an optional rule and totals row.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
    footer: Option<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            columns: columns
                .iter()
                .map(|(name, align)| ((*name).to_owned(), *align))
                .collect(),
            rows: Vec::new(),
            footer: None,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn footer(&mut self, cells: Vec<String>) {
        self.footer = Some(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(name, _)| name.chars().count())
            .collect();
        for row in self.rows.iter().chain(self.footer.iter()) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (i, ((_, align), width)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                match align {
                    Align::Left => text.push_str(&format!("{cell:<width$}")),
                    Align::Right => text.push_str(&format!("{cell:>width$}")),
                }
            }
            text.trim_end().to_owned() + "\n"
        };
        let header: Vec<String> = self.columns.iter().map(|(n, _)| n.clone()).collect();
        let mut out = line(&header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        if let Some(footer) = &self.footer {
            let total_width = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            out.push_str(&"-".repeat(total_width));
            out.push('\n');
            out.push_str(&line(footer));
        }
        out
    }
}

/// Table cells hold one line, and never two spaces in a row.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One CSV field, quoted when it has to be. Text a spreadsheet would run as a formula (it
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return, and is not a number) gets a
/// leading `'` and quotes, as OWASP recommends: SIM unique names are typed by users.
pub fn csv_field(value: &str) -> String {
    let formula = match value.chars().next() {
        Some('=' | '@' | '\t' | '\r') => true,
        // A signed number is data; `-inf` parses as one, but is not digits.
        Some('+' | '-') => {
            let digits = value[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.');
            !(digits && value.parse::<f64>().is_ok())
        }
        _ => false,
    };
    if formula {
        format!("\"'{}\"", value.replace('"', "\"\""))
    } else if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// JSON, pretty-printed, with a final newline.
pub fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|e| Failure::Failed(format!("cannot write JSON: {e}")))
}

/// Writes to stdout; a closed pipe (`| head`) is not a failure.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Failed(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn tables_align_and_split_back_on_two_spaces() {
        let mut table = Table::new(&[("NAME", Align::Left), ("SIZE", Align::Right)]);
        table.row(vec!["a".into(), "1.2 MiB".into()]);
        table.row(vec!["long name".into(), "3 B".into()]);
        table.footer(vec!["TOTAL".into(), "1.2 MiB".into()]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME          SIZE");
        assert_eq!(lines[1], "a          1.2 MiB");
        assert_eq!(lines[2], "long name      3 B");
        assert!(lines[3].chars().all(|c| c == '-'));
        assert_eq!(lines[4], "TOTAL      1.2 MiB");
    }

    /// Issue 21, item 7: SIM unique names are typed by users; a CSV cell a spreadsheet would
    /// run as a formula is neutralised as OWASP recommends (a leading `'`, quoted).
    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_neutralised() {
        for (cell, written) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
            ),
            ("+1+cmd", "\"'+1+cmd\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\tx", "\"'\tx\""),
            ("\rx", "\"'\rx\""),
            ("-", "\"'-\""),
            ("-inf", "\"'-inf\""),
        ] {
            assert_eq!(csv_field(cell), written, "{cell:?}");
        }
        // Numbers and ordinary text are written as they are.
        for cell in [
            "-12",
            "+3.5",
            "-1e3",
            "HS1",
            "2024-11-03T10:00:00Z",
            "a=b",
            "",
        ] {
            assert_eq!(csv_field(cell), cell);
        }
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("HS1"), "HS1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
