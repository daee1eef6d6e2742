use super::*;
use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, StructArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema};
use std::io::Read;

fn flat(ids: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 3 != 0).then(|| format!("n{i}")))
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

/// A change-event-like batch: `op` and a nullable `before` struct.
fn nested() -> RecordBatch {
    let fields = Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]);
    let before = StructArray::try_new(
        fields.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
        Some(NullBuffer::from(vec![false, true])),
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("op", DataType::Utf8, false),
        Field::new("before", DataType::Struct(fields), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["c", "u"])) as ArrayRef,
            Arc::new(before),
        ],
    )
    .unwrap()
}

/// Encode in two writes, draining between them as the sink does.
fn encode(options: FormatOptions, batches: &[RecordBatch]) -> (Vec<u8>, String) {
    let w = writer(&options);
    let mut enc = w.open(batches[0].schema()).unwrap();
    let mut out = Vec::new();
    for b in batches {
        enc.write(b).unwrap();
        out.extend(enc.take());
    }
    assert!(enc.size() >= out.len() as u64);
    out.extend(enc.finish().unwrap());
    (out, w.extension())
}

fn opts(format: Format, compression: Compression) -> FormatOptions {
    FormatOptions {
        format,
        compression,
        ..FormatOptions::default()
    }
}

#[test]
fn parquet_round_trip_with_nested_columns() {
    let mut o = opts(Format::Parquet, Compression::None);
    o.parquet.compression = ParquetCompression::Zstd;
    o.parquet.row_group_size = 1;
    let (bytes, ext) = encode(o, &[nested(), nested()]);
    assert_eq!(ext, ".parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    let got: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    let want = arrow::compute::concat_batches(&nested().schema(), &[nested(), nested()]).unwrap();
    assert_eq!(got.columns(), want.columns());
}

#[test]
fn avro_round_trip() {
    let mut o = opts(Format::Avro, Compression::None);
    o.avro.codec = AvroCodec::Snappy;
    let (bytes, ext) = encode(o, &[flat(&[1, 2, 3]), flat(&[4])]);
    assert_eq!(ext, ".avro");
    let reader = arrow_avro::reader::ReaderBuilder::new()
        .build(std::io::Cursor::new(bytes))
        .unwrap();
    let got: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got.num_rows(), 4);
    assert_eq!(
        got.column(0).as_ref(),
        &Int64Array::from(vec![1, 2, 3, 4]) as &dyn Array
    );
}

fn decompress(c: Compression, bytes: &[u8]) -> String {
    let mut out = String::new();
    match c {
        Compression::None => out = String::from_utf8(bytes.to_vec()).unwrap(),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_string(&mut out)
                .unwrap();
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
        }
        Compression::Snappy => {
            snap::read::FrameDecoder::new(bytes)
                .read_to_string(&mut out)
                .unwrap();
        }
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(bytes)
                .read_to_string(&mut out)
                .unwrap();
        }
    }
    out
}

#[test]
fn jsonl_in_every_compression() {
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Snappy,
        Compression::Lz4,
    ] {
        let (bytes, ext) = encode(opts(Format::Jsonl, c), &[flat(&[1, 2, 3]), flat(&[4])]);
        assert_eq!(ext, format!(".jsonl{}", c.extension()));
        assert_eq!(
            decompress(c, &bytes),
            "{\"id\":1,\"name\":\"n1\"}\n{\"id\":2,\"name\":\"n2\"}\n{\"id\":3,\"name\":null}\n\
             {\"id\":4,\"name\":\"n4\"}\n",
            "{c:?}"
        );
    }
}

#[test]
fn json_is_one_array_across_batches() {
    let (bytes, _) = encode(
        opts(Format::Json, Compression::None),
        &[flat(&[1]), flat(&[2])],
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"id": 1, "name": "n1"}, {"id": 2, "name": "n2"}])
    );
}

#[test]
fn csv_flattens_structs_and_nulls_fields_of_null_structs() {
    let mut o = opts(Format::Csv, Compression::None);
    o.csv.delimiter = CsvDelimiter(b';');
    let (bytes, ext) = encode(o, &[nested()]);
    assert_eq!(ext, ".csv");
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "op;before.id;before.name\nc;;\nu;2;b\n"
    );
}

#[test]
fn delimiter_names() {
    let d: CsvDelimiter = serde_yaml::from_str("tab").unwrap();
    assert_eq!(d.0, b'\t');
    assert!(serde_yaml::from_str::<CsvDelimiter>("ab").is_err());
}

#[test]
fn json_extension_columns_are_embedded_not_quoted() {
    let mut meta = std::collections::HashMap::new();
    meta.insert("ARROW:extension:name".to_string(), "arrow.json".to_string());
    let doc = Field::new("doc", DataType::Utf8, true).with_metadata(meta);
    let fields = Fields::from(vec![doc]);
    let after = StructArray::try_new(
        fields.clone(),
        vec![Arc::new(StringArray::from(vec![Some(r#"{"a": [1, 2]}"#), None])) as ArrayRef],
        None,
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "after",
        DataType::Struct(fields),
        true,
    )]));
    let b = RecordBatch::try_new(schema, vec![Arc::new(after) as ArrayRef]).unwrap();
    let (bytes, _) = encode(opts(Format::Jsonl, Compression::None), &[b]);
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "{\"after\":{\"doc\":{\"a\": [1, 2]}}}\n{\"after\":{\"doc\":null}}\n"
    );
}

/// A struct with a boolean field, sliced mid-batch (as a rolled file does): the parent's
/// nulls still reach the flattened columns.
#[test]
fn csv_flattens_sliced_structs_with_booleans() {
    let fields = Fields::from(vec![Field::new("ok", DataType::Boolean, true)]);
    let s = StructArray::try_new(
        fields.clone(),
        vec![Arc::new(arrow::array::BooleanArray::from(vec![true; 10])) as ArrayRef],
        Some(NullBuffer::from(
            (0..10).map(|i| i % 3 != 0).collect::<Vec<bool>>(),
        )),
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "s",
        DataType::Struct(fields),
        true,
    )]));
    let b = RecordBatch::try_new(schema, vec![Arc::new(s) as ArrayRef])
        .unwrap()
        .slice(5, 4);
    let (bytes, _) = encode(opts(Format::Csv, Compression::None), &[b]);
    // Rows 5 to 8 of the batch; row 6 (a multiple of 3) is a null struct, so its field is
    // empty (quoted, as a one-column record must be to stay a record).
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "s.ok\ntrue\n\"\"\ntrue\ntrue\n"
    );
}

/// Dates and timestamps holding the PostgreSQL source's infinity sentinels, at top level,
/// in a struct and in a list.
fn infinite_dates() -> RecordBatch {
    use arrow::array::{Date32Array, ListArray, TimestampMicrosecondArray};
    let ts = Field::new(
        "at",
        DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
        true,
    );
    let fields = Fields::from(vec![ts]);
    let after = StructArray::try_new(
        fields.clone(),
        vec![Arc::new(
            TimestampMicrosecondArray::from(vec![Some(i64::MAX), Some(0), None])
                .with_timezone("UTC"),
        ) as ArrayRef],
        None,
    )
    .unwrap();
    let days = ListArray::from_iter_primitive::<arrow::datatypes::Date32Type, _, _>(vec![
        Some(vec![Some(-i32::MAX), Some(1)]),
        None,
        Some(vec![]),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("d", DataType::Date32, true),
        Field::new("after", DataType::Struct(fields), true),
        Field::new("days", days.data_type().clone(), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Date32Array::from(vec![Some(i32::MAX), Some(0), None])) as ArrayRef,
            Arc::new(after),
            Arc::new(days),
        ],
    )
    .unwrap()
}

#[test]
fn infinite_dates_are_written_as_infinity() {
    let (bytes, _) = encode(opts(Format::Csv, Compression::None), &[infinite_dates()]);
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "d,after.at,days\n\
         infinity,infinity,\"[-infinity, 1970-01-02]\"\n\
         1970-01-01,1970-01-01T00:00:00Z,\n\
         ,,[]\n"
    );
    let (bytes, _) = encode(opts(Format::Jsonl, Compression::None), &[infinite_dates()]);
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "{\"d\":\"infinity\",\"after\":{\"at\":\"infinity\"},\"days\":[\"-infinity\",\"1970-01-02\"]}\n\
         {\"d\":\"1970-01-01\",\"after\":{\"at\":\"1970-01-01T00:00:00Z\"},\"days\":null}\n\
         {\"d\":null,\"after\":{\"at\":null},\"days\":[]}\n"
    );
}
