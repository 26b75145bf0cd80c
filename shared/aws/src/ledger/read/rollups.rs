//! Usage from the rollups: a day's partitions (every shard, or one SIM's), read with no more
//! attributes than the question needs, turned into cells for `kore_ingest_core::usage`.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use futures::StreamExt;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::TimeRange;
use kore_ingest_core::usage::{
    Attribution, Granularity, GroupBy, HourUsage, QueryError, UsageCell, UsageFilters, UsageQuery,
    UsageRecord, aggregate_attributed, per_sim,
};

use crate::ledger::items::rollup::{
    BOOKING_ONLY, DAY_TOTALS, DAY_TOTALS_AND_NAMES, DAY_TOTALS_AND_NETWORK_NAME,
    DAY_TOTALS_AND_SIM_NAMES, StoredRollup,
};
use crate::ledger::keys;
use crate::ledger::table::{Query, Table};

/// Which names the cells of whole days carry: those the query's grouping shows (the least
/// read), or every name (for a caller that groups the same cells several ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellNames {
    OfTheGroup,
    All,
}

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

    /// Usage records as UsageRecords answers them: see `kore_ingest_core::usage`.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>, LedgerError> {
        self.usage_attributed(query, Attribution::default()).await
    }

    /// [`Rollups::usage`], grouped or filtered by customer and zone too.
    pub async fn usage_attributed(
        &self,
        query: &UsageQuery,
        attribution: Attribution<'_>,
    ) -> Result<Vec<UsageRecord>, LedgerError> {
        let cells = self.cells(query, CellNames::OfTheGroup).await?;
        aggregate_attributed(query, cells, attribution).map_err(|e| match e {
            QueryError::Overflow(overflow) => overflow.into(),
            other => LedgerError::Invalid(other.to_string()),
        })
    }

    /// The stored cells a query reads, before they are summed: days the query covers whole
    /// (for day and range buckets) as day totals, the others hour by hour. `names` says
    /// which names the day totals carry; hours always carry all of them.
    pub async fn cells(
        &self,
        query: &UsageQuery,
        names: CellNames,
    ) -> Result<Vec<UsageCell>, LedgerError> {
        let sim = query.filters.sim_sid.as_deref();
        let (whole, partial): (Vec<NaiveDate>, Vec<NaiveDate>) = query
            .days()
            .into_iter()
            .partition(|day| query.reads_whole_day(*day));
        let totals = match (names, query.group) {
            (CellNames::All, _) => DAY_TOTALS_AND_NAMES,
            (CellNames::OfTheGroup, Some(GroupBy::Sim)) => DAY_TOTALS_AND_SIM_NAMES,
            (CellNames::OfTheGroup, Some(GroupBy::Network)) => DAY_TOTALS_AND_NETWORK_NAME,
            (CellNames::OfTheGroup, _) => DAY_TOTALS,
        };
        let (whole, partial) = tokio::join!(
            self.of_days(&whole, sim, false, Some(totals)),
            self.of_days(&partial, sim, false, None)
        );
        Ok(whole?
            .iter()
            .filter_map(StoredRollup::day_cell)
            .chain(partial?.iter().flat_map(StoredRollup::cells))
            .collect())
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

    /// Of `days`, those with usage booked for `sim`: one small query per day.
    pub async fn days_of_sim(
        &self,
        sim: &str,
        days: &[NaiveDate],
    ) -> Result<BTreeSet<NaiveDate>, LedgerError> {
        Ok(self
            .of_days(days, Some(sim), false, Some(BOOKING_ONLY))
            .await?
            .into_iter()
            .map(|r| r.day)
            .collect())
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
