use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::testing::TestPki;
use crate::{ALPN_HTTP, accept_tls};

fn s(p: &std::path::Path) -> Option<String> {
    Some(p.display().to_string())
}

fn server(pki: &TestPki) -> TlsServerSetting {
    TlsServerSetting {
        cert_file: s(&pki.server_cert),
        key_file: s(&pki.server_key),
        ..Default::default()
    }
}

fn client(pki: &TestPki) -> TlsClientSetting {
    TlsClientSetting {
        ca_file: s(&pki.ca_cert),
        ..Default::default()
    }
}

fn parse_server(json: serde_json::Value) -> Result<TlsServerSetting, serde_json::Error> {
    serde_json::from_value(json)
}

#[test]
fn collector_field_names_parse_and_unknown_fields_are_refused() {
    let c: TlsClientSetting = serde_json::from_value(serde_json::json!({
        "insecure": false, "insecure_skip_verify": true, "server_name_override": "x",
        "ca_file": "a", "cert_file": "c", "key_file": "k", "min_version": "1.2",
        "max_version": "1.3", "include_system_ca_certs_pool": true,
        "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], "reload_interval": "0s",
    }))
    .unwrap();
    assert!(c.insecure_skip_verify);
    let s = parse_server(serde_json::json!({
        "cert_pem": "c", "key_pem": "k", "client_ca_file": "ca", "tpm": {"enabled": false},
    }))
    .unwrap();
    assert_eq!(s.client_ca_file.as_deref(), Some("ca"));
    let e = parse_server(serde_json::json!({"cert_fille": "c"})).unwrap_err();
    assert!(e.to_string().contains("unknown field `cert_fille`"), "{e}");
}

#[test]
fn invalid_settings_are_refused_naming_the_field() {
    let pki = TestPki::new();
    let base = server(&pki);
    let cases: Vec<(TlsServerSetting, &str, &str)> = vec![
        (
            TlsServerSetting::default(),
            "cert_file",
            "needs a certificate and key",
        ),
        (
            TlsServerSetting {
                key_file: None,
                ..base.clone()
            },
            "key_file",
            "both certificate and key",
        ),
        (
            TlsServerSetting {
                cert_pem: Some("x".into()),
                ..base.clone()
            },
            "cert_file",
            "not both",
        ),
        (
            TlsServerSetting {
                min_version: Some("1.3".into()),
                max_version: Some("1.2".into()),
                ..base.clone()
            },
            "min_version",
            "greater than max_version",
        ),
        (
            TlsServerSetting {
                max_version: Some("1.1".into()),
                min_version: Some("1.0".into()),
                ..base.clone()
            },
            "max_version",
            "TLS 1.0 and 1.1 are not available",
        ),
        (
            TlsServerSetting {
                min_version: Some("1.4".into()),
                ..base.clone()
            },
            "min_version",
            "unsupported TLS version",
        ),
        (
            TlsServerSetting {
                cipher_suites: vec!["TLS_RSA_WITH_RC4_128_SHA".into()],
                ..base.clone()
            },
            "cipher_suites",
            "TLS_RSA_WITH_RC4_128_SHA",
        ),
        (
            TlsServerSetting {
                curve_preferences: vec!["P521".into()],
                ..base.clone()
            },
            "curve_preferences",
            "unsupported curve \"P521\"",
        ),
        (
            TlsServerSetting {
                reload_interval: Some(ZeroDuration::Text("10s".into())),
                ..base.clone()
            },
            "reload_interval",
            "not supported",
        ),
        (
            TlsServerSetting {
                client_ca_file_reload: true,
                ..base.clone()
            },
            "client_ca_file_reload",
            "not supported",
        ),
        (
            TlsServerSetting {
                tpm: Some(TpmSetting {
                    enabled: true,
                    ..Default::default()
                }),
                ..base.clone()
            },
            "tpm",
            "not supported",
        ),
    ];
    for (setting, field, message) in cases {
        let e = setting.validate().expect_err(field);
        assert_eq!(e.field(), Some(field), "{e}");
        assert!(e.to_string().contains(message), "{field}: {e}");
    }
    for zero in ["0s", "0", ""] {
        let ok = TlsServerSetting {
            reload_interval: Some(ZeroDuration::Text(zero.into())),
            min_version: Some("1.0".into()), // means "at least 1.2" with rustls
            curve_preferences: vec!["X25519".into(), "P256".into()],
            cipher_suites: vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_AES_128_GCM_SHA256".into(),
            ],
            ..base.clone()
        };
        ok.validate().unwrap();
    }
}

#[test]
fn unreadable_or_wrong_files_are_errors_naming_the_setting_and_the_file() {
    let pki = TestPki::new();
    let missing = pki.missing("nope.crt");
    let e = TlsServerSetting {
        cert_file: s(&missing),
        ..server(&pki)
    }
    .load(ALPN_HTTP)
    .unwrap_err();
    assert!(
        matches!(
            e,
            TlsError::Read {
                field: "cert_file",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );

    // A key where the certificate should be, and a certificate that does not go with the key.
    let e = TlsServerSetting {
        cert_file: s(&pki.server_key),
        ..server(&pki)
    }
    .load(ALPN_HTTP)
    .unwrap_err();
    assert_eq!(e.field(), Some("cert_file"), "{e}");
    let e = TlsServerSetting {
        cert_file: s(&pki.client_cert),
        ..server(&pki)
    }
    .load(ALPN_HTTP)
    .unwrap_err();
    assert_eq!(e.field(), Some("key_file"), "{e}");

    let e = TlsServerSetting {
        client_ca_file: s(&pki.missing("clients.crt")),
        ..server(&pki)
    }
    .load(ALPN_HTTP)
    .unwrap_err();
    assert!(
        e.to_string().contains("client_ca_file") && e.to_string().contains("clients.crt"),
        "{e}"
    );

    let e = TlsClientSetting {
        ca_file: s(&pki.missing("ca.pem")),
        ..Default::default()
    }
    .load()
    .unwrap_err();
    assert!(
        e.to_string().contains("ca_file") && e.to_string().contains("ca.pem"),
        "{e}"
    );
}

#[test]
fn plaintext_follows_the_collector() {
    assert!(!TlsClientSetting::default().plaintext());
    assert!(
        TlsClientSetting {
            insecure: true,
            ..Default::default()
        }
        .plaintext()
    );
    // `insecure` with a CA still means TLS (configtls.ClientConfig.LoadTLSConfig).
    assert!(
        !TlsClientSetting {
            insecure: true,
            ca_pem: Some("x".into()),
            ..Default::default()
        }
        .plaintext()
    );
}

/// One handshake between a server and a client setting over loopback: the client's error, or
/// the server's ALPN choice, negotiated version and cipher suite. `failures` collects what the
/// server reported.
async fn handshake(
    server: &TlsServerSetting,
    client: &TlsClientSetting,
    name: &str,
) -> (Result<(Option<Vec<u8>>, String), String>, Vec<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let mut incoming = accept_tls(listener, server.load(ALPN_HTTP).unwrap(), move |e| {
        seen.lock().unwrap().push(e.to_string())
    });
    let server_side = tokio::spawn(async move {
        let (mut tls, _peer) = incoming.recv().await?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.ok()?;
        tls.write_all(b"pong").await.ok()?;
        tls.flush().await.ok()?;
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest).await;
        Some(())
    });
    let mut config = client.load().unwrap();
    config.alpn_protocols = ALPN_HTTP.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server_name =
        ServerName::try_from(client.server_name().unwrap_or(name).to_string()).unwrap();
    let result = async {
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        assert_eq!(&b, b"pong");
        let (_, conn) = tls.get_ref();
        let info = (
            conn.alpn_protocol().map(<[u8]>::to_vec),
            format!(
                "{:?} {:?}",
                conn.protocol_version(),
                conn.negotiated_cipher_suite().map(|s| s.suite())
            ),
        );
        tls.shutdown().await.ok();
        Ok(info)
    }
    .await;
    if result.is_ok() {
        server_side.await.unwrap();
    } else {
        // Let the server's side of a failed handshake finish and report.
        for _ in 0..100 {
            if !failures.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        server_side.abort();
    }
    let failures = failures.lock().unwrap().clone();
    (result, failures)
}

#[tokio::test]
async fn server_and_client_settings_handshake() {
    let pki = TestPki::new();
    let (ok, _) = handshake(&server(&pki), &client(&pki), "localhost").await;
    let (alpn, version) = ok.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(version.contains("TLSv1_3"), "{version}");

    // An IP address endpoint verifies against the certificate's IP SAN.
    handshake(&server(&pki), &client(&pki), "127.0.0.1")
        .await
        .0
        .unwrap();

    // server_name_override: the name verified is the override, not the address.
    let overridden = TlsClientSetting {
        server_name_override: Some("localhost".into()),
        ..client(&pki)
    };
    handshake(&server(&pki), &overridden, "10.9.9.9")
        .await
        .0
        .unwrap();
    let wrong_name = TlsClientSetting {
        server_name_override: Some("gateway.example".into()),
        ..client(&pki)
    };
    let e = handshake(&server(&pki), &wrong_name, "localhost")
        .await
        .0
        .unwrap_err();
    assert!(e.contains("not valid for name \"gateway.example\""), "{e}");
}

#[tokio::test]
async fn versions_and_cipher_suites_are_enforced() {
    let pki = TestPki::new();
    let tls12 = TlsClientSetting {
        max_version: Some("1.2".into()),
        cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".into()],
        ..client(&pki)
    };
    let (_, version) = handshake(&server(&pki), &tls12, "localhost")
        .await
        .0
        .unwrap();
    assert!(
        version.contains("TLSv1_2") && version.contains("CHACHA20"),
        "{version}"
    );

    let only13 = TlsServerSetting {
        min_version: Some("1.3".into()),
        ..server(&pki)
    };
    let (result, failures) = handshake(&only13, &tls12, "localhost").await;
    assert!(result.unwrap_err().contains("alert"));
    assert!(
        failures.iter().any(|f| f.contains("peer is incompatible")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_unless_verification_is_skipped() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let (result, failures) = handshake(&server(&pki), &client(&other), "localhost").await;
    let e = result.unwrap_err();
    assert!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(!failures.is_empty(), "the server sees the client's alert");

    let skip = TlsClientSetting {
        insecure_skip_verify: true,
        ..client(&other)
    };
    handshake(&server(&pki), &skip, "localhost")
        .await
        .0
        .unwrap();
    // Skipping verification also skips the name check.
    let skip_any_name = TlsClientSetting {
        insecure_skip_verify: true,
        ..Default::default()
    };
    handshake(&server(&pki), &skip_any_name, "anything.example")
        .await
        .0
        .unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let mtls = TlsServerSetting {
        client_ca_file: s(&pki.ca_cert),
        ..server(&pki)
    };
    let with_cert = TlsClientSetting {
        cert_file: s(&pki.client_cert),
        key_file: s(&pki.client_key),
        ..client(&pki)
    };
    handshake(&mtls, &with_cert, "localhost").await.0.unwrap();

    // No certificate: TLS 1.3 clients learn of the refusal on their first read.
    let (result, failures) = handshake(&mtls, &client(&pki), "localhost").await;
    assert!(result.is_err());
    assert!(
        failures.iter().any(|f| f.contains("certificate")),
        "{failures:?}"
    );

    // A certificate from a CA the server does not trust.
    let foreign = TlsClientSetting {
        cert_file: s(&other.client_cert),
        key_file: s(&other.client_key),
        ..client(&pki)
    };
    let (result, failures) = handshake(&mtls, &foreign, "localhost").await;
    assert!(result.is_err());
    assert!(
        failures.iter().any(|f| f.contains("UnknownIssuer")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn plaintext_clients_fail_the_handshake_and_are_reported() {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = failures.clone();
    let incoming = accept_tls(listener, server(&pki).load(ALPN_HTTP).unwrap(), move |e| {
        seen.lock().unwrap().push(e.to_string())
    });
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP"),
        "no HTTP answer over plaintext"
    );
    for _ in 0..200 {
        if !failures.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let f = failures.lock().unwrap().clone();
    assert!(f.iter().any(|e| e.contains("corrupt message")), "{f:?}");

    // Dropping the receiver stops accepting and closes the socket.
    drop(incoming);
    let mut closed = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(closed, "listening socket closed");
}

#[test]
fn inline_keys_never_show_in_debug_output() {
    let s: TlsServerSetting = serde_json::from_value(serde_json::json!({
        "cert_pem": "-----BEGIN CERTIFICATE-----", "key_pem": "-----BEGIN PRIVATE KEY----- secret",
    }))
    .unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("secret") && shown.contains("[REDACTED]"),
        "{shown}"
    );
}
