//! `kore-usage usage`: usage records the way the provider's UsageRecords API answers them,
//! from the ledger, in near real time and without its 31-day limit.

use std::process::ExitCode;

use clap::ValueEnum;
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::closes::closed_usage;
use kore_ingest_core::time::z_time;
use kore_ingest_core::usage::{
    Attribution, Granularity, GroupBy, GroupValue, HourUsage, UsageFilters, UsageQuery, UsageRecord,
};

use crate::args::{RangeArgs, ReportFormat};
use crate::close::closed;
use crate::customers::attributes_for;
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, counted, csv_field, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage usage --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage usage --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --group sim --format csv
  kore-usage usage --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --granularity hour \\
      --group network --iso-country DE
  kore-usage usage --start 2024-11-01T00:00:00Z --end 2024-11-08T00:00:00Z --granularity day \\
      --group fleet --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9 --format json

Usage is booked in the UTC hour its window ended (data_session_update_end_time, else the
event's timestamp, else its time), to the account, SIM, fleet, network and country that the
event named. One record per account, time bucket and value of the grouping dimension that
has usage. --start is included and --end excluded; both are UTC in the Z form, on whole
hours (on whole days for --granularity day). Filters combine.";

/// Usage records per account and hour, day or range, grouped and filtered like the
/// provider's UsageRecords API.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Time buckets: hours, days, or one bucket from --start to --end.
    #[arg(long, value_enum, default_value_t = GranularityArg::All)]
    pub granularity: GranularityArg,
    /// One record per value of this dimension (default: no grouping dimension).
    #[arg(long, value_enum)]
    pub group: Option<GroupArg>,
    /// Only usage booked to this account (AC...).
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// Only this SIM's usage (HS...).
    #[arg(long, value_name = "HS..")]
    pub sim: Option<String>,
    /// Only usage booked to this fleet when it happened (HF...).
    #[arg(long, value_name = "HF..")]
    pub fleet: Option<String>,
    /// Only usage on this network (HW...).
    #[arg(long, value_name = "HW..")]
    pub network: Option<String>,
    /// Only usage in this country (ISO 3166 alpha-2, e.g. DE).
    #[arg(long = "iso-country", value_name = "CC")]
    pub iso_country: Option<String>,
    /// Only usage of this customer at its hour (`kore-usage customers`; `-`: of no customer).
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Only usage in this roaming zone (`kore-usage zones`).
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
    /// Output format: a table with a total line, or the records as JSON or CSV.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Answer from the snapshot of the period closed from --start to --end (see
    /// `kore-usage close`), so an invoice comes out byte for byte as it did; the whole period
    /// is one bucket.
    #[arg(long)]
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    Hour,
    Day,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupArg {
    Sim,
    Fleet,
    Network,
    IsoCountry,
    Customer,
    Zone,
}

impl Args {
    /// The query the arguments ask.
    fn query(&self) -> std::result::Result<UsageQuery, String> {
        let granularity = match self.granularity {
            GranularityArg::Hour => Granularity::Hour,
            GranularityArg::Day => Granularity::Day,
            GranularityArg::All => Granularity::All,
        };
        let group = self.group.map(|group| match group {
            GroupArg::Sim => GroupBy::Sim,
            GroupArg::Fleet => GroupBy::Fleet,
            GroupArg::Network => GroupBy::Network,
            GroupArg::IsoCountry => GroupBy::IsoCountry,
            GroupArg::Customer => GroupBy::Customer,
            GroupArg::Zone => GroupBy::Zone,
        });
        let filters = UsageFilters {
            account_sid: self.account.clone(),
            sim_sid: self.sim.clone(),
            fleet_sid: self.fleet.clone(),
            network_sid: self.network.clone(),
            iso_country: self.iso_country.clone(),
            customer_id: self.customer.clone(),
            zone: self.zone.clone(),
        };
        UsageQuery::new(
            self.range.start,
            self.range.end,
            granularity,
            group,
            filters,
        )
        .map_err(|e| e.to_string())
    }
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let mut query = args.query().map_err(Failure::Usage)?;
    let records = if args.closed {
        closed_records(ledger, &args, &query).await?
    } else {
        let (by_customer, by_zone) = (query.wants_customers(), query.wants_zones());
        let attributes = attributes_for(ledger, &mut query, by_customer, by_zone).await?;
        let attribution = Attribution {
            customers: attributes.customers.as_ref(),
            zones: attributes.zones.as_ref(),
        };
        ledger
            .rollups()
            .usage_attributed(&query, attribution)
            .await
            .or_fail(ledger)?
    };
    let text = match args.format {
        ReportFormat::Json => json(&records)?,
        ReportFormat::Csv => csv(args.group, &records),
        ReportFormat::Table if records.is_empty() => format!(
            "No usage recorded from {} to {}.\n",
            z_time(query.start()),
            z_time(query.end())
        ),
        ReportFormat::Table => table(args.group, &records, &query)?,
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The records of a closed period, from its snapshot (checked against its hash first).
async fn closed_records(
    ledger: &UsageLedger,
    args: &Args,
    query: &UsageQuery,
) -> Result<Vec<UsageRecord>> {
    if query.granularity != Granularity::All {
        return Err(Failure::Usage(
            "--closed answers for the whole closed period: use --granularity all".into(),
        ));
    }
    let close = closed(ledger, args.account.as_deref(), query.range()).await?;
    let lines = ledger.closes().snapshot(&close).await.or_fail(ledger)?;
    closed_usage(query, &close, &lines).map_err(|e| Failure::Failed(e.to_string()))
}

/// The grouping dimension's columns (CSV names) and each record's cells for them.
fn group_columns(group: Option<GroupArg>) -> &'static [&'static str] {
    match group {
        None => &[],
        Some(GroupArg::Sim) => &["sim_sid", "sim_iccid", "sim_unique_name"],
        Some(GroupArg::Fleet) => &["fleet_sid"],
        Some(GroupArg::Network) => &["network_sid", "network_name"],
        Some(GroupArg::IsoCountry) => &["iso_country"],
        Some(GroupArg::Customer) => &["customer_id"],
        Some(GroupArg::Zone) => &["zone"],
    }
}

fn group_cells(record: &UsageRecord) -> Vec<String> {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    match &record.group {
        None => vec![],
        Some(GroupValue::Sim {
            sim_sid,
            sim_iccid,
            sim_unique_name,
        }) => vec![sim_sid.clone(), text(sim_iccid), text(sim_unique_name)],
        Some(GroupValue::Fleet { fleet_sid }) => vec![text(fleet_sid)],
        Some(GroupValue::Network {
            network_sid,
            network_name,
        }) => vec![text(network_sid), text(network_name)],
        Some(GroupValue::IsoCountry { iso_country }) => vec![text(iso_country)],
        Some(GroupValue::Customer { customer_id }) => vec![customer_id.clone()],
        Some(GroupValue::Zone { zone }) => vec![zone.clone()],
    }
}

fn csv(group: Option<GroupArg>, records: &[UsageRecord]) -> String {
    let mut header = vec!["account_sid", "start_time", "end_time"];
    header.extend(group_columns(group));
    header.extend(["data_upload", "data_download", "data_total", "usage_events"]);
    let mut out = header.join(",") + "\n";
    for record in records {
        let mut cells = vec![
            record.account_sid.clone().unwrap_or_default(),
            z_time(record.period.start_time),
            z_time(record.period.end_time),
        ];
        cells.extend(group_cells(record));
        let mut line: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        line.extend(
            [
                record.data_upload,
                record.data_download,
                record.data_total,
                record.usage_events,
            ]
            .map(|n| n.to_string()),
        );
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn table(group: Option<GroupArg>, records: &[UsageRecord], query: &UsageQuery) -> Result<String> {
    let mut columns = vec![
        ("ACCOUNT", Align::Left),
        ("START", Align::Left),
        ("END", Align::Left),
    ];
    let upper: Vec<String> = group_columns(group)
        .iter()
        .map(|c| c.to_ascii_uppercase())
        .collect();
    columns.extend(upper.iter().map(|c| (c.as_str(), Align::Left)));
    columns.extend([
        ("UPLOAD", Align::Right),
        ("DOWNLOAD", Align::Right),
        ("TOTAL", Align::Right),
        ("EVENTS", Align::Right),
    ]);
    let mut table = Table::new(&columns);
    let mut sum = HourUsage::default();
    for record in records {
        let numbers = [
            record.data_upload,
            record.data_download,
            record.data_total,
            record.usage_events,
        ];
        sum = sum.plus(record.counts(), || {
            ("the table's total".into(), query.range().to_string())
        })?;
        let mut cells = vec![
            record.account_sid.clone().unwrap_or_else(|| "-".into()),
            z_time(record.period.start_time),
            z_time(record.period.end_time),
        ];
        cells.extend(
            group_cells(record)
                .into_iter()
                .map(|c| if c.is_empty() { "-".into() } else { c }),
        );
        cells.extend(numbers.map(|n| n.to_string()));
        table.row(cells);
    }
    let mut footer = vec![format!(
        "TOTAL ({})",
        counted(records.len(), "record", "records")
    )];
    footer.extend(std::iter::repeat_n(
        String::new(),
        2 + group_columns(group).len(),
    ));
    footer.extend(
        [
            sum.usage.upload,
            sum.usage.download,
            sum.usage.total,
            sum.events,
        ]
        .map(|n| n.to_string()),
    );
    table.footer(footer);
    Ok(table.render())
}
