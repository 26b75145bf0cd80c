//! Time as billing reads it: UTC ranges `[start, end)`, whole hours and days, and the two text
//! forms the project writes times in. Every "is this instant in the range" of the project is
//! [`TimeRange::contains`].

use std::fmt;

use chrono::{DateTime, Months, NaiveDate, SecondsFormat, Timelike, Utc};

/// A UTC range, `start` included and `end` excluded; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeRange {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Why a range cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("--start must be earlier than --end")]
    Empty,
    #[error("`{0}` is not a day (YYYY-MM-DD) or a month (YYYY-MM)")]
    NotAPeriod(String),
}

impl TimeRange {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, RangeError> {
        if start >= end {
            return Err(RangeError::Empty);
        }
        Ok(TimeRange { start, end })
    }

    /// One UTC day.
    pub fn day(day: NaiveDate) -> Self {
        let start = midnight(day);
        TimeRange {
            start,
            end: start + chrono::Duration::days(1),
        }
    }

    /// `YYYY-MM-DD` (a day) or `YYYY-MM` (a month).
    pub fn of_period(period: &str) -> Result<Self, RangeError> {
        let bad = || RangeError::NotAPeriod(period.to_owned());
        let (first, last) = if period.len() == 7 {
            let first = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
                .map_err(|_| bad())?;
            let next = first.checked_add_months(Months::new(1)).ok_or_else(bad)?;
            (first, next)
        } else {
            let first = NaiveDate::parse_from_str(period, "%Y-%m-%d").map_err(|_| bad())?;
            (first, first.succ_opt().ok_or_else(bad)?)
        };
        TimeRange::new(midnight(first), midnight(last)).map_err(|_| bad())
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// `start <= at < end`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }

    /// Whether the two ranges share an instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `day` lies wholly inside the range.
    pub fn covers_day(&self, day: NaiveDate) -> bool {
        let day = TimeRange::day(day);
        self.start <= day.start && day.end <= self.end
    }

    /// The UTC days the range touches, in order.
    pub fn days(&self) -> Vec<NaiveDate> {
        self.start
            .date_naive()
            .iter_days()
            .take_while(|day| self.end > midnight(*day))
            .collect()
    }

    /// The days a usage event whose time is in the range can be booked on: its window is
    /// booked by its end, within a day of the event's time.
    pub fn booking_days(&self) -> Vec<NaiveDate> {
        let days = self.days();
        let (Some(first), Some(last)) = (days.first(), days.last()) else {
            return days;
        };
        day_list(
            first.pred_opt().unwrap_or(*first),
            last.succ_opt().unwrap_or(*last),
        )
    }

    /// The hours (0-23) of `day` that the range contains.
    pub fn hours_of(&self, day: NaiveDate) -> Vec<u32> {
        (0..24)
            .filter(|hour| hour_of(day, *hour).is_some_and(|at| self.contains(at)))
            .collect()
    }

    /// Both ends on whole hours.
    pub fn is_whole_hours(&self) -> bool {
        is_whole_hour(self.start) && is_whole_hour(self.end)
    }

    /// Both ends at midnight UTC.
    pub fn is_whole_days(&self) -> bool {
        is_whole_day(self.start) && is_whole_day(self.end)
    }
}

impl fmt::Display for TimeRange {
    /// `2024-11-01T00:00:00Z..2024-12-01T00:00:00Z`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", z_time(self.start), z_time(self.end))
    }
}

/// Midnight UTC at the start of `day`.
pub fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The start of hour `hour` of `day`, if `hour` is one (0-23).
pub fn hour_of(day: NaiveDate, hour: u32) -> Option<DateTime<Utc>> {
    day.and_hms_opt(hour, 0, 0).map(|t| t.and_utc())
}

/// Every day from `first` to `last`, both included.
pub fn day_list(first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
    first.iter_days().take_while(|d| *d <= last).collect()
}

pub fn is_whole_hour(at: DateTime<Utc>) -> bool {
    at.minute() == 0 && at.second() == 0 && at.nanosecond() == 0
}

pub fn is_whole_day(at: DateTime<Utc>) -> bool {
    at.hour() == 0 && is_whole_hour(at)
}

/// `2024-11-01T00:00:00Z`: the form UsageRecords and this ledger print times in.
pub fn z_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 in UTC with milliseconds, as stored: it sorts as text.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `YYYY-MM-DD`.
pub fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn range(start: &str, end: &str) -> TimeRange {
        TimeRange::new(at(start), at(end)).unwrap()
    }

    #[test]
    fn a_range_contains_its_start_and_not_its_end() {
        let november = range("2024-11-01T00:00:00Z", "2024-12-01T00:00:00Z");
        assert!(november.contains(at("2024-11-01T00:00:00Z")));
        assert!(november.contains(at("2024-11-30T23:59:59Z")));
        assert!(!november.contains(at("2024-12-01T00:00:00Z")));
        assert!(!november.contains(at("2024-10-31T23:59:59Z")));
        assert_eq!(
            TimeRange::new(at("2024-11-01T00:00:00Z"), at("2024-11-01T00:00:00Z")),
            Err(RangeError::Empty)
        );
    }

    #[test]
    fn days_cover_the_range_and_not_the_day_of_an_exclusive_midnight_end() {
        let days = range("2024-11-30T23:00:00Z", "2024-12-02T00:00:00Z").days();
        let days: Vec<String> = days.into_iter().map(day_text).collect();
        assert_eq!(days, ["2024-11-30", "2024-12-01"]);
    }

    #[test]
    fn only_the_range_s_hours_of_a_day_are_named() {
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        let late = range("2024-11-03T22:00:00Z", "2024-11-04T02:00:00Z");
        assert_eq!(late.hours_of(day), [22, 23]);
        assert!(!late.covers_day(day));
        let month = range("2024-11-01T00:00:00Z", "2024-12-01T00:00:00Z");
        assert_eq!(month.hours_of(day).len(), 24);
        assert!(month.covers_day(day));
    }

    #[test]
    fn periods_are_days_or_months() {
        assert_eq!(
            TimeRange::of_period("2024-02").unwrap(),
            range("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
        );
        assert_eq!(
            TimeRange::of_period("2024-12-31").unwrap().to_string(),
            "2024-12-31T00:00:00Z..2025-01-01T00:00:00Z"
        );
        assert!(TimeRange::of_period("2024-13").is_err());
        assert!(TimeRange::of_period("november").is_err());
    }

    #[test]
    fn whole_hours_and_days() {
        assert!(is_whole_day(at("2024-11-01T00:00:00Z")));
        assert!(!is_whole_day(at("2024-11-01T01:00:00Z")));
        assert!(is_whole_hour(at("2024-11-01T01:00:00Z")));
        assert!(!is_whole_hour(at("2024-11-01T01:00:00.001Z")));
        assert_eq!(
            timestamp(at("2024-11-01T01:00:00Z")),
            "2024-11-01T01:00:00.000Z"
        );
    }
}
