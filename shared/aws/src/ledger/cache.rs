//! A per-process copy of a small registry every writer consults (the closes, the archived
//! days), read again once it is older than the ledger's `closed_periods_ttl`: how the
//! functions learn of a change without a read per batch.

use std::sync::Arc;
use std::time::Duration;

use kore_ingest_core::port::LedgerError;
use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct TtlCache<T> {
    cached: tokio::sync::Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Default for TtlCache<T> {
    fn default() -> Self {
        TtlCache {
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T> TtlCache<T> {
    /// The copy while it is younger than `ttl`, else what `read` gives, kept.
    pub(super) async fn get<F>(&self, ttl: Duration, read: F) -> Result<Arc<T>, LedgerError>
    where
        F: Future<Output = Result<T, LedgerError>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some((at, value)) = cached.as_ref()
            && at.elapsed() < ttl
        {
            return Ok(value.clone());
        }
        // Stamped before the read: the copy is never older than it says.
        let started = Instant::now();
        let value = Arc::new(read.await?);
        *cached = Some((started, value.clone()));
        Ok(value)
    }

    /// What `read` gives, kept whatever the copy's age.
    pub(super) async fn refresh<F>(&self, read: F) -> Result<Arc<T>, LedgerError>
    where
        F: Future<Output = Result<T, LedgerError>>,
    {
        let mut cached = self.cached.lock().await;
        let started = Instant::now();
        let value = Arc::new(read.await?);
        *cached = Some((started, value.clone()));
        Ok(value)
    }
}
