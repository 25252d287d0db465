//! Parsing the record file, and reading it as the durable [`LogSource`].

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use async_trait::async_trait;
use runvoy_domain::ports::{ComputeError, LogSource};
use runvoy_domain::{ExitInfo, LogRecord};
use runvoy_proto::record::{RecordRef, parse_line};

/// Parses complete lines of runner records. Lines that are not records (e.g. stray output) are
/// skipped with a warning rather than failing the whole batch.
pub fn parse_records(buf: &[u8], after_seq: u64, out: &mut Vec<LogRecord>) -> Option<ExitInfo> {
    let mut exit = None;
    for line in buf.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(RecordRef::Log {
                seq,
                stream,
                time,
                message,
                b64,
                eol,
            }) => {
                if seq > after_seq {
                    match LogRecord::from_parts(seq, stream, &time, message, b64.as_deref(), eol) {
                        Some(r) => out.push(r),
                        None => tracing::warn!("runner record with malformed base64 skipped"),
                    }
                }
            }
            Ok(RecordRef::Exit(x)) => exit = Some(ExitInfo::from(x)),
            Err(e) => tracing::warn!(error = %e, "unparsable line in record file skipped"),
        }
    }
    exit
}

/// Reads the final record, if any, from the end of a record file.
pub(crate) fn read_exit_record(path: &std::path::Path) -> Option<ExitInfo> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(8192);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let last = tail.split(|&b| b == b'\n').rev().find(|l| !l.is_empty())?;
    match parse_line(last).ok()? {
        RecordRef::Exit(x) => Some(x.into()),
        RecordRef::Log { .. } => None,
    }
}

/// The workspace record files as the durable log source.
#[derive(Debug, Clone)]
pub struct RecordFileSource {
    executions_dir: PathBuf,
}

impl RecordFileSource {
    /// Reads records under `<executions_dir>/<id>/records.jsonl`.
    pub fn new(executions_dir: PathBuf) -> Self {
        RecordFileSource { executions_dir }
    }
}

#[async_trait]
impl LogSource for RecordFileSource {
    async fn read_records(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Result<(Vec<LogRecord>, Option<ExitInfo>), ComputeError> {
        if !runvoy_domain::valid_execution_id(execution_id) {
            return Ok((Vec::new(), None));
        }
        let path = self.executions_dir.join(execution_id).join("records.jsonl");
        tokio::task::spawn_blocking(move || {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Vec::new(), None));
                }
                Err(e) => {
                    return Err(ComputeError::Unavailable(format!(
                        "{}: {e}",
                        path.display()
                    )));
                }
            };
            // Only complete lines: a trailing partial line is still being written.
            let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let mut out = Vec::new();
            let exit = parse_records(&data[..end], after_seq, &mut out);
            Ok((out, exit))
        })
        .await
        .map_err(|e| ComputeError::Unavailable(e.to_string()))?
    }
}
