//! DynamoDB Local as the tests use it: the run's endpoint, a client whose requests the
//! recording layer sees, a fresh table per test, and reads of what a ledger holds.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use kore_ingest_aws::ledger::{
    Item, LedgerConfig, SimStatusEntry, UsageLedger, create_table, keys,
};
use kore_ingest_core::delivery::{Delivery, Outcome};
use kore_ingest_core::event::{ConnectionEvent, DataVolume, ParsedItem};
use kore_ingest_core::port::{Ledger, LedgerError};
use kore_ingest_core::usage::UsageFilters;

use crate::faults;

/// The DynamoDB endpoint of this test run. Tests fail loudly without one: a storage test
/// that silently skips would prove nothing.
pub fn dynamodb_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL_DYNAMODB is not set: run the suite with scripts/test, \
             which starts DynamoDB Local"
        )
    })
}

/// A client of the run's DynamoDB Local. Its requests go through the recording layer of
/// [`faults`]: inside [`faults::as_function`] they are recorded as that function's.
pub fn local_client() -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .http_client(faults::recording_http_client())
        .build();
    Client::from_conf(config)
}

/// A new, empty ledger table with a unique name, created from `infra/table.json`.
pub async fn fresh_ledger(test_name: &str) -> UsageLedger {
    let client = local_client();
    let name = format!("t-{test_name}-{}-{}", std::process::id(), fastrand::u32(..));
    create_table(&client, &name)
        .await
        .expect("create the test table in DynamoDB Local");
    UsageLedger::new(client, LedgerConfig::new(name))
}

/// What AWS does to items whose `expires_at` (epoch seconds) is before `now`, which
/// DynamoDB Local never does: deletes them. The number deleted.
pub async fn sweep_expired(table_name: &str, now: i64) -> usize {
    let client = local_client();
    let mut deleted = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table_name)
            .filter_expression("expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .projection_expression("pk, sk")
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan the test table");
        for item in page.items() {
            client
                .delete_item()
                .table_name(table_name)
                .key("pk", item["pk"].clone())
                .key("sk", item["sk"].clone())
                .send()
                .await
                .expect("delete an expired item");
            deleted += 1;
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return deleted;
        }
    }
}

/// One SIM's usage in a period, whatever it was booked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUsage {
    pub sim_sid: String,
    pub usage: DataVolume,
    pub usage_events: u64,
}

/// What the tests read of a ledger and write to it one at a time, through its public API
/// (the `usage` query, the port, the table): test helpers, not the ledger's own.
#[allow(async_fn_in_trait)]
pub trait LedgerExt {
    /// One SIM's usage over a day (`YYYY-MM-DD`) or month (`YYYY-MM`), from the `usage`
    /// query grouped by SIM; `None` without usage.
    async fn sim_usage(&self, sim_sid: &str, period: &str)
    -> Result<Option<SimUsage>, LedgerError>;
    /// Every SIM's usage over a day or month, sorted by SIM.
    async fn period_usage(&self, period: &str) -> Result<Vec<SimUsage>, LedgerError>;
    /// Per SIM, the usage booked to an account over a day or month.
    async fn account_usage(
        &self,
        account_sid: &str,
        period: &str,
    ) -> Result<Vec<SimUsage>, LedgerError>;
    /// Records one parsed element through the port, as a batch of one.
    async fn record(&self, item: &ParsedItem, delivery: &Delivery) -> Outcome;
    /// Records one event through the port, as a batch of one.
    async fn record_event(&self, event: &ConnectionEvent, delivery: &Delivery) -> Outcome;
    /// Whether a callback is stored under this provider and token.
    async fn callback_exists(&self, provider: &str, token: &str) -> Result<bool, LedgerError>;
    /// A SIM's current status.
    async fn sim_status(&self, sim_sid: &str) -> Result<Option<SimStatusEntry>, LedgerError>;
}

/// Per SIM, the usage of `period` that `filters` select, as `report` reads it.
async fn per_sim(
    ledger: &UsageLedger,
    period: &str,
    filters: UsageFilters,
) -> Result<Vec<SimUsage>, LedgerError> {
    let sums = ledger.rollups().usage_per_sim(period, filters).await?;
    Ok(sums
        .into_iter()
        .map(|(sim_sid, sum)| SimUsage {
            sim_sid,
            usage: sum.usage,
            usage_events: sum.events,
        })
        .collect())
}

impl LedgerExt for UsageLedger {
    async fn sim_usage(
        &self,
        sim_sid: &str,
        period: &str,
    ) -> Result<Option<SimUsage>, LedgerError> {
        let filters = UsageFilters {
            sim_sid: Some(sim_sid.to_owned()),
            ..UsageFilters::default()
        };
        Ok(per_sim(self, period, filters).await?.pop())
    }

    async fn period_usage(&self, period: &str) -> Result<Vec<SimUsage>, LedgerError> {
        per_sim(self, period, UsageFilters::default()).await
    }

    async fn account_usage(
        &self,
        account_sid: &str,
        period: &str,
    ) -> Result<Vec<SimUsage>, LedgerError> {
        let filters = UsageFilters {
            account_sid: Some(account_sid.to_owned()),
            ..UsageFilters::default()
        };
        per_sim(self, period, filters).await
    }

    async fn record(&self, item: &ParsedItem, delivery: &Delivery) -> Outcome {
        self.record_batch(&[(item.clone(), delivery.clone())], None)
            .await
            .remove(0)
    }

    async fn record_event(&self, event: &ConnectionEvent, delivery: &Delivery) -> Outcome {
        self.record(&Ok(event.clone()), delivery).await
    }

    async fn callback_exists(&self, provider: &str, token: &str) -> Result<bool, LedgerError> {
        let key = Item::from([
            (
                "pk".to_owned(),
                AttributeValue::S(keys::callback_pk(provider, token)),
            ),
            ("sk".to_owned(), AttributeValue::S(keys::SINGLE.to_owned())),
        ]);
        Ok(self.table().get(key).await?.is_some())
    }

    async fn sim_status(&self, sim_sid: &str) -> Result<Option<SimStatusEntry>, LedgerError> {
        self.callbacks().status(sim_sid).await
    }
}

/// Records events (JSON, delivery) in one batch through the ledger; each must be stored or
/// a duplicate.
pub async fn store_deliveries(ledger: &UsageLedger, deliveries: &[(String, Delivery)]) {
    let inputs: Vec<_> = deliveries
        .iter()
        .map(|(json, delivery)| (crate::events::parse_item(json), delivery.clone()))
        .collect();
    let outcomes = ledger.record_batch(&inputs, None).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::New | Outcome::Duplicate { .. })),
        "{outcomes:?}"
    );
}
