//! Arbitrary input into every parser and verifier: never a panic, every failure a value.

use http::{HeaderMap, HeaderValue};
use kore_ingest_core::callback::{CallbackKind, parse_callback, parse_form};
use kore_ingest_core::event::{DataHash, parse_event, parse_events};
use kore_ingest_core::signature::{verify_kore_signature, verify_twilio_signature};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        // Values the parser looks at, so that the interesting paths are reached.
        prop_oneof![
            Just("2024-11-03T10:15:00Z"),
            Just("2024-09-25T19:09:48.5842087+00:00"),
            Just("com.kore.iot.supersim.connection.data-session.updated"),
            Just("com.twilio.iot.supersim.connection.data-session.ended"),
            Just("kore-events"),
            Just("EZ00000000000000000000000000000000"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("id".to_owned()),
                    Just("time".to_owned()),
                    Just("source".to_owned()),
                    Just("data".to_owned()),
                    Just("event_sid".to_owned()),
                    Just("sim_sid".to_owned()),
                    Just("data_upload".to_owned()),
                    Just("data_total".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("data_session_sid".to_owned()),
                    Just("data_session_data_total".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A CloudEvent envelope whose `data` is arbitrary (as an object or as a string).
fn arbitrary_cloud_event() -> impl Strategy<Value = String> {
    (arbitrary_json(), any::<bool>(), 0usize..4).prop_map(|(data, as_string, kind)| {
        let suffix = [
            "data-session.updated",
            "data-session.ended",
            "attachment.failed",
            "x",
        ][kind];
        let data = if as_string {
            Value::String(data.to_string())
        } else {
            data
        };
        serde_json::json!({
            "type": format!("com.kore.iot.supersim.connection.{suffix}"),
            "source": "kore-events",
            "id": "EZ1",
            "time": "2024-11-03T10:15:00Z",
            "data": data,
        })
        .to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn record_and_body_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_events(&bytes);
    }

    #[test]
    fn record_and_body_parser_never_panics_on_json(value in arbitrary_json()) {
        let _ = parse_events(value.to_string().as_bytes());
        let _ = parse_events(Value::Array(vec![value.clone(), value]).to_string().as_bytes());
    }

    #[test]
    fn event_parser_never_panics_on_arbitrary_data(json in arbitrary_cloud_event()) {
        let _ = parse_event(&json);
    }

    #[test]
    fn form_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), text in "[a-zA-Z0-9=&%+]{0,64}") {
        let _ = parse_form(&bytes);
        let mut headers = HeaderMap::new();
        headers.insert("kore-idempotency-token", HeaderValue::from_static("RQ1"));
        for kind in CallbackKind::ALL {
            let _ = parse_callback(kind, &bytes, &headers);
            let _ = parse_callback(kind, text.as_bytes(), &headers);
            let _ = parse_callback(kind, text.as_bytes(), &HeaderMap::new());
        }
    }

    #[test]
    fn signature_verifiers_never_panic(
        url in ".{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..128),
        signature in proptest::option::of(".{0,70}"),
        method in "[A-Z]{0,6}",
    ) {
        let _ = verify_kore_signature(&["secret"], &method, &url, &body, signature.as_deref());
        let _ = verify_kore_signature::<&str>(&[], &method, &url, &body, signature.as_deref());
        let params = vec![("a".to_owned(), "b".to_owned())];
        let _ = verify_twilio_signature(&["token"], &url, &params, &body, signature.as_deref());
        let with_hash = format!("{url}?bodySHA256=zz");
        let _ = verify_twilio_signature(&["token"], &with_hash, &[], &body, signature.as_deref());
    }

    /// Key order and whitespace never change the data hash.
    #[test]
    fn data_hash_ignores_key_order_and_whitespace(value in arbitrary_json()) {
        let object: Map<String, Value> = match value {
            Value::Object(map) => map,
            other => Map::from_iter([("k".to_owned(), other)]),
        };
        let reversed: Map<String, Value> = object.clone().into_iter().rev().collect();
        let pretty: Map<String, Value> =
            serde_json::from_str(&serde_json::to_string_pretty(&reversed).unwrap()).unwrap();
        prop_assert_eq!(DataHash::of_data(&object), DataHash::of_data(&pretty));
    }
}
