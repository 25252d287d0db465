//! Crash safety with the real binaries: `kill -9` runvoyd while 20 executions produce output,
//! restart it, and nothing is stuck or lost; a viewer resumes from its last seq.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runvoy_proto::ws::Frame;
use runvoy_proto::{RunRequest, Status, record::Stream};
use runvoy_testkit::TestServer;

/// Follows `id` from `after` until the disconnect frame, recording (seq, message) into `seen`.
/// Returns the disconnect frame's status, or `None` when the stream failed.
async fn view(
    c: runvoy_client::Client,
    id: String,
    after: u64,
    seen: Arc<Mutex<Vec<(u64, String)>>>,
) -> Option<(Status, Option<i32>)> {
    let mut f = c.follow_logs(&id, after);
    loop {
        match f.next().await {
            Ok(Some(Frame::Log(ev))) => seen.lock().unwrap().push((ev.seq, ev.message)),
            Ok(Some(Frame::Disconnect(d))) => return Some((d.status, d.exit_code)),
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_20_executions_stream_loses_nothing() {
    // One user runs all twenty at once: beyond the default limit per user.
    let mut s = TestServer::start_with(
        &["--kill-grace", "2", "--max-concurrent-per-user", "0"],
        &[],
    );
    let c = s.client();
    let codes = [0, 1, 3, 42];
    let mut jobs = Vec::new();
    for i in 0..20 {
        // A few short ones finish while runvoyd is down; the rest are still running after it.
        let lines = if i % 5 == 0 { 60 } else { 400 };
        let code = codes[i % codes.len()];
        let command =
            format!("for i in $(seq 1 {lines}); do echo \"$i\"; sleep 0.01; done; exit {code}");
        let r = c
            .run(&RunRequest {
                command,
                ..Default::default()
            })
            .await
            .expect("run");
        jobs.push((r.execution_id, lines, code));
    }

    // A viewer streams one of the long ones.
    let viewed = jobs[1].0.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let viewer = tokio::spawn(view(c.clone(), viewed.clone(), 0, seen.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 30 {
        assert!(
            Instant::now() < deadline,
            "the viewer saw no output; log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    s.kill9();
    // The executions keep running (and the short ones end) while runvoyd is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    viewer.abort();
    let _ = viewer.await;
    let before: Vec<(u64, String)> = seen.lock().unwrap().clone();
    let last = before.last().map_or(0, |(s, _)| *s);
    assert!(
        before.iter().map(|(s, _)| *s).eq(1..=last),
        "the viewer's first part has a gap or a duplicate"
    );
    let still_running = jobs
        .iter()
        .filter(|(id, ..)| !s.executions_dir().join(id).join("exit.json").exists())
        .count();
    eprintln!("executions still running when runvoyd restarts: {still_running} of 20");

    s.restart();
    let c = s.client(); // new URL

    // The viewer reconnects to the new server and resumes after its last seq.
    let rest = Arc::new(Mutex::new(Vec::new()));
    let resumed = tokio::spawn(view(c.clone(), viewed.clone(), last, rest.clone()));

    for (id, lines, code) in &jobs {
        let e = s.wait_settled(id, Duration::from_secs(300)).await;
        let want = if *code == 0 {
            Status::Succeeded
        } else {
            Status::Failed
        };
        assert_eq!(
            (e.status, e.exit_code),
            (want, Some(*code)),
            "execution {id}: {e:?}"
        );
        let logs = s.all_logs(id).await;
        let n = logs.len() as u64;
        assert_eq!(e.log_lines, Some(n), "execution {id}");
        assert!(
            logs.iter().map(|l| l.seq).eq(1..=n),
            "execution {id}: seqs are not exactly 1..={n}"
        );
        let out: Vec<String> = logs
            .iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.message.clone())
            .collect();
        let want: Vec<String> = (1..=*lines).map(|i| i.to_string()).collect();
        let others: Vec<_> = logs.iter().filter(|l| l.stream != Stream::Stdout).collect();
        assert_eq!(
            out, want,
            "execution {id}: output lines ({n} records; not stdout: {others:?}); {e:?}"
        );
    }

    let done = tokio::time::timeout(Duration::from_secs(120), resumed)
        .await
        .expect("the resumed viewer finished")
        .expect("viewer task");
    let jid = jobs.iter().find(|j| j.0 == viewed).expect("job");
    assert_eq!(
        done,
        Some((Status::Failed, Some(jid.2))),
        "completion frame"
    );
    let mut all = before;
    all.extend(rest.lock().unwrap().iter().cloned());
    let stored: Vec<(u64, String)> = s
        .all_logs(&viewed)
        .await
        .into_iter()
        .map(|l| (l.seq, l.message))
        .collect();
    assert_eq!(
        all, stored,
        "the viewer saw every record exactly once, in order"
    );
}
