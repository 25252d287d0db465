//! The CLI configuration: `~/.runvoy/config.yaml`, compatible with the Go runvoy's file.
//!
//! ```yaml
//! api_endpoint: http://127.0.0.1:8080
//! api_key: rv_…
//! web_url: http://127.0.0.1:8080/
//! ```
//!
//! Resolution, highest first: explicit overrides (CLI flags), `RUNVOY_API_URL` / `RUNVOY_API_KEY`,
//! the file (whose path `RUNVOY_CONFIG` overrides).

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
}

/// Values that beat both the environment and the file (the CLI's `--api-url` / `--api-key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces `api_endpoint`.
    pub api_url: Option<String>,
    /// Replaces `api_key`.
    pub api_key: Option<String>,
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
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
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
    /// No path given and neither `RUNVOY_CONFIG` nor `HOME` is set.
    #[error("cannot locate the config file: set {ENV_CONFIG} or HOME")]
    NoPath,
}

impl Config {
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
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
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
        serde_yaml::to_string(self).unwrap_or_default()
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
    let mut url = nonempty(overrides.api_url.clone()).or_else(|| nonempty(env(ENV_API_URL)));
    let mut key = nonempty(overrides.api_key.clone()).or_else(|| nonempty(env(ENV_API_KEY)));
    // The file is only needed when something is still missing, so a broken file does not block
    // a fully overridden invocation.
    let file = match path_from(&env) {
        Some(path) if url.is_none() || key.is_none() => Config::read_optional(&path)?,
        _ => None,
    };
    let cfg = file.unwrap_or_default();
    url = url.or_else(|| nonempty(Some(cfg.api_endpoint.clone())));
    key = key.or_else(|| nonempty(Some(cfg.api_key.clone())));
    match (url, key) {
        (Some(u), Some(k)) => Ok(Config {
            api_endpoint: u.trim().to_string(),
            api_key: k.trim().to_string(),
            web_url: cfg.web_url,
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
            api_key: None,
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
}
