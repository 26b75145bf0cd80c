//! Issue 13, item 10: production permissions that the local stack cannot check. DynamoDB
//! Local and kinesalite accept every call, so a missing grant (BatchGetItem was one) only
//! shows in AWS. While the suite runs, the HTTP layer of `tests/support` records every AWS
//! operation each function's handler performs, as the IAM actions it needs
//! (`AWS_OPERATIONS_LOG`); this test then requires `template.yaml` to grant each of them to
//! that function's role, and nothing the functions do not do.
//!
//! `scripts/test` runs it after the whole suite (`--ignored`), so that the record is complete.

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value;

/// Statements a function's code never exercises, because a service uses them on the role's
/// behalf: Lambda's log agent, the event source mappings reading the streams (Kinesis, the
/// table's) and writing the on-failure queues, KMS used by Kinesis or DynamoDB Streams for
/// a customer-keyed stream.
const NOT_CALLED_BY_THE_CODE: [(&str, &str); 19] = [
    ("kinesis-consumer", "Logs"),
    ("kinesis-consumer", "ReadStream"),
    ("kinesis-consumer", "OnFailureDestination"),
    ("kinesis-consumer", "DecryptStream"),
    ("webhook", "Logs"),
    ("webhook", "SpillStreamKey"),
    ("segment-forwarder", "Logs"),
    ("segment-forwarder", "ReadTableStream"),
    ("segment-forwarder", "OnFailureDestination"),
    ("segment-forwarder", "DecryptTableStream"),
    ("callback-forwarder", "Logs"),
    ("callback-forwarder", "ReadTableStream"),
    ("callback-forwarder", "OnFailureDestination"),
    ("callback-forwarder", "DecryptTableStream"),
    ("alerts", "Logs"),
    ("alerts", "ReadTableStream"),
    ("alerts", "OnFailureDestination"),
    ("alerts", "DecryptTableStream"),
    ("archiver", "Logs"),
];

const FUNCTIONS: [(&str, &str); 6] = [
    ("kinesis-consumer", "KinesisConsumerFunction"),
    ("webhook", "WebhookFunction"),
    ("segment-forwarder", "SegmentForwarderFunction"),
    ("callback-forwarder", "CallbackForwarderFunction"),
    ("alerts", "AlertsFunction"),
    ("archiver", "ArchiverFunction"),
];

/// What a granted action applies to: the table, its indexes, or anything else.
#[derive(Debug, Default)]
struct Grant {
    table: bool,
    index: bool,
    other: bool,
}

/// A conditional statement (`!If [condition, statement, !Ref AWS::NoValue]`) as deployed
/// with the condition true: the configuration that grants the most.
fn unconditional(value: &Value) -> Option<&Value> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "If" => tagged.value.as_sequence()?.get(1),
        Value::Mapping(map) if map.contains_key("Fn::If") => map["Fn::If"].as_sequence()?.get(1),
        other => Some(other),
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Every action granted by `statements` that `function`'s code exercises.
fn granted_by<'a>(
    statements: impl Iterator<Item = &'a Value>,
    function: &str,
) -> BTreeMap<String, Grant> {
    let mut grants: BTreeMap<String, Grant> = BTreeMap::new();
    for statement in statements.filter_map(unconditional) {
        if statement.is_null() || statement["Effect"].as_str() != Some("Allow") {
            continue;
        }
        let sid = statement["Sid"].as_str().unwrap_or_default();
        if NOT_CALLED_BY_THE_CODE.contains(&(function, sid)) {
            continue;
        }
        let resources = format!("{:?}", statement["Resource"]);
        for action in strings(&statement["Action"]) {
            let grant = grants.entry(action).or_default();
            grant.index |= resources.contains("/index");
            grant.table |= resources.contains("UsageTable.Arn") && !resources.contains("/index");
            grant.other |= !resources.contains("UsageTable");
        }
    }
    grants
}

/// Every action granted to `function`'s role by the statements its code exercises.
fn granted(template: &Value, resource: &str, function: &str) -> BTreeMap<String, Grant> {
    let role_ref = &template["Resources"][resource]["Properties"]["Role"];
    let role = match role_ref {
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => tagged
            .value
            .as_str()
            .and_then(|s| s.strip_suffix(".Arn"))
            .unwrap_or_default()
            .to_owned(),
        other => panic!("{resource}'s Role is not !GetAtt <role>.Arn: {other:?}"),
    };
    let policies = template["Resources"][role.as_str()]["Properties"]["Policies"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{role} has no inline policies"));
    let statements = policies.iter().flat_map(|policy| {
        policy["PolicyDocument"]["Statement"]
            .as_sequence()
            .into_iter()
            .flatten()
    });
    granted_by(statements, function)
}

/// `function` to (action, resource) from the log of the suite.
fn recorded() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let path = std::env::var("AWS_OPERATIONS_LOG")
        .expect("AWS_OPERATIONS_LOG: scripts/test sets it and runs this after the suite");
    let log = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}: run the whole suite first (scripts/test)"));
    let mut operations: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split('\t');
        let (Some(function), Some(action), Some(resource)) =
            (fields.next(), fields.next(), fields.next())
        else {
            panic!("malformed line in {path}: {line:?}");
        };
        operations
            .entry(function.to_owned())
            .or_default()
            .insert((action.to_owned(), resource.to_owned()));
    }
    operations
}

#[test]
#[ignore = "checks what the whole suite recorded: scripts/test runs it last"]
fn every_operation_the_functions_perform_is_granted_and_nothing_more() {
    let template: Value =
        serde_norway::from_str(include_str!("../template.yaml")).expect("template.yaml is YAML");
    let operations = recorded();
    let mut problems = Vec::new();
    for (function, resource) in FUNCTIONS {
        let grants = granted(&template, resource, function);
        let done = operations.get(function).cloned().unwrap_or_default();
        if done.is_empty() {
            problems.push(format!("no operation of {function} was recorded"));
        }
        for (action, on) in &done {
            let ok = grants.get(action).is_some_and(|g| match on.as_str() {
                "table" => g.table,
                "index" => g.index,
                _ => g.other || g.table,
            });
            if !ok {
                problems.push(format!(
                    "{function} performs {action} (on its {on}) but {resource}'s role does not grant it there"
                ));
            }
        }
        for action in grants.keys() {
            if !done.iter().any(|(a, _)| a == action) {
                problems.push(format!(
                    "{resource}'s role grants {action}, which {function} never performed in the suite"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// `kore-usage`'s calls to the archive bucket (recorded by `cli/tests/archive.rs`) are what
/// `ArchiveOperatorPolicy` grants, no more and no less. Its calls to the table are the
/// deployer's to grant and not checked here.
#[test]
#[ignore = "checks what the whole suite recorded: scripts/test runs it last"]
fn the_operator_policy_grants_exactly_the_archive_calls_of_kore_usage() {
    let template: Value =
        serde_norway::from_str(include_str!("../template.yaml")).expect("template.yaml is YAML");
    let statements = template["Resources"]["ArchiveOperatorPolicy"]["Properties"]["PolicyDocument"]
        ["Statement"]
        .as_sequence()
        .expect("ArchiveOperatorPolicy has statements");
    let granted: BTreeSet<String> = granted_by(statements.iter(), "kore-usage")
        .into_keys()
        .collect();
    let done: BTreeSet<String> = recorded()
        .remove("kore-usage")
        .unwrap_or_default()
        .into_iter()
        .map(|(action, _)| action)
        .filter(|action| action.starts_with("s3:"))
        .collect();
    assert_eq!(done, granted, "performed on S3 by kore-usage, and granted");
}
