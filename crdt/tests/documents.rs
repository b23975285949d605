//! Menu and settings documents: edits, merges, conflicts, genesis, storage errors.

use crdt::menu::{self, ItemFields, MenuEdit, OptionChoice, OptionGroup};
use crdt::settings::{self, PickupSlot, SettingsEdit};
use crdt::{DocError, DocKind, ItemId, ReplicatedDoc, conflicts};

fn fields(name: &str) -> ItemFields {
    ItemFields {
        name_zh: format!("{name}（中）"),
        name_en: name.into(),
        category: "Noodles".into(),
        price_fen: 1800,
        option_groups: vec![OptionGroup {
            id: "size".into(),
            name_zh: "份量".into(),
            name_en: "Size".into(),
            required: true,
            min_choices: 1,
            max_choices: 1,
            choices: vec![
                OptionChoice {
                    id: "regular".into(),
                    name_zh: "标准".into(),
                    name_en: "Regular".into(),
                    price_delta_fen: 0,
                },
                OptionChoice {
                    id: "large".into(),
                    name_zh: "大份".into(),
                    name_en: "Large".into(),
                    price_delta_fen: 300,
                },
            ],
        }],
        allergens: vec!["gluten".into()],
        daily_quota: Some(100),
        available: true,
        archived: false,
        sort_key: 0,
    }
}

fn replica(actor: &str) -> ReplicatedDoc {
    ReplicatedDoc::create(DocKind::Menu, actor.as_bytes()).unwrap()
}

fn sync_all(a: &mut ReplicatedDoc, b: &mut ReplicatedDoc) {
    let (mut pa, mut pb) = (crdt::sync::SyncPeer::new(), crdt::sync::SyncPeer::new());
    for _ in 0..50 {
        let ma = pa.generate(a);
        let mb = pb.generate(b);
        if ma.is_none() && mb.is_none() {
            return;
        }
        if let Some(m) = ma {
            pb.receive(b, &m).unwrap();
        }
        if let Some(m) = mb {
            pa.receive(a, &m).unwrap();
        }
    }
    panic!("sync did not settle");
}

#[test]
fn independently_created_replicas_merge_without_losing_items() {
    // Two boxes create their menu documents on their own (no shared history but the
    // deterministic genesis): both items survive the merge, no conflict on `items`.
    let (mut a, mut b) = (replica("box-a"), replica("cloud"));
    let (x, y) = (ItemId::new(), ItemId::new());
    menu::apply(
        &mut a,
        &[MenuEdit::AddItem {
            item: x,
            fields: fields("Noodles A"),
        }],
        1,
    )
    .unwrap();
    menu::apply(
        &mut b,
        &[MenuEdit::AddItem {
            item: y,
            fields: fields("Noodles B"),
        }],
        2,
    )
    .unwrap();
    sync_all(&mut a, &mut b);
    let (pa, pb) = (menu::project(&a).unwrap(), menu::project(&b).unwrap());
    assert_eq!(pa, pb);
    assert_eq!(pa.items.len(), 2);
    assert!(conflicts(&a).is_empty(), "{:?}", conflicts(&a));
}

#[test]
fn concurrent_edits_of_different_fields_both_survive() {
    let mut a = replica("box");
    let id = ItemId::new();
    menu::apply(
        &mut a,
        &[MenuEdit::AddItem {
            item: id,
            fields: fields("Beef noodles"),
        }],
        1,
    )
    .unwrap();
    let mut b = ReplicatedDoc::load(DocKind::Menu, [a.save().as_slice()], b"cloud").unwrap();
    menu::apply(
        &mut a,
        &[MenuEdit::SetPrice {
            item: id,
            price_fen: 2000,
        }],
        2,
    )
    .unwrap();
    menu::apply(
        &mut b,
        &[MenuEdit::SetNameEn {
            item: id,
            name: "Lanzhou beef noodles".into(),
        }],
        3,
    )
    .unwrap();
    menu::apply(
        &mut b,
        &[MenuEdit::SetAllergen {
            item: id,
            tag: "egg".into(),
            present: true,
        }],
        4,
    )
    .unwrap();
    menu::apply(
        &mut a,
        &[MenuEdit::SetAllergen {
            item: id,
            tag: "gluten".into(),
            present: false,
        }],
        5,
    )
    .unwrap();
    sync_all(&mut a, &mut b);
    let item = menu::project(&a).unwrap().items.remove(0);
    assert_eq!(item.fields.price_fen, 2000);
    assert_eq!(item.fields.name_en, "Lanzhou beef noodles");
    assert_eq!(item.fields.allergens, vec!["egg".to_string()]);
    assert_eq!(menu::project(&b).unwrap().items[0], item);
    assert!(conflicts(&a).is_empty());
}

/// A box and the cloud that set an item's price concurrently, synced: `(box, cloud,
/// item)`.
fn concurrent_prices(at_box: i64, at_cloud: i64) -> (ReplicatedDoc, ReplicatedDoc, ItemId) {
    let mut a = replica("box");
    let id = ItemId::new();
    menu::apply(
        &mut a,
        &[MenuEdit::AddItem {
            item: id,
            fields: fields("Rice"),
        }],
        1,
    )
    .unwrap();
    let mut b = ReplicatedDoc::load(DocKind::Menu, [a.save().as_slice()], b"cloud").unwrap();
    menu::apply(
        &mut a,
        &[MenuEdit::SetPrice {
            item: id,
            price_fen: at_box,
        }],
        2,
    )
    .unwrap();
    menu::apply(
        &mut b,
        &[MenuEdit::SetPrice {
            item: id,
            price_fen: at_cloud,
        }],
        2,
    )
    .unwrap();
    sync_all(&mut a, &mut b);
    (a, b, id)
}

#[test]
fn the_same_field_set_concurrently_is_a_visible_conflict_with_one_winner() {
    let (mut a, b, id) = concurrent_prices(1500, 1700);
    let (ca, cb) = (conflicts(&a), conflicts(&b));
    assert_eq!(ca, cb);
    assert_eq!(ca.len(), 1);
    assert_eq!(
        ca[0].path,
        vec!["items".to_string(), id.to_string(), "price_fen".into()]
    );
    let mut values = ca[0].values.clone();
    let winner: i64 = values[0].parse().unwrap();
    assert_eq!(menu::project(&a).unwrap().items[0].fields.price_fen, winner);
    values.sort();
    assert_eq!(values, vec!["1500".to_string(), "1700".to_string()]);
    // A later edit of the field resolves the conflict.
    menu::apply(
        &mut a,
        &[MenuEdit::SetPrice {
            item: id,
            price_fen: 1600,
        }],
        3,
    )
    .unwrap();
    assert!(conflicts(&a).is_empty());
}

/// Either value of a conflict can be kept, the one the projection shows included (an
/// edit that writes only changed values would leave that conflict standing), and
/// what is kept holds at both replicas once they sync.
#[test]
fn a_conflict_is_settled_on_either_value_at_both_replicas() {
    for keep_winner in [true, false] {
        let (mut a, mut b, _) = concurrent_prices(1500, 1700);
        let conflict = conflicts(&b).remove(0);
        let keep = if keep_winner {
            conflict.values[0].clone()
        } else {
            conflict.values[1].clone()
        };
        assert!(menu::settle(&mut b, &conflict.path, "not a price", 3).is_err());
        assert!(conflicts(&b).len() == 1, "a refused value changes nothing");
        menu::settle(&mut b, &conflict.path, &keep, 3).unwrap();
        sync_all(&mut a, &mut b);
        for doc in [&a, &b] {
            assert!(conflicts(doc).is_empty(), "keep_winner {keep_winner}");
            let price = menu::project(doc).unwrap().items[0].fields.price_fen;
            assert_eq!(price.to_string(), keep);
        }
    }
}

#[test]
fn edits_are_all_or_nothing_and_validated() {
    let mut a = replica("box");
    let id = ItemId::new();
    menu::apply(
        &mut a,
        &[MenuEdit::AddItem {
            item: id,
            fields: fields("Soup"),
        }],
        1,
    )
    .unwrap();
    let before = menu::project(&a).unwrap();
    let err = menu::apply(
        &mut a,
        &[
            MenuEdit::SetPrice {
                item: id,
                price_fen: 999,
            },
            MenuEdit::SetPrice {
                item: id,
                price_fen: -1,
            },
        ],
        2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("price_fen"), "{err}");
    assert_eq!(
        menu::project(&a).unwrap(),
        before,
        "a refused batch changes nothing"
    );
    let err = menu::apply(
        &mut a,
        &[MenuEdit::SetNameEn {
            item: id,
            name: "x".repeat(81),
        }],
        3,
    )
    .unwrap_err();
    assert!(err.to_string().contains("name_en"));
    let err = menu::apply(
        &mut a,
        &[MenuEdit::SetPrice {
            item: ItemId::new(),
            price_fen: 1,
        }],
        3,
    )
    .unwrap_err();
    assert!(matches!(err, menu::EditError::NoItem(_)));
    // Archiving the only choice but one leaves a group whose limits still hold.
    menu::apply(
        &mut a,
        &[MenuEdit::SetChoiceArchived {
            item: id,
            group: "size".into(),
            choice: "large".into(),
            archived: true,
        }],
        4,
    )
    .unwrap();
    assert_eq!(
        menu::project(&a).unwrap().items[0].fields.option_groups[0]
            .choices
            .len(),
        1
    );
    // Archive, never delete.
    menu::apply(
        &mut a,
        &[MenuEdit::SetArchived {
            item: id,
            archived: true,
        }],
        5,
    )
    .unwrap();
    assert!(menu::project(&a).unwrap().items[0].fields.archived);
}

#[test]
fn diff_of_a_whole_item_writes_only_the_changed_fields() {
    let id = ItemId::new();
    let old = menu::MenuItem {
        id,
        fields: fields("Dumplings"),
    };
    let mut new = old.clone();
    new.fields.price_fen = 1900;
    new.fields.option_groups[0].choices.push(OptionChoice {
        id: "xl".into(),
        name_zh: "特大".into(),
        name_en: "Extra large".into(),
        price_delta_fen: 600,
    });
    let edits = menu::diff(Some(&old), &new);
    assert_eq!(
        edits[0],
        MenuEdit::SetPrice {
            item: id,
            price_fen: 1900
        }
    );
    assert!(
        edits
            .iter()
            .any(|e| matches!(e, MenuEdit::AddChoice { .. }))
    );
    assert!(
        !edits
            .iter()
            .any(|e| matches!(e, MenuEdit::SetNameEn { .. }))
    );
    let mut a = replica("box");
    menu::apply(&mut a, &menu::diff(None, &old), 1).unwrap();
    menu::apply(&mut a, &edits, 2).unwrap();
    assert_eq!(menu::project(&a).unwrap().items[0], new);
}

#[test]
fn storage_round_trips_and_damaged_chunks_are_refused() {
    let mut a = replica("box");
    let id = ItemId::new();
    menu::apply(
        &mut a,
        &[MenuEdit::AddItem {
            item: id,
            fields: fields("Tea"),
        }],
        1,
    )
    .unwrap();
    let snapshot = a.save();
    menu::apply(
        &mut a,
        &[MenuEdit::SetPrice {
            item: id,
            price_fen: 250,
        }],
        2,
    )
    .unwrap();
    let chunk = a.save_incremental();
    let loaded = ReplicatedDoc::load(
        DocKind::Menu,
        [snapshot.as_slice(), chunk.as_slice()],
        b"box",
    )
    .unwrap();
    assert_eq!(menu::project(&loaded).unwrap(), menu::project(&a).unwrap());

    let truncated = &chunk[..chunk.len() - 7];
    let err = ReplicatedDoc::load(DocKind::Menu, [snapshot.as_slice(), truncated], b"box")
        .err()
        .expect("truncated chunk refused");
    assert!(err.to_string().contains("menu"), "{err}");
    let mut flipped = chunk.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    assert!(
        ReplicatedDoc::load(
            DocKind::Menu,
            [snapshot.as_slice(), flipped.as_slice()],
            b"box"
        )
        .is_err()
    );
    // A chunk whose predecessor is lost: refused, not silently half-loaded.
    let err = ReplicatedDoc::load(DocKind::Menu, [chunk.as_slice()], b"box")
        .err()
        .expect("missing deps refused");
    assert!(
        matches!(
            err,
            DocError::MissingChanges { .. } | DocError::Corrupt { .. }
        ),
        "{err}"
    );
    // A settings document is not a menu.
    let mut s = ReplicatedDoc::create(DocKind::Settings, b"box").unwrap();
    let err = ReplicatedDoc::load(DocKind::Menu, [s.save().as_slice()], b"box")
        .err()
        .expect("wrong kind refused");
    assert!(matches!(err, DocError::WrongKind { .. }), "{err}");
}

#[test]
fn settings_edit_merge_and_validate() {
    let mut a = ReplicatedDoc::create(DocKind::Settings, b"box").unwrap();
    let mut b = ReplicatedDoc::create(DocKind::Settings, b"cloud").unwrap();
    let defaults = settings::project(&a).unwrap();
    assert_eq!(defaults.payment_modes, vec!["counter".to_string()]);
    assert_eq!(defaults.hours.len(), 7);
    settings::apply(
        &mut a,
        &[SettingsEdit::SetAnnouncement {
            text: "今日特价：牛肉面".into(),
        }],
        1,
    )
    .unwrap();
    settings::apply(
        &mut b,
        &[
            SettingsEdit::AddSlot {
                slot: PickupSlot {
                    id: "1130".into(),
                    start: "11:30".into(),
                    end: "11:45".into(),
                    capacity: 80,
                },
            },
            SettingsEdit::SetPaymentMode {
                mode: "campus_card".into(),
                enabled: true,
            },
            SettingsEdit::SetHours {
                day: "sun".into(),
                open: "11:00".into(),
                close: "13:00".into(),
                closed: true,
            },
        ],
        2,
    )
    .unwrap();
    sync_all(&mut a, &mut b);
    let s = settings::project(&a).unwrap();
    assert_eq!(s, settings::project(&b).unwrap());
    assert_eq!(s.announcement, "今日特价：牛肉面");
    assert_eq!(s.pickup_slots.len(), 1);
    assert_eq!(
        s.payment_modes,
        vec!["counter".to_string(), "campus_card".to_string()]
    );
    assert!(s.hours[6].closed);
    let err = settings::apply(
        &mut a,
        &[SettingsEdit::SetHours {
            day: "mon".into(),
            open: "14:00".into(),
            close: "13:00".into(),
            closed: false,
        }],
        3,
    )
    .unwrap_err();
    assert!(err.to_string().contains("hours/mon"), "{err}");
    let err =
        settings::apply(&mut a, &[SettingsEdit::SetUnpaidTimeout { seconds: 5 }], 3).unwrap_err();
    assert!(err.to_string().contains("unpaid_timeout_s"));
}

#[test]
fn persisted_sync_state_sends_less_than_a_fresh_one() {
    let mut a = replica("box");
    let ids: Vec<ItemId> = (0..30).map(|_| ItemId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        menu::apply(
            &mut a,
            &[MenuEdit::AddItem {
                item: *id,
                fields: fields(&format!("Dish {i}")),
            }],
            i as i64,
        )
        .unwrap();
    }
    let mut b = replica("cloud");
    let (mut pa, mut pb) = (crdt::sync::SyncPeer::new(), crdt::sync::SyncPeer::new());
    let exchange = |a: &mut ReplicatedDoc,
                    b: &mut ReplicatedDoc,
                    pa: &mut crdt::sync::SyncPeer,
                    pb: &mut crdt::sync::SyncPeer| {
        let mut bytes = 0;
        for _ in 0..50 {
            let (ma, mb) = (pa.generate(a), pb.generate(b));
            if ma.is_none() && mb.is_none() {
                return bytes;
            }
            if let Some(m) = ma {
                bytes += m.len();
                pb.receive(b, &m).unwrap();
            }
            if let Some(m) = mb {
                bytes += m.len();
                pa.receive(a, &m).unwrap();
            }
        }
        panic!("no settle")
    };
    exchange(&mut a, &mut b, &mut pa, &mut pb);
    // Reconnect: persisted states vs fresh ones, after 5 more edits.
    let (sa, sb) = (pa.encode(), pb.encode());
    for (i, id) in ids.iter().take(5).enumerate() {
        menu::apply(
            &mut a,
            &[MenuEdit::SetPrice {
                item: *id,
                price_fen: 2000 + i as i64,
            }],
            100,
        )
        .unwrap();
    }
    let mut a2 = a.fork();
    let mut b2 = b.fork();
    let persisted = exchange(
        &mut a,
        &mut b,
        &mut crdt::sync::SyncPeer::decode(&sa).unwrap(),
        &mut crdt::sync::SyncPeer::decode(&sb).unwrap(),
    );
    let fresh = exchange(
        &mut a2,
        &mut b2,
        &mut crdt::sync::SyncPeer::new(),
        &mut crdt::sync::SyncPeer::new(),
    );
    assert_eq!(menu::project(&a).unwrap(), menu::project(&b).unwrap());
    assert!(
        persisted < fresh,
        "persisted {persisted} bytes vs fresh {fresh}"
    );
}

/// A replica made for an older peer shares the genesis of its version, and nothing
/// newer than this build is created or loaded.
#[test]
fn replicas_are_made_at_a_peers_schema_version_and_never_beyond_this_build() {
    for kind in [DocKind::Menu, DocKind::Settings] {
        let supported = kind.schema_version();
        let mut current = ReplicatedDoc::create(kind, b"a").unwrap();
        let mut at = ReplicatedDoc::create_at(kind, supported, b"b").unwrap();
        assert_eq!(current.heads(), at.heads());
        assert_eq!(at.schema_version(), supported);
        assert!(matches!(
            ReplicatedDoc::create_at(kind, supported + 1, b"c"),
            Err(DocError::SchemaTooNew { .. })
        ));
        let saved = at.save();
        let mut loaded = ReplicatedDoc::load_at(kind, [saved.as_slice()], b"d", supported).unwrap();
        assert_eq!(loaded.heads(), current.heads());
        // Upgrading to a version below the one the document has leaves it as it is.
        loaded.upgrade_to(0).unwrap();
        assert_eq!(loaded.heads(), current.heads());
        assert!(loaded.check_loadable().is_ok());
    }
}

/// A peer's message is taken only if the caller's check accepts the document it
/// makes; a refused one changes neither the replica nor its sync state.
#[test]
fn receive_checked_takes_or_refuses_whole_messages() {
    use crdt::sync::{Received, SyncPeer};
    let mut cloud = replica("cloud");
    menu::apply(
        &mut cloud,
        &[MenuEdit::AddItem {
            item: ItemId::new(),
            fields: fields("Noodles"),
        }],
        1_000,
    )
    .unwrap();
    let mut take = |check_ok: bool| {
        let mut cloud_peer = SyncPeer::new();
        let mut local = replica("box");
        let mut peer = SyncPeer::new();
        let before = local.heads();
        let mut verdicts = Vec::new();
        for _ in 0..6 {
            if let Some(m) = peer.generate(&mut local) {
                cloud_peer.receive(&mut cloud, &m).unwrap();
            }
            if let Some(m) = cloud_peer.generate(&mut cloud) {
                verdicts.push(
                    peer.receive_checked(&mut local, &m, |trial| {
                        let items = menu::project(trial).unwrap().items.len();
                        if check_ok {
                            Ok(())
                        } else {
                            Err(format!("{items} items refused"))
                        }
                    })
                    .unwrap(),
                );
            }
        }
        (before, local, verdicts)
    };
    let (before, mut refused, verdicts) = take(false);
    assert!(
        verdicts.contains(&Received::Refused("1 items refused".into())),
        "{verdicts:?}"
    );
    assert_eq!(refused.heads(), before);
    assert!(menu::project(&refused).unwrap().items.is_empty());
    let (_, taken, verdicts) = take(true);
    assert!(
        verdicts.contains(&Received::Taken { changed: true }),
        "{verdicts:?}"
    );
    assert_eq!(menu::project(&taken).unwrap().items.len(), 1);
}
