//! Error paths against `wiremock`: retries on 429/5xx, Google's error body, permission, quota,
//! not-found and malformed answers.

use std::sync::Arc;
use std::time::Duration;

use runvoy_compute_cloudrun::{CloudRunCompute, CloudRunConfig, StaticToken, job_name};
use runvoy_domain::new_execution_id;
use runvoy_domain::ports::{Compute, ComputeError, ComputeState};
use serde_json::json;
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const IMAGE: &str = "docker.io/library/alpine:3.20";
const PARENT: &str = "projects/p1/locations/europe-west1";

fn compute(server: &MockServer) -> CloudRunCompute {
    let mut c = CloudRunConfig::new("p1", "europe-west1", "sidecar:1");
    c.base_url = server.uri();
    c.max_attempts = 4;
    c.retry_min_delay = Duration::from_millis(1);
    c.retry_max_delay = Duration::from_millis(5);
    c.operation_poll = Duration::from_millis(5);
    CloudRunCompute::new(c, Arc::new(StaticToken("t0ken".into()))).expect("compute")
}

fn job_path() -> String {
    format!("/v2/{PARENT}/jobs/{}", job_name(IMAGE))
}

fn google_error(http: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(http).set_body_json(json!({
        "error": {
            "code": http,
            "message": message,
            "status": status,
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "X"}]
        }
    }))
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

fn unavailable(r: Result<String, ComputeError>) -> String {
    match r {
        Err(ComputeError::Unavailable(m)) => m,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_then_200_is_retried_and_succeeds() {
    let server = MockServer::start().await;
    let c = compute(&server);
    Mock::given(method("GET"))
        .and(path(job_path()))
        .respond_with(google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    // The job as the template wants it: no patch follows.
    let mut job = c.job_body(IMAGE);
    job["name"] = json!(job_path().trim_start_matches("/v2/"));
    Mock::given(method("GET"))
        .and(path(job_path()))
        .and(header("authorization", "Bearer t0ken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job))
        .mount(&server)
        .await;
    assert_eq!(c.ensure_job(IMAGE).await.expect("ensure"), job_name(IMAGE));
    assert_eq!(received(&server).await, 2);
}

#[tokio::test]
async fn a_503_that_never_ends_is_reported_after_the_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(google_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ))
        .mount(&server)
        .await;
    let m = unavailable(compute(&server).ensure_job(IMAGE).await);
    assert!(
        m.contains("UNAVAILABLE") && m.contains(&job_name(IMAGE)),
        "{m}"
    );
    assert_eq!(received(&server).await, 4, "max_attempts calls");
}

#[tokio::test]
async fn quota_exhausted_after_retries_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for jobs.get",
        ))
        .mount(&server)
        .await;
    let m = unavailable(compute(&server).ensure_job(IMAGE).await);
    assert!(
        m.contains("quota exhausted") && m.contains("RESOURCE_EXHAUSTED"),
        "{m}"
    );
    assert!(m.contains(&job_name(IMAGE)), "names the resource: {m}");
    assert_eq!(received(&server).await, 4);
}

#[tokio::test]
async fn permission_denied_is_not_retried_and_names_the_resource() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(google_error(
            403,
            "PERMISSION_DENIED",
            "Permission 'run.jobs.get' denied on resource (or it may not exist).",
        ))
        .mount(&server)
        .await;
    let m = unavailable(compute(&server).ensure_job(IMAGE).await);
    assert!(
        m.contains("denied permission") && m.contains("run.jobs.get"),
        "{m}"
    );
    assert!(
        m.contains(&format!("{PARENT}/jobs/{}", job_name(IMAGE))),
        "{m}"
    );
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn a_missing_job_is_created_and_an_invalid_one_rejected() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(job_path()))
        .respond_with(google_error(
            404,
            "NOT_FOUND",
            "Resource 'x' of kind 'JOB' does not exist.",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(google_error(
            400,
            "INVALID_ARGUMENT",
            "Image 'x' not found.",
        ))
        .mount(&server)
        .await;
    match compute(&server).ensure_job(IMAGE).await {
        Err(ComputeError::Rejected(m)) => assert!(m.contains("Image 'x' not found"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_execution_that_vanished_is_not_found() {
    let server = MockServer::start().await;
    let id = new_execution_id();
    let job = format!("{PARENT}/jobs/runvoy-a-1");
    let exec = format!("{job}/executions/runvoy-a-1-abcde");
    Mock::given(method("GET"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobs": [{"name": job, "labels": {"runvoy-managed": "true"}}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{job}/executions")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "executions": [{"name": exec, "labels": {"runvoy-managed": "true"},
                "template": {"containers": [{"name": "runner",
                    "env": [{"name": "RUNVOY_EXECUTION_ID", "value": id}]}]}}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{exec}")))
        .respond_with(google_error(404, "NOT_FOUND", "Execution does not exist."))
        .mount(&server)
        .await;
    let c = compute(&server);
    assert_eq!(c.list().await.expect("list"), vec![id.clone()]);
    assert_eq!(c.state(&id).await.expect("state"), ComputeState::NotFound);
    assert!(!c.cleanup(&id).await.expect("cleanup"));
}

#[tokio::test]
async fn malformed_answers_are_errors_not_guesses() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>not json</html>"))
        .mount(&server)
        .await;
    let m = unavailable(
        compute(&server)
            .state(&new_execution_id())
            .await
            .map(|s| format!("{s:?}")),
    );
    assert!(m.contains("malformed"), "{m}");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jobs": "not a list"})))
        .mount(&server)
        .await;
    let m = unavailable(compute(&server).list().await.map(|v| format!("{v:?}")));
    assert!(m.contains("malformed"), "{m}");
    assert_eq!(
        received(&server).await,
        1,
        "a malformed answer is not retried"
    );
}

#[tokio::test]
async fn an_error_without_googles_body_keeps_an_excerpt() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(".*"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .mount(&server)
        .await;
    let m = unavailable(compute(&server).ensure_job(IMAGE).await);
    assert!(m.contains("HTTP 502") && m.contains("Bad Gateway"), "{m}");
    assert_eq!(received(&server).await, 4);
}

#[tokio::test]
async fn a_failed_operation_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(job_path()))
        .respond_with(google_error(404, "NOT_FOUND", "no job"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/op1"), "done": false
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{PARENT}/operations/op1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/op1"), "done": true,
            "error": {"code": 9, "message": "Revision template is invalid"}
        })))
        .mount(&server)
        .await;
    let m = unavailable(compute(&server).ensure_job(IMAGE).await);
    assert!(
        m.contains("operation") && m.contains("Revision template is invalid"),
        "{m}"
    );
}
