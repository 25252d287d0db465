//! Which backend [`TestServer`](crate::TestServer) runs runvoyd on, chosen by
//! `RUNVOY_TEST_BACKEND`, so the same integration suites run on each:
//!
//! * `local` (default): SQLite, local compute, in-process events.
//! * `gcp-local`: Firestore on Google's emulator, local compute whose records go through the
//!   Pub/Sub emulator (`--gcp-local-sink-topic`) and come back through a real push
//!   subscription to `/push/pubsub/logs`.
//! * `gcp`: `--backend gcp` against the emulators and `runvoy-fake-gcp` (Cloud Run Admin API,
//!   Cloud Logging and Cloud KMS fakes; the fake runs each job execution's containers on local
//!   compute and publishes their log entries to the Pub/Sub emulator).
//! * `docker`: SQLite and in-process events, `--compute docker` on the local Docker Engine with
//!   the images `scripts/docker-test-images.sh` builds (`runvoy-sidecar:test`, and
//!   `runvoy-test/busybox:test` as the default image).
//!
//! Each server gets collections, a topic and a subscription of its own.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bin;

/// Project id every test server uses on the emulators.
pub const PROJECT: &str = "runvoy-test";
/// The CryptoKey of the KMS fake in `gcp` mode.
pub const KMS_KEY: &str =
    "projects/runvoy-test/locations/global/keyRings/runvoy/cryptoKeys/secrets";
const KMS_TOKEN: &str = "fake-gcp-token";

/// A backend of the test servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// SQLite, local compute, in-process events.
    Local,
    /// Firestore and Pub/Sub emulators, local compute.
    GcpLocal,
    /// `--backend gcp` on the emulators and the fakes.
    Gcp,
    /// SQLite, in-process events, Docker compute.
    Docker,
}

impl TestBackend {
    /// The backend runvoyd reports (`/health`, `runvoy version`).
    pub fn server_backend(self) -> &'static str {
        match self {
            TestBackend::Gcp => "gcp",
            TestBackend::Local | TestBackend::GcpLocal | TestBackend::Docker => "local",
        }
    }

    /// Whether executions run on local compute (a directory per execution, a supervisor).
    pub fn local_compute(self) -> bool {
        matches!(self, TestBackend::Local | TestBackend::GcpLocal)
    }
}

/// The image a run on the `docker` test backend gets when it names none.
pub const DOCKER_TEST_IMAGE: &str = "runvoy-test/busybox:test";
/// The sidecar image of the `docker` test backend.
pub const DOCKER_SIDECAR_IMAGE: &str = "runvoy-sidecar:test";

/// runvoyd's flags on the `docker` test backend.
pub fn docker_args() -> Vec<String> {
    [
        "--compute",
        "docker",
        "--docker-sidecar-image",
        DOCKER_SIDECAR_IMAGE,
        "--docker-no-pull",
        "--default-image",
        DOCKER_TEST_IMAGE,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Removes the containers and volumes a `docker` test server left on the engine (executions
/// outlive runvoyd by design; tests clean up), found by the instance label of its data dir.
pub(crate) fn docker_cleanup(data: &Path) {
    let Ok(instance) = std::fs::read_to_string(data.join("docker-instance")) else {
        return;
    };
    let filter = format!("label=runvoy.instance={}", instance.trim());
    let ids = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = ids(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&containers)
            .output();
    }
    let volumes = ids(&["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
}

/// The backend `RUNVOY_TEST_BACKEND` names (panics on an unknown one, so a typo cannot turn a
/// run into a `local` one).
pub fn test_backend() -> TestBackend {
    match std::env::var("RUNVOY_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("local") => TestBackend::Local,
        Ok("gcp-local") => TestBackend::GcpLocal,
        Ok("gcp") => TestBackend::Gcp,
        Ok("docker") => TestBackend::Docker,
        Ok(other) => {
            panic!("RUNVOY_TEST_BACKEND={other:?}: expected local, gcp-local, gcp or docker")
        }
    }
}

/// Runs one emulator REST call on a thread of its own (callers may be inside a runtime).
fn emulator_call(method: &'static str, url: String, body: Value) -> (u16, String) {
    emulator_try(method, url, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`emulator_call`] that reports a failure instead of panicking (for `Drop`).
fn emulator_try(method: &'static str, url: String, body: Value) -> Result<(u16, String), String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .map_err(|e| e.to_string())?;
            let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let mut rb = http.request(m, &url);
            if !body.is_null() {
                rb = rb.json(&body);
            }
            let r = rb
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = r.status().as_u16();
            Ok((status, r.text().await.unwrap_or_default()))
        })
    })
    .join()
    .map_err(|_| "the emulator call panicked".to_owned())?
}

/// A running `runvoy-fake-gcp`.
struct Fake {
    child: Child,
    url: String,
    kms_url: String,
    state_dir: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..250 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::kill_supervisors(&self.state_dir);
    }
}

/// The Google Cloud side of one test server.
pub(crate) struct GcpSetup {
    kind: TestBackend,
    prefix: String,
    topic: String,
    subscription: String,
    pubsub_host: String,
    firestore_host: String,
    fake: Option<Fake>,
}

fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{what}{}x{n}", std::process::id())
}

impl Drop for GcpSetup {
    fn drop(&mut self) {
        // The emulator pushes to a subscription's endpoint until it is deleted: a server that
        // is gone would otherwise take the emulator's push capacity from the ones still
        // running, retrying forever.
        for name in [&self.subscription, &self.topic] {
            let _ = emulator_try(
                "DELETE",
                format!("http://{}/v1/{name}", self.pubsub_host),
                Value::Null,
            );
        }
    }
}

impl GcpSetup {
    /// Collections, a topic and (for `gcp`) a fake of this server's own, under `dir`.
    pub(crate) fn new(kind: TestBackend, dir: &Path, extra_args: &[String]) -> GcpSetup {
        let pubsub_host = runvoy_emulators::shared_pubsub().host.clone();
        let firestore_host = runvoy_emulators::shared_firestore().host.clone();
        let topic = format!("projects/{PROJECT}/topics/{}", unique("logs"));
        let (status, body) =
            emulator_call("PUT", format!("http://{pubsub_host}/v1/{topic}"), json!({}));
        assert!(
            status == 200 || status == 409,
            "creating {topic}: {status} {body}"
        );
        let fake = (kind == TestBackend::Gcp).then(|| {
            let state_dir = dir.join("fake");
            let log = std::fs::File::create(dir.join("fake-gcp.log")).expect("fake log");
            let process = extra_args
                .windows(2)
                .any(|w| w[0] == "--isolation" && w[1] == "process");
            let mut child = Command::new(bin("runvoy-fake-gcp"))
                .arg("--state-dir")
                .arg(&state_dir)
                .args(["--pubsub-topic", &topic, "--kms-key", KMS_KEY])
                .args(["--kms-token", KMS_TOKEN])
                .arg("--runvoyd-bin")
                .arg(bin("runvoyd"))
                .arg("--runner-bin")
                .arg(bin("runvoy-runner"))
                .arg("--sidecar-bin")
                .arg(bin("runvoy-sidecar"))
                .args(if process {
                    &["--isolation", "process"][..]
                } else {
                    &[]
                })
                .env("PUBSUB_EMULATOR_HOST", &pubsub_host)
                .env("RUNVOY_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .expect("spawn runvoy-fake-gcp");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("fake's first line");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
                panic!(
                    "runvoy-fake-gcp did not start: {line:?}\n{}",
                    std::fs::read_to_string(dir.join("fake-gcp.log")).unwrap_or_default()
                )
            });
            Fake {
                child,
                url: v["url"].as_str().expect("url").to_owned(),
                kms_url: v["kms_url"].as_str().expect("kms_url").to_owned(),
                state_dir,
            }
        });
        GcpSetup {
            kind,
            prefix: format!("{}_", unique("t")),
            subscription: format!("projects/{PROJECT}/subscriptions/{}", unique("push")),
            topic,
            pubsub_host,
            firestore_host,
            fake,
        }
    }

    /// runvoyd's flags and environment for this backend.
    pub(crate) fn args_env(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut env = vec![
            (
                "FIRESTORE_EMULATOR_HOST".into(),
                self.firestore_host.clone(),
            ),
            ("PUBSUB_EMULATOR_HOST".into(), self.pubsub_host.clone()),
            ("RUNVOY_GCP_PROJECT_ID".into(), PROJECT.into()),
            (
                "RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX".into(),
                self.prefix.clone(),
            ),
        ];
        let args: Vec<&str> = match (self.kind, &self.fake) {
            (TestBackend::Gcp, Some(f)) => {
                env.extend([
                    ("RUNVOY_GCP_REGION".into(), "local".into()),
                    (
                        "RUNVOY_GCP_SIDECAR_IMAGE".into(),
                        "localhost/runvoy-sidecar:test".into(),
                    ),
                    ("RUNVOY_GCP_CLOUDRUN_ENDPOINT".into(), f.url.clone()),
                    ("RUNVOY_GCP_LOGGING_ENDPOINT".into(), f.url.clone()),
                    ("RUNVOY_GCP_ACCESS_TOKEN".into(), "test-token".into()),
                    ("RUNVOY_GCP_SECRETS_KMS_KEY".into(), KMS_KEY.into()),
                    ("RUNVOY_GCP_KMS_ENDPOINT".into(), f.kms_url.clone()),
                    ("RUNVOY_GCP_KMS_ACCESS_TOKEN".into(), KMS_TOKEN.into()),
                ]);
                vec!["--backend", "gcp", "--insecure-push"]
            }
            _ => vec![
                "--store",
                "firestore",
                "--events",
                "pubsub",
                "--insecure-push",
                "--gcp-local-sink-topic",
                &self.topic,
            ],
        };
        (args.into_iter().map(str::to_owned).collect(), env)
    }

    /// Points the push subscription at a (re)started server.
    pub(crate) fn push_to(&self, url: &str) {
        let endpoint = format!("{url}/push/pubsub/logs");
        let base = format!("http://{}/v1/{}", self.pubsub_host, self.subscription);
        let (status, body) = emulator_call(
            "PUT",
            base.clone(),
            json!({
                "topic": self.topic,
                "pushConfig": {"pushEndpoint": endpoint},
                "ackDeadlineSeconds": 60
            }),
        );
        if status == 409 {
            let (status, body) = emulator_call(
                "POST",
                format!("{base}:modifyPushConfig"),
                json!({"pushConfig": {"pushEndpoint": endpoint}}),
            );
            assert_eq!(status, 200, "modifyPushConfig: {body}");
        } else {
            assert_eq!(status, 200, "creating {}: {body}", self.subscription);
        }
    }

    /// Where compute keeps the executions' directories, when not in runvoyd's data dir.
    pub(crate) fn executions_dir(&self) -> Option<PathBuf> {
        self.fake.as_ref().map(|f| f.state_dir.join("executions"))
    }

    /// The fake's log (empty without one).
    pub(crate) fn fake_log_path(&self) -> Option<PathBuf> {
        self.fake
            .as_ref()
            .and_then(|f| f.state_dir.parent().map(|d| d.join("fake-gcp.log")))
    }
}
