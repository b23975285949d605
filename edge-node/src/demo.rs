//! The demo canteen: a realistic menu, a roster and staff accounts, so that a new
//! user sees a working box with one command. Tests use the same menu.

use crate::app::App;
use crate::core::menu::{ItemFields, MenuEdit, MenuItem, OptionChoice, OptionGroup};
use crate::ops;
use crate::session::{Role, hash_secret};
use crate::store::accounts::{AccountError, StudentRecord};
use crate::store::docs::MenuError;
use canteen_api::ids::ItemId;

pub const DEMO_PIN: &str = "135790";
pub const DEMO_STUDENTS: u32 = 30;
pub const DEMO_STAFF: (&str, &str) = ("staff", "staff-pass");
pub const DEMO_MANAGER: (&str, &str) = ("manager", "manager-pass");
pub const DEMO_CAMPUS_CARD_SECRET: &str = "demo-campus-card-secret";

fn choice(id: &str, zh: &str, en: &str, delta: i64) -> OptionChoice {
    OptionChoice {
        id: id.into(),
        name_zh: zh.into(),
        name_en: en.into(),
        price_delta_fen: delta,
    }
}

fn group(
    id: &str,
    zh: &str,
    en: &str,
    min: u32,
    max: u32,
    choices: Vec<OptionChoice>,
) -> OptionGroup {
    OptionGroup {
        id: id.into(),
        name_zh: zh.into(),
        name_en: en.into(),
        required: min >= 1,
        min_choices: min,
        max_choices: max,
        choices,
    }
}

#[allow(clippy::too_many_arguments)]
fn item(
    zh: &str,
    en: &str,
    category: &str,
    price_fen: i64,
    groups: Vec<OptionGroup>,
    allergens: &[&str],
    quota: Option<u32>,
    sort_key: i64,
) -> ItemFields {
    ItemFields {
        name_zh: zh.into(),
        name_en: en.into(),
        category: category.into(),
        price_fen,
        option_groups: groups,
        allergens: allergens.iter().map(|a| (*a).into()).collect(),
        daily_quota: quota,
        available: true,
        archived: false,
        sort_key,
    }
}

/// The demo menu: noodles, rice, dumplings, soup and drinks, with options.
pub fn demo_menu() -> Vec<ItemFields> {
    let size = || {
        group(
            "size",
            "份量",
            "Size",
            1,
            1,
            vec![
                choice("regular", "标准", "Regular", 0),
                choice("large", "大份", "Large", 300),
            ],
        )
    };
    let spice = || {
        group(
            "spice",
            "辣度",
            "Spice",
            0,
            1,
            vec![
                choice("mild", "微辣", "Mild", 0),
                choice("medium", "中辣", "Medium", 0),
                choice("hot", "特辣", "Hot", 0),
            ],
        )
    };
    vec![
        item(
            "兰州牛肉面",
            "Lanzhou beef noodle soup",
            "Noodles",
            1800,
            vec![size(), spice()],
            &["gluten"],
            Some(120),
            1,
        ),
        item(
            "炸酱面",
            "Zhajiang noodles",
            "Noodles",
            1500,
            vec![size()],
            &["gluten", "soy"],
            Some(80),
            2,
        ),
        item(
            "宫保鸡丁饭",
            "Kung pao chicken with rice",
            "Rice",
            1600,
            vec![spice()],
            &["peanut", "soy"],
            Some(100),
            1,
        ),
        item(
            "番茄炒蛋饭",
            "Tomato and egg with rice",
            "Rice",
            1200,
            vec![],
            &["egg"],
            Some(100),
            2,
        ),
        item(
            "红烧肉饭",
            "Braised pork belly with rice",
            "Rice",
            2000,
            vec![],
            &["soy"],
            Some(60),
            3,
        ),
        item(
            "麻婆豆腐饭",
            "Mapo tofu with rice",
            "Rice",
            1300,
            vec![spice()],
            &["soy"],
            Some(80),
            4,
        ),
        item(
            "猪肉白菜水饺",
            "Pork and cabbage dumplings",
            "Dumplings",
            1400,
            vec![
                group(
                    "count",
                    "数量",
                    "Count",
                    1,
                    1,
                    vec![
                        choice("12", "12只", "12 pieces", 0),
                        choice("18", "18只", "18 pieces", 500),
                    ],
                ),
                group(
                    "dip",
                    "蘸料",
                    "Dipping sauce",
                    0,
                    2,
                    vec![
                        choice("vinegar", "香醋", "Black vinegar", 0),
                        choice("chili", "辣椒油", "Chili oil", 0),
                        choice("garlic", "蒜泥", "Garlic", 0),
                    ],
                ),
            ],
            &["gluten"],
            Some(90),
            1,
        ),
        item(
            "紫菜蛋花汤",
            "Seaweed and egg soup",
            "Soup",
            300,
            vec![],
            &["egg"],
            None,
            1,
        ),
        item(
            "豆浆",
            "Soy milk",
            "Drinks",
            250,
            vec![group(
                "temp",
                "温度",
                "Temperature",
                1,
                1,
                vec![
                    choice("hot", "热", "Hot", 0),
                    choice("cold", "冰", "Iced", 0),
                ],
            )],
            &["soy"],
            None,
            1,
        ),
        item(
            "酸梅汤",
            "Sour plum drink",
            "Drinks",
            400,
            vec![],
            &[],
            Some(100),
            2,
        ),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Menu(#[from] MenuError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Write(#[from] crate::store::WriteError),
}

/// Creates the demo menu (through the menu module), roster and staff accounts.
pub async fn seed(app: &App, students: u32) -> Result<Vec<MenuItem>, SeedError> {
    let items: Vec<MenuItem> = demo_menu()
        .into_iter()
        .map(|fields| MenuItem {
            id: ItemId::new(),
            fields,
        })
        .collect();
    let edits: Vec<MenuEdit> = items
        .iter()
        .map(|it| MenuEdit::AddItem {
            item: it.id,
            fields: it.fields.clone(),
        })
        .collect();
    crate::ops::menu::edit(app, edits).await?;
    let cost = app.config.hash_cost;
    let (roster, staff_hash, manager_hash) = tokio::task::spawn_blocking(move || {
        // One hash for the whole demo roster: they share the PIN, and hashing thirty
        // times at production cost would only slow the demo's start.
        let pin_hash = hash_secret(DEMO_PIN, cost);
        let roster: Vec<StudentRecord> = (1..=students)
            .map(|n| StudentRecord {
                student_number: format!("2024{n:03}"),
                name: format!("Student {n}"),
                pin_hash: pin_hash.clone(),
            })
            .collect();
        (
            roster,
            hash_secret(DEMO_STAFF.1, cost),
            hash_secret(DEMO_MANAGER.1, cost),
        )
    })
    .await
    .map_err(|e| crate::store::WriteError::Commit(e.to_string()))?;
    ops::accounts::import_roster(app, roster).await?;
    for (username, name, role, hash) in [
        (DEMO_STAFF.0, "Counter staff", Role::Staff, staff_hash),
        (
            DEMO_MANAGER.0,
            "Canteen manager",
            Role::Manager,
            manager_hash,
        ),
    ] {
        ops::accounts::add_staff(app, username.into(), name.into(), role, hash).await?;
    }
    Ok(items)
}

/// What [`play_day`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlayedDay {
    pub orders: usize,
    pub picked_up: usize,
    pub refunded: usize,
    pub expired: usize,
    /// Orders refused because a dish had sold out.
    pub sold_out_refusals: usize,
}

/// Orders expected in the minute starting at `minute` (local minutes since midnight):
/// a lunch peak at 12:00 and a smaller dinner peak at 17:45, on top of a trickle while
/// the canteen is open (10:30 to 19:30).
fn demand(minute: u32, scale: f64) -> f64 {
    let peak = |centre: f64, width: f64, height: f64| {
        let d = (f64::from(minute) - centre) / width;
        height * (-d * d / 2.0).exp()
    };
    let rate = 0.3 + peak(720.0, 25.0, 5.5) + peak(1065.0, 30.0, 2.5);
    rate * scale
}

/// Plays one business day of the demo canteen on a simulated clock, through the same
/// use cases the HTTP API calls: students order in lunch and dinner peaks (dishes with a
/// quota sell out; staff declare one dish sold out at the height of lunch and put it
/// back after), staff take payment and hand orders over, a few orders are never paid and expire, one paid order is refunded, and ready
/// orders nobody collected become unclaimed at closing. Everything lands in the box's
/// outbox with the times of that day, and syncs like any other events. The data
/// directory must hold a seeded demo canteen (see [`seed`]).
pub async fn play_day(
    config: crate::config::Config,
    day: chrono::NaiveDate,
    scale: f64,
) -> anyhow::Result<PlayedDay> {
    use crate::core::clock::Clock;
    use canteen_api::order::{ChosenOption, LineRequest, OrderEvent, OrderRequest, PaymentMode};
    use canteen_api::stock::StaffStockAction;
    use chrono::TimeZone;
    use rand::{Rng, SeedableRng};

    let tz = config.time_zone;
    let local = |minute: u32| {
        tz.from_local_datetime(
            &day.and_hms_opt(minute / 60, minute % 60, 0)
                .unwrap_or_default(),
        )
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
    };
    let start = local(10 * 60 + 30)
        .ok_or_else(|| anyhow::anyhow!("10:30 on {day} does not exist in {tz}"))?;
    let clock = std::sync::Arc::new(crate::core::clock::ManualClock::new(start));
    let app = App::open(config, clock.clone())?;
    let staff: canteen_api::ids::StaffId = app
        .readers
        .read(|c| {
            let id: String = c.query_row(
                "SELECT id FROM staff WHERE username = ?1",
                [DEMO_STAFF.0],
                |r| r.get(0),
            )?;
            id.parse()
                .map(canteen_api::ids::StaffId)
                .map_err(|_| crate::store::StoreError::Corrupt(format!("staff id {id}")))
        })
        .await?;
    let mut students = Vec::new();
    for n in 1..=DEMO_STUDENTS {
        let number = format!("2024{n:03}");
        let found = app
            .readers
            .read(move |c| crate::store::accounts::student_by_number(c, &number))
            .await?;
        if let Some((id, _)) = found {
            students.push(id);
        }
    }
    anyhow::ensure!(
        !students.is_empty(),
        "the demo roster is missing: seed the canteen first"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(day.to_string().bytes().map(u64::from).sum());
    let mut played = PlayedDay::default();
    let mut restocked = false;
    let mut refunded = false;
    for minute in (10 * 60 + 30)..(19 * 60 + 30) {
        let Some(now) = local(minute) else { continue };
        let behind = now - clock.now();
        if behind > chrono::Duration::zero() {
            clock.advance(behind);
        }
        let expected = demand(minute, scale);
        let orders =
            expected.floor() as usize + usize::from(rng.random::<f64>() < expected.fract());
        for _ in 0..orders {
            let menu = app.menu.snapshot();
            let items: Vec<_> = menu
                .items()
                .iter()
                .filter(|i| i.fields.available && !i.fields.archived)
                .collect();
            if items.is_empty() {
                break;
            }
            let lines: Vec<LineRequest> = (0..rng.random_range(1..=2))
                .map(|_| {
                    let item = items[rng.random_range(0..items.len())];
                    let options =
                        item.fields
                            .option_groups
                            .iter()
                            .filter(|g| g.min_choices > 0)
                            .flat_map(|g| {
                                g.choices.iter().take(g.min_choices as usize).map(|c| {
                                    ChosenOption {
                                        group: g.id.clone(),
                                        choice: c.id.clone(),
                                    }
                                })
                            })
                            .collect();
                    LineRequest {
                        item_id: item.id,
                        quantity: 1,
                        options,
                    }
                })
                .collect();
            let request = OrderRequest {
                lines,
                payment_mode: PaymentMode::Counter,
                pickup_slot: None,
            };
            let student = students[rng.random_range(0..students.len())];
            let placed = match crate::ops::orders::place(&app, student, None, &request).await {
                Ok(p) => p.order,
                Err(crate::ops::orders::OrderError::Stock(_)) => {
                    played.sold_out_refusals += 1;
                    continue;
                }
                Err(_) => continue,
            };
            played.orders += 1;
            let roll = rng.random_range(0..100);
            if roll < 4 {
                // Never paid: expires after the unpaid timeout.
                continue;
            }
            let mut path = vec![OrderEvent::Pay];
            if !refunded && minute >= 12 * 60 {
                refunded = true;
                path.push(OrderEvent::Cancel);
            } else if roll < 97 {
                path.extend([
                    OrderEvent::StartPreparing,
                    OrderEvent::MarkReady,
                    OrderEvent::PickUp,
                ]);
            } else {
                // Ready, never collected: unclaimed at closing.
                path.extend([OrderEvent::StartPreparing, OrderEvent::MarkReady]);
            }
            let mut version = placed.version;
            for event in path {
                match crate::ops::orders::staff_transition(&app, staff, placed.id, event, version)
                    .await
                {
                    Ok(view) => version = view.version,
                    Err(e) => anyhow::bail!("demo order {}: {event:?}: {e}", placed.id),
                }
                match event {
                    OrderEvent::PickUp => played.picked_up += 1,
                    OrderEvent::Cancel => played.refunded += 1,
                    _ => {}
                }
            }
        }
        // At the height of lunch the kitchen runs out of the first dish on the menu and
        // says so at the counter; after lunch it makes more and puts it back.
        let first = app.menu.snapshot().items().first().map(|i| i.id);
        if let Some(item) = first {
            let action = match minute {
                m if m == 12 * 60 + 20 => Some(StaffStockAction::SoldOut {}),
                m if m == 14 * 60 && !restocked => Some(StaffStockAction::Back {}),
                _ => None,
            };
            if let Some(action) = action {
                restocked |= matches!(action, StaffStockAction::Back {});
                crate::ops::stock::staff_action(&app, staff, item, action).await?;
            }
        }
        if minute % 5 == 0 {
            played.expired += crate::ops::orders::housekeeping(&app).await?.0;
        }
    }
    // Closing: unpaid orders expire, ready orders nobody collected become unclaimed.
    if let Some(close) = local(23 * 60 + 59) {
        let behind = close - clock.now();
        if behind > chrono::Duration::zero() {
            clock.advance(behind);
        }
    }
    played.expired += crate::ops::orders::housekeeping(&app).await?.0;
    app.close().await;
    Ok(played)
}
