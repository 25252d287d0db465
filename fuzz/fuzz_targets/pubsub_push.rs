//! A Pub/Sub push body as runvoyd's `/push/pubsub/logs` receives it: the envelope, the message
//! data and the Cloud Logging LogEntry inside it. Nothing may panic, whatever the sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runvoy_events_gcp::decode;

fuzz_target!(|body: &[u8]| {
    if let Ok(env) = decode::parse_envelope(body) {
        let _ = env.message.publish_time_ms();
        if let Ok(data) = env.message.data_bytes() {
            let _ = decode::decode_entry(&data);
        }
    }
    // The entry decoder also sees data straight from Eventarc's audit events.
    let _ = decode::decode_entry(body);
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = decode::execution_of_resource(s);
        let _ = decode::container_exit_code(s);
    }
});
