//! The orchestrator: what the API does on behalf of a caller.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use runvoy_proto::{RunRequest, Status};

use crate::clock::Clock;
use crate::error::DomainError;
use crate::follow::Follower;
use crate::hub::{HubMsg, LogHub};
use crate::model::*;
use crate::ports::{Compute, ComputeError, ListQuery, Store, StoreError};
use crate::processor::Processor;

/// Settings of the orchestrator.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Image used when a run names none.
    pub default_image: String,
    /// Seconds between SIGTERM and SIGKILL on kill or timeout.
    pub kill_grace_secs: u64,
}

/// Result of a kill request.
#[derive(Debug, PartialEq, Eq)]
pub enum KillOutcome {
    /// The kill was sent; the execution is TERMINATING.
    Started,
    /// It had already finished.
    AlreadyTerminal,
}

/// Orchestrator service shared by every API handler.
pub struct Service {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Compute.
    pub compute: Arc<dyn Compute>,
    /// Fan-out hub.
    pub hub: Arc<LogHub>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Processor / reconciler.
    pub processor: Arc<Processor>,
    /// Settings.
    pub config: ServiceConfig,
}

/// Who is asking, for audit fields.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated user.
    pub user: User,
    /// The request id.
    pub request_id: String,
}

fn validate_run(req: &RunRequest) -> Result<(), DomainError> {
    let bad = |m: String| Err(DomainError::Invalid(m));
    if req.command.trim().is_empty() {
        return bad("command is required".into());
    }
    if req.command.len() > MAX_COMMAND_BYTES {
        return bad(format!("command is longer than {MAX_COMMAND_BYTES} bytes"));
    }
    if req.command.contains('\0') {
        return bad("command must not contain NUL bytes".into());
    }
    if let Some(img) = &req.image
        && (img.trim().is_empty()
            || img.len() > 256
            || img.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return bad(
            "image must be a non-empty reference without whitespace, at most 256 characters".into(),
        );
    }
    if req.env.len() > MAX_ENV_VARS {
        return bad(format!("at most {MAX_ENV_VARS} env variables are allowed"));
    }
    let mut size = 0;
    for (k, v) in &req.env {
        if !valid_env_name(k) {
            return bad(format!(
                "env name {k:?} is invalid: use letters, digits and _, not starting with a digit"
            ));
        }
        if v.contains('\0') || v.contains('\n') {
            return bad(format!(
                "env value of {k} must not contain newlines or NUL bytes"
            ));
        }
        size += k.len() + v.len();
    }
    if size > MAX_ENV_BYTES {
        return bad(format!("env is larger than {MAX_ENV_BYTES} bytes"));
    }
    if let Some(t) = req.timeout
        && (t == 0 || t > MAX_TIMEOUT_SECS)
    {
        return bad(format!(
            "timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds"
        ));
    }
    Ok(())
}

impl Service {
    /// Validates, records (STARTING) and starts an execution.
    pub async fn run(&self, caller: &Caller, req: RunRequest) -> Result<Execution, DomainError> {
        validate_run(&req)?;
        let now = self.clock.now_ms();
        let image = req
            .image
            .clone()
            .unwrap_or_else(|| self.config.default_image.clone());
        let mut e = Execution {
            id: new_execution_id(),
            created_by: caller.user.email.clone(),
            command: req.command.clone(),
            image: image.clone(),
            status: Status::Starting,
            exit_code: None,
            created_at_ms: now,
            completed_at_ms: None,
            timeout_secs: req.timeout,
            timed_out: false,
            failure_reason: None,
            logs_complete: false,
            log_lines: None,
            kill_requested_at_ms: None,
            created_by_request_id: caller.request_id.clone(),
            modified_by_request_id: caller.request_id.clone(),
            compute_platform: self.compute.platform().to_owned(),
            version: 0,
        };
        match self.store.create_execution(&e).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists(_)) => {
                e.id = new_execution_id();
                self.store.create_execution(&e).await?;
            }
            Err(err) => return Err(err.into()),
        }
        let spec = JobSpec {
            execution_id: e.id.clone(),
            command: req.command,
            image,
            env: req.env,
            timeout_secs: req.timeout,
            kill_grace_secs: self.config.kill_grace_secs,
            banner: vec![format!(
                "### runvoy runner: execution {} started by {} (request {})",
                e.id, caller.user.email, caller.request_id
            )],
        };
        let compute = self.compute.clone();
        let started = (|| async { compute.start(&spec).await })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(3),
            )
            .when(|err| matches!(err, ComputeError::Unavailable(_)))
            .notify(|err, d| tracing::warn!(execution_id = %spec.execution_id, error = %err, retry_in = ?d, "compute start failed, retrying"))
            .await;
        if let Err(err) = started {
            // Keep the record (audit trail) but never leave it STARTING.
            let mut failed = e.clone();
            failed.status = Status::Failed;
            failed.failure_reason = Some(format!("could not start: {err}"));
            failed.completed_at_ms = Some(self.clock.now_ms());
            failed.logs_complete = true;
            failed.log_lines = Some(0);
            let _ = self.store.update_execution(&failed).await;
            return Err(err.into());
        }
        Ok(e)
    }

    /// Reads one execution.
    pub async fn get(&self, id: &str) -> Result<Execution, DomainError> {
        if !valid_execution_id(id) {
            return Err(DomainError::NotFound(format!("execution {id} not found")));
        }
        self.store
            .get_execution(id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("execution {id} not found")))
    }

    /// Lists executions.
    pub async fn list(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), DomainError> {
        Ok(self.store.list_executions(q).await?)
    }

    /// Requests a kill: TERMINATING, then compute stops it and the processor marks it STOPPED.
    pub async fn kill(&self, caller: &Caller, id: &str) -> Result<KillOutcome, DomainError> {
        for _ in 0..8 {
            let e = self.get(id).await?;
            if e.status.is_terminal() {
                return Ok(KillOutcome::AlreadyTerminal);
            }
            let mut next = e.clone();
            next.status = Status::Terminating;
            next.kill_requested_at_ms = Some(self.clock.now_ms());
            next.modified_by_request_id = caller.request_id.clone();
            if e.status == Status::Terminating || self.store.update_execution(&next).await? {
                self.compute.kill(id).await?;
                self.hub.publish(id, HubMsg::Changed);
                // The process may already be gone: let the reconciler settle it right away.
                let _ = self.processor.reconcile(id).await;
                return Ok(KillOutcome::Started);
            }
        }
        Err(DomainError::Conflict(format!(
            "execution {id} kept changing; try again"
        )))
    }

    /// A page of stored logs after `after_seq` and whether more are stored.
    pub async fn logs(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<(Execution, Vec<LogRecord>, bool), DomainError> {
        let e = self.get(id).await?;
        let mut recs = self.store.read_logs(id, after_seq, limit + 1).await?;
        let more = recs.len() > limit;
        recs.truncate(limit);
        Ok((e, recs, more))
    }

    /// Follows an execution's logs after `after_seq`.
    pub async fn follow(&self, id: &str, after_seq: u64) -> Result<Follower, DomainError> {
        self.get(id).await?;
        Ok(Follower::new(
            self.store.clone(),
            self.hub.clone(),
            id,
            after_seq,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_validation() {
        let ok = RunRequest {
            command: "echo".into(),
            ..Default::default()
        };
        assert!(validate_run(&ok).is_ok());
        for bad in [
            RunRequest {
                command: "  ".into(),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                timeout: Some(0),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                image: Some("a b".into()),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                env: [("1X".to_string(), "v".to_string())].into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(validate_run(&bad), Err(DomainError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
