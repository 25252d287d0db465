//! runvoy's Google Cloud event transport: the HTTP endpoints Pub/Sub push, Eventarc and Cloud
//! Scheduler call, turning what they deliver into the domain's [`runvoy_domain::Event`]s for the
//! shared [`runvoy_domain::processor::Processor`] (the local backend's in-process bus is the
//! other transport).
//!
//! * [`decode`]: the push envelope, the LogEntry of a runner record, Cloud Run's system entries.
//! * [`eventarc`]: CloudEvents in binary mode.
//! * [`oidc`]: verification of the Google-signed token on every push.
//! * [`commit`]: group commit of concurrently pushed records of one execution.
//! * [`routes`]: the axum routes and their acknowledgement rules.
//! * [`sink`]: a stand-in for the Cloud Logging sink on one machine (Pub/Sub emulator).

pub mod commit;
pub mod decode;
pub mod eventarc;
pub mod oidc;
pub mod routes;
pub mod sink;

pub use routes::{PushAuth, PushConfig, PushState, router};
