//! Git checkout with the real binaries: the sidecar clones from a `git daemon` (and, for
//! credentials, from `git http-backend` behind a small HTTP server that demands basic auth)
//! on loopback; the command starts in the checkout; a failed clone ends FAILED with the
//! reason, exit code 125, before the command runs; a token is never sent over plain http and
//! reaches no log, API answer or file; over https (a test CA given to runvoyd as
//! `SSL_CERT_FILE`) the token clones the private repository.
//!
//! Needs the `git` CLI (daemon and http-backend) to make and serve the test repositories.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runvoy_client::ClientError;
use runvoy_proto::record::Stream;
use runvoy_proto::{Execution, RunRequest, Status};
use runvoy_testkit::TestServer;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Repositories under a temp dir: `proj` with `VERSION` 1 (tagged `v1`, commit `first`), then
/// 2 on `main`, and 3 on branch `feature`; `sub/dir/marker` exists from the first commit.
struct Repos {
    root: tempfile::TempDir,
    first: String,
}

fn repos() -> Repos {
    let root = tempfile::tempdir().unwrap();
    let p = root.path().join("proj");
    std::fs::create_dir_all(p.join("sub/dir")).unwrap();
    git(&p, &["init", "-q", "-b", "main"]);
    std::fs::write(p.join("sub/dir/marker"), "deep\n").unwrap();
    std::fs::write(p.join("VERSION"), "1\n").unwrap();
    git(&p, &["add", "."]);
    git(&p, &["commit", "-qm", "one"]);
    git(&p, &["tag", "v1"]);
    let first = git(&p, &["rev-parse", "HEAD"]);
    std::fs::write(p.join("VERSION"), "2\n").unwrap();
    git(&p, &["commit", "-qam", "two"]);
    git(&p, &["checkout", "-qb", "feature"]);
    std::fs::write(p.join("VERSION"), "3\n").unwrap();
    git(&p, &["commit", "-qam", "three"]);
    git(&p, &["checkout", "-q", "main"]);
    Repos { root, first }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `git daemon` on loopback, killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(root: &Path) -> Daemon {
    // git daemon takes a fixed port: pick a free one, and try again if another process took it
    // in between.
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("git")
            .arg("daemon")
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Daemon { child, port };
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("git daemon did not start");
}

fn server() -> TestServer {
    TestServer::start()
}

fn run_in(repo: &str, git_ref: Option<&str>, path: Option<&str>, cmd: &str) -> RunRequest {
    RunRequest {
        command: cmd.into(),
        git_repo: Some(repo.into()),
        git_ref: git_ref.map(Into::into),
        git_path: path.map(Into::into),
        ..Default::default()
    }
}

async fn finished(s: &TestServer, req: &RunRequest) -> (Execution, Vec<String>, Vec<String>) {
    let r = s.client().run(req).await.expect("run");
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(60))
        .await;
    let logs = s.all_logs(&r.execution_id).await;
    let of = |st: Stream| {
        logs.iter()
            .filter(|l| l.stream == st)
            .map(|l| l.message.clone())
            .collect::<Vec<_>>()
    };
    (e, of(Stream::Stdout), of(Stream::System))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_a_branch_a_tag_a_commit_and_starts_in_git_path() {
    let r = repos();
    let d = daemon(r.root.path());
    let s = server();
    let url = format!("git://127.0.0.1:{}/proj", d.port);
    let cmd = "pwd; cat VERSION";
    for (git_ref, want) in [
        (None, "2"),
        (Some("main"), "2"),
        (Some("feature"), "3"),
        (Some("v1"), "1"),
        (Some(r.first.as_str()), "1"),
    ] {
        let (e, out, system) = finished(&s, &run_in(&url, git_ref, None, cmd)).await;
        assert_eq!(e.status, Status::Succeeded, "{git_ref:?}: {e:?} {system:?}");
        assert!(out[0].ends_with("/proj"), "{git_ref:?}: {out:?}");
        assert_eq!(out[1], want, "{git_ref:?}: {out:?}");
        // The banner names the checkout, the sidecar's note the commit it got.
        assert!(
            system
                .iter()
                .any(|l| l.contains(&format!("git checkout of {url}"))),
            "{system:?}"
        );
        assert!(
            system
                .iter()
                .any(|l| l.contains("checked out") && l.contains("at commit ")),
            "{system:?}"
        );
    }
    let first = &r.first;
    let (e, _, system) = finished(&s, &run_in(&url, Some(first), None, "true")).await;
    assert_eq!(e.status, Status::Succeeded);
    assert!(
        system
            .iter()
            .any(|l| l.contains(&format!("at commit {first}"))),
        "{system:?}"
    );

    let (e, out, _) = finished(&s, &run_in(&url, None, Some("sub/dir/"), "pwd; cat marker")).await;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    assert!(out[0].ends_with("/proj/sub/dir"), "{out:?}");
    assert_eq!(out[1], "deep");
}

async fn assert_clone_failed(s: &TestServer, req: &RunRequest, why: &str) {
    let (e, out, system) = finished(s, req).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(125), "{e:?}");
    let reason = e.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("git clone of "), "{reason}");
    assert!(reason.contains(why), "{reason}");
    // The reason is in the logs too, and the command never ran.
    assert!(system.iter().any(|l| l.contains(why)), "{system:?}");
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_fails_the_execution_before_the_command_runs() {
    let r = repos();
    let d = daemon(r.root.path());
    let s = server();
    let url = format!("git://127.0.0.1:{}/proj", d.port);
    assert_clone_failed(
        &s,
        &run_in(&url, Some("nope"), None, "echo ran"),
        "ref not found: nope",
    )
    .await;
    assert_clone_failed(
        &s,
        &run_in(&url, None, Some("no/such/dir"), "echo ran"),
        "git_path no/such/dir does not exist",
    )
    .await;
    let missing = format!("git://127.0.0.1:{}/absent", d.port);
    assert_clone_failed(
        &s,
        &run_in(&missing, None, None, "echo ran"),
        "repository not found",
    )
    .await;
    let nobody = format!("git://127.0.0.1:{}/proj", free_port());
    assert_clone_failed(&s, &run_in(&nobody, None, None, "echo ran"), "unreachable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_git_settings_are_refused_with_400_and_never_echo_a_secret() {
    let s = server();
    let c = s.client();
    for (repo, git_ref, path, want) in [
        (
            Some("https://bob:hunter2@example.com/x.git"),
            None,
            None,
            "credentials",
        ),
        (Some("file:///etc/hunter2"), None, None, "file://"),
        (Some("git@example.com:hunter2.git"), None, None, "ssh"),
        (Some("https://example.com/x.git"), None, Some("../.."), ".."),
        (
            Some("https://example.com/x.git"),
            Some("a..b"),
            None,
            "git_ref",
        ),
        (None, Some("main"), None, "git_repo"),
    ] {
        let req = RunRequest {
            command: "true".into(),
            git_repo: repo.map(Into::into),
            git_ref: git_ref.map(Into::into),
            git_path: path.map(Into::into),
            ..Default::default()
        };
        let err = c.run(&req).await.expect_err("refused");
        let ClientError::Api {
            status, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, 400, "{message}");
        assert!(message.contains(want), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
    assert!(!s.log().contains("hunter2"));
    let all = c.list_executions(&Default::default()).await.unwrap();
    assert!(all.executions.is_empty());
}

/// `git http-backend` behind a one-request-per-connection HTTP server that demands
/// `x-access-token:TOKEN` as basic auth; stops when dropped.
struct HttpGit {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A request came with the right credentials.
    authorized: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn http_git(root: PathBuf, token: &'static str) -> HttpGit {
    serve_http_git(root, token, None)
}

/// Like [`http_git`], over TLS with `tls`.
fn serve_http_git(
    root: PathBuf,
    token: &'static str,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> HttpGit {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let authorized = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stopped, seen) = (stop.clone(), authorized.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let (root, seen, tls) = (root.clone(), seen.clone(), tls.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = match tls {
                    None => serve_git(conn, &root, token, &seen),
                    Some(cfg) => rustls::ServerConnection::new(cfg)
                        .map_err(std::io::Error::other)
                        .and_then(|tls| {
                            let mut s = rustls::StreamOwned::new(tls, conn);
                            serve_git(&mut s, &root, token, &seen)?;
                            s.conn.send_close_notify();
                            s.flush()
                        }),
                };
            });
        }
    });
    HttpGit {
        port,
        stop,
        authorized,
    }
}

fn serve_git<S: Read + Write>(
    conn: S,
    root: &Path,
    token: &str,
    authorized: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use base64::Engine;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    if header("authorization").as_deref() != Some(want.as_str()) {
        let w = r.get_mut();
        w.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return w.flush();
    }
    authorized.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    cgi.stdin.take().unwrap().write_all(&body)?;
    let out = cgi.wait_with_output()?.stdout;
    let split = out
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|x| x == b"\n\n").map(|i| (i, 2)))
        .unwrap_or((out.len(), 0));
    let (head, rest) = (&out[..split.0], &out[split.0 + split.1..]);
    let head = String::from_utf8_lossy(head);
    let mut status = "200 OK".to_owned();
    let mut resp = Vec::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => resp.extend_from_slice(format!("{h}\r\n").as_bytes()),
            None => {}
        }
    }
    let w = r.get_mut();
    w.write_all(format!("HTTP/1.1 {status}\r\n").as_bytes())?;
    w.write_all(&resp)?;
    w.write_all(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            rest.len()
        )
        .as_bytes(),
    )?;
    w.write_all(rest)?;
    w.flush()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if m.is_file()
            && std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        {
            hits.push(p);
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_asks_for_github_token_which_never_travels_over_http() {
    const TOKEN: &str = "tok-5e3b1c0ffee-private";
    let r = repos();
    let h = http_git(r.root.path().to_path_buf(), TOKEN);
    let s = server();
    let url = format!("http://127.0.0.1:{}/proj", h.port);

    // Without a token the server's 401 fails the clone, and the reason says what to do.
    let (e, out, _) = finished(&s, &run_in(&url, Some("v1"), None, "echo ran")).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(125));
    let reason = e.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("asks for credentials"), "{reason}");
    assert!(reason.contains("GITHUB_TOKEN"), "{reason}");
    assert!(out.is_empty());

    // With one, over plain http, the sidecar refuses to send it at all.
    let mut req = run_in(&url, Some("v1"), None, "echo ran");
    req.env.insert("GITHUB_TOKEN".into(), TOKEN.into());
    let (e, out, system) = finished(&s, &req).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(125));
    let reason = e.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("only sent over https"), "{reason}");
    assert!(out.is_empty());
    for l in system.iter().chain(e.failure_reason.iter()) {
        assert!(!l.contains(TOKEN), "{l}");
    }
    // Nothing ever reached the server with it (the test server would have let it in).
    assert!(!h.authorized.load(std::sync::atomic::Ordering::SeqCst));

    // The token is in no stored log, API answer, server log or file runvoy keeps.
    let c = s.client();
    let list = c.list_executions(&Default::default()).await.unwrap();
    for x in &list.executions {
        let logs = s.all_logs(&x.execution_id).await;
        let json = serde_json::to_string(&logs).unwrap();
        assert!(!json.contains(TOKEN), "logs of {}", x.execution_id);
        let one = serde_json::to_string(&c.get_execution(&x.execution_id).await.unwrap()).unwrap();
        assert!(!one.contains(TOKEN));
    }
    assert!(!serde_json::to_string(&list).unwrap().contains(TOKEN));
    assert!(!s.log().contains(TOKEN));
    let hits = files_containing(&s.data_dir(), TOKEN.as_bytes());
    assert!(hits.is_empty(), "{hits:?}");
}

/// A CA and a certificate for 127.0.0.1 it signed, made with the openssl CLI: (CA file,
/// server config).
fn tls_setup(dir: &Path) -> (PathBuf, std::sync::Arc<rustls::ServerConfig>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=runvoy test CA",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("srv.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (dir.join("ca.pem"), std::sync::Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_cloned_over_https_with_github_token() {
    const TOKEN: &str = "tok-https-41b7e0d2-private";
    let r = repos();
    let certs = tempfile::tempdir().unwrap();
    let (ca, tls) = tls_setup(certs.path());
    let h = serve_http_git(r.root.path().to_path_buf(), TOKEN, Some(tls));
    let s = TestServer::start_with(&[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let url = format!("https://127.0.0.1:{}/proj", h.port);

    // A repository the server does not have is named as such, not as a missing ref.
    let mut missing = run_in(
        &format!("https://127.0.0.1:{}/absent.git", h.port),
        Some("v1"),
        None,
        "true",
    );
    missing.env.insert("GITHUB_TOKEN".into(), TOKEN.into());
    let (e, _, _) = finished(&s, &missing).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    let reason = e.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("repository not found"), "{reason}");

    let mut req = run_in(&url, Some("v1"), None, "pwd; cat VERSION");
    req.env.insert("GITHUB_TOKEN".into(), TOKEN.into());
    let (e, out, system) = finished(&s, &req).await;
    assert_eq!(e.status, Status::Succeeded, "{e:?} {system:?}");
    assert!(out[0].ends_with("/proj"), "{out:?}");
    assert_eq!(out[1], "1");
    assert!(h.authorized.load(std::sync::atomic::Ordering::SeqCst));

    // A wrong token is refused by the server, and named nowhere.
    let mut bad = run_in(&url, None, None, "echo ran");
    bad.env
        .insert("GITHUB_TOKEN".into(), "tok-wrong-9d1e7a".into());
    let (e, out, system) = finished(&s, &bad).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(125));
    assert!(out.is_empty());
    for l in system.iter().chain(e.failure_reason.iter()) {
        assert!(!l.contains("tok-wrong-9d1e7a"), "{l}");
    }

    let c = s.client();
    let list = c.list_executions(&Default::default()).await.unwrap();
    for x in &list.executions {
        let logs = serde_json::to_string(&s.all_logs(&x.execution_id).await).unwrap();
        assert!(!logs.contains(TOKEN) && !logs.contains("tok-wrong-9d1e7a"));
        let one = serde_json::to_string(&c.get_execution(&x.execution_id).await.unwrap()).unwrap();
        assert!(!one.contains(TOKEN));
    }
    assert!(!s.log().contains(TOKEN));
    let hits = files_containing(&s.data_dir(), TOKEN.as_bytes());
    assert!(hits.is_empty(), "{hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_flags_and_a_playbooks_git_fields_check_out_the_repository() {
    let r = repos();
    let d = daemon(r.root.path());
    let s = server();
    let url = format!("git://127.0.0.1:{}/proj", d.port);
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        s.runvoy()
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("runvoy")
    };
    let out = cli(&[
        "run",
        "-q",
        "-g",
        &url,
        "-r",
        "feature",
        "--",
        "cat VERSION",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3\n");

    std::fs::create_dir_all(dir.path().join(".runvoy")).unwrap();
    std::fs::write(
        dir.path().join(".runvoy/deep.yml"),
        format!(
            "description: read the marker\ngit_repo: {url}\ngit_ref: v1\ngit_path: sub/dir/\n\
             commands:\n  - cat marker\n  - cat ../../VERSION\n"
        ),
    )
    .unwrap();
    let out = cli(&["playbook", "run", "deep", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deep\n1\n");
    // -r overrides the playbook's git_ref.
    let out = cli(&["playbook", "run", "deep", "-q", "-r", "main"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deep\n2\n", "{out:?}");

    // A failed clone: exit 125 from the remote side, the reason on stderr.
    let out = cli(&["run", "-g", &url, "-r", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(all.contains("ref not found: nope"), "{all}");
    // Refused before anything starts: credentials in the URL.
    let before = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    let out = cli(&[
        "run",
        "-g",
        "https://u:hunter2@example.com/x.git",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("hunter2"),
        "{out:?}"
    );
    let after = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    assert_eq!(before.executions.len(), after.executions.len());
}
