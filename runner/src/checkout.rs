//! What the sidecar reports about the workspace before the command starts: lines about the
//! git checkout (printed as `system` records after the banner) and, when preparing failed,
//! the reason (the command then never starts). See `runvoy_proto::git::files`.

use std::path::{Path, PathBuf};

use runvoy_proto::git::files;

use crate::config::Config;

/// The sidecar's report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Lines to print before the command.
    pub notes: Vec<Vec<u8>>,
    /// Why the workspace could not be prepared.
    pub failed: Option<String>,
}

/// Where the sidecar's files are, as the runner sees them: the workspace's `.runvoy/`. In a
/// sandbox the work directory is a path inside it, and the runner's own directory is the
/// workspace; elsewhere the work directory is the workspace.
pub fn state_dir(config: &Config, sandboxed: bool) -> PathBuf {
    match (&config.workdir, sandboxed) {
        (Some(w), false) => w.join(".runvoy"),
        _ => PathBuf::from(".runvoy"),
    }
}

/// Reads the report; missing files mean nothing to say.
pub fn read(state: &Path) -> Report {
    let lines = |name: &str| -> Vec<Vec<u8>> {
        std::fs::read(state.join(name))
            .map(|b| {
                b.split(|&c| c == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .unwrap_or_default()
    };
    let failed = lines(files::FAILED);
    Report {
        notes: lines(files::NOTES),
        failed: (!failed.is_empty()).then(|| {
            failed
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect::<Vec<_>>()
                .join("; ")
        }),
    }
}

/// The command's working directory: the checkout's directory inside the work directory.
pub fn command_dir(config: &Config) -> Option<PathBuf> {
    match (&config.workdir, &config.checkout_dir) {
        (Some(w), Some(d)) => Some(w.join(d)),
        (None, Some(d)) => Some(d.clone()),
        (w, None) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_notes_and_failure() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), Report::default());
        std::fs::write(d.path().join(files::NOTES), "a\n\nb\n").unwrap();
        std::fs::write(d.path().join(files::FAILED), "git clone of x failed: y\n").unwrap();
        let r = read(d.path());
        assert_eq!(r.notes, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(r.failed.as_deref(), Some("git clone of x failed: y"));
    }
}
