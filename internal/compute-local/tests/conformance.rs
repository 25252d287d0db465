//! The Compute conformance suite on local compute: the real supervisor, sidecar, runner and
//! bubblewrap sandbox. Needs the built binaries (`cargo build --bins`) and bubblewrap.

use std::path::PathBuf;

use async_trait::async_trait;
use runvoy_compute_local::{Bus, Isolation, Limits, LocalCompute, LocalComputeConfig};
use runvoy_domain::JobSpec;
use runvoy_domain::testing::{ComputePlatform, compute_conformance, job_spec};

/// `target/<profile>`, where the workspace's binaries are (test executables live in `deps/`).
fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RUNVOY_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            exe.parent()
                .and_then(|d| d.parent())
                .expect("profile dir")
                .to_path_buf()
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` first",
        p.display()
    );
    p
}

/// Local compute runs the command itself: the platform has nothing to do.
struct Local;

#[async_trait]
impl ComputePlatform for Local {
    fn spec(&self, id: &str, command: &str) -> JobSpec {
        JobSpec {
            timeout_secs: Some(120),
            ..job_spec(id, command, "")
        }
    }
    async fn command_exits(&self, _id: &str, _code: i32) {}
    async fn command_runs(&self, _id: &str) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_compute_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bus, mut rx) = Bus::new(64);
    // Nobody processes events here; drain them so tailers never wait.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let compute = LocalCompute::new(
        LocalComputeConfig {
            executions_dir: dir.path().join("executions"),
            runner_bin: bin("runvoy-runner"),
            sidecar_bin: bin("runvoy-sidecar"),
            supervisor_cmd: vec![bin("runvoyd"), "supervise".into()],
            isolation: Isolation::Bwrap,
            share_net: false,
            limits: Limits {
                tmp_bytes: Some(64 << 20),
                ..Default::default()
            },
            sandbox_uid_base: 1_900_000_000,
            bwrap_bin: PathBuf::from("/usr/bin/bwrap"),
        },
        bus,
    )
    .expect("local compute");
    compute.probe().expect("the sandbox works on this machine");
    compute_conformance(&compute, &Local).await;
}
