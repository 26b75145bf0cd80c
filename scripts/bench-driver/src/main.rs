//! `ingest-bench`: the measurements of `scripts/bench` that need the local stack or a built
//! function. Each prints markdown table rows (`| what | measured | target |`) on stdout.
//!
//! - `ingest-bench storage KORE_USAGE`: against the DynamoDB Local at
//!   `AWS_ENDPOINT_URL_DYNAMODB`, the ceiling (conditional `PutItem`s per second from the SDK
//!   alone), the kinesis-consumer's handler on 1,000- and 10,000-record batches, the
//!   webhook's handler on signed 50-event batches, the write units of a new event and of
//!   duplicates, the alerts, and a month of 10,000 SIMs through `usage` and through the
//!   `KORE_USAGE` binary's `report-html`. The handlers run in this
//!   process, built with the release profile, so what is timed is our code and DynamoDB
//!   Local, not the Lambda emulator.
//! - `ingest-bench export KORE_USAGE`: `export`'s memory on 100,000 events, what the ledger
//!   stores per event, and the archive's seal of them.
//! - `ingest-bench cost-table FIGURES`: the README's cost table, from the figures the
//!   commands above kept in the file `BENCH_FIGURES` named (`figures.rs`).
//! - `ingest-bench startup BINARY...`: start-to-ready of each function binary: from spawning
//!   it to its first request for an invocation on a stand-in Runtime API (median of 15).

mod alerts;
mod archive;
mod callbacks;
mod cost;
mod cost_table;
mod export;
mod figures;
mod measured;
mod month;
mod rows;
mod stored;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use kore_ingest_core::config::{Env, vars};
use kore_ingest_core::delivery::Outcome;
use kore_test_support::{SampleEvent, fresh_ledger, kinesis_event, kore_batch};
use rows::row;
use webhook::{Webhook, WebhookConfig};

const SIMS: usize = 100;
const CEILING_PUTS: usize = 10_000;
const WEBHOOK_REQUESTS: usize = 100;
const PUBLIC_URL: &str = "https://bench.example.com";
const KORE_SECRET: &str = "bench-secret";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, [kore_usage])) if command == "storage" => storage(kore_usage),
        // One part of `storage` alone, to look at it quickly.
        Some((command, rest)) if command == "cost" && rest.is_empty() => {
            on_one_thread(cost::cost_rows())
        }
        Some((command, rest)) if command == "alerts" && rest.is_empty() => {
            on_one_thread(alerts::alert_rows())
        }
        Some((command, rest)) if command == "month" && rest.len() <= 1 => {
            on_one_thread(month::month_query_row(rest.first().map(String::as_str)))
        }
        Some((command, [kore_usage])) if command == "export" => {
            on_one_thread(export::export_memory_row(kore_usage))
        }
        Some((command, [figures])) if command == "cost-table" => cost_table::print(figures),
        Some((command, binaries)) if command == "startup" && !binaries.is_empty() => {
            startup(binaries)
        }
        _ => {
            eprintln!(
                "usage: ingest-bench storage KORE_USAGE | ingest-bench cost | ingest-bench alerts | ingest-bench month [KORE_USAGE] | ingest-bench export KORE_USAGE | ingest-bench cost-table FIGURES | ingest-bench startup BINARY..."
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ingest-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn storage(kore_usage: &str) -> Result<(), String> {
    // The functions run on one thread (Lambda sends one invocation at a time): so does this.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    runtime.block_on(async {
        let concurrency = vars::MAX_CONCURRENT_WRITES.default as usize;
        // DynamoDB Local is Java: its JIT needs a few thousand requests of each kind (puts,
        // transactions) to settle before anything is timed.
        conditional_puts_per_second(2_000, concurrency).await?;
        consumer_batch(1_000).await?;
        let ceiling = conditional_puts_per_second(CEILING_PUTS, concurrency).await?;
        row(
            &format!("ceiling: conditional PutItems/s, SDK alone, concurrency {concurrency}"),
            &format!("{ceiling:.0}/s"),
            "",
        );
        for records in [1_000, 10_000] {
            let (elapsed, per_second) = consumer_batch(records).await?;
            row(
                &format!("kinesis-consumer: {records}-record batch"),
                &format!(
                    "{:.2} s, {per_second:.0} events/s = {:.0}% of the ceiling",
                    elapsed.as_secs_f64(),
                    100.0 * per_second / ceiling
                ),
                if records == 1_000 {
                    "< 1 s; ≥ 80% of the ceiling"
                } else {
                    "≥ 80% of the ceiling"
                },
            );
        }
        let (p50, p99) = webhook_latency().await?;
        row(
            &format!("webhook: signed 50-event KORE batch (n={WEBHOOK_REQUESTS})"),
            &format!("p50 {} ms, p99 {} ms", p50.as_millis(), p99.as_millis()),
            "",
        );
        cost::cost_rows().await?;
        alerts::alert_rows().await?;
        month::month_query_row(Some(kore_usage)).await?;
        Ok(())
    })
}

fn on_one_thread(
    work: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?
        .block_on(work)
}

/// The ceiling: `PutItem` with `attribute_not_exists(pk)`, `concurrency` in flight, items the
/// size of a real event, on a fresh table made from the same definition.
async fn conditional_puts_per_second(puts: usize, concurrency: usize) -> Result<f64, String> {
    let ledger = fresh_ledger("ceiling").await;
    let client = ledger.table().client().clone();
    let table = ledger.table_name().to_owned();
    let payload =
        SampleEvent::usage_update("EZ0", "HS0", "2024-11-03T10:15:00Z", (1, 2)).twilio_json();
    let started = Instant::now();
    let failures = futures::stream::iter(0..puts)
        .map(|i| {
            let request = client
                .put_item()
                .table_name(&table)
                .item("pk", AttributeValue::S(format!("EVENT#EZbench{i:030}")))
                .item("sk", AttributeValue::S("#".into()))
                .item("raw", AttributeValue::S(payload.clone()))
                .condition_expression("attribute_not_exists(pk)");
            async move { request.send().await.is_err() }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed();
    if failures > 0 {
        return Err(format!("{failures} of {puts} ceiling puts failed"));
    }
    Ok(puts as f64 / elapsed.as_secs_f64())
}

/// Distinct usage events over 100 SIMs, one per record as Twilio's Kinesis sink writes them.
fn usage_records(count: usize, batch: &str) -> Vec<(u64, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let minute = i / SIMS;
            let sample = SampleEvent::usage_update(
                &format!("EZ{batch}{i:030}"),
                &format!("HS{:032}", i % SIMS),
                &format!(
                    "2024-11-03T{:02}:{:02}:00Z",
                    (minute / 60) % 24,
                    minute % 60
                ),
                (100 + i as u64, 1_000 + i as u64),
            );
            (i as u64, sample.twilio_json().into_bytes())
        })
        .collect()
}

/// One batch through the consumer's handler; every record must come out new.
async fn consumer_batch(records: usize) -> Result<(Duration, f64), String> {
    let ledger = fresh_ledger("consumer").await;
    let event = kinesis_event(&usage_records(records, &format!("k{records}")));
    let started = Instant::now();
    let report = kinesis_consumer::process_batch(&ledger, event, None)
        .await
        .map_err(|e| format!("the consumer failed: {e}"))?;
    let elapsed = started.elapsed();
    let new = report
        .outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::New))
        .count();
    if new != records || !report.response.batch_item_failures.is_empty() {
        return Err(format!(
            "{records}-record batch: {new} new, {} batch item failures",
            report.response.batch_item_failures.len()
        ));
    }
    Ok((elapsed, records as f64 / elapsed.as_secs_f64()))
}

/// Latency of the webhook's handler for distinct KORE-signed 50-event batches, one at a
/// time, after ten unmeasured requests.
async fn webhook_latency() -> Result<(Duration, Duration), String> {
    let config = WebhookConfig::from_env(&Env::from_pairs(&[
        ("KORE_WEBHOOK_SECRETS", KORE_SECRET),
        ("WEBHOOK_PUBLIC_URL", PUBLIC_URL),
    ]))
    .map_err(|e| e.to_string())?;
    let hook = Webhook {
        ledger: fresh_ledger("webhook").await,
        config,
    };
    let mut latencies = Vec::with_capacity(WEBHOOK_REQUESTS);
    for i in 0..WEBHOOK_REQUESTS + 10 {
        let (_, body) = kore_batch(50, &format!("HS{:032}", i % SIMS), &format!("w{i:04}"));
        let request = kore_test_support::kore_signed_post(
            KORE_SECRET,
            PUBLIC_URL,
            "/events",
            body.as_bytes(),
        );
        let mut metrics = kore_ingest_core::metrics::InvocationMetrics::new("webhook");
        let started = Instant::now();
        let response = hook
            .respond(&request, &format!("bench-{i}"), &mut metrics)
            .await;
        let elapsed = started.elapsed();
        if response.status_code != 200 {
            return Err(format!(
                "webhook answered {} to batch {i}: {:?}",
                response.status_code, response.body
            ));
        }
        if i >= 10 {
            latencies.push(elapsed);
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Ok((at(0.50), at(0.99)))
}

/// Start-to-ready of each binary, median of 15 starts.
fn startup(binaries: &[String]) -> Result<(), String> {
    for binary in binaries {
        let mut times: Vec<Duration> = (0..15)
            .map(|_| time_to_first_poll(binary))
            .collect::<Result<_, _>>()?;
        times.sort();
        let name = std::path::Path::new(binary)
            .parent()
            .and_then(|dir| dir.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| binary.clone());
        row(
            &format!("{name}: process start to first invocation poll (median of 15)"),
            &format!("{:.1} ms", times[times.len() / 2].as_secs_f64() * 1000.0),
            "",
        );
    }
    Ok(())
}

/// Spawns the binary as Lambda would (Runtime API address, function settings, a table name,
/// secrets in the environment) and waits for `GET /2018-06-01/runtime/invocation/next`.
fn time_to_first_poll(binary: &str) -> Result<Duration, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("TABLE_NAME", "bench")
        .env("KORE_WEBHOOK_SECRETS", KORE_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {binary}: {e}"))?;
    let polled = first_request_line(&listener, &mut child);
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let line = polled?;
    if !line.contains("/runtime/invocation/next") {
        return Err(format!("{binary} asked for `{}` first", line.trim()));
    }
    Ok(elapsed)
}

/// The first request line sent to `listener`, or why none came within ten seconds.
fn first_request_line(
    listener: &TcpListener,
    child: &mut std::process::Child,
) -> Result<String, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| format!("blocking: {e}"))?;
                let mut line = String::new();
                BufReader::new(stream)
                    .read_line(&mut line)
                    .map_err(|e| format!("read: {e}"))?;
                return Ok(line);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the function exited ({status}) before polling"));
                }
                if Instant::now() > deadline {
                    return Err("the function did not poll within 10 s".into());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}
