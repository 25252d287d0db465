//! The execution model and its state machine.

use std::collections::BTreeMap;

use runvoy_proto::{LogEvent, Status, record::Stream};

use crate::clock::rfc3339;

/// Maximum length of a command, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Maximum number of words in an argv command.
pub const MAX_ARGV_WORDS: usize = 4096;
pub use runvoy_proto::{MAX_ENV_BYTES, MAX_ENV_VARS};
/// Longest accepted timeout: 7 days.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// An execution as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// 32 lowercase hex characters.
    pub id: String,
    /// Email of the creator.
    pub created_by: String,
    /// The command as a shell line: the line as given, or the argv shell-quoted.
    pub command: String,
    /// The exact argv, when the run gave one (run without a shell).
    pub argv: Option<Vec<String>>,
    /// Image the command runs in.
    pub image: String,
    /// Current status.
    pub status: Status,
    /// Exit code, once known.
    pub exit_code: Option<i32>,
    /// When the execution was accepted (epoch ms).
    pub created_at_ms: i64,
    /// When it reached a terminal status.
    pub completed_at_ms: Option<i64>,
    /// Requested timeout.
    pub timeout_secs: Option<u64>,
    /// The timeout fired.
    pub timed_out: bool,
    /// Why it failed when the exit code does not say.
    pub failure_reason: Option<String>,
    /// Every log record the runner wrote is stored.
    pub logs_complete: bool,
    /// Number of log records the runner reported in its final record.
    pub log_lines: Option<u64>,
    /// Output records the runner dropped instead of writing them (over the output budget or
    /// unwritable on a full disk), from its final record.
    pub dropped_log_lines: u64,
    /// Bytes of output in those records.
    pub dropped_log_bytes: u64,
    /// When a kill was last requested.
    pub kill_requested_at_ms: Option<i64>,
    /// Email of the user whose kill request was accepted (None when nobody asked for one; a
    /// kill the reconciler starts itself, e.g. on a timeout, leaves it None).
    pub stopped_by: Option<String>,
    /// Request that created it.
    pub created_by_request_id: String,
    /// Last request that changed it.
    pub modified_by_request_id: String,
    /// Compute platform name.
    pub compute_platform: String,
    /// The lock it took when it was created (held until it reaches a terminal status).
    pub lock: Option<String>,
    /// Compare-and-set version, bumped by every update.
    pub version: u64,
}

impl Execution {
    /// True when nothing about it will change any more: terminal status and complete logs.
    pub fn is_settled(&self) -> bool {
        self.status.is_terminal() && self.logs_complete
    }

    /// The API representation.
    pub fn to_api(&self) -> runvoy_proto::Execution {
        runvoy_proto::Execution {
            execution_id: self.id.clone(),
            created_by: self.created_by.clone(),
            owned_by: vec![self.created_by.clone()],
            command: self.command.clone(),
            argv: self.argv.clone(),
            image_id: self.image.clone(),
            status: self.status,
            exit_code: self.exit_code,
            started_at: rfc3339(self.created_at_ms),
            completed_at: self.completed_at_ms.map(rfc3339),
            duration_seconds: self
                .completed_at_ms
                .map(|c| ((c - self.created_at_ms).max(0)) as f64 / 1000.0),
            timeout_seconds: self.timeout_secs,
            timed_out: self.timed_out,
            failure_reason: self.failure_reason.clone(),
            logs_complete: self.logs_complete,
            log_lines: self.log_lines,
            dropped_log_lines: self.dropped_log_lines,
            dropped_log_bytes: self.dropped_log_bytes,
            created_by_request_id: self.created_by_request_id.clone(),
            modified_by_request_id: self.modified_by_request_id.clone(),
            compute_platform: self.compute_platform.clone(),
            stopped_by: self.stopped_by.clone(),
            lock: self.lock.clone(),
        }
    }
}

/// Whether the state machine allows `from → to`. Same-state is not a transition.
///
/// Unlike the Go runvoy, a completion that arrives before RUNNING is legal (STARTING → terminal),
/// so a fast job can never be left stuck in STARTING.
pub fn can_transition(from: Status, to: Status) -> bool {
    use Status::*;
    match (from, to) {
        (a, b) if a == b => false,
        (Succeeded | Failed | Stopped, _) => false,
        (Starting, Running | Terminating) => true,
        (Running, Terminating) => true,
        (Running, Starting) | (Terminating, Starting | Running) => false,
        (Starting | Running | Terminating, Succeeded | Failed | Stopped) => true,
        _ => false,
    }
}

/// One stored log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Per-execution sequence number from 1.
    pub seq: u64,
    /// Source stream.
    pub stream: Stream,
    /// Epoch ms when the runner read it.
    pub ts_ms: i64,
    /// Exact bytes without the newline.
    pub data: Vec<u8>,
    /// A newline followed.
    pub eol: bool,
}

impl LogRecord {
    /// The API / WebSocket representation.
    pub fn to_event(&self, execution_id: &str) -> LogEvent {
        let r = self.event_ref(execution_id);
        LogEvent {
            event_id: format!("{execution_id}-{}", self.seq),
            seq: r.seq,
            stream: r.stream,
            timestamp: r.timestamp,
            message: r.message.into_owned(),
            data_b64: r.data_b64,
            eol: r.eol,
        }
    }

    /// A borrowed API event (same JSON as [`LogRecord::to_event`], without copying the line).
    pub fn event_ref<'a>(&'a self, execution_id: &'a str) -> runvoy_proto::LogEventRef<'a> {
        let (message, data_b64) = match std::str::from_utf8(&self.data) {
            Ok(s) => (std::borrow::Cow::Borrowed(s), None),
            Err(_) => (
                String::from_utf8_lossy(&self.data),
                Some(runvoy_proto::b64_encode(&self.data)),
            ),
        };
        runvoy_proto::LogEventRef {
            event_id: (execution_id, self.seq),
            seq: self.seq,
            stream: self.stream,
            timestamp: self.ts_ms,
            message,
            data_b64,
            eol: self.eol,
        }
    }

    /// Builds a record from parsed runner fields. Returns `None` when `b64` is malformed.
    pub fn from_parts(
        seq: u64,
        stream: Stream,
        time: &str,
        message: std::borrow::Cow<'_, str>,
        b64: Option<&str>,
        eol: bool,
    ) -> Option<LogRecord> {
        let data = match b64 {
            Some(b) => runvoy_proto::b64_decode(b)?,
            None => message.into_owned().into_bytes(),
        };
        Some(LogRecord {
            seq,
            stream,
            ts_ms: crate::clock::parse_rfc3339(time).unwrap_or(0),
            data,
            eol,
        })
    }
}

/// What the runner's final record (or compute) says about how the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code (128 + signal when killed by one).
    pub exit_code: i32,
    /// Number of log records written.
    pub lines: u64,
    /// The runner's timeout fired.
    pub timed_out: bool,
    /// The runner was asked to stop.
    pub killed: bool,
    /// The runner could not start the command.
    pub error: Option<String>,
    /// Output records dropped over the output budget (they have no sequence number).
    pub dropped_lines: u64,
    /// Bytes of output dropped over the output budget.
    pub dropped_bytes: u64,
    /// Output records the runner could not write (disk full) and dropped.
    pub unwritten_lines: u64,
    /// Bytes of output the runner could not write.
    pub unwritten_bytes: u64,
}

impl ExitInfo {
    /// Every output record the runner did not write, for whatever reason.
    pub fn lost_lines(&self) -> u64 {
        self.dropped_lines + self.unwritten_lines
    }
    /// Bytes of output the runner did not write, for whatever reason.
    pub fn lost_bytes(&self) -> u64 {
        self.dropped_bytes + self.unwritten_bytes
    }
}

impl From<runvoy_proto::record::ExitRecordWire> for ExitInfo {
    fn from(w: runvoy_proto::record::ExitRecordWire) -> Self {
        ExitInfo {
            exit_code: w.exit_code,
            lines: w.lines,
            timed_out: w.timed_out,
            killed: w.killed,
            error: w.error,
            dropped_lines: w.dropped_lines,
            dropped_bytes: w.dropped_bytes,
            unwritten_lines: w.unwritten_lines,
            unwritten_bytes: w.unwritten_bytes,
        }
    }
}

/// What a run asks compute to start. Environment values travel only here, never into the store.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Execution id.
    pub execution_id: String,
    /// The command as a shell line (for display when `argv` is set).
    pub command: String,
    /// The exact argv to run without a shell; `None`: run `command` with `/bin/sh -c`.
    pub argv: Option<Vec<String>>,
    /// Bytes for the command's standard input (it reads end-of-file without). Like `env`, they
    /// travel only here, never into the store.
    pub stdin: Option<Vec<u8>>,
    /// Image.
    pub image: String,
    /// The registered image's settings (cpu, memory, timeout, identity), when the run's image
    /// is a registered one: compute that shapes a job per image (Cloud Run) applies them.
    pub image_settings: Option<crate::images::ImageSpec>,
    /// Environment for the command (written to the workspace `.env` by the sidecar).
    pub env: BTreeMap<String, String>,
    /// Timeout enforced by the runner itself.
    pub timeout_secs: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL on kill or timeout.
    pub kill_grace_secs: u64,
    /// Lines the runner prints as `system` records before the command.
    pub banner: Vec<String>,
    /// Most bytes of command output the runner writes (0: no limit); the rest is dropped and
    /// counted in its final record.
    pub max_output_bytes: u64,
    /// Most output records the runner writes (0: no limit).
    pub max_output_lines: u64,
    /// Resource limits asked for this run (validated against the server's maxima).
    pub resources: Resources,
    /// The secrets the sidecar fetches and writes to `.env`: references only, never values.
    pub secrets: Vec<crate::secrets::SecretRef>,
    /// How the sidecar fetches them (set when `secrets` is not empty). The token is good for
    /// this execution only, once, while it is unfinished.
    pub secrets_fetch: Option<crate::secrets::SecretsFetch>,
    /// The git repository the sidecar clones before the command starts in it.
    pub git: Option<runvoy_proto::git::Checkout>,
}

impl JobSpec {
    /// The runner's settings for this run, as `runvoy-runner` reads them from its environment
    /// (`runvoy_proto::record::env`): the execution id, the kill grace, the command, and the
    /// timeout, banner and output limits when set. Compute adds its own (work directory, files)
    /// and the run's environment.
    pub fn runner_settings(&self) -> Vec<(&'static str, String)> {
        use runvoy_proto::record::env;
        let mut vars = vec![
            (env::EXECUTION_ID, self.execution_id.clone()),
            (env::KILL_GRACE, self.kill_grace_secs.to_string()),
        ];
        match &self.argv {
            Some(argv) => vars.push((env::ARGV, serde_json::to_string(argv).unwrap_or_default())),
            None => vars.push((env::COMMAND, self.command.clone())),
        }
        if let Some(t) = self.timeout_secs {
            vars.push((env::TIMEOUT, t.to_string()));
        }
        if !self.banner.is_empty() {
            vars.push((env::BANNER, self.banner.join("\n")));
        }
        if !self.secrets.is_empty() {
            let keys: Vec<&str> = self.secrets.iter().map(|s| s.key_name.as_str()).collect();
            vars.push((env::SECRET_KEYS, keys.join(",")));
        }
        for (name, limit) in [
            (env::MAX_OUTPUT_BYTES, self.max_output_bytes),
            (env::MAX_OUTPUT_LINES, self.max_output_lines),
        ] {
            if limit > 0 {
                vars.push((name, limit.to_string()));
            }
        }
        if let Some(git) = &self.git {
            vars.push((runvoy_proto::git::env::CHECKOUT_DIR, git.command_dir()));
        }
        vars
    }

    /// The sidecar's settings for this run beyond the workspace and its input files: the git
    /// checkout (`runvoy_proto::git::env`). Empty without one.
    pub fn sidecar_settings(&self) -> Vec<(&'static str, String)> {
        self.git
            .as_ref()
            .map(runvoy_proto::git::Checkout::sidecar_env)
            .unwrap_or_default()
    }
}

/// Resource limits asked for one run; `None` keeps the compute's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// Workspace size in MiB.
    pub workspace_mb: Option<u64>,
}

/// A user role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Executions, images, secrets; reads users.
    Operator,
    /// Runs commands, manages own secrets.
    Developer,
    /// Reads executions.
    Viewer,
}

impl Role {
    /// Every role, most privileged first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Developer, Role::Viewer];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "developer" => Some(Role::Developer),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// A user and their API key (stored only as a hash).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Email, unique.
    pub email: String,
    /// Role.
    pub role: Role,
    /// SHA-256 of the API key, hex.
    pub key_hash: String,
    /// Creation time.
    pub created_at_ms: i64,
    /// Revoked users fail authentication.
    pub revoked: bool,
    /// Last time the key was used (coarse).
    pub last_used_ms: Option<i64>,
    /// Until when an unclaimed user may claim its key (epoch ms); `None` once the key exists.
    /// Unclaimed users cannot authenticate (their `key_hash` matches no key) and expire.
    pub claim_expires_at_ms: Option<i64>,
    /// Email of the user who created this one (`runvoyd` for users created on the server).
    pub created_by: String,
    /// Request that created it.
    pub created_by_request_id: String,
    /// Last request that changed it.
    pub modified_by_request_id: String,
}

/// A new random execution id: 32 lowercase hex characters.
pub fn new_execution_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// True when `id` looks like an execution id.
pub fn valid_execution_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a valid environment variable name.
pub fn valid_env_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn completion_before_running_is_allowed() {
        assert!(can_transition(Starting, Succeeded));
        assert!(can_transition(Starting, Failed));
        assert!(can_transition(Terminating, Stopped));
    }

    #[test]
    fn terminal_states_are_final_and_no_going_back() {
        for t in [Succeeded, Failed, Stopped] {
            for s in Status::ALL {
                assert!(!can_transition(t, s));
            }
        }
        assert!(!can_transition(Running, Starting));
        assert!(!can_transition(Terminating, Running));
        assert!(!can_transition(Running, Running));
    }

    #[test]
    fn ids_and_env_names() {
        let id = new_execution_id();
        assert!(valid_execution_id(&id));
        assert!(!valid_execution_id("../etc"));
        assert!(valid_env_name("FOO_1") && valid_env_name("_x"));
        assert!(!valid_env_name("1A") && !valid_env_name("A-B") && !valid_env_name(""));
    }

    #[test]
    fn invalid_utf8_round_trips_through_event() {
        let r = LogRecord {
            seq: 3,
            stream: Stream::Stderr,
            ts_ms: 5,
            data: vec![0xff, b'a', 0],
            eol: false,
        };
        let e = r.to_event("x");
        assert_eq!(e.event_id, "x-3");
        assert_eq!(
            serde_json::to_value(r.event_ref("x")).unwrap(),
            serde_json::to_value(&e).unwrap()
        );
        assert_eq!(e.bytes(), r.data);
        assert!(!e.eol);
    }
}
