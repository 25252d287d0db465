//! `runvoy-sidecar`: prepares the shared workspace before `runvoy-runner` starts.
//!
//! Steps, in order: create the workspace, inject the runner binary, fetch the run's secrets
//! (with `--secrets-json`: a single-use token POSTed to runvoyd), clone the run's git
//! repository (`git.rs`; a `GITHUB_TOKEN` among the secrets or the run's environment
//! authenticates it), write the `.env` file, move
//! the command's standard input (if any) to `.runvoy/stdin`, then write `.runvoy/ready` last so the runner (or its launcher) can tell preparation finished.
//! With `--serve-ready ADDR` it then answers TCP connections on ADDR (a startup probe that
//! holds the runner container back on Cloud Run) and exits a few seconds after the first one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

mod git;

/// Directory under the workspace holding runvoy's own files.
const STATE_DIR: &str = ".runvoy";
/// Name of the injected runner binary inside [`STATE_DIR`].
const RUNNER_NAME: &str = "runvoy-runner";
/// Readiness marker inside [`STATE_DIR`], written last.
const READY_NAME: &str = "ready";
/// Name of the environment file in the workspace root.
const ENV_FILE_NAME: &str = ".env";
/// Name of the command's standard input inside [`STATE_DIR`].
const STDIN_NAME: &str = "stdin";

/// Prepares a runvoy workspace for the runner.
#[derive(Debug, Parser)]
#[command(name = "runvoy-sidecar", version, about)]
struct Args {
    /// Workspace directory shared with the runner container (created if missing).
    #[arg(long, env = "RUNVOY_WORKSPACE")]
    workspace: PathBuf,
    /// Path of the runvoy-runner binary to inject into the workspace (for a runner container
    /// that does not have it; left out where the runner runs from its installed path).
    #[arg(long, env = "RUNVOY_RUNNER_BINARY")]
    runner_binary: Option<PathBuf>,
    /// JSON object of environment variables for the command; deleted once written to `.env`.
    #[arg(long, env = "RUNVOY_ENV_JSON")]
    env_json: Option<PathBuf>,
    /// JSON `{"url","token"}`: where and with which single-use token to fetch the
    /// execution's secrets, which are written to `.env` with the environment. Deleted once
    /// read.
    #[arg(long, env = "RUNVOY_SECRETS_JSON")]
    secrets_json: Option<PathBuf>,
    /// The same fetch as two settings (for platforms that pass no files to the sidecar).
    #[arg(long, env = "RUNVOY_SECRETS_URL", requires = "secrets_token")]
    secrets_url: Option<String>,
    /// The fetch token that goes with `--secrets-url`.
    #[arg(long, env = "RUNVOY_SECRETS_TOKEN", hide_env_values = true)]
    secrets_token: Option<String>,
    /// File holding the command's standard input; moved to `.runvoy/stdin` (mode 0600).
    #[arg(long, env = "RUNVOY_STDIN_SOURCE")]
    stdin_file: Option<PathBuf>,
    /// File holding `UID:GID` of the user the runner container runs as (empty: root); the
    /// workspace is handed over to that user once prepared, so a non-root image can use it.
    #[arg(long, env = "RUNVOY_OWNER_FILE")]
    owner_file: Option<PathBuf>,
    /// Once ready, accept TCP connections on this address (a container platform's startup
    /// probe, which holds the runner back until it succeeds), then exit shortly after the
    /// first one.
    #[arg(long, env = "RUNVOY_SERVE_READY")]
    serve_ready: Option<std::net::SocketAddr>,
    /// The run's git checkout.
    #[command(flatten)]
    git: git::GitArgs,
}

/// Why preparation failed; decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The input is unusable (bad variable name or value): exit 2.
    Invalid(String),
    /// An I/O step failed: exit 1.
    Io(String),
}

impl Failure {
    fn io(what: impl std::fmt::Display, path: &Path, e: io::Error) -> Failure {
        Failure::Io(format!("{what} {}: {e}", path.display()))
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failure::Invalid(_) => 2,
            Failure::Io(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).and_then(|()| match args.serve_ready {
        Some(addr) => serve_ready(addr),
        None => Ok(()),
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let (Failure::Invalid(msg) | Failure::Io(msg)) = &f;
            warn(msg);
            ExitCode::from(f.exit_code())
        }
    }
}

fn progress(msg: &str) {
    println!("### runvoy sidecar: {msg}");
}

fn warn(msg: &str) {
    eprintln!("runvoy-sidecar: {msg}");
}

/// Runs every preparation step; the ready marker is only written when all succeeded.
fn run(args: &Args) -> Result<(), Failure> {
    // Validate the variables before touching the workspace, so bad input leaves no trace.
    let mut env = match &args.env_json {
        Some(path) => Some(load_env_json(path)?),
        None => None,
    };
    let owner = match &args.owner_file {
        Some(path) => load_owner(path)?,
        None => None,
    };
    let fetch = secrets_fetch(args)?;

    let state = prepare_workspace(&args.workspace)?;
    if let Some(runner) = &args.runner_binary {
        inject_runner(runner, &state)?;
    }
    if let Some((url, token)) = fetch {
        let secrets = fetch_secrets(&url, &token).inspect_err(|_| {
            // Nothing will consume the environment file now; it must not stay behind.
            if let Some(json) = &args.env_json {
                let _ = fs::remove_file(json);
            }
        })?;
        let vars = env.get_or_insert_with(Vec::new);
        for (key, value) in secrets {
            if vars.iter().any(|(k, _)| *k == key) {
                return Err(Failure::Invalid(format!(
                    "secret variable {key} is also set by the run's environment"
                )));
            }
            vars.push((key, value));
        }
    }
    // After the workspace exists and the secrets are in (a token may be one), before `.env`
    // and the ready marker are written.
    git::checkout(&args.git, &args.workspace, &state, env.as_deref())?;
    if let Some(vars) = &env {
        write_env_file(&args.workspace, vars)?;
    }
    if let Some(json) = &args.env_json {
        remove_env_json(json)?;
    }
    if let Some(src) = &args.stdin_file {
        move_stdin(src, &state)?;
    }
    mark_ready(&state)?;
    // Last, marker included: root here has no capability to write into what it handed over.
    // The only compute that names an owner (Docker) starts the runner once this exits, so the
    // marker is never read before the hand-over ends.
    if let Some((uid, gid)) = owner {
        hand_over(&args.workspace, uid, gid)?;
    }
    progress("ready");
    Ok(())
}

/// Reads `UID:GID` (or nothing, for root) from the owner file.
fn load_owner(path: &Path) -> Result<Option<(u32, u32)>, Failure> {
    let text = fs::read_to_string(path).map_err(|e| Failure::io("cannot read", path, e))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            Failure::Invalid(format!(
                "{} must hold UID:GID, not {text:?}",
                path.display()
            ))
        })
}

/// Gives the whole workspace (every file the steps above wrote) to the runner's user, without
/// following symbolic links.
fn hand_over(workspace: &Path, uid: u32, gid: u32) -> Result<(), Failure> {
    fn walk(p: &Path, uid: u32, gid: u32) -> Result<(), Failure> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .map_err(|e| Failure::io("cannot hand over", p, e))?;
        let meta = fs::symlink_metadata(p).map_err(|e| Failure::io("cannot stat", p, e))?;
        if meta.is_dir() {
            for entry in fs::read_dir(p).map_err(|e| Failure::io("cannot list", p, e))? {
                let entry = entry.map_err(|e| Failure::io("cannot list", p, e))?;
                walk(&entry.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(workspace, uid, gid)?;
    progress(&format!("workspace handed over to uid {uid}, gid {gid}"));
    Ok(())
}

/// Creates the workspace and its state directory; removes a stale ready marker.
fn prepare_workspace(workspace: &Path) -> Result<PathBuf, Failure> {
    progress(&format!("preparing workspace {}", workspace.display()));
    let state = workspace.join(STATE_DIR);
    fs::create_dir_all(&state).map_err(|e| Failure::io("cannot create", &state, e))?;
    let ready = state.join(READY_NAME);
    match fs::remove_file(&ready) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::io("cannot remove", &ready, e)),
    }
    Ok(state)
}

/// Copies the runner binary into the state directory with mode 0755.
fn inject_runner(binary: &Path, state: &Path) -> Result<(), Failure> {
    let mut src = File::open(binary).map_err(|e| Failure::io("cannot open", binary, e))?;
    let dest = state.join(RUNNER_NAME);
    write_atomically(&dest, 0o755, |f| io::copy(&mut src, f).map(drop))
        .map_err(|e| Failure::io("cannot write", &dest, e))?;
    progress(&format!("injected runner binary {}", dest.display()));
    Ok(())
}

/// Where to fetch secrets from: the `--secrets-json` file (deleted here, before anything can
/// fail later and leave it behind) or the two settings.
fn secrets_fetch(args: &Args) -> Result<Option<(String, String)>, Failure> {
    #[derive(serde::Deserialize)]
    struct Fetch {
        url: String,
        token: String,
    }
    if let Some(path) = &args.secrets_json {
        let data = fs::read(path).map_err(|e| Failure::io("cannot read", path, e))?;
        fs::remove_file(path).map_err(|e| Failure::io("cannot remove", path, e))?;
        let f: Fetch = serde_json::from_slice(&data).map_err(|e| {
            Failure::Invalid(format!(
                "{} must be a JSON object with url and token (line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        return Ok(Some((f.url, f.token)));
    }
    Ok(args.secrets_url.clone().zip(args.secrets_token.clone()))
}

/// POSTs the token to runvoyd and returns the execution's secrets as (variable, value). The
/// values are kept only in memory until written to `.env`; messages name variables, never
/// values, and never the token.
fn fetch_secrets(url: &str, token: &str) -> Result<Vec<(String, String)>, Failure> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::Io(format!("cannot build an HTTP client: {e}")))?;
    let mut last = String::new();
    for attempt in 0..5u32 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
        }
        let resp = match client
            .post(url)
            .json(&serde_json::json!({ "token": token }))
            .send()
        {
            Ok(r) => r,
            Err(e) => {
                // Connection failures are worth retrying; reqwest's message has no body.
                last = format!("cannot reach {url}: {}", e.without_url());
                continue;
            }
        };
        let status = resp.status();
        if status.is_server_error() {
            last = format!("{url} answered {status}");
            continue;
        }
        if !status.is_success() {
            let body: serde_json::Value = resp.json().unwrap_or_default();
            return Err(Failure::Io(format!(
                "fetching secrets refused ({status} {}): {}",
                body["code"].as_str().unwrap_or(""),
                body["error"].as_str().unwrap_or("")
            )));
        }
        let body: runvoy_proto::SecretsFetchResponse = resp
            .json()
            .map_err(|_| Failure::Io("the secrets answer is not what was expected".into()))?;
        let mut out = Vec::with_capacity(body.secrets.len());
        for s in body.secrets {
            validate_env_var(&s.key_name, &serde_json::Value::String(s.value.clone()))?;
            out.push((s.key_name, s.value));
        }
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        progress(&format!(
            "fetched {} secret(s) as {}",
            out.len(),
            names.join(", ")
        ));
        return Ok(out);
    }
    Err(Failure::Io(format!("fetching secrets failed: {last}")))
}

/// Reads and validates the environment JSON object (string values only).
fn load_env_json(path: &Path) -> Result<Vec<(String, String)>, Failure> {
    let data = fs::read(path).map_err(|e| Failure::io("cannot read", path, e))?;
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&data).map_err(|e| {
            // serde_json's message can quote the offending value, which may be a secret.
            Failure::Invalid(format!(
                "{} must be a JSON object of strings (error at line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
    let mut vars = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        validate_env_var(&key, &value)?;
        if let serde_json::Value::String(v) = value {
            vars.push((key, v));
        }
    }
    Ok(vars)
}

/// Checks a variable can be written to `.env` (newlines are quoted there; NUL cannot be in an
/// environment at all). Messages never include the value.
fn validate_env_var(key: &str, value: &serde_json::Value) -> Result<(), Failure> {
    if !is_env_name(key) {
        return Err(Failure::Invalid(format!(
            "invalid environment variable name {key:?}: must match [A-Za-z_][A-Za-z0-9_]*"
        )));
    }
    let serde_json::Value::String(v) = value else {
        return Err(Failure::Invalid(format!(
            "value of environment variable {key} must be a string"
        )));
    };
    if v.contains('\0') {
        return Err(Failure::Invalid(format!(
            "value of environment variable {key} must not contain a NUL byte"
        )));
    }
    Ok(())
}

fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Writes `WORKSPACE/.env` (mode 0600) as `KEY=VALUE` lines (`runvoy_proto::envfile`).
fn write_env_file(workspace: &Path, vars: &[(String, String)]) -> Result<(), Failure> {
    let dest = workspace.join(ENV_FILE_NAME);
    write_atomically(&dest, 0o600, |f| {
        f.write_all(&runvoy_proto::envfile::encode(vars))
    })
    .map_err(|e| Failure::io("cannot write", &dest, e))?;
    progress(&format!(
        "wrote {} environment variable(s) to {}",
        vars.len(),
        dest.display()
    ));
    Ok(())
}

/// Deletes the environment JSON: it may hold secrets and is no longer needed.
fn remove_env_json(path: &Path) -> Result<(), Failure> {
    fs::remove_file(path).map_err(|e| Failure::io("cannot remove", path, e))
}

/// Moves the standard-input file into the state directory (mode 0600), leaving no copy behind.
fn move_stdin(src: &Path, state: &Path) -> Result<(), Failure> {
    let dest = state.join(STDIN_NAME);
    let mut f = File::open(src).map_err(|e| Failure::io("cannot open", src, e))?;
    let n = write_atomically(&dest, 0o600, |out| io::copy(&mut f, out).map(drop))
        .map_err(|e| Failure::io("cannot write", &dest, e))
        .and_then(|_| fs::metadata(&dest).map_err(|e| Failure::io("cannot stat", &dest, e)))?
        .len();
    fs::remove_file(src).map_err(|e| Failure::io("cannot remove", src, e))?;
    progress(&format!(
        "wrote {n} byte(s) of standard input to {}",
        dest.display()
    ));
    Ok(())
}

/// How long the ready port stays open after the first probe, for probes that check again.
const READY_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for a first probe: past it the platform has given up on the task anyway.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Accepts (and closes) connections on `addr`: the workspace is ready. Returns shortly after
/// the first one, so the sidecar never outlives the runner's start by much.
fn serve_ready(addr: std::net::SocketAddr) -> Result<(), Failure> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Failure::Io(format!("cannot listen on {addr}: {e}")))?;
    progress(&format!("ready; answering probes on {addr}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
            let _ = tx.send(());
        }
    });
    match rx.recv_timeout(READY_WAIT) {
        Ok(()) => {
            std::thread::sleep(READY_LINGER);
            Ok(())
        }
        Err(_) => Err(Failure::Io(format!(
            "no startup probe reached {addr} within {}s",
            READY_WAIT.as_secs()
        ))),
    }
}

fn mark_ready(state: &Path) -> Result<(), Failure> {
    let ready = state.join(READY_NAME);
    write_atomically(&ready, 0o644, |_| Ok(())).map_err(|e| Failure::io("cannot write", &ready, e))
}

/// Writes `dest` through a temporary file in the same directory and renames it into place, so
/// readers never see a partial file. The temporary file is created with `mode` (never wider), so
/// secrets are not readable by others even briefly.
fn write_atomically(
    dest: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other("destination has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dest.with_file_name(tmp_name);

    // A leftover from an earlier crash could have other permissions; start fresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        fill(&mut file)?;
        // Not synced: a workspace is scratch space that no run outlives (in memory on Cloud
        // Run and under the sandbox), so a sync would only slow every launch.
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        for ok in ["A", "_", "a_1", "PATH", "_X9"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "é", "A.B"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn values_must_be_strings_without_nul() {
        let s = |v: &str| serde_json::Value::String(v.to_string());
        assert!(validate_env_var("A", &s("x=y 'z' $HOME")).is_ok());
        assert!(validate_env_var("A", &s("a\nb")).is_ok());
        assert!(matches!(
            validate_env_var("A", &s("a\0b")),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            validate_env_var("A", &serde_json::json!(1)),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn invalid_messages_do_not_leak_values() {
        let Err(Failure::Invalid(msg)) =
            validate_env_var("TOKEN", &serde_json::Value::String("secret\0value".into()))
        else {
            panic!("expected rejection");
        };
        assert!(!msg.contains("secret"));
    }
}
