//! A small client for the Cloud Run Admin API v2: retries, Google's error body, long-running
//! operations, and the resource shapes this adapter reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::TokenProvider;
use crate::config::CloudRunConfig;

/// `google.rpc.Status` as Google's REST error body carries it in `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GoogleStatus {
    /// HTTP status code (REST) or `google.rpc.Code` (inside an operation).
    pub code: i32,
    /// Developer-facing message.
    pub message: String,
    /// Canonical code name (`NOT_FOUND`, `PERMISSION_DENIED`, ...); absent inside operations.
    pub status: String,
    /// Typed details (`ErrorInfo`, `QuotaFailure`, ...), kept as JSON.
    pub details: Vec<Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleStatus,
}

/// A failed Admin API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Google answered with an error status.
    #[error("{method} {resource}: HTTP {http} {}: {}", .status.status, .status.message)]
    Status {
        /// Method and resource, for messages.
        method: String,
        /// The resource name (or collection) the call addressed.
        resource: String,
        /// HTTP status.
        http: u16,
        /// The parsed error body (`status` empty when the body was not Google's).
        status: Box<GoogleStatus>,
    },
    /// No answer (connection, timeout, TLS) or no token.
    #[error("{method} {resource}: {message}")]
    Transport {
        /// Method.
        method: String,
        /// Resource.
        resource: String,
        /// What failed.
        message: String,
    },
    /// A 2xx answer that is not the JSON this adapter expects.
    #[error("{method} {resource}: malformed response: {message}")]
    Malformed {
        /// Method.
        method: String,
        /// Resource.
        resource: String,
        /// What was wrong.
        message: String,
    },
}

impl ApiError {
    /// HTTP status, when Google answered.
    pub fn http(&self) -> Option<u16> {
        match self {
            ApiError::Status { http, .. } => Some(*http),
            _ => None,
        }
    }

    /// Worth retrying: 429, 5xx, or no answer.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Status { http, .. } => *http == 429 || *http >= 500,
            ApiError::Transport { .. } => true,
            ApiError::Malformed { .. } => false,
        }
    }

    /// Google's canonical code name (`FAILED_PRECONDITION`, ...), empty when unknown.
    pub fn status_name(&self) -> &str {
        match self {
            ApiError::Status { status, .. } => &status.status,
            _ => "",
        }
    }
}

/// `google.longrunning.Operation`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Operation {
    pub name: String,
    pub done: bool,
    pub metadata: Option<Value>,
    pub response: Option<Value>,
    pub error: Option<GoogleStatus>,
}

/// `google.cloud.run.v2.Condition` (the fields this adapter reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub message: String,
    pub reason: String,
    pub execution_reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Container {
    pub name: String,
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct TaskTemplate {
    pub containers: Vec<Container>,
}

/// `google.cloud.run.v2.Execution` (output-only resource; counts are omitted when 0).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Execution {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub template: TaskTemplate,
    pub conditions: Vec<Condition>,
    pub reconciling: bool,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
    pub running_count: i64,
    pub succeeded_count: i64,
    pub failed_count: i64,
    pub cancelled_count: i64,
}

/// `google.cloud.run.v2.TaskAttemptResult`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TaskAttemptResult {
    pub status: Option<GoogleStatus>,
    pub exit_code: i32,
    pub term_signal: i32,
}

/// `google.cloud.run.v2.Task` (the fields this adapter reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Task {
    pub name: String,
    pub index: i64,
    pub conditions: Vec<Condition>,
    pub last_attempt_result: Option<TaskAttemptResult>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ExecutionList {
    pub executions: Vec<Execution>,
    pub next_page_token: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TaskList {
    pub tasks: Vec<Task>,
    pub next_page_token: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct JobList {
    pub jobs: Vec<Value>,
    pub next_page_token: String,
}

/// The HTTP side: token, retries, error parsing.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    tokens: Arc<dyn TokenProvider>,
    backoff: ExponentialBuilder,
    poll: Duration,
}

impl Api {
    pub fn new(cfg: &CloudRunConfig, tokens: Arc<dyn TokenProvider>) -> Result<Api, String> {
        Self::with_base(cfg, &cfg.base_url, tokens)
    }

    /// A client of another Google API with `/v2/` paths (Cloud Logging), with `cfg`'s retry
    /// and timeout settings.
    pub fn with_base(
        cfg: &CloudRunConfig,
        base: &str,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .user_agent(concat!("runvoy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(cfg.retry_min_delay)
            .with_max_delay(cfg.retry_max_delay)
            .with_max_times(cfg.max_attempts.saturating_sub(1))
            .with_jitter();
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            tokens,
            backoff,
            poll: cfg.operation_poll,
        })
    }

    /// One call, without retries. `path` is a resource name (or name plus `:verb` / query).
    async fn once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let resource = path.split(['?', ':']).next().unwrap_or(path).to_owned();
        let transport = |message: String| ApiError::Transport {
            method: method.to_string(),
            resource: resource.clone(),
            message,
        };
        let token = self.tokens.token().await.map_err(transport)?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v2/{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| transport(e.to_string()))?;
        let http = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        if !(200..300).contains(&http) {
            let status = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => b.error,
                // Not Google's body (a proxy, a load balancer): keep a bounded excerpt.
                Err(_) => GoogleStatus {
                    code: i32::from(http),
                    message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                    ..Default::default()
                },
            };
            return Err(ApiError::Status {
                method: method.to_string(),
                resource,
                http,
                status: Box::new(status),
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed {
            method: method.to_string(),
            resource,
            message: e.to_string(),
        })
    }

    /// A call retried with jittered exponential backoff on 429, 5xx and transport errors.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        (|| self.once(&method, path, body))
            .retry(self.backoff)
            .when(ApiError::retryable)
            .notify(|e, after| tracing::debug!(error = %e, ?after, "retrying a Cloud Run call"))
            .await
    }

    /// A single attempt, for calls whose retry needs a check first (`jobs.run`).
    pub async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.once(&method, path, body).await
    }

    /// The backoff policy, for callers that retry by hand.
    pub fn backoff(&self) -> ExponentialBuilder {
        self.backoff
    }

    /// Decodes a typed answer.
    pub fn decode<T: DeserializeOwned>(
        method: &str,
        resource: &str,
        v: Value,
    ) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| ApiError::Malformed {
            method: method.to_owned(),
            resource: resource.to_owned(),
            message: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let v = self.call(Method::GET, path, None).await?;
        Api::decode("GET", path, v)
    }

    /// Polls `operations.get` until the operation is done or `timeout` passes. Returns the
    /// finished operation (its `error` is the caller's to judge).
    pub async fn wait(&self, mut op: Operation, timeout: Duration) -> Result<Operation, ApiError> {
        let until = Instant::now() + timeout;
        while !op.done {
            if Instant::now() >= until {
                return Err(ApiError::Transport {
                    method: "GET".into(),
                    resource: op.name.clone(),
                    message: format!("operation not done after {}s", timeout.as_secs()),
                });
            }
            tokio::time::sleep(self.poll).await;
            op = self.operation(&op.name).await?;
        }
        Ok(op)
    }

    pub async fn operation(&self, name: &str) -> Result<Operation, ApiError> {
        if name.is_empty() {
            return Err(ApiError::Malformed {
                method: "GET".into(),
                resource: "operations".into(),
                message: "an operation without a name".into(),
            });
        }
        self.get(name).await
    }
}
