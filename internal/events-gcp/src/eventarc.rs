//! Eventarc CloudEvents in HTTP binary mode: the attributes are `ce-*` headers, the body is the
//! event data (CloudEvents 1.0 HTTP protocol binding).
//!
//! Two types are understood:
//! * `google.cloud.audit.log.v1.written`: the body is a `LogEntryData` (a LogEntry with an
//!   AuditLog `protoPayload`); it names a Cloud Run execution and becomes a state hint.
//! * `google.cloud.pubsub.topic.v1.messagePublished`: the body is `MessagePublishedData`, the same
//!   `{message, subscription}` shape as a wrapped push, and goes through the same decoding as the
//!   log subscription (records are stored, system entries are hints).

use axum::http::HeaderMap;

use crate::decode::{DecodeError, Decoded, LogEntry, PushEnvelope, classify};

/// Audit log entry written.
pub const AUDIT_WRITTEN: &str = "google.cloud.audit.log.v1.written";
/// Pub/Sub message published.
pub const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

/// The CloudEvent context attributes of a binary-mode request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// `ce-id`: unique per source; the idempotency key.
    pub id: String,
    /// `ce-source`.
    pub source: String,
    /// `ce-type`.
    pub kind: String,
    /// `ce-subject`, when set.
    pub subject: Option<String>,
    /// `ce-time`, when set.
    pub time: Option<String>,
}

/// Why a CloudEvent can never be processed (a 400: dead-lettered, not retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required attribute is missing or the spec version is not 1.0.
    #[error("not a CloudEvents 1.0 binary-mode request: {0}")]
    Context(String),
    /// A type this endpoint does not handle.
    #[error("unsupported event type {0:?}")]
    Type(String),
    /// The data does not decode.
    #[error(transparent)]
    Data(#[from] DecodeError),
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Reads the context attributes from the `ce-*` headers.
pub fn context(h: &HeaderMap) -> Result<CloudEvent, EventError> {
    let need = |n: &str| header(h, n).ok_or_else(|| EventError::Context(format!("no {n} header")));
    let spec = need("ce-specversion")?;
    if spec != "1.0" {
        return Err(EventError::Context(format!("ce-specversion {spec:?}")));
    }
    Ok(CloudEvent {
        id: need("ce-id")?,
        source: need("ce-source")?,
        kind: need("ce-type")?,
        subject: header(h, "ce-subject"),
        time: header(h, "ce-time"),
    })
}

/// What the event's data says.
#[derive(Debug)]
pub enum EventData {
    /// An audit entry about a Cloud Run execution.
    Audit(Decoded),
    /// A Pub/Sub message, decoded like a push delivery.
    Message(Box<PushEnvelope>),
}

/// Decodes the body for the event's type.
pub fn data(ev: &CloudEvent, body: &[u8]) -> Result<EventData, EventError> {
    match ev.kind.as_str() {
        AUDIT_WRITTEN => {
            let entry: LogEntry = serde_json::from_slice(body)
                .map_err(|e| DecodeError::Data(format!("LogEntryData: {e}")))?;
            Ok(EventData::Audit(classify(&entry)?))
        }
        MESSAGE_PUBLISHED => {
            let env: PushEnvelope = serde_json::from_slice(body)
                .map_err(|e| DecodeError::Envelope(format!("MessagePublishedData: {e}")))?;
            Ok(EventData::Message(Box::new(env)))
        }
        other => Err(EventError::Type(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn audit_headers() -> HeaderMap {
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", AUDIT_WRITTEN),
            (
                "ce-source",
                "//cloudaudit.googleapis.com/projects/p/logs/data_access",
            ),
            (
                "ce-id",
                "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access1234",
            ),
            ("ce-time", "2026-01-15T15:47:59.123456Z"),
            (
                "ce-subject",
                "run.googleapis.com/projects/p/locations/us-central1/jobs/runvoy-runner",
            ),
            ("ce-methodname", "google.cloud.run.v2.Jobs.RunJob"),
        ])
    }

    #[test]
    fn binary_mode_context_is_read_and_checked() {
        let ev = context(&audit_headers()).unwrap();
        assert_eq!(ev.kind, AUDIT_WRITTEN);
        assert_eq!(
            ev.id,
            "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access1234"
        );
        assert_eq!(ev.time.as_deref(), Some("2026-01-15T15:47:59.123456Z"));
        assert!(ev.subject.unwrap().ends_with("/jobs/runvoy-runner"));
        for missing in ["ce-id", "ce-source", "ce-type", "ce-specversion"] {
            let mut h = audit_headers();
            h.remove(missing);
            assert!(
                matches!(context(&h), Err(EventError::Context(_))),
                "{missing}"
            );
        }
        let mut h = audit_headers();
        h.insert("ce-specversion", HeaderValue::from_static("0.3"));
        assert!(matches!(context(&h), Err(EventError::Context(_))));
    }

    #[test]
    fn a_run_job_audit_entry_is_a_hint_for_its_execution() {
        let ev = context(&audit_headers()).unwrap();
        let body = serde_json::json!({
            "insertId": "9frck8cf9j",
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access",
            "protoPayload": {
                "methodName": "google.cloud.run.v2.Jobs.RunJob",
                "resourceName": "projects/p/locations/us-central1/jobs/runvoy-runner",
                "serviceName": "run.googleapis.com",
                "response": {"metadata": {"name": "projects/p/locations/us-central1/jobs/runvoy-runner/executions/runvoy-runner-abcde"}}
            },
            "resource": {"type": "cloud_run_job", "labels": {"job_name": "runvoy-runner", "location": "us-central1", "project_id": "p"}},
            "severity": "INFO",
            "timestamp": "2026-01-15T15:47:59.100000Z"
        });
        match data(&ev, &serde_json::to_vec(&body).unwrap()).unwrap() {
            EventData::Audit(Decoded::Hint {
                cloud_execution, ..
            }) => assert_eq!(cloud_execution, "runvoy-runner-abcde"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(data(&ev, b"{"), Err(EventError::Data(_))));
    }

    #[test]
    fn message_published_carries_the_push_envelope_and_unknown_types_are_refused() {
        let mut h = audit_headers();
        h.insert("ce-type", HeaderValue::from_static(MESSAGE_PUBLISHED));
        let ev = context(&h).unwrap();
        let body = br#"{"subscription":"projects/p/subscriptions/eventarc-us-central1-t-sub-1","message":{"data":"e30=","messageId":"1342","publishTime":"2026-01-15T15:48:07.012Z","@type":"type.googleapis.com/google.pubsub.v1.PubsubMessage"}}"#;
        match data(&ev, body).unwrap() {
            EventData::Message(env) => assert_eq!(env.message.message_id(), Some("1342")),
            other => panic!("{other:?}"),
        }
        h.insert(
            "ce-type",
            HeaderValue::from_static("google.cloud.storage.object.v1.finalized"),
        );
        let ev = context(&h).unwrap();
        assert!(matches!(data(&ev, b"{}"), Err(EventError::Type(_))));
    }
}
