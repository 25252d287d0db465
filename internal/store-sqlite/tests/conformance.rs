//! The shared Store conformance suite, run against SQLite.

use runvoy_domain::testing::store_conformance;
use runvoy_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(&dir.path().join("t.db")).expect("open");
    store_conformance(&s).await;
}
