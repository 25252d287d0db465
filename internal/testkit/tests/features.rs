//! Run features with the real runvoyd and runvoy binaries: locks (the race, release on end
//! and on kill, `--wait-lock`), the environment (`-e`, `--env-file`, multi-line values,
//! limits) and playbooks.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use runvoy_client::ClientError;
use runvoy_proto::{RunRequest, Status};
use runvoy_testkit::{TestServer, http};

fn server() -> TestServer {
    TestServer::start_with(&["--kill-grace", "2"], &[])
}

fn locked(cmd: &str, lock: &str) -> RunRequest {
    RunRequest {
        command: cmd.into(),
        lock: Some(lock.into()),
        ..Default::default()
    }
}

fn cli(s: &TestServer, dir: &Path, args: &[&str]) -> Output {
    s.runvoy()
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .expect("runvoy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_with_one_lock_start_exactly_one() {
    let s = server();
    let c = s.client();
    for round in 0..3 {
        let req = locked("sleep 1", "deploy");
        let (a, b) = tokio::join!(c.run(&req), c.run(&req));
        let (won, lost) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("round {round}: exactly one must start: {other:?}"),
        };
        let ClientError::Api {
            status,
            code,
            lock: Some(holder),
            message,
            ..
        } = &lost
        else {
            panic!("{lost:?}")
        };
        assert_eq!((*status, code.as_str()), (409, "LOCK_HELD"), "{message}");
        assert_eq!(holder.execution_id, won.execution_id);
        assert_eq!(holder.name, "deploy");
        assert!(message.contains(&won.execution_id), "{message}");
        // Only the winner exists.
        let all = c.list_executions(&Default::default()).await.unwrap();
        assert_eq!(all.executions.len(), round + 1);
        // Free again once the holder ends.
        let e = s
            .wait_settled(&won.execution_id, Duration::from_secs(30))
            .await;
        assert_eq!(e.status, Status::Succeeded);
        assert_eq!(e.lock.as_deref(), Some("deploy"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_frees_the_lock_and_other_locks_are_independent() {
    let s = server();
    let c = s.client();
    let holder = c.run(&locked("sleep 60", "db")).await.unwrap();
    c.run(&locked("true", "other")).await.unwrap();
    let err = c.run(&locked("true", "db")).await.unwrap_err();
    assert_eq!(err.code(), "LOCK_HELD");
    c.kill(&holder.execution_id).await.unwrap();
    let e = s
        .wait_settled(&holder.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Stopped);
    let next = c
        .run(&locked("true", "db"))
        .await
        .expect("free after the kill");
    s.wait_settled(&next.execution_id, Duration::from_secs(30))
        .await;
    // A bad lock name is a 400 that creates nothing.
    let a = http::call(
        &s,
        "POST",
        "/run",
        Some(&s.admin_key),
        Some(serde_json::json!({"command": "true", "lock": "no spaces"})),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], "INVALID_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_held_lock_or_waits_for_it() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let holder = s.client().run(&locked("sleep 3", "deploy")).await.unwrap();
    let out = cli(
        &s,
        dir.path(),
        &["run", "--lock", "deploy", "--", "echo", "hi"],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(&holder.execution_id), "{err}");
    assert!(
        err.contains("LOCK_HELD") && err.contains("--wait-lock"),
        "{err}"
    );
    let out = cli(
        &s,
        dir.path(),
        &[
            "run",
            "--lock",
            "deploy",
            "--wait-lock",
            "--",
            "echo",
            "after",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "after\n");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("held by execution {}", holder.execution_id)),
        "{err}"
    );
    let e = s
        .client()
        .get_execution(&holder.execution_id)
        .await
        .unwrap();
    assert!(
        e.status.is_terminal(),
        "started only after the holder ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_from_flags_files_and_the_callers_variables() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let key = "-----BEGIN PRIVATE KEY-----\nMIIB\"quoted\"\\n\n-----END PRIVATE KEY-----";
    std::fs::write(
        dir.path().join("vars.env"),
        format!(
            "# deploy settings\nREGION=eu-west-1\nexport GREETING='hello $USER'\nKEY=\"{}\"\n",
            key.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    )
    .unwrap();
    let out = s
        .runvoy()
        .args([
            "run",
            "-q",
            "--env-file",
            "vars.env",
            "-e",
            "REGION=us-east-1",
            "-e",
            "FROM_SHELL",
            "--",
            "sh",
            "-c",
            "printf '%s|%s|%s|%s|%s' \"$REGION\" \"$GREETING\" \"$FROM_SHELL\" \"$FWD\" \"$KEY\"",
        ])
        .current_dir(dir.path())
        .env("FROM_SHELL", "two\nlines")
        .env("RUNVOY_USER_FWD", "forwarded")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("us-east-1|hello $USER|two\nlines|forwarded|{key}")
    );
    // -e K with K unset locally: a clear error, nothing started.
    let before = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    let out = cli(
        &s,
        dir.path(),
        &["run", "-e", "NOT_SET_ANYWHERE", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("NOT_SET_ANYWHERE is not set"),
        "{out:?}"
    );
    let out = cli(
        &s,
        dir.path(),
        &["run", "--env-file", "missing.env", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("missing.env"), "{out:?}");
    let after = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    assert_eq!(before.executions.len(), after.executions.len());
    // The API's limits: 400 INVALID_REQUEST, the message naming what is wrong.
    let many: serde_json::Map<String, serde_json::Value> = (0..257)
        .map(|i| (format!("V{i}"), serde_json::Value::from("")))
        .collect();
    for (env, needle) in [
        (serde_json::Value::Object(many), "at most 256"),
        (serde_json::json!({"1BAD": "x"}), "1BAD"),
        (serde_json::json!({"BIG": "x".repeat(70_000)}), "64 KiB"),
        (serde_json::json!({"NUL": "a\u{0}b"}), "NUL"),
    ] {
        let a = http::call(
            &s,
            "POST",
            "/run",
            Some(&s.admin_key),
            Some(serde_json::json!({"command": "true", "env": env})),
        )
        .await;
        assert_eq!(a.status, 400, "{needle}: {:?}", a.body);
        assert_eq!(a.body["code"], "INVALID_REQUEST");
        assert!(
            a.body["error"].as_str().unwrap().contains(needle),
            "{:?}",
            a.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbooks_list_show_and_run() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let pbs = dir.path().join(".runvoy");
    std::fs::create_dir_all(&pbs).unwrap();
    std::fs::write(
        pbs.join("greet.yml"),
        "description: Say hello\nenv:\n  NAME: world\n  TIMES: 2\ncommands:\n  - echo \"hello $NAME\"\n  - test \"$TIMES\" = 3\n  - echo never\ntimeout: 1m\nlock: greet\n",
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/tests/fixtures/playbooks");
    std::fs::copy(
        fixtures.join("build-caddy-example.yml"),
        pbs.join("build-caddy-example.yml"),
    )
    .unwrap();
    std::fs::copy(
        fixtures.join("opencode-example.yml"),
        pbs.join("opencode-example.yml"),
    )
    .unwrap();
    std::fs::write(pbs.join("typo.yml"), "commands: [a]\nlcok: x\n").unwrap();

    let out = cli(&s, dir.path(), &["playbook", "list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed = text(&out.stdout);
    assert!(
        listed.contains("greet") && listed.contains("Say hello"),
        "{listed}"
    );
    assert!(listed.contains("build-caddy-example"), "{listed}");
    assert!(text(&out.stderr).contains("typo.yml:2:1"), "{out:?}");

    let out = cli(&s, dir.path(), &["playbook", "show", "greet"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("Runs:         echo \"hello $NAME\" && test \"$TIMES\" = 3 && echo never"),
        "{shown}"
    );

    // The commands stop at the first failure (&&); --set changes a parameter.
    let out = cli(&s, dir.path(), &["playbook", "run", "greet", "-q"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "hello world\n");
    let out = cli(
        &s,
        dir.path(),
        &[
            "playbook",
            "run",
            "greet",
            "-q",
            "--set",
            "TIMES=3",
            "--set",
            "NAME=runvoy",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("hello runvoy\nnever\n"), "{stdout}");
    let e: serde_json::Value =
        serde_json::from_str(stdout.split_once("never\n").unwrap().1).unwrap();
    assert_eq!(e["lock"], "greet");
    assert_eq!(e["timeout_seconds"], 60);
    let out = cli(
        &s,
        dir.path(),
        &["playbook", "run", "greet", "--set", "NOPE=1"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("declares: NAME, TIMES"),
        "{out:?}"
    );

    // A playbook naming a secret nobody stored is refused before anything starts.
    let before = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    let out = cli(&s, dir.path(), &["playbook", "run", "opencode-example"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(text(&out.stderr).contains("SECRET_NOT_FOUND"), "{out:?}");
    let out = cli(&s, dir.path(), &["playbook", "run", "typo"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(text(&out.stderr).contains("typo.yml:2:1"), "{out:?}");
    let out = cli(&s, dir.path(), &["playbook", "run", "absent"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let after = s
        .client()
        .list_executions(&Default::default())
        .await
        .unwrap();
    assert_eq!(before.executions.len(), after.executions.len());

    // ~/.runvoy/playbooks is the fallback.
    let home_pbs = dir.path().join("home/.runvoy/playbooks");
    std::fs::create_dir_all(&home_pbs).unwrap();
    std::fs::write(home_pbs.join("from-home.yaml"), "commands: [echo home]\n").unwrap();
    let out = s
        .runvoy()
        .args(["playbook", "run", "from-home", "-q"])
        .current_dir(dir.path())
        .env("HOME", dir.path().join("home"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "home\n", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_work_the_same_with_runvoyd_on_the_firestore_store() {
    let emu = runvoy_emulators::shared_firestore();
    let prefix = format!("locks_{}_", std::process::id());
    let s = TestServer::start_with(
        &["--kill-grace", "2", "--store", "firestore"],
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
    let c = s.client();
    let req = locked("sleep 60", "deploy");
    let (a, b) = tokio::join!(c.run(&req), c.run(&req));
    let (won, lost) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one must start: {other:?}"),
    };
    let ClientError::Api {
        status,
        lock: Some(holder),
        ..
    } = &lost
    else {
        panic!("{lost:?}")
    };
    assert_eq!(
        (*status, holder.execution_id.as_str()),
        (409, won.execution_id.as_str())
    );
    c.kill(&won.execution_id).await.unwrap();
    let e = s
        .wait_settled(&won.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Stopped);
    let next = c
        .run(&locked("true", "deploy"))
        .await
        .expect("free after the kill");
    let e = s
        .wait_settled(&next.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Succeeded);
}
