//! `template.yaml` deploys exactly the table that `infra/table.json` defines, which is what
//! the tests and the local stack create.

use kore_ingest_aws::ledger::{TABLE_DEFINITION_JSON, TableDefinition};
use serde_norway::Value;

#[test]
fn template_table_matches_infra_table_json() {
    let template: Value =
        serde_norway::from_str(include_str!("../template.yaml")).expect("template.yaml is YAML");
    let properties = template["Resources"]["UsageTable"]["Properties"].clone();
    assert!(properties.is_mapping(), "UsageTable has no Properties");
    // Only the keys the definition covers; the template adds PITR and deletion protection.
    let mut relevant = serde_norway::Mapping::new();
    for key in [
        "BillingMode",
        "AttributeDefinitions",
        "KeySchema",
        "GlobalSecondaryIndexes",
    ] {
        relevant.insert(key.into(), properties[key].clone());
    }
    let from_template: TableDefinition =
        serde_norway::from_value(Value::Mapping(relevant)).expect("table properties");
    let from_json: TableDefinition = serde_json::from_str(TABLE_DEFINITION_JSON).unwrap();
    assert_eq!(from_template, from_json);
}
