//! Input batches and the golden-file harness.
//!
//! `golden(name, transforms_yaml, input, topic)` runs the chain and compares every output
//! (its topic and its rows, pretty-printed) with `tests/golden/<name>.txt`. With
//! `RIVVEN_GOLDEN=update` the file is (re)written instead; review the diff before committing.

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use rivven_engine::batch::{
    change_event_schema, change_event_source_fields, META_NAMESPACE, META_STREAM,
};
use rivven_engine::config::TransformSpec;
use rivven_engine::connector::Routed;
use rivven_engine::registry::TransformPlan;
use std::collections::HashMap;
use std::sync::Arc;

/// Columns of the `users` table used throughout.
pub fn user_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ])
}

type Row = (
    i64,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<f64>,
    Option<i64>,
);

fn rows() -> Vec<Row> {
    vec![
        (
            1,
            Some("Ada"),
            Some("ada@example.com"),
            Some("active"),
            Some(10.5),
            Some(1_700_000_000_000),
        ),
        (
            2,
            Some("Bob"),
            None,
            Some("inactive"),
            Some(-3.25),
            Some(1_700_086_400_000),
        ),
        (3, None, Some("cy@example.org"), Some("active"), None, None),
        (
            4,
            Some("Dee"),
            Some("dee@example.com"),
            None,
            Some(0.0),
            Some(1_700_172_800_123),
        ),
    ]
}

fn columns(rows: &[Row]) -> Vec<ArrayRef> {
    vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.4))),
        Arc::new(
            TimestampMillisecondArray::from_iter(rows.iter().map(|r| r.5)).with_timezone("UTC"),
        ),
    ]
}

/// (before row index, after row index) of one change event.
type Images = (Option<usize>, Option<usize>);

/// A flat batch of four users, with stream metadata `public.users`.
pub fn flat() -> RecordBatch {
    let meta = HashMap::from([
        (META_STREAM.to_owned(), "users".to_owned()),
        (META_NAMESPACE.to_owned(), "public".to_owned()),
    ]);
    let schema = Arc::new(Schema::new_with_metadata(user_fields(), meta));
    RecordBatch::try_new(schema, columns(&rows())).unwrap()
}

/// Change events on `public.users`: a snapshot read, an insert, an update (with before), a
/// delete (before only) and a truncate (no images).
pub fn changes() -> RecordBatch {
    changes_for("public", "users")
}

/// [`changes`] for another table.
pub fn changes_for(schema: &str, table: &str) -> RecordBatch {
    let r = rows();
    let ops = ["r", "c", "u", "d", "t"];
    // Images per event: (before row index, after row index).
    let images: [Images; 5] = [
        (None, Some(0)),
        (None, Some(1)),
        (Some(1), Some(2)),
        (Some(3), None),
        (None, None),
    ];
    let image = |pick: &dyn Fn(&Images) -> Option<usize>| -> ArrayRef {
        let chosen: Vec<Row> = images
            .iter()
            .map(|im| {
                pick(im)
                    .map(|i| r[i])
                    .unwrap_or((0, None, None, None, None, None))
            })
            .collect();
        let valid = NullBuffer::from(
            images
                .iter()
                .map(|im| pick(im).is_some())
                .collect::<Vec<_>>(),
        );
        Arc::new(StructArray::new(
            user_fields(),
            columns(&chosen),
            Some(valid),
        ))
    };
    let n = ops.len();
    let source = StructArray::new(
        change_event_source_fields(),
        vec![
            Arc::new(StringArray::from(vec!["postgres-cdc"; n])),
            Arc::new(StringArray::from(vec!["shop"; n])),
            Arc::new(StringArray::from(vec![schema; n])),
            Arc::new(StringArray::from(vec![table; n])),
            Arc::new(StringArray::from(vec![
                "0/16B3748",
                "0/16B3800",
                "0/16B3900",
                "0/16B3A00",
                "0/16B3B00",
            ])),
            Arc::new(Int64Array::from(vec![
                Some(700),
                Some(701),
                Some(702),
                Some(703),
                Some(704),
            ])),
            Arc::new(Int64Array::from(vec![1_700_000_000_000i64; n])),
            Arc::new(BooleanArray::from(vec![true, false, false, false, false])),
        ],
        None,
    );
    RecordBatch::try_new(
        change_event_schema(user_fields()),
        vec![
            Arc::new(StringArray::from(ops.to_vec())),
            image(&|im| im.0),
            image(&|im| im.1),
            Arc::new(source),
            Arc::new(Int64Array::from(vec![
                1_700_000_001_000i64,
                1_700_000_002_000,
                1_700_000_003_000,
                1_700_000_004_000,
                1_700_000_005_000,
            ])),
        ],
    )
    .unwrap()
}

/// Run `yaml` (a transforms list) over `input` bound for `topic`; render every output.
pub fn run(yaml: &str, input: RecordBatch, topic: &str) -> Result<String, String> {
    Ok(render(apply(yaml, input, topic)?, Rows::Table))
}

/// Validate and run `yaml` (a transforms list) over `input` bound for `topic`.
pub fn apply(yaml: &str, input: RecordBatch, topic: &str) -> Result<Vec<Routed>, String> {
    let list: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    apply_spec(
        &TransformSpec {
            list,
            ..TransformSpec::default()
        },
        input,
        topic,
    )
}

/// A pipeline's transforms from YAML: `{ transforms: [...], cdc_features: {...},
/// dead_letter_topic: ... }` (errors are then relative to the pipeline key).
pub fn pipeline_spec(yaml: &str) -> TransformSpec {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    TransformSpec {
        list: v.get("transforms").cloned().unwrap_or_default(),
        list_path: "transforms",
        features: v.get("cdc_features").cloned().unwrap_or_default(),
        dead_letter_topic: v
            .get("dead_letter_topic")
            .and_then(|t| t.as_str())
            .map(str::to_owned),
    }
}

/// Run a pipeline's transforms over `input` bound for `topic`; render every output.
pub fn run_spec(spec: &TransformSpec, input: RecordBatch, topic: &str) -> Result<String, String> {
    Ok(render(apply_spec(spec, input, topic)?, Rows::Table))
}

/// Validate and run a pipeline's transforms over `input` bound for `topic`.
pub fn apply_spec(
    spec: &TransformSpec,
    input: RecordBatch,
    topic: &str,
) -> Result<Vec<Routed>, String> {
    let plan = rivven_sql::SqlPlan::new(spec).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut chain = plan.create().map_err(|e| e.to_string())?;
    chain.apply(input, topic).map_err(|e| e.to_string())
}

/// How [`render`] shows rows.
#[derive(Clone, Copy)]
pub enum Rows {
    /// A pretty-printed table.
    Table,
    /// One JSON object per row, nulls shown (for values that vary between runs: a text
    /// substitution keeps it readable, where it would misalign a table).
    #[cfg_attr(not(feature = "blob"), allow(dead_code))]
    Json,
}

/// Every output: its topic, schema, key and rows.
pub fn render(outs: Vec<Routed>, rows: Rows) -> String {
    let mut text = String::new();
    for o in outs {
        if let Some(p) = o.partition {
            text.push_str(&format!("partition: {} of {}\n", p.partition, p.of));
        }
        if o.dead_letter {
            text.push_str("dead letter\n");
        }
        let schema = o.batch.schema();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{}: {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " not null" }
                )
            })
            .collect();
        text.push_str(&format!(
            "topic: {}\n",
            o.topic.as_deref().unwrap_or("(unchanged)")
        ));
        text.push_str(&format!("schema: {}\n", types.join(", ")));
        let mut meta: Vec<_> = schema
            .metadata()
            .iter()
            .filter(|(k, _)| k.as_str() == "rivven.key")
            .collect();
        meta.sort();
        for (k, v) in meta {
            text.push_str(&format!("metadata: {k}={v}\n"));
        }
        match rows {
            Rows::Table => {
                text.push_str(
                    &arrow::util::pretty::pretty_format_batches(&[o.batch])
                        .unwrap()
                        .to_string(),
                );
                text.push('\n');
            }
            Rows::Json => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
                w.write(&o.batch).unwrap();
                w.finish().unwrap();
                text.push_str(&String::from_utf8(w.into_inner()).unwrap());
            }
        }
    }
    text
}

/// Compare the rendered outputs with `tests/golden/<name>.txt`.
pub fn golden(name: &str, yaml: &str, input: RecordBatch, topic: &str) {
    compare_result(name, run(yaml, input, topic));
}

/// [`golden`] for a pipeline's transforms (see [`pipeline_spec`]).
pub fn golden_pipeline(name: &str, yaml: &str, input: RecordBatch, topic: &str) {
    compare_result(name, run_spec(&pipeline_spec(yaml), input, topic));
}

fn compare_result(name: &str, got: Result<String, String>) {
    let got = match got {
        Ok(t) => t,
        Err(e) => format!("error: {e}\n"),
    };
    compare(name, &got);
}

/// Compare `got` with `tests/golden/<name>.txt` (or write it, see the module docs).
pub fn compare(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var("RIVVEN_GOLDEN").as_deref() == Ok("update") {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with RIVVEN_GOLDEN=update to create it)",
            path.display()
        )
    });
    assert_eq!(
        got, want,
        "golden {name} differs (RIVVEN_GOLDEN=update rewrites it)"
    );
}

/// `batch` with schema metadata `key=value` added.
pub fn with_meta(batch: RecordBatch, key: &str, value: &str) -> RecordBatch {
    let schema = batch.schema();
    let mut meta = schema.metadata().clone();
    meta.insert(key.to_owned(), value.to_owned());
    let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), meta));
    RecordBatch::try_new(schema, batch.columns().to_vec()).unwrap()
}

/// `batch` followed by a copy of itself whose `ts_ms` (processing time) is later: the same
/// events delivered twice.
pub fn delivered_twice(batch: RecordBatch) -> RecordBatch {
    let (i, _) = batch.schema().column_with_name("ts_ms").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] =
        arrow::compute::kernels::numeric::add(&columns[i], &Int64Array::new_scalar(60_000))
            .unwrap();
    let again = RecordBatch::try_new(batch.schema(), columns).unwrap();
    arrow::compute::concat_batches(&batch.schema(), &[batch, again]).unwrap()
}
