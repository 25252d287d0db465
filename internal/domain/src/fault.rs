//! Fault injection for tests with the real binaries: decorators that make any [`Store`] or
//! [`Compute`] fail on demand, controlled by files in a directory so a test can switch faults on
//! and off while the server runs.
//!
//! Test-only: `runvoyd serve` wraps its adapters in these only when `RUNVOY_FAULT_INJECTION_DIR`
//! is set. Files in that directory:
//!
//! | file | effect |
//! |---|---|
//! | `store-down` | while it exists, every store call fails with [`StoreError::Unavailable`] |
//! | `compute-start-failures` | holds a number K: the next K `start` calls fail (transiently) |
//! | `compute-state-failures` | holds a number K: the next K `state` calls fail (transiently) |

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runvoy_proto::ReconcileReport;

use crate::model::{Execution, JobSpec, LogRecord, User};
use crate::ports::{
    Claim, ClaimOutcome, Compute, ComputeError, ComputeState, ListQuery, LogStats, ServerLogLine,
    Store, StoreError, UserChange, UserUpdate,
};

/// File whose presence takes the store down.
pub const STORE_DOWN: &str = "store-down";
/// File holding how many `start` calls still fail.
pub const COMPUTE_START_FAILURES: &str = "compute-start-failures";
/// File holding how many `state` calls still fail.
pub const COMPUTE_STATE_FAILURES: &str = "compute-state-failures";

/// A [`Store`] that fails every call while `<dir>/store-down` exists.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    flag: PathBuf,
}

impl FaultyStore {
    /// Wraps `inner`, watching `dir` for the flag file.
    pub fn new(inner: Arc<dyn Store>, dir: &Path) -> Self {
        FaultyStore {
            inner,
            flag: dir.join(STORE_DOWN),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.flag.exists() {
            return Err(StoreError::Unavailable(
                "injected fault: the store is down".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_execution(e).await
    }
    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &crate::ports::Lock,
        now_ms: i64,
    ) -> Result<crate::ports::LockedCreate, StoreError> {
        self.check()?;
        self.inner.create_execution_locked(e, lock, now_ms).await
    }
    async fn get_lock(&self, name: &str) -> Result<Option<crate::ports::Lock>, StoreError> {
        self.check()?;
        self.inner.get_lock(name).await
    }
    async fn list_locks(&self) -> Result<Vec<crate::ports::Lock>, StoreError> {
        self.check()?;
        self.inner.list_locks().await
    }
    async fn renew_lock(
        &self,
        name: &str,
        execution_id: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner
            .renew_lock(name, execution_id, expires_at_ms)
            .await
    }
    async fn release_lock(&self, name: &str, execution_id: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.release_lock(name, execution_id).await
    }
    async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        self.check()?;
        self.inner.get_execution(id).await
    }
    async fn list_executions(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), StoreError> {
        self.check()?;
        self.inner.list_executions(q).await
    }
    async fn list_unsettled(&self) -> Result<Vec<Execution>, StoreError> {
        self.check()?;
        self.inner.list_unsettled().await
    }
    async fn update_execution(&self, e: &Execution) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.update_execution(e).await
    }
    async fn append_logs(&self, id: &str, records: &[LogRecord]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_logs(id, records).await
    }
    async fn read_logs(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.check()?;
        self.inner.read_logs(id, after_seq, limit).await
    }
    async fn log_stats(&self, id: &str) -> Result<LogStats, StoreError> {
        self.check()?;
        self.inner.log_stats(id).await
    }
    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_user(u).await
    }
    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        self.check()?;
        self.inner.user_by_key_hash(key_hash).await
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.check()?;
        self.inner.user_by_email(email).await
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.count_users().await
    }
    async fn touch_user(&self, email: &str, at_ms: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.touch_user(email, at_ms).await
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.check()?;
        self.inner.list_users().await
    }
    async fn create_user_with_claim(&self, u: &User, claim: &Claim) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_user_with_claim(u, claim).await
    }
    async fn redeem_claim(
        &self,
        token_hash: &str,
        key_hash: &str,
        now_ms: i64,
        request_id: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        self.check()?;
        self.inner
            .redeem_claim(token_hash, key_hash, now_ms, request_id)
            .await
    }
    async fn update_user(
        &self,
        email: &str,
        change: &UserChange,
        request_id: &str,
    ) -> Result<UserUpdate, StoreError> {
        self.check()?;
        self.inner.update_user(email, change, request_id).await
    }
    async fn purge_unclaimed(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.purge_unclaimed(now_ms).await
    }
    async fn users_by_request(&self, request_id: &str) -> Result<Vec<User>, StoreError> {
        self.check()?;
        self.inner.users_by_request(request_id).await
    }
    async fn executions_by_request(&self, request_id: &str) -> Result<Vec<Execution>, StoreError> {
        self.check()?;
        self.inner.executions_by_request(request_id).await
    }
    async fn append_server_logs(
        &self,
        lines: &[ServerLogLine],
        keep: u64,
    ) -> Result<(), StoreError> {
        // Server log lines are written while the store is down too; failing them would only
        // lose diagnostics, so they pass through.
        self.inner.append_server_logs(lines, keep).await
    }
    async fn server_logs(
        &self,
        request_id: &str,
        limit: usize,
    ) -> Result<Vec<ServerLogLine>, StoreError> {
        self.check()?;
        self.inner.server_logs(request_id, limit).await
    }
    async fn save_report(&self, report: &ReconcileReport, keep: usize) -> Result<(), StoreError> {
        self.check()?;
        self.inner.save_report(report, keep).await
    }
    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError> {
        self.check()?;
        self.inner.recent_reports(limit).await
    }
    async fn register_image(
        &self,
        image: &crate::images::Image,
        default: crate::ports::MakeDefault,
    ) -> Result<crate::ports::Registered, StoreError> {
        self.check()?;
        self.inner.register_image(image, default).await
    }
    async fn get_image(&self, id: &str) -> Result<Option<crate::images::Image>, StoreError> {
        self.check()?;
        self.inner.get_image(id).await
    }
    async fn list_images(&self) -> Result<Vec<crate::images::Image>, StoreError> {
        self.check()?;
        self.inner.list_images().await
    }
    async fn delete_image(&self, id: &str) -> Result<Option<crate::images::Image>, StoreError> {
        self.check()?;
        self.inner.delete_image(id).await
    }
    async fn create_secret(&self, s: &crate::Secret) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_secret(s).await
    }
    async fn get_secret(&self, name: &str) -> Result<Option<crate::Secret>, StoreError> {
        self.check()?;
        self.inner.get_secret(name).await
    }
    async fn list_secrets(&self) -> Result<Vec<crate::Secret>, StoreError> {
        self.check()?;
        self.inner.list_secrets().await
    }
    async fn update_secret(
        &self,
        name: &str,
        patch: &crate::SecretPatch,
    ) -> Result<Option<crate::Secret>, StoreError> {
        self.check()?;
        self.inner.update_secret(name, patch).await
    }
    async fn delete_secret(&self, name: &str) -> Result<Option<crate::Secret>, StoreError> {
        self.check()?;
        self.inner.delete_secret(name).await
    }
    async fn probe_write(&self, now_ms: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.probe_write(now_ms).await
    }
    fn watch_execution(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.watch_execution(execution_id, after_seq)
    }
}

/// A [`Compute`] whose next K `start` / `state` calls fail with [`ComputeError::Unavailable`],
/// K read from a counter file that each failure decrements.
pub struct FaultyCompute {
    inner: Arc<dyn Compute>,
    dir: PathBuf,
    lock: Mutex<()>,
}

impl FaultyCompute {
    /// Wraps `inner`, reading counters in `dir`.
    pub fn new(inner: Arc<dyn Compute>, dir: &Path) -> Self {
        FaultyCompute {
            inner,
            dir: dir.to_owned(),
            lock: Mutex::new(()),
        }
    }

    /// Consumes one injected failure from `file`, if any is left.
    fn take(&self, file: &str, what: &str) -> Result<(), ComputeError> {
        let _g = self.lock.lock().expect("fault lock");
        let p = self.dir.join(file);
        let left: u64 = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if left == 0 {
            return Ok(());
        }
        let _ = std::fs::write(&p, (left - 1).to_string());
        Err(ComputeError::Unavailable(format!(
            "injected fault: compute {what} failed"
        )))
    }
}

#[async_trait]
impl Compute for FaultyCompute {
    fn platform(&self) -> &str {
        self.inner.platform()
    }
    fn delivers_secrets(&self) -> bool {
        self.inner.delivers_secrets()
    }
    fn runs_images(&self) -> bool {
        self.inner.runs_images()
    }
    async fn prepare_image(&self, image: &crate::images::ImageSpec) -> Result<(), ComputeError> {
        self.inner.prepare_image(image).await
    }
    async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        self.take(COMPUTE_START_FAILURES, "start")?;
        self.inner.start(spec).await
    }
    async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
        self.take(COMPUTE_STATE_FAILURES, "state")?;
        self.inner.state(id).await
    }
    async fn kill(&self, id: &str) -> Result<(), ComputeError> {
        self.inner.kill(id).await
    }
    async fn list(&self) -> Result<Vec<String>, ComputeError> {
        self.inner.list().await
    }
    async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
        self.inner.cleanup(id).await
    }
}
