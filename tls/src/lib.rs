//! TLS for sluice's servers and clients: the OpenTelemetry Collector's `configtls` settings
//! (same field names, defaults and meaning), loaded into rustls configs with the ring provider
//! (no aws-lc, no OpenSSL), and a TLS listener that sluice's servers serve on.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:
//!         tls:                        # a server setting (TlsServerSetting)
//!           cert_file: server.crt     # or cert_pem; required with key_file / key_pem
//!           key_file: server.key
//!           client_ca_file: ca.crt    # mTLS: clients must present a certificate it signed
//!           min_version: "1.2"        # default; "1.3" allowed; max_version likewise
//! exporters:
//!   otlp:
//!     endpoint: gateway:4317
//!     tls:                            # a client setting (TlsClientSetting)
//!       ca_file: ca.crt               # or ca_pem; default: the system's roots
//!       cert_file: client.crt         # mTLS identity, with key_file
//!       key_file: client.key
//!       server_name_override: gateway.internal
//!       insecure_skip_verify: false
//!       insecure: false               # true: plaintext (gRPC), unless a CA is set
//! ```
//!
//! # Why a crate of its own
//!
//! Server-side TLS is needed by the `otlp` receiver (in `sluice-ingest`) and by the
//! `prometheus` exporter's `tls` setting (in `sluice-egress`), and client-side TLS by the
//! exporters. The crate both depend on, `sluice-engine`, does no I/O by design (no sockets, no
//! files), while loading TLS means reading certificate files and serving it means owning
//! sockets; and `ingest` and `egress` do not depend on each other. So the settings, their
//! loading and the TLS listener live here, below `ingest` and `egress` and beside `engine`,
//! and either side reuses them with one dependency.
//!
//! # Differences from the Collector (Go's crypto/tls), all refused or stated, never silent
//!
//! - rustls speaks TLS 1.2 and 1.3 only: `min_version` "1.0"/"1.1" still means at least 1.2;
//!   a `max_version` below 1.2 is refused.
//! - `cipher_suites` restricts the TLS 1.2 suites (as in Go, TLS 1.3 suites are not
//!   configurable and are always on); names are Go's/IANA's, unknown names are refused.
//! - `curve_preferences`: X25519, P256, P384 (ring has no P521: refused).
//! - Certificates are read once at start: `reload_interval`, `client_ca_file_reload` and `tpm`
//!   are refused rather than ignored.

mod server;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use server::{TlsListener, TlsStream, accept_tls};
pub use settings::{
    Opaque, TlsClientSetting, TlsError, TlsServerSetting, TpmSetting, ZeroDuration,
};

/// ALPN for gRPC: HTTP/2 only (gRPC servers may refuse a TLS client that does not offer h2).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN for an HTTP server or client that speaks both versions.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];
