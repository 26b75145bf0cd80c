//! Price plans: the file `kore-usage plans apply` takes, read whole or refused whole with the
//! field and the reason, small enough to audit by eye. Amounts are exact decimals, never
//! floats.
//!
//! ```json
//! {"plans": [
//!   {"id": "iot-eu", "currency": "EUR", "unit": "MB",
//!    "rounding": {"increment": "1", "scope": "sim"},
//!    "prices": {"EU": "0.02", "ROW": "0.50"},
//!    "allowance": {"bytes": 500000000, "per": "sim"},
//!    "sim_fee": "1.00"}
//! ]}
//! ```
//!
//! - `unit`: what quantities and prices are in: `B`, `KB`, `MB` or `GB`, decimal (1 MB is
//!   1,000,000 bytes, as carriers bill).
//! - `rounding` (default `{"increment": "1", "scope": "line"}`): quantities are rounded **up**
//!   to a multiple of `increment` units, each invoice line's sum (`line`) or each SIM's part
//!   of it before they are added (`sim`).
//! - `prices` (optional): the price of one unit per zone name; a zone without a price gives a
//!   line with a quantity and no amount.
//! - `allowance` (optional): bytes included each period, `per` SIM (each SIM's own) or per
//!   `customer` (pooled: the SIMs' allowances together), taken off before rounding.
//! - `sim_fee` (optional): the price of one active SIM for the period.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde_json::{Map, Value};

/// Why a plans file is refused: the field (`plans[1].prices.EU`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlansError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> PlansError {
    PlansError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The unit quantities and prices are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    B,
    Kb,
    Mb,
    Gb,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::B => "B",
            Unit::Kb => "KB",
            Unit::Mb => "MB",
            Unit::Gb => "GB",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            Unit::B => 1,
            Unit::Kb => 1_000,
            Unit::Mb => 1_000_000,
            Unit::Gb => 1_000_000_000,
        }
    }
}

/// Where rounding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundingScope {
    Line,
    Sim,
}

/// Whose allowance it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowanceScope {
    Sim,
    /// Pooled: the customer's SIMs' allowances together.
    Customer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub currency: String,
    pub unit: Unit,
    /// In units, > 0.
    pub increment: Decimal,
    pub rounding: RoundingScope,
    pub prices: BTreeMap<String, Decimal>,
    pub allowance: Option<(u64, AllowanceScope)>,
    pub sim_fee: Option<Decimal>,
}

impl Plan {
    /// `bytes` as a billable quantity: in the plan's unit, rounded up to its increment;
    /// `None` if it cannot be computed exactly (beyond 28 significant digits).
    pub fn quantity(&self, bytes: u64) -> Option<Decimal> {
        let units = Decimal::from(bytes).checked_div(Decimal::from(self.unit.bytes()))?;
        let steps = units.checked_div(self.increment)?.ceil();
        Some(steps.checked_mul(self.increment)?.normalize())
    }
}

/// The plans, as applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plans {
    plans: BTreeMap<String, Plan>,
    /// The file as given: what `plans list` prints back.
    json: Value,
}

impl Plans {
    pub fn parse_json(text: &str) -> Result<Plans, PlansError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| refuse("(file)", format!("not JSON: {e}")))?;
        let list = root
            .get("plans")
            .and_then(Value::as_array)
            .ok_or_else(|| refuse("plans", "must be a list of plans"))?;
        if root.as_object().is_some_and(|o| o.len() != 1) {
            return Err(refuse("(file)", "holds only `plans`"));
        }
        let mut plans = BTreeMap::new();
        for (i, value) in list.iter().enumerate() {
            let field = format!("plans[{i}]");
            let plan = plan_of(&field, value)?;
            if plans.contains_key(&plan.id) {
                return Err(refuse(
                    format!("{field}.id"),
                    format!("`{}` is used twice", plan.id),
                ));
            }
            plans.insert(plan.id.clone(), plan);
        }
        Ok(Plans { plans, json: root })
    }

    pub fn get(&self, id: &str) -> Option<&Plan> {
        self.plans.get(id)
    }

    pub fn ids(&self) -> BTreeSet<&str> {
        self.plans.keys().map(String::as_str).collect()
    }

    pub fn to_json(&self) -> &Value {
        &self.json
    }
}

fn decimal(field: &str, value: Option<&Value>) -> Result<Option<Decimal>, PlansError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.as_str().ok_or_else(|| {
        refuse(
            field,
            "must be a decimal in a string, e.g. \"0.50\" (never a float)",
        )
    })?;
    let number: Decimal = text
        .parse()
        .map_err(|_| refuse(field, format!("`{text}` is not a decimal")))?;
    if number.is_sign_negative() {
        return Err(refuse(field, "must not be negative"));
    }
    Ok(Some(number))
}

fn plan_of(field: &str, value: &Value) -> Result<Plan, PlansError> {
    let object = value
        .as_object()
        .ok_or_else(|| refuse(field, "must be an object"))?;
    known(
        field,
        object,
        &[
            "id",
            "currency",
            "unit",
            "rounding",
            "prices",
            "allowance",
            "sim_fee",
        ],
    )?;
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.trim().is_empty() && !id.chars().any(char::is_control))
        .ok_or_else(|| refuse(format!("{field}.id"), "must be a non-empty id"))?;
    let currency = object
        .get("currency")
        .and_then(Value::as_str)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        .ok_or_else(|| {
            refuse(
                format!("{field}.currency"),
                "must be an ISO 4217 code, e.g. EUR",
            )
        })?;
    let unit = match object.get("unit").and_then(Value::as_str) {
        Some("B") => Unit::B,
        Some("KB") => Unit::Kb,
        Some("MB") => Unit::Mb,
        Some("GB") => Unit::Gb,
        _ => return Err(refuse(format!("{field}.unit"), "must be B, KB, MB or GB")),
    };
    let (increment, rounding) = match object.get("rounding") {
        None => (Decimal::ONE, RoundingScope::Line),
        Some(rounding) => {
            let here = format!("{field}.rounding");
            let rounding = rounding
                .as_object()
                .ok_or_else(|| refuse(&here, "must be an object"))?;
            known(&here, rounding, &["increment", "scope"])?;
            let increment = decimal(&format!("{here}.increment"), rounding.get("increment"))?
                .unwrap_or(Decimal::ONE);
            // Nine decimals reach single bytes of a GB; finer would only risk exactness.
            if increment.is_zero() || increment.scale() > 9 {
                return Err(refuse(
                    format!("{here}.increment"),
                    "must be more than zero, with at most nine decimals",
                ));
            }
            let scope = match rounding.get("scope").and_then(Value::as_str) {
                None | Some("line") => RoundingScope::Line,
                Some("sim") => RoundingScope::Sim,
                Some(_) => return Err(refuse(format!("{here}.scope"), "must be line or sim")),
            };
            (increment, scope)
        }
    };
    let mut prices = BTreeMap::new();
    if let Some(map) = object.get("prices") {
        let map = map
            .as_object()
            .ok_or_else(|| refuse(format!("{field}.prices"), "must map zone names to prices"))?;
        for (zone, price) in map {
            let here = format!("{field}.prices.{zone}");
            let price = decimal(&here, Some(price))?.unwrap_or_default();
            prices.insert(zone.clone(), price);
        }
    }
    let allowance = match object.get("allowance") {
        None => None,
        Some(allowance) => {
            let here = format!("{field}.allowance");
            let allowance = allowance
                .as_object()
                .ok_or_else(|| refuse(&here, "must be an object"))?;
            known(&here, allowance, &["bytes", "per"])?;
            let bytes = allowance
                .get("bytes")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    refuse(format!("{here}.bytes"), "must be a whole number of bytes")
                })?;
            let per = match allowance.get("per").and_then(Value::as_str) {
                Some("sim") => AllowanceScope::Sim,
                Some("customer") => AllowanceScope::Customer,
                _ => return Err(refuse(format!("{here}.per"), "must be sim or customer")),
            };
            Some((bytes, per))
        }
    };
    Ok(Plan {
        id: id.to_owned(),
        currency: currency.to_owned(),
        unit,
        increment,
        rounding,
        prices,
        allowance,
        sim_fee: decimal(&format!("{field}.sim_fee"), object.get("sim_fee"))?,
    })
}

fn known(field: &str, object: &Map<String, Value>, names: &[&str]) -> Result<(), PlansError> {
    match object.keys().find(|k| !names.contains(&k.as_str())) {
        Some(key) => Err(refuse(
            format!("{field}.{key}"),
            format!("is not a field here ({})", names.join(", ")),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"plans": [
        {"id": "iot-eu", "currency": "EUR", "unit": "MB",
         "rounding": {"increment": "0.5", "scope": "sim"},
         "prices": {"EU": "0.02", "ROW": "0.50"},
         "allowance": {"bytes": 500000000, "per": "customer"},
         "sim_fee": "1.00"},
        {"id": "bytes-only", "currency": "USD", "unit": "GB"}]}"#;

    #[test]
    fn a_plan_reads_with_exact_prices_and_rounds_quantities_up() {
        let plans = Plans::parse_json(FILE).unwrap();
        let plan = plans.get("iot-eu").unwrap();
        assert_eq!(plan.prices["EU"].to_string(), "0.02");
        assert_eq!(
            plan.allowance,
            Some((500_000_000, AllowanceScope::Customer))
        );
        assert_eq!(plan.rounding, RoundingScope::Sim);
        // 1,200,001 bytes = 1.200001 MB, up to a multiple of 0.5: 1.5.
        let quantity = |p: &Plan, bytes| p.quantity(bytes).unwrap().to_string();
        assert_eq!(quantity(plan, 1_200_001), "1.5");
        assert_eq!(quantity(plan, 1_000_000), "1");
        assert_eq!(quantity(plan, 0), "0");
        // 18,446,744,073,709.551615 MB, up to a multiple of 0.5.
        assert_eq!(quantity(plan, u64::MAX), "18446744073710");
        let other = plans.get("bytes-only").unwrap();
        assert_eq!(quantity(other, 1), "1");
        assert_eq!(other.rounding, RoundingScope::Line);
        assert!(other.prices.is_empty() && other.sim_fee.is_none());
        assert_eq!(
            Plans::parse_json(&plans.to_json().to_string()).unwrap(),
            plans
        );
    }

    #[test]
    fn every_refusal_names_the_field() {
        for (text, field) in [
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MiB"}]}"#,
                "plans[0].unit",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "eur", "unit": "MB"}]}"#,
                "plans[0].currency",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "prices": {"EU": 0.5}}]}"#,
                "plans[0].prices.EU",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "prices": {"EU": "-1"}}]}"#,
                "plans[0].prices.EU",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "rounding": {"increment": "0"}}]}"#,
                "plans[0].rounding.increment",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "rounding": {"scope": "day"}}]}"#,
                "plans[0].rounding.scope",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "rounding": {"increment": "0.0000000001"}}]}"#,
                "plans[0].rounding.increment",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "allowance": {"bytes": 1, "per": "zone"}}]}"#,
                "plans[0].allowance.per",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB", "fee": "1"}]}"#,
                "plans[0].fee",
            ),
            (
                r#"{"plans": [{"id": "a", "currency": "EUR", "unit": "MB"}, {"id": "a", "currency": "EUR", "unit": "MB"}]}"#,
                "plans[1].id",
            ),
            (r#"{"plan": []}"#, "plans"),
        ] {
            let error = Plans::parse_json(text).unwrap_err();
            assert_eq!(error.field, field, "{text}: {error}");
        }
    }
}
