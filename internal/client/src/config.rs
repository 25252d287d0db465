//! The CLI configuration: `~/.runvoy/config.yaml`, compatible with the Go runvoy's file.
//!
//! ```yaml
//! api_endpoint: http://127.0.0.1:8080
//! api_key: rv_…
//! web_url: http://127.0.0.1:8080/
//! profiles:            # optional: more keys side by side
//!   dev:
//!     api_endpoint: http://127.0.0.1:8080
//!     api_key: rvk_…
//! ```
//!
//! The top-level keys are the `default` profile. Another profile is selected with `--profile
//! NAME` (an override) or `RUNVOY_PROFILE`. Resolution, highest first: explicit overrides (CLI
//! flags), `RUNVOY_API_URL` / `RUNVOY_API_KEY`, the selected profile of the file (whose path
//! `RUNVOY_CONFIG` overrides).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable overriding `api_endpoint`.
pub const ENV_API_URL: &str = "RUNVOY_API_URL";
/// Environment variable overriding `api_key`.
pub const ENV_API_KEY: &str = "RUNVOY_API_KEY";
/// Environment variable overriding the config file path.
pub const ENV_CONFIG: &str = "RUNVOY_CONFIG";
/// Environment variable selecting a profile of the config file.
pub const ENV_PROFILE: &str = "RUNVOY_PROFILE";
/// The profile of the file's top-level keys.
pub const DEFAULT_PROFILE: &str = "default";

/// One profile: where to connect and with which key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Server URL.
    #[serde(default)]
    pub api_endpoint: String,
    /// API key sent as `X-API-Key`.
    #[serde(default)]
    pub api_key: String,
    /// Web viewer URL; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub web_url: String,
}

/// Contents of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Server URL, e.g. `http://127.0.0.1:8080`.
    #[serde(default)]
    pub api_endpoint: String,
    /// API key sent as `X-API-Key`.
    #[serde(default)]
    pub api_key: String,
    /// Web viewer URL; may be empty.
    #[serde(default)]
    pub web_url: String,
    /// Named profiles besides the default one (the top-level keys), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Profile>,
}

/// Values that beat both the environment and the file (the CLI's `--api-url` / `--api-key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces `api_endpoint`.
    pub api_url: Option<String>,
    /// Replaces `api_key`.
    pub api_key: Option<String>,
    /// Selects a profile of the file (beats `RUNVOY_PROFILE`).
    pub profile: Option<String>,
}

/// Why the configuration could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither flags, environment nor file provide an endpoint and a key.
    #[error(
        "no {missing} configured: run `runvoy configure`, set {ENV_API_URL} and {ENV_API_KEY}, or pass --api-url and --api-key"
    )]
    Missing {
        /// What is missing (`API URL`, `API key`, or both).
        missing: &'static str,
    },
    /// The file exists but could not be read or parsed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("invalid config file {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// `PATH:LINE:COLUMN: what is wrong` (no excerpt of the file: it holds the API key).
        message: String,
    },
    /// The file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The selected profile is not in the file.
    #[error(
        "no profile {name:?} in {}: run `runvoy configure --profile {name}` or `runvoy claim TOKEN --profile {name}`",
        path.display()
    )]
    NoProfile {
        /// The profile.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A profile name that is not 1–64 of `[A-Za-z0-9_.-]`.
    #[error("invalid profile name {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadProfile(String),
    /// No path given and neither `RUNVOY_CONFIG` nor `HOME` is set.
    #[error("cannot locate the config file: set {ENV_CONFIG} or HOME")]
    NoPath,
}

/// The profile selected by `overrides` or `RUNVOY_PROFILE`: `None` for the default profile.
pub fn selected_profile(overrides: &Overrides) -> Result<Option<String>, ConfigError> {
    profile_from(overrides, |k| std::env::var(k).ok())
}

fn profile_from(
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let name = overrides
        .profile
        .clone()
        .or_else(|| env(ENV_PROFILE))
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    match name {
        None => Ok(None),
        Some(n) if n == DEFAULT_PROFILE => Ok(None),
        Some(n)
            if n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(Some(n))
        }
        Some(n) => Err(ConfigError::BadProfile(n)),
    }
}

impl Config {
    /// The profile `name` (`None`: the default one, the top-level keys), when the file has it.
    pub fn profile(&self, name: Option<&str>) -> Option<Profile> {
        match name {
            None => Some(Profile {
                api_endpoint: self.api_endpoint.clone(),
                api_key: self.api_key.clone(),
                web_url: self.web_url.clone(),
            }),
            Some(n) => self.profiles.get(n).cloned(),
        }
    }

    /// Sets the profile `name` (`None`: the default one), leaving the others as they are.
    pub fn set_profile(&mut self, name: Option<&str>, p: Profile) {
        match name {
            None => {
                self.api_endpoint = p.api_endpoint;
                self.api_key = p.api_key;
                self.web_url = p.web_url;
            }
            Some(n) => {
                self.profiles.insert(n.to_owned(), p);
            }
        }
    }

    /// `RUNVOY_CONFIG`, else `$HOME/.runvoy/config.yaml`.
    pub fn default_path() -> Option<PathBuf> {
        path_from(|k| std::env::var(k).ok())
    }

    /// Resolves the configuration from the environment and the file, without overrides.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_with(&Overrides::default())
    }

    /// Resolves the configuration: `overrides`, then the environment, then the file. Fails when
    /// the endpoint or the key is still missing.
    pub fn load_with(overrides: &Overrides) -> Result<Config, ConfigError> {
        resolve(overrides, |k| std::env::var(k).ok())
    }

    /// Reads a config file.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: crate::yaml_error(path, &e, false),
        })
    }

    /// Reads the file at `path` when it exists.
    pub fn read_optional(path: &Path) -> Result<Option<Config>, ConfigError> {
        match Config::read(path) {
            Ok(c) => Ok(Some(c)),
            Err(ConfigError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the file (replacing it atomically), creating its directory with mode 0700; the
    /// file gets mode 0600 because it holds the API key.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        create_parent(path).map_err(err)?;
        let tmp = path.with_extension("yaml.tmp");
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, &self.to_yaml()).map_err(err)?;
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            err(e)
        })
    }

    /// Writes the file only when none exists, so a user's own configuration is never replaced.
    /// `path` defaults to [`Config::default_path`]. Returns the path when it wrote the file and
    /// `None` when one already existed.
    pub fn write_if_missing(&self, path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => Config::default_path().ok_or(ConfigError::NoPath)?,
        };
        let err = |source| ConfigError::Write {
            path: path.clone(),
            source,
        };
        create_parent(&path).map_err(err)?;
        // O_EXCL makes "only when missing" race-free against a concurrent `runvoy configure`.
        match write_new(&path, &self.to_yaml()) {
            Ok(()) => Ok(Some(path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    fn to_yaml(&self) -> String {
        // Serialising three strings cannot fail.
        serde_saphyr::to_string(self).unwrap_or_default()
    }
}

fn path_from(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env(ENV_CONFIG).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = env("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".runvoy").join("config.yaml"))
}

/// The resolution rules, with the environment injected for tests.
fn resolve(
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let profile = profile_from(overrides, &env)?;
    let mut url = nonempty(overrides.api_url.clone()).or_else(|| nonempty(env(ENV_API_URL)));
    let mut key = nonempty(overrides.api_key.clone()).or_else(|| nonempty(env(ENV_API_KEY)));
    // The file is only needed when something is still missing, so a broken file does not block
    // a fully overridden invocation.
    let mut cfg = Profile::default();
    if let Some(path) = path_from(&env).filter(|_| url.is_none() || key.is_none()) {
        let file = Config::read_optional(&path)?;
        match (file.and_then(|f| f.profile(profile.as_deref())), profile) {
            (Some(p), _) => cfg = p,
            (None, Some(name)) => return Err(ConfigError::NoProfile { name, path }),
            (None, None) => {}
        }
    }
    url = url.or_else(|| nonempty(Some(cfg.api_endpoint.clone())));
    key = key.or_else(|| nonempty(Some(cfg.api_key.clone())));
    match (url, key) {
        (Some(u), Some(k)) => Ok(Config {
            api_endpoint: u.trim().to_string(),
            api_key: k.trim().to_string(),
            web_url: cfg.web_url,
            profiles: BTreeMap::new(),
        }),
        (None, None) => Err(ConfigError::Missing {
            missing: "API URL or API key",
        }),
        (None, _) => Err(ConfigError::Missing { missing: "API URL" }),
        (_, None) => Err(ConfigError::Missing { missing: "API key" }),
    }
}

fn create_parent(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn write_new(path: &Path, contents: &str) -> io::Result<()> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn file_with(dir: &Path, c: &Config) -> PathBuf {
        let p = dir.join("sub").join("config.yaml");
        c.write(&p).unwrap();
        p
    }

    #[test]
    fn precedence_flags_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_with(
            dir.path(),
            &Config {
                api_endpoint: "http://file".into(),
                api_key: "filekey".into(),
                web_url: "http://web".into(),
                ..Default::default()
            },
        );
        let ps = p.to_str().unwrap();

        let c = resolve(&Overrides::default(), env_of(&[(ENV_CONFIG, ps)])).unwrap();
        assert_eq!(
            (c.api_endpoint.as_str(), c.api_key.as_str()),
            ("http://file", "filekey")
        );
        assert_eq!(c.web_url, "http://web");

        let env = env_of(&[(ENV_CONFIG, ps), (ENV_API_URL, "http://env")]);
        let c = resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(
            (c.api_endpoint.as_str(), c.api_key.as_str()),
            ("http://env", "filekey")
        );

        let o = Overrides {
            api_url: Some("http://flag".into()),
            ..Default::default()
        };
        let env = env_of(&[
            (ENV_CONFIG, ps),
            (ENV_API_URL, "http://env"),
            (ENV_API_KEY, "envkey"),
        ]);
        let c = resolve(&o, &env).unwrap();
        assert_eq!(
            (c.api_endpoint.as_str(), c.api_key.as_str()),
            ("http://flag", "envkey")
        );
    }

    #[test]
    fn env_alone_needs_no_file_and_broken_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        fs::write(&bad, "api_endpoint: [").unwrap();
        let env = env_of(&[
            (ENV_CONFIG, bad.to_str().unwrap()),
            (ENV_API_URL, "http://env"),
            (ENV_API_KEY, "k"),
        ]);
        assert!(resolve(&Overrides::default(), &env).is_ok());
        let env = env_of(&[
            (ENV_CONFIG, bad.to_str().unwrap()),
            (ENV_API_URL, "http://env"),
        ]);
        assert!(matches!(
            resolve(&Overrides::default(), &env),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn missing_values_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none.yaml");
        let env = env_of(&[(ENV_CONFIG, none.to_str().unwrap()), (ENV_API_KEY, "k")]);
        let e = resolve(&Overrides::default(), &env).unwrap_err();
        assert!(
            matches!(e, ConfigError::Missing { missing: "API URL" }),
            "{e}"
        );
    }

    #[test]
    fn default_path_uses_home() {
        assert_eq!(
            path_from(env_of(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.runvoy/config.yaml")
        );
        assert_eq!(
            path_from(env_of(&[("HOME", "/h"), (ENV_CONFIG, "/c.yaml")])).unwrap(),
            PathBuf::from("/c.yaml")
        );
        assert!(path_from(env_of(&[])).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn write_if_missing_writes_once_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".runvoy").join("config.yaml");
        let a = Config {
            api_endpoint: "http://a".into(),
            api_key: "ka".into(),
            web_url: String::new(),
            ..Default::default()
        };
        assert_eq!(a.write_if_missing(Some(&p)).unwrap(), Some(p.clone()));
        let b = Config {
            api_endpoint: "http://b".into(),
            ..a.clone()
        };
        assert_eq!(b.write_if_missing(Some(&p)).unwrap(), None);
        assert_eq!(Config::read(&p).unwrap(), a);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        b.write(&p).unwrap();
        assert_eq!(Config::read(&p).unwrap(), b);
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn profiles_side_by_side_and_the_default_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        // A file of the earlier format is the default profile, and is written back the same.
        // (Files written before web_url was double-quoted read the same.)
        fs::write(&p, "api_endpoint: http://a\napi_key: ka\nweb_url: ''\n").unwrap();
        assert_eq!(Config::read(&p).unwrap().web_url, "");
        let old = "api_endpoint: http://a\napi_key: ka\nweb_url: \"\"\n";
        fs::write(&p, old).unwrap();
        let ps = p.to_str().unwrap();
        let c = resolve(&Overrides::default(), env_of(&[(ENV_CONFIG, ps)])).unwrap();
        assert_eq!(
            (c.api_endpoint.as_str(), c.api_key.as_str()),
            ("http://a", "ka")
        );
        let mut file = Config::read(&p).unwrap();
        assert!(file.profiles.is_empty());
        file.write(&p).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), old);

        // Adding a profile keeps the default one.
        file.set_profile(
            Some("dev"),
            Profile {
                api_endpoint: "http://b".into(),
                api_key: "kb".into(),
                web_url: String::new(),
            },
        );
        file.write(&p).unwrap();
        let file = Config::read(&p).unwrap();
        assert_eq!(file.api_key, "ka");
        assert_eq!(file.profile(Some("dev")).unwrap().api_key, "kb");
        let key = |o: &Overrides, env: &[(&str, &str)]| {
            let mut all = vec![(ENV_CONFIG, ps)];
            all.extend_from_slice(env);
            resolve(o, env_of(&all)).map(|c| c.api_key)
        };
        let flag = |n: &str| Overrides {
            profile: Some(n.into()),
            ..Default::default()
        };
        assert_eq!(key(&Overrides::default(), &[]).unwrap(), "ka");
        assert_eq!(key(&flag("dev"), &[]).unwrap(), "kb");
        assert_eq!(
            key(&Overrides::default(), &[(ENV_PROFILE, "dev")]).unwrap(),
            "kb"
        );
        assert_eq!(
            key(&flag("default"), &[(ENV_PROFILE, "dev")]).unwrap(),
            "ka",
            "the flag wins"
        );
        assert_eq!(key(&flag("dev"), &[(ENV_API_KEY, "kenv")]).unwrap(), "kenv");
        assert!(matches!(
            key(&flag("ops"), &[]),
            Err(ConfigError::NoProfile { name, .. }) if name == "ops"
        ));
        assert!(matches!(
            key(&flag("a b"), &[]),
            Err(ConfigError::BadProfile(n)) if n == "a b"
        ));
        assert!(matches!(
            key(&Overrides::default(), &[(ENV_PROFILE, "../x")]),
            Err(ConfigError::BadProfile(_))
        ));
    }
}
