//! Changes and snapshot rows that cannot be decoded, as dead-letter records: the table,
//! op, position and raw values (JSON) of the change, followed by the dead-letter columns of
//! [`rivven_engine::dead_letter`].

use super::pgoutput::Value;
use rivven_engine::{Error, Result};
use std::sync::Arc;

/// The raw values of a tuple as a JSON object: text values as text, binary ones as
/// `\\x<hex>`, unchanged TOAST values as `null` under `"__unchanged_toast"`.
pub(super) fn raw_json(names: &[String], values: &[Value]) -> String {
    let mut m = serde_json::Map::new();
    let mut unchanged = Vec::new();
    for (n, v) in names.iter().zip(values) {
        let j = match v {
            Value::Null => serde_json::Value::Null,
            Value::Unchanged => {
                unchanged.push(serde_json::Value::String(n.clone()));
                continue;
            }
            Value::Text(t) => serde_json::Value::String(String::from_utf8_lossy(t).into_owned()),
            Value::Binary(b) => serde_json::Value::String(format!(
                "\\x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )),
        };
        m.insert(n.clone(), j);
    }
    if !unchanged.is_empty() {
        m.insert(
            "__unchanged_toast".into(),
            serde_json::Value::Array(unchanged),
        );
    }
    serde_json::Value::Object(m).to_string()
}

/// One change that failed to decode, for the dead-letter topic: its table, op, position
/// and raw images (JSON), then the dead-letter columns (see [`rivven_engine::dead_letter`]).
pub(super) fn dead_letter_batch(
    error: &str,
    bound_for: &str,
    table: &str,
    op: &str,
    pos: &str,
    images: [Option<String>; 2],
) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as arrow::array::ArrayRef;
    let [before, after] = images;
    let fields = [
        ("table", false),
        ("op", false),
        ("pos", false),
        ("before", true),
        ("after", true),
    ];
    let schema = Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, null)| Field::new(*n, DataType::Utf8, *null))
            .collect::<Vec<_>>(),
    ));
    let record = RecordBatch::try_new(
        schema,
        vec![
            text(Some(table)),
            text(Some(op)),
            text(Some(pos)),
            text(before.as_deref()),
            text(after.as_deref()),
        ],
    )
    .map_err(|e| Error::internal(format!("dead-letter row: {e}")))?;
    rivven_engine::dead_letter::rows(&record, error, "postgres-cdc decode", bound_for)
}
