//! The ledger table's DynamoDB stream as Lambda delivers it: items as stream records, and
//! what a test table holds.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

/// An attribute value as Lambda writes it into a stream record (binary as base64).
pub fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": BASE64.encode(b.as_ref()) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| BASE64.encode(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::M(m) => json!({ "M": image(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        other => panic!("no stream form for {other:?}"),
    }
}

fn image(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    item.iter()
        .map(|(k, v)| (k.clone(), attribute_json(v)))
        .collect()
}

/// One stream record (`INSERT`, `MODIFY` or `REMOVE`) of `item`, with sequence number `n`.
pub fn stream_record(event_name: &str, item: &HashMap<String, AttributeValue>, n: u64) -> Value {
    let keys: HashMap<String, AttributeValue> = item
        .iter()
        .filter(|(k, _)| *k == "pk" || *k == "sk")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut change = json!({
        "ApproximateCreationDateTime": 1_730_628_900.0,
        "Keys": image(&keys),
        "SequenceNumber": stream_sequence(n),
        "SizeBytes": 1000,
        "StreamViewType": "NEW_IMAGE",
    });
    if event_name != "REMOVE" {
        change["NewImage"] = Value::Object(image(item));
    }
    json!({
        "eventID": format!("e{n}"),
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": change,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/kore-usage/stream/2024-11-04T00:00:00.000",
    })
}

/// The sequence number [`stream_record`] gives record `n`.
pub fn stream_sequence(n: u64) -> String {
    format!("{:021}", 4_000_000_000_000_000_000u64 + n)
}

pub fn stream_event(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).expect("a valid DynamoDB stream event")
}
