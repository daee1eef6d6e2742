//! Arrow ↔ Iceberg schemas: the Iceberg type of each Arrow column, the columns a batch
//! adds to a table, and batches conformed to a table's schema (its field ids, its types).
//!
//! | Arrow | Iceberg |
//! |---|---|
//! | Boolean | boolean |
//! | Int8, Int16, Int32, UInt8, UInt16 | int |
//! | Int64, UInt32 | long |
//! | UInt64 | decimal(20, 0) |
//! | Float16, Float32 | float |
//! | Float64 | double |
//! | Decimal128(p, s) | decimal(p, s) |
//! | Date32, Date64 | date |
//! | Time32, Time64 | time (µs) |
//! | Timestamp(_, None) | timestamp (µs; nanoseconds are truncated) |
//! | Timestamp(_, Some(zone)) | timestamptz (µs, the same instant in UTC) |
//! | Utf8, LargeUtf8, Utf8View, Dictionary(_, Utf8) | string |
//! | Binary, LargeBinary, BinaryView | binary |
//! | FixedSizeBinary(n) | fixed(n) |
//! | List, LargeList, FixedSizeList | list |
//! | Struct | struct |
//! | Map | map |
//! | Null | (column not added until a typed batch carries it) |

use arrow::array::{
    new_null_array, Array, ArrayRef, ListArray, MapArray, RecordBatch, StructArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use iceberg::arrow::{arrow_schema_to_schema_auto_assign_ids, schema_to_arrow_schema};
use iceberg::spec::{PrimitiveType, Type};
use iceberg::transaction::AddColumn;
use rivven_engine::{Error, Result};
use std::sync::Arc;

/// The Arrow type an Iceberg table stores for `t` (see the module's table).
pub fn storable(t: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(Field::new(f.name(), storable(f.data_type()), true))
    };
    match t {
        DataType::Dictionary(_, v) => storable(v),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Microsecond),
        DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            DataType::List(field(f))
        }
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

/// The Iceberg type of an Arrow type, or why there is none. Nested fields get placeholder
/// ids (the catalog assigns the real ones).
pub fn iceberg_type(t: &DataType) -> Result<Type> {
    let one = Schema::new(vec![Field::new("c", storable(t), true)]);
    let s = arrow_schema_to_schema_auto_assign_ids(&one).map_err(|e| {
        Error::data(format!("iceberg: no Iceberg type for {t}: {e}")).retryable(false)
    })?;
    s.field_by_name("c")
        .map(|f| (*f.field_type).clone())
        .ok_or_else(|| Error::internal("iceberg: converted field missing"))
}

/// An Iceberg schema for a new table from a batch schema: every column optional except
/// the `key` columns, which become required identifier fields; field ids assigned in
/// order (the catalog assigns fresh ones on create). Columns of Arrow type Null are left
/// out.
pub fn new_table_schema(schema: &Schema, key: &[String]) -> Result<iceberg::spec::Schema> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| f.data_type() != &DataType::Null)
        .map(|f| Field::new(f.name(), storable(f.data_type()), !key.contains(f.name())))
        .collect();
    let err =
        |e: iceberg::Error| Error::data(format!("iceberg: table schema: {e}")).retryable(false);
    let table = arrow_schema_to_schema_auto_assign_ids(&Schema::new(fields)).map_err(err)?;
    if key.is_empty() {
        return Ok(table);
    }
    let mut ids = Vec::with_capacity(key.len());
    for k in key {
        let f = table.field_by_name(k).ok_or_else(|| {
            Error::config(format!("iceberg: key column `{k}` is not in the rows"))
        })?;
        ids.push(f.id);
    }
    table
        .into_builder()
        .with_identifier_field_ids(ids)
        .build()
        .map_err(err)
}

/// What a batch schema asks of a table schema.
#[derive(Default)]
pub struct Evolution {
    /// Top-level columns the table lacks, in batch order.
    pub add: Vec<AddColumn>,
    /// Names of the columns added (for logs and status).
    pub added: Vec<String>,
    /// Columns (dotted paths through structs) whose type the rows widen, with the wider
    /// type.
    pub widen: Vec<(String, PrimitiveType)>,
}

impl Evolution {
    /// The table needs no change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.widen.is_empty()
    }
}

/// Compare `batch` with the table's `table` schema: new top-level columns become
/// additions; a column whose type the table cannot store is an error naming it.
pub fn evolution(batch: &Schema, table: &iceberg::spec::Schema) -> Result<Evolution> {
    let mut ev = Evolution::default();
    for f in batch.fields() {
        if f.data_type() == &DataType::Null {
            continue;
        }
        let wanted = iceberg_type(f.data_type())?;
        match table.field_by_name(f.name()) {
            None => {
                ev.added.push(f.name().clone());
                ev.add.push(AddColumn::optional(f.name(), wanted));
            }
            Some(existing) => {
                let mut changes = Changes::default();
                check_compatible(f.name(), &wanted, &existing.field_type, &mut changes)?;
                ev.widen.extend(changes.widen);
                for (parent, name, t) in changes.adds {
                    ev.added.push(format!("{parent}.{name}"));
                    ev.add.push(
                        AddColumn::builder()
                            .parent(parent)
                            .name(name)
                            .field_type(t)
                            .build(),
                    );
                }
            }
        }
    }
    Ok(ev)
}

/// What writing a type into a column asks of the table.
#[derive(Debug, Default)]
pub struct Changes {
    /// Fields of a struct the table lacks: (parent path, name, type), to add as optional
    /// nested columns.
    pub adds: Vec<(String, String, Type)>,
    /// Columns (paths through structs) to widen to the type: the values are wider than
    /// the column and Iceberg allows the promotion.
    pub widen: Vec<(String, PrimitiveType)>,
}

/// Whether Iceberg allows promoting a column of type `from` to `to`: int→long,
/// float→double, decimal(P, S)→decimal(P', S) with P' ≥ P; or the same type.
pub fn promotes(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    use PrimitiveType as P;
    from == to
        || matches!((from, to), (P::Int, P::Long) | (P::Float, P::Double))
        || matches!(
            (from, to),
            (P::Decimal { precision: pa, scale: sa }, P::Decimal { precision: pb, scale: sb })
                if sa == sb && pa <= pb
        )
}

/// A path that passes through a list element or map key/value: schema updates here name
/// columns by struct paths only.
fn in_collection(path: &str) -> bool {
    path.contains(".element") || path.contains(".key") || path.contains(".value")
}

/// Whether values of Iceberg type `from` can be written into a column of type `to`: equal,
/// or a promotion Iceberg allows (int→long, float→double, decimal precision), or structs,
/// lists and maps whose parts are. A struct may lack fields (they are written as nulls).
/// What the table must change first is pushed to `changes`: fields a struct (not inside a
/// list or map) has and the table's lacks, and columns the values are wider than (where
/// Iceberg can promote the column).
pub fn check_compatible(path: &str, from: &Type, to: &Type, changes: &mut Changes) -> Result<()> {
    let ok = match (from, to) {
        (Type::Primitive(a), Type::Primitive(b)) => {
            if promotes(a, b) {
                true
            } else if promotes(b, a) && !in_collection(path) {
                changes.widen.push((path.to_string(), a.clone()));
                true
            } else {
                false
            }
        }
        (Type::Struct(a), Type::Struct(b)) => {
            for f in a.fields() {
                match b.field_by_name(&f.name) {
                    Some(t) => check_compatible(
                        &format!("{path}.{}", f.name),
                        &f.field_type,
                        &t.field_type,
                        changes,
                    )?,
                    // Only through structs: a path with `.element` or `.value` is not one
                    // a schema update can name.
                    None if !in_collection(path) => {
                        changes.adds.push((
                            path.to_string(),
                            f.name.clone(),
                            (*f.field_type).clone(),
                        ));
                    }
                    None => {
                        return Err(incompatible(
                            &format!("{path}.{}", f.name),
                            "a field of a struct inside a list or map that the table lacks",
                        ))
                    }
                }
            }
            true
        }
        (Type::List(a), Type::List(b)) => {
            check_compatible(
                &format!("{path}.element"),
                &a.element_field.field_type,
                &b.element_field.field_type,
                changes,
            )?;
            true
        }
        (Type::Map(a), Type::Map(b)) => {
            check_compatible(
                &format!("{path}.key"),
                &a.key_field.field_type,
                &b.key_field.field_type,
                changes,
            )?;
            check_compatible(
                &format!("{path}.value"),
                &a.value_field.field_type,
                &b.value_field.field_type,
                changes,
            )?;
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(incompatible(
            path,
            &format!("type {from} where the table has {to}"),
        ))
    }
}

impl std::fmt::Debug for Evolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evolution")
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

fn incompatible(path: &str, what: &str) -> Error {
    Error::data(format!(
        "iceberg: column `{path}`: {what}; Iceberg can only widen int→long, \
         float→double and decimal precision (of columns outside lists and maps)"
    ))
    .retryable(false)
}

/// What rows of `batch` would do to a table that has `table` as its schema (or none yet)
/// and is about to get the columns `pending` (path → type) from rows buffered before:
/// the columns they add (path → type; nested ones as `parent.name`), or why they cannot
/// be written.
///
/// `no_timestamptz`: the catalog cannot store `timestamptz` columns (iceberg-rust 0.10's
/// Glue catalog refuses to convert them to Glue columns), so a batch with one is refused.
pub fn check_rows(
    batch: &Schema,
    table: Option<&iceberg::spec::Schema>,
    pending: &std::collections::HashMap<String, Type>,
    no_timestamptz: bool,
) -> Result<Vec<(String, Type)>> {
    let mut added = Vec::new();
    if let Some(table) = table {
        for f in table.as_struct().fields() {
            if f.required && batch.field_with_name(&f.name).is_err() {
                return Err(Error::data(format!(
                    "iceberg: the rows lack `{}`, a required column of the table",
                    f.name
                ))
                .retryable(false));
            }
        }
    }
    for f in batch.fields() {
        if f.data_type() == &DataType::Null {
            continue;
        }
        let t = iceberg_type(f.data_type())?;
        if no_timestamptz && has_timestamptz(&t) {
            return Err(Error::data(format!(
                "iceberg: column `{}` is a timestamp with time zone, which the glue catalog \
                 cannot store (iceberg-catalog-glue 0.10 has no Glue type for timestamptz); \
                 convert it (e.g. timestamp_converter to unix) or drop it",
                f.name()
            ))
            .retryable(false));
        }
        // Widening is allowed: the commit widens the column first.
        let mut changes = Changes::default();
        match (
            table.and_then(|s| s.field_by_name(f.name())),
            pending.get(f.name()),
        ) {
            (Some(existing), _) => {
                check_compatible(f.name(), &t, &existing.field_type, &mut changes)?
            }
            (None, Some(p)) => check_compatible(f.name(), &t, p, &mut changes)?,
            (None, None) => added.push((f.name().clone(), t)),
        }
        for (parent, name, t) in changes.adds {
            let full = format!("{parent}.{name}");
            match pending.get(&full) {
                Some(p) => check_compatible(&full, &t, p, &mut Changes::default())?,
                None => added.push((full, t)),
            }
        }
    }
    Ok(added)
}

/// Whether `t` is, or holds, a `timestamptz`.
fn has_timestamptz(t: &Type) -> bool {
    match t {
        Type::Primitive(p) => {
            matches!(p, PrimitiveType::Timestamptz | PrimitiveType::TimestamptzNs)
        }
        Type::Struct(s) => s.fields().iter().any(|f| has_timestamptz(&f.field_type)),
        Type::List(l) => has_timestamptz(&l.element_field.field_type),
        Type::Map(m) => {
            has_timestamptz(&m.key_field.field_type) || has_timestamptz(&m.value_field.field_type)
        }
    }
}

/// `table` with the columns at `widen`'s paths (top-level names, or dotted paths through
/// structs) changed to the wider types, field ids and everything else kept.
pub fn widened(
    table: &iceberg::spec::Schema,
    widen: &[(String, PrimitiveType)],
) -> Result<iceberg::spec::Schema> {
    fn apply(
        fields: &[iceberg::spec::NestedFieldRef],
        path: &[&str],
        to: &PrimitiveType,
    ) -> Result<Vec<iceberg::spec::NestedFieldRef>> {
        let mut found = false;
        let out = fields
            .iter()
            .map(|f| {
                if f.name != path[0] {
                    return Ok(f.clone());
                }
                found = true;
                let mut nf = f.as_ref().clone();
                nf.field_type =
                    Box::new(match (path.len(), f.field_type.as_ref()) {
                        (1, _) => Type::Primitive(to.clone()),
                        (_, Type::Struct(st)) => Type::Struct(iceberg::spec::StructType::new(
                            apply(st.fields(), &path[1..], to)?,
                        )),
                        _ => {
                            return Err(Error::internal(format!(
                                "iceberg: `{}` is not a struct",
                                f.name
                            )))
                        }
                    });
                Ok(Arc::new(nf))
            })
            .collect::<Result<Vec<_>>>()?;
        if !found {
            return Err(Error::internal(format!(
                "iceberg: no column `{}` to widen",
                path[0]
            )));
        }
        Ok(out)
    }
    let mut fields: Vec<iceberg::spec::NestedFieldRef> = table.as_struct().fields().to_vec();
    for (path, to) in widen {
        let parts: Vec<&str> = path.split('.').collect();
        fields = apply(&fields, &parts, to)?;
    }
    iceberg::spec::Schema::builder()
        .with_schema_id(table.schema_id() + 1)
        .with_fields(fields)
        .with_identifier_field_ids(table.identifier_field_ids())
        .build()
        .map_err(|e| Error::internal(format!("iceberg: widened schema: {e}")))
}

/// The Arrow schema of the table's current schema, with its field ids.
pub fn table_arrow_schema(table: &iceberg::spec::Schema) -> Result<SchemaRef> {
    schema_to_arrow_schema(table)
        .map(Arc::new)
        .map_err(|e| Error::internal(format!("iceberg: arrow schema of the table: {e}")))
}

/// `batch` as rows of `target` (the table's Arrow schema): columns matched by name, the
/// table's columns the batch lacks filled with nulls, types converted as the module's
/// table says and as promotions allow.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    let schema = batch.schema();
    let columns = target
        .fields()
        .iter()
        .map(|f| match schema.index_of(f.name()) {
            Ok(i) => conform_array(batch.column(i), f.data_type()),
            Err(_) => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &options,
    )?)
}

fn conform_array(a: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    match (a.data_type(), to) {
        (DataType::Dictionary(_, _), _) => {
            let values = cast(a, &storable(a.data_type()))?;
            conform_array(&values, to)
        }
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let s = a
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| Error::internal("struct array expected"))?;
            let children = fields
                .iter()
                .map(|f| match s.column_by_name(f.name()) {
                    Some(c) => conform_array(c, f.data_type()),
                    None => Ok(new_null_array(f.data_type(), s.len())),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                s.nulls().cloned(),
            )?))
        }
        (DataType::List(_), DataType::List(f)) => {
            let l = a
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| Error::internal("list array expected"))?;
            let values = conform_array(l.values(), f.data_type())?;
            Ok(Arc::new(ListArray::try_new(
                f.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?))
        }
        (DataType::LargeList(_) | DataType::FixedSizeList(_, _), DataType::List(f)) => {
            let plain = cast(
                a,
                &DataType::List(Arc::new(Field::new(
                    f.name(),
                    storable_child(a.data_type()),
                    true,
                ))),
            )?;
            conform_array(&plain, to)
        }
        (DataType::Map(_, _), DataType::Map(f, sorted)) => {
            let m = a
                .as_any()
                .downcast_ref::<MapArray>()
                .ok_or_else(|| Error::internal("map array expected"))?;
            // Entries by position: Arrow writers name them `keys`/`values`, Iceberg's
            // Arrow schema `key`/`value`.
            let DataType::Struct(kv) = f.data_type() else {
                return Err(Error::internal("map entries expected"));
            };
            let children = m
                .entries()
                .columns()
                .iter()
                .zip(kv.iter())
                .map(|(c, t)| conform_array(c, t.data_type()))
                .collect::<Result<Vec<_>>>()?;
            let entries = StructArray::try_new(kv.clone(), children, None)?;
            Ok(Arc::new(MapArray::try_new(
                f.clone(),
                m.offsets().clone(),
                entries,
                m.nulls().cloned(),
                *sorted,
            )?))
        }
        (from, to) if from == to => Ok(a.clone()),
        _ => cast(a, to),
    }
}

/// `a` cast to `to`, failing (rather than writing nulls) on a value that does not fit.
fn cast(a: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(arrow::compute::cast_with_options(a, to, &options)?)
}

/// The storable element type of a list-like type.
fn storable_child(t: &DataType) -> DataType {
    match storable(t) {
        DataType::List(f) => f.data_type().clone(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};

    #[test]
    fn new_tables_get_one_id_per_field_and_storable_types() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int16, false),
            Field::new(
                "s",
                DataType::Struct(
                    vec![
                        Field::new("a", DataType::Utf8, true),
                        Field::new("b", DataType::UInt64, true),
                    ]
                    .into(),
                ),
                true,
            ),
            Field::new("nothing", DataType::Null, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Berlin".into())),
                true,
            ),
        ]);
        let s = new_table_schema(&schema, &[]).unwrap();
        assert!(s.field_by_name("nothing").is_none());
        let ids: Vec<i32> = ["id", "s", "s.a", "s.b", "ts"]
            .iter()
            .map(|n| s.field_by_name(n).unwrap().id)
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert_eq!(
            *s.field_by_name("s.b").unwrap().field_type,
            Type::Primitive(PrimitiveType::Decimal {
                precision: 20,
                scale: 0
            })
        );
        assert_eq!(
            *s.field_by_name("ts").unwrap().field_type,
            Type::Primitive(PrimitiveType::Timestamptz)
        );
    }

    #[test]
    fn evolution_adds_new_columns_and_rejects_narrowing() {
        let table = new_table_schema(
            &Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("name", DataType::Utf8, true),
            ]),
            &[],
        )
        .unwrap();
        let ev = evolution(
            &Schema::new(vec![
                Field::new("id", DataType::Int32, true),
                Field::new("extra", DataType::Float64, true),
            ]),
            &table,
        )
        .unwrap();
        assert_eq!(ev.added, vec!["extra".to_string()]);
        let err = evolution(
            &Schema::new(vec![Field::new("name", DataType::Int64, true)]),
            &table,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`name`"), "{err}");
    }

    #[test]
    fn wider_values_widen_the_column_and_keep_its_id() {
        let table = new_table_schema(
            &Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("price", DataType::Decimal128(9, 2), true),
                Field::new(
                    "after",
                    DataType::Struct(vec![Field::new("score", DataType::Float32, true)].into()),
                    true,
                ),
                Field::new(
                    "tags",
                    DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                    true,
                ),
            ]),
            &["id".to_string()],
        )
        .unwrap();
        let batch = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(18, 2), true),
            Field::new(
                "after",
                DataType::Struct(vec![Field::new("score", DataType::Float64, true)].into()),
                true,
            ),
        ]);
        let ev = evolution(&batch, &table).unwrap();
        assert!(ev.add.is_empty());
        let paths: Vec<&str> = ev.widen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["id", "price", "after.score"]);
        let wide = widened(&table, &ev.widen).unwrap();
        assert_eq!(wide.schema_id(), table.schema_id() + 1);
        assert_eq!(
            wide.field_by_name("id").unwrap().id,
            table.field_by_name("id").unwrap().id
        );
        assert_eq!(
            wide.identifier_field_ids().collect::<Vec<_>>(),
            table.identifier_field_ids().collect::<Vec<_>>()
        );
        assert_eq!(
            *wide.field_by_name("after.score").unwrap().field_type,
            Type::Primitive(PrimitiveType::Double)
        );
        assert!(evolution(&batch, &wide).unwrap().is_empty());
        // Narrower scale, and widening inside a list: refused.
        let bad = Schema::new(vec![Field::new("price", DataType::Decimal128(18, 3), true)]);
        assert!(evolution(&bad, &table).is_err());
        let in_list = Schema::new(vec![Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        )]);
        assert!(check_rows(&in_list, Some(&table), &Default::default(), false).is_err());
        assert!(check_rows(&batch, Some(&table), &Default::default(), false).is_ok());
    }

    #[test]
    fn check_rows_tracks_pending_columns_and_the_glue_timestamptz_gap() {
        let pending = std::collections::HashMap::new();
        let b = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]);
        let added = check_rows(&b, None, &pending, false).unwrap();
        assert_eq!(added.len(), 2);
        let err = check_rows(&b, None, &pending, true).unwrap_err();
        assert!(err.to_string().contains("`at`"), "{err}");
        // A column pending from earlier rows must keep its type.
        let pending: std::collections::HashMap<String, Type> = added.into_iter().collect();
        let clash = Schema::new(vec![Field::new("id", DataType::Utf8, true)]);
        assert!(check_rows(&clash, None, &pending, false).is_err());
    }

    #[test]
    fn new_struct_fields_become_nested_additions() {
        let st = |extra: bool| {
            let mut f = vec![Field::new("id", DataType::Int64, true)];
            if extra {
                f.push(Field::new("note", DataType::Utf8, true));
            }
            Schema::new(vec![Field::new("after", DataType::Struct(f.into()), true)])
        };
        let table = new_table_schema(&st(false), &[]).unwrap();
        let ev = evolution(&st(true), &table).unwrap();
        assert_eq!(ev.added, vec!["after.note".to_string()]);
        let pending = std::collections::HashMap::new();
        let added = check_rows(&st(true), Some(&table), &pending, false).unwrap();
        assert_eq!(added[0].0, "after.note");
    }

    #[test]
    fn conform_fills_missing_columns_and_converts_types() {
        let table = new_table_schema(
            &Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("name", DataType::Utf8, true),
                Field::new(
                    "at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
            ]),
            &[],
        )
        .unwrap();
        let target = table_arrow_schema(&table).unwrap();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new(
                    "at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Berlin".into())),
                    true,
                ),
                Field::new("ignored", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_000), None])
                        .with_timezone("Europe/Berlin"),
                ),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let out = conform(&batch, &target).unwrap();
        assert_eq!(out.schema(), target);
        assert_eq!(out.column(1).null_count(), 2);
        let at = out
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(at.value(0), 1_000_000);
    }
}
