//! In-memory fan-out of freshly stored log records to followers (WebSocket clients).
//!
//! The hub is only a wake-up and fast path: records are published after they are stored, and a
//! follower that misses a message (lag, gap) re-reads the store, which stays authoritative.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::LogRecord;

/// Capacity of each execution's channel; a slower follower lags and falls back to the store.
const CAPACITY: usize = 256;

/// A message about one execution.
#[derive(Debug, Clone)]
pub enum HubMsg {
    /// Records that were just stored.
    Records(Arc<Vec<LogRecord>>),
    /// The execution's state changed (e.g. it settled); followers re-check it.
    Changed,
}

/// Per-execution broadcast channels.
#[derive(Debug, Default)]
pub struct LogHub {
    channels: Mutex<HashMap<String, broadcast::Sender<HubMsg>>>,
}

impl LogHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to an execution's messages. Subscribe before reading the store so nothing
    /// published in between is missed.
    pub fn subscribe(&self, execution_id: &str) -> broadcast::Receiver<HubMsg> {
        let mut ch = self.channels.lock().expect("hub lock");
        ch.entry(execution_id.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Publishes to current subscribers, if any. Never blocks.
    pub fn publish(&self, execution_id: &str, msg: HubMsg) {
        let mut ch = self.channels.lock().expect("hub lock");
        if let Some(tx) = ch.get(execution_id)
            && tx.send(msg).is_err()
        {
            // Nobody listens any more: drop the channel so the map does not grow.
            ch.remove(execution_id);
        }
    }
}
