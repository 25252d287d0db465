//! The `runvoy` binary against an in-process stub server: byte-exact output under `-q`, exit
//! codes, environment forwarding and resuming a dropped log stream.

use std::collections::HashMap;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runvoy_proto::record::Stream;
use runvoy_proto::ws::Disconnect;
use runvoy_proto::{LogEvent, LogsResponse, RunRequest, RunResponse, Status};

#[derive(Clone, Default)]
struct Stub {
    base: String,
    requests: Arc<Mutex<Vec<RunRequest>>>,
    /// Command of each execution id.
    commands: Arc<Mutex<HashMap<String, String>>>,
    ws_conns: Arc<Mutex<u32>>,
    kills: Arc<Mutex<Vec<String>>>,
}

fn ev(seq: u64, stream: Stream, message: &str) -> LogEvent {
    LogEvent {
        event_id: format!("x-{seq}"),
        seq,
        stream,
        timestamp: 0,
        message: message.into(),
        data_b64: None,
        eol: true,
    }
}

/// The records every stub execution produces.
fn records() -> Vec<LogEvent> {
    let mut bin = ev(4, Stream::Stdout, "\u{fffd}bin");
    bin.data_b64 = Some("/2Jpbg==".into()); // 0xff "bin"
    let mut partial = ev(5, Stream::Stdout, "no newline");
    partial.eol = false;
    vec![
        ev(1, Stream::System, "runvoy: starting"),
        ev(2, Stream::Stdout, "hello"),
        ev(3, Stream::Stderr, "warn"),
        bin,
        partial,
    ]
}

fn final_frame(command: &str) -> Disconnect {
    let (status, exit_code, timed_out) = match command {
        "timeout" => (Status::Failed, Some(143), true),
        "stopped" => (Status::Stopped, None, false),
        "ok" => (Status::Succeeded, Some(0), false),
        _ => (Status::Failed, Some(3), false),
    };
    Disconnect {
        kind: "disconnect".into(),
        reason: "execution_completed".into(),
        status,
        exit_code,
        timed_out,
        lines: records().len() as u64,
    }
}

async fn run(State(s): State<Stub>, Json(req): Json<RunRequest>) -> Response {
    let id = format!("{:032x}", s.requests.lock().unwrap().len() + 1);
    let shown = match &req.argv {
        Some(words) => runvoy_proto::shell_join(words),
        None => req.command.clone(),
    };
    s.commands.lock().unwrap().insert(id.clone(), shown.clone());
    s.requests.lock().unwrap().push(req.clone());
    let ws = s.base.replace("http://", "ws://");
    (
        StatusCode::ACCEPTED,
        Json(RunResponse {
            execution_id: id.clone(),
            status: Status::Starting,
            command: shown,
            argv: req.argv,
            image_id: "alpine".into(),
            websocket_url: format!("{ws}/api/v1/executions/{id}/logs/ws?token=t"),
        }),
    )
        .into_response()
}

async fn logs(
    State(s): State<Stub>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !s.commands.lock().unwrap().contains_key(&id) {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "execution not found", "code": "NOT_FOUND"})),
        )
            .into_response();
    }
    let after: u64 = q.get("after_seq").map_or(0, |v| v.parse().unwrap());
    let limit: usize = q.get("limit").map_or(1000, |v| v.parse().unwrap());
    let rest: Vec<LogEvent> = records().into_iter().filter(|e| e.seq > after).collect();
    let has_more = rest.len() > limit;
    let ws = s.base.replace("http://", "ws://");
    Json(LogsResponse {
        execution_id: id.clone(),
        status: Status::Failed,
        events: rest.into_iter().take(limit).collect(),
        has_more,
        logs_complete: true,
        websocket_url: format!("{ws}/api/v1/executions/{id}/logs/ws?token=t"),
    })
    .into_response()
}

async fn ws(
    State(s): State<Stub>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    up: WebSocketUpgrade,
) -> Response {
    let after: u64 = q["after_seq"].parse().unwrap();
    let command = s.commands.lock().unwrap()[&id].clone();
    let first = {
        let mut n = s.ws_conns.lock().unwrap();
        *n += 1;
        *n == 1
    };
    up.on_upgrade(move |mut sock: WebSocket| async move {
        for e in records().into_iter().filter(|e| e.seq > after) {
            // "drop": the first connection breaks after two records.
            if command == "drop" && first && e.seq == 3 {
                return;
            }
            let t = serde_json::to_string(&e).unwrap();
            if sock.send(Message::Text(t.into())).await.is_err() {
                return;
            }
        }
        if command == "hang" {
            // Keeps running until the client goes away.
            while let Some(Ok(_)) = sock.recv().await {}
            return;
        }
        let d = serde_json::to_string(&final_frame(&command)).unwrap();
        let _ = sock.send(Message::Text(d.into())).await;
        let _ = sock.send(Message::Close(None)).await;
    })
}

async fn start() -> Stub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub = Stub {
        base: format!("http://{}", listener.local_addr().unwrap()),
        ..Default::default()
    };
    let app = axum::Router::new()
        .route("/api/v1/run", post(run))
        .route("/api/v1/executions/{id}/logs", get(logs))
        .route("/api/v1/executions/{id}/logs/ws", get(ws))
        .route(
            "/api/v1/executions/{id}",
            axum::routing::delete(|State(s): State<Stub>, Path(id): Path<String>| async move {
                s.kills.lock().unwrap().push(id.clone());
                Json(serde_json::json!({
                    "execution_id": id, "message": "kill started", "status": "TERMINATING"
                }))
            }),
        )
        .with_state(stub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    stub
}

async fn runvoy(base: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
        .args(args)
        .env_clear()
        .env("RUNVOY_API_URL", base)
        .env("RUNVOY_API_KEY", "key")
        .env("RUNVOY_CONFIG", dir.path().join("none.yaml"))
        .env("RUNVOY_USER_FOO", "bar")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap()
}

const STDOUT: &[u8] = b"hello\n\xffbin\nno newline";

#[tokio::test]
async fn run_quiet_is_byte_exact_and_returns_remote_code() {
    let stub = start().await;
    let out = runvoy(
        &stub.base,
        &["run", "-q", "-e", "A=1", "--timeout", "1m", "--", "exit3"],
    )
    .await;
    assert_eq!(out.stdout, STDOUT);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
    assert_eq!(out.status.code(), Some(3));
    let req = stub.requests.lock().unwrap()[0].clone();
    assert_eq!(req.command, "exit3");
    assert_eq!(req.timeout, Some(60));
    let env: Vec<(&str, &str)> = req
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "1"), ("FOO", "bar")]);
}

#[tokio::test]
async fn run_without_quiet_adds_messages_on_stderr_only() {
    let stub = start().await;
    let out = runvoy(&stub.base, &["run", "ok"]).await;
    assert_eq!(out.stdout, STDOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "→ execution 00000000000000000000000000000001 started\nrunvoy: starting\nwarn\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("✓ execution 00000000000000000000000000000001 succeeded (exit code 0)"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn exit_codes_for_timeout_and_stop() {
    let stub = start().await;
    let out = runvoy(&stub.base, &["run", "-q", "timeout"]).await;
    assert_eq!(out.status.code(), Some(124));
    let out = runvoy(&stub.base, &["run", "-q", "stopped"]).await;
    assert_eq!(out.status.code(), Some(130));
}

#[tokio::test]
async fn dropped_stream_resumes_without_duplicates() {
    let stub = start().await;
    let out = runvoy(&stub.base, &["run", "-q", "drop"]).await;
    assert_eq!(out.stdout, STDOUT);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(*stub.ws_conns.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_dropped_stream_is_reported_at_once_and_when_it_resumes() {
    let stub = start().await;
    let out = runvoy(&stub.base, &["run", "drop"]).await;
    assert_eq!(out.stdout, STDOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    let lost = err
        .find("→ connection lost")
        .unwrap_or_else(|| panic!("{err}"));
    let back = err
        .find("→ connection restored")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(lost < back, "{err}");
    // The loss is reported before the records that follow the reconnection.
    assert!(lost < err.find("warn").unwrap(), "{err}");
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn detach_prints_the_id() {
    let stub = start().await;
    let out = runvoy(&stub.base, &["run", "-d", "--", "echo", "a", "b"]).await;
    assert_eq!(out.stdout, b"00000000000000000000000000000001\n");
    assert_eq!(out.status.code(), Some(0));
    let req = stub.requests.lock().unwrap()[0].clone();
    assert_eq!(
        (req.command.as_str(), req.argv),
        ("", Some(vec!["echo".into(), "a".into(), "b".into()]))
    );
    let out = runvoy(&stub.base, &["run", "-d", "-o", "json", "x"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["execution_id"], "00000000000000000000000000000002");
}

#[tokio::test]
async fn logs_pages_and_follows() {
    let stub = start().await;
    runvoy(&stub.base, &["run", "-d", "exit3"]).await;
    let id = "00000000000000000000000000000001";
    let out = runvoy(&stub.base, &["logs", "-q", id]).await;
    assert_eq!(out.stdout, STDOUT);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
    assert_eq!(out.status.code(), Some(0));
    let out = runvoy(&stub.base, &["logs", "-f", "-q", id]).await;
    assert_eq!(out.stdout, STDOUT);
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn api_errors_exit_125_with_code() {
    let stub = start().await;
    let out = runvoy(&stub.base, &["logs", "nope"]).await;
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "runvoy: error: cannot get the logs of nope: execution not found (NOT_FOUND)\n"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn missing_config_exits_125() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
        .args(["status", "x"])
        .env_clear()
        .env("RUNVOY_CONFIG", "/nonexistent/config.yaml")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("runvoy: error: no API URL or API key configured"),
        "{err}"
    );
    assert!(err.ends_with("(CONFIG_ERROR)\n"), "{err}");
}

/// Starts `run hang`, sends SIGINT `interrupts` times (0.3 s apart) once output flows.
async fn interrupt_run(stub: &Stub, interrupts: usize) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
        .args(["run", "-q", "hang"])
        .env_clear()
        .env("RUNVOY_API_URL", &stub.base)
        .env("RUNVOY_API_KEY", "key")
        .env("RUNVOY_CONFIG", dir.path().join("none.yaml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as libc::pid_t;
    for _ in 0..100 {
        if *stub.ws_conns.lock().unwrap() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..interrupts {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("runvoy must exit after Ctrl-C")
        .unwrap()
}

#[tokio::test]
async fn first_ctrl_c_detaches_with_hints() {
    let stub = start().await;
    let out = interrupt_run(&stub, 1).await;
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(out.stdout, STDOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    let id = "00000000000000000000000000000001";
    assert!(err.contains(&format!("runvoy logs -f {id}")), "{err}");
    assert!(err.contains(&format!("runvoy kill {id}")), "{err}");
    assert!(stub.kills.lock().unwrap().is_empty());
}

#[tokio::test]
async fn second_ctrl_c_kills() {
    let stub = start().await;
    let out = interrupt_run(&stub, 2).await;
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(
        *stub.kills.lock().unwrap(),
        ["00000000000000000000000000000001"]
    );
}
