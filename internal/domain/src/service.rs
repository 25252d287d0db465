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
use crate::ports::{Compute, ComputeError, ListQuery, Lock, LockedCreate, Store, StoreError};
use crate::processor::Processor;

/// Settings of the orchestrator.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Image used when a run names none.
    pub default_image: String,
    /// Seconds between SIGTERM and SIGKILL on kill or timeout.
    pub kill_grace_secs: u64,
    /// Most unfinished executions one user may have at once (0: no limit).
    pub max_active_per_user: u64,
    /// Most unfinished executions on the whole server at once (0: no limit).
    pub max_active_total: u64,
    /// Most bytes of command output stored per execution (0: no limit).
    pub max_output_bytes: u64,
    /// Most output records stored per execution (0: no limit).
    pub max_output_lines: u64,
    /// The most a run may ask for, per resource (`None`: the run may not change it).
    pub max_resources: Resources,
}

impl ServiceConfig {
    /// The defaults of `runvoyd serve`: image `local`, 10 s kill grace, 10 unfinished
    /// executions per user and 50 in all, 256 MiB and 2,000,000 records of output each.
    pub fn new(default_image: impl Into<String>) -> Self {
        ServiceConfig {
            default_image: default_image.into(),
            kill_grace_secs: 10,
            max_active_per_user: 10,
            max_active_total: 50,
            max_output_bytes: 256 * 1024 * 1024,
            max_output_lines: 2_000_000,
            max_resources: Resources::default(),
        }
    }
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
    /// Serialises the limit check and the insert of new executions in this process, so
    /// concurrent runs cannot all pass the same count (see [`Service::admit`]).
    pub admission: tokio::sync::Mutex<()>,
    /// Mints the fetch of a run's secrets; a server without it refuses runs that name secrets.
    pub secrets_grant: Option<Arc<dyn crate::secrets::SecretsGrant>>,
}

/// Who is asking, for audit fields.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated user.
    pub user: User,
    /// The request id.
    pub request_id: String,
}

/// The command of a run: its shell-line form (stored and shown) and, for an argv run, the
/// exact words.
fn command_of(req: &RunRequest) -> Result<(String, Option<Vec<String>>), DomainError> {
    let bad = |m: String| Err(DomainError::Invalid(m));
    let Some(argv) = &req.argv else {
        if req.command.trim().is_empty() {
            return bad("command (a shell line) or argv (a list of words) is required".into());
        }
        if req.command.len() > MAX_COMMAND_BYTES {
            return bad(format!("command is longer than {MAX_COMMAND_BYTES} bytes"));
        }
        if req.command.contains('\0') {
            return bad("command must not contain NUL bytes".into());
        }
        return Ok((req.command.clone(), None));
    };
    if !req.command.is_empty() {
        return bad(
            "give either command (a shell line) or argv (a list of words), not both".into(),
        );
    }
    if argv.first().is_none_or(|p| p.is_empty()) {
        return bad("argv must start with a non-empty program name".into());
    }
    if argv.len() > MAX_ARGV_WORDS {
        return bad(format!("argv has more than {MAX_ARGV_WORDS} words"));
    }
    if argv.iter().any(|w| w.contains('\0')) {
        return bad("argv words must not contain NUL bytes".into());
    }
    let line = runvoy_proto::shell_join(argv);
    if line.len() > MAX_COMMAND_BYTES {
        return bad(format!(
            "argv is longer than {MAX_COMMAND_BYTES} bytes once quoted"
        ));
    }
    Ok((line, Some(argv.clone())))
}

/// The decoded standard input of a run.
fn stdin_of(req: &RunRequest) -> Result<Option<Vec<u8>>, DomainError> {
    let Some(b64) = &req.stdin_b64 else {
        return Ok(None);
    };
    let data = runvoy_proto::b64_decode(b64)
        .ok_or_else(|| DomainError::Invalid("stdin_b64 is not valid base64".into()))?;
    if data.len() > runvoy_proto::MAX_STDIN_BYTES {
        return Err(DomainError::Invalid(format!(
            "stdin is larger than {} bytes",
            runvoy_proto::MAX_STDIN_BYTES
        )));
    }
    Ok(Some(data))
}

fn validate_run(req: &RunRequest) -> Result<(), DomainError> {
    let bad = |m: String| Err(DomainError::Invalid(m));
    command_of(req)?;
    stdin_of(req)?;
    // An image id is longer than its reference.
    if let Some(img) = &req.image
        && (img.trim().is_empty()
            || img.len() > crate::images::MAX_IMAGE_ID
            || img.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return bad(format!(
            "image must be a non-empty reference or image id without whitespace, at most {} \
             characters",
            crate::images::MAX_IMAGE_ID
        ));
    }
    runvoy_proto::check_env(&req.env).map_err(DomainError::Invalid)?;
    git_of(req)?;
    if let Some(l) = &req.lock
        && !runvoy_proto::valid_lock_name(l)
    {
        return bad(format!(
            "lock name {l:?} is invalid: use 1 to {} letters, digits, '.', '_' or '-', starting \
             with a letter or digit",
            runvoy_proto::MAX_LOCK_NAME
        ));
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

/// The run's git checkout, validated (`runvoy_proto::git`).
fn git_of(req: &RunRequest) -> Result<Option<runvoy_proto::git::Checkout>, DomainError> {
    runvoy_proto::git::Checkout::from_request(
        req.git_repo.as_deref(),
        req.git_ref.as_deref(),
        req.git_path.as_deref(),
    )
    .map_err(DomainError::Invalid)
}

/// Checks a run's resource request against the server's maxima.
fn resources(
    req: Option<&runvoy_proto::RunResources>,
    max: &Resources,
) -> Result<Resources, DomainError> {
    let Some(req) = req else {
        return Ok(Resources::default());
    };
    let cpu_millis = match req.cpus {
        None => None,
        Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => Some((c * 1000.0).round() as u64),
        Some(c) => {
            return Err(DomainError::Invalid(format!(
                "cpus must be above 0, got {c}"
            )));
        }
    };
    let check = |name: &str, unit: &str, asked: Option<u64>, max: Option<u64>| match (asked, max) {
        (None, _) => Ok(None),
        (Some(0), _) => Err(DomainError::Invalid(format!("{name} must be above 0"))),
        (Some(_), None) => Err(DomainError::Invalid(format!(
            "this server does not let runs change {name}"
        ))),
        (Some(a), Some(m)) if a > m => Err(DomainError::Invalid(format!(
            "{name} {a}{unit} is above this server's maximum of {m}{unit}"
        ))),
        (Some(a), Some(_)) => Ok(Some(a)),
    };
    Ok(Resources {
        memory_mb: check("memory_mb", " MiB", req.memory_mb, max.memory_mb)?,
        cpu_millis: check("cpus", "/1000 cores", cpu_millis, max.cpu_millis)?,
        pids: check("pids", "", req.pids, max.pids)?,
        workspace_mb: check("workspace_mb", " MiB", req.workspace_mb, max.workspace_mb)?,
    })
}

impl Service {
    /// Validates, records (STARTING) and starts an execution.
    pub async fn run(&self, caller: &Caller, req: RunRequest) -> Result<Execution, DomainError> {
        validate_run(&req)?;
        let mut resources = resources(req.resources.as_ref(), &self.config.max_resources)?;
        let run_image = self.image_for_run(req.image.as_deref()).await?;
        // A registered image's cpu, memory and timeout are the run's defaults: what the run
        // sets itself wins, and what it inherits is held to the same maxima.
        if let Some(img) = &run_image.image {
            let cpu = resources.cpu_millis.map_or(img.cpu_millis, |_| None);
            let memory = resources.memory_mb.map_or(img.memory_mb, |_| None);
            crate::images::check_image_resources(
                &format!("image {}", img.id),
                cpu,
                memory,
                &self.config.max_resources,
            )?;
            resources.cpu_millis = resources.cpu_millis.or(cpu);
            resources.memory_mb = resources.memory_mb.or(memory);
        }
        let timeout = req
            .timeout
            .or(run_image.image.as_ref().and_then(|i| i.timeout_secs));
        let (command, argv) = command_of(&req)?;
        let stdin = stdin_of(&req)?;
        let secrets = self.secret_refs(&req).await?;
        let git = git_of(&req)?;
        let now = self.clock.now_ms();
        let image = run_image.id;
        let mut e = Execution {
            id: new_execution_id(),
            created_by: caller.user.email.clone(),
            command: command.clone(),
            argv: argv.clone(),
            image,
            status: Status::Starting,
            exit_code: None,
            created_at_ms: now,
            completed_at_ms: None,
            timeout_secs: timeout,
            timed_out: false,
            failure_reason: None,
            logs_complete: false,
            log_lines: None,
            dropped_log_lines: 0,
            dropped_log_bytes: 0,
            kill_requested_at_ms: None,
            stopped_by: None,
            created_by_request_id: caller.request_id.clone(),
            modified_by_request_id: caller.request_id.clone(),
            compute_platform: self.compute.platform().to_owned(),
            lock: req.lock.clone(),
            version: 0,
        };
        {
            let _admitted = self.admission.lock().await;
            self.admit(&caller.user.email).await?;
            match &req.lock {
                Some(name) => self.create_locked(&mut e, name).await?,
                None => match self.store.create_execution(&e).await {
                    Ok(()) => {}
                    Err(StoreError::AlreadyExists(_)) => {
                        e.id = new_execution_id();
                        self.store.create_execution(&e).await?;
                    }
                    Err(err) => return Err(err.into()),
                },
            }
        }
        let spec = JobSpec {
            execution_id: e.id.clone(),
            command,
            argv,
            stdin,
            image: run_image.reference,
            image_settings: run_image.image.as_ref().map(|i| i.spec()),
            env: req.env,
            timeout_secs: timeout,
            kill_grace_secs: self.config.kill_grace_secs,
            banner: std::iter::once(format!(
                "### runvoy runner: execution {} started by {} (request {})",
                e.id, caller.user.email, caller.request_id
            ))
            .chain(
                git.as_ref()
                    .map(|g| format!("### runvoy runner: {}", g.describe())),
            )
            .collect(),
            max_output_bytes: self.config.max_output_bytes,
            max_output_lines: self.config.max_output_lines,
            resources,
            secrets_fetch: match (&self.secrets_grant, secrets.is_empty()) {
                (Some(g), false) => Some(g.grant(&e.id, &secrets)),
                _ => None,
            },
            secrets,
            git,
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
            // Keep the record (audit trail) but never leave it STARTING. Its logs are left to
            // the reconciler, which completes them when compute has nothing and kills the
            // execution when a start that answered with an error did start it after all.
            let mut failed = e.clone();
            failed.status = Status::Failed;
            failed.failure_reason = Some(format!("could not start: {err}"));
            failed.completed_at_ms = Some(self.clock.now_ms());
            if self.store.update_execution(&failed).await.unwrap_or(false) {
                self.processor.release_lock_of(&failed).await;
                let (p, id) = (self.processor.clone(), e.id.clone());
                tokio::spawn(async move {
                    if let Err(err) = p.reconcile(&id).await {
                        tracing::warn!(execution_id = %id, error = %err, "reconcile after a failed start failed; the next sweep retries");
                    }
                });
            }
            return Err(err.into());
        }
        Ok(e)
    }

    /// The references of the secrets a run names: each must exist (404 `SECRET_NOT_FOUND`),
    /// names are de-duplicated, and no two may share an environment name with each other or
    /// with the run's own environment (which one would win is not for runvoy to guess).
    async fn secret_refs(
        &self,
        req: &RunRequest,
    ) -> Result<Vec<crate::secrets::SecretRef>, DomainError> {
        use crate::secrets::{MAX_RUN_SECRETS, SecretRef, valid_secret_name};
        let mut names: Vec<&str> = req.secrets.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        if names.len() > MAX_RUN_SECRETS {
            return Err(DomainError::Invalid(format!(
                "{} secrets; a run may name at most {MAX_RUN_SECRETS}",
                names.len()
            )));
        }
        if self.secrets_grant.is_none() || !self.compute.delivers_secrets() {
            return Err(DomainError::Invalid(format!(
                "this server's compute ({}) cannot deliver secrets to runs",
                self.compute.platform()
            )));
        }
        let mut refs: Vec<SecretRef> = Vec::new();
        for name in names {
            let found = if valid_secret_name(name) {
                self.store.get_secret(name).await?
            } else {
                None
            };
            let Some(s) = found else {
                return Err(DomainError::SecretNotFound(format!(
                    "secret {name:?} not found; nothing was started"
                )));
            };
            if req.env.contains_key(&s.key_name) {
                return Err(DomainError::Invalid(format!(
                    "secret {name:?} is injected as {}, which the run's environment sets too",
                    s.key_name
                )));
            }
            if let Some(other) = refs.iter().find(|r| r.key_name == s.key_name) {
                return Err(DomainError::Invalid(format!(
                    "secrets {:?} and {name:?} are both injected as {}",
                    other.name, s.key_name
                )));
            }
            refs.push(SecretRef {
                name: s.name,
                key_name: s.key_name,
            });
        }
        Ok(refs)
    }

    /// Stores `e` holding lock `name`, in one atomic store step. A holder that already finished
    /// (or is gone) but still holds the lock, because its release was missed, is released first;
    /// a lapsed lease is first checked against compute, so a holder still running keeps it.
    async fn create_locked(&self, e: &mut Execution, name: &str) -> Result<(), DomainError> {
        if let Some(cur) = self.store.get_lock(name).await?
            && cur.expires_at_ms < self.clock.now_ms()
        {
            self.processor.tend_lock(&cur).await?;
        }
        for _ in 0..4 {
            let now = self.clock.now_ms();
            let lock = Lock {
                name: name.to_owned(),
                execution_id: e.id.clone(),
                holder: e.created_by.clone(),
                acquired_at_ms: now,
                expires_at_ms: now + self.processor.lock_lease_ms(),
            };
            match self.store.create_execution_locked(e, &lock, now).await {
                Ok(LockedCreate::Created) => return Ok(()),
                Ok(LockedCreate::Held(holder)) => {
                    if self.processor.release_if_stale(&holder).await? {
                        continue;
                    }
                    return Err(DomainError::LockHeld {
                        message: format!(
                            "lock {name:?} is held by execution {} (started by {} at {}); \
                             nothing was started, try again once it has finished",
                            holder.execution_id,
                            holder.holder,
                            crate::clock::rfc3339(holder.acquired_at_ms)
                        ),
                        holder: Box::new(holder),
                    });
                }
                Err(StoreError::AlreadyExists(_)) => e.id = new_execution_id(),
                Err(err) => return Err(err.into()),
            }
        }
        Err(DomainError::Conflict(format!(
            "lock {name:?} kept changing hands; try again"
        )))
    }

    /// Refuses a new execution when the caller or the server already has as many unfinished
    /// (STARTING, RUNNING, TERMINATING) executions as allowed. The count comes from the store,
    /// so it covers executions started before a restart. The caller holds
    /// [`Service::admission`] from this check until the new execution is stored, so runs on one
    /// runvoyd cannot overshoot; several runvoyd instances on one store can, by at most the
    /// number of runs admitted concurrently on the other instances.
    async fn admit(&self, user: &str) -> Result<(), DomainError> {
        let (per_user, total) = (
            self.config.max_active_per_user,
            self.config.max_active_total,
        );
        if per_user == 0 && total == 0 {
            return Ok(());
        }
        let active: Vec<Execution> = self
            .store
            .list_unsettled()
            .await?
            .into_iter()
            .filter(|e| !e.status.is_terminal())
            .collect();
        let mine = active.iter().filter(|e| e.created_by == user).count() as u64;
        if per_user > 0 && mine >= per_user {
            return Err(DomainError::LimitReached(format!(
                "you already have {mine} unfinished executions (the limit per user is \
                 {per_user}); wait for one to finish or kill one, then try again"
            )));
        }
        let all = active.len() as u64;
        if total > 0 && all >= total {
            return Err(DomainError::LimitReached(format!(
                "the server already runs {all} executions (its limit is {total}); try again \
                 when one has finished"
            )));
        }
        Ok(())
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
            next.stopped_by = Some(caller.user.email.clone());
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
    use crate::clock::ManualClock;
    use crate::ports::{ComputeState, LogSource};
    use crate::testing::{FakeCompute, FakeLogSource, MemStore};
    use async_trait::async_trait;

    /// Starts the execution, then reports a failure (a start that timed out on its way back).
    struct StartsThenFails(Arc<FakeCompute>);

    #[async_trait]
    impl Compute for StartsThenFails {
        fn platform(&self) -> &str {
            "fake"
        }
        fn runs_images(&self) -> bool {
            self.0.runs_images()
        }
        async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
            self.0.set(&spec.execution_id, ComputeState::Running);
            Err(ComputeError::Unavailable("start timed out".into()))
        }
        async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
            self.0.state(id).await
        }
        async fn kill(&self, id: &str) -> Result<(), ComputeError> {
            self.0.kill(id).await
        }
        async fn list(&self) -> Result<Vec<String>, ComputeError> {
            self.0.list().await
        }
        async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
            self.0.cleanup(id).await
        }
    }

    fn service(compute: Arc<dyn Compute>, store: Arc<MemStore>) -> Service {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let hub = Arc::new(LogHub::new());
        let source: Arc<dyn LogSource> = Arc::new(FakeLogSource::new());
        let processor = Arc::new(Processor::new(
            store.clone(),
            compute.clone(),
            source,
            hub.clone(),
            clock.clone(),
            10,
        ));
        Service {
            store,
            compute,
            hub,
            clock,
            processor,
            config: ServiceConfig::new("local"),
            admission: Default::default(),
            secrets_grant: None,
        }
    }

    fn caller() -> Caller {
        Caller {
            user: crate::users::server_created_user(
                "a@b.c",
                Role::Admin,
                "h".into(),
                1_800_000_000_000,
            ),
            request_id: "req-00000001".into(),
        }
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn a_failed_start_that_did_start_is_killed_not_left_running() {
        let fake = Arc::new(FakeCompute::new());
        let store = Arc::new(MemStore::new());
        let svc = service(Arc::new(StartsThenFails(fake.clone())), store.clone());
        let req = RunRequest {
            command: "echo".into(),
            ..Default::default()
        };
        let err = svc.run(&caller(), req).await.expect_err("start failed");
        assert!(matches!(err, DomainError::Compute(_)), "{err:?}");
        wait_for(|| !fake.kills().is_empty()).await;
        let (rows, _) = store.list_executions(&ListQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, Status::Failed);
        assert!(
            !rows[0].logs_complete,
            "left to the reconciler while compute runs it"
        );
        assert_eq!(fake.kills(), vec![rows[0].id.clone()]);
    }

    #[tokio::test]
    async fn a_failed_start_is_settled_with_complete_logs() {
        let store = Arc::new(MemStore::new());
        struct Down;
        #[async_trait]
        impl Compute for Down {
            fn platform(&self) -> &str {
                "fake"
            }
            fn runs_images(&self) -> bool {
                true
            }
            async fn start(&self, _: &JobSpec) -> Result<(), ComputeError> {
                Err(ComputeError::Unavailable("down".into()))
            }
            async fn state(&self, _: &str) -> Result<ComputeState, ComputeError> {
                Ok(ComputeState::NotFound)
            }
            async fn kill(&self, _: &str) -> Result<(), ComputeError> {
                Ok(())
            }
            async fn list(&self) -> Result<Vec<String>, ComputeError> {
                Ok(vec![])
            }
            async fn cleanup(&self, _: &str) -> Result<bool, ComputeError> {
                Ok(false)
            }
        }
        let svc = service(Arc::new(Down), store.clone());
        let req = RunRequest {
            command: "echo".into(),
            ..Default::default()
        };
        svc.run(&caller(), req).await.expect_err("compute is down");
        let settled = || {
            let store = store.clone();
            async move {
                let (rows, _) = store.list_executions(&ListQuery::default()).await.unwrap();
                rows[0].is_settled()
            }
        };
        for _ in 0..2000 {
            if settled().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (rows, _) = store.list_executions(&ListQuery::default()).await.unwrap();
        let e = &rows[0];
        assert_eq!(
            (e.status, e.logs_complete, e.log_lines),
            (Status::Failed, true, Some(0))
        );
        assert!(
            e.failure_reason
                .as_deref()
                .unwrap()
                .contains("could not start")
        );
    }

    fn caller_named(email: &str) -> Caller {
        let mut c = caller();
        c.user.email = email.into();
        c
    }

    #[tokio::test]
    async fn runs_over_the_concurrency_limits_are_refused_and_create_nothing() {
        let store = Arc::new(MemStore::new());
        let mut svc = service(Arc::new(FakeCompute::new()), store.clone());
        svc.config.max_active_per_user = 2;
        svc.config.max_active_total = 3;
        let req = || RunRequest {
            command: "sleep 60".into(),
            ..Default::default()
        };
        let count = || {
            let store = store.clone();
            async move {
                store
                    .list_executions(&ListQuery {
                        limit: 100,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .0
            }
        };
        let a = caller_named("a@x.y");
        let first = svc.run(&a, req()).await.unwrap();
        svc.run(&a, req()).await.unwrap();
        let err = svc
            .run(&a, req())
            .await
            .expect_err("over the limit per user");
        assert!(
            matches!(&err, DomainError::LimitReached(m) if m.contains("limit per user is 2")),
            "{err:?}"
        );
        assert_eq!(count().await.len(), 2, "a refused run creates nothing");
        // Another user still may, until the server's limit.
        svc.run(&caller_named("b@x.y"), req()).await.unwrap();
        let err = svc
            .run(&caller_named("c@x.y"), req())
            .await
            .expect_err("over the total");
        assert!(
            matches!(&err, DomainError::LimitReached(m) if m.contains("limit is 3")),
            "{err:?}"
        );
        assert_eq!(count().await.len(), 3);
        // A finished execution (even with logs still incomplete) no longer counts.
        let mut done = store.get_execution(&first.id).await.unwrap().unwrap();
        done.status = Status::Failed;
        assert!(store.update_execution(&done).await.unwrap());
        svc.run(&a, req()).await.unwrap();
        assert_eq!(count().await.len(), 4);
        // 0 means no limit.
        svc.config.max_active_per_user = 0;
        svc.config.max_active_total = 0;
        for _ in 0..3 {
            svc.run(&a, req()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn concurrent_runs_cannot_overshoot_the_limit() {
        let store = Arc::new(MemStore::new());
        let mut svc = service(Arc::new(FakeCompute::new()), store.clone());
        svc.config.max_active_per_user = 3;
        let svc = Arc::new(svc);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    svc.run(
                        &caller(),
                        RunRequest {
                            command: "sleep 60".into(),
                            ..Default::default()
                        },
                    )
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(DomainError::LimitReached(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok, 3);
        let (rows, _) = store
            .list_executions(&ListQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
    }

    #[tokio::test]
    async fn secrets_travel_as_references_and_bad_ones_start_nothing() {
        struct Spy(std::sync::Mutex<Vec<JobSpec>>, bool);
        #[async_trait]
        impl Compute for Spy {
            fn platform(&self) -> &str {
                "fake"
            }
            fn runs_images(&self) -> bool {
                true
            }
            fn delivers_secrets(&self) -> bool {
                self.1
            }
            async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
                self.0.lock().unwrap().push(spec.clone());
                Ok(())
            }
            async fn state(&self, _: &str) -> Result<ComputeState, ComputeError> {
                Ok(ComputeState::Running)
            }
            async fn kill(&self, _: &str) -> Result<(), ComputeError> {
                Ok(())
            }
            async fn list(&self) -> Result<Vec<String>, ComputeError> {
                Ok(vec![])
            }
            async fn cleanup(&self, _: &str) -> Result<bool, ComputeError> {
                Ok(false)
            }
        }
        struct Grant;
        impl crate::secrets::SecretsGrant for Grant {
            fn grant(
                &self,
                id: &str,
                refs: &[crate::secrets::SecretRef],
            ) -> crate::secrets::SecretsFetch {
                crate::secrets::SecretsFetch {
                    url: format!("http://x/{id}"),
                    token: format!("token-for-{}", refs.len()),
                }
            }
        }
        let store = Arc::new(MemStore::new());
        store
            .create_secret(&crate::testing::secret("db", 1))
            .await
            .unwrap();
        let mut other = crate::testing::secret("other", 2);
        other.key_name = "OTHER".into();
        store.create_secret(&other).await.unwrap();
        let spy = Arc::new(Spy(Default::default(), true));
        let mut svc = service(spy.clone(), store.clone());
        svc.secrets_grant = Some(Arc::new(Grant));
        let run = |secrets: &[&str], env: &[(&str, &str)]| RunRequest {
            command: "true".into(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        svc.run(&caller(), run(&["db", "other", "db"], &[("X", "1")]))
            .await
            .unwrap();
        let spec = spy.0.lock().unwrap().pop().unwrap();
        let names: Vec<(&str, &str)> = spec
            .secrets
            .iter()
            .map(|r| (r.name.as_str(), r.key_name.as_str()))
            .collect();
        assert_eq!(names, [("db", "API_TOKEN"), ("other", "OTHER")]);
        assert_eq!(spec.env.len(), 1, "no value joins the environment");
        let fetch = spec.secrets_fetch.clone().unwrap();
        assert_eq!(fetch.token, "token-for-2");
        assert!(spec.runner_settings().contains(&(
            runvoy_proto::record::env::SECRET_KEYS,
            "API_TOKEN,OTHER".into()
        )));

        let count = |s: &Arc<MemStore>| {
            let s = s.clone();
            async move { s.list_unsettled().await.unwrap().len() }
        };
        let before = count(&store).await;
        assert!(matches!(
            svc.run(&caller(), run(&["missing"], &[])).await,
            Err(DomainError::SecretNotFound(_))
        ));
        assert!(matches!(
            svc.run(&caller(), run(&["db"], &[("API_TOKEN", "x")]))
                .await,
            Err(DomainError::Invalid(_))
        ));
        let mut twin = crate::testing::secret("twin", 3);
        twin.key_name = "OTHER".into();
        store.create_secret(&twin).await.unwrap();
        assert!(matches!(
            svc.run(&caller(), run(&["other", "twin"], &[])).await,
            Err(DomainError::Invalid(_))
        ));
        // Compute that cannot deliver them refuses before anything is stored.
        let blind = Arc::new(Spy(Default::default(), false));
        let mut svc2 = service(blind.clone(), store.clone());
        svc2.secrets_grant = Some(Arc::new(Grant));
        assert!(matches!(
            svc2.run(&caller(), run(&["db"], &[])).await,
            Err(DomainError::Invalid(_))
        ));
        assert_eq!(count(&store).await, before, "refused runs store nothing");
        assert!(blind.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_output_budget_travels_in_the_job_spec() {
        struct Spy(std::sync::Mutex<Vec<JobSpec>>);
        #[async_trait]
        impl Compute for Spy {
            fn platform(&self) -> &str {
                "fake"
            }
            fn runs_images(&self) -> bool {
                true
            }
            async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
                self.0.lock().unwrap().push(spec.clone());
                Ok(())
            }
            async fn state(&self, _: &str) -> Result<ComputeState, ComputeError> {
                Ok(ComputeState::Running)
            }
            async fn kill(&self, _: &str) -> Result<(), ComputeError> {
                Ok(())
            }
            async fn list(&self) -> Result<Vec<String>, ComputeError> {
                Ok(vec![])
            }
            async fn cleanup(&self, _: &str) -> Result<bool, ComputeError> {
                Ok(false)
            }
        }
        let spy = Arc::new(Spy(Default::default()));
        let mut svc = service(spy.clone(), Arc::new(MemStore::new()));
        svc.config.max_output_bytes = 1234;
        svc.config.max_output_lines = 56;
        svc.run(
            &caller(),
            RunRequest {
                command: "yes".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let specs = spy.0.lock().unwrap();
        assert_eq!(
            (specs[0].max_output_bytes, specs[0].max_output_lines),
            (1234, 56)
        );
    }

    /// A service on fake compute with a clock the test moves.
    fn locked_service() -> (
        Arc<Service>,
        Arc<FakeCompute>,
        Arc<MemStore>,
        Arc<ManualClock>,
    ) {
        let store = Arc::new(MemStore::new());
        let fake = Arc::new(FakeCompute::new());
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let hub = Arc::new(LogHub::new());
        let processor = Arc::new(Processor::new(
            store.clone(),
            fake.clone(),
            Arc::new(FakeLogSource::new()),
            hub.clone(),
            clock.clone(),
            10,
        ));
        let svc = Service {
            store: store.clone(),
            compute: fake.clone(),
            hub,
            clock: clock.clone(),
            processor,
            config: ServiceConfig::new("local"),
            admission: Default::default(),
            secrets_grant: None,
        };
        (Arc::new(svc), fake, store, clock)
    }

    fn locked_run(lock: &str) -> RunRequest {
        RunRequest {
            command: "deploy".into(),
            lock: Some(lock.into()),
            ..Default::default()
        }
    }

    fn exited(code: i32) -> ComputeState {
        ComputeState::Exited(crate::ports::ComputeExit {
            runner: Some(crate::testing::exit_info(code, 0)),
            process_exit_code: Some(code),
            failure: None,
        })
    }

    #[tokio::test]
    async fn a_held_lock_refuses_the_run_naming_the_holder_until_it_finishes() {
        let (svc, fake, store, _) = locked_service();
        let a = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        assert_eq!(a.lock.as_deref(), Some("deploy"));
        let err = svc
            .run(&caller_named("b@x.y"), locked_run("deploy"))
            .await
            .expect_err("held");
        let DomainError::LockHeld { message, holder } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(holder.execution_id, a.id);
        assert_eq!(holder.holder, "a@b.c");
        assert!(message.contains(&a.id), "{message}");
        let (rows, _) = store.list_executions(&ListQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 1, "a refused run creates nothing");
        // Another lock, and no lock at all, are not affected.
        svc.run(&caller(), locked_run("backup")).await.unwrap();
        svc.run(
            &caller(),
            RunRequest {
                command: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // The holder ends: finalising releases the lock, and the next run takes it.
        fake.set(&a.id, exited(3));
        svc.processor.reconcile(&a.id).await.unwrap();
        assert_eq!(svc.get(&a.id).await.unwrap().status, Status::Failed);
        assert_eq!(store.get_lock("deploy").await.unwrap(), None);
        let b = svc
            .run(&caller_named("b@x.y"), locked_run("deploy"))
            .await
            .unwrap();
        assert_eq!(
            store
                .get_lock("deploy")
                .await
                .unwrap()
                .unwrap()
                .execution_id,
            b.id
        );
    }

    #[tokio::test]
    async fn a_killed_holder_frees_the_lock() {
        let (svc, fake, store, _) = locked_service();
        let a = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        fake.set(&a.id, ComputeState::Running);
        assert_eq!(
            svc.kill(&caller(), &a.id).await.unwrap(),
            KillOutcome::Started
        );
        let mut x = crate::testing::exit_info(143, 0);
        x.killed = true;
        fake.set(
            &a.id,
            ComputeState::Exited(crate::ports::ComputeExit {
                runner: Some(x),
                process_exit_code: Some(143),
                failure: None,
            }),
        );
        svc.processor.reconcile(&a.id).await.unwrap();
        assert_eq!(svc.get(&a.id).await.unwrap().status, Status::Stopped);
        assert_eq!(store.get_lock("deploy").await.unwrap(), None);
        svc.run(&caller(), locked_run("deploy")).await.unwrap();
    }

    #[tokio::test]
    async fn a_missed_release_is_repaired_by_the_next_run_and_by_the_reconciler() {
        let (svc, _fake, store, _) = locked_service();
        let a = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        // The holder finished but its lock stayed (runvoyd died between the two writes).
        let mut done = store.get_execution(&a.id).await.unwrap().unwrap();
        done.status = Status::Succeeded;
        assert!(store.update_execution(&done).await.unwrap());
        assert!(store.get_lock("deploy").await.unwrap().is_some());
        let b = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        assert_eq!(
            store
                .get_lock("deploy")
                .await
                .unwrap()
                .unwrap()
                .execution_id,
            b.id
        );
        let mut done = store.get_execution(&b.id).await.unwrap().unwrap();
        done.status = Status::Failed;
        assert!(store.update_execution(&done).await.unwrap());
        let t = svc.processor.tend_locks().await.unwrap();
        assert_eq!(t.released.len(), 1, "{t:?}");
        assert_eq!(store.get_lock("deploy").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_heartbeat_keeps_a_running_holder_and_releases_a_vanished_one() {
        let (svc, fake, store, clock) = locked_service();
        let lease = svc.processor.lock_lease_ms();
        let a = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        fake.set(&a.id, ComputeState::Running);
        // Renewed while it runs: still held long after the first lease would have ended.
        for _ in 0..6 {
            clock.advance_ms(lease / 2);
            let t = svc.processor.tend_locks().await.unwrap();
            assert_eq!((t.renewed, t.released.len()), (1, 0), "{t:?}");
        }
        let err = svc
            .run(&caller(), locked_run("deploy"))
            .await
            .expect_err("held");
        assert!(matches!(err, DomainError::LockHeld { .. }), "{err:?}");
        // Compute loses it: the heartbeat reconciles it (FAILED) and frees the lock.
        fake.set(&a.id, ComputeState::NotFound);
        let t = svc.processor.tend_locks().await.unwrap();
        assert_eq!(t.released.len(), 1, "{t:?}");
        assert_eq!(svc.get(&a.id).await.unwrap().status, Status::Failed);
        assert_eq!(store.get_lock("deploy").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lease_nobody_renewed_lapses() {
        let (svc, fake, store, clock) = locked_service();
        let a = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        fake.set(&a.id, ComputeState::Running);
        // Compute cannot answer (so nothing renews), and the lease ends.
        clock.advance_ms(svc.processor.lock_lease_ms() + 1);
        fake.fail_state(1000);
        let b = svc.run(&caller(), locked_run("deploy")).await.unwrap();
        assert_eq!(
            store
                .get_lock("deploy")
                .await
                .unwrap()
                .unwrap()
                .execution_id,
            b.id
        );
        // But a lapsed lease whose holder compute still runs is renewed, not taken.
        fake.fail_state(0);
        fake.set(&b.id, ComputeState::Running);
        clock.advance_ms(svc.processor.lock_lease_ms() + 1);
        let err = svc
            .run(&caller(), locked_run("deploy"))
            .await
            .expect_err("held");
        assert!(matches!(err, DomainError::LockHeld { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn concurrent_runs_with_one_lock_start_exactly_one() {
        let (svc, _fake, store, _) = locked_service();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    svc.run(&caller_named(&format!("u{i}@x.y")), locked_run("deploy"))
                        .await
                })
            })
            .collect();
        let mut ok = Vec::new();
        let mut held = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(e) => ok.push(e.id),
                Err(DomainError::LockHeld { holder, .. }) => held.push(holder.execution_id),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok.len(), 1);
        assert!(held.iter().all(|h| *h == ok[0]), "{held:?}");
        let (rows, _) = store.list_executions(&ListQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn run_validation() {
        let ok = RunRequest {
            command: "echo".into(),
            ..Default::default()
        };
        assert!(validate_run(&ok).is_ok());
        let multi_line = RunRequest {
            command: "echo".into(),
            env: [(
                "KEY".to_string(),
                "-----BEGIN-----\nabc\n-----END-----\n".to_string(),
            )]
            .into(),
            lock: Some("deploy-prod.eu_1".into()),
            ..Default::default()
        };
        assert!(validate_run(&multi_line).is_ok());
        let argv = RunRequest {
            argv: Some(vec!["grep".into(), "a b".into(), "".into()]),
            stdin_b64: Some(runvoy_proto::b64_encode(b"\0\xff")),
            ..Default::default()
        };
        assert!(validate_run(&argv).is_ok());
        assert_eq!(
            command_of(&argv).unwrap(),
            (
                "grep 'a b' ''".to_string(),
                Some(vec!["grep".into(), "a b".into(), "".into()])
            )
        );
        assert_eq!(stdin_of(&argv).unwrap().unwrap(), b"\0\xff");
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
            RunRequest {
                command: "x".into(),
                env: [("K".to_string(), "a\0b".to_string())].into(),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                env: (0..=MAX_ENV_VARS)
                    .map(|i| (format!("V{i}"), String::new()))
                    .collect(),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                env: [("BIG".to_string(), "x".repeat(MAX_ENV_BYTES))].into(),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                lock: Some("-bad".into()),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                lock: Some("a/b".into()),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                lock: Some("x".repeat(65)),
                ..Default::default()
            },
            RunRequest {
                command: "x".into(),
                argv: Some(vec!["x".into()]),
                ..Default::default()
            },
            RunRequest {
                argv: Some(vec![]),
                ..Default::default()
            },
            RunRequest {
                argv: Some(vec!["".into(), "a".into()]),
                ..Default::default()
            },
            RunRequest {
                argv: Some(vec!["echo".into(), "a\0b".into()]),
                ..Default::default()
            },
            RunRequest {
                command: "cat".into(),
                stdin_b64: Some("not base64!".into()),
                ..Default::default()
            },
            RunRequest {
                command: "cat".into(),
                stdin_b64: Some(runvoy_proto::b64_encode(&vec![
                    0u8;
                    runvoy_proto::MAX_STDIN_BYTES
                        + 1
                ])),
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
