//! Issue 13, item 11: two stacks in one account must not share metrics (and so alarms):
//! every metric carries a `Stack` dimension, from `STACK_NAME`, which the template sets.
//! Its own test binary, because it sets a process-wide environment variable.

use kore_ingest_core::metrics::{InvocationMetrics, NAMESPACE};
use serde_json::json;

#[test]
fn every_metric_has_the_stack_dimension_from_stack_name() {
    // SAFETY: the only test of this binary, and it sets the variable before any other thread
    // of this process could read the environment.
    unsafe { std::env::set_var("STACK_NAME", "kore-ingest-prod-eu") };
    let mut metrics = InvocationMetrics::new("webhook");
    metrics.count("Responses2xx", 1);
    metrics.count("SignatureRejected", 2);
    let emf = metrics.to_emf(1_700_000_000_000);

    let declared = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(declared["Namespace"], json!(NAMESPACE));
    assert_eq!(declared["Dimensions"], json!([["Function", "Stack"]]));
    assert_eq!(emf["Stack"], json!("kore-ingest-prod-eu"));
    assert_eq!(emf["Function"], json!("webhook"));
    // The metric names do not change.
    assert_eq!(emf["Responses2xx"], json!(1.0));
    assert_eq!(emf["SignatureRejected"], json!(2.0));
}
