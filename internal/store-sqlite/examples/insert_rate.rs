//! Measures how fast the store appends log records: `cargo run --release -p runvoy-store-sqlite --example insert_rate`.
use std::time::Instant;

use runvoy_domain::ports::Store;
use runvoy_domain::{LogRecord, Stream};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = runvoy_store_sqlite::SqliteStore::open(&dir.path().join("db")).unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let n = 1_000_000u64;
    let batch = 40_000u64;
    let t = Instant::now();
    let mut seq = 1;
    while seq <= n {
        let recs: Vec<LogRecord> = (seq..(seq + batch).min(n + 1))
            .map(|s| LogRecord {
                seq: s,
                stream: Stream::Stdout,
                ts_ms: 1_700_000_000_000,
                data: s.to_string().into_bytes(),
                eol: true,
            })
            .collect();
        seq += recs.len() as u64;
        store.append_logs(id, &recs).await.unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "appended {n} records in {dt:.3}s = {:.0} k records/s",
        n as f64 / dt / 1e3
    );
    let t = Instant::now();
    let mut after = 0;
    let mut total = 0;
    loop {
        let r = store.read_logs(id, after, 2000).await.unwrap();
        if r.is_empty() {
            break;
        }
        after = r.last().unwrap().seq;
        total += r.len();
    }
    println!("read {total} records in {:.3}s", t.elapsed().as_secs_f64());
}
