//! Segment files: a sequence of self-checking frames, each holding one Arrow IPC stream
//! (schema + one record batch), so that consecutive batches may have different schemas.
//!
//! ```text
//! frame  := magic ("RVN1" | "RVN2") | body_len u32 | crc32(body) u32 | body
//! body   := base_offset u64 | record_count u32 | append_time_ms i64 | meta_len u32
//!           | meta (JSON, may be empty) | Arrow IPC stream bytes
//! ```
//! All integers are little-endian. In an `RVN2` frame the batch's columns whose values are
//! all equal are stored once, as marked one-run `RunEndEncoded` columns, and expanded again
//! on reading (see [`constant`](super::constant)); an `RVN1` frame holds the batch as it was
//! appended. Builds that know only `RVN1` stop at the first `RVN2` frame. A frame is valid
//! only if it is complete and its CRC matches; recovery cuts a segment at its first invalid
//! frame, so a torn write (the process killed in the middle of an append) is never read
//! back.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Magic of a frame holding the batch as appended.
pub(crate) const MAGIC: &[u8; 4] = b"RVN1";
/// Magic of a frame holding the batch with its constant columns compacted.
pub(crate) const MAGIC_COMPACTED: &[u8; 4] = b"RVN2";

fn is_magic(m: &[u8]) -> bool {
    m == MAGIC || m == MAGIC_COMPACTED
}

pub(crate) const PREFIX_LEN: u64 = 12;
const BODY_FIXED: usize = 24;
/// Upper bound on one frame's body, to reject garbage lengths before allocating.
const MAX_BODY: u32 = 1 << 30;

/// Where one frame is, and what it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameEntry {
    pub offset: u64,
    pub count: u32,
    pub pos: u64,
    pub len: u32,
    pub append_time_ms: i64,
}

impl FrameEntry {
    pub fn end_offset(&self) -> u64 {
        self.offset + u64::from(self.count)
    }
}

/// One segment file and the index of its frames.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    pub frames: Vec<FrameEntry>,
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Encode a batch as an Arrow IPC stream.
#[cfg(test)]
pub(crate) fn encode_ipc(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    write_ipc(&mut buf, batch)?;
    Ok(buf)
}

fn write_ipc(buf: &mut Vec<u8>, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
    let mut w = StreamWriter::try_new(buf, &batch.schema())?;
    w.write(batch)?;
    w.finish()
}

/// Frame buffers are reused: a fresh multi-megabyte allocation per frame costs more in
/// page faults (the kernel zeroing new pages) than encoding the batch.
static BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const POOLED_BUFFERS: usize = 4;

fn take_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = BUFFERS
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_default();
    buf.clear();
    buf.reserve(capacity);
    buf
}

/// Return a frame buffer for reuse.
pub(crate) fn recycle(buf: Vec<u8>) {
    if let Ok(mut pool) = BUFFERS.lock() {
        if pool.len() < POOLED_BUFFERS {
            pool.push(buf);
        }
    }
}

/// A frame encoded up to its offset and checksum (see [`seal_frame`]).
pub(crate) struct PreparedFrame(Vec<u8>);

impl PreparedFrame {
    /// The frame's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Encode a frame's body in place (header fields, `meta`, the batch as Arrow IPC), leaving
/// the base offset and the checksum, which are known only under the partition lock.
pub(crate) fn prepare_frame(
    batch: &RecordBatch,
    count: u32,
    ts: i64,
    meta: &[u8],
) -> Result<PreparedFrame, arrow::error::ArrowError> {
    let mut f = take_buffer(
        PREFIX_LEN as usize + BODY_FIXED + meta.len() + batch.get_array_memory_size() + 1024,
    );
    let compacted = super::constant::compact(batch)?;
    f.extend_from_slice(if compacted.is_some() {
        MAGIC_COMPACTED
    } else {
        MAGIC
    });
    f.extend_from_slice(&[0; 4]); // body length
    f.extend_from_slice(&[0; 4]); // crc
    f.extend_from_slice(&[0; 8]); // base offset
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&ts.to_le_bytes());
    f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(meta);
    write_ipc(&mut f, compacted.as_ref().unwrap_or(batch))?;
    let body_len = (f.len() - PREFIX_LEN as usize) as u32;
    f[4..8].copy_from_slice(&body_len.to_le_bytes());
    Ok(PreparedFrame(f))
}

/// Complete a prepared frame with its base offset and checksum.
pub(crate) fn seal_frame(frame: PreparedFrame, base_offset: u64) -> Vec<u8> {
    let mut f = frame.0;
    let p = PREFIX_LEN as usize;
    f[p..p + 8].copy_from_slice(&base_offset.to_le_bytes());
    let crc = crc32fast::hash(&f[p..]);
    f[8..12].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Build a complete frame (prefix + body).
#[cfg(test)]
pub(crate) fn encode_frame(
    base_offset: u64,
    count: u32,
    ts: i64,
    meta: &[u8],
    ipc: &[u8],
) -> Vec<u8> {
    let body_len = BODY_FIXED + meta.len() + ipc.len();
    let mut f = Vec::with_capacity(PREFIX_LEN as usize + body_len);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&(body_len as u32).to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&base_offset.to_le_bytes());
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&ts.to_le_bytes());
    f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(meta);
    f.extend_from_slice(ipc);
    let crc = crc32fast::hash(&f[PREFIX_LEN as usize..]);
    f[8..12].copy_from_slice(&crc.to_le_bytes());
    f
}

/// A decoded frame body.
pub(crate) struct FrameBody<'a> {
    pub offset: u64,
    pub count: u32,
    pub append_time_ms: i64,
    pub meta: &'a [u8],
    pub ipc: &'a [u8],
}

fn parse_body(body: &[u8]) -> Option<FrameBody<'_>> {
    if body.len() < BODY_FIXED {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().unwrap_or([0; 4]));
    let meta_len = u32_at(20) as usize;
    if BODY_FIXED + meta_len > body.len() {
        return None;
    }
    Some(FrameBody {
        offset: u64_at(0),
        count: u32_at(8),
        append_time_ms: u64_at(12) as i64,
        meta: &body[BODY_FIXED..BODY_FIXED + meta_len],
        ipc: &body[BODY_FIXED + meta_len..],
    })
}

/// A frame read from disk, in a reused buffer (see [`recycle`]).
pub(crate) struct ReadFrame(Vec<u8>);

impl ReadFrame {
    /// Decode the verified frame into its (single) record batch.
    pub(crate) fn decode(&self) -> Result<(FrameBody<'_>, RecordBatch), String> {
        decode_frame(&self.0)
    }

    /// Give the buffer back for reuse.
    pub(crate) fn recycle(self) {
        recycle(self.0);
    }
}

/// Read and verify the frame at `entry`.
pub(crate) fn read_frame(file: &File, entry: &FrameEntry) -> io::Result<ReadFrame> {
    let mut buf = take_buffer(entry.len as usize);
    buf.resize(entry.len as usize, 0);
    file.read_exact_at(&mut buf, entry.pos)?;
    if buf.len() < PREFIX_LEN as usize || !is_magic(&buf[..4]) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad frame magic",
        ));
    }
    let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if crc32fast::hash(&buf[PREFIX_LEN as usize..]) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame checksum mismatch",
        ));
    }
    Ok(ReadFrame(buf))
}

/// Decode a verified frame (prefix and body) into its (single) record batch.
pub(crate) fn decode_frame(frame: &[u8]) -> Result<(FrameBody<'_>, RecordBatch), String> {
    let fb = parse_body(&frame[PREFIX_LEN as usize..]).ok_or("truncated frame body")?;
    let mut reader = StreamReader::try_new(fb.ipc, None).map_err(|e| e.to_string())?;
    let batch = reader
        .next()
        .ok_or("frame holds no record batch")?
        .map_err(|e| e.to_string())?;
    let batch = if &frame[..4] == MAGIC_COMPACTED {
        super::constant::expand(batch).map_err(|e| e.to_string())?
    } else {
        batch
    };
    Ok((fb, batch))
}

/// What scanning a segment found.
pub(crate) struct Scan {
    pub segment: Segment,
    /// `(meta bytes)` of every frame with non-empty meta, in order.
    pub metas: Vec<Vec<u8>>,
    /// Bytes cut from the end (a torn or corrupt tail); only allowed on the last segment.
    pub truncated: u64,
}

/// Open a segment and index its frames. With `verify`, every frame's CRC is checked and the
/// file is cut at the first invalid frame (used for the last, active segment, the only one
/// a crash can tear); otherwise frame headers are read and an invalid frame is an error.
pub(crate) fn scan_segment(path: &Path, base: u64, verify: bool) -> io::Result<Scan> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 16, &file);
    let mut pos = 0u64;
    let mut frames = Vec::new();
    let mut metas = Vec::new();
    let mut expected = base;
    let mut valid_end = 0u64;
    loop {
        if pos + PREFIX_LEN > file_len {
            break;
        }
        let mut prefix = [0u8; PREFIX_LEN as usize];
        r.read_exact(&mut prefix)?;
        let body_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        if !is_magic(&prefix[..4])
            || body_len > MAX_BODY
            || pos + PREFIX_LEN + u64::from(body_len) > file_len
        {
            break;
        }
        let crc = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        let (offset, count, ts, meta);
        if verify {
            let mut body = vec![0u8; body_len as usize];
            r.read_exact(&mut body)?;
            if crc32fast::hash(&body) != crc {
                break;
            }
            let Some(fb) = parse_body(&body) else { break };
            (offset, count, ts, meta) = (fb.offset, fb.count, fb.append_time_ms, fb.meta.to_vec());
        } else {
            let mut fixed = [0u8; BODY_FIXED];
            r.read_exact(&mut fixed)?;
            let meta_len =
                u32::from_le_bytes([fixed[20], fixed[21], fixed[22], fixed[23]]) as usize;
            if BODY_FIXED + meta_len > body_len as usize {
                break;
            }
            let mut m = vec![0u8; meta_len];
            r.read_exact(&mut m)?;
            r.seek_relative(i64::from(body_len) - (BODY_FIXED + meta_len) as i64)?;
            offset = u64::from_le_bytes(fixed[0..8].try_into().unwrap_or([0; 8]));
            count = u32::from_le_bytes(fixed[8..12].try_into().unwrap_or([0; 4]));
            ts = u64::from_le_bytes(fixed[12..20].try_into().unwrap_or([0; 8])) as i64;
            meta = m;
        }
        if offset != expected {
            break;
        }
        let len = PREFIX_LEN as u32 + body_len;
        frames.push(FrameEntry {
            offset,
            count,
            pos,
            len,
            append_time_ms: ts,
        });
        if !meta.is_empty() {
            metas.push(meta);
        }
        expected = offset + u64::from(count);
        pos += u64::from(len);
        valid_end = pos;
    }
    drop(r);
    let truncated = file_len - valid_end;
    if truncated > 0 {
        if !verify {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: invalid frame at byte {valid_end} in a sealed segment",
                    path.display()
                ),
            ));
        }
        file.set_len(valid_end)?;
        file.sync_all()?;
    }
    let mut file = file;
    file.seek(SeekFrom::Start(valid_end))?;
    Ok(Scan {
        segment: Segment {
            base,
            path: path.to_owned(),
            file: Arc::new(file),
            size: valid_end,
            frames,
        },
        metas,
        truncated,
    })
}

/// Create an empty segment file.
pub(crate) fn create_segment(dir: &Path, base: u64) -> io::Result<Segment> {
    let path = segment_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    crate::topic::fsutil::sync_dir(dir)?;
    let size = file.metadata()?.len();
    Ok(Segment {
        base,
        path,
        file: Arc::new(file),
        size,
        frames: Vec::new(),
    })
}
