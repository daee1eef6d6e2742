//! Test proxies in front of a broker: each serves its listener from a thread of its
//! own until the test process exits.

use std::future::Future;

/// Serve every connection accepted on `listener` with `handle`, on a runtime in a
/// thread of its own.
pub(super) fn serve<F, Fut>(listener: std::net::TcpListener, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                if let Ok((tcp, _)) = listener.accept().await {
                    tokio::spawn(handle(tcp));
                }
            }
        });
    });
}

/// A TLS terminator on `listener`, forwarding each connection to 127.0.0.1:`upstream`,
/// with the certificate chain `cert` and its key; it runs until the test process exits.
pub(super) fn tls_proxy(
    listener: std::net::TcpListener,
    upstream: u16,
    cert: &std::path::Path,
    key: &std::path::Path,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    serve(listener, move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
        }
    });
}

/// A Kafka-protocol proxy on `listener` to 127.0.0.1:`upstream` that passes requests and
/// answers one at a time, except that the answers to the Produce requests numbered in
/// `drop` (from 0, counting every connection) are swallowed and the client's connection
/// closed: the broker has written the records, the client cannot know it and sends them
/// again.
pub(super) fn answer_dropping_proxy(
    listener: std::net::TcpListener,
    upstream: u16,
    drop: &'static [usize],
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn frame(r: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut size = [0u8; 4];
        r.read_exact(&mut size).await.ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize + 4];
        buf[..4].copy_from_slice(&size);
        r.read_exact(&mut buf[4..]).await.ok()?;
        Some(buf)
    }
    let produced = std::sync::Arc::new(AtomicUsize::new(0));
    serve(listener, move |mut client| {
        let produced = produced.clone();
        async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            while let Some(req) = frame(&mut client).await {
                let api_key = i16::from_be_bytes([req[4], req[5]]);
                if up.write_all(&req).await.is_err() {
                    return;
                }
                let Some(resp) = frame(&mut up).await else {
                    return;
                };
                if api_key == 0 && drop.contains(&produced.fetch_add(1, Ordering::SeqCst)) {
                    return; // both connections close; the answer is lost
                }
                if client.write_all(&resp).await.is_err() {
                    return;
                }
            }
        }
    });
}
