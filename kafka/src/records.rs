//! Kafka record batches (magic 2) to and from the wire: encoded with one compression
//! codec per batch, decoded from fetch responses whose last batch may be cut short (the
//! broker stops at `max_bytes`; the cut batch is fetched again from its start).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use rivven_engine::{Error, Result};

/// The record batch codecs, as the `compression` key spells them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (Kafka's xerial framing).
    Snappy,
    /// LZ4 frames.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    fn wire(self) -> Compression {
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// A record to encode; offsets and sequence numbers are assigned by [`encode`].
pub fn record(
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp_ms: i64,
    headers: kafka_protocol::indexmap::IndexMap<kafka_protocol::protocol::StrBytes, Option<Bytes>>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key,
        value,
        headers,
    }
}

/// An idempotent producer's identity and the sequence number of a batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    /// Producer id from InitProducerId.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record (per partition, counting records).
    pub base_sequence: i32,
}

/// The sequence number `n` records after `base`: sequences wrap from `i32::MAX` to 0,
/// as Kafka's do.
pub fn sequence_after(base: i32, n: usize) -> i32 {
    let n = (n % (i32::MAX as usize + 1)) as i64;
    ((i64::from(base) + n) % (i64::from(i32::MAX) + 1)) as i32
}

/// One record batch holding `records` (their offsets renumbered from 0), compressed
/// with `codec`; with `sequenced`, stamped with the producer id, epoch and sequence
/// numbers the broker checks to drop a batch it already has (a retry).
pub fn encode(records: &mut [Record], codec: Codec, sequenced: Option<Sequenced>) -> Result<Bytes> {
    // kafka-protocol starts a new batch wherever `offset - sequence` changes, and takes
    // the batch's base sequence from the first record. Without a producer id,
    // sequence = offset - 1 keeps one batch with base sequence -1 (nothing to check).
    for (i, r) in records.iter_mut().enumerate() {
        r.offset = i as i64;
        match sequenced {
            Some(s) => {
                r.producer_id = s.producer_id;
                r.producer_epoch = s.producer_epoch;
                r.sequence = sequence_after(s.base_sequence, i);
            }
            None => r.sequence = i as i32 - 1,
        }
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: codec.wire(),
        },
    )
    .map_err(|e| Error::data(format!("kafka: cannot encode a record batch: {e}")))?;
    Ok(buf.freeze())
}

/// The records at or after `from` in a fetch response's `records` bytes, and the offset
/// after the last whole batch (control records are skipped but counted).
pub fn decode(mut bytes: Bytes, from: i64) -> Result<(Vec<Record>, i64)> {
    let mut out = Vec::new();
    let mut next = from;
    // Batch header: base offset (8 bytes), batch length (4), then `length` bytes.
    while bytes.remaining() >= 12 {
        let base = i64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
        let len = i32::from_be_bytes(bytes[8..12].try_into().unwrap_or_default());
        let Ok(len) = usize::try_from(len) else {
            return Err(Error::data(format!(
                "kafka: record batch at offset {base} has length {len}"
            )));
        };
        if bytes.remaining() < 12 + len {
            break; // cut short by max_bytes: fetched again next time
        }
        let mut batch = bytes.split_to(12 + len);
        // Last offset delta: bytes 23..27 of the batch.
        let last = if batch.len() >= 27 {
            base + i64::from(i32::from_be_bytes(
                batch[23..27].try_into().unwrap_or_default(),
            ))
        } else {
            base
        };
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
            Error::data(format!(
                "kafka: cannot decode the record batch at offset {base}: {e}"
            ))
        })?;
        for r in set.records {
            if r.offset >= from && !r.control {
                out.push(r);
            }
        }
        next = next.max(last + 1);
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_a_cut_batch_is_left_for_later() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let mut rs: Vec<Record> = (0..100)
                .map(|i| {
                    let mut h = kafka_protocol::indexmap::IndexMap::new();
                    h.insert(
                        kafka_protocol::protocol::StrBytes::from_static_str("h"),
                        Some(Bytes::from(format!("{i}"))),
                    );
                    record(
                        Some(Bytes::from(format!("k{i}"))),
                        (i % 7 != 0).then(|| Bytes::from(format!("{{\"v\":{i}}}"))),
                        1_700_000_000_000 + i,
                        h,
                    )
                })
                .collect();
            let a = encode(&mut rs[..60], codec, None).unwrap();
            // The second as an idempotent producer's: one batch, its sequences kept.
            let seq = Sequenced {
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: 1000,
            };
            let mut b = encode(&mut rs[60..], codec, Some(seq)).unwrap().to_vec();
            // The second batch as the broker numbers it: base offset 60.
            b[..8].copy_from_slice(&60i64.to_be_bytes());
            let mut all = a.to_vec();
            all.extend_from_slice(&b);
            let (got, next) = decode(Bytes::from(all.clone()), 10).unwrap();
            assert_eq!(got.len(), 90, "{codec:?}");
            assert_eq!(next, 100);
            assert_eq!(got[0].offset, 10);
            assert_eq!(got[0].key.as_deref(), Some(&b"k10"[..]));
            assert_eq!(got[4].value, None, "k14 has no value");
            assert_eq!(got[89].timestamp, 1_700_000_000_099);
            assert_eq!(got[0].producer_id, -1);
            assert_eq!(
                (
                    got[50].producer_id,
                    got[50].producer_epoch,
                    got[50].sequence
                ),
                (42, 3, 1000),
                "{codec:?}"
            );
            assert_eq!(got[89].sequence, 1039);
            assert_eq!(
                got[89]
                    .headers
                    .values()
                    .next()
                    .cloned()
                    .flatten()
                    .as_deref(),
                Some(&b"99"[..])
            );
            // The second batch cut short: only the first comes back, and next stays at 60.
            all.truncate(a.len() + 20);
            let (got, next) = decode(Bytes::from(all), 0).unwrap();
            assert_eq!((got.len(), next), (60, 60), "{codec:?}");
        }
    }

    #[test]
    fn sequences_wrap_to_zero_after_i32_max() {
        assert_eq!(sequence_after(5, 3), 8);
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        assert_eq!(sequence_after(i32::MAX - 1, 4), 2);
    }
}
