//! The real runvoyd with `--store firestore` on Google's Firestore emulator, and its push
//! endpoints (`--events pubsub`).

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use runvoy_testkit::{TestServer, bin};
use serde_json::{Value, json};

fn firestore_env(prefix: &str) -> Vec<(String, String)> {
    let emu = runvoy_emulators::shared_firestore();
    vec![
        ("FIRESTORE_EMULATOR_HOST".into(), emu.host.clone()),
        ("RUNVOY_GCP_PROJECT_ID".into(), "runvoy-test".into()),
        (
            "RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX".into(),
            format!("{prefix}_{}_", std::process::id()),
        ),
    ]
}

fn start(args: &[&str], env: &[(String, String)]) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(args, &env)
}

async fn push(s: &TestServer, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut rb = http.post(format!("{}{path}", s.url)).json(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("push");
    let status = r.status().as_u16();
    let v = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, v)
}

fn envelope(id: &str, entry: &Value, publish_time: &str) -> Value {
    json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(entry).unwrap()),
            "messageId": id,
            "publishTime": publish_time,
            "attributes": {"logging.googleapis.com/timestamp": publish_time}
        },
        "subscription": "projects/runvoy-test/subscriptions/runvoy-logs-push"
    })
}

fn record_entry(exec: &str, seq: u64, message: &str) -> Value {
    json!({
        "insertId": format!("{exec}-{seq}"),
        "jsonPayload": {"runvoy": "log", "exec": exec, "seq": seq, "stream": "stdout", "message": message},
        "resource": {"type": "cloud_run_job", "labels": {"job_name": "runvoy-runner", "location": "us-central1", "project_id": "runvoy-test"}},
        "timestamp": "2026-01-15T15:48:06.716662Z",
        "labels": {"run.googleapis.com/execution_name": "runvoy-runner-abcde"},
        "logName": "projects/runvoy-test/logs/run.googleapis.com%2Fstdout"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runvoyd_on_firestore_runs_a_command_and_keeps_its_logs_and_exit_code() {
    let env = firestore_env("serve");
    let mut s = start(
        &[
            "--store",
            "firestore",
            "--events",
            "pubsub",
            "--insecure-push",
        ],
        &env,
    );
    assert!(
        !s.data_dir().join("runvoy.db").exists(),
        "SQLite was opened"
    );
    let out = s
        .runvoy()
        .args(["run", "--", "sh", "-c", "echo hello; echo oops >&2; exit 3"])
        .stdin(Stdio::null())
        .output()
        .expect("runvoy");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    let list = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    assert_eq!(list.executions.len(), 1);
    let id = list.executions[0].execution_id.clone();
    let e = s.wait_settled(&id, Duration::from_secs(30)).await;
    let logs = s.all_logs(&id).await;
    assert_eq!(
        (e.exit_code, e.log_lines),
        (Some(3), Some(logs.len() as u64))
    );
    // stdout and stderr are two pipes: their relative order is not fixed.
    let mut output: Vec<(&str, &str)> = logs
        .iter()
        .filter(|l| l.stream != runvoy_proto::record::Stream::System)
        .map(|l| (l.stream.as_str(), l.message.as_str()))
        .collect();
    output.sort();
    assert_eq!(output, vec![("stderr", "oops"), ("stdout", "hello")]);

    // A push re-delivering a record the tailer already stored changes nothing; one for an
    // execution nobody knows, published long ago, is refused for good.
    let (st, _) = push(
        &s,
        "/push/pubsub/logs",
        &envelope(
            "m1",
            &record_entry(&id, 1, &logs[0].message),
            "2026-01-15T15:48:07Z",
        ),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let stranger = "ffffffffffffffffffffffffffffffff";
    let mut entry = record_entry(stranger, 1, "x");
    entry["labels"]["run.googleapis.com/execution_name"] = "runvoy-runner-zzzzz".into();
    let (st, v) = push(
        &s,
        "/push/pubsub/logs",
        &envelope("m2", &entry, "2020-01-01T00:00:00Z"),
        None,
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("PUSH_UNKNOWN_EXECUTION"))
    );
    assert_eq!(s.all_logs(&id).await, logs);

    // Everything is in Firestore: after a restart the execution and its logs are still there.
    s.restart();
    let e = s.client().get_execution(&id).await.unwrap();
    assert_eq!((e.exit_code, e.logs_complete), (Some(3), true));
    assert_eq!(s.all_logs(&id).await, logs);
    assert!(
        s.log().contains("--insecure-push"),
        "the warning is printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_endpoints_verify_tokens_and_are_absent_without_pubsub() {
    // OIDC on: no token → 401 (the key server is unreachable but is not needed to refuse).
    let s = TestServer::start_with(
        &[
            "--events",
            "pubsub",
            "--gcp-push-audience",
            "https://runvoy.example.com",
            "--gcp-push-service-account",
            "push@p.iam.gserviceaccount.com",
            "--gcp-push-jwks-url",
            "http://127.0.0.1:9/certs",
        ],
        &[],
    );
    for path in [
        "/push/pubsub/logs",
        "/push/eventarc",
        "/push/scheduler/reconcile",
    ] {
        let (st, v) = push(&s, path, &json!({}), None).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (401, Some("PUSH_UNAUTHENTICATED")),
            "{path}"
        );
    }
    // A token that cannot be checked because the keys are unreachable: retried, not refused.
    let (st, v) = push(
        &s,
        "/push/pubsub/logs",
        &json!({}),
        Some("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.e30.c2ln"),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (503, Some("PUSH_KEYS_UNAVAILABLE"))
    );
    drop(s);

    // Without --events pubsub there are no push routes.
    let s = TestServer::start();
    let (st, _) = push(&s, "/push/pubsub/logs", &json!({}), None).await;
    assert_eq!(st, 404);
    drop(s);

    // --events pubsub without the token settings refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("runvoyd"))
        .args([
            "serve",
            "--events",
            "pubsub",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("RUNVOY_GCP_PUSH_AUDIENCE")
        .env_remove("RUNVOY_GCP_PUSH_SERVICE_ACCOUNT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RUNVOY_GCP_PUSH_AUDIENCE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `PUT` on the Pub/Sub emulator's REST API.
async fn emulator_put(host: &str, path: &str, body: Value) {
    let r = reqwest::Client::new()
        .put(format!("http://{host}/v1/{path}"))
        .json(&body)
        .send()
        .await
        .expect("emulator");
    assert!(r.status().is_success(), "PUT {path}: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_records_travel_through_the_pubsub_emulator_to_the_push_endpoint() {
    let ps = runvoy_emulators::shared_pubsub();
    let n = std::process::id();
    let topic = format!("projects/runvoy-test/topics/logs-{n}");
    emulator_put(&ps.host, &topic, json!({})).await;
    let s = TestServer::start_with(
        &[
            "--events",
            "pubsub",
            "--insecure-push",
            "--gcp-local-sink-topic",
            &topic,
        ],
        &[("PUBSUB_EMULATOR_HOST", &ps.host)],
    );
    // A real push subscription posting to runvoyd, as Pub/Sub would.
    emulator_put(
        &ps.host,
        &format!("projects/runvoy-test/subscriptions/push-{n}"),
        json!({
            "topic": topic,
            "pushConfig": {"pushEndpoint": format!("{}/push/pubsub/logs", s.url)},
            "ackDeadlineSeconds": 10
        }),
    )
    .await;
    let out = s
        .runvoy()
        .args([
            "run",
            "-d",
            "-o",
            "json",
            "--",
            "sh",
            "-c",
            "echo first; sleep 4; echo second; exit 5",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("runvoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("run answer");
    let id = v["execution_id"].as_str().expect("execution_id").to_owned();
    // While the command sleeps, nothing but the push path stores records (the reconciler only
    // re-reads the record file for a hole or at the end).
    let c = s.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = c.logs_page(&id, 0, Some(100)).await.unwrap();
        if page.events.iter().any(|e| e.message == "first") {
            let e = c.get_execution(&id).await.unwrap();
            assert!(
                !e.status.is_terminal(),
                "finished before the push arrived: {e:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pushed record arrived; log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = s.wait_settled(&id, Duration::from_secs(30)).await;
    assert_eq!(e.exit_code, Some(5));
    let msgs: Vec<String> = s
        .all_logs(&id)
        .await
        .into_iter()
        .filter(|l| l.stream == runvoy_proto::record::Stream::Stdout)
        .map(|l| l.message)
        .collect();
    assert_eq!(msgs, vec!["first", "second"]);
    assert!(!s.log().contains("push refused"), "{}", s.log());
}

/// Log frames from a WebSocket URL until the completion frame.
async fn read_all_ws(url: &str) -> (Vec<(u64, String)>, runvoy_proto::ws::Disconnect) {
    use futures_util::StreamExt;
    use runvoy_proto::ws::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    let mut lines = Vec::new();
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg.expect("ws frame") {
            match Frame::parse(&t).expect("frame") {
                Frame::Log(ev) => lines.push((ev.seq, ev.message)),
                Frame::Disconnect(d) => return (lines, d),
            }
        }
    }
    panic!("the stream ended without a completion frame after {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_one_instance_sees_live_what_another_instance_stores() {
    // Two runvoyd processes on one Firestore database stand for two processor instances: A
    // runs the command and stores its records; the viewer's WebSocket is held by B, whose own
    // hub hears nothing of them.
    let env = firestore_env("two");
    let a = start(&["--store", "firestore"], &env);
    let b = TestServer::start_sharing(&a);
    let out = a
        .runvoy()
        .args([
            "run",
            "-d",
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 30); do echo line$i; sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("runvoy");
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // Connect to B while the command is still running.
    let url = b
        .client()
        .logs_page(&id, 0, Some(1))
        .await
        .expect("B serves the execution stored by A")
        .websocket_url;
    assert!(url.contains(b.url.trim_start_matches("http://")), "{url}");
    let (lines, done) = tokio::time::timeout(Duration::from_secs(60), read_all_ws(&url))
        .await
        .expect("B's viewer gets to the end");
    assert_eq!(done.status, runvoy_proto::Status::Succeeded);
    let seqs: Vec<u64> = lines.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=done.lines).collect::<Vec<_>>(),
        "gap-free, in order, no duplicates"
    );
    let output: Vec<&str> = lines
        .iter()
        .map(|(_, m)| m.as_str())
        .filter(|m| m.starts_with("line"))
        .collect();
    let want: Vec<String> = (1..=30).map(|i| format!("line{i}")).collect();
    assert_eq!(output, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_token_key_accept_each_others_stream_tokens() {
    let key = "ab".repeat(32);
    let mut env = firestore_env("tokens");
    env.push(("RUNVOY_TOKEN_KEY".into(), key));
    let a = start(&["--store", "firestore"], &env);
    let b = TestServer::start_sharing(&a);
    let r = a
        .client()
        .run(&runvoy_proto::RunRequest {
            command: "echo shared".into(),
            ..Default::default()
        })
        .await
        .expect("run");
    // The token A issued opens the stream on B.
    let on_b = r
        .websocket_url
        .replace(&a.url.replace("http", "ws"), &b.url.replace("http", "ws"));
    assert_ne!(on_b, r.websocket_url);
    tokio_tungstenite::connect_async(on_b)
        .await
        .expect("B accepts A's token");
    // Without the shared key each instance keeps its own: B refuses A's token.
    let c = start(&["--store", "firestore"], &firestore_env("tokens-own"));
    let d = TestServer::start_sharing(&c);
    let r = c
        .client()
        .run(&runvoy_proto::RunRequest {
            command: "echo own".into(),
            ..Default::default()
        })
        .await
        .expect("run");
    let on_d = r
        .websocket_url
        .replace(&c.url.replace("http", "ws"), &d.url.replace("http", "ws"));
    match tokio_tungstenite::connect_async(on_d).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // A key too short is refused at start.
    let out = Command::new(bin("runvoyd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .env("RUNVOY_TOKEN_KEY", "abcd")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 32"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
