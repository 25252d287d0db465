//! A full disk and a failing store against the real binaries: readiness reports it, the
//! command keeps running, nothing is lost silently, and everything converges once the fault is
//! gone, without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runvoy_client::Client;
use runvoy_proto::{LogEvent, RunRequest, Status, record::Stream};
use runvoy_testkit::TestServer;

fn req(command: &str) -> RunRequest {
    RunRequest {
        command: command.into(),
        ..Default::default()
    }
}

/// `GET /api/v1/health/ready`: status code and body.
async fn ready(s: &TestServer) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{}/api/v1/health/ready", s.url))
        .await
        .expect("ready");
    let code = r.status().as_u16();
    (code, r.json().await.expect("json"))
}

/// Polls readiness until it answers `code`; returns the body.
async fn wait_ready(s: &TestServer, code: u16, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = ready(s).await;
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness stayed {got} {body}, expected {code}\nlog:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_stored(c: &Client, id: &str, n: usize) {
    for _ in 0..600 {
        if c.logs_page(id, 0, Some(10_000))
            .await
            .is_ok_and(|p| p.events.len() >= n)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} records of {id} were never stored");
}

fn assert_contiguous(logs: &[LogEvent]) {
    let seqs: Vec<u64> = logs.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=logs.len() as u64).collect::<Vec<_>>(), "a gap");
}

/// Unmounts (lazily, so a straggler cannot keep it busy) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` at `dir`, or says why not.
fn mount_tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root to mount a size-limited tmpfs".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Mount(dir.to_owned()))
}

/// Writes `path` until the file system is full, down to the last byte.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_silently_and_converges_once_space_is_freed() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("small");
    let _mount = match mount_tmpfs(&mnt, "48m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // Without the sandbox, whose private workspace the test could not reach to signal the
    // command; the record file is outside the workspace either way.
    let s = TestServer::start_in(&mnt, &["--kill-grace", "1", "--isolation", "process"], &[]);
    let c = s.client();
    // 100 lines, then (once go1 exists) 1,400 more, then (once go2 exists) exit 3.
    let r = c
        .run(&req("for i in $(seq 1 100); do echo \"line $i\"; done; \
             while [ ! -e go1 ]; do sleep 0.05; done; \
             for i in $(seq 101 1500); do echo \"line $i\"; done; \
             while [ ! -e go2 ]; do sleep 0.05; done; exit 3"))
        .await
        .unwrap();
    let id = r.execution_id.clone();
    let ws = s.data_dir().join("executions").join(&id).join("workspace");
    wait_stored(&c, &id, 101).await;
    assert_eq!(ready(&s).await.0, 200);

    let filler = mnt.join("filler");
    fill(&filler);
    let body = wait_ready(&s, 503, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reasons"].to_string().contains("out of space"),
        "{body}"
    );
    // Creating an empty file needs no data blocks: it works on a full tmpfs.
    std::fs::File::create(ws.join("go1")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::File::create(ws.join("go2")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The command ended while the disk was full: its exit code is held, never replaced by a
    // "vanished" failure.
    let e = c.get_execution(&id).await.unwrap();
    assert!(
        !e.status.is_terminal() || e.exit_code == Some(3),
        "finalised without its exit code: {e:?}"
    );
    assert!(!e.logs_complete, "{e:?}");

    std::fs::remove_file(&filler).unwrap();
    let e = s.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(
        (e.status, e.exit_code, e.timed_out),
        (Status::Failed, Some(3), false),
        "{e:?}"
    );
    let logs = s.all_logs(&id).await;
    assert_contiguous(&logs);
    assert_eq!(e.log_lines, Some(logs.len() as u64));
    // Every line is either stored (once, in order) or counted as dropped.
    let lines: Vec<u64> = logs
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.message.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(lines.starts_with(&(1..=100).collect::<Vec<_>>()));
    assert!(e.dropped_log_lines > 0, "the full disk cost nothing? {e:?}");
    assert_eq!(lines.len() as u64 + e.dropped_log_lines, 1500, "{e:?}");
    let told = logs
        .iter()
        .filter(|l| l.stream == Stream::System && l.message.contains("could not be written"))
        .count();
    assert_eq!(told, 1, "one system record says what was dropped");

    // Ready again, and new runs work, without a restart.
    wait_ready(&s, 200, Duration::from_secs(15)).await;
    let r = c.run(&req("echo after")).await.unwrap();
    let e = s
        .wait_settled(&r.execution_id, Duration::from_secs(30))
        .await;
    assert_eq!(e.status, Status::Succeeded);
    let logs = s.all_logs(&r.execution_id).await;
    assert!(logs.iter().any(|l| l.message == "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_reported_by_readiness_and_repaired_from_the_record_file() {
    let faults = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(
        &[],
        &[(
            "RUNVOY_FAULT_INJECTION_DIR",
            faults.path().to_str().unwrap(),
        )],
    );
    let c = s.client();
    let r = c
        .run(&req(
            "for i in $(seq 1 300); do echo \"$i\"; sleep 0.005; done; exit 4",
        ))
        .await
        .unwrap();
    let id = r.execution_id.clone();
    wait_stored(&c, &id, 5).await;
    assert_eq!(ready(&s).await.0, 200);

    let down = faults.path().join("store-down");
    std::fs::write(&down, "").unwrap();
    let body = wait_ready(&s, 503, Duration::from_secs(15)).await;
    assert!(
        body["reasons"].to_string().contains("store writes failing"),
        "{body}"
    );
    // The execution ends while its records cannot be stored.
    let exit_file = s.data_dir().join("executions").join(&id).join("exit.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "the command never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::remove_file(&down).unwrap();

    let e = s.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!((e.status, e.exit_code), (Status::Failed, Some(4)), "{e:?}");
    let logs = s.all_logs(&id).await;
    assert_contiguous(&logs);
    let out: Vec<String> = logs
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(out, (1..=300).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(e.dropped_log_lines, 0);
    wait_ready(&s, 200, Duration::from_secs(15)).await;
}
