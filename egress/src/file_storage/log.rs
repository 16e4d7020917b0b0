//! The segment log under one persistent sending queue (one exporter, one signal).
//!
//! A directory of append-only segment files, each with a side file of acknowledgements:
//!
//! ```text
//! <queue dir>/lock                       held (flock) while a process uses the queue
//! <queue dir>/00000000000000000007.seg   header, then records
//! <queue dir>/00000000000000000007.ack   indexes (u32 LE) of the records delivered
//! ```
//!
//! - Segment header, 16 bytes: the magic `SLUICEQ\0`, the format version (u32 LE, now 1), and
//!   four reserved bytes (0). A reader refuses a version it does not know rather than guess.
//! - Record: body length (u32 LE), CRC-32 (IEEE) of the body (u32 LE), the body. The body is
//!   opaque here; the queue frames it (see `super::encode_record`).
//! - A record is written with `write(2)` before `append` returns: it survives the process
//!   being killed at any moment (the page cache belongs to the kernel). With `fsync` it is
//!   also on the device before the queue acknowledges it: it survives the machine losing
//!   power. Concurrent writers share one `fdatasync` (group commit: [`SegmentLog::sync`]).
//! - On open, a record whose length runs past the end of its file or whose checksum does not
//!   match — a write torn by a crash, or damage — ends the readable part of that segment: it
//!   and anything after it are skipped and counted (`Opened::corrupt_records`).
//! - A record is acknowledged by appending its index to the segment's `.ack` file (no fsync:
//!   an acknowledgement lost in a power failure means the record is sent again — at least
//!   once). A segment that is no longer written to and whose records are all acknowledged is
//!   deleted, with its `.ack` file.
//! - Writes go to the newest segment until it holds `segment_bytes`; then a new one starts.
//!   A process never appends to a segment it did not create: after a restart the old
//!   segments are only read (replayed) and deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SLUICEQ\0";
/// The segment format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const RECORD_HEADER_LEN: usize = 8;
/// A length field over this is damage, not a record (a request is at most a few MiB, and a
/// body of 1 GiB could not have been encoded in memory either).
pub const MAX_RECORD_LEN: usize = 1 << 30;
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the persistent queue is full: {stored} bytes stored, {need} more would pass its limit of {limit} bytes"
    )]
    Full { stored: u64, need: u64, limit: u64 },
    #[error(
        "{} is in use by another process (still locked after {waited:?}; file_storage timeout)",
        path.display()
    )]
    Locked { path: PathBuf, waited: Duration },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a record is: its segment and its index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub segment: u64,
    pub index: u32,
}

#[derive(Clone, Debug)]
pub struct LogOptions {
    /// `fdatasync` before a write is acknowledged ([`SegmentLog::sync`]).
    pub fsync: bool,
    /// The most the segments may hold, in bytes; an append past it is refused. A record is
    /// taken into an empty log whatever its size, so no record can be refused forever.
    pub max_bytes: u64,
    /// A new segment starts once the newest holds this many bytes.
    pub segment_bytes: u64,
    /// How long to wait for another process to release the queue's lock.
    pub lock_timeout: Duration,
}

/// What [`SegmentLog::open`] found on disk.
#[derive(Debug, Default)]
pub struct Opened {
    /// Segments with records not yet acknowledged, oldest first: read them with
    /// [`SegmentLog::read_segment`].
    pub segments: Vec<u64>,
    /// Records not yet acknowledged.
    pub pending_records: u64,
    /// Records skipped: torn at the tail by a crash, or failing their checksum.
    pub corrupt_records: u64,
    /// Segments whose header is not one this build reads (another format version): left on
    /// disk, not replayed.
    pub unreadable_segments: u64,
}

struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
}

struct Segment {
    records: u32,
    acked: u32,
    /// The file's length, header included.
    bytes: u64,
    /// No longer written to: deleted once every record is acknowledged.
    sealed: bool,
    ack_file: Option<File>,
}

struct State {
    active: Option<Active>,
    segments: BTreeMap<u64, Segment>,
    next_id: u64,
    /// Bytes of all segment files.
    bytes: u64,
    /// Appends so far: a write's sequence number, for group commit.
    written: u64,
}

/// One queue's segment log. See the module documentation.
pub struct SegmentLog {
    dir: PathBuf,
    options: LogOptions,
    state: Mutex<State>,
    /// Group commit: the highest write sequence known to be on the device.
    synced: tokio::sync::Mutex<u64>,
    /// Held for the log's life; the kernel releases it when the process dies.
    _lock: File,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn ack_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.ack"))
}

fn segment_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// The records of a segment file's contents, up to the first damaged one; and whether one was
/// damaged (or the header unreadable). Offsets are of the bodies.
pub fn parse_segment(data: &[u8]) -> (Vec<(usize, usize)>, bool) {
    if !readable_header(data) {
        return (Vec::new(), true);
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    while at < data.len() {
        let Some(header) = data.get(at..at + RECORD_HEADER_LEN) else {
            return (records, true);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + RECORD_HEADER_LEN;
        let Some(body) = (len <= MAX_RECORD_LEN)
            .then(|| data.get(start..start + len))
            .flatten()
        else {
            return (records, true);
        };
        if crc32fast::hash(body) != crc {
            return (records, true);
        }
        records.push((start, len));
        at = start + len;
    }
    (records, false)
}

/// Whether `data` starts with the header of a segment this build reads.
fn readable_header(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN as usize
        && &data[..8] == SEGMENT_MAGIC
        && data[8..12] == FORMAT_VERSION.to_le_bytes()
}

/// The record indexes in an `.ack` file's contents (a torn last entry is ignored: at worst
/// that record is sent again).
fn parse_acks(data: &[u8]) -> BTreeSet<u32> {
    data.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_if_exists(path: &Path) -> Result<Vec<u8>, StorageError> {
    match fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

/// Makes a new directory entry durable (a new segment file, a deletion).
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

impl SegmentLog {
    /// Opens (creating it if needed) the queue directory `dir`: takes its lock, reads what is
    /// there, deletes what is fully acknowledged, and reports what is left to replay.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(SegmentLog, Opened), StorageError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        let started = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if started.elapsed() < options.lock_timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StorageError::Locked {
                        path: dir.to_path_buf(),
                        waited: started.elapsed(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
            }
        }
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut opened = Opened::default();
        let mut segments = BTreeMap::new();
        let mut bytes = 0;
        for &id in &ids {
            let path = segment_path(dir, id);
            let data = fs::read(&path).map_err(io_at(&path))?;
            if data.len() >= HEADER_LEN as usize && !readable_header(&data) {
                // Another format (a newer sluice wrote it, or not a segment at all): left on
                // disk untouched for whoever can read it, never replayed or deleted here.
                opened.unreadable_segments += 1;
                tracing::error!(segment = %path.display(), "persistent queue: a segment in a format this build does not read (written by another sluice version?); left in place, not replayed");
                continue;
            }
            let (records, damaged) = parse_segment(&data);
            // (A file shorter than its header was torn while being created: it held no record.)
            if damaged && data.len() >= HEADER_LEN as usize {
                opened.corrupt_records += 1;
                tracing::error!(segment = %path.display(), readable_records = records.len(), "persistent queue: a damaged or torn record (a crash mid-write, or a format this build does not read); it and what follows it in the segment are skipped");
            }
            let acks = parse_acks(&read_if_exists(&ack_path(dir, id))?);
            let count = records.len() as u32;
            let acked = acks.iter().filter(|&&i| i < count).count() as u32;
            if acked == count {
                remove_if_exists(&path)?;
                remove_if_exists(&ack_path(dir, id))?;
                continue;
            }
            opened.segments.push(id);
            opened.pending_records += u64::from(count - acked);
            bytes += data.len() as u64;
            segments.insert(
                id,
                Segment {
                    records: count,
                    acked,
                    bytes: data.len() as u64,
                    sealed: true,
                    ack_file: None,
                },
            );
        }
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(State {
                active: None,
                segments,
                next_id: ids.last().map_or(0, |l| l + 1),
                bytes,
                written: 0,
            }),
            synced: tokio::sync::Mutex::new(0),
            _lock: lock,
        };
        Ok((log, opened))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes held by the segment files.
    pub fn stored_bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records of segment `id` not yet acknowledged, in order (for replay after open).
    pub fn read_segment(&self, id: u64) -> Result<Vec<(RecordId, Bytes)>, StorageError> {
        let path = segment_path(&self.dir, id);
        let data = Bytes::from(fs::read(&path).map_err(io_at(&path))?);
        let (records, _) = parse_segment(&data);
        let acks = parse_acks(&read_if_exists(&ack_path(&self.dir, id))?);
        Ok(records
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !acks.contains(&(*i as u32)))
            .map(|(i, (start, len))| {
                (
                    RecordId {
                        segment: id,
                        index: i as u32,
                    },
                    data.slice(start..start + len),
                )
            })
            .collect())
    }

    /// Writes one record (to the kernel: it survives the process). Returns where it is and
    /// its write sequence, for [`SegmentLog::sync`].
    pub fn append(&self, body: &[u8]) -> Result<(RecordId, u64), StorageError> {
        let need = (RECORD_HEADER_LEN + body.len()) as u64;
        let mut st = self.lock();
        // The segment being written may hold only delivered records: sealing it deletes it,
        // which may make the room (else a small limit could refuse forever).
        let over = |st: &State| st.bytes > 0 && st.bytes + need > self.options.max_bytes;
        if over(&st)
            && let Some(active) = &st.active
            && st
                .segments
                .get(&active.id)
                .is_some_and(|seg| seg.acked >= seg.records)
        {
            self.seal_active(&mut st)?;
        }
        if over(&st) {
            return Err(StorageError::Full {
                stored: st.bytes,
                need,
                limit: self.options.max_bytes,
            });
        }
        let rotate = st
            .active
            .as_ref()
            .is_none_or(|a| a.len > HEADER_LEN && a.len + need > self.options.segment_bytes);
        if rotate {
            self.seal_active(&mut st)?;
            self.start_segment(&mut st)?;
        }
        let Some(active) = st.active.as_ref() else {
            return Err(io_at(&self.dir)(io::Error::other("no segment open")));
        };
        let (id, file, len) = (active.id, active.file.clone(), active.len);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
        let written = (&*file)
            .write_all(&header)
            .and_then(|()| (&*file).write_all(body));
        let path = segment_path(&self.dir, id);
        if let Err(e) = written {
            // Take the partial record back so later records stay readable; if even that
            // fails, never write to this segment again (its readable part ends here).
            if file.set_len(len).is_err() {
                let _ = self.seal_active(&mut st);
            }
            return Err(io_at(&path)(e));
        }
        let index = {
            let seg = st.segments.get_mut(&id);
            let Some(seg) = seg else {
                return Err(io_at(&path)(io::Error::other("segment missing")));
            };
            seg.records += 1;
            seg.bytes += need;
            seg.records - 1
        };
        if let Some(a) = st.active.as_mut() {
            a.len += need;
        }
        st.bytes += need;
        st.written += 1;
        Ok((RecordId { segment: id, index }, st.written))
    }

    /// With `fsync`, returns once write `seq` is on the device. Writers waiting together share
    /// one `fdatasync`: whoever syncs covers every write made before it started.
    pub async fn sync(&self, seq: u64) -> Result<(), StorageError> {
        if !self.options.fsync {
            return Ok(());
        }
        let mut synced = self.synced.lock().await;
        if *synced >= seq {
            return Ok(());
        }
        // Writes to segments sealed since were synced when they were sealed.
        let (file, upto) = {
            let st = self.lock();
            (st.active.as_ref().map(|a| a.file.clone()), st.written)
        };
        if let Some(file) = file {
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| io_at(&self.dir)(io::Error::other(e)))?
                .map_err(io_at(&self.dir))?;
        }
        *synced = upto;
        Ok(())
    }

    /// The record was delivered (or dropped and counted): it is not replayed again. A sealed
    /// segment whose records are all acknowledged is deleted.
    pub fn ack(&self, id: RecordId) -> Result<(), StorageError> {
        let mut st = self.lock();
        let Some(seg) = st.segments.get_mut(&id.segment) else {
            return Ok(());
        };
        seg.acked += 1;
        if seg.sealed && seg.acked >= seg.records {
            let freed = seg.bytes;
            st.segments.remove(&id.segment);
            st.bytes = st.bytes.saturating_sub(freed);
            drop(st);
            return self.delete_segment(id.segment);
        }
        let path = ack_path(&self.dir, id.segment);
        let file = match &mut seg.ack_file {
            Some(f) => f,
            slot => slot.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_at(&path))?,
            ),
        };
        file.write_all(&id.index.to_le_bytes())
            .map_err(io_at(&path))
    }

    fn delete_segment(&self, id: u64) -> Result<(), StorageError> {
        remove_if_exists(&segment_path(&self.dir, id))?;
        remove_if_exists(&ack_path(&self.dir, id))
    }

    /// Stops writing to the newest segment (synced first with `fsync`, so group commit only
    /// ever needs to sync the newest); deletes it if all its records were acknowledged.
    fn seal_active(&self, st: &mut State) -> Result<(), StorageError> {
        let Some(active) = st.active.take() else {
            return Ok(());
        };
        if self.options.fsync {
            active
                .file
                .sync_data()
                .map_err(io_at(&segment_path(&self.dir, active.id)))?;
        }
        let done = match st.segments.get_mut(&active.id) {
            Some(seg) => {
                seg.sealed = true;
                seg.acked >= seg.records
            }
            None => false,
        };
        if done {
            if let Some(seg) = st.segments.remove(&active.id) {
                st.bytes = st.bytes.saturating_sub(seg.bytes);
            }
            self.delete_segment(active.id)?;
        }
        Ok(())
    }

    fn start_segment(&self, st: &mut State) -> Result<(), StorageError> {
        let id = st.next_id;
        let path = segment_path(&self.dir, id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        file.write_all(&segment_header()).map_err(io_at(&path))?;
        if self.options.fsync {
            file.sync_data().map_err(io_at(&path))?;
            sync_dir(&self.dir)?;
        }
        st.next_id += 1;
        st.bytes += HEADER_LEN;
        st.segments.insert(
            id,
            Segment {
                records: 0,
                acked: 0,
                bytes: HEADER_LEN,
                sealed: false,
                ack_file: None,
            },
        );
        st.active = Some(Active {
            id,
            file: Arc::new(file),
            len: HEADER_LEN,
        });
        Ok(())
    }
}
