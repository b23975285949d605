//! Benchmark of the menu document: 300 items after 10,000 edits.
//!
//! `cargo run --release -p crdt --example menu_bench`
//!
//! Reports document size, load time, one edit's latency (and the box's whole edit
//! path: edit + incremental save + projection), and the sync of 100 new edits to a
//! peer with a persisted sync state versus a fresh one. Medians of repeated runs.

use crdt::menu::{self, ItemFields, MenuEdit, OptionChoice, OptionGroup};
use crdt::sync::SyncPeer;
use crdt::{DocKind, ItemId, ReplicatedDoc};
use std::time::{Duration, Instant};

const ITEMS: usize = 300;
const EDITS: usize = 10_000;

fn fields(i: usize) -> ItemFields {
    ItemFields {
        name_zh: format!("菜品{i}"),
        name_en: format!("Dish number {i}"),
        category: ["Noodles", "Rice", "Soup", "Drinks", "Dumplings"][i % 5].into(),
        price_fen: 1000 + (i as i64 % 20) * 50,
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
        sort_key: i as i64,
    }
}

/// A deterministic pseudo-random edit (xorshift), as staff make them: one field.
fn edit(ids: &[ItemId], n: usize) -> MenuEdit {
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let item = ids[(x % ids.len() as u64) as usize];
    match (x >> 20) % 5 {
        0 => MenuEdit::SetPrice {
            item,
            price_fen: 800 + (n as i64 % 1500),
        },
        1 => MenuEdit::SetQuota {
            item,
            daily_quota: Some((n % 200) as u32),
        },
        2 => MenuEdit::SetAvailable {
            item,
            available: n % 3 != 0,
        },
        3 => MenuEdit::SetNameEn {
            item,
            name: format!("Dish v{n}"),
        },
        _ => MenuEdit::SetChoicePrice {
            item,
            group: "size".into(),
            choice: "large".into(),
            price_delta_fen: (n % 600) as i64,
        },
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn sync(
    a: &mut ReplicatedDoc,
    b: &mut ReplicatedDoc,
    pa: &mut SyncPeer,
    pb: &mut SyncPeer,
) -> (usize, usize) {
    let (mut bytes, mut messages) = (0, 0);
    loop {
        let (ma, mb) = (pa.generate(a), pb.generate(b));
        if ma.is_none() && mb.is_none() {
            return (bytes, messages);
        }
        if let Some(m) = ma {
            bytes += m.len();
            messages += 1;
            pb.receive(b, &m).expect("receive");
        }
        if let Some(m) = mb {
            bytes += m.len();
            messages += 1;
            pa.receive(a, &m).expect("receive");
        }
    }
}

fn main() {
    let mut doc = ReplicatedDoc::create(DocKind::Menu, b"box-bench").expect("create");
    let ids: Vec<ItemId> = (0..ITEMS).map(|_| ItemId::new()).collect();
    let t = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        menu::apply(
            &mut doc,
            &[MenuEdit::AddItem {
                item: *id,
                fields: fields(i),
            }],
            i as i64,
        )
        .expect("add");
    }
    for n in 0..EDITS {
        menu::apply(&mut doc, &[edit(&ids, n)], n as i64).expect("edit");
    }
    let build = t.elapsed();
    let snapshot = doc.save();

    let loads: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            let d = ReplicatedDoc::load(DocKind::Menu, [snapshot.as_slice()], b"box-bench")
                .expect("load");
            let e = t.elapsed();
            drop(d);
            e
        })
        .collect();
    let projections: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            let view = menu::project(&doc).expect("project");
            assert_eq!(view.items.len(), ITEMS);
            t.elapsed()
        })
        .collect();

    let mut edits = Vec::new();
    let mut box_path = Vec::new();
    for n in 0..500 {
        let e = edit(&ids, EDITS + n);
        let t = Instant::now();
        menu::apply(&mut doc, &[e], 0).expect("edit");
        edits.push(t.elapsed());
        let _ = doc.save_incremental();
        let e = edit(&ids, EDITS + 1000 + n);
        let item = e.item();
        let t = Instant::now();
        menu::apply(&mut doc, &[e], 0).expect("edit");
        let _chunk = doc.save_incremental();
        let _ = menu::project_item(&doc, item).expect("project");
        let _ = crdt::conflicts_under(&doc, &["items", &item.to_string()]);
        box_path.push(t.elapsed());
    }

    // Sync: a peer that is up to date, then 100 new edits at the box.
    let mut peer =
        ReplicatedDoc::load(DocKind::Menu, [doc.save().as_slice()], b"cloud-bench").expect("peer");
    let (mut pa, mut pb) = (SyncPeer::new(), SyncPeer::new());
    sync(&mut doc, &mut peer, &mut pa, &mut pb);
    let (sa, sb) = (pa.encode(), pb.encode());
    for n in 0..100 {
        menu::apply(&mut doc, &[edit(&ids, 50_000 + n)], 0).expect("edit");
    }
    let mut runs_persisted = Vec::new();
    let mut runs_fresh = Vec::new();
    let (mut bytes_persisted, mut bytes_fresh, mut msgs_persisted, mut msgs_fresh) = (0, 0, 0, 0);
    for _ in 0..7 {
        let (mut a, mut b) = (doc.fork(), peer.fork());
        let t = Instant::now();
        (bytes_persisted, msgs_persisted) = sync(
            &mut a,
            &mut b,
            &mut SyncPeer::decode(&sa).expect("state"),
            &mut SyncPeer::decode(&sb).expect("state"),
        );
        runs_persisted.push(t.elapsed());
        assert_eq!(menu::project(&a).expect("a"), menu::project(&b).expect("b"));
        let (mut a, mut b) = (doc.fork(), peer.fork());
        let t = Instant::now();
        (bytes_fresh, msgs_fresh) =
            sync(&mut a, &mut b, &mut SyncPeer::new(), &mut SyncPeer::new());
        runs_fresh.push(t.elapsed());
    }

    println!(
        "menu document: {ITEMS} items after {EDITS} single-field edits (built in {:.2} s)",
        build.as_secs_f64()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| document size (compacted) | {} bytes ({:.1} KiB) |",
        snapshot.len(),
        snapshot.len() as f64 / 1024.0
    );
    println!("| load (median of 15) | {} |", ms(median(loads)));
    println!(
        "| projection of 300 items (median of 15) | {} |",
        ms(median(projections))
    );
    println!("| one edit (median of 500) | {} |", ms(median(edits)));
    println!(
        "| box edit path: edit + incremental save + re-projection of the edited item and its conflicts (median of 500) | {} |",
        ms(median(box_path))
    );
    println!(
        "| sync 100 new edits, persisted sync state (median of 7) | {} , {} bytes in {} messages |",
        ms(median(runs_persisted)),
        bytes_persisted,
        msgs_persisted
    );
    println!(
        "| sync 100 new edits, fresh sync state (median of 7) | {} , {} bytes in {} messages |",
        ms(median(runs_fresh)),
        bytes_fresh,
        msgs_fresh
    );
}
