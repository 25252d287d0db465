//! Serialises records to the runner's stdout: sequence numbers, timestamps and buffering.

use std::io::{self, Write};
use std::mem;
use std::time::{SystemTime, UNIX_EPOCH};

use runvoy_proto::record::{ExitRecordWire, LogRecordWire, RunnerRecord, Stream};

/// Buffered output is written out once it grows past this, even while data keeps streaming.
const FLUSH_AT: usize = 64 * 1024;

/// Writes records in sequence order. Callers share one `Sink` behind a lock so that the order of
/// the bytes on stdout is the order of the sequence numbers.
pub struct Sink<W: Write> {
    out: W,
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
}

impl<W: Write> Sink<W> {
    /// A sink for execution `exec` writing to `out`.
    pub fn new(exec: String, out: W) -> Self {
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
        }
    }

    /// Takes the current time for the records that follow; called once per batch of lines
    /// because the lines of one read were all read at the same moment.
    pub fn stamp(&mut self) {
        self.clock.format_now(&mut self.time);
    }

    /// True once the exit record has been written; later log records are dropped.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Number of log records written so far (for tests).
    #[cfg(test)]
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Appends one log record for `bytes` (a line or a chunk of one, without its `\n`).
    pub fn log(&mut self, stream: Stream, bytes: &[u8], eol: bool) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("output already failed"));
        }
        if self.closed {
            return Ok(());
        }
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
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the final record (sequence `lines + 1`), flushes, and drops any later log records.
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
        let record = RunnerRecord::Exit(ExitRecordWire {
            exec: self.exec.clone(),
            seq: self.lines + 1,
            time: self.time.clone(),
            exit_code,
            lines: self.lines,
            timed_out,
            killed,
            error,
        });
        serde_json::to_writer(&mut self.buf, &record).map_err(io::Error::other)?;
        self.buf.push(b'\n');
        self.closed = true;
        self.flush()
    }

    /// Writes buffered records out.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("output already failed"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.out.write_all(&self.buf).and_then(|_| self.out.flush());
        self.buf.clear();
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    /// The underlying writer (for tests).
    #[cfg(test)]
    pub fn get_ref(&self) -> &W {
        &self.out
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

    #[test]
    fn write_errors_stick() {
        let mut sink = Sink::new("e".to_string(), Broken);
        sink.log(Stream::Stdout, b"x", true).unwrap();
        assert!(sink.flush().is_err());
        assert!(sink.log(Stream::Stdout, b"y", true).is_err());
        assert!(sink.exit(0, false, false, None).is_err());
    }
}
