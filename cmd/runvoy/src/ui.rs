//! Terminal output: runvoy's own messages on stderr, and the remote output byte for byte.

use std::io::{self, BufWriter, IsTerminal, Stderr, Stdout, Write};
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use runvoy_client::proto::LogEvent;
use runvoy_client::proto::record::Stream;

/// True when `NO_COLOR` is unset (or empty, per no-color.org).
pub(crate) fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// runvoy's own messages on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// Colours on stderr.
    pub color: bool,
    /// `-q`: no informational messages (errors are still printed).
    pub quiet: bool,
    /// stderr is a terminal (spinners, prompts).
    pub tty: bool,
}

impl Ui {
    /// Detects the terminal and `NO_COLOR`.
    pub fn new(quiet: bool) -> Ui {
        let tty = io::stderr().is_terminal();
        Ui {
            color: tty && color_allowed(),
            quiet,
            tty,
        }
    }

    fn line(&self, mark: &str, style: Style, msg: &str) {
        let mut e = io::stderr().lock();
        let _ = if self.color {
            writeln!(e, "{style}{mark}{style:#} {msg}")
        } else {
            writeln!(e, "{mark} {msg}")
        };
    }

    /// `→ msg`, unless quiet.
    pub fn info(&self, msg: &str) {
        if !self.quiet {
            self.line("→", AnsiColor::Cyan.on_default(), msg);
        }
    }

    /// `✓ msg`, unless quiet.
    pub fn success(&self, msg: &str) {
        if !self.quiet {
            self.line("✓", AnsiColor::Green.on_default().bold(), msg);
        }
    }

    /// `✗ msg`, unless quiet (for an unsuccessful remote result, not a runvoy error).
    pub fn failure(&self, msg: &str) {
        if !self.quiet {
            self.line("✗", AnsiColor::Red.on_default().bold(), msg);
        }
    }

    /// A message printed even when quiet (Ctrl-C hints, prompts).
    pub fn notice(&self, msg: &str) {
        self.line("→", AnsiColor::Yellow.on_default(), msg);
    }

    /// `runvoy: error: <message> (<CODE>)`, always.
    pub fn error(&self, msg: &str, code: &str) {
        let style = AnsiColor::Red.on_default().bold();
        let mut e = io::stderr().lock();
        let _ = if self.color {
            writeln!(e, "runvoy: {style}error:{style:#} {msg} ({code})")
        } else {
            writeln!(e, "runvoy: error: {msg} ({code})")
        };
    }

    /// A spinner on stderr when it is a terminal and not quiet; finish it with
    /// `finish_and_clear` before writing anything else to stderr.
    pub fn spinner(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        if self.quiet || !self.tty {
            return None;
        }
        let pb = indicatif::ProgressBar::new_spinner();
        if !self.color {
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
        } else {
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner:.cyan} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
        }
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(80));
        Some(pb)
    }
}

/// Writes log records to the local stdout/stderr exactly as the remote command wrote them.
///
/// Buffered for throughput; the caller flushes whenever no more frames are waiting, so latency
/// stays low. Switching streams flushes the other one first so interleaved stdout/stderr lines
/// keep their order on a shared terminal.
pub struct LogSink {
    out: BufWriter<Stdout>,
    err: BufWriter<Stderr>,
    show_system: bool,
}

impl LogSink {
    /// `show_system`: print `system` records (runvoy's banner) on stderr.
    pub fn new(show_system: bool) -> LogSink {
        LogSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
            err: BufWriter::with_capacity(16 * 1024, io::stderr()),
            show_system,
        }
    }

    /// Writes one record: its bytes, then `\n` unless `eol` is false.
    pub fn write(&mut self, ev: &LogEvent) -> io::Result<()> {
        let to_err = match ev.stream {
            Stream::Stdout => false,
            Stream::Stderr => true,
            Stream::System if self.show_system => true,
            Stream::System => return Ok(()),
        };
        let bytes = ev.bytes();
        if to_err {
            self.out.flush()?;
            write_record(&mut self.err, &bytes, ev.eol)
        } else {
            self.err.flush()?;
            write_record(&mut self.out, &bytes, ev.eol)
        }
    }

    /// Flushes both streams.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }
}

fn write_record(w: &mut impl Write, bytes: &[u8], eol: bool) -> io::Result<()> {
    w.write_all(bytes)?;
    if eol {
        w.write_all(b"\n")?;
    }
    Ok(())
}
