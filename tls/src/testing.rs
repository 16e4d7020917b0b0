//! Certificates for tests, made on the fly: a CA, a server certificate for `localhost` and
//! `127.0.0.1` signed by it, and a client certificate for mTLS, written as PEM files into a
//! temporary directory (removed on drop).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA and the certificates it signed, as files. Two `TestPki`s are unrelated CAs: one's
/// certificates do not verify against the other's CA (the "wrong CA" case).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// # Panics
    /// If key generation or the temporary directory fails (a broken test environment).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A distinct name per CA, as real CAs have: "another CA" is then an unknown issuer.
        static CAS: AtomicUsize = AtomicUsize::new(0);
        let n = CAS.fetch_add(1, Ordering::Relaxed);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("sluice test CA {} {n}", std::process::id()),
        );
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "sluice test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["sluice-test-client".into()],
            "sluice test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestPki {
            ca_cert: write("ca.crt", &ca.pem()),
            server_cert: write("server.crt", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
            dir,
        }
    }

    /// A path in the directory that does not exist (the "missing file" case).
    pub fn missing(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
