//! The canteen box: durable ordering on SQLite, its HTTP API, and the operations
//! commands. See ARCHITECTURE.md for the map, the layers and the invariants.
//!
//! Layers, lowest first: `core` (pure decisions) → `store` (SQLite, the writer) →
//! `app` (shared state) → `ops` (use cases) → `http` and `link` (entry points) →
//! `server` (`run`). `tests/layers.rs` reads the `use` lines and fails when a layer
//! imports one above it or two modules import each other.

pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
pub mod http;
mod link;
mod metrics;
pub mod ops;
mod server;
mod session;
pub mod store;

pub use app::App;
pub use server::{StaffHttps, run, run_with_staff};
