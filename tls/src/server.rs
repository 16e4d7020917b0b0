//! Serving TLS: handshakes completed off the accept path, then handed to the server (tonic,
//! axum) as ready streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

/// A server-side TLS connection over TCP.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this, accepting waits (bounds the memory and tasks
/// a flood of half-open connections can take).
const MAX_HANDSHAKES: usize = 1024;

/// Accepts TCP connections on `listener` (with `TCP_NODELAY`, as sluice's plaintext servers)
/// and runs each TLS handshake in its own task, so a slow or silent client holds up nobody.
/// Finished connections come out of the returned channel with their peer address. A failed
/// handshake (plaintext client, unknown client certificate under mTLS, timeout...) is logged
/// with the peer and the reason, and reported to `on_failure`. Dropping the receiver stops
/// accepting and closes the listening socket.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    on_failure: impl Fn(&str) + Send + Sync + 'static,
) -> mpsc::Receiver<(TlsStream, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let on_failure = Arc::new(on_failure);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => break,
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // never closed
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, on_failure) = (acceptor.clone(), tx.clone(), on_failure.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let failure =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                    };
                tracing::warn!(%peer, error = %failure, "TLS handshake failed");
                on_failure(&failure);
            });
        }
    });
    rx
}

/// A TLS listener for `axum::serve` (the OTLP/HTTP receiver, the Prometheus exporter). Serve
/// it with `.tap_io(|_| ())` and `into_make_service_with_connect_info::<SocketAddr>()` to get
/// the peer address as `ConnectInfo<SocketAddr>`, as with a plain `TcpListener`.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        on_failure: impl Fn(&str) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            connections: accept_tls(listener, config, on_failure),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsStream, SocketAddr) {
        match self.connections.recv().await {
            Some(c) => c,
            // The acceptor only ends when this receiver is dropped: not while we hold it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
