//! Peers on the sync link that are hostile or simply newer, against real processes:
//! a cloud that sends a document schema the box does not know, a DEFLATE bomb and an
//! account with huge argon2 costs (a stand-in cloud speaking the real protocol), and
//! a box that sends the cloud a DEFLATE bomb. Releases apart: a box upgraded before its
//! cloud, and a box of the previous release (protocol version 1) against this cloud.

use cloud_sync::proto::{Account, BATCH_MAX, CloudWelcome, Message, WireEvent};
use cloud_sync::{identity, wire};
use crdt::settings::SettingsEdit;
use crdt::{DocKind, ReplicatedDoc};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tests::world::{RawBox, World, assert_same_totals, caught_up, hello_v1, orders, read};
use tests::{Api, EdgeProcess, FAST_ENV, cloud_command, cloud_env, eventually, path_str};

/// The menu as a newer cloud would hold it: the genesis every replica shares, then a
/// change to a schema version 2 with a field this build does not know.
fn newer_menu() -> automerge::AutoCommit {
    use automerge::transaction::Transactable;
    let mut genesis = ReplicatedDoc::create(DocKind::Menu, b"newer-cloud").unwrap();
    let mut doc = automerge::AutoCommit::load(&genesis.save())
        .unwrap()
        .with_actor(automerge::ActorId::from(b"newer-cloud".as_slice()));
    doc.put(automerge::ROOT, "schema_version", 2u64).unwrap();
    doc.put(automerge::ROOT, "loyalty_points", "double on Fridays")
        .unwrap();
    doc.commit();
    doc
}

/// Settings with an announcement, a change this build knows.
fn settings_with_announcement() -> ReplicatedDoc {
    let mut doc = ReplicatedDoc::create(DocKind::Settings, b"newer-cloud").unwrap();
    crdt::settings::apply(
        &mut doc,
        &[SettingsEdit::SetAnnouncement {
            text: "Menus from the new cloud".into(),
        }],
        1_000,
    )
    .unwrap();
    doc
}

/// Accounts the stand-in cloud sends: one whose argon2 costs would make every login
/// attempt allocate 4 GiB, and a good one.
fn accounts() -> Vec<Account> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"hostile-test-salt").unwrap();
    let good = argon2::Argon2::default()
        .hash_password(b"135791", &salt)
        .unwrap()
        .to_string();
    let huge = "$argon2id$v=19$m=4194304,t=3,p=1$aG9zdGlsZS10ZXN0LXNhbHQ$\
                AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    vec![
        Account {
            role: "student".into(),
            login: "2099100".into(),
            name: "Costly".into(),
            secret_hash: huge.into(),
            active: true,
        },
        Account {
            role: "student".into(),
            login: "2099101".into(),
            name: "Fine".into(),
            secret_hash: good,
            active: true,
        },
    ]
}

/// What the stand-in cloud saw.
#[derive(Default)]
struct Seen {
    menu_messages: AtomicUsize,
    settings_messages: AtomicUsize,
    bombed: std::sync::atomic::AtomicBool,
}

/// A cloud of a newer release (and not a friendly one), on loopback, with the campus
/// CA's cloud certificate: welcomes the box, acknowledges its events, sends a menu of
/// schema version 2, a DEFLATE bomb before good settings, and the accounts above.
async fn newer_cloud(ca: &Path, seen: Arc<Seen>) -> (std::net::SocketAddr, quinn::Endpoint) {
    stand_in_cloud(ca, move |conn| {
        let seen = seen.clone();
        async move {
            let _ = connection(conn, seen).await;
        }
    })
}

/// Serves QUIC on loopback with the campus CA's cloud certificate, handing each
/// connection to `handle`.
fn stand_in_cloud<F, Fut>(ca: &Path, handle: F) -> (std::net::SocketAddr, quinn::Endpoint)
where
    F: Fn(quinn::Connection) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let config = identity::server_config(
        &ca.join(identity::CA_CERT),
        &ca.join(identity::CLOUD_CERT),
        &ca.join(identity::CLOUD_KEY),
    )
    .unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            if let Ok(conn) = incoming.await {
                tokio::spawn(handle(conn));
            }
        }
    });
    (addr, endpoint)
}

async fn connection(conn: quinn::Connection, seen: Arc<Seen>) -> anyhow::Result<()> {
    let (mut control, recv) = conn.accept_bi().await?;
    let mut inbox = wire::reader(recv);
    let Message::HelloV2(hello) = wire::next(&mut inbox).await? else {
        anyhow::bail!("expected a version 2 hello");
    };
    wire::send(
        &mut control,
        &Message::WelcomeV2(CloudWelcome {
            version: 3,
            cloud_incarnation: "newer-cloud".into(),
            acked_seq: hello.acked_seq,
            acked_digest: String::new(),
            rebased: false,
        }),
    )
    .await?;
    loop {
        let (send, recv) = conn.accept_bi().await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            let _ = stream(send, recv, seen).await;
        });
    }
}

async fn stream(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    seen: Arc<Seen>,
) -> anyhow::Result<()> {
    use automerge::sync::SyncDoc;
    let mut inbox = wire::reader(recv);
    match wire::next(&mut inbox).await? {
        Message::Events { .. } => loop {
            if let Message::Events { events } = wire::next(&mut inbox).await?
                && let Some(last) = events.last()
            {
                let through_seq = last.seq;
                wire::send(&mut send, &Message::Ack { through_seq }).await?;
            }
        },
        Message::AccountsFrom { .. } => {
            wire::send(
                &mut send,
                &Message::Accounts {
                    cursor: 1,
                    accounts: accounts(),
                },
            )
            .await?;
            std::future::pending::<()>().await;
            Ok(())
        }
        Message::DocSync { doc, .. } if doc == "menu" => {
            let mut menu = newer_menu();
            let mut state = automerge::sync::State::new();
            let counter = &seen.menu_messages;
            exchange(&mut send, &mut inbox, &doc, counter, |incoming| {
                if let Some(data) = incoming {
                    let message = automerge::sync::Message::decode(data)?;
                    menu.sync().receive_sync_message(&mut state, message)?;
                }
                let mut out = Vec::new();
                while let Some(m) = menu.sync().generate_sync_message(&mut state) {
                    out.push(m.encode());
                }
                Ok(out)
            })
            .await
        }
        Message::DocSync { doc, .. } => {
            let mut settings = settings_with_announcement();
            let mut peer = crdt::sync::SyncPeer::new();
            // The first stream's first answer is a bomb; then good settings.
            if !seen.bombed.swap(true, Ordering::SeqCst) {
                let data = tests::deflate_bomb_message(1024);
                wire::send(
                    &mut send,
                    &Message::DocSync {
                        doc: doc.clone(),
                        data,
                    },
                )
                .await?;
            }
            let counter = &seen.settings_messages;
            exchange(&mut send, &mut inbox, &doc, counter, |incoming| {
                if let Some(data) = incoming {
                    peer.receive(&mut settings, data)?;
                }
                Ok(std::iter::from_fn(|| peer.generate(&mut settings)).collect())
            })
            .await
        }
        _ => Ok(()),
    }
}

/// One document's exchange on a stream: `step` takes the box's message (none at
/// first) and returns what to answer. Counts the box's messages in `counter`.
async fn exchange(
    send: &mut quinn::SendStream,
    inbox: &mut wire::Inbox,
    doc: &str,
    counter: &AtomicUsize,
    mut step: impl FnMut(Option<&[u8]>) -> anyhow::Result<Vec<Vec<u8>>>,
) -> anyhow::Result<()> {
    let mut incoming: Option<Vec<u8>> = None;
    loop {
        for data in step(incoming.as_deref())? {
            let doc = doc.to_owned();
            wire::send(send, &Message::DocSync { doc, data }).await?;
        }
        incoming = match wire::next(inbox).await? {
            Message::DocSync { data, .. } if !data.is_empty() => {
                counter.fetch_add(1, Ordering::SeqCst);
                Some(data)
            }
            _ => None,
        };
    }
}

/// Found: document changes from the cloud were checked only by the projection, so a
/// newer cloud could make the stored menu one the box refuses to load at its next
/// start, and a refused document was retried at once, in a loop. Sync messages were
/// inflated without a cap, and accounts were applied unchecked. Now each is refused,
/// logged and reported; the box keeps selling, takes what it knows (the settings),
/// asks again with back-off, and restarts cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_or_hostile_cloud_cannot_break_the_box() {
    let w = World::new("canteen-h");
    let seen = Arc::new(Seen::default());
    let (addr, endpoint) = newer_cloud(&w.ca, seen.clone()).await;
    let edge = w.edge(addr, "canteen-h", "canteen-h");
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let dishes = api.staff_menu(&manager).await.unwrap().len();
    assert!(dishes > 0);

    // What it knows arrives: the settings after the bomb was refused.
    eventually(
        "the newer cloud's announcement",
        Duration::from_secs(60),
        || async {
            let (_, menu) = api.get("/api/menu", None).await?;
            Ok((menu["announcement"] == "Menus from the new cloud").then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", read(&w.log("box.log"))));
    // The good account arrives; the costly one is refused.
    eventually("the good account", Duration::from_secs(30), || async {
        let (status, _) = api
            .post(
                "/api/student/login",
                None,
                &json!({"student_number": "2099101", "pin": "135791"}),
            )
            .await?;
        Ok((status == 200).then_some(()))
    })
    .await
    .unwrap();
    let (status, _) = api
        .post(
            "/api/student/login",
            None,
            &json!({"student_number": "2099100", "pin": "135791"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 401);

    // The menu of schema version 2 is refused and reported, not taken.
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let state = eventually("the refusal reported", Duration::from_secs(30), || async {
        let (_, s) = api.get("/api/staff/sync", Some(&staff)).await?;
        let refused = s["refused_documents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(refused
            .iter()
            .any(|r| {
                r.as_str()
                    .is_some_and(|r| r.starts_with("menu:") && r.contains("schema version 2"))
            })
            .then_some(s))
    })
    .await
    .unwrap();
    assert_eq!(state["connected"], true, "{state}");
    let staff_menu = api.staff_menu(&manager).await.unwrap();
    assert_eq!(staff_menu.len(), dishes);

    // It keeps selling meanwhile, and its events reach the cloud.
    orders(&api, 12).await;
    eventually("events acknowledged", Duration::from_secs(30), || async {
        let (_, s) = api.get("/api/staff/sync", Some(&staff)).await?;
        Ok((s["unacked_events"] == 0).then_some(()))
    })
    .await
    .unwrap();

    // Refused documents are asked for again with back-off, not in a loop: over ten
    // seconds, a handful of messages (a loop sends thousands).
    let before = seen.menu_messages.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = seen.menu_messages.load(Ordering::SeqCst) - before;
    assert!(during <= 6, "{during} menu messages in 10 s");
    assert!(seen.settings_messages.load(Ordering::SeqCst) >= 1);

    let log = read(&w.log("box.log"));
    assert!(log.contains("inflate beyond"), "the bomb is logged");
    assert!(log.contains("refused an account from the cloud"), "{log}");

    // It restarts cleanly: the stored documents load, the menu is the box's own.
    let status = edge.terminate().unwrap();
    assert!(status.success(), "{status}");
    let edge = EdgeProcess::serve(&w.box_data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let (status, _) = api.get("/readyz", None).await.unwrap();
    assert_eq!(status, 200);
    let manager = api.manager().await.unwrap();
    assert_eq!(api.staff_menu(&manager).await.unwrap().len(), dishes);
    let (_, menu) = api.get("/api/menu", None).await.unwrap();
    assert_eq!(menu["announcement"], "Menus from the new cloud");
    endpoint.close(0u32.into(), b"done");
}

/// A box (enrolled, maybe stolen) that sends the cloud a sync message inflating to a
/// gigabyte: refused before it is inflated, logged, and the other boxes sync on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_bomb_from_a_box_is_refused_and_other_boxes_sync_on() {
    let w = World::new("canteen-good");
    let evil = w.dir.path().join("evil");
    cloud_command(&[
        "enroll",
        "--node-id",
        "canteen-evil",
        "--ca-dir",
        path_str(&w.ca),
        "--out",
        path_str(&evil),
    ])
    .unwrap();
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let env = cloud_env(cloud.quic, "canteen-good", "canteen-good", &w.enrol);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let edge = EdgeProcess::serve_logged(&w.box_data, &env, Some(&w.log("box.log"))).unwrap();
    let api = Api::new(&edge.base);

    // The hostile box: a version 1 hello, then a menu stream opened with the bomb.
    let raw = RawBox::connect(cloud.quic, &evil, "canteen-evil", &hello_v1("canteen-evil"))
        .await
        .unwrap();
    assert!(matches!(raw.answer, Message::Welcome { .. }));
    let conn = raw.conn.clone();
    let bomb = tests::deflate_bomb_message(1024);
    assert!(bomb.len() < 2 * 1024 * 1024);
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    wire::send(
        &mut send,
        &Message::DocSync {
            doc: "menu".into(),
            data: bomb,
        },
    )
    .await
    .unwrap();
    eventually(
        "the cloud to refuse the bomb",
        Duration::from_secs(30),
        || async {
            let log = read(&w.log("cloud.log"));
            Ok(
                (log.contains("refused a box's document changes")
                    && log.contains("inflate beyond"))
                .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    let sync = cloud.get("/nodes/canteen-evil/sync").await.unwrap();
    assert!(
        sync["refused_documents"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("inflate")),
        "{sync}"
    );

    // The good box sells and syncs on, and the cloud's menu replica of it is whole.
    orders(&api, 24).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    caught_up(&api, &staff, &cloud, "canteen-good").await;
    let menu = cloud.get("/nodes/canteen-good/menu").await.unwrap();
    assert!(!menu["items"].as_array().unwrap().is_empty(), "{menu}");
    conn.close(0u32.into(), b"done");
}

/// What an older stand-in cloud does with a box's streams: acknowledges every batch of
/// events through its last one, until the connection ends.
async fn acknowledge_events(conn: quinn::Connection) {
    while let Ok((mut send, recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut inbox = wire::reader(recv);
            while let Ok(message) = wire::next(&mut inbox).await {
                if let Message::Events { events } = message
                    && let Some(last) = events.last()
                {
                    let ack = Message::Ack {
                        through_seq: last.seq,
                    };
                    if wire::send(&mut send, &ack).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// A cloud of the previous release, speaking protocol version 1 only: it closes a
/// connection whose first message it cannot read with "expected hello", as it did.
async fn version_1_cloud(ca: &Path) -> (std::net::SocketAddr, quinn::Endpoint) {
    stand_in_cloud(ca, |conn| async move {
        let Ok((mut control, recv)) = conn.accept_bi().await else {
            return;
        };
        let mut inbox = wire::reader(recv);
        match wire::next(&mut inbox).await {
            Ok(Message::Hello { version: 1, .. }) => {}
            _ => {
                conn.close(3u32.into(), b"expected hello");
                return;
            }
        }
        let welcome = Message::Welcome {
            version: 1,
            acked_seq: 0,
        };
        if wire::send(&mut control, &welcome).await.is_err() {
            return;
        }
        acknowledge_events(conn).await;
    })
}

/// A box upgraded before its cloud: the old cloud cannot read `HelloV2`, so the box
/// speaks version 1 to it and keeps syncing its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_upgraded_before_its_cloud_keeps_syncing_in_version_1() {
    let w = World::new("canteen-v1");
    let (addr, endpoint) = version_1_cloud(&w.ca).await;
    let edge = w.edge(addr, "canteen-v1", "canteen-v1");
    let api = Api::new(&edge.base);
    orders(&api, 12).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let state = eventually(
        "the old cloud to acknowledge every event",
        Duration::from_secs(60),
        || async {
            let (_, s) = api.get("/api/staff/sync", Some(&staff)).await?;
            Ok((s["connected"] == true && s["unacked_events"] == 0).then_some(s))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", read(&w.log("box.log"))));
    assert!(state["last_success_unix"].as_u64().is_some(), "{state}");
    assert!(
        read(&w.log("box.log")).contains("speaks protocol version 1 only"),
        "the box says why it speaks the old version"
    );
    endpoint.close(0u32.into(), b"done");
}

/// A cloud of the release before status messages (protocol version 2): it refuses a
/// version 3 hello as that release did, and otherwise welcomes in version 2 and
/// acknowledges events. Counts what reaches its control stream after the welcome.
async fn version_2_cloud(
    ca: &Path,
    after_welcome: Arc<AtomicUsize>,
) -> (std::net::SocketAddr, quinn::Endpoint) {
    stand_in_cloud(ca, move |conn| {
        let after_welcome = after_welcome.clone();
        async move {
            let Ok((mut control, recv)) = conn.accept_bi().await else {
                return;
            };
            let mut inbox = wire::reader(recv);
            let hello = match wire::next(&mut inbox).await {
                Ok(Message::HelloV2(h)) if h.version == 2 => h,
                Ok(Message::HelloV2(h)) => {
                    let reason = format!(
                        "protocol version {} is not supported; this cloud speaks versions 1 to 2",
                        h.version
                    );
                    let _ = wire::send(
                        &mut control,
                        &Message::Refused {
                            code: cloud_sync::proto::RefuseCode::Version,
                            reason: reason.clone(),
                        },
                    )
                    .await;
                    let _ = control.finish();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    conn.close(1u32.into(), reason.as_bytes());
                    return;
                }
                _ => {
                    conn.close(3u32.into(), b"expected hello");
                    return;
                }
            };
            let welcome = Message::WelcomeV2(CloudWelcome {
                version: 2,
                cloud_incarnation: "old-cloud".into(),
                acked_seq: hello.acked_seq,
                acked_digest: String::new(),
                rebased: false,
            });
            if wire::send(&mut control, &welcome).await.is_err() {
                return;
            }
            let counter = after_welcome.clone();
            tokio::spawn(async move {
                while wire::next(&mut inbox).await.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            acknowledge_events(conn).await;
        }
    })
}

/// A box upgraded before its cloud, once more: the cloud of the release before status
/// messages refuses version 3, so the box speaks version 2 to it, syncs its events, and
/// sends no status (the old cloud would not read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_upgraded_before_its_cloud_speaks_version_2_without_status() {
    let w = World::new("canteen-v2");
    let after_welcome = Arc::new(AtomicUsize::new(0));
    let (addr, endpoint) = version_2_cloud(&w.ca, after_welcome.clone()).await;
    let mut env = cloud_env(addr, "canteen-v2", "canteen-v2", &w.enrol);
    env.push(("EDGE_CLOUD_STATUS_S".into(), "1".into()));
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(FAST_ENV.iter().copied())
        .collect();
    let edge = EdgeProcess::serve_logged(&w.box_data, &env, Some(&w.log("box.log"))).unwrap();
    let api = Api::new(&edge.base);
    orders(&api, 12).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    eventually(
        "the old cloud to acknowledge every event",
        Duration::from_secs(60),
        || async {
            let (_, s) = api.get("/api/staff/sync", Some(&staff)).await?;
            Ok((s["connected"] == true && s["unacked_events"] == 0).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", read(&w.log("box.log"))));
    assert!(
        read(&w.log("box.log")).contains("speaks protocol version 2 at most"),
        "the box says why it speaks the older version"
    );
    // Several status intervals later, nothing reached the old cloud's control stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(after_welcome.load(Ordering::SeqCst), 0);
    endpoint.close(0u32.into(), b"done");
}

/// A cloud upgraded before its boxes: a box of the previous release says a version 1
/// `Hello` (no incarnation, no digests) and sends its outbox on an events stream, as
/// that release did. This cloud welcomes it in version 1, acknowledges every batch, and
/// its totals for the box equal the box's own exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_of_the_previous_release_syncs_with_this_cloud_in_version_1() {
    let day = DayAtCloud::new("canteen-old").await;
    let (cloud, api, staff, events) = (&day.cloud, &day.api, &day.staff, &day.events);
    let last = events.last().unwrap().seq;
    match &day.raw.answer {
        Message::Welcome { version, acked_seq } => {
            assert_eq!((*version, *acked_seq), (1, 0), "welcomed in version 1");
        }
        other => panic!("a version 1 box was answered {other:?}"),
    }
    let conn = day.raw.conn.clone();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut acks = wire::reader(recv);
    wire::send(&mut send, &Message::Events { events: Vec::new() })
        .await
        .unwrap();
    // Batches of the size that release sent; each acknowledged through its last event.
    let half = events.len() / 2;
    for batch in [&events[..half], &events[half..]] {
        assert!(batch.len() <= BATCH_MAX);
        send_batch(&mut send, batch).await;
        let through = batch.last().unwrap().seq;
        loop {
            match wire::next(&mut acks).await.unwrap() {
                Message::Ack { through_seq } if through_seq == through => break,
                Message::Ack { through_seq } if through_seq < through => {}
                other => panic!("expected the ack through {through}, got {other:?}"),
            }
        }
    }
    day.raw.close().await;

    let nodes = cloud.get("/nodes").await.unwrap();
    let node = nodes
        .as_array()
        .and_then(|n| n.iter().find(|x| x["node_id"] == "canteen-old"))
        .cloned()
        .unwrap();
    assert_eq!(node["acked_seq"].as_u64(), Some(last), "{node}");
    let summary = cloud.get("/nodes/canteen-old/summary").await.unwrap();
    assert_eq!(summary["events"].as_u64(), Some(last), "{summary}");
    assert_same_totals(api, staff, cloud, "canteen-old").await;
}

/// A box's day, taken while it had no link (its outbox is what it would send), and a
/// raw connection for it to the cloud, which said `Hello` in version 1 as the previous
/// release does. (Fields drop in order: the processes before their directories.)
struct DayAtCloud {
    raw: RawBox,
    events: Vec<WireEvent>,
    staff: String,
    api: Api,
    _edge: EdgeProcess,
    cloud: tests::CloudProcess,
    _w: World,
}

impl DayAtCloud {
    async fn new(node: &str) -> Self {
        let w = World::new(node);
        let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
        let edge = EdgeProcess::serve(&w.box_data, FAST_ENV).unwrap();
        let api = Api::new(&edge.base);
        orders(&api, 24).await;
        let staff = api.staff("staff", "staff-pass").await.unwrap();
        let events = outbox_events(&api, &staff).await;
        let raw = RawBox::connect(cloud.quic, &w.enrol, node, &hello_v1(node))
            .await
            .unwrap();
        Self {
            _w: w,
            cloud,
            _edge: edge,
            api,
            staff,
            events,
            raw,
        }
    }
}

/// Sends `batch` on an events stream, as a box does.
async fn send_batch(send: &mut quinn::SendStream, batch: &[WireEvent]) {
    wire::send(
        send,
        &Message::Events {
            events: batch.to_vec(),
        },
    )
    .await
    .unwrap();
}

/// The box's outbox as the events a box sends.
async fn outbox_events(api: &Api, staff: &str) -> Vec<WireEvent> {
    api.outbox(staff)
        .await
        .unwrap()
        .iter()
        .map(|e| WireEvent {
            seq: e["seq"].as_u64().unwrap(),
            kind: e["kind"].as_str().unwrap().into(),
            aggregate_id: e["aggregate_id"].as_str().unwrap().into(),
            payload: e["payload"].to_string(),
            at: e["at"].as_str().unwrap().into(),
        })
        .collect()
}

/// Batches that arrive together are stored together (one transaction, one cumulative
/// acknowledgement), but only while each goes on where the one before it ends: a box
/// that sends part of a batch again (or anything out of line) has each batch taken on
/// its own, as before. Four batches sent back to back, the third repeating half of
/// the second: however the cloud finds them waiting (the unit test of `gather` fixes
/// the order), every event is stored once, the acknowledgements only go forward, and
/// the cloud's totals equal the box's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_back_to_back_and_a_resent_one_are_each_stored_once() {
    let day = DayAtCloud::new("canteen-burst").await;
    let (cloud, api, staff, events) = (&day.cloud, &day.api, &day.staff, &day.events);
    let n = events.len();
    let last = events[n - 1].seq;
    assert!(n >= 8, "{n} events");
    let conn = day.raw.conn.clone();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut acks = wire::reader(recv);
    // All four before any acknowledgement: the last three arrive while the first is
    // stored, and the cloud finds them waiting.
    for batch in [
        &events[..n / 4],
        &events[n / 4..n / 2],
        &events[3 * n / 8..3 * n / 4],
        &events[3 * n / 4..],
    ] {
        send_batch(&mut send, batch).await;
    }
    let mut seen = 0;
    while seen < last {
        match wire::next(&mut acks).await {
            Ok(Message::Ack { through_seq }) => {
                assert!(
                    through_seq >= seen && through_seq <= last,
                    "ack {through_seq} after {seen}"
                );
                seen = through_seq;
            }
            other => panic!("expected acknowledgements through {last}, got {other:?}"),
        }
    }
    day.raw.close().await;

    let summary = cloud.get("/nodes/canteen-burst/summary").await.unwrap();
    assert_eq!(summary["events"].as_u64(), Some(last), "{summary}");
    assert_same_totals(api, staff, cloud, "canteen-burst").await;
}

/// A box sends nothing on its accounts stream after `AccountsFrom`: anything more it
/// sends there ends the stream, rather than wait unread in the cloud's memory,
/// charged to the box. The connection and the box's other streams go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_talks_on_its_accounts_stream_has_it_ended() {
    let day = DayAtCloud::new("canteen-chatty").await;
    let conn = day.raw.conn.clone();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut inbox = wire::reader(recv);
    for _ in 0..4 {
        wire::send(&mut send, &Message::AccountsFrom { cursor: 0 })
            .await
            .unwrap();
    }
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match wire::next(&mut inbox).await {
                Ok(Message::Accounts { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the cloud kept the accounts stream open");
    assert!(end.is_err(), "expected the stream's end, got {end:?}");

    // The connection is still up: the day's events on a new stream are stored.
    assert!(conn.close_reason().is_none());
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut acks = wire::reader(recv);
    send_batch(&mut send, &day.events).await;
    let last = day.events[day.events.len() - 1].seq;
    match wire::next(&mut acks).await {
        Ok(Message::Ack { through_seq }) if through_seq == last => {}
        other => panic!("expected the batch acknowledged through {last}, got {other:?}"),
    }
    day.raw.close().await;
    assert_same_totals(&day.api, &day.staff, &day.cloud, "canteen-chatty").await;
}
