//! `runvoyd serve`: wires the adapters of a backend into the domain and serves the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::gcp::ComputeKind;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use runvoy_api::AppState;
use runvoy_api::auth::TokenSigner;
use runvoy_api::ready::Readiness;
use runvoy_api::serverlog::{ServerLogQueue, server_log_layer, write_server_logs};
use runvoy_compute_docker::{DockerCompute, DockerComputeConfig};
use runvoy_compute_local::{
    Bus, Enforcement, Isolation, Limits, LocalCompute, LocalComputeConfig, RecordFileSource,
};
use runvoy_domain::clock::{Clock, SystemClock};
use runvoy_domain::fault::{FaultyCompute, FaultyStore};
use runvoy_domain::health::{MonitoredStore, StoreHealth};
use runvoy_domain::hub::LogHub;
use runvoy_domain::ports::{Compute, LogSource, Store};
use runvoy_domain::processor::Processor;
use runvoy_domain::service::{Service, ServiceConfig};
use runvoy_domain::users::server_created_user;
use runvoy_domain::{Role, auth};

/// Backends `serve` can run on: presets of `--store`, `--compute`, `--events` and `--cipher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Everything on this machine: SQLite, local processes, in-process events, a key file.
    Local,
    /// Google Cloud: Firestore, Cloud Run Jobs, Pub/Sub and Eventarc pushes, Cloud KMS.
    Gcp,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (Cloud Logging field names).
    Json,
}

/// Isolation choice for local executions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IsolationArg {
    /// The bubblewrap sandbox; runvoyd refuses to start when it cannot be set up.
    Bwrap,
    /// No isolation: commands run as runvoyd's user and can read its data dir and keys.
    Process,
}

/// Flags of `runvoyd serve`; each also reads a `RUNVOY_*` variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Backend to run on (a preset; `--store`, `--compute`, `--events` and `--cipher` override
    /// its parts).
    #[arg(
        long,
        env = "RUNVOY_BACKEND_PROVIDER",
        value_enum,
        default_value = "local"
    )]
    backend: Backend,
    /// Directory for the database, workspaces and the admin key.
    #[arg(long, env = "RUNVOY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; see `server.json` in the data dir).
    #[arg(long, env = "RUNVOY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "RUNVOY_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Public base URL used in links such as `websocket_url` (default: the listener's own
    /// address; a request's `Host`/`X-Forwarded-*` are used only from `--trusted-proxies`).
    #[arg(long, env = "RUNVOY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Peers (addresses or CIDRs, comma-separated) whose `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` are believed when building links; nobody's by default.
    #[arg(long, env = "RUNVOY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a connection may stay without a request in flight, including the time a client
    /// takes to send a request's headers; then it is closed.
    #[arg(long, env = "RUNVOY_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout: u64,
    /// Most HTTP connections open at once; at the limit the oldest idle one is closed to make
    /// room, and when none is idle a new one gets 503.
    #[arg(long, env = "RUNVOY_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Most log WebSockets one user may have open at once (more → 429 TOO_MANY_STREAMS).
    #[arg(long, env = "RUNVOY_MAX_STREAMS_PER_USER", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_streams_per_user: u64,
    /// How to isolate local executions. `process` turns isolation off (single-user machines
    /// only); runvoyd then warns at start and `/api/v1/health` says `isolation: none`.
    #[arg(long, env = "RUNVOY_ISOLATION", value_enum, default_value = "bwrap")]
    isolation: IsolationArg,
    /// Memory limit of each execution in MiB, including its in-memory workspace and /tmp
    /// (0: none).
    #[arg(long, env = "RUNVOY_MEMORY_LIMIT_MB", default_value_t = 2048)]
    memory_limit_mb: u64,
    /// Processes and threads one execution may have at once (0: none).
    #[arg(long, env = "RUNVOY_PIDS_LIMIT", default_value_t = 512)]
    pids_limit: u64,
    /// CPU of one execution, in cores (fractions allowed; 0: none).
    #[arg(long, env = "RUNVOY_CPU_LIMIT", default_value_t = 1.0)]
    cpu_limit: f64,
    /// Size of each execution's in-memory /workspace in MiB (0: a directory on disk, no limit).
    #[arg(long, env = "RUNVOY_WORKSPACE_LIMIT_MB", default_value_t = 1024)]
    workspace_limit_mb: u64,
    /// Size of each execution's /tmp in MiB.
    #[arg(long, env = "RUNVOY_TMP_LIMIT_MB", default_value_t = 256)]
    tmp_limit_mb: u64,
    /// The most memory (MiB) one run may ask for with `resources.memory_mb` (0: runs cannot
    /// change it).
    #[arg(long, env = "RUNVOY_MAX_RUN_MEMORY_MB", default_value_t = 8192)]
    max_run_memory_mb: u64,
    /// The most CPU (cores) one run may ask for (0: runs cannot change it).
    #[arg(long, env = "RUNVOY_MAX_RUN_CPUS", default_value_t = 4.0)]
    max_run_cpus: f64,
    /// The most processes one run may ask for (0: runs cannot change it).
    #[arg(long, env = "RUNVOY_MAX_RUN_PIDS", default_value_t = 4096)]
    max_run_pids: u64,
    /// The largest workspace (MiB) one run may ask for (0: runs cannot change it).
    #[arg(long, env = "RUNVOY_MAX_RUN_WORKSPACE_MB", default_value_t = 8192)]
    max_run_workspace_mb: u64,
    /// First host uid of the range (2^20 uids) sandboxed commands run as, one per execution.
    #[arg(long, env = "RUNVOY_SANDBOX_UID_BASE", default_value_t = 1_900_000_000)]
    sandbox_uid_base: u32,
    /// Give local executions the host network (bubblewrap otherwise gives them none).
    #[arg(long, env = "RUNVOY_SHARE_NET")]
    share_net: bool,
    /// The runvoy-runner binary (default: next to runvoyd).
    #[arg(long, env = "RUNVOY_RUNNER_BIN")]
    runner_bin: Option<PathBuf>,
    /// The runvoy-sidecar binary (default: next to runvoyd).
    #[arg(long, env = "RUNVOY_SIDECAR_BIN")]
    sidecar_bin: Option<PathBuf>,
    /// The Docker Engine of `--compute docker`: `unix:///PATH` (or a socket path), `tcp://` or
    /// `http://HOST:PORT`.
    #[arg(
        long,
        env = "RUNVOY_DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// The runvoy-sidecar image of `--compute docker` (already on the engine); it carries the
    /// static runner binary it injects into each workspace.
    #[arg(
        long,
        env = "RUNVOY_DOCKER_SIDECAR_IMAGE",
        default_value = "runvoy-sidecar:dev"
    )]
    docker_sidecar_image: String,
    /// Path of the static runner inside the sidecar image.
    #[arg(
        long,
        env = "RUNVOY_DOCKER_SIDECAR_RUNNER_PATH",
        default_value = "/usr/local/bin/runvoy-runner"
    )]
    docker_sidecar_runner_path: String,
    /// Network of the runner containers of `--compute docker` (`none`: no network at all;
    /// else the name of an engine network, e.g. `bridge`).
    #[arg(long, env = "RUNVOY_DOCKER_NETWORK", default_value = "none")]
    docker_network: String,
    /// Give runner containers a writable root file system (by default only /workspace and
    /// /tmp are writable).
    #[arg(long, env = "RUNVOY_DOCKER_WRITABLE_ROOT")]
    docker_writable_root: bool,
    /// Do not try to pull a registered image the engine lacks (registering it then fails).
    #[arg(long, env = "RUNVOY_DOCKER_NO_PULL")]
    docker_no_pull: bool,
    /// Seconds between SIGTERM and SIGKILL when killing or timing out a command.
    #[arg(long, env = "RUNVOY_KILL_GRACE", default_value_t = 10)]
    kill_grace: u64,
    /// Seconds between scheduled reconcile sweeps.
    #[arg(long, env = "RUNVOY_RECONCILE_INTERVAL", default_value_t = 3600)]
    reconcile_interval: u64,
    /// Seconds to keep the workspace of a finished execution before a sweep removes it
    /// (0 keeps workspaces forever).
    #[arg(long, env = "RUNVOY_WORKSPACE_RETENTION", default_value_t = 7 * 24 * 3600)]
    workspace_retention: u64,
    /// Seconds a lock's lease lasts (`run --lock`). The lock heartbeat renews it every fifth
    /// of that while its holder runs; a lock nobody renewed is free once it lapses.
    #[arg(long, env = "RUNVOY_LOCK_LEASE", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(5..))]
    lock_lease: u64,
    /// Image recorded for runs that name none.
    #[arg(long, env = "RUNVOY_DEFAULT_IMAGE", default_value = "local")]
    default_image: String,
    /// Email of the first admin, created on an empty store.
    #[arg(long, env = "RUNVOY_ADMIN_EMAIL", default_value = "admin@localhost")]
    admin_email: String,
    /// Do not write a CLI config file for the local user.
    #[arg(long, env = "RUNVOY_NO_CLIENT_CONFIG")]
    no_client_config: bool,
    /// The key that signs log-stream tokens, as hex (at least 32 bytes). Every instance of a
    /// deployment needs the same one, or a token one instance issued is refused by another;
    /// unset: a key kept in the data dir (`token.key`).
    #[arg(long, env = "RUNVOY_TOKEN_KEY", hide_env_values = true)]
    token_key: Option<String>,
    /// Base URL an execution's sidecar fetches its secrets from
    /// (`POST {URL}/api/v1/executions/{id}/secrets`); unset: the listener's own URL, which a
    /// sidecar on this machine reaches (on Cloud Run give the service's public URL).
    #[arg(long, env = "RUNVOY_SECRETS_URL")]
    secrets_url: Option<String>,
    /// Lifetime of an execution's secrets fetch token, in seconds (it is also single-use and
    /// dies when the execution finishes).
    #[arg(long, env = "RUNVOY_SECRETS_TOKEN_TTL", default_value_t = 900)]
    secrets_token_ttl: u64,
    /// Failed authentications (bad key, bad WebSocket token, unknown claim token) allowed at
    /// once from one client address before answering 429.
    #[arg(long, env = "RUNVOY_AUTH_FAILURE_BURST", default_value_t = 20)]
    auth_failure_burst: u32,
    /// Failed authentications per minute one client address regains.
    #[arg(long, env = "RUNVOY_AUTH_FAILURE_PER_MINUTE", default_value_t = 20)]
    auth_failure_per_minute: u32,
    /// Server log lines kept for `GET /trace/{request_id}` (the oldest are dropped).
    #[arg(long, env = "RUNVOY_SERVER_LOG_KEEP", default_value_t = 200_000)]
    server_log_keep: u64,
    /// Most unfinished executions (STARTING, RUNNING, TERMINATING) one user may have; more
    /// runs are refused with 429 (0: no limit).
    #[arg(long, env = "RUNVOY_MAX_CONCURRENT_PER_USER", default_value_t = 10)]
    max_concurrent_per_user: u64,
    /// Most unfinished executions on this server; more runs are refused with 429 (0: no limit).
    #[arg(long, env = "RUNVOY_MAX_CONCURRENT_TOTAL", default_value_t = 50)]
    max_concurrent_total: u64,
    /// Most bytes of command output stored per execution; the runner drops and counts the
    /// rest (0: no limit).
    #[arg(long, env = "RUNVOY_MAX_OUTPUT_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_output_bytes: u64,
    /// Most output records (lines, or 64 KiB chunks of longer lines) stored per execution
    /// (0: no limit).
    #[arg(long, env = "RUNVOY_MAX_OUTPUT_LINES", default_value_t = 2_000_000)]
    max_output_lines: u64,
    /// Free bytes the data dir's file system must keep for `GET /health/ready` to answer ready.
    #[arg(long, env = "RUNVOY_MIN_FREE_BYTES", default_value_t = 16 * 1024 * 1024)]
    min_free_bytes: u64,
    #[command(flatten)]
    cipher: crate::cipher::CipherArgs,
    /// Store adapter and event transport (`--store`, `--events`, `--gcp-*`).
    #[command(flatten)]
    gcp: crate::gcp::GcpArgs,
}

/// The readiness condition on the data dir's free space (statvfs, space available to
/// unprivileged users).
fn free_space_check(dir: PathBuf, min_free: u64) -> runvoy_api::ready::ReadinessCheck {
    Arc::new(move || {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: a NUL-terminated path and a zeroed out-struct, as statvfs(3) expects.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            let e = std::io::Error::last_os_error();
            return Some(format!(
                "cannot read the free space of {}: {e}",
                dir.display()
            ));
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        (free < min_free).then(|| {
            format!(
                "data dir {} is out of space: {free} bytes free, {min_free} needed",
                dir.display()
            )
        })
    })
}

/// An address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))
}

/// Logs to stderr, and request-scoped events also to the server log store read by
/// `GET /trace/{request_id}` (returned queue; see `runvoy_api::serverlog`).
fn init_tracing(format: LogFormat) -> ServerLogQueue {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("RUNVOY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (server_logs, queue) = server_log_layer();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(server_logs);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        // Cloud Logging's structured format: severity, message, time, fields at the top level.
        LogFormat::Json => registry
            .with(
                fmt.fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(crate::logfmt::CloudLogging),
            )
            .init(),
    }
    queue
}

pub(crate) fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("runvoy")
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating runvoyd")?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{name} not found next to runvoyd at {}; pass --{}-bin",
            p.display(),
            name.trim_start_matches("runvoy-")
        );
    }
    Ok(p)
}

/// The first executable `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Writes a secret file owner-only (0600), also when it already existed with a wider mode.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Makes a secret file that already exists owner-only (0600).
fn restrict_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mode of the data dir and of its `executions` dir: owner-only, plus search permission (not
/// listing) for others when commands run sandboxed as their own uids (bubblewrap started by
/// root), which must reach their workspace under `executions/<id>` (ids are unguessable; the
/// database and keys are 0600).
pub(crate) fn data_dir_mode(isolation: IsolationArg) -> u32 {
    // SAFETY: plain syscall.
    let own_uids = matches!(isolation, IsolationArg::Bwrap) && unsafe { libc::geteuid() } == 0;
    if own_uids { 0o711 } else { 0o700 }
}

/// Creates the data dir with `mode` when missing (0700, or 0711 for sandboxed commands), adds
/// the search bits of `mode` an existing one lacks, and refuses one that group or others may
/// write: whoever can write there can replace the database or the token key.
pub(crate) fn prepare_data_dir(dir: &Path, mode: u32) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        // The umask may have narrowed what was asked for, never widened it; set it exactly.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting permissions of {}", dir.display()))?;
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let meta = std::fs::metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("data dir {} is not a directory", dir.display());
    }
    let current = meta.mode() & 0o7777;
    if current & 0o022 != 0 {
        bail!(
            "refusing to use data dir {}: its mode {current:04o} lets group or others write to \
             it; run `chmod {mode:o} {}` (it holds the database and the signing keys)",
            dir.display(),
            dir.display()
        );
    }
    let search = mode & 0o011;
    if current & search != search {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(current | search))
            .with_context(|| format!("setting permissions of {}", dir.display()))?;
    }
    Ok(dir)
}

/// Makes the executions dir exactly `mode` (creating it when missing): nobody else may list
/// which executions exist or reach their records by a listed name.
fn prepare_executions_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", dir.display()))
}

/// The signing key all instances share (`--token-key`).
fn shared_token_key(hex_key: &str) -> anyhow::Result<Vec<u8>> {
    match hex::decode(hex_key.trim()) {
        Ok(k) if k.len() >= 32 => Ok(k),
        Ok(k) => bail!(
            "RUNVOY_TOKEN_KEY (--token-key) holds {} bytes; at least 32 are needed \
             (e.g. `openssl rand -hex 32`)",
            k.len()
        ),
        Err(_) => bail!("RUNVOY_TOKEN_KEY (--token-key) must be hex (e.g. `openssl rand -hex 32`)"),
    }
}

/// The signing key for WebSocket tokens, kept in the data dir so tokens survive a restart.
fn token_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let p = data_dir.join("token.key");
    restrict_file(&p).with_context(|| format!("setting permissions of {}", p.display()))?;
    if let Ok(k) = std::fs::read_to_string(&p)
        && let Ok(b) = hex::decode(k.trim())
        && b.len() >= 32
    {
        return Ok(b);
    }
    let k: [u8; 32] = rand::random();
    write_private(&p, hex::encode(k).as_bytes())
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(k.to_vec())
}

/// Creates the first admin on an empty store and keeps its key in `admin.key` (mode 0600). The
/// key is printed once, and only to a terminal: redirected output ends up in log files, which
/// must never hold a key.
async fn bootstrap_admin(
    store: &dyn Store,
    clock: &dyn Clock,
    email: &str,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let key = auth::new_api_key();
    store
        .create_user(&server_created_user(
            email,
            Role::Admin,
            auth::hash_key(&key),
            clock.now_ms(),
        ))
        .await?;
    let p = data_dir.join("admin.key");
    write_private(&p, format!("{key}\n").as_bytes())
        .with_context(|| format!("writing {}", p.display()))?;
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "runvoyd: created admin {email}; API key (shown once, also saved to {}):\n{key}",
            p.display()
        );
    } else {
        eprintln!(
            "runvoyd: created admin {email}; its API key is in {} (read it with: cat {})",
            p.display(),
            p.display()
        );
    }
    Ok(Some(key))
}

/// Period of the sweep of young unsettled executions ([`Processor::sweep_young`]).
const YOUNG_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Runs one reconcile sweep and logs its outcome (the report itself is stored by the sweep).
async fn sweep_and_log(p: &Processor, trigger: &str) {
    match p.sweep(trigger).await {
        Ok(r) => tracing::info!(
            trigger,
            checked = r.checked,
            reconciled = r.reconciled_count,
            errors = r.error_count,
            "reconcile sweep done"
        ),
        Err(e) => tracing::warn!(trigger, error = %e, "reconcile sweep failed"),
    }
}

/// The local compute of `--compute local`, its sandbox proven by one probe run.
fn local_compute(
    args: &ServeArgs,
    data_dir: &Path,
    executions_dir: &Path,
    dir_mode: u32,
    bus: Bus,
) -> anyhow::Result<(Arc<LocalCompute>, Enforcement)> {
    let isolation = match args.isolation {
        IsolationArg::Bwrap => Isolation::Bwrap,
        IsolationArg::Process => {
            eprintln!(
                "runvoyd: WARNING: --isolation process: commands run WITHOUT isolation, as this \
                 user, and can read the data dir and every key in it; never use this on a \
                 machine shared with people you do not trust with the admin key"
            );
            Isolation::Process
        }
    };
    let nonzero = |v: u64| (v > 0).then_some(v);
    let limits = Limits {
        memory_bytes: nonzero(args.memory_limit_mb << 20),
        pids: nonzero(args.pids_limit),
        cpu_millis: nonzero((args.cpu_limit * 1000.0).round().max(0.0) as u64),
        workspace_bytes: nonzero(args.workspace_limit_mb << 20),
        tmp_bytes: Some(args.tmp_limit_mb.max(1) << 20),
    };
    prepare_executions_dir(executions_dir, dir_mode)?;
    let compute = Arc::new(LocalCompute::new(
        LocalComputeConfig {
            executions_dir: executions_dir.to_path_buf(),
            runner_bin: match args.runner_bin.clone() {
                Some(p) => p,
                None => sibling_binary("runvoy-runner")?,
            },
            sidecar_bin: match args.sidecar_bin.clone() {
                Some(p) => p,
                None => sibling_binary("runvoy-sidecar")?,
            },
            supervisor_cmd: vec![std::env::current_exe()?, "supervise".into()],
            isolation,
            share_net: args.share_net,
            limits,
            sandbox_uid_base: args.sandbox_uid_base,
            bwrap_bin: match isolation {
                Isolation::Bwrap => find_on_path("bwrap").ok_or_else(|| {
                    anyhow::anyhow!(
                        "bubblewrap (bwrap) is not installed or not on PATH: runvoyd runs every \
                         command in a bubblewrap sandbox (apt-get install bubblewrap). To run \
                         commands without any isolation on a single-user machine, pass \
                         --isolation process."
                    )
                })?,
                Isolation::Process => PathBuf::new(),
            },
        },
        bus,
    )?);
    if isolation == Isolation::Bwrap
        && let Err(why) = compute.probe()
    {
        let hint = if why.contains("Permission denied") {
            format!(
                "\ncommands run as an unprivileged uid of their own, which must be able to walk to \
                 the data dir: make every parent of {} searchable by others (chmod o+x), or choose \
                 another --data-dir.",
                data_dir.display()
            )
        } else {
            String::new()
        };
        bail!(
            "the bubblewrap sandbox cannot be set up on this machine: {why}{hint}\n\
             runvoyd needs bubblewrap (apt-get install bubblewrap) and unprivileged user \
             namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0). \
             To run commands without any isolation on a single-user machine, pass \
             --isolation process."
        );
    }
    let enforcement = match isolation {
        Isolation::Bwrap => runvoy_compute_local::sandbox::enforcement(),
        Isolation::Process => Enforcement::default(),
    };
    Ok((compute, enforcement))
}

/// The Docker compute of `--compute docker`, connected and its sidecar image checked.
async fn docker_compute(
    args: &ServeArgs,
    data_dir: &Path,
    bus: Bus,
) -> anyhow::Result<DockerCompute> {
    let nonzero = |v: u64| (v > 0).then_some(v);
    let cfg = DockerComputeConfig {
        host: args.docker_host.clone(),
        sidecar_image: args.docker_sidecar_image.clone(),
        sidecar_runner_path: args.docker_sidecar_runner_path.clone(),
        instance: docker_instance(data_dir)?,
        network: args.docker_network.clone(),
        memory_mb: nonzero(args.memory_limit_mb),
        cpu_millis: nonzero((args.cpu_limit * 1000.0).round().max(0.0) as u64),
        pids: nonzero(args.pids_limit),
        tmp_mb: args.tmp_limit_mb,
        read_only_root: !args.docker_writable_root,
        pull: !args.docker_no_pull,
    };
    DockerCompute::connect(cfg, bus)
        .await
        .map_err(|e| anyhow::anyhow!("--compute docker: {e}"))
}

/// The name this data dir's objects carry on the Docker engine (`<data-dir>/docker-instance`,
/// made once): several runvoyd may share one engine, and each lists, resumes and removes only
/// its own containers.
/// Unsettled executions with the seq their stored logs reach without a gap: where following
/// them resumes after a restart.
async fn unsettled_from(store: &dyn Store) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for e in store.list_unsettled().await? {
        let from = store
            .log_stats(&e.id)
            .await
            .map(|s| s.contiguous)
            .unwrap_or(0);
        out.push((e.id, from));
    }
    Ok(out)
}

fn docker_instance(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("docker-instance");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id = hex::encode(rand::random::<[u8; 6]>());
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// What `/api/v1/health` reports as enforced on Docker compute: cgroup limits set by the
/// engine for each configured limit.
fn docker_enforcement(args: &ServeArgs) -> Enforcement {
    let mut limits = std::collections::BTreeMap::new();
    for (name, on) in [
        ("memory", args.memory_limit_mb > 0),
        ("cpu", args.cpu_limit > 0.0),
        ("pids", args.pids_limit > 0),
        ("tmp", true),
    ] {
        if on {
            limits.insert(name.to_owned(), "docker".to_owned());
        }
    }
    Enforcement {
        limits,
        own_uid: false,
    }
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let server_log_queue = init_tracing(args.log_format);
    let gcp = args.backend == Backend::Gcp;
    args.gcp.apply_backend(gcp);
    args.cipher.apply_backend(gcp);
    args.gcp.check()?;
    let dir_mode = data_dir_mode(args.isolation);
    let data_dir = prepare_data_dir(
        &args.data_dir.clone().unwrap_or_else(default_data_dir),
        dir_mode,
    )?;
    let admin_key_file = data_dir.join("admin.key");
    restrict_file(&admin_key_file)
        .with_context(|| format!("setting permissions of {}", admin_key_file.display()))?;

    // No start without a cipher that works both ways.
    let cipher = crate::cipher::start(&args.cipher, &data_dir).await?;

    let clock: Arc<dyn Clock> = match crate::testclock::from_env()? {
        Some(c) => c,
        None => Arc::new(SystemClock),
    };
    let mut store: Arc<dyn Store> = args.gcp.open_store(&data_dir).await?;
    // Test-only: lets integration tests make the store or compute fail on demand.
    let faults = std::env::var_os("RUNVOY_FAULT_INJECTION_DIR").map(PathBuf::from);
    if let Some(dir) = &faults {
        tracing::warn!(dir = %dir.display(), "fault injection enabled (for tests only)");
        store = Arc::new(FaultyStore::new(store, dir));
    }
    // Every write is watched, so readiness can say when the store stops taking them.
    let store_health = Arc::new(StoreHealth::new());
    let store: Arc<dyn Store> = Arc::new(MonitoredStore::new(store, store_health.clone()));
    let nonzero = |v: u64| (v > 0).then_some(v);
    let (bus, bus_rx) = Bus::new(1024);
    let executions_dir = data_dir.join("executions");
    let mut docker = None;
    let (local, compute, log_source, isolation_name, enforcement) = match args.gcp.compute_kind() {
        ComputeKind::Local => {
            let (local, enforcement) =
                local_compute(&args, &data_dir, &executions_dir, dir_mode, bus)?;
            let name = match args.isolation {
                IsolationArg::Bwrap => "bubblewrap",
                IsolationArg::Process => "none",
            };
            let compute: Arc<dyn Compute> = local.clone();
            let source: Arc<dyn LogSource> =
                Arc::new(RecordFileSource::new(executions_dir.clone()));
            (Some(local), compute, source, name, enforcement)
        }
        ComputeKind::Cloudrun => {
            drop(bus);
            let (compute, source) = args.gcp.cloudrun(args.kill_grace)?;
            // Each run is a Cloud Run task: a gVisor or microVM sandbox of its own.
            (None, compute, source, "cloud-run", Enforcement::default())
        }
        ComputeKind::Docker => {
            let d = Arc::new(docker_compute(&args, &data_dir, bus).await?);
            let compute: Arc<dyn Compute> = d.clone();
            let source: Arc<dyn LogSource> = Arc::new(d.log_source());
            docker = Some(d);
            // Each run is a container of its own: namespaces, cgroup limits, the engine's
            // seccomp profile, no capabilities.
            (None, compute, source, "docker", docker_enforcement(&args))
        }
    };
    let hub = Arc::new(LogHub::new());
    let compute_port: Arc<dyn Compute> = match &faults {
        Some(dir) => Arc::new(FaultyCompute::new(compute.clone(), dir)),
        None => compute.clone(),
    };
    let mut processor = Processor::new(
        store.clone(),
        compute_port.clone(),
        log_source,
        hub.clone(),
        clock.clone(),
        args.kill_grace,
    );
    if args.workspace_retention > 0 {
        processor =
            processor.with_workspace_retention(Duration::from_secs(args.workspace_retention));
    }
    processor = processor.with_lock_lease(Duration::from_secs(args.lock_lease));
    let processor = Arc::new(processor);
    // Bound before the service exists: the secrets fetch URL handed to sidecars names it.
    let signing_key = match &args.token_key {
        Some(hex_key) => shared_token_key(hex_key)?,
        None => token_key(&data_dir)?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let fetch_signer = Arc::new(runvoy_api::secrets::SecretsFetchSigner::new(
        signing_key.clone(),
        (args.secrets_token_ttl.max(1) * 1000) as i64,
        args.secrets_url.clone().unwrap_or_else(|| url.clone()),
        clock.clone(),
    ));
    let vault = Arc::new(runvoy_domain::secrets::SecretVault {
        store: store.clone(),
        cipher: cipher.clone(),
        clock: clock.clone(),
    });
    let service = Arc::new(Service {
        store: store.clone(),
        compute: compute_port,
        hub,
        clock: clock.clone(),
        processor: processor.clone(),
        config: ServiceConfig {
            default_image: args.default_image.clone(),
            kill_grace_secs: args.kill_grace,
            max_active_per_user: args.max_concurrent_per_user,
            max_active_total: args.max_concurrent_total,
            max_output_bytes: args.max_output_bytes,
            max_output_lines: args.max_output_lines,
            max_resources: runvoy_domain::Resources {
                memory_mb: nonzero(args.max_run_memory_mb),
                cpu_millis: nonzero((args.max_run_cpus * 1000.0).round().max(0.0) as u64),
                pids: nonzero(args.max_run_pids),
                workspace_mb: nonzero(args.max_run_workspace_mb),
            },
        },
        admission: Default::default(),
        secrets_grant: Some(fetch_signer.clone()),
    });
    args.gcp
        .spawn_pump(bus_rx, processor.clone(), clock.clone())?;

    let admin_key =
        bootstrap_admin(store.as_ref(), clock.as_ref(), &args.admin_email, &data_dir).await?;
    tokio::spawn(write_server_logs(
        server_log_queue,
        store.clone(),
        args.server_log_keep,
    ));
    {
        // Unclaimed users expire with their claim token.
        let (store, clock) = (store.clone(), clock.clone());
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(60));
            loop {
                t.tick().await;
                match store.purge_unclaimed(clock.now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(users = n, "expired unclaimed users removed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not remove expired unclaimed users")
                    }
                }
            }
        });
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        // glibc keeps freed memory in its arenas: after a burst of connections (thousands of
        // log streams) closes, the process would otherwise stay at its peak size.
        let mut t = tokio::time::interval(Duration::from_secs(30));
        loop {
            t.tick().await;
            // SAFETY: malloc_trim only returns free heap pages to the kernel.
            unsafe { libc::malloc_trim(0) };
        }
    });

    // Re-attach to local executions that were running when runvoyd stopped, then settle the
    // rest.
    if let Some(local) = &local {
        for (id, from) in unsettled_from(store.as_ref()).await? {
            local.watch(&id, from);
        }
    }
    // The same for Docker executions, and what a crash left on the engine is removed.
    if let Some(docker) = &docker {
        let unsettled = unsettled_from(store.as_ref()).await?;
        let mut known = std::collections::HashSet::new();
        for id in docker.list().await.map_err(|e| anyhow::anyhow!("{e}"))? {
            if store.get_execution(&id).await?.is_some() {
                known.insert(id);
            }
        }
        match docker.recover(&unsettled, |id| known.contains(id)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "leftovers of a crash removed from the Docker engine"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not look for leftovers on the Docker engine")
            }
        }
    }
    {
        let p = processor.clone();
        tokio::spawn(async move { sweep_and_log(&p, "startup").await });
    }
    {
        // Young runs still STARTING or TERMINATING are swept every few seconds, so one that
        // never reached compute is settled within a minute rather than at the next full sweep.
        let p = processor.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(YOUNG_SWEEP_EVERY);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                match p.sweep_young().await {
                    Ok(r) if r.reconciled_count > 0 => tracing::info!(
                        checked = r.checked,
                        reconciled = r.reconciled_count,
                        "young-execution sweep repaired executions"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "young-execution sweep failed"),
                }
            }
        });
    }
    {
        // The lock heartbeat: renews the leases of running holders, frees those of finished
        // or vanished ones.
        let p = processor.clone();
        let every = Duration::from_secs((args.lock_lease / 5).max(1));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                if let Err(e) = p.tend_locks().await {
                    tracing::warn!(error = %e, "lock heartbeat failed");
                }
            }
        });
    }
    {
        let p = processor.clone();
        let every = Duration::from_secs(args.reconcile_interval.max(1));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                sweep_and_log(&p, "schedule").await;
            }
        });
    }

    // Everything on disk is in place before server.json says the server is up.
    let info = serde_json::json!({ "url": url, "pid": std::process::id() });
    std::fs::write(
        data_dir.join("server.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    tracing::info!(%url, data_dir = %data_dir.display(), backend = ?args.backend,
        store = ?args.gcp.store, compute = ?args.gcp.compute, events = ?args.gcp.events,
        "runvoyd listening");
    eprintln!(
        "runvoyd: listening on {url} (data dir {})",
        data_dir.display()
    );

    if !args.no_client_config
        && let Some(key) = admin_key
    {
        let cfg = runvoy_client::config::Config {
            api_endpoint: url.clone(),
            api_key: key,
            web_url: url.clone(),
            ..Default::default()
        };
        match cfg.write_if_missing(None) {
            Ok(Some(p)) => eprintln!("runvoyd: wrote CLI config {}", p.display()),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not write the CLI config"),
        }
    }

    // Every open WebSocket holds a receiver of this channel: after the HTTP server stops, the
    // sender sees all receivers dropped once those streams have sent their close frames.
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let notify_tx = shutdown_tx.clone();
    let state = AppState::new(
        service,
        TokenSigner::new(signing_key, 10 * 60 * 1000),
        env!("CARGO_PKG_VERSION").to_owned(),
        match args.backend {
            Backend::Local => "local".into(),
            Backend::Gcp => "gcp".into(),
        },
        args.public_url.clone(),
        shutdown_rx,
    )
    .with_auth_failure_limit(args.auth_failure_burst, args.auth_failure_per_minute)
    .with_cipher(cipher.kind())
    .with_secrets(vault, fetch_signer)
    .with_isolation(isolation_name, enforcement.limits)
    .with_compute(compute.platform())
    .with_readiness(Readiness {
        store: Some(store_health),
        checks: vec![free_space_check(data_dir.clone(), args.min_free_bytes)],
    })
    .with_links(url.clone(), args.trusted_proxies.clone())
    .with_max_streams_per_user(args.max_streams_per_user as usize);
    let mut app = runvoy_api::router(state);
    if let Some(push) = args
        .gcp
        .push_router(processor.clone(), store.clone(), clock.clone())
    {
        app = app.merge(push);
    }
    crate::listener::serve(
        listener,
        app,
        crate::listener::Limits {
            idle_timeout: Duration::from_secs(args.header_read_timeout),
            max_connections: args.max_connections as usize,
        },
        Duration::from_secs(30),
        async move {
            shutdown().await;
            let _ = notify_tx.send(true);
        },
    )
    .await?;
    // Upgraded WebSocket connections are not waited for by the HTTP server: give them a moment
    // to tell their clients to reconnect (close 1012) instead of resetting them on exit.
    if tokio::time::timeout(Duration::from_secs(5), shutdown_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("some log streams did not close in time");
    }
    tracing::info!(
        "runvoyd stopped; running executions continue and are re-attached on the next start"
    );
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
