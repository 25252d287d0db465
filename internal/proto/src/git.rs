//! A run's git checkout: the rules for `git_repo`, `git_ref` and `git_path` (the server, the
//! CLI and the sidecar all check them the same way), where the checkout lands in the workspace,
//! and the variables that hand it from compute to the sidecar and the runner.
//!
//! Messages never quote the repository URL: one that breaks the rules may hold a secret.

/// Longest accepted repository URL, in bytes.
pub const MAX_REPO_URL: usize = 2048;
/// Longest accepted ref, in bytes.
pub const MAX_REF: usize = 255;
/// Longest accepted path inside the checkout, in bytes.
pub const MAX_PATH: usize = 1024;

/// Sidecar variables (set by compute from the job spec).
pub mod env {
    /// Repository URL to clone (no credentials in it).
    pub const REPO: &str = "RUNVOY_GIT_REPO";
    /// Branch, tag or full commit id; the remote's default branch when unset.
    pub const REF: &str = "RUNVOY_GIT_REF";
    /// Directory inside the checkout the command starts in.
    pub const PATH: &str = "RUNVOY_GIT_PATH";
    /// Name of the run's environment variable holding a token for https (default
    /// [`DEFAULT_TOKEN_VAR`]).
    pub const TOKEN_VAR: &str = "RUNVOY_GIT_TOKEN_ENV";
    /// Runner variable: the command's directory relative to the workspace (the checkout and
    /// its path); the runner joins it onto its work directory.
    pub const CHECKOUT_DIR: &str = "RUNVOY_CHECKOUT_DIR";
}

/// runvoy's convention: a `GITHUB_TOKEN` in the run's environment authenticates the clone.
pub const DEFAULT_TOKEN_VAR: &str = "GITHUB_TOKEN";

/// Files the sidecar leaves in the workspace's `.runvoy/` for the runner.
pub mod files {
    /// Lines about the checkout the runner prints as `system` records after its banner.
    pub const NOTES: &str = "checkout-notes";
    /// Why preparing the workspace failed; the runner reports it and does not start the
    /// command.
    pub const FAILED: &str = "prepare-failed";
}

/// The URL schemes a repository may use. `ssh` is left out: the sidecar has no ssh client and
/// runvoy no way to hand it a key; `file` (and plain paths) would read the server's own disk.
pub const SCHEMES: [&str; 3] = ["https", "http", "git"];

/// A run's checkout, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkout {
    /// Repository URL.
    pub repo: String,
    /// Branch, tag or full commit id (`None`: the remote's default branch).
    pub git_ref: Option<String>,
    /// Directory inside the checkout, normalised (no `.`, no trailing `/`).
    pub path: Option<String>,
}

impl Checkout {
    /// Validates the request fields. `None` when the run has no repository (then ref and path
    /// must be unset too).
    pub fn from_request(
        repo: Option<&str>,
        git_ref: Option<&str>,
        path: Option<&str>,
    ) -> Result<Option<Checkout>, String> {
        let Some(repo) = repo else {
            if git_ref.is_some() || path.is_some() {
                return Err("git_ref and git_path need git_repo (the repository to clone)".into());
            }
            return Ok(None);
        };
        check_repo_url(repo)?;
        let git_ref = git_ref.map(check_ref).transpose()?;
        let path = match path.map(normalize_path).transpose()? {
            Some(p) if p.is_empty() => None,
            p => p,
        };
        Ok(Some(Checkout {
            repo: repo.to_owned(),
            git_ref: git_ref.map(str::to_owned),
            path,
        }))
    }

    /// Directory name of the checkout in the workspace.
    pub fn dir_name(&self) -> String {
        repo_dir_name(&self.repo)
    }

    /// The command's directory relative to the workspace: the checkout, then its path.
    pub fn command_dir(&self) -> String {
        match &self.path {
            Some(p) => format!("{}/{p}", self.dir_name()),
            None => self.dir_name(),
        }
    }

    /// The sidecar's variables for this checkout.
    pub fn sidecar_env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![(env::REPO, self.repo.clone())];
        if let Some(r) = &self.git_ref {
            v.push((env::REF, r.clone()));
        }
        if let Some(p) = &self.path {
            v.push((env::PATH, p.clone()));
        }
        v
    }

    /// One line describing the checkout, for the banner (the URL holds no credentials: they
    /// are refused).
    pub fn describe(&self) -> String {
        let mut s = format!("git checkout of {}", self.repo);
        if let Some(r) = &self.git_ref {
            s.push_str(&format!(" (ref: {r})"));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!(" (path: {p})"));
        }
        s
    }
}

/// Splits `scheme://authority/rest`; `None` when the URL has no `://`.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Some((scheme, authority, path))
}

/// Checks a repository URL: one of [`SCHEMES`], a host, no credentials, no query or fragment,
/// no whitespace or control characters.
pub fn check_repo_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("git_repo must not be empty".into());
    }
    if url.len() > MAX_REPO_URL {
        return Err(format!(
            "git_repo is {} bytes; at most {MAX_REPO_URL} are allowed",
            url.len()
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("git_repo must not contain whitespace or control characters".into());
    }
    let Some((scheme, authority, _)) = split_url(url) else {
        if url.contains('@') && url.contains(':') {
            return Err(
                "git_repo in scp form (user@host:path) is ssh, which is not supported: use an \
                 https:// URL (with GITHUB_TOKEN in the run's environment for a private \
                 repository)"
                    .into(),
            );
        }
        return Err(format!(
            "git_repo must be a URL with one of the schemes {}; a path on the server is not \
             allowed",
            SCHEMES.join(", ")
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(match scheme.as_str() {
            "ssh" | "git+ssh" | "ssh+git" => "git_repo: ssh URLs are not supported (the sidecar \
                 has no ssh client or key); use https:// with GITHUB_TOKEN in the run's \
                 environment for a private repository"
                .into(),
            "file" => "git_repo: file:// URLs are not allowed (they would read the server's \
                 own disk)"
                .into(),
            _ => format!(
                "git_repo: the URL scheme is not supported; use one of {}",
                SCHEMES.join(", ")
            ),
        });
    }
    if authority.contains('@') {
        return Err(
            "git_repo must not contain credentials (user:password@ in the URL): they would be \
             stored and shown with the execution; put a token in the run's environment as \
             GITHUB_TOKEN instead"
                .into(),
        );
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return Err("git_repo must name a host".into());
    }
    if url.contains('?') || url.contains('#') {
        return Err("git_repo must not have a query (?) or fragment (#)".into());
    }
    Ok(())
}

/// Checks a ref: a branch, tag (short or `refs/…`) or full commit id, under git's own rules
/// for ref names (no `..`, `~^:?*[\`, `@{`, control characters or spaces; not starting with `-`
/// or `/`, not ending with `/`, `.` or `.lock`).
pub fn check_ref(r: &str) -> Result<&str, String> {
    let bad = |why: &str| Err(format!("git_ref {r:?} is invalid: {why}"));
    if r.is_empty() {
        return bad("it is empty");
    }
    if r.len() > MAX_REF {
        return Err(format!("git_ref is longer than {MAX_REF} bytes"));
    }
    if r.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it contains a space, a control character or one of ~^:?*[\\");
    }
    if r.starts_with('-') || r.starts_with('/') || r.ends_with('/') || r.ends_with('.') {
        return bad("it starts with - or /, or ends with / or .");
    }
    if r.contains("..") || r.contains("@{") || r.contains("//") || r.ends_with(".lock") {
        return bad("it contains .., @{ or //, or ends with .lock");
    }
    if r.split('/').any(|c| c.starts_with('.')) {
        return bad("a component starts with .");
    }
    Ok(r)
}

/// Normalises `git_path`: relative, no `..`, `.` components and trailing `/` dropped (`""`
/// means the checkout's root).
pub fn normalize_path(p: &str) -> Result<String, String> {
    if p.len() > MAX_PATH {
        return Err(format!("git_path is longer than {MAX_PATH} bytes"));
    }
    if p.starts_with('/') {
        return Err(format!(
            "git_path {p:?} must be relative to the repository's root"
        ));
    }
    if p.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "git_path {p:?} must not contain control characters or \\"
        ));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "git_path {p:?} must not contain .. (it stays inside the checkout)"
                ));
            }
            ".git" => return Err(format!("git_path {p:?} must not enter .git")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// The checkout's directory name, as `git clone` picks it: the URL's last path segment
/// without `.git`; `repo` when that is empty or not a plain name. Characters outside
/// `A-Z a-z 0-9 . _ -` become `_`.
pub fn repo_dir_name(url: &str) -> String {
    let path = split_url(url).map_or(url, |(_, _, p)| p);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // `.runvoy` and `.env` are runvoy's own; a leading dot would also hide the checkout.
    if name.is_empty() || name.starts_with('.') {
        "repo".into()
    } else {
        name
    }
}

/// Whether `s` is a full commit id (SHA-1 or SHA-256, hex).
pub fn is_full_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_urls() {
        for ok in [
            "https://github.com/caddyserver/caddy.git",
            "https://github.com/caddyserver/caddy",
            "http://127.0.0.1:8080/repo.git",
            "git://127.0.0.1:9418/repo",
            "HTTPS://example.com/a/b/",
            "https://[::1]:8443/x.git",
        ] {
            assert_eq!(check_repo_url(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refused_urls_never_echo_the_url() {
        for bad in [
            "",
            "https://user:hunter2@github.com/x.git",
            "https://hunter2@github.com/x.git",
            "git@github.com:hunter2/x.git",
            "ssh://git@github.com/hunter2.git",
            "file:///var/lib/runvoy/hunter2",
            "/var/lib/runvoy/hunter2",
            "ftp://example.com/hunter2",
            "https:///hunter2",
            "https://example.com/x?token=hunter2",
            "https://example.com/hunter2 x",
            "https://:80/hunter2",
        ] {
            let err = check_repo_url(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
        let e = check_repo_url("https://user:hunter2@github.com/x.git").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
    }

    #[test]
    fn refs() {
        for ok in [
            "main",
            "feat/one",
            "v1.2.3",
            "refs/tags/v1",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a~1", "a^", "a:b", "x.lock", "a/", "/a", "a/.b", "@{u}",
            "a\\b", "a*",
        ] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_path("cmd/caddy/").unwrap(), "cmd/caddy");
        assert_eq!(normalize_path("./a//b/.").unwrap(), "a/b");
        assert_eq!(normalize_path("").unwrap(), "");
        for bad in ["/etc", "a/../..", "..", "a/.git/hooks", "a\\b", "a\nb"] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dir_names() {
        assert_eq!(
            repo_dir_name("https://github.com/caddyserver/caddy.git"),
            "caddy"
        );
        assert_eq!(
            repo_dir_name("https://github.com/caddyserver/caddy/"),
            "caddy"
        );
        assert_eq!(repo_dir_name("git://h/a b"), "a_b");
        assert_eq!(repo_dir_name("https://example.com"), "repo");
        assert_eq!(repo_dir_name("https://example.com/.runvoy"), "repo");
        assert_eq!(repo_dir_name("https://example.com/.git"), "repo");
        assert_eq!(repo_dir_name("https://example.com/.."), "repo");
    }

    #[test]
    fn checkout_from_request() {
        assert_eq!(Checkout::from_request(None, None, None), Ok(None));
        assert!(Checkout::from_request(None, Some("main"), None).is_err());
        assert!(Checkout::from_request(None, None, Some("a")).is_err());
        let c = Checkout::from_request(Some("git://h/r.git"), Some("v1"), Some("a/b/"))
            .unwrap()
            .unwrap();
        assert_eq!(c.command_dir(), "r/a/b");
        assert_eq!(c.path.as_deref(), Some("a/b"));
        let c = Checkout::from_request(Some("git://h/r.git"), None, Some("./"))
            .unwrap()
            .unwrap();
        assert_eq!(c.path, None);
        assert_eq!(c.command_dir(), "r");
        assert_eq!(
            c.sidecar_env(),
            vec![(env::REPO, "git://h/r.git".to_owned())]
        );
    }
}
