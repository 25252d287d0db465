//! Serialises records to the runner's stdout: sequence numbers, timestamps and buffering, the
//! output budget, and riding out a full disk.
//!
//! Records the runner does not write (over the budget, or while the disk is full) get no
//! sequence number, so the record file never has a gap: they are counted, one `system` record
//! says so, and the final record carries the counts.

use std::io::{self, Write};
use std::mem;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runvoy_proto::record::{ExitRecordWire, LogRecordWire, RunnerRecord, Stream};

use crate::redact::{self, Redactor};

/// Buffered output is written out once it grows past this, even while data keeps streaming.
const FLUSH_AT: usize = 64 * 1024;
/// While the disk is full, how often writing the buffered records is tried again.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// How much command output (stdout and stderr records) is written; 0 means no limit. runvoy's
/// own `system` records do not count: there are only a few.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Most payload bytes.
    pub max_bytes: u64,
    /// Most records.
    pub max_lines: u64,
}

/// Records and bytes not written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    lines: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: usize) {
        self.lines += 1;
        self.bytes += bytes as u64;
    }
}

/// True for the write errors a full disk or quota gives: worth waiting out.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Writes records in sequence order. Callers share one `Sink` behind a lock so that the order of
/// the bytes on stdout is the order of the sequence numbers.
pub struct Sink<W: Write> {
    out: W,
    /// Serialised records not written yet. They have sequence numbers, so they are kept (and
    /// written from the exact byte where a short write stopped) until the write succeeds.
    buf: Vec<u8>,
    // Reused between records so the hot path does not allocate for valid UTF-8 lines.
    exec: String,
    time: String,
    message: String,
    clock: Clock,
    /// Number of log records written so far (= the last assigned sequence number).
    lines: u64,
    closed: bool,
    failed: bool,
    budget: Budget,
    /// Command output within the budget so far.
    used: Count,
    over_budget: bool,
    dropped: Count,
    /// Set while the disk is full: when writing was last tried.
    blocked: Option<Instant>,
    unwritten: Count,
    /// Unwritten records no `system` record has told about yet.
    untold: Count,
    /// Secret values to mask in the output (empty: nothing is held back or searched).
    redactor: Redactor,
    /// The last record of stdout and of stderr, held back while a secret split between it and
    /// the next one could still show up (see `redact`).
    held: [Option<Held>; 2],
    /// Values masked so far.
    redactions: u64,
}

/// A record held back for redaction.
#[derive(Debug)]
struct Held {
    stream: Stream,
    raw: Vec<u8>,
    eol: bool,
    /// Bytes at its start that end a value begun in the record before it.
    prefix: usize,
}

fn held_slot(stream: Stream) -> Option<usize> {
    match stream {
        Stream::Stdout => Some(0),
        Stream::Stderr => Some(1),
        _ => None,
    }
}

impl<W: Write> Sink<W> {
    /// A sink for execution `exec` writing to `out`, with no output budget.
    pub fn new(exec: String, out: W) -> Self {
        Self::with_budget(exec, out, Budget::default())
    }

    /// A sink for execution `exec` writing to `out` that stops writing command output past
    /// `budget`.
    pub fn with_budget(exec: String, out: W, budget: Budget) -> Self {
        Sink {
            out,
            buf: Vec::with_capacity(2 * FLUSH_AT),
            exec,
            time: String::with_capacity(32),
            message: String::new(),
            clock: Clock::default(),
            lines: 0,
            closed: false,
            failed: false,
            budget,
            used: Count::default(),
            over_budget: false,
            dropped: Count::default(),
            blocked: None,
            unwritten: Count::default(),
            untold: Count::default(),
            redactor: Redactor::default(),
            held: [None, None],
            redactions: 0,
        }
    }

    /// Masks these secret values in every record from now on.
    pub fn set_redactor(&mut self, r: Redactor) {
        self.redactor = r;
    }

    /// Values masked so far.
    pub fn redactions(&self) -> u64 {
        self.redactions
    }

    /// Appends one log record for `bytes` (a line or a chunk of one, without its `\n`), with
    /// secret values masked. With secrets to mask, a stdout or stderr record is held back until
    /// the next record of its stream or the next flush, so that a value split between two
    /// records is masked in both.
    pub fn log(&mut self, stream: Stream, bytes: &[u8], eol: bool) -> io::Result<()> {
        if self.redactor.is_empty() || self.failed || self.closed {
            return self.log_now(stream, bytes, eol);
        }
        let Some(slot) = held_slot(stream) else {
            let ranges = self.redactor.ranges(bytes);
            self.redactions += ranges.len() as u64;
            let masked = redact::mask(bytes, &ranges);
            return self.log_now(stream, &masked, eol);
        };
        let prefix = match self.held[slot].take() {
            Some(h) => {
                let (tail, head) = self.redactor.across(&h.raw, h.eol, bytes);
                self.emit_held(h, tail)?;
                head
            }
            None => 0,
        };
        self.held[slot] = Some(Held {
            stream,
            raw: bytes.to_vec(),
            eol,
            prefix,
        });
        Ok(())
    }

    /// Writes a held record, masking its own matches, the end of a value its predecessor
    /// began (`prefix`) and the start of one its successor ends (`tail` bytes).
    fn emit_held(&mut self, h: Held, tail: usize) -> io::Result<()> {
        let own = self.redactor.ranges(&h.raw);
        self.redactions += own.len() as u64 + u64::from(tail > 0);
        let len = h.raw.len();
        let ranges = redact::with(own, &[(0, h.prefix.min(len)), (len - tail.min(len), len)]);
        let masked = redact::mask(&h.raw, &ranges);
        self.log_now(h.stream, &masked, h.eol)
    }

    /// Writes out every held record.
    fn release(&mut self) -> io::Result<()> {
        for slot in 0..self.held.len() {
            if let Some(h) = self.held[slot].take() {
                self.emit_held(h, 0)?;
            }
        }
        Ok(())
    }

    /// Takes the current time for the records that follow; called once per batch of lines
    /// because the lines of one read were all read at the same moment.
    pub fn stamp(&mut self) {
        self.clock.format_now(&mut self.time);
    }

    /// True once the exit record has been queued; later log records are dropped.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while records wait for disk space.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// True while serialised records (possibly the final one) are not written yet.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Number of log records written so far (for tests).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Appends one log record for `bytes` as they are. Over the budget, or while the disk is
    /// full, the record is counted and dropped instead.
    fn log_now(&mut self, stream: Stream, bytes: &[u8], eol: bool) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("output already failed"));
        }
        if self.closed {
            return Ok(());
        }
        if stream != Stream::System && !self.within_budget(bytes.len()) {
            if !self.over_budget {
                self.over_budget = true;
                let note = format!(
                    "### runvoy runner: output limit reached ({}); the rest of the output is \
                     dropped, and counted in the final record",
                    self.budget_text()
                );
                self.append(Stream::System, note.as_bytes(), true)?;
            }
            self.dropped.add(bytes.len());
            return Ok(());
        }
        if self.blocked.is_some() {
            self.flush()?;
            if self.blocked.is_some() {
                self.unwritten.add(bytes.len());
                self.untold.add(bytes.len());
                return Ok(());
            }
        }
        self.tell_unwritten()?;
        if stream != Stream::System {
            self.used.add(bytes.len());
        }
        self.append(stream, bytes, eol)?;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn within_budget(&self, len: usize) -> bool {
        let b = self.budget;
        !self.over_budget
            && (b.max_lines == 0 || self.used.lines < b.max_lines)
            && (b.max_bytes == 0 || self.used.bytes + len as u64 <= b.max_bytes)
    }

    fn budget_text(&self) -> String {
        let b = self.budget;
        let mut parts = Vec::new();
        if b.max_lines > 0 {
            parts.push(format!("{} records", b.max_lines));
        }
        if b.max_bytes > 0 {
            parts.push(format!("{} bytes", b.max_bytes));
        }
        parts.join(" or ")
    }

    /// Once writing works again, one `system` record says what could not be written.
    fn tell_unwritten(&mut self) -> io::Result<()> {
        if self.untold.lines == 0 {
            return Ok(());
        }
        let n = mem::take(&mut self.untold);
        let note = format!(
            "### runvoy runner: {} output records ({} bytes) could not be written (no space \
             left on device) and were dropped",
            n.lines, n.bytes
        );
        self.append(Stream::System, note.as_bytes(), true)
    }

    /// Serialises one log record with the next sequence number into the buffer.
    fn append(&mut self, stream: Stream, bytes: &[u8], eol: bool) -> io::Result<()> {
        self.message.clear();
        let b64 = match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.message.push_str(s);
                None
            }
            Err(_) => {
                self.message.push_str(&String::from_utf8_lossy(bytes));
                Some(runvoy_proto::b64_encode(bytes))
            }
        };
        self.lines += 1;
        // The wire struct owns its strings; lend ours to it and take them back afterwards.
        let record = RunnerRecord::Log(LogRecordWire {
            exec: mem::take(&mut self.exec),
            seq: self.lines,
            stream,
            time: mem::take(&mut self.time),
            message: mem::take(&mut self.message),
            b64,
            eol,
        });
        let res = serde_json::to_writer(&mut self.buf, &record);
        if let RunnerRecord::Log(r) = record {
            self.exec = r.exec;
            self.time = r.time;
            self.message = r.message;
        }
        res.map_err(io::Error::other)?;
        self.buf.push(b'\n');
        Ok(())
    }

    /// Queues the final record (sequence `lines + 1`) and tries to write everything; later log
    /// records are dropped. When the disk is full the records stay queued: call
    /// [`Sink::retry`] until [`Sink::pending`] is false.
    pub fn exit(
        &mut self,
        exit_code: i32,
        timed_out: bool,
        killed: bool,
        error: Option<String>,
    ) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("output already failed"));
        }
        self.stamp();
        self.release()?;
        if self.redactions > 0 {
            let note = format!(
                "### runvoy runner: {} secret value(s) masked as *** in the output",
                self.redactions
            );
            self.log_now(Stream::System, note.as_bytes(), true)?;
        }
        self.tell_unwritten()?;
        let record = RunnerRecord::Exit(ExitRecordWire {
            exec: self.exec.clone(),
            seq: self.lines + 1,
            time: self.time.clone(),
            exit_code,
            lines: self.lines,
            timed_out,
            killed,
            error,
            dropped_lines: self.dropped.lines,
            dropped_bytes: self.dropped.bytes,
            unwritten_lines: self.unwritten.lines,
            unwritten_bytes: self.unwritten.bytes,
            redactions: self.redactions,
        });
        serde_json::to_writer(&mut self.buf, &record).map_err(io::Error::other)?;
        self.buf.push(b'\n');
        self.closed = true;
        self.retry()
    }

    /// Writes buffered records out. A full disk is not an error: the records stay buffered and
    /// are tried again at most every [`RETRY_EVERY`] (by this, [`Sink::log`] or [`Sink::retry`]).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.closed && !self.failed {
            self.release()?;
        }
        if self.blocked.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Ok(());
        }
        self.retry()
    }

    /// Like [`Sink::flush`], without waiting for the retry interval.
    pub fn retry(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("output already failed"));
        }
        if self.buf.is_empty() {
            self.blocked = None;
            return Ok(());
        }
        let mut written = 0;
        let res = loop {
            if written == self.buf.len() {
                break self.out.flush();
            }
            match self.out.write(&self.buf[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // Whatever reached the file is not written twice: the next attempt starts where this
        // one stopped, so a record cut by a short write is completed, never duplicated.
        self.buf.drain(..written);
        match res {
            Ok(()) => {
                self.blocked = None;
                Ok(())
            }
            Err(e) if is_out_of_space(&e) => {
                self.blocked = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The underlying writer (for tests and the fuzz targets).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The underlying writer (for tests).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Unbuffered writer on a raw file descriptor that never closes it.
pub struct FdWriter(pub libc::c_int);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid readable slice for its length.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// RFC 3339 UTC formatter that caches the date-time part of the current second.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.`
    prefix: String,
}

impl Clock {
    fn format_now(&mut self, out: &mut String) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.format(now.as_secs(), now.subsec_micros(), out);
    }

    fn format(&mut self, secs: u64, micros: u32, out: &mut String) {
        if self.second != Some(secs) {
            let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            self.prefix.clear();
            use std::fmt::Write as _;
            let _ = write!(
                self.prefix,
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.",
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            );
            self.second = Some(secs);
        }
        out.clear();
        out.push_str(&self.prefix);
        let mut digits = [b'0'; 6];
        let mut m = micros;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (m % 10) as u8;
            m /= 10;
        }
        // The digits are ASCII.
        out.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
        out.push('Z');
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm: eras of 400 years starting on March 1st.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value form, a value split over two records of one stream, a record of the other
    /// stream in between: nothing of the value is written, the seqs stay 1..=N, and the final
    /// record counts the masks.
    #[test]
    fn secret_values_never_reach_the_records() {
        let secret = "hunter2-Secret";
        let mut sink = Sink::new("e".into(), Vec::new());
        sink.set_redactor(Redactor::new([secret.as_bytes()]));
        sink.stamp();
        sink.log(Stream::Stdout, format!("plain {secret}").as_bytes(), true)
            .unwrap();
        sink.log(
            Stream::Stdout,
            format!("b64 {}", runvoy_proto::b64_encode(secret.as_bytes())).as_bytes(),
            true,
        )
        .unwrap();
        sink.log(Stream::Stdout, b"split hunter2", true).unwrap();
        sink.log(Stream::Stderr, b"unrelated", true).unwrap();
        sink.log(Stream::Stdout, b"-Secret end", true).unwrap();
        sink.flush().unwrap();
        sink.log(Stream::Stdout, b"short abc stays", true).unwrap();
        sink.exit(0, false, false, None).unwrap();
        let out = String::from_utf8(sink.get_ref().clone()).unwrap();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("Secret"), "{out}");
        assert!(!out.contains(&runvoy_proto::b64_encode(secret.as_bytes())));
        assert!(out.contains("plain ***") && out.contains("split ***") && out.contains("*** end"));
        assert!(out.contains("short abc stays") && out.contains("unrelated"));
        let records: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());
        let last = records.last().unwrap();
        assert_eq!(last["runvoy"], "exit");
        assert_eq!(last["redactions"], 3);
        assert_eq!(sink.redactions(), 3);
    }

    #[test]
    fn without_secrets_nothing_is_held_back() {
        let mut sink = Sink::new("e".into(), Vec::new());
        sink.stamp();
        sink.log(Stream::Stdout, b"hello", true).unwrap();
        sink.flush().unwrap();
        assert!(!sink.get_ref().is_empty());
    }

    fn fmt(secs: u64, micros: u32) -> String {
        let mut c = Clock::default();
        let mut s = String::new();
        c.format(secs, micros, &mut s);
        s
    }

    #[test]
    fn formats_rfc3339_with_micros() {
        assert_eq!(fmt(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(fmt(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(fmt(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(fmt(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        assert_eq!(fmt(1_795_514_400, 123_456), "2026-11-24T10:00:00.123456Z");
    }

    #[test]
    fn cache_tracks_the_second() {
        let mut c = Clock::default();
        let mut s = String::new();
        c.format(10, 1, &mut s);
        assert_eq!(s, "1970-01-01T00:00:10.000001Z");
        c.format(10, 2, &mut s);
        assert_eq!(s, "1970-01-01T00:00:10.000002Z");
        c.format(70, 0, &mut s);
        assert_eq!(s, "1970-01-01T00:01:10.000000Z");
    }

    #[test]
    fn records_match_the_wire_type() {
        let mut sink = Sink::new("ex".to_string(), Vec::new());
        sink.stamp();
        sink.log(Stream::Stdout, b"hello \"x\"\t\r\x1b[0m\0", true)
            .unwrap();
        sink.log(Stream::Stderr, b"bad \xff\xfe", false).unwrap();
        sink.log(Stream::System, b"", true).unwrap();
        sink.exit(3, true, false, None).unwrap();
        assert!(sink.is_closed());
        sink.log(Stream::Stdout, b"late", true).unwrap();

        let text = std::str::from_utf8(sink.get_ref()).unwrap();
        let recs: Vec<RunnerRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 4);
        let RunnerRecord::Log(a) = &recs[0] else {
            panic!()
        };
        assert_eq!(
            (a.seq, a.stream, a.message.as_str(), &a.b64, a.eol),
            (1, Stream::Stdout, "hello \"x\"\t\r\x1b[0m\0", &None, true)
        );
        assert_eq!(a.time.len(), "2026-11-24T10:00:00.123456Z".len());
        let RunnerRecord::Log(b) = &recs[1] else {
            panic!()
        };
        assert_eq!(b.seq, 2);
        assert!(!b.eol);
        assert_eq!(
            runvoy_proto::b64_decode(b.b64.as_ref().unwrap()).unwrap(),
            b"bad \xff\xfe"
        );
        assert_eq!(b.message, "bad \u{fffd}\u{fffd}");
        let RunnerRecord::Exit(e) = &recs[3] else {
            panic!()
        };
        assert_eq!((e.seq, e.lines, e.exit_code, e.timed_out), (4, 3, 3, true));
        // Re-serialising the parsed records reproduces the exact lines written.
        for (line, rec) in text.lines().zip(&recs) {
            assert_eq!(serde_json::to_string(rec).unwrap(), line);
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn parse_all(out: &[u8]) -> Vec<RunnerRecord> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a cut record: {text:?}"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    /// Log records as (seq, stream, message), and the final record.
    fn split(recs: &[RunnerRecord]) -> (Vec<(u64, Stream, String)>, Option<ExitRecordWire>) {
        let mut logs = Vec::new();
        let mut exit = None;
        for r in recs {
            match r {
                RunnerRecord::Log(l) => logs.push((l.seq, l.stream, l.message.clone())),
                RunnerRecord::Exit(e) => exit = Some(e.clone()),
            }
        }
        (logs, exit)
    }

    fn assert_contiguous(logs: &[(u64, Stream, String)], exit: &ExitRecordWire) {
        let seqs: Vec<u64> = logs.iter().map(|l| l.0).collect();
        assert_eq!(seqs, (1..=logs.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            (exit.lines, exit.seq),
            (logs.len() as u64, logs.len() as u64 + 1)
        );
    }

    #[test]
    fn over_the_line_budget_one_notice_then_counted_drops() {
        let budget = Budget {
            max_bytes: 0,
            max_lines: 3,
        };
        let mut sink = Sink::with_budget("e".into(), Vec::new(), budget);
        sink.stamp();
        sink.log(Stream::System, b"banner", true).unwrap();
        for l in ["a", "b", "c", "dd", "eee"] {
            sink.log(Stream::Stdout, l.as_bytes(), true).unwrap();
        }
        sink.log(Stream::Stderr, b"ffff", true).unwrap();
        sink.exit(0, false, false, None).unwrap();
        let (logs, exit) = split(&parse_all(sink.get_ref()));
        let exit = exit.expect("exit record");
        assert_contiguous(&logs, &exit);
        let msgs: Vec<&str> = logs.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(&msgs[..4], ["banner", "a", "b", "c"]);
        assert_eq!(logs.len(), 5, "one notice, nothing after it: {msgs:?}");
        assert_eq!(logs[4].1, Stream::System);
        assert!(
            msgs[4].contains("output limit reached (3 records)"),
            "{}",
            msgs[4]
        );
        assert_eq!((exit.dropped_lines, exit.dropped_bytes), (3, 9));
        assert_eq!((exit.unwritten_lines, exit.unwritten_bytes), (0, 0));
    }

    #[test]
    fn over_the_byte_budget_nothing_more_is_written() {
        let budget = Budget {
            max_bytes: 10,
            max_lines: 0,
        };
        let mut sink = Sink::with_budget("e".into(), Vec::new(), budget);
        sink.stamp();
        sink.log(Stream::Stdout, b"12345", true).unwrap();
        sink.log(Stream::Stdout, b"12345", true).unwrap();
        // 11 bytes would be over; a shorter record after it is dropped too.
        sink.log(Stream::Stdout, b"1", true).unwrap();
        sink.log(Stream::Stdout, b"", true).unwrap();
        sink.exit(0, false, false, None).unwrap();
        let (logs, exit) = split(&parse_all(sink.get_ref()));
        let exit = exit.unwrap();
        assert_contiguous(&logs, &exit);
        assert_eq!(logs.len(), 3);
        assert!(logs[2].2.contains("10 bytes"), "{}", logs[2].2);
        assert_eq!((exit.dropped_lines, exit.dropped_bytes), (2, 1));
    }

    #[test]
    fn a_flood_stays_within_the_budget() {
        let budget = Budget {
            max_bytes: 1 << 20,
            max_lines: 1_000_000,
        };
        let mut sink = Sink::with_budget("e".into(), Vec::new(), budget);
        sink.stamp();
        let line = [b'y'; 100];
        for _ in 0..100_000 {
            sink.log(Stream::Stdout, &line, true).unwrap();
        }
        sink.exit(0, false, false, None).unwrap();
        let out = sink.get_ref();
        // 10,485 records fit; with their framing the file stays near the budget.
        assert!(out.len() < 3 << 20, "{} bytes written", out.len());
        let (logs, exit) = split(&parse_all(out));
        let exit = exit.unwrap();
        assert_contiguous(&logs, &exit);
        let kept = (1 << 20) / 100;
        assert_eq!(logs.len() as u64, kept + 1);
        assert_eq!(exit.dropped_lines, 100_000 - kept);
        assert_eq!(exit.dropped_bytes, (100_000 - kept) * 100);
    }

    /// A file on a disk with `room` bytes left: short writes, then ENOSPC.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }
    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_drops_and_counts_without_gaps_then_recovers() {
        let mut sink = Sink::new(
            "e".into(),
            Disk {
                data: Vec::new(),
                room: 150,
            },
        );
        sink.stamp();
        for l in ["one", "two", "three"] {
            sink.log(Stream::Stdout, l.as_bytes(), true).unwrap();
        }
        // The write stops inside a record: it stays queued, nothing fails.
        sink.flush().unwrap();
        assert!(sink.is_blocked() && sink.pending());
        sink.log(Stream::Stdout, b"lost-1", true).unwrap();
        sink.log(Stream::Stderr, b"lost-2", true).unwrap();
        assert_eq!(sink.lines(), 3, "dropped records take no sequence number");
        // Space comes back.
        sink.get_mut().room = usize::MAX;
        sink.retry().unwrap();
        assert!(!sink.is_blocked() && !sink.pending());
        sink.log(Stream::Stdout, b"four", true).unwrap();
        sink.exit(7, false, false, None).unwrap();
        let (logs, exit) = split(&parse_all(&sink.get_ref().data));
        let exit = exit.unwrap();
        assert_contiguous(&logs, &exit);
        let msgs: Vec<&str> = logs.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(msgs[..3], ["one", "two", "three"]);
        assert!(
            msgs[3].contains("2 output records (12 bytes) could not be written"),
            "{}",
            msgs[3]
        );
        assert_eq!(msgs[4], "four");
        assert_eq!(exit.exit_code, 7);
        assert_eq!((exit.unwritten_lines, exit.unwritten_bytes), (2, 12));
    }

    #[test]
    fn the_final_record_waits_for_space() {
        let mut sink = Sink::new(
            "e".into(),
            Disk {
                data: Vec::new(),
                room: 0,
            },
        );
        sink.stamp();
        sink.log(Stream::Stdout, b"kept", true).unwrap();
        sink.exit(3, false, false, None).unwrap();
        assert!(sink.pending(), "queued, not failed");
        sink.retry().unwrap();
        assert!(sink.pending());
        sink.get_mut().room = 10;
        sink.retry().unwrap();
        assert!(sink.pending(), "a short write leaves the rest queued");
        sink.get_mut().room = usize::MAX;
        sink.retry().unwrap();
        assert!(!sink.pending());
        let (logs, exit) = split(&parse_all(&sink.get_ref().data));
        let exit = exit.unwrap();
        assert_contiguous(&logs, &exit);
        assert_eq!((logs.len(), exit.exit_code), (1, 3));
    }

    #[test]
    fn write_errors_stick() {
        let mut sink = Sink::new("e".to_string(), Broken);
        sink.log(Stream::Stdout, b"x", true).unwrap();
        assert!(sink.flush().is_err());
        assert!(sink.log(Stream::Stdout, b"y", true).is_err());
        assert!(sink.exit(0, false, false, None).is_err());
    }
}
