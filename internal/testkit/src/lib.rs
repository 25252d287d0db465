//! Test helpers for integration tests against the real binaries.
//!
//! [`TestServer::start`] runs `runvoyd serve` on port 0 in a fresh temp dir, waits for its
//! `server.json`, and hands out the admin key, a typed [`runvoy_client::Client`] and ready-made
//! `runvoy` commands. Build the binaries first (`cargo build --bins`; `make test` does).
//!
//! `RUNVOY_TEST_BACKEND` picks the backend every server runs on ([`backend`]).

pub mod backend;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNVOY_BIN_DIR") {
        return PathBuf::from(d);
    }
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of a built binary; panics with a helpful message when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` (or `make test`) first",
        p.display()
    );
    p
}

/// A running `runvoyd` in a temp dir.
pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The admin API key.
    pub admin_key: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    /// The emulators' and fakes' side, on a Google Cloud test backend.
    gcp: Option<Arc<backend::GcpSetup>>,
    /// Whether this server's push subscription follows it (not for a second instance).
    owns_push: bool,
}

impl TestServer {
    /// Starts a server with default settings.
    pub fn start() -> TestServer {
        Self::start_with(&[], &[])
    }

    /// Starts a server with extra `serve` arguments and environment variables.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        Self::start_in(&std::env::temp_dir(), args, envs)
    }

    /// Like [`TestServer::start_with`], with the temp dir (and so the data dir) under `parent`:
    /// e.g. a small file system a test fills up.
    pub fn start_in(parent: &Path, args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("runvoy-test")
            .tempdir_in(parent)
            .expect("temp dir");
        let extra_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let gcp = match backend::test_backend() {
            backend::TestBackend::Local | backend::TestBackend::Docker => None,
            kind => Some(Arc::new(backend::GcpSetup::new(
                kind,
                dir.path(),
                &extra_args,
            ))),
        };
        let mut s = TestServer {
            url: String::new(),
            admin_key: String::new(),
            dir,
            child: None,
            gcp,
            owns_push: true,
            extra_args,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s.admin_key = std::fs::read_to_string(s.data_dir().join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_owned();
        s
    }

    /// Another instance on the store `first` uses (the same store flags and environment): it
    /// finds users already there, so it keeps no admin key of its own and uses `first`'s.
    pub fn start_sharing(first: &TestServer) -> TestServer {
        let mut s = TestServer {
            url: String::new(),
            admin_key: first.admin_key.clone(),
            dir: tempfile::Builder::new()
                .prefix("runvoy-test")
                .tempdir()
                .expect("temp dir"),
            child: None,
            extra_args: first.extra_args.clone(),
            envs: first.envs.clone(),
            gcp: first.gcp.clone(),
            owns_push: false,
        };
        s.spawn();
        s
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where local compute keeps the executions' directories: runvoyd's data dir, or the
    /// fake platform's on the `gcp` test backend.
    pub fn executions_dir(&self) -> PathBuf {
        self.gcp
            .as_ref()
            .and_then(|g| g.executions_dir())
            .unwrap_or_else(|| self.data_dir().join("executions"))
    }

    /// Ids of the executions local compute keeps a directory for (not its own `.sandbox`).
    pub fn execution_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.executions_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn spawn(&mut self) {
        let data = self.data_dir();
        std::fs::create_dir_all(&data).expect("data dir");
        let _ = std::fs::remove_file(data.join("server.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("runvoyd.log"))
            .expect("log file");
        let (mut backend_args, backend_env) =
            self.gcp.as_ref().map(|g| g.args_env()).unwrap_or_default();
        if backend::test_backend() == backend::TestBackend::Docker {
            backend_args.extend(backend::docker_args());
        }
        let child = Command::new(bin("runvoyd"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-client-config",
                "--log-format",
                "json",
            ])
            .args(&backend_args)
            .args(&self.extra_args)
            .envs(backend_env)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // RUNVOY_TEST_SERVER_LOG: another level for the servers (e.g. `debug`, chasing a hang).
            .env(
                "RUNVOY_LOG",
                std::env::var("RUNVOY_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn runvoyd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(raw) = std::fs::read(data.join("server.json"))
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw)
            {
                self.url = v["url"].as_str().expect("url").to_owned();
                if let Some(g) = self.gcp.as_ref().filter(|_| self.owns_push) {
                    g.push_to(&self.url);
                }
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("runvoyd exited early ({st}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "runvoyd did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far (and the fake platform's, on the `gcp` test backend).
    pub fn log(&self) -> String {
        let mut log =
            std::fs::read_to_string(self.dir.path().join("runvoyd.log")).unwrap_or_default();
        if let Some(p) = self.gcp.as_ref().and_then(|g| g.fake_log_path()) {
            log.push_str("\n---- runvoy-fake-gcp log ----\n");
            log.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        log
    }

    /// A typed client with the admin key.
    pub fn client(&self) -> runvoy_client::Client {
        self.client_with_key(&self.admin_key)
    }

    /// A typed client with another key.
    pub fn client_with_key(&self, key: &str) -> runvoy_client::Client {
        runvoy_client::Client::new(&self.url, key).expect("client")
    }

    /// A `runvoy` CLI command pointed at this server with the admin key.
    pub fn runvoy(&self) -> Command {
        let mut c = Command::new(bin("runvoy"));
        c.env("RUNVOY_API_URL", &self.url)
            .env("RUNVOY_API_KEY", &self.admin_key)
            .env("RUNVOY_CONFIG", self.dir.path().join("cli-config.yaml"))
            .env("NO_COLOR", "1")
            .env_remove("RUNVOY_USER_TEST");
        c
    }

    /// A `runvoyd` command (e.g. `admin create`) on this server's store: its environment, and
    /// on a Google Cloud test backend the Firestore settings.
    pub fn runvoyd(&self) -> Command {
        let mut c = Command::new(bin("runvoyd"));
        if let Some(g) = &self.gcp {
            c.envs(g.args_env().1).env("RUNVOY_STORE", "firestore");
        }
        c.envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// Kills runvoyd with SIGKILL (executions keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops runvoyd with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts runvoyd again on the same data dir (after [`kill9`](Self::kill9) or [`stop`](Self::stop)).
    /// The URL changes (port 0).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Waits until an execution reaches a terminal status with complete logs.
    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> runvoy_proto::Execution {
        let c = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            let e = c.get_execution(id).await;
            if let Ok(e) = &e
                && e.status.is_terminal()
                && e.logs_complete
            {
                return e.clone();
            }
            // Also when the server does not answer: a dead server must fail the test, not hang it.
            assert!(
                Instant::now() < deadline,
                "execution {id} not settled in time: {e:?}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fetches every stored log record of an execution, paging.
    pub async fn all_logs(&self, id: &str) -> Vec<runvoy_proto::LogEvent> {
        let c = self.client();
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = c
                .logs_page(id, after, Some(10_000))
                .await
                .expect("logs page");
            if let Some(l) = page.events.last() {
                after = l.seq;
            }
            out.extend(page.events);
            if !page.has_more {
                return out;
            }
        }
    }
}

/// Stops every supervisor under a data dir (executions outlive runvoyd by design; tests clean up).
pub(crate) fn kill_supervisors(data: &Path) {
    let Ok(rd) = std::fs::read_dir(data.join("executions")) else {
        return;
    };
    for e in rd.flatten() {
        if e.path().join("exit.json").exists() {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(e.path().join("supervisor.pid"))
            && let Some(pid) = s
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
        {
            // SAFETY: SIGKILL to a supervisor this test started; bubblewrap's
            // --die-with-parent takes the sandbox down with it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        kill_supervisors(&self.data_dir());
        backend::docker_cleanup(&self.data_dir());
        if std::thread::panicking() {
            eprintln!("---- runvoyd log ----\n{}", self.log());
        }
    }
}

/// Raw calls to `/api/v1`, for tests that check statuses, headers and bodies exactly.
pub mod http {
    use std::time::Duration;

    use reqwest::{Method, StatusCode};
    use serde_json::Value;

    use crate::TestServer;

    /// A raw HTTP answer.
    pub struct Answer {
        /// Status code.
        pub status: StatusCode,
        /// Response headers.
        pub headers: reqwest::header::HeaderMap,
        /// The body as JSON (`Null` when it is not JSON).
        pub body: Value,
    }

    /// `METHOD /api/v1{path}` with an optional key and JSON body.
    pub async fn call(
        s: &TestServer,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        call_with(s, method, path, key, body, &[]).await
    }

    /// [`call`] with extra request headers.
    pub async fn call_with(
        s: &TestServer,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        // Bounded, so a server that never answers fails the test instead of hanging it.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP client");
        let mut rb = http.request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}/api/v1{path}", s.url),
        );
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}
