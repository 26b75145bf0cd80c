//! End to end, issue 22: signed callbacks from KORE and Twilio (POST and GET, every kind,
//! retried with the same token, replayed with a fresh one) through the stack's webhook into
//! the ledger, from the table's stream through callback-forwarder onto the stack's bus on
//! the EventBridge emulator, and out of the queue a rule copies the bus into
//! (`EVENTS_QUEUE_URL`). Each stored callback must be there once, with its id.

use std::collections::BTreeSet;
use std::time::Duration;

use kore_ingest_core::signature::{kore_signature, twilio_signature};
use kore_test_support::bus::{BusQueue, count_by_id};
use kore_test_support::stack::{LocalStack, http, signed_url, stack_list};
use serde_json::Value;

/// One callback as a provider sends it.
struct Callback {
    kore: bool,
    get: bool,
    kind: &'static str,
    form: String,
    token: String,
    date: Option<&'static str>,
}

impl Callback {
    fn id(&self) -> String {
        format!(
            "{}#{}",
            if self.kore { "kore" } else { "twilio" },
            self.token
        )
    }

    async fn send(&self, stack: &LocalStack) -> u16 {
        let path = format!("/callbacks/{}", self.kind);
        let h = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let mut headers = Vec::new();
        let (url, body) = match (self.kore, self.get) {
            (true, _) => {
                let signature = kore_signature(
                    stack_list("KORE_WEBHOOK_SECRETS")[0].as_bytes(),
                    "POST",
                    &signed_url(&path),
                    self.form.as_bytes(),
                );
                headers.push(h("Kore-Signature", &signature));
                headers.push(h("Kore-Idempotency-Token", &self.token));
                headers.push(h("User-Agent", "KoreProxy/1.1"));
                headers.push(h("Content-Type", "application/x-www-form-urlencoded"));
                (
                    stack.webhook_url(&path),
                    Some(self.form.clone().into_bytes()),
                )
            }
            (false, true) => {
                let signed = format!("{}?{}", signed_url(&path), self.form);
                let token = stack_list("TWILIO_AUTH_TOKENS")[0].clone();
                headers.push(h(
                    "X-Twilio-Signature",
                    &twilio_signature(token.as_bytes(), &signed, &[]),
                ));
                headers.push(h("I-Twilio-Idempotency-Token", &self.token));
                (format!("{}?{}", stack.webhook_url(&path), self.form), None)
            }
            (false, false) => {
                let params: Vec<(String, String)> = form_pairs(&self.form);
                let token = stack_list("TWILIO_AUTH_TOKENS")[0].clone();
                let signature = twilio_signature(token.as_bytes(), &signed_url(&path), &params);
                headers.push(h("X-Twilio-Signature", &signature));
                headers.push(h("I-Twilio-Idempotency-Token", &self.token));
                headers.push(h("Content-Type", "application/x-www-form-urlencoded"));
                (
                    stack.webhook_url(&path),
                    Some(self.form.clone().into_bytes()),
                )
            }
        };
        if let Some(date) = self.date {
            headers.push(h("Date", date));
        }
        let method = if self.get { "GET" } else { "POST" };
        let (status, text) = http(method, url, headers, body).await;
        assert_eq!(status, 200, "{} {}: {text}", method, self.kind);
        status
    }
}

fn form_pairs(form: &str) -> Vec<(String, String)> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| (n.to_owned(), v.replace('+', " ")))
        .collect()
}

#[tokio::test]
async fn each_unique_callback_reaches_the_bus_once_with_its_id() {
    let stack = LocalStack::from_env();
    let run = format!("{:010}", fastrand::u32(..));
    let sim = format!("HSe2ebus{run}");
    let kore_token = |n: u32| format!("RQe2ebus{run}{n:08}");
    let twilio_token = |n: u32| format!("{n:08x}-{}-4c8e-9a51-0d7e3b1f2a44", &run[..4]);
    let sim_form = |status: &str| {
        format!(
            "ApiVersion=v1&SimUniqueName=bus&SimSid={sim}&SimStatus={status}&AccountSid=ACe2ebus"
        )
    };
    let command_form = |sid: &str| {
        format!(
            "Status=received&ApiVersion=v1&Command=hello+{run}&SimUniqueName=bus&Payload=aGk%3D&SimSid={sim}&Direction=from_sim&CommandSid={sid}&AccountSid=ACe2ebus&PayloadType=text"
        )
    };
    let callbacks = [
        Callback {
            kore: true,
            get: false,
            kind: "sims",
            form: sim_form("ready"),
            token: kore_token(1),
            date: Some("2024-07-03T14:00:00Z"),
        },
        Callback {
            kore: true,
            get: false,
            kind: "sims",
            form: sim_form("active"),
            token: kore_token(2),
            date: Some("Wed, 03 Jul 2024 14:40:58 GMT"),
        },
        // A replay of the first with a fresh token: a callback of its own for the ledger.
        Callback {
            kore: true,
            get: false,
            kind: "sims",
            form: sim_form("ready"),
            token: kore_token(3),
            date: Some("2024-07-03T14:00:00Z"),
        },
        Callback {
            kore: true,
            get: false,
            kind: "sms-commands",
            form: command_form("HCe2ebus1"),
            token: kore_token(4),
            date: Some("2024-07-03T14:41:00Z"),
        },
        Callback {
            kore: true,
            get: false,
            kind: "ip-commands",
            form: command_form("HGe2ebus1"),
            token: kore_token(5),
            date: None,
        },
        Callback {
            kore: true,
            get: false,
            kind: "esim-profiles",
            form: format!("Status=installed&EsimProfileSid=HPe2ebus{run}&AccountSid=ACe2ebus"),
            token: kore_token(6),
            date: None,
        },
        Callback {
            kore: false,
            get: false,
            kind: "sims",
            form: sim_form("inactive"),
            token: twilio_token(7),
            date: None,
        },
        Callback {
            kore: false,
            get: true,
            kind: "sms-commands",
            form: command_form("HCe2ebus2"),
            token: twilio_token(8),
            date: None,
        },
    ];
    let mut sent = 0;
    for round in 0..3 {
        for (i, callback) in callbacks.iter().enumerate() {
            // Every callback once, some retried once or twice with the same token.
            if round == 0 || (i + round) % 2 == 0 {
                callback.send(&stack).await;
                sent += 1;
            }
        }
    }
    let ids: Vec<String> = callbacks.iter().map(Callback::id).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();

    let queue = BusQueue::of_stack();
    let mut events: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while count_by_id(&events, &ids).len() < unique.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "not every callback reached the bus in 90 s: {:?}",
            count_by_id(&events, &ids)
        );
        events.extend(queue.drain(Duration::from_secs(2)).await);
    }
    // Quiet for a while more: a second copy would show up now.
    events.extend(queue.drain(Duration::from_secs(4)).await);
    let counts = count_by_id(&events, &ids);
    let on_bus: usize = counts.values().sum();
    eprintln!(
        "callbacks sent {sent}, unique {}, on the bus {on_bus}, distinct ids {}",
        unique.len(),
        counts.len()
    );
    assert_eq!(counts.len(), unique.len(), "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");

    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["detail"]["id"]
                .as_str()
                .is_some_and(|id| unique.contains(&id.to_owned()))
        })
        .collect();
    let detail_types: BTreeSet<&str> = mine
        .iter()
        .filter_map(|e| e["detail-type"].as_str())
        .collect();
    assert_eq!(
        detail_types,
        BTreeSet::from(["SIM Update", "SMS Command", "IP Command", "eSIM Profile"])
    );
    let active = mine
        .iter()
        .find(|e| e["detail"]["id"] == ids[1].as_str())
        .unwrap();
    assert_eq!(active["source"], "kore-ingest");
    assert_eq!(active["detail"]["sent_at"], "2024-07-03T14:40:58.000Z");
    assert_eq!(active["detail"]["sent_at_source"], "date-header");
    assert_eq!(active["detail"]["status"], "active");
    assert_eq!(active["detail"]["fields"][3][0], "SimStatus");
    let command = mine
        .iter()
        .find(|e| e["detail"]["id"] == ids[7].as_str())
        .unwrap();
    assert_eq!(command["detail"]["provider"], "twilio");
    assert_eq!(
        command["detail"]["sent_at_source"],
        "arrival:no-date-header"
    );
    assert_eq!(
        command["detail"]["fields"][2],
        serde_json::json!(["Command", format!("hello {run}")])
    );

    // The SIM's status: KORE's updates carry 2024 Dates; Twilio's "inactive" has no Date, so
    // it counts as sent when it arrived (now), the latest of all.
    let status = stack
        .ledger
        .callbacks()
        .status(&sim)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.change.status, "inactive");
}
