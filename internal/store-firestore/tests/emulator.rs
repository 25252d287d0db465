//! The Firestore store against Google's Firestore emulator: the shared Store conformance suite,
//! the batch layout of logs, concurrency of the user invariants, and the writes per execution.
//!
//! One emulator serves the whole test binary; each test keeps to its own collection prefix.

use std::sync::{Arc, Once};

use runvoy_domain::clock::ManualClock;
use runvoy_domain::hub::LogHub;
use runvoy_domain::ports::{ComputeExit, ComputeState, Store, UserChange, UserUpdate};
use runvoy_domain::processor::{Outcome, Processor};
use runvoy_domain::testing::{
    FakeCompute, FakeLogSource, execution, exit_info, record, store_conformance,
};
use runvoy_domain::{Event, LogRecord, Role, Status, Stream, User};
use runvoy_store_firestore::{FirestoreConfig, FirestoreStore, RECORDS_PER_DOC};

async fn store(prefix: &str) -> FirestoreStore {
    store_in(prefix, runvoy_store_firestore::DEFAULT_DATABASE).await
}

async fn store_in(prefix: &str, database: &str) -> FirestoreStore {
    let emu = runvoy_emulators::shared_firestore();
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        // SAFETY: set once, before any client of this process reads it.
        unsafe { std::env::set_var("FIRESTORE_EMULATOR_HOST", &emu.host) };
    });
    FirestoreStore::connect(&FirestoreConfig {
        project_id: "runvoy-test".into(),
        database_id: database.into(),
        collection_prefix: format!("{prefix}_"),
    })
    .await
    .expect("connect to the emulator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firestore_store_conforms() {
    store_conformance(&store("conformance").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firestore_store_conforms_on_a_named_database() {
    store_conformance(&store_in("named", "runvoy-other").await).await;
}

fn line(seq: u64, len: usize) -> LogRecord {
    LogRecord {
        seq,
        stream: Stream::Stdout,
        ts_ms: seq as i64,
        data: vec![b'a' + (seq % 26) as u8; len],
        eol: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_batched_and_repairs_fill_holes_without_duplicates() {
    let s = store("batches").await;
    let id = format!("{:032x}", 7);
    // 1,200 short lines in one call: three batch documents.
    let all: Vec<LogRecord> = (1..=1200).map(|n| line(n, 20)).collect();
    let before = s.document_writes();
    let (have, lost): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|r| r.seq % 97 != 0);
    s.append_logs(&id, &have).await.expect("append");
    assert_eq!(
        s.document_writes() - before,
        3,
        "1,188 records, 500 per document"
    );
    let stats = s.log_stats(&id).await.expect("stats");
    assert_eq!(
        (stats.count, stats.max_seq, stats.contiguous),
        (1188, 1200, 96)
    );
    // Re-delivering everything stores only the holes, inside the batches that span them.
    s.append_logs(&id, &all).await.expect("repair");
    let stats = s.log_stats(&id).await.expect("stats");
    assert_eq!(
        (stats.count, stats.max_seq, stats.contiguous),
        (1200, 1200, 1200)
    );
    assert!(!lost.is_empty());
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read_logs(&id, after, 333).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.seq;
        read.extend(page);
    }
    assert_eq!(read, all, "every record once, in order");
    // Nothing new: no write at all.
    let before = s.document_writes();
    s.append_logs(&id, &all[..700]).await.expect("again");
    assert_eq!(s.document_writes(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_respect_the_document_size_limit() {
    let s = store("large").await;
    let id = format!("{:032x}", 8);
    // The runner's largest record is 64 KiB: 40 of them need three 1 MiB documents at least.
    let big: Vec<LogRecord> = (1..=40).map(|n| line(n, 64 * 1024)).collect();
    let before = s.document_writes();
    s.append_logs(&id, &big)
        .await
        .expect("the emulator enforces the 1 MiB limit too");
    let docs = s.document_writes() - before;
    assert!((3..=4).contains(&docs), "{docs} documents");
    assert_eq!(s.read_logs(&id, 0, 100).await.expect("read"), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_demotions_leave_an_admin() {
    let admin = |email: &str, key: &str| User {
        email: email.into(),
        role: Role::Admin,
        key_hash: key.into(),
        created_at_ms: 1,
        revoked: false,
        last_used_ms: None,
        claim_expires_at_ms: None,
        created_by: "runvoyd".into(),
        created_by_request_id: String::new(),
        modified_by_request_id: String::new(),
    };
    for round in 0..3 {
        // A store of its own per round: exactly two admins, demoted at once.
        let s = store(&format!("admins{round}")).await;
        let (a, b) = (format!("a{round}@x"), format!("b{round}@x"));
        s.create_user(&admin(&a, &format!("ka{round}")))
            .await
            .expect("create");
        s.create_user(&admin(&b, &format!("kb{round}")))
            .await
            .expect("create");
        let demote = |email: String| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update_user(&email, &UserChange::Role(Role::Viewer), "req")
                    .await
                    .expect("update")
            })
        };
        let (ra, rb) = tokio::join!(demote(a.clone()), demote(b.clone()));
        let outcomes = [ra.expect("join"), rb.expect("join")];
        let updated = outcomes
            .iter()
            .filter(|o| matches!(o, UserUpdate::Updated(_)))
            .count();
        assert_eq!(updated, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&UserUpdate::LastAdmin));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_version_apply_once() {
    let s = store("cas").await;
    let e = execution(&format!("{:032x}", 9), 1_000);
    s.create_execution(&e).await.expect("create");
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let (s, mut e) = (s.clone(), e.clone());
            tokio::spawn(async move {
                e.modified_by_request_id = format!("req-{n}");
                s.update_execution(&e).await.expect("cas")
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("join"));
    }
    assert_eq!(won, 1);
    let stored = s.get_execution(&e.id).await.expect("get").expect("row");
    assert_eq!(stored.version, 1);
}

/// The Firestore writes one execution costs when its records arrive in batches of
/// `per_event`: the goal is at most 3 + ⌈lines/500⌉.
async fn writes_for_one_execution(s: &FirestoreStore, n: u8, lines: u64, per_event: usize) -> u64 {
    let store: Arc<dyn Store> = Arc::new(s.clone());
    let compute = Arc::new(FakeCompute::new());
    let source = Arc::new(FakeLogSource::new());
    let clock = Arc::new(ManualClock::new(1_000));
    let p = Processor::new(
        store.clone(),
        compute.clone(),
        source.clone(),
        Arc::new(LogHub::new()),
        clock,
        5,
    );
    let id = format!("{:032x}", 100 + u32::from(n));
    let records: Vec<LogRecord> = (1..=lines).map(record).collect();
    source.set(&id, records.clone(), Some(exit_info(0, lines)));
    let before = s.document_writes();
    // Accepted (what the service stores), then started, then the records, then the end.
    store
        .create_execution(&execution(&id, 1_000))
        .await
        .expect("create");
    compute.set(&id, ComputeState::Running);
    assert_eq!(
        p.reconcile(&id).await.expect("reconcile"),
        Outcome::MarkedRunning
    );
    let events: Vec<&[LogRecord]> = records.chunks(per_event).collect();
    for (i, batch) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        if last {
            compute.set(
                &id,
                ComputeState::Exited(ComputeExit {
                    runner: Some(exit_info(0, lines)),
                    process_exit_code: Some(0),
                    failure: None,
                }),
            );
        }
        p.handle(Event::Records {
            execution_id: id.clone(),
            records: batch.to_vec(),
            exit: last.then(|| exit_info(0, lines)),
        })
        .await
        .expect("records");
    }
    let e = store.get_execution(&id).await.expect("get").expect("row");
    assert_eq!(e.status, Status::Succeeded);
    assert!(e.logs_complete);
    s.document_writes() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_per_execution_meet_the_goal() {
    let s = store("writes").await;
    let cases = [
        (1u64, 1usize),
        (1_200, 1_200),
        (10_000, 2_000),
        (10_000, 500),
        (1_000, 100),
    ];
    for (n, (lines, per_event)) in cases.into_iter().enumerate() {
        let writes = writes_for_one_execution(&s, n as u8, lines, per_event).await;
        let goal = 3 + lines.div_ceil(RECORDS_PER_DOC as u64);
        // Create, RUNNING, final state; then one document per 500 records of each delivery.
        let per_delivery: u64 = (0..lines)
            .step_by(per_event)
            .map(|start| {
                (lines - start)
                    .min(per_event as u64)
                    .div_ceil(RECORDS_PER_DOC as u64)
            })
            .sum();
        println!(
            "firestore writes per execution: {writes} for {lines} lines delivered {per_event} \
             records at a time (goal <= {goal})"
        );
        assert_eq!(writes, 3 + per_delivery, "{lines} lines by {per_event}");
        if per_event % RECORDS_PER_DOC == 0 || per_event as u64 >= lines {
            assert!(
                writes <= goal,
                "{writes} writes for {lines} lines, goal {goal}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_reports_writes_made_by_another_instance() {
    // Two clients of one database stand for two runvoyd instances.
    let a = store("listen").await;
    let b = store("listen").await;
    let id = "listen-exec".to_owned();
    a.create_execution(&execution(&id, 1_000)).await.unwrap();
    let mut w = b
        .watch_execution(&id, 0)
        .expect("Firestore has a change feed");
    // Each target's CURRENT wakes once (what changed before the listen was up); after that,
    // nothing while nothing is written.
    let mut wakes = 0;
    while tokio::time::timeout(std::time::Duration::from_secs(1), w.changed())
        .await
        .is_ok()
    {
        wakes += 1;
        assert!(wakes <= 2, "changes reported while nothing was written");
    }
    a.append_logs(&id, &[line(1, 10)]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), w.changed())
        .await
        .expect("the write of the other instance is reported")
        .expect("the feed is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_one_instance_streams_what_another_instance_stores() {
    use runvoy_domain::follow::{FollowItem, Follower};
    let a = store("follow").await;
    let b: Arc<dyn Store> = Arc::new(store("follow").await);
    let id = "follow-exec".to_owned();
    let mut e = execution(&id, 1_000);
    e.status = Status::Running;
    a.create_execution(&e).await.unwrap();
    // B's hub never hears of A's writes: only the store can tell B's follower.
    let mut f = Follower::new(b, Arc::new(LogHub::new()), &id, 0);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            match f.next().await.unwrap() {
                Some(FollowItem::Records(rs)) => seqs.extend(rs.iter().map(|r| r.seq)),
                Some(FollowItem::Done(e)) => return (seqs, e.status),
                None => panic!("ended without Done"),
            }
        }
    });
    // Out of order, overlapping, in several deliveries.
    for batch in [vec![1, 2], vec![4, 5], vec![3, 4], vec![6]] {
        let recs: Vec<LogRecord> = batch.into_iter().map(|s| line(s, 8)).collect();
        a.append_logs(&id, &recs).await.unwrap();
    }
    let mut done = a.get_execution(&id).await.unwrap().unwrap();
    done.status = Status::Succeeded;
    done.exit_code = Some(0);
    done.log_lines = Some(6);
    done.logs_complete = true;
    assert!(a.update_execution(&done).await.unwrap());
    let (seqs, status) = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the follower finishes")
        .unwrap();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4, 5, 6],
        "gap-free, in order, no duplicates"
    );
    assert_eq!(status, Status::Succeeded);
}
