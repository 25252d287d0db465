//! SQLite implementation of [`runvoy_domain::ports::Store`].
//!
//! One writer connection and a few reader connections on a WAL database: readers never block the
//! writer, and the writer batches log records in one transaction per call. Blocking SQLite calls
//! run on tokio's blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runvoy_domain::ports::{
    Claim, ClaimOutcome, ListQuery, Lock, LockedCreate, LogStats, MakeDefault, Registered,
    ServerLogLine, Store, StoreError, USED_CLAIM_KEEP_MS, UserChange, UserUpdate,
};
use runvoy_domain::{Execution, Image, LogRecord, Role, Secret, SecretPatch, Status, Stream, User};
use runvoy_proto::ReconcileReport;
use rusqlite::{Connection, OptionalExtension, Row, params};

const READERS: usize = 4;

/// Rows per multi-row log insert (6 parameters each, well under SQLite's parameter limit).
const ROWS_PER_INSERT: usize = 128;

static MULTI_INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let row = "(?,?,?,?,?,?)";
    format!(
        "INSERT OR IGNORE INTO logs (exec, seq, stream, ts_ms, data, eol) VALUES {}",
        vec![row; ROWS_PER_INSERT].join(",")
    )
});

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    command TEXT NOT NULL,
    image TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    created_at_ms INTEGER NOT NULL,
    completed_at_ms INTEGER,
    timeout_secs INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    logs_complete INTEGER NOT NULL DEFAULT 0,
    log_lines INTEGER,
    kill_requested_at_ms INTEGER,
    created_by_request_id TEXT NOT NULL,
    modified_by_request_id TEXT NOT NULL,
    compute_platform TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS executions_newest ON executions (created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS executions_by_user ON executions (created_by, created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS executions_unsettled ON executions (logs_complete, status);
-- Log records are keyed by a small integer per execution rather than the 32-character id:
-- rows stay short and key comparisons cheap on the million-record path.
CREATE TABLE IF NOT EXISTS log_streams (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS logs (
    exec INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    data BLOB NOT NULL,
    eol INTEGER NOT NULL,
    PRIMARY KEY (exec, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    email TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_used_ms INTEGER
);
CREATE TABLE IF NOT EXISTS claims (
    token_hash TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    claimed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS claims_by_email ON claims (email);
CREATE TABLE IF NOT EXISTS server_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS server_logs_by_request ON server_logs (request_id, id);
CREATE TABLE IF NOT EXISTS reconcile_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report TEXT NOT NULL
);
-- Named locks, each held by one unfinished execution until its lease ends.
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    acquired_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
-- Registered images. The partial unique index keeps at most one default, whatever writes.
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    cpu_millis INTEGER,
    memory_mb INTEGER,
    timeout_secs INTEGER,
    service_account TEXT,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    created_by_request_id TEXT NOT NULL,
    modified_by_request_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS images_one_default ON images (is_default) WHERE is_default = 1;
-- Secrets: metadata and the value sealed by the cipher (JSON of `Sealed`), never plaintext.
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    key_name TEXT NOT NULL,
    description TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    created_by_request_id TEXT NOT NULL,
    modified_by_request_id TEXT NOT NULL
);
-- One row, rewritten by the readiness check to tell whether writes work again.
CREATE TABLE IF NOT EXISTS write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);
";

/// Columns added to `executions` after its first version, added to older databases on open.
const EXECUTION_COLUMNS_ADDED: &[(&str, &str)] = &[
    ("dropped_log_lines", "INTEGER NOT NULL DEFAULT 0"),
    ("dropped_log_bytes", "INTEGER NOT NULL DEFAULT 0"),
    // The JSON array of an argv run; NULL for a shell line.
    ("argv", "TEXT"),
    // Email of the user whose kill request was accepted; NULL when nobody asked for one.
    ("stopped_by", "TEXT"),
    // The lock the execution took; NULL when none.
    ("lock_name", "TEXT"),
];

fn migrate_executions(c: &Connection) -> Result<(), StoreError> {
    let have: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('executions')")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(unavailable)?;
    for (name, ty) in EXECUTION_COLUMNS_ADDED {
        if !have.iter().any(|h| h == name) {
            c.execute_batch(&format!("ALTER TABLE executions ADD COLUMN {name} {ty}"))
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Columns added to `users` after its first version, added to older databases on open.
const USER_COLUMNS_ADDED: &[(&str, &str)] = &[
    ("claim_expires_at_ms", "INTEGER"),
    ("created_by", "TEXT NOT NULL DEFAULT ''"),
    ("created_by_request_id", "TEXT NOT NULL DEFAULT ''"),
    ("modified_by_request_id", "TEXT NOT NULL DEFAULT ''"),
];

fn migrate_users(c: &Connection) -> Result<(), StoreError> {
    let have: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('users')")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(unavailable)?;
    for (name, ty) in USER_COLUMNS_ADDED {
        if !have.iter().any(|h| h == name) {
            c.execute_batch(&format!("ALTER TABLE users ADD COLUMN {name} {ty}"))
                .map_err(unavailable)?;
        }
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS users_by_created_request ON users (created_by_request_id);
         CREATE INDEX IF NOT EXISTS users_by_modified_request ON users (modified_by_request_id);",
    )
    .map_err(unavailable)
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Creates the database file owner-only when missing, and makes it and any `-wal`/`-shm` file
/// owner-only when an older runvoyd (or a permissive umask) left them readable by others.
fn restrict_db_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let with_suffix = |suffix: &str| {
        let mut n = path.as_os_str().to_owned();
        n.push(suffix);
        std::path::PathBuf::from(n)
    };
    for file in [path.to_path_buf(), with_suffix("-wal"), with_suffix("-shm")] {
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open(path).map_err(unavailable)?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(unavailable)?;
    c.pragma_update(None, "journal_mode", "WAL")
        .map_err(unavailable)?;
    c.pragma_update(None, "synchronous", "NORMAL")
        .map_err(unavailable)?;
    Ok(c)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// The database holds key hashes, commands and their output: the file and its `-wal`/`-shm`
    /// companions are made owner-only (0600) whatever the umask. SQLite creates the companions
    /// with the main file's mode, so the main file is created 0600 before SQLite opens it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        restrict_db_files(path).map_err(|e| {
            StoreError::Unavailable(format!("setting permissions of {}: {e}", path.display()))
        })?;
        let w = open(path)?;
        w.execute_batch(SCHEMA).map_err(unavailable)?;
        migrate_users(&w)?;
        migrate_executions(&w)?;
        let readers = (0..READERS)
            .map(|_| open(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(w)),
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let w = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = w.lock().map_err(|_| unavailable("store writer poisoned"))?;
            f(&mut c)
        })
        .await
        .map_err(unavailable)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let c = readers[i]
                .lock()
                .map_err(|_| unavailable("store reader poisoned"))?;
            f(&c)
        })
        .await
        .map_err(unavailable)?
    }
}

const EXEC_COLS: &str = "id, created_by, command, image, status, exit_code, created_at_ms, completed_at_ms, \
    timeout_secs, timed_out, failure_reason, logs_complete, log_lines, kill_requested_at_ms, \
    created_by_request_id, modified_by_request_id, compute_platform, version, dropped_log_lines, \
    dropped_log_bytes, argv, stopped_by, lock_name";

fn exec_from_row(r: &Row<'_>) -> rusqlite::Result<Execution> {
    let status: String = r.get(4)?;
    Ok(Execution {
        id: r.get(0)?,
        created_by: r.get(1)?,
        command: r.get(2)?,
        image: r.get(3)?,
        status: Status::parse(&status).unwrap_or(Status::Failed),
        exit_code: r.get(5)?,
        created_at_ms: r.get(6)?,
        completed_at_ms: r.get(7)?,
        timeout_secs: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        timed_out: r.get(9)?,
        failure_reason: r.get(10)?,
        logs_complete: r.get(11)?,
        log_lines: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        kill_requested_at_ms: r.get(13)?,
        created_by_request_id: r.get(14)?,
        modified_by_request_id: r.get(15)?,
        compute_platform: r.get(16)?,
        version: r.get::<_, i64>(17)? as u64,
        dropped_log_lines: r.get::<_, i64>(18)? as u64,
        dropped_log_bytes: r.get::<_, i64>(19)? as u64,
        argv: r
            .get::<_, Option<String>>(20)?
            .and_then(|j| serde_json::from_str(&j).ok()),
        stopped_by: r.get(21)?,
        lock: r.get(22)?,
    })
}

fn insert_execution(c: &Connection, e: &Execution) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO executions ({EXEC_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23)"),
        params![
            e.id, e.created_by, e.command, e.image, e.status.as_str(), e.exit_code,
            e.created_at_ms, e.completed_at_ms, e.timeout_secs.map(|v| v as i64), e.timed_out,
            e.failure_reason, e.logs_complete, e.log_lines.map(|v| v as i64),
            e.kill_requested_at_ms, e.created_by_request_id, e.modified_by_request_id,
            e.compute_platform, e.version as i64, e.dropped_log_lines as i64,
            e.dropped_log_bytes as i64,
            e.argv.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default()),
            e.stopped_by, e.lock
        ],
    )
    .map_err(|err| if is_constraint(&err) { StoreError::AlreadyExists(e.id.clone()) } else { unavailable(err) })?;
    Ok(())
}

const LOCK_COLS: &str = "name, execution_id, holder, acquired_at_ms, expires_at_ms";

fn lock_from_row(r: &Row<'_>) -> rusqlite::Result<Lock> {
    Ok(Lock {
        name: r.get(0)?,
        execution_id: r.get(1)?,
        holder: r.get(2)?,
        acquired_at_ms: r.get(3)?,
        expires_at_ms: r.get(4)?,
    })
}

const USER_COLS: &str = "email, role, key_hash, created_at_ms, revoked, last_used_ms, \
    claim_expires_at_ms, created_by, created_by_request_id, modified_by_request_id";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(1)?;
    Ok(User {
        email: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        key_hash: r.get(2)?,
        created_at_ms: r.get(3)?,
        revoked: r.get(4)?,
        last_used_ms: r.get(5)?,
        claim_expires_at_ms: r.get(6)?,
        created_by: r.get(7)?,
        created_by_request_id: r.get(8)?,
        modified_by_request_id: r.get(9)?,
    })
}

fn insert_user(c: &Connection, u: &User) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO users ({USER_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
        params![
            u.email,
            u.role.as_str(),
            u.key_hash,
            u.created_at_ms,
            u.revoked,
            u.last_used_ms,
            u.claim_expires_at_ms,
            u.created_by,
            u.created_by_request_id,
            u.modified_by_request_id
        ],
    )
    .map_err(|err| {
        if is_constraint(&err) {
            StoreError::AlreadyExists(u.email.clone())
        } else {
            unavailable(err)
        }
    })?;
    Ok(())
}

fn get_user(c: &Connection, email: &str) -> Result<Option<User>, StoreError> {
    c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
        [email],
        user_from_row,
    )
    .optional()
    .map_err(unavailable)
}

fn active_admins(c: &Connection) -> Result<i64, StoreError> {
    c.query_row(
        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND revoked = 0 \
         AND claim_expires_at_ms IS NULL",
        [],
        |r| r.get(0),
    )
    .map_err(unavailable)
}

const IMAGE_COLS: &str = "id, image, registry, name, tag, cpu_millis, memory_mb, timeout_secs, \
    service_account, is_default, created_by, created_at_ms, created_by_request_id, \
    modified_by_request_id";

fn image_from_row(r: &Row<'_>) -> rusqlite::Result<Image> {
    let opt_u64 = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.map(|n| n as u64));
    Ok(Image {
        id: r.get(0)?,
        image: r.get(1)?,
        registry: r.get(2)?,
        name: r.get(3)?,
        tag: r.get(4)?,
        cpu_millis: opt_u64(5)?,
        memory_mb: opt_u64(6)?,
        timeout_secs: opt_u64(7)?,
        service_account: r.get(8)?,
        is_default: r.get(9)?,
        created_by: r.get(10)?,
        created_at_ms: r.get(11)?,
        created_by_request_id: r.get(12)?,
        modified_by_request_id: r.get(13)?,
    })
}

fn get_image(c: &Connection, id: &str) -> Result<Option<Image>, StoreError> {
    c.query_row(
        &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1"),
        [id],
        image_from_row,
    )
    .optional()
    .map_err(unavailable)
}

const SECRET_COLS: &str = "name, key_name, description, sealed, created_by, created_at_ms, \
    updated_by, updated_at_ms, created_by_request_id, modified_by_request_id";

fn secret_from_row(r: &Row<'_>) -> rusqlite::Result<Secret> {
    let sealed: String = r.get(3)?;
    let value = serde_json::from_str(&sealed).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Secret {
        name: r.get(0)?,
        key_name: r.get(1)?,
        description: r.get(2)?,
        value,
        created_by: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_by: r.get(6)?,
        updated_at_ms: r.get(7)?,
        created_by_request_id: r.get(8)?,
        modified_by_request_id: r.get(9)?,
    })
}

fn get_secret(c: &Connection, name: &str) -> Result<Option<Secret>, StoreError> {
    c.query_row(
        &format!("SELECT {SECRET_COLS} FROM secrets WHERE name = ?1"),
        [name],
        secret_from_row,
    )
    .optional()
    .map_err(unavailable)
}

fn put_secret(c: &Connection, s: &Secret, insert: bool) -> Result<usize, rusqlite::Error> {
    let sealed = serde_json::to_string(&s.value).unwrap_or_default();
    let sql = if insert {
        format!(
            "INSERT INTO secrets ({SECRET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        )
    } else {
        "UPDATE secrets SET key_name = ?2, description = ?3, sealed = ?4, created_by = ?5, \
         created_at_ms = ?6, updated_by = ?7, updated_at_ms = ?8, created_by_request_id = ?9, \
         modified_by_request_id = ?10 WHERE name = ?1"
            .to_owned()
    };
    c.execute(
        &sql,
        params![
            s.name,
            s.key_name,
            s.description,
            sealed,
            s.created_by,
            s.created_at_ms,
            s.updated_by,
            s.updated_at_ms,
            s.created_by_request_id,
            s.modified_by_request_id
        ],
    )
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (ms, id) = c.split_once('-')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_execution(&self, e: &Execution) -> Result<(), StoreError> {
        let e = e.clone();
        self.write(move |c| insert_execution(c, &e)).await
    }

    async fn create_execution_locked(
        &self,
        e: &Execution,
        lock: &Lock,
        now_ms: i64,
    ) -> Result<LockedCreate, StoreError> {
        let (e, lock) = (e.clone(), lock.clone());
        self.write(move |c| {
            // One writer connection and one transaction: the check and both inserts are atomic.
            let tx = c.transaction().map_err(unavailable)?;
            let cur = tx
                .query_row(
                    &format!("SELECT {LOCK_COLS} FROM locks WHERE name = ?1"),
                    [&lock.name],
                    lock_from_row,
                )
                .optional()
                .map_err(unavailable)?;
            if let Some(cur) = cur
                && cur.expires_at_ms >= now_ms
            {
                return Ok(LockedCreate::Held(cur));
            }
            insert_execution(&tx, &e)?;
            tx.execute(
                &format!("INSERT OR REPLACE INTO locks ({LOCK_COLS}) VALUES (?1,?2,?3,?4,?5)"),
                params![
                    lock.name,
                    lock.execution_id,
                    lock.holder,
                    lock.acquired_at_ms,
                    lock.expires_at_ms
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(LockedCreate::Created)
        })
        .await
    }

    async fn get_lock(&self, name: &str) -> Result<Option<Lock>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {LOCK_COLS} FROM locks WHERE name = ?1"),
                [name],
                lock_from_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn list_locks(&self) -> Result<Vec<Lock>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {LOCK_COLS} FROM locks ORDER BY name"))
                .map_err(unavailable)?;
            st.query_map([], lock_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn renew_lock(
        &self,
        name: &str,
        execution_id: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, id) = (name.to_owned(), execution_id.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE locks SET expires_at_ms = ?3 WHERE name = ?1 AND execution_id = ?2",
                    params![name, id, expires_at_ms],
                )
                .map_err(unavailable)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lock(&self, name: &str, execution_id: &str) -> Result<bool, StoreError> {
        let (name, id) = (name.to_owned(), execution_id.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM locks WHERE name = ?1 AND execution_id = ?2",
                    params![name, id],
                )
                .map_err(unavailable)?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {EXEC_COLS} FROM executions WHERE id = ?1"),
                [id],
                exec_from_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn list_executions(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Execution>, Option<String>), StoreError> {
        let q = q.clone();
        self.read(move |c| {
            let mut sql = format!("SELECT {EXEC_COLS} FROM executions WHERE 1=1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if !q.statuses.is_empty() {
                let marks = vec!["?"; q.statuses.len()].join(",");
                sql.push_str(&format!(" AND status IN ({marks})"));
                args.extend(q.statuses.iter().map(|s| s.as_str().to_owned().into()));
            }
            if let Some(u) = &q.created_by {
                sql.push_str(" AND created_by = ?");
                args.push(u.clone().into());
            }
            if let Some(t) = q.since_ms {
                sql.push_str(" AND created_at_ms >= ?");
                args.push(t.into());
            }
            if let Some((ms, id)) = q.cursor.as_deref().and_then(parse_cursor) {
                sql.push_str(" AND (created_at_ms < ? OR (created_at_ms = ? AND id < ?))");
                args.extend([ms.into(), ms.into(), id.into()]);
            }
            let limit = q.limit.max(1);
            sql.push_str(&format!(
                " ORDER BY created_at_ms DESC, id DESC LIMIT {}",
                limit + 1
            ));
            let mut st = c.prepare_cached(&sql).map_err(unavailable)?;
            let mut rows: Vec<Execution> = st
                .query_map(rusqlite::params_from_iter(args), exec_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            let next = if rows.len() > limit {
                rows.truncate(limit);
                rows.last().map(|e| format!("{}-{}", e.created_at_ms, e.id))
            } else {
                None
            };
            Ok((rows, next))
        })
        .await
    }

    async fn list_unsettled(&self) -> Result<Vec<Execution>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {EXEC_COLS} FROM executions WHERE logs_complete = 0 \
                     OR status IN ('STARTING','RUNNING','TERMINATING') ORDER BY created_at_ms"
                ))
                .map_err(unavailable)?;
            st.query_map([], exec_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn update_execution(&self, e: &Execution) -> Result<bool, StoreError> {
        let e = e.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE executions SET status=?2, exit_code=?3, completed_at_ms=?4, timed_out=?5, \
                     failure_reason=?6, logs_complete=?7, log_lines=?8, kill_requested_at_ms=?9, \
                     modified_by_request_id=?10, dropped_log_lines=?12, dropped_log_bytes=?13, \
                     stopped_by=?14, version=version+1 WHERE id=?1 AND version=?11",
                    params![
                        e.id, e.status.as_str(), e.exit_code, e.completed_at_ms, e.timed_out,
                        e.failure_reason, e.logs_complete, e.log_lines.map(|v| v as i64),
                        e.kill_requested_at_ms, e.modified_by_request_id, e.version as i64,
                        e.dropped_log_lines as i64, e.dropped_log_bytes as i64, e.stopped_by
                    ],
                )
                .map_err(unavailable)?;
            Ok(n == 1)
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
        let id = execution_id.to_owned();
        let records = records.to_vec();
        self.write(move |c| {
let tx = c.transaction().map_err(unavailable)?;
            tx.execute("INSERT OR IGNORE INTO log_streams (id) VALUES (?1)", [&id])
                .map_err(unavailable)?;
            let key: i64 = tx
                .query_row("SELECT key FROM log_streams WHERE id = ?1", [&id], |r| r.get(0))
                .map_err(unavailable)?;
            // Multi-row statements: per-statement overhead dominates for short lines.
            let mut chunks = records.chunks_exact(ROWS_PER_INSERT);
            {
                let mut st = tx.prepare_cached(&MULTI_INSERT).map_err(unavailable)?;
                for chunk in &mut chunks {
                    let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(ROWS_PER_INSERT * 6);
                    let keys: Vec<(i64, i64)> = chunk.iter().map(|r| (r.seq as i64, r.stream.code())).collect();
                    for (r, k) in chunk.iter().zip(&keys) {
                        args.extend_from_slice(&[&key, &k.0, &k.1, &r.ts_ms, &r.data, &r.eol]);
                    }
                    st.execute(&*args).map_err(unavailable)?;
                }
            }
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO logs (exec, seq, stream, ts_ms, data, eol) VALUES (?1,?2,?3,?4,?5,?6)",
                    )
                    .map_err(unavailable)?;
                for r in chunks.remainder() {
                    st.execute(params![key, r.seq as i64, r.stream.code(), r.ts_ms, r.data, r.eol])
                        .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn read_logs(
        &self,
        execution_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let id = execution_id.to_owned();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, stream, ts_ms, data, eol FROM logs WHERE exec = (SELECT key FROM log_streams WHERE id = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(unavailable)?;
            st.query_map(params![id, after_seq as i64, limit as i64], |r| {
                Ok(LogRecord {
                    seq: r.get::<_, i64>(0)? as u64,
                    stream: Stream::from_code(r.get(1)?),
                    ts_ms: r.get(2)?,
                    data: r.get(3)?,
                    eol: r.get(4)?,
                })
            })
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)
        })
        .await
    }

    async fn log_stats(&self, execution_id: &str) -> Result<LogStats, StoreError> {
        let id = execution_id.to_owned();
        self.read(move |c| {
            let (count, max): (i64, Option<i64>) = c
                .query_row(
                    "SELECT COUNT(*), MAX(seq) FROM logs WHERE exec = (SELECT key FROM log_streams WHERE id = ?1)",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(unavailable)?;
            let max = max.unwrap_or(0);
            let contiguous = if count == max {
                max
            } else {
                let has_first: bool = c
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM logs WHERE exec = (SELECT key FROM log_streams WHERE id = ?1) AND seq = 1)",
                        [&id],
                        |r| r.get(0),
                    )
                    .map_err(unavailable)?;
                if !has_first {
                    0
                } else {
                    c.query_row(
                        "SELECT MIN(a.seq) FROM logs a WHERE a.exec = (SELECT key FROM log_streams WHERE id = ?1) AND NOT EXISTS \
                         (SELECT 1 FROM logs b WHERE b.exec = a.exec AND b.seq = a.seq + 1)",
                        [&id],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(unavailable)?
                }
            };
            Ok(LogStats {
                count: count as u64,
                max_seq: max as u64,
                contiguous: contiguous as u64,
            })
        })
        .await
    }

    async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        let u = u.clone();
        self.write(move |c| insert_user(c, &u)).await
    }

    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        let h = key_hash.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE key_hash = ?1"),
                [h],
                user_from_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let e = email.to_owned();
        self.read(move |c| get_user(c, &e)).await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(unavailable)
        })
        .await
    }

    async fn touch_user(&self, email: &str, at_ms: i64) -> Result<(), StoreError> {
        let e = email.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET last_used_ms = ?2 WHERE email = ?1",
                params![e, at_ms],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {USER_COLS} FROM users ORDER BY email"))
                .map_err(unavailable)?;
            st.query_map([], user_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn create_user_with_claim(&self, u: &User, claim: &Claim) -> Result<(), StoreError> {
        let (u, claim) = (u.clone(), claim.clone());
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            // A re-invitation replaces a user still unclaimed, and its unused claims.
            let replaced = tx
                .execute(
                    "DELETE FROM users WHERE email = ?1 AND claim_expires_at_ms IS NOT NULL \
                     AND revoked = 0",
                    [&u.email],
                )
                .map_err(unavailable)?;
            if replaced > 0 {
                tx.execute(
                    "DELETE FROM claims WHERE email = ?1 AND claimed_at_ms IS NULL",
                    [&u.email],
                )
                .map_err(unavailable)?;
            }
            insert_user(&tx, &u)?;
            tx.execute(
                "INSERT INTO claims (token_hash, email, created_at_ms, expires_at_ms) VALUES (?1,?2,?3,?4)",
                params![claim.token_hash, claim.email, claim.created_at_ms, claim.expires_at_ms],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
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
        let (t, k, rid) = (
            token_hash.to_owned(),
            key_hash.to_owned(),
            request_id.to_owned(),
        );
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let row: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT email, expires_at_ms, claimed_at_ms FROM claims WHERE token_hash = ?1",
                    [&t],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let Some((email, expires, claimed)) = row else {
                return Ok(ClaimOutcome::NotFound);
            };
            if claimed.is_some() {
                return Ok(ClaimOutcome::AlreadyClaimed);
            }
            if expires < now_ms {
                return Ok(ClaimOutcome::NotFound);
            }
            let n = tx
                .execute(
                    "UPDATE users SET key_hash = ?2, claim_expires_at_ms = NULL, \
                     modified_by_request_id = ?3 WHERE email = ?1 AND revoked = 0 \
                     AND claim_expires_at_ms IS NOT NULL",
                    params![email, k, rid],
                )
                .map_err(unavailable)?;
            if n != 1 {
                return Ok(ClaimOutcome::NotFound);
            }
            tx.execute(
                "UPDATE claims SET claimed_at_ms = ?2 WHERE token_hash = ?1",
                params![t, now_ms],
            )
            .map_err(unavailable)?;
            let u = get_user(&tx, &email)?.ok_or_else(|| unavailable("claimed user vanished"))?;
            tx.commit().map_err(unavailable)?;
            Ok(ClaimOutcome::Claimed(u))
        })
        .await
    }

    async fn update_user(
        &self,
        email: &str,
        change: &UserChange,
        request_id: &str,
    ) -> Result<UserUpdate, StoreError> {
        let (email, change, rid) = (email.to_owned(), change.clone(), request_id.to_owned());
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let n = match &change {
                UserChange::Role(r) => tx.execute(
                    "UPDATE users SET role = ?2, modified_by_request_id = ?3 \
                     WHERE email = ?1 AND revoked = 0",
                    params![email, r.as_str(), rid],
                ),
                UserChange::Revoke => tx.execute(
                    "UPDATE users SET revoked = 1, modified_by_request_id = ?2 WHERE email = ?1",
                    params![email, rid],
                ),
                UserChange::KeyHash(h) => tx.execute(
                    "UPDATE users SET key_hash = ?2, modified_by_request_id = ?3 \
                     WHERE email = ?1 AND revoked = 0 AND claim_expires_at_ms IS NULL",
                    params![email, h, rid],
                ),
            }
            .map_err(unavailable)?;
            if n != 1 {
                return Ok(UserUpdate::NotFound);
            }
            // Checked inside the transaction: two concurrent demotions cannot both pass.
            if active_admins(&tx)? == 0 {
                return Ok(UserUpdate::LastAdmin); // dropping `tx` rolls back
            }
            let u = get_user(&tx, &email)?.ok_or_else(|| unavailable("updated user vanished"))?;
            tx.commit().map_err(unavailable)?;
            Ok(UserUpdate::Updated(u))
        })
        .await
    }

    async fn purge_unclaimed(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let n = tx
                .execute(
                    "DELETE FROM users WHERE claim_expires_at_ms IS NOT NULL AND claim_expires_at_ms < ?1",
                    [now_ms],
                )
                .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM claims WHERE (claimed_at_ms IS NULL AND expires_at_ms < ?1) \
                 OR claimed_at_ms < ?2",
                params![now_ms, now_ms - USED_CLAIM_KEEP_MS],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(n as u64)
        })
        .await
    }

    async fn users_by_request(&self, request_id: &str) -> Result<Vec<User>, StoreError> {
        let rid = request_id.to_owned();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE created_by_request_id = ?1 \
                     OR modified_by_request_id = ?1 ORDER BY email"
                ))
                .map_err(unavailable)?;
            st.query_map([rid], user_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn executions_by_request(&self, request_id: &str) -> Result<Vec<Execution>, StoreError> {
        let rid = request_id.to_owned();
        self.read(move |c| {
            // A full scan: traces are rare admin queries, and this keeps the executions table
            // free of indexes that every write would pay for.
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {EXEC_COLS} FROM executions WHERE created_by_request_id = ?1 \
                     OR modified_by_request_id = ?1 ORDER BY created_at_ms DESC LIMIT 1000"
                ))
                .map_err(unavailable)?;
            st.query_map([rid], exec_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn append_server_logs(
        &self,
        lines: &[ServerLogLine],
        keep: u64,
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let lines = lines.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO server_logs (ts_ms, request_id, line) VALUES (?1,?2,?3)",
                    )
                    .map_err(unavailable)?;
                for l in &lines {
                    st.execute(params![l.ts_ms, l.request_id, l.line])
                        .map_err(unavailable)?;
                }
            }
            tx.execute(
                "DELETE FROM server_logs WHERE id <= (SELECT MAX(id) FROM server_logs) - ?1",
                [keep as i64],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn server_logs(
        &self,
        request_id: &str,
        limit: usize,
    ) -> Result<Vec<ServerLogLine>, StoreError> {
        let rid = request_id.to_owned();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT ts_ms, request_id, line FROM server_logs WHERE request_id = ?1 \
                     ORDER BY id LIMIT ?2",
                )
                .map_err(unavailable)?;
            st.query_map(params![rid, limit as i64], |r| {
                Ok(ServerLogLine {
                    ts_ms: r.get(0)?,
                    request_id: r.get(1)?,
                    line: r.get(2)?,
                })
            })
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)
        })
        .await
    }

    async fn save_report(&self, report: &ReconcileReport, keep: usize) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(unavailable)?;
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            tx.execute("INSERT INTO reconcile_reports (report) VALUES (?1)", [json])
                .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM reconcile_reports WHERE id NOT IN \
                 (SELECT id FROM reconcile_reports ORDER BY id DESC LIMIT ?1)",
                [keep as i64],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn recent_reports(&self, limit: usize) -> Result<Vec<ReconcileReport>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT report FROM reconcile_reports ORDER BY id DESC LIMIT ?1")
                .map_err(unavailable)?;
            let rows: Vec<String> = st
                .query_map([limit as i64], |r| r.get(0))
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            // A report this version cannot read is skipped rather than failing the whole list.
            Ok(rows
                .iter()
                .filter_map(|r| serde_json::from_str(r).ok())
                .collect())
        })
        .await
    }

    async fn register_image(
        &self,
        image: &Image,
        default: MakeDefault,
    ) -> Result<Registered, StoreError> {
        let image = image.clone();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let created = tx
                .execute(
                    &format!(
                        "INSERT OR IGNORE INTO images ({IMAGE_COLS}) \
                         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,0,?10,?11,?12,?13)"
                    ),
                    params![
                        image.id,
                        image.image,
                        image.registry,
                        image.name,
                        image.tag,
                        image.cpu_millis.map(|v| v as i64),
                        image.memory_mb.map(|v| v as i64),
                        image.timeout_secs.map(|v| v as i64),
                        image.service_account,
                        image.created_by,
                        image.created_at_ms,
                        image.created_by_request_id,
                        image.modified_by_request_id
                    ],
                )
                .map_err(unavailable)?
                == 1;
            let current: Option<String> = tx
                .query_row("SELECT id FROM images WHERE is_default = 1", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(unavailable)?;
            let make = match default {
                MakeDefault::Yes => current.as_deref() != Some(image.id.as_str()),
                MakeDefault::IfNone => current.is_none(),
                MakeDefault::No => false,
            };
            if make {
                // Unmark first: the unique index allows one default at any point.
                tx.execute(
                    "UPDATE images SET is_default = 0, modified_by_request_id = ?1 \
                     WHERE is_default = 1",
                    [&image.modified_by_request_id],
                )
                .map_err(unavailable)?;
                tx.execute(
                    "UPDATE images SET is_default = 1, modified_by_request_id = ?1 WHERE id = ?2",
                    params![image.modified_by_request_id, image.id],
                )
                .map_err(unavailable)?;
            }
            let stored = get_image(&tx, &image.id)?
                .ok_or_else(|| unavailable("registered image vanished"))?;
            tx.commit().map_err(unavailable)?;
            Ok(Registered {
                image: stored,
                created,
            })
        })
        .await
    }

    async fn get_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| get_image(c, &id)).await
    }

    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY id"))
                .map_err(unavailable)?;
            st.query_map([], image_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn delete_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let img = get_image(&tx, &id)?;
            if img.is_some() {
                tx.execute("DELETE FROM images WHERE id = ?1", [&id])
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(img)
        })
        .await
    }

    async fn create_secret(&self, s: &Secret) -> Result<(), StoreError> {
        let s = s.clone();
        self.write(move |c| match put_secret(c, &s, true) {
            Ok(_) => Ok(()),
            Err(e) if is_constraint(&e) => Err(StoreError::AlreadyExists(s.name.clone())),
            Err(e) => Err(unavailable(e)),
        })
        .await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| get_secret(c, &name)).await
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {SECRET_COLS} FROM secrets ORDER BY name"))
                .map_err(unavailable)?;
            st.query_map([], secret_from_row)
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn update_secret(
        &self,
        name: &str,
        patch: &SecretPatch,
    ) -> Result<Option<Secret>, StoreError> {
        let (name, patch) = (name.to_owned(), patch.clone());
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let Some(mut cur) = get_secret(&tx, &name)? else {
                return Ok(None);
            };
            cur.apply(&patch);
            put_secret(&tx, &cur, false).map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Some(cur))
        })
        .await
    }

    async fn delete_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let name = name.to_owned();
        self.write(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let cur = get_secret(&tx, &name)?;
            if cur.is_some() {
                tx.execute("DELETE FROM secrets WHERE name = ?1", [&name])
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(cur)
        })
        .await
    }

    async fn probe_write(&self, now_ms: i64) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO write_probe (id, at_ms) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
                [now_ms],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
