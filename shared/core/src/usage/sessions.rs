//! Data sessions as one SIM's usage events show them: the windows received, summed, against
//! the highest running total the provider reported. A session whose windows fall short of
//! its running total has a gap: an event was lost, or has not arrived yet.

use std::collections::BTreeMap;

use super::counts::Overflow;
use crate::event::{ConnectionEvent, DataVolume};
use crate::time::timestamp;

/// A data session: what its windows add up to, and the highest running total reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub sim_sid: String,
    pub session_sid: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub windows: DataVolume,
    pub windows_received: u64,
    pub cumulative: Option<DataVolume>,
}

impl SessionSummary {
    /// The windows received do not add up to the highest cumulative total: an event was
    /// lost (or not yet received).
    pub fn has_gap(&self) -> bool {
        self.cumulative
            .is_some_and(|c| c.total != self.windows.total)
    }
}

/// The sessions that `events` (one SIM's usage events) show, by session sid.
pub fn sessions_of<'a>(
    sim_sid: &str,
    events: impl IntoIterator<Item = &'a ConnectionEvent>,
) -> Result<Vec<SessionSummary>, Overflow> {
    let mut sessions: BTreeMap<String, SessionSummary> = BTreeMap::new();
    for event in events {
        let (Some(session), Some(window)) = (&event.session, event.usage) else {
            continue;
        };
        let summary = sessions
            .entry(session.sid.clone())
            .or_insert_with(|| SessionSummary {
                sim_sid: sim_sid.to_owned(),
                session_sid: session.sid.clone(),
                start_time: None,
                end_time: None,
                windows: DataVolume::default(),
                windows_received: 0,
                cumulative: None,
            });
        summary.windows = summary.windows.checked_add(window).ok_or_else(|| {
            Overflow::new(format!("SIM {sim_sid}"), format!("session {}", session.sid))
        })?;
        summary.windows_received += 1;
        if let Some(start) = session.start_time {
            summary.start_time.get_or_insert_with(|| timestamp(start));
        }
        if let Some(end) = session.end_time {
            let end = timestamp(end);
            if summary.end_time.as_ref().is_none_or(|e| *e < end) {
                summary.end_time = Some(end);
            }
        }
        if let Some(cumulative) = session.cumulative
            && summary
                .cumulative
                .is_none_or(|c| c.total < cumulative.total)
        {
            summary.cumulative = Some(cumulative);
        }
    }
    Ok(sessions.into_values().collect())
}
