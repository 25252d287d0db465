//! The playbook loader on arbitrary YAML: never panics; a playbook it accepts gives a command
//! line, and `--set` parameters apply or fail cleanly.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runvoy_client::playbook;

fuzz_target!(|text: &str| {
    if let Ok(mut pb) = playbook::parse(Path::new(".runvoy/fuzz.yml"), text) {
        let _ = pb.command_line();
        let _ = playbook::set_params(&mut pb, &["name=value".to_owned(), "x=".to_owned()]);
        let _ = pb.command_line();
    }
});
