//! `runvoy list --user/--since`, who stopped a run, and config profiles, with the real runvoyd
//! and runvoy binaries.

use std::process::{Output, Stdio};
use std::time::Duration;

use runvoy_proto::{RunRequest, Status};
use runvoy_testkit::TestServer;

const ADMIN: &str = "admin@localhost";
const DEV: &str = "dev@example.com";

fn remote(s: &TestServer, key: &str, args: &[&str]) -> Output {
    s.runvoy()
        .env("RUNVOY_API_KEY", key)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runvoy")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `runvoy list -o json ARGS` as the holder of `key`: the ids listed.
fn listed(s: &TestServer, key: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list", "-o", "json", "--all"];
    all.extend_from_slice(args);
    let out = remote(s, key, &all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    let v: Vec<runvoy_proto::Execution> = serde_json::from_slice(&out.stdout).expect("json");
    v.into_iter().map(|e| e.execution_id).collect()
}

async fn user_key(s: &TestServer, email: &str, role: &str) -> String {
    let token = s
        .client()
        .create_user(email, role)
        .await
        .expect("create user")
        .claim_token;
    runvoy_client::claim(&s.url, &token)
        .await
        .expect("claim")
        .api_key
}

async fn run_settled(s: &TestServer, key: &str, command: &str) -> runvoy_proto::Execution {
    let r = s
        .client_with_key(key)
        .run(&RunRequest {
            command: command.into(),
            ..Default::default()
        })
        .await
        .expect("run");
    s.wait_settled(&r.execution_id, Duration::from_secs(60))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_user_and_time_within_the_policy() {
    let s = TestServer::start();
    let dev = user_key(&s, DEV, "developer").await;
    let viewer = user_key(&s, "viewer@example.com", "viewer").await;
    let a1 = run_settled(&s, &s.admin_key, "echo a1").await;
    let d1 = run_settled(&s, &dev, "echo d1").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a2 = run_settled(&s, &s.admin_key, "echo a2").await;
    let d2 = run_settled(&s, &dev, "echo d2").await;
    let id = |e: &runvoy_proto::Execution| e.execution_id.clone();

    // An admin filters by user (emails are case-insensitive) and by time.
    assert_eq!(
        listed(&s, &s.admin_key, &[]),
        [id(&d2), id(&a2), id(&d1), id(&a1)]
    );
    assert_eq!(
        listed(&s, &s.admin_key, &["--user", "Dev@Example.com"]),
        [id(&d2), id(&d1)]
    );
    assert_eq!(listed(&s, &s.admin_key, &["-u", ADMIN]), [id(&a2), id(&a1)]);
    assert!(listed(&s, &s.admin_key, &["--user", "nobody@example.com"]).is_empty());
    assert_eq!(listed(&s, &s.admin_key, &["--since", "1h"]).len(), 4);
    assert_eq!(
        listed(&s, &s.admin_key, &["--since", &a2.started_at]),
        [id(&d2), id(&a2)],
        "RFC 3339, inclusive"
    );
    assert_eq!(
        listed(
            &s,
            &s.admin_key,
            &["--since", &a2.started_at, "--user", DEV]
        ),
        [id(&d2)]
    );
    assert!(listed(&s, &s.admin_key, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    // Paging keeps the filters: one per page, every page.
    assert_eq!(
        listed(&s, &s.admin_key, &["-n", "1", "--user", DEV]),
        [id(&d2), id(&d1)]
    );
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/executions?limit=1&user={DEV}&since=1h",
            s.url
        ))
        .header("X-API-Key", &s.admin_key)
        .send()
        .await
        .unwrap();
    let link = resp.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("user=dev%40example.com"), "{link}");
    assert!(
        link.contains("&since=20"),
        "the time is fixed for every page: {link}"
    );

    // A developer or viewer sees only their own, whatever `user` says.
    assert_eq!(listed(&s, &dev, &[]), [id(&d2), id(&d1)]);
    assert_eq!(listed(&s, &dev, &["--user", DEV]), [id(&d2), id(&d1)]);
    assert!(listed(&s, &dev, &["--user", ADMIN]).is_empty());
    assert!(listed(&s, &viewer, &["--user", DEV]).is_empty());
    assert!(listed(&s, &viewer, &[]).is_empty());

    // Bad values: 400 INVALID_REQUEST, and a clear CLI message.
    for (args, says) in [
        (["--since", "yesterday"], "invalid since \"yesterday\""),
        (["--since", "10"], "invalid since \"10\""),
        (["--user", "not-an-email"], "invalid user \"not-an-email\""),
    ] {
        let mut all = vec!["list"];
        all.extend_from_slice(&args);
        let out = remote(&s, &s.admin_key, &all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("INVALID_REQUEST"), "{err}");
    }
    for q in [
        "since=1h%201m",
        "since=2026-13-01T00:00:00Z",
        "user=",
        "user=a%20b@x",
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/executions?{q}", s.url))
            .header("X-API-Key", &s.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{q}");
        let body: runvoy_proto::ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.code, runvoy_proto::codes::INVALID_REQUEST, "{q}");
    }
}

/// Waits for the command's first line, so a kill finds it running.
async fn wait_started(s: &TestServer, id: &str) {
    for _ in 0..600 {
        if s.all_logs(id).await.iter().any(|e| e.message == "started") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} never printed its first line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_who_stopped_a_run_is_recorded_and_shown() {
    let s = TestServer::start();
    let dev = user_key(&s, DEV, "developer").await;
    let r = s
        .client_with_key(&dev)
        .run(&RunRequest {
            command: "echo started; sleep 120".into(),
            ..Default::default()
        })
        .await
        .expect("run");
    let id = r.execution_id.clone();
    wait_started(&s, &id).await;
    let before = s.client().get_execution(&id).await.unwrap();
    assert_eq!(before.stopped_by, None);
    let out = remote(&s, &s.admin_key, &["status", "-o", "json", &id]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("stopped_by"),
        "absent until someone stops it"
    );

    // The admin stops the developer's run.
    let out = remote(&s, &s.admin_key, &["kill", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = s.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(e.status, Status::Stopped);
    assert_eq!(e.stopped_by.as_deref(), Some(ADMIN));
    // The owner sees who did it, in text and JSON.
    let out = remote(&s, &dev, &["status", &id]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("Stopped by:  admin@localhost\n"), "{text}");
    let out = remote(&s, &dev, &["status", "-o", "json", &id]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stopped_by"], ADMIN);
    // A kill of a finished run changes nothing, not even who stopped it.
    let out = remote(&s, &dev, &["kill", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = s.client().get_execution(&id).await.unwrap();
    assert_eq!(again.stopped_by.as_deref(), Some(ADMIN));

    // A run that ends on its own has nobody's name on it; one its owner kills has theirs.
    let done = run_settled(&s, &dev, "true").await;
    assert_eq!(done.stopped_by, None);
    let r = s
        .client_with_key(&dev)
        .run(&RunRequest {
            command: "echo started; sleep 120".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_started(&s, &r.execution_id).await;
    let out = remote(&s, &dev, &["kill", &r.execution_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(60))
        .await;
    assert_eq!(e.stopped_by.as_deref(), Some(DEV));

    // The column survives a restart (it is in the store, not in memory).
    let mut s = s;
    s.restart();
    let e = s.client().get_execution(&id).await.unwrap();
    assert_eq!(e.stopped_by.as_deref(), Some(ADMIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_keep_an_admin_and_a_developer_key_side_by_side() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let cli = |args: &[&str]| {
        std::process::Command::new(runvoy_testkit::bin("runvoy"))
            .env("RUNVOY_CONFIG", &cfg)
            .env_remove("RUNVOY_API_URL")
            .env_remove("RUNVOY_API_KEY")
            .env_remove("RUNVOY_PROFILE")
            .env("NO_COLOR", "1")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let creator = |out: &Output| -> String {
        assert!(out.status.success(), "{}", stderr(out));
        let r: runvoy_proto::RunResponse = serde_json::from_slice(&out.stdout).unwrap();
        r.execution_id
    };
    let owner = |id: String| {
        let c = s.client();
        async move { c.get_execution(&id).await.unwrap().created_by }
    };
    // The default profile, as before profiles existed.
    let out = cli(&["configure", "--api-url", &s.url, "--api-key", &s.admin_key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = s
        .client()
        .create_user(DEV, "developer")
        .await
        .unwrap()
        .claim_token;
    // A claim into a new profile takes the default profile's server and keeps the admin key.
    let out = cli(&["claim", &token, "--profile", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("profile dev of"), "{}", stderr(&out));
    let file = runvoy_client::config::Config::read(&cfg).unwrap();
    assert_eq!(file.api_key, s.admin_key);
    let dev_key = file.profile(Some("dev")).unwrap().api_key;
    assert!(dev_key.starts_with("rvk_") && dev_key != s.admin_key);

    // Every command reads the selected profile: the flag, else RUNVOY_PROFILE.
    let run = ["run", "-d", "-o", "json", "--", "true"];
    assert_eq!(owner(creator(&cli(&run))).await, ADMIN);
    let mut dev_run = vec!["--profile", "dev"];
    dev_run.extend_from_slice(&run);
    assert_eq!(owner(creator(&cli(&dev_run))).await, DEV);
    let out = std::process::Command::new(runvoy_testkit::bin("runvoy"))
        .env("RUNVOY_CONFIG", &cfg)
        .env_remove("RUNVOY_API_URL")
        .env_remove("RUNVOY_API_KEY")
        .env("RUNVOY_PROFILE", "dev")
        .args(["list", "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v: Vec<runvoy_proto::Execution> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !v.is_empty() && v.iter().all(|e| e.created_by == DEV),
        "{v:?}"
    );
    let mut explicit = vec!["--profile", "default"];
    explicit.extend_from_slice(&run);
    assert_eq!(owner(creator(&cli(&explicit))).await, ADMIN);

    // A profile that is not there, or a bad name: a clear error, nothing sent.
    let out = cli(&["--profile", "ops", "list"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no profile \"ops\""),
        "{}",
        stderr(&out)
    );
    let out = cli(&["--profile", "a/b", "list"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("invalid profile name"),
        "{}",
        stderr(&out)
    );

    // configure writes only its profile, and never replaces a profile's key silently.
    let before = std::fs::read_to_string(&cfg).unwrap();
    let out = cli(&[
        "configure",
        "--profile",
        "dev",
        "--api-url",
        &s.url,
        "--api-key",
        "rvk_x",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
    let out = cli(&[
        "configure",
        "--profile",
        "ops",
        "--api-url",
        &s.url,
        "--api-key",
        &s.admin_key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = runvoy_client::config::Config::read(&cfg).unwrap();
    assert_eq!(file.api_key, s.admin_key);
    assert_eq!(file.profile(Some("dev")).unwrap().api_key, dev_key);
    assert_eq!(file.profile(Some("ops")).unwrap().api_key, s.admin_key);

    // rotate-key saves the new key to the profile it came from.
    let out = cli(&["--profile", "dev", "users", "rotate-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = runvoy_client::config::Config::read(&cfg).unwrap();
    let rotated = file.profile(Some("dev")).unwrap().api_key;
    assert_ne!(rotated, dev_key);
    assert_eq!(file.api_key, s.admin_key);
    assert_eq!(owner(creator(&cli(&dev_run))).await, DEV);
}
