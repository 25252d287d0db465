//! Group commit of pushed records.
//!
//! Pub/Sub push delivers one message (one runner record) per request. Writing each alone would
//! cost one store write per line; instead concurrent requests for the same execution join one
//! batch: the first starts a short window, the others add their records, and one task stores
//! the batch with a single [`Processor::handle`] (one `append_logs`, then a reconcile when the
//! final record is in it). Every request waits until the batch holding its record is committed
//! and gets that batch's result, so a 2xx still means "stored". Batches of one execution are
//! committed one after another; records that arrive during a commit form the next batch and are
//! committed right after it, without another window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runvoy_domain::Event;
use runvoy_domain::ports::Store;
use runvoy_domain::processor::Processor;
use runvoy_domain::{ExitInfo, LogRecord};
use tokio::sync::{Notify, oneshot};

/// Why a batch was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store has no such execution: nothing was written.
    #[error("no such execution")]
    UnknownExecution,
    /// The store (or compute, for the reconcile after a final record) failed: retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct CommitConfig {
    /// How long the first request of a batch waits for others.
    pub window: Duration,
    /// Most records in one batch; a full batch is committed at once.
    pub max_records: usize,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            window: Duration::from_millis(5),
            max_records: 500,
        }
    }
}

struct Item {
    records: Vec<LogRecord>,
    exit: Option<ExitInfo>,
    done: oneshot::Sender<Result<(), CommitError>>,
}

#[derive(Default)]
struct Slot {
    pending: Vec<Item>,
    records: usize,
    full: Arc<Notify>,
}

/// Batches records per execution; see the module docs.
pub struct GroupCommit {
    processor: Arc<Processor>,
    store: Arc<dyn Store>,
    cfg: CommitConfig,
    slots: Mutex<HashMap<String, Slot>>,
    batches: AtomicU64,
}

impl GroupCommit {
    /// A committer over the processor (which stores) and the store (to check that the execution
    /// exists before anything is written for it).
    pub fn new(processor: Arc<Processor>, store: Arc<dyn Store>, cfg: CommitConfig) -> Arc<Self> {
        Arc::new(GroupCommit {
            processor,
            store,
            cfg,
            slots: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
        })
    }

    /// Batches committed so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Adds records (and possibly the final record) of one execution to its next batch and waits
    /// until that batch is committed.
    pub async fn submit(
        self: &Arc<Self>,
        execution_id: &str,
        records: Vec<LogRecord>,
        exit: Option<ExitInfo>,
    ) -> Result<(), CommitError> {
        let (done, rx) = oneshot::channel();
        let start_driver = {
            let mut slots = self.slots.lock().expect("slots");
            let fresh = !slots.contains_key(execution_id);
            let slot = slots.entry(execution_id.to_owned()).or_default();
            slot.records += records.len().max(1);
            slot.pending.push(Item {
                records,
                exit,
                done,
            });
            if slot.records >= self.cfg.max_records {
                slot.full.notify_one();
            }
            fresh
        };
        if start_driver {
            // Its own task: a request that goes away (client timeout) never cancels a batch
            // other requests wait on.
            tokio::spawn(self.clone().drive(execution_id.to_owned()));
        }
        rx.await
            .unwrap_or_else(|_| Err(CommitError::Unavailable("commit task ended".into())))
    }

    /// Commits the batches of one execution until none is pending, then removes its slot.
    async fn drive(self: Arc<Self>, id: String) {
        let full = self.slots.lock().expect("slots")[&id].full.clone();
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.window) => {}
            _ = full.notified() => {}
        }
        loop {
            let items = {
                let mut slots = self.slots.lock().expect("slots");
                let slot = slots.get_mut(&id).expect("slot");
                let mut n = 0;
                let mut take = 0;
                for it in &slot.pending {
                    if take > 0 && n + it.records.len().max(1) > self.cfg.max_records {
                        break;
                    }
                    n += it.records.len().max(1);
                    take += 1;
                }
                slot.records -= n;
                slot.pending.drain(..take).collect::<Vec<_>>()
            };
            let mut records = Vec::new();
            let mut exit = None;
            let mut waiters = Vec::with_capacity(items.len());
            for it in items {
                records.extend(it.records);
                exit = exit.or(it.exit);
                waiters.push(it.done);
            }
            let result = self.commit(&id, records, exit).await;
            self.batches.fetch_add(1, Ordering::Relaxed);
            for w in waiters {
                let _ = w.send(result.clone());
            }
            let mut slots = self.slots.lock().expect("slots");
            if slots.get(&id).is_some_and(|s| s.pending.is_empty()) {
                slots.remove(&id);
                return;
            }
        }
    }

    async fn commit(
        &self,
        id: &str,
        mut records: Vec<LogRecord>,
        exit: Option<ExitInfo>,
    ) -> Result<(), CommitError> {
        match self.store.get_execution(id).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(CommitError::UnknownExecution),
            Err(e) => return Err(CommitError::Unavailable(e.to_string())),
        }
        // Redeliveries in the same batch: one copy each (the store would ignore the others, but
        // live followers would be sent them twice).
        records.sort_by_key(|r| r.seq);
        records.dedup_by_key(|r| r.seq);
        let n = records.len();
        self.processor
            .handle(Event::Records {
                execution_id: id.to_owned(),
                records,
                exit,
            })
            .await
            .map_err(|e| CommitError::Unavailable(e.to_string()))?;
        tracing::debug!(execution_id = %id, records = n, "pushed records committed");
        Ok(())
    }
}
