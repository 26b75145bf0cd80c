//! What a SIM-update callback costs the ledger: one transaction of the callback record, its
//! history entry and the SIM's current status; an update that arrives after a later one is
//! stored without the status (a second transaction); a copy is refused by the first.

use aws_sdk_dynamodb::types::AttributeValue;
use http::{HeaderMap, HeaderValue};
use kore_ingest_aws::ledger::{UsageLedger, keys};
use kore_ingest_core::callback::{CallbackKind, parse_callback};
use kore_ingest_core::delivery::{Delivery, Origin};
use kore_ingest_core::port::{CallbackOutcome, Ledger};

use crate::measured::{HashItem, billed_units_of, counted_ledger};
use crate::rows::row;

const SIMS: usize = 300;

/// Stores one SIM update per SIM, sent at `date`, with tokens from `tag`; returns the ids.
async fn updates(
    ledger: &UsageLedger,
    tag: &str,
    status: &str,
    date: &str,
    expected: CallbackOutcome,
) -> Result<Vec<(String, String)>, String> {
    let mut stored = Vec::new();
    for i in 0..SIMS {
        let sim = format!("HS{i:032}");
        let token = format!("RQ{tag}{i:030}");
        let mut headers = HeaderMap::new();
        headers.insert(
            "kore-idempotency-token",
            HeaderValue::from_str(&token).map_err(|e| e.to_string())?,
        );
        headers.insert(
            "date",
            HeaderValue::from_str(date).map_err(|e| e.to_string())?,
        );
        // KORE's SIM update, as its callbacks send it.
        let form = format!(
            "ApiVersion=v1&SimUniqueName=tracker-{i}&SimSid={sim}&SimStatus={status}&AccountSid=AC{:032}",
            7
        );
        let callback = parse_callback(CallbackKind::Sims, form.as_bytes(), &headers)
            .map_err(|e| e.to_string())?;
        let delivery = Delivery::now(Origin::Webhook {
            request_id: token.clone(),
        });
        let outcome = ledger
            .record_callback(&callback, form.as_bytes(), &delivery)
            .await
            .map_err(|e| e.to_string())?;
        if outcome != expected {
            return Err(format!("{token}: {outcome:?}, not {expected:?}"));
        }
        stored.push((sim, keys::callback_id("kore", &token)));
    }
    Ok(stored)
}

/// The items a run of updates wrote: each callback record and history entry, and (when the
/// update became the status) the SIM's current status.
async fn items_of(
    ledger: &UsageLedger,
    stored: &[(String, String)],
    with_status: bool,
) -> Result<Vec<(HashItem, u64)>, String> {
    let table = ledger.table();
    let mut items = Vec::new();
    for (sim, id) in stored {
        let s = |v: String| AttributeValue::S(v);
        let record = HashItem::from([
            ("pk".to_owned(), s(keys::callback_pk_of_id(id))),
            ("sk".to_owned(), s(keys::SINGLE.to_owned())),
        ]);
        let record = table
            .get(record)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{id} is not stored"))?;
        // The history entry's key, from the send and arrival times the record keeps.
        let text = |name: &str| match record.get(name) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(format!("{id} has no {name}")),
        };
        let history = HashItem::from([
            ("pk".to_owned(), s(keys::sim_pk(sim))),
            (
                "sk".to_owned(),
                s(keys::status_history_sk(
                    &text("sent_at")?,
                    &text("received_at")?,
                    id,
                )),
            ),
        ]);
        items.push(Some(record));
        items.push(table.get(history).await.map_err(|e| e.to_string())?);
        if with_status {
            let current = HashItem::from([
                ("pk".to_owned(), s(keys::sim_status_pk(sim))),
                ("sk".to_owned(), s(sim.clone())),
            ]);
            items.push(table.get(current).await.map_err(|e| e.to_string())?);
        }
    }
    Ok(items.into_iter().flatten().map(|item| (item, 1)).collect())
}

pub async fn callback_rows() -> Result<(), String> {
    let (ledger, requests) = counted_ledger("callbacks").await?;
    let n = SIMS as f64;

    let sent = requests.of("TransactWriteItems");
    let new = updates(
        &ledger,
        "new",
        "active",
        "2024-07-03T14:40:58Z",
        CallbackOutcome::New,
    )
    .await?;
    let new_transactions = requests.of("TransactWriteItems") - sent;
    let new_units = billed_units_of(items_of(&ledger, &new, true).await?).await?;

    // Sent an hour before the stored ones: history only, after a cancelled first attempt.
    let sent = requests.of("TransactWriteItems");
    let late = updates(
        &ledger,
        "late",
        "inactive",
        "2024-07-03T13:40:58Z",
        CallbackOutcome::New,
    )
    .await?;
    let late_transactions = requests.of("TransactWriteItems") - sent;
    let late_units = billed_units_of(items_of(&ledger, &late, false).await?).await?;

    let sent = requests.of("TransactWriteItems");
    updates(
        &ledger,
        "new",
        "active",
        "2024-07-03T14:40:58Z",
        CallbackOutcome::Duplicate,
    )
    .await?;
    let duplicate_transactions = requests.of("TransactWriteItems") - sent;

    row(
        &format!(
            "SIM-update callback, KORE's form ({SIMS} SIMs): WCU new / arriving after a later one / a copy"
        ),
        &format!(
            "{:.2} / {:.2} / 0 for what is stored, in {:.2} / {:.2} / {:.2} transactions each (the cancelled ones, an out-of-order update's first attempt and a copy's only one, write nothing; DynamoDB Local cannot say what AWS bills for them)",
            new_units / n,
            late_units / n,
            new_transactions as f64 / n,
            late_transactions as f64 / n,
            duplicate_transactions as f64 / n,
        ),
        "",
    );
    Ok(())
}
