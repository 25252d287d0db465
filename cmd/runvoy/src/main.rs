//! `runvoy`: run a command remotely in an ephemeral container, with live logs and its exit code.
//!
//! Data (remote output, ids, tables, JSON) goes to stdout; runvoy's own messages go to stderr.
//! Exit codes: the remote command's code; 124 when it timed out; 130 after Ctrl-C; 125 for
//! runvoy's own errors, usage errors included (2 is a common remote code: `terraform plan`
//! with changes, `grep` errors).

/// `println!` that returns the write error (a closed pipe) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `print!` that returns the write error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))?
    };
}

mod commands;
mod health;
mod images;
mod playbook;
mod secrets;
mod stream;
mod ui;
mod users;
mod util;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use runvoy_client::ClientError;
use runvoy_client::config::ConfigError;
use runvoy_client::proto::Status;

use crate::util::EXIT_RUNVOY_ERROR;

/// Run commands remotely in ephemeral containers, with live logs and the remote exit code.
#[derive(Debug, Parser)]
#[command(name = "runvoy", version, propagate_version = true)]
pub struct Cli {
    /// Server URL (overrides RUNVOY_API_URL and the config file).
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API key (overrides RUNVOY_API_KEY and the config file).
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Profile of the config file to use, and the one `configure` and `claim` write (overrides
    /// RUNVOY_PROFILE; `default` is the file's top-level keys).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a command remotely and stream its output; exits with its exit code.
    #[command(after_long_help = RUN_HELP)]
    Run(RunArgs),
    /// Print an execution's logs (-f: follow until it finishes and exit with its code).
    Logs(LogsArgs),
    /// Show an execution.
    Status {
        /// Execution id (or a unique prefix, as `list` shows it).
        id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop a running execution.
    Kill {
        /// Execution id (or a unique prefix, as `list` shows it).
        id: String,
    },
    /// List recent executions, newest first.
    List(ListArgs),
    /// The reconciler: run a sweep now, or show recent sweep reports (admin).
    #[command(subcommand)]
    Health(health::HealthCmd),
    /// Playbooks: named runs kept in .runvoy/*.yml (then ~/.runvoy/playbooks/): list, show, run.
    #[command(subcommand)]
    Playbook(playbook::PlaybookCmd),
    /// Manage users and API keys: create, list, revoke, set-role, rotate-key.
    #[command(subcommand)]
    Users(users::UsersCmd),
    /// The image registry: register, list, show, unregister.
    #[command(subcommand)]
    Images(images::ImagesCmd),
    /// Secrets runs get as environment variables (--secret NAME): create, list, get, update,
    /// delete. Values are read from a prompt or stdin, never from an argument.
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// Redeem a claim token from your admin and save the API key to the config file.
    Claim {
        /// The one-time claim token.
        token: String,
        /// Replace an API key already in the config file without asking.
        #[arg(long)]
        force: bool,
    },
    /// Show what a request did: the records it touched and its server log lines (admin).
    Trace {
        /// The request id (X-Request-Id, also printed in the runner banner).
        request_id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show the CLI and server versions.
    Version,
    /// Print a shell completion script.
    Completion {
        /// Shell to generate for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the config file (~/.runvoy/config.yaml, or RUNVOY_CONFIG) from --api-url and
    /// --api-key, prompting for whichever is absent. An existing key is replaced only after a
    /// yes on a terminal, or with --force.
    Configure {
        /// Replace an API key already in the config file without asking.
        #[arg(long)]
        force: bool,
    },
}

const RUN_HELP: &str = "\
Command forms:
  One argument is a shell line, run with /bin/sh -c (pipes, &&, $VARS expand remotely):
    runvoy run 'make test && make lint'
    runvoy run 'echo $HOME'            # the remote HOME
  Several arguments are an exact argv, run without a shell (as docker and kubectl do):
    runvoy run -- grep -c 'a b' /etc/passwd
    runvoy run -- sh -c 'exit 42'      # runvoy exits 42
    runvoy run -- printf '%s|' a '' b  # the empty argument is kept
  runvoy's own options go before the command; everything from the first word of the command
  (or after --) belongs to it: `runvoy run echo --detach hi` prints \"--detach hi\".

Standard input:
  When stdin is not a terminal it is sent with the run (at most 1 MiB) and the command reads it:
    echo hi | runvoy run -- cat
    runvoy run -q -- wc -l < file
  From a terminal, or with --no-stdin, the command reads end-of-file.

Environment (lowest to highest): local RUNVOY_USER_K=V variables as K=V, --env-file files, -e:
    runvoy run --env-file deploy.env -e REGION=eu-west-1 -e AWS_PROFILE -- ./deploy.sh
  Values may span lines (-e KEY=\"$(cat key.pem)\"); -e K with K unset locally is an error.

Secrets: --secret NAME injects a stored secret (runvoy secrets create) as its key name; the
value never travels in the run request and is masked as *** in the logs:
    runvoy run --secret github-token 'git ls-remote https://x:$GITHUB_TOKEN@github.com/acme/app'

Locks: --lock NAME refuses to start while another unfinished execution holds NAME (naming it);
--wait-lock waits for it instead:
    runvoy run --lock terraform-prod --wait-lock 'terraform apply -auto-approve'

Exit status: the command's own code; 124 when the timeout fired; 130 after Ctrl-C; 125 for
runvoy's errors, including a mistyped option (nothing is started then).";

/// Options shared by `runvoy run` and `runvoy playbook run`.
#[derive(Debug, Args)]
pub struct RunOpts {
    /// Image to run in (server default when absent).
    #[arg(short, long)]
    pub image: Option<String>,
    /// Environment variable for the command: K=V, or K to copy the local value (an error when
    /// K is unset). Repeatable; wins over --env-file and RUNVOY_USER_K=V variables, which are
    /// forwarded as K=V. Values may span lines.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a dotenv file (KEY=VALUE lines, # comments, quoted and
    /// multi-line values). Repeatable; later files win.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Kill the command after this long: 90, 30s, 10m, 1h30m (0: no timeout).
    #[arg(long, value_name = "DURATION", value_parser = util::parse_timeout)]
    pub timeout: Option<u64>,
    /// Inject stored secret NAME into the command's environment (under its key name); its
    /// value is masked as *** in the logs. Repeatable, or comma-separated.
    #[arg(long = "secret", value_name = "NAME", value_delimiter = ',')]
    pub secrets: Vec<String>,
    /// Hold lock NAME while the execution is unfinished: a run asking for a lock another
    /// unfinished execution holds is refused (409 LOCK_HELD, naming the holder).
    #[arg(long, value_name = "NAME")]
    pub lock: Option<String>,
    /// Wait for the lock (--lock, or a playbook's) instead of failing, showing who holds it,
    /// then start.
    #[arg(long)]
    pub wait_lock: bool,
    /// Print the execution id and return at once instead of following the logs.
    #[arg(short, long)]
    pub detach: bool,
    /// `json`: with --detach, print the run answer; otherwise print the execution as JSON on
    /// stdout after the streamed output.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print only the remote output (no runvoy messages, no system lines).
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not send standard input; the command reads end-of-file.
    #[arg(long)]
    pub no_stdin: bool,
    /// Git repository the command starts in: cloned (shallow) before it runs. https://,
    /// http:// or git://; no credentials in the URL (for a private repository pass the token
    /// as -e GITHUB_TOKEN).
    #[arg(short = 'g', long, value_name = "URL")]
    pub git_repo: Option<String>,
    /// Branch, tag or full commit id of --git-repo (default: its default branch).
    #[arg(short = 'r', long, value_name = "REF")]
    pub git_ref: Option<String>,
    /// Directory inside the checkout to start the command in.
    #[arg(short = 'p', long, value_name = "DIR")]
    pub git_path: Option<String>,
}

/// `runvoy run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: RunOpts,
    /// The command: one argument is a shell line (`/bin/sh -c`), several are an exact argv.
    // No `allow_hyphen_values`: a word starting with `-` before the command is a runvoy option
    // (a typo is refused); once the command has started, every word belongs to it.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `runvoy logs` arguments.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Execution id (or a unique prefix, as `list` shows it).
    pub id: String,
    /// Follow until the execution finishes, then exit with its exit code.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the remote output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `runvoy list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// How many executions to show (1..1000).
    #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only these statuses, comma-separated (e.g. RUNNING,FAILED).
    #[arg(short, long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<Status>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Start after this cursor (printed on stderr when more executions exist).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Every page, not just the first.
    #[arg(long)]
    pub all: bool,
    /// Only executions started by this user (email). Developers and viewers only ever see
    /// their own.
    #[arg(short, long, value_name = "EMAIL")]
    pub user: Option<String>,
    /// Only executions started since: a duration back from now (30m, 1h30m, 2d) or an RFC 3339
    /// time (2026-01-02T03:04:05Z).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Full ids, absolute times, the user and whole commands (wider than 80 columns).
    #[arg(short, long)]
    pub wide: bool,
}

/// Output format of data commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status {s:?} (one of {})", all.join(", "))
    })
}

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a closed stdout (`runvoy list | head`) is a write
    // error that ends runvoy quietly, and a server closing a connection mid-write is an error
    // message, not a silent death by signal.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let quiet = match &cli.cmd {
        Cmd::Run(a) => a.opts.quiet,
        Cmd::Playbook(playbook::PlaybookCmd::Run(a)) => a.opts.quiet,
        Cmd::Logs(a) => a.quiet,
        _ => false,
    };
    let ui = ui::Ui::new(quiet);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui.error(&format!("cannot start the runtime: {e}"), "INTERNAL_ERROR");
            return ExitCode::from(EXIT_RUNVOY_ERROR as u8);
        }
    };
    let code = match rt.block_on(commands::dispatch(cli, ui)) {
        Ok(code) => code,
        // Whoever read our output has gone: nothing to tell them. 141 = 128 + SIGPIPE, what a
        // shell reports for tools that die of it, so `set -o pipefail` scripts see the same.
        Err(e) if is_broken_pipe(&e) => EXIT_BROKEN_PIPE,
        Err(e) => {
            let (msg, code) = describe(&e);
            ui.error(&msg, code);
            EXIT_RUNVOY_ERROR
        }
    };
    // Don't wait for a blocked stdin read (configure) or lingering connections.
    rt.shutdown_background();
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_RUNVOY_ERROR as u8))
}

/// Exit code after stdout was closed by its reader.
const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes to stdout and flushes; errors (a closed pipe) are returned, never a panic.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)?;
    o.flush()
}

/// True when the error comes from writing to a stdout whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// Prints clap's message; help and version exit 0, every real usage error 125.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_RUNVOY_ERROR as u8),
    }
}

/// One-line message and stable code for an error.
fn describe(e: &anyhow::Error) -> (String, &str) {
    let msg = format!("{e:#}");
    let code = if let Some(c) = e.downcast_ref::<ClientError>() {
        c.code()
    } else if e.downcast_ref::<ConfigError>().is_some() {
        "CONFIG_ERROR"
    } else if e.downcast_ref::<std::io::Error>().is_some() {
        "IO_ERROR"
    } else {
        "ERROR"
    };
    (msg.replace('\n', " "), code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_rest_as_the_command() {
        let cli = Cli::try_parse_from([
            "runvoy",
            "run",
            "-e",
            "A=1",
            "--timeout",
            "10m",
            "-q",
            "--",
            "terraform",
            "plan",
            "-out",
            "x",
        ])
        .unwrap();
        let Cmd::Run(a) = cli.cmd else { panic!() };
        assert_eq!(a.command, ["terraform", "plan", "-out", "x"]);
        assert_eq!(a.opts.timeout, Some(600));
        assert!(a.opts.quiet && !a.opts.detach);
        let cli = Cli::try_parse_from(["runvoy", "run", "ls", "-la"]).unwrap();
        let Cmd::Run(a) = cli.cmd else { panic!() };
        assert_eq!(a.command, ["ls", "-la"]);
        assert!(Cli::try_parse_from(["runvoy", "run"]).is_err());
    }

    #[test]
    fn words_after_the_command_belong_to_it() {
        let cli = Cli::try_parse_from(["runvoy", "run", "echo", "--detach", "hi", "-q"]).unwrap();
        let Cmd::Run(a) = cli.cmd else { panic!() };
        assert_eq!(a.command, ["echo", "--detach", "hi", "-q"]);
        assert!(!a.opts.detach && !a.opts.quiet);
        let cli = Cli::try_parse_from(["runvoy", "run", "-d", "--", "-x", "--", "y"]).unwrap();
        let Cmd::Run(a) = cli.cmd else { panic!() };
        assert_eq!(a.command, ["-x", "--", "y"]);
        assert!(a.opts.detach);
    }

    #[test]
    fn locks_and_env_files() {
        let cli = Cli::try_parse_from([
            "runvoy",
            "run",
            "--lock",
            "deploy",
            "--wait-lock",
            "--env-file",
            "a.env",
            "--env-file",
            "b.env",
            "make",
        ])
        .unwrap();
        let Cmd::Run(a) = cli.cmd else { panic!() };
        assert_eq!(a.opts.lock.as_deref(), Some("deploy"));
        assert!(a.opts.wait_lock);
        assert_eq!(a.opts.env_file.len(), 2);
        let cli = Cli::try_parse_from([
            "runvoy", "playbook", "run", "deploy", "--set", "V=2", "-e", "X=1", "--lock", "l",
        ])
        .unwrap();
        let Cmd::Playbook(playbook::PlaybookCmd::Run(a)) = cli.cmd else {
            panic!()
        };
        assert_eq!(
            (a.name.as_str(), a.set.as_slice()),
            ("deploy", &["V=2".to_string()][..])
        );
        assert_eq!(a.opts.env, ["X=1"]);
    }

    #[test]
    fn mistyped_options_before_the_command_are_refused() {
        for args in [
            &["runvoy", "run", "--timout", "10m", "--", "true"][..],
            &["runvoy", "run", "-x", "echo", "hi"],
        ] {
            let e = Cli::try_parse_from(args).expect_err("a typo must not parse");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{args:?}: {e}"
            );
            assert!(e.to_string().contains(args[2]), "{e}");
        }
    }

    #[test]
    fn list_statuses() {
        let cli = Cli::try_parse_from(["runvoy", "list", "--status", "running,FAILED"]).unwrap();
        let Cmd::List(a) = cli.cmd else { panic!() };
        assert_eq!(a.status, [Status::Running, Status::Failed]);
        assert!(Cli::try_parse_from(["runvoy", "list", "--status", "nope"]).is_err());
    }

    #[test]
    fn errors_carry_codes() {
        let e = anyhow::Error::new(ClientError::Api {
            status: 404,
            code: "NOT_FOUND".into(),
            message: "execution not found".into(),
            details: None,
            lock: None,
        })
        .context("cannot get execution x");
        assert_eq!(
            describe(&e),
            (
                "cannot get execution x: execution not found".to_string(),
                "NOT_FOUND"
            )
        );
        let e = anyhow::Error::new(ConfigError::NoPath);
        assert_eq!(describe(&e).1, "CONFIG_ERROR");
    }
}
