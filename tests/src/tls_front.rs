//! TLS in front of a plain-TCP test server (the fake coordinator): the
//! helper takes plain `http://` only from a coordinator on loopback, so a
//! fake reached over a namespace's veth must speak `https://`. The front
//! terminates TLS with a certificate from a throwaway CA
//! ([`crate::netns::make_tls`]) and copies each connection's bytes to and
//! from its own connection to the backend, so the backend's view (one TCP
//! connection per client, cut when the test cuts it) stays the same.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use tokio::runtime::Runtime;

/// The front, serving until dropped.
pub struct TlsFront {
    /// `https://ADDR:PORT`.
    pub url: String,
    /// The CA certificate (PEM) the client must trust.
    pub ca_pem: String,
    runtime: Option<Runtime>,
}

impl TlsFront {
    /// Serves TLS on `listener` (bound wherever the test wants it, e.g.
    /// inside a namespace) with a certificate for its address, made in
    /// `dir`, and forwards each connection to `backend` (reachable from the
    /// test process's own namespace, e.g. on its loopback).
    pub fn start(dir: &Path, listener: TcpListener, backend: SocketAddr) -> TlsFront {
        let addr = listener.local_addr().expect("the listener has an address");
        std::fs::create_dir_all(dir).expect("create the TLS front's directory");
        let ca = crate::netns::make_tls(dir, &[addr.ip()]);
        let ca_pem = std::fs::read_to_string(&ca).expect("read the test CA");
        let acceptor = acceptor(dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start the TLS front's runtime");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("TLS front: can't use the listener: {e}");
                    return;
                }
            };
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        // A client that gave up during the handshake.
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        eprintln!("TLS front: the backend {backend} is not answering");
                        return;
                    };
                    // Ends when either side closes or is cut; dropping both
                    // closes the other, as a direct connection would.
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        let host = match addr.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        TlsFront {
            url: format!("https://{host}:{}", addr.port()),
            ca_pem,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A TLS acceptor with `server.pem` and `server.key` from `dir`.
fn acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    let cert_pem = std::fs::read(dir.join("server.pem")).expect("read server.pem");
    let key_pem = std::fs::read(dir.join("server.key")).expect("read server.key");
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("server.pem holds certificates");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("server.key is PEM")
        .expect("server.key holds a private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the test certificate and key match");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
