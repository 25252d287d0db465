//! Following one execution: start its runner once the sidecar succeeded, then turn the
//! runner's stdout into [`Event::Records`] on the bus, like the local record-file tailer.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptionsBuilder, WaitContainerOptionsBuilder};
use futures_util::StreamExt;
use runvoy_compute_local::{Bus, parse_records};
use runvoy_domain::Event;

use crate::compute::{exited, is_status};

/// Most bytes of records per event, so one burst does not become one huge transaction.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

pub(crate) struct Follower {
    pub docker: Docker,
    pub bus: Bus,
    pub id: String,
    pub sidecar: String,
    pub runner: String,
}

enum Step {
    /// The execution is over (or has nothing left to follow).
    Done,
    /// The engine failed us: try again.
    Retry(String),
}

impl Follower {
    pub(crate) async fn run(self, mut after_seq: u64) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.follow(&mut after_seq).await {
                Step::Done => break,
                Step::Retry(why) => {
                    tracing::warn!(execution_id = %self.id, error = %why,
                        "following the runner failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.changed().await;
    }

    async fn changed(&self) {
        self.bus
            .publish(Event::ComputeChanged {
                execution_id: self.id.clone(),
            })
            .await;
    }

    async fn follow(&self, after_seq: &mut u64) -> Step {
        // Wait for the sidecar to end.
        let sidecar = match self.docker.inspect_container(&self.sidecar, None).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Step::Done,
            Err(e) => return Step::Retry(e.to_string()),
        };
        let code = match exited(&sidecar) {
            Some(c) => c,
            None => {
                let opts = WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build();
                let mut w = self.docker.wait_container(&self.sidecar, Some(opts));
                match w.next().await {
                    Some(Ok(r)) => r.status_code,
                    Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code, ..
                    })) => code,
                    Some(Err(e)) => return Step::Retry(e.to_string()),
                    None => return Step::Retry("the wait ended without a result".into()),
                }
            }
        };
        if code != 0 {
            return Step::Done;
        }
        let runner = match self.docker.inspect_container(&self.runner, None).await {
            Ok(c) => c,
            // Removed by a kill before it started.
            Err(e) if is_status(&e, 404) => return Step::Done,
            Err(e) => return Step::Retry(e.to_string()),
        };
        let never_started = runner
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .is_none_or(|t| t.starts_with("0001-"));
        if never_started && exited(&runner).is_none() {
            match self.docker.start_container(&self.runner, None).await {
                Ok(()) => {}
                Err(e) if is_status(&e, 304) => {}
                Err(e) if is_status(&e, 404) => return Step::Done,
                Err(e) => {
                    // An image that cannot run (no such entrypoint, bad user): the runner
                    // container stays created-but-failed; the reconciler reads that.
                    tracing::warn!(execution_id = %self.id, error = %e, "starting the runner failed");
                    return Step::Done;
                }
            }
        }
        self.changed().await;
        // The whole stdout from the start (the engine keeps it all): records up to
        // `after_seq` are dropped by the parser, so a resume never duplicates.
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(&self.runner, Some(opts));
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let item = tokio::time::timeout(Duration::from_millis(50), logs.next())
                .await
                .ok();
            let ended = match item {
                Some(Some(Ok(LogOutput::StdOut { message }))) => {
                    pending.extend_from_slice(&message);
                    if pending.len() < MAX_BATCH_BYTES {
                        continue;
                    }
                    false
                }
                Some(Some(Ok(LogOutput::StdErr { message }))) => {
                    tracing::debug!(execution_id = %self.id,
                        runner = %String::from_utf8_lossy(&message).trim_end(), "runner stderr");
                    continue;
                }
                Some(Some(Ok(_))) => continue,
                Some(Some(Err(e))) => {
                    self.flush(&mut pending, after_seq).await;
                    return Step::Retry(e.to_string());
                }
                Some(None) => true,
                // Nothing for a moment: hand over what arrived.
                None => false,
            };
            self.flush(&mut pending, after_seq).await;
            if ended {
                return match self.docker.inspect_container(&self.runner, None).await {
                    Ok(c) if exited(&c).is_some() => Step::Done,
                    Err(e) if is_status(&e, 404) => Step::Done,
                    // The stream ended but the container runs: the engine restarted or the
                    // connection broke.
                    _ => Step::Retry("the log stream ended while the runner runs".into()),
                };
            }
        }
    }

    /// Publishes the complete lines in `pending`.
    async fn flush(&self, pending: &mut Vec<u8>, after_seq: &mut u64) {
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let mut records = Vec::new();
        let exit = parse_records(&pending[..=end], *after_seq, &mut records);
        pending.drain(..=end);
        if let Some(max) = records.iter().map(|r| r.seq).max() {
            *after_seq = (*after_seq).max(max);
        }
        if !records.is_empty() || exit.is_some() {
            self.bus
                .publish(Event::Records {
                    execution_id: self.id.clone(),
                    records,
                    exit,
                })
                .await;
        }
    }
}
