//! The cloud aggregator's receiving side: QUIC server, store, document replicas, and
//! the admin side (JSON API and console) with its accounts, sessions and audit log.

pub mod accounts;
pub mod admin;
pub mod admins;
pub mod auth;
pub mod console;
pub mod db;
pub mod docs;
pub mod fleet;
pub mod items;
pub mod listener;
pub mod menus;
pub mod pg;
pub mod reconciliation;
pub mod sales;
pub mod server;
pub mod store;
