//! The event processor and the reconciler: one `reconcile` function serves every trigger (an
//! event, the schedule, startup, and the admin API).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use runvoy_proto::Status;
use serde::Serialize;

use crate::error::DomainError;
use crate::event::Event;
use crate::hub::{HubMsg, LogHub};
use crate::model::{Execution, ExitInfo, can_transition};
use crate::ports::{
    Clock, Compute, ComputeError, ComputeExit, ComputeState, ListQuery, LogSource, LogStats, Store,
};

/// How long a STARTING execution may be unknown to compute before it is declared lost
/// (covers the window between storing an execution and compute accepting it).
pub const LOST_GRACE_MS: i64 = 30_000;

/// How far back [`Processor::sweep_young`] looks.
pub const YOUNG_WINDOW_MS: i64 = 15 * 60_000;
/// Slack after a timeout (plus kill grace) before the reconciler kills as a backstop.
pub const TIMEOUT_SLACK_MS: i64 = 15_000;
/// How long after a kill request the reconciler sends another kill.
pub const KILL_RETRY_MS: i64 = 30_000;
/// Default lease of a lock: renewed by [`Processor::tend_locks`] while its holder runs, so a
/// lock whose holder vanished without anyone noticing is free again at most this long after
/// the last renewal.
pub const LOCK_LEASE_MS: i64 = 5 * 60_000;

/// What reconciling one execution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already settled; nothing to do.
    Settled,
    /// Matches compute; nothing changed.
    Unchanged,
    /// Moved to RUNNING.
    MarkedRunning,
    /// Finalised with a terminal status (and possibly repaired logs).
    Finalized {
        /// Final status.
        status: Status,
        /// Log records re-read from the durable source.
        repaired_records: u64,
    },
    /// Logs completed for an already terminal execution.
    LogsCompleted {
        /// Log records re-read from the durable source.
        repaired_records: u64,
    },
    /// A kill was (re)sent.
    Killed {
        /// Why.
        reason: String,
    },
    /// Still running; log records missing from the store were re-read from the durable source.
    LogsRepaired {
        /// Log records re-read.
        repaired_records: u64,
    },
    /// No such execution in the store.
    Unknown,
}

/// One problem found by a sweep (the API's `ReconcileIssue`).
pub type Issue = runvoy_proto::ReconcileIssue;

/// The result of a full sweep (the API's `ReconcileReport`).
pub type SweepReport = runvoy_proto::ReconcileReport;

/// What [`Processor::repair_logs`] did.
struct Repair {
    /// Records added to the store.
    added: u64,
    /// The runner's final record, when the source has it.
    exit: Option<ExitInfo>,
    /// Stored-log facts afterwards.
    stats: LogStats,
    /// False when the source could not be read.
    source_read: bool,
}

/// How many sweep reports the store keeps.
pub const REPORTS_KEPT: usize = 20;

/// Applies events and reconciles executions.
pub struct Processor {
    store: Arc<dyn Store>,
    compute: Arc<dyn Compute>,
    logs: Arc<dyn LogSource>,
    hub: Arc<LogHub>,
    clock: Arc<dyn Clock>,
    kill_grace_ms: i64,
    workspace_retention_ms: Option<i64>,
    lock_lease_ms: i64,
}

/// What [`Processor::tend_locks`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockTending {
    /// Leases renewed (their holders still run).
    pub renewed: u64,
    /// Locks released, with why: `(lock, holder execution, reason)`.
    pub released: Vec<(String, String, String)>,
}

fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(4)
}

fn issue(severity: &str, kind: &str, id: &str, action: &str, message: String) -> Issue {
    Issue {
        severity: severity.into(),
        resource_type: kind.into(),
        resource_id: id.into(),
        action: action.into(),
        message,
    }
}

impl Processor {
    /// Builds a processor over the given ports.
    pub fn new(
        store: Arc<dyn Store>,
        compute: Arc<dyn Compute>,
        logs: Arc<dyn LogSource>,
        hub: Arc<LogHub>,
        clock: Arc<dyn Clock>,
        kill_grace_secs: u64,
    ) -> Self {
        Processor {
            store,
            compute,
            logs,
            hub,
            clock,
            kill_grace_ms: kill_grace_secs as i64 * 1000,
            workspace_retention_ms: None,
            lock_lease_ms: LOCK_LEASE_MS,
        }
    }

    /// Sets the lease of locks (default [`LOCK_LEASE_MS`]); call [`Processor::tend_locks`]
    /// well within it (runvoyd does every fifth of it).
    pub fn with_lock_lease(mut self, lease: Duration) -> Self {
        self.lock_lease_ms = (lease.as_millis() as i64).max(1);
        self
    }

    /// The lease of a newly taken or renewed lock, in ms.
    pub fn lock_lease_ms(&self) -> i64 {
        self.lock_lease_ms
    }

    /// Releases the lock an execution holds, if any (after it reached a terminal status). A
    /// failure is logged: [`Processor::tend_locks`] releases it later.
    pub async fn release_lock_of(&self, e: &Execution) {
        let Some(name) = &e.lock else { return };
        match self.store.release_lock(name, &e.id).await {
            Ok(true) => tracing::info!(execution_id = %e.id, lock = %name, "lock released"),
            Ok(false) => {}
            Err(err) => tracing::warn!(execution_id = %e.id, lock = %name, error = %err,
                "could not release the lock; the lock reconciler retries"),
        }
    }

    /// Releases `lock` when its holder is finished or gone from the store (a release that was
    /// missed). Returns whether it was released.
    pub async fn release_if_stale(&self, lock: &crate::ports::Lock) -> Result<bool, DomainError> {
        let holder = self.store.get_execution(&lock.execution_id).await?;
        if holder.is_some_and(|e| !e.status.is_terminal()) {
            return Ok(false);
        }
        Ok(self
            .store
            .release_lock(&lock.name, &lock.execution_id)
            .await?)
    }

    /// Checks one lock against its holder: released when the holder finished or vanished
    /// (from the store, or from compute: then it is reconciled, which finalises it), its lease
    /// renewed while compute still runs it. Returns the reason when it was released. When
    /// compute cannot say, nothing changes and the lease runs out on its own.
    pub async fn tend_lock(
        &self,
        lock: &crate::ports::Lock,
    ) -> Result<Option<String>, DomainError> {
        let id = &lock.execution_id;
        let reason = match self.store.get_execution(id).await? {
            None => "its execution is gone from the store".to_owned(),
            Some(e) if e.status.is_terminal() => format!("its execution is {}", e.status),
            Some(_) => {
                let alive = match self.compute_state(id).await {
                    Ok(ComputeState::Pending | ComputeState::Running) => true,
                    Ok(ComputeState::Exited(_) | ComputeState::NotFound) => {
                        // Settle it from the authoritative state; finalising releases the lock.
                        self.reconcile(id).await?;
                        match self.store.get_execution(id).await? {
                            Some(e) if e.status.is_terminal() => {
                                self.release_lock_of(&e).await;
                                return Ok(Some(format!("its execution ended ({})", e.status)));
                            }
                            None => false,
                            // Still STARTING within the start grace: not lost yet.
                            Some(_) => true,
                        }
                    }
                    Err(err) => {
                        tracing::warn!(execution_id = %id, lock = %lock.name, error = %err,
                            "compute cannot say whether the lock holder runs; lease not renewed");
                        return Ok(None);
                    }
                };
                if alive {
                    let until = self.clock.now_ms() + self.lock_lease_ms;
                    self.store.renew_lock(&lock.name, id, until).await?;
                    return Ok(None);
                }
                "its execution is gone from the store".to_owned()
            }
        };
        if self.store.release_lock(&lock.name, id).await? {
            tracing::info!(execution_id = %id, lock = %lock.name, %reason, "stale lock released");
            return Ok(Some(reason));
        }
        Ok(None)
    }

    /// The lock heartbeat: [`Processor::tend_lock`] for every lock. Runs on every sweep and, in
    /// runvoyd, every fifth of the lease.
    pub async fn tend_locks(&self) -> Result<LockTending, DomainError> {
        let mut out = LockTending::default();
        for lock in self.store.list_locks().await? {
            match self.tend_lock(&lock).await {
                Ok(Some(reason)) => {
                    out.released
                        .push((lock.name.clone(), lock.execution_id.clone(), reason))
                }
                Ok(None) => {
                    if let Ok(Some(l)) = self.store.get_lock(&lock.name).await
                        && l.execution_id == lock.execution_id
                        && l.expires_at_ms > lock.expires_at_ms
                    {
                        out.renewed += 1;
                    }
                }
                Err(err) => {
                    tracing::warn!(lock = %lock.name, error = %err, "could not check the lock")
                }
            }
        }
        Ok(out)
    }

    /// Makes sweeps remove what compute keeps of settled executions (workspaces) once they
    /// completed more than `retention` ago. Without it nothing is removed.
    pub fn with_workspace_retention(mut self, retention: Duration) -> Self {
        self.workspace_retention_ms = Some(retention.as_millis() as i64);
        self
    }

    /// Handles one event. Log records are data and are stored idempotently; everything about
    /// state is only a hint that triggers [`Processor::reconcile`].
    pub async fn handle(&self, ev: Event) -> Result<(), DomainError> {
        match ev {
            Event::Records {
                execution_id,
                records,
                exit,
            } => {
                if !records.is_empty() {
                    let store = self.store.clone();
                    (|| async { store.append_logs(&execution_id, &records).await })
                        .retry(retry_policy())
                        .await?;
                    self.hub
                        .publish(&execution_id, HubMsg::Records(Arc::new(records)));
                }
                if exit.is_some() {
                    self.reconcile(&execution_id).await?;
                }
                Ok(())
            }
            Event::ComputeChanged { execution_id } => {
                self.reconcile(&execution_id).await.map(|_| ())
            }
        }
    }

    async fn compute_state(&self, id: &str) -> Result<ComputeState, ComputeError> {
        let compute = self.compute.clone();
        (|| async { compute.state(id).await })
            .retry(retry_policy())
            .when(|e| matches!(e, ComputeError::Unavailable(_)))
            .notify(|e, d| tracing::warn!(execution_id = %id, error = %e, retry_in = ?d, "compute state failed, retrying"))
            .await
    }

    async fn compute_kill(&self, id: &str) -> Result<(), ComputeError> {
        let compute = self.compute.clone();
        (|| async { compute.kill(id).await })
            .retry(retry_policy())
            .when(|e| matches!(e, ComputeError::Unavailable(_)))
            .await
    }

    /// Re-reads records after the stored contiguous prefix from the durable source and stores
    /// the missing ones. A source failure is logged and repairs nothing (`source_read` false):
    /// the records stay in the source and the next reconcile tries again. A store failure is
    /// an error: the caller retries, and nothing is declared complete meanwhile.
    async fn repair_logs(&self, id: &str, stats: LogStats) -> Result<Repair, DomainError> {
        let (recs, exit) = match self.logs.read_records(id, stats.contiguous).await {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(execution_id = %id, error = %err, "durable log source unavailable");
                return Ok(Repair {
                    added: 0,
                    exit: None,
                    stats,
                    source_read: false,
                });
            }
        };
        let missing: Vec<_> = recs
            .into_iter()
            .filter(|r| r.seq > stats.contiguous)
            .collect();
        if missing.is_empty() {
            return Ok(Repair {
                added: 0,
                exit,
                stats,
                source_read: true,
            });
        }
        if let Err(err) = self.store.append_logs(id, &missing).await {
            tracing::warn!(execution_id = %id, error = %err, records = missing.len(),
                "could not store log records re-read from the durable source; retrying later");
            return Err(err.into());
        }
        let after = self.store.log_stats(id).await?;
        self.hub.publish(id, HubMsg::Records(Arc::new(missing)));
        Ok(Repair {
            added: after.count.saturating_sub(stats.count),
            exit,
            stats: after,
            source_read: true,
        })
    }

    /// Reads compute and the store for one execution and applies the truth with compare-and-set.
    pub async fn reconcile(&self, id: &str) -> Result<Outcome, DomainError> {
        // A concurrent writer may move the version; re-read and re-apply a few times.
        for _ in 0..8 {
            let Some(e) = self.store.get_execution(id).await? else {
                return Ok(Outcome::Unknown);
            };
            if e.is_settled() {
                return Ok(Outcome::Settled);
            }
            let state = self.compute_state(id).await?;
            let now = self.clock.now_ms();
            let applied = match state {
                ComputeState::Pending | ComputeState::Running => {
                    let running = state == ComputeState::Running;
                    if let Some(reason) = self.kill_reason(&e, now) {
                        self.compute_kill(id).await?;
                        if e.status.is_terminal() {
                            return Ok(Outcome::Killed { reason });
                        }
                        let mut next = e.clone();
                        if reason.starts_with("timeout") {
                            next.timed_out = true;
                        }
                        next.kill_requested_at_ms = Some(now);
                        if self.store.update_execution(&next).await? {
                            self.hub.publish(id, HubMsg::Changed);
                            return Ok(Outcome::Killed { reason });
                        }
                        continue;
                    }
                    if running && e.status == Status::Starting {
                        let mut next = e.clone();
                        next.status = Status::Running;
                        if self.store.update_execution(&next).await? {
                            self.hub.publish(id, HubMsg::Changed);
                            return Ok(Outcome::MarkedRunning);
                        }
                        continue;
                    }
                    // A live execution with a hole in its stored logs (a store outage dropped
                    // a batch): fill it now so viewers are not held up until the end.
                    let stats = self.store.log_stats(id).await?;
                    if stats.contiguous < stats.max_seq {
                        let n = self.repair_logs(id, stats).await?.added;
                        if n > 0 {
                            return Ok(Outcome::LogsRepaired {
                                repaired_records: n,
                            });
                        }
                    }
                    return Ok(Outcome::Unchanged);
                }
                ComputeState::Exited(x) => self.finalize(e, Some(x), now).await?,
                ComputeState::NotFound => {
                    if e.status.is_terminal() {
                        // Compute forgot it (cleaned up): nothing more will arrive.
                        self.finalize(e, None, now).await?
                    } else if e.status == Status::Starting && now - e.created_at_ms <= LOST_GRACE_MS
                    {
                        // Compute may not have accepted it yet.
                        return Ok(Outcome::Unchanged);
                    } else {
                        let x = ComputeExit {
                            runner: None,
                            process_exit_code: None,
                            failure: Some("compute has no record of this execution".into()),
                        };
                        self.finalize(e, Some(x), now).await?
                    }
                }
            };
            if let Some(outcome) = applied {
                self.hub.publish(id, HubMsg::Changed);
                return Ok(outcome);
            }
        }
        Err(DomainError::Conflict(format!(
            "execution {id} kept changing while being reconciled"
        )))
    }

    /// Whether the log source's ingestion lag has passed since the execution ended (it ends
    /// now when it is not terminal yet).
    fn settled(&self, e: &Execution, now: i64) -> bool {
        let lag = self.logs.settle_ms();
        lag <= 0 || e.completed_at_ms.is_some_and(|t| now - t >= lag)
    }

    fn kill_reason(&self, e: &Execution, now: i64) -> Option<String> {
        if e.status.is_terminal() {
            // E.g. marked FAILED because starting it seemed to fail, yet compute runs it.
            return Some("execution is finished in the store but still running in compute".into());
        }
        if let Some(at) = e.kill_requested_at_ms {
            if now - at > KILL_RETRY_MS + self.kill_grace_ms {
                return Some("kill requested but the execution is still running".into());
            }
            return None;
        }
        let t = e.timeout_secs? as i64 * 1000;
        (now - e.created_at_ms > t + self.kill_grace_ms + TIMEOUT_SLACK_MS)
            .then(|| "timeout exceeded and the runner did not stop the command".into())
    }

    /// Completes logs from the durable source and applies the final status. Returns `None` when
    /// the compare-and-set lost (the caller retries).
    async fn finalize(
        &self,
        e: Execution,
        exit: Option<ComputeExit>,
        now: i64,
    ) -> Result<Option<Outcome>, DomainError> {
        let id = e.id.clone();
        let mut runner = exit.as_ref().and_then(|x| x.runner.clone());
        let mut stats = self.store.log_stats(&id).await?;
        let mut expected = runner.as_ref().map(|r| r.lines).or(e.log_lines);
        let mut repaired = 0u64;
        // Whether everything the durable source holds was compared with the store.
        let mut source_read = true;
        if expected.is_none_or(|n| stats.contiguous < n) {
            // Gaps, or no final record yet: the durable source has the truth.
            let rep = self.repair_logs(&id, stats).await?;
            repaired = rep.added;
            stats = rep.stats;
            source_read = rep.source_read;
            if let Some(r) = rep.exit {
                // The final record says how many records there are, also when it was ingested
                // after the execution was settled (a lagging source).
                expected = expected.or(Some(r.lines));
                if runner.is_none() && !e.status.is_terminal() {
                    // Compute did not say how the runner ended, but its final record did.
                    runner = Some(r);
                }
            }
        }
        let mut next = e.clone();
        if let Some(r) = &runner {
            next.dropped_log_lines = r.lost_lines();
            next.dropped_log_bytes = r.lost_bytes();
        }
        match expected {
            Some(n) if stats.contiguous >= n => {
                next.logs_complete = true;
                next.log_lines = Some(n);
            }
            Some(n) => {
                // Still missing: leave incomplete so the next sweep tries again.
                next.log_lines = Some(n);
            }
            None if source_read && stats.contiguous == stats.max_seq && self.settled(&e, now) => {
                // No final record will ever come (runner killed hard or never started): what
                // the durable source holds is all there is. (When the source could not be
                // read, the store may lack records it holds: not complete yet; when it may
                // still be ingesting them, a later sweep decides.)
                next.logs_complete = true;
                next.log_lines = Some(stats.contiguous);
            }
            None => {
                // Stored records after a hole the source could not fill (yet): never call that
                // complete; the next reconcile reads the source again.
            }
        }
        let was_terminal = e.status.is_terminal();
        if !was_terminal {
            let x = exit.unwrap_or(ComputeExit {
                runner: None,
                process_exit_code: None,
                failure: Some("execution ended without a final record".into()),
            });
            // A kill the reconciler sent because of a timeout is not a user's stop request. And
            // when the runner's final record says the stop never reached the command (it ended
            // on its own while the kill was on its way), the command's own result stands.
            let ended_on_its_own = runner.as_ref().is_some_and(|r| !r.killed);
            let killed_on_request = (e.status == Status::Terminating
                || (e.kill_requested_at_ms.is_some() && !e.timed_out))
                && !ended_on_its_own;
            let timed_out = e.timed_out || runner.as_ref().is_some_and(|r| r.timed_out);
            let code = runner.as_ref().map(|r| r.exit_code).or(x.process_exit_code);
            let (status, code, reason) = match (&runner, killed_on_request) {
                (_, true) => (Status::Stopped, code.or(Some(137)), None),
                (_, false) if timed_out => (
                    Status::Failed,
                    code,
                    Some(format!("timed out after {}s", e.timeout_secs.unwrap_or(0))),
                ),
                (Some(r), false) if r.error.is_some() => (Status::Failed, code, r.error.clone()),
                (Some(r), false) if r.exit_code == 0 => (Status::Succeeded, Some(0), None),
                (Some(_), false) => (Status::Failed, code, None),
                (None, false) => (
                    Status::Failed,
                    code,
                    Some(
                        x.failure
                            .clone()
                            .unwrap_or_else(|| "runner ended without a final record".into()),
                    ),
                ),
            };
            if !can_transition(e.status, status) {
                return Ok(Some(Outcome::Unchanged));
            }
            next.status = status;
            next.exit_code = code;
            next.timed_out = timed_out;
            next.failure_reason = reason.or(x.failure);
            next.completed_at_ms = Some(now);
        }
        if next == e {
            return Ok(Some(Outcome::Unchanged));
        }
        if !self.store.update_execution(&next).await? {
            return Ok(None);
        }
        if !was_terminal {
            // Any terminal status frees its lock at once.
            self.release_lock_of(&next).await;
        }
        Ok(Some(if was_terminal {
            Outcome::LogsCompleted {
                repaired_records: repaired,
            }
        } else {
            Outcome::Finalized {
                status: next.status,
                repaired_records: repaired,
            }
        }))
    }

    /// Reconciles every unsettled execution, reports compute executions with no record, removes
    /// workspaces of settled executions past the retention, and keeps the report in the store.
    pub async fn sweep(&self, trigger: &str) -> Result<SweepReport, DomainError> {
        let now = self.clock.now_ms();
        let mut report = SweepReport {
            timestamp: crate::clock::rfc3339(now),
            trigger: trigger.to_owned(),
            ..Default::default()
        };
        let unsettled = self.store.list_unsettled().await?;
        report.checked = unsettled.len() as u64;
        for e in &unsettled {
            self.reconcile_into(e, &mut report).await?;
        }
        self.housekeeping(&unsettled, now, &mut report).await;
        match self.tend_locks().await {
            Ok(t) => {
                for (name, id, reason) in t.released {
                    report.issues.push(issue(
                        "warning",
                        "lock",
                        &name,
                        "repaired",
                        format!("released lock held by execution {id}: {reason}"),
                    ));
                }
            }
            Err(err) => report.issues.push(issue(
                "error",
                "lock",
                "",
                "reported",
                format!("could not check locks: {err}"),
            )),
        }
        // What compute keeps for each registered image (on Cloud Run: its job) exists and
        // matches: deleted or edited behind runvoy's back, it is put back.
        match self.store.list_images().await {
            Ok(images) => {
                for img in images {
                    if let Err(err) = self.compute.prepare_image(&img.spec()).await {
                        report.issues.push(issue(
                            "error",
                            "image",
                            &img.id,
                            "reported",
                            format!("could not prepare image {}: {err}", img.image),
                        ));
                    }
                }
            }
            Err(err) => report.issues.push(issue(
                "error",
                "image",
                "",
                "reported",
                format!("could not list images: {err}"),
            )),
        }
        // Expired claims (and the unclaimed users they were for). WebSocket tokens are
        // stateless HMAC tokens: nothing stored, nothing to purge.
        match self.store.purge_unclaimed(now).await {
            Ok(n) => report.purged += n,
            Err(err) => report.issues.push(issue(
                "error",
                "users",
                "",
                "reported",
                format!("could not purge expired claims: {err}"),
            )),
        }
        report.error_count = report
            .issues
            .iter()
            .filter(|i| i.severity == "error")
            .count() as u64;
        if let Err(err) = self.store.save_report(&report, REPORTS_KEPT).await {
            tracing::warn!(error = %err, "could not keep the reconcile report");
        }
        Ok(report)
    }

    /// A short sweep of the young executions still STARTING or TERMINATING (created within
    /// [`YOUNG_WINDOW_MS`]): one that never reached compute, because runvoyd stopped between
    /// storing it and starting it, is settled within a minute instead of at the next full
    /// sweep an hour later. It reads only those executions, so it can run every few seconds,
    /// and keeps a report only when it changed something.
    pub async fn sweep_young(&self) -> Result<SweepReport, DomainError> {
        let now = self.clock.now_ms();
        let mut report = SweepReport {
            timestamp: crate::clock::rfc3339(now),
            trigger: "young".to_owned(),
            ..Default::default()
        };
        let q = ListQuery {
            limit: 500,
            statuses: vec![Status::Starting, Status::Terminating],
            since_ms: Some(now - YOUNG_WINDOW_MS),
            ..Default::default()
        };
        let (mut young, _) = self.store.list_executions(&q).await?;
        // Ended, but their logs are not complete yet: waiting for a lagging log source.
        if self.logs.settle_ms() > 0 {
            young.extend(self.store.list_unsettled().await?.into_iter().filter(|e| {
                e.status.is_terminal()
                    && !e.logs_complete
                    && e.created_at_ms >= now - YOUNG_WINDOW_MS
            }));
        }
        report.checked = young.len() as u64;
        for e in &young {
            self.reconcile_into(e, &mut report).await?;
        }
        report.error_count = report
            .issues
            .iter()
            .filter(|i| i.severity == "error")
            .count() as u64;
        if (report.reconciled_count > 0 || report.error_count > 0)
            && let Err(err) = self.store.save_report(&report, REPORTS_KEPT).await
        {
            tracing::warn!(error = %err, "could not keep the reconcile report");
        }
        Ok(report)
    }

    /// Reconciles one execution of a sweep and notes in `report` what it repaired.
    async fn reconcile_into(
        &self,
        e: &Execution,
        report: &mut SweepReport,
    ) -> Result<(), DomainError> {
        let o = match self.reconcile(&e.id).await {
            Ok(o) => o,
            Err(err) => {
                report.issues.push(issue(
                    "error",
                    "execution",
                    &e.id,
                    "reported",
                    format!("could not reconcile: {err}"),
                ));
                return Ok(());
            }
        };
        let (kind, action, message) = match &o {
            Outcome::Unchanged | Outcome::Settled | Outcome::Unknown => return Ok(()),
            Outcome::MarkedRunning => ("execution", "repaired", "marked RUNNING".to_owned()),
            Outcome::Killed { reason } => {
                report.killed += 1;
                ("execution", "killed", reason.clone())
            }
            Outcome::Finalized {
                status,
                repaired_records,
            } => {
                report.finalized += 1;
                report.log_records_repaired += repaired_records;
                let code = self
                    .store
                    .get_execution(&e.id)
                    .await?
                    .and_then(|x| x.exit_code)
                    .map_or("none".to_owned(), |c| c.to_string());
                (
                    "execution",
                    "repaired",
                    format!(
                        "was {} but had ended: finalised as {status} (exit code {code}); \
                         {repaired_records} log records re-read",
                        e.status
                    ),
                )
            }
            Outcome::LogsCompleted { repaired_records } => {
                report.log_records_repaired += repaired_records;
                (
                    "logs",
                    "repaired",
                    format!("logs completed; {repaired_records} log records re-read"),
                )
            }
            Outcome::LogsRepaired { repaired_records } => {
                report.log_records_repaired += repaired_records;
                (
                    "logs",
                    "repaired",
                    format!("{repaired_records} missing log records re-read while running"),
                )
            }
        };
        report.reconciled_count += 1;
        report
            .issues
            .push(issue("warning", kind, &e.id, action, message));
        Ok(())
    }

    /// Orphans and retention: walks what compute keeps that the sweep did not just reconcile.
    async fn housekeeping(&self, unsettled: &[Execution], now: i64, report: &mut SweepReport) {
        let ids = match self.compute.list().await {
            Ok(ids) => ids,
            Err(err) => {
                report.issues.push(issue(
                    "error",
                    "compute",
                    "",
                    "reported",
                    format!("could not list compute executions: {err}"),
                ));
                return;
            }
        };
        let known: HashSet<&str> = unsettled.iter().map(|e| e.id.as_str()).collect();
        for cid in ids {
            if known.contains(cid.as_str()) {
                continue;
            }
            let e = match self.store.get_execution(&cid).await {
                Ok(e) => e,
                Err(err) => {
                    report.issues.push(issue(
                        "error",
                        "compute",
                        &cid,
                        "reported",
                        format!("could not read its record: {err}"),
                    ));
                    continue;
                }
            };
            match e {
                None => {
                    report.orphans += 1;
                    let live = matches!(
                        self.compute.state(&cid).await,
                        Ok(ComputeState::Running | ComputeState::Pending)
                    );
                    report.issues.push(issue(
                        "warning",
                        "compute",
                        &cid,
                        "reported",
                        if live {
                            "orphan process: compute runs an execution the store has no record of"
                                .into()
                        } else {
                            "orphan workspace: compute keeps an execution the store has no record of"
                                .into()
                        },
                    ));
                }
                Some(e) => {
                    let Some(keep_ms) = self.workspace_retention_ms else {
                        continue;
                    };
                    let expired = e.completed_at_ms.is_some_and(|c| now - c > keep_ms);
                    if !e.is_settled() || !expired {
                        continue;
                    }
                    match self.compute.cleanup(&cid).await {
                        Ok(true) => report.workspaces_removed += 1,
                        Ok(false) => {}
                        Err(err) => report.issues.push(issue(
                            "error",
                            "workspace",
                            &cid,
                            "reported",
                            format!("could not remove the finished execution's workspace: {err}"),
                        )),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
