//! Dishes across canteens for a business day or a range: a ranking by quantity (and
//! revenue) of every dish at every canteen an admin may see, and the sold-out board:
//! which dish sold out where and when, and when it came back (kept at ingest from the
//! boxes' stock events).

use super::admin::blocking;
use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
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
    pub to: Option<String>,
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
    to: Option<String>,
) -> Result<Items, AdminError> {
    super::sales::check_days(day.as_deref(), to.as_deref())?;
    let (store, docs, account) = (cloud.store.clone(), cloud.docs.clone(), account.clone());
    blocking(move || -> anyhow::Result<Items> {
        let days = super::sales::Days::resolve(&store, day, to)?;
        let mut ranking = Vec::new();
        let mut sold_out: Vec<SoldOut> = Vec::new();
        if let Some(days) = &days {
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
                for t in store.summary_range(&node.node_id, days.bounds())?.items {
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
                for (item_id, since, back_at) in store.sold_out(&node.node_id, days.bounds())? {
                    let (name_zh, name_en) = name(&item_id);
                    sold_out.push(SoldOut {
                        canteen: node.node_id.clone(),
                        item_id,
                        name_zh,
                        name_en,
                        since,
                        back_at,
                    });
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
        sold_out.sort_by(|a, b| a.since.cmp(&b.since).then(a.canteen.cmp(&b.canteen)));
        Ok(Items {
            day: days.as_ref().map(|d| d.from.clone()),
            to: days.map(|d| d.to),
            ranking,
            sold_out,
        })
    })
    .await
}
