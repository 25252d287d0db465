//! REST bodies under `/api/v1`. Field names follow the Go runvoy's JSON where it has the endpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::Stream;

/// Execution status. Terminal: SUCCEEDED, FAILED, STOPPED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Accepted; compute is preparing the workspace.
    Starting,
    /// The command is running.
    Running,
    /// The command exited 0.
    Succeeded,
    /// The command exited non-zero, timed out, or could not start.
    Failed,
    /// Killed on request.
    Stopped,
    /// A kill was requested and is in progress.
    Terminating,
}

impl Status {
    /// All statuses, in lifecycle order.
    pub const ALL: [Status; 6] = [
        Status::Starting,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Stopped,
        Status::Terminating,
    ];

    /// True for SUCCEEDED, FAILED and STOPPED.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Stopped)
    }

    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Stopped => "STOPPED",
            Status::Terminating => "TERMINATING",
        }
    }

    /// Parses the wire name, case-insensitively.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest standard input a run request may carry, in bytes (before base64).
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;

/// `POST /api/v1/run` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// A shell line, run as `/bin/sh -c COMMAND`. Leave empty when `argv` is given.
    #[serde(default)]
    pub command: String,
    /// The exact program and arguments, run without a shell in between. Give either this or
    /// `command`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Bytes for the command's standard input, base64 (at most [`MAX_STDIN_BYTES`] decoded).
    /// Without it the command reads end-of-file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_b64: Option<String>,
    /// Image to run in; the backend's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra environment variables for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Timeout in seconds; the command is killed and the execution FAILED when it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    pub timeout: Option<u64>,
    /// Resources for this run, instead of the server's defaults; each at most the server's
    /// maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<RunResources>,
    /// Name of a lock the execution holds until it finishes (1–64 of `A-Z a-z 0-9 . _ -`,
    /// starting with a letter or digit). While an unfinished execution holds it, the run is
    /// refused with 409 `LOCK_HELD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Names of stored secrets injected into the command's environment (each under its
    /// `key_name`). Only the names travel; the values reach the command's `.env` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Repository the sidecar clones (shallow) before the command starts in it: `https://`,
    /// `http://` or `git://`, without credentials in the URL (a `GITHUB_TOKEN` in `env`
    /// authenticates https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<String>,
    /// Branch, tag or full commit id to check out; the remote's default branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Directory inside the checkout the command starts in (relative, no `..`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_path: Option<String>,
}

/// Most environment variables in a run request.
pub const MAX_ENV_VARS: usize = 256;
/// Most bytes of environment names and values together in a run request.
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Checks a run's environment: at most [`MAX_ENV_VARS`] variables, names
/// `[A-Za-z_][A-Za-z0-9_]*`, no NUL in values (newlines are fine), at most [`MAX_ENV_BYTES`] in
/// all. The message names the variable, never its value. The server and the CLI both use it.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    if env.len() > MAX_ENV_VARS {
        return Err(format!(
            "{} environment variables; at most {MAX_ENV_VARS} are allowed",
            env.len()
        ));
    }
    let mut size = 0;
    for (k, v) in env {
        if !crate::envfile::is_env_name(k.as_bytes()) {
            return Err(format!(
                "environment variable name {k:?} is invalid: use letters, digits and _, not \
                 starting with a digit"
            ));
        }
        if v.contains('\0') {
            return Err(format!(
                "the value of environment variable {k} contains a NUL byte"
            ));
        }
        size += k.len() + v.len();
    }
    if size > MAX_ENV_BYTES {
        return Err(format!(
            "the environment is {size} bytes; at most {MAX_ENV_BYTES} (64 KiB) of names and \
             values are allowed"
        ));
    }
    Ok(())
}

/// Longest lock name, in bytes.
pub const MAX_LOCK_NAME: usize = 64;

/// True for a valid lock name: 1–[`MAX_LOCK_NAME`] of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit.
pub fn valid_lock_name(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= MAX_LOCK_NAME
        && matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Who holds a lock: in the 409 `LOCK_HELD` answer of `POST /api/v1/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockHolder {
    /// The lock's name.
    pub name: String,
    /// The unfinished execution holding it.
    pub execution_id: String,
    /// Email of the user who started that execution.
    pub held_by: String,
    /// RFC 3339 time the lock was taken.
    pub acquired_at: String,
}

/// Per-run resource limits (`POST /api/v1/run`); absent fields keep the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunResources {
    /// Memory in MiB, including the in-memory workspace and /tmp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU in cores (fractions allowed, e.g. 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Size of the in-memory /workspace in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_mb: Option<u64>,
}

/// `POST /api/v1/run` answer (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunResponse {
    /// New execution id.
    pub execution_id: String,
    /// Always STARTING.
    pub status: Status,
    /// The command as stored: a shell line (an `argv` shell-quoted).
    pub command: String,
    /// The exact argv when the run asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Resolved image.
    pub image_id: String,
    /// WebSocket URL with a short-lived token for live logs.
    pub websocket_url: String,
}

/// An execution record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Execution {
    /// 32 lowercase hex characters.
    pub execution_id: String,
    /// Email of the user who started it.
    pub created_by: String,
    /// Users who own it (the creator).
    pub owned_by: Vec<String>,
    /// The command as a shell line: the line itself, or the `argv` shell-quoted (paste it back
    /// as `runvoy run 'LINE'` or after `runvoy run --`).
    pub command: String,
    /// The exact argv, when the command was given as one (run without a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Image it runs in.
    pub image_id: String,
    /// Current status.
    pub status: Status,
    /// Exit code of the command once known (128 + signal when killed by one).
    pub exit_code: Option<i32>,
    /// RFC 3339 time the execution was accepted.
    pub started_at: String,
    /// RFC 3339 time it reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Seconds between start and completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Requested timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// True when the timeout fired.
    #[serde(default)]
    pub timed_out: bool,
    /// Why it failed when no exit code explains it (e.g. the sidecar failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// True once every log record the runner wrote is stored.
    #[serde(default)]
    pub logs_complete: bool,
    /// Number of log records, once logs are complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines: Option<u64>,
    /// Output records the runner dropped instead of storing them (over the output budget, or
    /// unwritable while the disk was full), from its final record; absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_log_lines: u64,
    /// Bytes of output in the dropped records; absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_log_bytes: u64,
    /// Request that created it.
    pub created_by_request_id: String,
    /// Last request that changed it.
    pub modified_by_request_id: String,
    /// Compute platform (`local`, `gcp`).
    pub compute_platform: String,
    /// Email of the user whose kill request was accepted; absent when nobody asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// The lock the execution held (released once it finished); absent when it took none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
}

/// One page of `GET /api/v1/executions`: the answer's JSON array, and the cursor of the
/// answer's `Link: <…>; rel="next"` header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionList {
    /// Newest first.
    pub executions: Vec<Execution>,
    /// Pass as `cursor=` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A stored log record as returned by the API and sent on the WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEvent {
    /// Stable id: `<execution_id>-<seq>`.
    pub event_id: String,
    /// Per-execution sequence number from 1.
    pub seq: u64,
    /// Source stream.
    pub stream: Stream,
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// The line without its newline (lossy UTF-8 when `data_b64` is present).
    pub message: String,
    /// Exact bytes, base64, when the line is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
    /// False when no newline followed this record.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub eol: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LogEvent {
    /// The exact bytes of the record, without the newline.
    pub fn bytes(&self) -> Vec<u8> {
        match &self.data_b64 {
            Some(b) => crate::b64_decode(b).unwrap_or_else(|| self.message.as_bytes().to_vec()),
            None => self.message.as_bytes().to_vec(),
        }
    }
}

/// A borrowed [`LogEvent`] that serialises to the same JSON without copying the line: the
/// WebSocket hot path.
#[derive(Debug, Clone, Serialize)]
pub struct LogEventRef<'a> {
    /// Execution id and seq, written as `<execution_id>-<seq>`.
    #[serde(serialize_with = "event_id")]
    pub event_id: (&'a str, u64),
    /// Sequence number.
    pub seq: u64,
    /// Source stream.
    pub stream: Stream,
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// The line (lossy UTF-8 when `data_b64` is present).
    pub message: std::borrow::Cow<'a, str>,
    /// Exact bytes, base64, when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
    /// False when no newline followed.
    #[serde(skip_serializing_if = "is_true")]
    pub eol: bool,
}

fn event_id<S: serde::Serializer>(v: &(&str, u64), s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{}-{}", v.0, v.1))
}

/// `GET /api/v1/executions/{id}/logs` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogsResponse {
    /// Execution id.
    pub execution_id: String,
    /// Status when the page was read.
    pub status: Status,
    /// Records with `seq > after_seq`, ascending.
    pub events: Vec<LogEvent>,
    /// True when more records are stored after this page.
    pub has_more: bool,
    /// True once every record is stored (the execution ended and none is missing).
    pub logs_complete: bool,
    /// WebSocket URL (with a fresh token) for following the logs.
    pub websocket_url: String,
}

/// `DELETE /api/v1/executions/{id}` answer (200), also for an execution that is already over.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KillResponse {
    /// Execution id.
    pub execution_id: String,
    /// Human message.
    pub message: String,
    /// TERMINATING when the kill was started; the terminal status when it had already ended
    /// (nothing was done then).
    pub status: Status,
    /// The exit code of an execution that had already ended, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `GET /api/v1/health` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
    /// Server version.
    pub version: String,
    /// Backend (`local`, `gcp`).
    pub backend: String,
    /// Same as backend, for clients of the Go runvoy.
    pub provider: String,
    /// How commands are isolated: `bubblewrap`, or `none` when isolation was turned off.
    #[serde(default)]
    pub isolation: String,
    /// What protects the keys of stored secrets: `local` (a key file in the data dir) or
    /// `gcp-kms` (a Cloud KMS key).
    #[serde(default)]
    pub cipher: String,
    /// How each execution limit is enforced (`memory`, `pids`, `cpu`, `workspace`, `tmp`,
    /// `open_files` → `cgroup-v1`, `cgroup-v2`, `rlimit`, `tmpfs` or `none`).
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, String>,
    /// Where commands run: `local`, `cloudrun` or `docker` (absent from older servers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compute: String,
}

/// `GET /api/v1/health/ready` answer: 200 with `ready`, 503 with `not_ready` and the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyResponse {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Why it is not ready (store writes failing, data dir out of space); absent when ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A user as the API shows it (never with a key or key hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Email, unique, lower-case.
    pub email: String,
    /// `admin`, `operator`, `developer` or `viewer`.
    pub role: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// True once the key was revoked.
    pub revoked: bool,
    /// `pending` (key not claimed yet), `active` or `revoked`.
    pub status: String,
    /// RFC 3339 time the key was last used (coarse, about a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    /// RFC 3339 time the claim token expires, while the user is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_expires_at: Option<String>,
    /// Who created the user.
    #[serde(default)]
    pub created_by: String,
    /// Request that created it.
    #[serde(default)]
    pub created_by_request_id: String,
    /// Last request that changed it.
    #[serde(default)]
    pub modified_by_request_id: String,
}

/// `GET /api/v1/users` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    /// Sorted by email.
    pub users: Vec<User>,
}

/// `POST /api/v1/users/create` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The new user's email.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 254,
            pattern = "^\\s*(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\s*$"
        )
    )]
    pub email: String,
    /// `admin`, `operator`, `developer` or `viewer`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^\\s*([Aa][Dd][Mm][Ii][Nn]|[Oo][Pp][Ee][Rr][Aa][Tt][Oo][Rr]|[Dd][Ee][Vv][Ee][Ll][Oo][Pp][Ee][Rr]|[Vv][Ii][Ee][Ww][Ee][Rr])\\s*$"
        )
    )]
    pub role: String,
}

/// `POST /api/v1/users/create` answer (201).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserResponse {
    /// The new (pending) user.
    pub user: User,
    /// One-time token for `GET /api/v1/claim/{token}`; valid 15 minutes, shown only here.
    pub claim_token: String,
}

/// `GET /api/v1/claim/{token}` answer; also `POST /api/v1/users/rotate-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// The API key; shown only in this answer.
    pub api_key: String,
    /// Whose key it is.
    pub user_email: String,
    /// Human message.
    pub message: String,
}

/// `POST /api/v1/users/revoke` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeUserRequest {
    /// The user to revoke.
    pub email: String,
}

/// `POST /api/v1/users/set-role` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    /// The user to change.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 254,
            pattern = "^\\s*(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\s*$"
        )
    )]
    pub email: String,
    /// The new role.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^\\s*([Aa][Dd][Mm][Ii][Nn]|[Oo][Pp][Ee][Rr][Aa][Tt][Oo][Rr]|[Dd][Ee][Vv][Ee][Ll][Oo][Pp][Ee][Rr]|[Vv][Ii][Ee][Ww][Ee][Rr])\\s*$"
        )
    )]
    pub role: String,
}

/// Answer of `POST /api/v1/users/revoke` and `POST /api/v1/users/set-role`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserChangeResponse {
    /// Human message.
    pub message: String,
    /// The user's email.
    pub email: String,
    /// The user as stored now.
    pub user: User,
}

/// `POST /api/v1/images/register` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterImageRequest {
    /// Image reference: `[registry/]name[:tag][@sha256:digest]` (at most 256 characters).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub image: String,
    /// CPU for runs in this image, in cores (fractions allowed); at most the server's maximum
    /// for runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0, maximum = 1024.0))]
    pub cpu: Option<f64>,
    /// Memory for runs in this image, in MiB; at most the server's maximum for runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub memory: Option<u64>,
    /// Timeout in seconds of runs in this image that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    pub timeout: Option<u64>,
    /// Identity the runs get from compute (a Cloud Run service account email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9@._-]{1,256}$"))]
    pub service_account: Option<String>,
    /// `true` makes it the default image (the previous default stops being it); absent makes
    /// it the default only when no image is; `false` never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
}

/// A registered image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageInfo {
    /// Deterministic id: `<name>:<tag>-<8 hex>` (`<name>@<digest>-<8 hex>` for a digest); the
    /// hex covers the registry, name, tag and configuration.
    pub image_id: String,
    /// The reference as registered.
    pub image: String,
    /// Registry host (`docker.io` when the reference names none).
    pub registry: String,
    /// Repository path without the registry.
    pub image_name: String,
    /// Tag (`latest` when none was given), digest, or `tag@digest`.
    pub image_tag: String,
    /// CPU of runs in this image, in cores; absent: the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory of runs in this image, in MiB; absent: the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Timeout in seconds of runs that set none; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Service account of the runs; absent: compute's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Runs that name no image use the default image; at most one image is.
    pub is_default: bool,
    /// Email of the user who registered it.
    pub created_by: String,
    /// RFC 3339 time it was registered.
    pub created_at: String,
    /// Request that registered it.
    #[serde(default)]
    pub created_by_request_id: String,
    /// Last request that changed it.
    #[serde(default)]
    pub modified_by_request_id: String,
}

/// `GET /api/v1/images` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageList {
    /// Sorted by image id.
    pub images: Vec<ImageInfo>,
}

/// `DELETE /api/v1/images/{id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnregisterImageResponse {
    /// Human message.
    pub message: String,
    /// The removed image's id.
    pub image_id: String,
    /// The image as it was.
    pub image: ImageInfo,
}

/// One server log line of a traced request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceLogLine {
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The log message.
    pub message: String,
    /// The whole structured line (time, level, message, request_id, user, route and fields).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: serde_json::Value,
}

/// Records a request created or changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceResources {
    /// Executions.
    #[serde(default)]
    pub executions: Vec<Execution>,
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Images (registered, or made or unmade the default).
    #[serde(default)]
    pub images: Vec<ImageInfo>,
}

/// `GET /api/v1/trace/{request_id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceResponse {
    /// The traced request id.
    pub request_id: String,
    /// The server's log lines carrying the id, oldest first.
    pub logs: Vec<TraceLogLine>,
    /// Records the request created or last changed.
    pub related_resources: TraceResources,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Short summary.
    pub error: String,
    /// Stable machine-readable code (see [`codes`]).
    pub code: String,
    /// More detail, when useful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// With `LOCK_HELD`: the lock and the execution holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockHolder>,
}

/// Joins words into one shell line that `sh` splits back into exactly those words: words made
/// only of safe characters stay as they are, others are single-quoted (`'` becomes `'\''`),
/// and an empty word is `''`. A first word containing `=` is quoted too, or the shell would
/// read it as a variable assignment.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        let w = w.as_ref();
        if i > 0 {
            out.push(' ');
            out.push_str(&shell_quote(w));
        } else if w.contains('=') {
            out.push_str(&format!("'{}'", w.replace('\'', "'\\''")));
        } else {
            out.push_str(&shell_quote(w));
        }
    }
    out
}

/// One word quoted for a POSIX shell (see [`shell_join`]).
pub fn shell_quote(w: &str) -> std::borrow::Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        return std::borrow::Cow::Borrowed(w);
    }
    std::borrow::Cow::Owned(format!("'{}'", w.replace('\'', "'\\''")))
}

/// Stable error codes.
pub mod codes {
    /// 400: the request is malformed or a field is invalid.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// 400: the run names (or defaults to) an image this server's compute backend cannot run
    /// (the local backend runs commands with the host's own programs).
    pub const IMAGE_NOT_SUPPORTED: &str = "IMAGE_NOT_SUPPORTED";
    /// 400: the run names an image that is not registered.
    pub const IMAGE_NOT_FOUND: &str = "IMAGE_NOT_FOUND";
    /// 400: compute refused to prepare the image being registered; nothing was stored.
    pub const IMAGE_REJECTED: &str = "IMAGE_REJECTED";
    /// 409: the name matches several registered images; name one by its image id.
    pub const IMAGE_AMBIGUOUS: &str = "IMAGE_AMBIGUOUS";
    /// 401: no credentials.
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    /// 401: unknown API key.
    pub const INVALID_API_KEY: &str = "INVALID_API_KEY";
    /// 401: the key was revoked.
    pub const API_KEY_REVOKED: &str = "API_KEY_REVOKED";
    /// 401: a WebSocket token is missing, expired or for another execution.
    pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
    /// 403: authenticated but not allowed.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// 404: no such resource.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// 405: method not allowed on this path.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// 409: conflicts with the current state.
    pub const CONFLICT: &str = "CONFLICT";
    /// 409: the run asks for a lock an unfinished execution holds (the body's `lock` names it);
    /// nothing was created.
    pub const LOCK_HELD: &str = "LOCK_HELD";
    /// 413: body too large.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// 414: the request URI is too long.
    pub const URI_TOO_LONG: &str = "URI_TOO_LONG";
    /// 431: the request headers are too many or too large.
    pub const HEADERS_TOO_LARGE: &str = "HEADERS_TOO_LARGE";
    /// 415: body is not JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// 429: too many requests.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// 429: the caller (or the whole server) already runs as many executions as allowed.
    pub const EXECUTION_LIMIT_REACHED: &str = "EXECUTION_LIMIT_REACHED";
    /// 429: the user already has as many log streams open as the server allows.
    pub const TOO_MANY_STREAMS: &str = "TOO_MANY_STREAMS";
    /// 404: no secret of that name (also when a run names one).
    pub const SECRET_NOT_FOUND: &str = "SECRET_NOT_FOUND";
    /// 409: a secret of that name exists; nothing was changed.
    pub const SECRET_EXISTS: &str = "SECRET_EXISTS";
    /// 400: a secret's name, key name, description or value is invalid.
    pub const INVALID_SECRET: &str = "INVALID_SECRET";
    /// 500: a bug.
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
    /// 503: the store is unavailable.
    pub const DATABASE_ERROR: &str = "DATABASE_ERROR";
    /// 503: compute or another dependency is unavailable.
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_join_quotes_only_what_needs_it() {
        assert_eq!(shell_join(&["ls", "-la", "/tmp"]), "ls -la /tmp");
        assert_eq!(
            shell_join(&["grep", "-c", "a b", "/etc/passwd"]),
            "grep -c 'a b' /etc/passwd"
        );
        assert_eq!(shell_join(&["echo", "it's"]), "echo 'it'\\''s'");
        assert_eq!(shell_join(&["echo", "$HOME", ""]), "echo '$HOME' ''");
        assert_eq!(shell_join(&["A=1", "--x=y"]), "'A=1' --x=y");
        assert_eq!(shell_join(&["printf", "a\nb"]), "printf 'a\nb'");
    }

    #[test]
    fn run_request_forms() {
        let r: RunRequest = serde_json::from_str(r#"{"command":"make test"}"#).unwrap();
        assert_eq!(r.command, "make test");
        assert!(r.argv.is_none());
        let r: RunRequest = serde_json::from_str(r#"{"argv":["sh","-c","exit 42"]}"#).unwrap();
        assert_eq!(r.command, "");
        assert_eq!(r.argv.unwrap(), ["sh", "-c", "exit 42"]);
        let json = serde_json::to_string(&RunRequest {
            command: "x".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(json, r#"{"command":"x"}"#);
    }
}

/// `POST /api/v1/secrets` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSecretRequest {
    /// Unique name: 1-128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    )]
    pub name: String,
    /// The environment variable the value is injected as (`[A-Za-z_][A-Za-z0-9_]*`, not
    /// `RUNVOY_*`, `LD_*`, `PATH`, `HOME`...).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z_][A-Za-z0-9_]{0,255}$")
    )]
    pub key_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The value (at most 64 KiB; stored only encrypted).
    #[cfg_attr(feature = "openapi", schema(max_length = 65536))]
    pub value: String,
}

/// `PUT /api/v1/secrets/{name}` body; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateSecretRequest {
    /// New environment variable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z_][A-Za-z0-9_]{0,255}$")
    )]
    pub key_name: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 65536))]
    pub value: Option<String>,
}

/// A secret's metadata: what every answer but a reveal shows (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    /// Name.
    pub name: String,
    /// Environment variable name.
    pub key_name: String,
    /// Description.
    pub description: String,
    /// Creator (the owner).
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// Last writer.
    pub updated_by: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Request that created it.
    pub created_by_request_id: String,
    /// Request that last changed it.
    pub modified_by_request_id: String,
}

/// `GET /api/v1/secrets` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretList {
    /// Sorted by name, without values.
    pub secrets: Vec<SecretInfo>,
    /// Number of secrets.
    pub total: usize,
}

/// `POST /api/v1/secrets/{name}/reveal` answer: the one answer that carries a value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevealedSecret {
    /// The metadata.
    #[serde(flatten)]
    pub secret: SecretInfo,
    /// The value in clear.
    pub value: String,
}

/// `DELETE /api/v1/secrets/{name}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteSecretResponse {
    /// The deleted secret's name.
    pub name: String,
    /// Human-readable outcome.
    pub message: String,
}

/// `POST /api/v1/executions/{id}/secrets` body: the execution's single-use fetch token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretsFetchRequest {
    /// The token handed to the execution's sidecar.
    pub token: String,
}

/// One injected value, as the sidecar receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FetchedSecret {
    /// Secret name.
    pub name: String,
    /// Environment variable name.
    pub key_name: String,
    /// The value.
    pub value: String,
}

/// `POST /api/v1/executions/{id}/secrets` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretsFetchResponse {
    /// The execution's secrets.
    pub secrets: Vec<FetchedSecret>,
}
