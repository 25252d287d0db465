//! Fakes of the Google Cloud APIs runvoy calls that have no emulator, for tests and for running
//! the whole Google Cloud backend on one machine (`make run-gcp-local`):
//!
//! * [`cloudrun`]: the Cloud Run Admin API v2 subset runvoy uses (jobs, executions, tasks,
//!   operations), with the request checks of [`schema`];
//! * [`logging`]: Cloud Logging's `entries.list`;
//! * [`platform`]: what runs a job execution's containers (local compute) and writes what Cloud
//!   Logging would of them.
//!
//! Shapes follow cloud.google.com/run/docs/reference/rest/v2 and
//! cloud.google.com/logging/docs/reference/v2/rest; docs/GCP.md lists what the fakes choose where
//! the reference is silent.

pub mod cloudrun;
pub mod logging;
pub mod platform;
pub mod schema;

pub use cloudrun::{FakeCloudRun, Phase, PlatformEvent, Recorded};
pub use logging::LogStore;
pub use platform::LocalPlatform;
