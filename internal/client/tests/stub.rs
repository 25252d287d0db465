//! The client against a small in-process stub of the runvoy API, including a WebSocket that drops
//! connections mid-stream, skips records and rejects tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runvoy_client::proto::ws::{Disconnect, Frame};
use runvoy_client::proto::{
    LogEvent, LogsResponse, RunRequest, RunResponse, Status, record::Stream,
};
use runvoy_client::{Client, ClientError, FollowOptions, KillOutcome, ListQuery};

/// What the WebSocket does on the n-th connection (0-based): which seqs to send, and whether to
/// finish with the disconnect frame (otherwise it drops the connection).
type Script = Vec<(Vec<u64>, bool)>;

/// In a script's seqs: from here on, the connection stays open and silent (no close, no ping),
/// as a connection that died without a FIN looks to the client.
const SILENT: u64 = u64::MAX;

#[derive(Clone)]
struct Stub {
    base: String,
    total: u64,
    script: Arc<Script>,
    conns: Arc<Mutex<Vec<u64>>>,
    tokens_issued: Arc<Mutex<u32>>,
}

fn event(seq: u64) -> LogEvent {
    LogEvent {
        event_id: format!("e-{seq}"),
        seq,
        stream: if seq & 1 == 0 {
            Stream::Stderr
        } else {
            Stream::Stdout
        },
        timestamp: 1_700_000_000_000 + seq as i64,
        message: format!("line {seq}"),
        data_b64: None,
        eol: true,
    }
}

fn err(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": "nope", "code": code})),
    )
        .into_response()
}

async fn logs(State(s): State<Stub>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if headers.get("x-api-key").map(|v| v.as_bytes()) != Some(b"key") {
        return err(StatusCode::UNAUTHORIZED, "INVALID_API_KEY");
    }
    if id != "e" {
        return err(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    *s.tokens_issued.lock().unwrap() += 1;
    let ws = s.base.replace("http://", "ws://");
    Json(LogsResponse {
        execution_id: id.clone(),
        status: Status::Running,
        events: vec![],
        has_more: false,
        logs_complete: false,
        websocket_url: format!("{ws}/api/v1/executions/{id}/logs/ws?token=good"),
    })
    .into_response()
}

async fn ws(
    State(s): State<Stub>,
    Query(q): Query<HashMap<String, String>>,
    up: WebSocketUpgrade,
) -> Response {
    if q.get("token").map(String::as_str) != Some("good") {
        return err(StatusCode::UNAUTHORIZED, "INVALID_TOKEN");
    }
    let after: u64 = q["after_seq"].parse().unwrap();
    let n = {
        let mut c = s.conns.lock().unwrap();
        c.push(after);
        c.len() - 1
    };
    let (seqs, finish) = s.script.get(n).cloned().unwrap_or((vec![], false));
    up.on_upgrade(move |mut sock: WebSocket| async move {
        for seq in seqs {
            if seq == SILENT {
                // Keep the connection open and say nothing, until the client goes away.
                while let Some(Ok(_)) = sock.recv().await {}
                return;
            }
            let t = serde_json::to_string(&event(seq)).unwrap();
            if sock.send(Message::Text(t.into())).await.is_err() {
                return;
            }
        }
        if finish {
            let d = Disconnect {
                kind: "disconnect".into(),
                reason: "execution_completed".into(),
                status: Status::Failed,
                exit_code: Some(3),
                timed_out: false,
                lines: s.total,
            };
            let _ = sock
                .send(Message::Text(serde_json::to_string(&d).unwrap().into()))
                .await;
            let _ = sock.send(Message::Close(None)).await;
        }
        // Returning drops the socket: without the disconnect frame that is a broken stream.
    })
}

async fn run(headers: HeaderMap, Json(req): Json<RunRequest>) -> Response {
    assert_eq!(headers.get("x-api-key").unwrap(), "key");
    if req.command.is_empty() {
        return err(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    (
        StatusCode::ACCEPTED,
        Json(RunResponse {
            execution_id: "e".into(),
            status: Status::Starting,
            command: req.command,
            argv: None,
            image_id: req.image.unwrap_or_else(|| "alpine".into()),
            websocket_url: "ws://unused".into(),
        }),
    )
        .into_response()
}

async fn start(total: u64, script: Script) -> Stub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stub = Stub {
        base,
        total,
        script: Arc::new(script),
        conns: Arc::default(),
        tokens_issued: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/api/v1/run", post(run))
        .route("/api/v1/executions/{id}/logs", get(logs))
        .route("/api/v1/executions/{id}/logs/ws", get(ws))
        .route(
            "/api/v1/executions/{id}",
            axum::routing::delete(|Path(id): Path<String>| async move {
                match id.as_str() {
                    // Servers before the 200-with-state answer.
                    "old-done" => StatusCode::NO_CONTENT.into_response(),
                    "done" => Json(serde_json::json!({
                        "execution_id": id, "message": "already finished",
                        "status": "SUCCEEDED", "exit_code": 0
                    }))
                    .into_response(),
                    _ => Json(serde_json::json!({
                        "execution_id": id, "message": "kill started", "status": "TERMINATING"
                    }))
                    .into_response(),
                }
            }),
        )
        .route(
            "/api/v1/executions",
            get(|q: axum::extract::RawQuery| async move {
                let q = q.0.unwrap_or_default();
                if q.contains("cursor=") {
                    assert_eq!(q, "limit=5&status=RUNNING%2CFAILED&cursor=1-ab");
                    return Json(serde_json::json!([])).into_response();
                }
                assert_eq!(q, "limit=5&status=RUNNING%2CFAILED");
                (
                    [(
                        "link",
                        "</api/v1/executions?limit=5&status=RUNNING,FAILED&cursor=1-ab>; rel=\"next\"",
                    )],
                    Json(serde_json::json!([])),
                )
                    .into_response()
            }),
        )
        .route(
            "/api/v1/health",
            get(|| async { (StatusCode::BAD_GATEWAY, "<html>upstream down</html>") }),
        )
        .with_state(stub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    stub
}

fn fast() -> FollowOptions {
    FollowOptions {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        give_up_after: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
    }
}

/// Drains the follower: the seqs delivered and the final frame.
async fn drain(f: &mut runvoy_client::LogFollower) -> Result<(Vec<u64>, Disconnect), ClientError> {
    let mut seqs = vec![];
    loop {
        match f.next().await? {
            Some(Frame::Log(ev)) => {
                assert_eq!(ev, event(ev.seq));
                seqs.push(ev.seq);
            }
            Some(Frame::Disconnect(d)) => {
                assert!(f.next().await?.is_none());
                return Ok((seqs, d));
            }
            None => panic!("ended without disconnect"),
        }
    }
}

#[tokio::test]
async fn resumes_after_drop_and_drops_duplicates() {
    let stub = start(6, vec![(vec![1, 2, 3], false), (vec![2, 3, 4, 5, 6], true)]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let mut f = c.follow_logs("e", 0).with_options(fast());
    let (seqs, d) = drain(&mut f).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!((d.status, d.exit_code), (Status::Failed, Some(3)));
    assert_eq!(*stub.conns.lock().unwrap(), vec![0, 3]);
    assert_eq!(f.last_seq(), 6);
    assert_eq!(f.reconnects(), 1);
}

#[tokio::test]
async fn a_silent_connection_is_replaced_and_resumed() {
    let stub = start(4, vec![(vec![1, 2, SILENT], false), (vec![3, 4], true)]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let mut f = c.follow_logs("e", 0).with_options(FollowOptions {
        idle_timeout: Duration::from_millis(300),
        ..fast()
    });
    let (seqs, _) = drain(&mut f).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(*stub.conns.lock().unwrap(), vec![0, 2]);
    assert_eq!(f.reconnects(), 1);
}

#[tokio::test]
async fn gap_triggers_resume_from_last_delivered() {
    let stub = start(5, vec![(vec![1, 2, 4, 5], false), (vec![3, 4, 5], true)]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let mut f = c.follow_logs("e", 0).with_options(fast());
    let (seqs, _) = drain(&mut f).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(*stub.conns.lock().unwrap(), vec![0, 2]);
}

#[tokio::test]
async fn early_disconnect_frame_is_not_trusted() {
    // The disconnect says 3 records but only 1 arrived: resume instead of finishing.
    let stub = start(3, vec![(vec![1], true), (vec![2, 3], true)]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let mut f = c.follow_logs("e", 0).with_options(fast());
    let (seqs, _) = drain(&mut f).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(*stub.conns.lock().unwrap(), vec![0, 1]);
}

#[tokio::test]
async fn expired_first_url_fetches_fresh_token_and_resume_from_after_seq() {
    let stub = start(4, vec![(vec![3, 4], true)]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let ws = stub.base.replace("http://", "ws://");
    let mut f = c
        .follow_logs("e", 2)
        .with_websocket_url(format!("{ws}/api/v1/executions/e/logs/ws?token=expired"))
        .with_options(fast());
    let (seqs, _) = drain(&mut f).await.unwrap();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(*stub.conns.lock().unwrap(), vec![2]);
    assert_eq!(*stub.tokens_issued.lock().unwrap(), 1);
}

#[tokio::test]
async fn gives_up_after_budget() {
    let stub = start(5, vec![]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let mut f = c.follow_logs("e", 0).with_options(FollowOptions {
        give_up_after: Duration::from_millis(300),
        ..fast()
    });
    let e = tokio::time::timeout(Duration::from_secs(5), f.next())
        .await
        .expect("must give up in time")
        .unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(e.to_string().contains("gave up"), "{e}");
    assert!(stub.conns.lock().unwrap().len() >= 3);
}

#[tokio::test]
async fn unknown_execution_fails_fast() {
    let stub = start(0, vec![]).await;
    let c = Client::new(&stub.base, "key").unwrap();
    let e = c.follow_logs("nope", 0).next().await.unwrap_err();
    assert_eq!(e.code(), "NOT_FOUND");
    let bad = Client::new(&stub.base, "wrong").unwrap();
    let e = bad.follow_logs("e", 0).next().await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Api { status: 401, code, .. } if code == "INVALID_API_KEY"),
        "{e:?}"
    );
}

#[tokio::test]
async fn rest_calls() {
    let stub = start(0, vec![]).await;
    let c = Client::new(&format!("{}/", stub.base), "key").unwrap();
    let r = c
        .run(&RunRequest {
            command: "echo hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (r.execution_id.as_str(), r.command.as_str()),
        ("e", "echo hi")
    );
    let e = c.run(&RunRequest::default()).await.unwrap_err();
    assert!(matches!(&e, ClientError::Api { status: 400, code, .. } if code == "INVALID_REQUEST"));
    match c.kill("done").await.unwrap() {
        KillOutcome::AlreadyTerminal(Some(k)) => {
            assert_eq!((k.status, k.exit_code), (Status::Succeeded, Some(0)))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.kill("old-done").await.unwrap(),
        KillOutcome::AlreadyTerminal(None)
    ));
    match c.kill("x").await.unwrap() {
        KillOutcome::Started(k) => assert_eq!(k.message, "kill started"),
        other => panic!("{other:?}"),
    }
    let l = c
        .list_executions(&ListQuery {
            limit: Some(5),
            status: vec![Status::Running, Status::Failed],
            cursor: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(l.executions.is_empty());
    assert_eq!(l.next_cursor.as_deref(), Some("1-ab"));
    let l = c
        .list_executions(&ListQuery {
            limit: Some(5),
            status: vec![Status::Running, Status::Failed],
            cursor: l.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(l.executions.is_empty() && l.next_cursor.is_none());
    let e = c.health().await.unwrap_err();
    assert_eq!(e.code(), "HTTP_502");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let c = Client::new(&format!("http://{addr}"), "key").unwrap();
    let e = c.health().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Transport { connect: true, .. }),
        "{e:?}"
    );
    assert!(e.is_safe_to_resend());
}
