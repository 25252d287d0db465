//! The push endpoints end to end on the in-memory adapters: group commit, idempotency, poison
//! messages, store outages, hints, and every OIDC failure. Tokens are signed here with test RSA
//! keys; the JWKS is served by a small axum server on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use runvoy_domain::clock::{Clock, SystemClock, rfc3339};
use runvoy_domain::hub::LogHub;
use runvoy_domain::ports::*;
use runvoy_domain::processor::Processor;
use runvoy_domain::testing::{FakeCompute, FakeLogSource, MemStore, execution, exit_info};
use runvoy_domain::{Execution, LogRecord, Status, User};
use runvoy_events_gcp::oidc::{OidcConfig, Verifier};
use runvoy_events_gcp::{PushAuth, PushConfig, PushState, router};
use runvoy_proto::ReconcileReport;
use serde_json::{Value, json};
use tower::ServiceExt;

const EXEC: &str = "0123456789abcdef0123456789abcdef";
const AUD: &str = "https://runvoy.example.com/push";
const SA: &str = "runvoy-push@my-project.iam.gserviceaccount.com";
const TEST_KEY: &[u8] = include_bytes!("fixtures/test-key.pem");
const OTHER_KEY: &[u8] = include_bytes!("fixtures/other-key.pem");

/// The in-memory store, counting `append_logs` calls (the store writes of records).
#[derive(Default)]
struct CountingStore {
    inner: MemStore,
    appends: AtomicU64,
}

#[async_trait]
impl Store for CountingStore {
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError> {
        self.inner.create_execution(e).await
    }
    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &Lock,
        now_ms: i64,
    ) -> Result<LockedCreate, StoreError> {
        self.inner.create_execution_locked(e, lock, now_ms).await
    }
    async fn get_lock(&self, name: &str) -> Result<Option<Lock>, StoreError> {
        self.inner.get_lock(name).await
    }
    async fn list_locks(&self) -> Result<Vec<Lock>, StoreError> {
        self.inner.list_locks().await
    }
    async fn renew_lock(&self, name: &str, id: &str, until_ms: i64) -> Result<bool, StoreError> {
        self.inner.renew_lock(name, id, until_ms).await
    }
    async fn release_lock(&self, name: &str, id: &str) -> Result<bool, StoreError> {
        self.inner.release_lock(name, id).await
    }
    async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        self.inner.get_execution(id).await
    }
    async fn list_executions(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), StoreError> {
        self.inner.list_executions(q).await
    }
    async fn list_unsettled(&self) -> Result<Vec<Execution>, StoreError> {
        self.inner.list_unsettled().await
    }
    async fn update_execution(&self, e: &Execution) -> Result<bool, StoreError> {
        self.inner.update_execution(e).await
    }
    async fn append_logs(&self, id: &str, records: &[LogRecord]) -> Result<(), StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append_logs(id, records).await
    }
    async fn read_logs(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.inner.read_logs(id, after, limit).await
    }
    async fn log_stats(&self, id: &str) -> Result<LogStats, StoreError> {
        self.inner.log_stats(id).await
    }
    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        self.inner.create_user(u).await
    }
    async fn user_by_key_hash(&self, h: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_key_hash(h).await
    }
    async fn user_by_email(&self, e: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_email(e).await
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        self.inner.count_users().await
    }
    async fn touch_user(&self, e: &str, at: i64) -> Result<(), StoreError> {
        self.inner.touch_user(e, at).await
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.inner.list_users().await
    }
    async fn create_user_with_claim(&self, u: &User, c: &Claim) -> Result<(), StoreError> {
        self.inner.create_user_with_claim(u, c).await
    }
    async fn redeem_claim(
        &self,
        t: &str,
        k: &str,
        now: i64,
        r: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        self.inner.redeem_claim(t, k, now, r).await
    }
    async fn update_user(
        &self,
        e: &str,
        c: &UserChange,
        r: &str,
    ) -> Result<UserUpdate, StoreError> {
        self.inner.update_user(e, c, r).await
    }
    async fn purge_unclaimed(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.purge_unclaimed(now).await
    }
    async fn users_by_request(&self, r: &str) -> Result<Vec<User>, StoreError> {
        self.inner.users_by_request(r).await
    }
    async fn executions_by_request(&self, r: &str) -> Result<Vec<Execution>, StoreError> {
        self.inner.executions_by_request(r).await
    }
    async fn append_server_logs(&self, l: &[ServerLogLine], keep: u64) -> Result<(), StoreError> {
        self.inner.append_server_logs(l, keep).await
    }
    async fn server_logs(&self, r: &str, limit: usize) -> Result<Vec<ServerLogLine>, StoreError> {
        self.inner.server_logs(r, limit).await
    }
    async fn save_report(&self, r: &ReconcileReport, keep: usize) -> Result<(), StoreError> {
        self.inner.save_report(r, keep).await
    }
    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError> {
        self.inner.recent_reports(limit).await
    }
    async fn register_image(
        &self,
        i: &runvoy_domain::Image,
        d: MakeDefault,
    ) -> Result<Registered, StoreError> {
        self.inner.register_image(i, d).await
    }
    async fn get_image(&self, id: &str) -> Result<Option<runvoy_domain::Image>, StoreError> {
        self.inner.get_image(id).await
    }
    async fn list_images(&self) -> Result<Vec<runvoy_domain::Image>, StoreError> {
        self.inner.list_images().await
    }
    async fn delete_image(&self, id: &str) -> Result<Option<runvoy_domain::Image>, StoreError> {
        self.inner.delete_image(id).await
    }
    async fn create_secret(&self, s: &runvoy_domain::Secret) -> Result<(), StoreError> {
        self.inner.create_secret(s).await
    }
    async fn get_secret(&self, name: &str) -> Result<Option<runvoy_domain::Secret>, StoreError> {
        self.inner.get_secret(name).await
    }
    async fn list_secrets(&self) -> Result<Vec<runvoy_domain::Secret>, StoreError> {
        self.inner.list_secrets().await
    }
    async fn update_secret(
        &self,
        name: &str,
        patch: &runvoy_domain::SecretPatch,
    ) -> Result<Option<runvoy_domain::Secret>, StoreError> {
        self.inner.update_secret(name, patch).await
    }
    async fn delete_secret(&self, name: &str) -> Result<Option<runvoy_domain::Secret>, StoreError> {
        self.inner.delete_secret(name).await
    }
    async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
        self.inner.probe_write(now).await
    }
}

/// Serves a JWKS on port 0; the set can be replaced, fetches are counted.
struct Jwks {
    url: String,
    set: Arc<std::sync::Mutex<Value>>,
    fetches: Arc<AtomicU64>,
    status: Arc<std::sync::Mutex<StatusCode>>,
}

fn jwk(pem: &[u8], kid: &str) -> Value {
    let key = EncodingKey::from_rsa_pem(pem).unwrap();
    let mut j = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    j.common.key_id = Some(kid.into());
    serde_json::to_value(j).unwrap()
}

async fn serve_jwks(keys: Vec<Value>) -> Jwks {
    let set = Arc::new(std::sync::Mutex::new(json!({ "keys": keys })));
    let fetches = Arc::new(AtomicU64::new(0));
    let status = Arc::new(std::sync::Mutex::new(StatusCode::OK));
    let (s, f, st) = (set.clone(), fetches.clone(), status.clone());
    let app = Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let (s, f, st) = (s.clone(), f.clone(), st.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                let code = *st.lock().unwrap();
                (code, axum::Json(s.lock().unwrap().clone()))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    // The set is valid JSON for `JwkSet`.
    let _: JwkSet = serde_json::from_value(set.lock().unwrap().clone()).unwrap();
    Jwks {
        url,
        set,
        fetches,
        status,
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({
        "aud": AUD,
        "azp": "113774264463038321964",
        "email": SA,
        "sub": "113774264463038321964",
        "email_verified": true,
        "iat": now_s(),
        "exp": now_s() + 3600,
        "iss": "https://accounts.google.com"
    })
}

fn sign(claims: &Value, pem: &[u8], kid: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
}

struct Harness {
    store: Arc<CountingStore>,
    compute: Arc<FakeCompute>,
    state: PushState,
    app: Router,
    jwks: Jwks,
    token: String,
}

async fn harness() -> Harness {
    let jwks = serve_jwks(vec![jwk(TEST_KEY, "k1")]).await;
    let store = Arc::new(CountingStore::default());
    let compute = Arc::new(FakeCompute::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let processor = Arc::new(Processor::new(
        store.clone(),
        compute.clone(),
        Arc::new(FakeLogSource::new()),
        Arc::new(LogHub::new()),
        clock.clone(),
        10,
    ));
    let verifier = Verifier::new(OidcConfig {
        audience: AUD.into(),
        service_account: SA.into(),
        jwks_url: jwks.url.clone(),
        min_refresh: Duration::ZERO,
    });
    let mut cfg = PushConfig::new(PushAuth::Oidc(verifier));
    cfg.commit.window = Duration::from_millis(20);
    let state = PushState::new(processor, store.clone(), clock.clone(), cfg);
    store
        .create_execution(&execution(EXEC, clock.now_ms()))
        .await
        .unwrap();
    compute.set(EXEC, ComputeState::Running);
    Harness {
        app: router(state.clone()),
        store,
        compute,
        state,
        jwks,
        token: sign(&claims(), TEST_KEY, "k1"),
    }
}

fn entry(payload: Value) -> Value {
    json!({
        "insertId": "6787d8b6000aef76df59bb52",
        "jsonPayload": payload,
        "resource": {"type": "cloud_run_job", "labels": {
            "job_name": "runvoy-runner", "location": "us-central1", "project_id": "my-project"}},
        "timestamp": "2026-01-15T15:48:06.716662Z",
        "labels": {
            "instanceId": "00ca3695d2",
            "run.googleapis.com/execution_name": "runvoy-runner-abcde",
            "run.googleapis.com/task_index": "0",
            "run.googleapis.com/task_attempt": "0"
        },
        "logName": "projects/my-project/logs/run.googleapis.com%2Fstdout",
        "receiveTimestamp": "2026-01-15T15:48:06.800000000Z"
    })
}

fn log_entry(seq: u64) -> Value {
    entry(
        json!({"runvoy": "log", "exec": EXEC, "seq": seq, "stream": "stdout", "message": format!("line {seq}")}),
    )
}

fn envelope(message_id: &str, data: &Value, published_ms: i64) -> Value {
    json!({
        "message": {
            "attributes": {"logging.googleapis.com/timestamp": "2026-01-15T15:48:06.716662Z"},
            "data": base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(data).unwrap()),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": rfc3339(published_ms),
            "publish_time": rfc3339(published_ms)
        },
        "subscription": "projects/my-project/subscriptions/runvoy-logs-push",
        "deliveryAttempt": 1
    })
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

async fn post(
    app: &Router,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut r = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(r.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

impl Harness {
    async fn push(&self, body: &Value) -> (StatusCode, Value) {
        post(
            &self.app,
            "/push/pubsub/logs",
            Some(&self.token),
            &[],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }
    fn seqs(&self) -> Vec<u64> {
        self.store
            .inner
            .logs_of(EXEC)
            .iter()
            .map(|r| r.seq)
            .collect()
    }
    fn appends(&self) -> u64 {
        self.store.appends.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_for_one_execution_are_group_committed() {
    let h = Arc::new(harness().await);
    const N: u64 = 300;
    let mut tasks = Vec::new();
    for seq in 1..=N {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.push(&envelope(&format!("m{seq}"), &log_entry(seq), now_ms()))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::NO_CONTENT);
    }
    assert_eq!(h.seqs(), (1..=N).collect::<Vec<_>>());
    let writes = h.appends();
    eprintln!(
        "{N} pushes, {writes} store writes, {} batches",
        h.state.batches()
    );
    assert!(
        writes * 10 <= N,
        "{writes} store writes for {N} pushes: not batched"
    );
    assert_eq!(writes, h.state.batches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_and_reordering_store_every_record_once() {
    let h = harness().await;
    // Newest first, then every message again (same ids), then the same records under new ids
    // (a sink may export an entry twice).
    for seq in (1..=5).rev() {
        let (s, _) = h
            .push(&envelope(&format!("m{seq}"), &log_entry(seq), now_ms()))
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    let writes = h.appends();
    assert_eq!(writes, 5);
    for seq in 1..=5 {
        let (s, _) = h
            .push(&envelope(&format!("m{seq}"), &log_entry(seq), now_ms()))
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(h.appends(), writes, "a redelivered messageId wrote again");
    for seq in 1..=5 {
        let (s, _) = h
            .push(&envelope(&format!("again{seq}"), &log_entry(seq), now_ms()))
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(h.seqs(), vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_refused_with_stable_codes_and_change_nothing() {
    let h = harness().await;
    let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"not json".to_vec(), StatusCode::BAD_REQUEST, "PUSH_MALFORMED_ENVELOPE"),
        (br#"{"message":{"data":"e30="}}"#.to_vec(), StatusCode::BAD_REQUEST, "PUSH_MALFORMED_ENVELOPE"),
        (br#"{"message":{"data":"%%%","messageId":"p1"}}"#.to_vec(), StatusCode::BAD_REQUEST, "PUSH_UNDECODABLE_DATA"),
        (
            serde_json::to_vec(&json!({"message": {"data": enc(b"[1,2]"), "messageId": "p2"}})).unwrap(),
            StatusCode::BAD_REQUEST,
            "PUSH_UNDECODABLE_DATA",
        ),
        (
            serde_json::to_vec(&envelope("p3", &entry(json!({"runvoy": "log", "exec": EXEC, "seq": "x"})), now_ms())).unwrap(),
            StatusCode::BAD_REQUEST,
            "PUSH_BAD_RECORD",
        ),
        (
            serde_json::to_vec(&envelope("p4", &json!({"textPayload": "hello", "logName": "projects/p/logs/run.googleapis.com%2Fstdout"}), now_ms())).unwrap(),
            StatusCode::BAD_REQUEST,
            "PUSH_UNSUPPORTED_ENTRY",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v) = post(
            &h.app,
            "/push/pubsub/logs",
            Some(&h.token),
            &[],
            body.clone(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str().unwrap_or("")),
            (status, code),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // A record of an execution the store does not have: retried within the grace period after
    // publication, refused for good after it.
    let other = "ffffffffffffffffffffffffffffffff";
    let rec = entry(
        json!({"runvoy": "log", "exec": other, "seq": 1, "stream": "stdout", "message": "x"}),
    );
    let (s, v) = h.push(&envelope("u1", &rec, now_ms())).await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "PUSH_EXECUTION_NOT_YET_KNOWN"
        )
    );
    let (s, v) = h.push(&envelope("u2", &rec, now_ms() - 3_600_000)).await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "PUSH_UNKNOWN_EXECUTION")
    );
    // A body over the limit.
    let big = vec![b' '; runvoy_events_gcp::routes::MAX_PUSH_BODY + 1];
    let (s, _) = post(&h.app, "/push/pubsub/logs", Some(&h.token), &[], big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.appends(), 0);
    assert!(h.store.inner.logs_of(other).is_empty() && h.seqs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_and_the_redelivery_is_stored() {
    let h = harness().await;
    h.store.inner.set_down(true);
    let (s, v) = h.push(&envelope("m1", &log_entry(1), now_ms())).await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
    );
    h.store.inner.set_down(false);
    // Not remembered as handled: the redelivery (same id) is stored.
    let (s, _) = h.push(&envelope("m1", &log_entry(1), now_ms())).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h.seqs(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_record_and_cloud_run_entries_reconcile_the_execution() {
    let h = harness().await;
    for seq in 1..=2 {
        assert_eq!(
            h.push(&envelope(&format!("m{seq}"), &log_entry(seq), now_ms()))
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    // Cloud Run's exit line arrives first: a hint; compute still says running.
    let sys = json!({
        "textPayload": "Container called exit(0).",
        "insertId": "6787d8b6000b161a0fd98a18",
        "resource": {"type": "cloud_run_job", "labels": {"location": "us-central1", "project_id": "my-project", "job_name": "runvoy-runner"}},
        "timestamp": "2026-01-15T15:48:06.726482Z",
        "severity": "INFO",
        "labels": {"run.googleapis.com/execution_name": "runvoy-runner-abcde", "container_name": "worker",
                   "run.googleapis.com/task_index": "0", "run.googleapis.com/task_attempt": "0"},
        "logName": "projects/my-project/logs/run.googleapis.com%2Fvarlog%2Fsystem"
    });
    assert_eq!(
        h.push(&envelope("s1", &sys, now_ms())).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.store.get_execution(EXEC).await.unwrap().unwrap().status,
        Status::Running
    );
    // An entry about a Cloud Run execution no record named: acknowledged and dropped (a
    // refused hint would slow the subscription's pushes), fresh or old.
    let mut stranger = sys.clone();
    stranger["labels"]["run.googleapis.com/execution_name"] = "someone-else-zzzzz".into();
    let before = h.store.get_execution(EXEC).await.unwrap().unwrap();
    for (id, published) in [("s2", now_ms()), ("s3", now_ms() - 3_600_000)] {
        let (s, _) = h.push(&envelope(id, &stranger, published)).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(h.store.get_execution(EXEC).await.unwrap().unwrap(), before);

    // A record for another execution written by this Cloud Run execution is forged.
    let other = "ffffffffffffffffffffffffffffffff";
    h.store
        .create_execution(&execution(other, now_ms()))
        .await
        .unwrap();
    let forged = entry(
        json!({"runvoy": "log", "exec": other, "seq": 1, "stream": "stdout", "message": "forged"}),
    );
    let (s, v) = h.push(&envelope("f1", &forged, now_ms())).await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "PUSH_FOREIGN_RECORD")
    );
    assert!(h.store.inner.logs_of(other).is_empty());

    // The command ends; the final record reconciles with compute's state.
    h.compute.set(
        EXEC,
        ComputeState::Exited(ComputeExit {
            runner: Some(exit_info(3, 2)),
            process_exit_code: None,
            failure: None,
        }),
    );
    let exit = entry(json!({"runvoy": "exit", "exec": EXEC, "seq": 3, "exit_code": 3, "lines": 2}));
    assert_eq!(
        h.push(&envelope("x", &exit, now_ms())).await.0,
        StatusCode::NO_CONTENT
    );
    let e = h.store.get_execution(EXEC).await.unwrap().unwrap();
    assert_eq!(
        (e.status, e.exit_code, e.logs_complete),
        (Status::Failed, Some(3), true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventarc_audit_and_message_published_events_and_the_scheduler_sweep() {
    let h = harness().await;
    let ce = |kind: &'static str, id: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-type", kind),
            (
                "ce-source",
                "//pubsub.googleapis.com/projects/my-project/topics/runvoy-logs",
            ),
            ("ce-id", id),
            ("ce-time", "2026-01-15T15:48:07.012Z"),
        ]
    };
    // messagePublished: the push envelope as event data; the record is stored.
    let body = serde_json::to_vec(&envelope("e1", &log_entry(1), now_ms())).unwrap();
    let (s, _) = post(
        &h.app,
        "/push/eventarc",
        Some(&h.token),
        &ce("google.cloud.pubsub.topic.v1.messagePublished", "e1"),
        body,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h.seqs(), vec![1]);

    // An audit entry naming the execution (known from the record above): a hint.
    h.compute.set(
        EXEC,
        ComputeState::Exited(ComputeExit {
            runner: Some(exit_info(0, 1)),
            process_exit_code: None,
            failure: None,
        }),
    );
    let audit = json!({
        "logName": "projects/my-project/logs/cloudaudit.googleapis.com%2Fsystem_event",
        "resource": {"type": "cloud_run_job", "labels": {"job_name": "runvoy-runner", "location": "us-central1", "project_id": "my-project"}},
        "protoPayload": {"methodName": "/Jobs.RunJob", "serviceName": "run.googleapis.com",
                         "resourceName": "namespaces/my-project/executions/runvoy-runner-abcde"},
        "timestamp": "2026-01-15T15:50:00Z"
    });
    let (s, _) = post(
        &h.app,
        "/push/eventarc",
        Some(&h.token),
        &ce("google.cloud.audit.log.v1.written", "a1"),
        serde_json::to_vec(&audit).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let e = h.store.get_execution(EXEC).await.unwrap().unwrap();
    assert_eq!(
        (e.status, e.exit_code, e.logs_complete),
        (Status::Succeeded, Some(0), true)
    );

    // Not a CloudEvent / an unknown type.
    let (s, v) = post(
        &h.app,
        "/push/eventarc",
        Some(&h.token),
        &[],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "PUSH_BAD_CLOUDEVENT")
    );
    let (s, v) = post(
        &h.app,
        "/push/eventarc",
        Some(&h.token),
        &ce("google.cloud.storage.object.v1.finalized", "o1"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "PUSH_UNSUPPORTED_EVENT")
    );

    // Cloud Scheduler: one sweep, its report in the answer.
    let (s, v) = post(
        &h.app,
        "/push/scheduler/reconcile",
        Some(&h.token),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["report"]["trigger"], "scheduler");
    let (s, _) = post(&h.app, "/push/scheduler/reconcile", None, &[], Vec::new()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_oidc_failure_is_401_and_nothing_is_stored() {
    let h = harness().await;
    let mut c = claims();
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let mut no_email_verified = claims();
    no_email_verified
        .as_object_mut()
        .unwrap()
        .remove("email_verified");
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let hs256 = jsonwebtoken::encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let forged_payload = {
        // A valid token whose claims were swapped for other ones: the signature no longer matches.
        let good = sign(&claims(), TEST_KEY, "k1");
        let parts: Vec<&str> = good.split('.').collect();
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&with("email", "attacker@evil.example".into())).unwrap());
        format!("{}.{}.{}", parts[0], evil, parts[2])
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not-a-jwt".into())),
        (
            "signed by another key",
            Some(sign(&claims(), OTHER_KEY, "k1")),
        ),
        ("unknown kid", Some(sign(&claims(), OTHER_KEY, "k2"))),
        ("claims swapped", Some(forged_payload)),
        ("HS256", Some(hs256)),
        (
            "expired",
            Some(sign(&with("exp", json!(now_s() - 3600)), TEST_KEY, "k1")),
        ),
        ("no exp", Some(sign(&no_exp, TEST_KEY, "k1"))),
        (
            "wrong audience",
            Some(sign(
                &with("aud", "https://elsewhere.example".into()),
                TEST_KEY,
                "k1",
            )),
        ),
        (
            "wrong issuer",
            Some(sign(
                &with("iss", "https://evil.example".into()),
                TEST_KEY,
                "k1",
            )),
        ),
        (
            "wrong email",
            Some(sign(
                &with("email", "someone@my-project.iam.gserviceaccount.com".into()),
                TEST_KEY,
                "k1",
            )),
        ),
        (
            "email not verified",
            Some(sign(&with("email_verified", false.into()), TEST_KEY, "k1")),
        ),
        (
            "email_verified missing",
            Some(sign(&no_email_verified, TEST_KEY, "k1")),
        ),
    ];
    let body = serde_json::to_vec(&envelope("m1", &log_entry(1), now_ms())).unwrap();
    for (name, token) in cases {
        let (s, v) = post(
            &h.app,
            "/push/pubsub/logs",
            token.as_deref(),
            &[],
            body.clone(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str().unwrap_or("")),
            (StatusCode::UNAUTHORIZED, "PUSH_UNAUTHENTICATED"),
            "{name}"
        );
    }
    // Not a bearer scheme.
    let (s, _) = post(
        &h.app,
        "/push/pubsub/logs",
        None,
        &[("authorization", "Basic dXNlcjpwYXNz")],
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.appends(), 0);
    // The short issuer spelling is Google's too.
    c["iss"] = "accounts.google.com".into();
    let (s, _) = post(
        &h.app,
        "/push/pubsub/logs",
        Some(&sign(&c, TEST_KEY, "k1")),
        &[],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h.seqs(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_are_cached_refreshed_on_an_unknown_kid_and_their_outage_is_503() {
    let h = harness().await;
    let body =
        |id: &str, seq: u64| serde_json::to_vec(&envelope(id, &log_entry(seq), now_ms())).unwrap();
    for seq in 1..=3 {
        let (s, _) = post(
            &h.app,
            "/push/pubsub/logs",
            Some(&h.token),
            &[],
            body(&format!("m{seq}"), seq),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(h.jwks.fetches.load(Ordering::SeqCst), 1, "keys are cached");
    // Google rotates: a token with a new kid makes the verifier fetch the set again.
    *h.jwks.set.lock().unwrap() = json!({"keys": [jwk(TEST_KEY, "k1"), jwk(OTHER_KEY, "k2")]});
    let rotated = sign(&claims(), OTHER_KEY, "k2");
    let (s, _) = post(
        &h.app,
        "/push/pubsub/logs",
        Some(&rotated),
        &[],
        body("m4", 4),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h.jwks.fetches.load(Ordering::SeqCst), 2);

    // A verifier that cannot fetch any key answers 503 (retried), not 401.
    *h.jwks.status.lock().unwrap() = StatusCode::INTERNAL_SERVER_ERROR;
    let v = Verifier::new(OidcConfig {
        audience: AUD.into(),
        service_account: SA.into(),
        jwks_url: h.jwks.url.clone(),
        min_refresh: Duration::ZERO,
    });
    match v.verify(Some(&format!("Bearer {}", h.token))).await {
        Err(runvoy_events_gcp::oidc::AuthError::KeysUnavailable(_)) => {}
        other => panic!("{other:?}"),
    }
    // The verifier that has keys keeps using them while the endpoint fails.
    let (s, _) = post(
        &h.app,
        "/push/pubsub/logs",
        Some(&h.token),
        &[],
        body("m5", 5),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(h.seqs(), vec![1, 2, 3, 4, 5]);
}
