//! `runvoy run` as people type it, with the real runvoyd and runvoy binaries: one argument is a
//! shell line, several are an exact argv; mistyped options start nothing; standard input is
//! forwarded byte for byte; the log WebSocket and the REST endings are clean.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use runvoy_proto::ws::Frame;
use runvoy_proto::{RunRequest, Status};
use runvoy_testkit::TestServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn remote(s: &TestServer, args: &[&str]) -> Output {
    s.runvoy()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runvoy")
}

/// Runs the CLI with `input` on its standard input (a pipe, so never a terminal).
fn remote_with_stdin(s: &TestServer, args: &[&str], input: &[u8]) -> Output {
    let mut child = s
        .runvoy()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runvoy");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Written from a thread: a refused input is not read to the end.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("runvoy");
    let _ = writer.join();
    out
}

async fn execution_count(s: &TestServer) -> usize {
    s.client()
        .list_executions(&runvoy_client::ListQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("list")
        .executions
        .len()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_argument_is_a_shell_line_several_are_an_exact_argv() {
    let s = TestServer::start();
    // (arguments after `run -q --`, expected stdout, expected exit code)
    let hundred: Vec<String> = (1..=100).map(|i| format!("w{i} x")).collect();
    let mut hundred_args = vec!["printf".to_string(), "%s\\n".to_string()];
    hundred_args.extend(hundred.iter().cloned());
    let hundred_want: String = hundred.iter().map(|w| format!("{w}\n")).collect();
    let cases: Vec<(Vec<String>, String, i32)> = vec![
        (argv(&["sh", "-c", "exit 42"]), String::new(), 42),
        (
            argv(&["sh", "-c", "echo \"$0\" \"$1\"", "a b", "c"]),
            "a b c\n".into(),
            0,
        ),
        (argv(&["echo", "it's"]), "it's\n".into(), 0),
        (
            argv(&["printf", "%s|", "a  b", "", "$HOME", "x;y", "*"]),
            "a  b||$HOME|x;y|*|".into(),
            0,
        ),
        (argv(&["printf", "[%s]", ""]), "[]".into(), 0),
        (argv(&["echo", "--detach", "-q"]), "--detach -q\n".into(), 0),
        (hundred_args, hundred_want, 0),
        // One argument: a shell line, expanded remotely.
        (argv(&["echo a b | wc -w; exit 3"]), "2\n".into(), 3),
        (
            argv(&["printf '%s' \"$HOME\" | grep -c '^/'"]),
            "1\n".into(),
            0,
        ),
    ];
    for (words, want, code) in &cases {
        let mut args = vec!["run", "-q", "--"];
        args.extend(words.iter().map(String::as_str));
        let out = remote(&s, &args);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&stdout(&out), want, "{words:?}");
    }

    // Without `--`, words after the first one belong to the command too.
    let out = remote(&s, &["run", "-q", "echo", "--detach", "hi"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "--detach hi\n".into())
    );

    // Stored and shown faithfully: the argv itself, and a shell line that pastes back.
    let words = argv(&["printf", "%s|", "it's", "a b", "", "$HOME"]);
    let mut args = vec!["run", "-d", "-o", "json", "--"];
    args.extend(words.iter().map(String::as_str));
    let out = remote(&s, &args);
    assert!(out.status.success(), "{out:?}");
    let r: runvoy_proto::RunResponse = serde_json::from_slice(&out.stdout).unwrap();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.argv.as_ref(), Some(&words));
    assert_eq!(e.command, r#"printf '%s|' 'it'\''s' 'a b' '' '$HOME'"#);
    let shown = remote(&s, &["status", &r.execution_id]);
    assert!(
        stdout(&shown).contains(&format!("{}\n", e.command)),
        "{}",
        stdout(&shown)
    );
    let direct = remote(&s, &["logs", "-q", &r.execution_id]);
    assert_eq!(stdout(&direct), "it's|a b||$HOME|");
    // The shown command, run as a shell line, does exactly the same.
    let pasted = remote(&s, &["run", "-q", &e.command]);
    assert_eq!(stdout(&pasted), stdout(&direct));
    let listed = remote(&s, &["list", "-o", "json"]);
    let list: Vec<runvoy_proto::Execution> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(list.iter().any(|x| x.argv.as_ref() == Some(&words)));
    // A shell line is stored as given, with no argv.
    let line = list
        .iter()
        .find(|x| x.command == "echo a b | wc -w; exit 3");
    assert_eq!(line.map(|x| x.argv.is_none()), Some(true));
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_options_are_usage_errors_and_start_nothing() {
    let s = TestServer::start();
    let before = execution_count(&s).await;
    for (args, flag) in [
        (&["run", "--timout", "10m", "--", "true"][..], "--timout"),
        (&["run", "-x", "echo", "hi"], "-x"),
        (&["run", "--detatch", "echo", "hi"], "--detatch"),
        (&["run"], "COMMAND"),
    ] {
        let out = remote(&s, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} must name {flag}: {err}");
    }
    // `--help` is not an error.
    let help = remote(&s, &["run", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = stdout(&help);
    assert!(text.contains("runvoy run -- sh -c 'exit 42'"), "{text}");
    assert!(
        text.contains("runvoy run 'make test && make lint'"),
        "{text}"
    );
    assert_eq!(
        execution_count(&s).await,
        before,
        "no execution was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_forwarded_byte_for_byte() {
    let s = TestServer::start();
    let out = remote_with_stdin(&s, &["run", "-q", "--", "cat"], b"hi\n");
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), "hi\n".into()));

    // Binary, no final newline, close to the limit.
    let data: Vec<u8> = (0..1024 * 1024 - 7)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = remote_with_stdin(&s, &["run", "-q", "--", "cat"], &data);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "{} bytes back for {}",
        out.stdout.len(),
        data.len()
    );
    let out = remote_with_stdin(&s, &["run", "-q", "wc -c"], &data);
    assert_eq!(stdout(&out).trim(), data.len().to_string());

    let lines = b"a\nb b\nc\n";
    let out = remote_with_stdin(&s, &["run", "-q", "--", "wc", "-l"], lines);
    assert_eq!(stdout(&out).trim(), "3");
    let out = remote_with_stdin(&s, &["run", "-q", "--", "grep", "-c", "b b"], lines);
    assert_eq!(stdout(&out), "1\n");

    // --no-stdin: the command reads end-of-file.
    let out = remote_with_stdin(&s, &["run", "-q", "--no-stdin", "--", "wc", "-c"], lines);
    assert_eq!(stdout(&out).trim(), "0");

    // The input is not left behind in the execution's directory.
    let r = remote_with_stdin(&s, &["run", "-d", "--", "cat"], b"secret input\n");
    let id = stdout(&r).trim().to_string();
    s.wait_settled(&id, Duration::from_secs(30)).await;
    if runvoy_testkit::backend::test_backend().local_compute() {
        let dir = s.data_dir().join("executions").join(&id);
        assert!(dir.join("job.json").exists());
        for leftover in ["stdin", "workspace/.runvoy/stdin"] {
            assert!(!dir.join(leftover).exists(), "{leftover} must be gone");
        }
    }

    // Over the limit: a clear error before anything starts.
    let before = execution_count(&s).await;
    let big = vec![b'x'; runvoy_proto::MAX_STDIN_BYTES + 1];
    let out = remote_with_stdin(&s, &["run", "-q", "--", "cat"], &big);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("standard input is larger than"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(execution_count(&s).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_is_forwarded_and_run_json_prints_a_summary() {
    let s = TestServer::start();
    let out = s
        .runvoy()
        .args(["run", "-q", "echo $TERM"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "xterm-256color\n");
    let out = remote(
        &s,
        &[
            "run",
            "-q",
            "-o",
            "json",
            "--",
            "sh",
            "-c",
            "echo out; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    let text = stdout(&out);
    let json = text.strip_prefix("out\n").expect("streamed output first");
    let e: runvoy_proto::Execution = serde_json::from_str(json).expect("one JSON summary");
    assert_eq!((e.status, e.exit_code), (Status::Failed, Some(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_closes_with_1000_and_answers_a_client_close() {
    let s = TestServer::start();
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "echo one; echo two".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(&r.websocket_url)
        .await
        .unwrap();
    let mut done = false;
    let mut close = None;
    while let Some(msg) = ws.next().await {
        match msg.expect("frame") {
            Message::Text(t) => {
                if let Frame::Disconnect(d) = Frame::parse(&t).unwrap() {
                    assert_eq!(d.status, Status::Succeeded);
                    done = true;
                }
            }
            Message::Close(f) => {
                close = Some(f);
                break;
            }
            _ => {}
        }
    }
    assert!(done, "completion frame before the close");
    let f = close.expect("a close frame").expect("with a code");
    assert_eq!(f.code, CloseCode::Normal);
    assert_eq!(f.reason.as_str(), "execution completed");

    // A finished execution's logs still hand out a URL: its socket serves the backlog, the
    // completion frame and closes 1000 at once.
    let page = c.logs_page(&r.execution_id, 0, None).await.unwrap();
    assert!(page.status.is_terminal());
    let (mut ws, _) = tokio_tungstenite::connect_async(&page.websocket_url)
        .await
        .unwrap();
    let mut lines = Vec::new();
    let mut code = None;
    let read = async {
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) => {
                    if let Frame::Log(ev) = Frame::parse(&t).unwrap() {
                        lines.push(ev.message);
                    }
                }
                Message::Close(f) => {
                    code = f.map(|f| f.code);
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("closed at once");
    assert!(
        lines.ends_with(&["one".to_string(), "two".to_string()]),
        "{lines:?}"
    );
    assert_eq!(code, Some(CloseCode::Normal));

    // A client-initiated close gets a close reply, not a dropped connection.
    let r = c
        .run(&RunRequest {
            command: "sleep 30".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(&r.websocket_url)
        .await
        .unwrap();
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return Ok(f),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{e}")),
                None => return Err("connection dropped without a close reply".into()),
            }
        }
    })
    .await
    .expect("a reply in time");
    let reply = reply.expect("close reply");
    assert_eq!(reply.map(|f| f.code), Some(CloseCode::Normal));
    c.kill(&r.execution_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_finished_execution_answers_200_with_its_state() {
    let s = TestServer::start();
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "exit 7".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.wait_settled(&r.execution_id, Duration::from_secs(30))
        .await;
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/executions/{}", s.url, r.execution_id))
        .header("X-API-Key", &s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["execution_id"], r.execution_id.as_str());
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["exit_code"], 7);
    let out = remote(&s, &["kill", &r.execution_id]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("already finished (FAILED)"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_list_is_a_bare_array_paged_by_link_header() {
    let s = TestServer::start();
    let c = s.client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = c
            .run(&RunRequest {
                command: format!("exit {}", i % 2),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(r.execution_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in &ids {
        s.wait_settled(id, Duration::from_secs(30)).await;
    }
    ids.reverse();
    let http = reqwest::Client::new();
    let mut url = format!("{}/api/v1/executions?limit=2", s.url);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let resp = http
            .get(&url)
            .header("X-API-Key", &s.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let link = resp
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = resp.json().await.unwrap();
        let arr = body.as_array().expect("a bare JSON array");
        assert!(arr.len() <= 2);
        seen.extend(
            arr.iter()
                .map(|e| e["execution_id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        let Some(link) = link else { break };
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(t, _)| t.to_string())
            .unwrap_or_else(|| panic!("not a next link: {link}"));
        assert!(
            target.starts_with("/api/v1/executions?limit=2&cursor="),
            "{target}"
        );
        url = format!("{}{target}", s.url);
    }
    assert_eq!(seen, ids, "newest first, each once");
    assert_eq!(pages, 3);

    // The status filter travels in the link too.
    let resp = http
        .get(format!("{}/api/v1/executions?limit=1&status=failed", s.url))
        .header("X-API-Key", &s.admin_key)
        .send()
        .await
        .unwrap();
    let link = resp.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("status=FAILED"), "{link}");
    let body: Vec<runvoy_proto::Execution> = resp.json().await.unwrap();
    assert_eq!(body.len(), 1);
    assert_eq!(body[0].status, Status::Failed);

    // The CLI follows the header: the hint names the cursor, --cursor gets the next page.
    let out = remote(&s, &["list", "-n", "3", "-o", "json"]);
    let first: Vec<runvoy_proto::Execution> = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let cursor = err
        .split("--cursor ")
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no cursor hint: {err}"));
    let out = remote(&s, &["list", "-n", "3", "-o", "json", "--cursor", &cursor]);
    let second: Vec<runvoy_proto::Execution> = serde_json::from_slice(&out.stdout).unwrap();
    let all: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|e| e.execution_id.clone())
        .collect();
    assert_eq!(all, ids);
}

/// `logs -f` only stops following on Ctrl-C, however often it is pressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_logs_follow_never_kills() {
    let s = TestServer::start();
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "echo ready; sleep 60".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut child = s
        .runvoy()
        .args(["logs", "-f", &r.execution_id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it follows (the line arrives), then press Ctrl-C twice.
    for _ in 0..400 {
        let page = c.logs_page(&r.execution_id, 0, None).await.unwrap();
        if page.events.iter().any(|e| e.message == "ready") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = c.get_execution(&r.execution_id).await.unwrap();
    assert_eq!(e.status, Status::Running, "logs -f must never kill");
    c.kill(&r.execution_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_a_quiet_exit_and_a_scheme_mismatch_is_explained() {
    let s = TestServer::start();
    // The reader goes away before runvoy writes: no message, no panic, 141 as for SIGPIPE.
    for args in [&["run", "-q", "--", "seq", "1", "200000"][..], &["list"]] {
        let child = s
            .runvoy()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // https:// against this plain-HTTP server: a clear error, not a silent death.
    let https = s.url.replace("http://", "https://");
    let out = s
        .runvoy()
        .env("RUNVOY_API_URL", &https)
        .arg("list")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("is it plain HTTP? try an http:// URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_local_backend_cannot_run_is_refused() {
    let s = TestServer::start();
    let before = execution_count(&s).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/run", s.url))
        .header("X-API-Key", &s.admin_key)
        .json(&serde_json::json!({"command": "true", "image": "alpine:3.19"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    // Compute that runs images runs only registered ones: this one is unknown there.
    let code = if runvoy_testkit::backend::test_backend().local_compute() {
        runvoy_proto::codes::IMAGE_NOT_SUPPORTED
    } else {
        runvoy_proto::codes::IMAGE_NOT_FOUND
    };
    assert_eq!(body["code"], code);
    assert!(
        body["error"].as_str().unwrap().contains("alpine:3.19"),
        "{body}"
    );
    let out = remote(&s, &["run", "-i", "alpine:3.19", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("({code})")), "{err}");
    assert_eq!(execution_count(&s).await, before, "nothing recorded");
    // The default image is what the backend runs: naming it is fine.
    let default = if runvoy_testkit::backend::test_backend().local_compute() {
        "local"
    } else {
        runvoy_testkit::backend::DOCKER_TEST_IMAGE
    };
    let out = remote(&s, &["run", "-q", "-i", default, "--", "echo", "ok"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), "ok\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_and_configure_never_overwrite_a_key_silently() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let cli = || {
        let mut c = std::process::Command::new(runvoy_testkit::bin("runvoy"));
        c.env("RUNVOY_CONFIG", &cfg)
            .env_remove("RUNVOY_API_URL")
            .env_remove("RUNVOY_API_KEY")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    };
    let out = cli()
        .args(["configure", "--api-url", &s.url, "--api-key", &s.admin_key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::read_to_string(&cfg).unwrap();

    let token = s
        .client()
        .create_user("dev@example.com", "developer")
        .await
        .unwrap()
        .claim_token;
    // No terminal to ask on: refused, the file unchanged and the token not spent.
    let out = cli().args(["claim", &token]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("already holds an API key; pass --force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
    let out = cli()
        .args(["configure", "--api-url", &s.url, "--api-key", "rvk_other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
    // The same key again is no overwrite.
    let out = cli()
        .args(["configure", "--api-url", &s.url, "--api-key", &s.admin_key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = cli().args(["claim", &token, "--force"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert_ne!(after, before);
    assert!(!after.contains(&s.admin_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_fits_80_columns_and_ids_are_accepted_by_unique_prefix() {
    let s = TestServer::start();
    let c = s.client();
    let mut ids = Vec::new();
    // 17 ids: two of them surely share their first hex digit.
    for i in 0..17 {
        let r = c
            .run(&RunRequest {
                command: format!("echo run {i}; echo {}", "long words ".repeat(20)),
                ..Default::default()
            })
            .await
            .unwrap();
        // One at a time: the per-user limit of unfinished executions.
        s.wait_settled(&r.execution_id, Duration::from_secs(60))
            .await;
        ids.push(r.execution_id);
    }
    let out = remote(&s, &["list", "-n", "5"]);
    let text = stdout(&out);
    assert!(text.starts_with("ID            STATUS"), "{text}");
    assert!(
        text.lines().next().unwrap().contains("USER"),
        "admins see whose runs: {text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
    let newest = &ids[16];
    assert!(
        text.contains(&format!("{}  SUCCEEDED", &newest[..12])),
        "{text}"
    );
    assert!(text.contains("s ago"), "{text}");
    assert!(!text.contains(newest.as_str()), "short ids only: {text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more results: --cursor "), "{err}");
    let wide = stdout(&remote(&s, &["list", "-n", "5", "--wide"]));
    assert!(wide.contains(newest.as_str()), "{wide}");
    assert!(
        wide.contains(&"long words ".repeat(20).trim_end().to_string()),
        "{wide}"
    );
    let all: Vec<runvoy_proto::Execution> =
        serde_json::from_slice(&remote(&s, &["list", "-n", "5", "--all", "-o", "json"]).stdout)
            .unwrap();
    assert_eq!(all.len(), 17);

    // A unique prefix works in status, logs and kill.
    let out = remote(&s, &["status", "-o", "json", &newest[..12]]);
    let e: runvoy_proto::Execution = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&e.execution_id, newest);
    let out = remote(&s, &["logs", "-q", &newest[..8]]);
    assert!(stdout(&out).starts_with("run 16\n"), "{}", stdout(&out));
    let out = remote(&s, &["kill", &newest[..10]]);
    assert!(
        stdout(&out).contains("already finished"),
        "{}",
        stdout(&out)
    );
    // An ambiguous one lists the candidates; an unknown one says so.
    let first = ids
        .iter()
        .map(|i| &i[..1])
        .find(|p| ids.iter().filter(|i| i.starts_with(*p)).count() > 1)
        .unwrap()
        .to_string();
    let out = remote(&s, &["status", &first]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("is ambiguous"), "{err}");
    for id in ids.iter().filter(|i| i.starts_with(&first)).take(10) {
        assert!(err.contains(id.as_str()), "{id} not listed: {err}");
    }
    let out = remote(&s, &["status", "ffffffffffff"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("no execution id starts with"), "{err}");
}
