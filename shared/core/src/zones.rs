//! Roaming zones: the file `kore-usage zones apply` takes, read whole or refused whole with
//! the field and the reason, and the one rule that puts usage in a zone (its network's zone,
//! else its country's, else the default).
//!
//! ```json
//! {"zones": [{"name": "EU", "countries": ["DE", "FR"]},
//!            {"name": "US-home", "networks": ["HW.."]},
//!            {"name": "ROW", "default": true}]}
//! ```

use std::collections::BTreeMap;

use serde_json::Value;

use crate::sid::is_sid;

/// Why a zones file is refused: the field (`zones[1].countries[0]`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ZonesError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> ZonesError {
    ZonesError {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub countries: Vec<String>,
    pub networks: Vec<String>,
    pub default: bool,
}

/// The zones, as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zones {
    zones: Vec<Zone>,
    by_network: BTreeMap<String, usize>,
    by_country: BTreeMap<String, usize>,
    default: usize,
}

impl Zones {
    /// Reads a zones file, or refuses it whole with the first fault.
    pub fn parse_json(text: &str) -> Result<Zones, ZonesError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| refuse("(file)", format!("not JSON: {e}")))?;
        let list = root
            .get("zones")
            .and_then(Value::as_array)
            .ok_or_else(|| refuse("zones", "must be a list of zones"))?;
        if root.as_object().is_some_and(|o| o.len() != 1) {
            return Err(refuse("(file)", "holds only `zones`"));
        }
        let mut zones = Vec::new();
        for (i, zone) in list.iter().enumerate() {
            zones.push(zone_of(&format!("zones[{i}]"), zone)?);
        }
        Zones::new(zones)
    }

    /// The zones, checked: unique names, each network and country in one zone at most,
    /// exactly one default.
    pub fn new(zones: Vec<Zone>) -> Result<Zones, ZonesError> {
        let (mut by_network, mut by_country) = (BTreeMap::new(), BTreeMap::new());
        let mut names = BTreeMap::new();
        let mut defaults = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            if let Some(first) = names.insert(zone.name.clone(), i) {
                return Err(refuse(
                    format!("zones[{i}].name"),
                    format!("`{}` is the name of zones[{first}] too", zone.name),
                ));
            }
            for (kind, values, index) in [
                ("networks", &zone.networks, &mut by_network),
                ("countries", &zone.countries, &mut by_country),
            ] {
                for (j, value) in values.iter().enumerate() {
                    if let Some(first) = index.insert(value.clone(), i) {
                        return Err(refuse(
                            format!("zones[{i}].{kind}[{j}]"),
                            format!("`{value}` is in zones[{first}] already"),
                        ));
                    }
                }
            }
            if zone.default {
                defaults.push(i);
            }
        }
        let [default] = defaults[..] else {
            return Err(refuse(
                "zones",
                format!(
                    "exactly one zone must be the default (\"default\": true), not {}",
                    defaults.len()
                ),
            ));
        };
        Ok(Zones {
            zones,
            by_network,
            by_country,
            default,
        })
    }

    /// The zone of usage on `network_sid` in `iso_country`: a network match wins over a
    /// country match; usage with neither known goes to the default zone.
    pub fn zone_of(&self, network_sid: Option<&str>, iso_country: Option<&str>) -> &str {
        let index = network_sid
            .and_then(|n| self.by_network.get(n))
            .or_else(|| iso_country.and_then(|c| self.by_country.get(c)))
            .copied()
            .unwrap_or(self.default);
        &self.zones[index].name
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The file that reads back as these zones.
    pub fn to_json(&self) -> Value {
        let zones: Vec<Value> = self
            .zones
            .iter()
            .map(|z| {
                let mut zone = serde_json::Map::new();
                zone.insert("name".into(), z.name.clone().into());
                if !z.countries.is_empty() {
                    zone.insert("countries".into(), z.countries.clone().into());
                }
                if !z.networks.is_empty() {
                    zone.insert("networks".into(), z.networks.clone().into());
                }
                if z.default {
                    zone.insert("default".into(), true.into());
                }
                Value::Object(zone)
            })
            .collect();
        serde_json::json!({ "zones": zones })
    }
}

fn zone_of(field: &str, zone: &Value) -> Result<Zone, ZonesError> {
    let object = zone
        .as_object()
        .ok_or_else(|| refuse(field, "must be an object"))?;
    for key in object.keys() {
        if !["name", "countries", "networks", "default"].contains(&key.as_str()) {
            return Err(refuse(
                format!("{field}.{key}"),
                "is not a field of a zone (name, countries, networks, default)",
            ));
        }
    }
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
        .ok_or_else(|| refuse(format!("{field}.name"), "must be a non-empty name"))?;
    let list = |key: &str,
                valid: fn(&str) -> bool,
                what: &str|
     -> Result<Vec<String>, ZonesError> {
        let Some(value) = object.get(key) else {
            return Ok(Vec::new());
        };
        let items = value
            .as_array()
            .ok_or_else(|| refuse(format!("{field}.{key}"), "must be a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(j, item)| {
                item.as_str()
                    .filter(|s| valid(s))
                    .map(str::to_owned)
                    .ok_or_else(|| refuse(format!("{field}.{key}[{j}]"), format!("must be {what}")))
            })
            .collect()
    };
    let countries = list(
        "countries",
        |c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
        "an ISO 3166 alpha-2 code in capitals, e.g. DE",
    )?;
    let networks = list(
        "networks",
        |n| is_sid(n, "HW"),
        "a network SID: HW and 32 lowercase hexadecimal digits",
    )?;
    let default = match object.get("default") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(refuse(format!("{field}.default"), "must be true or false")),
    };
    Ok(Zone {
        name: name.to_owned(),
        countries,
        networks,
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "HW00000000000000000000000000000001";

    #[test]
    fn a_network_match_wins_over_a_country_and_the_rest_is_the_default() {
        let zones = Zones::parse_json(&format!(
            r#"{{"zones": [{{"name": "EU", "countries": ["DE", "FR"]}},
                           {{"name": "US-home", "networks": ["{HOME}"]}},
                           {{"name": "ROW", "default": true}}]}}"#
        ))
        .unwrap();
        assert_eq!(zones.zone_of(Some("HWx"), Some("DE")), "EU");
        assert_eq!(zones.zone_of(Some(HOME), Some("DE")), "US-home");
        assert_eq!(zones.zone_of(Some(HOME), None), "US-home");
        assert_eq!(zones.zone_of(Some("HWx"), Some("US")), "ROW");
        assert_eq!(zones.zone_of(None, None), "ROW");
        assert_eq!(
            Zones::parse_json(&zones.to_json().to_string()).unwrap(),
            zones
        );
    }

    #[test]
    fn every_refusal_names_the_field() {
        for (text, field) in [
            (r#"{"zones": [{"name": "A"}]}"#, "zones"),
            (
                r#"{"zones": [{"name": "A", "default": true}, {"name": "B", "default": true}]}"#,
                "zones",
            ),
            (
                r#"{"zones": [{"name": "A", "default": true}, {"name": "A"}]}"#,
                "zones[1].name",
            ),
            (
                r#"{"zones": [{"name": "A", "countries": ["de"], "default": true}]}"#,
                "zones[0].countries[0]",
            ),
            (
                r#"{"zones": [{"name": "A", "countries": ["DE"], "default": true}, {"name": "B", "countries": ["FR", "DE"]}]}"#,
                "zones[1].countries[1]",
            ),
            (
                r#"{"zones": [{"name": "A", "networks": ["HW1"], "default": true}]}"#,
                "zones[0].networks[0]",
            ),
            (
                r#"{"zones": [{"name": "A", "default": "yes"}]}"#,
                "zones[0].default",
            ),
            (
                r#"{"zones": [{"name": "A", "default": true, "price": 1}]}"#,
                "zones[0].price",
            ),
            (r#"{"zones": [{"default": true}]}"#, "zones[0].name"),
            (r#"{"zone": []}"#, "zones"),
            ("[", "(file)"),
        ] {
            let error = Zones::parse_json(text).unwrap_err();
            assert_eq!(error.field, field, "{text}: {error}");
        }
    }
}
