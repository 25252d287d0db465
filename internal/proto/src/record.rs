//! Runner records: the framed, sequence-numbered lines `runvoy-runner` writes to its stdout.
//!
//! Each record is one JSON object on one line, because in production Cloud Logging parses every
//! stdout line of a container as a structured `jsonPayload` (and lifts `time` into the entry's
//! timestamp). Locally the same lines are appended to the execution's record file.
//!
//! ```text
//! {"runvoy":"log","exec":"ab12…","seq":1,"stream":"stdout","time":"2026-11-24T10:00:00.123456Z","message":"hello"}
//! {"runvoy":"exit","exec":"ab12…","seq":2,"time":"…","exit_code":0,"lines":1}
//! ```

use serde::{Deserialize, Serialize};

/// Maximum payload bytes in one log record. Longer lines are split into several records, all but
/// the last with `eol: false`, so no record comes near Cloud Logging's 256 KiB entry limit.
pub const CHUNK_MAX: usize = 64 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
    /// runvoy's own lines (banner, sidecar progress); clients print them as their own messages.
    System,
}

impl Stream {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            "system" => Some(Stream::System),
            _ => None,
        }
    }

    /// The small integer every store keeps instead of the name (stored data: never renumber).
    pub fn code(self) -> i64 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
            Stream::System => 3,
        }
    }

    /// The stream of a stored [`Stream::code`]; an unknown code reads as stdout.
    pub fn from_code(code: i64) -> Stream {
        match code {
            2 => Stream::Stderr,
            3 => Stream::System,
            _ => Stream::Stdout,
        }
    }
}

/// One record written by the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "runvoy", rename_all = "lowercase")]
pub enum RunnerRecord {
    /// A line (or a chunk of a long line) of output.
    Log(LogRecordWire),
    /// The final record: the command ended. Logs are complete once `lines` records are stored.
    Exit(ExitRecordWire),
}

/// A log line as the runner writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecordWire {
    /// Execution id.
    pub exec: String,
    /// Per-execution sequence number, from 1, without gaps.
    pub seq: u64,
    /// Source stream.
    pub stream: Stream,
    /// RFC 3339 UTC time the line was read by the runner.
    pub time: String,
    /// The line without its trailing `\n`; lossy UTF-8 when `b64` is present.
    pub message: String,
    /// Exact bytes (standard base64) when the line is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
    /// False when no `\n` followed this chunk (a split long line, or output without a final newline).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub eol: bool,
}

/// The runner's final record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecordWire {
    /// Execution id.
    pub exec: String,
    /// Always `lines + 1`: the exit record takes the next sequence number so a gap is detectable.
    pub seq: u64,
    /// RFC 3339 UTC time the command ended.
    pub time: String,
    /// The command's exit code; 128 + signal number when it was killed by a signal.
    pub exit_code: i32,
    /// Number of log records written before this one.
    pub lines: u64,
    /// The runner's own timeout fired and killed the command.
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// The command was stopped because the runner received SIGTERM/SIGINT (a kill).
    #[serde(default, skip_serializing_if = "is_false")]
    pub killed: bool,
    /// Set when the runner could not start the command at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output records dropped (not written, no sequence number) because the output budget
    /// was used up.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_lines: u64,
    /// Bytes of output in the records dropped over the budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_bytes: u64,
    /// Output records that could not be written (no space left on the record file's device)
    /// and were dropped without a sequence number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unwritten_lines: u64,
    /// Bytes of output in the unwritable records.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unwritten_bytes: u64,
    /// Secret values the runner masked in the output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redactions: u64,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Environment variables the runner reads (set by the compute adapter).
pub mod env {
    /// Execution id stamped on every record.
    pub const EXECUTION_ID: &str = "RUNVOY_EXECUTION_ID";
    /// The shell command to run under `/bin/sh -c`.
    pub const COMMAND: &str = "RUNVOY_COMMAND";
    /// The exact argv to run without a shell, as a JSON array of strings; wins over
    /// [`COMMAND`].
    pub const ARGV: &str = "RUNVOY_ARGV";
    /// File whose bytes are the command's standard input (relative paths are resolved against
    /// the runner's working directory); the runner unlinks it once open. Without it the command
    /// reads end-of-file.
    pub const STDIN_FILE: &str = "RUNVOY_STDIN_FILE";
    /// Timeout in whole seconds; absent or 0 means none.
    pub const TIMEOUT: &str = "RUNVOY_TIMEOUT_SECONDS";
    /// Seconds between SIGTERM and SIGKILL when stopping the command.
    pub const KILL_GRACE: &str = "RUNVOY_KILL_GRACE_SECONDS";
    /// Newline-separated banner lines emitted as `system` records before the command starts.
    pub const BANNER: &str = "RUNVOY_BANNER";
    /// Working directory for the command.
    pub const WORKDIR: &str = "RUNVOY_WORKDIR";
    /// Path of the `.env` file whose variables are exported to the command.
    pub const ENV_FILE: &str = "RUNVOY_ENV_FILE";
    /// Most bytes of command output stored; absent or 0 means no limit.
    pub const MAX_OUTPUT_BYTES: &str = "RUNVOY_MAX_OUTPUT_BYTES";
    /// Most output records (lines or chunks of long lines) stored; absent or 0 means no limit.
    pub const MAX_OUTPUT_LINES: &str = "RUNVOY_MAX_OUTPUT_LINES";
    /// Comma-separated names of the `.env` variables that hold secrets: the runner redacts
    /// their values from every record. Names only, never values.
    pub const SECRET_KEYS: &str = "RUNVOY_SECRET_KEYS";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_round_trips_and_omits_defaults() {
        let r = RunnerRecord::Log(LogRecordWire {
            exec: "e".into(),
            seq: 1,
            stream: Stream::Stdout,
            time: "2026-01-01T00:00:00Z".into(),
            message: "hi".into(),
            b64: None,
            eol: true,
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"runvoy":"log","exec":"e","seq":1,"stream":"stdout","time":"2026-01-01T00:00:00Z","message":"hi"}"#
        );
        assert_eq!(serde_json::from_str::<RunnerRecord>(&s).unwrap(), r);
    }

    #[test]
    fn exit_record_parses() {
        let s = r#"{"runvoy":"exit","exec":"e","seq":3,"time":"t","exit_code":137,"lines":2,"killed":true}"#;
        match serde_json::from_str::<RunnerRecord>(s).unwrap() {
            RunnerRecord::Exit(e) => {
                assert_eq!(e.exit_code, 137);
                assert!(e.killed && !e.timed_out);
            }
            _ => panic!("expected exit"),
        }
    }
}

/// A record borrowed from the line it was parsed from: the fast path for consumers that parse
/// millions of records (no intermediate tree, no copies of unescaped strings).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordRef<'a> {
    /// A log line.
    Log {
        /// Sequence number.
        seq: u64,
        /// Source stream.
        stream: Stream,
        /// RFC 3339 time.
        time: std::borrow::Cow<'a, str>,
        /// Line without newline (lossy when `b64` is present).
        message: std::borrow::Cow<'a, str>,
        /// Exact bytes, base64, when not UTF-8.
        b64: Option<std::borrow::Cow<'a, str>>,
        /// A newline followed.
        eol: bool,
    },
    /// The final record.
    Exit(ExitRecordWire),
}

#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(borrow)]
    runvoy: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    exec: std::borrow::Cow<'a, str>,
    seq: u64,
    #[serde(default)]
    stream: Option<Stream>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    b64: Option<std::borrow::Cow<'a, str>>,
    #[serde(default = "yes")]
    eol: bool,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    lines: Option<u64>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    killed: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    dropped_lines: u64,
    #[serde(default)]
    dropped_bytes: u64,
    #[serde(default)]
    unwritten_lines: u64,
    #[serde(default)]
    unwritten_bytes: u64,
    #[serde(default)]
    redactions: u64,
}

/// Parses one record line. Equivalent to deserialising [`RunnerRecord`], several times faster.
pub fn parse_line(line: &[u8]) -> Result<RecordRef<'_>, serde_json::Error> {
    use serde::de::Error;
    let f: Flat<'_> = serde_json::from_slice(line)?;
    match &*f.runvoy {
        "log" => Ok(RecordRef::Log {
            seq: f.seq,
            stream: f
                .stream
                .ok_or_else(|| serde_json::Error::missing_field("stream"))?,
            time: f.time,
            message: f
                .message
                .ok_or_else(|| serde_json::Error::missing_field("message"))?,
            b64: f.b64,
            eol: f.eol,
        }),
        "exit" => Ok(RecordRef::Exit(ExitRecordWire {
            exec: f.exec.into_owned(),
            seq: f.seq,
            time: f.time.into_owned(),
            exit_code: f
                .exit_code
                .ok_or_else(|| serde_json::Error::missing_field("exit_code"))?,
            lines: f
                .lines
                .ok_or_else(|| serde_json::Error::missing_field("lines"))?,
            timed_out: f.timed_out,
            killed: f.killed,
            error: f.error,
            dropped_lines: f.dropped_lines,
            dropped_bytes: f.dropped_bytes,
            unwritten_lines: f.unwritten_lines,
            unwritten_bytes: f.unwritten_bytes,
            redactions: f.redactions,
        })),
        other => Err(serde_json::Error::unknown_variant(other, &["log", "exit"])),
    }
}

#[cfg(test)]
mod parse_line_tests {
    use super::*;

    #[test]
    fn agrees_with_the_enum() {
        let lines = [
            r#"{"runvoy":"log","exec":"e","seq":1,"stream":"stdout","time":"t","message":"a\u001b[31m\"b"}"#,
            r#"{"runvoy":"log","exec":"e","seq":2,"stream":"stderr","time":"t","message":"\ufffd","b64":"/w==","eol":false}"#,
            r#"{"runvoy":"exit","exec":"e","seq":3,"time":"t","exit_code":137,"lines":2,"killed":true}"#,
            r#"{"runvoy":"exit","exec":"e","seq":9,"time":"t","exit_code":0,"lines":8,"dropped_lines":5,"dropped_bytes":40,"unwritten_lines":2,"unwritten_bytes":7}"#,
        ];
        for l in lines {
            let full: RunnerRecord = serde_json::from_str(l).unwrap();
            match (full, parse_line(l.as_bytes()).unwrap()) {
                (
                    RunnerRecord::Log(w),
                    RecordRef::Log {
                        seq,
                        stream,
                        time,
                        message,
                        b64,
                        eol,
                    },
                ) => {
                    assert_eq!(
                        (w.seq, w.stream, w.time, w.message, w.b64, w.eol),
                        (
                            seq,
                            stream,
                            time.into_owned(),
                            message.into_owned(),
                            b64.map(|b| b.into_owned()),
                            eol
                        )
                    );
                }
                (RunnerRecord::Exit(a), RecordRef::Exit(b)) => assert_eq!(a, b),
                _ => panic!("kinds differ for {l}"),
            }
        }
        assert!(parse_line(br#"{"runvoy":"nope","exec":"e","seq":1,"time":"t"}"#).is_err());
        assert!(parse_line(br#"{"runvoy":"log","exec":"e","seq":1,"time":"t"}"#).is_err());
        assert!(parse_line(b"not json").is_err());
    }
}
