//! Execution limits against the real binaries: concurrent executions per user and in total, and
//! the per-execution output budget.

use std::time::Duration;

use runvoy_client::{Client, ClientError, ListQuery};
use runvoy_proto::{RunRequest, Status, codes, record::Stream};
use runvoy_testkit::TestServer;

fn req(command: &str) -> RunRequest {
    RunRequest {
        command: command.into(),
        ..Default::default()
    }
}

async fn count_executions(c: &Client) -> usize {
    c.list_executions(&ListQuery {
        limit: Some(1000),
        ..Default::default()
    })
    .await
    .expect("list")
    .executions
    .len()
}

/// A developer with a key of its own.
async fn developer(s: &TestServer, email: &str) -> Client {
    let created = s.client().create_user(email, "developer").await.unwrap();
    let claimed = runvoy_client::claim(&s.url, &created.claim_token)
        .await
        .unwrap();
    s.client_with_key(&claimed.api_key)
}

fn assert_limit(err: ClientError, needle: &str) {
    match err {
        ClientError::Api {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(status, 429, "{message}");
            assert_eq!(code, codes::EXECUTION_LIMIT_REACHED);
            assert!(message.contains(needle), "{message}");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_the_concurrency_limits_get_429_and_create_nothing() {
    let s = TestServer::start_with(
        &[
            "--kill-grace",
            "1",
            "--max-concurrent-per-user",
            "2",
            "--max-concurrent-total",
            "3",
        ],
        &[],
    );
    let admin = s.client();
    let a = admin.run(&req("sleep 60")).await.unwrap();
    admin.run(&req("sleep 60")).await.unwrap();
    assert_limit(
        admin.run(&req("sleep 60")).await.unwrap_err(),
        "limit per user is 2",
    );
    assert_eq!(count_executions(&admin).await, 2, "nothing was created");

    // Another user may still run, up to the server's limit.
    let dev = developer(&s, "dev@example.com").await;
    dev.run(&req("sleep 60")).await.unwrap();
    let other = developer(&s, "other@example.com").await;
    assert_limit(other.run(&req("true")).await.unwrap_err(), "limit is 3");
    assert_eq!(count_executions(&admin).await, 3);

    // The CLI shows the server's reason and exits with runvoy's own error code.
    let out = s.runvoy().args(["run", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("limit per user is 2"), "{stderr}");
    assert!(stderr.contains(codes::EXECUTION_LIMIT_REACHED), "{stderr}");
    assert_eq!(count_executions(&admin).await, 3);

    // Once one has finished, the next run is admitted.
    admin.kill(&a.execution_id).await.unwrap();
    let e = s
        .wait_settled(&a.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Stopped);
    let r = admin.run(&req("echo admitted")).await.unwrap();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_flood_is_capped_and_the_rest_counted() {
    let s = TestServer::start_with(
        &["--max-output-lines", "1000", "--max-output-bytes", "50000"],
        &[],
    );
    let c = s.client();
    let db_size = |s: &TestServer| -> u64 {
        ["runvoy.db", "runvoy.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(s.data_dir().join(f)).ok())
            .map(|m| m.len())
            .sum()
    };
    let before = db_size(&s);

    // Line budget: two million one-byte lines.
    let r = c
        .run(&req("yes | head -n 2000000; echo done >&2"))
        .await
        .unwrap();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(120))
        .await;
    assert_eq!((e.status, e.exit_code), (Status::Succeeded, Some(0)));
    let logs = s.all_logs(&r.execution_id).await;
    let output: Vec<_> = logs.iter().filter(|l| l.stream != Stream::System).collect();
    assert_eq!(output.len(), 1000);
    assert!(output.iter().all(|l| l.message == "y"));
    let notices: Vec<_> = logs
        .iter()
        .filter(|l| l.stream == Stream::System && l.message.contains("output limit reached"))
        .collect();
    assert_eq!(notices.len(), 1, "exactly one notice");
    // The notice comes right after the last stored line; nothing is stored after it.
    assert_eq!(logs.last().unwrap().seq, notices[0].seq);
    assert_eq!(e.log_lines, Some(logs.len() as u64));
    // Everything else is counted: 1,999,000 lines of "y" and the "done" line.
    assert_eq!(e.dropped_log_lines, 2_000_000 - 1000 + 1);
    assert_eq!(e.dropped_log_bytes, 2_000_000 - 1000 + 4);
    let seqs: Vec<u64> = logs.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=logs.len() as u64).collect::<Vec<_>>());

    // Byte budget: 99-byte lines reach 50,000 bytes after 505 lines.
    let line = "x".repeat(99);
    let r = c
        .run(&req(&format!("yes {line} | head -n 100000")))
        .await
        .unwrap();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(120))
        .await;
    assert_eq!(e.status, Status::Succeeded);
    let logs = s.all_logs(&r.execution_id).await;
    let output = logs.iter().filter(|l| l.stream != Stream::System).count();
    assert_eq!(output, 505);
    assert_eq!(e.dropped_log_lines, 100_000 - 505);
    assert_eq!(e.dropped_log_bytes, (100_000 - 505) * 99);

    // Neither flood reached the store or the record files beyond the budget.
    let grown = db_size(&s).saturating_sub(before);
    assert!(grown < 4 << 20, "the database grew by {grown} bytes");
    if runvoy_testkit::backend::test_backend().local_compute() {
        let records = std::fs::metadata(
            s.data_dir()
                .join("executions")
                .join(&r.execution_id)
                .join("records.jsonl"),
        )
        .unwrap()
        .len();
        assert!(records < 200_000, "records.jsonl is {records} bytes");
    }

    // The status shows it.
    let out = s
        .runvoy()
        .args(["status", &r.execution_id, "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dropped_log_lines"], 100_000 - 505);
}
