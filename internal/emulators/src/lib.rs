//! Google's Cloud SDK emulators for tests.
//!
//! [`Emulator::firestore`] and [`Emulator::pubsub`] start the Firestore and Pub/Sub emulators that
//! ship with the Cloud SDK on a free loopback port, in a process group of its own, and wait until
//! they answer. Dropping the
//! [`Emulator`] (also while unwinding from a panic) kills the whole group: the launcher script
//! and the JVM it starts.
//!
//! A missing emulator is an error, never a reason to skip: CI installs the Cloud SDK and relies
//! on these tests running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the JVM may take to answer (it takes a few seconds on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an emulator could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The Cloud SDK or the emulator in it was not found.
    #[error("emulator missing: {0}")]
    Missing(String),
    /// It was found but did not start or answer.
    #[error("emulator failed: {0}")]
    Failed(String),
}

/// The Cloud SDK's root directory: `$RUNVOY_CLOUD_SDK_ROOT` when set, else what `gcloud info` says.
pub fn sdk_root() -> Result<PathBuf, EmulatorError> {
    if let Some(d) = std::env::var_os("RUNVOY_CLOUD_SDK_ROOT") {
        return Ok(PathBuf::from(d));
    }
    let out = Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| EmulatorError::Missing(format!("cannot run gcloud: {e}")))?;
    let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || root.is_empty() {
        return Err(EmulatorError::Missing(
            "`gcloud info` did not name the Cloud SDK root".into(),
        ));
    }
    Ok(PathBuf::from(root))
}

/// The Firestore emulator launcher inside the Cloud SDK.
pub fn firestore_binary() -> Result<PathBuf, EmulatorError> {
    let p = sdk_root()?.join("platform/cloud-firestore-emulator/cloud_firestore_emulator");
    if !p.exists() {
        return Err(EmulatorError::Missing(format!(
            "{} does not exist (install the Cloud SDK's cloud-firestore-emulator component)",
            p.display()
        )));
    }
    Ok(p)
}

/// The Pub/Sub emulator launcher inside the Cloud SDK.
pub fn pubsub_binary() -> Result<PathBuf, EmulatorError> {
    let p = sdk_root()?.join("platform/pubsub-emulator/bin/cloud-pubsub-emulator");
    if !p.exists() {
        return Err(EmulatorError::Missing(format!(
            "{} does not exist (install the Cloud SDK's pubsub-emulator component)",
            p.display()
        )));
    }
    Ok(p)
}

/// A free loopback port (bound then released; the emulator binds it right after).
pub fn free_port() -> Result<u16, EmulatorError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EmulatorError::Failed(format!("no free port: {e}")))
}

/// A running emulator; dropping it kills its process group.
pub struct Emulator {
    /// `127.0.0.1:PORT`, as `FIRESTORE_EMULATOR_HOST` / `PUBSUB_EMULATOR_HOST` name it.
    pub host: String,
    child: Child,
    /// Closing it makes the group's leader kill the group.
    _stdin: Option<std::process::ChildStdin>,
    log: PathBuf,
}

impl Emulator {
    /// Starts the Firestore emulator (native mode) on a free loopback port and waits until it
    /// answers HTTP. Its output goes to a file in the temp dir, named in errors.
    pub fn firestore() -> Result<Emulator, EmulatorError> {
        let bin = firestore_binary()?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("runvoy-firestore-emulator-{port}.log"));
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        Self::spawn(cmd, host, log)
    }

    /// Starts the Pub/Sub emulator on a free loopback port and waits until it answers HTTP (its
    /// REST API, push subscriptions included, is on the same port).
    pub fn pubsub() -> Result<Emulator, EmulatorError> {
        let bin = pubsub_binary()?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("runvoy-pubsub-emulator-{port}.log"));
        let mut cmd = Command::new(&bin);
        cmd.args(["--host=127.0.0.1", &format!("--port={port}")]);
        Self::spawn(cmd, host, log)
    }

    fn spawn(cmd: Command, host: String, log: PathBuf) -> Result<Emulator, EmulatorError> {
        let out = std::fs::File::create(&log)
            .map_err(|e| EmulatorError::Failed(format!("{}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| EmulatorError::Failed(e.to_string()))?;
        // The launcher is a script that starts a JVM without `exec`, so killing one pid is not
        // enough. A shell leads a process group of its own holding both, and kills that group
        // once its stdin (a pipe from this process) closes: when the guard drops, and also when
        // this process dies without unwinding.
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg("\"$@\" </dev/null & read -r _; kill -KILL 0")
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut child = wrapped
            .spawn()
            .map_err(|e| EmulatorError::Failed(format!("cannot start the emulator: {e}")))?;
        let stdin = child.stdin.take();
        let mut emu = Emulator {
            host,
            child,
            _stdin: stdin,
            log,
        };
        emu.wait_ready()?;
        Ok(emu)
    }

    fn wait_ready(&mut self) -> Result<(), EmulatorError> {
        let addr: SocketAddr = self
            .host
            .parse()
            .map_err(|e| EmulatorError::Failed(format!("{}: {e}", self.host)))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EmulatorError::Failed(format!(
                    "it exited ({status}) before answering; its output: {}",
                    self.output_tail()
                )));
            }
            if answers(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmulatorError::Failed(format!(
                    "no answer on {} within {START_TIMEOUT:?}; its output: {}",
                    self.host,
                    self.output_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The file holding the emulator's output.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn output_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        s[s.floor_char_boundary(start)..].to_owned()
    }
}

/// The Firestore emulator shared by every test of this process, started on first use: one JVM
/// start per test binary rather than per test. Tests keep apart by collection prefix. It is
/// killed when the process exits. Panics when it cannot start: a missing emulator fails tests.
pub fn shared_firestore() -> &'static Emulator {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    EMU.get_or_init(|| Emulator::firestore().unwrap_or_else(|e| panic!("{e}")))
}

/// The Pub/Sub emulator shared by every test of this process (see [`shared_firestore`]).
pub fn shared_pubsub() -> &'static Emulator {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    EMU.get_or_init(|| Emulator::pubsub().unwrap_or_else(|e| panic!("{e}")))
}

/// True when an HTTP GET of `/` gets any HTTP answer (the emulator says "Ok" there).
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && buf.starts_with(b"HTTP/"))
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: signals the group this struct created; a group already gone only fails.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firestore_emulator_starts_answers_and_dies_with_its_group() {
        let emu = Emulator::firestore().expect("the Firestore emulator must be installed");
        let addr: SocketAddr = emu.host.parse().expect("addr");
        assert!(answers(addr));
        let pgid = emu.child.id() as libc::pid_t;
        drop(emu);
        // The JVM is a grandchild: killed at once, but reaped by init a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks whether any process of the group exists.
        while unsafe { libc::killpg(pgid, 0) } == 0 {
            assert!(
                Instant::now() < deadline,
                "a process of the emulator's group survived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!answers(addr), "the emulator still answers after drop");
    }

    #[test]
    fn pubsub_emulator_starts_and_answers() {
        let emu = Emulator::pubsub().expect("the Pub/Sub emulator must be installed");
        assert!(answers(emu.host.parse().expect("addr")));
    }
}
