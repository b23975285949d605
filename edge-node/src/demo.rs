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
