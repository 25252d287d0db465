//! [`CloudRunCompute`]: the Compute port on Cloud Run Jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::Method;
use runvoy_domain::ports::{Compute, ComputeError, ComputeExit, ComputeState};
use runvoy_domain::{JobSpec, MAX_TIMEOUT_SECS, valid_execution_id};
use runvoy_proto::record::env;
use serde_json::{Value, json};

use crate::api::{Api, ApiError, Execution, ExecutionList, JobList, Operation, Task, TaskList};
use crate::auth::TokenProvider;
use crate::config::CloudRunConfig;
use crate::names::{image_hash, job_name, valid_job_name};

/// Variable of the runner container that carries the runvoy execution id. Cloud Run gives a job
/// execution no labels of its own (they all come from the job's template) and `jobs.run`
/// overrides only containers' args and env, task count and timeout, so this is how an
/// execution is tied to its runvoy id.
pub const EXECUTION_ID_ENV: &str = env::EXECUTION_ID;

/// Label on jobs and (through the job's execution template) executions this adapter manages.
const MANAGED_LABEL: &str = "runvoy-managed";
/// Label naming the image (its hash: label values cannot hold an image reference).
const IMAGE_LABEL: &str = "runvoy-image";
const SIDECAR: &str = "sidecar";
const RUNNER: &str = "runner";
const WORKSPACE: &str = "/workspace";
const VOLUME: &str = "workspace";
/// Most bytes of one environment variable value Cloud Run accepts.
const MAX_ENV_VALUE: usize = 32 * 1024;
/// Longest task timeout Cloud Run accepts (168 h).
const MAX_TASK_TIMEOUT_SECS: u64 = 168 * 3600;

/// What shapes one Cloud Run job: the image, and a registered image's settings. Runs in one
/// image with different settings get different jobs (a per-run override cannot change the
/// resources or the identity of a job's containers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobImage {
    /// The reference to pull.
    pub image: String,
    /// CPU of the runner container, in thousandths of a core.
    pub cpu_millis: Option<u64>,
    /// Memory of the runner container, in MiB.
    pub memory_mb: Option<u64>,
    /// The job's default task timeout, in seconds.
    pub timeout_secs: Option<u64>,
    /// The job's service account (instead of the configured one).
    pub service_account: Option<String>,
}

impl JobImage {
    /// An image with the server's defaults.
    pub fn plain(image: &str) -> JobImage {
        JobImage {
            image: image.to_owned(),
            ..Default::default()
        }
    }

    /// A registered image.
    pub fn from_spec(s: &runvoy_domain::images::ImageSpec) -> JobImage {
        JobImage {
            image: s.image.clone(),
            cpu_millis: s.cpu_millis,
            memory_mb: s.memory_mb,
            timeout_secs: s.timeout_secs,
            service_account: s.service_account.clone(),
        }
    }

    /// What the job name is derived from: the reference alone when no setting is made (so a
    /// plain image keeps its job), else the reference with its settings.
    fn key(&self) -> String {
        if *self == JobImage::plain(&self.image) {
            return self.image.clone();
        }
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.image,
            opt(self.cpu_millis),
            opt(self.memory_mb),
            opt(self.timeout_secs),
            self.service_account.as_deref().unwrap_or("-")
        )
    }
}

/// A CPU limit as Cloud Run writes it: whole cores as a number, else millicores.
fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Per-execution start locks, so two concurrent starts of one id cannot both run the job.
type StartLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Cloud Run compute.
pub struct CloudRunCompute {
    cfg: CloudRunConfig,
    api: Api,
    /// image → job name, for jobs created or checked since this process started.
    jobs: tokio::sync::Mutex<HashMap<String, String>>,
    /// runvoy execution id → execution resource name. A cache: it is rebuilt from
    /// `executions.list` whenever an id is not in it.
    executions: Mutex<HashMap<String, String>>,
    starting: StartLocks,
}

fn unavailable(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Unavailable(e.to_string())
}

/// Turns an Admin API failure into a compute error that names the resource and says what to
/// look at.
fn compute_error(what: &str, e: ApiError) -> ComputeError {
    let ApiError::Status {
        resource,
        http,
        status,
        ..
    } = &e
    else {
        return unavailable(format!("Cloud Run unreachable while {what}: {e}"));
    };
    let msg = &status.message;
    match *http {
        403 => unavailable(format!(
            "Cloud Run denied permission while {what} on {resource}: {msg} \
             (PERMISSION_DENIED; check runvoy's service account roles)"
        )),
        401 => unavailable(format!(
            "Cloud Run rejected runvoy's credentials while {what} on {resource}: {msg}"
        )),
        429 => unavailable(format!(
            "Cloud Run quota exhausted while {what} on {resource}: {msg} \
             (RESOURCE_EXHAUSTED, still after retries)"
        )),
        404 => unavailable(format!(
            "{resource} not found on Cloud Run while {what}: {msg}"
        )),
        400 if status.status == "INVALID_ARGUMENT" || status.status.is_empty() => {
            ComputeError::Rejected(format!("Cloud Run refused {what} ({resource}): {msg}"))
        }
        _ => unavailable(format!(
            "Cloud Run failed while {what} on {resource}: HTTP {http} {}: {msg}",
            status.status
        )),
    }
}

/// The runvoy execution id an execution carries in its runner's environment.
fn runvoy_id(e: &Execution) -> Option<&str> {
    e.template
        .containers
        .iter()
        .find(|c| c.name == RUNNER)?
        .env
        .iter()
        .find(|v| v.name == EXECUTION_ID_ENV)
        .map(|v| v.value.as_str())
        .filter(|v| valid_execution_id(v))
}

fn condition<'a>(e: &'a Execution, kind: &str) -> Option<&'a crate::api::Condition> {
    e.conditions.iter().find(|c| c.kind == kind)
}

/// Whether an execution is over: its `Completed` condition succeeded or failed (and is not a
/// cancellation still in progress), or every task is accounted for after `completionTime`.
fn is_terminal(e: &Execution) -> bool {
    let by_condition = condition(e, "Completed").is_some_and(|c| {
        matches!(c.state.as_str(), "CONDITION_SUCCEEDED" | "CONDITION_FAILED")
            && c.execution_reason != "CANCELLING"
    });
    by_condition
        || (e.completion_time.is_some()
            && e.running_count == 0
            && e.succeeded_count + e.failed_count + e.cancelled_count > 0)
}

/// Maps an execution (and, once it is over, its only task) to [`ComputeState`]:
///
/// * not over: `Running` once the `Started` condition succeeded or a task runs, else `Pending`;
/// * over: `Exited`, with the task's `lastAttemptResult.exitCode` (absent in JSON when 0, so a
///   succeeded execution is 0), `128 + termSignal` when the system killed the container, and a
///   failure reason for a cancellation, a signal, a sidecar failure or a failure without exit
///   code. The runner's final record is not here: it is in Cloud Logging (the `LogSource`).
pub(crate) fn map_state(e: &Execution, task: Option<&Task>) -> ComputeState {
    if !is_terminal(e) {
        let started = condition(e, "Started").is_some_and(|c| c.state == "CONDITION_SUCCEEDED")
            || e.running_count > 0;
        return if started {
            ComputeState::Running
        } else {
            ComputeState::Pending
        };
    }
    let completed = condition(e, "Completed");
    let succeeded = completed.map_or(
        e.succeeded_count > 0 && e.failed_count == 0 && e.cancelled_count == 0,
        |c| c.state == "CONDITION_SUCCEEDED",
    );
    let attempt = task.and_then(|t| t.last_attempt_result.as_ref());
    if succeeded {
        return ComputeState::Exited(ComputeExit {
            runner: None,
            process_exit_code: Some(attempt.map_or(0, |a| a.exit_code)),
            failure: None,
        });
    }
    let cancelled =
        completed.is_some_and(|c| c.execution_reason == "CANCELLED") || e.cancelled_count > 0;
    let exit = attempt.map(|a| a.exit_code).filter(|c| *c != 0);
    let signal = attempt.map(|a| a.term_signal).filter(|s| *s != 0);
    let message = attempt
        .and_then(|a| a.status.as_ref())
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| task.and_then(|t| condition_message(&t.conditions)))
        .or_else(|| {
            completed
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty())
        });
    let sidecar = message
        .as_deref()
        .is_some_and(|m| m.contains(&format!("'{SIDECAR}'")) || m.contains("container sidecar"));
    let failure = if cancelled {
        Some(match &message {
            Some(m) => format!("cancelled on Cloud Run: {m}"),
            None => "cancelled on Cloud Run".to_owned(),
        })
    } else if sidecar {
        Some(format!(
            "sidecar failed: {}",
            message.clone().unwrap_or_default()
        ))
    } else if let Some(s) = signal {
        Some(format!("the task was terminated by signal {s}"))
    } else if exit.is_none() {
        Some(message.unwrap_or_else(|| "the task failed without an exit code".to_owned()))
    } else {
        None
    };
    ComputeState::Exited(ComputeExit {
        runner: None,
        process_exit_code: exit.or(signal.map(|s| 128 + s)),
        failure,
    })
}

fn condition_message(conds: &[crate::api::Condition]) -> Option<String> {
    conds
        .iter()
        .find(|c| c.kind == "Completed" || c.kind == "Ready")
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty())
}

impl CloudRunCompute {
    /// A Cloud Run compute; makes no call until used.
    pub fn new(
        cfg: CloudRunConfig,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<CloudRunCompute, ComputeError> {
        let api = Api::new(&cfg, tokens).map_err(unavailable)?;
        Ok(CloudRunCompute {
            cfg,
            api,
            jobs: Default::default(),
            executions: Default::default(),
            starting: Default::default(),
        })
    }

    fn job_path(&self, job: &str) -> String {
        format!("{}/jobs/{job}", self.cfg.parent())
    }

    fn labels(&self, image: &str) -> Value {
        json!({ MANAGED_LABEL: "true", IMAGE_LABEL: image_hash(image) })
    }

    /// The job resource for `image` with the server's defaults.
    pub fn job_body(&self, image: &str) -> Value {
        self.job_body_for(&JobImage::plain(image))
    }

    /// The job resource for an image and its settings (the writable fields this adapter sets).
    pub fn job_body_for(&self, ji: &JobImage) -> Value {
        let image = ji.image.as_str();
        let c = &self.cfg;
        let mount = json!([{ "name": VOLUME, "mountPath": WORKSPACE }]);
        let mut task = json!({
            "containers": [
                {
                    "name": SIDECAR,
                    "image": c.sidecar_image,
                    "args": [
                        "--workspace", WORKSPACE,
                        "--runner-binary", c.sidecar_runner_path,
                        "--serve-ready", format!("0.0.0.0:{}", c.sidecar_ready_port),
                    ],
                    "volumeMounts": mount,
                    // The runner starts only once this succeeds, i.e. once the workspace holds
                    // the runner binary (the sidecar listens only after preparing it).
                    "startupProbe": {
                        "tcpSocket": { "port": c.sidecar_ready_port },
                        "periodSeconds": 1,
                        "timeoutSeconds": 1,
                        "failureThreshold": 120
                    }
                },
                {
                    "name": RUNNER,
                    "image": image,
                    "command": [format!("{WORKSPACE}/.runvoy/runvoy-runner")],
                    "env": [{ "name": env::WORKDIR, "value": WORKSPACE }],
                    "dependsOn": [SIDECAR],
                    "volumeMounts": mount
                }
            ],
            "volumes": [{
                "name": VOLUME,
                "emptyDir": { "medium": "MEMORY", "sizeLimit": c.workspace_size }
            }],
            // Admin commands are not idempotent: never run one twice (the default is 3).
            "maxRetries": 0,
            "timeout": format!("{}s", ji.timeout_secs.map_or(c.default_task_timeout.as_secs(), |t| t + c.timeout_slack.as_secs()).min(MAX_TASK_TIMEOUT_SECS)),
        });
        let mut limits = serde_json::Map::new();
        if let Some(m) = ji.cpu_millis {
            limits.insert("cpu".into(), json!(cpu_quantity(m)));
        }
        if let Some(mb) = ji.memory_mb {
            limits.insert("memory".into(), json!(format!("{mb}Mi")));
        }
        if !limits.is_empty() {
            task["containers"][1]["resources"] = json!({ "limits": limits });
        }
        let account = ji.service_account.as_deref().unwrap_or(&c.service_account);
        if !account.is_empty() {
            task["serviceAccount"] = json!(account);
        }
        json!({
            "labels": self.labels(image),
            "template": {
                "labels": self.labels(image),
                "taskCount": 1,
                "parallelism": 1,
                "template": task
            }
        })
    }

    /// Makes sure the job for `image` exists with the current template: `jobs.get`, then
    /// `jobs.create` when missing or `jobs.patch` when it drifted, waiting for the operation.
    /// Returns the job name.
    pub async fn ensure_job(&self, image: &str) -> Result<String, ComputeError> {
        self.ensure_job_for(&JobImage::plain(image)).await
    }

    /// [`Self::ensure_job`] for an image with its settings.
    pub async fn ensure_job_for(&self, ji: &JobImage) -> Result<String, ComputeError> {
        let image = ji.image.as_str();
        let key = ji.key();
        let mut jobs = self.jobs.lock().await;
        if let Some(j) = jobs.get(&key) {
            return Ok(j.clone());
        }
        let name = job_name(&key);
        if !valid_job_name(&name) {
            return Err(ComputeError::Rejected(format!(
                "no valid Cloud Run job name for image {image:?}"
            )));
        }
        let path = self.job_path(&name);
        let want = self.job_body_for(ji);
        let what = format!("preparing the job for image {image}");
        match self.api.call(Method::GET, &path, None).await {
            Ok(have) => {
                if !contains(&have, &want) {
                    tracing::info!(job = %name, "Cloud Run job drifted from its template; patching");
                    let op = self
                        .api
                        .call(Method::PATCH, &path, Some(&want))
                        .await
                        .map_err(|e| compute_error(&what, e))?;
                    self.finish_operation(&what, op).await?;
                }
            }
            Err(e) if e.http() == Some(404) => {
                let op = match self
                    .api
                    .call(
                        Method::POST,
                        &format!("{}/jobs?jobId={name}", self.cfg.parent()),
                        Some(&want),
                    )
                    .await
                {
                    Ok(op) => Some(op),
                    // Another runvoyd created it meanwhile: fine, it has the same template.
                    Err(e) if e.http() == Some(409) => None,
                    Err(e) => return Err(compute_error(&what, e)),
                };
                if let Some(op) = op {
                    tracing::info!(job = %name, image, "creating Cloud Run job");
                    self.finish_operation(&what, op).await?;
                }
            }
            Err(e) => return Err(compute_error(&what, e)),
        }
        jobs.insert(key, name.clone());
        Ok(name)
    }

    async fn finish_operation(&self, what: &str, op: Value) -> Result<Operation, ComputeError> {
        let op: Operation =
            Api::decode("POST", "operation", op).map_err(|e| compute_error(what, e))?;
        let op = self
            .api
            .wait(op, self.cfg.operation_timeout)
            .await
            .map_err(|e| compute_error(what, e))?;
        if let Some(err) = &op.error {
            return Err(unavailable(format!(
                "Cloud Run operation {} failed while {what}: code {} {}",
                op.name, err.code, err.message
            )));
        }
        Ok(op)
    }

    /// Every job this adapter manages (by label), as resource names.
    async fn managed_jobs(&self) -> Result<Vec<String>, ComputeError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!("{}/jobs?pageSize=100", self.cfg.parent());
            if !token.is_empty() {
                path.push_str(&format!("&pageToken={}", query_escape(&token)));
            }
            let page: JobList = self
                .api
                .get(&path)
                .await
                .map_err(|e| compute_error("listing jobs", e))?;
            for j in page.jobs {
                if j["labels"][MANAGED_LABEL] == "true"
                    && let Some(n) = j["name"].as_str()
                {
                    out.push(n.to_owned());
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// The executions of one job (every page), remembering each one's runvoy id.
    async fn executions_of(&self, job_path: &str) -> Result<Vec<Execution>, ComputeError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!("{job_path}/executions?pageSize=100");
            if !token.is_empty() {
                path.push_str(&format!("&pageToken={}", query_escape(&token)));
            }
            let page: ExecutionList = match self.api.get(&path).await {
                Ok(p) => p,
                Err(e) if e.http() == Some(404) => return Ok(out),
                Err(e) => return Err(compute_error("listing executions", e)),
            };
            {
                let mut cache = self.executions.lock().expect("executions");
                for e in &page.executions {
                    if let Some(id) = runvoy_id(e) {
                        cache.insert(id.to_owned(), e.name.clone());
                    }
                }
            }
            out.extend(page.executions);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// The execution resource name of a runvoy id: from the cache, else by listing the
    /// executions of `job` (or of every managed job).
    async fn find(&self, id: &str, job: Option<&str>) -> Result<Option<String>, ComputeError> {
        if let Some(n) = self.executions.lock().expect("executions").get(id) {
            return Ok(Some(n.clone()));
        }
        let jobs = match job {
            Some(j) => vec![self.job_path(j)],
            None => self.managed_jobs().await?,
        };
        for j in jobs {
            for e in self.executions_of(&j).await? {
                if runvoy_id(&e) == Some(id) {
                    return Ok(Some(e.name));
                }
            }
        }
        Ok(None)
    }

    fn forget(&self, id: &str) {
        self.executions.lock().expect("executions").remove(id);
    }

    /// The `jobs.run` body: the run's settings as runner variables, then the run's own
    /// environment. Secret values never travel here: the sidecar fetches them itself.
    pub fn run_body(&self, spec: &JobSpec) -> Value {
        let vars = spec.runner_settings();
        // The user's variables come after runvoy's; their names never start with `RUNVOY_`
        // (the domain refuses those), so they cannot shadow the runner's settings.
        let env: Vec<Value> = vars
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .chain(spec.env.iter().map(|(n, v)| (n.clone(), v.clone())))
            .map(|(n, v)| json!({ "name": n, "value": v }))
            .collect();
        let mut overrides = vec![json!({ "name": RUNNER, "env": env })];
        if spec.git.is_some() {
            // The sidecar clones; a token for it is the run's own variable (the runner gets
            // the same one), never part of the URL.
            let token = spec
                .env
                .get_key_value(runvoy_proto::git::DEFAULT_TOKEN_VAR)
                .map(|(n, v)| (n.as_str(), v.clone()));
            let sidecar: Vec<Value> = spec
                .sidecar_settings()
                .into_iter()
                .chain(token)
                .map(|(n, v)| json!({ "name": n, "value": v }))
                .collect();
            overrides.push(json!({ "name": SIDECAR, "env": sidecar }));
        }
        json!({
            "overrides": {
                "containerOverrides": overrides,
                "taskCount": 1,
                "timeout": format!("{}s", self.task_timeout(spec)),
            }
        })
    }

    /// The platform's per-attempt timeout: the run's own plus grace and slack (the runner
    /// enforces the run's timeout and must have time to write its final record).
    fn task_timeout(&self, spec: &JobSpec) -> u64 {
        match spec.timeout_secs {
            Some(t) => {
                (t.min(MAX_TIMEOUT_SECS) + spec.kill_grace_secs + self.cfg.timeout_slack.as_secs())
                    .min(MAX_TASK_TIMEOUT_SECS)
            }
            None => self
                .cfg
                .default_task_timeout
                .as_secs()
                .min(MAX_TASK_TIMEOUT_SECS),
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        let reject = |m: String| Err(ComputeError::Rejected(m));
        if !valid_execution_id(&spec.execution_id) {
            return reject(format!("invalid execution id {:?}", spec.execution_id));
        }
        if spec.image.trim().is_empty() {
            return reject("a run on Cloud Run compute needs an image".into());
        }
        if let Some(name) = spec.env.keys().find(|n| n.starts_with("RUNVOY_")) {
            return reject(format!("{name} is reserved for runvoy's own settings"));
        }
        if spec.stdin.is_some() {
            return reject(
                "standard input cannot be passed to a run on Cloud Run compute yet".into(),
            );
        }
        // What a run inherits from its registered image is in the image's job already.
        let inherited = runvoy_domain::Resources {
            cpu_millis: spec.image_settings.as_ref().and_then(|i| i.cpu_millis),
            memory_mb: spec.image_settings.as_ref().and_then(|i| i.memory_mb),
            ..Default::default()
        };
        if spec.resources != Default::default() && spec.resources != inherited {
            return reject(
                "per-run resource limits are not supported on Cloud Run compute (the job's \
                 limits apply)"
                    .into(),
            );
        }
        let body = self.run_body(spec);
        for v in body["overrides"]["containerOverrides"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let len = v["value"].as_str().map_or(0, str::len);
            if len > MAX_ENV_VALUE {
                return reject(format!(
                    "{} is {len} bytes; Cloud Run accepts at most {MAX_ENV_VALUE} per variable",
                    v["name"].as_str().unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// Reads the execution name out of a `jobs.run` operation: its metadata (an Execution) has
    /// it at once; otherwise polls the operation until it does. Never waits for the operation
    /// to finish — it finishes when the execution does.
    async fn execution_name(&self, op: Value) -> Result<String, ComputeError> {
        let what = "starting a job execution";
        let mut op: Operation =
            Api::decode("POST", "jobs.run", op).map_err(|e| compute_error(what, e))?;
        let until = std::time::Instant::now() + self.cfg.operation_timeout;
        loop {
            let from = |v: &Option<Value>| {
                v.as_ref()
                    .and_then(|m| m["name"].as_str())
                    .filter(|n| n.contains("/executions/"))
                    .map(str::to_owned)
            };
            if let Some(n) = from(&op.metadata).or_else(|| from(&op.response)) {
                return Ok(n);
            }
            if let Some(err) = &op.error {
                return Err(unavailable(format!(
                    "Cloud Run could not start the execution (operation {}): code {} {}",
                    op.name, err.code, err.message
                )));
            }
            if op.done || std::time::Instant::now() >= until {
                return Err(unavailable(format!(
                    "Cloud Run operation {} names no execution",
                    op.name
                )));
            }
            tokio::time::sleep(self.cfg.operation_poll).await;
            op = self
                .api
                .operation(&op.name)
                .await
                .map_err(|e| compute_error(what, e))?;
        }
    }

    fn start_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.starting
            .lock()
            .expect("starting")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    fn release_start_lock(&self, id: &str) {
        let mut m = self.starting.lock().expect("starting");
        if m.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            m.remove(id);
        }
    }

    async fn run(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        let ji = spec
            .image_settings
            .as_ref()
            .map_or_else(|| JobImage::plain(&spec.image), JobImage::from_spec);
        let mut job = self.ensure_job_for(&ji).await?;
        if self.find(&spec.execution_id, Some(&job)).await?.is_some() {
            return Ok(()); // already started: start is idempotent
        }
        let body = self.run_body(spec);
        let mut delays = backon::BackoffBuilder::build(self.api.backoff());
        let mut job_recreated = false;
        loop {
            let path = format!("{}:run", self.job_path(&job));
            match self.api.call_once(Method::POST, &path, Some(&body)).await {
                Ok(op) => {
                    let name = self.execution_name(op).await?;
                    tracing::info!(execution = %spec.execution_id, cloud_run = %name, "started");
                    self.executions
                        .lock()
                        .expect("executions")
                        .insert(spec.execution_id.clone(), name);
                    return Ok(());
                }
                Err(e) if e.http() == Some(404) && !job_recreated => {
                    // The job was deleted behind runvoy's back: create it again, once.
                    job_recreated = true;
                    self.jobs.lock().await.remove(&ji.key());
                    job = self.ensure_job_for(&ji).await?;
                }
                Err(e) if e.retryable() => match delays.next() {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        // The failed call may still have started it: look before running again.
                        if self.find(&spec.execution_id, Some(&job)).await?.is_some() {
                            return Ok(());
                        }
                    }
                    None => return Err(compute_error("starting a job execution", e)),
                },
                Err(e) => return Err(compute_error("starting a job execution", e)),
            }
        }
    }
}

/// Percent-encodes a query value (page tokens are opaque and may hold `+`, `/` or `=`).
fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether every field of `want` is in `have` with the same value (objects: recursively; arrays:
/// same length, element by element). Fields the server adds (defaults, output-only) are ignored.
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        _ => have == want,
    }
}

#[async_trait]
impl Compute for CloudRunCompute {
    fn platform(&self) -> &str {
        "gcp"
    }

    /// Each run executes in the image it names (one job per image).
    fn runs_images(&self) -> bool {
        true
    }

    /// Registering an image creates its job (or repairs it when it drifted), so the first run
    /// in it does not wait for a job to be created.
    async fn prepare_image(
        &self,
        image: &runvoy_domain::images::ImageSpec,
    ) -> Result<(), ComputeError> {
        if image.image.trim().is_empty() {
            return Err(ComputeError::Rejected(
                "an image reference is required".into(),
            ));
        }
        self.ensure_job_for(&JobImage::from_spec(image))
            .await
            .map(|_| ())
    }

    async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        self.validate(spec)?;
        let lock = self.start_lock(&spec.execution_id);
        let res = {
            let _held = lock.lock().await;
            self.run(spec).await
        };
        drop(lock);
        self.release_start_lock(&spec.execution_id);
        res
    }

    async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
        if !valid_execution_id(id) {
            return Err(ComputeError::Rejected(format!(
                "invalid execution id {id:?}"
            )));
        }
        let Some(name) = self.find(id, None).await? else {
            return Ok(ComputeState::NotFound);
        };
        let exec: Execution = match self.api.get(&name).await {
            Ok(e) => e,
            Err(e) if e.http() == Some(404) => {
                self.forget(id);
                return Ok(ComputeState::NotFound);
            }
            Err(e) => return Err(compute_error("reading an execution", e)),
        };
        let task = if is_terminal(&exec) {
            let tasks: TaskList = self
                .api
                .get(&format!("{name}/tasks"))
                .await
                .map_err(|e| compute_error("reading an execution's task", e))?;
            tasks.tasks.into_iter().min_by_key(|t| t.index)
        } else {
            None
        };
        Ok(map_state(&exec, task.as_ref()))
    }

    async fn kill(&self, id: &str) -> Result<(), ComputeError> {
        let Some(name) = self.find(id, None).await? else {
            return Ok(());
        };
        match self
            .api
            .call(Method::POST, &format!("{name}:cancel"), Some(&json!({})))
            .await
        {
            Ok(_) => Ok(()),
            // Already finished (or gone): nothing left to stop.
            Err(e) if e.status_name() == "FAILED_PRECONDITION" || e.http() == Some(404) => Ok(()),
            Err(e) => Err(compute_error("cancelling an execution", e)),
        }
    }

    async fn list(&self) -> Result<Vec<String>, ComputeError> {
        let mut ids = Vec::new();
        for job in self.managed_jobs().await? {
            for e in self.executions_of(&job).await? {
                if e.labels.get(MANAGED_LABEL).is_some_and(|v| v == "true")
                    && let Some(id) = runvoy_id(&e)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        Ok(ids)
    }

    async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
        let Some(name) = self.find(id, None).await? else {
            return Ok(false);
        };
        let exec: Execution = match self.api.get(&name).await {
            Ok(e) => e,
            Err(e) if e.http() == Some(404) => {
                self.forget(id);
                return Ok(false);
            }
            Err(e) => return Err(compute_error("reading an execution", e)),
        };
        if !is_terminal(&exec) {
            return Ok(false); // never remove one that may still run
        }
        let what = "deleting a finished execution";
        match self.api.call(Method::DELETE, &name, None).await {
            Ok(op) => {
                self.finish_operation(what, op).await?;
                self.forget(id);
                Ok(true)
            }
            Err(e) if e.http() == Some(404) => {
                self.forget(id);
                Ok(false)
            }
            Err(e) => Err(compute_error(what, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, TaskAttemptResult};

    fn exec(v: Value) -> Execution {
        serde_json::from_value(v).expect("execution")
    }

    #[test]
    fn pending_running_and_counts_omitted_when_zero() {
        let e = exec(json!({"name": "x", "conditions": [
            {"type": "ResourcesAvailable", "state": "CONDITION_PENDING"},
            {"type": "Completed", "state": "CONDITION_PENDING"}]}));
        assert_eq!(map_state(&e, None), ComputeState::Pending);
        let e = exec(json!({"name": "x", "runningCount": 1, "conditions": [
            {"type": "Started", "state": "CONDITION_SUCCEEDED"},
            {"type": "Completed", "state": "CONDITION_PENDING"}]}));
        assert_eq!(map_state(&e, None), ComputeState::Running);
        // A cancellation in progress is not over.
        let e = exec(json!({"name": "x", "runningCount": 1, "conditions": [
            {"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "CANCELLING"}]}));
        assert_eq!(map_state(&e, None), ComputeState::Running);
    }

    #[test]
    fn exits_map_code_signal_and_reasons() {
        let ok = exec(
            json!({"name": "x", "succeededCount": 1, "completionTime": "t",
            "conditions": [{"type": "Completed", "state": "CONDITION_SUCCEEDED"}]}),
        );
        let task = |r: Option<TaskAttemptResult>| Task {
            last_attempt_result: r,
            ..Default::default()
        };
        let exited = |s| match s {
            ComputeState::Exited(x) => x,
            other => panic!("{other:?}"),
        };
        let x = exited(map_state(&ok, Some(&task(Some(Default::default())))));
        assert_eq!((x.process_exit_code, x.failure), (Some(0), None));

        let failed = exec(json!({"name": "x", "failedCount": 1, "completionTime": "t",
            "conditions": [{"type": "Completed", "state": "CONDITION_FAILED",
                "executionReason": "NON_ZERO_EXIT_CODE", "message": "Task x-task0 failed"}]}));
        let r = |code, sig, msg: &str| TaskAttemptResult {
            status: Some(crate::api::GoogleStatus {
                code: 10,
                message: msg.into(),
                ..Default::default()
            }),
            exit_code: code,
            term_signal: sig,
        };
        let x = exited(map_state(&failed, Some(&task(Some(r(3, 0, "exited"))))));
        assert_eq!((x.process_exit_code, x.failure), (Some(3), None));
        let x = exited(map_state(&failed, Some(&task(Some(r(0, 9, "killed"))))));
        assert_eq!(x.process_exit_code, Some(137));
        assert!(x.failure.unwrap().contains("signal 9"));
        let x = exited(map_state(
            &failed,
            Some(&task(Some(r(
                1,
                0,
                "Container 'sidecar' exited with an error.",
            )))),
        ));
        assert!(x.failure.unwrap().starts_with("sidecar failed"));
        let x = exited(map_state(
            &failed,
            Some(&task(Some(r(
                0,
                0,
                "The configured memory limit was reached.",
            )))),
        ));
        assert_eq!(x.process_exit_code, None);
        assert!(x.failure.unwrap().contains("memory limit"));

        let cancelled = exec(
            json!({"name": "x", "cancelledCount": 1, "completionTime": "t",
            "conditions": [{"type": "Completed", "state": "CONDITION_FAILED",
                "executionReason": "CANCELLED"}]}),
        );
        let x = exited(map_state(&cancelled, Some(&task(None))));
        assert!(x.failure.unwrap().starts_with("cancelled on Cloud Run"));
        assert_eq!(x.process_exit_code, None);
        let _ = Condition::default();
    }

    #[test]
    fn page_tokens_are_escaped() {
        assert_eq!(query_escape("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(query_escape("Zz09-_.~"), "Zz09-_.~");
    }

    #[test]
    fn subset_comparison() {
        let have = json!({"a": {"b": 1, "x": 2}, "l": [{"n": 1, "d": 0}], "s": "v"});
        assert!(contains(&have, &json!({"a": {"b": 1}, "l": [{"n": 1}]})));
        assert!(!contains(&have, &json!({"a": {"b": 2}})));
        assert!(!contains(&have, &json!({"l": [{"n": 1}, {"n": 2}]})));
        assert!(!contains(&have, &json!({"missing": 1})));
    }
}
