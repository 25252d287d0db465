//! Pure helpers: argument parsing, environment forwarding, exit codes, formatting.

use std::collections::BTreeMap;
use std::time::Duration;

use runvoy_client::proto::Status;

/// Exit code for runvoy's own failures (unreachable server, API error, bad config), as `docker
/// run` does, so it cannot be mistaken for the remote command's usual codes.
pub const EXIT_RUNVOY_ERROR: i32 = 125;
/// Exit code when the execution's timeout fired (as `timeout(1)`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code after Ctrl-C, or for a stopped execution without an exit code (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Prefix of local variables forwarded to the execution, without it.
pub const USER_ENV_PREFIX: &str = "RUNVOY_USER_";

/// Parses `--timeout`: bare seconds (`90`) or a humantime duration (`30s`, `10m`, `1h30m`).
/// Returns whole seconds, rounding a fraction up so a timeout is never shortened.
pub fn parse_timeout(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let d: Duration = humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 90, 30s, 10m, 1h"))?;
    Ok(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// The remote `env`, each source overriding the ones before it: `base` (a playbook's `env`),
/// every local `RUNVOY_USER_X=v` as `X=v`, the `--env-file` variables in file order, then the
/// explicit `-e` flags. `-e K` alone copies the local value of `K`, as `docker run -e K` does,
/// and is an error when `K` is unset. The result is checked against the server's limits
/// (count, names, size), so a bad environment is refused before anything is sent.
pub fn build_env<I>(
    base: &BTreeMap<String, String>,
    local: I,
    files: &[(String, String)],
    explicit: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut env = base.clone();
    for (k, v) in local {
        if let Some(name) = k.strip_prefix(USER_ENV_PREFIX).filter(|n| !n.is_empty()) {
            env.insert(name.to_string(), v);
        }
    }
    for (k, v) in files {
        env.insert(k.clone(), v.clone());
    }
    for item in explicit {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                if !runvoy_client::proto::envfile::is_env_name(item.as_bytes()) {
                    return Err(format!(
                        "-e {item:?}: invalid variable name; use -e NAME=VALUE or -e NAME"
                    ));
                }
                let v = lookup(item).ok_or_else(|| {
                    format!(
                        "-e {item}: {item} is not set in your environment (or is not valid \
                         UTF-8); set it, or pass -e {item}=VALUE"
                    )
                })?;
                (item.clone(), v)
            }
        };
        if k.is_empty() {
            return Err(format!("-e {item:?}: empty variable name"));
        }
        if !runvoy_client::proto::envfile::is_env_name(k.as_bytes()) {
            return Err(format!(
                "-e {k}=…: invalid variable name; use letters, digits and _, not starting with a \
                 digit"
            ));
        }
        env.insert(k, v);
    }
    runvoy_client::proto::check_env(&env).map_err(|e| format!("{e}; nothing was started"))?;
    Ok(env)
}

/// Reads a dotenv file for `--env-file`: `KEY=VALUE` lines, `#` comments, `export` prefixes,
/// single quotes (literal), double quotes (escapes and `${VAR}` expansion) and multi-line
/// quoted values, as the `dotenvy` crate parses them. Errors name the file, line and column,
/// never a value.
pub fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--env-file {}: {e}", path.display()))?;
    let mut vars = Vec::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok(kv) => vars.push(kv),
            Err(dotenvy::Error::LineParse(line, index)) => {
                // dotenvy gives the offending logical line (it may hold a secret): only its
                // position in the file is shown.
                let start = text.find(line.as_str()).unwrap_or(0);
                // At the end of the file: a quote opened on that line was never closed.
                let (at, what) = if index >= line.len() {
                    (start, "a quote opened here is never closed")
                } else {
                    (start + index, "cannot parse this (expected KEY=VALUE)")
                };
                let before = &text[..at.min(text.len())];
                let row = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                return Err(format!("--env-file {}:{row}:{col}: {what}", path.display()));
            }
            Err(e) => return Err(format!("--env-file {}: {e}", path.display())),
        }
    }
    Ok(vars)
}

/// The `command` and `argv` of a run request: one word is a shell line (`run 'ls | wc -l'`),
/// several are an exact argv (`run -- grep -c 'a b' f`), never re-split by a shell.
pub fn command_form(words: &[String]) -> (String, Option<Vec<String>>) {
    match words {
        [line] => (line.clone(), None),
        words => (String::new(), Some(words.to_vec())),
    }
}

/// The local exit code for a finished execution: the remote code, 124 on timeout, 130 for a
/// stop without a code, 125 when there is nothing meaningful to return.
pub fn exit_code_for(status: Status, exit_code: Option<i32>, timed_out: bool) -> i32 {
    if timed_out {
        return EXIT_TIMED_OUT;
    }
    // Codes outside 0..=255 cannot be an exit status; wrapping them could turn a failure into 0.
    let code = exit_code.filter(|c| (0..=255).contains(c));
    match status {
        Status::Succeeded => code.unwrap_or(0),
        Status::Failed => code.unwrap_or(EXIT_RUNVOY_ERROR),
        Status::Stopped => code.unwrap_or(EXIT_INTERRUPTED),
        Status::Starting | Status::Running | Status::Terminating => EXIT_RUNVOY_ERROR,
    }
}

/// `2026-01-02 15:04:05` (UTC) from RFC 3339; the input unchanged when it does not parse.
pub fn format_time(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&fmt).ok())
        .unwrap_or_else(|| rfc3339.to_string())
}

/// Short human duration: `0.4s`, `12.3s`, `5m03s`, `2h05m`.
pub fn format_secs(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// At most `max` characters, with `…` when cut; newlines shown as spaces so a table row stays
/// one line.
pub fn truncate(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("30s"), Ok(30));
        assert_eq!(parse_timeout("10m"), Ok(600));
        assert_eq!(parse_timeout("1h"), Ok(3600));
        assert_eq!(parse_timeout("1h30m"), Ok(5400));
        assert_eq!(parse_timeout("45"), Ok(45));
        assert_eq!(parse_timeout(" 0 "), Ok(0));
        assert_eq!(parse_timeout("1500ms"), Ok(2));
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("ten").is_err());
        assert!(parse_timeout("-5").is_err());
    }

    #[test]
    fn env_forwarding() {
        let local = vec![
            ("RUNVOY_USER_A".to_string(), "1".to_string()),
            ("RUNVOY_USER_B".to_string(), "2".to_string()),
            ("RUNVOY_USER_".to_string(), "x".to_string()),
            ("RUNVOY_API_KEY".to_string(), "secret".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let explicit = vec!["B=3".to_string(), "C=a=b".to_string(), "HOME".to_string()];
        let lookup = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        let base: BTreeMap<String, String> = [("A", "0"), ("P", "playbook"), ("F", "0")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let files = vec![
            ("F".to_string(), "file".to_string()),
            ("C".into(), "x".into()),
        ];
        let env = build_env(&base, local, &files, &explicit, lookup).unwrap();
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("A", "1"),
                ("B", "3"),
                ("C", "a=b"),
                ("F", "file"),
                ("HOME", "/home/u"),
                ("P", "playbook")
            ]
        );
        let none = BTreeMap::new();
        let err = |explicit: &[&str]| {
            let explicit: Vec<String> = explicit.iter().map(|s| s.to_string()).collect();
            build_env(&none, vec![], &[], &explicit, |_| None).unwrap_err()
        };
        assert!(
            err(&["MISSING"]).contains("MISSING is not set"),
            "{}",
            err(&["MISSING"])
        );
        assert!(err(&["=v"]).contains("empty variable name"));
        assert!(err(&["1X=v"]).contains("invalid variable name"));
        assert!(err(&["A-B"]).contains("invalid variable name"));
        let many: Vec<String> = (0..=256).map(|i| format!("V{i}=")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(err(&many).contains("at most 256"), "{}", err(&many));
        let big = format!("BIG={}", "x".repeat(70_000));
        assert!(err(&[&big]).contains("64 KiB"));
        // Multi-line values are fine.
        let key = "K=-----BEGIN-----\nabc\n-----END-----".to_string();
        assert!(build_env(&none, vec![], &[], &[key], |_| None).is_ok());
    }

    #[test]
    fn env_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vars.env");
        std::fs::write(
            &p,
            "# comment\nA=1\nexport B='single $NOT'\nC=\"line1\nline2\"\n\nD=\"x\" # trailing\n\
             KEY=\"-----BEGIN KEY-----\nabc\n-----END KEY-----\"\n",
        )
        .unwrap();
        let v = read_env_file(&p).unwrap();
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("single $NOT"));
        assert_eq!(get("C"), Some("line1\nline2"));
        assert_eq!(get("D"), Some("x"));
        assert_eq!(
            get("KEY"),
            Some("-----BEGIN KEY-----\nabc\n-----END KEY-----")
        );
        std::fs::write(&p, "A=1\nB=\"s3cret never closed\n").unwrap();
        let e = read_env_file(&p).unwrap_err();
        assert!(
            e.ends_with("vars.env:2:1: a quote opened here is never closed"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::write(&p, "A=1\n\nB C=1\n").unwrap();
        let e = read_env_file(&p).unwrap_err();
        assert!(e.contains("vars.env:3:3: cannot parse"), "{e}");
        let e = read_env_file(&dir.path().join("missing.env")).unwrap_err();
        assert!(e.contains("missing.env"), "{e}");
    }

    #[test]
    fn command_forms() {
        assert_eq!(
            command_form(&["echo a | wc -l".into()]),
            ("echo a | wc -l".to_string(), None)
        );
        assert_eq!(
            command_form(&["sh".into(), "-c".into(), "exit 42".into()]),
            (
                String::new(),
                Some(vec!["sh".into(), "-c".into(), "exit 42".into()])
            )
        );
    }

    #[test]
    fn exit_codes() {
        use Status::*;
        assert_eq!(exit_code_for(Succeeded, Some(0), false), 0);
        assert_eq!(exit_code_for(Succeeded, None, false), 0);
        assert_eq!(exit_code_for(Failed, Some(3), false), 3);
        assert_eq!(exit_code_for(Failed, Some(137), true), 124);
        assert_eq!(exit_code_for(Failed, None, true), 124);
        assert_eq!(exit_code_for(Failed, None, false), 125);
        assert_eq!(exit_code_for(Failed, Some(300), false), 125);
        assert_eq!(exit_code_for(Failed, Some(-1), false), 125);
        assert_eq!(exit_code_for(Stopped, Some(143), false), 143);
        assert_eq!(exit_code_for(Stopped, None, false), 130);
        assert_eq!(exit_code_for(Running, None, false), 125);
    }

    #[test]
    fn formatting() {
        assert_eq!(
            format_time("2026-01-02T15:04:05.123+01:00"),
            "2026-01-02 14:04:05"
        );
        assert_eq!(format_time("garbage"), "garbage");
        assert_eq!(format_secs(0.42), "0.4s");
        assert_eq!(format_secs(303.0), "5m03s");
        assert_eq!(format_secs(7500.0), "2h05m");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("a\nb", 4), "a b");
    }
}
