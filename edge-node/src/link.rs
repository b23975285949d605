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

impl EdgeLink for BoxLink {
    async fn timeline(&self) -> anyhow::Result<LocalTimeline> {
        Ok(ops::sync::timeline(&self.app).await?)
    }

    async fn event_digest(&self, seq: u64) -> anyhow::Result<Option<String>> {
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
        let events = self
            .app
            .readers
            .read(move |c| outbox::after_raw(c, after_seq as i64, max))
            .await?;
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
