//! The `file` exporter: appends what arrives to a file in the Collector file exporter's
//! format — one OTLP/JSON object (`{"resourceSpans":[...]}`) per line, or length-prefixed
//! protobuf. This is also how captures for offline replay are made.
//!
//! ```yaml
//! exporters:
//!   file:
//!     path: ./capture.jsonl
//!     format: json     # or proto: 4-byte big-endian length, then an Export*ServiceRequest
//!     append: false    # false truncates the file at start
//!     compression: ""  # zstd: each record zstd-compressed and length-prefixed (the Collector's)
//!     rotation:        # absent: one file, growing
//!       max_megabytes: 100  # a new file once the next record would pass this size
//!       max_days: 0         # remove rotated files older than this (0: never)
//!       max_backups: 100    # keep at most this many rotated files (0: all)
//! ```
//!
//! Rotation is the Collector's (lumberjack's): the full file is renamed
//! `<name>-<UTC time, 2006-01-02T15-04-05.000><ext>` beside it and a new one is started under
//! the configured name, so a capture can run for a day on a gateway, and the rotated files of
//! a directory sort in time order (the current file last). `localtime: true` is refused
//! (rotated names are in UTC). With `compression: zstd` every record is written as the
//! Collector writes it: 4-byte big-endian length, then the zstd-compressed record (JSON or
//! protobuf). `sluice replay` reads every one of these forms.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    Factory, Kind, Lifecycle, NoEffect, Node, ParsedConfig, parse_config,
};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::ExporterMetrics;

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Json,
    Proto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: String,
    #[serde(default)]
    pub format: FileFormat,
    #[serde(default)]
    pub append: bool,
    /// Accepted without effect (warned): every batch is flushed when written.
    #[serde(default)]
    pub flush_interval: Option<String>,
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
    #[serde(default)]
    pub group_by: Option<serde_json::Value>,
    #[serde(default)]
    pub compression: Option<String>,
}

/// The Collector's `rotation` block (lumberjack's settings and defaults).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    #[serde(default = "default_max_megabytes")]
    pub max_megabytes: u64,
    #[serde(default)]
    pub max_days: u64,
    #[serde(default = "default_max_backups")]
    pub max_backups: usize,
    #[serde(default)]
    pub localtime: bool,
}

fn default_max_megabytes() -> u64 {
    100
}
fn default_max_backups() -> usize {
    100
}

pub struct FileFactory;

impl Factory for FileFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "file"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "writes OTLP/JSON lines (or length-prefixed protobuf) to a file: captures for replay"
    }
    fn without_effect(&self) -> &'static [NoEffect] {
        const SETTINGS: &[NoEffect] = &[NoEffect::new(
            "flush_interval",
            "every batch is flushed as it is written",
        )];
        SETTINGS
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: FileConfig = parse_config(config)?;
        if c.group_by.is_some() {
            return Err(ConfigError::new(
                "group_by",
                "not supported by sluice's file exporter yet",
            ));
        }
        match c.compression.as_deref() {
            None | Some("") | Some("zstd") => {}
            Some(other) => {
                return Err(ConfigError::new(
                    "compression",
                    format!("unknown compression {other:?}: the file exporter supports zstd"),
                ));
            }
        }
        if let Some(r) = &c.rotation {
            if r.localtime {
                return Err(ConfigError::new(
                    "rotation.localtime",
                    "not supported: rotated files are named in UTC",
                ));
            }
            if r.max_megabytes == 0 {
                return Err(ConfigError::new(
                    "rotation.max_megabytes",
                    "must be at least 1",
                ));
            }
        }
        if c.path.is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        Ok(Arc::new(c))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<FileConfig>()?;
        Ok(Arc::new(FileExporter {
            id: ctx.id.clone(),
            config: (*c).clone(),
            file: Arc::new(Mutex::new(None)),
            metrics: ExporterMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct FileExporter {
    id: ComponentId,
    config: FileConfig,
    file: Arc<Mutex<Option<Output>>>,
    metrics: ExporterMetrics,
}

/// The open file, how much it holds, and when to rotate it.
struct Output {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    rotation: Option<RotationConfig>,
}

impl Output {
    fn open(path: &Path, append: bool, rotation: Option<RotationConfig>) -> std::io::Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Output {
            path: path.to_path_buf(),
            file: BufWriter::new(f),
            size,
            rotation,
        })
    }

    fn write(&mut self, record: &[u8]) -> std::io::Result<()> {
        if let Some(r) = &self.rotation {
            let limit = r.max_megabytes.saturating_mul(1 << 20);
            // A record larger than the limit still goes whole into a file of its own.
            if self.size > 0 && self.size + record.len() as u64 > limit {
                self.rotate()?;
            }
        }
        self.file.write_all(record)?;
        self.file.flush()?;
        self.size += record.len() as u64;
        Ok(())
    }

    /// Renames the full file to its backup name and starts an empty one; prunes backups.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let backup = backup_name(&self.path, SystemTime::now());
        std::fs::rename(&self.path, &backup)?;
        let fresh = Output::open(&self.path, false, self.rotation.clone())?;
        self.file = fresh.file;
        self.size = 0;
        if let Some(r) = &self.rotation
            && let Err(e) = prune_backups(&self.path, r)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "file exporter: cannot remove old rotated files");
        }
        Ok(())
    }
}

/// `dir/name-2006-01-02T15-04-05.000.ext` (lumberjack's backup name, UTC); a later
/// millisecond if that name is taken.
pub fn backup_name(path: &Path, at: SystemTime) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(""));
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (&file[..i], &file[i..]),
        _ => (file.as_str(), ""),
    };
    let mut at = at;
    loop {
        let stamp = utc_stamp(at);
        let candidate = dir.join(format!("{stem}-{stamp}{ext}"));
        if !candidate.exists() {
            return candidate;
        }
        at += Duration::from_millis(1);
    }
}

/// `2006-01-02T15-04-05.000` in UTC.
fn utc_stamp(at: SystemTime) -> String {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}-{:02}-{:02}.{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Removes rotated files beyond `max_backups` (oldest first) and older than `max_days`.
fn prune_backups(path: &Path, r: &RotationConfig) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (file[..i].to_string(), file[i..].to_string()),
        _ => (file.clone(), String::new()),
    };
    let prefix = format!("{stem}-");
    let mut backups: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .is_some_and(|f| {
                    f.starts_with(&prefix)
                        && f.ends_with(&ext)
                        && f.len() == prefix.len() + "2006-01-02T15-04-05.000".len() + ext.len()
                })
        })
        .collect();
    backups.sort(); // names are UTC times: oldest first
    let mut remove = Vec::new();
    if r.max_backups > 0 && backups.len() > r.max_backups {
        remove.extend(backups.drain(..backups.len() - r.max_backups));
    }
    if r.max_days > 0 {
        let cutoff = SystemTime::now() - Duration::from_secs(r.max_days * 86_400);
        remove.extend(backups.into_iter().filter(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff)
        }));
    }
    for p in remove {
        std::fs::remove_file(p)?;
    }
    Ok(())
}

impl Consumer for FileExporter {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = p.item_count();
            let s = p.signal();
            let record = match self.config.format {
                FileFormat::Json => match sluice_engine::otlp::encode_json(&p) {
                    Ok(mut j) => {
                        j.push(b'\n');
                        j
                    }
                    Err(e) => {
                        self.metrics.send_failed(s, n, "encode");
                        return Err(ConsumeError::Permanent(format!(
                            "cannot encode OTLP/JSON: {e}"
                        )));
                    }
                },
                FileFormat::Proto => sluice_engine::otlp::encode_to_vec(&p),
            };
            let record = match (self.config.compression.as_deref(), self.config.format) {
                (Some("zstd"), _) => match zstd::bulk::compress(&record, 0) {
                    Ok(z) => length_prefixed(&z),
                    Err(e) => {
                        self.metrics.send_failed(s, n, "encode");
                        return Err(ConsumeError::Permanent(format!("cannot compress: {e}")));
                    }
                },
                (_, FileFormat::Proto) => length_prefixed(&record),
                (_, FileFormat::Json) => record,
            };
            let file = self.file.clone();
            // File I/O never runs on the async runtime's threads.
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
                let w = guard
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("file exporter not started"))?;
                w.write(&record)
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    self.metrics.sent(s, n);
                    Ok(())
                }
                Ok(Err(e)) => {
                    self.metrics.send_failed(s, n, "io");
                    tracing::warn!(exporter = %self.id, path = %self.config.path, error = %e, "cannot write");
                    Err(ConsumeError::Unavailable(format!(
                        "cannot write {}: {e}",
                        self.config.path
                    )))
                }
                Err(e) => {
                    self.metrics.send_failed(s, n, "io");
                    Err(ConsumeError::Unavailable(format!(
                        "file writer task failed: {e}"
                    )))
                }
            }
        })
    }
}

impl Lifecycle for FileExporter {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let out = Output::open(
                Path::new(&self.config.path),
                self.config.append,
                self.config.rotation.clone(),
            )
            .map_err(|e| {
                ComponentError::new(&self.id, format!("cannot open {}: {e}", self.config.path))
            })?;
            *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
            Ok(())
        })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut w) = self.file.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = w.file.flush();
            }
        })
    }
}

/// 4-byte big-endian length, then `body`.
fn length_prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_lumberjacks_in_utc() {
        // 2026-12-06T19:03:44.123Z
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_583_824_123);
        let name = backup_name(Path::new("/nonexistent-dir/capture.jsonl"), at);
        assert_eq!(
            name,
            Path::new("/nonexistent-dir/capture-2026-12-06T19-03-44.123.jsonl")
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn rotation_keeps_each_file_under_the_limit_and_prunes_old_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.bin");
        let rotation = RotationConfig {
            max_megabytes: 1,
            max_days: 0,
            max_backups: 2,
            localtime: false,
        };
        let mut out = Output::open(&path, false, Some(rotation)).unwrap();
        let record = vec![7u8; 400 << 10]; // 400 KiB: two fit in 1 MiB, three do not
        for _ in 0..9 {
            out.write(&record).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // 9 records, 2 per file: 5 files written, the 2 newest backups kept + the current.
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[2], "cap.bin");
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 1 << 20, "{n}: {len}");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 400 << 10);
    }
}
