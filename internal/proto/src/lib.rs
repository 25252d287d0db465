//! Wire types shared by every runvoy process.
//!
//! * [`record`]: the records `runvoy-runner` writes to its stdout, one JSON object per line.
//! * [`api`]: REST request and response bodies under `/api/v1`.
//! * [`health`]: reconciler reports.
//! * [`envfile`]: the workspace `.env` file between the sidecar and the runner.
//! * [`git`]: a run's git checkout: validation, workspace layout, sidecar variables.
//! * [`sandbox`]: how the local compute asks the runner to start the command in bubblewrap.
//! * [`ws`]: WebSocket frames sent on `/api/v1/executions/{id}/logs/ws`.
//!
//! This crate has no behaviour beyond (de)serialisation so that the runner, the CLI and the server
//! can agree on formats without pulling each other's dependencies.

pub mod api;
pub mod envfile;
pub mod git;
pub mod health;
pub mod record;
pub mod sandbox;
pub mod ws;

pub use api::*;
pub use health::*;

/// Standard base64 with padding (used for non-UTF-8 log bytes).
pub fn b64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard base64; `None` on malformed input.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
