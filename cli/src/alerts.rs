//! `kore-usage alerts`: apply a rules file, show the rules in force, list the alerts raised.

use std::process::ExitCode;

use kore_ingest_aws::ledger::{ApplyError, UsageLedger};
use kore_ingest_core::alerts::{Alert, Per, Rule, RuleKind, Rules};

use crate::args::{Format, RangeArgs};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, counted, human_bytes, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage alerts apply rules.json
  kore-usage alerts rules --format json
  kore-usage alerts list --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --rule fleet-a-monthly

A rules file (docs/REFERENCE.md, section `alerts`, has the whole contract):
  {\"rules\": [
    {\"id\": \"fleet-a-monthly\", \"kind\": \"usage\", \"fleet\": \"HF..\", \"per\": \"sim\",
     \"period\": \"month\", \"thresholds\": [800000000, 1000000000]},
    {\"id\": \"acct-daily\", \"kind\": \"usage\", \"account\": \"AC..\", \"per\": \"total\",
     \"period\": \"day\", \"thresholds\": [50000000000]},
    {\"id\": \"silent\", \"kind\": \"silence\", \"fleet\": \"HF..\", \"after_minutes\": 180},
    {\"id\": \"quality\", \"kind\": \"quality\"}
  ]}
Applying a file replaces the rules in force; a bad file is refused whole, naming the field
and the reason. Each alert is raised once per rule, subject, period and threshold, stored,
and put on the stack's event bus.";

/// Alert rules and the alerts they raised.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum Command {
    /// Replace the rules in force with those of a JSON file.
    Apply(ApplyArgs),
    /// The rules in force.
    Rules(RulesArgs),
    /// The alerts whose period starts in a range (by period start).
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The rules file (JSON).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// Output format (`json` is a rules file `apply` takes back).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only the alerts of this rule.
    #[arg(long, value_name = "ID")]
    pub rule: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn run(ledger: &UsageLedger, command: Command) -> Result<ExitCode> {
    match command {
        Command::Apply(args) => apply(ledger, args).await,
        Command::Rules(args) => rules(ledger, args).await,
        Command::List(args) => list(ledger, args).await,
    }
}

async fn apply(ledger: &UsageLedger, args: ApplyArgs) -> Result<ExitCode> {
    let name = args.file.display();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::Failed(format!("cannot read {name}: {e}")))?;
    let refused = |e: &dyn std::fmt::Display| {
        Failure::Failed(format!("{name} is refused, no rule applied: {e}"))
    };
    let rules = Rules::parse(&text).map_err(|e| refused(&e))?;
    match ledger.alerts().apply(&rules).await {
        Ok(()) => {}
        Err(ApplyError::Refused(e)) => return Err(refused(&e)),
        Err(ApplyError::Ledger(e)) => return Err(e).or_fail(ledger),
    }
    print(&format!(
        "{} applied from {name}\n",
        counted(rules.as_slice().len(), "rule", "rules")
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn rules(ledger: &UsageLedger, args: RulesArgs) -> Result<ExitCode> {
    let rules = ledger.alerts().rules().await.or_fail(ledger)?;
    let text = match args.format {
        Format::Json => json(&rules.to_json())?,
        Format::Table if rules.is_empty() => "No rules in force.\n".into(),
        Format::Table => {
            let mut table = Table::new(&[
                ("RULE", Align::Left),
                ("KIND", Align::Left),
                ("SCOPE", Align::Left),
                ("WHEN", Align::Left),
            ]);
            for rule in rules.as_slice() {
                table.row(vec![
                    rule.id.clone(),
                    rule.kind_name().into(),
                    rule.scope.to_string(),
                    when(rule),
                ]);
            }
            table.render()
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// What makes a rule raise an alert, in a few words.
fn when(rule: &Rule) -> String {
    match &rule.kind {
        RuleKind::Usage {
            per,
            period,
            thresholds,
        } => {
            let each = match per {
                Per::Sim => "each SIM's",
                Per::Total => "the scope's",
            };
            let period = period.name();
            let list: Vec<String> = thresholds
                .as_slice()
                .iter()
                .map(|t| human_bytes(*t))
                .collect();
            format!("{each} {period} reaches {}", list.join(", "))
        }
        RuleKind::Silence { after_minutes } => {
            format!("a SIM sends nothing for {after_minutes} min")
        }
        RuleKind::Quality => "data_total is not upload + download".into(),
    }
}

async fn list(ledger: &UsageLedger, args: ListArgs) -> Result<ExitCode> {
    let range = args.range.range()?;
    let alerts = ledger
        .alerts()
        .list(&range, args.rule.as_deref())
        .await
        .or_fail(ledger)?;
    let text = match args.format {
        Format::Json => json(&alerts)?,
        Format::Table if alerts.is_empty() => "No alerts in the range.\n".into(),
        Format::Table => {
            let mut table = Table::new(&[
                ("PERIOD START", Align::Left),
                ("RULE", Align::Left),
                ("KIND", Align::Left),
                ("SUBJECT", Align::Left),
                ("THRESHOLD", Align::Right),
                ("VALUE", Align::Right),
                ("CROSSED BY", Align::Left),
                ("RAISED AT", Align::Left),
            ]);
            for alert in &alerts {
                table.row(row(alert));
            }
            table.render() + &counted(alerts.len(), "alert", "alerts") + "\n"
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn row(alert: &Alert) -> Vec<String> {
    let threshold = alert.threshold.map(|t| t.to_string()).unwrap_or_default();
    vec![
        alert.period_start.clone(),
        alert.rule_id.clone(),
        alert.kind.name().to_owned(),
        alert.subject.clone(),
        threshold,
        alert.value.to_string(),
        alert.crossed_by.clone().unwrap_or_default(),
        alert.raised_at.clone(),
    ]
}
