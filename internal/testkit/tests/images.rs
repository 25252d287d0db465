//! The image registry with the real runvoyd and runvoy binaries: register, list, show and
//! unregister over the API and the CLI, idempotency, deterministic ids that include the
//! registry, the default image (first registered, moved, removed), runs that use the default
//! image or name one, refused images, role checks, the trace, and the same registry on the
//! Firestore store.

use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use runvoy_proto::{RunRequest, Status, codes};
use runvoy_testkit::TestServer;
use runvoy_testkit::http::{Answer, call};
use serde_json::{Value, json};

fn cli(s: &TestServer, key: &str, args: &[&str]) -> Output {
    s.runvoy()
        .env("RUNVOY_API_KEY", key)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runvoy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn register(s: &TestServer, key: &str, body: Value) -> Answer {
    call(s, "POST", "/images/register", Some(key), Some(body)).await
}

async fn list(s: &TestServer, key: &str) -> Vec<Value> {
    let a = call(s, "GET", "/images", Some(key), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["images"].as_array().expect("images").clone()
}

fn defaults(images: &[Value]) -> Vec<String> {
    images
        .iter()
        .filter(|i| i["is_default"] == true)
        .map(|i| i["image_id"].as_str().unwrap().to_owned())
        .collect()
}

fn id_of(a: &Answer) -> String {
    a.body["image_id"].as_str().expect("image_id").to_owned()
}

async fn executions(s: &TestServer) -> usize {
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

/// Creates a user with `role` and returns its key.
async fn user(s: &TestServer, email: &str, role: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_show_and_unregister_over_the_api() {
    let s = TestServer::start();
    let key = s.admin_key.clone();
    assert!(list(&s, &key).await.is_empty());

    let a = register(
        &s,
        &key,
        json!({"image": "ghcr.io/acme/tool:1", "cpu": 0.5, "memory": 256, "timeout": 120,
               "service_account": "runner@p.iam.gserviceaccount.com"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let ghcr = id_of(&a);
    let b = &a.body;
    assert!(ghcr.starts_with("acme/tool:1-"), "{ghcr}");
    let hex = ghcr.rsplit_once('-').unwrap().1;
    assert!(
        hex.len() == 8 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
        "{ghcr}"
    );
    assert_eq!(b["image"], "ghcr.io/acme/tool:1");
    assert_eq!(b["registry"], "ghcr.io");
    assert_eq!(b["image_name"], "acme/tool");
    assert_eq!(b["image_tag"], "1");
    assert_eq!(b["cpu"], 0.5);
    assert_eq!(b["memory"], 256);
    assert_eq!(b["timeout"], 120);
    assert_eq!(b["service_account"], "runner@p.iam.gserviceaccount.com");
    assert_eq!(b["is_default"], true, "the first image is the default");
    assert_eq!(b["created_by"], "admin@localhost");
    assert!(
        runvoy_domain::clock::parse_rfc3339(b["created_at"].as_str().unwrap()).is_some(),
        "{b}"
    );
    let register_rid = a.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(b["created_by_request_id"], register_rid.as_str());

    // The same image and configuration again: the same id, 200, no duplicate.
    let again = register(
        &s,
        &key,
        json!({"image": "ghcr.io/acme/tool:1", "cpu": 0.5, "memory": 256, "timeout": 120,
               "service_account": "runner@p.iam.gserviceaccount.com"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(id_of(&again), ghcr);
    assert_eq!(again.body["created_by_request_id"], register_rid.as_str());
    assert_eq!(list(&s, &key).await.len(), 1);

    // The same name and tag in another registry: another id (the registry is in it).
    let hub = register(
        &s,
        &key,
        json!({"image": "acme/tool:1", "cpu": 0.5, "memory": 256, "timeout": 120,
               "service_account": "runner@p.iam.gserviceaccount.com"}),
    )
    .await;
    assert_eq!(hub.status, StatusCode::CREATED, "{}", hub.body);
    let hub_id = id_of(&hub);
    assert_ne!(hub_id, ghcr);
    assert!(hub_id.starts_with("acme/tool:1-"));
    assert_eq!(hub.body["registry"], "docker.io");
    assert_eq!(hub.body["is_default"], false);
    assert_eq!(defaults(&list(&s, &key).await), vec![ghcr.clone()]);

    // Show by id, by reference (slashes raw or escaped) and by an unambiguous name.
    for path in [
        format!("/images/{ghcr}"),
        format!("/images/{}", ghcr.replace('/', "%2F")),
        "/images/ghcr.io/acme/tool:1".to_owned(),
        "/images/ghcr.io%2Facme%2Ftool:1".to_owned(),
        "/images/ghcr.io/acme/tool".to_owned(),
    ] {
        let g = call(&s, "GET", &path, Some(&key), None).await;
        assert_eq!(g.status, StatusCode::OK, "{path}: {}", g.body);
        assert_eq!(id_of(&g), ghcr, "{path}");
    }
    let g = call(&s, "GET", "/images/docker.io/acme/tool:1", Some(&key), None).await;
    assert_eq!(id_of(&g), hub_id);
    let g = call(&s, "GET", "/images/alpine:3.19", Some(&key), None).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND, "{}", g.body);
    assert_eq!(g.body["code"], codes::NOT_FOUND);
    // Two configurations of one reference: the name is ambiguous, the ids are not.
    let big = register(
        &s,
        &key,
        json!({"image": "ghcr.io/acme/tool:1", "memory": 512}),
    )
    .await;
    assert_eq!(big.status, StatusCode::CREATED);
    let g = call(&s, "GET", "/images/ghcr.io/acme/tool:1", Some(&key), None).await;
    assert_eq!(g.status, StatusCode::CONFLICT, "{}", g.body);
    assert_eq!(g.body["code"], codes::IMAGE_AMBIGUOUS);
    assert!(
        g.body["error"].as_str().unwrap().contains(&ghcr),
        "{}",
        g.body
    );
    let d = call(
        &s,
        "DELETE",
        "/images/ghcr.io/acme/tool:1",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(d.status, StatusCode::CONFLICT, "ambiguous: nothing removed");
    assert_eq!(list(&s, &key).await.len(), 3);

    // Bad input: 400 with a stable code, nothing stored.
    let long = format!("a{}", "b".repeat(300));
    for bad in [
        json!({"image": "Alpine"}),
        json!({"image": "alpine latest"}),
        json!({"image": ""}),
        json!({"image": long}),
        json!({"image": "alpine@sha256:abc"}),
        json!({"image": "alpine", "cpu": 0}),
        json!({"image": "alpine", "cpu": 64}),
        json!({"image": "alpine", "memory": 0}),
        json!({"image": "alpine", "memory": 1_000_000}),
        json!({"image": "alpine", "timeout": 0}),
        json!({"image": "alpine", "service_account": "a b"}),
    ] {
        let r = register(&s, &key, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert_eq!(r.body["code"], codes::INVALID_REQUEST, "{bad}");
    }
    let r = register(&s, &key, json!({"image": "alpine", "task_role": "x"})).await;
    assert!(r.status.is_client_error(), "unknown field: {}", r.status);
    assert_eq!(list(&s, &key).await.len(), 3, "nothing stored");

    // is_default moves the default; there is always at most one.
    let r = register(
        &s,
        &key,
        json!({"image": "acme/tool:1", "cpu": 0.5, "memory": 256, "timeout": 120,
               "service_account": "runner@p.iam.gserviceaccount.com", "is_default": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "registered before: {}", r.body);
    assert_eq!(r.body["is_default"], true);
    let move_rid = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(defaults(&list(&s, &key).await), vec![hub_id.clone()]);

    // The trace of that request shows both images it changed and its log line.
    let t = call(&s, "GET", &format!("/trace/{move_rid}"), Some(&key), None).await;
    assert_eq!(t.status, StatusCode::OK);
    let mut traced: Vec<String> = t.body["related_resources"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_owned())
        .collect();
    traced.sort();
    let mut want = vec![ghcr.clone(), hub_id.clone()];
    want.sort();
    assert_eq!(traced, want);

    // Unregistering the default leaves none (and says so).
    let d = call(&s, "DELETE", &format!("/images/{hub_id}"), Some(&key), None).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["image_id"], hub_id.as_str());
    assert!(
        d.body["message"]
            .as_str()
            .unwrap()
            .contains("no image is the default")
    );
    let left = list(&s, &key).await;
    assert_eq!(left.len(), 2);
    assert!(defaults(&left).is_empty());
    let d = call(&s, "DELETE", &format!("/images/{hub_id}"), Some(&key), None).await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s.log();
    assert!(log.contains("image registered") && log.contains("image unregistered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_use_the_default_image_and_refuse_images_the_local_backend_cannot_run() {
    let s = TestServer::start();
    let key = s.admin_key.clone();
    let c = s.client();
    // No image registered: the server's default image, as always.
    let r = c
        .run(&RunRequest {
            command: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.image_id, "local");

    // The host image registered: the first image, so the default; its timeout applies to runs
    // that set none.
    let host = register(&s, &key, json!({"image": "local", "timeout": 2})).await;
    assert_eq!(host.status, StatusCode::CREATED, "{}", host.body);
    assert_eq!(host.body["is_default"], true);
    let host_id = id_of(&host);
    assert!(host_id.starts_with("local:latest-"), "{host_id}");
    let out = cli(
        &s,
        &key,
        &["run", "-q", "--", "sh", "-c", "echo start; sleep 20"],
    );
    assert_eq!(
        out.status.code(),
        Some(124),
        "the image's timeout: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "start\n");
    let e = c
        .list_executions(&runvoy_client::ListQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .executions
        .remove(0);
    assert_eq!(e.image_id, host_id, "the execution records the image id");
    assert_eq!((e.timeout_seconds, e.timed_out), (Some(2), true));
    // The run's own timeout wins; -i with the id, the reference or nothing all resolve to it.
    for args in [
        vec!["run", "-q", "--timeout", "30", "--", "echo", "ok"],
        vec!["run", "-q", "-i", host_id.as_str(), "--", "echo", "ok"],
        vec!["run", "-q", "-i", "local", "--", "echo", "ok"],
    ] {
        let out = cli(&s, &key, &args);
        assert_eq!(
            (out.status.code(), stdout(&out)),
            (Some(0), "ok\n".into()),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let mut rows = c
        .list_executions(&runvoy_client::ListQuery {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .executions;
    rows.reverse();
    assert!(rows.iter().all(|e| e.image_id == host_id), "{rows:?}");
    assert_eq!(rows[0].timeout_seconds, Some(30));

    // An image the local backend cannot run is registered, but runs in it are refused, named
    // or as the default, and nothing is recorded.
    let alpine = register(&s, &key, json!({"image": "alpine:3.19"})).await;
    assert_eq!(alpine.status, StatusCode::CREATED);
    assert_eq!(alpine.body["is_default"], false);
    let alpine_id = id_of(&alpine);
    let before = executions(&s).await;
    for image in ["alpine:3.19", alpine_id.as_str(), "debian:12"] {
        let a = call(
            &s,
            "POST",
            "/run",
            Some(&key),
            Some(json!({"command": "true", "image": image})),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{image}: {}", a.body);
        assert_eq!(a.body["code"], codes::IMAGE_NOT_SUPPORTED, "{image}");
    }
    let r = register(
        &s,
        &key,
        json!({"image": "alpine:3.19", "is_default": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let out = cli(&s, &key, &["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(IMAGE_NOT_SUPPORTED)"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("alpine:3.19"), "{}", stderr(&out));
    assert_eq!(executions(&s).await, before, "nothing recorded");

    // Two configurations of the host image: its name is ambiguous (409), its ids are not.
    let other = register(&s, &key, json!({"image": "local", "timeout": 600})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    let a = call(
        &s,
        "POST",
        "/run",
        Some(&key),
        Some(json!({"command": "true", "image": "local"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.body["code"], codes::IMAGE_AMBIGUOUS);
    assert_eq!(executions(&s).await, before);

    // The default unregistered: runs that name no image use the server's image again.
    let d = call(
        &s,
        "DELETE",
        &format!("/images/{alpine_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(d.status, StatusCode::OK);
    let r = c
        .run(&RunRequest {
            command: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.image_id, "local");
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_lists_shows_and_unregisters() {
    let s = TestServer::start();
    let key = s.admin_key.clone();
    let out = cli(
        &s,
        &key,
        &[
            "images",
            "register",
            "alpine:3.19",
            "--memory",
            "128",
            "--timeout",
            "1m",
            "--cpu",
            "0.25",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(id.starts_with("alpine:3.19-"), "{id}");
    assert!(
        stderr(&out).contains("registered alpine:3.19 (default)"),
        "{}",
        stderr(&out)
    );
    let out = cli(
        &s,
        &key,
        &[
            "images",
            "register",
            "alpine:3.19",
            "--memory",
            "128",
            "--timeout",
            "60",
            "--cpu",
            "0.25",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), id, "idempotent");
    assert!(
        stderr(&out).contains("already registered"),
        "{}",
        stderr(&out)
    );
    let out = cli(
        &s,
        &key,
        &["images", "register", "ghcr.io/acme/tool:2", "--set-default"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tool = stdout(&out).trim().to_owned();

    let out = cli(&s, &key, &["images", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("IMAGE ID") && lines[0].contains("DEFAULT"),
        "{table}"
    );
    let row = |id: &str| lines.iter().find(|l| l.starts_with(id)).copied().unwrap();
    assert!(row(&tool).ends_with("yes"), "{table}");
    assert!(!row(&id).ends_with("yes"), "{table}");
    assert!(
        row(&id).contains("0.25") && row(&id).contains("128"),
        "{table}"
    );
    let out = cli(&s, &key, &["images", "list", "-o", "json"]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["images"].as_array().unwrap().len(), 2);

    let out = cli(&s, &key, &["images", "show", "ghcr.io/acme/tool"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains(&format!("Image ID         {tool}")),
        "{shown}"
    );
    assert!(shown.contains("Registry         ghcr.io"), "{shown}");
    assert!(shown.contains("Default          yes"), "{shown}");
    let out = cli(&s, &key, &["images", "show", &id, "-o", "json"]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["memory"].as_u64(), j["timeout"].as_u64()),
        (Some(128), Some(60))
    );

    // Errors print the server's message and code and exit non-zero.
    let out = cli(&s, &key, &["images", "register", "Alpine"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("lower-case") && stderr(&out).contains("(INVALID_REQUEST)"),
        "{}",
        stderr(&out)
    );
    let out = cli(&s, &key, &["images", "show", "debian:12"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not registered") && stderr(&out).contains("(NOT_FOUND)"),
        "{}",
        stderr(&out)
    );

    let out = cli(&s, &key, &["images", "unregister", &tool]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no image is the default"),
        "{}",
        stderr(&out)
    );
    let out = cli(&s, &key, &["images", "unregister", &tool]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("(NOT_FOUND)"));
    // By an unambiguous name, as the Go runvoy's documentation promised.
    let out = cli(&s, &key, &["images", "unregister", "alpine:3.19"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cli(&s, &key, &["images", "list"]);
    assert_eq!(stdout(&out).lines().count(), 1, "only the header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_operators_manage_images_developers_use_them_viewers_read_them() {
    let s = TestServer::start();
    let op = user(&s, "op@example.com", "operator").await;
    let dev = user(&s, "dev@example.com", "developer").await;
    let viewer = user(&s, "viewer@example.com", "viewer").await;

    let a = register(&s, &op, json!({"image": "local", "timeout": 300})).await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "operator registers: {}",
        a.body
    );
    let id = id_of(&a);
    assert_eq!(a.body["created_by"], "op@example.com");
    for key in [&dev, &viewer] {
        let r = register(&s, key, json!({"image": "alpine"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(r.body["code"], codes::FORBIDDEN);
        let d = call(&s, "DELETE", &format!("/images/{id}"), Some(key), None).await;
        assert_eq!(d.status, StatusCode::FORBIDDEN);
        assert_eq!(list(&s, key).await.len(), 1, "everyone lists images");
        let g = call(&s, "GET", &format!("/images/{id}"), Some(key), None).await;
        assert_eq!(g.status, StatusCode::OK);
    }
    // The CLI says the same.
    let out = cli(&s, &dev, &["images", "register", "alpine"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("(FORBIDDEN)"), "{}", stderr(&out));
    let out = cli(&s, &viewer, &["images", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A developer runs in it (by default and by name); a viewer cannot run at all.
    let out = cli(&s, &dev, &["run", "-q", "--", "echo", "ok"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "ok\n".into()),
        "{}",
        stderr(&out)
    );
    let out = cli(&s, &dev, &["run", "-q", "-i", &id, "--", "echo", "ok"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cli(&s, &viewer, &["run", "-q", "--", "echo", "ok"]);
    assert_eq!(out.status.code(), Some(125));
    let rows = s
        .client_with_key(&dev)
        .list_executions(&Default::default())
        .await
        .unwrap()
        .executions;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|e| e.image_id == id && e.timeout_seconds == Some(300))
    );
    let d = call(&s, "DELETE", &format!("/images/{id}"), Some(&op), None).await;
    assert_eq!(d.status, StatusCode::OK, "operator unregisters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_works_the_same_on_the_firestore_store() {
    let emu = runvoy_emulators::shared_firestore();
    let prefix = format!("images_{}_", std::process::id());
    let s = TestServer::start_with(
        &["--store", "firestore"],
        &[
            ("FIRESTORE_EMULATOR_HOST", emu.host.as_str()),
            ("RUNVOY_GCP_PROJECT_ID", "runvoy-test"),
            ("RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX", prefix.as_str()),
        ],
    );
    assert!(
        !s.data_dir().join("runvoy.db").exists(),
        "SQLite was opened"
    );
    let key = s.admin_key.clone();
    let host = register(&s, &key, json!({"image": "local", "timeout": 120})).await;
    assert_eq!(host.status, StatusCode::CREATED, "{}", host.body);
    assert_eq!(host.body["is_default"], true);
    let host_id = id_of(&host);
    let again = register(&s, &key, json!({"image": "local", "timeout": 120})).await;
    assert_eq!(
        (again.status, id_of(&again)),
        (StatusCode::OK, host_id.clone())
    );

    // Concurrent registrations that each ask for the default: exactly one default after.
    let bodies: Vec<Value> = (0..5)
        .map(|n| json!({"image": format!("ghcr.io/acme/race:{n}"), "is_default": true}))
        .collect();
    let (a, b, c, d, e) = tokio::join!(
        register(&s, &key, bodies[0].clone()),
        register(&s, &key, bodies[1].clone()),
        register(&s, &key, bodies[2].clone()),
        register(&s, &key, bodies[3].clone()),
        register(&s, &key, bodies[4].clone()),
    );
    for r in [a, b, c, d, e] {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let all = list(&s, &key).await;
    assert_eq!(all.len(), 6);
    assert_eq!(defaults(&all).len(), 1, "{all:?}");

    // Back to the host image as the default; a run without an image uses it.
    let r = register(
        &s,
        &key,
        json!({"image": "local", "timeout": 120, "is_default": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(defaults(&list(&s, &key).await), vec![host_id.clone()]);
    let out = cli(&s, &key, &["run", "-q", "--", "echo", "ok"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "ok\n".into()),
        "{}",
        stderr(&out)
    );
    let g = call(&s, "GET", "/images/ghcr.io/acme/race:3", Some(&key), None).await;
    assert_eq!(g.status, StatusCode::OK);
    // Names Firestore could not take as document ids are never looked up as ids: a 4xx, not
    // a store error.
    let g = call(&s, "GET", "/images/__odd__", Some(&key), None).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND, "{}", g.body);
    let a = call(
        &s,
        "POST",
        "/run",
        Some(&key),
        Some(json!({"command": "true", "image": "__odd__"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["code"], codes::IMAGE_NOT_SUPPORTED);
    let d = call(
        &s,
        "DELETE",
        &format!("/images/{host_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(defaults(&list(&s, &key).await).is_empty());
    let r = s
        .client()
        .run(&RunRequest {
            command: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.image_id, "local");
}
