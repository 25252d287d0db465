//! [`LocalCompute`]: the Compute port on this machine.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runvoy_domain::ports::{Compute, ComputeError, ComputeExit, ComputeState};
use runvoy_domain::{JobSpec, valid_execution_id};
use serde::{Deserialize, Serialize};

use crate::bus::Bus;
use crate::records::read_exit_record;
use crate::sandbox::Limits;
use crate::supervisor::{ExitFile, pid_alive, read_pid_file};
use crate::watch::DirWatcher;

/// How the runner step is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The bubblewrap sandbox of [`crate::sandbox`].
    Bwrap,
    /// None: the command runs as runvoyd's user in a plain process group. Only on explicit
    /// request, for single-user machines without user namespaces.
    Process,
}

/// Settings of the local compute.
#[derive(Debug, Clone)]
pub struct LocalComputeConfig {
    /// `<data-dir>/executions`.
    pub executions_dir: PathBuf,
    /// The `runvoy-runner` binary injected into each workspace.
    pub runner_bin: PathBuf,
    /// The `runvoy-sidecar` binary.
    pub sidecar_bin: PathBuf,
    /// Program and leading arguments that start a supervisor; the execution dir is appended
    /// (normally `[runvoyd, supervise]`).
    pub supervisor_cmd: Vec<PathBuf>,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Give commands the host network (bubblewrap otherwise unshares it).
    pub share_net: bool,
    /// Limits of every execution.
    pub limits: Limits,
    /// First host uid of the range sandboxed commands run as (when runvoyd runs as root).
    pub sandbox_uid_base: u32,
    /// The bubblewrap binary (found on runvoyd's PATH).
    pub bwrap_bin: PathBuf,
}

/// What the supervisor reads from `job.json`. Never holds environment values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobFile {
    pub execution_id: String,
    pub command: String,
    /// The exact argv of an argv run (the runner then uses no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A `stdin` file (0600, consumed by the sidecar) holds the command's standard input.
    #[serde(default)]
    pub stdin: bool,
    pub image: String,
    pub timeout_secs: Option<u64>,
    pub kill_grace_secs: u64,
    pub banner: Vec<String>,
    /// Output budget passed to the runner (0: none); absent in jobs written by older versions.
    #[serde(default)]
    pub max_output_bytes: u64,
    #[serde(default)]
    pub max_output_lines: u64,
    pub isolation: Isolation,
    pub share_net: bool,
    pub runner_bin: PathBuf,
    pub sidecar_bin: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub sandbox_uid_base: u32,
    #[serde(default)]
    pub bwrap_bin: PathBuf,
    #[serde(default)]
    pub sandbox_assets: PathBuf,
    /// A `secrets.json` file (0600, consumed by the sidecar) says how to fetch the run's
    /// secrets.
    #[serde(default)]
    pub secrets: bool,
    /// The `.env` names of the run's secrets, whose values the runner redacts (names only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    /// The sidecar's run settings (`JobSpec::sidecar_settings`: the git checkout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecar_env: Vec<(String, String)>,
    /// The command's directory relative to the workspace (a git checkout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_dir: Option<String>,
}

/// Name of the standard-input file in an execution's directory.
pub(crate) const STDIN_FILE: &str = "stdin";
/// Name of the secrets fetch file in an execution's directory (see [`JobFile::secrets`]).
pub(crate) const SECRETS_FILE: &str = "secrets.json";

/// Failure reason of an execution whose supervisor died without writing `exit.json`.
pub(crate) const SUPERVISOR_VANISHED: &str =
    "the execution's supervisor vanished (killed or machine restarted)";

/// How long a started execution may have no live supervisor pid file before it counts as gone
/// (covers the supervisor's own start-up).
const SUPERVISOR_START_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether an execution's supervisor is still there (only meaningful before `exit.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Its pid file names a live process.
    Alive,
    /// No pid file yet, and the execution was started recently.
    Starting,
    /// Its process is gone (SIGKILLed, crashed, machine restarted), or it never wrote its pid
    /// file: nothing will write `exit.json`.
    Gone,
}

/// Reads the supervisor's pid file and `/proc` to tell whether it is still alive.
pub(crate) fn supervisor_liveness(dir: &Path) -> Liveness {
    match read_pid_file(dir) {
        Some(p) if pid_alive(&p) => Liveness::Alive,
        Some(_) => Liveness::Gone,
        None => {
            let age = std::fs::metadata(dir.join("job.json"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age < SUPERVISOR_START_GRACE {
                Liveness::Starting
            } else {
                Liveness::Gone
            }
        }
    }
}

/// Local compute.
pub struct LocalCompute {
    cfg: LocalComputeConfig,
    bus: Bus,
    watcher: Arc<DirWatcher>,
    tailing: Arc<Mutex<HashSet<String>>>,
}

fn unavailable(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Unavailable(e.to_string())
}

/// An execution's dir: walkable but not listable by others (the sandbox uid must reach its
/// workspace), with a workspace only its owner may enter.
fn create_execution_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for (d, mode) in [(dir.to_path_buf(), 0o711), (dir.join("workspace"), 0o700)] {
        match std::fs::DirBuilder::new().mode(mode).create(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Writes a file atomically (temp + rename) with the given mode, synced before it becomes
/// visible: for what must survive a host crash (how a run ended).
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_replace(path, data, mode, true)
}

/// Writes a file atomically (temp + rename) with the given mode, without syncing it: for the
/// job, pid and marker files of a run, which mean nothing after a host crash (the run's
/// processes are gone with it). Each sync here used to cost a launch a journal commit.
pub(crate) fn write_transient(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_replace(path, data, mode, false)
}

fn write_replace(path: &Path, data: &[u8], mode: u32, sync: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

impl LocalCompute {
    /// A local compute publishing on `bus`.
    pub fn new(cfg: LocalComputeConfig, bus: Bus) -> std::io::Result<LocalCompute> {
        std::fs::create_dir_all(&cfg.executions_dir)?;
        // SAFETY: plain syscall.
        if cfg.isolation == Isolation::Bwrap && unsafe { libc::geteuid() } == 0 {
            // bubblewrap resolves the workspace and /etc sources as the sandbox uid: it must be
            // able to walk (not list) the way there. Every file on the way stays private.
            use std::os::unix::fs::PermissionsExt;
            for d in [
                Some(cfg.executions_dir.as_path()),
                cfg.executions_dir.parent(),
            ]
            .into_iter()
            .flatten()
            {
                let mode = std::fs::metadata(d)?.permissions().mode() & 0o777;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711))?;
            }
        }
        match cfg.isolation {
            Isolation::Bwrap => tracing::info!(
                "local compute runs each command in a bubblewrap sandbox (user, pid, ipc, uts, \
                 net namespaces; seccomp; own uid; read-only /usr)"
            ),
            Isolation::Process => tracing::warn!(
                "ISOLATION DISABLED: commands run as runvoyd's own user with access to its data \
                 dir and keys; use only on a single-user machine"
            ),
        }
        if cfg.isolation == Isolation::Bwrap {
            crate::sandbox::write_assets(&cfg.executions_dir.join(".sandbox"))?;
        }
        Ok(LocalCompute {
            cfg,
            bus,
            watcher: Arc::new(DirWatcher::new()),
            tailing: Arc::default(),
        })
    }

    /// Runs `exit 0` through the whole isolation path (supervisor, sidecar, runner, sandbox) and
    /// says why it failed, so runvoyd refuses to start rather than run commands unprotected.
    pub fn probe(&self) -> Result<(), String> {
        let id = format!("probe-{}", std::process::id());
        let dir = self.cfg.executions_dir.join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        let res = self.probe_in(&id, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        res
    }

    fn probe_in(&self, id: &str, dir: &Path) -> Result<(), String> {
        let err = |e: std::io::Error| e.to_string();
        create_execution_dir(dir).map_err(err)?;
        let job = self.job_file(&JobSpec {
            execution_id: id.to_owned(),
            command: "exit 0".into(),
            argv: None,
            stdin: None,
            image: String::new(),
            image_settings: None,
            env: Default::default(),
            timeout_secs: Some(30),
            kill_grace_secs: 1,
            banner: Vec::new(),
            max_output_bytes: 0,
            max_output_lines: 0,
            resources: Default::default(),
            secrets: Vec::new(),
            secrets_fetch: None,
            git: None,
        });
        write_transient(&dir.join("env.json"), b"{}", 0o600).map_err(err)?;
        let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        write_transient(&dir.join("job.json"), &body, 0o600).map_err(err)?;
        let (prog, args) = self
            .cfg
            .supervisor_cmd
            .split_first()
            .ok_or("no supervisor command configured")?;
        let out = std::process::Command::new(prog)
            .args(args)
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("starting the supervisor: {e}"))?;
        let raw = std::fs::read(dir.join("records.jsonl")).unwrap_or_default();
        let mut lines = Vec::new();
        let exit = crate::records::parse_records(&raw, 0, &mut lines);
        if exit
            .as_ref()
            .is_some_and(|x| x.exit_code == 0 && x.error.is_none())
        {
            return Ok(());
        }
        // The sandbox's own complaints (bubblewrap's) arrive as the command's stderr.
        let said: Vec<String> = lines
            .iter()
            .filter(|l| l.stream == runvoy_domain::Stream::Stderr)
            .map(|l| String::from_utf8_lossy(&l.data).into_owned())
            .collect();
        let tail = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_default()
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_owned()
        };
        let reason = [
            exit.and_then(|x| x.error).unwrap_or_default(),
            said.join("; "),
            tail("runner.log"),
            tail("sidecar.log"),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
        Err(if reason.is_empty() {
            format!(
                "the sandboxed test command did not succeed ({})",
                out.status
            )
        } else {
            reason
        })
    }

    /// What the supervisor of `spec` reads: the run's own settings and this compute's.
    fn job_file(&self, spec: &JobSpec) -> JobFile {
        JobFile {
            execution_id: spec.execution_id.clone(),
            command: spec.command.clone(),
            argv: spec.argv.clone(),
            stdin: spec.stdin.is_some(),
            image: spec.image.clone(),
            timeout_secs: spec.timeout_secs,
            kill_grace_secs: spec.kill_grace_secs,
            banner: spec.banner.clone(),
            max_output_bytes: spec.max_output_bytes,
            max_output_lines: spec.max_output_lines,
            isolation: self.cfg.isolation,
            share_net: self.cfg.share_net,
            runner_bin: self.cfg.runner_bin.clone(),
            sidecar_bin: self.cfg.sidecar_bin.clone(),
            limits: self.cfg.limits.with(&spec.resources),
            sandbox_uid_base: self.cfg.sandbox_uid_base,
            bwrap_bin: self.cfg.bwrap_bin.clone(),
            sandbox_assets: self.assets(),
            secrets: spec.secrets_fetch.is_some(),
            secret_keys: spec.secrets.iter().map(|r| r.key_name.clone()).collect(),
            sidecar_env: spec
                .sidecar_settings()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            checkout_dir: spec.git.as_ref().map(|g| g.command_dir()),
        }
    }

    /// Where the files every sandbox shares live (see `sandbox::write_assets`).
    fn assets(&self) -> PathBuf {
        self.cfg.executions_dir.join(".sandbox")
    }

    fn dir(&self, id: &str) -> Result<PathBuf, ComputeError> {
        if !valid_execution_id(id) {
            return Err(ComputeError::Rejected(format!(
                "invalid execution id {id:?}"
            )));
        }
        Ok(self.cfg.executions_dir.join(id))
    }

    /// Starts tailing an execution's record file (idempotent), publishing records after
    /// `after_seq`. Used at start and to re-attach after a restart.
    pub fn watch(&self, id: &str, after_seq: u64) {
        let Ok(dir) = self.dir(id) else { return };
        if !dir.exists() || !self.tailing.lock().expect("tailing").insert(id.to_owned()) {
            return;
        }
        let (bus, watcher, tailing, id) = (
            self.bus.clone(),
            self.watcher.clone(),
            self.tailing.clone(),
            id.to_owned(),
        );
        tokio::spawn(async move {
            crate::tail::tail(id.clone(), dir, after_seq, bus, watcher).await;
            tailing.lock().expect("tailing").remove(&id);
        });
    }
}

#[async_trait]
impl Compute for LocalCompute {
    fn platform(&self) -> &str {
        "local"
    }

    /// Commands run with this machine's own programs, whatever image a run names.
    fn runs_images(&self) -> bool {
        false
    }

    /// The sidecar runs on this machine, outside the sandbox, and reaches runvoyd's listener.
    fn delivers_secrets(&self) -> bool {
        true
    }

    async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        let dir = self.dir(&spec.execution_id)?;
        if dir.join("job.json").exists() {
            return Ok(()); // already started: start is idempotent
        }
        create_execution_dir(&dir).map_err(unavailable)?;
        let job = self.job_file(spec);
        // Environment values go only into a 0600 file the sidecar consumes and deletes.
        let env = serde_json::to_vec(&spec.env).map_err(unavailable)?;
        write_transient(&dir.join("env.json"), &env, 0o600).map_err(unavailable)?;
        if let Some(fetch) = &spec.secrets_fetch {
            // The fetch token, like the environment: 0600, outside the sandbox's reach, read
            // and deleted by the sidecar.
            let f = serde_json::to_vec(fetch).map_err(unavailable)?;
            write_transient(&dir.join(SECRETS_FILE), &f, 0o600).map_err(unavailable)?;
        }
        if let Some(stdin) = &spec.stdin {
            // Standard input is treated like the environment: 0600, moved into the workspace
            // by the sidecar and unlinked by the runner once open.
            write_transient(&dir.join(STDIN_FILE), stdin, 0o600).map_err(unavailable)?;
        }
        write_transient(
            &dir.join("job.json"),
            &serde_json::to_vec_pretty(&job).map_err(unavailable)?,
            0o600,
        )
        .map_err(unavailable)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("supervisor.log"))
            .map_err(unavailable)?;
        let (prog, args) = self
            .cfg
            .supervisor_cmd
            .split_first()
            .ok_or_else(|| unavailable("no supervisor command configured"))?;
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args)
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(unavailable)?)
            .stderr(log);
        // A process group of its own: stopping runvoyd (even with SIGKILL or a Ctrl-C sent to
        // its group) leaves the execution running. Without a pre_exec hook the standard library
        // spawns with posix_spawn (vfork) instead of copying runvoyd's whole address space.
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| unavailable(format!("spawning supervisor: {e}")))?;
        // Reap it when it ends so no zombie lingers while runvoyd runs.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        self.watch(&spec.execution_id, 0);
        Ok(())
    }

    async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
        let dir = self.dir(id)?;
        if !dir.join("job.json").exists() {
            return Ok(ComputeState::NotFound);
        }
        let exited = |dir: &Path| -> Option<ComputeExit> {
            let raw = std::fs::read(dir.join("exit.json")).ok()?;
            let x: ExitFile = serde_json::from_slice(&raw).ok()?;
            Some(ComputeExit {
                runner: read_exit_record(&dir.join("records.jsonl")),
                process_exit_code: x.runner_exit_code,
                failure: x.failure,
            })
        };
        if let Some(x) = exited(&dir) {
            return Ok(ComputeState::Exited(x));
        }
        match supervisor_liveness(&dir) {
            Liveness::Alive => Ok(if dir.join("running").exists() {
                ComputeState::Running
            } else {
                ComputeState::Pending
            }),
            Liveness::Starting => Ok(ComputeState::Pending),
            Liveness::Gone => {
                // Re-check: it may have finished between the two reads.
                if let Some(x) = exited(&dir) {
                    return Ok(ComputeState::Exited(x));
                }
                Ok(ComputeState::Exited(ComputeExit {
                    runner: read_exit_record(&dir.join("records.jsonl")),
                    process_exit_code: None,
                    failure: Some(SUPERVISOR_VANISHED.into()),
                }))
            }
        }
    }

    async fn kill(&self, id: &str) -> Result<(), ComputeError> {
        let dir = self.dir(id)?;
        if let Some(p) = read_pid_file(&dir)
            && pid_alive(&p)
        {
            // SAFETY: plain signal to a verified live pid (start time checked).
            unsafe { libc::kill(p.pid, libc::SIGTERM) };
        }
        Ok(())
    }

    async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
        let dir = self.dir(id)?;
        if !dir.exists() || self.tailing.lock().expect("tailing").contains(id) {
            return Ok(false);
        }
        if read_pid_file(&dir).is_some_and(|p| pid_alive(&p)) {
            // Never pull a workspace from under a live supervisor.
            return Ok(false);
        }
        let d = dir.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(d))
            .await
            .map_err(unavailable)?
            .map_err(|e| unavailable(format!("removing {}: {e}", dir.display())))?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<String>, ComputeError> {
        let rd = std::fs::read_dir(&self.cfg.executions_dir).map_err(unavailable)?;
        Ok(rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| valid_execution_id(id))
            .collect())
    }
}
