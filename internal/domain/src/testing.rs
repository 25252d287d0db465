//! In-memory adapters and a shared conformance suite, for tests (feature `testing`).
//!
//! * [`MemStore`]: a [`Store`] in memory that can be told to lose log records or go down.
//! * [`FakeCompute`]: a [`Compute`] whose state tests set directly.
//! * [`FakeLogSource`]: a [`LogSource`] holding the runner's "true" records.
//! * [`store_conformance`]: the behaviour every [`Store`] adapter must have; each adapter crate
//!   runs it against its own store.
//! * [`cipher_conformance`]: the same for every [`Cipher`](crate::ports::Cipher) adapter.
//! * [`compute_conformance`]: the behaviour every [`Compute`] adapter must have, run against a
//!   real platform or a fake that plays one ([`ComputePlatform`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use runvoy_proto::{ReconcileIssue, ReconcileReport, Status, record::Stream};

mod cipher;
pub use cipher::cipher_conformance;

use crate::images::{Image, ImageConfig, image_id, parse_reference};
use crate::model::{Execution, ExitInfo, JobSpec, LogRecord, Role, User};
use crate::ports::Sealed;
use crate::ports::{
    Claim, ClaimOutcome, Compute, ComputeError, ComputeState, ListQuery, Lock, LockedCreate,
    LogSource, LogStats, MakeDefault, Registered, ServerLogLine, Store, StoreError,
    USED_CLAIM_KEEP_MS, UserChange, UserUpdate,
};
use crate::secrets::{Secret, SecretPatch};

/// A new STARTING execution created at `now_ms`.
pub fn execution(id: &str, now_ms: i64) -> Execution {
    Execution {
        id: id.to_owned(),
        created_by: "dev@example.com".into(),
        command: "echo hi".into(),
        argv: None,
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
        dropped_log_lines: 0,
        dropped_log_bytes: 0,
        kill_requested_at_ms: None,
        stopped_by: None,
        created_by_request_id: "req-1".into(),
        modified_by_request_id: "req-1".into(),
        compute_platform: "fake".into(),
        lock: None,
        version: 0,
    }
}

/// An image of `reference` (which must parse) with `memory_mb`, registered by request `rid`
/// at `now_ms`, not the default.
pub fn image(reference: &str, memory_mb: Option<u64>, rid: &str, now_ms: i64) -> Image {
    let r = parse_reference(reference).expect("a valid reference");
    let config = ImageConfig {
        memory_mb,
        ..Default::default()
    };
    Image {
        id: image_id(&r, &config),
        image: reference.to_owned(),
        registry: r.registry.clone(),
        name: r.name.clone(),
        tag: r.tag_part(),
        cpu_millis: None,
        memory_mb,
        timeout_secs: None,
        service_account: None,
        is_default: false,
        created_by: "ops@example.com".into(),
        created_at_ms: now_ms,
        created_by_request_id: rid.to_owned(),
        modified_by_request_id: rid.to_owned(),
    }
}

/// A job spec running the shell line `command` in `image`, with nothing else set (no timeout,
/// a 1 s kill grace); tests override what they need with `..job_spec(…)`.
pub fn job_spec(id: &str, command: &str, image: &str) -> JobSpec {
    JobSpec {
        execution_id: id.to_owned(),
        command: command.to_owned(),
        argv: None,
        stdin: None,
        image: image.to_owned(),
        image_settings: None,
        env: BTreeMap::new(),
        timeout_secs: None,
        kill_grace_secs: 1,
        banner: Vec::new(),
        max_output_bytes: 0,
        max_output_lines: 0,
        resources: Default::default(),
        secrets: Vec::new(),
        secrets_fetch: None,
        git: None,
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
        dropped_lines: 0,
        dropped_bytes: 0,
        unwritten_lines: 0,
        unwritten_bytes: 0,
    }
}

/// A stored claim and when it was used.
struct MemClaim {
    claim: Claim,
    claimed_at_ms: Option<i64>,
}

#[derive(Default)]
struct Mem {
    execs: HashMap<String, Execution>,
    logs: HashMap<String, BTreeMap<u64, LogRecord>>,
    users: BTreeMap<String, User>,
    /// Keyed by token hash (the token itself is never stored).
    claims: HashMap<String, MemClaim>,
    /// Oldest first.
    server_logs: VecDeque<ServerLogLine>,
    /// Newest first.
    reports: Vec<ReconcileReport>,
    lose: HashMap<String, HashSet<u64>>,
    locks: BTreeMap<String, Lock>,
    images: BTreeMap<String, Image>,
    secrets: BTreeMap<String, Secret>,
}

impl Mem {
    /// True when a user other than `email` has this key hash (the key hash is unique).
    fn key_taken(&self, key_hash: &str, email: &str) -> bool {
        self.users
            .values()
            .any(|u| u.key_hash == key_hash && u.email != email)
    }
}

/// Counts towards "at least one active admin".
fn active_admin(u: &User) -> bool {
    u.role == Role::Admin && !u.revoked && u.claim_expires_at_ms.is_none()
}

fn key_conflict() -> StoreError {
    StoreError::Unavailable("key hash already in use".into())
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
    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &Lock,
        now_ms: i64,
    ) -> Result<LockedCreate, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        if m.execs.contains_key(&e.id) {
            return Err(StoreError::AlreadyExists(e.id.clone()));
        }
        if let Some(cur) = m.locks.get(&lock.name)
            && cur.expires_at_ms >= now_ms
        {
            return Ok(LockedCreate::Held(cur.clone()));
        }
        m.locks.insert(lock.name.clone(), lock.clone());
        m.execs.insert(e.id.clone(), e.clone());
        Ok(LockedCreate::Created)
    }
    async fn get_lock(&self, name: &str) -> Result<Option<Lock>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").locks.get(name).cloned())
    }
    async fn list_locks(&self) -> Result<Vec<Lock>, StoreError> {
        self.check()?;
        Ok(self
            .m
            .lock()
            .expect("mem")
            .locks
            .values()
            .cloned()
            .collect())
    }
    async fn renew_lock(
        &self,
        name: &str,
        execution_id: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        match m.locks.get_mut(name) {
            Some(l) if l.execution_id == execution_id => {
                l.expires_at_ms = expires_at_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn release_lock(&self, name: &str, execution_id: &str) -> Result<bool, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        if m.locks
            .get(name)
            .is_some_and(|l| l.execution_id == execution_id)
        {
            m.locks.remove(name);
            return Ok(true);
        }
        Ok(false)
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
            .filter(|e| q.since_ms.is_none_or(|t| e.created_at_ms >= t))
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
                next.lock = cur.lock.clone();
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
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.check()?;
        Ok(self
            .m
            .lock()
            .expect("mem")
            .users
            .values()
            .cloned()
            .collect())
    }
    async fn create_user_with_claim(&self, u: &User, claim: &Claim) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        let reinvite = m
            .users
            .get(&u.email)
            .is_some_and(|old| old.claim_expires_at_ms.is_some() && !old.revoked);
        if (m.users.contains_key(&u.email) && !reinvite) || m.key_taken(&u.key_hash, &u.email) {
            return Err(StoreError::AlreadyExists(u.email.clone()));
        }
        if m.claims.contains_key(&claim.token_hash) {
            // Like a failed insert in one transaction: neither the user nor the claim is kept.
            return Err(StoreError::Unavailable(
                "claim token hash already in use".into(),
            ));
        }
        if reinvite {
            m.claims
                .retain(|_, c| c.claim.email != u.email || c.claimed_at_ms.is_some());
        }
        m.users.insert(u.email.clone(), u.clone());
        m.claims.insert(
            claim.token_hash.clone(),
            MemClaim {
                claim: claim.clone(),
                claimed_at_ms: None,
            },
        );
        Ok(())
    }
    async fn redeem_claim(
        &self,
        token_hash: &str,
        key_hash: &str,
        now_ms: i64,
        request_id: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        self.check()?;
        // One lock for the whole check-and-set: two redemptions cannot both succeed.
        let mut m = self.m.lock().expect("mem");
        let Some(c) = m.claims.get(token_hash) else {
            return Ok(ClaimOutcome::NotFound);
        };
        if c.claimed_at_ms.is_some() {
            return Ok(ClaimOutcome::AlreadyClaimed);
        }
        if c.claim.expires_at_ms < now_ms {
            return Ok(ClaimOutcome::NotFound);
        }
        let email = c.claim.email.clone();
        match m.users.get(&email) {
            Some(u) if !u.revoked && u.claim_expires_at_ms.is_some() => {}
            _ => return Ok(ClaimOutcome::NotFound),
        }
        if m.key_taken(key_hash, &email) {
            return Err(key_conflict());
        }
        let u = m.users.get_mut(&email).expect("checked above");
        u.key_hash = key_hash.to_owned();
        u.claim_expires_at_ms = None;
        u.modified_by_request_id = request_id.to_owned();
        let u = u.clone();
        m.claims
            .get_mut(token_hash)
            .expect("checked above")
            .claimed_at_ms = Some(now_ms);
        Ok(ClaimOutcome::Claimed(u))
    }
    async fn update_user(
        &self,
        email: &str,
        change: &UserChange,
        request_id: &str,
    ) -> Result<UserUpdate, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        let Some(cur) = m.users.get(email) else {
            return Ok(UserUpdate::NotFound);
        };
        let mut next = cur.clone();
        match change {
            UserChange::Role(r) if !cur.revoked => next.role = *r,
            UserChange::Revoke => next.revoked = true,
            UserChange::KeyHash(h) if !cur.revoked && cur.claim_expires_at_ms.is_none() => {
                if m.key_taken(h, email) {
                    return Err(key_conflict());
                }
                next.key_hash = h.clone();
            }
            _ => return Ok(UserUpdate::NotFound),
        }
        next.modified_by_request_id = request_id.to_owned();
        let admins_left = m
            .users
            .values()
            .filter(|u| u.email != email && active_admin(u))
            .count()
            + usize::from(active_admin(&next));
        if admins_left == 0 {
            return Ok(UserUpdate::LastAdmin);
        }
        m.users.insert(email.to_owned(), next.clone());
        Ok(UserUpdate::Updated(next))
    }
    async fn purge_unclaimed(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        let before = m.users.len();
        m.users
            .retain(|_, u| u.claim_expires_at_ms.is_none_or(|x| x >= now_ms));
        let purged = (before - m.users.len()) as u64;
        m.claims.retain(|_, c| match c.claimed_at_ms {
            None => c.claim.expires_at_ms >= now_ms,
            Some(at) => at >= now_ms - USED_CLAIM_KEEP_MS,
        });
        Ok(purged)
    }
    async fn users_by_request(&self, request_id: &str) -> Result<Vec<User>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        Ok(m.users
            .values()
            .filter(|u| {
                u.created_by_request_id == request_id || u.modified_by_request_id == request_id
            })
            .cloned()
            .collect())
    }
    async fn executions_by_request(&self, request_id: &str) -> Result<Vec<Execution>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        let mut v: Vec<Execution> = m
            .execs
            .values()
            .filter(|e| {
                e.created_by_request_id == request_id || e.modified_by_request_id == request_id
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        v.truncate(1000);
        Ok(v)
    }
    async fn append_server_logs(
        &self,
        lines: &[ServerLogLine],
        keep: u64,
    ) -> Result<(), StoreError> {
        self.check()?;
        if lines.is_empty() {
            return Ok(());
        }
        let mut m = self.m.lock().expect("mem");
        m.server_logs.extend(lines.iter().cloned());
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        let excess = m.server_logs.len().saturating_sub(keep);
        m.server_logs.drain(..excess);
        Ok(())
    }
    async fn server_logs(
        &self,
        request_id: &str,
        limit: usize,
    ) -> Result<Vec<ServerLogLine>, StoreError> {
        self.check()?;
        let m = self.m.lock().expect("mem");
        Ok(m.server_logs
            .iter()
            .filter(|l| l.request_id == request_id)
            .take(limit)
            .cloned()
            .collect())
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
    async fn register_image(
        &self,
        image: &Image,
        default: MakeDefault,
    ) -> Result<Registered, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        let created = !m.images.contains_key(&image.id);
        if created {
            let mut i = image.clone();
            i.is_default = false;
            m.images.insert(i.id.clone(), i);
        }
        let make = match default {
            MakeDefault::Yes => true,
            MakeDefault::IfNone => !m.images.values().any(|i| i.is_default),
            MakeDefault::No => false,
        };
        if make && !m.images[&image.id].is_default {
            for i in m.images.values_mut() {
                if i.is_default || i.id == image.id {
                    i.is_default = i.id == image.id;
                    i.modified_by_request_id = image.modified_by_request_id.clone();
                }
            }
        }
        Ok(Registered {
            image: m.images[&image.id].clone(),
            created,
        })
    }
    async fn get_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").images.get(id).cloned())
    }
    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        self.check()?;
        Ok(self
            .m
            .lock()
            .expect("mem")
            .images
            .values()
            .cloned()
            .collect())
    }
    async fn delete_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").images.remove(id))
    }
    async fn create_secret(&self, s: &Secret) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        if m.secrets.contains_key(&s.name) {
            return Err(StoreError::AlreadyExists(s.name.clone()));
        }
        m.secrets.insert(s.name.clone(), s.clone());
        Ok(())
    }
    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").secrets.get(name).cloned())
    }
    async fn list_secrets(&self) -> Result<Vec<Secret>, StoreError> {
        self.check()?;
        Ok(self
            .m
            .lock()
            .expect("mem")
            .secrets
            .values()
            .cloned()
            .collect())
    }
    async fn update_secret(
        &self,
        name: &str,
        patch: &SecretPatch,
    ) -> Result<Option<Secret>, StoreError> {
        self.check()?;
        let mut m = self.m.lock().expect("mem");
        Ok(m.secrets.get_mut(name).map(|cur| {
            cur.apply(patch);
            cur.clone()
        }))
    }
    async fn delete_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        self.check()?;
        Ok(self.m.lock().expect("mem").secrets.remove(name))
    }
    async fn probe_write(&self, _now_ms: i64) -> Result<(), StoreError> {
        self.check()
    }
}

/// A [`Compute`] whose per-execution state the test sets.
#[derive(Default)]
pub struct FakeCompute {
    states: Mutex<HashMap<String, ComputeState>>,
    prepared: Mutex<Vec<String>>,
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
    /// Image references prepared so far, in order (with repeats).
    pub fn prepared(&self) -> Vec<String> {
        self.prepared.lock().expect("fake").clone()
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
    fn runs_images(&self) -> bool {
        true
    }
    async fn prepare_image(&self, image: &crate::images::ImageSpec) -> Result<(), ComputeError> {
        self.prepared
            .lock()
            .expect("fake")
            .push(image.image.clone());
        Ok(())
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
    down: AtomicBool,
    settle_ms: std::sync::atomic::AtomicI64,
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
    /// While down, every read fails (an unreadable record file, Cloud Logging unavailable).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    /// Makes the source lag like Cloud Logging ([`LogSource::settle_ms`]).
    pub fn set_settle_ms(&self, ms: i64) {
        self.settle_ms.store(ms, Ordering::SeqCst);
    }
}

#[async_trait]
impl LogSource for FakeLogSource {
    fn settle_ms(&self) -> i64 {
        self.settle_ms.load(Ordering::SeqCst)
    }

    async fn read_records(
        &self,
        id: &str,
        after_seq: u64,
    ) -> Result<(Vec<LogRecord>, Option<ExitInfo>), ComputeError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ComputeError::Unavailable("log source is down".into()));
        }
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
    a.dropped_log_lines = 7;
    a.dropped_log_bytes = 1 << 40;
    a.stopped_by = Some("admin@example.com".into());
    assert!(s.update_execution(&a).await.expect("cas"));
    let stored = s.get_execution(&a.id).await.expect("get").expect("row");
    assert_eq!(stored.status, Status::Running);
    assert_eq!(stored.version, 1);
    assert_eq!(
        (stored.dropped_log_lines, stored.dropped_log_bytes),
        (7, 1 << 40)
    );
    assert_eq!(stored.stopped_by.as_deref(), Some("admin@example.com"));
    s.probe_write(2_000).await.expect("probe write");
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
    // An argv command keeps its exact words, empty ones included.
    c.argv = Some(vec![
        "printf".into(),
        "%s|".into(),
        "".into(),
        "it's".into(),
    ]);
    c.command = runvoy_proto::shell_join(c.argv.as_deref().unwrap_or_default());
    s.create_execution(&c).await.expect("create");
    assert_eq!(s.get_execution(&c.id).await.expect("get"), Some(c.clone()));
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
    // By creator and creation time (inclusive), combined with each other and with paging.
    let mut other = execution(&id(50), 2_500);
    other.created_by = "other@example.com".into();
    other.status = Status::Succeeded;
    other.logs_complete = true;
    other.created_by_request_id = "req-list".into();
    other.modified_by_request_id = "req-list".into();
    s.create_execution(&other).await.expect("create");
    let ids = |v: Vec<Execution>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let list = |created_by: Option<&str>, since_ms: Option<i64>, limit: usize| {
        let q = ListQuery {
            limit,
            created_by: created_by.map(str::to_owned),
            since_ms,
            ..Default::default()
        };
        async move { s.list_executions(&q).await.expect("list") }
    };
    assert_eq!(
        ids(list(None, Some(2_000), 10).await.0),
        [id(3), id(50), id(2)]
    );
    assert_eq!(
        ids(list(Some("dev@example.com"), Some(2_000), 10).await.0),
        [id(3), id(2)]
    );
    assert_eq!(
        ids(list(Some("other@example.com"), None, 10).await.0),
        [id(50)]
    );
    assert!(
        list(Some("nobody@example.com"), None, 10)
            .await
            .0
            .is_empty()
    );
    assert!(list(None, Some(3_001), 10).await.0.is_empty());
    let (first, cursor) = list(None, Some(2_000), 2).await;
    assert_eq!(ids(first), [id(3), id(50)]);
    let (rest, end) = s
        .list_executions(&ListQuery {
            limit: 2,
            since_ms: Some(2_000),
            cursor,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!((ids(rest), end), (vec![id(2)], None));

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

    // Executions by request: created or last changed by it, newest first.
    let ids = |v: Vec<Execution>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let mut e1 = s.get_execution(&id(1)).await.expect("get").expect("row");
    e1.modified_by_request_id = "req-kill".into();
    assert!(s.update_execution(&e1).await.expect("cas"));
    let mut e4 = execution(&id(4), 4_000);
    e4.created_by_request_id = "req-exec".into();
    e4.modified_by_request_id = "req-exec".into();
    s.create_execution(&e4).await.expect("create");
    let mut e2 = s.get_execution(&id(2)).await.expect("get").expect("row");
    e2.modified_by_request_id = "req-exec".into();
    assert!(s.update_execution(&e2).await.expect("cas"));
    let by_req = |r: &'static str| s.executions_by_request(r);
    assert_eq!(
        ids(by_req("req-exec").await.expect("trace")),
        [id(4), id(2)]
    );
    assert_eq!(ids(by_req("req-kill").await.expect("trace")), [id(1)]);
    assert_eq!(
        ids(by_req("req-1").await.expect("trace")),
        [id(3), id(2), id(1)],
        "the creating request still finds a row changed since"
    );
    assert!(by_req("req-none").await.expect("trace").is_empty());

    // Users: create, duplicates refused, listed by email.
    let user = |email: &str, role: Role, key_hash: &str, rid: &str| User {
        email: email.to_owned(),
        role,
        key_hash: key_hash.to_owned(),
        created_at_ms: 1_000,
        revoked: false,
        last_used_ms: None,
        claim_expires_at_ms: None,
        created_by: "runvoyd".into(),
        created_by_request_id: rid.to_owned(),
        modified_by_request_id: rid.to_owned(),
    };
    let emails = |v: Vec<User>| v.into_iter().map(|u| u.email).collect::<Vec<_>>();
    assert_eq!(s.count_users().await.expect("count"), 0);
    assert!(s.list_users().await.expect("list users").is_empty());
    let dev = user("dev@example.com", Role::Developer, "key-dev", "req-dev");
    let admin = user("admin@example.com", Role::Admin, "key-admin", "");
    s.create_user(&dev).await.expect("create user");
    s.create_user(&admin).await.expect("create user");
    assert!(
        matches!(
            s.create_user(&user("dev@example.com", Role::Viewer, "key-other", ""))
                .await,
            Err(StoreError::AlreadyExists(_))
        ),
        "duplicate email"
    );
    assert!(
        matches!(
            s.create_user(&user("other@example.com", Role::Viewer, "key-dev", ""))
                .await,
            Err(StoreError::AlreadyExists(_))
        ),
        "duplicate key hash"
    );
    assert_eq!(
        s.list_users().await.expect("list users"),
        vec![admin.clone(), dev.clone()]
    );
    assert_eq!(s.count_users().await.expect("count"), 2);
    assert_eq!(
        s.user_by_key_hash("key-admin").await.expect("by key"),
        Some(admin.clone())
    );

    // Claims: an unclaimed user and its claim are created together; a claim works once.
    let unclaimed = |email: &str, role: Role, n: u8, rid: &str, expires: i64| {
        let mut u = user(email, role, &format!("unclaimed-{n}"), rid);
        u.claim_expires_at_ms = Some(expires);
        let c = Claim {
            token_hash: format!("token-hash-{n}"),
            email: email.to_owned(),
            created_at_ms: 1_000,
            expires_at_ms: expires,
        };
        (u, c)
    };
    let (new_u, new_c) = unclaimed("new@example.com", Role::Developer, 1, "req-create", 10_000);
    s.create_user_with_claim(&new_u, &new_c)
        .await
        .expect("create with claim");
    let (dup_u, dup_c) = unclaimed("dev@example.com", Role::Viewer, 2, "req-dup", 10_000);
    assert!(matches!(
        s.create_user_with_claim(&dup_u, &dup_c).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let redeem = |t: &'static str, k: &'static str, now: i64, rid: &'static str| {
        s.redeem_claim(t, k, now, rid)
    };
    assert_eq!(
        redeem("token-hash-2", "key-dup", 5_000, "req-x")
            .await
            .expect("redeem"),
        ClaimOutcome::NotFound,
        "the claim of a refused creation is not kept"
    );
    assert_eq!(
        s.user_by_email("dev@example.com").await.expect("by email"),
        Some(dev.clone())
    );
    assert_eq!(
        redeem("no-such-hash", "key-x", 5_000, "req-x")
            .await
            .expect("redeem"),
        ClaimOutcome::NotFound
    );
    assert_eq!(
        redeem("token-hash-1", "key-new", 10_001, "req-late")
            .await
            .expect("redeem"),
        ClaimOutcome::NotFound,
        "expired"
    );
    assert_eq!(
        s.user_by_email("new@example.com").await.expect("by email"),
        Some(new_u.clone()),
        "an expired claim changes nothing"
    );
    let mut claimed = new_u.clone();
    claimed.key_hash = "key-new".into();
    claimed.claim_expires_at_ms = None;
    claimed.modified_by_request_id = "req-claim".into();
    assert_eq!(
        redeem("token-hash-1", "key-new", 10_000, "req-claim")
            .await
            .expect("redeem"),
        ClaimOutcome::Claimed(claimed.clone()),
        "still valid at its expiry"
    );
    assert_eq!(
        s.user_by_key_hash("key-new").await.expect("by key"),
        Some(claimed.clone())
    );
    assert_eq!(
        redeem("token-hash-1", "key-again", 10_000, "req-again")
            .await
            .expect("redeem"),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(s.user_by_key_hash("key-again").await.expect("by key"), None);
    assert_eq!(
        s.user_by_email("new@example.com").await.expect("by email"),
        Some(claimed.clone())
    );
    // The claim of a revoked user does not work.
    let (gone_u, gone_c) = unclaimed("gone@example.com", Role::Viewer, 3, "req-gone", 20_000);
    s.create_user_with_claim(&gone_u, &gone_c)
        .await
        .expect("create with claim");
    let UserUpdate::Updated(g) = s
        .update_user("gone@example.com", &UserChange::Revoke, "req-revoke")
        .await
        .expect("revoke")
    else {
        panic!("revoking an unclaimed user applies");
    };
    assert!(g.revoked);
    assert_eq!(g.modified_by_request_id, "req-revoke");
    assert_eq!(
        redeem("token-hash-3", "key-gone", 15_000, "req-x")
            .await
            .expect("redeem"),
        ClaimOutcome::NotFound
    );
    let (pending_u, pending_c) =
        unclaimed("pending@example.com", Role::Admin, 4, "req-pending", 30_000);
    s.create_user_with_claim(&pending_u, &pending_c)
        .await
        .expect("create with claim");
    let (late_u, late_c) = unclaimed("late@example.com", Role::Developer, 5, "req-late", 10_000);
    s.create_user_with_claim(&late_u, &late_c)
        .await
        .expect("create with claim");

    // Changing users: at least one active admin (role admin, not revoked, claimed) remains.
    let change = |email: &'static str, c: UserChange, rid: &'static str| async move {
        s.update_user(email, &c, rid).await.expect("update user")
    };
    assert_eq!(
        change(
            "nobody@example.com",
            UserChange::Role(Role::Viewer),
            "req-x"
        )
        .await,
        UserUpdate::NotFound
    );
    assert_eq!(
        change("admin@example.com", UserChange::Role(Role::Viewer), "req-x").await,
        UserUpdate::LastAdmin,
        "an unclaimed admin does not count"
    );
    assert_eq!(
        change("admin@example.com", UserChange::Revoke, "req-x").await,
        UserUpdate::LastAdmin
    );
    assert_eq!(
        s.user_by_email("admin@example.com")
            .await
            .expect("by email"),
        Some(admin.clone()),
        "a refused change writes nothing"
    );
    assert_eq!(
        change(
            "late@example.com",
            UserChange::KeyHash("key-late".into()),
            "req-x"
        )
        .await,
        UserUpdate::NotFound,
        "no key for an unclaimed user"
    );
    assert_eq!(s.user_by_key_hash("key-late").await.expect("by key"), None);
    let mut promoted = claimed.clone();
    promoted.role = Role::Admin;
    promoted.modified_by_request_id = "req-promote".into();
    assert_eq!(
        change(
            "new@example.com",
            UserChange::Role(Role::Admin),
            "req-promote"
        )
        .await,
        UserUpdate::Updated(promoted.clone())
    );
    let mut revoked = admin.clone();
    revoked.revoked = true;
    revoked.modified_by_request_id = "req-revoke-admin".into();
    assert_eq!(
        change("admin@example.com", UserChange::Revoke, "req-revoke-admin").await,
        UserUpdate::Updated(revoked.clone()),
        "another active admin remains"
    );
    assert_eq!(
        change("admin@example.com", UserChange::Role(Role::Admin), "req-x").await,
        UserUpdate::NotFound,
        "no role for a revoked user"
    );
    assert_eq!(
        change(
            "admin@example.com",
            UserChange::KeyHash("key-x".into()),
            "req-x"
        )
        .await,
        UserUpdate::NotFound,
        "no key for a revoked user"
    );
    assert_eq!(
        change("new@example.com", UserChange::Role(Role::Operator), "req-x").await,
        UserUpdate::LastAdmin
    );
    assert_eq!(
        change("new@example.com", UserChange::Revoke, "req-x").await,
        UserUpdate::LastAdmin
    );
    let mut rotated = promoted.clone();
    rotated.key_hash = "key-rotated".into();
    rotated.modified_by_request_id = "req-rotate".into();
    assert_eq!(
        change(
            "new@example.com",
            UserChange::KeyHash("key-rotated".into()),
            "req-rotate"
        )
        .await,
        UserUpdate::Updated(rotated.clone())
    );
    assert_eq!(s.user_by_key_hash("key-new").await.expect("by key"), None);
    assert_eq!(
        s.user_by_key_hash("key-rotated").await.expect("by key"),
        Some(rotated.clone())
    );
    // An unclaimed user's role may change (last changed by "req-batch", like dev@ below).
    let UserUpdate::Updated(l) = change(
        "late@example.com",
        UserChange::Role(Role::Viewer),
        "req-batch",
    )
    .await
    else {
        panic!("role of an unclaimed user");
    };
    assert_eq!(l.role, Role::Viewer);
    assert_eq!(l.claim_expires_at_ms, Some(10_000));
    assert!(matches!(
        change(
            "dev@example.com",
            UserChange::Role(Role::Operator),
            "req-batch"
        )
        .await,
        UserUpdate::Updated(_)
    ));

    // Users by request: created or last changed by it, sorted by email.
    let users_by = |r: &'static str| s.users_by_request(r);
    assert_eq!(
        emails(users_by("req-batch").await.expect("trace")),
        ["dev@example.com", "late@example.com"]
    );
    assert_eq!(
        users_by("req-create").await.expect("trace"),
        vec![rotated.clone()],
        "the creating request still finds a user changed since"
    );
    assert_eq!(
        users_by("req-rotate").await.expect("trace"),
        vec![rotated.clone()]
    );
    assert!(users_by("req-promote").await.expect("trace").is_empty());
    assert!(users_by("req-none").await.expect("trace").is_empty());

    // Purge: unclaimed users whose claim expired, then used claims once old.
    assert_eq!(s.purge_unclaimed(10_000).await.expect("purge"), 0);
    assert_eq!(s.purge_unclaimed(10_001).await.expect("purge"), 1);
    assert_eq!(
        s.user_by_email("late@example.com").await.expect("get"),
        None
    );
    assert_eq!(s.purge_unclaimed(10_001).await.expect("purge"), 0);
    assert_eq!(
        s.purge_unclaimed(30_001).await.expect("purge"),
        2,
        "revoked or admin, unclaimed users expire too"
    );
    assert_eq!(
        emails(s.list_users().await.expect("list users")),
        ["admin@example.com", "dev@example.com", "new@example.com"]
    );
    assert_eq!(s.count_users().await.expect("count"), 3);
    // token-hash-1 was used at 10_000.
    assert_eq!(
        s.purge_unclaimed(10_000 + USED_CLAIM_KEEP_MS)
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        redeem(
            "token-hash-1",
            "key-x",
            10_000 + USED_CLAIM_KEEP_MS,
            "req-x"
        )
        .await
        .expect("redeem"),
        ClaimOutcome::AlreadyClaimed,
        "a used claim is kept for a while"
    );
    s.purge_unclaimed(10_001 + USED_CLAIM_KEEP_MS)
        .await
        .expect("purge");
    assert_eq!(
        redeem(
            "token-hash-1",
            "key-x",
            10_001 + USED_CLAIM_KEEP_MS,
            "req-x"
        )
        .await
        .expect("redeem"),
        ClaimOutcome::NotFound,
        "then deleted"
    );
    assert_eq!(
        s.user_by_email("new@example.com").await.expect("get"),
        Some(rotated),
        "claimed users are never purged"
    );

    // Re-inviting: a user still unclaimed is replaced with its claim (the old token dies); a
    // claimed user is not.
    let (inv_u, inv_c) = unclaimed("again@example.com", Role::Developer, 20, "req-inv1", 50_000);
    s.create_user_with_claim(&inv_u, &inv_c)
        .await
        .expect("create with claim");
    let (re_u, re_c) = unclaimed("again@example.com", Role::Viewer, 21, "req-inv2", 60_000);
    s.create_user_with_claim(&re_u, &re_c)
        .await
        .expect("re-inviting an unclaimed user works");
    assert_eq!(
        s.user_by_email("again@example.com").await.expect("get"),
        Some(re_u.clone())
    );
    assert_eq!(
        redeem("token-hash-20", "key-inv1", 40_000, "req-x")
            .await
            .expect("redeem"),
        ClaimOutcome::NotFound,
        "the earlier invitation's token no longer works"
    );
    let mut re_claimed = re_u.clone();
    re_claimed.key_hash = "key-inv2".into();
    re_claimed.claim_expires_at_ms = None;
    re_claimed.modified_by_request_id = "req-inv-claim".into();
    assert_eq!(
        redeem("token-hash-21", "key-inv2", 40_000, "req-inv-claim")
            .await
            .expect("redeem"),
        ClaimOutcome::Claimed(re_claimed.clone())
    );
    let (again_u, again_c) = unclaimed("again@example.com", Role::Admin, 22, "req-inv3", 70_000);
    assert!(matches!(
        s.create_user_with_claim(&again_u, &again_c).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.user_by_email("again@example.com").await.expect("get"),
        Some(re_claimed),
        "a claimed user is never replaced"
    );

    // Server logs: per request oldest first; only the newest `keep` lines (all requests) kept.
    let line = |n: u64, rid: &str| ServerLogLine {
        ts_ms: 5_000,
        request_id: rid.to_owned(),
        line: format!("{{\"n\":{n}}}"),
    };
    let logs_of = |r: &'static str, limit: usize| s.server_logs(r, limit);
    assert!(logs_of("r-a", 10).await.expect("server logs").is_empty());
    s.append_server_logs(&[], 3).await.expect("append nothing");
    s.append_server_logs(&[line(1, "r-a"), line(2, "r-b"), line(3, "r-a")], 100)
        .await
        .expect("append server logs");
    s.append_server_logs(&[line(4, "r-a"), line(5, "r-b")], 100)
        .await
        .expect("append server logs");
    assert_eq!(
        logs_of("r-a", 10).await.expect("server logs"),
        vec![line(1, "r-a"), line(3, "r-a"), line(4, "r-a")]
    );
    assert_eq!(
        logs_of("r-a", 2).await.expect("server logs"),
        vec![line(1, "r-a"), line(3, "r-a")]
    );
    assert_eq!(
        logs_of("r-b", 10).await.expect("server logs"),
        vec![line(2, "r-b"), line(5, "r-b")]
    );
    assert!(logs_of("r-c", 10).await.expect("server logs").is_empty());
    s.append_server_logs(&[line(6, "r-b")], 3)
        .await
        .expect("append server logs");
    assert_eq!(
        logs_of("r-a", 10).await.expect("server logs"),
        vec![line(4, "r-a")]
    );
    assert_eq!(
        logs_of("r-b", 10).await.expect("server logs"),
        vec![line(5, "r-b"), line(6, "r-b")]
    );
    let many: Vec<ServerLogLine> = (7..=10).map(|n| line(n, "r-a")).collect();
    s.append_server_logs(&many, 2)
        .await
        .expect("append server logs");
    assert_eq!(
        logs_of("r-a", 10).await.expect("server logs"),
        vec![line(9, "r-a"), line(10, "r-a")],
        "a batch larger than `keep` keeps its newest lines"
    );
    assert!(logs_of("r-b", 10).await.expect("server logs").is_empty());

    // Reconcile reports: newest first, only the newest `keep` kept.
    assert!(s.recent_reports(10).await.expect("reports").is_empty());
    for n in 1..=5 {
        s.save_report(&report(n), 3).await.expect("save report");
    }
    let got = s.recent_reports(10).await.expect("reports");
    assert_eq!(got, vec![report(5), report(4), report(3)]);
    assert_eq!(s.recent_reports(1).await.expect("reports"), vec![report(5)]);
    s.save_report(&report(6), 2).await.expect("save report");
    assert_eq!(
        s.recent_reports(10).await.expect("reports"),
        vec![report(6), report(5)]
    );

    lock_conformance(s).await;
    image_conformance(s).await;
    secret_conformance(s).await;
}

/// A secret with a recognisable sealed value (the store never opens it).
pub fn secret(name: &str, tag: u8) -> Secret {
    Secret {
        name: name.into(),
        key_name: "API_TOKEN".into(),
        description: format!("secret {name}"),
        value: Sealed {
            version: Sealed::VERSION,
            kek: "local:test".into(),
            wrapped_key: vec![tag; 40],
            nonce: vec![tag; 12],
            ciphertext: vec![tag, 0, 255, tag],
        },
        created_by: "dev@example.com".into(),
        created_at_ms: 1_000 + i64::from(tag),
        updated_by: "dev@example.com".into(),
        updated_at_ms: 1_000 + i64::from(tag),
        created_by_request_id: format!("req-create-{tag}"),
        modified_by_request_id: format!("req-create-{tag}"),
    }
}

/// Secrets: every field round-trips, a duplicate create is refused and leaves the stored value
/// untouched (concurrent creates included: exactly one wins), updates patch atomically, delete
/// returns what was deleted.
async fn secret_conformance(s: &dyn Store) {
    assert!(s.list_secrets().await.expect("list secrets").is_empty());
    let a = secret("db-password", 1);
    s.create_secret(&a).await.expect("create secret");
    assert_eq!(
        s.get_secret("db-password").await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(s.get_secret("nope").await.expect("get"), None);
    let mut dup = secret("db-password", 2);
    dup.created_by = "other@example.com".into();
    assert!(matches!(
        s.create_secret(&dup).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.get_secret("db-password").await.expect("get"),
        Some(a.clone()),
        "a duplicate create must leave the stored secret untouched"
    );
    let b = secret("api.key_2", 3);
    s.create_secret(&b).await.expect("create b");
    let names: Vec<String> = s
        .list_secrets()
        .await
        .expect("list")
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, vec!["api.key_2", "db-password"]);

    // A patch changes only what it names, plus the audit fields.
    let patch = SecretPatch {
        key_name: None,
        description: Some("rotated".into()),
        value: Some(secret("x", 9).value),
        updated_by: "admin@example.com".into(),
        updated_at_ms: 9_000,
        request_id: "req-update".into(),
    };
    let updated = s
        .update_secret("db-password", &patch)
        .await
        .expect("update")
        .expect("exists");
    let mut want = a.clone();
    want.apply(&patch);
    assert_eq!(updated, want);
    assert_eq!(updated.key_name, "API_TOKEN");
    assert_eq!(updated.created_by, "dev@example.com");
    assert_eq!(s.get_secret("db-password").await.expect("get"), Some(want));
    assert_eq!(s.update_secret("nope", &patch).await.expect("update"), None);
    assert_eq!(s.get_secret("nope").await.expect("get"), None);

    assert_eq!(s.delete_secret("api.key_2").await.expect("delete"), Some(b));
    assert_eq!(s.delete_secret("api.key_2").await.expect("delete"), None);

    // Concurrent creates of one name: exactly one wins, and the stored value is the winner's.
    let tries: Vec<Secret> = (10..16).map(|t| secret("race", t)).collect();
    let make = |i: usize| s.create_secret(&tries[i]);
    let (r0, r1, r2, r3, r4, r5) =
        tokio::join!(make(0), make(1), make(2), make(3), make(4), make(5));
    let results = [r0, r1, r2, r3, r4, r5];
    let won: Vec<&Secret> = tries
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::AlreadyExists(_))))
    );
    assert_eq!(
        s.get_secret("race").await.expect("get").as_ref(),
        Some(won[0])
    );
    for n in ["race", "db-password"] {
        s.delete_secret(n).await.expect("delete");
    }
}

/// The ids of the default images in `s` (the registry allows at most one).
async fn defaults(s: &dyn Store) -> Vec<String> {
    s.list_images()
        .await
        .expect("list images")
        .into_iter()
        .filter(|i| i.is_default)
        .map(|i| i.id)
        .collect()
}

/// Images: every field round-trips, registration is idempotent, the first image becomes the
/// default, the default moves atomically (never two, concurrent registrations included) and
/// deleting it leaves none.
async fn image_conformance(s: &dyn Store) {
    assert!(s.list_images().await.expect("list images").is_empty());
    assert_eq!(
        s.get_image("alpine:latest-00000000").await.expect("get"),
        None
    );
    assert_eq!(
        s.delete_image("alpine:latest-00000000")
            .await
            .expect("delete"),
        None
    );

    // Every field, optional ones set, round-trips; ids with '/', ':' and '@' are fine.
    let mut full = image(
        "ghcr.io/acme/tools/cli:1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        Some(2048),
        "r-full",
        1_000,
    );
    full.cpu_millis = Some(1500);
    full.timeout_secs = Some(600);
    full.service_account = Some("runner@p.iam.gserviceaccount.com".into());
    let got = s
        .register_image(&full, MakeDefault::No)
        .await
        .expect("register");
    assert_eq!(
        got,
        Registered {
            image: full.clone(),
            created: true
        }
    );
    assert_eq!(
        s.get_image(&full.id).await.expect("get"),
        Some(full.clone())
    );
    assert_eq!(defaults(s).await, Vec::<String>::new(), "MakeDefault::No");

    // The first image registered with IfNone while none is the default becomes it.
    let a = image("alpine:3.19", None, "r-a", 2_000);
    let got = s
        .register_image(&a, MakeDefault::IfNone)
        .await
        .expect("register");
    assert!(got.created && got.image.is_default, "{got:?}");
    assert_eq!(defaults(s).await, vec![a.id.clone()]);

    // Registering again stores nothing new: the first registration is kept.
    let mut again = a.clone();
    again.created_at_ms = 9_999;
    again.created_by = "other@example.com".into();
    again.created_by_request_id = "r-again".into();
    again.modified_by_request_id = "r-again".into();
    let got = s
        .register_image(&again, MakeDefault::IfNone)
        .await
        .expect("register again");
    assert!(!got.created);
    assert_eq!(
        (
            got.image.created_at_ms,
            got.image.created_by.as_str(),
            got.image.modified_by_request_id.as_str()
        ),
        (2_000, "ops@example.com", "r-a"),
        "an idempotent registration changes nothing"
    );
    assert_eq!(
        s.list_images().await.expect("list").len(),
        2,
        "no duplicate"
    );

    // IfNone while a default exists: not the default.
    let b = image("alpine:3.20", None, "r-b", 3_000);
    let got = s
        .register_image(&b, MakeDefault::IfNone)
        .await
        .expect("register");
    assert!(got.created && !got.image.is_default);
    assert_eq!(defaults(s).await, vec![a.id.clone()]);

    // Yes moves the default; the previous default is marked changed by the same request.
    let c = image("alpine:3.20", Some(512), "r-c", 4_000);
    assert_ne!(b.id, c.id);
    let got = s
        .register_image(&c, MakeDefault::Yes)
        .await
        .expect("register");
    assert!(got.created && got.image.is_default);
    assert_eq!(defaults(s).await, vec![c.id.clone()]);
    let old = s.get_image(&a.id).await.expect("get").expect("a");
    assert!(!old.is_default);
    assert_eq!(old.modified_by_request_id, "r-c");
    assert_eq!(old.created_by_request_id, "r-a");

    // Yes on an image registered before moves it there too.
    let mut b_default = b.clone();
    b_default.modified_by_request_id = "r-b2".into();
    let got = s
        .register_image(&b_default, MakeDefault::Yes)
        .await
        .expect("register");
    assert!(!got.created && got.image.is_default);
    assert_eq!(got.image.modified_by_request_id, "r-b2");
    assert_eq!(got.image.created_by_request_id, "r-b");
    assert_eq!(defaults(s).await, vec![b.id.clone()]);
    // ... and No or IfNone on the default keeps it the default.
    let got = s
        .register_image(&b, MakeDefault::No)
        .await
        .expect("register");
    assert!(got.image.is_default);
    assert_eq!(defaults(s).await, vec![b.id.clone()]);

    // Sorted by id.
    let ids: Vec<String> = s
        .list_images()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 4);

    // Deleting the default leaves none; the next IfNone registration becomes the default.
    let gone = s
        .delete_image(&b.id)
        .await
        .expect("delete")
        .expect("was there");
    assert!(gone.is_default);
    assert_eq!(s.get_image(&b.id).await.expect("get"), None);
    assert_eq!(s.delete_image(&b.id).await.expect("delete again"), None);
    assert_eq!(defaults(s).await, Vec::<String>::new());
    let got = s
        .register_image(&a, MakeDefault::IfNone)
        .await
        .expect("register");
    assert!(
        !got.created && got.image.is_default,
        "an existing image fills the vacancy"
    );
    assert_eq!(defaults(s).await, vec![a.id.clone()]);

    // Concurrent registrations asking for the default: exactly one default afterwards, and it
    // is one of them.
    let racers: Vec<Image> = (0..6u64)
        .map(|n| {
            image(
                &format!("registry.example.com/race/app:{n}"),
                None,
                &format!("r-race{n}"),
                5_000,
            )
        })
        .collect();
    let reg = |i: usize| s.register_image(&racers[i], MakeDefault::Yes);
    let (r0, r1, r2, r3, r4, r5) = tokio::join!(reg(0), reg(1), reg(2), reg(3), reg(4), reg(5));
    for r in [r0, r1, r2, r3, r4, r5] {
        assert!(r.expect("register").created);
    }
    let d = defaults(s).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(racers.iter().any(|r| r.id == d[0]), "{d:?}");

    // Concurrent first registrations (IfNone) after the default is gone: exactly one wins.
    s.delete_image(&d[0]).await.expect("delete");
    let firsts: Vec<Image> = (0..6u64)
        .map(|n| {
            image(
                &format!("registry.example.com/first/app:{n}"),
                None,
                &format!("r-first{n}"),
                6_000,
            )
        })
        .collect();
    let reg = |i: usize| s.register_image(&firsts[i], MakeDefault::IfNone);
    let (r0, r1, r2, r3, r4, r5) = tokio::join!(reg(0), reg(1), reg(2), reg(3), reg(4), reg(5));
    let won = [r0, r1, r2, r3, r4, r5]
        .map(|r| r.expect("register"))
        .iter()
        .filter(|r| r.image.is_default)
        .count();
    assert_eq!(won, 1, "exactly one first image becomes the default");
    assert_eq!(defaults(s).await.len(), 1);
}

/// Locks: taken atomically with the execution, refused while held, lapsed leases replaced,
/// renew and release only by the holder, and exactly one winner among concurrent takers.
async fn lock_conformance(s: &dyn Store) {
    let id = |n: u8| format!("c{n:031x}");
    let lock = |name: &str, exec: &str, at: i64, until: i64| Lock {
        name: name.into(),
        execution_id: exec.into(),
        holder: "dev@example.com".into(),
        acquired_at_ms: at,
        expires_at_ms: until,
    };
    let locked = |exec: &str, name: &str| {
        let mut e = execution(exec, 10_000);
        e.lock = Some(name.into());
        e
    };
    assert_eq!(s.get_lock("deploy").await.expect("get lock"), None);
    assert!(s.list_locks().await.expect("locks").is_empty());

    let a = locked(&id(1), "deploy");
    let la = lock("deploy", &a.id, 10_000, 70_000);
    assert_eq!(
        s.create_execution_locked(&a, &la, 10_000)
            .await
            .expect("take"),
        LockedCreate::Created
    );
    assert_eq!(
        s.get_execution(&a.id).await.expect("get"),
        Some(a.clone()),
        "the execution is created with its lock name"
    );
    assert_eq!(
        s.get_lock("deploy").await.expect("get lock"),
        Some(la.clone())
    );

    // Held: the second taker gets the holder and nothing is written.
    let b = locked(&id(2), "deploy");
    let lb = lock("deploy", &b.id, 20_000, 80_000);
    assert_eq!(
        s.create_execution_locked(&b, &lb, 20_000)
            .await
            .expect("take"),
        LockedCreate::Held(la.clone())
    );
    assert_eq!(s.get_execution(&b.id).await.expect("get"), None);
    // A lease still runs at exactly its end.
    assert_eq!(
        s.create_execution_locked(&b, &lb, 70_000)
            .await
            .expect("take"),
        LockedCreate::Held(la.clone())
    );
    // Another name is independent.
    let c = locked(&id(3), "backup");
    let lc = lock("backup", &c.id, 20_000, 80_000);
    assert_eq!(
        s.create_execution_locked(&c, &lc, 20_000)
            .await
            .expect("take"),
        LockedCreate::Created
    );
    // A taken execution id takes no lock.
    let dup = lock("other", &a.id, 20_000, 80_000);
    assert!(matches!(
        s.create_execution_locked(&a, &dup, 20_000).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(s.get_lock("other").await.expect("get lock"), None);
    assert_eq!(
        s.list_locks()
            .await
            .expect("locks")
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>(),
        ["backup", "deploy"]
    );

    // Renew and release compare the holder.
    assert!(!s.renew_lock("deploy", &b.id, 99_000).await.expect("renew"));
    assert!(!s.renew_lock("nope", &a.id, 99_000).await.expect("renew"));
    assert!(s.renew_lock("deploy", &a.id, 90_000).await.expect("renew"));
    assert_eq!(
        s.get_lock("deploy")
            .await
            .expect("get lock")
            .map(|l| l.expires_at_ms),
        Some(90_000)
    );
    assert!(!s.release_lock("deploy", &b.id).await.expect("release"));
    assert!(s.get_lock("deploy").await.expect("get lock").is_some());

    // A lapsed lease is replaced by the next taker.
    assert_eq!(
        s.create_execution_locked(&b, &lb, 90_001)
            .await
            .expect("take"),
        LockedCreate::Created
    );
    assert_eq!(
        s.get_lock("deploy").await.expect("get lock"),
        Some(lb.clone())
    );
    assert!(
        !s.release_lock("deploy", &a.id).await.expect("release"),
        "the former holder no longer releases it"
    );
    assert!(s.release_lock("deploy", &b.id).await.expect("release"));
    assert!(!s.release_lock("deploy", &b.id).await.expect("release"));
    assert_eq!(s.get_lock("deploy").await.expect("get lock"), None);

    // Free again: taken at once.
    let d = locked(&id(4), "deploy");
    let ld = lock("deploy", &d.id, 100_000, 160_000);
    assert_eq!(
        s.create_execution_locked(&d, &ld, 100_000)
            .await
            .expect("take"),
        LockedCreate::Created
    );
    assert!(s.release_lock("deploy", &d.id).await.expect("release"));

    // Concurrent takers of one free lock: exactly one wins, the others see it as the holder.
    let racers: Vec<(Execution, Lock)> = (0..6u8)
        .map(|n| {
            let e = locked(&id(10 + n), "race");
            let l = lock("race", &e.id, 200_000, 260_000);
            (e, l)
        })
        .collect();
    let take = |i: usize| s.create_execution_locked(&racers[i].0, &racers[i].1, 200_000);
    let (r0, r1, r2, r3, r4, r5) =
        tokio::join!(take(0), take(1), take(2), take(3), take(4), take(5));
    let results = [r0, r1, r2, r3, r4, r5].map(|r| r.expect("take"));
    let winners: Vec<usize> = (0..6)
        .filter(|&i| results[i] == LockedCreate::Created)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = &racers[winners[0]].0.id;
    for (i, r) in results.iter().enumerate() {
        if i == winners[0] {
            continue;
        }
        assert!(
            matches!(r, LockedCreate::Held(l) if &l.execution_id == winner),
            "{r:?}"
        );
        assert_eq!(s.get_execution(&racers[i].0.id).await.expect("get"), None);
    }
    assert_eq!(
        s.get_lock("race")
            .await
            .expect("get lock")
            .map(|l| l.execution_id),
        Some(winner.clone())
    );
}

/// The platform side of [`compute_conformance`]: what a real compute does by itself and a fake
/// is told to do.
#[async_trait]
pub trait ComputePlatform: Send + Sync {
    /// A spec for execution `id` that runs the shell line `command` in an image this compute runs.
    fn spec(&self, id: &str, command: &str) -> JobSpec;
    /// The command of `id` (`exit CODE`) ends with `code`. Real compute runs it: nothing to do.
    async fn command_exits(&self, id: &str, code: i32);
    /// The command of `id` (a long `sleep`) is running. Real compute: nothing to do.
    async fn command_runs(&self, id: &str);
}

/// Polls `state` until `done` accepts it, for at most `secs` seconds; returns the last state.
async fn state_until(
    c: &dyn Compute,
    id: &str,
    secs: u64,
    done: impl Fn(&ComputeState) -> bool,
) -> ComputeState {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let s = c.state(id).await.expect("state");
        if done(&s) || std::time::Instant::now() >= until {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The behaviour every [`Compute`] adapter must have, kept small and backend-neutral: start is
/// idempotent, state moves from Pending/Running to Exited with the exit code, a kill of a running
/// execution ends it, list contains what was started, cleanup after the end removes it (then
/// NotFound), and an unknown id is NotFound. Panics on the first violation.
pub async fn compute_conformance(c: &dyn Compute, p: &dyn ComputePlatform) {
    let unknown = crate::model::new_execution_id();
    assert_eq!(
        c.state(&unknown).await.expect("state of an unknown id"),
        ComputeState::NotFound
    );

    // Start twice: one execution, which ends with its command's exit code.
    let a = crate::model::new_execution_id();
    let spec = p.spec(&a, "exit 3");
    c.start(&spec).await.expect("start");
    c.start(&spec).await.expect("start again (idempotent)");
    let first = c.state(&a).await.expect("state");
    assert!(
        matches!(
            first,
            ComputeState::Pending | ComputeState::Running | ComputeState::Exited(_)
        ),
        "a started execution is known: {first:?}"
    );
    let listed = c.list().await.expect("list");
    assert_eq!(
        listed.iter().filter(|i| **i == a).count(),
        1,
        "list holds a started execution once: {listed:?}"
    );
    p.command_exits(&a, 3).await;
    let end = state_until(c, &a, 60, |s| matches!(s, ComputeState::Exited(_))).await;
    let ComputeState::Exited(x) = end else {
        panic!("the execution did not end: {end:?}");
    };
    assert_eq!(
        x.runner
            .as_ref()
            .map(|r| r.exit_code)
            .or(x.process_exit_code),
        Some(3),
        "the command's exit code: {x:?}"
    );

    // Cleanup after the end: true once (an adapter may still be reading it for a moment), then
    // NotFound and nothing more to remove.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !c.cleanup(&a).await.expect("cleanup") {
        assert!(
            std::time::Instant::now() < until,
            "cleanup of an ended execution never removed it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(c.state(&a).await.expect("state"), ComputeState::NotFound);
    assert!(!c.cleanup(&a).await.expect("cleanup again"));
    assert!(!c.list().await.expect("list").contains(&a));

    // Kill of a running execution ends it.
    let b = crate::model::new_execution_id();
    c.start(&p.spec(&b, "sleep 60")).await.expect("start");
    p.command_runs(&b).await;
    let running = state_until(c, &b, 60, |s| *s == ComputeState::Running).await;
    assert_eq!(running, ComputeState::Running, "a sleeping command runs");
    c.kill(&b).await.expect("kill");
    let end = state_until(c, &b, 60, |s| matches!(s, ComputeState::Exited(_))).await;
    assert!(
        matches!(end, ComputeState::Exited(_)),
        "a killed execution ends: {end:?}"
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !c.cleanup(&b).await.expect("cleanup") {
        assert!(std::time::Instant::now() < until, "cleanup after a kill");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod compute_conformance_tests {
    use super::*;

    /// An in-memory compute that follows the contract; `skew` breaks its exit codes.
    struct Scripted {
        states: Mutex<HashMap<String, ComputeState>>,
        skew: i32,
    }

    #[async_trait]
    impl Compute for Scripted {
        fn platform(&self) -> &str {
            "scripted"
        }
        fn runs_images(&self) -> bool {
            true
        }
        async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
            self.states
                .lock()
                .expect("states")
                .entry(spec.execution_id.clone())
                .or_insert(ComputeState::Pending);
            Ok(())
        }
        async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
            let m = self.states.lock().expect("states");
            Ok(m.get(id).cloned().unwrap_or(ComputeState::NotFound))
        }
        async fn kill(&self, id: &str) -> Result<(), ComputeError> {
            self.end(id, 143);
            Ok(())
        }
        async fn list(&self) -> Result<Vec<String>, ComputeError> {
            Ok(self
                .states
                .lock()
                .expect("states")
                .keys()
                .cloned()
                .collect())
        }
        async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
            let mut m = self.states.lock().expect("states");
            if matches!(m.get(id), Some(ComputeState::Exited(_))) {
                m.remove(id);
                return Ok(true);
            }
            Ok(false)
        }
    }

    impl Scripted {
        fn end(&self, id: &str, code: i32) {
            self.states.lock().expect("states").insert(
                id.to_owned(),
                ComputeState::Exited(crate::ports::ComputeExit {
                    runner: None,
                    process_exit_code: Some(code + self.skew),
                    failure: None,
                }),
            );
        }
    }

    struct Play<'a>(&'a Scripted);

    #[async_trait]
    impl ComputePlatform for Play<'_> {
        fn spec(&self, id: &str, command: &str) -> JobSpec {
            job_spec(id, command, "img")
        }
        async fn command_exits(&self, id: &str, code: i32) {
            self.0.end(id, code);
        }
        async fn command_runs(&self, id: &str) {
            self.0
                .states
                .lock()
                .expect("states")
                .insert(id.to_owned(), ComputeState::Running);
        }
    }

    #[tokio::test]
    async fn a_conforming_compute_passes() {
        let c = Scripted {
            states: Mutex::default(),
            skew: 0,
        };
        compute_conformance(&c, &Play(&c)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "the command's exit code")]
    async fn a_wrong_exit_code_fails() {
        let c = Scripted {
            states: Mutex::default(),
            skew: 1,
        };
        compute_conformance(&c, &Play(&c)).await;
    }
}
