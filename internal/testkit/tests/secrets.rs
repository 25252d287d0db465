//! Secrets with the real binaries: a run injects a secret its command prints in every form
//! (plain, base64, URL-encoded, split over two lines), and then not one copy of the value is
//! found in the store, the execution's files, any API answer, the server log, or the streamed
//! and stored logs. Also: a duplicate create is a 409 that keeps the value, only the owner or
//! an admin reveals, a run naming an unknown secret starts nothing, and a playbook's secrets
//! are injected.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use runvoy_testkit::TestServer;
use runvoy_testkit::http::call;
use serde_json::{Value, json};

/// Has characters that URL-encode (`/`, `+`, space), long enough to be masked.
const VALUE: &str = "S3cr3t/Leak+Value 9f2c";

/// Every form of the value the command prints, and the two halves it prints on two lines.
fn forms() -> Vec<String> {
    let b = VALUE.as_bytes();
    vec![
        VALUE.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        "S3cr3t%2FLeak%2BValue%209f2c".to_owned(),
        "S3cr3t/Leak+".to_owned(),
        "Value 9f2c".to_owned(),
    ]
}

fn assert_clean(what: &str, data: &[u8]) {
    for f in forms() {
        let hit = data.windows(f.len()).any(|w| w == f.as_bytes());
        assert!(!hit, "{what} holds {f:?}");
    }
}

/// Every file under `dir`, each checked for the value.
fn assert_tree_clean(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            n += assert_tree_clean(&p);
        } else if meta.is_file()
            && let Ok(data) = std::fs::read(&p)
        {
            assert_clean(&p.display().to_string(), &data);
            n += 1;
        }
    }
    n
}

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

/// The command: prints the value plainly, as base64, URL-encoded, and split over two lines.
const PRINTS: &str = r#"printf 'plain %s\n' "$LEAK"
printf '%s' "$LEAK" | base64
printf 'url %s\n' "$(printf '%s' "$LEAK" | sed -e 's|%|%25|g' -e 's|/|%2F|g' -e 's|+|%2B|g' -e 's| |%20|g')"
printf '%s\n%s\n' "${LEAK%%Value*}" "Value${LEAK#*Value}"
env | grep '^LEAK=' >&2
test -e .env && echo 'the .env file is still there'
echo "length ${#LEAK} done""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_value_appears_nowhere_but_in_the_command() {
    let s = TestServer::start();
    let admin = s.admin_key.clone();
    let mut answers: Vec<(String, Value)> = Vec::new();

    // Create it; the answer carries no value.
    let a = call(
        &s,
        "POST",
        "/secrets",
        Some(&admin),
        Some(json!({"name": "leak", "key_name": "LEAK", "description": "test", "value": VALUE})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["key_name"], "LEAK");
    assert!(a.body.get("value").is_none(), "{}", a.body);
    answers.push(("create".into(), a.body));

    // A duplicate create is refused with 409 and the stored value is untouched.
    let dup = call(
        &s,
        "POST",
        "/secrets",
        Some(&admin),
        Some(json!({"name": "leak", "key_name": "OTHER", "value": "another-value-123"})),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.body);
    assert_eq!(dup.body["code"], "SECRET_EXISTS");
    answers.push(("duplicate".into(), dup.body));

    // Bad names and key names are 400 with a stable code, not 500.
    for bad in [
        json!({"name": "../x", "key_name": "A", "value": "vvvv"}),
        json!({"name": "ok", "key_name": "1A", "value": "vvvv"}),
        json!({"name": "ok", "key_name": "RUNVOY_COMMAND", "value": "vvvv"}),
    ] {
        let a = call(&s, "POST", "/secrets", Some(&admin), Some(bad.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
        assert_eq!(a.body["code"], "INVALID_SECRET", "{bad}");
    }

    // A run naming an unknown secret starts nothing.
    let before = call(&s, "GET", "/executions", Some(&admin), None).await;
    let a = call(
        &s,
        "POST",
        "/run",
        Some(&admin),
        Some(json!({"command": "true", "secrets": ["nope"]})),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(a.body["code"], "SECRET_NOT_FOUND");
    let after = call(&s, "GET", "/executions", Some(&admin), None).await;
    assert_eq!(
        before.body.as_array().unwrap().len(),
        after.body.as_array().unwrap().len()
    );

    // The run, through the CLI: its streamed output is what the user sees.
    let out = s
        .runvoy()
        .args(["run", "--secret", "leak", "-o", "json", PRINTS])
        .stdin(Stdio::null())
        .output()
        .expect("runvoy run");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_clean("the streamed stdout", &out.stdout);
    assert_clean("the streamed stderr", &out.stderr);
    assert!(stdout.contains("plain ***"), "{stdout}");
    assert!(stdout.contains("url ***"), "{stdout}");
    assert!(
        stdout.contains("length 22 done"),
        "the command had the value: {stdout}"
    );
    // (The JSON after the output repeats the command, whose text names the message.)
    let output = &stdout[..stdout.rfind("\n{").unwrap_or(stdout.len())];
    assert!(!output.contains("still there"), "{stdout}");
    assert!(stderr.contains("LEAK=***"), "{stderr}");
    let exec: Value = serde_json::from_str(&stdout[stdout.rfind("\n{").map_or(0, |i| i + 1)..])
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let id = exec["execution_id"].as_str().unwrap().to_owned();
    s.wait_settled(&id, Duration::from_secs(30)).await;

    // Stored logs: masked, and each half of the split value too.
    let logs = s.all_logs(&id).await;
    let text: String = logs.iter().map(|l| format!("{}\n", l.message)).collect();
    assert_clean("the stored logs", text.as_bytes());
    assert!(text.matches("***").count() >= 5, "{text}");

    // Every API answer about it.
    for (what, method, path) in [
        ("list", "GET", "/secrets".to_owned()),
        ("get", "GET", "/secrets/leak".to_owned()),
        ("execution", "GET", format!("/executions/{id}")),
        ("logs", "GET", format!("/executions/{id}/logs")),
        ("executions", "GET", "/executions".to_owned()),
    ] {
        let a = call(&s, method, &path, Some(&admin), None).await;
        assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.body);
        answers.push((what.into(), a.body));
    }
    let rid = exec["created_by_request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !rid.is_empty() {
        let a = call(&s, "GET", &format!("/trace/{rid}"), Some(&admin), None).await;
        answers.push(("trace".into(), a.body));
    }
    for (what, body) in &answers {
        assert_clean(&format!("the {what} answer"), body.to_string().as_bytes());
    }

    // The final record counts the masks.
    let records = std::fs::read_to_string(s.executions_dir().join(&id).join("records.jsonl"))
        .expect("records.jsonl");
    let last: Value = serde_json::from_str(records.lines().last().unwrap()).unwrap();
    assert_eq!(last["runvoy"], "exit");
    assert!(last["redactions"].as_u64().unwrap() >= 5, "{last}");

    // The reveal is the one place the value comes out, for its owner; a duplicate create
    // did not change it.
    let r = call(&s, "POST", "/secrets/leak/reveal", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["value"], VALUE);
    assert_eq!(r.body["key_name"], "LEAK");

    // A developer may use it but not reveal it; its own secret it may reveal.
    let dev = new_user(&s, "dev@example.com", "developer").await;
    let a = call(&s, "POST", "/secrets/leak/reveal", Some(&dev), None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let a = call(
        &s,
        "PUT",
        "/secrets/leak",
        Some(&dev),
        Some(json!({"value": "x-x-x-x"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let a = call(
        &s,
        "POST",
        "/secrets",
        Some(&dev),
        Some(json!({"name": "dev-own", "key_name": "DEV_OWN", "value": "dev-owned-value"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = call(&s, "POST", "/secrets/dev-own/reveal", Some(&dev), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["value"], "dev-owned-value");
    let viewer = new_user(&s, "viewer@example.com", "viewer").await;
    let a = call(&s, "GET", "/secrets", Some(&viewer), None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);

    // A playbook's secrets are injected like --secret.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".runvoy")).unwrap();
    std::fs::write(
        dir.path().join(".runvoy/uses-secret.yml"),
        "description: uses a secret\nsecrets:\n  - leak\ncommands:\n  - echo \"len ${#LEAK}\"\n  - echo \"$LEAK\"\n",
    )
    .unwrap();
    let out = s
        .runvoy()
        .args(["playbook", "run", "uses-secret", "-q"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "len 22\n***\n");

    // The CLI reads a value from stdin, never from an argument, and shows it only on --reveal.
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = s.runvoy();
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if let Some(v) = stdin {
                input.write_all(v.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    };
    let out = cli(
        &[
            "secrets",
            "create",
            "cli-made",
            "CLI_MADE",
            "positional-value",
        ],
        None,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a positional value is refused: {out:?}"
    );
    let out = cli(
        &[
            "secrets",
            "create",
            "cli-made",
            "CLI_MADE",
            "--description",
            "from the CLI",
        ],
        Some("cli-value-1234\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli(&["secrets", "list"], None);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed.contains("cli-made") && listed.contains("CLI_MADE"),
        "{listed}"
    );
    assert!(!listed.contains("cli-value-1234"), "{listed}");
    let out = cli(&["secrets", "get", "cli-made"], None);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cli-value-1234"));
    let out = cli(&["secrets", "get", "cli-made", "--reveal"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Value:       cli-value-1234\n"),
        "{out:?}"
    );

    // Last: the server log and every file of the data dir (SQLite database and WAL, the
    // executions' job specs, record files, sidecar and supervisor logs).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_clean("the server log", s.log().as_bytes());
    assert!(
        s.log().contains("secret value revealed"),
        "the reveal is audited"
    );
    let files = assert_tree_clean(&s.data_dir());
    assert!(files > 5, "only {files} files checked");
    if runvoy_testkit::backend::test_backend() == runvoy_testkit::backend::TestBackend::Local {
        assert!(
            s.data_dir().join("runvoy.db").exists(),
            "the SQLite store was checked"
        );
    }
}
