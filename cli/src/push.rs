//! `kore-usage push`: a closed period's invoice lines sent to Stripe Billing meter events or
//! to Lago, each exactly once. The ledger records each line before its request and the
//! answer after it (`Pushes`); when a line is sent is `kore_ingest_core::push::step`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_aws::secrets::read_secret;
use kore_ingest_core::invoice::InvoiceLine;
use kore_ingest_core::push::{
    Answer, Body, PushState, Request, Step, Target, answer, request, step,
};
use kore_ingest_core::time::{TimeRange, z_time};
use serde::Serialize;

use crate::args::{Format, RangeArgs, parse_z_time};
use crate::failure::{Failure, OrFail, Result};
use crate::invoice::lines_of;
use crate::output::{Align, Table, json, one_line, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage push --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --to stripe --dry-run
  STRIPE_API_KEY=sk_live_... kore-usage push --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --to stripe
  LAGO_API_KEY=... kore-usage push --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --to lago

Sends the quantities of `kore-usage invoice` for the closed period: to Stripe as meter events
(identifier = the line id, payload[stripe_customer_id] = its customer_id, payload[value] = its
quantity, event_name = <prefix>_data_<zone> or <prefix>_sim_fee), or to Lago as events
(transaction_id = the line id, external_subscription_id = its customer_id, code as Stripe's
event_name). The ledger records each line before it is sent and the answer after: running
push again sends only what is not recorded as delivered, so an interrupted push is finished
by running it again. Stripe forgets identifiers after about 24 hours: a line first sent longer
ago than that without an answer is reported, not sent again; so is a line sent before that is
no longer an invoice line, or that now has another quantity. Lines of customer `-` (usage no row assigns)
are never sent.

Where to: STRIPE_API_BASE (default https://api.stripe.com), LAGO_API_URL (default
https://api.getlago.com). Keys: STRIPE_API_KEY or LAGO_API_KEY, or the Secrets Manager secret
STRIPE_API_KEY_SECRET_ARN or LAGO_API_KEY_SECRET_ARN names; never a flag. Meter names start
with BILLING_EVENT_PREFIX (default kore). Stripe takes events up to 35 days old: a period
pushed later needs --timestamp now (its usage then lands in the current billing period).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToArg {
    Stripe,
    Lago,
}

/// Send a closed period's invoice lines to the billing system, each once.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// The billing system.
    #[arg(long, value_enum)]
    pub to: ToArg,
    /// Print what would be sent; send and record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The time the lines are booked at (default: the period's last second; `now` for a
    /// period older than Stripe's 35 days).
    #[arg(long, value_name = "TIME|now")]
    pub timestamp: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Where and how to send.
struct Endpoint {
    base: String,
    key: String,
    prefix: String,
}

const STRIPE_API_BASE: &str = "https://api.stripe.com";
const LAGO_API_URL: &str = "https://api.getlago.com";
const DEFAULT_PREFIX: &str = "kore";
/// Attempts of a request the system asks to retry (429, 5xx, no answer).
const ATTEMPTS: u32 = 4;

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

async fn endpoint(target: Target, dry_run: bool) -> Result<Endpoint> {
    let (base_var, default, key_var, secret_var) = match target {
        Target::Stripe => (
            "STRIPE_API_BASE",
            STRIPE_API_BASE,
            "STRIPE_API_KEY",
            "STRIPE_API_KEY_SECRET_ARN",
        ),
        Target::Lago => (
            "LAGO_API_URL",
            LAGO_API_URL,
            "LAGO_API_KEY",
            "LAGO_API_KEY_SECRET_ARN",
        ),
    };
    let base = variable(base_var).unwrap_or_else(|| default.to_owned());
    let key = match (variable(key_var), variable(secret_var)) {
        (Some(key), _) => key,
        (None, Some(arn)) => {
            let client = aws_sdk_secretsmanager::Client::new(&sdk_config(Caller::Tool).await);
            read_secret(&client, secret_var, &arn)
                .await
                .map_err(|e| Failure::Failed(e.to_string()))?
                .trim()
                .to_owned()
        }
        (None, None) if dry_run => String::new(),
        (None, None) => {
            return Err(Failure::Usage(format!(
                "no API key: set {key_var}, or {secret_var} to a Secrets Manager secret holding it"
            )));
        }
    };
    Ok(Endpoint {
        base: base.trim_end_matches('/').to_owned(),
        key,
        prefix: variable("BILLING_EVENT_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
    })
}

/// What became of one line; the JSON keys are a contract.
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    id: &'a str,
    customer_id: &'a str,
    kind: &'static str,
    zone: Option<&'a str>,
    quantity: String,
    /// `sent`, `already_sent`, `would_send`, `refused`, `unanswered`, `changed`,
    /// `unconfirmed`, `superseded` or `no_customer`.
    outcome: &'static str,
    status: Option<u16>,
    detail: Option<String>,
}

/// Whether an outcome leaves the line undelivered as it should be.
fn undelivered(outcome: &str) -> bool {
    matches!(
        outcome,
        "refused" | "unanswered" | "changed" | "unconfirmed" | "superseded"
    )
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let period = args.range.whole_days()?;
    let target = match args.to {
        ToArg::Stripe => Target::Stripe,
        ToArg::Lago => Target::Lago,
    };
    let stamp = match args.timestamp.as_deref() {
        None => last_second(period),
        Some("now") => Utc::now(),
        Some(text) => parse_z_time(text).map_err(Failure::Usage)?,
    };
    let lines = lines_of(ledger, period).await?;
    let endpoint = endpoint(target, args.dry_run).await?;
    // Every request is made before any is sent: a line that cannot be sent stops the push
    // before anything of it went out.
    let mut requests: BTreeMap<&str, Request> = BTreeMap::new();
    for line in &lines {
        if line.customer_id != kore_ingest_core::customers::UNASSIGNED {
            let made = request(target, &endpoint.prefix, line, stamp)
                .map_err(|e| Failure::Failed(e.to_string()))?;
            requests.insert(&line.id, made);
        }
    }
    let records = ledger
        .pushes()
        .of_period(target, &period)
        .await
        .or_fail(ledger)?;
    let records: BTreeMap<&str, _> = records.iter().map(|r| (r.line_id.as_str(), r)).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Failure::Failed(format!("cannot make an HTTP client: {e}")))?;
    let mut outcomes = Vec::new();
    for line in &lines {
        let record = records.get(line.id.as_str()).copied();
        let decided = step(target, line, record, Utc::now());
        let mut outcome = Outcome {
            id: &line.id,
            customer_id: &line.customer_id,
            kind: line.kind.name(),
            zone: line.zone.as_deref(),
            quantity: line.quantity.normalize().to_string(),
            outcome: "",
            status: record.and_then(|r| r.status),
            detail: None,
        };
        match (decided, requests.get(line.id.as_str())) {
            (Step::Send, Some(request)) if args.dry_run => {
                outcome.outcome = "would_send";
                outcome.detail = Some(format!("{}{}", endpoint.base, request.path));
            }
            (Step::Send, Some(request)) => {
                send_line(ledger, &client, &endpoint, target, &period, line, request)
                    .await
                    .map(|(name, status, detail)| {
                        (outcome.outcome, outcome.status, outcome.detail) = (name, status, detail);
                    })?;
            }
            (Step::AlreadySent, _) => outcome.outcome = "already_sent",
            (Step::Changed { sent }, _) => {
                outcome.outcome = "changed";
                outcome.detail = Some(format!(
                    "sent as {sent} before: the period changed after it was pushed"
                ));
            }
            (Step::Unconfirmed { since }, _) => {
                outcome.outcome = "unconfirmed";
                outcome.detail = Some(format!(
                    "sent at {} with no answer recorded, longer ago than Stripe remembers identifiers: check the meter's events before sending it by hand",
                    z_time(since)
                ));
            }
            (Step::NoCustomer | Step::Send, _) => outcome.outcome = "no_customer",
        }
        outcomes.push(outcome);
    }
    // Lines sent for this period that the invoice no longer has (the customers or zones
    // changed since): the billing system may count them beside their successors.
    for record in records.values() {
        if record.state != PushState::Refused && !lines.iter().any(|l| l.id == record.line_id) {
            outcomes.push(Outcome {
                id: &record.line_id,
                customer_id: &record.customer_id,
                kind: "-",
                zone: None,
                quantity: record.quantity.clone(),
                outcome: "superseded",
                status: record.status,
                detail: Some(format!(
                    "{} before, and no longer an invoice line: the mapping changed after the push",
                    record.state.name()
                )),
            });
        }
    }
    let text = match args.format {
        Format::Json => json(&outcomes)?,
        Format::Table => table(&outcomes, target, period, args.dry_run),
    };
    print(&text)?;
    let failed = outcomes.iter().filter(|o| undelivered(o.outcome)).count();
    if failed > 0 {
        return Err(Failure::Failed(format!(
            "{failed} of {} lines are not delivered as they are: see each line's outcome",
            outcomes.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one line, recording it before and the answer after: its outcome, status and detail.
async fn send_line(
    ledger: &UsageLedger,
    client: &reqwest::Client,
    endpoint: &Endpoint,
    target: Target,
    period: &TimeRange,
    line: &InvoiceLine,
    request: &Request,
) -> Result<(&'static str, Option<u16>, Option<String>)> {
    let quantity = line.quantity.normalize().to_string();
    let pushes = ledger.pushes();
    pushes
        .sending(
            target,
            period,
            &line.id,
            &line.customer_id,
            &quantity,
            Utc::now(),
        )
        .await
        .or_fail(ledger)?;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let (status, should_retry, body) = match call(client, endpoint, target, request).await {
            Ok(answered) => answered,
            Err(error) => {
                last = error;
                continue;
            }
        };
        let state = match answer(target, status, should_retry.as_deref(), &body) {
            Answer::Accepted => (PushState::Sent, "sent"),
            Answer::AlreadyDelivered => (PushState::Sent, "already_sent"),
            Answer::Refused => (PushState::Refused, "refused"),
            Answer::Retry => {
                last = format!("{status}: {}", one_line(&body));
                continue;
            }
        };
        let clean = last.is_empty();
        pushes
            .answered(target, period, &line.id, state.0, status, &body, clean)
            .await
            .or_fail(ledger)?;
        let detail = (state.0 == PushState::Refused).then(|| one_line(&body));
        return Ok((state.1, Some(status), detail));
    }
    Ok(("unanswered", None, Some(last)))
}

/// One request: the status, Stripe's `Stripe-Should-Retry` header and the body.
async fn call(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    target: Target,
    request: &Request,
) -> std::result::Result<(u16, Option<String>, String), String> {
    let url = format!("{}{}", endpoint.base, request.path);
    let mut outgoing = client.post(&url);
    outgoing = match target {
        Target::Stripe => outgoing.basic_auth(&endpoint.key, Some("")),
        Target::Lago => outgoing.bearer_auth(&endpoint.key),
    };
    outgoing = match &request.body {
        Body::Form(form) => outgoing
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            ),
        Body::Json(body) => outgoing
            .header("content-type", "application/json")
            .body(body.to_string()),
    };
    let response = outgoing.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let should_retry = response
        .headers()
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, should_retry, body))
}

fn table(outcomes: &[Outcome], target: Target, period: TimeRange, dry_run: bool) -> String {
    let mut table = Table::new(&[
        ("CUSTOMER", Align::Left),
        ("KIND", Align::Left),
        ("ZONE", Align::Left),
        ("QUANTITY", Align::Right),
        ("OUTCOME", Align::Left),
        ("ID", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for o in outcomes {
        table.row(vec![
            o.customer_id.to_owned(),
            o.kind.to_owned(),
            o.zone.unwrap_or("-").to_owned(),
            o.quantity.clone(),
            o.outcome.to_owned(),
            o.id.to_owned(),
            o.detail.clone().unwrap_or_default(),
        ]);
    }
    let what = if dry_run { "Would push" } else { "Pushed" };
    format!(
        "{what} {} to {}:\n{}",
        period_text(period),
        target.name(),
        table.render()
    )
}

fn period_text(period: TimeRange) -> String {
    format!("{} to {}", z_time(period.start()), z_time(period.end()))
}

/// The moment a period's lines are booked at by default: its last second.
fn last_second(period: TimeRange) -> DateTime<Utc> {
    period.end() - chrono::Duration::seconds(1)
}
