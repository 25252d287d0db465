//! Store write health: [`MonitoredStore`] records the outcome of every write so that the
//! readiness check can say "store writes failing" while they do, and [`StoreHealth::check`]
//! probes the store until writes work again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use runvoy_proto::ReconcileReport;

use crate::model::{Execution, LogRecord, User};
use crate::ports::{
    Claim, ClaimOutcome, ListQuery, LogStats, ServerLogLine, Store, StoreError, UserChange,
    UserUpdate,
};

/// How often [`StoreHealth::check`] probes a store whose writes failed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// When no write has succeeded for this long, [`StoreHealth::check`] probes a healthy-looking
/// store too: a store that went away while idle is noticed without waiting for a real write.
const PROBE_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    /// Set from the first failed write until a write succeeds.
    failing_since: Option<Instant>,
    /// Failed writes in the current failing period.
    failures: u64,
    last_error: String,
    last_probe: Option<Instant>,
    last_ok: Option<Instant>,
}

/// Whether the store's writes currently fail. Shared by the store wrapper and the readiness
/// check.
#[derive(Debug, Default)]
pub struct StoreHealth {
    state: Mutex<State>,
}

impl StoreHealth {
    /// A healthy state.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a write's outcome. `AlreadyExists` is an answer, not a failure.
    pub fn record<T>(&self, res: &Result<T, StoreError>) {
        let mut s = self.state();
        match res {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {
                s.last_ok = Some(Instant::now());
                if let Some(since) = s.failing_since.take() {
                    tracing::info!(
                        failed_writes = s.failures,
                        after = ?since.elapsed(),
                        "store writes work again"
                    );
                    s.failures = 0;
                }
            }
            Err(StoreError::Unavailable(e)) => {
                if s.failing_since.is_none() {
                    s.failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, "store writes failing");
                }
                s.failures += 1;
                s.last_error = e.clone();
            }
        }
    }

    /// Why writes are failing, or `None` when the last write worked.
    pub fn failing(&self) -> Option<String> {
        let s = self.state();
        let since = s.failing_since?;
        Some(format!(
            "store writes failing for {}s ({} failed writes; last error: {})",
            since.elapsed().as_secs(),
            s.failures,
            s.last_error
        ))
    }

    /// The readiness answer for the store. Probes `store` with a write while writes are
    /// failing (at most once a second), so readiness recovers as soon as the store accepts
    /// writes even when nothing else writes, and when no write succeeded for 10 s, so a store
    /// that broke while idle is noticed. `store` should be the [`MonitoredStore`] that reports
    /// here.
    pub async fn check(&self, store: &dyn Store, now_ms: i64) -> Option<String> {
        let due = {
            let mut s = self.state();
            let recent = |t: Option<Instant>, d: Duration| t.is_some_and(|t| t.elapsed() < d);
            let due = if s.failing_since.is_some() {
                !recent(s.last_probe, PROBE_EVERY)
            } else {
                !recent(s.last_ok, PROBE_IDLE) && !recent(s.last_probe, PROBE_EVERY)
            };
            if due {
                s.last_probe = Some(Instant::now());
            }
            due
        };
        if due {
            // The outcome is recorded by the monitored store itself.
            let _ = store.probe_write(now_ms).await;
        }
        self.failing()
    }
}

/// A [`Store`] that reports the outcome of every write to a [`StoreHealth`].
pub struct MonitoredStore {
    inner: Arc<dyn Store>,
    health: Arc<StoreHealth>,
}

impl MonitoredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, health: Arc<StoreHealth>) -> Self {
        MonitoredStore { inner, health }
    }

    fn seen<T>(&self, res: Result<T, StoreError>) -> Result<T, StoreError> {
        self.health.record(&res);
        res
    }
}

#[async_trait]
impl Store for MonitoredStore {
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError> {
        self.seen(self.inner.create_execution(e).await)
    }
    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &crate::ports::Lock,
        now_ms: i64,
    ) -> Result<crate::ports::LockedCreate, StoreError> {
        self.seen(self.inner.create_execution_locked(e, lock, now_ms).await)
    }
    async fn get_lock(&self, name: &str) -> Result<Option<crate::ports::Lock>, StoreError> {
        self.inner.get_lock(name).await
    }
    async fn list_locks(&self) -> Result<Vec<crate::ports::Lock>, StoreError> {
        self.inner.list_locks().await
    }
    async fn renew_lock(
        &self,
        name: &str,
        execution_id: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.seen(
            self.inner
                .renew_lock(name, execution_id, expires_at_ms)
                .await,
        )
    }
    async fn release_lock(&self, name: &str, execution_id: &str) -> Result<bool, StoreError> {
        self.seen(self.inner.release_lock(name, execution_id).await)
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
        self.seen(self.inner.update_execution(e).await)
    }
    async fn append_logs(&self, id: &str, records: &[LogRecord]) -> Result<(), StoreError> {
        self.seen(self.inner.append_logs(id, records).await)
    }
    async fn read_logs(
        &self,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.inner.read_logs(id, after_seq, limit).await
    }
    async fn log_stats(&self, id: &str) -> Result<LogStats, StoreError> {
        self.inner.log_stats(id).await
    }
    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        self.seen(self.inner.create_user(u).await)
    }
    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_key_hash(key_hash).await
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_email(email).await
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        self.inner.count_users().await
    }
    async fn touch_user(&self, email: &str, at_ms: i64) -> Result<(), StoreError> {
        self.seen(self.inner.touch_user(email, at_ms).await)
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.inner.list_users().await
    }
    async fn create_user_with_claim(&self, u: &User, claim: &Claim) -> Result<(), StoreError> {
        self.seen(self.inner.create_user_with_claim(u, claim).await)
    }
    async fn redeem_claim(
        &self,
        token_hash: &str,
        key_hash: &str,
        now_ms: i64,
        request_id: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        self.seen(
            self.inner
                .redeem_claim(token_hash, key_hash, now_ms, request_id)
                .await,
        )
    }
    async fn update_user(
        &self,
        email: &str,
        change: &UserChange,
        request_id: &str,
    ) -> Result<UserUpdate, StoreError> {
        self.seen(self.inner.update_user(email, change, request_id).await)
    }
    async fn purge_unclaimed(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.seen(self.inner.purge_unclaimed(now_ms).await)
    }
    async fn users_by_request(&self, request_id: &str) -> Result<Vec<User>, StoreError> {
        self.inner.users_by_request(request_id).await
    }
    async fn executions_by_request(&self, request_id: &str) -> Result<Vec<Execution>, StoreError> {
        self.inner.executions_by_request(request_id).await
    }
    async fn append_server_logs(
        &self,
        lines: &[ServerLogLine],
        keep: u64,
    ) -> Result<(), StoreError> {
        self.seen(self.inner.append_server_logs(lines, keep).await)
    }
    async fn server_logs(
        &self,
        request_id: &str,
        limit: usize,
    ) -> Result<Vec<ServerLogLine>, StoreError> {
        self.inner.server_logs(request_id, limit).await
    }
    async fn save_report(&self, report: &ReconcileReport, keep: usize) -> Result<(), StoreError> {
        self.seen(self.inner.save_report(report, keep).await)
    }
    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError> {
        self.inner.recent_reports(limit).await
    }
    async fn register_image(
        &self,
        image: &crate::images::Image,
        default: crate::ports::MakeDefault,
    ) -> Result<crate::ports::Registered, StoreError> {
        self.seen(self.inner.register_image(image, default).await)
    }
    async fn get_image(&self, id: &str) -> Result<Option<crate::images::Image>, StoreError> {
        self.inner.get_image(id).await
    }
    async fn list_images(&self) -> Result<Vec<crate::images::Image>, StoreError> {
        self.inner.list_images().await
    }
    async fn delete_image(&self, id: &str) -> Result<Option<crate::images::Image>, StoreError> {
        self.seen(self.inner.delete_image(id).await)
    }
    async fn create_secret(&self, s: &crate::Secret) -> Result<(), StoreError> {
        self.seen(self.inner.create_secret(s).await)
    }
    async fn get_secret(&self, name: &str) -> Result<Option<crate::Secret>, StoreError> {
        self.inner.get_secret(name).await
    }
    async fn list_secrets(&self) -> Result<Vec<crate::Secret>, StoreError> {
        self.inner.list_secrets().await
    }
    async fn update_secret(
        &self,
        name: &str,
        patch: &crate::SecretPatch,
    ) -> Result<Option<crate::Secret>, StoreError> {
        self.seen(self.inner.update_secret(name, patch).await)
    }
    async fn delete_secret(&self, name: &str) -> Result<Option<crate::Secret>, StoreError> {
        self.seen(self.inner.delete_secret(name).await)
    }
    async fn probe_write(&self, now_ms: i64) -> Result<(), StoreError> {
        self.seen(self.inner.probe_write(now_ms).await)
    }
    fn watch_execution(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.watch_execution(execution_id, after_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemStore, execution};

    #[tokio::test]
    async fn failing_writes_are_reported_until_a_write_works() {
        let mem = Arc::new(MemStore::new());
        let health = Arc::new(StoreHealth::new());
        let store = MonitoredStore::new(mem.clone(), health.clone());
        assert_eq!(health.check(&store, 1).await, None);
        mem.set_down(true);
        assert!(
            store
                .create_execution(&execution(&"a".repeat(32), 1))
                .await
                .is_err()
        );
        // Reads do not change the verdict either way.
        let _ = store.get_execution(&"a".repeat(32)).await;
        let why = health.check(&store, 2).await.expect("failing");
        assert!(why.contains("store writes failing"), "{why}");
        assert!(why.contains("down"), "{why}");
        mem.set_down(false);
        // The probe right after the failure is throttled; the next one clears it.
        tokio::time::sleep(PROBE_EVERY).await;
        assert_eq!(health.check(&store, 3).await, None);
        // An AlreadyExists answer is a working store.
        let e = execution(&"b".repeat(32), 1);
        store.create_execution(&e).await.unwrap();
        assert!(store.create_execution(&e).await.is_err());
        assert_eq!(health.failing(), None);
    }

    #[tokio::test]
    async fn a_store_that_broke_while_idle_is_noticed() {
        let mem = Arc::new(MemStore::new());
        let health = Arc::new(StoreHealth::new());
        let store = MonitoredStore::new(mem.clone(), health.clone());
        mem.set_down(true);
        // Nothing wrote yet: the check probes, and the probe fails.
        let why = health.check(&store, 1).await.expect("noticed");
        assert!(why.contains("1 failed writes"), "{why}");
    }
}
