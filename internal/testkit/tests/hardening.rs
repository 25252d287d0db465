//! The HTTP/WebSocket surface and the data at rest against hostile use, with the real runvoyd:
//! idle connections, malformed requests, claim tokens and link previewers, request ids, links
//! built from request headers, revoked and rotated users' streams, caching, the per-user stream
//! limit, and file permissions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use runvoy_testkit::http::{call, call_with};
use runvoy_testkit::{TestServer, bin};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Creates a user and claims its key; returns the key.
async fn new_user(s: &TestServer, email: &str, role: &str) -> String {
    let a = call(
        s,
        "POST",
        "/users/create",
        Some(&s.admin_key),
        Some(json!({"email": email, "role": role})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let token = a.body["claim_token"].as_str().unwrap().to_owned();
    let c = call(s, "POST", &format!("/claim/{token}"), None, None).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    c.body["api_key"].as_str().unwrap().to_owned()
}

/// Starts `sleep 60` as the key's user; returns (execution id, websocket_url).
async fn run_sleep(s: &TestServer, key: &str) -> (String, String) {
    let a = call(
        s,
        "POST",
        "/run",
        Some(key),
        Some(json!({"command": "sleep 60"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    (
        a.body["execution_id"].as_str().unwrap().to_owned(),
        a.body["websocket_url"].as_str().unwrap().to_owned(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket: the socket, or the refused handshake's status and JSON body.
async fn ws_open(url: &str) -> Result<Ws, (u16, Value)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("websocket {e}"),
    }
}

/// Reads a stream until it is closed; returns the close code (None: ended without one).
async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the stream stayed open")
}

fn addr(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

/// Sends raw bytes and reads the whole answer (the server closes after an error).
fn raw(s: &TestServer, request: &[u8]) -> (u16, String, Value) {
    let mut c = TcpStream::connect(addr(s)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before it has read everything we send.
    let _ = c.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if let Some(i) = find(&out, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| out.len() >= i + 4 + n) {
                break;
            }
        }
    }
    let i = find(&out, b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&out));
    });
    let head = String::from_utf8_lossy(&out[..i]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_slice(&out[i + 4..]).unwrap_or(Value::Null);
    (status, head.to_lowercase(), body)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_neither_starve_requests_nor_stay_open() {
    let s = TestServer::start_with(
        &["--header-read-timeout", "3", "--max-connections", "300"],
        &[],
    );
    // Connections that never send a byte, like a scanner holding sockets open without a key.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addr(&s)).expect("connect"))
        .collect();
    // A request still gets an answer, with and without a key: the oldest idle connections
    // make room.
    let health = call(&s, "GET", "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let list = call(&s, "GET", "/executions", Some(&s.admin_key), None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    // Every idle socket ends up closed by the server: evicted at once, or after the timeout.
    for mut c in idle.into_iter().rev().take(50) {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rest = Vec::new();
        match c.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("an idle connection stayed open: {e}"),
        }
    }
    // A connection that sends half a request is closed too.
    let mut slow = TcpStream::connect(addr(&s)).unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "a partial request was answered"
    );
    // And the server still serves.
    assert_eq!(
        call(&s, "GET", "/health", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_get_the_json_error_body() {
    let s = TestServer::start();
    let long_uri = |n: usize| {
        format!(
            "GET /api/v1/health?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
    };
    let many_headers = format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let huge_header = format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(600 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "garbage",
            b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "bad header",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "URI over the API limit",
            long_uri(10 * 1024).into_bytes(),
            414,
            "URI_TOO_LONG",
        ),
        (
            "URI over the HTTP server's limit",
            long_uri(70 * 1024).into_bytes(),
            414,
            "URI_TOO_LONG",
        ),
        (
            "too many headers",
            many_headers.into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "headers over the HTTP server's buffer",
            huge_header.into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
        ),
    ];
    for (what, req, status, code) in cases {
        let (got, head, body) = raw(&s, &req);
        assert_eq!(got, status, "{what}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        assert!(head.contains("cache-control: no-store"), "{what}: {head}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(body["error"].is_string(), "{what}: {body}");
    }
    // Nothing broke: the next request is served.
    assert_eq!(
        call(&s, "GET", "/health", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_post_redeems_a_claim_token_and_unclaimed_users_can_be_reinvited() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    let create = |email: &'static str| {
        call(
            &s,
            "POST",
            "/users/create",
            Some(&root),
            Some(json!({"email": email, "role": "developer"})),
        )
    };
    let a = create("preview@example.com").await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let token = a.body["claim_token"].as_str().unwrap().to_owned();
    // What a link previewer or a prefetcher does: nothing is redeemed.
    for method in ["HEAD", "GET", "OPTIONS"] {
        let r = call(&s, method, &format!("/claim/{token}"), None, None).await;
        assert!(
            r.status.is_client_error() || r.status == StatusCode::OK && method == "OPTIONS",
            "{method}: {}",
            r.status
        );
        assert!(
            r.body.get("api_key").is_none(),
            "{method} redeemed: {}",
            r.body
        );
    }
    let r = call(&s, "GET", &format!("/claim/{token}"), None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["code"], "METHOD_NOT_ALLOWED");
    let c = call(&s, "POST", &format!("/claim/{token}"), None, None).await;
    assert_eq!(
        c.status,
        StatusCode::OK,
        "the token still works: {}",
        c.body
    );
    assert!(c.body["api_key"].as_str().unwrap().starts_with("rvk_"));

    // An invitation that went astray: inviting again issues a new token, the old one dies.
    let first = create("again@example.com").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let old = first.body["claim_token"].as_str().unwrap().to_owned();
    let second = create("again@example.com").await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let new = second.body["claim_token"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_eq!(
        call(&s, "POST", &format!("/claim/{old}"), None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let c = call(&s, "POST", &format!("/claim/{new}"), None, None).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    // A user who claimed their key is not replaced.
    let third = create("again@example.com").await;
    assert_eq!(third.status, StatusCode::CONFLICT, "{}", third.body);
    let key = c.body["api_key"].as_str().unwrap();
    assert_eq!(
        call(&s, "GET", "/users/me", Some(key), None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_always_the_servers_own() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    let a = call(
        &s,
        "POST",
        "/users/create",
        Some(&root),
        Some(json!({"email": "first@example.com", "role": "viewer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let rid_a = a.headers["x-request-id"].to_str().unwrap().to_owned();
    // Another request claiming A's id as its own.
    let b = call_with(
        &s,
        "POST",
        "/users/create",
        Some(&root),
        Some(json!({"email": "second@example.com", "role": "viewer"})),
        &[("x-request-id", &rid_a)],
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED);
    let rid_b = b.headers["x-request-id"].to_str().unwrap();
    assert_ne!(rid_b, rid_a);
    assert_eq!(b.headers["x-correlation-id"], rid_a.as_str());
    assert_eq!(b.body["user"]["created_by_request_id"], rid_b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = call(&s, "GET", &format!("/trace/{rid_a}"), Some(&root), None).await;
    assert_eq!(t.status, StatusCode::OK);
    let users: Vec<&str> = t.body["related_resources"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["first@example.com"]);
    assert!(
        !t.body.to_string().contains("second@example.com"),
        "{}",
        t.body
    );
}

/// The `websocket_url`s of `POST /run` and `GET /executions/{id}/logs` for a request whose
/// `Host` and `X-Forwarded-*` name another site.
async fn spoofed_ws_urls(s: &TestServer) -> (String, String) {
    let spoof: &[(&str, &str)] = &[
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
    ];
    let a = call_with(
        s,
        "POST",
        "/run",
        Some(&s.admin_key),
        Some(json!({"command": "true"})),
        spoof,
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["execution_id"].as_str().unwrap().to_owned();
    let logs = call_with(
        s,
        "GET",
        &format!("/executions/{id}/logs"),
        Some(&s.admin_key),
        None,
        spoof,
    )
    .await;
    (
        a.body["websocket_url"].as_str().unwrap().to_owned(),
        logs.body["websocket_url"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_urls_are_never_built_from_untrusted_headers() {
    let ws_url = spoofed_ws_urls;
    let plain = TestServer::start();
    for u in <[String; 2]>::from(ws_url(&plain).await) {
        assert!(
            u.starts_with(&format!("ws://{}/api/v1/executions/", addr(&plain))),
            "{u}"
        );
        assert!(!u.contains("evil"), "{u}");
    }
    drop(plain);
    let proxied = TestServer::start_with(&["--trusted-proxies", "10.0.0.0/8,127.0.0.1"], &[]);
    let (u, _) = ws_url(&proxied).await;
    assert!(
        u.starts_with("wss://evil.example/api/v1/executions/"),
        "a trusted proxy names the public host: {u}"
    );
    drop(proxied);
    let elsewhere = TestServer::start_with(&["--trusted-proxies", "10.0.0.0/8"], &[]);
    let (u, _) = ws_url(&elsewhere).await;
    assert!(!u.contains("evil"), "{u}");
    drop(elsewhere);
    let public = TestServer::start_with(
        &[
            "--public-url",
            "https://runvoy.example.com/",
            "--trusted-proxies",
            "127.0.0.1",
        ],
        &[],
    );
    let (u, _) = ws_url(&public).await;
    assert!(
        u.starts_with("wss://runvoy.example.com/api/v1/executions/"),
        "{u}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_tokens_end_with_revocation_and_key_rotation() {
    let s = TestServer::start();
    let root = s.admin_key.clone();

    // Revocation ends an open stream at once (not at the next keep-alive), and the tokens
    // minted before no longer open one.
    let key = new_user(&s, "revoked@example.com", "developer").await;
    let (id, url) = run_sleep(&s, &key).await;
    let mut ws = ws_open(&url).await.expect("handshake");
    let a = call(
        &s,
        "POST",
        "/users/revoke",
        Some(&root),
        Some(json!({"email": "revoked@example.com"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // Well under the 20 s keep-alive check.
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1008)
    );
    let (status, body) = ws_open(&url).await.expect_err("refused after revoke");
    assert_eq!(status, 401);
    assert_eq!(body["code"], "INVALID_TOKEN");
    call(
        &s,
        "DELETE",
        &format!("/executions/{id}"),
        Some(&root),
        None,
    )
    .await;

    // Rotating a key kills the tokens minted under the old one, and their open streams.
    let key = new_user(&s, "rotates@example.com", "developer").await;
    let (id, url) = run_sleep(&s, &key).await;
    let mut ws = ws_open(&url).await.expect("handshake");
    let r = call(&s, "POST", "/users/rotate-key", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new_key = r.body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1008)
    );
    let (status, body) = ws_open(&url).await.expect_err("refused after rotate");
    assert_eq!(status, 401);
    assert_eq!(body["code"], "INVALID_TOKEN");
    // A token minted under the new key works.
    let logs = call(
        &s,
        "GET",
        &format!("/executions/{id}/logs"),
        Some(&new_key),
        None,
    )
    .await;
    let fresh = logs.body["websocket_url"].as_str().unwrap();
    assert!(ws_open(fresh).await.is_ok());
    call(
        &s,
        "DELETE",
        &format!("/executions/{id}"),
        Some(&root),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answer_is_marked_no_store() {
    let s = TestServer::start();
    let a = call(
        &s,
        "POST",
        "/users/create",
        Some(&s.admin_key),
        Some(json!({"email": "cache@example.com", "role": "viewer"})),
    )
    .await;
    let token = a.body["claim_token"].as_str().unwrap().to_owned();
    let answers = [
        ("create", a),
        (
            "claim",
            call(&s, "POST", &format!("/claim/{token}"), None, None).await,
        ),
        (
            "claim again",
            call(&s, "POST", &format!("/claim/{token}"), None, None).await,
        ),
        ("health", call(&s, "GET", "/health", None, None).await),
        ("no key", call(&s, "GET", "/executions", None, None).await),
        (
            "rotate",
            call(&s, "POST", "/users/rotate-key", Some(&s.admin_key), None).await,
        ),
        ("unknown route", call(&s, "GET", "/nope", None, None).await),
        (
            "openapi",
            call(&s, "GET", "/openapi.json", None, None).await,
        ),
    ];
    for (what, a) in answers {
        assert_eq!(
            a.headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{what}: {:?}",
            a.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_log_streams_are_limited_per_user() {
    let s = TestServer::start_with(&["--max-streams-per-user", "3"], &[]);
    let (id, _) = run_sleep(&s, &s.admin_key).await;
    let url = || async {
        let a = call(
            &s,
            "GET",
            &format!("/executions/{id}/logs"),
            Some(&s.admin_key),
            None,
        )
        .await;
        a.body["websocket_url"].as_str().unwrap().to_owned()
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(ws_open(&url().await).await.expect("within the limit"));
    }
    let (status, body) = ws_open(&url().await).await.expect_err("over the limit");
    assert_eq!(status, 429);
    assert_eq!(body["code"], "TOO_MANY_STREAMS");
    // Another user is not affected.
    let key = new_user(&s, "other@example.com", "operator").await;
    let a = call(
        &s,
        "GET",
        &format!("/executions/{id}/logs"),
        Some(&key),
        None,
    )
    .await;
    let other = ws_open(a.body["websocket_url"].as_str().unwrap()).await;
    assert!(other.is_ok(), "{:?}", other.err());
    // Closing a stream frees its slot.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ws_open(&url().await).await {
            Ok(_) => break,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the slot was not freed: {e:?}"),
        }
    }
    call(
        &s,
        "DELETE",
        &format!("/executions/{id}"),
        Some(&s.admin_key),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_its_secrets_are_owner_only() {
    let mut s = TestServer::start();
    // One write so the database has its WAL companions.
    let (id, _) = run_sleep(&s, &s.admin_key).await;
    call(
        &s,
        "DELETE",
        &format!("/executions/{id}"),
        Some(&s.admin_key),
        None,
    )
    .await;
    let data = s.data_dir();
    for f in [
        "runvoy.db",
        "runvoy.db-wal",
        "runvoy.db-shm",
        "token.key",
        "admin.key",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // Files an older version (or a permissive umask) left readable are tightened on start.
    s.stop();
    for f in ["runvoy.db", "token.key", "admin.key"] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    s.restart();
    for f in [
        "runvoy.db",
        "runvoy.db-wal",
        "runvoy.db-shm",
        "token.key",
        "admin.key",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f} after restart");
    }
    drop(s);

    // A data dir runvoyd creates is owner-only: 0700 when commands run as runvoyd's user, 0711
    // (search, no listing) when they run sandboxed as their own uids (runvoyd as root) and must
    // reach their workspace; nobody else may list the executions either.
    let tmp = tempfile::tempdir().unwrap();
    let serve = |dir: &Path, extra: &[&str]| {
        Command::new(bin("runvoyd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-client-config"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runvoyd")
    };
    let started = |mut child: std::process::Child, dir: &Path| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("server.json").exists() {
            assert!(Instant::now() < deadline, "runvoyd did not start");
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                panic!("runvoyd exited: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
    };
    let plain = tmp.path().join("p/data");
    started(serve(&plain, &["--isolation", "process"]), &plain);
    assert_eq!(mode(&plain), 0o700);
    assert_eq!(mode(&plain.join("executions")), 0o700);
    let sandboxed = tmp.path().join("a/b/data");
    started(serve(&sandboxed, &[]), &sandboxed);
    // SAFETY: plain syscall.
    let walkable = if unsafe { libc::geteuid() } == 0 {
        0o711
    } else {
        0o700
    };
    assert_eq!(mode(&sandboxed), walkable);
    assert_eq!(mode(&sandboxed.join("executions")), walkable);
    for f in ["runvoy.db", "token.key", "admin.key"] {
        assert_eq!(mode(&sandboxed.join(f)), 0o600, "{f}");
    }

    // One that group or others can write is refused with a clear message.
    std::fs::set_permissions(&sandboxed, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = serve(&sandboxed, &[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to use data dir") && err.contains(&format!("chmod {walkable:o}")),
        "{err}"
    );
}
