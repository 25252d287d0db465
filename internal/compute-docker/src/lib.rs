//! Docker compute: the local twin of the Cloud Run job, on a Docker Engine (`bollard`).
//!
//! One execution is, all labelled `runvoy.instance=<instance>` and `runvoy.execution=<id>`:
//!
//! | object | name | what |
//! |---|---|---|
//! | volume | `runvoy-<instance>-<id>` | mounted at `/workspace` in both containers |
//! | container | `runvoy-<instance>-<id>-sidecar` | the runvoy-sidecar image: injects the runner binary, clones the run's git repository (only then with a network), writes `.env` and the standard input, then exits |
//! | container | `runvoy-<instance>-<id>-runner` | the registered image, entrypoint the injected static runner; its stdout is the record stream |
//!
//! Both containers are created by [`DockerCompute::start`] before the sidecar starts; the
//! runner starts once the sidecar exited 0. Environment values and standard input never enter
//! a container's configuration: they are copied into the (not yet started) sidecar's own file
//! system, which it deletes once written to the workspace.
//!
//! Nothing is auto-removed: a container's exit code and stdout stay with the engine until
//! [`Compute::cleanup`] (the retention sweep, after the records are stored) removes them. So
//! the engine is the durable record source ([`DockerLogSource`]) and the reconciler's truth
//! ([`Compute::state`] inspects the containers), also for an execution that ended while
//! runvoyd was down.

mod compute;
mod follow;

pub use compute::{DockerCompute, DockerComputeConfig, DockerLogSource};
