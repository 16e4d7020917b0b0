//! The `tls` settings (the Collector's `configtls.ServerConfig` / `ClientConfig`) and their
//! loading into rustls configs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting is invalid, or what it names is not what it must be; `field` is the
    /// setting's name under `tls`.
    #[error("{field}: {message}")]
    Setting {
        field: &'static str,
        message: String,
    },
    /// A file a setting names cannot be read.
    #[error("cannot read {field} {path:?}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// The message without the setting's name in front (for callers that report the setting
    /// as a path: `protocols.grpc.tls.cert_file: ...`).
    pub fn detail(&self) -> String {
        match self {
            TlsError::Setting { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The setting under `tls` the error is about, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            TlsError::Setting { field, .. } | TlsError::Read { field, .. } => Some(field),
            TlsError::Rustls(_) => None,
        }
    }
}

fn setting(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError::Setting {
        field,
        message: message.into(),
    }
}

/// Inline PEM (`ca_pem`, `cert_pem`, `key_pem`): never shown by `Debug`, as the Collector's
/// `configopaque.String`, so a logged config does not leak a private key.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Opaque(pub String);

impl AsRef<str> for Opaque {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Opaque {
    fn from(s: &str) -> Self {
        Opaque(s.to_string())
    }
}

impl std::fmt::Debug for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// `tpm`: keys in a trusted platform module (not supported: refused when enabled).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TpmSetting {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub owner_auth: Option<String>,
    #[serde(default)]
    pub auth: Option<String>,
}

/// A duration setting that sluice only accepts unset or zero (`reload_interval`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ZeroDuration {
    Text(String),
    Number(u64),
}

impl ZeroDuration {
    fn is_zero(&self) -> bool {
        match self {
            ZeroDuration::Number(n) => *n == 0,
            // "0", "0s", "0ms", "": zero; anything else ("10s", "1m30s") is a reload interval.
            ZeroDuration::Text(t) => t
                .trim()
                .trim_end_matches(|c: char| c.is_alphabetic())
                .parse::<f64>()
                .map_or(t.trim().is_empty(), |n| n == 0.0),
        }
    }
}

/// `tls` of a server (receivers; the `prometheus` exporter's endpoint): the Collector's
/// `configtls.ServerConfig`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerSetting {
    /// Has no effect on a server, in the Collector too (Go reads only `client_ca_file` for
    /// client certificates); accepted, and a warning says so.
    pub ca_file: Option<String>,
    pub ca_pem: Option<Opaque>,
    #[serde(default)]
    pub include_system_ca_certs_pool: bool,
    pub cert_file: Option<String>,
    pub cert_pem: Option<Opaque>,
    pub key_file: Option<String>,
    pub key_pem: Option<Opaque>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub include_insecure_cipher_suites: bool,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    pub reload_interval: Option<ZeroDuration>,
    pub tpm: Option<TpmSetting>,
    /// mTLS: clients must present a certificate signed by one of these CAs.
    pub client_ca_file: Option<String>,
    #[serde(default)]
    pub client_ca_file_reload: bool,
}

/// `tls` of a client (exporters): the Collector's `configtls.ClientConfig`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsClientSetting {
    /// No TLS at all (gRPC), unless a CA is also set; see [`TlsClientSetting::plaintext`].
    #[serde(default)]
    pub insecure: bool,
    /// TLS without verifying the server's certificate chain or name.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to verify the server's certificate against (and send as SNI) instead of the
    /// endpoint's host.
    pub server_name_override: Option<String>,
    pub ca_file: Option<String>,
    pub ca_pem: Option<Opaque>,
    #[serde(default)]
    pub include_system_ca_certs_pool: bool,
    pub cert_file: Option<String>,
    pub cert_pem: Option<Opaque>,
    pub key_file: Option<String>,
    pub key_pem: Option<Opaque>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub include_insecure_cipher_suites: bool,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    pub reload_interval: Option<ZeroDuration>,
    pub tpm: Option<TpmSetting>,
}

/// What servers and clients share (the Collector's `configtls.Config`), borrowed.
struct Common<'a> {
    ca_file: &'a Option<String>,
    ca_pem: &'a Option<Opaque>,
    include_system_ca_certs_pool: bool,
    cert_file: &'a Option<String>,
    cert_pem: &'a Option<Opaque>,
    key_file: &'a Option<String>,
    key_pem: &'a Option<Opaque>,
    min_version: &'a Option<String>,
    max_version: &'a Option<String>,
    cipher_suites: &'a [String],
    curve_preferences: &'a [String],
    reload_interval: &'a Option<ZeroDuration>,
    tpm: &'a Option<TpmSetting>,
}

fn set(v: &Option<impl AsRef<str>>) -> bool {
    v.as_ref().is_some_and(|s| !s.as_ref().is_empty())
}

/// TLS versions as the Collector names them, mapped to what rustls has (1.2 and 1.3).
fn version(field: &'static str, v: &Option<String>) -> Result<Option<u8>, TlsError> {
    match v.as_deref().unwrap_or("") {
        "" => Ok(None),
        "1.0" => Ok(Some(0)),
        "1.1" => Ok(Some(1)),
        "1.2" => Ok(Some(2)),
        "1.3" => Ok(Some(3)),
        other => Err(setting(
            field,
            format!(
                "unsupported TLS version {other:?}; expected \"1.0\", \"1.1\", \"1.2\" or \"1.3\""
            ),
        )),
    }
}

/// The IANA/Go name of a rustls suite (Go names TLS 1.3 suites `TLS_AES_...`).
fn suite_name(s: &rustls::SupportedCipherSuite) -> String {
    let name = s
        .suite()
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", s.suite()));
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

fn curve(name: &str) -> Option<NamedGroup> {
    match name {
        "X25519" => Some(NamedGroup::X25519),
        "P256" => Some(NamedGroup::secp256r1),
        "P384" => Some(NamedGroup::secp384r1),
        _ => None,
    }
}

impl Common<'_> {
    fn has_ca(&self) -> bool {
        set(self.ca_file) || set(self.ca_pem)
    }
    fn has_cert(&self) -> bool {
        set(self.cert_file) || set(self.cert_pem)
    }
    fn has_key(&self) -> bool {
        set(self.key_file) || set(self.key_pem)
    }

    /// Everything that can be checked without reading a file (as the Collector's `Validate`).
    fn validate(&self) -> Result<(), TlsError> {
        if set(self.ca_file) && set(self.ca_pem) {
            return Err(setting(
                "ca_file",
                "provide either a CA file or the PEM-encoded string (ca_pem), but not both",
            ));
        }
        if set(self.cert_file) && set(self.cert_pem) {
            return Err(setting(
                "cert_file",
                "provide either a certificate file or cert_pem, but not both",
            ));
        }
        if set(self.key_file) && set(self.key_pem) {
            return Err(setting(
                "key_file",
                "provide either a key file or key_pem, but not both",
            ));
        }
        if self.has_cert() != self.has_key() {
            return Err(setting(
                if self.has_cert() {
                    "key_file"
                } else {
                    "cert_file"
                },
                "TLS configuration must include both certificate and key (cert_file/cert_pem and key_file/key_pem)",
            ));
        }
        self.versions()?;
        self.provider()?;
        if self.reload_interval.as_ref().is_some_and(|d| !d.is_zero()) {
            return Err(setting(
                "reload_interval",
                "not supported: sluice reads certificates once, at start (restart to reload)",
            ));
        }
        if self.tpm.as_ref().is_some_and(|t| t.enabled) {
            return Err(setting("tpm", "keys in a TPM are not supported"));
        }
        Ok(())
    }

    fn versions(&self) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
        let min = version("min_version", self.min_version)?.unwrap_or(2);
        let max = version("max_version", self.max_version)?.unwrap_or(3);
        if max < min {
            return Err(setting(
                "min_version",
                "min_version cannot be greater than max_version",
            ));
        }
        if max < 2 {
            return Err(setting(
                "max_version",
                "TLS 1.0 and 1.1 are not available (rustls speaks TLS 1.2 and 1.3)",
            ));
        }
        let mut v = Vec::new();
        if min <= 2 {
            v.push(&rustls::version::TLS12);
        }
        if max >= 3 {
            v.push(&rustls::version::TLS13);
        }
        Ok(v)
    }

    /// ring, restricted to the configured TLS 1.2 cipher suites and curves.
    fn provider(&self) -> Result<Arc<CryptoProvider>, TlsError> {
        let mut p = ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let unknown: Vec<&String> = self
                .cipher_suites
                .iter()
                .filter(|n| !p.cipher_suites.iter().any(|s| suite_name(s) == **n))
                .collect();
            if !unknown.is_empty() {
                let known: Vec<String> = p.cipher_suites.iter().map(suite_name).collect();
                return Err(setting(
                    "cipher_suites",
                    format!(
                        "unsupported cipher suite(s) {unknown:?}; available: {}",
                        known.join(", ")
                    ),
                ));
            }
            // As Go: the list restricts TLS 1.2 suites; TLS 1.3 suites stay on.
            p.cipher_suites.retain(|s| {
                s.version() == &rustls::version::TLS13
                    || self.cipher_suites.contains(&suite_name(s))
            });
        }
        if !self.curve_preferences.is_empty() {
            let mut groups = Vec::new();
            for name in self.curve_preferences {
                let group = curve(name).and_then(|g| p.kx_groups.iter().find(|k| k.name() == g));
                match group {
                    Some(g) => groups.push(*g),
                    None => {
                        return Err(setting(
                            "curve_preferences",
                            format!("unsupported curve {name:?}; available: X25519, P256, P384"),
                        ));
                    }
                }
            }
            p.kx_groups = groups;
        }
        Ok(Arc::new(p))
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let (field, pem) = pem_of("cert_file", self.cert_file, "cert_pem", self.cert_pem)?;
        parse_certs(field, &pem)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let (field, pem) = pem_of("key_file", self.key_file, "key_pem", self.key_pem)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            setting(
                field,
                format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
            )
        })
    }

    /// The CA roots (`ca_file`/`ca_pem`, plus the system's with `include_system_ca_certs_pool`),
    /// or the system's alone when no CA is set.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        if self.has_ca() {
            let (field, pem) = pem_of("ca_file", self.ca_file, "ca_pem", self.ca_pem)?;
            add_roots(&mut roots, field, parse_certs(field, &pem)?)?;
        }
        if !self.has_ca() {
            add_system_roots(&mut roots)?;
        } else if self.include_system_ca_certs_pool {
            // As Go's x509.SystemCertPool on Linux: a machine without root certificates
            // (a distroless image) gives an empty pool, not an error, when a CA is set.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
        Ok(roots)
    }
}

/// The PEM bytes of a `*_file` / `*_pem` pair (the file read here), and the field they came
/// from, for error messages.
fn pem_of(
    file_field: &'static str,
    file: &Option<String>,
    pem_field: &'static str,
    pem: &Option<Opaque>,
) -> Result<(&'static str, Vec<u8>), TlsError> {
    match (file.as_deref(), pem.as_ref().map(AsRef::<str>::as_ref)) {
        (Some(path), _) if !path.is_empty() => Ok((file_field, read_file(file_field, path)?)),
        (_, Some(p)) if !p.is_empty() => Ok((pem_field, p.as_bytes().to_vec())),
        _ => Err(setting(file_field, "not set")),
    }
}

fn read_file(field: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_string(),
        source,
    })
}

fn parse_certs(field: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting(field, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(setting(
            field,
            "no PEM certificate (BEGIN CERTIFICATE) found",
        ));
    }
    Ok(certs)
}

fn add_roots(
    roots: &mut RootCertStore,
    field: &'static str,
    certs: Vec<CertificateDer<'static>>,
) -> Result<(), TlsError> {
    for c in certs {
        roots
            .add(c)
            .map_err(|e| setting(field, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(())
}

fn add_system_roots(roots: &mut RootCertStore) -> Result<(), TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(setting(
            "ca_file",
            format!("no CA set and no system root certificates found{why}; set ca_file or ca_pem"),
        ));
    }
    Ok(())
}

impl TlsServerSetting {
    fn common(&self) -> Common<'_> {
        Common {
            ca_file: &self.ca_file,
            ca_pem: &self.ca_pem,
            include_system_ca_certs_pool: self.include_system_ca_certs_pool,
            cert_file: &self.cert_file,
            cert_pem: &self.cert_pem,
            key_file: &self.key_file,
            key_pem: &self.key_pem,
            min_version: &self.min_version,
            max_version: &self.max_version,
            cipher_suites: &self.cipher_suites,
            curve_preferences: &self.curve_preferences,
            reload_interval: &self.reload_interval,
            tpm: &self.tpm,
        }
    }

    /// Checks what can be checked without reading files (at config load).
    pub fn validate(&self) -> Result<(), TlsError> {
        let c = self.common();
        c.validate()?;
        if !c.has_cert() {
            return Err(setting(
                "cert_file",
                "a server needs a certificate and key (cert_file/cert_pem and key_file/key_pem)",
            ));
        }
        if self.client_ca_file_reload {
            return Err(setting(
                "client_ca_file_reload",
                "not supported: sluice reads client_ca_file once, at start",
            ));
        }
        Ok(())
    }

    /// Reads the files and builds the server config, offering `alpn` (see [`crate::ALPN_GRPC`],
    /// [`crate::ALPN_HTTP`]). Errors name the setting and the file.
    pub fn load(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        self.validate()?;
        let c = self.common();
        if c.has_ca() {
            tracing::warn!(
                "tls.ca_file/ca_pem has no effect on a server (as in the Collector); use client_ca_file to require client certificates"
            );
        }
        let provider = c.provider()?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&c.versions()?)?;
        let builder = match self.client_ca_file.as_deref().filter(|f| !f.is_empty()) {
            Some(path) => {
                let field = "client_ca_file";
                let mut roots = RootCertStore::empty();
                add_roots(
                    &mut roots,
                    field,
                    parse_certs(field, &read_file(field, path)?)?,
                )?;
                if self.include_system_ca_certs_pool {
                    add_system_roots(&mut roots)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| setting("client_ca_file", format!("{path}: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(c.certs()?, c.key()?)
            .map_err(|e| setting("key_file", format!("does not go with the certificate: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl TlsClientSetting {
    fn common(&self) -> Common<'_> {
        Common {
            ca_file: &self.ca_file,
            ca_pem: &self.ca_pem,
            include_system_ca_certs_pool: self.include_system_ca_certs_pool,
            cert_file: &self.cert_file,
            cert_pem: &self.cert_pem,
            key_file: &self.key_file,
            key_pem: &self.key_pem,
            min_version: &self.min_version,
            max_version: &self.max_version,
            cipher_suites: &self.cipher_suites,
            curve_preferences: &self.curve_preferences,
            reload_interval: &self.reload_interval,
            tpm: &self.tpm,
        }
    }

    /// Checks what can be checked without reading files (at config load).
    pub fn validate(&self) -> Result<(), TlsError> {
        self.common().validate()
    }

    /// The Collector's rule for "no TLS settings": `insecure` and no CA. A gRPC client then
    /// speaks plaintext (unless its endpoint says `https://`); an HTTP client follows its URL's
    /// scheme either way.
    pub fn plaintext(&self) -> bool {
        self.insecure && !self.common().has_ca()
    }

    /// The name to verify the server's certificate against, when overridden.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name_override
            .as_deref()
            .filter(|s| !s.is_empty())
    }

    /// Reads the files and builds the client config. Errors name the setting and the file.
    /// Owned and without ALPN, as `hyper_rustls` takes it (it sets the ALPN of the HTTP
    /// versions it is built for).
    pub fn load(&self) -> Result<ClientConfig, TlsError> {
        self.validate()?;
        let c = self.common();
        let provider = c.provider()?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&c.versions()?)?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipServerVerification(provider)))
        } else {
            builder.with_root_certificates(c.roots()?)
        };
        Ok(if c.has_cert() {
            builder
                .with_client_auth_cert(c.certs()?, c.key()?)
                .map_err(|e| {
                    setting("key_file", format!("does not go with the certificate: {e}"))
                })?
        } else {
            builder.with_no_client_auth()
        })
    }
}

/// `insecure_skip_verify`: any certificate chain and name are accepted, but the handshake's
/// signatures are still checked (the peer must hold the key of the certificate it sent).
#[derive(Debug)]
struct SkipServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
