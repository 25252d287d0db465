//! The push endpoints and their acknowledgement rules.
//!
//! * 204: the effect is durable (records stored, or the hint reconciled), or the message was
//!   already handled (same `messageId` / CloudEvent id seen recently).
//! * 400/404 with a stable code: the message can never succeed (malformed envelope, undecodable
//!   data, a record of an execution the store does not have once the grace period is over).
//!   Pub/Sub nacks every non-2xx alike; the subscription's dead-letter policy moves such a
//!   message to the dead-letter topic after its delivery attempts, and the code says why.
//! * 401: no, forged, expired, wrong-audience or wrong-account token.
//! * 503: the store (or compute, or the signing keys) is unavailable: Pub/Sub retries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use runvoy_domain::Event;
use runvoy_domain::clock::Clock;
use runvoy_domain::ports::Store;
use runvoy_domain::processor::Processor;
use runvoy_proto::ErrorBody;

use crate::commit::{CommitConfig, CommitError, GroupCommit};
use crate::decode::{self, DecodeError, Decoded};
use crate::eventarc::{self, EventData, EventError};
use crate::oidc::{AuthError, Verifier};

/// Stable error codes of the push endpoints.
pub mod codes {
    /// 401: missing or invalid OIDC token.
    pub const PUSH_UNAUTHENTICATED: &str = "PUSH_UNAUTHENTICATED";
    /// 503: the signing keys could not be fetched.
    pub const PUSH_KEYS_UNAVAILABLE: &str = "PUSH_KEYS_UNAVAILABLE";
    /// 400: the body is not a Pub/Sub push envelope.
    pub const PUSH_MALFORMED_ENVELOPE: &str = "PUSH_MALFORMED_ENVELOPE";
    /// 400: `message.data` is not base64 of a LogEntry.
    pub const PUSH_UNDECODABLE_DATA: &str = "PUSH_UNDECODABLE_DATA";
    /// 400: a runner record that does not parse.
    pub const PUSH_BAD_RECORD: &str = "PUSH_BAD_RECORD";
    /// 400: an entry that is neither a runner record nor a Cloud Run execution entry.
    pub const PUSH_UNSUPPORTED_ENTRY: &str = "PUSH_UNSUPPORTED_ENTRY";
    /// 400: not a CloudEvents 1.0 binary-mode request.
    pub const PUSH_BAD_CLOUDEVENT: &str = "PUSH_BAD_CLOUDEVENT";
    /// 400: a CloudEvent type the endpoint does not handle.
    pub const PUSH_UNSUPPORTED_EVENT: &str = "PUSH_UNSUPPORTED_EVENT";
    /// 400: a record naming another runvoy execution than the one its Cloud Run execution
    /// writes for.
    pub const PUSH_FOREIGN_RECORD: &str = "PUSH_FOREIGN_RECORD";
    /// 404: the execution is unknown and the grace period is over.
    pub const PUSH_UNKNOWN_EXECUTION: &str = "PUSH_UNKNOWN_EXECUTION";
    /// 503: the execution is not known (yet); within the grace period the message is retried.
    pub const PUSH_EXECUTION_NOT_YET_KNOWN: &str = "PUSH_EXECUTION_NOT_YET_KNOWN";
    /// 503: the store or compute failed.
    pub const SERVICE_UNAVAILABLE: &str = runvoy_proto::codes::SERVICE_UNAVAILABLE;
}

/// Largest push body accepted: a LogEntry is at most about 256 KiB, base64 grows it by a third.
pub const MAX_PUSH_BODY: usize = 1024 * 1024;

/// How pushes are authenticated.
#[derive(Clone)]
pub enum PushAuth {
    /// Every push carries a Google-signed OIDC token, verified.
    Oidc(Arc<Verifier>),
    /// No verification (`--insecure-push`, for emulator runs only).
    Insecure,
}

/// Settings of the push endpoints.
#[derive(Clone)]
pub struct PushConfig {
    /// Authentication.
    pub auth: PushAuth,
    /// Group commit limits.
    pub commit: CommitConfig,
    /// Message ids remembered for duplicate detection.
    pub recent_ids: usize,
    /// How long after publication a message about an unknown execution is retried (503)
    /// before it is refused for good (404).
    pub unknown_grace: Duration,
}

impl PushConfig {
    /// Defaults: 5 ms window, 500 records a batch, 100,000 recent ids, 60 s grace.
    pub fn new(auth: PushAuth) -> Self {
        PushConfig {
            auth,
            commit: CommitConfig::default(),
            recent_ids: 100_000,
            unknown_grace: Duration::from_millis(runvoy_domain::processor::LOST_GRACE_MS as u64),
        }
    }
}

/// A bounded set of recently seen keys, oldest forgotten first.
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Recent {
    fn new(cap: usize) -> Self {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }
    fn contains(&self, k: &str) -> bool {
        self.set.contains(k)
    }
    fn insert(&mut self, k: String) {
        if self.set.insert(k.clone()) {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Cloud Run execution name → runvoy execution id, learned from the runner records (each names
/// both). Cloud Run's own entries name only the Cloud Run execution.
struct Names {
    map: HashMap<String, String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Names {
    fn learn(&mut self, cloud: &str, id: &str) {
        // The first pairing stays: a later one is either the same or forged.
        if !self.map.contains_key(cloud) {
            self.map.insert(cloud.to_owned(), id.to_owned());
            self.order.push_back(cloud.to_owned());
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

struct Inner {
    processor: Arc<Processor>,
    clock: Arc<dyn Clock>,
    auth: PushAuth,
    commit: Arc<GroupCommit>,
    seen: Mutex<Recent>,
    names: Mutex<Names>,
    unknown_grace_ms: i64,
}

/// State of the push endpoints.
#[derive(Clone)]
pub struct PushState(Arc<Inner>);

impl PushState {
    /// Endpoints feeding `processor`; `store` is the one the processor writes to.
    pub fn new(
        processor: Arc<Processor>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cfg: PushConfig,
    ) -> Self {
        PushState(Arc::new(Inner {
            commit: GroupCommit::new(processor.clone(), store, cfg.commit),
            processor,
            clock,
            auth: cfg.auth,
            seen: Mutex::new(Recent::new(cfg.recent_ids)),
            names: Mutex::new(Names {
                map: HashMap::new(),
                order: VecDeque::new(),
                cap: 100_000,
            }),
            unknown_grace_ms: cfg.unknown_grace.as_millis() as i64,
        }))
    }

    /// Batches committed so far (for tests and metrics).
    pub fn batches(&self) -> u64 {
        self.0.commit.batches()
    }
}

/// The push routes: `POST /push/pubsub/logs`, `POST /push/eventarc`,
/// `POST /push/scheduler/reconcile`. They sit outside the API's key policy: each verifies the
/// OIDC token itself.
pub fn router(state: PushState) -> Router {
    Router::new()
        .route("/push/pubsub/logs", post(pubsub_logs))
        .route("/push/eventarc", post(eventarc_event))
        .route("/push/scheduler/reconcile", post(scheduler_reconcile))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
        // A bug answers 500 (Pub/Sub retries) instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(state)
}

/// A refusal with a stable code.
#[derive(Debug)]
pub struct PushError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl PushError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        PushError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, error = %self.message, "push not acknowledged; it will be retried");
        } else {
            tracing::warn!(code = self.code, error = %self.message, status = self.status.as_u16(), "push refused");
        }
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
            details: None,
            lock: None,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<DecodeError> for PushError {
    fn from(e: DecodeError) -> Self {
        let code = match &e {
            DecodeError::Envelope(_) => codes::PUSH_MALFORMED_ENVELOPE,
            DecodeError::Data(_) => codes::PUSH_UNDECODABLE_DATA,
            DecodeError::Record(_) => codes::PUSH_BAD_RECORD,
            DecodeError::Unsupported(_) => codes::PUSH_UNSUPPORTED_ENTRY,
        };
        PushError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

impl From<EventError> for PushError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Context(_) => PushError::new(
                StatusCode::BAD_REQUEST,
                codes::PUSH_BAD_CLOUDEVENT,
                e.to_string(),
            ),
            EventError::Type(_) => PushError::new(
                StatusCode::BAD_REQUEST,
                codes::PUSH_UNSUPPORTED_EVENT,
                e.to_string(),
            ),
            EventError::Data(d) => d.into(),
        }
    }
}

fn unavailable(message: impl Into<String>) -> PushError {
    PushError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::SERVICE_UNAVAILABLE,
        message,
    )
}

async fn authenticate(st: &Inner, headers: &HeaderMap) -> Result<(), PushError> {
    let PushAuth::Oidc(v) = &st.auth else {
        return Ok(());
    };
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match v.verify(h).await {
        Ok(_) => Ok(()),
        Err(AuthError::KeysUnavailable(m)) => Err(PushError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::PUSH_KEYS_UNAVAILABLE,
            m,
        )),
        Err(e) => Err(PushError::new(
            StatusCode::UNAUTHORIZED,
            codes::PUSH_UNAUTHENTICATED,
            e.to_string(),
        )),
    }
}

impl Inner {
    fn seen(&self, key: &str) -> bool {
        self.seen.lock().expect("seen").contains(key)
    }
    fn remember(&self, key: String) {
        self.seen.lock().expect("seen").insert(key);
    }

    /// Unknown execution: retried within the grace period after publication, refused after.
    fn unknown(&self, what: String, published_ms: Option<i64>) -> PushError {
        let now = self.clock.now_ms();
        match published_ms {
            Some(p) if now - p <= self.unknown_grace_ms => PushError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::PUSH_EXECUTION_NOT_YET_KNOWN,
                format!("{what} is not known yet; retry"),
            ),
            _ => PushError::new(
                StatusCode::NOT_FOUND,
                codes::PUSH_UNKNOWN_EXECUTION,
                format!("{what} is unknown"),
            ),
        }
    }

    /// Makes one decoded entry durable.
    async fn apply(&self, d: Decoded, published_ms: Option<i64>) -> Result<(), PushError> {
        match d {
            Decoded::Record {
                execution_id,
                cloud_execution,
                record,
                exit,
            } => {
                if let Some(c) = &cloud_execution {
                    let names = self.names.lock().expect("names");
                    match names.map.get(c) {
                        // On Cloud Run the command can write to the runner's stdout: a record
                        // naming another execution than the one its job execution wrote for is
                        // forged. (Only caught once this instance has seen the real pairing.)
                        Some(known) if known != &execution_id => {
                            return Err(PushError::new(
                                StatusCode::BAD_REQUEST,
                                codes::PUSH_FOREIGN_RECORD,
                                format!(
                                    "Cloud Run execution {c} writes execution {known}'s records, \
                                     not {execution_id}'s"
                                ),
                            ));
                        }
                        _ => {}
                    }
                }
                match self
                    .commit
                    .submit(&execution_id, record.into_iter().collect(), exit)
                    .await
                {
                    Ok(()) => {
                        // Learnt only from records of an execution the store has.
                        if let Some(c) = &cloud_execution {
                            self.names.lock().expect("names").learn(c, &execution_id);
                        }
                        Ok(())
                    }
                    Err(CommitError::UnknownExecution) => {
                        Err(self.unknown(format!("execution {execution_id}"), published_ms))
                    }
                    Err(CommitError::Unavailable(m)) => Err(unavailable(m)),
                }
            }
            Decoded::Hint {
                cloud_execution,
                what,
            } => {
                let id = self
                    .names
                    .lock()
                    .expect("names")
                    .map
                    .get(&cloud_execution)
                    .cloned();
                let Some(id) = id else {
                    // A hint carries no data: what it says is read again from compute by the
                    // sweeps. Acknowledged rather than retried, because Pub/Sub slows every
                    // push of a subscription that keeps refusing messages, records included.
                    tracing::debug!(cloud_execution = %cloud_execution, what = %what,
                        "hint about a Cloud Run execution no record named yet; dropped");
                    return Ok(());
                };
                tracing::info!(execution_id = %id, cloud_execution = %cloud_execution, what = %what, "compute hint");
                self.processor
                    .handle(Event::ComputeChanged { execution_id: id })
                    .await
                    .map_err(|e| unavailable(e.to_string()))
            }
        }
    }

    /// A wrapped Pub/Sub message whose data is a LogEntry.
    async fn message(&self, env: &decode::PushEnvelope, key: String) -> Result<(), PushError> {
        let entry = env.message.data_bytes()?;
        let d = decode::decode_entry(&entry)?;
        self.apply(d, env.message.publish_time_ms()).await?;
        self.remember(key);
        Ok(())
    }
}

async fn pubsub_logs(State(st): State<PushState>, headers: HeaderMap, body: Bytes) -> Response {
    let st = &st.0;
    let r = async {
        authenticate(st, &headers).await?;
        let env = decode::parse_envelope(&body)?;
        let key = format!("pubsub:{}", env.message.message_id().unwrap_or(""));
        if st.seen(&key) {
            return Ok(());
        }
        st.message(&env, key).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn eventarc_event(State(st): State<PushState>, headers: HeaderMap, body: Bytes) -> Response {
    let st = &st.0;
    let r = async {
        authenticate(st, &headers).await?;
        let ev = eventarc::context(&headers)?;
        let key = format!("ce:{}:{}", ev.source, ev.id);
        if st.seen(&key) {
            return Ok(());
        }
        match eventarc::data(&ev, &body)? {
            EventData::Audit(d) => {
                let t = ev
                    .time
                    .as_deref()
                    .and_then(runvoy_domain::clock::parse_rfc3339);
                st.apply(d, t).await?;
                st.remember(key);
                Ok(())
            }
            EventData::Message(env) => {
                if env.message.message_id().is_none() {
                    return Err(DecodeError::Envelope("message has no messageId".into()).into());
                }
                st.message(&env, key).await
            }
        }
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn scheduler_reconcile(State(st): State<PushState>, headers: HeaderMap) -> Response {
    let st = &st.0;
    if let Err(e) = authenticate(st, &headers).await {
        return e.into_response();
    }
    match st.processor.sweep("scheduler").await {
        Ok(report) => {
            axum::Json(serde_json::json!({ "status": "ok", "report": report })).into_response()
        }
        Err(e) => unavailable(e.to_string()).into_response(),
    }
}
