//! [`UsageLedger`]: one ledger table, handed to each concern (the write path, the readers,
//! the quarantine, callbacks, closed periods, rebuild), and the implementation of the
//! functions' port.

use std::future::Future;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use kore_ingest_core::callback::Callback;
use kore_ingest_core::config::{ConfigError, Env};
use kore_ingest_core::delivery::{Delivery, Outcome};
use kore_ingest_core::event::ParsedItem;
use kore_ingest_core::port::{CallbackOutcome, Ledger, LedgerError};
use kore_ingest_core::quarantine::QuarantineEntry;
use kore_ingest_core::time::TimeRange;
use tokio::time::Instant;

use super::alerts::Alerts;
use super::archived::ArchivedDays;
use super::callbacks::Callbacks;
use super::closes::Closes;
use super::config::LedgerConfig;
use super::documents::Documents;
use super::pushes::Pushes;
use super::quarantine::QuarantineStore;
use super::read::events::Events;
use super::read::rollups::Rollups;
use super::read::sims::{SimActivity, sims_active};
use super::rebuild::Rebuilder;
use super::table::Table;
use super::write::Recorder;

/// The ledger: cheap to clone, build it once per process.
#[derive(Debug, Clone)]
pub struct UsageLedger {
    table: Table,
    /// Kept here so every use shares one cache of the closed periods.
    closes: Closes,
    /// And one of the archived days.
    archived: ArchivedDays,
}

impl UsageLedger {
    pub fn new(client: Client, config: LedgerConfig) -> Self {
        let table = Table::new(client, config);
        UsageLedger {
            closes: Closes::new(table.clone()),
            archived: ArchivedDays::new(table.clone()),
            table,
        }
    }

    /// The ledger of a deployed function on an SDK configuration (see
    /// [`crate::sdk::sdk_config`]), with [`LedgerConfig::from_env`].
    pub fn from_sdk_config(aws: &SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        Ok(UsageLedger::new(
            Client::new(aws),
            LedgerConfig::from_env(env)?,
        ))
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn table_name(&self) -> &str {
        self.table.name()
    }

    /// The write path.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(
            self.table.clone(),
            self.quarantined(),
            self.closes.clone(),
            self.archived.clone(),
        )
    }

    /// The archived days, whose events are quarantined rather than stored.
    pub fn archived_days(&self) -> ArchivedDays {
        self.archived.clone()
    }

    /// Usage from the rollups.
    pub fn rollups(&self) -> Rollups {
        Rollups::new(self.table.clone())
    }

    /// Stored events.
    pub fn events(&self) -> Events {
        Events::new(self.table.clone())
    }

    /// The quarantined payloads (the port's `quarantine` stores one).
    pub fn quarantined(&self) -> QuarantineStore {
        QuarantineStore::new(self.table.clone())
    }

    pub fn alerts(&self) -> Alerts {
        Alerts::new(self.table.clone())
    }

    pub fn callbacks(&self) -> Callbacks {
        Callbacks::new(self.table.clone())
    }

    /// The files applied whole: the customers mapping, the zones, the plans.
    pub fn documents(&self) -> Documents {
        Documents::new(self.table.clone())
    }

    /// What was pushed of invoice lines to the billing systems.
    pub fn pushes(&self) -> Pushes {
        Pushes::new(self.table.clone())
    }

    /// Every SIM known in `range` (whole UTC days) and the days it was active.
    pub async fn sims_active(
        &self,
        range: &TimeRange,
        account: Option<&str>,
    ) -> Result<Vec<SimActivity>, LedgerError> {
        sims_active(
            &self.callbacks(),
            &self.rollups(),
            range,
            account,
            self.table.concurrency(),
        )
        .await
    }

    pub fn closes(&self) -> &Closes {
        &self.closes
    }

    pub fn rebuilder(&self) -> Rebuilder {
        Rebuilder::new(self.table.clone())
    }
}

impl Ledger for UsageLedger {
    fn record_batch(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> impl Future<Output = Vec<Outcome>> + Send {
        let recorder = self.recorder();
        async move { recorder.record_batch(inputs, deadline).await }
    }

    fn record_callback(
        &self,
        callback: &Callback,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<CallbackOutcome, LedgerError>> + Send {
        let callbacks = self.callbacks();
        async move { callbacks.record(callback, payload, delivery).await }
    }

    fn quarantine_truncated(
        &self,
        entry: QuarantineEntry<'_>,
        keep: usize,
    ) -> impl Future<Output = Result<String, LedgerError>> + Send {
        let quarantine = self.quarantined();
        async move { quarantine.put(entry, keep).await }
    }
}
