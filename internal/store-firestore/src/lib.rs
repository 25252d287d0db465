//! Firestore implementation of [`runvoy_domain::ports::Store`].
//!
//! It talks Firestore's gRPC API through the `firestore` crate's client (authentication, the
//! emulator when `FIRESTORE_EMULATOR_HOST` is set, the database id) and builds the requests
//! itself, so that every write is one it chose and counted.
//!
//! Layout, each collection name behind a configurable prefix:
//!
//! * `executions/{id}`: one document per execution; updates are transactions that compare
//!   `version`.
//! * `executions/{id}/logs/{first_seq}`: log records in batch documents of at most
//!   [`RECORDS_PER_DOC`] records and [`MAX_DOC_BYTES`] bytes. The seq ranges of an execution's
//!   batches never overlap, so reading in seq order is reading batches in `last_seq` order.
//! * `users/{email}`, `user_keys/{key_hash}` (keeps key hashes unique), `claims/{token_hash}`.
//! * `locks/{name}`: the execution holding each lock and its lease; taken in the transaction
//!   that creates the execution.
//! * `images/{image_id}` and `meta/default_image` (the id of the default image): every change
//!   of the default is a transaction that reads and writes that one document, so two
//!   concurrent changes conflict and one retries, and there is never more than one default.
//! * `secrets/{name}`: a secret's metadata and its value sealed by the cipher (the JSON of
//!   `Sealed` in `sealed`); created with an exists-not precondition, so a duplicate writes nothing.
//! * `server_logs/{order}`, `reports/{order}`, `meta/write_probe`.
//!
//! Unclaimed users, their key documents and claims carry `expires_at` (a timestamp) for a TTL
//! policy; the code never relies on the TTL having run and checks expiry itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use async_trait::async_trait;
use firestore::gcloud_sdk::google::firestore::v1::{
    self as pb, BeginTransactionRequest, CommitRequest, Document, DocumentMask, GetDocumentRequest,
    Precondition, RollbackRequest, RunQueryRequest, StructuredQuery, Value, Write,
    precondition::ConditionType, run_query_request, structured_query as sq, value::ValueType,
    write::Operation,
};
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::{Code, Status as GrpcStatus};
use firestore::{FirestoreDb, FirestoreDbOptions};
use runvoy_domain::ports::{
    Claim, ClaimOutcome, ListQuery, Lock, LockedCreate, LogStats, MakeDefault, Registered,
    ServerLogLine, Store, StoreError, USED_CLAIM_KEEP_MS, UserChange, UserUpdate,
};
use runvoy_domain::{Execution, Image, LogRecord, Role, Secret, SecretPatch, Status, Stream, User};
use runvoy_proto::ReconcileReport;

/// Most records in one log batch document: the write goal is one document per 500 lines.
pub const RECORDS_PER_DOC: usize = 500;
/// Most estimated bytes in one log batch document (Firestore's limit is 1 MiB, 1,048,572).
pub const MAX_DOC_BYTES: usize = 1_000_000;
/// Most writes in one commit (Firestore's limit is 500).
const WRITES_PER_COMMIT: usize = 500;
/// Attempts of a transaction that Firestore aborted for contention.
const TX_ATTEMPTS: u32 = 10;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirestoreConfig {
    /// Google Cloud project id (any id for the emulator).
    pub project_id: String,
    /// Database id, `(default)` unless set.
    pub database_id: String,
    /// Prepended to every top-level collection name, so several deployments (or tests) can
    /// share one database.
    pub collection_prefix: String,
}

/// Database id used when none is configured.
pub const DEFAULT_DATABASE: &str = "(default)";
/// Collection prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "runvoy_";

impl FirestoreConfig {
    /// Reads `RUNVOY_GCP_PROJECT_ID` (required), `RUNVOY_GCP_FIRESTORE_DATABASE` and
    /// `RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(FirestoreConfig {
            project_id: var("RUNVOY_GCP_PROJECT_ID")
                .ok_or(ConfigError::Missing("RUNVOY_GCP_PROJECT_ID"))?,
            database_id: var("RUNVOY_GCP_FIRESTORE_DATABASE")
                .unwrap_or_else(|| DEFAULT_DATABASE.into()),
            collection_prefix: var("RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX")
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
        })
    }
}

/// A configuration or connection problem at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// The collection prefix cannot be part of a collection id.
    #[error("invalid collection prefix {0:?}: it may not contain '/' or start with '__'")]
    BadPrefix(String),
    /// The client could not be built.
    #[error("cannot connect to Firestore: {0}")]
    Connect(String),
}

/// The Firestore store.
#[derive(Clone)]
pub struct FirestoreStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: FirestoreDb,
    /// `projects/P/databases/D`.
    database: String,
    /// `projects/P/databases/D/documents`.
    root: String,
    prefix: String,
    /// Document writes sent in committed requests (each write Firestore bills).
    writes: AtomicU64,
    /// Last order key handed out for server logs and reports (kept increasing in-process).
    last_order: AtomicI64,
    /// One lock per execution whose records are being appended: this process's appends to one
    /// execution (pushes, repairs, the local tailer) take turns instead of aborting each other's
    /// transactions, which read the same log batches.
    appending: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// On Google's emulator only: its lock manager has no deadlock prevention (two
    /// transactions that read a document and then both write it wait for each other until its
    /// lock timeout), and it runs one read-write view at a time anyway, so this process runs
    /// its transactions one after another there.
    emulator_turns: Option<tokio::sync::Mutex<()>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn grpc(what: &str, s: GrpcStatus) -> StoreError {
    StoreError::Unavailable(format!("firestore {what}: {:?}: {}", s.code(), s.message()))
}

// ---- values -------------------------------------------------------------------------------

fn v(t: ValueType) -> Value {
    Value {
        value_type: Some(t),
    }
}
fn int(n: i64) -> Value {
    v(ValueType::IntegerValue(n))
}
fn uint(n: u64) -> Value {
    int(i64::try_from(n).unwrap_or(i64::MAX))
}
fn string(s: &str) -> Value {
    v(ValueType::StringValue(s.to_owned()))
}
fn boolean(b: bool) -> Value {
    v(ValueType::BooleanValue(b))
}
fn null() -> Value {
    v(ValueType::NullValue(0))
}
fn opt_int(n: Option<i64>) -> Value {
    n.map_or_else(null, int)
}
fn timestamp(ms: i64) -> Value {
    v(ValueType::TimestampValue(ts(ms)))
}

fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

type Fields = HashMap<String, Value>;

fn get_int(f: &Fields, k: &str) -> Option<i64> {
    match f.get(k)?.value_type.as_ref()? {
        ValueType::IntegerValue(n) => Some(*n),
        _ => None,
    }
}
fn get_str(f: &Fields, k: &str) -> String {
    match f.get(k).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}
fn get_opt_str(f: &Fields, k: &str) -> Option<String> {
    match f.get(k)?.value_type.as_ref()? {
        ValueType::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}
fn get_bool(f: &Fields, k: &str) -> bool {
    matches!(
        f.get(k).and_then(|v| v.value_type.as_ref()),
        Some(ValueType::BooleanValue(true))
    )
}
fn get_array<'a>(f: &'a Fields, k: &str) -> &'a [Value] {
    match f.get(k).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::ArrayValue(a)) => &a.values,
        _ => &[],
    }
}

fn exec_fields(e: &Execution) -> Fields {
    let mut f = Fields::new();
    f.insert("id".into(), string(&e.id));
    f.insert("created_by".into(), string(&e.created_by));
    f.insert("command".into(), string(&e.command));
    f.insert(
        "argv".into(),
        e.argv.as_ref().map_or_else(null, |a| {
            v(ValueType::ArrayValue(pb::ArrayValue {
                values: a.iter().map(|w| string(w)).collect(),
            }))
        }),
    );
    f.insert("image".into(), string(&e.image));
    f.insert("status".into(), string(e.status.as_str()));
    f.insert("exit_code".into(), opt_int(e.exit_code.map(i64::from)));
    f.insert("created_at_ms".into(), int(e.created_at_ms));
    f.insert("completed_at_ms".into(), opt_int(e.completed_at_ms));
    f.insert(
        "timeout_secs".into(),
        e.timeout_secs.map_or_else(null, uint),
    );
    f.insert("timed_out".into(), boolean(e.timed_out));
    f.insert(
        "failure_reason".into(),
        e.failure_reason.as_deref().map_or_else(null, string),
    );
    f.insert("logs_complete".into(), boolean(e.logs_complete));
    f.insert("log_lines".into(), e.log_lines.map_or_else(null, uint));
    f.insert("dropped_log_lines".into(), uint(e.dropped_log_lines));
    f.insert("dropped_log_bytes".into(), uint(e.dropped_log_bytes));
    f.insert(
        "kill_requested_at_ms".into(),
        opt_int(e.kill_requested_at_ms),
    );
    f.insert(
        "stopped_by".into(),
        e.stopped_by.as_deref().map_or_else(null, string),
    );
    f.insert(
        "created_by_request_id".into(),
        string(&e.created_by_request_id),
    );
    f.insert(
        "modified_by_request_id".into(),
        string(&e.modified_by_request_id),
    );
    f.insert("compute_platform".into(), string(&e.compute_platform));
    f.insert("lock".into(), e.lock.as_deref().map_or_else(null, string));
    f.insert("version".into(), uint(e.version));
    f
}

fn lock_fields(l: &Lock) -> Fields {
    let mut f = Fields::new();
    f.insert("name".into(), string(&l.name));
    f.insert("execution_id".into(), string(&l.execution_id));
    f.insert("holder".into(), string(&l.holder));
    f.insert("acquired_at_ms".into(), int(l.acquired_at_ms));
    f.insert("expires_at_ms".into(), int(l.expires_at_ms));
    f
}

fn lock_from(f: &Fields) -> Lock {
    Lock {
        name: get_str(f, "name"),
        execution_id: get_str(f, "execution_id"),
        holder: get_str(f, "holder"),
        acquired_at_ms: get_int(f, "acquired_at_ms").unwrap_or(0),
        expires_at_ms: get_int(f, "expires_at_ms").unwrap_or(0),
    }
}

fn exec_from(f: &Fields) -> Execution {
    Execution {
        id: get_str(f, "id"),
        created_by: get_str(f, "created_by"),
        command: get_str(f, "command"),
        argv: match f.get("argv").and_then(|v| v.value_type.as_ref()) {
            Some(ValueType::ArrayValue(a)) => Some(
                a.values
                    .iter()
                    .map(|w| match &w.value_type {
                        Some(ValueType::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    })
                    .collect(),
            ),
            _ => None,
        },
        image: get_str(f, "image"),
        status: Status::parse(&get_str(f, "status")).unwrap_or(Status::Failed),
        exit_code: get_int(f, "exit_code").map(|n| n as i32),
        created_at_ms: get_int(f, "created_at_ms").unwrap_or(0),
        completed_at_ms: get_int(f, "completed_at_ms"),
        timeout_secs: get_int(f, "timeout_secs").map(|n| n as u64),
        timed_out: get_bool(f, "timed_out"),
        failure_reason: get_opt_str(f, "failure_reason"),
        logs_complete: get_bool(f, "logs_complete"),
        log_lines: get_int(f, "log_lines").map(|n| n as u64),
        dropped_log_lines: get_int(f, "dropped_log_lines").unwrap_or(0) as u64,
        dropped_log_bytes: get_int(f, "dropped_log_bytes").unwrap_or(0) as u64,
        kill_requested_at_ms: get_int(f, "kill_requested_at_ms"),
        stopped_by: get_opt_str(f, "stopped_by"),
        created_by_request_id: get_str(f, "created_by_request_id"),
        modified_by_request_id: get_str(f, "modified_by_request_id"),
        compute_platform: get_str(f, "compute_platform"),
        lock: get_opt_str(f, "lock"),
        version: get_int(f, "version").unwrap_or(0) as u64,
    }
}

fn user_fields(u: &User) -> Fields {
    let mut f = Fields::new();
    f.insert("email".into(), string(&u.email));
    f.insert("role".into(), string(u.role.as_str()));
    f.insert("key_hash".into(), string(&u.key_hash));
    f.insert("created_at_ms".into(), int(u.created_at_ms));
    f.insert("revoked".into(), boolean(u.revoked));
    f.insert("last_used_ms".into(), opt_int(u.last_used_ms));
    f.insert("claim_expires_at_ms".into(), opt_int(u.claim_expires_at_ms));
    if let Some(at) = u.claim_expires_at_ms {
        f.insert("expires_at".into(), timestamp(at));
    }
    f.insert("created_by".into(), string(&u.created_by));
    f.insert(
        "created_by_request_id".into(),
        string(&u.created_by_request_id),
    );
    f.insert(
        "modified_by_request_id".into(),
        string(&u.modified_by_request_id),
    );
    f
}

fn user_from(f: &Fields) -> User {
    User {
        email: get_str(f, "email"),
        role: Role::parse(&get_str(f, "role")).unwrap_or(Role::Viewer),
        key_hash: get_str(f, "key_hash"),
        created_at_ms: get_int(f, "created_at_ms").unwrap_or(0),
        revoked: get_bool(f, "revoked"),
        last_used_ms: get_int(f, "last_used_ms"),
        claim_expires_at_ms: get_int(f, "claim_expires_at_ms"),
        created_by: get_str(f, "created_by"),
        created_by_request_id: get_str(f, "created_by_request_id"),
        modified_by_request_id: get_str(f, "modified_by_request_id"),
    }
}

/// An image's fields; `is_default` is not one of them (`meta/default_image` says which is).
fn image_fields(i: &Image) -> Fields {
    let mut f = Fields::new();
    f.insert("id".into(), string(&i.id));
    f.insert("image".into(), string(&i.image));
    f.insert("registry".into(), string(&i.registry));
    f.insert("name".into(), string(&i.name));
    f.insert("tag".into(), string(&i.tag));
    f.insert("cpu_millis".into(), i.cpu_millis.map_or_else(null, uint));
    f.insert("memory_mb".into(), i.memory_mb.map_or_else(null, uint));
    f.insert(
        "timeout_secs".into(),
        i.timeout_secs.map_or_else(null, uint),
    );
    f.insert(
        "service_account".into(),
        i.service_account.as_deref().map_or_else(null, string),
    );
    f.insert("created_by".into(), string(&i.created_by));
    f.insert("created_at_ms".into(), int(i.created_at_ms));
    f.insert(
        "created_by_request_id".into(),
        string(&i.created_by_request_id),
    );
    f.insert(
        "modified_by_request_id".into(),
        string(&i.modified_by_request_id),
    );
    f
}

fn image_from(f: &Fields, default_id: Option<&str>) -> Image {
    let id = get_str(f, "id");
    Image {
        is_default: default_id == Some(id.as_str()),
        image: get_str(f, "image"),
        registry: get_str(f, "registry"),
        name: get_str(f, "name"),
        tag: get_str(f, "tag"),
        cpu_millis: get_int(f, "cpu_millis").map(|n| n as u64),
        memory_mb: get_int(f, "memory_mb").map(|n| n as u64),
        timeout_secs: get_int(f, "timeout_secs").map(|n| n as u64),
        service_account: get_opt_str(f, "service_account"),
        created_by: get_str(f, "created_by"),
        created_at_ms: get_int(f, "created_at_ms").unwrap_or(0),
        created_by_request_id: get_str(f, "created_by_request_id"),
        modified_by_request_id: get_str(f, "modified_by_request_id"),
        id,
    }
}

fn secret_fields(s: &Secret) -> Fields {
    let mut f = Fields::new();
    f.insert("name".into(), string(&s.name));
    f.insert("key_name".into(), string(&s.key_name));
    f.insert("description".into(), string(&s.description));
    f.insert(
        "sealed".into(),
        string(&serde_json::to_string(&s.value).unwrap_or_default()),
    );
    f.insert("created_by".into(), string(&s.created_by));
    f.insert("created_at_ms".into(), int(s.created_at_ms));
    f.insert("updated_by".into(), string(&s.updated_by));
    f.insert("updated_at_ms".into(), int(s.updated_at_ms));
    f.insert(
        "created_by_request_id".into(),
        string(&s.created_by_request_id),
    );
    f.insert(
        "modified_by_request_id".into(),
        string(&s.modified_by_request_id),
    );
    f
}

fn secret_from(f: &Fields) -> Result<Secret, StoreError> {
    let name = get_str(f, "name");
    let value = serde_json::from_str(&get_str(f, "sealed")).map_err(|e| {
        StoreError::Unavailable(format!("secret {name}: unreadable sealed value: {e}"))
    })?;
    Ok(Secret {
        key_name: get_str(f, "key_name"),
        description: get_str(f, "description"),
        value,
        created_by: get_str(f, "created_by"),
        created_at_ms: get_int(f, "created_at_ms").unwrap_or(0),
        updated_by: get_str(f, "updated_by"),
        updated_at_ms: get_int(f, "updated_at_ms").unwrap_or(0),
        created_by_request_id: get_str(f, "created_by_request_id"),
        modified_by_request_id: get_str(f, "modified_by_request_id"),
        name,
    })
}

fn active_admin(u: &User) -> bool {
    u.role == Role::Admin && !u.revoked && u.claim_expires_at_ms.is_none()
}

fn record_value(r: &LogRecord) -> Value {
    let mut m = Fields::new();
    m.insert("seq".into(), uint(r.seq));
    m.insert("stream".into(), int(r.stream.code()));
    m.insert("ts_ms".into(), int(r.ts_ms));
    m.insert("data".into(), v(ValueType::BytesValue(r.data.clone())));
    m.insert("eol".into(), boolean(r.eol));
    v(ValueType::MapValue(pb::MapValue { fields: m }))
}

fn record_from(val: &Value) -> Option<LogRecord> {
    let Some(ValueType::MapValue(m)) = val.value_type.as_ref() else {
        return None;
    };
    let f = &m.fields;
    let data = match f.get("data").and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::BytesValue(b)) => b.clone(),
        _ => Vec::new(),
    };
    Some(LogRecord {
        seq: get_int(f, "seq")? as u64,
        stream: Stream::from_code(get_int(f, "stream").unwrap_or(1)),
        ts_ms: get_int(f, "ts_ms").unwrap_or(0),
        data,
        eol: get_bool(f, "eol"),
    })
}

/// Firestore's storage size of one record in a batch: field names plus values, with room to
/// spare (https://firebase.google.com/docs/firestore/storage-size).
fn record_size(r: &LogRecord) -> usize {
    // seq, stream, ts_ms, eol, the names, the map, and the entry in `seqs`.
    64 + r.data.len()
}

/// Splits records (ascending, distinct seqs) into batch documents' worth.
fn chunk(records: &[LogRecord]) -> Vec<&[LogRecord]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        let size = record_size(r);
        if i > start && (i - start == RECORDS_PER_DOC || bytes + size > MAX_DOC_BYTES) {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

fn batch_fields(records: &[LogRecord]) -> Fields {
    let mut f = Fields::new();
    let first = records.first().map_or(0, |r| r.seq);
    let last = records.last().map_or(0, |r| r.seq);
    f.insert("first_seq".into(), uint(first));
    f.insert("last_seq".into(), uint(last));
    f.insert("count".into(), uint(records.len() as u64));
    f.insert(
        "seqs".into(),
        v(ValueType::ArrayValue(pb::ArrayValue {
            values: records.iter().map(|r| uint(r.seq)).collect(),
        })),
    );
    f.insert(
        "records".into(),
        v(ValueType::ArrayValue(pb::ArrayValue {
            values: records.iter().map(record_value).collect(),
        })),
    );
    f
}

/// Metadata of one stored batch.
#[derive(Debug, Clone)]
struct Batch {
    name: String,
    first: u64,
    last: u64,
    count: u64,
    update_time: Option<Timestamp>,
    seqs: Vec<u64>,
}

fn batch_from(d: &Document) -> Batch {
    let f = &d.fields;
    Batch {
        name: d.name.clone(),
        first: get_int(f, "first_seq").unwrap_or(0) as u64,
        last: get_int(f, "last_seq").unwrap_or(0) as u64,
        count: get_int(f, "count").unwrap_or(0) as u64,
        update_time: d.update_time,
        seqs: get_array(f, "seqs")
            .iter()
            .filter_map(|v| match v.value_type {
                Some(ValueType::IntegerValue(n)) => Some(n as u64),
                _ => None,
            })
            .collect(),
    }
}

/// Document ids may not contain '/'; emails rarely do but may.
fn doc_id(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

// ---- requests -----------------------------------------------------------------------------

fn field(path: &str) -> sq::FieldReference {
    sq::FieldReference {
        field_path: path.to_owned(),
    }
}

fn filter(path: &str, op: sq::field_filter::Operator, value: Value) -> sq::Filter {
    sq::Filter {
        filter_type: Some(sq::filter::FilterType::FieldFilter(sq::FieldFilter {
            field: Some(field(path)),
            op: op as i32,
            value: Some(value),
        })),
    }
}

fn and(filters: Vec<sq::Filter>) -> Option<sq::Filter> {
    match filters.len() {
        0 => None,
        1 => filters.into_iter().next(),
        _ => Some(sq::Filter {
            filter_type: Some(sq::filter::FilterType::CompositeFilter(
                sq::CompositeFilter {
                    op: sq::composite_filter::Operator::And as i32,
                    filters,
                },
            )),
        }),
    }
}

fn order(path: &str, desc: bool) -> sq::Order {
    sq::Order {
        field: Some(field(path)),
        direction: if desc {
            sq::Direction::Descending
        } else {
            sq::Direction::Ascending
        } as i32,
    }
}

use sq::field_filter::Operator as Op;

/// A query of one collection.
fn query(collection: &str) -> StructuredQuery {
    StructuredQuery {
        from: vec![sq::CollectionSelector {
            collection_id: collection.to_owned(),
            all_descendants: false,
        }],
        ..Default::default()
    }
}

fn select(q: &mut StructuredQuery, fields: &[&str]) {
    q.select = Some(sq::Projection {
        fields: fields.iter().map(|f| field(f)).collect(),
    });
}

fn upsert(doc: Document) -> Write {
    Write {
        operation: Some(Operation::Update(doc)),
        ..Default::default()
    }
}

fn create(doc: Document) -> Write {
    Write {
        operation: Some(Operation::Update(doc)),
        current_document: Some(Precondition {
            condition_type: Some(ConditionType::Exists(false)),
        }),
        ..Default::default()
    }
}

fn delete(name: String) -> Write {
    Write {
        operation: Some(Operation::Delete(name)),
        ..Default::default()
    }
}

/// What a transaction body decided.
enum Step<T> {
    /// Commit these writes, then answer `T`.
    Commit(Vec<Write>, T),
    /// Write nothing and answer `T`.
    Abort(T),
}

/// Reads inside one transaction.
/// A transaction begun and not yet committed or rolled back; dropping it rolls it back.
struct OpenTx {
    store: FirestoreStore,
    id: Option<Vec<u8>>,
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            rt.spawn(async move { store.rollback(id).await });
        }
    }
}

struct Tx {
    store: FirestoreStore,
    id: Vec<u8>,
    /// Set when a read was aborted (the emulator's pessimistic locks time out under
    /// contention): the transaction is retried like one whose commit was aborted.
    aborted: Arc<std::sync::atomic::AtomicBool>,
}

impl Tx {
    fn note<T>(&self, r: Result<T, GrpcStatus>, what: &str) -> Result<T, StoreError> {
        r.map_err(|s| {
            if s.code() == Code::Aborted {
                self.aborted.store(true, Ordering::Relaxed);
            }
            grpc(what, s)
        })
    }
    async fn get(&self, name: &str) -> Result<Option<Document>, StoreError> {
        let r = self.store.get_doc_raw(name, Some(self.id.clone())).await;
        self.note(r, "get")
    }
    async fn query(&self, parent: &str, q: StructuredQuery) -> Result<Vec<Document>, StoreError> {
        let r = self
            .store
            .run_query_raw(parent, q, Some(self.id.clone()))
            .await;
        self.note(r, "query")
    }
}

impl FirestoreStore {
    /// Connects (lazily: the first request opens the channel). With `FIRESTORE_EMULATOR_HOST`
    /// set it talks to the emulator without credentials; otherwise it uses Application Default
    /// Credentials.
    pub async fn connect(cfg: &FirestoreConfig) -> Result<Self, ConfigError> {
        if cfg.collection_prefix.contains('/') || cfg.collection_prefix.starts_with("__") {
            return Err(ConfigError::BadPrefix(cfg.collection_prefix.clone()));
        }
        let options = FirestoreDbOptions::new(cfg.project_id.clone())
            .with_database_id(cfg.database_id.clone());
        let db = FirestoreDb::with_options(options)
            .await
            .map_err(|e| ConfigError::Connect(e.to_string()))?;
        let database = format!("projects/{}/databases/{}", cfg.project_id, cfg.database_id);
        tracing::info!(database = %database, prefix = %cfg.collection_prefix, "Firestore store");
        Ok(FirestoreStore {
            inner: Arc::new(Inner {
                db,
                root: format!("{database}/documents"),
                database,
                prefix: cfg.collection_prefix.clone(),
                writes: AtomicU64::new(0),
                last_order: AtomicI64::new(0),
                appending: Default::default(),
                emulator_turns: std::env::var_os("FIRESTORE_EMULATOR_HOST")
                    .is_some()
                    .then(|| tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// Document writes committed so far by this client (what Firestore bills as writes).
    pub fn document_writes(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    fn client(
        &self,
    ) -> pb::firestore_client::FirestoreClient<firestore::gcloud_sdk::GoogleAuthMiddleware> {
        self.inner.db.client().get()
    }

    fn col(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }
    fn doc(&self, collection: &str, id: &str) -> String {
        format!(
            "{}/{}/{}",
            self.inner.root,
            self.col(collection),
            doc_id(id)
        )
    }
    fn exec_doc(&self, id: &str) -> String {
        self.doc("executions", id)
    }
    fn logs_parent(&self, id: &str) -> String {
        self.exec_doc(id)
    }
    fn document(&self, name: String, fields: Fields) -> Document {
        Document {
            name,
            fields,
            ..Default::default()
        }
    }

    async fn get_doc(
        &self,
        name: &str,
        tx: Option<Vec<u8>>,
    ) -> Result<Option<Document>, StoreError> {
        self.get_doc_raw(name, tx).await.map_err(|s| grpc("get", s))
    }

    async fn get_doc_raw(
        &self,
        name: &str,
        tx: Option<Vec<u8>>,
    ) -> Result<Option<Document>, GrpcStatus> {
        let req = GetDocumentRequest {
            name: name.to_owned(),
            consistency_selector: tx
                .map(pb::get_document_request::ConsistencySelector::Transaction),
            ..Default::default()
        };
        match self.client().get_document(req).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    async fn run_query(
        &self,
        parent: &str,
        q: StructuredQuery,
        tx: Option<Vec<u8>>,
    ) -> Result<Vec<Document>, StoreError> {
        self.run_query_raw(parent, q, tx)
            .await
            .map_err(|s| grpc("query", s))
    }

    async fn run_query_raw(
        &self,
        parent: &str,
        q: StructuredQuery,
        tx: Option<Vec<u8>>,
    ) -> Result<Vec<Document>, GrpcStatus> {
        let req = RunQueryRequest {
            parent: parent.to_owned(),
            query_type: Some(run_query_request::QueryType::StructuredQuery(q)),
            consistency_selector: tx.map(run_query_request::ConsistencySelector::Transaction),
            ..Default::default()
        };
        let mut stream = self.client().run_query(req).await?.into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await? {
            if let Some(d) = r.document {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Top-level query.
    async fn query_top(&self, q: StructuredQuery) -> Result<Vec<Document>, StoreError> {
        self.run_query(&self.inner.root, q, None).await
    }

    async fn commit(&self, writes: Vec<Write>, tx: Vec<u8>) -> Result<(), GrpcStatus> {
        let n = writes.len() as u64;
        self.client()
            .commit(CommitRequest {
                database: self.inner.database.clone(),
                writes,
                transaction: tx,
                ..Default::default()
            })
            .await?;
        self.inner.writes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Commits outside a transaction, in as many requests as the limit per commit needs (each
    /// one atomic).
    async fn write_all(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut it = writes.into_iter().peekable();
        while it.peek().is_some() {
            let part: Vec<Write> = it.by_ref().take(WRITES_PER_COMMIT).collect();
            self.commit(part, Vec::new())
                .await
                .map_err(|s| grpc("commit", s))?;
        }
        Ok(())
    }

    /// Runs `body` in a read-write transaction and commits what it decides, retrying when
    /// Firestore aborts the transaction for contention.
    async fn transact<T, F, Fut>(&self, what: &str, mut body: F) -> Result<T, StoreError>
    where
        F: FnMut(Tx) -> Fut,
        Fut: Future<Output = Result<Step<T>, StoreError>>,
    {
        let mut retry: Vec<u8> = Vec::new();
        for attempt in 1..=TX_ATTEMPTS {
            let _turn = match &self.inner.emulator_turns {
                Some(m) => Some(m.lock().await),
                None => None,
            };
            let options = pb::TransactionOptions {
                mode: Some(pb::transaction_options::Mode::ReadWrite(
                    pb::transaction_options::ReadWrite {
                        retry_transaction: std::mem::take(&mut retry),
                        ..Default::default()
                    },
                )),
            };
            let id = self
                .client()
                .begin_transaction(BeginTransactionRequest {
                    database: self.inner.database.clone(),
                    options: Some(options),
                    ..Default::default()
                })
                .await
                .map_err(|s| grpc("begin transaction", s))?
                .into_inner()
                .transaction;
            // Firestore holds a transaction's locks until it ends: when this future is dropped
            // midway (a push request the sender gave up on), roll back in the background rather
            // than leave its locks to time out every other writer of the same documents.
            let mut open = OpenTx {
                store: self.clone(),
                id: Some(id.clone()),
            };
            let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let step = body(Tx {
                store: self.clone(),
                id: id.clone(),
                aborted: aborted.clone(),
            })
            .await;
            if !matches!(step, Ok(Step::Commit(..))) {
                // Rolled back right below.
                open.id = None;
            }
            let (writes, out) = match step {
                Ok(Step::Commit(w, out)) => (w, out),
                Ok(Step::Abort(out)) => {
                    self.rollback(id).await;
                    return Ok(out);
                }
                Err(_) if aborted.load(Ordering::Relaxed) && attempt < TX_ATTEMPTS => {
                    tracing::debug!(%what, attempt, "Firestore transaction read aborted, retrying");
                    self.rollback(id).await;
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                    continue;
                }
                Err(e) => {
                    self.rollback(id.clone()).await;
                    return Err(e);
                }
            };
            let committed = self.commit(writes, id.clone()).await;
            open.id = None;
            match committed {
                Ok(()) => return Ok(out),
                Err(s) if s.code() == Code::Aborted && attempt < TX_ATTEMPTS => {
                    tracing::debug!(%what, attempt, "Firestore transaction aborted, retrying");
                    retry = id;
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(s) => return Err(grpc(what, s)),
            }
        }
        Err(unavailable(format!(
            "firestore {what}: transaction kept aborting"
        )))
    }

    /// `append_logs` once it is this process's turn for the execution.
    async fn append_logs_now(
        &self,
        execution_id: &str,
        incoming: &BTreeMap<u64, &LogRecord>,
        min: u64,
        max: u64,
    ) -> Result<(), StoreError> {
        let parent = self.logs_parent(execution_id);
        self.transact("append logs", move |tx| {
            let parent = parent.clone();
            async move {
                // Usually nothing: records arrive in order, after every stored batch.
                let stored = tx.store.batches(execution_id, min, max, Some(&tx)).await?;
                let mut writes = Vec::new();
                let mut fresh: Vec<LogRecord> = Vec::new();
                let mut merges: BTreeMap<usize, Vec<LogRecord>> = BTreeMap::new();
                for (seq, r) in incoming {
                    match stored
                        .iter()
                        .position(|b| b.first <= *seq && *seq <= b.last)
                    {
                        // Inside a stored batch's range: already stored, or a hole in it.
                        Some(i) if stored[i].seqs.contains(seq) => {}
                        Some(i) => merges.entry(i).or_default().push((*r).clone()),
                        None => fresh.push((*r).clone()),
                    }
                }
                // New batches must not span a stored batch: split the fresh records at every
                // stored range.
                let mut run: Vec<LogRecord> = Vec::new();
                let mut runs: Vec<Vec<LogRecord>> = Vec::new();
                let firsts: Vec<u64> = stored.iter().map(|b| b.first).collect();
                let mut k = 0;
                for r in fresh {
                    let mut crossed = false;
                    while k < firsts.len() && firsts[k] < r.seq {
                        k += 1;
                        crossed = true;
                    }
                    if crossed && !run.is_empty() {
                        runs.push(std::mem::take(&mut run));
                    }
                    run.push(r);
                }
                if !run.is_empty() {
                    runs.push(run);
                }
                for run in &runs {
                    for part in chunk(run) {
                        let name = format!("{parent}/logs/{:020}", part[0].seq);
                        writes.push(create(tx.store.document(name, batch_fields(part))));
                    }
                }
                // Holes filled inside a stored batch (a repair): rewrite it with its records
                // and the new ones, split again if it grew too large.
                for (i, add) in merges {
                    let b = &stored[i];
                    let Some(doc) = tx.get(&b.name).await? else {
                        return Err(unavailable("log batch vanished during a transaction"));
                    };
                    let mut all: BTreeMap<u64, LogRecord> = get_array(&doc.fields, "records")
                        .iter()
                        .filter_map(record_from)
                        .map(|r| (r.seq, r))
                        .collect();
                    for r in add {
                        all.entry(r.seq).or_insert(r);
                    }
                    let all: Vec<LogRecord> = all.into_values().collect();
                    for (k, part) in chunk(&all).into_iter().enumerate() {
                        if k == 0 {
                            let mut w =
                                upsert(tx.store.document(b.name.clone(), batch_fields(part)));
                            w.current_document = b.update_time.map(|t| Precondition {
                                condition_type: Some(ConditionType::UpdateTime(t)),
                            });
                            writes.push(w);
                        } else {
                            let name = format!("{parent}/logs/{:020}", part[0].seq);
                            writes.push(create(tx.store.document(name, batch_fields(part))));
                        }
                    }
                }
                if writes.is_empty() {
                    return Ok(Step::Abort(()));
                }
                Ok(Step::Commit(writes, ()))
            }
        })
        .await
    }

    async fn rollback(&self, id: Vec<u8>) {
        let r = self
            .client()
            .rollback(RollbackRequest {
                database: self.inner.database.clone(),
                transaction: id,
                ..Default::default()
            })
            .await;
        if let Err(s) = r {
            tracing::debug!(code = ?s.code(), "Firestore rollback failed (the transaction expires)");
        }
    }

    /// An order key for append-only collections: the wall clock in µs, kept increasing within
    /// this process so that lines appended together keep their order.
    fn next_order(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let mut cur = self.inner.last_order.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur + 1);
            match self.inner.last_order.compare_exchange(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(c) => cur = c,
            }
        }
    }

    /// Deletes every document of `collection` but the `keep` with the highest `order`.
    async fn trim(&self, collection: &str, keep: u64) -> Result<(), StoreError> {
        let mut q = query(&self.col(collection));
        select(&mut q, &["order"]);
        q.order_by = vec![order("order", true)];
        q.offset = i32::try_from(keep).unwrap_or(i32::MAX);
        let old = self.query_top(q).await?;
        self.write_all(old.into_iter().map(|d| delete(d.name)).collect())
            .await
    }

    /// Batches of an execution whose `last_seq >= from`, ascending, stopping after the first
    /// whose `first_seq > until` (ranges do not overlap, so later ones lie beyond it too).
    async fn batches(
        &self,
        execution_id: &str,
        from: u64,
        until: u64,
        tx: Option<&Tx>,
    ) -> Result<Vec<Batch>, StoreError> {
        let parent = self.logs_parent(execution_id);
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let mut q = query("logs");
            select(&mut q, &["first_seq", "last_seq", "count", "seqs"]);
            let lower = match after {
                Some(a) => filter("last_seq", Op::GreaterThan, uint(a)),
                None => filter("last_seq", Op::GreaterThanOrEqual, uint(from)),
            };
            q.r#where = Some(lower);
            q.order_by = vec![order("last_seq", false)];
            q.limit = Some(100);
            let docs = match tx {
                Some(t) => t.query(&parent, q).await?,
                None => self.run_query(&parent, q, None).await?,
            };
            let full = docs.len() == 100;
            for d in &docs {
                let b = batch_from(d);
                let beyond = b.first > until;
                after = Some(b.last);
                out.push(b);
                if beyond {
                    return Ok(out);
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

impl FirestoreStore {
    fn default_image_doc(&self) -> String {
        self.doc("meta", "default_image")
    }

    /// The id of the default image, read in `tx` or outside any transaction.
    async fn default_image_id(&self, tx: Option<&Tx>) -> Result<Option<String>, StoreError> {
        let name = self.default_image_doc();
        let doc = match tx {
            Some(t) => t.get(&name).await?,
            None => self.get_doc(&name, None).await?,
        };
        Ok(doc
            .map(|d| get_str(&d.fields, "image_id"))
            .filter(|id| !id.is_empty()))
    }
}

fn is_exists_conflict(s: &GrpcStatus) -> bool {
    matches!(s.code(), Code::AlreadyExists | Code::FailedPrecondition)
}

#[async_trait]
impl Store for FirestoreStore {
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError> {
        let doc = self.document(self.exec_doc(&e.id), exec_fields(e));
        match self.commit(vec![create(doc)], Vec::new()).await {
            Ok(()) => Ok(()),
            Err(s) if is_exists_conflict(&s) => Err(StoreError::AlreadyExists(e.id.clone())),
            Err(s) => Err(grpc("create execution", s)),
        }
    }

    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &Lock,
        now_ms: i64,
    ) -> Result<LockedCreate, StoreError> {
        let (exec_doc, lock_doc) = (self.exec_doc(&e.id), self.doc("locks", &lock.name));
        // Both documents are read inside the transaction: a concurrent taker's commit makes
        // this one abort and retry, and it then sees the new holder.
        self.transact("create execution with lock", move |tx| {
            let (exec_doc, lock_doc) = (exec_doc.clone(), lock_doc.clone());
            async move {
                if let Some(cur) = tx.get(&lock_doc).await? {
                    let cur = lock_from(&cur.fields);
                    if cur.expires_at_ms >= now_ms {
                        return Ok(Step::Abort(LockedCreate::Held(cur)));
                    }
                }
                if tx.get(&exec_doc).await?.is_some() {
                    return Err(StoreError::AlreadyExists(e.id.clone()));
                }
                let writes = vec![
                    create(tx.store.document(exec_doc, exec_fields(e))),
                    upsert(tx.store.document(lock_doc, lock_fields(lock))),
                ];
                Ok(Step::Commit(writes, LockedCreate::Created))
            }
        })
        .await
    }

    async fn get_lock(&self, name: &str) -> Result<Option<Lock>, StoreError> {
        Ok(self
            .get_doc(&self.doc("locks", name), None)
            .await?
            .map(|d| lock_from(&d.fields)))
    }

    async fn list_locks(&self) -> Result<Vec<Lock>, StoreError> {
        let mut v: Vec<Lock> = self
            .query_top(query(&self.col("locks")))
            .await?
            .iter()
            .map(|d| lock_from(&d.fields))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    async fn renew_lock(
        &self,
        name: &str,
        execution_id: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let doc = self.doc("locks", name);
        self.transact("renew lock", move |tx| {
            let doc = doc.clone();
            async move {
                let Some(cur) = tx.get(&doc).await? else {
                    return Ok(Step::Abort(false));
                };
                let mut cur = lock_from(&cur.fields);
                if cur.execution_id != execution_id {
                    return Ok(Step::Abort(false));
                }
                cur.expires_at_ms = expires_at_ms;
                let d = tx.store.document(doc, lock_fields(&cur));
                Ok(Step::Commit(vec![upsert(d)], true))
            }
        })
        .await
    }

    async fn release_lock(&self, name: &str, execution_id: &str) -> Result<bool, StoreError> {
        let doc = self.doc("locks", name);
        self.transact("release lock", move |tx| {
            let doc = doc.clone();
            async move {
                match tx.get(&doc).await? {
                    Some(cur) if lock_from(&cur.fields).execution_id == execution_id => {
                        Ok(Step::Commit(vec![delete(doc)], true))
                    }
                    _ => Ok(Step::Abort(false)),
                }
            }
        })
        .await
    }

    async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        Ok(self
            .get_doc(&self.exec_doc(id), None)
            .await?
            .map(|d| exec_from(&d.fields)))
    }

    async fn list_executions(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), StoreError> {
        let limit = q.limit.max(1);
        let mut sq = query(&self.col("executions"));
        let mut filters = Vec::new();
        if !q.statuses.is_empty() {
            filters.push(filter(
                "status",
                Op::In,
                v(ValueType::ArrayValue(pb::ArrayValue {
                    values: q.statuses.iter().map(|s| string(s.as_str())).collect(),
                })),
            ));
        }
        if let Some(u) = &q.created_by {
            filters.push(filter("created_by", Op::Equal, string(u)));
        }
        if let Some(since) = q.since_ms {
            // A range on the first ordering field: served by the same composite index.
            filters.push(filter("created_at_ms", Op::GreaterThanOrEqual, int(since)));
        }
        sq.r#where = and(filters);
        sq.order_by = vec![order("created_at_ms", true), order("id", true)];
        if let Some((ms, id)) = q.cursor.as_deref().and_then(|c| c.split_once('-'))
            && let Ok(ms) = ms.parse::<i64>()
        {
            sq.start_at = Some(pb::Cursor {
                values: vec![int(ms), string(id)],
                before: false,
            });
        }
        sq.limit = Some(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        let mut rows: Vec<Execution> = self
            .query_top(sq)
            .await?
            .iter()
            .map(|d| exec_from(&d.fields))
            .collect();
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|e| format!("{}-{}", e.created_at_ms, e.id))
        } else {
            None
        };
        Ok((rows, next))
    }

    async fn list_unsettled(&self) -> Result<Vec<Execution>, StoreError> {
        // Two equality queries rather than one OR: each is served by a single-field index.
        let mut incomplete = query(&self.col("executions"));
        incomplete.r#where = Some(filter("logs_complete", Op::Equal, boolean(false)));
        let mut live = query(&self.col("executions"));
        live.r#where = Some(filter(
            "status",
            Op::In,
            v(ValueType::ArrayValue(pb::ArrayValue {
                values: [Status::Starting, Status::Running, Status::Terminating]
                    .iter()
                    .map(|s| string(s.as_str()))
                    .collect(),
            })),
        ));
        let mut by_id = BTreeMap::new();
        for d in self
            .query_top(incomplete)
            .await?
            .into_iter()
            .chain(self.query_top(live).await?)
        {
            let e = exec_from(&d.fields);
            by_id.insert(e.id.clone(), e);
        }
        let mut v: Vec<Execution> = by_id.into_values().collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(v)
    }

    async fn update_execution(&self, e: &Execution) -> Result<bool, StoreError> {
        let name = self.exec_doc(&e.id);
        self.transact("update execution", move |tx| {
            let name = name.clone();
            async move {
                let Some(cur) = tx.get(&name).await? else {
                    return Ok(Step::Abort(false));
                };
                let cur = exec_from(&cur.fields);
                if cur.version != e.version {
                    return Ok(Step::Abort(false));
                }
                let mut next = e.clone();
                // Identity and creation fields never change.
                next.created_by = cur.created_by;
                next.command = cur.command;
                next.argv = cur.argv;
                next.image = cur.image;
                next.created_at_ms = cur.created_at_ms;
                next.created_by_request_id = cur.created_by_request_id;
                next.compute_platform = cur.compute_platform;
                next.timeout_secs = cur.timeout_secs;
                next.lock = cur.lock;
                next.version = cur.version + 1;
                let doc = tx.store.document(name, exec_fields(&next));
                Ok(Step::Commit(vec![upsert(doc)], true))
            }
        })
        .await
    }

    async fn append_logs(
        &self,
        execution_id: &str,
        records: &[LogRecord],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // Ascending, one record per seq (the first of a batch wins, like the other stores).
        let mut incoming: BTreeMap<u64, &LogRecord> = BTreeMap::new();
        for r in records {
            incoming.entry(r.seq).or_insert(r);
        }
        let (min, max) = (
            *incoming.keys().next().expect("non-empty"),
            *incoming.keys().next_back().expect("non-empty"),
        );
        let turn = {
            let mut m = self.inner.appending.lock().expect("append locks");
            m.entry(execution_id.to_owned()).or_default().clone()
        };
        let _turn = turn.lock().await;
        let res = self
            .append_logs_now(execution_id, &incoming, min, max)
            .await;
        drop(_turn);
        let mut m = self.inner.appending.lock().expect("append locks");
        // The last one out removes the lock (the map holds one reference, `turn` another).
        if Arc::strong_count(&turn) == 2 {
            m.remove(execution_id);
        }
        res
    }

    async fn read_logs(
        &self,
        execution_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let parent = self.logs_parent(execution_id);
        let mut out: Vec<LogRecord> = Vec::new();
        let mut after = after_seq;
        while out.len() < limit {
            let mut q = query("logs");
            q.r#where = Some(filter("last_seq", Op::GreaterThan, uint(after)));
            q.order_by = vec![order("last_seq", false)];
            // Every batch holds at least one record past `after`, so `limit` batches are
            // enough; read a few at a time since each may hold hundreds.
            let page = limit.clamp(1, 10);
            q.limit = Some(page as i32);
            let docs = self.run_query(&parent, q, None).await?;
            if docs.is_empty() {
                break;
            }
            for d in &docs {
                let mut recs: Vec<LogRecord> = get_array(&d.fields, "records")
                    .iter()
                    .filter_map(record_from)
                    .filter(|r| r.seq > after_seq)
                    .collect();
                recs.sort_by_key(|r| r.seq);
                out.extend(recs);
                after = get_int(&d.fields, "last_seq").unwrap_or(0) as u64;
            }
            if docs.len() < page {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn log_stats(&self, execution_id: &str) -> Result<LogStats, StoreError> {
        let all = self.batches(execution_id, 0, u64::MAX, None).await?;
        let mut stats = LogStats::default();
        let mut gap = false;
        for b in &all {
            stats.count += b.count;
            stats.max_seq = stats.max_seq.max(b.last);
            if gap || b.first != stats.contiguous + 1 {
                gap = true;
                continue;
            }
            if b.count == b.last - b.first + 1 {
                stats.contiguous = b.last;
            } else {
                // A batch with a hole: the prefix runs to the hole.
                let have: HashSet<u64> = b.seqs.iter().copied().collect();
                while have.contains(&(stats.contiguous + 1)) {
                    stats.contiguous += 1;
                }
                gap = true;
            }
        }
        Ok(stats)
    }

    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        let writes = self.user_writes(u);
        match self.commit(writes, Vec::new()).await {
            Ok(()) => Ok(()),
            Err(s) if is_exists_conflict(&s) => Err(StoreError::AlreadyExists(u.email.clone())),
            Err(s) => Err(grpc("create user", s)),
        }
    }

    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        let mut q = query(&self.col("users"));
        q.r#where = Some(filter("key_hash", Op::Equal, string(key_hash)));
        q.limit = Some(1);
        Ok(self
            .query_top(q)
            .await?
            .first()
            .map(|d| user_from(&d.fields)))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .get_doc(&self.doc("users", email), None)
            .await?
            .map(|d| user_from(&d.fields)))
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let mut q = query(&self.col("users"));
        select(&mut q, &["email"]);
        Ok(self.query_top(q).await?.len() as u64)
    }

    async fn touch_user(&self, email: &str, at_ms: i64) -> Result<(), StoreError> {
        let mut f = Fields::new();
        f.insert("last_used_ms".into(), int(at_ms));
        let w = Write {
            operation: Some(Operation::Update(
                self.document(self.doc("users", email), f),
            )),
            update_mask: Some(DocumentMask {
                field_paths: vec!["last_used_ms".into()],
            }),
            current_document: Some(Precondition {
                condition_type: Some(ConditionType::Exists(true)),
            }),
            ..Default::default()
        };
        match self.commit(vec![w], Vec::new()).await {
            Ok(()) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(grpc("touch user", s)),
        }
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut q = query(&self.col("users"));
        q.order_by = vec![order("email", false)];
        Ok(self
            .query_top(q)
            .await?
            .iter()
            .map(|d| user_from(&d.fields))
            .collect())
    }

    async fn create_user_with_claim(&self, u: &User, claim: &Claim) -> Result<(), StoreError> {
        let (user_doc, key_doc, claim_doc) = (
            self.doc("users", &u.email),
            self.doc("user_keys", &u.key_hash),
            self.doc("claims", &claim.token_hash),
        );
        self.transact("create user with claim", move |tx| {
            let (user_doc, key_doc, claim_doc) =
                (user_doc.clone(), key_doc.clone(), claim_doc.clone());
            async move {
                let mut writes = Vec::new();
                let old = tx.get(&user_doc).await?.map(|d| user_from(&d.fields));
                if let Some(old) = &old {
                    if old.claim_expires_at_ms.is_none() || old.revoked {
                        return Err(StoreError::AlreadyExists(u.email.clone()));
                    }
                    // A re-invitation: the unclaimed user is replaced and its unused claims go,
                    // so the earlier token stops working.
                    if old.key_hash != u.key_hash {
                        writes.push(delete(tx.store.doc("user_keys", &old.key_hash)));
                    }
                    let mut q = query(&tx.store.col("claims"));
                    q.r#where = Some(filter("email", Op::Equal, string(&u.email)));
                    for d in tx.query(&tx.store.inner.root, q).await? {
                        if get_int(&d.fields, "claimed_at_ms").is_none() {
                            writes.push(delete(d.name));
                        }
                    }
                }
                if let Some(k) = tx.get(&key_doc).await?
                    && get_str(&k.fields, "email") != u.email
                {
                    return Err(StoreError::AlreadyExists(u.email.clone()));
                }
                if tx.get(&claim_doc).await?.is_some() {
                    return Err(unavailable("claim token hash already in use"));
                }
                writes.push(upsert(tx.store.document(user_doc, user_fields(u))));
                writes.push(upsert(tx.store.document(key_doc, tx.store.key_fields(u))));
                let mut f = Fields::new();
                f.insert("token_hash".into(), string(&claim.token_hash));
                f.insert("email".into(), string(&claim.email));
                f.insert("created_at_ms".into(), int(claim.created_at_ms));
                f.insert("expires_at_ms".into(), int(claim.expires_at_ms));
                f.insert("claimed_at_ms".into(), null());
                f.insert("expires_at".into(), timestamp(claim.expires_at_ms));
                writes.push(create(tx.store.document(claim_doc, f)));
                Ok(Step::Commit(writes, ()))
            }
        })
        .await
    }

    async fn redeem_claim(
        &self,
        token_hash: &str,
        key_hash: &str,
        now_ms: i64,
        request_id: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        let claim_doc = self.doc("claims", token_hash);
        self.transact("redeem claim", move |tx| {
            let claim_doc = claim_doc.clone();
            async move {
                let Some(c) = tx.get(&claim_doc).await? else {
                    return Ok(Step::Abort(ClaimOutcome::NotFound));
                };
                if get_int(&c.fields, "claimed_at_ms").is_some() {
                    return Ok(Step::Abort(ClaimOutcome::AlreadyClaimed));
                }
                if get_int(&c.fields, "expires_at_ms").unwrap_or(i64::MIN) < now_ms {
                    return Ok(Step::Abort(ClaimOutcome::NotFound));
                }
                let email = get_str(&c.fields, "email");
                let user_doc = tx.store.doc("users", &email);
                let Some(u) = tx.get(&user_doc).await?.map(|d| user_from(&d.fields)) else {
                    return Ok(Step::Abort(ClaimOutcome::NotFound));
                };
                if u.revoked || u.claim_expires_at_ms.is_none() {
                    return Ok(Step::Abort(ClaimOutcome::NotFound));
                }
                let new_key = tx.store.doc("user_keys", key_hash);
                if let Some(k) = tx.get(&new_key).await?
                    && get_str(&k.fields, "email") != email
                {
                    return Err(unavailable("key hash already in use"));
                }
                let old_key = u.key_hash.clone();
                let mut next = u;
                next.key_hash = key_hash.to_owned();
                next.claim_expires_at_ms = None;
                next.modified_by_request_id = request_id.to_owned();
                let mut writes = tx.store.key_change(&next, &old_key);
                writes.push(upsert(tx.store.document(user_doc, user_fields(&next))));
                let mut f = c.fields.clone();
                f.insert("claimed_at_ms".into(), int(now_ms));
                // Kept a day after its use so a second use says "already claimed".
                f.insert(
                    "expires_at".into(),
                    timestamp(now_ms.saturating_add(USED_CLAIM_KEEP_MS)),
                );
                writes.push(upsert(tx.store.document(claim_doc, f)));
                Ok(Step::Commit(writes, ClaimOutcome::Claimed(next)))
            }
        })
        .await
    }

    async fn update_user(
        &self,
        email: &str,
        change: &UserChange,
        request_id: &str,
    ) -> Result<UserUpdate, StoreError> {
        let user_doc = self.doc("users", email);
        self.transact("update user", move |tx| {
            let user_doc = user_doc.clone();
            async move {
                let Some(cur) = tx.get(&user_doc).await?.map(|d| user_from(&d.fields)) else {
                    return Ok(Step::Abort(UserUpdate::NotFound));
                };
                let mut next = cur.clone();
                let mut writes = Vec::new();
                match change {
                    UserChange::Role(r) if !cur.revoked => next.role = *r,
                    UserChange::Revoke => next.revoked = true,
                    UserChange::KeyHash(h) if !cur.revoked && cur.claim_expires_at_ms.is_none() => {
                        if let Some(k) = tx.get(&tx.store.doc("user_keys", h)).await?
                            && get_str(&k.fields, "email") != email
                        {
                            return Err(unavailable("key hash already in use"));
                        }
                        next.key_hash = h.clone();
                        writes.extend(tx.store.key_change(&next, &cur.key_hash));
                    }
                    _ => return Ok(Step::Abort(UserUpdate::NotFound)),
                }
                next.modified_by_request_id = request_id.to_owned();
                // Read inside the transaction: two concurrent demotions cannot both pass.
                let mut q = query(&tx.store.col("users"));
                q.r#where = Some(filter("role", Op::Equal, string(Role::Admin.as_str())));
                let admins_left = tx
                    .query(&tx.store.inner.root, q)
                    .await?
                    .iter()
                    .map(|d| user_from(&d.fields))
                    .filter(|u| u.email != email && active_admin(u))
                    .count()
                    + usize::from(active_admin(&next));
                if admins_left == 0 {
                    return Ok(Step::Abort(UserUpdate::LastAdmin));
                }
                writes.push(upsert(tx.store.document(user_doc, user_fields(&next))));
                Ok(Step::Commit(writes, UserUpdate::Updated(next)))
            }
        })
        .await
    }

    async fn purge_unclaimed(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.transact("purge unclaimed", move |tx| async move {
            let mut q = query(&tx.store.col("users"));
            q.r#where = Some(filter("claim_expires_at_ms", Op::LessThan, int(now_ms)));
            let users: Vec<User> = tx
                .query(&tx.store.inner.root, q)
                .await?
                .iter()
                .map(|d| user_from(&d.fields))
                .collect();
            let mut writes = Vec::new();
            for u in &users {
                writes.push(delete(tx.store.doc("users", &u.email)));
                writes.push(delete(tx.store.doc("user_keys", &u.key_hash)));
            }
            let used_before = now_ms.saturating_sub(USED_CLAIM_KEEP_MS);
            let mut unused = query(&tx.store.col("claims"));
            unused.r#where = Some(filter("expires_at_ms", Op::LessThan, int(now_ms)));
            let mut used = query(&tx.store.col("claims"));
            used.r#where = Some(filter("claimed_at_ms", Op::LessThan, int(used_before)));
            let mut gone = HashSet::new();
            for d in tx.query(&tx.store.inner.root, unused).await? {
                // An expired claim that was used is kept until its own keep time.
                if get_int(&d.fields, "claimed_at_ms").is_none() {
                    gone.insert(d.name);
                }
            }
            for d in tx.query(&tx.store.inner.root, used).await? {
                gone.insert(d.name);
            }
            writes.extend(gone.into_iter().map(delete));
            let n = users.len() as u64;
            if writes.is_empty() {
                return Ok(Step::Abort(0));
            }
            Ok(Step::Commit(writes, n))
        })
        .await
    }

    async fn users_by_request(&self, request_id: &str) -> Result<Vec<User>, StoreError> {
        let mut by_email = BTreeMap::new();
        for f in ["created_by_request_id", "modified_by_request_id"] {
            let mut q = query(&self.col("users"));
            q.r#where = Some(filter(f, Op::Equal, string(request_id)));
            for d in self.query_top(q).await? {
                let u = user_from(&d.fields);
                by_email.insert(u.email.clone(), u);
            }
        }
        Ok(by_email.into_values().collect())
    }

    async fn executions_by_request(&self, request_id: &str) -> Result<Vec<Execution>, StoreError> {
        let mut by_id = BTreeMap::new();
        for f in ["created_by_request_id", "modified_by_request_id"] {
            let mut q = query(&self.col("executions"));
            q.r#where = Some(filter(f, Op::Equal, string(request_id)));
            q.limit = Some(1000);
            for d in self.query_top(q).await? {
                let e = exec_from(&d.fields);
                by_id.insert(e.id.clone(), e);
            }
        }
        let mut v: Vec<Execution> = by_id.into_values().collect();
        v.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        v.truncate(1000);
        Ok(v)
    }

    async fn append_server_logs(
        &self,
        lines: &[ServerLogLine],
        keep: u64,
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let writes = lines
            .iter()
            .map(|l| {
                let order_key = self.next_order();
                let mut f = Fields::new();
                f.insert("order".into(), int(order_key));
                f.insert("ts_ms".into(), int(l.ts_ms));
                f.insert("request_id".into(), string(&l.request_id));
                f.insert("line".into(), string(&l.line));
                upsert(self.document(self.doc("server_logs", &format!("{order_key:020}")), f))
            })
            .collect();
        self.write_all(writes).await?;
        self.trim("server_logs", keep).await
    }

    async fn server_logs(
        &self,
        request_id: &str,
        limit: usize,
    ) -> Result<Vec<ServerLogLine>, StoreError> {
        let mut q = query(&self.col("server_logs"));
        q.r#where = Some(filter("request_id", Op::Equal, string(request_id)));
        q.order_by = vec![order("order", false)];
        q.limit = Some(i32::try_from(limit).unwrap_or(i32::MAX));
        Ok(self
            .query_top(q)
            .await?
            .iter()
            .map(|d| ServerLogLine {
                ts_ms: get_int(&d.fields, "ts_ms").unwrap_or(0),
                request_id: get_str(&d.fields, "request_id"),
                line: get_str(&d.fields, "line"),
            })
            .collect())
    }

    async fn save_report(&self, report: &ReconcileReport, keep: usize) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(unavailable)?;
        let order_key = self.next_order();
        let mut f = Fields::new();
        f.insert("order".into(), int(order_key));
        f.insert("report".into(), string(&json));
        self.write_all(vec![upsert(
            self.document(self.doc("reports", &format!("{order_key:020}")), f),
        )])
        .await?;
        self.trim("reports", keep as u64).await
    }

    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError> {
        let mut q = query(&self.col("reports"));
        q.order_by = vec![order("order", true)];
        q.limit = Some(i32::try_from(limit).unwrap_or(i32::MAX));
        // A report this version cannot read is skipped rather than failing the whole list.
        Ok(self
            .query_top(q)
            .await?
            .iter()
            .filter_map(|d| serde_json::from_str(&get_str(&d.fields, "report")).ok())
            .collect())
    }

    async fn register_image(
        &self,
        image: &Image,
        default: MakeDefault,
    ) -> Result<Registered, StoreError> {
        let (image_doc, pointer_doc) = (self.doc("images", &image.id), self.default_image_doc());
        self.transact("register image", move |tx| {
            let (image_doc, pointer_doc) = (image_doc.clone(), pointer_doc.clone());
            async move {
                let current = tx.store.default_image_id(Some(&tx)).await?;
                let existing = tx
                    .get(&image_doc)
                    .await?
                    .map(|d| image_from(&d.fields, current.as_deref()));
                let created = existing.is_none();
                let mut stored = existing.unwrap_or_else(|| Image {
                    is_default: false,
                    ..image.clone()
                });
                let make = match default {
                    MakeDefault::Yes => current.as_deref() != Some(image.id.as_str()),
                    MakeDefault::IfNone => current.is_none(),
                    MakeDefault::No => false,
                };
                let rid = &image.modified_by_request_id;
                let mut writes = Vec::new();
                if make {
                    if let Some(prev) = &current
                        && let Some(d) = tx.get(&tx.store.doc("images", prev)).await?
                    {
                        let mut old = image_from(&d.fields, None);
                        old.modified_by_request_id = rid.clone();
                        writes.push(upsert(tx.store.document(d.name, image_fields(&old))));
                    }
                    let mut f = Fields::new();
                    f.insert("image_id".into(), string(&image.id));
                    writes.push(upsert(tx.store.document(pointer_doc.clone(), f)));
                    stored.is_default = true;
                    stored.modified_by_request_id = rid.clone();
                }
                if created || make {
                    writes.push(upsert(
                        tx.store.document(image_doc.clone(), image_fields(&stored)),
                    ));
                }
                let out = Registered {
                    image: stored,
                    created,
                };
                Ok(if writes.is_empty() {
                    Step::Abort(out)
                } else {
                    Step::Commit(writes, out)
                })
            }
        })
        .await
    }

    async fn get_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        let Some(d) = self.get_doc(&self.doc("images", id), None).await? else {
            return Ok(None);
        };
        let current = self.default_image_id(None).await?;
        Ok(Some(image_from(&d.fields, current.as_deref())))
    }

    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let docs = self.query_top(query(&self.col("images"))).await?;
        let current = self.default_image_id(None).await?;
        let mut out: Vec<Image> = docs
            .iter()
            .map(|d| image_from(&d.fields, current.as_deref()))
            .collect();
        // By id as Rust orders strings (document names escape '/').
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn delete_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        let (image_doc, pointer_doc) = (self.doc("images", id), self.default_image_doc());
        self.transact("delete image", move |tx| {
            let (image_doc, pointer_doc) = (image_doc.clone(), pointer_doc.clone());
            async move {
                let current = tx.store.default_image_id(Some(&tx)).await?;
                let Some(d) = tx.get(&image_doc).await? else {
                    return Ok(Step::Abort(None));
                };
                let img = image_from(&d.fields, current.as_deref());
                let mut writes = vec![delete(image_doc.clone())];
                if img.is_default {
                    writes.push(delete(pointer_doc.clone()));
                }
                Ok(Step::Commit(writes, Some(img)))
            }
        })
        .await
    }

    async fn create_secret(&self, s: &Secret) -> Result<(), StoreError> {
        let w = create(self.document(self.doc("secrets", &s.name), secret_fields(s)));
        match self.commit(vec![w], Vec::new()).await {
            Ok(()) => Ok(()),
            Err(e) if is_exists_conflict(&e) => Err(StoreError::AlreadyExists(s.name.clone())),
            Err(e) => Err(grpc("create secret", e)),
        }
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        self.get_doc(&self.doc("secrets", name), None)
            .await?
            .map(|d| secret_from(&d.fields))
            .transpose()
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>, StoreError> {
        let docs = self.query_top(query(&self.col("secrets"))).await?;
        let mut out = docs
            .iter()
            .map(|d| secret_from(&d.fields))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn update_secret(
        &self,
        name: &str,
        patch: &SecretPatch,
    ) -> Result<Option<Secret>, StoreError> {
        let doc = self.doc("secrets", name);
        self.transact("update secret", move |tx| {
            let doc = doc.clone();
            async move {
                let Some(d) = tx.get(&doc).await? else {
                    return Ok(Step::Abort(None));
                };
                let mut cur = secret_from(&d.fields)?;
                cur.apply(patch);
                let w = upsert(tx.store.document(doc.clone(), secret_fields(&cur)));
                Ok(Step::Commit(vec![w], Some(cur)))
            }
        })
        .await
    }

    async fn delete_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let doc = self.doc("secrets", name);
        self.transact("delete secret", move |tx| {
            let doc = doc.clone();
            async move {
                let Some(d) = tx.get(&doc).await? else {
                    return Ok(Step::Abort(None));
                };
                let cur = secret_from(&d.fields)?;
                Ok(Step::Commit(vec![delete(doc.clone())], Some(cur)))
            }
        })
        .await
    }

    async fn probe_write(&self, now_ms: i64) -> Result<(), StoreError> {
        let mut f = Fields::new();
        f.insert("at_ms".into(), int(now_ms));
        self.write_all(vec![upsert(
            self.document(self.doc("meta", "write_probe"), f),
        )])
        .await
    }

    /// A Firestore listen on the execution's document and on its log batches past
    /// `after_seq`: records written by any instance wake this instance's followers.
    fn watch_execution(&self, execution_id: &str, after_seq: u64) -> Option<watch::Receiver<u64>> {
        let (tx, rx) = watch::channel(0u64);
        let store = self.clone();
        let id = execution_id.to_owned();
        tokio::spawn(async move { store.feed(&id, after_seq, tx).await });
        Some(rx)
    }
}

/// Wait before re-opening a listen that broke, doubled up to [`LISTEN_RETRY_MAX`].
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(200);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

impl FirestoreStore {
    /// Keeps one execution's listen open until every receiver of `tx` is gone.
    async fn feed(&self, id: &str, after_seq: u64, tx: watch::Sender<u64>) {
        let mut wait = LISTEN_RETRY_MIN;
        loop {
            let opened = std::time::Instant::now();
            tokio::select! {
                _ = tx.closed() => return,
                r = self.listen(id, after_seq, &tx) => {
                    if let Err(e) = r {
                        tracing::debug!(execution_id = %id, error = %e, "log listen broke");
                    }
                }
            }
            // Whatever changed while the listen was down is only seen by re-reading.
            tx.send_modify(|n| *n = n.wrapping_add(1));
            if opened.elapsed() > LISTEN_RETRY_MAX {
                wait = LISTEN_RETRY_MIN;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(LISTEN_RETRY_MAX);
        }
    }

    /// One listen stream: bumps `tx` on every document change it reports.
    async fn listen(
        &self,
        id: &str,
        after_seq: u64,
        tx: &watch::Sender<u64>,
    ) -> Result<(), String> {
        use firestore::gcloud_sdk::google::firestore::v1::{
            ListenRequest, Target, listen_request::TargetChange, listen_response::ResponseType,
            target,
        };
        use futures_util::StreamExt;
        // Only changes from about now on: the follower reads what is already stored itself.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
            - 1_000;
        let read_time = ts(since);
        let mut logs = query("logs");
        logs.r#where = Some(filter("last_seq", Op::GreaterThan, uint(after_seq)));
        let targets = [
            (
                1,
                target::TargetType::Query(target::QueryTarget {
                    parent: self.logs_parent(id),
                    query_type: Some(target::query_target::QueryType::StructuredQuery(logs)),
                }),
            ),
            (
                2,
                target::TargetType::Documents(target::DocumentsTarget {
                    documents: vec![self.exec_doc(id)],
                }),
            ),
        ];
        let requests: Vec<ListenRequest> = targets
            .into_iter()
            .map(|(target_id, t)| ListenRequest {
                database: self.inner.database.clone(),
                target_change: Some(TargetChange::AddTarget(Target {
                    target_id,
                    target_type: Some(t),
                    resume_type: Some(target::ResumeType::ReadTime(read_time)),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        // The request side must stay open for as long as the listen runs.
        let outgoing = futures_util::stream::iter(requests).chain(futures_util::stream::pending());
        let mut incoming = self
            .client()
            .listen(firestore::gcloud_sdk::tonic::Request::new(outgoing))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        // A target first sends its current documents (also after a reset) and then CURRENT:
        // those are what the follower reads itself. Changes count once their target is
        // current, and each CURRENT counts once, for what changed before it.
        let mut current: HashSet<i32> = HashSet::new();
        let bump = || tx.send_modify(|n| *n = n.wrapping_add(1));
        while let Some(msg) = incoming.next().await {
            let msg = msg.map_err(|e| e.to_string())?;
            let targets = match msg.response_type {
                Some(ResponseType::TargetChange(t)) => {
                    use firestore::gcloud_sdk::google::firestore::v1::target_change::TargetChangeType;
                    match TargetChangeType::try_from(t.target_change_type) {
                        Ok(TargetChangeType::Current) => {
                            current.extend(&t.target_ids);
                            bump();
                        }
                        Ok(TargetChangeType::Reset | TargetChangeType::Remove) => {
                            for id in &t.target_ids {
                                current.remove(id);
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
                Some(ResponseType::DocumentChange(c)) => c.target_ids,
                Some(ResponseType::DocumentDelete(d)) => d.removed_target_ids,
                Some(ResponseType::DocumentRemove(r)) => r.removed_target_ids,
                _ => continue,
            };
            if targets.iter().any(|t| current.contains(t)) {
                bump();
            }
        }
        Ok(())
    }
}

impl FirestoreStore {
    /// Creating a user: its document and its key's, both refused when they exist.
    fn user_writes(&self, u: &User) -> Vec<Write> {
        vec![
            create(self.document(self.doc("users", &u.email), user_fields(u))),
            create(self.document(self.doc("user_keys", &u.key_hash), self.key_fields(u))),
        ]
    }

    fn key_fields(&self, u: &User) -> Fields {
        let mut f = Fields::new();
        f.insert("email".into(), string(&u.email));
        if let Some(at) = u.claim_expires_at_ms {
            f.insert("expires_at".into(), timestamp(at));
        }
        f
    }

    /// Moving a user's key document from `old` to its current key hash.
    fn key_change(&self, u: &User, old: &str) -> Vec<Write> {
        if old == u.key_hash {
            return vec![upsert(
                self.document(self.doc("user_keys", &u.key_hash), self.key_fields(u)),
            )];
        }
        vec![
            delete(self.doc("user_keys", old)),
            upsert(self.document(self.doc("user_keys", &u.key_hash), self.key_fields(u))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, len: usize) -> LogRecord {
        LogRecord {
            seq,
            stream: Stream::Stdout,
            ts_ms: 0,
            data: vec![b'x'; len],
            eol: true,
        }
    }

    #[test]
    fn batches_hold_at_most_500_records_and_stay_under_the_document_limit() {
        let short: Vec<LogRecord> = (1..=1001).map(|s| rec(s, 10)).collect();
        let sizes: Vec<usize> = chunk(&short).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [500, 500, 1]);
        // 64 KiB records, the runner's largest: 15 fit under 1,000,000 bytes.
        let long: Vec<LogRecord> = (1..=40).map(|s| rec(s, 64 * 1024)).collect();
        let parts = chunk(&long);
        assert!(parts.len() > 1);
        for p in &parts {
            let bytes: usize = p.iter().map(record_size).sum();
            assert!(bytes <= MAX_DOC_BYTES, "{bytes}");
        }
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 40);
    }

    #[test]
    fn document_ids_never_hold_a_slash() {
        assert_eq!(doc_id("a/b%c@x"), "a%2Fb%25c@x");
    }

    #[test]
    fn timestamps_split_milliseconds() {
        let Some(ValueType::TimestampValue(t)) = timestamp(1_500).value_type else {
            panic!("timestamp");
        };
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
