//! A fake of the Cloud Run Admin API v2 endpoints runvoy uses, on port 0.
//!
//! It follows the REST reference (cloud.google.com/run/docs/reference/rest/v2): resource names
//! `projects/{p}/locations/{l}/jobs/{j}[/executions/{e}[/tasks/{t}]]` and
//! `.../operations/{o}`; `google.longrunning.Operation` with `name`, `metadata` (the resource,
//! with `@type`), `done` and `response` or `error`; Execution and Task shapes with their
//! conditions (`ResourcesAvailable`, `Started`, `Completed`), counts omitted when 0, and
//! `lastAttemptResult`; Google's error body `{"error": {"code", "message", "status"}}`.
//!
//! What the reference does not say, the fake chooses and the docs call out: a create/patch
//! operation is done after one `operations.get`; the `jobs.run` operation is done when the
//! execution ends (error code 10 when it failed); `executions.cancel` goes through a
//! `CANCELLING` state for one read; a cancelled running task reports `termSignal` 15; a sidecar
//! failure says `Container 'sidecar' exited with an error.`; deleting an execution that still
//! runs is refused with FAILED_PRECONDITION.
//!
//! Request bodies are checked as the real API checks them: an unknown field, a wrong type or an
//! unknown enum value gets Google's `INVALID_ARGUMENT` answer (see [`crate::schema`]).
//!
//! Who plays the platform: a test ([`FakeCloudRun::set_running`], [`FakeCloudRun::finish`]),
//! or a [`Platform`] given to [`FakeCloudRun::start_with`], which is told of every run and
//! cancellation and reports back through the same methods (`runvoy-fake-gcp` runs the
//! containers for real).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelling,
    Cancelled,
}

impl Phase {
    fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

#[derive(Debug, Clone)]
struct Exec {
    name: String,
    job: String,
    uid: String,
    labels: Value,
    template: Value,
    phase: Phase,
    was_running: bool,
    exit_code: i32,
    sidecar_failed: bool,
    created: i64,
    started: Option<i64>,
    completed: Option<i64>,
}

#[derive(Debug, Clone)]
enum OpKind {
    /// Job create/patch: done after `polls_left` reads.
    Job { job: String, polls_left: u32 },
    /// `jobs.run`: done when the execution ends.
    Run { exec: String },
    /// `executions.cancel` / `executions.delete`: the execution as it was answered.
    Snapshot { exec: Value, done: bool },
}

/// An injected failure: the next matching request gets this answer.
#[derive(Debug, Clone)]
struct Inject {
    method: String,
    suffix: String,
    http: u16,
    status: String,
    /// Carry out the request anyway (the answer is lost, not the effect).
    apply: bool,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, Value>,
    execs: BTreeMap<String, Exec>,
    ops: BTreeMap<String, OpKind>,
    requests: Vec<Recorded>,
    injects: Vec<Inject>,
    seq: u64,
    page_cap: usize,
    platform: Option<tokio::sync::mpsc::UnboundedSender<PlatformEvent>>,
}

type Shared = Arc<Mutex<Inner>>;

/// What the fake tells whoever plays the platform.
#[derive(Debug, Clone)]
pub enum PlatformEvent {
    /// `jobs.run` created this execution (full resource name) with this task template,
    /// overrides applied.
    Run {
        /// `projects/P/locations/L/jobs/J/executions/E`.
        execution: String,
        /// The task template (`containers`, `volumes`, `timeout`, ...).
        template: Value,
    },
    /// `executions.cancel` of a running execution: stop its task, then report
    /// [`FakeCloudRun::cancelled`].
    Cancel {
        /// Full resource name.
        execution: String,
    },
}

/// The running fake.
#[derive(Clone)]
pub struct FakeCloudRun {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    inner: Shared,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ts(ms: i64) -> String {
    runvoy_domain::clock::rfc3339(ms)
}

/// Google's error answer.
fn error(http: u16, status: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"error": {"code": http, "message": message, "status": status}})),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn query_param<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl FakeCloudRun {
    /// Starts the fake on a free loopback port; the caller plays the platform. Pages are
    /// small (2 items), so clients must follow `nextPageToken`.
    pub async fn start() -> FakeCloudRun {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, 2, None, axum::Router::new())
    }

    /// Serves the fake on `listener`, telling `platform` of runs and cancellations, with
    /// `extra` routes (another fake API) on the same port.
    pub fn start_with(
        listener: tokio::net::TcpListener,
        platform: tokio::sync::mpsc::UnboundedSender<PlatformEvent>,
        extra: axum::Router,
    ) -> FakeCloudRun {
        Self::serve(listener, 100, Some(platform), extra)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        page_cap: usize,
        platform: Option<tokio::sync::mpsc::UnboundedSender<PlatformEvent>>,
        extra: axum::Router,
    ) -> FakeCloudRun {
        let inner: Shared = Arc::new(Mutex::new(Inner {
            page_cap,
            platform,
            ..Default::default()
        }));
        let app = extra.merge(
            axum::Router::new()
                .fallback(handle)
                .with_state(inner.clone()),
        );
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        FakeCloudRun {
            url,
            inner,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("fake"))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|i| i.requests.clone())
    }

    /// The stored job resource.
    pub fn job(&self, name: &str) -> Option<Value> {
        self.with(|i| i.jobs.get(name).cloned())
    }

    /// Changes a stored job behind the adapter's back.
    pub fn edit_job(&self, name: &str, f: impl FnOnce(&mut Value)) {
        self.with(|i| f(i.jobs.get_mut(name).expect("job")));
    }

    /// Deletes a stored job behind the adapter's back.
    pub fn delete_job(&self, name: &str) {
        self.with(|i| i.jobs.remove(name));
    }

    /// Number of executions.
    pub fn execution_count(&self) -> usize {
        self.with(|i| i.execs.len())
    }

    /// The execution whose runner carries this runvoy id.
    pub fn execution_of(&self, runvoy_id: &str) -> Option<String> {
        self.with(|i| {
            i.execs
                .values()
                .find(|e| runner_env(&e.template, "RUNVOY_EXECUTION_ID") == Some(runvoy_id))
                .map(|e| e.name.clone())
        })
    }

    /// The task template of an execution, overrides applied.
    pub fn execution_template(&self, name: &str) -> Value {
        self.with(|i| i.execs[name].template.clone())
    }

    /// The task starts: sidecar ready, runner running.
    pub fn set_running(&self, name: &str) {
        self.with(|i| {
            let e = i.execs.get_mut(name).expect("execution");
            if e.phase == Phase::Pending {
                e.phase = Phase::Running;
                e.was_running = true;
                e.started = Some(now_ms());
            }
        });
    }

    /// The runner container exits with `code` and the task ends.
    pub fn finish(&self, name: &str, code: i32) {
        self.set_running(name);
        self.with(|i| {
            let e = i.execs.get_mut(name).expect("execution");
            e.exit_code = code;
            e.phase = if code == 0 {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            e.completed = Some(now_ms());
        });
    }

    /// A cancelled execution's task has stopped (a [`Platform`](PlatformEvent::Cancel) reports
    /// it).
    pub fn cancelled(&self, name: &str) {
        self.with(|i| {
            if let Some(e) = i.execs.get_mut(name)
                && !e.phase.terminal()
            {
                e.phase = Phase::Cancelled;
                e.completed = Some(now_ms());
            }
        });
    }

    /// Whether an execution is over.
    pub fn is_finished(&self, name: &str) -> bool {
        self.with(|i| i.execs.get(name).is_none_or(|e| e.phase.terminal()))
    }

    /// The sidecar container exits with 1 before the runner starts.
    pub fn fail_sidecar(&self, name: &str) {
        self.with(|i| {
            let e = i.execs.get_mut(name).expect("execution");
            e.sidecar_failed = true;
            e.exit_code = 1;
            e.phase = Phase::Failed;
            e.started = Some(now_ms());
            e.completed = Some(now_ms());
        });
    }

    /// The next request of `method` whose path ends with `suffix` is answered `http`/`status`;
    /// with `apply` it is carried out all the same (its answer is what gets lost).
    pub fn inject(&self, method: &str, suffix: &str, http: u16, status: &str, apply: bool) {
        self.with(|i| {
            i.injects.push(Inject {
                method: method.into(),
                suffix: suffix.into(),
                http,
                status: status.into(),
                apply,
            })
        });
    }
}

/// The value of variable `name` of the `runner` container of a task template.
pub fn runner_env<'a>(template: &'a Value, name: &str) -> Option<&'a str> {
    template["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "runner")?["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?["value"]
        .as_str()
}

/// The last segment of a resource name.
pub fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn cond(kind: &str, state: &str) -> Value {
    json!({"type": kind, "state": state, "lastTransitionTime": ts(now_ms())})
}

fn task_name(e: &Exec) -> String {
    format!("{}/tasks/{}-task0", e.name, short(&e.name))
}

impl Exec {
    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "uid": self.uid,
            "generation": "1",
            "labels": self.labels,
            "createTime": ts(self.created),
            "updateTime": ts(self.completed.or(self.started).unwrap_or(self.created)),
            "launchStage": "GA",
            "job": self.job,
            "parallelism": 1,
            "taskCount": 1,
            "template": self.template,
            "logUri": "https://console.cloud.google.com/logs/viewer",
            "etag": format!("\"{}\"", self.uid),
        });
        let (conds, counts): (Vec<Value>, Vec<(&str, i64)>) = match self.phase {
            Phase::Pending => (
                vec![
                    cond("ResourcesAvailable", "CONDITION_PENDING"),
                    cond("Started", "CONDITION_PENDING"),
                    cond("Completed", "CONDITION_PENDING"),
                ],
                vec![],
            ),
            Phase::Running => (
                vec![
                    cond("ResourcesAvailable", "CONDITION_SUCCEEDED"),
                    cond("Started", "CONDITION_SUCCEEDED"),
                    cond("Completed", "CONDITION_PENDING"),
                ],
                vec![("runningCount", 1)],
            ),
            Phase::Succeeded => (
                vec![
                    cond("ResourcesAvailable", "CONDITION_SUCCEEDED"),
                    cond("Started", "CONDITION_SUCCEEDED"),
                    cond("Completed", "CONDITION_SUCCEEDED"),
                ],
                vec![("succeededCount", 1)],
            ),
            Phase::Failed => {
                let mut c = cond("Completed", "CONDITION_FAILED");
                c["executionReason"] = json!("NON_ZERO_EXIT_CODE");
                c["message"] = json!(format!(
                    "Task {}-task0 failed with message: The container exited with an error.",
                    short(&self.name)
                ));
                (
                    vec![
                        cond("ResourcesAvailable", "CONDITION_SUCCEEDED"),
                        cond("Started", "CONDITION_SUCCEEDED"),
                        c,
                    ],
                    vec![("failedCount", 1)],
                )
            }
            Phase::Cancelling => {
                let mut c = cond("Completed", "CONDITION_FAILED");
                c["executionReason"] = json!("CANCELLING");
                (
                    vec![cond("Started", "CONDITION_SUCCEEDED"), c],
                    vec![("runningCount", 1)],
                )
            }
            Phase::Cancelled => {
                let mut c = cond("Completed", "CONDITION_FAILED");
                c["executionReason"] = json!("CANCELLED");
                c["message"] = json!("The execution was cancelled.");
                (vec![c], vec![("cancelledCount", 1)])
            }
        };
        v["conditions"] = json!(conds);
        for (k, n) in counts {
            v[k] = json!(n);
        }
        if !self.phase.terminal() {
            v["reconciling"] = json!(true);
        }
        if let Some(s) = self.started {
            v["startTime"] = json!(ts(s));
        }
        if let Some(c) = self.completed {
            v["completionTime"] = json!(ts(c));
        }
        v
    }

    fn task_json(&self) -> Value {
        let t = &self.template;
        let mut v = json!({
            "name": task_name(self),
            "uid": format!("{}-t0", self.uid),
            "job": self.job,
            "execution": short(&self.name),
            "containers": t["containers"],
            "volumes": t["volumes"],
            "maxRetries": t["maxRetries"],
            "timeout": t["timeout"],
            "createTime": ts(self.created),
        });
        let completed = match self.phase {
            Phase::Succeeded => "CONDITION_SUCCEEDED",
            p if p.terminal() => "CONDITION_FAILED",
            _ => "CONDITION_PENDING",
        };
        v["conditions"] = json!([cond("Completed", completed)]);
        let result = match self.phase {
            // exitCode 0 and status.code 0 are default values: omitted.
            Phase::Succeeded => Some(json!({"status": {}})),
            Phase::Failed if self.sidecar_failed => Some(json!({
                "status": {"code": 10, "message": "Container 'sidecar' exited with an error."},
                "exitCode": 1
            })),
            Phase::Failed => Some(json!({
                "status": {"code": 10, "message": "The container exited with an error."},
                "exitCode": self.exit_code
            })),
            Phase::Cancelled if self.was_running => Some(json!({
                "status": {"code": 1, "message": "The task was cancelled."},
                "termSignal": 15
            })),
            _ => None,
        };
        if let Some(r) = result {
            v["lastAttemptResult"] = r;
        }
        if let Some(c) = self.completed {
            v["completionTime"] = json!(ts(c));
        }
        v
    }
}

fn with_type(mut v: Value, kind: &str) -> Value {
    v["@type"] = json!(format!("type.googleapis.com/google.cloud.run.v2.{kind}"));
    v
}

fn new_op(i: &mut Inner, parent: &str, kind: OpKind) -> String {
    i.seq += 1;
    let name = format!("{parent}/operations/op-{:08}", i.seq);
    i.ops.insert(name.clone(), kind);
    name
}

fn op_json(i: &mut Inner, name: &str, read: bool) -> Option<Value> {
    let kind = i.ops.get_mut(name)?.clone();
    Some(match kind {
        OpKind::Job { job, polls_left } => {
            let j = i.jobs.get(&job).cloned().unwrap_or(Value::Null);
            let done = polls_left == 0;
            if read && polls_left > 0 {
                i.ops.insert(
                    name.to_owned(),
                    OpKind::Job {
                        job,
                        polls_left: polls_left - 1,
                    },
                );
            }
            let mut v =
                json!({"name": name, "metadata": with_type(j.clone(), "Job"), "done": done});
            if done {
                v["response"] = with_type(j, "Job");
            }
            v
        }
        OpKind::Run { exec } => {
            let e = i.execs.get(&exec)?;
            let ej = with_type(e.json(), "Execution");
            let mut v = json!({"name": name, "metadata": ej, "done": e.phase.terminal()});
            match e.phase {
                Phase::Succeeded => v["response"] = ej,
                p if p.terminal() => {
                    v["error"] =
                        json!({"code": 10, "message": "The container exited with an error."})
                }
                _ => {}
            }
            v
        }
        OpKind::Snapshot { exec, done } => {
            let mut v = json!({"name": name, "metadata": with_type(exec.clone(), "Execution"), "done": done});
            if done {
                v["response"] = with_type(exec, "Execution");
            }
            v
        }
    })
}

/// Applies server defaults and output-only fields to a job as written by a client.
fn store_job(i: &mut Inner, name: &str, body: &Value, generation: u64) -> Value {
    i.seq += 1;
    let mut j = json!({
        "name": name,
        "uid": format!("uid-{:08}", i.seq),
        "generation": generation.to_string(),
        "labels": body["labels"],
        "createTime": ts(now_ms()),
        "updateTime": ts(now_ms()),
        "launchStage": "GA",
        "template": body["template"],
        "etag": format!("\"e{}\"", i.seq),
    });
    // Defaults the server fills in: the client's drift check must not count them as drift.
    let t = &mut j["template"]["template"];
    if t.get("executionEnvironment").is_none() {
        t["executionEnvironment"] = json!("EXECUTION_ENVIRONMENT_GEN2");
    }
    if let Some(cs) = t["containers"].as_array_mut() {
        for c in cs {
            if c.get("resources").is_none() {
                c["resources"] = json!({"limits": {"cpu": "1000m", "memory": "512Mi"}});
            }
        }
    }
    i.jobs.insert(name.to_owned(), j.clone());
    j
}

fn check_job(body: &Value) -> Result<(), String> {
    crate::schema::check_job(body)?;
    let cs = body["template"]["template"]["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or("template.template.containers: at least one container is required")?;
    for c in cs {
        if c["image"].as_str().is_none_or(str::is_empty) {
            return Err("containers[].image is required".into());
        }
    }
    for labels in [&body["labels"], &body["template"]["labels"]] {
        if let Some(m) = labels.as_object() {
            for k in m.keys() {
                if k.starts_with("run.googleapis.com") || k.starts_with("cloud.googleapis.com") {
                    return Err(format!("label {k}: reserved namespace"));
                }
            }
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn page<T: Clone>(items: &[T], q: &str, cap: usize) -> (Vec<T>, String) {
    let size = query_param(q, "pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(100)
        .min(cap)
        .max(1);
    // Tokens are opaque and hold characters a client must escape.
    let from = query_param(q, "pageToken")
        .map(percent_decode)
        .and_then(|t| {
            t.strip_prefix("tok/")?
                .strip_suffix("==")?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let to = (from + size).min(items.len());
    let next = if to < items.len() {
        format!("tok/{to}==")
    } else {
        String::new()
    };
    (items[from.min(to)..to].to_vec(), next)
}

async fn handle(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, "INVALID_ARGUMENT", &format!("invalid JSON: {e}")),
        }
    };
    let mut i = inner.lock().expect("fake");
    i.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    if !headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        return error(
            401,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential.",
        );
    }
    let mut lost: Option<Response> = None;
    if let Some(pos) = i
        .injects
        .iter()
        .position(|j| j.method == method.as_str() && path.ends_with(&j.suffix))
    {
        let j = i.injects.remove(pos);
        let r = error(j.http, &j.status, "injected failure");
        if !j.apply {
            return r;
        }
        lost = Some(r);
    }
    let r = route(&mut i, &method, &path, &query, &body);
    lost.unwrap_or(r)
}

fn route(i: &mut Inner, method: &Method, path: &str, query: &str, body: &Value) -> Response {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(404, "NOT_FOUND", "unknown path");
    };
    let (resource, verb) = match rest.rsplit_once(':') {
        Some((r, v)) if !v.contains('/') => (r, Some(v)),
        _ => (rest, None),
    };
    let seg: Vec<&str> = resource.split('/').collect();
    if seg.len() < 4 || seg[0] != "projects" || seg[2] != "locations" {
        return error(404, "NOT_FOUND", &format!("unknown resource {resource}"));
    }
    let parent = format!("projects/{}/locations/{}", seg[1], seg[3]);
    let m = method.as_str();
    match (&seg[4..], m, verb) {
        (["jobs"], "GET", None) => {
            let jobs: Vec<Value> = i
                .jobs
                .iter()
                .filter(|(k, _)| k.starts_with(&parent))
                .map(|(_, v)| v.clone())
                .collect();
            let (p, next) = page(&jobs, query, i.page_cap);
            let mut v = json!({"jobs": p});
            if !next.is_empty() {
                v["nextPageToken"] = json!(next);
            }
            ok(v)
        }
        (["jobs"], "POST", None) => {
            let Some(id) = query_param(query, "jobId") else {
                return error(400, "INVALID_ARGUMENT", "jobId is required");
            };
            if !valid_name(id) {
                return error(400, "INVALID_ARGUMENT", &format!("invalid job id {id:?}"));
            }
            let name = format!("{parent}/jobs/{id}");
            if i.jobs.contains_key(&name) {
                return error(
                    409,
                    "ALREADY_EXISTS",
                    &format!("Resource '{id}' already exists."),
                );
            }
            if let Err(e) = check_job(body) {
                return error(400, "INVALID_ARGUMENT", &e);
            }
            store_job(i, &name, body, 1);
            let op = new_op(
                i,
                &parent,
                OpKind::Job {
                    job: name,
                    polls_left: 1,
                },
            );
            ok(op_json(i, &op, false).expect("op"))
        }
        ([_, _], "GET" | "PATCH" | "DELETE", None) | ([_, _], "POST", Some("run"))
            if seg[4] == "jobs" =>
        {
            let name = resource.to_owned();
            let Some(job) = i.jobs.get(&name).cloned() else {
                return error(
                    404,
                    "NOT_FOUND",
                    &format!(
                        "Resource '{}' of kind 'JOB' in region '{}' in project '{}' does not exist.",
                        seg[5], seg[3], seg[1]
                    ),
                );
            };
            match (m, verb) {
                ("GET", _) => ok(job),
                ("PATCH", _) => {
                    if let Err(e) = check_job(body) {
                        return error(400, "INVALID_ARGUMENT", &e);
                    }
                    let generation = job["generation"]
                        .as_str()
                        .and_then(|g| g.parse::<u64>().ok())
                        .unwrap_or(1)
                        + 1;
                    store_job(i, &name, body, generation);
                    let op = new_op(
                        i,
                        &parent,
                        OpKind::Job {
                            job: name,
                            polls_left: 1,
                        },
                    );
                    ok(op_json(i, &op, false).expect("op"))
                }
                ("DELETE", _) => {
                    i.jobs.remove(&name);
                    let op = new_op(
                        i,
                        &parent,
                        OpKind::Snapshot {
                            exec: job,
                            done: true,
                        },
                    );
                    ok(op_json(i, &op, false).expect("op"))
                }
                _ => run(i, &parent, &name, &job, body),
            }
        }
        ([_, _, "executions"], "GET", None) if seg[4] == "jobs" => {
            let mut execs: Vec<&Exec> = i
                .execs
                .values()
                .filter(|e| e.name.starts_with(&format!("{resource}/")))
                .collect();
            execs.sort_by_key(|e| std::cmp::Reverse(e.created));
            let all: Vec<Value> = execs.iter().map(|e| e.json()).collect();
            let (p, next) = page(&all, query, i.page_cap);
            let mut v = json!({"executions": p});
            if !next.is_empty() {
                v["nextPageToken"] = json!(next);
            }
            ok(v)
        }
        ([_, _, "executions", _], _, _) if seg[4] == "jobs" => {
            let name = resource.to_owned();
            let Some(e) = i.execs.get(&name).cloned() else {
                return error(
                    404,
                    "NOT_FOUND",
                    &format!("Execution '{}' does not exist.", seg[7]),
                );
            };
            match (m, verb) {
                ("GET", None) => {
                    let v = e.json();
                    // Without a platform, a cancellation is seen in progress once, then done.
                    if e.phase == Phase::Cancelling && i.platform.is_none() {
                        let x = i.execs.get_mut(&name).expect("exec");
                        x.phase = Phase::Cancelled;
                        x.completed = Some(now_ms());
                    }
                    ok(v)
                }
                ("POST", Some("cancel")) => {
                    if e.phase.terminal() {
                        return error(
                            400,
                            "FAILED_PRECONDITION",
                            &format!("Execution '{}' is already finished.", seg[7]),
                        );
                    }
                    let has_platform = i.platform.is_some();
                    let x = i.execs.get_mut(&name).expect("exec");
                    // A platform stops even a task that has not reported running yet.
                    x.phase = if x.was_running || has_platform {
                        Phase::Cancelling
                    } else {
                        x.completed = Some(now_ms());
                        Phase::Cancelled
                    };
                    let snap = x.json();
                    if let Some(p) = &i.platform {
                        let _ = p.send(PlatformEvent::Cancel {
                            execution: name.clone(),
                        });
                    }
                    let op = new_op(
                        i,
                        &parent,
                        OpKind::Snapshot {
                            exec: snap,
                            done: false,
                        },
                    );
                    ok(op_json(i, &op, false).expect("op"))
                }
                ("DELETE", None) => {
                    if !e.phase.terminal() {
                        return error(
                            400,
                            "FAILED_PRECONDITION",
                            &format!("Execution '{}' is still running.", seg[7]),
                        );
                    }
                    i.execs.remove(&name);
                    let mut snap = e.json();
                    snap["deleteTime"] = json!(ts(now_ms()));
                    let op = new_op(
                        i,
                        &parent,
                        OpKind::Snapshot {
                            exec: snap,
                            done: true,
                        },
                    );
                    ok(op_json(i, &op, false).expect("op"))
                }
                _ => error(405, "UNIMPLEMENTED", "method not supported by the fake"),
            }
        }
        ([_, _, "executions", _, "tasks"], "GET", None) if seg[4] == "jobs" => {
            let exec = resource.trim_end_matches("/tasks");
            let Some(e) = i.execs.get(exec) else {
                return error(404, "NOT_FOUND", "execution does not exist");
            };
            ok(json!({"tasks": [e.task_json()]}))
        }
        (["operations", _], "GET", None) => match op_json(i, resource, true) {
            Some(v) => ok(v),
            None => error(404, "NOT_FOUND", &format!("operation {resource} not found")),
        },
        _ => error(404, "NOT_FOUND", &format!("unknown resource {resource}")),
    }
}

/// `jobs.run`: a new execution of the job's template with the overrides applied.
fn run(i: &mut Inner, parent: &str, job_name: &str, job: &Value, body: &Value) -> Response {
    if let Err(e) = crate::schema::check_run(body) {
        return error(400, "INVALID_ARGUMENT", &e);
    }
    let mut template = job["template"]["template"].clone();
    let ov = &body["overrides"];
    if let Some(cos) = ov["containerOverrides"].as_array() {
        for co in cos {
            let Some(c) = template["containers"]
                .as_array_mut()
                .and_then(|cs| cs.iter_mut().find(|c| c["name"] == co["name"]))
            else {
                return error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("container override names no container: {}", co["name"]),
                );
            };
            // "Will be merged with existing env"; args "will replace existing args".
            if let Some(env) = co["env"].as_array() {
                let mut have = c["env"].as_array().cloned().unwrap_or_default();
                for e in env {
                    if e["value"].as_str().is_some_and(|v| v.len() > 32768) {
                        return error(400, "INVALID_ARGUMENT", "env value longer than 32768 bytes");
                    }
                    have.retain(|h| h["name"] != e["name"]);
                    have.push(e.clone());
                }
                c["env"] = json!(have);
            }
            if co["clearArgs"] == true {
                c["args"] = json!([]);
            } else if co["args"].as_array().is_some_and(|a| !a.is_empty()) {
                c["args"] = co["args"].clone();
            }
        }
    }
    if let Some(t) = ov["timeout"].as_str() {
        template["timeout"] = json!(t);
    }
    i.seq += 1;
    // Five lowercase letters, as Cloud Run names executions; unique for 26^5 runs.
    let mut n = i.seq;
    let suffix: String = (0..5)
        .map(|_| {
            let c = (b'a' + (n % 26) as u8) as char;
            n /= 26;
            c
        })
        .collect();
    let job_short = short(job_name).to_owned();
    let name = format!("{job_name}/executions/{job_short}-{suffix}");
    let e = Exec {
        name: name.clone(),
        job: job_short,
        uid: format!("exec-uid-{:08}", i.seq),
        labels: job["template"]["labels"].clone(),
        template,
        phase: Phase::Pending,
        was_running: false,
        exit_code: 0,
        sidecar_failed: false,
        created: now_ms(),
        started: None,
        completed: None,
    };
    let template = e.template.clone();
    i.execs.insert(name.clone(), e);
    if let Some(p) = &i.platform {
        let _ = p.send(PlatformEvent::Run {
            execution: name.clone(),
            template,
        });
    }
    let op = new_op(i, parent, OpKind::Run { exec: name });
    ok(op_json(i, &op, false).expect("op"))
}
