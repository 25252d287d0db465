//! `runvoy-runner`: the entrypoint of a runner container.
//!
//! Runs `/bin/sh -c "$RUNVOY_COMMAND"` (or the exact argv of `$RUNVOY_ARGV`) in its own process
//! group and writes every line of the command's stdout and stderr to its own stdout as a
//! sequence-numbered JSON record
//! ([`runvoy_proto::record`]), then one exit record. It enforces the timeout, forwards
//! SIGTERM/SIGINT to the command, and reaps zombies so it can run as pid 1.

use runvoy_runner::{checkout, config, redact, sandbox, sink, split};

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use runvoy_proto::record::Stream;

use config::Config;
use sandbox::Sandbox;
use sink::{FdWriter, Sink};
use split::LineSplitter;

/// Exit code for the runner's own failures (bad configuration, unwritable stdout).
const EXIT_RUNNER_ERROR: i32 = 125;
/// Exit code when the command could not be started.
const EXIT_CANNOT_RUN: i32 = 127;
/// How long to keep reading after the command exited while something else holds its pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long to wait for end-of-file after killing the leftovers of the process group.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
/// How long to keep trying to write the final record while the disk is full.
const FINAL_RECORD_RETRY_FOR: Duration = Duration::from_secs(600);
/// Upper bound on one wait, so a missed wake-up only delays, never hangs.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Readers raise this to wake the supervisor; it is blocked everywhere, so it is only queued.
const WAKE_SIGNAL: libc::c_int = libc::SIGUSR1;
/// Set when the command runs in a sandbox: its process group is then not the launcher's.
static SANDBOXED: AtomicBool = AtomicBool::new(false);

/// State shared by the supervisor and the two pipe readers.
struct Shared {
    sink: Mutex<Sink<FdWriter>>,
    readers_done: AtomicUsize,
    write_failed: AtomicBool,
}

impl Shared {
    fn sink(&self) -> MutexGuard<'_, Sink<FdWriter>> {
        // A panicking reader must not prevent the exit record from being written.
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn main() {
    // Block the signals we handle before any thread or child exists: every thread inherits the
    // mask, so they stay pending until the supervisor collects them with sigtimedwait. (The child
    // gets a clean mask: std resets it before exec.)
    let signals = SignalSet::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGCHLD, WAKE_SIGNAL]);
    signals.block();

    let config = match Config::parse(std::env::args_os().skip(1), |k| std::env::var_os(k)) {
        Ok(c) => c,
        Err(e) => {
            warn(&e);
            std::process::exit(EXIT_RUNNER_ERROR);
        }
    };
    let code = run(&config, &signals);
    std::process::exit(code);
}

/// Runs the command and returns the runner's exit code.
fn run(config: &Config, signals: &SignalSet) -> i32 {
    let shared = Arc::new(Shared {
        sink: Mutex::new(Sink::with_budget(
            config.exec.clone(),
            FdWriter(libc::STDOUT_FILENO),
            config.budget,
        )),
        readers_done: AtomicUsize::new(0),
        write_failed: AtomicBool::new(false),
    });

    {
        let mut sink = shared.sink();
        sink.stamp();
        let res = config
            .banner
            .iter()
            .try_for_each(|line| emit_line(&mut sink, Stream::System, line))
            .and_then(|_| sink.flush());
        if let Err(e) = res {
            return output_failed(&e);
        }
    }

    let report = checkout::read(&checkout::state_dir(config, config.sandbox.is_some()));
    {
        let mut sink = shared.sink();
        let mut lines = report.notes.clone();
        lines.extend(report.failed.iter().map(|f| f.clone().into_bytes()));
        let res = lines
            .iter()
            .try_for_each(|line| emit_line(&mut sink, Stream::System, line))
            .and_then(|_| sink.flush());
        if let Err(e) = res {
            return output_failed(&e);
        }
    }
    if let Some(reason) = report.failed {
        // The command never starts: its environment (it may hold secrets) is not needed.
        if let Some(path) = &config.env_file {
            let _ = std::fs::remove_file(path);
        }
        return finish(&shared, EXIT_RUNNER_ERROR, false, false, Some(reason));
    }

    let sandbox = match config.sandbox.as_deref().map(Sandbox::load).transpose() {
        Ok(s) => s,
        Err(msg) => return finish(&shared, EXIT_RUNNER_ERROR, false, false, Some(msg)),
    };
    SANDBOXED.store(sandbox.is_some(), Ordering::SeqCst);
    let vars = match load_env_file(config) {
        Ok(v) => v,
        Err(msg) => return finish(&shared, EXIT_CANNOT_RUN, false, false, Some(msg)),
    };
    if !config.secret_keys.is_empty() {
        // Set before the command starts, so no record of its output escapes unmasked.
        let values = vars
            .iter()
            .filter(|(k, _)| {
                config
                    .secret_keys
                    .iter()
                    .any(|s| k.as_bytes() == s.as_bytes())
            })
            .map(|(_, v)| v.as_bytes());
        shared.sink().set_redactor(redact::Redactor::new(values));
    }
    let spawned = spawn(config, sandbox.as_ref(), vars);
    // The launcher has inherited the sandbox's descriptors; the runner needs them no more.
    drop(sandbox);
    let mut child = match spawned {
        Ok(c) => c,
        Err(msg) => return finish(&shared, EXIT_CANNOT_RUN, false, false, Some(msg)),
    };
    let pgid = child.id() as libc::pid_t;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        kill_group(pgid, libc::SIGKILL);
        return finish(
            &shared,
            EXIT_CANNOT_RUN,
            false,
            false,
            Some("child pipes missing".into()),
        );
    };
    // `child` is reaped by our own waitpid loop, never through std.
    drop(child);
    for (reader, stream) in [
        (Box::new(out) as Box<dyn ReadFd>, Stream::Stdout),
        (Box::new(err), Stream::Stderr),
    ] {
        let shared = shared.clone();
        thread::spawn(move || pump(reader, stream, &shared));
    }

    let outcome = supervise(config, signals, &shared, pgid);
    match outcome {
        Outcome::Done {
            status,
            timed_out,
            killed,
        } => finish(&shared, exit_code(status), timed_out, killed, None),
        Outcome::OutputFailed => {
            kill_group(pgid, libc::SIGKILL);
            warn("writing records to stdout failed; command killed");
            EXIT_RUNNER_ERROR
        }
    }
}

/// Writes the exit record and returns the code the runner exits with. On a full disk it keeps
/// trying for [`FINAL_RECORD_RETRY_FOR`], so the exit code survives once space is freed.
fn finish(shared: &Shared, code: i32, timed_out: bool, killed: bool, error: Option<String>) -> i32 {
    let mut sink = shared.sink();
    if let Err(e) = sink.exit(code, timed_out, killed, error) {
        return output_failed(&e);
    }
    if !sink.pending() {
        return code;
    }
    warn("no space left for the final record; retrying");
    let until = Instant::now() + FINAL_RECORD_RETRY_FOR;
    while sink.pending() {
        if Instant::now() >= until {
            warn("gave up writing the final record: still no space left");
            return EXIT_RUNNER_ERROR;
        }
        thread::sleep(sink::RETRY_EVERY);
        if let Err(e) = sink.retry() {
            return output_failed(&e);
        }
    }
    code
}

fn output_failed(e: &io::Error) -> i32 {
    warn(&format!("writing records to stdout failed: {e}"));
    EXIT_RUNNER_ERROR
}

/// A line on stderr. Not eprintln!, which panics when the write fails (stderr is a file on the
/// same full disk as the records).
fn warn(msg: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "runvoy-runner: {msg}");
}

/// Starts the command (`/bin/sh -c LINE`, or an exact argv; through the sandbox's launcher
/// when there is one) as the leader of a new process group, its standard input the stdin file
/// when there is one.
/// Reads the `.env` file and deletes it at once: its values (secrets among them) then live
/// only in the runner's memory and the command's environment.
fn load_env_file(config: &Config) -> Result<Vec<(OsString, OsString)>, String> {
    let Some(path) = &config.env_file else {
        return Ok(Vec::new());
    };
    let data =
        std::fs::read(path).map_err(|e| format!("cannot read env file {}: {e}", path.display()))?;
    if let Err(e) = std::fs::remove_file(path) {
        warn(&format!("cannot remove {}: {e}", path.display()));
    }
    config::parse_env_file(&data).map_err(|e| format!("invalid env file {}: {e}", path.display()))
}

fn spawn(
    config: &Config,
    sandbox: Option<&Sandbox>,
    vars: Vec<(OsString, OsString)>,
) -> Result<std::process::Child, String> {
    let argv = config.command.argv();
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let stdin = match &config.stdin_file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| format!("cannot open stdin file {}: {e}", path.display()))?;
            // The open descriptor is all the command needs; no copy of the input stays behind.
            let _ = std::fs::remove_file(path);
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    let workdir = checkout::command_dir(config);
    let mut cmd = match sandbox {
        // The launcher's own --chdir is the work directory; a checkout moves it further in.
        Some(sb) => sb.command(
            program,
            args,
            config.checkout_dir.as_ref().and(workdir.as_deref()),
        ),
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    // What only the runner needs stays out of the command's environment.
    cmd.env_remove(runvoy_proto::sandbox::SANDBOX_ENV)
        .env_remove(runvoy_proto::record::env::ENV_FILE)
        .env_remove(runvoy_proto::record::env::STDIN_FILE);
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own group, so a stop reaches everything the command started.
        .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec. The runner blocks the signals
    // it waits for synchronously; the command must start with a clean mask and default
    // dispositions, or it could never react to (or trap) SIGTERM.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            for sig in [
                libc::SIGPIPE,
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGCHLD,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    // In a sandbox the launcher sets the working directory inside it.
    if let (Some(dir), None) = (&workdir, sandbox) {
        cmd.current_dir(dir);
    }
    cmd.envs(vars);
    let shown = String::from_utf8_lossy(program.as_bytes()).into_owned();
    cmd.spawn().map_err(|e| match &workdir {
        Some(dir) => format!(
            "cannot start {shown} in {}: {e}",
            String::from_utf8_lossy(dir.as_os_str().as_bytes())
        ),
        None => format!("cannot start {shown}: {e}"),
    })
}

/// A child pipe we can read and poll.
trait ReadFd: Read + AsRawFd + Send {}
impl<T: Read + AsRawFd + Send> ReadFd for T {}

/// Copies one pipe into records until end-of-file or an output error, then wakes the supervisor.
fn pump(mut src: Box<dyn ReadFd>, stream: Stream, shared: &Shared) {
    let mut splitter = LineSplitter::new();
    let fd = src.as_raw_fd();
    loop {
        let n = match src.read(splitter.spare()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn(&format!("reading {}: {e}", stream.as_str()));
                0
            }
        };
        splitter.filled(n);
        let eof = n == 0;
        // Flush whenever the pipe is momentarily empty: low latency for slow output, large
        // writes while output streams.
        let flush = eof || !readable_now(fd);
        let mut sink = shared.sink();
        if sink.is_closed() {
            return;
        }
        sink.stamp();
        let mut res = splitter.drain(eof, |line, eol| sink.log(stream, line, eol));
        if res.is_ok() && flush {
            res = sink.flush();
        }
        drop(sink);
        if res.is_err() {
            shared.write_failed.store(true, Ordering::SeqCst);
            wake_supervisor();
            return;
        }
        if eof {
            shared.readers_done.fetch_add(1, Ordering::SeqCst);
            wake_supervisor();
            return;
        }
    }
}

/// Emits one whole line (chunked when long) followed by a newline.
fn emit_line<W: io::Write>(sink: &mut Sink<W>, stream: Stream, line: &[u8]) -> io::Result<()> {
    split::emit_chunked(line, true, |b, eol| sink.log(stream, b, eol))
}

fn readable_now(fd: libc::c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

fn wake_supervisor() {
    // SAFETY: plain syscall; the signal is blocked in every thread, so it is only queued.
    unsafe {
        libc::kill(libc::getpid(), WAKE_SIGNAL);
    }
}

enum Outcome {
    Done {
        status: libc::c_int,
        timed_out: bool,
        killed: bool,
    },
    OutputFailed,
}

/// Waits for the command and its output, applying the timeout and stop signals.
fn supervise(config: &Config, signals: &SignalSet, shared: &Shared, pgid: libc::pid_t) -> Outcome {
    let started = Instant::now();
    let timeout_at = config.timeout.map(|t| started + t);
    let mut status: Option<libc::c_int> = None;
    let mut exited_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut killed = false;
    // Set once SIGTERM went to the group: when to escalate to SIGKILL.
    let mut escalate_at: Option<Instant> = None;
    let mut sigkill_sent = false;
    // Set once leftovers holding the pipes were killed: when to stop waiting for end-of-file.
    let mut abandon_at: Option<Instant> = None;

    loop {
        reap_all(pgid, &mut status);
        let now = Instant::now();
        if status.is_some() && exited_at.is_none() {
            exited_at = Some(now);
        }
        {
            // Records held back by a full disk are written as soon as there is room, even
            // while the command is quiet.
            let mut sink = shared.sink();
            if sink.is_blocked() && sink.flush().is_err() {
                shared.write_failed.store(true, Ordering::SeqCst);
            }
        }
        if shared.write_failed.load(Ordering::SeqCst) {
            return Outcome::OutputFailed;
        }
        if let Some(status) = status {
            let done = shared.readers_done.load(Ordering::SeqCst) == 2;
            if done || abandon_at.is_some_and(|t| now >= t) {
                return Outcome::Done {
                    status,
                    timed_out,
                    killed,
                };
            }
        }

        let mut deadlines: Vec<Instant> = Vec::with_capacity(2);
        if status.is_none() {
            if let Some(t) = timeout_at.filter(|_| escalate_at.is_none()) {
                if now >= t {
                    timed_out = true;
                    escalate_at = Some(stop_group(pgid, config.kill_grace));
                } else {
                    deadlines.push(t);
                }
            }
            if let Some(t) = escalate_at.filter(|_| !sigkill_sent) {
                if now >= t {
                    kill_group(pgid, libc::SIGKILL);
                    sigkill_sent = true;
                } else {
                    deadlines.push(t);
                }
            }
        } else if abandon_at.is_none() {
            // The command is gone but something it started may still hold the pipes.
            let t = exited_at.unwrap_or(now) + DRAIN_AFTER_EXIT;
            if now >= t {
                kill_group(pgid, libc::SIGKILL);
                abandon_at = Some(now + DRAIN_AFTER_KILL);
            } else {
                deadlines.push(t);
            }
        }
        if let Some(t) = abandon_at {
            deadlines.push(t);
        }

        let wait = deadlines
            .iter()
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        if let Some(libc::SIGTERM | libc::SIGINT) = signals.wait(wait) {
            if status.is_some() {
                // Already exited: only the pipe drain is left; cut it short.
                kill_group(pgid, libc::SIGKILL);
                abandon_at.get_or_insert(Instant::now() + DRAIN_AFTER_KILL);
            } else if escalate_at.is_none() {
                killed = true;
                escalate_at = Some(stop_group(pgid, config.kill_grace));
            } else if !sigkill_sent {
                // A second stop request does not wait for the grace period.
                kill_group(pgid, libc::SIGKILL);
                sigkill_sent = true;
            }
        }
    }
}

/// Sends SIGTERM to the command and returns when to follow up with SIGKILL.
fn stop_group(pgid: libc::pid_t, grace: Duration) -> Instant {
    if SANDBOXED.load(Ordering::SeqCst) {
        let groups = sandbox::command_groups(pgid);
        if groups.is_empty() {
            // The launcher has not started the command yet: nothing to be graceful with.
            kill_group(pgid, libc::SIGKILL);
            return Instant::now();
        }
        for g in groups {
            kill_group(g, libc::SIGTERM);
            kill_group(g, libc::SIGCONT);
        }
        return Instant::now() + grace;
    }
    kill_group(pgid, libc::SIGTERM);
    // A stopped process would not act on SIGTERM until continued.
    kill_group(pgid, libc::SIGCONT);
    Instant::now() + grace
}

fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall; ESRCH (group already gone) is fine.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// Reaps every terminated child (as pid 1 we inherit orphans), recording the command's status.
fn reap_all(child: libc::pid_t, status: &mut Option<libc::c_int>) {
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if pid == child {
            *status = Some(st);
        }
    }
}

/// The command's exit code; 128 + signal number when a signal ended it.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        EXIT_RUNNER_ERROR
    }
}

/// The signals the supervisor handles synchronously.
struct SignalSet(libc::sigset_t);

impl SignalSet {
    fn new(signals: &[libc::c_int]) -> Self {
        // SAFETY: sigemptyset initialises the set before use.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            SignalSet(set)
        }
    }

    fn block(&self) {
        // SAFETY: valid set; called before other threads exist.
        unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut());
        }
    }

    /// Waits up to `timeout` for one of the signals.
    fn wait(&self, timeout: Duration) -> Option<libc::c_int> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: valid set and timespec; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        // Encodings as returned by waitpid on Linux.
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(42 << 8), 42);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
    }

    #[test]
    fn banner_lines_are_whole_records() {
        let mut sink = Sink::new("e".into(), Vec::new());
        emit_line(&mut sink, Stream::System, b"hello").unwrap();
        emit_line(&mut sink, Stream::System, b"").unwrap();
        assert_eq!(sink.lines(), 2);
    }
}
