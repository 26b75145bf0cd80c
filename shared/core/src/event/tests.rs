use chrono::{DateTime, Utc};
use serde_json::Value;

use super::canonical::write_canonical;
use super::parse::detect_provider;
use super::*;
use crate::time::day_text;

const TWILIO_RECORD: &str =
    include_str!("../../../../tests/fixtures/twilio-kinesis-data-session-updated.json");
const KORE_BATCH: &str =
    include_str!("../../../../tests/fixtures/kore-webhook-data-session-batch.json");
const KORE_TEST: &str = include_str!("../../../../tests/fixtures/kore-test-event.json");
const TWILIO_TEST: &str =
    include_str!("../../../../tests/fixtures/twilio-test-event-string-data.json");

fn only(items: Vec<ParsedItem>) -> ConnectionEvent {
    assert_eq!(items.len(), 1);
    items.into_iter().next().unwrap().unwrap()
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn real_twilio_kinesis_record_normalizes() {
    let event = only(parse_events(TWILIO_RECORD.as_bytes()).unwrap());
    assert_eq!(event.provider, Provider::Twilio);
    assert_eq!(
        event.kind,
        EventKind::Connection(ConnectionKind::DataSessionUpdated)
    );
    assert_eq!(event.key.as_str(), "EZeb42ec296e094786c6dd34aab7b15fac");
    assert_eq!(
        event.sim_sid.as_deref(),
        Some("HS2f71995b834d803ff5376799ba59bd1d")
    );
    assert_eq!(
        event.account_sid.as_deref(),
        Some("ACe7ea554f7fc0fad65e689bb5899bb6c3")
    );
    assert_eq!(
        event.fleet_sid.as_deref(),
        Some("HF925ae5b4af6aeb7d5034d3f4b09c78ce")
    );
    assert_eq!(event.usage, Some(DataVolume::default()));
    assert_eq!(day_text(event.billing_day), "2022-12-14");
    assert_eq!(event.billing_day.format("%Y-%m").to_string(), "2022-12");
    assert_eq!(event.event_time, utc("2022-12-14T13:40:52Z"));
    let session = event.session.unwrap();
    assert_eq!(session.sid, "PIc64fc7780f12ab694aad316d7b06f7a3");
    assert_eq!(session.start_time, Some(utc("2022-12-11T06:15:01Z")));
    assert_eq!(session.cumulative, Some(DataVolume::default()));
}

#[test]
fn kore_webhook_batch_yields_window_and_cumulative_totals() {
    let events: Vec<ConnectionEvent> = parse_events(KORE_BATCH.as_bytes())
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.provider == Provider::Kore));
    let windows: Vec<u64> = events.iter().map(|e| e.usage.unwrap().total).collect();
    assert_eq!(windows, [122_880, 5_120]);
    let cumulative: Vec<u64> = events
        .iter()
        .map(|e| e.session.as_ref().unwrap().cumulative.unwrap().total)
        .collect();
    assert_eq!(cumulative, [245_760, 250_880]);
    assert_eq!(
        events[0].usage,
        Some(DataVolume {
            upload: 20_480,
            download: 102_400,
            total: 122_880
        })
    );
    assert_eq!(
        events[1].kind,
        EventKind::Connection(ConnectionKind::DataSessionEnded)
    );
    // KORE's seven-digit fractions and numeric offsets parse to UTC.
    assert_eq!(
        events[0].event_time,
        utc("2024-11-03T10:15:00.1234567+00:00")
    );
    assert_eq!(day_text(events[0].billing_day), "2024-11-03");
    assert_eq!(
        events[1].session.as_ref().unwrap().end_time,
        Some(utc("2024-11-03T10:22:41Z"))
    );
}

#[test]
fn kore_test_event_is_keyed_on_its_id() {
    let event = only(parse_events(KORE_TEST.as_bytes()).unwrap());
    assert_eq!(event.provider, Provider::Kore);
    assert_eq!(event.kind, EventKind::Test);
    assert_eq!(event.key.as_str(), "fff521c2-c7db-4b53-a5a0-c5d5d01f66ce");
    assert_eq!(event.usage, None);
    assert_eq!(day_text(event.billing_day), "2024-09-25");
}

#[test]
fn twilio_test_event_with_string_data_is_parsed() {
    let event = only(parse_events(TWILIO_TEST.as_bytes()).unwrap());
    assert_eq!(event.provider, Provider::Twilio);
    assert_eq!(event.kind, EventKind::Test);
    assert_eq!(event.key.as_str(), "AC1234567890123456789012");
    assert_eq!(
        event.data,
        r#"{"test_id":"95001c1e-5b8e-45f5-830d-f9cbf1d16420"}"#
    );
}

#[test]
fn same_data_from_both_providers_hashes_the_same() {
    let kore = parse_event(&KORE_BATCH_FIRST()).unwrap();
    // The Twilio envelope of the same data, with data as a string, keys reordered and
    // whitespace added: the data object is the same, so the hash must be too.
    let data: Value = serde_json::from_str(&kore.data).unwrap();
    let mut pairs: Vec<(String, Value)> = data.as_object().unwrap().clone().into_iter().collect();
    pairs.reverse();
    let reordered = format!(
        "{{ {} }}",
        pairs
            .iter()
            .map(|(k, v)| format!("{:?} :  {}", k, serde_json::to_string_pretty(v).unwrap()))
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    let twilio_json = serde_json::json!({
        "specversion": "1.0",
        "type": "com.twilio.iot.supersim.connection.data-session.updated",
        "source": format!("/v1/SuperSim/ConnectionEvents/{}", kore.key),
        "id": kore.key.as_str(),
        "dataschema": "https://events-schemas.twilio.com/SuperSim.ConnectionEvent/2",
        "time": "2024-11-03T10:15:00.000Z",
        "data": reordered,
    })
    .to_string();
    let twilio = parse_event(&twilio_json).unwrap();
    assert_eq!(twilio.provider, Provider::Twilio);
    assert_ne!(twilio.data, kore.data);
    assert_eq!(twilio.data_hash, kore.data_hash);
    assert_eq!(twilio.key, kore.key);
    assert_eq!(twilio.usage, kore.usage);
}

#[allow(non_snake_case)]
fn KORE_BATCH_FIRST() -> String {
    let batch: Vec<Value> = serde_json::from_str(KORE_BATCH).unwrap();
    batch[0].to_string()
}

#[test]
fn event_type_copied_into_data_does_not_change_the_hash() {
    // Twilio's copy may carry its own type in data.event_type, KORE's copy KORE's.
    let kore = parse_event(&KORE_BATCH_FIRST()).unwrap();
    let twilio_typed = KORE_BATCH_FIRST().replace(
        r#""event_type":"com.kore.iot.supersim.connection.data-session.updated""#,
        r#""event_type":"com.twilio.iot.supersim.connection.data-session.updated""#,
    );
    assert_ne!(twilio_typed, KORE_BATCH_FIRST());
    assert_eq!(
        parse_event(&twilio_typed).unwrap().data_hash,
        kore.data_hash
    );
}

#[test]
fn different_data_hashes_differently() {
    let original = parse_event(&KORE_BATCH_FIRST()).unwrap();
    let altered = KORE_BATCH_FIRST().replace("\"data_upload\":20480", "\"data_upload\":20481");
    assert_ne!(parse_event(&altered).unwrap().data_hash, original.data_hash);
}

#[test]
fn data_is_kept_byte_for_byte() {
    let json = r#"{"type":"com.kore.iot.supersim.connection.attachment.accepted","id":"EZ1","time":"2024-01-01T00:00:00Z","source":"kore-events","data": { "event_sid" : "EZ1", "zz": 1.50, "unknown": {"b":2, "a":1} } }"#;
    let event = parse_event(json).unwrap();
    assert_eq!(
        event.data,
        r#"{ "event_sid" : "EZ1", "zz": 1.50, "unknown": {"b":2, "a":1} }"#
    );
    assert_eq!(event.usage, None);
}

#[test]
fn provider_comes_from_type_source_and_schema() {
    let cases = [
        (
            "com.kore.iot.supersim.connection.attachment.accepted",
            "x",
            "x",
            Some(Provider::Kore),
        ),
        // KORE sample code: Twilio type, KORE metadata.
        (
            "com.twilio.iot.supersim.connection.attachment.accepted",
            "kore-events",
            "x",
            Some(Provider::Kore),
        ),
        (
            "com.twilio.iot.supersim.connection.attachment.accepted",
            "x",
            "https://events-schemas.korewireless.com/SuperSim.ConnectionEvent/2",
            Some(Provider::Kore),
        ),
        (
            "com.twilio.iot.supersim.connection.attachment.accepted",
            "/v1/SuperSim/ConnectionEvents/EZ1",
            "https://events-schemas.twilio.com/SuperSim.ConnectionEvent/2",
            Some(Provider::Twilio),
        ),
        (
            "com.example.thing",
            "elsewhere",
            "https://example.com/schema",
            None,
        ),
    ];
    for (ty, source, schema, expected) in cases {
        assert_eq!(
            detect_provider(ty, Some(source), Some(schema)),
            expected,
            "{ty} {source} {schema}"
        );
    }
}

#[test]
fn every_connection_kind_and_unknown_types_are_classified() {
    for kind in ConnectionKind::ALL {
        let ty = format!("com.kore.supersim.connection.{}", kind.suffix());
        assert_eq!(EventKind::classify(&ty), EventKind::Connection(kind));
    }
    assert_eq!(
        EventKind::classify("com.kore.iot.supersim.connection.data-session.paused"),
        EventKind::Other("com.kore.iot.supersim.connection.data-session.paused".into())
    );
    assert_eq!(
        EventKind::classify("com.twilio.eventstreams.test-event"),
        EventKind::Test
    );
}

/// An `updated` event around `data`; a `sim_sid` is added to objects that lack one.
fn event_with_data(data: &str) -> String {
    let data = match data.strip_prefix('{') {
        Some(rest) if !data.contains("sim_sid") => {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!(r#"{{"sim_sid":"HS1"{sep}{rest}"#)
        }
        _ => data.to_owned(),
    };
    format!(
        r#"{{"type":"com.kore.iot.supersim.connection.data-session.updated","id":"EZ9","source":"kore-events","time":"2024-03-31T23:59:59.9999999+00:00","data":{data}}}"#
    )
}

#[test]
fn billing_day_prefers_update_end_time_then_timestamp_then_time() {
    let with_end = parse_event(&event_with_data(
        r#"{"timestamp":"2024-04-01T00:00:05Z","data_session_update_end_time":"2024-03-31T23:59:58Z"}"#,
    ))
    .unwrap();
    assert_eq!(day_text(with_end.billing_day), "2024-03-31");
    let with_timestamp =
        parse_event(&event_with_data(r#"{"timestamp":"2024-04-01T00:00:05Z"}"#)).unwrap();
    assert_eq!(day_text(with_timestamp.billing_day), "2024-04-01");
    assert_eq!(
        with_timestamp.billing_day.format("%Y-%m").to_string(),
        "2024-04"
    );
    let with_time_only = parse_event(&event_with_data("{}")).unwrap();
    assert_eq!(day_text(with_time_only.billing_day), "2024-03-31");
}

#[test]
fn offsets_are_converted_to_utc_for_the_billing_day() {
    let event = parse_event(&event_with_data(
        r#"{"data_session_update_end_time":"2024-04-01T01:30:00+02:00"}"#,
    ))
    .unwrap();
    assert_eq!(day_text(event.billing_day), "2024-03-31");
}

#[test]
fn missing_window_total_is_upload_plus_download_and_missing_amounts_are_zero() {
    let event = parse_event(&event_with_data(
        r#"{"data_upload":10,"data_download":null}"#,
    ))
    .unwrap();
    assert_eq!(
        event.usage,
        Some(DataVolume {
            upload: 10,
            download: 0,
            total: 10
        })
    );
    assert_eq!(event.session, None);
}

#[test]
fn whole_float_amounts_are_accepted() {
    let event = parse_event(&event_with_data(r#"{"data_total":1024.0}"#)).unwrap();
    assert_eq!(event.usage.unwrap().total, 1024);
}

#[test]
fn errors_name_the_field_and_the_reason() {
    let cases: [(&str, EventError); 7] = [
        (
            r#"{"data_upload":-5}"#,
            EventError::invalid("data.data_upload", "must not be negative"),
        ),
        (
            r#"{"data_download":1.5}"#,
            EventError::invalid("data.data_download", "must be a whole number of bytes"),
        ),
        (
            r#"{"data_total":"12"}"#,
            EventError::invalid("data.data_total", "expected a byte count, found a string"),
        ),
        (
            r#"{"sim_sid":12}"#,
            EventError::invalid("data.sim_sid", "expected a string, found a number"),
        ),
        (
            r#"{"event_sid":["EZ"]}"#,
            EventError::invalid("data.event_sid", "expected a string, found an array"),
        ),
        (
            r#"[1,2]"#,
            EventError::invalid(
                "data",
                "expected an object or a string holding a JSON object",
            ),
        ),
        (r#"null"#, EventError::MissingField { field: "data" }),
    ];
    for (data, expected) in cases {
        assert_eq!(
            parse_event(&event_with_data(data)).unwrap_err(),
            expected,
            "{data}"
        );
    }
    let bad_time = parse_event(&event_with_data(r#"{"timestamp":"yesterday"}"#)).unwrap_err();
    assert!(
        matches!(bad_time, EventError::InvalidField { field: "data.timestamp", ref reason } if reason.contains("yesterday")),
        "{bad_time}"
    );
    assert_eq!(
        parse_event(r#"{"id":"EZ1","data":{}}"#).unwrap_err(),
        EventError::MissingField { field: "type" }
    );
    assert_eq!(
        parse_event(r#"{"type":7,"data":{}}"#).unwrap_err(),
        EventError::invalid("type", "expected a string, found a number")
    );
}

#[test]
fn usage_without_a_sim_is_refused() {
    let json = r#"{"type":"com.kore.iot.supersim.connection.data-session.ended","id":"EZ1","source":"kore-events","time":"2024-01-01T00:00:00Z","data":{"data_total":5}}"#;
    assert_eq!(
        parse_event(json).unwrap_err(),
        EventError::MissingField {
            field: "data.sim_sid"
        }
    );
}

#[test]
fn no_event_sid_and_no_id_is_an_error() {
    let json = r#"{"type":"com.kore.eventstreams.test.event","source":"kore-events","time":"2024-01-01T00:00:00Z","data":{"test_id":"x"}}"#;
    assert_eq!(parse_event(json).unwrap_err(), EventError::NoDedupeKey);
    let empty = r#"{"type":"com.kore.eventstreams.test.event","id":"","source":"kore-events","time":"2024-01-01T00:00:00Z","data":{"event_sid":""}}"#;
    assert_eq!(parse_event(empty).unwrap_err(), EventError::NoDedupeKey);
}

#[test]
fn event_without_any_time_is_an_error() {
    let json = r#"{"type":"com.kore.iot.supersim.connection.attachment.accepted","id":"EZ1","source":"kore-events","data":{}}"#;
    assert_eq!(
        parse_event(json).unwrap_err(),
        EventError::MissingField { field: "time" }
    );
}

#[test]
fn bad_element_fails_alone_and_keeps_its_raw_text() {
    let batch = format!(
        r#"[{}, {{"type":"com.kore.x","source":"kore-events","data":{{}}}}, 42]"#,
        KORE_BATCH_FIRST()
    );
    let items = parse_events(batch.as_bytes()).unwrap();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok());
    let rejected = items[1].as_ref().unwrap_err();
    assert_eq!(rejected.index, 1);
    assert_eq!(rejected.error, EventError::NoDedupeKey);
    assert_eq!(
        rejected.raw,
        r#"{"type":"com.kore.x","source":"kore-events","data":{}}"#
    );
    let not_object = items[2].as_ref().unwrap_err();
    assert_eq!(
        not_object.error,
        EventError::NotAnEvent { found: "a number" }
    );
    assert_eq!(not_object.raw, "42");
}

#[test]
fn payload_level_errors() {
    assert_eq!(
        parse_events(&[0xff, 0xfe]).unwrap_err(),
        EventError::NotUtf8 { valid_up_to: 0 }
    );
    assert!(matches!(
        parse_events(b"{not json").unwrap_err(),
        EventError::NotJson(_)
    ));
    assert!(matches!(
        parse_events(b"").unwrap_err(),
        EventError::NotJson(_)
    ));
    assert_eq!(
        parse_events(b"\"hello\"").unwrap_err(),
        EventError::NotAnEvent { found: "a string" }
    );
    assert_eq!(parse_events(b" [] ").unwrap(), vec![]);
}

#[test]
fn canonical_form_sorts_keys_and_drops_whitespace() {
    let value: Value =
        serde_json::from_str(r#"{ "b": [1, {"y": null, "x": "é\n"}], "a": 1.5 }"#).unwrap();
    let mut out = Vec::new();
    write_canonical(&value, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"a":1.5,"b":[1,{"x":"é\n","y":null}]}"#
    );
}

#[test]
fn usage_is_booked_in_the_utc_hour_of_the_window_end_with_this_events_network() {
    let event = parse_event(&event_with_data(
        r#"{"timestamp":"2024-04-01T00:00:05Z","data_session_update_end_time":"2024-03-31T22:59:58+01:00","sim_iccid":"8988","sim_unique_name":"meter-1","network":{"sid":"HW1","friendly_name":"Telekom","iso_country":"DE","mcc":"262"}}"#,
    ))
    .unwrap();
    assert_eq!(event.booking_hour(), utc("2024-03-31T21:00:00Z"));
    assert_eq!(
        event.network,
        Some(Network {
            sid: Some("HW1".into()),
            friendly_name: Some("Telekom".into()),
            iso_country: Some("DE".into()),
        })
    );
    assert_eq!(event.sim_iccid.as_deref(), Some("8988"));
    assert_eq!(event.sim_unique_name.as_deref(), Some("meter-1"));
    // No network, or a null one: unknown, never an error.
    for data in [r#"{}"#, r#"{"network":null}"#, r#"{"network":{}}"#] {
        assert_eq!(parse_event(&event_with_data(data)).unwrap().network, None);
    }
    assert_eq!(
        parse_event(&event_with_data(r#"{"network":{"sid":7}}"#)).unwrap_err(),
        EventError::invalid("data.network.sid", "expected a string, found a number")
    );
    assert_eq!(
        parse_event(&event_with_data(r#"{"network":"HW1"}"#)).unwrap_err(),
        EventError::invalid("data.network", "expected an object, found a string")
    );
}

#[test]
fn amounts_over_two_to_the_fifty_bytes_are_refused_naming_the_field() {
    let at_limit = format!(r#"{{"data_upload":{MAX_AMOUNT},"data_download":{MAX_AMOUNT}}}"#);
    let event = parse_event(&event_with_data(&at_limit)).unwrap();
    assert_eq!(event.usage.unwrap().total, 2 * MAX_AMOUNT);
    for (data, field) in [
        (
            format!(r#"{{"data_download":{}}}"#, MAX_AMOUNT + 1),
            "data.data_download",
        ),
        (r#"{"data_total":1e300}"#.to_owned(), "data.data_total"),
        (
            format!(r#"{{"data_session_data_upload":{}}}"#, u64::MAX),
            "data.data_session_data_upload",
        ),
    ] {
        let error = parse_event(&event_with_data(&data)).unwrap_err();
        assert!(
            matches!(&error, EventError::InvalidField { field: f, reason } if *f == field && reason.contains("2^50")),
            "{data}: {error}"
        );
    }
}

#[test]
fn a_stored_test_event_is_keyed_on_its_stored_key() {
    let stored = parse_events(KORE_TEST.as_bytes())
        .unwrap()
        .remove(0)
        .unwrap();
    let again = from_stored(
        stored.provider,
        &stored.key,
        &stored.event_type,
        stored.event_time,
        &stored.data,
    )
    .unwrap();
    assert_eq!(again.key, stored.key);
    assert_eq!(again.kind, EventKind::Test);
    assert_eq!(again.data_hash, stored.data_hash);
}
