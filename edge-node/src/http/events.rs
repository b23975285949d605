//! Server-Sent Events: a student's own order changes, and every outbox event for staff.
//!
//! Subscribing happens before any catch-up read, so nothing committed in between is
//! missed; events are deduplicated by sequence number. A subscriber too slow for the
//! live buffer gets a `resync` event and should reload.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{Query, SessionEnds, Staff, Student};
use crate::app::App;
use crate::session::Role;
use crate::session::{PoolPermit, PoolRefusal, StreamPool};
use crate::store::outbox;
use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use canteen_api::events::OutboxEvent;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Catch-up on connect replays at most this many stored events; further back, `resync`.
const CATCH_UP_MAX: usize = 5 * outbox::PAGE_MAX;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(student_events))
        .routes(routes!(staff_events))
}

fn to_sse(event: &OutboxEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.clone())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("resync"))
}

fn resync() -> Event {
    Event::default().event("resync").data("reload")
}

/// How often an open stream re-checks its account and session.
const SESSION_CHECK: Duration = Duration::from_secs(5);

/// Resolves when the stream's session is over: the box shuts down, the token expires,
/// or the account is deactivated or no longer has `allowed` role (checked every few
/// seconds, so a deactivated account's open stream ends too, not only its next request).
async fn session_over(
    app: App,
    account: uuid::Uuid,
    ends: i64,
    allowed: fn(crate::session::Role) -> bool,
) {
    let stop = app.shutdown.clone();
    let watch = async move {
        loop {
            tokio::time::sleep(SESSION_CHECK).await;
            let expired = app.clock.now().timestamp() >= ends;
            let still = app
                .accounts
                .get(account)
                .is_some_and(|a| a.active && allowed(a.role));
            if expired || !still {
                return;
            }
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = watch => {}
    }
}

/// Live outbox events matching `keep`, ending with `over`.
fn live(
    over: impl std::future::Future<Output = ()> + Send + 'static,
    rx: tokio::sync::broadcast::Receiver<OutboxEvent>,
    after_seq: i64,
    keep: impl Fn(&OutboxEvent) -> bool + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    BroadcastStream::new(rx)
        .filter_map(move |item| {
            let out = match item {
                Ok(e) if e.seq > after_seq && keep(&e) => Some(Ok(to_sse(&e))),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(_)) => Some(Ok(resync())),
            };
            std::future::ready(out)
        })
        .take_until(over)
}

fn permit(pool: &StreamPool, account: uuid::Uuid) -> Result<PoolPermit<uuid::Uuid>, ApiError> {
    pool.open(account).map_err(|why| match why {
        PoolRefusal::Full => ApiError::overloaded(),
        PoolRefusal::KeyFull(n) => ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyStreams,
            format!("this account already has {n} event streams open; close one first"),
        )
        .retry_after(5),
    })
}

/// My orders' changes as they happen: a Server-Sent Events stream whose event names
/// are outbox kinds (`order.placed`, `order.paid`, …, `order.ready`), whose `id` is the
/// event's sequence number and whose `data` is the event as JSON (`OutboxEvent`). A
/// `resync` event (data `reload`) means events were missed: reload the orders. An
/// `order.estimate` event (no `id`; `data` = `{order_id, ready_estimate,
/// ready_promised_at, running_late_min}`) says the kitchen's estimate of one of my
/// orders moved by a minute or more (`running_late_min` only while it runs late).
#[utoipa::path(get, path = "/api/student/events", tag = "student",
    responses((status = 200, description = "Server-Sent Events; each `data` is an OutboxEvent", content_type = "text/event-stream", body = String),
        (status = 429, description = "this account has too many event streams open", body = ErrorBody),
        (status = 503, description = "too many event streams open", body = ErrorBody)))]
async fn student_events(
    State(app): State<App>,
    Student(me): Student,
    Extension(SessionEnds(ends)): Extension<SessionEnds>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = permit(&app.student_streams, me.0)?;
    let rx = app.events.subscribe();
    let moved = BroadcastStream::new(app.estimates.subscribe()).filter_map(move |item| {
        std::future::ready(match item {
            Ok(m) if m.student_id == me => Some(Ok(Event::default()
                .event("order.estimate")
                .json_data(&m)
                .unwrap_or_else(|_| resync()))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(Ok(resync())),
        })
    });
    let over = session_over(app.clone(), me.0, ends, |r| r == Role::Student);
    let changes = live(std::future::pending(), rx, 0, move |e| {
        e.payload.order().is_some_and(|(_, student)| student == me)
    });
    let stream = stream::select(changes, moved)
        .take_until(over)
        .map(move |e| {
            let _held = &permit;
            e
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AfterQuery {
    /// Replay stored events after this sequence number first (or send `Last-Event-ID`).
    #[param(minimum = 0)]
    after_seq: Option<i64>,
}

/// Every outbox event as a Server-Sent Events stream (event name = kind, `id` = sequence
/// number, `data` = the `OutboxEvent` as JSON). Reconnect with `Last-Event-ID` (or
/// `?after_seq=`) to catch up on what was missed; `resync` means reload.
#[utoipa::path(get, path = "/api/staff/events", tag = "staff", params(AfterQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last sequence number seen")),
    responses((status = 200, description = "Server-Sent Events; each `data` is an OutboxEvent", content_type = "text/event-stream", body = String),
        (status = 429, description = "this account has too many event streams open", body = ErrorBody),
        (status = 503, description = "too many event streams open", body = ErrorBody)))]
async fn staff_events(
    State(app): State<App>,
    staff: Staff,
    Extension(SessionEnds(ends)): Extension<SessionEnds>,
    headers: HeaderMap,
    Query(q): Query<AfterQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = permit(&app.staff_streams, staff.id.0)?;
    let rx = app.events.subscribe();
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let (backlog, mut last) = match from_header.or(q.after_seq) {
        None => (Vec::new(), i64::MAX),
        Some(after) => {
            let backlog = app
                .readers
                .read(move |c| {
                    let mut all = Vec::new();
                    if after < outbox::pruned_through(c)? {
                        // Events it missed are gone: it must reload (the resync below).
                        return Ok(None);
                    }
                    let mut cursor = after;
                    while all.len() < CATCH_UP_MAX {
                        let page = outbox::after(c, cursor, outbox::PAGE_MAX)?;
                        let Some(tail) = page.last() else { break };
                        cursor = tail.seq;
                        all.extend(page);
                    }
                    Ok(Some(all))
                })
                .await?;
            match backlog {
                Some(backlog) => {
                    let last = backlog.last().map_or(after, |e| e.seq);
                    (backlog, last)
                }
                None => (Vec::new(), i64::MIN),
            }
        }
    };
    let mut head: Vec<Event> = backlog.iter().map(to_sse).collect();
    if backlog.len() >= CATCH_UP_MAX || last == i64::MIN {
        head.push(resync());
    }
    if last == i64::MAX || last == i64::MIN {
        // A fresh subscriber (or one told to reload) wants only what happens from now on.
        last = 0;
    }
    let stream = stream::iter(head.into_iter().map(Ok))
        .chain(live(
            session_over(app.clone(), staff.id.0, ends, |r| r != Role::Student),
            rx,
            last,
            |_| true,
        ))
        .map(move |e| {
            let _held = &permit;
            e
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
