//! Events delivered to the processor. The same types arrive from the in-process bus (local backend)
//! and from HTTP push endpoints (GCP); only the transport differs.

use crate::model::{ExitInfo, LogRecord};

/// Something happened to an execution. Every variant is a hint: the processor re-reads the
/// authoritative state before changing anything, so duplicates, reordering and loss are harmless.
#[derive(Debug, Clone)]
pub enum Event {
    /// Compute reports a state change (started, exited, vanished).
    ComputeChanged {
        /// Execution id.
        execution_id: String,
    },
    /// Runner records arrived: log lines and possibly the final exit record.
    Records {
        /// Execution id.
        execution_id: String,
        /// Log records, in any order, possibly overlapping earlier deliveries.
        records: Vec<LogRecord>,
        /// The runner's final record, when it was part of this delivery.
        exit: Option<ExitInfo>,
    },
}

impl Event {
    /// The execution the event is about.
    pub fn execution_id(&self) -> &str {
        match self {
            Event::ComputeChanged { execution_id } | Event::Records { execution_id, .. } => {
                execution_id
            }
        }
    }
}
