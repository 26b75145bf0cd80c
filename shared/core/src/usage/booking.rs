//! The booking rule, in one place.
//!
//! A usage window is booked in the UTC hour of `data_session_update_end_time` (else
//! `timestamp`, else the event time), to the account, SIM, fleet, network and country that
//! this event names. A window without a network is booked to an unknown network and
//! country. A later event never moves it. [`DayBooking`] folds events into what they add to
//! one booking on one day: the write path folds a batch with it, `rebuild` a whole day.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Timelike, Utc};

use super::counts::{HourUsage, Overflow, checked_sum};
use crate::event::ConnectionEvent;
use crate::time::day_text;

/// Where a usage window is booked: the account, SIM, fleet, network and country that the
/// event carrying it names. `None` is unknown (the event did not say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Booking {
    pub sim_sid: String,
    pub account_sid: Option<String>,
    pub fleet_sid: Option<String>,
    pub network_sid: Option<String>,
    pub iso_country: Option<String>,
}

impl Booking {
    /// The booking of a usage event; `None` for events without usage.
    pub fn of(event: &ConnectionEvent) -> Option<Self> {
        event.usage?;
        let network = event.network.as_ref();
        Some(Booking {
            sim_sid: event.sim_sid.clone()?,
            account_sid: event.account_sid.clone(),
            fleet_sid: event.fleet_sid.clone(),
            network_sid: network.and_then(|n| n.sid.clone()),
            iso_country: network.and_then(|n| n.iso_country.clone()),
        })
    }

    /// `SIM HS..`: how an overflow names it.
    pub fn subject(&self) -> String {
        format!("SIM {}", self.sim_sid)
    }
}

/// Names that come with a booking; the latest known is reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookingNames {
    pub sim_iccid: Option<String>,
    pub sim_unique_name: Option<String>,
    pub network_name: Option<String>,
}

impl BookingNames {
    pub fn of(event: &ConnectionEvent) -> Self {
        BookingNames {
            sim_iccid: event.sim_iccid.clone(),
            sim_unique_name: event.sim_unique_name.clone(),
            network_name: event.network.as_ref().and_then(|n| n.friendly_name.clone()),
        }
    }
}

/// What usage events add to one booking on one UTC day: per-hour counts, the part booked
/// into a closed period (`late`), and the names of the latest usage.
#[derive(Debug, Clone, PartialEq)]
pub struct DayBooking {
    pub day: NaiveDate,
    pub booking: Booking,
    pub hours: BTreeMap<u32, HourUsage>,
    pub late: HourUsage,
    pub names: BookingNames,
    /// When the usage carrying `names` happened: the latest wins.
    pub names_at: DateTime<Utc>,
}

impl DayBooking {
    /// What one usage event adds (`late` when it falls into a closed period); `None` for
    /// an event without usage.
    pub fn of(event: &ConnectionEvent, late: bool) -> Option<Self> {
        let booking = Booking::of(event)?;
        let usage = HourUsage::window(event.usage?);
        Some(DayBooking {
            day: event.billing_day,
            booking,
            hours: BTreeMap::from([(event.booking_hour().hour(), usage)]),
            late: if late { usage } else { HourUsage::default() },
            names: BookingNames::of(event),
            names_at: event.booked_at,
        })
    }

    /// The key it is folded under.
    pub fn key(&self) -> (NaiveDate, Booking) {
        (self.day, self.booking.clone())
    }

    /// Folds `other` (the same booking and day) into this one.
    pub fn merge(&mut self, other: DayBooking) -> Result<(), Overflow> {
        let subject = || (self.booking.subject(), day_text(self.day));
        for (hour, usage) in other.hours {
            let sum = self.hours.entry(hour).or_default();
            *sum = sum.plus(usage, subject)?;
        }
        self.late = self.late.plus(other.late, subject)?;
        if other.names_at >= self.names_at {
            self.names = other.names;
            self.names_at = other.names_at;
        }
        Ok(())
    }

    /// The day's total over its hours.
    pub fn day_total(&self) -> Result<HourUsage, Overflow> {
        checked_sum(self.hours.values())
            .ok_or_else(|| Overflow::new(self.booking.subject(), day_text(self.day)))
    }
}

/// Folds what each event adds into one [`DayBooking`] per booking and day, in key order.
pub fn fold(
    parts: impl IntoIterator<Item = DayBooking>,
) -> Result<BTreeMap<(NaiveDate, Booking), DayBooking>, Overflow> {
    let mut folded: BTreeMap<(NaiveDate, Booking), DayBooking> = BTreeMap::new();
    for part in parts {
        match folded.entry(part.key()) {
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                entry.get_mut().merge(part)?
            }
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(part);
            }
        }
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;

    fn usage_event(sid: &str, end: &str, network: &str, up: u64, down: u64) -> ConnectionEvent {
        parse_event(
            &serde_json::json!({
                "type": "com.kore.iot.supersim.connection.data-session.updated",
                "source": "kore-events",
                "id": sid,
                "time": end,
                "data": {
                    "event_sid": sid, "sim_sid": "HS1", "account_sid": "AC1",
                    "fleet_sid": "HF#1", "sim_iccid": format!("iccid-{sid}"),
                    "network": {"sid": network, "iso_country": "DE", "friendly_name": network},
                    "data_session_update_end_time": end,
                    "data_upload": up, "data_download": down, "data_total": up + down,
                },
            })
            .to_string(),
        )
        .expect("a valid usage event")
    }

    #[test]
    fn events_of_one_booking_and_day_fold_per_hour_with_the_latest_names() {
        let events = [
            usage_event("EZ2", "2024-11-03T10:50:00Z", "HW1", 1, 2),
            usage_event("EZ1", "2024-11-03T10:10:00Z", "HW1", 10, 20),
            usage_event("EZ3", "2024-11-03T11:00:00Z", "HW1", 100, 200),
            usage_event("EZ4", "2024-11-03T11:05:00Z", "HW2", 7, 7),
            usage_event("EZ5", "2024-11-04T00:05:00Z", "HW1", 5, 5),
        ];
        let folded = fold(events.iter().filter_map(|e| DayBooking::of(e, false))).unwrap();
        assert_eq!(
            folded.len(),
            3,
            "HW1 on the 3rd, HW2 on the 3rd, HW1 on the 4th"
        );
        let first = folded.values().next().unwrap();
        assert_eq!(first.hours[&10].usage.total, 33);
        assert_eq!(first.hours[&10].events, 2);
        assert_eq!(first.hours[&11].usage.upload, 100);
        assert_eq!(first.day_total().unwrap().usage.total, 333);
        // The latest usage names the booking, whatever order the events came in.
        assert_eq!(first.names.sim_iccid.as_deref(), Some("iccid-EZ3"));
        assert_eq!(first.late, HourUsage::default());
    }

    #[test]
    fn a_late_event_counts_in_the_hours_and_in_late() {
        let event = usage_event("EZ1", "2024-11-03T10:10:00Z", "HW1", 10, 20);
        let late = DayBooking::of(&event, true).unwrap();
        assert_eq!(late.late.usage.total, 30);
        assert_eq!(late.hours[&10].usage.total, 30);
    }
}
