//! Reconciler tests on the in-memory adapters: each drift case, log repair, housekeeping, and
//! generated event sequences that must always converge to the truth.

use std::sync::Arc;

use proptest::prelude::*;
use runvoy_proto::Status;

use super::*;
use crate::clock::ManualClock;
use crate::event::Event;
use crate::hub::LogHub;
use crate::model::LogRecord;
use crate::ports::{ComputeExit, ComputeState, Store};
use crate::testing::{
    FakeCompute, FakeLogSource, MemStore, execution, exit_info, record, store_conformance,
};

const T0: i64 = 1_800_000_000_000;
const GRACE_SECS: u64 = 10;

struct Rig {
    store: Arc<MemStore>,
    compute: Arc<FakeCompute>,
    source: Arc<FakeLogSource>,
    clock: Arc<ManualClock>,
    p: Processor,
}

fn rig() -> Rig {
    let store = Arc::new(MemStore::new());
    let compute = Arc::new(FakeCompute::new());
    let source = Arc::new(FakeLogSource::new());
    let clock = Arc::new(ManualClock::new(T0));
    let p = Processor::new(
        store.clone(),
        compute.clone(),
        source.clone(),
        Arc::new(LogHub::new()),
        clock.clone(),
        GRACE_SECS,
    )
    .with_workspace_retention(Duration::from_secs(3600));
    Rig {
        store,
        compute,
        source,
        clock,
        p,
    }
}

fn id(n: u8) -> String {
    format!("{n:032x}")
}

fn records(n: u64) -> Vec<LogRecord> {
    (1..=n).map(record).collect()
}

fn exited(code: i32, lines: u64) -> ComputeState {
    ComputeState::Exited(ComputeExit {
        runner: Some(exit_info(code, lines)),
        process_exit_code: Some(code),
        failure: None,
    })
}

impl Rig {
    async fn create(&self, n: u8, status: Status) -> String {
        let mut e = execution(&id(n), self.clock.now_ms());
        e.status = status;
        self.store.create_execution(&e).await.unwrap();
        e.id
    }
    async fn get(&self, id: &str) -> Execution {
        self.store.get_execution(id).await.unwrap().unwrap()
    }
    async fn edit(&self, id: &str, f: impl FnOnce(&mut Execution)) {
        let mut e = self.get(id).await;
        f(&mut e);
        assert!(self.store.update_execution(&e).await.unwrap());
    }
}

#[tokio::test]
async fn a_lagging_source_is_given_time_before_logs_without_a_final_record_count_as_complete() {
    let r = rig();
    r.source.set_settle_ms(60_000);
    let x = r.create(1, Status::Running).await;
    // The task ended; the source has ingested only part of what the runner wrote.
    r.source.set(&x, records(3), None);
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: None,
            process_exit_code: Some(0),
            failure: None,
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert!(e.status.is_terminal());
    assert!(!e.logs_complete, "the source may still be ingesting: {e:?}");
    // The rest, and the final record, are ingested later: they complete the logs.
    r.clock.advance_ms(5_000);
    r.source.set(&x, records(5), Some(exit_info(0, 5)));
    r.p.sweep_young().await.unwrap();
    let e = r.get(&x).await;
    assert!(e.logs_complete);
    assert_eq!(e.log_lines, Some(5));
    // Without a final record at all, the logs complete once the lag has passed.
    let y = r.create(2, Status::Running).await;
    r.source.set(&y, records(2), None);
    r.compute.set(
        &y,
        ComputeState::Exited(ComputeExit {
            runner: None,
            process_exit_code: Some(1),
            failure: None,
        }),
    );
    r.p.reconcile(&y).await.unwrap();
    assert!(!r.get(&y).await.logs_complete);
    r.clock.advance_ms(60_000);
    r.p.sweep_young().await.unwrap();
    let e = r.get(&y).await;
    assert!(e.logs_complete);
    assert_eq!(e.log_lines, Some(2));
}

#[tokio::test]
async fn the_full_sweep_prepares_every_registered_image_again() {
    let r = rig();
    for reference in ["alpine:3.20", "ghcr.io/acme/tool:1"] {
        let img = crate::testing::image(reference, None, "rid", T0);
        r.store
            .register_image(&img, crate::ports::MakeDefault::IfNone)
            .await
            .unwrap();
    }
    r.p.sweep("schedule").await.unwrap();
    let mut prepared = r.compute.prepared();
    prepared.sort();
    assert_eq!(prepared, ["alpine:3.20", "ghcr.io/acme/tool:1"]);
    // The young sweep leaves images alone.
    r.p.sweep_young().await.unwrap();
    assert_eq!(r.compute.prepared().len(), 2);
}

#[tokio::test]
async fn mem_store_conforms() {
    store_conformance(&MemStore::new()).await;
}

#[tokio::test]
async fn lost_records_are_reread_from_the_durable_source_before_logs_complete() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.store.lose(&x, [3, 7, 10]);
    r.source.set(&x, records(10), Some(exit_info(0, 10)));
    r.p.handle(Event::Records {
        execution_id: x.clone(),
        records: records(10),
        exit: None,
    })
    .await
    .unwrap();
    assert_eq!(
        r.store.log_stats(&x).await.unwrap().count,
        7,
        "three were lost"
    );
    r.compute.set(&x, exited(0, 10));
    let o =
        r.p.handle(Event::Records {
            execution_id: x.clone(),
            records: vec![],
            exit: Some(exit_info(0, 10)),
        })
        .await;
    assert!(o.is_ok());
    let e = r.get(&x).await;
    assert_eq!(e.status, Status::Succeeded);
    assert!(e.logs_complete);
    assert_eq!(e.log_lines, Some(10));
    assert_eq!(r.store.logs_of(&x), records(10));
}

#[tokio::test]
async fn logs_stay_incomplete_while_the_source_lacks_records_then_complete_later() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.store.append_logs(&x, &records(4)).await.unwrap();
    // The source has not got record 5 yet (e.g. Cloud Logging ingestion lag).
    r.source.set(&x, records(4), Some(exit_info(2, 5)));
    r.compute.set(&x, exited(2, 5));
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!((e.status, e.exit_code), (Status::Failed, Some(2)));
    assert!(
        !e.logs_complete,
        "never claim complete logs with a record missing"
    );
    r.source.set(&x, records(5), Some(exit_info(2, 5)));
    let report = r.p.sweep("schedule").await.unwrap();
    assert_eq!(report.log_records_repaired, 1);
    let e = r.get(&x).await;
    assert!(e.logs_complete);
    assert_eq!(r.store.logs_of(&x), records(5));
}

#[tokio::test]
async fn a_running_execution_whose_compute_vanished_is_finalised_at_once() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.source.set(&x, records(3), None);
    // compute: NotFound (never set)
    let o = r.p.reconcile(&x).await.unwrap();
    assert!(
        matches!(
            o,
            Outcome::Finalized {
                status: Status::Failed,
                ..
            }
        ),
        "{o:?}"
    );
    let e = r.get(&x).await;
    assert!(e.failure_reason.unwrap().contains("no record"));
    assert!(e.logs_complete);
    assert_eq!(e.log_lines, Some(3));
}

#[tokio::test]
async fn a_starting_execution_unknown_to_compute_gets_a_grace_period() {
    let r = rig();
    let x = r.create(1, Status::Starting).await;
    assert_eq!(r.p.reconcile(&x).await.unwrap(), Outcome::Unchanged);
    r.clock.advance_ms(LOST_GRACE_MS + 1);
    r.p.reconcile(&x).await.unwrap();
    assert_eq!(r.get(&x).await.status, Status::Failed);
}

#[tokio::test]
async fn the_young_sweep_settles_a_run_that_never_reached_compute_within_a_minute() {
    let r = rig();
    // Stored, then runvoyd stopped before compute heard of it; an old one is left to the
    // hourly sweep, a running one is not the young sweep's business.
    let lost = r.create(1, Status::Starting).await;
    let running = r.create(2, Status::Running).await;
    let young = r.p.sweep_young().await.unwrap();
    assert_eq!((young.checked, young.reconciled_count), (1, 0));
    assert!(
        r.store.recent_reports(10).await.unwrap().is_empty(),
        "a sweep that changed nothing keeps no report"
    );
    r.clock.advance_ms(LOST_GRACE_MS + 1);
    let young = r.p.sweep_young().await.unwrap();
    assert_eq!(young.reconciled_count, 1, "{young:?}");
    assert_eq!(r.get(&lost).await.status, Status::Failed);
    assert_eq!(r.get(&running).await.status, Status::Running);
    let kept = r.store.recent_reports(10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].trigger, "young");
    const { assert!(LOST_GRACE_MS < 60_000) };

    let old = r.create(3, Status::Starting).await;
    r.clock.advance_ms(YOUNG_WINDOW_MS + 1);
    assert_eq!(r.p.sweep_young().await.unwrap().checked, 0);
    assert_eq!(r.get(&old).await.status, Status::Starting);
}

#[tokio::test]
async fn an_ended_execution_takes_the_exit_code_from_the_runner_record() {
    let r = rig();
    for (n, code, want) in [(1, 0, Status::Succeeded), (2, 42, Status::Failed)] {
        let x = r.create(n, Status::Running).await;
        r.source.set(&x, records(2), Some(exit_info(code, 2)));
        r.store.append_logs(&x, &records(2)).await.unwrap();
        r.compute.set(&x, exited(code, 2));
        r.p.reconcile(&x).await.unwrap();
        let e = r.get(&x).await;
        assert_eq!(
            (e.status, e.exit_code, e.logs_complete),
            (want, Some(code), true)
        );
    }
    // The supervisor vanished but the runner's final record made it to the durable source.
    let x = r.create(3, Status::Running).await;
    r.source.set(&x, records(1), Some(exit_info(5, 1)));
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: None,
            process_exit_code: None,
            failure: Some("supervisor vanished".into()),
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!(
        (e.status, e.exit_code, e.logs_complete),
        (Status::Failed, Some(5), true)
    );
}

#[tokio::test]
async fn a_terminating_execution_that_never_stops_is_killed_again() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    let now = r.clock.now_ms();
    r.edit(&x, |e| {
        e.status = Status::Terminating;
        e.kill_requested_at_ms = Some(now);
    })
    .await;
    r.compute.set(&x, ComputeState::Running);
    assert_eq!(r.p.reconcile(&x).await.unwrap(), Outcome::Unchanged);
    assert!(r.compute.kills().is_empty(), "too early to kill again");
    r.clock
        .advance_ms(KILL_RETRY_MS + GRACE_SECS as i64 * 1000 + 1);
    let report = r.p.sweep("schedule").await.unwrap();
    assert_eq!(report.killed, 1);
    assert_eq!(r.compute.kills(), vec![x.clone()]);
    let mut killed = exit_info(143, 0);
    killed.killed = true;
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: Some(killed),
            process_exit_code: Some(143),
            failure: None,
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!(
        (e.status, e.exit_code, e.timed_out),
        (Status::Stopped, Some(143), false)
    );
}

#[tokio::test]
async fn an_execution_past_its_timeout_is_killed_and_marked_timed_out() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.edit(&x, |e| e.timeout_secs = Some(60)).await;
    // MemStore keeps timeout_secs from creation like SQL does; set it at creation instead.
    let mut e = execution(&id(2), r.clock.now_ms());
    e.status = Status::Running;
    e.timeout_secs = Some(60);
    r.store.create_execution(&e).await.unwrap();
    let x = e.id;
    r.compute.set(&x, ComputeState::Running);
    r.clock.advance_ms(60_000);
    assert_eq!(r.p.reconcile(&x).await.unwrap(), Outcome::Unchanged);
    r.clock
        .advance_ms(GRACE_SECS as i64 * 1000 + TIMEOUT_SLACK_MS + 1);
    let o = r.p.reconcile(&x).await.unwrap();
    assert!(matches!(o, Outcome::Killed { .. }), "{o:?}");
    let e = r.get(&x).await;
    assert!(e.timed_out && e.status == Status::Running);
    assert_eq!(r.compute.kills(), vec![x.clone()]);
    // The command dies of the kill; the runner says "killed", not "timed out".
    let mut killed = exit_info(143, 0);
    killed.killed = true;
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: Some(killed),
            process_exit_code: Some(143),
            failure: None,
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!(
        e.status,
        Status::Failed,
        "a timeout is a failure, not a stop"
    );
    assert!(e.timed_out);
    assert_eq!(e.exit_code, Some(143));
    assert!(e.failure_reason.unwrap().contains("timed out"));
}

#[tokio::test]
async fn finished_in_the_store_but_running_in_compute_is_killed() {
    let r = rig();
    let x = r.create(1, Status::Starting).await;
    r.edit(&x, |e| {
        e.status = Status::Failed;
        e.logs_complete = false;
    })
    .await;
    r.compute.set(&x, ComputeState::Running);
    let o = r.p.reconcile(&x).await.unwrap();
    assert!(matches!(o, Outcome::Killed { .. }), "{o:?}");
    assert_eq!(r.compute.kills(), vec![x]);
}

#[tokio::test]
async fn a_gap_in_a_running_executions_logs_is_filled_by_the_sweep() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.compute.set(&x, ComputeState::Running);
    r.store.lose(&x, [2, 3]);
    r.store.append_logs(&x, &records(5)).await.unwrap();
    r.source.set(&x, records(6), None);
    let report = r.p.sweep("schedule").await.unwrap();
    assert_eq!(report.log_records_repaired, 3, "{report:?}");
    assert_eq!(r.store.logs_of(&x), records(6));
    assert_eq!(r.get(&x).await.status, Status::Running);
}

#[tokio::test]
async fn compute_state_failures_are_retried() {
    let r = rig();
    let x = r.create(1, Status::Starting).await;
    r.compute.set(&x, ComputeState::Running);
    r.compute.fail_state(3);
    assert_eq!(r.p.reconcile(&x).await.unwrap(), Outcome::MarkedRunning);
}

#[tokio::test]
async fn a_store_outage_fails_the_reconcile_and_the_next_sweep_repairs() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.source.set(&x, records(2), Some(exit_info(0, 2)));
    r.compute.set(&x, exited(0, 2));
    r.store.set_down(true);
    assert!(r.p.reconcile(&x).await.is_err());
    assert!(r.p.sweep("schedule").await.is_err());
    r.store.set_down(false);
    let report = r.p.sweep("schedule").await.unwrap();
    assert_eq!(report.finalized, 1);
    assert!(r.get(&x).await.is_settled());
}

#[tokio::test]
async fn orphans_are_reported_and_old_workspaces_removed() {
    let r = rig();
    // An orphan: compute runs something the store never heard of.
    r.compute.set(&id(9), ComputeState::Running);
    // A settled execution finished two hours ago, and one finished a minute ago.
    for (n, ago) in [(1u8, 2 * 3_600_000), (2, 60_000)] {
        let x = r.create(n, Status::Running).await;
        let done = r.clock.now_ms() - ago;
        r.edit(&x, |e| {
            e.status = Status::Succeeded;
            e.exit_code = Some(0);
            e.completed_at_ms = Some(done);
            e.logs_complete = true;
            e.log_lines = Some(0);
        })
        .await;
        r.compute.set(&x, exited(0, 0));
    }
    let report = r.p.sweep("api").await.unwrap();
    assert_eq!(report.orphans, 1);
    assert!(
        report
            .issues
            .iter()
            .any(|i| i.resource_id == id(9) && i.message.contains("orphan process")),
        "{report:?}"
    );
    assert_eq!(report.workspaces_removed, 1);
    assert_eq!(r.compute.cleaned(), vec![id(1)]);
}

#[tokio::test]
async fn the_last_reports_are_kept() {
    let r = rig();
    for _ in 0..(REPORTS_KEPT + 3) {
        r.clock.advance_ms(1000);
        r.p.sweep("schedule").await.unwrap();
    }
    let kept = r.store.recent_reports(100).await.unwrap();
    assert_eq!(kept.len(), REPORTS_KEPT);
    assert!(kept[0].timestamp > kept[1].timestamp, "newest first");
}

// ---- generated event sequences ----

/// What the runner and compute really did for one execution.
#[derive(Debug, Clone)]
struct Truth {
    lines: u64,
    code: i32,
    /// The runner wrote its final record (false: killed hard, e.g. OOM).
    final_record: bool,
}

#[derive(Debug, Clone)]
enum Step {
    /// Deliver a batch of records (seq range) with or without the final record.
    Records(Vec<u64>, bool),
    /// A compute hint.
    Hint,
}

fn truth() -> impl Strategy<Value = Truth> {
    (
        0u64..40,
        prop_oneof![Just(0), Just(1), Just(42), Just(137)],
        any::<bool>(),
    )
        .prop_map(|(lines, code, fin)| Truth {
            lines,
            code,
            final_record: fin || lines == 0,
        })
}

/// The ideal delivery (batches in order, then the final record, then a hint), then mangled:
/// steps dropped, duplicated and shuffled, extra hints inserted; plus where compute exits and
/// which records the store loses.
fn scenario() -> impl Strategy<Value = (Truth, Vec<Step>, usize, Vec<u64>)> {
    truth().prop_flat_map(|t| {
        let n = t.lines as usize;
        let cuts = proptest::collection::vec(1usize..=n.max(1), 0..4);
        (Just(t), cuts).prop_flat_map(|(t, mut cuts)| {
            cuts.retain(|&c| c <= t.lines as usize);
            cuts.push(t.lines as usize);
            cuts.sort();
            cuts.dedup();
            let mut steps = Vec::new();
            let mut from = 1u64;
            for c in cuts {
                let to = c as u64;
                if to >= from {
                    steps.push(Step::Records((from..=to).collect(), false));
                    from = to + 1;
                }
            }
            if t.final_record {
                steps.push(Step::Records(vec![], true));
            }
            steps.push(Step::Hint);
            let len = steps.len();
            (
                Just(t.clone()),
                Just(steps),
                proptest::collection::vec((0..3u8, 0..len + 1), 0..8),
                any::<prop::sample::Index>(),
                proptest::collection::vec(1..=t.lines.max(1), 0..4),
                any::<u64>(),
            )
                .prop_map(|(t, steps, muts, exit_at, lost, seed)| {
                    let mut steps = steps;
                    // 0: drop, 1: duplicate, 2: insert a hint.
                    for (kind, at) in muts {
                        let at = at.min(steps.len());
                        match kind {
                            0 if at < steps.len() => {
                                steps.remove(at);
                            }
                            1 if at < steps.len() => {
                                let s = steps[at].clone();
                                steps.insert(at, s);
                            }
                            _ => steps.insert(at, Step::Hint),
                        }
                    }
                    // Reorder deterministically from the seed (a Fisher–Yates with an LCG).
                    let mut x = seed | 1;
                    for i in (1..steps.len()).rev() {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        if x >> 62 == 0 {
                            let j = (x >> 33) as usize % (i + 1);
                            steps.swap(i, j);
                        }
                    }
                    let exit_at = exit_at.index(steps.len() + 1);
                    (t, steps, exit_at, lost)
                })
        })
    })
}

fn final_compute_state(t: &Truth) -> ComputeState {
    ComputeState::Exited(ComputeExit {
        runner: t.final_record.then(|| exit_info(t.code, t.lines)),
        process_exit_code: Some(t.code),
        failure: (!t.final_record).then(|| "runner killed".to_owned()),
    })
}

async fn play(
    t: Truth,
    steps: Vec<Step>,
    exit_at: usize,
    lost: Vec<u64>,
) -> Result<(), TestCaseError> {
    let r = rig();
    let x = r.create(1, Status::Starting).await;
    // Records lost in transit: dropped from the first batch that carries them.
    let mut lost: std::collections::HashSet<u64> = lost.into_iter().collect();
    // The durable source is complete from the start: records are written before anything is
    // delivered from them.
    r.source.set(
        &x,
        records(t.lines),
        t.final_record.then(|| exit_info(t.code, t.lines)),
    );
    r.compute.set(&x, ComputeState::Running);
    let mut was_terminal: Option<(Status, Option<i32>)> = None;
    for (i, step) in steps.into_iter().enumerate() {
        if i == exit_at {
            r.compute.set(&x, final_compute_state(&t));
        }
        let ev = match step {
            Step::Records(seqs, fin) => Event::Records {
                execution_id: x.clone(),
                records: seqs
                    .into_iter()
                    .filter(|s| !lost.remove(s))
                    .map(record)
                    .collect(),
                exit: fin.then(|| exit_info(t.code, t.lines)),
            },
            Step::Hint => Event::ComputeChanged {
                execution_id: x.clone(),
            },
        };
        r.p.handle(ev)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let e = r.get(&x).await;
        // A terminal status, once set, never changes.
        if let Some(prev) = was_terminal {
            prop_assert_eq!((e.status, e.exit_code), prev);
        } else if e.status.is_terminal() {
            was_terminal = Some((e.status, e.exit_code));
        }
        // Logs are never called complete while a record is missing.
        if e.logs_complete {
            prop_assert_eq!(r.store.logs_of(&x), records(t.lines));
        }
    }
    r.compute.set(&x, final_compute_state(&t));
    r.p.sweep("schedule")
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let e = r.get(&x).await;
    let want = if t.code == 0 && t.final_record {
        Status::Succeeded
    } else {
        Status::Failed
    };
    prop_assert_eq!(e.status, want);
    prop_assert_eq!(e.exit_code, Some(t.code));
    prop_assert!(e.logs_complete);
    prop_assert_eq!(e.log_lines, Some(t.lines));
    prop_assert_eq!(r.store.logs_of(&x), records(t.lines));
    // A further sweep changes nothing.
    let again =
        r.p.sweep("schedule")
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(again.reconciled_count, 0);
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever is dropped, duplicated or reordered, and whatever the store loses, one sweep
    /// after compute ended leaves the execution exactly as the runner saw it.
    #[test]
    fn events_in_any_order_converge((t, steps, exit_at, lost) in scenario()) {
        block_on(play(t, steps, exit_at, lost))?;
    }

    /// Every event after the command ended is lost: the next sweep still finalises it.
    #[test]
    fn a_dropped_completion_is_repaired_by_the_next_sweep(t in truth()) {
        let batches = vec![Step::Hint, Step::Records((1..=t.lines).collect(), false)];
        block_on(play(t, batches, usize::MAX, vec![]))?;
    }
}

#[tokio::test]
async fn without_a_final_record_a_hole_is_never_called_complete() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    let mut have = records(5);
    have.remove(2); // seq 3 is in neither the store nor the source (yet)
    r.store.append_logs(&x, &have).await.unwrap();
    r.source.set(&x, have, None);
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: None,
            process_exit_code: Some(137),
            failure: Some("killed".into()),
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!((e.status, e.exit_code), (Status::Failed, Some(137)));
    assert!(!e.logs_complete);
    r.source.set(&x, records(5), None);
    r.p.sweep("schedule").await.unwrap();
    let e = r.get(&x).await;
    assert!(e.logs_complete);
    assert_eq!(e.log_lines, Some(5));
}

#[tokio::test]
async fn a_kill_racing_a_natural_completion_keeps_the_commands_own_result() {
    let r = rig();
    for (n, code, want) in [(1, 0, Status::Succeeded), (2, 3, Status::Failed)] {
        let x = r.create(n, Status::Running).await;
        let now = r.clock.now_ms();
        r.edit(&x, |e| {
            e.status = Status::Terminating;
            e.kill_requested_at_ms = Some(now);
        })
        .await;
        // The command had already ended when the stop arrived: the runner was never told to stop.
        r.source.set(&x, records(2), Some(exit_info(code, 2)));
        r.store.append_logs(&x, &records(2)).await.unwrap();
        r.compute.set(&x, exited(code, 2));
        r.p.reconcile(&x).await.unwrap();
        let e = r.get(&x).await;
        assert_eq!(
            (e.status, e.exit_code, e.logs_complete),
            (want, Some(code), true),
            "{e:?}"
        );
    }
    // The stop reached it: STOPPED, whatever the exit code.
    let x = r.create(3, Status::Running).await;
    let now = r.clock.now_ms();
    r.edit(&x, |e| {
        e.status = Status::Terminating;
        e.kill_requested_at_ms = Some(now);
    })
    .await;
    let mut stopped = exit_info(0, 0);
    stopped.killed = true;
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: Some(stopped),
            process_exit_code: Some(0),
            failure: None,
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!((e.status, e.exit_code), (Status::Stopped, Some(0)));
}

#[tokio::test]
async fn logs_are_not_complete_while_the_durable_source_cannot_be_read() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    // Records 1..=2 reached the store; 3..=5 are only in the source, which cannot be read; the
    // runner died without a final record.
    r.store.append_logs(&x, &records(2)).await.unwrap();
    r.source.set(&x, records(5), None);
    r.source.set_down(true);
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: None,
            process_exit_code: None,
            failure: Some("supervisor vanished".into()),
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!(e.status, Status::Failed);
    assert!(!e.logs_complete, "2 stored records are not all there is");
    r.source.set_down(false);
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!((e.logs_complete, e.log_lines), (true, Some(5)));
}

#[tokio::test]
async fn a_store_that_cannot_take_the_missing_records_leaves_logs_incomplete() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.store.append_logs(&x, &records(3)).await.unwrap();
    r.source.set(&x, records(8), Some(exit_info(4, 8)));
    r.compute.set(&x, exited(4, 8));
    r.store.set_down(true);
    assert!(
        r.p.reconcile(&x).await.is_err(),
        "a store failure is an error"
    );
    r.store.set_down(false);
    assert!(!r.get(&x).await.logs_complete);
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!(
        (e.status, e.exit_code, e.logs_complete, e.log_lines),
        (Status::Failed, Some(4), true, Some(8))
    );
    assert_eq!(r.store.logs_of(&x).len(), 8);
}

#[tokio::test]
async fn dropped_output_from_the_final_record_is_kept_on_the_execution() {
    let r = rig();
    let x = r.create(1, Status::Running).await;
    r.store.append_logs(&x, &records(3)).await.unwrap();
    let mut fin = exit_info(0, 3);
    fin.dropped_lines = 1000;
    fin.dropped_bytes = 4000;
    fin.unwritten_lines = 2;
    fin.unwritten_bytes = 20;
    r.compute.set(
        &x,
        ComputeState::Exited(ComputeExit {
            runner: Some(fin),
            process_exit_code: Some(0),
            failure: None,
        }),
    );
    r.p.reconcile(&x).await.unwrap();
    let e = r.get(&x).await;
    assert_eq!(e.status, Status::Succeeded);
    assert_eq!((e.dropped_log_lines, e.dropped_log_bytes), (1002, 4020));
    let api = e.to_api();
    assert_eq!((api.dropped_log_lines, api.dropped_log_bytes), (1002, 4020));
}

#[tokio::test]
async fn a_sweep_frees_locks_whose_holders_ended_and_reports_them() {
    use crate::ports::{Lock, LockedCreate};
    let r = rig();
    let mut e = execution(&id(7), T0);
    e.lock = Some("deploy".into());
    let lock = Lock {
        name: "deploy".into(),
        execution_id: e.id.clone(),
        holder: e.created_by.clone(),
        acquired_at_ms: T0,
        expires_at_ms: T0 + r.p.lock_lease_ms(),
    };
    assert_eq!(
        r.store
            .create_execution_locked(&e, &lock, T0)
            .await
            .unwrap(),
        LockedCreate::Created
    );
    // Still running: the sweep keeps the lock.
    r.compute.set(&e.id, ComputeState::Running);
    r.p.sweep("test").await.unwrap();
    assert!(r.store.get_lock("deploy").await.unwrap().is_some());
    // It ended: finalising releases the lock on the way.
    r.compute.set(&e.id, exited(0, 0));
    let report = r.p.sweep("test").await.unwrap();
    assert_eq!(r.get(&e.id).await.status, Status::Succeeded);
    assert_eq!(r.store.get_lock("deploy").await.unwrap(), None);
    assert_eq!(report.finalized, 1);
    // A lock left behind by a holder that is gone from the store is freed and reported.
    let orphan = Lock {
        name: "orphan".into(),
        execution_id: id(8),
        ..lock
    };
    let ghost = execution(&id(9), T0);
    assert_eq!(
        r.store
            .create_execution_locked(&ghost, &orphan, T0)
            .await
            .unwrap(),
        LockedCreate::Created
    );
    let report = r.p.sweep("test").await.unwrap();
    assert_eq!(r.store.get_lock("orphan").await.unwrap(), None);
    assert!(
        report
            .issues
            .iter()
            .any(|i| i.resource_type == "lock" && i.resource_id == "orphan"),
        "{:?}",
        report.issues
    );
}
