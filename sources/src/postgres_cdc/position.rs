//! The position `postgres-cdc` stores with every batch: the LSN to resume streaming after,
//! whether the snapshot finished, which snapshot units are done, and the batch's sequence
//! number in this process.

use super::conn::{format_lsn, parse_lsn};
use rivven_engine::batch::Position;
use rivven_engine::{Error, Result};

/// The stored position: the LSN to resume streaming after, and whether the snapshot
/// finished (an unfinished snapshot is redone on restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pos {
    pub lsn: u64,
    pub snapshot_done: bool,
    /// During a snapshot: the tables (`schema.table`) read completely so far.
    pub tables_done: Vec<String>,
    /// Streaming: the batch's sequence number in this process, so that `commit` can tell
    /// when everything emitted is durable (several batches may carry the same LSN).
    pub seq: u64,
}

impl Pos {
    pub fn new(lsn: u64, snapshot_done: bool) -> Self {
        Pos {
            lsn,
            snapshot_done,
            tables_done: Vec::new(),
            seq: 0,
        }
    }

    pub fn to_position(&self) -> Position {
        let mut v = serde_json::json!({
            "lsn": format_lsn(self.lsn),
            "snapshot_done": self.snapshot_done,
        });
        if !self.snapshot_done {
            v["tables_done"] = serde_json::json!(self.tables_done);
        }
        if self.seq > 0 {
            v["seq"] = serde_json::json!(self.seq);
        }
        Position(v)
    }

    pub fn from_position(p: &Position) -> Result<Pos> {
        let bad = || Error::state(format!("postgres-cdc: unreadable stored position {}", p.0));
        let lsn =
            p.0.get("lsn")
                .and_then(|v| v.as_str())
                .and_then(parse_lsn)
                .ok_or_else(bad)?;
        let snapshot_done =
            p.0.get("snapshot_done")
                .and_then(|v| v.as_bool())
                .ok_or_else(bad)?;
        let tables_done =
            p.0.get("tables_done")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
        let seq = p.0.get("seq").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Pos {
            lsn,
            snapshot_done,
            tables_done,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_it_cannot_read() {
        let mut p = Pos::new(0x16_B374_D848, false);
        p.tables_done = vec!["public.a".into(), "public.b@0-25".into()];
        p.seq = 7;
        let v = p.to_position();
        assert_eq!(
            v.0,
            serde_json::json!({"lsn": "16/B374D848", "snapshot_done": false,
                "tables_done": ["public.a", "public.b@0-25"], "seq": 7})
        );
        assert_eq!(Pos::from_position(&v).unwrap(), p);
        // A finished snapshot does not list tables; seq 0 is not written.
        let done = Pos::new(1, true).to_position();
        assert_eq!(
            done.0,
            serde_json::json!({"lsn": "0/1", "snapshot_done": true})
        );
        assert!(Pos::from_position(&Position(serde_json::json!({"lsn": "x"}))).is_err());
    }
}
