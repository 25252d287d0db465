//! The detached per-execution supervisor (`runvoyd supervise DIR`): runs the sidecar step, then the
//! runner step, isolated, and records how the execution ended in `exit.json`.
//!
//! It plays the part a container runtime plays on Cloud Run: it outlives runvoyd, keeps the
//! runner's stdout in an append-only file, and turns a kill (SIGTERM to the supervisor) into a
//! SIGTERM to the runner, which stops the command's process group and writes its final record.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::compute::{Isolation, JobFile, write_atomic, write_transient};
use crate::sandbox::{self, Cgroups};
use runvoy_proto::record::env;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `exit.json`: how the execution ended, as the supervisor saw it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ExitFile {
    /// Exit code of the runner process (128 + signal when killed by one).
    pub runner_exit_code: Option<i32>,
    /// Exit code of the sidecar.
    pub sidecar_exit_code: Option<i32>,
    /// Why it failed outside the command.
    pub failure: Option<String>,
    /// A stop was requested.
    pub stopped: bool,
}

/// Pid and start time of a supervisor (the start time guards against pid reuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start: u64,
}

fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(1)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// Reads `supervisor.pid` in `dir`.
pub fn read_pid_file(dir: &Path) -> Option<PidFile> {
    let s = std::fs::read_to_string(dir.join("supervisor.pid")).ok()?;
    let mut it = s.split_whitespace();
    Some(PidFile {
        pid: it.next()?.parse().ok()?,
        start: it.next()?.parse().ok()?,
    })
}

/// True when the process is alive, not a zombie, and is the same process (same start time).
pub fn pid_alive(p: &PidFile) -> bool {
    matches!(proc_stat(p.pid), Some((state, _, start)) if state != 'Z' && start == p.start)
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn log(msg: &str) {
    // Not eprintln!, which panics when the write fails (a full disk under supervisor.log).
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "runvoy-supervisor: {msg}");
}

/// Entry point of `runvoyd supervise DIR`. Returns the process exit code.
pub fn run(dir: &Path) -> i32 {
    let mut leftover = None;
    let code = match supervise(dir, &mut leftover) {
        Ok(x) => {
            let code = x.runner_exit_code.unwrap_or(1);
            finish(dir, &x);
            code
        }
        Err(e) => {
            log(&format!("failed: {e}"));
            finish(
                dir,
                &ExitFile {
                    failure: Some(format!("supervisor failed: {e}")),
                    ..Default::default()
                },
            );
            1
        }
    };
    // After exit.json: removing the cgroups is housekeeping, not part of how the run ended, and
    // whoever waits for the result should not wait for it.
    if let Some((cgroups, id)) = leftover {
        cgroups.remove(&id);
    }
    code
}

/// How long to keep retrying `exit.json` when the disk is full: without it the execution would
/// look like its supervisor vanished, losing the exit code.
const EXIT_FILE_RETRY_FOR: Duration = Duration::from_secs(600);

fn finish(dir: &Path, x: &ExitFile) {
    let data = serde_json::to_vec(x).unwrap_or_default();
    let until = Instant::now() + EXIT_FILE_RETRY_FOR;
    let mut warned = false;
    loop {
        match write_atomic(&dir.join("exit.json"), &data, 0o600) {
            Ok(()) => return,
            Err(e) if is_out_of_space(&e) && Instant::now() < until => {
                if !warned {
                    log(&format!("cannot write exit.json: {e}; retrying"));
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                log(&format!("cannot write exit.json: {e}"));
                return;
            }
        }
    }
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Runs both steps; the execution's cgroups, once created, are left in `leftover` for the
/// caller to remove after the result is written.
fn supervise(dir: &Path, leftover: &mut Option<(Cgroups, String)>) -> std::io::Result<ExitFile> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let job: JobFile = serde_json::from_slice(&std::fs::read(dir.join("job.json"))?)
        .map_err(std::io::Error::other)?;
    let sandboxed = job.isolation == Isolation::Bwrap;
    let cgroups = if sandboxed { Cgroups::detect() } else { None };
    if let Some(c) = cgroups.clone() {
        std::thread::spawn(move || c.warm_migration());
    }
    let pid = std::process::id() as i32;
    let start = proc_stat(pid).map(|s| s.2).unwrap_or(0);
    write_transient(
        &dir.join("supervisor.pid"),
        format!("{pid} {start}\n").as_bytes(),
        0o600,
    )?;

    let ws = dir.join("workspace");
    let grace = Duration::from_secs(job.kill_grace_secs);
    // SAFETY: plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    let uid =
        (sandboxed && root).then(|| sandbox::sandbox_uid(job.sandbox_uid_base, &job.execution_id));
    if sandboxed
        && root
        && let Some(bytes) = job.limits.workspace_bytes
    {
        sandbox::private_workspace(&ws, bytes, uid)?;
    }

    // Step 1: the sidecar prepares the workspace.
    let side_log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join("sidecar.log"))?;
    let mut sidecar = Command::new(&job.sidecar_bin)
        .arg("--workspace")
        .arg(&ws)
        .arg("--env-json")
        .arg(dir.join("env.json"))
        .args(
            job.stdin
                .then(|| ["--stdin-file".into(), dir.join(crate::compute::STDIN_FILE)])
                .into_iter()
                .flatten(),
        )
        .args(
            job.secrets
                .then(|| {
                    [
                        "--secrets-json".into(),
                        dir.join(crate::compute::SECRETS_FILE),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        // Only what the sidecar needs: runvoyd's own environment (a token of the operator's,
        // say) must not reach a clone of a repository the run names.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        // Except the CA certificates runvoyd is told to trust (an internal git server's).
        .envs(
            ["SSL_CERT_FILE", "SSL_CERT_DIR"]
                .into_iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .envs(job.sidecar_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(side_log.try_clone()?)
        .stderr(side_log)
        .spawn()?;
    let code = wait(&mut sidecar, grace, |c| {
        signal(c.id() as i32, libc::SIGTERM);
        true
    });
    let mut x = ExitFile {
        sidecar_exit_code: Some(code),
        ..Default::default()
    };
    if STOP.load(Ordering::SeqCst) {
        x.stopped = true;
        x.failure = Some("stopped before the command started".into());
        return Ok(x);
    }
    if code != 0 {
        let tail = std::fs::read_to_string(dir.join("sidecar.log")).unwrap_or_default();
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_owned();
        x.failure = Some(format!("sidecar failed (exit {code}): {last}"));
        return Ok(x);
    }

    // Step 2: the runner runs the command; its stdout is the record file.
    let mut sandbox_file = None;
    if sandboxed {
        if let Some(uid) = uid {
            sandbox::chown_workspace(&ws, uid)?;
        }
        let cgroup_procs = match &cgroups {
            Some(c) => {
                let procs = c.create(&job.execution_id, &job.limits)?;
                *leftover = Some((c.clone(), job.execution_id.clone()));
                procs
            }
            None => Vec::new(),
        };
        let spec = sandbox::build_spec(&sandbox::Plan {
            bwrap: &job.bwrap_bin,
            assets: &job.sandbox_assets,
            workspace: &ws,
            share_net: job.share_net,
            limits: job.limits,
            uid,
            cgroup_procs,
            memory_cgroup: cgroups.as_ref().is_some_and(|c| c.has("memory")),
        })?;
        let f = dir.join("sandbox.json");
        // Read once by the runner right after: no fsync needed.
        std::io::Write::write_all(
            &mut OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&f)?,
            &serde_json::to_vec(&spec).map_err(std::io::Error::other)?,
        )?;
        sandbox_file = Some(f);
    }
    let records = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join("records.jsonl"))?;
    let runner_log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join("runner.log"))?;
    let mut cmd = runner_command(&job, &ws, sandbox_file.as_deref());
    cmd.stdin(Stdio::null()).stdout(records).stderr(runner_log);
    write_transient(&dir.join("running"), b"", 0o600)?;
    let mut runner = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            x.failure = Some(format!("could not start the runner: {e}"));
            return Ok(x);
        }
    };
    // The runner is always the supervisor's own child, outside any sandbox: it turns the
    // SIGTERM into a graceful stop of the command.
    let code = wait(&mut runner, grace, |c| {
        signal(c.id() as i32, libc::SIGTERM);
        true
    });
    x.runner_exit_code = Some(code);
    x.stopped = STOP.load(Ordering::SeqCst);
    if let Some(c) = &cgroups
        && c.oom_killed(&job.execution_id)
    {
        x.failure = Some(match job.limits.memory_bytes {
            Some(m) => format!(
                "out of memory: the command reached its memory limit of {} MiB and was killed",
                m >> 20
            ),
            None => "out of memory: the command was killed".into(),
        });
    }
    Ok(x)
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: sending a signal to a child or descendant we just looked up.
    unsafe { libc::kill(pid, sig) };
}

/// Waits for `child`; on a stop request calls `stop` until it reports that it signalled the
/// target, then SIGKILLs after the grace period plus a margin for the runner to write its final
/// record.
fn wait(child: &mut Child, grace: Duration, stop: impl Fn(&Child) -> bool) -> i32 {
    // A pidfd turns readable the moment the child exits, so the exit is seen at once instead of
    // at the next tick of a poll loop (each step of a launch used to lose half a tick on
    // average). The timeout only bounds how late a stop request is noticed.
    let pidfd = ChildFd::open(child.id());
    let mut stop_at: Option<Instant> = None;
    let mut signalled = false;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return exit_code(st),
            Ok(None) => {}
            Err(_) => return 1,
        }
        if STOP.load(Ordering::SeqCst) {
            if !signalled {
                signalled = stop(child);
            }
            match stop_at {
                None => stop_at = Some(Instant::now()),
                Some(t) if t.elapsed() > grace + Duration::from_secs(5) => {
                    let _ = child.kill();
                }
                _ => {}
            }
        }
        match &pidfd {
            Some(fd) => fd.wait_readable(Duration::from_millis(50)),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A pidfd of a child (Linux 5.3+); `None` on older kernels, where [`wait`] polls.
struct ChildFd(std::os::fd::OwnedFd);

impl ChildFd {
    fn open(pid: u32) -> Option<ChildFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; a non-negative result is a new fd we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        (fd >= 0).then(|| {
            // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
            ChildFd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
        })
    }

    /// Returns when the child has exited, a signal arrived (a stop request), or `timeout` passed.
    fn wait_readable(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    }
}

fn runner_command(job: &JobFile, ws: &Path, sandbox_spec: Option<&Path>) -> Command {
    let mut envs: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        (env::EXECUTION_ID.into(), job.execution_id.clone()),
        (env::KILL_GRACE.into(), job.kill_grace_secs.to_string()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    match &job.argv {
        Some(argv) => envs.push((
            env::ARGV.into(),
            serde_json::to_string(argv).unwrap_or_default(),
        )),
        None => envs.push((env::COMMAND.into(), job.command.clone())),
    }
    if !job.secret_keys.is_empty() {
        envs.push((env::SECRET_KEYS.into(), job.secret_keys.join(",")));
    }
    if let Some(dir) = &job.checkout_dir {
        envs.push((runvoy_proto::git::env::CHECKOUT_DIR.into(), dir.clone()));
    }
    if job.stdin {
        // Relative to the runner's working directory, the workspace, in every isolation mode.
        envs.push((env::STDIN_FILE.into(), ".runvoy/stdin".into()));
    }
    if let Some(t) = job.timeout_secs {
        envs.push((env::TIMEOUT.into(), t.to_string()));
    }
    if !job.banner.is_empty() {
        envs.push((env::BANNER.into(), job.banner.join("\n")));
    }
    for (name, limit) in [
        (env::MAX_OUTPUT_BYTES, job.max_output_bytes),
        (env::MAX_OUTPUT_LINES, job.max_output_lines),
    ] {
        if limit > 0 {
            envs.push((name.into(), limit.to_string()));
        }
    }
    let mut c = match sandbox_spec {
        // The runner runs from its installed path, outside the sandbox; the command sees the
        // workspace at /workspace.
        Some(spec) => {
            let mut c = Command::new(&job.runner_bin);
            c.env_clear()
                .envs(envs)
                .env("HOME", "/workspace")
                .env(env::ENV_FILE, ws.join(".env"))
                .env(env::WORKDIR, "/workspace")
                .env(runvoy_proto::sandbox::SANDBOX_ENV, spec)
                .current_dir(ws);
            c
        }
        // Also from its installed path: no copy of the runner per workspace.
        None => {
            let mut c = Command::new(&job.runner_bin);
            c.env_clear()
                .envs(envs)
                .env("HOME", ws)
                .env(env::ENV_FILE, ws.join(".env"));
            c.env(env::WORKDIR, ws).current_dir(ws);
            c
        }
    };
    // A runner whose supervisor is killed would leave the command running unseen: ask the
    // kernel for a SIGTERM when the supervisor dies, which the runner turns into a stop of the
    // command (and bubblewrap's --die-with-parent ends the sandbox if the runner dies).
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    c
}
