//! The running box: serves HTTP on a listener (with connection limits and timeouts),
//! runs housekeeping and the cloud link, and shuts down in order (stop accepting,
//! finish in-flight requests, drain the writer) when a shutdown future resolves.

use crate::app::App;
use std::future::Future;
use std::sync::Arc;

/// Serves the box on `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish, and drains the writer so every acknowledged write
/// is committed.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::http::router(app.clone());
    let mut tasks = tokio::task::JoinSet::new();
    {
        let app = app.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(app.config.housekeeping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prune = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = app.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = crate::ops::orders::housekeeping(&app).await {
                            tracing::warn!(error = %e, "housekeeping failed; will retry");
                        }
                    }
                    _ = prune.tick() => app.limits.prune(),
                }
            }
        });
    }
    if let Some(cloud) = &app.config.cloud {
        match crate::link::client_config(cloud) {
            Ok(config) => {
                let link = Arc::new(crate::link::BoxLink { app: app.clone() });
                tasks.spawn(cloud_sync::client::run(
                    link,
                    config,
                    app.sync_status.clone(),
                    app.shutdown.clone(),
                ));
            }
            // The box keeps selling without the cloud; the reason is in the log and
            // in the staff API's sync state.
            Err(e) => tracing::error!(error = %e, "cloud sync is configured but cannot start"),
        }
    }
    let stop = app.shutdown.clone();
    let server = serve_http(listener, router, app.clone(), async move {
        tokio::select! {
            () = shutdown => {}
            () = stop.cancelled() => {}
        }
        // Event streams never end on their own; tell them to.
        stop.cancel();
    });
    let result = server.await;
    app.close().await;
    while tasks.join_next().await.is_some() {}
    result
}

/// Open files kept back from the connection cap: the database, its WAL and shared
/// memory, read connections, the link's socket, logs.
const FILES_RESERVED: u64 = 128;

/// The connection cap actually used: the configured one, lowered to stay below the
/// process's open-file limit so the box can always open its database and answer.
fn connection_cap(configured: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let room = soft.saturating_sub(FILES_RESERVED).max(16);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// How long shutdown waits for open connections to finish their current request.
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// HTTP/1.1 with the limits `axum::serve` does not set: a header-read timeout (which
/// also closes idle keep-alive connections) and a cap on open connections (beyond it
/// a new connection is closed at once, so held-open sockets cannot exhaust the
/// process's files). Each request sees the peer address as `ConnectInfo`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let cap = connection_cap(app.config.connections_max);
    if cap < app.config.connections_max {
        tracing::warn!(
            configured = app.config.connections_max,
            used = cap,
            "connection cap lowered to stay below the open-file limit (raise LimitNOFILE)"
        );
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of files or a connection reset before accept: wait a moment
                    // instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            app.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let open = app.metrics.connections_open.clone();
        open.inc();
        tokio::spawn(async move {
            // Errors here are the client's (a reset, a header timeout): nothing to do.
            let _ = connection.await;
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_MAX, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain time; closing them");
    }
    Ok(())
}
