//! Decoding of pgoutput messages (protocol versions 1 to 4), zero-copy over the WAL
//! payload: column values stay slices of the received buffer until an Arrow builder
//! consumes them.

use bytes::{Buf, Bytes};

/// A column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (key).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Declared array dimensions (`pg_attribute.attndims`; 0: none declared, or not
    /// known yet: pgoutput does not send them, the source looks them up).
    pub dims: u8,
}

/// A Relation message: the shape of a table, sent before its first change in a session
/// and again whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// An unchanged TOASTed value: the server did not send it.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

/// A decoded pgoutput message. `xid` is set inside streamed (in-progress) transactions.
#[derive(Debug, Clone, PartialEq)]
pub enum PgOutput {
    Begin {
        final_lsn: u64,
        commit_time_us: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_us: i64,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    Relation {
        xid: Option<u32>,
        relation: Relation,
    },
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        xid: Option<u32>,
        rel: u32,
        new: Vec<Value>,
    },
    Update {
        xid: Option<u32>,
        rel: u32,
        /// The old key (`K`) or whole old row (`O`, replica identity FULL), if sent.
        old: Option<(u8, Vec<Value>)>,
        new: Vec<Value>,
    },
    Delete {
        xid: Option<u32>,
        rel: u32,
        old: (u8, Vec<Value>),
    },
    Truncate {
        xid: Option<u32>,
        cascade: bool,
        restart_identity: bool,
        rels: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_us: i64,
    },
    StreamAbort {
        xid: u32,
        sub_xid: u32,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pgoutput: {}", self.0)
    }
}

type R<T> = Result<T, DecodeError>;

struct Reader {
    b: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &str) -> R<()> {
        if self.b.remaining() < n {
            Err(DecodeError(format!("message truncated reading {what}")))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &str) -> R<u8> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    fn i16(&mut self, what: &str) -> R<i16> {
        self.need(2, what)?;
        Ok(self.b.get_i16())
    }
    fn u32(&mut self, what: &str) -> R<u32> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    fn i32(&mut self, what: &str) -> R<i32> {
        self.need(4, what)?;
        Ok(self.b.get_i32())
    }
    fn u64(&mut self, what: &str) -> R<u64> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    fn i64(&mut self, what: &str) -> R<i64> {
        self.need(8, what)?;
        Ok(self.b.get_i64())
    }
    fn cstr(&mut self, what: &str) -> R<String> {
        let end = self
            .b
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| DecodeError(format!("unterminated string reading {what}")))?;
        let s = String::from_utf8_lossy(&self.b[..end]).into_owned();
        self.b.advance(end + 1);
        Ok(s)
    }
    fn bytes(&mut self, n: usize, what: &str) -> R<Bytes> {
        self.need(n, what)?;
        Ok(self.b.split_to(n))
    }
    fn tuple(&mut self) -> R<Vec<Value>> {
        let n = self.i16("tuple column count")?;
        let mut out = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            let v = match self.u8("tuple value kind")? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.i32("value length")?;
                    Value::Text(self.bytes(len.max(0) as usize, "text value")?)
                }
                b'b' => {
                    let len = self.i32("value length")?;
                    Value::Binary(self.bytes(len.max(0) as usize, "binary value")?)
                }
                k => {
                    return Err(DecodeError(format!(
                        "unknown tuple value kind {:?}",
                        k as char
                    )))
                }
            };
            out.push(v);
        }
        Ok(out)
    }
}

/// Decode one pgoutput message. `in_stream` says whether a Stream Start is open (then
/// data messages carry the xid of the streamed transaction, protocol version 2+).
pub fn decode(data: Bytes, in_stream: bool) -> R<PgOutput> {
    let mut r = Reader { b: data };
    let tag = r.u8("message tag")?;
    let xid = |r: &mut Reader| -> R<Option<u32>> {
        if in_stream {
            Ok(Some(r.u32("xid")?))
        } else {
            Ok(None)
        }
    };
    Ok(match tag {
        b'B' => PgOutput::Begin {
            final_lsn: r.u64("final lsn")?,
            commit_time_us: r.i64("commit time")?,
            xid: r.u32("xid")?,
        },
        b'C' => {
            let _flags = r.u8("flags")?;
            PgOutput::Commit {
                commit_lsn: r.u64("commit lsn")?,
                end_lsn: r.u64("end lsn")?,
                commit_time_us: r.i64("commit time")?,
            }
        }
        b'O' => PgOutput::Origin {
            lsn: r.u64("origin lsn")?,
            name: r.cstr("origin name")?,
        },
        b'R' => {
            let xid = xid(&mut r)?;
            let oid = r.u32("relation oid")?;
            let namespace = r.cstr("namespace")?;
            let name = r.cstr("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let n = r.i16("column count")?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = r.u8("column flags")?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.cstr("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("type modifier")?,
                    dims: 0,
                });
            }
            PgOutput::Relation {
                xid,
                relation: Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                },
            }
        }
        b'Y' => PgOutput::Type {
            xid: xid(&mut r)?,
            oid: r.u32("type oid")?,
            namespace: r.cstr("type namespace")?,
            name: r.cstr("type name")?,
        },
        b'I' => {
            let xid = xid(&mut r)?;
            let rel = r.u32("relation oid")?;
            match r.u8("tuple kind")? {
                b'N' => {}
                k => return Err(DecodeError(format!("insert: tuple kind {:?}", k as char))),
            }
            PgOutput::Insert {
                xid,
                rel,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let xid = xid(&mut r)?;
            let rel = r.u32("relation oid")?;
            let mut old = None;
            let new = loop {
                match r.u8("tuple kind")? {
                    k @ (b'K' | b'O') => old = Some((k, r.tuple()?)),
                    b'N' => break r.tuple()?,
                    k => return Err(DecodeError(format!("update: tuple kind {:?}", k as char))),
                }
            };
            PgOutput::Update { xid, rel, old, new }
        }
        b'D' => {
            let xid = xid(&mut r)?;
            let rel = r.u32("relation oid")?;
            let kind = r.u8("tuple kind")?;
            if kind != b'K' && kind != b'O' {
                return Err(DecodeError(format!(
                    "delete: tuple kind {:?}",
                    kind as char
                )));
            }
            PgOutput::Delete {
                xid,
                rel,
                old: (kind, r.tuple()?),
            }
        }
        b'T' => {
            let xid = xid(&mut r)?;
            let n = r.u32("relation count")?;
            let options = r.u8("truncate options")?;
            let mut rels = Vec::with_capacity((n as usize).min(r.b.remaining() / 4));
            for _ in 0..n {
                rels.push(r.u32("relation oid")?);
            }
            PgOutput::Truncate {
                xid,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                rels,
            }
        }
        b'M' => {
            let xid = xid(&mut r)?;
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message lsn")?;
            let prefix = r.cstr("message prefix")?;
            let len = r.u32("message length")?;
            PgOutput::Message {
                xid,
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.bytes(len as usize, "message content")?,
            }
        }
        b'S' => PgOutput::StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first segment")? == 1,
        },
        b'E' => PgOutput::StreamStop,
        b'c' => {
            let xid = r.u32("xid")?;
            let _flags = r.u8("flags")?;
            PgOutput::StreamCommit {
                xid,
                commit_lsn: r.u64("commit lsn")?,
                end_lsn: r.u64("end lsn")?,
                commit_time_us: r.i64("commit time")?,
            }
        }
        b'A' => PgOutput::StreamAbort {
            xid: r.u32("xid")?,
            sub_xid: r.u32("subtransaction xid")?,
        },
        t => return Err(DecodeError(format!("unknown message tag {:?}", t as char))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(v: &mut Vec<u8>, s: &str) {
        v.extend(s.as_bytes());
        v.push(0);
    }

    #[test]
    fn relation_and_insert() {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        cstr(&mut m, "public");
        cstr(&mut m, "t");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        m.push(1);
        cstr(&mut m, "id");
        m.extend(23u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m.push(0);
        cstr(&mut m, "v");
        m.extend(25u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        let PgOutput::Relation { relation, xid } = decode(Bytes::from(m), false).unwrap() else {
            panic!()
        };
        assert_eq!(xid, None);
        assert_eq!(relation.name, "t");
        assert!(relation.columns[0].key && !relation.columns[1].key);

        let mut m = vec![b'I'];
        m.extend(7u32.to_be_bytes()); // streamed: xid first
        m.extend(16384u32.to_be_bytes());
        m.push(b'N');
        m.extend(3i16.to_be_bytes());
        m.push(b't');
        m.extend(1i32.to_be_bytes());
        m.push(b'5');
        m.push(b'n');
        m.push(b'u');
        let got = decode(Bytes::from(m), true).unwrap();
        assert_eq!(
            got,
            PgOutput::Insert {
                xid: Some(7),
                rel: 16384,
                new: vec![
                    Value::Text(Bytes::from_static(b"5")),
                    Value::Null,
                    Value::Unchanged
                ]
            }
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for m in [
            &b"B\x00\x00"[..],
            b"I\x00\x00\x40\x00N\x00\x02t\x00\x00\x00\x09ab",
            b"R\x00",
        ] {
            assert!(decode(Bytes::copy_from_slice(m), false).is_err());
        }
    }
}
