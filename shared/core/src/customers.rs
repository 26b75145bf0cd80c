//! Which of *our users'* customers a SIM's usage belongs to, over time: the file
//! `kore-usage customers apply` takes, read whole or refused whole with the line, the field
//! and the reason, and the one attribution rule (the most specific row valid at the hour the
//! usage is booked in: SIM over fleet over account).
//!
//! ```csv
//! customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to
//! acme,,HF0123...,,iot-eu,2024-11-01T00:00:00Z,
//! globex,HS4567...,,,,2024-11-15T00:00:00Z,2024-12-01T00:00:00Z
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::sid::is_sid;
use crate::time::is_whole_hour;

/// The header, exactly: other tools write this file.
pub const HEADER: [&str; 7] = [
    "customer_id",
    "sim_sid",
    "fleet_sid",
    "account_sid",
    "plan_id",
    "valid_from",
    "valid_to",
];

/// Why a customers file is refused: where (`line 3, valid_to`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct CustomersError {
    pub place: String,
    pub reason: String,
}

fn refuse(line: u64, field: &str, reason: impl Into<String>) -> CustomersError {
    CustomersError {
        place: if field.is_empty() {
            format!("line {line}")
        } else {
            format!("line {line}, {field}")
        },
        reason: reason.into(),
    }
}

/// Whose usage a row assigns: one SIM, a fleet, or an account. Ordered most specific first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Sim(String),
    Fleet(String),
    Account(String),
}

impl Subject {
    /// The row's `sim_sid`, `fleet_sid` and `account_sid`: one of them set.
    pub fn columns(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Subject::Sim(sid) => (Some(sid), None, None),
            Subject::Fleet(sid) => (None, Some(sid), None),
            Subject::Account(sid) => (None, None, Some(sid)),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Sim(sid) => write!(f, "SIM {sid}"),
            Subject::Fleet(sid) => write!(f, "fleet {sid}"),
            Subject::Account(sid) => write!(f, "account {sid}"),
        }
    }
}

/// One row: a customer holds a subject from `valid_from` (included) to `valid_to`
/// (excluded; `None`: still).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The file line it came from (1 is the header).
    pub line: u64,
    pub customer_id: String,
    pub subject: Subject,
    /// `None`: no plan, quantities only.
    pub plan_id: Option<String>,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
}

impl Assignment {
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.valid_from <= at && self.valid_to.is_none_or(|to| at < to)
    }

    fn overlaps(&self, other: &Assignment) -> bool {
        let ends_after = |a: &Assignment, at: DateTime<Utc>| a.valid_to.is_none_or(|to| at < to);
        ends_after(self, other.valid_from) && ends_after(other, self.valid_from)
    }
}

/// The whole mapping, as applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customers {
    /// Per subject, its rows by `valid_from` (they never overlap).
    by_subject: BTreeMap<Subject, Vec<Assignment>>,
}

/// A SIM with the fleet and account its usage was booked to: what a row can assign.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub sim_sid: &'a str,
    pub fleet_sid: Option<&'a str>,
    pub account_sid: Option<&'a str>,
}

/// The customer usage goes to when no row matches: reported, never dropped.
pub const UNASSIGNED: &str = "-";

impl Customers {
    /// Reads a customers file, or refuses it whole: the first fault, with its line and field.
    pub fn parse_csv(text: &str) -> Result<Customers, CustomersError> {
        // Flexible: a row with too few or too many fields is refused below, saying so.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = reader
            .headers()
            .map_err(|e| refuse(1, "", format!("not CSV: {e}")))?;
        // csv drops a byte order mark and trims every field.
        if header.iter().ne(HEADER) {
            return Err(refuse(
                1,
                "",
                format!("the header must be exactly `{}`", HEADER.join(",")),
            ));
        }
        let mut customers = Customers::default();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                refuse(line, "", format!("not CSV: {e}"))
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let assignment = assignment(line, &record)?;
            customers.add(assignment)?;
        }
        Ok(customers)
    }

    fn add(&mut self, assignment: Assignment) -> Result<(), CustomersError> {
        let rows = self
            .by_subject
            .entry(assignment.subject.clone())
            .or_default();
        if let Some(other) = rows.iter().find(|other| other.overlaps(&assignment)) {
            return Err(CustomersError {
                place: format!("lines {} and {}", other.line, assignment.line),
                reason: format!(
                    "both assign {} for a time: their validity overlaps",
                    assignment.subject
                ),
            });
        }
        rows.push(assignment);
        rows.sort_by_key(|a| a.valid_from);
        Ok(())
    }

    /// Every row, in the order of the file.
    pub fn assignments(&self) -> Vec<&Assignment> {
        let mut all: Vec<&Assignment> = self.by_subject.values().flatten().collect();
        all.sort_by_key(|a| a.line);
        all
    }

    /// The file that reads back as this mapping: the header, then every row in file order.
    pub fn to_csv(&self) -> Result<String, CustomersError> {
        let failed = |e: &dyn fmt::Display| CustomersError {
            place: "(writing the mapping)".into(),
            reason: e.to_string(),
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(HEADER).map_err(|e| failed(&e))?;
        for a in self.assignments() {
            let (sim, fleet, account) = a.subject.columns();
            writer
                .write_record([
                    a.customer_id.as_str(),
                    sim.unwrap_or(""),
                    fleet.unwrap_or(""),
                    account.unwrap_or(""),
                    a.plan_id.as_deref().unwrap_or(""),
                    &crate::time::z_time(a.valid_from),
                    &a.valid_to.map(crate::time::z_time).unwrap_or_default(),
                ])
                .map_err(|e| failed(&e))?;
        }
        let bytes = writer.into_inner().map_err(|e| failed(&e))?;
        String::from_utf8(bytes).map_err(|e| failed(&e))
    }

    /// The row usage of `sim` (in `fleet` and `account`, as its booking names them) in the
    /// hour starting `at` belongs to: the SIM's row valid then, else its fleet's, else its
    /// account's; `None`: no customer.
    pub fn assignment_at(&self, sim: &Holder, at: DateTime<Utc>) -> Option<&Assignment> {
        let subjects = [
            Some(Subject::Sim(sim.sim_sid.to_owned())),
            sim.fleet_sid.map(|f| Subject::Fleet(f.to_owned())),
            sim.account_sid.map(|a| Subject::Account(a.to_owned())),
        ];
        subjects
            .into_iter()
            .flatten()
            .find_map(|subject| self.by_subject.get(&subject)?.iter().find(|a| a.covers(at)))
    }

    /// The customer id usage of `sim` at `at` is reported under ([`UNASSIGNED`] when none).
    pub fn customer_at(&self, sim: &Holder, at: DateTime<Utc>) -> &str {
        self.assignment_at(sim, at)
            .map_or(UNASSIGNED, |a| a.customer_id.as_str())
    }

    /// The days of `days` whose usage must be attributed hour by hour: those a row starts or
    /// ends within (on every other day each booking has one customer all day).
    pub fn changing_days(&self, days: &[NaiveDate]) -> BTreeSet<NaiveDate> {
        days.iter()
            .copied()
            .filter(|day| self.changes_within(crate::time::midnight(*day)))
            .collect()
    }

    /// Whether some row starts or ends strictly inside the UTC day starting `midnight`.
    pub fn changes_within(&self, midnight: DateTime<Utc>) -> bool {
        let next = midnight + chrono::Duration::days(1);
        let inside = |at: DateTime<Utc>| midnight < at && at < next;
        self.by_subject
            .values()
            .flatten()
            .any(|a| inside(a.valid_from) || a.valid_to.is_some_and(inside))
    }
}

fn assignment(line: u64, record: &csv::StringRecord) -> Result<Assignment, CustomersError> {
    let cell = |i: usize| record.get(i).unwrap_or("");
    if record.len() != HEADER.len() {
        return Err(refuse(
            line,
            "",
            format!("has {} fields, the header {}", record.len(), HEADER.len()),
        ));
    }
    let customer_id = cell(0);
    if customer_id.is_empty() {
        return Err(refuse(line, "customer_id", "must not be empty"));
    }
    if customer_id == UNASSIGNED || customer_id.chars().any(char::is_control) {
        return Err(refuse(
            line,
            "customer_id",
            format!("`{UNASSIGNED}` and control characters are not customer ids"),
        ));
    }
    let mut subjects = Vec::new();
    for (i, prefix, make) in [
        (1, "HS", Subject::Sim as fn(String) -> Subject),
        (2, "HF", Subject::Fleet),
        (3, "AC", Subject::Account),
    ] {
        let value = cell(i);
        if value.is_empty() {
            continue;
        }
        if !is_sid(value, prefix) {
            return Err(refuse(
                line,
                HEADER[i],
                format!("`{value}` is not a SID: {prefix} and 32 lowercase hexadecimal digits"),
            ));
        }
        subjects.push(make(value.to_owned()));
    }
    let subject = match subjects.len() {
        1 => subjects.remove(0),
        n => {
            return Err(refuse(
                line,
                "",
                format!("names {n} of sim_sid, fleet_sid and account_sid: exactly one is needed"),
            ));
        }
    };
    let plan_id = Some(cell(4).to_owned()).filter(|p| !p.is_empty());
    let time = |i: usize| -> Result<Option<DateTime<Utc>>, CustomersError> {
        let value = cell(i);
        if value.is_empty() {
            return Ok(None);
        }
        // Usage is attributed by the hour it is booked in: a row starts and ends on one.
        DateTime::parse_from_rfc3339(value)
            .ok()
            .filter(|_| value.ends_with('Z'))
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| is_whole_hour(*t))
            .map(Some)
            .ok_or_else(|| {
                refuse(
                    line,
                    HEADER[i],
                    format!(
                        "`{value}` is not a whole UTC hour in the Z form, e.g. 2024-11-01T00:00:00Z"
                    ),
                )
            })
    };
    let valid_from = time(5)?
        .ok_or_else(|| refuse(line, "valid_from", "must be given (when the row starts)"))?;
    let valid_to = time(6)?;
    if valid_to.is_some_and(|to| to <= valid_from) {
        return Err(refuse(line, "valid_to", "must be after valid_from"));
    }
    Ok(Assignment {
        line,
        customer_id: customer_id.to_owned(),
        subject,
        plan_id,
        valid_from,
        valid_to,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SIM: &str = "HS00000000000000000000000000000001";
    const FLEET: &str = "HF00000000000000000000000000000001";
    const ACCOUNT: &str = "AC00000000000000000000000000000001";

    fn file(rows: &[&str]) -> String {
        let mut text = HEADER.join(",") + "\n";
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        text
    }

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 11, day, hour, 0, 0).unwrap()
    }

    fn holder() -> Holder<'static> {
        Holder {
            sim_sid: SIM,
            fleet_sid: Some(FLEET),
            account_sid: Some(ACCOUNT),
        }
    }

    #[test]
    fn the_most_specific_row_valid_at_the_hour_wins() {
        let customers = Customers::parse_csv(&file(&[
            &format!("acme,,,{ACCOUNT},,2024-11-01T00:00:00Z,"),
            &format!("fleet-owner,,{FLEET},,plan-a,2024-11-10T00:00:00Z,2024-11-20T00:00:00Z"),
            &format!("sim-owner,{SIM},,,,2024-11-15T12:00:00Z,2024-11-16T00:00:00Z"),
        ]))
        .unwrap();
        let b = holder();
        assert_eq!(customers.customer_at(&b, at(2, 0)), "acme");
        assert_eq!(customers.customer_at(&b, at(15, 11)), "fleet-owner");
        assert_eq!(customers.customer_at(&b, at(15, 12)), "sim-owner");
        assert_eq!(customers.customer_at(&b, at(16, 0)), "fleet-owner");
        assert_eq!(customers.customer_at(&b, at(20, 0)), "acme");
        let elsewhere = Holder {
            account_sid: Some("AC00000000000000000000000000000002"),
            fleet_sid: None,
            ..b
        };
        assert_eq!(customers.customer_at(&elsewhere, at(2, 0)), UNASSIGNED);
        assert!(customers.changes_within(Utc.with_ymd_and_hms(2024, 11, 15, 0, 0, 0).unwrap()));
        assert!(!customers.changes_within(Utc.with_ymd_and_hms(2024, 11, 16, 0, 0, 0).unwrap()));
        assert_eq!(
            customers.assignments()[1].plan_id.as_deref(),
            Some("plan-a")
        );
    }

    #[test]
    fn overlapping_rows_of_one_subject_are_refused_naming_both_lines() {
        let error = Customers::parse_csv(&file(&[
            &format!("a,,{FLEET},,,2024-11-01T00:00:00Z,2024-11-10T00:00:00Z"),
            &format!("b,,,{ACCOUNT},,2024-11-01T00:00:00Z,"),
            &format!("c,,{FLEET},,,2024-11-09T00:00:00Z,"),
        ]))
        .unwrap_err();
        assert_eq!(error.place, "lines 2 and 4");
        assert!(error.reason.contains(FLEET), "{error}");
        // Back to back is not an overlap.
        Customers::parse_csv(&file(&[
            &format!("a,,{FLEET},,,2024-11-01T00:00:00Z,2024-11-10T00:00:00Z"),
            &format!("c,,{FLEET},,,2024-11-10T00:00:00Z,"),
        ]))
        .unwrap();
    }

    #[test]
    fn every_refusal_names_the_line_and_the_field() {
        for (row, place) in [
            (
                format!(",,{FLEET},,,2024-11-01T00:00:00Z,"),
                "line 2, customer_id",
            ),
            (format!("a,{SIM},{FLEET},,,2024-11-01T00:00:00Z,"), "line 2"),
            ("a,,,,,2024-11-01T00:00:00Z,".to_owned(), "line 2"),
            (
                "a,,HFxyz,,,2024-11-01T00:00:00Z,".to_owned(),
                "line 2, fleet_sid",
            ),
            (
                format!("a,,{FLEET},,,2024-11-01T00:00:00+01:00,"),
                "line 2, valid_from",
            ),
            (format!("a,,{FLEET},,,,"), "line 2, valid_from"),
            (
                format!("a,,{FLEET},,,2024-11-02T00:00:00Z,2024-11-01T00:00:00Z"),
                "line 2, valid_to",
            ),
            (format!("a,,{FLEET},,"), "line 2"),
        ] {
            let error = Customers::parse_csv(&file(&[&row])).unwrap_err();
            assert_eq!(error.place, place, "{row}: {error}");
        }
        let error = Customers::parse_csv("customer,sim\n").unwrap_err();
        assert_eq!(error.place, "line 1");
    }
}
