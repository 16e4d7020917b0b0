//! The `file_storage` extension (the Collector's `filestorage`) and the persistent sending
//! queue it gives every queued exporter that names it in `sending_queue.storage`.
//!
//! ```yaml
//! extensions:
//!   file_storage:
//!     directory: /var/lib/otelcol/file_storage   # default
//!     fsync: false                               # default; true: on the device before "OK"
//!     create_directory: false                    # default
//! exporters:
//!   otlp:
//!     sending_queue: { storage: file_storage }
//! service:
//!   extensions: [file_storage]
//! ```
//!
//! Each exporter gets one queue directory per signal under `directory`, named as the
//! Collector names its queue files (`exporter_<type>_<name>_<signal>`) plus `.sluice`, so a
//! volume shared with a Collector never mixes the two formats. What is in a queue directory:
//! [`log`]. What a record holds: [`encode_record`].

pub mod log;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, Factory, Kind, Lifecycle,
    ParsedConfig, Service, parse_config,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::health::Health;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Counter, Telemetry};

pub use log::{LogOptions, Opened, RecordId, SegmentLog, StorageError};

/// The extension's config: the Collector's fields and defaults, and sluice's `max_size_mib`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStorageConfig {
    #[serde(default = "default_directory")]
    pub directory: PathBuf,
    /// How long to wait for the lock of a queue directory another process holds.
    #[serde(default = "d1s", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Accepted: the segment log reclaims space by deleting delivered segments whole, so it
    /// never needs the Collector's (bbolt) compaction.
    #[serde(default)]
    pub compaction: CompactionConfig,
    #[serde(default)]
    pub fsync: bool,
    #[serde(default)]
    pub create_directory: bool,
    /// Octal, as the Collector's (used with `create_directory`).
    #[serde(default = "default_permissions")]
    pub directory_permissions: String,
    /// Set aside (rename to `<queue dir>.<unix time>.old`) what a queue directory holds at
    /// start instead of replaying it.
    #[serde(default)]
    pub recreate: bool,
    /// sluice's: the most one queue (one exporter, one signal) may hold on disk, in MiB; past
    /// it the exporter refuses new data (the client retries), as when `queue_size` is reached.
    #[serde(default = "default_max_size_mib")]
    pub max_size_mib: u64,
}

/// The Collector's `compaction` block, accepted so its configs load (see the README).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "accepted so Collector configs load; nothing to compact"
)]
pub struct CompactionConfig {
    on_start: Option<bool>,
    on_rebound: Option<bool>,
    directory: Option<String>,
    max_transaction_size: Option<u64>,
    rebound_needed_threshold_mib: Option<u64>,
    rebound_trigger_threshold_mib: Option<u64>,
    check_interval: Option<String>,
    cleanup_on_start: Option<bool>,
}

fn default_directory() -> PathBuf {
    PathBuf::from("/var/lib/otelcol/file_storage")
}
fn d1s() -> Duration {
    Duration::from_secs(1)
}
fn default_permissions() -> String {
    "0750".into()
}
fn default_max_size_mib() -> u64 {
    1024
}

/// A new segment starts at this size: small enough that a delivered backlog frees its disk
/// soon, large enough that segment files stay few.
const SEGMENT_BYTES: u64 = 8 << 20;

impl FileStorageConfig {
    fn permissions(&self) -> Result<u32, String> {
        u32::from_str_radix(self.directory_permissions.trim_start_matches("0o"), 8)
            .ok()
            .filter(|p| *p <= 0o7777)
            .ok_or_else(|| {
                format!(
                    "{:?}: expected octal permissions such as 0750",
                    self.directory_permissions
                )
            })
    }

    /// The storage directory exists (made, with `create_directory`) and is a directory.
    fn ensure_directory(&self) -> Result<(), String> {
        let dir = &self.directory;
        if dir.is_dir() {
            return Ok(());
        }
        if dir.exists() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if !self.create_directory {
            return Err(format!(
                "directory {} does not exist (create it, or set create_directory: true)",
                dir.display()
            ));
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(self.permissions()?)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))
    }

    fn log_options(&self) -> LogOptions {
        LogOptions {
            fsync: self.fsync,
            max_bytes: self.max_size_mib.saturating_mul(1 << 20),
            // Space is freed a segment at a time: a quarter of a small limit at most.
            segment_bytes: SEGMENT_BYTES.min((self.max_size_mib << 20) / 4),
            lock_timeout: self.timeout,
        }
    }
}

pub struct FileStorageFactory;

impl Factory for FileStorageFactory {
    fn kind(&self) -> Kind {
        Kind::Extension
    }
    fn type_name(&self) -> &'static str {
        "file_storage"
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn description(&self) -> &'static str {
        "persistent sending queues on local disk for exporters that name it in sending_queue.storage"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: FileStorageConfig = parse_config(config)?;
        c.permissions()
            .map_err(|m| ConfigError::new("directory_permissions", m))?;
        if c.max_size_mib == 0 {
            return Err(ConfigError::new("max_size_mib", "must be at least 1"));
        }
        if c.directory.as_os_str().is_empty() {
            return Err(ConfigError::new("directory", "must not be empty"));
        }
        Ok(Arc::new(c))
    }
    fn build_extension(
        &self,
        ctx: BuildContext,
        _: Health,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        Ok(Arc::new(FileStorageExtension {
            id: ctx.id.clone(),
            config: ctx.config::<FileStorageConfig>()?,
        }))
    }
}

/// The extension itself holds nothing: each exporter opens its own queue directories (at
/// its start, which comes before the extensions'); this checks the directory for a
/// `file_storage` no exporter uses yet.
struct FileStorageExtension {
    id: ComponentId,
    config: Arc<FileStorageConfig>,
}

impl Lifecycle for FileStorageExtension {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            self.config
                .ensure_directory()
                .map_err(|m| ComponentError::new(&self.id, m))
        })
    }
}

/// What a record's body starts with: how the rest is encoded. Only one so far.
const BODY_OTLP_PROTOBUF: u8 = 1;

/// Stable codes for the signal in a record (not the enum's order, which may change).
fn signal_code(s: Signal) -> u8 {
    match s {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

/// The record stored for `payload`: `[1][signal]` and the OTLP protobuf export request
/// (`ExportTraceServiceRequest` etc.). OTLP's wire format is stable across versions of
/// sluice and of OpenTelemetry, so a queue written by one sluice is read by the next; the
/// first byte leaves room for another body encoding later. Returns the record and where the
/// request bytes start in it.
pub fn encode_record(payload: &Payload) -> (Vec<u8>, usize) {
    let mut out = vec![BODY_OTLP_PROTOBUF, signal_code(payload.signal())];
    sluice_engine::otlp::encode::encode(payload, &mut out);
    (out, 2)
}

/// The payload of a stored record and its request bytes (a slice of `record`).
pub fn decode_record(signal: Signal, record: &Bytes) -> Result<(Payload, Bytes), String> {
    match record.get(..2) {
        Some([BODY_OTLP_PROTOBUF, s]) if *s == signal_code(signal) => {}
        Some([BODY_OTLP_PROTOBUF, s]) => {
            return Err(format!(
                "record of signal code {s} in the {} queue",
                signal.as_str()
            ));
        }
        Some([e, _]) => return Err(format!("unknown record encoding {e}")),
        _ => return Err("record shorter than its header".into()),
    }
    let body = record.slice(2..);
    // Skimmed, not decoded, when the skim finds it clean (what sluice stores normally is):
    // an exporter that sends the stored bytes as they are never needs the tables, and one
    // that does reads them decoded on first use. Anything unusual (a record written by
    // another version, a damaged one) is decoded, with the decoder's errors.
    if let Some(skim) = sluice_engine::otlp::skim(signal, &body) {
        let form = sluice_engine::payload::WireForm::new(body.clone(), &skim);
        return Ok((Payload::from_wire(signal, form), body));
    }
    let payload = sluice_engine::otlp::decode(signal, &body).map_err(|e| e.to_string())?;
    Ok((payload, body))
}

/// One exporter's persistent queue: a segment log per signal, opened at the exporter's
/// start (what is there is replayed) or on its first payload of a signal.
pub struct QueueStorage {
    exporter: ComponentId,
    config: Arc<FileStorageConfig>,
    logs: [Mutex<Option<Arc<SegmentLog>>>; 3],
    corrupt: Counter,
    telemetry: Telemetry,
}

impl QueueStorage {
    /// The storage `sending_queue.storage` names, if any. The loader has checked that it is an
    /// enabled extension; it must also be a storage extension.
    pub fn for_exporter(
        ctx: &BuildContext,
        storage: Option<&str>,
    ) -> Result<Option<Arc<QueueStorage>>, ComponentError> {
        let Some(name) = storage else {
            return Ok(None);
        };
        let ext = ComponentId::parse(name).map_err(|m| ComponentError::new(&ctx.id, m))?;
        let config = ctx
            .extensions
            .get(&ext)
            .ok_or_else(|| {
                ComponentError::new(
                    &ctx.id,
                    format!("sending_queue.storage: extension {name:?} is not enabled"),
                )
            })?
            .clone()
            .downcast::<FileStorageConfig>()
            .map_err(|_| {
                ComponentError::new(
                    &ctx.id,
                    format!("sending_queue.storage: {name:?} is not a storage extension (sluice has file_storage)"),
                )
            })?;
        Ok(Some(Arc::new(QueueStorage::new(
            &ctx.telemetry,
            ctx.id.clone(),
            config,
        ))))
    }

    pub fn new(
        telemetry: &Telemetry,
        exporter: ComponentId,
        config: Arc<FileStorageConfig>,
    ) -> Self {
        let label = exporter.to_string();
        let corrupt = telemetry.counter(
            "sluice_exporter_queue_storage_corrupt_records",
            "Records of a persistent queue skipped at start: torn by a crash mid-write, failing their checksum, or unreadable",
            &[("exporter", &label)],
        );
        QueueStorage {
            exporter,
            config,
            logs: Default::default(),
            corrupt,
            telemetry: telemetry.clone(),
        }
    }

    pub fn fsync(&self) -> bool {
        self.config.fsync
    }

    /// The extension's `directory`, where every exporter's queue directories are.
    pub fn directory(&self) -> &Path {
        &self.config.directory
    }

    /// The queue directory of `signal`, named as the Collector names the file of the same
    /// queue, plus `.sluice` ([`queue_dir_name`]).
    pub fn queue_dir(&self, signal: Signal) -> PathBuf {
        self.config
            .directory
            .join(queue_dir_name(&self.exporter, signal))
    }

    /// Opens the queue of every signal that has one on disk (blocking: call it off the
    /// runtime's worker threads). Returns each with what is left to replay.
    pub fn open_existing(&self) -> Result<Vec<(Signal, Arc<SegmentLog>, Opened)>, String> {
        self.config.ensure_directory()?;
        let mut out = Vec::new();
        for s in Signal::ALL {
            let dir = self.queue_dir(s);
            if !dir.exists() {
                continue;
            }
            if self.config.recreate {
                set_aside(&dir)?;
                continue;
            }
            let (log, opened) = self.open(s, &dir).map_err(|e| e.to_string())?;
            *self.slot(s) = Some(log.clone());
            out.push((s, log, opened));
        }
        Ok(out)
    }

    fn open(&self, s: Signal, dir: &Path) -> Result<(Arc<SegmentLog>, Opened), StorageError> {
        let (log, opened) = SegmentLog::open(dir, self.config.log_options())?;
        let log = Arc::new(log);
        self.corrupt.add(opened.corrupt_records);
        let gauge_log = Arc::downgrade(&log);
        let label = self.exporter.to_string();
        self.telemetry.gauge_fn(
            "sluice_exporter_queue_storage_bytes",
            "Bytes a persistent sending queue holds on disk",
            &[("exporter", &label), ("signal", s.as_str())],
            move || gauge_log.upgrade().map_or(0.0, |l| l.stored_bytes() as f64),
        );
        Ok((log, opened))
    }

    fn slot(&self, s: Signal) -> std::sync::MutexGuard<'_, Option<Arc<SegmentLog>>> {
        self.logs[signal_code(s) as usize - 1]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The log of `signal` if it is open already.
    pub fn opened(&self, signal: Signal) -> Option<Arc<SegmentLog>> {
        self.slot(signal).clone()
    }

    /// The log of `signal`, opened (and made) on first use (blocking).
    pub fn log(&self, signal: Signal) -> Result<Arc<SegmentLog>, StorageError> {
        // Held while opening: two first payloads of a signal open its queue once.
        let mut slot = self.slot(signal);
        if let Some(log) = slot.as_ref() {
            return Ok(log.clone());
        }
        let dir = self.queue_dir(signal);
        self.config
            .ensure_directory()
            .map_err(|m| StorageError::Io {
                path: self.config.directory.clone(),
                source: std::io::Error::other(m),
            })?;
        let (log, _) = self.open(signal, &dir)?;
        *slot = Some(log.clone());
        Ok(log)
    }

    /// A record read back that cannot be decoded: skipped, counted.
    pub fn count_corrupt(&self, n: u64) {
        self.corrupt.add(n);
    }
}

/// `exporter_<type>_<name>_<signal>.sluice`, the name escaped ([`escape_name`]): a load
/// balancer's backend is named `loadbalancing/<endpoint>`, and neither its `/` nor an IPv6
/// address's `[`, `:` belong in one file name.
pub fn queue_dir_name(exporter: &ComponentId, signal: Signal) -> String {
    format!(
        "exporter_{}_{}_{}.sluice",
        escape_name(&exporter.type_name),
        escape_name(exporter.name.as_deref().unwrap_or("")),
        signal.as_str()
    )
}

/// `name` with every byte but ASCII letters, digits, `.`, `_` and `-` written as `~` and two
/// hex digits (`/` is `~2F`, `:` is `~3A`): one path segment, and reversible
/// ([`unescape_name`]), so a directory names its exporter. Names made of the safe characters
/// only (every exporter id but a load balancer's backends) are unchanged.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

/// The name [`escape_name`] escaped; `None` if `escaped` is not one of its results.
pub fn unescape_name(escaped: &str) -> Option<String> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.bytes();
    while let Some(b) = bytes.next() {
        if b != b'~' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
    }
    String::from_utf8(out).ok()
}

/// Renames a queue directory out of the way (`recreate: true`).
fn set_aside(dir: &Path) -> Result<(), String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut to = dir.as_os_str().to_owned();
    to.push(format!(".{secs}.old"));
    std::fs::rename(dir, &to)
        .map_err(|e| format!("recreate: cannot move {}: {e}", dir.display()))?;
    tracing::warn!(queue = %dir.display(), moved_to = ?to, "file_storage recreate: the queue's previous contents were set aside, not replayed");
    Ok(())
}
