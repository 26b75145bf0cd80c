//! CloudWatch metrics in the Embedded Metric Format: one JSON line on stdout per invocation,
//! which CloudWatch Logs turns into metrics without any API call on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

/// The namespace every function's metrics go to.
pub const NAMESPACE: &str = "KoreIngest";

static COLD_START: AtomicBool = AtomicBool::new(true);

/// True exactly once per process: on the first invocation after a cold start.
pub fn take_cold_start() -> bool {
    COLD_START.swap(false, Ordering::Relaxed)
}

/// The `Stack` dimension's value when `STACK_NAME` is not set (a local run).
pub const LOCAL_STACK: &str = "local";

/// Counters for one invocation of one function.
#[derive(Debug, Clone)]
pub struct InvocationMetrics {
    function: &'static str,
    /// Every metric also carries the stack's name, so that two stacks in one account keep
    /// apart metrics (and alarms) of the same name.
    stack: String,
    values: BTreeMap<&'static str, (f64, &'static str)>,
}

impl InvocationMetrics {
    /// Metrics of `function` in the stack named by `STACK_NAME` (the template sets it).
    pub fn new(function: &'static str) -> Self {
        let stack = std::env::var("STACK_NAME")
            .ok()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| LOCAL_STACK.to_owned());
        InvocationMetrics {
            function,
            stack,
            values: BTreeMap::new(),
        }
    }

    /// Adds to a count (unit `Count`).
    pub fn count(&mut self, name: &'static str, n: u64) {
        self.add(name, n as f64, "Count");
    }

    /// Adds to a byte total (unit `Bytes`).
    pub fn bytes(&mut self, name: &'static str, n: u64) {
        self.add(name, n as f64, "Bytes");
    }

    /// Sets a duration (unit `Milliseconds`).
    pub fn milliseconds(&mut self, name: &'static str, ms: f64) {
        self.values.insert(name, (ms, "Milliseconds"));
    }

    fn add(&mut self, name: &'static str, n: f64, unit: &'static str) {
        self.values.entry(name).or_insert((0.0, unit)).0 += n;
    }

    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).map(|(v, _)| *v).unwrap_or(0.0)
    }

    /// The EMF document: metrics under [`NAMESPACE`], dimensions `Function` and `Stack`.
    pub fn to_emf(&self, timestamp_ms: i64) -> Value {
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(name, (_, unit))| json!({"Name": name, "Unit": unit}))
            .collect();
        let mut document = json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Function", "Stack"]],
                    "Metrics": definitions,
                }],
            },
            "Function": self.function,
            "Stack": self.stack,
        });
        for (name, (value, _)) in &self.values {
            document[*name] = json!(value);
        }
        document
    }

    /// Writes the EMF line to stdout, where the Lambda log agent picks it up.
    pub fn emit(&self) {
        println!("{}", self.to_emf(chrono::Utc::now().timestamp_millis()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_every_metric_with_its_value() {
        let mut metrics = InvocationMetrics::new("kinesis-consumer");
        metrics.count("RecordsReceived", 3);
        metrics.count("RecordsReceived", 2);
        metrics.bytes("UsageBytes", 1024);
        let emf = metrics.to_emf(1_700_000_000_000);
        assert_eq!(emf["RecordsReceived"], json!(5.0));
        assert_eq!(emf["UsageBytes"], json!(1024.0));
        assert_eq!(emf["Function"], json!("kinesis-consumer"));
        let declared = &emf["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], json!(NAMESPACE));
        assert_eq!(declared["Metrics"].as_array().unwrap().len(), 2);
        assert_eq!(emf["_aws"]["Timestamp"], json!(1_700_000_000_000i64));
    }

    #[test]
    fn cold_start_is_reported_once() {
        // Other tests in this process may have taken it already; after one take it is false.
        let _ = take_cold_start();
        assert!(!take_cold_start());
    }
}
