//! What the ledger costs on traffic shaped like production: write and read units, requests
//! and CPU time per record through the kinesis-consumer's handler. How write units are
//! measured: `measured.rs`.

use std::time::{Duration, Instant};

use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::delivery::Outcome;
use kore_test_support::SampleEvent;

use crate::figures;
use crate::measured::{
    Requests, billed_write_units, consume, counted_ledger, counted_ledger_kept, cpu_time, day,
    fleet_windows,
};
use crate::rows::row;

/// On-demand prices in us-east-1 since November 2024, dollars per million request units.
pub const DOLLARS_PER_MILLION_WRITE_UNITS: f64 = 0.625;
pub const DOLLARS_PER_MILLION_READ_UNITS: f64 = 0.125;

/// The cost rows of the table.
pub async fn cost_rows() -> Result<(), String> {
    production_shaped().await?;
    grouped_per_sim().await?;
    migration().await?;
    crate::callbacks::callback_rows().await
}

/// New usage events one per SIM per batch (3,000 events over 300 SIMs), the same records
/// again, and the other provider's copies.
async fn production_shaped() -> Result<(), String> {
    let (ledger, requests) = counted_ledger("one-per-sim").await?;
    let fleet = fleet_windows("a", 300, 10);
    let twilio = twilio_records(&fleet);
    let new = new_events(&ledger, &requests, &fleet).await?;
    let per_new = new.billed;
    figures::record(figures::WCU_PER_NEW_EVENT, per_new);
    row(
        "WCU per new usage event, one per SIM per batch (3,000 events, 300 SIMs, batches of 100)",
        &format!(
            "{per_new:.2} as AWS bills it, of which {:.2} for the closed-day checks ({:.2} as DynamoDB Local reports transactions); {:.3} requests per event",
            new.checks, new.reported, new.requests
        ),
        "≤ 6",
    );
    with_retention(per_new).await?;

    // The same records again, through the same provider and path.
    let (writes, reads, sent) = (
        ledger.table().consumed_write_units(),
        ledger.table().consumed_read_units(),
        requests.total(),
    );
    let cpu = cpu_time();
    consume(&ledger, &twilio, |o| {
        matches!(
            o,
            Outcome::Duplicate {
                new_delivery: false
            }
        )
    })
    .await?;
    let duplicate_cpu = cpu_time() - cpu;
    let n = twilio.len() as f64;
    row(
        "same-path duplicate: WCU / read units / requests",
        &format!(
            "{:.2} / {:.2} / {:.3} ({} BatchGetItem for {} records)",
            (ledger.table().consumed_write_units() - writes) / n,
            (ledger.table().consumed_read_units() - reads) / n,
            (requests.total() - sent) as f64 / n,
            requests.total() - sent,
            twilio.len()
        ),
        "0 / ≤ 1 / a batched lookup only",
    );

    let cpu = Cpu {
        new: new.cpu,
        new_wall: new.wall,
        duplicate: duplicate_cpu,
    };
    other_provider(&ledger, &requests, &fleet, per_new, cpu).await
}

/// Per new usage event: the write units AWS bills, of them the closed-day checks', what
/// DynamoDB Local reports, and requests; and the time the handler took for all of them.
struct NewEvents {
    billed: f64,
    checks: f64,
    reported: f64,
    requests: f64,
    /// CPU and wall time of the handler alone.
    cpu: Duration,
    wall: Duration,
}

/// `fleet` (all new) through the consumer's handler into an empty `ledger`, as Twilio's
/// Kinesis records.
async fn new_events(
    ledger: &UsageLedger,
    requests: &Requests,
    fleet: &[SampleEvent],
) -> Result<NewEvents, String> {
    let twilio = twilio_records(fleet);
    let cpu = cpu_time();
    let started = Instant::now();
    consume(ledger, &twilio, |o| matches!(o, Outcome::New)).await?;
    let (cpu, wall) = (cpu_time() - cpu, started.elapsed());
    let reported = ledger.table().consumed_write_units();
    let sent = requests.total();
    // A ConditionCheck (a closed-day marker) billed as a transactional write of one
    // kilobyte: the most it can cost.
    let checks = 2.0 * requests.condition_checks() as f64;
    let billed = billed_write_units(ledger, fleet, &[day(2024, 11, 3)]).await? + checks;
    let n = fleet.len() as f64;
    Ok(NewEvents {
        billed: billed / n,
        checks: checks / n,
        reported: reported / n,
        requests: sent as f64 / n,
        cpu,
        wall,
    })
}

/// Each event as Twilio's Kinesis sink writes it.
fn twilio_records(fleet: &[SampleEvent]) -> Vec<Vec<u8>> {
    fleet.iter().map(|e| e.twilio_json().into_bytes()).collect()
}

/// The same traffic into a ledger whose event records and booking lists carry `expires_at`
/// (`LEDGER_RETENTION_DAYS`, the recommended days): the attribute must not cost a write
/// unit.
async fn with_retention(kept_forever: f64) -> Result<(), String> {
    let (ledger, requests) =
        counted_ledger_kept("expiring", Some(figures::RECOMMENDED_RETENTION_DAYS)).await?;
    let new = new_events(&ledger, &requests, &fleet_windows("e", 300, 10)).await?;
    figures::record(figures::WCU_PER_NEW_EXPIRING_EVENT, new.billed);
    row(
        &format!(
            "WCU per new usage event with LEDGER_RETENTION_DAYS {} (`expires_at` on), same traffic",
            figures::RECOMMENDED_RETENTION_DAYS
        ),
        &format!(
            "{:.2} as AWS bills it ({kept_forever:.2} kept forever)",
            new.billed
        ),
        "unchanged",
    );
    Ok(())
}

/// The CPU the consumer spent on new events and on same-path duplicates.
struct Cpu {
    new: Duration,
    new_wall: Duration,
    duplicate: Duration,
}

/// The other provider's copies (KORE through the same stream), the read units of the
/// duplicate check, dollars per million events, CPU per record.
async fn other_provider(
    ledger: &UsageLedger,
    requests: &Requests,
    fleet: &[SampleEvent],
    per_new: f64,
    cpu: Cpu,
) -> Result<(), String> {
    let n = fleet.len() as f64;
    let kore: Vec<Vec<u8>> = fleet.iter().map(|e| e.kore_json().into_bytes()).collect();
    let (writes, sent, updates) = (
        ledger.table().consumed_write_units(),
        requests.total(),
        requests.of("UpdateItem"),
    );
    consume(ledger, &kore, |o| {
        matches!(o, Outcome::Duplicate { new_delivery: true })
    })
    .await?;
    let per_copy = (ledger.table().consumed_write_units() - writes) / n;
    row(
        "copy from the other provider: WCU / requests",
        &format!(
            "{per_copy:.2} / {:.3} ({} UpdateItem)",
            (requests.total() - sent) as f64 / n,
            requests.of("UpdateItem") - updates
        ),
        "≤ 2",
    );
    // AWS bills every key of a consistent read, found or not (one unit under 4 KB);
    // DynamoDB Local reports nothing for a key it did not find: the new events' lookups.
    let reported_reads = ledger.table().consumed_read_units();
    let reads_per_delivery = (reported_reads + n) / (3.0 * n);
    figures::record(figures::READ_UNITS_PER_DELIVERY, reads_per_delivery);
    row(
        "read units per delivery (the consistent duplicate check)",
        &format!(
            "{reads_per_delivery:.2} as AWS bills it ({:.2} as DynamoDB Local reports: nothing for keys not found)",
            reported_reads / (3.0 * n)
        ),
        "≤ 1",
    );
    // Per million events, each delivered by both providers: one new write, one copy.
    let dollars = (per_new + per_copy) * DOLLARS_PER_MILLION_WRITE_UNITS
        + 2.0 * reads_per_delivery * DOLLARS_PER_MILLION_READ_UNITS;
    row(
        "dollars per million events, migration traffic (each event from both providers), on-demand us-east-1",
        &format!(
            "${dollars:.2} ({:.2} WCU + {:.2} RCU per event at $0.625 / $0.125 per million)",
            per_new + per_copy,
            2.0 * reads_per_delivery
        ),
        "",
    );
    row(
        "kinesis-consumer CPU per record: new (one per SIM) / same-path duplicate",
        &format!(
            "{:.3} ms / {:.3} ms ({:.1} s wall for the 3,000 new)",
            cpu.new.as_secs_f64() * 1000.0 / n,
            cpu.duplicate.as_secs_f64() * 1000.0 / n,
            cpu.new_wall.as_secs_f64()
        ),
        "",
    );
    Ok(())
}

/// Twenty-five events per SIM per batch: 3,000 events over 120 SIMs.
async fn grouped_per_sim() -> Result<(), String> {
    let days = [day(2024, 11, 3)];
    let (ledger, requests) = counted_ledger("per-sim").await?;
    let mut grouped = fleet_windows("b", 120, 25);
    // Batches of four SIMs' 25 windows each.
    grouped.sort_by(|a, b| a.sim_sid.cmp(&b.sim_sid).then(a.time.cmp(&b.time)));
    consume(&ledger, &twilio_records(&grouped), |o| {
        matches!(o, Outcome::New)
    })
    .await?;
    let checks = 2.0 * requests.condition_checks() as f64;
    let billed = billed_write_units(&ledger, &grouped, &days).await? + checks;
    row(
        "WCU per new usage event, 25 per SIM per batch (3,000 events, 120 SIMs)",
        &format!(
            "{:.2} as AWS bills it ({:.2} as DynamoDB Local reports transactions)",
            billed / grouped.len() as f64,
            ledger.table().consumed_write_units() / grouped.len() as f64
        ),
        "≤ 3",
    );
    Ok(())
}

/// Migration traffic: every event from both providers plus a retry, shuffled.
async fn migration() -> Result<(), String> {
    let (ledger, _) = counted_ledger("migration").await?;
    let fleet = fleet_windows("c", 300, 10);
    let mut rng = fastrand::Rng::with_seed(2024);
    let mut records = Vec::with_capacity(fleet.len() * 3);
    for window in fleet.chunks(300) {
        let mut deliveries: Vec<Vec<u8>> = Vec::with_capacity(900);
        for e in window {
            deliveries.push(e.twilio_json().into_bytes());
            deliveries.push(e.kore_json().into_bytes());
            deliveries.push(e.twilio_json().into_bytes());
        }
        rng.shuffle(&mut deliveries);
        records.extend(deliveries);
    }
    let cpu = cpu_time();
    let started = Instant::now();
    consume(&ledger, &records, |o| {
        matches!(o, Outcome::New | Outcome::Duplicate { .. })
    })
    .await?;
    let spent = cpu_time() - cpu;
    row(
        "kinesis-consumer CPU per record, migration traffic (9,000 records: each of 3,000 events from both providers and once more, shuffled, batches of 100)",
        &format!(
            "{:.3} ms ({:.1} s CPU, {:.1} s wall)",
            spent.as_secs_f64() * 1000.0 / records.len() as f64,
            spent.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
        "≤ 0.3 ms",
    );
    Ok(())
}
