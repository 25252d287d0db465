//! The workspace `.env` format between the sidecar and the runner: parsing arbitrary bytes
//! never panics, and any variables (values with newlines, quotes, backslashes) survive
//! encode → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runvoy_proto::envfile;

fuzz_target!(|input: &[u8]| {
    let _ = envfile::parse(input);
    let _ = runvoy_runner::config::parse_env_file(input);

    // Variables from the input: `value` pieces split at DEL (0x7f), names K0, K1, …
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let vars: Vec<(String, String)> = text
        .split('\u{7f}')
        .enumerate()
        .map(|(i, v)| (format!("K{i}"), v.to_owned()))
        .collect();
    let parsed = envfile::parse(&envfile::encode(&vars)).expect("encoded variables must parse");
    let want: Vec<(Vec<u8>, Vec<u8>)> = vars
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
        .collect();
    assert_eq!(parsed, want, "variables changed through encode and parse");
});
