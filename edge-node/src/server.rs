//! The running box: serves HTTP on a listener, runs housekeeping and the cloud link,
//! and shuts down in order (stop accepting, finish in-flight requests, drain the
//! writer) when a shutdown future resolves.

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
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
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
