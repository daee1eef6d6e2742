//! Type mapping: every mapped type decodes to the same Arrow values from the snapshot,
//! the text stream and the binary stream; values without an Arrow equivalent.

use super::*;

const TYPES_DDL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE types_t (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
  n numeric(12,3), nbig numeric(50,10), nu numeric, t text, vc varchar(10), c char(3),
  by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, ip inet, ci cidr, ai int4[], at text[], e mood, dm posint)";

const TYPES_VALUES: &str = "true, -32768, 2147483647, -9223372036854775808, 'NaN', 1.5e300,
  '-12345.678', '1234567890123456789012345678901234567890.0123456789', '3.14159265358979323846264338327950288419716939937510',
  E'multi\\nline\\ttab \\\\ back \"q\" ''s', 'short', 'ab', '\\x00ff0a5c',
  '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '1999-12-31 23:59:59.5',
  '2000-01-01 05:30:00+05:30', '1 year 2 months 3 days 04:05:06.5',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', '{\"k\": [1, 2]}',
  '192.168.0.1/24', '10.0.0.0/8', '{1,NULL,-3}', '{\"a b\",\"c,d\",NULL,\"\"}', 'happy', 7";

#[tokio::test]
async fn every_mapped_type_round_trips_in_snapshot_and_stream() {
    types_round_trip("binary: false\n").await;
}

/// The same values through pgoutput's binary form decode exactly as through its text form
/// and the snapshot's binary COPY.
#[tokio::test]
async fn every_mapped_type_round_trips_through_binary_pgoutput() {
    types_round_trip("binary: true\n").await;
}

async fn types_round_trip(extra: &str) {
    let Some(db) = Db::new() else { return };
    db.sql(TYPES_DDL);
    db.sql(&format!("INSERT INTO types_t VALUES (1, {TYPES_VALUES})"));
    db.sql("INSERT INTO types_t (id) VALUES (2)");
    let mut src = PostgresCdcSource::new(db.config(&format!("tables: [types_t]\n{extra}")));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) == 2).await;
    db.sql(&format!("INSERT INTO types_t VALUES (3, {TYPES_VALUES})"));
    db.sql("INSERT INTO types_t (id) VALUES (4)");
    collect_until(&mut src, &mut got, |b| rows(b) == 4).await;
    assert_eq!(ops(&got), ["r", "r", "c", "c"]);
    // Snapshot (COPY text) and stream (pgoutput text) decode to identical Arrow values.
    let all: Vec<RecordBatch> = got.iter().map(|b| b.batch.clone()).collect();
    let batch = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
    let after = image(&batch, "after");
    for (f, c) in after.fields().iter().zip(after.columns()) {
        if f.name() == "id" {
            continue;
        }
        assert!(
            c.slice(0, 1).to_data() == c.slice(2, 1).to_data(),
            "column {} snapshot vs stream: {:?} vs {:?}",
            f.name(),
            c.slice(0, 1),
            c.slice(2, 1)
        );
        assert!(
            c.slice(1, 1).to_data() == c.slice(3, 1).to_data(),
            "column {} (nulls)",
            f.name()
        );
        assert!(c.is_null(1), "column {} null", f.name());
    }
    let col = |n: &str| after.column_by_name(n).unwrap();
    assert!(col("b").as_boolean().value(0));
    assert_eq!(col("i2").as_primitive::<Int16Type>().value(0), -32768);
    assert_eq!(col("i4").as_primitive::<Int32Type>().value(0), 2147483647);
    assert_eq!(col("i8").as_primitive::<Int64Type>().value(0), i64::MIN);
    assert!(col("f4").as_primitive::<Float32Type>().value(0).is_nan());
    assert_eq!(col("f8").as_primitive::<Float64Type>().value(0), 1.5e300);
    assert_eq!(col("n").data_type().to_string(), "Decimal128(12, 3)");
    assert_eq!(
        col("n").as_primitive::<Decimal128Type>().value(0),
        -12_345_678
    );
    assert_eq!(col("nbig").data_type().to_string(), "Decimal256(50, 10)");
    let show = |n: &str| {
        ArrayFormatter::try_new(col(n).as_ref(), &FormatOptions::default())
            .unwrap()
            .value(0)
            .to_string()
    };
    assert_eq!(
        show("nbig"),
        "1234567890123456789012345678901234567890.0123456789"
    );
    assert_eq!(
        show("nu"),
        "3.14159265358979323846264338327950288419716939937510"
    );
    assert_eq!(show("t"), "multi\nline\ttab \\ back \"q\" 's");
    assert_eq!(show("vc"), "short");
    assert_eq!(show("c"), "ab ");
    assert_eq!(col("by").as_binary::<i32>().value(0), &[0u8, 255, 10, 92]);
    assert_eq!(col("d").as_primitive::<Date32Type>().value(0), 19_782);
    assert_eq!(
        col("tm").as_primitive::<Time64MicrosecondType>().value(0),
        86_399_999_999
    );
    assert_eq!(show("ttz"), "12:00:00+05:30");
    assert_eq!(
        col("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        946_684_799_500_000
    );
    assert_eq!(
        col("tstz")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        946_684_800_000_000
    );
    let iv = col("iv")
        .as_primitive::<IntervalMonthDayNanoType>()
        .value(0);
    assert_eq!((iv.months, iv.days), (14, 3));
    assert_eq!(
        iv.nanoseconds,
        (4 * 3600 + 5 * 60 + 6) * 1_000_000_000 + 500_000_000
    );
    assert_eq!(show("u"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(show("j"), "{\"k\": [1, 2]}");
    assert_eq!(show("jb"), "{\"k\": [1, 2]}");
    assert_eq!(show("ip"), "192.168.0.1/24");
    assert_eq!(show("ci"), "10.0.0.0/8");
    assert_eq!(show("ai"), "[1, , -3]");
    let at = col("at").as_list::<i32>().value(0);
    let at = at.as_string::<i32>();
    assert_eq!(
        (0..at.len())
            .map(|i| at.is_valid(i).then(|| at.value(i)))
            .collect::<Vec<_>>(),
        vec![Some("a b"), Some("c,d"), None, Some("")]
    );
    assert_eq!(show("e"), "happy");
    assert_eq!(col("dm").as_primitive::<Int32Type>().value(0), 7);
    assert_eq!(
        col("j").data_type(),
        &arrow::datatypes::DataType::Utf8,
        "json is text with the arrow.json extension name"
    );
}

/// Values real schemas hold that Arrow has no exact equivalent for: infinite dates and
/// timestamps, multi-dimensional arrays, non-finite floats, numeric NaN. None stops the
/// source; each has its documented representation, alike from the snapshot, the text
/// stream and the binary stream.
#[tokio::test]
async fn values_without_an_arrow_equivalent_never_stop_a_pipeline() {
    for extra in ["binary: false\n", "binary: true\n"] {
        edge_values(
            extra,
            [Some(i32::MAX), Some(-i32::MAX)],
            [Some(i64::MAX), Some(-i64::MAX)],
        )
        .await;
    }
    edge_values("temporal_infinity: null\n", [None, None], [None, None]).await;
}

async fn edge_values(extra: &str, dates: [Option<i32>; 2], timestamps: [Option<i64>; 2]) {
    let Some(db) = Db::new() else { return };
    db.sql(
        "CREATE TABLE edge (id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz,
           m int[][], cube text[][][], r real, dp float8, n numeric(10,2), ds date[])",
    );
    let values = "(1, 'infinity', '-infinity', 'infinity', '{{1,2,3},{4,NULL,6}}',
           '{{{a,\"b c\"}},{{NULL,d}}}', 'Infinity', '-Infinity', 'NaN', '{infinity,2024-01-01}'),
         (2, '-infinity', 'infinity', '-infinity', '{}', NULL, 'NaN', 'NaN', 1.5, '{}')";
    db.sql(&format!("INSERT INTO edge VALUES {values}"));
    let mut src = PostgresCdcSource::new(db.config(&format!("tables: [edge]\n{extra}")));
    src.open(None).await.unwrap();
    let mut got = Vec::new();
    collect_until(&mut src, &mut got, |b| rows(b) == 2).await;
    db.sql(&format!(
        "INSERT INTO edge VALUES {}",
        values.replace("(1,", "(3,").replace("(2,", "(4,")
    ));
    collect_until(&mut src, &mut got, |b| rows(b) == 4).await;
    assert_eq!(ops(&got), ["r", "r", "c", "c"], "{extra}");
    let all: Vec<RecordBatch> = got.iter().map(|b| b.batch.clone()).collect();
    let batch = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
    let after = image(&batch, "after");
    let col = |n: &str| after.column_by_name(n).unwrap();
    // The stream decodes exactly as the snapshot did.
    for (f, c) in after.fields().iter().zip(after.columns()).skip(1) {
        for (snap, stream) in [(0, 2), (1, 3)] {
            assert!(
                c.slice(snap, 1).to_data() == c.slice(stream, 1).to_data(),
                "{extra}column {}: snapshot {:?} vs stream {:?}",
                f.name(),
                c.slice(snap, 1),
                c.slice(stream, 1)
            );
        }
    }
    let d: Vec<Option<i32>> = col("d")
        .as_primitive::<Date32Type>()
        .iter()
        .take(2)
        .collect();
    assert_eq!(d, dates, "{extra}");
    let tstz: Vec<Option<i64>> = col("tstz")
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .take(2)
        .collect();
    assert_eq!(tstz, timestamps, "{extra}");
    let ts: Vec<Option<i64>> = col("ts")
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .take(2)
        .collect();
    assert_eq!(ts, [timestamps[1], timestamps[0]], "{extra}");
    // int[][]: a list of lists, declared dimensions and all.
    let show = |n: &str, i: usize| {
        ArrayFormatter::try_new(col(n).as_ref(), &FormatOptions::default())
            .unwrap()
            .value(i)
            .to_string()
    };
    assert_eq!(show("m", 0), "[[1, 2, 3], [4, , 6]]", "{extra}");
    assert_eq!(show("m", 1), "[]", "{extra}");
    assert_eq!(show("cube", 0), "[[[a, b c]], [[, d]]]", "{extra}");
    assert!(col("cube").is_null(1));
    // Arrays of dates follow the same rule as dates.
    let ds = col("ds").as_list::<i32>().value(0);
    let ds: Vec<Option<i32>> = ds.as_primitive::<Date32Type>().iter().collect();
    assert_eq!(ds, [dates[0], Some(19_723)], "{extra}");
    // Floats keep their non-finite values; numeric NaN in a Decimal column is null.
    let r = col("r").as_primitive::<Float32Type>();
    assert!(r.value(0).is_infinite() && r.value(0) > 0.0 && r.value(1).is_nan());
    let dp = col("dp").as_primitive::<Float64Type>();
    assert!(dp.value(0).is_infinite() && dp.value(0) < 0.0);
    let n = col("n").as_primitive::<Decimal128Type>();
    assert!(n.is_null(0), "{extra}numeric NaN");
    assert_eq!(n.value(1), 150);
}
