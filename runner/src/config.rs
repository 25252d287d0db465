//! Runner configuration, read from `RUNVOY_*` environment variables and argv.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use runvoy_proto::record::env;

use crate::sink::Budget;

/// Seconds between SIGTERM and SIGKILL when `RUNVOY_KILL_GRACE_SECONDS` is unset.
const DEFAULT_KILL_GRACE_SECONDS: u64 = 10;

/// Everything the runner needs to run one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Execution id stamped on every record.
    pub exec: String,
    /// What to run.
    pub command: CommandLine,
    /// File to feed to the command's standard input (end-of-file when absent).
    pub stdin_file: Option<PathBuf>,
    /// Stop the command after this long; `None` means no limit.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping the command.
    pub kill_grace: Duration,
    /// Banner lines emitted as `system` records before the command starts.
    pub banner: Vec<Vec<u8>>,
    /// Working directory of the command.
    pub workdir: Option<PathBuf>,
    /// The command's directory relative to `workdir` (a git checkout and its path): relative,
    /// without `..`.
    pub checkout_dir: Option<PathBuf>,
    /// `.env` file whose variables are exported to the command (removed once read).
    pub env_file: Option<PathBuf>,
    /// Sandbox spec: start the command through its launcher (local compute only).
    pub sandbox: Option<PathBuf>,
    /// Most command output written; the rest is dropped and counted.
    pub budget: Budget,
    /// Names of the `.env` variables holding secrets, whose values are masked in the output.
    pub secret_keys: Vec<String>,
}

/// The command, as a shell line or as an exact argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Run with `/bin/sh -c LINE`.
    Shell(OsString),
    /// Run exactly these words, without a shell.
    Argv(Vec<OsString>),
}

impl CommandLine {
    /// The program and arguments to execute: `["/bin/sh", "-c", line]` for a shell line, the
    /// words themselves for an argv.
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            CommandLine::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            CommandLine::Argv(words) => words.clone(),
        }
    }
}

impl Config {
    /// Builds the configuration from argv (without the program name) and an environment lookup.
    ///
    /// A command given after `--` wins over `RUNVOY_ARGV` and `RUNVOY_COMMAND`: one word is a
    /// shell line, several are an exact argv (as `runvoy run` treats them). `RUNVOY_ARGV` (a
    /// JSON array of strings) wins over `RUNVOY_COMMAND`.
    pub fn parse<A, E>(args: A, getenv: E) -> Result<Config, String>
    where
        A: IntoIterator<Item = OsString>,
        E: Fn(&str) -> Option<OsString>,
    {
        // Empty values are treated as unset so an adapter can blank a variable out.
        let get = |name: &str| getenv(name).filter(|v| !v.is_empty());

        let mut args = args.into_iter();
        let argv_command = match args.next() {
            None => None,
            Some(first) if first == "--" => {
                let mut words: Vec<OsString> = args.collect();
                match words.len() {
                    0 => None,
                    1 => words.pop().map(CommandLine::Shell),
                    _ => Some(CommandLine::Argv(words)),
                }
            }
            Some(other) => {
                return Err(format!(
                    "unexpected argument {:?}; usage: runvoy-runner [-- COMMAND...]",
                    other
                ));
            }
        };

        let exec = get(env::EXECUTION_ID)
            .ok_or_else(|| format!("{} is required", env::EXECUTION_ID))?
            .into_string()
            .map_err(|_| format!("{} is not valid UTF-8", env::EXECUTION_ID))?;
        let env_argv = match get(env::ARGV) {
            None => None,
            Some(json) => Some(parse_argv_json(json.as_bytes())?),
        };
        let command = argv_command
            .or(env_argv)
            .or_else(|| get(env::COMMAND).map(CommandLine::Shell))
            .ok_or_else(|| {
                format!(
                    "{} or {} (or a command after `--`) is required",
                    env::COMMAND,
                    env::ARGV
                )
            })?;
        let timeout = match parse_seconds(env::TIMEOUT, get(env::TIMEOUT))? {
            None | Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
        };
        let kill_grace = Duration::from_secs(
            parse_seconds(env::KILL_GRACE, get(env::KILL_GRACE))?
                .unwrap_or(DEFAULT_KILL_GRACE_SECONDS),
        );
        let budget = Budget {
            max_bytes: parse_count(env::MAX_OUTPUT_BYTES, get(env::MAX_OUTPUT_BYTES))?.unwrap_or(0),
            max_lines: parse_count(env::MAX_OUTPUT_LINES, get(env::MAX_OUTPUT_LINES))?.unwrap_or(0),
        };
        let banner = get(env::BANNER)
            .map(|b| split_banner(b.as_bytes()))
            .unwrap_or_default();
        let checkout_dir = get(runvoy_proto::git::env::CHECKOUT_DIR)
            .map(|d| {
                let p = PathBuf::from(d);
                let plain = p
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if plain {
                    Ok(p)
                } else {
                    Err(format!(
                        "{} must be a relative path without .. or .",
                        runvoy_proto::git::env::CHECKOUT_DIR
                    ))
                }
            })
            .transpose()?;

        Ok(Config {
            exec,
            command,
            timeout,
            kill_grace,
            banner,
            stdin_file: get(env::STDIN_FILE).map(PathBuf::from),
            workdir: get(env::WORKDIR).map(PathBuf::from),
            checkout_dir,
            env_file: get(env::ENV_FILE).map(PathBuf::from),
            sandbox: get(runvoy_proto::sandbox::SANDBOX_ENV).map(PathBuf::from),
            budget,
            secret_keys: get(env::SECRET_KEYS)
                .map(|k| {
                    k.to_string_lossy()
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Parses `RUNVOY_ARGV`: a non-empty JSON array of strings without NUL bytes.
fn parse_argv_json(json: &[u8]) -> Result<CommandLine, String> {
    let words: Vec<String> = serde_json::from_slice(json)
        .map_err(|e| format!("{} must be a JSON array of strings: {e}", env::ARGV))?;
    if words.first().is_none_or(|p| p.is_empty()) {
        return Err(format!("{} must start with a program name", env::ARGV));
    }
    if words.iter().any(|w| w.contains('\0')) {
        return Err(format!("{} words must not contain NUL bytes", env::ARGV));
    }
    Ok(CommandLine::Argv(
        words.into_iter().map(OsString::from).collect(),
    ))
}

fn parse_seconds(name: &str, value: Option<OsString>) -> Result<Option<u64>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| format!("{name} must be a whole number of seconds, got {value:?}"))
}

fn parse_count(name: &str, value: Option<OsString>) -> Result<Option<u64>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| format!("{name} must be a whole number, got {value:?}"))
}

/// Splits the banner into lines; a trailing newline does not add an empty line.
fn split_banner(b: &[u8]) -> Vec<Vec<u8>> {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
}

/// Parses the `.env` file the sidecar wrote (`runvoy_proto::envfile`: `KEY=VALUE` lines,
/// values literal unless double-quoted with escapes, which is how multi-line values travel).
pub fn parse_env_file(data: &[u8]) -> Result<Vec<(OsString, OsString)>, String> {
    Ok(runvoy_proto::envfile::parse(data)?
        .into_iter()
        .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::parse(args.iter().map(OsString::from), |k| vars.get(k).cloned())
    }

    #[test]
    fn reads_env_with_defaults() {
        let c = parse(&[], &[(env::EXECUTION_ID, "e1"), (env::COMMAND, "echo hi")]).unwrap();
        assert_eq!(c.exec, "e1");
        assert_eq!(c.command, CommandLine::Shell("echo hi".into()));
        assert_eq!(c.command.argv(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.stdin_file, None);
        assert_eq!(c.timeout, None);
        assert_eq!(c.kill_grace, Duration::from_secs(10));
        assert!(c.banner.is_empty());
        assert_eq!(c.workdir, None);
        assert_eq!(c.checkout_dir, None);
        assert_eq!(c.budget, Budget::default());
    }

    #[test]
    fn output_budget() {
        let base = [(env::EXECUTION_ID, "e"), (env::COMMAND, "true")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&[], &v)
        };
        let c = with(&[
            (env::MAX_OUTPUT_BYTES, "1048576"),
            (env::MAX_OUTPUT_LINES, "10"),
        ])
        .unwrap();
        assert_eq!(
            c.budget,
            Budget {
                max_bytes: 1 << 20,
                max_lines: 10
            }
        );
        assert!(with(&[(env::MAX_OUTPUT_LINES, "-1")]).is_err());
        assert!(with(&[(env::MAX_OUTPUT_BYTES, "1MiB")]).is_err());
    }

    #[test]
    fn argv_command_wins() {
        let c = parse(
            &["--", "echo", "a b"],
            &[(env::EXECUTION_ID, "e"), (env::COMMAND, "false")],
        )
        .unwrap();
        assert_eq!(
            c.command,
            CommandLine::Argv(vec!["echo".into(), "a b".into()])
        );
        let c = parse(&["--", "echo a b"], &[(env::EXECUTION_ID, "e")]).unwrap();
        assert_eq!(c.command, CommandLine::Shell("echo a b".into()));
    }

    #[test]
    fn argv_from_json() {
        let c = parse(
            &[],
            &[
                (env::EXECUTION_ID, "e"),
                (env::COMMAND, "ignored"),
                (env::ARGV, r#"["printf","%s|","","it's $HOME"]"#),
                (env::STDIN_FILE, ".runvoy/stdin"),
            ],
        )
        .unwrap();
        assert_eq!(c.command.argv(), ["printf", "%s|", "", "it's $HOME"]);
        assert_eq!(c.stdin_file, Some(PathBuf::from(".runvoy/stdin")));
        for bad in [r#"[]"#, r#"[""]"#, r#""ls""#, r#"["a\u0000b"]"#, "[1]"] {
            assert!(
                parse(&[], &[(env::EXECUTION_ID, "e"), (env::ARGV, bad)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_required_values_fail() {
        assert!(parse(&[], &[(env::COMMAND, "true")]).is_err());
        assert!(parse(&[], &[(env::EXECUTION_ID, "e")]).is_err());
        assert!(parse(&["--"], &[(env::EXECUTION_ID, "e")]).is_err());
        assert!(parse(&["x"], &[(env::EXECUTION_ID, "e"), (env::COMMAND, "true")]).is_err());
    }

    #[test]
    fn numbers_and_banner() {
        let c = parse(
            &[],
            &[
                (env::EXECUTION_ID, "e"),
                (env::COMMAND, "true"),
                (env::TIMEOUT, "0"),
                (env::KILL_GRACE, "3"),
                (env::BANNER, "one\n\nthree\n"),
            ],
        )
        .unwrap();
        assert_eq!(c.timeout, None);
        assert_eq!(c.kill_grace, Duration::from_secs(3));
        assert_eq!(c.banner, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        let c = parse(
            &[],
            &[
                (env::EXECUTION_ID, "e"),
                (env::COMMAND, "true"),
                (env::TIMEOUT, "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.timeout, Some(Duration::from_secs(5)));
        assert!(
            parse(
                &[],
                &[
                    (env::EXECUTION_ID, "e"),
                    (env::COMMAND, "true"),
                    (env::TIMEOUT, "soon"),
                ],
            )
            .is_err()
        );
    }

    #[test]
    fn env_file_values_are_literal() {
        let vars =
            parse_env_file(b"# comment\n\nA=1\nB=x=y\n  # indented\nC=$HOME 'q'\nD=\n").unwrap();
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        assert_eq!(
            vars,
            [("A", "1"), ("B", "x=y"), ("C", "$HOME 'q'"), ("D", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(parse_env_file(b"NOEQUALS\n").is_err());
        assert!(parse_env_file(b"1BAD=x\n").is_err());
    }

    #[test]
    fn checkout_dir_is_relative_and_plain() {
        let ok = parse(
            &[],
            &[
                ("RUNVOY_EXECUTION_ID", "e"),
                ("RUNVOY_COMMAND", "true"),
                ("RUNVOY_CHECKOUT_DIR", "repo/cmd/x"),
            ],
        )
        .unwrap();
        assert_eq!(ok.checkout_dir, Some(PathBuf::from("repo/cmd/x")));
        for bad in ["/etc", "repo/../..", "./repo"] {
            let r = parse(
                &[],
                &[
                    ("RUNVOY_EXECUTION_ID", "e"),
                    ("RUNVOY_COMMAND", "true"),
                    ("RUNVOY_CHECKOUT_DIR", bad),
                ],
            );
            assert!(r.is_err(), "{bad}");
        }
    }
}
