//! `runvoyd admin create EMAIL`: adds an admin (or another role) to a deployed store and prints
//! its API key once. Works while `runvoyd serve` runs on the same store (SQLite WAL, or
//! Firestore with the same project, database and collection prefix).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use runvoy_domain::clock::{Clock, SystemClock};
use runvoy_domain::ports::StoreError;
use runvoy_domain::users::{checked_email, parse_role, server_created_user};
use runvoy_domain::{DomainError, auth};
use runvoy_store_firestore::{DEFAULT_DATABASE, DEFAULT_PREFIX};

use crate::gcp::{StoreKind, open_store};

/// `runvoyd admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user with a key right away (no claim step) and print the key once on stdout.
    Create(CreateArgs),
}

/// Arguments of `runvoyd admin create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user's email.
    email: String,
    /// Role: admin, operator, developer or viewer.
    #[arg(long, default_value = "admin")]
    role: String,
    /// The server's data directory (with `--store sqlite`).
    #[arg(long, env = "RUNVOY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Backend whose store to use, as `runvoyd serve --backend`.
    #[arg(
        long,
        env = "RUNVOY_BACKEND_PROVIDER",
        value_enum,
        default_value = "local"
    )]
    backend: crate::serve::Backend,
    /// Store adapter (default: the backend's).
    #[arg(long, env = "RUNVOY_STORE", value_enum)]
    store: Option<StoreKind>,
    /// Google Cloud project of the Firestore database.
    #[arg(long, env = "RUNVOY_GCP_PROJECT_ID")]
    gcp_project_id: Option<String>,
    /// Firestore database id.
    #[arg(long, env = "RUNVOY_GCP_FIRESTORE_DATABASE", default_value = DEFAULT_DATABASE)]
    gcp_firestore_database: String,
    /// Prefix of every Firestore collection name.
    #[arg(long, env = "RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX", default_value = DEFAULT_PREFIX)]
    gcp_firestore_collection_prefix: String,
}

/// Runs an admin subcommand.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::Create(a) = cmd;
    let email = checked_email(&a.email).map_err(domain)?;
    let role = parse_role(&a.role).map_err(domain)?;
    let kind = a.store.unwrap_or(match a.backend {
        crate::serve::Backend::Local => StoreKind::Sqlite,
        crate::serve::Backend::Gcp => StoreKind::Firestore,
    });
    let data_dir = a.data_dir.unwrap_or_else(crate::serve::default_data_dir);
    if kind == StoreKind::Sqlite {
        let db = data_dir.join("runvoy.db");
        if !db.exists() {
            bail!(
                "no runvoy store at {} (start `runvoyd serve` once, or pass --data-dir)",
                db.display()
            );
        }
        // Only checks an existing data dir (adds nothing to its mode).
        crate::serve::prepare_data_dir(&data_dir, 0o700)?;
    }
    let store = open_store(
        kind,
        &data_dir,
        a.gcp_project_id.as_deref(),
        &a.gcp_firestore_database,
        &a.gcp_firestore_collection_prefix,
    )
    .await?;
    let key = auth::new_api_key();
    let user = server_created_user(&email, role, auth::hash_key(&key), SystemClock.now_ms());
    match store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists(_)) => bail!("user {email} already exists"),
        Err(e) => return Err(e).context("creating the user"),
    }
    eprintln!(
        "runvoyd: created {} {email}; its API key (shown only now):",
        role.as_str()
    );
    println!("{key}");
    Ok(())
}

fn domain(e: DomainError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
