//! `runvoyd serve --store …`, `--compute …` and `--events …`: which store and compute adapters
//! runvoyd opens and whether the Google Cloud push endpoints are mounted, with `--backend` as
//! presets. Kept apart from `serve.rs` so its wiring stays one call per choice.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use runvoy_compute_cloudrun::{
    AdcTokenProvider, CloudLoggingSource, CloudRunCompute, CloudRunConfig, StaticToken,
    TokenProvider,
};
use runvoy_domain::Event;
use runvoy_domain::clock::Clock;
use runvoy_domain::ports::{Compute, LogSource, Store};
use runvoy_domain::processor::Processor;
use runvoy_events_gcp::oidc::{GOOGLE_JWKS_URL, OidcConfig, Verifier};
use runvoy_events_gcp::sink::EmulatorSink;
use runvoy_events_gcp::{PushAuth, PushConfig, PushState};
use runvoy_store_firestore::{DEFAULT_DATABASE, DEFAULT_PREFIX, FirestoreConfig, FirestoreStore};
use runvoy_store_sqlite::SqliteStore;

/// Store adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// SQLite in the data dir.
    Sqlite,
    /// Google Cloud Firestore (or its emulator with `FIRESTORE_EMULATOR_HOST`).
    Firestore,
}

/// Opens a store: SQLite in `data_dir`, or Firestore (the emulator with
/// `FIRESTORE_EMULATOR_HOST`).
pub async fn open_store(
    kind: StoreKind,
    data_dir: &Path,
    project: Option<&str>,
    database: &str,
    prefix: &str,
) -> anyhow::Result<Arc<dyn Store>> {
    match kind {
        StoreKind::Sqlite => Ok(Arc::new(
            SqliteStore::open(&data_dir.join("runvoy.db")).context("opening the SQLite store")?,
        )),
        StoreKind::Firestore => {
            // The Google client libraries link aws-lc-rs next to the ring the rest uses;
            // rustls then needs the process default named.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cfg = FirestoreConfig {
                project_id: project
                    .filter(|p| !p.is_empty())
                    .context("--store firestore needs RUNVOY_GCP_PROJECT_ID (--gcp-project-id)")?
                    .to_owned(),
                database_id: database.to_owned(),
                collection_prefix: prefix.to_owned(),
            };
            if let Ok(h) = std::env::var("FIRESTORE_EMULATOR_HOST") {
                tracing::info!(host = %h, "using the Firestore emulator");
            }
            let store = FirestoreStore::connect(&cfg)
                .await
                .context("opening the Firestore store")?;
            Ok(Arc::new(store))
        }
    }
}

/// Compute adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ComputeKind {
    /// Processes on this machine (bubblewrap sandbox).
    Local,
    /// One Cloud Run Job execution per run (Admin API v2).
    Cloudrun,
    /// Containers on a Docker Engine: a sidecar and a runner container per run.
    Docker,
}

/// Event transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsKind {
    /// The in-process bus only.
    Inproc,
    /// Also the push endpoints (`/push/pubsub/logs`, `/push/eventarc`,
    /// `/push/scheduler/reconcile`), OIDC-verified.
    Pubsub,
}

/// The store, compute and event transport flags of `runvoyd serve`. Each kind left unset takes
/// the `--backend` preset's choice.
#[derive(Debug, Args)]
pub struct GcpArgs {
    /// Store adapter (default: the backend's; `local`: sqlite, `gcp`: firestore).
    #[arg(long = "store", env = "RUNVOY_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Compute adapter (default: the backend's; `local`: local, `gcp`: cloudrun).
    #[arg(long = "compute", env = "RUNVOY_COMPUTE", value_enum)]
    pub compute: Option<ComputeKind>,
    /// Event transport (default: the backend's; `local`: inproc, `gcp`: pubsub). `pubsub`
    /// mounts the push endpoints; local executions still deliver their records over the
    /// in-process bus.
    #[arg(long = "events", env = "RUNVOY_EVENTS", value_enum)]
    pub events: Option<EventsKind>,
    /// Google Cloud project of the Firestore database and the Cloud Run jobs (required with
    /// `--store firestore` and `--compute cloudrun`).
    #[arg(long, env = "RUNVOY_GCP_PROJECT_ID")]
    pub gcp_project_id: Option<String>,
    /// Region of the Cloud Run jobs (required with `--compute cloudrun`).
    #[arg(long, env = "RUNVOY_GCP_REGION")]
    pub gcp_region: Option<String>,
    /// The runvoy-sidecar image each job's sidecar container runs (required with
    /// `--compute cloudrun`); it carries the runner binary it puts into the workspace.
    #[arg(long, env = "RUNVOY_GCP_SIDECAR_IMAGE")]
    pub gcp_sidecar_image: Option<String>,
    /// Service account the jobs' tasks run as (default: the project's default compute account).
    #[arg(long, env = "RUNVOY_GCP_JOB_SERVICE_ACCOUNT")]
    pub gcp_job_service_account: Option<String>,
    /// Base URL of the Cloud Run Admin API.
    #[arg(
        long,
        env = "RUNVOY_GCP_CLOUDRUN_ENDPOINT",
        default_value = "https://run.googleapis.com"
    )]
    pub gcp_cloudrun_endpoint: String,
    /// Base URL of the Cloud Logging API (read to fill gaps in the pushed logs).
    #[arg(
        long,
        env = "RUNVOY_GCP_LOGGING_ENDPOINT",
        default_value = "https://logging.googleapis.com"
    )]
    pub gcp_logging_endpoint: String,
    /// Test only, with both endpoints set: a fixed access token for Cloud Run and Cloud Logging
    /// instead of Application Default Credentials.
    #[arg(long, env = "RUNVOY_GCP_ACCESS_TOKEN", hide = true)]
    pub gcp_access_token: Option<String>,
    /// Firestore database id.
    #[arg(long, env = "RUNVOY_GCP_FIRESTORE_DATABASE", default_value = DEFAULT_DATABASE)]
    pub gcp_firestore_database: String,
    /// Prefix of every Firestore collection name (several deployments can share a database).
    #[arg(long, env = "RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX", default_value = DEFAULT_PREFIX)]
    pub gcp_firestore_collection_prefix: String,
    /// The `aud` every push token must carry (as configured on the push subscription, the
    /// Eventarc trigger and the Scheduler job).
    #[arg(long, env = "RUNVOY_GCP_PUSH_AUDIENCE")]
    pub gcp_push_audience: Option<String>,
    /// The service account every push token must be minted for (`email`).
    #[arg(long, env = "RUNVOY_GCP_PUSH_SERVICE_ACCOUNT")]
    pub gcp_push_service_account: Option<String>,
    /// Where the push tokens' signing keys are (JWKS).
    #[arg(long, env = "RUNVOY_GCP_PUSH_JWKS_URL", default_value = GOOGLE_JWKS_URL)]
    pub gcp_push_jwks_url: String,
    /// Accept pushes without verifying any token (emulator runs only: anyone who can reach the
    /// server can then inject records and trigger sweeps).
    #[arg(long, env = "RUNVOY_INSECURE_PUSH")]
    pub insecure_push: bool,
    /// Publish local executions' records to this topic of Google's Pub/Sub emulator
    /// (`projects/P/topics/T`; needs `PUBSUB_EMULATOR_HOST`), shaped as Cloud Logging's sink
    /// publishes a Cloud Run job's stdout, instead of handing them to the processor in-process.
    /// A push subscription on the topic to `/push/pubsub/logs` brings them back.
    #[arg(long, env = "RUNVOY_GCP_LOCAL_SINK_TOPIC")]
    pub gcp_local_sink_topic: Option<String>,
}

impl GcpArgs {
    /// Fills the kinds left unset from the backend preset.
    pub fn apply_backend(&mut self, gcp: bool) {
        if gcp {
            self.store.get_or_insert(StoreKind::Firestore);
            self.compute.get_or_insert(ComputeKind::Cloudrun);
            self.events.get_or_insert(EventsKind::Pubsub);
        } else {
            self.store.get_or_insert(StoreKind::Sqlite);
            self.compute.get_or_insert(ComputeKind::Local);
            self.events.get_or_insert(EventsKind::Inproc);
        }
    }

    fn store_kind(&self) -> StoreKind {
        self.store.unwrap_or(StoreKind::Sqlite)
    }

    /// The compute adapter chosen.
    pub fn compute_kind(&self) -> ComputeKind {
        self.compute.unwrap_or(ComputeKind::Local)
    }

    fn events_kind(&self) -> EventsKind {
        self.events.unwrap_or(EventsKind::Inproc)
    }

    /// Refuses inconsistent flags before anything is opened.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.compute_kind() == ComputeKind::Cloudrun {
            for (v, what) in [
                (
                    &self.gcp_project_id,
                    "RUNVOY_GCP_PROJECT_ID (--gcp-project-id)",
                ),
                (&self.gcp_region, "RUNVOY_GCP_REGION (--gcp-region)"),
                (
                    &self.gcp_sidecar_image,
                    "RUNVOY_GCP_SIDECAR_IMAGE (--gcp-sidecar-image)",
                ),
            ] {
                if v.as_deref().is_none_or(str::is_empty) {
                    bail!("--compute cloudrun needs {what}");
                }
            }
            if self.events_kind() != EventsKind::Pubsub {
                bail!(
                    "--compute cloudrun needs --events pubsub: a Cloud Run job's records reach \
                     runvoyd only through the log sink's push subscription"
                );
            }
            if self.gcp_local_sink_topic.is_some() {
                bail!("--gcp-local-sink-topic only applies with --compute local");
            }
        }
        if self.gcp_access_token.is_some()
            && (self
                .gcp_cloudrun_endpoint
                .starts_with("https://run.googleapis.com")
                || self
                    .gcp_logging_endpoint
                    .starts_with("https://logging.googleapis.com"))
        {
            bail!(
                "RUNVOY_GCP_ACCESS_TOKEN is for tests against RUNVOY_GCP_CLOUDRUN_ENDPOINT and \
                 RUNVOY_GCP_LOGGING_ENDPOINT only; Google's APIs are reached with Application \
                 Default Credentials"
            );
        }
        if self.events_kind() == EventsKind::Pubsub && !self.insecure_push {
            if self.gcp_push_audience.as_deref().is_none_or(str::is_empty) {
                bail!(
                    "--events pubsub needs RUNVOY_GCP_PUSH_AUDIENCE (--gcp-push-audience): the \
                     audience of the push tokens (or --insecure-push for emulator runs)"
                );
            }
            if self
                .gcp_push_service_account
                .as_deref()
                .is_none_or(str::is_empty)
            {
                bail!(
                    "--events pubsub needs RUNVOY_GCP_PUSH_SERVICE_ACCOUNT \
                     (--gcp-push-service-account): the account the push tokens are minted for \
                     (or --insecure-push for emulator runs)"
                );
            }
        }
        if self.insecure_push && self.events_kind() != EventsKind::Pubsub {
            bail!("--insecure-push only applies with --events pubsub");
        }
        if let Some(topic) = &self.gcp_local_sink_topic {
            if self.events_kind() != EventsKind::Pubsub {
                bail!("--gcp-local-sink-topic only applies with --events pubsub");
            }
            let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_default();
            if host.is_empty() {
                bail!(
                    "--gcp-local-sink-topic publishes to Google's Pub/Sub emulator only: set \
                     PUBSUB_EMULATOR_HOST"
                );
            }
            EmulatorSink::new(&host, topic).map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(())
    }

    /// Opens the chosen store.
    pub async fn open_store(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
        open_store(
            self.store_kind(),
            data_dir,
            self.gcp_project_id.as_deref(),
            &self.gcp_firestore_database,
            &self.gcp_firestore_collection_prefix,
        )
        .await
    }

    /// The push routes, when `--events pubsub`.
    pub fn push_router(
        &self,
        processor: Arc<Processor>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Option<axum::Router> {
        if self.events_kind() != EventsKind::Pubsub {
            return None;
        }
        let auth = if self.insecure_push {
            eprintln!(
                "runvoyd: WARNING: --insecure-push: the push endpoints (/push/*) accept requests \
                 WITHOUT verifying any token; anyone who can reach this server can inject log \
                 records and trigger sweeps. Use it only with local emulators."
            );
            tracing::warn!("push endpoints are NOT authenticated (--insecure-push)");
            PushAuth::Insecure
        } else {
            let mut cfg = OidcConfig::google(
                self.gcp_push_audience.clone().unwrap_or_default(),
                self.gcp_push_service_account.clone().unwrap_or_default(),
            );
            cfg.jwks_url = self.gcp_push_jwks_url.clone();
            tracing::info!(audience = %cfg.audience, service_account = %cfg.service_account,
                jwks = %cfg.jwks_url, "push endpoints verify OIDC tokens");
            PushAuth::Oidc(Verifier::new(cfg))
        };
        let state = PushState::new(processor, store, clock, PushConfig::new(auth));
        Some(runvoy_events_gcp::router(state))
    }
}

impl GcpArgs {
    /// The Cloud Run compute and the Cloud Logging log source of `--compute cloudrun`.
    pub fn cloudrun(
        &self,
        kill_grace_secs: u64,
    ) -> anyhow::Result<(Arc<dyn Compute>, Arc<dyn LogSource>)> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cfg = CloudRunConfig::new(
            self.gcp_project_id.as_deref().unwrap_or_default(),
            self.gcp_region.as_deref().unwrap_or_default(),
            self.gcp_sidecar_image.as_deref().unwrap_or_default(),
        );
        cfg.base_url = self.gcp_cloudrun_endpoint.clone();
        cfg.service_account = self.gcp_job_service_account.clone().unwrap_or_default();
        // The runner needs the kill grace on top of the run's timeout to write its last record.
        cfg.timeout_slack = cfg
            .timeout_slack
            .max(std::time::Duration::from_secs(kill_grace_secs + 30));
        let tokens: Arc<dyn TokenProvider> = match &self.gcp_access_token {
            Some(t) => Arc::new(StaticToken(t.clone())),
            None => Arc::new(AdcTokenProvider::new().map_err(anyhow::Error::msg)?),
        };
        let logs = CloudLoggingSource::new(&cfg, &self.gcp_logging_endpoint, tokens.clone())?;
        let compute = CloudRunCompute::new(cfg, tokens)?;
        tracing::info!(project = ?self.gcp_project_id, region = ?self.gcp_region,
            endpoint = %self.gcp_cloudrun_endpoint, "compute on Cloud Run Jobs");
        Ok((Arc::new(compute), Arc::new(logs)))
    }

    /// Starts delivering the local bus's events: to the processor in-process, or, with
    /// `--gcp-local-sink-topic`, records through the Pub/Sub emulator (state hints stay
    /// in-process: on Cloud Run they come from Cloud Run itself, not from the log stream).
    pub fn spawn_pump(
        &self,
        rx: tokio::sync::mpsc::Receiver<Event>,
        processor: Arc<Processor>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<()> {
        let Some(topic) = &self.gcp_local_sink_topic else {
            tokio::spawn(runvoy_compute_local::pump(rx, processor));
            return Ok(());
        };
        let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_default();
        let sink = EmulatorSink::new(&host, topic).map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(topic = %topic, emulator = %host,
            "local records are published to the Pub/Sub emulator, as a Cloud Logging sink would");
        tokio::spawn(pump_via_sink(rx, processor, sink, clock));
        Ok(())
    }
}

async fn pump_via_sink(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    processor: Arc<Processor>,
    sink: EmulatorSink,
    clock: Arc<dyn Clock>,
) {
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Records {
                execution_id,
                records,
                exit,
            } => {
                // What is not published stays in the record file, where the reconciler finds it.
                if let Err(e) = sink
                    .publish(&execution_id, &records, exit.as_ref(), clock.now_ms())
                    .await
                {
                    tracing::warn!(execution_id = %execution_id, error = %e,
                        "gave up publishing records to the Pub/Sub emulator");
                }
            }
            ev @ Event::ComputeChanged { .. } => {
                let p = processor.clone();
                tokio::spawn(async move {
                    let id = ev.execution_id().to_owned();
                    if let Err(e) = p.handle(ev).await {
                        tracing::warn!(execution_id = %id, error = %e,
                            "reconcile after compute event failed; the sweep will retry");
                    }
                });
            }
        }
    }
}
