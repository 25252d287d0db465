//! Splits a byte stream into lines and long lines into chunks of at most [`CHUNK_MAX`] bytes.

use runvoy_proto::record::CHUNK_MAX;

/// Bytes requested per `read`; the buffer always has at least this much room.
pub const READ_SIZE: usize = 64 * 1024;

/// Accumulates reads and hands out complete lines; keeps at most one partial line.
pub struct LineSplitter {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl LineSplitter {
    /// An empty splitter with room for a partial chunk plus one full read.
    pub fn new() -> Self {
        LineSplitter {
            buf: vec![0; CHUNK_MAX + READ_SIZE],
            start: 0,
            end: 0,
        }
    }

    /// Free space to read into; pass the number of bytes read to [`LineSplitter::filled`].
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`LineSplitter::spare`] as filled.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Emits every complete line as `(bytes, eol)`, chunking long ones. A partial line is kept
    /// for the next read unless it is already longer than a chunk; at `eof` it is emitted with
    /// `eol = false`.
    pub fn drain<E, F>(&mut self, eof: bool, mut emit: F) -> Result<(), E>
    where
        F: FnMut(&[u8], bool) -> Result<(), E>,
    {
        let data = &self.buf[..self.end];
        let mut pos = self.start;
        while let Some(i) = data[pos..].iter().position(|&b| b == b'\n') {
            emit_chunked(&data[pos..pos + i], true, &mut emit)?;
            pos += i + 1;
        }
        // Only split a partial line once it is known to be longer than a chunk, so a line of
        // exactly CHUNK_MAX bytes is one record whatever the read boundaries were.
        let mut rest = &data[pos..];
        while rest.len() > CHUNK_MAX {
            let cut = chunk_len(rest);
            emit(&rest[..cut], false)?;
            rest = &rest[cut..];
            pos += cut;
        }
        if eof && !rest.is_empty() {
            emit(rest, false)?;
            pos = self.end;
        }
        // Compact: the remainder is at most CHUNK_MAX bytes, leaving READ_SIZE free.
        self.buf.copy_within(pos..self.end, 0);
        self.end -= pos;
        self.start = 0;
        Ok(())
    }
}

/// Emits `line` as chunks of at most [`CHUNK_MAX`] bytes; only the last one carries `eol`.
pub fn emit_chunked<E, F>(mut line: &[u8], eol: bool, mut emit: F) -> Result<(), E>
where
    F: FnMut(&[u8], bool) -> Result<(), E>,
{
    while line.len() > CHUNK_MAX {
        let cut = chunk_len(line);
        emit(&line[..cut], false)?;
        line = &line[cut..];
    }
    emit(line, eol)
}

/// Length of the first chunk of `line` (longer than CHUNK_MAX): CHUNK_MAX, backed off so that a
/// UTF-8 character is not split across records when the bytes are valid UTF-8.
fn chunk_len(line: &[u8]) -> usize {
    let cut = CHUNK_MAX;
    if !is_continuation(line[cut]) {
        return cut;
    }
    for lead in (cut.saturating_sub(3)..cut).rev() {
        let b = line[lead];
        if is_continuation(b) {
            continue;
        }
        let len = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if lead > 0 && lead + len > cut {
            lead
        } else {
            cut
        };
    }
    cut
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// Feeds `input` in reads of `step` bytes and collects the emitted pieces.
    fn split(input: &[u8], step: usize) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        let mut push = |b: &[u8], eol: bool| -> Result<(), Infallible> {
            out.push((b.to_vec(), eol));
            Ok(())
        };
        for piece in input.chunks(step) {
            let spare = s.spare();
            assert!(spare.len() >= READ_SIZE);
            spare[..piece.len()].copy_from_slice(piece);
            s.filled(piece.len());
            s.drain(false, &mut push).unwrap();
        }
        s.drain(true, &mut push).unwrap();
        out
    }

    fn reassemble(pieces: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (b, eol) in pieces {
            v.extend_from_slice(b);
            if *eol {
                v.push(b'\n');
            }
        }
        v
    }

    #[test]
    fn lines_and_final_partial() {
        let p = split(b"a\n\nbc\nd", 4);
        assert_eq!(
            p,
            vec![
                (b"a".to_vec(), true),
                (vec![], true),
                (b"bc".to_vec(), true),
                (b"d".to_vec(), false)
            ]
        );
        assert!(split(b"", 4).is_empty());
        assert_eq!(split(b"\n", 1), vec![(vec![], true)]);
    }

    #[test]
    fn long_lines_chunk_the_same_for_any_read_size() {
        let mut input = vec![b'x'; CHUNK_MAX];
        input.push(b'\n');
        input.extend(vec![b'y'; CHUNK_MAX + 1]);
        input.push(b'\n');
        input.extend(vec![b'z'; 3 * CHUNK_MAX]);
        for step in [1000, READ_SIZE, 7777] {
            let p = split(&input, step);
            let shape: Vec<(usize, bool)> = p.iter().map(|(b, e)| (b.len(), *e)).collect();
            assert_eq!(
                shape,
                vec![
                    (CHUNK_MAX, true),
                    (CHUNK_MAX, false),
                    (1, true),
                    (CHUNK_MAX, false),
                    (CHUNK_MAX, false),
                    (CHUNK_MAX, false),
                ],
                "step {step}"
            );
            assert_eq!(reassemble(&p), input);
        }
    }

    #[test]
    fn chunks_do_not_split_utf8() {
        // "é" is two bytes; with an odd prefix a naive cut would fall inside one.
        let mut input = b"a".to_vec();
        for _ in 0..CHUNK_MAX {
            input.extend_from_slice("é".as_bytes());
        }
        input.push(b'\n');
        let p = split(&input, READ_SIZE);
        assert!(p.len() > 2);
        for (b, _) in &p {
            assert!(b.len() <= CHUNK_MAX);
            assert!(std::str::from_utf8(b).is_ok());
        }
        assert_eq!(p[0].0.len(), CHUNK_MAX - 1);
        assert_eq!(reassemble(&p), input);
    }

    #[test]
    fn invalid_utf8_is_cut_at_the_limit() {
        let mut input = vec![0x80u8; CHUNK_MAX + 10];
        input.push(b'\n');
        let p = split(&input, 5000);
        assert_eq!(p[0].0.len(), CHUNK_MAX);
        assert_eq!(reassemble(&p), input);
    }
}
