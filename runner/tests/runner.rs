//! Runs the built `runvoy-runner` binary and checks its records reproduce the command's output.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use runvoy_proto::record::{ExitRecordWire, LogRecordWire, RunnerRecord, Stream};

const BIN: &str = env!("CARGO_BIN_EXE_runvoy-runner");

fn runner(command: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUNVOY_EXECUTION_ID", "exec-1")
        .env("RUNVOY_COMMAND", command)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Parsed output of one run.
struct Run {
    logs: Vec<LogRecordWire>,
    exit: ExitRecordWire,
    code: Option<i32>,
}

impl Run {
    /// Exact bytes of one stream, rebuilt as a client would.
    fn bytes(&self, stream: Stream) -> Vec<u8> {
        let mut out = Vec::new();
        for r in self.logs.iter().filter(|r| r.stream == stream) {
            match &r.b64 {
                Some(b) => out.extend(runvoy_proto::b64_decode(b).expect("valid base64")),
                None => out.extend_from_slice(r.message.as_bytes()),
            }
            if r.eol {
                out.push(b'\n');
            }
        }
        out
    }
}

fn parse(out: &Output) -> Run {
    let text = std::str::from_utf8(&out.stdout).expect("records are UTF-8");
    let mut logs = Vec::new();
    let mut exit = None;
    for (i, line) in text.lines().enumerate() {
        assert!(exit.is_none(), "record after the exit record: {line}");
        match serde_json::from_str::<RunnerRecord>(line).expect("record parses") {
            RunnerRecord::Log(r) => {
                assert_eq!(r.seq, i as u64 + 1, "seq contiguous from 1");
                assert_eq!(r.exec, "exec-1");
                assert_valid_time(&r.time);
                assert!(r.message.len() <= 3 * runvoy_proto::record::CHUNK_MAX);
                logs.push(r);
            }
            RunnerRecord::Exit(e) => {
                assert_eq!(e.seq, i as u64 + 1);
                exit = Some(e);
            }
        }
    }
    assert!(text.is_empty() || text.ends_with('\n'));
    let exit = exit.expect("exit record present");
    assert_eq!(exit.lines, logs.len() as u64);
    assert_eq!(exit.seq, exit.lines + 1);
    assert_eq!(exit.exec, "exec-1");
    Run {
        logs,
        exit,
        code: out.status.code(),
    }
}

fn assert_valid_time(t: &str) {
    // 2026-11-24T10:00:00.123456Z
    let b = t.as_bytes();
    assert_eq!(b.len(), 27, "{t}");
    assert!(t.ends_with('Z') && b[10] == b'T' && b[19] == b'.', "{t}");
}

fn run(command: &str, env: &[(&str, &str)]) -> Run {
    parse(&runner(command, env).output().expect("runner starts"))
}

/// Writes `bytes` to a file and returns a command that prints them.
fn cat_of(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
    let path = dir.path().join("data");
    std::fs::write(&path, bytes).unwrap();
    format!("cat '{}'", path.display())
}

fn assert_reproduces(bytes: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&cat_of(&dir, bytes), &[]);
    assert!(r.bytes(Stream::Stdout) == bytes, "stdout differs");
    assert_eq!(r.exit.exit_code, 0);
    r
}

#[test]
fn plain_lines() {
    let r = assert_reproduces(b"one\ntwo\n\nfour\n");
    assert_eq!(r.logs.len(), 4);
    assert_eq!(r.logs[2].message, "");
    assert!(r.logs.iter().all(|l| l.eol && l.stream == Stream::Stdout));
    assert_eq!(r.code, Some(0));
}

#[test]
fn invalid_utf8() {
    let r = assert_reproduces(b"ok\n\xff\xfe bad \xc3\n\x80");
    assert!(r.logs[0].b64.is_none());
    assert!(r.logs[1].b64.is_some());
    assert_eq!(r.logs[1].message, "\u{fffd}\u{fffd} bad \u{fffd}");
    assert!(!r.logs[2].eol);
}

#[test]
fn control_characters() {
    let r = assert_reproduces(b"a\rb\tc\x1b[31mred\x1b[0m\x00z\r\n");
    assert_eq!(r.logs.len(), 1);
    assert!(r.logs[0].b64.is_none());
}

#[test]
fn one_mebibyte_line() {
    let chunk = runvoy_proto::record::CHUNK_MAX;
    let mut bytes: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    bytes.push(b'\n');
    let r = assert_reproduces(&bytes);
    assert_eq!(r.logs.len(), (1 << 20) / chunk);
    assert!(r.logs.iter().all(|l| l.message.len() == chunk));
    assert!(r.logs[..r.logs.len() - 1].iter().all(|l| !l.eol));
    assert!(r.logs.last().unwrap().eol);
}

#[test]
fn long_multibyte_line_keeps_characters_whole() {
    let mut bytes = b"x".to_vec();
    bytes.extend("é€😀".repeat(50_000).as_bytes());
    let r = assert_reproduces(&bytes);
    assert!(r.logs.len() > 1);
    assert!(r.logs.iter().all(|l| l.b64.is_none()));
    assert!(!r.logs.last().unwrap().eol);
}

#[test]
fn no_final_newline() {
    let r = assert_reproduces(b"a\nb");
    assert_eq!(r.logs.len(), 2);
    assert!(r.logs[0].eol);
    assert!(!r.logs[1].eol);
}

#[test]
fn empty_output() {
    let r = run("true", &[]);
    assert!(r.logs.is_empty());
    assert_eq!((r.exit.lines, r.exit.seq, r.exit.exit_code), (0, 1, 0));
}

#[test]
fn single_newline() {
    let r = run("echo", &[]);
    assert_eq!(r.logs.len(), 1);
    assert_eq!(r.logs[0].message, "");
    assert!(r.logs[0].eol);
}

#[test]
fn streams_stay_apart() {
    let r = run(
        "i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
        &[],
    );
    let expect = |p: &str| -> Vec<u8> {
        (0..2000)
            .map(|i| format!("{p}{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    assert_eq!(r.bytes(Stream::Stdout), expect("out"));
    assert_eq!(r.bytes(Stream::Stderr), expect("err"));
    assert_eq!(r.exit.lines, 4000);
}

#[test]
fn many_lines_in_order() {
    let r = run("seq 1 200000", &[]);
    let expect: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(r.bytes(Stream::Stdout) == expect.as_bytes());
    assert_eq!(r.exit.lines, 200_000);
}

#[test]
fn exit_codes() {
    for code in [0, 1, 42] {
        let r = run(&format!("echo x; exit {code}"), &[]);
        assert_eq!(r.exit.exit_code, code);
        assert_eq!(r.code, Some(code));
        assert!(!r.exit.killed && !r.exit.timed_out && r.exit.error.is_none());
    }
}

#[test]
fn killed_by_signal() {
    let r = run("echo before; kill -9 $$", &[]);
    assert_eq!(r.exit.exit_code, 137);
    assert_eq!(r.code, Some(137));
    assert!(!r.exit.killed);
    assert_eq!(r.bytes(Stream::Stdout), b"before\n");
}

#[test]
fn timeout_fires() {
    let start = Instant::now();
    let r = run("echo start; sleep 30", &[("RUNVOY_TIMEOUT_SECONDS", "1")]);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(r.exit.timed_out && !r.exit.killed);
    assert_eq!(r.exit.exit_code, 143);
    assert_eq!(r.code, Some(143));
    assert_eq!(r.bytes(Stream::Stdout), b"start\n");
}

/// Starts the runner and waits for the command's first stdout line, proving it is running and
/// that the line was flushed while the command is still alive.
fn start_and_wait_ready(
    command: &str,
    env: &[(&str, &str)],
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = runner(command, env).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out, first)
}

fn finish(mut child: Child, mut out: BufReader<std::process::ChildStdout>, first: String) -> Run {
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stdout = first.into_bytes();
    stdout.extend(rest);
    parse(&Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

fn sigterm(child: &Child) {
    // SAFETY: plain syscall on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[test]
fn sigterm_kills_the_command() {
    let (child, out, first) = start_and_wait_ready("echo ready; sleep 30", &[]);
    assert!(first.contains("\"ready\""));
    let start = Instant::now();
    sigterm(&child);
    let r = finish(child, out, first);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(r.exit.killed && !r.exit.timed_out);
    assert_eq!(r.exit.exit_code, 143);
    assert_eq!(r.code, Some(143));
}

#[test]
fn ignored_sigterm_gets_sigkill_after_grace() {
    let (child, out, first) = start_and_wait_ready(
        "trap '' TERM; echo ready; sleep 30",
        &[("RUNVOY_KILL_GRACE_SECONDS", "1")],
    );
    let start = Instant::now();
    sigterm(&child);
    let r = finish(child, out, first);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(r.exit.killed);
    assert_eq!(r.exit.exit_code, 137);
}

#[test]
fn slow_output_is_flushed_promptly() {
    let (child, out, first) = start_and_wait_ready("echo one; sleep 2; echo two", &[]);
    let start = Instant::now();
    let r = finish(child, out, first);
    // The first line arrived long before the command finished.
    assert!(start.elapsed() > Duration::from_millis(1500));
    assert_eq!(r.bytes(Stream::Stdout), b"one\ntwo\n");
}

#[test]
fn background_process_holding_the_pipe_does_not_hang() {
    let start = Instant::now();
    let r = run("echo hi; sleep 30 & exit 4", &[]);
    assert!(start.elapsed() < Duration::from_secs(6));
    assert_eq!(r.exit.exit_code, 4);
    assert_eq!(r.bytes(Stream::Stdout), b"hi\n");
}

#[test]
fn banner_workdir_and_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let env_path = dir.path().join(".env");
    std::fs::write(
        &env_path,
        "# secrets\n\nGREETING=a=b c\nEMPTY=\nQUOTED='$HOME'\n",
    )
    .unwrap();
    let r = run(
        "pwd; printf '%s|%s|%s\\n' \"$GREETING\" \"$EMPTY\" \"$QUOTED\"",
        &[
            ("RUNVOY_BANNER", "runvoy: starting\nsecond line"),
            ("RUNVOY_WORKDIR", dir.path().to_str().unwrap()),
            ("RUNVOY_ENV_FILE", env_path.to_str().unwrap()),
        ],
    );
    assert_eq!(r.bytes(Stream::System), b"runvoy: starting\nsecond line\n");
    assert_eq!(r.logs[0].stream, Stream::System);
    assert_eq!(r.logs[1].stream, Stream::System);
    let pwd = std::fs::canonicalize(dir.path()).unwrap();
    let expect = format!("{}\na=b c||'$HOME'\n", pwd.display());
    assert_eq!(String::from_utf8(r.bytes(Stream::Stdout)).unwrap(), expect);
}

#[test]
fn argv_command_wins_over_env() {
    let out = runner("echo from-env", &[])
        .args(["--", "echo", "from-argv"])
        .output()
        .unwrap();
    assert_eq!(parse(&out).bytes(Stream::Stdout), b"from-argv\n");
}

#[test]
fn cannot_start_reports_127() {
    let r = run("true", &[("RUNVOY_WORKDIR", "/nonexistent/runvoy-dir")]);
    assert_eq!(r.exit.exit_code, 127);
    assert_eq!(r.code, Some(127));
    assert!(r.exit.error.is_some());
    let r = run("true", &[("RUNVOY_ENV_FILE", "/nonexistent/.env")]);
    assert_eq!(r.exit.exit_code, 127);
    assert!(r.exit.error.unwrap().contains("env file"));
}

#[test]
fn missing_configuration_exits_125_without_records() {
    let out = runner("true", &[])
        .env_remove("RUNVOY_EXECUTION_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUNVOY_EXECUTION_ID"));
    let out = runner("true", &[])
        .env_remove("RUNVOY_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(out.stdout.is_empty());
}

#[test]
fn broken_stdout_exits_125() {
    let start = Instant::now();
    let mut child = runner("yes", &[]).spawn().unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(125));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_command_can_trap_sigterm_on_kill() {
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_runvoy-runner"))
        .env("RUNVOY_EXECUTION_ID", "trap")
        .env("RUNVOY_KILL_GRACE_SECONDS", "10")
        .env(
            "RUNVOY_COMMAND",
            "trap 'echo got term; exit 7' TERM; echo ready; sleep 60 & wait",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"message\":\"got term\""), "{text}");
    assert!(text.contains("\"exit_code\":7"), "{text}");
    assert_eq!(out.status.code(), Some(7));
}
