//! Use cases: one function per write the box does, called by every entry point alike
//! (HTTP handlers, the sync link, the CLI, housekeeping). Each asks the core to decide
//! and hands the store one closure for the writer's next group commit; an entry point
//! never composes a transaction of its own. `ops` never imports `http`, `link` or
//! `server` (a test in `tests/layers.rs` checks).

pub mod accounts;
pub mod menu;
pub mod orders;
pub mod status;
pub mod stock;
pub mod sync;
