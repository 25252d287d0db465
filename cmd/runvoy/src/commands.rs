//! One function per subcommand; each returns the process exit code.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use clap::CommandFactory;
use runvoy_client::config::{Config, ConfigError, Overrides, Profile, selected_profile};
use runvoy_client::proto::{Execution, MAX_STDIN_BYTES, RunRequest, RunResponse, codes};
use runvoy_client::{Client, ClientError, KillOutcome, ListQuery};

use crate::ui::{LogSink, Ui};
use crate::util::{build_env, command_form, format_secs, format_time, read_env_file, truncate};
use crate::{Cli, Cmd, ListArgs, LogsArgs, Output, RunArgs, RunOpts, stream};

/// Runs the parsed command line.
pub async fn dispatch(cli: Cli, ui: Ui) -> anyhow::Result<i32> {
    let overrides = Overrides {
        api_url: cli.api_url,
        api_key: cli.api_key,
        profile: cli.profile,
    };
    match cli.cmd {
        Cmd::Version => version(&overrides, ui).await,
        Cmd::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "runvoy", &mut io::stdout());
            Ok(0)
        }
        Cmd::Configure { force } => configure(&overrides, force, ui),
        Cmd::Run(a) => run(&client(&overrides)?, a, ui).await,
        Cmd::Logs(mut a) => {
            let c = client(&overrides)?;
            a.id = resolve_id(&c, ui, &a.id).await?;
            logs(&c, a, ui).await
        }
        Cmd::Status { id, output } => {
            let c = client(&overrides)?;
            let id = resolve_id(&c, ui, &id).await?;
            status(&c, &id, output, ui).await
        }
        Cmd::Kill { id } => {
            let c = client(&overrides)?;
            let id = resolve_id(&c, ui, &id).await?;
            kill(&c, &id, ui).await
        }
        Cmd::List(a) => list(&client(&overrides)?, a, ui).await,
        Cmd::Health(h) => crate::health::run(&client(&overrides)?, h, ui).await,
        Cmd::Playbook(p) => crate::playbook::run(&overrides, p, ui).await,
        Cmd::Users(u) => crate::users::run(&overrides, u, ui).await,
        Cmd::Images(i) => crate::images::run(&client(&overrides)?, i, ui).await,
        Cmd::Secrets(c) => crate::secrets::run(&client(&overrides)?, c, ui).await,
        Cmd::Claim { token, force } => crate::users::claim(&overrides, &token, force, ui).await,
        Cmd::Trace { request_id, output } => {
            crate::users::trace(&client(&overrides)?, &request_id, output).await
        }
    }
}

pub(crate) fn client(o: &Overrides) -> anyhow::Result<Client> {
    let cfg = Config::load_with(o)?;
    Ok(Client::from_config(&cfg)?)
}

/// Retries transient failures a few times (about 4 s in all). `resend_safe_only` is for
/// non-idempotent requests, which are repeated only when the server surely did nothing.
async fn retry<T, F, Fut>(ui: Ui, resend_safe_only: bool, f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(300))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(4);
    f.retry(policy)
        .when(|e: &ClientError| {
            if resend_safe_only {
                e.is_safe_to_resend()
            } else {
                e.is_retryable()
            }
        })
        .notify(|e: &ClientError, d: Duration| {
            ui.info(&format!(
                "{e}; retrying in {}",
                format_secs(d.as_secs_f64())
            ));
        })
        .await
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// What a run is made of besides the shared options: the command, and what a playbook
/// contributes (each overridden by the matching option).
#[derive(Debug, Default)]
pub(crate) struct RunPlan {
    /// Shell line (empty for an argv run).
    pub command: String,
    /// Exact argv.
    pub argv: Option<Vec<String>>,
    /// Base environment (a playbook's `env`), below every other source.
    pub env: BTreeMap<String, String>,
    /// Image, unless `-i` names one.
    pub image: Option<String>,
    /// Timeout in seconds, unless `--timeout` is given (`--timeout 0` removes it).
    pub timeout: Option<u64>,
    /// Lock, unless `--lock` names one.
    pub lock: Option<String>,
    /// Secrets (a playbook's), merged with `--secret`.
    pub secrets: Vec<String>,
    /// Git repository, ref and path, each unless the matching `--git-*` option is given.
    pub git_repo: Option<String>,
    /// See [`RunPlan::git_repo`].
    pub git_ref: Option<String>,
    /// See [`RunPlan::git_repo`].
    pub git_path: Option<String>,
}

async fn run(client: &Client, a: RunArgs, ui: Ui) -> anyhow::Result<i32> {
    let (command, argv) = command_form(&a.command);
    let plan = RunPlan {
        command,
        argv,
        ..Default::default()
    };
    run_plan(client, plan, a.opts, ui).await
}

/// Builds the run request from a plan and the options, starts it (waiting for its lock with
/// `--wait-lock`) and follows it unless detached. Returns the local exit code.
pub(crate) async fn run_plan(
    client: &Client,
    plan: RunPlan,
    o: RunOpts,
    ui: Ui,
) -> anyhow::Result<i32> {
    let mut files = Vec::new();
    for f in &o.env_file {
        files.extend(read_env_file(f).map_err(anyhow::Error::msg)?);
    }
    let local = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut env = build_env(&plan.env, local, &files, &o.env, |k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)?;
    // The remote output is shown on this terminal: tell the command what it is.
    // Only when it still fits the server's limits: TERM is a courtesy, never a reason to fail.
    if let Ok(term) = std::env::var("TERM")
        && !term.is_empty()
        && !env.contains_key("TERM")
    {
        env.insert("TERM".into(), term);
        if runvoy_client::proto::check_env(&env).is_err() {
            env.remove("TERM");
        }
    }
    let lock = o.lock.or(plan.lock);
    if o.wait_lock && lock.is_none() {
        anyhow::bail!("--wait-lock needs a lock: pass --lock NAME (or run a playbook with lock:)");
    }
    if let Some(l) = &lock
        && !runvoy_client::proto::valid_lock_name(l)
    {
        anyhow::bail!(
            "lock name {l:?} is invalid: use 1 to {} letters, digits, '.', '_' or '-', starting \
             with a letter or digit",
            runvoy_client::proto::MAX_LOCK_NAME
        );
    }
    let timeout = match o.timeout {
        Some(0) => None,
        Some(t) => Some(t),
        None => plan.timeout,
    };
    let (git_repo, git_ref, git_path) = (
        o.git_repo.or(plan.git_repo),
        o.git_ref.or(plan.git_ref),
        o.git_path.or(plan.git_path),
    );
    // The server checks the same rules; checking here first saves reading standard input.
    runvoy_client::proto::git::Checkout::from_request(
        git_repo.as_deref(),
        git_ref.as_deref(),
        git_path.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let stdin = if o.no_stdin { None } else { read_stdin()? };
    let req = RunRequest {
        command: plan.command,
        argv: plan.argv,
        stdin_b64: stdin.map(|b| runvoy_client::proto::b64_encode(&b)),
        image: o.image.or(plan.image),
        env,
        timeout,
        resources: None,
        lock,
        secrets: {
            let mut names = plan.secrets;
            names.extend(o.secrets.iter().cloned());
            names.sort();
            names.dedup();
            names
        },
        git_repo,
        git_ref,
        git_path,
    };
    let resp = if o.wait_lock {
        match start_waiting_for_lock(client, &req, ui).await? {
            Some(r) => r,
            None => return Ok(crate::util::EXIT_INTERRUPTED),
        }
    } else {
        match retry(ui, true, || client.run(&req)).await {
            Ok(r) => r,
            Err(e) if e.code() == codes::LOCK_HELD => {
                return Err(anyhow::Error::new(e)
                    .context("cannot start the command (--wait-lock waits for the lock)"));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot start the command")),
        }
    };
    if o.detach {
        match o.output {
            Output::Text => outln!("{}", resp.execution_id),
            Output::Json => print_json(&resp)?,
        }
        return Ok(0);
    }
    let sigint = stream::interrupts()?;
    ui.info(&format!("execution {} started", resp.execution_id));
    let spinner = ui.spinner("waiting for the execution to start…");
    let follower = client
        .follow_logs(&resp.execution_id, 0)
        .with_websocket_url(resp.websocket_url);
    let code = stream::follow(client, follower, ui, sigint, spinner, true).await?;
    if o.output == Output::Json {
        // One summary after the streamed output, for scripts.
        let e = retry(ui, false, || client.get_execution(&resp.execution_id))
            .await
            .with_context(|| format!("cannot get execution {}", resp.execution_id))?;
        print_json(&e)?;
    }
    Ok(code)
}

/// Starts `req`, and while its lock is held says who holds it and asks again (every 0.5 s,
/// backing off to 3 s) until the run starts. There is no queue: when the lock is released,
/// whichever waiting run asks first gets it. `None` after Ctrl-C (nothing was started).
async fn start_waiting_for_lock(
    client: &Client,
    req: &RunRequest,
    ui: Ui,
) -> anyhow::Result<Option<RunResponse>> {
    let mut sigint = stream::interrupts()?;
    let started = std::time::Instant::now();
    let mut holder: Option<String> = None;
    let mut delay = Duration::from_millis(500);
    loop {
        match retry(ui, true, || client.run(req)).await {
            Ok(r) => {
                if holder.is_some() {
                    ui.info(&format!(
                        "lock {} taken after waiting {}",
                        req.lock.as_deref().unwrap_or_default(),
                        format_secs(started.elapsed().as_secs_f64())
                    ));
                }
                return Ok(Some(r));
            }
            Err(ClientError::Api {
                code,
                lock: Some(h),
                ..
            }) if code == codes::LOCK_HELD => {
                if holder.as_deref() != Some(h.execution_id.as_str()) {
                    ui.notice(&format!(
                        "lock {} is held by execution {} (started by {} at {}); waiting for it \
                         to finish (Ctrl-C gives up)",
                        h.name,
                        h.execution_id,
                        h.held_by,
                        format_time(&h.acquired_at)
                    ));
                    holder = Some(h.execution_id.clone());
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot start the command")),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sigint.recv() => {
                ui.notice("stopped waiting for the lock; nothing was started");
                return Ok(None);
            }
        }
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}

/// Reads standard input to send with the run when it is not a terminal; empty input sends
/// nothing. More than [`MAX_STDIN_BYTES`] is an error before anything starts.
fn read_stdin() -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::{IsTerminal, Read};
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    if buf.len() > MAX_STDIN_BYTES {
        anyhow::bail!(
            "standard input is larger than {} (1 MiB); nothing was started. Pass a file through \
             the command instead, or use --no-stdin",
            MAX_STDIN_BYTES
        );
    }
    Ok((!buf.is_empty()).then_some(buf))
}

async fn logs(client: &Client, a: LogsArgs, ui: Ui) -> anyhow::Result<i32> {
    if a.follow {
        let sigint = stream::interrupts()?;
        let follower = client.follow_logs(&a.id, 0);
        // Ctrl-C only stops following here: `logs` never kills (it may be someone else's run).
        return stream::follow(client, follower, ui, sigint, None, false).await;
    }
    let mut sink = LogSink::new(!a.quiet);
    let mut after = 0;
    loop {
        let page = retry(ui, false, || client.logs_page(&a.id, after, Some(1000)))
            .await
            .with_context(|| format!("cannot get the logs of {}", a.id))?;
        for ev in &page.events {
            sink.write(ev).context("cannot write output")?;
            after = after.max(ev.seq);
        }
        if !page.has_more || page.events.is_empty() {
            sink.flush().context("cannot write output")?;
            if !page.status.is_terminal() {
                ui.info(&format!(
                    "execution {} is {}; follow it with `runvoy logs -f {}`",
                    a.id, page.status, a.id
                ));
            }
            return Ok(0);
        }
    }
}

async fn status(client: &Client, id: &str, output: Output, ui: Ui) -> anyhow::Result<i32> {
    let e = retry(ui, false, || client.get_execution(id))
        .await
        .with_context(|| format!("cannot get execution {id}"))?;
    match output {
        Output::Json => print_json(&e)?,
        Output::Text => out!("{}", status_text(&e)),
    }
    Ok(0)
}

/// `Label: value` lines for people, in a fixed order, absent values omitted (`-o json` has
/// the wire names).
fn status_text(e: &Execution) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Execution", e.execution_id.clone()),
        ("Status", e.status.to_string()),
        ("Command", e.command.clone()),
        ("Image", e.image_id.clone()),
    ];
    if let Some(c) = e.exit_code {
        rows.push(("Exit code", c.to_string()));
    }
    rows.push(("Started", format_time(&e.started_at)));
    if let Some(c) = &e.completed_at {
        rows.push(("Finished", format_time(c)));
    }
    if let Some(d) = e.duration_seconds {
        rows.push(("Duration", format_secs(d)));
    }
    if let Some(t) = e.timeout_seconds {
        rows.push(("Timeout", format_secs(t as f64)));
    }
    if e.timed_out {
        rows.push(("Timed out", "yes".into()));
    }
    if let Some(r) = &e.failure_reason {
        rows.push(("Failure", r.clone()));
    }
    if let Some(u) = &e.stopped_by {
        rows.push(("Stopped by", u.clone()));
    }
    if let Some(l) = &e.lock {
        let held = if e.status.is_terminal() {
            "released"
        } else {
            "held"
        };
        rows.push(("Lock", format!("{l} ({held})")));
    }
    rows.push((
        "Logs",
        match (e.logs_complete, e.log_lines) {
            (true, Some(n)) => format!("complete, {n} lines"),
            (true, None) => "complete".into(),
            (false, _) => "incomplete".into(),
        },
    ));
    rows.push(("Started by", e.created_by.clone()));
    rows.push(("Platform", e.compute_platform.clone()));
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{:<12} {v}\n", format!("{k}:")));
    }
    s
}

async fn kill(client: &Client, id: &str, ui: Ui) -> anyhow::Result<i32> {
    let outcome = retry(ui, false, || client.kill(id))
        .await
        .with_context(|| format!("cannot kill execution {id}"))?;
    match outcome {
        KillOutcome::Started(k) => outln!("{}: {}", k.execution_id, k.message),
        KillOutcome::AlreadyTerminal(Some(k)) => outln!("{}: {}", k.execution_id, k.message),
        KillOutcome::AlreadyTerminal(None) => outln!("{id}: already finished"),
    }
    Ok(0)
}

async fn list(client: &Client, a: ListArgs, ui: Ui) -> anyhow::Result<i32> {
    let mut q = ListQuery {
        limit: Some(a.limit),
        status: a.status,
        cursor: a.cursor,
        user: a.user,
        since: a.since,
    };
    let mut rows = Vec::new();
    let next = loop {
        let page = retry(ui, false, || client.list_executions(&q))
            .await
            .context("cannot list executions")?;
        rows.extend(page.executions);
        match page.next_cursor {
            Some(c) if a.all => q.cursor = Some(c),
            other => break other,
        }
    };
    if let Some(c) = &next {
        ui.info(&format!("more results: --cursor {c} (or --all)"));
    }
    match a.output {
        // The same bare array as the API answers.
        Output::Json => print_json(&rows)?,
        Output::Text if rows.is_empty() => ui.info("no executions"),
        Output::Text => {
            // Whose run it is matters only to those who see everyone's.
            let everyone = client
                .me()
                .await
                .is_ok_and(|me| me.role == "admin" || me.role == "operator");
            let style = ListStyle {
                wide: a.wide,
                user: everyone || a.wide,
                color: io::stdout().is_terminal() && crate::ui::color_allowed(),
            };
            out!(
                "{}",
                list_table(&rows, time::OffsetDateTime::now_utc(), style)
            )
        }
    }
    Ok(0)
}

/// How `list` draws its table.
#[derive(Debug, Clone, Copy)]
struct ListStyle {
    /// Full ids, absolute times, whole commands.
    wide: bool,
    /// A USER column.
    user: bool,
    /// Coloured statuses.
    color: bool,
}

/// Width the default table is kept within.
const LIST_WIDTH: usize = 80;
/// Widest USER cell of the default table (`--wide` shows whole emails).
const LIST_USER_WIDTH: usize = 10;

/// The `list` table; `now` gives running executions their elapsed time and rows their age.
fn list_table(execs: &[Execution], now: time::OffsetDateTime, style: ListStyle) -> String {
    use time::format_description::well_known::Rfc3339;
    let mut header = vec!["ID", "STATUS", "EXIT", "STARTED", "DURATION"];
    if style.user {
        header.push("USER");
    }
    header.push("COMMAND");
    let mut rows: Vec<Vec<String>> = execs
        .iter()
        .map(|e| {
            let start = time::OffsetDateTime::parse(&e.started_at, &Rfc3339).ok();
            let duration = e.duration_seconds.or_else(|| {
                if e.status.is_terminal() {
                    return None;
                }
                Some((now - start?).as_seconds_f64().max(0.0))
            });
            let started = if style.wide {
                format_time(&e.started_at)
            } else {
                start
                    .map(|s| format_age((now - s).as_seconds_f64()))
                    .unwrap_or_else(|| "-".into())
            };
            let mut r = vec![
                if style.wide {
                    e.execution_id.clone()
                } else {
                    e.execution_id.chars().take(SHORT_ID).collect()
                },
                e.status.to_string(),
                e.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                started,
                duration.map(format_secs).unwrap_or_else(|| "-".into()),
            ];
            if style.user {
                r.push(if style.wide {
                    e.created_by.clone()
                } else {
                    truncate(&e.created_by, LIST_USER_WIDTH)
                });
            }
            r.push(e.command.clone());
            r
        })
        .collect();
    let last = header.len() - 1;
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(last) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    // The command takes what is left of 80 columns; --wide shows it whole.
    let used: usize = widths[..last].iter().map(|w| w + 2).sum();
    let room = LIST_WIDTH.saturating_sub(used).max(12);
    for r in &mut rows {
        r[last] = if style.wide {
            truncate(&r[last], usize::MAX)
        } else {
            truncate(&r[last], room)
        };
    }
    let mut s = String::new();
    let mut push_row = |cells: &[String], header_row: bool| {
        for (i, c) in cells.iter().enumerate() {
            let text = if i == 1 && style.color && !header_row {
                let st = status_style(c);
                format!("{st}{c}{st:#}")
            } else {
                c.clone()
            };
            s.push_str(&text);
            if i < last {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.push('\n');
    };
    push_row(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        true,
    );
    for r in &rows {
        push_row(r, false);
    }
    s
}

/// Characters of an id shown by `list` (ids are accepted by unique prefix everywhere).
const SHORT_ID: usize = 12;

fn status_style(status: &str) -> anstyle::Style {
    use anstyle::AnsiColor;
    match status {
        "SUCCEEDED" => AnsiColor::Green.on_default(),
        "FAILED" => AnsiColor::Red.on_default().bold(),
        "RUNNING" | "STARTING" => AnsiColor::Cyan.on_default(),
        _ => AnsiColor::Yellow.on_default(),
    }
}

/// `45s ago`, `12m ago`, `3h ago`, `5d ago`.
fn format_age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// The full id of an execution given by its id or a unique prefix of it (as `list` shows).
/// Looks through the executions the caller can see; an ambiguous prefix lists the candidates.
pub(crate) async fn resolve_id(client: &Client, ui: Ui, id: &str) -> anyhow::Result<String> {
    let id = id.trim();
    let hex = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit());
    if id.len() >= 32 || !hex {
        return Ok(id.to_string());
    }
    let prefix = id.to_ascii_lowercase();
    let mut q = ListQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let mut found = Vec::new();
    loop {
        let page = retry(ui, false, || client.list_executions(&q))
            .await
            .context("cannot look the id prefix up")?;
        found.extend(
            page.executions
                .into_iter()
                .filter(|e| e.execution_id.starts_with(&prefix))
                .map(|e| (e.execution_id, e.command)),
        );
        match page.next_cursor {
            Some(c) if found.len() < 2 => q.cursor = Some(c),
            _ => break,
        }
    }
    match found.len() {
        0 => anyhow::bail!("no execution id starts with {id:?}"),
        1 => Ok(found.remove(0).0),
        _ => {
            let list: Vec<String> = found
                .iter()
                .take(10)
                .map(|(i, c)| format!("{i} ({})", truncate(c, 30)))
                .collect();
            anyhow::bail!(
                "id prefix {id:?} is ambiguous; it matches {}",
                list.join(", ")
            )
        }
    }
}

async fn version(o: &Overrides, ui: Ui) -> anyhow::Result<i32> {
    outln!("runvoy {}", env!("CARGO_PKG_VERSION"));
    let server = async {
        let client = client(o)?;
        let h = client.health().await?;
        anyhow::Ok((client.api_url().to_string(), h))
    };
    match server.await {
        Ok((url, h)) => {
            let url = url.trim_end_matches('/').trim_end_matches("/api/v1");
            outln!("server {} (backend {}) at {url}", h.version, h.backend);
        }
        Err(e) => {
            let e = e.context("cannot get the server version");
            let (msg, code) = crate::describe(&e);
            ui.error(&msg, code);
        }
    }
    Ok(0)
}

/// Refuses to replace `existing` (a key in the config file at `path`) with a different key
/// unless `force`, or a yes on a terminal: a key cannot be recovered once overwritten.
pub(crate) fn confirm_key_overwrite(
    path: &std::path::Path,
    existing: &str,
    new: Option<&str>,
    force: bool,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if force || existing.is_empty() || new == Some(existing) {
        return Ok(());
    }
    if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
        anyhow::bail!(
            "{} already holds an API key; pass --force to replace it",
            path.display()
        );
    }
    let mut e = io::stderr().lock();
    write!(
        e,
        "{} already holds an API key ({}). Replace it? [y/N] ",
        path.display(),
        mask(existing)
    )?;
    e.flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("kept the existing API key in {}", path.display())
    }
}

fn configure(o: &Overrides, force: bool, ui: Ui) -> anyhow::Result<i32> {
    let profile = selected_profile(o)?;
    let path = Config::default_path().ok_or(ConfigError::NoPath)?;
    // A broken file is replaced rather than blocking the command meant to fix it.
    let mut file = Config::read_optional(&path)
        .ok()
        .flatten()
        .unwrap_or_default();
    let existing = file.profile(profile.as_deref()).unwrap_or_default();
    let mut stdin = io::stdin().lock();
    let url = match &o.api_url {
        Some(u) => u.trim().to_string(),
        None => prompt(
            &mut stdin,
            "API URL",
            &existing.api_endpoint,
            &existing.api_endpoint,
        )?,
    };
    Client::new(&url, "validation")?;
    let key = match &o.api_key {
        Some(k) => k.trim().to_string(),
        None => prompt(
            &mut stdin,
            "API key",
            &mask(&existing.api_key),
            &existing.api_key,
        )?,
    };
    if key.is_empty() {
        anyhow::bail!("an API key is required");
    }
    confirm_key_overwrite(&path, &existing.api_key, Some(&key), force)?;
    file.set_profile(
        profile.as_deref(),
        Profile {
            api_endpoint: url,
            api_key: key,
            web_url: existing.web_url,
        },
    );
    file.write(&path)?;
    match &profile {
        Some(p) => ui.success(&format!(
            "profile {p} written to {} (use it with --profile {p} or RUNVOY_PROFILE={p})",
            path.display()
        )),
        None => ui.success(&format!("configuration written to {}", path.display())),
    }
    Ok(0)
}

/// Asks on stderr and reads a line; an empty answer keeps `current`.
fn prompt(
    input: &mut impl BufRead,
    label: &str,
    shown: &str,
    current: &str,
) -> anyhow::Result<String> {
    let mut e = io::stderr().lock();
    if shown.is_empty() {
        write!(e, "{label}: ")?;
    } else {
        write!(e, "{label} [{shown}]: ")?;
    }
    e.flush()?;
    let mut line = String::new();
    let n = input
        .read_line(&mut line)
        .context("cannot read the answer")?;
    if n == 0 {
        writeln!(e)?;
    }
    let answer = line.trim();
    if answer.is_empty() {
        if current.is_empty() {
            anyhow::bail!("{label} is required");
        }
        return Ok(current.to_string());
    }
    Ok(answer.to_string())
}

/// Shows only the end of a secret.
fn mask(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use runvoy_client::proto::Status;

    fn exec(id: &str, status: Status, code: Option<i32>, dur: Option<f64>, cmd: &str) -> Execution {
        Execution {
            execution_id: id.into(),
            created_by: "u@x".into(),
            owned_by: vec!["u@x".into()],
            command: cmd.into(),
            argv: None,
            image_id: "alpine".into(),
            status,
            exit_code: code,
            started_at: "2026-01-02T03:04:05Z".into(),
            completed_at: None,
            duration_seconds: dur,
            timeout_seconds: None,
            timed_out: false,
            failure_reason: None,
            logs_complete: false,
            log_lines: None,
            dropped_log_lines: 0,
            dropped_log_bytes: 0,
            created_by_request_id: "r".into(),
            modified_by_request_id: "r".into(),
            compute_platform: "local".into(),
            stopped_by: None,
            lock: None,
        }
    }

    #[test]
    fn table_layout() {
        let now = time::macros::datetime!(2026-01-02 03:05:05 UTC);
        let long = "x".repeat(100);
        let execs = [
            exec("aaaabbbbccccdddd", Status::Running, None, None, "sleep 100"),
            exec("bb", Status::Succeeded, Some(0), Some(1.25), &long),
        ];
        let narrow = ListStyle {
            wide: false,
            user: false,
            color: false,
        };
        let t = list_table(&execs, now, narrow);
        assert_eq!(
            t.lines().take(2).collect::<Vec<_>>(),
            [
                "ID            STATUS     EXIT  STARTED  DURATION  COMMAND",
                "aaaabbbbcccc  RUNNING    -     1m ago   1m00s     sleep 100",
            ]
        );
        for l in t.lines() {
            assert!(l.chars().count() <= LIST_WIDTH, "{l:?}");
        }
        assert!(t.lines().nth(2).unwrap().ends_with('…'));
        let wide = list_table(
            &execs,
            now,
            ListStyle {
                wide: true,
                user: true,
                color: false,
            },
        );
        assert!(wide.contains("aaaabbbbccccdddd  RUNNING"), "{wide}");
        assert!(wide.contains("2026-01-02 03:04:05"), "{wide}");
        assert!(wide.contains(&format!("u@x   {long}")), "{wide}");
        let colored = list_table(
            &execs,
            now,
            ListStyle {
                color: true,
                ..narrow
            },
        );
        assert!(colored.contains("\x1b["), "{colored}");
        assert_eq!(format_age(3.0), "3s ago");
        assert_eq!(format_age(7200.0), "2h ago");
    }

    #[test]
    fn status_lines() {
        let t = status_text(&exec("aaaa", Status::Failed, Some(2), Some(3.0), "false"));
        assert!(
            t.starts_with("Execution:   aaaa\nStatus:      FAILED\nCommand:     false\n"),
            "{t}"
        );
        assert!(t.contains("Exit code:   2\n"), "{t}");
        assert!(t.contains("Started:     2026-01-02 03:04:05\n"), "{t}");
        assert!(t.contains("Logs:        incomplete\n"), "{t}");
    }

    #[test]
    fn prompts_keep_current_on_empty_answer() {
        let mut input = io::Cursor::new(b"\nhttp://new\n".to_vec());
        assert_eq!(prompt(&mut input, "URL", "old", "old").unwrap(), "old");
        assert_eq!(
            prompt(&mut input, "URL", "old", "old").unwrap(),
            "http://new"
        );
        let mut eof = io::Cursor::new(Vec::new());
        assert!(prompt(&mut eof, "URL", "", "").is_err());
        assert_eq!(mask("rv_secret1234"), "…1234");
    }
}
