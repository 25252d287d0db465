//! `runvoy playbook list|show|run`: named runs kept as YAML files (see
//! `runvoy_client::playbook` for the format and where they are looked up).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use runvoy_client::config::{Config, Overrides};
use runvoy_client::playbook::{self, Entry, Playbook};

use crate::commands::{RunPlan, print_json, run_plan};
use crate::ui::Ui;
use crate::util::{parse_timeout, truncate};
use crate::{Output, RunOpts};

/// `runvoy playbook` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlaybookCmd {
    /// List the playbooks of .runvoy/ (working directory) and ~/.runvoy/playbooks/.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a playbook and the command it runs.
    Show {
        /// Playbook name (its file name without .yml/.yaml).
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run a playbook: its commands joined with && as one shell line, with the options of
    /// `runvoy run` overriding its image, timeout and lock.
    #[command(after_long_help = PLAYBOOK_RUN_HELP)]
    Run(Box<PlaybookRunArgs>),
}

const PLAYBOOK_RUN_HELP: &str = "\
Environment, lowest to highest: the playbook's env, local RUNVOY_USER_K=V variables (as K=V),
--env-file files, then -e. --set KEY=VALUE changes a parameter (a variable the playbook's env
declares) and refuses names it does not declare:
  runvoy playbook run terraform-example --set TERRAFORM_VERSION=1.9.8
-g/--git-repo, -r/--git-ref and -p/--git-path override the playbook's git_repo, git_ref and
git_path. A playbook's secrets are injected like --secret (merged with --secret options).";

/// `runvoy playbook run` arguments.
#[derive(Debug, Args)]
pub struct PlaybookRunArgs {
    /// Playbook name (its file name without .yml/.yaml).
    pub name: String,
    /// Set a parameter: KEY must be a variable the playbook's env declares. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub opts: RunOpts,
}

/// Where playbooks are looked up, and the config file to leave out.
fn dirs() -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let skip = Config::default_path().into_iter().collect();
    Ok((playbook::search_dirs(&cwd, home.as_deref()), skip))
}

fn find(name: &str) -> anyhow::Result<(Entry, Playbook)> {
    let (dirs, skip) = dirs()?;
    let mut e = playbook::find(&dirs, &skip, name)?;
    let pb = std::mem::replace(&mut e.playbook, Ok(Playbook::default()))?;
    Ok((e, pb))
}

/// Runs a `playbook` subcommand.
pub async fn run(o: &Overrides, cmd: PlaybookCmd, ui: Ui) -> anyhow::Result<i32> {
    match cmd {
        PlaybookCmd::List { output } => list(output, ui),
        PlaybookCmd::Show { name, output } => {
            let (e, pb) = find(&name)?;
            match output {
                Output::Json => print_json(&serde_json::json!({
                    "name": e.name,
                    "file": e.path,
                    "playbook": pb,
                    "command": pb.command_line(),
                }))?,
                Output::Text => out!("{}", show_text(&e, &pb)),
            }
            Ok(0)
        }
        PlaybookCmd::Run(a) => {
            let (e, mut pb) = find(&a.name)?;
            playbook::set_params(&mut pb, &a.set).map_err(anyhow::Error::msg)?;
            let timeout = match &pb.timeout {
                None => None,
                Some(t) => Some(
                    parse_timeout(t)
                        .map_err(|err| anyhow::anyhow!("{}: timeout: {err}", e.path.display()))?,
                )
                .filter(|t| *t > 0),
            };
            let command = pb.command_line();
            ui.info(&format!(
                "playbook {} ({}): {}",
                e.name,
                e.path.display(),
                truncate(&command, 200)
            ));
            let plan = RunPlan {
                command,
                argv: None,
                env: pb.env,
                image: pb.image,
                timeout,
                lock: pb.lock,
                secrets: pb.secrets,
                git_repo: pb.git_repo,
                git_ref: pb.git_ref,
                git_path: pb.git_path,
            };
            let client = crate::commands::client(o)?;
            run_plan(&client, plan, a.opts, ui).await
        }
    }
}

fn list(output: Output, ui: Ui) -> anyhow::Result<i32> {
    let (dirs, skip) = dirs()?;
    let entries = playbook::list(&dirs, &skip);
    if output == Output::Json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match &e.playbook {
                Ok(pb) => serde_json::json!({
                    "name": e.name, "file": e.path, "description": pb.description,
                }),
                Err(err) => serde_json::json!({
                    "name": e.name, "file": e.path, "error": err.to_string(),
                }),
            })
            .collect();
        print_json(&rows)?;
        return Ok(0);
    }
    if entries.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        ui.info(&format!("no playbooks in {}", shown.join(" or ")));
        return Ok(0);
    }
    let width = entries
        .iter()
        .map(|e| e.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!("{:<width$}  DESCRIPTION", "NAME");
    for e in &entries {
        let desc = match &e.playbook {
            Ok(pb) => truncate(&pb.description, 70),
            Err(_) => "(invalid, see below)".into(),
        };
        outln!("{:<width$}  {desc}", e.name);
    }
    for e in &entries {
        if let Err(err) = &e.playbook {
            ui.failure(&err.to_string());
        }
    }
    Ok(0)
}

/// `Label: value` lines for `playbook show`.
fn show_text(e: &Entry, pb: &Playbook) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", e.name.clone()),
        ("File", e.path.display().to_string()),
    ];
    let mut opt = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            rows.push((k, v.clone()));
        }
    };
    opt("Image", &pb.image);
    opt("Git repo", &pb.git_repo);
    opt("Git ref", &pb.git_ref);
    opt("Git path", &pb.git_path);
    opt("Timeout", &pb.timeout);
    opt("Lock", &pb.lock);
    if !pb.description.is_empty() {
        rows.insert(2, ("Description", pb.description.clone()));
    }
    if !pb.secrets.is_empty() {
        rows.push(("Secrets", pb.secrets.join(", ")));
    }
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{:<13} {v}\n", format!("{k}:")));
    }
    if !pb.env.is_empty() {
        s.push_str("Env:\n");
        for (k, v) in &pb.env {
            s.push_str(&format!("  {k}={v}\n"));
        }
    }
    s.push_str("Commands:\n");
    for (i, c) in pb.commands.iter().enumerate() {
        s.push_str(&format!("  {}. {c}\n", i + 1));
    }
    s.push_str(&format!("Runs:         {}\n", pb.command_line()));
    s
}
