//! The table definition. `infra/table.json` is the one source: the local scripts and tests
//! create the table from it through [`create_table`], and a test proves `template.yaml`
//! declares the same keys and indexes.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use serde::Deserialize;

use kore_ingest_core::port::LedgerError;

use super::error::from_sdk;

pub const TABLE_DEFINITION_JSON: &str = include_str!("../../../../infra/table.json");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDefinition {
    pub billing_mode: String,
    pub attribute_definitions: Vec<AttributeDef>,
    pub key_schema: Vec<KeyDef>,
    pub global_secondary_indexes: Vec<IndexDef>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyDef {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyDef>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionDef {
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

impl TableDefinition {
    pub fn load() -> Result<Self, LedgerError> {
        serde_json::from_str(TABLE_DEFINITION_JSON)
            .map_err(|e| LedgerError::Definition(format!("infra/table.json: {e}")))
    }
}

fn key_schema(keys: &[KeyDef]) -> Result<Vec<KeySchemaElement>, LedgerError> {
    keys.iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .map_err(|e| LedgerError::Definition(e.to_string()))
        })
        .collect()
}

/// Creates the ledger table as `infra/table.json` defines it (on-demand capacity).
pub async fn create_table(client: &Client, table_name: &str) -> Result<(), LedgerError> {
    let definition = TableDefinition::load()?;
    let attributes = definition
        .attribute_definitions
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(|e| LedgerError::Definition(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let indexes = definition
        .global_secondary_indexes
        .iter()
        .map(|index| {
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            index.projection.projection_type.as_str(),
                        ))
                        .set_non_key_attributes(
                            (!index.projection.non_key_attributes.is_empty())
                                .then(|| index.projection.non_key_attributes.clone()),
                        )
                        .build(),
                )
                .build()
                .map_err(|e| LedgerError::Definition(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    client
        .create_table()
        .table_name(table_name)
        .billing_mode(BillingMode::from(definition.billing_mode.as_str()))
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(&definition.key_schema)?))
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await
        .map_err(|e| from_sdk("CreateTable", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_parses_and_every_key_attribute_is_defined() {
        let definition = TableDefinition::load().unwrap();
        let defined: Vec<&str> = definition
            .attribute_definitions
            .iter()
            .map(|a| a.attribute_name.as_str())
            .collect();
        let keys = definition.key_schema.iter().chain(
            definition
                .global_secondary_indexes
                .iter()
                .flat_map(|i| i.key_schema.iter()),
        );
        for key in keys {
            assert!(defined.contains(&key.attribute_name.as_str()), "{key:?}");
        }
        assert_eq!(definition.billing_mode, "PAY_PER_REQUEST");
    }
}
