//! What `template.yaml` must hold that the local stack cannot show (issue 13, items 2, 3 and
//! 11): alarms that two stacks in one account do not share, a webhook that cannot starve the
//! consumer, alarms for silence, throttling, spilled and refused deliveries, and an
//! encrypted table.

use serde_norway::Value;

fn template() -> Value {
    serde_norway::from_str(include_str!("../template.yaml")).expect("template.yaml is YAML")
}

/// `!Ref name` (serde_norway keeps CloudFormation's short forms as tagged values).
fn is_ref(value: &Value, name: &str) -> bool {
    match value {
        Value::Tagged(tagged) => tagged.tag == "Ref" && tagged.value.as_str() == Some(name),
        Value::Mapping(map) => map.get("Ref").and_then(Value::as_str) == Some(name),
        _ => false,
    }
}

fn alarms(template: &Value) -> Vec<(String, Value)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|(name, r)| (name.as_str().unwrap_or_default().to_owned(), r.clone()))
        .collect()
}

/// Every metric an alarm watches: (namespace, metric name, dimensions).
fn watched(alarm: &Value) -> Vec<(String, String, Value)> {
    let properties = &alarm["Properties"];
    let mut metrics = Vec::new();
    if let Some(namespace) = properties["Namespace"].as_str() {
        metrics.push((
            namespace.to_owned(),
            properties["MetricName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            properties["Dimensions"].clone(),
        ));
    }
    for query in properties["Metrics"].as_sequence().into_iter().flatten() {
        let metric = &query["MetricStat"]["Metric"];
        if let Some(namespace) = metric["Namespace"].as_str() {
            metrics.push((
                namespace.to_owned(),
                metric["MetricName"].as_str().unwrap_or_default().to_owned(),
                metric["Dimensions"].clone(),
            ));
        }
    }
    metrics
}

fn dimension<'a>(dimensions: &'a Value, name: &str) -> Option<&'a Value> {
    dimensions
        .as_sequence()?
        .iter()
        .find(|d| d["Name"].as_str() == Some(name))
        .map(|d| &d["Value"])
}

fn function_env(template: &Value, function: &str, name: &str) -> Value {
    let own = &template["Resources"][function]["Properties"]["Environment"]["Variables"][name];
    if !own.is_null() {
        return own.clone();
    }
    template["Globals"]["Function"]["Environment"]["Variables"][name].clone()
}

#[test]
fn every_alarm_on_our_metrics_is_scoped_to_this_stack() {
    let template = template();
    for function in [
        "KinesisConsumerFunction",
        "WebhookFunction",
        "SegmentForwarderFunction",
    ] {
        assert!(
            is_ref(
                &function_env(&template, function, "STACK_NAME"),
                "AWS::StackName"
            ),
            "{function} gets STACK_NAME"
        );
    }
    let mut ours = 0;
    for (name, alarm) in alarms(&template) {
        for (namespace, metric, dimensions) in watched(&alarm) {
            if namespace != "KoreIngest" {
                continue;
            }
            ours += 1;
            let stack = dimension(&dimensions, "Stack")
                .unwrap_or_else(|| panic!("{name} watches {metric} of every stack"));
            assert!(is_ref(stack, "AWS::StackName"), "{name}: {stack:?}");
        }
    }
    assert!(ours > 0);
}

#[test]
fn the_webhook_has_reserved_concurrency() {
    let template = template();
    let properties = &template["Resources"]["WebhookFunction"]["Properties"];
    assert!(
        !properties["ReservedConcurrentExecutions"].is_null(),
        "a public URL must not take the concurrency the consumer needs"
    );
}

#[test]
fn signature_rejections_alarm_from_the_first_one() {
    let template = template();
    let default = &template["Parameters"]["SignatureRejectedAlarmThreshold"]["Default"];
    assert_eq!(default.as_u64(), Some(0), "{default:?}");
    let alarm = &template["Resources"]["SignatureRejectedAlarm"]["Properties"];
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
}

#[test]
fn silence_on_either_path_alarms_and_missing_data_counts_as_silence() {
    let template = template();
    for function in ["kinesis-consumer", "webhook"] {
        let heartbeat = alarms(&template).into_iter().find(|(_, alarm)| {
            watched(alarm)
                .iter()
                .any(|(namespace, metric, dimensions)| {
                    namespace == "KoreIngest"
                        && metric == "EventsNew"
                        && dimension(dimensions, "Function").and_then(Value::as_str)
                            == Some(function)
                })
                && alarm["Properties"]["ComparisonOperator"] == "LessThanThreshold"
        });
        let (name, alarm) =
            heartbeat.unwrap_or_else(|| panic!("no heartbeat alarm for {function}"));
        assert_eq!(
            alarm["Properties"]["TreatMissingData"], "breaching",
            "{name}: no data at all is the silence it is for"
        );
    }
}

#[test]
fn dynamodb_throttling_alarms() {
    let template = template();
    let throttles: Vec<String> = alarms(&template)
        .iter()
        .flat_map(|(_, alarm)| watched(alarm))
        .filter(|(namespace, metric, _)| namespace == "AWS/DynamoDB" && metric.contains("Throttle"))
        .map(|(_, metric, _)| metric)
        .collect();
    for metric in ["ReadThrottleEvents", "WriteThrottleEvents"] {
        assert!(
            throttles.iter().any(|m| m == metric),
            "{metric} in {throttles:?}"
        );
    }
}

#[test]
fn spilled_and_refused_deliveries_alarm() {
    let template = template();
    let metrics: Vec<String> = alarms(&template)
        .iter()
        .flat_map(|(_, alarm)| watched(alarm))
        .filter(|(namespace, _, _)| namespace == "KoreIngest")
        .map(|(_, metric, _)| metric)
        .collect();
    for metric in ["RequestsSpilled", "SignedResponses4xx"] {
        assert!(
            metrics.iter().any(|m| m == metric),
            "{metric} in {metrics:?}"
        );
    }
    assert!(!function_env(&template, "WebhookFunction", "SPILL_STREAM").is_null());
}

#[test]
fn the_table_is_encrypted_with_an_optional_customer_key() {
    let template = template();
    let sse = &template["Resources"]["UsageTable"]["Properties"]["SSESpecification"];
    assert_eq!(sse["SSEEnabled"].as_bool(), Some(true), "{sse:?}");
    assert_eq!(sse["SSEType"], "KMS");
    assert!(!sse["KMSMasterKeyId"].is_null(), "{sse:?}");
    assert_eq!(
        template["Parameters"]["TableKmsKeyArn"]["Default"].as_str(),
        Some(""),
        "empty: the AWS managed key"
    );
}

/// `!Condition name` or `Condition: name` on a resource.
fn condition_of(resource: &Value) -> Option<&str> {
    resource["Condition"].as_str()
}

#[test]
fn the_segment_forwarder_exists_only_with_its_write_key() {
    let template = template();
    let parameter = &template["Parameters"]["SegmentWriteKeySecretArn"];
    assert_eq!(parameter["Default"].as_str(), Some(""), "off by default");
    let condition = format!("{:?}", template["Conditions"]["Segment"]);
    assert!(
        condition.contains("SegmentWriteKeySecretArn"),
        "{condition}"
    );
    let segment_resources: Vec<String> = template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(name, _)| name.as_str().unwrap_or_default().starts_with("Segment"))
        .map(|(name, resource)| {
            let name = name.as_str().unwrap_or_default().to_owned();
            assert_eq!(condition_of(resource), Some("Segment"), "{name}");
            name
        })
        .collect();
    for expected in [
        "SegmentForwarderFunction",
        "SegmentForwarderRole",
        "SegmentEventSourceMapping",
        "SegmentOnFailureQueue",
        "SegmentForwarderErrorsAlarm",
        "SegmentIteratorAgeAlarm",
        "SegmentOnFailureQueueAlarm",
        "SegmentNotForwardedAlarm",
    ] {
        assert!(
            segment_resources.iter().any(|r| r == expected),
            "{expected} in {segment_resources:?}"
        );
    }
}

#[test]
fn every_stored_callback_goes_from_the_table_stream_to_the_stacks_bus() {
    let template = template();
    let resources = &template["Resources"];
    // The table's stream is always on (callback-forwarder reads it), with new images.
    let stream = &resources["UsageTable"]["Properties"]["StreamSpecification"];
    assert_eq!(
        stream["StreamViewType"].as_str(),
        Some("NEW_IMAGE"),
        "{stream:?}"
    );
    assert_eq!(
        resources["CallbackEventBus"]["Type"].as_str(),
        Some("AWS::Events::EventBus")
    );
    let mapping = &resources["CallbackEventSourceMapping"]["Properties"];
    let pattern = format!("{:?}", mapping["FilterCriteria"]);
    assert!(
        pattern.contains("INSERT") && pattern.contains("CALLBACK#"),
        "{pattern}"
    );
    assert_eq!(
        mapping["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    let environment = format!(
        "{:?}",
        resources["CallbackForwarderFunction"]["Properties"]["Environment"]
    );
    assert!(environment.contains("CallbackEventBus"), "{environment}");
    for output in ["EventBusName", "EventBusArn"] {
        assert!(!template["Outputs"][output].is_null(), "{output}");
    }
}

#[test]
fn the_table_stream_mapping_forwards_inserted_event_records_and_reports_failures() {
    let template = template();
    let mapping = &template["Resources"]["SegmentEventSourceMapping"]["Properties"];
    assert_eq!(
        mapping["FunctionResponseTypes"],
        serde_norway::from_str::<Value>("[ReportBatchItemFailures]").unwrap()
    );
    assert!(
        !mapping["DestinationConfig"]["OnFailure"]["Destination"].is_null(),
        "an on-failure destination"
    );
    let pattern: serde_json::Value = serde_json::from_str(
        mapping["FilterCriteria"]["Filters"][0]["Pattern"]
            .as_str()
            .expect("a filter pattern"),
    )
    .expect("the pattern is JSON");
    assert_eq!(pattern["eventName"], serde_json::json!(["INSERT"]));
    assert_eq!(
        pattern["dynamodb"]["Keys"]["pk"]["S"],
        serde_json::json!([{"prefix": "EVENT#"}])
    );
    assert_eq!(
        pattern["dynamodb"]["Keys"]["sk"]["S"],
        serde_json::json!(["#"])
    );
    // US or EU, as the parameter says.
    let endpoints = &template["Mappings"]["SegmentEndpoints"];
    assert_eq!(endpoints["US"]["Url"], "https://api.segment.io");
    assert_eq!(endpoints["EU"]["Url"], "https://events.eu1.segmentapis.com");
    let env = format!(
        "{:?}",
        function_env(&template, "SegmentForwarderFunction", "SEGMENT_ENDPOINT")
    );
    assert!(
        env.contains("SegmentEndpoints") && env.contains("SegmentEndpoint"),
        "{env}"
    );
    assert!(
        !function_env(
            &template,
            "SegmentForwarderFunction",
            "SEGMENT_WRITE_KEY_SECRET_ARN"
        )
        .is_null()
    );
}

/// `scripts/deploy --dry-run` with the given arguments: (exit code, stderr).
fn deploy_dry_run(args: &[&str]) -> (i32, String) {
    let output =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/deploy"))
            .args(["--dry-run", "--skip-build", "--region", "us-east-1"])
            .args(args)
            .env_remove("PARAM_AlarmEmail")
            .output()
            .expect("run scripts/deploy");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Issue 21, item 11: without `AlarmEmail` the alarms notify a topic nobody reads, so the
/// deployment says so, loudly; with one it does not.
#[test]
fn deploy_warns_loudly_when_no_alarm_reaches_anyone() {
    let (code, stderr) = deploy_dry_run(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("WARNING: no AlarmEmail"),
        "no warning in: {stderr}"
    );
    let (code, stderr) = deploy_dry_run(&["--param", "AlarmEmail=ops@example.com"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("AlarmEmail"), "{stderr}");
}

#[test]
fn alerts_are_evaluated_from_inserted_event_records_and_retried_whole() {
    let template = template();
    let resources = &template["Resources"];
    let mapping = &resources["AlertsEventSourceMapping"]["Properties"];
    let pattern: serde_json::Value = serde_json::from_str(
        mapping["FilterCriteria"]["Filters"][0]["Pattern"]
            .as_str()
            .expect("a filter pattern"),
    )
    .expect("the pattern is JSON");
    assert_eq!(
        pattern["dynamodb"]["Keys"]["pk"]["S"],
        serde_json::json!([{"prefix": "EVENT#"}])
    );
    // The running sums' batch marks are keyed on a batch's first record: a failed batch
    // must come again whole, from that record, never bisected or partly acknowledged.
    assert!(mapping["FunctionResponseTypes"].is_null(), "{mapping:?}");
    assert_eq!(mapping["BisectBatchOnFunctionError"].as_bool(), Some(false));
    let events = &resources["AlertsFunction"]["Properties"]["Events"];
    assert_eq!(events["SilenceCheck"]["Type"].as_str(), Some("Schedule"));
    // It writes only the alert partitions.
    let role = format!("{:?}", resources["AlertsRole"]["Properties"]["Policies"]);
    assert!(
        role.contains("ALERT*") && role.contains("LeadingKeys"),
        "{role}"
    );
    // Each alert it stores goes on the bus through callback-forwarder.
    let forwarded = format!(
        "{:?}",
        resources["CallbackEventSourceMapping"]["Properties"]["FilterCriteria"]
    );
    assert!(forwarded.contains("ALERTS#"), "{forwarded}");
    assert_eq!(
        resources["UsageTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
}

/// A Parquet column's type as Glue and Athena name it: only the types the archive writes.
fn hive_type(data_type: &arrow_schema::DataType) -> String {
    use arrow_schema::{DataType, TimeUnit};
    match data_type {
        DataType::Utf8 => "string".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Timestamp(TimeUnit::Millisecond, Some(zone)) if zone.as_ref() == "UTC" => {
            "timestamp".into()
        }
        DataType::List(item) => format!("array<{}>", hive_type(item.data_type())),
        other => {
            panic!("the archive writes no {other:?}: Athena and DuckDB may read it differently")
        }
    }
}

#[test]
fn the_glue_tables_have_the_columns_of_the_parquet_the_archiver_writes() {
    use kore_ingest_archive::{ArchiveRow, RollupRow, Table};
    let template = template();
    for (resource, name, schema) in [
        (
            "ArchiveUsageEventsTable",
            "usage_events",
            ArchiveRow::schema(),
        ),
        (
            "ArchiveOtherEventsTable",
            "other_events",
            ArchiveRow::schema(),
        ),
        (
            "ArchiveUsageRollupsTable",
            "usage_rollups",
            RollupRow::schema(),
        ),
    ] {
        let table = &template["Resources"][resource];
        assert_eq!(condition_of(table), Some("Archive"), "{resource}");
        let input = &table["Properties"]["TableInput"];
        assert_eq!(input["Name"].as_str(), Some(name));
        assert!(kore_ingest_archive::TABLES.contains(&name));
        let columns: Vec<(String, String)> = input["StorageDescriptor"]["Columns"]
            .as_sequence()
            .expect("Columns")
            .iter()
            .map(|c| {
                let text = |key: &str| c[key].as_str().unwrap_or_default().to_owned();
                (text("Name"), text("Type"))
            })
            .collect();
        let written: Vec<(String, String)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), hive_type(f.data_type())))
            .collect();
        assert_eq!(columns, written, "{resource}");
        let projection = &input["Parameters"];
        assert_eq!(projection["projection.enabled"].as_str(), Some("true"));
        assert_eq!(
            projection["projection.day.format"].as_str(),
            Some("yyyy-MM-dd")
        );
        assert!(
            format!("{:?}", projection["storage.location.template"])
                .contains(&format!("/{name}/day=${{!day}}/")),
            "{resource}: the folder a seal writes"
        );
    }
}

#[test]
fn the_named_queries_are_the_sql_files_scripts_archive_query_runs() {
    let template = template();
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/athena");
    let mut files: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".sql"))
        .collect();
    files.sort();
    let mut named = Vec::new();
    for (_, resource) in template["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Athena::NamedQuery") {
            continue;
        }
        assert_eq!(condition_of(resource), Some("Archive"));
        let name = resource["Properties"]["Name"].as_str().unwrap_or_default();
        let sql = std::fs::read_to_string(format!("{folder}/{name}.sql"))
            .unwrap_or_else(|e| panic!("{name}: no infra/athena/{name}.sql: {e}"));
        assert_eq!(
            resource["Properties"]["QueryString"].as_str(),
            Some(sql.as_str()),
            "{name}"
        );
        named.push(format!("{name}.sql"));
    }
    named.sort();
    assert_eq!(named, files, "one named query per file");
}

#[test]
fn the_archive_is_on_by_default_and_its_parts_exist_only_with_it() {
    let template = template();
    assert_eq!(
        template["Parameters"]["ArchiveEnabled"]["Default"].as_str(),
        Some("true")
    );
    for (name, resource) in template["Resources"].as_mapping().expect("Resources") {
        let name = name.as_str().unwrap_or_default();
        if name.starts_with("Archive") || name.ends_with("Query") {
            assert_eq!(condition_of(resource), Some("Archive"), "{name}");
        }
    }
    let bucket = &template["Resources"]["ArchiveBucket"];
    assert_eq!(bucket["DeletionPolicy"].as_str(), Some("Retain"));
    let block = &bucket["Properties"]["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting].as_bool(), Some(true), "{setting}");
    }
    // Without the archive nothing may expire from the ledger: it would be gone for good.
    let retention =
        &template["Globals"]["Function"]["Environment"]["Variables"]["LEDGER_RETENTION_DAYS"];
    let Value::Tagged(choice) = retention else {
        panic!("LEDGER_RETENTION_DAYS is not !If: {retention:?}")
    };
    let branches = choice
        .value
        .as_sequence()
        .expect("!If [condition, then, else]");
    assert_eq!(choice.tag, "If");
    assert_eq!(branches[0].as_str(), Some("Archive"));
    assert!(is_ref(&branches[1], "LedgerRetentionDays"), "{retention:?}");
    assert_eq!(branches[2].as_u64(), Some(0), "without the archive: 0");
    let function = &template["Resources"]["ArchiverFunction"]["Properties"];
    assert_eq!(
        function["ReservedConcurrentExecutions"].as_u64(),
        Some(1),
        "one writer"
    );
    let workgroup =
        &template["Resources"]["ArchiveWorkGroup"]["Properties"]["WorkGroupConfiguration"];
    assert!(is_ref(
        &workgroup["BytesScannedCutoffPerQuery"],
        "AthenaBytesScannedCutoffPerQuery"
    ));
}
