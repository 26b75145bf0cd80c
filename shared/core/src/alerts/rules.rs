//! Alert rules: the file `kore-usage alerts apply` takes, read whole or refused whole with
//! the field and the reason (`rules[2].thresholds[1]: ...`).
//!
//! ```json
//! {"rules": [
//!   {"id": "fleet-a-monthly", "kind": "usage", "fleet": "HF..", "per": "sim",
//!    "period": "month", "thresholds": [800000000, 1000000000]},
//!   {"id": "silent", "kind": "silence", "fleet": "HF..", "after_minutes": 180},
//!   {"id": "quality", "kind": "quality"}
//! ]}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde_json::{Map, Value, json};

use crate::usage::Booking;

/// The most rules one file may hold: they are kept in one table item, every batch of events
/// is checked against each, and one event may add to a sum of each in one transaction
/// (DynamoDB's 100 actions, one of which marks the batch).
pub const MAX_RULES: usize = 99;
/// The most thresholds one usage rule may have.
pub const MAX_THRESHOLDS: usize = 20;
/// The longest silence a rule may wait for: thirty days.
pub const MAX_AFTER_MINUTES: u64 = 30 * 24 * 60;
/// The shortest: arrivals are recorded as the table's stream reaches the alerts function
/// (seconds, up to its batching window) and checked every few minutes, so a shorter
/// silence would be mostly that delay.
pub const MIN_AFTER_MINUTES: u64 = 10;

/// Why a rules file is refused: the field (`rules[2].thresholds[1]`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RulesError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// What a rule watches: at most one of an account, a fleet or a SIM, or everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    All,
    Account(String),
    Fleet(String),
    Sim(String),
}

impl Scope {
    /// Whether usage booked to `booking` counts toward the scope: a SIM that moves fleet
    /// counts toward each fleet only what it used while in it.
    pub fn covers(&self, booking: &Booking) -> bool {
        match self {
            Scope::All => true,
            Scope::Account(account) => booking.account_sid.as_deref() == Some(account),
            Scope::Fleet(fleet) => booking.fleet_sid.as_deref() == Some(fleet),
            Scope::Sim(sim) => booking.sim_sid == *sim,
        }
    }

    /// Whether an event of `sim`, `account` and `fleet` (as the event names them) is in
    /// the scope: what a silence rule watches, usage or not.
    pub fn names(&self, sim: Option<&str>, account: Option<&str>, fleet: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Account(sid) => account == Some(sid),
            Scope::Fleet(sid) => fleet == Some(sid),
            Scope::Sim(sid) => sim == Some(sid),
        }
    }

    /// The subject of a `per: total` rule: the account, fleet or SIM, or `all`.
    pub fn subject(&self) -> &str {
        match self {
            Scope::All => "all",
            Scope::Account(sid) | Scope::Fleet(sid) | Scope::Sim(sid) => sid,
        }
    }

    fn field(&self) -> Option<(&'static str, &str)> {
        match self {
            Scope::All => None,
            Scope::Account(sid) => Some(("account", sid)),
            Scope::Fleet(sid) => Some(("fleet", sid)),
            Scope::Sim(sid) => Some(("sim", sid)),
        }
    }
}

/// Whether a usage rule counts each SIM of its scope on its own or the scope's sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Per {
    Sim,
    Total,
}

/// The UTC period usage is summed over, by the booking rule's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Day,
    Month,
}

impl Per {
    pub fn name(self) -> &'static str {
        match self {
            Per::Sim => "sim",
            Per::Total => "total",
        }
    }
}

impl Period {
    /// The first and last day of the period that `day` is in.
    pub fn days_of(self, day: NaiveDate) -> (NaiveDate, NaiveDate) {
        match self {
            Period::Day => (day, day),
            Period::Month => {
                let first = day.with_day(1).unwrap_or(day);
                let next = first
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(first);
                (first, next.pred_opt().unwrap_or(first))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// Thresholds in bytes of `data_total`: at least one, strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Thresholds(Vec<u64>);

impl Thresholds {
    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }

    /// The thresholds that `value` reaches.
    pub fn reached(&self, value: u64) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied().filter(move |t| *t <= value)
    }
}

/// What a rule raises an alert for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// Usage booked in a period reaching a threshold.
    Usage {
        per: Per,
        period: Period,
        thresholds: Thresholds,
    },
    /// A SIM seen in the scope that then sends nothing for this long (by arrival).
    Silence { after_minutes: u64 },
    /// An event whose `data_total` is not `data_upload + data_download`.
    Quality,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Letters, digits, `-`, `_` and `.`: it is part of every alert's key.
    pub id: String,
    pub scope: Scope,
    pub kind: RuleKind,
}

impl Rule {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Usage { .. } => "usage",
            RuleKind::Silence { .. } => "silence",
            RuleKind::Quality => "quality",
        }
    }

    /// What its sums and alerts are kept under besides its id: its kind, scope, `per` and
    /// `period` (not its thresholds or minutes, which may change). A rule id keeps one
    /// definition for good: the sums and alerts already kept under it mean that one.
    pub fn definition(&self) -> String {
        let mut definition = self.to_json();
        if let Some(rule) = definition.as_object_mut() {
            for changeable in ["id", "thresholds", "after_minutes"] {
                rule.remove(changeable);
            }
        }
        definition.to_string()
    }

    /// The rule as the file writes it.
    pub fn to_json(&self) -> Value {
        let mut rule = Map::new();
        rule.insert("id".into(), json!(self.id));
        rule.insert("kind".into(), json!(self.kind_name()));
        if let Some((name, sid)) = self.scope.field() {
            rule.insert(name.into(), json!(sid));
        }
        match &self.kind {
            RuleKind::Usage {
                per,
                period,
                thresholds,
            } => {
                rule.insert("per".into(), json!(per.name()));
                rule.insert("period".into(), json!(period.name()));
                rule.insert("thresholds".into(), json!(thresholds.as_slice()));
            }
            RuleKind::Silence { after_minutes } => {
                rule.insert("after_minutes".into(), json!(after_minutes));
            }
            RuleKind::Quality => {}
        }
        Value::Object(rule)
    }
}

/// The rules in force, in the order of their file; ids unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    pub fn as_slice(&self) -> &[Rule] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a rules file: every rule valid, or the first problem with its field.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let document: Value =
            serde_json::from_str(text).map_err(|e| refuse("(file)", format!("not JSON: {e}")))?;
        let object = document
            .as_object()
            .ok_or_else(|| refuse("(file)", "must be an object with `rules`"))?;
        if let Some(other) = object.keys().find(|k| *k != "rules") {
            return Err(refuse(
                other.as_str(),
                "unknown field (the file holds `rules`)",
            ));
        }
        let list = object
            .get("rules")
            .ok_or_else(|| refuse("rules", "missing"))?
            .as_array()
            .ok_or_else(|| refuse("rules", "must be a list"))?;
        if list.len() > MAX_RULES {
            return Err(refuse("rules", format!("at most {MAX_RULES} rules")));
        }
        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(list.len());
        for (index, value) in list.iter().enumerate() {
            let rule = parse_rule(value, &format!("rules[{index}]"))?;
            if !seen.insert(rule.id.clone()) {
                return Err(refuse(
                    format!("rules[{index}].id"),
                    format!("`{}` is the id of an earlier rule", rule.id),
                ));
            }
            rules.push(rule);
        }
        Ok(Rules(rules))
    }

    /// Refuses a rule whose id was applied before with another definition
    /// (`Rule::definition`), given the definitions of every id applied so far.
    pub fn check_definitions(&self, known: &BTreeMap<String, String>) -> Result<(), RulesError> {
        for (index, rule) in self.0.iter().enumerate() {
            if let Some(before) = known.get(&rule.id)
                && *before != rule.definition()
            {
                return Err(refuse(
                    format!("rules[{index}]"),
                    format!(
                        "rule `{}` was applied before as {before}: its sums and alerts are kept under its id, so a rule of another kind, scope, per or period needs a new id",
                        rule.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The rules as a file: `Rules::parse(&rules.to_json().to_string())` gives them back.
    pub fn to_json(&self) -> Value {
        json!({ "rules": self.0.iter().map(Rule::to_json).collect::<Vec<_>>() })
    }
}

fn parse_rule(value: &Value, at: &str) -> Result<Rule, RulesError> {
    let field = |name: &str| format!("{at}.{name}");
    let rule = value
        .as_object()
        .ok_or_else(|| refuse(at, "must be an object"))?;
    let text = |name: &str| -> Result<Option<&str>, RulesError> {
        match rule.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
            Some(_) => Err(refuse(field(name), "must be a non-empty string")),
        }
    };
    let id = text("id")?.ok_or_else(|| refuse(field("id"), "missing"))?;
    if id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(refuse(
            field("id"),
            "at most 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    let kind = text("kind")?.ok_or_else(|| refuse(field("kind"), "missing"))?;
    let allowed: &[&str] = match kind {
        "usage" => &["per", "period", "thresholds"],
        "silence" => &["after_minutes"],
        "quality" => &[],
        other => {
            return Err(refuse(
                field("kind"),
                format!("`{other}` is not `usage`, `silence` or `quality`"),
            ));
        }
    };
    const COMMON: [&str; 5] = ["id", "kind", "account", "fleet", "sim"];
    if let Some(other) = rule
        .keys()
        .find(|k| !COMMON.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
    {
        return Err(refuse(
            field(other),
            format!("unknown field for a `{kind}` rule"),
        ));
    }
    let mut scopes = Vec::new();
    for (name, make) in [
        ("account", Scope::Account as fn(String) -> Scope),
        ("fleet", Scope::Fleet),
        ("sim", Scope::Sim),
    ] {
        if let Some(sid) = text(name)? {
            // A SID of the wrong kind would be applied and never match anything.
            let prefix = match name {
                "account" => "AC",
                "fleet" => "HF",
                _ => "HS",
            };
            if !sid.starts_with(prefix) {
                return Err(refuse(
                    field(name),
                    format!("`{sid}` is not a {name} SID (they start with {prefix})"),
                ));
            }
            scopes.push((name, make(sid.to_owned())));
        }
    }
    let scope = match scopes.as_slice() {
        [] => Scope::All,
        [(_, scope)] => scope.clone(),
        [(first, _), (second, _), ..] => {
            return Err(refuse(
                field(second),
                format!("a rule has at most one of `account`, `fleet`, `sim` (it has `{first}`)"),
            ));
        }
    };
    let kind = match kind {
        "usage" => {
            let per = match text("per")? {
                Some("sim") => Per::Sim,
                Some("total") => Per::Total,
                Some(other) => {
                    return Err(refuse(
                        field("per"),
                        format!("`{other}` is not `sim` or `total`"),
                    ));
                }
                None => return Err(refuse(field("per"), "missing")),
            };
            let period = match text("period")? {
                Some("day") => Period::Day,
                Some("month") => Period::Month,
                Some(other) => {
                    return Err(refuse(
                        field("period"),
                        format!("`{other}` is not `day` or `month`"),
                    ));
                }
                None => return Err(refuse(field("period"), "missing")),
            };
            RuleKind::Usage {
                per,
                period,
                thresholds: parse_thresholds(rule.get("thresholds"), &field("thresholds"))?,
            }
        }
        "silence" => {
            let after = rule
                .get("after_minutes")
                .ok_or_else(|| refuse(field("after_minutes"), "missing"))?;
            match after.as_u64() {
                Some(minutes) if (MIN_AFTER_MINUTES..=MAX_AFTER_MINUTES).contains(&minutes) => {
                    RuleKind::Silence {
                        after_minutes: minutes,
                    }
                }
                _ => {
                    return Err(refuse(
                        field("after_minutes"),
                        format!(
                            "must be a whole number of minutes from {MIN_AFTER_MINUTES} to {MAX_AFTER_MINUTES}"
                        ),
                    ));
                }
            }
        }
        _ => RuleKind::Quality,
    };
    Ok(Rule {
        id: id.to_owned(),
        scope,
        kind,
    })
}

fn parse_thresholds(value: Option<&Value>, at: &str) -> Result<Thresholds, RulesError> {
    let list = value
        .ok_or_else(|| refuse(at, "missing"))?
        .as_array()
        .ok_or_else(|| refuse(at, "must be a list of byte counts"))?;
    if list.is_empty() || list.len() > MAX_THRESHOLDS {
        return Err(refuse(
            at,
            format!("must hold 1 to {MAX_THRESHOLDS} thresholds"),
        ));
    }
    let mut thresholds: Vec<u64> = Vec::with_capacity(list.len());
    for (index, value) in list.iter().enumerate() {
        let bytes = value.as_u64().filter(|b| *b > 0).ok_or_else(|| {
            refuse(
                format!("{at}[{index}]"),
                "must be a whole number of bytes above 0",
            )
        })?;
        if thresholds.last().is_some_and(|last| bytes <= *last) {
            return Err(refuse(
                format!("{at}[{index}]"),
                "must be greater than the threshold before it",
            ));
        }
        thresholds.push(bytes);
    }
    Ok(Thresholds(thresholds))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field() {
            None => f.write_str("everything"),
            Some((name, sid)) => write!(f, "{name} {sid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"rules": [
      {"id": "fleet-a-monthly", "kind": "usage", "fleet": "HFa", "per": "sim", "period": "month",
       "thresholds": [800000000, 1000000000]},
      {"id": "acct-daily", "kind": "usage", "account": "ACa", "per": "total", "period": "day",
       "thresholds": [50000000000]},
      {"id": "silent", "kind": "silence", "fleet": "HFa", "after_minutes": 180},
      {"id": "quality", "kind": "quality"}
    ]}"#;

    #[test]
    fn the_issue_example_reads_and_round_trips() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        assert_eq!(rules.as_slice().len(), 4);
        assert_eq!(rules.as_slice()[0].scope, Scope::Fleet("HFa".into()));
        assert_eq!(rules.as_slice()[3].scope, Scope::All);
        assert_eq!(Rules::parse(&rules.to_json().to_string()).unwrap(), rules);
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_field_and_the_reason() {
        let cases = [
            (
                r#"{"rules": [{"id": "a", "kind": "quality"}, {"id": "a", "kind": "quality"}]}"#,
                "rules[1].id: `a` is the id of an earlier rule",
            ),
            (
                r#"{"rules": [{"id": "a", "kind": "usage", "per": "sim", "period": "day",
                 "thresholds": [5, 5]}]}"#,
                "rules[0].thresholds[1]: must be greater than the threshold before it",
            ),
            (
                r#"{"rules": [{"id": "a", "kind": "usage", "per": "sim", "period": "week",
                 "thresholds": [5]}]}"#,
                "rules[0].period: `week` is not `day` or `month`",
            ),
            (
                r#"{"rules": [{"id": "a", "kind": "quality", "fleet": "HF1", "sim": "HS1"}]}"#,
                "rules[0].sim: a rule has at most one of `account`, `fleet`, `sim` (it has `fleet`)",
            ),
            (
                r#"{"rules": [{"id": "a", "kind": "silence", "after_minutes": 5}]}"#,
                "rules[0].after_minutes: must be a whole number of minutes from 10 to 43200",
            ),
            (
                r#"{"rules": [{"id": "a", "kind": "quality", "fleet": "HS1"}]}"#,
                "rules[0].fleet: `HS1` is not a fleet SID (they start with HF)",
            ),
            (
                r#"{"rules": [{"id": "a", "kind": "quality", "thresholds": [1]}]}"#,
                "rules[0].thresholds: unknown field for a `quality` rule",
            ),
            (
                r#"{"rules": [{"id": "a b", "kind": "quality"}]}"#,
                "rules[0].id: at most 64 letters, digits, `-`, `_` or `.`",
            ),
            (
                r#"{"rule": []}"#,
                "rule: unknown field (the file holds `rules`)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Rules::parse(text).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn a_rule_id_keeps_its_definition_but_not_its_thresholds() {
        let before = Rules::parse(EXAMPLE).unwrap();
        let known: BTreeMap<String, String> = before
            .as_slice()
            .iter()
            .map(|r| (r.id.clone(), r.definition()))
            .collect();
        let new_thresholds = EXAMPLE.replace("[50000000000]", "[40000000000, 60000000000]");
        assert!(
            Rules::parse(&new_thresholds)
                .unwrap()
                .check_definitions(&known)
                .is_ok()
        );
        let new_period = EXAMPLE.replace(r#""period": "day""#, r#""period": "month""#);
        let error = Rules::parse(&new_period)
            .unwrap()
            .check_definitions(&known)
            .unwrap_err();
        assert_eq!(error.field, "rules[1]");
        assert!(
            error.reason.contains("`acct-daily` was applied before as"),
            "{error}"
        );
    }

    #[test]
    fn a_month_runs_from_its_first_to_its_last_day() {
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        assert_eq!(
            Period::Month.days_of(day("2024-02-17")),
            (day("2024-02-01"), day("2024-02-29"))
        );
        assert_eq!(
            Period::Month.days_of(day("2024-12-31")),
            (day("2024-12-01"), day("2024-12-31"))
        );
        assert_eq!(
            Period::Day.days_of(day("2024-12-31")),
            (day("2024-12-31"), day("2024-12-31"))
        );
    }

    #[test]
    fn thresholds_reached_are_those_at_or_below_the_value() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        let RuleKind::Usage { thresholds, .. } = &rules.as_slice()[0].kind else {
            panic!("a usage rule")
        };
        let reached = |value| thresholds.reached(value).collect::<Vec<_>>();
        assert_eq!(reached(799_999_999), Vec::<u64>::new());
        assert_eq!(reached(800_000_000), vec![800_000_000]);
        assert_eq!(reached(1_000_000_000), vec![800_000_000, 1_000_000_000]);
    }
}
