//! Committed consumer-group offsets: one JSON file per group, replaced atomically.

use super::fsutil::write_atomic;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

type Offsets = BTreeMap<String, BTreeMap<u32, u64>>;

/// Consumer offsets of every group: the next offset each group will read, per partition.
#[derive(Debug)]
pub struct GroupOffsets {
    dir: PathBuf,
    groups: Mutex<HashMap<String, Offsets>>,
}

impl GroupOffsets {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let mut groups = HashMap::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| Error::io("list groups", e))?
            .flatten()
        {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let data = std::fs::read(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            let offsets: Offsets = serde_json::from_slice(&data)
                .map_err(|e| Error::state(format!("{}: {e}", path.display())))?;
            groups.insert(name.to_owned(), offsets);
        }
        Ok(Self {
            dir: dir.to_owned(),
            groups: Mutex::new(groups),
        })
    }

    /// The committed offset of `group` on a partition, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let groups = self.groups.lock().ok()?;
        groups.get(group)?.get(topic)?.get(&partition).copied()
    }

    /// Durably commit offsets for `group` (merged into what it had). Blocking I/O.
    pub fn commit(
        &self,
        group: &str,
        offsets: impl IntoIterator<Item = (String, u32, u64)>,
    ) -> Result<()> {
        let mut groups = self
            .groups
            .lock()
            .map_err(|_| Error::internal("group lock poisoned"))?;
        // The new offsets replace the in-memory ones only once they are on disk: a failed
        // write leaves memory equal to the file, so a retry in this process resumes from
        // what a restart would.
        let mut entry = groups.get(group).cloned().unwrap_or_default();
        let mut changed = false;
        for (topic, partition, offset) in offsets {
            let slot = entry
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_insert(u64::MAX);
            if *slot != offset {
                *slot = offset;
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let data = serde_json::to_vec_pretty(&entry).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&self.dir.join(format!("{group}.json")), &data)
            .map_err(|e| Error::io(format!("commit offsets of group `{group}`"), e))?;
        groups.insert(group.to_owned(), entry);
        Ok(())
    }
}
