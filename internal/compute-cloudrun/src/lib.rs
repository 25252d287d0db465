//! The [`Compute`](runvoy_domain::ports::Compute) port on Cloud Run Jobs, through the Cloud Run
//! Admin API v2 over REST (`https://run.googleapis.com/v2/...`).
//!
//! * One Cloud Run **job** per image ([`job_name`]), created or patched to a fixed template
//!   ([`CloudRunCompute::ensure_job`]): one task, no platform retries, two containers sharing an
//!   in-memory `emptyDir` at `/workspace` — `sidecar` (prepares the workspace) and `runner` (the
//!   run's image, entrypoint `/workspace/.runvoy/runvoy-runner`), ordered with `dependsOn` behind
//!   the sidecar's startup probe.
//! * One job **execution** per runvoy execution (`jobs.run` with per-execution overrides). Cloud
//!   Run gives executions no per-run labels, so the runvoy execution id travels in the runner's
//!   `RUNVOY_EXECUTION_ID` variable and is read back from the execution's template; the id →
//!   execution name mapping is cached in memory and found again by listing executions.
//! * Logs the push path missed are read back from Cloud Logging ([`CloudLoggingSource`]).
//! * State comes from `executions.get` and the task's `lastAttemptResult` (see
//!   `map_state` in `compute.rs`).
//!
//! The run's environment travels in the runner's overrides, after runvoy's own settings:
//! whoever may read the job execution can read it, so secret values never go there (the sidecar
//! fetches them itself). Standard input is refused: it would have to travel the same way.
//!
//! `runvoyd serve --compute cloudrun` (or `--backend gcp`) runs on it.

mod api;
mod auth;
mod compute;
mod config;
mod logging;
mod names;

pub use api::{ApiError, GoogleStatus};
pub use auth::{AdcTokenProvider, StaticToken, TokenProvider};
pub use compute::{CloudRunCompute, EXECUTION_ID_ENV, JobImage};
pub use config::CloudRunConfig;
pub use logging::CloudLoggingSource;
pub use names::{job_name, valid_job_name};
