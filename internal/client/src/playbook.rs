//! Playbooks: named runs kept as YAML files, in the Go runvoy's format.
//!
//! `runvoy playbook run NAME` reads `NAME.yml` (or `NAME.yaml`) from `.runvoy/` in the working
//! directory, then from `~/.runvoy/playbooks/`; the first directory that has it wins. A
//! playbook is turned into one ordinary run: its `commands` joined with ` && ` as one shell
//! line. Unknown keys are errors (a misspelt `lock` must not be ignored), and every YAML error
//! names the file, line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// One playbook file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// What it does (shown by `playbook list`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Image to run in; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Git repository the sidecar clones before the commands, which start in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<String>,
    /// Branch, tag or full commit id of `git_repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Directory inside `git_repo` to run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_path: Option<String>,
    /// Secrets to inject (not supported by this server yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Environment variables: the playbook's parameters, which `--set KEY=VALUE` changes.
    /// Scalars are taken as written (`1.10` stays `1.10`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_map"
    )]
    pub env: BTreeMap<String, String>,
    /// Shell commands, run in order, stopping at the first that fails (joined with ` && `).
    #[serde(default)]
    pub commands: Vec<String>,
    /// Timeout: seconds, or a duration such as `30s`, `10m`, `1h30m`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar_opt"
    )]
    pub timeout: Option<String>,
    /// Lock the run holds while it is unfinished (see `runvoy run --lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
}

impl Playbook {
    /// The shell line the playbook runs: its commands joined with ` && `.
    pub fn command_line(&self) -> String {
        self.commands.join(" && ")
    }
}

/// A scalar (string, number, boolean) as a string; numbers keep the text they were written
/// with because YAML scalars reach a `String` target untouched.
struct ScalarString(String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ScalarString, E> {
                Ok(ScalarString(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_string(V)
    }
}

fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: BTreeMap<String, ScalarString> = BTreeMap::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

fn scalar_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<ScalarString>::deserialize(d)?.map(|s| s.0))
}

/// Why a playbook could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaybookError {
    /// No such playbook in any directory.
    #[error("no playbook {name:?} in {}", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or "))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The directories looked in.
        searched: Vec<PathBuf>,
    },
    /// The file cannot be read or is not a valid playbook (`FILE:LINE:COLUMN: …`).
    #[error("{0}")]
    Invalid(String),
}

/// A playbook file found in a directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name: the file name without `.yml`/`.yaml`.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The playbook, or why it does not load.
    pub playbook: Result<Playbook, PlaybookError>,
}

/// The directories playbooks are looked up in, first wins: `DIR/.runvoy` of the working
/// directory, then `HOME/.runvoy/playbooks`.
pub fn search_dirs(cwd: &Path, home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![cwd.join(".runvoy")];
    if let Some(h) = home {
        let d = h.join(".runvoy").join("playbooks");
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// Valid playbook names: what a file may be called (and what `playbook run` accepts).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses one playbook file's text. `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Playbook, PlaybookError> {
    let pb: Playbook = serde_saphyr::from_str(text)
        .map_err(|e| PlaybookError::Invalid(crate::yaml_error(path, &e, true)))?;
    let bad = |m: String| Err(PlaybookError::Invalid(format!("{}: {m}", path.display())));
    if pb.commands.is_empty() {
        return bad("commands is required: a list of shell commands to run".into());
    }
    if let Some(i) = pb.commands.iter().position(|c| c.trim().is_empty()) {
        return bad(format!("commands[{i}] is empty"));
    }
    if let Some(l) = &pb.lock
        && !runvoy_proto::valid_lock_name(l)
    {
        return bad(format!(
            "lock {l:?} is invalid: use 1 to {} letters, digits, '.', '_' or '-', starting with \
             a letter or digit",
            runvoy_proto::MAX_LOCK_NAME
        ));
    }
    if let Some(k) = pb
        .env
        .keys()
        .find(|k| !runvoy_proto::envfile::is_env_name(k.as_bytes()))
    {
        return bad(format!(
            "env name {k:?} is invalid: use letters, digits and _, not starting with a digit"
        ));
    }
    Ok(pb)
}

/// Reads and parses one playbook file.
pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PlaybookError::Invalid(format!("{}: {e}", path.display())))?;
    parse(path, &text)
}

fn name_of(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "yml" && ext != "yaml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    valid_name(stem).then(|| stem.to_owned())
}

/// Every playbook in `dirs`, sorted by name; a name in an earlier directory hides the same
/// name in later ones. Files in `skip` (the CLI's config file, when `.runvoy` is the config
/// directory) are left out. Directories that do not exist are skipped.
pub fn list(dirs: &[PathBuf], skip: &[PathBuf]) -> Vec<Entry> {
    let skip: Vec<PathBuf> = skip.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let mut found: BTreeMap<String, Entry> = BTreeMap::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| !p.canonicalize().is_ok_and(|c| skip.contains(&c)))
            .collect();
        here.sort();
        let mut seen_here: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in here {
            let Some(name) = name_of(&path) else {
                continue;
            };
            if let Some(other) = seen_here.get(&name) {
                let msg = format!(
                    "{} and {} both define playbook {name:?}; remove one",
                    other.display(),
                    path.display()
                );
                if let Some(e) = found.get_mut(&name)
                    && e.path.parent() == Some(dir.as_path())
                {
                    e.playbook = Err(PlaybookError::Invalid(msg));
                }
                continue;
            }
            seen_here.insert(name.clone(), path.clone());
            if found.contains_key(&name) {
                continue;
            }
            let playbook = load(&path);
            found.insert(
                name.clone(),
                Entry {
                    name,
                    path,
                    playbook,
                },
            );
        }
    }
    found.into_values().collect()
}

/// Finds playbook `name` in `dirs` (see [`list`]).
pub fn find(dirs: &[PathBuf], skip: &[PathBuf], name: &str) -> Result<Entry, PlaybookError> {
    let name = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))
        .unwrap_or(name);
    list(dirs, skip)
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| PlaybookError::NotFound {
            name: name.to_owned(),
            searched: dirs.to_vec(),
        })
}

/// Applies `--set KEY=VALUE` to a playbook's parameters (its `env`). Only keys the playbook
/// declares may be set, so a typo is an error rather than a new variable.
pub fn set_params(pb: &mut Playbook, sets: &[String]) -> Result<(), String> {
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(format!("--set {s:?}: expected KEY=VALUE"));
        };
        match pb.env.get_mut(k) {
            Some(slot) => *slot = v.to_owned(),
            None => {
                let declared: Vec<&str> = pb.env.keys().map(String::as_str).collect();
                return Err(format!(
                    "--set {k}: the playbook has no parameter {k} (its env declares: {}); use \
                     -e {k}=VALUE to add a variable",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_text() {
        let pb = parse(
            Path::new("p.yml"),
            "env:\n  A: 8080\n  B: 1.10\n  C: true\n  D: '2.8'\n  E: 1.13.5\ncommands: [x]\ntimeout: 90\n",
        )
        .unwrap();
        let got: Vec<(&str, &str)> = pb
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "8080"),
                ("B", "1.10"),
                ("C", "true"),
                ("D", "2.8"),
                ("E", "1.13.5")
            ]
        );
        assert_eq!(pb.timeout.as_deref(), Some("90"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let p = Path::new(".runvoy/deploy.yml");
        let e = parse(p, "description: x\ncommands:\n  - a\n  lcok: deploy\n").unwrap_err();
        assert!(e.to_string().starts_with(".runvoy/deploy.yml:4:"), "{e}");
        let e = parse(p, "description: x\nlcok: deploy\ncommands: [a]\n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with(".runvoy/deploy.yml:2:1:"), "{s}");
        assert!(s.contains("lcok"), "{s}");
        let e = parse(p, "description: x\n").unwrap_err();
        assert!(e.to_string().contains("commands is required"), "{e}");
        let e = parse(p, "commands: [a]\nlock: 'no spaces'\n").unwrap_err();
        assert!(e.to_string().contains("lock"), "{e}");
        let e = parse(p, "commands: [a]\nenv: {1X: v}\n").unwrap_err();
        assert!(e.to_string().contains("1X"), "{e}");
    }

    #[test]
    fn params_only_change_declared_env() {
        let mut pb = parse(Path::new("p.yml"), "env: {V: '1'}\ncommands: [a, b]\n").unwrap();
        assert_eq!(pb.command_line(), "a && b");
        set_params(&mut pb, &["V=2=3".into()]).unwrap();
        assert_eq!(pb.env["V"], "2=3");
        let e = set_params(&mut pb, &["W=1".into()]).unwrap_err();
        assert!(e.contains("declares: V"), "{e}");
        assert!(set_params(&mut pb, &["V".into()]).is_err());
    }
}
