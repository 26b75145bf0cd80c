//! Segment `track` calls made from stored events, and the limits of Segment's batch endpoint
//! (`POST /v1/batch`): 32 KB per call and 500 KB per request. Pure functions, no I/O.

use std::borrow::Cow;
use std::ops::Range;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use kore_ingest_core::config::comma_list;
use kore_ingest_core::pack::Limits;

/// Most bytes of one call. Segment says 32 KB; read as 32,000 so that either reading of
/// "KB" holds.
pub const MAX_CALL_BYTES: usize = 32_000;
/// Most bytes of one request body: 500 KB, read the same way.
pub const MAX_REQUEST_BYTES: usize = 500_000;

/// What a request body adds around its calls: `{"batch":[` and `]}`.
const BODY_OVERHEAD: usize = r#"{"batch":[]}"#.len();

/// `data` fields removed last when a call must be trimmed: what identifies the event.
const KEPT_LONGEST: [&str; 8] = [
    "event_sid",
    "event_type",
    "account_sid",
    "sim_sid",
    "fleet_sid",
    "timestamp",
    "data_session_sid",
    "sim_iccid",
];

/// The note on a trimmed call lists at most this many removed names, each cut to
/// `NOTED_NAME_BYTES`, so the note itself stays small whatever `data` holds.
const NOTED_NAMES: usize = 20;
const NOTED_NAME_BYTES: usize = 64;

/// `data` fields that never leave the account (`SEGMENT_OMIT_PROPERTIES`): top-level names
/// (`imei`) or dotted paths into objects (`location.cell_id`). Empty: `data` goes as received,
/// as Twilio's Segment sink sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OmittedProperties(Vec<Vec<String>>);

impl OmittedProperties {
    /// A comma-separated list of names or dotted paths; `Err` names the bad entry.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut paths = Vec::new();
        for entry in comma_list(list) {
            let path: Vec<String> = entry.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!(
                    "`{entry}` is not a field name or a dotted path such as location.cell_id"
                ));
            }
            paths.push(path);
        }
        Ok(OmittedProperties(paths))
    }

    /// `data` without the omitted fields: the same text when none of them is in it.
    pub fn apply<'a>(&self, data: &'a str) -> Cow<'a, str> {
        if self.0.is_empty() {
            return Cow::Borrowed(data);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(data) else {
            // Not JSON: `track_call` says so; nothing to leave out.
            return Cow::Borrowed(data);
        };
        let mut removed = false;
        for path in &self.0 {
            removed |= remove_path(&mut value, path);
        }
        match removed {
            true => Cow::Owned(value.to_string()),
            false => Cow::Borrowed(data),
        }
    }
}

/// Removes the field at `path` from `value`; whether it was there.
fn remove_path(value: &mut Value, path: &[String]) -> bool {
    match path {
        [] => false,
        [name] => value
            .as_object_mut()
            .is_some_and(|object| object.remove(name).is_some()),
        [name, rest @ ..] => value
            .get_mut(name.as_str())
            .is_some_and(|inner| remove_path(inner, rest)),
    }
}

/// The stored event a call is made of.
#[derive(Debug, Clone)]
pub struct EventFields<'a> {
    /// The dedupe key, which becomes Segment's `messageId`.
    pub message_id: &'a str,
    /// The CloudEvent type, in full.
    pub event_type: &'a str,
    pub event_time: DateTime<Utc>,
    /// `data` exactly as received.
    pub data: &'a str,
}

/// One serialized call, ready to go into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackCall {
    pub json: String,
    /// Set when `properties` lost fields to fit.
    pub trimmed: Option<Trim>,
}

/// What trimming left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    /// Size of the call with `data` untouched.
    pub original_bytes: usize,
    /// The removed `data` fields, in the order they were removed (largest first).
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the stored `data` is not JSON: {0}")]
    DataNotJson(String),
    #[error("even without its properties the call takes {bytes} bytes, over the {limit} allowed")]
    TooLarge { bytes: usize, limit: usize },
}

#[derive(Serialize)]
struct Call<'a> {
    #[serde(rename = "type")]
    call_type: &'static str,
    #[serde(rename = "messageId")]
    message_id: &'a str,
    event: &'a str,
    #[serde(rename = "anonymousId")]
    anonymous_id: &'a str,
    timestamp: &'a str,
    properties: &'a RawValue,
    context: &'a Value,
}

/// Segment's `event`: the type's suffix after `supersim.connection.`
/// (`data-session.updated`), else the whole type (test events, unknown types).
pub fn event_name(event_type: &str) -> &str {
    const MARKER: &str = "supersim.connection.";
    match event_type.find(MARKER) {
        Some(at) if at + MARKER.len() < event_type.len() => &event_type[at + MARKER.len()..],
        _ => event_type,
    }
}

/// Segment's `anonymousId`: the SIM, else the account, else the event itself (a call needs
/// one of `userId` and `anonymousId`).
pub fn anonymous_id<'a>(data: &'a Map<String, Value>, message_id: &'a str) -> &'a str {
    ["sim_sid", "account_sid"]
        .iter()
        .find_map(|field| {
            data.get(*field)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or(message_id)
}

/// The call for one event, with `properties` the untouched `data` when the call fits in
/// `limit` bytes; otherwise the largest `data` fields are left out until it fits (the ids
/// last), and `context.kore_ingest.trimmed` says what was left out.
pub fn track_call(fields: &EventFields<'_>, limit: usize) -> Result<TrackCall, CallError> {
    let data = fields.data.trim();
    let parsed: Value =
        serde_json::from_str(data).map_err(|e| CallError::DataNotJson(e.to_string()))?;
    let (mut properties, untouched) = match parsed {
        Value::Object(map) => {
            let raw = RawValue::from_string(data.to_owned())
                .map_err(|e| CallError::DataNotJson(e.to_string()))?;
            (map, raw)
        }
        // Never written by the parser, which wants an object; a property object all the same.
        other => {
            let mut map = Map::new();
            map.insert("data".to_owned(), other);
            let raw = raw_object(&map)?;
            (map, raw)
        }
    };
    let anonymous = anonymous_id(&properties, fields.message_id).to_owned();
    let timestamp = fields
        .event_time
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let render = |properties: &RawValue, context: &Value| {
        serialize(&Call {
            call_type: "track",
            message_id: fields.message_id,
            event: event_name(fields.event_type),
            anonymous_id: &anonymous,
            timestamp: &timestamp,
            properties,
            context,
        })
    };

    let json = render(&untouched, &library_context())?;
    if json.len() <= limit {
        return Ok(TrackCall {
            json,
            trimmed: None,
        });
    }

    let original_bytes = json.len();
    let mut order: Vec<(String, usize, bool)> = properties
        .iter()
        .map(|(name, value)| {
            let size = name.len() + 4 + serde_json::to_string(value).map_or(0, |s| s.len());
            (name.clone(), size, KEPT_LONGEST.contains(&name.as_str()))
        })
        .collect();
    // Others before the ids, larger before smaller, then by name for a stable order.
    order.sort_by(|a, b| a.2.cmp(&b.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
    let mut removed: Vec<String> = Vec::new();
    let mut next = 0;
    let mut size = original_bytes;
    loop {
        // Remove, by their estimated size, as many fields as the excess needs; the note
        // grows meanwhile, so render and check again.
        let mut excess = size.saturating_sub(limit);
        while excess > 0 && next < order.len() {
            let (name, field_size, _) = &order[next];
            properties.remove(name);
            removed.push(name.clone());
            excess = excess.saturating_sub(*field_size);
            next += 1;
        }
        let context = trimmed_context(original_bytes, &removed);
        let json = render(&raw_object(&properties)?, &context)?;
        if json.len() <= limit {
            return Ok(TrackCall {
                json,
                trimmed: Some(Trim {
                    original_bytes,
                    removed,
                }),
            });
        }
        if next == order.len() {
            return Err(CallError::TooLarge {
                bytes: json.len(),
                limit,
            });
        }
        size = json.len();
    }
}

fn serialize(call: &Call<'_>) -> Result<String, CallError> {
    serde_json::to_string(call).map_err(|e| CallError::DataNotJson(e.to_string()))
}

fn raw_object(map: &Map<String, Value>) -> Result<Box<RawValue>, CallError> {
    serde_json::value::to_raw_value(map).map_err(|e| CallError::DataNotJson(e.to_string()))
}

fn library_context() -> Value {
    json!({"library": {"name": "kore-ingest", "version": env!("CARGO_PKG_VERSION")}})
}

fn trimmed_context(original_bytes: usize, removed: &[String]) -> Value {
    let names: Vec<&str> = removed
        .iter()
        .take(NOTED_NAMES)
        .map(|name| cut(name, NOTED_NAME_BYTES))
        .collect();
    let mut context = library_context();
    context["kore_ingest"] = json!({
        "trimmed": {
            "reason": "the event is larger than a Segment call may be",
            "original_bytes": original_bytes,
            "removed_properties": names,
            "removed_count": removed.len(),
        }
    });
    context
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Consecutive calls, by their sizes, grouped into requests whose bodies stay within
/// `max_request` bytes. A call larger than a request on its own still gets a request.
pub fn pack(sizes: &[usize], max_request: usize) -> Vec<Range<usize>> {
    kore_ingest_core::pack::pack(
        sizes,
        Limits {
            max_bytes: max_request,
            max_items: usize::MAX,
            overhead: BODY_OVERHEAD,
            // The comma between two calls.
            separator: 1,
        },
    )
}

/// The body of one batch request: `{"batch":[call,...]}`, its size what [`pack`] counted.
pub fn request_body<'a>(calls: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from(r#"{"batch":["#);
    for (i, call) in calls.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(call);
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const KORE_DATA: &str = r#"{"event_sid":"EZ00000000000000000000000000000001","event_type":"com.kore.iot.supersim.connection.data-session.updated","account_sid":"AC00000000000000000000000000000001","sim_sid":"HS00000000000000000000000000000001","timestamp":"2024-11-04T10:15:00Z","data_upload":1024,"data_download":2048,"data_total":3072,"network":{"sid":"HW1","iso_country":"US"},"location":null,"price":1.10}"#;

    fn fields<'a>(data: &'a str, event_type: &'a str) -> EventFields<'a> {
        EventFields {
            message_id: "EZ00000000000000000000000000000001",
            event_type,
            event_time: DateTime::parse_from_rfc3339("2024-11-04T10:15:00.5842087+00:00")
                .unwrap()
                .with_timezone(&Utc),
            data,
        }
    }

    const UPDATED: &str = "com.kore.iot.supersim.connection.data-session.updated";

    #[test]
    fn a_call_carries_the_event_untouched() {
        let call = track_call(&fields(KORE_DATA, UPDATED), MAX_CALL_BYTES).unwrap();
        assert_eq!(call.trimmed, None);
        // Byte for byte, key order and number forms included (1.10 stays 1.10).
        assert!(call.json.contains(&format!(r#""properties":{KORE_DATA}"#)));
        let parsed: Value = serde_json::from_str(&call.json).unwrap();
        assert_eq!(parsed["type"], "track");
        assert_eq!(parsed["messageId"], "EZ00000000000000000000000000000001");
        assert_eq!(parsed["event"], "data-session.updated");
        assert_eq!(parsed["anonymousId"], "HS00000000000000000000000000000001");
        assert_eq!(parsed["timestamp"], "2024-11-04T10:15:00.584Z");
        assert_eq!(
            parsed["properties"],
            serde_json::from_str::<Value>(KORE_DATA).unwrap()
        );
        assert_eq!(parsed["context"]["library"]["name"], "kore-ingest");
    }

    #[test]
    fn whitespace_of_a_pretty_printed_data_string_is_kept() {
        // Twilio's Kinesis sink sends `data` as a string holding pretty-printed JSON.
        let pretty = "{\n  \"sim_sid\": \"HS1\",\n  \"event_sid\": \"EZ1\"\n}";
        let call = track_call(&fields(pretty, UPDATED), MAX_CALL_BYTES).unwrap();
        assert!(call.json.contains(pretty), "{}", call.json);
    }

    #[test]
    fn the_anonymous_id_is_the_sim_else_the_account_else_the_event() {
        let no_sim = r#"{"account_sid":"AC1","sim_sid":null}"#;
        let call = track_call(&fields(no_sim, UPDATED), MAX_CALL_BYTES).unwrap();
        assert!(
            call.json.contains(r#""anonymousId":"AC1""#),
            "{}",
            call.json
        );
        let neither = r#"{"test_id":"t-1"}"#;
        let call = track_call(&fields(neither, UPDATED), MAX_CALL_BYTES).unwrap();
        assert!(
            call.json
                .contains(r#""anonymousId":"EZ00000000000000000000000000000001""#),
            "{}",
            call.json
        );
    }

    #[test]
    fn event_names_are_the_type_suffix() {
        assert_eq!(
            event_name("com.twilio.iot.supersim.connection.attachment.accepted"),
            "attachment.accepted"
        );
        assert_eq!(event_name(UPDATED), "data-session.updated");
        assert_eq!(
            event_name("com.kore.eventstreams.test.event"),
            "com.kore.eventstreams.test.event"
        );
        assert_eq!(
            event_name("x.supersim.connection."),
            "x.supersim.connection."
        );
    }

    /// A real event with a 40 KB `error.message` and a large `location`.
    fn forty_kilobytes() -> String {
        let mut data: Value = serde_json::from_str(KORE_DATA).unwrap();
        data["error"] = json!({"code": 83701, "message": "x".repeat(40_000)});
        data["location"] = json!({"cell_id": "y".repeat(3_000), "lat": 1.5, "lon": 2.5});
        data.to_string()
    }

    #[test]
    fn an_oversized_event_is_trimmed_to_fit_and_noted() {
        let data = forty_kilobytes();
        let call = track_call(&fields(&data, UPDATED), MAX_CALL_BYTES).unwrap();
        assert!(call.json.len() <= MAX_CALL_BYTES, "{}", call.json.len());
        let trim = call.trimmed.clone().unwrap();
        assert_eq!(trim.removed, ["error"], "only what it takes");
        assert!(trim.original_bytes > 40_000);
        let parsed: Value = serde_json::from_str(&call.json).unwrap();
        assert_eq!(parsed["properties"]["location"]["lat"], 1.5);
        assert_eq!(
            parsed["properties"]["sim_sid"],
            "HS00000000000000000000000000000001"
        );
        let note = &parsed["context"]["kore_ingest"]["trimmed"];
        assert_eq!(note["removed_properties"], json!(["error"]));
        assert_eq!(note["removed_count"], 1);
        assert_eq!(note["original_bytes"], trim.original_bytes);

        // Tighter: the location goes too, the ids stay.
        let call = track_call(&fields(&data, UPDATED), 2_000).unwrap();
        assert!(call.json.len() <= 2_000);
        assert_eq!(call.trimmed.unwrap().removed, ["error", "location"]);
    }

    #[test]
    fn ids_go_last_and_a_call_too_large_even_empty_is_an_error() {
        let data = json!({"sim_sid": "HS1", "blob": "z".repeat(5_000)}).to_string();
        let call = track_call(&fields(&data, UPDATED), 1_000).unwrap();
        assert_eq!(call.trimmed.unwrap().removed, ["blob"]);
        // The sim_sid names the call (anonymousId) even once it left the properties.
        let huge_sim = json!({"sim_sid": "H".repeat(5_000)}).to_string();
        assert!(matches!(
            track_call(&fields(&huge_sim, UPDATED), 1_000),
            Err(CallError::TooLarge { .. })
        ));
    }

    #[test]
    fn many_small_fields_are_trimmed_with_a_bounded_note() {
        let mut data = Map::new();
        for i in 0..5_000 {
            data.insert(format!("field_{i:05}_{}", "n".repeat(80)), json!(i));
        }
        let data = Value::Object(data).to_string();
        let call = track_call(&fields(&data, UPDATED), MAX_CALL_BYTES).unwrap();
        assert!(call.json.len() <= MAX_CALL_BYTES);
        let parsed: Value = serde_json::from_str(&call.json).unwrap();
        let note = &parsed["context"]["kore_ingest"]["trimmed"];
        assert_eq!(note["removed_properties"].as_array().unwrap().len(), 20);
        assert!(note["removed_count"].as_u64().unwrap() > 1_000);
    }

    #[test]
    fn data_that_is_not_json_is_an_error() {
        assert!(matches!(
            track_call(&fields("{not json", UPDATED), MAX_CALL_BYTES),
            Err(CallError::DataNotJson(_))
        ));
    }

    #[test]
    fn requests_stay_under_the_limit_in_order() {
        let sizes = [100, 200, 300, 400, 50];
        let ranges = pack(&sizes, BODY_OVERHEAD + 100 + 1 + 200);
        assert_eq!(ranges, [0..2, 2..3, 3..4, 4..5]);
        // Exactly at the limit fits; one byte more does not.
        assert_eq!(
            pack(&[10, 10], BODY_OVERHEAD + 21),
            vec![Range { start: 0, end: 2 }]
        );
        assert_eq!(pack(&[10, 10], BODY_OVERHEAD + 20), [0..1, 1..2]);
        assert_eq!(pack(&[], 100), Vec::<Range<usize>>::new());
        // A call larger than a request still goes, alone.
        assert_eq!(pack(&[10, 1_000, 10], 100), [0..1, 1..2, 2..3]);
    }

    #[test]
    fn a_packed_body_is_what_pack_counted() {
        let calls: Vec<TrackCall> = (0..40)
            .map(|i| {
                let data =
                    json!({"sim_sid": format!("HS{i}"), "pad": "p".repeat(20_000 + i)}).to_string();
                let id = format!("EZ{i}");
                let f = EventFields {
                    message_id: &id,
                    ..fields(&data, UPDATED)
                };
                track_call(&f, MAX_CALL_BYTES).unwrap()
            })
            .collect();
        let sizes: Vec<usize> = calls.iter().map(|c| c.json.len()).collect();
        let ranges = pack(&sizes, MAX_REQUEST_BYTES);
        assert!(ranges.len() > 1);
        let mut seen = 0;
        for range in ranges {
            let body = request_body(calls[range.clone()].iter().map(|c| c.json.as_str()));
            assert!(body.len() <= MAX_REQUEST_BYTES, "{}", body.len());
            let counted =
                BODY_OVERHEAD + sizes[range.clone()].iter().sum::<usize>() + range.len() - 1;
            assert_eq!(body.len(), counted);
            let parsed: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(parsed["batch"].as_array().unwrap().len(), range.len());
            assert_eq!(range.start, seen);
            seen = range.end;
        }
        assert_eq!(seen, 40);
    }
}
