//! The cloud aggregator's receiving side: QUIC server, store, document replicas, and
//! the admin API.

pub mod admin;
pub mod docs;
pub mod server;
pub mod store;
