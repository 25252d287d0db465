//! Docker compute with the real binaries and the local engine (`RUNVOY_TEST_BACKEND=docker`,
//! `make test-docker-suites`): the command runs in the user's image, not on the host; it cannot
//! reach the host, runvoy's state or other executions; out of memory is reported; an execution
//! that ended while runvoyd was down is finalised with its real exit code and its containers are
//! removed.
//!
//! On the other test backends these tests only say that they need the Docker backend: the
//! suites there run on other compute.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use runvoy_proto::Status;
use runvoy_testkit::TestServer;
use runvoy_testkit::backend::{TestBackend, test_backend};

fn on_docker() -> bool {
    let on = test_backend() == TestBackend::Docker;
    if !on {
        eprintln!("needs RUNVOY_TEST_BACKEND=docker (make test-docker-suites runs it)");
    }
    on
}

fn run(s: &TestServer, args: &[&str]) -> Output {
    s.runvoy()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runvoy")
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

/// The engine's containers of one execution (any state).
fn containers_of(id: &str) -> Vec<String> {
    let o = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=runvoy.execution={id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_sees_the_images_files_not_the_hosts() {
    if !on_docker() {
        return;
    }
    let s = TestServer::start();
    let o = run(&s, &["run", "-q", "--", "cat /etc/os-release"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    // The imported test image's own file (scripts/docker-test-images.sh).
    assert!(out.contains("ID=runvoy-test"), "{out}");
    let host = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    assert_ne!(out, host);

    // A registered image is what `-i` selects; one the engine does not have is a clear error.
    let reg = run(&s, &["images", "register", "runvoy-test/busybox:test"]);
    assert!(reg.status.success(), "{reg:?}");
    let o = run(
        &s,
        &[
            "run",
            "-q",
            "-i",
            "runvoy-test/busybox:test",
            "--",
            "cat /etc/os-release",
        ],
    );
    assert!(stdout(&o).contains("ID=runvoy-test"), "{o:?}");
    let missing = run(&s, &["images", "register", "runvoy-test/absent:1"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("runvoy-test/absent:1"), "{err}");
    assert!(!err.to_lowercase().contains("internal"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_from_the_container_fail() {
    if !on_docker() {
        return;
    }
    let s = TestServer::start();
    let data = s.data_dir();
    let script = format!(
        "grep CapEff /proc/self/status | tr -d '\\t' | sed 's/:/=/'; \
         touch /usr/runvoy-was-here 2>/dev/null; echo usr_write=$?; \
         touch /etc/runvoy-was-here 2>/dev/null; echo etc_write=$?; \
         mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; echo proc_sys=$?; \
         echo h > /proc/sysrq-trigger 2>/dev/null; echo sysrq=$?; \
         unshare -U true 2>/dev/null; echo unshare_user=$?; \
         test -e /var/run/docker.sock -o -e /run/docker.sock; echo docker_sock=$?; \
         cat {data}/admin.key 2>/dev/null; echo data_dir=$?; \
         found=$(find / -xdev \\( -name admin.key -o -name runvoy.db -o -name token.key \\) \
           2>/dev/null | wc -l); echo found=$found; \
         echo nets=$(tail -n +3 /proc/net/dev | grep -cv '^ *lo:'); \
         echo ok > /workspace/mine && echo workspace_write=$?; \
         echo ok > /tmp/mine && echo tmp_write=$?",
        data = data.display()
    );
    let o = run(&s, &["run", "-q", "--", &script]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert_eq!(field(&out, "CapEff"), "0000000000000000", "{out}");
    for name in [
        "usr_write",
        "etc_write",
        "mount",
        "proc_sys",
        "sysrq",
        "unshare_user",
        "docker_sock",
        "data_dir",
    ] {
        assert_ne!(field(&out, name), "0", "{name} succeeded:\n{out}");
    }
    assert_eq!(field(&out, "found"), "0", "{out}");
    // Network `none`: loopback only.
    assert_eq!(field(&out, "nets"), "0", "{out}");
    // What the command may write: its workspace and /tmp.
    assert_eq!(field(&out, "workspace_write"), "0", "{out}");
    assert_eq!(field(&out, "tmp_write"), "0", "{out}");
    assert!(!std::path::Path::new("/usr/runvoy-was-here").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_executions_and_the_record_stream_are_out_of_reach() {
    if !on_docker() {
        return;
    }
    let s = TestServer::start();
    // A neighbour that keeps running, with a marker in its command line and its workspace.
    let n = run(
        &s,
        &[
            "run",
            "--detach",
            "--",
            "echo neighbour-secret > /workspace/note; sleep 60 # neighbour-marker",
        ],
    );
    assert!(n.status.success(), "{n:?}");
    let neighbour = stdout(&n).trim().to_owned();
    let c = s.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get_execution(&neighbour).await.unwrap().status != Status::Running {
        assert!(Instant::now() < deadline, "neighbour never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = run(
        &s,
        &[
            "run",
            "-q",
            "--",
            "echo pids=$(ls /proc | grep -c '^[0-9]'); \
             grep -l 'neighbour-marke[r]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l | sed 's/^/seen=/'; \
             grep -rl 'neighbour-secre[t]' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null \
               | wc -l | sed 's/^/found=/'",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    // Its own pid namespace: the runner, the shell and its children.
    let pids: u32 = field(&out, "pids").parse().unwrap();
    assert!(pids < 10, "{out}");
    assert_eq!(field(&out, "seen"), "0", "{out}");
    assert_eq!(field(&out, "found"), "0", "{out}");
    c.kill(&neighbour).await.unwrap();

    // Lines shaped like the runner's records are the command's output, nothing more: the
    // execution ends with the command's own exit code, and every line is stored as written.
    let d = run(
        &s,
        &[
            "run",
            "--detach",
            "--",
            "echo '{\"runvoy\":\"exit\",\"exec\":\"x\",\"seq\":2,\"time\":\"t\",\"exit_code\":0,\"lines\":1}'; \
             printf '{\"runvoy\":\"log\",\"seq\":99}\\n' >&2; exit 3",
        ],
    );
    let id = stdout(&d).trim().to_owned();
    let e = s.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(e.status, Status::Failed);
    assert_eq!(e.exit_code, Some(3));
    let logs = s.all_logs(&id).await;
    assert!(
        logs.iter()
            .any(|l| l.message.starts_with("{\"runvoy\":\"exit\"")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.message == "{\"runvoy\":\"log\",\"seq\":99}"),
        "{logs:?}"
    );
    let seqs: Vec<u64> = logs.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_137_with_the_reason() {
    if !on_docker() {
        return;
    }
    let s = TestServer::start_with(&["--memory-limit-mb", "48"], &[]);
    // A shell variable of 200 MB, far over the limit.
    let d = run(
        &s,
        &[
            "run",
            "--detach",
            "--",
            "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
        ],
    );
    assert!(d.status.success(), "{d:?}");
    let id = stdout(&d).trim().to_owned();
    let e = s.wait_settled(&id, Duration::from_secs(120)).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.exit_code, Some(137), "{e:?}");
    let reason = e.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("out of memory"), "{e:?}");
    assert!(reason.contains("48 MiB"), "{e:?}");
    let logs = s.all_logs(&id).await;
    assert!(logs.iter().any(|l| l.message == "start"));
    assert!(!logs.iter().any(|l| l.message == "survived"));
    // Within the limit the same command shape works.
    let o = run(
        &s,
        &[
            "run",
            "-q",
            "--",
            "x=$(head -c 1000000 /dev/zero | tr '\\0' x); echo ${#x}",
        ],
    );
    assert_eq!(stdout(&o).trim(), "1000000", "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ended_while_runvoyd_was_down_gets_its_real_exit_code() {
    if !on_docker() {
        return;
    }
    // Finished executions' containers and volumes are kept as long as local compute keeps a
    // workspace (--workspace-retention); one second here, so a sweep removes them.
    let mut s = TestServer::start_with(&["--workspace-retention", "1"], &[]);
    let d = run(
        &s,
        &[
            "run",
            "--detach",
            "--",
            "echo before; sleep 2; echo after; exit 7",
        ],
    );
    assert!(d.status.success(), "{d:?}");
    let id = stdout(&d).trim().to_owned();
    let c = s.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c
        .logs_page(&id, 0, Some(10))
        .await
        .unwrap()
        .events
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no output; log:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop();
    // The command ends while nobody watches; its containers wait for runvoyd.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !containers_of(&id).is_empty(),
        "containers removed too early"
    );
    s.restart();
    let e = s.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(e.status, Status::Failed);
    assert_eq!(e.exit_code, Some(7));
    let lines: Vec<String> = s
        .all_logs(&id)
        .await
        .into_iter()
        .map(|l| l.message)
        .filter(|m| !m.starts_with("###"))
        .collect();
    assert_eq!(lines, ["before", "after"]);
    // Once the records are safe and the retention is over, nothing of it stays on the engine.
    assert!(!containers_of(&id).is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_of(&id).is_empty() {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.client().reconcile().await.unwrap();
        assert!(
            Instant::now() < deadline,
            "containers of {id} left behind; log:\n{}",
            s.log()
        );
    }
    let volumes = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=runvoy.execution={id}"),
        ])
        .output()
        .unwrap();
    assert!(volumes.stdout.is_empty(), "{volumes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_image_gets_a_workspace_it_owns() {
    if !on_docker() {
        return;
    }
    let s = TestServer::start();
    // Its USER is `app`, a name only the image's own /etc/passwd knows (1000:1000).
    let image = "runvoy-test/busybox-user:test";
    let reg = run(&s, &["images", "register", image]);
    assert!(reg.status.success(), "{reg:?}");
    let mut c = s.runvoy();
    c.args([
        "run",
        "-q",
        "-i",
        image,
        "-e",
        "GREETING=hello there",
        "--",
        "echo uid=$(id -u) gid=$(id -g); echo \"$GREETING\"; read line; echo \"in=$line\"; \
         echo mine > /workspace/made && cat /workspace/made; \
         test -e /workspace/.env; echo env_left=$?; stat -c %u:%g /workspace",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from stdin\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&o),
        "uid=1000 gid=1000\nhello there\nin=from stdin\nmine\nenv_left=1\n1000:1000\n"
    );
}
