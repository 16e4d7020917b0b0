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
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};

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
    pub rotation: Option<serde_json::Value>,
    #[serde(default)]
    pub group_by: Option<serde_json::Value>,
    #[serde(default)]
    pub compression: Option<String>,
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
        for (field, set) in [
            ("rotation", c.rotation.is_some()),
            ("group_by", c.group_by.is_some()),
            (
                "compression",
                c.compression.as_deref().is_some_and(|v| !v.is_empty()),
            ),
        ] {
            if set {
                return Err(ConfigError::new(
                    field,
                    "not supported by sluice's file exporter yet",
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
    file: Arc<Mutex<Option<BufWriter<File>>>>,
    metrics: ExporterMetrics,
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
                FileFormat::Proto => {
                    let body = sluice_engine::otlp::encode_to_vec(&p);
                    let mut out = (body.len() as u32).to_be_bytes().to_vec();
                    out.extend_from_slice(&body);
                    out
                }
            };
            let file = self.file.clone();
            // File I/O never runs on the async runtime's threads.
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
                let w = guard
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("file exporter not started"))?;
                w.write_all(&record)?;
                w.flush()
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
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .append(self.config.append)
                .truncate(!self.config.append)
                .open(&self.config.path)
                .map_err(|e| {
                    ComponentError::new(&self.id, format!("cannot open {}: {e}", self.config.path))
                })?;
            *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(BufWriter::new(f));
            Ok(())
        })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut w) = self.file.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = w.flush();
            }
        })
    }
}
