//! The sandbox spec: how the local compute asks `runvoy-runner` to start the command inside
//! bubblewrap (`RUNVOY_SANDBOX` names a JSON file of this shape).
//!
//! The runner itself stays outside the sandbox: the command then cannot see the runner's
//! process, open its file descriptors (the record stream), ptrace or signal it.

use serde::{Deserialize, Serialize};

/// Environment variable naming the sandbox spec file.
pub const SANDBOX_ENV: &str = "RUNVOY_SANDBOX";

/// What the runner does between fork and exec of the sandbox launcher.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The launcher (bubblewrap) and its arguments, up to but excluding `--` and the command.
    pub launcher: Vec<String>,
    /// Files holding compiled seccomp BPF programs; each is passed as `--add-seccomp-fd N`.
    #[serde(default)]
    pub seccomp: Vec<String>,
    /// `cgroup.procs` files the launcher joins before dropping privileges.
    #[serde(default)]
    pub cgroup_procs: Vec<String>,
    /// Unprivileged host uid/gid the launcher runs as (absent: keep the runner's own).
    #[serde(default)]
    pub uid: Option<u32>,
    /// See [`SandboxSpec::uid`].
    #[serde(default)]
    pub gid: Option<u32>,
    /// Resource limits set with setrlimit (soft = hard) before the launcher starts.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
}

/// One setrlimit call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `nproc`, `nofile`, `fsize`, `core` or `as`.
    pub resource: String,
    /// Soft and hard limit.
    pub value: u64,
}
