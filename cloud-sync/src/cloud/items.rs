//! Dishes across canteens for one business day: a ranking by quantity (and revenue) of
//! every dish at every canteen an admin may see, and the sold-out board: which dish
//! sold out where and when, and when it came back, from the boxes' stock events.

use super::admin::blocking;
use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
use canteen_api::events::EventPayload;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemRank {
    pub canteen: String,
    pub item_id: String,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: i64,
    pub revenue_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SoldOut {
    pub canteen: String,
    pub item_id: String,
    pub name_zh: String,
    pub name_en: String,
    /// When the box recorded it (RFC 3339, UTC).
    pub since: String,
    /// When it came back (restocked or marked back), if it did that day.
    pub back_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Items {
    pub day: Option<String>,
    /// Most sold first.
    pub ranking: Vec<ItemRank>,
    /// In the order they sold out.
    pub sold_out: Vec<SoldOut>,
}

/// The day's dishes at every canteen `account` may see (`day` `None`: the latest day
/// with orders).
pub async fn items(
    cloud: &Cloud,
    account: &AdminAccount,
    day: Option<String>,
) -> Result<Items, AdminError> {
    if let Some(d) = &day {
        super::sales::check_day(d)?;
    }
    let (store, docs, account) = (cloud.store.clone(), cloud.docs.clone(), account.clone());
    blocking(move || -> anyhow::Result<Items> {
        let day = match day {
            Some(d) => Some(d),
            None => store.latest_service_day()?,
        };
        let mut ranking = Vec::new();
        let mut sold_out: Vec<SoldOut> = Vec::new();
        if let Some(day) = &day {
            for node in store.nodes()? {
                if !account.may_read(&node.node_id) {
                    continue;
                }
                let names: HashMap<String, (String, String)> = docs
                    .menu(&node.node_id)
                    .map(|(view, _)| {
                        view.items
                            .into_iter()
                            .map(|i| (i.id.to_string(), (i.fields.name_zh, i.fields.name_en)))
                            .collect()
                    })
                    .unwrap_or_default();
                let name = |id: &str| {
                    names
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| (id.into(), id.into()))
                };
                for t in store.summary(&node.node_id, Some(day))?.items {
                    let (name_zh, name_en) = name(&t.item_id);
                    ranking.push(ItemRank {
                        canteen: node.node_id.clone(),
                        item_id: t.item_id,
                        name_zh,
                        name_en,
                        quantity: t.quantity,
                        revenue_fen: t.revenue_fen,
                    });
                }
                for (kind, payload, at) in store.stock_events(&node.node_id, day)? {
                    let Ok(EventPayload::StockChanged(s)) = EventPayload::parse(&kind, &payload)
                    else {
                        continue;
                    };
                    let item = s.item_id.to_string();
                    let open = sold_out.iter_mut().rev().find(|o| {
                        o.canteen == node.node_id && o.item_id == item && o.back_at.is_none()
                    });
                    match (s.sold_out || s.remaining == 0, open) {
                        (true, None) => {
                            let (name_zh, name_en) = name(&item);
                            sold_out.push(SoldOut {
                                canteen: node.node_id.clone(),
                                item_id: item,
                                name_zh,
                                name_en,
                                since: at,
                                back_at: None,
                            });
                        }
                        (false, Some(o)) => o.back_at = Some(at),
                        _ => {}
                    }
                }
            }
        }
        ranking.sort_by(|a, b| {
            b.quantity
                .cmp(&a.quantity)
                .then(b.revenue_fen.cmp(&a.revenue_fen))
                .then(a.canteen.cmp(&b.canteen))
                .then(a.name_en.cmp(&b.name_en))
        });
        Ok(Items {
            day,
            ranking,
            sold_out,
        })
    })
    .await
}
