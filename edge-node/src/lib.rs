//! The canteen box: durable ordering on SQLite, its HTTP API, and the operations
//! commands. See ARCHITECTURE.md for the map and the invariants.

pub mod accounts;
pub mod app;
pub mod backup;
pub mod canteen;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod docs;
pub mod http;
pub mod ids;
pub mod menu;
pub mod metrics;
pub mod order;
pub mod outbox;
pub mod payment;
pub mod pickup;
pub mod session;
pub mod stock;
pub mod sync;
pub mod writer;

pub use app::{App, run};
