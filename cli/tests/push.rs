//! `kore-usage push`: a closed period's invoice lines reach the Stripe and Lago stand-ins
//! (`scripts/lib/billing_standin.py`) exactly once, even when a push is killed while a line
//! is in flight and run again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kore_ingest_aws::ledger::UsageLedger;
use kore_test_support::secrets_manager::FakeSecretsManager;
use kore_test_support::stack::{eventually, http};
use kore_test_support::*;
use serde_json::{Value, json};

const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const FLEETS: [&str; 2] = [
    "HF11111111111111111111111111111111",
    "HF22222222222222222222222222222222",
];
const START: &str = "2024-11-02T00:00:00Z";
const END: &str = "2024-11-03T00:00:00Z";

/// A stand-in process, stopped when dropped.
struct StandIn {
    child: Child,
    url: String,
}

impl StandIn {
    fn start(service: &str) -> StandIn {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/lib/billing_standin.py"
        );
        let mut child = Command::new("python3")
            .args([script, "--service", service, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the stand-in");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .expect("its address");
        StandIn {
            child,
            url: format!("http://{address}"),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = http("GET", format!("{}{path}", self.url), vec![], None).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn control(&self, order: Value) {
        let url = format!("{}/__control", self.url);
        let (status, body) = http("POST", url, vec![], Some(order.to_string().into_bytes())).await;
        assert_eq!(status, 200, "{body}");
    }

    /// The events it keeps, each once: (line id, value) as the service names them.
    async fn events(&self) -> Vec<(String, String)> {
        let events = self.get("/__events").await;
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| match e.get("identifier") {
                Some(id) => (
                    id.as_str().unwrap().into(),
                    e["payload"]["value"].as_str().unwrap().into(),
                ),
                None => (
                    e["transaction_id"].as_str().unwrap().into(),
                    e["properties"]["value"].as_str().unwrap().into(),
                ),
            })
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(ledger: &UsageLedger, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kore-usage"));
    command.args(["--table", ledger.table_name()]).args(args);
    command.envs(env.iter().copied());
    command
}

/// Runs kore-usage: exit code, stdout, stderr.
fn run(ledger: &UsageLedger, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = command(ledger, env, args).output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Two customers (one per fleet), two zones, whole-MB lines: a closed day with six data
/// lines and two SIM fee lines to send, and the invoice's (id, quantity) of each.
async fn closed_day(name: &str) -> (UsageLedger, Vec<(String, String)>) {
    let ledger = fresh_ledger(name).await;
    let mut deliveries = Vec::new();
    for n in 0..12u64 {
        let time = format!("2024-11-02T{:02}:30:00Z", 1 + n);
        let mut e = SampleEvent::usage_update(
            &format!("EZ{n:032x}"),
            &format!("HS{n:032x}"),
            &time,
            (1_000, 1_500_000 * (n + 1)),
        );
        e.account_sid = ACCOUNT.into();
        e.fleet_sid = FLEETS[(n % 2) as usize].into();
        let (network, country) = [
            ("HWde000000000000000000000000000001", "DE"),
            ("HWf0000000000000000000000000000001", "FR"),
            ("HWa0000000000000000000000000000002", "US"),
        ][(n % 3) as usize];
        e.network = Some((network.into(), "net".into(), country.into()));
        deliveries.push((e.kore_json(), webhook(&format!("req-{n}"))));
        deliveries.push((e.twilio_json(), kinesis(n)));
    }
    store_deliveries(&ledger, &deliveries).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let customers = format!(
        "customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to\n\
         cus_one,,{},,mb,2024-11-01T00:00:00Z,\ncus_two,,{},,mb,2024-11-01T00:00:00Z,\n",
        FLEETS[0], FLEETS[1]
    );
    let zones = r#"{"zones": [{"name": "EU", "countries": ["DE", "FR"]}, {"name": "ROW", "default": true}]}"#;
    let plans = r#"{"plans": [{"id": "mb", "currency": "USD", "unit": "MB",
        "prices": {"EU": "0.01", "ROW": "0.10"}, "sim_fee": "2.00"}]}"#;
    for (command, path) in [
        ("customers", file("c.csv", customers)),
        ("zones", file("z.json", zones.into())),
        ("plans", file("p.json", plans.into())),
    ] {
        assert_eq!(run(&ledger, &[], &[command, "apply", &path]).0, 0);
    }
    let close = [
        "close", "--start", START, "--end", END, "--force", "--settle", "0s",
    ];
    assert_eq!(run(&ledger, &[], &close).0, 0);
    let invoice = [
        "invoice", "--start", START, "--end", END, "--format", "json",
    ];
    let (code, text, _) = run(&ledger, &[], &invoice);
    assert_eq!(code, 0);
    let lines: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut sent: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().into(),
                l["quantity"].as_str().unwrap().into(),
            )
        })
        .collect();
    sent.sort();
    assert_eq!(sent.len(), 6, "{text}");
    (ledger, sent)
}

/// Starts a push, waits until the stand-in has kept `kept` events (the answer to the last
/// one hangs), and kills the push there: a crash with a line delivered but not recorded.
async fn push_killed_midway(
    ledger: &UsageLedger,
    standin: &StandIn,
    env: &[(&str, &str)],
    args: &[&str],
    kept: usize,
) {
    standin
        .control(json!({"hang_after": kept - 1, "hang_seconds": 600}))
        .await;
    let mut push = command(ledger, env, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        60,
        "the stand-in keeps the events up to the hung one",
        || async { (standin.events().await.len() >= kept).then_some(()) },
    )
    .await;
    push.kill().unwrap();
    push.wait().unwrap();
    standin.control(json!({"hang_after": null})).await;
    assert_eq!(standin.events().await.len(), kept, "nothing after the kill");
}

#[tokio::test]
async fn a_push_killed_midway_and_run_again_leaves_every_line_in_stripe_once() {
    let (ledger, lines) = closed_day("push-stripe").await;
    let stripe = StandIn::start("stripe");
    let env = [
        ("STRIPE_API_BASE", stripe.url.as_str()),
        ("STRIPE_API_KEY", "sk_test_standin"),
    ];
    let push = ["push", "--start", START, "--end", END, "--to", "stripe"];

    // A dry run sends and records nothing.
    let (code, out, err) = run(
        &ledger,
        &[("STRIPE_API_BASE", stripe.url.as_str())],
        &[&push[..], &["--dry-run"]].concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("would_send").count(), lines.len(), "{out}");
    assert!(stripe.events().await.is_empty());

    // The period ended more than 35 days ago: Stripe refuses its last second, and says why.
    let (code, out, _) = run(&ledger, &env, &push);
    assert_eq!(code, 1);
    assert_eq!(out.matches("refused").count(), lines.len(), "{out}");
    assert!(out.contains("within the past 35 calendar days"), "{out}");
    assert!(stripe.events().await.is_empty());

    // Sent late, as the README says: stamped now. Killed after three were kept.
    let late = [&push[..], &["--timestamp", "now"]].concat();
    push_killed_midway(&ledger, &stripe, &env, &late, 3).await;
    let (code, out, err) = run(&ledger, &env, &[&late[..], &["--format", "json"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let outcomes: Vec<Value> = serde_json::from_str(&out).unwrap();
    let count = |what: &str| outcomes.iter().filter(|o| o["outcome"] == what).count();
    // Two answered before the kill; the third Stripe kept but never answered: it now says
    // "already exists", which reads as delivered.
    assert_eq!(
        (count("already_sent"), count("sent")),
        (3, lines.len() - 3),
        "{out}"
    );
    let mut kept = stripe.events().await;
    kept.sort();
    assert_eq!(kept, lines, "every line once, with its quantity");

    // Again: nothing left to send, nothing sent.
    let (code, out, _) = run(&ledger, &env, &late);
    assert_eq!(code, 0);
    assert_eq!(out.matches("already_sent").count(), lines.len(), "{out}");
    let stats = stripe.get("/__stats").await;
    assert_eq!(stats["events"], lines.len());
    // Six refused, three before the kill, four after it (the hung one again): none twice
    // that the ledger knew was delivered.
    assert_eq!(stats["requests"], 2 * lines.len() + 1, "{stats}");
}

#[tokio::test]
async fn a_push_killed_midway_and_run_again_leaves_every_line_in_lago_once() {
    let (ledger, lines) = closed_day("push-lago").await;
    let lago = StandIn::start("lago");
    let env = [
        ("LAGO_API_URL", lago.url.as_str()),
        ("LAGO_API_KEY", "lago_standin"),
    ];
    let push = ["push", "--start", START, "--end", END, "--to", "lago"];
    let (code, _, err) = run(&ledger, &[("LAGO_API_URL", lago.url.as_str())], &push);
    assert_eq!(code, 2, "no key, no push");
    assert!(err.contains("LAGO_API_KEY"), "{err}");

    push_killed_midway(&ledger, &lago, &env, &push, 2).await;
    // The re-run reads its key from Secrets Manager, as a deployed operator would.
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:lago-key";
    let secrets = FakeSecretsManager::start(arn, "lago_standin");
    let from_secret = [
        ("LAGO_API_URL", lago.url.as_str()),
        ("LAGO_API_KEY_SECRET_ARN", arn),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets.url.as_str()),
    ];
    let (code, out, err) = run(&ledger, &from_secret, &push);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(secrets.reads(), 1);
    let mut kept = lago.events().await;
    kept.sort();
    assert_eq!(kept, lines, "every line once, with its quantity");
    let stats = lago.get("/__stats").await;
    assert_eq!(
        stats["requests"],
        lines.len() + 1,
        "only the hung line was sent twice"
    );

    // The fleet's customer renamed after the push: the SIM fee line (billed by the mapping in
    // force) gets a new id. The new one is sent; the old one is reported, not forgotten.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("renamed.csv");
    std::fs::write(
        &renamed,
        format!(
            "customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to\n\
             cus_uno,,{},,mb,2024-11-01T00:00:00Z,\ncus_two,,{},,mb,2024-11-01T00:00:00Z,\n",
            FLEETS[0], FLEETS[1]
        ),
    )
    .unwrap();
    let apply = ["customers", "apply", renamed.to_str().unwrap()];
    assert_eq!(run(&ledger, &[], &apply).0, 0);
    let (code, out, _) = run(&ledger, &env, &[&push[..], &["--format", "json"]].concat());
    assert_eq!(code, 1, "{out}");
    let outcomes: Vec<Value> = serde_json::from_str(&out).unwrap();
    let of = |what: &str| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|o| o["outcome"] == what)
            .map(|o| o["customer_id"].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        (of("superseded"), of("sent")),
        (vec!["cus_one"], vec!["cus_uno"])
    );
    assert_eq!(lago.events().await.len(), lines.len() + 1);
}
