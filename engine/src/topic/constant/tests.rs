//! Round trips of compacted batches through real topic frames.

use super::*;
use crate::topic::segment;
use arrow::array::{
    BooleanArray, Decimal128Array, FixedSizeBinaryArray, Float64Array, Int64Array, StringArray,
};
use arrow::buffer::NullBuffer;
use std::collections::HashMap;

const N: usize = 200;

fn row_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("flag", DataType::Boolean, true),
    ])
}

fn row_struct(ids: Vec<i64>, name: &str, nulls: Option<NullBuffer>) -> ArrayRef {
    let n = ids.len();
    Arc::new(
        StructArray::try_new(
            row_fields(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(vec![name; n])),
                Arc::new(
                    Decimal128Array::from(vec![12_345i128; n])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                Arc::new(BooleanArray::from(vec![true; n])),
            ],
            nulls,
        )
        .unwrap(),
    )
}

/// A snapshot-shaped change batch with constant and varying columns of several types.
fn change_batch() -> RecordBatch {
    let source_fields = Fields::from(vec![
        Field::new("db", DataType::Utf8, false),
        Field::new("pos", DataType::Utf8, false),
        Field::new("txid", DataType::Int64, true),
        Field::new("snapshot", DataType::Boolean, false),
        Field::new("zero", DataType::Float64, false),
        Field::new("hash", DataType::FixedSizeBinary(3), false),
    ]);
    let zeros: Vec<f64> = (0..N)
        .map(|i| if i == N - 1 { -0.0 } else { 0.0 })
        .collect();
    let source = StructArray::try_new(
        source_fields.clone(),
        vec![
            Arc::new(StringArray::from(vec!["shop"; N])),
            Arc::new(StringArray::from(
                (0..N).map(|i| format!("0/{i:X}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![None::<i64>; N])),
            Arc::new(BooleanArray::from(vec![true; N])),
            Arc::new(Float64Array::from(zeros)),
            Arc::new(FixedSizeBinaryArray::try_from_iter(std::iter::repeat_n(b"abc", N)).unwrap()),
        ],
        None,
    )
    .unwrap();
    let mut meta = HashMap::new();
    meta.insert("k".to_owned(), "v".to_owned());
    let schema = Schema::new(vec![
        Field::new("op", DataType::Utf8, false).with_metadata(meta),
        Field::new("before", DataType::Struct(row_fields()), true),
        Field::new("after", DataType::Struct(row_fields()), true),
        Field::new("source", DataType::Struct(source_fields), false),
        Field::new("ts_ms", DataType::Int64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["r"; N])),
            Arc::new(StructArray::new_null(row_fields(), N)),
            row_struct((0..N as i64).collect(), "same", None),
            Arc::new(source),
            Arc::new(Int64Array::from(vec![7; N])),
        ],
    )
    .unwrap()
}

fn frame_bytes(batch: &RecordBatch) -> Vec<u8> {
    let prepared = segment::prepare_frame(batch, batch.num_rows() as u32, 1, b"").unwrap();
    segment::seal_frame(prepared, 0)
}

fn round_trip(batch: &RecordBatch) -> RecordBatch {
    let frame = frame_bytes(batch);
    let (_, decoded) = segment::decode_frame(&frame).unwrap();
    decoded
}

fn plain_ipc_len(batch: &RecordBatch) -> usize {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf.len()
}

fn marked(schema: &Schema) -> Vec<String> {
    fn walk(prefix: &str, fields: &Fields, out: &mut Vec<String>) {
        for f in fields {
            let name = format!("{prefix}{}", f.name());
            if f.metadata().contains_key(MARK) {
                assert!(matches!(f.data_type(), DataType::RunEndEncoded(..)));
                out.push(name);
            } else if let DataType::Struct(c) = f.data_type() {
                walk(&format!("{name}."), c, out);
            }
        }
    }
    let mut out = Vec::new();
    walk("", schema.fields(), &mut out);
    out
}

#[test]
fn constant_columns_are_stored_once_and_read_back_exactly() {
    let batch = change_batch();
    let compacted = compact(&batch).unwrap().expect("has constant columns");
    assert_eq!(
        marked(&compacted.schema()),
        [
            "op",
            "before",
            "after.name",
            "after.amount",
            "after.flag",
            "source.db",
            "source.txid",
            "source.snapshot",
            "source.hash",
            "ts_ms"
        ],
        "after.id, source.pos and source.zero (-0.0 in the last row) vary"
    );
    let decoded = round_trip(&batch);
    assert_eq!(decoded.schema(), batch.schema());
    assert_eq!(decoded, batch);
    let stored = frame_bytes(&batch).len();
    let plain = plain_ipc_len(&batch);
    assert!(
        stored * 2 < plain,
        "compacted frame {stored} bytes, plain IPC {plain} bytes"
    );
}

#[test]
fn sliced_batches_short_batches_and_partly_null_structs() {
    // A slice whose rows are constant although the whole array is not.
    let ids: Vec<i64> = (0..N as i64).map(|i| if i < 100 { 1 } else { i }).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("after", DataType::Struct(row_fields()), true),
    ]));
    let mut valid = vec![true; N];
    valid[3] = false;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            row_struct(ids, "x", Some(NullBuffer::from(valid))),
        ],
    )
    .unwrap();
    let slice = batch.slice(2, 90);
    let compacted = compact(&slice).unwrap().unwrap();
    // Inside a struct with a null row, children are not looked into.
    assert_eq!(marked(&compacted.schema()), ["id"]);
    assert_eq!(round_trip(&slice), slice);
    assert_eq!(round_trip(&batch), batch);

    let short = batch.slice(0, MIN_ROWS - 1);
    assert!(compact(&short).unwrap().is_none());
    assert_eq!(round_trip(&short), short);
}

#[test]
fn the_producers_own_use_of_the_mark_key_and_field_flags_survive() {
    let mut meta = HashMap::new();
    meta.insert(MARK.to_owned(), "mine".to_owned());
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Utf8, true).with_metadata(meta),
        Field::new("d", dict.clone(), true).with_dict_is_ordered(true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["x"; N])),
            new_null_array(&dict, N),
        ],
    )
    .unwrap();
    // A schema already using the key is stored as is (and read back as is).
    assert!(compact(&batch).unwrap().is_none());
    assert_eq!(round_trip(&batch), batch);

    // Without it, the all-null dictionary column is compacted and keeps its flag.
    let batch = batch.project(&[1]).unwrap();
    let compacted = compact(&batch).unwrap().unwrap();
    assert_eq!(marked(&compacted.schema()), ["d"]);
    let back = round_trip(&batch);
    assert_eq!(back, batch);
    assert_eq!(back.schema().field(0).dict_is_ordered(), Some(true));
}

#[test]
fn run_end_encoded_columns_of_the_producer_pass_through() {
    let run = RunArray::<Int32Type>::try_new(
        &Int32Array::from(vec![100, N as i32]),
        &StringArray::from(vec!["a", "b"]),
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "r",
        run.data_type().clone(),
        false,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(run)]).unwrap();
    assert!(compact(&batch).unwrap().is_none());
    assert_eq!(round_trip(&batch), batch);
    // A one-run column of the producer's, beside a compacted one, stays run-end encoded.
    let one_run = RunArray::<Int32Type>::try_new(
        &Int32Array::from(vec![N as i32]),
        &StringArray::from(vec!["a"]),
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("r", one_run.data_type().clone(), false),
        Field::new("n", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(one_run),
            Arc::new(Int64Array::from(vec![None::<i64>; N])),
        ],
    )
    .unwrap();
    assert_eq!(marked(&compact(&batch).unwrap().unwrap().schema()), ["n"]);
    assert_eq!(round_trip(&batch), batch);
}
