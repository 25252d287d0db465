//! The adapter against the in-repo fake of the Cloud Run Admin API: the Compute conformance
//! suite (the fake plays the platform) and the requests the adapter sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use runvoy_compute_cloudrun::{CloudRunCompute, CloudRunConfig, StaticToken, job_name};
use runvoy_domain::JobSpec;
use runvoy_domain::new_execution_id;
use runvoy_domain::ports::{Compute, ComputeError, ComputeState};
use runvoy_domain::testing::{ComputePlatform, compute_conformance, job_spec};
use runvoy_fake_gcp::FakeCloudRun;
use serde_json::{Value, json};

const IMAGE: &str = "docker.io/library/alpine:3.20";
const PARENT: &str = "projects/p1/locations/europe-west1";

fn config(url: &str) -> CloudRunConfig {
    let mut c = CloudRunConfig::new(
        "p1",
        "europe-west1",
        "europe-docker.pkg.dev/p1/runvoy/sidecar:1",
    );
    c.base_url = url.to_owned();
    c.service_account = "runvoy-runner@p1.iam.gserviceaccount.com".into();
    c.retry_min_delay = Duration::from_millis(1);
    c.retry_max_delay = Duration::from_millis(5);
    c.operation_poll = Duration::from_millis(5);
    c.operation_timeout = Duration::from_secs(5);
    c
}

fn compute(fake: &FakeCloudRun) -> CloudRunCompute {
    CloudRunCompute::new(config(&fake.url), Arc::new(StaticToken("t0ken".into()))).expect("compute")
}

fn spec(id: &str, command: &str) -> JobSpec {
    JobSpec {
        timeout_secs: Some(100),
        banner: vec!["runvoy: hello".into()],
        ..job_spec(id, command, IMAGE)
    }
}

fn job_path() -> String {
    format!("{PARENT}/jobs/{}", job_name(IMAGE))
}

/// The fake plays the platform: a test decides when the task runs and how it ends.
struct Platform(Arc<FakeCloudRun>);

#[async_trait]
impl ComputePlatform for Platform {
    fn spec(&self, id: &str, command: &str) -> JobSpec {
        spec(id, command)
    }
    async fn command_exits(&self, id: &str, code: i32) {
        let name = self.0.execution_of(id).expect("an execution for the id");
        self.0.finish(&name, code);
    }
    async fn command_runs(&self, id: &str) {
        let name = self.0.execution_of(id).expect("an execution for the id");
        self.0.set_running(&name);
    }
}

#[tokio::test]
async fn cloud_run_compute_conforms_on_the_fake() {
    let fake = Arc::new(FakeCloudRun::start().await);
    let c = compute(&fake);
    compute_conformance(&c, &Platform(fake.clone())).await;
    // Two runs, two executions: the repeated start ran nothing.
    let runs = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(":run"))
        .count();
    assert_eq!(runs, 2);
    // The kill was a cancel, and both executions were deleted after they ended.
    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.path.ends_with(":cancel"))
    );
    assert_eq!(reqs.iter().filter(|r| r.method == "DELETE").count(), 2);
    assert_eq!(fake.execution_count(), 0);
}

#[tokio::test]
async fn the_job_template_follows_the_design() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let id = new_execution_id();
    c.start(&spec(&id, "terraform plan")).await.expect("start");
    let calls: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.rsplit('/').next().unwrap_or("")))
        .collect();
    assert_eq!(calls.len(), 6, "{calls:?}");
    // A second run of the image: look for the id, then run.
    c.start(&spec(&new_execution_id(), "true"))
        .await
        .expect("start");
    assert_eq!(fake.requests().len(), 8);

    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == format!("/v2/{PARENT}/jobs"))
        .expect("jobs.create");
    assert_eq!(create.query, format!("jobId={}", job_name(IMAGE)));
    // The create operation was not done at once: the adapter polled it.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/operations/"))
    );
    let job = create.body;
    let task = &job["template"]["template"];
    assert_eq!(job["template"]["taskCount"], 1);
    assert_eq!(task["maxRetries"], 0, "maxRetries must be sent explicitly");
    assert_eq!(
        task["serviceAccount"],
        "runvoy-runner@p1.iam.gserviceaccount.com"
    );
    assert_eq!(task["timeout"], "86400s");
    assert_eq!(
        task["volumes"],
        json!([{"name": "workspace", "emptyDir": {"medium": "MEMORY", "sizeLimit": "1Gi"}}])
    );
    let cs = task["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 2);
    let (side, runner) = (&cs[0], &cs[1]);
    assert_eq!(side["name"], "sidecar");
    assert_eq!(side["image"], "europe-docker.pkg.dev/p1/runvoy/sidecar:1");
    assert_eq!(side["startupProbe"]["tcpSocket"]["port"], 8081);
    assert!(
        side["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--serve-ready"))
    );
    assert_eq!(runner["name"], "runner");
    assert_eq!(runner["image"], IMAGE);
    assert_eq!(
        runner["command"],
        json!(["/workspace/.runvoy/runvoy-runner"])
    );
    assert_eq!(runner["dependsOn"], json!(["sidecar"]));
    for c in cs {
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "workspace", "mountPath": "/workspace"}])
        );
    }
    for labels in [&job["labels"], &job["template"]["labels"]] {
        assert_eq!(labels["runvoy-managed"], "true");
        assert!(
            labels["runvoy-image"]
                .as_str()
                .is_some_and(|h| h.len() == 16)
        );
    }

    // The run: overrides carry the id and the command, and the platform timeout is the run's
    // own plus grace and slack.
    let run = fake
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/v2/{}:run", job_path()))
        .expect("jobs.run");
    let ov = &run.body["overrides"];
    assert_eq!(ov["timeout"], "161s");
    assert_eq!(ov["taskCount"], 1);
    let co = &ov["containerOverrides"][0];
    assert_eq!(co["name"], "runner");
    let env: BTreeMap<String, String> = co["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(env["RUNVOY_EXECUTION_ID"], id);
    assert_eq!(env["RUNVOY_COMMAND"], "terraform plan");
    assert_eq!(env["RUNVOY_TIMEOUT_SECONDS"], "100");
    assert_eq!(env["RUNVOY_KILL_GRACE_SECONDS"], "1");
    assert_eq!(env["RUNVOY_BANNER"], "runvoy: hello");
    // The execution's template merged the overrides into the job's env.
    let name = fake.execution_of(&id).expect("execution");
    let t = fake.execution_template(&name);
    assert_eq!(t["containers"][1]["env"][0]["name"], "RUNVOY_WORKDIR");
    assert_eq!(t["timeout"], "161s");
    assert_eq!(c.state(&id).await.expect("state"), ComputeState::Pending);
}

#[tokio::test]
async fn an_argv_run_passes_the_exact_words() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let id = new_execution_id();
    let mut s = spec(&id, "printf '%s|' a ''");
    s.argv = Some(vec!["printf".into(), "%s|".into(), "a".into(), "".into()]);
    c.start(&s).await.expect("start");
    let name = fake.execution_of(&id).expect("execution");
    let env = &fake.execution_template(&name)["containers"][1]["env"];
    let argv = env
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "RUNVOY_ARGV")
        .expect("RUNVOY_ARGV");
    assert_eq!(argv["value"], r#"["printf","%s|","a",""]"#);
    assert!(
        !env.as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "RUNVOY_COMMAND"),
        "an argv run sets no shell line"
    );
}

#[tokio::test]
async fn reserved_names_stdin_and_resource_requests_are_refused_before_any_call() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let mut s = spec(&new_execution_id(), "deploy");
    s.env
        .insert("RUNVOY_TIMEOUT_SECONDS".into(), "s3cr3t-value".into());
    assert!(matches!(c.start(&s).await, Err(ComputeError::Rejected(m)) if m.contains("reserved")));
    let mut s = spec(&new_execution_id(), "deploy");
    s.stdin = Some(b"input".to_vec());
    assert!(
        matches!(c.start(&s).await, Err(ComputeError::Rejected(m)) if m.contains("standard input"))
    );
    let mut s = spec(&new_execution_id(), "deploy");
    s.resources.memory_mb = Some(512);
    assert!(matches!(c.start(&s).await, Err(ComputeError::Rejected(_))));
    let mut s = spec(&new_execution_id(), "deploy");
    s.image = String::new();
    assert!(matches!(c.start(&s).await, Err(ComputeError::Rejected(m)) if m.contains("image")));
    let s = spec(&new_execution_id(), &"x".repeat(40_000));
    assert!(matches!(c.start(&s).await, Err(ComputeError::Rejected(m)) if m.contains("32768")));
    assert!(fake.requests().is_empty(), "nothing reaches Cloud Run");
    let all = format!("{:?}", fake.requests());
    assert!(!all.contains("s3cr3t"));
}

#[tokio::test]
async fn registering_an_image_creates_its_job_once() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let spec = runvoy_domain::images::ImageSpec {
        id: "alpine:3.20-0123abcd".into(),
        image: IMAGE.into(),
        cpu_millis: None,
        memory_mb: None,
        timeout_secs: None,
        service_account: None,
    };
    c.prepare_image(&spec).await.expect("prepare");
    let job = format!("{PARENT}/jobs/{}", runvoy_compute_cloudrun::job_name(IMAGE));
    assert_eq!(
        fake.job(&job).expect("the image's job")["template"]["template"]["maxRetries"],
        0
    );
    let posts = |f: &FakeCloudRun| {
        f.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
            .count()
    };
    assert_eq!(posts(&fake), 1);
    // A repeated registration finds the job as it is: no second create.
    compute(&fake).prepare_image(&spec).await.expect("again");
    assert_eq!(posts(&fake), 1);
}

/// A registered image's cpu, memory, timeout and service account shape a job of its own, and
/// a run in that image goes to that job with its inherited limits accepted.
#[tokio::test]
async fn an_images_settings_shape_its_own_job() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let image = runvoy_domain::images::ImageSpec {
        id: "alpine:3.20-feedbeef".into(),
        image: IMAGE.into(),
        cpu_millis: Some(2000),
        memory_mb: Some(1024),
        timeout_secs: Some(600),
        service_account: Some("tf@p1.iam.gserviceaccount.com".into()),
    };
    c.prepare_image(&image).await.expect("prepare");
    let jobs: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
        .map(|r| r.query.trim_start_matches("jobId=").to_owned())
        .collect();
    assert_eq!(jobs.len(), 1);
    assert_ne!(
        jobs[0],
        job_name(IMAGE),
        "a configured image gets its own job"
    );
    let job = fake
        .job(&format!("{PARENT}/jobs/{}", jobs[0]))
        .expect("the job");
    let task = &job["template"]["template"];
    assert_eq!(task["serviceAccount"], "tf@p1.iam.gserviceaccount.com");
    assert_eq!(
        task["timeout"], "660s",
        "the image's timeout plus the slack"
    );
    assert_eq!(
        task["containers"][1]["resources"]["limits"],
        json!({ "cpu": "2", "memory": "1024Mi" })
    );
    assert_ne!(
        task["containers"][0]["resources"]["limits"]["memory"], "1024Mi",
        "the sidecar keeps the defaults"
    );

    let id = new_execution_id();
    let mut run = spec(&id, "true");
    run.image_settings = Some(image);
    run.resources.cpu_millis = Some(2000);
    run.resources.memory_mb = Some(1024);
    c.start(&run)
        .await
        .expect("a run inheriting the image's limits starts");
    let ran = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(":run"))
        .map(|r| r.path.clone())
        .collect::<Vec<_>>();
    assert_eq!(ran.len(), 1);
    assert!(
        ran[0].contains(&jobs[0]),
        "run in the image's own job: {ran:?}"
    );
    // A limit of its own still cannot be set per run.
    let mut own = spec(&new_execution_id(), "true");
    own.resources.memory_mb = Some(64);
    assert!(matches!(
        c.start(&own).await,
        Err(ComputeError::Rejected(_))
    ));
}

#[tokio::test]
async fn the_runs_environment_reaches_the_runner_after_runvoys_settings() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let id = new_execution_id();
    let mut s = spec(&id, "deploy");
    s.env.insert("STAGE".into(), "prod eu".into());
    s.env.insert("EMPTY".into(), String::new());
    c.start(&s).await.expect("start");
    let run = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with(":run"))
        .expect("jobs.run");
    let env = run.body["overrides"]["containerOverrides"][0]["env"]
        .as_array()
        .expect("env")
        .clone();
    let names: Vec<&str> = env.iter().filter_map(|v| v["name"].as_str()).collect();
    let first_user = names
        .iter()
        .position(|n| !n.starts_with("RUNVOY_"))
        .unwrap();
    assert!(
        names[first_user..]
            .iter()
            .all(|n| !n.starts_with("RUNVOY_"))
    );
    assert!(
        env.iter()
            .any(|v| v["name"] == "STAGE" && v["value"] == "prod eu")
    );
    assert!(env.iter().any(|v| v["name"] == "EMPTY" && v["value"] == ""));
    // The execution the platform ran carries them in the runner container.
    let name = fake.execution_of(&id).expect("execution");
    let tpl = fake.execution_template(&name);
    let runner = tpl["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "runner")
        .unwrap();
    assert!(
        runner["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "STAGE")
    );
}

#[tokio::test]
async fn a_git_checkout_reaches_the_sidecar_and_the_runner() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let id = new_execution_id();
    let mut s = spec(&id, "make");
    s.git = runvoy_proto::git::Checkout::from_request(
        Some("https://example.com/acme/app.git"),
        Some("v1"),
        Some("cmd/x"),
    )
    .unwrap();
    s.env.insert("GITHUB_TOKEN".into(), "tok".into());
    c.start(&s).await.expect("start");
    let name = fake.execution_of(&id).expect("execution");
    let tpl = fake.execution_template(&name);
    let env_of = |container: &str| -> Vec<(String, String)> {
        tpl["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == container)
            .unwrap()["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_owned(),
                    v["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let has =
        |env: &[(String, String)], k: &str, v: &str| env.iter().any(|(n, x)| n == k && x == v);
    let sidecar = env_of("sidecar");
    assert!(
        has(
            &sidecar,
            "RUNVOY_GIT_REPO",
            "https://example.com/acme/app.git"
        ),
        "{sidecar:?}"
    );
    assert!(has(&sidecar, "RUNVOY_GIT_REF", "v1"));
    assert!(has(&sidecar, "RUNVOY_GIT_PATH", "cmd/x"));
    assert!(has(&sidecar, "GITHUB_TOKEN", "tok"));
    let runner = env_of("runner");
    assert!(
        has(&runner, "RUNVOY_CHECKOUT_DIR", "app/cmd/x"),
        "{runner:?}"
    );
    // Without a checkout the sidecar gets no override at all.
    let other = new_execution_id();
    c.start(&spec(&other, "true")).await.expect("start");
    let run = fake
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with(":run"))
        .expect("jobs.run");
    assert_eq!(
        run.body["overrides"]["containerOverrides"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn drift_is_patched_and_an_unchanged_job_is_left_alone() {
    let fake = FakeCloudRun::start().await;
    compute(&fake).ensure_job(IMAGE).await.expect("create");
    // A fresh process finds the job as it left it: no patch (server defaults are no drift).
    compute(&fake).ensure_job(IMAGE).await.expect("check");
    assert!(!fake.requests().iter().any(|r| r.method == "PATCH"));
    // Someone edits the job in the console.
    fake.edit_job(&job_path(), |j| {
        j["template"]["template"]["maxRetries"] = json!(3);
    });
    compute(&fake).ensure_job(IMAGE).await.expect("patch");
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].path, format!("/v2/{}", job_path()));
    assert_eq!(
        fake.job(&job_path()).expect("job")["template"]["template"]["maxRetries"],
        0
    );
    assert_eq!(fake.job(&job_path()).expect("job")["generation"], "2");
}

#[tokio::test]
async fn a_restarted_adapter_finds_its_executions_by_id() {
    let fake = FakeCloudRun::start().await;
    let ids: Vec<String> = (0..5).map(|_| new_execution_id()).collect();
    {
        let c = compute(&fake);
        for id in &ids {
            c.start(&spec(id, "true")).await.expect("start");
        }
    }
    // A new process has an empty cache; the fake pages by two.
    let c = compute(&fake);
    let target = &ids[0];
    fake.finish(&fake.execution_of(target).unwrap(), 7);
    match c.state(target).await.expect("state") {
        ComputeState::Exited(x) => assert_eq!(x.process_exit_code, Some(7)),
        other => panic!("{other:?}"),
    }
    c.start(&spec(target, "true")).await.expect("start again");
    assert_eq!(fake.execution_count(), 5, "no second execution");
    let mut listed = c.list().await.expect("list");
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn a_run_whose_answer_was_lost_is_not_run_twice() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    c.ensure_job(IMAGE).await.expect("job");
    // The execution is created but the answer is a 503.
    fake.inject("POST", ":run", 503, "UNAVAILABLE", true);
    let id = new_execution_id();
    c.start(&spec(&id, "true")).await.expect("start");
    assert_eq!(fake.execution_count(), 1);
    // A 503 that did not create it is retried.
    fake.inject("POST", ":run", 503, "UNAVAILABLE", false);
    let id2 = new_execution_id();
    c.start(&spec(&id2, "true")).await.expect("start");
    assert_eq!(fake.execution_count(), 2);
    assert!(fake.execution_of(&id2).is_some());
}

#[tokio::test]
async fn a_job_deleted_behind_runvoys_back_is_created_again() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    c.start(&spec(&new_execution_id(), "true"))
        .await
        .expect("start");
    fake.delete_job(&job_path());
    let id = new_execution_id();
    c.start(&spec(&id, "true"))
        .await
        .expect("start after the job vanished");
    assert!(fake.job(&job_path()).is_some());
    assert!(fake.execution_of(&id).is_some());
}

#[tokio::test]
async fn sidecar_failure_cancellation_and_unknown_ids() {
    let fake = FakeCloudRun::start().await;
    let c = compute(&fake);
    let id = new_execution_id();
    c.start(&spec(&id, "true")).await.expect("start");
    fake.fail_sidecar(&fake.execution_of(&id).unwrap());
    match c.state(&id).await.expect("state") {
        ComputeState::Exited(x) => {
            assert!(
                x.failure
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("sidecar failed"),
                "{x:?}"
            )
        }
        other => panic!("{other:?}"),
    }

    // Cancelled before it ran: ends without an exit code, as a cancellation.
    let id = new_execution_id();
    c.start(&spec(&id, "sleep 60")).await.expect("start");
    c.kill(&id).await.expect("kill");
    match c.state(&id).await.expect("state") {
        ComputeState::Exited(x) => {
            assert_eq!(x.process_exit_code, None);
            assert!(x.failure.unwrap().starts_with("cancelled on Cloud Run"));
        }
        other => panic!("{other:?}"),
    }
    // A kill of a finished execution is not an error (Cloud Run answers FAILED_PRECONDITION).
    c.kill(&id).await.expect("kill again");
    // Running executions are never deleted.
    let id = new_execution_id();
    c.start(&spec(&id, "sleep 60")).await.expect("start");
    fake.set_running(&fake.execution_of(&id).unwrap());
    assert!(!c.cleanup(&id).await.expect("cleanup"));
    assert_eq!(c.state(&id).await.expect("state"), ComputeState::Running);
    // Unknown and invalid ids.
    let unknown = new_execution_id();
    assert_eq!(
        c.state(&unknown).await.expect("state"),
        ComputeState::NotFound
    );
    assert!(!c.cleanup(&unknown).await.expect("cleanup"));
    c.kill(&unknown).await.expect("kill of nothing");
    assert!(matches!(
        c.state("../x").await,
        Err(ComputeError::Rejected(_))
    ));
    let _: Value = json!(null);
}
