//! `kore-usage customers`, `zones` and `plans`: the files that say whose usage it is, which
//! roaming zone it is in and what it costs, applied whole (a bad file is refused whole,
//! naming the line or field and the reason), and read back for the queries that use them.

use std::process::ExitCode;

use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::customers::Customers;
use kore_ingest_core::plans::{AllowanceScope, Plans, RoundingScope};
use kore_ingest_core::time::z_time;
use kore_ingest_core::usage::{QueryError, UsageQuery};
use kore_ingest_core::zones::Zones;
use serde::Serialize;

use crate::args::ReportFormat;
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, counted, json, print};

/// The names the three files are kept under in the ledger.
const CUSTOMERS: &str = "customers";
const ZONES: &str = "zones";
const PLANS: &str = "plans";

const CUSTOMERS_EXAMPLES: &str = "\
Examples:
  kore-usage customers apply customers.csv
  kore-usage customers list --format csv

The file (a header, then one row per assignment):
  customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to
  acme,,HF0123456789abcdef0123456789abcdef,,iot-eu,2024-11-01T00:00:00Z,
  globex,HS0123456789abcdef0123456789abcdef,,,,2024-11-15T00:00:00Z,2024-12-01T00:00:00Z
Exactly one of sim_sid, fleet_sid, account_sid per row; times UTC in the Z form; an empty
valid_to is open, an empty plan_id no plan. Usage goes to the most specific row valid at the
hour it is booked in (SIM over fleet over account); usage no row assigns is customer `-`.
Applying a file replaces the whole mapping; two rows of one subject whose validity overlaps
are refused, naming both lines.";

/// Which customer each SIM's usage belongs to, over time.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = CUSTOMERS_EXAMPLES)]
pub enum CustomersCommand {
    /// Replace the mapping with the rows of a CSV file.
    Apply(FileArgs),
    /// The mapping in force, in file order.
    List(ListArgs),
}

const ZONES_EXAMPLES: &str = "\
Examples:
  kore-usage zones apply zones.json
  kore-usage zones list --format json

The file:
  {\"zones\": [{\"name\": \"EU\", \"countries\": [\"DE\", \"FR\"]},
             {\"name\": \"US-home\", \"networks\": [\"HW0123456789abcdef0123456789abcdef\"]},
             {\"name\": \"ROW\", \"default\": true}]}
A network match wins over a country match; usage with neither goes to the one default zone.
Applying a file replaces the zones.";

/// The roaming zones usage is grouped into.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = ZONES_EXAMPLES)]
pub enum ZonesCommand {
    /// Replace the zones with those of a JSON file.
    Apply(FileArgs),
    /// The zones in force.
    List(ListArgs),
}

const PLANS_EXAMPLES: &str = "\
Examples:
  kore-usage plans apply plans.json
  kore-usage plans list --format json

The file (docs/REFERENCE.md, section `plans`, has the whole contract):
  {\"plans\": [{\"id\": \"iot-eu\", \"currency\": \"EUR\", \"unit\": \"MB\",
               \"rounding\": {\"increment\": \"1\", \"scope\": \"sim\"},
               \"prices\": {\"EU\": \"0.02\", \"ROW\": \"0.50\"},
               \"allowance\": {\"bytes\": 500000000, \"per\": \"customer\"},
               \"sim_fee\": \"1.00\"}]}
Prices are decimals in strings, never floats; quantities are rounded up. Applying a file
replaces the plans.";

/// What usage costs: the plans customers rows name.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = PLANS_EXAMPLES)]
pub enum PlansCommand {
    /// Replace the plans with those of a JSON file.
    Apply(FileArgs),
    /// The plans in force.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format (`json`, and for customers `csv`, print a file `apply` takes back).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// The customers mapping in force; `None` if none was applied.
pub async fn customers_in_force(ledger: &UsageLedger) -> Result<Option<Customers>> {
    let Some(document) = ledger.documents().get(CUSTOMERS).await.or_fail(ledger)? else {
        return Ok(None);
    };
    Customers::parse_csv(&document.text).map(Some).map_err(|e| {
        Failure::Failed(format!(
            "the customers mapping in the ledger is unreadable: {e}"
        ))
    })
}

/// The customers and zones a query groups or filters by.
#[derive(Debug, Default)]
pub struct Attributes {
    pub customers: Option<Customers>,
    pub zones: Option<Zones>,
}

/// Reads what a query needs of the customers (`customers`: it groups or filters by them)
/// and the zones (which must have been applied), and sets on `query` the days to read hour
/// by hour: those a customer row starts or ends in, so each hour goes to its own customer.
pub async fn attributes_for(
    ledger: &UsageLedger,
    query: &mut UsageQuery,
    customers: bool,
    zones: bool,
) -> Result<Attributes> {
    let customers = if customers {
        customers_in_force(ledger).await?
    } else {
        None
    };
    if let Some(customers) = &customers {
        query.hourly_days = customers.changing_days(&query.days());
    }
    let zones = if zones {
        Some(
            zones_in_force(ledger)
                .await?
                .ok_or_else(|| Failure::Failed(QueryError::NoZones.to_string()))?,
        )
    } else {
        None
    };
    Ok(Attributes { customers, zones })
}

/// The zones in force; `None` if none were applied.
pub async fn zones_in_force(ledger: &UsageLedger) -> Result<Option<Zones>> {
    let Some(document) = ledger.documents().get(ZONES).await.or_fail(ledger)? else {
        return Ok(None);
    };
    Zones::parse_json(&document.text)
        .map(Some)
        .map_err(|e| Failure::Failed(format!("the zones in the ledger are unreadable: {e}")))
}

fn read(file: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(file)
        .map_err(|e| Failure::Failed(format!("cannot read {}: {e}", file.display())))
}

/// Puts a file in force; a concurrent apply that won is a failure to retry.
async fn put(ledger: &UsageLedger, name: &str, text: &str) -> Result<()> {
    if ledger.documents().put(name, text).await.or_fail(ledger)? {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "another apply of the {name} happened meanwhile; nothing of this one is in force: apply again"
        )))
    }
}

pub async fn customers(ledger: &UsageLedger, command: CustomersCommand) -> Result<ExitCode> {
    match command {
        CustomersCommand::Apply(args) => {
            let name = args.file.display();
            let customers = Customers::parse_csv(&read(&args.file)?).map_err(|e| {
                Failure::Failed(format!("{name} is refused, the mapping is unchanged: {e}"))
            })?;
            let text = customers
                .to_csv()
                .map_err(|e| Failure::Failed(e.to_string()))?;
            put(ledger, CUSTOMERS, &text).await?;
            print(&format!(
                "{} applied from {name}\n",
                counted(customers.assignments().len(), "row", "rows")
            ))?;
        }
        CustomersCommand::List(args) => {
            let customers = customers_in_force(ledger).await?.unwrap_or_default();
            print(&customers_text(&customers, args.format)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `customers list --format json`.
#[derive(Debug, Serialize)]
struct Row<'a> {
    customer_id: &'a str,
    sim_sid: Option<&'a str>,
    fleet_sid: Option<&'a str>,
    account_sid: Option<&'a str>,
    plan_id: Option<&'a str>,
    valid_from: String,
    valid_to: Option<String>,
}

fn customers_text(customers: &Customers, format: ReportFormat) -> Result<String> {
    let rows: Vec<Row> = customers
        .assignments()
        .into_iter()
        .map(|a| {
            let (sim_sid, fleet_sid, account_sid) = a.subject.columns();
            Row {
                customer_id: &a.customer_id,
                sim_sid,
                fleet_sid,
                account_sid,
                plan_id: a.plan_id.as_deref(),
                valid_from: z_time(a.valid_from),
                valid_to: a.valid_to.map(z_time),
            }
        })
        .collect();
    Ok(match format {
        ReportFormat::Json => json(&rows)?,
        ReportFormat::Csv => customers
            .to_csv()
            .map_err(|e| Failure::Failed(e.to_string()))?,
        ReportFormat::Table if rows.is_empty() => "No customers mapping applied.\n".into(),
        ReportFormat::Table => {
            let mut table = Table::new(&[
                ("CUSTOMER", Align::Left),
                ("SUBJECT", Align::Left),
                ("PLAN", Align::Left),
                ("FROM", Align::Left),
                ("TO", Align::Left),
            ]);
            for a in customers.assignments() {
                table.row(vec![
                    crate::output::one_line(&a.customer_id),
                    a.subject.to_string(),
                    a.plan_id.clone().unwrap_or_else(|| "-".into()),
                    z_time(a.valid_from),
                    a.valid_to.map_or_else(|| "-".into(), z_time),
                ]);
            }
            table.render()
        }
    })
}

pub async fn zones(ledger: &UsageLedger, command: ZonesCommand) -> Result<ExitCode> {
    match command {
        ZonesCommand::Apply(args) => {
            let name = args.file.display();
            let zones = Zones::parse_json(&read(&args.file)?).map_err(|e| {
                Failure::Failed(format!("{name} is refused, the zones are unchanged: {e}"))
            })?;
            put(ledger, ZONES, &zones.to_json().to_string()).await?;
            print(&format!(
                "{} applied from {name}\n",
                counted(zones.zones().len(), "zone", "zones")
            ))?;
        }
        ZonesCommand::List(args) => {
            let text = match (zones_in_force(ledger).await?, args.format) {
                (None, ReportFormat::Table) => "No zones applied.\n".to_owned(),
                (None, _) => json(&serde_json::json!({ "zones": [] }))?,
                (Some(zones), ReportFormat::Table) => {
                    let mut table = Table::new(&[
                        ("ZONE", Align::Left),
                        ("NETWORKS", Align::Left),
                        ("COUNTRIES", Align::Left),
                    ]);
                    for zone in zones.zones() {
                        let list = |v: &[String]| {
                            if v.is_empty() {
                                "-".into()
                            } else {
                                v.join(",")
                            }
                        };
                        let name = if zone.default {
                            format!("{} (default)", crate::output::one_line(&zone.name))
                        } else {
                            crate::output::one_line(&zone.name)
                        };
                        table.row(vec![name, list(&zone.networks), list(&zone.countries)]);
                    }
                    table.render()
                }
                (Some(zones), _) => json(&zones.to_json())?,
            };
            print(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The plans in force; `None` if none were applied.
pub async fn plans_in_force(ledger: &UsageLedger) -> Result<Option<Plans>> {
    let Some(document) = ledger.documents().get(PLANS).await.or_fail(ledger)? else {
        return Ok(None);
    };
    Plans::parse_json(&document.text)
        .map(Some)
        .map_err(|e| Failure::Failed(format!("the plans in the ledger are unreadable: {e}")))
}

pub async fn plans(ledger: &UsageLedger, command: PlansCommand) -> Result<ExitCode> {
    match command {
        PlansCommand::Apply(args) => {
            let name = args.file.display();
            let plans = Plans::parse_json(&read(&args.file)?).map_err(|e| {
                Failure::Failed(format!("{name} is refused, the plans are unchanged: {e}"))
            })?;
            put(ledger, PLANS, &plans.to_json().to_string()).await?;
            print(&format!(
                "{} applied from {name}\n",
                counted(plans.ids().len(), "plan", "plans")
            ))?;
        }
        PlansCommand::List(args) => {
            let text = match (plans_in_force(ledger).await?, args.format) {
                (None, ReportFormat::Table) => "No plans applied.\n".to_owned(),
                (None, _) => json(&serde_json::json!({ "plans": [] }))?,
                (Some(plans), ReportFormat::Table) => plans_table(&plans),
                (Some(plans), _) => json(plans.to_json())?,
            };
            print(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plans_table(plans: &Plans) -> String {
    let mut table = Table::new(&[
        ("PLAN", Align::Left),
        ("CURRENCY", Align::Left),
        ("UNIT", Align::Left),
        ("ROUNDING", Align::Left),
        ("PRICES", Align::Left),
        ("ALLOWANCE", Align::Left),
        ("SIM FEE", Align::Right),
    ]);
    for id in plans.ids() {
        let Some(plan) = plans.get(id) else { continue };
        let prices = plan
            .prices
            .iter()
            .map(|(zone, price)| format!("{zone} {price}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rounding = match plan.rounding {
            RoundingScope::Line => format!("up to {} per line", plan.increment),
            RoundingScope::Sim => format!("up to {} per SIM", plan.increment),
        };
        let allowance = match plan.allowance {
            None => "-".to_owned(),
            Some((bytes, AllowanceScope::Sim)) => format!("{bytes} B per SIM"),
            Some((bytes, AllowanceScope::Customer)) => format!("{bytes} B per SIM, pooled"),
        };
        table.row(vec![
            crate::output::one_line(id),
            plan.currency.clone(),
            plan.unit.name().into(),
            rounding,
            if prices.is_empty() {
                "-".into()
            } else {
                crate::output::one_line(&prices)
            },
            allowance,
            plan.sim_fee
                .map_or_else(|| "-".into(), |fee| fee.to_string()),
        ]);
    }
    table.render()
}
