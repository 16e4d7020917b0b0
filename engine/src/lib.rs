//! sluice-engine: the data model, the OTLP codec, processors, config model, pipeline graph,
//! self-telemetry and the memory account. This crate does no I/O: no sockets, no files; time
//! comes through a clock, process memory figures through [`memory::ProcessMemory`].
//!
//! Design note (a deliberate change from the first architecture sketch, which put decoders in
//! `ingest` and encoders in `egress`): the OTLP <-> Arrow codec lives here, both directions in
//! one module, because they share the wire primitives and the schema, because the round-trip
//! property is the codec's main test, and because offline replay (file -> pipeline) needs both
//! without any receiver or exporter. `ingest` and `egress` are the I/O edges that call it.

pub mod clock;
pub mod component;
pub mod config;
pub mod config_types;
pub mod connectors;
pub mod flight;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
pub mod health;
pub mod kernels;
pub mod memory;
pub mod otlp;
pub mod ottl;
pub mod payload;
pub mod processors;
pub mod schema;
pub mod service;
pub mod telemetry;

pub use payload::Payload;
pub use schema::{Signal, Table};
