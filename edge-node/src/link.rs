//! The box's side of the cloud link: what the sync client (in `cloud-sync`) reads and
//! writes here. It reads committed outbox events and documents, and writes only through
//! the use cases in `ops` (acknowledgements, sync states, incoming document changes,
//! accounts); it never sits on the order path. Its state is shown in `/metrics` and the
//! staff API.

use crate::app::App;
use crate::ops;
use crate::store::{meta, outbox};
use cloud_sync::client::{EdgeLink, LocalTimeline};
use cloud_sync::proto::{Account, BoxStatus, WireEvent};
use crdt::DocKind;
use crdt::sync::Received;
use std::sync::Arc;
use tokio::sync::Notify;

/// The link as the sync client sees the box.
pub(crate) struct BoxLink {
    pub app: App,
}

impl BoxLink {
    /// Why events after `after_seq` cannot be sent when some were pruned (through
    /// `pruned`): the cloud lost events it had acknowledged (restored from a backup
    /// older than the box keeps them), and this box can no longer send them again.
    fn pruned_error(&self, after_seq: u64, pruned: u64) -> anyhow::Error {
        anyhow::anyhow!(
            "the cloud asks for events from {} on, but this box pruned events up to {pruned} \
             after the cloud had acknowledged them (it keeps them {} days): was the cloud \
             restored from an older backup? Restore a newer one, or accept that those \
             events are missing from the cloud",
            after_seq + 1,
            self.app.config.outbox_keep.num_days()
        )
    }
}

impl EdgeLink for BoxLink {
    async fn timeline(&self) -> anyhow::Result<LocalTimeline> {
        Ok(ops::sync::timeline(&self.app).await?)
    }

    async fn event_digest(&self, seq: u64) -> anyhow::Result<Option<String>> {
        // A pruned event is not an absent one ("absent" would read as this box having
        // gone back in time): `events_after` refuses a pruned range.
        let events = self.events_after(seq.saturating_sub(1), 1).await?;
        Ok(events
            .first()
            .filter(|e| e.seq == seq)
            .map(cloud_sync::proto::event_digest))
    }

    async fn rebase(&self, base_seq: u64) -> anyhow::Result<()> {
        Ok(ops::sync::rebase(&self.app, base_seq).await?)
    }

    async fn cloud_changed(&self, incarnation: String, cloud_acked: u64) -> anyhow::Result<()> {
        Ok(ops::sync::cloud_changed(&self.app, incarnation, cloud_acked).await?)
    }

    async fn events_after(&self, after_seq: u64, max: usize) -> anyhow::Result<Vec<WireEvent>> {
        // Never a batch with a hole where pruned events were (checked in the same read).
        let (pruned, events) = self
            .app
            .readers
            .read(move |c| {
                let pruned = outbox::pruned_through(c)?.max(0) as u64;
                let events = if after_seq < pruned {
                    Vec::new()
                } else {
                    outbox::after_raw(c, after_seq as i64, max)?
                };
                Ok((pruned, events))
            })
            .await?;
        if after_seq < pruned {
            return Err(self.pruned_error(after_seq, pruned));
        }
        Ok(events
            .into_iter()
            .map(|(seq, kind, aggregate_id, payload, at)| WireEvent {
                seq: seq as u64,
                kind,
                aggregate_id,
                payload,
                at,
            })
            .collect())
    }

    async fn acked(&self) -> anyhow::Result<u64> {
        Ok(self
            .app
            .readers
            .read(|c| meta::get_u64(c, outbox::ACKED_KEY))
            .await?)
    }

    async fn set_acked(&self, through: u64) -> anyhow::Result<()> {
        Ok(ops::sync::acknowledge(&self.app, through).await?)
    }

    fn outbox_changed(&self) -> Arc<Notify> {
        self.app.outbox_changed.clone()
    }

    async fn doc_begin(&self, doc: DocKind) -> anyhow::Result<()> {
        let docs = self.app.docs.clone();
        Ok(self
            .app
            .readers
            .read(move |c| docs.sync_begin(c, doc))
            .await?)
    }

    async fn doc_generate(&self, doc: DocKind) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(ops::sync::doc_message(&self.app, doc).await?)
    }

    async fn doc_receive(&self, doc: DocKind, data: Vec<u8>) -> anyhow::Result<Received> {
        Ok(ops::menu::receive_from_cloud(&self.app, doc, data).await?)
    }

    fn docs_changed(&self) -> Arc<Notify> {
        self.app.docs_changed.clone()
    }

    async fn accounts_cursor(&self) -> anyhow::Result<u64> {
        Ok(self
            .app
            .readers
            .read(|c| meta::get_u64(c, ops::sync::ACCOUNTS_KEY))
            .await?)
    }

    async fn apply_accounts(&self, cursor: u64, accounts: Vec<Account>) -> anyhow::Result<()> {
        Ok(ops::sync::apply_accounts(&self.app, cursor, accounts).await?)
    }

    async fn status(&self) -> anyhow::Result<BoxStatus> {
        Ok(ops::sync::box_status(&self.app).await?)
    }
}

/// Builds the client's configuration from the box's, if a cloud is configured.
pub(crate) fn client_config(
    cloud: &crate::config::CloudConfig,
) -> anyhow::Result<cloud_sync::client::ClientConfig> {
    Ok(cloud_sync::client::ClientConfig {
        node_id: cloud.node_id.clone(),
        cloud_addr: cloud.addr,
        cloud_name: cloud.name.clone(),
        tls: cloud_sync::identity::client_config(&cloud.ca, &cloud.cert, &cloud.key)?,
        backoff_min: std::time::Duration::from_millis(200),
        backoff_max: std::time::Duration::from_secs(30),
        status_every: cloud.status_every,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Settings};
    use crate::core::clock::ManualClock;
    use canteen_api::ids::StaffId;
    use canteen_api::stock::StaffStockAction;

    /// A cloud restored from a backup older than the box keeps acknowledged events
    /// asks for events the box pruned: the link says so instead of sending a batch
    /// with a hole, or taking the missing event for a sign that the box went back in
    /// time.
    #[tokio::test]
    async fn events_the_box_pruned_are_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(Settings {
            data_dir: Some(dir.path().to_owned()),
            argon2_memory_kib: Some(64),
            argon2_passes: Some(1),
            ..Default::default()
        })
        .unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let app = App::open(config, clock.clone()).unwrap();
        // A dish (from JSON: the fields a manager sends), restocked five times: five
        // events in the outbox.
        let fields = serde_json::from_value(serde_json::json!({
            "name_zh": "牛肉面", "name_en": "Beef noodles", "category": "noodles",
            "price_fen": 1800, "daily_quota": 10
        }))
        .unwrap();
        let item = ops::menu::create_item(&app, fields).await.unwrap();
        for _ in 0..5 {
            ops::stock::staff_action(
                &app,
                StaffId::new(),
                item.id,
                StaffStockAction::Restock { count: 1 },
            )
            .await
            .unwrap();
        }
        let link = BoxLink { app: app.clone() };
        let last = link.timeline().await.unwrap().last_seq;
        assert!(last >= 5, "{last}");
        ops::sync::acknowledge(&app, last).await.unwrap();
        clock.advance(chrono::Duration::days(15));
        let pruned = ops::sync::prune_outbox(&app).await.unwrap() as u64;
        assert_eq!(pruned, last - 1);

        let err = link.events_after(0, 100).await.unwrap_err().to_string();
        assert!(err.contains("pruned events up to"), "{err}");
        let err = link.event_digest(2).await.unwrap_err().to_string();
        assert!(err.contains("pruned events up to"), "{err}");
        // What the cloud acknowledged last is still there to check its cursor against,
        // and what comes after it is sent as before.
        assert!(link.event_digest(last).await.unwrap().is_some());
        assert!(link.events_after(last, 100).await.unwrap().is_empty());
        app.close().await;
    }
}
