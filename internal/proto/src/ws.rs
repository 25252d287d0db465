//! WebSocket frames on `/api/v1/executions/{id}/logs/ws`.
//!
//! The server sends text frames only: a [`crate::LogEvent`] per record (no `type` field, as in the Go
//! runvoy), then exactly one [`Disconnect`] after the last record of a finished execution.
//! Clients never need to send anything; resume with `?after_seq=N`.

use serde::{Deserialize, Serialize};

use crate::api::{LogEvent, Status};

/// The completion frame: `{"type":"disconnect","reason":"execution_completed",…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disconnect {
    /// Always `disconnect`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `execution_completed`.
    pub reason: String,
    /// Final status.
    pub status: Status,
    /// Final exit code.
    pub exit_code: Option<i32>,
    /// True when the execution's timeout fired.
    #[serde(default)]
    pub timed_out: bool,
    /// Number of log records of the execution.
    #[serde(default)]
    pub lines: u64,
}

/// Any frame a client may receive.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A log record.
    Log(LogEvent),
    /// The stream is over.
    Disconnect(Disconnect),
}

impl Frame {
    /// Parses a text frame.
    pub fn parse(text: &str) -> Result<Frame, serde_json::Error> {
        // Cheap check first: log frames never carry a `type` key at top level.
        if text.contains("\"type\"")
            && let Ok(d) = serde_json::from_str::<Disconnect>(text)
            && d.kind == "disconnect"
        {
            return Ok(Frame::Disconnect(d));
        }
        serde_json::from_str::<LogEvent>(text).map(Frame::Log)
    }
}
