//! The run's EventBridge emulator (moto's server, which `scripts/dev up` starts with the
//! stack's bus and a rule copying everything on it into `EVENTS_QUEUE_URL`): the bus as the
//! forwarder's handler uses it (its requests recorded for the IAM test), and the queue,
//! read with the real SQS client.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_eventbridge::config::{BehaviorVersion, Credentials, Region};
use kore_ingest_aws::bus::EventBus;
use serde_json::Value;

use crate::faults;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// The stack's bus (`EVENT_BUS_NAME`), or another name on the same emulator.
pub fn local_bus(name: &str) -> EventBus {
    let config = aws_sdk_eventbridge::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(env("AWS_ENDPOINT_URL_EVENTBRIDGE"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .http_client(faults::recording_http_client())
        .build();
    EventBus::new(aws_sdk_eventbridge::Client::from_conf(config), name)
}

pub fn stack_bus_name() -> String {
    env("EVENT_BUS_NAME")
}

/// What the rule copied into `EVENTS_QUEUE_URL`: the events on the bus, as EventBridge
/// envelopes (`detail` an object).
pub struct BusQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(env("AWS_ENDPOINT_URL_SQS"))
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "local", "local", None, None, "tests",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

impl BusQueue {
    /// The stack's queue: a copy of everything the stack's forwarder put on its bus.
    pub fn of_stack() -> Self {
        BusQueue {
            client: sqs_client(),
            url: env("EVENTS_QUEUE_URL"),
        }
    }

    /// A bus of the test's own on the run's emulator, with a queue that copies it, so that
    /// tests running at once never read each other's events. Returns the bus name too.
    pub async fn fresh(test_name: &str) -> (String, Self) {
        let name = format!("t-{test_name}-{}", fastrand::u32(..));
        let events = local_bus(&name).client().clone();
        events
            .create_event_bus()
            .name(&name)
            .send()
            .await
            .expect("create a bus on the emulator");
        let client = sqs_client();
        let url = client
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .expect("create a queue on the emulator")
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        let arn = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the queue's ARN")
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .unwrap_or_default();
        events
            .put_rule()
            .name("everything")
            .event_bus_name(&name)
            .event_pattern(r#"{"source":[{"prefix":""}]}"#)
            .send()
            .await
            .expect("a rule on the test bus");
        events
            .put_targets()
            .rule("everything")
            .event_bus_name(&name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()
                    .expect("a target"),
            )
            .send()
            .await
            .expect("the queue as the rule's target");
        (name, BusQueue { client, url })
    }

    /// Every message until none has come for `quiet`, each deleted once read.
    pub async fn drain(&self, quiet: Duration) -> Vec<Value> {
        let mut events = Vec::new();
        let mut last = tokio::time::Instant::now();
        while last.elapsed() < quiet {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive from the bus queue");
            for message in output.messages() {
                let body = message.body().unwrap_or_default();
                events.push(serde_json::from_str(body).expect("an EventBridge envelope"));
                if let Some(handle) = message.receipt_handle() {
                    self.client
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("delete from the bus queue");
                }
                last = tokio::time::Instant::now();
            }
        }
        events
    }
}

/// The bus events whose `detail.id` is one of `ids`, counted per id.
pub fn count_by_id(events: &[Value], ids: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        if let Some(id) = event["detail"]["id"].as_str()
            && ids.iter().any(|i| i == id)
        {
            *counts.entry(id.to_owned()).or_default() += 1;
        }
    }
    counts
}
