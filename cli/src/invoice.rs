//! `kore-usage invoice`: what each customer is billed for a closed period, line by line
//! (the rules are `kore_ingest_core::invoice`), and [`lines_of`], which `push` sends.

use std::process::ExitCode;

use kore_ingest_aws::ledger::{SimActivity, UsageLedger};
use kore_ingest_core::closes::{Adjustment, Billing, Close, CloseState, SnapshotLine};
use kore_ingest_core::invoice::{ActiveSim, InvoiceInput, InvoiceLine, LateUsage, invoice_lines};
use kore_ingest_core::time::{TimeRange, z_time};
use kore_ingest_core::usage::Period;
use serde::Serialize;

use crate::args::{RangeArgs, ReportFormat};
use crate::customers::{customers_in_force, plans_in_force, zones_in_force};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, csv_field, human_bytes, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage invoice --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage invoice --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --customer city-water --format json

From a closed period (kore-usage close): per customer, one data line per plan and zone of the
snapshot (its bytes, the allowance taken off, the quantity rounded up as the plan says, and
with a price the unit price and amount, exactly), a sim_fee line per plan for the SIMs active
in the period, and one adjustment line per earlier closed period, plan and zone for its late
usage recorded since the previous invoice of its account. Customers and plans are those applied (customers apply,
plans apply); the snapshot keeps each line's customer, plan and zone as they were at the
close. Every line has an id from the close, customer, kind and key: the same period gives
the same lines, byte for byte.";

/// Invoice lines of a closed period, per customer.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only this customer's lines (`-`: usage no customer row assigns).
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// The JSON keys are a contract; decimals are strings, exactly as computed.
#[derive(Debug, Serialize)]
struct LineJson<'a> {
    id: &'a str,
    customer_id: &'a str,
    kind: &'static str,
    plan_id: Option<&'a str>,
    zone: Option<&'a str>,
    bytes: u64,
    included_bytes: u64,
    sims: u64,
    sim_days: Option<u64>,
    quantity: String,
    unit: &'static str,
    unit_price: Option<String>,
    amount: Option<String>,
    currency: Option<&'a str>,
    period: Period,
    adjusts: Option<Period>,
}

impl<'a> From<&'a InvoiceLine> for LineJson<'a> {
    fn from(line: &'a InvoiceLine) -> Self {
        LineJson {
            id: &line.id,
            customer_id: &line.customer_id,
            kind: line.kind.name(),
            plan_id: line.plan_id.as_deref(),
            zone: line.zone.as_deref(),
            bytes: line.bytes,
            included_bytes: line.included_bytes,
            sims: line.sims,
            sim_days: line.sim_days,
            quantity: line.quantity.normalize().to_string(),
            unit: line.unit,
            unit_price: line.unit_price.map(|p| p.to_string()),
            amount: line.amount.map(|a| a.normalize().to_string()),
            currency: line.currency.as_deref(),
            period: line.period.into(),
            adjusts: line.adjusts.map(Period::from),
        }
    }
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let period = args.range.whole_days()?;
    let mut lines = lines_of(ledger, period).await?;
    if let Some(customer) = &args.customer {
        lines.retain(|line| &line.customer_id == customer);
    }
    let text = match args.format {
        ReportFormat::Json => json(&lines.iter().map(LineJson::from).collect::<Vec<_>>())?,
        ReportFormat::Csv => csv(&lines),
        ReportFormat::Table if lines.is_empty() => format!(
            "No invoice lines from {} to {}.\n",
            z_time(period.start()),
            z_time(period.end())
        ),
        ReportFormat::Table => table(&lines),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The invoice lines of the period closed from its start to its end (its closes for every
/// account or for single accounts), as `invoice` prints them and `push` sends them.
pub async fn lines_of(ledger: &UsageLedger, period: TimeRange) -> Result<Vec<InvoiceLine>> {
    let all = ledger.closes().all().await.or_fail(ledger)?;
    let of_period: Vec<&Close> = all
        .iter()
        .filter(|c| c.period == period && c.state == CloseState::Closed)
        .collect();
    if of_period.is_empty() {
        return Err(Failure::Failed(format!(
            "no period from {} to {} is closed: run `kore-usage close` for it first",
            z_time(period.start()),
            z_time(period.end())
        )));
    }
    let mut closes: Vec<(Close, Vec<SnapshotLine>)> = Vec::new();
    for close in of_period {
        let lines = ledger.closes().snapshot(close).await.or_fail(ledger)?;
        closes.push((close.clone(), lines));
    }
    let customers = customers_in_force(ledger).await?;
    let zones = zones_in_force(ledger).await?;
    let plans = plans_in_force(ledger).await?;
    let active: Vec<ActiveSim> = ledger
        .sims_active(&period, None)
        .await
        .or_fail(ledger)?
        .into_iter()
        .map(|sim: SimActivity| ActiveSim {
            active_days: sim.activity.active_days,
            sim_sid: sim.sim_sid,
            account_sid: sim.account_sid,
            fleets: sim.fleets,
        })
        .collect();
    let earlier: Vec<&Close> = all
        .iter()
        .filter(|c| c.period.end() <= period.start())
        .collect();
    let mut adjustments: Vec<(&Close, Vec<Adjustment>)> = Vec::new();
    for close in earlier {
        let read = ledger.closes().adjustments(close).await.or_fail(ledger)?;
        adjustments.push((close, read));
    }
    let late: Vec<LateUsage> = adjustments
        .iter()
        .flat_map(|(close, read)| {
            read.iter()
                .map(|adjustment| LateUsage { close, adjustment })
        })
        .collect();
    let input = InvoiceInput {
        period,
        closes: &closes,
        plans: plans.as_ref(),
        billing: Billing {
            customers: customers.as_ref(),
            zones: zones.as_ref(),
            adjustments: &[],
        },
        active: &active,
        all_closes: &all,
        late: &late,
    };
    invoice_lines(&input).map_err(|e| Failure::Failed(e.to_string()))
}

const CSV_HEADER: &str = "id,customer_id,kind,plan_id,zone,bytes,included_bytes,sims,sim_days,\
quantity,unit,unit_price,amount,currency,period_start,period_end,adjusts_start,adjusts_end\n";

fn csv(lines: &[InvoiceLine]) -> String {
    let mut text = CSV_HEADER.to_owned();
    for line in lines {
        let json = LineJson::from(line);
        let optional = |v: Option<&str>| csv_field(v.unwrap_or_default());
        let cells = [
            csv_field(json.id),
            csv_field(json.customer_id),
            json.kind.to_owned(),
            optional(json.plan_id),
            optional(json.zone),
            json.bytes.to_string(),
            json.included_bytes.to_string(),
            json.sims.to_string(),
            json.sim_days.map(|d| d.to_string()).unwrap_or_default(),
            json.quantity,
            json.unit.to_owned(),
            json.unit_price.unwrap_or_default(),
            json.amount.unwrap_or_default(),
            optional(json.currency),
            z_time(json.period.start_time),
            z_time(json.period.end_time),
            json.adjusts
                .map(|a| z_time(a.start_time))
                .unwrap_or_default(),
            json.adjusts.map(|a| z_time(a.end_time)).unwrap_or_default(),
        ];
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    text
}

fn table(lines: &[InvoiceLine]) -> String {
    let mut table = Table::new(&[
        ("CUSTOMER", Align::Left),
        ("KIND", Align::Left),
        ("PLAN", Align::Left),
        ("ZONE", Align::Left),
        ("USAGE", Align::Right),
        ("QUANTITY", Align::Right),
        ("UNIT", Align::Left),
        ("UNIT PRICE", Align::Right),
        ("AMOUNT", Align::Right),
        ("CURRENCY", Align::Left),
        ("ID", Align::Left),
    ]);
    for line in lines {
        let usage = match line.sim_days {
            Some(days) => format!("{days} SIM-days"),
            None => human_bytes(line.bytes),
        };
        let kind = match line.adjusts {
            Some(adjusted) => format!("adjustment of {}", z_time(adjusted.start())),
            None => line.kind.name().to_owned(),
        };
        table.row(vec![
            line.customer_id.clone(),
            kind,
            line.plan_id.clone().unwrap_or_else(|| "-".into()),
            line.zone.clone().unwrap_or_else(|| "-".into()),
            usage,
            line.quantity.normalize().to_string(),
            line.unit.to_owned(),
            line.unit_price
                .map_or_else(|| "-".into(), |p| p.to_string()),
            line.amount
                .map_or_else(|| "-".into(), |a| a.normalize().to_string()),
            line.currency.clone().unwrap_or_else(|| "-".into()),
            line.id.clone(),
        ]);
    }
    table.render()
}
