//! Typed, field-naming reads of `data`: every error names the field and the reason.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::excerpt::quoted;

use super::types::{DataVolume, EventError, MAX_AMOUNT, Network};

pub(super) const WINDOW_FIELDS: [(&str, &str); 3] = [
    ("data_upload", "data.data_upload"),
    ("data_download", "data.data_download"),
    ("data_total", "data.data_total"),
];
pub(super) const SESSION_FIELDS: [(&str, &str); 3] = [
    ("data_session_data_upload", "data.data_session_data_upload"),
    (
        "data_session_data_download",
        "data.data_session_data_download",
    ),
    ("data_session_data_total", "data.data_session_data_total"),
];

/// Typed, field-naming accessors over the `data` object. Absent and `null` are the same.
pub(super) struct DataFields<'a>(pub(super) &'a Map<String, Value>);

impl<'a> DataFields<'a> {
    pub(super) fn present(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn any_present(&self, names: [(&str, &str); 3]) -> bool {
        names.iter().any(|(name, _)| self.present(name).is_some())
    }

    pub(super) fn string(
        &self,
        name: &str,
        field: &'static str,
    ) -> Result<Option<&'a str>, EventError> {
        optional_str(self.present(name), field)
    }

    pub(super) fn owned_string(
        &self,
        name: &str,
        field: &'static str,
    ) -> Result<Option<String>, EventError> {
        Ok(self
            .string(name, field)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }

    pub(super) fn time(
        &self,
        name: &str,
        field: &'static str,
    ) -> Result<Option<DateTime<Utc>>, EventError> {
        self.string(name, field)?
            .map(|t| parse_time(t, field))
            .transpose()
    }

    pub(super) fn amount(
        &self,
        name: &str,
        field: &'static str,
    ) -> Result<Option<u64>, EventError> {
        let Some(value) = self.present(name) else {
            return Ok(None);
        };
        let Value::Number(n) = value else {
            return Err(EventError::invalid(
                field,
                format!("expected a byte count, found {}", json_type_name(value)),
            ));
        };
        let bytes = if let Some(bytes) = n.as_u64() {
            bytes
        } else {
            match n.as_f64() {
                Some(f) if f < 0.0 => {
                    return Err(EventError::invalid(field, "must not be negative"));
                }
                // Byte counts are whole; accept `1024.0` but never round a fraction into a bill.
                Some(f) if f.fract() == 0.0 && f <= 9_007_199_254_740_992.0 => f as u64,
                Some(f) if f.fract() == 0.0 => u64::MAX,
                _ => {
                    return Err(EventError::invalid(
                        field,
                        "must be a whole number of bytes",
                    ));
                }
            }
        };
        if bytes > MAX_AMOUNT {
            return Err(EventError::invalid(
                field,
                format!("{n} bytes exceeds the 2^50-byte limit of one event"),
            ));
        }
        Ok(Some(bytes))
    }

    /// `data.network`: absent or null is an unknown network; otherwise an object whose
    /// `sid`, `friendly_name` and `iso_country` are strings when present.
    pub(super) fn network(&self) -> Result<Option<Network>, EventError> {
        let Some(value) = self.present("network") else {
            return Ok(None);
        };
        let Value::Object(network) = value else {
            return Err(EventError::invalid(
                "data.network",
                format!("expected an object, found {}", json_type_name(value)),
            ));
        };
        let inner = DataFields(network);
        let network = Network {
            sid: inner.owned_string("sid", "data.network.sid")?,
            friendly_name: inner.owned_string("friendly_name", "data.network.friendly_name")?,
            iso_country: inner.owned_string("iso_country", "data.network.iso_country")?,
        };
        Ok((network != Network::default()).then_some(network))
    }

    /// Missing amounts are zero; a missing total is upload + download.
    pub(super) fn volume(
        &self,
        names: [(&str, &'static str); 3],
    ) -> Result<DataVolume, EventError> {
        let upload = self.amount(names[0].0, names[0].1)?.unwrap_or(0);
        let download = self.amount(names[1].0, names[1].1)?.unwrap_or(0);
        let total = match self.amount(names[2].0, names[2].1)? {
            Some(total) => total,
            // Both are at most 2^50: the sum cannot overflow.
            None => upload + download,
        };
        Ok(DataVolume {
            upload,
            download,
            total,
        })
    }
}

pub(super) fn optional_str<'a>(
    value: Option<&'a Value>,
    field: &'static str,
) -> Result<Option<&'a str>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::invalid(
            field,
            format!("expected a string, found {}", json_type_name(other)),
        )),
    }
}

pub(super) fn optional_string(
    value: Option<&Value>,
    field: &'static str,
) -> Result<Option<String>, EventError> {
    Ok(optional_str(value, field)?.map(str::to_owned))
}

/// Both styles: Twilio `2022-12-14T13:40:52.000Z`, KORE `2024-09-25T19:09:48.5842087+00:00`.
pub(super) fn parse_time(text: &str, field: &'static str) -> Result<DateTime<Utc>, EventError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            EventError::invalid(
                field,
                format!("{} is not an RFC 3339 time: {e}", quoted(text)),
            )
        })
}

pub(super) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
