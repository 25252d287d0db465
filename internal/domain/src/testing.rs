//! In-memory adapters and a shared conformance suite, for tests (feature `testing`).
//!
//! * [`MemStore`]: a [`Store`] in memory that can be told to lose log records or go down.
//! * [`FakeCompute`]: a [`Compute`] whose state tests set directly.
//! * [`FakeLogSource`]: a [`LogSource`] holding the runner's "true" records.
//! * [`store_conformance`]: the behaviour every [`Store`] adapter must have; each adapter crate
//!   runs it against its own store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use runvoy_proto::{ReconcileIssue, ReconcileReport, Status, record::Stream};

use crate::model::{Execution, ExitInfo, JobSpec, LogRecord, User};
use crate::ports::{
    Compute, ComputeError, ComputeState, ListQuery, LogSource, LogStats, Store, StoreError,
};

/// A new STARTING execution created at `now_ms`.
pub fn execution(id: &str, now_ms: i64) -> Execution {
    Execution {
        id: id.to_owned(),
        created_by: "dev@example.com".into(),
        command: "echo hi".into(),
        image: "local".into(),
        status: Status::Starting,
        exit_code: None,
        created_at_ms: now_ms,
        completed_at_ms: None,
        timeout_secs: None,
        timed_out: false,
        failure_reason: None,
        logs_complete: false,
        log_lines: None,
        kill_requested_at_ms: None,
        created_by_request_id: "req-1".into(),
        modified_by_request_id: "req-1".into(),
        compute_platform: "fake".into(),
        version: 0,
    }
}

/// A stdout record whose text is its seq.
pub fn record(seq: u64) -> LogRecord {
    LogRecord {
        seq,
        stream: Stream::Stdout,
        ts_ms: seq as i64,
        data: seq.to_string().into_bytes(),
        eol: true,
    }
}

/// A final record for `lines` records and exit code `code`.
pub fn exit_info(code: i32, lines: u64) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        lines,
        timed_out: false,
        killed: false,
        error: None,
    }
}

#[derive(Default)]
struct Mem {
    execs: HashMap<String, Execution>,
    logs: HashMap<String, BTreeMap<u64, LogRecord>>,
    users: HashMap<String, User>,
    reports: Vec<ReconcileReport>,
    lose: HashMap<String, HashSet<u64>>,
}

/// A [`Store`] in memory.
#[derive(Default)]
pub struct MemStore {
    m: Mutex<Mem>,
    down: AtomicBool,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next append of each of these seqs for `id` is silently dropped (as if a write was lost).
    pub fn lose(&self, id: &str, seqs: impl IntoIterator<Item = u64>) {
        let mut m = self.m.lock().expect("mem");
        m.lose.entry(id.to_owned()).or_default().extend(seqs);
    }

    /// While down, every call fails with [`StoreError::Unavailable`].
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every stored record of `id`, ascending.
    pub fn logs_of(&self, id: &str) -> Vec<LogRecord> {
        let m = self.m.lock().expect("mem");
        m.logs
            .get(id)
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemStore {
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        if m.execs.contains_key(&e.id) {
            return Err(StoreError::AlreadyExists(e.id.clone()));
        }
        m.execs.insert(e.id.clone(), e.clone());
        Ok(())
    }
    async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").execs.get(id).cloned())
    }
    async fn list_executions(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        let mut rows: Vec<Execution> = m
            .execs
            .values()
            .filter(|e| q.statuses.is_empty() || q.statuses.contains(&e.status))
            .filter(|e| q.created_by.as_ref().is_none_or(|u| &e.created_by == u))
            .cloned()
            .collect();
        rows.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        if let Some((ms, id)) = q.cursor.as_deref().and_then(|c| c.split_once('-')) {
            let ms: i64 = ms.parse().unwrap_or(i64::MAX);
            rows.retain(|e| (e.created_at_ms, e.id.as_str()) < (ms, id));
        }
        let limit = q.limit.max(1);
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            let l = rows.last().expect("non-empty");
            format!("{}-{}", l.created_at_ms, l.id)
        });
        Ok((rows, next))
    }
    async fn list_unsettled(&self) -> Result<Vec<Execution>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        let mut v: Vec<Execution> = m
            .execs
            .values()
            .filter(|e| !e.is_settled())
            .cloned()
            .collect();
        v.sort_by_key(|e| e.created_at_ms);
        Ok(v)
    }
    async fn update_execution(&self, e: &Execution) -> Result<bool, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        match m.execs.get_mut(&e.id) {
            Some(cur) if cur.version == e.version => {
                let mut next = e.clone();
                // Like the SQL adapter: identity and creation fields never change.
                next.created_by = cur.created_by.clone();
                next.command = cur.command.clone();
                next.image = cur.image.clone();
                next.created_at_ms = cur.created_at_ms;
                next.created_by_request_id = cur.created_by_request_id.clone();
                next.compute_platform = cur.compute_platform.clone();
                next.timeout_secs = cur.timeout_secs;
                next.version = cur.version + 1;
                *cur = next;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn append_logs(&self, id: &str, records: &[LogRecord]) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        let mut lost = m.lose.remove(id).unwrap_or_default();
        let logs = m.logs.entry(id.to_owned()).or_default();
        for r in records {
            if lost.remove(&r.seq) {
                continue;
            }
            logs.entry(r.seq).or_insert_with(|| r.clone());
        }
        if !lost.is_empty() {
            m.lose.insert(id.to_owned(), lost);
        }
        Ok(())
    }
    async fn read_logs(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        Ok(m.logs
            .get(id)
            .map(|l| {
                l.range(after_seq + 1..)
                    .take(limit)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
    async fn log_stats(&self, id: &str) -> Result<LogStats, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        let Some(l) = m.logs.get(id) else {
            return Ok(LogStats::default());
        };
        let mut contiguous = 0;
        while l.contains_key(&(contiguous + 1)) {
            contiguous += 1;
        }
        Ok(LogStats {
            count: l.len() as u64,
            max_seq: l.keys().next_back().copied().unwrap_or(0),
            contiguous,
        })
    }
    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        if m.users.contains_key(&u.email) || m.users.values().any(|x| x.key_hash == u.key_hash) {
            return Err(StoreError::AlreadyExists(u.email.clone()));
        }
        m.users.insert(u.email.clone(), u.clone());
        Ok(())
    }
    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        Ok(m.users.values().find(|u| u.key_hash == key_hash).cloned())
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").users.get(email).cloned())
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").users.len() as u64)
    }
    async fn touch_user(&self, email: &str, at_ms: i64) -> Result<(), StoreError> {
        self.check()?;
        if let Some(u) = self.m.lock().expect("mem").users.get_mut(email) {
            u.last_used_ms = Some(at_ms);
        }
        Ok(())
    }
    async fn save_report(&self, report: &ReconcileReport, keep: usize) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        m.reports.insert(0, report.clone());
        m.reports.truncate(keep);
        Ok(())
    }
    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        Ok(m.reports.iter().take(limit).cloned().collect())
    }
}

/// A [`Compute`] whose per-execution state the test sets.
#[derive(Default)]
pub struct FakeCompute {
    states: Mutex<HashMap<String, ComputeState>>,
    kills: Mutex<Vec<String>>,
    cleaned: Mutex<Vec<String>>,
    state_failures: AtomicU64,
}

impl FakeCompute {
    /// No executions.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets what `state(id)` answers.
    pub fn set(&self, id: &str, state: ComputeState) {
        self.states
            .lock()
            .expect("fake")
            .insert(id.to_owned(), state);
    }
    /// Ids killed so far, in order (with repeats).
    pub fn kills(&self) -> Vec<String> {
        self.kills.lock().expect("fake").clone()
    }
    /// Ids cleaned up so far.
    pub fn cleaned(&self) -> Vec<String> {
        self.cleaned.lock().expect("fake").clone()
    }
    /// The next `n` `state` calls fail transiently.
    pub fn fail_state(&self, n: u64) {
        self.state_failures.store(n, Ordering::SeqCst);
    }
}

#[async_trait]
impl Compute for FakeCompute {
    fn platform(&self) -> &str {
        "fake"
    }
    async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        self.states
            .lock()
            .expect("fake")
            .entry(spec.execution_id.clone())
            .or_insert(ComputeState::Pending);
        Ok(())
    }
    async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
        let left = self.state_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.state_failures.store(left - 1, Ordering::SeqCst);
            return Err(ComputeError::Unavailable("fake compute hiccup".into()));
        }
        Ok(self
            .states
            .lock()
            .expect("fake")
            .get(id)
            .cloned()
            .unwrap_or(ComputeState::NotFound))
    }
    async fn kill(&self, id: &str) -> Result<(), ComputeError> {
        self.kills.lock().expect("fake").push(id.to_owned());
        Ok(())
    }
    async fn list(&self) -> Result<Vec<String>, ComputeError> {
        let mut v: Vec<String> = self.states.lock().expect("fake").keys().cloned().collect();
        v.sort();
        Ok(v)
    }
    async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
        let removed = self.states.lock().expect("fake").remove(id).is_some();
        if removed {
            self.cleaned.lock().expect("fake").push(id.to_owned());
        }
        Ok(removed)
    }
}

/// Records and final record of one execution.
type SourceData = (Vec<LogRecord>, Option<ExitInfo>);

/// A [`LogSource`] holding what the runner wrote.
#[derive(Default)]
pub struct FakeLogSource {
    data: Mutex<HashMap<String, SourceData>>,
}

impl FakeLogSource {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets what the runner wrote for `id`.
    pub fn set(&self, id: &str, records: Vec<LogRecord>, exit: Option<ExitInfo>) {
        self.data
            .lock()
            .expect("fake")
            .insert(id.to_owned(), (records, exit));
    }
}

#[async_trait]
impl LogSource for FakeLogSource {
    async fn read_records(
        &self,
        id: &str,
        after_seq: u64,
    ) -> Result<(Vec<LogRecord>, Option<ExitInfo>), ComputeError> {
        let d = self.data.lock().expect("fake");
        Ok(d.get(id)
            .map(|(r, x)| {
                (
                    r.iter().filter(|r| r.seq > after_seq).cloned().collect(),
                    x.clone(),
                )
            })
            .unwrap_or_default())
    }
}

fn report(n: u64) -> ReconcileReport {
    ReconcileReport {
        timestamp: format!("2026-01-01T00:00:{n:02}.000Z"),
        trigger: "api".into(),
        checked: n,
        issues: vec![ReconcileIssue {
            severity: "warning".into(),
            resource_type: "execution".into(),
            resource_id: format!("id{n}"),
            action: "repaired".into(),
            message: "m".into(),
        }],
        ..Default::default()
    }
}

/// The behaviour every [`Store`] adapter must have. Call it with an empty store; panics on the
/// first violation.
pub async fn store_conformance(s: &dyn Store) {
    let id = |n: u8| format!("{:032x}", n);
    // Executions: create, duplicate, read.
    let mut a = execution(&id(1), 1_000);
    s.create_execution(&a).await.expect("create");
    assert!(matches!(
        s.create_execution(&a).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(s.get_execution(&a.id).await.expect("get"), Some(a.clone()));
    assert_eq!(s.get_execution(&id(99)).await.expect("get"), None);

    // Compare-and-set.
    a.status = Status::Running;
    assert!(s.update_execution(&a).await.expect("cas"));
    let stored = s.get_execution(&a.id).await.expect("get").expect("row");
    assert_eq!(stored.status, Status::Running);
    assert_eq!(stored.version, 1);
    a.status = Status::Failed;
    assert!(
        !s.update_execution(&a).await.expect("cas"),
        "a stale version must not write"
    );
    assert_eq!(
        s.get_execution(&a.id)
            .await
            .expect("get")
            .expect("row")
            .status,
        Status::Running
    );

    // Unsettled: non-terminal, or terminal with incomplete logs.
    let mut b = execution(&id(2), 2_000);
    b.status = Status::Succeeded;
    b.logs_complete = false;
    s.create_execution(&b).await.expect("create");
    let mut c = execution(&id(3), 3_000);
    c.status = Status::Failed;
    c.logs_complete = true;
    s.create_execution(&c).await.expect("create");
    let unsettled: Vec<String> = s
        .list_unsettled()
        .await
        .expect("unsettled")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        unsettled,
        vec![id(1), id(2)],
        "oldest first, settled left out"
    );

    // Listing: newest first, paged, filtered.
    let (page, next) = s
        .list_executions(&ListQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [id(3), id(2)]
    );
    let (page2, next2) = s
        .list_executions(&ListQuery {
            limit: 2,
            cursor: next,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page2.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [id(1)]
    );
    assert!(next2.is_none());
    let (running, _) = s
        .list_executions(&ListQuery {
            limit: 10,
            statuses: vec![Status::Running],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(running.len(), 1);

    // Logs: idempotent by seq, ordered, paged, gaps found.
    let x = id(1);
    assert_eq!(s.log_stats(&x).await.expect("stats"), LogStats::default());
    s.append_logs(&x, &[record(3), record(1), record(2)])
        .await
        .expect("append");
    let mut dup = record(2);
    dup.data = b"changed".to_vec();
    s.append_logs(&x, &[dup, record(5)]).await.expect("append");
    let all = s.read_logs(&x, 0, 100).await.expect("read");
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 5]);
    assert_eq!(all[1], record(2), "a re-delivered record never overwrites");
    assert_eq!(
        s.read_logs(&x, 1, 2)
            .await
            .expect("read")
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(
        s.log_stats(&x).await.expect("stats"),
        LogStats {
            count: 4,
            max_seq: 5,
            contiguous: 3
        }
    );
    s.append_logs(&x, &[record(4)]).await.expect("append");
    assert_eq!(s.log_stats(&x).await.expect("stats").contiguous, 5);
    let odd = LogRecord {
        seq: 6,
        stream: Stream::Stderr,
        ts_ms: 7,
        data: vec![0xff, 0, b'\n'],
        eol: false,
    };
    s.append_logs(&x, std::slice::from_ref(&odd))
        .await
        .expect("append");
    assert_eq!(s.read_logs(&x, 5, 10).await.expect("read"), vec![odd]);
    assert!(s.read_logs(&id(2), 0, 10).await.expect("read").is_empty());
    s.append_logs(&id(2), &[record(2)]).await.expect("append");
    assert_eq!(
        s.log_stats(&id(2)).await.expect("stats"),
        LogStats {
            count: 1,
            max_seq: 2,
            contiguous: 0
        }
    );

    // Users and claims have their own tests with the users work; not repeated here.

    // Reconcile reports: newest first, only the newest `keep` kept.
    assert!(s.recent_reports(10).await.expect("reports").is_empty());
    for n in 1..=5 {
        s.save_report(&report(n), 3).await.expect("save report");
    }
    let got = s.recent_reports(10).await.expect("reports");
    assert_eq!(got, vec![report(5), report(4), report(3)]);
    assert_eq!(s.recent_reports(1).await.expect("reports"), vec![report(5)]);
}
