//! Settings of the Cloud Run compute.

use std::time::Duration;

/// Where and how jobs are created.
#[derive(Debug, Clone)]
pub struct CloudRunConfig {
    /// Project id (or number).
    pub project: String,
    /// Region, e.g. `europe-west1`.
    pub region: String,
    /// Admin API base URL without a trailing slash (`https://run.googleapis.com`; tests point it
    /// at a fake).
    pub base_url: String,
    /// Service account the tasks run as (empty: the project's default compute account).
    pub service_account: String,
    /// The `runvoy-sidecar` image; it also holds the runner binary it injects.
    pub sidecar_image: String,
    /// Path of `runvoy-runner` inside the sidecar image.
    pub sidecar_runner_path: String,
    /// Port the sidecar answers its startup probe on once the workspace is ready.
    pub sidecar_ready_port: u16,
    /// Task timeout of the job template, used by runs without a timeout of their own
    /// (Cloud Run's default is 600 s; its maximum 168 h).
    pub default_task_timeout: Duration,
    /// Added to a run's own timeout and kill grace for the platform's per-attempt timeout: the
    /// runner enforces the timeout itself and needs this long to write its final record.
    pub timeout_slack: Duration,
    /// Size limit of the in-memory `/workspace` volume (a Kubernetes quantity, e.g. `1Gi`).
    pub workspace_size: String,
    /// Attempts of one Admin API call on 429 / 5xx / transport errors.
    pub max_attempts: usize,
    /// First retry delay (doubled each time, with jitter).
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Interval of `operations.get` while waiting for an operation.
    pub operation_poll: Duration,
    /// Longest wait for a job create or patch operation.
    pub operation_timeout: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

impl CloudRunConfig {
    /// Defaults for a project and region.
    pub fn new(project: &str, region: &str, sidecar_image: &str) -> CloudRunConfig {
        CloudRunConfig {
            project: project.to_owned(),
            region: region.to_owned(),
            base_url: "https://run.googleapis.com".to_owned(),
            service_account: String::new(),
            sidecar_image: sidecar_image.to_owned(),
            sidecar_runner_path: "/usr/local/bin/runvoy-runner".to_owned(),
            sidecar_ready_port: 8081,
            default_task_timeout: Duration::from_secs(24 * 3600),
            timeout_slack: Duration::from_secs(60),
            workspace_size: "1Gi".to_owned(),
            max_attempts: 5,
            retry_min_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(8),
            operation_poll: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// `projects/P/locations/L`.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }
}
