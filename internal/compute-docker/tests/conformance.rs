//! The Compute conformance suite on Docker compute: the real engine, the sidecar and runner
//! containers. Needs a Docker engine and the images `scripts/docker-test-images.sh` builds
//! (`make test-docker-suites` makes them first); fails with the reason when either is missing.

use async_trait::async_trait;
use runvoy_compute_docker::{DockerCompute, DockerComputeConfig};
use runvoy_compute_local::Bus;
use runvoy_domain::JobSpec;
use runvoy_domain::testing::{ComputePlatform, compute_conformance, job_spec};

/// The image the commands run in (a `docker import` of busybox-static).
const IMAGE: &str = "runvoy-test/busybox:test";

/// Docker runs the command itself: the platform has nothing to do.
struct Engine;

#[async_trait]
impl ComputePlatform for Engine {
    fn spec(&self, id: &str, command: &str) -> JobSpec {
        JobSpec {
            timeout_secs: Some(120),
            ..job_spec(id, command, IMAGE)
        }
    }
    async fn command_exits(&self, _id: &str, _code: i32) {}
    async fn command_runs(&self, _id: &str) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compute_conforms() {
    let (bus, mut rx) = Bus::new(64);
    // Nobody processes events here; drain them so followers never wait.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let instance = format!("conformance{}", std::process::id());
    let compute = DockerCompute::connect(
        DockerComputeConfig {
            host: "unix:///var/run/docker.sock".into(),
            sidecar_image: "runvoy-sidecar:test".into(),
            sidecar_runner_path: "/usr/local/bin/runvoy-runner".into(),
            instance: instance.clone(),
            network: "none".into(),
            memory_mb: Some(256),
            cpu_millis: None,
            pids: Some(128),
            tmp_mb: 16,
            read_only_root: true,
            pull: false,
        },
        bus,
    )
    .await
    .unwrap_or_else(|e| panic!("the Docker tests need a Docker engine and the test images: {e}"));
    compute_conformance(&compute, &Engine).await;
}
