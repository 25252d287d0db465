//! `runvoyd`: the runvoy server.
//!
//! * `runvoyd serve`: the API, the event processor and the reconciler on one backend.
//! * `runvoyd admin create EMAIL`: adds a user with a key to a deployed store.
//! * `runvoyd supervise DIR`: the detached per-execution supervisor of the local backend
//!   (started by `serve`, not by people).

mod admin;
mod cipher;
mod gcp;
mod listener;
mod logfmt;
mod serve;
mod testclock;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The runvoy server.
#[derive(Debug, Parser)]
#[command(name = "runvoyd", version, about = "The runvoy server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (all of serve's flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API on a backend.
    Serve(serve::ServeArgs),
    /// Manage users directly in the store (first admin of a deployed server).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Run one execution's supervisor (internal: started by `serve` on the local backend).
    #[command(hide = true)]
    Supervise {
        /// The execution's directory.
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Supervise { dir } => {
            std::process::exit(runvoy_compute_local::supervisor::run(&dir))
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve::serve(args)),
        Command::Admin(cmd) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(admin::run(cmd)),
    }
}
