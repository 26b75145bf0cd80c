//! Events as KORE and Twilio send them, generated: one event rendered either way, KORE's
//! webhook batches, Lambda's Kinesis events, and the deliveries the ledger records.

use chrono::{DateTime, Utc};
use kore_ingest_core::delivery::{Delivery, Origin};
use kore_ingest_core::event::{ConnectionEvent, ParsedItem, parse_events};
use serde_json::{Value, json};

pub fn parse_one(json: &str) -> ConnectionEvent {
    let mut items = parse_events(json.as_bytes()).expect("payload parses");
    assert_eq!(items.len(), 1, "one event in {json}");
    items.remove(0).expect("event parses")
}

pub fn parse_item(json: &str) -> ParsedItem {
    let mut items = parse_events(json.as_bytes()).expect("payload parses");
    assert_eq!(items.len(), 1);
    items.remove(0)
}

pub fn kinesis(sequence: u64) -> Delivery {
    Delivery::now(Origin::Kinesis {
        shard_id: "shardId-000000000000".into(),
        sequence_number: format!("{sequence:056}"),
    })
}

pub fn webhook(request_id: &str) -> Delivery {
    Delivery::now(Origin::Webhook {
        request_id: request_id.into(),
    })
}

/// A Super SIM connection event as the test wants it; renders as KORE or Twilio sends it.
#[derive(Debug, Clone)]
pub struct SampleEvent {
    pub event_sid: String,
    pub suffix: &'static str,
    pub sim_sid: String,
    pub account_sid: String,
    pub fleet_sid: String,
    pub session_sid: String,
    pub time: DateTime<Utc>,
    /// Window bytes (upload, download) for `updated` / `ended`.
    pub window: (u64, u64),
    /// Running session totals (upload, download).
    pub cumulative: Option<(u64, u64)>,
    /// The network: SID, friendly name, ISO country; `None` sends `"network": null`.
    pub network: Option<(String, String, String)>,
    pub sim_unique_name: Option<String>,
    /// `data_session_update_start_time`, when the window should say when it started.
    pub window_start: Option<DateTime<Utc>>,
    /// When the event was sent (its `time` and `timestamp`), if not at the window's end.
    pub sent_at: Option<DateTime<Utc>>,
}

impl SampleEvent {
    pub fn usage_update(event_sid: &str, sim_sid: &str, time: &str, window: (u64, u64)) -> Self {
        SampleEvent {
            event_sid: event_sid.into(),
            suffix: "data-session.updated",
            sim_sid: sim_sid.into(),
            account_sid: "AC0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            fleet_sid: "HF99998888777766665555444433332222".into(),
            session_sid: format!("PI{sim_sid}"),
            time: DateTime::parse_from_rfc3339(time)
                .expect("test time")
                .with_timezone(&Utc),
            window,
            cumulative: None,
            network: Some((
                "HWa1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                "AT&T".into(),
                "US".into(),
            )),
            sim_unique_name: None,
            window_start: None,
            sent_at: None,
        }
    }

    pub fn carries_usage(&self) -> bool {
        matches!(self.suffix, "data-session.updated" | "data-session.ended")
    }

    /// The envelope's `time` and `data.timestamp`.
    fn sent(&self) -> DateTime<Utc> {
        self.sent_at.unwrap_or(self.time)
    }

    pub fn data(&self) -> Value {
        let at = self.time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let sent = self.sent().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut data = json!({
            "event_sid": self.event_sid,
            "event_type": format!("com.kore.iot.supersim.connection.{}", self.suffix),
            "account_sid": self.account_sid,
            "sim_sid": self.sim_sid,
            "fleet_sid": self.fleet_sid,
            "sim_iccid": "89883070000012345678",
            "timestamp": sent,
            "network": self.network.as_ref().map(|(sid, name, country)| json!({
                "mcc": "310", "mnc": "410", "sid": sid, "friendly_name": name, "iso_country": country,
            })),
            "rat_type": "4G LTE",
            "data_session_sid": self.session_sid,
            "data_session_start_time": "2024-01-01T00:00:00Z",
        });
        if let Some(name) = &self.sim_unique_name {
            data["sim_unique_name"] = json!(name);
        }
        if self.carries_usage() {
            let (up, down) = self.window;
            if let Some(start) = self.window_start {
                data["data_session_update_start_time"] =
                    json!(start.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            data["data_session_update_end_time"] = json!(at);
            data["data_upload"] = json!(up);
            data["data_download"] = json!(down);
            data["data_total"] = json!(up + down);
        }
        if let Some((up, down)) = self.cumulative {
            data["data_session_data_upload"] = json!(up);
            data["data_session_data_download"] = json!(down);
            data["data_session_data_total"] = json!(up + down);
        }
        data
    }

    /// As KORE sends it: `data` an object, seven-digit fractions and an offset in `time`.
    pub fn kore_json(&self) -> String {
        json!({
            "specversion": "1.0",
            "type": format!("com.kore.iot.supersim.connection.{}", self.suffix),
            "source": "kore-events",
            "id": self.event_sid,
            // Seven fractional digits and a numeric offset (chrono has no `%.7f`).
            "time": format!(
                "{}.{:07}+00:00",
                self.sent().format("%Y-%m-%dT%H:%M:%S"),
                self.sent().timestamp_subsec_nanos() / 100
            ),
            "dataschema": "https://events-schemas.korewireless.com/SuperSim.ConnectionEvent/2",
            "datacontenttype": "application/json",
            "data": self.data(),
        })
        .to_string()
    }

    /// As Twilio's Kinesis sink sends it: `data` a string holding JSON, another envelope.
    pub fn twilio_json(&self) -> String {
        json!({
            "specversion": "1.0",
            "type": format!("com.twilio.iot.supersim.connection.{}", self.suffix),
            "source": format!("/v1/SuperSim/ConnectionEvents/{}", self.event_sid),
            "id": self.event_sid,
            "time": self.sent().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "dataschema": "https://events-schemas.twilio.com/SuperSim.ConnectionEvent/2",
            "datacontenttype": "application/json",
            "data": serde_json::to_string_pretty(&self.data()).expect("json"),
        })
        .to_string()
    }
}

/// `n` distinct KORE usage events for one SIM, as KORE batches them in one webhook body.
pub fn kore_batch(n: usize, sim_sid: &str, prefix: &str) -> (Vec<SampleEvent>, String) {
    let samples: Vec<SampleEvent> = (0..n)
        .map(|i| {
            SampleEvent::usage_update(
                &format!("EZ{prefix}{i:030}"),
                sim_sid,
                &format!("2024-11-03T{:02}:{:02}:00Z", 10 + i / 60, i % 60),
                (100 + i as u64, 1000 + i as u64),
            )
        })
        .collect();
    let body = kore_body(&samples);
    (samples, body)
}

/// The samples as one KORE webhook body: a JSON array of KORE CloudEvents.
pub fn kore_body(samples: &[SampleEvent]) -> String {
    format!(
        "[{}]",
        samples
            .iter()
            .map(SampleEvent::kore_json)
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Bytes (upload + download) the samples' usage windows add up to: the independent total.
pub fn window_bytes(samples: &[SampleEvent]) -> u64 {
    samples.iter().map(|s| s.window.0 + s.window.1).sum()
}

/// A Kinesis sequence number as Kinesis writes them (56 digits), ordered by `n`.
pub fn sequence_number(n: u64) -> String {
    format!("49590338271490256608559692538361571095921575989136{n:06}")
}

/// A Lambda `KinesisEvent` as Lambda delivers it: each `(n, bytes)` becomes a record with
/// sequence number `sequence_number(n)` on shard `shardId-000000000000`, base64 data.
pub fn kinesis_event(
    records: &[(u64, Vec<u8>)],
) -> aws_lambda_events::event::kinesis::KinesisEvent {
    use base64::Engine;
    let records: Vec<Value> = records
        .iter()
        .map(|(n, data)| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "HS-partition",
                    "sequenceNumber": sequence_number(*n),
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1_730_628_900.123,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{}", sequence_number(*n)),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/kore-events",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("a valid KinesisEvent")
}
