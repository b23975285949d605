//! The app's client against a real box (the `edge-node` binary on a demo canteen, via
//! the `tests` harness): logins, the order lifecycle, hand-over errors, stock, menu
//! edits, summary, sync state and the event stream. Build the binaries first
//! (`cargo build --workspace --bins`, as `scripts/test` does).

use canteen_api::menu::MenuEdit;
use canteen_api::staff::Role;
use canteen_api::stock::StaffStockAction;
use canteen_api::{ItemId, OrderEvent, OrderId, OrderState, OrderView};
use desktop_ui::client::{BoxClient, Trust};
use desktop_ui::events::{self, StreamNews};
use serde_json::{Value, json};
use std::time::Duration;
use tests::{Api, EdgeProcess, FAST_ENV, seed_demo};
use tokio_util::sync::CancellationToken;

async fn place_order(api: &Api, student: u32, item_id: ItemId) -> OrderView {
    let token = api.student(student).await.unwrap();
    let res = api
        .http
        .post(format!("{}/api/student/orders", api.base))
        .bearer_auth(&token)
        .header("idempotency-key", uuid_like(student, item_id))
        .json(&json!({"lines": [{"item_id": item_id, "quantity": 1}], "payment_mode": "counter"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "placing: {status} {body}");
    serde_json::from_value(body).unwrap()
}

fn uuid_like(student: u32, item: ItemId) -> String {
    format!("test-{student}-{item}")
}

/// Follows `staff`'s event stream until it says it is connected.
async fn follow_connected(
    staff: &BoxClient,
    stop: &CancellationToken,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<StreamNews>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(events::follow(staff.clone(), stop.clone(), move |n| {
        let _ = tx.send(n);
    }));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, StreamNews::Connected);
    (follower, rx)
}

/// Whether the stream announces a new order within 10 s.
async fn announces_new_order(rx: &mut tokio::sync::mpsc::UnboundedReceiver<StreamNews>) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(n) = rx.recv().await {
            if n == (StreamNews::Changed { new_order: true }) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap()
}

/// A dish a student can order without choosing options.
async fn plain_dish(staff: &BoxClient) -> canteen_api::menu::MenuItem {
    staff
        .staff_menu()
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|i| {
            i.fields.available
                && !i.fields.archived
                && i.fields.option_groups.iter().all(|g| g.min_choices == 0)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_works_the_whole_day_against_a_real_box() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(&data, FAST_ENV).unwrap();
    let api = Api::new(&edge.base);

    // Logins: a wrong password is the box's code, not a transport error.
    let anonymous = BoxClient::new(&edge.base).unwrap();
    let e = anonymous.login("staff", "nope").await.unwrap_err();
    assert_eq!(e.code(), "invalid_credentials");
    let login = anonymous.login("staff", "staff-pass").await.unwrap();
    assert_eq!(login.role, Role::Staff);
    let staff = anonymous.clone().with_token(login.token);
    let manager_login = anonymous.login("manager", "manager-pass").await.unwrap();
    assert_eq!(manager_login.role, Role::Manager);
    let manager = anonymous.clone().with_token(manager_login.token);

    // The event stream announces a new order.
    let stop = CancellationToken::new();
    let (follower, mut rx) = follow_connected(&staff, &stop).await;
    let item = plain_dish(&staff).await;
    let placed = place_order(&api, 1, item.id).await;
    let order_id: OrderId = placed.id;
    assert!(
        announces_new_order(&mut rx).await,
        "the stream announced the new order"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .unwrap()
        .unwrap();

    // The queue shows it; it is bumped through the lifecycle.
    let open = staff.open_orders().await.unwrap();
    let order = open.iter().find(|o| o.id == order_id).unwrap().clone();
    assert_eq!(order.state, OrderState::Placed);
    let number = order.pickup_number;

    // Handing over an unfinished order says so.
    let e = staff.hand_over(&number.to_string()).await.unwrap_err();
    assert_eq!(e.code(), "not_ready");

    let paid = staff
        .transition(order_id, OrderEvent::Pay, order.version)
        .await
        .unwrap();
    assert_eq!(paid.state, OrderState::Paid);
    // The version it was bumped against is now stale.
    let e = staff
        .transition(order_id, OrderEvent::StartPreparing, order.version)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "stale_version");
    let preparing = staff
        .transition(order_id, OrderEvent::StartPreparing, paid.version)
        .await
        .unwrap();
    let ready = staff
        .transition(order_id, OrderEvent::MarkReady, preparing.version)
        .await
        .unwrap();
    assert_eq!(ready.state, OrderState::Ready);

    // Hand-over by number, then again: already picked up; a wrong token: not found.
    let handed = staff.hand_over(&number.to_string()).await.unwrap();
    assert_eq!(handed.state, OrderState::PickedUp);
    let e = staff.hand_over(&handed.pickup_token).await.unwrap_err();
    assert_eq!(e.code(), "already_picked_up");
    let e = staff.hand_over(&"0f".repeat(32)).await.unwrap_err();
    assert_eq!(e.code(), "pickup_not_found");
    let (_, on_box) = api
        .get(&format!("/api/staff/orders/{order_id}"), staff.token())
        .await
        .unwrap();
    assert_eq!(on_box["state"], "picked_up");

    // Stock: sold out, back, restock.
    let sold_out = staff
        .stock(item.id, &StaffStockAction::SoldOut {})
        .await
        .unwrap();
    assert!(sold_out.sold_out);
    let level = staff
        .menu()
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|l| l.id == item.id)
        .unwrap();
    assert!(level.sold_out);
    staff
        .stock(item.id, &StaffStockAction::Back {})
        .await
        .unwrap();
    let restocked = staff
        .stock(item.id, &StaffStockAction::Restock { count: 5 })
        .await
        .unwrap();
    assert!(!restocked.sold_out);

    // Menu: staff may not edit; a manager may, by field and by whole item.
    let e = staff
        .menu_edits(&[MenuEdit::SetPrice {
            item: item.id,
            price_fen: 1800,
        }])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    let after = manager
        .menu_edits(&[MenuEdit::SetPrice {
            item: item.id,
            price_fen: 1800,
        }])
        .await
        .unwrap();
    let edited = after.items.iter().find(|i| i.id == item.id).unwrap();
    assert_eq!(edited.fields.price_fen, 1800);
    let mut fields = edited.fields.clone();
    fields.name_en = "Renamed".into();
    let saved = manager.update_item(item.id, &fields).await.unwrap();
    assert_eq!(saved.fields.name_en, "Renamed");
    assert_eq!(saved.fields.price_fen, 1800);
    assert!(after.conflicts.is_empty());

    // Day summary and sync state.
    let summary = staff.summary().await.unwrap();
    assert_eq!(summary.orders, 1);
    let sync = staff.sync_state().await.unwrap();
    assert!(!sync.configured);

    drop(edge);
}

/// Found: staff passwords and 4-hour tokens crossed the students' LAN in plain HTTP.
/// Now the box serves staff over HTTPS with a certificate its CA signed (here a box
/// without a cloud: `edge-node tls init`), and the app trusts only the CA it was given:
/// logins, the queue and the event stream work over TLS; a box whose certificate
/// another CA signed is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staff_app_speaks_https_to_a_box_its_campus_ca_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let tls = dir.path().join("tls");
    tests::edge_command(&[
        "tls",
        "init",
        "--dir",
        tests::path_str(&tls),
        "--name",
        "127.0.0.1",
    ])
    .unwrap();
    let other = dir.path().join("other-ca");
    tests::edge_command(&[
        "tls",
        "init",
        "--dir",
        tests::path_str(&other),
        "--name",
        "127.0.0.1",
    ])
    .unwrap();
    let cert = tls.join("https.pem");
    let key = tls.join("https.key");
    let mut env: Vec<(&str, &str)> = FAST_ENV.to_vec();
    env.push(("EDGE_STAFF_TLS_CERT", tests::path_str(&cert)));
    env.push(("EDGE_STAFF_TLS_KEY", tests::path_str(&key)));
    let (edge, https) = EdgeProcess::serve_https(&data, &env).unwrap();
    assert!(https.starts_with("https://127.0.0.1:"), "{https}");
    let api = Api::new(&edge.base);

    let trust = Trust {
        ca_pem: Some(std::fs::read(tls.join("ca.pem")).unwrap()),
        allow_plain_http: false,
    };
    let anonymous = BoxClient::with_trust(&https, &trust).unwrap();
    let login = anonymous.login("staff", "staff-pass").await.unwrap();
    let staff = anonymous.with_token(login.token);
    let stop = CancellationToken::new();
    let (follower, mut rx) = follow_connected(&staff, &stop).await;
    let item = plain_dish(&staff).await;
    let placed = place_order(&api, 2, item.id).await;
    assert!(
        announces_new_order(&mut rx).await,
        "the event stream works over TLS"
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
    let open = staff.open_orders().await.unwrap();
    assert!(open.iter().any(|o| o.id == placed.id));

    // A box with a certificate from another CA (a rogue box on the LAN) is refused
    // before any password is sent.
    let rogue_trust = Trust {
        ca_pem: Some(std::fs::read(other.join("ca.pem")).unwrap()),
        allow_plain_http: false,
    };
    let e = BoxClient::with_trust(&https, &rogue_trust)
        .unwrap()
        .login("staff", "staff-pass")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unreachable", "{e}");
    drop(edge);
}
