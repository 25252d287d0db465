//! Fault tolerance with the real binaries: compute failing transiently, the store failing, and
//! the reconciler's reports. Faults are injected through `RUNVOY_FAULT_INJECTION_DIR`.

use std::path::Path;
use std::time::{Duration, Instant};

use runvoy_client::ClientError;
use runvoy_proto::{RunRequest, Status, record::Stream};
use runvoy_testkit::TestServer;

fn server(faults: &Path) -> TestServer {
    TestServer::start_with(
        &["--kill-grace", "2"],
        &[(
            "RUNVOY_FAULT_INJECTION_DIR",
            faults.to_str().expect("utf-8 path"),
        )],
    )
}

fn workspaces(s: &TestServer) -> usize {
    s.execution_dirs().len()
}

fn api_code(e: &ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (*status, code.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_compute_failures_are_retried() {
    let faults = tempfile::tempdir().unwrap();
    let s = server(faults.path());
    let c = s.client();
    // The first two starts and three state reads fail; retries absorb them.
    std::fs::write(faults.path().join("compute-start-failures"), "2").unwrap();
    std::fs::write(faults.path().join("compute-state-failures"), "3").unwrap();
    let r = c
        .run(&RunRequest {
            command: "echo hello; exit 4".into(),
            ..Default::default()
        })
        .await
        .expect("run succeeds despite two failed starts");
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(60))
        .await;
    assert_eq!((e.status, e.exit_code), (Status::Failed, Some(4)));
    let left = |f: &str| std::fs::read_to_string(faults.path().join(f)).unwrap();
    assert_eq!(left("compute-start-failures"), "0");
    assert_eq!(left("compute-state-failures"), "0");
    let out: Vec<String> = s
        .all_logs(&r.execution_id)
        .await
        .into_iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.message)
        .collect();
    assert_eq!(out, ["hello"]);

    // Compute down for good: 503, and the execution is recorded FAILED, never left STARTING.
    std::fs::write(faults.path().join("compute-start-failures"), "100").unwrap();
    let err = c
        .run(&RunRequest {
            command: "echo never".into(),
            ..Default::default()
        })
        .await
        .expect_err("compute is down");
    assert_eq!(api_code(&err), (503, "SERVICE_UNAVAILABLE".into()));
    let list = c.list_executions(&Default::default()).await.unwrap();
    let e = list
        .executions
        .iter()
        .find(|e| e.command == "echo never")
        .expect("recorded");
    assert_eq!(e.status, Status::Failed);
    assert!(
        e.failure_reason
            .as_deref()
            .unwrap_or("")
            .contains("could not start")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_answers_503_and_writes_nothing() {
    let faults = tempfile::tempdir().unwrap();
    let s = server(faults.path());
    let c = s.client();
    let flag = faults.path().join("store-down");
    std::fs::write(&flag, "").unwrap();
    let err = c
        .run(&RunRequest {
            command: "echo half".into(),
            ..Default::default()
        })
        .await
        .expect_err("store is down");
    assert_eq!(api_code(&err), (503, "DATABASE_ERROR".into()));
    let err = c
        .list_executions(&Default::default())
        .await
        .expect_err("down");
    assert_eq!(api_code(&err), (503, "DATABASE_ERROR".into()));
    std::fs::remove_file(&flag).unwrap();
    let list = c.list_executions(&Default::default()).await.unwrap();
    assert!(list.executions.is_empty(), "nothing was recorded: {list:?}");
    assert_eq!(workspaces(&s), 0, "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_during_a_run_loses_no_record() {
    let faults = tempfile::tempdir().unwrap();
    let s = server(faults.path());
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "for i in $(seq 1 300); do echo \"$i\"; sleep 0.01; done; exit 5".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.execution_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.logs_page(&id, 0, Some(100)).await.unwrap().events.len() < 20 {
        assert!(Instant::now() < deadline, "no output; log:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The store is down while records keep coming (and possibly while the command ends).
    let flag = faults.path().join("store-down");
    std::fs::write(&flag, "").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::remove_file(&flag).unwrap();

    let e = s.wait_settled(&id, Duration::from_secs(180)).await;
    assert_eq!((e.status, e.exit_code), (Status::Failed, Some(5)));
    let logs = s.all_logs(&id).await;
    let n = logs.len() as u64;
    assert!(
        logs.iter().map(|l| l.seq).eq(1..=n),
        "seqs are exactly 1..={n}"
    );
    assert_eq!(e.log_lines, Some(n));
    let out: Vec<String> = logs
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(out, (1..=300).map(|i| i.to_string()).collect::<Vec<_>>());

    // The reconciler's reports: a sweep now through the CLI, then the history.
    let out = s.runvoy().args(["health", "reconcile"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(api)") && text.contains("checked"), "{text}");
    let reports = c.reconcile_reports().await.unwrap();
    assert_eq!(reports[0].trigger, "api", "newest first");
    assert!(reports.iter().any(|r| r.trigger == "startup"));
    let out = s.runvoy().args(["health", "reports"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(startup)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_supervisor_fails_its_execution_without_waiting_for_a_sweep() {
    let faults = tempfile::tempdir().unwrap();
    let s = server(faults.path());
    let c = s.client();
    let r = c
        .run(&RunRequest {
            command: "for i in $(seq 1 600); do echo \"$i\"; sleep 0.2; done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = r.execution_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.logs_page(&id, 0, Some(100)).await.unwrap().events.len() < 5 {
        assert!(Instant::now() < deadline, "no output; log:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid_file = s.executions_dir().join(&id).join("supervisor.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The scheduled sweep is an hour away: the execution must end on its own, FAILED with the
    // reason, its logs complete.
    let e = s.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    // On the `gcp` test backend the supervisor is the fake platform's: Cloud Run reports only
    // that the task failed, with the runner's exit code.
    if runvoy_testkit::backend::test_backend() != runvoy_testkit::backend::TestBackend::Gcp {
        assert!(
            e.failure_reason
                .as_deref()
                .unwrap_or("")
                .contains("supervisor vanished"),
            "{e:?}"
        );
    }
    let logs = s.all_logs(&id).await;
    let n = logs.len() as u64;
    assert_eq!(e.log_lines, Some(n));
    assert!(logs.iter().map(|l| l.seq).eq(1..=n), "seqs are 1..={n}");
}
