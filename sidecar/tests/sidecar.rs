//! Runs the built `runvoy-sidecar` binary against temporary workspaces.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_runvoy-sidecar");

struct Fixture {
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    runner: PathBuf,
    env_json: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("runner-src");
    fs::write(&runner, b"#!/bin/sh\necho runner\n").unwrap();
    // The source's own mode must not leak into the injected copy.
    fs::set_permissions(&runner, fs::Permissions::from_mode(0o600)).unwrap();
    Fixture {
        workspace: dir.path().join("nested/workspace"),
        env_json: dir.path().join("env.json"),
        runner,
        _dir: dir,
    }
}

fn sidecar(f: &Fixture, with_env: bool) -> Output {
    let mut c = Command::new(BIN);
    c.env_remove("RUNVOY_WORKSPACE")
        .env_remove("RUNVOY_RUNNER_BINARY")
        .env_remove("RUNVOY_ENV_JSON")
        .arg("--workspace")
        .arg(&f.workspace)
        .arg("--runner-binary")
        .arg(&f.runner);
    if with_env {
        c.arg("--env-json").arg(&f.env_json);
    }
    c.output().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn ready(f: &Fixture) -> PathBuf {
    f.workspace.join(".runvoy/ready")
}

#[test]
fn prepares_workspace() {
    let f = fixture();
    fs::write(
        &f.env_json,
        r#"{"API_TOKEN":"s3cr3t-value","_X1":"a=b 'c' $HOME","EMPTY":""}"#,
    )
    .unwrap();
    let out = sidecar(&f, true);
    assert!(out.status.success(), "{out:?}");

    let runner = f.workspace.join(".runvoy/runvoy-runner");
    assert_eq!(mode(&runner), 0o755);
    assert_eq!(fs::read(&runner).unwrap(), fs::read(&f.runner).unwrap());
    let run = Command::new(&runner).output().unwrap();
    assert_eq!(run.stdout, b"runner\n");

    let env = f.workspace.join(".env");
    assert_eq!(mode(&env), 0o600);
    let text = fs::read_to_string(&env).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["API_TOKEN=s3cr3t-value", "EMPTY=", "_X1=a=b 'c' $HOME"]
    );
    assert!(!f.env_json.exists(), "env JSON must be deleted");

    assert!(ready(&f).exists());
    assert_eq!(fs::metadata(ready(&f)).unwrap().len(), 0);

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.is_empty());
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("### runvoy sidecar: "))
    );
    assert!(!stdout.contains("s3cr3t"));
    // No temporary files left behind.
    let leftovers: Vec<_> = fs::read_dir(f.workspace.join(".runvoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn without_env_json_no_env_file() {
    let f = fixture();
    let out = sidecar(&f, false);
    assert!(out.status.success(), "{out:?}");
    assert!(!f.workspace.join(".env").exists());
    assert!(ready(&f).exists());
}

#[test]
fn reads_settings_from_environment() {
    let f = fixture();
    fs::write(&f.env_json, r#"{"A":"1"}"#).unwrap();
    let out = Command::new(BIN)
        .env("RUNVOY_WORKSPACE", &f.workspace)
        .env("RUNVOY_RUNNER_BINARY", &f.runner)
        .env("RUNVOY_ENV_JSON", &f.env_json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::read_to_string(f.workspace.join(".env")).unwrap(),
        "A=1\n"
    );
    assert!(ready(&f).exists());
}

#[test]
fn replaces_existing_env_file_with_private_one() {
    let f = fixture();
    fs::create_dir_all(&f.workspace).unwrap();
    let env = f.workspace.join(".env");
    fs::write(&env, "OLD=1\n").unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&f.env_json, r#"{"NEW":"2"}"#).unwrap();
    let out = sidecar(&f, true);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&env), 0o600);
    assert_eq!(fs::read_to_string(&env).unwrap(), "NEW=2\n");
}

fn assert_rejected(f: &Fixture, json: &str, needle: &str) {
    fs::write(&f.env_json, json).unwrap();
    let out = sidecar(f, true);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    assert!(!f.workspace.join(".env").exists());
    assert!(!ready(f).exists());
}

#[test]
fn bad_key_rejected() {
    let f = fixture();
    assert_rejected(&f, r#"{"GOOD":"s3cr3t","1BAD":"x"}"#, "1BAD");
    assert_rejected(&f, r#"{"A-B":"x"}"#, "A-B");
    assert_rejected(&f, r#"{"":"x"}"#, "name");
}

#[test]
fn bad_values_rejected() {
    let f = fixture();
    assert_rejected(&f, r#"{"TOKEN":"s3cr3t\u0000"}"#, "TOKEN");
    assert_rejected(&f, r#"{"N":1}"#, "string");
    assert_rejected(&f, r#"["s3cr3t"]"#, "JSON object");
    assert_rejected(&f, r#""s3cr3t""#, "JSON object");
}

#[test]
fn multi_line_values_are_quoted_on_one_line() {
    let f = fixture();
    fs::write(
        &f.env_json,
        r#"{"KEY":"-----BEGIN-----\nabc\n-----END-----\n","INJECT":"x\nEVIL=1"}"#,
    )
    .unwrap();
    let out = sidecar(&f, true);
    assert!(out.status.success(), "{out:?}");
    let written = fs::read(f.workspace.join(".env")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&written),
        "INJECT=\"x\\nEVIL=1\"\nKEY=\"-----BEGIN-----\\nabc\\n-----END-----\\n\"\n"
    );
    let back = runvoy_proto::envfile::parse(&written).unwrap();
    assert_eq!(
        back.len(),
        2,
        "a newline in a value never starts a variable"
    );
    assert_eq!(back[1].1, b"-----BEGIN-----\nabc\n-----END-----\n");
}

#[test]
fn missing_runner_fails() {
    let mut f = fixture();
    f.runner = f.runner.with_file_name("does-not-exist");
    let out = sidecar(&f, false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
    assert!(!ready(&f).exists());
}

#[test]
fn stale_ready_marker_is_removed_on_failure() {
    let f = fixture();
    assert!(sidecar(&f, false).status.success());
    assert!(ready(&f).exists());
    fs::remove_file(&f.runner).unwrap();
    assert_eq!(sidecar(&f, false).status.code(), Some(1));
    assert!(!ready(&f).exists());
}

#[test]
fn moves_stdin_into_the_workspace() {
    let f = fixture();
    let src = f.env_json.with_file_name("stdin");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    fs::write(&src, &bytes).unwrap();
    let out = Command::new(BIN)
        .env_remove("RUNVOY_STDIN_SOURCE")
        .arg("--workspace")
        .arg(&f.workspace)
        .arg("--runner-binary")
        .arg(&f.runner)
        .arg("--stdin-file")
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dest = f.workspace.join(".runvoy/stdin");
    assert_eq!(fs::read(&dest).unwrap(), bytes);
    assert_eq!(mode(&dest), 0o600);
    assert!(!src.exists(), "the source must be removed");
    assert!(ready(&f).exists());
}

#[test]
fn without_a_runner_binary_nothing_is_injected() {
    // Where the runner runs from its installed path (local compute), the workspace gets no copy.
    let f = fixture();
    let out = Command::new(BIN)
        .env_remove("RUNVOY_RUNNER_BINARY")
        .arg("--workspace")
        .arg(&f.workspace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(ready(&f).exists());
    assert!(!f.workspace.join(".runvoy/runvoy-runner").exists());
}

#[test]
fn serves_the_ready_port_only_once_prepared_then_exits() {
    let f = fixture();
    // A free port: bind, note it, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .env_remove("RUNVOY_SERVE_READY")
        .arg("--workspace")
        .arg(&f.workspace)
        .arg("--runner-binary")
        .arg(&f.runner)
        .arg("--serve-ready")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "the ready port never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The port answers only after the workspace is prepared.
    assert!(ready(&f).exists());
    assert!(f.workspace.join(".runvoy/runvoy-runner").exists());
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
}
