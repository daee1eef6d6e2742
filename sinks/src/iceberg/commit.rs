//! Snapshots the `iceberg` sink builds itself, for the two commits iceberg-rust 0.10's
//! transactions cannot make (it has only a fast append):
//!
//! - a **row delta** (`commit_mode: upsert`): equality delete files and data files added in
//!   one snapshot with one sequence number, so the deletes remove the rows of earlier
//!   snapshots with the same key and never the rows added beside them;
//! - a **dynamic partition overwrite** (`commit_mode: overwrite`): the live data files of
//!   every partition the new files write are marked deleted, in the same snapshot that adds
//!   the new ones (an unpartitioned table is one partition: it is replaced).
//!
//! Manifests and the manifest list are written with the crate's own writers; the snapshot
//! (operation `overwrite` when it deletes anything, else `append`) and the move of `main`
//! go to the catalog through [`Tables::commit`](super::catalog::Tables::commit), with the
//! same requirements a transaction would state: the table's UUID and `main` still at the
//! parent snapshot.

use super::catalog::ice_err;
use iceberg::spec::{
    DataFile, DataFileFormat, FormatVersion, ManifestContentType, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention,
    SnapshotSummaryCollector, Struct, Summary, TableMetadata, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use rivven_engine::{Error, Result};
use std::collections::{HashMap, HashSet};

/// What one snapshot changes.
#[derive(Debug, Default)]
pub struct Delta {
    /// Data files added.
    pub data: Vec<DataFile>,
    /// Equality delete files added (applied to the rows of earlier snapshots).
    pub deletes: Vec<DataFile>,
    /// Mark deleted the live data files of the partitions `data` writes.
    pub overwrite: bool,
    /// Extra snapshot summary properties (the offsets the snapshot covers).
    pub properties: HashMap<String, String>,
}

/// A snapshot ready to commit: the requirements and updates that add it to `main`, and
/// how many data files it marks deleted.
#[derive(Debug)]
pub struct Prepared {
    pub requirements: Vec<TableRequirement>,
    pub updates: Vec<TableUpdate>,
    pub removed_data_files: u64,
}

/// The snapshot that adds `delta` to `table` on `main`. Writes the snapshot's manifests and
/// manifest list; the caller commits the rest.
pub async fn snapshot_updates(table: &Table, delta: Delta) -> Result<Prepared> {
    let ident = table.identifier().clone();
    let err = |what: &'static str| ice_err(format!("{what} of {ident}"));
    let metadata = table.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::config(format!(
            "iceberg: {ident} is format version {}; upsert and overwrite commits need version 2 \
             (set table_properties.format-version: \"2\" when the sink creates it)",
            metadata.format_version()
        )));
    }
    let file_io = table.file_io();
    let snapshot_id = unique_snapshot_id(table);
    let sequence = metadata.next_sequence_number();
    let parent = metadata.current_snapshot();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    let commit = uuid::Uuid::new_v4();
    let mut counter = 0u32;
    let mut manifest_path = || {
        counter += 1;
        format!(
            "{}/metadata/{commit}-m{counter}.{}",
            metadata.location(),
            DataFileFormat::Avro
        )
    };
    let mut summary = SnapshotSummaryCollector::default();
    let mut removed = 0u64;
    let mut removed_deletes = 0u64;
    let mut manifests: Vec<ManifestFile> = Vec::new();

    // One manifest for the added data files, one for the added delete files, each entry at
    // this snapshot's sequence number.
    for (files, content) in [
        (&delta.data, ManifestContentType::Data),
        (&delta.deletes, ManifestContentType::Deletes),
    ] {
        if files.is_empty() {
            continue;
        }
        let out = file_io
            .new_output(manifest_path())
            .map_err(err("create a manifest"))?;
        let builder = ManifestWriterBuilder::new(
            out,
            Some(snapshot_id),
            schema.clone(),
            spec.as_ref().clone(),
        );
        let mut w = match content {
            ManifestContentType::Data => builder.build_v2_data(),
            ManifestContentType::Deletes => builder.build_v2_deletes(),
        };
        for f in files {
            summary.add_file(f, schema.clone(), spec.clone());
            w.add_file(f.clone(), sequence)
                .map_err(err("list an added file"))?;
        }
        manifests.push(
            w.write_manifest_file()
                .await
                .map_err(err("write a manifest"))?,
        );
    }

    // The parent's manifests that still list live files are kept; with `overwrite`, those
    // listing files (data or deletes) of the written partitions are rewritten with these
    // files marked deleted.
    let replaced: HashSet<&Struct> = delta.data.iter().map(DataFile::partition).collect();
    let spec_id = spec.spec_id();
    if let Some(parent) = parent {
        let list = table
            .manifest_list_reader(parent)
            .load()
            .await
            .map_err(err("read the manifest list"))?;
        for m in list.entries() {
            if !m.has_added_files() && !m.has_existing_files() {
                continue;
            }
            if !delta.deletes.is_empty()
                && m.content == ManifestContentType::Data
                && m.partition_spec_id != spec_id
            {
                // An equality delete reaches only data files of its own partition spec.
                return Err(Error::config(format!(
                    "iceberg: {ident} holds data files of partition spec {} besides the current \
                     spec {spec_id}; upsert deletes could not reach their rows (rewrite the \
                     table's data files into the current spec first)",
                    m.partition_spec_id
                )));
            }
            let rewrite = delta.overwrite && m.partition_spec_id == spec_id;
            if !rewrite {
                manifests.push(m.clone());
                continue;
            }
            let manifest = m
                .load_manifest(file_io)
                .await
                .map_err(err("read a manifest"))?;
            let hit = |f: &DataFile| spec.is_unpartitioned() || replaced.contains(f.partition());
            let live: Vec<_> = manifest.entries().iter().filter(|e| e.is_alive()).collect();
            if !live.iter().any(|e| hit(e.data_file())) {
                manifests.push(m.clone());
                continue;
            }
            let out = file_io
                .new_output(manifest_path())
                .map_err(err("create a manifest"))?;
            let builder = ManifestWriterBuilder::new(
                out,
                Some(snapshot_id),
                schema.clone(),
                spec.as_ref().clone(),
            );
            let mut w = match m.content {
                ManifestContentType::Data => builder.build_v2_data(),
                ManifestContentType::Deletes => builder.build_v2_deletes(),
            };
            for e in live {
                let f = e.data_file().clone();
                let seq = e.sequence_number().ok_or_else(|| {
                    Error::state(format!(
                        "iceberg: {ident}: manifest {} lists {} without a sequence number",
                        m.manifest_path,
                        f.file_path()
                    ))
                })?;
                // Entries written before file sequence numbers existed have none: the data
                // sequence number is the closest truth.
                let file_seq = e.file_sequence_number.or(Some(seq));
                if hit(&f) {
                    summary.remove_file(&f, schema.clone(), spec.clone());
                    match m.content {
                        ManifestContentType::Data => removed += 1,
                        ManifestContentType::Deletes => removed_deletes += 1,
                    }
                    w.add_delete_file(f, seq, file_seq)
                        .map_err(err("list a removed file"))?;
                } else {
                    let added_in = e.snapshot_id().unwrap_or(parent.snapshot_id());
                    w.add_existing_file(f, added_in, seq, file_seq)
                        .map_err(err("list a kept file"))?;
                }
            }
            manifests.push(
                w.write_manifest_file()
                    .await
                    .map_err(err("write a manifest"))?,
            );
        }
    }

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-0-{commit}.{}",
        metadata.location(),
        DataFileFormat::Avro
    );
    let out = file_io
        .new_output(list_path.clone())
        .map_err(err("create the manifest list"))?;
    let writer = out
        .writer()
        .await
        .map_err(err("create the manifest list"))?;
    let mut list = ManifestListWriter::v2(
        writer,
        snapshot_id,
        parent.map(|p| p.snapshot_id()),
        sequence,
    );
    list.add_manifests(manifests.into_iter())
        .map_err(err("list the manifests"))?;
    list.close().await.map_err(err("write the manifest list"))?;

    let operation = if removed + removed_deletes > 0 || !delta.deletes.is_empty() {
        Operation::Overwrite
    } else {
        Operation::Append
    };
    let mut properties = delta.properties;
    let added = summary.build();
    properties.extend(totals(
        &added,
        parent.map(|p| &p.summary().additional_properties),
    ));
    properties.extend(added);
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence)
        .with_timestamp_ms(now_ms())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let requirements = vec![
        TableRequirement::UuidMatch {
            uuid: metadata.uuid(),
        },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: parent.map(|p| p.snapshot_id()),
        },
    ];
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference: SnapshotReference::new(snapshot_id, main_retention(metadata)),
        },
    ];
    Ok(Prepared {
        requirements,
        updates,
        removed_data_files: removed,
    })
}

/// The retention settings of `main`, kept as they are (the crate exposes table refs only
/// through the metadata's serialized form).
fn main_retention(metadata: &TableMetadata) -> SnapshotRetention {
    serde_json::to_value(metadata)
        .ok()
        .and_then(|v| {
            serde_json::from_value::<SnapshotReference>(v.get("refs")?.get(MAIN_BRANCH)?.clone())
                .ok()
        })
        .map_or_else(
            || SnapshotRetention::branch(None, None, None),
            |r| r.retention,
        )
}

/// The `total-*` summary properties: the parent's totals (`previous`; `None`: no parent)
/// plus what this snapshot adds, minus what it removes. Totals a parent lacks are left out
/// (a reader then counts).
fn totals(
    added: &HashMap<String, String>,
    previous: Option<&HashMap<String, String>>,
) -> HashMap<String, String> {
    let get = |m: &HashMap<String, String>, k: &str| -> i64 {
        m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let empty = HashMap::new();
    let fresh = previous.is_none();
    let previous = previous.unwrap_or(&empty);
    [
        ("total-records", "added-records", "deleted-records"),
        ("total-data-files", "added-data-files", "deleted-data-files"),
        (
            "total-delete-files",
            "added-delete-files",
            "removed-delete-files",
        ),
        ("total-files-size", "added-files-size", "removed-files-size"),
        (
            "total-equality-deletes",
            "added-equality-deletes",
            "removed-equality-deletes",
        ),
        (
            "total-position-deletes",
            "added-position-deletes",
            "removed-position-deletes",
        ),
    ]
    .into_iter()
    .filter(|(total, _, _)| fresh || previous.contains_key(*total))
    .map(|(total, plus, minus)| {
        let v = get(previous, total) + get(added, plus) - get(added, minus);
        (total.to_string(), v.max(0).to_string())
    })
    .collect()
}

/// A positive snapshot id no snapshot of `table` has.
fn unique_snapshot_id(table: &Table) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_and_remove() {
        let added: HashMap<String, String> = [
            ("added-records", "10"),
            ("deleted-records", "4"),
            ("added-data-files", "1"),
            ("added-equality-deletes", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let previous: HashMap<String, String> =
            [("total-records", "100"), ("total-data-files", "5")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let t = totals(&added, Some(&previous));
        assert_eq!(t["total-records"], "106");
        assert_eq!(t["total-data-files"], "6");
        // The parent counted no equality deletes: no total is invented.
        assert!(!t.contains_key("total-equality-deletes"));
        let t = totals(&added, None);
        assert_eq!(t["total-records"], "6");
        assert_eq!(t["total-equality-deletes"], "3");
    }
}
