//! Usage from the rollups: a day's partitions (every shard, or one SIM's), read with no more
//! attributes than the question needs, turned into cells for `kore_ingest_core::usage`.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use futures::StreamExt;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::TimeRange;
use kore_ingest_core::usage::{
    Granularity, GroupBy, HourUsage, QueryError, UsageCell, UsageFilters, UsageQuery, UsageRecord,
    aggregate, per_sim,
};

use crate::ledger::items::rollup::{
    BOOKING_ONLY, DAY_TOTALS, DAY_TOTALS_AND_NETWORK_NAME, DAY_TOTALS_AND_SIM_NAMES, StoredRollup,
};
use crate::ledger::keys;
use crate::ledger::table::{Query, Table};

/// The rollups of one ledger table.
#[derive(Debug, Clone)]
pub struct Rollups {
    table: Table,
}

impl Rollups {
    pub fn new(table: Table) -> Self {
        Rollups { table }
    }

    /// The rollups of the given days: every SIM's (all shards of each day), or one SIM's;
    /// `projection` limits what is read of each, `None` reads all.
    pub async fn of_days(
        &self,
        days: &[NaiveDate],
        sim: Option<&str>,
        consistent: bool,
        projection: Option<&str>,
    ) -> Result<Vec<StoredRollup>, LedgerError> {
        let mut queries = Vec::new();
        for day in days {
            match sim {
                Some(sim) => queries.push(Query::prefix(
                    keys::usage_pk(*day, keys::usage_shard(sim)),
                    keys::sim_sk_prefix(sim),
                )),
                None => queries.extend(
                    (0..keys::USAGE_SHARDS)
                        .map(|shard| Query::partition(keys::usage_pk(*day, shard))),
                ),
            }
        }
        let reads = queries.into_iter().map(|query| {
            self.table
                .query(query.consistent(consistent).projection(projection))
        });
        let mut results = futures::stream::iter(reads.collect::<Vec<_>>())
            .buffer_unordered(self.table.concurrency());
        let mut rollups = Vec::new();
        while let Some(items) = results.next().await {
            for item in items? {
                rollups.push(StoredRollup::from_item(&item)?);
            }
        }
        Ok(rollups)
    }

    /// Usage records as UsageRecords answers them: see `kore_ingest_core::usage`. Days the
    /// query covers whole (for day and range buckets) are read as day totals, the others
    /// hour by hour.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>, LedgerError> {
        let sim = query.filters.sim_sid.as_deref();
        let (whole, partial): (Vec<NaiveDate>, Vec<NaiveDate>) = query
            .days()
            .into_iter()
            .partition(|day| query.reads_whole_day(*day));
        let totals = match query.group {
            Some(GroupBy::Sim) => DAY_TOTALS_AND_SIM_NAMES,
            Some(GroupBy::Network) => DAY_TOTALS_AND_NETWORK_NAME,
            _ => DAY_TOTALS,
        };
        let (whole, partial) = tokio::join!(
            self.of_days(&whole, sim, false, Some(totals)),
            self.of_days(&partial, sim, false, None)
        );
        let cells: Vec<UsageCell> = whole?
            .iter()
            .filter_map(StoredRollup::day_cell)
            .chain(partial?.iter().flat_map(StoredRollup::cells))
            .collect();
        aggregate(query, cells).map_err(|e| match e {
            QueryError::Overflow(overflow) => overflow.into(),
            other => LedgerError::Invalid(other.to_string()),
        })
    }

    /// Per SIM, the usage of a month (`YYYY-MM`) or a day (`YYYY-MM-DD`) that `filters`
    /// select: `usage --group sim` over the period, one sum per SIM, sorted by SIM.
    pub async fn usage_per_sim(
        &self,
        period: &str,
        filters: UsageFilters,
    ) -> Result<Vec<(String, HourUsage)>, LedgerError> {
        let invalid = |e: &dyn std::fmt::Display| LedgerError::Invalid(e.to_string());
        let range = TimeRange::of_period(period).map_err(|e| invalid(&e))?;
        let query = UsageQuery::new(
            range.start(),
            range.end(),
            Granularity::All,
            Some(GroupBy::Sim),
            filters,
        )
        .map_err(|e| invalid(&e))?;
        Ok(per_sim(&self.usage(&query).await?, period)?)
    }

    /// The SIMs with usage booked on any of `days`.
    pub async fn sims_with_usage(
        &self,
        days: &[NaiveDate],
    ) -> Result<BTreeSet<String>, LedgerError> {
        Ok(self
            .of_days(days, None, false, Some(BOOKING_ONLY))
            .await?
            .into_iter()
            .map(|r| r.booking.sim_sid)
            .collect())
    }
}
