//! `runvoy-fake-gcp`: the Cloud Run Admin API v2 and Cloud Logging `entries.list` fakes on one
//! port, with every job execution run for real on local compute and its log entries published
//! to a Pub/Sub emulator topic, as a log sink publishes them; with `--kms-key`, also runvoy's
//! Cloud KMS fake on a port of its own.
//!
//! Prints one JSON line `{"url": ..., "kms_url": ...}` on stdout once it serves (and writes it
//! to `STATE_DIR/fake.json`), then serves until SIGTERM/SIGINT. Every API accepts any bearer
//! token; the KMS fake only `--kms-token`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use runvoy_compute_local::{Bus, Isolation, Limits, LocalCompute, LocalComputeConfig};
use runvoy_events_gcp::sink::EmulatorSink;
use runvoy_fake_gcp::{FakeCloudRun, LocalPlatform, LogStore};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IsolationArg {
    /// The bubblewrap sandbox of runvoy's local backend.
    Bwrap,
    /// No isolation.
    Process,
}

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Directory for the executions' workspaces.
    #[arg(long)]
    state_dir: PathBuf,
    /// Publish every log entry to this topic of the Pub/Sub emulator (`projects/P/topics/T`;
    /// needs `PUBSUB_EMULATOR_HOST`).
    #[arg(long)]
    pubsub_topic: Option<String>,
    /// The `runvoyd` binary (its `supervise` command supervises each execution).
    #[arg(long)]
    runvoyd_bin: PathBuf,
    /// The runner binary.
    #[arg(long)]
    runner_bin: PathBuf,
    /// The sidecar binary.
    #[arg(long)]
    sidecar_bin: PathBuf,
    /// How the containers' processes are isolated.
    #[arg(long, value_enum, default_value = "bwrap")]
    isolation: IsolationArg,
    /// Serve a Cloud KMS fake holding this CryptoKey
    /// (`projects/P/locations/L/keyRings/R/cryptoKeys/K`).
    #[arg(long)]
    kms_key: Option<String>,
    /// The one access token the KMS fake accepts.
    #[arg(long, default_value = "fake-gcp-token")]
    kms_token: String,
    /// First uid of the sandboxes (as `runvoyd serve --sandbox-uid-base`).
    #[arg(long, default_value_t = 1_900_000_000)]
    sandbox_uid_base: u32,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNVOY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    // The supervisor and the sandbox run in other directories: every path must be absolute.
    let absolute = |p: &PathBuf| {
        p.canonicalize()
            .with_context(|| format!("{} not found", p.display()))
    };
    let (runvoyd_bin, runner_bin, sidecar_bin) = (
        absolute(&args.runvoyd_bin)?,
        absolute(&args.runner_bin)?,
        absolute(&args.sidecar_bin)?,
    );
    let sink = match &args.pubsub_topic {
        Some(topic) => {
            let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_default();
            if host.is_empty() {
                bail!("--pubsub-topic needs PUBSUB_EMULATOR_HOST");
            }
            Some(EmulatorSink::new(&host, topic).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let isolation = match args.isolation {
        IsolationArg::Bwrap => Isolation::Bwrap,
        IsolationArg::Process => Isolation::Process,
    };
    let (bus, bus_rx) = Bus::new(1024);
    let compute = Arc::new(LocalCompute::new(
        LocalComputeConfig {
            executions_dir: state_dir.join("executions"),
            runner_bin,
            sidecar_bin,
            supervisor_cmd: vec![runvoyd_bin, "supervise".into()],
            isolation,
            share_net: false,
            // A Cloud Run task's own defaults: 1 CPU, 512 MiB.
            limits: Limits {
                memory_bytes: Some(512 << 20),
                pids: Some(512),
                cpu_millis: Some(1000),
                workspace_bytes: Some(1 << 30),
                tmp_bytes: Some(256 << 20),
            },
            sandbox_uid_base: args.sandbox_uid_base,
            bwrap_bin: match isolation {
                Isolation::Bwrap => find_on_path("bwrap").context("bwrap is not on PATH")?,
                Isolation::Process => PathBuf::new(),
            },
        },
        bus,
    )?);
    if isolation == Isolation::Bwrap {
        compute
            .probe()
            .map_err(|e| anyhow::anyhow!("the sandbox cannot be set up: {e}"))?;
    }
    let logs = LogStore::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let fake = FakeCloudRun::start_with(listener, tx, logs.router());
    let platform = LocalPlatform::new(fake.clone(), compute, logs, sink);
    tokio::spawn(platform.drive(rx, bus_rx));
    let kms = match &args.kms_key {
        Some(key) => {
            let kms = runvoy_cipher_kms::fake::FakeKms::start(&args.kms_token).await;
            kms.add_key(key);
            Some(kms)
        }
        None => None,
    };
    let line = serde_json::json!({ "url": fake.url, "kms_url": kms.as_ref().map(|k| k.url()) })
        .to_string();
    std::fs::write(state_dir.join("fake.json"), &line)?;
    println!("{line}");
    tracing::info!(url = %fake.url, "fake Cloud Run and Cloud Logging serving");
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
