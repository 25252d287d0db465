//! The Clock port and its two implementations.

use std::sync::atomic::{AtomicI64, Ordering};

/// Source of the current time, so expiry and timeouts can be driven by tests.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock set to `ms`.
    pub fn new(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// Parses an RFC 3339 time to epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    // Runner records carry millions of timestamps in one fixed UTC form: parse that directly
    // and leave every other form to the full parser.
    if let Some(ms) = parse_utc_fast(s.as_bytes()) {
        return Some(ms);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `YYYY-MM-DDTHH:MM:SS[.f+]Z` to epoch ms; `None` for anything else.
fn parse_utc_fast(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[b.len() - 1] != b'Z'
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as i64)
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut ms = 0;
    let frac = &b[19..b.len() - 1];
    if !frac.is_empty() {
        if frac[0] != b'.' || frac.len() < 2 {
            return None;
        }
        let digits = &frac[1..];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..3 {
            ms = ms * 10 + digits.get(i).map_or(0, |c| (c - b'0') as i64);
        }
    }
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_utc_parse_agrees_with_the_full_parser() {
        for s in [
            "2026-11-24T10:00:00.123456Z",
            "2024-02-29T23:59:59.999Z",
            "1970-01-01T00:00:00Z",
            "2000-03-01T00:00:00.5Z",
            "1999-12-31T23:59:59.000000001Z",
        ] {
            let full =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .unwrap();
            assert_eq!(super::parse_utc_fast(s.as_bytes()), Some(full), "{s}");
        }
        assert_eq!(super::parse_utc_fast(b"2026-11-24T10:00:00+01:00"), None);
        assert_eq!(
            super::parse_rfc3339("2026-11-24T11:00:00+01:00"),
            super::parse_rfc3339("2026-11-24T10:00:00Z")
        );
        assert_eq!(super::parse_utc_fast(b"2026-13-24T10:00:00Z"), None);
    }

    #[test]
    fn rfc3339_round_trip() {
        let s = super::rfc3339(1_764_000_000_123);
        assert_eq!(s, "2025-11-24T16:00:00.123Z");
        assert_eq!(super::parse_rfc3339(&s), Some(1_764_000_000_123));
        assert_eq!(
            super::parse_rfc3339("2026-11-24T10:00:00.123456Z"),
            Some(1_795_514_400_123)
        );
    }
}
