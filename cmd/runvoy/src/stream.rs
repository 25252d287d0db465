//! Following an execution's logs to the terminal, shared by `run` and `logs -f`.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::FutureExt;
use runvoy_client::proto::Status;
use runvoy_client::proto::ws::{Disconnect, Frame};
use runvoy_client::{Client, KillOutcome, LogFollower, StreamEvent};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::ui::{LogSink, Ui};
use crate::util::{EXIT_INTERRUPTED, EXIT_RUNVOY_ERROR, exit_code_for, format_secs};

/// How long after the first Ctrl-C a second one kills the execution.
const SECOND_INTERRUPT_WINDOW: Duration = Duration::from_secs(2);

/// Frames written between two flushes at most, so a fast producer still reaches the terminal
/// (and Ctrl-C is noticed) in bounded time.
const MAX_UNFLUSHED_FRAMES: usize = 512;

/// Installs the SIGINT handler; call before the execution starts so an early Ctrl-C is seen.
pub fn interrupts() -> anyhow::Result<Signal> {
    signal(SignalKind::interrupt()).context("cannot install the Ctrl-C handler")
}

/// Streams the logs until the disconnect frame and returns the local exit code.
pub async fn follow(
    client: &Client,
    follower: LogFollower,
    ui: Ui,
    mut sigint: Signal,
    mut spinner: Option<indicatif::ProgressBar>,
    kill_on_second_interrupt: bool,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let id = follower.execution_id().to_string();
    let mut follower = follower.on_connection_change(move |ev| match ev {
        StreamEvent::Lost(why) => ui.info(&format!("connection lost ({why}), reconnecting…")),
        StreamEvent::Resumed => ui.info("connection restored, resuming the log stream"),
    });
    let mut sink = LogSink::new(!ui.quiet);
    let mut unflushed = 0usize;
    loop {
        // Take frames that are already waiting without blocking; block (and flush) only when
        // none is, so a burst is written in one go and a trickle is shown immediately.
        let ready = if unflushed < MAX_UNFLUSHED_FRAMES {
            follower.next().now_or_never()
        } else {
            None
        };
        let res = match ready {
            Some(r) => r,
            None => {
                sink.flush().context("cannot write output")?;
                unflushed = 0;
                tokio::select! {
                    biased;
                    _ = sigint.recv() => {
                        if let Some(pb) = spinner.take() {
                            pb.finish_and_clear();
                        }
                        if !kill_on_second_interrupt {
                            ui.notice(&format!(
                                "stopped following; the execution keeps running.\n  reattach: runvoy logs -f {id}"
                            ));
                            return Ok(EXIT_INTERRUPTED);
                        }
                        return interrupted(client, &id, ui, &mut sigint).await;
                    }
                    r = follower.next() => r,
                }
            }
        };
        let frame = res.with_context(|| {
            format!(
                "lost the log stream after record {} (reattach with `runvoy logs -f {id}`)",
                follower.last_seq()
            )
        })?;
        if let Some(pb) = spinner.take() {
            pb.finish_and_clear();
        }
        match frame {
            Some(Frame::Log(ev)) => {
                sink.write(&ev).context("cannot write output")?;
                unflushed += 1;
            }
            Some(Frame::Disconnect(mut d)) => {
                sink.flush().context("cannot write output")?;
                let mut reason = None;
                if d.exit_code.is_none() {
                    // The frame may predate the stored exit code; the record also says why an
                    // execution failed without one.
                    if let Ok(e) = client.get_execution(&id).await {
                        d.exit_code = e.exit_code;
                        d.timed_out |= e.timed_out;
                        reason = e.failure_reason;
                    }
                }
                report_end(ui, &id, &d, reason.as_deref(), started.elapsed());
                return Ok(exit_code_for(d.status, d.exit_code, d.timed_out));
            }
            None => anyhow::bail!("the log stream ended without a final status"),
        }
    }
}

fn report_end(ui: Ui, id: &str, d: &Disconnect, reason: Option<&str>, elapsed: Duration) {
    let took = format_secs(elapsed.as_secs_f64());
    let code = match (d.exit_code, reason) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(r)) => r.to_string(),
        (None, None) => "no exit code".into(),
    };
    if d.timed_out {
        ui.failure(&format!("execution {id} timed out ({code}) after {took}"));
        return;
    }
    match d.status {
        Status::Succeeded => ui.success(&format!("execution {id} succeeded ({code}) in {took}")),
        Status::Stopped => ui.failure(&format!("execution {id} was stopped ({code})")),
        s => ui.failure(&format!(
            "execution {id} {} ({code}) after {took}",
            s.as_str().to_lowercase()
        )),
    }
}

/// First Ctrl-C: detach and explain; a second one within the window kills the execution.
async fn interrupted(
    client: &Client,
    id: &str,
    ui: Ui,
    sigint: &mut Signal,
) -> anyhow::Result<i32> {
    ui.notice(&format!(
        "stopped following; the execution keeps running.\n  reattach: runvoy logs -f {id}\n  kill:     runvoy kill {id}\n  press Ctrl-C again within {}s to kill it now",
        SECOND_INTERRUPT_WINDOW.as_secs()
    ));
    if tokio::time::timeout(SECOND_INTERRUPT_WINDOW, sigint.recv())
        .await
        .is_err()
    {
        return Ok(EXIT_INTERRUPTED);
    }
    match client.kill(id).await {
        Ok(KillOutcome::Started(_)) => {
            ui.notice(&format!("kill requested for execution {id}"));
            Ok(EXIT_INTERRUPTED)
        }
        Ok(KillOutcome::AlreadyTerminal(_)) => {
            ui.notice(&format!("execution {id} had already finished"));
            Ok(EXIT_INTERRUPTED)
        }
        Err(e) => {
            ui.error(&format!("cannot kill execution {id}: {e}"), e.code());
            Ok(EXIT_RUNVOY_ERROR)
        }
    }
}
