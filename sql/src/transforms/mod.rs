//! The built-in transforms. Each is a config type (the YAML under `config:`) implementing
//! [`Spec`]: validation without a schema, and compilation against an input schema into an
//! [`Op`].

#[cfg(feature = "blob")]
mod blob;
pub(crate) mod crypto;
mod envelope;
mod fields;
mod filter;
mod project;
mod route;
mod time;

use arrow::datatypes::SchemaRef;
use rivven_engine::config::FieldError;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use crate::chain::Op;

/// A transform's parsed config.
pub trait Spec: Send + Sync {
    /// Checks that need no schema; paths relative to `config`.
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
    /// Compile against an input schema; errors relative to `config`.
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError>;
}

/// Every transform `type`, with its aliases (`externalize_blob` needs the feature `blob`).
pub const KINDS: &[&str] = &[
    "extract_new_record_state",
    "unwrap_envelope",
    "value_to_key",
    "mask_field",
    "insert_field",
    "replace_field",
    "rename_field",
    "regex_router",
    "content_router",
    "timestamp_router",
    "timestamp_converter",
    "timezone_converter",
    "convert_timezone",
    "filter",
    "cast",
    "flatten",
    "header_to_value",
    "header_from",
    "drop_headers",
    "message_timestamp",
    "unwrap",
    "set_null",
    "drop_null",
    "compute_field",
    "sql",
    "encrypt_field",
    "decrypt_field",
    "externalize_blob",
];

fn typed<T: DeserializeOwned + Spec + 'static>(
    config: &serde_yaml::Value,
) -> Result<Box<dyn Spec>, Vec<FieldError>> {
    let spec: T = rivven_engine::registry::parse_value(config)?;
    let errs = spec.validate();
    if errs.is_empty() {
        Ok(Box::new(spec))
    } else {
        Err(errs)
    }
}

/// Parse the `config:` of a transform of type `kind`. Errors are relative to `config`; an
/// unknown kind is reported with path `""`.
pub fn parse(kind: &str, config: &serde_yaml::Value) -> Result<Box<dyn Spec>, Vec<FieldError>> {
    match kind {
        "extract_new_record_state" | "unwrap_envelope" => {
            typed::<envelope::ExtractNewRecordState>(config)
        }
        "value_to_key" => typed::<envelope::ValueToKey>(config),
        "header_to_value" | "header_from" => typed::<envelope::HeaderToValue>(config),
        "drop_headers" => typed::<envelope::DropHeaders>(config),
        "message_timestamp" => typed::<envelope::MessageTimestamp>(config),
        "unwrap" => typed::<envelope::Unwrap>(config),
        "flatten" => typed::<envelope::Flatten>(config),
        "mask_field" => typed::<fields::MaskField>(config),
        "insert_field" => typed::<fields::InsertField>(config),
        "replace_field" | "rename_field" => typed::<fields::ReplaceField>(config),
        "set_null" => typed::<fields::SetNull>(config),
        "drop_null" => typed::<filter::DropNull>(config),
        "cast" => typed::<fields::Cast>(config),
        "compute_field" => typed::<fields::ComputeField>(config),
        "timestamp_converter" => typed::<time::TimestampConverter>(config),
        "timezone_converter" | "convert_timezone" => typed::<time::TimezoneConverter>(config),
        "regex_router" => typed::<route::RegexRouter>(config),
        "content_router" => typed::<route::ContentRouter>(config),
        "timestamp_router" => typed::<route::TimestampRouter>(config),
        "filter" => typed::<filter::Filter>(config),
        "sql" => typed::<filter::Sql>(config),
        "encrypt_field" => typed::<crypto::EncryptField>(config),
        "decrypt_field" => typed::<crypto::DecryptField>(config),
        #[cfg(feature = "blob")]
        "externalize_blob" => typed::<blob::ExternalizeBlob>(config),
        #[cfg(not(feature = "blob"))]
        "externalize_blob" => Err(vec![FieldError::new(
            "",
            "externalize_blob is not in this build (rivven-sql feature `blob`)",
        )]),
        other => Err(vec![FieldError::new(
            "",
            format!(
                "unknown transform type `{other}`; available: {}",
                KINDS.join(", ")
            ),
        )]),
    }
}

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

impl std::ops::Deref for Names {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// An error at `key` when `names` is empty.
fn non_empty(key: &str, names: &[String]) -> Vec<FieldError> {
    if names.is_empty() {
        vec![FieldError::new(key, "list at least one field")]
    } else {
        Vec::new()
    }
}

/// Every name in `names` is a field of `schema`; the error names the list key and index.
fn require_fields(key: &str, names: &[String], schema: &SchemaRef) -> Result<(), FieldError> {
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
