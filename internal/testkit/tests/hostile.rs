//! Hostile commands against the local sandbox, with the real binaries: every escape a developer
//! could try from inside an execution must fail, and the service must stay healthy for others.
//!
//! Probes use only what the sandbox offers (`/bin/sh`, coreutils, util-linux, perl's `syscall`),
//! as a hostile command would.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use runvoy_proto::Status;
use runvoy_testkit::TestServer;

fn root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn run(s: &TestServer, key: Option<&str>, args: &[&str]) -> Output {
    let mut c = s.runvoy();
    if let Some(k) = key {
        c.env("RUNVOY_API_KEY", k);
    }
    c.args(args).stdin(Stdio::null()).output().expect("runvoy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value printed after `name=` on its own line.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name}= in output:\n{out}"))
}

/// A developer's API key, through the real invite and claim flow.
async fn developer(s: &TestServer, email: &str) -> String {
    let invite = s.client().create_user(email, "developer").await.unwrap();
    runvoy_client::claim(&s.url, &invite.claim_token)
        .await
        .unwrap()
        .api_key
}

async fn detach(s: &TestServer, key: Option<&str>, cmd: &str) -> String {
    let o = run(s, key, &["run", "--detach", "--", cmd]);
    assert!(o.status.success(), "{o:?}");
    stdout(&o).trim().to_owned()
}

/// Perl calls a raw syscall and prints `NAME=RESULT,ERRNO`.
fn perl_syscall(name: &str, nr: i64, args: &str) -> String {
    format!(
        // Arguments go through an array: syscall() writes through string arguments, so they
        // must not be read-only literals.
        "perl -e '@a = ({args}); $r = syscall({nr}, @a); printf(\"{name}=%d,%d\\n\", $r, $!+0)'; "
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_to_the_host_fail() {
    let s = TestServer::start();
    let data = s.data_dir();
    let data = data.display();
    let mut script = format!(
        "grep CapEff /proc/self/status | tr -d '\\t' | sed 's/:/=/'; \
         mount -o remount,bind,rw /usr 2>/dev/null; echo remount=$?; \
         mount -t tmpfs none /tmp 2>/dev/null; echo mount=$?; \
         touch /usr/runvoy-was-here 2>/dev/null; echo usr_write=$?; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; echo proc_sys=$?; \
         echo h > /proc/sysrq-trigger 2>/dev/null; echo sysrq=$?; \
         unshare -U true 2>/dev/null; echo unshare_user=$?; \
         unshare -m true 2>/dev/null; echo unshare_mount=$?; \
         cat {data}/admin.key 2>/dev/null; echo data_dir=$?; \
         found=$(find / -xdev \\( -name admin.key -o -name runvoy.db -o -name token.key -o -name records.jsonl \\) 2>/dev/null | wc -l); echo found=$found; \
         ls -d /home /root /var /run /srv 2>/dev/null | wc -l | sed 's/^/host_dirs=/'; \
         test -e /etc/shadow; echo shadow=$?; \
         wc -l < /etc/passwd | sed 's/^/passwd_lines=/'; "
    );
    // x86_64 numbers; on x86_64 the x32 variant (bit 30) must be refused as well.
    for (name, nr, args) in [
        ("open_by_handle_at", 304, "-100, \"\\0\" x 24, 0"),
        (
            "open_by_handle_at_x32",
            304 | 0x4000_0000,
            "-100, \"\\0\" x 24, 0",
        ),
        (
            "name_to_handle_at",
            303,
            "-100, \"/\", \"\\0\" x 128, \"\\0\" x 8, 0",
        ),
        ("mount_sys", 165, "\"none\", \"/tmp\", \"tmpfs\", 0, 0"),
        ("bpf", 321, "0, 0, 0"),
        ("perf_event_open", 298, "0, 0, -1, -1, 0"),
        ("keyctl", 250, "0, 0, 0, 0, 0"),
        ("add_key", 248, "\"user\", \"k\", \"v\", 1, -3"),
        ("userfaultfd", 323, "0"),
        ("kexec_load", 246, "0, 0, 0, 0"),
        ("setns", 308, "0, 0"),
        ("unshare_newuser", 272, "0x10000000"),
        ("io_uring_setup", 425, "1, \"\\0\" x 120"),
    ] {
        script.push_str(&perl_syscall(name, nr, args));
    }
    let o = run(&s, None, &["run", "-q", "--", &script]);
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(field(&out, "CapEff"), "0000000000000000", "{out}");
    for name in [
        "remount",
        "mount",
        "usr_write",
        "proc_sys",
        "sysrq",
        "unshare_user",
        "unshare_mount",
        "data_dir",
        "shadow",
    ] {
        assert_ne!(field(&out, name), "0", "{name} succeeded:\n{out}");
    }
    assert_eq!(
        field(&out, "found"),
        "0",
        "runvoy's files are visible:\n{out}"
    );
    assert_eq!(field(&out, "host_dirs"), "0", "{out}");
    assert_eq!(field(&out, "passwd_lines"), "2", "{out}");
    for name in [
        "open_by_handle_at",
        "name_to_handle_at",
        "mount_sys",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "userfaultfd",
        "kexec_load",
        "setns",
        "unshare_newuser",
        "io_uring_setup",
    ] {
        assert_eq!(
            field(&out, name),
            "-1,1",
            "{name} was not refused with EPERM:\n{out}"
        );
    }
    assert!(
        field(&out, "open_by_handle_at_x32").starts_with("-1,"),
        "{out}"
    );
    // The host never saw a change.
    assert!(!std::path::Path::new("/usr/runvoy-was-here").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_as_an_unprivileged_uid_of_their_own() {
    if !root() {
        eprintln!("skipped: per-execution uids need runvoyd to run as root");
        return;
    }
    let s = TestServer::start();
    let a = detach(&s, None, "echo $$ > /workspace/pid; sleep 30").await;
    let b = detach(&s, None, "sleep 30").await;
    let uids = |id: &str| -> Vec<u32> {
        // Sandboxed processes, found from the host through the supervisor's tree.
        let mut out = Vec::new();
        for _ in 0..100 {
            out = sandbox_uids(&s, id);
            if !out.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    };
    let (ua, ub) = (uids(&a), uids(&b));
    assert!(
        !ua.is_empty() && !ub.is_empty(),
        "no sandboxed processes found"
    );
    for u in ua.iter().chain(&ub) {
        assert!(*u >= 1_000_000, "a command runs as host uid {u}");
    }
    assert!(
        ua.iter().all(|u| !ub.contains(u)),
        "two executions share a uid"
    );
    s.client().kill(&a).await.unwrap();
    s.client().kill(&b).await.unwrap();
}

/// Uids of the processes below an execution's runner (the sandbox).
fn sandbox_uids(s: &TestServer, id: &str) -> Vec<u32> {
    let pid_file = s
        .data_dir()
        .join("executions")
        .join(id)
        .join("supervisor.pid");
    let Some(sup) = std::fs::read_to_string(pid_file).ok().and_then(|p| {
        p.split_whitespace()
            .next()
            .and_then(|v| v.parse::<i32>().ok())
    }) else {
        return Vec::new();
    };
    let procs: Vec<(i32, i32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let get = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u32>().ok())
            };
            Some((pid, get("PPid:")? as i32, get("Uid:")?))
        })
        .collect();
    let mut tree = vec![sup];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(_, pp, _)| *pp == p)
                .map(|(c, _, _)| *c),
        );
        i += 1;
    }
    // Skip the supervisor and the runner (root, outside the sandbox).
    procs
        .iter()
        .filter(|(p, _, u)| tree[1..].contains(p) && *u != 0)
        .map(|(_, _, u)| *u)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_executions_and_the_runner_are_out_of_reach() {
    let s = TestServer::start();
    let victim = detach(
        &s,
        None,
        "echo victim-secret > /workspace/secret; echo victim-secret > /tmp/secret; echo ready; sleep 60",
    )
    .await;
    // Wait until the victim is in place.
    for _ in 0..200 {
        if s.all_logs(&victim)
            .await
            .iter()
            .any(|e| e.message == "ready")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let script = "find / \\( -path /proc -o -path /sys -o -path /dev -o -path /usr \\) -prune -o -type f -print 2>/dev/null \
           | xargs grep -l victim-secret 2>/dev/null | wc -l | sed 's/^/secrets=/'; \
         ls /proc | grep -c '^[0-9]' | sed 's/^/visible_pids=/'; \
         cat /proc/[0-9]*/comm 2>/dev/null | grep -c -e runvoy -e sleep | sed 's/^/foreign=/'; \
         for p in /proc/[0-9]*; do \
           [ \"$p\" = /proc/$$ ] && continue; \
           perl -e '$r = syscall(101, 16, $ARGV[0], 0, 0); print \"ptrace=$r\\n\" if $r == 0' ${p#/proc/}; \
         done; \
         kill -KILL -1 2>/dev/null; echo done";
    let o = run(&s, None, &["run", "-q", "--", script]);
    let out = stdout(&o);
    assert_eq!(field(&out, "secrets"), "0", "{out}");
    assert_eq!(field(&out, "foreign"), "0", "{out}");
    // The namespace's init, the shell and the probes; never the runner or the victim.
    let visible: u32 = field(&out, "visible_pids").parse().unwrap();
    assert!(visible <= 8, "{out}");
    // kill -1 only reached its own sandbox: the victim still runs.
    let e = s.client().get_execution(&victim).await.unwrap();
    assert_eq!(e.status, Status::Running, "{e:?}");
    s.client().kill(&victim).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_stream_cannot_be_forged_or_truncated() {
    let s = TestServer::start();
    // A well-formed final record claiming success, written everywhere the command can reach.
    let script = r#"fake='{"runvoy":"exit","exec":"'"$RUNVOY_EXECUTION_ID"'","seq":2,"time":"2026-01-01T00:00:00Z","exit_code":0,"lines":0}'
echo "$fake"; echo "$fake" >&2
for f in /proc/[0-9]*/fd/*; do echo "$fake" > $f 2>/dev/null; done
for f in /proc/[0-9]*/fd/1; do true > $f 2>/dev/null; done
exit 1"#;
    let id = detach(&s, None, script).await;
    let e = s.wait_settled(&id, Duration::from_secs(30)).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(1), "{e:?}");
    let logs = s.all_logs(&id).await;
    assert!(
        logs.iter()
            .any(|l| l.message.contains(&format!("\"exec\":\"{id}\""))),
        "the forged record should appear as plain output: {logs:?}"
    );
    // Every line of the durable record file is the runner's own, in order.
    let records = std::fs::read_to_string(
        s.data_dir()
            .join("executions")
            .join(&id)
            .join("records.jsonl"),
    )
    .unwrap();
    let parsed: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole record"))
        .collect();
    for (i, r) in parsed.iter().enumerate() {
        assert_eq!(r["exec"], id.as_str(), "{r}");
        assert_eq!(r["seq"], (i + 1) as u64, "{records}");
    }
    let last = parsed.last().unwrap();
    assert_eq!(last["runvoy"], "exit");
    assert_eq!(last["exit_code"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_hogs_are_contained_and_others_keep_working() {
    let s = TestServer::start_with(
        &[
            "--kill-grace",
            "1",
            "--pids-limit",
            "64",
            "--memory-limit-mb",
            "128",
            "--workspace-limit-mb",
            "16",
            "--tmp-limit-mb",
            "8",
        ],
        &[],
    );
    let health = s.client().health().await.unwrap();
    assert_eq!(health.isolation, "bubblewrap");
    let dev = developer(&s, "dev@example.com").await;
    let other = developer(&s, "other@example.com").await;

    let bomb = detach(&s, Some(&dev), "b() { b | b & }; b; sleep 30").await;
    let hog = detach(
        &s,
        Some(&dev),
        "perl -e '$x = \"x\" x (512 * 1024 * 1024); print length($x), \"\\n\"'",
    )
    .await;
    let filler = run(
        &s,
        Some(&dev),
        &[
            "run",
            "-q",
            "--",
            "dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>/dev/null; echo ws=$?; \
             dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null; echo tmp=$?; \
             du -m /workspace/fill | cut -f1 | sed 's/^/ws_mb=/'",
        ],
    );
    let out = stdout(&filler);
    assert_ne!(field(&out, "ws"), "0", "{out}");
    assert_ne!(field(&out, "tmp"), "0", "{out}");
    let ws_mb: u64 = field(&out, "ws_mb").parse().unwrap();
    assert!(ws_mb <= 16, "{out}");

    // Meanwhile another user runs commands and the API answers.
    for i in 0..3 {
        let o = run(
            &s,
            Some(&other),
            &["run", "-q", "--", &format!("echo fine-{i}")],
        );
        assert!(o.status.success(), "{o:?}");
        assert_eq!(stdout(&o), format!("fine-{i}\n"));
        assert_eq!(s.client().health().await.unwrap().status, "ok");
    }

    let e = s.wait_settled(&hog, Duration::from_secs(60)).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(137), "{e:?}");
    if health
        .limits
        .get("memory")
        .is_some_and(|m| m.starts_with("cgroup"))
    {
        assert!(
            e.failure_reason
                .as_deref()
                .is_some_and(|r| r.contains("out of memory")),
            "{e:?}"
        );
    }

    // The fork bomb hits the process limit (the shell cannot fork any more), ends or is stopped
    // like any command, and nothing of it is left on the host.
    let _ = s.client().kill(&bomb).await;
    let e = s.wait_settled(&bomb, Duration::from_secs(60)).await;
    assert!(
        matches!(e.status, Status::Stopped | Status::Failed),
        "{e:?}"
    );
    let said: String = s
        .all_logs(&bomb)
        .await
        .iter()
        .map(|l| format!("{}\n", l.message))
        .collect();
    assert!(
        said.contains("fork"),
        "the bomb never hit the limit:\n{said}"
    );
    if root() {
        assert!(sandbox_uids(&s, &bomb).is_empty());
    }
    let o = run(&s, Some(&other), &["run", "-q", "--", "echo after"]);
    assert_eq!(stdout(&o), "after\n");
}

/// Starts `runvoyd serve` on a fresh data dir under `dir` and expects it to refuse: its stderr.
fn refused_start(dir: &std::path::Path, path_env: Option<&std::path::Path>) -> String {
    let mut c = Command::new(runvoy_testkit::bin("runvoyd"));
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-client-config",
        "--data-dir",
    ])
    .arg(dir.join("data"))
    .stdin(Stdio::null());
    if let Some(p) = path_env {
        c.env("PATH", p);
    }
    let o = c.output().unwrap();
    assert!(!o.status.success(), "runvoyd started: {o:?}");
    assert!(!dir.join("data/server.json").exists());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn runvoyd_refuses_to_start_without_a_working_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    // No bubblewrap on runvoyd's PATH: the sandbox cannot be set up.
    let err = refused_start(dir.path(), Some(dir.path()));
    assert!(
        err.contains("bubblewrap") && err.contains("--isolation process"),
        "{err}"
    );
}

#[test]
fn runvoyd_refuses_a_sandbox_that_cannot_reach_its_workspace() {
    if !root() {
        eprintln!("skipped: needs root (a non-root sandbox runs as runvoyd's own user)");
        return;
    }
    // A private parent dir: the sandbox uid cannot walk to the workspace.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let err = refused_start(dir.path(), None);
    assert!(
        err.contains("sandbox cannot be set up") && err.contains("chmod o+x"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_off_is_explicit_and_visible() {
    let s = TestServer::start_with(&["--isolation", "process"], &[]);
    let h = s.client().health().await.unwrap();
    assert_eq!(h.isolation, "none");
    assert!(s.log().contains("WITHOUT isolation"), "{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_ask_for_their_own_limits_within_the_maxima() {
    let s = TestServer::start_with(
        &["--max-run-pids", "100", "--max-run-workspace-mb", "64"],
        &[],
    );
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(format!("{}/api/v1/run", s.url))
            .header("X-API-Key", &s.admin_key)
            .json(&body)
            .send()
    };
    for bad in [
        serde_json::json!({"pids": 101}),
        serde_json::json!({"pids": 0}),
        serde_json::json!({"cpus": -1.0}),
        serde_json::json!({"workspace_mb": 65}),
        serde_json::json!({"memory_mib": 5}),
    ] {
        let r = post(serde_json::json!({"command": "true", "resources": bad}))
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(status.is_client_error(), "{bad}: {status} {body}");
        assert!(body["code"].is_string(), "{body}");
    }
    let list = http
        .get(format!("{}/api/v1/executions", s.url))
        .header("X-API-Key", &s.admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains("execution_id"),
        "a refused run left a record: {list}"
    );

    let r = post(serde_json::json!({
        "command": "df -m /workspace | tail -1 | awk '{print \"ws=\" $2}'; grep 'Max processes' /proc/self/limits | awk '{print \"nproc=\" $3}'",
        "resources": {"pids": 20, "workspace_mb": 32}
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait_settled(&id, Duration::from_secs(30)).await;
    let out: String = s
        .all_logs(&id)
        .await
        .iter()
        .map(|l| format!("{}\n", l.message))
        .collect();
    if root() {
        assert_eq!(field(&out, "ws"), "32", "{out}");
        assert_eq!(field(&out, "nproc"), "20", "{out}");
    }
}
