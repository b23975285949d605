//! QUIC sync between canteen boxes and the campus cloud.
//!
//! - [`proto`]: versioned messages in length-prefixed frames (sans-I/O decoder);
//! - [`identity`]: the campus CA, enrolment, TLS configurations;
//! - [`uplink`]: the box's event-stream state machine (sans-I/O);
//! - [`client`]: the box side over quinn, driven by an [`client::EdgeLink`];
//! - [`cloud`]: the aggregator: QUIC server, store (SQLite or PostgreSQL), admin HTTP API;
//! - [`pgtest`]: a throwaway PostgreSQL server for tests and benchmarks.

pub mod client;
pub mod cloud;
pub mod identity;
pub mod pgtest;
pub mod proto;
pub mod uplink;
pub mod wire;
