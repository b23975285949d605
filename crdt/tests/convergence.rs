//! Property test: random concurrent edits on 2–3 replicas, exchanged through the sync
//! protocol in random order with dropped and duplicated messages, converge to the same
//! menu, and every edit to a field only one replica touched is there.

use crdt::menu::{self, ItemFields, MenuEdit, OptionChoice, OptionGroup};
use crdt::sync::SyncPeer;
use crdt::{DocKind, ItemId, ReplicatedDoc};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

const ITEMS: usize = 3;

fn base_fields(i: usize) -> ItemFields {
    ItemFields {
        name_zh: format!("菜{i}"),
        name_en: format!("Dish {i}"),
        category: "Rice".into(),
        price_fen: 1000,
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
                    price_delta_fen: 200,
                },
            ],
        }],
        allergens: vec![],
        daily_quota: Some(50),
        available: true,
        archived: false,
        sort_key: 0,
    }
}

/// The fields an edit can touch; each is owned by one replica or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    NameEn,
    NameZh,
    Price,
    Quota,
    Available,
    SortKey,
    LargeDelta,
}

const FIELDS: [Field; 7] = [
    Field::NameEn,
    Field::NameZh,
    Field::Price,
    Field::Quota,
    Field::Available,
    Field::SortKey,
    Field::LargeDelta,
];

fn edit(item: ItemId, field: Field, v: u16) -> MenuEdit {
    let v = i64::from(v);
    match field {
        Field::NameEn => MenuEdit::SetNameEn {
            item,
            name: format!("Dish v{v}"),
        },
        Field::NameZh => MenuEdit::SetNameZh {
            item,
            name: format!("菜 v{v}"),
        },
        Field::Price => MenuEdit::SetPrice { item, price_fen: v },
        Field::Quota => MenuEdit::SetQuota {
            item,
            daily_quota: Some(v as u32),
        },
        Field::Available => MenuEdit::SetAvailable {
            item,
            available: v % 2 == 0,
        },
        Field::SortKey => MenuEdit::SetSortKey { item, sort_key: v },
        Field::LargeDelta => MenuEdit::SetChoicePrice {
            item,
            group: "size".into(),
            choice: "large".into(),
            price_delta_fen: v,
        },
    }
}

fn read(item: &menu::MenuItem, field: Field) -> String {
    let f = &item.fields;
    match field {
        Field::NameEn => f.name_en.clone(),
        Field::NameZh => f.name_zh.clone(),
        Field::Price => f.price_fen.to_string(),
        Field::Quota => format!("{:?}", f.daily_quota),
        Field::Available => f.available.to_string(),
        Field::SortKey => f.sort_key.to_string(),
        Field::LargeDelta => f.option_groups[0].choices[1].price_delta_fen.to_string(),
    }
}

fn expected(field: Field, v: u16) -> String {
    let v = i64::from(v);
    match field {
        Field::NameEn => format!("Dish v{v}"),
        Field::NameZh => format!("菜 v{v}"),
        Field::Quota => format!("{:?}", Some(v as u32)),
        Field::Available => (v % 2 == 0).to_string(),
        _ => v.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Replica makes an edit: (item, field index, value, shared?).
    Edit {
        replica: usize,
        item: usize,
        field: usize,
        value: u16,
        shared: bool,
    },
    /// Replica generates its next message for a peer; it may be dropped or duplicated.
    Send {
        from: usize,
        to: usize,
        drop: bool,
        duplicate: bool,
    },
    /// The oldest message in flight from `from` to `to` is delivered.
    Deliver { from: usize, to: usize },
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    let r = 0..replicas;
    let step = prop_oneof![
        3 => (r.clone(), 0..ITEMS, 0..FIELDS.len(), 0..2000u16, prop::bool::weighted(0.2))
            .prop_map(|(replica, item, field, value, shared)| Step::Edit { replica, item, field, value, shared }),
        4 => (r.clone(), r.clone(), prop::bool::weighted(0.15), prop::bool::weighted(0.15))
            .prop_map(|(from, to, drop, duplicate)| Step::Send { from, to, drop, duplicate }),
        4 => (r.clone(), r).prop_map(|(from, to)| Step::Deliver { from, to }),
    ];
    prop::collection::vec(step, 1..120)
}

fn run(replicas: usize, plan: Vec<Step>) -> Result<(), TestCaseError> {
    let ids: Vec<ItemId> = (0..ITEMS).map(|_| ItemId::new()).collect();
    let mut origin = ReplicatedDoc::create(DocKind::Menu, b"origin").unwrap();
    let adds: Vec<MenuEdit> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| MenuEdit::AddItem {
            item: *id,
            fields: base_fields(i),
        })
        .collect();
    menu::apply(&mut origin, &adds, 0).unwrap();
    let snapshot = origin.save();
    let mut docs: Vec<ReplicatedDoc> = (0..replicas)
        .map(|r| {
            ReplicatedDoc::load(
                DocKind::Menu,
                [snapshot.as_slice()],
                format!("replica-{r}").as_bytes(),
            )
            .unwrap()
        })
        .collect();
    let mut peers: BTreeMap<(usize, usize), SyncPeer> = BTreeMap::new();
    let mut wire: BTreeMap<(usize, usize), VecDeque<Vec<u8>>> = BTreeMap::new();
    // Fields owned by exactly one replica: (item, field) -> (replica, last value).
    let mut owned: BTreeMap<(usize, Field), (usize, u16)> = BTreeMap::new();
    let owner = |item: usize, field: usize| (item * FIELDS.len() + field) % replicas;

    for step in plan {
        match step {
            Step::Edit {
                replica,
                item,
                field,
                value,
                shared,
            } => {
                // Owned fields are edited only by their owner; shared ones by anyone.
                let r = if shared { replica } else { owner(item, field) };
                let f = FIELDS[field];
                menu::apply(&mut docs[r], &[edit(ids[item], f, value)], 1).unwrap();
                if shared {
                    owned.remove(&(item, f));
                    owned.insert((item, f), (usize::MAX, value));
                } else if owned.get(&(item, f)).is_none_or(|(o, _)| *o != usize::MAX) {
                    owned.insert((item, f), (r, value));
                }
            }
            Step::Send {
                from,
                to,
                drop,
                duplicate,
            } if from != to => {
                let peer = peers.entry((from, to)).or_default();
                if let Some(msg) = peer.generate(&mut docs[from]) {
                    if !drop {
                        let q = wire.entry((from, to)).or_default();
                        if duplicate {
                            q.push_back(msg.clone());
                        }
                        q.push_back(msg);
                    }
                }
            }
            Step::Deliver { from, to } if from != to => {
                if let Some(msg) = wire.get_mut(&(from, to)).and_then(VecDeque::pop_front) {
                    let peer = peers.entry((to, from)).or_default();
                    peer.receive(&mut docs[to], &msg).unwrap();
                }
            }
            _ => {}
        }
    }

    // The link heals: every connection starts again from its persisted state (lost
    // messages are forgotten), and peers exchange reliably until all are quiet.
    let mut peers: BTreeMap<(usize, usize), SyncPeer> = peers
        .into_iter()
        .map(|(k, p)| (k, SyncPeer::decode(&p.encode()).unwrap()))
        .collect();
    for _round in 0..100 {
        let mut quiet = true;
        for from in 0..replicas {
            for to in 0..replicas {
                if from == to {
                    continue;
                }
                let msg = peers
                    .entry((from, to))
                    .or_default()
                    .generate(&mut docs[from]);
                if let Some(msg) = msg {
                    quiet = false;
                    peers
                        .entry((to, from))
                        .or_default()
                        .receive(&mut docs[to], &msg)
                        .unwrap();
                }
            }
        }
        if quiet {
            break;
        }
    }

    let projections: Vec<menu::MenuView> = docs.iter().map(|d| menu::project(d).unwrap()).collect();
    for p in &projections[1..] {
        prop_assert_eq!(p, &projections[0]);
    }
    let heads: Vec<_> = docs
        .iter_mut()
        .map(|d| {
            let mut h = d.heads();
            h.sort();
            h
        })
        .collect();
    for h in &heads[1..] {
        prop_assert_eq!(h, &heads[0]);
    }
    for ((item, field), (who, value)) in owned {
        if who == usize::MAX {
            continue;
        }
        let got = projections[0]
            .items
            .iter()
            .find(|i| i.id == ids[item])
            .unwrap();
        prop_assert_eq!(
            read(got, field),
            expected(field, value),
            "edit of {:?} on item {} by replica {} was lost",
            field,
            item,
            who
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn two_replicas_converge(plan in steps(2)) {
        run(2, plan)?;
    }

    #[test]
    fn three_replicas_converge(plan in steps(3)) {
        run(3, plan)?;
    }
}
