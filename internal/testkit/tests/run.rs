//! End-to-end tests of `runvoy run` on the local backend with the real runvoyd and runvoy binaries.

use std::collections::HashSet;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use runvoy_proto::ws::Frame;
use runvoy_proto::{RunRequest, Status};
use runvoy_testkit::TestServer;
use tokio_tungstenite::tungstenite::Message;

fn server() -> TestServer {
    TestServer::start_with(&["--kill-grace", "2"], &[])
}

/// Waits until an execution has logged `line` (so a trap set before it is in place).
async fn wait_for_line(s: &TestServer, id: &str, line: &str) {
    let c = s.client();
    for _ in 0..800 {
        let page = c.logs_page(id, 0, Some(100)).await.unwrap();
        if page.events.iter().any(|e| e.message == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("execution {id} never printed {line:?}");
}

fn local(cmd: &str) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

fn remote(s: &TestServer, args: &[&str]) -> Output {
    s.runvoy()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runvoy")
}

fn run_q(s: &TestServer, cmd: &str) -> Output {
    remote(s, &["run", "-q", "--", cmd])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_byte_identical_to_running_locally() {
    let s = server();
    // Google's Pub/Sub emulator pushes a subscription's messages one at a time, each waiting
    // for the one before it to be stored (about ten a second on the Firestore emulator): on
    // the `gcp` test backend, where every record arrives by push, 20,000 one-line records
    // would take half an hour. The shape of the case stays the same there, at a tenth of it.
    let long = match runvoy_testkit::backend::test_backend() {
        runvoy_testkit::backend::TestBackend::Gcp => "seq 1 2000",
        _ => "seq 1 20000",
    };
    let cases = [
        "echo hello; echo world",
        "printf 'a\\377\\376b\\n\\300\\n'",
        "printf 'cr\\rline\\r\\n\\ttab\\t\\n\\033[31mred\\033[0m \\033[1;4mbold\\033[0m\\n'",
        "head -c 1048576 /dev/zero | tr '\\0' 'x'; echo",
        "printf 'no final newline'",
        "true",
        "printf '\\n\\n\\n'",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf 'e-nonl' >&2",
        "printf '\\0nul\\0\\n'",
        long,
        // Binary output: long runs without a newline, split into several records.
        // (Generated rather than read from a binary: the image's files differ from the host's.)
        "seq 1 60000 | tr '\\n0123456789' '\\377\\0\\201\\202\\203\\204\\205\\206\\207\\210\\211' | head -c 300000; \
         seq 1 20000 | tr '\\n' '\\300' | head -c 70000 >&2",
    ];
    for (cmd, argv_form) in cases.iter().flat_map(|c| [(*c, false), (*c, true)]) {
        let want = local(cmd);
        // Both command forms: the shell line itself, and the argv `/bin/sh -c LINE`.
        let got = if argv_form {
            remote(&s, &["run", "-q", "--", "/bin/sh", "-c", cmd])
        } else {
            run_q(&s, cmd)
        };
        assert_eq!(
            got.status.code(),
            want.status.code(),
            "exit code of {cmd:?}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(
            got.stdout == want.stdout,
            "stdout of {cmd:?} differs ({} vs {} bytes)",
            got.stdout.len(),
            want.stdout.len()
        );
        assert!(
            got.stderr == want.stderr,
            "stderr of {cmd:?} differs: {:?} vs {:?}",
            String::from_utf8_lossy(&got.stderr),
            String::from_utf8_lossy(&want.stderr)
        );
        // `runvoy logs ID` (stored records, paged) gives the same bytes afterwards.
        let newest = s
            .client()
            .list_executions(&runvoy_client::ListQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap()
            .executions
            .remove(0);
        if argv_form {
            assert_eq!(
                newest.argv.as_deref(),
                Some(&["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()][..])
            );
            assert_eq!(
                newest.command,
                runvoy_proto::shell_join(&["/bin/sh", "-c", cmd])
            );
        } else {
            assert_eq!((newest.command.as_str(), newest.argv), (cmd, None));
        }
        s.wait_settled(&newest.execution_id, Duration::from_secs(60))
            .await;
        let stored = remote(&s, &["logs", "-q", &newest.execution_id]);
        assert_eq!(stored.status.code(), Some(0), "logs of {cmd:?}");
        assert!(
            stored.stdout == want.stdout,
            "`runvoy logs` stdout of {cmd:?} differs ({} vs {} bytes)",
            stored.stdout.len(),
            want.stdout.len()
        );
        assert!(
            stored.stderr == want.stderr,
            "`runvoy logs` stderr of {cmd:?} differs: {:?} vs {:?}",
            String::from_utf8_lossy(&stored.stderr),
            String::from_utf8_lossy(&want.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_exit_codes_are_returned() {
    let s = server();
    for (cmd, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("kill -9 $$", 137),
        (
            // (The `gcp` test backend's fake platform runs its tasks on local compute.)
            if runvoy_testkit::backend::test_backend()
                != runvoy_testkit::backend::TestBackend::Docker
            {
                // The runner runs from its installed path: no copy of it in any workspace.
                "test ! -e .runvoy/runvoy-runner && test -d .runvoy"
            } else {
                // The user's image has no runner: the sidecar put one into the workspace.
                "test -x .runvoy/runvoy-runner"
            },
            0,
        ),
    ] {
        let out = run_q(&s, cmd);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    let codes: HashSet<_> = list
        .executions
        .iter()
        .map(|e| (e.status, e.exit_code))
        .collect();
    assert!(codes.contains(&(Status::Succeeded, Some(0))));
    assert!(codes.contains(&(Status::Failed, Some(42))));
    assert!(codes.contains(&(Status::Failed, Some(137))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_the_command_and_marks_it_stopped() {
    let s = server();
    let out = remote(
        &s,
        &[
            "run",
            "--detach",
            "--",
            "trap 'echo got term; exit 7' TERM; echo started; sleep 60 & wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Wait until the trap is installed (it prints "started" right after), then kill through
    // the CLI.
    wait_for_line(&s, &id, "started").await;
    let k = remote(&s, &["kill", &id]);
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    let e = s.wait_settled(&id, Duration::from_secs(30)).await;
    assert_eq!(e.status, Status::Stopped);
    assert_eq!(e.exit_code, Some(7));
    let text: Vec<String> = s
        .all_logs(&id)
        .await
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert!(text.contains(&"got term".to_string()), "{text:?}");
    // Killing again: already terminal → 200 with its status; the CLI says so and succeeds.
    let again = remote(&s, &["kill", &id]);
    assert!(again.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let s = server();
    let r = s
        .client()
        .run(&RunRequest {
            command: "trap '' TERM; echo ready; sleep 60".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for_line(&s, &r.execution_id, "ready").await;
    s.client().kill(&r.execution_id).await.unwrap();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Stopped);
    assert_eq!(e.exit_code, Some(137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fires_and_the_cli_exits_124() {
    let s = server();
    let out = remote(
        &s,
        &[
            "run",
            "-q",
            "--timeout",
            "1s",
            "--",
            "echo before; sleep 30; echo after",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"before\n");
    let list = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    let e = &list.executions[0];
    assert_eq!(e.status, Status::Failed);
    assert!(e.timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_then_follow_logs() {
    let s = server();
    let cmd = "for i in $(seq 1 50); do echo line $i; echo err $i >&2; sleep 0.01; done; exit 3";
    let out = remote(&s, &["run", "--detach", "--", cmd]);
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(runvoy_domain_id(&id), "detach prints the id: {id:?}");
    let follow = remote(&s, &["logs", "-f", "-q", &id]);
    let want = local(cmd);
    assert_eq!(follow.status.code(), Some(3));
    assert_eq!(follow.stdout, want.stdout);
    assert_eq!(follow.stderr, want.stderr);
    // Without -f, after the end: the same bytes.
    let again = remote(&s, &["logs", "-q", &id]);
    assert_eq!(again.stdout, want.stdout);
}

fn runvoy_domain_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads log frames from a WebSocket URL until `stop_after` records or the disconnect frame.
async fn read_ws(
    url: &str,
    stop_after: Option<usize>,
) -> (Vec<u64>, Option<runvoy_proto::ws::Disconnect>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    let mut seqs = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg.expect("ws frame") {
            Message::Text(t) => match Frame::parse(&t).expect("frame") {
                Frame::Log(ev) => {
                    seqs.push(ev.seq);
                    if stop_after.is_some_and(|n| seqs.len() >= n) {
                        return (seqs, None); // drop the socket mid-stream
                    }
                }
                Frame::Disconnect(d) => return (seqs, Some(d)),
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    (seqs, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_resumes_without_gap_or_duplicate() {
    let s = server();
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "for i in $(seq 1 300); do echo $i; sleep 0.005; done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen: Vec<u64> = Vec::new();
    let mut url = r.websocket_url.clone();
    let mut disconnect = None;
    for round in 0..50 {
        let (seqs, d) = read_ws(
            &format!("{url}&after_seq={}", seen.last().copied().unwrap_or(0)),
            Some(40 + round),
        )
        .await;
        seen.extend(seqs);
        if d.is_some() {
            disconnect = d;
            break;
        }
        // A fresh token for the next connection, as a client would get it.
        url = c
            .logs_page(&r.execution_id, 0, Some(1))
            .await
            .unwrap()
            .websocket_url;
        if s.client()
            .get_execution(&r.execution_id)
            .await
            .unwrap()
            .logs_complete
        {
            let (rest, d) = read_ws(
                &format!("{url}&after_seq={}", seen.last().copied().unwrap_or(0)),
                None,
            )
            .await;
            seen.extend(rest);
            disconnect = d;
            break;
        }
    }
    let d = disconnect.expect("completion frame");
    assert_eq!(d.status, Status::Succeeded);
    let want: Vec<u64> = (1..=d.lines).collect();
    assert_eq!(seen, want, "no gap, no duplicate");
    assert_eq!(d.lines, 301, "banner + 300 lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_with_bad_token_is_refused_at_handshake() {
    let s = server();
    let r = s
        .client()
        .run(&RunRequest {
            command: "echo x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let bad = r.websocket_url.replace("token=", "token=AAAA");
    let err = tokio_tungstenite::connect_async(bad)
        .await
        .expect_err("must be refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("unexpected {other:?}"),
    }
    let no_token = r.websocket_url.split('?').next().unwrap().to_owned();
    assert!(tokio_tungstenite::connect_async(no_token).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_executions_keep_every_line_exactly_once() {
    // One user runs all fifty at once: beyond the default concurrency limits.
    let s = TestServer::start_with(
        &[
            "--kill-grace",
            "2",
            "--max-concurrent-per-user",
            "0",
            "--max-concurrent-total",
            "0",
        ],
        &[],
    );
    let c = s.client();
    let mut ids = Vec::new();
    // Google's Firestore emulator runs transactions one at a time under lock timeouts: fifty
    // runs at once would measure the emulator, not runvoy. Ten still overlap every step.
    let runs = match runvoy_testkit::backend::test_backend() {
        runvoy_testkit::backend::TestBackend::Local => 50,
        _ => 10,
    };
    for i in 0..runs {
        let cmd = format!("for j in $(seq 1 200); do echo {i}-$j; done; echo {i}-err >&2");
        ids.push((
            i,
            c.run(&RunRequest {
                command: cmd,
                ..Default::default()
            })
            .await
            .unwrap()
            .execution_id,
        ));
    }
    for (i, id) in &ids {
        let e = s.wait_settled(id, Duration::from_secs(120)).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        let logs = s.all_logs(id).await;
        let seqs: Vec<u64> = logs.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (1..=logs.len() as u64).collect::<Vec<_>>());
        let out: Vec<&str> = logs
            .iter()
            .filter(|l| l.stream == runvoy_proto::record::Stream::Stdout)
            .map(|l| l.message.as_str())
            .collect();
        let want: Vec<String> = (1..=200).map(|j| format!("{i}-{j}")).collect();
        assert_eq!(out, want);
        assert_eq!(
            logs.iter()
                .filter(|l| l.message == format!("{i}-err"))
                .count(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_get_clear_4xx_and_change_nothing() {
    let s = server();
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", s.url);
    let count = || async {
        s.client()
            .list_executions(&Default::default())
            .await
            .unwrap()
            .executions
            .len()
    };
    let before = count().await;

    /// One bad request and the answer it must get.
    struct Case<'a> {
        method: &'a str,
        path: &'a str,
        credentials: Option<(&'a str, &'a str)>,
        json: bool,
        body: &'a str,
        status: u16,
        code: &'a str,
    }
    let key = s.admin_key.as_str();
    let bearer = format!("Bearer {key}");
    let with_key = Some(("X-API-Key", key));
    let get = |path, credentials, status, code| Case {
        method: "GET",
        path,
        credentials,
        json: false,
        body: "",
        status,
        code,
    };
    let run = |credentials, json, body, status, code| Case {
        method: "POST",
        path: "/run",
        credentials,
        json,
        body,
        status,
        code,
    };
    let mut cases = vec![
        get(
            "/executions/0123456789abcdef0123456789abcdef",
            with_key,
            404,
            "NOT_FOUND",
        ),
        get(
            "/executions?limit=0",
            Some(("Authorization", bearer.as_str())),
            400,
            "INVALID_REQUEST",
        ),
        get("/executions?status=BOGUS", with_key, 400, "INVALID_REQUEST"),
        get("/nope", with_key, 404, "NOT_FOUND"),
        run(
            with_key,
            false,
            "{\"command\":\"x\"}",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        run(None, true, "{\"command\":\"echo\"}", 401, "UNAUTHORIZED"),
        run(
            Some(("X-API-Key", "rvk_wrong")),
            true,
            "{\"command\":\"echo\"}",
            401,
            "INVALID_API_KEY",
        ),
    ];
    for bad in [
        "{",
        "{\"command\": 5}",
        "[]",
        "{\"command\":\"x\",\"bogus\":1}",
        "{\"command\":\"  \"}",
        "{\"command\":\"x\",\"timeout\":-1}",
        "{\"command\":\"x\",\"env\":{\"1BAD\":\"v\"}}",
    ] {
        cases.push(run(with_key, true, bad, 400, "INVALID_REQUEST"));
    }
    for c in cases {
        let what = format!("{} {} {}", c.method, c.path, c.body);
        let mut req = http.request(c.method.parse().unwrap(), format!("{api}{}", c.path));
        if let Some((h, v)) = c.credentials {
            req = req.header(h, v);
        }
        if c.json {
            req = req.header("content-type", "application/json");
        }
        if !c.body.is_empty() {
            req = req.body(c.body.to_owned());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), c.status, "{what}");
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(answer["code"], c.code, "{what}");
        assert!(
            answer["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: a message"
        );
    }

    assert_eq!(count().await, before, "rejected requests wrote nothing");
    assert!(s.execution_dirs().is_empty(), "{:?}", s.execution_dirs());

    // The CLI turns errors into exit code 125 with a message.
    let out = s
        .runvoy()
        .env("RUNVOY_API_KEY", "rvk_wrong")
        .args(["run", "--", "echo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_API_KEY"));
    let out = s
        .runvoy()
        .env("RUNVOY_API_URL", "http://127.0.0.1:1")
        .args(["status", "0123456789abcdef0123456789abcdef"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_newest_first_and_openapi_is_served() {
    let s = server();
    let c = s.client();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            c.run(&RunRequest {
                command: format!("exit {i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .execution_id,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = c
            .list_executions(&runvoy_client::ListQuery {
                limit: Some(2),
                status: vec![],
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.executions.into_iter().map(|e| e.execution_id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/run"]["post"].is_object());
    let h: serde_json::Value = reqwest::get(format!("{}/api/v1/health", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let backend = runvoy_testkit::backend::test_backend().server_backend();
    assert_eq!(h["backend"], backend);
}

/// The state letter of a process (`Z` for a zombie), or `None` once it is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_websocket_client_connected_shuts_down_and_the_run_continues() {
    let mut s = server();
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "for i in $(seq 1 200); do echo $i; sleep 0.01; done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(r.websocket_url.as_str())
        .await
        .expect("ws connect");
    // Wait for live records, so the socket is in the middle of a stream.
    let mut seen = 0;
    while seen < 5 {
        match ws.next().await.expect("frame").expect("frame") {
            Message::Text(t) => {
                if let Frame::Log(_) = Frame::parse(&t).unwrap() {
                    seen += 1;
                }
            }
            _ => continue,
        }
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.data_dir().join("server.json")).unwrap()).unwrap();
    let pid = info["pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling the runvoyd this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The connected client is told to reconnect (1012) rather than left hanging.
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1012));
    // runvoyd exits on its own with the client still connected (this only guards against a
    // hang; it measures nothing).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !matches!(proc_state(pid), None | Some('Z')) {
        assert!(
            std::time::Instant::now() < deadline,
            "runvoyd did not stop after SIGTERM; log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ws);
    assert!(s.log().contains("runvoyd stopped"), "{}", s.log());
    // The execution did not depend on runvoyd: after a restart it ends with every line.
    s.restart();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(120))
        .await;
    assert_eq!((e.status, e.exit_code), (Status::Succeeded, Some(0)));
    let out: Vec<String> = s
        .all_logs(&r.execution_id)
        .await
        .into_iter()
        .filter(|l| l.stream == runvoy_proto::record::Stream::Stdout)
        .map(|l| l.message)
        .collect();
    assert_eq!(out, (1..=200).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn every_serve_flag_is_also_an_environment_variable() {
    let out = Command::new(runvoy_testkit::bin("runvoyd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // Each option's block runs from its `--flag` line to the next one.
    let mut flags = 0;
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("--").or_else(|| {
            t.strip_prefix('-')
                .and_then(|r| r.split_once(", --").map(|(_, l)| l))
        }) {
            let name = rest.split([' ', '=']).next().unwrap().to_string();
            blocks.push((name, String::new()));
        } else if let Some((_, b)) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    for (name, block) in &blocks {
        if name == "help" || name == "version" {
            continue;
        }
        flags += 1;
        // `--backend` keeps the variable name of runvoy's deployments.
        let var = match name.as_str() {
            "backend" => "BACKEND_PROVIDER".to_owned(),
            n => n.to_uppercase().replace('-', "_"),
        };
        // A secret's value is hidden from the help: `[env: NAME]`.
        let want = format!("[env: RUNVOY_{var}=");
        assert!(
            block.contains(&want) || block.contains(&format!("[env: RUNVOY_{var}]")),
            "--{name} cannot be set as {want}…]:\n{block}"
        );
    }
    assert!(flags >= 10, "parsed {flags} flags from:\n{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_version_completion_and_json_outputs() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let s = server();
    let cfg = s.data_dir().join("cli").join("config.yaml");
    let bare = || {
        let mut c = s.runvoy();
        c.env_remove("RUNVOY_API_URL")
            .env_remove("RUNVOY_API_KEY")
            .env("RUNVOY_CONFIG", &cfg);
        c
    };
    // configure: prompts on stderr, answers on stdin.
    let mut child = bare()
        .arg("configure")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    write!(child.stdin.take().unwrap(), "{}\n{}\n", s.url, s.admin_key).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the config file holds a key");
    // version: the CLI's and the server's, through the config file just written.
    let out = bare().arg("version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!("runvoy {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let backend = runvoy_testkit::backend::test_backend().server_backend();
    assert!(text.contains(&format!("(backend {backend})")), "{text}");
    // completion
    for shell in ["bash", "zsh", "fish"] {
        let out = bare().args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("runvoy"));
    }
    // status -o json and list -o json parse and agree.
    let out = bare().args(["run", "-q", "--", "exit 4"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let out = bare().args(["list", "-o", "json"]).output().unwrap();
    let list: Vec<runvoy_proto::Execution> = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0].execution_id.clone();
    let out = bare().args(["status", "-o", "json", &id]).output().unwrap();
    let e: runvoy_proto::Execution = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((e.command.as_str(), e.exit_code), ("exit 4", Some(4)));
    assert_eq!(e.status, Status::Failed);
}
