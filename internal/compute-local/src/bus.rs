//! The in-process event bus: the local transport between compute and the processor. On GCP the
//! same [`Event`]s arrive through HTTP push endpoints instead.

use std::sync::Arc;
use std::time::Duration;

use runvoy_domain::Event;
use runvoy_domain::processor::Processor;
use tokio::sync::mpsc;

/// Sending half of the bus. Bounded, so a slow processor applies back-pressure to the tailers
/// (the record files are the buffer), never to the running commands.
#[derive(Clone, Debug)]
pub struct Bus(mpsc::Sender<Event>);

impl Bus {
    /// A bus and its receiving end.
    pub fn new(capacity: usize) -> (Bus, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Bus(tx), rx)
    }

    /// Publishes an event; waits when the processor is behind.
    pub async fn publish(&self, ev: Event) {
        // The receiver only goes away at shutdown; the event is a hint and the reconciler
        // recovers anything lost then.
        let _ = self.0.send(ev).await;
    }
}

/// Delivers bus events to the processor until the bus closes. Records are handled in order;
/// state hints are reconciled concurrently so a slow reconcile never stalls log delivery.
///
/// When the store (or compute) is down, the failed step is retried in the background with a
/// growing delay, so an outage delays an execution's finalisation rather than leaving it for the
/// next scheduled sweep.
pub async fn pump(mut rx: mpsc::Receiver<Event>, processor: Arc<Processor>) {
    while let Some(ev) = rx.recv().await {
        let id = ev.execution_id().to_owned();
        match ev {
            Event::ComputeChanged { .. } => {
                let p = processor.clone();
                tokio::spawn(async move {
                    if let Err(e) = p.handle(ev).await {
                        tracing::warn!(execution_id = %id, error = %e, "reconcile after compute event failed; retrying");
                        retry_reconcile(p, id).await;
                    }
                });
            }
            ev => {
                if let Err(e) = processor.handle(ev).await {
                    tracing::warn!(execution_id = %id, error = %e, "storing records failed; they will be re-read from the record file");
                    // Reconciling re-reads the record file and fills the hole.
                    tokio::spawn(retry_reconcile(processor.clone(), id));
                }
            }
        }
    }
}

/// Reconciles `id` until it works, waiting 1 s, 2 s, 4 s … (at most 30 s) in between, for up
/// to about ten minutes; after that the scheduled sweep takes over.
async fn retry_reconcile(p: Arc<Processor>, id: String) {
    let mut delay = Duration::from_secs(1);
    for _ in 0..25 {
        tokio::time::sleep(delay).await;
        match p.reconcile(&id).await {
            Ok(_) => return,
            Err(e) => tracing::debug!(execution_id = %id, error = %e, "reconcile retry failed"),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::warn!(execution_id = %id, "reconcile kept failing; the scheduled sweep will retry");
}
