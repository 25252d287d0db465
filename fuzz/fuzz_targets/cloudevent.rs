//! An Eventarc delivery: `ce-*` headers (one `name: value` per line before a blank line) and
//! the body. Nothing may panic, whatever the sender.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use runvoy_events_gcp::eventarc;

fuzz_target!(|input: &[u8]| {
    let split = input
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(input.len());
    let (head, body) = input.split_at(split);
    let body = body.get(2..).unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(ev) = eventarc::context(&headers) {
        let _ = eventarc::data(&ev, body);
    }
});
