//! The built-in transforms: one table ([`KINDS`]) of every `type:` with its aliases, how its
//! `config:` is read and its JSON Schema. Each transform's config type implements
//! [`Spec`](crate::op::Spec): validation without a schema, and compilation against an input
//! schema into an [`Op`](crate::op::Op). The `cdc_features` blocks are transforms too
//! ([`dedup`], [`tombstones`], [`event_router`], [`partitioner`]); they are not listed in
//! [`KINDS`] because they are configured only through `cdc_features`.

#[cfg(feature = "blob")]
mod blob;
pub(crate) mod crypto;
pub mod dedup;
mod envelope;
pub mod event_router;
mod fields;
mod filter;
pub mod partitioner;
mod project;
mod route;
mod time;
pub mod tombstones;

use crate::op::Spec;
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Reads a transform's `config:` into its parsed, validated spec.
type Parse = fn(&serde_yaml::Value) -> Result<Arc<dyn Spec>, Vec<FieldError>>;

/// One transform type.
#[derive(Clone, Copy)]
pub struct Kind {
    /// The name used in `type:`.
    pub name: &'static str,
    /// Other names accepted for it (the spec's and Kafka Connect's spellings).
    pub aliases: &'static [&'static str],
    /// What it does, in one line.
    pub description: &'static str,
    parse: Parse,
    schema: fn() -> schemars::Schema,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).finish()
    }
}

impl Kind {
    /// Whether `name` is this type or one of its aliases.
    pub fn is(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// JSON Schema of its `config:`.
    pub fn config_schema(&self) -> schemars::Schema {
        (self.schema)()
    }
}

fn typed<T: DeserializeOwned + Spec + 'static>(
    config: &serde_yaml::Value,
) -> Result<Arc<dyn Spec>, Vec<FieldError>> {
    let spec: T = rivven_engine::config::parse(config)?;
    Ok(Arc::new(spec))
}

fn schema_of<T: JsonSchema>() -> schemars::Schema {
    schemars::schema_for!(T)
}

const fn kind<T: DeserializeOwned + JsonSchema + Spec + Validate + 'static>(
    name: &'static str,
    aliases: &'static [&'static str],
    description: &'static str,
) -> Kind {
    Kind {
        name,
        aliases,
        description,
        parse: typed::<T>,
        schema: schema_of::<T>,
    }
}

/// Every transform type, in the order the docs list them.
pub const KINDS: &[Kind] = &[
    kind::<envelope::ExtractNewRecordState>(
        "extract_new_record_state",
        &["unwrap_envelope"],
        "change events become flat rows of their new state (Debezium's ExtractNewRecordState)",
    ),
    kind::<envelope::ValueToKey>("value_to_key", &[], "declare the record key columns"),
    kind::<envelope::HeaderToValue>(
        "header_to_value",
        &["header_from"],
        "copy or move envelope metadata into row columns",
    ),
    kind::<envelope::DropHeaders>("drop_headers", &[], "remove envelope metadata columns"),
    kind::<envelope::MessageTimestamp>(
        "message_timestamp",
        &[],
        "set a row's event time from a field",
    ),
    kind::<envelope::Unwrap>("unwrap", &[], "replace the row by one of its struct fields"),
    kind::<envelope::Flatten>(
        "flatten",
        &[],
        "nested struct fields become top-level columns",
    ),
    kind::<fields::MaskField>(
        "mask_field",
        &[],
        "replace values by a fixed text, their last characters or a hash",
    ),
    kind::<fields::InsertField>(
        "insert_field",
        &[],
        "add a constant field, the processing time or the processing date",
    ),
    kind::<fields::ReplaceField>(
        "replace_field",
        &["rename_field"],
        "keep, drop and rename fields",
    ),
    kind::<fields::SetNull>("set_null", &[], "set fields to null"),
    kind::<fields::Cast>("cast", &[], "change the type of fields"),
    kind::<fields::ComputeField>(
        "compute_field",
        &[],
        "add a field computed from others (concatenation, hashing, upper/lower case, SQL)",
    ),
    kind::<time::TimestampConverter>(
        "timestamp_converter",
        &[],
        "convert time fields between text, epoch numbers, dates and timestamps",
    ),
    kind::<time::TimezoneConverter>(
        "timezone_converter",
        &["convert_timezone"],
        "move timestamps to another time zone",
    ),
    kind::<route::RegexRouter>(
        "regex_router",
        &[],
        "rename the destination topic by a regular expression",
    ),
    kind::<route::ContentRouter>(
        "content_router",
        &[],
        "choose the destination topic from a field's value",
    ),
    kind::<route::TimestampRouter>(
        "timestamp_router",
        &[],
        "add a time bucket of a field to the destination topic",
    ),
    kind::<filter::Filter>(
        "filter",
        &[],
        "keep (or drop) the rows a SQL condition selects",
    ),
    kind::<filter::DropNull>("drop_null", &[], "drop rows with nulls in given fields"),
    kind::<filter::Sql>(
        "sql",
        &[],
        "a stateless SELECT ... FROM input WHERE ... over each batch",
    ),
    kind::<crypto::EncryptField>(
        "encrypt_field",
        &[],
        "encrypt fields with AES-256-GCM or ChaCha20-Poly1305, with key rotation",
    ),
    kind::<crypto::DecryptField>(
        "decrypt_field",
        &[],
        "decrypt fields that encrypt_field wrote",
    ),
    #[cfg(feature = "blob")]
    kind::<blob::Blob>(
        "externalize_blob",
        &[],
        "move large values to object storage, leaving a reference (claim check)",
    ),
];

/// The type called `name` (or one of its aliases).
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.is(name))
}

/// Every accepted `type:` name, aliases included, in [`KINDS`] order.
pub fn names() -> Vec<&'static str> {
    KINDS
        .iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
        .collect()
}

/// Parse and validate the `config:` of a transform of type `kind`. Errors are relative to
/// `config`; an unknown kind is reported with path `""`.
pub fn parse(kind: &str, config: &serde_yaml::Value) -> Result<Arc<dyn Spec>, Vec<FieldError>> {
    match find(kind) {
        Some(k) => (k.parse)(config),
        None if kind == "externalize_blob" => Err(vec![FieldError::new(
            "",
            "externalize_blob is not in this build (rivven-sql feature `blob`)",
        )]),
        None => Err(vec![FieldError::new(
            "",
            format!(
                "unknown transform type `{kind}`; available: {}",
                names().join(", ")
            ),
        )]),
    }
}
