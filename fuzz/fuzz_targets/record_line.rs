//! The processor's record parser on arbitrary lines: never panics, and agrees with the serde
//! model of the records ([`RunnerRecord`]) on every line both accept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runvoy_proto::record::{RecordRef, RunnerRecord, parse_line};

fuzz_target!(|line: &[u8]| {
    let fast = parse_line(line);
    let full = serde_json::from_slice::<RunnerRecord>(line);
    if let (Ok(fast), Ok(full)) = (&fast, &full) {
        match (fast, full) {
            (RecordRef::Log { seq, eol, .. }, RunnerRecord::Log(l)) => {
                assert_eq!(*seq, l.seq);
                assert_eq!(*eol, l.eol);
            }
            (RecordRef::Exit(a), RunnerRecord::Exit(b)) => assert_eq!(a, b),
            (a, b) => panic!("parsers disagree: {a:?} vs {b:?}"),
        }
    }
});
