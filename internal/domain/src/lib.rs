//! runvoy's domain: the execution model, its state machine, the ports adapters implement, and the
//! services built on them (orchestrator, event processor, reconciler, log follower).
//!
//! This crate imports no web framework, database driver or cloud SDK. Everything that touches the
//! outside world sits behind a port in [`ports`]; adapters live in their own crates.
//!
//! Invariants kept here (see docs/ARCHITECTURE.md):
//! * Events are hints: handlers read the authoritative state from [`ports::Compute`] and the
//!   [`ports::Store`] and apply it with compare-and-set ([`ports::Store::update_execution`]).
//! * Log records are keyed by (execution, seq) and stored idempotently; "finished" and "logs
//!   complete" are separate facts.
//! * One reconcile function ([`processor::Processor::reconcile`]) serves every trigger.

pub mod auth;
pub mod clock;
pub mod error;
pub mod event;
pub mod fault;
pub mod follow;
pub mod health;
pub mod hub;
pub mod images;
pub mod model;
pub mod ports;
pub mod processor;
pub mod secrets;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod users;

pub use error::DomainError;
pub use event::Event;
pub use images::{Image, ImageSpec};
pub use model::*;
pub use runvoy_proto::{Status, record::Stream};
pub use secrets::{Secret, SecretPatch};
