//! The admin side's listener: plain HTTP on loopback only, HTTPS anywhere else (a
//! certificate from the campus CA, e.g. `cloud-sync enroll --https-name`), with a cap
//! on connections and a deadline for the TLS handshake and the request headers.

use axum::Router;
use axum::extract::ConnectInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Open admin connections beyond this are closed at once.
pub const CONNECTIONS_MAX: usize = 256;
/// A TLS handshake or a request's headers must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses an admin address beyond this machine without TLS: passwords and session
/// cookies would cross the network in the clear.
pub fn check_address(addr: SocketAddr, tls: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !tls {
        anyhow::bail!(
            "the admin listener on {addr} is not on loopback: give it a certificate \
             (--admin-tls-cert and --admin-tls-key) or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Serves `app` until `stop`, over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin listener: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let http = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .to_owned();
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    until_stopped(conn, &stop).await;
                }
                None => {
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    until_stopped(conn, &stop).await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one connection; at `stop`, finishes the request in flight and closes.
async fn until_stopped<I, S>(
    conn: hyper::server::conn::http1::Connection<I, S>,
    stop: &CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
