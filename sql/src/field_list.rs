//! Lists of field names in transform configs: written as a YAML list or as comma-separated
//! text, and checked against a schema.

use arrow::datatypes::SchemaRef;
use rivven_engine::config::FieldError;

/// A list of field names given as a YAML list or as comma-separated text (`"a,b"`).
#[derive(Debug, Clone, Default)]
pub struct Names(pub Vec<String>);

impl<'de> serde::Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Text(String),
        }
        Ok(Names(match Raw::deserialize(d)? {
            Raw::List(l) => l,
            Raw::Text(t) => t
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        }))
    }
}

impl schemars::JsonSchema for Names {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FieldNames".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Field names: a list, or one text with names separated by commas.",
            "anyOf": [
                { "type": "array", "items": { "type": "string" } },
                { "type": "string" }
            ]
        })
    }
}

impl std::ops::Deref for Names {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// The JSON Schema of a scalar value in a config (text, number or boolean), for fields
/// kept as YAML values.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// An error at `key` when `names` is empty.
pub fn non_empty(key: &str, names: &[String]) -> Vec<FieldError> {
    if names.is_empty() {
        vec![FieldError::new(key, "list at least one field")]
    } else {
        Vec::new()
    }
}

/// Every name in `names` is a field of `schema`; the error names the list key and index.
pub fn require_fields(key: &str, names: &[String], schema: &SchemaRef) -> Result<(), FieldError> {
    for (i, n) in names.iter().enumerate() {
        if schema.field_with_name(n).is_err() {
            let all: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(FieldError::new(
                format!("{key}[{i}]"),
                format!("no field `{n}` in the row; fields: {}", all.join(", ")),
            ));
        }
    }
    Ok(())
}
