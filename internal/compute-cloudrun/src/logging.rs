//! [`CloudLoggingSource`]: the `LogSource` port on Cloud Logging, which holds every line a Cloud
//! Run job's runner wrote. The processor reads it to fill gaps the push path left (a message
//! dead-lettered, an instance that died before acknowledging).
//!
//! One `entries.list` query per read (`POST https://logging.googleapis.com/v2/entries:list`),
//! following `nextPageToken`: the runner's stdout log of the project, `jsonPayload.exec` the
//! execution, `jsonPayload.seq` above what the store already has. Entries are decoded by the
//! same decoder as pushed ones, so a record reads the same whichever way it came.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use runvoy_domain::ports::{ComputeError, LogSource};
use runvoy_domain::{ExitInfo, LogRecord, valid_execution_id};
use runvoy_events_gcp::decode::{Decoded, decode_entry};
use serde_json::{Value, json};

use crate::api::Api;
use crate::auth::TokenProvider;
use crate::config::CloudRunConfig;

/// Most entries one `entries.list` page holds (the API's maximum).
const PAGE_SIZE: u64 = 1000;
/// Most pages one read follows; a longer backlog is read by the next reconcile, from where
/// this one stopped.
const MAX_PAGES: usize = 100;

/// Cloud Logging as a log source.
pub struct CloudLoggingSource {
    api: Api,
    project: String,
}

impl CloudLoggingSource {
    /// A source reading `cfg.project`'s logs at `base_url` (`https://logging.googleapis.com`).
    pub fn new(
        cfg: &CloudRunConfig,
        base_url: &str,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<CloudLoggingSource, ComputeError> {
        Ok(CloudLoggingSource {
            api: Api::with_base(cfg, base_url, tokens).map_err(ComputeError::Unavailable)?,
            project: cfg.project.clone(),
        })
    }

    /// The filter of one execution's records after `after_seq`.
    pub fn filter(&self, execution_id: &str, after_seq: u64) -> String {
        format!(
            "logName=\"projects/{}/logs/run.googleapis.com%2Fstdout\" AND \
             resource.type=\"cloud_run_job\" AND jsonPayload.exec=\"{execution_id}\" AND \
             jsonPayload.seq>{after_seq}",
            self.project
        )
    }
}

/// How long Cloud Logging may take to ingest a line after it was written: Google documents no
/// bound; entries usually arrive within seconds.
const INGESTION_LAG_MS: i64 = 60_000;

#[async_trait]
impl LogSource for CloudLoggingSource {
    fn settle_ms(&self) -> i64 {
        INGESTION_LAG_MS
    }

    async fn read_records(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Result<(Vec<LogRecord>, Option<ExitInfo>), ComputeError> {
        // The id goes into a filter: only the id alphabet, never a quote.
        if !valid_execution_id(execution_id) {
            return Err(ComputeError::Rejected(format!(
                "invalid execution id {execution_id:?}"
            )));
        }
        let mut body = json!({
            "resourceNames": [format!("projects/{}", self.project)],
            "filter": self.filter(execution_id, after_seq),
            "orderBy": "timestamp asc",
            "pageSize": PAGE_SIZE,
        });
        let mut records = BTreeMap::new();
        let mut exit = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .api
                .call(Method::POST, "entries:list", Some(&body))
                .await
                .map_err(|e| {
                    ComputeError::Unavailable(format!("reading logs from Cloud Logging: {e}"))
                })?;
            for entry in page["entries"].as_array().into_iter().flatten() {
                let raw = serde_json::to_vec(entry).unwrap_or_default();
                // Lines the command forged on the runner's stdout, or entries of another
                // shape, are not this execution's records.
                match decode_entry(&raw) {
                    Ok(Decoded::Record {
                        execution_id: id,
                        record,
                        exit: x,
                        ..
                    }) if id == execution_id => {
                        if let Some(r) = record.filter(|r| r.seq > after_seq) {
                            records.insert(r.seq, r);
                        }
                        if x.is_some() {
                            exit = x;
                        }
                    }
                    _ => {}
                }
            }
            match page["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => body["pageToken"] = Value::String(t.to_owned()),
                None => break,
            }
        }
        Ok((records.into_values().collect(), exit))
    }
}
