//! Reconciliation: per canteen and business day, the box's own totals (from its status
//! messages) against the cloud's (from the rollups). A day the box has moved past whose
//! totals match is closed: complete up to the box's last event when it counted (or the
//! cloud's cursor, if lower). Events of a closed day that arrive later are flagged as
//! late.

use super::admin::on_blocking_pool;
use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
use super::store::ReconRow;

/// Days a reconciliation page lists when no range is given: the latest week.
pub const DEFAULT_DAYS: i64 = 7;

/// Every canteen the account may see, each business day of `day..=to` (by default the
/// week up to the latest day with orders), newest first.
pub async fn reconciliation(
    cloud: &Cloud,
    account: &AdminAccount,
    day: Option<String>,
    to: Option<String>,
) -> Result<Vec<ReconRow>, AdminError> {
    super::sales::check_days(day.as_deref(), to.as_deref())?;
    let nodes = super::admin::visible_nodes(cloud, account).await?;
    let store = cloud.store.clone();
    on_blocking_pool(move || -> anyhow::Result<Vec<ReconRow>> {
        let (from, to) = match (day, to) {
            (Some(d), Some(t)) => (d, t),
            (Some(d), None) => (d.clone(), d),
            (None, _) => {
                let Some(latest) = store.latest_report_day()? else {
                    return Ok(Vec::new());
                };
                let first = chrono::NaiveDate::parse_from_str(&latest, "%Y-%m-%d")
                    .map(|d| (d - chrono::Duration::days(DEFAULT_DAYS - 1)).to_string())
                    .unwrap_or_else(|_| latest.clone());
                (first, latest)
            }
        };
        let mut rows = Vec::new();
        for node in nodes {
            rows.extend(store.reconciliation(&node.node_id, (&from, &to))?);
        }
        rows.sort_by(|a, b| b.day.cmp(&a.day).then(a.canteen.cmp(&b.canteen)));
        Ok(rows)
    })
    .await?
    .map_err(AdminError::internal)
}
