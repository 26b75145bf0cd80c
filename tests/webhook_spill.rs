//! Issue 13, item 2, as deployed (`SPILL_STREAM` set, the Kinesis client made by
//! `WebhookConfig::load`): while DynamoDB refuses every write, signed webhook batches from
//! KORE and Twilio are answered 200 and handed to the stream; the consumer, reading that
//! stream once DynamoDB is back, stores every event exactly once, as delivered by the webhook.
//! With the stream gone too, the sender is told to retry (503).
//! Against kinesalite (a stream of this test's own) and DynamoDB Local. Its own test binary:
//! it sets the process environment that `load` reads.

use aws_sdk_dynamodb::config::{Credentials, Region};
use kinesis_consumer::process_batch;
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};
use kore_ingest_core::config::Env;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::signature::kore_signature;
use kore_ingest_core::time::TimeRange;
use kore_test_support::faults::{
    self, KINESIS_CONSUMER, Throttle, WEBHOOK, as_function, throttled_client,
};
use kore_test_support::*;
use serde_json::Value;
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const KORE_SECRET: &str = "spill-kore-secret";
const TWILIO_TOKEN: &str = "spill-twilio-token";

async fn respond(
    webhook: &Webhook<UsageLedger>,
    headers: &[(&str, &str)],
    query: &str,
    body: &str,
) -> (i64, Value) {
    let request = function_url_request("POST", "/events", query, headers, Some(body.as_bytes()));
    let mut metrics = InvocationMetrics::new("webhook");
    let response = as_function(
        WEBHOOK,
        webhook.respond(&request, "req-spill", &mut metrics),
    )
    .await;
    (
        response.status_code,
        serde_json::from_str(response.body.as_deref().unwrap_or("null")).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn with_storage_down_signed_batches_get_200_and_the_consumer_stores_them_once() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_KINESIS")
        .expect("AWS_ENDPOINT_URL_KINESIS: run the suite with scripts/test");
    let stream = format!("spill-test-{}-{}", std::process::id(), fastrand::u32(..));
    // SAFETY: the only test of this binary sets the variables before anything reads them.
    unsafe {
        std::env::set_var("SPILL_STREAM", &stream);
        std::env::set_var("KORE_WEBHOOK_SECRETS", KORE_SECRET);
        std::env::set_var("TWILIO_AUTH_TOKENS", TWILIO_TOKEN);
        std::env::set_var("WEBHOOK_PUBLIC_URL", PUBLIC_URL);
        std::env::set_var("TIME_BUDGET_MS", "4000");
        std::env::remove_var("WEBHOOK_SECRETS_ARN");
    }
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .endpoint_url(&endpoint)
        .http_client(faults::recording_http_client())
        .load()
        .await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .expect("create the test stream on kinesalite");

    let table = fresh_ledger("wh-spill").await;
    // DynamoDB refuses every request while the throttle is on.
    let down = Throttle::on_marker("");
    let webhook = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&down),
            LedgerConfig::new(table.table_name()),
        ),
        config: WebhookConfig::load(&aws, &Env::process())
            .await
            .expect("configuration"),
    };

    let sims = [
        "HS000000000000000000000000spill001",
        "HS000000000000000000000000spill002",
    ];
    let (mut samples, _) = kore_batch(20, sims[0], "SPA");
    samples.extend(kore_batch(20, sims[1], "SPB").0);
    let kore_body = kore_body(&samples[..30]);
    let signature = kore_signature(
        KORE_SECRET.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/events"),
        kore_body.as_bytes(),
    );
    let (status, reply) = respond(
        &webhook,
        &[
            ("Content-Type", "application/json"),
            ("Kore-Signature", &signature),
        ],
        "",
        &kore_body,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["spilled"], 30, "{reply}");
    assert!(down.throttled() > 0);

    // Twilio delivers 20 of them too (10 the same as KORE's, 10 only from Twilio).
    let twilio_body = format!(
        "[{}]",
        samples[20..]
            .iter()
            .map(SampleEvent::twilio_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    let (query, signature) = twilio_json_signature(
        TWILIO_TOKEN,
        &format!("{PUBLIC_URL}/events"),
        twilio_body.as_bytes(),
    );
    let (status, reply) = respond(
        &webhook,
        &[
            ("Content-Type", "application/json"),
            ("X-Twilio-Signature", &signature),
        ],
        &query,
        &twilio_body,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["spilled"], 20, "{reply}");
    assert_eq!(
        table.sim_usage(sims[0], "2024-11-03").await.unwrap(),
        None,
        "nothing stored yet"
    );

    // DynamoDB is back: the consumer reads the stream as the event source mapping would.
    down.stop();
    let shard = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_owned();
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = kinesis
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    let data: Vec<(u64, Vec<u8>)> = records
        .records()
        .iter()
        .enumerate()
        .map(|(n, r)| (n as u64, r.data().as_ref().to_vec()))
        .collect();
    assert_eq!(data.len(), 2, "one record per request");
    let consumer = table.clone();
    let report = as_function(
        KINESIS_CONSUMER,
        process_batch(&consumer, kinesis_event(&data), None),
    )
    .await
    .unwrap();
    assert!(report.response.batch_item_failures.is_empty());
    assert_eq!(report.metrics.get("EventsNew"), 40.0);
    assert_eq!(report.metrics.get("EventsDuplicate"), 10.0);
    // Again (the event source mapping re-delivering): nothing counts twice.
    let again = as_function(
        KINESIS_CONSUMER,
        process_batch(&consumer, kinesis_event(&data), None),
    )
    .await
    .unwrap();
    assert_eq!(again.metrics.get("EventsNew"), 0.0);

    for (sim, stored) in [(sims[0], &samples[..20]), (sims[1], &samples[20..])] {
        let day = table.sim_usage(sim, "2024-11-03").await.unwrap().unwrap();
        assert_eq!(
            (day.usage.total, day.usage_events),
            (window_bytes(stored), 20),
            "{sim}"
        );
    }
    let from = chrono::DateTime::parse_from_rfc3339("2024-11-03T00:00:00Z")
        .unwrap()
        .to_utc();
    let events = table
        .events()
        .delivered_between(TimeRange::new(from, from + chrono::Duration::days(1)).unwrap())
        .await
        .unwrap();
    assert_eq!(events.len(), 40);
    for event in &events {
        assert!(
            event.deliveries.iter().all(|tag| tag.ends_with("#webhook")),
            "{event:?}"
        );
    }
    let both = events
        .iter()
        .filter(|e| e.delivered_by("kore") && e.delivered_by("twilio"))
        .count();
    assert_eq!(both, 10);

    // Issue 21, item 11: storage down and the stream gone too: nothing can keep the batch,
    // so the sender is told to retry (503), and nothing was stored.
    kinesis
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await
        .expect("delete the test stream");
    let down_again = Throttle::on_marker("");
    let webhook = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&down_again),
            LedgerConfig::new(table.table_name()),
        ),
        config: WebhookConfig::load(&aws, &Env::process())
            .await
            .expect("configuration"),
    };
    let (_, lost_body) = kore_batch(5, "HS000000000000000000000000spill003", "SPC");
    let signature = kore_signature(
        KORE_SECRET.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/events"),
        lost_body.as_bytes(),
    );
    let (status, reply) = respond(
        &webhook,
        &[
            ("Content-Type", "application/json"),
            ("Kore-Signature", &signature),
        ],
        "",
        &lost_body,
    )
    .await;
    assert_eq!(status, 503, "{reply}");
    assert!(down_again.throttled() > 0);
    down_again.stop();
    assert_eq!(
        table
            .sim_usage("HS000000000000000000000000spill003", "2024-11-03")
            .await
            .unwrap(),
        None
    );
}
