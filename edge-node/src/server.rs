//! The running box: serves HTTP on a listener (with connection limits and timeouts),
//! runs housekeeping and the cloud link, and shuts down in order (stop accepting,
//! finish in-flight requests, drain the writer) when a shutdown future resolves.

use crate::app::App;
use crate::http::Transport;
use crate::session::{KeyedPool, NetKey};
use std::future::Future;
use std::sync::Arc;

/// The staff HTTPS listener and its TLS configuration.
pub struct StaffHttps {
    pub listener: tokio::net::TcpListener,
    pub tls: Arc<rustls::ServerConfig>,
}

/// Serves the box on `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish, and drains the writer so every acknowledged write
/// is committed.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_staff(listener, None, app, shutdown).await
}

/// How often the kitchen's estimates are re-checked for students whose order's
/// estimate moved by a minute or more.
const ESTIMATES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the kitchen's snapshot is written (when it moved): after a crash a start
/// replays at most this much of the day's events on top of it. Copying a full kitchen
/// (50,000 open orders) holds it for a few milliseconds, so not more often.
const KITCHEN_SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// [`run`], also serving the same routes over HTTPS on the staff listener.
pub async fn run_with_staff(
    listener: tokio::net::TcpListener,
    staff: Option<StaffHttps>,
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
            let mut estimates = tokio::time::interval(ESTIMATES_EVERY);
            let mut snapshot = tokio::time::interval(KITCHEN_SNAPSHOT_EVERY);
            snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            estimates.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = app.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = crate::ops::orders::housekeeping(&app).await {
                            tracing::warn!(error = %e, "housekeeping failed; will retry");
                        }
                        if let Err(e) = crate::ops::accounts::refresh_states(&app).await {
                            tracing::warn!(error = %e, "reloading accounts failed; will retry");
                        }
                        match crate::ops::sync::prune_outbox(&app).await {
                            Ok(0) => {}
                            Ok(n) => tracing::debug!(events = n, "pruned acknowledged outbox events"),
                            Err(e) => tracing::warn!(error = %e, "pruning the outbox failed; will retry"),
                        }
                    }
                    _ = prune.tick() => app.limits.prune(),
                    _ = estimates.tick() => {
                        // Off the runtime's workers: a day of many open orders takes
                        // milliseconds to compare.
                        let app = app.clone();
                        if let Err(e) =
                            tokio::task::spawn_blocking(move || app.publish_estimates()).await
                        {
                            tracing::error!(error = %e, "working out the ready-time estimates failed");
                        }
                    }
                    _ = snapshot.tick() => {
                        if let Err(e) = app.save_kitchen().await {
                            tracing::warn!(error = %e, "keeping the kitchen's snapshot failed; will retry");
                        }
                    }
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
    let cap = connection_cap(app.config.connections_max);
    if cap < app.config.connections_max {
        tracing::warn!(
            configured = app.config.connections_max,
            used = cap,
            "connection cap lowered to stay below the open-file limit (raise LimitNOFILE)"
        );
    }
    // The staff listener has a share of its own, so a LAN full of held-open sockets
    // on the students' port cannot keep the kitchen out.
    let staff_share = if staff.is_some() {
        (cap / 16).max(16)
    } else {
        0
    };
    // Connections are capped per listener and per address (an IPv6 /64 counts as one).
    let permits = KeyedPool::new(
        cap.saturating_sub(staff_share).max(1),
        app.config.connections_per_address,
    );
    let plain = serve_http(
        listener,
        None,
        router.clone(),
        app.clone(),
        permits,
        async move {
            tokio::select! {
                () = shutdown => {}
                () = stop.cancelled() => {}
            }
            // Event streams never end on their own; tell them to.
            stop.cancel();
        },
    );
    let result = match staff {
        None => plain.await,
        Some(staff) => {
            let stop = app.shutdown.clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(staff.tls);
            let tls = serve_http(
                staff.listener,
                Some(acceptor),
                router,
                app.clone(),
                // Staff terminals are few: one address may hold only a few of the
                // staff listener's connections.
                KeyedPool::new(
                    staff_share,
                    app.config.connections_per_address.min(STAFF_PER_ADDRESS),
                ),
                async move { stop.cancelled().await },
            );
            let (a, b) = tokio::join!(plain, tls);
            a.and(b)
        }
    };
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

/// Connections one address may hold on the staff listener.
const STAFF_PER_ADDRESS: usize = 32;

/// How long shutdown waits for open connections to finish their current request.
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// HTTP/1.1 (over TLS when `tls` is given) with the limits `axum::serve` does not set:
/// a header-read timeout (which also closes idle keep-alive connections; a TLS
/// handshake gets the same time) and `permits`, the listener's cap on open connections
/// in all and per address (beyond it a new connection is closed at once, so held-open
/// sockets cannot exhaust the process's files). Each request sees the peer address as `ConnectInfo`
/// and its listener as [`Transport`].
async fn serve_http(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    app: App,
    permits: KeyedPool<NetKey>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Plain
    };
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
        let Ok(permit) = permits.open(NetKey::of(peer.ip())) else {
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
                req.extensions_mut().insert(transport);
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let open = app.metrics.connections_open.clone();
        open.inc();
        match &tls {
            None => {
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    // Errors here are the client's (a reset, a header timeout).
                    let _ = connection.await;
                    open.dec();
                    drop(permit);
                });
            }
            Some(acceptor) => {
                // The handshake gets the header-read time; a client that never
                // finishes it is closed like one that never sends a header.
                let handshake = acceptor.accept(stream);
                let limit = app.config.header_read_timeout;
                let http = http.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) = tokio::time::timeout(limit, handshake).await {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection).await;
                    }
                    open.dec();
                    drop(permit);
                });
            }
        }
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
