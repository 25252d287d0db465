//! Tailing one execution's record file and publishing its records and state changes on the bus.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runvoy_domain::Event;
use tokio::sync::Notify;

use crate::bus::Bus;
use crate::compute::{Liveness, supervisor_liveness};
use crate::records::parse_records;
use crate::watch::DirWatcher;

/// Most records per event, so one huge burst does not become one huge transaction.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Fallback re-check interval when no file event arrives.
const POLL: Duration = Duration::from_millis(250);
/// While no output arrives, whether the supervisor is still alive is checked every this many
/// waits (about a second).
const LIVENESS_EVERY_POLLS: u32 = 4;

pub(crate) async fn tail(
    id: String,
    dir: PathBuf,
    after_seq: u64,
    bus: Bus,
    watcher: Arc<DirWatcher>,
) {
    let notify = Arc::new(Notify::new());
    let _guard = watcher.watch(&dir, notify.clone());
    let path = dir.join("records.jsonl");
    let mut offset = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    let mut told_running = false;
    let mut idle_polls = 0u32;
    loop {
        // Check for the end first: everything the runner wrote is in the file once exit.json
        // exists, or once the supervisor is gone without writing it (SIGKILLed: bubblewrap's
        // --die-with-parent takes the runner with it). Without the second check, an execution
        // whose supervisor was killed would wait for the next scheduled sweep.
        let ended = dir.join("exit.json").exists()
            || (idle_polls >= LIVENESS_EVERY_POLLS && supervisor_liveness(&dir) == Liveness::Gone);
        if idle_polls >= LIVENESS_EVERY_POLLS {
            idle_polls = 0;
        }
        let (chunk, new_offset) = match read_from(&path, offset, MAX_BATCH_BYTES).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(execution_id = %id, error = %e, "record file unreadable");
                (Vec::new(), offset)
            }
        };
        let got_data = !chunk.is_empty();
        offset = new_offset;
        pending.extend_from_slice(&chunk);
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
            let mut records = Vec::new();
            let exit = parse_records(&pending[..=end], after_seq, &mut records);
            pending.drain(..=end);
            if !records.is_empty() || exit.is_some() {
                bus.publish(Event::Records {
                    execution_id: id.clone(),
                    records,
                    exit,
                })
                .await;
            }
        }
        if !told_running && (dir.join("running").exists() || got_data) {
            told_running = true;
            bus.publish(Event::ComputeChanged {
                execution_id: id.clone(),
            })
            .await;
        }
        if got_data {
            idle_polls = 0;
            continue; // more may be waiting; drain before sleeping
        }
        if ended {
            bus.publish(Event::ComputeChanged {
                execution_id: id.clone(),
            })
            .await;
            return;
        }
        idle_polls += 1;
        let _ = tokio::time::timeout(POLL, notify.notified()).await;
    }
}

async fn read_from(
    path: &std::path::Path,
    offset: u64,
    max: usize,
) -> std::io::Result<(Vec<u8>, u64)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max as u64).read_to_end(&mut buf)?;
        let n = buf.len() as u64;
        Ok((buf, offset + n))
    })
    .await
    .map_err(std::io::Error::other)?
}
