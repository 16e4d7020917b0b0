//! Reading captures: the formats people have, streamed record by record (bounded memory),
//! every error naming the file and the byte offset of the record.
//!
//! A file is, after an optional whole-file `gzip` or `zstd` layer (told by its magic bytes,
//! not by its name):
//! - **OTLP/JSON**: one `Export*ServiceRequest` object after another — JSON lines as the `file`
//!   exporter writes them (sluice's and the Collector's), or pretty-printed objects one after
//!   the other — or one top-level array of them, as SDK file exporters write. Told by its first
//!   byte (`{` or `[`).
//! - **length-prefixed protobuf**: a 4-byte big-endian length, then that many bytes of an
//!   `Export*ServiceRequest` (`format: proto`, or the Collector's `compression: zstd`, which
//!   writes each record so framed and zstd-compressed; such a record may hold JSON).
//!
//! The signal of a JSON record is its top-level key (`resourceSpans`, ...). A protobuf record
//! does not say which signal it is (`TracesData`, `MetricsData` and `LogsData` all start with
//! field 1), so the first item's fields tell: a span has fixed64 start/end times (fields 7, 8),
//! a log record fixed64 times in fields 1 or 11, a metric neither but a data field (5..11).
//!
//! Offsets are byte offsets in the file, or in its decompressed stream for a compressed file
//! (said in the message).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_engine::Payload;
use sluice_engine::otlp::{decode, decode_json};
use sluice_engine::schema::Signal;

/// The largest record read: a capture record is one export request, which OTLP receivers cap
/// at a few MiB; a length prefix above this is corruption (or not a capture), not a record.
/// Below 0x0900_0000, so a length prefix never starts with a whitespace byte and the first
/// byte of a file tells JSON from protobuf.
pub const MAX_RECORD_BYTES: usize = 128 << 20;

/// One decoded record.
#[derive(Debug)]
pub struct Record {
    pub payload: Payload,
    /// Encoded size in the capture (after any per-record decompression).
    pub bytes: usize,
}

/// How a capture file is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Json,
    LengthPrefixed,
}

/// Whole-file compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// A capture that cannot be read, with where.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: offset {offset}{}: {reason}", if *.decompressed { " (decompressed)" } else { "" })]
    Bad {
        file: String,
        offset: u64,
        /// The offset is in the decompressed stream of a gzip/zstd file.
        decompressed: bool,
        reason: String,
        /// The framing itself is lost (the rest of the file cannot be read), as opposed to
        /// one record that could not be decoded.
        fatal: bool,
    },
}

impl CaptureError {
    /// True when reading this file cannot go on past the error (`--skip-bad` then moves to the
    /// next file).
    pub fn is_fatal(&self) -> bool {
        match self {
            CaptureError::Io { .. } => true,
            CaptureError::Bad { fatal, .. } => *fatal,
        }
    }
}

/// Counts bytes read, for offsets.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Counts what is read from a file into a counter shared with the progress bar.
struct DiskCounting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for DiskCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads the records of one capture file.
pub struct FileReader {
    name: String,
    input: BufReader<Counting<Box<dyn Read + Send>>>,
    pub framing: Framing,
    pub compression: Compression,
    /// JSON: inside a top-level array.
    in_array: bool,
    /// Nothing more to read (end, or a fatal error).
    done: bool,
    /// Reused record buffer.
    buf: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl FileReader {
    /// Opens a capture file, adding the bytes read from it (compressed, as on disk) to
    /// `disk_read`: a progress bar's position against the files' sizes.
    pub fn open(path: &Path, disk_read: Arc<AtomicU64>) -> Result<FileReader, CaptureError> {
        let name = path.display().to_string();
        let io_err = |source| CaptureError::Io {
            file: name.clone(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        Self::from_reader(
            name.clone(),
            Box::new(DiskCounting {
                inner: file,
                read: disk_read,
            }),
        )
    }

    /// A reader over any byte stream (`name` is what errors call it).
    pub fn from_reader(
        name: String,
        raw: Box<dyn Read + Send>,
    ) -> Result<FileReader, CaptureError> {
        let io_err = |source| CaptureError::Io {
            file: name.clone(),
            source,
        };
        let mut raw = BufReader::with_capacity(1 << 16, raw);
        let head = raw.fill_buf().map_err(io_err)?;
        let (compression, stream): (Compression, Box<dyn Read + Send>) =
            if head.starts_with(&GZIP_MAGIC) {
                (
                    Compression::Gzip,
                    Box::new(flate2::read::MultiGzDecoder::new(raw)),
                )
            } else if head.starts_with(&ZSTD_MAGIC) {
                let d = zstd::stream::read::Decoder::with_buffer(raw).map_err(io_err)?;
                (Compression::Zstd, Box::new(d))
            } else {
                (Compression::None, Box::new(raw))
            };
        let mut input = BufReader::with_capacity(
            1 << 16,
            Counting {
                inner: stream,
                pos: 0,
            },
        );
        let framing = loop {
            let head = input.fill_buf().map_err(|source| CaptureError::Io {
                file: name.clone(),
                source,
            })?;
            match head.first() {
                None => break Framing::Json, // empty: no records either way
                Some(b) if b.is_ascii_whitespace() => {
                    // Blank lines before JSON. A length prefix never starts with one of these
                    // bytes: it would declare more than MAX_RECORD_BYTES.
                    input.consume(1);
                }
                Some(b'{') | Some(b'[') => break Framing::Json,
                Some(_) => break Framing::LengthPrefixed,
            }
        };
        Ok(FileReader {
            name,
            input,
            framing,
            compression,
            in_array: false,
            done: false,
            buf: Vec::new(),
        })
    }

    /// Bytes of the (decompressed) stream read so far.
    pub fn position(&self) -> u64 {
        self.input.get_ref().pos - self.input.buffer().len() as u64
    }

    fn bad(&mut self, offset: u64, reason: impl Into<String>, fatal: bool) -> CaptureError {
        if fatal {
            self.done = true;
        }
        CaptureError::Bad {
            file: self.name.clone(),
            offset,
            decompressed: self.compression != Compression::None,
            reason: reason.into(),
            fatal,
        }
    }

    fn io(&mut self, source: io::Error) -> CaptureError {
        self.done = true;
        let offset = self.position();
        match source.kind() {
            // A damaged gzip/zstd stream reports itself as invalid data.
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => self
                .bad(
                    offset,
                    format!("cannot decompress ({}): {source}", self.compression),
                    true,
                ),
            io::ErrorKind::UnexpectedEof => self.bad(
                offset,
                format!(
                    "the {} stream ends early (truncated file)",
                    self.compression
                ),
                true,
            ),
            _ => CaptureError::Io {
                file: self.name.clone(),
                source,
            },
        }
    }

    /// The next record; `None` at the end. After a non-fatal error the next call reads on.
    pub fn next_record(&mut self) -> Option<Result<Record, CaptureError>> {
        if self.done {
            return None;
        }
        let r = match self.framing {
            Framing::LengthPrefixed => self.next_prefixed(),
            Framing::Json => self.next_json(),
        };
        match r {
            Ok(None) => {
                self.done = true;
                None
            }
            Ok(Some(rec)) => Some(Ok(rec)),
            Err(e) => Some(Err(e)),
        }
    }

    fn next_prefixed(&mut self) -> Result<Option<Record>, CaptureError> {
        loop {
            let offset = self.position();
            let mut len = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match self.input.read(&mut len[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.io(e)),
                }
            }
            if got == 0 {
                return Ok(None);
            }
            if got < 4 {
                return Err(self.bad(
                    offset,
                    format!(
                        "truncated: the file ends inside a record's 4-byte length ({got} byte(s))"
                    ),
                    true,
                ));
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_RECORD_BYTES {
                return Err(self.bad(
                    offset,
                    format!(
                        "not a capture, or corrupt: the length prefix says {n} bytes (limit {MAX_RECORD_BYTES}); expected OTLP/JSON (first byte '{{' or '[') or 4-byte big-endian length-prefixed OTLP protobuf"
                    ),
                    true,
                ));
            }
            self.buf.clear();
            let read = (&mut self.input)
                .take(n as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| self.io(e))?;
            if read < n {
                return Err(self.bad(
                    offset,
                    format!("truncated: the record declares {n} bytes, the file ends after {read}"),
                    true,
                ));
            }
            if n == 0 {
                continue; // an empty request: nothing to replay
            }
            let mut body = std::mem::take(&mut self.buf);
            if body.starts_with(&ZSTD_MAGIC) {
                // The Collector's `compression: zstd`: each record compressed on its own.
                let mut out = Vec::new();
                let res = zstd::stream::read::Decoder::new(body.as_slice())
                    .and_then(|d| d.take(MAX_RECORD_BYTES as u64 + 1).read_to_end(&mut out));
                if let Err(e) = res {
                    self.buf = body;
                    return Err(self.bad(
                        offset,
                        format!("cannot decompress the zstd record: {e}"),
                        false,
                    ));
                }
                if out.len() > MAX_RECORD_BYTES {
                    self.buf = body;
                    return Err(self.bad(
                        offset,
                        format!("the record decompresses to more than {MAX_RECORD_BYTES} bytes"),
                        false,
                    ));
                }
                body = out;
            }
            let decoded = if body.first() == Some(&b'{') {
                json_signal(&body)
                    .ok_or_else(|| {
                        "a JSON record with none of resourceSpans, resourceMetrics, resourceLogs"
                            .to_string()
                    })
                    .and_then(|s| decode_json(s, &body).map_err(|e| e.to_string()))
            } else {
                match sniff_proto_signal(&body) {
                    Sniffed::Signal(s) => decode(s, &body)
                        .map_err(|e| format!("invalid OTLP {} protobuf: {e}", s.as_str())),
                    Sniffed::Empty => {
                        self.buf = body;
                        continue; // no items: nothing to replay
                    }
                    Sniffed::Unknown(why) => Err(format!("not an OTLP export request: {why}")),
                }
            };
            let bytes = body.len();
            self.buf = body;
            return match decoded {
                Ok(payload) => Ok(Some(Record { payload, bytes })),
                Err(reason) => Err(self.bad(offset, reason, false)),
            };
        }
    }

    /// Skips whitespace and, in an array, the commas between elements; returns the next
    /// significant byte without consuming it.
    fn peek_significant(&mut self) -> Result<Option<u8>, CaptureError> {
        loop {
            let head = match self.input.fill_buf() {
                Ok(h) => h,
                Err(e) => return Err(self.io(e)),
            };
            let Some(&b) = head.first() else {
                return Ok(None);
            };
            if b.is_ascii_whitespace() || (self.in_array && b == b',') {
                self.input.consume(1);
                continue;
            }
            return Ok(Some(b));
        }
    }

    fn next_json(&mut self) -> Result<Option<Record>, CaptureError> {
        loop {
            let next = self.peek_significant()?;
            // After the whitespace (and array commas) skipped: where the record starts.
            let offset = self.position();
            match next {
                None => {
                    if self.in_array {
                        return Err(self.bad(
                            offset,
                            "truncated: the file ends inside the top-level array (no closing ']')",
                            true,
                        ));
                    }
                    return Ok(None);
                }
                Some(b'[') if !self.in_array => {
                    self.in_array = true;
                    self.input.consume(1);
                    continue;
                }
                Some(b']') if self.in_array => {
                    self.in_array = false;
                    self.input.consume(1);
                    continue;
                }
                Some(b'{') => {}
                Some(b) => {
                    let reason = format!(
                        "expected an OTLP/JSON object ('{{'), found {}",
                        describe_byte(b)
                    );
                    // Resynchronize at the next line (JSON lines): the caller decides
                    // whether to go on.
                    self.skip_line();
                    return Err(self.bad(offset, reason, false));
                }
            }
            let (len, first_key) = match self.read_object(offset)? {
                Some(x) => x,
                None => continue,
            };
            let body = std::mem::take(&mut self.buf);
            let decoded = match first_key.as_deref().and_then(signal_of_key) {
                Some(s) => decode_json(s, &body[..len]).map_err(|e| e.to_string()),
                None if first_key.is_none() => {
                    self.buf = body;
                    continue; // `{}`: an empty request
                }
                None => Err(format!(
                    "not an OTLP export request: its first key is {:?}, expected resourceSpans, resourceMetrics or resourceLogs",
                    first_key.unwrap_or_default()
                )),
            };
            self.buf = body;
            return match decoded {
                Ok(payload) => Ok(Some(Record {
                    payload,
                    bytes: len,
                })),
                Err(reason) => Err(self.bad(offset, reason, false)),
            };
        }
    }

    fn skip_line(&mut self) {
        let mut sink = Vec::new();
        let _ = (&mut self.input)
            .take(MAX_RECORD_BYTES as u64)
            .read_until(b'\n', &mut sink);
    }

    /// Reads one JSON object (the next byte is `{`) into `self.buf`, tracking strings and
    /// nesting; returns its length and its first top-level key. `None` after a non-fatal
    /// oversize skip is never returned: errors are.
    fn read_object(
        &mut self,
        offset: u64,
    ) -> Result<Option<(usize, Option<String>)>, CaptureError> {
        self.buf.clear();
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        // First key at depth 1: collecting while `key` is Some and the string is open.
        let mut first_key: Option<String> = None;
        let mut key_done = false;
        let mut collecting = false;
        let mut expect_key = false;
        loop {
            let head = match self.input.fill_buf() {
                Ok(h) => h,
                Err(e) => return Err(self.io(e)),
            };
            if head.is_empty() {
                return Err(self.bad(
                    offset,
                    format!("truncated: the file ends inside the JSON record that starts here ({} bytes read)", self.buf.len()),
                    true,
                ));
            }
            let mut used = 0;
            let mut end = None;
            for (i, &b) in head.iter().enumerate() {
                used = i + 1;
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if collecting {
                            collecting = false;
                            key_done = true;
                        }
                        continue;
                    }
                    if collecting && let Some(k) = first_key.as_mut() {
                        k.push(b as char);
                    }
                    continue;
                }
                match b {
                    b'"' => {
                        in_string = true;
                        if depth == 1 && expect_key && !key_done {
                            collecting = true;
                            first_key = Some(String::new());
                        }
                        expect_key = false;
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        expect_key = depth == 1 && b == b'{';
                    }
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            self.buf.extend_from_slice(&head[..used]);
            self.input.consume(used);
            if end.is_some() {
                return Ok(Some((self.buf.len(), first_key)));
            }
            if self.buf.len() > MAX_RECORD_BYTES {
                return Err(self.bad(
                    offset,
                    format!("a JSON record larger than {MAX_RECORD_BYTES} bytes (corrupt, or not a capture)"),
                    true,
                ));
            }
        }
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

fn signal_of_key(key: &str) -> Option<Signal> {
    match key {
        "resourceSpans" | "resource_spans" => Some(Signal::Traces),
        "resourceMetrics" | "resource_metrics" => Some(Signal::Metrics),
        "resourceLogs" | "resource_logs" => Some(Signal::Logs),
        _ => None,
    }
}

/// The signal of a JSON record whose bytes are all at hand (a length-prefixed JSON record).
fn json_signal(body: &[u8]) -> Option<Signal> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.as_object()?.keys().find_map(|k| signal_of_key(k))
}

/// What the first item of a protobuf export request says about its signal.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    Signal(Signal),
    /// No item at all (nothing to replay).
    Empty,
    Unknown(String),
}

/// A protobuf field: (number, wire type, value or sub-message bytes).
type Field<'a> = (u64, u8, &'a [u8]);

/// A message's protobuf fields.
fn fields(mut b: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (key, n) = varint(b).ok_or("a truncated field key")?;
        b = &b[n..];
        let (num, wt) = (key >> 3, (key & 7) as u8);
        if num == 0 {
            return Err("field number 0".into());
        }
        let len = match wt {
            0 => varint(b).ok_or("a truncated varint")?.1,
            1 => 8,
            5 => 4,
            2 => {
                let (l, n) = varint(b).ok_or("a truncated length")?;
                b = &b[n..];
                usize::try_from(l).map_err(|_| "a length past the end")?
            }
            _ => return Err(format!("wire type {wt} (field {num})")),
        };
        if len > b.len() {
            return Err(format!("field {num} runs past the end"));
        }
        out.push((num, wt, &b[..len]));
        b = &b[len..];
    }
    Ok(out)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Which signal one item's fields say it is, if they say (fields only one of a span, a
/// metric or a log record can have with that number and wire type).
fn item_signal(f: &[(u64, u8, &[u8])]) -> Option<Signal> {
    let has = |n: u64, w: u8| f.iter().any(|x| x.0 == n && x.1 == w);
    let len_of = |n: u64| f.iter().find(|x| x.0 == n && x.1 == 2).map(|x| x.2.len());
    // Span: start/end (fixed64 7, 8), kind (varint 6), dropped attributes (varint 10),
    // flags (fixed32 16), parent span id (4), links (13), status (15).
    let span = has(7, 1)
        || has(8, 1)
        || has(6, 0)
        || has(10, 0)
        || has(16, 5)
        || has(4, 2)
        || has(13, 2)
        || has(15, 2);
    // Weaker: a span id of 8 bytes (2) beside a trace id of 16 (1) — also what a metric whose
    // name has 16 characters and its description 8 looks like.
    let span_ids = len_of(2) == Some(8) && len_of(1) == Some(16);
    // Log record: time and observed time (fixed64 1, 11), severity (varint 2), dropped
    // attributes (varint 7), flags (fixed32 8), attributes (6).
    let log = has(1, 1) || has(11, 1) || has(2, 0) || has(7, 0) || has(8, 5) || has(6, 2);
    // Metric: a sum (7 as a message), or a name (1 as a string: a span's field 1 is a 16-byte
    // trace id, a log record's a fixed64). A 16-byte trace id that is valid UTF-8 as well is
    // rare (random bytes), and a span without times rarer still: the name wins over the ids.
    let metric = has(7, 2)
        || f.iter()
            .any(|x| x.0 == 1 && x.1 == 2 && (x.2.len() != 16 || std::str::from_utf8(x.2).is_ok()));
    if span {
        Some(Signal::Traces)
    } else if log {
        Some(Signal::Logs)
    } else if metric {
        Some(Signal::Metrics)
    } else if span_ids {
        Some(Signal::Traces)
    } else {
        None
    }
}

/// Tells the signal of a protobuf export request from its items' fields (the request itself
/// does not say: `TracesData`, `MetricsData` and `LogsData` all hold field 1).
pub fn sniff_proto_signal(body: &[u8]) -> Sniffed {
    let top = match fields(body) {
        Ok(f) => f,
        Err(e) => return Sniffed::Unknown(e),
    };
    let mut items = 0usize;
    for (num, wt, resource) in top {
        if num != 1 || wt != 2 {
            continue;
        }
        let Ok(res_fields) = fields(resource) else {
            return Sniffed::Unknown("a resource entry that is not a message".into());
        };
        for (num, wt, scope) in res_fields {
            if num != 2 || wt != 2 {
                continue;
            }
            let Ok(scope_fields) = fields(scope) else {
                return Sniffed::Unknown("a scope entry that is not a message".into());
            };
            for (num, wt, item) in scope_fields {
                if num != 2 || wt != 2 {
                    continue;
                }
                items += 1;
                let Ok(item_fields) = fields(item) else {
                    return Sniffed::Unknown("an item that is not a message".into());
                };
                if let Some(s) = item_signal(&item_fields) {
                    return Sniffed::Signal(s);
                }
            }
        }
    }
    if items == 0 {
        Sniffed::Empty
    } else {
        Sniffed::Unknown(format!(
            "none of its {items} item(s) has a field that tells a span, a metric or a log record apart"
        ))
    }
}

/// The files of a capture in order, each read to its end before the next.
pub struct Capture {
    paths: Vec<PathBuf>,
    next_file: usize,
    current: Option<FileReader>,
    /// Bytes read from the files so far, as on disk (compressed for compressed files).
    disk_read: Arc<AtomicU64>,
}

impl Capture {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Capture {
            paths,
            next_file: 0,
            current: None,
            disk_read: Arc::default(),
        }
    }

    /// Bytes read from the capture's files so far, as on disk: against the files' total size,
    /// how far the replay is (read-ahead makes it lead the records handed over by < 128 KiB).
    pub fn disk_bytes_read(&self) -> u64 {
        self.disk_read.load(Ordering::Relaxed)
    }

    /// The next record of the capture; errors name their file. A fatal error ends that file,
    /// the next call goes on with the next file.
    pub fn next_record(&mut self) -> Option<Result<Record, CaptureError>> {
        loop {
            if self.current.is_none() {
                let path = self.paths.get(self.next_file)?.clone();
                self.next_file += 1;
                match FileReader::open(&path, self.disk_read.clone()) {
                    Ok(r) => self.current = Some(r),
                    Err(e) => return Some(Err(e)),
                }
            }
            let r = self.current.as_mut()?;
            match r.next_record() {
                Some(x) => return Some(x),
                None => self.current = None,
            }
        }
    }
}
