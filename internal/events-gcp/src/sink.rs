//! What a Cloud Logging sink does with a Cloud Run job's stdout, for one machine: turns runner
//! records into the LogEntries Cloud Logging would make of them and publishes them to a Pub/Sub
//! topic of Google's Pub/Sub emulator, whose push subscription then posts them to
//! `/push/pubsub/logs`. It lets `--events pubsub` run end to end without Google Cloud.
//!
//! Entry shape (see [`crate::decode`]): `jsonPayload` is the record without `time`, which becomes
//! the entry's `timestamp`; resource `cloud_run_job`; entry label
//! `run.googleapis.com/execution_name` `local-<execution id>`; log `run.googleapis.com%2Fstdout`;
//! one message per entry with the attribute `logging.googleapis.com/timestamp`.

use std::time::Duration;

use base64::Engine;
use runvoy_domain::clock::rfc3339;
use runvoy_domain::{ExitInfo, LogRecord};
use runvoy_proto::record::{ExitRecordWire, LogRecordWire, RunnerRecord};
use serde_json::{Value, json};

/// The Cloud Run execution name given to a local execution.
pub fn local_execution_name(execution_id: &str) -> String {
    format!("local-{execution_id}")
}

/// Where an entry comes from: the `cloud_run_job` resource and the execution's labels.
#[derive(Debug, Clone)]
pub struct EntrySource {
    /// Project id.
    pub project: String,
    /// Region (`location` label).
    pub location: String,
    /// Job name (short).
    pub job: String,
    /// Execution name (short), the `run.googleapis.com/execution_name` label.
    pub execution: String,
}

impl EntrySource {
    /// A local execution published by `--gcp-local-sink-topic`.
    pub fn local(project: &str, execution_id: &str) -> EntrySource {
        EntrySource {
            project: project.to_owned(),
            location: "local".into(),
            job: "runvoy-local".into(),
            execution: local_execution_name(execution_id),
        }
    }

    fn entry(&self, log: &str, insert_id: String, timestamp: &str, receive_ms: i64) -> Value {
        json!({
            "insertId": insert_id,
            "resource": {"type": "cloud_run_job", "labels": {
                "job_name": self.job, "location": self.location, "project_id": self.project}},
            "timestamp": timestamp,
            "receiveTimestamp": rfc3339(receive_ms),
            "labels": {
                "instanceId": "local",
                "run.googleapis.com/execution_name": self.execution,
                "run.googleapis.com/task_index": "0",
                "run.googleapis.com/task_attempt": "0"
            },
            "logName": format!("projects/{}/logs/{log}", self.project)
        })
    }
}

/// The LogEntry Cloud Logging makes of one runner record line.
pub fn log_entry(project: &str, execution_id: &str, rec: &RunnerRecord, receive_ms: i64) -> Value {
    record_entry(
        &EntrySource::local(project, execution_id),
        execution_id,
        rec,
        receive_ms,
    )
}

/// The LogEntry Cloud Logging makes of one runner record line of `src`'s execution.
pub fn record_entry(
    src: &EntrySource,
    execution_id: &str,
    rec: &RunnerRecord,
    receive_ms: i64,
) -> Value {
    let (seq, time) = match rec {
        RunnerRecord::Log(l) => (l.seq, l.time.clone()),
        RunnerRecord::Exit(x) => (x.seq, x.time.clone()),
    };
    let mut payload = serde_json::to_value(rec).expect("record JSON");
    // Cloud Logging lifts `time` into the entry's timestamp.
    if let Some(o) = payload.as_object_mut() {
        o.remove("time");
    }
    let mut e = src.entry(
        "run.googleapis.com%2Fstdout",
        format!("{execution_id}-{seq:06}"),
        &time,
        receive_ms,
    );
    e["jsonPayload"] = payload;
    e
}

/// The `varlog/system` entry Cloud Run writes when a container of the execution exits
/// ("Container called exit(N).").
pub fn container_exit_entry(src: &EntrySource, container: &str, code: i32, now_ms: i64) -> Value {
    let mut e = src.entry(
        "run.googleapis.com%2Fvarlog%2Fsystem",
        format!("{}-{container}-exit", src.execution),
        &rfc3339(now_ms),
        now_ms,
    );
    e["textPayload"] = json!(format!("Container called exit({code})."));
    e["severity"] = json!(if code == 0 { "INFO" } else { "WARNING" });
    e["labels"]["container_name"] = json!(container);
    e
}

/// The `cloudaudit.googleapis.com%2Fsystem_event` audit record Cloud Run writes when an
/// execution's `Completed` condition changes (`/Jobs.RunJob`, v1 Knative-style names).
pub fn run_job_audit_entry(src: &EntrySource, exit_code: Option<i32>, now_ms: i64) -> Value {
    let failed = exit_code != Some(0);
    let message = match exit_code {
        Some(0) => "Execution completed successfully.".to_owned(),
        Some(c) => format!(
            "Task {}-task0 failed with exit code: {c} and message: The container exited with an error.",
            src.execution
        ),
        None => "The execution was cancelled.".to_owned(),
    };
    let mut e = src.entry(
        "cloudaudit.googleapis.com%2Fsystem_event",
        format!("{}-completed", src.execution),
        &rfc3339(now_ms),
        now_ms,
    );
    e["severity"] = json!(if failed { "ERROR" } else { "INFO" });
    e["protoPayload"] = json!({
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "run.googleapis.com",
        "methodName": "/Jobs.RunJob",
        "resourceName": format!("namespaces/{}/executions/{}", src.project, src.execution),
        "status": if failed { json!({"code": 10, "message": message}) } else { json!({}) },
        "response": {
            "metadata": {"name": src.execution},
            "status": {"conditions": [{
                "type": "Completed",
                "status": if failed { "False" } else { "True" },
                "message": message
            }]}
        }
    });
    e
}

/// The Pub/Sub message a sink publishes for an entry.
pub fn message(entry: &Value) -> Value {
    json!({
        "data": base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(entry).expect("entry JSON")),
        "attributes": {"logging.googleapis.com/timestamp": entry["timestamp"]}
    })
}

/// The runner records of a delivery, as the runner wrote them.
pub fn runner_records(
    execution_id: &str,
    records: &[LogRecord],
    exit: Option<&ExitInfo>,
    now_ms: i64,
) -> Vec<RunnerRecord> {
    let mut out: Vec<RunnerRecord> = records
        .iter()
        .map(|r| {
            let (message, b64) = match std::str::from_utf8(&r.data) {
                Ok(s) => (s.to_owned(), None),
                Err(_) => (
                    String::from_utf8_lossy(&r.data).into_owned(),
                    Some(runvoy_proto::b64_encode(&r.data)),
                ),
            };
            RunnerRecord::Log(LogRecordWire {
                exec: execution_id.to_owned(),
                seq: r.seq,
                stream: r.stream,
                time: rfc3339(r.ts_ms),
                message,
                b64,
                eol: r.eol,
            })
        })
        .collect();
    if let Some(x) = exit {
        out.push(RunnerRecord::Exit(ExitRecordWire {
            exec: execution_id.to_owned(),
            seq: x.lines + 1,
            time: rfc3339(now_ms),
            exit_code: x.exit_code,
            lines: x.lines,
            timed_out: x.timed_out,
            killed: x.killed,
            error: x.error.clone(),
            dropped_lines: x.dropped_lines,
            dropped_bytes: x.dropped_bytes,
            unwritten_lines: x.unwritten_lines,
            unwritten_bytes: x.unwritten_bytes,
            redactions: 0,
        }));
    }
    out
}

/// Publishes entries to a topic of the Pub/Sub emulator (REST, no credentials).
pub struct EmulatorSink {
    http: reqwest::Client,
    publish_url: String,
    project: String,
}

impl EmulatorSink {
    /// `host` as `PUBSUB_EMULATOR_HOST` names it; `topic` is `projects/P/topics/T`.
    pub fn new(host: &str, topic: &str) -> Result<Self, String> {
        let project = topic
            .strip_prefix("projects/")
            .and_then(|r| r.split_once("/topics/"))
            .filter(|(p, t)| !p.is_empty() && !t.is_empty() && !t.contains('/'))
            .map(|(p, _)| p.to_owned())
            .ok_or_else(|| format!("{topic:?} is not projects/PROJECT/topics/TOPIC"))?;
        Ok(EmulatorSink {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
            publish_url: format!("http://{host}/v1/{topic}:publish"),
            project,
        })
    }

    /// Publishes one local delivery's records, one message per record, retrying as
    /// [`publish_retrying`](Self::publish_retrying) does.
    pub async fn publish(
        &self,
        execution_id: &str,
        records: &[LogRecord],
        exit: Option<&ExitInfo>,
        now_ms: i64,
    ) -> Result<(), String> {
        let src = EntrySource::local(&self.project, execution_id);
        let entries: Vec<Value> = runner_records(execution_id, records, exit, now_ms)
            .iter()
            .map(|r| record_entry(&src, execution_id, r, now_ms))
            .collect();
        self.publish_retrying(&entries).await
    }

    /// [`publish_entries`](Self::publish_entries), retried with a growing delay (100 ms to
    /// 5 s, 10 attempts) while the emulator fails; the last error when it never succeeds.
    pub async fn publish_retrying(&self, entries: &[Value]) -> Result<(), String> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.publish_entries(entries).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 10 => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "could not publish log entries, retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    /// Publishes entries, one message each, in as few publish calls as Pub/Sub's limits allow
    /// (1,000 messages and 10 MB per request).
    pub async fn publish_entries(&self, entries: &[Value]) -> Result<usize, String> {
        const MAX_MESSAGES: usize = 1000;
        const MAX_BYTES: usize = 9 << 20;
        let mut batch: Vec<Value> = Vec::new();
        let mut bytes = 0;
        for e in entries {
            let m = message(e);
            let size = m["data"].as_str().map_or(0, str::len) + 100;
            if !batch.is_empty() && (batch.len() == MAX_MESSAGES || bytes + size > MAX_BYTES) {
                self.publish_batch(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(m);
        }
        if !batch.is_empty() {
            self.publish_batch(batch).await?;
        }
        Ok(entries.len())
    }

    async fn publish_batch(&self, msgs: Vec<Value>) -> Result<(), String> {
        let r = self
            .http
            .post(&self.publish_url)
            .json(&json!({ "messages": msgs }))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.publish_url))?;
        if !r.status().is_success() {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            return Err(format!("{}: HTTP {status}: {body}", self.publish_url));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, decode_entry};
    use runvoy_domain::Stream;

    #[test]
    fn cloud_runs_own_entries_decode_as_hints_about_the_execution() {
        let src = EntrySource {
            project: "p".into(),
            location: "l".into(),
            job: "runvoy-x".into(),
            execution: "runvoy-x-abcde".into(),
        };
        for e in [
            container_exit_entry(&src, "runner", 3, 1_768_492_086_716),
            run_job_audit_entry(&src, Some(3), 1_768_492_086_716),
            run_job_audit_entry(&src, None, 1_768_492_086_716),
        ] {
            match decode_entry(&serde_json::to_vec(&e).unwrap()) {
                Ok(Decoded::Hint {
                    cloud_execution, ..
                }) => assert_eq!(cloud_execution, "runvoy-x-abcde"),
                other => panic!("{e}: {other:?}"),
            }
        }
    }

    #[test]
    fn entries_decode_back_to_the_same_records() {
        let id = "0123456789abcdef0123456789abcdef";
        let recs = vec![
            LogRecord {
                seq: 1,
                stream: Stream::Stdout,
                ts_ms: 1_768_492_086_716,
                data: b"hello".to_vec(),
                eol: true,
            },
            LogRecord {
                seq: 2,
                stream: Stream::Stderr,
                ts_ms: 1_768_492_086_717,
                data: vec![0xff, b'x'],
                eol: false,
            },
        ];
        let exit = ExitInfo {
            exit_code: 3,
            lines: 2,
            timed_out: false,
            killed: false,
            error: None,
            dropped_lines: 0,
            dropped_bytes: 0,
            unwritten_lines: 0,
            unwritten_bytes: 0,
        };
        let mut got = Vec::new();
        let mut got_exit = None;
        for r in runner_records(id, &recs, Some(&exit), 1_768_492_090_000) {
            let e = log_entry("p", id, &r, 1_768_492_090_000);
            assert!(e["jsonPayload"].get("time").is_none());
            match decode_entry(&serde_json::to_vec(&e).unwrap()).unwrap() {
                Decoded::Record {
                    execution_id,
                    cloud_execution,
                    record,
                    exit,
                } => {
                    assert_eq!(execution_id, id);
                    assert_eq!(cloud_execution, Some(local_execution_name(id)));
                    got.extend(record);
                    got_exit = got_exit.or(exit);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, recs);
        assert_eq!(got_exit, Some(exit));
        assert!(EmulatorSink::new("h:1", "projects/p/topics/t").is_ok());
        assert!(EmulatorSink::new("h:1", "topics/t").is_err());
    }
}
