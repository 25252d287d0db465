//! Local compute: runs each execution like a tiny container runtime on this machine.
//!
//! Layout of one execution, under `<data-dir>/executions/<id>/` (0711; every file 0600):
//!
//! | file | written by | meaning |
//! |---|---|---|
//! | `job.json` | runvoyd | what to run (no environment values) |
//! | `env.json` | runvoyd | environment; consumed and deleted by the sidecar |
//! | `workspace/` | sidecar, runner | mounted at `/workspace`; a size-limited tmpfs in the supervisor's own mount namespace when sandboxing as root |
//! | `sandbox.json` | supervisor | the [`runvoy_proto::sandbox::SandboxSpec`] the runner starts bubblewrap from |
//! | `supervisor.pid` | supervisor | `<pid> <starttime>` of the detached supervisor |
//! | `running` | supervisor | the runner step has started |
//! | `records.jsonl` | runner (stdout) | append-only runner records: the durable log source |
//! | `exit.json` | supervisor | the execution ended (how) |
//!
//! `<data-dir>/executions/.sandbox/` holds what every sandbox shares (generated `/etc`, compiled
//! seccomp programs), written when runvoyd starts.
//!
//! The supervisor (`runvoyd supervise DIR`) is detached in its own session, so an execution never
//! depends on runvoyd staying alive; runvoyd tails `records.jsonl` and can re-attach after a restart.

mod bus;
mod compute;
mod records;
pub mod sandbox;
pub mod supervisor;
mod tail;
mod watch;

pub use bus::{Bus, pump};
pub use compute::{Isolation, LocalCompute, LocalComputeConfig};
pub use records::{RecordFileSource, parse_records};
pub use sandbox::{Enforcement, Limits};
