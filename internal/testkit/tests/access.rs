//! Identity and access against the real runvoyd: the policy table walked for every role as owner
//! and non-owner, the claim flow with a controllable clock, revocation and role changes taking
//! effect on the next request, bad input, the failed-auth rate limit, the trace endpoint, and
//! no secret in any log line or list answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use runvoy_api::policy::{Access, Grant, POLICY, Resource, Rule};
use runvoy_domain::Role;
use runvoy_testkit::TestServer;
use runvoy_testkit::http::{Answer, call, call_with};
use serde_json::{Value, json};

/// Creates a user through the API and claims its key; returns (key, claim token).
async fn new_user(s: &TestServer, admin_key: &str, email: &str, role: &str) -> (String, String) {
    let a = call(
        s,
        "POST",
        "/users/create",
        Some(admin_key),
        Some(json!({"email": email, "role": role})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "create {email}: {}", a.body);
    let token = a.body["claim_token"]
        .as_str()
        .expect("claim_token")
        .to_owned();
    let c = call(s, "POST", &format!("/claim/{token}"), None, None).await;
    assert_eq!(c.status, StatusCode::OK, "claim {email}: {}", c.body);
    assert_eq!(c.body["user_email"], email);
    (
        c.body["api_key"].as_str().expect("api_key").to_owned(),
        token,
    )
}

async fn run_sleep(s: &TestServer, key: &str) -> String {
    let a = call(
        s,
        "POST",
        "/run",
        Some(key),
        Some(json!({"command": "sleep 30"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    a.body["execution_id"].as_str().unwrap().to_owned()
}

fn role_name(r: Role) -> &'static str {
    r.as_str()
}

/// Opens the WebSocket; returns the HTTP status of the handshake.
async fn ws_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("websocket {e}"),
    }
}

fn clock_env(dir: &std::path::Path) -> (String, [(String, String); 2]) {
    let f = dir.join("clock-offset");
    std::fs::write(&f, "0").unwrap();
    let p = f.to_str().unwrap().to_owned();
    (
        p.clone(),
        [
            ("RUNVOY_ALLOW_TEST_CLOCK".into(), "1".into()),
            ("RUNVOY_TEST_CLOCK_OFFSET_FILE".into(), p),
        ],
    )
}

fn start_with_clock(args: &[&str]) -> (TestServer, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (file, env) = clock_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (TestServer::start_with(args, &env), dir, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_role_as_owner_and_non_owner() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    let mut secrets: Vec<String> = vec![root.clone()];

    // One user per role, each with an execution of their own. Viewers cannot run, so the
    // viewer is a developer while starting theirs (also a role change taking effect at once).
    let mut keys: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut own_exec: BTreeMap<&'static str, String> = BTreeMap::new();
    for role in Role::ALL {
        let email = format!("{}@example.com", role_name(role));
        let start_role = if role == Role::Viewer {
            "developer"
        } else {
            role_name(role)
        };
        let (key, token) = new_user(&s, &root, &email, start_role).await;
        secrets.extend([key.clone(), token]);
        own_exec.insert(role_name(role), run_sleep(&s, &key).await);
        if role == Role::Viewer {
            let a = call(
                &s,
                "POST",
                "/users/set-role",
                Some(&root),
                Some(json!({"email": email, "role": "viewer"})),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        }
        keys.insert(role_name(role), key);
    }
    let others_exec = run_sleep(&s, &root).await;
    let register = |image: String| {
        let (s, root) = (&s, root.clone());
        async move {
            let a = call(
                s,
                "POST",
                "/images/register",
                Some(&root),
                Some(json!({ "image": image, "is_default": false })),
            )
            .await;
            assert!(a.status.is_success(), "register {image}: {}", a.body);
            a.body["image_id"].as_str().unwrap().to_owned()
        }
    };
    let walk_image = register("registry.example.com/walk/app:1".into()).await;
    let some_request = call(&s, "GET", "/executions", Some(&root), None).await;
    let some_rid = some_request.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // Only local compute delivers secrets; elsewhere an allowed use is a 400 from the run.
    let delivers_secrets = call(&s, "GET", "/health", None, None).await.body["compute"] == "local";
    let mut n = 0;
    let mut checked = 0;
    for rule in POLICY {
        for role in Role::ALL {
            for owner in [true, false] {
                n += 1;
                let who = role_name(role);
                let key = keys[who].clone();
                let exec = if owner {
                    own_exec[who].clone()
                } else {
                    others_exec.clone()
                };
                // Throwaway targets for user-changing routes.
                let target = format!("target{n}@example.com");
                if rule.path == "/users/revoke" || rule.path == "/users/set-role" {
                    let a = call(
                        &s,
                        "POST",
                        "/users/create",
                        Some(&root),
                        Some(json!({"email": target, "role": "viewer"})),
                    )
                    .await;
                    assert_eq!(a.status, StatusCode::CREATED);
                    secrets.push(a.body["claim_token"].as_str().unwrap().to_owned());
                }
                // Throwaway images for the route that unregisters one.
                let image = if rule.method == "DELETE" && rule.path == "/images/{*id}" {
                    register(format!("registry.example.com/walk/gone:{n}")).await
                } else {
                    walk_image.clone()
                };
                // A fresh secret per check, the caller's own when it is the owner (a viewer
                // can create none: every secret rule denies it anyway).
                let secret_name = format!("walk-{n}");
                let secret_value = format!("walk-value-{n}-{}", exec);
                if rule.path.starts_with("/secrets") {
                    let creator = if owner && role != Role::Viewer {
                        key.clone()
                    } else {
                        root.clone()
                    };
                    let a = call(
                        &s,
                        "POST",
                        "/secrets",
                        Some(&creator),
                        Some(json!({"name": secret_name, "key_name": format!("WALK_{n}"), "value": secret_value})),
                    )
                    .await;
                    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
                    secrets.push(secret_value.clone());
                }
                let path = rule
                    .path
                    .replace("{name}", &secret_name)
                    .replace("{*id}", &image)
                    .replace("{id}", &exec)
                    .replace("{token}", "rvc_0000000000000000unknown")
                    .replace("{request_id}", &some_rid);
                let body = match rule.path {
                    "/run" => Some(json!({"command": "true"})),
                    "/images/register" => {
                        // Not the default: the local backend could not run commands in it.
                        Some(
                            json!({"image": format!("registry.example.com/walk/new:{n}"), "is_default": false}),
                        )
                    }
                    "/users/create" => {
                        Some(json!({"email": format!("new{n}@example.com"), "role": "viewer"}))
                    }
                    "/users/revoke" => Some(json!({"email": target})),
                    "/users/set-role" => Some(json!({"email": target, "role": "developer"})),
                    "/secrets" => {
                        let v = format!("walk-new-value-{n}");
                        secrets.push(v.clone());
                        Some(
                            json!({"name": format!("new-{n}"), "key_name": "WALK_NEW", "value": v}),
                        )
                    }
                    "/secrets/{name}" if rule.method == "PUT" => {
                        Some(json!({"description": "changed"}))
                    }
                    "/executions/{id}/secrets" => Some(json!({"token": "e30.AAAA"})),
                    _ => None,
                };
                // `USE` is an action, checked by `POST /run` for each secret a run names.
                let (method, path, body) = if rule.method == runvoy_api::policy::ACTION_USE {
                    (
                        "POST",
                        "/run".to_owned(),
                        Some(json!({"command": "true", "secrets": [secret_name]})),
                    )
                } else {
                    (rule.method, path, body)
                };
                let ctx = format!(
                    "{} {} as {who} ({})",
                    rule.method,
                    rule.path,
                    if owner { "owner" } else { "non-owner" }
                );
                checked += 1;
                match rule.access {
                    Access::Public => {
                        let a = call(&s, rule.method, &path, None, body).await;
                        assert!(
                            a.status != StatusCode::UNAUTHORIZED
                                && a.status != StatusCode::FORBIDDEN,
                            "{ctx}: public route answered {} {}",
                            a.status,
                            a.body
                        );
                    }
                    Access::LogToken => {
                        // The token comes only from the owner-checked logs route.
                        let logs = Rule {
                            method: "GET",
                            path: "/executions/{id}/logs",
                            access: Access::Public,
                        };
                        let grant = runvoy_api::policy::lookup(logs.method, logs.path)
                            .unwrap()
                            .access
                            .grant(role);
                        let a = call(
                            &s,
                            "GET",
                            &format!("/executions/{exec}/logs"),
                            Some(&key),
                            None,
                        )
                        .await;
                        if grant == Grant::All || (grant == Grant::Own && owner) {
                            assert_eq!(a.status, StatusCode::OK, "{ctx}: {}", a.body);
                            let url = a.body["websocket_url"].as_str().unwrap().to_owned();
                            secrets.push(url.split("token=").nth(1).unwrap().to_owned());
                            assert_eq!(ws_status(&url).await, 101, "{ctx}");
                        } else {
                            assert_eq!(a.status, StatusCode::FORBIDDEN, "{ctx}: {}", a.body);
                        }
                        // Without a token, never.
                        let no_token =
                            s.url.replace("http://", "ws://") + &format!("/api/v1{path}");
                        assert_eq!(ws_status(&no_token).await, 401, "{ctx}");
                    }
                    Access::SecretsToken => {
                        // Never with a key, never with a forged token.
                        let a = call(&s, method, &path, Some(&key), body).await;
                        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{ctx}: {}", a.body);
                        assert_eq!(a.body["code"], "INVALID_TOKEN", "{ctx}");
                    }
                    Access::Key(resource, _) => {
                        let grant = rule.access.grant(role);
                        // A role denied `POST /run` never gets as far as using a secret.
                        let run_denied = rule.method == runvoy_api::policy::ACTION_USE
                            && runvoy_api::policy::lookup("POST", "/run")
                                .unwrap()
                                .access
                                .grant(role)
                                == Grant::Deny;
                        let allowed = !run_denied
                            && match grant {
                                Grant::All => true,
                                Grant::Own => {
                                    owner
                                        || !matches!(
                                            resource,
                                            Resource::Execution | Resource::Secret
                                        )
                                }
                                Grant::Deny => false,
                            };
                        // No key is always 401.
                        let a = call(&s, method, &path, None, body.clone()).await;
                        assert_eq!(
                            a.status,
                            StatusCode::UNAUTHORIZED,
                            "{ctx} without a key: {}",
                            a.body
                        );
                        let a = call(&s, method, &path, Some(&key), body).await;
                        if allowed
                            && rule.method == runvoy_api::policy::ACTION_USE
                            && !delivers_secrets
                        {
                            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{ctx}: {}", a.body);
                        } else if allowed {
                            assert!(
                                a.status.is_success(),
                                "{ctx}: expected success, got {} {}",
                                a.status,
                                a.body
                            );
                        } else {
                            assert_eq!(a.status, StatusCode::FORBIDDEN, "{ctx}: {}", a.body);
                            assert_eq!(a.body["code"], "FORBIDDEN", "{ctx}");
                        }
                        if allowed && rule.path == "/users/rotate-key" {
                            let new = a.body["api_key"].as_str().unwrap().to_owned();
                            let old = call(&s, "GET", "/executions", Some(&key), None).await;
                            assert_eq!(
                                old.status,
                                StatusCode::UNAUTHORIZED,
                                "{ctx}: the old key must die"
                            );
                            secrets.push(new.clone());
                            keys.insert(who, new);
                        }
                        if allowed && rule.path == "/executions" {
                            let mine = a.body.as_array().expect("a bare JSON array");
                            let others = mine
                                .iter()
                                .filter(|e| e["created_by"] != format!("{who}@example.com"))
                                .count();
                            match grant {
                                Grant::Own => assert_eq!(
                                    others, 0,
                                    "{ctx}: a filtered list shows only the caller's"
                                ),
                                _ => assert!(
                                    others > 0,
                                    "{ctx}: an unfiltered list shows everyone's"
                                ),
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, POLICY.len() * 8);

    // No key, token or claim secret in any log line or in the users list.
    let list = call(&s, "GET", "/users", Some(&keys["admin"]), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let list_text = list.body.to_string();
    assert!(!list_text.contains("key_hash") && !list_text.contains("unclaimed:"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s.log();
    assert!(log.contains("request done"), "the server logs requests");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the server log: {secret}"
        );
        assert!(
            !list_text.contains(secret.as_str()),
            "a secret is in the users list"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_tokens_work_once_and_expire_with_the_clock() {
    let (s, _dir, clock) = start_with_clock(&[]);
    let root = s.admin_key.clone();
    let a = call(
        &s,
        "POST",
        "/users/create",
        Some(&root),
        Some(json!({"email": "Dev@Example.com", "role": "developer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["user"]["email"], "dev@example.com");
    assert_eq!(a.body["user"]["status"], "pending");
    let token = a.body["claim_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rvc_"));

    let c = call(&s, "POST", &format!("/claim/{token}"), None, None).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    let key = c.body["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("rvk_") && key.len() == 68);
    let again = call(&s, "POST", &format!("/claim/{token}"), None, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(
        call(&s, "GET", "/executions", Some(&key), None)
            .await
            .status,
        StatusCode::OK
    );
    let unknown = call(&s, "POST", "/claim/rvc_nope", None, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["code"], "NOT_FOUND");

    // A token older than 15 minutes is refused, and its unclaimed user expires.
    let a = call(
        &s,
        "POST",
        "/users/create",
        Some(&root),
        Some(json!({"email": "late@example.com", "role": "viewer"})),
    )
    .await;
    let late = a.body["claim_token"].as_str().unwrap().to_owned();
    std::fs::write(&clock, (14 * 60 * 1000).to_string()).unwrap();
    let users = call(&s, "GET", "/users", Some(&root), None).await;
    assert!(
        users.body.to_string().contains("late@example.com"),
        "still pending at 14 min"
    );
    std::fs::write(&clock, (16 * 60 * 1000).to_string()).unwrap();
    let c = call(&s, "POST", &format!("/claim/{late}"), None, None).await;
    assert_eq!(c.status, StatusCode::NOT_FOUND, "{}", c.body);
    let users = call(&s, "GET", "/users", Some(&root), None).await;
    assert!(
        !users.body.to_string().contains("late@example.com"),
        "expired users are gone: {}",
        users.body
    );
    // The address can be created again.
    let a = call(
        &s,
        "POST",
        "/users/create",
        Some(&root),
        Some(json!({"email": "late@example.com", "role": "viewer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // The claimed user did not expire.
    assert_eq!(
        call(&s, "GET", "/executions", Some(&key), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_role_changes_apply_on_the_next_request() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    let (key, _) = new_user(&s, &root, "dev@example.com", "developer").await;
    assert_eq!(
        call(&s, "GET", "/users", Some(&key), None).await.status,
        StatusCode::FORBIDDEN
    );
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "dev@example.com", "role": "operator"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        call(&s, "GET", "/users", Some(&key), None).await.status,
        StatusCode::OK
    );
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "dev@example.com", "role": "viewer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        call(
            &s,
            "POST",
            "/run",
            Some(&key),
            Some(json!({"command": "true"}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "dev@example.com", "role": "developer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    let exec = run_sleep(&s, &key).await;
    let logs = call(
        &s,
        "GET",
        &format!("/executions/{exec}/logs"),
        Some(&key),
        None,
    )
    .await;
    let ws = logs.body["websocket_url"].as_str().unwrap().to_owned();
    let a = call(
        &s,
        "POST",
        "/users/revoke",
        Some(&root),
        Some(json!({"email": "dev@example.com"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["user"]["status"], "revoked");
    let r = call(&s, "GET", "/executions", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["code"], "API_KEY_REVOKED");
    assert_eq!(
        ws_status(&ws).await,
        401,
        "a revoked user's WebSocket token is dead"
    );
    // A revoked user's role cannot be changed back.
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "dev@example.com", "role": "admin"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_token_does_not_outlive_a_demotion() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    let (key, _) = new_user(&s, &root, "ops@example.com", "operator").await;
    let theirs = run_sleep(&s, &root).await;
    let own = run_sleep(&s, &key).await;
    let ws_of = |a: &Answer| a.body["websocket_url"].as_str().unwrap().to_owned();
    let a = call(
        &s,
        "GET",
        &format!("/executions/{theirs}/logs"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "operators read every execution");
    let ws_theirs = ws_of(&a);
    let a = call(
        &s,
        "GET",
        &format!("/executions/{own}/logs"),
        Some(&key),
        None,
    )
    .await;
    let ws_own = ws_of(&a);
    assert_eq!(ws_status(&ws_theirs).await, 101);
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "ops@example.com", "role": "developer"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // A developer follows only its own executions, whatever token it kept from before.
    assert_eq!(
        ws_status(&ws_theirs).await,
        401,
        "a token minted before the demotion still opens another user's logs"
    );
    assert_eq!(ws_status(&ws_own).await, 101);
    for id in [theirs, own] {
        call(
            &s,
            "DELETE",
            &format!("/executions/{id}"),
            Some(&root),
            None,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    // last_used moves on its own; everything else must stay as it is.
    let users = |v: Value| -> Value {
        let mut v = v["users"].clone();
        for u in v.as_array_mut().unwrap() {
            u.as_object_mut().unwrap().remove("last_used");
        }
        v
    };
    let before = users(call(&s, "GET", "/users", Some(&root), None).await.body);
    for (body, status, code) in [
        (
            json!({"email": "not-an-email", "role": "viewer"}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"email": "a@b.c", "role": "root"}),
            400,
            "INVALID_REQUEST",
        ),
        (json!({"email": "a@b.c"}), 400, "INVALID_REQUEST"),
        (
            json!({"email": "admin@localhost", "role": "viewer"}),
            409,
            "CONFLICT",
        ),
    ] {
        let a = call(&s, "POST", "/users/create", Some(&root), Some(body.clone())).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {}", a.body);
        assert_eq!(a.body["code"], code, "{body}");
    }
    let a = call(
        &s,
        "POST",
        "/users/revoke",
        Some(&root),
        Some(json!({"email": "nobody@example.com"})),
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.body["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "admin@localhost", "role": "boss"})),
    )
    .await;
    assert_eq!(a.status.as_u16(), 400);
    // Never zero admins: neither revoking nor demoting the last one.
    let a = call(
        &s,
        "POST",
        "/users/revoke",
        Some(&root),
        Some(json!({"email": "admin@localhost"})),
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.body["code"].as_str()),
        (409, Some("CONFLICT")),
        "{}",
        a.body
    );
    let a = call(
        &s,
        "POST",
        "/users/set-role",
        Some(&root),
        Some(json!({"email": "admin@localhost", "role": "viewer"})),
    )
    .await;
    assert_eq!(a.status.as_u16(), 409, "{}", a.body);
    assert_eq!(
        users(call(&s, "GET", "/users", Some(&root), None).await.body),
        before,
        "nothing changed"
    );
    // With a second admin, the first may go.
    let (second, _) = new_user(&s, &root, "second@example.com", "admin").await;
    let a = call(
        &s,
        "POST",
        "/users/revoke",
        Some(&second),
        Some(json!({"email": "admin@localhost"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_rate_limited_per_address() {
    let s = TestServer::start_with(
        &[
            "--auth-failure-burst",
            "3",
            "--auth-failure-per-minute",
            "1",
        ],
        &[],
    );
    for _ in 0..3 {
        let a = call(&s, "GET", "/executions", Some("rvk_wrong"), None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = call(&s, "GET", "/executions", Some("rvk_wrong"), None).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert_eq!(a.body["code"], "RATE_LIMITED");
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    let a = call(&s, "POST", "/claim/rvc_guess", None, None).await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "claim guesses count too"
    );
    // A valid key still works from the same address.
    assert_eq!(
        call(&s, "GET", "/executions", Some(&s.admin_key), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_what_a_request_touched_and_its_log_lines() {
    let s = TestServer::start();
    let root = s.admin_key.clone();
    // A caller's X-Request-Id is only a correlation id: the server picks the request id.
    let a = call_with(
        &s,
        "POST",
        "/users/create",
        Some(&root),
        Some(json!({"email": "t@example.com", "role": "viewer"})),
        &[("x-request-id", "trace-test-0001")],
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.headers["x-correlation-id"], "trace-test-0001");
    let rid = a.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(rid, "trace-test-0001");
    let rid = rid.as_str();
    assert_eq!(a.body["user"]["created_by_request_id"], rid);
    assert_eq!(a.body["user"]["created_by"], "admin@localhost");
    let r = call(
        &s,
        "POST",
        "/run",
        Some(&root),
        Some(json!({"command": "echo hi"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let run_rid = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let run_rid = run_rid.as_str();

    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = call(&s, "GET", &format!("/trace/{rid}"), Some(&root), None).await;
        assert_eq!(t.status, StatusCode::OK, "{}", t.body);
        let msgs: Vec<&str> = t.body["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["message"].as_str())
            .collect();
        if msgs.contains(&"request done") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no log lines for {rid}: {}",
            t.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let users = t.body["related_resources"]["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["email"], "t@example.com");
    let created = t.body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("user created")
        })
        .expect("user created line");
    assert_eq!(created["fields"]["request_id"], rid);
    assert_eq!(created["fields"]["user"], "admin@localhost");
    assert_eq!(created["fields"]["route"], "/api/v1/users/create");
    assert!(created["fields"]["time"].is_string() && created["level"] == "INFO");

    let t = call(&s, "GET", &format!("/trace/{run_rid}"), Some(&root), None).await;
    let execs = t.body["related_resources"]["executions"]
        .as_array()
        .unwrap();
    assert_eq!(execs.len(), 1, "{}", t.body);
    assert_eq!(execs[0]["created_by_request_id"], run_rid);
    // The runner banner names the request and the user.
    let id = execs[0]["execution_id"].as_str().unwrap();
    s.wait_settled(id, Duration::from_secs(30)).await;
    let banner = s.all_logs(id).await.into_iter().next().unwrap().message;
    assert!(
        banner.contains(run_rid) && banner.contains("admin@localhost"),
        "{banner}"
    );

    assert_eq!(
        call(&s, "GET", "/trace/bad%20id", Some(&root), None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_claims_lists_rotates_and_traces() {
    let s = TestServer::start();
    let out = s
        .runvoy()
        .args(["users", "create", "cli@example.com", "--role", "developer"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("rvc_"), "{token}");

    // The new user has no config yet: `claim` writes it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let user_cli = || {
        let mut c = std::process::Command::new(runvoy_testkit::bin("runvoy"));
        c.env("RUNVOY_CONFIG", &cfg)
            .env_remove("RUNVOY_API_URL")
            .env_remove("RUNVOY_API_KEY")
            .env("NO_COLOR", "1");
        c
    };
    let out = user_cli()
        .args(["claim", &token, "--api-url", &s.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("rvk_"));
    let out = user_cli()
        .args(["claim", &token, "--force"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a token works once");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(CONFLICT)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = user_cli().args(["list"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = user_cli().args(["users", "list"]).output().unwrap();
    assert!(!out.status.success(), "developers cannot list users");

    let out = user_cli().args(["users", "rotate-key"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "the key went to the config file, not the terminal"
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let new_key = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        call(&s, "GET", "/executions", Some(&key), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert!(user_cli().args(["list"]).output().unwrap().status.success());

    let out = s
        .runvoy()
        .args(["users", "set-role", "cli@example.com", "viewer"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.runvoy().args(["users", "list"]).output().unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.lines().any(|l| l.starts_with("cli@example.com")
            && l.contains("viewer")
            && l.contains("active")),
        "{list}"
    );
    let out = s
        .runvoy()
        .args(["users", "revoke", "cli@example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !user_cli().args(["list"]).output().unwrap().status.success(),
        "revoked"
    );

    let a = call(&s, "GET", "/executions", Some(&s.admin_key), None).await;
    assert_eq!(a.status, StatusCode::OK);
    let rid = a.headers["x-request-id"].to_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = s.runvoy().args(["trace", &rid]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("request done"));

    for secret in [&token, &key, &new_key] {
        assert!(!s.log().contains(secret.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runvoyd_admin_create_adds_a_user_to_a_running_server() {
    let s = TestServer::start();
    let out = s
        .runvoyd()
        .args([
            "admin",
            "create",
            "Ops@Example.com",
            "--role",
            "operator",
            "--data-dir",
        ])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("rvk_"), "{key}");
    assert_eq!(
        call(&s, "GET", "/users", Some(&key), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/users/create",
            Some(&key),
            Some(json!({"email": "x@y.z", "role": "viewer"}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let again = std::process::Command::new(runvoy_testkit::bin("runvoyd"))
        .args(["admin", "create", "ops@example.com", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(!again.status.success(), "an existing user is refused");
    assert!(!s.log().contains(&key));
}

#[test]
fn the_test_clock_needs_both_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(runvoy_testkit::bin("runvoyd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-client-config",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUNVOY_TEST_CLOCK_OFFSET_FILE", dir.path().join("offset"))
        .env_remove("RUNVOY_ALLOW_TEST_CLOCK")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be set together"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_log_stream_ends_when_its_user_is_revoked() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start();
    let root = s.admin_key.clone();
    let (key, _) = new_user(&s, &root, "dev-open@example.com", "developer").await;
    let own = run_sleep(&s, &key).await;
    let a = call(
        &s,
        "GET",
        &format!("/executions/{own}/logs"),
        Some(&key),
        None,
    )
    .await;
    let url = a.body["websocket_url"].as_str().unwrap().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    let a = call(
        &s,
        "POST",
        "/users/revoke",
        Some(&root),
        Some(json!({"email": "dev-open@example.com"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // A revocation through the API makes the server re-check that user's streams at once (the
    // 20 s keep-alive check is only the fallback for changes made elsewhere).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(Some(f))) = msg {
                return Some(u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the stream stayed open after the user was revoked");
    assert_eq!(closed, Some(1008));
    call(
        &s,
        "DELETE",
        &format!("/executions/{own}"),
        Some(&root),
        None,
    )
    .await;
}
