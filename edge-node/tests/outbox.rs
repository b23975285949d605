//! Pruning the outbox: events the cloud acknowledged are deleted once older than the
//! box keeps them; nothing the cloud has not acknowledged, nothing recent, never the
//! acknowledged event itself, and the sequence goes on without reusing a number.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::TestBox;
use edge_node::ops::sync::{acknowledge, prune_outbox};
use http_body_util::BodyExt;
use serde_json::Value;

/// A page of the outbox as staff read it (logged in afresh: the clock jumps days).
async fn page(b: &TestBox, after: i64) -> Value {
    let staff = b.staff().await;
    let r = b
        .get(
            &format!("/api/staff/outbox?after_seq={after}&limit=1000"),
            Some(&staff),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

fn seqs(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

/// A box where one student may keep many unpaid orders of plenty of noodles.
async fn roomy() -> TestBox {
    TestBox::with(
        |s| edge_node::config::Settings {
            unpaid_orders_per_student: Some(100),
            orders_per_min_student: Some(100),
            portions_per_dish: Some(1000),
            ..s
        },
        5,
    )
    .await
}

async fn place_some(b: &TestBox, n: u32) {
    let student = b.student(1).await;
    for _ in 0..n {
        let r = b.place(&student, b.noodle_order(1)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
}

#[tokio::test]
async fn acknowledged_events_older_than_kept_are_pruned_and_nothing_else() {
    let b = roomy().await;
    place_some(&b, 6).await;
    let old_last = page(&b, 0).await["last_seq"].as_i64().unwrap();
    assert!(old_last >= 6, "{old_last}");
    // The cloud has all but the last two of today's events.
    let acked = old_last - 2;
    acknowledge(&b.app, acked as u64).await.unwrap();

    // Within the two weeks kept, nothing goes.
    b.clock.advance(chrono::Duration::days(13));
    assert_eq!(prune_outbox(&b.app).await.unwrap(), 0);
    assert_eq!(seqs(&page(&b, 0).await), (1..=old_last).collect::<Vec<_>>());

    // Two weeks and a day later, with new orders: the acknowledged old events go, but
    // not the acknowledged one itself, nor the two the cloud has not confirmed, nor
    // anything new.
    b.clock.advance(chrono::Duration::days(2));
    place_some(&b, 2).await;
    let last = page(&b, 0).await["last_seq"].as_i64().unwrap();
    assert_eq!(prune_outbox(&b.app).await.unwrap(), (acked - 1) as usize);
    let left = page(&b, 0).await;
    assert_eq!(seqs(&left), (acked..=last).collect::<Vec<_>>());
    assert_eq!(left["pruned_through"], acked - 1);
    assert_eq!(left["last_seq"], last);
    // A second sweep finds nothing more.
    assert_eq!(prune_outbox(&b.app).await.unwrap(), 0);

    // Everything acknowledged now: the old ones go, today's stay.
    acknowledge(&b.app, last as u64).await.unwrap();
    let today = last - old_last;
    assert_eq!(
        prune_outbox(&b.app).await.unwrap(),
        (old_last - acked + 1) as usize
    );
    let left = page(&b, 0).await;
    assert_eq!(seqs(&left), (old_last + 1..=last).collect::<Vec<_>>());
    assert_eq!(seqs(&left).len() as i64, today);

    // After a restart the numbers go on from the last one: none is used twice.
    let b = b.reopen().await;
    place_some(&b, 1).await;
    let after = page(&b, 0).await;
    let numbers = seqs(&after);
    assert_eq!(numbers.first(), Some(&(old_last + 1)));
    assert!(numbers.last().copied().unwrap() > last, "{numbers:?}");
    assert_eq!(after["pruned_through"], old_last);

    // A staff stream resuming from before the gap is told to reload, not handed a
    // history with a hole in it.
    let first = first_frame(&b, 3).await;
    assert!(first.contains("event: resync"), "{first}");
    // From after the gap it replays as before.
    let first = first_frame(&b, old_last).await;
    assert!(first.contains(&format!("id: {}", old_last + 1)), "{first}");
}

/// The first frame of a staff event stream resuming after `after_seq`.
async fn first_frame(b: &TestBox, after_seq: i64) -> String {
    let staff = b.staff().await;
    let res = tower::ServiceExt::oneshot(
        b.router.clone(),
        Request::get(format!(
            "/api/staff/events?access_token={staff}&after_seq={after_seq}"
        ))
        .body(Body::empty())
        .unwrap(),
    )
    .await
    .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    String::from_utf8_lossy(&first).into_owned()
}

#[tokio::test]
async fn events_the_cloud_never_acknowledged_are_kept_however_old() {
    let b = roomy().await;
    place_some(&b, 3).await;
    let last = page(&b, 0).await["last_seq"].as_i64().unwrap();
    b.clock.advance(chrono::Duration::days(60));
    assert_eq!(prune_outbox(&b.app).await.unwrap(), 0);
    assert_eq!(seqs(&page(&b, 0).await), (1..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_keep_window_shorter_than_the_kitchen_needs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::test_settings(dir.path());
    settings.outbox_keep_days = Some(1);
    let err = edge_node::config::Config::resolve(settings).unwrap_err();
    assert!(err.to_string().contains("outbox_keep_days"), "{err}");
}
