//! The arguments several commands share, and how each is read: a UTC range, a duration, a
//! period, an output format. Wrong usage is exit 2 with one sentence.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use clap::ValueEnum;
use kore_ingest_core::time::TimeRange;

use crate::failure::{Failure, Result};

/// `--start` (included) and `--end` (excluded): UTC times in the `Z` form.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// Start of the range, included: UTC in the Z form, e.g. 2024-11-01T00:00:00Z.
    #[arg(long, value_name = "TIME", value_parser = parse_z_time)]
    pub start: DateTime<Utc>,
    /// End of the range, excluded: UTC in the Z form.
    #[arg(long, value_name = "TIME", value_parser = parse_z_time)]
    pub end: DateTime<Utc>,
}

impl RangeArgs {
    /// The range, or wrong usage.
    pub fn range(&self) -> Result<TimeRange> {
        TimeRange::new(self.start, self.end).map_err(|e| Failure::Usage(e.to_string()))
    }

    /// A range on whole hours, or wrong usage.
    pub fn whole_hours(&self) -> Result<TimeRange> {
        let range = self.range()?;
        if !range.is_whole_hours() {
            return Err(Failure::Usage(
                "--start and --end must be on whole hours, e.g. 2024-11-01T00:00:00Z".into(),
            ));
        }
        Ok(range)
    }

    /// A range of whole UTC days, or wrong usage.
    pub fn whole_days(&self) -> Result<TimeRange> {
        let range = self.range()?;
        if !range.is_whole_days() {
            return Err(Failure::Usage(
                "--start and --end must be at midnight UTC: a closed period is whole days".into(),
            ));
        }
        Ok(range)
    }
}

/// A UTC time in the `Z` form, as UsageRecords takes it.
pub fn parse_z_time(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    const HELP: &str = "must be a UTC time in the Z form, e.g. 2024-11-01T00:00:00Z";
    if !text.ends_with('Z') {
        return Err(HELP.to_owned());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| HELP.to_owned())
}

/// `30s`, `90m`, `48h`, `2d`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    const HELP: &str = "must be a whole number with a unit: s, m, h or d (e.g. 48h)";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| HELP.to_owned())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| HELP.to_owned())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(HELP.to_owned()),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| HELP.to_owned())
}

/// A duration the way [`parse_duration`] reads it: `2d`, `90s`.
pub fn humane(duration: Duration) -> String {
    match duration.as_secs() {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `YYYY-MM` or `YYYY-MM-DD`, digits exactly, a real month or date.
pub fn parse_period(text: &str) -> std::result::Result<String, String> {
    const HELP: &str =
        "must be a month (YYYY-MM) or a day (YYYY-MM-DD), e.g. 2024-11 or 2024-11-03";
    let bytes = text.as_bytes();
    let shape_ok = match bytes.len() {
        7 | 10 => bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        }),
        _ => false,
    };
    if !shape_ok {
        return Err(HELP.to_owned());
    }
    let date = match bytes.len() {
        7 => format!("{text}-01"),
        _ => text.to_owned(),
    };
    NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map(|_| text.to_owned())
        .map_err(|_| format!("{HELP}; `{text}` is not a real date"))
}

/// Records as a table for people, or as JSON or CSV for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// `table` for people, `json` for programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_must_be_utc_in_the_z_form() {
        assert!(parse_z_time("2024-11-01T00:00:00Z").is_ok());
        for bad in [
            "2024-11-01T00:00:00+00:00",
            "2024-11-01",
            "2024-11-01T00:00:00",
            "",
        ] {
            assert!(parse_z_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_have_a_unit() {
        assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["48", "h", "1.5h", "-1h", "1w", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(humane(Duration::from_secs(48 * 3600)), "2d");
        assert_eq!(humane(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn periods_are_months_or_days_exactly() {
        for good in ["2024-11", "2024-11-03", "2024-02-29"] {
            assert_eq!(parse_period(good).as_deref(), Ok(good));
        }
        for bad in [
            "2024-13",
            "2024-1",
            "2024-11-3",
            "2023-02-29",
            "2024/11",
            "24-11",
            "2024-11-03T00",
            "",
            "２０２４-11",
            "2024-00",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }
}
