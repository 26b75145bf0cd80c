//! Invoice lines: what each customer is billed for a closed period, from the close's
//! snapshot (billed as it was when the close was taken), the plans, the active SIM-days and
//! the late usage of earlier closed periods. Pure and deterministic: the same inputs give the
//! same lines, each with an id made of the close, the customer, the kind and the key.
//!
//! The rules, each applied here only:
//! - **data**: one line per customer, plan and zone of the snapshot. The plan's allowance is
//!   taken off first (per SIM: each SIM's own; per customer: the allowance times the SIMs
//!   with usage on the line's plan, pooled), zone by zone from the highest unit price down
//!   (zones without a price last, then by name), SIM by SIM in SID order; then the rest is
//!   rounded up to the plan's increment, per line or per SIM as the plan says.
//! - **sim_fee**: one line per close, customer and plan for the SIMs active in the period (a
//!   SIM-day goes to the customer its SIM had at the day's start), quantity the SIMs.
//! - **adjustment**: one line per customer, earlier closed period, plan and zone for the
//!   usage booked into that period after its close, invoiced with the first later period
//!   closed for its account after it arrived ([`invoicing_close`]: each exactly once); billed
//!   by the customers and zones in force, rounded per line, no allowance (that period's was
//!   used when it was invoiced).
//! - Without a plan a line's quantity is its bytes (`B`), or its SIMs; amounts need a price.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::closes::{
    Adjustment, Billed, Billing, COMMIT_IN_FLIGHT, Close, SnapshotLine, sha256_hex,
};
use crate::plans::{AllowanceScope, Plan, Plans, RoundingScope};
use crate::time::{TimeRange, midnight};
use crate::usage::Booking;

/// What a line bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LineKind {
    Data,
    Adjustment,
    SimFee,
}

impl LineKind {
    pub fn name(self) -> &'static str {
        match self {
            LineKind::Data => "data",
            LineKind::Adjustment => "adjustment",
            LineKind::SimFee => "sim_fee",
        }
    }
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// `il_` and 32 hexadecimal digits of the SHA-256 of the close, customer, kind and key.
    pub id: String,
    pub customer_id: String,
    pub kind: LineKind,
    pub plan_id: Option<String>,
    /// Data and adjustment lines (`None` when the close recorded no zones).
    pub zone: Option<String>,
    pub bytes: u64,
    /// Bytes covered by the allowance (data lines).
    pub included_bytes: u64,
    /// SIMs with usage on the line, or active SIMs (SIM fee).
    pub sims: u64,
    /// Active SIM-days (SIM fee).
    pub sim_days: Option<u64>,
    pub quantity: Decimal,
    /// `B`, `KB`, `MB`, `GB`, or `SIM`.
    pub unit: &'static str,
    pub unit_price: Option<Decimal>,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    /// The invoiced period.
    pub period: TimeRange,
    /// The earlier period an adjustment line corrects.
    pub adjusts: Option<TimeRange>,
}

impl InvoiceLine {
    /// A line of `kind` for `customer`, nothing counted or priced yet.
    fn empty(id: String, customer: &str, kind: LineKind, period: TimeRange) -> Self {
        InvoiceLine {
            id,
            customer_id: customer.to_owned(),
            kind,
            plan_id: None,
            zone: None,
            bytes: 0,
            included_bytes: 0,
            sims: 0,
            sim_days: None,
            quantity: Decimal::ZERO,
            unit: "B",
            unit_price: None,
            amount: None,
            currency: None,
            period,
            adjusts: None,
        }
    }
}

/// Why lines cannot be made; each reads as one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error(
        "the close {close} was taken before closes recorded customers: close a period after applying customers to invoice it"
    )]
    NotBilled { close: String },
    #[error("the plan `{plan}` of customer {customer} is not in the plans applied")]
    UnknownPlan { plan: String, customer: String },
    #[error("the adjustment of {event_sid} has no readable arrival time")]
    BadArrival { event_sid: String },
    #[error("the {what} of customer {customer} does not fit exact arithmetic")]
    TooLarge {
        what: &'static str,
        customer: String,
    },
}

/// A SIM active in the period: the UTC days it was active on and, per day, the fleet its
/// usage was booked to (callbacks do not name fleets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSim {
    pub sim_sid: String,
    pub account_sid: Option<String>,
    pub active_days: BTreeSet<NaiveDate>,
    pub fleets: BTreeMap<NaiveDate, String>,
}

impl ActiveSim {
    /// The fleet of the SIM on `day`: that day's booking, else the latest before it, else the
    /// first after it; `None` for a SIM without usage in the period.
    fn fleet_on(&self, day: NaiveDate) -> Option<&str> {
        self.fleets
            .range(..=day)
            .next_back()
            .or_else(|| self.fleets.range(day..).next())
            .map(|(_, fleet)| fleet.as_str())
    }
}

/// Late usage of an earlier closed period, to be invoiced now.
#[derive(Debug, Clone)]
pub struct LateUsage<'a> {
    pub close: &'a Close,
    pub adjustment: &'a Adjustment,
}

/// Everything one period's invoice is made of.
#[derive(Debug, Clone, Copy)]
pub struct InvoiceInput<'a> {
    pub period: TimeRange,
    /// The closes of exactly this period, each with its snapshot lines.
    pub closes: &'a [(Close, Vec<SnapshotLine>)],
    pub plans: Option<&'a Plans>,
    /// The customers and zones in force: for SIM-days and late usage (the snapshot's lines
    /// carry their own).
    pub billing: Billing<'a>,
    pub active: &'a [ActiveSim],
    /// Every close: where each adjustment is invoiced is decided among them.
    pub all_closes: &'a [Close],
    /// Adjustments of earlier closes; those [`invoicing_close`] gives one of `closes` count.
    pub late: &'a [LateUsage<'a>],
}

/// The close an adjustment of `adjusted` is invoiced with: among the closes of later
/// periods for its account, the one whose snapshot came first after the adjustment was
/// surely in the ledger (its commit built plus [`COMMIT_IN_FLIGHT`]; for adjustments that do
/// not record that, its arrival); `None`: no such close yet. Snapshots are only ever taken
/// later than the ones there are, so the choice never moves once made, whatever order
/// periods are closed in: each late event is invoiced once, with the first invoice of its
/// account made after it was recorded.
pub fn invoicing_close<'c>(
    closes: &'c [Close],
    adjusted: &Close,
    adjustment: &Adjustment,
) -> Result<Option<&'c Close>, InvoiceError> {
    let time = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .ok()
    };
    let in_flight = chrono::Duration::from_std(COMMIT_IN_FLIGHT).unwrap_or_default();
    let recorded = match &adjustment.recorded_at {
        Some(built) => time(built).map(|at| at + in_flight),
        None => time(&adjustment.received_at),
    }
    .ok_or_else(|| InvoiceError::BadArrival {
        event_sid: adjustment.event_sid.clone(),
    })?;
    let account = adjustment.booking.account_sid.as_deref();
    Ok(closes
        .iter()
        .filter(|c| c.period.start() >= adjusted.period.end() && c.takes_account(account))
        .filter_map(|c| Some((c.snapshot_at.as_deref().and_then(time)?, c)))
        .filter(|(snapshot_at, _)| *snapshot_at > recorded)
        .min_by_key(|(snapshot_at, c)| (*snapshot_at, c.id()))
        .map(|(_, c)| c))
}

/// The invoice lines, sorted by customer, kind and key.
pub fn invoice_lines(input: &InvoiceInput) -> Result<Vec<InvoiceLine>, InvoiceError> {
    let mut lines = Vec::new();
    for (close, snapshot) in input.closes {
        lines.extend(data_lines(input, close, snapshot)?);
    }
    lines.extend(adjustment_lines(input)?);
    lines.extend(sim_fee_lines(input)?);
    lines.sort_by(|a, b| {
        (&a.customer_id, a.kind, &a.plan_id, &a.zone, &a.id).cmp(&(
            &b.customer_id,
            b.kind,
            &b.plan_id,
            &b.zone,
            &b.id,
        ))
    });
    Ok(lines)
}

/// The deterministic id of a line.
fn line_id(close_id: &str, customer: &str, kind: LineKind, key: &[Option<&str>]) -> String {
    let mut text = format!("{close_id}\n{customer}\n{}", kind.name());
    for part in key {
        text.push('\n');
        text.push_str(part.unwrap_or("-"));
    }
    format!("il_{}", &sha256_hex(&text)[..32])
}

fn plan_of<'p>(
    plans: Option<&'p Plans>,
    plan_id: Option<&str>,
    customer: &str,
) -> Result<Option<&'p Plan>, InvoiceError> {
    let Some(plan_id) = plan_id else {
        return Ok(None);
    };
    plans
        .and_then(|p| p.get(plan_id))
        .map(Some)
        .ok_or_else(|| InvoiceError::UnknownPlan {
            plan: plan_id.to_owned(),
            customer: customer.to_owned(),
        })
}

/// Bytes per zone, per SIM: one customer's usage on one plan.
type ZoneSims = BTreeMap<Option<String>, BTreeMap<String, u64>>;

fn too_large(what: &'static str, customer: &str) -> InvoiceError {
    InvoiceError::TooLarge {
        what,
        customer: customer.to_owned(),
    }
}

fn data_lines(
    input: &InvoiceInput,
    close: &Close,
    snapshot: &[SnapshotLine],
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    let mut groups: BTreeMap<(&str, Option<&str>), ZoneSims> = BTreeMap::new();
    for line in snapshot {
        let billed = line
            .billed
            .as_ref()
            .ok_or_else(|| InvoiceError::NotBilled { close: close.id() })?;
        let customer = billed.customer_id.as_str();
        let sims = groups
            .entry((customer, billed.plan_id.as_deref()))
            .or_default()
            .entry(billed.zone.clone())
            .or_default();
        let bytes = sims.entry(line.booking.sim_sid.clone()).or_default();
        *bytes = bytes
            .checked_add(line.usage.usage.total)
            .ok_or_else(|| too_large("usage", customer))?;
    }
    let mut lines = Vec::new();
    for ((customer, plan_id), zones) in groups {
        let plan = plan_of(input.plans, plan_id, customer)?;
        let rated = rate(plan, zones, customer)?;
        for (zone, usage) in rated {
            let key = [plan_id, zone.as_deref()];
            let id = line_id(&close.id(), customer, LineKind::Data, &key);
            let line = InvoiceLine {
                plan_id: plan_id.map(str::to_owned),
                zone,
                bytes: usage.bytes,
                included_bytes: usage.included,
                sims: usage.sims,
                quantity: usage.quantity,
                unit: plan.map_or("B", |p| p.unit.name()),
                ..InvoiceLine::empty(id, customer, LineKind::Data, input.period)
            };
            lines.push(priced(line, plan)?);
        }
    }
    Ok(lines)
}

/// One zone's usage of a customer on a plan, rated.
struct Rated {
    bytes: u64,
    included: u64,
    sims: u64,
    quantity: Decimal,
}

/// The zones in the order an allowance is used: highest unit price first, zones without a
/// price last, then by name.
fn allowance_order(plan: &Plan, zones: &ZoneSims) -> Vec<Option<String>> {
    let mut order: Vec<Option<String>> = zones.keys().cloned().collect();
    let price = |zone: &Option<String>| zone.as_ref().and_then(|z| plan.prices.get(z)).copied();
    order.sort_by(|a, b| price(b).cmp(&price(a)).then_with(|| a.cmp(b)));
    order
}

/// Takes the allowance off and rounds what is left, zone by zone.
fn rate(
    plan: Option<&Plan>,
    mut zones: ZoneSims,
    customer: &str,
) -> Result<BTreeMap<Option<String>, Rated>, InvoiceError> {
    let raw: BTreeMap<Option<String>, (u64, u64)> = zones
        .iter()
        .map(|(zone, sims)| {
            let bytes = sims
                .values()
                .try_fold(0u64, |sum, b| sum.checked_add(*b))
                .ok_or_else(|| too_large("usage", customer))?;
            Ok((zone.clone(), (bytes, sims.len() as u64)))
        })
        .collect::<Result<_, InvoiceError>>()?;
    let Some(plan) = plan else {
        return Ok(raw
            .into_iter()
            .map(|(zone, (bytes, sims))| {
                let rated = Rated {
                    bytes,
                    included: 0,
                    sims,
                    quantity: Decimal::from(bytes),
                };
                (zone, rated)
            })
            .collect());
    };
    if let Some((allowance, scope)) = plan.allowance {
        let order = allowance_order(plan, &zones);
        match scope {
            AllowanceScope::Sim => {
                let sims: BTreeSet<String> =
                    zones.values().flat_map(|s| s.keys().cloned()).collect();
                for sim in sims {
                    let mut left = allowance;
                    for zone in &order {
                        if let Some(bytes) = zones.get_mut(zone).and_then(|s| s.get_mut(&sim)) {
                            let take = left.min(*bytes);
                            (*bytes, left) = (*bytes - take, left - take);
                        }
                    }
                }
            }
            AllowanceScope::Customer => {
                let sims = zones
                    .values()
                    .flat_map(|s| s.keys())
                    .collect::<BTreeSet<_>>();
                let mut left = allowance
                    .checked_mul(sims.len() as u64)
                    .ok_or_else(|| too_large("allowance", customer))?;
                for zone in &order {
                    for bytes in zones.get_mut(zone).into_iter().flat_map(|s| s.values_mut()) {
                        let take = left.min(*bytes);
                        (*bytes, left) = (*bytes - take, left - take);
                    }
                }
            }
        }
    }
    let mut rated = BTreeMap::new();
    for (zone, sims) in &zones {
        let (bytes, count) = raw.get(zone).copied().unwrap_or_default();
        let billable: u64 = sims.values().sum();
        let quantity = match plan.rounding {
            RoundingScope::Line => plan.quantity(billable),
            RoundingScope::Sim => sims
                .values()
                .try_fold(Decimal::ZERO, |sum, b| sum.checked_add(plan.quantity(*b)?)),
        }
        .ok_or_else(|| too_large("quantity", customer))?;
        let line = Rated {
            bytes,
            included: bytes - billable,
            sims: count,
            quantity,
        };
        rated.insert(zone.clone(), line);
    }
    Ok(rated)
}

/// The line with its plan's unit price, amount and currency (where the plan prices it).
fn priced(mut line: InvoiceLine, plan: Option<&Plan>) -> Result<InvoiceLine, InvoiceError> {
    let Some(plan) = plan else {
        return Ok(line);
    };
    line.currency = Some(plan.currency.clone());
    line.unit_price = match line.kind {
        LineKind::SimFee => plan.sim_fee,
        LineKind::Data | LineKind::Adjustment => {
            line.zone.as_ref().and_then(|z| plan.prices.get(z)).copied()
        }
    };
    line.amount = line
        .unit_price
        .map(|price| {
            price
                .checked_mul(line.quantity)
                .map(|amount| amount.normalize())
                .ok_or_else(|| too_large("amount", &line.customer_id))
        })
        .transpose()?;
    if line.unit_price.is_none() {
        line.currency = None;
    }
    Ok(line)
}

fn adjustment_lines(input: &InvoiceInput) -> Result<Vec<InvoiceLine>, InvoiceError> {
    // Per invoicing close, adjusted close, customer, plan and zone: the bytes.
    let mut groups: BTreeMap<(String, String, Billed), (TimeRange, u64)> = BTreeMap::new();
    let ours = |close: &Close| input.closes.iter().any(|(c, _)| c.id() == close.id());
    for late in input.late {
        let adjustment = late.adjustment;
        let Some(target) = invoicing_close(input.all_closes, late.close, adjustment)? else {
            continue;
        };
        if !ours(target) {
            continue;
        }
        let billed = input
            .billing
            .billed(&adjustment.booking, adjustment.booked_hour);
        let customer = billed.customer_id.clone();
        let (_, bytes) = groups
            .entry((target.id(), late.close.id(), billed))
            .or_insert((late.close.period, 0));
        *bytes = bytes
            .checked_add(adjustment.usage.total)
            .ok_or_else(|| too_large("late usage", &customer))?;
    }
    let mut lines = Vec::new();
    for ((target_id, adjusted_id, billed), (adjusted, bytes)) in groups {
        let customer = billed.customer_id.as_str();
        let plan = plan_of(input.plans, billed.plan_id.as_deref(), customer)?;
        let quantity = match plan {
            Some(plan) => plan.quantity(bytes),
            None => Some(Decimal::from(bytes)),
        }
        .ok_or_else(|| too_large("quantity", customer))?;
        let key = [
            Some(adjusted_id.as_str()),
            billed.plan_id.as_deref(),
            billed.zone.as_deref(),
        ];
        let id = line_id(&target_id, customer, LineKind::Adjustment, &key);
        let line = InvoiceLine {
            plan_id: billed.plan_id.clone(),
            zone: billed.zone.clone(),
            bytes,
            quantity,
            unit: plan.map_or("B", |p| p.unit.name()),
            adjusts: Some(adjusted),
            ..InvoiceLine::empty(id, customer, LineKind::Adjustment, input.period)
        };
        lines.push(priced(line, plan)?);
    }
    Ok(lines)
}

/// The SIMs of a customer on a plan, and their active days.
type SimDays<'a> = (BTreeSet<&'a str>, u64);

fn sim_fee_lines(input: &InvoiceInput) -> Result<Vec<InvoiceLine>, InvoiceError> {
    // Per close, customer and plan: the SIMs and their days (a day no close of the period
    // covers for the SIM's account is another invoice's).
    let mut groups: BTreeMap<(String, String, Option<String>), SimDays> = BTreeMap::new();
    for sim in input.active {
        for day in &sim.active_days {
            let account = sim.account_sid.as_deref();
            let Some((close, _)) = input.closes.iter().find(|(c, _)| c.covers(account, *day))
            else {
                continue;
            };
            let booking = Booking {
                sim_sid: sim.sim_sid.clone(),
                account_sid: sim.account_sid.clone(),
                fleet_sid: sim.fleet_on(*day).map(str::to_owned),
                network_sid: None,
                iso_country: None,
            };
            let billed = input.billing.billed(&booking, midnight(*day));
            let (sims, days) = groups
                .entry((close.id(), billed.customer_id, billed.plan_id))
                .or_default();
            sims.insert(&sim.sim_sid);
            *days += 1;
        }
    }
    let mut lines = Vec::new();
    for ((close_id, customer, plan_id), (sims, days)) in groups {
        let plan = plan_of(input.plans, plan_id.as_deref(), &customer)?;
        let id = line_id(
            &close_id,
            &customer,
            LineKind::SimFee,
            &[plan_id.as_deref()],
        );
        let line = InvoiceLine {
            plan_id,
            sims: sims.len() as u64,
            sim_days: Some(days),
            quantity: Decimal::from(sims.len() as u64),
            unit: "SIM",
            ..InvoiceLine::empty(id, &customer, LineKind::SimFee, input.period)
        };
        lines.push(priced(line, plan)?);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closes::CloseState;
    use crate::event::DataVolume;
    use crate::usage::{BookingNames, HourUsage};

    const ACCOUNT: &str = "AC00000000000000000000000000000001";

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn november() -> Close {
        Close {
            account_sid: None,
            period: TimeRange::new(at("2024-11-01T00:00:00Z"), at("2024-12-01T00:00:00Z")).unwrap(),
            closed_at: String::new(),
            state: CloseState::Closed,
            snapshot_sha256: None,
            snapshot_at: None,
            lines: 0,
            parts: 0,
        }
    }

    fn line(sim: &str, customer: &str, plan: Option<&str>, zone: &str, bytes: u64) -> SnapshotLine {
        SnapshotLine {
            booking: Booking {
                sim_sid: sim.into(),
                account_sid: Some(ACCOUNT.into()),
                fleet_sid: None,
                network_sid: None,
                iso_country: Some(zone.into()),
            },
            names: BookingNames::default(),
            usage: HourUsage {
                usage: DataVolume {
                    upload: 0,
                    download: bytes,
                    total: bytes,
                },
                events: 1,
            },
            billed: Some(Billed {
                customer_id: customer.into(),
                plan_id: plan.map(str::to_owned),
                zone: Some(zone.into()),
            }),
        }
    }

    const POOLED: &str = r#"{"plans": [{"id": "pool", "currency": "EUR", "unit": "MB",
        "rounding": {"increment": "0.5", "scope": "sim"},
        "prices": {"EU": "0.02", "ROW": "0.50"},
        "allowance": {"bytes": 1000000, "per": "customer"}, "sim_fee": "1.00"}]}"#;

    fn lines_of(closes: &[(Close, Vec<SnapshotLine>)], plans: &Plans) -> Vec<InvoiceLine> {
        let active = [ActiveSim {
            sim_sid: "HSa".into(),
            account_sid: Some(ACCOUNT.into()),
            active_days: [NaiveDate::from_ymd_opt(2024, 11, 3).unwrap()].into(),
            fleets: BTreeMap::new(),
        }];
        let customers = crate::customers::Customers::parse_csv(
            "customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to\n\
             c1,,,AC00000000000000000000000000000001,pool,2024-01-01T00:00:00Z,\n",
        )
        .unwrap();
        invoice_lines(&InvoiceInput {
            period: closes[0].0.period,
            closes,
            plans: Some(plans),
            billing: Billing {
                customers: Some(&customers),
                zones: None,
                adjustments: &[],
            },
            active: &active,
            all_closes: &[],
            late: &[],
        })
        .unwrap()
    }

    /// By hand: two SIMs pool 2 MB. ROW is dearer, so it uses the pool first: all of HSa's
    /// 0.4 MB. The 1.6 MB left go to EU in SID order: HSa's 2.3 MB leave 0.7 MB, HSb's
    /// 0.1 MB stay whole. Per SIM up to 0.5 MB: 1.0 + 0.5 = 1.5 MB at 0.02 = 0.03.
    #[test]
    fn a_pooled_allowance_goes_to_the_dearest_zone_first_and_sims_round_up_alone() {
        let plans = Plans::parse_json(POOLED).unwrap();
        let snapshot = vec![
            line("HSa", "c1", Some("pool"), "EU", 2_300_000),
            line("HSa", "c1", Some("pool"), "ROW", 400_000),
            line("HSb", "c1", Some("pool"), "EU", 100_000),
        ];
        let lines = lines_of(&[(november(), snapshot.clone())], &plans);
        let summary: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.kind,
                    l.zone.as_deref(),
                    l.bytes,
                    l.included_bytes,
                    l.quantity.to_string(),
                    l.amount.map(|a| a.to_string()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    LineKind::Data,
                    Some("EU"),
                    2_400_000,
                    1_600_000,
                    "1.5".into(),
                    Some("0.03".into())
                ),
                (
                    LineKind::Data,
                    Some("ROW"),
                    400_000,
                    400_000,
                    "0".into(),
                    Some("0".into())
                ),
                (LineKind::SimFee, None, 0, 0, "1".into(), Some("1".into())),
            ]
        );
        assert!(
            lines
                .iter()
                .all(|l| l.id.len() == 35 && l.id.starts_with("il_"))
        );
        // The same inputs, the same lines; another period, other ids.
        assert_eq!(lines, lines_of(&[(november(), snapshot.clone())], &plans));
        let mut december = november();
        december.period =
            TimeRange::new(at("2024-12-01T00:00:00Z"), at("2025-01-01T00:00:00Z")).unwrap();
        let other = lines_of(&[(december, snapshot)], &plans);
        assert_ne!(lines[0].id, other[0].id);
    }

    #[test]
    fn without_a_plan_the_quantity_is_the_bytes_and_there_is_no_amount() {
        let plans = Plans::parse_json(POOLED).unwrap();
        let snapshot = vec![line("HSc", "-", None, "EU", 1_234_567)];
        let lines = lines_of(&[(november(), snapshot)], &plans);
        let data = &lines[0];
        assert_eq!(
            (
                data.customer_id.as_str(),
                data.quantity,
                data.unit,
                data.amount,
                data.currency.clone()
            ),
            ("-", Decimal::from(1_234_567u64), "B", None, None)
        );
    }

    #[test]
    fn late_usage_is_invoiced_with_the_first_later_close_of_its_account_after_it_arrived() {
        let closed = |account: Option<&str>, start: &str, end: &str, snapshot: &str| Close {
            account_sid: account.map(str::to_owned),
            period: TimeRange::new(at(start), at(end)).unwrap(),
            snapshot_at: Some(snapshot.into()),
            ..november()
        };
        let october = closed(
            None,
            "2024-10-01T00:00:00Z",
            "2024-11-01T00:00:00Z",
            "2024-11-03T01:00:00.000Z",
        );
        let november = closed(
            Some(ACCOUNT),
            "2024-11-01T00:00:00Z",
            "2024-12-01T00:00:00Z",
            "2024-12-03T01:00:00.000Z",
        );
        let other = closed(
            Some("AC2"),
            "2024-11-01T00:00:00Z",
            "2024-12-01T00:00:00Z",
            "2024-12-02T01:00:00.000Z",
        );
        let december = closed(
            None,
            "2024-12-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
            "2025-01-03T01:00:00.000Z",
        );
        let closes = [october.clone(), november.clone(), other, december.clone()];
        let adjustment = |received: &str| Adjustment {
            close_id: october.id(),
            event_sid: "EZ1".into(),
            booking: line("HSa", "c1", None, "EU", 0).booking,
            booked_hour: at("2024-10-31T23:00:00Z"),
            usage: DataVolume {
                upload: 0,
                download: 5,
                total: 5,
            },
            received_at: received.into(),
            recorded_at: None,
        };
        let target = |received: &str| {
            invoicing_close(&closes, &october, &adjustment(received))
                .unwrap()
                .map(Close::id)
        };
        // Arrived while October was still closing: November's invoice takes it.
        assert_eq!(target("2024-11-03T00:59:59.000Z"), Some(november.id()));
        assert_eq!(target("2024-12-03T00:59:59.000Z"), Some(november.id()));
        // After November's close of its account (another account's came earlier): December's.
        assert_eq!(target("2024-12-03T01:00:00.000Z"), Some(december.id()));
        assert_eq!(
            target("2025-01-04T00:00:00.000Z"),
            None,
            "the next close will"
        );
        // Recorded by a commit built ten minutes before November's snapshot: it may have
        // landed after it, so December's invoice takes it.
        let mut built_late = adjustment("2024-11-20T00:00:00.000Z");
        built_late.recorded_at = Some("2024-12-03T00:51:00.000Z".into());
        let chosen = invoicing_close(&closes, &october, &built_late).unwrap();
        assert_eq!(chosen.map(Close::id), Some(december.id()));
        built_late.recorded_at = Some("2024-12-03T00:49:00.000Z".into());
        let chosen = invoicing_close(&closes, &october, &built_late).unwrap();
        assert_eq!(chosen.map(Close::id), Some(november.id()));
        assert!(invoicing_close(&closes, &october, &adjustment("yesterday")).is_err());
    }
}
