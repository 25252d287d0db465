//! The git checkout step: a shallow clone of the run's repository into
//! `WORKSPACE/<repo dir>`, with gitoxide (the sidecar images have no git binary).
//!
//! A checkout that fails (unreachable host, unknown ref, refused credentials, `git_path`
//! missing) does not fail the sidecar: the reason goes to `.runvoy/prepare-failed` and the
//! runner, which owns the record stream, reports it in the logs and ends the execution with
//! exit code 125 without starting the command. That way the reason reaches the user on every
//! compute.
//!
//! A token (the run's `GITHUB_TOKEN`, or the variable `--git-token-env` names) is handed to
//! gitoxide only when the server asks for credentials, as the https password; it is never in
//! the URL, and it is masked out of every message this step writes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runvoy_proto::git::{self as spec, Checkout, env, files};

use crate::{Failure, progress, write_atomically};

/// The checkout settings (compute sets them from the run).
#[derive(Debug, Clone, clap::Args)]
pub struct GitArgs {
    /// Repository to clone (https://, http:// or git://, no credentials in the URL).
    #[arg(long = "git-repo", env = env::REPO)]
    pub repo: Option<String>,
    /// Branch, tag or full commit id (default: the remote's default branch).
    #[arg(long = "git-ref", env = env::REF)]
    pub git_ref: Option<String>,
    /// Directory inside the checkout the command starts in.
    #[arg(long = "git-path", env = env::PATH)]
    pub path: Option<String>,
    /// Environment variable of the run holding a token for https.
    #[arg(long = "git-token-env", env = env::TOKEN_VAR, default_value = spec::DEFAULT_TOKEN_VAR)]
    pub token_var: String,
    /// Give up on a clone that takes longer than this (seconds).
    #[arg(
        long = "git-timeout",
        env = "RUNVOY_GIT_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pub timeout_secs: u64,
}

/// Why a clone that needs credentials got none.
const NO_TOKEN: &str = "the repository needs credentials";

/// Username sent with a token: what GitHub documents for tokens; other hosts ignore it.
const TOKEN_USER: &str = "x-access-token";

/// Clones the repository, if the run has one. `Err` only for unusable settings (they were
/// checked by the server, so this means a broken compute); a failed clone is reported through
/// [`files::FAILED`] and returns `Ok`.
pub fn checkout(
    args: &GitArgs,
    workspace: &Path,
    state: &Path,
    run_env: Option<&[(String, String)]>,
) -> Result<(), Failure> {
    let checkout = Checkout::from_request(
        args.repo.as_deref().filter(|r| !r.is_empty()),
        args.git_ref.as_deref().filter(|r| !r.is_empty()),
        args.path.as_deref().filter(|r| !r.is_empty()),
    )
    .map_err(Failure::Invalid)?;
    let Some(checkout) = checkout else {
        return Ok(());
    };
    // The run's environment first (the .env file's source), then the sidecar's own (where a
    // platform hands the token to the sidecar container directly).
    let token = run_env
        .and_then(|vars| vars.iter().find(|(k, _)| *k == args.token_var))
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(&args.token_var).ok())
        .filter(|t| !t.is_empty());
    let mask = Mask(token.clone());
    progress(&mask.apply(&format!("cloning: {}", checkout.describe())));
    let dest = workspace.join(checkout.dir_name());
    match clone(
        &checkout,
        &dest,
        token,
        Duration::from_secs(args.timeout_secs),
    )
    .and_then(|commit| check_path(&checkout, &dest).map(|()| commit))
    {
        Ok(commit) => {
            let note = format!(
                "### runvoy sidecar: checked out {} at commit {commit} into /workspace/{}",
                checkout.repo,
                checkout.command_dir()
            );
            progress(&mask.apply(&format!(
                "checked out commit {commit} into {}",
                dest.display()
            )));
            write_state(state, files::NOTES, &mask.apply(&note))
        }
        Err(why) => {
            let reason = mask.apply(&format!(
                "git clone of {} failed: {why}",
                describe_ref(&checkout)
            ));
            progress(&reason);
            // Nothing half-written stays behind for a command that will not run anyway.
            let _ = std::fs::remove_dir_all(&dest);
            write_state(state, files::FAILED, &reason)
        }
    }
}

fn describe_ref(c: &Checkout) -> String {
    match &c.git_ref {
        Some(r) => format!("{} (ref {r})", c.repo),
        None => c.repo.clone(),
    }
}

fn write_state(state: &Path, name: &str, text: &str) -> Result<(), Failure> {
    let dest = state.join(name);
    write_atomically(&dest, 0o644, |f| {
        std::io::Write::write_all(f, format!("{text}\n").as_bytes())
    })
    .map_err(|e| Failure::io("cannot write", &dest, e))
}

/// Replaces a secret with `***` in text that leaves the sidecar.
struct Mask(Option<String>);

impl Mask {
    fn apply(&self, s: &str) -> String {
        match &self.0 {
            Some(t) => s.replace(t.as_str(), "***"),
            None => s.to_owned(),
        }
    }
}

/// Shallow-clones `c` into `dest` and checks out its ref; returns the commit id.
fn clone(
    c: &Checkout,
    dest: &Path,
    token: Option<String>,
    timeout: Duration,
) -> Result<String, String> {
    let interrupt = Arc::new(AtomicBool::new(false));
    // gitoxide polls the flag while it receives and writes; a server that stops answering
    // mid-handshake is cut off by the process-wide deadline below.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    {
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            use std::sync::mpsc::RecvTimeoutError::Timeout;
            if finished.recv_timeout(timeout) != Err(Timeout) {
                return;
            }
            interrupt.store(true, Ordering::SeqCst);
            if finished.recv_timeout(Duration::from_secs(10)) == Err(Timeout) {
                crate::warn(&format!(
                    "the clone did not finish within {}s",
                    timeout.as_secs()
                ));
                std::process::exit(1);
            }
        });
    }
    let result = clone_inner(c, dest, token, &interrupt);
    let _ = done.send(());
    if interrupt.load(Ordering::SeqCst) {
        return Err(format!("it did not finish within {}s", timeout.as_secs()));
    }
    result
}

fn clone_inner(
    c: &Checkout,
    dest: &Path,
    token: Option<String>,
    interrupt: &AtomicBool,
) -> Result<String, String> {
    let url = gix::url::parse(gix::bstr::BStr::new(c.repo.as_bytes()))
        .map_err(|_| "the URL is invalid".to_owned())?;
    // Isolated: no system or user git configuration (credential helpers, url rewrites, proxies
    // of whoever runs the sidecar) takes part in the clone.
    let mut prepare = gix::clone::PrepareFetch::new(
        url,
        dest,
        gix::create::Kind::WithWorktree,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .map_err(|e| e.to_string())?
    .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(
        std::num::NonZeroU32::MIN,
    ));
    prepare = match c.git_ref.as_deref() {
        None => prepare,
        Some(r) if spec::is_full_commit_id(r) || r.starts_with("refs/") => {
            prepare.with_revision(Some(r)).map_err(|e| e.to_string())?
        }
        Some(r) => prepare.with_ref_name(Some(r)).map_err(|e| e.to_string())?,
    };
    // Always our own helper: without a token, a server asking for credentials gets none,
    // instead of gitoxide prompting on a terminal that is not there.
    prepare = prepare.configure_connection(move |conn| {
        let token = token.clone();
        conn.set_credentials(move |action| credentials(action, token.as_deref()));
        Ok(())
    });
    let (mut checkout, _) = prepare
        .fetch_then_checkout(gix::progress::Discard, interrupt)
        .map_err(|e| explain(&e, c))?;
    let (repo, _) = checkout
        .main_worktree(gix::progress::Discard, interrupt)
        .map_err(|e| format!("checking out the files failed: {}", chain(&e)))?;
    let commit = repo
        .head_id()
        .map_err(|_| "the repository is empty".to_owned())?;
    Ok(commit.to_string())
}

/// The credential helper: the token as the password, for a server that asks.
fn credentials(
    action: gix::credentials::helper::Action,
    token: Option<&str>,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    match action {
        gix::credentials::helper::Action::Get(_) if token.is_none() => {
            Err(gix::Error::from_error(std::io::Error::other(NO_TOKEN)))
        }
        gix::credentials::helper::Action::Get(ctx) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: TOKEN_USER.to_owned(),
                    password: token.unwrap_or_default().to_owned(),
                    oauth_refresh_token: None,
                },
                next: ctx.into(),
            }))
        }
        // Nothing is stored anywhere, so there is nothing to approve or erase.
        _ => Ok(None),
    }
}

/// Every cause of an error, outermost first.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A short reason for the common failures, then gitoxide's own chain.
fn explain(e: &gix::Error, c: &Checkout) -> String {
    let full = chain(e);
    let lower = full.to_ascii_lowercase();
    let hint = if lower.contains("not exported")
        || lower.contains("repository not found")
        || lower.contains("status 404")
    {
        "repository not found (or not readable without credentials)".to_owned()
    } else if lower.contains("didn't have any ref")
        || lower.contains("could not find")
        || lower.contains("not found")
        || lower.contains("no matching")
        || lower.contains("not our ref")
    {
        match &c.git_ref {
            Some(r) if r.len() < 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) => format!(
                "ref not found: {r} (an abbreviated commit id cannot be fetched; give all 40 \
                 characters)"
            ),
            Some(r) => format!("ref not found: {r}"),
            None => "repository not found".to_owned(),
        }
    } else if lower.contains("clear text") {
        "a token is only sent over https, never in clear text over http".to_owned()
    } else if lower.contains(NO_TOKEN) {
        "the server asks for credentials (private repository: put a token in the run's \
         environment as GITHUB_TOKEN)"
            .to_owned()
    } else if lower.contains("401") || lower.contains("403") || lower.contains("authenticat") {
        "the server refused the credentials (private repository: put a token in the run's \
         environment as GITHUB_TOKEN)"
            .to_owned()
    } else if lower.contains("connection refused")
        || lower.contains("dns")
        || lower.contains("resolve")
        || lower.contains("unreachable")
        || lower.contains("timed out")
        || lower.contains("connect")
    {
        "the repository is unreachable".to_owned()
    } else {
        String::new()
    };
    if hint.is_empty() {
        full
    } else {
        format!("{hint} ({full})")
    }
}

/// Checks the command's directory exists inside the checkout, without following a symlink
/// out of it.
fn check_path(c: &Checkout, dest: &Path) -> Result<(), String> {
    let Some(path) = &c.path else { return Ok(()) };
    let mut cur = dest.to_path_buf();
    for part in path.split('/') {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "git_path {path} goes through a symbolic link ({part}); give the real \
                     directory"
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "git_path {path} is not a directory in the checkout"
                ));
            }
            Err(_) => return Err(format!("git_path {path} does not exist in the checkout")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_hides_the_token() {
        let m = Mask(Some("s3cret".into()));
        assert_eq!(m.apply("a s3cret b s3cret"), "a *** b ***");
        assert_eq!(Mask(None).apply("x"), "x");
    }

    #[test]
    fn credentials_answer_with_the_token_as_password() {
        let action = gix::credentials::helper::Action::get_for_url("https://example.com/r.git");
        let out = credentials(action.clone(), Some("tok")).unwrap().unwrap();
        assert_eq!(out.identity.password, "tok");
        assert_eq!(out.identity.username, TOKEN_USER);
        assert!(credentials(action, None).is_err());
    }

    #[test]
    fn bad_settings_fail_the_sidecar_without_touching_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let args = GitArgs {
            repo: Some("https://u:hunter2@example.com/r.git".into()),
            git_ref: None,
            path: None,
            token_var: spec::DEFAULT_TOKEN_VAR.into(),
            timeout_secs: 5,
        };
        let Err(Failure::Invalid(msg)) = checkout(&args, dir.path(), dir.path(), None) else {
            panic!("expected a refusal");
        };
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn path_must_be_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/f"), "").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("a/l")).unwrap();
        let c = |p: &str| Checkout {
            repo: "git://h/r".into(),
            git_ref: None,
            path: Some(p.into()),
        };
        assert!(check_path(&c("a/b"), dir.path()).is_ok());
        assert!(
            check_path(&c("a/f"), dir.path())
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(
            check_path(&c("a/l"), dir.path())
                .unwrap_err()
                .contains("symbolic link")
        );
        assert!(
            check_path(&c("a/x"), dir.path())
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
