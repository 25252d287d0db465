//! Ports: the traits adapters implement. Each adapter crate (SQLite store, local compute, GCP …)
//! implements one or more of these and could be deleted without touching the domain.

use async_trait::async_trait;
use runvoy_proto::Status;

use crate::images::{Image, ImageSpec};
use crate::model::{Execution, ExitInfo, JobSpec, LogRecord, User};
use runvoy_proto::ReconcileReport;

pub use crate::clock::Clock;

/// A store failure. Always a server-side problem (503), never the client's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with this key already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The backing database failed or is unreachable.
    #[error("{0}")]
    Unavailable(String),
}

/// Filter and page for [`Store::list_executions`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size.
    pub limit: usize,
    /// Only these statuses (all when empty).
    pub statuses: Vec<Status>,
    /// Only executions created by this user.
    pub created_by: Option<String>,
    /// Only executions created at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// Facts about the stored log records of one execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Number of stored records.
    pub count: u64,
    /// Highest stored seq (0 when none).
    pub max_seq: u64,
    /// Highest n such that every seq in 1..=n is stored.
    pub contiguous: u64,
}

/// A pending claim: the hash of a one-time token that turns an unclaimed user into one with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// SHA-256 of the claim token, hex (the token itself is never stored).
    pub token_hash: String,
    /// The unclaimed user.
    pub email: String,
    /// When it was issued.
    pub created_at_ms: i64,
    /// When it stops working.
    pub expires_at_ms: i64,
}

/// Result of [`Store::redeem_claim`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The key was set; the user as stored now.
    Claimed(User),
    /// The token was already used.
    AlreadyClaimed,
    /// Unknown or expired token (or its user is gone or revoked).
    NotFound,
}

/// One change to a user, applied atomically by [`Store::update_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// Sets the role.
    Role(crate::model::Role),
    /// Revokes the key for good.
    Revoke,
    /// Replaces the key of an active, claimed user.
    KeyHash(String),
}

/// Result of [`Store::update_user`].
#[derive(Debug, Clone, PartialEq)]
pub enum UserUpdate {
    /// Applied; the user as stored now.
    Updated(User),
    /// No such user, or the change does not apply to it (revoked, or unclaimed for a key).
    NotFound,
    /// Refused: no active admin would remain.
    LastAdmin,
}

/// One server log line kept for `GET /trace/{request_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLogLine {
    /// Epoch ms of the event.
    pub ts_ms: i64,
    /// Request the event belongs to.
    pub request_id: String,
    /// The whole line, a JSON object.
    pub line: String,
}

/// A named lock, held by one unfinished execution (see [`Store::create_execution_locked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The lock's name (`runvoy_proto::valid_lock_name`).
    pub name: String,
    /// The execution holding it.
    pub execution_id: String,
    /// Email of the user who started that execution.
    pub holder: String,
    /// When it was taken (epoch ms).
    pub acquired_at_ms: i64,
    /// End of the lease (epoch ms): the reconciler renews it while the holder runs; once past,
    /// a new run may take the lock even if nobody released it.
    pub expires_at_ms: i64,
}

/// Result of [`Store::create_execution_locked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedCreate {
    /// The execution was created and holds the lock.
    Created,
    /// Another execution holds the lock (its lease runs); nothing was written.
    Held(Lock),
}

/// Whether [`Store::register_image`] makes the image the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MakeDefault {
    /// Yes: the image becomes the default and the previous default stops being it.
    Yes,
    /// Only when no image is the default (the first image registered).
    IfNone,
    /// No (an image that already is the default stays it).
    No,
}

/// Result of [`Store::register_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The image as stored now (for an image registered before, the stored one, with its
    /// first registration's creator and time).
    pub image: Image,
    /// False when an image of that id existed already.
    pub created: bool,
}

/// How long a used claim is kept after its use, so that a second use answers
/// [`ClaimOutcome::AlreadyClaimed`] rather than [`ClaimOutcome::NotFound`]; after that,
/// [`Store::purge_unclaimed`] deletes it.
pub const USED_CLAIM_KEEP_MS: i64 = 24 * 3600 * 1000;

/// Durable metadata and logs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new execution; `AlreadyExists` when the id is taken.
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError>;
    /// Creates `e` and takes `lock` for it in one atomic step: when no lock named `lock.name`
    /// exists, or the existing one's lease ended (`expires_at_ms < now_ms`), writes both (the
    /// lock replacing a lapsed one) and answers [`LockedCreate::Created`]; otherwise writes
    /// nothing and answers [`LockedCreate::Held`] with the holder. `AlreadyExists` when the
    /// execution id is taken (and then the lock is not taken either).
    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &Lock,
        now_ms: i64,
    ) -> Result<LockedCreate, StoreError>;
    /// Reads one lock (expired or not).
    async fn get_lock(&self, name: &str) -> Result<Option<Lock>, StoreError>;
    /// Every lock, sorted by name.
    async fn list_locks(&self) -> Result<Vec<Lock>, StoreError>;
    /// Compare-and-set on the holder: sets the lease end of lock `name` to `expires_at_ms` only
    /// while `execution_id` holds it. Returns false (writing nothing) otherwise.
    async fn renew_lock(
        &self,
        name: &str,
        execution_id: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Compare-and-set on the holder: deletes lock `name` only while `execution_id` holds it.
    /// Returns whether it was deleted.
    async fn release_lock(&self, name: &str, execution_id: &str) -> Result<bool, StoreError>;
    /// Reads one execution.
    async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError>;
    /// Lists executions newest first; returns the page and the next cursor.
    async fn list_executions(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), StoreError>;
    /// Lists executions whose status is not terminal or whose logs are incomplete.
    async fn list_unsettled(&self) -> Result<Vec<Execution>, StoreError>;
    /// Compare-and-set: writes `e` only if the stored version equals `e.version`, bumping it.
    /// Returns false (and writes nothing) when the version moved on.
    async fn update_execution(&self, e: &Execution) -> Result<bool, StoreError>;
    /// Stores log records idempotently, keyed by (execution, seq): re-delivered records are ignored.
    async fn append_logs(
        &self,
        execution_id: &str,
        records: &[LogRecord],
    ) -> Result<(), StoreError>;
    /// Reads records with `seq > after_seq`, ascending, at most `limit`.
    async fn read_logs(
        &self,
        execution_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError>;
    /// Counts stored records and finds the first gap.
    async fn log_stats(&self, execution_id: &str) -> Result<LogStats, StoreError>;
    /// Inserts a user; `AlreadyExists` when the email is taken.
    async fn create_user(&self, u: &User) -> Result<(), StoreError>;
    /// Finds the user owning an API key hash.
    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<User>, StoreError>;
    /// Finds a user by email.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Number of users.
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// Records that a user's key was used (callers throttle this).
    async fn touch_user(&self, email: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Every user, sorted by email.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Inserts an unclaimed user and its claim together (both or neither). A user of that email
    /// who is still unclaimed and not revoked is replaced, and its unused claims deleted (a
    /// re-invitation: the earlier token stops working); `AlreadyExists` when the email belongs
    /// to a claimed or revoked user.
    async fn create_user_with_claim(&self, u: &User, claim: &Claim) -> Result<(), StoreError>;
    /// Atomically uses a claim: when `token_hash` is known, unused and not expired at `now_ms`
    /// (it still works at exactly `expires_at_ms`), and its user is unclaimed and not revoked,
    /// marks it used at `now_ms` and gives its user the key `key_hash` (clearing
    /// `claim_expires_at_ms`, setting `modified_by_request_id` to `request_id`). A used token
    /// answers [`ClaimOutcome::AlreadyClaimed`] (even once expired) until purged.
    async fn redeem_claim(
        &self,
        token_hash: &str,
        key_hash: &str,
        now_ms: i64,
        request_id: &str,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Applies one change to a user atomically (setting `modified_by_request_id` to
    /// `request_id`), refusing any that would leave no active admin (role admin, not revoked,
    /// claimed). A role change needs a user that is not revoked; a key change one that is
    /// neither revoked nor unclaimed; a revocation any user.
    async fn update_user(
        &self,
        email: &str,
        change: &UserChange,
        request_id: &str,
    ) -> Result<UserUpdate, StoreError>;
    /// Deletes users whose claim expired (`claim_expires_at_ms < now_ms`) unclaimed, unused
    /// claims that expired, and claims used more than [`USED_CLAIM_KEEP_MS`] before `now_ms`.
    /// Returns how many users were deleted.
    async fn purge_unclaimed(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Users created or last changed by a request, sorted by email.
    async fn users_by_request(&self, request_id: &str) -> Result<Vec<User>, StoreError>;
    /// Executions created or last changed by a request, newest first, at most 1000.
    async fn executions_by_request(&self, request_id: &str) -> Result<Vec<Execution>, StoreError>;
    /// Appends server log lines, then drops all but the newest `keep` (over all requests).
    async fn append_server_logs(
        &self,
        lines: &[ServerLogLine],
        keep: u64,
    ) -> Result<(), StoreError>;
    /// The server log lines of a request, oldest (first appended) first, at most `limit`.
    async fn server_logs(
        &self,
        request_id: &str,
        limit: usize,
    ) -> Result<Vec<ServerLogLine>, StoreError>;
    /// Keeps a reconcile sweep report, dropping all but the newest `keep`.
    async fn save_report(&self, report: &ReconcileReport, keep: usize) -> Result<(), StoreError>;
    /// The newest `limit` reconcile reports, newest first.
    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError>;
    /// Registers an image in one atomic step: inserts it unless an image of its id exists
    /// (then the stored one is kept), and applies `default`. The default moves in the same
    /// step, so at no time are two images the default. An image that becomes or stops being
    /// the default gets `image.modified_by_request_id`.
    async fn register_image(
        &self,
        image: &Image,
        default: MakeDefault,
    ) -> Result<Registered, StoreError>;
    /// Reads one image by id.
    async fn get_image(&self, id: &str) -> Result<Option<Image>, StoreError>;
    /// Every image, sorted by id.
    async fn list_images(&self) -> Result<Vec<Image>, StoreError>;
    /// Deletes an image by id and returns it as it was (`None` when there was none). Deleting
    /// the default leaves no default.
    async fn delete_image(&self, id: &str) -> Result<Option<Image>, StoreError>;
    /// Inserts a secret; `AlreadyExists` (writing nothing, the stored one untouched) when its
    /// name is taken. One atomic step: two concurrent creates of a name, one wins.
    async fn create_secret(&self, s: &crate::secrets::Secret) -> Result<(), StoreError>;
    /// Reads one secret (with its sealed value).
    async fn get_secret(&self, name: &str) -> Result<Option<crate::secrets::Secret>, StoreError>;
    /// Every secret, sorted by name.
    async fn list_secrets(&self) -> Result<Vec<crate::secrets::Secret>, StoreError>;
    /// Applies `patch` to secret `name` in one atomic step and returns it as stored now; `None`
    /// (writing nothing) when there is no such secret.
    async fn update_secret(
        &self,
        name: &str,
        patch: &crate::secrets::SecretPatch,
    ) -> Result<Option<crate::secrets::Secret>, StoreError>;
    /// Deletes a secret and returns it as it was (`None` when there was none).
    async fn delete_secret(&self, name: &str)
    -> Result<Option<crate::secrets::Secret>, StoreError>;
    /// Makes one small durable write (a single-row heartbeat at `now_ms`) to tell whether the
    /// store accepts writes again: what the readiness check asks after writes failed.
    async fn probe_write(&self, now_ms: i64) -> Result<(), StoreError>;
    /// A wake-up for followers of one execution whenever its records or its execution change,
    /// whoever wrote them: what lets any instance of a shared store serve any viewer (the
    /// write may have landed on another instance). The value only counts changes; followers
    /// re-read the store when it moves; changes to records at or below `after_seq` need not be
    /// reported. `None` when the store has no such feed (a store only
    /// one process writes: the in-process hub already says everything). Dropping the receiver
    /// ends the feed.
    fn watch_execution(
        &self,
        _execution_id: &str,
        _after_seq: u64,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// A compute failure.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The request was refused for a reason the caller can fix (e.g. unknown image).
    #[error("{0}")]
    Rejected(String),
    /// Compute is unavailable; worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

/// What compute knows about an execution: the authoritative source of "is it still running".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComputeState {
    /// Accepted, preparing (sidecar) or scheduling.
    Pending,
    /// The command is running.
    Running,
    /// It ended.
    Exited(ComputeExit),
    /// Compute has no such execution (never started, or cleaned up).
    NotFound,
}

/// How an execution ended, as compute saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeExit {
    /// The runner's final record, when it wrote one.
    pub runner: Option<ExitInfo>,
    /// The runner process's own exit code when there is no final record.
    pub process_exit_code: Option<i32>,
    /// Why it failed before or outside the command (sidecar failure, vanished supervisor).
    pub failure: Option<String>,
}

/// Runs executions: starts, inspects, kills.
#[async_trait]
pub trait Compute: Send + Sync + 'static {
    /// Platform name shown on executions (`local`, `gcp`).
    fn platform(&self) -> &str;
    /// Whether this compute runs the image a run names. When it does not, a run naming an
    /// image other than the server's default is refused: an execution never records an image
    /// it did not run in.
    fn runs_images(&self) -> bool;
    /// Prepares an image being registered, so runs in it can start (on Cloud Run: the job of
    /// the image). Called on every registration, a repeated one included, so it must be
    /// idempotent. [`ComputeError::Rejected`] refuses the registration (400
    /// `IMAGE_REJECTED`); nothing is stored then. The default has nothing to prepare.
    async fn prepare_image(&self, _image: &ImageSpec) -> Result<(), ComputeError> {
        Ok(())
    }
    /// Whether this compute hands [`JobSpec::secrets_fetch`] to the execution's sidecar (and
    /// the sidecar can reach the fetch URL). A run naming secrets on compute that does not is
    /// refused before anything is stored.
    fn delivers_secrets(&self) -> bool {
        false
    }
    /// Starts an execution. Must be idempotent for the same id.
    async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError>;
    /// Reads the authoritative state.
    async fn state(&self, execution_id: &str) -> Result<ComputeState, ComputeError>;
    /// Asks the execution to stop (SIGTERM to the command, SIGKILL after the grace period).
    async fn kill(&self, execution_id: &str) -> Result<(), ComputeError>;
    /// Ids compute currently knows about (running or kept), for orphan detection.
    async fn list(&self) -> Result<Vec<String>, ComputeError>;
    /// Removes what compute keeps of an execution that is over (locally its workspace
    /// directory; on Cloud Run the finished job execution). Returns true when something was
    /// removed. Never called for an execution that may still run. No default: an adapter that
    /// kept resources but answered "nothing to remove" would leak them unnoticed.
    async fn cleanup(&self, execution_id: &str) -> Result<bool, ComputeError>;
}

/// The durable source of runner records (locally the workspace record file, on GCP Cloud Logging):
/// read again when stored logs have a gap.
#[async_trait]
pub trait LogSource: Send + Sync + 'static {
    /// How long after an execution ended this source may still lack its last records
    /// (ingestion lag). An execution whose final record never came counts as complete only
    /// once this has passed since it ended. Local record files lag by nothing.
    fn settle_ms(&self) -> i64 {
        0
    }
    /// Records with `seq > after_seq`, ascending, and the final record when present.
    async fn read_records(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Result<(Vec<LogRecord>, Option<ExitInfo>), ComputeError>;
}

/// A cipher failure.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The key cannot be used: missing, disabled, permission denied, or not the key a value was
    /// sealed with. Retrying does not help; the message says what to fix.
    #[error("encryption key unavailable: {0}")]
    KeyUnavailable(String),
    /// A passing failure (network, throttling, the key service down) that outlasted the
    /// adapter's own retries.
    #[error("encryption service unavailable: {0}")]
    Transient(String),
    /// The sealed value was not sealed by this key for this associated data: tampered with,
    /// moved to another record, truncated, or of an unknown format.
    #[error("sealed value rejected: {0}")]
    Invalid(String),
}

/// A value sealed by a [`Cipher`] (envelope encryption): safe to store, opaque to everything
/// but the cipher that made it. Bytes are base64 in its serde form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    /// Format version; [`Sealed::VERSION`] today.
    pub version: u32,
    /// Identity of the key-encryption key that wrapped the data key (`local:<fingerprint>`,
    /// `gcp-kms:projects/…/cryptoKeys/…`).
    pub kek: String,
    /// The value's own data key, encrypted by the key-encryption key.
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// Nonce of the value's encryption.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The encrypted value with its authentication tag.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// The format sealed today.
    pub const VERSION: u32 = 1;
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Encrypts values (secrets) for storage. The associated data (e.g. the secret's name) is
/// authenticated, not stored: decrypting needs the same bytes, so a sealed value cannot be moved
/// to another record.
#[async_trait]
pub trait Cipher: Send + Sync + 'static {
    /// What guards the key-encryption key, for `/health`: `local` or `gcp-kms`.
    fn kind(&self) -> &str;
    /// Seals `plaintext`, bound to `aad`. Two calls with the same input give different values.
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CipherError>;
    /// Opens a value sealed with the same `aad`; [`CipherError::Invalid`] when it was not.
    async fn decrypt(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, CipherError>;
}
