//! The read side: SIM rollups for a period (by SIM, account, fleet or all), data sessions
//! and their gaps, and which providers delivered the events of a time range. Every read is
//! a key lookup or a query; nothing scans the table.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Days, Utc};

use super::items::{key, number_attr, string_attr};
use super::{Item, LedgerError, UsageLedger, keys, timestamp};
use crate::event::DataVolume;

/// One SIM's usage for one period (`YYYY-MM-DD` or `YYYY-MM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRollup {
    pub sim_sid: String,
    pub period: String,
    pub account_sid: Option<String>,
    pub fleet_sid: Option<String>,
    pub usage: DataVolume,
    pub usage_events: u64,
}

impl UsageRollup {
    fn from_item(item: &Item) -> Self {
        UsageRollup {
            sim_sid: string_attr(item, "sim_sid").unwrap_or_default().to_owned(),
            period: string_attr(item, "period").unwrap_or_default().to_owned(),
            account_sid: string_attr(item, "account_sid").map(str::to_owned),
            fleet_sid: string_attr(item, "fleet_sid").map(str::to_owned),
            usage: DataVolume {
                upload: number_attr(item, "data_upload").unwrap_or(0),
                download: number_attr(item, "data_download").unwrap_or(0),
                total: number_attr(item, "data_total").unwrap_or(0),
            },
            usage_events: number_attr(item, "usage_events").unwrap_or(0),
        }
    }
}

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

    fn from_item(item: &Item) -> Self {
        let volume = |prefix: &str| DataVolume {
            upload: number_attr(item, &format!("{prefix}_upload")).unwrap_or(0),
            download: number_attr(item, &format!("{prefix}_download")).unwrap_or(0),
            total: number_attr(item, &format!("{prefix}_total")).unwrap_or(0),
        };
        SessionSummary {
            sim_sid: string_attr(item, "sim_sid").unwrap_or_default().to_owned(),
            session_sid: string_attr(item, "session_sid")
                .unwrap_or_default()
                .to_owned(),
            start_time: string_attr(item, "start_time").map(str::to_owned),
            end_time: string_attr(item, "end_time").map(str::to_owned),
            windows: volume("window"),
            windows_received: number_attr(item, "windows_received").unwrap_or(0),
            cumulative: item
                .contains_key("cumulative_total")
                .then(|| volume("cumulative")),
        }
    }
}

/// Which provider and path delivered one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDeliveries {
    pub event_sid: String,
    pub event_time: String,
    /// `provider#path` tags, e.g. `kore#kinesis`.
    pub deliveries: Vec<String>,
}

impl EventDeliveries {
    pub fn delivered_by(&self, provider: &str) -> bool {
        self.deliveries
            .iter()
            .any(|tag| tag.split('#').next() == Some(provider))
    }
}

impl UsageLedger {
    async fn query_all(
        &self,
        index: Option<&str>,
        key_condition: &str,
        values: &[(&str, String)],
    ) -> Result<Vec<Item>, LedgerError> {
        let mut query = self
            .client
            .query()
            .table_name(self.table_name())
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(key_condition);
        for (name, value) in values {
            query = query.expression_attribute_values(*name, AttributeValue::S(value.clone()));
        }
        query
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| LedgerError::from_sdk("Query", e))
    }

    /// One SIM's rollup for a period, read consistently from the table.
    pub async fn sim_usage(
        &self,
        sim_sid: &str,
        period: &str,
    ) -> Result<Option<UsageRollup>, LedgerError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table_name())
            .set_key(Some(key(keys::sim_pk(sim_sid), &keys::rollup_sk(period))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("GetItem", e))?;
        Ok(output.item.as_ref().map(UsageRollup::from_item))
    }

    /// Every SIM's rollup for a period, from the period index (spread over shards).
    pub async fn period_usage(&self, period: &str) -> Result<Vec<UsageRollup>, LedgerError> {
        let mut rollups = Vec::new();
        for shard in 0..keys::SHARDS {
            let items = self
                .query_all(
                    Some("gsi3"),
                    "gsi3pk = :pk",
                    &[(":pk", keys::period_pk(period, shard))],
                )
                .await?;
            rollups.extend(items.iter().map(UsageRollup::from_item));
        }
        rollups.sort_by(|a, b| a.sim_sid.cmp(&b.sim_sid));
        Ok(rollups)
    }

    /// The rollups of an account's SIMs for a period.
    pub async fn account_usage(
        &self,
        account_sid: &str,
        period: &str,
    ) -> Result<Vec<UsageRollup>, LedgerError> {
        let items = self
            .query_all(
                Some("gsi1"),
                "gsi1pk = :pk",
                &[(":pk", keys::account_period_pk(account_sid, period))],
            )
            .await?;
        Ok(items.iter().map(UsageRollup::from_item).collect())
    }

    /// The rollups of a fleet's SIMs for a period.
    pub async fn fleet_usage(
        &self,
        fleet_sid: &str,
        period: &str,
    ) -> Result<Vec<UsageRollup>, LedgerError> {
        let items = self
            .query_all(
                Some("gsi2"),
                "gsi2pk = :pk",
                &[(":pk", keys::fleet_period_pk(fleet_sid, period))],
            )
            .await?;
        Ok(items.iter().map(UsageRollup::from_item).collect())
    }

    /// A SIM's data sessions.
    pub async fn sim_sessions(&self, sim_sid: &str) -> Result<Vec<SessionSummary>, LedgerError> {
        let items = self
            .query_all(
                None,
                "pk = :pk AND begins_with(sk, :prefix)",
                &[
                    (":pk", keys::sim_pk(sim_sid)),
                    (":prefix", keys::SESSION_SK_PREFIX.to_owned()),
                ],
            )
            .await?;
        Ok(items.iter().map(SessionSummary::from_item).collect())
    }

    /// Events whose time is in `[from, to)`, with who delivered each, from the event index.
    pub async fn events_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<EventDeliveries>, LedgerError> {
        let (low, high) = (timestamp(from), timestamp(to));
        let mut events = Vec::new();
        let mut day = from.date_naive();
        while day <= to.date_naive() {
            let day_text = day.format("%Y-%m-%d").to_string();
            for shard in 0..keys::SHARDS {
                let items = self
                    .query_all(
                        Some("gsi1"),
                        "gsi1pk = :pk AND gsi1sk BETWEEN :low AND :high",
                        &[
                            (":pk", keys::events_by_day_pk(&day_text, shard)),
                            (":low", low.clone()),
                            (":high", high.clone()),
                        ],
                    )
                    .await?;
                events.extend(items.iter().filter_map(|item| {
                    let event_time = string_attr(item, "event_time")?;
                    (event_time < high.as_str()).then(|| EventDeliveries {
                        event_sid: string_attr(item, "event_sid")
                            .unwrap_or_default()
                            .to_owned(),
                        event_time: event_time.to_owned(),
                        deliveries: match item.get("deliveries") {
                            Some(AttributeValue::Ss(tags)) => tags.clone(),
                            _ => Vec::new(),
                        },
                    })
                }));
            }
            let Some(next) = day.checked_add_days(Days::new(1)) else {
                break;
            };
            day = next;
        }
        events.sort_by(|a, b| a.event_time.cmp(&b.event_time));
        Ok(events)
    }
}
