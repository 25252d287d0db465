//! `runvoyd serve --store …` and `--events …`: which store adapter runvoyd opens and whether
//! the Google Cloud push endpoints are mounted. Kept apart from `serve.rs` so its wiring stays
//! one call per choice.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use runvoy_domain::clock::Clock;
use runvoy_domain::ports::Store;
use runvoy_domain::processor::Processor;
use runvoy_events_gcp::oidc::{GOOGLE_JWKS_URL, OidcConfig, Verifier};
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

/// Event transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsKind {
    /// The in-process bus only.
    Inproc,
    /// Also the push endpoints (`/push/pubsub/logs`, `/push/eventarc`,
    /// `/push/scheduler/reconcile`), OIDC-verified.
    Pubsub,
}

/// The store and event transport flags of `runvoyd serve`.
#[derive(Debug, Args)]
pub struct GcpArgs {
    /// Store adapter.
    #[arg(
        long = "store",
        env = "RUNVOY_STORE",
        value_enum,
        default_value = "sqlite"
    )]
    pub store: StoreKind,
    /// Event transport. `pubsub` mounts the push endpoints; local executions still deliver
    /// their records over the in-process bus.
    #[arg(
        long = "events",
        env = "RUNVOY_EVENTS",
        value_enum,
        default_value = "inproc"
    )]
    pub events: EventsKind,
    /// Google Cloud project of the Firestore database (required with `--store firestore`).
    #[arg(long, env = "RUNVOY_GCP_PROJECT_ID")]
    pub gcp_project_id: Option<String>,
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
}

impl GcpArgs {
    /// Refuses inconsistent flags before anything is opened.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.events == EventsKind::Pubsub && !self.insecure_push {
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
        if self.insecure_push && self.events != EventsKind::Pubsub {
            bail!("--insecure-push only applies with --events pubsub");
        }
        Ok(())
    }

    /// Opens the chosen store.
    pub async fn open_store(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
        match self.store {
            StoreKind::Sqlite => Ok(Arc::new(
                SqliteStore::open(&data_dir.join("runvoy.db"))
                    .context("opening the SQLite store")?,
            )),
            StoreKind::Firestore => {
                // The Google client libraries link aws-lc-rs next to the ring the rest uses;
                // rustls then needs the process default named.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let cfg = FirestoreConfig {
                    project_id: self
                        .gcp_project_id
                        .clone()
                        .filter(|p| !p.is_empty())
                        .context(
                            "--store firestore needs RUNVOY_GCP_PROJECT_ID (--gcp-project-id)",
                        )?,
                    database_id: self.gcp_firestore_database.clone(),
                    collection_prefix: self.gcp_firestore_collection_prefix.clone(),
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

    /// The push routes, when `--events pubsub`.
    pub fn push_router(
        &self,
        processor: Arc<Processor>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Option<axum::Router> {
        if self.events != EventsKind::Pubsub {
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
