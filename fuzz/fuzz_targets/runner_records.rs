//! The runner's output path: bytes read from the command in arbitrary read sizes go through the
//! line splitter and the record sink (with or without secret values to mask), then are parsed
//! back the way the processor parses them. Checks: sequence numbers 1..=n without gaps, one
//! final record that counts the lines, every record within the chunk limit, the output
//! reassembled byte for byte when nothing is masked, and no secret value left when something is.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use runvoy_proto::record::{CHUNK_MAX, RecordRef, Stream, parse_line};
use runvoy_runner::redact::Redactor;
use runvoy_runner::sink::{Budget, Sink};
use runvoy_runner::split::LineSplitter;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    // Secret values: up to three alphanumeric words taken from the front of the input, split
    // at the first `|`.
    let (secrets, data): (Vec<Vec<u8>>, Vec<u8>) = if flags & 1 == 1 {
        let cut = rest.iter().position(|&b| b == b'|').unwrap_or(0);
        let words: Vec<Vec<u8>> = rest[..cut]
            .split(|&b| b == b',')
            .map(|w| {
                w.iter()
                    .copied()
                    .filter(u8::is_ascii_alphanumeric)
                    .collect::<Vec<_>>()
            })
            .filter(|w| w.len() >= 4)
            .take(3)
            .collect();
        (words, rest[cut.min(rest.len())..].to_vec())
    } else {
        (Vec::new(), rest.to_vec())
    };
    // Long lines: repeat the data past one chunk so the chunking path runs too.
    let data = if flags & 2 == 2 && !data.is_empty() {
        data.repeat(CHUNK_MAX * 2 / data.len() + 1)
    } else {
        data
    };

    let mut sink = Sink::with_budget("e".into(), Vec::new(), Budget::default());
    if !secrets.is_empty() {
        sink.set_redactor(Redactor::new(secrets.iter().map(Vec::as_slice)));
    }
    let mut split = LineSplitter::new();
    let mut rng = u32::from(flags) | 1;
    let mut at = 0;
    while at < data.len() {
        // xorshift: read sizes from 1 byte to a few KiB, like a pipe under varying load.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let spare = split.spare();
        let n = (1 + rng as usize % 4096)
            .min(data.len() - at)
            .min(spare.len());
        spare[..n].copy_from_slice(&data[at..at + n]);
        split.filled(n);
        at += n;
        sink.stamp();
        split
            .drain(false, |b, eol| sink.log(Stream::Stdout, b, eol))
            .unwrap();
    }
    split
        .drain(true, |b, eol| sink.log(Stream::Stdout, b, eol))
        .unwrap();
    sink.exit(0, false, false, None).unwrap();

    let out = sink.get_ref();
    let mut seq = 0u64;
    let mut stdout = Vec::new();
    let mut exit_lines = None;
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(exit_lines.is_none(), "a record after the final record");
        match parse_line(line).expect("the sink wrote a record the parser rejects") {
            RecordRef::Log {
                seq: s,
                stream,
                message,
                b64,
                eol,
                ..
            } => {
                seq += 1;
                assert_eq!(s, seq, "sequence gap");
                let bytes = match b64 {
                    Some(b) => STANDARD
                        .decode(b.as_bytes())
                        .expect("bad base64 in a record"),
                    None => message.as_bytes().to_vec(),
                };
                assert!(bytes.len() <= CHUNK_MAX, "record over the chunk limit");
                if stream == Stream::Stdout {
                    stdout.extend_from_slice(&bytes);
                    if eol {
                        stdout.push(b'\n');
                    }
                }
            }
            RecordRef::Exit(e) => {
                assert_eq!(e.seq, seq + 1, "final record out of sequence");
                exit_lines = Some(e.lines);
            }
        }
    }
    assert_eq!(exit_lines, Some(seq), "final record missing or miscounted");
    if secrets.is_empty() {
        // A final partial line is a record without eol: the reassembly is exact.
        assert_eq!(stdout, data, "output not reassembled byte for byte");
    } else {
        for s in &secrets {
            assert!(
                !stdout.windows(s.len()).any(|w| w == s.as_slice()),
                "secret value left in the output"
            );
        }
    }
});
