//! A clock that integration tests can move forward without restarting the server.
//!
//! TEST ONLY. Enabled only when both `RUNVOY_ALLOW_TEST_CLOCK=1` and
//! `RUNVOY_TEST_CLOCK_OFFSET_FILE=PATH` are set: every `now_ms()` then reads PATH (an integer
//! number of milliseconds, missing or unreadable = 0) and adds it to the wall clock. Setting
//! only one of the two variables refuses to start, so a stray variable in production cannot
//! silently shift expiry times.

use std::path::PathBuf;
use std::sync::Arc;

use runvoy_domain::clock::{Clock, now_ms};

/// Wall clock plus the offset in a file.
struct OffsetFileClock(PathBuf);

impl Clock for OffsetFileClock {
    fn now_ms(&self) -> i64 {
        let offset = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        now_ms() + offset
    }
}

/// The test clock when the environment asks for it (see the module docs).
pub fn from_env() -> anyhow::Result<Option<Arc<dyn Clock>>> {
    let file = std::env::var_os("RUNVOY_TEST_CLOCK_OFFSET_FILE");
    let allowed = std::env::var("RUNVOY_ALLOW_TEST_CLOCK").is_ok_and(|v| v == "1");
    match (file, allowed) {
        (None, false) => Ok(None),
        (Some(f), true) => {
            let path = PathBuf::from(f);
            tracing::warn!(file = %path.display(), "TEST CLOCK ENABLED: time is shifted by the offset in this file; never use this in production");
            Ok(Some(Arc::new(OffsetFileClock(path))))
        }
        _ => anyhow::bail!(
            "RUNVOY_TEST_CLOCK_OFFSET_FILE and RUNVOY_ALLOW_TEST_CLOCK=1 are for tests and must be set together"
        ),
    }
}
