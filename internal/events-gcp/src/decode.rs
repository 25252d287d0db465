//! Decoders for what Google delivers: the Pub/Sub push envelope, the Cloud Logging `LogEntry` a
//! sink publishes, and the entries Cloud Run writes about a job execution.
//!
//! Shapes (see docs/GCP.md, "The event path"):
//!
//! * Push body (wrapped form): `{"message":{"data":B64,"attributes":{…},"messageId":ID,
//!   "publishTime":T},"subscription":S,"deliveryAttempt":N}`; older deliveries spell the ids
//!   `message_id`/`publish_time`, both are read.
//! * `data` is a LogEntry in its REST JSON form. A runner record is a stdout line that Cloud
//!   Logging parsed into `jsonPayload`; Cloud Logging lifts the record's `time` into the entry's
//!   `timestamp`, so the record is rebuilt with `timestamp` when `time` is gone.
//! * Cloud Run's own entries for an execution (`run.googleapis.com%2Fvarlog%2Fsystem`, e.g.
//!   "Container called exit(0).", and the `cloudaudit.googleapis.com%2Fsystem_event` audit
//!   record of `/Jobs.RunJob`) name the Cloud Run execution only
//!   (`labels["run.googleapis.com/execution_name"]`): they become state hints.

use std::collections::HashMap;

use base64::Engine;
use runvoy_domain::clock::parse_rfc3339;
use runvoy_domain::{ExitInfo, LogRecord, valid_execution_id};
use runvoy_proto::record::{RecordRef, parse_line};
use serde::Deserialize;
use serde_json::Value;

/// Entry label Cloud Run puts on every entry of a job execution: the execution's short name.
pub const EXECUTION_NAME_LABEL: &str = "run.googleapis.com/execution_name";

/// Why a delivery can never be processed. Each maps to a 400 with a stable code, so Pub/Sub
/// dead-letters the message instead of retrying it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The push body is not the Pub/Sub envelope.
    #[error("not a Pub/Sub push envelope: {0}")]
    Envelope(String),
    /// `message.data` is not base64 of a LogEntry.
    #[error("message data is not a Cloud Logging entry: {0}")]
    Data(String),
    /// A runner record that does not parse (or names no valid execution).
    #[error("malformed runner record: {0}")]
    Record(String),
    /// An entry that is neither a runner record nor one of Cloud Run's execution entries.
    #[error("unsupported log entry: {0}")]
    Unsupported(String),
}

/// The wrapped push body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelope {
    /// The message.
    pub message: PubsubMessage,
    /// `projects/P/subscriptions/S`.
    #[serde(default)]
    pub subscription: Option<String>,
    /// Present only with a dead-letter policy (0 is omitted in JSON).
    #[serde(default)]
    pub delivery_attempt: Option<u32>,
}

/// `google.pubsub.v1.PubsubMessage` as JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct PubsubMessage {
    /// Base64 payload.
    #[serde(default)]
    pub data: Option<String>,
    /// Attributes; a sink sets `logging.googleapis.com/timestamp`.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    /// Unique within the topic; a redelivery carries the same id.
    #[serde(default, rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time_camel: Option<String>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<String>,
}

impl PubsubMessage {
    /// The message id (`messageId`, else `message_id`).
    pub fn message_id(&self) -> Option<&str> {
        self.message_id_camel
            .as_deref()
            .or(self.message_id_snake.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// The publish time (epoch ms), when present and valid.
    pub fn publish_time_ms(&self) -> Option<i64> {
        self.publish_time_camel
            .as_deref()
            .or(self.publish_time_snake.as_deref())
            .and_then(parse_rfc3339)
    }

    /// The decoded payload bytes.
    pub fn data_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        let d = self
            .data
            .as_deref()
            .ok_or_else(|| DecodeError::Data("message has no data".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| DecodeError::Data(format!("data is not base64: {e}")))
    }
}

/// Parses a push body.
pub fn parse_envelope(body: &[u8]) -> Result<PushEnvelope, DecodeError> {
    let env: PushEnvelope =
        serde_json::from_slice(body).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    if env.message.message_id().is_none() {
        return Err(DecodeError::Envelope("message has no messageId".into()));
    }
    Ok(env)
}

/// The parts of a `google.logging.v2.LogEntry` (REST JSON) runvoy reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// `projects/P/logs/LOG_ID`, LOG_ID URL-encoded.
    #[serde(default)]
    pub log_name: String,
    /// The monitored resource (`cloud_run_job` with `job_name`, `location`, `project_id`).
    #[serde(default)]
    pub resource: MonitoredResource,
    /// Entry labels (`run.googleapis.com/execution_name`, …).
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// Structured payload: a runner record.
    #[serde(default)]
    pub json_payload: Option<serde_json::Map<String, Value>>,
    /// Plain-text payload (system lines).
    #[serde(default)]
    pub text_payload: Option<String>,
    /// Audit payload.
    #[serde(default)]
    pub proto_payload: Option<Value>,
    /// Logging's id of the entry.
    #[serde(default)]
    pub insert_id: Option<String>,
    /// RFC 3339 time of the entry (the record's `time` once lifted).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// `google.api.MonitoredResource`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MonitoredResource {
    /// E.g. `cloud_run_job`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// E.g. `job_name`, `location`, `project_id`.
    #[serde(default)]
    pub labels: HashMap<String, String>,
}

impl LogEntry {
    /// The log id, URL-decoded only where Google encodes `/` (`run.googleapis.com/stdout`).
    pub fn log_id(&self) -> String {
        let id = self
            .log_name
            .rsplit_once("/logs/")
            .map_or(self.log_name.as_str(), |(_, id)| id);
        id.replace("%2F", "/").replace("%2f", "/")
    }

    /// The Cloud Run execution the entry is about (its short name).
    pub fn cloud_execution(&self) -> Option<String> {
        if let Some(n) = self
            .labels
            .get(EXECUTION_NAME_LABEL)
            .filter(|n| !n.is_empty())
        {
            return Some(n.clone());
        }
        // Audit records: `namespaces/P/executions/E`, `projects/P/locations/L/jobs/J/executions/E`.
        let p = self.proto_payload.as_ref()?;
        [
            p.pointer("/response/metadata/name"),
            p.pointer("/resourceName"),
            p.pointer("/response/name"),
        ]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(execution_of_resource)
    }
}

/// The execution segment of a resource name naming one (`…/executions/E[/…]`), or a bare
/// short name as `response.metadata.name` has it in v1 audit records.
pub fn execution_of_resource(name: &str) -> Option<String> {
    if let Some((_, rest)) = name.split_once("/executions/") {
        let e = rest.split('/').next().unwrap_or("");
        return (!e.is_empty()).then(|| e.to_owned());
    }
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

/// What one LogEntry means to runvoy.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A runner record of a runvoy execution.
    Record {
        /// runvoy execution id (the record's `exec`).
        execution_id: String,
        /// The Cloud Run execution that wrote it, when labelled.
        cloud_execution: Option<String>,
        /// A log line …
        record: Option<LogRecord>,
        /// … or the final record.
        exit: Option<ExitInfo>,
    },
    /// Cloud Run says something about an execution's state: a hint to reconcile.
    Hint {
        /// The Cloud Run execution's short name.
        cloud_execution: String,
        /// What it said (for logs only; never trusted for the final state).
        what: String,
    },
}

/// Decodes a LogEntry (the bytes of `message.data`).
pub fn decode_entry(data: &[u8]) -> Result<Decoded, DecodeError> {
    let entry: LogEntry =
        serde_json::from_slice(data).map_err(|e| DecodeError::Data(e.to_string()))?;
    classify(&entry)
}

/// What an already parsed entry means.
pub fn classify(entry: &LogEntry) -> Result<Decoded, DecodeError> {
    if let Some(payload) = &entry.json_payload
        && payload.contains_key("runvoy")
    {
        return decode_record(entry, payload);
    }
    let log_id = entry.log_id();
    let hint = |what: String| match entry.cloud_execution() {
        Some(cloud_execution) => Ok(Decoded::Hint {
            cloud_execution,
            what,
        }),
        None => Err(DecodeError::Unsupported(format!(
            "{log_id} entry names no Cloud Run execution"
        ))),
    };
    match log_id.as_str() {
        "run.googleapis.com/varlog/system" => {
            let text = entry.text_payload.clone().unwrap_or_default();
            hint(match container_exit_code(&text) {
                Some(n) => format!("container called exit({n})"),
                None => text,
            })
        }
        "cloudaudit.googleapis.com/system_event" | "cloudaudit.googleapis.com/activity" => {
            let method = entry
                .proto_payload
                .as_ref()
                .and_then(|p| p.get("methodName"))
                .and_then(Value::as_str)
                .unwrap_or("");
            hint(format!("audit {method}"))
        }
        "cloudaudit.googleapis.com/data_access" => hint("audit data access".into()),
        _ => Err(DecodeError::Unsupported(format!(
            "{log_id} entry without a runner record (resource {})",
            entry.resource.kind
        ))),
    }
}

/// N of Cloud Run's "Container called exit(N)." line.
pub fn container_exit_code(text: &str) -> Option<i32> {
    let rest = text.trim().strip_prefix("Container called exit(")?;
    rest.split_once(')')?.0.trim().parse().ok()
}

fn decode_record(
    entry: &LogEntry,
    payload: &serde_json::Map<String, Value>,
) -> Result<Decoded, DecodeError> {
    let mut rec = payload.clone();
    // Struct numbers are doubles: bring integral ones back to integers for the record parser.
    for v in rec.values_mut() {
        if let Value::Number(n) = v
            && n.as_u64().is_none()
            && n.as_i64().is_none()
            && let Some(f) = n.as_f64()
            && f.fract() == 0.0
            && f.abs() < 9.0e15
        {
            *v = Value::from(f as i64);
        }
    }
    if !rec.contains_key("time") {
        let t = entry.timestamp.clone().unwrap_or_default();
        rec.insert("time".into(), Value::String(t));
    }
    let line = serde_json::to_vec(&rec).map_err(|e| DecodeError::Record(e.to_string()))?;
    let exec = rec.get("exec").and_then(Value::as_str).unwrap_or("");
    if !valid_execution_id(exec) {
        return Err(DecodeError::Record(format!(
            "record names no valid execution id ({exec:?})"
        )));
    }
    let (record, exit) = match parse_line(&line).map_err(|e| DecodeError::Record(e.to_string()))? {
        RecordRef::Log {
            seq,
            stream,
            time,
            message,
            b64,
            eol,
        } => {
            if seq == 0 {
                return Err(DecodeError::Record("seq 0".into()));
            }
            let r = LogRecord::from_parts(seq, stream, &time, message, b64.as_deref(), eol)
                .ok_or_else(|| DecodeError::Record("malformed b64".into()))?;
            (Some(r), None)
        }
        RecordRef::Exit(x) => (None, Some(ExitInfo::from(x))),
    };
    Ok(Decoded::Record {
        execution_id: exec.to_owned(),
        cloud_execution: entry.cloud_execution(),
        record,
        exit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runvoy_domain::Stream;

    const EXEC: &str = "0123456789abcdef0123456789abcdef";

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A runner line as a sink delivers it: Cloud Logging lifted `time` into `timestamp`.
    fn stdout_entry(payload: Value) -> Value {
        serde_json::json!({
            "insertId": "6787d8b6000aef76df59bb52",
            "jsonPayload": payload,
            "resource": {"type": "cloud_run_job", "labels": {
                "job_name": "runvoy-runner", "location": "us-central1", "project_id": "p"}},
            "timestamp": "2026-01-15T15:48:06.716662Z",
            "labels": {
                "instanceId": "00ca3695d2",
                "run.googleapis.com/execution_name": "runvoy-runner-abcde",
                "run.googleapis.com/task_index": "0",
                "run.googleapis.com/task_attempt": "0"
            },
            "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
            "receiveTimestamp": "2026-01-15T15:48:06.721909169Z"
        })
    }

    #[test]
    fn envelope_reads_both_spellings_and_base64_data() {
        let entry = stdout_entry(serde_json::json!({"runvoy": "log"}));
        let body = serde_json::json!({
            "message": {
                "attributes": {"logging.googleapis.com/timestamp": "2026-01-15T15:48:06.716662Z"},
                "data": b64(&entry),
                "messageId": "13425934127193571",
                "message_id": "13425934127193571",
                "publishTime": "2026-01-15T15:48:07.012Z",
                "publish_time": "2026-01-15T15:48:07.012Z"
            },
            "subscription": "projects/p/subscriptions/runvoy-logs-push",
            "deliveryAttempt": 1
        });
        let env = parse_envelope(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(env.message.message_id(), Some("13425934127193571"));
        assert_eq!(
            env.message.publish_time_ms(),
            parse_rfc3339("2026-01-15T15:48:07.012Z")
        );
        assert_eq!(env.delivery_attempt, Some(1));
        assert_eq!(
            env.subscription.as_deref(),
            Some("projects/p/subscriptions/runvoy-logs-push")
        );
        assert_eq!(
            env.message.attributes["logging.googleapis.com/timestamp"],
            "2026-01-15T15:48:06.716662Z"
        );
        assert_eq!(
            env.message.data_bytes().unwrap(),
            serde_json::to_vec(&entry).unwrap()
        );

        // The old form: snake case only, no attributes, no deliveryAttempt.
        let old = br#"{"message":{"data":"SGVsbG8=","message_id":"136969346945"},"subscription":"projects/myproject/subscriptions/mysubscription"}"#;
        let env = parse_envelope(old).unwrap();
        assert_eq!(env.message.message_id(), Some("136969346945"));
        assert_eq!(env.delivery_attempt, None);
        assert_eq!(env.message.data_bytes().unwrap(), b"Hello");
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"subscription":"s"}"#,
            br#"{"message":{"data":"SGVsbG8="}}"#,
            br#"{"message":"x"}"#,
        ] {
            assert!(
                matches!(parse_envelope(bad), Err(DecodeError::Envelope(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let env = parse_envelope(br#"{"message":{"data":"%%%","messageId":"1"}}"#).unwrap();
        assert!(matches!(
            env.message.data_bytes(),
            Err(DecodeError::Data(_))
        ));
        let env = parse_envelope(br#"{"message":{"messageId":"1"}}"#).unwrap();
        assert!(matches!(
            env.message.data_bytes(),
            Err(DecodeError::Data(_))
        ));
    }

    #[test]
    fn a_runner_log_line_becomes_a_record_with_the_entry_time() {
        let e = stdout_entry(serde_json::json!({
            "runvoy": "log", "exec": EXEC, "seq": 42, "stream": "stderr", "message": "hello"
        }));
        let d = decode_entry(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(
            d,
            Decoded::Record {
                execution_id: EXEC.into(),
                cloud_execution: Some("runvoy-runner-abcde".into()),
                record: Some(LogRecord {
                    seq: 42,
                    stream: Stream::Stderr,
                    ts_ms: parse_rfc3339("2026-01-15T15:48:06.716662Z").unwrap(),
                    data: b"hello".to_vec(),
                    eol: true,
                }),
                exit: None,
            }
        );
    }

    #[test]
    fn struct_doubles_binary_chunks_and_a_kept_time_are_read() {
        // Numbers as a Struct renders them (42.0), exact bytes in b64, eol false, and `time`
        // kept in the payload (when Logging did not lift it).
        let e = stdout_entry(serde_json::json!({
            "runvoy": "log", "exec": EXEC, "seq": 7.0, "stream": "stdout",
            "time": "2026-01-15T15:48:00Z", "message": "\u{fffd}", "b64": "/w==", "eol": false
        }));
        match decode_entry(&serde_json::to_vec(&e).unwrap()).unwrap() {
            Decoded::Record {
                record: Some(r), ..
            } => {
                assert_eq!(r.seq, 7);
                assert_eq!(r.data, vec![0xff]);
                assert!(!r.eol);
                assert_eq!(r.ts_ms, parse_rfc3339("2026-01-15T15:48:00Z").unwrap());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_final_record_becomes_exit_info() {
        let e = stdout_entry(serde_json::json!({
            "runvoy": "exit", "exec": EXEC, "seq": 3, "exit_code": 2.0, "lines": 2,
            "dropped_lines": 5, "dropped_bytes": 40
        }));
        match decode_entry(&serde_json::to_vec(&e).unwrap()).unwrap() {
            Decoded::Record {
                execution_id,
                record: None,
                exit: Some(x),
                ..
            } => {
                assert_eq!(execution_id, EXEC);
                assert_eq!((x.exit_code, x.lines, x.dropped_lines), (2, 2, 5));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_records_are_refused() {
        for payload in [
            serde_json::json!({"runvoy": "log", "exec": "nope", "seq": 1, "stream": "stdout", "message": "x"}),
            serde_json::json!({"runvoy": "log", "exec": EXEC, "seq": 1, "message": "x"}),
            serde_json::json!({"runvoy": "log", "exec": EXEC, "seq": 0, "stream": "stdout", "message": "x"}),
            serde_json::json!({"runvoy": "log", "exec": EXEC, "seq": 1.5, "stream": "stdout", "message": "x"}),
            serde_json::json!({"runvoy": "log", "exec": EXEC, "seq": 1, "stream": "stdout", "message": "x", "b64": "%%"}),
            serde_json::json!({"runvoy": "exit", "exec": EXEC, "seq": 1}),
            serde_json::json!({"runvoy": "nope", "exec": EXEC, "seq": 1}),
        ] {
            let e = stdout_entry(payload.clone());
            assert!(
                matches!(
                    decode_entry(&serde_json::to_vec(&e).unwrap()),
                    Err(DecodeError::Record(_))
                ),
                "{payload}"
            );
        }
        assert!(matches!(decode_entry(b"[1]"), Err(DecodeError::Data(_))));
        // A plain stdout line (not a record) is not something runvoy consumes.
        let mut e = stdout_entry(Value::Null);
        e.as_object_mut().unwrap().remove("jsonPayload");
        e["textPayload"] = "git version 2.47.0".into();
        assert!(matches!(
            decode_entry(&serde_json::to_vec(&e).unwrap()),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn system_entries_are_hints_about_the_cloud_run_execution() {
        let sys = serde_json::json!({
            "textPayload": "Container called exit(3).",
            "insertId": "6787d8b6000b161a0fd98a18",
            "resource": {"type": "cloud_run_job", "labels": {"location": "us-east4", "project_id": "p", "job_name": "runvoy-runner"}},
            "timestamp": "2025-01-15T15:48:06.726482Z",
            "severity": "INFO",
            "labels": {
                "run.googleapis.com/execution_name": "runvoy-runner-rmxlb",
                "run.googleapis.com/task_index": "0",
                "container_name": "worker",
                "run.googleapis.com/task_attempt": "0",
                "instanceId": "00ca3695d2"
            },
            "logName": "projects/p/logs/run.googleapis.com%2Fvarlog%2Fsystem",
            "receiveTimestamp": "2025-01-15T15:48:06.728994333Z"
        });
        assert_eq!(
            decode_entry(&serde_json::to_vec(&sys).unwrap()).unwrap(),
            Decoded::Hint {
                cloud_execution: "runvoy-runner-rmxlb".into(),
                what: "container called exit(3)".into()
            }
        );
        assert_eq!(container_exit_code("Container called exit(0)."), Some(0));
        assert_eq!(container_exit_code("Starting Task #0"), None);

        // The audit record names the execution in its resource name (no entry label).
        let audit = serde_json::json!({
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Fsystem_event",
            "resource": {"type": "cloud_run_job", "labels": {"job_name": "runvoy-runner", "location": "us-central1", "project_id": "p"}},
            "severity": "ERROR",
            "timestamp": "2026-01-15T15:50:00.000000Z",
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "serviceName": "run.googleapis.com",
                "methodName": "/Jobs.RunJob",
                "resourceName": "namespaces/p/executions/runvoy-runner-abcde",
                "status": {"code": 10},
                "response": {"status": {"conditions": [{"type": "Completed", "status": "False"}]}}
            }
        });
        assert_eq!(
            decode_entry(&serde_json::to_vec(&audit).unwrap()).unwrap(),
            Decoded::Hint {
                cloud_execution: "runvoy-runner-abcde".into(),
                what: "audit /Jobs.RunJob".into()
            }
        );
        // One that names no execution cannot be used.
        let mut none = audit.clone();
        none["protoPayload"]["resourceName"] = "namespaces/p/jobs/runvoy-runner".into();
        assert!(matches!(
            decode_entry(&serde_json::to_vec(&none).unwrap()),
            Err(DecodeError::Unsupported(_))
        ));
        assert_eq!(
            execution_of_resource(
                "projects/p/locations/l/jobs/j/executions/j-abcde/tasks/j-abcde-task0"
            ),
            Some("j-abcde".into())
        );
    }
}
