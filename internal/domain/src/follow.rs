//! Following an execution's logs: backlog from the store, then live records, then completion —
//! without gaps or duplicates, resumable from any seq.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::DomainError;
use crate::hub::{HubMsg, LogHub};
use crate::model::{Execution, LogRecord};
use crate::ports::Store;

/// Records read from the store per page of backlog.
const PAGE: usize = 2000;
/// Re-check the store this often even without a wake-up (a safety net, not the normal path).
const RECHECK: Duration = Duration::from_secs(2);
/// The same where the store has a change feed of its own (each re-check of a shared store is
/// billed reads, and the feed already wakes the follower).
const RECHECK_WATCHED: Duration = Duration::from_secs(30);

/// What a follower yields next.
#[derive(Debug)]
pub enum FollowItem {
    /// The next records, contiguous with everything yielded before.
    Records(Records),
    /// The execution is settled and every record was yielded.
    Done(Box<Execution>),
}

/// A run of records, possibly a slice of a batch shared with other followers (no copy).
#[derive(Debug, Clone)]
pub struct Records {
    batch: Arc<Vec<LogRecord>>,
    range: std::ops::Range<usize>,
}

impl Records {
    /// The records, in seq order.
    pub fn iter(&self) -> impl Iterator<Item = &LogRecord> {
        self.batch[self.range.clone()].iter()
    }
    /// Number of records.
    pub fn len(&self) -> usize {
        self.range.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl From<Vec<LogRecord>> for Records {
    fn from(v: Vec<LogRecord>) -> Self {
        let n = v.len();
        Records {
            batch: Arc::new(v),
            range: 0..n,
        }
    }
}

/// Iterates an execution's records after a given seq.
pub struct Follower {
    store: Arc<dyn Store>,
    hub: Arc<LogHub>,
    id: String,
    last: u64,
    rx: broadcast::Receiver<HubMsg>,
    /// The store's own change feed, where writes may come from another instance.
    watch: Option<tokio::sync::watch::Receiver<u64>>,
    done: bool,
}

impl Follower {
    /// Starts following after `after_seq`. Subscribes before any store read.
    pub fn new(store: Arc<dyn Store>, hub: Arc<LogHub>, id: &str, after_seq: u64) -> Self {
        let rx = hub.subscribe(id);
        let watch = store.watch_execution(id, after_seq);
        Follower {
            store,
            hub,
            id: id.to_owned(),
            last: after_seq,
            rx,
            watch,
            done: false,
        }
    }

    /// The last seq yielded.
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The next item; `None` after [`FollowItem::Done`].
    pub async fn next(&mut self) -> Result<Option<FollowItem>, DomainError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let recs = self.store.read_logs(&self.id, self.last, PAGE).await?;
            let recs = self.contiguous(recs);
            if !recs.is_empty() {
                return Ok(Some(FollowItem::Records(recs.into())));
            }
            let e =
                self.store.get_execution(&self.id).await?.ok_or_else(|| {
                    DomainError::NotFound(format!("execution {} not found", self.id))
                })?;
            if e.is_settled() && self.last >= e.log_lines.unwrap_or(0) {
                self.done = true;
                return Ok(Some(FollowItem::Done(Box::new(e))));
            }
            // Wait for a wake-up; take the fast path when the hub hands us the next records.
            loop {
                let recheck = if self.watch.is_some() {
                    RECHECK_WATCHED
                } else {
                    RECHECK
                };
                let hub = tokio::time::timeout(recheck, self.rx.recv());
                let msg = match &mut self.watch {
                    Some(w) => tokio::select! {
                        m = hub => m,
                        changed = w.changed() => {
                            if changed.is_err() {
                                self.watch = None; // the feed ended: hub and rechecks remain
                            }
                            break;
                        }
                    },
                    None => hub.await,
                };
                match msg {
                    Ok(Ok(HubMsg::Records(rs))) => {
                        if rs.first().is_some_and(|r| r.seq > self.last + 1) {
                            break; // a gap: let the store fill it
                        }
                        if let Some(shared) = self.shared_run(&rs) {
                            return Ok(Some(FollowItem::Records(shared)));
                        }
                        let fresh: Vec<LogRecord> =
                            rs.iter().filter(|r| r.seq > self.last).cloned().collect();
                        let fresh = self.contiguous(fresh);
                        if !fresh.is_empty() {
                            return Ok(Some(FollowItem::Records(fresh.into())));
                        }
                        // Only duplicates: keep waiting.
                    }
                    Ok(Ok(HubMsg::Changed)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => break,
                    Ok(Err(RecvError::Closed)) => {
                        self.rx = self.hub.subscribe(&self.id);
                        break;
                    }
                }
            }
        }
    }

    /// The live fast path: when a published batch is in seq order and continues from `last`,
    /// hand out the continuing run as a slice of the shared batch instead of copying it.
    fn shared_run(&mut self, rs: &Arc<Vec<LogRecord>>) -> Option<Records> {
        let start = rs.iter().position(|r| r.seq == self.last + 1)?;
        let mut end = start + 1;
        while end < rs.len() && rs[end].seq == rs[end - 1].seq + 1 {
            end += 1;
        }
        self.last = rs[end - 1].seq;
        Some(Records {
            batch: rs.clone(),
            range: start..end,
        })
    }

    /// Keeps the prefix of `recs` (sorted by seq) that continues from `last`, and advances `last`.
    fn contiguous(&mut self, mut recs: Vec<LogRecord>) -> Vec<LogRecord> {
        recs.sort_by_key(|r| r.seq);
        recs.dedup_by_key(|r| r.seq);
        let mut n = 0;
        for r in &recs {
            if r.seq == self.last + 1 + n as u64 {
                n += 1;
            } else {
                break;
            }
        }
        recs.truncate(n);
        self.last += n as u64;
        recs
    }
}
