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
use crate::model::{Execution, can_transition};
use crate::ports::{Clock, Compute, ComputeError, ComputeExit, ComputeState, LogSource, Store};

/// How long a STARTING execution may be unknown to compute before it is declared lost
/// (covers the window between storing an execution and compute accepting it).
pub const LOST_GRACE_MS: i64 = 60_000;
/// Slack after a timeout (plus kill grace) before the reconciler kills as a backstop.
pub const TIMEOUT_SLACK_MS: i64 = 15_000;
/// How long after a kill request the reconciler sends another kill.
pub const KILL_RETRY_MS: i64 = 30_000;

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
    /// No such execution in the store.
    Unknown,
}

/// One problem found by a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    /// `error` or `warning`.
    pub severity: String,
    /// `execution`, `compute`, `logs`.
    pub resource_type: String,
    /// Id of the resource.
    pub resource_id: String,
    /// `repaired`, `killed`, `reported`.
    pub action: String,
    /// What was found.
    pub message: String,
}

/// The result of a full sweep.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SweepReport {
    /// When the sweep started (RFC 3339).
    pub timestamp: String,
    /// What triggered it (`startup`, `schedule`, `api`).
    pub trigger: String,
    /// Unsettled executions examined.
    pub checked: u64,
    /// Executions whose stored state changed.
    pub reconciled_count: u64,
    /// Issues with severity `error`.
    pub error_count: u64,
    /// Everything found.
    pub issues: Vec<Issue>,
}

/// Applies events and reconciles executions.
pub struct Processor {
    store: Arc<dyn Store>,
    compute: Arc<dyn Compute>,
    logs: Arc<dyn LogSource>,
    hub: Arc<LogHub>,
    clock: Arc<dyn Clock>,
    kill_grace_ms: i64,
}

fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(4)
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
        }
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
            .await
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
                        self.compute.kill(id).await?;
                        if e.status != Status::Terminating && e.status.is_terminal() {
                            return Ok(Outcome::Killed { reason });
                        }
                        let mut next = e.clone();
                        if reason.starts_with("timeout") {
                            next.timed_out = true;
                        }
                        next.kill_requested_at_ms = Some(now);
                        if self.store.update_execution(&next).await? {
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
                    return Ok(Outcome::Unchanged);
                }
                ComputeState::Exited(x) => self.finalize(e, Some(x), now).await?,
                ComputeState::NotFound => {
                    if e.status.is_terminal() {
                        // Compute forgot it (cleaned up): nothing more will arrive.
                        self.finalize(e, None, now).await?
                    } else if now - e.created_at_ms > LOST_GRACE_MS {
                        let x = ComputeExit {
                            runner: None,
                            process_exit_code: None,
                            failure: Some("compute has no record of this execution".into()),
                        };
                        self.finalize(e, Some(x), now).await?
                    } else {
                        return Ok(Outcome::Unchanged);
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

    fn kill_reason(&self, e: &Execution, now: i64) -> Option<String> {
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
        let runner = exit.as_ref().and_then(|x| x.runner.clone());
        let mut stats = self.store.log_stats(&id).await?;
        let expected = runner.as_ref().map(|r| r.lines).or(e.log_lines);
        let mut repaired = 0u64;
        if expected.is_none_or(|n| stats.contiguous < n) {
            // Gaps, or no final record: the durable source has the truth.
            match self.logs.read_records(&id, stats.contiguous).await {
                Ok((recs, _)) => {
                    let missing: Vec<_> = recs
                        .into_iter()
                        .filter(|r| r.seq > stats.contiguous)
                        .collect();
                    if !missing.is_empty() {
                        self.store.append_logs(&id, &missing).await?;
                        let before = stats.count;
                        stats = self.store.log_stats(&id).await?;
                        repaired = stats.count.saturating_sub(before);
                        self.hub.publish(&id, HubMsg::Records(Arc::new(missing)));
                    }
                }
                Err(err) => {
                    tracing::warn!(execution_id = %id, error = %err, "durable log source unavailable")
                }
            }
        }
        let mut next = e.clone();
        match expected {
            Some(n) if stats.contiguous >= n => {
                next.logs_complete = true;
                next.log_lines = Some(n);
            }
            Some(n) => {
                // Still missing: leave incomplete so the next sweep tries again.
                next.log_lines = Some(n);
            }
            None => {
                // No final record will ever come (runner killed hard or never started): what
                // the durable source holds is all there is.
                next.logs_complete = true;
                next.log_lines = Some(stats.contiguous);
            }
        }
        let was_terminal = e.status.is_terminal();
        if !was_terminal {
            let x = exit.unwrap_or(ComputeExit {
                runner: None,
                process_exit_code: None,
                failure: Some("execution ended without a final record".into()),
            });
            let killed_on_request =
                e.status == Status::Terminating || e.kill_requested_at_ms.is_some();
            let (status, code, reason) = match (&x.runner, killed_on_request) {
                (Some(r), true) => (Status::Stopped, Some(r.exit_code), None),
                (None, true) => (Status::Stopped, x.process_exit_code.or(Some(137)), None),
                (Some(r), false) if r.timed_out => (
                    Status::Failed,
                    Some(r.exit_code),
                    Some(format!("timed out after {}s", e.timeout_secs.unwrap_or(0))),
                ),
                (Some(r), false) if r.error.is_some() => {
                    (Status::Failed, Some(r.exit_code), r.error.clone())
                }
                (Some(r), false) if r.exit_code == 0 => (Status::Succeeded, Some(0), None),
                (Some(r), false) => (Status::Failed, Some(r.exit_code), None),
                (None, false) => (
                    Status::Failed,
                    x.process_exit_code,
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
            next.timed_out = e.timed_out || runner.as_ref().is_some_and(|r| r.timed_out);
            next.failure_reason = reason.or(x.failure);
            next.completed_at_ms = Some(now);
        }
        if next == e {
            return Ok(Some(Outcome::Unchanged));
        }
        if !self.store.update_execution(&next).await? {
            return Ok(None);
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

    /// Reconciles every unsettled execution and reports compute executions with no record.
    pub async fn sweep(&self, trigger: &str) -> Result<SweepReport, DomainError> {
        let mut report = SweepReport {
            timestamp: crate::clock::rfc3339(self.clock.now_ms()),
            trigger: trigger.to_owned(),
            ..Default::default()
        };
        let unsettled = self.store.list_unsettled().await?;
        report.checked = unsettled.len() as u64;
        for e in &unsettled {
            match self.reconcile(&e.id).await {
                Ok(Outcome::Unchanged | Outcome::Settled | Outcome::Unknown) => {}
                Ok(o) => {
                    report.reconciled_count += 1;
                    let (action, message, severity) = match &o {
                        Outcome::Killed { reason } => ("killed", reason.clone(), "warning"),
                        Outcome::Finalized {
                            status,
                            repaired_records,
                        } => (
                            "repaired",
                            format!(
                                "finalised as {status}; {repaired_records} log records re-read"
                            ),
                            "warning",
                        ),
                        Outcome::LogsCompleted { repaired_records } => (
                            "repaired",
                            format!("logs completed; {repaired_records} log records re-read"),
                            "warning",
                        ),
                        _ => ("repaired", format!("{o:?}"), "warning"),
                    };
                    report.issues.push(Issue {
                        severity: severity.into(),
                        resource_type: "execution".into(),
                        resource_id: e.id.clone(),
                        action: action.into(),
                        message,
                    });
                }
                Err(err) => report.issues.push(Issue {
                    severity: "error".into(),
                    resource_type: "execution".into(),
                    resource_id: e.id.clone(),
                    action: "reported".into(),
                    message: format!("could not reconcile: {err}"),
                }),
            }
        }
        match self.compute.list().await {
            Ok(ids) => {
                let known: HashSet<&str> = unsettled.iter().map(|e| e.id.as_str()).collect();
                for cid in ids {
                    if known.contains(cid.as_str()) {
                        continue;
                    }
                    if self.store.get_execution(&cid).await?.is_none() {
                        report.issues.push(Issue {
                            severity: "warning".into(),
                            resource_type: "compute".into(),
                            resource_id: cid,
                            action: "reported".into(),
                            message: "compute execution has no record in the store".into(),
                        });
                    }
                }
            }
            Err(err) => report.issues.push(Issue {
                severity: "error".into(),
                resource_type: "compute".into(),
                resource_id: String::new(),
                action: "reported".into(),
                message: format!("could not list compute executions: {err}"),
            }),
        }
        report.error_count = report
            .issues
            .iter()
            .filter(|i| i.severity == "error")
            .count() as u64;
        Ok(report)
    }
}
