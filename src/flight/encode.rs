//! Batches to Flight data: schema messages where the schema changes, and the schema a
//! stream is advertised with.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use futures_util::future::{ready, BoxFuture};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use std::sync::Arc;
use tonic::Status;

/// The schema a stream of `schema`'s batches is sent with: dictionary columns as their
/// value type (the encoder sends dictionaries hydrated), so what `GetFlightInfo` and
/// `GetSchema` advertise is what `DoGet` streams.
pub(crate) fn flight_schema(schema: &arrow::datatypes::Schema) -> arrow::datatypes::Schema {
    use arrow::datatypes::{DataType, Field};
    fn ty(t: &DataType) -> DataType {
        match t {
            DataType::Dictionary(_, v) => ty(v),
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| field(f)).collect()),
            DataType::List(f) => DataType::List(Arc::new(field(f))),
            DataType::LargeList(f) => DataType::LargeList(Arc::new(field(f))),
            DataType::Map(f, sorted) => DataType::Map(Arc::new(field(f)), *sorted),
            t => t.clone(),
        }
    }
    fn field(f: &Field) -> Field {
        f.clone().with_data_type(ty(f.data_type()))
    }
    arrow::datatypes::Schema::new_with_metadata(
        schema.fields().iter().map(|f| field(f)).collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// The schema message the encoder writes for `schema` (dictionaries hydrated).
fn schema_message(schema: SchemaRef) -> BoxStream<'static, Result<FlightData, Status>> {
    FlightDataEncoderBuilder::new()
        .build(stream::once(ready(Ok(RecordBatch::new_empty(schema)))))
        .take(1)
        .map_err(|e| Status::internal(e.to_string()))
        .boxed()
}

/// Encode `batches` as Flight data: a schema message first (for `schema` at once, when the
/// schema is known before the first batch) and again whenever a batch's schema differs
/// from the last one sent, so a schema change mid-stream arrives as a new schema message.
/// A stream that ends without a batch still sends the schema `if_empty` finds (Arrow C++
/// readers refuse a stream without one); it is only asked then.
pub(crate) fn encode(
    schema: Option<SchemaRef>,
    batches: BoxStream<'static, Result<RecordBatch, FlightError>>,
    if_empty: Option<BoxFuture<'static, Result<SchemaRef, Status>>>,
) -> BoxStream<'static, Result<FlightData, Status>> {
    let status = |e: FlightError| Status::internal(e.to_string());
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(schema.is_some()));
    let first = schema.clone().map(schema_message);
    let mut last = schema;
    let marked = sent.clone();
    let data = batches.flat_map(move |r| {
        marked.store(true, std::sync::atomic::Ordering::Relaxed);
        let batch = match r {
            Ok(b) => b,
            Err(e) => return stream::once(ready(Err(status(e)))).boxed(),
        };
        let same = last
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, batch.schema_ref()) || **s == **batch.schema_ref());
        last = Some(batch.schema());
        FlightDataEncoderBuilder::new()
            .build(stream::once(ready(Ok(batch))))
            .skip(usize::from(same))
            .map_err(status)
            .boxed()
    });
    let tail = stream::once(async move {
        match if_empty {
            Some(find) if !sent.load(std::sync::atomic::Ordering::Relaxed) => match find.await {
                Ok(s) => schema_message(s),
                Err(e) => stream::once(ready(Err(e))).boxed(),
            },
            _ => stream::empty().boxed(),
        }
    })
    .flatten();
    stream::iter(first)
        .flatten()
        .chain(data)
        .chain(tail)
        .boxed()
}
