//! The compiled `externalize_blob` op: rewrites the selected columns into
//! `{url, value}` structs and collects the values to store, then stores them all before the
//! batch is returned.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch, StringBuilder,
    StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use rivven_engine::connector::Routed;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use super::store::{Store, Upload};
use crate::image::map_images_with_validity;
use crate::op::{Ctx, Op};
use rivven_engine::Result;

/// The children of an externalized field of type `ty`: `url` (the reference) and `value`
/// (the inline value, of type `ty`).
pub fn struct_fields(ty: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("url", DataType::Utf8, true),
        Field::new("value", ty.clone(), true),
    ])
}

/// An op for a schema with no field to externalize.
pub struct Identity(pub SchemaRef);

impl Op for Identity {
    fn output_schema(&self) -> &SchemaRef {
        &self.0
    }
    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch.clone())
    }
}

/// `externalize_blob` compiled for one input schema.
pub struct BlobOp {
    /// The output schema (the envelope around `image_out` for change events).
    pub output: SchemaRef,
    /// The row schema after the rewrite.
    pub image_out: SchemaRef,
    /// Indexes of the row fields to externalize.
    pub targets: Vec<usize>,
    /// Values of at most this many bytes stay inline.
    pub threshold: u64,
    /// Where values go.
    pub store: Arc<Store>,
}

/// The objects one batch needs, each once.
#[derive(Default)]
struct Plan {
    uploads: Vec<Upload>,
    seen: HashSet<String>,
}

impl BlobOp {
    /// Rewrite `batch`, externalizing only rows where `mask` is true (every row when
    /// `None`); returns after every object is stored.
    fn rewrite(&self, batch: &RecordBatch, mask: Option<&BooleanArray>) -> Result<RecordBatch> {
        let plan = RefCell::new(Plan::default());
        let out = map_images_with_validity(batch, &|img, valid| {
            let mut columns = img.columns().to_vec();
            let schema = img.schema();
            let mut plan = plan.borrow_mut();
            for &i in &self.targets {
                let name = schema.field(i).name();
                columns[i] = self.column(name, &columns[i], valid, mask, &mut plan)?;
            }
            Ok(RecordBatch::try_new(self.image_out.clone(), columns)?)
        })?;
        self.store.put_all(plan.into_inner().uploads)?;
        Ok(out)
    }

    /// The `{url, value}` column for `col` (field `name`).
    fn column(
        &self,
        name: &str,
        col: &ArrayRef,
        valid: Option<&NullBuffer>,
        mask: Option<&BooleanArray>,
        plan: &mut Plan,
    ) -> Result<ArrayRef> {
        let bytes = ByteValues::of(col)?;
        let mut urls = StringBuilder::new();
        let mut moved = BooleanBufferBuilder::new(col.len());
        for row in 0..col.len() {
            let eligible = valid.is_none_or(|v| v.is_valid(row))
                && mask.is_none_or(|m| m.is_valid(row) && m.value(row));
            let value = if eligible { bytes.at(row) } else { None };
            match value {
                Some(v) if v.len() as u64 > self.threshold => {
                    let key = self.store.key(&sha256_hex(v));
                    urls.append_value(self.store.url(&key));
                    moved.append(true);
                    if plan.seen.insert(key.clone()) {
                        plan.uploads.push(Upload {
                            field: name.to_owned(),
                            key,
                            bytes: v.to_vec(),
                        });
                    }
                }
                _ => {
                    urls.append_null();
                    moved.append(false);
                }
            }
        }
        let moved = BooleanArray::new(moved.finish(), None);
        let value = if moved.true_count() == 0 {
            col.clone()
        } else {
            arrow::compute::nullif(col, &moved)?
        };
        Ok(Arc::new(StructArray::try_new(
            struct_fields(col.data_type()),
            vec![Arc::new(urls.finish()), value],
            col.nulls().cloned(),
        )?))
    }
}

impl Op for BlobOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        self.rewrite(batch, None)
    }

    /// A batch where the predicate selects no row passes unchanged; otherwise the whole
    /// batch is rewritten and unselected rows keep their values inline (one batch, one
    /// schema, instead of the chain's default runs).
    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        _: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        let mask = match mask {
            Some(m) if m.true_count() == 0 => {
                out.push(input);
                return Ok(());
            }
            Some(m) if m.true_count() < m.len() => Some(m),
            _ => None,
        };
        let batch = self.rewrite(&input.batch, mask)?;
        out.push(Routed { batch, ..input });
        Ok(())
    }
}

/// Lowercase hex SHA-256 of `v`.
fn sha256_hex(v: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(v);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Byte access to a binary or text column.
enum ByteValues<'a> {
    Binary(&'a arrow::array::BinaryArray),
    LargeBinary(&'a arrow::array::LargeBinaryArray),
    BinaryView(&'a arrow::array::BinaryViewArray),
    Utf8(&'a arrow::array::StringArray),
    LargeUtf8(&'a arrow::array::LargeStringArray),
    Utf8View(&'a arrow::array::StringViewArray),
}

impl<'a> ByteValues<'a> {
    fn of(col: &'a ArrayRef) -> Result<Self> {
        Ok(match col.data_type() {
            DataType::Binary => ByteValues::Binary(col.as_binary::<i32>()),
            DataType::LargeBinary => ByteValues::LargeBinary(col.as_binary::<i64>()),
            DataType::BinaryView => ByteValues::BinaryView(col.as_binary_view()),
            DataType::Utf8 => ByteValues::Utf8(col.as_string::<i32>()),
            DataType::LargeUtf8 => ByteValues::LargeUtf8(col.as_string::<i64>()),
            DataType::Utf8View => ByteValues::Utf8View(col.as_string_view()),
            other => {
                return Err(rivven_engine::Error::internal(format!(
                    "externalize_blob compiled for a {other} column"
                )))
            }
        })
    }

    /// The bytes of row `i`, `None` when null.
    fn at(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            ByteValues::Binary(a) => a.is_valid(i).then(|| a.value(i)),
            ByteValues::LargeBinary(a) => a.is_valid(i).then(|| a.value(i)),
            ByteValues::BinaryView(a) => a.is_valid(i).then(|| a.value(i)),
            ByteValues::Utf8(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
            ByteValues::LargeUtf8(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
            ByteValues::Utf8View(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sha256_hex;

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
