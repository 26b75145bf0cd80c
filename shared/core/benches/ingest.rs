//! Parse-and-normalize per event, and signature verification of a signed 50-event batch.
//! `cargo bench -p kore-ingest-core --bench ingest`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kore_ingest_core::event::parse_events;
use kore_ingest_core::signature::{
    kore_signature, twilio_signature, twilio_url_with_body_hash, verify_kore_signature,
    verify_twilio_signature,
};
use serde_json::Value;

const TWILIO_RECORD: &str =
    include_str!("../../../tests/fixtures/twilio-kinesis-data-session-updated.json");
const KORE_BATCH: &str =
    include_str!("../../../tests/fixtures/kore-webhook-data-session-batch.json");

/// Fifty distinct KORE events in one webhook body, as KORE batches them.
fn batch_of_50() -> String {
    let template: Vec<Value> = serde_json::from_str(KORE_BATCH).expect("fixture");
    let events: Vec<Value> = (0..50)
        .map(|i| {
            let mut event = template[i % 2].clone();
            let sid = format!("EZ{i:032x}");
            event["id"] = Value::String(sid.clone());
            event["data"]["event_sid"] = Value::String(sid);
            event
        })
        .collect();
    serde_json::to_string(&events).expect("json")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_and_normalize");
    group.throughput(Throughput::Elements(1));
    group.bench_function("twilio_kinesis_record", |b| {
        b.iter(|| parse_events(black_box(TWILIO_RECORD.as_bytes())))
    });
    let batch = batch_of_50();
    group.throughput(Throughput::Elements(50));
    group.bench_function("kore_webhook_batch_of_50", |b| {
        b.iter(|| parse_events(black_box(batch.as_bytes())))
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let body = batch_of_50();
    let url = "https://abc123.lambda-url.us-east-1.on.aws/events";
    let secrets = ["old-secret-retired", "kore-active-secret"];
    let kore = kore_signature(secrets[1].as_bytes(), "POST", url, body.as_bytes());
    let twilio_url = twilio_url_with_body_hash(url, body.as_bytes());
    let twilio = twilio_signature(b"twilio-token", &twilio_url, &[]);

    let mut group = c.benchmark_group("verify_signed_batch_of_50");
    group.bench_function("kore", |b| {
        b.iter(|| {
            verify_kore_signature(
                &secrets,
                "POST",
                url,
                black_box(body.as_bytes()),
                Some(&kore),
            )
        })
    });
    group.bench_function("twilio_body_sha256", |b| {
        b.iter(|| {
            verify_twilio_signature(
                &["twilio-token"],
                &twilio_url,
                &[],
                black_box(body.as_bytes()),
                Some(&twilio),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, parse, verify);
criterion_main!(benches);
